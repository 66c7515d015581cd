/* Declarations shared by the files of the Lua binding (resilnet.core).
 *
 * Model (after luv): every userdata holds a pointer to a malloc'd binding
 * struct, because libuv and core memory outlives __gc; the struct is freed
 * only in the core's close callback. Lua callbacks are registry refs, each
 * released in exactly one place. Every call from C into Lua goes through
 * lrn_dispatch(), which runs the facade's dispatcher protected on the
 * context's own callback thread. There is no static mutable state: all of
 * it lives in the per-lua_State context (lrn_ctx_t). */
#ifndef LRN_H
#define LRN_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"
#include "resilnet.h"

#define LRN_REQUEST_MT "resilnet.request"

/* A tiny intrusive list, so the context can find what is still open. */
typedef struct lrn_link_s {
  struct lrn_link_s *next;
  struct lrn_link_s *prev;
} lrn_link_t;

static inline void lrn_link_init(lrn_link_t *l) { l->next = l->prev = l; }
static inline void lrn_link_add(lrn_link_t *head, lrn_link_t *n) {
  n->next = head;
  n->prev = head->prev;
  head->prev->next = n;
  head->prev = n;
}
static inline void lrn_link_remove(lrn_link_t *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = n->prev = n;
}
#define LRN_CONTAINER_OF(ptr, type, field)                                   \
  ((type *)((char *)(ptr) - offsetof(type, field)))

/* A host's protected-call hook (luv's luv_CFpcall): calls the function
 * below nargs values on L; returns >= 0, or a negative status once it has
 * reported the error its own way. */
typedef int (*lrn_host_pcall_fn)(lua_State *L, int nargs, int nresults,
                                 int flags);

/* Whose loop the context runs on (loop.c): index into "own", "luv". */
enum { LRN_LOOP_OWN = 0, LRN_LOOP_LUV = 1 };

/* One per lua_State: a full userdata anchored in the registry. */
typedef struct lrn_ctx_s {
  lua_State *L;         /* callback thread: every call into Lua from libuv */
  int thread_ref;       /* anchors L */
  int dispatcher_ref;   /* the facade's dispatcher(target, ...) */
  int errbox_ref;       /* {first error, raised-nil flag}, preallocated */
  int errmt_ref;        /* metatable shared by error objects */
  rn_loop_t *loop;      /* owns its uv loop */
  rn_buf_t buf;         /* reused to encode every request and reply */
  int running;          /* depth of uv_run calls (0 or 1) */
  int dispatching;      /* Lua callbacks and tasks entered from C, which
                           may be inside a core call outside uv_run (an
                           event fired inside pool:send): no waiting */
  int closing;          /* lua_close: callbacks no longer enter Lua */
  lrn_link_t objects;   /* every bound object not yet closed (object.c) */
  lrn_link_t timers;
  int host;             /* LRN_LOOP_OWN, or the host whose loop this is */
  lrn_host_pcall_fn host_pcall; /* the host's hook; NULL on our own loop */
  int host_call_ref;    /* trampoline for host_pcall (never allocates) */
  int host_raise_ref;   /* raises its argument as text, for host_pcall */
  int anchor_ref;       /* closes us before the host's loop goes (loop.c) */
} lrn_ctx_t;

/* The context, stored as upvalue 1 of every binding function. */
#define lrn_ctx(L) ((lrn_ctx_t *)lua_touserdata((L), lua_upvalueindex(1)))

/* Pushes the arguments that follow the target; runs protected. Returns how
 * many it pushed. */
typedef int (*lrn_push_fn)(lua_State *L, void *arg);

/* Calls dispatcher(target, <args pushed by push>) protected on the callback
 * thread. A failure (dispatcher missing, out of memory, a bug in the
 * dispatcher) is recorded like any other error: the loop stops and
 * resilnet.run() re-raises it. Does nothing while the state is closing.
 * Never releases target_ref: the caller owns it. */
void lrn_dispatch(lrn_ctx_t *ctx, int target_ref, lrn_push_fn push, void *arg);
/* Holds the value at idx of L (a call's target) until it is dispatched by
 * lrn_dispatch_held or released: an id (> 0), cheaper to take and give
 * back than a registry ref. Raises when out of memory. Only from the
 * functions of bound objects (lrn_object_register), whose upvalue 3 is
 * the table of held targets: one store, no registry lookup. */
int lrn_hold(lua_State *L, lrn_ctx_t *ctx, int idx);
/* lrn_hold for the value on top, which it pops: where the target was
 * pushed only to be held (pool:call's task), no copy of it is made. */
int lrn_hold_top(lua_State *L, lrn_ctx_t *ctx);
/* Pushes the table of held targets (for lrn_object_register). */
void lrn_push_held(lua_State *L, lrn_ctx_t *ctx);
/* lrn_dispatch for a held target; releases it (also while the state is
 * closing, when nothing is dispatched). */
void lrn_dispatch_held(lrn_ctx_t *ctx, int id, lrn_push_fn push, void *arg);
/* Releases a held target that will not be dispatched. */
void lrn_release(lrn_ctx_t *ctx, int id);
/* A pool's on_deliveries edges: while a read's deliveries are under way,
 * held targets may wait in a queue and be dispatched, in order, once the
 * read is done, in one protected call (a dispatch that does not wait,
 * of anything, first dispatches every one waiting). */
void lrn_deliveries(lrn_ctx_t *ctx, int begin);
/* Queues the dispatch of held target id until the end of the read under
 * way, push then getting as its argument the size bytes returned (to be
 * filled now; they may move before the push, so nothing in them may point
 * into them). NULL when nothing can wait (no read under way, out of
 * memory): then dispatch at once. */
void *lrn_defer_held(lrn_ctx_t *ctx, int id, lrn_push_fn push, size_t size);
/* True if L is one of the facade's tasks. */
int lrn_in_task(lua_State *L, lrn_ctx_t *ctx);
/* Calls the plain function at ref with what push pushes, protected, and
 * returns its first result as an index into `answers` (a NULL-terminated
 * list of strings; nil is 0, answers[0] being unused). An error, or an
 * answer not in the list, is recorded like a callback error (run()
 * re-raises it) and gives 0. */
int lrn_query(lrn_ctx_t *ctx, int ref, lrn_push_fn push, void *arg,
              const char *const *answers);

/* Records the value at idx of L as the first error (later ones are
 * dropped) and stops the loop. Never raises, never allocates. */
void lrn_record_error(lrn_ctx_t *ctx, lua_State *L, int idx);

/* Registers functions of each file into the module table on top of the
 * stack (ctx userdata just below it, used as upvalue); creates metatables
 * on first use. */
void lrn_error_open(lua_State *L, lrn_ctx_t *ctx);
void lrn_timer_open(lua_State *L);
void lrn_pool_open(lua_State *L);
void lrn_server_open(lua_State *L);
void lrn_proxy_open(lua_State *L);
void lrn_process_open(lua_State *L);

/* The loop (loop.c). lrn_loop_open puts a new context on luv's loop when
 * luv is loaded in L, else on its own; raises when luv's loop cannot be
 * shared. lrn_loop_close closes everything and frees the loop (idempotent;
 * lua_close). */
void lrn_loop_open(lua_State *L, lrn_ctx_t *ctx);
void lrn_loop_close(lrn_ctx_t *ctx);
void lrn_loop_funcs_open(lua_State *L);
/* On a host's loop: runs f(L) (argument 1: ud) under the host's hook, which
 * reports any error itself; LUA_OK or an error status. */
int lrn_host_call(lrn_ctx_t *ctx, lua_State *L, lua_CFunction f, void *ud);
/* Reports the value at idx of L through the host's hook, as the host
 * reports its own callbacks' errors (luv: prints it and exits; Neovim: an
 * error message). */
void lrn_host_report(lrn_ctx_t *ctx, lua_State *L, int idx);

/* Closing the timers left when the state closes (the context's __gc). */
void lrn_timer_close_all(lrn_ctx_t *ctx);

/* Error objects (error.c). */
void lrn_error_push(lua_State *L, lrn_ctx_t *ctx, const char *code,
                    const char *message, size_t message_len,
                    unsigned attempts, int maybe_executed,
                    const char *endpoint);
/* A failure that happened before anything was sent (attempts 0). */
void lrn_error_push_code(lua_State *L, lrn_ctx_t *ctx, int err);
/* What an address getter returns: host, port, or nil, err when rc != 0. */
int lrn_push_address(lua_State *L, int rc, const char *host, int port);
/* The failure of a finished call (status != 0). */
void lrn_error_push_result(lua_State *L, lrn_ctx_t *ctx,
                           const rn_result_t *result);
int lrn_is_error(lua_State *L, lrn_ctx_t *ctx, int idx);

/* Values (value.c). */
/* Pushes the Lua value of one RESP value spanning data[0..len). 0, or
 * RN_EBADFRAME with nothing pushed. May raise on memory errors. */
int lrn_resp_push(lua_State *L, lrn_ctx_t *ctx, const char *data, size_t len);
/* Appends the request at idx (string, or for resp an array of strings and
 * numbers) to out, its frame alone held to max_frame. Raises on bad
 * arguments (naming argument arg). Returns 0 or a codec error
 * (RN_EFRAMESIZE, UV_EINVAL, UV_ENOMEM); out may then hold part of it. */
int lrn_encode_append(lua_State *L, int idx, int arg, const rn_codec_t *codec,
                      rn_buf_t *out);
/* lrn_encode_append into an emptied out: out holds this request alone. */
int lrn_encode_request(lua_State *L, int idx, int arg, const rn_codec_t *codec,
                       rn_buf_t *out);
/* Appends the reply value at idx as RESP. 0, or -1 with a reason pushed. */
int lrn_resp_encode_value(lua_State *L, lrn_ctx_t *ctx, int idx,
                          rn_buf_t *out);
/* Appends the RESP error reply for the value at idx (an error object, a
 * message, anything): CR/LF become spaces. 0 or UV_ENOMEM. */
int lrn_resp_encode_error_value(lua_State *L, lrn_ctx_t *ctx, int idx,
                                rn_buf_t *out);
/* Formats a Lua number without loss: integers in decimal, floats in the
 * shortest form that reads back exactly. Returns the length written. */
size_t lrn_format_number(lua_State *L, int idx, char *out, size_t size);

/* What every bound type shares, and the options' descriptor tables. */
#include "object.h"
#include "options.h"

#endif /* LRN_H */

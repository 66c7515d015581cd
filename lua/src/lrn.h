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
 * back than a registry ref. Raises when out of memory. */
int lrn_hold(lua_State *L, lrn_ctx_t *ctx, int idx);
/* lrn_dispatch for a held target; releases it (also while the state is
 * closing, when nothing is dispatched). */
void lrn_dispatch_held(lrn_ctx_t *ctx, int id, lrn_push_fn push, void *arg);
/* Releases a held target that will not be dispatched. */
void lrn_release(lrn_ctx_t *ctx, int id);
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

/* ------------------------------------------------------------------------ */
/* Options (options.c): one descriptor table per options struct.           */

/* What Lua may pass (the facade's kinds of the same names). */
typedef enum {
  LRN_KIND_POSITIVE,     /* a number > 0 */
  LRN_KIND_SECONDS,      /* a number >= 0 */
  LRN_KIND_RATIO,        /* a number from 0 to 1 */
  LRN_KIND_MULTIPLIER,   /* a number >= 1 */
  LRN_KIND_COUNT,        /* an integer >= 1 */
  LRN_KIND_COUNT0,       /* an integer >= 0 */
  LRN_KIND_ATTEMPTS,     /* an integer from 1 to 5 */
  LRN_KIND_STRING,
  LRN_KIND_PROTOCOL,     /* a protocol's name */
  LRN_KIND_LENGTH_BYTES, /* 1, 2, 4 or 8 */
  LRN_KIND_DELIMITER,    /* 1 to 16 bytes, no NUL */
  LRN_KIND_TABLE         /* a nested table: the rows "<path>.*" follow */
} lrn_kind_t;

/* How the value lands in C. */
typedef enum {
  LRN_C_NONE,             /* nothing (a nested table without a flag) */
  LRN_C_MS,               /* seconds -> uint64_t ms, rounded up */
  LRN_C_UNSIGNED,
  LRN_C_SIZE,             /* size_t */
  LRN_C_INT,
  LRN_C_DOUBLE,
  LRN_C_BOOL,             /* int; for a nested table: 1 when given */
  LRN_C_STRING,           /* const char *, NUL-terminated */
  LRN_C_LSTRING,          /* const char * and its size_t at len_offset */
  LRN_C_PROTOCOL,         /* rn_protocol_t */
  /* The codec's fields, whose 0 (NULL) means "the codec's default":
   * their defaults are what rn_codec_init makes of that. */
  LRN_C_LENGTH_BYTES,     /* unsigned */
  LRN_C_DELIMITER,        /* const char * */
  LRN_C_MAX_FRAME         /* size_t */
} lrn_ctype_t;

enum {
  LRN_OPT_OR_FALSE = 1,   /* a nested table that takes false (off) */
  LRN_OPT_ON = 2,         /* a nested table in use when left out */
  LRN_OPT_OFF = 4,        /* takes `off` when its table is false */
  LRN_OPT_GIVEN = 8,      /* takes `given` when its table is given without
                             it (the core's own default means off) */
  LRN_OPT_NO_DEFAULT = 16 /* the facade shows no default (per call) */
};

/* One option. Rows of a nested table follow the table's row. */
typedef struct lrn_option_s {
  const char *path;       /* as Lua spells it: "heartbeat.interval" */
  lrn_kind_t kind;
  lrn_ctype_t ctype;
  size_t offset;          /* of the C field */
  unsigned flags;
  double max;             /* in Lua units; 0: what the C type bounds */
  double off, given;      /* see LRN_OPT_OFF, LRN_OPT_GIVEN */
  const char *protocol;   /* only with this protocol (the facade checks) */
  size_t len_offset;      /* LRN_C_LSTRING: of the length */
} lrn_option_t;

/* A row, named as the enums are without their prefixes:
 * LRN_OPTION("size", COUNT, UNSIGNED, offsetof(...), .max = 1 << 20). */
#define LRN_OPTION(path_, kind_, ctype_, offset_, ...)                      \
  {.path = (path_), .kind = LRN_KIND_##kind_, .ctype = LRN_C_##ctype_,      \
   .offset = (offset_), __VA_ARGS__}
#define LRN_OPTIONS_END {.path = NULL}

/* Fills out from the options table at idx through rows (ending with a
 * NULL path): absent options keep what out holds (the core's defaults).
 * Raises "<fname>: option '<path>' must be ..., got ..." blaming the
 * caller of the function that called the binding. */
void lrn_options_read(lua_State *L, int idx, const char *fname,
                      const lrn_option_t *rows, void *out);
/* The codec's options alone (the proxy's). */
extern const lrn_option_t lrn_codec_options[];
/* Pushes the facade's schema of rows ({name, kind, default, core = true,
 * protocol = ...}, nested tables as {name, {table = ..., or_false, on}}),
 * with the defaults read from init, a struct rn_*_options_init filled. */
void lrn_options_push_schema(lua_State *L, const lrn_option_t *rows,
                             const void *init);

/* Closing the timers left when the state closes (the context's __gc). */
void lrn_timer_close_all(lrn_ctx_t *ctx);

/* ------------------------------------------------------------------------ */
/* Bound objects (object.c): what pool, server, proxy and process share.    */

/* Releases a registry ref (LUA_NOREF: nothing) and sets it to LUA_NOREF.
 * The one place a ref is given back; a no-op while the state closes. */
void lrn_unref(lrn_ctx_t *ctx, int *ref);
/* *ref takes the value at idx of L, releasing what it held. */
void lrn_set_ref(lua_State *L, lrn_ctx_t *ctx, int *ref, int idx);
/* Dispatches the target at ref (nothing if LUA_NOREF) through
 * lrn_dispatch, the one protected path into Lua. */
void lrn_call(lrn_ctx_t *ctx, int ref, lrn_push_fn push, void *arg);

typedef struct lrn_object_s lrn_object_t;

/* One per bound type, static. */
typedef struct lrn_type_s {
  const char *name; /* the metatable's name, and the prefix of messages */
  /* Starts closing the core object (o->closing is already set): from the
   * userdata's __gc, at lua_close, or from the type's own close function.
   * The core's close callback ends in lrn_object_closed, then free(o). */
  void (*close)(lrn_object_t *o);
  /* Optional, at lua_close before close: what must not wait for a state
   * that is going (a process's waiters, a server's drain). */
  void (*at_exit)(lrn_object_t *o);
} lrn_type_t;

/* The head of every bound object: the first member of its struct. */
struct lrn_object_s {
  lrn_ctx_t *ctx;
  const lrn_type_t *type;
  lrn_object_t **ud; /* the userdata's slot; NULL once collected */
  lrn_link_t link;   /* in ctx->objects from lrn_object_open to closed */
  int closing;       /* type->close was called */
  int quiet;         /* collected, or the state closing: nobody observes
                        it any more */
  int close_ref;     /* target dispatched once it has closed */
};

/* Pushes a new userdata of type and returns a zeroed object of size bytes
 * (its head filled in) that it will point to once lrn_object_open says the
 * core object exists. Raises when out of memory. Until then the object is
 * the caller's to free(). */
void *lrn_object_new(lua_State *L, lrn_ctx_t *ctx, const lrn_type_t *type,
                     size_t size);
/* The core object exists: the userdata points at o, and o is closed with
 * the others at lua_close. */
void lrn_object_open(lrn_object_t *o);
/* From the core's close callback: unlinks o, clears its userdata and
 * (notify) dispatches the close target, then releases it. The caller
 * releases its own refs and frees o. */
void lrn_object_closed(lrn_object_t *o, int notify);
/* For a type's close function: checks that the value at idx is nothing, a
 * function or a thread (raises otherwise); returns 0 if o is NULL or
 * already closing, else 1 with the value, if any, as o's close target. */
int lrn_object_set_close(lua_State *L, lrn_object_t *o, int idx);
/* The object of the userdata at idx (NULL once closed), or raises. Only
 * from functions registered by lrn_object_register for type: their
 * upvalue 2 is the metatable, and comparing it is what luaL_checkudata
 * does, without a registry lookup by name (pool:call's hot path). */
static inline void *lrn_object_get(lua_State *L, int idx,
                                   const lrn_type_t *type) {
  void *ud = lua_touserdata(L, idx);
  if (ud != NULL && lua_getmetatable(L, idx)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(2));
    lua_pop(L, 1);
    if (same)
      return *(lrn_object_t **)ud;
  }
  return *(lrn_object_t **)luaL_checkudata(L, idx, type->name);
}
/* Starts closing every object left (the context's __gc). */
void lrn_object_close_all(lrn_ctx_t *ctx);
/* Creates the metatable of type (with __gc) and registers funcs into the
 * module table on top of the stack (the context just below it), each with
 * the upvalues (context, metatable). */
void lrn_object_register(lua_State *L, const lrn_type_t *type,
                         const luaL_Reg *funcs);

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
 * numbers) to out. Raises on bad arguments (naming argument arg). Returns 0
 * or a codec error (RN_EFRAMESIZE, UV_EINVAL, UV_ENOMEM). */
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

#endif /* LRN_H */

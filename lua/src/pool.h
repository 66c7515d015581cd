/* What the pool's binding files share (pool.c, pool_options.c, hold.c):
 * the handle, and the pieces a held connection reuses from the pool's
 * calls. Internal to the binding. */
#ifndef LRN_POOL_H
#define LRN_POOL_H

#include "lrn.h"

typedef struct lrn_pool_s {
  lrn_object_t o;         /* o.quiet: collected, or at lua_close: no more
                             calls into Lua */
  rn_pool_t *pool;
  int event_ref;          /* target of every event */
  int classify_ref;       /* retry.classify, or LUA_NOREF */
  int pin_ref;            /* the userdata, while calls are in flight */
  unsigned in_flight;      /* calls and batches, and reads under way */
  /* The reason of the overload event fired inside rn_pool_call (a static
   * string): which limit the EOVERLOAD it returns is about. */
  const char *overload_reason;
} lrn_pool_t;

extern const lrn_type_t lrn_pool_type;

/* The pool handle at idx (NULL once closed), or raises. */
#define lrn_pool_get(L, idx)                                                \
  ((lrn_pool_t *)lrn_object_get((L), (idx), &lrn_pool_type))

static inline int lrn_quiet(const lrn_pool_t *p) {
  return p->o.quiet || p->o.ctx->closing;
}

/* Pins the pool's userdata (the value at idx) while anything is in flight:
 * call before the core owns a call, lrn_pool_unpin_idle if it refused. */
void lrn_pool_pin(lua_State *L, lrn_pool_t *p, int idx);
void lrn_pool_unpin_idle(lrn_pool_t *p);

/* The core's completion callbacks for a call and a batch whose data is
 * the target held by lrn_hold. */
void lrn_pool_done(rn_pool_t *pool, void *data, const rn_result_t *result);
void lrn_pool_batch_done(rn_pool_t *pool, void *data,
                         const rn_batch_result_t *result);

/* A call's `block` argument at idx into co: nil or false, not blocking;
 * true, blocking as long as it is out; an integer, blocking with that
 * many ms of excused silence (block_ms; 0: as long as it is out). Raises
 * on a negative one. */
void lrn_block_option(lua_State *L, int idx, rn_call_options_t *co);

/* The error for rc from rn_pool_call (an EOVERLOAD names its limit). */
void lrn_error_push_overload(lua_State *L, lrn_pool_t *p, int rc);

/* The length of the array at idx, raising (fname: the caller's name) if
 * it has holes: an integer key past its border. # may stop at any nil
 * inside 1..n, and the requests after it would be left out unsaid. */
size_t lrn_array_count(lua_State *L, int idx, const char *fname);
/* The array of requests at index 2 encoded one after the other into
 * ctx->buf, returned (its n requests, its length): valid until the
 * context's buffer is used again. rc: 0 or the error of
 * encoding one. Raises (naming fname) on an empty array, a hole, or a
 * request the protocol cannot frame. */
const char *lrn_encode_batch(lua_State *L, lrn_ctx_t *ctx,
                             const rn_codec_t *codec, const char *fname,
                             size_t *len, size_t *count, int *rc);

/* pool_options.c: the options of resilnet.pool. */

/* Reads the options table at 1 and the endpoint list at 2 into o and tls
 * (o->tls points to tls when TLS is on). What o points to stays on the
 * stack above 2 until rn_pool_new has copied it. Raises on bad options. */
void lrn_pool_options_read(lua_State *L, rn_pool_options_t *o,
                           rn_tls_options_t *tls);
/* rn_pool_new refused o with rc: raises with the reason. */
int lrn_pool_new_raise(lua_State *L, const rn_pool_options_t *o, int rc);
/* The array of endpoint strings at idx, checked, as a userdata pushed on
 * the stack (the strings stay referenced by the table at idx). */
const char **lrn_endpoint_list(lua_State *L, int idx, const char *fname,
                               size_t *count);
/* `tls` of the table at idx into tls: 1 if it is a table (TLS on). */
int lrn_pool_tls_read(lua_State *L, int idx, const char *fname,
                      rn_tls_options_t *tls);
/* Pushes why tls cannot verify one of the pool's endpoints (a unix socket
 * without tls.server_name, rn_tls_endpoint_check), or returns NULL. */
const char *lrn_pool_tls_endpoints_why(lua_State *L, rn_pool_t *pool,
                                       const rn_tls_options_t *tls);
/* pool_options() -> the facade's schema, with the core's defaults. */
int lrn_pool_options_schema(lua_State *L);

/* hold.c: held connections and subscriptions, registered with the pool's
 * functions. */
void lrn_hold_open(lua_State *L);

#endif /* LRN_POOL_H */

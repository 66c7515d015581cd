/* resilnet's held connections (pool:hold) and subscriptions
 * (pool:subscribe's C half): a userdata owning an rn_hold_t until it is
 * released, through which held calls, batches and subscribe-mode writes
 * go, and the callback a subscriber's frames reach. */
#include <stdlib.h>
#include <string.h>

#include "pool.h"

#define LRN_HOLD_MT "resilnet.hold"

/* A held connection's handle: the core's hold until released, and the
 * pool's userdata, pinned while it is held (the lrn_pool_t behind it may
 * still close: it is looked up through the userdata on each use). */
typedef struct lrn_hold_ud_s {
  rn_hold_t *hold;
  lrn_ctx_t *ctx;
  int pool_ref;
  int sub_ref; /* hold_subscribe's function, until its last call */
} lrn_hold_ud_t;

typedef struct lrn_hold_done_s {
  lrn_pool_t *p;
  rn_hold_t *hold;
  int status;
} lrn_hold_done_t;

/* (hold, nil) or (nil, err). The userdata takes the hold: if making it
 * fails, the hold goes back at once. */
static int lrn_push_hold(lua_State *L, void *arg) {
  lrn_hold_done_t *d = (lrn_hold_done_t *)arg;
  lrn_hold_ud_t *hu;
  luaL_checkstack(L, 3, NULL);
  if (d->status != 0) {
    lua_pushnil(L);
    lrn_error_push_code(L, d->p->o.ctx, d->status);
    return 2;
  }
  hu = (lrn_hold_ud_t *)lua_newuserdata(L, sizeof(*hu));
  hu->hold = d->hold;
  hu->ctx = d->p->o.ctx;
  hu->pool_ref = LUA_NOREF;
  hu->sub_ref = LUA_NOREF;
  d->hold = NULL; /* the userdata's now */
  luaL_getmetatable(L, LRN_HOLD_MT);
  lua_setmetatable(L, -2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, d->p->pin_ref); /* pinned: in flight */
  hu->pool_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushnil(L);
  return 2;
}

static void lrn_hold_done(rn_pool_t *pool, void *data, rn_hold_t *hold,
                          int status) {
  lrn_hold_done_t d;
  d.p = (lrn_pool_t *)rn_pool_data(pool);
  d.hold = hold;
  d.status = status;
  if (lrn_quiet(d.p)) {
    lrn_release(d.p->o.ctx, (int)(intptr_t)data);
  } else {
    lrn_dispatch_held(d.p->o.ctx, (int)(intptr_t)data, lrn_push_hold, &d);
  }
  /* Nobody took it (the state closing, the push failed): back at once. */
  if (d.hold != NULL) rn_hold_release(d.hold, 1);
  if (--d.p->in_flight == 0)
    lrn_unref(d.p->o.ctx, &d.p->pin_ref);
}

/* pool_hold(h, target[, timeout_ms]) -> true | nil, err. target is
 * dispatched exactly once with (hold, nil) or (nil, err). */
static int lrn_pool_hold(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lrn_pool_t *p = lrn_pool_get(L, 1);
  int type = lua_type(L, 2);
  lua_Integer timeout = luaL_optinteger(L, 3, 0);
  rn_call_options_t co;
  int held, rc;

  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 2,
                "expected a function or a thread");
  luaL_argcheck(L, timeout >= 0, 3, "timeout must not be negative");
  if (p == NULL) {
    lua_pushnil(L);
    lrn_error_push_code(L, ctx, RN_ECLOSED);
    return 2;
  }
  memset(&co, 0, sizeof(co));
  co.timeout_ms = (uint64_t)timeout;
  held = lrn_hold(L, ctx, 2);
  lrn_pool_pin(L, p, 1);
  p->overload_reason = NULL;
  rc = rn_pool_hold(p->pool, &co, lrn_hold_done, (void *)(intptr_t)held);
  if (rc != 0) {
    lrn_release(ctx, held);
    lrn_pool_unpin_idle(p);
    lua_pushnil(L);
    lrn_error_push_overload(L, p, rc);
    return 2;
  }
  p->in_flight++;
  lua_pushboolean(L, 1);
  return 1;
}

/* The hold userdata at idx, and its pool (NULL once the pool closed).
 * Raises on another value; *hold NULL once released. */
static lrn_hold_ud_t *lrn_hold_get(lua_State *L, int idx, lrn_pool_t **p) {
  lrn_hold_ud_t *hu = (lrn_hold_ud_t *)luaL_checkudata(L, idx, LRN_HOLD_MT);
  *p = NULL;
  if (hu->hold != NULL) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, hu->pool_ref);
    *p = lrn_pool_get(L, lua_gettop(L));
    lua_pop(L, 1);
  }
  return hu;
}

/* A held call could not start: nil, err (a released hold raises). */
static int lrn_hold_refused(lua_State *L, lrn_ctx_t *ctx, lrn_hold_ud_t *hu,
                            int rc) {
  if (hu->hold == NULL)
    return luaL_error(L, "resilnet: the held connection was released "
                         "(use it only inside pool:hold's function)");
  lua_pushnil(L);
  lrn_error_push_code(L, ctx, rc);
  return 2;
}

/* What starting a held call or batch (its target held as `held`)
 * returns. */
static int lrn_hold_started(lua_State *L, lrn_pool_t *p,
                            const lrn_hold_ud_t *hu, int held, int rc) {
  if (rc != 0) {
    lrn_release(p->o.ctx, held);
    lua_pushnil(L);
    lrn_error_push_overload(L, p, rc); /* names MAX_CONCURRENT's refusal */
    return 2;
  }
  /* Pinned while anything is in flight, as for pool_send. */
  if (p->pin_ref == LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, hu->pool_ref);
    lrn_pool_pin(L, p, -1);
    lua_pop(L, 1);
  }
  p->in_flight++;
  lua_pushboolean(L, 1);
  return 1;
}

/* hold_send(hold, request, target[, timeout_ms, block]) -> true |
 * nil, err: pool_send on the held connection (block: lrn_block_option). */
static int lrn_hold_send(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lrn_pool_t *p;
  lrn_hold_ud_t *hu = lrn_hold_get(L, 1, &p);
  int type = lua_type(L, 3);
  lua_Integer timeout = luaL_optinteger(L, 4, 0);
  rn_call_options_t co;
  int held, rc;

  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 3,
                "expected a function or a thread");
  luaL_argcheck(L, timeout >= 0, 4, "timeout must not be negative");
  if (hu->hold == NULL || p == NULL)
    return lrn_hold_refused(L, ctx, hu, RN_ECLOSED);
  rc = lrn_encode_request(L, 2, 2, rn_pool_codec(p->pool), &ctx->buf);
  if (rc == UV_EINVAL)
    return luaL_error(L, "resilnet: the request cannot be framed by "
                         "protocol '%s' (does it contain the delimiter?)",
                      rn_pool_codec(p->pool)->type->name);
  if (rc != 0) return lrn_hold_refused(L, ctx, hu, rc);
  memset(&co, 0, sizeof(co));
  co.timeout_ms = (uint64_t)timeout;
  lrn_block_option(L, 5, &co);
  held = lrn_hold(L, ctx, 3);
  p->overload_reason = NULL;
  rc = rn_hold_call(hu->hold, ctx->buf.base, ctx->buf.len, &co,
                    lrn_pool_done, (void *)(intptr_t)held);
  return lrn_hold_started(L, p, hu, held, rc);
}

/* hold_batch(hold, requests, target[, timeout_ms, block]) -> true |
 * nil, err: pool_batch on the held connection. */
static int lrn_hold_batch(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lrn_pool_t *p;
  lrn_hold_ud_t *hu = lrn_hold_get(L, 1, &p);
  int type = lua_type(L, 3);
  lua_Integer timeout = luaL_optinteger(L, 4, 0);
  rn_call_options_t co;
  const char *frames;
  size_t n, len;
  int held, rc;

  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 3,
                "expected a function or a thread");
  luaL_argcheck(L, timeout >= 0, 4, "timeout must not be negative");
  memset(&co, 0, sizeof(co));
  co.timeout_ms = (uint64_t)timeout;
  lrn_block_option(L, 5, &co);
  lua_settop(L, 4);
  if (hu->hold == NULL || p == NULL)
    return lrn_hold_refused(L, ctx, hu, RN_ECLOSED);
  frames = lrn_encode_batch(L, ctx, rn_pool_codec(p->pool), "conn:batch",
                            &len, &n, &rc);
  if (rc != 0) return lrn_hold_refused(L, ctx, hu, rc);
  held = lrn_hold(L, ctx, 3);
  p->overload_reason = NULL;
  rc = rn_hold_batch(hu->hold, frames, len, n, &co, lrn_pool_batch_done,
                     (void *)(intptr_t)held);
  if (rc == UV_E2BIG) {
    lrn_release(ctx, held);
    return luaL_error(L, "conn:batch: %d requests are more than the "
                         "pool's max_batch", (int)n);
  }
  return lrn_hold_started(L, p, hu, held, rc);
}

/* Gives the hold back (reset: close its connection) and unpins the
 * pool. */
static void lrn_hold_give_back(lrn_hold_ud_t *hu, int reset) {
  rn_hold_t *hold = hu->hold;
  if (hold == NULL) return;
  hu->hold = NULL;
  rn_hold_release(hold, reset); /* a subscriber hears nothing more */
  lrn_unref(hu->ctx, &hu->sub_ref);
  lrn_unref(hu->ctx, &hu->pool_ref);
}

/* hold_release(hold[, reset]): idempotent. */
static int lrn_hold_release(lua_State *L) {
  lrn_hold_ud_t *hu = (lrn_hold_ud_t *)luaL_checkudata(L, 1, LRN_HOLD_MT);
  lrn_hold_give_back(hu, lua_toboolean(L, 2));
  return 0;
}

/* hold_unknown(hold) -> whether a release now would close the connection
 * (true once released). */
static int lrn_hold_unknown_l(lua_State *L) {
  lrn_hold_ud_t *hu = (lrn_hold_ud_t *)luaL_checkudata(L, 1, LRN_HOLD_MT);
  lua_pushboolean(L, hu->hold == NULL || rn_hold_unknown(hu->hold));
  return 1;
}

/* Collected unreleased (the facade always releases; a C error may not):
 * the connection's state is unknown, so it is closed. */
static int lrn_hold_gc(lua_State *L) {
  lrn_hold_give_back((lrn_hold_ud_t *)lua_touserdata(L, 1), 1);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Subscriptions                                                              */

typedef struct lrn_push_s {
  lrn_ctx_t *ctx;
  const char *frame;
  size_t len;
  int status;
} lrn_push_t;

/* (value, nil); (nil, err, false) for a command the server refused (err
 * carries its error reply); (nil, err, true) once the subscriber's
 * connection is lost. */
static int lrn_push_frame(lua_State *L, void *arg) {
  lrn_push_t *f = (lrn_push_t *)arg;
  int rc = f->status;
  luaL_checkstack(L, 4, NULL);
  if (rc == 0 && (rc = lrn_resp_push(L, f->ctx, f->frame, f->len)) == 0) {
    lua_pushnil(L);
    return 2;
  }
  lua_pushnil(L);
  if (rc == RN_EREPLY && f->frame != NULL) {
    rn_result_t r;
    memset(&r, 0, sizeof(r));
    r.status = RN_EREPLY;
    r.body = f->frame;
    r.body_len = f->len;
    lrn_error_push_result(L, f->ctx, &r);
    lua_pushboolean(L, 0);
    return 3;
  }
  lrn_error_push_code(L, f->ctx, rc);
  lua_pushboolean(L, f->frame == NULL);
  return 3;
}

static void lrn_hold_pushed(rn_hold_t *hold, void *data, const char *frame,
                            size_t len, int status) {
  lrn_hold_ud_t *hu = (lrn_hold_ud_t *)data;
  lrn_push_t f;
  (void)hold;
  f.ctx = hu->ctx;
  f.frame = frame;
  f.len = len;
  f.status = status;
  if (hu->sub_ref != LUA_NOREF)
    lrn_dispatch(hu->ctx, hu->sub_ref, lrn_push_frame, &f);
  if (frame == NULL) lrn_unref(hu->ctx, &hu->sub_ref); /* the last call */
}

/* hold_subscribe(hold, fn) -> true | nil, err: fn(value, nil) for every
 * push frame or subscribe-mode array, in order; fn(nil, err, false) for a
 * command hold_write wrote that the server refused; fn(nil, err, true)
 * once when the connection is lost (never after hold_release). */
static int lrn_hold_subscribe(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lrn_pool_t *p;
  lrn_hold_ud_t *hu = lrn_hold_get(L, 1, &p);
  int rc;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (hu->hold == NULL || p == NULL)
    return lrn_hold_refused(L, ctx, hu, RN_ECLOSED);
  if (hu->sub_ref != LUA_NOREF)
    return luaL_error(L, "resilnet: the held connection is already a "
                         "subscriber");
  lua_pushvalue(L, 2);
  hu->sub_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  rc = rn_hold_subscribe(hu->hold, lrn_hold_pushed, hu);
  if (rc != 0) {
    lrn_unref(ctx, &hu->sub_ref);
    return lrn_hold_refused(L, ctx, hu, rc);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* hold_write(hold, requests) -> true | nil, err: the requests (SUBSCRIBE
 * ...) written on a subscriber's connection; answered through its fn. */
static int lrn_hold_write(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lrn_pool_t *p;
  lrn_hold_ud_t *hu = lrn_hold_get(L, 1, &p);
  const char *frames;
  size_t n, len;
  int rc;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  if (hu->hold == NULL || p == NULL)
    return lrn_hold_refused(L, ctx, hu, RN_ECLOSED);
  frames = lrn_encode_batch(L, ctx, rn_pool_codec(p->pool), "hold_write",
                            &len, &n, &rc);
  if (rc == 0) rc = rn_hold_write(hu->hold, frames, len);
  if (rc != 0) return lrn_hold_refused(L, ctx, hu, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* hold_pause(hold) / hold_resume(hold) -> true | nil, err: stop and
 * start reading a subscriber's connection (its fn hears nothing while
 * paused; resumed, from the loop). */
static int lrn_hold_flow(lua_State *L, int (*flow)(rn_hold_t *)) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lrn_pool_t *p;
  lrn_hold_ud_t *hu = lrn_hold_get(L, 1, &p);
  int rc;
  if (hu->hold == NULL || p == NULL)
    return lrn_hold_refused(L, ctx, hu, RN_ECLOSED);
  if ((rc = flow(hu->hold)) != 0) return lrn_hold_refused(L, ctx, hu, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int lrn_hold_pause(lua_State *L) {
  return lrn_hold_flow(L, rn_hold_pause);
}

static int lrn_hold_resume(lua_State *L) {
  return lrn_hold_flow(L, rn_hold_resume);
}

static const luaL_Reg lrn_hold_funcs[] = {
    {"pool_hold", lrn_pool_hold},
    {"hold_send", lrn_hold_send},
    {"hold_batch", lrn_hold_batch},
    {"hold_release", lrn_hold_release},
    {"hold_unknown", lrn_hold_unknown_l},
    {"hold_subscribe", lrn_hold_subscribe},
    {"hold_write", lrn_hold_write},
    {"hold_pause", lrn_hold_pause},
    {"hold_resume", lrn_hold_resume},
    {NULL, NULL}};

/* With the pool's upvalues: pool_hold looks the pool up as they do. */
void lrn_hold_open(lua_State *L) {
  if (luaL_newmetatable(L, LRN_HOLD_MT)) {
    lua_pushcfunction(L, lrn_hold_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lrn_object_register(L, &lrn_pool_type, lrn_hold_funcs);
}

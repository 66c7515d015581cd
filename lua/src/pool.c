/* resilnet.pool handles: rn_pool_t plus the refs that tie calls, events and
 * closing back to Lua.
 *
 * A call costs no allocation here: the request is encoded into the
 * context's buffer (the core copies it) and the call's target travels as
 * the registry ref in the core's data pointer. A pool with calls in flight
 * pins its own userdata, so dropping the last reference to a busy pool
 * cannot close it under its callers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

static void lrn_pool_close_type(lrn_object_t *o);

const lrn_type_t lrn_pool_type = {"resilnet.pool", lrn_pool_close_type, NULL};

void lrn_pool_pin(lua_State *L, lrn_pool_t *p, int idx) {
  if (p->pin_ref == LUA_NOREF) {
    lua_pushvalue(L, idx);
    p->pin_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

void lrn_pool_unpin_idle(lrn_pool_t *p) {
  if (p->in_flight == 0)
    lrn_unref(p->o.ctx, &p->pin_ref);
}

/* ------------------------------------------------------------------------ */
/* Callbacks from the core                                                    */

/* What a call or a batch came to, as its target gets it: a call's
 * result, pushed as (reply, nil) or (nil, err); or a batch's, one result
 * per request in a table, or the batch's failure as a whole. Read in place
 * from the core's callback, or from a copy waiting for the end of a read
 * (lrn_defer_held): there `copied`, and its pointers are offsets from d
 * (0 for NULL), since the queue may move. */
typedef struct lrn_done_s {
  lrn_ctx_t *ctx;
  int resp;   /* replies are RESP values, decoded; else strings */
  int copied;
  rn_result_t r;              /* a call's; a batch's status, body, ... */
  size_t count;               /* a batch's requests; 0 for a call */
  const rn_result_t *results; /* a batch's results (status 0), or NULL */
} lrn_done_t;

/* Pushes r's reply and returns 0, or pushes nothing and returns the
 * status its error object is made with (a reply that does not decode is
 * RN_EBADFRAME). No luaL_checkstack: every dispatch path calls this from
 * a C function just entered by (p)call, whose LUA_MINSTACK free slots
 * hold the target, a handler and what is pushed here. */
static int lrn_push_reply(lua_State *L, const lrn_done_t *d,
                          const rn_result_t *r) {
  if (r->status != 0)
    return r->status;
  if (!d->resp)
    lua_pushlstring(L, r->body, r->body_len);
  else if (lrn_resp_push(L, d->ctx, r->body, r->body_len) != 0)
    return RN_EBADFRAME;
  return 0;
}

/* Pushes r's error object, its status being status. */
static void lrn_push_failed(lua_State *L, const lrn_done_t *d,
                            const rn_result_t *r, int status) {
  rn_result_t bad;
  if (status == r->status) {
    lrn_error_push_result(L, d->ctx, r);
    return;
  }
  bad = *r;
  bad.status = status;
  lrn_error_push_result(L, d->ctx, &bad);
}

/* (reply, nil) or (nil, err) for r. */
static void lrn_push_result(lua_State *L, const lrn_done_t *d,
                            const rn_result_t *r) {
  int status;
  if (r->status == 0 && (status = lrn_push_reply(L, d, r)) == 0) {
    lua_pushnil(L);
    return;
  }
  lua_pushnil(L);
  lrn_push_failed(L, d, r, r->status != 0 ? r->status : RN_EBADFRAME);
}

/* A copy's pointer back from its offset. */
#define LRN_DONE_AT(d, off)                                                  \
  ((off) == NULL ? NULL : (const char *)(d) + (uintptr_t)(off))

static void lrn_result_place(const lrn_done_t *d, rn_result_t *r) {
  r->body = LRN_DONE_AT(d, r->body);
  r->endpoint = LRN_DONE_AT(d, r->endpoint);
}

/* The target's arguments: (reply, nil) | (nil, err) for a call; for a
 * batch (replies, nil), replies[i] what pool:call would have returned for
 * request i, its reply or its error object (an error reply, an rnp
 * refusal), replies.n the count; or (nil, err) when the batch failed as
 * a whole. */
static int lrn_push_done(lua_State *L, void *arg) {
  lrn_done_t *d = (lrn_done_t *)arg;
  size_t i;
  if (d->copied) {
    d->copied = 0;
    lrn_result_place(d, &d->r);
    if (d->results != NULL) {
      rn_result_t *r = (rn_result_t *)(void *)(d + 1);
      for (i = 0; i < d->count; i++)
        lrn_result_place(d, &r[i]);
      d->results = r;
    }
  }
  if (d->count == 0 || d->r.status != 0) {
    lrn_push_result(L, d, &d->r);
    return 2;
  }
  luaL_checkstack(L, 4, NULL);
  lua_createtable(L, (int)d->count, 1);
  for (i = 0; i < d->count; i++) {
    /* Its reply or its error object, pushed alone. */
    int status = lrn_push_reply(L, d, &d->results[i]);
    if (status != 0)
      lrn_push_failed(L, d, &d->results[i], status);
    lua_rawseti(L, -2, (int)(i + 1));
  }
  lua_pushinteger(L, (lua_Integer)d->count);
  lua_setfield(L, -2, "n");
  lua_pushnil(L);
  return 2;
}

/* Copying: the bytes of r go at *at of base, its pointers becoming their
 * offsets. The endpoint is kept only where an error object shows it. With
 * base NULL, only counts the bytes. */
static void lrn_result_copy(char *base, size_t *at, rn_result_t *r) {
  size_t n = r->status != 0 && r->endpoint != NULL ? strlen(r->endpoint) + 1
                                                   : 0;
  if (base != NULL) {
    const char *body = r->body, *endpoint = r->endpoint;
    r->body = body == NULL ? NULL : (const char *)(uintptr_t)*at;
    if (r->body_len > 0)
      memcpy(base + *at, body, r->body_len);
    r->endpoint = n == 0 ? NULL : (const char *)(uintptr_t)(*at + r->body_len);
    if (n > 0)
      memcpy(base + *at + r->body_len, endpoint, n);
  }
  *at += r->body_len + n;
}

/* Defers d's dispatch to the end of the read under way, copied: 1, or 0
 * if it must go at once. */
static int lrn_done_defer(const lrn_done_t *d, int held) {
  size_t results = d->results != NULL ? d->count : 0;
  size_t head = sizeof(*d) + results * sizeof(rn_result_t);
  size_t size = head, i;
  lrn_done_t *to;
  rn_result_t r, *copies;

  r = d->r;
  lrn_result_copy(NULL, &size, &r);
  for (i = 0; i < results; i++) {
    r = d->results[i];
    lrn_result_copy(NULL, &size, &r);
  }
  to = (lrn_done_t *)lrn_defer_held(d->ctx, held, lrn_push_done, size);
  if (to == NULL)
    return 0;
  *to = *d;
  to->copied = 1;
  size = head;
  lrn_result_copy((char *)to, &size, &to->r);
  if (results == 0)
    return 1;
  copies = (rn_result_t *)(void *)(to + 1);
  to->results = (const rn_result_t *)(uintptr_t)sizeof(*d);
  for (i = 0; i < results; i++) {
    copies[i] = d->results[i];
    lrn_result_copy((char *)to, &size, &copies[i]);
  }
  return 1;
}

/* A call or a batch ended: the pool is unpinned with its last one. */
static void lrn_pool_ended(lrn_pool_t *p) {
  if (--p->in_flight == 0)
    lrn_unref(p->o.ctx, &p->pin_ref);
}

/* A call or a batch ended: its target gets d (unless the pool went quiet),
 * at the end of the read that brought it or at once. */
static void lrn_pool_finish(lrn_pool_t *p, int held, lrn_done_t *d) {
  d->ctx = p->o.ctx;
  d->resp = rn_pool_codec(p->pool)->protocol == RN_PROTOCOL_RESP;
  d->copied = 0;
  if (lrn_quiet(p))
    lrn_release(p->o.ctx, held);
  else if (!lrn_done_defer(d, held))
    lrn_dispatch_held(p->o.ctx, held, lrn_push_done, d);
  lrn_pool_ended(p);
}

void lrn_pool_done(rn_pool_t *pool, void *data, const rn_result_t *result) {
  lrn_pool_t *p = (lrn_pool_t *)rn_pool_data(pool);
  lrn_done_t d, *to;
  /* Most calls: a reply, waiting for the end of its read; only its body
   * is read (lrn_push_result), so only that is copied. */
  if (result->status == 0 && !lrn_quiet(p) &&
      (to = (lrn_done_t *)lrn_defer_held(
           p->o.ctx, (int)(intptr_t)data, lrn_push_done,
           sizeof(*to) + result->body_len)) != NULL) {
    to->ctx = p->o.ctx;
    to->resp = rn_pool_codec(p->pool)->protocol == RN_PROTOCOL_RESP;
    to->copied = 1;
    memset(&to->r, 0, sizeof(to->r));
    to->r.body = (const char *)(uintptr_t)sizeof(*to);
    to->r.body_len = result->body_len;
    to->count = 0;
    to->results = NULL;
    if (result->body_len > 0)
      memcpy(to + 1, result->body, result->body_len);
    lrn_pool_ended(p);
    return;
  }
  d.r = *result;
  d.count = 0;
  d.results = NULL;
  lrn_pool_finish(p, (int)(intptr_t)data, &d);
}

void lrn_pool_batch_done(rn_pool_t *pool, void *data,
                         const rn_batch_result_t *b) {
  lrn_done_t d;
  memset(&d.r, 0, sizeof(d.r));
  d.r.status = b->status;
  d.r.body = b->body;
  d.r.body_len = b->body_len;
  d.r.attempts = b->attempts;
  d.r.maybe_executed = b->maybe_executed;
  d.r.endpoint = b->endpoint;
  d.count = b->count;
  d.results = b->status == 0 ? b->results : NULL;
  lrn_pool_finish((lrn_pool_t *)rn_pool_data(pool), (int)(intptr_t)data,
                  &d);
}

/* on_deliveries: one protected call into Lua per read. The read counts
 * as a call in flight: a target it brings usually makes the next call,
 * and the pool stays pinned across that instead of being unpinned by the
 * last reply and pinned again (two registry refs a read; one call in
 * flight made that a read's every call). */
static void lrn_pool_deliveries(rn_pool_t *pool, int begin) {
  lrn_pool_t *p = (lrn_pool_t *)rn_pool_data(pool);
  if (begin) {
    p->in_flight++;
    lrn_deliveries(p->o.ctx, 1);
    return;
  }
  lrn_deliveries(p->o.ctx, 0);
  lrn_pool_ended(p);
}

static const char *lrn_event_name(rn_event_type_t type) {
  switch (type) {
  case RN_EVENT_STATE: return "state";
  case RN_EVENT_EJECT: return "eject";
  case RN_EVENT_RETRY: return "retry";
  case RN_EVENT_BUDGET: return "budget";
  case RN_EVENT_OVERLOAD: return "overload";
  case RN_EVENT_RESOLVE: return "resolve";
  case RN_EVENT_WRONG_ROLE: return "wrong_role";
  }
  return "unknown";
}

static void lrn_set_string(lua_State *L, const char *name, const char *v) {
  if (v == NULL)
    return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, name);
}

static int lrn_push_event(lua_State *L, void *arg) {
  const rn_pool_event_t *ev = (const rn_pool_event_t *)arg;
  lua_createtable(L, 0, 7);
  lrn_set_string(L, "type", lrn_event_name(ev->type));
  lrn_set_string(L, "endpoint", ev->endpoint);
  if (ev->connection != 0) {
    lua_pushinteger(L, (lua_Integer)ev->connection);
    lua_setfield(L, -2, "connection");
  }
  lrn_set_string(L, "state", ev->state);
  lrn_set_string(L, "reason", ev->reason);
  if (ev->error != 0)
    lrn_set_string(L, "error", rn_err_name(ev->error));
  /* (A GOAWAY's state event carries the connect hold it asked for.) */
  if (ev->type == RN_EVENT_EJECT || ev->type == RN_EVENT_RETRY ||
      ev->duration != 0) {
    lua_pushnumber(L, (lua_Number)ev->duration / 1000);
    lua_setfield(L, -2, ev->type == RN_EVENT_EJECT ? "duration" : "delay");
  }
  if (ev->attempt != 0) {
    lua_pushinteger(L, (lua_Integer)ev->attempt);
    lua_setfield(L, -2, "attempt");
  }
  return 1;
}

typedef struct lrn_classify_s {
  lrn_pool_t *p;
  const rn_failure_t *f;
} lrn_classify_t;

/* classify(err, request): err as a call's error would be; request decoded
 * from the frame as sent (resp: the array; others: the body). */
static int lrn_push_failure(lua_State *L, void *arg) {
  lrn_classify_t *c = (lrn_classify_t *)arg;
  const rn_failure_t *f = c->f;
  const rn_codec_t *codec = rn_pool_codec(c->p->pool);
  rn_result_t r;
  rn_frame_t frame;

  memset(&r, 0, sizeof(r));
  r.status = f->status;
  r.body = f->body;
  r.body_len = f->body_len;
  r.attempts = f->attempts;
  r.maybe_executed = 1;
  r.endpoint = f->endpoint;
  luaL_checkstack(L, 4, NULL);
  lrn_error_push_result(L, c->p->o.ctx, &r);
  lua_pushboolean(L, f->idempotent);
  lua_setfield(L, -2, "idempotent");
  if (rn_codec_frame(codec, f->request, f->request_len, &frame) > 0) {
    const char *body = f->request + frame.body_offset;
    if (codec->protocol != RN_PROTOCOL_RESP ||
        lrn_resp_push(L, c->p->o.ctx, body, frame.body_len) != 0)
      lua_pushlstring(L, body, frame.body_len);
  } else {
    lua_pushlstring(L, f->request, f->request_len);
  }
  return 2;
}

static rn_classify_t lrn_pool_classify(rn_pool_t *pool,
                                       const rn_failure_t *f) {
  static const char *const answers[] = {NULL, "retry", "fail", NULL};
  lrn_pool_t *p = (lrn_pool_t *)rn_pool_data(pool);
  lrn_classify_t c;
  if (lrn_quiet(p) || p->classify_ref == LUA_NOREF)
    return RN_CLASSIFY_DEFAULT;
  c.p = p;
  c.f = f;
  switch (lrn_query(p->o.ctx, p->classify_ref, lrn_push_failure, &c,
                    answers)) {
  case 1: return RN_CLASSIFY_RETRY;
  case 2: return RN_CLASSIFY_FAIL;
  default: return RN_CLASSIFY_DEFAULT;
  }
}

static void lrn_pool_event(rn_pool_t *pool, const rn_pool_event_t *ev) {
  lrn_pool_t *p = (lrn_pool_t *)rn_pool_data(pool);
  if (ev->type == RN_EVENT_OVERLOAD)
    p->overload_reason = ev->reason;
  if (!lrn_quiet(p))
    lrn_call(p->o.ctx, p->event_ref, lrn_push_event, (void *)ev);
}

static void lrn_pool_closed(rn_pool_t *pool) {
  lrn_pool_t *p = (lrn_pool_t *)rn_pool_data(pool);
  lrn_object_closed(&p->o, !lrn_quiet(p));
  lrn_unref(p->o.ctx, &p->event_ref);
  lrn_unref(p->o.ctx, &p->classify_ref);
  lrn_unref(p->o.ctx, &p->pin_ref);
  free(p);
}

static void lrn_pool_start_close(lrn_pool_t *p, uint64_t drain_ms,
                                 int reset) {
  p->o.closing = 1;
  if (reset)
    rn_pool_abort(p->pool, lrn_pool_closed);
  else
    rn_pool_close(p->pool, drain_ms, lrn_pool_closed);
}

/* Collected (nobody can observe it any more: a pool with calls in flight
 * is pinned, so any still in flight means lua_close, and events of a pool
 * nobody holds have no listener), or the state closing. */
static void lrn_pool_close_type(lrn_object_t *o) {
  lrn_pool_start_close((lrn_pool_t *)o, 0, 0);
}

/* ------------------------------------------------------------------------ */
/* Functions                                                                  */

/* pool_new(options, endpoints) -> handle. options: as resilnet.pool
 * takes them (lrn_pool_options, and retry.classify); endpoints: the array
 * of endpoint strings (the facade resolves a discovery function). Absent
 * options keep the core's defaults. Raises on bad options. */
static int lrn_pool_new(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  rn_pool_options_t o;
  rn_tls_options_t tls;
  lrn_pool_t *p;
  int rc;

  /* Read before the object exists: bad options raise with nothing to
   * undo. What o points to stays on the stack until rn_pool_new has
   * copied it. */
  lrn_pool_options_read(L, &o, &tls);
  o.on_event = lrn_pool_event;
  o.on_deliveries = lrn_pool_deliveries;
  p = (lrn_pool_t *)lrn_object_new(L, ctx, &lrn_pool_type, sizeof(*p));
  p->event_ref = p->pin_ref = p->classify_ref = LUA_NOREF;
  lua_getfield(L, 1, "retry");
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_getfield(L, -1, "classify");
    if (lua_type(L, -1) == LUA_TFUNCTION) {
      lrn_set_ref(L, ctx, &p->classify_ref, -1);
      o.classify = lrn_pool_classify;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  o.data = p;
  rc = rn_pool_new(ctx->loop, &o, &p->pool);
  if (rc != 0) {
    lrn_unref(ctx, &p->classify_ref);
    free(p);
    return lrn_pool_new_raise(L, &o, rc);
  }
  lrn_object_open(&p->o);
  return 1;
}

/* A key made for one call (key = true): 128 random bits, as hex, so that
 * it prints readably in logs and stores. The same for all its attempts,
 * since the core keeps the frame it was encoded into. */
#define LRN_RANDOM_KEY_BYTES 16

static int lrn_random_key(char *out) {
  static const char hex[] = "0123456789abcdef";
  unsigned char bytes[LRN_RANDOM_KEY_BYTES];
  size_t i;
  int rc = uv_random(NULL, NULL, bytes, sizeof(bytes), 0, NULL);
  if (rc != 0) return rc;
  for (i = 0; i < sizeof(bytes); i++) {
    out[2 * i] = hex[bytes[i] >> 4];
    out[2 * i + 1] = hex[bytes[i] & 15];
  }
  return 0;
}

/* Per-call options: pool_send's arguments 4 to 9 (the key comes later).
 * Absent ones keep the pool's defaults; most calls give none, and skip
 * this. */
static void lrn_call_options(lua_State *L, rn_call_options_t *co) {
  lua_Integer timeout = luaL_optinteger(L, 4, 0);
  lua_Integer attempts = luaL_optinteger(L, 6, 0);
  lua_Integer attempt_timeout = luaL_optinteger(L, 7, 0);
  int hedge = lua_isnoneornil(L, 8) ? 0 : 1;
  lua_Integer hedge_delay = luaL_optinteger(L, 8, 0);
  lua_Integer hedge_max = luaL_optinteger(L, 9, 2);
  luaL_argcheck(L, timeout >= 0, 4, "timeout must not be negative");
  memset(co, 0, sizeof(*co));
  co->timeout_ms = (uint64_t)timeout;
  co->idempotent = lua_toboolean(L, 5);
  co->attempts = attempts > 0 ? (unsigned)attempts : 0;
  co->attempt_timeout_ms = attempt_timeout > 0 ? (uint64_t)attempt_timeout : 0;
  co->hedge_mode = !hedge ? RN_HEDGE_POOL
                   : hedge_delay <= 0 ? RN_HEDGE_OFF : RN_HEDGE_ON;
  co->hedge.delay_ms = hedge_delay > 0 ? (uint64_t)hedge_delay : 0;
  co->hedge.max = hedge_max > 0 ? (unsigned)hedge_max : 2;
  lrn_block_option(L, 11, co);
}

/* (pool.h) */
void lrn_block_option(lua_State *L, int idx, rn_call_options_t *co) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer ms = luaL_checkinteger(L, idx);
    luaL_argcheck(L, ms >= 0, idx, "block must not be negative");
    co->blocking = 1;
    co->block_ms = (uint64_t)ms;
  } else {
    co->blocking = lua_toboolean(L, idx);
  }
}

/* The key (argument 10): a string, or true for a random one written to
 * random_key. 0 or an error code; raises on a protocol other than rnp. */
static int lrn_call_key(lua_State *L, lrn_pool_t *p, rn_call_options_t *co,
                        char *random_key) {
  int rc;
  if (rn_pool_codec(p->pool)->protocol != RN_PROTOCOL_RNP)
    return luaL_error(L, "resilnet: option 'key' applies only to "
                         "protocol 'rnp'");
  if (lua_type(L, 10) == LUA_TSTRING) {
    co->key = lua_tolstring(L, 10, &co->key_len);
    return 0;
  }
  if ((rc = lrn_random_key(random_key)) != 0)
    return rc;
  co->key = random_key;
  co->key_len = 2 * LRN_RANDOM_KEY_BYTES;
  return 0;
}

/* The error for rc from rn_pool_call: an EOVERLOAD names the limit that
 * refused the call (the overload event's reason), so that a cap on calls
 * in flight does not read as one on calls pending. */
void lrn_error_push_overload(lua_State *L, lrn_pool_t *p, int rc) {
  const char *msg;
  if (rc != RN_EOVERLOAD || p->overload_reason == NULL) {
    lrn_error_push_code(L, p->o.ctx, rc);
    return;
  }
  if (strcmp(p->overload_reason, "max_in_flight") == 0)
    msg = "too many calls in flight to every endpoint (max_in_flight)";
  else if (strcmp(p->overload_reason, "max_concurrent") == 0)
    msg = "the server works on as many requests as it said it takes "
          "(MAX_CONCURRENT): a held call waits for none";
  else
    msg = "too many calls waiting for a connection (max_pending)";
  lrn_error_push(L, p->o.ctx, rn_err_name(rc), msg, strlen(msg), 0, 0, NULL);
}

/* Bytes of encode buffer a context keeps between requests (64 KiB). */
#define LRN_BUF_KEEP (64 * 1024)

/* What a call that could not start returns: nil, err. */
static int lrn_not_started(lua_State *L, lrn_ctx_t *ctx, int rc) {
  lua_pushnil(L);
  lrn_error_push_code(L, ctx, rc);
  return 2;
}

/* Gives the core a call (count 0) or a batch of count requests, encoded
 * in frames[0..len), with the target at index target held until it is
 * dispatched (the pool's handle, pinned while it is, at index handle):
 * true, or nil, err when the core refused it (raises on a batch larger
 * than max_batch). opts NULL: the pool's defaults.
 * Everything that may raise before the core owns it has happened.
 * Inlined: pool:call's hot path, where a call of its own cost a tenth of
 * what the binding spends on a call. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline int lrn_pool_give(lua_State *L, lrn_ctx_t *ctx, lrn_pool_t *p,
                         int handle, int target, const char *frames,
                         size_t len, size_t count,
                         const rn_call_options_t *opts) {
  /* A target on top (pool:call's task, pool:send's callback) leaves the
   * stack as it is held: nothing below reads it again. */
  int held = target == lua_gettop(L) ? lrn_hold_top(L, ctx)
                                     : lrn_hold(L, ctx, target), rc;
  lrn_pool_pin(L, p, handle);
  p->overload_reason = NULL;
  rc = count == 0 ? rn_pool_call(p->pool, frames, len, opts, lrn_pool_done,
                                 (void *)(intptr_t)held)
                  : rn_pool_batch(p->pool, frames, len, count, opts,
                                  lrn_pool_batch_done,
                                  (void *)(intptr_t)held);
  /* The core has its copy. The context's encode buffer keeps at most
   * LRN_BUF_KEEP for the next request: one large batch or request would
   * otherwise hold its size for as long as the module is loaded. */
  if (ctx->buf.cap > LRN_BUF_KEEP)
    rn_buf_free(&ctx->buf);
  if (rc != 0) {
    lrn_release(ctx, held);
    lrn_pool_unpin_idle(p);
    if (rc == UV_E2BIG && count > 0)
      return luaL_error(L, "pool:batch: %d requests are more than the "
                           "pool's max_batch", (int)count);
    if (rc == UV_EINVAL && /* encoded already: the rule of resp_state.c */
        rn_pool_codec(p->pool)->protocol == RN_PROTOCOL_RESP)
      return luaL_error(L, "%s would leave its pooled connection changed for "
                           "the next call there (MULTI without EXEC, WATCH, "
                           "SUBSCRIBE, MONITOR, SELECT, AUTH, HELLO, RESET, "
                           "CLIENT SETNAME, ...): use pool:transaction, "
                           "pool:hold, pool:subscribe, or the pool's setup, "
                           "password and database options",
                        count > 0 ? "pool:batch: the requests"
                                  : "resilnet: the request");
    lua_pushnil(L);
    lrn_error_push_overload(L, p, rc);
    return 2;
  }
  p->in_flight++;
  lua_pushboolean(L, 1);
  return 1;
}

/* The common part of pool_send and pool:call: encodes the request at 2
 * and gives it to the core, the pool's handle at index handle, the target
 * at index target. p may be NULL (closed); opts NULL for the pool's
 * defaults. */
static int lrn_pool_start(lua_State *L, lrn_ctx_t *ctx, lrn_pool_t *p,
                          int handle, int target, rn_call_options_t *opts) {
  char random_key[2 * LRN_RANDOM_KEY_BYTES];
  int rc;

  if (p == NULL)
    return lrn_not_started(L, ctx, RN_ECLOSED);
  rc = lrn_encode_request(L, 2, 2, rn_pool_codec(p->pool), &ctx->buf);
  if (rc == UV_EINVAL)
    return luaL_error(L, "resilnet: the request cannot be framed by "
                         "protocol '%s' (does it contain the delimiter?)",
                      rn_pool_codec(p->pool)->type->name);
  if (rc == 0 && opts != NULL && !lua_isnoneornil(L, 10))
    rc = lrn_call_key(L, p, opts, random_key);
  if (rc != 0)
    return lrn_not_started(L, ctx, rc);
  return lrn_pool_give(L, ctx, p, handle, target, ctx->buf.base,
                       ctx->buf.len, 0, opts);
}

/* pool_send(h, request, target[, timeout_ms, idempotent, attempts,
 *           attempt_timeout_ms, hedge_delay_ms, hedge_max, key, block])
 *   -> true | nil, err. hedge_delay_ms: nil = the pool's, 0 = never.
 * key (rnp only): a string, or true for a random one. block: see
 * lrn_block_option.
 * target (a task or a function) is dispatched exactly once with
 * (reply, nil) or (nil, err) unless this returns nil, err. */
static int lrn_pool_send(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lrn_pool_t *p = lrn_pool_get(L, 1);
  int type = lua_type(L, 3);
  rn_call_options_t co, *opts = NULL;

  if (lua_gettop(L) > 3) {
    opts = &co;
    lrn_call_options(L, &co);
  }
  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 3,
                "expected a function or a thread");
  return lrn_pool_start(L, ctx, p, 1, 3, opts);
}

/* pool_callback(h, request, cb): pool_send with no options for a target
 * that should be a function; anything else returns false, having done
 * nothing, so that pool:send need not ask type() on every call. */
static int lrn_pool_callback(lua_State *L) {
  if (lua_type(L, 3) != LUA_TFUNCTION) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return lrn_pool_start(L, lrn_ctx(L), lrn_pool_get(L, 1), 1, 3, NULL);
}

/* pool:call(request[, opts]) itself: the facade's Pool.call, made by
 * pool_call_method below. From a task (or a coroutine that a host's loop
 * makes one: adopt), the call starts and the task waits for its reply
 * here, yielding from C: no Lua frame of the facade's between a caller
 * and its reply, which on the hot path cost more than the binding and
 * the core together spend on the call. Anywhere else, slow(self,
 * request, opts), the facade's long way, which there never yields (it
 * runs the loop, or raises). Upvalues: those of the pool's functions
 * (context, metatable, held targets), then slow, call_options, adopt and
 * the key "_h". */
enum { LRN_UP_SLOW = 4, LRN_UP_OPTIONS, LRN_UP_ADOPT, LRN_UP_HANDLE };

static int lrn_pool_call_method(lua_State *L) {
  int args = lua_gettop(L);
  int with_opts = args >= 3 && !lua_isnil(L, 3);
  lrn_ctx_t *ctx;
  lrn_pool_t *p;
  rn_call_options_t co;

  if (lua_type(L, 1) != LUA_TTABLE)
    goto slow;
  if (args < 2) { /* no request: the encoder's error says so ("got nil") */
    lua_settop(L, 2);
    args = 2;
  }
  lua_pushvalue(L, lua_upvalueindex(LRN_UP_HANDLE));
  lua_rawget(L, 1); /* args + 1: self._h */
  /* Raises unless self is a pool. What it leaves above the handle (its
   * metatable) stays: the call yields the stack away, and every index
   * below is absolute. */
  p = (lrn_pool_t *)lrn_object_peek(L, args + 1, &lrn_pool_type);
  ctx = p != NULL ? p->o.ctx : lrn_ctx(L);
  if (!lrn_in_task(L, ctx)) {
    if (ctx->host == LRN_LOOP_OWN)
      goto slow;
    lua_pushvalue(L, lua_upvalueindex(LRN_UP_ADOPT));
    lua_pushboolean(L, lrn_can_yield(L));
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1))
      goto slow;
    lua_pop(L, 1);
  } else if (!lrn_can_yield(L)) {
    goto slow; /* the facade raises: nothing may start that cannot wait */
  }
  if (!with_opts) {
    /* (self, request, [nil,] ..., handle, ..., task): the request at 2,
     * the handle at args + 1, the target on top. */
    lua_pushthread(L);
    if (lrn_pool_start(L, ctx, p, args + 1, lua_gettop(L), NULL) == 2)
      return 2;
    return lua_yield(L, 0);
  }
  /* (h, request, task, what call_options makes of opts): pool_send's. */
  lua_settop(L, args + 1);
  lua_replace(L, 1); /* self._h */
  lua_settop(L, 3);
  lua_pushvalue(L, lua_upvalueindex(LRN_UP_OPTIONS));
  lua_pushliteral(L, "pool:call");
  lua_pushvalue(L, 3);
  lua_call(L, 2, 8);
  lua_pushthread(L);
  lua_replace(L, 3);
  lrn_call_options(L, &co);
  if (lrn_pool_start(L, ctx, p, 1, 3, &co) == 2)
    return 2;
  return lua_yield(L, 0);

slow:
  lua_settop(L, args); /* what this pushed goes */
  lua_settop(L, 3);
  lua_pushvalue(L, lua_upvalueindex(LRN_UP_SLOW));
  lua_insert(L, 1);
  lua_call(L, 3, LUA_MULTRET);
  return lua_gettop(L);
}

/* pool_call_method(slow, call_options, adopt) -> pool:call (above). */
static int lrn_pool_call_method_new(lua_State *L) {
  int i;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  for (i = 1; i <= 3; i++)
    lua_pushvalue(L, lua_upvalueindex(i));
  for (i = 1; i <= 3; i++)
    lua_pushvalue(L, i);
  lua_pushliteral(L, "_h");
  lua_pushcclosure(L, lrn_pool_call_method, LRN_UP_HANDLE);
  return 1;
}

/* pool:send(request, cb) itself, the usual form, made by
 * pool_send_method below: the request sent with cb as its target, without
 * the facade's Lua frame in between (a callback's every next call passes
 * here). Any other form, or self not a pool, goes to slow(self, ...), the
 * facade's Pool:send, which says what is wrong with it. Upvalues: those
 * of the pool's functions, then slow and the key "_h". */
enum { LRN_UP_SEND_SLOW = 4, LRN_UP_SEND_HANDLE };
/* pool_batch_wait's: those of the pool's functions, then "_h". */
enum { LRN_UP_BATCH_HANDLE = 4 };

static int lrn_pool_send_method(lua_State *L) {
  lrn_object_t **slot;
  lrn_pool_t *p;
  if (lua_gettop(L) != 3 || lua_type(L, 1) != LUA_TTABLE ||
      lua_type(L, 3) != LUA_TFUNCTION)
    goto slow;
  lua_pushvalue(L, lua_upvalueindex(LRN_UP_SEND_HANDLE));
  lua_rawget(L, 1); /* 4: self._h */
  slot = lrn_object_slot(L, 4);
  if (slot == NULL) {
    lua_settop(L, 3);
    goto slow;
  }
  p = (lrn_pool_t *)*slot;
  lua_pushvalue(L, 3); /* the target, on top */
  return lrn_pool_start(L, p != NULL ? p->o.ctx : lrn_ctx(L), p, 4,
                        lua_gettop(L), NULL);

slow:
  lua_pushvalue(L, lua_upvalueindex(LRN_UP_SEND_SLOW));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* pool_send_method(slow) -> pool:send (above). */
static int lrn_pool_send_method_new(lua_State *L) {
  int i;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  for (i = 1; i <= 3; i++)
    lua_pushvalue(L, lua_upvalueindex(i));
  lua_pushvalue(L, 1);
  lua_pushliteral(L, "_h");
  lua_pushcclosure(L, lrn_pool_send_method, LRN_UP_SEND_HANDLE);
  return 1;
}

/* (pool.h) */
size_t lrn_array_count(lua_State *L, int idx, const char *fname) {
  size_t n = lrn_rawlen(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1); /* the value; the key stays for lua_next */
    if (lua_type(L, -1) == LUA_TNUMBER) {
      lua_Number k = lua_tonumber(L, -1);
      if (k > (lua_Number)n && floor(k) == k) {
        char key[64]; /* lua_pushfstring has no %.0f */
        snprintf(key, sizeof(key), "%.0f", (double)k);
        luaL_error(L, "%s: requests[%d] is nil but requests[%s] is not "
                      "(expected an array without holes)",
                   fname, (int)n + 1, key);
      }
    }
  }
  return n;
}

/* core.array_count(t, fname) -> #t, raising if t has holes: pool:transaction
 * reads its requests with the rule pool:batch's are read with. */
static int lrn_array_count_l(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *fname = luaL_checkstring(L, 2);
  lua_pushinteger(L, (lua_Integer)lrn_array_count(L, 1, fname));
  return 1;
}

/* (pool.h) Encoded straight into the context's buffer, one request after
 * the other: no Lua string is built and freed for every batch. */
const char *lrn_encode_batch(lua_State *L, lrn_ctx_t *ctx,
                             const rn_codec_t *codec, const char *fname,
                             size_t *len, size_t *count, int *rc) {
  size_t i, n = lrn_array_count(L, 2, fname);
  *rc = 0;
  if (n == 0)
    luaL_error(L, "%s: the batch is empty", fname);
  ctx->buf.len = 0;
  for (i = 1; *rc == 0 && i <= n; i++) {
    lua_rawgeti(L, 2, (int)i);
    if (lua_isnil(L, -1))
      luaL_error(L, "%s: requests[%d] is nil (expected an array)", fname,
                 (int)i);
    *rc = lrn_encode_append(L, lua_gettop(L), 2, codec, &ctx->buf);
    lua_pop(L, 1);
    if (*rc == UV_EINVAL)
      luaL_error(L, "%s: requests[%d] cannot be framed by protocol '%s' "
                    "(does it contain the delimiter?)",
                 fname, (int)i, codec->type->name);
  }
  *count = n;
  *len = ctx->buf.len;
  return ctx->buf.base;
}

/* pool_batch(h, requests, target[, timeout_ms, idempotent, attempts,
 *            attempt_timeout_ms, nil, nil, nil, block]) -> true | nil,
 * err. requests: an array of what pool_send takes, encoded one after the
 * other into one string (the core copies it), sent as one batch. target
 * is dispatched exactly once (lrn_push_batch) unless this returns nil,
 * err. Raises on bad requests and on more than the pool's max_batch. */
static int lrn_pool_batch(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lrn_pool_t *p = lrn_pool_get(L, 1);
  int type = lua_type(L, 3);
  rn_call_options_t co, *opts = NULL;
  const char *frames;
  size_t n, len;
  int rc = 0;

  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 3,
                "expected a function or a thread");
  if (lua_gettop(L) > 3) {
    lua_settop(L, 11); /* hedge and key are not for a batch: the facade
                          passes none, and the core never hedges one */
    opts = &co;
    lrn_call_options(L, &co);
  }
  lua_settop(L, 7);
  if (p == NULL)
    return lrn_not_started(L, ctx, RN_ECLOSED);
  frames = lrn_encode_batch(L, ctx, rn_pool_codec(p->pool), "pool:batch",
                            &len, &n, &rc);
  if (rc != 0)
    return lrn_not_started(L, ctx, rc);
  return lrn_pool_give(L, ctx, p, 1, 3, frames, len, n, opts);
}

/* pool_batch_wait(self, requests) -> replies | nil, err, from a task
 * that can wait: pool:batch(requests)'s usual form, the batch sent with
 * the task as its target and the task waiting for it here, yielding from
 * C, instead of through the facade's send_batch, await and start_batch
 * (three Lua frames a batch). false, having done nothing, anywhere else,
 * for an empty batch, or for self not an open pool: the facade then goes
 * its own way, which says what is wrong or waits as it can. */
static int lrn_pool_batch_wait(lua_State *L) {
  lrn_pool_t *p;
  const char *frames;
  size_t n, len;
  int rc = 0;
  lrn_object_t **slot;
  lua_settop(L, 2);
  if (lua_type(L, 1) != LUA_TTABLE || lua_type(L, 2) != LUA_TTABLE)
    goto elsewhere;
  lua_pushvalue(L, lua_upvalueindex(LRN_UP_BATCH_HANDLE));
  lua_rawget(L, 1); /* 3: self._h */
  if ((slot = lrn_object_slot(L, 3)) == NULL ||
      (p = (lrn_pool_t *)*slot) == NULL || !lrn_in_task(L, p->o.ctx) ||
      !lrn_can_yield(L) || lrn_rawgeti(L, 2, 1) == LUA_TNIL)
    goto elsewhere;
  /* (h, requests, task): pool_batch's without options. */
  lua_settop(L, 3);
  lua_replace(L, 1);
  lua_pushthread(L);
  frames = lrn_encode_batch(L, p->o.ctx, rn_pool_codec(p->pool),
                            "pool:batch", &len, &n, &rc);
  if (rc != 0)
    return lrn_not_started(L, p->o.ctx, rc);
  if (lrn_pool_give(L, p->o.ctx, p, 1, 3, frames, len, n, NULL) == 2)
    return 2;
  return lua_yield(L, 0);

elsewhere:
  lua_pushboolean(L, 0);
  return 1;
}

/* pool_batch_wait_new() -> pool_batch_wait (above), holding its key. */
static int lrn_pool_batch_wait_new(lua_State *L) {
  int i;
  for (i = 1; i <= 3; i++)
    lua_pushvalue(L, lua_upvalueindex(i));
  lua_pushliteral(L, "_h");
  lua_pushcclosure(L, lrn_pool_batch_wait, LRN_UP_BATCH_HANDLE);
  return 1;
}

/* pool_on(h, target): target receives every event table. */
static int lrn_pool_on(lua_State *L) {
  lrn_pool_t *p = lrn_pool_get(L, 1);
  int type = lua_type(L, 2);
  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 2,
                "expected a function or a thread");
  if (p == NULL)
    return 0;
  lrn_set_ref(L, p->o.ctx, &p->event_ref, 2);
  return 0;
}

static void lrn_set_count(lua_State *L, const char *name, uint64_t v) {
  lua_pushnumber(L, (lua_Number)v);
  lua_setfield(L, -2, name);
}

static void lrn_push_endpoints(lua_State *L, rn_pool_t *pool) {
  size_t i, n = rn_pool_endpoint_count(pool);
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    rn_endpoint_info_t info;
    if (rn_pool_endpoint_info(pool, i, &info) != 0)
      break;
    lua_createtable(L, 0, 6);
    lrn_set_string(L, "endpoint", info.endpoint);
    lrn_set_string(L, "state", info.state);
    lrn_set_count(L, "open", info.open);
    lrn_set_count(L, "outstanding", info.outstanding);
    lrn_set_count(L, "failures", info.failures);
    lua_pushnumber(L, (lua_Number)info.ejected_for / 1000);
    lua_setfield(L, -2, "ejected_for");
    lua_rawseti(L, -2, (int)(i + 1));
  }
}

static int lrn_pool_stats(lua_State *L) {
  lrn_pool_t *p = lrn_pool_get(L, 1);
  rn_pool_stats_t s;
  memset(&s, 0, sizeof(s));
  if (p != NULL)
    rn_pool_stats(p->pool, &s);
  lua_createtable(L, 0, 24);
  lrn_set_count(L, "calls", s.calls);
  lrn_set_count(L, "completed", s.completed);
  lrn_set_count(L, "failed", s.failed);
  lrn_set_count(L, "overloaded", s.overloaded);
  lrn_set_count(L, "retries", s.retries);
  lrn_set_count(L, "hedges", s.hedges);
  lrn_set_count(L, "requeued", s.requeued);
  lrn_set_count(L, "not_executed", s.not_executed);
  lrn_set_count(L, "goaways", s.goaways);
  lrn_set_count(L, "retry_after_capped", s.retry_after_capped);
  lrn_set_count(L, "connects", s.connects);
  lrn_set_count(L, "reconnects", s.reconnects);
  lrn_set_count(L, "connect_failures", s.connect_failures);
  lrn_set_count(L, "reuses", s.reuses);
  lrn_set_count(L, "heartbeats", s.heartbeats);
  lrn_set_count(L, "heartbeats_missed", s.heartbeats_missed);
  lrn_set_count(L, "dead_peers", s.dead_peers);
  lrn_set_count(L, "probes", s.probes);
  lrn_set_count(L, "probes_answered", s.probes_answered);
  lrn_set_count(L, "probes_expired", s.probes_expired);
  lrn_set_count(L, "ejections", s.ejections);
  lrn_set_count(L, "tls_failures", s.tls_failures);
  lrn_set_count(L, "tls_insecure", s.tls_insecure);
  lrn_set_count(L, "setup_failures", s.setup_failures);
  lrn_set_count(L, "wrong_role", s.wrong_role);
  lrn_set_count(L, "loading", s.loading);
  lua_createtable(L, 0, 8);
  lrn_set_count(L, "idle", s.evictions.idle);
  lrn_set_count(L, "lifetime", s.evictions.lifetime);
  lrn_set_count(L, "stale", s.evictions.stale);
  lrn_set_count(L, "dead_peer", s.evictions.dead_peer);
  lrn_set_count(L, "peer_closed", s.evictions.peer_closed);
  lrn_set_count(L, "unexpected", s.evictions.unexpected);
  lrn_set_count(L, "removed", s.evictions.removed);
  lrn_set_count(L, "error", s.evictions.error);
  lua_setfield(L, -2, "evictions");
  lrn_set_count(L, "open", s.open);
  lrn_set_count(L, "idle", s.idle);
  lrn_set_count(L, "pending", s.pending);
  lrn_set_count(L, "in_flight", s.in_flight);
  lrn_set_count(L, "ejected", s.ejected);
  lua_pushnumber(L, (lua_Number)s.budget);
  lua_setfield(L, -2, "budget");
  lrn_set_count(L, "holds", s.holds);
  lrn_set_count(L, "holds_reset", s.holds_reset);
  lrn_set_count(L, "held", s.held);
  if (p != NULL) {
    lrn_push_endpoints(L, p->pool);
    lua_setfield(L, -2, "endpoints");
  }
  lua_pushboolean(L, p == NULL || p->o.closing);
  lua_setfield(L, -2, "closed");
  return 1;
}

/* pool_set_endpoints(h, list) -> true | nil, err. Raises on a bad list. */
static int lrn_pool_set_endpoints(lua_State *L) {
  lrn_pool_t *p = lrn_pool_get(L, 1);
  const char **list;
  size_t n;
  int rc;
  lua_settop(L, 2);
  list = lrn_endpoint_list(L, 2, "pool:set_endpoints", &n);
  rc = p == NULL || p->o.closing ? RN_ECLOSED
                               : rn_pool_set_endpoints(p->pool, list, n);
  if (rc == UV_EINVAL)
    return luaL_error(L, "pool:set_endpoints: an endpoint is listed twice, "
                         "or is a unix socket the pool's TLS cannot verify "
                         "(it needs tls.server_name)");
  if (rc != 0) {
    lua_pushnil(L);
    lrn_error_push_code(L, lrn_ctx(L), rc);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* pool_reload_tls(h, {tls = {...}}) -> true | nil, err: new TLS files
 * for new connections. Raises on bad fields, or on a pool without TLS;
 * a file that cannot be read is nil, err (rotation is a runtime act). */
static int lrn_pool_reload_tls(lua_State *L) {
  lrn_pool_t *p = lrn_pool_get(L, 1);
  rn_tls_options_t tls;
  int rc;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lrn_pool_tls_read(L, 2, "pool:reload_tls", &tls))
    return luaL_error(L, "pool:reload_tls: expected a table of TLS options");
  rc = p == NULL || p->o.closing ? RN_ECLOSED
                                 : rn_pool_reload_tls(p->pool, &tls);
  if (rc == UV_EINVAL &&
      rn_tls_options_check(&tls, RN_TLS_CLIENT, NULL, 0) == 0) {
    const char *why = lrn_pool_tls_endpoints_why(L, p->pool, &tls);
    if (why != NULL)
      return luaL_error(L, "pool:reload_tls: %s", why);
    return luaL_error(L, "pool:reload_tls: the pool has no TLS (TLS is "
                         "switched on or off only when a pool is made)");
  }
  if (rc != 0) {
    const char *why = rc == RN_ECLOSED ? rn_strerror(rc)
                                       : lrn_tls_why(L, &tls, RN_TLS_CLIENT, rc);
    lua_pushnil(L);
    lrn_error_push(L, p != NULL ? p->o.ctx : lrn_ctx(L), rn_err_name(rc),
                   why, strlen(why), 0, 0, NULL);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int lrn_pool_reset_backoff(lua_State *L) {
  lrn_pool_t *p = lrn_pool_get(L, 1);
  if (p != NULL && !p->o.closing)
    rn_pool_reset_backoff(p->pool);
  return 0;
}

/* pool_close(h, drain_ms, target, reset) -> true, or false if already
 * closing (a reset still cuts a drain short). target (optional) is
 * dispatched once the pool has closed. */
static int lrn_pool_close(lua_State *L) {
  lrn_pool_t *p = lrn_pool_get(L, 1);
  lua_Integer drain = luaL_optinteger(L, 2, 0);
  int reset = lua_toboolean(L, 4);
  luaL_argcheck(L, drain >= 0, 2, "drain must not be negative");
  if (!lrn_object_set_close(L, (lrn_object_t *)p, 3)) {
    if (p != NULL && reset)
      rn_pool_abort(p->pool, NULL);
    lua_pushboolean(L, 0);
    return 1;
  }
  lrn_pool_start_close(p, (uint64_t)drain, reset);
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg lrn_pool_funcs[] = {
    {"pool_options", lrn_pool_options_schema},
    {"pool_new", lrn_pool_new},     {"pool_send", lrn_pool_send},
    {"pool_callback", lrn_pool_callback},
    {"pool_call_method", lrn_pool_call_method_new},
    {"pool_send_method", lrn_pool_send_method_new},
    {"pool_batch", lrn_pool_batch},
    {"pool_batch_wait_new", lrn_pool_batch_wait_new},
    {"array_count", lrn_array_count_l},
    {"pool_on", lrn_pool_on},       {"pool_stats", lrn_pool_stats},
    {"pool_close", lrn_pool_close},
    {"pool_reset_backoff", lrn_pool_reset_backoff},
    {"pool_reload_tls", lrn_pool_reload_tls},
    {"pool_set_endpoints", lrn_pool_set_endpoints},
    {NULL, NULL}};

void lrn_pool_open(lua_State *L) {
  lrn_object_register(L, &lrn_pool_type, lrn_pool_funcs);
  lrn_hold_open(L);
}

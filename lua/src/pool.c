/* resilnet.pool handles: rn_pool_t plus the refs that tie calls, events and
 * closing back to Lua.
 *
 * A call costs no allocation here: the request is encoded into the
 * context's buffer (the core copies it) and the call's target travels as
 * the registry ref in the core's data pointer. A pool with calls in flight
 * pins its own userdata, so dropping the last reference to a busy pool
 * cannot close it under its callers. */
#include <stdlib.h>
#include <string.h>

#include "lrn.h"

typedef struct lrn_pool_s {
  lrn_ctx_t *ctx;
  rn_pool_t *pool;
  struct lrn_pool_s **ud; /* the userdata's slot; NULL once collected */
  lrn_link_t link;
  int closing;            /* rn_pool_close was called */
  int quiet;              /* collected at lua_close: no more calls into Lua */
  int close_ref;          /* target dispatched when the pool has closed */
  int event_ref;          /* target of every event */
  int classify_ref;       /* retry.classify, or LUA_NOREF */
  int pin_ref;            /* the userdata, while calls are in flight */
  unsigned in_flight;
  /* The reason of the overload event fired inside rn_pool_call (a static
   * string): which limit the EOVERLOAD it returns is about. */
  const char *overload_reason;
} lrn_pool_t;

/* The pool handle at idx (NULL once closed), or raises. The metatable is
 * upvalue 2 of every pool function: comparing it is what luaL_checkudata
 * does, without looking the name up in the registry on every call. */
static lrn_pool_t *lrn_pool_get(lua_State *L, int idx) {
  void *ud = lua_touserdata(L, idx);
  if (ud != NULL && lua_getmetatable(L, idx)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(2));
    lua_pop(L, 1);
    if (same)
      return *(lrn_pool_t **)ud;
  }
  return *(lrn_pool_t **)luaL_checkudata(L, idx, LRN_POOL_MT);
}

static void lrn_unref(lrn_ctx_t *ctx, int *ref) {
  if (*ref != LUA_NOREF && !ctx->closing)
    luaL_unref(ctx->L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
}

static int lrn_quiet(const lrn_pool_t *p) {
  return p->quiet || p->ctx->closing;
}

/* ------------------------------------------------------------------------ */
/* Callbacks from the core                                                    */

typedef struct lrn_done_s {
  lrn_pool_t *p;
  const rn_result_t *result;
} lrn_done_t;

static int lrn_push_result(lua_State *L, void *arg) {
  lrn_done_t *d = (lrn_done_t *)arg;
  const rn_result_t *r = d->result;
  luaL_checkstack(L, 2, NULL);
  if (r->status != 0) {
    lua_pushnil(L);
    lrn_error_push_result(L, d->p->ctx, r);
    return 2;
  }
  if (rn_pool_codec(d->p->pool)->protocol == RN_PROTOCOL_RESP) {
    if (lrn_resp_push(L, d->p->ctx, r->body, r->body_len) != 0) {
      rn_result_t bad = *r;
      bad.status = RN_EBADFRAME;
      lua_pushnil(L);
      lrn_error_push_result(L, d->p->ctx, &bad);
      return 2;
    }
  } else {
    lua_pushlstring(L, r->body, r->body_len);
  }
  lua_pushnil(L);
  return 2;
}

static void lrn_pool_done(rn_pool_t *pool, void *data,
                          const rn_result_t *result) {
  lrn_pool_t *p = (lrn_pool_t *)rn_pool_data(pool);
  int held = (int)(intptr_t)data;
  if (lrn_quiet(p)) {
    lrn_release(p->ctx, held);
  } else {
    lrn_done_t d;
    d.p = p;
    d.result = result;
    lrn_dispatch_held(p->ctx, held, lrn_push_result, &d);
  }
  if (--p->in_flight == 0)
    lrn_unref(p->ctx, &p->pin_ref);
}

static const char *lrn_event_name(rn_event_type_t type) {
  switch (type) {
  case RN_EVENT_STATE: return "state";
  case RN_EVENT_EJECT: return "eject";
  case RN_EVENT_RETRY: return "retry";
  case RN_EVENT_BUDGET: return "budget";
  case RN_EVENT_OVERLOAD: return "overload";
  case RN_EVENT_RESOLVE: return "resolve";
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
  lrn_error_push_result(L, c->p->ctx, &r);
  lua_pushboolean(L, f->idempotent);
  lua_setfield(L, -2, "idempotent");
  if (rn_codec_frame(codec, f->request, f->request_len, &frame) > 0) {
    const char *body = f->request + frame.body_offset;
    if (codec->protocol != RN_PROTOCOL_RESP ||
        lrn_resp_push(L, c->p->ctx, body, frame.body_len) != 0)
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
  switch (lrn_query(p->ctx, p->classify_ref, lrn_push_failure, &c, answers)) {
  case 1: return RN_CLASSIFY_RETRY;
  case 2: return RN_CLASSIFY_FAIL;
  default: return RN_CLASSIFY_DEFAULT;
  }
}

static void lrn_pool_event(rn_pool_t *pool, const rn_pool_event_t *ev) {
  lrn_pool_t *p = (lrn_pool_t *)rn_pool_data(pool);
  if (ev->type == RN_EVENT_OVERLOAD)
    p->overload_reason = ev->reason;
  if (!lrn_quiet(p) && p->event_ref != LUA_NOREF)
    lrn_dispatch(p->ctx, p->event_ref, lrn_push_event, (void *)ev);
}

static void lrn_pool_closed(rn_pool_t *pool) {
  lrn_pool_t *p = (lrn_pool_t *)rn_pool_data(pool);
  lrn_link_remove(&p->link);
  if (p->ud != NULL)
    *p->ud = NULL;
  if (!lrn_quiet(p) && p->close_ref != LUA_NOREF)
    lrn_dispatch(p->ctx, p->close_ref, NULL, NULL);
  lrn_unref(p->ctx, &p->close_ref);
  lrn_unref(p->ctx, &p->event_ref);
  lrn_unref(p->ctx, &p->classify_ref);
  lrn_unref(p->ctx, &p->pin_ref);
  free(p);
}

static void lrn_pool_start_close(lrn_pool_t *p, uint64_t drain_ms,
                                 int reset) {
  p->closing = 1;
  if (reset)
    rn_pool_abort(p->pool, lrn_pool_closed);
  else
    rn_pool_close(p->pool, drain_ms, lrn_pool_closed);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                    */

/* Reads integer field name of the table at 1 (nil: def), in [min, max]. */
static lua_Integer lrn_opt_int(lua_State *L, const char *name,
                               lua_Integer def, lua_Integer min,
                               lua_Integer max) {
  lua_Integer v = def;
  lua_getfield(L, 1, name);
  if (!lua_isnil(L, -1)) {
    lua_Number n;
    if (lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "resilnet: option '%s' must be a number", name);
    n = lua_tonumber(L, -1);
    if (!(n >= (lua_Number)min && n <= (lua_Number)max))
      luaL_error(L, "resilnet: option '%s' is out of range", name);
    v = (lua_Integer)n;
  }
  lua_pop(L, 1);
  return v;
}

static double lrn_opt_number(lua_State *L, const char *name, double def,
                             double min, double max) {
  double v = def;
  lua_getfield(L, 1, name);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "resilnet: option '%s' must be a number", name);
    v = (double)lua_tonumber(L, -1);
    if (!(v >= min && v <= max))
      luaL_error(L, "resilnet: option '%s' is out of range", name);
  }
  lua_pop(L, 1);
  return v;
}

/* The string field name (nil: def); *len gets its length. It stays
 * referenced by the options table, which outlives its use. */
static const char *lrn_opt_lstring(lua_State *L, const char *name,
                                   const char *def, size_t *len) {
  const char *s = def;
  *len = def != NULL ? strlen(def) : 0;
  lua_getfield(L, 1, name);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "resilnet: option '%s' must be a string", name);
    s = lua_tolstring(L, -1, len);
  }
  lua_pop(L, 1);
  return s;
}

static const char *lrn_opt_string(lua_State *L, const char *name,
                                  const char *def) {
  size_t len;
  const char *s = lrn_opt_lstring(L, name, def, &len);
  if (s != NULL && strlen(s) != len)
    luaL_error(L, "resilnet: option '%s' contains a NUL byte", name);
  return s;
}

/* Fills codec options from the table at 1 (shared with server.c). */
void lrn_codec_options(lua_State *L, rn_codec_options_t *codec) {
  const char *protocol = lrn_opt_string(L, "protocol", "resp");
  if (rn_protocol_parse(protocol, &codec->protocol) != 0)
    luaL_error(L, "resilnet: unknown protocol '%s'", protocol);
  codec->length_bytes = (unsigned)lrn_opt_int(L, "length_bytes", 0, 0, 8);
  codec->delimiter = lrn_opt_string(L, "delimiter", NULL);
  codec->max_frame = (size_t)lrn_opt_int(L, "max_frame", 0, 0,
                                         (lua_Integer)1 << 40);
}

/* ------------------------------------------------------------------------ */
/* Functions                                                                  */

/* The array of endpoint strings at idx, checked, as a userdata pushed on
 * the stack (the strings stay referenced by the table at idx). */
static const char **lrn_endpoint_list(lua_State *L, int idx,
                                      const char *fname, size_t *count) {
  const char **list;
  size_t i, n;
  if (lua_type(L, idx) != LUA_TTABLE || (n = lrn_rawlen(L, idx)) == 0)
    luaL_error(L, "%s: option 'endpoints' must be a non-empty array of "
                  "strings", fname);
  list = (const char **)lua_newuserdata(L, n * sizeof(*list));
  for (i = 0; i < n; i++) {
    rn_endpoint_t ep;
    size_t len;
    lua_rawgeti(L, idx, (int)(i + 1));
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "%s: endpoints[%d] must be a string", fname, (int)(i + 1));
    list[i] = lua_tolstring(L, -1, &len);
    if (rn_endpoint_parse(&ep, list[i], len) != 0 ||
        (ep.kind == RN_ENDPOINT_TCP && ep.port == 0))
      luaL_error(L, "%s: bad endpoint '%s' (expected host:port, [v6]:port "
                    "or unix:/path)", fname, list[i]);
    lua_pop(L, 1);
  }
  *count = n;
  return list;
}

/* pool_new{endpoints = {...}, protocol, length_bytes, delimiter, max_frame,
 *          size, max_pending, connect_timeout_ms, timeout_ms,
 *          write_high_water, reconnect_initial_ms, reconnect_multiplier,
 *          reconnect_jitter, reconnect_max_ms, heartbeat_interval_ms,
 *          heartbeat_timeout_ms, heartbeat_ping, heartbeat_probe_ms,
 *          keepalive_idle,
 *          keepalive_interval, keepalive_count, user_timeout_ms,
 *          idle_timeout_ms, max_lifetime_ms, min_idle} -> handle.
 * Times in ms, keepalive in seconds; absent fields keep the core's
 * defaults. Raises on bad options. */
static int lrn_pool_new(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  rn_pool_options_t o;
  const char **endpoints;
  lrn_pool_t **ud, *p;
  size_t n;
  int rc;
  const lua_Integer max = (lua_Integer)1 << 40;

  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  rn_pool_options_init(&o);
  lrn_codec_options(L, &o.codec);
  o.size = (unsigned)lrn_opt_int(L, "size", o.size, 1, 1 << 20);
  o.max_pending =
      (unsigned)lrn_opt_int(L, "max_pending", o.max_pending, 0, 1 << 30);
  o.connect_timeout_ms = (uint64_t)lrn_opt_int(
      L, "connect_timeout_ms", (lua_Integer)o.connect_timeout_ms, 1,
      (lua_Integer)1 << 40);
  o.timeout_ms = (uint64_t)lrn_opt_int(
      L, "timeout_ms", (lua_Integer)o.timeout_ms, 1, (lua_Integer)1 << 40);
  o.write_high_water = (size_t)lrn_opt_int(
      L, "write_high_water", (lua_Integer)o.write_high_water, 1,
      (lua_Integer)1 << 40);
  o.reconnect.initial_ms = (uint64_t)lrn_opt_int(
      L, "reconnect_initial_ms", (lua_Integer)o.reconnect.initial_ms, 0, max);
  o.reconnect.multiplier =
      lrn_opt_number(L, "reconnect_multiplier", o.reconnect.multiplier, 1,
                     1e6);
  o.reconnect.jitter =
      lrn_opt_number(L, "reconnect_jitter", o.reconnect.jitter, 0, 1);
  o.reconnect.max_ms = (uint64_t)lrn_opt_int(
      L, "reconnect_max_ms", (lua_Integer)o.reconnect.max_ms, 0, max);
  o.heartbeat.interval_ms = (uint64_t)lrn_opt_int(
      L, "heartbeat_interval_ms", (lua_Integer)o.heartbeat.interval_ms, 0, max);
  o.heartbeat.timeout_ms = (uint64_t)lrn_opt_int(
      L, "heartbeat_timeout_ms", (lua_Integer)o.heartbeat.timeout_ms, 0, max);
  o.heartbeat.ping =
      lrn_opt_lstring(L, "heartbeat_ping", NULL, &o.heartbeat.ping_len);
  o.heartbeat.probe_ms = (uint64_t)lrn_opt_int(
      L, "heartbeat_probe_ms", (lua_Integer)o.heartbeat.probe_ms, 0, max);
  o.keepalive.idle_ms = 1000 * (uint64_t)lrn_opt_int(
      L, "keepalive_idle", (lua_Integer)o.keepalive.idle_ms / 1000, 0,
      1 << 24);
  o.keepalive.interval_ms = 1000 * (uint64_t)lrn_opt_int(
      L, "keepalive_interval", (lua_Integer)o.keepalive.interval_ms / 1000,
      0, 1 << 24);
  o.keepalive.count = (unsigned)lrn_opt_int(
      L, "keepalive_count", (lua_Integer)o.keepalive.count, 0, 1 << 24);
  o.keepalive.user_timeout_ms = (uint64_t)lrn_opt_int(
      L, "user_timeout_ms", (lua_Integer)o.keepalive.user_timeout_ms, 0,
      1 << 30);
  o.idle_timeout_ms = (uint64_t)lrn_opt_int(
      L, "idle_timeout_ms", (lua_Integer)o.idle_timeout_ms, 0, max);
  o.max_lifetime_ms = (uint64_t)lrn_opt_int(
      L, "max_lifetime_ms", (lua_Integer)o.max_lifetime_ms, 0, max);
  o.min_idle = (unsigned)lrn_opt_int(L, "min_idle", (lua_Integer)o.min_idle,
                                     0, 1 << 20);

  o.retry.attempts = (unsigned)lrn_opt_int(
      L, "retry_attempts", (lua_Integer)o.retry.attempts, 1, 5);
  o.retry.initial_ms = (uint64_t)lrn_opt_int(
      L, "retry_initial_ms", (lua_Integer)o.retry.initial_ms, 0, max);
  o.retry.max_ms = (uint64_t)lrn_opt_int(L, "retry_max_ms",
                                      (lua_Integer)o.retry.max_ms, 0, max);
  o.retry.budget_tokens = lrn_opt_number(L, "retry_budget_tokens",
                                         o.retry.budget_tokens, 1, 1e9);
  o.retry.budget_ratio = lrn_opt_number(L, "retry_budget_ratio",
                                        o.retry.budget_ratio, 0, 1);
  o.eject.failures = (unsigned)lrn_opt_int(
      L, "eject_failures", (lua_Integer)o.eject.failures, 0, 1 << 20);
  o.eject.time_ms = (uint64_t)lrn_opt_int(L, "eject_time_ms",
                                       (lua_Integer)o.eject.time_ms, 1, max);
  o.eject.max_time_ms = (uint64_t)lrn_opt_int(
      L, "eject_max_time_ms", (lua_Integer)o.eject.max_time_ms, 1, max);
  o.eject.max_share =
      lrn_opt_number(L, "eject_max_share", o.eject.max_share, 0, 1);
  o.attempt_timeout_ms = (uint64_t)lrn_opt_int(
      L, "attempt_timeout_ms", (lua_Integer)o.attempt_timeout_ms, 0, max);
  o.max_in_flight = (unsigned)lrn_opt_int(
      L, "max_in_flight", (lua_Integer)o.max_in_flight, 0, 1 << 30);
  o.hedge.delay_ms = (uint64_t)lrn_opt_int(
      L, "hedge_delay_ms", (lua_Integer)o.hedge.delay_ms, 0, max);
  o.hedge.max = (unsigned)lrn_opt_int(L, "hedge_max",
                                      (lua_Integer)o.hedge.max, 1, 16);
  o.resolve_ttl_ms = (uint64_t)lrn_opt_int(
      L, "resolve_ttl_ms", (lua_Integer)o.resolve_ttl_ms, 0, max);

  lua_getfield(L, 1, "endpoints"); /* 2: keeps the strings alive */
  endpoints = lrn_endpoint_list(L, 2, "resilnet.pool", &n);
  o.endpoints = endpoints;
  o.endpoint_count = n;
  o.on_event = lrn_pool_event;

  ud = (lrn_pool_t **)lua_newuserdata(L, sizeof(*ud));
  *ud = NULL;
  luaL_getmetatable(L, LRN_POOL_MT);
  lua_setmetatable(L, -2);
  p = (lrn_pool_t *)calloc(1, sizeof(*p));
  if (p == NULL)
    return luaL_error(L, "resilnet.pool: out of memory");
  p->ctx = ctx;
  p->close_ref = p->event_ref = p->pin_ref = p->classify_ref = LUA_NOREF;
  lua_getfield(L, 1, "classify");
  if (lua_type(L, -1) == LUA_TFUNCTION) {
    p->classify_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    o.classify = lrn_pool_classify;
  } else {
    lua_pop(L, 1);
  }
  lrn_link_init(&p->link);
  o.data = p;
  rc = rn_pool_new(ctx->loop, &o, &p->pool);
  if (rc != 0) {
    lrn_unref(ctx, &p->classify_ref);
    free(p);
    if (rc == UV_EINVAL)
      return luaL_error(L, "resilnet.pool: invalid options (an endpoint "
                           "listed twice, or limits that contradict)");
    return luaL_error(L, "resilnet.pool: %s (%s)", rn_strerror(rc),
                      rn_err_name(rc));
  }
  *ud = p;
  p->ud = ud;
  lrn_link_add(&ctx->pools, &p->link);
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
static void lrn_error_push_overload(lua_State *L, lrn_pool_t *p, int rc) {
  const char *msg;
  if (rc != RN_EOVERLOAD || p->overload_reason == NULL) {
    lrn_error_push_code(L, p->ctx, rc);
    return;
  }
  msg = strcmp(p->overload_reason, "max_in_flight") == 0
            ? "too many calls in flight to every endpoint (max_in_flight)"
            : "too many calls waiting for a connection (max_pending)";
  lrn_error_push(L, p->ctx, rn_err_name(rc), msg, strlen(msg), 0, 0, NULL);
}

/* pool_send(h, request, target[, timeout_ms, idempotent, attempts,
 *           attempt_timeout_ms, hedge_delay_ms, hedge_max, key])
 *   -> true | nil, err. hedge_delay_ms: nil = the pool's, 0 = never.
 * key (rnp only): a string, or true for a random one.
 * target (a task or a function) is dispatched exactly once with
 * (reply, nil) or (nil, err) unless this returns nil, err. */
static int lrn_pool_send(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lrn_pool_t *p = lrn_pool_get(L, 1);
  int type = lua_type(L, 3);
  rn_call_options_t co, *opts = NULL;
  char random_key[2 * LRN_RANDOM_KEY_BYTES];
  int held, rc;

  if (lua_gettop(L) > 3) {
    opts = &co;
    lrn_call_options(L, &co);
  }
  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 3,
                "expected a function or a thread");
  if (p == NULL) {
    lua_pushnil(L);
    lrn_error_push_code(L, ctx, RN_ECLOSED);
    return 2;
  }
  rc = lrn_encode_request(L, 2, 2, rn_pool_codec(p->pool), &ctx->buf);
  if (rc == UV_EINVAL)
    return luaL_error(L, "resilnet: the request cannot be framed by "
                         "protocol '%s' (does it contain the delimiter?)",
                      rn_pool_codec(p->pool)->type->name);
  if (rc == 0 && opts != NULL && !lua_isnoneornil(L, 10))
    rc = lrn_call_key(L, p, &co, random_key);
  if (rc != 0) {
    lua_pushnil(L);
    lrn_error_push_code(L, ctx, rc);
    return 2;
  }

  /* Everything that may raise happens before the core owns the call. */
  held = lrn_hold(L, ctx, 3);
  if (p->in_flight == 0 && p->pin_ref == LUA_NOREF) {
    lua_pushvalue(L, 1);
    p->pin_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  p->overload_reason = NULL;
  rc = rn_pool_call(p->pool, ctx->buf.base, ctx->buf.len, opts,
                    lrn_pool_done, (void *)(intptr_t)held);
  if (rc != 0) {
    lrn_release(ctx, held);
    if (p->in_flight == 0)
      lrn_unref(ctx, &p->pin_ref);
    lua_pushnil(L);
    lrn_error_push_overload(L, p, rc);
    return 2;
  }
  p->in_flight++;
  lua_pushboolean(L, 1);
  return 1;
}

/* pool_callback(h, request, cb): pool_send with no options for a target
 * that should be a function; anything else returns false, having done
 * nothing, so that pool:send need not ask type() on every call. */
static int lrn_pool_callback(lua_State *L) {
  if (lua_type(L, 3) != LUA_TFUNCTION) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_settop(L, 3);
  return lrn_pool_send(L);
}

/* pool_call(h, request): from a task, pool_send with no options and the
 * task as target -> true (the task then yields for the reply) | nil, err;
 * elsewhere false, having done nothing. */
static int lrn_pool_call(lua_State *L) {
  if (!lrn_in_task(L, lrn_ctx(L))) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_settop(L, 2);
  lua_pushthread(L);
  return lrn_pool_send(L);
}

/* pool_on(h, target): target receives every event table. */
static int lrn_pool_on(lua_State *L) {
  lrn_pool_t *p = lrn_pool_get(L, 1);
  int type = lua_type(L, 2);
  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 2,
                "expected a function or a thread");
  if (p == NULL)
    return 0;
  lua_settop(L, 2);
  lrn_unref(p->ctx, &p->event_ref);
  p->event_ref = luaL_ref(L, LUA_REGISTRYINDEX);
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
  if (p != NULL) {
    lrn_push_endpoints(L, p->pool);
    lua_setfield(L, -2, "endpoints");
  }
  lua_pushboolean(L, p == NULL || p->closing);
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
  rc = p == NULL || p->closing ? RN_ECLOSED
                               : rn_pool_set_endpoints(p->pool, list, n);
  if (rc == UV_EINVAL)
    return luaL_error(L, "pool:set_endpoints: an endpoint is listed twice");
  if (rc != 0) {
    lua_pushnil(L);
    lrn_error_push_code(L, lrn_ctx(L), rc);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int lrn_pool_reset_backoff(lua_State *L) {
  lrn_pool_t *p = lrn_pool_get(L, 1);
  if (p != NULL && !p->closing)
    rn_pool_reset_backoff(p->pool);
  return 0;
}

/* pool_close(h, drain_ms, target, reset) -> true, or false if already
 * closing (a reset still cuts a drain short). target (optional) is
 * dispatched once the pool has closed. */
static int lrn_pool_close(lua_State *L) {
  lrn_pool_t *p = lrn_pool_get(L, 1);
  lua_Integer drain = luaL_optinteger(L, 2, 0);
  int type = lua_type(L, 3);
  int reset = lua_toboolean(L, 4);
  luaL_argcheck(L, drain >= 0, 2, "drain must not be negative");
  luaL_argcheck(L, type == LUA_TNONE || type == LUA_TNIL ||
                       type == LUA_TFUNCTION || type == LUA_TTHREAD,
                3, "expected a function or a thread");
  if (p == NULL || p->closing) {
    if (p != NULL && reset)
      rn_pool_abort(p->pool, NULL);
    lua_pushboolean(L, 0);
    return 1;
  }
  if (type == LUA_TFUNCTION || type == LUA_TTHREAD) {
    lua_pushvalue(L, 3);
    p->close_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lrn_pool_start_close(p, (uint64_t)drain, reset);
  lua_pushboolean(L, 1);
  return 1;
}

static int lrn_pool_gc(lua_State *L) {
  lrn_pool_t **ud = (lrn_pool_t **)lua_touserdata(L, 1);
  lrn_pool_t *p = *ud;
  if (p == NULL)
    return 0;
  *ud = NULL;
  p->ud = NULL;
  /* Nobody can observe this pool any more: a pool with calls in flight is
   * pinned, so any still in flight means lua_close, and events of a pool
   * nobody holds have no listener. */
  p->quiet = 1;
  if (!p->closing)
    lrn_pool_start_close(p, 0, 0);
  return 0;
}

void lrn_pool_close_all(lrn_ctx_t *ctx) {
  lrn_link_t *l, *next;
  for (l = ctx->pools.next; l != &ctx->pools; l = next) {
    lrn_pool_t *p = LRN_CONTAINER_OF(l, lrn_pool_t, link);
    next = l->next;
    p->quiet = 1;
    if (!p->closing)
      lrn_pool_start_close(p, 0, 0);
  }
}

static const luaL_Reg lrn_pool_funcs[] = {
    {"pool_new", lrn_pool_new},     {"pool_send", lrn_pool_send},
    {"pool_callback", lrn_pool_callback},
    {"pool_call", lrn_pool_call},
    {"pool_on", lrn_pool_on},       {"pool_stats", lrn_pool_stats},
    {"pool_close", lrn_pool_close},
    {"pool_reset_backoff", lrn_pool_reset_backoff},
    {"pool_set_endpoints", lrn_pool_set_endpoints},
    {NULL, NULL}};

void lrn_pool_open(lua_State *L) {
  if (luaL_newmetatable(L, LRN_POOL_MT)) {
    lua_pushcfunction(L, lrn_pool_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "resilnet.pool");
    lua_setfield(L, -2, "__name");
  }
  lua_pushvalue(L, -3); /* upvalues: the context, the metatable */
  lua_insert(L, -2);
  lrn_setfuncs(L, lrn_pool_funcs, 2);
}

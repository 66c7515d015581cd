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
  lrn_object_t o;         /* o.quiet: collected, or at lua_close: no more
                             calls into Lua */
  rn_pool_t *pool;
  int event_ref;          /* target of every event */
  int classify_ref;       /* retry.classify, or LUA_NOREF */
  int pin_ref;            /* the userdata, while calls are in flight */
  unsigned in_flight;
  /* The reason of the overload event fired inside rn_pool_call (a static
   * string): which limit the EOVERLOAD it returns is about. */
  const char *overload_reason;
} lrn_pool_t;

static void lrn_pool_close_type(lrn_object_t *o);

static const lrn_type_t lrn_pool_type = {"resilnet.pool",
                                         lrn_pool_close_type, NULL};

/* The pool handle at idx (NULL once closed), or raises. */
#define lrn_pool_get(L, idx)                                                \
  ((lrn_pool_t *)lrn_object_get((L), (idx), &lrn_pool_type))

static int lrn_quiet(const lrn_pool_t *p) {
  return p->o.quiet || p->o.ctx->closing;
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
  /* No luaL_checkstack: every dispatch path calls this from a C function
   * just entered by (p)call, whose LUA_MINSTACK free slots hold the
   * target, a handler and these two values. */
  if (r->status != 0) {
    lua_pushnil(L);
    lrn_error_push_result(L, d->p->o.ctx, r);
    return 2;
  }
  if (rn_pool_codec(d->p->pool)->protocol == RN_PROTOCOL_RESP) {
    if (lrn_resp_push(L, d->p->o.ctx, r->body, r->body_len) != 0) {
      rn_result_t bad = *r;
      bad.status = RN_EBADFRAME;
      lua_pushnil(L);
      lrn_error_push_result(L, d->p->o.ctx, &bad);
      return 2;
    }
  } else {
    lua_pushlstring(L, r->body, r->body_len);
  }
  lua_pushnil(L);
  return 2;
}

/* A call or a batch ended: its target gets what push pushes (unless the
 * pool went quiet), and the pool is unpinned with its last one. */
static void lrn_pool_finish(lrn_pool_t *p, int held, lrn_push_fn push,
                            void *arg) {
  if (lrn_quiet(p))
    lrn_release(p->o.ctx, held);
  else
    lrn_dispatch_held(p->o.ctx, held, push, arg);
  if (--p->in_flight == 0)
    lrn_unref(p->o.ctx, &p->pin_ref);
}

static void lrn_pool_done(rn_pool_t *pool, void *data,
                          const rn_result_t *result) {
  lrn_done_t d;
  d.p = (lrn_pool_t *)rn_pool_data(pool);
  d.result = result;
  lrn_pool_finish(d.p, (int)(intptr_t)data, lrn_push_result, &d);
}

typedef struct lrn_batch_done_s {
  lrn_pool_t *p;
  const rn_batch_result_t *result;
} lrn_batch_done_t;

/* A batch's target gets (replies, nil): replies[i] is what pool:call
 * would have returned for request i, its reply or its error object (an
 * error reply, an rnp refusal), with replies.n the count; or (nil, err)
 * when the batch failed as a whole. */
static int lrn_push_batch(lua_State *L, void *arg) {
  lrn_batch_done_t *d = (lrn_batch_done_t *)arg;
  const rn_batch_result_t *b = d->result;
  size_t i;
  luaL_checkstack(L, 4, NULL);
  if (b->status != 0) {
    rn_result_t r;
    memset(&r, 0, sizeof(r));
    r.status = b->status;
    r.body = b->body;
    r.body_len = b->body_len;
    r.attempts = b->attempts;
    r.maybe_executed = b->maybe_executed;
    r.endpoint = b->endpoint;
    lua_pushnil(L);
    lrn_error_push_result(L, d->p->o.ctx, &r);
    return 2;
  }
  lua_createtable(L, (int)b->count, 1);
  for (i = 0; i < b->count; i++) {
    lrn_done_t one;
    one.p = d->p;
    one.result = &b->results[i];
    lrn_push_result(L, &one); /* reply, nil | nil, err: one of them */
    if (lua_isnil(L, -2))
      lua_remove(L, -2);
    else
      lua_pop(L, 1);
    lua_rawseti(L, -2, (int)(i + 1));
  }
  lua_pushinteger(L, (lua_Integer)b->count);
  lua_setfield(L, -2, "n");
  lua_pushnil(L);
  return 2;
}

static void lrn_pool_batch_done(rn_pool_t *pool, void *data,
                                const rn_batch_result_t *result) {
  lrn_batch_done_t d;
  d.p = (lrn_pool_t *)rn_pool_data(pool);
  d.result = result;
  lrn_pool_finish(d.p, (int)(intptr_t)data, lrn_push_batch, &d);
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
/* Options                                                                    */

#define LRN_POOL(field) offsetof(rn_pool_options_t, field)
#define LRN_TLS(field) offsetof(rn_tls_options_t, field)

/* tls = {...}: LuaSec's and OpenResty's names, into the rn_tls_options_t
 * the pool options point to (the files are read by rn_pool_new). */
static const rn_tls_options_t lrn_tls_defaults; /* = rn_tls_options_init */
static const lrn_option_t lrn_pool_tls_options[] = {
    LRN_OPTION("tls.cafile", STRING, STRING, LRN_TLS(cafile)),
    LRN_OPTION("tls.capath", STRING, STRING, LRN_TLS(capath)),
    LRN_OPTION("tls.certificate", STRING, STRING, LRN_TLS(certificate)),
    LRN_OPTION("tls.key", STRING, STRING, LRN_TLS(key)),
    LRN_OPTION("tls.server_name", STRING, STRING, LRN_TLS(server_name)),
    LRN_OPTION("tls.insecure", BOOLEAN, BOOL, LRN_TLS(insecure)),
    LRN_OPTIONS_END};

/* Every option of rn_pool_options_t, as Lua spells it. Adding a pool
 * option touches four files: its field in core/include/resilnet.h, its
 * default in rn_pool_options_init (core/src/client/pool.c), a row here,
 * and its line in docs/api.md (spec/api_doc_spec.lua holds the doc to the
 * schema the facade builds from these rows). The check and the default
 * are not repeated anywhere else. */
static const lrn_option_t lrn_pool_options[] = {
    LRN_OPTION("protocol", PROTOCOL, PROTOCOL, LRN_POOL(codec.protocol)),
    LRN_OPTION("size", COUNT, UNSIGNED, LRN_POOL(size), .max = 1 << 20),
    LRN_OPTION("min_idle", COUNT0, UNSIGNED, LRN_POOL(min_idle),
               .max = 1 << 20),
    LRN_OPTION("max_pending", COUNT0, UNSIGNED, LRN_POOL(max_pending)),
    LRN_OPTION("connect_timeout", POSITIVE, MS, LRN_POOL(connect_timeout_ms)),
    LRN_OPTION("idle_timeout", SECONDS, MS, LRN_POOL(idle_timeout_ms)),
    LRN_OPTION("max_lifetime", SECONDS, MS, LRN_POOL(max_lifetime_ms)),
    LRN_OPTION("timeout", POSITIVE, MS, LRN_POOL(timeout_ms)),
    LRN_OPTION("max_frame", COUNT, MAX_FRAME, LRN_POOL(codec.max_frame)),
    LRN_OPTION("delimiter", DELIMITER, DELIMITER, LRN_POOL(codec.delimiter),
               .protocol = "line"),
    LRN_OPTION("length_bytes", LENGTH_BYTES, LENGTH_BYTES,
               LRN_POOL(codec.length_bytes), .protocol = "length"),
    LRN_OPTION("write_high_water", COUNT, SIZE, LRN_POOL(write_high_water)),
    /* the token sent in each HELLO (1 to 255 bytes) */
    LRN_OPTION("auth", TOKEN, LSTRING, LRN_POOL(auth),
               .len_offset = LRN_POOL(auth_len), .protocol = "rnp"),
    LRN_OPTION("heartbeat", TABLE, NONE, 0,
               .flags = LRN_OPT_OR_FALSE | LRN_OPT_ON),
    LRN_OPTION("heartbeat.interval", POSITIVE, MS,
               LRN_POOL(heartbeat.interval_ms), .flags = LRN_OPT_OFF),
    LRN_OPTION("heartbeat.timeout", POSITIVE, MS,
               LRN_POOL(heartbeat.timeout_ms), .flags = LRN_OPT_OFF),
    /* line and length: the request body to ping with */
    LRN_OPTION("heartbeat.ping", STRING, LSTRING, LRN_POOL(heartbeat.ping),
               .len_offset = LRN_POOL(heartbeat.ping_len)),
    /* a dead connection kept as a probe; 0: none */
    LRN_OPTION("heartbeat.probe", SECONDS, MS, LRN_POOL(heartbeat.probe_ms),
               .flags = LRN_OPT_OFF),
    LRN_OPTION("keepalive", TABLE, NONE, 0,
               .flags = LRN_OPT_OR_FALSE | LRN_OPT_ON),
    LRN_OPTION("keepalive.idle", SECONDS, MS, LRN_POOL(keepalive.idle_ms),
               .flags = LRN_OPT_OFF),
    LRN_OPTION("keepalive.interval", POSITIVE, MS,
               LRN_POOL(keepalive.interval_ms)),
    LRN_OPTION("keepalive.count", COUNT, UNSIGNED, LRN_POOL(keepalive.count),
               .max = 1 << 24),
    LRN_OPTION("keepalive.user_timeout", SECONDS, MS,
               LRN_POOL(keepalive.user_timeout_ms), .flags = LRN_OPT_OFF),
    LRN_OPTION("reconnect", TABLE, NONE, 0, .flags = LRN_OPT_ON),
    LRN_OPTION("reconnect.initial", POSITIVE, MS,
               LRN_POOL(reconnect.initial_ms)),
    LRN_OPTION("reconnect.multiplier", MULTIPLIER, DOUBLE,
               LRN_POOL(reconnect.multiplier), .max = 1e6),
    LRN_OPTION("reconnect.jitter", RATIO, DOUBLE, LRN_POOL(reconnect.jitter)),
    LRN_OPTION("reconnect.max", POSITIVE, MS, LRN_POOL(reconnect.max_ms)),
    LRN_OPTION("retry", TABLE, NONE, 0, .flags = LRN_OPT_OR_FALSE | LRN_OPT_ON),
    /* retry = false: one attempt */
    LRN_OPTION("retry.attempts", ATTEMPTS, UNSIGNED, LRN_POOL(retry.attempts),
               .flags = LRN_OPT_OFF, .off = 1),
    LRN_OPTION("retry.initial", SECONDS, MS, LRN_POOL(retry.initial_ms)),
    LRN_OPTION("retry.max", SECONDS, MS, LRN_POOL(retry.max_ms)),
    LRN_OPTION("retry.budget", TABLE, NONE, 0, .flags = LRN_OPT_ON),
    LRN_OPTION("retry.budget.tokens", COUNT, DOUBLE,
               LRN_POOL(retry.budget_tokens), .max = 1e9),
    LRN_OPTION("retry.budget.ratio", RATIO, DOUBLE,
               LRN_POOL(retry.budget_ratio)),
    /* hedge = {...}: hedging on, after `delay` (the core's 0 is off) */
    LRN_OPTION("hedge", TABLE, NONE, 0, .flags = LRN_OPT_OR_FALSE),
    LRN_OPTION("hedge.delay", POSITIVE, MS, LRN_POOL(hedge.delay_ms),
               .flags = LRN_OPT_OFF | LRN_OPT_GIVEN, .given = 0.05),
    /* attempts in flight, the first included */
    LRN_OPTION("hedge.max", ATTEMPTS, UNSIGNED, LRN_POOL(hedge.max)),
    LRN_OPTION("eject", TABLE, NONE, 0, .flags = LRN_OPT_OR_FALSE | LRN_OPT_ON),
    LRN_OPTION("eject.failures", COUNT, UNSIGNED, LRN_POOL(eject.failures),
               .flags = LRN_OPT_OFF),
    LRN_OPTION("eject.time", POSITIVE, MS, LRN_POOL(eject.time_ms)),
    LRN_OPTION("eject.max_time", POSITIVE, MS, LRN_POOL(eject.max_time_ms)),
    LRN_OPTION("eject.max_share", RATIO, DOUBLE, LRN_POOL(eject.max_share)),
    LRN_OPTION("resolve_ttl", SECONDS, MS, LRN_POOL(resolve_ttl_ms)),
    LRN_OPTION("attempt_timeout", SECONDS, MS, LRN_POOL(attempt_timeout_ms)),
    LRN_OPTION("max_in_flight", COUNT0, UNSIGNED, LRN_POOL(max_in_flight)),
    /* requests one pool:batch may carry */
    LRN_OPTION("max_batch", COUNT, UNSIGNED, LRN_POOL(max_batch),
               .max = 1 << 20),
    /* tls = {...}: TLS to every endpoint; false or left out: plaintext */
    LRN_OPTION("tls", TABLE, NONE, 0, .flags = LRN_OPT_OR_FALSE,
               .rows = lrn_pool_tls_options, .rows_init = &lrn_tls_defaults),
    /* resp: requests put ahead of `setup` (AUTH, SELECT, CLIENT SETNAME) */
    LRN_OPTION("password", STRING, STRING, LRN_POOL(password),
               .protocol = "resp"),
    LRN_OPTION("username", STRING, STRING, LRN_POOL(username),
               .protocol = "resp"),
    LRN_OPTION("database", COUNT0, UNSIGNED, LRN_POOL(database),
               .protocol = "resp", .max = 1 << 20),
    LRN_OPTION("client_name", STRING, STRING, LRN_POOL(client_name),
               .protocol = "resp"),
    /* resp: ROLE checked as part of connecting */
    LRN_OPTION("role", ROLE, ROLE, LRN_POOL(role), .protocol = "resp"),
    LRN_OPTIONS_END};

/* Reads `tls` of the options table at idx into tls: 1 if it is a table
 * (TLS on), 0 if absent or false. Raises on a bad field. */
static int lrn_tls_read(lua_State *L, int idx, const char *fname,
                        rn_tls_options_t *tls) {
  int on;
  rn_tls_options_init(tls);
  lua_getfield(L, idx, "tls");
  on = lua_type(L, -1) == LUA_TTABLE;
  lua_pop(L, 1);
  if (on)
    lrn_options_read(L, idx, fname, lrn_pool_tls_options, tls);
  return on;
}

/* Pushes why TLS options cannot be used (a file, a missing key, a build
 * without OpenSSL), for rc from rn_pool_new or rn_pool_reload_tls. */
static const char *lrn_tls_why(lua_State *L, const rn_tls_options_t *tls,
                               int rc) {
  char why[256];
  if (rn_tls_options_check(tls, RN_TLS_CLIENT, why, sizeof(why)) == 0 ||
      why[0] == '\0')
    lua_pushstring(L, rn_strerror(rc));
  else
    lua_pushstring(L, why);
  return lua_tostring(L, -1);
}

/* Pushes why the first endpoint the TLS options cannot verify is refused
 * (a unix socket without tls.server_name), or returns NULL. */
static const char *lrn_tls_endpoint_why(lua_State *L,
                                        const rn_tls_options_t *tls,
                                        const char **endpoints, size_t n) {
  char why[512];
  size_t i;
  for (i = 0; i < n; i++) {
    rn_endpoint_t ep;
    if (rn_endpoint_parse(&ep, endpoints[i], strlen(endpoints[i])) == 0 &&
        rn_tls_endpoint_check(tls, &ep, why, sizeof(why)) != 0) {
      lua_pushstring(L, why);
      return lua_tostring(L, -1);
    }
  }
  return NULL;
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

/* retry.not_executed at the top of the stack (resp; docs/retry-rules.md):
 * nil keeps the core's table (NULL), false gives an empty one, an array of
 * error codes a NULL-terminated array in a userdata left on the stack
 * above it (the strings stay the table's; rn_pool_new copies them). */
static const char *const *lrn_not_executed(lua_State *L) {
  static const char *const none[] = {NULL};
  const char **list;
  size_t i, n;
  if (lua_isnil(L, -1)) return NULL;
  if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) return none;
  if (lua_type(L, -1) != LUA_TTABLE)
    luaL_error(L, "resilnet.pool: option 'retry.not_executed' must be false "
                  "or an array of Redis error codes");
  n = lrn_rawlen(L, -1);
  list = (const char **)lua_newuserdata(L, (n + 1) * sizeof(*list));
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, -2, (int)(i + 1));
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "resilnet.pool: retry.not_executed[%d] must be a string",
                 (int)(i + 1));
    list[i] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  list[n] = NULL;
  return list;
}

/* Raises the error of a bad `setup`. */
static int lrn_setup_error(lua_State *L, int resp) {
  return luaL_error(L, "resilnet.pool: option 'setup' must be an array of %s",
                    resp ? "commands (arrays of strings or integers)"
                         : "request bodies (strings)");
}

/* The word at the top of the stack (a string, or an integer for resp's
 * SELECT 2), popped; its string stays referenced by the table at keep. */
static const char *lrn_setup_word(lua_State *L, int keep, size_t *len,
                                  int resp) {
  const char *s;
  if (lua_type(L, -1) == LUA_TNUMBER && resp) {
    lua_Number n = lua_tonumber(L, -1);
    if (n != (lua_Number)(lua_Integer)n) lrn_setup_error(L, resp);
    lua_pop(L, 1);
    lua_pushfstring(L, "%d", (int)n);
  } else if (lua_type(L, -1) != LUA_TSTRING) {
    lrn_setup_error(L, resp);
  }
  s = lua_tolstring(L, -1, len);
  lua_rawseti(L, keep, (int)lrn_rawlen(L, keep) + 1);
  return s;
}

/* `setup` at the top of the stack (nil: none): resp, an array of commands
 * (arrays of words); line, length, rnp, an array of request bodies. Read
 * into one userdata pushed above it, with a table anchoring the words
 * below that; both stay on the stack until rn_pool_new has encoded them. */
static const rn_setup_request_t *lrn_setup_read(lua_State *L, int resp,
                                                size_t *count) {
  int list = lua_gettop(L), keep;
  size_t n, words = 0, i, at = 0;
  rn_setup_request_t *req;
  const char **args;
  size_t *lens;

  *count = 0;
  if (lua_isnil(L, list)) return NULL;
  if (lua_type(L, list) != LUA_TTABLE) lrn_setup_error(L, resp);
  n = lrn_rawlen(L, list);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, list, (int)i);
    if (resp && lua_type(L, -1) == LUA_TTABLE && lrn_rawlen(L, -1) > 0)
      words += lrn_rawlen(L, -1);
    else if (!resp && lua_type(L, -1) == LUA_TSTRING)
      words++;
    else
      lrn_setup_error(L, resp);
    lua_pop(L, 1);
  }
  lua_newtable(L);
  keep = lua_gettop(L);
  req = (rn_setup_request_t *)lua_newuserdata(
      L, n * sizeof(*req) + words * (sizeof(*args) + sizeof(*lens)) + 1);
  args = (const char **)(void *)(req + n);
  lens = (size_t *)(void *)(args + words);
  for (i = 0; i < n; i++) {
    size_t k, m;
    lua_rawgeti(L, list, (int)(i + 1));
    m = resp ? lrn_rawlen(L, -1) : 1;
    req[i].args = args + at;
    req[i].lens = lens + at;
    req[i].count = m;
    for (k = 0; k < m; k++, at++) {
      if (resp)
        lua_rawgeti(L, -1, (int)(k + 1));
      else
        lua_pushvalue(L, -1);
      args[at] = lrn_setup_word(L, keep, &lens[at], resp);
    }
    lua_pop(L, 1);
  }
  *count = n;
  return req;
}

/* pool_new(options, endpoints) -> handle. options: as resilnet.pool
 * takes them (lrn_pool_options, and retry.classify); endpoints: the array
 * of endpoint strings (the facade resolves a discovery function). Absent
 * options keep the core's defaults. Raises on bad options. */
static int lrn_pool_new(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  rn_pool_options_t o;
  rn_tls_options_t tls;
  const char **endpoints;
  lrn_pool_t *p;
  size_t n;
  int rc;

  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  rn_pool_options_init(&o);
  lrn_options_read(L, 1, "resilnet.pool", lrn_pool_options, &o);
  if (lrn_tls_read(L, 1, "resilnet.pool", &tls))
    o.tls = &tls;
  endpoints = lrn_endpoint_list(L, 2, "resilnet.pool", &n); /* 3 */
  o.endpoints = endpoints;
  o.endpoint_count = n;
  o.on_event = lrn_pool_event;

  /* Read before the object exists: a bad list raises with nothing to
   * undo. The list (and the tables holding its strings) stay on the stack
   * until rn_pool_new has copied it. */
  lua_getfield(L, 1, "retry");
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_getfield(L, -1, "not_executed");
    o.retry.not_executed = lrn_not_executed(L);
  }

  lua_getfield(L, 1, "setup");
  o.setup = lrn_setup_read(L, o.codec.protocol == RN_PROTOCOL_RESP,
                           &o.setup_count);

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
    if (o.tls != NULL && (rc == RN_ETLS || rc == RN_ENOTLS ||
                          rc == UV_EINVAL)) {
      const char *why = lrn_tls_why(L, &tls, rc);
      if (rc != UV_EINVAL || rn_tls_options_check(&tls, RN_TLS_CLIENT, NULL,
                                                  0) != 0)
        return luaL_error(L, "resilnet.pool: option 'tls': %s", why);
      why = lrn_tls_endpoint_why(L, &tls, endpoints, n);
      if (why != NULL)
        return luaL_error(L, "resilnet.pool: option 'tls': %s", why);
    }
    if (rc == UV_EINVAL)
      return luaL_error(L, "resilnet.pool: invalid options (an endpoint "
                           "listed twice, limits that contradict, or a username "
                           "without a password)");
    return luaL_error(L, "resilnet.pool: %s (%s)", rn_strerror(rc),
                      rn_err_name(rc));
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
  co->blocking = lua_toboolean(L, 11);
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
    lrn_error_push_code(L, p->o.ctx, rc);
    return;
  }
  msg = strcmp(p->overload_reason, "max_in_flight") == 0
            ? "too many calls in flight to every endpoint (max_in_flight)"
            : "too many calls waiting for a connection (max_pending)";
  lrn_error_push(L, p->o.ctx, rn_err_name(rc), msg, strlen(msg), 0, 0, NULL);
}

/* pool_send(h, request, target[, timeout_ms, idempotent, attempts,
 *           attempt_timeout_ms, hedge_delay_ms, hedge_max, key])
 *   -> true | nil, err. hedge_delay_ms: nil = the pool's, 0 = never.
 * key (rnp only): a string, or true for a random one.
 * target (a task or a function) is dispatched exactly once with
 * (reply, nil) or (nil, err) unless this returns nil, err. */
/* The common part of pool_send and pool_call: encodes the request at 2,
 * holds the target at index target and gives the call to the core. p may
 * be NULL (closed); opts NULL for the pool's defaults. */
static int lrn_pool_start(lua_State *L, lrn_ctx_t *ctx, lrn_pool_t *p,
                          int target, rn_call_options_t *opts) {
  char random_key[2 * LRN_RANDOM_KEY_BYTES];
  int held, rc;

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
    rc = lrn_call_key(L, p, opts, random_key);
  if (rc != 0) {
    lua_pushnil(L);
    lrn_error_push_code(L, ctx, rc);
    return 2;
  }

  /* Everything that may raise happens before the core owns the call. */
  held = lrn_hold(L, ctx, target);
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

  if (lua_gettop(L) > 3) {
    opts = &co;
    lrn_call_options(L, &co);
  }
  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 3,
                "expected a function or a thread");
  return lrn_pool_start(L, ctx, p, 3, opts);
}

/* pool_callback(h, request, cb): pool_send with no options for a target
 * that should be a function; anything else returns false, having done
 * nothing, so that pool:send need not ask type() on every call. */
static int lrn_pool_callback(lua_State *L) {
  if (lua_type(L, 3) != LUA_TFUNCTION) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return lrn_pool_start(L, lrn_ctx(L), lrn_pool_get(L, 1), 3, NULL);
}

/* pool_call(h, request): from a task, pool_send with no options and the
 * task as target -> true (the task then yields for the reply) | nil, err;
 * elsewhere false, having done nothing. */
static int lrn_pool_call(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lrn_pool_t *p;
  if (!lrn_in_task(L, ctx)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  p = lrn_pool_get(L, 1);
  lua_pushthread(L); /* the target: above whatever else was passed */
  return lrn_pool_start(L, ctx, p, lua_gettop(L), NULL);
}

/* pool_batch(h, requests, target[, timeout_ms, idempotent, attempts,
 *            attempt_timeout_ms]) -> true | nil, err. requests: an array
 * of what pool_send takes, encoded one after the other into one string
 * (the core copies it), sent as one batch. target is dispatched exactly
 * once (lrn_push_batch) unless this returns nil, err. Raises on bad
 * requests and on more than the pool's max_batch. */
/* The array of requests at index 2 encoded one after the other into one
 * string, pushed (its n requests, its length). rc: 0 or the error of
 * encoding one. Raises (naming fname) on an empty array, a hole, or a
 * request the protocol cannot frame. */
static const char *lrn_encode_batch(lua_State *L, lrn_ctx_t *ctx,
                                    const rn_codec_t *codec,
                                    const char *fname, size_t *len,
                                    size_t *count, int *rc) {
  size_t i, n = lrn_rawlen(L, 2);
  luaL_Buffer b;
  *rc = 0;
  if (n == 0)
    luaL_error(L, "%s: the batch is empty", fname);
  luaL_buffinit(L, &b);
  for (i = 1; *rc == 0 && i <= n; i++) {
    lua_rawgeti(L, 2, (int)i);
    if (lua_isnil(L, -1))
      luaL_error(L, "%s: requests[%d] is nil (expected an array)", fname,
                 (int)i);
    *rc = lrn_encode_request(L, lua_gettop(L), 2, codec, &ctx->buf);
    lua_pop(L, 1); /* the buffer's own slot is on top again */
    if (*rc == UV_EINVAL)
      luaL_error(L, "%s: requests[%d] cannot be framed by protocol '%s' "
                    "(does it contain the delimiter?)",
                 fname, (int)i, codec->type->name);
    if (*rc == 0)
      luaL_addlstring(&b, ctx->buf.base, ctx->buf.len);
  }
  luaL_pushresult(&b);
  *count = n;
  return lua_tolstring(L, -1, len);
}

static int lrn_pool_batch(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lrn_pool_t *p = lrn_pool_get(L, 1);
  int type = lua_type(L, 3);
  rn_call_options_t co, *opts = NULL;
  const char *frames;
  size_t n, len;
  int held, rc = 0;

  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 3,
                "expected a function or a thread");
  if (lua_gettop(L) > 3) {
    lua_settop(L, 7); /* no hedge, no key: not for a batch */
    opts = &co;
    lrn_call_options(L, &co);
  }
  lua_settop(L, 7);
  if (p == NULL) {
    lua_pushnil(L);
    lrn_error_push_code(L, ctx, RN_ECLOSED);
    return 2;
  }
  frames = lrn_encode_batch(L, ctx, rn_pool_codec(p->pool), "pool:batch",
                            &len, &n, &rc);
  if (rc != 0) {
    lua_pushnil(L);
    lrn_error_push_code(L, ctx, rc);
    return 2;
  }

  held = lrn_hold(L, ctx, 3);
  if (p->in_flight == 0 && p->pin_ref == LUA_NOREF) {
    lua_pushvalue(L, 1);
    p->pin_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  p->overload_reason = NULL;
  rc = rn_pool_batch(p->pool, frames, len, n, opts, lrn_pool_batch_done,
                     (void *)(intptr_t)held);
  if (rc != 0) {
    lrn_release(ctx, held);
    if (p->in_flight == 0)
      lrn_unref(ctx, &p->pin_ref);
    if (rc == UV_E2BIG)
      return luaL_error(L, "pool:batch: %d requests are more than the "
                           "pool's max_batch", (int)n);
    lua_pushnil(L);
    lrn_error_push_overload(L, p, rc);
    return 2;
  }
  p->in_flight++;
  lua_pushboolean(L, 1);
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
    return luaL_error(L, "pool:set_endpoints: an endpoint is listed twice");
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
  if (!lrn_tls_read(L, 2, "pool:reload_tls", &tls))
    return luaL_error(L, "pool:reload_tls: expected a table of TLS options");
  rc = p == NULL || p->o.closing ? RN_ECLOSED
                                 : rn_pool_reload_tls(p->pool, &tls);
  if (rc == UV_EINVAL && rn_tls_options_check(&tls, RN_TLS_CLIENT, NULL,
                                              0) == 0)
    return luaL_error(L, "pool:reload_tls: the pool has no TLS (TLS is "
                         "switched on or off only when a pool is made)");
  if (rc != 0) {
    const char *why = rc == RN_ECLOSED ? rn_strerror(rc)
                                       : lrn_tls_why(L, &tls, rc);
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

/* pool_options() -> the facade's schema of the pool options, with the
 * core's defaults. */
static int lrn_pool_options_schema(lua_State *L) {
  rn_pool_options_t o;
  rn_pool_options_init(&o);
  lrn_options_push_schema(L, lrn_pool_options, &o);
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Held connections                                                           */

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
  if (p->pin_ref == LUA_NOREF) {
    lua_pushvalue(L, 1);
    p->pin_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  p->overload_reason = NULL;
  rc = rn_pool_hold(p->pool, &co, lrn_hold_done, (void *)(intptr_t)held);
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
    lrn_error_push_code(L, p->o.ctx, rc);
    return 2;
  }
  /* Pinned while anything is in flight, as for pool_send. */
  if (p->pin_ref == LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, hu->pool_ref);
    p->pin_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  p->in_flight++;
  lua_pushboolean(L, 1);
  return 1;
}

/* hold_send(hold, request, target[, timeout_ms, blocking]) -> true |
 * nil, err: pool_send on the held connection. */
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
  co.blocking = lua_toboolean(L, 5);
  held = lrn_hold(L, ctx, 3);
  rc = rn_hold_call(hu->hold, ctx->buf.base, ctx->buf.len, &co,
                    lrn_pool_done, (void *)(intptr_t)held);
  return lrn_hold_started(L, p, hu, held, rc);
}

/* hold_batch(hold, requests, target[, timeout_ms]) -> true | nil, err:
 * pool_batch on the held connection. */
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
  lua_settop(L, 4);
  if (hu->hold == NULL || p == NULL)
    return lrn_hold_refused(L, ctx, hu, RN_ECLOSED);
  frames = lrn_encode_batch(L, ctx, rn_pool_codec(p->pool), "conn:batch",
                            &len, &n, &rc);
  if (rc != 0) return lrn_hold_refused(L, ctx, hu, rc);
  memset(&co, 0, sizeof(co));
  co.timeout_ms = (uint64_t)timeout;
  held = lrn_hold(L, ctx, 3);
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

/* (value, nil), or (nil, err) once the subscriber's connection is lost. */
static int lrn_push_frame(lua_State *L, void *arg) {
  lrn_push_t *f = (lrn_push_t *)arg;
  int rc = f->status;
  luaL_checkstack(L, 3, NULL);
  if (rc == 0 && (rc = lrn_resp_push(L, f->ctx, f->frame, f->len)) == 0) {
    lua_pushnil(L);
    return 2;
  }
  lua_pushnil(L);
  lrn_error_push_code(L, f->ctx, rc);
  return 2;
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
  if (status != 0) lrn_unref(hu->ctx, &hu->sub_ref); /* the last call */
}

/* hold_subscribe(hold, fn) -> true | nil, err: fn(value, nil) for every
 * push frame or subscribe-mode array, in order; fn(nil, err) once when
 * the connection is lost (never after hold_release). */
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

static const luaL_Reg lrn_pool_funcs[] = {
    {"pool_options", lrn_pool_options_schema},
    {"pool_new", lrn_pool_new},     {"pool_send", lrn_pool_send},
    {"pool_callback", lrn_pool_callback},
    {"pool_call", lrn_pool_call},
    {"pool_batch", lrn_pool_batch},
    {"pool_on", lrn_pool_on},       {"pool_stats", lrn_pool_stats},
    {"pool_close", lrn_pool_close},
    {"pool_reset_backoff", lrn_pool_reset_backoff},
    {"pool_reload_tls", lrn_pool_reload_tls},
    {"pool_set_endpoints", lrn_pool_set_endpoints},
    {"pool_hold", lrn_pool_hold},
    {"hold_send", lrn_hold_send},
    {"hold_batch", lrn_hold_batch},
    {"hold_release", lrn_hold_release},
    {"hold_unknown", lrn_hold_unknown_l},
    {"hold_subscribe", lrn_hold_subscribe},
    {"hold_write", lrn_hold_write},
    {NULL, NULL}};

void lrn_pool_open(lua_State *L) {
  if (luaL_newmetatable(L, LRN_HOLD_MT)) {
    lua_pushcfunction(L, lrn_hold_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lrn_object_register(L, &lrn_pool_type, lrn_pool_funcs);
}

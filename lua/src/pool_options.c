/* resilnet.pool's options: the rows that map Lua's names onto
 * rn_pool_options_t, and what the rows cannot say (the endpoint list,
 * retry.not_executed, setup, TLS), read for pool_new and explained when
 * rn_pool_new refuses them. */
#include <stdlib.h>
#include <string.h>

#include "pool.h"

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

/* Pushes why the TLS options cannot verify the endpoint text (a unix
 * socket without tls.server_name), or returns NULL. */
static const char *lrn_tls_endpoint_why(lua_State *L,
                                        const rn_tls_options_t *tls,
                                        const char *text) {
  char why[512];
  rn_endpoint_t ep;
  if (rn_endpoint_parse(&ep, text, strlen(text)) != 0 ||
      rn_tls_endpoint_check(tls, &ep, why, sizeof(why)) == 0)
    return NULL;
  lua_pushstring(L, why);
  return lua_tostring(L, -1);
}

/* (pool.h) */
const char *lrn_pool_tls_endpoints_why(lua_State *L, rn_pool_t *pool,
                                       const rn_tls_options_t *tls) {
  size_t i, n = rn_pool_endpoint_count(pool);
  for (i = 0; i < n; i++) {
    rn_endpoint_info_t info;
    const char *why;
    if (rn_pool_endpoint_info(pool, i, &info) == 0 &&
        (why = lrn_tls_endpoint_why(L, tls, info.endpoint)) != NULL)
      return why;
  }
  return NULL;
}

/* (pool.h) */
const char **lrn_endpoint_list(lua_State *L, int idx,
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

int lrn_pool_tls_read(lua_State *L, int idx, const char *fname,
                      rn_tls_options_t *tls) {
  return lrn_tls_read(L, idx, fname, lrn_pool_tls_options, tls);
}

void lrn_pool_options_read(lua_State *L, rn_pool_options_t *o,
                           rn_tls_options_t *tls) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  rn_pool_options_init(o);
  lrn_options_read(L, 1, "resilnet.pool", lrn_pool_options, o);
  if (lrn_pool_tls_read(L, 1, "resilnet.pool", tls))
    o->tls = tls;
  o->endpoints = lrn_endpoint_list(L, 2, "resilnet.pool",
                                   &o->endpoint_count); /* 3 */
  lua_getfield(L, 1, "retry");
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_getfield(L, -1, "not_executed");
    o->retry.not_executed = lrn_not_executed(L);
  }
  lua_getfield(L, 1, "setup");
  o->setup = lrn_setup_read(L, o->codec.protocol == RN_PROTOCOL_RESP,
                            &o->setup_count);
}

int lrn_pool_new_raise(lua_State *L, const rn_pool_options_t *o, int rc) {
  const rn_tls_options_t *tls = o->tls;
  size_t i;
  if (tls != NULL && (rc == RN_ETLS || rc == RN_ENOTLS || rc == UV_EINVAL)) {
    const char *why = lrn_tls_why(L, tls, RN_TLS_CLIENT, rc);
    if (rc != UV_EINVAL ||
        rn_tls_options_check(tls, RN_TLS_CLIENT, NULL, 0) != 0)
      return luaL_error(L, "resilnet.pool: option 'tls': %s", why);
    for (i = 0; i < o->endpoint_count; i++)
      if ((why = lrn_tls_endpoint_why(L, tls, o->endpoints[i])) != NULL)
        return luaL_error(L, "resilnet.pool: option 'tls': %s", why);
  }
  if (rc == UV_EINVAL)
    return luaL_error(L, "resilnet.pool: invalid options (an endpoint "
                         "listed twice, limits that contradict, a username "
                         "without a password, or a client_name with a space "
                         "or a character outside printable ASCII)");
  return luaL_error(L, "resilnet.pool: %s (%s)", rn_strerror(rc),
                    rn_err_name(rc));
}

/* (pool.h) */
int lrn_pool_options_schema(lua_State *L) {
  rn_pool_options_t o;
  rn_pool_options_init(&o);
  lrn_options_push_schema(L, lrn_pool_options, &o);
  return 1;
}

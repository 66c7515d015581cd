/* resilnet.server's `tls` and `auth`: read from the options table into
 * the core's rn_tls_options_t and rn_server_auth_options_t, the Lua
 * function that decides who may talk to an rnp server, and certificate
 * rotation (server:reload_tls). The core does the work (core/src/server/
 * tls.c and auth.c); this file only translates. */
#include <stdlib.h>
#include <string.h>

#include "server_tls.h"

#define LRN_TLS(field) offsetof(rn_tls_options_t, field)

/* tls = {...}: LuaSec's and OpenResty's names, as the pool's. */
const rn_tls_options_t lrn_server_tls_defaults; /* = rn_tls_options_init */
const lrn_option_t lrn_server_tls_options[] = {
    LRN_OPTION("tls.certificate", STRING, STRING, LRN_TLS(certificate)),
    LRN_OPTION("tls.key", STRING, STRING, LRN_TLS(key)),
    LRN_OPTION("tls.cafile", STRING, STRING, LRN_TLS(cafile)),
    LRN_OPTION("tls.capath", STRING, STRING, LRN_TLS(capath)),
    LRN_OPTION("tls.verify_client", BOOLEAN, BOOL, LRN_TLS(verify_client)),
    LRN_OPTIONS_END};

/* ------------------------------------------------------------------------ */
/* auth                                                                       */

typedef struct lrn_auth_query_s {
  lrn_server_auth_t *a;
  const rn_auth_attempt_t *attempt;
  char *identity;
  size_t identity_size;
  int accepted;
} lrn_auth_query_t;

/* check(token or nil, subject or nil) -> identity (a string) or nil/false:
 * protected; an error or another answer is recorded (run() re-raises it)
 * and refuses. */
static int lrn_auth_query(lua_State *L) {
  lrn_auth_query_t *q = (lrn_auth_query_t *)lua_touserdata(L, 1);
  const rn_auth_attempt_t *at = q->attempt;
  size_t len;
  const char *id;
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, q->a->check_ref);
  if (at->token != NULL)
    lua_pushlstring(L, at->token, at->token_len);
  else
    lua_pushnil(L);
  if (at->subject != NULL)
    lua_pushstring(L, at->subject);
  else
    lua_pushnil(L);
  lua_call(L, 2, 1);
  if (!lua_toboolean(L, -1))
    return 0;
  if (lua_type(L, -1) != LUA_TSTRING)
    return luaL_error(L, "resilnet.server: auth.check must return an "
                         "identity (a string) or nil, got %s",
                      luaL_typename(L, -1));
  id = lua_tolstring(L, -1, &len);
  if (len >= q->identity_size || strlen(id) != len)
    return luaL_error(L, "resilnet.server: auth.check returned an identity "
                         "over %d bytes or with a NUL",
                      (int)q->identity_size - 1);
  memcpy(q->identity, id, len + 1);
  q->accepted = 1;
  return 0;
}

/* The core's rn_server_auth_cb: asks Lua, synchronously. */
static int lrn_auth_check(void *data, const rn_auth_attempt_t *attempt,
                          char *identity, size_t identity_size) {
  lrn_server_auth_t *a = (lrn_server_auth_t *)data;
  lua_State *L = a->ctx->L;
  lrn_auth_query_t q;
  int top = lua_gettop(L);
  if (a->ctx->closing || a->check_ref == LUA_NOREF)
    return UV_EACCES;
  q.a = a;
  q.attempt = attempt;
  q.identity = identity;
  q.identity_size = identity_size;
  q.accepted = 0;
  if (lrn_cpcall(L, lrn_auth_query, &q) != LUA_OK) {
    lrn_record_error(a->ctx, L, -1);
    q.accepted = 0;
  }
  lua_settop(L, top);
  return q.accepted ? 0 : UV_EACCES;
}

static int lrn_auth_error(lua_State *L, const char *what) {
  return luaL_error(L, "resilnet.server: option 'auth.%s", what);
}

/* The token of tokens[i] (a string or {token = ..., identity = ...}),
 * checked, with its identity; nothing pushed. */
static const char *lrn_auth_token(lua_State *L, int t, size_t i, size_t *len,
                                  const char **identity) {
  const char *token;
  *identity = NULL;
  lua_rawgeti(L, t, (int)i + 1);
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_getfield(L, -1, "identity");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
      lrn_auth_error(L, "tokens' entry: identity must be a string");
    *identity = lua_tostring(L, -1); /* kept alive by the entry */
    lua_pop(L, 1);
    lua_getfield(L, -1, "token");
    lua_replace(L, -2); /* the entry stays referenced by t */
  }
  if (lua_type(L, -1) != LUA_TSTRING)
    lrn_auth_error(L, "tokens' entries must be strings or {token = ..., "
                      "identity = ...}");
  token = lua_tolstring(L, -1, len); /* kept alive by t or the entry */
  if (*len == 0 || *len > RN_RNP_AUTH_MAX)
    lrn_auth_error(L, "tokens' entries must be 1 to 255 bytes");
  lua_pop(L, 1);
  return token;
}

/* auth = {tokens = {...}, check = fn, certificate = true}. Everything is
 * checked before anything is allocated: a raise leaks nothing. */
static void lrn_auth_read(lua_State *L, int t, lrn_server_secure_t *sec,
                          lrn_server_auth_t *a) {
  size_t n = 0, i, len;
  int tokens, check;
  const char *identity;
  rn_server_auth_options_init(&sec->auth);
  lua_getfield(L, t, "tokens");
  tokens = lua_gettop(L);
  if (!lua_isnil(L, tokens)) {
    if (lua_type(L, tokens) != LUA_TTABLE ||
        (n = lrn_rawlen(L, tokens)) == 0)
      lrn_auth_error(L, "tokens' must be a non-empty array of tokens");
    for (i = 0; i < n; i++)
      (void)lrn_auth_token(L, tokens, i, &len, &identity);
  }
  lua_getfield(L, t, "certificate");
  sec->auth.certificate = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, t, "check");
  check = lua_gettop(L);
  if (!lua_isnil(L, check) && lua_type(L, check) != LUA_TFUNCTION)
    lrn_auth_error(L, "check' must be a function");
  if (n == 0 && lua_isnil(L, check) && !sec->auth.certificate)
    lrn_auth_error(L, "' needs tokens, check or certificate = true");
  if (n > 0) {
    sec->tokens = (rn_auth_token_t *)calloc(n, sizeof(*sec->tokens));
    if (sec->tokens == NULL)
      luaL_error(L, "resilnet.server: out of memory");
    for (i = 0; i < n; i++)
      sec->tokens[i].token = lrn_auth_token(
          L, tokens, i, &sec->tokens[i].len, &sec->tokens[i].identity);
    sec->auth.tokens = sec->tokens;
    sec->auth.token_count = n;
  }
  if (!lua_isnil(L, check)) {
    lua_pushvalue(L, check);
    a->check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    sec->auth.check = lrn_auth_check;
    sec->auth.data = a; /* the server's copy: see lrn_server_new */
  }
  lua_settop(L, tokens - 1);
}

void lrn_server_secure_read(lua_State *L, int idx, lrn_server_secure_t *sec,
                            rn_server_options_t *o, lrn_server_auth_t *a) {
  idx = lrn_absindex(L, idx);
  memset(sec, 0, sizeof(*sec));
  a->ctx = lrn_ctx(L);
  a->check_ref = LUA_NOREF;
  if (lrn_tls_read(L, idx, "resilnet.server", lrn_server_tls_options,
                   &sec->tls))
    o->tls = &sec->tls;
  lua_getfield(L, idx, "auth");
  if (lua_type(L, -1) == LUA_TTABLE) {
    lrn_auth_read(L, lrn_absindex(L, -1), sec, a);
    o->auth = &sec->auth;
  } else if (!lua_isnil(L, -1)) {
    lrn_auth_error(L, "' must be a table");
  }
  lua_pop(L, 1);
}

void lrn_server_secure_free(lrn_server_secure_t *sec) {
  free(sec->tokens); /* the core copied them; the strings are Lua's */
  sec->tokens = NULL;
}

void lrn_server_auth_unref(lrn_server_auth_t *a) {
  if (a->ctx != NULL)
    lrn_unref(a->ctx, &a->check_ref);
}

void lrn_server_secure_raise(lua_State *L, const rn_server_options_t *o,
                             int rc) {
  if (o->tls != NULL &&
      (rc == RN_ETLS || rc == RN_ENOTLS ||
       (rc == UV_EINVAL &&
        rn_tls_options_check(o->tls, RN_TLS_SERVER, NULL, 0) != 0)))
    luaL_error(L, "resilnet.server: option 'tls': %s",
               lrn_tls_why(L, o->tls, RN_TLS_SERVER, rc));
  if (o->auth != NULL && rc == UV_EINVAL && o->auth->certificate &&
      (o->tls == NULL || !o->tls->verify_client))
    luaL_error(L, "resilnet.server: option 'auth.certificate' needs "
                  "tls.verify_client = true");
}

/* server_reload_tls(h, {tls = {...}}) -> true | nil, err. Raises on bad
 * fields or a server without TLS; a file that cannot be used is nil, err
 * (rotation is a runtime act; nothing changes then). */
int lrn_server_reload_tls_with(lua_State *L, rn_server_t *server,
                               lrn_ctx_t *ctx) {
  rn_tls_options_t tls;
  int rc;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lrn_tls_read(L, 2, "server:reload_tls", lrn_server_tls_options,
                    &tls))
    return luaL_error(L, "server:reload_tls: expected a table of TLS "
                         "options");
  rc = server == NULL ? RN_ECLOSED : rn_server_reload_tls(server, &tls);
  /* Programmer errors raise: options that contradict, or a server made
   * without TLS (which the core checks first). */
  if (rc == UV_EINVAL &&
      rn_tls_options_check(&tls, RN_TLS_SERVER, NULL, 0) == UV_EINVAL)
    return luaL_error(L, "server:reload_tls: %s",
                      lrn_tls_why(L, &tls, RN_TLS_SERVER, rc));
  if (rc == UV_EINVAL)
    return luaL_error(L, "server:reload_tls: the server has no TLS (TLS is "
                         "switched on or off only when a server is made)");
  if (rc != 0) {
    const char *why =
        rc == RN_ECLOSED ? rn_strerror(rc)
                         : lrn_tls_why(L, &tls, RN_TLS_SERVER, rc);
    lua_pushnil(L);
    lrn_error_push(L, ctx, rn_err_name(rc), why, strlen(why), 0, 0, NULL);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

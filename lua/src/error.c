/* Error objects: plain tables {code, message, attempts, maybe_executed,
 * endpoint} sharing one metatable per state, so they read well in
 * tostring() and can be told apart from other values (resilnet.is_error). */
#include <string.h>

#include "lrn.h"

#define LRN_ERROR_NAME "resilnet.error"

static int lrn_error_tostring(lua_State *L) {
  const char *code, *message, *sep = " (";
  int n = 1;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_getfield(L, 1, "code");           /* 2 */
  lua_getfield(L, 1, "message");        /* 3 */
  lua_getfield(L, 1, "endpoint");       /* 4 */
  lua_getfield(L, 1, "attempts");       /* 5 */
  lua_getfield(L, 1, "maybe_executed"); /* 6 */
  code = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "ERROR";
  message = lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : "";
  lua_pushfstring(L, "%s: %s", code, message);
  if (lua_type(L, 4) == LUA_TSTRING) {
    lua_pushfstring(L, "%s%s", sep, lua_tostring(L, 4));
    sep = ", ";
    n++;
  }
  if (lua_type(L, 5) == LUA_TNUMBER) {
    int attempts = (int)lua_tonumber(L, 5);
    lua_pushfstring(L, "%s%d attempt%s", sep, attempts,
                    attempts == 1 ? "" : "s");
    sep = ", ";
    n++;
  }
  if (lua_type(L, 6) == LUA_TBOOLEAN) {
    lua_pushfstring(L, "%s%s", sep,
                    lua_toboolean(L, 6) ? "may have executed"
                                        : "not executed");
    n++;
  }
  if (n > 1) {
    lua_pushliteral(L, ")");
    n++;
  }
  lua_concat(L, n);
  return 1;
}

void lrn_error_push(lua_State *L, lrn_ctx_t *ctx, const char *code,
                    const char *message, size_t message_len,
                    unsigned attempts, int maybe_executed,
                    const char *endpoint) {
  luaL_checkstack(L, 3, "resilnet: error object");
  lua_createtable(L, 0, 5);
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  lua_pushlstring(L, message, message_len);
  lua_setfield(L, -2, "message");
  if (maybe_executed >= 0) {
    lua_pushinteger(L, (lua_Integer)attempts);
    lua_setfield(L, -2, "attempts");
    lua_pushboolean(L, maybe_executed);
    lua_setfield(L, -2, "maybe_executed");
  }
  if (endpoint != NULL) {
    lua_pushstring(L, endpoint);
    lua_setfield(L, -2, "endpoint");
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->errmt_ref);
  lua_setmetatable(L, -2);
}

void lrn_error_push_code(lua_State *L, lrn_ctx_t *ctx, int err) {
  const char *message = rn_strerror(err);
  lrn_error_push(L, ctx, rn_err_name(err), message, strlen(message), 0, 0,
                 NULL);
}

int lrn_push_address(lua_State *L, int rc, const char *host, int port) {
  if (rc != 0) {
    lua_pushnil(L);
    lrn_error_push_code(L, lrn_ctx(L), rc);
    return 2;
  }
  lua_pushstring(L, host);
  lua_pushinteger(L, port);
  return 2;
}

void lrn_error_push_result(lua_State *L, lrn_ctx_t *ctx,
                           const rn_result_t *result) {
  const char *message = rn_strerror(result->status);
  size_t len = strlen(message);
  /* An error reply's text, or the reason an rnp server gave for refusing. */
  if (result->body != NULL && result->body_len > 0) {
    rn_resp_item_t item;
    message = result->body;
    len = result->body_len;
    /* The body is the server's text; accept the raw error frame too. */
    if (len > 0 && (message[0] == '-' || message[0] == '!') &&
        rn_resp_item(message, len, &item) == 1 && item.size == len &&
        (item.type == RN_RESP_ERROR || item.type == RN_RESP_BULK_ERROR)) {
      message = item.str;
      len = item.len;
    }
  }
  lrn_error_push(L, ctx, rn_err_name(result->status), message, len,
                 result->attempts, result->maybe_executed != 0,
                 result->endpoint);
}

int lrn_is_error(lua_State *L, lrn_ctx_t *ctx, int idx) {
  int same;
  if (!lua_getmetatable(L, idx))
    return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->errmt_ref);
  same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same;
}

/* error(code, message [, attempts, maybe_executed, endpoint]): for the
 * facade's own failures, so every error a user sees has one shape. */
static int lrn_error_new(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  size_t len;
  const char *code = luaL_checkstring(L, 1);
  const char *message = luaL_checklstring(L, 2, &len);
  lua_Integer attempts = luaL_optinteger(L, 3, 0);
  int maybe = lua_isnoneornil(L, 4) ? -1 : lua_toboolean(L, 4);
  const char *endpoint = luaL_optstring(L, 5, NULL);
  lrn_error_push(L, ctx, code, message, len,
                 attempts < 0 ? 0u : (unsigned)attempts, maybe, endpoint);
  return 1;
}

static int lrn_is_error_l(lua_State *L) {
  lua_pushboolean(L, lrn_is_error(L, lrn_ctx(L), 1));
  return 1;
}

static const luaL_Reg lrn_error_funcs[] = {
    {"error", lrn_error_new}, {"is_error", lrn_is_error_l}, {NULL, NULL}};

void lrn_error_open(lua_State *L, lrn_ctx_t *ctx) {
  if (ctx->errmt_ref == LUA_NOREF) {
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, lrn_error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, LRN_ERROR_NAME);
    lua_setfield(L, -2, "__name");
    ctx->errmt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->errmt_ref);
  lua_setfield(L, -2, "error_metatable");
  lua_pushvalue(L, -2);
  lrn_setfuncs(L, lrn_error_funcs, 1);
}

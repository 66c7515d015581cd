/* resilnet.server handles and the requests they deliver.
 *
 * Each request reaches Lua as a small full userdata whose __gc drops the
 * request if nobody answered it: every request is released exactly once
 * even when a handler task is abandoned, and answering twice raises
 * instead of touching freed memory. */
#include <stdlib.h>
#include <string.h>

#include "lrn.h"

typedef struct lrn_server_s {
  lrn_ctx_t *ctx;
  rn_server_t *server;
  struct lrn_server_s **ud;
  lrn_link_t link;
  int closing;
  int request_ref; /* target dispatched with (value, request) */
  int close_ref;
} lrn_server_t;

typedef struct lrn_request_s {
  rn_request_t *req; /* NULL once answered or dropped */
} lrn_request_t;

static lrn_server_t *lrn_server_get(lua_State *L, int idx) {
  return *(lrn_server_t **)luaL_checkudata(L, idx, LRN_SERVER_MT);
}

static void lrn_unref(lrn_ctx_t *ctx, int *ref) {
  if (*ref != LUA_NOREF && !ctx->closing)
    luaL_unref(ctx->L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
}

/* ------------------------------------------------------------------------ */
/* Callbacks from the core                                                    */

typedef struct lrn_incoming_s {
  lrn_server_t *s;
  rn_request_t *req;
  const char *body;
  size_t len;
  int taken; /* a request userdata owns req */
} lrn_incoming_t;

static int lrn_push_request(lua_State *L, void *arg) {
  lrn_incoming_t *in = (lrn_incoming_t *)arg;
  lrn_request_t *r;
  luaL_checkstack(L, 2, NULL);
  if (rn_server_codec(in->s->server)->protocol != RN_PROTOCOL_RESP ||
      lrn_resp_push(L, in->s->ctx, in->body, in->len) != 0)
    lua_pushlstring(L, in->body, in->len);
  r = (lrn_request_t *)lua_newuserdata(L, sizeof(*r));
  r->req = in->req;
  luaL_getmetatable(L, LRN_REQUEST_MT);
  lua_setmetatable(L, -2);
  in->taken = 1;
  return 2;
}

static void lrn_server_request(rn_server_t *server, rn_request_t *request,
                               const char *body, size_t len) {
  lrn_server_t *s = (lrn_server_t *)rn_server_data(server);
  lrn_incoming_t in;
  in.s = s;
  in.req = request;
  in.body = body;
  in.len = len;
  in.taken = 0;
  if (!s->ctx->closing && s->request_ref != LUA_NOREF)
    lrn_dispatch(s->ctx, s->request_ref, lrn_push_request, &in);
  if (!in.taken)
    rn_request_drop(request);
}

static void lrn_server_closed(rn_server_t *server) {
  lrn_server_t *s = (lrn_server_t *)rn_server_data(server);
  lrn_link_remove(&s->link);
  if (s->ud != NULL)
    *s->ud = NULL;
  if (s->close_ref != LUA_NOREF)
    lrn_dispatch(s->ctx, s->close_ref, NULL, NULL);
  lrn_unref(s->ctx, &s->close_ref);
  lrn_unref(s->ctx, &s->request_ref);
  free(s);
}

static void lrn_server_start_close(lrn_server_t *s) {
  s->closing = 1;
  rn_server_close(s->server, lrn_server_closed);
}

/* ------------------------------------------------------------------------ */
/* Functions                                                                  */

static lua_Integer lrn_field_int(lua_State *L, const char *name,
                                 lua_Integer def, lua_Integer min,
                                 lua_Integer max) {
  lua_Integer v = def;
  lua_getfield(L, 1, name);
  if (!lua_isnil(L, -1)) {
    lua_Number n = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || !(n >= (lua_Number)min &&
                                            n <= (lua_Number)max))
      luaL_error(L, "resilnet.server: option '%s' is out of range", name);
    v = (lua_Integer)n;
  }
  lua_pop(L, 1);
  return v;
}

/* server_new({listen, protocol, length_bytes, delimiter, max_frame,
 *             backlog, max_concurrent}, target) -> handle | nil, err.
 * target is dispatched with (request value, request) for every request.
 * Bad options raise; failing to bind or listen returns nil, err. */
static int lrn_server_new(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  rn_server_options_t o;
  rn_endpoint_t ep;
  lrn_server_t **ud, *s;
  size_t len;
  int rc, ref;

  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  rn_server_options_init(&o);
  lrn_codec_options(L, &o.codec);
  o.backlog = (int)lrn_field_int(L, "backlog", o.backlog, 1, 1 << 20);
  o.max_concurrent = (unsigned)lrn_field_int(L, "max_concurrent",
                                             o.max_concurrent, 1, 1 << 30);
  lua_getfield(L, 1, "listen"); /* 3: keeps the string alive */
  if (lua_type(L, 3) != LUA_TSTRING)
    return luaL_error(L, "resilnet.server: option 'listen' must be a "
                         "string");
  o.listen = lua_tolstring(L, 3, &len);
  if (rn_endpoint_parse(&ep, o.listen, len) != 0)
    return luaL_error(L, "resilnet.server: bad listen address '%s' "
                         "(expected host:port, [v6]:port or unix:/path)",
                      o.listen);
  o.on_request = lrn_server_request;

  ud = (lrn_server_t **)lua_newuserdata(L, sizeof(*ud));
  *ud = NULL;
  luaL_getmetatable(L, LRN_SERVER_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, 2);
  ref = luaL_ref(L, LUA_REGISTRYINDEX);
  s = (lrn_server_t *)calloc(1, sizeof(*s));
  if (s == NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return luaL_error(L, "resilnet.server: out of memory");
  }
  s->ctx = ctx;
  s->request_ref = ref;
  s->close_ref = LUA_NOREF;
  lrn_link_init(&s->link);
  o.data = s;
  rc = rn_server_new(ctx->loop, &o, &s->server);
  if (rc != 0) {
    free(s);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    if (rc == UV_EINVAL)
      return luaL_error(L, "resilnet.server: invalid options (%s)",
                        rn_strerror(rc));
    lua_pushnil(L);
    lrn_error_push(L, ctx, rn_err_name(rc), rn_strerror(rc),
                   strlen(rn_strerror(rc)), 0, -1, o.listen);
    return 2;
  }
  *ud = s;
  s->ud = ud;
  lrn_link_add(&ctx->servers, &s->link);
  return 1;
}

static int lrn_server_address(lua_State *L) {
  lrn_server_t *s = lrn_server_get(L, 1);
  char host[RN_ENDPOINT_ADDRESS_MAX];
  int port = 0, rc;
  if (s == NULL || s->closing) {
    lua_pushnil(L);
    lrn_error_push_code(L, lrn_ctx(L), RN_ECLOSED);
    return 2;
  }
  rc = rn_server_address(s->server, host, sizeof(host), &port);
  if (rc != 0) {
    lua_pushnil(L);
    lrn_error_push_code(L, lrn_ctx(L), rc);
    return 2;
  }
  lua_pushstring(L, host);
  lua_pushinteger(L, port);
  return 2;
}

/* server_close(h, target) -> true, or false if already closing. */
static int lrn_server_close(lua_State *L) {
  lrn_server_t *s = lrn_server_get(L, 1);
  int type = lua_type(L, 2);
  luaL_argcheck(L, type == LUA_TNONE || type == LUA_TNIL ||
                       type == LUA_TFUNCTION || type == LUA_TTHREAD,
                2, "expected a function or a thread");
  if (s == NULL || s->closing) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (type == LUA_TFUNCTION || type == LUA_TTHREAD) {
    lua_settop(L, 2);
    s->close_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lrn_server_start_close(s);
  lua_pushboolean(L, 1);
  return 1;
}

static int lrn_server_gc(lua_State *L) {
  lrn_server_t **ud = (lrn_server_t **)lua_touserdata(L, 1);
  lrn_server_t *s = *ud;
  if (s == NULL)
    return 0;
  *ud = NULL;
  s->ud = NULL;
  if (!s->closing)
    lrn_server_start_close(s);
  return 0;
}

void lrn_server_close_all(lrn_ctx_t *ctx) {
  lrn_link_t *l, *next;
  for (l = ctx->servers.next; l != &ctx->servers; l = next) {
    lrn_server_t *s = LRN_CONTAINER_OF(l, lrn_server_t, link);
    next = l->next;
    if (!s->closing)
      lrn_server_start_close(s);
  }
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                   */

static rn_request_t *lrn_request_take(lua_State *L) {
  lrn_request_t *r = (lrn_request_t *)luaL_checkudata(L, 1, LRN_REQUEST_MT);
  rn_request_t *req = r->req;
  if (req == NULL)
    luaL_error(L, "resilnet: the request was already answered");
  return req;
}

static void lrn_request_release(lua_State *L) {
  ((lrn_request_t *)lua_touserdata(L, 1))->req = NULL;
}

static int lrn_push_failure(lua_State *L, const char *why) {
  lua_pushboolean(L, 0);
  lua_pushstring(L, why);
  return 2;
}

/* request_reply(req, value) -> true | false, why. resp encodes any Lua
 * value (an unencodable one becomes an error reply); line and length need
 * a string (anything else, or a body that cannot be framed, drops the
 * connection: those protocols have no error frame). Releases req always,
 * except when it raises (req already answered, out of memory). */
static int lrn_request_reply(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  rn_request_t *req = lrn_request_take(L);
  const rn_codec_t *codec = rn_server_codec(rn_request_server(req));
  int rc;
  lua_settop(L, 2);
  ctx->buf.len = 0;
  if (codec->protocol == RN_PROTOCOL_RESP) {
    if (lrn_resp_encode_value(L, ctx, 2, &ctx->buf) != 0) {
      /* why is on top (index 3) */
      lua_pushfstring(L, "resilnet: cannot encode the reply: %s",
                      lua_tostring(L, 3));
      ctx->buf.len = 0;
      rc = lrn_resp_encode_error_value(L, ctx, 4, &ctx->buf);
      lrn_request_release(L);
      if (rc == 0)
        (void)rn_request_reply(req, ctx->buf.base, ctx->buf.len);
      else
        rn_request_drop(req);
      return lrn_push_failure(L, lua_tostring(L, 4));
    }
  } else {
    size_t len;
    const char *body;
    if (lua_type(L, 2) != LUA_TSTRING) {
      lrn_request_release(L);
      rn_request_drop(req);
      return lrn_push_failure(L, "the reply must be a string");
    }
    body = lua_tolstring(L, 2, &len);
    rc = rn_codec_encode(codec, &ctx->buf, body, len);
    if (rc != 0) {
      lrn_request_release(L);
      rn_request_drop(req);
      return lrn_push_failure(L, rc == UV_EINVAL
                                     ? "the reply cannot be framed (does "
                                       "it contain the delimiter?)"
                                     : rn_strerror(rc));
    }
  }
  lrn_request_release(L);
  rc = rn_request_reply(req, ctx->buf.base, ctx->buf.len);
  if (rc != 0)
    return lrn_push_failure(L, rn_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* request_fail(req, err): the handler failed. resp answers an error reply
 * (an error object's code and message, or the text); line and length drop
 * the connection. Releases req. */
static int lrn_request_fail(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  rn_request_t *req = lrn_request_take(L);
  const rn_codec_t *codec = rn_server_codec(rn_request_server(req));
  lua_settop(L, 2);
  if (codec->protocol == RN_PROTOCOL_RESP) {
    int rc;
    ctx->buf.len = 0;
    rc = lrn_resp_encode_error_value(L, ctx, 2, &ctx->buf);
    lrn_request_release(L);
    if (rc == 0)
      (void)rn_request_reply(req, ctx->buf.base, ctx->buf.len);
    else
      rn_request_drop(req);
    return 0;
  }
  lrn_request_release(L);
  rn_request_drop(req);
  return 0;
}

static int lrn_request_gc(lua_State *L) {
  lrn_request_t *r = (lrn_request_t *)lua_touserdata(L, 1);
  if (r->req != NULL) {
    rn_request_t *req = r->req;
    r->req = NULL;
    rn_request_drop(req);
  }
  return 0;
}

static const luaL_Reg lrn_server_funcs[] = {
    {"server_new", lrn_server_new},
    {"server_address", lrn_server_address},
    {"server_close", lrn_server_close},
    {"request_reply", lrn_request_reply},
    {"request_fail", lrn_request_fail},
    {NULL, NULL}};

void lrn_server_open(lua_State *L) {
  if (luaL_newmetatable(L, LRN_SERVER_MT)) {
    lua_pushcfunction(L, lrn_server_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LRN_REQUEST_MT)) {
    lua_pushcfunction(L, lrn_request_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushvalue(L, -2);
  lrn_setfuncs(L, lrn_server_funcs, 1);
}

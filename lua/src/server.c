/* resilnet.server handles and the requests they deliver.
 *
 * Each request reaches Lua as a small full userdata whose __gc drops the
 * request if nobody answered it: every request is released exactly once
 * even when a handler task is abandoned, and answering twice raises
 * instead of touching freed memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrn.h"
#include "server_tls.h"

#define LRN_DEDUPE_OP_MT "resilnet.dedupe_op"

typedef struct lrn_server_s {
  lrn_object_t o;
  rn_server_t *server;
  int draining;    /* closing gracefully: lua_close cuts it short */
  int request_ref; /* target dispatched with (value, request, ...) */
  int event_ref;   /* plain function dispatched with each event table */
  int tls;         /* requests may carry a client certificate's subject */
  int auth;        /* rnp requests carry their connection's identity */
  lrn_server_auth_t auth_check; /* auth.check, called by the core */
} lrn_server_t;

typedef struct lrn_request_s {
  rn_request_t *req; /* NULL once answered or dropped */
} lrn_request_t;

/* A dedupe store written in Lua: the core's store interface, each call
 * dispatched to the facade's runner, which calls the store's method in a
 * task (it may wait on another pool) and answers with dedupe_done(). The
 * core closes the store after the server's close callback, so it is
 * allocated apart from lrn_server_t and owns the runner's ref. */
typedef struct lrn_store_s {
  rn_dedupe_store_t base;
  lrn_ctx_t *ctx;
  int runner_ref;
  char id[RN_RNP_DEDUPE_SIZE]; /* the store table's `id`, when it has one */
} lrn_store_t;

/* The Lua side of one store operation. */
typedef struct lrn_dedupe_op_s {
  rn_dedupe_op_t *op; /* NULL once answered */
  int kind;           /* 1 claim, 2 finish, 3 release */
} lrn_dedupe_op_t;

static void lrn_server_close_type(lrn_object_t *o);
static void lrn_server_at_exit(lrn_object_t *o);

static const lrn_type_t lrn_server_type = {
    "resilnet.server", lrn_server_close_type, lrn_server_at_exit};

#define lrn_server_get(L, idx)                                              \
  ((lrn_server_t *)lrn_object_get((L), (idx), &lrn_server_type))

/* ------------------------------------------------------------------------ */
/* Callbacks from the core                                                    */

typedef struct lrn_incoming_s {
  lrn_server_t *s;
  rn_request_t *req;
  const char *body;
  size_t len;
  int taken; /* a request userdata owns req */
} lrn_incoming_t;

/* An rnp id (u64) exactly: an integer where Lua has one that holds it
 * (5.3+: up to 2^63 - 1; 5.1 and LuaJIT: numbers, exact up to 2^53),
 * else its decimal text, never a rounded float. */
static void lrn_push_id(lua_State *L, uint64_t id) {
#if LUA_VERSION_NUM >= 503
  if (id <= (uint64_t)LUA_MAXINTEGER) {
    lua_pushinteger(L, (lua_Integer)id);
    return;
  }
#else
  if (id <= ((uint64_t)1 << 53)) {
    lua_pushnumber(L, (lua_Number)id);
    return;
  }
#endif
  {
    char text[24];
    snprintf(text, sizeof(text), "%llu", (unsigned long long)id);
    lua_pushstring(L, text);
  }
}

/* (value, request, peer or nil, peer_subject or nil) and for rnp also
 * (id, seconds left or nil, key or nil, idempotent, identity or nil). */
static int lrn_push_request(lua_State *L, void *arg) {
  lrn_incoming_t *in = (lrn_incoming_t *)arg;
  rn_protocol_t protocol = rn_server_codec(in->s->server)->protocol;
  lrn_request_t *r;
  rn_request_info_t info;
  char peer[RN_AUTH_IDENTITY_MAX + 1]; /* also the subject, the identity */
  luaL_checkstack(L, 9, NULL);
  if (protocol != RN_PROTOCOL_RESP ||
      lrn_resp_push(L, in->s->o.ctx, in->body, in->len) != 0)
    lua_pushlstring(L, in->body, in->len);
  r = (lrn_request_t *)lua_newuserdata(L, sizeof(*r));
  r->req = in->req;
  luaL_getmetatable(L, LRN_REQUEST_MT);
  lua_setmetatable(L, -2);
  in->taken = 1;
  if (rn_request_peer(in->req, peer, sizeof(peer)) == 0)
    lua_pushstring(L, peer);
  else
    lua_pushnil(L);
  /* Only a TLS server has subjects to ask for: plaintext pays nothing. */
  if (in->s->tls && rn_request_peer_subject(in->req, peer, sizeof(peer)) == 0)
    lua_pushstring(L, peer);
  else
    lua_pushnil(L);
  if (protocol != RN_PROTOCOL_RNP)
    return 4;
  rn_request_info(in->req, &info);
  lrn_push_id(L, info.id);
  if (info.has_deadline)
    lua_pushnumber(L, (lua_Number)info.deadline_ms / 1000);
  else
    lua_pushnil(L);
  if (info.key != NULL)
    lua_pushlstring(L, info.key, info.key_len);
  else
    lua_pushnil(L);
  lua_pushboolean(L, info.idempotent);
  if (in->s->auth && rn_request_identity(in->req, peer, sizeof(peer)) == 0)
    lua_pushstring(L, peer);
  else
    lua_pushnil(L);
  return 9;
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
  lrn_call(s->o.ctx, s->request_ref, lrn_push_request, &in);
  if (!in.taken)
    rn_request_drop(request);
}

static const char *lrn_server_event_name(rn_server_event_type_t type) {
  switch (type) {
  case RN_SERVER_EVENT_OVERLOAD: return "overload";
  case RN_SERVER_EVENT_DEADLINE: return "deadline";
  case RN_SERVER_EVENT_GOAWAY: return "goaway";
  case RN_SERVER_EVENT_PROTOCOL: return "protocol";
  case RN_SERVER_EVENT_IDLE: return "idle";
  case RN_SERVER_EVENT_STORE: return "store";
  case RN_SERVER_EVENT_BACKLOG: return "backlog";
  case RN_SERVER_EVENT_FRAME_TIMEOUT: return "frame_timeout";
  case RN_SERVER_EVENT_BUDGET: return "budget";
  case RN_SERVER_EVENT_MAX_CONNECTIONS: return "max_connections";
  case RN_SERVER_EVENT_MAX_ELEMENTS: return "max_elements";
  case RN_SERVER_EVENT_DEDUPE_FULL: return "dedupe_full";
  case RN_SERVER_EVENT_WRITE_TIMEOUT: return "write_timeout";
  case RN_SERVER_EVENT_TLS: return "tls";
  case RN_SERVER_EVENT_AUTH: return "auth";
  }
  return "unknown";
}

static int lrn_push_server_event(lua_State *L, void *arg) {
  const rn_server_event_t *ev = (const rn_server_event_t *)arg;
  lua_createtable(L, 0, 6);
  lua_pushstring(L, lrn_server_event_name(ev->type));
  lua_setfield(L, -2, "type");
  if (ev->id != 0) {
    lua_pushnumber(L, (lua_Number)ev->id);
    lua_setfield(L, -2, "id");
  }
  if (ev->error != 0) {
    lua_pushstring(L, rn_err_name(ev->error));
    lua_setfield(L, -2, "error");
  }
  if (ev->detail != NULL) { /* tls, auth: why (never a token) */
    lua_pushstring(L, ev->detail);
    lua_setfield(L, -2, "detail");
  }
  lua_pushinteger(L, (lua_Integer)ev->active);
  lua_setfield(L, -2, "active");
  lua_pushinteger(L, (lua_Integer)ev->queued);
  lua_setfield(L, -2, "queued");
  return 1;
}

static void lrn_server_event(rn_server_t *server,
                             const rn_server_event_t *ev) {
  lrn_server_t *s = (lrn_server_t *)rn_server_data(server);
  lrn_call(s->o.ctx, s->event_ref, lrn_push_server_event, (void *)ev);
}

static void lrn_server_closed(rn_server_t *server) {
  lrn_server_t *s = (lrn_server_t *)rn_server_data(server);
  lrn_object_closed(&s->o, 1);
  lrn_unref(s->o.ctx, &s->request_ref);
  lrn_unref(s->o.ctx, &s->event_ref);
  lrn_server_auth_unref(&s->auth_check);
  free(s);
}

static void lrn_server_close_type(lrn_object_t *o) {
  rn_server_close(((lrn_server_t *)o)->server, lrn_server_closed);
}

/* The state is going: a drain does not get its time. */
static void lrn_server_at_exit(lrn_object_t *o) {
  lrn_server_t *s = (lrn_server_t *)o;
  if (s->draining) {
    s->draining = 0;
    lrn_server_close_type(o);
  }
}

/* ------------------------------------------------------------------------ */
/* Dedupe stores written in Lua                                               */

typedef struct lrn_store_call_s {
  lrn_store_t *st;
  rn_dedupe_op_t *op;
  int kind;
  const char *key;
  size_t key_len;
  uint64_t window;
  const rn_dedupe_answer_t *answer;
  int taken; /* an op userdata owns op */
} lrn_store_call_t;

/* runner(op, method, key, window seconds [, reply, failed]) */
static int lrn_push_store_call(lua_State *L, void *arg) {
  static const char *const methods[] = {NULL, "claim", "finish", "release"};
  lrn_store_call_t *c = (lrn_store_call_t *)arg;
  lrn_dedupe_op_t *u;
  luaL_checkstack(L, 6, NULL);
  u = (lrn_dedupe_op_t *)lua_newuserdata(L, sizeof(*u));
  u->op = c->op;
  u->kind = c->kind;
  luaL_getmetatable(L, LRN_DEDUPE_OP_MT);
  lua_setmetatable(L, -2);
  c->taken = 1;
  lua_pushstring(L, methods[c->kind]);
  lua_pushlstring(L, c->key, c->key_len);
  lua_pushnumber(L, (lua_Number)c->window / 1000);
  if (c->answer == NULL)
    return 4;
  lua_pushlstring(L, c->answer->body, c->answer->len);
  lua_pushboolean(L, c->answer->error != 0);
  return 6;
}

static void lrn_store_dispatch(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                               int kind, const char *key, size_t len,
                               uint64_t window,
                               const rn_dedupe_answer_t *answer) {
  lrn_store_t *st = (lrn_store_t *)store;
  lrn_store_call_t c;
  c.st = st;
  c.op = op;
  c.kind = kind;
  c.key = key;
  c.key_len = len;
  c.window = window;
  c.answer = answer;
  c.taken = 0;
  if (!st->ctx->closing)
    lrn_dispatch(st->ctx, st->runner_ref, lrn_push_store_call, &c);
  /* Never reached Lua (the state is closing, or no memory): the op must
   * still be answered, or the server could never finish closing. */
  if (!c.taken)
    rn_dedupe_op_done(op, UV_ECANCELED, (rn_dedupe_state_t)0, NULL);
}

static void lrn_store_claim(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                            const char *key, size_t len, uint64_t window) {
  lrn_store_dispatch(store, op, 1, key, len, window, NULL);
}

static void lrn_store_finish(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                             const char *key, size_t len, uint64_t window,
                             const rn_dedupe_answer_t *answer) {
  lrn_store_dispatch(store, op, 2, key, len, window, answer);
}

static void lrn_store_release(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                              const char *key, size_t len) {
  lrn_store_dispatch(store, op, 3, key, len, 0, NULL);
}

static void lrn_store_close(rn_dedupe_store_t *store) {
  lrn_store_t *st = (lrn_store_t *)store;
  lrn_unref(st->ctx, &st->runner_ref);
  free(st);
}

/* dedupe_done(op, ok, a, b, c): what the store's method returned (ok
 * false: it failed). claim: a is "new", "busy" or "done" (then b is the
 * reply and c true if it was an error); finish, release: a truthy. A
 * second answer is ignored. */
static int lrn_dedupe_done(lua_State *L) {
  lrn_dedupe_op_t *u =
      (lrn_dedupe_op_t *)luaL_checkudata(L, 1, LRN_DEDUPE_OP_MT);
  rn_dedupe_op_t *op = u->op;
  int ok = lua_toboolean(L, 2);
  if (op == NULL)
    return 0;
  u->op = NULL;
  if (u->kind != 1) {
    rn_dedupe_op_done(op, ok && lua_toboolean(L, 3) ? 0 : UV_EIO,
                      (rn_dedupe_state_t)0, NULL);
    return 0;
  }
  if (ok && lua_type(L, 3) == LUA_TSTRING) {
    const char *state = lua_tostring(L, 3);
    if (strcmp(state, "new") == 0) {
      rn_dedupe_op_done(op, 0, RN_DEDUPE_NEW, NULL);
      return 0;
    }
    if (strcmp(state, "busy") == 0) {
      rn_dedupe_op_done(op, 0, RN_DEDUPE_BUSY, NULL);
      return 0;
    }
    if (strcmp(state, "done") == 0 && lua_type(L, 4) == LUA_TSTRING) {
      rn_dedupe_answer_t a;
      a.body = lua_tolstring(L, 4, &a.len);
      a.error = lua_toboolean(L, 5) ? RN_RNP_ERR_APPLICATION : 0;
      rn_dedupe_op_done(op, 0, RN_DEDUPE_DONE, &a);
      return 0;
    }
  }
  rn_dedupe_op_done(op, UV_EIO, (rn_dedupe_state_t)0, NULL);
  return 0;
}

/* An operation whose task was abandoned: answered as failed, so the
 * server still finishes. */
static int lrn_dedupe_op_gc(lua_State *L) {
  lrn_dedupe_op_t *u = (lrn_dedupe_op_t *)lua_touserdata(L, 1);
  if (u->op != NULL) {
    rn_dedupe_op_t *op = u->op;
    u->op = NULL;
    rn_dedupe_op_done(op, UV_ECANCELED, (rn_dedupe_state_t)0, NULL);
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Functions                                                                  */

#define LRN_SERVER(field) offsetof(rn_server_options_t, field)

/* Every option of rn_server_options_t as Lua spells it (listen, the
 * handler and a Lua dedupe store are the facade's and server_new's). As
 * for the pool: a new option is its field, its default in
 * rn_server_options_init, a row here and its line in docs/api.md. */
static const lrn_option_t lrn_server_options[] = {
    LRN_OPTION("protocol", PROTOCOL, PROTOCOL, LRN_SERVER(codec.protocol)),
    LRN_OPTION("max_concurrent", COUNT, UNSIGNED, LRN_SERVER(max_concurrent)),
    /* waiting past max_concurrent */
    LRN_OPTION("queue", COUNT0, UNSIGNED, LRN_SERVER(queue), .protocol = "rnp"),
    /* OVERLOADED pushback */
    LRN_OPTION("retry_after", SECONDS, MS, LRN_SERVER(retry_after_ms),
               .max = (double)UINT32_MAX / 1000, .protocol = "rnp"),
    LRN_OPTION("idle_timeout", SECONDS, MS, LRN_SERVER(idle_timeout_ms)),
    /* limits for untrusted clients (docs/operations.md, "Running an
     * exposed server"); max_connections 0: 3/4 of the descriptor limit */
    LRN_OPTION("frame_timeout", SECONDS, MS, LRN_SERVER(frame_timeout_ms)),
    LRN_OPTION("max_connections", COUNT0, UNSIGNED, LRN_SERVER(max_connections),
               .max = UINT32_MAX),
    LRN_OPTION("input_budget", COUNT, SIZE, LRN_SERVER(input_budget)),
    LRN_OPTION("output_budget", COUNT, SIZE, LRN_SERVER(output_budget)),
    LRN_OPTION("max_elements", COUNT, SIZE, LRN_SERVER(max_elements),
               .max = 1 << 30, .protocol = "resp"),
    LRN_OPTION("max_pipeline", COUNT, UNSIGNED, LRN_SERVER(max_pipeline)),
    LRN_OPTION("write_timeout", SECONDS, MS, LRN_SERVER(write_timeout_ms)),
    LRN_OPTION("backlog", COUNT, INT, LRN_SERVER(backlog)),
    LRN_OPTION("max_frame", COUNT, MAX_FRAME, LRN_SERVER(codec.max_frame)),
    LRN_OPTION("delimiter", DELIMITER, DELIMITER, LRN_SERVER(codec.delimiter),
               .protocol = "line"),
    LRN_OPTION("length_bytes", LENGTH_BYTES, LENGTH_BYTES,
               LRN_SERVER(codec.length_bytes), .protocol = "length"),
    /* rnp; given as a table: on */
    LRN_OPTION("dedupe", TABLE, BOOL, LRN_SERVER(dedupe.on),
               .flags = LRN_OPT_OR_FALSE),
    LRN_OPTION("dedupe.window", POSITIVE, MS, LRN_SERVER(dedupe.window_ms)),
    LRN_OPTION("dedupe.capacity", COUNT, SIZE, LRN_SERVER(dedupe.capacity),
               .max = 1 << 30),
    /* tls = {...}: every connection TLS; false or left out: plaintext.
     * (auth, rnp, is the facade's and server_tls.c's: tokens and a
     * function are not descriptor rows.) */
    LRN_OPTION("tls", TABLE, NONE, 0, .flags = LRN_OPT_OR_FALSE,
               .rows = lrn_server_tls_options,
               .rows_init = &lrn_server_tls_defaults),
    LRN_OPTIONS_END};

/* server_options() -> the facade's schema of the server options, with the
 * core's defaults. */
static int lrn_server_options_schema(lua_State *L) {
  rn_server_options_t o;
  rn_server_options_init(&o);
  lrn_options_push_schema(L, lrn_server_options, &o);
  return 1;
}

/* The Lua store's `id` (options.dedupe.store.id): RN_RNP_DEDUPE_SIZE bytes
 * naming where its keys live, announced in the server's HELLO; nil: they
 * live no longer than this process. Anything else raises. 1 if read. */
static int lrn_store_read_id(lua_State *L, char *out) {
  int found = 0;
  size_t len = 0;
  const char *id;
  lua_getfield(L, 1, "dedupe");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "store");
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "id");
      if (!lua_isnil(L, -1)) {
        id = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len)
                                            : NULL;
        if (id == NULL || len != RN_RNP_DEDUPE_SIZE)
          luaL_error(L, "resilnet.server: dedupe.store.id must be a string "
                        "of %d bytes (the store's id)",
                     RN_RNP_DEDUPE_SIZE);
        memcpy(out, id, RN_RNP_DEDUPE_SIZE);
        found = 1;
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return found;
}

/* server_new(options, target [, store_runner]) -> handle | nil, err.
 * options: as resilnet.server takes them (lrn_server_options, listen).
 * target is dispatched with (request value, request, peer [, id, deadline,
 * key, idempotent]) for every request; store_runner, when given, is the
 * dedupe store (see lrn_push_store_call). Bad options raise; failing to
 * bind or listen returns nil, err. */
static int lrn_server_new(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  rn_server_options_t o;
  rn_endpoint_t ep;
  lrn_server_t *s;
  lrn_store_t *st = NULL;
  lrn_server_secure_t sec;
  lrn_server_auth_t check;
  char store_id[RN_RNP_DEDUPE_SIZE];
  int has_store_id = 0;
  size_t len;
  int rc;

  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 3))
    luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  rn_server_options_init(&o);
  lrn_options_read(L, 1, "resilnet.server", lrn_server_options, &o);
  if (o.dedupe.on && o.codec.protocol != RN_PROTOCOL_RNP)
    return luaL_error(L, "resilnet.server: option 'dedupe' applies only to "
                         "protocol 'rnp'");
  lua_getfield(L, 1, "listen"); /* 4: keeps the string alive */
  if (lua_type(L, 4) != LUA_TSTRING)
    return luaL_error(L, "resilnet.server: option 'listen' must be a "
                         "string");
  o.listen = lua_tolstring(L, 4, &len);
  if (rn_endpoint_parse(&ep, o.listen, len) != 0)
    return luaL_error(L, "resilnet.server: bad listen address '%s' "
                         "(expected host:port, [v6]:port or unix:/path)",
                      o.listen);
  if (o.dedupe.on && lua_type(L, 3) == LUA_TFUNCTION)
    has_store_id = lrn_store_read_id(L, store_id);
  /* Last of what may raise: it allocates (freed below on every path). */
  lrn_server_secure_read(L, 1, &sec, &o, &check);
  o.on_request = lrn_server_request;
  o.on_event = lrn_server_event;
  s = (lrn_server_t *)lrn_object_new(L, ctx, &lrn_server_type, sizeof(*s));
  s->request_ref = s->event_ref = LUA_NOREF;
  s->tls = o.tls != NULL;
  s->auth = o.auth != NULL;
  s->auth_check = check;
  if (sec.auth.check != NULL)
    sec.auth.data = &s->auth_check;
  if (o.dedupe.on && lua_type(L, 3) == LUA_TFUNCTION) {
    st = (lrn_store_t *)calloc(1, sizeof(*st));
    if (st == NULL) {
      lrn_server_auth_unref(&s->auth_check);
      lrn_server_secure_free(&sec);
      free(s);
      return luaL_error(L, "resilnet.server: out of memory");
    }
    st->ctx = ctx;
    st->base.claim = lrn_store_claim;
    st->base.finish = lrn_store_finish;
    st->base.release = lrn_store_release;
    st->base.close = lrn_store_close;
    if (has_store_id) {
      memcpy(st->id, store_id, RN_RNP_DEDUPE_SIZE);
      st->base.id = st->id;
    }
    lua_pushvalue(L, 3);
    st->runner_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    o.dedupe.store = &st->base;
  }

  lrn_set_ref(L, ctx, &s->request_ref, 2);
  o.data = s;
  rc = rn_server_new(ctx->loop, &o, &s->server);
  lrn_server_secure_free(&sec); /* the core copied what it keeps */
  if (rc != 0) {
    lrn_unref(ctx, &s->request_ref);
    lrn_server_auth_unref(&s->auth_check);
    free(s);
    if (st != NULL) /* not taken by a server that failed */
      lrn_store_close(&st->base);
    lrn_server_secure_raise(L, &o, rc);
    if (rc == UV_EINVAL)
      return luaL_error(L, "resilnet.server: invalid options (%s)",
                        rn_strerror(rc));
    lua_pushnil(L);
    lrn_error_push(L, ctx, rn_err_name(rc), rn_strerror(rc),
                   strlen(rn_strerror(rc)), 0, -1, o.listen);
    return 2;
  }
  lrn_object_open(&s->o);
  return 1;
}

static int lrn_server_address(lua_State *L) {
  lrn_server_t *s = lrn_server_get(L, 1);
  char host[RN_ENDPOINT_ADDRESS_MAX];
  int port = 0, rc;
  if (s == NULL || s->o.closing) {
    lua_pushnil(L);
    lrn_error_push_code(L, lrn_ctx(L), RN_ECLOSED);
    return 2;
  }
  rc = rn_server_address(s->server, host, sizeof(host), &port);
  return lrn_push_address(L, rc, host, port);
}

/* server_close(h, target [, drain_ms]) -> true, or false if already
 * closing. With drain_ms: a graceful close (rn_server_drain: GOAWAY on
 * rnp, in-flight requests finish for up to drain_ms). */
static int lrn_server_close(lua_State *L) {
  lrn_server_t *s = lrn_server_get(L, 1);
  int drain = !lua_isnoneornil(L, 3);
  lua_Number drain_ms = drain ? luaL_checknumber(L, 3) : 0;
  luaL_argcheck(L, drain_ms >= 0 && drain_ms < 1e15, 3, "out of range");
  if (!lrn_object_set_close(L, (lrn_object_t *)s, 2)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  s->o.closing = 1;
  if (drain) {
    s->draining = 1;
    rn_server_drain(s->server, (uint64_t)drain_ms, lrn_server_closed);
  } else {
    lrn_server_close_type(&s->o);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* server_on(h, fn): fn(event table) for every event. */
static int lrn_server_on(lua_State *L) {
  lrn_server_t *s = lrn_server_get(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (s == NULL)
    return 0;
  lrn_set_ref(L, s->o.ctx, &s->event_ref, 2);
  return 0;
}

/* server_reload_tls(h, {tls = {...}}) -> true | nil, err */
static int lrn_server_reload_tls(lua_State *L) {
  lrn_server_t *s = lrn_server_get(L, 1);
  return lrn_server_reload_tls_with(
      L, s != NULL && !s->o.closing ? s->server : NULL, lrn_ctx(L));
}

static void lrn_set_count(lua_State *L, const char *name, uint64_t v) {
  lua_pushnumber(L, (lua_Number)v);
  lua_setfield(L, -2, name);
}

/* server_stats(h) -> table | nil, err */
static int lrn_server_stats(lua_State *L) {
  lrn_server_t *s = lrn_server_get(L, 1);
  rn_server_stats_t st;
  if (s == NULL) {
    lua_pushnil(L);
    lrn_error_push_code(L, lrn_ctx(L), RN_ECLOSED);
    return 2;
  }
  rn_server_stats(s->server, &st);
  lua_createtable(L, 0, 25);
  lrn_set_count(L, "connections", st.connections);
  lrn_set_count(L, "requests", st.requests);
  lrn_set_count(L, "handled", st.handled);
  lrn_set_count(L, "overloaded", st.overloaded);
  lrn_set_count(L, "expired", st.expired);
  lrn_set_count(L, "replayed", st.replayed);
  lrn_set_count(L, "joined", st.joined);
  lrn_set_count(L, "busy", st.busy);
  lrn_set_count(L, "discarded", st.discarded);
  lrn_set_count(L, "protocol_errors", st.protocol_errors);
  lrn_set_count(L, "idle_timeouts", st.idle_timeouts);
  lrn_set_count(L, "frame_timeouts", st.frame_timeouts);
  lrn_set_count(L, "budget_refused", st.budget_refused);
  lrn_set_count(L, "connections_refused", st.connections_refused);
  lrn_set_count(L, "elements_refused", st.elements_refused);
  lrn_set_count(L, "backlogged", st.backlogged);
  lrn_set_count(L, "buffered_in", st.buffered_in);
  lrn_set_count(L, "buffered_out", st.buffered_out);
  lrn_set_count(L, "dedupe_full", st.dedupe_full);
  lrn_set_count(L, "write_timeouts", st.write_timeouts);
  lrn_set_count(L, "tls_errors", st.tls_errors);
  lrn_set_count(L, "auth_refused", st.auth_refused);
  lrn_set_count(L, "open", st.open);
  lrn_set_count(L, "active", st.active);
  lrn_set_count(L, "queued", st.queued);
  return 1;
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
  } else if (codec->protocol == RN_PROTOCOL_RNP) {
    size_t len;
    const char *body;
    if (lua_type(L, 2) != LUA_TSTRING) {
      static const char why[] = "the reply must be a string";
      lrn_request_release(L);
      (void)rn_request_fail(req, RN_RNP_ERR_APPLICATION, why,
                            sizeof(why) - 1, 0);
      return lrn_push_failure(L, why);
    }
    /* the payload alone: the server frames it with the request's id */
    body = lua_tolstring(L, 2, &len);
    lrn_request_release(L);
    rc = rn_request_reply(req, body, len);
    if (rc != 0)
      return lrn_push_failure(L, rn_strerror(rc));
    lua_pushboolean(L, 1);
    return 1;
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
 * (an error object's code and message, or the text); rnp an APPLICATION
 * ERROR with the text (tostring of anything else); line and length drop
 * the connection. Releases req. */
static int lrn_request_fail(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  rn_request_t *req = lrn_request_take(L);
  const rn_codec_t *codec = rn_server_codec(rn_request_server(req));
  lua_settop(L, 2);
  if (codec->protocol == RN_PROTOCOL_RNP) {
    const char *msg;
    size_t len;
    if (lua_type(L, 2) != LUA_TSTRING && lua_type(L, 2) != LUA_TNUMBER &&
        !luaL_callmeta(L, 2, "__tostring"))
      lua_pushstring(L, luaL_typename(L, 2));
    msg = lua_tolstring(L, -1, &len);
    if (msg == NULL) {
      msg = "the handler failed";
      len = strlen(msg);
    }
    lrn_request_release(L);
    (void)rn_request_fail(req, RN_RNP_ERR_APPLICATION, msg, len, 0);
    return 0;
  }
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
    {"server_options", lrn_server_options_schema},
    {"server_new", lrn_server_new},
    {"server_address", lrn_server_address},
    {"server_close", lrn_server_close},
    {"server_on", lrn_server_on},
    {"server_stats", lrn_server_stats},
    {"server_reload_tls", lrn_server_reload_tls},
    {"request_reply", lrn_request_reply},
    {"request_fail", lrn_request_fail},
    {"dedupe_done", lrn_dedupe_done},
    {NULL, NULL}};

void lrn_server_open(lua_State *L) {
  if (luaL_newmetatable(L, LRN_REQUEST_MT)) {
    lua_pushcfunction(L, lrn_request_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, LRN_DEDUPE_OP_MT)) {
    lua_pushcfunction(L, lrn_dedupe_op_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lrn_object_register(L, &lrn_server_type, lrn_server_funcs);
}

/* resilnet.proxy handles: the fault-injection proxy (core/src/harness/proxy*.c).
 * The facade names and checks the options; this file maps them onto
 * rn_fault_options_t and turns core events into tables. */
#include <stdlib.h>
#include <string.h>

#include "lrn.h"

typedef struct lrn_proxy_s {
  lrn_object_t o;
  rn_proxy_t *proxy;
  int event_ref; /* dispatched with one event table per event */
} lrn_proxy_t;

static void lrn_proxy_close_type(lrn_object_t *o);

static const lrn_type_t lrn_proxy_type = {"resilnet.proxy",
                                          lrn_proxy_close_type, NULL};

#define lrn_proxy_get(L, idx)                                               \
  ((lrn_proxy_t *)lrn_object_get((L), (idx), &lrn_proxy_type))

/* A live proxy, or raises: the facade never calls after close. */
static lrn_proxy_t *lrn_proxy_live(lua_State *L) {
  lrn_proxy_t *x = lrn_proxy_get(L, 1);
  if (x == NULL || x->o.closing)
    luaL_error(L, "resilnet.proxy: the proxy is closed");
  return x;
}

/* ------------------------------------------------------------------------ */
/* Events                                                                     */

static int lrn_push_event(lua_State *L, void *arg) {
  const rn_proxy_event_t *ev = (const rn_proxy_event_t *)arg;
  lua_createtable(L, 0, 7);
  lua_pushstring(L, ev->type);
  lua_setfield(L, -2, "type");
  lua_pushnumber(L, (lua_Number)ev->conn);
  lua_setfield(L, -2, "conn");
  if (ev->fault != 0) {
    lua_pushnumber(L, (lua_Number)ev->fault);
    lua_setfield(L, -2, "fault");
  }
  if (ev->direction != 0) {
    lua_pushstring(L, ev->direction == RN_PROXY_UP ? "up" : "down");
    lua_setfield(L, -2, "direction");
  }
  lua_pushnumber(L, (lua_Number)ev->bytes);
  lua_setfield(L, -2, "bytes");
  if (ev->status < 0) {
    lua_pushstring(L, rn_err_name(ev->status));
    lua_setfield(L, -2, "error");
  }
  lua_pushnumber(L, (lua_Number)ev->time / 1000.0);
  lua_setfield(L, -2, "time");
  return 1;
}

static void lrn_proxy_event(rn_proxy_t *proxy, const rn_proxy_event_t *ev) {
  lrn_proxy_t *x = (lrn_proxy_t *)rn_proxy_data(proxy);
  lrn_call(x->o.ctx, x->event_ref, lrn_push_event, (void *)ev);
}

static void lrn_proxy_closed(rn_proxy_t *proxy) {
  lrn_proxy_t *x = (lrn_proxy_t *)rn_proxy_data(proxy);
  lrn_object_closed(&x->o, 1);
  lrn_unref(x->o.ctx, &x->event_ref);
  free(x);
}

static void lrn_proxy_close_type(lrn_object_t *o) {
  rn_proxy_close(((lrn_proxy_t *)o)->proxy, lrn_proxy_closed);
}

/* ------------------------------------------------------------------------ */
/* Functions                                                                  */

static const char *lrn_field_string(lua_State *L, int t, const char *name) {
  const char *s;
  lua_getfield(L, t, name);
  s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the table keeps the string alive */
  return s;
}

static lua_Number lrn_field_number(lua_State *L, int t, const char *name,
                                   lua_Number def) {
  lua_Number n = def;
  lua_getfield(L, t, name);
  if (lua_type(L, -1) == LUA_TNUMBER) n = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return n;
}

static uint64_t lrn_field_u64(lua_State *L, int t, const char *name,
                              uint64_t def) {
  lua_Number n = lrn_field_number(L, t, name, -1);
  if (n < 0) return def;
  if (n >= 1.8e19) return RN_FAULT_UNSET;
  return (uint64_t)n;
}

/* proxy_new({listen, upstream, seed, backlog, protocol, length_bytes,
 * delimiter, max_frame}, event_fn) -> h | nil, err. Without protocol the
 * proxy moves bytes only. A bad address raises; a failed bind returns
 * nil, err. */
static int lrn_proxy_new(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  rn_proxy_options_t o;
  lrn_proxy_t *x;
  int rc, has_codec;

  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  rn_proxy_options_init(&o);
  o.listen = lrn_field_string(L, 1, "listen");
  o.upstream = lrn_field_string(L, 1, "upstream");
  o.seed = lrn_field_u64(L, 1, "seed", 0);
  o.backlog = (int)lrn_field_number(L, 1, "backlog", 511);
  o.on_event = lrn_proxy_event;
  lua_getfield(L, 1, "protocol");
  has_codec = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (has_codec)
    lrn_options_read(L, 1, "resilnet.proxy", lrn_codec_options, &o.codec);

  x = (lrn_proxy_t *)lrn_object_new(L, ctx, &lrn_proxy_type, sizeof(*x));
  x->event_ref = LUA_NOREF;
  o.data = x;
  rc = rn_proxy_new(ctx->loop, &o, &x->proxy);
  if (rc != 0) {
    free(x);
    if (rc == UV_EINVAL)
      return luaL_error(L, "resilnet.proxy: bad listen or upstream address "
                           "(expected ip:port, [v6]:port or localhost:port) "
                           "or bad codec options");
    lua_pushnil(L);
    lrn_error_push(L, ctx, rn_err_name(rc), rn_strerror(rc),
                   strlen(rn_strerror(rc)), 0, -1, o.listen);
    return 2;
  }
  if (lua_type(L, 2) == LUA_TFUNCTION)
    lrn_set_ref(L, ctx, &x->event_ref, 2);
  lrn_object_open(&x->o);
  return 1;
}

static const char *const lrn_fault_kinds[] = {
    "", "latency", "bandwidth", "slice", "close", "half_close", "blackhole",
    "stall", "corrupt", "truncate", "duplicate", "refuse", "stop_accept",
    "slow_accept", "accept_close", NULL};

/* proxy_fault(h, {kind, direction, toxicity, ms, jitter, normal,
 * bytes_per_second, slice_bytes, slice_delay, after_bytes, after_ms, rst,
 * rate}) -> id. Values are in the core's units (ms, bytes); the facade
 * converts and checks them, so anything refused here is a bug: raises. */
static int lrn_proxy_fault(lua_State *L) {
  lrn_proxy_t *x = lrn_proxy_live(L);
  rn_fault_options_t o;
  const char *kind, *dir;
  uint64_t id;
  int i, rc;

  luaL_checktype(L, 2, LUA_TTABLE);
  kind = lrn_field_string(L, 2, "kind");
  for (i = 1; kind != NULL && lrn_fault_kinds[i] != NULL; i++)
    if (strcmp(kind, lrn_fault_kinds[i]) == 0) break;
  if (kind == NULL || lrn_fault_kinds[i] == NULL)
    return luaL_error(L, "resilnet.proxy: unknown fault kind '%s'",
                      kind ? kind : "?");
  rn_fault_options_init(&o, (rn_fault_kind_t)i);
  dir = lrn_field_string(L, 2, "direction");
  if (dir != NULL)
    o.direction = strcmp(dir, "up") == 0     ? RN_PROXY_UP
                  : strcmp(dir, "down") == 0 ? RN_PROXY_DOWN
                                             : RN_PROXY_BOTH;
  o.toxicity = lrn_field_number(L, 2, "toxicity", 1);
  o.ms = lrn_field_u64(L, 2, "ms", 0);
  o.jitter = lrn_field_u64(L, 2, "jitter", 0);
  o.normal = lrn_field_number(L, 2, "normal", 0) != 0;
  o.bytes_per_second = lrn_field_u64(L, 2, "bytes_per_second", 0);
  o.slice_bytes = (size_t)lrn_field_u64(L, 2, "slice_bytes", 0);
  o.slice_delay = lrn_field_u64(L, 2, "slice_delay", 0);
  o.after_bytes = lrn_field_u64(L, 2, "after_bytes", RN_FAULT_UNSET);
  o.after_ms = lrn_field_u64(L, 2, "after_ms", RN_FAULT_UNSET);
  o.rst = lrn_field_number(L, 2, "rst", 0) != 0;
  o.rate = lrn_field_number(L, 2, "rate", 1);
  rc = rn_proxy_fault_add(x->proxy, &o, &id);
  if (rc != 0)
    return luaL_error(L, "resilnet.proxy: cannot add the fault: %s",
                      rn_strerror(rc));
  lua_pushnumber(L, (lua_Number)id);
  return 1;
}

static const char *const lrn_rule_kinds[] = {
    "", "fail_request", "fail_first", "drop_reply", NULL};
static const char *const lrn_rule_actions[] = {"", "rst", "close", "drop",
                                               NULL};

static int lrn_name_index(const char *const *names, const char *name) {
  int i;
  for (i = 1; name != NULL && names[i] != NULL; i++)
    if (strcmp(name, names[i]) == 0) return i;
  return 0;
}

/* proxy_rule(h, {kind, n, action}) -> id. As for faults, the facade has
 * checked everything: a refusal here is a bug and raises. */
static int lrn_proxy_rule(lua_State *L) {
  lrn_proxy_t *x = lrn_proxy_live(L);
  rn_rule_options_t o;
  const char *kind, *action;
  uint64_t id;
  int k, a, rc;

  luaL_checktype(L, 2, LUA_TTABLE);
  kind = lrn_field_string(L, 2, "kind");
  k = lrn_name_index(lrn_rule_kinds, kind);
  if (k == 0)
    return luaL_error(L, "resilnet.proxy: unknown rule kind '%s'",
                      kind ? kind : "?");
  rn_rule_options_init(&o, (rn_rule_kind_t)k);
  o.n = lrn_field_u64(L, 2, "n", 1);
  action = lrn_field_string(L, 2, "action");
  if (action != NULL) {
    a = lrn_name_index(lrn_rule_actions, action);
    if (a == 0)
      return luaL_error(L, "resilnet.proxy: unknown rule action '%s'",
                        action);
    o.action = (rn_rule_action_t)a;
  }
  rc = rn_proxy_rule_add(x->proxy, &o, &id);
  if (rc != 0)
    return luaL_error(L, "resilnet.proxy: cannot add the rule: %s",
                      rn_strerror(rc));
  lua_pushnumber(L, (lua_Number)id);
  return 1;
}

static int lrn_proxy_remove(lua_State *L) {
  lrn_proxy_t *x = lrn_proxy_live(L);
  lua_Number id = luaL_checknumber(L, 2);
  lua_pushboolean(L, id > 0 && rn_proxy_fault_remove(x->proxy,
                                                     (uint64_t)id) == 0);
  return 1;
}

static int lrn_proxy_clear(lua_State *L) {
  rn_proxy_fault_clear(lrn_proxy_live(L)->proxy);
  return 0;
}

static int lrn_proxy_reset_all(lua_State *L) {
  rn_proxy_reset_all(lrn_proxy_live(L)->proxy);
  return 0;
}

static int lrn_proxy_connections(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)rn_proxy_connections(lrn_proxy_live(L)->proxy));
  return 1;
}

static int lrn_proxy_address(lua_State *L) {
  lrn_proxy_t *x = lrn_proxy_live(L);
  char host[RN_ENDPOINT_ADDRESS_MAX];
  int port = 0, rc = rn_proxy_address(x->proxy, host, sizeof(host), &port);
  return lrn_push_address(L, rc, host, port);
}

/* proxy_close(h, target) -> true, or false if already closing. */
static int lrn_proxy_close(lua_State *L) {
  lrn_proxy_t *x = lrn_proxy_get(L, 1);
  if (!lrn_object_set_close(L, (lrn_object_t *)x, 2)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  x->o.closing = 1;
  lrn_proxy_close_type(&x->o);
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg lrn_proxy_funcs[] = {
    {"proxy_new", lrn_proxy_new},
    {"proxy_fault", lrn_proxy_fault},
    {"proxy_rule", lrn_proxy_rule},
    {"proxy_remove", lrn_proxy_remove},
    {"proxy_clear", lrn_proxy_clear},
    {"proxy_reset_all", lrn_proxy_reset_all},
    {"proxy_connections", lrn_proxy_connections},
    {"proxy_address", lrn_proxy_address},
    {"proxy_close", lrn_proxy_close},
    {NULL, NULL}};

void lrn_proxy_open(lua_State *L) {
  lrn_object_register(L, &lrn_proxy_type, lrn_proxy_funcs);
}

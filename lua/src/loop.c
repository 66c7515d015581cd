/* Whose loop resilnet runs on: its own (the default), or the loop of luv
 * loaded in the same lua_State (luv programs, Neovim's vim.loop). And what
 * a host that cannot share a libuv loop (cqueues, copas, a select loop)
 * needs to poll resilnet's own: its backend descriptor and timeout.
 *
 * On luv's loop resilnet never runs the loop itself (uv_run is not
 * re-entrant and the host owns it), every call into Lua goes through luv's
 * protected-call hook (so Neovim sees a "fast" callback, and errors are
 * reported as luv reports its own), and at lua_close resilnet closes its
 * handles before luv's loop finalizer walks the loop: luv would close any
 * handle it finds there as if it were its own. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr */
#endif
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "lrn.h"

/* The leading fields of luv's per-state context (luv.h, luv 1.30 and
 * later), kept by luv as a userdata in the registry under "luv_context".
 * resilnet does not link luv: it reads these three fields and checks the
 * userdata is at least this large. */
typedef struct lrn_luv_ctx_s {
  uv_loop_t *loop;
  lua_State *L;
  lrn_host_pcall_fn cb_pcall;
} lrn_luv_ctx_t;

static const char *const lrn_loop_kinds[] = {"own", "luv", NULL};

/* A function's address as data, for dladdr. */
typedef void (*lrn_any_fn)(void);
static void *lrn_fn_addr(lrn_any_fn fn) {
  union {
    lrn_any_fn fn;
    void *p;
  } u;
  u.fn = fn;
  return u.p;
}

static const char *lrn_uv_version_of(const char *file) {
  void *h = dlopen(file, RTLD_LAZY | RTLD_NOLOAD);
  const char *(*fn)(void) = NULL;
  const char *v = "unknown version";
  if (h != NULL) {
    *(void **)&fn = dlsym(h, "uv_version_string");
    if (fn != NULL)
      v = fn();
    dlclose(h);
  }
  return v;
}

/* Raises unless loop was initialised by the libuv resilnet calls: a host
 * that carries its own copy (linked statically, symbols hidden) has loop
 * structures and internal state the other copy must never touch. The
 * copy that ran uv_loop_init is the one whose internal work callback sits
 * in the loop's wq_async handle; dladdr names the object it lives in. */
static void lrn_check_same_libuv(lua_State *L, uv_loop_t *loop) {
  Dl_info ours, theirs;
  void *cb = lrn_fn_addr((lrn_any_fn)loop->wq_async.async_cb);
  memset(&ours, 0, sizeof(ours));
  memset(&theirs, 0, sizeof(theirs));
  if (dladdr(lrn_fn_addr((lrn_any_fn)uv_version), &ours) == 0)
    return; /* cannot tell where our own libuv is: nothing to compare */
  if (dladdr(cb, &theirs) != 0 && theirs.dli_fbase == ours.dli_fbase)
    return;
  luaL_error(L,
             "resilnet: luv's loop belongs to another copy of libuv (%s, "
             "%s) than the one resilnet uses (%s, %s); two copies cannot "
             "share a loop. Build the host against the system libuv, or "
             "load resilnet where luv is not loaded",
             theirs.dli_fname != NULL ? theirs.dli_fname : "not a library",
             theirs.dli_fname != NULL ? lrn_uv_version_of(theirs.dli_fname)
                                      : "unknown version",
             ours.dli_fname != NULL ? ours.dli_fname : "?",
             uv_version_string());
}

/* luv's context in L's registry, or NULL when luv is not loaded (or has no
 * loop yet). Raises when it is there but not something we can use. */
static lrn_luv_ctx_t *lrn_luv_find(lua_State *L) {
  lrn_luv_ctx_t *luv;
  lua_getfield(L, LUA_REGISTRYINDEX, "luv_context");
  if (lua_type(L, -1) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    return NULL;
  }
  if (lrn_rawlen(L, -1) < sizeof(lrn_luv_ctx_t))
    luaL_error(L, "resilnet: luv's context is smaller than luv 1.30's; "
                  "this luv is too old to share its loop");
  luv = (lrn_luv_ctx_t *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (luv->loop == NULL)
    return NULL;
  return luv;
}

/* Raises its argument as a string: what a host's protected-call hook
 * reports. Neovim's hook expects a string; luv's prints one. */
static int lrn_host_raise(lua_State *L) {
  lua_settop(L, 1);
  if (lua_type(L, 1) == LUA_TSTRING)
    return lua_error(L);
  if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
    return lua_error(L);
  lua_pushfstring(L, "resilnet: a task or callback raised a %s value",
                  luaL_typename(L, 1));
  return lua_error(L);
}

/* Runs f(L) with lightuserdata ud as argument 1, from inside the host's
 * hook: the trampoline is made once, so calling it never allocates. */
typedef struct lrn_trampoline_s {
  lua_CFunction f;
  void *ud;
} lrn_trampoline_t;

static int lrn_host_trampoline(lua_State *L) {
  lrn_trampoline_t *t = (lrn_trampoline_t *)lua_touserdata(L, 1);
  lua_pushlightuserdata(L, t->ud);
  lua_replace(L, 1);
  return t->f(L);
}

int lrn_host_call(lrn_ctx_t *ctx, lua_State *L, lua_CFunction f, void *ud) {
  lrn_trampoline_t t;
  t.f = f;
  t.ud = ud;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->host_call_ref);
  lua_pushlightuserdata(L, &t);
  return ctx->host_pcall(L, 1, 0, 0) < 0 ? LUA_ERRRUN : LUA_OK;
}

void lrn_host_report(lrn_ctx_t *ctx, lua_State *L, int idx) {
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->host_raise_ref);
  if (idx > top)
    lua_pushnil(L);
  else
    lua_pushvalue(L, idx);
  ctx->host_pcall(L, 1, 0, 0);
  lua_settop(L, top);
}

/* Closes everything resilnet has on its loop and frees the loop: at
 * lua_close, and for a host's loop before the host's own finalizer runs.
 * Idempotent. */
void lrn_loop_close(lrn_ctx_t *ctx) {
  uv_loop_t *uv;
  uint64_t deadline;
  int rc;
  if (ctx->loop == NULL)
    return;
  ctx->closing = 1;
  lrn_timer_close_all(ctx);
  lrn_object_close_all(ctx);
  uv = rn_loop_uv(ctx->loop);
  if (ctx->host == LRN_LOOP_OWN) {
    uv_run(uv, UV_RUN_DEFAULT);
    /* EBUSY means something never finished closing (a request nobody
     * released): leaking the loop then beats freeing memory in use. */
    if (rn_loop_free(ctx->loop) == 0)
      ctx->loop = NULL;
    return;
  }
  /* The host's loop: turn it without blocking only until our closes are
   * done (a socket's close callback comes one turn later), bounded. */
  deadline = uv_hrtime() + 2000000000u;
  while ((rc = rn_loop_free(ctx->loop)) == UV_EBUSY &&
         uv_hrtime() < deadline)
    uv_run(uv, UV_RUN_NOWAIT);
  if (rc == 0) {
    ctx->loop = NULL;
    uv_run(uv, UV_RUN_NOWAIT); /* the close callbacks free rn_loop_t */
  }
}

/* The anchor of a host loop: a userdata made after the host's loop
 * userdata, so lua_close finalizes it first (finalizers run in reverse
 * order of creation). */
static int lrn_anchor_gc(lua_State *L) {
  lrn_ctx_t **slot = (lrn_ctx_t **)lua_touserdata(L, 1);
  if (*slot != NULL)
    lrn_loop_close(*slot);
  *slot = NULL;
  return 0;
}

static void lrn_anchor_drop(lua_State *L, lrn_ctx_t *ctx) {
  if (ctx->anchor_ref == LUA_NOREF)
    return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->anchor_ref);
  *(lrn_ctx_t **)lua_touserdata(L, -1) = NULL;
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, ctx->anchor_ref);
  ctx->anchor_ref = LUA_NOREF;
}

static void lrn_anchor_make(lua_State *L, lrn_ctx_t *ctx) {
  lrn_ctx_t **slot = (lrn_ctx_t **)lua_newuserdata(L, sizeof(*slot));
  *slot = ctx;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lrn_anchor_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  ctx->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Puts ctx on the loop of kind. Raises (ctx unchanged) when that loop is
 * not available or something still lives on the current one. */
static void lrn_loop_switch(lua_State *L, lrn_ctx_t *ctx, int kind) {
  lrn_luv_ctx_t *luv = NULL;
  rn_loop_t *loop;
  int rc;
  if (kind == LRN_LOOP_LUV) {
    luv = lrn_luv_find(L);
    if (luv == NULL)
      luaL_error(L, "resilnet: luv is not loaded in this Lua state "
                    "(require \"luv\" first)");
    if (luv->cb_pcall == NULL)
      luaL_error(L, "resilnet: luv has no callback hook set (luv older "
                    "than 1.30?)");
    lrn_check_same_libuv(L, luv->loop);
  }
  /* Made before anything changes, so a memory error leaves ctx as it was. */
  if (ctx->host_call_ref == LUA_NOREF) {
    lua_pushcfunction(L, lrn_host_trampoline);
    ctx->host_call_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushcfunction(L, lrn_host_raise);
    ctx->host_raise_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  if (kind == LRN_LOOP_LUV) {
    lrn_anchor_drop(L, ctx);
    lrn_anchor_make(L, ctx);
  }
  rc = rn_loop_new(luv != NULL ? luv->loop : NULL, &loop);
  if (rc != 0)
    luaL_error(L, "resilnet: cannot create the loop: %s", rn_strerror(rc));
  if (ctx->loop != NULL && (rc = rn_loop_free(ctx->loop)) != 0) {
    rn_loop_free(loop);
    luaL_error(L, "resilnet: cannot leave the current loop: %s",
               rn_strerror(rc));
  }
  ctx->loop = loop;
  ctx->host = kind;
  ctx->host_pcall = luv != NULL ? luv->cb_pcall : NULL;
  if (kind == LRN_LOOP_OWN)
    lrn_anchor_drop(L, ctx);
}

void lrn_loop_open(lua_State *L, lrn_ctx_t *ctx) {
  ctx->host_call_ref = LUA_NOREF;
  ctx->host_raise_ref = LUA_NOREF;
  ctx->anchor_ref = LUA_NOREF;
  lrn_loop_switch(L, ctx,
                  lrn_luv_find(L) != NULL ? LRN_LOOP_LUV : LRN_LOOP_OWN);
}

/* use_loop(kind): "own" or "luv". Only while nothing lives on the current
 * loop: no pool, server, proxy, process, timer or task. */
static int lrn_use_loop(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  int kind = luaL_checkoption(L, 1, NULL, lrn_loop_kinds);
  if (kind == ctx->host)
    return 0;
  if (ctx->running || ctx->dispatching)
    return luaL_error(L, "resilnet.use_loop: cannot switch loops from "
                         "inside a task or callback");
  if (ctx->objects.next != &ctx->objects || ctx->timers.next != &ctx->timers)
    return luaL_error(L, "resilnet.use_loop: pools, servers, proxies, "
                         "processes or tasks live on the current loop; "
                         "choose the loop before creating any");
  lrn_loop_switch(L, ctx, kind);
  return 0;
}

/* loop() -> "own" or "luv". */
static int lrn_loop_kind(lua_State *L) {
  lua_pushstring(L, lrn_loop_kinds[lrn_ctx(L)->host]);
  return 1;
}

static uv_loop_t *lrn_own_uv(lua_State *L, const char *name) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  if (ctx->host != LRN_LOOP_OWN)
    luaL_error(L, "resilnet.%s: the loop is %s's, which its host runs", name,
               lrn_loop_kinds[ctx->host]);
  return rn_loop_uv(ctx->loop);
}

/* pollfd() -> the descriptor that becomes readable when the loop has
 * something to do (uv_backend_fd: the epoll descriptor on Linux). */
static int lrn_pollfd(lua_State *L) {
  lua_pushinteger(L, uv_backend_fd(lrn_own_uv(L, "pollfd")));
  return 1;
}

/* Whether libuv holds watchers not yet handed to epoll (its private
 * watcher queue, a list head that points at itself when empty; the field
 * changed type in 1.45). */
static int lrn_watchers_pending(const uv_loop_t *uv) {
#if UV_VERSION_HEX >= 0x012d00
  return uv->watcher_queue.next != &uv->watcher_queue;
#else
  return uv->watcher_queue[0] != (const void *)&uv->watcher_queue;
#endif
}

/* timeout() -> seconds until the loop needs a step even if its descriptor
 * stays quiet; 0 when it has work now; nil when only the descriptor
 * matters. */
static int lrn_timeout(lua_State *L) {
  uv_loop_t *uv = lrn_own_uv(L, "timeout");
  int ms;
  /* A watcher started since the last poll (a connect begun in a callback)
   * is only handed to epoll by the next turn: until then the descriptor
   * cannot wake anybody for it. libuv keeps such watchers in this list. */
  if (lrn_watchers_pending(uv)) {
    lua_pushnumber(L, 0);
    return 1;
  }
  if (!uv_loop_alive(uv)) {
    /* No referenced work (idle pooled sockets are unreferenced): no timer
     * to wait for, but a socket may still have news. */
    lua_pushnil(L);
    return 1;
  }
  ms = uv_backend_timeout(uv);
  if (ms < 0)
    lua_pushnil(L);
  else
    lua_pushnumber(L, (lua_Number)ms / 1000);
  return 1;
}

static const luaL_Reg lrn_loop_funcs[] = {{"use_loop", lrn_use_loop},
                                          {"loop", lrn_loop_kind},
                                          {"pollfd", lrn_pollfd},
                                          {"timeout", lrn_timeout},
                                          {NULL, NULL}};

void lrn_loop_funcs_open(lua_State *L) {
  lua_pushvalue(L, -2);
  lrn_setfuncs(L, lrn_loop_funcs, 1);
}

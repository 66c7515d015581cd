/* A host program for spec/luv_loop_spec.lua: embeds Lua, makes a libuv
 * loop and publishes it the way luv does (a "luv_context" userdata in the
 * registry whose first field is the loop, then the state and luv's
 * protected-call hook), then runs the Lua file argv[1]. Linked with
 * libuv_a.a it carries its own copy of libuv, whose loop resilnet must
 * refuse; linked with -luv it shares the system's, which resilnet uses. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

typedef struct {
  uv_loop_t *loop;
  lua_State *L;
  int (*cb_pcall)(lua_State *L, int nargs, int nresults, int flags);
} host_ctx_t;

static int host_pcall(lua_State *L, int nargs, int nresults, int flags) {
  (void)flags;
  if (lua_pcall(L, nargs, nresults, 0) != 0) {
    fprintf(stderr, "host error: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  return nresults;
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  lua_State *L;
  host_ctx_t *ctx;
  int rc;
  if (argc < 2)
    return 2;
  L = luaL_newstate();
  luaL_openlibs(L);
  uv_loop_init(&loop);
  /* As large as luv 1.44's context. */
  ctx = (host_ctx_t *)lua_newuserdata(L, 64);
  memset(ctx, 0, 64);
  ctx->loop = &loop;
  ctx->L = L;
  ctx->cb_pcall = host_pcall;
  lua_setfield(L, LUA_REGISTRYINDEX, "luv_context");
  rc = luaL_dofile(L, argv[1]);
  if (rc != 0)
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
  lua_close(L);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "the loop still has handles after lua_close\n");
    rc = 1;
  }
  return rc;
}

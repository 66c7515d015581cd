/* The version shims too long to be inline (compat.h says what each does). */
#include "compat.h"

#if !(LUA_VERSION_NUM >= 503 || defined(LUA_LJDIR) || defined(LUAJIT_VERSION))

#if LUA_VERSION_NUM == 502
/* Whether the C function on top of L's stack is the base library's pcall
 * or xpcall, which 5.2 made yieldable. */
static int lrn_yields_across(lua_State *L) {
  lua_CFunction f = lua_tocfunction(L, -1);
  int yields = 0;
  const char *const names[] = {"pcall", "xpcall"};
  int i;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  for (i = 0; i < 2 && !yields; i++) {
    lua_getfield(L, -1, names[i]);
    yields = f != NULL && lua_tocfunction(L, -1) == f;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return yields;
}
#else
#define lrn_yields_across(L) 0
#endif

int lrn_can_yield(lua_State *L) {
  lua_Debug ar;
  int level;
  if (lua_pushthread(L)) { /* the main thread never yields */
    lua_pop(L, 1);
    return 0;
  }
  lua_pop(L, 1);
  /* Level 0 is the C function asking; the coroutine's body is the last. */
  for (level = 1; lua_getstack(L, level, &ar); level++) {
    int boundary;
    if (!lua_getinfo(L, "Sf", &ar))
      return 0;
    boundary = ar.what[0] == 'C' && !lrn_yields_across(L);
    lua_pop(L, 1);
    if (boundary)
      return 0;
  }
  return 1;
}

#else
typedef int lrn_compat_c_is_empty_here; /* ISO C: no empty unit */
#endif

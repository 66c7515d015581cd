/* Shims over the differences between Lua 5.1/LuaJIT and 5.2-5.4 that the
 * binding relies on. Everything is lrn_-prefixed so it never collides with
 * the partial 5.2 API that LuaJIT 2.1 ships. */
#ifndef LRN_COMPAT_H
#define LRN_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#ifndef LUA_OK
#define LUA_OK 0
#endif

#if LUA_VERSION_NUM >= 502
#define lrn_rawlen(L, i) lua_rawlen((L), (i))
#define lrn_absindex(L, i) lua_absindex((L), (i))
#else
#define lrn_rawlen(L, i) lua_objlen((L), (i))
#define lrn_absindex(L, i)                                                   \
  (((i) > 0 || (i) <= LUA_REGISTRYINDEX) ? (i) : lua_gettop(L) + (i) + 1)
#endif

/* lua_rawgeti returning the type of what it pushed, as from 5.3. */
static inline int lrn_rawgeti(lua_State *L, int idx, int i) {
#if LUA_VERSION_NUM >= 503
  return lua_rawgeti(L, idx, i);
#else
  lua_rawgeti(L, idx, i);
  return lua_type(L, -1);
#endif
}

/* luaL_setfuncs for every version: registers l into the table on top of the
 * stack below nup upvalues, each function sharing those upvalues. */
static inline void lrn_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  int i;
  luaL_checkstack(L, nup + 1, "too many upvalues");
  for (; l->name != NULL; l++) {
    for (i = 0; i < nup; i++)
      lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}

/* Runs f(ud) protected on L; returns LUA_OK or an error status with the
 * error value on top. 5.1 and LuaJIT have lua_cpcall; from 5.2 a light C
 * function is pushed without allocating, so this cannot fail unprotected. */
static inline int lrn_cpcall(lua_State *L, lua_CFunction f, void *ud) {
#if LUA_VERSION_NUM >= 502
  lua_pushcfunction(L, f);
  lua_pushlightuserdata(L, ud);
  return lua_pcall(L, 1, 0, 0);
#else
  return lua_cpcall(L, f, ud);
#endif
}

/* lua_resume for every version; *nres gets the values yielded or
 * returned (or 1, the error, on failure). */
static inline int lrn_resume(lua_State *co, lua_State *from, int nargs,
                             int *nres) {
#if LUA_VERSION_NUM >= 504
  return lua_resume(co, from, nargs, nres);
#elif LUA_VERSION_NUM >= 502
  int status = lua_resume(co, from, nargs);
  *nres = lua_gettop(co);
  return status;
#else
  int status;
  (void)from;
  status = lua_resume(co, nargs);
  *nres = lua_gettop(co);
  return status;
#endif
}

/* Whether the running coroutine L can yield from a C function it called,
 * asked before anything is started on its behalf: a wait whose yield then
 * failed would leave its call out with the coroutine as its target, and
 * the reply would resume whatever the coroutine waited for next.
 * 5.3, 5.4 and LuaJIT (whose luaconf.h defines LUA_LJDIR) say so. 5.1 and
 * 5.2 cannot: a C function between the coroutine's body and here (pcall on
 * 5.1, table.sort, string.gsub, tostring calling __tostring, ...) stops
 * the yield, so any one there counts, except 5.2's pcall and xpcall, which
 * yield (compat.c walks the stack). On 5.1 a metamethod or a `for`
 * iterator written in Lua is a boundary this cannot see (api.md says so). */
#if LUA_VERSION_NUM >= 503 || defined(LUA_LJDIR) || defined(LUAJIT_VERSION)
static inline int lrn_can_yield(lua_State *L) { return lua_isyieldable(L); }
#else
int lrn_can_yield(lua_State *L);
#endif

#endif /* LRN_COMPAT_H */

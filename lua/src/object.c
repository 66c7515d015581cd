/* What every bound type shares (after luv's lhandle.c): the userdata that
 * points at a malloc'd object, the object's pointer back at the userdata,
 * its place in the context's list of open objects, its close callback,
 * the one way a Lua ref is released, and closing whatever is left when
 * the state closes.
 *
 * An object's memory outlives its userdata (the core closes
 * asynchronously), so the userdata holds a pointer and the object a
 * pointer to that pointer: whichever goes first clears the other's. */
#include <stdlib.h>

#include "lrn.h"

void lrn_unref(lrn_ctx_t *ctx, int *ref) {
  /* At lua_close the registry is going with the state: nothing to give
   * back, and touching it from a __gc would be unsafe. */
  if (*ref != LUA_NOREF && !ctx->closing)
    luaL_unref(ctx->L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
}

void lrn_set_ref(lua_State *L, lrn_ctx_t *ctx, int *ref, int idx) {
  idx = lrn_absindex(L, idx);
  lrn_unref(ctx, ref);
  lua_pushvalue(L, idx);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void lrn_call(lrn_ctx_t *ctx, int ref, lrn_push_fn push, void *arg) {
  if (ref != LUA_NOREF)
    lrn_dispatch(ctx, ref, push, arg);
}

void *lrn_object_new(lua_State *L, lrn_ctx_t *ctx, const lrn_type_t *type,
                     size_t size) {
  lrn_object_t **ud, *o;
  ud = (lrn_object_t **)lua_newuserdata(L, sizeof(*ud));
  *ud = NULL;
  lua_pushlightuserdata(L, (void *)type);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_setmetatable(L, -2);
  o = (lrn_object_t *)calloc(1, size);
  if (o == NULL) {
    luaL_error(L, "%s: out of memory", type->name);
    return NULL;
  }
  o->ctx = ctx;
  o->type = type;
  o->ud = ud;
  o->close_ref = LUA_NOREF;
  lrn_link_init(&o->link);
  return o;
}

void lrn_object_open(lrn_object_t *o) {
  *o->ud = o;
  lrn_link_add(&o->ctx->objects, &o->link);
}

void lrn_object_closed(lrn_object_t *o, int notify) {
  lrn_link_remove(&o->link);
  if (o->ud != NULL)
    *o->ud = NULL;
  o->ud = NULL;
  if (notify)
    lrn_call(o->ctx, o->close_ref, NULL, NULL);
  lrn_unref(o->ctx, &o->close_ref);
}

int lrn_object_set_close(lua_State *L, lrn_object_t *o, int idx) {
  int type = lua_type(L, idx);
  luaL_argcheck(L, type == LUA_TNONE || type == LUA_TNIL ||
                       type == LUA_TFUNCTION || type == LUA_TTHREAD,
                idx, "expected a function or a thread");
  if (o == NULL || o->closing)
    return 0;
  if (type == LUA_TFUNCTION || type == LUA_TTHREAD)
    lrn_set_ref(L, o->ctx, &o->close_ref, idx);
  return 1;
}

/* __gc: the userdata is gone; the object closes unless it already does. */
static int lrn_object_gc(lua_State *L) {
  lrn_object_t **ud = (lrn_object_t **)lua_touserdata(L, 1);
  lrn_object_t *o = *ud;
  if (o == NULL)
    return 0;
  *ud = NULL;
  o->ud = NULL;
  o->quiet = 1;
  if (!o->closing) {
    o->closing = 1;
    o->type->close(o);
  }
  return 0;
}

void lrn_object_close_all(lrn_ctx_t *ctx) {
  lrn_link_t *l, *next;
  for (l = ctx->objects.next; l != &ctx->objects; l = next) {
    lrn_object_t *o = LRN_CONTAINER_OF(l, lrn_object_t, link);
    next = l->next;
    o->quiet = 1;
    if (o->type->at_exit != NULL)
      o->type->at_exit(o);
    if (!o->closing) {
      o->closing = 1;
      o->type->close(o);
    }
  }
}

void lrn_object_register(lua_State *L, const lrn_type_t *type,
                         const luaL_Reg *funcs) {
  if (luaL_newmetatable(L, type->name)) {
    lua_pushcfunction(L, lrn_object_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushstring(L, type->name);
    lua_setfield(L, -2, "__name");
  }
  /* Also found by the type's address: lrn_object_new needs no name. */
  lua_pushlightuserdata(L, (void *)type);
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
  /* upvalues: the context, the metatable, the held targets (lrn_hold) */
  lua_pushvalue(L, -3);
  lua_insert(L, -2);
  lrn_push_held(L, (lrn_ctx_t *)lua_touserdata(L, -2));
  lrn_setfuncs(L, funcs, 3);
}

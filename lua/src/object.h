/* Bound objects (object.c): what pool, server, proxy and process share.
 * Included by lrn.h. */
#ifndef LRN_OBJECT_H
#define LRN_OBJECT_H

#include "lrn.h"

/* Releases a registry ref (LUA_NOREF: nothing) and sets it to LUA_NOREF.
 * The one place a ref is given back; a no-op while the state closes. */
void lrn_unref(lrn_ctx_t *ctx, int *ref);
/* *ref takes the value at idx of L, releasing what it held. */
void lrn_set_ref(lua_State *L, lrn_ctx_t *ctx, int *ref, int idx);
/* Dispatches the target at ref (nothing if LUA_NOREF) through
 * lrn_dispatch, the one protected path into Lua. */
void lrn_call(lrn_ctx_t *ctx, int ref, lrn_push_fn push, void *arg);

typedef struct lrn_object_s lrn_object_t;

/* One per bound type, static. */
typedef struct lrn_type_s {
  const char *name; /* the metatable's name, and the prefix of messages */
  /* Starts closing the core object (o->closing is already set): from the
   * userdata's __gc, at lua_close, or from the type's own close function.
   * The core's close callback ends in lrn_object_closed, then free(o). */
  void (*close)(lrn_object_t *o);
  /* Optional, at lua_close before close: what must not wait for a state
   * that is going (a process's waiters, a server's drain). */
  void (*at_exit)(lrn_object_t *o);
} lrn_type_t;

/* The head of every bound object: the first member of its struct. */
struct lrn_object_s {
  lrn_ctx_t *ctx;
  const lrn_type_t *type;
  lrn_object_t **ud; /* the userdata's slot; NULL once collected */
  lrn_link_t link;   /* in ctx->objects from lrn_object_open to closed */
  int closing;       /* type->close was called */
  int quiet;         /* collected, or the state closing: nobody observes
                        it any more */
  int close_ref;     /* target dispatched once it has closed */
};

/* Pushes a new userdata of type and returns a zeroed object of size bytes
 * (its head filled in) that it will point to once lrn_object_open says the
 * core object exists. Raises when out of memory. Until then the object is
 * the caller's to free(). */
void *lrn_object_new(lua_State *L, lrn_ctx_t *ctx, const lrn_type_t *type,
                     size_t size);
/* The core object exists: the userdata points at o, and o is closed with
 * the others at lua_close. */
void lrn_object_open(lrn_object_t *o);
/* From the core's close callback: unlinks o, clears its userdata and
 * (notify) dispatches the close target, then releases it. The caller
 * releases its own refs and frees o. */
void lrn_object_closed(lrn_object_t *o, int notify);
/* For a type's close function: checks that the value at idx is nothing, a
 * function or a thread (raises otherwise); returns 0 if o is NULL or
 * already closing, else 1 with the value, if any, as o's close target. */
int lrn_object_set_close(lua_State *L, lrn_object_t *o, int idx);
/* The object of the userdata at idx (NULL once closed), or raises. Only
 * from functions registered by lrn_object_register for type: their
 * upvalue 2 is the metatable, and comparing it is what luaL_checkudata
 * does, without a registry lookup by name (pool:call's hot path). */
static inline void *lrn_object_get(lua_State *L, int idx,
                                   const lrn_type_t *type) {
  void *ud = lua_touserdata(L, idx);
  if (ud != NULL && lua_getmetatable(L, idx)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(2));
    lua_pop(L, 1);
    if (same)
      return *(lrn_object_t **)ud;
  }
  return *(lrn_object_t **)luaL_checkudata(L, idx, type->name);
}
/* The userdata's slot at idx if it is an object of the calling
 * function's type (upvalue 2, as in lrn_object_get), else NULL, never
 * raising: for fast paths that hand anything else to the facade. Leaves
 * the metatable it compared above idx, the caller's to drop. */
static inline lrn_object_t **lrn_object_slot(lua_State *L, int idx) {
  void *ud = lua_touserdata(L, idx);
  return ud != NULL && lua_getmetatable(L, idx) &&
                 lua_rawequal(L, -1, lua_upvalueindex(2))
             ? (lrn_object_t **)ud
             : NULL;
}
/* lrn_object_get for a hot path that leaves the stack to its caller:
 * the same check, minus the pop of the metatable it compared (a
 * lua_settop a call): what it leaves above idx is the caller's to drop,
 * or to ignore (pool:call yields it away). */
static inline void *lrn_object_peek(lua_State *L, int idx,
                                    const lrn_type_t *type) {
  lrn_object_t **slot = lrn_object_slot(L, idx);
  if (slot != NULL)
    return *slot;
  return *(lrn_object_t **)luaL_checkudata(L, idx, type->name);
}
/* Starts closing every object left (the context's __gc). */
void lrn_object_close_all(lrn_ctx_t *ctx);
/* Creates the metatable of type (with __gc) and registers funcs into the
 * module table on top of the stack (the context just below it), each with
 * the upvalues (context, metatable, held targets). */
void lrn_object_register(lua_State *L, const lrn_type_t *type,
                         const luaL_Reg *funcs);

#endif /* LRN_OBJECT_H */

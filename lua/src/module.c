/* luaopen_resilnet_core: the per-lua_State context, the one protected path
 * from C into Lua, and running the loop.
 *
 * The context is created by the first luaopen in a state and reused by
 * every later one (busted re-requires modules for each spec file), so a
 * state has exactly one loop however often the module is loaded. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "lrn.h"

/* Its address is the registry key of the context; never written. */
static const char lrn_ctx_key = 'c';

/* The context as this file allocates it: what only the dispatch path
 * needs stays here. ctx comes first, so a context pointer is also a
 * pointer to its lrn_state_t. */
typedef struct lrn_state_s {
  lrn_ctx_t ctx;
  int handler_ref; /* message handler for plain callbacks, or LUA_NOREF */
  int finish_ref;  /* finish_task(co, ok, ...): a task ended or raised */
  int held_ref;    /* the table of held targets (lrn_hold) */
  int *free_slots; /* released slots of it, reused first */
  int nfree;
  int nslots;      /* slots handed out so far: 1..nslots */
  int cap;         /* room in free_slots, always >= nslots */
  int tasks_ref;   /* the facade's table whose keys are its tasks */
  lua_State *current; /* the task resumed from C right now, or NULL */
  /* Dispatches deferred to the end of a read (lrn_defer_held): entries
   * back to back in q, dispatched from q_head up to q_tail in order. */
  char *q;
  size_t q_head, q_tail, q_cap;
  int reads;       /* reads whose deliveries are under way (nested) */
} lrn_state_t;

#define lrn_state(ctx) ((lrn_state_t *)(ctx))

/* ------------------------------------------------------------------------ */
/* The protected path into Lua                                               */

typedef struct lrn_call_s {
  lrn_ctx_t *ctx;
  int target_ref; /* a registry ref, or with held set a slot to release */
  int held;
  lrn_push_fn push;
  void *arg;
} lrn_call_t;

/* Held targets: a target per call in flight, so luaL_ref's free list
 * (three table accesses to take a ref, three to give it back) is replaced
 * by one kept in C, the table seeing one store each way. The free list
 * always has room for every slot, so releasing never allocates. A held
 * target's id is its slot times two, plus one for a function: the
 * dispatch knows how it will call it before it looks. */
#define LRN_HELD_SLOT(id) ((id) >> 1)
#define LRN_HELD_FUNCTION(id) ((id) & 1)

/* A free slot of the held table. Raises when out of memory. */
static int lrn_hold_slot(lua_State *L, lrn_state_t *st) {
  if (st->nfree > 0)
    return st->free_slots[--st->nfree];
  if (st->nslots == st->cap) {
    /* Doubling; ids (2 * slot + 1) stay well inside an int. */
    int cap = st->cap > 0 ? 2 * st->cap : 64;
    int *grown = st->cap < INT_MAX / 8
                     ? (int *)realloc(st->free_slots,
                                      (size_t)cap * sizeof(int))
                     : NULL;
    if (grown == NULL)
      return luaL_error(L, "resilnet: out of memory");
    st->free_slots = grown;
    st->cap = cap;
  }
  return ++st->nslots;
}

int lrn_hold(lua_State *L, lrn_ctx_t *ctx, int idx) {
  int slot;
  idx = lrn_absindex(L, idx);
  slot = lrn_hold_slot(L, lrn_state(ctx));
  lua_pushvalue(L, idx);
  lua_rawseti(L, lua_upvalueindex(3), slot);
  return 2 * slot + (lua_type(L, idx) == LUA_TFUNCTION);
}

int lrn_hold_top(lua_State *L, lrn_ctx_t *ctx) {
  int function = lua_type(L, -1) == LUA_TFUNCTION;
  int slot = lrn_hold_slot(L, lrn_state(ctx));
  lua_rawseti(L, lua_upvalueindex(3), slot);
  return 2 * slot + function;
}

void lrn_push_held(lua_State *L, lrn_ctx_t *ctx) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, lrn_state(ctx)->held_ref);
}

/* Forgets slot's target in the held table at idx (absolute); L: any
 * thread of the state. */
static void lrn_unhold_in(lua_State *L, lrn_state_t *st, int idx, int slot) {
  lua_pushnil(L);
  lua_rawseti(L, idx, slot);
  st->free_slots[st->nfree++] = slot;
}

static void lrn_unhold(lua_State *L, lrn_state_t *st, int slot) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->held_ref);
  lrn_unhold_in(L, st, lua_gettop(L), slot);
  lua_pop(L, 1);
}

void lrn_release(lrn_ctx_t *ctx, int id) {
  if (!ctx->closing)
    lrn_unhold(ctx->L, lrn_state(ctx), LRN_HELD_SLOT(id));
}

/* Replaces the stack of L with the held target of c, released. */
static void lrn_take_held(lua_State *L, lrn_call_t *c) {
  lrn_state_t *st = lrn_state(c->ctx);
  int base = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->held_ref);
  lua_rawgeti(L, base + 1, c->target_ref);
  lrn_unhold_in(L, st, base + 1, c->target_ref);
  c->held = 0;
  /* One lua_settop (each costs about thirty instructions on 5.4, and this
   * runs for every reply) where clearing first and lua_replace took two. */
#if LUA_VERSION_NUM >= 502
  lua_copy(L, -1, 1);
#else
  lua_replace(L, 1);
#endif
  lua_settop(L, 1);
}

int lrn_in_task(lua_State *L, lrn_ctx_t *ctx) {
  lrn_state_t *st = lrn_state(ctx);
  int task;
  /* Most calls come from the task the binding just resumed. */
  if (L == st->current)
    return 1;
  if (st->tasks_ref == LUA_NOREF)
    return 0;
  if (lua_pushthread(L)) { /* the main thread is never a task */
    lua_pop(L, 1);
    return 0;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->tasks_ref);
  lua_insert(L, -2);
  lua_rawget(L, -2);
  task = !lua_isnil(L, -1);
  lua_pop(L, 2);
  return task;
}

/* Resumes the suspended task co with the n values on top of L. The usual
 * outcome, co waiting again, needs nothing from Lua; a task that ended or
 * raised goes to the facade's finish_task(co, ok, ...), as it would after
 * coroutine.resume. */
static int lrn_resume_task(lua_State *L, lrn_state_t *st, lua_State *co,
                           int t, int n) {
  lua_State *previous;
  int status, nres;
  if (!lua_checkstack(co, n))
    return luaL_error(L, "resilnet: too many arguments to resume");
  lua_xmove(L, co, n);
  /* Tasks only ever reach the binding as targets: co is one. */
  previous = st->current;
  st->current = co;
  status = lrn_resume(co, L, n, &nres);
  st->current = previous;
  if (status == LUA_YIELD) {
    if (nres > 0) /* pool:call's yield passes nothing */
      lua_pop(co, nres);
    return 0;
  }
  if (status != LUA_OK)
    nres = 1; /* the error value */
  if (!lua_checkstack(L, nres + 3)) {
    lua_pop(co, nres);
    return luaL_error(L, "resilnet: too many results to resume");
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->finish_ref);
  lua_pushvalue(L, t);
  lua_pushboolean(L, status == LUA_OK);
  lua_xmove(co, L, nres);
  lua_call(L, nres + 2, 0);
  return 0;
}

/* The target at index t, the top of L, is dispatched by kind with what
 * push pushes: a suspended task is resumed here and a plain callback
 * called under the facade's message handler, without a Lua frame of ours
 * in between (they are every call's reply); anything else (a task not
 * started yet, one that is not suspended) goes through the facade's
 * dispatcher. Errors of tasks and callbacks are recorded, not raised. */
static void lrn_dispatch_at(lua_State *L, lrn_ctx_t *ctx, int t,
                            lrn_push_fn push, void *arg) {
  lrn_state_t *st = lrn_state(ctx);
  int n = 0;
  switch (lua_type(L, t)) {
  case LUA_TTHREAD: {
    lua_State *co = lua_tothread(L, t);
    if (lua_status(co) != LUA_YIELD || st->finish_ref == LUA_NOREF)
      break;
    if (push != NULL)
      n = push(L, arg);
    lrn_resume_task(L, st, co, t, n);
    return;
  }
  case LUA_TFUNCTION:
    if (st->handler_ref == LUA_NOREF)
      break;
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->handler_ref);
    lua_insert(L, t);
    if (push != NULL)
      n = push(L, arg);
    if (lua_pcall(L, n, 0, t) != LUA_OK)
      lrn_record_error(ctx, L, -1);
    return;
  default:
    break;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->dispatcher_ref);
  if (lua_type(L, -1) != LUA_TFUNCTION)
    luaL_error(L, "resilnet: no dispatcher is set "
                  "(load the module with require \"resilnet\")");
  lua_insert(L, t);
  if (push != NULL)
    n = push(L, arg);
  /* Protected by the enclosing cpcall; the dispatcher catches the errors of
   * tasks and callbacks itself, so this only unwinds on its own failure. */
  lua_call(L, n + 1, 0);
}

static int lrn_dispatch_protected(lua_State *L) {
  lrn_call_t *c = (lrn_call_t *)lua_touserdata(L, 1);
  if (c->held) {
    /* Released first: nothing below can fail before it, and the target
     * may well make the next call. */
    lrn_take_held(L, c);
  } else {
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->target_ref); /* 1 */
  }
  lrn_dispatch_at(L, c->ctx, 1, c->push, c->arg);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* One protected call per read                                                */

/* A deferred dispatch in the queue, its push's argument right after it. */
typedef struct lrn_deferred_s {
  lrn_push_fn push;
  size_t size; /* of the entry, this header included, rounded up */
  int id;      /* the held target */
} lrn_deferred_t;

#define LRN_Q_ALIGN(n) (((n) + 15) & ~(size_t)15)
/* The queue's room kept between reads; a read of larger replies gives the
 * rest back once they are dispatched. */
#define LRN_Q_KEEP 65536

void *lrn_defer_held(lrn_ctx_t *ctx, int id, lrn_push_fn push, size_t size) {
  lrn_state_t *st = lrn_state(ctx);
  lrn_deferred_t *e;
  size_t need = LRN_Q_ALIGN(sizeof(lrn_deferred_t) + size);
  if (st->reads == 0 || ctx->closing)
    return NULL;
  if (need > st->q_cap - st->q_tail) {
    size_t cap = st->q_cap > 0 ? st->q_cap : 4096;
    char *grown;
    while (cap - st->q_tail < need) {
      if (cap > ((size_t)-1) / 2)
        return NULL;
      cap *= 2;
    }
    if ((grown = (char *)realloc(st->q, cap)) == NULL)
      return NULL; /* dispatched at once instead */
    st->q = grown;
    st->q_cap = cap;
  }
  e = (lrn_deferred_t *)(st->q + st->q_tail);
  e->push = push;
  e->size = need;
  e->id = id;
  st->q_tail += need;
  return e + 1;
}

/* Dispatches the deferred entries in order, in one protected call for as
 * many as go without an error escaping (a task's or a callback's own
 * errors are recorded and do not). Each entry leaves the queue, its
 * target released, before anything that may fail: re-entered (a target's
 * call makes another read), the inner run goes on where this one is. */
static int lrn_flush_protected(lua_State *L) {
  lrn_state_t *st = (lrn_state_t *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->held_ref); /* 1 */
  while (st->q_head < st->q_tail) {
    lrn_deferred_t *e = (lrn_deferred_t *)(st->q + st->q_head);
    int slot = LRN_HELD_SLOT(e->id);
    st->q_head += e->size;
    lua_rawgeti(L, 1, slot); /* 2 */
    lrn_unhold_in(L, st, 1, slot);
    /* The push reads e before any Lua runs, so before the queue can
     * grow (move) or be emptied under it. */
    lrn_dispatch_at(L, &st->ctx, 2, e->push, e + 1);
    lua_settop(L, 1);
  }
  return 0;
}

/* Once the queue is empty: back to its start, its room within
 * LRN_Q_KEEP. */
static void lrn_queue_drained(lrn_state_t *st) {
  if (st->q_head < st->q_tail)
    return;
  st->q_head = st->q_tail = 0;
  if (st->q_cap > LRN_Q_KEEP) {
    free(st->q);
    st->q = NULL;
    st->q_cap = 0;
  }
}

static void lrn_flush(lrn_ctx_t *ctx) {
  lrn_state_t *st = lrn_state(ctx);
  lua_State *L = ctx->L;
  int top = lua_gettop(L);
  ctx->dispatching++;
  while (st->q_head < st->q_tail && !ctx->closing) {
    size_t head = st->q_head;
    int rc = ctx->host_pcall != NULL
                 ? lrn_host_call(ctx, L, lrn_flush_protected, st)
                 : lrn_cpcall(L, lrn_flush_protected, st);
    if (rc == LUA_OK)
      continue;
    if (ctx->host_pcall == NULL) /* the host's hook reported it */
      lrn_record_error(ctx, L, -1);
    lua_settop(L, top);
    if (st->q_head == head && head < st->q_tail) {
      /* Failed before taking the entry: released, not dispatched. */
      lrn_deferred_t *e = (lrn_deferred_t *)(st->q + head);
      st->q_head += e->size;
      lrn_unhold(L, st, LRN_HELD_SLOT(e->id));
    }
  }
  ctx->dispatching--;
  lua_settop(L, top);
  lrn_queue_drained(st); /* (at lua_close what is left goes with the state) */
}

/* What is deferred goes first: whatever is dispatched now came later. */
#define lrn_flush_first(ctx)                                                 \
  do {                                                                       \
    if (lrn_state(ctx)->q_tail > lrn_state(ctx)->q_head)                     \
      lrn_flush(ctx);                                                        \
  } while (0)

static void lrn_dispatch_call(lrn_call_t *c) {
  lua_State *L = c->ctx->L;
  int top;
  int rc;
  lrn_flush_first(c->ctx);
  top = lua_gettop(L);
  c->ctx->dispatching++;
  if (c->ctx->host_pcall != NULL) {
    /* A host's loop: through its hook, which reports what fails. */
    rc = lrn_host_call(c->ctx, L, lrn_dispatch_protected, c);
    if (rc != LUA_OK && c->held)
      lrn_unhold(L, lrn_state(c->ctx), c->target_ref);
  } else if (lrn_cpcall(L, lrn_dispatch_protected, c) != LUA_OK) {
    if (c->held) /* failed before the target was even fetched */
      lrn_unhold(L, lrn_state(c->ctx), c->target_ref);
    lrn_record_error(c->ctx, L, -1);
  }
  c->ctx->dispatching--;
  if (lua_gettop(L) != top) /* only after a failure, usually */
    lua_settop(L, top);
}

void lrn_dispatch(lrn_ctx_t *ctx, int target_ref, lrn_push_fn push,
                  void *arg) {
  lrn_call_t c;
  if (ctx->closing)
    return;
  c.ctx = ctx;
  c.target_ref = target_ref;
  c.held = 0;
  c.push = push;
  c.arg = arg;
  lrn_dispatch_call(&c);
}

#if LUA_VERSION_NUM >= 502
/* A held function, called by lua_call: its errors unwind to the pcall of
 * lrn_dispatch_function, whose message handler adds the traceback. */
static int lrn_call_protected(lua_State *L) {
  lrn_call_t *c = (lrn_call_t *)lua_touserdata(L, 1);
  int n = 0;
  lrn_take_held(L, c);
  if (c->push != NULL)
    n = c->push(L, c->arg);
  lua_call(L, n, 0);
  return 0;
}

/* One pcall, with the facade's handler, around both the binding's pushes
 * and the callback: what lrn_dispatch_protected does for a function, less
 * a pcall. (5.1 and LuaJIT would allocate the C closure to pcall outside
 * any protection; they go the long way.) */
static void lrn_dispatch_function(lrn_call_t *c) {
  lua_State *L = c->ctx->L;
  int top;
  lrn_flush_first(c->ctx);
  top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lrn_state(c->ctx)->handler_ref);
  lua_pushcfunction(L, lrn_call_protected);
  lua_pushlightuserdata(L, c);
  c->ctx->dispatching++;
  if (lua_pcall(L, 1, 0, top + 1) != LUA_OK) {
    if (c->held) /* failed before the target was even fetched */
      lrn_unhold(L, lrn_state(c->ctx), c->target_ref);
    lrn_record_error(c->ctx, L, -1);
  }
  c->ctx->dispatching--;
  lua_settop(L, top);
}
#endif

void lrn_dispatch_held(lrn_ctx_t *ctx, int id, lrn_push_fn push,
                       void *arg) {
  lrn_call_t c;
  if (ctx->closing)
    return;
  c.ctx = ctx;
  c.target_ref = LRN_HELD_SLOT(id);
  c.held = 1;
  c.push = push;
  c.arg = arg;
#if LUA_VERSION_NUM >= 502
  if (LRN_HELD_FUNCTION(id) && lrn_state(ctx)->handler_ref != LUA_NOREF &&
      ctx->host_pcall == NULL) {
    lrn_dispatch_function(&c);
    return;
  }
#endif
  lrn_dispatch_call(&c);
}

void lrn_deliveries(lrn_ctx_t *ctx, int begin) {
  lrn_state_t *st = lrn_state(ctx);
  lrn_deferred_t *e;
  if (begin) {
    st->reads++;
    return;
  }
  if (--st->reads > 0 || st->q_head == st->q_tail)
    return;
  e = (lrn_deferred_t *)(st->q + st->q_head);
  if (st->q_head + e->size == st->q_tail) {
    /* The read brought one (one call in flight): dispatched as one that
     * did not wait, read in place (the queue moves only when it grows,
     * after the push has read it), without the queue's protected call
     * on top of the dispatch's own. */
    st->q_head = st->q_tail;
    lrn_dispatch_held(ctx, e->id, e->push, e + 1);
    lrn_queue_drained(st);
  }
  lrn_flush_first(ctx);
}

typedef struct lrn_query_s {
  int ref;
  lrn_push_fn push;
  void *arg;
  const char *const *answers;
  int answer;
} lrn_query_t;

static int lrn_query_protected(lua_State *L) {
  lrn_query_t *q = (lrn_query_t *)lua_touserdata(L, 1);
  const char *s;
  int i, n;
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, q->ref);
  n = q->push(L, q->arg);
  lua_call(L, n, 1);
  if (lua_isnil(L, -1))
    return 0;
  s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  for (i = 1; s != NULL && q->answers[i] != NULL; i++) {
    if (strcmp(s, q->answers[i]) == 0) {
      q->answer = i;
      return 0;
    }
  }
  return luaL_error(L, "resilnet: unexpected answer '%s' from a policy "
                       "function", s != NULL ? s : luaL_typename(L, -1));
}

int lrn_query(lrn_ctx_t *ctx, int ref, lrn_push_fn push, void *arg,
              const char *const *answers) {
  lua_State *L = ctx->L;
  lrn_query_t q;
  int top = lua_gettop(L);
  if (ctx->closing)
    return 0;
  q.ref = ref;
  q.push = push;
  q.arg = arg;
  q.answers = answers;
  q.answer = 0;
  if (ctx->host_pcall != NULL) {
    /* A host's loop: its hook reports a failure. */
    if (lrn_host_call(ctx, L, lrn_query_protected, &q) != LUA_OK)
      q.answer = 0;
  } else if (lrn_cpcall(L, lrn_query_protected, &q) != LUA_OK) {
    lrn_record_error(ctx, L, -1);
    q.answer = 0;
  }
  lua_settop(L, top);
  return q.answer;
}

void lrn_record_error(lrn_ctx_t *ctx, lua_State *L, int idx) {
  int top = lua_gettop(L);
  idx = lrn_absindex(L, idx);
  if (ctx->host_pcall != NULL) {
    /* Nobody calls resilnet.run() on a host's loop to re-raise it. */
    lrn_host_report(ctx, L, idx);
    return;
  }
  /* errbox was created with room for both slots: storing into them never
   * allocates, so recording cannot itself fail with a memory error. */
  if (lua_checkstack(L, 3)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->errbox_ref);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    if (lua_isnil(L, -1) && lua_isnil(L, -2)) {
      if (idx > top || lua_isnil(L, idx)) {
        lua_pushboolean(L, 1);
        lua_rawseti(L, -4, 2);
      } else {
        lua_pushvalue(L, idx);
        lua_rawseti(L, -4, 1);
      }
    }
  }
  lua_settop(L, top);
  if (ctx->loop != NULL)
    uv_stop(rn_loop_uv(ctx->loop));
}

/* ------------------------------------------------------------------------ */
/* Module functions                                                           */

static void lrn_replace_ref(lua_State *L, int idx, int *ref) {
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
  if (!lua_isnoneornil(L, idx)) {
    lua_pushvalue(L, idx);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

/* set_dispatcher(dispatch[, handler, finish_task, tasks]): dispatch(target,
 * ...) takes every target; with handler and finish_task, suspended tasks
 * are resumed and plain callbacks called (under handler) from C, and
 * finish_task(co, ok, ...) hears of a task resumed so that ended or
 * raised. tasks: the table whose keys are the tasks (lrn_in_task). */
static int lrn_set_dispatcher(lua_State *L) {
  lrn_state_t *st = lrn_state(lrn_ctx(L));
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 2))
    luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 3))
    luaL_checktype(L, 3, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 4))
    luaL_checktype(L, 4, LUA_TTABLE);
  lrn_replace_ref(L, 1, &st->ctx.dispatcher_ref);
  lrn_replace_ref(L, 2, &st->handler_ref);
  lrn_replace_ref(L, 3, &st->finish_ref);
  lrn_replace_ref(L, 4, &st->tasks_ref);
  return 0;
}

static void lrn_bound_fired(rn_timer_t *timer) { (void)timer; }

/* run(mode[, ms]) -> alive. mode: "default", "once" or "nowait"; ms bounds
 * how long the turn may block. Never re-enters uv_run: a task or callback
 * that tries gets an error instead, and so does a host's loop. */
static int lrn_run(lua_State *L) {
  static const char *const modes[] = {"default", "once", "nowait", NULL};
  static const uv_run_mode uv_modes[] = {UV_RUN_DEFAULT, UV_RUN_ONCE,
                                         UV_RUN_NOWAIT};
  lrn_ctx_t *ctx = lrn_ctx(L);
  int mode = luaL_checkoption(L, 1, "default", modes);
  int alive;
  lua_Number timeout = luaL_optnumber(L, 2, -1);
  rn_timer_t bound;
  if (ctx->host != LRN_LOOP_OWN)
    return luaL_error(L, "resilnet: the loop is luv's, which its host runs "
                         "(wait from a task: resilnet.spawn)");
  if (ctx->running || ctx->dispatching)
    return luaL_error(L, "resilnet: the loop is already running "
                         "(called from inside a task or callback?)");
  /* A bound on how long the turn may block: a timer that does nothing
   * but end the poll. */
  if (timeout >= 0) {
    luaL_argcheck(L, timeout < 1e15, 2, "milliseconds out of range");
    rn_timer_init(ctx->loop, &bound, lrn_bound_fired);
    uv_update_time(rn_loop_uv(ctx->loop));
    if (rn_timer_start(&bound, (uint64_t)timeout) != 0)
      return luaL_error(L, "resilnet: out of memory");
  }
  ctx->running++;
  alive = uv_run(rn_loop_uv(ctx->loop), uv_modes[mode]);
  ctx->running--;
  if (timeout >= 0)
    rn_timer_stop(&bound);
  lua_pushboolean(L, alive != 0);
  return 1;
}

static int lrn_stop(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  if (ctx->host == LRN_LOOP_OWN) /* never the host's: it runs it */
    uv_stop(rn_loop_uv(ctx->loop));
  return 0;
}

/* running() -> whether the loop runs, or a callback was entered from C:
 * either way, waiting here would re-enter the core. */
static int lrn_running(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lua_pushboolean(L, ctx->running > 0 || ctx->dispatching > 0);
  return 1;
}

/* fail(err): records err if it is the first error, and stops the loop. */
static int lrn_fail(lua_State *L) {
  lrn_record_error(lrn_ctx(L), L, 1);
  return 0;
}

/* take_error() -> the recorded error or nothing; clears it. */
static int lrn_take_error(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->errbox_ref);
  lua_rawgeti(L, -1, 1);
  lua_rawgeti(L, -2, 2);
  lua_pushnil(L);
  lua_rawseti(L, -4, 1);
  lua_pushnil(L);
  lua_rawseti(L, -4, 2);
  if (!lua_isnil(L, -2)) {
    lua_pop(L, 1);
    return 1;
  }
  if (lua_toboolean(L, -1)) {
    lua_pushliteral(L, "resilnet: a task or callback raised nil");
    return 1;
  }
  return 0;
}

/* can_yield() -> whether the coroutine calling it could wait (yield) here:
 * coroutine.isyieldable for 5.1 and 5.2, which lack it. */
static int lrn_can_yield_fn(lua_State *L) {
  lua_pushboolean(L, lrn_can_yield(L));
  return 1;
}

/* now() -> monotonic seconds (uv_hrtime, not the cached loop time: a
 * caller measuring work inside one callback must see it advance). */
static int lrn_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

/* ------------------------------------------------------------------------ */
/* The context                                                                */

static int lrn_ctx_gc(lua_State *L) {
  lrn_ctx_t *ctx = (lrn_ctx_t *)lua_touserdata(L, 1);
  lrn_loop_close(ctx);
  rn_buf_free(&ctx->buf);
  free(lrn_state(ctx)->free_slots);
  lrn_state(ctx)->free_slots = NULL;
  free(lrn_state(ctx)->q);
  lrn_state(ctx)->q = NULL;
  lrn_state(ctx)->q_head = lrn_state(ctx)->q_tail = lrn_state(ctx)->q_cap = 0;
  return 0;
}

/* Pushes the context userdata, creating it on the first call. */
static lrn_ctx_t *lrn_ctx_push(lua_State *L) {
  lrn_ctx_t *ctx;
  lua_pushlightuserdata(L, (void *)&lrn_ctx_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (lua_type(L, -1) == LUA_TUSERDATA)
    return (lrn_ctx_t *)lua_touserdata(L, -1);
  lua_pop(L, 1);

  ctx = (lrn_ctx_t *)lua_newuserdata(L, sizeof(lrn_state_t));
  memset(ctx, 0, sizeof(lrn_state_t));
  lrn_state(ctx)->handler_ref = LUA_NOREF;
  lrn_state(ctx)->finish_ref = LUA_NOREF;
  lrn_state(ctx)->held_ref = LUA_NOREF;
  lrn_state(ctx)->tasks_ref = LUA_NOREF;
  ctx->thread_ref = LUA_NOREF;
  ctx->dispatcher_ref = LUA_NOREF;
  ctx->errbox_ref = LUA_NOREF;
  ctx->errmt_ref = LUA_NOREF;
  rn_buf_init(&ctx->buf);
  lrn_link_init(&ctx->objects);
  lrn_link_init(&ctx->timers);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lrn_ctx_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);

  /* The state given to luaopen may be a coroutine; callbacks need a thread
   * of their own that lives as long as the context. */
  ctx->L = lua_newthread(L);
  ctx->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_createtable(L, 2, 0);
  ctx->errbox_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_createtable(L, 64, 0);
  lrn_state(ctx)->held_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  lrn_loop_open(L, ctx);
  lua_pushlightuserdata(L, (void *)&lrn_ctx_key);
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return ctx;
}

static const luaL_Reg lrn_module_funcs[] = {
    {"set_dispatcher", lrn_set_dispatcher},
    {"run", lrn_run},
    {"stop", lrn_stop},
    {"running", lrn_running},
    {"fail", lrn_fail},
    {"take_error", lrn_take_error},
    {"now", lrn_now},
    {"can_yield", lrn_can_yield_fn},
    {NULL, NULL}};

#ifndef LRN_EXPORT
#define LRN_EXPORT __attribute__((visibility("default")))
#endif

LRN_EXPORT int luaopen_resilnet_core(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx_push(L);
  lua_newtable(L);
  lua_pushvalue(L, -2);
  lrn_setfuncs(L, lrn_module_funcs, 1);
  lua_pushstring(L, rn_version_string());
  lua_setfield(L, -2, "version");
  /* A NULL light userdata compares equal across reloads and states. */
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lrn_error_open(L, ctx);
  lrn_timer_open(L);
  lrn_loop_funcs_open(L);
  lrn_pool_open(L);
  lrn_server_open(L);
  lrn_proxy_open(L);
  lrn_process_open(L);
  return 1;
}

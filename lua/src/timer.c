/* core.after(ms, target[, weak]): a one-shot rn_timer_t that dispatches
 * target (a task to resume or a function to call). Used by sleep and to
 * start tasks on the next loop turn. The timer frees itself when it fires.
 * weak: the timer never keeps the loop alive (rn_timer_unref): discovery's
 * deadlines and background polls must not keep resilnet.run() from
 * returning once nothing else is left to do. */
#include <stdlib.h>

#include "lrn.h"

typedef struct lrn_timer_s {
  rn_timer_t timer;
  lrn_ctx_t *ctx;
  int ref;
  lrn_link_t link;
} lrn_timer_t;

static void lrn_timer_fired(rn_timer_t *timer) {
  lrn_timer_t *t = LRN_CONTAINER_OF(timer, lrn_timer_t, timer);
  lrn_ctx_t *ctx = t->ctx;
  lrn_link_remove(&t->link);
  lrn_dispatch(ctx, t->ref, NULL, NULL);
  lrn_unref(ctx, &t->ref);
  free(t);
}

static int lrn_after(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  lua_Number ms = luaL_checknumber(L, 1);
  lrn_timer_t *t;
  int ref, weak, type = lua_type(L, 2);
  luaL_argcheck(L, ms >= 0 && ms < 1e15, 1, "milliseconds out of range");
  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 2,
                "expected a function or a thread");
  weak = lua_toboolean(L, 3);
  lua_settop(L, 2);
  ref = luaL_ref(L, LUA_REGISTRYINDEX);
  t = (lrn_timer_t *)malloc(sizeof(*t));
  if (t == NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return luaL_error(L, "resilnet: out of memory");
  }
  t->ctx = ctx;
  t->ref = ref;
  rn_timer_init(ctx->loop, &t->timer, lrn_timer_fired);
  t->timer.data = t;
  if (weak) rn_timer_unref(&t->timer);
  /* Timers count from the loop's cached clock, which is stale after time
   * spent outside uv_run or in a long callback: a sleep must not wake
   * early. */
  uv_update_time(rn_loop_uv(ctx->loop));
  if (rn_timer_start(&t->timer, (uint64_t)ms) != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    free(t);
    return luaL_error(L, "resilnet: out of memory");
  }
  lrn_link_add(&ctx->timers, &t->link);
  return 0;
}

void lrn_timer_close_all(lrn_ctx_t *ctx) {
  lrn_link_t *l, *next;
  for (l = ctx->timers.next; l != &ctx->timers; l = next) {
    lrn_timer_t *t = LRN_CONTAINER_OF(l, lrn_timer_t, link);
    next = l->next;
    rn_timer_stop(&t->timer);
    free(t);
  }
  lrn_link_init(&ctx->timers);
}

static const luaL_Reg lrn_timer_funcs[] = {{"after", lrn_after},
                                           {NULL, NULL}};

void lrn_timer_open(lua_State *L) {
  lua_pushvalue(L, -2);
  lrn_setfuncs(L, lrn_timer_funcs, 1);
}

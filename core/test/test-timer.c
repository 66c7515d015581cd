/* The timer heap: order, ties, stop, restart from a callback, and a loop
 * that closes cleanly afterwards. */
#include "internal.h"
#include "task.h"

#define N 1000

static int fired_order[N];
static int fired_count;
static uint64_t started_at;

static void record(rn_timer_t *t) {
  ASSERT_LT(fired_count, N);
  fired_order[fired_count++] = (int)(intptr_t)t->data;
}

/* Timers fire by due time, then by start order; stopped ones never fire. */
static void test_order_and_stop(void) {
  rn_loop_t *loop;
  static rn_timer_t timers[N];
  int i, expected;

  ASSERT_OK(rn_loop_new(NULL, &loop));
  fired_count = 0;
  for (i = 0; i < N; i++) {
    rn_timer_init(loop, &timers[i], record);
    timers[i].data = (void *)(intptr_t)i;
    /* Due times 0..9 ms, scattered, many ties. */
    ASSERT_OK(rn_timer_start(&timers[i], (uint64_t)((i * 7) % 10)));
  }
  for (i = 0; i < N; i += 3) rn_timer_stop(&timers[i]);
  ASSERT_OK(rn_timer_is_active(&timers[0]));
  ASSERT(rn_timer_is_active(&timers[1]));

  ASSERT_EQ(rn_loop_free(loop), UV_EBUSY);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);

  expected = 0;
  for (i = 0; i < N; i++)
    if (i % 3 != 0) expected++;
  ASSERT_EQ(fired_count, expected);
  for (i = 1; i < fired_count; i++) {
    int a = fired_order[i - 1], b = fired_order[i];
    int da = (a * 7) % 10, db = (b * 7) % 10;
    ASSERT(da < db || (da == db && a < b));
  }
  ASSERT_OK(rn_loop_free(loop));
}

static int restarts;

/* A callback restarting its own timer with 0 must not starve the loop: the
 * restarted timer waits for the next turn. */
static void restart_self(rn_timer_t *t) {
  if (++restarts < 100) ASSERT_OK(rn_timer_start(t, 0));
}

static void test_restart_from_callback(void) {
  rn_loop_t *loop;
  rn_timer_t t;

  ASSERT_OK(rn_loop_new(NULL, &loop));
  restarts = 0;
  rn_timer_init(loop, &t, restart_self);
  ASSERT_OK(rn_timer_start(&t, 0));
  /* One turn fires the timer a bounded number of times, then polls. */
  ASSERT_NE(uv_run(rn_loop_uv(loop), UV_RUN_NOWAIT), 0);
  ASSERT_GE(restarts, 1);
  ASSERT_LE(restarts, 3);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_EQ(restarts, 100);
  ASSERT_OK(rn_loop_free(loop));
}

static void note_elapsed(rn_timer_t *t) {
  uint64_t *elapsed = t->data;
  *elapsed = uv_now(t->loop->uv) - started_at;
}

/* Restarting an active timer moves it; the caller's own loop is left open. */
static void test_restart_moves_and_external_loop(void) {
  uv_loop_t uv;
  rn_loop_t *loop;
  rn_timer_t t;
  uint64_t elapsed = 0;

  ASSERT_OK(uv_loop_init(&uv));
  ASSERT_OK(rn_loop_new(&uv, &loop));
  ASSERT(rn_loop_uv(loop) == &uv);
  rn_timer_init(loop, &t, note_elapsed);
  t.data = &elapsed;
  started_at = uv_now(&uv);
  ASSERT_OK(rn_timer_start(&t, 5));
  ASSERT_OK(rn_timer_start(&t, 30));
  uv_run(&uv, UV_RUN_DEFAULT);
  ASSERT_GE(elapsed, 30);
  ASSERT_OK(rn_loop_free(loop));
  ASSERT_LOOP_CLOSES(&uv);
}

int main(void) {
  TEST_RUN(test_order_and_stop);
  TEST_RUN(test_restart_from_callback);
  TEST_RUN(test_restart_moves_and_external_loop);
  return 0;
}

/* The loop-lateness probe some timing tests share, and one include for
 * the scaffolding most tests use: the scripted peer, the pool and server
 * fixtures, the bounded wait. Include after task.h. */
#ifndef RN_TEST_HELPERS_H
#define RN_TEST_HELPERS_H

#include "resilnet.h"

#include <stdio.h>
#include <uv.h>

#include "peer.h"
#include "pool_fixture.h"
#include "server_fixture.h"
#include "wait.h"

/* How late the loop itself runs, for bounds on how late something happens:
 * on a loaded machine the whole process waits for a core now and then
 * (over 100 ms in a parallel sanitizer run beside other builds), which
 * delays a timer no less than a bug would. A uv timer repeating every
 * TEST_PROBE_MS notes how much later than its period each tick came. */
#define TEST_PROBE_MS 2

typedef struct {
  uv_timer_t timer;
  uint64_t last;  /* uv_hrtime() of the last tick */
  uint64_t worst; /* ns: the latest tick since test_probe_take */
} test_probe_t;

static inline uint64_t test_probe_late_now(const test_probe_t *p) {
  uint64_t since = uv_hrtime() - p->last;
  uint64_t period = TEST_PROBE_MS * 1000000ull;
  return since > period ? since - period : 0;
}

static inline void test_probe_tick(uv_timer_t *t) {
  test_probe_t *p = t->data;
  uint64_t late = test_probe_late_now(p);
  if (late > p->worst) p->worst = late;
  p->last = uv_hrtime();
}

/* The probe keeps the loop alive until test_probe_stop. */
static inline void test_probe_start(uv_loop_t *uv, test_probe_t *p) {
  ASSERT_OK(uv_timer_init(uv, &p->timer));
  p->timer.data = p;
  p->last = uv_hrtime();
  p->worst = 0;
  ASSERT_OK(uv_timer_start(&p->timer, test_probe_tick, TEST_PROBE_MS,
                           TEST_PROBE_MS));
}

/* The loop's worst lateness in ms since the last take (or the start),
 * including a stall it is only now coming out of (timers due before the
 * probe's tick run first), and starts over. */
static inline double test_probe_take(test_probe_t *p) {
  uint64_t late = test_probe_late_now(p);
  if (late < p->worst) late = p->worst;
  p->worst = 0;
  return (double)late / 1e6;
}

static inline void test_probe_stop(test_probe_t *p) {
  uv_close((uv_handle_t *)&p->timer, NULL);
}

#endif /* RN_TEST_HELPERS_H */

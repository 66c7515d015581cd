/* The one bounded wait of the C tests: RUN_UNTIL(uv, cond, ms) runs the uv
 * loop until cond holds, and fails the test (where, which condition, how
 * long) if it still does not hold after ms; cond is evaluated once per
 * turn of the loop (it may have side effects, such as reading a socket's
 * pending error). test_run_for(uv, ms) lets the loop run for a while, for
 * a test that checks what did not happen.
 *
 * Each wait has a timer of its own: a loop whose only handles are
 * unreferenced (idle connections, housekeeping) then blocks in poll rather
 * than spinning, and one kept alive forever by a listener still ends. The
 * timer is closed when the wait ends and freed by the loop's next turn
 * (every test runs its loop to the end before closing it). */
#ifndef RN_TEST_WAIT_H
#define RN_TEST_WAIT_H

#include <stdint.h>
#include <uv.h>

typedef struct {
  uv_timer_t timer;
  int passed;
} test_deadline_t;

test_deadline_t *test_deadline_start(uv_loop_t *uv, uint64_t ms);

/* Ends the wait; aborts with file, line and the condition's text unless
 * held. */
void test_deadline_end(test_deadline_t *d, int held, const char *file,
                       int line, const char *cond, uint64_t ms);

#define RUN_UNTIL(uv, cond, ms)                                               \
  do {                                                                        \
    uv_loop_t *wait_uv_ = (uv);                                               \
    test_deadline_t *wait_d_ = test_deadline_start(wait_uv_, (ms));           \
    int wait_held_;                                                           \
    while (!(wait_held_ = (cond) ? 1 : 0) && !wait_d_->passed)                \
      uv_run(wait_uv_, UV_RUN_ONCE);                                          \
    test_deadline_end(wait_d_, wait_held_, __FILE__, __LINE__, #cond, (ms));  \
  } while (0)

/* Runs the loop for ms (its own timer keeps it running that long). */
void test_run_for(uv_loop_t *uv, uint64_t ms);

#endif /* RN_TEST_WAIT_H */

/* A bounded wait for C tests that keep their loop in a file-level
 * `rn_loop_t *loop`: open_loop() makes it, RUN_UNTIL(cond, ms) runs it
 * until cond holds (failing after ms), finish() closes it. Include after
 * task.h and the declaration of `loop`. */
#ifndef RN_TEST_RUN_UNTIL_H
#define RN_TEST_RUN_UNTIL_H

#include <uv.h>

static uv_timer_t deadline; /* bounds every wait, see RUN_UNTIL */
static int deadline_passed;

static void on_deadline(uv_timer_t *t) {
  (void)t;
  deadline_passed = 1;
}

/* The deadline timer is referenced, so the loop blocks in poll rather
 * than spinning when the library holds only unreferenced handles (idle
 * connections, housekeeping). */
#define RUN_UNTIL(cond, ms)                                                   \
  do {                                                                        \
    deadline_passed = 0;                                                      \
    ASSERT_OK(uv_timer_start(&deadline, on_deadline, (ms), 0));               \
    while (!(cond) && !deadline_passed)                                       \
      uv_run(rn_loop_uv(loop), UV_RUN_ONCE);                                  \
    ASSERT_OK(uv_timer_stop(&deadline));                                      \
    ASSERT(cond);                                                             \
  } while (0)

static void open_loop(void) {
  ASSERT_OK(rn_loop_new(NULL, &loop));
  ASSERT_OK(uv_timer_init(rn_loop_uv(loop), &deadline));
}

/* Every pool and server must be closed by now: rn_loop_free() refuses
 * while any object or timer is left, and then closes the uv loop. */
static void finish(void) {
  uv_close((uv_handle_t *)&deadline, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

#endif /* RN_TEST_RUN_UNTIL_H */

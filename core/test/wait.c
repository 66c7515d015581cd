/* The bounded wait (wait.h). */
#include "wait.h"

#include <stdio.h>
#include <stdlib.h>

static void on_deadline(uv_timer_t *t) {
  ((test_deadline_t *)t->data)->passed = 1;
}

/* RN_TEST_WAIT_SCALE stretches every bound: set for the valgrind pass,
 * whose programs run tens of times slower (a TLS handshake there can take
 * seconds on a loaded machine). The bounds only end a wait that would
 * never end; what a case asserts about speed is the normal and sanitizer
 * passes' to check. */
static uint64_t wait_scale(void) {
  static uint64_t scale;
  if (scale == 0) {
    const char *s = getenv("RN_TEST_WAIT_SCALE");
    long v = s != NULL ? strtol(s, NULL, 10) : 1;
    scale = v >= 1 && v <= 100 ? (uint64_t)v : 1;
  }
  return scale;
}

static test_deadline_t *deadline_start(uv_loop_t *uv, uint64_t ms) {
  test_deadline_t *d = calloc(1, sizeof(*d));
  if (d == NULL || uv_timer_init(uv, &d->timer) != 0 ||
      uv_timer_start(&d->timer, on_deadline, ms, 0) != 0) {
    fprintf(stderr, "test_deadline_start: cannot start a timer\n");
    abort();
  }
  d->timer.data = d;
  return d;
}

test_deadline_t *test_deadline_start(uv_loop_t *uv, uint64_t ms) {
  return deadline_start(uv, ms * wait_scale());
}

static void free_deadline(uv_handle_t *h) { free(h->data); }

void test_deadline_end(test_deadline_t *d, int held, const char *file,
                       int line, const char *cond, uint64_t ms) {
  uv_close((uv_handle_t *)&d->timer, free_deadline);
  if (held) return;
  fprintf(stderr, "%s:%d: still false after %llu ms: %s\n", file, line,
          (unsigned long long)(ms * wait_scale()), cond);
  abort();
}

void test_run_for(uv_loop_t *uv, uint64_t ms) {
  test_deadline_t *d = deadline_start(uv, ms); /* a span, not a bound */
  while (!d->passed) uv_run(uv, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&d->timer, free_deadline);
}

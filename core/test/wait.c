/* The bounded wait (wait.h). */
#include "wait.h"

#include <stdio.h>
#include <stdlib.h>

static void on_deadline(uv_timer_t *t) {
  ((test_deadline_t *)t->data)->passed = 1;
}

test_deadline_t *test_deadline_start(uv_loop_t *uv, uint64_t ms) {
  test_deadline_t *d = calloc(1, sizeof(*d));
  if (d == NULL || uv_timer_init(uv, &d->timer) != 0 ||
      uv_timer_start(&d->timer, on_deadline, ms, 0) != 0) {
    fprintf(stderr, "test_deadline_start: cannot start a timer\n");
    abort();
  }
  d->timer.data = d;
  return d;
}

static void free_deadline(uv_handle_t *h) { free(h->data); }

void test_deadline_end(test_deadline_t *d, int held, const char *file,
                       int line, const char *cond, uint64_t ms) {
  uv_close((uv_handle_t *)&d->timer, free_deadline);
  if (held) return;
  fprintf(stderr, "%s:%d: still false after %llu ms: %s\n", file, line,
          (unsigned long long)ms, cond);
  abort();
}

void test_run_for(uv_loop_t *uv, uint64_t ms) {
  test_deadline_t *d = test_deadline_start(uv, ms);
  while (!d->passed) uv_run(uv, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&d->timer, free_deadline);
}

/* One-shot timers in a binary min-heap, driven by a single uv_timer_t per
 * loop. Calls carry deadlines by the tens of thousands; giving each its own
 * uv handle would cost a close round-trip per call. */
#include "internal.h"

#include <stdlib.h>

static int timer_before(const rn_timer_t *a, const rn_timer_t *b) {
  if (a->due != b->due) return a->due < b->due;
  return a->seq < b->seq;
}

static void heap_set(rn_loop_t *loop, size_t i, rn_timer_t *t) {
  loop->heap[i] = t;
  t->heap_index = i;
}

static void heap_sift_up(rn_loop_t *loop, size_t i) {
  rn_timer_t *t = loop->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!timer_before(t, loop->heap[parent])) break;
    heap_set(loop, i, loop->heap[parent]);
    i = parent;
  }
  heap_set(loop, i, t);
}

static void heap_sift_down(rn_loop_t *loop, size_t i) {
  rn_timer_t *t = loop->heap[i];
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= loop->heap_len) break;
    if (child + 1 < loop->heap_len &&
        timer_before(loop->heap[child + 1], loop->heap[child]))
      child++;
    if (!timer_before(loop->heap[child], t)) break;
    heap_set(loop, i, loop->heap[child]);
    i = child;
  }
  heap_set(loop, i, t);
}

static void heap_remove(rn_loop_t *loop, rn_timer_t *t) {
  size_t i = t->heap_index;
  rn_timer_t *last = loop->heap[--loop->heap_len];

  if (!t->weak) loop->strong_timers--;
  t->heap_index = SIZE_MAX;
  if (last == t) return;
  heap_set(loop, i, last);
  if (i > 0 && timer_before(last, loop->heap[(i - 1) / 2]))
    heap_sift_up(loop, i);
  else
    heap_sift_down(loop, i);
}

static void heap_timer_fire(uv_timer_t *handle);
static void heap_idle_fire(uv_idle_t *handle);

/* Points the uv timer at the earliest due time, or stops it so an empty
 * heap does not keep the loop alive. libuv 1.44 runs a uv timer restarted
 * with timeout 0 from its own callback again in the same turn, so a task
 * looping on sleep(0) would never let the loop poll for I/O. Timers already
 * due when started from a timer callback go through an idle handle instead:
 * it fires once per turn and keeps that turn's poll from blocking. */
static void heap_arm(rn_loop_t *loop) {
  uint64_t now, due;

  if (loop->strong_timers > 0) {
    uv_ref((uv_handle_t *)&loop->heap_timer);
    uv_ref((uv_handle_t *)&loop->heap_idle);
  } else {
    uv_unref((uv_handle_t *)&loop->heap_timer);
    uv_unref((uv_handle_t *)&loop->heap_idle);
  }
  if (loop->heap_len == 0) {
    uv_timer_stop(&loop->heap_timer);
    uv_idle_stop(&loop->heap_idle);
    return;
  }
  now = uv_now(loop->uv);
  due = loop->heap[0]->due;
  if (due <= now && loop->heap_firing) {
    uv_timer_stop(&loop->heap_timer);
    uv_idle_start(&loop->heap_idle, heap_idle_fire);
    return;
  }
  uv_idle_stop(&loop->heap_idle);
  uv_timer_start(&loop->heap_timer, heap_timer_fire, due > now ? due - now : 0,
                 0);
}

static void heap_fire(rn_loop_t *loop);

static void heap_idle_fire(uv_idle_t *handle) { heap_fire(handle->data); }

static void heap_timer_fire(uv_timer_t *handle) { heap_fire(handle->data); }

static void heap_fire(rn_loop_t *loop) {
  uint64_t now = uv_now(loop->uv);
  /* Timers started by these callbacks wait for the next turn, so a callback
   * that restarts itself with timeout 0 cannot starve the loop. */
  uint64_t seq_limit = loop->timer_seq;

  while (loop->heap_len > 0) {
    rn_timer_t *t = loop->heap[0];
    if (t->due > now || t->seq >= seq_limit) break;
    heap_remove(loop, t);
    loop->heap_firing = 1;
    t->cb(t);
    loop->heap_firing = 0;
  }
  loop->heap_firing = 1;
  heap_arm(loop);
  loop->heap_firing = 0;
}

void rn_timer_init(rn_loop_t *loop, rn_timer_t *timer, rn_timer_cb cb) {
  timer->loop = loop;
  timer->cb = cb;
  timer->due = 0;
  timer->seq = 0;
  timer->heap_index = SIZE_MAX;
  timer->weak = 0;
}

void rn_timer_unref(rn_timer_t *timer) {
  if (timer->weak) return;
  timer->weak = 1;
  if (rn_timer_is_active(timer)) {
    timer->loop->strong_timers--;
    heap_arm(timer->loop);
  }
}

int rn_timer_is_active(const rn_timer_t *timer) {
  return timer->heap_index != SIZE_MAX;
}

uint64_t rn_timer_remaining(const rn_timer_t *timer) {
  uint64_t now;
  if (!rn_timer_is_active(timer)) return 0;
  now = uv_now(timer->loop->uv);
  return timer->due > now ? timer->due - now : 0;
}

int rn_timer_start(rn_timer_t *timer, uint64_t timeout_ms) {
  rn_loop_t *loop = timer->loop;
  int was_first;

  if (rn_timer_is_active(timer)) {
    was_first = timer->heap_index == 0;
    heap_remove(loop, timer);
  } else {
    was_first = 0;
    if (loop->heap_len == loop->heap_cap) {
      size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
      rn_timer_t **heap = realloc(loop->heap, cap * sizeof(*heap));
      if (heap == NULL) return UV_ENOMEM;
      loop->heap = heap;
      loop->heap_cap = cap;
    }
  }

  timer->due = uv_now(loop->uv) + timeout_ms;
  timer->seq = loop->timer_seq++;
  heap_set(loop, loop->heap_len++, timer);
  heap_sift_up(loop, timer->heap_index);
  if (!timer->weak && loop->strong_timers++ == 0) was_first = 1;
  if (timer->heap_index == 0 || was_first) heap_arm(loop);
  return 0;
}

void rn_timer_stop(rn_timer_t *timer) {
  rn_loop_t *loop = timer->loop;
  int was_first;

  if (!rn_timer_is_active(timer)) return;
  was_first = timer->heap_index == 0 || (!timer->weak && loop->strong_timers == 1);
  heap_remove(loop, timer);
  /* Re-arming costs a uv call; only the head decides when the uv timer
   * fires, and firing early for a removed head is harmless but wasteful. */
  if (was_first) heap_arm(loop);
}

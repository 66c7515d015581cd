/* One-shot timers in a binary min-heap, driven by a single uv_timer_t per
 * loop, and lanes of timers that share one timeout (internal.h). Calls
 * carry deadlines by the tens of thousands; giving each its own uv handle
 * would cost a close round-trip per call. */
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

/* The uv handles keep the loop alive while, and only while, a strong
 * timer waits. Called when the count of strong timers may have crossed 0. */
static void heap_ref(rn_loop_t *loop) {
  int want = loop->strong_timers > 0;
  if (want == loop->heap_referenced) return;
  loop->heap_referenced = want;
  if (want) {
    uv_ref((uv_handle_t *)&loop->heap_timer);
    uv_ref((uv_handle_t *)&loop->heap_idle);
  } else {
    uv_unref((uv_handle_t *)&loop->heap_timer);
    uv_unref((uv_handle_t *)&loop->heap_idle);
  }
}

/* Makes sure the uv timer fires no later than the earliest due time. It is
 * left alone when it fires earlier already: a timer stopped or moved since
 * costs one early wake-up (heap_fire finds nothing due and re-arms), where
 * following every start and stop would cost a uv_timer_start (a sift in
 * libuv's own heap) per call. libuv 1.44 runs a uv timer restarted with
 * timeout 0 from its own callback again in the same turn, so a task
 * looping on sleep(0) would never let the loop poll for I/O. Timers already
 * due when started from a timer callback go through an idle handle
 * instead: it fires once per turn and keeps that turn's poll from
 * blocking. */
static void heap_arm(rn_loop_t *loop) {
  uint64_t now, due;

  heap_ref(loop);
  if (loop->heap_len == 0) return;
  now = rn__loop_now(loop);
  due = loop->heap[0]->due;
  if (due <= now && loop->heap_firing) {
    uv_idle_start(&loop->heap_idle, heap_idle_fire);
    return;
  }
  if (due >= loop->heap_armed_due) return;
  uv_timer_start(&loop->heap_timer, heap_timer_fire, due > now ? due - now : 0,
                 0);
  loop->heap_armed_due = due;
}

static void heap_fire(rn_loop_t *loop);

static void heap_idle_fire(uv_idle_t *handle) { heap_fire(handle->data); }

static void heap_timer_fire(uv_timer_t *handle) { heap_fire(handle->data); }

static void heap_fire(rn_loop_t *loop) {
  uint64_t now = rn__loop_now(loop);
  /* Whichever handle called, both start afresh: heap_arm below sets up
   * what the earliest timer left needs. */
  uv_timer_stop(&loop->heap_timer);
  uv_idle_stop(&loop->heap_idle);
  loop->heap_armed_due = UINT64_MAX;
  /* Timers started by these callbacks wait for the next turn, so a callback
   * that restarts itself with timeout 0 cannot starve the loop. */
  uint64_t seq_limit = loop->timer_seq;

  while (loop->heap_len > 0) {
    rn_timer_t *t = loop->heap[0];
    if (t->due > now || t->seq >= seq_limit) break;
    heap_remove(loop, t);
    loop->fired_since_poll = 1;
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
  timer->lane = NULL;
  timer->lane_prev = timer->lane_next = NULL;
}

/* ------------------------------------------------------------------------ */
/* Lanes                                                                      */

static void lane_unlink(rn_timer_t *timer) {
  rn_timer_lane_t *lane = timer->lane;
  if (timer->lane_prev != NULL)
    timer->lane_prev->lane_next = timer->lane_next;
  else
    lane->oldest = timer->lane_next;
  if (timer->lane_next != NULL)
    timer->lane_next->lane_prev = timer->lane_prev;
  else
    lane->newest = timer->lane_prev;
  timer->lane = NULL;
  timer->lane_prev = timer->lane_next = NULL;
  /* The wake-up stays where it was, even if the oldest just left: waking
   * early costs one look, re-arming on every stop would cost a sift. An
   * empty lane only stops keeping the loop alive. */
  if (lane->oldest == NULL) {
    timer->loop->strong_timers--;
    heap_ref(timer->loop);
  }
}

static void lane_wake(rn_timer_t *wake) {
  rn_timer_lane_t *lane = wake->data;
  uint64_t now = rn__loop_now(wake->loop);
  rn_timer_t *t;

  /* Timers started by these callbacks fall due a whole timeout from now,
   * behind every one here: the loop ends. */
  while ((t = lane->oldest) != NULL && t->due <= now) {
    lane_unlink(t);
    t->cb(t);
  }
  /* A callback that started a timer in this lane armed the wake-up a whole
   * timeout ahead (the lane looked empty to it, or its oldest already due):
   * pull it back to the oldest timer left, which is due sooner. */
  if (t != NULL && (!rn_timer_is_active(wake) || wake->due > t->due))
    rn_timer_start(wake, t->due - now);
}

void rn__timer_lane_init(rn_loop_t *loop, rn_timer_lane_t *lane,
                         uint64_t timeout_ms) {
  rn_timer_init(loop, &lane->wake, lane_wake);
  lane->wake.data = lane;
  /* The lane itself counts as one strong timer while it holds any: its
   * wake-up may outlive them (see lane_unlink). */
  rn_timer_unref(&lane->wake);
  lane->oldest = lane->newest = NULL;
  lane->timeout = timeout_ms;
}

void rn__timer_lane_close(rn_timer_lane_t *lane) {
  rn_timer_stop(&lane->wake);
}

/* A lane that holds a timer has its wake-up armed: here for its first,
 * by lane_wake while any is left. The inline start (internal.h) relies on
 * it for a lane that holds others. */
int rn__timer_start_in_lane_slow(rn_timer_t *timer, rn_timer_lane_t *lane) {
  uint64_t due;
  int err;

  /* A zero timeout is due at once, in the heap's turn order. */
  if (lane->timeout == 0) return rn_timer_start(timer, 0);
  rn__timer_stop(timer);
  due = rn__loop_now(timer->loop) + lane->timeout;
  if (!rn_timer_is_active(&lane->wake)) {
    err = rn_timer_start(&lane->wake, lane->timeout);
    if (err) return err;
  }
  if (lane->oldest == NULL) {
    timer->loop->strong_timers++;
    heap_ref(timer->loop);
  }
  timer->due = due;
  timer->lane = lane;
  timer->lane_next = NULL;
  timer->lane_prev = lane->newest;
  if (lane->newest != NULL)
    lane->newest->lane_next = timer;
  else
    lane->oldest = timer;
  lane->newest = timer;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Single timers                                                              */

void rn_timer_unref(rn_timer_t *timer) {
  if (timer->weak) return;
  timer->weak = 1;
  /* (Lanes are strong: their timers are never unref'd.) */
  if (timer->heap_index != SIZE_MAX) {
    timer->loop->strong_timers--;
    heap_ref(timer->loop);
  }
}

int rn_timer_is_active(const rn_timer_t *timer) {
  return timer->heap_index != SIZE_MAX || timer->lane != NULL;
}

uint64_t rn_timer_remaining(const rn_timer_t *timer) {
  uint64_t now;
  if (!rn_timer_is_active(timer)) return 0;
  now = rn__loop_now(timer->loop);
  return timer->due > now ? timer->due - now : 0;
}

int rn_timer_start(rn_timer_t *timer, uint64_t timeout_ms) {
  rn_loop_t *loop = timer->loop;

  if (timer->lane != NULL) lane_unlink(timer);
  if (timer->heap_index != SIZE_MAX) {
    heap_remove(loop, timer);
  } else {
    if (loop->heap_len == loop->heap_cap) {
      size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
      rn_timer_t **heap = realloc(loop->heap, cap * sizeof(*heap));
      if (heap == NULL) return UV_ENOMEM;
      loop->heap = heap;
      loop->heap_cap = cap;
    }
  }

  timer->due = rn__loop_now(loop) + timeout_ms;
  timer->seq = loop->timer_seq++;
  heap_set(loop, loop->heap_len++, timer);
  heap_sift_up(loop, timer->heap_index);
  if (!timer->weak) loop->strong_timers++;
  if (timer->heap_index == 0 || loop->strong_timers == 1) heap_arm(loop);
  return 0;
}

void rn_timer_stop(rn_timer_t *timer) {
  rn_loop_t *loop = timer->loop;

  if (timer->lane != NULL) {
    lane_unlink(timer);
    return;
  }
  if (timer->heap_index == SIZE_MAX) return;
  heap_remove(loop, timer);
  /* The uv timer stays armed (see heap_arm); it only has to stop keeping
   * the loop alive once no strong timer waits. */
  if (loop->strong_timers == 0) heap_ref(loop);
}

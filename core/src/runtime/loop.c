/* The loop: a uv loop (the caller's or our own) and what resilnet keeps
 * beside it: the timer heap and a count of objects still open. */
#include "internal.h"

#include <signal.h>
#include <stdlib.h>
#include <time.h>

static void loop_run_deferred(rn_loop_t *loop) {
  /* Until empty: deferred work may defer more (a failed write moves its
   * calls to another connection), and the poll must not start with any of
   * it waiting. Each piece leaves the list before it runs. */
  while (!rn_list_empty(&loop->deferred)) {
    rn_deferred_t *d = RN_CONTAINER_OF(loop->deferred.next, rn_deferred_t,
                                       node);
    rn_list_remove(&d->node);
    d->cb(d);
  }
}

void rn__loop_defer(rn_loop_t *loop, rn_deferred_t *d) {
  if (rn_list_empty(&d->node)) rn_list_insert_tail(&loop->deferred, &d->node);
}

/* Check handles run right after the poll phase, when every read that was
 * waiting has been delivered. A heartbeat that finds silence past its
 * deadline only trusts it if the loop polled after that deadline: if the
 * loop itself was stalled (a long callback), replies may be sitting unread
 * in the kernel and the peer is not to blame. */
static void loop_after_poll(uv_check_t *check) {
  rn_loop_t *loop = check->data;
  loop->last_poll = rn__loop_now(loop);
  loop->fired_since_poll = 0;
  uv_idle_stop(&loop->poll_nudge);
  /* What the poll's callbacks (replies, new calls made from them) left. */
  loop_run_deferred(loop);
}

/* Never runs: the nudge is stopped after the poll, before the next idle
 * phase. libuv wants a callback all the same. */
static void loop_nudge(uv_idle_t *idle) { (void)idle; }

/* What timers, earlier close callbacks and code outside uv_run left.
 *
 * libuv before 1.45 runs a turn's due timers before its poll, and a
 * uv_run(UV_RUN_ONCE) then blocks in that poll unless something is
 * pending: a callback run from a timer at the start of the turn (a pool's
 * close callback, a call failed by its deadline) went unseen by a caller
 * looping on ONCE until an unrelated wake-up, seconds later. An active idle
 * handle makes the poll return at once; it is on only for this poll, so
 * the loop's timeout (resilnet.timeout()) between turns is untouched. A
 * ONCE run whose timers ran after its poll costs the next run one poll
 * that does not block. */
static void loop_before_poll(uv_prepare_t *prepare) {
  rn_loop_t *loop = prepare->data;
  loop_run_deferred(loop);
  if (loop->fired_since_poll) uv_idle_start(&loop->poll_nudge, loop_nudge);
}

/* A write to a socket the peer has reset raises SIGPIPE, whose default
 * action kills the process: a server answering a client that went away,
 * a pool writing to a server that died. Every such write already fails
 * with EPIPE, which resilnet handles; so the signal is ignored, unless
 * the application installed a handler of its own. */
static void loop_ignore_sigpipe(void) {
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
}

int rn_loop_new(uv_loop_t *uv, rn_loop_t **out) {
  rn_loop_t *loop;
  int err;

  *out = NULL;
  loop_ignore_sigpipe();
  loop = calloc(1, sizeof(*loop));
  if (loop == NULL) return UV_ENOMEM;

  if (uv == NULL) {
    err = uv_loop_init(&loop->owned_uv);
    if (err) {
      free(loop);
      return err;
    }
    loop->uv = &loop->owned_uv;
    loop->owns_uv = 1;
  } else {
    loop->uv = uv;
  }

  /* Cannot fail on an initialised loop. */
  uv_timer_init(loop->uv, &loop->heap_timer);
  uv_idle_init(loop->uv, &loop->heap_idle);
  uv_check_init(loop->uv, &loop->poll_check);
  loop->poll_check.data = loop;
  uv_check_start(&loop->poll_check, loop_after_poll);
  uv_unref((uv_handle_t *)&loop->poll_check);
  rn_list_init(&loop->deferred);
  uv_prepare_init(loop->uv, &loop->defer_prepare);
  loop->defer_prepare.data = loop;
  uv_prepare_start(&loop->defer_prepare, loop_before_poll);
  uv_unref((uv_handle_t *)&loop->defer_prepare);
  uv_idle_init(loop->uv, &loop->poll_nudge);
  loop->poll_nudge.data = loop;
  uv_unref((uv_handle_t *)&loop->poll_nudge);
  loop->last_poll = rn__loop_now(loop);
  loop->random_state = uv_hrtime() ^ ((uint64_t)(uintptr_t)loop << 16);
  loop->heap_referenced = 1; /* as every uv handle starts */
  loop->heap_armed_due = UINT64_MAX;
  loop->heap_timer.data = loop;
  loop->heap_idle.data = loop;
  *out = loop;
  return 0;
}

uv_loop_t *rn_loop_uv(rn_loop_t *loop) { return loop->uv; }

uint64_t rn_loop_now(rn_loop_t *loop) { return rn__loop_now(loop); }

void rn__loop_update_time(rn_loop_t *loop) {
#ifndef _WIN32
  /* The clock libuv's own time comes from (CLOCK_MONOTONIC, or its coarse
   * twin, never ahead of it), in the same milliseconds: when it says no
   * millisecond has passed since the loop's time was taken, that time is
   * current and uv_update_time would only read the clock again. Every
   * call asks this, almost always within the millisecond of the poll
   * that delivered the reply it is made from. */
  struct timespec ts;
  /* ns < (ms + 1) * 1e6 is ns / 1e6 <= ms (libuv's rounding) without a
   * division. */
  if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0 &&
      (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec <
          (rn__loop_now(loop) + 1) * 1000000u)
    return;
#endif
  uv_update_time(loop->uv);
}

void rn__loop_object_add(rn_loop_t *loop) { loop->objects++; }

uint64_t rn__random(rn_loop_t *loop) {
  uint64_t z = (loop->random_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double rn__random_unit(rn_loop_t *loop) {
  return (double)(rn__random(loop) >> 11) * (1.0 / 9007199254740992.0);
}

void rn__loop_object_remove(rn_loop_t *loop) { loop->objects--; }

/* libuv runs close callbacks in no promised order: the last of our five
 * handles to finish frees the memory they all live in. */
static void loop_free_after_close(uv_handle_t *handle) {
  rn_loop_t *loop = handle->data;
  if (--loop->handles_closing > 0) return;
  free(loop->heap);
  free(loop);
}

int rn_loop_free(rn_loop_t *loop) {
  int err;

  if (loop->objects != 0 || loop->heap_len != 0) return UV_EBUSY;

  if (!loop->owns_uv) {
    /* The caller's loop runs on; our memory goes once libuv is done with
     * the heap timer. */
    loop->handles_closing = 5;
    uv_close((uv_handle_t *)&loop->heap_timer, loop_free_after_close);
    uv_close((uv_handle_t *)&loop->poll_nudge, loop_free_after_close);
    uv_close((uv_handle_t *)&loop->poll_check, loop_free_after_close);
    uv_close((uv_handle_t *)&loop->heap_idle, loop_free_after_close);
    uv_close((uv_handle_t *)&loop->defer_prepare, loop_free_after_close);
    return 0;
  }

  /* A failed uv_loop_close below leaves the caller free to call us again
   * once its own handles are closed: ours must not be closed twice. */
  if (!uv_is_closing((uv_handle_t *)&loop->heap_timer)) {
    uv_close((uv_handle_t *)&loop->heap_timer, NULL);
    uv_close((uv_handle_t *)&loop->heap_idle, NULL);
    uv_close((uv_handle_t *)&loop->poll_check, NULL);
    uv_close((uv_handle_t *)&loop->defer_prepare, NULL);
    uv_close((uv_handle_t *)&loop->poll_nudge, NULL);
  }
  uv_run(loop->uv, UV_RUN_DEFAULT);
  err = uv_loop_close(loop->uv);
  if (err) return err;
  free(loop->heap);
  free(loop);
  return 0;
}

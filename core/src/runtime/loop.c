/* The loop: a uv loop (the caller's or our own) and what resilnet keeps
 * beside it: the timer heap and a count of objects still open. */
#include "internal.h"

#include <signal.h>
#include <stdlib.h>

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
  loop->last_poll = uv_now(loop->uv);
  /* What the poll's callbacks (replies, new calls made from them) left. */
  loop_run_deferred(loop);
}

/* What timers, earlier close callbacks and code outside uv_run left. */
static void loop_before_poll(uv_prepare_t *prepare) {
  loop_run_deferred(prepare->data);
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
  loop->last_poll = uv_now(loop->uv);
  loop->random_state = uv_hrtime() ^ ((uint64_t)(uintptr_t)loop << 16);
  loop->heap_referenced = 1; /* as every uv handle starts */
  loop->heap_armed_due = UINT64_MAX;
  loop->heap_timer.data = loop;
  loop->heap_idle.data = loop;
  *out = loop;
  return 0;
}

uv_loop_t *rn_loop_uv(rn_loop_t *loop) { return loop->uv; }

uint64_t rn_loop_now(rn_loop_t *loop) { return uv_now(loop->uv); }

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

/* libuv runs close callbacks in no promised order: the last of our four
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
    loop->handles_closing = 4;
    uv_close((uv_handle_t *)&loop->heap_timer, loop_free_after_close);
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
  }
  uv_run(loop->uv, UV_RUN_DEFAULT);
  err = uv_loop_close(loop->uv);
  if (err) return err;
  free(loop->heap);
  free(loop);
  return 0;
}

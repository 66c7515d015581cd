/* A call's memory and its completion: the callback fires exactly once,
 * then the call's memory goes once no connection holds it any more. When
 * a call completes, and how, is decided in fate.c. */
#include "client.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Enough to cover a burst of completions before new calls reuse them; a
 * pool that shrinks from a larger peak gives the rest back. */
#define RN_SPARE_CALLS 256

/* The fields a reused call starts afresh with: from `conn` up to (not
 * including) its inline frame. */
#define CALL_ZERO_FROM offsetof(rn_call_t, conn)
#define CALL_ZERO_LEN (offsetof(rn_call_t, inline_frame) - CALL_ZERO_FROM)

/* Zeroed in pieces of at most 64 bytes: compilers store those inline,
 * where one memset of the whole becomes a `rep stos` that costs more than
 * the stores (every call passes here). */
static inline void call_zero(rn_call_t *call) {
  char *p = (char *)call + CALL_ZERO_FROM;
  typedef char zero_fits[CALL_ZERO_LEN <= 192 ? 1 : -1];
  (void)sizeof(zero_fits);
  memset(p, 0, CALL_ZERO_LEN < 64 ? CALL_ZERO_LEN : 64);
  if (CALL_ZERO_LEN > 64)
    memset(p + 64, 0, CALL_ZERO_LEN < 128 ? CALL_ZERO_LEN - 64 : 64);
  if (CALL_ZERO_LEN > 128) memset(p + 128, 0, CALL_ZERO_LEN - 128);
}

rn_call_t *rn__call_new(rn_pool_t *pool) {
  rn_call_t *call;
  if (pool->spare_count > 0) {
    call = RN_CONTAINER_OF(pool->spare_calls.next, rn_call_t, node);
    rn_list_remove(&call->node);
    pool->spare_count--;
  } else {
    call = malloc(sizeof(*call));
    if (call == NULL) return NULL;
    /* A spare keeps these as call_free left them: stopped (it asserts
     * so), on this pool's loop, pointing at the call; each start sets its
     * callback first. Initialised once per allocation, not per call. */
    rn_timer_init(pool->loop, &call->deadline, NULL);
    call->deadline.data = call;
    rn_timer_init(pool->loop, &call->attempt_timer, NULL);
    call->attempt_timer.data = call;
  }
  /* Everything but the two timers (and the frame's bytes). */
  call_zero(call);
  call->pool = pool;
  rn_list_init(&call->node);
  return call;
}

static void call_free(rn_call_t *call) {
  rn_pool_t *pool = call->pool;
  /* Off every list and connection, its timers stopped: whatever still
   * held it would reach freed memory (or a reused call). */
  assert(rn_list_empty(&call->node) && call->conn == NULL);
  assert(!rn_timer_is_active(&call->deadline) &&
         !rn_timer_is_active(&call->attempt_timer));
  assert(call->internal || (call->done && call->shadow_refs == 0));
  /* A setup request's frame may hold AUTH's password, whatever its end
   * (answered, refused, its connection lost): a spare call keeps its
   * bytes until reused, and free keeps them until the memory is. */
  if (call->setup) rn__wipe(call->frame, call->frame_len);
  if (call->frame != call->inline_frame) free(call->frame);
  if (call->batch != NULL) rn__batch_free(call->batch);
  if (pool->spare_count < RN_SPARE_CALLS) {
    rn_list_insert_head(&pool->spare_calls, &call->node);
    pool->spare_count++;
  } else {
    free(call);
  }
}

void rn__call_free_spares(rn_pool_t *pool) {
  while (!rn_list_empty(&pool->spare_calls)) {
    rn_call_t *call = RN_CONTAINER_OF(pool->spare_calls.next, rn_call_t, node);
    rn_list_remove(&call->node);
    free(call);
  }
  pool->spare_count = 0;
}

int rn__call_set_frame(rn_call_t *call, const char *frame, size_t len) {
  if (len <= sizeof(call->inline_frame)) {
    call->frame = call->inline_frame;
  } else {
    call->frame = malloc(len);
    if (call->frame == NULL) return UV_ENOMEM;
  }
  memcpy(call->frame, frame, len);
  call->frame_len = len;
  return 0;
}

void rn__call_set_endpoint(rn_call_t *call, rn_pool_endpoint_t *ep) {
  if (call->endpoint == ep) return;
  ep->refs++;
  if (call->endpoint != NULL) rn__endpoint_release(call->pool, call->endpoint);
  call->endpoint = ep;
}

void rn__call_release(rn_call_t *call) {
  rn_call_t *parent;
  if (call->internal) {
    /* Pings are owned by their connection alone. */
    if (call->conn == NULL) call_free(call);
    return;
  }
  /* While its callback runs, whoever completed it still holds it (and
   * releases it after): a close from inside the callback must not free it
   * under them. */
  if (!call->done || call->conn != NULL || call->shadow_refs > 0 ||
      call->completing)
    return;
  parent = call->parent;
  if (call->endpoint != NULL) rn__endpoint_release(call->pool, call->endpoint);
  call_free(call);
  if (parent != NULL) {
    parent->shadow_refs--;
    rn__call_release(parent);
  }
}

void rn__call_complete(rn_call_t *call, int status, const char *body,
                       size_t body_len, int flags) {
  rn_pool_t *pool = call->pool;
  rn_result_t result;

  if (call->done || call->internal) return;
  /* A hedge's end is its parent's business (fate.c): it calls no one. */
  assert(call->parent == NULL && !call->backing_off && !call->parked);
  call->done = 1;
  rn__timer_stop(&call->deadline);
  rn__timer_stop(&call->attempt_timer);
  if (call->hold != NULL) rn__hold_call_ended(call, status);

  result.status = status;
  result.body = body;
  result.body_len = body_len;
  result.flags = flags;
  result.attempts = call->attempts;
  /* A reply, even an error reply, means the server saw the request. A
   * failure means execution was possible only if a byte of the current
   * attempt left the socket, of a hedge still out, or of an earlier
   * attempt the server did not prove unexecuted. A Redis error reply
   * such as -LOADING proves its attempt did not run (fate.c). */
  result.maybe_executed = status == 0 ||
                          (status == RN_EREPLY && !call->reply_unrun) ||
                          call->was_sent || call->state != RN_SEND_UNSENT ||
                          call->shadows_written > 0;
  result.endpoint = call->endpoint ? call->endpoint->text : NULL;

  if (status == 0 || status == RN_EREPLY)
    pool->stats.completed++;
  else
    pool->stats.failed++;
  assert(pool->active > 0);
  pool->active--;

  pool->callback_depth++;
  call->completing = 1;
  call->cb(pool, call->data, &result);
  call->completing = 0;
  pool->callback_depth--;
  if (status == 0 || status == RN_EREPLY) rn__retry_succeeded(pool);
  rn__pool_call_done(pool);
}

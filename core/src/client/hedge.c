/* Hedging: for an idempotent call whose reply is slow, another attempt on
 * a different connection, the first reply winning.
 *
 * A hedge is a shadow call: a copy of the request whose reply completes
 * its parent instead of calling anyone. The parent's own attempt stays
 * where it is; whichever attempt loses is left in its connection's FIFO,
 * done, so its reply is matched and dropped like a timed-out call's. The
 * parent is freed only after its last shadow (shadow_refs). */
#include "client.h"

#include <stdlib.h>
#include <string.h>

static rn_call_t *hedge_new(rn_call_t *parent) {
  rn_pool_t *pool = parent->pool;
  rn_call_t *shadow = rn__call_new(pool);
  if (shadow == NULL) return NULL;
  if (rn__call_set_frame(shadow, parent->frame, parent->frame_len) != 0) {
    shadow->done = 1; /* never placed: released at once */
    rn__call_release(shadow);
    return NULL;
  }
  shadow->parent = parent;
  shadow->idempotent = 1;
  /* rnp: the time left is written where the parent's frame keeps it;
   * without it the copy would say DEADLINE 0, refused as expired. */
  shadow->deadline_offset = parent->deadline_offset;
  shadow->max_attempts = 1; /* a failed hedge is not retried itself */
  parent->shadows_live++;
  parent->shadow_refs++;
  return shadow;
}

/* The parent's attempt_timer: no reply after the hedge delay. */
void rn__hedge_due(rn_timer_t *timer) {
  rn_call_t *call = timer->data;
  rn_pool_t *pool = call->pool;
  rn_call_t *shadow;
  rn_conn_t *conn;
  rn_pool_event_t ev;

  /* Only while its own attempt is out: a call waiting for a connection or
   * a retry has nothing to hedge. */
  if (call->done || call->conn == NULL || pool->closing) return;
  if (1 + call->shadows_live >= call->hedge_max ||
      !rn__retry_budget_allows(pool))
    return;
  conn = rn__pool_pick_other(pool, call);
  if (call->done || pool->closing) return; /* a callback in the pick */
  if (conn == NULL) {
    /* Nowhere else to go yet: open a connection, look again later. */
    rn__pool_grow(pool);
    rn_timer_start(timer, call->attempt_timeout);
    return;
  }
  shadow = hedge_new(call);
  if (shadow == NULL) return;
  pool->stats.hedges++;
  rn__retry_spend(pool);
  rn__conn_enqueue(conn, shadow);

  memset(&ev, 0, sizeof(ev));
  ev.reason = "hedge";
  ev.duration = call->attempt_timeout;
  ev.attempt = 1 + call->shadows_live;
  rn__pool_emit(pool, RN_EVENT_RETRY, shadow->endpoint, &ev);
  if (!call->done && 1 + call->shadows_live < call->hedge_max)
    rn_timer_start(timer, call->attempt_timeout);
}

/* A shadow's attempt ended. A reply completes the parent; a failure
 * matters only once nothing of the parent is in flight any more. */
void rn__hedge_complete(rn_call_t *shadow, int status, const char *body,
                        size_t body_len, int flags) {
  rn_call_t *parent = shadow->parent;
  shadow->done = 1;
  parent->shadows_live--;
  if (shadow->was_sent) parent->shadows_written--;
  if (status != 0 && status != RN_EREPLY) {
    /* A hedge lost after it left may have run: so may the call. One that
     * never left, or that the server refused unrun (NOT_EXECUTED, above a
     * GOAWAY), added no work: the call is as unsent as before, and the
     * token goes back, as for any attempt proven not executed. */
    if (shadow->state != RN_SEND_UNSENT)
      parent->was_sent = 1;
    else
      rn__retry_refund(parent->pool);
  }
  if (parent->done) return;
  if (status == 0 || status == RN_EREPLY) {
    int was_parked = parent->parked;
    parent->parked = 0;
    /* Take the parent off wherever its own attempt is: waiting out a
     * retry delay, waiting for a connection, or (not written yet) queued
     * on one, where it need not go at all. A written attempt stays in
     * its FIFO, done, so its reply is dropped. */
    if (parent->backing_off) {
      rn__retry_cancel(parent);
    } else if (parent->conn != NULL) {
      if (parent->state == RN_SEND_UNSENT)
        rn__conn_unqueue(parent->conn, parent);
    } else if (!was_parked) {
      rn_list_remove(&parent->node); /* from pool->pending */
      rn_list_init(&parent->node);
      parent->pool->pending_count--;
    }
    rn__call_complete(parent, status, body, body_len, flags);
    return;
  }
  if (parent->parked && parent->shadows_live == 0) {
    parent->parked = 0;
    rn__retry_failed(parent->pool, parent, parent->parked_error);
  }
}

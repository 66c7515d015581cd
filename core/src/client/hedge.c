/* Hedging: for an idempotent call whose reply is slow, another attempt on
 * a different connection, the first reply winning. This file makes and
 * sends hedges; when one is due, and what its end means for its call, is
 * decided in fate.c.
 *
 * A hedge is a shadow call: a copy of the request whose reply completes
 * its parent instead of calling anyone. The parent's own attempt stays
 * where it is; whichever attempt loses is left in its connection's FIFO,
 * done, so its reply is matched and dropped like a timed-out call's. The
 * parent is freed only after its last shadow (shadow_refs). */
#include "client.h"

#include <stdlib.h>
#include <string.h>

/* Idempotent calls only: running the request twice must be harmless. */
void rn__hedge_configure(rn_pool_t *pool, rn_call_t *call,
                         const rn_call_options_t *options) {
  uint64_t delay = pool->options.hedge.delay_ms;
  unsigned max = pool->options.hedge.max;
  if (options != NULL && options->hedge_mode == RN_HEDGE_OFF) return;
  if (options != NULL && options->hedge_mode == RN_HEDGE_ON) {
    delay = options->hedge.delay_ms;
    max = options->hedge.max;
  }
  if (delay == 0 || max < 2) return;
  call->hedged = 1;
  call->attempt_timeout = delay;
  call->hedge_max = max;
}

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

int rn__hedge_send(rn_call_t *call) {
  rn_pool_t *pool = call->pool;
  rn_call_t *shadow;
  rn_conn_t *conn;
  rn_pool_event_t ev;

  conn = rn__pool_pick_other(pool, call);
  if (call->done || pool->closing) return -1; /* a callback in the pick */
  if (conn == NULL) {
    /* Nowhere else to go yet: open a connection. */
    rn__pool_grow(pool);
    return 0;
  }
  shadow = hedge_new(call);
  if (shadow == NULL) return -1;
  pool->stats.hedges++;
  rn__retry_spend(pool);
  rn__conn_enqueue(conn, shadow);

  memset(&ev, 0, sizeof(ev));
  ev.reason = "hedge";
  ev.duration = call->attempt_timeout;
  ev.attempt = 1 + call->shadows_live;
  rn__pool_emit(pool, RN_EVENT_RETRY, shadow->endpoint, &ev);
  return 1;
}

/* A call's fate: the one place that decides what becomes of a call
 * (docs/retry-rules.md is the table it implements).
 *
 * Connections and the pool report facts about a call here; this file
 * decides, and hands placement back to them (the pool's queue, a
 * connection's abandon). retry.c holds the checks a policy retry must pass
 * (budget, backoff, classify), hedge.c how a hedge is made and sent, and
 * call.c a call's memory and its callback.
 *
 * Where a call is, at any time (exactly one of):
 *   pending     in the pool's queue, waiting for a connection
 *   on a conn   conn set: in its unsent queue (state UNSENT), or in its
 *               reply FIFO (SENT; ANSWERED once a reply byte came)
 *   backing off waiting out a retry delay (on pool->retrying)
 *   parked      its attempt failed; on no list, waiting for its hedges
 *   done        its callback ran; a sent one may still stand in a FIFO
 *               so that its late reply is matched and dropped
 *
 *   fact                                  reported by  decision
 *   accepted (rn_pool_call)               pool         its rules: attempts,
 *                                                      deadline, attempt
 *                                                      timeout, hedging
 *   placed on a connection                pool         attempt timer armed
 *   written                               conn         SENT, attempt counted
 *                                                      (a batch: its
 *                                                      replies so far go)
 *   part of a reply arrived               conn         ANSWERED
 *   reply (or error reply)                conn         complete, or retry
 *     (a batch: its last reply, status 0;
 *     batch.c keeps each request's)
 *                                                      (a Redis error that
 *                                                      proves nothing ran;
 *                                                      classify)
 *   refused unrun (rnp NOT_EXECUTED)      conn         again, uncounted, or
 *                                                      fail
 *   "try later" (rnp RETRY_AFTER,         conn         retry if idempotent
 *     IN_PROGRESS)                                     or keyed, else the
 *                                                      error reply
 *   handed back unsent (closed, GOAWAY)   conn         requeue at the front
 *   lost after it was written             conn         retry or fail
 *   attempt timer, unsent                 timer        requeue
 *   attempt timer, written                timer        abandon, then as lost
 *   hedge delay, no reply yet             timer        a hedge (hedge.c)
 *   retry delay over                      timer        requeue
 *   deadline                              timer        fail
 *   pool closing                          pool         fail (ECLOSED)
 *   a hedge ended                         (itself)     the parent's fate
 */
#include "client.h"
#include "../codec/resp_errors.h"

#include <assert.h>
#include <string.h>

/* Why a call that waited for a connection timed out, when a server's
 * GOAWAY asked for a pause in connects (rn__endpoint_hold_off). */
#define RN_HELD_MESSAGE                                                        \
  "no connection before the deadline: a server's RETRY_AFTER holds "          \
  "connects back"

/* Why a keyed call that may have run was not retried. */
#define RN_KEY_UNKEPT_MESSAGE                                                  \
  "not retried: its key protects nothing, its server announced no dedupe "    \
  "store (or attempts went to two stores)"

/* Why a keyed call that may have run timed out waiting to be retried. */
#define RN_KEY_WAIT_MESSAGE                                                    \
  "no server announcing its key's store took the retry before the deadline"

/* At most one place at a time; a done call waits for nothing. */
static inline void fate_check(const rn_call_t *call) {
  (void)call;
  assert(!(call->backing_off && call->parked));
  assert(!(call->conn != NULL && (call->backing_off || call->parked)));
  assert(!(call->done && (call->backing_off || call->parked)));
  assert(!call->internal || call->parent == NULL);
}

static void fate_attempt_expired(rn_timer_t *timer);
static void fate_hedge_due(rn_timer_t *timer);
static void fate_shadow_ended(rn_call_t *shadow, int status, const char *body,
                              size_t body_len, int flags);

/* Completes the call (its callback, once) and lets its memory go when
 * nothing holds it. A hedge completes its parent instead. */
static inline void fate_end(rn_call_t *call, int status, const char *body,
                     size_t body_len, int flags) {
  if (call->parent != NULL && !call->done)
    fate_shadow_ended(call, status, body, body_len, flags);
  else
    rn__call_complete(call, status, body, body_len, flags);
  rn__call_release(call);
}

void rn__fate_fail(rn_call_t *call, int err) {
  fate_end(call, err, NULL, 0, 0);
}

void rn__fate_fail_why(rn_call_t *call, int err, const char *why) {
  fate_end(call, err, why, why != NULL ? strlen(why) : 0, 0);
}

/* ------------------------------------------------------------------------ */
/* Retries                                                                    */

static void fate_retry_due(rn_timer_t *timer) {
  rn_call_t *call = timer->data;
  rn_pool_t *pool = call->pool;
  assert(call->backing_off && !call->done && call->conn == NULL);
  rn_list_remove(&call->node); /* from pool->retrying */
  pool->retrying_count--;
  call->backing_off = 0;
  rn__fate_returned(call);
  rn__pool_dispatch(pool);
}

/* Ends a call's retry delay early (deadline, close, a hedge's reply). */
static void fate_cancel_backoff(rn_call_t *call) {
  if (!call->backing_off) return;
  rn_timer_stop(&call->attempt_timer);
  rn_list_remove(&call->node);
  call->pool->retrying_count--;
  call->backing_off = 0;
}

/* Puts the call aside for delay ms, then back in the pool's queue. */
static void fate_retry_later(rn_pool_t *pool, rn_call_t *call, int err,
                             uint64_t delay) {
  rn_pool_event_t ev;

  assert(!call->done && call->conn == NULL && call->parent == NULL &&
         rn_list_empty(&call->node));
  call->state = RN_SEND_UNSENT;
  call->backing_off = 1;
  rn_list_insert_tail(&pool->retrying, &call->node);
  pool->retrying_count++;
  call->attempt_timer.cb = fate_retry_due;
  rn_timer_start(&call->attempt_timer, delay);

  memset(&ev, 0, sizeof(ev));
  ev.reason = rn_err_name(err);
  ev.error = err;
  ev.duration = delay;
  ev.attempt = call->attempts + 1;
  rn__pool_emit(pool, RN_EVENT_RETRY, call->endpoint, &ev);
}

/* A policy retry after delay ms (0: a full-jitter delay), if attempts, the
 * budget and the deadline allow it. 1 if scheduled. */
static int fate_retry(rn_pool_t *pool, rn_call_t *call, int err,
                      uint64_t delay) {
  if (pool->closing || call->attempts >= call->max_attempts ||
      !rn__retry_budget_allows(pool))
    return 0;
  if (delay == 0) delay = rn__retry_delay(pool, call->attempts);
  if (delay >= rn_timer_remaining(&call->deadline)) return 0;
  pool->stats.retries++;
  rn__retry_spend(pool);
  fate_retry_later(pool, call, err, delay);
  return 1;
}

/* Its hedges are still out: one of them may yet answer. */
static void fate_park(rn_call_t *call, int err) {
  call->parked = 1;
  call->parked_error = err;
}

/* ------------------------------------------------------------------------ */
/* What the pool reports                                                      */

int rn__fate_begin(rn_call_t *call, const rn_call_options_t *options,
                   rn_call_cb cb, void *data) {
  rn_pool_t *pool = call->pool;
  uint64_t timeout;

  call->cb = cb;
  call->data = data;
  call->idempotent = options != NULL && options->idempotent;
  call->max_attempts = options != NULL && options->attempts
                           ? RN_MIN(options->attempts, RN_MAX_ATTEMPTS)
                           : pool->options.retry.attempts;
  timeout = options != NULL && options->timeout_ms ? options->timeout_ms
                                                   : pool->options.timeout_ms;
  /* The deadline counts from now, not from the loop's cached clock, which
   * is stale after time spent outside uv_run or in a long callback. */
  rn__loop_update_time(pool->loop);
  call->deadline.cb = rn__fate_deadline;
  call->attempt_timeout = options != NULL && options->attempt_timeout_ms
                              ? options->attempt_timeout_ms
                              : pool->options.attempt_timeout_ms;
  /* A blocking call's reply is slow by design: no attempt timeout, no
   * hedge; its deadline bounds it (rn__fate_deadline), and block_ms its
   * connection's excused silence (conn_liveness.c). */
  if (options != NULL && (options->blocking || options->block_ms != 0)) {
    call->blocking = 1;
    /* Beyond 2^32 ms (49 days) a bound is no bound. */
    call->block_ms = options->block_ms <= UINT32_MAX
                         ? (uint32_t)options->block_ms
                         : 0;
    call->attempt_timeout = 0;
  }
  /* Keyed calls are never hedged: the server runs a key once, so a copy
   * to the same server only waits for the first (or is refused
   * IN_PROGRESS), and one to another server may run it twice. */
  if (call->idempotent && !call->keyed && !call->blocking)
    rn__hedge_configure(pool, call, options);
  return timeout == pool->deadlines.timeout
             ? rn__timer_start_in_lane(&call->deadline, &pool->deadlines)
             : rn_timer_start(&call->deadline, timeout);
}

void rn__fate_placed(rn_call_t *call) {
  fate_check(call);
  assert(!call->done && call->conn == NULL && call->parent == NULL &&
         call->state == RN_SEND_UNSENT);
  if (call->attempt_timeout != 0) {
    call->attempt_timer.cb =
        call->hedged ? fate_hedge_due : fate_attempt_expired;
    rn_timer_start(&call->attempt_timer, call->attempt_timeout);
  }
}

void rn__fate_closed(rn_call_t *call) {
  fate_check(call);
  assert(!call->done && call->conn == NULL);
  if (call->backing_off) {
    fate_cancel_backoff(call);
  } else {
    rn_list_remove(&call->node); /* from pending */
    call->pool->pending_count--;
  }
  rn__fate_fail(call, RN_ECLOSED);
}

/* ------------------------------------------------------------------------ */
/* What connections report                                                    */

void rn__fate_written(rn_call_t *call) {
  assert(call->state == RN_SEND_UNSENT && !call->done && call->conn != NULL);
  call->state = RN_SEND_SENT;
  /* A batch starts its replies afresh with each attempt. */
  if (call->batch != NULL) rn__batch_restart(call);
  if (call->parent != NULL) {
    /* A hedge out: while it is, the call may have run; its end says
     * whether it still may (fate_shadow_ended). */
    call->parent->attempts++;
    call->parent->shadows_written++;
    call->was_sent = 1;
  } else if (!call->internal) {
    call->attempts++;
  }
}

void rn__fate_answering(rn_call_t *call) {
  assert(call->state != RN_SEND_UNSENT && call->conn != NULL);
  call->state = RN_SEND_ANSWERED;
}

/* A RESP error reply that proves the call's own attempt did not run
 * (resp_errors.c: -LOADING, -READONLY, ...; never to EXEC or inside a
 * script). A hedge's reply is its parent's answer and proves nothing
 * here (as for the first reply winning). */
static int fate_reply_unrun(const rn_pool_t *pool, const rn_call_t *call,
                            const char *body, size_t body_len) {
  return pool->codec.protocol == RN_PROTOCOL_RESP && call->parent == NULL &&
         rn__resp_not_executed(pool->options.retry.not_executed, call->frame,
                               call->frame_len, body, body_len);
}

/* An error reply: retried if it proves nothing ran (unless classify says
 * FAIL), or if classify says the server did not run it. 1 if the call
 * will be tried again. */
static int fate_error_reply_retried(rn_pool_t *pool, rn_call_t *call,
                                    int unrun, const char *body,
                                    size_t body_len) {
  rn_classify_t verdict = RN_CLASSIFY_DEFAULT;
  /* A hedge's error reply is its parent's answer: the first reply wins. */
  if ((pool->options.classify == NULL && !unrun) || pool->closing ||
      call->done || call->parent != NULL)
    return 0;
  if (pool->options.classify != NULL)
    verdict = rn__retry_classify(pool, call, RN_EREPLY, body, body_len);
  if (unrun ? verdict == RN_CLASSIFY_FAIL : verdict != RN_CLASSIFY_RETRY)
    return 0;
  return fate_retry(pool, call, RN_EREPLY, 0);
}

/* rn__fate_replied's error reply: whether it proved its attempt unrun
 * (set in call->reply_unrun), or 1 if it dealt with the call (sent again,
 * retried). Out of line: most replies are not errors. */
static RN_NOINLINE int fate_error_replied(rn_call_t *call, const char *body,
                                          size_t body_len) {
  int unrun = !call->done && fate_reply_unrun(call->pool, call, body, body_len);
  if (unrun) {
    /* Proven: the attempt never ran, as an rnp refusal proves. */
    call->pool->stats.not_executed++;
    call->state = RN_SEND_UNSENT;
  }
  /* -READONLY on a master pool, -LOADING: about the server, not the
   * call; its endpoint's connections retire. From the wrong server
   * (READONLY), the call, proven unrun, goes to the right one as one
   * never sent, as above an rnp GOAWAY: no policy retry, no budget
   * spent (a failover answers every call in flight so). */
  if (call->pool->codec.protocol == RN_PROTOCOL_RESP &&
      call->parent == NULL && !call->held &&
      rn__setup_server_error(call->pool, call->endpoint, body, body_len) &&
      unrun && !call->done) {
    rn_pool_t *pool = call->pool;
    rn__fate_returned(call);
    rn__pool_dispatch(pool);
    return 1;
  }
  if (fate_error_reply_retried(call->pool, call, unrun, body, body_len))
    return 1;
  call->reply_unrun = (unsigned)unrun;
  return 0;
}

void rn__fate_replied(rn_call_t *call, int status, const char *body,
                      size_t body_len, int flags) {
  fate_check(call);
  assert(call->conn == NULL && !call->internal &&
         call->state != RN_SEND_UNSENT);
  call->state = RN_SEND_ANSWERED;
  if (status != 0 && fate_error_replied(call, body, body_len)) return;
  fate_end(call, status, body, body_len, flags);
}

void rn__fate_try_later(rn_call_t *call, uint64_t delay_ms, const char *body,
                        size_t body_len) {
  /* Safe only for a call that may run twice or carries its key. A
   * hedge's error is its parent's answer, as above. */
  if ((call->idempotent || rn__store_holds(call)) && !call->done &&
      call->parent == NULL) {
    assert(call->conn == NULL && call->state != RN_SEND_UNSENT);
    call->state = RN_SEND_ANSWERED;
    /* The attempt may yet run (IN_PROGRESS: it is running): whatever
     * becomes of the retry, the call may have executed, and its key's
     * store stays bound. */
    call->was_sent = 1;
    if (fate_retry(call->pool, call, RN_EREPLY, delay_ms)) return;
  }
  rn__fate_replied(call, RN_EREPLY, body, body_len, RN_FRAME_ERROR);
}

void rn__fate_refused(rn_call_t *call, int err, int again, uint64_t delay_ms,
                      const char *body, size_t body_len) {
  rn_pool_t *pool = call->pool;
  uint64_t delay;

  fate_check(call);
  assert(call->conn == NULL && !call->internal);
  pool->stats.not_executed++;
  call->state = RN_SEND_UNSENT; /* proven: never run */
  if (!again || call->parent != NULL || call->done) {
    /* Refused for good, a hedge (its parent decides), or a call whose
     * deadline passed. */
    fate_end(call, err, body, body_len, 0);
    return;
  }
  if (call->shadows_live > 0) {
    fate_park(call, err);
    return;
  }
  /* Sent again without spending attempts or budget, as if never sent;
   * after a pause, so that a server saying "overloaded" is not asked
   * again at once. */
  delay = delay_ms > 0 ? delay_ms : rn__retry_delay(pool, call->attempts);
  if (pool->closing || delay >= rn_timer_remaining(&call->deadline)) {
    fate_end(call, err, body, body_len, 0);
    return;
  }
  fate_retry_later(pool, call, err, delay);
}

void rn__fate_returned(rn_call_t *call) {
  rn_pool_t *pool = call->pool;
  fate_check(call);
  assert(call->conn == NULL && rn_list_empty(&call->node) &&
         !call->backing_off && !call->internal);
  call->state = RN_SEND_UNSENT;
  /* Proven unrun (never written, refused NOT_EXECUTED, above a GOAWAY)
   * with no earlier attempt that may have run: free to go anywhere. */
  if (call->store != 0 && !call->was_sent) rn__store_unbind(call);
  if (call->done) {
    rn__call_release(call);
    return;
  }
  if (call->parent != NULL) {
    /* A hedge that never left: the parent's own attempt carries on. */
    fate_end(call, UV_ECANCELED, NULL, 0, 0);
    return;
  }
  if (call->held) {
    /* Its connection was the only one it may use: the error that ended
     * it (never written: maybe_executed 0). */
    rn__fate_fail(call, rn__hold_error(call));
    return;
  }
  if (pool->closing) {
    rn__fate_fail(call, RN_ECLOSED);
    return;
  }
  rn_timer_stop(&call->attempt_timer);
  rn__pool_requeue(pool, call);
}

/* A keyed call lost where no store keeps its key: it fails like any call
 * that may have run, and says why its key did not earn it a retry. */
static RN_NOINLINE void fate_key_unkept(rn_call_t *call, int err) {
  rn__fate_fail_why(call, err, RN_KEY_UNKEPT_MESSAGE);
}

void rn__fate_lost(rn_call_t *call, int err) {
  rn_pool_t *pool = call->pool;
  fate_check(call);
  assert(call->conn == NULL && !call->internal && !call->backing_off);
  rn_timer_stop(&call->attempt_timer);
  if (call->parent != NULL) { /* a hedge: its parent decides */
    fate_end(call, err, NULL, 0, 0);
    return;
  }
  if (call->done) { /* its deadline passed while it was out */
    rn__call_release(call);
    return;
  }
  call->was_sent = 1; /* written, then lost: it may have run */
  if (call->shadows_live > 0) {
    fate_park(call, err);
    return;
  }
  /* The rules first: a call that may have run is retried only if it is
   * idempotent, or keyed where a store keeps its key, whatever classify
   * would say. */
  if (call->keyed && !call->idempotent && !rn__store_holds(call)) {
    fate_key_unkept(call, err);
    return;
  }
  if (!(call->idempotent || call->keyed) ||
      rn__retry_classify(pool, call, err, NULL, 0) == RN_CLASSIFY_FAIL ||
      call->done || !fate_retry(pool, call, err, 0))
    rn__fate_fail(call, err);
}

/* ------------------------------------------------------------------------ */
/* Timers                                                                     */

/* The attempt ran out of time. Not yet written (stuck behind a slow
 * write): it moves, as if its connection had failed. Written: the attempt
 * is abandoned where it stands and the retry rules decide, as for a
 * connection failure but with the connection left alone: a slow reply is
 * not a dead peer (heartbeats judge that). */
static void fate_attempt_expired(rn_timer_t *timer) {
  rn_call_t *call = timer->data;
  rn_pool_t *pool = call->pool;
  rn_conn_t *conn = call->conn;

  fate_check(call);
  if (conn == NULL) return;
  assert(!call->done);
  if (call->state == RN_SEND_UNSENT) {
    rn__conn_unqueue(conn, call);
    pool->stats.requeued++;
    rn__fate_returned(call);
    rn__pool_dispatch(pool);
    return;
  }
  if (rn__conn_abandon(conn, call) != 0) return;
  rn__fate_lost(call, UV_ETIMEDOUT);
}

/* Whether a caller's call waits behind call for its reply, on call's
 * connection. Walks the FIFO: only for a call whose deadline passed while
 * its reply was arriving. */
static int fate_calls_behind(const rn_call_t *call) {
  const rn_list_t *pos;
  for (pos = call->node.next; pos != &call->conn->sent; pos = pos->next) {
    const rn_call_t *c = RN_CONTAINER_OF(pos, rn_call_t, node);
    if (!c->internal && !c->done) return 1;
  }
  return 0;
}

void rn__fate_deadline(rn_timer_t *timer) {
  rn_call_t *call = timer->data;
  rn_pool_t *pool = call->pool;
  rn_conn_t *abandoned = NULL;
  const char *abandon_reason = "reply_timeout";
  const char *why = NULL;
  int status = UV_ETIMEDOUT;

  fate_check(call);
  assert(!call->done && call->parent == NULL);
  if (call->backing_off) {
    fate_cancel_backoff(call);
  } else if (call->parked) {
    call->parked = 0; /* on no list: its hedges hold it */
  } else if (call->conn == NULL) {
    rn_list_remove(&call->node); /* from pending */
    pool->pending_count--;
    /* It waited for a connection that kept failing: the failure says more
     * than the timeout. The connects were its attempt. */
    if (pool->last_connect_error != 0 && !call->was_sent) {
      status = pool->last_connect_error;
      why = rn__pool_connect_why(pool);
      if (call->attempts == 0) call->attempts = 1;
    } else if (call->was_sent && rn__store_holds(call)) {
      /* Held back from every endpoint but its key store's. */
      why = RN_KEY_WAIT_MESSAGE;
    } else if (rn__endpoint_any_held(pool, rn__loop_now(pool->loop))) {
      /* Not a silent server: the pool kept from connecting on purpose. */
      why = RN_HELD_MESSAGE;
    }
  } else if (call->state == RN_SEND_UNSENT) {
    rn__conn_unqueue(call->conn, call);
  } else if (call->blocking) {
    /* The server still blocks in it and would answer (BLPOP: pop an
     * element) for nobody: the connection goes, which ends it there. */
    abandoned = call->conn;
    abandon_reason = "blocking_timeout";
  } else if (call->state == RN_SEND_ANSWERED &&
             !rn__codec_replies_by_id(&pool->codec) &&
             !fate_calls_behind(call)) {
    /* Its reply is arriving, up to max_frame of it, for nobody now: close
     * the connection rather than carry the rest. (With calls behind it,
     * the rest is read and dropped: their own deadlines decide.) */
    abandoned = call->conn;
  }
  /* A sent call stays in its connection's FIFO: the late reply is still
   * coming and must be matched to it, then dropped. */
  fate_end(call, status, why, why != NULL ? strlen(why) : 0, 0);
  if (abandoned != NULL) {
    abandoned->close_reason = abandon_reason;
    rn__conn_close(abandoned, UV_ETIMEDOUT);
  }
}

/* ------------------------------------------------------------------------ */
/* Hedges                                                                     */

/* A hedged call's attempt_timer: no reply after the hedge delay. Another
 * attempt goes elsewhere, while the hedges allowed and the budget say so;
 * with nowhere else to go yet, it looks again after another delay. */
static void fate_hedge_due(rn_timer_t *timer) {
  rn_call_t *call = timer->data;
  rn_pool_t *pool = call->pool;
  int sent;

  fate_check(call);
  /* Only while its own attempt is out: a call waiting for a connection or
   * a retry has nothing to hedge. */
  if (call->done || call->conn == NULL || pool->closing) return;
  if (1 + call->shadows_live >= call->hedge_max ||
      !rn__retry_budget_allows(pool))
    return;
  sent = rn__hedge_send(call);
  if (sent == 0 ||
      (sent > 0 && !call->done && 1 + call->shadows_live < call->hedge_max))
    rn_timer_start(timer, call->attempt_timeout);
}

/* A shadow's attempt ended. A reply completes the parent; a failure
 * matters only once nothing of the parent is in flight any more. */
static void fate_shadow_ended(rn_call_t *shadow, int status, const char *body,
                              size_t body_len, int flags) {
  rn_call_t *parent = shadow->parent;
  assert(parent->shadows_live > 0 && parent->shadow_refs > 0);
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
      fate_cancel_backoff(parent);
    } else if (parent->conn != NULL) {
      if (parent->state == RN_SEND_UNSENT)
        rn__conn_unqueue(parent->conn, parent);
    } else if (!was_parked) {
      rn_list_remove(&parent->node); /* from pool->pending */
      parent->pool->pending_count--;
    }
    rn__call_complete(parent, status, body, body_len, flags);
    return;
  }
  if (parent->parked && parent->shadows_live == 0) {
    parent->parked = 0;
    rn__fate_lost(parent, parent->parked_error);
  }
}

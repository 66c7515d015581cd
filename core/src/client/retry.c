/* Policy retries (design §4) and the per-pool retry budget.
 *
 * Only calls that may have reached the server come here: a call that was
 * never written is moved to another connection by the pool without asking
 * (rn__pool_requeue), since the server cannot have executed it. A written
 * call is tried again only if the caller said running it twice is harmless
 * (idempotent) or it carries an rnp dedupe key, it has attempts left, the
 * budget allows, and the delay fits in its deadline. Anything else fails
 * with maybe_executed set.
 *
 * The budget bounds the load retries add: every extra attempt (a policy
 * retry or a hedge) spends a token, every success earns `ratio`, and no
 * extra attempt is made at or below half. So whatever fails, and however
 * many calls one lost connection carried, the attempts written stay under
 * (1 + ratio) x calls + tokens. */
#include "client.h"

#include <string.h>

/* A retry is allowed only while the budget is above half: in an outage
 * every call fails, the budget drains, and the load the pool adds falls
 * back to one attempt per call instead of `attempts` per call. */
int rn__retry_budget_allows(const rn_pool_t *pool) {
  return pool->budget > pool->options.retry.budget_tokens / 2;
}

static void budget_event(rn_pool_t *pool, const char *state) {
  rn_pool_event_t ev;
  memset(&ev, 0, sizeof(ev));
  ev.state = state;
  rn__pool_emit(pool, RN_EVENT_BUDGET, NULL, &ev);
}

void rn__retry_spend(rn_pool_t *pool) {
  int allowed = rn__retry_budget_allows(pool);
  pool->budget -= 1;
  if (pool->budget < 0) pool->budget = 0;
  if (allowed && !rn__retry_budget_allows(pool)) budget_event(pool, "exhausted");
}

static void budget_add(rn_pool_t *pool, double tokens) {
  const rn_retry_options_t *o = &pool->options.retry;
  int allowed;
  if (pool->budget >= o->budget_tokens) return;
  allowed = rn__retry_budget_allows(pool);
  pool->budget += tokens;
  if (pool->budget > o->budget_tokens) pool->budget = o->budget_tokens;
  if (!allowed && rn__retry_budget_allows(pool)) budget_event(pool, "restored");
}

void rn__retry_succeeded(rn_pool_t *pool) {
  budget_add(pool, pool->options.retry.budget_ratio);
}

void rn__retry_refund(rn_pool_t *pool) { budget_add(pool, 1); }

/* Full jitter: uniform in [0, min(max, initial * 2^(n-1))) after the n-th
 * attempt, so that calls that failed together spread out. */
static uint64_t retry_delay(rn_pool_t *pool, unsigned attempts) {
  const rn_retry_options_t *o = &pool->options.retry;
  uint64_t cap = o->initial_ms;
  unsigned i;
  for (i = 1; i < attempts && cap < o->max_ms; i++) cap *= 2;
  cap = RN_MIN(cap, o->max_ms);
  return (uint64_t)((double)cap * rn__random_unit(pool->loop));
}

static void retry_due(rn_timer_t *timer) {
  rn_call_t *call = timer->data;
  rn_pool_t *pool = call->pool;
  rn_list_remove(&call->node); /* from pool->retrying */
  pool->retrying_count--;
  call->backing_off = 0;
  rn__pool_requeue(pool, call);
  rn__pool_dispatch(pool);
}

void rn__retry_cancel(rn_call_t *call) {
  if (!call->backing_off) return;
  rn_timer_stop(&call->attempt_timer);
  rn_list_remove(&call->node);
  call->pool->retrying_count--;
  call->backing_off = 0;
}

static rn_classify_t retry_classify(rn_pool_t *pool, rn_call_t *call,
                                    int status, const char *body,
                                    size_t body_len) {
  rn_failure_t f;
  rn_classify_t verdict;
  if (pool->options.classify == NULL) return RN_CLASSIFY_DEFAULT;
  f.status = status;
  f.body = body;
  f.body_len = body_len;
  f.request = call->frame;
  f.request_len = call->frame_len;
  f.attempts = call->attempts;
  f.idempotent = call->idempotent;
  f.endpoint = call->endpoint != NULL ? call->endpoint->text : NULL;
  pool->callback_depth++;
  verdict = pool->options.classify(pool, &f);
  pool->callback_depth--;
  return verdict;
}

/* Puts the call aside for delay ms, then back in the pool's queue. */
static void retry_later(rn_pool_t *pool, rn_call_t *call, int err,
                        uint64_t delay) {
  rn_pool_event_t ev;

  call->state = RN_SEND_UNSENT;
  call->backing_off = 1;
  rn_list_insert_tail(&pool->retrying, &call->node);
  pool->retrying_count++;
  call->attempt_timer.cb = retry_due;
  rn_timer_start(&call->attempt_timer, delay);

  memset(&ev, 0, sizeof(ev));
  ev.reason = rn_err_name(err);
  ev.error = err;
  ev.duration = delay;
  ev.attempt = call->attempts + 1;
  rn__pool_emit(pool, RN_EVENT_RETRY, call->endpoint, &ev);
}

/* Schedules the next attempt after delay ms (0: a full-jitter delay), if
 * attempts, the budget and the deadline allow. 1 if scheduled. */
static int retry_schedule(rn_pool_t *pool, rn_call_t *call, int err,
                          uint64_t delay) {
  if (pool->closing || call->attempts >= call->max_attempts ||
      !rn__retry_budget_allows(pool))
    return 0;
  if (delay == 0) delay = retry_delay(pool, call->attempts);
  if (delay >= rn_timer_remaining(&call->deadline)) return 0;
  pool->stats.retries++;
  rn__retry_spend(pool);
  retry_later(pool, call, err, delay);
  return 1;
}

int rn__retry_error_reply(rn_pool_t *pool, rn_call_t *call, const char *body,
                          size_t body_len) {
  /* A hedge's error reply is its parent's answer: the first reply wins. */
  if (pool->options.classify == NULL || pool->closing || call->done ||
      call->parent != NULL)
    return 0;
  if (retry_classify(pool, call, RN_EREPLY, body, body_len) !=
      RN_CLASSIFY_RETRY)
    return 0;
  return retry_schedule(pool, call, RN_EREPLY, 0);
}

int rn__retry_after(rn_pool_t *pool, rn_call_t *call, uint64_t delay_ms) {
  /* A hedge's error is its parent's answer, as above. */
  if (call->done || call->parent != NULL) return 0;
  return retry_schedule(pool, call, RN_EREPLY, delay_ms);
}

void rn__retry_not_executed(rn_pool_t *pool, rn_call_t *call, int err,
                            uint64_t delay_ms, const char *body,
                            size_t body_len) {
  uint64_t delay;

  if (call->parent != NULL || call->done) {
    /* A hedge: its parent decides. A call whose deadline passed: done. */
    rn__call_complete(call, err, body, body_len, 0);
    rn__call_release(call);
    return;
  }
  if (call->shadows_live > 0) {
    call->parked = 1;
    call->parked_error = err;
    return;
  }
  /* Sent again without spending attempts or budget, as if never sent;
   * after a pause, so that a server saying "overloaded" is not asked
   * again at once. */
  delay = delay_ms > 0 ? delay_ms : retry_delay(pool, call->attempts);
  if (pool->closing || delay >= rn_timer_remaining(&call->deadline)) {
    rn__call_complete(call, err, body, body_len, 0);
    rn__call_release(call);
    return;
  }
  retry_later(pool, call, err, delay);
}

static void retry_fail(rn_call_t *call, int err) {
  rn__call_complete(call, err, NULL, 0, 0);
  rn__call_release(call);
}

void rn__retry_failed(rn_pool_t *pool, rn_call_t *call, int err) {
  rn_timer_stop(&call->attempt_timer);
  if (call->parent != NULL) { /* a hedge: its parent decides */
    rn__call_complete(call, err, NULL, 0, 0);
    rn__call_release(call);
    return;
  }
  if (call->done) { /* its deadline passed while it was out */
    rn__call_release(call);
    return;
  }
  call->was_sent = 1; /* written, then lost: it may have run */
  if (call->shadows_live > 0) {
    /* Its hedges are still out: one of them may yet answer. */
    call->parked = 1;
    call->parked_error = err;
    return;
  }
  /* The rules first: a call that may have run is retried only if it is
   * idempotent, whatever classify would say. */
  if (!(call->idempotent || call->keyed) ||
      retry_classify(pool, call, err, NULL, 0) == RN_CLASSIFY_FAIL ||
      call->done || !retry_schedule(pool, call, err, 0))
    retry_fail(call, err);
}

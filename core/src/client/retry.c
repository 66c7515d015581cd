/* The checks a policy retry must pass (docs/retry-rules.md section 1):
 * the per-pool retry budget, the backoff before the next attempt, and the
 * application's classify. fate.c decides when a call is retried and asks
 * here whether it may be, and how long it waits.
 *
 * A written call is tried again only if the caller said running it twice
 * is harmless (idempotent) or it carries an rnp dedupe key, it has
 * attempts left, the budget allows, and the delay fits in its deadline.
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
uint64_t rn__retry_delay(rn_pool_t *pool, unsigned attempts) {
  const rn_retry_options_t *o = &pool->options.retry;
  uint64_t cap = o->initial_ms;
  unsigned i;
  for (i = 1; i < attempts && cap < o->max_ms; i++) cap *= 2;
  cap = RN_MIN(cap, o->max_ms);
  return (uint64_t)((double)cap * rn__random_unit(pool->loop));
}

rn_classify_t rn__retry_classify(rn_pool_t *pool, const rn_call_t *call,
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

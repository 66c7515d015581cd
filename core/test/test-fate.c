/* A call's state machine (client/fate.c) on its own: facts reported
 * straight to it, as a connection or the pool would, and the decision
 * checked (completed and how, retried, requeued), without a server. Each
 * case is one row of docs/retry-rules.md section 1. The pool's one
 * endpoint refuses connects: a requeued call waits in the queue. */
#include "client.h"
#include "task.h"

#include <string.h>
#include <uv.h>

static rn_loop_t *loop;
static rn_pool_t *pool;
static int pool_closed, retry_events;
static rn_classify_t verdict; /* what classify answers */

typedef struct {
  int done; /* callbacks run */
  rn_result_t r;
} outcome_t;

static void on_result(rn_pool_t *p, void *data, const rn_result_t *r) {
  outcome_t *o = data;
  (void)p;
  o->done++;
  o->r = *r;
}

static void on_event(rn_pool_t *p, const rn_pool_event_t *ev) {
  (void)p;
  if (ev->type == RN_EVENT_RETRY) retry_events++;
}

static rn_classify_t classify(rn_pool_t *p, const rn_failure_t *f) {
  (void)p;
  (void)f;
  return verdict;
}

static void on_pool_closed(rn_pool_t *p) {
  (void)p;
  pool_closed++;
}

static void start(void) {
  rn_pool_options_t po;
  /* Port 1 on loopback: nobody listens, every connect is refused. */
  static const char *const eps[] = {"127.0.0.1:1"};
  ASSERT_OK(rn_loop_new(NULL, &loop));
  rn_pool_options_init(&po);
  po.codec.protocol = RN_PROTOCOL_LINE;
  po.endpoints = eps;
  po.endpoint_count = 1;
  po.on_event = on_event;
  po.classify = classify;
  po.heartbeat.interval_ms = 0;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  pool_closed = retry_events = 0;
  verdict = RN_CLASSIFY_DEFAULT;
}

static void stop(void) {
  rn_pool_close(pool, 0, on_pool_closed);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_EQ(pool_closed, 1);
  ASSERT_OK(rn_loop_free(loop));
}

/* A call as a connection hands it over once it took it off: written once
 * (SENT), on no list, its deadline running, counted active in the pool. */
static rn_call_t *written_call(outcome_t *o, int idempotent,
                               uint64_t timeout_ms) {
  rn_call_options_t opts;
  rn_call_t *call = rn__call_new(pool);
  ASSERT(call != NULL);
  ASSERT_OK(rn__call_set_frame(call, "x\n", 2));
  memset(o, 0, sizeof(*o));
  memset(&opts, 0, sizeof(opts));
  opts.idempotent = idempotent;
  opts.timeout_ms = timeout_ms;
  ASSERT_OK(rn__fate_begin(call, &opts, on_result, o));
  ASSERT_EQ(call->max_attempts, 3); /* the pool's retry.attempts */
  call->state = RN_SEND_SENT;
  call->attempts = 1;
  pool->stats.calls++;
  pool->active++;
  return call;
}

/* Sent, then the connection failed, not idempotent: fails with the
 * connection's error, maybe executed; no token spent. */
static void test_lost_not_idempotent_fails(void) {
  outcome_t o;
  double budget;
  start();
  budget = pool->budget;
  rn__fate_lost(written_call(&o, 0, 5000), UV_ECONNRESET);
  ASSERT_EQ(o.done, 1);
  ASSERT_EQ(o.r.status, UV_ECONNRESET);
  ASSERT_EQ(o.r.maybe_executed, 1);
  ASSERT_EQ(o.r.attempts, 1);
  ASSERT_EQ(retry_events, 0);
  ASSERT(pool->budget == budget);
  stop();
}

/* Idempotent: retried after a backoff, one token spent, a retry event;
 * a close while it backs off fails it ECLOSED, still maybe executed. */
static void test_lost_idempotent_retries(void) {
  outcome_t o;
  rn_call_t *call;
  double budget;
  start();
  budget = pool->budget;
  call = written_call(&o, 1, 5000);
  rn__fate_lost(call, UV_EOF);
  ASSERT_EQ(o.done, 0);
  ASSERT(call->backing_off);
  ASSERT_EQ(call->state, RN_SEND_UNSENT);
  ASSERT_EQ(pool->retrying_count, 1);
  ASSERT_EQ(pool->stats.retries, 1);
  ASSERT_EQ(retry_events, 1);
  ASSERT(pool->budget == budget - 1);
  stop();
  ASSERT_EQ(o.done, 1);
  ASSERT_EQ(o.r.status, RN_ECLOSED);
  ASSERT_EQ(o.r.maybe_executed, 1);
}

/* classify "fail" stops a retry the rules would allow. */
static void test_lost_classify_fail(void) {
  outcome_t o;
  start();
  verdict = RN_CLASSIFY_FAIL;
  rn__fate_lost(written_call(&o, 1, 5000), UV_EOF);
  ASSERT_EQ(o.done, 1);
  ASSERT_EQ(o.r.status, UV_EOF);
  ASSERT_EQ(retry_events, 0);
  stop();
}

/* A reply completes the call; an error reply is returned unless classify
 * says "retry", which is then a policy retry. */
static void test_replies(void) {
  outcome_t ok, err, again;
  rn_call_t *call;
  start();
  rn__fate_replied(written_call(&ok, 0, 5000), 0, "y", 1, 0);
  ASSERT_EQ(ok.done, 1);
  ASSERT_EQ(ok.r.status, 0);
  ASSERT_EQ(ok.r.body_len, 1);
  ASSERT_EQ(ok.r.maybe_executed, 1);

  rn__fate_replied(written_call(&err, 0, 5000), RN_EREPLY, "no", 2,
                   RN_FRAME_ERROR);
  ASSERT_EQ(err.done, 1);
  ASSERT_EQ(err.r.status, RN_EREPLY);
  ASSERT_EQ(err.r.maybe_executed, 1);

  verdict = RN_CLASSIFY_RETRY;
  call = written_call(&again, 0, 5000);
  rn__fate_replied(call, RN_EREPLY, "LOADING", 7, RN_FRAME_ERROR);
  ASSERT_EQ(again.done, 0);
  ASSERT(call->backing_off);
  ASSERT_EQ(retry_events, 1);
  stop();
  /* The error reply proved nothing ran: the close finds it unsent. */
  ASSERT_EQ(again.r.status, RN_ECLOSED);
  ASSERT_EQ(again.r.maybe_executed, 0);
}

/* Refused unrun: for good (BAD_REQUEST) it fails at once, not executed;
 * otherwise it is sent again uncounted, unless the pause does not fit in
 * the deadline. */
static void test_refused(void) {
  outcome_t bad, late, again;
  rn_call_t *call;
  double budget;
  start();
  budget = pool->budget;
  rn__fate_refused(written_call(&bad, 1, 5000), RN_ENOTEXEC, 0, 0, "bad", 3);
  ASSERT_EQ(bad.done, 1);
  ASSERT_EQ(bad.r.status, RN_ENOTEXEC);
  ASSERT_EQ(bad.r.maybe_executed, 0);

  rn__fate_refused(written_call(&late, 1, 50), RN_EOVERLOAD, 1, 1000, NULL,
                   0);
  ASSERT_EQ(late.done, 1);
  ASSERT_EQ(late.r.status, RN_EOVERLOAD);
  ASSERT_EQ(late.r.maybe_executed, 0);

  call = written_call(&again, 0, 5000);
  rn__fate_refused(call, RN_EOVERLOAD, 1, 10, NULL, 0);
  ASSERT_EQ(again.done, 0);
  ASSERT(call->backing_off);
  ASSERT_EQ(pool->stats.retries, 0); /* not a policy retry */
  ASSERT_EQ(pool->stats.not_executed, 3);
  ASSERT(pool->budget == budget);
  stop();
  ASSERT_EQ(again.r.status, RN_ECLOSED);
  ASSERT_EQ(again.r.maybe_executed, 0);
}

/* "Try later" retries an idempotent call after the server's delay; one
 * that may not run twice gets the error reply. */
static void test_try_later(void) {
  outcome_t plain, idem;
  rn_call_t *call;
  start();
  rn__fate_try_later(written_call(&plain, 0, 5000), 20, "busy", 4);
  ASSERT_EQ(plain.done, 1);
  ASSERT_EQ(plain.r.status, RN_EREPLY);
  ASSERT_EQ(plain.r.flags, RN_FRAME_ERROR);

  call = written_call(&idem, 1, 5000);
  rn__fate_try_later(call, 20, "busy", 4);
  ASSERT_EQ(idem.done, 0);
  ASSERT(call->backing_off);
  ASSERT_EQ(pool->stats.retries, 1);
  stop();
}

/* Handed back unsent: requeued at the head of the pool's queue, not
 * counted as an attempt, and a close finds it never executed. */
static void test_returned_requeues(void) {
  outcome_t o;
  rn_call_t *call;
  start();
  call = written_call(&o, 0, 5000);
  call->state = RN_SEND_UNSENT;
  call->attempts = 0;
  rn__fate_returned(call);
  ASSERT_EQ(o.done, 0);
  ASSERT_EQ(pool->pending_count, 1);
  ASSERT(pool->pending.next == &call->node);
  stop();
  ASSERT_EQ(o.done, 1);
  ASSERT_EQ(o.r.status, RN_ECLOSED);
  ASSERT_EQ(o.r.maybe_executed, 0);
  ASSERT_EQ(o.r.attempts, 0);
}

/* The deadline of a call backing off ends it with ETIMEDOUT; the attempt
 * lost before makes it maybe executed. */
static void test_deadline_while_backing_off(void) {
  outcome_t o;
  rn_call_t *call;
  start();
  call = written_call(&o, 1, 5000);
  rn__fate_lost(call, UV_EOF);
  ASSERT(call->backing_off);
  rn__fate_deadline(&call->deadline);
  ASSERT_EQ(o.done, 1);
  ASSERT_EQ(o.r.status, UV_ETIMEDOUT);
  ASSERT_EQ(o.r.maybe_executed, 1);
  ASSERT_EQ(pool->retrying_count, 0);
  stop();
}

TEST_LIST_START
  TEST_ENTRY(test_lost_not_idempotent_fails)
  TEST_ENTRY(test_lost_idempotent_retries)
  TEST_ENTRY(test_lost_classify_fail)
  TEST_ENTRY(test_replies)
  TEST_ENTRY(test_refused)
  TEST_ENTRY(test_try_later)
  TEST_ENTRY(test_returned_requeues)
  TEST_ENTRY(test_deadline_while_backing_off)
TEST_LIST_END

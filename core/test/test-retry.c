/* The retry rules of design §4 against a server that counts what it
 * executed: a request that reached the server and lost its connection is
 * sent again only if it is idempotent, within its attempts and the retry
 * budget; the budget drains in an outage and refills with successes. */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"

#include <string.h>
#include <uv.h>

static rn_loop_t *loop;
static rn_server_t *server;
static rn_pool_t *pool;
static char endpoint[96];
static int executed;     /* requests the server handled */
static int answer_from;  /* the server answers from this execution on */
static int budget_exhausted, budget_restored, retry_events, overloads;
static rn_request_t *held;      /* the first request, never answered */
static int hold_first;
static int hold_all;            /* requests are kept, not answered */
static rn_request_t *kept[8];
static unsigned last_retry_attempt;

/* Executes (counts) every request, then either answers it or drops the
 * connection: the client sees a failure after its request was sent. */
static void on_request(rn_server_t *srv, rn_request_t *req, const char *body,
                       size_t len) {
  (void)srv;
  executed++;
  if (hold_all) {
    ASSERT_LE(executed, 8);
    kept[executed - 1] = req;
    return;
  }
  if (hold_first && executed == 1) {
    held = req;
    return;
  }
  if (executed < answer_from) {
    rn_request_drop(req);
    return;
  }
  test_reply(req, body, len);
}

static void on_event(rn_pool_t *p, const rn_pool_event_t *ev) {
  (void)p;
  if (ev->type == RN_EVENT_OVERLOAD) {
    ASSERT_EQ(ev->error, RN_EOVERLOAD);
    if (strcmp(ev->reason, "max_in_flight") == 0) overloads++;
  } else if (ev->type == RN_EVENT_BUDGET) {
    if (strcmp(ev->state, "exhausted") == 0) budget_exhausted++;
    if (strcmp(ev->state, "restored") == 0) budget_restored++;
  } else if (ev->type == RN_EVENT_RETRY) {
    retry_events++;
    last_retry_attempt = ev->attempt;
    ASSERT(ev->duration <= 20); /* retry.max below */
    ASSERT(ev->endpoint != NULL);
  }
}

static unsigned opt_max_in_flight, opt_min_idle;

static void start(unsigned attempts, double tokens, double ratio) {
  rn_pool_options_t po;

  ASSERT_OK(rn_loop_new(NULL, &loop));
  server = test_start_server(loop, RN_PROTOCOL_LINE, on_request,
                             "127.0.0.1:0", endpoint);
  test_pool_options(&po, endpoint, RN_PROTOCOL_LINE);
  po.heartbeat.interval_ms = 0; /* no handshake: connects never fail here */
  po.reconnect.initial_ms = 1;
  po.reconnect.max_ms = 5;
  po.retry.attempts = attempts;
  po.retry.initial_ms = 2;
  po.retry.max_ms = 20;
  po.retry.budget_tokens = tokens;
  po.retry.budget_ratio = ratio;
  po.on_event = on_event;
  po.max_in_flight = opt_max_in_flight;
  po.min_idle = opt_min_idle;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  executed = 0;
  budget_exhausted = budget_restored = retry_events = overloads = 0;
  held = NULL;
}

static void finish(void) {
  if (held != NULL) ASSERT_OK(rn_request_reply(held, "late\n", 5));
  held = NULL;
  hold_first = 0;
  opt_max_in_flight = opt_min_idle = 0;
  rn_pool_close(pool, 0, NULL);
  rn_server_close(server, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

static uint64_t attempt_timeout;

static void run_call(int idempotent, unsigned attempts, test_outcome_t *o) {
  rn_call_options_t co;
  memset(&co, 0, sizeof(co));
  memset(o, 0, sizeof(*o));
  co.timeout_ms = 5000;
  co.idempotent = idempotent;
  co.attempts = attempts;
  co.attempt_timeout_ms = attempt_timeout;
  ASSERT_OK(rn_pool_call(pool, "x\n", 2, &co, test_record, o));
  RUN_UNTIL(rn_loop_uv(loop), o->fired, 10000);
  ASSERT_EQ(o->fired, 1);
}

/* The call ran n attempts, each executed and its connection lost: it
 * failed so, maybe executed (a macro: a failure names the case's line). */
#define LOST_EACH_TIME(o, n)                                                  \
  do {                                                                        \
    ASSERT_EQ(executed, (n));                                                 \
    ASSERT_EQ((o).attempts, (n));                                             \
    ASSERT_EQ((o).maybe_executed, 1);                                         \
    ASSERT((o).status == UV_EOF || (o).status == UV_ECONNRESET);              \
  } while (0)

/* Sent, connection lost, not idempotent: fails, maybe executed, and ran
 * exactly once. */
static void test_not_idempotent_runs_once(void) {
  test_outcome_t o;
  start(3, 10, 0.1);
  answer_from = 1000;
  run_call(0, 0, &o);
  LOST_EACH_TIME(o, 1);
  ASSERT_EQ(retry_events, 0);
  finish();
}

/* Idempotent: tried again until the server answers, within attempts. */
static void test_idempotent_retried_until_answered(void) {
  test_outcome_t o;
  start(3, 10, 0.1);
  answer_from = 3; /* the first two executions lose their connection */
  run_call(1, 0, &o);
  ASSERT_OK(o.status);
  ASSERT_EQ(executed, 3);
  ASSERT_EQ(o.attempts, 3);
  ASSERT_EQ(retry_events, 2);
  ASSERT_EQ(last_retry_attempt, 3);
  finish();
}

/* Idempotent, but out of attempts (the call's own limit wins). */
static void test_attempts_bound(void) {
  test_outcome_t o;
  start(5, 100, 0.1);
  answer_from = 1000;
  run_call(1, 2, &o);
  LOST_EACH_TIME(o, 2);
  finish();
}

/* The budget: 4 tokens; each retry spends one, and none is made at or
 * below half (2): two retries, then the budget says no. Successes refill
 * it. */
static void test_budget_drains_and_refills(void) {
  test_outcome_t o;
  start(5, 4, 1.0);
  answer_from = 1000;
  run_call(1, 0, &o);
  ASSERT_EQ(executed, 3); /* two retries, then the budget said no */
  ASSERT_EQ(o.attempts, 3);
  ASSERT_EQ(budget_exhausted, 1);
  ASSERT_EQ(budget_restored, 0);

  /* Still exhausted: a fresh idempotent call gets a single attempt, and
   * a failure that is not retried spends nothing. */
  run_call(1, 0, &o);
  ASSERT_EQ(executed, 4);
  ASSERT_EQ(o.attempts, 1);

  /* Healthy again: a success earns a whole token, 3 is above half. */
  answer_from = 0;
  run_call(0, 0, &o);
  ASSERT_OK(o.status);
  ASSERT_EQ(budget_restored, 1);
  finish();
}

/* With retries off (attempts 1) an idempotent call is not retried. */
static void test_retry_off(void) {
  test_outcome_t o;
  start(1, 10, 0.1);
  answer_from = 1000;
  run_call(1, 0, &o);
  ASSERT_EQ(executed, 1);
  ASSERT_EQ(o.attempts, 1);
  finish();
}

/* An attempt that gets no reply in attempt_timeout is abandoned: an
 * idempotent call tries again (and the answer that finally comes for the
 * abandoned one is dropped), others fail with ETIMEDOUT, maybe executed. */
static void test_attempt_timeout(void) {
  test_outcome_t o;
  uint64_t t0;
  hold_first = 1;
  start(3, 10, 0.1);
  answer_from = 0;
  attempt_timeout = 100;
  t0 = uv_hrtime();
  run_call(1, 0, &o);
  ASSERT_OK(o.status);
  ASSERT_GE(o.attempts, 2);
  ASSERT_GE((uv_hrtime() - t0) / 1000000, 100);
  /* Released now: its reply reaches a tombstone, not a call. */
  ASSERT_OK(rn_request_reply(held, "late\n", 5));
  held = NULL;
  run_call(1, 0, &o);
  ASSERT_OK(o.status);
  ASSERT_EQ(o.attempts, 1);
  finish();

  hold_first = 1;
  start(3, 10, 0.1);
  run_call(0, 0, &o);
  ASSERT_EQ(o.status, UV_ETIMEDOUT);
  ASSERT_EQ(o.maybe_executed, 1);
  ASSERT_EQ(o.attempts, 1);
  ASSERT_EQ(executed, 1);
  attempt_timeout = 0;
  finish();
}

static void on_never(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  (void)r;
  *(int *)data += 1;
}

/* With max_in_flight and every endpoint full, a call fails at once. */
static void test_max_in_flight(void) {
  rn_call_options_t co;
  int fired = 0;
  hold_first = 1;
  opt_max_in_flight = 1;
  start(3, 10, 0.1);
  memset(&co, 0, sizeof(co));
  ASSERT_OK(rn_pool_call(pool, "h\n", 2, &co, on_never, &fired));
  RUN_UNTIL(rn_loop_uv(loop), executed != 0, 10000);
  ASSERT_EQ(rn_pool_call(pool, "x\n", 2, &co, on_never, &fired),
            RN_EOVERLOAD);
  ASSERT_EQ(overloads, 1);
  ASSERT_EQ(fired, 0);
  ASSERT_OK(rn_request_reply(held, "h\n", 2));
  held = NULL;
  RUN_UNTIL(rn_loop_uv(loop), fired != 0, 10000);
  /* Room again. */
  ASSERT_OK(rn_pool_call(pool, "y\n", 2, &co, on_never, &fired));
  RUN_UNTIL(rn_loop_uv(loop), fired != 1, 10000);
  finish();
}

/* A server crash loses every connection with calls on it at once. Each
 * retry spends a token, so the budget, not the size of the crash, bounds
 * the extra attempts: 4 tokens allow 2 of the 4 idempotent calls lost to
 * be retried; the other two fail, maybe executed. */
static void test_crash_bounded_by_budget(void) {
  rn_pool_stats_t st;
  test_outcome_t o[4];
  rn_call_options_t co;
  int i, ok = 0;

  opt_min_idle = 4;
  start(3, 4, 0);
  RUN_UNTIL(rn_loop_uv(loop), test_pool_stats(pool).idle >= 4, 10000);

  /* One call on each connection; the server takes them and dies. */
  executed = 0;
  hold_all = 1;
  held = NULL;
  memset(&co, 0, sizeof(co));
  co.timeout_ms = 5000;
  co.idempotent = 1;
  memset(o, 0, sizeof(o));
  for (i = 0; i < 4; i++)
    ASSERT_OK(rn_pool_call(pool, "x\n", 2, &co, test_record, &o[i]));
  RUN_UNTIL(rn_loop_uv(loop), executed >= 4, 10000);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.idle, 0);
  hold_all = 0;
  answer_from = 0;
  rn_server_close(server, NULL); /* every connection at once */
  for (i = 0; i < 4; i++) rn_request_drop(kept[i]);
  server = test_start_server(loop, RN_PROTOCOL_LINE, on_request, endpoint,
                             endpoint); /* restarted, same port */
  for (i = 0; i < 4; i++)
    RUN_UNTIL(rn_loop_uv(loop), o[i].fired, 10000);
  for (i = 0; i < 4; i++) {
    if (o[i].status == 0) {
      ok++;
      ASSERT_EQ(o[i].attempts, 2);
    } else {
      ASSERT_EQ(o[i].attempts, 1);
      ASSERT(o[i].maybe_executed);
    }
  }
  ASSERT_EQ(ok, 2);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.retries, 2);
  ASSERT(st.budget > 1.5 && st.budget < 2.5); /* two tokens spent */
  finish();
}

/* Closing the pool from the callback of a call whose deadline came while
 * it was sent: the close fails its connection, which must not free the
 * call under the deadline handler that is running the callback (a double
 * free found in review). */
static void on_result_close(rn_pool_t *p, void *data, const rn_result_t *r) {
  test_record(p, data, r);
  rn_pool_close(p, 0, NULL);
}

static void test_close_in_deadline_callback(void) {
  test_outcome_t o;
  rn_call_options_t co;
  int i;
  start(3, 10, 0.1);
  hold_all = 1;
  memset(&co, 0, sizeof(co));
  memset(&o, 0, sizeof(o));
  co.timeout_ms = 200;
  co.idempotent = 1;
  ASSERT_OK(rn_pool_call(pool, "x\n", 2, &co, on_result_close, &o));
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 10000);
  ASSERT_EQ(o.fired, 1);
  ASSERT_EQ(o.status, UV_ETIMEDOUT);
  ASSERT_EQ(o.maybe_executed, 1);
  hold_all = 0;
  for (i = 0; i < executed; i++) rn_request_drop(kept[i]);
  rn_server_close(server, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

TEST_LIST_START
  TEST_ENTRY(test_not_idempotent_runs_once)
  TEST_ENTRY(test_idempotent_retried_until_answered)
  TEST_ENTRY(test_attempts_bound)
  TEST_ENTRY(test_budget_drains_and_refills)
  TEST_ENTRY(test_retry_off)
  TEST_ENTRY(test_attempt_timeout)
  TEST_ENTRY(test_max_in_flight)
  TEST_ENTRY(test_crash_bounded_by_budget)
  TEST_ENTRY(test_close_in_deadline_callback)
TEST_LIST_END

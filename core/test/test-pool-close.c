/* Closing a pool from inside its own callbacks: from the handler of every
 * event type, with and without a drain, while calls are pending, in
 * flight, backing off before a retry and hedged. Every accepted call's
 * callback must run exactly once and the pool must be freed only after
 * the last of them (ASan and valgrind see the rest).
 *
 * Regression (issue 14): a "budget exhausted" event fires inside the retry
 * scheduler, between its check for a closing pool and the call joining the
 * retry list; a handler that closed the pool there failed the list, then
 * the call joined it, the pool was freed and the retry timer wrote into
 * freed memory. The hedge variant parked its parent call forever. */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"

#include <arpa/inet.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#define CALLS 60
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static rn_loop_t *loop;
static rn_server_t *server;
static rn_pool_t *pool;
static rn_event_type_t close_on;
static uint64_t close_drain;
static int closed_from_handler, pool_closed;
static int fired[CALLS];
static int accepted[CALLS];
static rn_request_t *held[4 * CALLS]; /* answered only at the end */
static int held_count;

/* "drop": the connection is dropped after the request arrived (a sent
 * call fails: retries); "hold": never answered (hedges); else echoed. */
static void on_request(rn_server_t *srv, rn_request_t *req, const char *body,
                       size_t len) {
  (void)srv;
  if (len >= 4 && memcmp(body, "drop", 4) == 0) {
    rn_request_drop(req);
    return;
  }
  if (len >= 4 && memcmp(body, "hold", 4) == 0) {
    ASSERT_LT(held_count, (int)ARRAY_SIZE(held));
    held[held_count++] = req;
    return;
  }
  test_reply(req, body, len);
}

static void on_pool_closed(rn_pool_t *p) {
  (void)p;
  pool_closed++;
}

static void on_event(rn_pool_t *p, const rn_pool_event_t *ev) {
  if (ev->type != close_on || closed_from_handler) return;
  closed_from_handler = 1;
  rn_pool_close(p, close_drain, on_pool_closed);
  rn_pool_close(p, close_drain, on_pool_closed); /* a second is ignored */
}

static void on_result(rn_pool_t *p, void *data, const rn_result_t *r) {
  int i = (int)(intptr_t)data;
  (void)p;
  (void)r;
  ASSERT_OK(pool_closed); /* every call's callback before the close's */
  fired[i]++;
}

static int refused_port(void) {
  uv_tcp_t t;
  struct sockaddr_in addr;
  struct sockaddr_storage ss;
  int len = sizeof(ss), port;
  /* A port just freed: nobody listens there now. */
  ASSERT_OK(uv_tcp_init(rn_loop_uv(loop), &t));
  ASSERT_OK(uv_ip4_addr("127.0.0.1", 0, &addr));
  ASSERT_OK(uv_tcp_bind(&t, (struct sockaddr *)&addr, 0));
  ASSERT_OK(uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len));
  port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_NOWAIT);
  return port;
}

static void run_case(rn_event_type_t type, uint64_t drain, const char *mix) {
  rn_pool_options_t po;
  rn_call_options_t co;
  const char *eps[2];
  char endpoint[96], refused[64];
  int i;

  fprintf(stderr, "   close on event %d, drain %d, %s calls\n", (int)type,
          (int)drain, mix);
  ASSERT_OK(rn_loop_new(NULL, &loop));
  server = test_start_server(loop, RN_PROTOCOL_LINE, on_request,
                             "127.0.0.1:0", endpoint);
  snprintf(refused, sizeof(refused), "127.0.0.1:%d", refused_port());
  rn_pool_options_init(&po);
  eps[0] = endpoint;
  eps[1] = refused;
  po.endpoints = eps;
  po.endpoint_count = 2;
  po.codec.protocol = RN_PROTOCOL_LINE;
  po.heartbeat.interval_ms = 0;
  po.timeout_ms = 400;
  po.size = 4;
  po.max_pending = CALLS - 10; /* the last calls are refused: OVERLOAD */
  po.reconnect.initial_ms = 5;
  po.reconnect.max_ms = 20;
  po.retry.attempts = 3;
  /* Retries wait longer than a close takes: a call put on the retry list
   * behind the close's back would outlive the pool. */
  po.retry.initial_ms = 40;
  po.retry.max_ms = 80;
  po.retry.budget_tokens = 6; /* a few retries or hedges, then exhausted */
  po.retry.budget_ratio = 0.1;
  po.hedge.delay_ms = 10;
  po.hedge.max = 2;
  po.eject.failures = 1;
  po.eject.time_ms = 50;
  po.eject.max_time_ms = 100;
  po.eject.max_share = 0.5;
  po.resolve_ttl_ms = 0;
  po.on_event = on_event;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  close_on = type;
  close_drain = drain;
  closed_from_handler = pool_closed = 0;
  memset(fired, 0, sizeof(fired));
  memset(accepted, 0, sizeof(accepted));

  memset(&co, 0, sizeof(co));
  for (i = 0; i < CALLS; i++) {
    char body[32];
    rn_buf_t frame;
    int err, n;
    /* The mix decides which event comes first: retries of dropped calls
     * exhaust the budget inside the retry scheduler, hedges of held ones
     * inside the hedge timer. Every third call is not idempotent. */
    n = snprintf(body, sizeof(body), "%s-%d",
                 i % 3 == 2 ? "echo" : mix, i);
    co.idempotent = i % 3 != 2;
    rn_buf_init(&frame);
    ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frame, body, (size_t)n));
    err = rn_pool_call(pool, frame.base, frame.len, &co, on_result,
                       (void *)(intptr_t)i);
    rn_buf_free(&frame);
    if (err == 0)
      accepted[i] = 1;
    else
      ASSERT(err == RN_EOVERLOAD || err == RN_ECLOSED);
  }
  /* Until the close is over. Calls end by their deadline at the latest,
   * so the pool is closed well within 5 s, or the handler never ran. */
  RUN_UNTIL(rn_loop_uv(loop), pool_closed, 5000);
  ASSERT_EQ(closed_from_handler, 1);
  ASSERT_EQ(pool_closed, 1);
  for (i = 0; i < CALLS; i++) ASSERT_EQ(fired[i], accepted[i]);
  for (i = 0; i < held_count; i++)
    ASSERT_OK(rn_request_reply(held[i], "late\n", 5));
  held_count = 0;
  rn_server_close(server, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

static void test_close_from_every_event_handler(void) {
  static const rn_event_type_t types[] = {
      RN_EVENT_STATE,    RN_EVENT_EJECT,    RN_EVENT_RETRY,
      RN_EVENT_BUDGET,   RN_EVENT_OVERLOAD, RN_EVENT_RESOLVE};
  static const char *const mixes[] = {"drop", "hold"};
  size_t t, m;
  for (t = 0; t < ARRAY_SIZE(types); t++)
    for (m = 0; m < 2; m++) {
      run_case(types[t], 0, mixes[m]);
      run_case(types[t], 100, mixes[m]);
    }
}

static void close_pool_when_connecting(rn_pool_t *p,
                                       const rn_pool_event_t *ev) {
  if (ev->type != RN_EVENT_STATE || ev->connection == 0) return;
  if (strcmp(ev->state, "connecting") == 0) rn_pool_close(p, 0, NULL);
}

/* A unix endpoint connects synchronously. The "connecting" event went out
 * before the connect started: a handler closing the pool there freed the
 * connection, the connect then used it, and the call's callback ran inside
 * rn_pool_call(). */
static void test_unix_connect_started_after_the_event(void) {
  rn_server_options_t so;
  rn_pool_options_t po;
  test_outcome_t o;
  char path[64], listen[80];

  loop = test_loop_open();
  snprintf(path, sizeof(path), "/tmp/rn-test-regress-%d.sock", (int)getpid());
  unlink(path);
  snprintf(listen, sizeof(listen), "unix:%s", path);
  rn_server_options_init(&so);
  so.listen = listen;
  so.codec.protocol = RN_PROTOCOL_LINE;
  so.on_request = test_echo;
  ASSERT_OK(rn_server_new(loop, &so, &server));
  test_pool_line_options(&po, listen);
  po.on_event = close_pool_when_connecting;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  test_call(pool, "x", 0, &o); /* checks the callback has not run yet */
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 2000);
  ASSERT_EQ(o.fired, 1);
  ASSERT_EQ(o.status, RN_ECLOSED);
  rn_server_close(server, NULL);
  test_loop_close(loop);
}

static int close_when_connecting;
static int close_order; /* test_next_order() when the pool closed */

static void note_close_order(rn_pool_t *p) {
  (void)p;
  pool_closed++;
  close_order = test_next_order();
}

static void close_on_connecting(rn_pool_t *p, const rn_pool_event_t *ev) {
  if (ev->type != RN_EVENT_STATE || ev->connection == 0) return;
  if (close_when_connecting && strcmp(ev->state, "connecting") == 0) {
    close_when_connecting = 0;
    rn_pool_close(p, 5000, note_close_order);
  }
}

/* A close asked for while calls were being placed runs from a timer. An
 * abort in between took the close as done: it closed the connections and
 * stopped that timer, so the waiting calls were never failed. The pool
 * then finished and was freed with the calls' deadlines still in the
 * loop's timer heap, and their expiry wrote into the freed pool. */
static void test_abort_after_a_deferred_close(void) {
  test_peer_t a;
  test_outcome_t o;
  rn_pool_options_t po;

  loop = test_loop_open();
  test_peer_start(&a, rn_loop_uv(loop), test_peer_answer_lines);
  test_pool_line_options(&po, a.endpoint);
  po.size = 1;
  po.on_event = close_on_connecting;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  close_when_connecting = 1;
  pool_closed = 0;
  /* Placing it opens a connection; the event closes the pool (deferred). */
  test_call(pool, "x", 300, &o);
  ASSERT_EQ(close_when_connecting, 0);
  rn_pool_abort(pool, NULL);
  RUN_UNTIL(rn_loop_uv(loop), o.fired && pool_closed, 2000);
  ASSERT_EQ(o.fired, 1);
  ASSERT_EQ(o.status, RN_ECLOSED);
  ASSERT_LT(o.order, close_order);

  test_peer_stop(&a);
  test_loop_close(loop);
}

/* ------------------------------------------------------------------------ */
/* The close callback comes promptly however the loop is driven            */

/* The loop is driven as an application drives it: uv_run(UV_RUN_ONCE)
 * turn after turn, or one uv_run(UV_RUN_DEFAULT), with no timer of the
 * test keeping the poll short. The server runs on a loop of its own in
 * another thread, so the pool and the test's keep-alive are all this loop
 * holds: a DEFAULT run must end once the close is over, and must not end
 * before. A watchdog (unreferenced: it keeps nothing alive) fails the
 * case if the callback has not come 1.5 s after the close. Closed from
 * outside, the pool has a call in flight that the server answers 50 ms
 * late: a drain waits for it, no drain fails it.
 *
 * Why: two cases of the old test-regress-pool2.c (removed_endpoint_ejected,
 * all_ejected_read_as_all_full) each waited 2 s for their close callback.
 * It had run 0.07 ms after rn_pool_close, in the timer phase at the start
 * of the wait's first uv_run(UV_RUN_ONCE); that run then went on to poll,
 * as a ONCE run does, and with nothing else due it blocked until the
 * wait's own 2 s deadline. The wait looked at its condition only between
 * runs. (The timer heap now keeps such a turn's poll from blocking:
 * test_close_unconnected_pool_does_not_block_the_turn.) */

enum close_from {
  CLOSE_FROM_OUTSIDE,      /* the application, between turns */
  CLOSE_FROM_HOUSEKEEPING, /* the "closed" event of an idle close */
  CLOSE_FROM_CALL_CB,      /* a call's callback */
  CLOSE_FROM_CONNECTING    /* the "connecting" event */
};

typedef struct {
  uv_thread_t thread;
  rn_loop_t *loop;
  rn_server_t *server;
  uv_async_t stop;
  uv_timer_t slow_timer; /* answers slow_request 50 ms after it came */
  rn_request_t *slow_request;
  char endpoint[96];
} far_server_t;

/* One at a time, used by its thread until stopped. */
static far_server_t *far_running;

static void far_server_answer_slow(uv_timer_t *t) {
  far_server_t *f = t->data;
  test_reply(f->slow_request, "slow", 4);
  f->slow_request = NULL;
}

/* Echoes, but "slow" 50 ms late: a call a drain has to wait for. */
static void far_server_on_request(rn_server_t *srv, rn_request_t *req,
                                  const char *body, size_t len) {
  far_server_t *f = far_running;
  if (len >= 4 && memcmp(body, "slow", 4) == 0) {
    ASSERT(f->slow_request == NULL);
    f->slow_request = req;
    ASSERT_OK(uv_timer_start(&f->slow_timer, far_server_answer_slow, 50, 0));
    return;
  }
  test_echo(srv, req, body, len);
}

static void far_server_stop_cb(uv_async_t *a) {
  far_server_t *f = a->data;
  rn_server_close(f->server, NULL);
  uv_close((uv_handle_t *)a, NULL);
  uv_close((uv_handle_t *)&f->slow_timer, NULL);
}

static void far_server_run(void *arg) {
  far_server_t *f = arg;
  uv_run(rn_loop_uv(f->loop), UV_RUN_DEFAULT);
}

static void far_server_start(far_server_t *f) {
  far_running = f;
  f->loop = test_loop_open();
  f->server = test_start_server(f->loop, RN_PROTOCOL_LINE,
                                far_server_on_request, "127.0.0.1:0",
                                f->endpoint);
  ASSERT_OK(uv_async_init(rn_loop_uv(f->loop), &f->stop, far_server_stop_cb));
  f->stop.data = f;
  ASSERT_OK(uv_timer_init(rn_loop_uv(f->loop), &f->slow_timer));
  f->slow_timer.data = f;
  f->slow_request = NULL;
  ASSERT_OK(uv_thread_create(&f->thread, far_server_run, f));
}

static void far_server_stop(far_server_t *f) {
  ASSERT_OK(uv_async_send(&f->stop));
  ASSERT_OK(uv_thread_join(&f->thread));
  ASSERT_OK(rn_loop_free(f->loop));
}

static struct {
  enum close_from from;
  uint64_t drain;
  uv_async_t keepalive; /* the application's own reason to run, until the
                           close: referenced, never wakes the poll */
  uv_timer_t watchdog;
  uint64_t closed_ns;   /* uv_hrtime() at rn_pool_close */
  uint64_t callback_ns; /* uv_hrtime() in the close callback */
  test_outcome_t first, second, slow;
} prompt;

static void prompt_watchdog(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "close callback not run 1500 ms after rn_pool_close\n");
  abort();
}

static void prompt_closed(rn_pool_t *p) {
  (void)p;
  pool_closed++;
  prompt.callback_ns = uv_hrtime();
  uv_close((uv_handle_t *)&prompt.watchdog, NULL);
}

static void prompt_close(rn_pool_t *p) {
  uv_loop_t *uv = rn_loop_uv(loop);
  prompt.closed_ns = uv_hrtime();
  rn_pool_close(p, prompt.drain, prompt_closed);
  uv_close((uv_handle_t *)&prompt.keepalive, NULL);
  ASSERT_OK(uv_timer_init(uv, &prompt.watchdog));
  ASSERT_OK(uv_timer_start(&prompt.watchdog, prompt_watchdog, 1500, 0));
  uv_unref((uv_handle_t *)&prompt.watchdog);
}

static void prompt_on_event(rn_pool_t *p, const rn_pool_event_t *ev) {
  if (ev->type != RN_EVENT_STATE || ev->connection == 0 ||
      prompt.closed_ns != 0)
    return;
  if (prompt.from == CLOSE_FROM_HOUSEKEEPING &&
      strcmp(ev->state, "closed") == 0 && ev->reason != NULL &&
      strcmp(ev->reason, "idle_timeout") == 0)
    prompt_close(p);
  if (prompt.from == CLOSE_FROM_CONNECTING &&
      strcmp(ev->state, "connecting") == 0)
    prompt_close(p);
}

static void prompt_on_result(rn_pool_t *p, void *data, const rn_result_t *r) {
  test_record(p, data, r);
  if (prompt.from == CLOSE_FROM_CALL_CB && data == &prompt.first)
    prompt_close(p);
}

static void prompt_call(const char *body, test_outcome_t *o) {
  rn_call_options_t co;
  rn_buf_t frame;
  memset(o, 0, sizeof(*o));
  memset(&co, 0, sizeof(co));
  rn_buf_init(&frame);
  ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frame, body, strlen(body)));
  ASSERT_OK(rn_pool_call(pool, frame.base, frame.len, &co, prompt_on_result,
                         o));
  rn_buf_free(&frame);
}

static void prompt_case(enum close_from from, uint64_t drain,
                        uv_run_mode mode) {
  static const char *const names[] = {"outside", "housekeeping",
                                      "call callback", "connecting"};
  far_server_t far;
  rn_pool_options_t po;
  uv_loop_t *uv;
  uint64_t returned_ns;
  double ms, run_ms;

  loop = test_loop_open();
  uv = rn_loop_uv(loop);
  far_server_start(&far);
  memset(&prompt, 0, sizeof(prompt));
  prompt.from = from;
  prompt.drain = drain;
  pool_closed = 0;
  ASSERT_OK(uv_async_init(uv, &prompt.keepalive, NULL));
  test_pool_line_options(&po, far.endpoint);
  po.size = 1;
  po.idle_timeout_ms = 100;
  po.on_event = prompt_on_event;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  prompt_call("first", &prompt.first);
  /* Pipelined behind the first: in flight when its callback closes. (The
   * "connecting" event closed the pool inside the first call already.) */
  if (from != CLOSE_FROM_CONNECTING)
    prompt_call("second", &prompt.second);
  else
    prompt.second.fired = 1;
  if (from == CLOSE_FROM_OUTSIDE) {
    RUN_UNTIL(uv, prompt.second.fired, 2000);
    /* In flight at the close: a drain waits the 50 ms for its reply. */
    prompt_call("slow", &prompt.slow);
    RUN_UNTIL(uv, test_pool_stats(pool).in_flight == 1, 2000);
    prompt_close(pool);
  } else {
    prompt.slow.fired = 1;
  }
  if (mode == UV_RUN_DEFAULT) {
    uv_run(uv, UV_RUN_DEFAULT);
  } else {
    while (!pool_closed && uv_run(uv, UV_RUN_ONCE) != 0) {
    }
  }
  returned_ns = uv_hrtime();
  /* The run ended (DEFAULT) or the loop had nothing left (ONCE) before the
   * close was over: nothing kept the loop alive for it. */
  ASSERT_EQ(pool_closed, 1);
  ASSERT_EQ(prompt.first.fired, 1);
  ASSERT_EQ(prompt.second.fired, 1);
  ASSERT_EQ(prompt.slow.fired, 1);
  if (from == CLOSE_FROM_OUTSIDE)
    ASSERT_EQ(prompt.slow.status, drain != 0 ? 0 : RN_ECLOSED);
  ms = (double)(prompt.callback_ns - prompt.closed_ns) / 1e6;
  run_ms = (double)(returned_ns - prompt.callback_ns) / 1e6;
  fprintf(stderr,
          "   close from %s, drain %d, %s: callback after %.2f ms, "
          "uv_run returned %.2f ms later\n",
          names[from], (int)drain, mode == UV_RUN_DEFAULT ? "DEFAULT" : "ONCE",
          ms, run_ms);
  ASSERT_LT(ms, 500.0);
  /* Once the pool is gone nothing of it may hold the loop (DEFAULT) or
   * block the turn that ran the callback (ONCE). */
  ASSERT_LT(run_ms, 500.0);
  far_server_stop(&far);
  test_loop_close(loop);
}

static void test_close_callback_prompt_under_run_once_and_default(void) {
  static const enum close_from froms[] = {
      CLOSE_FROM_OUTSIDE, CLOSE_FROM_HOUSEKEEPING, CLOSE_FROM_CALL_CB,
      CLOSE_FROM_CONNECTING};
  size_t f;
  for (f = 0; f < ARRAY_SIZE(froms); f++) {
    prompt_case(froms[f], 0, UV_RUN_ONCE);
    prompt_case(froms[f], 1000, UV_RUN_ONCE);
    prompt_case(froms[f], 0, UV_RUN_DEFAULT);
    prompt_case(froms[f], 1000, UV_RUN_DEFAULT);
  }
}

/* Regression: closing a pool that never opened a connection took until the
 * loop's next unrelated wake-up (2 s in test-batch's bad-input case). The
 * close callback ran at once, in the timer phase at the start of the
 * caller's next uv_run(UV_RUN_ONCE), which then blocked in its poll (see
 * test-timer's test_due_timer_does_not_block_the_once_turn). The unrelated
 * wake-up is a 3 s uv timer; an async handle is the application's own
 * descriptor. One ONCE run must see the callback and return, with and
 * without a drain (nothing to drain). */
static void unrelated_wake_up(uv_timer_t *t) { (void)t; }

static void test_close_unconnected_pool_does_not_block_the_turn(void) {
  static const uint64_t drains[] = {0, 1000};
  size_t i;
  for (i = 0; i < ARRAY_SIZE(drains); i++) {
    rn_pool_options_t po;
    uv_timer_t wake;
    uv_async_t fd;
    uv_loop_t *uv;
    uint64_t t0;
    loop = test_loop_open();
    uv = rn_loop_uv(loop);
    ASSERT_OK(uv_timer_init(uv, &wake));
    ASSERT_OK(uv_timer_start(&wake, unrelated_wake_up, 3000, 0));
    ASSERT_OK(uv_async_init(uv, &fd, NULL));
    test_pool_line_options(&po, "127.0.0.1:9"); /* never dialled */
    ASSERT_OK(rn_pool_new(loop, &po, &pool));
    pool_closed = 0;
    t0 = uv_hrtime();
    rn_pool_close(pool, drains[i], on_pool_closed);
    ASSERT_EQ(pool_closed, 0); /* never from inside rn_pool_close */
    uv_run(uv, UV_RUN_ONCE);
    ASSERT_EQ(pool_closed, 1);
    ASSERT_LT((uv_hrtime() - t0) / 1000000, 1000);
    ASSERT(uv_is_active((uv_handle_t *)&wake)); /* it never woke the run */
    uv_close((uv_handle_t *)&wake, NULL);
    uv_close((uv_handle_t *)&fd, NULL);
    test_loop_close(loop);
  }
}

TEST_LIST_START
  TEST_ENTRY(test_close_from_every_event_handler)
  TEST_ENTRY(test_unix_connect_started_after_the_event)
  TEST_ENTRY(test_abort_after_a_deferred_close)
  TEST_ENTRY(test_close_callback_prompt_under_run_once_and_default)
  TEST_ENTRY(test_close_unconnected_pool_does_not_block_the_turn)
TEST_LIST_END

/* Pool housekeeping: idle connections close after idle_timeout, min_idle
 * connections open ahead of demand and stay, old connections retire. */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"

#include <uv.h>

static rn_loop_t *loop;
static rn_server_t *server;
static rn_pool_t *pool;

static void start(uint64_t idle_timeout, uint64_t max_lifetime,
                  unsigned min_idle) {
  rn_pool_options_t po;
  static char ep[96];

  ASSERT_OK(rn_loop_new(NULL, &loop));
  server = test_start_server(loop, RN_PROTOCOL_RESP, test_echo_bulk,
                             "127.0.0.1:0", ep);
  test_pool_options(&po, ep, RN_PROTOCOL_RESP);
  po.idle_timeout_ms = idle_timeout;
  po.max_lifetime_ms = max_lifetime;
  po.min_idle = min_idle;
  if (po.size < min_idle) po.size = min_idle;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
}

static void stop(void) {
  rn_pool_close(pool, 0, NULL);
  rn_server_close(server, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

static int replies;

static void count(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  (void)data;
  ASSERT_OK(r->status);
  replies++;
}

static void call_and_wait(void) {
  static const char frame[] = "*1\r\n$3\r\nGET\r\n";
  int before = replies;
  ASSERT_OK(rn_pool_call(pool, frame, sizeof(frame) - 1, NULL, count, NULL));
  RUN_UNTIL(rn_loop_uv(loop), replies != before, 10000);
}

static void test_idle_timeout(void) {
  rn_pool_stats_t st;
  start(200, 0, 0);
  call_and_wait();
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.open, 1);
  test_run_for(rn_loop_uv(loop), 2300); /* two housekeeping rounds */
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.evictions.idle, 1);
  ASSERT_EQ(st.open, 0);
  call_and_wait(); /* and the pool opens a new one on demand */
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.connects, 2);
  stop();
}

static void test_min_idle_kept_warm(void) {
  rn_pool_stats_t st;
  int turns = 0;
  start(100, 0, 2);
  do {
    test_run_for(rn_loop_uv(loop), 50);
    rn_pool_stats(pool, &st);
    ASSERT_LT(++turns, 100);
  } while (st.idle < 2);
  ASSERT_EQ(st.connects, 2); /* opened with no call made */
  /* Past idle_timeout: kept, they are the floor. */
  test_run_for(rn_loop_uv(loop), 1200);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.idle, 2);
  ASSERT_EQ(st.evictions.idle, 0);
  stop();
}

/* Warming up does not wait for housekeeping rounds (one a second): each
 * connection that comes up starts the next. */
static void test_min_idle_warms_quickly(void) {
  rn_pool_stats_t st;
  int turns = 0;
  start(60000, 0, 20);
  do {
    test_run_for(rn_loop_uv(loop), 20);
    rn_pool_stats(pool, &st);
    ASSERT_LT(++turns, 40); /* under a second; by rounds it took 20 s */
  } while (st.idle < 20);
  ASSERT_EQ(st.connects, 20);
  stop();
}

static void test_max_lifetime(void) {
  rn_pool_stats_t st;
  start(0, 300, 0);
  call_and_wait();
  test_run_for(rn_loop_uv(loop), 1200);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.evictions.lifetime, 1);
  ASSERT_EQ(st.open, 0);
  call_and_wait();
  stop();
}

static char endpoint[96];
static int pool_closed;

static void count_pool_close(rn_pool_t *p) {
  (void)p;
  pool_closed++;
}

static void close_pool_when_a_connection_closes(rn_pool_t *p,
                                                const rn_pool_event_t *ev) {
  if (ev->type != RN_EVENT_STATE || ev->connection == 0) return;
  if (strcmp(ev->state, "closed") == 0) rn_pool_close(p, 0, count_pool_close);
}

/* An event handler closes the pool when housekeeping closes an idle
 * connection. Housekeeping re-armed its timer on the way out, so the pool
 * was freed with its timer still in the loop's heap. */
static void test_maintenance_timer_restarted_after_close(void) {
  test_outcome_t o;
  rn_pool_options_t po;

  loop = test_loop_open();
  server = test_start_server(loop, RN_PROTOCOL_LINE, test_echo, "127.0.0.1:0",
                             endpoint);
  test_pool_line_options(&po, endpoint);
  po.idle_timeout_ms = 100;
  po.on_event = close_pool_when_a_connection_closes;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  pool_closed = 0;
  test_call(pool, "x", 0, &o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 2000);
  ASSERT_OK(o.status);
  /* Housekeeping runs once a second: the idle close comes at about 1 s. */
  RUN_UNTIL(rn_loop_uv(loop), pool_closed == 1, 3000);
  rn_server_close(server, NULL);
  /* A timer left behind makes rn_loop_free() fail, or fires on the freed
   * pool. */
  test_loop_close(loop);
}

TEST_LIST_START
  TEST_ENTRY(test_idle_timeout)
  TEST_ENTRY(test_min_idle_kept_warm)
  TEST_ENTRY(test_min_idle_warms_quickly)
  TEST_ENTRY(test_max_lifetime)
  TEST_ENTRY(test_maintenance_timer_restarted_after_close)
TEST_LIST_END

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

/* A peer that answers the GET SLOW_MS late, together with everything it
 * read meanwhile (the heartbeat's pings queued behind it), and every other
 * frame (the handshake's PING) at once. */
#define SLOW_MS 1300
static test_peer_t slow_peer;
static rn_codec_t slow_codec;
static uv_timer_t slow_timer;
static unsigned slow_held;
static uint64_t reply_at, idle_closed_at;

static void slow_answer(uv_timer_t *t) {
  test_peer_conn_t *c = t->data;
  test_peer_send(c, "+OK\r\n", 5);
  while (--slow_held > 0) test_peer_send(c, "+PONG\r\n", 7);
}

static void slow_first(test_peer_conn_t *c) {
  size_t pos = 0;
  rn_frame_t f;
  while (rn_codec_frame(&slow_codec, c->in.base + pos, c->in.len - pos, &f) ==
         1) {
    int get = test_contains(c->in.base + pos, f.size, "GET");
    pos += f.size;
    c->frames++;
    if (get && slow_held == 0) { /* the request (not the handshake PING) */
      slow_timer.data = c;
      uv_timer_start(&slow_timer, slow_answer, SLOW_MS, 0);
      slow_held = 1;
    } else if (slow_held > 0) {
      slow_held++;
    } else {
      test_peer_send(c, "+PONG\r\n", 7);
    }
  }
  rn_buf_consume(&c->in, pos);
}

static void note_reply(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  (void)data;
  ASSERT_OK(r->status);
  reply_at = uv_now(rn_loop_uv(loop));
}

static void note_idle_close(rn_pool_t *p, const rn_pool_event_t *ev) {
  (void)p;
  if (ev->type == RN_EVENT_STATE && ev->connection != 0 &&
      strcmp(ev->state, "closed") == 0 && ev->reason != NULL &&
      strcmp(ev->reason, "idle_timeout") == 0)
    idle_closed_at = uv_now(rn_loop_uv(loop));
}

/* Regression (review): idle_timeout counts from the last request answered.
 * A call slower than heartbeat.interval got a ping queued behind it; its
 * reply left the connection busy with the ping, whose answer then emptied
 * it without a stamp, so idle_timeout counted from when the slow call was
 * queued: the connection closed about 1 s after the reply instead of
 * 1.5 s. */
static void test_idle_timeout_counts_from_slow_reply(void) {
  static const char frame[] = "*1\r\n$3\r\nGET\r\n";
  rn_pool_options_t po;
  ASSERT_OK(rn_loop_new(NULL, &loop));
  test_codec_init(&slow_codec, RN_PROTOCOL_RESP);
  ASSERT_OK(uv_timer_init(rn_loop_uv(loop), &slow_timer));
  test_peer_start(&slow_peer, rn_loop_uv(loop), slow_first);
  test_pool_options(&po, slow_peer.endpoint, RN_PROTOCOL_RESP);
  po.idle_timeout_ms = 1500;
  po.heartbeat.interval_ms = 200;
  po.heartbeat.timeout_ms = 5000;
  po.timeout_ms = 10000;
  po.on_event = note_idle_close;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  reply_at = idle_closed_at = 0;
  ASSERT_OK(rn_pool_call(pool, frame, sizeof(frame) - 1, NULL, note_reply,
                         NULL));
  RUN_UNTIL(rn_loop_uv(loop), idle_closed_at != 0, 10000);
  ASSERT_NE(reply_at, 0);
  ASSERT_GE(slow_peer.conns[0].frames, 3); /* a ping did queue behind */
  ASSERT_GE(idle_closed_at - reply_at, 1500 - 5);
  rn_pool_close(pool, 0, NULL);
  test_peer_stop(&slow_peer);
  uv_close((uv_handle_t *)&slow_timer, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

TEST_LIST_START
  TEST_ENTRY(test_idle_timeout_counts_from_slow_reply)
  TEST_ENTRY(test_idle_timeout)
  TEST_ENTRY(test_min_idle_kept_warm)
  TEST_ENTRY(test_min_idle_warms_quickly)
  TEST_ENTRY(test_max_lifetime)
  TEST_ENTRY(test_maintenance_timer_restarted_after_close)
TEST_LIST_END

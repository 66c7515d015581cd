/* The client pool against resilnet's own server on loopback: pipelining,
 * deadlines, refused connects, draining close. Each scenario ends with every
 * handle closed and the loop closing cleanly. */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"

#include <unistd.h>
#include <uv.h>

#define PIPELINED 10000

static rn_loop_t *loop;
static rn_server_t *server;
static rn_pool_t *pool;
static char endpoint[96];
static int server_closed, pool_closed;
static int held_count;
static rn_request_t *held[16];

/* Echo server: replies with the request's body; bodies starting with
 * "hold" get no reply until the test releases them. */
static void on_request(rn_server_t *srv, rn_request_t *req, const char *body,
                       size_t len) {
  (void)srv;
  if (len >= 4 && memcmp(body, "hold", 4) == 0) {
    ASSERT_LT(held_count, 16);
    held[held_count++] = req;
    return;
  }
  test_reply(req, body, len);
}

static void on_server_closed(rn_server_t *srv) {
  (void)srv;
  server_closed++;
}

static void on_pool_closed(rn_pool_t *p) {
  (void)p;
  pool_closed++;
}

static void start(rn_protocol_t protocol, unsigned size) {
  rn_pool_options_t po;

  ASSERT_OK(rn_loop_new(NULL, &loop));
  server = test_start_server(loop, protocol, on_request, "127.0.0.1:0",
                             endpoint);

  test_pool_options(&po, endpoint, protocol);
  po.size = size;
  /* Calls made before the connection is up all wait in the pool's queue. */
  po.max_pending = PIPELINED;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  server_closed = pool_closed = held_count = 0;
}

static void stop(void) {
  int i;
  if (pool) rn_pool_close(pool, 0, on_pool_closed);
  for (i = 0; i < held_count; i++) rn_request_drop(held[i]);
  rn_server_close(server, on_server_closed);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_EQ(server_closed, 1);
  ASSERT_EQ(pool_closed, pool ? 1 : 0);
  ASSERT_OK(rn_loop_free(loop));
  pool = NULL;
}

static void encode_call_on(rn_pool_t *p, const char *body, size_t len,
                           rn_call_cb cb, void *data,
                           const rn_call_options_t *opts) {
  rn_buf_t frame;
  rn_buf_init(&frame);
  ASSERT_OK(rn_codec_encode(rn_pool_codec(p), &frame, body, len));
  ASSERT_OK(rn_pool_call(p, frame.base, frame.len, opts, cb, data));
  rn_buf_free(&frame);
}

static void encode_call(const char *body, size_t len, rn_call_cb cb,
                        void *data, const rn_call_options_t *opts) {
  encode_call_on(pool, body, len, cb, data, opts);
}

/* --- pipelining: 10,000 calls on one connection, each exactly once ------ */

static unsigned char seen[PIPELINED];
static int replies;

static void on_numbered_reply(rn_pool_t *p, void *data,
                              const rn_result_t *r) {
  int i = (int)(intptr_t)data;
  char expect[16];
  int n = snprintf(expect, sizeof(expect), "%d", i);
  (void)p;
  ASSERT_OK(r->status);
  ASSERT_EQ(r->body_len, n);
  ASSERT_MEM_EQ(r->body, expect, (size_t)n);
  ASSERT_EQ(seen[i], 0);
  ASSERT_EQ(r->attempts, 1);
  seen[i] = 1;
  replies++;
}

static void test_pipelined(rn_protocol_t protocol) {
  rn_pool_stats_t st;
  int i;

  start(protocol, 1);
  memset(seen, 0, sizeof(seen));
  replies = 0;
  for (i = 0; i < PIPELINED; i++) {
    char body[16];
    int n = snprintf(body, sizeof(body), "%d", i);
    encode_call(body, (size_t)n, on_numbered_reply, (void *)(intptr_t)i,
                NULL);
  }
  /* max_pending bounds only calls waiting for a connection. */
  RUN_UNTIL(rn_loop_uv(loop), replies >= PIPELINED, 10000);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.connects, 1);
  ASSERT_EQ(st.completed, PIPELINED);
  ASSERT_EQ(st.failed, 0);
  stop();
}

static void test_pipelined_line(void) { test_pipelined(RN_PROTOCOL_LINE); }
static void test_pipelined_length(void) { test_pipelined(RN_PROTOCOL_LENGTH); }

/* --- deadlines -------------------------------------------------------- */

static int timed_out;

static void expect_timeout(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  (void)data;
  ASSERT_EQ(r->status, UV_ETIMEDOUT);
  ASSERT_EQ(r->maybe_executed, 1); /* it was sent */
  ASSERT_EQ(r->attempts, 1);
  ASSERT_STR_EQ(r->endpoint, endpoint);
  timed_out++;
}

static void expect_timeout_any(rn_pool_t *p, void *data,
                               const rn_result_t *r) {
  (void)p;
  (void)data;
  ASSERT_EQ(r->status, UV_ETIMEDOUT);
  timed_out++;
}

static int late_ok;

static void expect_ok(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  (void)data;
  ASSERT_OK(r->status);
  ASSERT_EQ(r->body_len, 4);
  ASSERT_MEM_EQ(r->body, "next", 4);
  late_ok++;
}

/* A sent call times out; its late reply is matched to it and dropped, and
 * the next call on the same connection gets its own reply. */
static void test_deadline_then_late_reply(void) {
  rn_call_options_t opts = {.timeout_ms = 50};
  rn_buf_t reply;
  uint64_t t0;

  start(RN_PROTOCOL_LINE, 1);
  timed_out = late_ok = 0;
  encode_call("hold", 4, expect_timeout, NULL, &opts);
  t0 = uv_hrtime();
  RUN_UNTIL(rn_loop_uv(loop), timed_out != 0, 10000);
  ASSERT_GE((uv_hrtime() - t0) / 1000000, 40);
  ASSERT_EQ(held_count, 1);

  encode_call("next", 4, expect_ok, NULL, NULL);
  rn_buf_init(&reply);
  ASSERT_OK(rn_codec_encode(rn_server_codec(server), &reply, "late", 4));
  ASSERT_OK(rn_request_reply(held[0], reply.base, reply.len));
  rn_buf_free(&reply);
  held_count = 0;
  RUN_UNTIL(rn_loop_uv(loop), late_ok != 0, 10000);
  ASSERT_EQ(timed_out, 1);
  stop();
}

/* --- the deadline counts from the call, not from a stale loop clock ---- */

static void test_deadline_after_time_outside_loop(void) {
  rn_call_options_t opts = {.timeout_ms = 100};
  uint64_t t0;

  start(RN_PROTOCOL_LINE, 1);
  timed_out = 0;
  uv_run(rn_loop_uv(loop), UV_RUN_NOWAIT);
  usleep(200 * 1000); /* the program works a while without the loop */
  t0 = uv_hrtime();
  encode_call("hold", 4, expect_timeout_any, NULL, &opts);
  RUN_UNTIL(rn_loop_uv(loop), timed_out != 0, 10000);
  ASSERT_GE((uv_hrtime() - t0) / 1000000, 95);
  stop();
}

static int second_pool_closed;

static void on_second_pool_closed(rn_pool_t *p) {
  (void)p;
  second_pool_closed++;
}

/* A call made late in a long reply callback (the loop's time is then the
 * read's, 60 ms stale) still gets its whole deadline: the pool's timeout,
 * whose calls skip the clock read inside a read, counted from the call. */
static rn_pool_t *lane_pool;
static uint64_t late_t0, late_elapsed_ms;

static void on_late_call_timeout(rn_pool_t *p, void *data,
                                 const rn_result_t *r) {
  (void)p;
  (void)data;
  ASSERT_EQ(r->status, UV_ETIMEDOUT);
  late_elapsed_ms = (uv_hrtime() - late_t0) / 1000000;
  timed_out++;
}

static void on_reply_then_work(rn_pool_t *p, void *data,
                               const rn_result_t *r) {
  uint64_t spin = uv_hrtime();
  (void)data;
  ASSERT_OK(r->status);
  while (uv_hrtime() - spin < 60 * 1000000ull) {
  } /* the callback works a while */
  late_t0 = uv_hrtime();
  encode_call_on(p, "hold", 4, on_late_call_timeout, NULL, NULL);
}

static void test_deadline_after_long_reply_callback(void) {
  rn_pool_options_t po;

  start(RN_PROTOCOL_LINE, 1);
  test_pool_options(&po, endpoint, RN_PROTOCOL_LINE);
  po.timeout_ms = 100;
  ASSERT_OK(rn_pool_new(loop, &po, &lane_pool));
  timed_out = 0;
  late_elapsed_ms = 0;
  encode_call_on(lane_pool, "next", 4, on_reply_then_work, NULL, NULL);
  RUN_UNTIL(rn_loop_uv(loop), timed_out != 0, 10000);
  ASSERT_GE(late_elapsed_ms, 95);
  second_pool_closed = 0;
  rn_pool_close(lane_pool, 0, on_second_pool_closed);
  stop();
  ASSERT_EQ(second_pool_closed, 1);
}

/* --- IP literals connect without a lookup ------------------------------ */

/* Threads of this process, from Linux's /proc; negative elsewhere. */
static int thread_count(void) {
  uv_fs_t req;
  int n = uv_fs_scandir(NULL, &req, "/proc/self/task", 0, NULL);
  uv_fs_req_cleanup(&req);
  return n;
}


/* An IP literal needs no getaddrinfo on libuv's thread pool: its call is
 * answered with the process still single-threaded. A host name still
 * resolves (starting the thread pool, whose threads stay: the literal is
 * checked first, and the case has a process of its own). */
static void test_literal_needs_no_lookup(void) {
  rn_pool_options_t po;
  rn_pool_t *named;
  char name[96];

  if (thread_count() != 1) {
    printf("skipped: cannot count this process's threads\n");
    return;
  }
  start(RN_PROTOCOL_LINE, 1);
  late_ok = 0;
  encode_call("next", 4, expect_ok, NULL, NULL);
  RUN_UNTIL(rn_loop_uv(loop), late_ok != 0, 10000);
  ASSERT_EQ(thread_count(), 1);

  snprintf(name, sizeof(name), "localhost%s", strrchr(endpoint, ':'));
  test_pool_options(&po, name, RN_PROTOCOL_LINE);
  ASSERT_OK(rn_pool_new(loop, &po, &named));
  encode_call_on(named, "next", 4, expect_ok, NULL, NULL);
  RUN_UNTIL(rn_loop_uv(loop), late_ok != 1, 10000);
  ASSERT_GT(thread_count(), 1);
  second_pool_closed = 0;
  rn_pool_close(named, 0, on_second_pool_closed);
  stop();
  ASSERT_EQ(second_pool_closed, 1);
}

/* --- refused ------------------------------------------------------------ */

static int refused;

static void expect_refused(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  (void)data;
  ASSERT_EQ(r->status, UV_ECONNREFUSED);
  ASSERT_EQ(r->maybe_executed, 0);
  ASSERT_EQ(r->attempts, 1);
  refused++;
}

static void test_refused(void) {
  rn_pool_options_t po;
  rn_server_options_t so;
  rn_server_t *closed_server;
  char host[64];
  int port;

  /* A port that was just free: bind, read it, close. */
  ASSERT_OK(rn_loop_new(NULL, &loop));
  rn_server_options_init(&so);
  so.listen = "127.0.0.1:0";
  so.codec.protocol = RN_PROTOCOL_LINE;
  so.on_request = on_request;
  ASSERT_OK(rn_server_new(loop, &so, &closed_server));
  ASSERT_OK(rn_server_address(closed_server, host, sizeof(host), &port));
  rn_server_close(closed_server, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);

  snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", port);
  test_pool_options(&po, endpoint, RN_PROTOCOL_LINE);
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  refused = 0;
  {
    /* With every endpoint down, calls wait for recovery until their
     * deadline, then report why. Reconnects back off meanwhile. */
    rn_call_options_t opts = {.timeout_ms = 400};
    rn_pool_stats_t st;
    uint64_t t0 = uv_hrtime();
    encode_call("a", 1, expect_refused, NULL, &opts);
    encode_call("b", 1, expect_refused, NULL, &opts);
    uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
    ASSERT_GE((uv_hrtime() - t0) / 1000000, 390);
    rn_pool_stats(pool, &st);
    /* Backoff 100 ms x 1.6 (+/-20%): connects near 0, 100, 260 ms. */
    ASSERT_GE(st.connect_failures, 2);
    ASSERT_LE(st.connect_failures, 5);
  }
  ASSERT_EQ(refused, 2);
  {
    /* reset_backoff: the next connect goes out at once, not after the
     * grown delay. */
    rn_call_options_t opts = {.timeout_ms = 50};
    rn_pool_stats_t before, after;
    rn_pool_stats(pool, &before);
    rn_pool_reset_backoff(pool);
    encode_call("c", 1, expect_refused, NULL, &opts);
    uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
    rn_pool_stats(pool, &after);
    ASSERT_EQ(after.connect_failures, before.connect_failures + 1);
    ASSERT_EQ(refused, 3);
  }
  pool_closed = 0;
  rn_pool_close(pool, 0, on_pool_closed);
  ASSERT_EQ(pool_closed, 0); /* never before rn_pool_close returned */
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_EQ(pool_closed, 1);
  ASSERT_OK(rn_loop_free(loop));
  pool = NULL;
}

/* --- close ------------------------------------------------------------- */

static int closed_calls;

static void expect_closed(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  ASSERT_EQ(r->status, RN_ECLOSED);
  ASSERT_EQ(r->maybe_executed, (int)(intptr_t)data);
  closed_calls++;
}

/* Close with a drain: the sent call that never gets a reply fails with
 * ECLOSED (maybe executed); new calls are refused synchronously. */
static void test_close_drains_then_fails(void) {
  rn_buf_t frame;

  start(RN_PROTOCOL_LINE, 1);
  closed_calls = 0;
  encode_call("hold", 4, expect_closed, (void *)(intptr_t)1, NULL);
  RUN_UNTIL(rn_loop_uv(loop), held_count != 0, 10000);
  rn_pool_close(pool, 30, on_pool_closed);
  rn_buf_init(&frame);
  ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frame, "x", 1));
  ASSERT_EQ(rn_pool_call(pool, frame.base, frame.len, NULL, expect_closed, NULL),
            RN_ECLOSED);
  rn_buf_free(&frame);
  RUN_UNTIL(rn_loop_uv(loop), pool_closed != 0, 10000);
  ASSERT_EQ(closed_calls, 1);
  pool_closed = 0;
  pool = NULL;
  stop();
}

/* A call that found every connection over write_high_water waited; when the
 * write finished nothing placed it, and it timed out against a server that
 * answers at once. */
static void test_calls_stranded_past_write_high_water(void) {
  test_outcome_t a, b;
  rn_pool_options_t po;
  rn_pool_stats_t st;

  loop = test_loop_open();
  server = test_start_server(loop, RN_PROTOCOL_LINE, test_echo, "127.0.0.1:0",
                             endpoint);
  test_pool_line_options(&po, endpoint);
  po.size = 1;
  po.write_high_water = 1; /* any write in flight fills the connection */
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  test_call(pool, "warm", 0, &a);
  RUN_UNTIL(rn_loop_uv(loop), a.fired, 2000);
  ASSERT_OK(a.status);
  test_call(pool, "one", 1000, &a);
  test_call(pool, "two", 1000, &b);
  st = test_pool_stats(pool);
  ASSERT_EQ(st.in_flight, 1);
  ASSERT_EQ(st.pending, 1);
  RUN_UNTIL(rn_loop_uv(loop), a.fired && b.fired, 3000);
  ASSERT_OK(a.status);
  ASSERT_OK(b.status);
  ASSERT_EQ(b.body_len, 3);
  ASSERT_MEM_EQ(b.body, "two", 3);
  rn_pool_close(pool, 0, NULL);
  rn_server_close(server, NULL);
  test_loop_close(loop);
}

/* With a cap on calls in flight per endpoint, a call may wait while its
 * endpoint is full and another one is backing off. A reply that freed
 * room did not place it: nothing dispatched until the other endpoint's
 * reconnect, and the call timed out against an idle, healthy endpoint. */
static void test_call_waits_past_room_freed_under_max_in_flight(void) {
  test_peer_t a;
  test_outcome_t held_call, waiting;
  rn_pool_options_t po;
  const char *list[2];

  loop = test_loop_open();
  test_peer_start(&a, rn_loop_uv(loop), test_peer_answer_lines);
  test_pool_line_options(&po, a.endpoint);
  po.size = 1;
  list[0] = a.endpoint;
  list[1] = "127.0.0.1:1"; /* refused: backs off for 5 s */
  po.endpoints = list;
  po.endpoint_count = 2;
  po.min_idle = 1;
  po.max_in_flight = 1;
  po.reconnect.initial_ms = 5000;
  po.reconnect.jitter = 0;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  RUN_UNTIL(rn_loop_uv(loop),
            test_pool_stats(pool).idle == 1 &&
                test_pool_stats(pool).connect_failures == 1,
            2000);

  test_call(pool, "hold", 5000, &held_call); /* a is full */
  RUN_UNTIL(rn_loop_uv(loop), test_peer_holding(&a) == 1, 2000);
  test_call(pool, "y", 1000, &waiting); /* accepted: the other is not full */
  ASSERT_EQ(test_pool_stats(pool).pending, 1);
  test_peer_release(&a);
  RUN_UNTIL(rn_loop_uv(loop), held_call.fired && waiting.fired, 2000);
  ASSERT_OK(held_call.status);
  ASSERT_OK(waiting.status);

  test_pool_close_wait(loop, pool);
  test_peer_stop(&a);
  test_loop_close(loop);
}

/* --- a call is one frame: two, or part of one, are refused ------------- */

/* rn_pool_call sent whatever bytes it was given: two frames in one call
 * brought two replies, and the second, answering no call, closed the
 * connection. Now UV_EINVAL, nothing sent (line and length here; resp in
 * test-batch-hostile). */
static void test_call_many_frames_refused(rn_protocol_t protocol) {
  test_outcome_t o[2];
  rn_buf_t frames;
  size_t one;
  start(protocol, 1);
  rn_buf_init(&frames);
  ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frames, "a", 1));
  one = frames.len;
  ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frames, "b", 1));
  memset(o, 0, sizeof(o));
  ASSERT_EQ(rn_pool_call(pool, frames.base, frames.len, NULL, test_record,
                         &o[0]),
            UV_EINVAL);
  ASSERT_EQ(rn_pool_call(pool, frames.base, one + 1, NULL, test_record,
                         &o[0]),
            UV_EINVAL); /* a frame and a byte of the next */
  ASSERT_EQ(rn_pool_call(pool, frames.base, one - 1, NULL, test_record,
                         &o[0]),
            UV_EINVAL); /* short of its last byte */
  ASSERT_EQ(test_pool_stats(pool).calls, 0);
  ASSERT_OK(rn_pool_call(pool, frames.base, one, NULL, test_record, &o[0]));
  ASSERT_OK(rn_pool_call(pool, frames.base + one, frames.len - one, NULL,
                         test_record, &o[1]));
  rn_buf_free(&frames);
  RUN_UNTIL(rn_loop_uv(loop), o[1].fired, 5000);
  ASSERT_OK(o[0].status);
  ASSERT_OK(o[1].status);
  ASSERT_EQ(test_pool_stats(pool).connects, 1);
  stop();
}

static void test_call_many_frames_refused_line(void) {
  test_call_many_frames_refused(RN_PROTOCOL_LINE);
}
static void test_call_many_frames_refused_length(void) {
  test_call_many_frames_refused(RN_PROTOCOL_LENGTH);
}

TEST_LIST_START
  TEST_ENTRY(test_literal_needs_no_lookup)
  TEST_ENTRY(test_pipelined_line)
  TEST_ENTRY(test_pipelined_length)
  TEST_ENTRY(test_call_many_frames_refused_line)
  TEST_ENTRY(test_call_many_frames_refused_length)
  TEST_ENTRY(test_deadline_then_late_reply)
  TEST_ENTRY(test_deadline_after_time_outside_loop)
  TEST_ENTRY(test_deadline_after_long_reply_callback)
  TEST_ENTRY(test_refused)
  TEST_ENTRY(test_close_drains_then_fails)
  TEST_ENTRY(test_calls_stranded_past_write_high_water)
  TEST_ENTRY(test_call_waits_past_room_freed_under_max_in_flight)
TEST_LIST_END

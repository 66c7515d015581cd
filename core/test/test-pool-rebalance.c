/* An endpoint that comes back gets calls again, even while the others
 * keep up with the load: a pool in use keeps a connection to every usable
 * endpoint, and calls go to the endpoint with the fewest outstanding. */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"

#include <string.h>
#include <uv.h>

static rn_loop_t *loop;
static int answered_by[2]; /* requests each server answered */
static int done;

static void on_request_a(rn_server_t *s, rn_request_t *req, const char *body,
                         size_t len) {
  answered_by[0]++;
  test_echo_bulk(s, req, body, len);
}

static void on_request_b(rn_server_t *s, rn_request_t *req, const char *body,
                         size_t len) {
  answered_by[1]++;
  test_echo_bulk(s, req, body, len);
}

static void on_result(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  (void)data;
  ASSERT_OK(r->status);
  done++;
}

static void server_closed(rn_server_t *s) { (void)s; }

static void test_recovered_endpoint_gets_calls(void) {
  rn_server_t *a, *b;
  rn_pool_t *pool;
  rn_pool_options_t po;
  rn_buf_t frame;
  char ep_a[96], ep_b[96];
  const char *eps[2];
  uint64_t start;
  int sent = 0;

  ASSERT_OK(rn_loop_new(NULL, &loop));
  a = test_start_server(loop, RN_PROTOCOL_RESP, on_request_a, "127.0.0.1:0",
                        ep_a);
  /* B's port: bound, then released, so B is down when the pool starts. */
  b = test_start_server(loop, RN_PROTOCOL_RESP, on_request_b, "127.0.0.1:0",
                        ep_b);
  rn_server_close(b, server_closed);
  uv_run(rn_loop_uv(loop), UV_RUN_NOWAIT);

  rn_pool_options_init(&po);
  eps[0] = ep_a;
  eps[1] = ep_b;
  po.endpoints = eps;
  po.endpoint_count = 2;
  po.reconnect.initial_ms = 50;
  po.reconnect.max_ms = 100;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  rn_buf_init(&frame);
  ASSERT_OK(rn_resp_encode_array(&frame, 1));
  /* Not PING, which the server answers without its handler. */
  ASSERT_OK(rn_resp_encode_bulk(&frame, "GET", 3));

  /* Calls one at a time, for 4 s: A alone keeps up with them. B comes
   * back after 0.5 s and must get some within the rest. */
  start = uv_now(rn_loop_uv(loop));
  b = NULL;
  while (uv_now(rn_loop_uv(loop)) - start < 4000 && answered_by[1] == 0) {
    if (b == NULL && uv_now(rn_loop_uv(loop)) - start >= 500)
      b = test_start_server(loop, RN_PROTOCOL_RESP, on_request_b, ep_b,
                            ep_b);
    if (done == sent) {
      ASSERT_OK(rn_pool_call(pool, frame.base, frame.len, NULL, on_result,
                             NULL));
      sent++;
    }
    uv_run(rn_loop_uv(loop), UV_RUN_ONCE);
  }
  ASSERT(b != NULL);
  ASSERT_GT(answered_by[0], 0);
  ASSERT_GT(answered_by[1], 0);

  RUN_UNTIL(rn_loop_uv(loop), done >= sent, 10000);
  rn_buf_free(&frame);
  rn_pool_close(pool, 0, NULL);
  rn_server_close(a, NULL);
  rn_server_close(b, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

/* A new loop and two line peers on it, a and b. */
static void open_two_peers(test_peer_t *a, test_peer_t *b) {
  loop = test_loop_open();
  test_peer_start(a, rn_loop_uv(loop), test_peer_answer_lines);
  test_peer_start(b, rn_loop_uv(loop), test_peer_answer_lines);
}

/* Closes the pool (waited for), the two peers and the loop. */
static void close_two_peers(rn_pool_t *pool, test_peer_t *a, test_peer_t *b) {
  test_pool_close_wait(loop, pool);
  test_peer_stop(a);
  test_peer_stop(b);
  test_loop_close(loop);
}

/* A dropped endpoint's busy connection closes "once its last reply is in",
 * but the check ran only for replies to calls. With a heartbeat ping queued
 * behind the last call, the ping's reply emptied the connection and nothing
 * closed it: it kept pinging its old server for as long as the pool lived
 * (housekeeping never looks at dropped endpoints). */
static void test_removed_endpoint_kept_open_by_a_ping(void) {
  test_peer_t a, b;
  test_outcome_t held;
  rn_pool_options_t po;
  rn_pool_t *pool;

  open_two_peers(&a, &b);
  test_pool_line_options(&po, b.endpoint);
  po.size = 1;
  po.heartbeat.ping = "PING";
  po.heartbeat.ping_len = 4;
  po.heartbeat.interval_ms = 100;
  po.heartbeat.timeout_ms = 5000;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  test_call(pool, "hold", 5000, &held);
  /* The handshake ping answered, "hold" held, and a heartbeat ping queued
   * behind it. */
  RUN_UNTIL(rn_loop_uv(loop), test_peer_holding(&b) == 2, 2000);

  test_pool_set_endpoints(pool, a.endpoint, NULL);
  test_peer_release(&b);
  RUN_UNTIL(rn_loop_uv(loop), held.fired, 2000);
  ASSERT_OK(held.status);
  RUN_UNTIL(rn_loop_uv(loop), test_pool_stats(pool).evictions.removed == 1,
            1000);

  close_two_peers(pool, &a, &b);
}

/* The same with the handshake: a connection still waiting for the answer
 * to its first ping when its endpoint was dropped became ready afterwards,
 * retiring and empty, and stayed open. */
static void test_removed_endpoint_kept_open_by_the_handshake(void) {
  test_peer_t a, b;
  rn_pool_options_t po;
  rn_pool_t *pool;

  open_two_peers(&a, &b);
  a.never_hold = 1;
  test_pool_line_options(&po, b.endpoint);
  po.size = 1;
  po.heartbeat.ping = "hold"; /* b holds the handshake ping */
  po.heartbeat.ping_len = 4;
  po.heartbeat.interval_ms = 5000;
  po.heartbeat.timeout_ms = 10000;
  po.connect_timeout_ms = 5000;
  po.min_idle = 1;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  RUN_UNTIL(rn_loop_uv(loop), test_peer_holding(&b) == 1, 2000);

  test_pool_set_endpoints(pool, a.endpoint, NULL);
  test_peer_release(&b);
  RUN_UNTIL(rn_loop_uv(loop), test_pool_stats(pool).evictions.removed == 1,
            1500);

  close_two_peers(pool, &a, &b);
}

/* And with a call that expired before it was written (behind a write the
 * server stopped reading): taking it off left the retiring connection
 * empty with no reply to come. */
static void test_removed_endpoint_kept_open_by_an_expired_call(void) {
  enum { BIG = 32 * 1024 * 1024 };
  test_peer_t a, b;
  test_outcome_t big, small;
  rn_pool_options_t po;
  rn_pool_t *pool;
  char *frame;

  open_two_peers(&a, &b);
  b.stop_reading = 1;
  test_pool_line_options(&po, b.endpoint);
  po.size = 1;
  po.write_high_water = 4 * (uint64_t)BIG; /* the connection stays writable */
  po.codec.max_frame = 2 * (size_t)BIG; /* a request past it is refused */
  ASSERT_OK(rn_pool_new(loop, &po, &pool));

  /* Far more than the socket buffers take: its write stays in flight. b
   * answers it from its first bytes and reads no more. */
  frame = malloc(BIG);
  ASSERT(frame != NULL);
  memset(frame, 'x', BIG - 1);
  frame[BIG - 1] = '\n';
  memset(&big, 0, sizeof(big));
  ASSERT_OK(rn_pool_call(pool, frame, BIG, NULL, test_record, &big));
  free(frame);
  RUN_UNTIL(rn_loop_uv(loop), big.fired, 2000);
  ASSERT_OK(big.status);

  test_call(pool, "y", 200, &small); /* waits behind the write */
  ASSERT_EQ(test_pool_stats(pool).in_flight, 1);
  test_pool_set_endpoints(pool, a.endpoint, NULL);
  RUN_UNTIL(rn_loop_uv(loop), small.fired, 2000);
  ASSERT_EQ(small.status, UV_ETIMEDOUT);
  RUN_UNTIL(rn_loop_uv(loop), test_pool_stats(pool).evictions.removed == 1,
            1000);

  close_two_peers(pool, &a, &b);
}

static int eject_events;

static void count_ejects(rn_pool_t *p, const rn_pool_event_t *ev) {
  (void)p;
  if (ev->type == RN_EVENT_EJECT) eject_events++;
}

/* A connection of a dropped endpoint that failed still counted against its
 * endpoint: the dropped endpoint was ejected. It is in no list the pool
 * looks at, so the ejection never ended, and pool->ejected stayed one too
 * high: stats lied, and the share cap kept real endpoints from being
 * ejected. */
static void test_removed_endpoint_ejected(void) {
  test_peer_t a, b, c;
  test_outcome_t held;
  rn_pool_options_t po;
  rn_pool_t *pool;

  open_two_peers(&a, &b);
  test_peer_start(&c, rn_loop_uv(loop), test_peer_answer_lines);
  test_pool_line_options(&po, b.endpoint);
  po.size = 1;
  po.eject.failures = 1;
  po.eject.max_share = 0.5;
  po.on_event = count_ejects;
  eject_events = 0;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  test_call(pool, "hold", 5000, &held);
  RUN_UNTIL(rn_loop_uv(loop), test_peer_holding(&b) == 1, 2000);

  test_pool_set_endpoints(pool, a.endpoint, c.endpoint);
  /* b's server goes away with the call on it, before answering anything:
   * a failure of b, which is no longer the pool's. */
  test_peer_close(&b.conns[0]);
  RUN_UNTIL(rn_loop_uv(loop), held.fired, 2000);
  ASSERT_EQ(held.status, UV_EOF);
  ASSERT_EQ(eject_events, 0);
  ASSERT_EQ(test_pool_stats(pool).ejected, 0);

  test_pool_close_wait(loop, pool);
  test_peer_stop(&a);
  test_peer_stop(&b);
  test_peer_stop(&c);
  test_loop_close(loop);
}

static int close_on_removed;
static int pool_closed;

static void count_pool_close(rn_pool_t *p) {
  (void)p;
  pool_closed++;
}

static void close_when_removed(rn_pool_t *p, const rn_pool_event_t *ev) {
  if (ev->type != RN_EVENT_STATE || ev->connection == 0) return;
  if (close_on_removed && strcmp(ev->state, "closed") == 0 &&
      ev->reason != NULL && strcmp(ev->reason, "removed") == 0) {
    close_on_removed = 0;
    rn_pool_close(p, 0, count_pool_close);
  }
}

/* rn_pool_set_endpoints drops endpoints one at a time. An event handler
 * that closed the pool when the first one's idle connection closed made
 * the pool close the connections of the endpoints it could see: the new
 * list and the ones already dropped. The endpoints still to be dropped
 * were on neither, so their busy connections stayed open: their calls
 * were not failed, and the pool never finished closing. */
static void test_pool_closed_while_endpoints_are_dropped(void) {
  test_peer_t a, b, c;
  test_outcome_t held;
  rn_pool_options_t po;
  rn_pool_t *pool;
  const char *list[2];
  int i;

  open_two_peers(&a, &b);
  test_peer_start(&c, rn_loop_uv(loop), test_peer_answer_lines);
  a.never_hold = 1;
  test_pool_line_options(&po, a.endpoint);
  po.size = 1;
  list[0] = a.endpoint;
  list[1] = b.endpoint;
  po.endpoints = list;
  po.endpoint_count = 2;
  po.min_idle = 1; /* a connection to each, at once */
  po.on_event = close_when_removed;
  close_on_removed = 0;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  RUN_UNTIL(rn_loop_uv(loop), test_pool_stats(pool).idle == 2, 2000);

  /* Calls take the endpoints in turn: one of two "hold"s reaches b (a
   * answers its one at once). */
  for (i = 0; i < 2 && test_peer_holding(&b) == 0; i++) {
    test_call(pool, "hold", 1000, &held);
    RUN_UNTIL(rn_loop_uv(loop), held.fired || test_peer_holding(&b) == 1, 2000);
  }
  ASSERT_EQ(test_peer_holding(&b), 1);
  ASSERT_EQ(held.fired, 0);
  ASSERT_EQ(test_pool_stats(pool).idle, 1); /* a's */

  close_on_removed = 1;
  pool_closed = 0;
  test_pool_set_endpoints(pool, c.endpoint, NULL); /* drops a, then b */
  ASSERT_EQ(close_on_removed, 0);
  RUN_UNTIL(rn_loop_uv(loop), held.fired, 2000);
  ASSERT_EQ(held.status, RN_ECLOSED);
  RUN_UNTIL(rn_loop_uv(loop), pool_closed == 1, 2000);

  test_peer_stop(&a);
  test_peer_stop(&b);
  test_peer_stop(&c);
  test_loop_close(loop);
}

/* With every endpoint of the list ejected (a new list kept only ejected
 * ones), a call waits for an ejection to end, as without a cap. The check
 * for "every endpoint full" passed over the ejected ones and, finding no
 * other, said all were full: every call failed at once with EOVERLOAD. */
static void test_all_ejected_read_as_all_full(void) {
  test_peer_t b;
  test_outcome_t o;
  rn_pool_options_t po;
  rn_pool_t *pool;
  rn_call_options_t co;
  const char *list[2];

  loop = test_loop_open();
  test_peer_start(&b, rn_loop_uv(loop), test_peer_answer_lines);
  test_pool_line_options(&po, b.endpoint);
  po.size = 1;
  list[0] = "127.0.0.1:1"; /* refused: ejected after one failure */
  list[1] = b.endpoint;
  po.endpoints = list;
  po.endpoint_count = 2;
  po.min_idle = 1;
  po.max_in_flight = 4;
  po.eject.failures = 1;
  po.eject.max_share = 0.5;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  RUN_UNTIL(rn_loop_uv(loop), test_pool_stats(pool).ejected == 1, 2000);
  test_pool_set_endpoints(pool, "127.0.0.1:1", NULL);
  ASSERT_EQ(test_pool_stats(pool).ejected, 1);

  memset(&o, 0, sizeof(o));
  memset(&co, 0, sizeof(co));
  co.timeout_ms = 200;
  ASSERT_OK(rn_pool_call(pool, "x\n", 2, &co, test_record, &o));
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 2000);
  /* It waited, as calls do with all ejected: its deadline, reported as
   * the last connect error if that came after the last connect. */
  ASSERT(o.status == UV_ETIMEDOUT || o.status == UV_ECONNREFUSED);

  test_pool_close_wait(loop, pool);
  test_peer_stop(&b);
  test_loop_close(loop);
}

TEST_LIST_START
  TEST_ENTRY(test_recovered_endpoint_gets_calls)
  TEST_ENTRY(test_removed_endpoint_kept_open_by_a_ping)
  TEST_ENTRY(test_removed_endpoint_kept_open_by_the_handshake)
  TEST_ENTRY(test_removed_endpoint_kept_open_by_an_expired_call)
  TEST_ENTRY(test_removed_endpoint_ejected)
  TEST_ENTRY(test_pool_closed_while_endpoints_are_dropped)
  TEST_ENTRY(test_all_ejected_read_as_all_full)
TEST_LIST_END

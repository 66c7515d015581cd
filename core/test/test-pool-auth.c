/* The rnp pool's side of authentication (issue 17): rn_pool_options_t.auth
 * goes out in every HELLO; a server that refuses it closes the connection
 * with RN_EAUTH, a configuration fault: calls waiting fail with RN_EAUTH,
 * never sent, no handler runs, and the endpoint waits reconnect.max_ms
 * between connects (counted here: no reconnect storm). */
#include "resilnet.h"
#include "task.h"
#include "server_fixture.h"
#include "wait.h"

#include <stdio.h>

static test_server_t srv;
static rn_pool_t *pool;
static char endpoint[96];
static const char *endpoints[1] = {endpoint};
static int pool_closed;

static void on_pool_closed(rn_pool_t *p) {
  (void)p;
  pool_closed = 1;
}

/* An rnp echo server accepting one token, as identity "app". */
static void start_server(void) {
  static const rn_auth_token_t tokens[] = {{"the-token", 0, "app"}};
  rn_server_auth_options_t a;
  rn_server_options_t o;
  rn_server_auth_options_init(&a);
  a.tokens = tokens;
  a.token_count = 1;
  rn_server_options_init(&o);
  o.codec.protocol = RN_PROTOCOL_RNP;
  o.auth = &a;
  test_server_start(&srv, NULL, &o);
  srv.mode = TEST_SERVER_ECHO;
  snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", srv.port);
  pool_closed = 0;
}

static void pool_options(rn_pool_options_t *o, const char *token) {
  rn_pool_options_init(o);
  o->endpoints = endpoints;
  o->endpoint_count = 1;
  o->codec.protocol = RN_PROTOCOL_RNP;
  o->auth = token;
  o->timeout_ms = 3000; /* connect, HELLO and the call: slow under valgrind */
  o->reconnect.initial_ms = 10;
  o->reconnect.max_ms = 500;
}

static void stop_all(void) {
  rn_pool_close(pool, 0, on_pool_closed);
  RUN_UNTIL(srv.uv, pool_closed, 5000);
  test_server_finish(&srv);
}

typedef struct {
  int done;
  int status;
  int maybe_executed;
} result_t;

static void on_result(rn_pool_t *p, void *data, const rn_result_t *r) {
  result_t *res = (result_t *)data;
  (void)p;
  res->done = 1;
  res->status = r->status;
  res->maybe_executed = r->maybe_executed;
}

static void call(result_t *res) {
  rn_buf_t frame;
  rn_buf_init(&frame);
  memset(res, 0, sizeof(*res));
  ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frame, "hi", 2));
  ASSERT_OK(rn_pool_call(pool, frame.base, frame.len, NULL, on_result, res));
  rn_buf_free(&frame);
}

static void test_token_accepted(void) {
  rn_pool_options_t o;
  result_t r;
  start_server();
  pool_options(&o, "the-token");
  ASSERT_OK(rn_pool_new(srv.loop, &o, &pool));
  call(&r);
  RUN_UNTIL(srv.uv, r.done, 5000);
  ASSERT_OK(r.status);
  ASSERT_EQ(srv.handled, 1);
  stop_all();
}

/* Refused: EAUTH, never sent, no handler; over 1.6 s with reconnect.max
 * 500 ms the endpoint is connected at most 1 + 1.6 / 0.5 times (an
 * ordinary failure backing off from 10 ms would connect about a dozen). */
static void test_token_refused_config_fault(void) {
  rn_pool_options_t o;
  rn_pool_stats_t st;
  rn_server_stats_t ss;
  result_t r;
  uint64_t t0;
  unsigned calls = 0;
  start_server();
  pool_options(&o, "not-the-token");
  ASSERT_OK(rn_pool_new(srv.loop, &o, &pool));
  t0 = uv_now(srv.uv);
  while (uv_now(srv.uv) - t0 < 1600) {
    call(&r);
    RUN_UNTIL(srv.uv, r.done, 5000);
    ASSERT_EQ(r.status, RN_EAUTH);
    ASSERT_EQ(r.maybe_executed, 0);
    calls++;
  }
  ASSERT_GE(calls, 4);
  rn_pool_stats(pool, &st);
  rn_server_stats(srv.server, &ss);
  ASSERT_GE(st.connect_failures, 2);
  ASSERT_LE(st.connect_failures, 5);
  ASSERT_EQ(st.connect_failures, ss.auth_refused);
  ASSERT_EQ(st.connects, 0);
  ASSERT_EQ(srv.handled, 0);
  stop_all();
}

static void test_bad_options(void) {
  rn_pool_options_t o;
  rn_loop_t *loop;
  char longest[256];
  memset(longest, 'x', 255);
  longest[255] = '\0';
  ASSERT_OK(rn_loop_new(NULL, &loop));
  snprintf(endpoint, sizeof(endpoint), "127.0.0.1:1");
  pool_options(&o, longest); /* 255 bytes: the most a HELLO carries */
  ASSERT_OK(rn_pool_new(loop, &o, &pool));
  rn_pool_close(pool, 0, NULL);
  o.auth_len = 256;
  ASSERT_EQ(rn_pool_new(loop, &o, &pool), UV_EINVAL);
  o.auth = "";
  o.auth_len = 0;
  ASSERT_EQ(rn_pool_new(loop, &o, &pool), UV_EINVAL);
  o.auth = "token";
  o.codec.protocol = RN_PROTOCOL_RESP; /* only rnp's HELLO carries one */
  ASSERT_EQ(rn_pool_new(loop, &o, &pool), UV_EINVAL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

TEST_LIST_START
  TEST_ENTRY(test_token_accepted)
  TEST_ENTRY(test_token_refused_config_fault)
  TEST_ENTRY(test_bad_options)
TEST_LIST_END

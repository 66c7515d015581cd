/* The pool fixture (pool_fixture.h). */
#include "pool_fixture.h"
#include "task.h"
#include "wait.h"

#include <string.h>

rn_loop_t *test_loop_open(void) {
  rn_loop_t *loop;
  ASSERT_OK(rn_loop_new(NULL, &loop));
  return loop;
}

void test_loop_close(rn_loop_t *loop) {
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

int test_next_order(void) {
  static int order;
  return ++order;
}

void test_on_granted(rn_pool_t *pool, void *data, rn_hold_t *hold,
                     int status) {
  test_granted_t *g = data;
  (void)pool;
  ASSERT_OK(status);
  g->fired++;
  g->hold = hold;
}

void test_record(rn_pool_t *p, void *data, const rn_result_t *r) {
  test_outcome_t *o = data;
  (void)p;
  ASSERT_EQ(o->fired, 0); /* exactly once */
  o->fired++;
  o->status = r->status;
  o->maybe_executed = r->maybe_executed;
  o->attempts = r->attempts;
  o->order = test_next_order();
  o->body_len = r->body_len < sizeof(o->body) ? r->body_len : sizeof(o->body);
  if (r->body) memcpy(o->body, r->body, o->body_len);
}

void test_call(rn_pool_t *pool, const char *body, uint64_t timeout_ms,
               test_outcome_t *o) {
  rn_call_options_t co;
  rn_buf_t frame;
  memset(o, 0, sizeof(*o));
  memset(&co, 0, sizeof(co));
  co.timeout_ms = timeout_ms;
  rn_buf_init(&frame);
  ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frame, body, strlen(body)));
  ASSERT_OK(rn_pool_call(pool, frame.base, frame.len, &co, test_record, o));
  rn_buf_free(&frame);
  ASSERT_EQ(o->fired, 0);
}

void test_pool_options(rn_pool_options_t *po, const char *endpoint,
                       rn_protocol_t protocol) {
  /* rn_pool_new copies the list; the array only has to outlive the
   * options. */
  static const char *list[1];
  rn_pool_options_init(po);
  list[0] = endpoint;
  po->endpoints = list;
  po->endpoint_count = 1;
  po->codec.protocol = protocol;
}

void test_pool_line_options(rn_pool_options_t *po, const char *endpoint) {
  test_pool_options(po, endpoint, RN_PROTOCOL_LINE);
  po->heartbeat.interval_ms = 0;
}

rn_pool_stats_t test_pool_stats(rn_pool_t *pool) {
  rn_pool_stats_t st;
  rn_pool_stats(pool, &st);
  return st;
}

void test_pool_set_endpoints(rn_pool_t *pool, const char *a, const char *b) {
  const char *list[2];
  list[0] = a;
  list[1] = b;
  ASSERT_OK(rn_pool_set_endpoints(pool, list, b != NULL ? 2 : 1));
}

static int pools_closed;

static void count_close(rn_pool_t *p) {
  (void)p;
  pools_closed++;
}

void test_pool_close_wait(rn_loop_t *loop, rn_pool_t *pool) {
  int before = pools_closed;
  rn_pool_close(pool, 0, count_close);
  RUN_UNTIL(rn_loop_uv(loop), pools_closed > before, 2000);
}

void test_resp_command(rn_buf_t *out, const char *cmd) {
  const char *p = cmd;
  size_t words = 1;
  for (; *p; p++)
    if (*p == ' ') words++;
  ASSERT_OK(rn_resp_encode_array(out, words));
  for (p = cmd; *p;) {
    size_t n = strcspn(p, " ");
    ASSERT_OK(rn_resp_encode_bulk(out, p, n));
    p += n;
    if (*p == ' ') p++;
  }
}


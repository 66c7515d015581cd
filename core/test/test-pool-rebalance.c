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
  po.reconnect.initial = 50;
  po.reconnect.max = 100;
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

  while (done < sent) uv_run(rn_loop_uv(loop), UV_RUN_ONCE);
  rn_buf_free(&frame);
  rn_pool_close(pool, 0, NULL);
  rn_server_close(a, NULL);
  rn_server_close(b, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

TEST_LIST_START
  TEST_ENTRY(test_recovered_endpoint_gets_calls)
TEST_LIST_END

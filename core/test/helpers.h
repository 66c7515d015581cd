/* Pieces several C tests share: an echo handler for resilnet's server and
 * a way to let the loop run for a while. Include after task.h. */
#ifndef RN_TEST_HELPERS_H
#define RN_TEST_HELPERS_H

#include "resilnet.h"

#include <stdio.h>
#include <uv.h>

/* Replies with the request's body as a RESP bulk string. */
static inline void test_echo_bulk(rn_server_t *server, rn_request_t *req,
                                  const char *body, size_t len) {
  rn_buf_t out;
  (void)server;
  rn_buf_init(&out);
  ASSERT_OK(rn_resp_encode_bulk(&out, body, len));
  ASSERT_OK(rn_request_reply(req, out.base, out.len));
  rn_buf_free(&out);
}

/* Starts resilnet's server for protocol on listen ("127.0.0.1:0" for a
 * free port, or an endpoint to listen on again after a restart) and writes
 * its "host:port" into endpoint (size >= 96). */
static inline rn_server_t *test_start_server(rn_loop_t *loop,
                                             rn_protocol_t protocol,
                                             rn_request_cb on_request,
                                             const char *listen,
                                             char *endpoint) {
  rn_server_options_t so;
  rn_server_t *server;
  char host[64];
  int port;
  rn_server_options_init(&so);
  so.listen = listen;
  so.codec.protocol = protocol;
  so.on_request = on_request;
  ASSERT_OK(rn_server_new(loop, &so, &server));
  ASSERT_OK(rn_server_address(server, host, sizeof(host), &port));
  ASSERT_GT(port, 0);
  snprintf(endpoint, 96, "%s:%d", host, port);
  return server;
}

static inline void test_stop_loop(uv_timer_t *t) { uv_stop(t->loop); }

/* Runs the loop for ms, with a timer of its own to end the run: listening
 * servers keep a loop busy forever and heartbeat timers do not keep it
 * busy at all, so neither "until idle" nor "once" would do. */
static inline void test_run_for(uv_loop_t *uv, uint64_t ms) {
  uv_timer_t t;
  uv_timer_init(uv, &t);
  uv_timer_start(&t, test_stop_loop, ms, 0);
  uv_run(uv, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(uv, UV_RUN_NOWAIT);
}

#endif /* RN_TEST_HELPERS_H */

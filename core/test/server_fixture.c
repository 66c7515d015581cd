/* The server fixture (server_fixture.h). */
#include "server_fixture.h"
#include "task.h"

#include <stdio.h>

rn_server_t *test_start_server(rn_loop_t *loop, rn_protocol_t protocol,
                               rn_request_cb on_request, const char *listen,
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

void test_reply(rn_request_t *req, const char *body, size_t len) {
  rn_buf_t out;
  rn_buf_init(&out);
  ASSERT_OK(rn_codec_encode(rn_server_codec(rn_request_server(req)), &out,
                            body, len));
  ASSERT_OK(rn_request_reply(req, out.base, out.len));
  rn_buf_free(&out);
}

void test_echo(rn_server_t *server, rn_request_t *req, const char *body,
               size_t len) {
  (void)server;
  test_reply(req, body, len);
}

void test_echo_bulk(rn_server_t *server, rn_request_t *req, const char *body,
                    size_t len) {
  rn_buf_t out;
  (void)server;
  rn_buf_init(&out);
  ASSERT_OK(rn_resp_encode_bulk(&out, body, len));
  ASSERT_OK(rn_request_reply(req, out.base, out.len));
  rn_buf_free(&out);
}

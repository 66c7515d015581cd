/* The server fixture (server_fixture.h). */
#include "server_fixture.h"
#include "task.h"
#include "wait.h"

#include <stdio.h>
#include <string.h>

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

void test_reply_bulk(rn_request_t *req, const char *text, size_t len) {
  rn_buf_t out;
  rn_buf_init(&out);
  ASSERT_OK(rn_resp_encode_bulk(&out, text, len));
  ASSERT_OK(rn_request_reply(req, out.base, out.len));
  rn_buf_free(&out);
}

void test_echo_bulk(rn_server_t *server, rn_request_t *req, const char *body,
                    size_t len) {
  (void)server;
  test_reply_bulk(req, body, len);
}

void test_server_on_request(rn_server_t *server, rn_request_t *req,
                            const char *body, size_t len) {
  test_server_t *t = rn_server_data(server);
  t->handled++;
  if (t->mode == TEST_SERVER_ECHO) {
    ASSERT_OK(rn_request_reply(req, body, len));
  } else if (t->mode == TEST_SERVER_BIG) {
    static char big[65536];
    ASSERT_OK(rn_request_reply(req, big, sizeof(big)));
  } else {
    ASSERT_LT(t->nheld, TEST_HELD_MAX);
    snprintf(t->bodies[t->nheld], sizeof(t->bodies[0]), "%.*s", (int)len,
             body);
    t->held[t->nheld++] = req;
  }
}

void test_server_on_event(rn_server_t *server, const rn_server_event_t *ev) {
  test_server_t *t = rn_server_data(server);
  ASSERT_LT(ev->type, 16);
  t->events[ev->type]++;
  t->last_event_id = ev->id;
}

void test_server_on_closed(rn_server_t *server) {
  test_server_t *t = rn_server_data(server);
  t->closed++;
}

void test_server_start(test_server_t *t, rn_loop_t *loop,
                       rn_server_options_t *o) {
  char host[64];
  memset(t, 0, sizeof(*t));
  if (loop == NULL) ASSERT_OK(rn_loop_new(NULL, &loop));
  t->loop = loop;
  t->uv = rn_loop_uv(loop);
  o->data = t;
  o->listen = "127.0.0.1:0";
  if (o->on_request == NULL) o->on_request = test_server_on_request;
  if (o->on_event == NULL) o->on_event = test_server_on_event;
  ASSERT_OK(rn_server_new(t->loop, o, &t->server));
  ASSERT_OK(rn_server_address(t->server, host, sizeof(host), &t->port));
}

void test_server_finish(test_server_t *t) {
  if (!t->closed) rn_server_close(t->server, test_server_on_closed);
  RUN_UNTIL(t->uv, t->closed > 0, 5000);
  ASSERT_EQ(t->closed, 1);
  ASSERT_OK(rn_loop_free(t->loop));
}

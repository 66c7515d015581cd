/* The warm-up of a case run under valgrind (task.h). valgrind translates
 * each piece of code the first time it runs, so a program's first round
 * trip is many times slower than its next; cases whose first exchange
 * must beat a bound of tens of milliseconds failed in a process of their
 * own, where they used to run after other cases. A round trip of each
 * protocol, through the fault proxy too, warms the paths they share. */
#include "resilnet.h"
#include "pool_fixture.h"
#include "server_fixture.h"
#include "task.h"
#include "wait.h"

#include <stdio.h>

/* An echo in each protocol's terms: rnp replies carry the body alone. */
static void echo(rn_server_t *server, rn_request_t *req, const char *body,
                 size_t len) {
  switch (rn_server_codec(server)->protocol) {
  case RN_PROTOCOL_RNP:
    ASSERT_OK(rn_request_reply(req, body, len));
    break;
  case RN_PROTOCOL_RESP:
    test_echo_bulk(server, req, body, len);
    break;
  default:
    test_echo(server, req, body, len);
  }
}

static void round_trip(rn_loop_t *loop, rn_protocol_t protocol) {
  rn_proxy_options_t xo;
  rn_pool_options_t po;
  rn_server_t *server;
  rn_proxy_t *proxy;
  rn_pool_t *pool;
  test_outcome_t o;
  char ep[96], host[64], via[96];
  int port;

  server = test_start_server(loop, protocol, echo, "127.0.0.1:0", ep);
  rn_proxy_options_init(&xo);
  xo.listen = "127.0.0.1:0";
  xo.upstream = ep;
  ASSERT_OK(rn_proxy_new(loop, &xo, &proxy));
  ASSERT_OK(rn_proxy_address(proxy, host, sizeof(host), &port));
  snprintf(via, sizeof(via), "%s:%d", host, port);
  test_pool_options(&po, via, protocol);
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  test_call(pool, "warm", 0, &o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 30000);
  ASSERT_OK(o.status);
  test_pool_close_wait(loop, pool);
  rn_proxy_close(proxy, NULL);
  rn_server_close(server, NULL);
}

void test_warmup(void) {
  rn_loop_t *loop = test_loop_open();
  round_trip(loop, RN_PROTOCOL_LINE);
  round_trip(loop, RN_PROTOCOL_RESP);
  round_trip(loop, RN_PROTOCOL_RNP);
  test_loop_close(loop);
}

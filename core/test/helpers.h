/* Pieces several C tests share: an echo handler for resilnet's server and
 * a way to let the loop run for a while. Include after task.h. */
#ifndef RN_TEST_HELPERS_H
#define RN_TEST_HELPERS_H

#include "resilnet.h"

#include <stdio.h>
#include <uv.h>

#include "wait.h" /* test_run_for */

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

/* How late the loop itself runs, for bounds on how late something happens:
 * on a loaded machine the whole process waits for a core now and then
 * (over 100 ms in a parallel sanitizer run beside other builds), which
 * delays a timer no less than a bug would. A uv timer repeating every
 * TEST_PROBE_MS notes how much later than its period each tick came. */
#define TEST_PROBE_MS 2

typedef struct {
  uv_timer_t timer;
  uint64_t last;  /* uv_hrtime() of the last tick */
  uint64_t worst; /* ns: the latest tick since test_probe_take */
} test_probe_t;

static inline uint64_t test_probe_late_now(const test_probe_t *p) {
  uint64_t since = uv_hrtime() - p->last;
  uint64_t period = TEST_PROBE_MS * 1000000ull;
  return since > period ? since - period : 0;
}

static inline void test_probe_tick(uv_timer_t *t) {
  test_probe_t *p = t->data;
  uint64_t late = test_probe_late_now(p);
  if (late > p->worst) p->worst = late;
  p->last = uv_hrtime();
}

/* The probe keeps the loop alive until test_probe_stop. */
static inline void test_probe_start(uv_loop_t *uv, test_probe_t *p) {
  ASSERT_OK(uv_timer_init(uv, &p->timer));
  p->timer.data = p;
  p->last = uv_hrtime();
  p->worst = 0;
  ASSERT_OK(uv_timer_start(&p->timer, test_probe_tick, TEST_PROBE_MS,
                           TEST_PROBE_MS));
}

/* The loop's worst lateness in ms since the last take (or the start),
 * including a stall it is only now coming out of (timers due before the
 * probe's tick run first), and starts over. */
static inline double test_probe_take(test_probe_t *p) {
  uint64_t late = test_probe_late_now(p);
  if (late < p->worst) late = p->worst;
  p->worst = 0;
  return (double)late / 1e6;
}

static inline void test_probe_stop(test_probe_t *p) {
  uv_close((uv_handle_t *)&p->timer, NULL);
}

#endif /* RN_TEST_HELPERS_H */

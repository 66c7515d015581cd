/*
 * resilnet from C, inside a libuv loop the program owns.
 *
 * The program has its own uv_loop_t (as a real application would, with its
 * own timers and sockets on it); resilnet attaches to it with rn_loop_new()
 * and adds its handles to it. To be self-contained the example also runs
 * resilnet's rnp server on the same loop; point the pool at any rnp server
 * instead.
 *
 * It sends a few calls (one idempotent, one keyed, one plain), prints each
 * reply, closes the pool and the server, lets uv_run() return because
 * nothing is left on the loop, and checks that the loop closes cleanly.
 * Exit status 0 on success.
 */
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "resilnet.h"

#define CALLS 3

static rn_pool_t *pool;
static rn_server_t *server;
static int answered;
static int failures;

/* Server side: uppercase the request. The request must be answered (or
 * failed, or dropped) exactly once; answering from inside the callback is
 * the simplest case. */
static void on_request(rn_server_t *srv, rn_request_t *req, const char *body,
                       size_t len) {
  char reply[64];
  size_t i, n = len < sizeof(reply) ? len : sizeof(reply);
  (void)srv;
  for (i = 0; i < n; i++)
    reply[i] = (char)(body[i] >= 'a' && body[i] <= 'z' ? body[i] - 32
                                                       : body[i]);
  if (rn_request_reply(req, reply, n) != 0)
    fprintf(stderr, "reply failed\n");
}

/* Client side: fires exactly once per accepted call. The result (and its
 * body) is valid only during the callback: copy what you keep. */
static void on_result(rn_pool_t *p, void *data, const rn_result_t *r) {
  const char *what = (const char *)data;
  (void)p;
  if (r->status == 0) {
    printf("%-10s -> %.*s (%u attempt%s)\n", what, (int)r->body_len, r->body,
           r->attempts, r->attempts == 1 ? "" : "s");
  } else {
    /* maybe_executed == 0 means the server cannot have run the call. */
    printf("%-10s failed: %s: %s (maybe executed: %s)\n", what,
           rn_err_name(r->status), rn_strerror(r->status),
           r->maybe_executed ? "yes" : "no");
    failures++;
  }
  if (++answered == CALLS) {
    /* Everything answered: close. Each close completes asynchronously; the
     * objects are freed after their close callbacks (NULL here). */
    rn_pool_close(pool, 0, NULL);
    rn_server_close(server, NULL);
  }
}

/* Encodes body with the pool's codec (rnp: a REQUEST frame whose id and
 * deadline the pool fills in as it leaves) and starts the call. The frame
 * is copied by rn_pool_call, so the buffer is ours to free at once. */
static int call(const char *body, const rn_call_options_t *co,
                const char *what) {
  rn_buf_t frame;
  int rc;
  rn_buf_init(&frame);
  rc = rn_codec_encode(rn_pool_codec(pool), &frame, body, strlen(body));
  if (rc == 0)
    rc = rn_pool_call(pool, frame.base, frame.len, co, on_result,
                      (void *)what);
  rn_buf_free(&frame);
  /* An error here means on_result will never run for this call. */
  if (rc != 0)
    fprintf(stderr, "%s: %s\n", what, rn_strerror(rc));
  return rc;
}

int main(void) {
  uv_loop_t uv;
  rn_loop_t *loop;
  rn_server_options_t so;
  rn_pool_options_t po;
  rn_call_options_t co;
  char host[64], endpoint[96];
  const char *endpoints[1];
  int port, rc;

  /* The application's loop. resilnet never runs it: we do. */
  if (uv_loop_init(&uv) != 0)
    return 1;
  if ((rc = rn_loop_new(&uv, &loop)) != 0) {
    fprintf(stderr, "rn_loop_new: %s\n", rn_strerror(rc));
    return 1;
  }

  rn_server_options_init(&so);
  so.listen = "127.0.0.1:0";
  so.codec.protocol = RN_PROTOCOL_RNP;
  so.on_request = on_request;
  so.dedupe.on = 1; /* keyed calls run at most once per key */
  if ((rc = rn_server_new(loop, &so, &server)) != 0 ||
      (rc = rn_server_address(server, host, sizeof(host), &port)) != 0) {
    fprintf(stderr, "server: %s\n", rn_strerror(rc));
    return 1;
  }
  snprintf(endpoint, sizeof(endpoint), "%s:%d", host, port);
  printf("server     listening on %s (rnp)\n", endpoint);

  /* rn_pool_options_init fills in every default; set what differs. The
   * endpoint strings are copied by rn_pool_new. */
  rn_pool_options_init(&po);
  endpoints[0] = endpoint;
  po.endpoints = endpoints;
  po.endpoint_count = 1;
  po.codec.protocol = RN_PROTOCOL_RNP;
  po.size = 2;
  po.timeout_ms = 2000; /* ms, each call's whole deadline */
  if ((rc = rn_pool_new(loop, &po, &pool)) != 0) {
    fprintf(stderr, "rn_pool_new: %s\n", rn_strerror(rc));
    return 1;
  }

  memset(&co, 0, sizeof(co)); /* zeroes: the pool's defaults */
  co.idempotent = 1;          /* safe to retry even after it was sent */
  if (call("read balance", &co, "idempotent") != 0)
    return 1;
  memset(&co, 0, sizeof(co));
  co.key = "transfer-42"; /* retried like an idempotent call, runs once */
  co.key_len = strlen(co.key);
  if (call("transfer 10", &co, "keyed") != 0)
    return 1;
  if (call("log visit", NULL, "plain") != 0) /* never sent twice */
    return 1;

  /* Runs until nothing is left: the calls, then the closes. Idle pooled
   * connections and heartbeat timers do not keep the loop alive. */
  uv_run(&uv, UV_RUN_DEFAULT);

  if ((rc = rn_loop_free(loop)) != 0) {
    fprintf(stderr, "rn_loop_free: %s\n", rn_strerror(rc));
    return 1;
  }
  /* On a loop it does not own, rn_loop_free only starts closing its own
   * few handles: one more turn lets their close callbacks run. */
  uv_run(&uv, UV_RUN_DEFAULT);
  if (uv_loop_close(&uv) != 0) {
    fprintf(stderr, "a handle was left open on the loop\n");
    return 1;
  }
  printf("done: %d answered, %d failed\n", answered, failures);
  return answered == CALLS && failures == 0 ? 0 : 1;
}

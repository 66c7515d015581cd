/* rnb-hiredis-client: the same closed-loop workload as rnb-uv-client
 * (ECHO of --size bytes, `conns` connections, `depth` calls in flight on
 * each) through hiredis' async API on its libuv adapter, the C client a
 * Redis user would otherwise pick. A peer for comparison only: built when
 * libhiredis-dev is installed (bench/CMakeLists.txt), never linked into
 * resilnet. RESP only; options and RESULT line: see common.h. */
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "common.h"

static rnb_opts_t opts;
static uv_loop_t *loop;
static redisAsyncContext **ctxs;
static char *payload;
static unsigned ready, closed;
static int stopping;
static uint64_t completed, failed, issued, outstanding;
static rnb_window_t win;

static void call_one(redisAsyncContext *c);

static void finish_if_done(void) {
  unsigned i;
  if (!stopping || outstanding > 0 || ctxs == NULL) return;
  for (i = 0; i < opts.conns; i++)
    if (ctxs[i] != NULL) redisAsyncDisconnect(ctxs[i]);
  rnb_window_close(&win);
}

static void on_reply(redisAsyncContext *c, void *r, void *priv) {
  redisReply *reply = r;
  (void)priv;
  outstanding--;
  if (reply == NULL || reply->type != REDIS_REPLY_STRING ||
      reply->len != (size_t)opts.size)
    failed++;
  else
    completed++;
  if (!stopping) {
    if (opts.calls > 0 && issued >= opts.calls)
      stopping = 1;
    else
      call_one(c);
  }
  finish_if_done();
}

static void call_one(redisAsyncContext *c) {
  if (redisAsyncCommand(c, on_reply, NULL, "ECHO %b", payload,
                        opts.size) != REDIS_OK) {
    fprintf(stderr, "rnb-hiredis-client: redisAsyncCommand: %s\n", c->errstr);
    exit(1);
  }
  outstanding++;
  issued++;
}

static void on_window_end(void) {
  stopping = 1;
  finish_if_done();
}

static void start(void) {
  unsigned i, d;
  rnb_window_start(&win);
  for (d = 0; d < opts.depth; d++)
    for (i = 0; i < opts.conns; i++)
      if (opts.calls == 0 || issued < opts.calls) call_one(ctxs[i]);
}

static void on_connect(const redisAsyncContext *c, int status) {
  if (status != REDIS_OK) {
    fprintf(stderr, "rnb-hiredis-client: connect: %s\n", c->errstr);
    exit(1);
  }
  if (++ready == opts.conns) start();
}

static void on_disconnect(const redisAsyncContext *c, int status) {
  unsigned i;
  (void)status;
  for (i = 0; i < opts.conns; i++)
    if (ctxs[i] == c) ctxs[i] = NULL;
  closed++;
}

int main(int argc, char **argv) {
  unsigned i;
  rnb_parse(argc, argv, &opts);
  if (strcmp(opts.proto, "resp") != 0) {
    fprintf(stderr, "rnb-hiredis-client: only --proto resp\n");
    return 2;
  }
  if (opts.rate > 0) {
    fprintf(stderr, "rnb-hiredis-client: closed loop only (no --rate)\n");
    return 2;
  }
  loop = uv_default_loop();
  payload = rnb_payload(opts.size);
  rnb_window_init(&win, loop, &opts, &completed, on_window_end);
  ctxs = calloc(opts.conns, sizeof(*ctxs));
  if (ctxs == NULL) return 1;
  for (i = 0; i < opts.conns; i++) {
    ctxs[i] = redisAsyncConnect(opts.host, opts.port);
    if (ctxs[i] == NULL || ctxs[i]->err) {
      fprintf(stderr, "rnb-hiredis-client: redisAsyncConnect failed\n");
      return 1;
    }
    redisLibuvAttach(ctxs[i], loop);
    redisAsyncSetConnectCallback(ctxs[i], on_connect);
    redisAsyncSetDisconnectCallback(ctxs[i], on_disconnect);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  rnb_window_report(&win, "hiredis", failed, NULL);
  free(ctxs);
  free(payload);
  return failed > 0 || closed != opts.conns;
}

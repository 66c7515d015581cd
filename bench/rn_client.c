/* rnb-rn-client: the same workload as rnb-uv-client, through resilnet's C
 * API: one pool of `conns` connections, every call an rn_pool_call() with
 * the pool's defaults (deadline, heartbeats, retry rules), the request
 * encoded once with resilnet's own encoders. Options: see common.h. */
#include <signal.h>

#include <resilnet.h>

#include "common.h"

static rnb_opts_t opts;
static rn_loop_t *loop;
static rn_pool_t *pool;
static rn_buf_t frame;
static int stopping, closed;
static uint64_t completed, failed, issued, outstanding;
static uint64_t t_rate0, sent_due;
static rnb_lat_t lat;
static rnb_window_t win;
static uv_timer_t tick_timer;
static int last_error;

static void call_one(void *data);

static void on_pool_closed(rn_pool_t *p) {
  (void)p;
  closed = 1;
}

static void maybe_finish(void) {
  if (!stopping || outstanding > 0 || pool == NULL) return;
  rn_pool_close(pool, 0, on_pool_closed);
  pool = NULL;
  rnb_window_close(&win);
  if (!uv_is_closing((uv_handle_t *)&tick_timer))
    uv_close((uv_handle_t *)&tick_timer, NULL);
}

static void on_reply(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  outstanding--;
  if (r->status != 0) {
    failed++;
    last_error = r->status;
  } else {
    completed++;
  }
  if (opts.rate > 0) {
    uint64_t due = (uint64_t)(uintptr_t)data;
    if (rnb_window_has(&win, due)) rnb_lat_add(&lat, rnb_now_ns() - due);
  } else if (!stopping) {
    if (opts.calls > 0 && issued + 1 >= opts.calls) stopping = 1;
    call_one(NULL);
  }
  maybe_finish();
}

static void call_one(void *data) {
  int err = rn_pool_call(pool, frame.base, frame.len, NULL, on_reply, data);
  if (err != 0) {
    fprintf(stderr, "rnb-rn-client: rn_pool_call: %s\n", rn_strerror(err));
    exit(1);
  }
  outstanding++;
  issued++;
}

static void on_tick(uv_timer_t *t) {
  uint64_t now = rnb_now_ns(), due_total;
  (void)t;
  if (stopping) return;
  due_total = (uint64_t)((double)(now - t_rate0) / 1e9 * opts.rate);
  for (; sent_due < due_total; sent_due++)
    call_one((void *)(uintptr_t)(t_rate0 + (uint64_t)((double)sent_due *
                                                      1e9 / opts.rate)));
}

static void on_window_begin(void) {
  rn_pool_stats_t st;
  rn_pool_stats(pool, &st);
  if (st.open != opts.conns)
    fprintf(stderr, "rnb-rn-client: %u connections open after warm-up\n",
            st.open);
}

static void on_window_end(void) {
  stopping = 1;
  maybe_finish();
}

static void start(void) {
  uint64_t i, n = (uint64_t)opts.conns * opts.depth;
  rnb_window_start(&win);
  if (opts.rate > 0) {
    t_rate0 = rnb_now_ns();
    uv_timer_start(&tick_timer, on_tick, 1, 1);
    return;
  }
  if (opts.calls > 0 && n > opts.calls) n = opts.calls;
  for (i = 0; i < n; i++) call_one(NULL);
  if (opts.calls > 0 && issued >= opts.calls) stopping = 1;
}

/* min_idle opens the connections; wait (bounded) until all are ready. */
static void on_ready_check(uv_timer_t *t) {
  static unsigned ticks;
  rn_pool_stats_t st;
  rn_pool_stats(pool, &st);
  if (st.idle < opts.conns && ++ticks < 2000) return;
  if (st.idle < opts.conns)
    fprintf(stderr, "rnb-rn-client: only %u of %u connections ready\n",
            st.idle, opts.conns);
  uv_timer_stop(t);
  start();
}

static void build_frame(void) {
  char *payload = rnb_payload(opts.size);
  int err;
  rn_buf_init(&frame);
  if (strcmp(opts.proto, "resp") == 0) {
    err = rn_resp_encode_array(&frame, 2);
    if (!err) err = rn_resp_encode_bulk(&frame, "ECHO", 4);
    if (!err) err = rn_resp_encode_bulk(&frame, payload, opts.size);
  } else {
    err = rn_codec_encode(rn_pool_codec(pool), &frame, payload, opts.size);
  }
  if (err) {
    fprintf(stderr, "rnb-rn-client: encode: %s\n", rn_strerror(err));
    exit(2);
  }
  free(payload);
}

int main(int argc, char **argv) {
  uv_loop_t *uv = uv_default_loop();
  rn_pool_options_t po;
  char endpoint[300];
  const char *endpoints[1];
  int err;

  rnb_parse(argc, argv, &opts);
  signal(SIGPIPE, SIG_IGN);
  rnb_raise_nofile();
  if (rn_loop_new(uv, &loop) != 0) abort();
  snprintf(endpoint, sizeof(endpoint), "%s:%d", opts.host, opts.port);
  endpoints[0] = endpoint;
  rn_pool_options_init(&po);
  po.endpoints = endpoints;
  po.endpoint_count = 1;
  if (rn_protocol_parse(opts.proto, &po.codec.protocol) != 0) rnb_usage(argv[0]);
  po.size = opts.conns;
  po.min_idle = opts.conns;
  po.max_pending = 1u << 30;
  po.timeout_ms = 60000; /* a benchmark measures speed, not deadlines */
  if (po.codec.protocol == RN_PROTOCOL_LENGTH) {
    po.heartbeat.ping = "p"; /* the echo server answers it like a call */
    po.heartbeat.ping_len = 1;
  }
  err = rn_pool_new(loop, &po, &pool);
  if (err) {
    fprintf(stderr, "rnb-rn-client: rn_pool_new: %s\n", rn_strerror(err));
    return 1;
  }
  build_frame();
  rnb_window_init(&win, uv, &opts, &completed, on_window_end);
  win.on_begin = on_window_begin;
  uv_timer_init(uv, &tick_timer);
  /* Every connection up before the clock starts, as the baseline's are
   * (the tick timer checks; in an open loop start() then ticks with it). */
  uv_timer_start(&tick_timer, on_ready_check, 5, 5);
  uv_run(uv, UV_RUN_DEFAULT);
  if (failed > 0)
    fprintf(stderr, "rnb-rn-client: %llu calls failed, last: %s\n",
            (unsigned long long)failed, rn_err_name(last_error));
  rnb_window_report(&win, "rn-c", failed, opts.rate > 0 ? &lat : NULL);
  rn_buf_free(&frame);
  free(lat.v);
  if (!closed || rn_loop_free(loop) != 0) {
    fprintf(stderr, "rnb-rn-client: pool did not close\n");
    return 1;
  }
  uv_run(uv, UV_RUN_DEFAULT); /* the rn loop's own close callbacks */
  return uv_loop_close(uv) == 0 ? 0 : 1;
}

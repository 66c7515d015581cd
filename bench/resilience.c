/* rnb-resilience: how fast resilnet notices trouble and recovers, against
 * rnb-echo-server run as a child process it controls.
 *
 *   rnb-resilience deadpeer --server PATH [--timeout-ms T] [--interval-ms I]
 *                           [--via direct|proxy] [--trials K]
 *     A call every 10 ms on one pooled connection with heartbeats
 *     (interval I, timeout T); then SIGSTOP the server (a frozen process:
 *     no FIN, no RST), or with --via proxy, through resilnet's fault proxy
 *     (rn_proxy_*, in this process), turn on its blackhole fault (every
 *     byte read and dropped both ways). Reports the silence before the
 *     dead-peer verdict, measured from the last reply read, against T.
 *   rnb-resilience restart --server PATH [--backoff-ms B] [--down-ms D]
 *                          [--trials K]
 *     Four call chains (two idempotent, two not) on a pool whose reconnect
 *     backoff is a constant B ms; SIGKILL the server, start it again on the
 *     same port D ms later. Reports the time from the new server listening
 *     to the first successful call (bound: B + 5 ms) and the calls that
 *     failed across the restart, by kind.
 *   rnb-resilience proxycost --server PATH [--conns C] [--depth D]
 *                            [--secs S] [--trials K]
 *     The proxy's own cost with no fault: C connections with D calls in
 *     flight on each, for S seconds, straight to the server and through
 *     the proxy, in turn (the first path alternates per trial). Reports
 *     calls/s, latency percentiles and this process's CPU per call for
 *     each path; the proxy runs on the client's loop, as in a harness. */
#include <signal.h>

#include <resilnet.h>

#include "common.h"

static uv_loop_t *uv;
static rn_loop_t *loop;
static const char *server_path;
static uint64_t hb_timeout = 1000, hb_interval = 100, backoff = 50,
                down_ms = 300;
static int trials = 3, mode_deadpeer, mode_proxycost, via_proxy;
static unsigned pc_conns = 8, pc_depth = 4;
static double pc_secs = 1;

/* --- the server child ---------------------------------------------------- */

static uv_process_t proc;
static uv_pipe_t proc_out;
static int proc_port, proc_running;
static char proc_line[64];
static size_t proc_line_len;
static uint64_t t_listening;
static void (*on_listening)(void);

static void on_proc_exit(uv_process_t *p, int64_t status, int sig) {
  (void)status;
  (void)sig;
  proc_running = 0;
  uv_close((uv_handle_t *)p, NULL);
}

static void proc_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  static char space[256];
  (void)h;
  (void)hint;
  *buf = uv_buf_init(space, sizeof(space));
}

static void proc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  ssize_t i;
  if (n < 0) {
    uv_close((uv_handle_t *)s, NULL);
    return;
  }
  for (i = 0; i < n; i++) {
    if (buf->base[i] == '\n') {
      proc_line[proc_line_len] = 0;
      if (strncmp(proc_line, "PORT ", 5) == 0) {
        proc_port = atoi(proc_line + 5);
        t_listening = rnb_now_ns();
        if (on_listening) on_listening();
      }
      proc_line_len = 0;
    } else if (proc_line_len + 1 < sizeof(proc_line)) {
      proc_line[proc_line_len++] = buf->base[i];
    }
  }
}

static void server_start(int port, void (*cb)(void)) {
  char port_text[16];
  char *args[4];
  uv_process_options_t po;
  uv_stdio_container_t stdio[3];
  int err;

  snprintf(port_text, sizeof(port_text), "%d", port);
  args[0] = (char *)server_path;
  args[1] = "--port";
  args[2] = port_text;
  args[3] = NULL;
  uv_pipe_init(uv, &proc_out, 0);
  memset(&po, 0, sizeof(po));
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&proc_out;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  po.file = server_path;
  po.args = args;
  po.stdio = stdio;
  po.stdio_count = 3;
  po.exit_cb = on_proc_exit;
  on_listening = cb;
  proc_line_len = 0;
  err = uv_spawn(uv, &proc, &po);
  if (err) {
    fprintf(stderr, "rnb-resilience: spawn %s: %s\n", server_path,
            uv_strerror(err));
    exit(1);
  }
  proc_running = 1;
  uv_read_start((uv_stream_t *)&proc_out, proc_alloc, proc_read);
}

/* --- the proxy ----------------------------------------------------------- */

static rn_proxy_t *proxy;
static int proxy_port, proxy_closed = 1;

static void on_proxy_closed(rn_proxy_t *p) {
  (void)p;
  proxy_closed = 1;
}

/* A proxy in this process, on this loop, in front of the server. */
static void new_proxy(void) {
  rn_proxy_options_t o;
  char upstream[64], host[64];
  snprintf(upstream, sizeof(upstream), "127.0.0.1:%d", proc_port);
  rn_proxy_options_init(&o);
  o.listen = "127.0.0.1:0";
  o.upstream = upstream;
  o.seed = 1;
  if (rn_proxy_new(loop, &o, &proxy) != 0 ||
      rn_proxy_address(proxy, host, sizeof(host), &proxy_port) != 0)
    abort();
  proxy_closed = 0;
}

static void close_proxy(void) {
  if (proxy != NULL) rn_proxy_close(proxy, on_proxy_closed);
  proxy = NULL;
}

/* --- the pool ------------------------------------------------------------ */

static rn_pool_t *pool;
static uv_timer_t traffic, step;
static const char frame[] = {0, 0, 0, 3, 'a', 'b', 'c'};
static int trial, stopping, pool_closed;
static uint64_t t_last_reply, t_signal, t_dead, t_first_ok;
static uint64_t ok_calls, failed_idem, failed_plain, failed_maybe;
static unsigned in_flight;

static double ms_since(uint64_t from, uint64_t to) {
  return (double)(to - from) / 1e6;
}

static void on_event(rn_pool_t *p, const rn_pool_event_t *ev) {
  (void)p;
  if (ev->type == RN_EVENT_STATE && ev->connection != 0 && ev->reason &&
      strcmp(ev->reason, "dead_peer") == 0 && t_dead == 0)
    t_dead = rnb_now_ns();
}

static void call_next(int idempotent);

static void on_reply(rn_pool_t *p, void *data, const rn_result_t *r) {
  int idempotent = data != NULL;
  uint64_t now = rnb_now_ns();
  (void)p;
  in_flight--;
  if (r->status == 0) {
    ok_calls++;
    t_last_reply = now;
    if (t_listening != 0 && t_first_ok == 0 && now > t_listening)
      t_first_ok = now;
  } else if (!stopping) {
    if (idempotent) failed_idem++;
    else failed_plain++;
    if (r->maybe_executed) failed_maybe++;
  }
  if (!mode_deadpeer && !stopping) call_next(idempotent);
}

static void call_next(int idempotent) {
  rn_call_options_t co;
  memset(&co, 0, sizeof(co));
  co.idempotent = idempotent;
  if (rn_pool_call(pool, frame, sizeof(frame), &co, on_reply,
                   idempotent ? (void *)1 : NULL) == 0)
    in_flight++;
}

static void on_traffic(uv_timer_t *t) {
  (void)t;
  if (!stopping) call_next(0);
}

static void new_pool(int port) {
  rn_pool_options_t o;
  char endpoint[64];
  const char *endpoints[1] = {endpoint};
  snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", port);
  rn_pool_options_init(&o);
  o.endpoints = endpoints;
  o.endpoint_count = 1;
  o.codec.protocol = RN_PROTOCOL_LENGTH;
  o.heartbeat.ping = "p";
  o.heartbeat.ping_len = 1;
  o.on_event = on_event;
  o.timeout_ms = 10000;
  if (mode_deadpeer) {
    o.size = 1;
    o.heartbeat.interval_ms = hb_interval;
    o.heartbeat.timeout_ms = hb_timeout;
  } else if (mode_proxycost) {
    o.size = pc_conns;
    o.max_pending = pc_conns * pc_depth;
  } else {
    o.size = 4;
    o.reconnect.initial_ms = backoff;
    o.reconnect.max_ms = backoff;
    o.reconnect.multiplier = 1;
    o.reconnect.jitter = 0;
  }
  pool_closed = 0;
  if (rn_pool_new(loop, &o, &pool) != 0) abort();
}

static void on_pool_closed(rn_pool_t *p) {
  (void)p;
  pool_closed = 1;
}

static void next_trial(void);

static void end_trial(uv_timer_t *t) {
  (void)t;
  stopping = 1;
  uv_timer_stop(&traffic);
  if (mode_deadpeer) {
    printf("RESULT mode=deadpeer trial=%d via=%s timeout_ms=%llu "
           "interval_ms=%llu silence_ms=%.1f after_stop_ms=%.1f "
           "detected=%d\n",
           trial, via_proxy ? "proxy" : "direct",
           (unsigned long long)hb_timeout, (unsigned long long)hb_interval,
           t_dead ? ms_since(t_last_reply, t_dead) : -1.0,
           t_dead ? ms_since(t_signal, t_dead) : -1.0, t_dead != 0);
  } else if (!mode_proxycost) {
    printf("RESULT mode=restart trial=%d backoff_ms=%llu down_ms=%llu "
           "first_success_ms=%.1f ok=%llu failed_idempotent=%llu "
           "failed_other=%llu maybe_executed=%llu\n",
           trial, (unsigned long long)backoff, (unsigned long long)down_ms,
           t_first_ok ? ms_since(t_listening, t_first_ok) : -1.0,
           (unsigned long long)ok_calls, (unsigned long long)failed_idem,
           (unsigned long long)failed_plain,
           (unsigned long long)failed_maybe);
  }
  fflush(stdout);
  if (proc_running) uv_process_kill(&proc, SIGKILL);
  rn_pool_abort(pool, on_pool_closed);
  close_proxy();
  uv_timer_start(&step, (uv_timer_cb)next_trial, 50, 0);
}

/* deadpeer: freeze the server, wait for the verdict (bounded). */
static void dp_check(uv_timer_t *t) {
  static unsigned waited;
  if (t_dead != 0 || ++waited > hb_timeout * 3 / 10) {
    waited = 0;
    end_trial(t);
  }
}

static void dp_freeze(uv_timer_t *t) {
  t_signal = rnb_now_ns();
  if (via_proxy) {
    rn_fault_options_t fo;
    uint64_t id;
    rn_fault_options_init(&fo, RN_FAULT_BLACKHOLE);
    if (rn_proxy_fault_add(proxy, &fo, &id) != 0) abort();
  } else {
    uv_process_kill(&proc, SIGSTOP);
  }
  uv_timer_start(t, dp_check, 10, 10);
}

/* restart: kill, wait, start again on the same port. */
static void rs_started(void) {
  uv_timer_start(&step, end_trial, 300 + backoff, 0);
}

static void rs_restart(uv_timer_t *t) {
  (void)t;
  server_start(proc_port, rs_started);
}

static void rs_kill(uv_timer_t *t) {
  t_signal = rnb_now_ns();
  t_listening = 0;
  uv_process_kill(&proc, SIGKILL);
  uv_timer_start(t, rs_restart, down_ms, 0);
}

/* proxycost: two runs per trial, straight and through the proxy. */
typedef struct pc_chain_s {
  uint64_t start; /* when its call in flight was made */
} pc_chain_t;

static pc_chain_t *pc_chains;
static int pc_run, pc_measuring;
static uint64_t pc_calls, pc_failed, pc_t0;
static double pc_cpu0;
static rnb_lat_t pc_lat;

/* The first run of a trial alternates between the paths, so that a drift
 * in the machine's speed does not favour one. */
static int pc_through_proxy(void) { return (pc_run + trial) % 2 == 0; }

static void pc_call(pc_chain_t *c);

static void pc_on_reply(rn_pool_t *p, void *data, const rn_result_t *r) {
  pc_chain_t *c = data;
  uint64_t now = rnb_now_ns();
  (void)p;
  in_flight--;
  if (pc_measuring) {
    if (r->status == 0) {
      pc_calls++;
      rnb_lat_add(&pc_lat, now - c->start);
    } else {
      pc_failed++;
    }
  }
  if (!stopping) pc_call(c);
}

static void pc_call(pc_chain_t *c) {
  rn_call_options_t co;
  memset(&co, 0, sizeof(co));
  c->start = rnb_now_ns();
  if (rn_pool_call(pool, frame, sizeof(frame), &co, pc_on_reply, c) == 0)
    in_flight++;
  else if (pc_measuring)
    pc_failed++; /* the chain ends */
}

static void pc_start_run(void);

static void pc_after_run(uv_timer_t *t) {
  if (!pool_closed || in_flight > 0) {
    uv_timer_start(t, pc_after_run, 10, 0);
    return;
  }
  if (++pc_run < 2) {
    pc_start_run();
    return;
  }
  if (proc_running) uv_process_kill(&proc, SIGKILL);
  close_proxy();
  uv_timer_start(&step, (uv_timer_cb)next_trial, 10, 0);
}

static void pc_stop(uv_timer_t *t) {
  double secs = (double)(rnb_now_ns() - pc_t0) / 1e9;
  double cpu = rnb_cpu_seconds() - pc_cpu0;
  pc_measuring = 0;
  stopping = 1;
  qsort(pc_lat.v, pc_lat.n, sizeof(*pc_lat.v), rnb_cmp_u64);
  printf("RESULT mode=proxycost trial=%d via=%s conns=%u depth=%u "
         "secs=%.3f calls=%llu failed=%llu calls_per_s=%.0f p50=%.1f "
         "p99=%.1f p999=%.1f cpu_us_per_call=%.3f\n",
         trial, pc_through_proxy() ? "proxy" : "direct", pc_conns, pc_depth,
         secs, (unsigned long long)pc_calls, (unsigned long long)pc_failed,
         (double)pc_calls / secs, rnb_lat_pct(&pc_lat, 50),
         rnb_lat_pct(&pc_lat, 99), rnb_lat_pct(&pc_lat, 99.9),
         pc_calls ? cpu * 1e6 / (double)pc_calls : -1.0);
  fflush(stdout);
  rn_pool_abort(pool, on_pool_closed);
  uv_timer_start(t, pc_after_run, 10, 0);
}

static void pc_measure(uv_timer_t *t) {
  pc_calls = pc_failed = 0;
  pc_lat.n = 0;
  pc_t0 = rnb_now_ns();
  pc_cpu0 = rnb_cpu_seconds();
  pc_measuring = 1;
  uv_timer_start(t, pc_stop, (uint64_t)(pc_secs * 1000), 0);
}

static void pc_start_run(void) {
  unsigned i;
  stopping = 0;
  new_pool(pc_through_proxy() ? proxy_port : proc_port);
  for (i = 0; i < pc_conns * pc_depth; i++) pc_call(&pc_chains[i]);
  uv_timer_start(&step, pc_measure, 200, 0); /* warm-up: connects */
}

static void on_first_listen(void) {
  if (via_proxy || mode_proxycost) new_proxy();
  if (mode_proxycost) {
    pc_run = 0;
    pc_start_run();
    return;
  }
  new_pool(via_proxy ? proxy_port : proc_port);
  if (mode_deadpeer) {
    uv_timer_start(&traffic, on_traffic, 10, 10);
    uv_timer_start(&step, dp_freeze, 300, 0);
  } else {
    call_next(1);
    call_next(1);
    call_next(0);
    call_next(0);
    t_listening = 0;
    uv_timer_start(&step, rs_kill, 300, 0);
  }
}

static void next_trial(void) {
  if (!pool_closed || !proxy_closed || proc_running || in_flight > 0) {
    uv_timer_start(&step, (uv_timer_cb)next_trial, 10, 0);
    return;
  }
  if (++trial > trials) {
    uv_close((uv_handle_t *)&traffic, NULL);
    uv_close((uv_handle_t *)&step, NULL);
    return;
  }
  stopping = 0;
  t_last_reply = t_signal = t_dead = t_first_ok = t_listening = 0;
  ok_calls = failed_idem = failed_plain = failed_maybe = 0;
  server_start(0, on_first_listen);
}

int main(int argc, char **argv) {
  int i;
  if (argc < 2) goto usage;
  mode_deadpeer = strcmp(argv[1], "deadpeer") == 0;
  mode_proxycost = strcmp(argv[1], "proxycost") == 0;
  if (!mode_deadpeer && !mode_proxycost && strcmp(argv[1], "restart") != 0)
    goto usage;
  for (i = 2; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (strcmp(k, "--server") == 0) server_path = v;
    else if (strcmp(k, "--timeout-ms") == 0) hb_timeout = (uint64_t)atoll(v);
    else if (strcmp(k, "--interval-ms") == 0) hb_interval = (uint64_t)atoll(v);
    else if (strcmp(k, "--backoff-ms") == 0) backoff = (uint64_t)atoll(v);
    else if (strcmp(k, "--down-ms") == 0) down_ms = (uint64_t)atoll(v);
    else if (strcmp(k, "--trials") == 0) trials = atoi(v);
    else if (strcmp(k, "--via") == 0 && mode_deadpeer)
      via_proxy = strcmp(v, "proxy") == 0;
    else if (strcmp(k, "--conns") == 0) pc_conns = (unsigned)atoi(v);
    else if (strcmp(k, "--depth") == 0) pc_depth = (unsigned)atoi(v);
    else if (strcmp(k, "--secs") == 0) pc_secs = atof(v);
    else goto usage;
  }
  if (server_path == NULL || trials < 1 || pc_conns == 0 || pc_depth == 0 ||
      pc_secs <= 0)
    goto usage;
  if (mode_proxycost) {
    pc_chains = calloc(pc_conns * pc_depth, sizeof(*pc_chains));
    if (pc_chains == NULL) abort();
  }
  signal(SIGPIPE, SIG_IGN);
  uv = uv_default_loop();
  if (rn_loop_new(uv, &loop) != 0) abort();
  uv_timer_init(uv, &traffic);
  uv_timer_init(uv, &step);
  pool_closed = 1;
  next_trial();
  uv_run(uv, UV_RUN_DEFAULT);
  free(pc_chains);
  free(pc_lat.v);
  if (rn_loop_free(loop) != 0) return 1;
  uv_run(uv, UV_RUN_DEFAULT); /* the rn loop's own close callbacks */
  return uv_loop_close(uv) == 0 ? 0 : 1;
usage:
  fprintf(stderr, "usage: rnb-resilience deadpeer|restart|proxycost "
          "--server PATH [--timeout-ms T] [--interval-ms I] "
          "[--via direct|proxy] [--backoff-ms B] [--down-ms D] [--conns C] "
          "[--depth D] [--secs S] [--trials K]\n");
  return 2;
}

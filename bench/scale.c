/* rnb-scale: resilnet at scale, against rnb-echo-server.
 *
 *   rnb-scale idle --port P --conns N --secs S
 *     N pooled connections kept open (min_idle) with 1 s heartbeats; once
 *     all are ready: user-space memory per connection (heap in use, from
 *     mallinfo2, and resident set growth, over N) and the client's CPU
 *     share of one core over S seconds of idling.
 *   rnb-scale inflight --port P --calls M [--conns C]
 *     M calls issued at once on C connections: time until every one
 *     completed, failures, heap per call in flight, peak RSS.
 *
 * The pool is aborted at the end (RST): ten thousand client-side TIME_WAIT
 * sockets would eat the ephemeral ports other programs on this machine
 * need. */
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <resilnet.h>

#include "common.h"

static rn_loop_t *loop;
static rn_pool_t *pool;
static uv_timer_t timer;
static int mode_idle;
static unsigned conns = 8;
static uint64_t calls = 100000, completed, failed;
static double secs = 10;
static int port;
static unsigned ticks;
static uint64_t t_start, t_ready;
static size_t heap0, rss0;
static double cpu0;
static uint64_t beats0, t0;
static int closed;

static size_t heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

static size_t rss_bytes(void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f != NULL) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static void on_closed(rn_pool_t *p) {
  (void)p;
  closed = 1;
}

static void finish(void) {
  uv_close((uv_handle_t *)&timer, NULL);
  rn_pool_abort(pool, on_closed);
}

static void on_idle_done(uv_timer_t *t) {
  rn_pool_stats_t st;
  double cpu = rnb_cpu_seconds() - cpu0;
  double wall = (double)(rnb_now_ns() - t0) / 1e9;
  (void)t;
  rn_pool_stats(pool, &st);
  printf("RESULT mode=idle conns=%u ready=%u ready_secs=%.3f "
         "heap_per_conn=%.0f rss_per_conn=%.0f cpu_share=%.4f "
         "pings_per_s=%.0f dead_peers=%llu secs=%.3f\n",
         conns, st.idle, (double)(t_ready - t_start) / 1e9,
         (double)(heap_in_use() - heap0) / conns,
         (double)(rss_bytes() - rss0) / conns, cpu / wall,
         (double)(st.heartbeats - beats0) / wall,
         (unsigned long long)st.dead_peers, wall);
  fflush(stdout);
  finish();
}

static void on_reply(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  (void)data;
  if (r->status == 0) completed++;
  else failed++;
  if (completed + failed == calls) {
    double wall = (double)(rnb_now_ns() - t0) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("RESULT mode=inflight calls=%llu completed=%llu failed=%llu "
           "secs=%.3f calls_per_s=%.0f heap_per_call=%.0f maxrss_kb=%ld\n",
           (unsigned long long)calls, (unsigned long long)completed,
           (unsigned long long)failed, wall, (double)calls / wall,
           (double)(rss0) / (double)calls, ru.ru_maxrss);
    fflush(stdout);
    finish();
  }
}

static void start_inflight(void) {
  static const char frame[] = {0, 0, 0, 3, 'a', 'b', 'c'};
  uint64_t i;
  size_t before = heap_in_use();
  t0 = rnb_now_ns();
  for (i = 0; i < calls; i++) {
    int err = rn_pool_call(pool, frame, sizeof(frame), NULL, on_reply, NULL);
    if (err) {
      fprintf(stderr, "rnb-scale: rn_pool_call: %s\n", rn_strerror(err));
      exit(1);
    }
  }
  rss0 = heap_in_use() - before; /* reused: heap held by the calls */
}

static void on_check(uv_timer_t *t) {
  rn_pool_stats_t st;
  rn_pool_stats(pool, &st);
  if (st.idle < conns && ++ticks < 2400) return; /* 120 s at most */
  uv_timer_stop(t);
  t_ready = rnb_now_ns();
  if (st.idle < conns)
    fprintf(stderr, "rnb-scale: only %u of %u connections ready\n", st.idle,
            conns);
  if (!mode_idle) {
    start_inflight();
    return;
  }
  cpu0 = rnb_cpu_seconds();
  t0 = rnb_now_ns();
  beats0 = st.heartbeats;
  uv_timer_start(t, on_idle_done, (uint64_t)(secs * 1000), 0);
}

int main(int argc, char **argv) {
  uv_loop_t *uv = uv_default_loop();
  rn_pool_options_t po;
  char endpoint[64];
  const char *endpoints[1] = {endpoint};
  long limit;
  int i, err;

  if (argc < 2) goto usage;
  mode_idle = strcmp(argv[1], "idle") == 0;
  if (!mode_idle && strcmp(argv[1], "inflight") != 0) goto usage;
  for (i = 2; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--conns") == 0) conns = (unsigned)atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--calls") == 0) calls = (uint64_t)atoll(argv[i + 1]);
    else if (strcmp(argv[i], "--secs") == 0) secs = atof(argv[i + 1]);
    else goto usage;
  }
  if (port <= 0 || conns == 0 || calls == 0) goto usage;
  signal(SIGPIPE, SIG_IGN);
  limit = rnb_raise_nofile();
  if (limit >= 0 && (long)conns + 64 > limit) {
    fprintf(stderr, "rnb-scale: %u connections need more descriptors than "
            "ulimit -n allows (%ld); raise it\n", conns, limit);
    return 1;
  }
  if (rn_loop_new(uv, &loop) != 0) abort();
  snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", port);
  rn_pool_options_init(&po);
  po.endpoints = endpoints;
  po.endpoint_count = 1;
  po.codec.protocol = RN_PROTOCOL_LENGTH;
  po.size = conns;
  po.min_idle = conns;
  po.idle_timeout_ms = 0;
  po.max_pending = 1u << 30;
  /* inflight measures 100,000 calls outstanding on one endpoint: past the
   * default cap (RN_DEFAULT_MAX_IN_FLIGHT) they would be refused. */
  po.max_in_flight = 0;
  po.timeout_ms = 120000;
  po.heartbeat.interval_ms = 1000;
  po.heartbeat.timeout_ms = 3000;
  po.heartbeat.ping = "p";
  po.heartbeat.ping_len = 1;
  heap0 = heap_in_use();
  rss0 = rss_bytes();
  t_start = rnb_now_ns();
  err = rn_pool_new(loop, &po, &pool);
  if (err) {
    fprintf(stderr, "rnb-scale: rn_pool_new: %s\n", rn_strerror(err));
    return 1;
  }
  uv_timer_init(uv, &timer);
  uv_timer_start(&timer, on_check, 50, 50);
  uv_run(uv, UV_RUN_DEFAULT);
  if (!closed || rn_loop_free(loop) != 0) return 1;
  uv_run(uv, UV_RUN_DEFAULT); /* the rn loop's own close callbacks */
  return uv_loop_close(uv) == 0 ? 0 : 1;
usage:
  fprintf(stderr, "usage: rnb-scale idle|inflight --port P [--conns N] "
          "[--calls M] [--secs S]\n");
  return 2;
}

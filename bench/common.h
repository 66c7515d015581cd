/* Shared by the benchmark programs: options, clocks, CPU time, latency
 * percentiles and the one-line report the driver (bench/run.py) parses.
 * Header-only on purpose: each program is one .c file plus this. */
#ifndef RNB_COMMON_H
#define RNB_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

/* What every client takes. Closed loop: `conns` connections, `depth`
 * calls in flight on each, for `secs` seconds after a warm-up (or until
 * `calls` completions when calls > 0, for callgrind). Open loop (rate >
 * 0): calls are due at a fixed rate, spread over the connections, and
 * each latency counts from the call's due time, so a stalled client is
 * charged for every call it should have sent (no coordinated omission). */
typedef struct rnb_opts_s {
  const char *proto; /* "resp", "length" or "rnp" */
  const char *host;
  int port;
  unsigned conns;
  unsigned depth;
  size_t size;       /* payload bytes */
  double secs;
  double warm;       /* seconds of warm-up, not counted */
  uint64_t calls;    /* > 0: stop after this many completions */
  double rate;       /* > 0: open loop, calls per second */
} rnb_opts_t;

static inline void rnb_usage(const char *prog) {
  fprintf(stderr,
          "usage: %s --proto resp|length|rnp --port N [--host A] [--conns N]"
          " [--depth N] [--size BYTES] [--secs S] [--warm S] [--calls N]"
          " [--rate PER_S]\n",
          prog);
  exit(2);
}

static inline void rnb_parse(int argc, char **argv, rnb_opts_t *o) {
  int i;
  memset(o, 0, sizeof(*o));
  o->proto = "length";
  o->host = "127.0.0.1";
  o->conns = 1;
  o->depth = 1;
  o->size = 3;
  o->secs = 1;
  o->warm = 0.2;
  for (i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (strcmp(k, "--proto") == 0) o->proto = v;
    else if (strcmp(k, "--host") == 0) o->host = v;
    else if (strcmp(k, "--port") == 0) o->port = atoi(v);
    else if (strcmp(k, "--conns") == 0) o->conns = (unsigned)atoi(v);
    else if (strcmp(k, "--depth") == 0) o->depth = (unsigned)atoi(v);
    else if (strcmp(k, "--size") == 0) o->size = (size_t)atol(v);
    else if (strcmp(k, "--secs") == 0) o->secs = atof(v);
    else if (strcmp(k, "--warm") == 0) o->warm = atof(v);
    else if (strcmp(k, "--calls") == 0) o->calls = (uint64_t)atoll(v);
    else if (strcmp(k, "--rate") == 0) o->rate = atof(v);
    else rnb_usage(argv[0]);
  }
  if (i != argc || o->port <= 0 || o->conns == 0 || o->depth == 0 ||
      o->size == 0)
    rnb_usage(argv[0]);
}

static inline double rnb_cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static inline uint64_t rnb_now_ns(void) { return uv_hrtime(); }

/* The payload: printable, so it is a valid line and RESP bulk alike. */
static inline char *rnb_payload(size_t size) {
  char *p = malloc(size);
  size_t i;
  if (p == NULL) abort();
  for (i = 0; i < size; i++) p[i] = (char)('a' + (char)(i % 26));
  return p;
}

/* Latencies in ns, appended; reported as percentiles. */
typedef struct rnb_lat_s {
  uint64_t *v;
  size_t n, cap;
} rnb_lat_t;

static inline void rnb_lat_add(rnb_lat_t *l, uint64_t ns) {
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 65536;
    l->v = realloc(l->v, l->cap * sizeof(*l->v));
    if (l->v == NULL) abort();
  }
  l->v[l->n++] = ns;
}

static inline int rnb_cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static inline double rnb_lat_pct(const rnb_lat_t *l, double pct) {
  size_t i;
  if (l->n == 0) return 0;
  i = (size_t)(pct / 100.0 * (double)(l->n - 1) + 0.5);
  return (double)l->v[i] / 1e3; /* microseconds */
}

/* One line, key=value pairs: what the driver reads. */
static inline void rnb_report(const char *client, uint64_t calls, uint64_t failed,
                       double secs, double cpu, rnb_lat_t *lat) {
  printf("RESULT client=%s calls=%llu failed=%llu secs=%.6f cpu=%.6f",
         client, (unsigned long long)calls, (unsigned long long)failed, secs,
         cpu);
  if (lat != NULL && lat->n > 0) {
    qsort(lat->v, lat->n, sizeof(*lat->v), rnb_cmp_u64);
    printf(" p50=%.1f p99=%.1f p999=%.1f max=%.1f", rnb_lat_pct(lat, 50),
           rnb_lat_pct(lat, 99), rnb_lat_pct(lat, 99.9),
           (double)lat->v[lat->n - 1] / 1e3);
  }
  printf("\n");
  fflush(stdout);
}

/* The measured window of a client's run, shared so that every client
 * counts alike. Closed loop: a timer lets the warm-up pass, notes the
 * completed count, the clock and the CPU time, notes them again `secs`
 * later and calls on_end (the client stops issuing and closes). With
 * --calls the window is the whole run instead, from rnb_window_start to
 * rnb_window_report (after the loop). */
typedef struct rnb_window_s {
  uv_timer_t timer;
  const rnb_opts_t *opts;
  const uint64_t *completed; /* the client's count of completed calls */
  void (*on_begin)(void);    /* optional: as the window opens */
  void (*on_end)(void);      /* as it closes */
  int measuring;
  uint64_t t0, t1, calls0, calls1;
  double cpu0, cpu1;
} rnb_window_t;

static inline void rnb_window_on_timer(uv_timer_t *t) {
  rnb_window_t *w = t->data;
  if (!w->measuring) {
    if (w->on_begin != NULL) w->on_begin();
    w->measuring = 1;
    w->t0 = rnb_now_ns();
    w->calls0 = *w->completed;
    w->cpu0 = rnb_cpu_seconds();
    uv_timer_start(t, rnb_window_on_timer, (uint64_t)(w->opts->secs * 1000),
                   0);
  } else {
    w->t1 = rnb_now_ns();
    w->calls1 = *w->completed;
    w->cpu1 = rnb_cpu_seconds();
    w->on_end();
  }
}

static inline void rnb_window_init(rnb_window_t *w, uv_loop_t *loop,
                                   const rnb_opts_t *o,
                                   const uint64_t *completed,
                                   void (*on_end)(void)) {
  memset(w, 0, sizeof(*w));
  uv_timer_init(loop, &w->timer);
  w->timer.data = w;
  w->opts = o;
  w->completed = completed;
  w->on_end = on_end;
}

/* When the first calls go out. */
static inline void rnb_window_start(rnb_window_t *w) {
  if (w->opts->calls > 0) {
    w->t0 = rnb_now_ns();
    w->cpu0 = rnb_cpu_seconds();
  } else {
    uv_timer_start(&w->timer, rnb_window_on_timer,
                   (uint64_t)(w->opts->warm * 1000), 0);
  }
}

/* Open loop: whether a call due at `due` counts (it fell in the window). */
static inline int rnb_window_has(const rnb_window_t *w, uint64_t due) {
  return w->measuring && due >= w->t0 && (w->t1 == 0 || due < w->t1);
}

static inline void rnb_window_close(rnb_window_t *w) {
  if (!uv_is_closing((uv_handle_t *)&w->timer))
    uv_close((uv_handle_t *)&w->timer, NULL);
}

/* After the loop: the RESULT line. With lat (open loop) the calls counted
 * are those due in the window, each with its latency. */
static inline void rnb_window_report(rnb_window_t *w, const char *client,
                                     uint64_t failed, rnb_lat_t *lat) {
  if (w->opts->calls > 0) {
    w->t1 = rnb_now_ns();
    w->cpu1 = rnb_cpu_seconds();
    w->calls0 = 0;
    w->calls1 = *w->completed;
  }
  if (lat != NULL) w->calls1 = w->calls0 + lat->n;
  rnb_report(client, w->calls1 - w->calls0, failed,
             (double)(w->t1 - w->t0) / 1e9, w->cpu1 - w->cpu0, lat);
}

/* Lifts the soft descriptor limit to the hard one: the scale runs hold
 * thousands of sockets. Returns the limit now in force. */
static inline long rnb_raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  return (long)rl.rlim_cur;
}

#endif /* RNB_COMMON_H */

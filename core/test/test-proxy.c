/* The fault-injection proxy against plain libuv clients and a plain echo
 * upstream on loopback: each fault's effect is measured from the client's
 * side (time, bytes, errors), and the upstream counts what reached it. */
#include "resilnet.h"
#include "task.h"
#include "proxy.h"
#include "plain_client.h"
#include "peer.h"
#include "wait.h"

#include <errno.h>
#include <sys/socket.h>
#include <uv.h>

static rn_loop_t *loop;
static uv_loop_t *uv;

/* ------------------------------------------------------------------------ */
/* An echo upstream (peer.h): a FIN from the proxy is answered with a FIN
 * once everything is echoed, as a half-closing server does. */

static test_peer_t upstream_peer;

static int up_start(void) {
  test_peer_start(&upstream_peer, uv, test_peer_echo);
  upstream_peer.on_end = TEST_PEER_END_SHUTDOWN;
  return upstream_peer.port;
}

static void up_stop(void) { test_peer_stop(&upstream_peer); }

/* ------------------------------------------------------------------------ */
/* Plain clients                                                              */

static void cl_connect(client_t *c, int port) { cl_start(c, uv, port); }

/* ------------------------------------------------------------------------ */
/* The proxy and its events                                                   */

static rn_proxy_t *proxy;
static int proxy_port;
static int ev_counts[64];
static const char *ev_names[64];
static uint64_t ev_bytes[64];
static uint64_t applied[64]; /* connection numbers that got an "apply" */
static int napplied;
static int closed;

static int ev_index(const char *type) {
  int i;
  for (i = 0; i < 64 && ev_names[i] != NULL; i++)
    if (strcmp(ev_names[i], type) == 0) return i;
  ASSERT_LT(i, 64);
  ev_names[i] = type;
  return i;
}
static int ev(const char *type) { return ev_counts[ev_index(type)]; }
static uint64_t evb(const char *type) { return ev_bytes[ev_index(type)]; }

static void on_event(rn_proxy_t *p, const rn_proxy_event_t *e) {
  int i = ev_index(e->type);
  ASSERT(p == proxy);
  ev_counts[i]++;
  ev_bytes[i] += e->bytes;
  if (strcmp(e->type, "apply") == 0 && napplied < 64)
    applied[napplied++] = e->conn;
}

static void start(uint64_t seed) {
  rn_proxy_options_t o;
  char upstream[64], host[64];
  memset(ev_counts, 0, sizeof(ev_counts));
  memset(ev_bytes, 0, sizeof(ev_bytes));
  memset(ev_names, 0, sizeof(ev_names));
  napplied = closed = 0;
  ASSERT_OK(rn_loop_new(NULL, &loop));
  uv = rn_loop_uv(loop);
  snprintf(upstream, sizeof(upstream), "127.0.0.1:%d", up_start());
  rn_proxy_options_init(&o);
  o.listen = "127.0.0.1:0";
  o.upstream = upstream;
  o.seed = seed;
  o.on_event = on_event;
  ASSERT_OK(rn_proxy_new(loop, &o, &proxy));
  ASSERT_OK(rn_proxy_address(proxy, host, sizeof(host), &proxy_port));
  ASSERT_STR_EQ(host, "127.0.0.1");
  ASSERT_GT(proxy_port, 0);
}

static void on_closed(rn_proxy_t *p) {
  (void)p;
  closed = 1;
}

static void finish(void) {
  rn_proxy_close(proxy, on_closed);
  rn_proxy_close(proxy, on_closed); /* ignored */
  up_stop();
  uv_run(uv, UV_RUN_DEFAULT);
  ASSERT_EQ(closed, 1);
  ASSERT_OK(rn_loop_free(loop));
}

static uint64_t add(rn_fault_kind_t kind, unsigned dir,
                    void (*tune)(rn_fault_options_t *)) {
  rn_fault_options_t o;
  uint64_t id;
  rn_fault_options_init(&o, kind);
  o.direction = dir;
  if (tune) tune(&o);
  ASSERT_OK(rn_proxy_fault_add(proxy, &o, &id));
  ASSERT_GT(id, 0);
  return id;
}

/* Connects through the proxy and proves the pair works with one echo. */
static void connect_ok(client_t *c) {
  cl_connect(c, proxy_port);
  RUN_UNTIL(uv, c->connected != 0, 5000);
  ASSERT_EQ(c->connected, 1);
}

static uint64_t round_trip(client_t *c, const char *msg) {
  uint64_t t0 = now_ms();
  size_t before = c->got.len;
  cl_send(c, msg, strlen(msg));
  RUN_UNTIL(uv, c->got.len >= before + strlen(msg), 5000);
  ASSERT_MEM_EQ(c->got.base + before, msg, strlen(msg));
  return now_ms() - t0;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                      */

static void test_passthrough(void) {
  client_t c;
  start(1);
  connect_ok(&c);
  round_trip(&c, "hello");
  round_trip(&c, "world");
  ASSERT_EQ(rn_proxy_connections(proxy), 1);
  ASSERT_EQ(ev("accept"), 1);
  ASSERT_EQ(ev("connect"), 1);
  ASSERT_EQ(upstream_peer.count, 1);
  /* The client's FIN travels up, the upstream's comes back down. */
  uv_shutdown_t sreq;
  ASSERT_OK(uv_shutdown(&sreq, (uv_stream_t *)&c.tcp, NULL));
  RUN_UNTIL(uv, c.eof, 5000);
  ASSERT_EQ(upstream_peer.eofs, 1);
  cl_close(&c);
  finish();
  cl_free(&c);
}

static void bad_options(void) {
  rn_proxy_options_t o;
  rn_fault_options_t f;
  rn_proxy_t *p;
  uint64_t id;
  ASSERT_OK(rn_loop_new(NULL, &loop));
  rn_proxy_options_init(&o);
  o.listen = "127.0.0.1:0";
  o.upstream = "unix:/tmp/x";
  ASSERT_EQ(rn_proxy_new(loop, &o, &p), UV_EINVAL);
  o.upstream = "db.example:7000"; /* names are not resolved */
  ASSERT_EQ(rn_proxy_new(loop, &o, &p), UV_EINVAL);
  o.upstream = "127.0.0.1:1";
  ASSERT_OK(rn_proxy_new(loop, &o, &p));
  proxy = p;
  rn_fault_options_init(&f, RN_FAULT_BANDWIDTH); /* no rate */
  ASSERT_EQ(rn_proxy_fault_add(p, &f, &id), UV_EINVAL);
  rn_fault_options_init(&f, RN_FAULT_LATENCY);
  f.direction = 4;
  ASSERT_EQ(rn_proxy_fault_add(p, &f, &id), UV_EINVAL);
  f.direction = RN_PROXY_UP;
  f.toxicity = 1.5;
  ASSERT_EQ(rn_proxy_fault_add(p, &f, &id), UV_EINVAL);
  rn_fault_options_init(&f, RN_FAULT_TRUNCATE); /* no after_bytes */
  ASSERT_EQ(rn_proxy_fault_add(p, &f, &id), UV_EINVAL);
  ASSERT_EQ(rn_proxy_fault_remove(p, 99), UV_ENOENT);
  ASSERT_EQ(rn_loop_free(loop), UV_EBUSY);
  rn_proxy_close(p, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

/* An upstream that refuses: the client is reset, the proxy says why. */
static void upstream_refused(void) {
  rn_proxy_options_t o;
  client_t c;
  int port;
  ASSERT_OK(rn_loop_new(NULL, &loop));
  uv = rn_loop_uv(loop);
  port = up_start();
  up_stop(); /* nothing listens there now */
  uv_run(uv, UV_RUN_DEFAULT);
  char upstream[64];
  snprintf(upstream, sizeof(upstream), "127.0.0.1:%d", port);
  memset(ev_counts, 0, sizeof(ev_counts));
  memset(ev_names, 0, sizeof(ev_names));
  rn_proxy_options_init(&o);
  o.listen = "127.0.0.1:0";
  o.upstream = upstream;
  o.on_event = on_event;
  ASSERT_OK(rn_proxy_new(loop, &o, &proxy));
  ASSERT_OK(rn_proxy_address(proxy, upstream, sizeof(upstream), &proxy_port));
  connect_ok(&c);
  RUN_UNTIL(uv, (c.eof || c.read_error != 0), 5000);
  ASSERT_EQ(c.read_error, UV_ECONNRESET);
  cl_close(&c);
  rn_proxy_close(proxy, NULL);
  uv_run(uv, UV_RUN_DEFAULT);
  ASSERT_EQ(ev("upstream_error"), 1);
  ASSERT_OK(rn_loop_free(loop));
  cl_free(&c);
}

static void lat100(rn_fault_options_t *o) { o->ms = 100; }

static void latency(void) {
  client_t c;
  uint64_t base, slow, id;
  start(1);
  connect_ok(&c);
  base = round_trip(&c, "x");
  id = add(RN_FAULT_LATENCY, RN_PROXY_DOWN, lat100);
  slow = round_trip(&c, "y");
  ASSERT_GE(slow, 100);
  ASSERT_LT(slow, 100 + base + 400);
  /* Both directions: twice. */
  ASSERT_OK(rn_proxy_fault_remove(proxy, id));
  add(RN_FAULT_LATENCY, RN_PROXY_BOTH, lat100);
  slow = round_trip(&c, "z");
  ASSERT_GE(slow, 200);
  ASSERT_LT(slow, 200 + base + 400);
  rn_proxy_fault_clear(proxy);
  ASSERT_LT(round_trip(&c, "w"), 100);
  cl_close(&c);
  finish();
  cl_free(&c);
}

/* Jitter: uniform stays in its band, normal has the deviation asked for,
 * and one seed gives one sequence. */
static void jitter(void) {
  rn_fault_options_t o;
  uint64_t a = rn__proxy_mix(7), b = rn__proxy_mix(7), c = rn__proxy_mix(8);
  double sum = 0, sq = 0, lo = 1e9, hi = 0;
  int i, same = 1, differ = 0;
  rn_fault_options_init(&o, RN_FAULT_LATENCY);
  o.ms = 100;
  o.jitter = 20;
  for (i = 0; i < 10000; i++) {
    double d = rn__proxy_delay(&o, &a), e = rn__proxy_delay(&o, &b);
    if (d != e) same = 0;
    if (d != rn__proxy_delay(&o, &c)) differ = 1;
    if (d < lo) lo = d;
    if (d > hi) hi = d;
  }
  ASSERT(same);
  ASSERT(differ);
  ASSERT(lo >= 80 && lo < 81);
  ASSERT(hi <= 120 && hi > 119);
  o.normal = 1;
  for (i = 0; i < 10000; i++) {
    double d = rn__proxy_delay(&o, &a);
    sum += d;
    sq += d * d;
  }
  sum /= 10000;
  sq = sq / 10000 - sum * sum; /* variance: 400 */
  ASSERT(sum > 99 && sum < 101);
  ASSERT(sq > 360 && sq < 440);
}

static void latency_jitter_live(void) {
  client_t c;
  int i;
  start(3);
  connect_ok(&c);
  add(RN_FAULT_LATENCY, RN_PROXY_UP, NULL); /* 0 ms: nothing changes */
  ASSERT_LT(round_trip(&c, "a"), 50);
  rn_proxy_fault_clear(proxy);
  {
    rn_fault_options_t o;
    uint64_t id;
    rn_fault_options_init(&o, RN_FAULT_LATENCY);
    o.direction = RN_PROXY_UP;
    o.ms = 60;
    o.jitter = 40;
    ASSERT_OK(rn_proxy_fault_add(proxy, &o, &id));
  }
  for (i = 0; i < 5; i++) {
    uint64_t rtt = round_trip(&c, "j");
    ASSERT_GE(rtt, 20);
    ASSERT_LT(rtt, 100 + 300);
  }
  cl_close(&c);
  finish();
  cl_free(&c);
}

static void bw100k(rn_fault_options_t *o) { o->bytes_per_second = 100000; }

static void bandwidth(void) {
  static char big[50000];
  client_t c;
  uint64_t t0, took;
  start(1);
  connect_ok(&c);
  add(RN_FAULT_BANDWIDTH, RN_PROXY_UP, bw100k);
  memset(big, 'b', sizeof(big));
  t0 = now_ms();
  cl_send(&c, big, sizeof(big));
  RUN_UNTIL(uv, c.got.len >= sizeof(big), 5000);
  took = now_ms() - t0;
  /* 50,000 bytes at 100,000 bytes/s: half a second. */
  ASSERT_GE(took, 450);
  ASSERT_LT(took, 1000);
  cl_close(&c);
  finish();
  cl_free(&c);
}

static void slice10(rn_fault_options_t *o) {
  o->slice_bytes = 10;
  o->slice_delay = 20;
}

static void slice(void) {
  client_t c;
  uint64_t t0;
  const char *msg = "0123456789abcdefghijABCDEFGHIJ0123456789abcdefghij";
  start(1);
  connect_ok(&c);
  add(RN_FAULT_SLICE, RN_PROXY_DOWN, slice10);
  t0 = now_ms();
  cl_send(&c, msg, 50);
  RUN_UNTIL(uv, c.got.len >= 50, 5000);
  ASSERT_MEM_EQ(c.got.base, msg, 50);
  ASSERT_GE(now_ms() - t0, 80); /* 4 gaps of 20 ms */
  ASSERT_GE(c.reads, 5);        /* 5 separate writes of 10 bytes */
  cl_close(&c);
  finish();
  cl_free(&c);
}

static void after5(rn_fault_options_t *o) { o->after_bytes = 5; }
static void after5_rst(rn_fault_options_t *o) {
  o->after_bytes = 5;
  o->rst = 1;
}

static void close_after_bytes_fin(void) {
  client_t c;
  start(1);
  connect_ok(&c);
  add(RN_FAULT_CLOSE, RN_PROXY_DOWN, after5);
  cl_send(&c, "hello world", 11);
  RUN_UNTIL(uv, (c.eof || c.read_error != 0), 5000);
  ASSERT_EQ(c.eof, 1);
  ASSERT_EQ(c.read_error, 0);
  ASSERT(!reset_seen(&c));
  ASSERT_EQ(c.got.len, 5);
  ASSERT_MEM_EQ(c.got.base, "hello", 5);
  ASSERT_EQ(ev("close"), 1);
  cl_close(&c);
  finish();
  cl_free(&c);
}

static void close_after_bytes_rst(void) {
  client_t c;
  start(1);
  connect_ok(&c);
  add(RN_FAULT_CLOSE, RN_PROXY_DOWN, after5_rst);
  cl_send(&c, "hello world", 11);
  RUN_UNTIL(uv, (c.eof || c.read_error != 0), 5000);
  ASSERT(reset_seen(&c));
  ASSERT_LE(c.got.len, 5);
  ASSERT_EQ(ev("reset"), 1);
  cl_close(&c);
  finish();
  cl_free(&c);
}

static void after100ms_rst(rn_fault_options_t *o) {
  o->after_ms = 100;
  o->rst = 1;
}

static void close_after_ms(void) {
  client_t c;
  uint64_t t0;
  start(1);
  t0 = now_ms();
  add(RN_FAULT_CLOSE, RN_PROXY_BOTH, after100ms_rst);
  connect_ok(&c);
  round_trip(&c, "still fine");
  RUN_UNTIL(uv, c.read_error != 0, 5000);
  ASSERT_EQ(c.read_error, UV_ECONNRESET);
  ASSERT_GE(now_ms() - t0, 100);
  /* The upstream was reset too. */
  RUN_UNTIL(uv, upstream_peer.errors > 0, 5000);
  cl_close(&c);
  finish();
  cl_free(&c);
}

static void reset_all(void) {
  client_t a, b;
  start(1);
  connect_ok(&a);
  connect_ok(&b);
  round_trip(&a, "a");
  round_trip(&b, "b");
  rn_proxy_reset_all(proxy);
  RUN_UNTIL(uv, a.read_error != 0, 5000);
  RUN_UNTIL(uv, b.read_error != 0, 5000);
  ASSERT_EQ(a.read_error, UV_ECONNRESET);
  ASSERT_EQ(b.read_error, UV_ECONNRESET);
  RUN_UNTIL(uv, upstream_peer.errors > 0, 5000);
  ASSERT_EQ(rn_proxy_connections(proxy), 0);
  cl_close(&a);
  cl_close(&b);
  finish();
  cl_free(&a);
  cl_free(&b);
}

static size_t up_want;
static int up_has(void) { return upstream_peer.bytes >= up_want; }

/* FIN toward the client only: it sees the end, yet what it sends still
 * reaches the upstream. */
static void half_close(void) {
  client_t c;
  start(1);
  connect_ok(&c);
  round_trip(&c, "ab");
  add(RN_FAULT_HALF_CLOSE, RN_PROXY_DOWN, NULL);
  RUN_UNTIL(uv, c.eof, 5000);
  ASSERT_EQ(c.read_error, 0);
  cl_send(&c, "after", 5);
  up_want = 2 + 5;
  RUN_UNTIL(uv, up_has(), 5000);
  ASSERT_EQ(c.got.len, 2); /* the echo of "after" was dropped */
  ASSERT_EQ(ev("half_close"), 1);
  cl_close(&c);
  finish();
  cl_free(&c);
}

static uint64_t wait_event_bytes;
static const char *wait_event_name;
static int event_bytes_reached(void) {
  return evb(wait_event_name) >= wait_event_bytes;
}

/* Blackhole: bytes vanish (the proxy reads and drops them); lifted, the
 * connection carries on with nothing of them. */
static void blackhole(void) {
  client_t c;
  uint64_t id;
  start(1);
  connect_ok(&c);
  id = add(RN_FAULT_BLACKHOLE, RN_PROXY_UP, NULL);
  cl_send(&c, "lost", 4);
  wait_event_name = "blackhole";
  wait_event_bytes = 4;
  RUN_UNTIL(uv, event_bytes_reached(), 5000);
  ASSERT_EQ(upstream_peer.bytes, 0);
  ASSERT_OK(rn_proxy_fault_remove(proxy, id));
  round_trip(&c, "kept");
  ASSERT_EQ(c.got.len, 4);
  ASSERT_EQ(upstream_peer.bytes, 4);
  cl_close(&c);
  finish();
  cl_free(&c);
}

/* Writes until the kernel takes no more for a while; returns bytes taken. */
static size_t fill(client_t *c, size_t limit) {
  static char chunk[65536];
  size_t total = 0;
  int stuck = 0;
  memset(chunk, 's', sizeof(chunk));
  while (total < limit && stuck < 20) {
    uv_buf_t b = uv_buf_init(chunk, sizeof(chunk));
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n > 0) {
      total += (size_t)n;
      stuck = 0;
    } else {
      stuck++;
      test_run_for(uv, 2); /* let the proxy read, if it does */
    }
  }
  return total;
}

/* Stall: the proxy stops reading, so the client's writes back up; the
 * blackhole keeps reading, so they never do. */
static void stall_vs_blackhole(void) {
  client_t c;
  size_t taken;
  uint64_t id;
  start(1);
  connect_ok(&c);
  id = add(RN_FAULT_STALL, RN_PROXY_UP, NULL);
  taken = fill(&c, (size_t)64 << 20);
  ASSERT_LT(taken, (size_t)64 << 20); /* pushed back */
  ASSERT_EQ(upstream_peer.bytes, 0);
  ASSERT_EQ(ev("stall"), 1);
  /* Lifted: everything held flows on. */
  ASSERT_OK(rn_proxy_fault_remove(proxy, id));
  up_want = taken;
  RUN_UNTIL(uv, up_has(), 10000);
  ASSERT_EQ(upstream_peer.bytes, taken);
  cl_close(&c);
  finish();
  cl_free(&c);

  start(1);
  connect_ok(&c);
  add(RN_FAULT_BLACKHOLE, RN_PROXY_UP, NULL);
  taken = fill(&c, (size_t)64 << 20);
  ASSERT_GE(taken, (size_t)64 << 20); /* all read and dropped */
  ASSERT_EQ(upstream_peer.bytes, 0);
  cl_close(&c);
  finish();
  cl_free(&c);
}

static void rate10(rn_fault_options_t *o) { o->rate = 0.1; }

static void corrupt(void) {
  static char msg[10000];
  client_t c;
  size_t i, changed = 0;
  start(5);
  connect_ok(&c);
  add(RN_FAULT_CORRUPT, RN_PROXY_DOWN, NULL); /* rate 1: every byte */
  cl_send(&c, "abcdef", 6);
  RUN_UNTIL(uv, c.got.len >= 6, 5000);
  for (i = 0; i < 6; i++) ASSERT_NE(c.got.base[i], "abcdef"[i]);
  ASSERT_EQ(evb("corrupt"), 6);
  rn_proxy_fault_clear(proxy);
  c.got.len = 0;
  add(RN_FAULT_CORRUPT, RN_PROXY_UP, rate10);
  memset(msg, 'm', sizeof(msg));
  cl_send(&c, msg, sizeof(msg));
  RUN_UNTIL(uv, c.got.len >= sizeof(msg), 5000);
  for (i = 0; i < sizeof(msg); i++) changed += c.got.base[i] != 'm';
  ASSERT_EQ(evb("corrupt"), 6 + changed); /* the log counts every byte */
  ASSERT_GT(changed, 800);
  ASSERT_LT(changed, 1200);
  cl_close(&c);
  finish();
  cl_free(&c);
}

static void after10(rn_fault_options_t *o) { o->after_bytes = 10; }

static void truncate_(void) {
  client_t c, d;
  start(1);
  connect_ok(&c);
  add(RN_FAULT_TRUNCATE, RN_PROXY_DOWN, after10);
  cl_send(&c, "0123456789abcdefghij", 20);
  up_want = 20;
  RUN_UNTIL(uv, up_has(), 5000); /* the whole request went up */
  wait_event_name = "truncate";
  wait_event_bytes = 10;
  RUN_UNTIL(uv, event_bytes_reached(), 5000);
  RUN_UNTIL(uv, c.got.len >= 10, 5000);
  ASSERT_EQ(c.got.len, 10);
  ASSERT_MEM_EQ(c.got.base, "0123456789", 10);
  ASSERT_EQ(c.eof, 0); /* silently: the connection stays open */
  ASSERT_EQ(rn_proxy_connections(proxy), 1);
  /* Each connection has its own count. */
  connect_ok(&d);
  round_trip(&d, "0123456789");
  cl_close(&c);
  cl_close(&d);
  finish();
  cl_free(&c);
  cl_free(&d);
}

static void duplicate(void) {
  client_t c;
  start(1);
  connect_ok(&c);
  add(RN_FAULT_DUPLICATE, RN_PROXY_UP, NULL);
  cl_send(&c, "abc", 3);
  RUN_UNTIL(uv, c.got.len >= 6, 5000);
  ASSERT_MEM_EQ(c.got.base, "abcabc", 6);
  ASSERT_EQ(upstream_peer.bytes, 6);
  ASSERT_EQ(ev("duplicate"), 1);
  cl_close(&c);
  finish();
  cl_free(&c);
}

/* Refuse: nothing listens (connects fail at once), live connections carry
 * on, and lifting it listens again on the same port. */
static void refuse(void) {
  client_t a, b, d;
  uint64_t id;
  start(1);
  connect_ok(&a);
  id = add(RN_FAULT_REFUSE, RN_PROXY_BOTH, NULL);
  cl_connect(&b, proxy_port);
  RUN_UNTIL(uv, b.connected != 0, 5000);
  ASSERT_EQ(b.connected, UV_ECONNREFUSED);
  round_trip(&a, "alive");
  ASSERT_OK(rn_proxy_fault_remove(proxy, id));
  connect_ok(&d);
  round_trip(&d, "back");
  ASSERT_EQ(ev("refuse"), 1);
  ASSERT_EQ(ev("listen"), 1);
  cl_close(&a);
  cl_close(&b);
  cl_close(&d);
  finish();
  cl_free(&a);
  cl_free(&b);
  cl_free(&d);
}

/* Stop accepting: a new client's connect completes in the kernel's
 * backlog, but nothing serves it while the old connection works; lifted,
 * it is served. */
static void stop_accept(void) {
  client_t a, b;
  uint64_t id;
  int i;
  start(1);
  connect_ok(&a);
  id = add(RN_FAULT_STOP_ACCEPT, RN_PROXY_BOTH, NULL);
  cl_connect(&b, proxy_port);
  RUN_UNTIL(uv, b.connected != 0, 5000);
  ASSERT_EQ(b.connected, 1);
  cl_send(&b, "waiting", 7);
  for (i = 0; i < 20; i++) round_trip(&a, "old");
  ASSERT_EQ(b.got.len, 0);
  ASSERT_EQ(upstream_peer.count, 1);
  ASSERT_EQ(ev("accept"), 1);
  ASSERT_EQ(ev("accept_paused"), 1);
  ASSERT_OK(rn_proxy_fault_remove(proxy, id));
  RUN_UNTIL(uv, b.got.len >= 7, 5000);
  ASSERT_MEM_EQ(b.got.base, "waiting", 7);
  ASSERT_EQ(upstream_peer.count, 2);
  cl_close(&a);
  cl_close(&b);
  finish();
  cl_free(&a);
  cl_free(&b);
}

static void ms150(rn_fault_options_t *o) { o->ms = 150; }

static void slow_accept(void) {
  client_t a, b;
  uint64_t t0;
  start(1);
  add(RN_FAULT_SLOW_ACCEPT, RN_PROXY_BOTH, ms150);
  t0 = now_ms();
  connect_ok(&a);
  cl_connect(&b, proxy_port);
  round_trip(&a, "slow");
  ASSERT_GE(now_ms() - t0, 150);
  RUN_UNTIL(uv, b.connected != 0, 5000);
  round_trip(&b, "slower");
  ASSERT_GE(now_ms() - t0, 300); /* one accept at a time */
  ASSERT_EQ(ev("accept_delay"), 2);
  cl_close(&a);
  cl_close(&b);
  finish();
  cl_free(&a);
  cl_free(&b);
}

static void rst_on(rn_fault_options_t *o) { o->rst = 1; }

static void accept_close(void) {
  client_t a, b;
  start(1);
  add(RN_FAULT_ACCEPT_CLOSE, RN_PROXY_BOTH, NULL);
  connect_ok(&a);
  RUN_UNTIL(uv, (a.eof || a.read_error != 0), 5000);
  ASSERT_EQ(a.eof, 1);
  rn_proxy_fault_clear(proxy);
  add(RN_FAULT_ACCEPT_CLOSE, RN_PROXY_BOTH, rst_on);
  /* The reset may beat libuv to the connect's completion. */
  cl_connect(&b, proxy_port);
  RUN_UNTIL(uv, b.connected != 0, 5000);
  if (b.connected == 1) {
    RUN_UNTIL(uv, (b.eof || b.read_error != 0), 5000);
    ASSERT(reset_seen(&b));
  } else {
    ASSERT_EQ(b.connected, UV_ECONNRESET);
  }
  ASSERT_EQ(upstream_peer.count, 0); /* the upstream never heard of them */
  ASSERT_EQ(ev("accept_close"), 2);
  cl_close(&a);
  cl_close(&b);
  finish();
  cl_free(&a);
  cl_free(&b);
}

static void half(rn_fault_options_t *o) {
  o->toxicity = 0.5;
  o->after_ms = 0;
  o->rst = 1;
}

/* Toxicity picks a share of connections, the same ones for one seed. */
static int toxicity_run(uint64_t seed, uint64_t *which) {
  client_t c[20];
  int i, n;
  start(seed);
  add(RN_FAULT_CLOSE, RN_PROXY_BOTH, half); /* close at once */
  for (i = 0; i < 20; i++) {
    /* One at a time, so connection numbers follow this order. */
    cl_connect(&c[i], proxy_port);
    RUN_UNTIL(uv, c[i].connected != 0, 5000);
    /* One more turn: a reset sent at accept is read now, before the write
     * (whose error would take the socket's pending error with it). */
    uv_run(uv, UV_RUN_NOWAIT);
    if (c[i].connected != 1) continue; /* reset before it completed */
    cl_send(&c[i], "t", 1);
    RUN_UNTIL(uv, c[i].eof || c[i].read_error != 0 || c[i].got.len >= 1,
              5000);
  }
  n = napplied;
  for (i = 0; i < n; i++) which[i] = applied[i];
  for (i = 0; i < 20; i++) {
    /* exactly the chosen connections were reset */
    int chosen = 0, k;
    for (k = 0; k < n; k++) chosen |= which[k] == (uint64_t)i + 1;
    ASSERT_EQ(chosen, c[i].connected == UV_ECONNRESET || reset_seen(&c[i]));
    cl_close(&c[i]);
  }
  finish();
  for (i = 0; i < 20; i++) cl_free(&c[i]);
  return n;
}

static void toxicity(void) {
  uint64_t first[64], again[64], other[64];
  int n1 = toxicity_run(42, first), n2 = toxicity_run(42, again);
  int n3 = toxicity_run(43, other);
  ASSERT_EQ(n1, n2);
  ASSERT_MEM_EQ(first, again, (size_t)n1 * sizeof(first[0]));
  ASSERT(n1 >= 3 && n1 <= 17);
  ASSERT(n3 != n1 || memcmp(first, other, (size_t)n1 * sizeof(first[0])) != 0);
}

TEST_LIST_START
  TEST_ENTRY(bad_options)
  TEST_ENTRY(test_passthrough)
  TEST_ENTRY(upstream_refused)
  TEST_ENTRY(jitter)
  TEST_ENTRY(latency)
  TEST_ENTRY(latency_jitter_live)
  TEST_ENTRY(bandwidth)
  TEST_ENTRY(slice)
  TEST_ENTRY(close_after_bytes_fin)
  TEST_ENTRY(close_after_bytes_rst)
  TEST_ENTRY(close_after_ms)
  TEST_ENTRY(reset_all)
  TEST_ENTRY(half_close)
  TEST_ENTRY(blackhole)
  TEST_ENTRY(stall_vs_blackhole)
  TEST_ENTRY(corrupt)
  TEST_ENTRY(truncate_)
  TEST_ENTRY(duplicate)
  TEST_ENTRY(refuse)
  TEST_ENTRY(stop_accept)
  TEST_ENTRY(slow_accept)
  TEST_ENTRY(accept_close)
  TEST_ENTRY(toxicity)
TEST_LIST_END

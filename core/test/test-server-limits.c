/* The server's limits for clients it did not choose (issue 15), one case
 * per defect, each against real loopback sockets: replies pile up no
 * further than the high-water mark on every protocol, frames must arrive
 * within frame_timeout, a dribbled byte does not keep a connection from
 * idling out, buffered input has a server-wide budget and buffers shrink
 * back, resp requests have an element bound, connections have a cap, and
 * framing a dribbled frame costs O(its size).
 *
 * Run with a case's name as the only argument to run that case alone. */
#include "task.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>

#include "server.h" /* internals: connections' buffers and backlogs */

static rn_loop_t *loop;
#include "helpers.h"
#include "plain_client.h"
#include "rnp_client.h"

#define NCLIENTS 8

static struct {
  rn_server_t *server;
  int port;
  const char *reply; /* NULL: "+OK\r\n" */
  size_t reply_len;
  unsigned handled;
  size_t max_backlog; /* the largest one connection's, seen per request */
  size_t max_total;   /* the largest sum over connections */
  unsigned events[16];
  int closed;
  client_t c[NCLIENTS];
  /* a handler that waits: requests answered together every 10 ms */
  int defer;
  uv_timer_t defer_timer;
  rn_request_t *waiting[512];
  unsigned nwaiting;
  size_t max_out; /* the largest stats buffered_out after replies */
} T;

static size_t total_backlog(void) {
  size_t sum = 0;
  rn_list_t *pos;
  for (pos = T.server->conns.next; pos != &T.server->conns; pos = pos->next)
    sum += rn__server_conn_backlog(
        RN_CONTAINER_OF(pos, rn_server_conn_t, node));
  return sum;
}

static void reply_now(rn_request_t *req) {
  if (T.reply != NULL)
    ASSERT_OK(rn_request_reply(req, T.reply, T.reply_len));
  else
    ASSERT_OK(rn_request_reply(req, "+OK\r\n", 5));
}

/* The largest backlogs, one connection's and the server's. */
static void sample_backlogs(void) {
  rn_server_stats_t st;
  rn_list_t *pos;
  rn_server_stats(T.server, &st);
  if (st.buffered_out > T.max_out) T.max_out = st.buffered_out;
  for (pos = T.server->conns.next; pos != &T.server->conns; pos = pos->next) {
    size_t b = rn__server_conn_backlog(
        RN_CONTAINER_OF(pos, rn_server_conn_t, node));
    if (b > T.max_backlog) T.max_backlog = b;
  }
}

static void defer_tick(uv_timer_t *t) {
  unsigned i, n = T.nwaiting;
  (void)t;
  T.nwaiting = 0;
  for (i = 0; i < n; i++) reply_now(T.waiting[i]);
  sample_backlogs();
}

static void defer_start(void) {
  T.defer = 1;
  ASSERT_OK(uv_timer_init(rn_loop_uv(loop), &T.defer_timer));
  ASSERT_OK(uv_timer_start(&T.defer_timer, defer_tick, 10, 10));
}

static void defer_stop(void) {
  defer_tick(&T.defer_timer);
  uv_close((uv_handle_t *)&T.defer_timer, NULL);
}

static void on_request(rn_server_t *server, rn_request_t *req,
                       const char *body, size_t len) {
  size_t b = rn__server_conn_backlog(req->conn);
  size_t total = total_backlog();
  (void)server;
  (void)body;
  (void)len;
  T.handled++;
  if (b > T.max_backlog) T.max_backlog = b;
  if (total > T.max_total) T.max_total = total;
  if (T.defer) {
    ASSERT_LT(T.nwaiting, sizeof(T.waiting) / sizeof(T.waiting[0]));
    T.waiting[T.nwaiting++] = req;
    return;
  }
  if (T.reply != NULL)
    ASSERT_OK(rn_request_reply(req, T.reply, T.reply_len));
  else
    ASSERT_OK(rn_request_reply(req, "+OK\r\n", 5));
}

static void on_event(rn_server_t *server, const rn_server_event_t *ev) {
  (void)server;
  ASSERT_LT(ev->type, 16);
  T.events[ev->type]++;
}

static void on_closed(rn_server_t *server) {
  (void)server;
  T.closed = 1;
}

static void options(rn_server_options_t *o, rn_protocol_t protocol) {
  rn_server_options_init(o);
  o->listen = "127.0.0.1:0";
  o->codec.protocol = protocol;
  o->on_request = on_request;
  o->on_event = on_event;
}

static void start(const rn_server_options_t *o) {
  char host[64];
  memset(&T, 0, sizeof(T));
  loop = test_loop_open();
  ASSERT_OK(rn_server_new(loop, o, &T.server));
  ASSERT_OK(rn_server_address(T.server, host, sizeof(host), &T.port));
}

static void stop(void) {
  int i;
  for (i = 0; i < NCLIENTS; i++)
    if (T.c[i].tcp.data != NULL) cl_close(&T.c[i]);
  rn_server_close(T.server, on_closed);
  RUN_UNTIL(rn_loop_uv(loop), T.closed, 5000);
  test_loop_close(loop);
  for (i = 0; i < NCLIENTS; i++) cl_free(&T.c[i]);
}

static client_t *connect_client(int i) {
  client_t *c = &T.c[i];
  cl_start(c, rn_loop_uv(loop), T.port);
  RUN_UNTIL(rn_loop_uv(loop), c->connected != 0, 5000);
  ASSERT_EQ(c->connected, 1);
  return c;
}

/* The server's side of its only (or first) connection. */
static rn_server_conn_t *first_conn(void) {
  ASSERT(!rn_list_empty(&T.server->conns));
  return RN_CONTAINER_OF(T.server->conns.next, rn_server_conn_t, node);
}

/* Connections of the server holding unparsed bytes. */
static int conns_buffering(void) {
  int n = 0;
  rn_list_t *pos;
  for (pos = T.server->conns.next; pos != &T.server->conns; pos = pos->next)
    n += RN_CONTAINER_OF(pos, rn_server_conn_t, node)->rbuf.len > 0;
  return n;
}

static int got_has(const client_t *c, const char *text) {
  return test_contains(c->got.base, c->got.len, text);
}

static rn_server_stats_t stats(void) {
  rn_server_stats_t st;
  rn_server_stats(T.server, &st);
  return st;
}

/* Runs the loop until the server closed c (EOF or a read error). */
static void wait_closed(client_t *c) {
  RUN_UNTIL(rn_loop_uv(loop), c->eof || c->read_error, 3000);
}

/* b, after a's one request was handled, sent a frame of too many
 * elements: b alone got the protocol error and was closed, with the event
 * and the stat. */
static void expect_elements_refused(client_t *a, client_t *b) {
  wait_closed(b);
  ASSERT(got_has(b, "-ERR Protocol error"));
  ASSERT(got_has(b, "max_elements"));
  ASSERT_EQ(T.handled, 1);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_MAX_ELEMENTS], 1);
  ASSERT_EQ(stats().elements_refused, 1);
  ASSERT(!a->eof);
}

/* One byte every interval, for a client that never finishes its frame. */
typedef struct drip_s {
  uv_timer_t timer;
  client_t *c;
  unsigned sent;
} drip_t;

static void drip_tick(uv_timer_t *t) {
  drip_t *d = t->data;
  if (d->c->eof || d->c->read_error) return;
  cl_send(d->c, "x", 1);
  d->sent++;
}

static void drip_start(drip_t *d, client_t *c, uint64_t interval) {
  d->c = c;
  d->sent = 0;
  ASSERT_OK(uv_timer_init(rn_loop_uv(loop), &d->timer));
  d->timer.data = d;
  ASSERT_OK(uv_timer_start(&d->timer, drip_tick, interval, interval));
}

static void drip_stop(drip_t *d) { uv_close((uv_handle_t *)&d->timer, NULL); }

/* Sends len bytes after ms (the loop keeps running meanwhile). */
typedef struct later_s {
  uv_timer_t timer;
  client_t *c;
  const char *data;
  size_t len;
  int sent;
} later_t;

static void later_fire(uv_timer_t *t) {
  later_t *l = t->data;
  cl_send(l->c, l->data, l->len);
  l->sent = 1;
  uv_close((uv_handle_t *)&l->timer, NULL);
}

static void send_later(later_t *l, client_t *c, const char *data, size_t len,
                       uint64_t ms) {
  l->c = c;
  l->data = data;
  l->len = len;
  l->sent = 0;
  ASSERT_OK(uv_timer_init(rn_loop_uv(loop), &l->timer));
  l->timer.data = l;
  ASSERT_OK(uv_timer_start(&l->timer, later_fire, ms, 0));
}

static void length_header(char *p, uint32_t n) {
  p[0] = (char)(n >> 24);
  p[1] = (char)(n >> 16);
  p[2] = (char)(n >> 8);
  p[3] = (char)n;
}

/* ------------------------------------------------------------------------ */

/* Defect 2: 8,000 small pipelined requests whose 1 KiB replies the client
 * never reads. Every protocol must stop taking requests once the replies
 * queued pass the high-water mark, per frame (before: all 8,000 handled
 * in one pass, ~8 MiB queued against a 1 MiB mark). */
static void backlog_per_frame(rn_protocol_t protocol) {
  enum { N = 8000, REPLY = 1024 };
  static char reply[REPLY];
  rn_server_options_t o;
  rn_buf_t batch;
  client_t *c;
  size_t i, want;

  options(&o, protocol);
  start(&o);
  memset(reply, 'x', sizeof(reply));
  if (protocol == RN_PROTOCOL_RESP) {
    reply[0] = '+';
    memcpy(reply + REPLY - 2, "\r\n", 2);
  } else if (protocol == RN_PROTOCOL_LINE) {
    reply[REPLY - 1] = '\n';
  } else {
    length_header(reply, REPLY - 4);
  }
  T.reply = reply;
  T.reply_len = REPLY;
  c = connect_client(0);
  ASSERT_OK(uv_read_stop((uv_stream_t *)&c->tcp));
  rn_buf_init(&batch);
  for (i = 0; i < N; i++)
    ASSERT_OK(rn_codec_encode(rn_server_codec(T.server), &batch, "a", 1));
  cl_send(c, batch.base, batch.len);
  rn_buf_free(&batch);

  RUN_UNTIL(rn_loop_uv(loop), T.handled == N ||
                (T.handled > 0 && first_conn()->held_back &&
                 !first_conn()->reading),
            5000);
  ASSERT_LE(T.max_backlog, RN_SERVER_HIGH_WATER + REPLY);
  ASSERT_LT(T.handled, N);
  ASSERT_GE(T.events[RN_SERVER_EVENT_BACKLOG], 1);
  ASSERT_GE(stats().backlogged, 1);
  ASSERT_LE(stats().buffered_out, RN_SERVER_HIGH_WATER + REPLY);

  /* the client reads again: every reply arrives, in order */
  want = (size_t)N * REPLY;
  ASSERT_OK(uv_read_start((uv_stream_t *)&c->tcp, cl_alloc, cl_read));
  RUN_UNTIL(rn_loop_uv(loop), c->got.len >= want, 10000);
  ASSERT_EQ(c->got.len, want);
  ASSERT_EQ(T.handled, N);
  ASSERT_EQ(stats().buffered_out, 0);
  stop();
}

static void test_backlog_checked_per_frame_resp(void) {
  backlog_per_frame(RN_PROTOCOL_RESP);
}
static void test_backlog_checked_per_frame_line(void) {
  backlog_per_frame(RN_PROTOCOL_LINE);
}
static void test_backlog_checked_per_frame_length(void) {
  backlog_per_frame(RN_PROTOCOL_LENGTH);
}

/* Defect 4 (output): four clients pipelining 100 KiB replies without
 * reading, each under its own high-water mark: output_budget bounds what
 * the server queues for all of them together. Connections stop being
 * read at half of it, so that none is refused here. */
static void test_output_budget_bounds_all_connections(void) {
  enum { PER = 12, REPLY = 100 * 1024, CLIENTS = 4 };
  static char reply[REPLY];
  rn_server_options_t o;
  rn_buf_t batch;
  int i;
  size_t j;

  options(&o, RN_PROTOCOL_LINE);
  o.output_budget = 1024 * 1024;
  start(&o);
  memset(reply, 'y', sizeof(reply));
  reply[REPLY - 1] = '\n';
  T.reply = reply;
  T.reply_len = REPLY;
  rn_buf_init(&batch);
  for (j = 0; j < PER; j++) ASSERT_OK(rn_buf_append(&batch, "a\n", 2));
  for (i = 0; i < CLIENTS; i++) {
    client_t *c = connect_client(i);
    ASSERT_OK(uv_read_stop((uv_stream_t *)&c->tcp));
  }
  for (i = 0; i < CLIENTS; i++) cl_send(&T.c[i], batch.base, batch.len);
  rn_buf_free(&batch);
  RUN_UNTIL(rn_loop_uv(loop), T.handled == PER * CLIENTS || T.events[RN_SERVER_EVENT_BACKLOG] > 0,
            5000);
  /* a connection with nothing queued may add one reply past the mark */
  ASSERT_LE(T.max_total, o.output_budget / 2 + (size_t)CLIENTS * REPLY);
  for (i = 0; i < CLIENTS; i++)
    ASSERT_OK(uv_read_start((uv_stream_t *)&T.c[i].tcp, cl_alloc, cl_read));
  RUN_UNTIL(rn_loop_uv(loop), T.c[0].got.len == PER * REPLY && T.c[1].got.len == PER * REPLY &&
                T.c[2].got.len == PER * REPLY && T.c[3].got.len == PER * REPLY,
            10000);
  ASSERT_LE(T.max_total, o.output_budget / 2 + (size_t)CLIENTS * REPLY);
  ASSERT_EQ(T.handled, PER * CLIENTS);
  ASSERT_EQ(stats().budget_refused, 0);
  stop();
}

/* A RESP reply of len bytes ("+xxx...\r\n"). */
static void simple_reply(char *reply, size_t len) {
  memset(reply, 'x', len);
  reply[0] = '+';
  memcpy(reply + len - 2, "\r\n", 2);
  T.reply = reply;
  T.reply_len = len;
}

/* A RESP server with a write_timeout of 300 ms (o) answering with reply
 * (len bytes), and client 0 connected, not reading. */
static client_t *start_unread_client(rn_server_options_t *o, char *reply,
                                     size_t len) {
  client_t *c;
  options(o, RN_PROTOCOL_RESP);
  o->write_timeout_ms = 300;
  start(o);
  simple_reply(reply, len);
  c = connect_client(0);
  ASSERT_OK(uv_read_stop((uv_stream_t *)&c->tcp));
  return c;
}

/* n pipelined GETs in one write. */
static void send_gets(client_t *c, size_t n) {
  static const char get[] = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
  rn_buf_t batch;
  size_t i;
  rn_buf_init(&batch);
  for (i = 0; i < n; i++)
    ASSERT_OK(rn_buf_append(&batch, get, sizeof(get) - 1));
  cl_send(c, batch.base, batch.len);
  rn_buf_free(&batch);
}

/* Review finding 1: a handler that waits (10 ms) and a client pipelining
 * 400 requests for 64 KiB replies without reading. Before, the backlog
 * was looked at only before each frame and counted only replies made:
 * all 400 were taken before the first reply existed, and ~25 MiB piled
 * up past the 1 MiB mark with no event. Requests being handled count
 * now: one connection holds at most the mark plus max_pipeline replies,
 * and gets every reply once it reads. */
static void test_slow_handler_pipeline_bounded_by_max_pipeline(void) {
  enum { N = 400, REPLY = 64 * 1024, PIPE = 4 };
  static char reply[REPLY];
  rn_server_options_t o;
  client_t *c;

  options(&o, RN_PROTOCOL_RESP);
  o.max_pipeline = PIPE;
  start(&o);
  simple_reply(reply, REPLY);
  defer_start();
  c = connect_client(0);
  ASSERT_OK(uv_read_stop((uv_stream_t *)&c->tcp));
  send_gets(c, N);
  /* until all were taken (the defect), or the connection is held with
   * nothing left in the making */
  RUN_UNTIL(rn_loop_uv(loop), T.handled == N ||
                (T.handled > 0 && T.nwaiting == 0 &&
                 first_conn()->held_back && !first_conn()->reading &&
                 first_conn()->handling == 0),
            10000);
  ASSERT_LE(T.max_backlog, RN_SERVER_HIGH_WATER + (size_t)PIPE * REPLY);
  ASSERT_LE(T.max_out, RN_SERVER_HIGH_WATER + (size_t)PIPE * REPLY);
  ASSERT_LT(T.handled, N);
  ASSERT_GE(T.events[RN_SERVER_EVENT_BACKLOG], 1);
  ASSERT_GE(stats().backlogged, 1);

  ASSERT_OK(uv_read_start((uv_stream_t *)&c->tcp, cl_alloc, cl_read));
  RUN_UNTIL(rn_loop_uv(loop), c->got.len >= (size_t)N * REPLY, 20000);
  ASSERT_EQ(c->got.len, (size_t)N * REPLY);
  ASSERT_EQ(T.handled, N);
  ASSERT_LE(T.max_backlog, RN_SERVER_HIGH_WATER + (size_t)PIPE * REPLY);
  defer_stop();
  stop();
}

/* Review finding 1 (budget): replies of requests being handled push the
 * server past output_budget. Before, output_budget only stopped reading
 * and never refused anyone: one non-reading pipeliner held ~25 MiB
 * against a 1 MiB budget. Now the connection with the largest backlog
 * is closed, the server stays within the budget, and a small client's
 * replies still all arrive. */
static void test_output_budget_refuses_largest_backlog(void) {
  enum { BIG = 400, SMALL = 4, REPLY = 64 * 1024 };
  static char reply[REPLY];
  rn_server_options_t o;
  client_t *big, *small;

  options(&o, RN_PROTOCOL_RESP);
  o.output_budget = 1024 * 1024;
  start(&o);
  simple_reply(reply, REPLY);
  defer_start();
  big = connect_client(0);
  small = connect_client(1);
  ASSERT_OK(uv_read_stop((uv_stream_t *)&big->tcp));
  ASSERT_OK(uv_read_stop((uv_stream_t *)&small->tcp));
  send_gets(small, SMALL);
  RUN_UNTIL(rn_loop_uv(loop), T.handled == SMALL && T.nwaiting == 0, 3000);
  send_gets(big, BIG);
  RUN_UNTIL(rn_loop_uv(loop),
            stats().budget_refused >= 1 || T.handled == SMALL + BIG, 10000);
  ASSERT_EQ(stats().budget_refused, 1);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_BUDGET], 1);
  ASSERT_LE(T.max_out, o.output_budget);
  ASSERT_LT(T.handled, SMALL + BIG);
  RUN_UNTIL(rn_loop_uv(loop), stats().open == 1, 1000); /* the big one went */

  ASSERT_OK(uv_read_start((uv_stream_t *)&small->tcp, cl_alloc, cl_read));
  RUN_UNTIL(rn_loop_uv(loop), small->got.len == (size_t)SMALL * REPLY, 5000);
  ASSERT(!small->eof);
  defer_stop();
  stop();
}

static void on_drained(rn_server_t *server) {
  (void)server;
  T.closed = 1;
}

/* Review finding 2: a client that never reads was never timed out (a
 * write in flight counted as activity for idle_timeout) and a finishing
 * connection had no timer at all: three such clients held their replies
 * for good, and a drain waited its whole length. Now a write whose
 * socket takes no byte for write_timeout closes its connection, event
 * and stat, finishing connections included. */
static void test_write_timeout_closes_client_that_never_reads(void) {
  enum { N = 64, REPLY = 256 * 1024 };
  static char reply[REPLY];
  rn_server_options_t o;
  client_t *a, *b;
  uint64_t t0;
  unsigned h0;
  int i;

  a = start_unread_client(&o, reply, REPLY);
  t0 = now_ms(); /* no write can have started before */
  send_gets(a, N);
  RUN_UNTIL(rn_loop_uv(loop), T.handled > 0 && first_conn()->held_back, 3000);
  RUN_UNTIL(rn_loop_uv(loop), stats().write_timeouts == 1, 3000);
  ASSERT_GE(now_ms() - t0 + 10, o.write_timeout_ms);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_WRITE_TIMEOUT], 1);
  RUN_UNTIL(rn_loop_uv(loop), stats().open == 0, 1000);
  ASSERT_EQ(stats().buffered_out, 0);

  /* finishing: a drain of a minute ends as soon as the stalled client
   * is closed */
  b = connect_client(1);
  ASSERT_OK(uv_read_stop((uv_stream_t *)&b->tcp));
  h0 = T.handled;
  send_gets(b, N);
  RUN_UNTIL(rn_loop_uv(loop), T.handled > h0 && first_conn()->held_back, 3000);
  rn_server_drain(T.server, 60000, on_drained);
  RUN_UNTIL(rn_loop_uv(loop), T.closed, 3000);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_WRITE_TIMEOUT], 2);
  for (i = 0; i < NCLIENTS; i++)
    if (T.c[i].tcp.data != NULL) cl_close(&T.c[i]);
  test_loop_close(loop);
  for (i = 0; i < NCLIENTS; i++) cl_free(&T.c[i]);
}

/* A client that reads in bursts: four reads (of 64 KiB at most) every
 * 100 ms. */
typedef struct bursts_s {
  uv_timer_t timer;
  client_t *c;
  unsigned reads_left;
} bursts_t;

static bursts_t bursts;

static void bursts_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  cl_read(s, nread, buf);
  if (nread != 0 && --bursts.reads_left == 0) uv_read_stop(s);
}

static void bursts_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  cl_alloc(h, n, buf);
  if (buf->len > 65536) buf->len = 65536;
}

static void bursts_tick(uv_timer_t *t) {
  int err;
  (void)t;
  bursts.reads_left = 4;
  /* Still reading the last tick's bursts (a slow run, valgrind): they
   * go on, now four more. */
  err = uv_read_start((uv_stream_t *)&bursts.c->tcp, bursts_alloc,
                      bursts_read);
  ASSERT(err == 0 || err == UV_EALREADY);
}

/* write_timeout is about a socket that takes nothing: a client that reads
 * slowly, here in bursts well within write_timeout of each other, keeps
 * its connection and gets every reply. */
static void test_write_timeout_spares_slow_reader(void) {
  enum { N = 32, REPLY = 256 * 1024 };
  static char reply[REPLY];
  rn_server_options_t o;
  client_t *c;
  uint64_t t0;

  c = start_unread_client(&o, reply, REPLY);
  t0 = now_ms();
  bursts.c = c;
  ASSERT_OK(uv_timer_init(rn_loop_uv(loop), &bursts.timer));
  ASSERT_OK(uv_timer_start(&bursts.timer, bursts_tick, 100, 100));
  send_gets(c, N);
  RUN_UNTIL(rn_loop_uv(loop),
            c->got.len == (size_t)N * REPLY || c->eof || c->read_error,
            30000);
  ASSERT_EQ(c->got.len, (size_t)N * REPLY);
  fprintf(stderr, "   %llu ms\n", (unsigned long long)(now_ms() - t0));
  ASSERT_GE(now_ms() - t0, 3 * o.write_timeout_ms); /* it was put to the test */
  ASSERT_EQ(stats().write_timeouts, 0);
  ASSERT_GE(stats().backlogged, 1); /* it did wait on the client */
  uv_close((uv_handle_t *)&bursts.timer, NULL);
  stop();
}

/* Review finding 8: inline commands bypassed max_elements (a line of
 * 5,001 words reached the handler as 5,001 arguments). Counted as they
 * are decoded now: refused like an array announcing too many. */
static void test_resp_inline_max_elements_refused(void) {
  rn_server_options_t o;
  rn_buf_t line;
  client_t *a, *b;
  int i;

  options(&o, RN_PROTOCOL_RESP);
  o.max_elements = 10;
  start(&o);
  a = connect_client(0);
  cl_send(a, "SET k v a b c d e f g\r\n", 23);
  RUN_UNTIL(rn_loop_uv(loop), a->got.len == 5, 3000);
  ASSERT_MEM_EQ(a->got.base, "+OK\r\n", 5);

  b = connect_client(1);
  rn_buf_init(&line);
  ASSERT_OK(rn_buf_append(&line, "SET", 3));
  for (i = 0; i < 5000; i++) ASSERT_OK(rn_buf_append(&line, " a", 2));
  ASSERT_OK(rn_buf_append(&line, "\r\n", 2));
  cl_send(b, line.base, line.len);
  rn_buf_free(&line);
  expect_elements_refused(a, b);
  stop();
}

/* Defect 3: a client that starts a frame and sends one byte every 30 ms
 * is refused after frame_timeout (resp: with an error reply), not kept
 * forever. */
static void test_frame_timeout_refuses_dribbler(void) {
  rn_server_options_t o;
  client_t *c;
  drip_t d;
  uint64_t t0;

  options(&o, RN_PROTOCOL_RESP);
  o.frame_timeout_ms = 200;
  o.idle_timeout_ms = 0;
  start(&o);
  c = connect_client(0);
  t0 = now_ms();
  cl_send(c, "*1\r\n$100000\r\n", 13);
  drip_start(&d, c, 30);
  wait_closed(c);
  ASSERT_GE(now_ms() - t0, 200);
  ASSERT(got_has(c, "-ERR"));
  ASSERT(got_has(c, "frame_timeout"));
  ASSERT_GT(d.sent, 3);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_FRAME_TIMEOUT], 1);
  ASSERT_EQ(stats().frame_timeouts, 1);
  ASSERT_EQ(T.handled, 0);
  drip_stop(&d);
  stop();
}

/* Defect 3 on rnp: the refusal is a GOAWAY naming the last request the
 * connection will answer (the one before the slow frame), then the close. */
static void test_frame_timeout_rnp_goaway(void) {
  rn_server_options_t o;
  rnp_client_t a;
  rn_rnp_frame_t f;
  rn_buf_t b;
  uint64_t id;

  options(&o, RN_PROTOCOL_RNP);
  o.frame_timeout_ms = 200;
  start(&o);
  rx_open(rn_loop_uv(loop), &a, T.port);
  id = rx_request(&a, "one", NULL, -1, 0);
  rx_wait_frames(rn_loop_uv(loop), &a, 2);
  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_REQUEST;
  f.id = a.next_id++;
  f.payload = "never finished";
  f.payload_len = 14;
  rn_buf_init(&b);
  ASSERT_OK(rn_rnp_encode(&b, &f, RN_DEFAULT_MAX_FRAME));
  rx_send_raw(&a, b.base, b.len - 4);
  rn_buf_free(&b);
  RUN_UNTIL(rn_loop_uv(loop), rx_eof(&a), 3000);
  ASSERT_EQ(a.count, 3);
  ASSERT_EQ(a.frames[1].type, RN_RNP_REPLY);
  ASSERT_EQ(a.frames[2].type, RN_RNP_GOAWAY);
  ASSERT_EQ(a.frames[2].id, id);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_FRAME_TIMEOUT], 1);
  ASSERT_EQ(T.handled, 1);
  rx_close(rn_loop_uv(loop), &a);
  stop();
}

/* Defect 3: a frame that completes in time is not refused, however slowly
 * its bytes come, and the next frame gets a timeout of its own. */
static void test_frame_timeout_restarts_per_frame(void) {
  static const char ping[] = "*1\r\n$4\r\nPING\r\n";
  rn_server_options_t o;
  client_t *c;
  size_t i;

  options(&o, RN_PROTOCOL_RESP);
  o.frame_timeout_ms = 300;
  start(&o);
  c = connect_client(0);
  /* two frames, each taking ~200 ms: 400 ms in all, under 300 each */
  for (i = 0; i < 2; i++) {
    later_t l;
    cl_send(c, ping, 5);
    send_later(&l, c, ping + 5, sizeof(ping) - 1 - 5, 200);
    RUN_UNTIL(rn_loop_uv(loop), l.sent && c->got.len == 7 * (i + 1), 1000);
  }
  ASSERT(!c->eof);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_FRAME_TIMEOUT], 0);
  stop();
}

/* Defect 3: idle_timeout counts from the last whole frame: bytes of a
 * frame that never ends do not keep the connection (frame_timeout off). */
static void test_dribbled_byte_does_not_reset_idle(void) {
  rn_server_options_t o;
  client_t *c;
  drip_t d;
  uint64_t t0;

  options(&o, RN_PROTOCOL_LINE);
  o.idle_timeout_ms = 300;
  o.frame_timeout_ms = 0;
  start(&o);
  /* Before the connect: the idle timer starts at the accept. (The loop's
   * clock has 1 ms steps.) */
  t0 = now_ms();
  c = connect_client(0);
  drip_start(&d, c, 30);
  wait_closed(c);
  ASSERT_GE(now_ms() - t0 + 1, 300);
  ASSERT_GT(d.sent, 5);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_IDLE], 1);
  ASSERT_EQ(stats().idle_timeouts, 1);
  drip_stop(&d);
  stop();
}

/* Regression (merging the server's limits with its protocol errors): a
 * whole request must count as activity. The merge lost the count of
 * frames handed out, so idle_timeout ran from the accept and closed a
 * client sending a request every 40 ms (the hostile spec's well-behaved
 * client saw EOF). */
static void send_request(uv_timer_t *t) {
  client_t *c = t->data;
  if (!c->eof && !c->read_error) cl_send(c, "a\n", 2);
}

static void test_whole_requests_keep_connection_from_idle(void) {
  rn_server_options_t o;
  uv_timer_t every;
  client_t *c;
  uint64_t t0;

  options(&o, RN_PROTOCOL_LINE);
  o.idle_timeout_ms = 200;
  start(&o);
  c = connect_client(0);
  ASSERT_OK(uv_timer_init(rn_loop_uv(loop), &every));
  every.data = c;
  ASSERT_OK(uv_timer_start(&every, send_request, 40, 40));
  t0 = now_ms();
  RUN_UNTIL(rn_loop_uv(loop), c->eof || c->read_error || now_ms() - t0 >= 700,
            3000);
  uv_close((uv_handle_t *)&every, NULL);
  ASSERT(!c->eof && !c->read_error);
  ASSERT_GT(T.handled, 5);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_IDLE], 0);
  /* Once the requests stop, idle_timeout closes it as before. */
  wait_closed(c);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_IDLE], 1);
  stop();
}

/* Defects 3-6: the defaults are safe for untrusted clients. */
static void test_server_defaults_are_bounded(void) {
  rn_server_options_t o;
  struct rlimit rl;

  rn_server_options_init(&o);
  ASSERT_GT(o.idle_timeout_ms, 0);
  ASSERT_GT(o.frame_timeout_ms, 0);
  ASSERT_LT(o.frame_timeout_ms, o.idle_timeout_ms);
  ASSERT_GT(o.codec.max_frame, 0);
  ASSERT_LE(o.codec.max_frame, 1024 * 1024);
  ASSERT_GT(o.input_budget, 0);
  ASSERT_GT(o.output_budget, 0);
  ASSERT_GT(o.max_elements, 0);
  ASSERT_LE(o.max_elements, o.codec.max_frame / 4);
  /* max_connections 0: below the descriptor limit, with headroom */
  options(&o, RN_PROTOCOL_LINE);
  start(&o);
  ASSERT_OK(getrlimit(RLIMIT_NOFILE, &rl));
  ASSERT_GT(T.server->options.max_connections, 0);
  ASSERT_LT(T.server->options.max_connections, rl.rlim_cur);
  ASSERT_LE(T.server->options.max_connections, rl.rlim_cur / 4 * 3);
  ASSERT_EQ(T.server->codec.max_frame, 1024 * 1024);
  stop();
}

/* Defect 4: past input_budget the connection holding the most partial
 * input is refused; the others keep going. */
static void test_input_budget_refuses_largest_partial_frame(void) {
  enum { BIG = 700 * 1024, SMALL = 500 };
  rn_server_options_t o;
  client_t *a, *b, *c;
  char *big;
  char hdr[4];

  options(&o, RN_PROTOCOL_LENGTH);
  o.input_budget = 512 * 1024;
  start(&o);
  b = connect_client(1);
  c = connect_client(2);
  length_header(hdr, 1000);
  cl_send(b, hdr, 4);
  cl_send(c, hdr, 4);
  big = calloc(1, BIG);
  ASSERT(big != NULL);
  cl_send(b, big, SMALL);
  cl_send(c, big, SMALL);
  RUN_UNTIL(rn_loop_uv(loop), conns_buffering() == 2, 3000);
  a = connect_client(0);
  length_header(big, 900 * 1024);
  cl_send(a, big, BIG);
  free(big);
  RUN_UNTIL(rn_loop_uv(loop), a->eof || a->read_error, 5000);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_BUDGET], 1);
  ASSERT_EQ(stats().budget_refused, 1);
  ASSERT_LE(stats().buffered_in, o.input_budget);
  /* the small ones were not touched: they finish their frames */
  {
    static char rest[1000 - SMALL];
    cl_send(b, rest, sizeof(rest));
    cl_send(c, rest, sizeof(rest));
  }
  /* "+OK\r\n", raw: */
  RUN_UNTIL(rn_loop_uv(loop), b->got.len == 5 && c->got.len == 5, 5000);
  ASSERT_EQ(T.handled, 2);
  ASSERT(!b->eof && !c->eof);
  stop();
}

/* Defect 4: among partial frames holding as much, the budget refuses the
 * one begun first (a stalled upload before one arriving now). */
static void test_input_budget_refuses_oldest_among_equals(void) {
  enum { PART = 40 * 1024 };
  static char part[PART];
  rn_server_options_t o;
  later_t lb, lc;
  client_t *a, *b, *c;

  options(&o, RN_PROTOCOL_LENGTH);
  o.input_budget = 100 * 1024; /* two 64 KiB buffers pass it */
  start(&o);
  /* accepted in the opposite order: connection age is not frame age */
  c = connect_client(2);
  b = connect_client(1);
  a = connect_client(0);
  length_header(part, 200 * 1024);
  cl_send(a, part, PART);
  send_later(&lb, b, part, PART, 20);
  send_later(&lc, c, part, PART, 40);
  RUN_UNTIL(rn_loop_uv(loop), lc.sent && (a->eof || a->read_error) &&
                (b->eof || b->read_error),
            5000);
  ASSERT_EQ(stats().budget_refused, 2);
  ASSERT(!c->eof && !c->read_error);
  ASSERT_EQ(stats().buffered_in, 65536); /* c's, the one left */
  stop();
}

/* Defect 4: a connection keeps no read buffer once its frame is handled
 * (before: an 800 KiB request left ~1 MiB behind), and a dribbler's few
 * bytes cost a few bytes (before: a 64 KiB read buffer each). */
static void test_read_buffer_shrinks_after_large_frame(void) {
  enum { SIZE = 800 * 1024 };
  rn_server_options_t o;
  client_t *a, *b;
  char *frame;

  options(&o, RN_PROTOCOL_LENGTH);
  start(&o);
  a = connect_client(0);
  frame = calloc(1, SIZE + 4);
  ASSERT(frame != NULL);
  length_header(frame, SIZE);
  cl_send(a, frame, 100 * 1024); /* in two parts, so it is buffered */
  RUN_UNTIL(rn_loop_uv(loop), first_conn()->rbuf.len >= 100 * 1024, 5000);
  cl_send(a, frame + 100 * 1024, SIZE + 4 - 100 * 1024);
  free(frame);
  RUN_UNTIL(rn_loop_uv(loop), T.handled == 1 && a->got.len == 5, 5000);
  ASSERT_EQ(first_conn()->rbuf.cap, 0);
  ASSERT_EQ(stats().buffered_in, 0);

  b = connect_client(1);
  cl_send(b, "\0\0", 2);
  RUN_UNTIL(rn_loop_uv(loop), stats().buffered_in > 0, 5000);
  ASSERT_LE(stats().buffered_in, 64);
  stop();
}

/* Defect 4: a server's default max_frame is 1 MiB, not 16: a header
 * announcing 2 MiB closes the connection at once. */
static void test_server_default_max_frame(void) {
  rn_server_options_t o;
  client_t *a;
  char hdr[4];

  options(&o, RN_PROTOCOL_LENGTH);
  start(&o);
  a = connect_client(0);
  length_header(hdr, 2 * 1024 * 1024);
  cl_send(a, hdr, 4);
  wait_closed(a);
  ASSERT_EQ(T.handled, 0);
  stop();
}

/* Defect 5: a resp request announcing more than max_elements elements is
 * refused from its header, before its elements are sent or buffered; one
 * at the bound is served. */
static void test_resp_max_elements_refused_from_header(void) {
  static const char four[] =
      "*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n";
  rn_server_options_t o;
  client_t *a, *b;

  options(&o, RN_PROTOCOL_RESP);
  o.max_elements = 4;
  start(&o);
  a = connect_client(0);
  cl_send(a, four, sizeof(four) - 1);
  RUN_UNTIL(rn_loop_uv(loop), a->got.len == 5, 3000);
  ASSERT_MEM_EQ(a->got.base, "+OK\r\n", 5);

  b = connect_client(1);
  cl_send(b, "*5\r\n$1\r\na\r\n", 11);
  expect_elements_refused(a, b);
  stop();
}

/* Review finding 10: a bad byte inside a large array, before the codec's
 * hint (3 bytes per element owed) was reached, went unseen: the client
 * got no protocol error and waited out frame_timeout (10 s). Answered as
 * soon as it arrives now. */
static void test_resp_bad_byte_in_large_array_answered_at_once(void) {
  static const char head[] = "*1000\r\n$1\r\na\r\n";
  rn_server_options_t o;
  client_t *a;

  options(&o, RN_PROTOCOL_RESP);
  start(&o);
  a = connect_client(0);
  cl_send(a, head, sizeof(head) - 1);
  RUN_UNTIL(rn_loop_uv(loop), first_conn()->rbuf.len == sizeof(head) - 1, 3000);
  cl_send(a, "x\r\n", 3);
  RUN_UNTIL(rn_loop_uv(loop), a->eof || a->read_error, 2000);
  ASSERT(got_has(a, "-ERR Protocol error"));
  ASSERT_EQ(stats().protocol_errors, 1);
  ASSERT_EQ(stats().frame_timeouts, 0);
  stop();
}

/* Defect 6: past max_connections a new connection is told and closed at
 * once, counted; once one closes, the next is served. */
static void test_max_connections_closes_extra_at_once(void) {
  static const char ping[] = "*1\r\n$4\r\nPING\r\n";
  rn_server_options_t o;
  int i;

  options(&o, RN_PROTOCOL_RESP);
  o.max_connections = 2;
  start(&o);
  for (i = 0; i < 2; i++) {
    client_t *c = connect_client(i);
    cl_send(c, ping, sizeof(ping) - 1);
    RUN_UNTIL(rn_loop_uv(loop), c->got.len == 7, 3000);
  }
  for (i = 2; i < 5; i++) {
    client_t *c = connect_client(i);
    wait_closed(c);
    ASSERT(got_has(c, "-ERR max number of clients reached"));
  }
  ASSERT_EQ(stats().connections_refused, 3);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_MAX_CONNECTIONS], 3);
  ASSERT_EQ(stats().connections, 2);
  ASSERT(!T.c[0].eof && !T.c[1].eof);

  cl_close(&T.c[0]);
  RUN_UNTIL(rn_loop_uv(loop), stats().open == 1, 3000);
  {
    client_t *c = connect_client(5);
    cl_send(c, ping, sizeof(ping) - 1);
    RUN_UNTIL(rn_loop_uv(loop), c->got.len == 7, 3000);
    ASSERT_MEM_EQ(c->got.base, "+PONG\r\n", 7);
  }
  stop();
}

/* CPU time of this process (client and server both), in ms. */
static double cpu_ms(void) {
  struct timespec ts;
  ASSERT_OK(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts));
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Sends `reads` pieces of 3 bytes of an unfinished frame, each read by
 * the server on its own (the next goes once it is buffered); the CPU
 * time they took. */
static double dribble_cpu(client_t *c, const char *piece, int reads) {
  double t0 = cpu_ms();
  int i;
  for (i = 0; i < reads; i++) {
    size_t had = first_conn()->rbuf.len;
    cl_send(c, piece, 3);
    RUN_UNTIL(rn_loop_uv(loop), first_conn()->rbuf.len == had + 3, 5000);
  }
  return cpu_ms() - t0;
}

/* Defect 1: bytes trickling into a large partial frame cost the same per
 * read as into a small one: framing resumes where it stopped instead of
 * walking the buffered frame again on every read (before: a 60,000-item
 * RESP array, or a 600 KB line of CRs with delimiter CRLF, each CR a
 * candidate, was walked whole per 3-byte read). */
static void framing_resumes(rn_protocol_t protocol) {
  enum { READS = 150, ITEMS = 60000 };
  const char *piece = protocol == RN_PROTOCOL_RESP ? "abc" : "\r\r\r";
  rn_server_options_t o;
  rn_buf_t head;
  client_t *c;
  double small, large;
  int i;

  options(&o, protocol);
  o.codec.delimiter = "\r\n";
  o.frame_timeout_ms = 0;
  start(&o);
  c = connect_client(0);
  rn_buf_init(&head);
  if (protocol == RN_PROTOCOL_RESP) {
    ASSERT_OK(rn_resp_encode_array(&head, 2));
    ASSERT_OK(rn_buf_append(&head, "$100000\r\n", 10)); /* one open bulk */
  } else {
    ASSERT_OK(rn_buf_append(&head, "\r", 1));
  }
  cl_send(c, head.base, head.len);
  RUN_UNTIL(rn_loop_uv(loop), first_conn()->rbuf.len == head.len, 5000);
  small = dribble_cpu(c, piece, READS);
  cl_close(c);
  RUN_UNTIL(rn_loop_uv(loop), stats().open == 0, 5000);

  c = connect_client(1);
  head.len = 0;
  if (protocol == RN_PROTOCOL_RESP) {
    ASSERT_OK(rn_resp_encode_array(&head, ITEMS + 1));
    for (i = 0; i < ITEMS; i++)
      ASSERT_OK(rn_resp_encode_bulk(&head, "item", 4));
    ASSERT_OK(rn_buf_append(&head, "$100000\r\n", 10));
  } else {
    for (i = 0; i < ITEMS; i++) ASSERT_OK(rn_buf_append(&head, "\r\r\r\r\r\r\r\r\r\r", 10));
  }
  cl_send(c, head.base, head.len);
  RUN_UNTIL(rn_loop_uv(loop), first_conn()->rbuf.len == head.len, 5000);
  large = dribble_cpu(c, piece, READS);
  rn_buf_free(&head);
  fprintf(stderr, "   %d reads: %.1f ms into a small frame, %.1f ms into a "
          "large one\n", READS, small, large);
  ASSERT_LT(large, 3 * small + 20);
  ASSERT_EQ(T.handled, 0);
  stop();
}

static void test_resp_framing_resumes_across_reads(void) {
  framing_resumes(RN_PROTOCOL_RESP);
}
static void test_line_framing_resumes_across_reads(void) {
  framing_resumes(RN_PROTOCOL_LINE);
}

/* --- max_concurrent: a full server --------------------------------------- */

static rn_server_t *full_server;
static int full_port;
static int full_closed;
static rn_request_t *held_request;
static int saw_b;

static void count_full_close(rn_server_t *s) {
  (void)s;
  full_closed++;
}

/* A plain blocking socket: connect() on loopback returns once the kernel
 * has queued the connection for accept, before the server's loop ran. */
static int raw_connect(int port) {
  struct sockaddr_in addr;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_OK(connect(fd, (struct sockaddr *)&addr, sizeof(addr)));
  return fd;
}

static void raw_send(int fd, const char *text) {
  ASSERT_EQ(send(fd, text, strlen(text), 0), (ssize_t)strlen(text));
}

static void release_held(void) {
  ASSERT(held_request != NULL);
  test_reply(held_request, "a", 1);
  held_request = NULL;
}

/* "a" is held until the test releases it (the server is full meanwhile);
 * "b" is answered and then closes the server, as a shutdown request would. */
static void hold_a_shut_down_on_b(rn_server_t *s, rn_request_t *req,
                                  const char *body, size_t len) {
  if (len == 1 && body[0] == 'a') {
    held_request = req;
    return;
  }
  test_reply(req, body, len);
  if (len == 1 && body[0] == 'b') {
    saw_b = 1;
    rn_server_close(s, count_full_close);
  }
}

/* A line server that takes one request at a time. */
static void start_full_server(void) {
  rn_server_options_t so;
  char host[64];
  loop = test_loop_open();
  rn_server_options_init(&so);
  so.listen = "127.0.0.1:0";
  so.codec.protocol = RN_PROTOCOL_LINE;
  so.on_request = hold_a_shut_down_on_b;
  so.max_concurrent = 1;
  ASSERT_OK(rn_server_new(loop, &so, &full_server));
  ASSERT_OK(rn_server_address(full_server, host, sizeof(host), &full_port));
  full_closed = 0;
  held_request = NULL;
  saw_b = 0;
}

static void on_watchdog(int sig) {
  static const char msg[] = "watchdog: the loop is stuck\n";
  (void)sig;
  (void)!write(2, msg, sizeof(msg) - 1);
  abort();
}

/* server_resume() walked the connections keeping a pointer to the next one;
 * a handler closing the server unlinked that one, which then pointed at
 * itself, and the walk never ended. The stuck loop is inside the library,
 * beyond RUN_UNTIL's reach: a watchdog ends it. */
static void test_server_resume_walking_a_changed_list(void) {
  char buf[16];
  int q, r;

  start_full_server();
  signal(SIGALRM, on_watchdog);
  alarm(10);
  /* Accepted in this order, q's connection is followed by r's. q pipelines
   * two requests in one segment: the read that hands out "a" finds the
   * server full for "b", which waits for server_resume(). */
  q = raw_connect(full_port);
  r = raw_connect(full_port);
  raw_send(q, "a\nb\n");
  RUN_UNTIL(rn_loop_uv(loop), held_request != NULL, 2000);
  release_held();
  RUN_UNTIL(rn_loop_uv(loop), full_closed == 1, 2000);
  alarm(0);
  ASSERT_EQ(saw_b, 1);
  ASSERT_GE(recv(q, buf, sizeof(buf), MSG_DONTWAIT), 2);
  ASSERT_MEM_EQ(buf, "a\n", 2);
  close(q);
  close(r);
  test_loop_close(loop);
}

/* A connection accepted while the server was at max_concurrent was not
 * read, and not marked paused either, so nothing ever resumed it. */
static void test_connection_accepted_while_full_never_read(void) {
  int first, second;

  start_full_server();
  first = raw_connect(full_port);
  raw_send(first, "a\n");
  RUN_UNTIL(rn_loop_uv(loop), held_request != NULL, 2000);
  /* The server is full. connect() returned with the connection already
   * queued for accept: one loop turn accepts it, then "a" is released. */
  second = raw_connect(full_port);
  raw_send(second, "b\n");
  uv_run(rn_loop_uv(loop), UV_RUN_NOWAIT);
  release_held();
  RUN_UNTIL(rn_loop_uv(loop), saw_b, 2000);
  RUN_UNTIL(rn_loop_uv(loop), full_closed == 1, 2000);
  close(first);
  close(second);
  test_loop_close(loop);
}

TEST_LIST_START
  TEST_ENTRY(test_backlog_checked_per_frame_resp)
  TEST_ENTRY(test_backlog_checked_per_frame_line)
  TEST_ENTRY(test_backlog_checked_per_frame_length)
  TEST_ENTRY(test_output_budget_bounds_all_connections)
  TEST_ENTRY(test_slow_handler_pipeline_bounded_by_max_pipeline)
  TEST_ENTRY(test_output_budget_refuses_largest_backlog)
  TEST_ENTRY(test_write_timeout_closes_client_that_never_reads)
  TEST_ENTRY(test_write_timeout_spares_slow_reader)
  TEST_ENTRY(test_resp_inline_max_elements_refused)
  TEST_ENTRY(test_resp_bad_byte_in_large_array_answered_at_once)
  TEST_ENTRY(test_frame_timeout_refuses_dribbler)
  TEST_ENTRY(test_frame_timeout_rnp_goaway)
  TEST_ENTRY(test_frame_timeout_restarts_per_frame)
  TEST_ENTRY(test_dribbled_byte_does_not_reset_idle)
  TEST_ENTRY(test_whole_requests_keep_connection_from_idle)
  TEST_ENTRY(test_server_defaults_are_bounded)
  TEST_ENTRY(test_input_budget_refuses_largest_partial_frame)
  TEST_ENTRY(test_input_budget_refuses_oldest_among_equals)
  TEST_ENTRY(test_read_buffer_shrinks_after_large_frame)
  TEST_ENTRY(test_server_default_max_frame)
  TEST_ENTRY(test_resp_max_elements_refused_from_header)
  TEST_ENTRY(test_max_connections_closes_extra_at_once)
  TEST_ENTRY(test_resp_framing_resumes_across_reads)
  TEST_ENTRY(test_line_framing_resumes_across_reads)
  TEST_ENTRY(test_server_resume_walking_a_changed_list)
  TEST_ENTRY(test_connection_accepted_while_full_never_read)
TEST_LIST_END

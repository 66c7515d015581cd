/* Regression tests for bugs found in a review of the pool's retries,
 * ejection, endpoint lists and abortive close. One case per bug, named
 * after it; each fails (an assertion, or ASan) against the code before
 * its fix.
 *
 * Run with a case's name as the only argument to run that case alone. */
#include "resilnet.h"
#include "task.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

static rn_loop_t *loop;
#include "run_until.h"

/* --- scripted line peers ---------------------------------------------------
 * Each answers "ok" to every line, in order, except that a line "hold" (and
 * every line after it on that connection) waits for peer_release(). A peer
 * with `never_hold` answers everything at once; one with `stop_reading`
 * answers the first bytes it gets with one "ok" and then reads no more. */

#define PEER_CONNS 8

struct peer;

struct peer_conn {
  uv_tcp_t h;
  struct peer *peer;
  unsigned lines;
  unsigned held;
  char line[8];
  size_t line_len;
};

struct peer {
  uv_tcp_t listener;
  struct peer_conn conns[PEER_CONNS];
  int count;
  int never_hold;
  int stop_reading;
  char endpoint[64];
};

static void peer_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  static char space[65536];
  (void)h;
  (void)n;
  *buf = uv_buf_init(space, sizeof(space));
}

static void peer_write_done(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void peer_answer(struct peer_conn *c) {
  uv_write_t *req = malloc(sizeof(*req));
  uv_buf_t b = uv_buf_init((char *)"ok\n", 3);
  ASSERT(req != NULL);
  ASSERT_OK(uv_write(req, (uv_stream_t *)&c->h, &b, 1, peer_write_done));
}

static void peer_line(struct peer_conn *c) {
  int hold = c->line_len == 4 && memcmp(c->line, "hold", 4) == 0;
  c->lines++;
  if (!c->peer->never_hold && (hold || c->held > 0))
    c->held++;
  else
    peer_answer(c);
}

static void peer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct peer_conn *c = s->data;
  ssize_t i;
  if (nread < 0) {
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, NULL);
    return;
  }
  if (nread > 0 && c->peer->stop_reading) {
    c->lines++;
    peer_answer(c);
    ASSERT_OK(uv_read_stop(s));
    return;
  }
  for (i = 0; i < nread; i++) {
    if (buf->base[i] == '\n') {
      peer_line(c);
      c->line_len = 0;
    } else if (c->line_len < sizeof(c->line)) {
      c->line[c->line_len++] = buf->base[i];
    }
  }
}

static void peer_on_connection(uv_stream_t *listener, int status) {
  struct peer *p = listener->data;
  struct peer_conn *c;
  ASSERT_OK(status);
  ASSERT_LT(p->count, PEER_CONNS);
  c = &p->conns[p->count++];
  c->peer = p;
  ASSERT_OK(uv_tcp_init(listener->loop, &c->h));
  c->h.data = c;
  ASSERT_OK(uv_accept(listener, (uv_stream_t *)&c->h));
  ASSERT_OK(uv_read_start((uv_stream_t *)&c->h, peer_alloc, peer_read));
}

static void peer_start(struct peer *p) {
  struct sockaddr_in addr;
  struct sockaddr_storage ss;
  int namelen = sizeof(ss);
  memset(p, 0, sizeof(*p));
  ASSERT_OK(uv_ip4_addr("127.0.0.1", 0, &addr));
  ASSERT_OK(uv_tcp_init(rn_loop_uv(loop), &p->listener));
  p->listener.data = p;
  ASSERT_OK(uv_tcp_bind(&p->listener, (struct sockaddr *)&addr, 0));
  ASSERT_OK(uv_listen((uv_stream_t *)&p->listener, 16, peer_on_connection));
  ASSERT_OK(uv_tcp_getsockname(&p->listener, (struct sockaddr *)&ss,
                               &namelen));
  snprintf(p->endpoint, sizeof(p->endpoint), "127.0.0.1:%d",
           ntohs(((struct sockaddr_in *)&ss)->sin_port));
}

static unsigned peer_holding(const struct peer *p) {
  int i;
  unsigned n = 0;
  for (i = 0; i < p->count; i++) n += p->conns[i].held;
  return n;
}

static void peer_release(struct peer *p) {
  int i;
  for (i = 0; i < p->count; i++)
    for (; p->conns[i].held > 0; p->conns[i].held--)
      peer_answer(&p->conns[i]);
}

static void peer_close_conn(struct peer_conn *c) {
  if (!uv_is_closing((uv_handle_t *)&c->h))
    uv_close((uv_handle_t *)&c->h, NULL); /* the FIN leaves now */
}

static void peer_stop(struct peer *p) {
  int i;
  uv_close((uv_handle_t *)&p->listener, NULL);
  for (i = 0; i < p->count; i++) peer_close_conn(&p->conns[i]);
}

/* --- the pool side ---------------------------------------------------------- */

struct outcome {
  int fired;
  int status;
  int order; /* when it fired, counted with pool closes */
};

static int events_seen; /* callbacks and closes, in order */

static void record(rn_pool_t *p, void *data, const rn_result_t *r) {
  struct outcome *o = data;
  (void)p;
  o->fired++;
  o->status = r->status;
  o->order = ++events_seen;
}

static int pool_closed;
static int pool_closed_order;

static void count_pool_close(rn_pool_t *p) {
  (void)p;
  pool_closed++;
  pool_closed_order = ++events_seen;
}

/* One line call; the callback must not have run when rn_pool_call returns. */
static void call_with(rn_pool_t *pool, const char *body, uint64_t timeout_ms,
                      struct outcome *o) {
  rn_call_options_t co;
  rn_buf_t frame;
  memset(o, 0, sizeof(*o));
  memset(&co, 0, sizeof(co));
  co.timeout = timeout_ms;
  rn_buf_init(&frame);
  ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frame, body, strlen(body)));
  ASSERT_OK(rn_pool_call(pool, frame.base, frame.len, &co, record, o));
  rn_buf_free(&frame);
  ASSERT_EQ(o->fired, 0);
}

static const char *list_one[1];

static void pool_defaults(rn_pool_options_t *po, const char *endpoint) {
  rn_pool_options_init(po);
  list_one[0] = endpoint;
  po->endpoints = list_one;
  po->endpoint_count = 1;
  po->codec.protocol = RN_PROTOCOL_LINE;
  po->heartbeat_interval = 0;
  po->size = 1;
}

static rn_pool_stats_t stats_of(rn_pool_t *pool) {
  rn_pool_stats_t st;
  rn_pool_stats(pool, &st);
  return st;
}

static void set_endpoints(rn_pool_t *pool, const char *a, const char *b) {
  const char *list[2];
  list[0] = a;
  list[1] = b;
  ASSERT_OK(rn_pool_set_endpoints(pool, list, b != NULL ? 2 : 1));
}

/* Closes the pool and waits for its close callback. */
static void close_pool(rn_pool_t *pool) {
  pool_closed = 0;
  rn_pool_close(pool, 0, count_pool_close);
  RUN_UNTIL(pool_closed == 1, 2000);
}

/* --- the cases -------------------------------------------------------------- */

/* A dropped endpoint's busy connection closes "once its last reply is in",
 * but the check ran only for replies to calls. With a heartbeat ping queued
 * behind the last call, the ping's reply emptied the connection and nothing
 * closed it: it kept pinging its old server for as long as the pool lived
 * (housekeeping never looks at dropped endpoints). */
static void test_removed_endpoint_kept_open_by_a_ping(void) {
  struct peer a, b;
  struct outcome held;
  rn_pool_options_t po;
  rn_pool_t *pool;

  open_loop();
  peer_start(&a);
  peer_start(&b);
  pool_defaults(&po, b.endpoint);
  po.heartbeat_ping = "PING";
  po.heartbeat_ping_len = 4;
  po.heartbeat_interval = 100;
  po.heartbeat_timeout = 5000;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call_with(pool, "hold", 5000, &held);
  /* The handshake ping answered, "hold" held, and a heartbeat ping queued
   * behind it. */
  RUN_UNTIL(peer_holding(&b) == 2, 2000);

  set_endpoints(pool, a.endpoint, NULL);
  peer_release(&b);
  RUN_UNTIL(held.fired, 2000);
  ASSERT_OK(held.status);
  RUN_UNTIL(stats_of(pool).evictions.removed == 1, 1000);

  close_pool(pool);
  peer_stop(&a);
  peer_stop(&b);
  finish();
}

/* The same with the handshake: a connection still waiting for the answer
 * to its first ping when its endpoint was dropped became ready afterwards,
 * retiring and empty, and stayed open. */
static void test_removed_endpoint_kept_open_by_the_handshake(void) {
  struct peer a, b;
  rn_pool_options_t po;
  rn_pool_t *pool;

  open_loop();
  peer_start(&a);
  peer_start(&b);
  a.never_hold = 1;
  pool_defaults(&po, b.endpoint);
  po.heartbeat_ping = "hold"; /* b holds the handshake ping */
  po.heartbeat_ping_len = 4;
  po.heartbeat_interval = 5000;
  po.heartbeat_timeout = 10000;
  po.connect_timeout = 5000;
  po.min_idle = 1;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  RUN_UNTIL(peer_holding(&b) == 1, 2000);

  set_endpoints(pool, a.endpoint, NULL);
  peer_release(&b);
  RUN_UNTIL(stats_of(pool).evictions.removed == 1, 1500);

  close_pool(pool);
  peer_stop(&a);
  peer_stop(&b);
  finish();
}

/* And with a call that expired before it was written (behind a write the
 * server stopped reading): taking it off left the retiring connection
 * empty with no reply to come. */
static void test_removed_endpoint_kept_open_by_an_expired_call(void) {
  enum { BIG = 32 * 1024 * 1024 };
  struct peer a, b;
  struct outcome big, small;
  rn_pool_options_t po;
  rn_pool_t *pool;
  char *frame;

  open_loop();
  peer_start(&a);
  peer_start(&b);
  b.stop_reading = 1;
  pool_defaults(&po, b.endpoint);
  po.write_high_water = 4 * (uint64_t)BIG; /* the connection stays writable */
  ASSERT_OK(rn_pool_new(loop, &po, &pool));

  /* Far more than the socket buffers take: its write stays in flight. b
   * answers it from its first bytes and reads no more. */
  frame = malloc(BIG);
  ASSERT(frame != NULL);
  memset(frame, 'x', BIG - 1);
  frame[BIG - 1] = '\n';
  memset(&big, 0, sizeof(big));
  ASSERT_OK(rn_pool_call(pool, frame, BIG, NULL, record, &big));
  free(frame);
  RUN_UNTIL(big.fired, 2000);
  ASSERT_OK(big.status);

  call_with(pool, "y", 200, &small); /* waits behind the write */
  ASSERT_EQ(stats_of(pool).in_flight, 1);
  set_endpoints(pool, a.endpoint, NULL);
  RUN_UNTIL(small.fired, 2000);
  ASSERT_EQ(small.status, UV_ETIMEDOUT);
  RUN_UNTIL(stats_of(pool).evictions.removed == 1, 1000);

  close_pool(pool);
  peer_stop(&a);
  peer_stop(&b);
  finish();
}

static int eject_events;

static void count_ejects(rn_pool_t *p, const rn_pool_event_t *ev) {
  (void)p;
  if (ev->type == RN_EVENT_EJECT) eject_events++;
}

/* A connection of a dropped endpoint that failed still counted against its
 * endpoint: the dropped endpoint was ejected. It is in no list the pool
 * looks at, so the ejection never ended, and pool->ejected stayed one too
 * high: stats lied, and the share cap kept real endpoints from being
 * ejected. */
static void test_removed_endpoint_ejected(void) {
  struct peer a, b, c;
  struct outcome held;
  rn_pool_options_t po;
  rn_pool_t *pool;

  open_loop();
  peer_start(&a);
  peer_start(&b);
  peer_start(&c);
  pool_defaults(&po, b.endpoint);
  po.eject.failures = 1;
  po.eject.max_share = 0.5;
  po.on_event = count_ejects;
  eject_events = 0;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call_with(pool, "hold", 5000, &held);
  RUN_UNTIL(peer_holding(&b) == 1, 2000);

  set_endpoints(pool, a.endpoint, c.endpoint);
  /* b's server goes away with the call on it, before answering anything:
   * a failure of b, which is no longer the pool's. */
  peer_close_conn(&b.conns[0]);
  RUN_UNTIL(held.fired, 2000);
  ASSERT_EQ(held.status, UV_EOF);
  ASSERT_EQ(eject_events, 0);
  ASSERT_EQ(stats_of(pool).ejected, 0);

  close_pool(pool);
  peer_stop(&a);
  peer_stop(&b);
  peer_stop(&c);
  finish();
}

static int close_when_connecting;

static void close_on_connecting(rn_pool_t *p, const rn_pool_event_t *ev) {
  if (ev->type != RN_EVENT_STATE || ev->connection == 0) return;
  if (close_when_connecting && strcmp(ev->state, "connecting") == 0) {
    close_when_connecting = 0;
    rn_pool_close(p, 5000, count_pool_close);
  }
}

/* A close asked for while calls were being placed runs from a timer. An
 * abort in between took the close as done: it closed the connections and
 * stopped that timer, so the waiting calls were never failed. The pool
 * then finished and was freed with the calls' deadlines still in the
 * loop's timer heap, and their expiry wrote into the freed pool. */
static void test_abort_after_a_deferred_close(void) {
  struct peer a;
  struct outcome o;
  rn_pool_options_t po;
  rn_pool_t *pool;

  open_loop();
  peer_start(&a);
  pool_defaults(&po, a.endpoint);
  po.on_event = close_on_connecting;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  close_when_connecting = 1;
  pool_closed = 0;
  events_seen = 0;
  /* Placing it opens a connection; the event closes the pool (deferred). */
  call_with(pool, "x", 300, &o);
  ASSERT_EQ(close_when_connecting, 0);
  rn_pool_abort(pool, NULL);
  RUN_UNTIL(o.fired && pool_closed, 2000);
  ASSERT_EQ(o.fired, 1);
  ASSERT_EQ(o.status, RN_ECLOSED);
  ASSERT_LT(o.order, pool_closed_order);

  peer_stop(&a);
  finish();
}

static int close_on_removed;

static void close_when_removed(rn_pool_t *p, const rn_pool_event_t *ev) {
  if (ev->type != RN_EVENT_STATE || ev->connection == 0) return;
  if (close_on_removed && strcmp(ev->state, "closed") == 0 &&
      ev->reason != NULL && strcmp(ev->reason, "removed") == 0) {
    close_on_removed = 0;
    rn_pool_close(p, 0, count_pool_close);
  }
}

/* rn_pool_set_endpoints drops endpoints one at a time. An event handler
 * that closed the pool when the first one's idle connection closed made
 * the pool close the connections of the endpoints it could see: the new
 * list and the ones already dropped. The endpoints still to be dropped
 * were on neither, so their busy connections stayed open: their calls
 * were not failed, and the pool never finished closing. */
static void test_pool_closed_while_endpoints_are_dropped(void) {
  struct peer a, b, c;
  struct outcome held;
  rn_pool_options_t po;
  rn_pool_t *pool;
  const char *list[2];
  int i;

  open_loop();
  peer_start(&a);
  peer_start(&b);
  peer_start(&c);
  a.never_hold = 1;
  pool_defaults(&po, a.endpoint);
  list[0] = a.endpoint;
  list[1] = b.endpoint;
  po.endpoints = list;
  po.endpoint_count = 2;
  po.min_idle = 1; /* a connection to each, at once */
  po.on_event = close_when_removed;
  close_on_removed = 0;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  RUN_UNTIL(stats_of(pool).idle == 2, 2000);

  /* Calls take the endpoints in turn: one of two "hold"s reaches b (a
   * answers its one at once). */
  for (i = 0; i < 2 && peer_holding(&b) == 0; i++) {
    call_with(pool, "hold", 1000, &held);
    RUN_UNTIL(held.fired || peer_holding(&b) == 1, 2000);
  }
  ASSERT_EQ(peer_holding(&b), 1);
  ASSERT_EQ(held.fired, 0);
  ASSERT_EQ(stats_of(pool).idle, 1); /* a's */

  close_on_removed = 1;
  pool_closed = 0;
  set_endpoints(pool, c.endpoint, NULL); /* drops a, then b */
  ASSERT_EQ(close_on_removed, 0);
  RUN_UNTIL(held.fired, 2000);
  ASSERT_EQ(held.status, RN_ECLOSED);
  RUN_UNTIL(pool_closed == 1, 2000);

  peer_stop(&a);
  peer_stop(&b);
  peer_stop(&c);
  finish();
}

/* With a cap on calls in flight per endpoint, a call may wait while its
 * endpoint is full and another one is backing off. A reply that freed
 * room did not place it: nothing dispatched until the other endpoint's
 * reconnect, and the call timed out against an idle, healthy endpoint. */
static void test_call_waits_past_room_freed_under_max_in_flight(void) {
  struct peer a;
  struct outcome held, waiting;
  rn_pool_options_t po;
  rn_pool_t *pool;
  const char *list[2];

  open_loop();
  peer_start(&a);
  pool_defaults(&po, a.endpoint);
  list[0] = a.endpoint;
  list[1] = "127.0.0.1:1"; /* refused: backs off for 5 s */
  po.endpoints = list;
  po.endpoint_count = 2;
  po.min_idle = 1;
  po.max_in_flight = 1;
  po.reconnect.initial = 5000;
  po.reconnect.jitter = 0;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  RUN_UNTIL(stats_of(pool).idle == 1 && stats_of(pool).connect_failures == 1,
            2000);

  call_with(pool, "hold", 5000, &held); /* a is full */
  RUN_UNTIL(peer_holding(&a) == 1, 2000);
  call_with(pool, "y", 1000, &waiting); /* accepted: the other is not full */
  ASSERT_EQ(stats_of(pool).pending, 1);
  peer_release(&a);
  RUN_UNTIL(held.fired && waiting.fired, 2000);
  ASSERT_OK(held.status);
  ASSERT_OK(waiting.status);

  close_pool(pool);
  peer_stop(&a);
  finish();
}

/* With every endpoint of the list ejected (a new list kept only ejected
 * ones), a call waits for an ejection to end, as without a cap. The check
 * for "every endpoint full" passed over the ejected ones and, finding no
 * other, said all were full: every call failed at once with EOVERLOAD. */
static void test_all_ejected_read_as_all_full(void) {
  struct peer b;
  struct outcome o;
  rn_pool_options_t po;
  rn_pool_t *pool;
  rn_call_options_t co;
  const char *list[2];

  open_loop();
  peer_start(&b);
  pool_defaults(&po, b.endpoint);
  list[0] = "127.0.0.1:1"; /* refused: ejected after one failure */
  list[1] = b.endpoint;
  po.endpoints = list;
  po.endpoint_count = 2;
  po.min_idle = 1;
  po.max_in_flight = 4;
  po.eject.failures = 1;
  po.eject.max_share = 0.5;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  RUN_UNTIL(stats_of(pool).ejected == 1, 2000);
  set_endpoints(pool, "127.0.0.1:1", NULL);
  ASSERT_EQ(stats_of(pool).ejected, 1);

  memset(&o, 0, sizeof(o));
  memset(&co, 0, sizeof(co));
  co.timeout = 200;
  ASSERT_OK(rn_pool_call(pool, "x\n", 2, &co, record, &o));
  RUN_UNTIL(o.fired, 2000);
  /* It waited, as calls do with all ejected: its deadline, reported as
   * the last connect error if that came after the last connect. */
  ASSERT(o.status == UV_ETIMEDOUT || o.status == UV_ECONNREFUSED);

  close_pool(pool);
  peer_stop(&b);
  finish();
}

TEST_LIST_START
  TEST_ENTRY(test_removed_endpoint_kept_open_by_a_ping)
  TEST_ENTRY(test_removed_endpoint_kept_open_by_the_handshake)
  TEST_ENTRY(test_removed_endpoint_kept_open_by_an_expired_call)
  TEST_ENTRY(test_removed_endpoint_ejected)
  TEST_ENTRY(test_abort_after_a_deferred_close)
  TEST_ENTRY(test_pool_closed_while_endpoints_are_dropped)
  TEST_ENTRY(test_call_waits_past_room_freed_under_max_in_flight)
  TEST_ENTRY(test_all_ejected_read_as_all_full)
TEST_LIST_END

/* Regression tests for bugs found in review (and one by CI), one case
 * each, named after the bug. Each case sets up the exact sequence that
 * broke: against the code before the fix it fails an assertion, trips a
 * sanitizer or (the server_resume case) trips its watchdog.
 *
 * Run with a case's name as the only argument to run that case alone. */
#include "resilnet.h"
#include "task.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

static rn_loop_t *loop;
#include "run_until.h"

static char endpoint[128];
static const char *endpoint_list[1];

/* --- clients -------------------------------------------------------------- */

struct outcome {
  int fired;
  int status;
  char body[16];
  size_t body_len;
};

static void record(rn_pool_t *p, void *data, const rn_result_t *r) {
  struct outcome *o = data;
  (void)p;
  o->fired++;
  o->status = r->status;
  o->body_len = r->body_len < sizeof(o->body) ? r->body_len : sizeof(o->body);
  if (r->body) memcpy(o->body, r->body, o->body_len);
}

/* One line call. The header promises the callback never runs before
 * rn_pool_call() returned: every call checks it. */
static void call(rn_pool_t *pool, const char *body, uint64_t timeout_ms,
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

static void pool_defaults(rn_pool_options_t *po) {
  rn_pool_options_init(po);
  endpoint_list[0] = endpoint;
  po->endpoints = endpoint_list;
  po->endpoint_count = 1;
  po->codec.protocol = RN_PROTOCOL_LINE;
  po->heartbeat_interval = 0;
}

static rn_pool_stats_t stats_of(rn_pool_t *pool) {
  rn_pool_stats_t st;
  rn_pool_stats(pool, &st);
  return st;
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

/* --- an rn_server speaking lines ------------------------------------------ */

static rn_server_t *server;
static int server_port;
static int server_closed;

static void count_server_close(rn_server_t *s) {
  (void)s;
  server_closed++;
}

static void reply(rn_request_t *req, const char *body, size_t len) {
  rn_buf_t out;
  rn_buf_init(&out);
  ASSERT_OK(rn_codec_encode(rn_server_codec(rn_request_server(req)), &out,
                            body, len));
  ASSERT_OK(rn_request_reply(req, out.base, out.len));
  rn_buf_free(&out);
}

static void echo(rn_server_t *s, rn_request_t *req, const char *body,
                 size_t len) {
  (void)s;
  reply(req, body, len);
}

static void start_server(rn_request_cb on_request, unsigned max_concurrent) {
  rn_server_options_t so;
  char host[64];
  rn_server_options_init(&so);
  so.listen = "127.0.0.1:0";
  so.codec.protocol = RN_PROTOCOL_LINE;
  so.on_request = on_request;
  if (max_concurrent > 0) so.max_concurrent = max_concurrent;
  ASSERT_OK(rn_server_new(loop, &so, &server));
  ASSERT_OK(rn_server_address(server, host, sizeof(host), &server_port));
  snprintf(endpoint, sizeof(endpoint), "%s:%d", host, server_port);
  server_closed = 0;
}

/* --- a scripted line peer, for what an rn_server would not do -------------- */

enum { PEER_ANSWER_ALL, PEER_ANSWER_FIRST };

struct peer_conn {
  uv_tcp_t h;
  unsigned lines;
  unsigned held; /* lines not answered yet */
  unsigned marks; /* lines "mark" received */
  char line[8];
  size_t line_len;
};

static uv_tcp_t peer_listener;
static struct peer_conn peer_conns[8];
static int peer_count;
static int peer_mode;

static void peer_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  static char space[4096];
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

/* PEER_ANSWER_ALL answers every line but "hold", in order: a line after a
 * held one waits behind it. PEER_ANSWER_FIRST answers the first line of a
 * connection (a handshake ping, say) and then goes silent. */
static void peer_line(struct peer_conn *c) {
  int hold = c->line_len == 4 && memcmp(c->line, "hold", 4) == 0;
  c->lines++;
  if (c->line_len == 4 && memcmp(c->line, "mark", 4) == 0) c->marks++;
  if (peer_mode == PEER_ANSWER_FIRST) {
    if (c->lines == 1) peer_answer(c);
  } else if (hold || c->held > 0) {
    c->held++;
  } else {
    peer_answer(c);
  }
}

static void peer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct peer_conn *c = s->data;
  ssize_t i;
  if (nread < 0) {
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, NULL);
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
  struct peer_conn *c;
  ASSERT_OK(status);
  ASSERT_LT(peer_count, 8);
  c = &peer_conns[peer_count++];
  ASSERT_OK(uv_tcp_init(listener->loop, &c->h));
  c->h.data = c;
  ASSERT_OK(uv_accept(listener, (uv_stream_t *)&c->h));
  ASSERT_OK(uv_read_start((uv_stream_t *)&c->h, peer_alloc, peer_read));
}

static void peer_start(int mode) {
  struct sockaddr_in addr;
  struct sockaddr_storage ss;
  int namelen = sizeof(ss);
  memset(peer_conns, 0, sizeof(peer_conns));
  peer_count = 0;
  peer_mode = mode;
  ASSERT_OK(uv_ip4_addr("127.0.0.1", 0, &addr));
  ASSERT_OK(uv_tcp_init(rn_loop_uv(loop), &peer_listener));
  ASSERT_OK(uv_tcp_bind(&peer_listener, (struct sockaddr *)&addr, 0));
  ASSERT_OK(uv_listen((uv_stream_t *)&peer_listener, 16, peer_on_connection));
  ASSERT_OK(uv_tcp_getsockname(&peer_listener, (struct sockaddr *)&ss,
                               &namelen));
  snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d",
           ntohs(((struct sockaddr_in *)&ss)->sin_port));
}

static int peer_holding(void) {
  int i, n = 0;
  for (i = 0; i < peer_count; i++) n += (int)peer_conns[i].held;
  return n;
}

static void peer_release(void) {
  int i;
  for (i = 0; i < peer_count; i++)
    for (; peer_conns[i].held > 0; peer_conns[i].held--)
      peer_answer(&peer_conns[i]);
}

static void peer_close(struct peer_conn *c) {
  if (!uv_is_closing((uv_handle_t *)&c->h))
    uv_close((uv_handle_t *)&c->h, NULL); /* the FIN leaves now */
}

static void peer_stop(void) {
  int i;
  uv_close((uv_handle_t *)&peer_listener, NULL);
  for (i = 0; i < peer_count; i++) peer_close(&peer_conns[i]);
}

/* --- the cases ------------------------------------------------------------ */

/* A call finds an idle connection whose server has gone (a FIN the loop has
 * not polled yet). Picking it closes it; the close reported back into a
 * nested dispatch, which placed the call; the outer dispatch then took the
 * head of the now empty pending list for a call. */
static void test_nested_dispatch_on_dead_idle_connection(void) {
  struct outcome warm[2], held, after;
  rn_pool_options_t po;
  rn_pool_stats_t st;
  rn_pool_t *pool;
  int i;

  open_loop();
  peer_start(PEER_ANSWER_ALL);
  pool_defaults(&po);
  po.size = 4;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  /* Two calls before any connection: two connections open. */
  call(pool, "x", 0, &warm[0]);
  call(pool, "x", 0, &warm[1]);
  RUN_UNTIL(warm[0].fired && warm[1].fired && peer_count == 2, 2000);
  ASSERT_OK(warm[0].status);
  ASSERT_OK(warm[1].status);
  ASSERT_EQ(stats_of(pool).open, 2);

  /* One connection busy with a call the peer holds, the other idle. */
  call(pool, "hold", 0, &held);
  RUN_UNTIL(peer_holding() == 1, 2000);
  for (i = 0; i < peer_count; i++)
    if (peer_conns[i].held == 0) peer_close(&peer_conns[i]);
  usleep(5 * 1000); /* the loop has not polled since */

  call(pool, "x", 0, &after);
  st = stats_of(pool);
  /* "x" waits: after the EOF the busy sibling takes no new call until its
   * own peer proves alive (issue 14, defect 7); a new connection opens. */
  ASSERT_EQ(st.pending, 1);
  ASSERT_EQ(st.in_flight, 1);

  peer_release();
  RUN_UNTIL(held.fired && after.fired, 2000);
  ASSERT_OK(held.status);
  ASSERT_OK(after.status);
  ASSERT_EQ(after.body_len, 2);
  ASSERT_MEM_EQ(after.body, "ok", 2);
  rn_pool_close(pool, 0, NULL);
  peer_stop();
  finish();
}

/* Issue 14, defect 7: a crashed server's sockets close one after the
 * other. A call that failed on the first (EOF) was made again at once,
 * from its callback, and placed on a busy sibling whose FIN was next: it
 * failed as maybe executed though no server ever read it. Now the busy
 * sibling takes no new call until its own peer answers a ping sent after
 * the EOF; the call goes back to the pool before it is written and on to
 * a new connection. (Here the sibling's peer is alive but holds a call,
 * so the proof stays out and the call must not wait behind it.) */
static struct outcome again;
static int called_again;

static void call_again_on_failure(rn_pool_t *p, void *data,
                                  const rn_result_t *r) {
  record(p, data, r);
  if (r->status != 0 && !called_again) {
    called_again = 1;
    call(p, "mark", 0, &again);
  }
}

static void test_busy_sibling_of_eof_gets_no_new_call(void) {
  struct outcome warm[2], held[2];
  rn_pool_options_t po;
  rn_pool_t *pool;
  rn_buf_t frame;
  unsigned lines;
  int i;

  open_loop();
  peer_start(PEER_ANSWER_ALL);
  pool_defaults(&po);
  po.size = 4;
  po.heartbeat_interval = 1000; /* answered pings prove a suspect alive */
  po.heartbeat_timeout = 3000;
  po.heartbeat_ping = "ping";
  po.heartbeat_ping_len = 4;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call(pool, "x", 0, &warm[0]);
  call(pool, "x", 0, &warm[1]);
  RUN_UNTIL(warm[0].fired && warm[1].fired && peer_count == 2, 2000);
  ASSERT_EQ(stats_of(pool).idle, 2);

  /* Both connections busy with a call the peer holds. */
  called_again = 0;
  rn_buf_init(&frame);
  ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frame, "hold", 4));
  for (i = 0; i < 2; i++) {
    memset(&held[i], 0, sizeof(held[i]));
    ASSERT_OK(rn_pool_call(pool, frame.base, frame.len, NULL,
                           call_again_on_failure, &held[i]));
  }
  rn_buf_free(&frame);
  RUN_UNTIL(peer_conns[0].held == 1 && peer_conns[1].held == 1, 2000);

  lines = peer_conns[1].lines;
  peer_close(&peer_conns[0]);
  peer_conns[0].held = 0; /* nothing to answer there any more */
  RUN_UNTIL(again.fired, 2000);
  ASSERT_OK(again.status);
  ASSERT_MEM_EQ(again.body, "ok", 2);
  ASSERT_EQ(peer_conns[1].marks, 0); /* never written behind "hold" */
  ASSERT_EQ(peer_count, 3);          /* answered on a new connection */
  ASSERT_EQ(peer_conns[2].marks, 1);
  ASSERT_EQ(held[0].fired + held[1].fired, 1); /* the one in flight */
  ASSERT_EQ(held[0].fired ? held[0].status : held[1].status, UV_EOF);

  /* The sibling's peer answers "hold", then the proof ping. */
  peer_release();
  RUN_UNTIL(held[0].fired + held[1].fired == 2, 2000);
  ASSERT_EQ(peer_conns[1].lines, lines + 1); /* the proof ping, no more */
  /* Its pong cleared it: two calls find the two idle connections. */
  RUN_UNTIL(stats_of(pool).idle == 2, 2000);
  for (i = 0; i < 2; i++) call(pool, "x", 0, &warm[i]);
  RUN_UNTIL(warm[0].fired && warm[1].fired, 2000);
  ASSERT_EQ(peer_conns[1].lines, lines + 2);
  ASSERT_EQ(peer_count, 3);
  rn_pool_close(pool, 0, NULL);
  peer_stop();
  finish();
}

/* The server closed an idle connection moments after answering on it, and
 * the loop did not poll before the next call. A read that recent used to
 * count as proof of life (for 250 ms), so the call went into the closed
 * socket and failed with EOF: CI's restart spec, when the killed server
 * came back quickly. */
static void test_recently_read_idle_connection_closed_unpolled(void) {
  struct outcome first, second;
  rn_pool_options_t po;
  rn_pool_t *pool;

  open_loop();
  peer_start(PEER_ANSWER_ALL);
  pool_defaults(&po);
  po.size = 1;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call(pool, "x", 0, &first);
  RUN_UNTIL(first.fired, 2000);
  ASSERT_OK(first.status);
  ASSERT_EQ(peer_count, 1);

  peer_close(&peer_conns[0]);
  usleep(5 * 1000); /* the FIN is in; the loop has not looked */
  call(pool, "y", 0, &second);
  RUN_UNTIL(second.fired, 2000);
  ASSERT_OK(second.status);
  ASSERT_MEM_EQ(second.body, "ok", 2);
  ASSERT_EQ(peer_count, 2); /* answered on a new connection */
  rn_pool_close(pool, 0, NULL);
  peer_stop();
  finish();
}

static int pool_closed;

static void count_pool_close(rn_pool_t *p) {
  (void)p;
  pool_closed++;
}

static void close_pool_when_a_connection_closes(rn_pool_t *p,
                                                const rn_pool_event_t *ev) {
  if (ev->type != RN_EVENT_STATE || ev->connection == 0) return;
  if (strcmp(ev->state, "closed") == 0) rn_pool_close(p, 0, count_pool_close);
}

/* An event handler closes the pool when housekeeping closes an idle
 * connection. Housekeeping re-armed its timer on the way out, so the pool
 * was freed with its timer still in the loop's heap. */
static void test_maintenance_timer_restarted_after_close(void) {
  struct outcome o;
  rn_pool_options_t po;
  rn_pool_t *pool;

  open_loop();
  start_server(echo, 0);
  pool_defaults(&po);
  po.idle_timeout = 100;
  po.on_event = close_pool_when_a_connection_closes;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  pool_closed = 0;
  call(pool, "x", 0, &o);
  RUN_UNTIL(o.fired, 2000);
  ASSERT_OK(o.status);
  /* Housekeeping runs once a second: the idle close comes at about 1 s. */
  RUN_UNTIL(pool_closed == 1, 3000);
  rn_server_close(server, NULL);
  finish(); /* a timer left behind makes rn_loop_free() fail, or fires on
               the freed pool */
}

static void close_pool_when_connecting(rn_pool_t *p,
                                       const rn_pool_event_t *ev) {
  if (ev->type != RN_EVENT_STATE || ev->connection == 0) return;
  if (strcmp(ev->state, "connecting") == 0) rn_pool_close(p, 0, NULL);
}

/* A unix endpoint connects synchronously. The "connecting" event went out
 * before the connect started: a handler closing the pool there freed the
 * connection, the connect then used it, and the call's callback ran inside
 * rn_pool_call(). */
static void test_unix_connect_started_after_the_event(void) {
  rn_server_options_t so;
  rn_pool_options_t po;
  rn_pool_t *pool;
  struct outcome o;
  char path[64], listen[80];

  open_loop();
  snprintf(path, sizeof(path), "/tmp/rn-test-regress-%d.sock", (int)getpid());
  unlink(path);
  snprintf(listen, sizeof(listen), "unix:%s", path);
  rn_server_options_init(&so);
  so.listen = listen;
  so.codec.protocol = RN_PROTOCOL_LINE;
  so.on_request = echo;
  ASSERT_OK(rn_server_new(loop, &so, &server));
  snprintf(endpoint, sizeof(endpoint), "%s", listen);
  pool_defaults(&po);
  po.on_event = close_pool_when_connecting;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call(pool, "x", 0, &o); /* checks the callback has not run yet */
  RUN_UNTIL(o.fired, 2000);
  ASSERT_EQ(o.fired, 1);
  ASSERT_EQ(o.status, RN_ECLOSED);
  rn_server_close(server, NULL);
  finish();
}

static rn_request_t *held_request;
static int saw_b;

static void release_held(void) {
  ASSERT(held_request != NULL);
  reply(held_request, "a", 1);
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
  reply(req, body, len);
  if (len == 1 && body[0] == 'b') {
    saw_b = 1;
    rn_server_close(s, count_server_close);
  }
}

static void start_full_server(void) {
  open_loop();
  start_server(hold_a_shut_down_on_b, 1);
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
  q = raw_connect(server_port);
  r = raw_connect(server_port);
  raw_send(q, "a\nb\n");
  RUN_UNTIL(held_request != NULL, 2000);
  release_held();
  RUN_UNTIL(server_closed == 1, 2000);
  alarm(0);
  ASSERT_EQ(saw_b, 1);
  ASSERT_GE(recv(q, buf, sizeof(buf), MSG_DONTWAIT), 2);
  ASSERT_MEM_EQ(buf, "a\n", 2);
  close(q);
  close(r);
  finish();
}

/* A connection accepted while the server was at max_concurrent was not
 * read, and not marked paused either, so nothing ever resumed it. */
static void test_connection_accepted_while_full_never_read(void) {
  int first, second;

  start_full_server();
  first = raw_connect(server_port);
  raw_send(first, "a\n");
  RUN_UNTIL(held_request != NULL, 2000);
  /* The server is full. connect() returned with the connection already
   * queued for accept: one loop turn accepts it, then "a" is released. */
  second = raw_connect(server_port);
  raw_send(second, "b\n");
  uv_run(rn_loop_uv(loop), UV_RUN_NOWAIT);
  release_held();
  RUN_UNTIL(saw_b, 2000);
  RUN_UNTIL(server_closed == 1, 2000);
  close(first);
  close(second);
  finish();
}

/* A call that found every connection over write_high_water waited; when the
 * write finished nothing placed it, and it timed out against a server that
 * answers at once. */
static void test_calls_stranded_past_write_high_water(void) {
  struct outcome a, b;
  rn_pool_options_t po;
  rn_pool_stats_t st;
  rn_pool_t *pool;

  open_loop();
  start_server(echo, 0);
  pool_defaults(&po);
  po.size = 1;
  po.write_high_water = 1; /* any write in flight fills the connection */
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call(pool, "warm", 0, &a);
  RUN_UNTIL(a.fired, 2000);
  ASSERT_OK(a.status);
  call(pool, "one", 1000, &a);
  call(pool, "two", 1000, &b);
  st = stats_of(pool);
  ASSERT_EQ(st.in_flight, 1);
  ASSERT_EQ(st.pending, 1);
  RUN_UNTIL(a.fired && b.fired, 3000);
  ASSERT_OK(a.status);
  ASSERT_OK(b.status);
  ASSERT_EQ(b.body_len, 3);
  ASSERT_MEM_EQ(b.body, "two", 3);
  rn_pool_close(pool, 0, NULL);
  rn_server_close(server, NULL);
  finish();
}

static unsigned loop_turns;

static void count_turn(uv_prepare_t *p) {
  (void)p;
  loop_turns++;
}

/* With a ping out and unanswered past heartbeat_interval, the heartbeat
 * timer re-armed itself at 1 ms until the dead-peer deadline: one loop turn
 * per millisecond per silent connection. Waking for the deadline alone
 * takes a handful of turns. */
static void test_heartbeat_spinning_while_a_ping_is_out(void) {
  rn_pool_options_t po;
  rn_pool_stats_t st;
  rn_pool_t *pool;
  uv_prepare_t turns;

  open_loop();
  peer_start(PEER_ANSWER_FIRST);
  ASSERT_OK(uv_prepare_init(rn_loop_uv(loop), &turns));
  ASSERT_OK(uv_prepare_start(&turns, count_turn));
  uv_unref((uv_handle_t *)&turns);
  loop_turns = 0;
  pool_defaults(&po);
  po.size = 1;
  po.min_idle = 1; /* one connection, opened now, with no call */
  po.heartbeat_ping = "PING";
  po.heartbeat_ping_len = 4;
  po.heartbeat_interval = 100;
  po.heartbeat_timeout = 500;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  RUN_UNTIL(stats_of(pool).dead_peers == 1, 3000);
  st = stats_of(pool);
  ASSERT_GE(st.heartbeats, 1);
  /* A spinning timer takes about one turn per ms of the 400-500 ms wait. */
  ASSERT_LT(loop_turns, 50);
  rn_pool_close(pool, 0, NULL);
  peer_stop();
  uv_close((uv_handle_t *)&turns, NULL);
  finish();
}

/* A connection the pool opened and later closed itself (idle_timeout)
 * without it ever carrying a call was counted as a failed connect: the
 * endpoint backed off and the next call waited out the delay. */
static void test_pool_initiated_close_counted_as_endpoint_failure(void) {
  struct outcome x, y, z;
  rn_pool_options_t po;
  rn_pool_stats_t st;
  rn_pool_t *pool;

  open_loop();
  start_server(echo, 0);
  pool_defaults(&po);
  po.idle_timeout = 100;
  po.reconnect.initial = 5000; /* far beyond the next call's deadline */
  po.reconnect.jitter = 0;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  /* Two calls before any connection: two connections open, and the first
   * one ready takes both calls. */
  call(pool, "x", 0, &x);
  call(pool, "y", 0, &y);
  RUN_UNTIL(x.fired && y.fired, 2000);
  ASSERT_OK(x.status);
  ASSERT_OK(y.status);
  ASSERT_EQ(stats_of(pool).open, 2);
  RUN_UNTIL(stats_of(pool).open == 0, 3000);
  st = stats_of(pool);
  ASSERT_EQ(st.evictions.idle, 2);
  ASSERT_EQ(st.connect_failures, 0);
  call(pool, "z", 1000, &z);
  RUN_UNTIL(z.fired, 3000);
  ASSERT_OK(z.status);
  rn_pool_close(pool, 0, NULL);
  rn_server_close(server, NULL);
  finish();
}

TEST_LIST_START
  TEST_ENTRY(test_nested_dispatch_on_dead_idle_connection)
  TEST_ENTRY(test_recently_read_idle_connection_closed_unpolled)
  TEST_ENTRY(test_busy_sibling_of_eof_gets_no_new_call)
  TEST_ENTRY(test_maintenance_timer_restarted_after_close)
  TEST_ENTRY(test_unix_connect_started_after_the_event)
  TEST_ENTRY(test_server_resume_walking_a_changed_list)
  TEST_ENTRY(test_connection_accepted_while_full_never_read)
  TEST_ENTRY(test_calls_stranded_past_write_high_water)
  TEST_ENTRY(test_heartbeat_spinning_while_a_ping_is_out)
  TEST_ENTRY(test_pool_initiated_close_counted_as_endpoint_failure)
TEST_LIST_END

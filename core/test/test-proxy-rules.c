/* Per-request rules of the fault proxy (issue 6). A plain libuv client
 * sends framed requests through a proxy that knows the protocol to an echo
 * upstream, which counts with the library's codec which requests reached
 * it. Every rule is measured at both ends: what the client got back, and
 * what the upstream saw. */
#include "resilnet.h"
#include "task.h"
#include "proxy.h"
#include "plain_client.h"

#include <errno.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <uv.h>

static rn_loop_t *loop;
#include "helpers.h"

/* ------------------------------------------------------------------------ */
/* The echo upstream: every byte goes back as it came; frames are counted   */

#define MAX_SEEN 64

static test_peer_t upstream_peer;
static rn_codec_t up_codec;
static int up_frames;               /* frames received, all connections */
static char up_seen[MAX_SEEN][24];  /* their bodies, in arrival order */

/* How many times the upstream received a frame with this body. */
static int up_saw(const char *body) {
  int i, n = 0;
  for (i = 0; i < up_frames && i < MAX_SEEN; i++)
    if (strcmp(up_seen[i], body) == 0) n++;
  return n;
}

/* The upstream's script: echo, then count the whole frames (an incomplete
 * one stays in c->in; after garbage, c->data marks it unframed). */
static void up_echo_and_count(test_peer_conn_t *c) {
  size_t pos = 0;
  test_peer_send(c, c->in.base + c->in.len - c->fresh, c->fresh);
  while (c->data == NULL && pos < c->in.len) {
    rn_frame_t f;
    int r = rn_codec_frame(&up_codec, c->in.base + pos, c->in.len - pos, &f);
    if (r == 0) break;
    if (r < 0) {
      c->data = &up_codec; /* unframed: stop parsing */
      break;
    }
    if (up_frames < MAX_SEEN)
      snprintf(up_seen[up_frames], sizeof(up_seen[0]), "%.*s",
               (int)f.body_len, c->in.base + pos + f.body_offset);
    up_frames++;
    pos += f.size;
  }
  if (c->data != NULL) pos = c->in.len;
  rn_buf_consume(&c->in, pos);
}

static int up_start(const rn_codec_options_t *codec) {
  up_frames = 0;
  ASSERT_OK(rn_codec_init(&up_codec, codec));
  test_peer_start(&upstream_peer, rn_loop_uv(loop), up_echo_and_count);
  upstream_peer.on_end = TEST_PEER_END_KEEP;
  return upstream_peer.port;
}

static void up_stop(void) { test_peer_stop(&upstream_peer); }

/* ------------------------------------------------------------------------ */
/* Plain clients                                                              */

static int proxy_port;

static void cl_connect(client_t *c) {
  cl_start(c, rn_loop_uv(loop), proxy_port);
  RUN_UNTIL(rn_loop_uv(loop), c->connected != 0, 5000);
  ASSERT_EQ(c->connected, 1);
}

static int ended(const client_t *c) { return c->eof || c->read_error != 0; }

/* ------------------------------------------------------------------------ */
/* Frames of the length codec (4-byte prefix)                                */

static rn_codec_t length_codec;

/* The frames of the NULL-terminated bodies, appended to out. */
static void frames(rn_buf_t *out, const char *body, ...) {
  va_list ap;
  va_start(ap, body);
  for (; body != NULL; body = va_arg(ap, const char *))
    ASSERT_OK(rn_codec_encode(&length_codec, out, body, strlen(body)));
  va_end(ap);
}

static void send_frames(client_t *c, rn_buf_t *b) {
  cl_send(c, b->base, b->len);
  rn_buf_free(b);
}

/* The client has received exactly the frames in want, nothing else. */
static void assert_got(client_t *c, rn_buf_t *want) {
  ASSERT_EQ(c->got.len, want->len);
  ASSERT_MEM_EQ(c->got.base, want->base, want->len);
  rn_buf_free(want);
}

/* One request, waiting for its echo. */
static void round_trip(client_t *c, const char *body) {
  rn_buf_t b, want;
  size_t before = c->got.len;
  rn_buf_init(&b);
  rn_buf_init(&want);
  frames(&b, body, NULL);
  frames(&want, body, NULL);
  send_frames(c, &b);
  RUN_UNTIL(rn_loop_uv(loop), c->got.len >= before + want.len || ended(c),
            5000);
  ASSERT_EQ(c->got.len, before + want.len);
  ASSERT_MEM_EQ(c->got.base + before, want.base, want.len);
  rn_buf_free(&want);
}

/* ------------------------------------------------------------------------ */
/* The proxy and its events                                                   */

static rn_proxy_t *proxy;
static int closed;

#define MAX_EVENTS 256
static rn_proxy_event_t events[MAX_EVENTS];
static int nevents;

static void on_event(rn_proxy_t *p, const rn_proxy_event_t *e) {
  ASSERT(p == proxy);
  if (nevents < MAX_EVENTS) events[nevents++] = *e;
}

/* Events of that type; with fault != 0, only those naming it. */
static int ev(const char *type, uint64_t fault) {
  int i, n = 0;
  for (i = 0; i < nevents; i++)
    if (strcmp(events[i].type, type) == 0 &&
        (fault == 0 || events[i].fault == fault))
      n++;
  return n;
}

static const rn_proxy_event_t *ev_first(const char *type) {
  int i;
  for (i = 0; i < nevents; i++)
    if (strcmp(events[i].type, type) == 0) return &events[i];
  ASSERT(0);
  return NULL;
}

static const rn_proxy_event_t *ev_last(const char *type) {
  int i;
  for (i = nevents - 1; i >= 0; i--)
    if (strcmp(events[i].type, type) == 0) return &events[i];
  ASSERT(0);
  return NULL;
}

static void start_codec(const rn_codec_options_t *codec) {
  rn_proxy_options_t o;
  rn_codec_options_t len4;
  char upstream[64], host[64];
  memset(&len4, 0, sizeof(len4));
  len4.protocol = RN_PROTOCOL_LENGTH;
  ASSERT_OK(rn_codec_init(&length_codec, &len4));
  nevents = closed = 0;
  loop = test_loop_open();
  snprintf(upstream, sizeof(upstream), "127.0.0.1:%d", up_start(codec));
  rn_proxy_options_init(&o);
  o.listen = "127.0.0.1:0";
  o.upstream = upstream;
  o.seed = 1;
  o.on_event = on_event;
  o.codec = *codec;
  ASSERT_OK(rn_proxy_new(loop, &o, &proxy));
  ASSERT_OK(rn_proxy_address(proxy, host, sizeof(host), &proxy_port));
}

static void start(void) {
  rn_codec_options_t c;
  memset(&c, 0, sizeof(c));
  c.protocol = RN_PROTOCOL_LENGTH;
  start_codec(&c);
}

static void on_closed(rn_proxy_t *p) {
  (void)p;
  closed = 1;
}

static void stop(void) {
  rn_proxy_close(proxy, on_closed);
  up_stop();
  test_loop_close(loop);
  ASSERT_EQ(closed, 1);
}

static uint64_t rule(rn_rule_kind_t kind, uint64_t n, rn_rule_action_t action) {
  rn_rule_options_t o;
  uint64_t id;
  rn_rule_options_init(&o, kind);
  o.n = n;
  o.action = action;
  ASSERT_OK(rn_proxy_rule_add(proxy, &o, &id));
  ASSERT_GT(id, 0);
  return id;
}

/* Events come on a later loop turn: wait for the n-th of a type. */
#define WAIT_EV(type, fault, n)                                               \
  RUN_UNTIL(rn_loop_uv(loop), ev((type), (fault)) >= (n), 5000)

/* ------------------------------------------------------------------------ */
/* Tests                                                                      */

static void bad_options(void) {
  rn_proxy_options_t o;
  rn_rule_options_t r;
  rn_proxy_t *p;
  uint64_t id;
  loop = test_loop_open();
  rn_proxy_options_init(&o);
  o.listen = "127.0.0.1:0";
  o.upstream = "127.0.0.1:1";
  o.codec.protocol = RN_PROTOCOL_LENGTH;
  o.codec.length_bytes = 3;
  ASSERT_EQ(rn_proxy_new(loop, &o, &p), UV_EINVAL);
  /* Without a codec there is nothing to count. */
  o.codec.protocol = 0;
  ASSERT_OK(rn_proxy_new(loop, &o, &p));
  rn_rule_options_init(&r, RN_RULE_FAIL_REQUEST);
  ASSERT_EQ(rn_proxy_rule_add(p, &r, &id), UV_EINVAL);
  ASSERT_EQ(id, 0);
  rn_proxy_close(p, NULL);
  o.codec.protocol = RN_PROTOCOL_RNP;
  ASSERT_OK(rn_proxy_new(loop, &o, &p));
  r.n = 0;
  ASSERT_EQ(rn_proxy_rule_add(p, &r, &id), UV_EINVAL);
  r.n = 1;
  r.action = (rn_rule_action_t)9;
  ASSERT_EQ(rn_proxy_rule_add(p, &r, &id), UV_EINVAL);
  r.kind = (rn_rule_kind_t)9;
  r.action = RN_RULE_DROP;
  ASSERT_EQ(rn_proxy_rule_add(p, &r, &id), UV_EINVAL);
  rn_rule_options_init(&r, RN_RULE_DROP_REPLY);
  r.n = 2;
  ASSERT_OK(rn_proxy_rule_add(p, &r, &id));
  ASSERT_OK(rn_proxy_fault_remove(p, id));
  ASSERT_EQ(rn_proxy_fault_remove(p, id), UV_ENOENT);
  rn_proxy_close(p, NULL);
  ASSERT_EQ(rn_proxy_rule_add(p, &r, &id), RN_ECLOSED);
  test_loop_close(loop);
}

/* The third request the proxy sees, whichever connection it comes on, is
 * never forwarded: its connection is reset. The rest pass. */
static void fail_nth_reset(void) {
  client_t a, b, c;
  uint64_t id;
  start();
  id = rule(RN_RULE_FAIL_REQUEST, 3, RN_RULE_RST);
  cl_connect(&a);
  cl_connect(&b);
  round_trip(&a, "one");
  round_trip(&b, "two");
  {
    rn_buf_t req;
    rn_buf_init(&req);
    frames(&req, "three", NULL);
    send_frames(&a, &req);
  }
  RUN_UNTIL(rn_loop_uv(loop), ended(&a), 5000);
  ASSERT(reset_seen(&a));
  ASSERT_EQ(a.got.len, 4 + 3); /* the echo of "one" only */
  /* The other connection and new ones carry on; the count goes on. */
  round_trip(&b, "four");
  cl_connect(&c);
  round_trip(&c, "five");
  ASSERT_EQ(up_frames, 4);
  ASSERT_EQ(up_saw("three"), 0);
  ASSERT_EQ(up_saw("one") + up_saw("two") + up_saw("four") + up_saw("five"),
            4);
  WAIT_EV("reset", id, 1);
  ASSERT_EQ(ev("request_reset", id), 1);
  ASSERT_EQ(ev_last("request_reset")->bytes, 4 + 5);
  ASSERT_EQ(ev_last("request_reset")->direction, RN_PROXY_UP);
  ASSERT_EQ(ev_last("request_reset")->conn, 1);
  cl_close(&a);
  cl_close(&b);
  cl_close(&c);
  stop();
  cl_free(&a);
  cl_free(&b);
  cl_free(&c);
}

/* action drop: the request is swallowed, the connection carries on. The
 * requests go pipelined in one write, so the echo upstream would answer
 * the second before the third had it been forwarded. */
static void fail_nth_drop(void) {
  client_t c;
  rn_buf_t req, want;
  uint64_t id;
  start();
  id = rule(RN_RULE_FAIL_REQUEST, 2, RN_RULE_DROP);
  cl_connect(&c);
  rn_buf_init(&req);
  rn_buf_init(&want);
  frames(&req, "r1", "r2", "r3", NULL);
  frames(&want, "r1", "r3", NULL);
  send_frames(&c, &req);
  RUN_UNTIL(rn_loop_uv(loop), c.got.len >= want.len, 5000);
  round_trip(&c, "r4"); /* anything late would have come before this */
  frames(&want, "r4", NULL);
  assert_got(&c, &want);
  ASSERT(!ended(&c));
  ASSERT_EQ(up_frames, 3);
  ASSERT_EQ(up_saw("r2"), 0);
  ASSERT_STR_EQ(up_seen[1], "r3");
  WAIT_EV("request_drop", id, 1);
  ASSERT_EQ(ev("reset", 0) + ev("close", 0), 0);
  cl_close(&c);
  stop();
  cl_free(&c);
}

/* action close: a FIN, not a reset; what came before is delivered. */
static void fail_nth_close(void) {
  client_t c;
  rn_buf_t req, want;
  uint64_t id;
  start();
  id = rule(RN_RULE_FAIL_REQUEST, 2, RN_RULE_CLOSE);
  cl_connect(&c);
  rn_buf_init(&req);
  rn_buf_init(&want);
  frames(&req, "x1", "x2", "x3", NULL);
  frames(&want, "x1", NULL);
  send_frames(&c, &req);
  RUN_UNTIL(rn_loop_uv(loop), ended(&c), 5000);
  ASSERT(!reset_seen(&c));
  ASSERT_EQ(c.eof, 1);
  ASSERT_EQ(up_frames, 1);
  ASSERT_STR_EQ(up_seen[0], "x1");
  /* "x1" went up before the close; its echo may or may not have made it
   * back before the pair closed, but nothing else can have. */
  ASSERT(c.got.len == 0 || c.got.len == want.len);
  if (c.got.len > 0) ASSERT_MEM_EQ(c.got.base, want.base, want.len);
  rn_buf_free(&want);
  WAIT_EV("close", id, 1);
  ASSERT_EQ(ev("request_close", id), 1);
  cl_close(&c);
  stop();
  cl_free(&c);
}

/* The first two requests fail (each on a connection of its own, as a
 * client reconnecting would send them); every later one passes. */
static void fail_first(void) {
  client_t c[4];
  uint64_t id;
  int i;
  start();
  id = rule(RN_RULE_FAIL_FIRST, 2, RN_RULE_RST);
  for (i = 0; i < 2; i++) {
    rn_buf_t req;
    cl_connect(&c[i]);
    rn_buf_init(&req);
    frames(&req, "again", NULL);
    send_frames(&c[i], &req);
    RUN_UNTIL(rn_loop_uv(loop), ended(&c[i]), 5000);
    ASSERT(reset_seen(&c[i]));
    ASSERT_EQ(c[i].got.len, 0);
  }
  ASSERT_EQ(up_frames, 0);
  cl_connect(&c[2]);
  round_trip(&c[2], "again");
  round_trip(&c[2], "more");
  cl_connect(&c[3]);
  round_trip(&c[3], "other");
  ASSERT_EQ(up_frames, 3);
  ASSERT_EQ(up_saw("again"), 1);
  WAIT_EV("reset", id, 2);
  ASSERT_EQ(ev("request_reset", id), 2);
  for (i = 0; i < 4; i++) cl_close(&c[i]);
  stop();
  for (i = 0; i < 4; i++) cl_free(&c[i]);
}

/* Every third reply vanishes; the others arrive intact and in order. The
 * upstream saw (and answered) every request. */
static void drop_every_third_reply(void) {
  client_t c;
  rn_buf_t req, want;
  uint64_t id;
  start();
  id = rule(RN_RULE_DROP_REPLY, 3, RN_RULE_RST);
  cl_connect(&c);
  rn_buf_init(&req);
  rn_buf_init(&want);
  frames(&req, "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q9", NULL);
  frames(&want, "q1", "q2", "q4", "q5", "q7", "q8", NULL);
  send_frames(&c, &req);
  RUN_UNTIL(rn_loop_uv(loop), up_frames == 9 && c.got.len >= want.len, 5000);
  round_trip(&c, "q10"); /* the tenth passes; nothing may precede it */
  frames(&want, "q10", NULL);
  assert_got(&c, &want);
  ASSERT_EQ(up_frames, 10);
  WAIT_EV("reply_drop", id, 3);
  ASSERT_EQ(ev("reply_drop", id), 3);
  ASSERT_EQ(ev_last("reply_drop")->direction, RN_PROXY_DOWN);
  ASSERT_EQ(ev_last("reply_drop")->bytes, 4 + 2);
  cl_close(&c);
  stop();
  cl_free(&c);
}

/* Rules come and go while traffic flows; each counts from its addition. */
static void rules_change_live(void) {
  client_t c;
  rn_buf_t req, want;
  uint64_t first, drop;
  start();
  cl_connect(&c);
  round_trip(&c, "a1");
  round_trip(&c, "a2");
  first = rule(RN_RULE_FAIL_REQUEST, 1, RN_RULE_DROP); /* the next one */
  drop = rule(RN_RULE_DROP_REPLY, 1, RN_RULE_RST);     /* every reply */
  rn_buf_init(&req);
  frames(&req, "a3", "a4", NULL);
  send_frames(&c, &req);
  WAIT_EV("reply_drop", drop, 1); /* the echo of a4 */
  ASSERT_EQ(up_saw("a4"), 1);
  ASSERT_EQ(up_saw("a3"), 0);
  ASSERT_OK(rn_proxy_fault_remove(proxy, drop));
  ASSERT_OK(rn_proxy_fault_remove(proxy, first));
  ASSERT_EQ(rn_proxy_fault_remove(proxy, first), UV_ENOENT);
  round_trip(&c, "a5");
  /* The echo of a4 was dropped: only a1, a2 and a5 came back. */
  rn_buf_init(&want);
  frames(&want, "a1", "a2", "a5", NULL);
  assert_got(&c, &want);
  /* Cleared with the faults. */
  rule(RN_RULE_FAIL_FIRST, 100, RN_RULE_DROP);
  rn_proxy_fault_clear(proxy);
  round_trip(&c, "a6");
  ASSERT_EQ(up_frames, 5); /* all but a3 */
  ASSERT_EQ(up_saw("a3"), 0);
  cl_close(&c);
  stop();
  cl_free(&c);
}

/* A frame split over reads is held until complete, then judged and passed
 * whole: the upstream sees none of it before its last byte came. */
static void frame_split(void) {
  client_t c;
  rn_buf_t req, want;
  rn_proxy_conn_t *pc;
  start();
  rule(RN_RULE_FAIL_REQUEST, 2, RN_RULE_DROP);
  cl_connect(&c);
  rn_buf_init(&req);
  frames(&req, "split-one", NULL);
  cl_send(&c, req.base, 6);
  RUN_UNTIL(rn_loop_uv(loop), !rn_list_empty(&proxy->conns), 5000);
  pc = RN_CONTAINER_OF(proxy->conns.next, rn_proxy_conn_t, node);
  RUN_UNTIL(rn_loop_uv(loop), pc->up.partial.len == 6, 5000);
  ASSERT_EQ(upstream_peer.bytes, 0);
  cl_send(&c, req.base + 6, req.len - 6);
  rn_buf_free(&req);
  rn_buf_init(&want);
  frames(&want, "split-one", NULL);
  RUN_UNTIL(rn_loop_uv(loop), c.got.len >= want.len, 5000);
  /* It was the first request; the second is the one that goes. */
  rn_buf_init(&req);
  frames(&req, "two", "three", NULL);
  send_frames(&c, &req);
  frames(&want, "three", NULL);
  RUN_UNTIL(rn_loop_uv(loop), c.got.len >= want.len, 5000);
  assert_got(&c, &want);
  ASSERT_EQ(up_frames, 2);
  ASSERT_EQ(up_saw("two"), 0);
  cl_close(&c);
  stop();
  cl_free(&c);
}

/* Bytes that do not parse as the codec's frames: logged, then relayed as
 * bytes in both directions; the rules stop counting there. */
static void garbage_falls_back_to_bytes(void) {
  static const char ping[] = "*1\r\n$4\r\nPING\r\n";
  static const char junk[] = "hello there\r\n";
  rn_codec_options_t resp;
  client_t c;
  const rn_proxy_event_t *e;
  uint64_t id;
  size_t n = 0;
  memset(&resp, 0, sizeof(resp));
  resp.protocol = RN_PROTOCOL_RESP;
  start_codec(&resp);
  id = rule(RN_RULE_FAIL_REQUEST, 2, RN_RULE_RST);
  cl_connect(&c);
  cl_send(&c, ping, strlen(ping));
  n += strlen(ping);
  RUN_UNTIL(rn_loop_uv(loop), c.got.len >= n, 5000);
  cl_send(&c, junk, strlen(junk));
  n += strlen(junk);
  RUN_UNTIL(rn_loop_uv(loop), c.got.len >= n, 5000);
  /* Would be the second request, but the stream is bytes by now. */
  cl_send(&c, ping, strlen(ping));
  n += strlen(ping);
  RUN_UNTIL(rn_loop_uv(loop), c.got.len >= n || ended(&c), 5000);
  ASSERT(!ended(&c));
  ASSERT_EQ(c.got.len, n);
  ASSERT_MEM_EQ(c.got.base, ping, strlen(ping));
  ASSERT_MEM_EQ(c.got.base + strlen(ping), junk, strlen(junk));
  ASSERT_MEM_EQ(c.got.base + strlen(ping) + strlen(junk), ping, strlen(ping));
  ASSERT_EQ(upstream_peer.bytes, n);
  WAIT_EV("frame_error", 0, 2); /* up, then down as the echo came back */
  e = ev_first("frame_error");
  ASSERT_EQ(e->status, RN_EBADFRAME);
  ASSERT_EQ(e->direction, RN_PROXY_UP);
  ASSERT_EQ(e->bytes, strlen(junk));
  ASSERT_EQ(ev_last("frame_error")->direction, RN_PROXY_DOWN);
  ASSERT_EQ(ev("request_reset", id), 0);
  cl_close(&c);
  stop();
  cl_free(&c);
}

/* rnp: HELLO and PING are not requests; only REQUEST frames count. */
static void rnp_counts_requests_only(void) {
  rn_codec_options_t o;
  rn_rnp_frame_t f;
  rn_buf_t out;
  client_t c;
  uint64_t id;
  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_RNP;
  start_codec(&o);
  id = rule(RN_RULE_FAIL_REQUEST, 1, RN_RULE_DROP);
  rn_buf_init(&out);
  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_HELLO;
  f.id = 1;
  f.present = 1u << RN_RNP_F_VERSION;
  f.version = RN_RNP_VERSION;
  ASSERT_OK(rn_rnp_encode(&out, &f, 1 << 20));
  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_PING;
  f.id = 2;
  ASSERT_OK(rn_rnp_encode(&out, &f, 1 << 20));
  f.type = RN_RNP_REQUEST;
  f.id = 3;
  f.payload = "first";
  f.payload_len = 5;
  ASSERT_OK(rn_rnp_encode(&out, &f, 1 << 20));
  f.id = 4;
  f.payload = "second";
  f.payload_len = 6;
  ASSERT_OK(rn_rnp_encode(&out, &f, 1 << 20));
  cl_connect(&c);
  cl_send(&c, out.base, out.len);
  RUN_UNTIL(rn_loop_uv(loop), up_frames >= 3, 5000);
  ASSERT_EQ(up_saw("first"), 0);
  ASSERT_EQ(up_saw("second"), 1);
  ASSERT_EQ(up_frames, 3); /* HELLO, PING, the second REQUEST */
  WAIT_EV("request_drop", id, 1);
  rn_buf_free(&out);
  cl_close(&c);
  stop();
  cl_free(&c);
}

TEST_LIST_START
  TEST_ENTRY(bad_options)
  TEST_ENTRY(fail_nth_reset)
  TEST_ENTRY(fail_nth_drop)
  TEST_ENTRY(fail_nth_close)
  TEST_ENTRY(fail_first)
  TEST_ENTRY(drop_every_third_reply)
  TEST_ENTRY(rules_change_live)
  TEST_ENTRY(frame_split)
  TEST_ENTRY(garbage_falls_back_to_bytes)
  TEST_ENTRY(rnp_counts_requests_only)
TEST_LIST_END

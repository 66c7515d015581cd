/* Hostile review of batches and held connections (client/batch.c,
 * client/hold.c, client/resp_state.c) against the scripted resp peer:
 * what a pool batch may not leave on a pooled connection, and what makes
 * a held one closed when given back. Each case is named after the defect
 * it found. */
#define _GNU_SOURCE /* memmem */
#include "resilnet.h"
#include "client.h" /* a connection's write buffer */
#include "task.h"
#include "helpers.h"
#include "peer.h"
#include "pool_fixture.h"
#include "wait.h"

#include <string.h>
#include <uv.h>

/* "GET x" as a resp array of bulk strings, appended to out. */
static void encode_cmd(rn_buf_t *out, const char *cmd) {
  const char *p = cmd;
  size_t words = 1;
  for (; *p; p++)
    if (*p == ' ') words++;
  ASSERT_OK(rn_resp_encode_array(out, words));
  for (p = cmd; *p;) {
    size_t n = strcspn(p, " ");
    ASSERT_OK(rn_resp_encode_bulk(out, p, n));
    p += n;
    if (*p == ' ') p++;
  }
}

/* The peer: +OK to every frame. */
static rn_codec_t codec;

static void answer_ok(test_peer_conn_t *c) {
  size_t pos = 0;
  rn_frame_t f;
  while (rn_codec_frame(&codec, c->in.base + pos, c->in.len - pos, &f) == 1) {
    c->frames++;
    test_peer_send(c, "+OK\r\n", 5);
    pos += f.size;
  }
  rn_buf_consume(&c->in, pos);
}

static rn_loop_t *loop;
static uv_loop_t *uv;
static test_peer_t peer;

static rn_pool_t *start(void) {
  rn_codec_options_t co;
  rn_pool_options_t po;
  rn_pool_t *pool;
  memset(&co, 0, sizeof(co));
  co.protocol = RN_PROTOCOL_RESP;
  ASSERT_OK(rn_codec_init(&codec, &co));
  loop = test_loop_open();
  uv = rn_loop_uv(loop);
  test_peer_start(&peer, uv, answer_ok);
  test_pool_options(&po, peer.endpoint, RN_PROTOCOL_RESP);
  po.heartbeat.interval_ms = 0;
  po.size = 1;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  return pool;
}

static void finish(rn_pool_t *pool) {
  test_pool_close_wait(loop, pool);
  test_peer_stop(&peer);
  test_loop_close(loop);
}

static int fired;

static void on_batch(rn_pool_t *pool, void *data, const rn_batch_result_t *r) {
  (void)pool;
  (void)data;
  ASSERT_OK(r->status);
  fired++;
}

/* Sends the commands (separated by '|') as one pool batch. */
static int pool_batch(rn_pool_t *pool, const char *cmds) {
  char copy[256], *save = NULL, *cmd;
  rn_buf_t frames;
  size_t n = 0;
  int rc;
  rn_buf_init(&frames);
  snprintf(copy, sizeof(copy), "%s", cmds);
  for (cmd = strtok_r(copy, "|", &save); cmd != NULL;
       cmd = strtok_r(NULL, "|", &save), n++)
    encode_cmd(&frames, cmd);
  rc = rn_pool_batch(pool, frames.base, frames.len, n, NULL, on_batch, NULL);
  rn_buf_free(&frames);
  return rc;
}

/* A pool batch that left MULTI open (or WATCH, SUBSCRIBE, SELECT, AUTH,
 * ...) was sent, and every later call on that connection met it: Redis
 * queued them (QUEUED), or answered them in another database or as
 * another user. Refused at once now, before anything is written; one that
 * leaves the connection as it found it goes. */
static void test_pool_batch_leaving_state_refused(void) {
  static const char *const refused[] = {
      "MULTI|SET k 1",      "WATCH k|GET k",    "SUBSCRIBE ch",
      "select 2",           "AUTH bob pw",      "CLIENT REPLY OFF",
      "MULTI|EXEC|MULTI",   "HELLO 3",          "RESET",
      "MONITOR",            "PSUBSCRIBE c*",    "READONLY",
  };
  rn_pool_t *pool = start();
  size_t i;
  for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
    ASSERT_EQ(pool_batch(pool, refused[i]), UV_EINVAL);
  ASSERT_EQ(test_pool_stats(pool).calls, 0);
  ASSERT_EQ(fired, 0);
  /* Balanced, or ended: the connection is as it was. */
  ASSERT_OK(pool_batch(pool, "MULTI|INCR n|EXEC"));
  ASSERT_OK(pool_batch(pool, "WATCH k|UNWATCH"));
  ASSERT_OK(pool_batch(pool, "WATCH k|MULTI|SET k 1|DISCARD|GET k"));
  RUN_UNTIL(uv, fired == 3, 2000);
  ASSERT_EQ(peer.count, 1);
  ASSERT_EQ(peer.conns[0].frames, 10); /* the refused ones never left */
  finish(pool);
}

typedef struct {
  int fired;
  rn_hold_t *hold;
} hold_outcome_t;

static void on_hold(rn_pool_t *pool, void *data, rn_hold_t *hold,
                    int status) {
  hold_outcome_t *o = data;
  (void)pool;
  ASSERT_OK(status);
  o->fired++;
  o->hold = hold;
}

static void held_call(rn_hold_t *h, const char *cmd) {
  test_outcome_t o;
  rn_buf_t frame;
  memset(&o, 0, sizeof(o));
  rn_buf_init(&frame);
  encode_cmd(&frame, cmd);
  ASSERT_OK(rn_hold_call(h, frame.base, frame.len, NULL, test_record, &o));
  rn_buf_free(&frame);
  RUN_UNTIL(uv, o.fired, 2000);
  ASSERT_OK(o.status);
}

/* AUTH as another user on a held connection was given back to the pool
 * as clean: every later pool call there ran as that user (READONLY and
 * READWRITE likewise change how a cluster node treats the connection).
 * Now it is closed when given back; a held batch may still send them. */
static void test_hold_auth_resets(void) {
  static const char *const cmds[] = {"AUTH bob pw", "READONLY", "readwrite"};
  rn_pool_t *pool = start();
  size_t i;
  for (i = 0; i < 3; i++) {
    hold_outcome_t h;
    memset(&h, 0, sizeof(h));
    ASSERT_OK(rn_pool_hold(pool, NULL, on_hold, &h));
    RUN_UNTIL(uv, h.fired, 2000);
    held_call(h.hold, "GET k");
    ASSERT_EQ(rn_hold_unknown(h.hold), 0);
    held_call(h.hold, cmds[i]);
    ASSERT_EQ(rn_hold_unknown(h.hold), 1);
    rn_hold_release(h.hold, 0);
    ASSERT_EQ(test_pool_stats(pool).holds_reset, i + 1);
  }
  RUN_UNTIL(uv, peer.eofs == 3, 2000);
  finish(pool);
}

/* The Redis of the next case: on its first connection a loading server
 * (MULTI +OK, every queued command -LOADING, so EXEC -EXECABORT); on
 * later ones a loaded one. */
static int contains(const char *data, size_t len, const char *word) {
  size_t n = strlen(word), i;
  for (i = 0; i + n <= len; i++)
    if (memcmp(data + i, word, n) == 0) return 1;
  return 0;
}

static void answer_loading_first(test_peer_conn_t *c) {
  int loading = c == &c->peer->conns[0];
  size_t pos = 0;
  rn_frame_t f;
  while (rn_codec_frame(&codec, c->in.base + pos, c->in.len - pos, &f) == 1) {
    const char *frame = c->in.base + pos;
    const char *reply;
    c->frames++;
    if (contains(frame, f.size, "PING"))
      reply = "+PONG\r\n";
    else if (contains(frame, f.size, "MULTI"))
      reply = "+OK\r\n";
    else if (contains(frame, f.size, "EXEC"))
      reply = loading ? "-EXECABORT Transaction discarded because of "
                        "previous errors.\r\n"
                      : "*1\r\n:1\r\n";
    else
      reply = loading ? "-LOADING Redis is loading the dataset in memory\r\n"
                      : "+QUEUED\r\n";
    test_peer_send(c, reply, strlen(reply));
    pos += f.size;
  }
  rn_buf_consume(&c->in, pos);
}

static rn_batch_result_t last;
static char last_exec[16];

static void on_transaction(rn_pool_t *pool, void *data,
                           const rn_batch_result_t *r) {
  (void)pool;
  (void)data;
  ASSERT_EQ(fired, 0); /* exactly once */
  fired++;
  last = *r;
  last_exec[0] = '\0';
  if (r->status == 0) {
    size_t n = r->results[2].body_len < 15 ? r->results[2].body_len : 15;
    memcpy(last_exec, r->results[2].body, n);
    last_exec[n] = '\0';
  }
}

/* A transaction sent to a server loading its dataset (or, on a master
 * pool, to one demoted to a replica) came back EXECABORT, its queued
 * command -LOADING: nothing ran, yet the caller got the error, where a
 * single call answered -LOADING waits for the server and succeeds (issue
 * 18). Now the transaction goes back as never sent, waits while the
 * endpoint backs off, and runs on the next connection: not idempotent,
 * and still once. */
static void test_transaction_loading_waits(void) {
  rn_codec_options_t co;
  rn_pool_options_t po;
  rn_call_options_t call;
  rn_pool_t *pool;
  rn_buf_t frames;
  memset(&co, 0, sizeof(co));
  co.protocol = RN_PROTOCOL_RESP;
  ASSERT_OK(rn_codec_init(&codec, &co));
  loop = test_loop_open();
  uv = rn_loop_uv(loop);
  test_peer_start(&peer, uv, answer_loading_first);
  test_pool_options(&po, peer.endpoint, RN_PROTOCOL_RESP);
  po.heartbeat.interval_ms = 0;
  po.size = 1;
  po.reconnect.initial_ms = 10;
  po.reconnect.max_ms = 50;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  fired = 0;
  rn_buf_init(&frames);
  encode_cmd(&frames, "MULTI");
  encode_cmd(&frames, "INCR n");
  encode_cmd(&frames, "EXEC");
  memset(&call, 0, sizeof(call));
  call.timeout_ms = 5000;
  ASSERT_OK(rn_pool_batch(pool, frames.base, frames.len, 3, &call,
                          on_transaction, NULL));
  rn_buf_free(&frames);
  RUN_UNTIL(uv, fired, 6000);
  ASSERT_OK(last.status);
  ASSERT_STR_EQ(last_exec, "*1\r\n:1\r\n");
  ASSERT_EQ(last.attempts, 2); /* written twice, the first unrun */
  ASSERT_EQ(peer.count, 2);
  ASSERT_EQ(test_pool_stats(pool).retries, 0);
  ASSERT(test_pool_stats(pool).loading >= 1);
  ASSERT_EQ(test_pool_stats(pool).not_executed, 1);
  finish(pool);
}

/* The peer of the next case: a 30-byte reply to every frame. */
static void answer_30(test_peer_conn_t *c) {
  static const char reply[] = "+abcdefghijklmnopqrstuvwxyz\r\n";
  size_t pos = 0;
  rn_frame_t f;
  while (rn_codec_frame(&codec, c->in.base + pos, c->in.len - pos, &f) == 1) {
    test_peer_send(c, reply, sizeof(reply) - 1);
    pos += f.size;
  }
  rn_buf_consume(&c->in, pos);
}

static int batch_status, batch_maybe;

static void on_big_batch(rn_pool_t *pool, void *data,
                         const rn_batch_result_t *r) {
  (void)pool;
  (void)data;
  fired++;
  batch_status = r->status;
  batch_maybe = r->maybe_executed;
}

/* A batch's replies are held until its last one, each bounded by
 * max_frame alone: a server could make the client hold max_batch x
 * max_frame (1024 x 16 MiB) for one batch. Together they now count
 * against max_frame, as the batch's requests do: past it the batch fails
 * EFRAMESIZE with its connection (written: maybe executed); one reply or
 * a smaller batch still goes. */
static void test_batch_replies_bounded_by_max_frame(void) {
  rn_codec_options_t co;
  rn_pool_options_t po;
  rn_pool_t *pool;
  rn_buf_t frames;
  test_outcome_t one;
  int i;
  memset(&co, 0, sizeof(co));
  co.protocol = RN_PROTOCOL_RESP;
  ASSERT_OK(rn_codec_init(&codec, &co));
  loop = test_loop_open();
  uv = rn_loop_uv(loop);
  test_peer_start(&peer, uv, answer_30);
  test_pool_options(&po, peer.endpoint, RN_PROTOCOL_RESP);
  po.heartbeat.interval_ms = 0;
  po.size = 1;
  po.codec.max_frame = 64;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  fired = 0;
  rn_buf_init(&frames);
  for (i = 0; i < 3; i++) encode_cmd(&frames, "PING");
  ASSERT_OK(rn_pool_batch(pool, frames.base, frames.len, 3, NULL,
                          on_big_batch, NULL));
  RUN_UNTIL(uv, fired == 1, 2000);
  ASSERT_EQ(batch_status, RN_EFRAMESIZE);
  ASSERT_EQ(batch_maybe, 1);
  /* Two replies (60 bytes) fit. */
  frames.len = 0;
  for (i = 0; i < 2; i++) encode_cmd(&frames, "PING");
  ASSERT_OK(rn_pool_batch(pool, frames.base, frames.len, 2, NULL,
                          on_big_batch, NULL));
  RUN_UNTIL(uv, fired == 2, 2000);
  ASSERT_OK(batch_status);
  rn_buf_free(&frames);
  memset(&one, 0, sizeof(one));
  {
    rn_buf_t f;
    rn_buf_init(&f);
    encode_cmd(&f, "PING");
    ASSERT_OK(rn_pool_call(pool, f.base, f.len, NULL, test_record, &one));
    rn_buf_free(&f);
  }
  RUN_UNTIL(uv, one.fired, 2000);
  ASSERT_OK(one.status);
  finish(pool);
}

/* The peer of the next case: +PONG to a PING, +OK to the rest. */
static void answer_pong_ok(test_peer_conn_t *c) {
  size_t pos = 0;
  rn_frame_t f;
  while (rn_codec_frame(&codec, c->in.base + pos, c->in.len - pos, &f) == 1) {
    if (contains(c->in.base + pos, f.size, "PING"))
      test_peer_send(c, "+PONG\r\n", 7);
    else
      test_peer_send(c, "+OK\r\n", 5);
    pos += f.size;
  }
  rn_buf_consume(&c->in, pos);
}

/* api.md: the password "lives only in the encoded request (wiped when the
 * pool is freed)". It also stayed in each connection's write buffer
 * after the handshake's write (AUTH, then the readiness PING), past the
 * shorter writes after it, and was freed with it unwiped (with TLS: in
 * the pool's plaintext buffer). Now zeroed once written. */
static void test_password_not_left_in_write_buffer(void) {
  static const char secret[] = "hunter2-in-wbuf-0123456789";
  rn_codec_options_t co;
  rn_pool_options_t po;
  rn_pool_t *pool;
  rn_conn_t *conn;
  test_outcome_t one;
  rn_buf_t f;
  memset(&co, 0, sizeof(co));
  co.protocol = RN_PROTOCOL_RESP;
  ASSERT_OK(rn_codec_init(&codec, &co));
  loop = test_loop_open();
  uv = rn_loop_uv(loop);
  test_peer_start(&peer, uv, answer_pong_ok);
  test_pool_options(&po, peer.endpoint, RN_PROTOCOL_RESP);
  po.size = 1;
  po.password = secret;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  memset(&one, 0, sizeof(one));
  rn_buf_init(&f);
  encode_cmd(&f, "GET k");
  ASSERT_OK(rn_pool_call(pool, f.base, f.len, NULL, test_record, &one));
  RUN_UNTIL(uv, one.fired, 2000);
  ASSERT_OK(one.status);
  conn = RN_CONTAINER_OF(pool->endpoints[0]->conns.next, rn_conn_t, node);
  /* What the handshake wrote there first: AUTH's frame (later writes,
   * shorter, left its end in place). */
  f.len = 0;
  encode_cmd(&f, "AUTH hunter2-in-wbuf-0123456789");
  ASSERT(conn->wbuf.cap >= f.len);
  /* Its end: later writes overwrite the start. */
  ASSERT(memmem(conn->wbuf.base, f.len, "0123456789", 10) == NULL);
  rn_buf_free(&f);
  finish(pool);
}

TEST_LIST_START
  TEST_ENTRY(test_pool_batch_leaving_state_refused)
  TEST_ENTRY(test_hold_auth_resets)
  TEST_ENTRY(test_transaction_loading_waits)
  TEST_ENTRY(test_batch_replies_bounded_by_max_frame)
  TEST_ENTRY(test_password_not_left_in_write_buffer)
TEST_LIST_END

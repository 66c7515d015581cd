/* Hostile review of batches, transactions, held connections and setup
 * (client/batch.c, client/hold.c, client/resp_state.c, client/conn.c)
 * against the scripted resp peer. Each case is named after the defect it
 * found. */
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

/* ------------------------------------------------------------------------ */
/* The peer and the pool                                                      */

/* What the peer answers to one frame on connection c: the test's. */
typedef const char *(*reply_fn)(test_peer_conn_t *c, const char *frame,
                                size_t len);

static rn_codec_t codec;
static reply_fn reply_of;

static void answer(test_peer_conn_t *c) {
  size_t pos = 0;
  rn_frame_t f;
  while (rn_codec_frame(&codec, c->in.base + pos, c->in.len - pos, &f) == 1) {
    const char *reply = reply_of(c, c->in.base + pos, f.size);
    c->frames++;
    test_peer_send(c, reply, strlen(reply));
    pos += f.size;
  }
  rn_buf_consume(&c->in, pos);
}

static const char *reply_ok(test_peer_conn_t *c, const char *f, size_t n) {
  (void)c;
  return test_contains(f, n, "PING") ? "+PONG\r\n" : "+OK\r\n";
}

static rn_loop_t *loop;
static uv_loop_t *uv;
static test_peer_t peer;
static int fired;

/* A pool of one connection to a peer answering with fn; tune (or NULL)
 * changes the options first. */
static rn_pool_t *start(reply_fn fn, void (*tune)(rn_pool_options_t *po)) {
  rn_codec_options_t co;
  rn_pool_options_t po;
  rn_pool_t *pool;
  memset(&co, 0, sizeof(co));
  co.protocol = RN_PROTOCOL_RESP;
  ASSERT_OK(rn_codec_init(&codec, &co));
  reply_of = fn;
  fired = 0;
  loop = test_loop_open();
  uv = rn_loop_uv(loop);
  test_peer_start(&peer, uv, answer);
  test_pool_options(&po, peer.endpoint, RN_PROTOCOL_RESP);
  po.heartbeat.interval_ms = 0;
  po.size = 1;
  if (tune != NULL) tune(&po);
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  return pool;
}

static void finish(rn_pool_t *pool) {
  test_pool_close_wait(loop, pool);
  test_peer_stop(&peer);
  test_loop_close(loop);
}

/* What the last batch came to. */
static int batch_status, batch_maybe;
static unsigned batch_attempts;
static char batch_last[16]; /* its last request's reply */

static void on_batch(rn_pool_t *pool, void *data, const rn_batch_result_t *r) {
  (void)pool;
  (void)data;
  fired++;
  batch_status = r->status;
  batch_maybe = r->maybe_executed;
  batch_attempts = r->attempts;
  batch_last[0] = '\0';
  if (r->status == 0) {
    const rn_result_t *e = &r->results[r->count - 1];
    size_t n = e->body_len < 15 ? e->body_len : 15;
    memcpy(batch_last, e->body, n);
    batch_last[n] = '\0';
  }
}

/* Sends the commands (separated by '|') as one pool batch. */
static int pool_batch(rn_pool_t *pool, const char *cmds, uint64_t timeout) {
  char copy[256], *save = NULL, *cmd;
  rn_call_options_t co;
  rn_buf_t frames;
  size_t n = 0;
  int rc;
  memset(&co, 0, sizeof(co));
  co.timeout_ms = timeout;
  rn_buf_init(&frames);
  snprintf(copy, sizeof(copy), "%s", cmds);
  for (cmd = strtok_r(copy, "|", &save); cmd != NULL;
       cmd = strtok_r(NULL, "|", &save), n++)
    test_resp_command(&frames, cmd);
  rc = rn_pool_batch(pool, frames.base, frames.len, n, &co, on_batch, NULL);
  rn_buf_free(&frames);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                      */

/* A pool batch that left MULTI open (or WATCH, SUBSCRIBE, SELECT, AUTH,
 * ...) was sent, and every later call on that connection met it: Redis
 * queued them (QUEUED), or answered them in another database or as
 * another user. Refused at once now, before anything is written; one that
 * leaves the connection as it found it goes. */
static void test_pool_batch_leaving_state_refused(void) {
  static const char *const refused[] = {
      "MULTI|SET k 1",    "WATCH k|GET k", "SUBSCRIBE ch",
      "select 2",         "AUTH bob pw",   "CLIENT REPLY OFF",
      "MULTI|EXEC|MULTI", "HELLO 3",       "RESET",
      "MONITOR",          "PSUBSCRIBE c*", "READONLY",
  };
  rn_pool_t *pool = start(reply_ok, NULL);
  size_t i;
  for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
    ASSERT_EQ(pool_batch(pool, refused[i], 0), UV_EINVAL);
  ASSERT_EQ(test_pool_stats(pool).calls, 0);
  ASSERT_EQ(fired, 0);
  /* Balanced, or ended: the connection is as it was. */
  ASSERT_OK(pool_batch(pool, "MULTI|INCR n|EXEC", 0));
  ASSERT_OK(pool_batch(pool, "WATCH k|UNWATCH", 0));
  ASSERT_OK(pool_batch(pool, "WATCH k|MULTI|SET k 1|DISCARD|GET k", 0));
  RUN_UNTIL(uv, fired == 3, 2000);
  ASSERT_OK(batch_status);
  ASSERT_EQ(peer.count, 1);
  ASSERT_EQ(peer.conns[0].frames, 10); /* the refused ones never left */
  finish(pool);
}

/* The same for one call: `pool:call{"MULTI"}` on a pool of one
 * connection made every later caller's GET answer QUEUED. Refused at once
 * (UV_EINVAL, nothing written, no callback); CLIENT's questions, UNWATCH
 * and an EXEC without MULTI change nothing and go. */
static void test_pool_call_leaving_state_refused(void) {
  static const char *const refused[] = {
      "MULTI",   "watch k",  "SUBSCRIBE ch",       "MONITOR",
      "SELECT 2", "AUTH x",  "HELLO 3",            "RESET",
      "READONLY", "READWRITE", "client setname x", "CLIENT TRACKING on",
      "CLIENT NO-EVICT on", "client no-touch on",
      /* Every state word of each length, in either case (resp_state.c
       * turns a name away on its last letter first). */
      "SSUBSCRIBE ch", "psubscribe c*", "Subscribe ch", "monitor",
      "hellO 3", "reseT", "readonlY", "autH x", "selecT 2", "Multi",
      "WATCH k",
  };
  static const char *const inline_refused[] = {
      "MULTI\r\n", "select 2\r\n", "CLIENT SETNAME x\r\n",
      "client  tracking on\r\n"};
  static const char *const allowed[] = {"CLIENT ID", "CLIENT LIST",
                                        "UNWATCH", "EXEC", "GET k"};
  test_outcome_t o[5];
  rn_pool_t *pool = start(reply_ok, NULL);
  rn_buf_t frame;
  size_t i;
  rn_buf_init(&frame);
  for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
    frame.len = 0;
    test_resp_command(&frame, refused[i]);
    ASSERT_EQ(rn_pool_call(pool, frame.base, frame.len, NULL, test_record,
                           &o[0]),
              UV_EINVAL);
  }
  /* Inline commands too (a C program may send them). */
  for (i = 0; i < sizeof(inline_refused) / sizeof(inline_refused[0]); i++)
    ASSERT_EQ(rn_pool_call(pool, inline_refused[i],
                           strlen(inline_refused[i]), NULL, test_record,
                           &o[0]),
              UV_EINVAL);
  ASSERT_EQ(test_pool_stats(pool).calls, 0);
  memset(o, 0, sizeof(o));
  for (i = 0; i < 5; i++) {
    frame.len = 0;
    test_resp_command(&frame, allowed[i]);
    ASSERT_OK(rn_pool_call(pool, frame.base, frame.len, NULL, test_record,
                           &o[i]));
  }
  rn_buf_free(&frame);
  RUN_UNTIL(uv, o[4].fired, 2000);
  for (i = 0; i < 5; i++) ASSERT_EQ(o[i].fired, 1);
  ASSERT_EQ(peer.count, 1);
  ASSERT_EQ(peer.conns[0].frames, 5); /* the refused ones never left */
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
  test_resp_command(&frame, cmd);
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
  rn_pool_t *pool = start(reply_ok, NULL);
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

/* On its first connection a loading server (MULTI +OK, every queued
 * command -LOADING, so EXEC -EXECABORT); on later ones a loaded one. */
static const char *reply_loading_first(test_peer_conn_t *c, const char *f,
                                       size_t n) {
  int loading = c == &c->peer->conns[0];
  if (test_contains(f, n, "PING")) return "+PONG\r\n";
  if (test_contains(f, n, "MULTI")) return "+OK\r\n";
  if (test_contains(f, n, "EXEC"))
    return loading ? "-EXECABORT Transaction discarded because of previous "
                     "errors.\r\n"
                   : "*1\r\n:1\r\n";
  return loading ? "-LOADING Redis is loading the dataset in memory\r\n"
                 : "+QUEUED\r\n";
}

static void tune_fast_reconnect(rn_pool_options_t *po) {
  po->reconnect.initial_ms = 10;
  po->reconnect.max_ms = 50;
}

/* A transaction sent to a server loading its dataset (or, on a master
 * pool, to one demoted to a replica) came back EXECABORT, its queued
 * command -LOADING: nothing ran, yet the caller got the error, where a
 * single call answered -LOADING waits for the server and succeeds (issue
 * 18). Now the transaction goes back as never sent, waits while the
 * endpoint backs off, and runs on the next connection: not idempotent,
 * and still once. */
static void test_transaction_loading_waits(void) {
  rn_pool_t *pool = start(reply_loading_first, tune_fast_reconnect);
  ASSERT_OK(pool_batch(pool, "MULTI|INCR n|EXEC", 5000));
  RUN_UNTIL(uv, fired, 6000);
  ASSERT_OK(batch_status);
  ASSERT_STR_EQ(batch_last, "*1\r\n:1\r\n");
  ASSERT_EQ(batch_attempts, 2); /* written twice, the first unrun */
  ASSERT_EQ(peer.count, 2);
  ASSERT_EQ(test_pool_stats(pool).retries, 0);
  ASSERT(test_pool_stats(pool).loading >= 1);
  ASSERT_EQ(test_pool_stats(pool).not_executed, 1);
  finish(pool);
}

/* A 30-byte reply to every frame. */
static const char *reply_30(test_peer_conn_t *c, const char *f, size_t n) {
  (void)c;
  (void)f;
  (void)n;
  return "+abcdefghijklmnopqrstuvwxyz\r\n";
}

static void tune_max_frame_64(rn_pool_options_t *po) {
  po->codec.max_frame = 64;
}

/* A batch's replies are held until its last one, each bounded by
 * max_frame alone: a server could make the client hold max_batch x
 * max_frame (1024 x 16 MiB) for one batch. Together they now count
 * against max_frame, as the batch's requests do: past it the batch fails
 * EFRAMESIZE with its connection (written: maybe executed); one reply or
 * a smaller batch still goes. */
static void test_batch_replies_bounded_by_max_frame(void) {
  rn_pool_t *pool = start(reply_30, tune_max_frame_64);
  ASSERT_OK(pool_batch(pool, "PING|PING|PING", 0));
  RUN_UNTIL(uv, fired == 1, 2000);
  ASSERT_EQ(batch_status, RN_EFRAMESIZE);
  ASSERT_EQ(batch_maybe, 1);
  ASSERT_OK(pool_batch(pool, "PING|PING", 0)); /* 60 bytes fit */
  RUN_UNTIL(uv, fired == 2, 2000);
  ASSERT_OK(batch_status);
  ASSERT_STR_EQ(batch_last, "+abcdefghijklmn");
  finish(pool);
}

static const char secret[] = "hunter2-in-wbuf-0123456789";

static void tune_password(rn_pool_options_t *po) {
  po->password = secret;
  po->heartbeat.interval_ms = 1000; /* a readiness PING after AUTH */
}

/* api.md: the password "lives only in the encoded request (wiped when the
 * pool is freed)". It also stayed in each connection's write buffer
 * after the handshake's write (AUTH, then the readiness PING), past the
 * shorter writes after it, and was freed with it unwiped (with TLS: in
 * the pool's plaintext buffer). Now zeroed once written. */
static void test_password_not_left_in_write_buffer(void) {
  rn_pool_t *pool = start(reply_ok, tune_password);
  rn_conn_t *conn;
  rn_buf_t auth;
  ASSERT_OK(pool_batch(pool, "GET k", 0));
  RUN_UNTIL(uv, fired, 2000);
  ASSERT_OK(batch_status);
  conn = RN_CONTAINER_OF(pool->endpoints[0]->conns.next, rn_conn_t, node);
  /* The handshake's write came first, AUTH's frame at its start; later
   * writes, shorter, overwrite only the start of that. */
  rn_buf_init(&auth);
  test_resp_command(&auth, "AUTH hunter2-in-wbuf-0123456789");
  ASSERT(conn->wbuf.cap >= auth.len);
  ASSERT(memmem(conn->wbuf.base, auth.len, "0123456789", 10) == NULL);
  rn_buf_free(&auth);
  finish(pool);
}

static const char *reply_wrongpass(test_peer_conn_t *c, const char *f,
                                   size_t n) {
  (void)c;
  if (test_contains(f, n, "AUTH"))
    return "-WRONGPASS invalid username-password pair\r\n";
  return test_contains(f, n, "PING") ? "+PONG\r\n" : "+OK\r\n";
}

/* The same promise when the server refuses the password: the setup call
 * holding AUTH's frame was wiped only when its reply was accepted, so
 * after a WRONGPASS (or a connection lost mid-handshake) it went to the
 * pool's spare calls, or to free, with the password in it. */
static void test_password_not_left_in_refused_setup(void) {
  rn_pool_t *pool = start(reply_wrongpass, tune_password);
  rn_list_t *pos;
  int spares = 0;
  ASSERT_OK(pool_batch(pool, "GET k", 0));
  RUN_UNTIL(uv, fired, 3000);
  ASSERT_EQ(batch_status, RN_EAUTH);
  for (pos = pool->spare_calls.next; pos != &pool->spare_calls;
       pos = pos->next) {
    rn_call_t *c = RN_CONTAINER_OF(pos, rn_call_t, node);
    size_t len = c->frame_len < sizeof(c->inline_frame)
                     ? c->frame_len : sizeof(c->inline_frame);
    spares++;
    ASSERT(memmem(c->inline_frame, len, "0123456789", 10) == NULL);
  }
  ASSERT(spares > 0); /* the setup call among them */
  finish(pool);
}

/* rn_pool_call read only its request's first frame: two frames handed to
 * one call from C went out as one call, and the second reply, with no
 * call to answer, closed the connection as unexpected. A call's bytes
 * must now be exactly one whole frame, for a held call too (UV_EINVAL,
 * nothing written); a partial frame likewise. */
static void test_pool_call_many_frames_refused(void) {
  static const char two[] = "*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
                            "*2\r\n$3\r\nGET\r\n$1\r\nb\r\n";
  static const char *const bad[] = {"GET a\r\nGET b\r\n", "GET a",
                                    "*2\r\n$3\r\nGET\r\n$1\r\na\r\n:1\r\n"};
  size_t one = (sizeof(two) - 1) / 2, i;
  test_outcome_t o[2];
  hold_outcome_t h;
  rn_buf_t long_frame;
  rn_pool_t *pool = start(reply_ok, NULL);
  memset(o, 0, sizeof(o));
  ASSERT_EQ(rn_pool_call(pool, two, sizeof(two) - 1, NULL, test_record,
                         &o[0]),
            UV_EINVAL);
  ASSERT_EQ(rn_pool_call(pool, two, one - 1, NULL, test_record, &o[0]),
            UV_EINVAL); /* the first frame, short of its last byte */
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    ASSERT_EQ(rn_pool_call(pool, bad[i], strlen(bad[i]), NULL, test_record,
                           &o[0]),
              UV_EINVAL);
  ASSERT_EQ(test_pool_stats(pool).calls, 0);
  /* Each frame alone goes; so does one of 13 parts, words of 15 bytes
   * (counts of two digits), and it is refused with a byte more. */
  ASSERT_OK(rn_pool_call(pool, two, one, NULL, test_record, &o[0]));
  ASSERT_OK(rn_pool_call(pool, two + one, one, NULL, test_record, &o[1]));
  RUN_UNTIL(uv, o[1].fired, 2000);
  for (i = 0; i < 2; i++) ASSERT_OK(o[i].status);
  rn_buf_init(&long_frame);
  test_resp_command(&long_frame,
                    "SET keykeykeykeyk valuevaluevalue a b c d e f g h i j");
  memset(o, 0, sizeof(o));
  ASSERT_OK(rn_pool_call(pool, long_frame.base, long_frame.len, NULL,
                         test_record, &o[0]));
  ASSERT_OK(rn_buf_append(&long_frame, "\r", 1));
  ASSERT_EQ(rn_pool_call(pool, long_frame.base, long_frame.len, NULL,
                         test_record, &o[1]),
            UV_EINVAL);
  rn_buf_free(&long_frame);
  RUN_UNTIL(uv, o[0].fired, 2000);
  ASSERT_OK(o[0].status);
  memset(&h, 0, sizeof(h));
  ASSERT_OK(rn_pool_hold(pool, NULL, on_hold, &h));
  RUN_UNTIL(uv, h.fired, 2000);
  ASSERT_EQ(rn_hold_call(h.hold, two, sizeof(two) - 1, NULL, test_record,
                         &o[0]),
            UV_EINVAL);
  ASSERT_EQ(rn_hold_unknown(h.hold), 0);
  rn_hold_release(h.hold, 0);
  ASSERT_EQ(peer.count, 1);
  ASSERT_EQ(peer.conns[0].frames, 3); /* the refused ones never left */
  ASSERT_EQ(test_pool_stats(pool).holds_reset, 0);
  finish(pool);
}

/* Regression (review): bytes the codec can frame but Redis does not
 * answer exactly once were accepted as a call: "$4\r\nPING\r\n" (read by
 * Redis as an inline command '$4', then a PING: two replies), a blank line
 * or an empty or null array (no reply). Either way every later reply on
 * the connection went to the call before it. */
static void test_pool_call_redis_unanswerable_refused(void) {
  static const char *const bad[] = {"$4\r\nPING\r\n", "\r\n", "   \r\n",
                                    "*0\r\n", "*-1\r\n",
                                    "*1\r\n*1\r\n$4\r\nPING\r\n", ":1\r\n",
                                    " PING\r\n"};
  static const char batch[] = "*1\r\n$4\r\nPING\r\n*0\r\n";
  size_t i;
  test_outcome_t o;
  rn_pool_t *pool = start(reply_ok, NULL);
  memset(&o, 0, sizeof(o));
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    ASSERT_EQ(rn_pool_call(pool, bad[i], strlen(bad[i]), NULL, test_record,
                           &o),
              UV_EINVAL);
  ASSERT_EQ(rn_pool_batch(pool, batch, sizeof(batch) - 1, 2, NULL, on_batch,
                          NULL),
            UV_EINVAL);
  ASSERT_EQ(test_pool_stats(pool).calls, 0);
  /* What Redis does answer once still goes. */
  ASSERT_OK(rn_pool_call(pool, "*1\r\n$4\r\nPING\r\n", 14, NULL, test_record,
                         &o));
  RUN_UNTIL(uv, o.fired, 2000);
  ASSERT_OK(o.status);
  ASSERT_EQ(peer.conns[0].frames, 1);
  finish(pool);
}

TEST_LIST_START
  TEST_ENTRY(test_pool_call_redis_unanswerable_refused)
  TEST_ENTRY(test_pool_batch_leaving_state_refused)
  TEST_ENTRY(test_pool_call_leaving_state_refused)
  TEST_ENTRY(test_pool_call_many_frames_refused)
  TEST_ENTRY(test_hold_auth_resets)
  TEST_ENTRY(test_transaction_loading_waits)
  TEST_ENTRY(test_batch_replies_bounded_by_max_frame)
  TEST_ENTRY(test_password_not_left_in_write_buffer)
  TEST_ENTRY(test_password_not_left_in_refused_setup)
TEST_LIST_END

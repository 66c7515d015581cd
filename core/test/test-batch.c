/* Batches (client/batch.c, rn_pool_batch) against the scripted peer:
 * n requests in one write, n replies back in order, element errors kept
 * per request, and the retry rules applied to the batch as a unit when
 * the connection dies halfway through its replies. (rnp batches, replies
 * by id, GOAWAY: test-pool-rnp.c.) */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"
#include "pool_fixture.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

#define MAX_ELEMENTS 8

/* What a batch came to, copied out of its callback. */
typedef struct {
  int fired;
  int status;
  int maybe_executed;
  unsigned attempts;
  size_t count;
  int has_results;
  int element_status[MAX_ELEMENTS];
  int element_maybe[MAX_ELEMENTS];
  char element[MAX_ELEMENTS][16];
} batch_outcome_t;

static void on_batch(rn_pool_t *pool, void *data, const rn_batch_result_t *r) {
  batch_outcome_t *o = data;
  size_t i;
  (void)pool;
  ASSERT_EQ(o->fired, 0); /* exactly once */
  o->fired++;
  o->status = r->status;
  o->maybe_executed = r->maybe_executed;
  o->attempts = r->attempts;
  o->count = r->count;
  o->has_results = r->results != NULL;
  for (i = 0; r->results != NULL && i < r->count && i < MAX_ELEMENTS; i++) {
    size_t n = r->results[i].body_len < 15 ? r->results[i].body_len : 15;
    o->element_status[i] = r->results[i].status;
    o->element_maybe[i] = r->results[i].maybe_executed;
    memcpy(o->element[i], r->results[i].body, n);
    o->element[i][n] = '\0';
  }
}

/* Encodes the bodies back to back with the pool's codec and sends them as
 * one batch. Returns rn_pool_batch's result. */
static int batch(rn_pool_t *pool, const char *const *bodies, size_t n,
                 int idempotent, batch_outcome_t *o) {
  rn_call_options_t co;
  rn_buf_t frames;
  size_t i;
  int rc;
  memset(o, 0, sizeof(*o));
  memset(&co, 0, sizeof(co));
  co.idempotent = idempotent;
  rn_buf_init(&frames);
  for (i = 0; i < n; i++)
    ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frames, bodies[i],
                              strlen(bodies[i])));
  rc = rn_pool_batch(pool, frames.base, frames.len, n, &co, on_batch, o);
  rn_buf_free(&frames);
  ASSERT_EQ(o->fired, 0); /* never before rn_pool_batch returned */
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The peer                                                                   */

/* How the line peer answers: each line L with "L!", except that the first
 * connection (when cut_first) answers only the first line of what it
 * reads and then closes: a connection dying halfway through a batch's
 * replies. */
static int cut_first;
/* While set, the line peer keeps its replies in `held` (in order) until
 * release_held() sends them. */
static int holding;
static rn_buf_t held;

static void release_held(test_peer_conn_t *c) {
  holding = 0;
  test_peer_send(c, held.base, held.len);
  held.len = 0;
}

static void line_script(test_peer_conn_t *c) {
  size_t i, start = 0;
  int cut = cut_first && c == &c->peer->conns[0];
  for (i = 0; i < c->in.len && c->open; i++) {
    char reply[32];
    size_t len = i - start;
    if (c->in.base[i] != '\n') continue;
    c->lines++;
    if (len > 16) len = 16;
    snprintf(reply, sizeof(reply), "%.*s!\n", (int)len, c->in.base + start);
    if (holding)
      ASSERT_OK(rn_buf_append(&held, reply, strlen(reply)));
    else
      test_peer_send(c, reply, strlen(reply));
    start = i + 1;
    if (cut) {
      test_peer_close(c); /* the FIN after the first reply */
      break;
    }
  }
  c->in.len = 0;
}

/* The resp peer: +OK to each request, -ERR bad to one whose bulk string
 * is "bad"; no heartbeats reach it (the pool has none). */
static rn_codec_t resp_codec;

static void resp_script(test_peer_conn_t *c) {
  size_t pos = 0;
  rn_frame_t f;
  while (rn_codec_frame(&resp_codec, c->in.base + pos, c->in.len - pos,
                        &f) == 1) {
    const char *frame = c->in.base + pos;
    int bad = f.size >= 5 && memcmp(frame + f.size - 5, "bad\r\n", 5) == 0;
    if (bad)
      test_peer_send(c, "-ERR bad\r\n", 10);
    else
      test_peer_send(c, "+OK\r\n", 5);
    pos += f.size;
  }
  rn_buf_consume(&c->in, pos);
}

static rn_loop_t *loop;
static uv_loop_t *uv;
static test_peer_t peer;

static rn_pool_t *start(test_peer_script_fn script, rn_protocol_t protocol,
                        unsigned size) {
  rn_pool_options_t po;
  rn_pool_t *pool;
  loop = test_loop_open();
  uv = rn_loop_uv(loop);
  cut_first = 0;
  test_peer_start(&peer, uv, script);
  test_pool_options(&po, peer.endpoint, protocol);
  po.heartbeat.interval_ms = 0;
  po.size = size;
  po.retry.initial_ms = 1;
  po.max_batch = 4;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  return pool;
}

static void finish(rn_pool_t *pool) {
  rn_buf_free(&held);
  holding = 0;
  test_pool_close_wait(loop, pool);
  test_peer_stop(&peer);
  test_loop_close(loop);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                      */

/* Three requests leave in one write and come back in order, between
 * single calls on the same (only) connection that keep their own
 * replies. */
static void test_batch_in_order(void) {
  static const char *const bodies[] = {"a", "b", "c"};
  rn_pool_t *pool = start(line_script, RN_PROTOCOL_LINE, 1);
  test_outcome_t before, after;
  batch_outcome_t o;
  test_call(pool, "x", 0, &before);
  RUN_UNTIL(uv, before.fired, 2000); /* the connection is up */
  ASSERT_EQ(peer.conns[0].reads, 1);
  ASSERT_OK(batch(pool, bodies, 3, 0, &o));
  test_call(pool, "y", 0, &after);
  RUN_UNTIL(uv, o.fired && after.fired, 2000);
  ASSERT_OK(o.status);
  ASSERT_EQ(o.count, 3);
  ASSERT_EQ(o.attempts, 1);
  ASSERT_EQ(o.maybe_executed, 1);
  ASSERT_STR_EQ(o.element[0], "a!");
  ASSERT_STR_EQ(o.element[1], "b!");
  ASSERT_STR_EQ(o.element[2], "c!");
  ASSERT_OK(o.element_status[1]);
  ASSERT_MEM_EQ(before.body, "x!", 2);
  ASSERT_MEM_EQ(after.body, "y!", 2);
  ASSERT_EQ(peer.count, 1);
  ASSERT_EQ(peer.conns[0].lines, 5);
  /* The batch and the call after it left in one write, or the call in
   * the next: never the batch split over writes (its three lines and the
   * single call make at most two reads more). */
  ASSERT_LE(peer.conns[0].reads, 3);
  ASSERT_EQ(test_pool_stats(pool).calls, 3); /* a batch is one call */
  finish(pool);
}

/* An error reply is that request's result; the others are answered and
 * the batch succeeds. */
static void test_batch_element_errors(void) {
  static const char *const bodies[] = {"one", "bad", "three"};
  rn_pool_t *pool;
  batch_outcome_t o;
  test_codec_init(&resp_codec, RN_PROTOCOL_RESP);
  pool = start(resp_script, RN_PROTOCOL_RESP, 1);
  ASSERT_OK(batch(pool, bodies, 3, 0, &o));
  RUN_UNTIL(uv, o.fired, 2000);
  ASSERT_OK(o.status);
  ASSERT(o.has_results);
  ASSERT_OK(o.element_status[0]);
  ASSERT_EQ(o.element_status[1], RN_EREPLY);
  ASSERT_OK(o.element_status[2]);
  ASSERT_STR_EQ(o.element[0], "+OK\r\n");
  ASSERT_STR_EQ(o.element[1], "-ERR bad\r\n");
  ASSERT_EQ(o.element_maybe[1], 1); /* the server saw it */
  ASSERT_EQ(test_pool_stats(pool).failed, 0);
  finish(pool);
}

/* The connection dies after the first of three replies. Not idempotent:
 * the batch fails whole, maybe executed, and is not sent again. */
static void test_batch_cut_not_idempotent(void) {
  static const char *const bodies[] = {"a", "b", "c"};
  rn_pool_t *pool = start(line_script, RN_PROTOCOL_LINE, 1);
  batch_outcome_t o;
  cut_first = 1;
  ASSERT_OK(batch(pool, bodies, 3, 0, &o));
  RUN_UNTIL(uv, o.fired, 2000);
  ASSERT_EQ(o.status, UV_EOF);
  ASSERT_EQ(o.maybe_executed, 1);
  ASSERT_EQ(o.attempts, 1);
  ASSERT(!o.has_results);
  ASSERT_EQ(peer.count, 1); /* never sent again */
  ASSERT_EQ(test_pool_stats(pool).retries, 0);
  finish(pool);
}

/* The same, idempotent: the whole batch is sent again on a new
 * connection, and its replies are those of the second attempt alone. */
static void test_batch_cut_idempotent_retried_whole(void) {
  static const char *const bodies[] = {"a", "b", "c"};
  rn_pool_t *pool = start(line_script, RN_PROTOCOL_LINE, 1);
  batch_outcome_t o;
  cut_first = 1;
  ASSERT_OK(batch(pool, bodies, 3, 1, &o));
  RUN_UNTIL(uv, o.fired, 3000);
  ASSERT_OK(o.status);
  ASSERT_EQ(o.attempts, 2);
  ASSERT_STR_EQ(o.element[0], "a!");
  ASSERT_STR_EQ(o.element[1], "b!");
  ASSERT_STR_EQ(o.element[2], "c!");
  ASSERT_EQ(peer.count, 2);
  ASSERT_EQ(peer.conns[1].lines, 3); /* all three again, together */
  ASSERT_EQ(test_pool_stats(pool).retries, 1);
  finish(pool);
}

/* Refused at once, no callback: more requests than max_batch (E2BIG),
 * frames that are not count whole frames, a key on the batch. */
static void test_batch_bad_input(void) {
  static const char *const five[] = {"1", "2", "3", "4", "5"};
  rn_pool_t *pool = start(line_script, RN_PROTOCOL_LINE, 1);
  rn_call_options_t co;
  batch_outcome_t o;
  memset(&o, 0, sizeof(o));
  ASSERT_EQ(batch(pool, five, 5, 0, &o), UV_E2BIG); /* max_batch is 4 */
  ASSERT_EQ(rn_pool_batch(pool, "a\nb\n", 4, 3, NULL, on_batch, &o),
            UV_EINVAL);
  ASSERT_EQ(rn_pool_batch(pool, "a\nb\nc", 5, 3, NULL, on_batch, &o),
            UV_EINVAL);
  ASSERT_EQ(rn_pool_batch(pool, "a\n", 2, 0, NULL, on_batch, &o), UV_EINVAL);
  memset(&co, 0, sizeof(co));
  co.key = "k";
  co.key_len = 1;
  ASSERT_EQ(rn_pool_batch(pool, "a\n", 2, 1, &co, on_batch, &o), UV_EINVAL);
  ASSERT_EQ(o.fired, 0);
  ASSERT_EQ(test_pool_stats(pool).calls, 0);
  finish(pool);
}

/* A connection with a batch out is busy: its heartbeat waits for the
 * batch's replies like a call's, so a peer that goes silent with the batch
 * unanswered is declared dead within heartbeat.timeout (long before the
 * batch's deadline), and the batch fails whole, maybe executed. */
static void test_batch_silent_peer_is_dead(void) {
  static const char *const bodies[] = {"hold", "a"};
  rn_pool_options_t po;
  rn_pool_t *pool;
  batch_outcome_t o;
  uint64_t t0;
  loop = test_loop_open();
  uv = rn_loop_uv(loop);
  test_peer_start(&peer, uv, test_peer_answer_lines); /* holds from "hold" */
  test_pool_options(&po, peer.endpoint, RN_PROTOCOL_LINE);
  po.heartbeat.interval_ms = 50;
  po.heartbeat.timeout_ms = 200;
  po.heartbeat.ping = "ping";
  po.heartbeat.ping_len = 4;
  po.timeout_ms = 10000;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  ASSERT_OK(batch(pool, bodies, 2, 0, &o));
  t0 = uv_now(uv);
  RUN_UNTIL(uv, o.fired, 5000);
  ASSERT_EQ(o.status, RN_EDEADPEER);
  ASSERT_EQ(o.maybe_executed, 1);
  ASSERT_LT(uv_now(uv) - t0, 5000); /* the heartbeat, not the deadline */
  ASSERT_GE(test_pool_stats(pool).dead_peers, 1);
  ASSERT_EQ(peer.conns[0].lines >= 2, 1); /* the batch arrived */
  finish(pool);
}

/* A batch given up while its replies are still to come (its attempt
 * timeout: a tombstone stands in its place; or its deadline: the done
 * call stays) still owns all of its replies: the call queued behind it on
 * the same connection gets its own reply, not one of the batch's. */
static void batch_given_up(int by_deadline) {
  static const char *const bodies[] = {"a", "b", "c"};
  rn_pool_t *pool = start(line_script, RN_PROTOCOL_LINE, 1);
  rn_call_options_t co;
  rn_buf_t frames;
  test_outcome_t warm, behind;
  batch_outcome_t o;
  size_t i;
  test_call(pool, "w", 0, &warm);
  RUN_UNTIL(uv, warm.fired, 2000); /* one connection, ready */
  holding = 1;
  memset(&o, 0, sizeof(o));
  memset(&co, 0, sizeof(co));
  if (by_deadline)
    co.timeout_ms = 100;
  else
    co.attempt_timeout_ms = 100;
  rn_buf_init(&frames);
  for (i = 0; i < 3; i++)
    ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frames, bodies[i], 1));
  ASSERT_OK(rn_pool_batch(pool, frames.base, frames.len, 3, &co, on_batch,
                          &o));
  rn_buf_free(&frames);
  RUN_UNTIL(uv, o.fired, 3000);
  ASSERT_EQ(o.status, UV_ETIMEDOUT);
  ASSERT_EQ(o.maybe_executed, 1);
  test_call(pool, "z", 0, &behind); /* behind the batch's place */
  RUN_UNTIL(uv, peer.conns[0].lines == 5, 2000);
  release_held(&peer.conns[0]);
  RUN_UNTIL(uv, behind.fired, 2000);
  ASSERT_OK(behind.status);
  ASSERT_EQ(behind.body_len, 2);
  ASSERT_MEM_EQ(behind.body, "z!", 2);
  ASSERT_EQ(peer.count, 1);
  ASSERT_EQ(test_pool_stats(pool).evictions.unexpected, 0);
  finish(pool);
}

static void test_batch_abandoned_keeps_its_replies(void) { batch_given_up(0); }

static void test_batch_deadline_keeps_its_replies(void) { batch_given_up(1); }

TEST_LIST_START
  TEST_ENTRY(test_batch_in_order)
  TEST_ENTRY(test_batch_element_errors)
  TEST_ENTRY(test_batch_cut_not_idempotent)
  TEST_ENTRY(test_batch_cut_idempotent_retried_whole)
  TEST_ENTRY(test_batch_bad_input)
  TEST_ENTRY(test_batch_silent_peer_is_dead)
  TEST_ENTRY(test_batch_abandoned_keeps_its_replies)
  TEST_ENTRY(test_batch_deadline_keeps_its_replies)
TEST_LIST_END

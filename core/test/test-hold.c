/* Held connections (client/hold.c) against the scripted peer speaking
 * resp: a hold is granted from the loop, never inside rn_pool_hold; its
 * connection takes no pool call while held; it is reused when given back
 * clean and closed ("hold_reset") when left in MULTI, with calls out or
 * after a held call timed out; waiting is bounded by the hold's deadline;
 * a closing pool fails waiting holds and takes held connections. */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"
#include "peer.h"
#include "pool_fixture.h"
#include "wait.h"

#include <string.h>
#include <uv.h>

/* A frame holding "LATE" is answered +OK this many ms after it came (a
 * blocking command whose element arrives then); one at a time. */
#define LATE_MS 300
static uv_timer_t late_timer;
static int late_timer_open;

static void late_answer(uv_timer_t *timer) {
  test_peer_conn_t *c = timer->data;
  if (c->open) test_peer_send(c, "+OK\r\n", 5);
}

static void answer_late(test_peer_conn_t *c) {
  if (!late_timer_open) {
    ASSERT_OK(uv_timer_init(c->tcp.loop, &late_timer));
    late_timer_open = 1;
  }
  late_timer.data = c;
  ASSERT_OK(uv_timer_start(&late_timer, late_answer, LATE_MS, 0));
}

/* The peer: +PONG to a PING, +OK to any other frame (LATE_MS late to one
 * holding "LATE"), and nothing more on a connection once a frame holding
 * "BLOCK" came (a blocking command that never returns: replies are in
 * order). */
static void answer_resp(test_peer_conn_t *c) {
  static rn_codec_t codec;
  static int ready;
  size_t pos = 0;
  rn_frame_t f;
  if (!ready) {
    test_codec_init(&codec, RN_PROTOCOL_RESP);
    ready = 1;
  }
  while (rn_codec_frame(&codec, c->in.base + pos, c->in.len - pos, &f) == 1) {
    const char *frame = c->in.base + pos;
    c->frames++;
    /* Blocked, as a server in BLPOP: what follows waits behind it. */
    if (test_contains(frame, f.size, "BLOCK")) c->data = c;
    if (c->data != NULL)
      ;
    else if (test_contains(frame, f.size, "LATE"))
      answer_late(c);
    else if (test_contains(frame, f.size, "PING"))
      test_peer_send(c, "+PONG\r\n", 7);
    else
      test_peer_send(c, "+OK\r\n", 5);
    pos += f.size;
  }
  rn_buf_consume(&c->in, pos);
}

typedef struct {
  int fired;
  int status;
  rn_hold_t *hold;
  int inside; /* fired while rn_pool_hold ran */
} hold_outcome_t;

static int in_pool_hold;

static void on_hold(rn_pool_t *pool, void *data, rn_hold_t *hold,
                    int status) {
  hold_outcome_t *o = data;
  (void)pool;
  ASSERT_EQ(o->fired, 0); /* exactly once */
  o->fired++;
  o->status = status;
  o->hold = hold;
  o->inside = in_pool_hold;
  ASSERT((status == 0) == (hold != NULL));
}

static int hold(rn_pool_t *pool, uint64_t timeout_ms, hold_outcome_t *o) {
  rn_call_options_t co;
  int rc;
  memset(o, 0, sizeof(*o));
  memset(&co, 0, sizeof(co));
  co.timeout_ms = timeout_ms;
  in_pool_hold = 1;
  rc = rn_pool_hold(pool, &co, on_hold, o);
  in_pool_hold = 0;
  return rc;
}

/* A held call with its own timeout and block (ms; 0: none). */
static void held_call_block(rn_hold_t *h, const char *cmd,
                            uint64_t timeout_ms, uint64_t block_ms,
                            test_outcome_t *o) {
  rn_call_options_t co;
  rn_buf_t frame;
  memset(o, 0, sizeof(*o));
  memset(&co, 0, sizeof(co));
  co.timeout_ms = timeout_ms;
  co.block_ms = block_ms;
  rn_buf_init(&frame);
  test_resp_command(&frame, cmd);
  ASSERT_OK(rn_hold_call(h, frame.base, frame.len, &co, test_record, o));
  rn_buf_free(&frame);
  ASSERT_EQ(o->fired, 0);
}

static void held_call(rn_hold_t *h, const char *cmd, uint64_t timeout_ms,
                      test_outcome_t *o) {
  held_call_block(h, cmd, timeout_ms, 0, o);
}

typedef struct {
  rn_loop_t *loop;
  uv_loop_t *uv;
  test_peer_t peer;
  rn_pool_t *pool;
} fixture_t;

static void setup(fixture_t *fx, unsigned size) {
  rn_pool_options_t po;
  fx->loop = test_loop_open();
  fx->uv = rn_loop_uv(fx->loop);
  test_peer_start(&fx->peer, fx->uv, answer_resp);
  test_pool_options(&po, fx->peer.endpoint, RN_PROTOCOL_RESP);
  po.heartbeat.interval_ms = 0;
  po.size = size;
  ASSERT_OK(rn_pool_new(fx->loop, &po, &fx->pool));
}

static void teardown(fixture_t *fx) {
  test_pool_close_wait(fx->loop, fx->pool);
  if (late_timer_open) {
    uv_close((uv_handle_t *)&late_timer, NULL);
    late_timer_open = 0;
  }
  test_peer_stop(&fx->peer);
  test_loop_close(fx->loop);
}

/* Granted from the loop; a clean connection is given back and reused; a
 * pool call waits while the only connection is held. */
static void test_hold_reuse_clean(void) {
  fixture_t fx;
  hold_outcome_t h1, h2;
  test_outcome_t c1, pooled;
  setup(&fx, 1);

  ASSERT_OK(hold(fx.pool, 0, &h1));
  ASSERT_EQ(h1.fired, 0);
  RUN_UNTIL(fx.uv, h1.fired, 2000);
  ASSERT_OK(h1.status);
  ASSERT_EQ(h1.inside, 0);
  ASSERT_EQ(test_pool_stats(fx.pool).held, 1);

  held_call(h1.hold, "GET x", 0, &c1);
  {
    rn_buf_t frame;
    memset(&pooled, 0, sizeof(pooled));
    rn_buf_init(&frame);
    test_resp_command(&frame, "GET y");
    ASSERT_OK(rn_pool_call(fx.pool, frame.base, frame.len, NULL, test_record,
                           &pooled));
    rn_buf_free(&frame);
  }
  RUN_UNTIL(fx.uv, c1.fired, 2000);
  ASSERT_OK(c1.status);
  /* The pool call waits: the only connection is held. */
  uv_run(fx.uv, UV_RUN_NOWAIT);
  ASSERT_EQ(pooled.fired, 0);
  ASSERT_EQ(rn_hold_unknown(h1.hold), 0);
  rn_hold_release(h1.hold, 0);
  RUN_UNTIL(fx.uv, pooled.fired, 2000);
  ASSERT_OK(pooled.status);

  ASSERT_OK(hold(fx.pool, 0, &h2));
  RUN_UNTIL(fx.uv, h2.fired, 2000);
  ASSERT_OK(h2.status);
  rn_hold_release(h2.hold, 0);
  ASSERT_EQ(fx.peer.count, 1); /* one connection all along */
  ASSERT_EQ(test_pool_stats(fx.pool).holds, 2);
  ASSERT_EQ(test_pool_stats(fx.pool).holds_reset, 0);
  teardown(&fx);
}

/* MULTI without EXEC: closed on release, not reused. */
static void test_hold_reset_multi(void) {
  fixture_t fx;
  hold_outcome_t h1, h2;
  test_outcome_t c1;
  setup(&fx, 1);

  ASSERT_OK(hold(fx.pool, 0, &h1));
  RUN_UNTIL(fx.uv, h1.fired, 2000);
  held_call(h1.hold, "MULTI", 0, &c1);
  RUN_UNTIL(fx.uv, c1.fired, 2000);
  ASSERT_EQ(rn_hold_unknown(h1.hold), 1);
  rn_hold_release(h1.hold, 0);
  ASSERT_EQ(test_pool_stats(fx.pool).holds_reset, 1);
  RUN_UNTIL(fx.uv, fx.peer.eofs == 1, 2000);

  /* EXEC ends it: that one is reused. */
  ASSERT_OK(hold(fx.pool, 0, &h2));
  RUN_UNTIL(fx.uv, h2.fired, 2000);
  held_call(h2.hold, "MULTI", 0, &c1);
  RUN_UNTIL(fx.uv, c1.fired, 2000);
  held_call(h2.hold, "EXEC", 0, &c1);
  RUN_UNTIL(fx.uv, c1.fired, 2000);
  ASSERT_EQ(rn_hold_unknown(h2.hold), 0);
  rn_hold_release(h2.hold, 0);
  ASSERT_EQ(test_pool_stats(fx.pool).holds_reset, 1);
  ASSERT_EQ(fx.peer.count, 2);
  teardown(&fx);
}

/* Released with a call out: the connection closes and the call fails
 * (once), unsent calls with maybe_executed 0. */
static void test_hold_reset_calls_out(void) {
  fixture_t fx;
  hold_outcome_t h1;
  test_outcome_t c1;
  setup(&fx, 1);

  ASSERT_OK(hold(fx.pool, 0, &h1));
  RUN_UNTIL(fx.uv, h1.fired, 2000);
  held_call(h1.hold, "GET x", 0, &c1);
  rn_hold_release(h1.hold, 0); /* before it was even written */
  RUN_UNTIL(fx.uv, c1.fired, 2000);
  ASSERT_EQ(c1.status, RN_ECLOSED);
  ASSERT_EQ(c1.maybe_executed, 0);
  ASSERT_EQ(test_pool_stats(fx.pool).holds_reset, 1);
  teardown(&fx);
}

/* A held call that timed out (its reply may still come): reset. And it is
 * never moved to another connection. */
static void test_hold_reset_after_timeout(void) {
  fixture_t fx;
  hold_outcome_t h1;
  test_outcome_t c1;
  setup(&fx, 2);

  ASSERT_OK(hold(fx.pool, 0, &h1));
  RUN_UNTIL(fx.uv, h1.fired, 2000);
  held_call(h1.hold, "BLOCK", 100, &c1);
  RUN_UNTIL(fx.uv, c1.fired, 2000);
  ASSERT_EQ(c1.status, UV_ETIMEDOUT);
  ASSERT_EQ(c1.maybe_executed, 1);
  ASSERT_EQ(c1.attempts, 1);
  ASSERT_EQ(rn_hold_unknown(h1.hold), 1);
  rn_hold_release(h1.hold, 0);
  ASSERT_EQ(test_pool_stats(fx.pool).holds_reset, 1);
  ASSERT_EQ(fx.peer.count, 1); /* never sent elsewhere */
  teardown(&fx);
}

/* A hold waits at most its deadline; a waiting hold fails ECLOSED when the
 * pool closes; a held connection lost to the close fails later calls with
 * the close's error, and is still released (freed) after. */
static void test_hold_wait_bounded_and_close(void) {
  fixture_t fx;
  hold_outcome_t h1, h2, h3;
  uint64_t t0;
  setup(&fx, 1);

  ASSERT_OK(hold(fx.pool, 0, &h1));
  RUN_UNTIL(fx.uv, h1.fired, 2000);
  t0 = uv_now(fx.uv);
  ASSERT_OK(hold(fx.pool, 100, &h2));
  RUN_UNTIL(fx.uv, h2.fired, 2000);
  ASSERT_EQ(h2.status, UV_ETIMEDOUT);
  ASSERT_GE(uv_now(fx.uv) - t0, 99);

  ASSERT_OK(hold(fx.pool, 5000, &h3));
  uv_run(fx.uv, UV_RUN_NOWAIT);
  ASSERT_EQ(h3.fired, 0);
  test_pool_close_wait(fx.loop, fx.pool);
  ASSERT_EQ(h3.fired, 1);
  ASSERT_EQ(h3.status, RN_ECLOSED);
  ASSERT_EQ(rn_hold_call(h1.hold, "*1\r\n$4\r\nPING\r\n", 14, NULL,
                         test_record, &h3),
            RN_ECLOSED);
  rn_hold_release(h1.hold, 0); /* the pool is gone: only frees */
  test_peer_stop(&fx.peer);
  test_loop_close(fx.loop);
}

/* Bad input: no callback, a hold not granted yet. */
static void test_hold_bad_input(void) {
  fixture_t fx;
  setup(&fx, 1);
  ASSERT_EQ(rn_pool_hold(fx.pool, NULL, NULL, NULL), UV_EINVAL);
  teardown(&fx);
}

/* A blocking call's silence is not a dead peer: with heartbeats of 50 ms
 * and a timeout of 100 ms, a call the peer never answers fails at its own
 * deadline (ETIMEDOUT, its connection closed: "blocking_timeout") when it
 * is blocking, and as a dead peer when it is not. Pool calls meanwhile go
 * to another connection. */
static void pooled_call(rn_pool_t *pool, const char *cmd, int blocking,
                        uint64_t timeout_ms, test_outcome_t *o) {
  rn_call_options_t co;
  rn_buf_t frame;
  memset(o, 0, sizeof(*o));
  memset(&co, 0, sizeof(co));
  co.timeout_ms = timeout_ms;
  co.blocking = blocking;
  rn_buf_init(&frame);
  test_resp_command(&frame, cmd);
  ASSERT_OK(rn_pool_call(pool, frame.base, frame.len, &co, test_record, o));
  rn_buf_free(&frame);
}

/* The fixture with a pool of size connections to the answer_resp peer,
 * heartbeats every 50 ms with a 100 ms timeout: silence is judged fast. */
static void start_fast_heartbeats(fixture_t *fx, unsigned size) {
  rn_pool_options_t po;
  fx->loop = test_loop_open();
  fx->uv = rn_loop_uv(fx->loop);
  test_peer_start(&fx->peer, fx->uv, answer_resp);
  test_pool_options(&po, fx->peer.endpoint, RN_PROTOCOL_RESP);
  po.heartbeat.interval_ms = 50;
  po.heartbeat.timeout_ms = 100;
  po.size = size;
  ASSERT_OK(rn_pool_new(fx->loop, &po, &fx->pool));
}

static void test_blocking_not_dead(void) {
  fixture_t fx;
  test_outcome_t blocked, other, silent;
  uint64_t t0;
  start_fast_heartbeats(&fx, 2);

  t0 = uv_now(fx.uv);
  pooled_call(fx.pool, "BLOCK q 5", 1, 600, &blocked);
  RUN_UNTIL(fx.uv, fx.peer.count == 1 && fx.peer.conns[0].frames >= 2,
            2000);
  /* Placed after it: not behind it, on the other connection. */
  pooled_call(fx.pool, "GET x", 0, 0, &other);
  RUN_UNTIL(fx.uv, other.fired, 2000);
  ASSERT_OK(other.status);
  ASSERT_EQ(fx.peer.count, 2);
  RUN_UNTIL(fx.uv, blocked.fired, 3000);
  ASSERT_EQ(blocked.status, UV_ETIMEDOUT);
  ASSERT_EQ(blocked.maybe_executed, 1);
  ASSERT_GE(uv_now(fx.uv) - t0, 590);
  ASSERT_EQ(test_pool_stats(fx.pool).dead_peers, 0);
  /* Its connection went with it: the server would still answer it. */
  RUN_UNTIL(fx.uv, fx.peer.eofs == 1, 2000);

  /* The same silence without `blocking`: a dead peer, well before. */
  t0 = uv_now(fx.uv);
  pooled_call(fx.pool, "BLOCK q 5", 0, 600, &silent);
  RUN_UNTIL(fx.uv, silent.fired, 3000);
  ASSERT_EQ(silent.status, RN_EDEADPEER);
  ASSERT_LT(uv_now(fx.uv) - t0, 590);
  ASSERT_EQ(test_pool_stats(fx.pool).dead_peers, 1);
  teardown(&fx);
}

/* block_ms bounds the silence a blocking call excuses (heartbeats of
 * 50 ms, timeout 100 ms, every held call's deadline 5 s):
 * - a reply LATE_MS (300 ms) after the call, within its block of 1 s: no
 *   dead peer; the same call without a block: a dead peer;
 * - a call never answered, block 300 ms: a dead peer once the block and
 *   the heartbeat's timeout passed (at least 400 ms after the call),
 *   long before its deadline. */
static void test_block_bounds_silence(void) {
  fixture_t fx;
  hold_outcome_t h;
  test_outcome_t late, unblocked, blocked;
  uint64_t t0;
  start_fast_heartbeats(&fx, 1);

  ASSERT_OK(hold(fx.pool, 0, &h));
  RUN_UNTIL(fx.uv, h.fired, 2000);
  ASSERT_OK(h.status);
  held_call_block(h.hold, "LATE q 1", 5000, 1000, &late);
  RUN_UNTIL(fx.uv, late.fired, 4000);
  ASSERT_OK(late.status);
  ASSERT_EQ(test_pool_stats(fx.pool).dead_peers, 0);
  /* Silent as long without a block: dead. */
  held_call_block(h.hold, "LATE q 1", 5000, 0, &unblocked);
  RUN_UNTIL(fx.uv, unblocked.fired, 4000);
  ASSERT_EQ(unblocked.status, RN_EDEADPEER);
  ASSERT_EQ(test_pool_stats(fx.pool).dead_peers, 1);
  rn_hold_release(h.hold, 0);

  ASSERT_OK(hold(fx.pool, 0, &h));
  RUN_UNTIL(fx.uv, h.fired, 2000);
  ASSERT_OK(h.status);
  t0 = uv_now(fx.uv);
  held_call_block(h.hold, "BLOCK q 0", 5000, 300, &blocked);
  RUN_UNTIL(fx.uv, blocked.fired, 4500);
  ASSERT_EQ(blocked.status, RN_EDEADPEER); /* not its deadline's ETIMEDOUT */
  ASSERT_EQ(blocked.maybe_executed, 1);
  ASSERT_GE(uv_now(fx.uv) - t0, 400);
  ASSERT_EQ(test_pool_stats(fx.pool).dead_peers, 2);
  rn_hold_release(h.hold, 0);
  teardown(&fx);
}

TEST_LIST_START
  TEST_ENTRY(test_hold_reuse_clean)
  TEST_ENTRY(test_hold_reset_multi)
  TEST_ENTRY(test_hold_reset_calls_out)
  TEST_ENTRY(test_hold_reset_after_timeout)
  TEST_ENTRY(test_hold_wait_bounded_and_close)
  TEST_ENTRY(test_hold_bad_input)
  TEST_ENTRY(test_blocking_not_dead)
  TEST_ENTRY(test_block_bounds_silence)
TEST_LIST_END

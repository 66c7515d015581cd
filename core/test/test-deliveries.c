/* A pool's on_deliveries edges (issue 20): every completion a read brings,
 * replies and the failures of a connection the read found closed, comes
 * between a begin and an end, the pairs balanced; a call completed
 * outside a read (its deadline) comes outside them. Against a scripted
 * line peer that answers a whole batch of lines in one write. */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"

#include <uv.h>

#define BATCH 6

static rn_loop_t *loop;
static test_peer_t peer;
static int begins, ends, depth, deepest;

/* The peer: nothing until BATCH lines are in, then all their answers in
 * one write; with data set, it closes instead (an EOF). */
static void answer_batch(test_peer_conn_t *c) {
  size_t i, lines = 0;
  for (i = 0; i < c->in.len; i++)
    if (c->in.base[i] == '\n') lines++;
  if (lines < BATCH) return;
  c->in.len = 0;
  if (c->peer->data != NULL) {
    test_peer_close(c);
    return;
  }
  test_peer_send(c, "a\nb\nc\nd\ne\nf\n", 2 * BATCH);
}

static void on_deliveries(rn_pool_t *pool, int begin) {
  (void)pool;
  if (begin) {
    begins++;
    depth++;
    if (depth > deepest) deepest = depth;
  } else {
    ASSERT_GT(depth, 0);
    ends++;
    depth--;
  }
}

/* What a completion saw of the edges. */
typedef struct {
  test_outcome_t o;
  int depth;
} seen_t;

static void record(rn_pool_t *pool, void *data, const rn_result_t *r) {
  seen_t *s = data;
  s->depth = depth;
  test_record(pool, &s->o, r);
}

/* A loop, the peer (closing instead of answering with close set), and a
 * pool of one connection to it with the edges counted. */
static rn_pool_t *start(void *close) {
  rn_pool_options_t po;
  rn_pool_t *pool;
  loop = test_loop_open();
  test_peer_start(&peer, rn_loop_uv(loop), answer_batch);
  peer.data = close;
  begins = ends = depth = deepest = 0;
  test_pool_line_options(&po, peer.endpoint);
  po.size = 1;
  po.on_deliveries = on_deliveries;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  return pool;
}

static void finish(rn_pool_t *pool) {
  ASSERT_EQ(begins, ends);
  ASSERT_EQ(depth, 0);
  test_pool_close_wait(loop, pool);
  test_peer_stop(&peer);
  test_loop_close(loop);
}

/* n calls of "x", each with its own deadline (ms; 0: the pool's). */
static void send_calls(rn_pool_t *pool, seen_t *seen, int n,
                       uint64_t timeout_ms) {
  rn_call_options_t co;
  int i;
  memset(&co, 0, sizeof(co));
  co.timeout_ms = timeout_ms;
  for (i = 0; i < n; i++) {
    memset(&seen[i], 0, sizeof(seen[i]));
    seen[i].depth = -1;
    ASSERT_OK(rn_pool_call(pool, "x\n", 2, &co, record, &seen[i]));
  }
}

static int all_fired(const seen_t *seen, int n) {
  int i;
  for (i = 0; i < n; i++)
    if (!seen[i].o.fired) return 0;
  return 1;
}

static void test_replies_of_a_read_come_between_its_edges(void) {
  seen_t seen[BATCH];
  rn_pool_t *pool;
  int i;

  pool = start(NULL);
  send_calls(pool, seen, BATCH, 0);
  RUN_UNTIL(rn_loop_uv(loop), all_fired(seen, BATCH), 5000);
  for (i = 0; i < BATCH; i++) {
    ASSERT_EQ(seen[i].o.status, 0);
    ASSERT_EQ(seen[i].o.body_len, 1);
    ASSERT_EQ(seen[i].o.body[0], 'a' + i); /* in order */
    ASSERT_EQ(seen[i].depth, 1);
  }
  ASSERT_GT(begins, 0);
  ASSERT_EQ(deepest, 1);
  finish(pool);
}

/* The read that finds the peer gone (an EOF) fails the calls out on the
 * connection: those failures come between its edges too. */
static void test_failures_of_a_closing_read_come_between_its_edges(void) {
  static int closing = 1;
  seen_t seen[BATCH];
  rn_pool_t *pool;
  int i;

  pool = start(&closing);
  send_calls(pool, seen, BATCH, 0);
  RUN_UNTIL(rn_loop_uv(loop), all_fired(seen, BATCH), 5000);
  for (i = 0; i < BATCH; i++) {
    ASSERT_NE(seen[i].o.status, 0);
    ASSERT_EQ(seen[i].depth, 1);
  }
  finish(pool);
}

/* A deadline is no read: its failure comes outside any edges. */
static void test_a_deadline_comes_outside_the_edges(void) {
  seen_t seen[BATCH];
  rn_pool_t *pool;
  int i;

  pool = start(NULL);
  /* One line short of a batch: the peer never answers. */
  send_calls(pool, seen, BATCH - 1, 50);
  RUN_UNTIL(rn_loop_uv(loop), all_fired(seen, BATCH - 1), 5000);
  for (i = 0; i < BATCH - 1; i++) {
    ASSERT_EQ(seen[i].o.status, UV_ETIMEDOUT);
    ASSERT_EQ(seen[i].depth, 0);
  }
  finish(pool);
}

TEST_LIST_START
  TEST_ENTRY(test_replies_of_a_read_come_between_its_edges)
  TEST_ENTRY(test_failures_of_a_closing_read_come_between_its_edges)
  TEST_ENTRY(test_a_deadline_comes_outside_the_edges)
TEST_LIST_END

/* rnp batches against resilnet's own server and its MAX_CONCURRENT: a
 * batch of n puts n requests to the server, and the pool counts them so,
 * summed over its connections (docs/protocol.md section 6). The server
 * here has no queue (queue 0): every request past MAX_CONCURRENT is
 * refused OVERLOADED, so any overrun by the pool shows as a refusal. Its
 * handler keeps each request a few milliseconds, so that batches overlap
 * on the server. */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"
#include "pool_fixture.h"
#include "server_fixture.h"
#include "wait.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

#define MAX_CONCURRENT 8

static test_server_t srv;
static uv_timer_t answer_timer;
static size_t most_held; /* the most requests the handler held at once */

/* Answers every request held so far (the fixture's handler holds them). */
static void answer_held(uv_timer_t *timer) {
  size_t i;
  (void)timer;
  for (i = 0; i < srv.nheld; i++)
    test_reply(srv.held[i], srv.bodies[i], strlen(srv.bodies[i]));
  srv.nheld = 0;
}

/* Set when a request of a batch started while one of another batch was
 * held (each batch's requests carry its own body). */
static int mixed;

static void on_request(rn_server_t *server, rn_request_t *req,
                       const char *body, size_t len) {
  test_server_on_request(server, req, body, len);
  if (srv.nheld > most_held) most_held = srv.nheld;
  if (srv.nheld > 1 && strcmp(srv.bodies[0], srv.bodies[srv.nheld - 1]) != 0)
    mixed = 1;
}

/* The server, MAX_CONCURRENT 8 and a queue of `queue`, answering every
 * 3 ms (or when the test says: every_3ms 0); a pool of rnp with `size`
 * connections on it. */
static rn_pool_t *start(unsigned size, unsigned queue, int every_3ms) {
  rn_server_options_t so;
  rn_pool_options_t po;
  rn_pool_t *pool;
  char endpoint[96];
  mixed = 0;
  rn_server_options_init(&so);
  so.codec.protocol = RN_PROTOCOL_RNP;
  so.max_concurrent = MAX_CONCURRENT;
  so.queue = queue;
  so.on_request = on_request;
  test_server_start(&srv, NULL, &so);
  most_held = 0;
  ASSERT_OK(uv_timer_init(srv.uv, &answer_timer));
  if (every_3ms) ASSERT_OK(uv_timer_start(&answer_timer, answer_held, 3, 3));
  snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", srv.port);
  test_pool_options(&po, endpoint, RN_PROTOCOL_RNP);
  po.size = size;
  po.min_idle = size; /* its connections up before the batches */
  po.timeout_ms = 10000;
  ASSERT_OK(rn_pool_new(srv.loop, &po, &pool));
  RUN_UNTIL(srv.uv, test_pool_stats(pool).idle == size, 5000);
  return pool;
}

static void finish(rn_pool_t *pool) {
  uv_close((uv_handle_t *)&answer_timer, NULL);
  test_pool_close_wait(srv.loop, pool);
  test_server_finish(&srv);
}

static unsigned server_refusals(void) {
  rn_server_stats_t st;
  rn_server_stats(srv.server, &st);
  return (unsigned)st.overloaded;
}

/* A task sending batches of `size` requests, the next one as the last is
 * answered, until it sent `left`. */
typedef struct {
  rn_pool_t *pool;
  unsigned size;
  unsigned left;
  unsigned done;      /* batches answered */
  unsigned refused;   /* requests whose own result was an error */
  int failed;         /* a batch that failed as a whole: its status */
  int order;          /* test_next_order() when its last batch ended */
} batcher_t;

static void batcher_send(batcher_t *b);

static void on_batch(rn_pool_t *pool, void *data, const rn_batch_result_t *r) {
  batcher_t *b = data;
  size_t i;
  (void)pool;
  b->done++;
  if (r->status != 0) {
    b->failed = r->status;
  } else {
    ASSERT_EQ(r->count, b->size);
    for (i = 0; i < r->count; i++)
      if (r->results[i].status != 0) b->refused++;
  }
  if (b->left > 0) batcher_send(b);
  else b->order = test_next_order();
}

static void batcher_send(batcher_t *b) {
  rn_buf_t frames;
  unsigned i;
  rn_buf_init(&frames);
  for (i = 0; i < b->size; i++)
    ASSERT_OK(rn_codec_encode(rn_pool_codec(b->pool), &frames, "x", 1));
  b->left--;
  ASSERT_OK(rn_pool_batch(b->pool, frames.base, frames.len, b->size, NULL,
                          on_batch, b));
  rn_buf_free(&frames);
}

static unsigned batches_done(const batcher_t *tasks, unsigned n) {
  unsigned i, done = 0;
  for (i = 0; i < n; i++) done += tasks[i].done;
  return done;
}

/* 16 tasks, each sending 20 batches of 4 on 4 connections: 64 requests
 * wanted at once against MAX_CONCURRENT 8. None is refused: the pool
 * keeps two batches out at a time. (A batch counted as one request let
 * eight out, 32 requests, and the server refused 24 of them.) */
static void test_batches_stay_within_max_concurrent(void) {
  batcher_t tasks[16];
  rn_pool_t *pool = start(4, 0, 1);
  unsigned i, refused = 0;
  for (i = 0; i < 16; i++) {
    memset(&tasks[i], 0, sizeof(tasks[i]));
    tasks[i].pool = pool;
    tasks[i].size = 4;
    tasks[i].left = 20;
    batcher_send(&tasks[i]);
  }
  RUN_UNTIL(srv.uv, batches_done(tasks, 16) == 16 * 20, 20000);
  for (i = 0; i < 16; i++) {
    ASSERT_OK(tasks[i].failed);
    refused += tasks[i].refused;
  }
  ASSERT_EQ(refused, 0);
  ASSERT_EQ(server_refusals(), 0);
  ASSERT_LE(most_held, MAX_CONCURRENT);
  ASSERT_EQ(srv.handled, 16 * 20 * 4);
  finish(pool);
}

/* What one batch came to. */
typedef struct {
  int fired;
  int status;
  unsigned refused;
  int order;
} one_batch_t;

static void on_one_batch(rn_pool_t *pool, void *data,
                         const rn_batch_result_t *r) {
  one_batch_t *o = data;
  size_t i;
  (void)pool;
  ASSERT_EQ(o->fired, 0);
  o->fired++;
  o->status = r->status;
  o->order = test_next_order();
  for (i = 0; r->status == 0 && i < r->count; i++)
    if (r->results[i].status != 0) o->refused++;
}

/* n requests, each with body `body`, as one batch. */
static void send_batch(rn_pool_t *pool, const char *body, unsigned n,
                       one_batch_t *o) {
  rn_buf_t frames;
  unsigned i;
  memset(o, 0, sizeof(*o));
  rn_buf_init(&frames);
  for (i = 0; i < n; i++)
    ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frames, body,
                              strlen(body)));
  ASSERT_OK(rn_pool_batch(pool, frames.base, frames.len, n, NULL,
                          on_one_batch, o));
  rn_buf_free(&frames);
}

/* A batch larger than MAX_CONCURRENT (12 against 8, the server queueing
 * 8) waits until nothing else is out to the server, then goes alone: the
 * server runs 8 and queues 4, refusing none. A smaller batch made after
 * it waits behind it rather than taking the places it waits for (were it
 * passed over, calls taking each place as it frees would keep it waiting
 * for ever). */
static void test_batch_above_max_concurrent_goes_alone(void) {
  rn_pool_t *pool = start(2, 8, 0);
  one_batch_t a, big, c;
  send_batch(pool, "a", 4, &a);
  RUN_UNTIL(srv.uv, srv.nheld == 4, 3000);
  send_batch(pool, "big", 12, &big);
  send_batch(pool, "c", 2, &c); /* would fit beside a: waits behind big */
  test_run_for(srv.uv, 50);
  ASSERT_EQ(srv.handled, 4);
  answer_held(NULL);
  RUN_UNTIL(srv.uv, a.fired && srv.nheld == MAX_CONCURRENT, 3000);
  test_run_for(srv.uv, 20);
  ASSERT_EQ(srv.handled, 4 + MAX_CONCURRENT); /* c still waits */
  while (!big.fired) { /* the 4 queued ones start as places free */
    answer_held(NULL);
    RUN_UNTIL(srv.uv, big.fired || srv.nheld > 0, 3000);
  }
  RUN_UNTIL(srv.uv, srv.nheld == 2, 3000);
  answer_held(NULL);
  RUN_UNTIL(srv.uv, c.fired, 3000);
  ASSERT_OK(a.status);
  ASSERT_OK(big.status);
  ASSERT_OK(c.status);
  ASSERT_EQ(a.refused + big.refused + c.refused, 0);
  ASSERT_EQ(server_refusals(), 0);
  ASSERT_EQ(mixed, 0);
  ASSERT_LT(big.order, c.order);
  ASSERT_EQ(srv.handled, 4 + 12 + 2);
  finish(pool);
}

/* Held calls went to their connection whatever the server's
 * MAX_CONCURRENT, which pool calls and batches wait under: with the
 * server full of the pool's requests (8 of 8, no queue) a held call was
 * sent and refused OVERLOADED by the server. Now it is refused
 * RN_EOVERLOAD before it is sent (the overload event names
 * max_concurrent), a held batch too; once replies free places it goes;
 * and with nothing else out a held batch above the limit goes alone, as
 * a pool batch does. */
static void test_held_call_within_max_concurrent(void) {
  rn_pool_t *pool = start(2, 0, 0);
  rn_buf_t frames;
  test_granted_t g;
  one_batch_t a, big;
  test_outcome_t o;
  unsigned i;
  memset(&g, 0, sizeof(g));
  ASSERT_OK(rn_pool_hold(pool, NULL, test_on_granted, &g));
  RUN_UNTIL(srv.uv, g.fired, 3000);
  send_batch(pool, "a", MAX_CONCURRENT, &a); /* on the other connection */
  RUN_UNTIL(srv.uv, srv.nheld == MAX_CONCURRENT, 3000);
  rn_buf_init(&frames);
  for (i = 0; i < 2; i++)
    ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frames, "h", 1));
  memset(&o, 0, sizeof(o));
  ASSERT_EQ(rn_hold_call(g.hold, frames.base, frames.len / 2, NULL,
                         test_record, &o),
            RN_EOVERLOAD);
  ASSERT_EQ(rn_hold_batch(g.hold, frames.base, frames.len, 2, NULL,
                          on_one_batch, &big),
            RN_EOVERLOAD);
  ASSERT_EQ(test_pool_stats(pool).overloaded, 2);
  test_run_for(srv.uv, 20);
  ASSERT_EQ(srv.handled, MAX_CONCURRENT); /* nothing more was sent */
  answer_held(NULL);
  RUN_UNTIL(srv.uv, a.fired, 3000);
  ASSERT_OK(rn_hold_call(g.hold, frames.base, frames.len / 2, NULL,
                         test_record, &o));
  RUN_UNTIL(srv.uv, srv.nheld == 1, 3000);
  answer_held(NULL);
  RUN_UNTIL(srv.uv, o.fired, 3000);
  ASSERT_OK(o.status);
  /* Alone, a held batch above the limit goes (the server queues none:
   * it refuses what is past 8, as it would a pool batch's). */
  frames.len = 0;
  for (i = 0; i < MAX_CONCURRENT + 2; i++)
    ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &frames, "h", 1));
  memset(&big, 0, sizeof(big));
  ASSERT_OK(rn_hold_batch(g.hold, frames.base, frames.len,
                          MAX_CONCURRENT + 2, NULL, on_one_batch, &big));
  rn_buf_free(&frames);
  RUN_UNTIL(srv.uv, srv.nheld == MAX_CONCURRENT, 3000);
  answer_held(NULL);
  RUN_UNTIL(srv.uv, big.fired, 3000);
  ASSERT_OK(big.status);
  ASSERT_OK(a.status);
  ASSERT_EQ(a.refused, 0);
  rn_hold_release(g.hold, 0);
  finish(pool);
}

TEST_LIST_START
  TEST_ENTRY(test_batches_stay_within_max_concurrent)
  TEST_ENTRY(test_batch_above_max_concurrent_goes_alone)
  TEST_ENTRY(test_held_call_within_max_concurrent)
TEST_LIST_END

/* Dedupe of keyed rnp requests: replay, waiting for the original, stored
 * errors, refusals that free the key, LRU capacity, the window, and a
 * store that answers later (or fails). */
#include "task.h"
#include "rnp_client.h"
#include "server_fixture.h"
#include "server.h"
#include "dedupe.h" /* the memory store's allocator */

#include <stdio.h>

static test_server_t T;

static void start(rn_server_options_t *o) {
  o->codec.protocol = RN_PROTOCOL_RNP;
  o->dedupe.on = 1;
  test_server_start(&T, NULL, o);
}

static void start_default(void) {
  rn_server_options_t o;
  rn_server_options_init(&o);
  start(&o);
}

static void reply(size_t i, const char *text) {
  ASSERT_OK(rn_request_reply(T.held[i], text, strlen(text)));
}

/* Sends a request (key may be NULL) and waits until the handler holds
 * `held` requests in all; returns its id. */
static uint64_t request_held(rnp_client_t *c, const char *body,
                             const char *key, size_t held) {
  uint64_t id = rx_request(c, body, key, -1, 0);
  RUN_UNTIL(T.uv, T.nheld >= held, 10000);
  return id;
}

/* Sends a keyed request and waits for its answer. */
static const rx_frame_t *ask(rnp_client_t *c, const char *key) {
  uint64_t id = rx_request(c, "body", key, -1, 0);
  rx_wait_frames(T.uv, c, c->count + 1);
  ASSERT_EQ(c->frames[c->count - 1].id, id);
  return &c->frames[c->count - 1];
}

/* ------------------------------------------------------------------------ */

/* The held original (on a, id ida) answered "paid": it gets that, and so
 * does the duplicate that waited for it (b's frame n, id idb). */
static void both_paid(rnp_client_t *a, uint64_t ida, rnp_client_t *b,
                      size_t n, uint64_t idb) {
  reply(0, "paid");
  rx_wait_frames(T.uv, a, 2);
  rx_wait_frames(T.uv, b, n + 1);
  ASSERT_EQ(a->frames[1].id, ida);
  ASSERT_MEM_EQ(a->frames[1].payload, "paid", 4);
  ASSERT_EQ(b->frames[n].id, idb);
  ASSERT_EQ(b->frames[n].type, RN_RNP_REPLY);
  ASSERT_MEM_EQ(b->frames[n].payload, "paid", 4);
}

static void test_replay_and_wait(void) {
  rnp_client_t a, b;
  const rx_frame_t *x;
  uint64_t ida, idb;
  rn_server_stats_t st;

  start_default();
  rx_open(T.uv, &a, T.port);
  rx_open(T.uv, &b, T.port);

  /* a duplicate while the original runs waits for its answer */
  ida = request_held(&a, "pay 50", "k1", 1);
  idb = rx_request(&b, "pay 50", "k1", -1, 0);
  test_run_for(T.uv, 20);
  ASSERT_EQ(T.nheld, 1);
  ASSERT_EQ(b.count, 1);
  both_paid(&a, ida, &b, 1, idb);

  /* a finished one is replayed without running */
  x = ask(&b, "k1");
  ASSERT_EQ(x->type, RN_RNP_REPLY);
  ASSERT_MEM_EQ(x->payload, "paid", 4);
  ASSERT_EQ(T.nheld, 1);

  /* requests without a key always run */
  request_held(&a, "free", NULL, 2);
  reply(1, "ok");
  rx_wait_frames(T.uv, &a, 3);

  rn_server_stats(T.server, &st);
  ASSERT_EQ(st.joined, 1);
  ASSERT_EQ(st.replayed, 1);
  ASSERT_EQ(st.handled, 2);
  rx_close(T.uv, &a);
  rx_close(T.uv, &b);
  test_server_finish(&T);
}

static void test_errors(void) {
  rnp_client_t a;
  const rx_frame_t *x;

  start_default();
  rx_open(T.uv, &a, T.port);
  /* an APPLICATION error may have executed: it is kept and replayed */
  request_held(&a, "x", "e1", 1);
  ASSERT_OK(rn_request_fail(T.held[0], RN_RNP_ERR_APPLICATION, "broke", 5,
                            0));
  rx_wait_frames(T.uv, &a, 2);
  x = ask(&a, "e1");
  ASSERT_EQ(x->type, RN_RNP_ERROR);
  ASSERT_EQ(x->code, RN_RNP_ERR_APPLICATION);
  ASSERT_EQ(x->flags, 0);
  ASSERT_MEM_EQ(x->payload, "broke", 5);
  ASSERT_EQ(T.nheld, 1);

  /* a refusal proves nothing ran: the key is free again */
  request_held(&a, "x", "e2", 2);
  ASSERT_OK(rn_request_fail(T.held[1], RN_RNP_ERR_BAD_REQUEST, "no", 2, 0));
  rx_wait_frames(T.uv, &a, 4);
  ASSERT_EQ(a.frames[3].flags, RN_RNP_NOT_EXECUTED);
  request_held(&a, "x", "e2", 3);
  reply(2, "second try");
  rx_wait_frames(T.uv, &a, 5);
  ASSERT_MEM_EQ(a.frames[4].payload, "second try", 10);
  rx_close(T.uv, &a);
  test_server_finish(&T);
}

/* A waiter whose connection closes leaves; the original carries on and
 * its answer is still recorded. */
static void test_waiter_leaves(void) {
  rnp_client_t a, b;
  const rx_frame_t *x;

  start_default();
  rx_open(T.uv, &a, T.port);
  rx_open(T.uv, &b, T.port);
  request_held(&a, "x", "w1", 1);
  rx_request(&b, "x", "w1", -1, 0);
  test_run_for(T.uv, 20);
  rx_close(T.uv, &b);
  test_run_for(T.uv, 20);
  /* the original's client goes too: the answer is still recorded */
  rx_close(T.uv, &a);
  test_run_for(T.uv, 20);
  reply(0, "done");
  rx_open(T.uv, &a, T.port);
  x = ask(&a, "w1");
  ASSERT_MEM_EQ(x->payload, "done", 4);
  ASSERT_EQ(T.nheld, 1);
  rx_close(T.uv, &a);
  test_server_finish(&T);
}

/* A duplicate waiting for its key's original has not started
 * (docs/protocol.md, sections 8 and 10): when its deadline passes it is
 * refused DEADLINE, not executed, at once. It used to wait, holding a
 * slot, until the original finished (or the drain ended), and then got
 * the original's answer long after its deadline. The original and the
 * key are untouched; a duplicate without a deadline still joins. */
static void test_joined_duplicate_deadline_refused(void) {
  rnp_client_t a, b;
  uint64_t ida, late, patient, t0, waited;
  rn_server_stats_t st;

  start_default();
  rx_open(T.uv, &a, T.port);
  rx_open(T.uv, &b, T.port);
  ida = request_held(&a, "pay 70", "j1", 1);
  t0 = uv_now(T.uv);
  late = rx_request(&b, "pay 70", "j1", 40, 0);
  rx_wait_frames(T.uv, &b, 2); /* the original is still held */
  waited = uv_now(T.uv) - t0;
  ASSERT(rx_refused(&b, late, RN_RNP_ERR_DEADLINE));
  ASSERT_GE(waited, 40);
  ASSERT_LT(waited, 2000);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_DEADLINE], 1);
  ASSERT_EQ(T.server->active, 1); /* its slot went back */
  /* one without a deadline still waits for the original's answer */
  patient = rx_request(&b, "pay 70", "j1", -1, 0);
  test_run_for(T.uv, 20);
  ASSERT_EQ(b.count, 2);
  both_paid(&a, ida, &b, 2, patient);
  rn_server_stats(T.server, &st);
  ASSERT_EQ(st.expired, 1);
  ASSERT_EQ(st.handled, 1);
  rx_close(T.uv, &a);
  rx_close(T.uv, &b);
  test_server_finish(&T);
}

/* Issue 15, defect 10: a key flood evicted a legitimate finished key inside
 * its window, so that client's retry ran a second time. At capacity new
 * keys are refused as not executed (retry later), with an event and a
 * stat; kept keys still replay; a key is forgotten only after its window. */
static void test_capacity_never_evicts_in_window(void) {
  rnp_client_t a;
  rn_server_options_t o;
  const char *keys[2] = {"a", "b"};
  size_t i;
  const rx_frame_t *x;
  rn_server_stats_t st;

  rn_server_options_init(&o);
  o.dedupe.capacity = 2;
  o.dedupe.window_ms = 200;
  o.retry_after_ms = 55;
  start(&o);
  rx_open(T.uv, &a, T.port);
  for (i = 0; i < 2; i++) {
    request_held(&a, "x", keys[i], i + 1);
    reply(i, keys[i]);
    rx_wait_frames(T.uv, &a, i + 2);
  }
  /* full of finished keys inside their window: a new key is refused */
  x = ask(&a, "flood");
  ASSERT_EQ(x->code, RN_RNP_ERR_OVERLOADED);
  ASSERT_EQ(x->flags, RN_RNP_NOT_EXECUTED);
  ASSERT_EQ(x->retry_after, 55);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_DEDUPE_FULL], 1);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_STORE], 0);
  rn_server_stats(T.server, &st);
  ASSERT_EQ(st.dedupe_full, 1);
  /* the legitimate keys were kept: their retries replay, run nothing */
  x = ask(&a, "a");
  ASSERT_EQ(x->type, RN_RNP_REPLY);
  ASSERT_MEM_EQ(x->payload, "a", 1);
  x = ask(&a, "b");
  ASSERT_MEM_EQ(x->payload, "b", 1);
  ASSERT_EQ(T.nheld, 2);
  /* the refused key left no claim: once the window frees room, it runs */
  test_run_for(T.uv, 250);
  request_held(&a, "x", "flood", 3);
  reply(2, "ran");
  rx_wait_frames(T.uv, &a, a.count + 1);
  ASSERT_MEM_EQ(a.frames[a.count - 1].payload, "ran", 3);
  rx_close(T.uv, &a);
  test_server_finish(&T);
}

static void test_window(void) {
  rnp_client_t a;
  rn_server_options_t o;
  const rx_frame_t *x;

  rn_server_options_init(&o);
  o.dedupe.window_ms = 40;
  start(&o);
  rx_open(T.uv, &a, T.port);
  request_held(&a, "x", "w", 1);
  reply(0, "first");
  rx_wait_frames(T.uv, &a, 2);
  x = ask(&a, "w");
  ASSERT_MEM_EQ(x->payload, "first", 5);
  test_run_for(T.uv, 60);
  request_held(&a, "x", "w", 2);
  reply(1, "again");
  rx_wait_frames(T.uv, &a, 4);
  ASSERT_MEM_EQ(a.frames[3].payload, "again", 5);
  rx_close(T.uv, &a);
  test_server_finish(&T);
}

/* ------------------------------------------------------------------------ */
/* A store that answers on a later loop turn, over the memory store.        */

typedef struct slow_call_s {
  rn_dedupe_op_t *op;
  int kind; /* 1 claim, 2 finish, 3 release */
  char key[64];
  size_t key_len;
  unsigned error;
  char body[64];
  size_t len;
} slow_call_t;

typedef struct slow_store_s {
  rn_dedupe_store_t base;
  rn_dedupe_store_t *mem;
  uv_timer_t timer;
  slow_call_t calls[16];
  size_t n;
  int fail_claims, fail_finish;
  unsigned claims, finishes, releases, closes;
  char released[64]; /* the last key released */
} slow_store_t;

static slow_store_t S;

static void slow_flush(uv_timer_t *t) {
  size_t i, n = S.n;
  slow_call_t calls[16];
  (void)t;
  memcpy(calls, S.calls, sizeof(calls));
  S.n = 0;
  for (i = 0; i < n; i++) {
    slow_call_t *c = &calls[i];
    rn_dedupe_answer_t a;
    if (c->kind == 1) {
      if (S.fail_claims)
        rn_dedupe_op_done(c->op, UV_EIO, 0, NULL);
      else
        S.mem->claim(S.mem, c->op, c->key, c->key_len, 300000);
    } else if (c->kind == 2) {
      a.error = c->error;
      a.body = c->body;
      a.len = c->len;
      if (S.fail_finish)
        rn_dedupe_op_done(c->op, UV_EIO, 0, NULL);
      else
        S.mem->finish(S.mem, c->op, c->key, c->key_len, 300000, &a);
    } else {
      S.mem->release(S.mem, c->op, c->key, c->key_len);
    }
  }
}

static void slow_push(rn_dedupe_op_t *op, int kind, const char *key,
                      size_t len, const rn_dedupe_answer_t *a) {
  slow_call_t *c;
  ASSERT_LT(S.n, 16);
  c = &S.calls[S.n++];
  memset(c, 0, sizeof(*c));
  c->op = op;
  c->kind = kind;
  memcpy(c->key, key, len);
  c->key_len = len;
  if (a != NULL) {
    c->error = a->error;
    memcpy(c->body, a->body, a->len);
    c->len = a->len;
  }
  uv_timer_start(&S.timer, slow_flush, 5, 0);
}

static void slow_claim(rn_dedupe_store_t *s, rn_dedupe_op_t *op,
                       const char *key, size_t len, uint64_t window) {
  (void)s;
  (void)window;
  S.claims++;
  slow_push(op, 1, key, len, NULL);
}
static void slow_finish(rn_dedupe_store_t *s, rn_dedupe_op_t *op,
                        const char *key, size_t len, uint64_t window,
                        const rn_dedupe_answer_t *a) {
  (void)s;
  (void)window;
  S.finishes++;
  slow_push(op, 2, key, len, a);
}
static void slow_release(rn_dedupe_store_t *s, rn_dedupe_op_t *op,
                         const char *key, size_t len) {
  (void)s;
  S.releases++;
  snprintf(S.released, sizeof(S.released), "%.*s", (int)len, key);
  slow_push(op, 3, key, len, NULL);
}
static void slow_close(rn_dedupe_store_t *s) {
  (void)s;
  S.closes++;
  S.mem->close(S.mem);
  uv_close((uv_handle_t *)&S.timer, NULL);
}

static void start_slow_named(const char *id) {
  rn_server_options_t o;
  rn_loop_t *loop;
  memset(&S, 0, sizeof(S));
  rn_server_options_init(&o);
  /* the store needs the loop before the server: make it here */
  ASSERT_OK(rn_loop_new(NULL, &loop));
  ASSERT_OK(rn_dedupe_memory_new(loop, 100, &S.mem));
  uv_timer_init(rn_loop_uv(loop), &S.timer);
  S.base.claim = slow_claim;
  S.base.finish = slow_finish;
  S.base.release = slow_release;
  S.base.close = slow_close;
  S.base.id = id;
  o.dedupe.store = &S.base;
  o.codec.protocol = RN_PROTOCOL_RNP;
  o.dedupe.on = 1;
  test_server_start(&T, loop, &o);
}

/* The HELLO names the store keys live in (DEDUPE, protocol.md section
 * 9.1): the in-memory store dies with the process, so it is named by the
 * incarnation; a store that names itself (shared, as the Redis one) is
 * announced by its own id, the same on every server using it. */
static void start_slow(void) { start_slow_named(NULL); }

static void test_hello_announces_store(void) {
  rnp_client_t a;
  start_default();
  rx_open(T.uv, &a, T.port);
  ASSERT_EQ(a.frames[0].has_dedupe, 1);
  ASSERT_MEM_EQ(a.frames[0].dedupe, a.frames[0].incarnation,
                RN_RNP_DEDUPE_SIZE);
  rx_close(T.uv, &a);
  test_server_finish(&T);

  start_slow_named("shared-store-01");
  rx_open(T.uv, &a, T.port);
  ASSERT_EQ(a.frames[0].has_dedupe, 1);
  ASSERT_MEM_EQ(a.frames[0].dedupe, "shared-store-01", RN_RNP_DEDUPE_SIZE);
  ASSERT(memcmp(a.frames[0].dedupe, a.frames[0].incarnation,
                RN_RNP_DEDUPE_SIZE) != 0);
  rx_close(T.uv, &a);
  test_server_finish(&T);
}

static void test_async_store(void) {
  rnp_client_t a, b;
  const rx_frame_t *x;

  start_slow();
  rx_open(T.uv, &a, T.port);
  rx_open(T.uv, &b, T.port);
  /* a duplicate arriving during the claim waits for it, then for the
   * original: one claim, one run */
  rx_request(&a, "x", "s1", -1, 0);
  request_held(&b, "x", "s1", 1);
  test_run_for(T.uv, 20);
  ASSERT_EQ(T.nheld, 1);
  ASSERT_EQ(S.claims, 1);
  reply(0, "one");
  rx_wait_frames(T.uv, &a, 2);
  rx_wait_frames(T.uv, &b, 2);
  ASSERT_MEM_EQ(b.frames[1].payload, "one", 3);
  /* replayed from the store once it recorded it */
  test_run_for(T.uv, 20);
  ASSERT_EQ(S.finishes, 1);
  x = ask(&b, "s1");
  ASSERT_MEM_EQ(x->payload, "one", 3);
  ASSERT_EQ(S.claims, 2);

  /* a failing store: claims refused as not executed, with an event */
  S.fail_claims = 1;
  x = ask(&a, "s2");
  ASSERT_EQ(x->code, RN_RNP_ERR_OVERLOADED);
  ASSERT_EQ(x->flags, RN_RNP_NOT_EXECUTED);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_STORE], 1);
  ASSERT_EQ(T.nheld, 1);
  /* issue 15, defect 11: the failed claim is released (it may have landed
   * in the store before the failure), or the key would read "in progress"
   * for the whole window */
  test_run_for(T.uv, 20);
  ASSERT_EQ(S.releases, 1);
  ASSERT_STR_EQ(S.released, "s2");
  /* a failed finish: the reply still goes out, with an event */
  S.fail_claims = 0;
  S.fail_finish = 1;
  request_held(&a, "x", "s3", 2);
  reply(1, "three");
  rx_wait_frames(T.uv, &a, a.count + 1);
  ASSERT_MEM_EQ(a.frames[a.count - 1].payload, "three", 5);
  test_run_for(T.uv, 20);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_STORE], 2);
  S.fail_finish = 0;

  /* closing with a claim pending: the claim is given back, the close
   * waits for the store */
  rx_request(&a, "x", "s4", -1, 0);
  RUN_UNTIL(T.uv, S.n != 0, 10000);
  rn_server_close(T.server, test_server_on_closed);
  RUN_UNTIL(T.uv, T.closed > 0, 5000);
  ASSERT_EQ(S.releases, 2);
  ASSERT_EQ(S.closes, 1);
  ASSERT_EQ(T.nheld, 2);
  rx_close(T.uv, &a);
  rx_close(T.uv, &b);
  ASSERT_OK(rn_loop_free(T.loop));
}

/* Issue 15, defect 11: when the memory store could not allocate the record
 * of a finished answer, it freed the claim and forgot the key, so a
 * duplicate ran a second time. The key stays in progress instead: the
 * duplicate is told to retry later and runs nothing. */
static int fail_count;
static void *failing_malloc(size_t size) {
  (void)size;
  fail_count++;
  return NULL;
}

static void test_memory_store_keeps_key_without_memory(void) {
  rnp_client_t a;
  const rx_frame_t *x;

  start_default();
  rx_open(T.uv, &a, T.port);
  request_held(&a, "x", "m1", 1);
  rn__dedupe_memory_malloc = failing_malloc;
  reply(0, "once");
  rn__dedupe_memory_malloc = malloc;
  ASSERT_EQ(fail_count, 1);
  rx_wait_frames(T.uv, &a, 2);
  ASSERT_MEM_EQ(a.frames[1].payload, "once", 4);
  ASSERT_EQ(T.events[RN_SERVER_EVENT_STORE], 1);
  x = ask(&a, "m1");
  ASSERT_EQ(x->type, RN_RNP_ERROR);
  ASSERT_EQ(x->code, RN_RNP_ERR_IN_PROGRESS);
  ASSERT_EQ(x->flags, 0);
  ASSERT_EQ(T.nheld, 1);
  rx_close(T.uv, &a);
  test_server_finish(&T);
}

/* The memory store alone, through its interface. */
typedef struct op_result_s {
  int status;
  rn_dedupe_state_t state;
} op_result_t;

static void test_memory_store_alone(void) {
  rn_loop_t *loop;
  rn_dedupe_store_t *m;
  ASSERT_OK(rn_loop_new(NULL, &loop));
  ASSERT_EQ(rn_dedupe_memory_new(loop, 0, &m), UV_EINVAL);
  ASSERT_OK(rn_dedupe_memory_new(loop, 10, &m));
  m->close(m);
  ASSERT_OK(rn_loop_free(loop));
}

TEST_LIST_START
  TEST_ENTRY(test_hello_announces_store)
  TEST_ENTRY(test_replay_and_wait)
  TEST_ENTRY(test_errors)
  TEST_ENTRY(test_waiter_leaves)
  TEST_ENTRY(test_joined_duplicate_deadline_refused)
  TEST_ENTRY(test_capacity_never_evicts_in_window)
  TEST_ENTRY(test_window)
  TEST_ENTRY(test_async_store)
  TEST_ENTRY(test_memory_store_keeps_key_without_memory)
  TEST_ENTRY(test_memory_store_alone)
TEST_LIST_END

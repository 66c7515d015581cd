/* Redis error replies that prove nothing ran (codec/resp_errors.c, and
 * their fate in client/fate.c): a pool against a scripted RESP peer that
 * answers each request with the next reply of a script (the last one
 * repeats), and PING with PONG. docs/retry-rules.md, "Redis errors that
 * prove nothing ran". */
#include "resilnet.h"
#include "peer.h"
#include "pool_fixture.h"
#include "resp_errors.h"
#include "task.h"
#include "wait.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

static rn_loop_t *loop;
static rn_pool_t *pool;
static test_peer_t peer;
static rn_codec_t resp;
static const char *const *replies; /* the script, NULL-terminated */
static int requests;                /* requests answered (PINGs not) */
static rn_classify_t verdict;
static int classified;

static const char incr[] = "*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n";

static void script(test_peer_conn_t *c) {
  size_t pos = 0;
  rn_frame_t f;
  while (rn_codec_frame(&resp, c->in.base + pos, c->in.len - pos, &f) == 1) {
    if (test_contains(c->in.base + pos, f.size, "PING")) {
      test_peer_send(c, "+PONG\r\n", 7);
    } else {
      const char *r = replies[requests];
      if (replies[requests + 1] != NULL) requests++; /* the last repeats */
      c->frames++;
      test_peer_send(c, r, strlen(r));
    }
    pos += f.size;
  }
  rn_buf_consume(&c->in, pos);
}

static unsigned answered(void) {
  unsigned n = 0;
  int i;
  for (i = 0; i < peer.count; i++) n += peer.conns[i].frames;
  return n;
}

static rn_classify_t classify(rn_pool_t *p, const rn_failure_t *f) {
  (void)p;
  (void)f;
  classified++;
  return verdict;
}

static void start(const char *const *script_replies,
                  const char *const *not_executed, int with_classify) {
  rn_pool_options_t po;
  test_codec_init(&resp, RN_PROTOCOL_RESP);
  loop = test_loop_open();
  test_peer_start(&peer, rn_loop_uv(loop), script);
  replies = script_replies;
  requests = 0;
  classified = 0;
  verdict = RN_CLASSIFY_DEFAULT;
  test_pool_options(&po, peer.endpoint, RN_PROTOCOL_RESP);
  po.heartbeat.interval_ms = 0;
  if (with_classify) po.classify = classify;
  if (not_executed == NULL) {
    ASSERT_OK(rn_pool_new(loop, &po, &pool));
    return;
  }
  {
    /* The pool keeps a copy: the caller's list and strings are freed (and
     * overwritten) once rn_pool_new returned. */
    size_t i, n = 0;
    char **list;
    while (not_executed[n] != NULL) n++;
    list = calloc(n + 1, sizeof(*list));
    ASSERT(list != NULL);
    for (i = 0; i < n; i++) ASSERT((list[i] = strdup(not_executed[i])));
    po.retry.not_executed = (const char *const *)list;
    ASSERT_OK(rn_pool_new(loop, &po, &pool));
    for (i = 0; i < n; i++) {
      memset(list[i], 'x', strlen(list[i]));
      free(list[i]);
    }
    free(list);
  }
}

static void stop(void) {
  test_pool_close_wait(loop, pool);
  test_peer_stop(&peer);
  test_loop_close(loop);
}

/* Calls frame (not idempotent) and waits for its outcome. */
static void call(const char *frame, test_outcome_t *o) {
  memset(o, 0, sizeof(*o));
  ASSERT_OK(rn_pool_call(pool, frame, strlen(frame), NULL, test_record, o));
  RUN_UNTIL(rn_loop_uv(loop), o->fired, 5000);
}

/* The outcome was the error reply, after n attempts, maybe run or surely not
 * (a macro: a failure names the case's line). */
#define ERROR_REPLY(o, n, maybe)                                              \
  do {                                                                        \
    ASSERT_EQ((o).status, RN_EREPLY);                                         \
    ASSERT_EQ((o).attempts, (n));                                             \
    ASSERT_EQ((o).maybe_executed, (maybe));                                   \
  } while (0)

/* -LOADING twice, then +OK, to an INCR (not idempotent): two retries, and
 * the server ran it once. */
static void test_loading_then_ok(void) {
  static const char *const s[] = {"-LOADING Redis is loading\r\n",
                                  "-LOADING Redis is loading\r\n", "+OK\r\n",
                                  NULL};
  test_outcome_t o;
  rn_pool_stats_t st;
  start(s, NULL, 0);
  call(incr, &o);
  ASSERT_OK(o.status);
  ASSERT_EQ(o.attempts, 3);
  ASSERT_EQ(answered(), 3);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.retries, 2);
  ASSERT_EQ(st.not_executed, 2);
  stop();
}

/* -READONLY to every attempt: attempts run out and the error reply is the
 * answer, proven not executed. */
static void test_readonly_until_attempts_end(void) {
  static const char *const s[] = {"-READONLY You can't write\r\n", NULL};
  test_outcome_t o;
  start(s, NULL, 0);
  call(incr, &o);
  ERROR_REPLY(o, 3, 0);
  ASSERT_EQ(answered(), 3);
  ASSERT(memcmp(o.body, "-READONLY", 9) == 0);
  stop();
}

/* An ordinary error reply: answered, not retried, may have executed. */
static void test_ordinary_error(void) {
  static const char *const s[] = {"-ERR wrong number of arguments\r\n",
                                  NULL};
  test_outcome_t o;
  start(s, NULL, 0);
  call(incr, &o);
  ERROR_REPLY(o, 1, 1);
  stop();
}

/* An error to EXEC proves nothing about the commands queued before it. */
static void test_exec_error_proves_nothing(void) {
  static const char *const s[] = {"-READONLY You can't write\r\n", NULL};
  test_outcome_t o;
  start(s, NULL, 0);
  call("*1\r\n$4\r\nEXEC\r\n", &o);
  ERROR_REPLY(o, 1, 1);
  stop();
}

/* Inside a script an error may follow writes; NOSCRIPT (and BUSY) prove
 * the script never ran. */
static void test_scripts(void) {
  static const char *const s[] = {"-OOM command not allowed\r\n", NULL};
  static const char *const ns[] = {"-NOSCRIPT No matching script\r\n", NULL};
  test_outcome_t o;
  start(s, NULL, 0);
  call("*3\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\n0\r\n", &o);
  ERROR_REPLY(o, 1, 1);
  stop();
  start(ns, NULL, 0);
  call("*3\r\n$7\r\nevalsha\r\n$2\r\nab\r\n$1\r\n0\r\n", &o);
  ERROR_REPLY(o, 3, 0);
  stop();
}

/* classify can veto the retry; the reply still proves nothing ran. */
static void test_classify_veto(void) {
  static const char *const s[] = {"-LOADING Redis is loading\r\n", "+OK\r\n",
                                  NULL};
  test_outcome_t o;
  start(s, NULL, 1);
  verdict = RN_CLASSIFY_FAIL;
  call(incr, &o);
  ERROR_REPLY(o, 1, 0);
  ASSERT_EQ(classified, 1);
  stop();
}

/* retry.not_executed replaces the table: empty turns it off, a list of
 * one code makes only that code count. */
static void test_table_override(void) {
  static const char *const s[] = {"-LOADING Redis is loading\r\n", "+OK\r\n",
                                  NULL};
  static const char *const m[] = {"-MISCONF cannot persist\r\n", "+OK\r\n",
                                  NULL};
  static const char *const none[] = {NULL};
  static const char *const misconf[] = {"MISCONF", NULL};
  test_outcome_t o;
  start(s, none, 0);
  call(incr, &o);
  ERROR_REPLY(o, 1, 1);
  stop();
  start(m, misconf, 0);
  call(incr, &o);
  ASSERT_OK(o.status);
  ASSERT_EQ(o.attempts, 2);
  stop();
}

/* The reading of frames itself: codes are whole words, blob errors and
 * inline commands count, command names are case-blind. */
static void test_reading(void) {
  ASSERT(rn__resp_not_executed(NULL, incr, sizeof(incr) - 1,
                               "-ASK 3999 127.0.0.1:6381\r\n", 26));
  ASSERT(!rn__resp_not_executed(NULL, incr, sizeof(incr) - 1,
                                "-BUSYKEY exists\r\n", 17));
  ASSERT(rn__resp_not_executed(NULL, incr, sizeof(incr) - 1,
                               "!7\r\nLOADING\r\n", 13));
  ASSERT(rn__resp_not_executed(NULL, "SET k v\r\n", 9, "-NOAUTH x\r\n", 11));
  ASSERT(!rn__resp_not_executed(NULL, "*1\r\n$4\r\nexec\r\n", 14,
                                "-LOADING x\r\n", 12));
  ASSERT(rn__resp_not_executed(NULL, "*1\r\n$5\r\nFCALL\r\n", 15,
                               "-BUSY x\r\n", 9));
  ASSERT(!rn__resp_not_executed(NULL, "*1\r\n$5\r\nFCALL\r\n", 15,
                                "-NOPERM x\r\n", 11));
  ASSERT(!rn__resp_not_executed(NULL, incr, sizeof(incr) - 1, "+OK\r\n", 5));
}

TEST_LIST_START
  TEST_ENTRY(test_loading_then_ok)
  TEST_ENTRY(test_readonly_until_attempts_end)
  TEST_ENTRY(test_ordinary_error)
  TEST_ENTRY(test_exec_error_proves_nothing)
  TEST_ENTRY(test_scripts)
  TEST_ENTRY(test_classify_veto)
  TEST_ENTRY(test_table_override)
  TEST_ENTRY(test_reading)
TEST_LIST_END

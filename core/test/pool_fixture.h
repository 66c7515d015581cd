/* The pool fixture of the C tests: a loop, a pool of one line endpoint,
 * calls whose outcome a test reads back, and a close that waits.
 *
 *   rn_loop_t *loop = test_loop_open();
 *   test_pool_line_options(&po, endpoint);  (then adjust po)
 *   ASSERT_OK(rn_pool_new(loop, &po, &pool));
 *   test_call(pool, "x", 0, &o);
 *   RUN_UNTIL(rn_loop_uv(loop), o.fired, 2000);
 *   test_pool_close_wait(loop, pool);
 *   test_loop_close(loop);
 */
#ifndef RN_TEST_POOL_FIXTURE_H
#define RN_TEST_POOL_FIXTURE_H

#include "resilnet.h"

#include <stddef.h>
#include <stdint.h>

/* A new loop (rn_loop_new with its own uv loop). */
rn_loop_t *test_loop_open(void);

/* Runs the loop until nothing is left and frees it: every pool, server
 * and peer must be closed by now (rn_loop_free refuses otherwise). */
void test_loop_close(rn_loop_t *loop);

/* What became of a call. */
typedef struct {
  int fired;          /* times the callback ran: test_record checks once */
  int status;
  int maybe_executed;
  unsigned attempts;
  int order;          /* test_next_order() when it fired */
  char body[64];      /* the reply's first bytes */
  size_t body_len;
} test_outcome_t;

/* An increasing count, shared by outcomes and whatever else a test orders
 * against them (a pool's close callback, say). */
int test_next_order(void);

/* The rn_call_cb of every test_call: data is a test_outcome_t. */
void test_record(rn_pool_t *p, void *data, const rn_result_t *r);

/* A hold that must be granted: test_on_granted (an rn_hold_cb, data a
 * test_granted_t) checks its status and keeps it. */
typedef struct {
  int fired;
  rn_hold_t *hold;
} test_granted_t;
void test_on_granted(rn_pool_t *pool, void *data, rn_hold_t *hold,
                     int status);

/* Calls body (encoded by the pool's codec) with its own timeout (ms; 0:
 * the pool's) into *o, and checks the header's promise that the callback
 * has not run before rn_pool_call returned. */
void test_call(rn_pool_t *pool, const char *body, uint64_t timeout_ms,
               test_outcome_t *o);

/* Appends "GET x" (words split at spaces) as a resp array of bulk
 * strings. */
void test_resp_command(rn_buf_t *out, const char *cmd);

/* Options of a pool of protocol on one endpoint (not copied: kept by the
 * caller until rn_pool_new), the rest the defaults. The list is the
 * fixture's: set up one pool's options at a time. */
void test_pool_options(rn_pool_options_t *po, const char *endpoint,
                       rn_protocol_t protocol);

/* Options of a pool of line protocol on endpoint (not copied: kept by the
 * caller until rn_pool_new), no heartbeat pings (the line peer would answer
 * them as calls), the rest the defaults. */
void test_pool_line_options(rn_pool_options_t *po, const char *endpoint);

/* The pool's stats, as a value. */
rn_pool_stats_t test_pool_stats(rn_pool_t *pool);

/* Sets the pool's endpoints to a, or a and b (b NULL for one). */
void test_pool_set_endpoints(rn_pool_t *pool, const char *a, const char *b);

/* Closes the pool (no drain) and runs the loop until its close callback
 * ran. */
void test_pool_close_wait(rn_loop_t *loop, rn_pool_t *pool);

#endif /* RN_TEST_POOL_FIXTURE_H */

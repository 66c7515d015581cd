/* Backoff delays: growth, cap, jitter bounds and spread, reset. */
#include "client.h"
#include "task.h"

static void test_growth_and_bounds(void) {
  rn_loop_t *loop;
  rn_backoff_options_t o = {100, 1.6, 0.2, 30000};
  rn_backoff_t b;
  double base = 100;
  int i;

  ASSERT_OK(rn_loop_new(NULL, &loop));
  ASSERT_OK(rn__backoff_check(&o));
  rn__backoff_init(&b, &o);
  for (i = 0; i < 200; i++) {
    uint64_t d = rn__backoff_next(&b, loop);
    double lo = base * 0.8, hi = base * 1.2;
    if (hi > 30000) hi = 30000;
    ASSERT_GE((double)d, lo - 1);
    ASSERT_LE((double)d, hi + 1);
    base = base * 1.6 > 30000 ? 30000 : base * 1.6;
  }
  rn__backoff_reset(&b);
  ASSERT_LE(rn__backoff_next(&b, loop), 121);
  ASSERT_OK(rn_loop_free(loop));
}

/* Jitter spreads clients: 1000 first delays cover most of the allowed band
 * instead of piling up on one value. */
static void test_jitter_spreads(void) {
  rn_loop_t *loop;
  rn_backoff_options_t o = {1000, 2, 0.5, 60000};
  int buckets[10] = {0};
  int i;

  ASSERT_OK(rn_loop_new(NULL, &loop));
  for (i = 0; i < 1000; i++) {
    rn_backoff_t b;
    uint64_t d;
    rn__backoff_init(&b, &o);
    d = rn__backoff_next(&b, loop);
    ASSERT_GE(d, 500);
    ASSERT_LE(d, 1500);
    buckets[d >= 1500 ? 9 : (d - 500) / 100]++;
  }
  for (i = 0; i < 10; i++) ASSERT_GT(buckets[i], 40); /* ~100 expected */
  ASSERT_OK(rn_loop_free(loop));
}

static void test_bad_options(void) {
  rn_backoff_options_t o = {100, 1.6, 0.2, 30000};
  o.initial_ms = 0;
  ASSERT_EQ(rn__backoff_check(&o), UV_EINVAL);
  o.initial_ms = 100;
  o.multiplier = 0.5;
  ASSERT_EQ(rn__backoff_check(&o), UV_EINVAL);
  o.multiplier = 1.6;
  o.jitter = 1.5;
  ASSERT_EQ(rn__backoff_check(&o), UV_EINVAL);
  o.jitter = 0.2;
  o.max_ms = 50;
  ASSERT_EQ(rn__backoff_check(&o), UV_EINVAL);
}

TEST_LIST_START
  TEST_ENTRY(test_growth_and_bounds)
  TEST_ENTRY(test_jitter_spreads)
  TEST_ENTRY(test_bad_options)
TEST_LIST_END

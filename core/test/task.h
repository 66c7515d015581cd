/* Minimal test harness in libuv's manner: each test file is its own program,
 * run by CTest with a timeout; a failed assertion prints where and aborts. */
#ifndef RN_TEST_TASK_H
#define RN_TEST_TASK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>

#define ASSERT(expr)                                                          \
  do {                                                                        \
    if (!(expr)) {                                                            \
      fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__,    \
              #expr);                                                         \
      abort();                                                                \
    }                                                                         \
  } while (0)

#define ASSERT_BASE_(a, op, b, type, fmt)                                     \
  do {                                                                        \
    type a_ = (type)(a);                                                      \
    type b_ = (type)(b);                                                      \
    if (!(a_ op b_)) {                                                        \
      fprintf(stderr, "%s:%d: assertion failed: %s %s %s (%" fmt " vs %" fmt  \
              ")\n", __FILE__, __LINE__, #a, #op, #b, a_, b_);                \
      abort();                                                                \
    }                                                                         \
  } while (0)

#define ASSERT_EQ(a, b) ASSERT_BASE_(a, ==, b, int64_t, PRId64)
#define ASSERT_NE(a, b) ASSERT_BASE_(a, !=, b, int64_t, PRId64)
#define ASSERT_LT(a, b) ASSERT_BASE_(a, <, b, int64_t, PRId64)
#define ASSERT_LE(a, b) ASSERT_BASE_(a, <=, b, int64_t, PRId64)
#define ASSERT_GT(a, b) ASSERT_BASE_(a, >, b, int64_t, PRId64)
#define ASSERT_GE(a, b) ASSERT_BASE_(a, >=, b, int64_t, PRId64)
#define ASSERT_OK(a) ASSERT_EQ(a, 0)

#define ASSERT_MEM_EQ(a, b, n)                                                \
  do {                                                                        \
    if (memcmp((a), (b), (n)) != 0) {                                         \
      fprintf(stderr, "%s:%d: memory differs: %s vs %s\n", __FILE__,          \
              __LINE__, #a, #b);                                              \
      abort();                                                                \
    }                                                                         \
  } while (0)

#define ASSERT_STR_EQ(a, b)                                                   \
  do {                                                                        \
    const char *a_ = (a), *b_ = (b);                                          \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                    \
      fprintf(stderr, "%s:%d: strings differ: \"%s\" vs \"%s\"\n", __FILE__,  \
              __LINE__, a_ ? a_ : "(null)", b_ ? b_ : "(null)");              \
      abort();                                                                \
    }                                                                         \
  } while (0)

/* Every test ends by proving its loop has no handle left open. */
#define ASSERT_LOOP_CLOSES(uvloop)                                            \
  do {                                                                        \
    uv_run((uvloop), UV_RUN_DEFAULT);                                         \
    ASSERT_EQ(uv_loop_close(uvloop), 0);                                      \
  } while (0)

#define TEST_RUN(fn)                                                          \
  do {                                                                        \
    fprintf(stderr, "-- %s\n", #fn);                                          \
    fn();                                                                     \
  } while (0)

#endif /* RN_TEST_TASK_H */

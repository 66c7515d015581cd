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

/* Each test file ends with the list of its cases, in libuv's manner
 * (test/test-list.h):
 *
 *   TEST_LIST_START
 *     TEST_ENTRY(test_one)
 *     TEST_ENTRY_TIMEOUT(test_slow, 60)
 *   TEST_LIST_END
 *
 * and the program runs the case named by its argument (CTest registers
 * each case as a test of its own, core.<program>.<case>, by reading these
 * lines: one entry a line). Without an argument it runs every case in
 * order; "--list" prints their names. The timeout is in seconds, for CTest
 * only (cmake/ResilnetTests.cmake); an entry without one gets the default
 * (RESILNET_C_TEST_TIMEOUT). */
typedef struct {
  const char *name;
  void (*fn)(void);
} test_entry_t;

#define TEST_LIST_START static const test_entry_t test_list_[] = {
#define TEST_ENTRY(fn) {#fn, fn},
#define TEST_ENTRY_TIMEOUT(fn, seconds) {#fn, fn},
#define TEST_LIST_END                                                         \
  {NULL, NULL}};                                                              \
  int main(int argc, char **argv) {                                           \
    return test_main_(test_list_, argc, argv);                                \
  }

/* Runs the library's common paths once (warmup.c): the program runs under
 * valgrind when RN_TEST_WARMUP is set, and its case should meet warm
 * code, as it did after other cases in one process. */
void test_warmup(void);

static inline int test_main_(const test_entry_t *list, int argc,
                             char **argv) {
  const test_entry_t *t;
  if (argc > 1 && strcmp(argv[1], "--list") == 0) {
    for (t = list; t->name != NULL; t++) printf("%s\n", t->name);
    return 0;
  }
  if (getenv("RN_TEST_WARMUP") != NULL) test_warmup();
  for (t = list; t->name != NULL; t++) {
    if (argc > 1 && strcmp(argv[1], t->name) != 0) continue;
    fprintf(stderr, "-- %s\n", t->name);
    t->fn();
    if (argc > 1) return 0;
  }
  if (argc > 1) {
    fprintf(stderr, "%s: no test case named %s\n", argv[0], argv[1]);
    return 2;
  }
  return 0;
}

#endif /* RN_TEST_TASK_H */

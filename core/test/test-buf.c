#include "resilnet.h"
#include "task.h"

#include <stdint.h>

/* Under AddressSanitizer a huge allocation aborts unless told to fail like
 * malloc does; test_reserve needs the ordinary failure. Unused otherwise. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "allocator_may_return_null=1";
}

static void test_append_consume(void) {
  rn_buf_t b;

  rn_buf_init(&b);
  ASSERT(b.base == NULL);
  ASSERT_EQ(b.len, 0);
  ASSERT_OK(rn_buf_append(&b, NULL, 0)); /* nothing to copy, no alloc */
  ASSERT(b.base == NULL);
  ASSERT_OK(rn_buf_append(&b, "hello ", 6));
  ASSERT_OK(rn_buf_append(&b, "world", 5));
  ASSERT_EQ(b.len, 11);
  ASSERT_MEM_EQ(b.base, "hello world", 11);

  rn_buf_consume(&b, 6); /* the rest moves to the front */
  ASSERT_EQ(b.len, 5);
  ASSERT_MEM_EQ(b.base, "world", 5);
  rn_buf_consume(&b, 0);
  ASSERT_EQ(b.len, 5);
  rn_buf_consume(&b, 5);
  ASSERT_EQ(b.len, 0);
  ASSERT_OK(rn_buf_append(&b, "ab", 2));
  rn_buf_consume(&b, 100); /* more than held: empties, no underflow */
  ASSERT_EQ(b.len, 0);

  rn_buf_free(&b);
  ASSERT(b.base == NULL);
  ASSERT_EQ(b.cap, 0);
  rn_buf_free(&b); /* twice is harmless */
}

/* Byte-at-a-time appends must not realloc per byte: count the changes of
 * capacity and check the content survived every move. */
static void test_geometric_growth(void) {
  rn_buf_t b;
  size_t i, grows = 0, cap = 0;

  rn_buf_init(&b);
  for (i = 0; i < 100000; i++) {
    char c = (char)('a' + i % 26);
    ASSERT_OK(rn_buf_append(&b, &c, 1));
    if (b.cap != cap) {
      ASSERT_GE(b.cap, cap * 2);
      cap = b.cap;
      grows++;
    }
  }
  ASSERT_LE(grows, 20);
  ASSERT_GE(b.cap, b.len);
  for (i = 0; i < b.len; i++)
    ASSERT_EQ(b.base[i], 'a' + (int)(i % 26));
  rn_buf_free(&b);
}

static void test_reserve(void) {
  rn_buf_t b;
  char *base;

  rn_buf_init(&b);
  ASSERT_OK(rn_buf_reserve(&b, 1000));
  ASSERT_GE(b.cap, 1000);
  ASSERT_EQ(b.len, 0);
  base = b.base;
  ASSERT_OK(rn_buf_append(&b, "x", 1));
  ASSERT(b.base == base); /* reserved room is used without realloc */
  ASSERT_OK(rn_buf_reserve(&b, 0));

  /* len + extra would wrap: refused, buffer unchanged. */
  ASSERT_EQ(rn_buf_reserve(&b, SIZE_MAX), UV_ENOMEM);
  ASSERT_EQ(rn_buf_append(&b, "y", SIZE_MAX), UV_ENOMEM);
  ASSERT_EQ(b.len, 1);
  ASSERT(b.base == base);
  /* Fits in size_t but not in memory. */
  ASSERT_EQ(rn_buf_reserve(&b, SIZE_MAX / 2), UV_ENOMEM);
  ASSERT_EQ(b.len, 1);
  ASSERT_EQ(b.base[0], 'x');
  rn_buf_free(&b);
}

TEST_LIST_START
  TEST_ENTRY(test_append_consume)
  TEST_ENTRY(test_geometric_growth)
  TEST_ENTRY(test_reserve)
TEST_LIST_END

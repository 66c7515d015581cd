#include "resilnet.h"
#include "task.h"

static void init_line(rn_codec_t *c, const char *delim, size_t max_frame) {
  rn_codec_options_t o;

  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_LINE;
  o.delimiter = delim;
  o.max_frame = max_frame;
  ASSERT_OK(rn_codec_init(c, &o));
}

/* The same frame through one scan, a byte at a time: the same answers. */
static void check_scan(const rn_codec_t *c, const char *data, size_t size,
                       size_t body_len) {
  rn_frame_scan_t scan;
  rn_frame_t f;
  size_t n;

  memset(&scan, 0, sizeof(scan));
  for (n = 0; n < size; n++) {
    ASSERT_EQ(rn_codec_scan(c, &scan, data, n, &f), 0);
    ASSERT_GT(f.size, n);
  }
  ASSERT_EQ(rn_codec_scan(c, &scan, data, size, &f), 1);
  ASSERT_EQ(f.size, size);
  ASSERT_EQ(f.body_len, body_len);
  ASSERT_EQ(scan.done, 0);
}

static void check_splits(const rn_codec_t *c, const char *data, size_t size,
                         size_t body_len) {
  rn_frame_t f;
  size_t n;

  for (n = 0; n < size; n++) {
    ASSERT_EQ(rn_codec_frame(c, data, n, &f), 0);
    ASSERT_GT(f.size, n);
  }
  ASSERT_EQ(rn_codec_frame(c, data, size, &f), 1);
  ASSERT_EQ(f.size, size);
  ASSERT_EQ(f.body_offset, 0);
  ASSERT_EQ(f.body_len, body_len);
  ASSERT_EQ(f.flags, 0);
  check_scan(c, data, size, body_len);
}

static void test_init(void) {
  rn_codec_options_t o;
  rn_codec_t c;

  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_LINE;
  ASSERT_OK(rn_codec_init(&c, &o));
  ASSERT_EQ(c.delimiter_len, 1);
  ASSERT_EQ(c.delimiter[0], '\n');
  ASSERT_STR_EQ(c.type->name, "line");
  o.delimiter = "";
  ASSERT_EQ(rn_codec_init(&c, &o), UV_EINVAL);
  o.delimiter = "0123456789abcdef"; /* 16: the most allowed */
  ASSERT_OK(rn_codec_init(&c, &o));
  ASSERT_EQ(c.delimiter_len, 16);
  o.delimiter = "0123456789abcdefg";
  ASSERT_EQ(rn_codec_init(&c, &o), UV_EINVAL);
  o.delimiter = "\r\n";
  o.max_frame = 1;
  ASSERT_EQ(rn_codec_init(&c, &o), UV_EINVAL);
  o.max_frame = 2;
  ASSERT_OK(rn_codec_init(&c, &o));
}

static void test_frames(void) {
  rn_codec_t c;
  rn_frame_t f;
  const char *two = "first\nsecond\n";

  init_line(&c, NULL, 0);
  check_splits(&c, "hello\n", 6, 5);
  check_splits(&c, "\n", 1, 0);
  ASSERT_EQ(rn_codec_frame(&c, two, strlen(two), &f), 1);
  ASSERT_EQ(f.size, 6);
  ASSERT_EQ(f.body_len, 5);
  ASSERT_EQ(rn_codec_frame(&c, two + 6, strlen(two) - 6, &f), 1);
  ASSERT_EQ(f.body_len, 6);
  /* A CR is body with the default delimiter. */
  check_splits(&c, "a\r\n", 3, 2);

  init_line(&c, "\r\n", 0);
  check_splits(&c, "PING\r\n", 6, 4);
  check_splits(&c, "a\rb\nc\r\n", 7, 5);
  check_splits(&c, "\r\r\r\n", 4, 2);

  init_line(&c, "--END--", 0);
  check_splits(&c, "x--EN-y---END--", 15, 8);
  check_splits(&c, "--END--", 7, 0);
  /* Overlapping candidates: "----END--" holds the delimiter at 2. */
  check_splits(&c, "----END--", 9, 2);

  init_line(&c, "aab", 0);
  check_splits(&c, "aaaab", 5, 2);
}

/* No delimiter within max_frame bytes: refused once max_frame bytes are
 * there, not later; a frame of exactly max_frame bytes passes. */
static void test_oversized(void) {
  rn_codec_t c;
  rn_frame_t f;

  init_line(&c, "\r\n", 8);
  ASSERT_EQ(rn_codec_frame(&c, "abcdef\r\n", 8, &f), 1); /* exactly max */
  ASSERT_EQ(f.body_len, 6);
  ASSERT_EQ(rn_codec_frame(&c, "abcdefg", 7, &f), 0);
  ASSERT_EQ(rn_codec_frame(&c, "abcdefg\r", 8, &f), RN_EFRAMESIZE);
  ASSERT_EQ(rn_codec_frame(&c, "abcdefg\r\n", 9, &f), RN_EFRAMESIZE);
  ASSERT_EQ(rn_codec_frame(&c, "abcdefghijklmnop", 16, &f), RN_EFRAMESIZE);
  /* A delimiter past the limit does not count, an early one does. */
  ASSERT_EQ(rn_codec_frame(&c, "abcdefghij\r\n", 12, &f), RN_EFRAMESIZE);
  ASSERT_EQ(rn_codec_frame(&c, "ab\r\ncdefghijklmn", 16, &f), 1);
  ASSERT_EQ(f.size, 4);
}

static void test_encode(void) {
  rn_codec_t c;
  rn_buf_t b;
  rn_frame_t f;

  rn_buf_init(&b);
  init_line(&c, "\r\n", 10);
  ASSERT_OK(rn_codec_encode(&c, &b, "hello", 5));
  ASSERT_EQ(b.len, 7);
  ASSERT_MEM_EQ(b.base, "hello\r\n", 7);
  ASSERT_EQ(rn_codec_frame(&c, b.base, b.len, &f), 1);
  ASSERT_EQ(f.body_len, 5);
  ASSERT_OK(rn_codec_encode(&c, &b, "", 0));
  ASSERT_OK(rn_codec_encode(&c, &b, "a\rb\nc", 5)); /* parts are fine */
  ASSERT_EQ(b.len, 7 + 2 + 7);

  /* Bodies the receiver would cut short are refused; nothing appended. */
  ASSERT_EQ(rn_codec_encode(&c, &b, "a\r\nb", 4), UV_EINVAL);
  ASSERT_EQ(b.len, 16);
  /* "ab\r" + "\r\n": the first CRLF is the appended one, so it is fine. */
  ASSERT_OK(rn_codec_encode(&c, &b, "ab\r", 3));
  ASSERT_EQ(rn_codec_frame(&c, b.base + 16, 5, &f), 1);
  ASSERT_EQ(f.body_len, 3);
  ASSERT_OK(rn_codec_encode(&c, &b, "12345678", 8)); /* exactly max */
  ASSERT_EQ(rn_codec_encode(&c, &b, "123456789", 9), RN_EFRAMESIZE);
  ASSERT_EQ(b.len, 31);

  /* With delimiter "aa", body "xa" would end at "xa|a". */
  init_line(&c, "aa", 0);
  ASSERT_EQ(rn_codec_encode(&c, &b, "xa", 2), UV_EINVAL);
  ASSERT_OK(rn_codec_encode(&c, &b, "ax", 2));
  init_line(&c, "abab", 0);
  ASSERT_EQ(rn_codec_encode(&c, &b, "zab", 3), UV_EINVAL);
  ASSERT_OK(rn_codec_encode(&c, &b, "zaba", 4));
  ASSERT_EQ(rn_codec_frame(&c, b.base + b.len - 8, 8, &f), 1);
  ASSERT_EQ(f.body_len, 4);
  rn_buf_free(&b);
}

/* A long body arrives in pieces; the frame appears only with its end. */
static void test_big(void) {
  static char data[200001];
  rn_codec_t c;
  rn_frame_t f;
  size_t n;

  memset(data, 'x', sizeof(data) - 1);
  data[sizeof(data) - 1] = '\n';
  init_line(&c, NULL, sizeof(data));
  for (n = 0; n < sizeof(data); n += 4093)
    ASSERT_EQ(rn_codec_frame(&c, data, n, &f), 0);
  ASSERT_EQ(rn_codec_frame(&c, data, sizeof(data), &f), 1);
  ASSERT_EQ(f.body_len, sizeof(data) - 1);
  init_line(&c, NULL, sizeof(data) - 1);
  ASSERT_EQ(rn_codec_frame(&c, data, sizeof(data), &f), RN_EFRAMESIZE);
}

/* Regression (issue 15): a line read a few bytes at a time was searched
 * from its start on every read, O(size^2). The scan searches each byte
 * once: bytes it has searched are spoilt with delimiter bytes after each
 * read, which a search from the start would find. A delimiter split
 * across reads is still found. */
static void test_scan_dribbled_line_resumes(void) {
  static char data[30001];
  rn_frame_scan_t scan;
  rn_codec_t c;
  rn_frame_t f;
  size_t n, spoilt = 0;

  memset(data, 'x', sizeof(data));
  memcpy(data + sizeof(data) - 2, "\r\n", 2);
  init_line(&c, "\r\n", 0);
  memset(&scan, 0, sizeof(scan));
  for (n = 0; n < sizeof(data) - 1; n += 3) {
    ASSERT_EQ(rn_codec_scan(&c, &scan, data, n, &f), 0);
    ASSERT_LE(scan.done, n);
    ASSERT_GE(scan.done + 1, n);
    for (; spoilt + 1 < scan.done; spoilt += 2) memcpy(data + spoilt, "\r\n", 2);
  }
  ASSERT_EQ(rn_codec_scan(&c, &scan, data, sizeof(data) - 1, &f), 0);
  ASSERT_EQ(rn_codec_scan(&c, &scan, data, sizeof(data), &f), 1);
  ASSERT_EQ(f.size, sizeof(data));
  ASSERT_EQ(f.body_len, sizeof(data) - 2);
}

TEST_LIST_START
  TEST_ENTRY(test_init)
  TEST_ENTRY(test_frames)
  TEST_ENTRY(test_oversized)
  TEST_ENTRY(test_encode)
  TEST_ENTRY(test_big)
  TEST_ENTRY(test_scan_dribbled_line_resumes)
TEST_LIST_END

#include "resilnet.h"
#include "task.h"

static void init_length(rn_codec_t *c, unsigned bytes, size_t max_frame) {
  rn_codec_options_t o;

  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_LENGTH;
  o.length_bytes = bytes;
  o.max_frame = max_frame;
  ASSERT_OK(rn_codec_init(c, &o));
}

/* Every proper prefix of a frame needs more; the whole frame, alone or with
 * bytes of the next one behind it, is found with the expected extent. */
static void check_splits(const rn_codec_t *c, const char *data, size_t size,
                         size_t body_offset, size_t body_len) {
  rn_frame_t f;
  size_t n;

  for (n = 0; n < size; n++) {
    ASSERT_EQ(rn_codec_frame(c, data, n, &f), 0);
    ASSERT_GT(f.size, n); /* the hint never claims less than is there */
    ASSERT_LE(f.size, size);
  }
  ASSERT_EQ(rn_codec_frame(c, data, size, &f), 1);
  ASSERT_EQ(f.size, size);
  ASSERT_EQ(f.body_offset, body_offset);
  ASSERT_EQ(f.body_len, body_len);
  ASSERT_EQ(f.flags, 0);
}

static void test_init(void) {
  rn_codec_options_t o;
  rn_codec_t c;
  rn_protocol_t p;

  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_LENGTH;
  ASSERT_OK(rn_codec_init(&c, &o));
  ASSERT_EQ(c.length_bytes, 4); /* defaults */
  ASSERT_EQ(c.max_frame, RN_DEFAULT_MAX_FRAME);
  ASSERT_STR_EQ(c.type->name, "length");
  o.length_bytes = 3;
  ASSERT_EQ(rn_codec_init(&c, &o), UV_EINVAL);
  o.length_bytes = 16;
  ASSERT_EQ(rn_codec_init(&c, &o), UV_EINVAL);
  o.length_bytes = 8;
  o.max_frame = 7; /* cannot hold even an empty frame */
  ASSERT_EQ(rn_codec_init(&c, &o), UV_EINVAL);
  o.max_frame = 8;
  ASSERT_OK(rn_codec_init(&c, &o));
  o.protocol = (rn_protocol_t)0;
  ASSERT_EQ(rn_codec_init(&c, &o), UV_EINVAL);
  o.protocol = (rn_protocol_t)99;
  ASSERT_EQ(rn_codec_init(&c, &o), UV_EINVAL);
  ASSERT_EQ(rn_codec_init(&c, NULL), UV_EINVAL);

  ASSERT_OK(rn_protocol_parse("length", &p));
  ASSERT_EQ(p, RN_PROTOCOL_LENGTH);
  ASSERT_OK(rn_protocol_parse("line", &p));
  ASSERT_EQ(p, RN_PROTOCOL_LINE);
  ASSERT_OK(rn_protocol_parse("resp", &p));
  ASSERT_EQ(p, RN_PROTOCOL_RESP);
  ASSERT_OK(rn_protocol_parse("rnp", &p));
  ASSERT_EQ(p, RN_PROTOCOL_RNP);
  ASSERT_EQ(rn_protocol_parse("RESP", &p), UV_EINVAL);
  ASSERT_EQ(rn_protocol_parse("", &p), UV_EINVAL);
  ASSERT_EQ(rn_protocol_parse(NULL, &p), UV_EINVAL);
}

/* Known bytes on the wire for each prefix width, then encode/frame agree. */
static void test_wire_and_splits(void) {
  static const unsigned widths[] = {1, 2, 4, 8};
  static const char *const expect[] = {
      "\x05hello", "\x00\x05hello", "\x00\x00\x00\x05hello",
      "\x00\x00\x00\x00\x00\x00\x00\x05hello"};
  size_t i;

  for (i = 0; i < 4; i++) {
    rn_codec_t c;
    rn_buf_t b;
    size_t n = widths[i];

    init_length(&c, widths[i], 0);
    rn_buf_init(&b);
    ASSERT_OK(rn_codec_encode(&c, &b, "hello", 5));
    ASSERT_EQ(b.len, n + 5);
    ASSERT_MEM_EQ(b.base, expect[i], n + 5);
    check_splits(&c, b.base, b.len, n, 5);
    ASSERT_MEM_EQ(b.base + n, "hello", 5);

    /* An empty body is a frame of the prefix alone. */
    ASSERT_OK(rn_codec_encode(&c, &b, NULL, 0));
    ASSERT_EQ(b.len, 2 * n + 5);
    check_splits(&c, b.base + n + 5, n, n, 0);

    /* Two frames back to back: the first is found alone. */
    {
      rn_frame_t f;
      ASSERT_EQ(rn_codec_frame(&c, b.base, b.len, &f), 1);
      ASSERT_EQ(f.size, n + 5);
    }
    rn_buf_free(&b);
  }
}

static void test_big_body(void) {
  rn_codec_t c;
  rn_buf_t b;
  char body[70000];
  size_t i;

  for (i = 0; i < sizeof(body); i++)
    body[i] = (char)(i * 7);
  init_length(&c, 4, 0);
  rn_buf_init(&b);
  ASSERT_OK(rn_codec_encode(&c, &b, body, sizeof(body)));
  ASSERT_MEM_EQ(b.base, "\x00\x01\x11\x70", 4); /* 70000 = 0x011170 */
  check_splits(&c, b.base, b.len, 4, sizeof(body));
  ASSERT_MEM_EQ(b.base + 4, body, sizeof(body));
  rn_buf_free(&b);
}

/* The prefix alone proves a frame too large, before any body arrives. */
static void test_oversized(void) {
  rn_codec_t c;
  rn_frame_t f;
  rn_buf_t b;
  char body[300];

  memset(body, 'x', sizeof(body));
  init_length(&c, 2, 10);
  ASSERT_EQ(rn_codec_frame(&c, "\x00\x08", 2, &f), 0); /* 2 + 8 == max */
  ASSERT_EQ(rn_codec_frame(&c, "\x00\x08" "abcdefgh", 10, &f), 1);
  ASSERT_EQ(f.size, 10);
  ASSERT_EQ(rn_codec_frame(&c, "\x00\x09", 2, &f), RN_EFRAMESIZE);
  ASSERT_EQ(rn_codec_frame(&c, "\xff\xff", 2, &f), RN_EFRAMESIZE);
  ASSERT_EQ(rn_codec_frame(&c, "\x00", 1, &f), 0);

  /* 8-byte lengths near 2^64 must not wrap into a small frame. */
  init_length(&c, 8, 0);
  ASSERT_EQ(rn_codec_frame(&c, "\xff\xff\xff\xff\xff\xff\xff\xff", 8, &f),
            RN_EFRAMESIZE);
  ASSERT_EQ(rn_codec_frame(&c, "\xff\xff\xff\xff\xff\xff\xff\xf9", 8, &f),
            RN_EFRAMESIZE);
  ASSERT_EQ(rn_codec_frame(&c, "\x80\x00\x00\x00\x00\x00\x00\x00", 8, &f),
            RN_EFRAMESIZE);
  init_length(&c, 8, SIZE_MAX);
  ASSERT_EQ(rn_codec_frame(&c, "\xff\xff\xff\xff\xff\xff\xff\xff", 8, &f),
            RN_EFRAMESIZE);
  ASSERT_EQ(rn_codec_frame(&c, "\x00\x00\x00\x00\x00\x00\x00\x02", 8, &f), 0);

  /* Encoding obeys max_frame and what the prefix can express. */
  rn_buf_init(&b);
  init_length(&c, 2, 10);
  ASSERT_OK(rn_codec_encode(&c, &b, body, 8));
  ASSERT_EQ(rn_codec_encode(&c, &b, body, 9), RN_EFRAMESIZE);
  ASSERT_EQ(b.len, 10); /* nothing appended on failure */
  init_length(&c, 1, 0);
  ASSERT_OK(rn_codec_encode(&c, &b, body, 255));
  ASSERT_EQ(rn_codec_encode(&c, &b, body, 256), RN_EFRAMESIZE);
  ASSERT_EQ(b.len, 10 + 256);
  rn_buf_free(&b);
}

TEST_LIST_START
  TEST_ENTRY(test_init)
  TEST_ENTRY(test_wire_and_splits)
  TEST_ENTRY(test_big_body)
  TEST_ENTRY(test_oversized)
TEST_LIST_END

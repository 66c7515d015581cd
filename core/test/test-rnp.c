/* rnp v1 frames: rn_rnp_parse, rn_rnp_encode and the "rnp" codec, checked
 * against the wire rules of docs/protocol.md, one case per rule. */
#include "resilnet.h"
#include "task.h"

#define MAXF RN_DEFAULT_MAX_FRAME
#define BIT(tag) (1u << (tag))
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------------ */
/* Building frames from hex, so malformed ones can be written byte by byte. */

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Hex digits with spaces between bytes for reading; returns the length. */
static size_t unhex(const char *hex, char *out, size_t cap) {
  size_t n = 0;

  while (*hex) {
    int hi, lo;
    if (*hex == ' ') {
      hex++;
      continue;
    }
    hi = hexval(hex[0]);
    ASSERT(hi >= 0);
    lo = hexval(hex[1]);
    ASSERT(lo >= 0);
    ASSERT(n < cap);
    out[n++] = (char)(hi << 4 | lo);
    hex += 2;
  }
  return n;
}

/* A frame with a correct size and field length around the given fields and
 * payload (hex). Returns the frame's length. */
static size_t mk(char *out, size_t cap, unsigned type, unsigned flags,
                 uint64_t id, const char *fields, const char *payload) {
  size_t nf, np, i;
  uint32_t size;

  ASSERT(cap >= 16);
  nf = unhex(fields, out + 16, cap - 16);
  np = unhex(payload, out + 16 + nf, cap - 16 - nf);
  size = (uint32_t)(12 + nf + np);
  out[0] = (char)(size >> 24);
  out[1] = (char)(size >> 16);
  out[2] = (char)(size >> 8);
  out[3] = (char)size;
  out[4] = (char)type;
  out[5] = (char)flags;
  out[6] = (char)(nf >> 8);
  out[7] = (char)nf;
  for (i = 0; i < 8; i++)
    out[8 + i] = (char)(id >> (56 - 8 * i));
  return 16 + nf + np;
}

#define INC_HEX "00112233445566778899aabbccddeeff"

/* A valid frame is found whole, and every shorter prefix needs more. */
static void check_parses(const char *data, size_t len, rn_rnp_frame_t *f) {
  rn_rnp_frame_t g;
  size_t n;

  for (n = 0; n < len; n++)
    ASSERT_EQ(rn_rnp_parse(data, n, MAXF, &g), 0);
  ASSERT_EQ(rn_rnp_parse(data, len, MAXF, f), 1);
  ASSERT_EQ(f->size, len);
}

/* ------------------------------------------------------------------------ */

static void test_each_type(void) {
  char b[600];
  rn_rnp_frame_t f;
  size_t n;

  /* HELLO from a client, then from a server. */
  n = mk(b, sizeof(b), RN_RNP_HELLO, 0, 1, "0102 0001 0204 01000000", "");
  check_parses(b, n, &f);
  ASSERT_EQ(f.type, RN_RNP_HELLO);
  ASSERT_EQ(f.id, 1);
  ASSERT_EQ(f.present, BIT(RN_RNP_F_VERSION) | BIT(RN_RNP_F_MAX_FRAME));
  ASSERT_EQ(f.version, 1);
  ASSERT_EQ(f.max_frame, 16777216);
  ASSERT_EQ(f.payload_len, 0);
  ASSERT_EQ(f.deadline_offset, 0);

  n = mk(b, sizeof(b), RN_RNP_HELLO, 0, 1,
         "0102 0001 0204 00100000 0304 00000080 0410 " INC_HEX, "");
  check_parses(b, n, &f);
  ASSERT_EQ(f.present, BIT(RN_RNP_F_VERSION) | BIT(RN_RNP_F_MAX_FRAME) |
                           BIT(RN_RNP_F_MAX_CONCURRENT) |
                           BIT(RN_RNP_F_INCARNATION));
  ASSERT_EQ(f.max_frame, 1048576);
  ASSERT_EQ(f.max_concurrent, 128);
  ASSERT(f.incarnation == b + 16 + 16 + 2);
  ASSERT_MEM_EQ(f.incarnation, "\x00\x11\x22\x33\x44\x55\x66\x77", 8);

  /* REQUEST with everything. */
  n = mk(b, sizeof(b), RN_RNP_REQUEST, RN_RNP_IDEMPOTENT, 7,
         "0504 000003e8 0603 616263", "68656c6c6f");
  check_parses(b, n, &f);
  ASSERT_EQ(f.flags, RN_RNP_IDEMPOTENT);
  ASSERT_EQ(f.id, 7);
  ASSERT_EQ(f.deadline_ms, 1000);
  ASSERT_EQ(f.deadline_offset, 18);
  ASSERT_EQ(f.key_len, 3);
  ASSERT_MEM_EQ(f.key, "abc", 3);
  ASSERT_EQ(f.payload_len, 5);
  ASSERT(f.payload == b + n - 5);

  /* DEADLINE after KEY: the offset is where its value really is. */
  n = mk(b, sizeof(b), RN_RNP_REQUEST, 0, 8, "0601 7a 0504 00000000", "");
  check_parses(b, n, &f);
  ASSERT_EQ(f.deadline_offset, 16 + 3 + 2);
  ASSERT_EQ(f.deadline_ms, 0);

  n = mk(b, sizeof(b), RN_RNP_REPLY, 0, 7, "", "6f6b");
  check_parses(b, n, &f);
  ASSERT_EQ(f.type, RN_RNP_REPLY);
  ASSERT_EQ(f.present, 0);
  ASSERT_EQ(f.payload_len, 2);

  /* ERROR: the code is split off; payload is the message. */
  n = mk(b, sizeof(b), RN_RNP_ERROR, RN_RNP_NOT_EXECUTED, 9, "0704 000000fa",
         "0002 62757379");
  check_parses(b, n, &f);
  ASSERT_EQ(f.error_code, RN_RNP_ERR_OVERLOADED);
  ASSERT_EQ(f.flags, RN_RNP_NOT_EXECUTED);
  ASSERT_EQ(f.retry_after_ms, 250);
  ASSERT_EQ(f.payload_len, 4);
  ASSERT_MEM_EQ(f.payload, "busy", 4);
  ASSERT(f.payload == b + n - 4);

  /* The shortest ERROR: a code and no message; unknown codes are fine. */
  n = mk(b, sizeof(b), RN_RNP_ERROR, 0, 0, "", "ffff");
  check_parses(b, n, &f);
  ASSERT_EQ(f.error_code, 65535);
  ASSERT_EQ(f.payload_len, 0);

  n = mk(b, sizeof(b), RN_RNP_PING, 0, 3, "", "01020304");
  check_parses(b, n, &f);
  ASSERT_EQ(f.payload_len, 4);
  n = mk(b, sizeof(b), RN_RNP_PONG, 0, 3, "", "");
  check_parses(b, n, &f);
  ASSERT_EQ(f.type, RN_RNP_PONG);

  n = mk(b, sizeof(b), RN_RNP_GOAWAY, 0, 41, "0704 00000bb8", "62796521");
  check_parses(b, n, &f);
  ASSERT_EQ(f.id, 41);
  ASSERT_EQ(f.retry_after_ms, 3000);
  ASSERT_MEM_EQ(f.payload, "bye!", 4);

  /* Boundaries that are still valid. */
  n = mk(b, sizeof(b), RN_RNP_HELLO, 0, 1, "0102 ffff 0204 00000010", "");
  check_parses(b, n, &f);
  ASSERT_EQ(f.version, 65535);
  ASSERT_EQ(f.max_frame, 16);
  n = mk(b, sizeof(b), RN_RNP_PING, 0, UINT64_MAX, "",
         "00000000000000000000000000000000000000000000000000000000000000000000"
         "000000000000000000000000000000000000000000000000000000000000");
  ASSERT_EQ(n, 16 + 64);
  check_parses(b, n, &f);
  ASSERT_EQ(f.id, UINT64_MAX);
  ASSERT_EQ(f.payload_len, 64);
}

/* Tags 128..255 are stepped over on any type, whatever their length. */
static void test_extensions(void) {
  char b[600], fields[1200];
  rn_rnp_frame_t f;
  size_t n, i;

  n = mk(b, sizeof(b), RN_RNP_REPLY, 0, 2, "8000 ff03 010203", "");
  check_parses(b, n, &f);
  ASSERT_EQ(f.present, 0);
  ASSERT_EQ(f.payload_len, 0);

  /* An extension field whose bytes look like defined fields. */
  n = mk(b, sizeof(b), RN_RNP_REQUEST, 0, 2, "8106 050400000001 0504 00000005",
         "");
  check_parses(b, n, &f);
  ASSERT_EQ(f.present, BIT(RN_RNP_F_DEADLINE));
  ASSERT_EQ(f.deadline_ms, 5);
  ASSERT_EQ(f.deadline_offset, 16 + 8 + 2);

  /* The longest extension value; KEY at its longest. */
  strcpy(fields, "90ff");
  for (i = 0; i < 255; i++)
    strcat(fields, "aa");
  strcat(fields, " 06ff");
  for (i = 0; i < 255; i++)
    strcat(fields, "6b");
  n = mk(b, sizeof(b), RN_RNP_REQUEST, 0, 2, fields, "");
  check_parses(b, n, &f);
  ASSERT_EQ(f.key_len, 255);
  ASSERT(f.key == b + 16 + 257 + 2);
  ASSERT_EQ(f.key[254], 'k');

  /* HELLO from a later version, with a field v1 does not know. */
  n = mk(b, sizeof(b), RN_RNP_HELLO, 0, 1, "0102 0002 c002 abcd", "");
  check_parses(b, n, &f);
  ASSERT_EQ(f.version, 2);
}

/* Each rule of the wire format, broken alone. */
static void test_malformed(void) {
  static const struct {
    const char *name;
    unsigned type, flags;
    const char *fields, *payload;
  } cases[] = {
    {"type 0", 0, 0, "", ""},
    {"type 8", 8, 0, "", ""},
    {"type 255", 255, 0, "", ""},
    {"HELLO flag", RN_RNP_HELLO, 1, "0102 0001", ""},
    {"REQUEST flag 2", RN_RNP_REQUEST, 2, "", ""},
    {"REQUEST flag 0x80", RN_RNP_REQUEST, 0x81, "", ""},
    {"REPLY flag", RN_RNP_REPLY, 1, "", ""},
    {"ERROR flag 2", RN_RNP_ERROR, 2, "", "0001"},
    {"PING flag", RN_RNP_PING, 1, "", ""},
    {"PONG flag", RN_RNP_PONG, 0x40, "", ""},
    {"GOAWAY flag", RN_RNP_GOAWAY, 1, "", ""},
    {"field header cut", RN_RNP_REPLY, 0, "05", ""},
    {"field value cut", RN_RNP_REQUEST, 0, "0504 000000", ""},
    {"extension value cut", RN_RNP_REPLY, 0, "8005 00000000", ""},
    {"tag 0", RN_RNP_REPLY, 0, "0000", ""},
    {"tag 8", RN_RNP_REPLY, 0, "0800", ""},
    {"tag 127", RN_RNP_REQUEST, 0, "7f01 00", ""},
    {"VERSION short", RN_RNP_HELLO, 0, "0101 01", ""},
    {"VERSION long", RN_RNP_HELLO, 0, "0104 00000001", ""},
    {"MAX_FRAME short", RN_RNP_HELLO, 0, "0102 0001 0202 0100", ""},
    {"MAX_CONCURRENT long", RN_RNP_HELLO, 0, "0102 0001 0308 0000000000000001",
     ""},
    {"INCARNATION short", RN_RNP_HELLO, 0,
     "0102 0001 040f 00112233445566778899aabbccddee", ""},
    {"INCARNATION long", RN_RNP_HELLO, 0, "0102 0001 0411 " INC_HEX "00", ""},
    {"DEADLINE short", RN_RNP_REQUEST, 0, "0502 0001", ""},
    {"DEADLINE empty", RN_RNP_REQUEST, 0, "0500", ""},
    {"KEY empty", RN_RNP_REQUEST, 0, "0600", ""},
    {"RETRY_AFTER long", RN_RNP_GOAWAY, 0, "0705 0000000001", ""},
    {"VERSION twice", RN_RNP_HELLO, 0, "0102 0001 0102 0001", ""},
    {"DEADLINE twice", RN_RNP_REQUEST, 0, "0504 00000001 0504 00000001", ""},
    {"KEY twice", RN_RNP_REQUEST, 0, "0601 61 0504 00000001 0601 62", ""},
    {"RETRY_AFTER twice", RN_RNP_ERROR, 0, "0704 00000001 0704 00000001",
     "0001"},
    {"HELLO with DEADLINE", RN_RNP_HELLO, 0, "0102 0001 0504 00000001", ""},
    {"HELLO with RETRY_AFTER", RN_RNP_HELLO, 0, "0102 0001 0704 00000001", ""},
    {"REQUEST with VERSION", RN_RNP_REQUEST, 0, "0102 0001", ""},
    {"REQUEST with RETRY_AFTER", RN_RNP_REQUEST, 0, "0704 00000001", ""},
    {"REPLY with DEADLINE", RN_RNP_REPLY, 0, "0504 00000001", ""},
    {"ERROR with KEY", RN_RNP_ERROR, 0, "0601 61", "0001"},
    {"PING with DEADLINE", RN_RNP_PING, 0, "0504 00000001", ""},
    {"PONG with VERSION", RN_RNP_PONG, 0, "0102 0001", ""},
    {"GOAWAY with MAX_FRAME", RN_RNP_GOAWAY, 0, "0204 00000100", ""},
    {"HELLO without VERSION", RN_RNP_HELLO, 0, "0204 00000100", ""},
    {"HELLO with no fields", RN_RNP_HELLO, 0, "", ""},
    {"VERSION 0", RN_RNP_HELLO, 0, "0102 0000", ""},
    {"MAX_FRAME 15", RN_RNP_HELLO, 0, "0102 0001 0204 0000000f", ""},
    {"MAX_FRAME 0", RN_RNP_HELLO, 0, "0102 0001 0204 00000000", ""},
    {"HELLO payload", RN_RNP_HELLO, 0, "0102 0001", "00"},
    {"ERROR no payload", RN_RNP_ERROR, 0, "", ""},
    {"ERROR one byte", RN_RNP_ERROR, 0, "", "00"},
    {"PING 65 bytes", RN_RNP_PING, 0, "",
     "000000000000000000000000000000000000000000000000000000000000000000000000"
     "0000000000000000000000000000000000000000000000000000000000"},
    {"PONG 65 bytes", RN_RNP_PONG, 0, "",
     "000000000000000000000000000000000000000000000000000000000000000000000000"
     "0000000000000000000000000000000000000000000000000000000000"},
  };
  char b[600];
  rn_rnp_frame_t f;
  size_t i, n, k;

  for (i = 0; i < COUNT(cases); i++) {
    fprintf(stderr, "   %s\n", cases[i].name);
    n = mk(b, sizeof(b), cases[i].type, cases[i].flags, 1, cases[i].fields,
           cases[i].payload);
    ASSERT_EQ(rn_rnp_parse(b, n, MAXF, &f), RN_EBADFRAME);
    /* Trailing bytes of a next frame change nothing. */
    memset(b + n, 0, 16);
    ASSERT_EQ(rn_rnp_parse(b, n + 16, MAXF, &f), RN_EBADFRAME);
    /* Never more than "need more" or the same verdict before the end. */
    for (k = 0; k < n; k++) {
      int r = rn_rnp_parse(b, k, MAXF, &f);
      ASSERT(r == 0 || r == RN_EBADFRAME);
    }
  }
}

/* Lengths in the header that do not add up. */
static void test_bad_header(void) {
  char b[64];
  rn_rnp_frame_t f;
  size_t n;

  /* size below 12: judged from the size alone. */
  n = unhex("0000000b 03 00 0000 0000000000000001", b, sizeof(b));
  ASSERT_EQ(rn_rnp_parse(b, 4, MAXF, &f), RN_EBADFRAME);
  ASSERT_EQ(rn_rnp_parse(b, n, MAXF, &f), RN_EBADFRAME);
  n = unhex("00000000", b, sizeof(b));
  ASSERT_EQ(rn_rnp_parse(b, n, MAXF, &f), RN_EBADFRAME);

  /* F larger than the frame has room for: judged from the header. */
  n = unhex("0000000e 03 00 0003 0000000000000001 8000", b, sizeof(b));
  ASSERT_EQ(rn_rnp_parse(b, 16, MAXF, &f), RN_EBADFRAME);
  ASSERT_EQ(rn_rnp_parse(b, n, MAXF, &f), RN_EBADFRAME);
  n = unhex("0000000c 03 00 ffff 0000000000000001", b, sizeof(b));
  ASSERT_EQ(rn_rnp_parse(b, n, MAXF, &f), RN_EBADFRAME);
  /* F equal to the room left is fine. */
  n = unhex("0000000e 03 00 0002 0000000000000001 8000", b, sizeof(b));
  ASSERT_EQ(rn_rnp_parse(b, n, MAXF, &f), 1);

  /* A bad type is known from the header, before the body arrives. */
  n = unhex("00000100 09 00 0000 0000000000000001", b, sizeof(b));
  ASSERT_EQ(rn_rnp_parse(b, n, MAXF, &f), RN_EBADFRAME);
  n = unhex("00000100 03 01 0000 0000000000000001", b, sizeof(b));
  ASSERT_EQ(rn_rnp_parse(b, n, MAXF, &f), RN_EBADFRAME);
}

/* Oversized frames are refused from the first four bytes. */
static void test_framesize(void) {
  char b[64];
  rn_rnp_frame_t f;
  size_t n;

  n = unhex("00fffffd 03 00 0000 0000000000000001", b, sizeof(b));
  ASSERT_EQ(rn_rnp_parse(b, 4, MAXF, &f), RN_EFRAMESIZE);
  ASSERT_EQ(rn_rnp_parse(b, n, MAXF, &f), RN_EFRAMESIZE);
  ASSERT_EQ(rn_rnp_parse(b, 3, MAXF, &f), 0);
  /* 4 + size == max_frame is the largest allowed. */
  n = unhex("00fffffc 03 00 0000 0000000000000001", b, sizeof(b));
  ASSERT_EQ(rn_rnp_parse(b, n, MAXF, &f), 0);
  n = unhex("ffffffff", b, sizeof(b));
  ASSERT_EQ(rn_rnp_parse(b, n, MAXF, &f), RN_EFRAMESIZE);
  ASSERT_EQ(rn_rnp_parse(b, n, SIZE_MAX, &f), 0); /* no wrap */

  /* A small limit. */
  n = mk(b, sizeof(b), RN_RNP_REPLY, 0, 1, "", "6f6b");
  ASSERT_EQ(rn_rnp_parse(b, n, 18, &f), 1);
  ASSERT_EQ(rn_rnp_parse(b, n, 17, &f), RN_EFRAMESIZE);
  ASSERT_EQ(rn_rnp_parse(b, 4, 17, &f), RN_EFRAMESIZE);
  ASSERT_EQ(rn_rnp_parse(b, n, 0, &f), RN_EFRAMESIZE);
}

/* ------------------------------------------------------------------------ */
/* Encoding */

static void frame_init(rn_rnp_frame_t *f, unsigned type) {
  memset(f, 0, sizeof(*f));
  f->type = type;
  if (type == RN_RNP_HELLO) {
    f->present = BIT(RN_RNP_F_VERSION);
    f->version = 1;
  }
}

/* Encodes, parses back and compares every member. */
static void round_trip(const rn_rnp_frame_t *in) {
  rn_rnp_frame_t g;
  rn_buf_t b;
  size_t n;

  rn_buf_init(&b);
  ASSERT_OK(rn_buf_append(&b, "xy", 2)); /* encode appends */
  ASSERT_OK(rn_rnp_encode(&b, in, MAXF));
  ASSERT_MEM_EQ(b.base, "xy", 2);
  n = b.len - 2;
  check_parses(b.base + 2, n, &g);
  ASSERT_EQ(g.type, in->type);
  ASSERT_EQ(g.flags, in->flags);
  ASSERT_EQ(g.id, in->id);
  ASSERT_EQ(g.present, in->present);
  if (in->present & BIT(RN_RNP_F_VERSION))
    ASSERT_EQ(g.version, in->version);
  if (in->present & BIT(RN_RNP_F_MAX_FRAME))
    ASSERT_EQ(g.max_frame, in->max_frame);
  if (in->present & BIT(RN_RNP_F_MAX_CONCURRENT))
    ASSERT_EQ(g.max_concurrent, in->max_concurrent);
  if (in->present & BIT(RN_RNP_F_INCARNATION))
    ASSERT_MEM_EQ(g.incarnation, in->incarnation, RN_RNP_INCARNATION_SIZE);
  if (in->present & BIT(RN_RNP_F_DEADLINE)) {
    ASSERT_EQ(g.deadline_ms, in->deadline_ms);
    ASSERT_GE(g.deadline_offset, 18);
    ASSERT_EQ((unsigned char)b.base[2 + g.deadline_offset + 3],
              in->deadline_ms & 0xff);
  } else {
    ASSERT_EQ(g.deadline_offset, 0);
  }
  if (in->present & BIT(RN_RNP_F_KEY)) {
    ASSERT_EQ(g.key_len, in->key_len);
    ASSERT_MEM_EQ(g.key, in->key, in->key_len);
  }
  if (in->present & BIT(RN_RNP_F_RETRY_AFTER))
    ASSERT_EQ(g.retry_after_ms, in->retry_after_ms);
  if (in->type == RN_RNP_ERROR)
    ASSERT_EQ(g.error_code, in->error_code);
  ASSERT_EQ(g.payload_len, in->payload_len);
  if (in->payload_len)
    ASSERT_MEM_EQ(g.payload, in->payload, in->payload_len);
  rn_buf_free(&b);
}

static void test_round_trips(void) {
  static const char inc[RN_RNP_INCARNATION_SIZE] = "0123456789abcdef";
  char key[RN_RNP_KEY_MAX], big[70000];
  rn_rnp_frame_t f;
  unsigned t;

  memset(key, 'k', sizeof(key));
  memset(big, 'b', sizeof(big));

  /* Every type bare. */
  for (t = RN_RNP_HELLO; t <= RN_RNP_GOAWAY; t++) {
    frame_init(&f, t);
    if (t == RN_RNP_ERROR)
      f.error_code = RN_RNP_ERR_APPLICATION;
    round_trip(&f);
  }

  /* Every type with all it may carry. */
  frame_init(&f, RN_RNP_HELLO);
  f.id = 1;
  f.present |= BIT(RN_RNP_F_MAX_FRAME) | BIT(RN_RNP_F_MAX_CONCURRENT) |
               BIT(RN_RNP_F_INCARNATION);
  f.version = 65535;
  f.max_frame = UINT32_MAX;
  f.max_concurrent = 0;
  f.incarnation = inc;
  round_trip(&f);

  frame_init(&f, RN_RNP_REQUEST);
  f.flags = RN_RNP_IDEMPOTENT;
  f.id = UINT64_MAX;
  f.present = BIT(RN_RNP_F_DEADLINE) | BIT(RN_RNP_F_KEY);
  f.deadline_ms = UINT32_MAX;
  f.key = key;
  f.key_len = sizeof(key);
  f.payload = big;
  f.payload_len = sizeof(big);
  round_trip(&f);
  f.key_len = 1;
  f.present = BIT(RN_RNP_F_KEY);
  round_trip(&f);

  frame_init(&f, RN_RNP_REPLY);
  f.id = 0x0102030405060708u;
  f.payload = big;
  f.payload_len = 1;
  round_trip(&f);

  frame_init(&f, RN_RNP_ERROR);
  f.flags = RN_RNP_NOT_EXECUTED;
  f.present = BIT(RN_RNP_F_RETRY_AFTER);
  f.retry_after_ms = 100;
  f.error_code = 65535;
  f.payload = "overloaded";
  f.payload_len = 10;
  round_trip(&f);

  frame_init(&f, RN_RNP_PING);
  f.payload = big;
  f.payload_len = 64;
  round_trip(&f);
  f.type = RN_RNP_PONG;
  round_trip(&f);

  frame_init(&f, RN_RNP_GOAWAY);
  f.present = BIT(RN_RNP_F_RETRY_AFTER);
  f.payload = "draining";
  f.payload_len = 8;
  round_trip(&f);
}

/* Exact bytes: fields in tag order whatever the struct's order. */
static void test_encode_bytes(void) {
  rn_rnp_frame_t f;
  rn_buf_t b;
  char want[64];
  size_t n;

  rn_buf_init(&b);
  frame_init(&f, RN_RNP_REQUEST);
  f.flags = RN_RNP_IDEMPOTENT;
  f.id = 7;
  f.present = BIT(RN_RNP_F_KEY) | BIT(RN_RNP_F_DEADLINE);
  f.key = "abc";
  f.key_len = 3;
  f.deadline_ms = 1000;
  f.payload = "hello";
  f.payload_len = 5;
  ASSERT_OK(rn_rnp_encode(&b, &f, MAXF));
  n = unhex("0000001c 02 01 000b 0000000000000007 0504 000003e8 0603 616263 "
            "68656c6c6f", want, sizeof(want));
  ASSERT_EQ(b.len, n);
  ASSERT_MEM_EQ(b.base, want, n);
  rn_buf_free(&b);

  rn_buf_init(&b);
  frame_init(&f, RN_RNP_ERROR);
  f.error_code = RN_RNP_ERR_PROTOCOL;
  ASSERT_OK(rn_rnp_encode(&b, &f, MAXF));
  n = unhex("0000000e 04 00 0000 0000000000000000 0007", want, sizeof(want));
  ASSERT_EQ(b.len, n);
  ASSERT_MEM_EQ(b.base, want, n);
  rn_buf_free(&b);
}

/* Whatever parse refuses, encode refuses, and leaves the buffer alone. */
/* A frame of type with a payload of fits bytes is 22 bytes: max_frame 22
 * takes it, and refuses one byte more without touching b (4 bytes). */
static void fills_22(rn_buf_t *b, unsigned type, const char *payload,
                     size_t fits) {
  rn_rnp_frame_t f;
  frame_init(&f, type);
  f.payload = payload;
  f.payload_len = fits;
  ASSERT_EQ(rn_rnp_encode(b, &f, 22), 0);
  b->len = 4;
  f.payload_len = fits + 1;
  ASSERT_EQ(rn_rnp_encode(b, &f, 22), RN_EFRAMESIZE);
  ASSERT_EQ(b->len, 4);
}

static void test_encode_refuses(void) {
  static const char inc[RN_RNP_INCARNATION_SIZE] = "0123456789abcdef";
  char big[80];
  rn_rnp_frame_t f;
  rn_buf_t b;
  unsigned t;

  memset(big, 0, sizeof(big));
  rn_buf_init(&b);
  ASSERT_OK(rn_buf_append(&b, "keep", 4));

#define REFUSE(err)                                                           \
  do {                                                                        \
    ASSERT_EQ(rn_rnp_encode(&b, &f, MAXF), (err));                            \
    ASSERT_EQ(b.len, 4);                                                      \
  } while (0)

  frame_init(&f, 0);
  REFUSE(UV_EINVAL);
  frame_init(&f, 8);
  REFUSE(UV_EINVAL);

  /* Undefined flags on each type. */
  for (t = RN_RNP_HELLO; t <= RN_RNP_GOAWAY; t++) {
    frame_init(&f, t);
    f.error_code = 1;
    ASSERT_OK(rn_rnp_encode(&b, &f, MAXF));
    b.len = 4;
    f.flags = (t == RN_RNP_REQUEST || t == RN_RNP_ERROR) ? 0x02 : 0x01;
    REFUSE(UV_EINVAL);
    f.flags = 0x100;
    REFUSE(UV_EINVAL);
  }

  /* Fields a type may not carry, and bits of no field. */
  frame_init(&f, RN_RNP_HELLO);
  f.present |= BIT(RN_RNP_F_DEADLINE);
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_REQUEST);
  f.present = BIT(RN_RNP_F_RETRY_AFTER);
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_REPLY);
  f.present = BIT(RN_RNP_F_DEADLINE);
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_ERROR);
  f.present = BIT(RN_RNP_F_KEY);
  f.key = "a";
  f.key_len = 1;
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_PING);
  f.present = BIT(RN_RNP_F_VERSION);
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_PONG);
  f.present = BIT(RN_RNP_F_RETRY_AFTER);
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_GOAWAY);
  f.present = BIT(RN_RNP_F_MAX_FRAME);
  f.max_frame = 100;
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_REPLY);
  f.present = BIT(0);
  REFUSE(UV_EINVAL);
  f.present = BIT(8);
  REFUSE(UV_EINVAL);

  /* Values. */
  frame_init(&f, RN_RNP_HELLO);
  f.present = 0;
  REFUSE(UV_EINVAL); /* no VERSION */
  frame_init(&f, RN_RNP_HELLO);
  f.version = 0;
  REFUSE(UV_EINVAL);
  f.version = 65536;
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_HELLO);
  f.present |= BIT(RN_RNP_F_MAX_FRAME);
  f.max_frame = 15;
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_HELLO);
  f.present |= BIT(RN_RNP_F_INCARNATION);
  REFUSE(UV_EINVAL); /* no bytes given */
  f.incarnation = inc;
  ASSERT_OK(rn_rnp_encode(&b, &f, MAXF));
  b.len = 4;
  frame_init(&f, RN_RNP_REQUEST);
  f.present = BIT(RN_RNP_F_KEY);
  f.key = big;
  f.key_len = 0;
  REFUSE(UV_EINVAL);
  f.key_len = 256;
  REFUSE(UV_EINVAL);
  f.key = NULL;
  f.key_len = 1;
  REFUSE(UV_EINVAL);

  /* Payloads. */
  frame_init(&f, RN_RNP_HELLO);
  f.payload = big;
  f.payload_len = 1;
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_PING);
  f.payload = big;
  f.payload_len = 65;
  REFUSE(UV_EINVAL);
  f.type = RN_RNP_PONG;
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_ERROR);
  f.error_code = 65536;
  REFUSE(UV_EINVAL);
  frame_init(&f, RN_RNP_REPLY);
  f.payload = NULL;
  f.payload_len = 3;
  REFUSE(UV_EINVAL);

  /* Sizes: a REPLY of 6 bytes, or an ERROR with 4 of message, is 22. */
  fills_22(&b, RN_RNP_REPLY, big, 6);
  fills_22(&b, RN_RNP_ERROR, big, 4);
  /* A payload the u32 size cannot express, whatever max_frame says. */
  frame_init(&f, RN_RNP_REPLY);
  f.payload = big;
  f.payload_len = (size_t)UINT32_MAX;
  ASSERT_EQ(rn_rnp_encode(&b, &f, SIZE_MAX), RN_EFRAMESIZE);
  ASSERT_EQ(b.len, 4);
  ASSERT_EQ(rn_rnp_encode(NULL, &f, MAXF), UV_EINVAL);
  ASSERT_EQ(rn_rnp_encode(&b, NULL, MAXF), UV_EINVAL);
#undef REFUSE
  rn_buf_free(&b);
}

/* ------------------------------------------------------------------------ */
/* The codec */

static void init_rnp(rn_codec_t *c, size_t max_frame) {
  rn_codec_options_t o;

  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_RNP;
  o.max_frame = max_frame;
  ASSERT_OK(rn_codec_init(c, &o));
}

static void test_codec(void) {
  rn_codec_options_t o;
  rn_codec_t c;
  rn_protocol_t p;
  rn_frame_t fr;
  rn_rnp_frame_t f;
  rn_buf_t b;
  char buf[64], want[64];
  size_t n, k;

  ASSERT_OK(rn_protocol_parse("rnp", &p));
  ASSERT_EQ(p, RN_PROTOCOL_RNP);
  init_rnp(&c, 0);
  ASSERT_STR_EQ(c.type->name, "rnp");
  ASSERT_EQ(c.max_frame, RN_DEFAULT_MAX_FRAME);
  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_RNP;
  o.max_frame = 15; /* cannot hold a header */
  ASSERT_EQ(rn_codec_init(&c, &o), UV_EINVAL);
  init_rnp(&c, 16);

  /* encode: a REQUEST, id 0, a DEADLINE of 0 to be filled in. */
  init_rnp(&c, 0);
  rn_buf_init(&b);
  ASSERT_OK(rn_codec_encode(&c, &b, "hello", 5));
  n = unhex("00000017 02 00 0006 0000000000000000 0504 00000000 68656c6c6f",
            want, sizeof(want));
  ASSERT_EQ(b.len, n);
  ASSERT_MEM_EQ(b.base, want, n);
  ASSERT_EQ(rn_rnp_parse(b.base, b.len, MAXF, &f), 1);
  ASSERT_EQ(f.deadline_offset, 18);
  ASSERT_OK(rn_codec_encode(&c, &b, NULL, 0));
  ASSERT_EQ(b.len, n + 22);

  /* frame: every prefix needs more, with a hint that never overshoots. */
  for (k = 0; k < n; k++) {
    ASSERT_EQ(rn_codec_frame(&c, b.base, k, &fr), 0);
    ASSERT_GT(fr.size, k);
    ASSERT_LE(fr.size, n);
  }
  ASSERT_EQ(rn_codec_frame(&c, b.base, b.len, &fr), 1);
  ASSERT_EQ(fr.size, n);
  ASSERT_EQ(fr.body_offset, 22);
  ASSERT_EQ(fr.body_len, 5);
  ASSERT_EQ(fr.flags, 0);
  ASSERT_EQ(rn_codec_frame(&c, b.base + n, 22, &fr), 1);
  ASSERT_EQ(fr.body_len, 0);
  rn_buf_free(&b);

  /* An ERROR's body is its message. */
  n = mk(buf, sizeof(buf), RN_RNP_ERROR, 0, 5, "0704 00000001", "0001 6f6f7073");
  ASSERT_EQ(rn_codec_frame(&c, buf, n, &fr), 1);
  ASSERT_EQ(fr.flags, RN_FRAME_ERROR);
  ASSERT_EQ(fr.body_offset, 16 + 6 + 2);
  ASSERT_EQ(fr.body_len, 4);
  ASSERT_MEM_EQ(buf + fr.body_offset, "oops", 4);

  /* Errors pass through. */
  n = mk(buf, sizeof(buf), RN_RNP_REPLY, 1, 5, "", "");
  ASSERT_EQ(rn_codec_frame(&c, buf, n, &fr), RN_EBADFRAME);
  init_rnp(&c, 20);
  n = mk(buf, sizeof(buf), RN_RNP_REPLY, 0, 5, "", "0102030405");
  ASSERT_EQ(rn_codec_frame(&c, buf, 4, &fr), RN_EFRAMESIZE);
  ASSERT_EQ(rn_codec_encode(&c, &b, "12345", 5), RN_EFRAMESIZE);
  ASSERT_EQ(rn_codec_encode(&c, &b, "", 0), RN_EFRAMESIZE); /* 22 > 20 */
  ASSERT_EQ(b.len, 0);
  init_rnp(&c, 22);
  ASSERT_OK(rn_codec_encode(&c, &b, "", 0));
  ASSERT_EQ(b.len, 22);
  rn_buf_free(&b);
}

/* ------------------------------------------------------------------------ */
/* The language-neutral vectors in docs/vectors/rnp, both directions. */

#ifndef RN_RNP_VECTORS_DIR
#error "RN_RNP_VECTORS_DIR must name docs/vectors/rnp (set by CMake)"
#endif

#define VEC_KEYS 32

typedef struct {
  int line;
  size_t n;
  const char *key[VEC_KEYS];
  const char *value[VEC_KEYS];
} vec_t;

static char *read_file(const char *name) {
  char path[1024];
  FILE *fp;
  char *text;
  long size;

  snprintf(path, sizeof(path), "%s/%s", RN_RNP_VECTORS_DIR, name);
  fp = fopen(path, "rb");
  if (fp == NULL)
    fprintf(stderr, "cannot open %s\n", path);
  ASSERT(fp != NULL);
  ASSERT_OK(fseek(fp, 0, SEEK_END));
  size = ftell(fp);
  ASSERT_GT(size, 0);
  rewind(fp);
  text = malloc((size_t)size + 1);
  ASSERT(text != NULL);
  ASSERT_EQ(fread(text, 1, (size_t)size, fp), size);
  text[size] = '\0';
  fclose(fp);
  return text;
}

/* Splits `text` (modified in place) into vectors; returns how many. */
static size_t vec_split(char *text, vec_t *out, size_t cap) {
  size_t count = 0;
  int line = 0;
  char *p = text;

  while (*p) {
    char *eol = strchr(p, '\n');
    char *eq;
    if (eol != NULL)
      *eol = '\0';
    line++;
    if (*p != '#' && *p != '\0') {
      eq = strchr(p, '=');
      if (eq == NULL)
        fprintf(stderr, "vector line %d: no '='\n", line);
      ASSERT(eq != NULL);
      *eq = '\0';
      if (strcmp(p, "name") == 0) {
        ASSERT(count < cap);
        memset(&out[count], 0, sizeof(out[count]));
        out[count].line = line;
        count++;
      }
      ASSERT(count > 0); /* a key before the first name= */
      ASSERT(out[count - 1].n < VEC_KEYS);
      out[count - 1].key[out[count - 1].n] = p;
      out[count - 1].value[out[count - 1].n] = eq + 1;
      out[count - 1].n++;
    }
    if (eol == NULL)
      break;
    p = eol + 1;
  }
  return count;
}

static const char *vec_get(const vec_t *v, const char *key) {
  size_t i;

  for (i = 0; i < v->n; i++)
    if (strcmp(v->key[i], key) == 0)
      return v->value[i];
  return NULL;
}

static uint64_t vec_num(const vec_t *v, const char *key) {
  const char *s = vec_get(v, key);
  char *end;
  uint64_t n;

  ASSERT(s != NULL && *s >= '0' && *s <= '9');
  n = strtoull(s, &end, 10);
  ASSERT(*end == '\0');
  return n;
}

static const char *const type_names[] = {
    NULL, "HELLO", "REQUEST", "REPLY", "ERROR", "PING", "PONG", "GOAWAY"};

static const struct {
  const char *key;
  unsigned tag;
} field_keys[] = {
    {"version", RN_RNP_F_VERSION},
    {"max_frame", RN_RNP_F_MAX_FRAME},
    {"max_concurrent", RN_RNP_F_MAX_CONCURRENT},
    {"incarnation", RN_RNP_F_INCARNATION},
    {"deadline", RN_RNP_F_DEADLINE},
    {"key", RN_RNP_F_KEY},
    {"retry_after", RN_RNP_F_RETRY_AFTER},
};

/* The frame a valid vector describes; byte fields decoded into `store`. */
static void vec_frame(const vec_t *v, rn_rnp_frame_t *f, char *store,
                      size_t cap) {
  const char *s;
  size_t i, used = 0;

  memset(f, 0, sizeof(*f));
  s = vec_get(v, "type");
  ASSERT(s != NULL);
  for (i = 1; i < COUNT(type_names); i++)
    if (strcmp(s, type_names[i]) == 0)
      f->type = (unsigned)i;
  ASSERT(f->type != 0);
  f->flags = (unsigned)vec_num(v, "flags");
  f->id = vec_num(v, "id");
  for (i = 0; i < COUNT(field_keys); i++)
    if (vec_get(v, field_keys[i].key) != NULL)
      f->present |= BIT(field_keys[i].tag);
  if (f->present & BIT(RN_RNP_F_VERSION))
    f->version = (unsigned)vec_num(v, "version");
  if (f->present & BIT(RN_RNP_F_MAX_FRAME))
    f->max_frame = (uint32_t)vec_num(v, "max_frame");
  if (f->present & BIT(RN_RNP_F_MAX_CONCURRENT))
    f->max_concurrent = (uint32_t)vec_num(v, "max_concurrent");
  if (f->present & BIT(RN_RNP_F_DEADLINE)) {
    f->deadline_ms = (uint32_t)vec_num(v, "deadline");
    f->deadline_offset = (size_t)vec_num(v, "deadline_offset");
  }
  if (f->present & BIT(RN_RNP_F_RETRY_AFTER))
    f->retry_after_ms = (uint32_t)vec_num(v, "retry_after");
  if (f->present & BIT(RN_RNP_F_INCARNATION)) {
    f->incarnation = store + used;
    ASSERT_EQ(unhex(vec_get(v, "incarnation"), store + used, cap - used),
              RN_RNP_INCARNATION_SIZE);
    used += RN_RNP_INCARNATION_SIZE;
  }
  if (f->present & BIT(RN_RNP_F_KEY)) {
    f->key = store + used;
    f->key_len = unhex(vec_get(v, "key"), store + used, cap - used);
    used += f->key_len;
  }
  s = vec_get(v, "auth");
  if (s != NULL) {
    f->auth = store + used;
    f->auth_len = unhex(s, store + used, cap - used);
    used += f->auth_len;
  }
  s = vec_get(v, "dedupe");
  if (s != NULL) {
    f->dedupe = store + used;
    ASSERT_EQ(unhex(s, store + used, cap - used), RN_RNP_DEDUPE_SIZE);
    used += RN_RNP_DEDUPE_SIZE;
  }
  if (f->type == RN_RNP_ERROR)
    f->error_code = (unsigned)vec_num(v, "code");
  else
    ASSERT(vec_get(v, "code") == NULL);
  s = vec_get(v, "payload");
  ASSERT(s != NULL);
  f->payload = store + used;
  f->payload_len = unhex(s, store + used, cap - used);
}

static void test_vectors_valid(void) {
  static vec_t vecs[256];
  static char store[4096], bytes[4096];
  unsigned types = 0, field_uses[8] = {0};
  char *text = read_file("valid.txt");
  size_t count, i, n, t;
  rn_rnp_frame_t want, got;
  rn_buf_t b;

  count = vec_split(text, vecs, COUNT(vecs));
  for (i = 0; i < count; i++) {
    const vec_t *v = &vecs[i];
    const char *enc = vec_get(v, "encode");

    fprintf(stderr, "   %s (line %d)\n", vec_get(v, "name"), v->line);
    ASSERT(vec_get(v, "hex") != NULL);
    n = unhex(vec_get(v, "hex"), bytes, sizeof(bytes));
    vec_frame(v, &want, store, sizeof(store));
    types |= BIT(want.type);
    for (t = 1; t < 8; t++)
      if (want.present & BIT(t))
        field_uses[t]++;

    /* bytes -> values */
    check_parses(bytes, n, &got);
    ASSERT_EQ(got.type, want.type);
    ASSERT_EQ(got.flags, want.flags);
    ASSERT_EQ(got.id, want.id);
    ASSERT_EQ(got.present, want.present);
    ASSERT_EQ(got.version, want.version);
    ASSERT_EQ(got.max_frame, want.max_frame);
    ASSERT_EQ(got.max_concurrent, want.max_concurrent);
    ASSERT_EQ(got.deadline_ms, want.deadline_ms);
    ASSERT_EQ(got.deadline_offset, want.deadline_offset);
    ASSERT_EQ(got.retry_after_ms, want.retry_after_ms);
    if (want.incarnation != NULL)
      ASSERT_MEM_EQ(got.incarnation, want.incarnation,
                    RN_RNP_INCARNATION_SIZE);
    ASSERT_EQ(got.key_len, want.key_len);
    if (want.key_len)
      ASSERT_MEM_EQ(got.key, want.key, want.key_len);
    ASSERT_EQ(got.auth_len, want.auth_len);
    if (want.auth_len)
      ASSERT_MEM_EQ(got.auth, want.auth, want.auth_len);
    ASSERT_EQ(got.dedupe != NULL, want.dedupe != NULL);
    if (want.dedupe != NULL)
      ASSERT_MEM_EQ(got.dedupe, want.dedupe, RN_RNP_DEDUPE_SIZE);
    ASSERT_EQ(got.error_code, want.error_code);
    ASSERT_EQ(got.payload_len, want.payload_len);
    if (want.payload_len)
      ASSERT_MEM_EQ(got.payload, want.payload, want.payload_len);

    /* values -> bytes */
    if (enc != NULL) {
      ASSERT_STR_EQ(enc, "skip");
      continue;
    }
    rn_buf_init(&b);
    ASSERT_OK(rn_rnp_encode(&b, &want, MAXF));
    ASSERT_EQ(b.len, n);
    ASSERT_MEM_EQ(b.base, bytes, n);
    rn_buf_free(&b);
  }
  /* The file itself: every type, and each field several times. */
  ASSERT_GE(count, 30);
  ASSERT_EQ(types, 0xfe);
  for (t = 1; t < 8; t++)
    ASSERT_GE(field_uses[t], 2);
  free(text);
}

static void test_vectors_invalid(void) {
  static vec_t vecs[256];
  static char bytes[4096];
  char *text = read_file("invalid.txt");
  size_t count, i, n, k, max_frame;
  unsigned seen_framesize = 0;
  rn_rnp_frame_t f;
  int want;

  count = vec_split(text, vecs, COUNT(vecs));
  for (i = 0; i < count; i++) {
    const vec_t *v = &vecs[i];
    const char *err = vec_get(v, "error");

    fprintf(stderr, "   %s (line %d)\n", vec_get(v, "name"), v->line);
    ASSERT(err != NULL && vec_get(v, "rule") != NULL);
    n = unhex(vec_get(v, "hex"), bytes, sizeof(bytes));
    max_frame = (size_t)vec_num(v, "max_frame");
    if (strcmp(err, "BADFRAME") == 0) {
      want = RN_EBADFRAME;
    } else {
      ASSERT_STR_EQ(err, "FRAMESIZE");
      want = RN_EFRAMESIZE;
      seen_framesize++;
      /* Decided on the size field alone. */
      ASSERT_EQ(rn_rnp_parse(bytes, 4, max_frame, &f), RN_EFRAMESIZE);
    }
    ASSERT_EQ(rn_rnp_parse(bytes, n, max_frame, &f), want);
    for (k = 0; k < n; k++) {
      int r = rn_rnp_parse(bytes, k, max_frame, &f);
      ASSERT(r == 0 || r == want);
    }
  }
  ASSERT_GE(count, 50);
  ASSERT_GE(seen_framesize, 2);
  free(text);
}

TEST_LIST_START
  TEST_ENTRY(test_each_type)
  TEST_ENTRY(test_extensions)
  TEST_ENTRY(test_malformed)
  TEST_ENTRY(test_bad_header)
  TEST_ENTRY(test_framesize)
  TEST_ENTRY(test_round_trips)
  TEST_ENTRY(test_encode_bytes)
  TEST_ENTRY(test_encode_refuses)
  TEST_ENTRY(test_codec)
  TEST_ENTRY(test_vectors_valid)
  TEST_ENTRY(test_vectors_invalid)
TEST_LIST_END

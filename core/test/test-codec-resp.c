#include "resilnet.h"
#include "task.h"

#include <math.h>

#define S(lit) (lit), (sizeof(lit) - 1)
/* Progress line: the start of the input, CR and LF made visible, so a
 * failed assertion can be matched to its case. */
static void show(const char *what, const char *data, size_t len) {
  size_t i;

  fprintf(stderr, "   %s: ", what);
  for (i = 0; i < len && i < 48; i++) {
    unsigned char ch = (unsigned char)data[i];
    if (ch == '\r')
      fputs("\\r", stderr);
    else if (ch == '\n')
      fputs("\\n", stderr);
    else if (ch < 0x20 || ch > 0x7e)
      fprintf(stderr, "\\x%02x", ch);
    else
      fputc(ch, stderr);
  }
  fputs(i < len ? "...\n" : "\n", stderr);
}

static rn_codec_t resp_codec(size_t max_frame) {
  rn_codec_options_t o;
  rn_codec_t c;

  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_RESP;
  o.max_frame = max_frame;
  ASSERT_OK(rn_codec_init(&c, &o));
  return c;
}

/* Parses one complete item and checks that no prefix of it parses. */
static rn_resp_item_t item_ok(const char *data, size_t len, int type) {
  rn_resp_item_t it;
  size_t n;

  show("item", data, len);
  for (n = 0; n < len; n++) {
    ASSERT_EQ(rn_resp_item(data, n, &it), 0);
    ASSERT_GT(it.size, n);
    ASSERT_LE(it.size, len);
  }
  ASSERT_EQ(rn_resp_item(data, len, &it), 1);
  ASSERT_EQ(it.type, type);
  ASSERT_EQ(it.size, len);
  return it;
}

static void str_is(const rn_resp_item_t *it, const char *s, size_t len) {
  ASSERT_EQ(it->len, len);
  ASSERT_MEM_EQ(it->str, s, len);
}

/* item_ok, and the integer it carries (a number, count or boolean). */
static void integer_is(const char *data, size_t len, int type, int64_t want) {
  rn_resp_item_t it = item_ok(data, len, type);
  ASSERT_EQ(it.integer, want);
}

/* item_ok, and the double it carries. */
static void number_is(const char *data, size_t len, double want) {
  rn_resp_item_t it = item_ok(data, len, RN_RESP_DOUBLE);
  ASSERT(it.number == want);
}

/* item_ok, and its text. */
static void text_is(const char *data, size_t len, int type, const char *s,
                    size_t slen) {
  rn_resp_item_t it = item_ok(data, len, type);
  str_is(&it, s, slen);
}

/* Parses the item at *p (the bytes up to end) and steps past it. */
static rn_resp_item_t take_item(const char **p, const char *end) {
  rn_resp_item_t it;
  ASSERT_EQ(rn_resp_item(*p, (size_t)(end - *p), &it), 1);
  *p += it.size;
  return it;
}

static void test_items(void) {
  rn_resp_item_t it;

  text_is(S("+OK\r\n"), RN_RESP_SIMPLE, S("OK"));
  it = item_ok(S("+\r\n"), RN_RESP_SIMPLE);
  ASSERT_EQ(it.len, 0);
  text_is(S("-ERR unknown command\r\n"), RN_RESP_ERROR,
          S("ERR unknown command"));
  integer_is(S(":0\r\n"), RN_RESP_INTEGER, 0);
  integer_is(S(":-42\r\n"), RN_RESP_INTEGER, -42);
  integer_is(S(":9223372036854775807\r\n"), RN_RESP_INTEGER, INT64_MAX);
  integer_is(S(":-9223372036854775808\r\n"), RN_RESP_INTEGER, INT64_MIN);
  /* Either side of the 18 digits parsed without an overflow test. */
  integer_is(S(":999999999999999999\r\n"), RN_RESP_INTEGER,
             999999999999999999);
  integer_is(S(":-999999999999999999\r\n"), RN_RESP_INTEGER,
             -999999999999999999);
  integer_is(S(":1000000000000000000\r\n"), RN_RESP_INTEGER,
             1000000000000000000);
  text_is(S("$5\r\nhello\r\n"), RN_RESP_BULK, S("hello"));
  it = item_ok(S("$0\r\n\r\n"), RN_RESP_BULK);
  ASSERT_EQ(it.len, 0);
  text_is(S("$4\r\n\r\n\0x\r\n"), RN_RESP_BULK, S("\r\n\0x")); /* binary */
  it = item_ok(S("$-1\r\n"), RN_RESP_NULL);
  it = item_ok(S("*-1\r\n"), RN_RESP_NULL);
  it = item_ok(S("_\r\n"), RN_RESP_NULL);
  integer_is(S("*3\r\n"), RN_RESP_ARRAY, 3);
  integer_is(S("*0\r\n"), RN_RESP_ARRAY, 0);
  integer_is(S("%2\r\n"), RN_RESP_MAP, 2);
  integer_is(S("~5\r\n"), RN_RESP_SET, 5);
  integer_is(S("|1\r\n"), RN_RESP_ATTRIBUTE, 1);
  integer_is(S(">3\r\n"), RN_RESP_PUSH, 3);
  integer_is(S("#t\r\n"), RN_RESP_BOOLEAN, 1);
  integer_is(S("#f\r\n"), RN_RESP_BOOLEAN, 0);
  it = item_ok(S(",1.5\r\n"), RN_RESP_DOUBLE);
  ASSERT(it.number == 1.5);
  str_is(&it, S("1.5"));
  number_is(S(",-2.5e3\r\n"), -2500.0);
  number_is(S(",10\r\n"), 10.0);
  number_is(S(",+1E+2\r\n"), 100.0);
  number_is(S(",1.25E-2\r\n"), 0.0125);
  it = item_ok(S(",inf\r\n"), RN_RESP_DOUBLE);
  ASSERT(isinf(it.number) && it.number > 0);
  it = item_ok(S(",-inf\r\n"), RN_RESP_DOUBLE);
  ASSERT(isinf(it.number) && it.number < 0);
  it = item_ok(S(",nan\r\n"), RN_RESP_DOUBLE);
  ASSERT(isnan(it.number));
  text_is(S("(3492890328409238509324850943850943825024385\r\n"),
          RN_RESP_BIGNUM, S("3492890328409238509324850943850943825024385"));
  text_is(S("(-7\r\n"), RN_RESP_BIGNUM, S("-7"));
  text_is(S("!21\r\nSYNTAX invalid syntax\r\n"), RN_RESP_BULK_ERROR,
          S("SYNTAX invalid syntax"));
  text_is(S("=15\r\ntxt:Some string\r\n"), RN_RESP_VERBATIM,
          S("Some string"));
  it = item_ok(S("=4\r\nmkd:\r\n"), RN_RESP_VERBATIM);
  ASSERT_EQ(it.len, 0);

  /* Only the first item is read; what follows is left alone. */
  ASSERT_EQ(rn_resp_item(S(":1\r\n:2\r\n"), &it), 1);
  ASSERT_EQ(it.size, 4);
}

static void item_bad(const char *data, size_t len) {
  rn_resp_item_t it;

  show("bad item", data, len);
  ASSERT_EQ(rn_resp_item(data, len, &it), RN_EBADFRAME);
}

#define BAD(lit) item_bad(S(lit))

static void test_bad_items(void) {
  BAD("hello\r\n");
  BAD("\r\n");
  BAD("\0");
  BAD("+OK\n");
  BAD("+OK\rX");
  BAD("+a\nb\r\n");
  BAD("+a\rb\r\n");
  BAD(":\r\n");
  BAD(":-\r\n");
  BAD(":+1\r\n");
  /* Short lines (lengths, counts) are searched byte by byte: an LF before
   * their CR is as bad as in a long line. */
  BAD(":1\n");
  BAD(":1\n2\r\n");
  BAD("$3\nabc\r\n");
  BAD("*1\n$1\r\na\r\n");
  BAD(":12a\n\r\n");
  BAD(": 1\r\n");
  BAD(":1 \r\n");
  BAD(":1.5\r\n");
  BAD(":12a\r\n");
  BAD(":9223372036854775808\r\n");
  BAD(":-9223372036854775809\r\n");
  BAD(":99999999999999999999\r\n");
  BAD(":111111111111111111111"); /* too long to be a number: no CRLF needed */
  BAD("$-2\r\n");
  BAD("$\r\n");
  BAD("$?\r\n"); /* streamed strings are not supported */
  BAD("*?\r\n");
  BAD("$3\r\nabcd\r\n");
  BAD("$3\r\nab\r\n\r\n");
  BAD("$3\r\nabc\n\r");
  BAD("$3\r\nabcXY");
  BAD("*-2\r\n");
  BAD("%-1\r\n");
  BAD("~-1\r\n");
  BAD("|-1\r\n");
  BAD(">-1\r\n");
  BAD("!-1\r\n");
  BAD("=-1\r\n");
  BAD("*1x\r\n");
  BAD("#x\r\n");
  BAD("#tt\r\n");
  BAD("#\r\n");
  BAD("#T\r\n");
  BAD("_x\r\n");
  BAD("_ ");
  BAD(",\r\n");
  BAD(",abc\r\n");
  BAD(",1.\r\n");
  BAD(",.5\r\n");
  BAD(",1e\r\n");
  BAD(",1e+\r\n");
  BAD(",0x10\r\n");
  BAD(", 1\r\n");
  BAD(",1 \r\n");
  BAD(",infinity\r\n");
  BAD(",INF\r\n");
  BAD(",-nan\r\n");
  BAD(",1,5\r\n");
  BAD("(\r\n");
  BAD("(-\r\n");
  BAD("(1a\r\n");
  BAD("(+1\r\n");
  BAD("=3\r\ntxt\r\n");
  BAD("=5\r\ntxt;a\r\n");
}

/* Every proper prefix of a frame says "need more", never an error and
 * never a frame; the whole frame, alone or followed by more bytes, is one
 * frame of exactly its size. */
/* The frame fed through one scan a byte at a time, then in steps of 2
 * and 3 bytes: the same answers as rn_codec_frame on each prefix. */
static void scan_ok(const rn_codec_t *c, const char *data, size_t len,
                    int flags) {
  size_t step, n;

  for (step = 1; step <= 3; step++) {
    rn_frame_scan_t scan;
    rn_frame_t f;
    memset(&scan, 0, sizeof(scan));
    for (n = 0; n < len; n += step) {
      ASSERT_EQ(rn_codec_scan(c, &scan, data, n, &f), 0);
      ASSERT_GT(f.size, n);
      ASSERT_LE(f.size, len);
    }
    ASSERT_EQ(rn_codec_scan(c, &scan, data, len, &f), 1);
    ASSERT_EQ(f.size, len);
    ASSERT_EQ(f.body_len, len);
    ASSERT_EQ(f.flags, flags);
    ASSERT(scan.levels == NULL); /* a whole frame leaves nothing held */
  }
}

static void frame_ok(const rn_codec_t *c, const char *data, size_t len,
                     int flags) {
  rn_frame_t f;
  char *more;
  size_t n;

  show("frame", data, len);
  for (n = 0; n < len; n++) {
    ASSERT_EQ(rn_codec_frame(c, data, n, &f), 0);
    ASSERT_GT(f.size, n);
    ASSERT_LE(f.size, len);
  }
  ASSERT_EQ(rn_codec_frame(c, data, len, &f), 1);
  ASSERT_EQ(f.size, len);
  ASSERT_EQ(f.body_offset, 0);
  ASSERT_EQ(f.body_len, len);
  ASSERT_EQ(f.flags, flags);

  more = malloc(len + 5);
  ASSERT(more != NULL);
  memcpy(more, data, len);
  memcpy(more + len, "+OK\r\n", 5);
  ASSERT_EQ(rn_codec_frame(c, more, len + 5, &f), 1);
  ASSERT_EQ(f.size, len);
  free(more);
  scan_ok(c, data, len, flags);
}

static void test_frames(void) {
  rn_codec_t c = resp_codec(0);

  frame_ok(&c, S("+OK\r\n"), 0);
  frame_ok(&c, S(":1000\r\n"), 0);
  frame_ok(&c, S("$-1\r\n"), 0);
  frame_ok(&c, S("*-1\r\n"), 0);
  frame_ok(&c, S("*0\r\n"), 0);
  frame_ok(&c, S("%0\r\n"), 0);
  frame_ok(&c, S("_\r\n"), 0);
  frame_ok(&c, S("-ERR wrong type\r\n"), RN_FRAME_ERROR);
  frame_ok(&c, S("!3\r\nbad\r\n"), RN_FRAME_ERROR);
  frame_ok(&c, S(">3\r\n$7\r\nmessage\r\n$3\r\nchn\r\n$2\r\nhi\r\n"),
           RN_FRAME_PUSH);
  frame_ok(&c, S("*1\r\n-ERR nested\r\n"), 0); /* not a top-level error */
  frame_ok(&c, S("*2\r\n>1\r\n:1\r\n:2\r\n"), 0);
  frame_ok(&c, S("*4\r\n:1\r\n*2\r\n+a\r\n$-1\r\n%1\r\n+k\r\n~2\r\n#t\r\n_\r\n"
                 "=7\r\ntxt:abc\r\n"), 0);
  frame_ok(&c, S("%2\r\n%1\r\n:1\r\n:2\r\n*0\r\n,1.5\r\n(12\r\n"), 0);
  frame_ok(&c, S("*3\r\n*0\r\n*1\r\n*0\r\n%0\r\n"), 0);
  /* Attributes precede the value they annotate, at any level. */
  frame_ok(&c, S("|1\r\n+key\r\n+val\r\n*1\r\n:1\r\n"), 0);
  frame_ok(&c, S("|0\r\n:5\r\n"), 0);
  frame_ok(&c, S("|1\r\n+a\r\n|1\r\n+b\r\n+c\r\n+d\r\n:1\r\n"), 0);
  frame_ok(&c, S("|1\r\n+ttl\r\n:3\r\n-ERR x\r\n"), RN_FRAME_ERROR);
  frame_ok(&c, S("|1\r\n+a\r\n:1\r\n>1\r\n:1\r\n"), RN_FRAME_PUSH);
  frame_ok(&c, S("*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n"), 0);
  frame_ok(&c, S("*1\r\n|1\r\n*1\r\n:1\r\n%1\r\n+k\r\n+v\r\n:9\r\n"), 0);
}

static void frame_is(const rn_codec_t *c, const char *data, size_t len,
                     int expect) {
  rn_frame_t f;

  show(expect == 1 ? "frame" : expect == 0 ? "partial" : "bad frame", data,
       len);
  ASSERT_EQ(rn_codec_frame(c, data, len, &f), expect);
}

static void test_bad_frames(void) {
  rn_codec_t c = resp_codec(0);

  frame_is(&c, S("GET foo\r\n"), RN_EBADFRAME);
  frame_is(&c, S("*2\r\n:1\r\nX\r\n"), RN_EBADFRAME);
  frame_is(&c, S("*2\r\n:1\r\n:x\r\n"), RN_EBADFRAME);
  frame_is(&c, S("%1\r\n+k\r\n$3\r\nabcd"), RN_EBADFRAME);
  frame_is(&c, S("*1\r\n$?\r\n;3\r\nabc\r\n;0\r\n"), RN_EBADFRAME);
  /* Garbage after a need-more prefix is still caught once it arrives. */
  frame_is(&c, S("*3\r\n:1\r\n"), 0);
  frame_is(&c, S("*3\r\n:1\r\n\x01"), RN_EBADFRAME);
}

/* Regression (issue 14, and the server's issue 15): a large array read a
 * few bytes at a time was walked from its first element on every read, so
 * framing it cost O(size^2). The scan keeps its place: after each read, it
 * has walked every whole element it was given, and the first look past
 * them starts there. Also a simple string without its CR yet, and bad
 * bytes arriving late, still found. */
static void test_scan_dribbled_array_resumes(void) {
  rn_codec_t c = resp_codec(0);
  const size_t count = 100000, item = 4; /* ":7\r\n" */
  size_t header, len, n, i, done = 0;
  rn_frame_scan_t scan;
  rn_frame_t f;
  char *data;

  data = malloc(16 + count * item);
  ASSERT(data != NULL);
  header = (size_t)sprintf(data, "*%zu\r\n", count);
  for (i = 0; i < count; i++) memcpy(data + header + i * item, ":7\r\n", item);
  len = header + count * item;

  memset(&scan, 0, sizeof(scan));
  for (n = 0; n < len; n += 3) {
    scan.need = 0; /* look on every read, as if the hint said nothing */
    ASSERT_EQ(rn_codec_scan(&c, &scan, data, n, &f), 0);
    ASSERT_GT(f.size, n);
    if (n >= header) /* every value still owed counts */
      ASSERT_GE(f.size + 4, header + (n - header) / item * item +
                                (count - (n - header) / item) * 3);
    if (n >= header) /* stopped after the last whole value given */
      ASSERT_EQ(scan.done, header + (n - header) / item * item);
    /* What was walked is never read again: spoil it. */
    memset(data + done, 'X', scan.done - done);
    done = scan.done;
  }
  ASSERT_EQ(rn_codec_scan(&c, &scan, data, len, &f), 1);
  ASSERT_EQ(f.size, len);
  ASSERT_EQ(scan.done, 0);
  ASSERT(scan.levels == NULL);

  /* A long simple string, then an LF out of place in its new bytes. */
  memset(data, 'a', 4096);
  data[0] = '+';
  for (n = 1; n < 4096; n += 7) {
    ASSERT_EQ(rn_codec_scan(&c, &scan, data, n, &f), 0);
    ASSERT_GE(scan.line_from + 7, n + 1);
  }
  data[4096] = '\n';
  ASSERT_EQ(rn_codec_scan(&c, &scan, data, 4097, &f), RN_EBADFRAME);
  ASSERT(scan.levels == NULL && scan.done == 0);

  /* Garbage after a partial frame is caught, at the latest once the
   * frame could have ended (the two values owed at their smallest). */
  memcpy(data, "*3\r\n:1\r\n\x01\x01\x01\x01\x01\x01", 14);
  ASSERT_EQ(rn_codec_scan(&c, &scan, data, 8, &f), 0);
  ASSERT_GT(f.size, 9);
  ASSERT_LE(f.size, 14);
  ASSERT_EQ(rn_codec_scan(&c, &scan, data, f.size, &f), RN_EBADFRAME);
  rn_frame_scan_reset(&scan);
  free(data);
}

/* Review finding 10: a bad byte arriving inside the hint's range (after
 * a large array header, 3 bytes per value owed) was seen only once that
 * many bytes had come, so a server's client waited out frame_timeout
 * instead of getting its protocol error. Found in the read that brings
 * it now, the hint left as the last look set it. */
static void test_scan_bad_byte_found_before_need(void) {
  static const char data[] = "*1000\r\n:1\r\nx";
  rn_codec_t c = resp_codec(0);
  rn_frame_scan_t scan;
  rn_frame_t f;
  size_t len = sizeof(data) - 1;

  memset(&scan, 0, sizeof(scan));
  ASSERT_EQ(rn_codec_scan(&c, &scan, data, len - 1, &f), 0);
  ASSERT_GT(scan.need, len); /* the hint reaches well past the bad byte */
  ASSERT_EQ(rn_codec_scan(&c, &scan, data, len, &f), RN_EBADFRAME);
  rn_frame_scan_reset(&scan);
}

/* Issue 20, item 2 (the hostile-input CPU bug): a frame dribbled a byte
 * at a time must cost O(its size) in all. A nested frame (a chain of
 * arrays as deep as allowed, then an array of maps, bulk strings,
 * simple strings, sets inside) is fed through one scan one byte more
 * per call, and the items parsed over all those calls are counted
 * (scan.items): at most each item once plus one unfinished look per
 * call. A framer that walks from the frame's start on every read parses
 * about items * calls / 2 instead, thousands of times more. */
static void test_scan_dribbled_nested_frame_is_linear(void) {
  rn_codec_t c = resp_codec(0);
  const size_t depth = RN_RESP_MAX_DEPTH - 3, count = 200;
  size_t len = 0, n, i, whole;
  rn_frame_scan_t scan;
  rn_frame_t f;
  char *data = malloc(depth * 4 + count * 64 + 16);

  ASSERT(data != NULL);
  for (i = 0; i < depth; i++) len += (size_t)sprintf(data + len, "*1\r\n");
  len += (size_t)sprintf(data + len, "*%zu\r\n", count);
  for (i = 0; i < count; i++)
    len += (size_t)sprintf(data + len,
                           i % 2 ? "%%1\r\n+k%zu\r\n*2\r\n:%zu\r\n$5\r\nhello\r\n"
                                 : "*1\r\n~2\r\n+msg\r\n$3\r\n%03zu\r\n",
                           i % 1000, i);

  /* The work of one look at the whole frame. */
  memset(&scan, 0, sizeof(scan));
  ASSERT_EQ(c.type->scan(&c, &scan, data, len, &f), 1);
  ASSERT_EQ(f.size, len);
  whole = (size_t)scan.items;
  ASSERT_GT(whole, depth + count * 3);
  rn_frame_scan_reset(&scan);

  /* The same frame a byte at a time: the frame's own scan function, so
   * the count survives the last call (rn_codec_scan resets it). */
  for (n = 0; n < len; n++) {
    ASSERT_EQ(c.type->scan(&c, &scan, data, n, &f), 0);
    ASSERT_GT(f.size, n);
  }
  ASSERT_EQ(c.type->scan(&c, &scan, data, len, &f), 1);
  ASSERT_EQ(f.size, len);
  fprintf(stderr, "   %zu bytes, %zu items: %llu parsed dribbled\n", len,
          whole, (unsigned long long)scan.items);
  ASSERT_LE(scan.items, whole + len + 1);
  rn_frame_scan_reset(&scan);
  free(data);
}

static void nest(char *buf, size_t depth, const char *open, size_t *len) {
  size_t i, olen = strlen(open);

  *len = 0;
  for (i = 0; i < depth; i++) {
    memcpy(buf + *len, open, olen);
    *len += olen;
  }
  memcpy(buf + *len, ":1\r\n", 4);
  *len += 4;
}

/* RN_RESP_MAX_DEPTH nested aggregates pass, one more does not, and a very
 * deep frame is refused without recursion. */
static void test_depth(void) {
  static char buf[8 * 100000 + 8];
  rn_codec_t c = resp_codec(0);
  size_t len;

  nest(buf, RN_RESP_MAX_DEPTH, "*1\r\n", &len);
  frame_ok(&c, buf, len, 0);
  nest(buf, RN_RESP_MAX_DEPTH + 1, "*1\r\n", &len);
  frame_is(&c, buf, len, RN_EBADFRAME);
  frame_is(&c, buf, len - 4, RN_EBADFRAME); /* known before the leaf */

  nest(buf, RN_RESP_MAX_DEPTH / 2, "%1\r\n:0\r\n", &len);
  frame_is(&c, buf, len, 1);
  /* Attributes nest too. */
  nest(buf, RN_RESP_MAX_DEPTH, "|1\r\n:0\r\n", &len);
  frame_is(&c, buf, len, 0); /* the annotated values are still owed */
  nest(buf, RN_RESP_MAX_DEPTH + 1, "|1\r\n:0\r\n", &len);
  frame_is(&c, buf, len, RN_EBADFRAME);
  /* An empty aggregate below the limit is still one level too many. */
  nest(buf, RN_RESP_MAX_DEPTH, "*1\r\n", &len);
  memcpy(buf + len - 4, "*0\r\n", 4);
  frame_is(&c, buf, len, RN_EBADFRAME);

  nest(buf, 100000, "*1\r\n", &len);
  frame_is(&c, buf, len, RN_EBADFRAME);
  nest(buf, 100000, ">1\r\n", &len);
  frame_is(&c, buf, len, RN_EBADFRAME);
}

/* Sizes are checked against max_frame as soon as a header proves them. */
static void test_oversized(void) {
  rn_codec_t c = resp_codec(16);
  rn_codec_t big = resp_codec(SIZE_MAX);

  frame_is(&c, S("$9\r\n123456789\r\n"), 1);    /* 15 bytes */
  frame_is(&c, S("$10\r\n1234567890\r\n"), RN_EFRAMESIZE); /* 17 */
  frame_is(&c, S("$9\r\n"), 0);
  frame_is(&c, S("$10\r\n"), RN_EFRAMESIZE);     /* known from the header */
  frame_is(&c, S("$9999999\r\n"), RN_EFRAMESIZE);
  frame_is(&c, S("*2\r\n$3\r\nabc\r\n$3\r\n"), RN_EFRAMESIZE);
  frame_is(&c, S("+0123456789abcde"), RN_EFRAMESIZE); /* 16, no CRLF */
  frame_is(&c, S("+0123456789abc\r"), 0);
  frame_is(&c, S("+0123456789abc\r\n"), 1);     /* exactly 16 */
  frame_is(&c, S("+0123456789abcd\r"), RN_EFRAMESIZE);
  frame_is(&c, S("+0123456789abcdefghij\r\n:1\r\n"), RN_EFRAMESIZE);
  frame_is(&c, S("*2\r\n:1\r\n+abcdefghij\r\n"), RN_EFRAMESIZE);
  frame_is(&c, S("+0123456789ab\r\n"), 1);
  /* Element counts: each element takes at least 3 bytes. */
  frame_is(&c, S("*4\r\n"), 0);                  /* 4 + 4 * 3 == 16 */
  frame_is(&c, S("*5\r\n"), RN_EFRAMESIZE);
  frame_is(&c, S("%2\r\n"), 0);
  frame_is(&c, S("%3\r\n"), RN_EFRAMESIZE);
  frame_is(&c, S("*1\r\n*1\r\n*2\r\n"), RN_EFRAMESIZE);
  frame_is(&c, S("*9223372036854775807\r\n"), RN_EFRAMESIZE);

  /* Huge declared sizes never wrap, even with no practical limit. */
  frame_is(&big, S("$9223372036854775807\r\n"),
           sizeof(size_t) >= 8 ? 0 : RN_EFRAMESIZE);
  frame_is(&big, S("*9223372036854775807\r\n"), RN_EFRAMESIZE);
  frame_is(&big, S("%9223372036854775807\r\n"), RN_EFRAMESIZE);
  frame_is(&big, S("|9223372036854775807\r\n"), RN_EFRAMESIZE);
  frame_is(&big, S("*2\r\n%4611686018427387903\r\n"), RN_EFRAMESIZE);
  c = resp_codec(0);
  frame_is(&c, S("$9223372036854775807\r\n"), RN_EFRAMESIZE);
  frame_is(&c, S("$16777203\r\n"), 0); /* 11 + n + 2 == 16 MiB */
  frame_is(&c, S("$16777204\r\n"), RN_EFRAMESIZE);
}

/* Walks a frame the way a decoder does: items in order, sizes adding up. */
static void test_walk(void) {
  static const char frame[] = "*3\r\n$3\r\nSET\r\n:42\r\n%1\r\n+k\r\n#f\r\n";
  static const int types[] = {'*', '$', ':', '%', '+', '#'};
  rn_resp_item_t it;
  size_t off = 0, i;

  for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
    ASSERT_EQ(rn_resp_item(frame + off, sizeof(frame) - 1 - off, &it), 1);
    ASSERT_EQ(it.type, types[i]);
    off += it.size;
  }
  ASSERT_EQ(off, sizeof(frame) - 1);
}

static void test_encoders(void) {
  rn_codec_t c = resp_codec(0);
  rn_resp_item_t it;
  rn_buf_t b;
  const char *p, *end;

  rn_buf_init(&b);
  ASSERT_OK(rn_resp_encode_array(&b, 7));
  ASSERT_OK(rn_resp_encode_bulk(&b, "SET", 3));
  ASSERT_OK(rn_resp_encode_bulk(&b, "", 0));
  ASSERT_OK(rn_resp_encode_bulk(&b, "a\r\nb", 4));
  ASSERT_OK(rn_resp_encode_integer(&b, INT64_MIN));
  ASSERT_OK(rn_resp_encode_integer(&b, INT64_MAX));
  ASSERT_OK(rn_resp_encode_simple(&b, "OK", 2));
  ASSERT_OK(rn_resp_encode_null(&b));
  {
    static const char wire[] =
        "*7\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\na\r\nb\r\n"
        ":-9223372036854775808\r\n:9223372036854775807\r\n+OK\r\n$-1\r\n";
    ASSERT_EQ(b.len, sizeof(wire) - 1);
    ASSERT_MEM_EQ(b.base, wire, b.len);
  }
  frame_ok(&c, b.base, b.len, 0);

  p = b.base;
  end = b.base + b.len;
  it = take_item(&p, end);
  ASSERT_EQ(it.integer, 7);
  it = take_item(&p, end);
  str_is(&it, S("SET"));
  it = take_item(&p, end);
  ASSERT_EQ(it.len, 0);
  it = take_item(&p, end);
  str_is(&it, S("a\r\nb"));
  it = take_item(&p, end);
  ASSERT_EQ(it.integer, INT64_MIN);
  it = take_item(&p, end);
  ASSERT_EQ(it.integer, INT64_MAX);
  it = take_item(&p, end);
  str_is(&it, S("OK"));
  it = take_item(&p, end);
  ASSERT_EQ(it.type, RN_RESP_NULL);
  ASSERT(p == end);

  /* Line types cannot carry CR or LF; nothing is appended then. */
  b.len = 0;
  ASSERT_EQ(rn_resp_encode_simple(&b, "a\rb", 3), UV_EINVAL);
  ASSERT_EQ(rn_resp_encode_error(&b, "a\nb", 3), UV_EINVAL);
  ASSERT_EQ(b.len, 0);
  ASSERT_OK(rn_resp_encode_error(&b, "ERR no", 6));
  frame_ok(&c, b.base, b.len, RN_FRAME_ERROR);
  b.len = 0;
  ASSERT_OK(rn_resp_encode_simple(&b, "", 0));
  ASSERT_MEM_EQ(b.base, "+\r\n", 3);
  rn_buf_free(&b);
}

/* A string request is an array of one bulk string, within max_frame. */
static void test_codec_encode(void) {
  rn_codec_t c = resp_codec(0);
  rn_resp_item_t it;
  rn_buf_t b;
  char body[32];

  rn_buf_init(&b);
  ASSERT_OK(rn_codec_encode(&c, &b, "PING", 4));
  ASSERT_EQ(b.len, 14);
  ASSERT_MEM_EQ(b.base, "*1\r\n$4\r\nPING\r\n", 14);
  frame_ok(&c, b.base, b.len, 0);
  ASSERT_EQ(rn_resp_item(b.base + 4, b.len - 4, &it), 1);
  str_is(&it, S("PING"));

  memset(body, 'x', sizeof(body));
  c = resp_codec(21); /* "*1\r\n$10\r\n" + 10 + "\r\n" */
  b.len = 0;
  ASSERT_OK(rn_codec_encode(&c, &b, body, 10));
  ASSERT_EQ(b.len, 21);
  frame_ok(&c, b.base, b.len, 0);
  ASSERT_EQ(rn_codec_encode(&c, &b, body, 11), RN_EFRAMESIZE);
  ASSERT_EQ(b.len, 21);
  c = resp_codec(20);
  ASSERT_EQ(rn_codec_encode(&c, &b, body, 10), RN_EFRAMESIZE);
  ASSERT_OK(rn_codec_encode(&c, &b, body, 9)); /* "$9" is a digit shorter */
  rn_buf_free(&b);
}

/* The value a frame most often is (one bulk string, simple string,
 * integer or error) has a fast path in the framer (resp_single); the
 * item parser rn_resp_item is the rule it must keep. For each input,
 * every prefix and several max_frame values, whole and through a fresh
 * scan: the same verdict, size or hint and flags as one item parsed on
 * its own. A fast path that took a bad length, a sign, a missing CR, an
 * LF in a line or a frame over max_frame fails here. */
static int single_oracle(const char *d, size_t len, size_t max,
                         rn_frame_t *f) {
  rn_resp_item_t it;
  int r = rn_resp_item(d, len < max ? len : max, &it);
  if (r < 0) return r;
  if (it.size > max) return RN_EFRAMESIZE;
  f->size = it.size;
  f->flags = r == 1 && (it.type == RN_RESP_ERROR ||
                        it.type == RN_RESP_BULK_ERROR) ? RN_FRAME_ERROR : 0;
  return r;
}

static void test_single_value_fast_path(void) {
  static const char *const inputs[] = {
      "$3\r\nabc\r\n", "$0\r\n\r\n", "$-1\r\n", "$03\r\nabc\r\n",
      "$3\r\nabcd\r\n", "$3\r\nab\r\r\n", "$3\rxabc\r\n", "$\r\n",
      "$-0\r\n\r\n", "$+1\r\nx\r\n", "$1a\r\nx\r\n", "$3\r\nab\nc\r\n",
      "$3\n\rabc\r\n", "$123456789012345678\r\n",
      "$1234567890123456789\r\nx\r\n", "$99999999999999999999\r\n",
      "$18446744073709551615\r\n", "$2\r\n\r\n\r\n",
      /* 2^32 + 3 and 2^32: a 32-bit size_t would wrap them to 3 and 0 */
      "$4294967299\r\nabc\r\n", "$4294967296\r\n\r\n", "+OK\r\n", "+\r\n",
      "+O\nK\r\n", "+OK\rx\r\n", "+OK\n", "-ERR bad\r\n", "-\r\n",
      "-ERR\r\r\n", ":0\r\n", ":-12\r\n", ":-\r\n", ":\r\n", ":12a\r\n",
      ": 1\r\n", ":+1\r\n", ":-0\r\n", ":123456789012345678\r\n",
      ":-123456789012345678\r\n", ":1234567890123456789\r\n",
      ":9223372036854775807\r\n", ":9223372036854775808\r\n",
      ":-9223372036854775808\r\n", ":-9223372036854775809\r\n",
      "$3\r\nabc\r\n+OK\r\n", "+OK\r\n:1\r\n", ":1\r\n\r\n", "_\r\n",
      "!3\r\nabc\r\n", "=7\r\ntxt:abc\r\n", ",1.5\r\n", "#t\r\n",
      "(123\r\n"};
  static const size_t maxes[] = {3, 5, 6, 9, 12, 64, 1 << 20};
  size_t i, m, n;

  for (i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
    const char *in = inputs[i];
    size_t len = strlen(in);
    for (m = 0; m < sizeof(maxes) / sizeof(maxes[0]); m++) {
      rn_codec_t c = resp_codec(maxes[m]);
      for (n = 0; n <= len; n++) {
        rn_frame_t want, got, scanned;
        rn_frame_scan_t scan;
        int w, g, s;
        memset(&want, 0, sizeof(want));
        memset(&scan, 0, sizeof(scan));
        w = single_oracle(in, n, maxes[m], &want);
        g = rn_codec_frame(&c, in, n, &got);
        s = rn_codec_scan(&c, &scan, in, n, &scanned);
        rn_frame_scan_reset(&scan);
        if (g != w || s != w || (w >= 0 && (got.size != want.size ||
                                           scanned.size != want.size)) ||
            (w == 1 && (got.flags != want.flags ||
                        scanned.flags != want.flags ||
                        got.body_offset != 0 || got.body_len != got.size))) {
          fprintf(stderr, "input %zu (%zu of %zu bytes, max %zu): want %d "
                  "size %zu, frame %d size %zu, scan %d size %zu\n", i, n,
                  len, maxes[m], w, want.size, g, got.size, s,
                  scanned.size);
          ASSERT(0);
        }
      }
    }
  }
}

TEST_LIST_START
  TEST_ENTRY(test_items)
  TEST_ENTRY(test_bad_items)
  TEST_ENTRY(test_frames)
  TEST_ENTRY(test_bad_frames)
  TEST_ENTRY(test_scan_dribbled_array_resumes)
  TEST_ENTRY(test_scan_bad_byte_found_before_need)
  TEST_ENTRY(test_scan_dribbled_nested_frame_is_linear)
  TEST_ENTRY(test_depth)
  TEST_ENTRY(test_oversized)
  TEST_ENTRY(test_walk)
  TEST_ENTRY(test_encoders)
  TEST_ENTRY(test_codec_encode)
  TEST_ENTRY(test_single_value_fast_path)
TEST_LIST_END

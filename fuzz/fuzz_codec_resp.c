/* libFuzzer target for the RESP frame finder and item parser.
 * Input: [max_frame byte] then the stream. */
/* Build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore/include \
 *     -Icore/src/runtime fuzz/fuzz_codec_resp.c \
 *     core/src/runtime/{error,buf,endpoint}.c \
 *     core/src/codec/{codec,length,line,resp,resp_value,rnp}.c -luv -o /tmp/fuzz_codec_resp
 *   mkdir -p /tmp/codec_resp && /tmp/fuzz_codec_resp /tmp/codec_resp fuzz/corpus/codec_resp */
#include "resilnet.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(x) ((x) ? (void)0 : abort())

#include "fuzz_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_aggregate(int type) {
  return type == '*' || type == '%' || type == '~' || type == '|' ||
         type == '>';
}

/* Walks a frame item by item, counting elements with a plain counter
 * (attributes and maps differ from the codec's stack only in bookkeeping),
 * and checks every item lies inside the frame. */
static void walk(const char *s, size_t size) {
  uint64_t owed = 1;
  size_t off = 0;

  while (owed > 0) {
    rn_resp_item_t it;
    CHECK(rn_resp_item(s + off, size - off, &it) == 1);
    CHECK(it.size >= 3 && it.size <= size - off);
    if (it.str != NULL)
      CHECK(it.str >= s + off && it.str + it.len <= s + off + it.size);
    off += it.size;
    if (it.type != RN_RESP_ATTRIBUTE)
      owed--;
    if (is_aggregate(it.type))
      owed += (uint64_t)it.integer *
              (it.type == RN_RESP_MAP || it.type == RN_RESP_ATTRIBUTE ? 2 : 1);
  }
  CHECK(off == size);
}

/* A frame that is one value, not an aggregate, is framed as that one
 * item alone would be (the framer's fast path, resp_single, must keep
 * the item parser's rule to the byte). */
static void check_one_value(const rn_codec_t *c, const char *s, size_t len,
                            int r, const rn_frame_t *f) {
  rn_resp_item_t one;
  int want = rn_resp_item(s, len < c->max_frame ? len : c->max_frame, &one);
  if (want >= 0 && one.size > c->max_frame) want = RN_EFRAMESIZE;
  CHECK(r == want);
  if (r == 1)
    CHECK(f->size == one.size &&
          f->flags == (one.type == RN_RESP_ERROR ||
                               one.type == RN_RESP_BULK_ERROR
                           ? RN_FRAME_ERROR
                           : 0));
  else if (r == 0)
    CHECK(f->size == one.size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  rn_codec_options_t o;
  rn_codec_t c;
  rn_frame_t f, g;
  rn_resp_item_t it;
  rn_buf_t b;
  const char *s;
  size_t len;
  int r;

  if (size < 1)
    return 0;
  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_RESP;
  o.max_frame = data[0] < 3 ? 0 : (size_t)data[0] * 4;
  CHECK(rn_codec_init(&c, &o) == 0);
  s = (const char *)data + 1;
  len = size - 1;

  r = rn_resp_item(s, len, &it);
  CHECK(r == 1 || r == 0 || r == RN_EBADFRAME);
  if (r == 1)
    CHECK(it.size <= len && (it.str == NULL || it.str + it.len <= s + len));
  else if (r == 0)
    CHECK(it.size > len);

  r = rn_codec_frame(&c, s, len, &f);
  CHECK(r == 1 || r == 0 || r == RN_EBADFRAME || r == RN_EFRAMESIZE);
  if (r == 1) {
    CHECK(f.size <= len && f.size <= c.max_frame);
    CHECK(f.body_offset == 0 && f.body_len == f.size);
    walk(s, f.size);
    CHECK(rn_codec_frame(&c, s, f.size - 1, &g) == 0);
    CHECK(rn_codec_frame(&c, s, f.size, &g) == 1 && g.size == f.size);
    CHECK(g.flags == f.flags);
  } else if (r == 0) {
    CHECK(f.size > len && f.size <= c.max_frame);
  }
  check_scan(&c, s, len, r, &f, (size_t)data[0] % 7 + 1);
  if (len > 0 && !is_aggregate(s[0]))
    check_one_value(&c, s, len, r, &f);

  /* Any bytes round-trip as the bulk string of a one-element array. */
  rn_buf_init(&b);
  r = rn_codec_encode(&c, &b, s, len);
  if (r == 0) {
    CHECK(rn_codec_frame(&c, b.base, b.len, &f) == 1 && f.size == b.len);
    CHECK(rn_resp_item(b.base, b.len, &it) == 1 && it.integer == 1);
    CHECK(rn_resp_item(b.base + it.size, b.len - it.size, &it) == 1);
    CHECK(it.type == RN_RESP_BULK && it.len == len);
    CHECK(len == 0 || memcmp(it.str, s, len) == 0);
  } else {
    CHECK(r == RN_EFRAMESIZE && b.len == 0);
  }
  rn_buf_free(&b);
  return 0;
}

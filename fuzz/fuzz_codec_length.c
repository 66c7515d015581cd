/* libFuzzer target for the length codec.
 * Input: [width selector][max_frame byte] then the stream. */
/* Build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore/include \
 *     -Icore/src/runtime fuzz/fuzz_codec_length.c \
 *     core/src/runtime/{error,buf,endpoint}.c \
 *     core/src/codec/{codec,length,line,resp,resp_value,rnp}.c -luv -o /tmp/fuzz_codec_length
 *   mkdir -p /tmp/codec_length && /tmp/fuzz_codec_length /tmp/codec_length fuzz/corpus/codec_length */
#include "resilnet.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(x) ((x) ? (void)0 : abort())

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const unsigned widths[] = {1, 2, 4, 8};
  rn_codec_options_t o;
  rn_codec_t c;
  rn_frame_t f, g;
  rn_buf_t b;
  const char *s;
  size_t len;
  int r;

  if (size < 2)
    return 0;
  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_LENGTH;
  o.length_bytes = widths[data[0] & 3];
  /* Small limits so the size checks are reached; 0 keeps the default. */
  o.max_frame = data[1] == 0 ? 0 : o.length_bytes + data[1];
  CHECK(rn_codec_init(&c, &o) == 0);
  s = (const char *)data + 2;
  len = size - 2;

  r = rn_codec_frame(&c, s, len, &f);
  CHECK(r == 1 || r == 0 || r == RN_EFRAMESIZE);
  if (r == 1) {
    CHECK(f.size <= len && f.size <= c.max_frame);
    CHECK(f.body_offset == c.length_bytes);
    CHECK(f.body_offset + f.body_len == f.size);
    CHECK(rn_codec_frame(&c, s, f.size - 1, &g) == 0);
    /* Re-encoding the body gives back the same bytes. */
    rn_buf_init(&b);
    CHECK(rn_codec_encode(&c, &b, s + f.body_offset, f.body_len) == 0);
    CHECK(b.len == f.size && memcmp(b.base, s, f.size) == 0);
    rn_buf_free(&b);
  } else if (r == 0) {
    CHECK(f.size > len && f.size <= c.max_frame);
  }

  /* Any body that fits encodes into one frame that frames back whole. */
  rn_buf_init(&b);
  r = rn_codec_encode(&c, &b, s, len);
  if (r == 0) {
    CHECK(rn_codec_frame(&c, b.base, b.len, &f) == 1);
    CHECK(f.size == b.len && f.body_len == len);
    CHECK(len == 0 || memcmp(b.base + f.body_offset, s, len) == 0);
  } else {
    CHECK(r == RN_EFRAMESIZE && b.len == 0);
    CHECK(len + c.length_bytes > c.max_frame ||
          (c.length_bytes < 8 && len >> (8 * c.length_bytes) != 0));
  }
  rn_buf_free(&b);
  return 0;
}

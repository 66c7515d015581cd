/* libFuzzer target for the line codec.
 * Input: [delimiter length k (1..4)][k delimiter bytes][max_frame byte]
 * then the stream. NUL bytes in the delimiter become '\n' (the option is a
 * C string). */
/* Build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore/include \
 *     -Icore/src/runtime fuzz/fuzz_codec_line.c \
 *     core/src/runtime/{error,buf,endpoint}.c \
 *     core/src/codec/{codec,length,line,resp,resp_value,rnp}.c -luv -o /tmp/fuzz_codec_line
 *   mkdir -p /tmp/codec_line && /tmp/fuzz_codec_line /tmp/codec_line fuzz/corpus/codec_line */
#include "resilnet.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(x) ((x) ? (void)0 : abort())

#include "fuzz_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The obvious quadratic search, to check the codec's faster one. */
static size_t naive_find(const char *s, size_t len, const char *d, size_t dlen) {
  size_t i;

  for (i = 0; i + dlen <= len; i++)
    if (memcmp(s + i, d, dlen) == 0)
      return i;
  return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char delim[5];
  size_t k, len, at, window;
  rn_codec_options_t o;
  rn_codec_t c;
  rn_frame_t f;
  rn_buf_t b;
  const char *s;
  int r;

  if (size < 1)
    return 0;
  k = (size_t)(data[0] & 3) + 1;
  if (size < 2 + k)
    return 0;
  memcpy(delim, data + 1, k);
  for (size_t i = 0; i < k; i++)
    if (delim[i] == '\0')
      delim[i] = '\n';
  delim[k] = '\0';
  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_LINE;
  o.delimiter = delim;
  o.max_frame = data[1 + k] == 0 ? 0 : k + data[1 + k];
  CHECK(rn_codec_init(&c, &o) == 0);
  s = (const char *)data + 2 + k;
  len = size - 2 - k;

  window = len < c.max_frame ? len : c.max_frame;
  at = naive_find(s, window, delim, k);
  r = rn_codec_frame(&c, s, len, &f);
  if (at < window) {
    CHECK(r == 1);
    CHECK(f.body_offset == 0 && f.body_len == at && f.size == at + k);
  } else if (len >= c.max_frame) {
    CHECK(r == RN_EFRAMESIZE);
  } else {
    CHECK(r == 0 && f.size > len);
  }
  check_scan(&c, s, len, r, &f, (size_t)data[0] % 5 + 1);

  /* Encode: refused exactly when the receiver would cut the frame short. */
  rn_buf_init(&b);
  r = rn_codec_encode(&c, &b, s, len);
  if (len + k > c.max_frame) {
    CHECK(r == RN_EFRAMESIZE && b.len == 0);
  } else if (r == 0) {
    CHECK(b.len == len + k);
    CHECK(naive_find(b.base, b.len, delim, k) == len);
    CHECK(rn_codec_frame(&c, b.base, b.len, &f) == 1 && f.body_len == len);
  } else {
    char *tmp = malloc(len + k);
    CHECK(r == UV_EINVAL && b.len == 0 && tmp != NULL);
    memcpy(tmp, s, len);
    memcpy(tmp + len, delim, k);
    CHECK(naive_find(tmp, len + k, delim, k) < len);
    free(tmp);
  }
  rn_buf_free(&b);
  return 0;
}

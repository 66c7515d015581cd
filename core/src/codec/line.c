/* "line": frames end with a delimiter of 1..16 bytes; the body excludes it. */
#include "codec.h"

#include <string.h>

/* Index of the first delimiter lying wholly within data[0..len), or len.
 * memchr finds candidates for the first byte, so the scan stays linear
 * (times the delimiter length at worst) instead of comparing at every
 * offset. */
static size_t find_delimiter(const rn_codec_t *codec, const char *data,
                             size_t len) {
  size_t dlen = codec->delimiter_len;
  size_t i = 0;

  while (len - i >= dlen) {
    const char *hit = memchr(data + i, codec->delimiter[0], len - i - dlen + 1);
    if (hit == NULL)
      break;
    i = (size_t)(hit - data);
    if (memcmp(hit, codec->delimiter, dlen) == 0)
      return i;
    i++;
  }
  return len;
}

/* Searches from `from`, where an earlier look stopped: bytes before it
 * hold no delimiter, so a line read a byte at a time is searched once. */
static int line_find(const rn_codec_t *codec, const char *data, size_t len,
                     size_t from, rn_frame_t *frame, size_t *stopped) {
  /* Only the first max_frame bytes can hold a frame that fits. */
  size_t window = RN_MIN(len, codec->max_frame);
  size_t at;

  if (from > window)
    from = window;
  at = from + find_delimiter(codec, data + from, window - from);

  frame->body_offset = 0;
  frame->flags = 0;
  if (at == window) {
    if (len >= codec->max_frame)
      return RN_EFRAMESIZE;
    /* Need at least one more byte; see codec/length.c for the hint. A
     * delimiter may start in the last delimiter_len - 1 bytes. */
    frame->size = len + 1;
    frame->body_len = 0;
    *stopped = window >= codec->delimiter_len
                   ? window - codec->delimiter_len + 1
                   : 0;
    return 0;
  }
  frame->size = at + codec->delimiter_len;
  frame->body_len = at;
  return 1;
}

static int line_frame(const rn_codec_t *codec, const char *data, size_t len,
                      rn_frame_t *frame) {
  size_t stopped;
  return line_find(codec, data, len, 0, frame, &stopped);
}

static int line_scan(const rn_codec_t *codec, rn_frame_scan_t *scan,
                     const char *data, size_t len, rn_frame_t *frame) {
  return line_find(codec, data, len, scan->done, frame, &scan->done);
}

/* 1 if the receiver would find a delimiter in body + delimiter before the
 * appended one: inside the body, or straddling its end (delimiter "aa",
 * body "xa"), either of which would cut the frame short. */
static int ends_early(const rn_codec_t *codec, const char *body, size_t len) {
  const char *d = codec->delimiter;
  size_t dlen = codec->delimiter_len;
  size_t k;

  if (find_delimiter(codec, body, len) != len)
    return 1;
  for (k = 1; k < dlen && k <= len; k++)
    if (memcmp(body + len - k, d, k) == 0 && memcmp(d + k, d, dlen - k) == 0)
      return 1;
  return 0;
}

static int line_encode(const rn_codec_t *codec, rn_buf_t *out,
                       const char *body, size_t len) {
  size_t dlen = codec->delimiter_len;
  int err;

  if (len > codec->max_frame || codec->max_frame - len < dlen)
    return RN_EFRAMESIZE;
  if (ends_early(codec, body, len))
    return UV_EINVAL;
  err = rn_buf_reserve(out, len + dlen);
  if (err != 0)
    return err;
  rn_buf_append(out, body, len); /* cannot fail after the reserve */
  rn_buf_append(out, codec->delimiter, dlen);
  return 0;
}

const rn_codec_type_t rn__codec_line = {"line", line_frame, line_encode,
                                         line_scan};

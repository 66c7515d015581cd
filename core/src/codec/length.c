/* "length": a big-endian length prefix of 1, 2, 4 or 8 bytes counting the
 * body only, then the body. */
#include "codec.h"

#include <string.h>

/* On "need more" the frame's size is set to the fewest bytes the frame can
 * have, so a caller may skip calls until that much is buffered. */
static int need_more(rn_frame_t *frame, size_t size) {
  frame->size = size;
  frame->body_offset = 0;
  frame->body_len = 0;
  frame->flags = 0;
  return 0;
}

/* The prefix's value; n is 1, 2, 4 or 8 (rn_codec_init checks). Each width
 * spelled out, so that compilers load it in one go: every reply passes
 * here. */
static uint64_t length_prefix(const unsigned char *p, size_t n) {
  uint64_t v = 0;
  size_t i;
  switch (n) {
  case 1: return p[0];
  case 2: return (uint64_t)p[0] << 8 | p[1];
  case 4:
    return (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 |
           (uint64_t)p[2] << 8 | p[3];
  default:
    for (i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
  }
}

static int length_frame(const rn_codec_t *codec, const char *data, size_t len,
                        rn_frame_t *frame) {
  size_t n = codec->length_bytes;
  uint64_t body;

  if (len < n)
    return need_more(frame, n);
  body = length_prefix((const unsigned char *)data, n);
  /* Compared without adding, so an 8-byte length cannot wrap. */
  if (codec->max_frame < n || body > codec->max_frame - n)
    return RN_EFRAMESIZE;
  if (len - n < body)
    return need_more(frame, n + (size_t)body);
  frame->size = n + (size_t)body;
  frame->body_offset = n;
  frame->body_len = (size_t)body;
  frame->flags = 0;
  return 1;
}

static int length_encode(const rn_codec_t *codec, rn_buf_t *out,
                         const char *body, size_t len) {
  size_t n = codec->length_bytes;
  unsigned char *prefix;
  size_t i;
  int err;

  /* A body too long for the prefix is also a frame too large. */
  if (codec->max_frame < n || len > codec->max_frame - n ||
      (n < 8 && (uint64_t)len >> (8 * n) != 0))
    return RN_EFRAMESIZE;
  err = rn_buf_reserve(out, n + len);
  if (err != 0)
    return err;
  /* Written in place: every request passes here. */
  prefix = (unsigned char *)out->base + out->len;
  for (i = 0; i < n; i++)
    prefix[n - 1 - i] = (unsigned char)((uint64_t)len >> (8 * i));
  if (len > 0) /* an empty body may come as NULL */
    memcpy(prefix + n, body, len);
  out->len += n + len;
  return 0;
}

const rn_codec_type_t rn__codec_length = {"length", length_frame,
                                          length_encode, NULL};

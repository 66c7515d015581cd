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

static int length_frame(const rn_codec_t *codec, const char *data, size_t len,
                        rn_frame_t *frame) {
  const unsigned char *p = (const unsigned char *)data;
  size_t n = codec->length_bytes;
  uint64_t body = 0;
  size_t i;

  if (len < n)
    return need_more(frame, n);
  for (i = 0; i < n; i++)
    body = (body << 8) | p[i];
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

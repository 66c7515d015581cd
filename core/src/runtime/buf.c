/* Growable byte buffer. */
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Small first allocation: most frames are short, and doubling from here
 * reaches any size in a handful of reallocs. */
#define RN_BUF_MIN_CAP 64

void rn_buf_init(rn_buf_t *buf) {
  buf->base = NULL;
  buf->len = 0;
  buf->cap = 0;
}

int rn_buf_reserve(rn_buf_t *buf, size_t extra) {
  size_t need, cap;
  char *base;

  if (buf->cap - buf->len >= extra)
    return 0;
  if (extra > SIZE_MAX - buf->len)
    return UV_ENOMEM;
  need = buf->len + extra;

  /* Doubling keeps appends amortised O(1); past SIZE_MAX / 2 the exact
   * size is the only one left that can be asked for. */
  cap = buf->cap < RN_BUF_MIN_CAP ? RN_BUF_MIN_CAP : buf->cap;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;

  base = realloc(buf->base, cap);
  if (base == NULL)
    return UV_ENOMEM;
  buf->base = base;
  buf->cap = cap;
  return 0;
}

int rn_buf_append(rn_buf_t *buf, const void *data, size_t len) {
  int err;

  if (len == 0)
    return 0; /* data may be NULL then; memcpy(NULL) is undefined */
  err = rn_buf_reserve(buf, len);
  if (err != 0)
    return err;
  memcpy(buf->base + buf->len, data, len);
  buf->len += len;
  return 0;
}

void rn_buf_consume(rn_buf_t *buf, size_t n) {
  if (n >= buf->len) {
    buf->len = 0;
    return;
  }
  memmove(buf->base, buf->base + n, buf->len - n);
  buf->len -= n;
}

void rn_buf_free(rn_buf_t *buf) {
  free(buf->base);
  rn_buf_init(buf);
}

void rn__buf_read_space(rn_buf_t *buf, size_t chunk, uv_buf_t *out) {
  if (rn_buf_reserve(buf, chunk) != 0) {
    *out = uv_buf_init(NULL, 0);
    return;
  }
  *out = uv_buf_init(buf->base + buf->len, (unsigned)(buf->cap - buf->len));
}

void rn__wipe(void *p, size_t n) {
  volatile unsigned char *v = p;
  while (n--) *v++ = 0;
}

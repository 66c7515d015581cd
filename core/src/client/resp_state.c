/* What a resp request leaves its connection in, beyond its own reply: a
 * MULTI queues every later command, a WATCH arms a check on EXEC, a
 * SUBSCRIBE or MONITOR turns the connection into a stream, and SELECT,
 * AUTH, HELLO, RESET or CLIENT change which database, user, protocol or
 * settings the next request meets. The pool's connections must all be
 * alike (its setup made them so), so these are the requests after which
 * a connection cannot be handed to another user as it is: a held one is
 * closed when given back (hold.c), and a pool batch may not leave one so
 * (batch.c). One list for both. */
#include "client.h"

#include <string.h>
#include <strings.h>

/* The command's name (the first bulk string of the array), or NULL. */
static const char *state_name(const char *f, size_t len, size_t *n) {
  const char *p = f, *end = f + len, *crlf;
  size_t k = 0;
  if (len < 4 || *p != '*') return NULL;
  crlf = memchr(p, '\n', (size_t)(end - p));
  if (crlf == NULL || crlf + 1 >= end || crlf[1] != '$') return NULL;
  p = crlf + 2;
  while (p < end && *p >= '0' && *p <= '9') k = k * 10 + (size_t)(*p++ - '0');
  if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return NULL;
  p += 2;
  if (k > (size_t)(end - p)) return NULL;
  *n = k;
  return p;
}

static int state_is(const char *name, size_t n, const char *word) {
  return n == strlen(word) && strncasecmp(name, word, n) == 0;
}

/* Changes the connection's user, database, protocol or mode: whoever
 * gets the connection next would meet it so. */
static const char *const state_unknown[] = {
    "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "RESET", "SELECT",
    "CLIENT", "HELLO", "AUTH", "READONLY", "READWRITE", NULL};

static void state_track_one(rn__resp_state_t *s, const char *frame,
                            size_t len) {
  size_t n, i;
  const char *name = state_name(frame, len, &n);
  if (name == NULL) return;
  if (state_is(name, n, "MULTI")) {
    s->in_multi = 1;
  } else if (state_is(name, n, "EXEC") || state_is(name, n, "DISCARD")) {
    s->in_multi = 0;
    s->watching = 0; /* both end a WATCH */
  } else if (state_is(name, n, "WATCH")) {
    s->watching = 1;
  } else if (state_is(name, n, "UNWATCH")) {
    s->watching = 0;
  } else {
    for (i = 0; state_unknown[i] != NULL; i++)
      if (state_is(name, n, state_unknown[i])) s->unknown = 1;
  }
}

void rn__resp_state_track(rn__resp_state_t *s, const rn_codec_t *codec,
                          const char *frames, size_t len) {
  size_t off = 0;
  if (codec->protocol != RN_PROTOCOL_RESP) return;
  while (off < len) {
    rn_frame_t f;
    if (rn_codec_frame(codec, frames + off, len - off, &f) != 1) return;
    state_track_one(s, frames + off, f.size);
    off += f.size;
  }
}

int rn__resp_command_is(const char *frame, size_t len, const char *word) {
  size_t n;
  const char *name = state_name(frame, len, &n);
  return name != NULL && state_is(name, n, word);
}

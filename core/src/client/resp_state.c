/* What a resp request leaves its connection in, beyond its own reply: a
 * MULTI queues every later command, a WATCH arms a check on EXEC, a
 * SUBSCRIBE or MONITOR turns the connection into a stream, and SELECT,
 * AUTH, HELLO, RESET or CLIENT SETNAME (TRACKING, REPLY, ...) change which
 * database, user, protocol or settings the next request meets. The pool's connections must all be
 * alike (its setup made them so), so these are the requests after which
 * a connection cannot be handed to another user as it is: a held one is
 * closed when given back (hold.c), and a pool call or batch may not leave
 * one so (pool.c, batch.c). One list for all three. */
#include "client.h"
#include "../codec/resp_errors.h"

#include <stdint.h>
#include <string.h>

/* The command's name (rn__resp_command_name: an array's first bulk
 * string, or an inline command's first word), or NULL. */
static const char *state_name(const char *f, size_t len, size_t *n) {
  const char *name;
  return rn__resp_command_name(f, len, &name, n) ? name : NULL;
}

enum {
  STATE_MULTI,
  STATE_END,
  STATE_WATCH,
  STATE_UNWATCH,
  STATE_CLIENT, /* some of its subcommands: client_setting */
  STATE_UNKNOWN
};

/* The commands that change what the next request meets, by length (4 to
 * 10): a request's name is compared only with those of its length. */
static const struct {
  const char *word;
  unsigned char effect;
} state_words[] = {
    {"EXEC", STATE_END},          {"AUTH", STATE_UNKNOWN},
    {"MULTI", STATE_MULTI},       {"WATCH", STATE_WATCH},
    {"RESET", STATE_UNKNOWN},     {"HELLO", STATE_UNKNOWN},
    {"SELECT", STATE_UNKNOWN},    {"CLIENT", STATE_CLIENT},
    {"DISCARD", STATE_END},       {"UNWATCH", STATE_UNWATCH},
    {"MONITOR", STATE_UNKNOWN},   {"READONLY", STATE_UNKNOWN},
    {"SUBSCRIBE", STATE_UNKNOWN}, {"READWRITE", STATE_UNKNOWN},
    {"PSUBSCRIBE", STATE_UNKNOWN}, {"SSUBSCRIBE", STATE_UNKNOWN},
};
/* The first of state_words of each length from 4; one more: the end. */
static const unsigned char state_first[] = {0, 2, 6, 8, 11, 12, 14, 16};

/* The last letters of state_words of each length from 4, one bit a
 * letter (its low five bits: the same for either case). A name whose
 * last letter has no bit here is none of them, and most requests' names
 * (GET, ECHO, HGETALL, ...) leave on that one test. A non-letter may
 * share a letter's bit: it then meets the full compare. */
#define LAST(c) (1u << ((unsigned)(c)&31u))
static const uint32_t state_last[] = {
    LAST('C') | LAST('H'),                         /* EXEC AUTH */
    LAST('I') | LAST('H') | LAST('T') | LAST('O'), /* MULTI ... HELLO */
    LAST('T'),                                     /* SELECT CLIENT */
    LAST('D') | LAST('H') | LAST('R'),             /* DISCARD ... MONITOR */
    LAST('Y'),                                     /* READONLY */
    LAST('E'),                                     /* SUBSCRIBE READWRITE */
    LAST('E'),                                     /* P-, SSUBSCRIBE */
};
#undef LAST

/* Whether name (n bytes) is word (upper case letters, digits and '-'),
 * letters in any case. Not strncasecmp: this runs for every request. Only
 * letters are folded: '-' (NO-EVICT) is not a letter's lower case. */
static int state_word_is(const char *name, size_t n, const char *word) {
  size_t i;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c >= 'a' && c <= 'z') c = (unsigned char)(c - ('a' - 'A'));
    if (c != (unsigned char)word[i]) return 0;
  }
  return 1;
}

/* CLIENT's subcommands that change what the connection's next request
 * meets (its name, tracking, replies on or off, eviction and LRU touches);
 * the others (ID, INFO, LIST, KILL, PAUSE, ...) only ask or act on other
 * connections. name: the command's name as state_name found it. */
static int client_setting(const char *frame, size_t len, const char *name,
                          size_t n) {
  static const char *const settings[] = {"SETNAME", "SETINFO", "TRACKING",
                                         "REPLY",   "CACHING", "NO-EVICT",
                                         "NO-TOUCH", NULL};
  const char *p = name + n, *end = frame + len;
  size_t k = 0, i;
  if (frame[0] != '*') { /* inline: the next word */
    while (p < end && *p == ' ') p++;
    while (p + k < end && p[k] != ' ' && p[k] != '\r' && p[k] != '\n') k++;
  } else {
    if (end - p < 4 || p[0] != '\r' || p[1] != '\n' || p[2] != '$')
      return 0; /* no subcommand: Redis refuses it, nothing changes */
    p += 3;
    while (p < end && *p >= '0' && *p <= '9')
      k = k * 10 + (size_t)(*p++ - '0');
    if (end - p < 2 || p[0] != '\r' || p[1] != '\n' ||
        k > (size_t)(end - p - 2))
      return 0;
    p += 2;
  }
  for (i = 0; settings[i] != NULL; i++)
    if (strlen(settings[i]) == k && state_word_is(p, k, settings[i]))
      return 1;
  return 0;
}

/* What one request, whose name state_name found (name, n), does to the
 * connection's state (MULTI, WATCH, ...: the list above; others nothing). */
static void state_track_named(rn__resp_state_t *s, const char *frame,
                              size_t len, const char *name, size_t n) {
  size_t i;
  if (name == NULL || n < 4 || n > 10 ||
      !((state_last[n - 4] >> ((unsigned char)name[n - 1] & 31u)) & 1u))
    return;
  for (i = state_first[n - 4]; i < state_first[n - 3]; i++) {
    if (!state_word_is(name, n, state_words[i].word)) continue;
    switch (state_words[i].effect) {
    case STATE_MULTI: s->in_multi = 1; break;
    case STATE_END: /* EXEC, DISCARD: both end a WATCH too */
      s->in_multi = 0;
      s->watching = 0;
      break;
    case STATE_WATCH: s->watching = 1; break;
    case STATE_UNWATCH: s->watching = 0; break;
    case STATE_CLIENT:
      if (client_setting(frame, len, name, n)) s->unknown = 1;
      break;
    default: s->unknown = 1;
    }
    return;
  }
}

void rn__resp_state_track_one(rn__resp_state_t *s, const char *frame,
                              size_t len) {
  size_t n;
  const char *name = state_name(frame, len, &n);
  state_track_named(s, frame, len, name, n);
}

void rn__resp_state_track(rn__resp_state_t *s, const rn_codec_t *codec,
                          const char *frames, size_t len) {
  size_t off = 0;
  if (codec->protocol != RN_PROTOCOL_RESP) return;
  while (off < len) {
    rn_frame_t f;
    if (rn_codec_frame(codec, frames + off, len - off, &f) != 1) return;
    rn__resp_state_track_one(s, frames + off, f.size);
    off += f.size;
  }
}

int rn__resp_command_is(const char *frame, size_t len, const char *word) {
  size_t n;
  const char *name = state_name(frame, len, &n);
  return name != NULL && n == strlen(word) && state_word_is(name, n, word);
}

/* Out of line: inlined into rn_pool_call, its walk made that frame larger
 * for every protocol. */
RN_NOINLINE int rn__resp_call_check(const rn_codec_t *codec,
                                    const char *frame, size_t len,
                                    int pooled) {
  rn__resp_state_t s;
  const char *name;
  size_t size, n;
  /* One pass gives both the frame's end and its name. */
  int r = rn__resp_request(codec, frame, len, &size, &name, &n);
  if (r == RN_EFRAMESIZE) return RN_EFRAMESIZE;
  if (r != 1 || size != len) return UV_EINVAL;
  if (!pooled) return 0;
  memset(&s, 0, sizeof(s));
  state_track_named(&s, frame, len, name, n);
  return s.in_multi || s.watching || s.unknown ? UV_EINVAL : 0;
}

/* Which Redis error replies prove the command was not executed.
 *
 * Redis checks these conditions before it runs a command and answers with
 * the error instead of running it: the server is loading its data
 * (LOADING), is a replica (READONLY), has lost its master (MASTERDOWN), a
 * cluster slot is elsewhere or moving (MOVED, ASK, TRYAGAIN, CLUSTERDOWN),
 * a script is running too long (BUSY), too few replicas (NOREPLICAS), out
 * of memory for a write (OOM), not authenticated or not allowed (NOAUTH,
 * WRONGPASS, NOPERM), an unknown script sha (NOSCRIPT). The reasoning for
 * each, and the exceptions below, is written out in docs/retry-rules.md.
 *
 * The exceptions: an error to EXEC says nothing of the commands queued
 * before it (they were other calls), and a script may write and then fail
 * with any of these codes (an error raised by redis.call inside it, or
 * one it makes up with redis.error_reply). Only NOSCRIPT (the script is
 * unknown, so none of it ran) and BUSY (another script holds the server:
 * this one was refused at the door) prove anything about a script. */
#include "resp_errors.h"
#include "codec.h"

#include <string.h>

const char *const rn__resp_not_executed_builtin[] = {
    "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN",
    "MOVED",   "ASK",      "BUSY",       "NOREPLICAS", "OOM",
    "NOAUTH",  "WRONGPASS", "NOPERM",    "NOSCRIPT",  NULL};

/* Case-insensitive equality of a length-counted name with a C string. */
static int name_is(const char *name, size_t len, const char *want) {
  size_t i;
  for (i = 0; i < len; i++) {
    char c = name[i];
    if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
    if (want[i] == '\0' || c != want[i]) return 0;
  }
  return want[len] == '\0';
}

int rn__resp_head(const char *p, size_t len, size_t *count,
                  const char **word, size_t *word_len) {
  const char *end = p + len, *lf;
  size_t n = 0;
  if (len < 4 || (p[0] != '*' && p[0] != '>')) return 0;
  lf = memchr(p, '\n', len);
  if (lf == NULL || lf + 1 >= end) return 0;
  for (*count = 0, p++; p < lf - 1 && *p >= '0' && *p <= '9'; p++)
    *count = *count * 10 + (size_t)(*p - '0');
  p = lf + 1;
  if (*p == '+') { /* a simple string: up to its CR */
    lf = memchr(p, '\r', (size_t)(end - p));
    if (lf == NULL) return 0;
    *word = p + 1;
    *word_len = (size_t)(lf - p - 1);
    return 1;
  }
  if (*p++ != '$') return 0;
  while (p < end && *p >= '0' && *p <= '9') n = n * 10 + (size_t)(*p++ - '0');
  if ((size_t)(end - p) < 2 + n || p[0] != '\r' || p[1] != '\n') return 0;
  *word = p + 2;
  *word_len = n;
  return 1;
}

int rn__resp_command_name(const char *p, size_t len, const char **name,
                          size_t *name_len) {
  size_t n = 0;
  if (len > 0 && p[0] == '*') return rn__resp_head(p, len, &n, name, name_len);
  *name = p;
  while (n < len && p[n] != ' ' && p[n] != '\r' && p[n] != '\n') n++;
  *name_len = n;
  return n > 0;
}

/* "<digits>\r\n" at p: the number (*n), and where the CRLF ends; NULL if
 * the bytes are not that. The caller has checked that the bytes end with
 * LF, so the digits cannot run past the end (nor can p[1] be read past
 * it: p[0] is then that LF, not CR). Nine digits at most (a bulk string is
 * at most 512 MB): a longer count is left to the codec's framer, and no
 * sum with it can wrap. */
static const unsigned char *crlf_count(const unsigned char *p, size_t *n) {
  const unsigned char *digits = p;
  size_t v = 0;
  unsigned d = (unsigned)*p - '0';
  /* One digit, the usual count of a request's parts and of its shorter
   * words: three compares. (p[0] is a digit, not the closing LF: p[1]
   * can be read, and p[2] once p[1] is CR.) */
  if (d < 10 && p[1] == '\r' && p[2] == '\n') {
    *n = d;
    return p + 3;
  }
  while ((d = (unsigned)*p - '0') < 10) {
    v = v * 10 + d;
    p++;
  }
  if (p == digits || p - digits > 9 || p[0] != '\r' || p[1] != '\n')
    return NULL;
  *n = v;
  return p + 2;
}

/* An array of bulk strings ("*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n"), the
 * shape of every request a client library makes: its size, and its first
 * bulk as the name. 0 if the bytes are not (all of) that shape. Every
 * call's request passes here: one pass, no bounds check per digit. */
static int bulk_array(const char *frame, size_t len, size_t *size,
                      const char **name, size_t *name_len) {
  const unsigned char *p = (const unsigned char *)frame + 1;
  const unsigned char *end = (const unsigned char *)frame + len;
  size_t count, n;
  if (frame[len - 1] != '\n' || (p = crlf_count(p, &count)) == NULL ||
      count == 0)
    return 0;
  for (;;) {
    if (p >= end || *p != '$' || (p = crlf_count(p + 1, &n)) == NULL ||
        (size_t)(end - p) < n + 2 || p[n] != '\r' || p[n + 1] != '\n')
      return 0;
    if (*name == NULL) { /* the first: the command's name */
      *name = (const char *)p;
      *name_len = n;
    }
    p += n + 2;
    if (--count == 0) break;
  }
  *size = (size_t)((const char *)p - frame);
  return 1;
}

int rn__resp_request(const rn_codec_t *codec, const char *frame, size_t len,
                     size_t *size, const char **name, size_t *name_len) {
  *name = NULL;
  *name_len = 0;
  if (len == 0) return 0;
  if (frame[0] == '*') {
    if (!bulk_array(frame, len, size, name, name_len)) return 0;
  } else if (strchr("$+-:_,#!=(%~>|", frame[0]) == NULL) {
    /* An inline command, as Redis reads one: a line, ended by LF, that
     * starts with the command's name. */
    const char *lf = memchr(frame, '\n', RN_MIN(len, codec->max_frame));
    if (lf == NULL) return len > codec->max_frame ? RN_EFRAMESIZE : 0;
    *size = (size_t)(lf - frame) + 1;
    if (!rn__resp_command_name(frame, *size, name, name_len)) {
      *name = NULL;
      return 0;
    }
  } else {
    return 0; /* a bare value: Redis answers it with an error, if at all */
  }
  return *size > codec->max_frame ? RN_EFRAMESIZE : 1;
}

static int is_script(const char *name, size_t len) {
  return name_is(name, len, "EVAL") || name_is(name, len, "EVALSHA") ||
         name_is(name, len, "EVAL_RO") || name_is(name, len, "EVALSHA_RO") ||
         name_is(name, len, "FCALL") || name_is(name, len, "FCALL_RO");
}

int rn__resp_error_code(const char *p, size_t len, const char **code,
                      size_t *code_len) {
  const char *end = p + len;
  size_t n = 0;
  if (len > 0 && p[0] == '!') {
    const char *lf = memchr(p, '\n', len);
    if (lf == NULL) return 0;
    p = lf + 1;
  } else if (len > 0 && p[0] == '-') {
    p++;
  } else {
    return 0;
  }
  while (p + n < end && p[n] != ' ' && p[n] != '\r' && p[n] != '\n') n++;
  *code = p;
  *code_len = n;
  return n > 0;
}

int rn__resp_not_executed(const char *const *codes, const char *request,
                          size_t request_len, const char *reply,
                          size_t reply_len) {
  const char *code, *name;
  size_t code_len, name_len, i;
  if (codes == NULL) codes = rn__resp_not_executed_builtin;
  if (!rn__resp_error_code(reply, reply_len, &code, &code_len)) return 0;
  for (i = 0; codes[i] != NULL; i++)
    if (strlen(codes[i]) == code_len &&
        memcmp(codes[i], code, code_len) == 0)
      break;
  if (codes[i] == NULL) return 0;
  if (!rn__resp_command_name(request, request_len, &name, &name_len))
    return 0;
  if (name_is(name, name_len, "EXEC")) return 0;
  if (is_script(name, name_len))
    return name_is(code, code_len, "NOSCRIPT") ||
           name_is(code, code_len, "BUSY");
  return 1;
}

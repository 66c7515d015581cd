/* What the resp server takes from its clients, as Redis does: commands as
 * arrays of bulk strings, or inline commands ("PING\r\n", what telnet and
 * redis-benchmark's PING_INLINE send), turned into the same array so that
 * the application sees one form. Anything else is a protocol error,
 * answered with Redis's "-ERR Protocol error: ..." by server.c before the
 * connection closes. */
#include "server.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* Redis's bound for one inline command (PROTO_INLINE_MAX_SIZE); a smaller
 * max_frame bounds it too. */
#define RN_SERVER_INLINE_MAX (64 * 1024)

static int resp_error(char *why, size_t size, const char *text, int c) {
  if (c < 0)
    snprintf(why, size, "ERR Protocol error: %s", text);
  else
    snprintf(why, size, "ERR Protocol error: %s, got '%c'", text,
             isprint(c) ? c : '?');
  return RN_EBADFRAME;
}

/* A framed RESP value is a command only as an array of bulk strings.
 * 1: a command; 0: an empty or null array, which Redis skips without a
 * reply; RN_EBADFRAME with why. */
static int resp_check_command(const char *data, size_t len, char *why,
                              size_t why_size) {
  rn_resp_item_t it;
  size_t off;
  int64_t i;

  if (rn_resp_item(data, len, &it) != 1)
    return resp_error(why, why_size, "invalid multibulk length", -1);
  if (it.type == RN_RESP_NULL || (it.type == RN_RESP_ARRAY &&
                                  it.integer == 0))
    return 0;
  if (it.type != RN_RESP_ARRAY)
    return resp_error(why, why_size, "invalid multibulk length", -1);
  off = it.size;
  for (i = 0; i < it.integer; i++) {
    rn_resp_item_t el;
    (void)rn_resp_item(data + off, len - off, &el); /* framed: complete */
    if (el.type == RN_RESP_NULL && data[off] == '$')
      return resp_error(why, why_size, "invalid bulk length", -1);
    if (el.type != RN_RESP_BULK)
      return resp_error(why, why_size, "expected '$'",
                        (unsigned char)data[off]);
    off += el.size;
  }
  return 1;
}

static int hex_digit(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One argument of an inline command from *p, as Redis's sdssplitargs
 * reads it: bare words, "double quoted" with \n \r \t \b \a \\ \" \xHH,
 * 'single quoted' with \'. 1 (appended to arg), 0 (no more), or
 * RN_EBADFRAME (unbalanced quotes). */
static int inline_arg(const char **p, const char *end, rn_buf_t *arg) {
  const char *s = *p;
  char quote = 0;

  while (s < end && isspace((unsigned char)*s)) s++;
  if (s == end) return 0;
  if (*s == '"' || *s == '\'') quote = *s++;
  for (;;) {
    char c;
    if (s == end) {
      if (quote) return RN_EBADFRAME;
      break;
    }
    c = *s;
    if (!quote && isspace((unsigned char)c)) break;
    if (quote && c == quote) {
      s++;
      /* a closing quote must end the argument */
      if (s < end && !isspace((unsigned char)*s)) return RN_EBADFRAME;
      break;
    }
    if (quote == '"' && c == '\\' && s + 1 < end) {
      int hi, lo;
      s++;
      c = *s;
      if (c == 'x' && s + 2 < end && (hi = hex_digit(s[1])) >= 0 &&
          (lo = hex_digit(s[2])) >= 0) {
        c = (char)(hi * 16 + lo);
        s += 2;
      } else if (c == 'n') {
        c = '\n';
      } else if (c == 'r') {
        c = '\r';
      } else if (c == 't') {
        c = '\t';
      } else if (c == 'b') {
        c = '\b';
      } else if (c == 'a') {
        c = '\a';
      }
    } else if (quote == '\'' && c == '\\' && s + 1 < end && s[1] == '\'') {
      s++;
      c = '\'';
    }
    if (rn_buf_append(arg, &c, 1) != 0) return UV_ENOMEM;
    s++;
  }
  *p = s;
  return 1;
}

/* An inline command line (without its line end) as the RESP array of bulk
 * strings a client library would have sent, in server->inline_out (which
 * holds each argument while it is decoded). UV_E2BIG past max_elements
 * arguments, found as they are decoded: the bound holds for both forms. */
static int inline_command(rn_server_t *server, const char *line, size_t len,
                          char *why, size_t why_size) {
  rn_buf_t *args = &server->inline_args, *out = &server->inline_out;
  const char *p = line, *end = line + len;
  size_t count = 0;
  int r;

  args->len = 0;
  for (;;) {
    out->len = 0;
    r = inline_arg(&p, end, out);
    if (r <= 0) break;
    if (count == server->options.max_elements) {
      r = UV_E2BIG;
      break;
    }
    if ((r = rn_resp_encode_bulk(args, out->len ? out->base : "",
                                 out->len)) != 0)
      break;
    count++;
  }
  out->len = 0;
  if (r == RN_EBADFRAME)
    return resp_error(why, why_size, "unbalanced quotes in request", -1);
  if (r < 0) return r;
  if (count == 0) return 0; /* an empty line: Redis skips it */
  if ((r = rn_resp_encode_array(out, count)) != 0 ||
      (r = rn_buf_append(out, args->base, args->len)) != 0)
    return r;
  return 1;
}

int rn__server_resp_frame(rn_server_conn_t *conn, const char *data,
                          size_t len, rn_frame_t *f, const char **body,
                          char *why, size_t why_size) {
  rn_server_t *server = conn->server;
  size_t max = RN_MIN(server->codec.max_frame, RN_SERVER_INLINE_MAX);
  const char *nl;
  size_t from, line;
  int r;

  *body = NULL;
  if (data[0] == '*') {
    /* Resumes where the last read left the frame (server.c). */
    r = rn_codec_scan(&server->codec, &conn->scan, data, len, f);
    if (r <= 0) {
      if (r == RN_EFRAMESIZE)
        snprintf(why, why_size,
                 "ERR Protocol error: request larger than max_frame");
      else if (r < 0)
        resp_error(why, why_size, "invalid multibulk request", -1);
      return r;
    }
    r = resp_check_command(data, f->size, why, why_size);
    if (r == 1) *body = data + f->body_offset;
    return r < 0 ? r : 1;
  }
  /* Inline: a line. What was scanned without finding its end is not
   * scanned again when more bytes come. */
  from = RN_MIN(conn->inline_scanned, RN_MIN(len, max));
  nl = memchr(data + from, '\n', RN_MIN(len, max) - from);
  if (nl == NULL) {
    if (len >= max)
      return resp_error(why, why_size, "too big inline request", -1);
    conn->inline_scanned = len;
    return 0;
  }
  conn->inline_scanned = 0;
  memset(f, 0, sizeof(*f));
  f->size = (size_t)(nl - data) + 1;
  line = f->size - 1;
  if (line > 0 && data[line - 1] == '\r') line--;
  r = inline_command(server, data, line, why, why_size);
  if (r == 1) {
    *body = server->inline_out.base;
    f->body_len = server->inline_out.len;
  }
  return r < 0 ? r : 1;
}

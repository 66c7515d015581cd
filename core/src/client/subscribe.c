/* Subscriptions: a held resp connection turned subscriber.
 *
 * In subscribe mode the server speaks unasked: RESP3 sends push frames,
 * RESP2 sends arrays in the reply stream that answer no call (one
 * confirmation per channel of a SUBSCRIBE, then every message). Matched
 * by position they would be taken for the oldest call's reply, so a
 * subscriber's connection routes them to its callback first and matches
 * only the rest (the heartbeat's pong: ["pong", ""] in RESP2) as usual.
 * The (UN)SUBSCRIBE commands themselves are written with no call
 * attached (their answers are among those frames), so nothing waits in
 * `sent` but pings: the heartbeat's deadline is what judges the peer. */
#include "client.h"

#include <string.h>
#include <strings.h>

/* The first element of the RESP array (or push) at body, if it is a
 * bulk or simple string: *name, *n. */
static int sub_first_word(const char *p, size_t len, const char **name,
                          size_t *n) {
  const char *end = p + len, *nl;
  size_t k = 0;
  if (len < 4 || (p[0] != '*' && p[0] != RN_RESP_PUSH)) return 0;
  nl = memchr(p, '\n', len);
  if (nl == NULL || nl + 1 >= end) return 0;
  p = nl + 1;
  if (*p == '+') {
    nl = memchr(p, '\r', (size_t)(end - p));
    if (nl == NULL) return 0;
    *name = p + 1;
    *n = (size_t)(nl - p - 1);
    return 1;
  }
  if (*p++ != '$') return 0;
  while (p < end && *p >= '0' && *p <= '9') k = k * 10 + (size_t)(*p++ - '0');
  if (end - p < 2 || p[0] != '\r') return 0;
  p += 2;
  if (k > (size_t)(end - p)) return 0;
  *name = p;
  *n = k;
  return 1;
}

static int sub_is_event(const char *name, size_t n) {
  static const char *const kinds[] = {
      "message",     "pmessage",     "smessage",     "subscribe",
      "unsubscribe", "psubscribe",   "punsubscribe", "ssubscribe",
      "sunsubscribe"};
  size_t i;
  for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
    if (strlen(kinds[i]) == n && strncasecmp(name, kinds[i], n) == 0)
      return 1;
  return 0;
}

int rn__subscribe_deliver(rn_conn_t *conn, const rn_reply_t *m) {
  rn_pool_t *pool = conn->pool;
  const char *name;
  size_t n;
  if (m->kind == RN_REPLY_IN_ORDER) {
    if (!sub_first_word(m->body, m->body_len, &name, &n) ||
        !sub_is_event(name, n))
      return 0;
  } else if (m->kind != RN_REPLY_PUSH) {
    return 0;
  }
  pool->callback_depth++;
  conn->sub_cb(conn->sub_hold, conn->sub_data, m->body, m->body_len, 0);
  pool->callback_depth--;
  return 1;
}

void rn__subscribe_conn_closed(rn_conn_t *conn, int err) {
  rn_push_cb cb = conn->sub_cb;
  conn->sub_cb = NULL; /* once */
  conn->pool->callback_depth++;
  cb(conn->sub_hold, conn->sub_data, NULL, 0, err != 0 ? err : RN_ECLOSED);
  conn->pool->callback_depth--;
}

int rn_hold_subscribe(rn_hold_t *hold, rn_push_cb cb, void *data) {
  int err;
  rn_conn_t *conn = rn__hold_conn(hold, &err);
  if (conn == NULL) return err;
  if (cb == NULL || conn->sub_cb != NULL ||
      conn->pool->codec.protocol != RN_PROTOCOL_RESP)
    return UV_EINVAL;
  conn->sub_cb = cb;
  conn->sub_data = data;
  conn->sub_hold = hold;
  /* A held connection pings no more (hold.c); a subscriber does. */
  rn__conn_beat_start(conn);
  return 0;
}

int rn_hold_write(rn_hold_t *hold, const char *frames, size_t len) {
  rn_pool_t *pool;
  rn_call_t *call;
  size_t off = 0;
  int err;
  rn_conn_t *conn = rn__hold_conn(hold, &err);
  if (conn == NULL) return err;
  pool = conn->pool;
  if (conn->sub_cb == NULL || frames == NULL || len == 0) return UV_EINVAL;
  if (len > pool->codec.max_frame) return RN_EFRAMESIZE;
  while (off < len) { /* whole requests only */
    rn_frame_t f;
    if (rn_codec_frame(&pool->codec, frames + off, len - off, &f) != 1)
      return UV_EINVAL;
    off += f.size;
  }
  call = rn__call_new(pool);
  if (call == NULL) return UV_ENOMEM;
  call->internal = 1;
  call->unanswered = 1;
  if ((err = rn__call_set_frame(call, frames, len)) != 0) {
    call->done = 1;
    rn__call_release(call);
    return err;
  }
  rn__conn_enqueue(conn, call);
  return 0;
}

/* Subscriptions: a held resp connection turned subscriber.
 *
 * In subscribe mode the server speaks unasked: RESP3 sends push frames,
 * RESP2 sends arrays in the reply stream that answer no call (one
 * confirmation per channel of a SUBSCRIBE, then every message). Matched
 * by position they would be taken for the oldest call's reply, so a
 * subscriber's connection routes them to its callback first.
 *
 * What was written keeps its order in `sent`: each (UN)SUBSCRIBE is an
 * internal call (sub_cmd) that leaves with its last confirmation, one per
 * name, or with the error that refuses it (-NOPERM from an ACL); the
 * heartbeat's pings sit among them. So an error reply goes to what it
 * answers: the command's refusal to the callback, a ping's (a -LOADING)
 * to the ping, never one for the other. The heartbeat judges the
 * silence of both.
 *
 * Back-pressure: rn_hold_pause stops reading the connection (frames read
 * already wait in its buffer) until rn_hold_resume; the server's and the
 * kernel's buffers hold the rest. */
#include "client.h"
#include "../codec/resp_errors.h" /* rn__resp_head */

#include <string.h>
#include <strings.h>

/* What a subscribe-mode frame is. The confirmations bear the name of the
 * command they confirm. */
enum { SUB_OTHER, SUB_MESSAGE, SUB_CONFIRM };

static int sub_is(const char *name, size_t n, const char *word) {
  return strlen(word) == n && strncasecmp(name, word, n) == 0;
}

static int sub_kind(const char *name, size_t n) {
  static const char *const confirms[] = {
      "subscribe",  "unsubscribe",  "psubscribe",
      "punsubscribe", "ssubscribe", "sunsubscribe"};
  size_t i;
  if (sub_is(name, n, "message") || sub_is(name, n, "pmessage") ||
      sub_is(name, n, "smessage"))
    return SUB_MESSAGE;
  for (i = 0; i < sizeof(confirms) / sizeof(confirms[0]); i++)
    if (sub_is(name, n, confirms[i])) return SUB_CONFIRM;
  return SUB_OTHER;
}

static void sub_tell(rn_conn_t *conn, const char *frame, size_t len,
                     int status) {
  conn->pool->callback_depth++;
  conn->sub_cb(conn->sub_hold, conn->sub_data, frame, len, status);
  conn->pool->callback_depth--;
}

/* Whether the confirmation `name` is one of cmd's (an unasked one, a
 * server-side sunsubscribe say, is not counted against it). */
static int sub_confirms(const rn_call_t *cmd, const char *name, size_t n) {
  const char *c;
  size_t cn, count;
  return rn__resp_head(cmd->frame, cmd->frame_len, &count, &c, &cn) &&
         cn == n && strncasecmp(c, name, n) == 0;
}

int rn__subscribe_deliver(rn_conn_t *conn, const rn_reply_t *m) {
  rn_call_t *oldest =
      rn_list_empty(&conn->sent)
          ? NULL
          : RN_CONTAINER_OF(conn->sent.next, rn_call_t, node);
  const char *name;
  size_t n, count;
  int kind = SUB_OTHER;

  if (m->kind != RN_REPLY_IN_ORDER && m->kind != RN_REPLY_PUSH) return 0;
  if (rn__resp_head(m->body, m->body_len, &count, &name, &n))
    kind = sub_kind(name, n);
  if (m->kind == RN_REPLY_PUSH || kind != SUB_OTHER) {
    /* The command's account is settled before its callback runs, which
     * may release the hold (and so free the command). */
    if (kind == SUB_CONFIRM && oldest != NULL && oldest->sub_cmd &&
        sub_confirms(oldest, name, n) && --oldest->sub_left == 0)
      rn__conn_take(conn, oldest);
    sub_tell(conn, m->body, m->body_len, 0);
    return 1;
  }
  if (oldest == NULL || !oldest->sub_cmd) return 0; /* a ping's answer */
  /* The command's only possible answer that is no confirmation: the
   * server refused it. Anything else breaks the order. */
  if (!(m->flags & RN_FRAME_ERROR)) return RN_EUNEXPECTED;
  rn__conn_take(conn, oldest);
  sub_tell(conn, m->body, m->body_len, RN_EREPLY);
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

/* The names of the subscribe-family command f (one whole request), or 0
 * if it is none or names nothing. */
static size_t sub_command_names(const char *f, size_t len) {
  const char *name;
  size_t n, count;
  if (f[0] != '*' || !rn__resp_head(f, len, &count, &name, &n) ||
      count < 2 || sub_kind(name, n) != SUB_CONFIRM)
    return 0;
  return count - 1;
}

int rn_hold_write(rn_hold_t *hold, const char *frames, size_t len) {
  rn_pool_t *pool;
  rn_list_t made;
  size_t off = 0;
  int err;
  rn_conn_t *conn = rn__hold_conn(hold, &err);
  if (conn == NULL) return err;
  pool = conn->pool;
  if (conn->sub_cb == NULL || frames == NULL || len == 0) return UV_EINVAL;
  if (len > pool->codec.max_frame) return RN_EFRAMESIZE;
  while (off < len) { /* whole subscribe commands only, checked first */
    rn_frame_t f;
    if (rn_codec_frame(&pool->codec, frames + off, len - off, &f) != 1 ||
        sub_command_names(frames + off, f.size) == 0)
      return UV_EINVAL;
    off += f.size;
  }
  /* One call each, made before any is queued: all or none leave. */
  rn_list_init(&made);
  for (off = 0; off < len;) {
    rn_frame_t f;
    rn_call_t *call = rn__call_new(pool);
    rn_codec_frame(&pool->codec, frames + off, len - off, &f);
    err = call == NULL ? UV_ENOMEM
                       : rn__call_set_frame(call, frames + off, f.size);
    if (err != 0) {
      if (call != NULL) rn_list_insert_tail(&made, &call->node);
      while (!rn_list_empty(&made)) {
        rn_call_t *c = RN_CONTAINER_OF(made.next, rn_call_t, node);
        rn_list_remove(&c->node);
        rn_list_init(&c->node);
        c->done = 1;
        rn__call_release(c);
      }
      return err;
    }
    call->internal = 1;
    call->sub_cmd = 1;
    call->sub_left = (uint32_t)sub_command_names(frames + off, f.size);
    rn_list_insert_tail(&made, &call->node);
    off += f.size;
  }
  while (!rn_list_empty(&made)) {
    rn_call_t *call = RN_CONTAINER_OF(made.next, rn_call_t, node);
    rn_list_remove(&call->node);
    rn_list_init(&call->node);
    rn__conn_enqueue(conn, call);
  }
  return 0;
}

/* The subscriber's connection, or NULL and *err. */
static rn_conn_t *sub_conn(const rn_hold_t *hold, int *err) {
  rn_conn_t *conn = rn__hold_conn(hold, err);
  if (conn != NULL && conn->sub_cb == NULL) {
    *err = UV_EINVAL;
    return NULL;
  }
  return conn;
}

int rn_hold_pause(rn_hold_t *hold) {
  int err;
  rn_conn_t *conn = sub_conn(hold, &err);
  if (conn == NULL) return err;
  rn__conn_read_pause(conn);
  return 0;
}

int rn_hold_resume(rn_hold_t *hold) {
  int err;
  rn_conn_t *conn = sub_conn(hold, &err);
  if (conn == NULL) return err;
  rn__conn_read_resume(conn);
  return 0;
}

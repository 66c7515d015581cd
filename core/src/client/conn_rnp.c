/* rnp on the client side: the HELLO handshake, ids stamped on frames as
 * they leave, replies matched by id in any order, the server's proofs that
 * a request was not run (NOT_EXECUTED errors, GOAWAY), and incarnations.
 * conn.c stays protocol-blind: the codec says what a frame means
 * (codec/reply.h), and conn.c calls here for what only rnp has: ids on
 * frames, HELLO and GOAWAY. */
#include "client.h"

#include <string.h>

static void rnp_put_u32(char *p, uint32_t v) {
  p[0] = (char)(v >> 24);
  p[1] = (char)(v >> 16);
  p[2] = (char)(v >> 8);
  p[3] = (char)v;
}

static void rnp_put_u64(char *p, uint64_t v) {
  rnp_put_u32(p, (uint32_t)(v >> 32));
  rnp_put_u32(p + 4, (uint32_t)v);
}

/* The HELLO (with the pool's token, if any) and the PING. The token lives
 * only in hello_frame from here on: rn_pool_new() drops its pointer. */
int rn__rnp_make_frames(rn_pool_t *pool) {
  const rn_pool_options_t *o = &pool->options;
  rn_rnp_frame_t f;
  int err;

  err = rn_rnp_encode_hello(&pool->hello_frame, pool->codec.max_frame,
                            o->auth, o->auth_len);
  if (err || o->heartbeat.interval_ms == 0) return err;
  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_PING;
  return rn_rnp_encode(&pool->ping_frame, &f, pool->codec.max_frame);
}

int rn__rnp_call_prepare(rn_pool_t *pool, rn_call_t *call, const char *frame,
                         size_t len, const rn_call_options_t *options) {
  rn_rnp_frame_t f;
  int r, err;

  r = rn_rnp_parse(frame, len, pool->codec.max_frame, &f);
  if (r == RN_EFRAMESIZE) return RN_EFRAMESIZE;
  if (r != 1 || f.size != len || f.type != RN_RNP_REQUEST) return UV_EINVAL;
  if (options != NULL && options->idempotent) f.flags |= RN_RNP_IDEMPOTENT;
  /* The usual case, a frame from rn_codec_encode(): copied as it is, the
   * flag set in place; only a key or a missing DEADLINE needs the frame
   * built again. */
  if ((options == NULL || options->key == NULL) &&
      (f.present & 1u << RN_RNP_F_DEADLINE) &&
      f.deadline_offset <= UINT16_MAX) {
    err = rn__call_set_frame(call, frame, len);
    if (err) return err;
    call->frame[5] = (char)f.flags;
    call->deadline_offset = (uint16_t)f.deadline_offset;
    return 0;
  }
  if (options != NULL && options->key != NULL) {
    if (options->key_len == 0 || options->key_len > RN_RNP_KEY_MAX)
      return UV_EINVAL;
    f.key = options->key;
    f.key_len = options->key_len;
    f.present |= 1u << RN_RNP_F_KEY;
    call->keyed = 1;
  }
  /* Every request says how long its caller will wait: the server refuses
   * what it could only finish too late. */
  f.present |= 1u << RN_RNP_F_DEADLINE;
  f.deadline_ms = 0;
  pool->scratch.len = 0;
  err = rn_rnp_encode(&pool->scratch, &f, pool->codec.max_frame);
  if (err) return err;
  /* Parsed again for where DEADLINE landed: the encoder decides layout. */
  r = rn_rnp_parse(pool->scratch.base, pool->scratch.len,
                   pool->codec.max_frame, &f);
  if (r != 1 || f.deadline_offset == 0 || f.deadline_offset > UINT16_MAX)
    return UV_EINVAL;
  call->deadline_offset = (uint16_t)f.deadline_offset;
  return rn__call_set_frame(call, pool->scratch.base, pool->scratch.len);
}

void rn__rnp_stamp(rn_conn_t *conn, rn_call_t *call, char *out) {
  rn_call_t *owner = call->parent != NULL ? call->parent : call;
  call->rnp_id = conn->next_id++;
  rnp_put_u64(out + 8, call->rnp_id);
  /* Where its key lives from now on: rnp calls only pass here, so other
   * protocols pay nothing for keys (a hedge is never keyed). */
  if (call->keyed && !call->idempotent) rn__store_bind(call, conn);
  if (call->deadline_offset != 0) {
    uint64_t left = rn_timer_remaining(&owner->deadline);
    rnp_put_u32(out + call->deadline_offset,
                (uint32_t)RN_MIN(left, UINT32_MAX));
  }
}

/* A server with a new incarnation answered: connections from the old one
 * that sit idle are stale (the old process is gone or going), so they
 * close now instead of failing the next call sent on them. */
int rn__rnp_hello(rn_conn_t *conn, const rn_rnp_frame_t *f) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  rn_list_t *pos, *tmp;

  if (f->version != RN_RNP_VERSION) return RN_EHANDSHAKE;

  /* Its limits (docs/protocol.md section 6): no frame above MAX_FRAME (16
   * MiB when not stated) on this connection, and no more requests at once
   * than MAX_CONCURRENT to this server, whichever connections carry them
   * (the pool's placement). The latest HELLO speaks for the endpoint: a
   * server may restart with other limits. */
  conn->max_frame = (f->present & 1u << RN_RNP_F_MAX_FRAME)
                        ? f->max_frame
                        : RN_DEFAULT_MAX_FRAME;
  ep->max_frame = conn->max_frame;
  ep->max_concurrent = (f->present & 1u << RN_RNP_F_MAX_CONCURRENT)
                           ? f->max_concurrent
                           : 0;
  rn__pool_peer_max_frame(conn->pool);
  /* Where its keys live, if it keeps any (section 9.1): a keyed call
   * written here is retried only where the same store is announced. */
  if (f->dedupe != NULL || ep->store != 0)
    rn__store_announced(conn, f->dedupe);
  /* INCARNATION is optional (protocol.md sections 4 and 6): a server
   * that states none cannot be told to have restarted from its HELLO. */
  if (!(f->present & 1u << RN_RNP_F_INCARNATION)) return 0;
  memcpy(conn->incarnation, f->incarnation, RN_RNP_INCARNATION_SIZE);
  if (ep->has_incarnation &&
      memcmp(ep->incarnation, f->incarnation, RN_RNP_INCARNATION_SIZE) == 0)
    return 0;
  memcpy(ep->incarnation, f->incarnation, RN_RNP_INCARNATION_SIZE);
  if (!ep->has_incarnation) {
    ep->has_incarnation = 1;
    return 0;
  }
  rn_list_foreach_safe(pos, tmp, &ep->conns) {
    rn_conn_t *other = RN_CONTAINER_OF(pos, rn_conn_t, node);
    if (other == conn || other->state != RN_CONN_READY || other->queued > 0 ||
        memcmp(other->incarnation, f->incarnation,
               RN_RNP_INCARNATION_SIZE) == 0)
      continue;
    rn__conn_close(other, RN_ESTALE); /* counted as a "stale" eviction */
  }
  return 0;
}

/* GOAWAY: the server runs no request above last_id. Those calls, and
 * those not yet written, go elsewhere as if never sent; the rest are
 * answered here before the connection closes. PINGs are not requests: the
 * server still answers every one (docs/protocol.md section 7), so an
 * outstanding ping stays, its PONG expected and `pinging` still set. An
 * abandoned attempt above last_id (a tombstone) will get no reply: it
 * goes. */
void rn__rnp_goaway(rn_conn_t *conn, uint64_t last_id, uint64_t asked) {
  rn_pool_t *pool = conn->pool;
  uint64_t hold = 0;
  rn_list_t moved, answered, *pos, *tmp;
  rn_pool_event_t ev;

  pool->stats.goaways++;
  conn->goaway = 1;
  /* How long a restart takes, say: no connect to it before then. */
  if (asked > 0) hold = rn__endpoint_hold_off(pool, conn->endpoint, asked);
  rn_list_init(&moved);
  rn_list_init(&answered);
  while (!rn_list_empty(&conn->unsent)) {
    rn_call_t *call = RN_CONTAINER_OF(conn->unsent.next, rn_call_t, node);
    rn__conn_unqueue(conn, call);
    if (call->internal) {
      rn__call_release(call);
      continue;
    }
    pool->stats.requeued++;
    rn_list_insert_tail(&moved, &call->node);
  }
  rn_list_foreach_safe(pos, tmp, &conn->sent) {
    rn_call_t *call = RN_CONTAINER_OF(pos, rn_call_t, node);
    if (call->batch_n > 0 && !call->tombstone &&
        ((call->rnp_id <= last_id && rn__call_has_id(call, last_id + 1)) ||
         (call->rnp_id > last_id && call->batch_got > 0))) {
      /* A batch across the line: its requests above it will not run,
       * each one's own result says so; the rest are answered here. Also
       * one wholly above it that already had replies: a server
       * contradicting itself (it ran what it says it never will) gets
       * none of it sent again, what it answered stands. */
      if (rn__batch_goaway(call, last_id) && rn__conn_take(conn, call))
        rn_list_insert_tail(&answered, &call->node);
      continue;
    }
    if (call->rnp_id <= last_id || (call->internal && !call->tombstone))
      continue;
    rn_list_remove(&call->node);
    call->conn = NULL;
    rn__conn_count_call(conn, call, -1);
    call->state = RN_SEND_UNSENT; /* proven: never run */
    if (call->tombstone) {
      rn__call_release(call);
      continue;
    }
    pool->stats.not_executed++;
    rn_list_insert_tail(&moved, &call->node);
  }
  memset(&ev, 0, sizeof(ev));
  ev.connection = conn->serial;
  ev.state = "goaway";
  ev.reason = hold < asked ? "retry_after_capped"
              : hold > 0   ? "retry_after"
                           : "goaway";
  ev.duration = hold;
  rn__pool_emit(pool, RN_EVENT_STATE, conn->endpoint, &ev);
  rn__conn_retire(conn, "goaway");
  while (!rn_list_empty(&answered)) {
    rn_call_t *call = RN_CONTAINER_OF(answered.next, rn_call_t, node);
    rn_list_remove(&call->node);
    rn__fate_replied(call, 0, NULL, 0, 0);
  }
  rn__conn_return_all(&moved);
  rn__pool_dispatch(pool);
}

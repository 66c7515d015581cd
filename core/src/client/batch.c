/* Batches: n requests sent on one connection in one write, answered by n
 * replies, handed back together.
 *
 * A batch is one call (rn_call_t) whose frame is the n request frames back
 * to back, so everything a call goes through applies to it as a unit
 * without a line of its own in fate.c: it waits in the pool's queue, is
 * placed on one connection, its bytes go out in one piece (a connection
 * writes each call's frame whole, in one write), and if it is handed back
 * unsent it moves whole; written and then lost, the retry rules decide for
 * all n at once (idempotent or keyed: sent again whole; else it fails with
 * maybe_executed). It holds one place in max_pending and max_in_flight.
 *
 * What is the batch's own: the connection gives each reply here
 * (rn__batch_reply) and completes the call only at the last one, which
 * fate.c then sees as one reply with status 0. Replies are kept per
 * request, by position (resp, line, length) or by id (rnp: the requests
 * leave with consecutive ids). An error reply, or an rnp refusal of one
 * request, is that request's result: the batch fails as a whole only when
 * the call does (connection, deadline, close). An error that speaks about
 * the server (-READONLY on a master pool, -LOADING) also acts on it, as a
 * single call's does. */
#include "client.h"
#include "../codec/resp_errors.h" /* rn__resp_request */

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* One request of the batch: where its frame is, and its reply. */
typedef struct rn__batch_slot_s {
  size_t body_off; /* in the batch's bodies */
  size_t body_len;
  int status;
  int flags;
  uint32_t frame_off;    /* rnp: where its frame starts in call->frame */
  uint16_t deadline_off; /* rnp: DEADLINE's value within its frame */
  uint8_t filled;        /* its reply arrived (this attempt) */
  uint8_t unrun;         /* rnp: refused unrun */
} rn__batch_slot_t;

struct rn__batch_s {
  rn_batch_cb cb;
  void *data;
  uint32_t n;
  uint8_t transaction;    /* resp: MULTI first, EXEC last */
  uint8_t server_refused; /* this attempt: a request was refused by the
                             server's state (-READONLY on a master pool,
                             -MASTERDOWN, -LOADING) */
  rn_buf_t bodies;      /* the replies' bodies, back to back */
  rn_result_t *results; /* n, filled in for the callback */
  rn__batch_slot_t slots[];
};

static struct rn__batch_s *batch_new(uint32_t n) {
  struct rn__batch_s *b;
  /* slots, then results: both multiples of 8 bytes, so results align. */
  b = calloc(1, sizeof(*b) + n * sizeof(rn__batch_slot_t) +
                    n * sizeof(rn_result_t));
  if (b == NULL) return NULL;
  b->n = n;
  b->results = (rn_result_t *)(void *)(b->slots + n);
  rn_buf_init(&b->bodies);
  return b;
}

void rn__batch_free(struct rn__batch_s *batch) {
  rn_buf_free(&batch->bodies);
  free(batch);
}

/* ------------------------------------------------------------------------ */
/* Frames                                                                     */

/* resp, line, length: the frames are sent as given, once checked to be
 * exactly count whole frames. resp, in the same pass: what they leave the
 * connection in (*state), and whether they are a transaction (MULTI
 * first, EXEC last). */
static int batch_check_frames(rn_pool_t *pool, struct rn__batch_s *b,
                              const char *frames, size_t len, uint32_t count,
                              rn__resp_state_t *state) {
  int resp = pool->codec.protocol == RN_PROTOCOL_RESP;
  size_t off = 0;
  uint32_t i;
  for (i = 0; i < count; i++) {
    rn_frame_t f;
    const char *name;
    size_t name_len;
    /* resp: what Redis answers once (rn__resp_request), as for a call. */
    int r = resp ? rn__resp_request(&pool->codec, frames + off, len - off,
                                    &f.size, &name, &name_len)
                 : rn_codec_frame(&pool->codec, frames + off, len - off, &f);
    if (r == RN_EFRAMESIZE) return RN_EFRAMESIZE;
    if (r != 1) return UV_EINVAL;
    if (resp) {
      rn__resp_state_track_one(state, frames + off, f.size);
      if (i == 0)
        b->transaction = (uint8_t)rn__resp_command_is(frames, f.size, "MULTI");
      else if (i == count - 1 && b->transaction)
        b->transaction =
            (uint8_t)rn__resp_command_is(frames + off, f.size, "EXEC");
    }
    off += f.size;
  }
  if (count == 1) b->transaction = 0;
  return off == len ? 0 : UV_EINVAL;
}

/* rnp: each request as rn__rnp_call_prepare makes a single one (the
 * IDEMPOTENT flag, a DEADLINE field to stamp), appended to out; where its
 * frame and its DEADLINE are goes in its slot. *keyed: cleared unless it
 * carries a KEY. */
static int batch_prepare_rnp_one(rn_pool_t *pool, rn__batch_slot_t *slot,
                                 const char *frame, size_t len,
                                 int idempotent, rn_buf_t *out, size_t *used,
                                 int *keyed) {
  size_t max = pool->codec.max_frame, start = out->len;
  rn_rnp_frame_t f;
  int r, err;

  r = rn_rnp_parse(frame, len, max, &f);
  if (r == RN_EFRAMESIZE) return RN_EFRAMESIZE;
  if (r != 1 || f.type != RN_RNP_REQUEST) return UV_EINVAL;
  *used = f.size;
  if (!(f.present & 1u << RN_RNP_F_KEY)) *keyed = 0;
  if (idempotent) f.flags |= RN_RNP_IDEMPOTENT;
  if (start > UINT32_MAX) return RN_EFRAMESIZE;
  slot->frame_off = (uint32_t)start;
  if ((f.present & 1u << RN_RNP_F_DEADLINE) &&
      f.deadline_offset <= UINT16_MAX) {
    err = rn_buf_append(out, frame, f.size);
    if (err) return err;
    out->base[start + 5] = (char)f.flags;
  } else {
    /* No DEADLINE of its own: built again with one, as for a call. */
    f.present |= 1u << RN_RNP_F_DEADLINE;
    f.deadline_ms = 0;
    err = rn_rnp_encode(out, &f, max);
    if (err) return err;
    r = rn_rnp_parse(out->base + start, out->len - start, max, &f);
    if (r != 1 || f.deadline_offset == 0 || f.deadline_offset > UINT16_MAX)
      return UV_EINVAL;
  }
  slot->deadline_off = (uint16_t)f.deadline_offset;
  return 0;
}

static int batch_prepare_rnp(rn_pool_t *pool, rn_call_t *call,
                             const char *frames, size_t len,
                             const rn_call_options_t *options) {
  struct rn__batch_s *b = call->batch;
  rn_buf_t *out = &pool->scratch;
  int idempotent = options != NULL && options->idempotent;
  int keyed = 1, err;
  size_t off = 0;
  uint32_t i;

  out->len = 0;
  for (i = 0; i < b->n; i++) {
    size_t used = 0;
    if (off >= len) return UV_EINVAL;
    err = batch_prepare_rnp_one(pool, &b->slots[i], frames + off, len - off,
                                idempotent, out, &used, &keyed);
    if (err) return err;
    off += used;
  }
  if (off != len) return UV_EINVAL;
  /* Every request carries its key: the server runs each at most once, so
   * the batch may be sent again like an idempotent one. */
  call->keyed = (unsigned)keyed;
  return rn__call_set_frame(call, out->base, out->len);
}

void rn__batch_stamp(rn_conn_t *conn, rn_call_t *call, char *out) {
  struct rn__batch_s *b = call->batch;
  uint64_t left = rn_timer_remaining(&call->deadline);
  uint32_t i;
  assert(b != NULL && call->parent == NULL);
  if (call->keyed && !call->idempotent) rn__store_bind(call, conn);
  call->rnp_id = conn->next_id;
  for (i = 0; i < b->n; i++) {
    char *frame = out + b->slots[i].frame_off;
    uint64_t id = conn->next_id++;
    uint32_t ms = (uint32_t)RN_MIN(left, UINT32_MAX);
    int k;
    for (k = 0; k < 8; k++) frame[8 + k] = (char)(id >> (56 - 8 * k));
    for (k = 0; k < 4; k++)
      frame[b->slots[i].deadline_off + k] = (char)(ms >> (24 - 8 * k));
  }
}

/* ------------------------------------------------------------------------ */
/* Replies                                                                    */

void rn__batch_restart(rn_call_t *call) {
  struct rn__batch_s *b = call->batch;
  uint32_t i;
  call->batch_got = 0;
  b->bodies.len = 0;
  b->server_refused = 0;
  for (i = 0; i < b->n; i++) b->slots[i].filled = 0;
}

/* Keeps one request's result (a done call's replies are only counted). */
static int batch_keep(rn_call_t *call, uint32_t i, int status, int flags,
                      int unrun, const char *body, size_t body_len) {
  struct rn__batch_s *b = call->batch;
  rn__batch_slot_t *slot;
  if (b == NULL || call->done) return 0; /* a tombstone, or too late */
  slot = &b->slots[i];
  if (slot->filled) return RN_EUNEXPECTED;
  /* Held until the last one: together they count as one reply against
   * max_frame, as the requests do, or max_batch replies of max_frame each
   * (16 GiB by default) would be what a server may make the client hold
   * for one batch. */
  if (body_len > call->pool->codec.max_frame - b->bodies.len)
    return RN_EFRAMESIZE;
  slot->filled = 1;
  slot->status = status;
  slot->flags = flags;
  slot->unrun = (uint8_t)unrun;
  slot->body_off = b->bodies.len;
  slot->body_len = body_len;
  /* Out of memory here loses this one reply's text, not the batch. */
  if (body_len > 0 && rn_buf_append(&b->bodies, body, body_len) != 0)
    slot->body_len = 0;
  return 0;
}

int rn__batch_reply(rn_call_t *call, const rn_reply_t *m) {
  uint32_t i;
  int status = m->status, unrun = 0, err;

  assert(call->batch_n > 0 && call->batch_got < call->batch_n);
  i = m->kind == RN_REPLY_IN_ORDER ? call->batch_got
                                   : (uint32_t)(m->id - call->rnp_id);
  if (m->kind == RN_REPLY_REFUSED) {
    unrun = 1; /* that request did not run: its own result says so */
  } else if (m->kind == RN_REPLY_TRY_LATER) {
    status = RN_EREPLY; /* a single call may be retried; one element not */
  }
  err = batch_keep(call, i, status, m->flags, unrun, m->body, m->body_len);
  if (err) return err;
  /* -READONLY (on a master pool), -MASTERDOWN or -LOADING to one of its
   * requests says about the server what it says to a single call (fate.c):
   * its endpoint's connections retire (this one once its batch is
   * answered: it stays queued here) and the endpoint backs off. The
   * request's result stays the error, and the batch is not sent again:
   * its other requests may have run there. */
  if (status != 0 && m->kind == RN_REPLY_IN_ORDER &&
      call->pool->codec.protocol == RN_PROTOCOL_RESP) {
    int wrong = rn__setup_server_error(call->pool, call->endpoint, m->body,
                                       m->body_len);
    if (call->batch != NULL && !call->done &&
        (wrong || rn__setup_error_is(m->body, m->body_len, "LOADING")))
      call->batch->server_refused = 1;
  }
  if (call->state == RN_SEND_SENT) call->state = RN_SEND_ANSWERED;
  if (++call->batch_got < call->batch_n) return 0;
  /* A transaction whose queued command the server refused for what it is
   * now (a replica after a failover, loading its dataset): Redis
   * discarded it (EXECABORT), so nothing ran, and like a single call
   * answered so it goes to the right server as one never sent, instead
   * of failing with an error only a failover caused. */
  if (call->batch != NULL && !call->done && !call->held &&
      call->batch->transaction && call->batch->server_refused &&
      rn__setup_error_is(m->body, m->body_len, "EXECABORT"))
    return 2;
  return 1;
}

int rn__batch_goaway(rn_call_t *call, uint64_t last_id) {
  static const char why[] = "not run: the server said GOAWAY";
  uint32_t i = last_id >= call->rnp_id
                   ? (uint32_t)(last_id - call->rnp_id + 1)
                   : 0; /* wholly above it, yet answered in part */
  assert(call->batch_n > 0);
  for (; i < call->batch_n; i++) {
    if (call->batch != NULL && !call->done &&
        call->batch->slots[i].filled)
      continue;
    (void)batch_keep(call, i, RN_ENOTEXEC, 0, 1, why, sizeof(why) - 1);
    call->batch_got++;
  }
  return call->batch_got == call->batch_n;
}

/* ------------------------------------------------------------------------ */
/* The call's end                                                             */

/* The call's callback: the batch's, with each request's result. */
void rn__batch_done(rn_pool_t *pool, void *data, const rn_result_t *r) {
  struct rn__batch_s *b = data;
  rn_batch_result_t br;
  uint32_t i;

  memset(&br, 0, sizeof(br));
  br.status = r->status;
  br.attempts = r->attempts;
  br.maybe_executed = r->maybe_executed;
  br.endpoint = r->endpoint;
  br.count = b->n;
  if (r->status == 0) {
    for (i = 0; i < b->n; i++) {
      const rn__batch_slot_t *slot = &b->slots[i];
      rn_result_t *e = &b->results[i];
      e->status = slot->status;
      e->body = b->bodies.base + slot->body_off;
      e->body_len = slot->body_len;
      e->flags = slot->flags;
      e->attempts = r->attempts;
      e->maybe_executed = !slot->unrun;
      e->endpoint = r->endpoint;
    }
    br.results = b->results;
  } else {
    br.body = r->body;
    br.body_len = r->body_len;
  }
  b->cb(pool, b->data, &br);
}

int rn__batch_make(rn_pool_t *pool, const char *frames, size_t len,
                   size_t count, const rn_call_options_t *options,
                   rn_batch_cb cb, void *data, int pooled, rn_call_t **out,
                   rn_call_options_t *o) {
  unsigned max = pool->options.max_batch ? pool->options.max_batch
                                         : RN_DEFAULT_MAX_BATCH;
  rn_call_t *call;
  int err;

  if (frames == NULL || len == 0 || count == 0 || cb == NULL ||
      (options != NULL && options->key != NULL))
    return UV_EINVAL;
  if (count > max) return UV_E2BIG;
  if (len > pool->codec.max_frame) return RN_EFRAMESIZE;

  call = rn__call_new(pool);
  if (call == NULL) return UV_ENOMEM;
  call->batch = batch_new((uint32_t)count);
  if (call->batch == NULL) {
    err = UV_ENOMEM;
    goto fail;
  }
  call->batch->cb = cb;
  call->batch->data = data;
  call->batch_n = (uint32_t)count;
  if (pool->codec.protocol == RN_PROTOCOL_RNP) {
    err = batch_prepare_rnp(pool, call, frames, len, options);
  } else {
    rn__resp_state_t state;
    memset(&state, 0, sizeof(state));
    err = batch_check_frames(pool, call->batch, frames, len, (uint32_t)count,
                             &state);
    /* A pooled connection's next user must find it as its setup left it:
     * one left inside MULTI, WATCHing, subscribed, in another database or
     * as another user would hand that to every later call there (what a
     * held connection is for). */
    if (err == 0 && pooled &&
        (state.in_multi || state.watching || state.unknown))
      err = UV_EINVAL;
    if (err == 0) err = rn__call_set_frame(call, frames, len);
  }
  if (err) goto fail;
  if (options != NULL) *o = *options;
  else memset(o, 0, sizeof(*o));
  o->hedge_mode = RN_HEDGE_OFF; /* one batch out at a time, never a copy */
  *out = call;
  return 0;

fail:
  return rn__call_unaccepted(call, err);
}

int rn_pool_batch(rn_pool_t *pool, const char *frames, size_t len,
                  size_t count, const rn_call_options_t *options,
                  rn_batch_cb cb, void *data) {
  rn_call_options_t o;
  rn_call_t *call;
  int err;

  if (pool->closing) return RN_ECLOSED;
  err = rn__batch_make(pool, frames, len, count, options, cb, data, 1, &call,
                       &o);
  if (err) return err;
  if ((err = rn__pool_admit(pool)) == 0)
    err = rn__pool_accept(pool, call, &o, rn__batch_done, call->batch);
  return rn__call_unaccepted(call, err);
}

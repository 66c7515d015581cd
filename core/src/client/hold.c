/* Held connections: one ready connection reserved for one user, whose
 * calls go there and nowhere else (WATCH ... MULTI ... EXEC with logic
 * between, blocking commands), until it is given back.
 *
 * A hold waits in the pool's hold queue (bounded by its deadline and by
 * max_pending, which it shares with calls) until a connection is ready
 * and idle: one that comes up, or one whose last reply just arrived, is
 * reserved for the first waiting hold at once (conn->hold: the pool
 * places no call there), and the hold is handed it on the next pass, from
 * the loop, never inside rn_pool_hold. A pass that finds none asks the
 * pool to grow and looks again a little later.
 *
 * A held call is an ordinary call whose placement is fixed: fate.c gives
 * it one attempt, never requeues it (unsent when the connection failed:
 * it fails with that error), and conn.c treats it as any other. What the
 * pool cannot see, this file tracks: calls still out, a held call that
 * failed without a reply, and for resp the commands that leave a
 * connection in a state the next user must not inherit (MULTI, WATCH,
 * SUBSCRIBE, MONITOR). A connection left so is closed on release, not
 * reused. */
#include "client.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* While holds wait and no connection is free: how often the pass looks
 * again (besides when a connection comes up or goes idle). */
#define RN_HOLD_RECHECK_MS 50

struct rn_hold_s {
  void *data;
  rn_pool_t *pool;
  rn_conn_t *conn;     /* reserved or held; NULL before, and once lost */
  rn_list_t node;      /* on pool->holds_waiting while waiting */
  rn_timer_t deadline; /* while waiting */
  rn_hold_cb cb;
  int error;           /* why its connection was lost */
  unsigned out;        /* held calls not completed */
  unsigned granted : 1;   /* handed to the caller */
  unsigned counted : 1;   /* holds a place in pool->active */
  /* resp: an open MULTI or WATCH, a SUBSCRIBE, AUTH, SELECT and the
   * like (resp_state.c); unknown also after a held call that failed
   * without its reply */
  rn__resp_state_t state;
};

static void hold_pass(rn_timer_t *timer);

void rn__hold_pool_init(rn_pool_t *pool) {
  rn_list_init(&pool->holds_waiting);
  rn_timer_init(pool->loop, &pool->hold_timer, hold_pass);
  pool->hold_timer.data = pool;
  rn_timer_unref(&pool->hold_timer); /* waiting holds' deadlines keep the
                                        loop alive, not this */
}

static void hold_kick(rn_pool_t *pool, uint64_t ms) {
  if (!pool->closing) rn_timer_start(&pool->hold_timer, ms);
}

/* The hold's place in pool->active ends (its callback fired with an
 * error, it was released, or its connection was lost). Ends a drain
 * waiting for it unless a connection is closing under us (inside
 * rn__conn_close the pool must not close others): then the pass does. */
static void hold_uncount(rn_hold_t *hold, int from_close) {
  rn_pool_t *pool = hold->pool;
  if (!hold->counted) return;
  hold->counted = 0;
  assert(pool->active > 0);
  pool->active--;
  if (from_close) {
    if (pool->closing) rn_timer_start(&pool->hold_timer, 0);
  } else {
    rn__pool_call_done(pool);
  }
}

/* Whether conn may be reserved: ready, idle, taking calls. */
static int hold_may_take(rn_pool_t *pool, rn_conn_t *conn) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  return conn->state == RN_CONN_READY && conn->queued == 0 &&
         conn->hold == NULL && conn->blocking == 0 && !conn->retiring &&
         !conn->suspect && !conn->probe && !conn->goaway && !ep->removed &&
         (ep->ejected_until == 0 ||
          rn__endpoint_usable(pool, ep, rn_loop_now(pool->loop)));
}

static rn_conn_t *hold_find(rn_pool_t *pool) {
  size_t i;
  for (i = 0; i < pool->endpoint_count; i++) {
    rn_pool_endpoint_t *ep = pool->endpoints[i];
    rn_list_t *pos;
    if (ep->ready == 0) continue;
    /* From the tail: the one answered last, most likely alive. */
    for (pos = ep->conns.prev; pos != &ep->conns; pos = pos->prev) {
      rn_conn_t *conn = RN_CONTAINER_OF(pos, rn_conn_t, node);
      if (hold_may_take(pool, conn)) return conn;
    }
  }
  return NULL;
}

static void hold_reserve(rn_hold_t *hold, rn_conn_t *conn) {
  hold->conn = conn;
  conn->hold = hold;
  /* It sends no pings while held (one inside a MULTI would be queued by
   * the server and answer for the transaction): another connection
   * probes for the endpoint. */
  rn__conn_hand_over_probing(conn);
}

static rn_hold_t *hold_first_unreserved(rn_pool_t *pool) {
  rn_list_t *pos;
  for (pos = pool->holds_waiting.next; pos != &pool->holds_waiting;
       pos = pos->next) {
    rn_hold_t *hold = RN_CONTAINER_OF(pos, rn_hold_t, node);
    if (hold->conn == NULL) return hold;
  }
  return NULL;
}

void rn__hold_offer(rn_pool_t *pool, rn_conn_t *conn) {
  rn_hold_t *hold;
  if (pool->closing || pool->holds_waiting_count == 0 ||
      !hold_may_take(pool, conn))
    return;
  hold = hold_first_unreserved(pool);
  if (hold == NULL) return;
  hold_reserve(hold, conn);
  hold_kick(pool, 0);
}

static void hold_leave_queue(rn_hold_t *hold) {
  rn_list_remove(&hold->node);
  rn_list_init(&hold->node);
  hold->pool->holds_waiting_count--;
  rn_timer_stop(&hold->deadline);
}

/* The callback of a hold that got no connection; frees it. */
static void hold_fail(rn_hold_t *hold, int err) {
  rn_pool_t *pool = hold->pool;
  if (hold->conn != NULL) { /* reserved, not handed over: free again */
    hold->conn->hold = NULL;
    hold->conn = NULL;
  }
  pool->callback_depth++;
  hold->cb(pool, hold->data, NULL, err);
  pool->callback_depth--;
  hold_uncount(hold, 0);
  free(hold);
}

static void hold_expired(rn_timer_t *timer) {
  rn_hold_t *hold = timer->data;
  rn_pool_t *pool = hold->pool;
  int had_conn = hold->conn != NULL;
  hold_leave_queue(hold);
  hold_fail(hold, UV_ETIMEDOUT);
  /* Its reserved connection is free for calls again. */
  if (had_conn) rn__pool_conn_writable(pool);
}

static void hold_grant(rn_hold_t *hold) {
  rn_pool_t *pool = hold->pool;
  hold_leave_queue(hold);
  hold->granted = 1;
  pool->stats.holds++;
  pool->callback_depth++;
  hold->cb(pool, hold->data, hold, 0);
  pool->callback_depth--;
}

/* Hands reserved connections to their holds, in order, and finds ones
 * for the holds still waiting. */
static void hold_pass(rn_timer_t *timer) {
  rn_pool_t *pool = timer->data;
  if (pool->closing) {
    /* A held connection lost while the pool drains: the drain may be
     * over. */
    rn__pool_call_done(pool);
    return;
  }
  while (!rn_list_empty(&pool->holds_waiting) && !pool->closing) {
    rn_hold_t *hold =
        RN_CONTAINER_OF(pool->holds_waiting.next, rn_hold_t, node);
    rn_conn_t *conn = hold->conn;
    if (conn == NULL) {
      conn = hold_find(pool);
      if (conn == NULL) break;
      hold_reserve(hold, conn);
    }
    /* A FIN that came since the loop last polled is unseen: look (a
     * failed look closes the connection, which unreserves it). */
    uv_update_time(pool->loop->uv);
    if (rn_loop_now(pool->loop) > pool->loop->last_poll &&
        rn__conn_check_idle(conn) != 0) {
      if (hold->conn == conn) { /* retiring, not closed (rnp GOAWAY) */
        conn->hold = NULL;
        hold->conn = NULL;
      }
      continue;
    }
    hold_grant(hold);
  }
  if (pool->closing || rn_list_empty(&pool->holds_waiting)) return;
  rn__pool_grow(pool);
  hold_kick(pool, RN_HOLD_RECHECK_MS);
}

int rn_pool_hold(rn_pool_t *pool, const rn_call_options_t *options,
                 rn_hold_cb cb, void *data) {
  rn_hold_t *hold;
  uint64_t timeout;
  int err;

  if (pool->closing) return RN_ECLOSED;
  if (cb == NULL) return UV_EINVAL;
  if ((err = rn__pool_admit(pool)) != 0) return err;
  if (pool->pending_count + pool->holds_waiting_count >=
      pool->options.max_pending)
    return rn__pool_overloaded(pool, "max_pending");
  hold = calloc(1, sizeof(*hold));
  if (hold == NULL) return UV_ENOMEM;
  hold->pool = pool;
  hold->cb = cb;
  hold->data = data;
  rn_timer_init(pool->loop, &hold->deadline, hold_expired);
  hold->deadline.data = hold;
  timeout = options != NULL && options->timeout_ms ? options->timeout_ms
                                                   : pool->options.timeout_ms;
  uv_update_time(pool->loop->uv);
  if ((err = rn_timer_start(&hold->deadline, timeout)) != 0) {
    free(hold);
    return err;
  }
  rn_list_insert_tail(&pool->holds_waiting, &hold->node);
  pool->holds_waiting_count++;
  hold->counted = 1;
  pool->active++;
  hold_kick(pool, 0);
  return 0;
}

void rn__hold_pool_closing(rn_pool_t *pool) {
  rn_timer_stop(&pool->hold_timer);
  while (!rn_list_empty(&pool->holds_waiting)) {
    rn_hold_t *hold =
        RN_CONTAINER_OF(pool->holds_waiting.next, rn_hold_t, node);
    hold_leave_queue(hold);
    hold_fail(hold, RN_ECLOSED);
  }
}

void rn__hold_conn_closed(rn_conn_t *conn, int err) {
  rn_hold_t *hold = conn->hold;
  conn->hold = NULL;
  hold->conn = NULL;
  if (!hold->granted) { /* reserved only: it waits for another */
    hold_kick(conn->pool, 0);
    return;
  }
  hold->error = err != 0 ? err : RN_ECLOSED;
  hold_uncount(hold, 1);
}

/* ------------------------------------------------------------------------ */
/* Held calls                                                                 */

/* The call (its frame set) goes on the held connection. On error the
 * caller releases it, never accepted. */
static int hold_accept(rn_hold_t *hold, rn_call_t *call,
                       const rn_call_options_t *options, rn_call_cb cb,
                       void *data) {
  rn_pool_t *pool = hold->pool;
  rn_call_options_t o;
  int err;

  /* rnp: the server's MAX_CONCURRENT counts the held connection's
   * requests with the pool's. A pool call waits for room, or goes
   * elsewhere; a held one has nowhere else to go, and sent now the server
   * would only refuse it OVERLOADED: refused here, unsent. */
  if (rn__endpoint_at_server_limit(hold->conn->endpoint, call))
    return rn__pool_overloaded(pool, "max_concurrent");
  if (options != NULL) o = *options;
  else memset(&o, 0, sizeof(o));
  o.attempts = 1; /* never sent again, never elsewhere */
  o.hedge_mode = RN_HEDGE_OFF;
  o.idempotent = 0;
  if ((err = rn__fate_begin(call, &o, cb, data)) != 0) return err;
  call->attempt_timeout = 0; /* a slow reply here has nowhere else to go */
  call->held = 1;
  call->hold = hold;
  pool->stats.calls++;
  pool->active++;
  hold->out++;
  rn__resp_state_track(&hold->state, &pool->codec, call->frame,
                       call->frame_len);
  rn__fate_placed(call);
  rn__conn_enqueue(hold->conn, call);
  return 0;
}

/* 0 if hold may take a call now, else why not. */
static int hold_usable(const rn_hold_t *hold) {
  if (!hold->granted) return UV_EINVAL;
  if (hold->conn == NULL) return hold->error != 0 ? hold->error : RN_ECLOSED;
  return 0;
}

int rn_hold_call(rn_hold_t *hold, const char *frame, size_t len,
                 const rn_call_options_t *options, rn_call_cb cb,
                 void *data) {
  rn_pool_t *pool = hold->pool;
  rn_call_t *call;
  int err;

  if (frame == NULL || len == 0 || cb == NULL) return UV_EINVAL;
  if ((err = hold_usable(hold)) != 0) return err;
  if (len > pool->codec.max_frame) return RN_EFRAMESIZE;
  if ((err = rn__call_check_request(pool, frame, len, 0)) != 0) return err;
  call = rn__call_new(pool);
  if (call == NULL) return UV_ENOMEM;
  if (pool->codec.protocol == RN_PROTOCOL_RNP)
    err = rn__rnp_call_prepare(pool, call, frame, len, options);
  else
    err = rn__call_set_frame(call, frame, len);
  if (err == 0) err = hold_accept(hold, call, options, cb, data);
  return rn__call_unaccepted(call, err);
}

int rn_hold_batch(rn_hold_t *hold, const char *frames, size_t len,
                  size_t count, const rn_call_options_t *options,
                  rn_batch_cb cb, void *data) {
  rn_call_options_t o;
  rn_call_t *call;
  int err;

  if ((err = hold_usable(hold)) != 0) return err;
  err = rn__batch_make(hold->pool, frames, len, count, options, cb, data, 0,
                       &call, &o);
  if (err) return err;
  return rn__call_unaccepted(
      call, hold_accept(hold, call, &o, rn__batch_done, call->batch));
}

void rn__hold_call_ended(rn_call_t *call, int status) {
  rn_hold_t *hold = call->hold;
  call->hold = NULL;
  assert(hold->out > 0);
  hold->out--;
  /* Timed out, or its connection failed: a reply may still come, or the
   * server may be anywhere in it. */
  if (status != 0 && status != RN_EREPLY) hold->state.unknown = 1;
}

int rn__hold_error(const rn_call_t *call) {
  const rn_hold_t *hold = call->hold;
  return hold != NULL && hold->error != 0 ? hold->error : RN_ECLOSED;
}

rn_conn_t *rn__hold_conn(const rn_hold_t *hold, int *err) {
  *err = hold_usable(hold);
  return *err == 0 ? hold->conn : NULL;
}

int rn__hold_granted(const rn_conn_t *conn) {
  return conn->hold != NULL && conn->hold->granted;
}

int rn_hold_unknown(const rn_hold_t *hold) {
  return hold->conn == NULL || hold->out > 0 || hold->state.in_multi ||
         hold->state.watching || hold->state.unknown;
}

/* Calls still on the connection stop counting on the hold, which is
 * about to go. */
static void hold_forget_calls(rn_hold_t *hold, rn_list_t *list) {
  rn_list_t *pos;
  for (pos = list->next; pos != list; pos = pos->next) {
    rn_call_t *call = RN_CONTAINER_OF(pos, rn_call_t, node);
    if (call->hold == hold) call->hold = NULL;
  }
}

void rn_hold_release(rn_hold_t *hold, int reset) {
  rn_pool_t *pool = hold->pool;
  rn_conn_t *conn = hold->conn;

  assert(hold->granted);
  if (conn == NULL) { /* lost: nothing left to give back */
    free(hold);
    return;
  }
  /* A subscriber is never reused; once released nobody hears it. */
  reset = reset || rn_hold_unknown(hold) || conn->sub_cb != NULL;
  conn->sub_cb = NULL;
  hold_forget_calls(hold, &conn->unsent);
  hold_forget_calls(hold, &conn->sent);
  conn->hold = NULL;
  hold->conn = NULL;
  if (reset) {
    conn->close_reason = "hold_reset";
    rn__conn_close(conn, RN_ECLOSED);
  } else if (conn->retiring) {
    rn__conn_close(conn, 0); /* its lifetime ended while it was held */
  } else {
    /* Back in the pool: its heartbeat resumes, and it goes to the next
     * hold, or to the calls waiting. */
    rn__conn_beat_start(conn);
    rn__hold_offer(pool, conn);
    if (conn->hold == NULL) rn__pool_conn_writable(pool);
  }
  hold_uncount(hold, 0);
  free(hold);
}

/* The pool decides where calls go: which connection, when to open another,
 * what to do with calls when connections fail, and how to close. */
#include "client.h"

#include <stdlib.h>
#include <string.h>

/* Connects in progress per endpoint: a recovering server sees a trickle of
 * new connections, not the whole pool at once. */
#define RN_MAX_CONNECTING 2
/* A connection idle (nothing read) for longer than this is checked before
 * it is handed out; a busier one has just proved itself. */
#define RN_IDLE_CHECK_MS 250
/* Period of the housekeeping round (pool_maintain). */
#define RN_MAINTENANCE_MS 1000

static void pool_maintain(rn_timer_t *timer);
static void pool_close_now(rn_pool_t *pool);

static void pool_close_deferred(rn_timer_t *timer) {
  pool_close_now(timer->data);
}
static void pool_reconnect_due(rn_timer_t *timer);

void rn_pool_options_init(rn_pool_options_t *o) {
  memset(o, 0, sizeof(*o));
  o->codec.protocol = RN_PROTOCOL_RESP;
  o->size = 8;
  o->max_pending = 1000;
  o->connect_timeout = 2000;
  o->timeout = 5000;
  o->write_high_water = 1024 * 1024;
  o->reconnect.initial = 100;
  o->reconnect.multiplier = 1.6;
  o->reconnect.jitter = 0.2;
  o->reconnect.max = 30000;
  o->heartbeat_interval = 1000;
  o->heartbeat_timeout = 3000;
  o->keepalive_idle = 20;
  o->keepalive_interval = 5;
  o->keepalive_count = 3;
  o->user_timeout = 20000;
  o->idle_timeout = 60000;
}

/* The ping each heartbeat sends: RESP has PING; line and length have only
 * what the application configured. */
static int pool_make_ping(rn_pool_t *pool, const rn_pool_options_t *o) {
  int err;
  if (o->heartbeat_interval == 0) return 0;
  if (pool->codec.protocol == RN_PROTOCOL_RESP) {
    err = rn_resp_encode_array(&pool->ping_frame, 1);
    if (err == 0) err = rn_resp_encode_bulk(&pool->ping_frame, "PING", 4);
    return err;
  }
  if (o->heartbeat_ping == NULL || o->heartbeat_ping_len == 0) return 0;
  err = rn_codec_encode(&pool->codec, &pool->ping_frame, o->heartbeat_ping,
                        o->heartbeat_ping_len);
  if (err == 0 && pool->ping_frame.len > RN_CALL_INLINE_FRAME) err = UV_EINVAL;
  return err;
}

void *rn_pool_data(rn_pool_t *pool) { return pool->data; }

const rn_codec_t *rn_pool_codec(rn_pool_t *pool) { return &pool->codec; }

void rn__pool_event(rn_pool_t *pool, rn_conn_t *conn, const char *state,
                    int err) {
  rn_pool_event_t ev;
  if (pool->options.on_event == NULL) return;
  ev.type = RN_EVENT_STATE;
  ev.endpoint = conn->endpoint->text;
  ev.connection = conn->serial;
  ev.state = state;
  ev.error = err;
  pool->options.on_event(pool, &ev);
}

int rn_pool_new(rn_loop_t *loop, const rn_pool_options_t *options,
                rn_pool_t **out) {
  rn_pool_t *pool;
  size_t i;
  int err;

  *out = NULL;
  if (options->endpoint_count == 0 || options->endpoints == NULL ||
      options->size == 0 || options->timeout == 0 ||
      options->connect_timeout == 0 || options->write_high_water == 0 ||
      rn__backoff_check(&options->reconnect) != 0 ||
      (options->heartbeat_interval > 0 && options->heartbeat_timeout == 0))
    return UV_EINVAL;

  pool = calloc(1, sizeof(*pool));
  if (pool == NULL) return UV_ENOMEM;
  err = rn_codec_init(&pool->codec, &options->codec);
  if (err) goto fail;
  rn_buf_init(&pool->ping_frame);
  err = pool_make_ping(pool, options);
  if (err) goto fail;
  pool->endpoints = calloc(options->endpoint_count, sizeof(*pool->endpoints));
  err = UV_ENOMEM;
  if (pool->endpoints == NULL) goto fail;

  for (i = 0; i < options->endpoint_count; i++) {
    rn_pool_endpoint_t *ep = &pool->endpoints[i];
    const char *text = options->endpoints[i];
    err = UV_EINVAL;
    if (text == NULL) goto fail;
    err = rn_endpoint_parse(&ep->address, text, strlen(text));
    if (err) goto fail;
    err = rn_endpoint_format(&ep->address, ep->text, sizeof(ep->text));
    if (err < 0) goto fail;
    rn_list_init(&ep->conns);
    rn__backoff_init(&ep->backoff, &options->reconnect);
  }

  pool->data = options->data;
  pool->loop = loop;
  pool->options = *options;
  pool->options.endpoints = NULL;
  pool->options.heartbeat_ping = NULL; /* the frame is kept, not the text */
  pool->endpoint_count = options->endpoint_count;
  rn_list_init(&pool->pending);
  rn_timer_init(loop, &pool->close_timer, NULL);
  pool->close_timer.data = pool;
  rn_timer_init(loop, &pool->reconnect_timer, pool_reconnect_due);
  pool->reconnect_timer.data = pool;
  rn_timer_init(loop, &pool->maintenance_timer, pool_maintain);
  pool->maintenance_timer.data = pool;
  rn_timer_unref(&pool->maintenance_timer);
  /* The first round soon, so min_idle connections warm up at once. */
  rn_timer_start(&pool->maintenance_timer,
                 options->min_idle ? 0 : RN_MAINTENANCE_MS);
  rn__loop_object_add(loop);
  *out = pool;
  return 0;

fail:
  rn_buf_free(&pool->ping_frame);
  free(pool->endpoints);
  free(pool);
  return err;
}

/* ------------------------------------------------------------------------ */
/* Placing calls                                                              */

/* The ready connection with the fewest calls queued, endpoints taken in
 * turn so that ties spread over endpoints. Within an endpoint the most
 * recently used come first (they sit at the tail): reusing a warm
 * connection lets the others go idle and expire. */
static rn_conn_t *pool_pick_any(rn_pool_t *pool) {
  rn_conn_t *best = NULL;
  size_t i;

  for (i = 0; i < pool->endpoint_count; i++) {
    rn_pool_endpoint_t *ep =
        &pool->endpoints[(pool->next_endpoint + i) % pool->endpoint_count];
    rn_list_t *pos;
    for (pos = ep->conns.prev; pos != &ep->conns; pos = pos->prev) {
      rn_conn_t *conn = RN_CONTAINER_OF(pos, rn_conn_t, node);
      if (!rn__conn_writable(conn)) continue;
      if (best == NULL || conn->queued < best->queued) best = conn;
      if (best->queued == 0) goto found;
    }
  }
found:
  if (best != NULL)
    pool->next_endpoint = (pool->next_endpoint + 1) % pool->endpoint_count;
  return best;
}

static rn_conn_t *pool_pick(rn_pool_t *pool) {
  rn_conn_t *conn;
  /* Each failed check closes a connection, so this ends. */
  while ((conn = pool_pick_any(pool)) != NULL) {
    if (conn->queued > 0) break;
    /* The loop's cached clock may be stale after a long callback, which is
     * exactly when a connection may have died unseen. */
    uv_update_time(pool->loop->uv);
    if (rn_loop_now(pool->loop) < conn->last_read + RN_IDLE_CHECK_MS ||
        rn__conn_check_idle(conn) == 0)
      break;
  }
  return conn;
}

/* Opens one more connection, on the next endpoint (in turn) that has room
 * and is not backing off. Called when calls wait, or when a call had to
 * queue behind others on a busy connection. */
static void pool_grow(rn_pool_t *pool) {
  uint64_t now = rn_loop_now(pool->loop);
  uint64_t wake = UINT64_MAX;
  size_t i;

  if (pool->closing) return;

  for (i = 0; i < pool->endpoint_count; i++) {
    size_t k = (pool->next_endpoint + i) % pool->endpoint_count;
    rn_pool_endpoint_t *ep = &pool->endpoints[k];
    if (ep->open >= pool->options.size) continue;
    if (ep->connecting >= RN_MAX_CONNECTING) continue;
    if (ep->retry_at > now) {
      wake = RN_MIN(wake, ep->retry_at);
      continue;
    }
    /* Waiting calls are already covered by connects in progress. */
    if (ep->connecting > 0 && pool->pending_count <= ep->connecting) return;
    if (rn__conn_open(pool, ep) == 0) return;
  }
  /* Every endpoint with room is backing off: come back when the first one
   * may be tried again. Calls wait for it until their deadlines. */
  if (wake != UINT64_MAX && pool->pending_count > 0)
    rn_timer_start(&pool->reconnect_timer, wake - now);
}

static void pool_dispatch(rn_pool_t *pool);

static void pool_reconnect_due(rn_timer_t *timer) {
  pool_dispatch(timer->data);
}

/* Not re-entrant: picking may close a dead connection, whose report comes
 * back here. A nested request only asks the running one to go round again. */
static void pool_dispatch(rn_pool_t *pool) {
  int crowded = 0;
  if (pool->dispatching) {
    pool->dispatch_again = 1;
    return;
  }
  pool->dispatching = 1;
  do {
    pool->dispatch_again = 0;
    while (!rn_list_empty(&pool->pending)) {
      rn_conn_t *conn = pool_pick(pool);
      rn_call_t *call;
      if (conn == NULL || rn_list_empty(&pool->pending)) break;
      if (conn->queued > 0) crowded = 1;
      call = RN_CONTAINER_OF(pool->pending.next, rn_call_t, node);
      rn_list_remove(&call->node);
      pool->pending_count--;
      rn__conn_enqueue(conn, call);
    }
    if (crowded || pool->pending_count > 0) pool_grow(pool);
  } while (pool->dispatch_again);
  pool->dispatching = 0;
  /* A close asked for while we were placing calls runs from the loop, so
   * no callback fires inside the rn_pool_call that got us here. */
  if (pool->close_deferred) {
    pool->close_deferred = 0;
    pool->close_timer.cb = pool_close_deferred;
    rn_timer_start(&pool->close_timer, 0);
  }
}

void rn__pool_conn_writable(rn_pool_t *pool) {
  if (pool->pending_count > 0 && !pool->closing) pool_dispatch(pool);
}

static void pool_call_expired(rn_timer_t *timer) {
  rn_call_t *call = timer->data;
  rn_pool_t *pool = call->pool;
  int status = UV_ETIMEDOUT;

  if (call->conn == NULL) {
    rn_list_remove(&call->node); /* from pending */
    pool->pending_count--;
    /* It waited for a connection that kept failing: the failure says more
     * than the timeout. The connects were its attempt. */
    if (pool->last_connect_error != 0) {
      status = pool->last_connect_error;
      if (call->attempts == 0) call->attempts = 1;
    }
  } else if (call->state == RN_SEND_UNSENT) {
    rn__conn_unqueue(call->conn, call);
  }
  /* A sent call stays in its connection's FIFO: the late reply is still
   * coming and must be matched to it, then dropped. */
  rn__call_complete(call, status, NULL, 0, 0);
  rn__call_release(call);
}

int rn_pool_call(rn_pool_t *pool, const char *frame, size_t len,
                 const rn_call_options_t *options, rn_call_cb cb, void *data) {
  rn_call_t *call;
  uint64_t timeout;
  int err;

  if (pool->closing) return RN_ECLOSED;
  if (frame == NULL || len == 0 || cb == NULL) return UV_EINVAL;
  if (pool->pending_count >= pool->options.max_pending) return RN_EOVERLOAD;

  call = malloc(sizeof(*call));
  if (call == NULL) return UV_ENOMEM;
  memset(call, 0, offsetof(rn_call_t, inline_frame));
  if (len <= sizeof(call->inline_frame)) {
    call->frame = call->inline_frame;
  } else {
    call->frame = malloc(len);
    if (call->frame == NULL) {
      free(call);
      return UV_ENOMEM;
    }
  }
  memcpy(call->frame, frame, len);
  call->frame_len = len;
  call->pool = pool;
  call->cb = cb;
  call->data = data;
  call->idempotent = options != NULL && options->idempotent;
  rn_list_init(&call->node);

  timeout = options != NULL && options->timeout ? options->timeout
                                                : pool->options.timeout;
  /* The deadline counts from now, not from the loop's cached clock, which
   * is stale after time spent outside uv_run or in a long callback. */
  uv_update_time(pool->loop->uv);
  rn_timer_init(pool->loop, &call->deadline, pool_call_expired);
  call->deadline.data = call;
  err = rn_timer_start(&call->deadline, timeout);
  if (err) {
    if (call->frame != call->inline_frame) free(call->frame);
    free(call);
    return err;
  }

  pool->stats.calls++;
  pool->active++;
  rn_list_insert_tail(&pool->pending, &call->node);
  pool->pending_count++;
  pool_dispatch(pool);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* What connections report                                                    */

void rn__pool_conn_ready(rn_pool_t *pool, rn_conn_t *conn) {
  pool->stats.connects++;
  pool->last_connect_error = 0;
  rn__pool_event(pool, conn, "ready", 0);
  if (pool->conns_closed) {
    rn__conn_close(conn, RN_ECLOSED);
    return;
  }
  pool_dispatch(pool);
}

void rn__pool_requeue(rn_pool_t *pool, rn_call_t *call) {
  if (call->done) {
    rn__call_release(call);
    return;
  }
  if (pool->closing) {
    rn__call_complete(call, RN_ECLOSED, NULL, 0, 0);
    rn__call_release(call);
    return;
  }
  /* Ahead of newer calls: it was already in line once. */
  rn_list_insert_head(&pool->pending, &call->node);
  pool->pending_count++;
}

/* The peer answered: only now is the endpoint known to be healthy. A bare
 * TCP accept proves little (a wedged server's kernel still accepts). */
void rn__pool_conn_answered(rn_pool_t *pool, rn_conn_t *conn) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  (void)pool;
  ep->failures = 0;
  ep->retry_at = 0;
  rn__backoff_reset(&ep->backoff);
}

/* The peer reset or closed one connection: its idle siblings on the same
 * endpoint came from the same server incarnation and are most likely dead
 * too. Close them now rather than discover it one failed call at a time.
 * Busy ones find out by themselves; other endpoints are not touched. */
static void pool_drop_siblings(rn_pool_t *pool, rn_conn_t *conn) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  rn_list_t *pos, *tmp;
  (void)pool;
  rn_list_foreach_safe(pos, tmp, &ep->conns) {
    rn_conn_t *sibling = RN_CONTAINER_OF(pos, rn_conn_t, node);
    if (sibling != conn && sibling->state == RN_CONN_READY &&
        sibling->queued == 0)
      rn__conn_close(sibling, RN_ESTALE);
  }
}

void rn__pool_conn_closed(rn_pool_t *pool, rn_conn_t *conn, int err) {
  rn_pool_endpoint_t *ep = conn->endpoint;

  rn__pool_event(pool, conn, "closed", err);
  if (pool->closing) return;
  if (conn->was_ready && (err == UV_ECONNRESET || err == UV_EOF ||
                          err == UV_EPIPE || err == RN_EDEADPEER))
    pool_drop_siblings(pool, conn);
  /* Closes the pool made itself (idle, lifetime, stale siblings) are not
   * the endpoint's fault. */
  if ((!conn->answered && err != 0 && err != RN_ESTALE && err != RN_ECLOSED) ||
      err == RN_EDEADPEER) {
    /* Refused, timed out, accepted and then dropped before answering
     * anything, or gone silent: wait before the next connect to this
     * endpoint. */
    if (!conn->was_ready) pool->stats.connect_failures++;
    ep->failures++;
    ep->retry_at = rn_loop_now(pool->loop) +
                   rn__backoff_next(&ep->backoff, pool->loop);
    if (!conn->was_ready) pool->last_connect_error = err;
  }
  pool_dispatch(pool);
}

/* ------------------------------------------------------------------------ */
/* Housekeeping                                                               */

/* Once a second: retire old connections, close idle ones beyond min_idle,
 * and warm up to min_idle. A weak timer: it never keeps a program alive. */
static void pool_maintain(rn_timer_t *timer) {
  rn_pool_t *pool = timer->data;
  const rn_pool_options_t *o = &pool->options;
  uint64_t now = rn_loop_now(pool->loop);
  size_t i;

  if (pool->conns_closed) return;
  for (i = 0; i < pool->endpoint_count; i++) {
    rn_pool_endpoint_t *ep = &pool->endpoints[i];
    unsigned idle = 0;
    rn_list_t *pos, *tmp;
    /* Most recently used connections sit at the tail: count idle ones from
     * there, so the least recently used are the ones closed. */
    for (pos = ep->conns.prev; pos != &ep->conns; pos = tmp) {
      rn_conn_t *conn = RN_CONTAINER_OF(pos, rn_conn_t, node);
      tmp = pos->prev;
      if (conn->state != RN_CONN_READY) continue;
      if (conn->expires_at != 0 && now >= conn->expires_at) {
        conn->retiring = 1;
        if (conn->queued == 0) {
          pool->stats.retired++;
          rn__conn_close(conn, 0);
          continue;
        }
      }
      if (conn->queued != 0 || conn->retiring) continue;
      if (++idle > o->min_idle && o->idle_timeout != 0 &&
          now >= conn->last_active + o->idle_timeout) {
        pool->stats.idle_closed++;
        rn__conn_close(conn, 0);
      }
    }
    if (pool->closing) return; /* an event handler closed the pool */
    if (idle + ep->connecting < o->min_idle && ep->open < o->size &&
        ep->retry_at <= now)
      rn__conn_open(pool, ep);
  }
  if (!pool->closing) rn_timer_start(timer, RN_MAINTENANCE_MS);
}

/* ------------------------------------------------------------------------ */
/* Closing                                                                    */

static void pool_finish(rn_timer_t *timer) {
  rn_pool_t *pool = timer->data;
  rn_loop_t *loop = pool->loop;
  if (pool->close_cb) pool->close_cb(pool);
  rn_timer_stop(&pool->close_timer);
  rn_timer_stop(&pool->maintenance_timer);
  rn_timer_stop(&pool->reconnect_timer);
  rn_buf_free(&pool->ping_frame);
  free(pool->endpoints);
  free(pool);
  rn__loop_object_remove(loop);
}

/* The close callback runs from a timer, never from inside rn_pool_close
 * or a connection callback, so the caller never sees it early. */
static void pool_maybe_finish(rn_pool_t *pool) {
  if (!pool->conns_closed || pool->conns != 0 || pool->finishing) return;
  pool->finishing = 1;
  pool->close_timer.cb = pool_finish;
  rn_timer_start(&pool->close_timer, 0);
}

static void pool_close_conns(rn_pool_t *pool) {
  size_t i;
  if (pool->conns_closed) return;
  pool->conns_closed = 1;
  rn_timer_stop(&pool->close_timer);
  rn_timer_stop(&pool->maintenance_timer);
  rn_timer_stop(&pool->reconnect_timer);
  for (i = 0; i < pool->endpoint_count; i++) {
    rn_pool_endpoint_t *ep = &pool->endpoints[i];
    rn_list_t *pos, *tmp;
    rn_list_foreach_safe(pos, tmp, &ep->conns) {
      rn__conn_close(RN_CONTAINER_OF(pos, rn_conn_t, node), RN_ECLOSED);
    }
  }
  pool_maybe_finish(pool);
}

static void pool_drain_expired(rn_timer_t *timer) {
  pool_close_conns(timer->data);
}

void rn__pool_call_done(rn_pool_t *pool) {
  if (pool->closing && pool->active == 0) pool_close_conns(pool);
}

void rn__pool_conn_freed(rn_pool_t *pool, rn_conn_t *conn) {
  (void)conn;
  pool->conns--;
  pool_maybe_finish(pool);
}

void rn_pool_close(rn_pool_t *pool, uint64_t drain_ms, rn_pool_close_cb cb) {
  if (pool->closing) return;
  pool->closing = 1;
  pool->close_cb = cb;
  pool->close_drain = drain_ms;
  /* From an event fired while calls are being placed (inside rn_pool_call,
   * say), failing those calls now would run their callbacks before
   * rn_pool_call returned: the close finishes from the loop instead. */
  if (pool->dispatching) {
    pool->close_deferred = 1;
    return;
  }
  pool_close_now(pool);
}

static void pool_close_now(rn_pool_t *pool) {
  uint64_t drain_ms = pool->close_drain;

  while (!rn_list_empty(&pool->pending)) {
    rn_call_t *call = RN_CONTAINER_OF(pool->pending.next, rn_call_t, node);
    rn_list_remove(&call->node);
    pool->pending_count--;
    rn__call_complete(call, RN_ECLOSED, NULL, 0, 0);
    rn__call_release(call);
  }
  if (pool->conns_closed) return; /* a callback above finished the drain */
  if (pool->active == 0 || drain_ms == 0) {
    pool_close_conns(pool);
    return;
  }
  pool->close_timer.cb = pool_drain_expired;
  uv_update_time(pool->loop->uv);
  rn_timer_start(&pool->close_timer, drain_ms);
}

void rn_pool_reset_backoff(rn_pool_t *pool) {
  size_t i;
  for (i = 0; i < pool->endpoint_count; i++) {
    rn_pool_endpoint_t *ep = &pool->endpoints[i];
    ep->failures = 0;
    ep->retry_at = 0;
    rn__backoff_reset(&ep->backoff);
  }
  rn_timer_stop(&pool->reconnect_timer);
  if (!pool->closing) pool_dispatch(pool);
}

void rn_pool_stats(rn_pool_t *pool, rn_pool_stats_t *stats) {
  size_t i;
  *stats = pool->stats;
  stats->open = pool->conns;
  stats->pending = pool->pending_count;
  stats->in_flight = pool->active - pool->pending_count;
  stats->idle = 0;
  for (i = 0; i < pool->endpoint_count; i++) {
    rn_list_t *pos;
    rn_pool_endpoint_t *ep = &pool->endpoints[i];
    for (pos = ep->conns.next; pos != &ep->conns; pos = pos->next) {
      rn_conn_t *conn = RN_CONTAINER_OF(pos, rn_conn_t, node);
      if (conn->state == RN_CONN_READY && conn->queued == 0) stats->idle++;
    }
  }
}

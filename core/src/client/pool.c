/* The pool decides where calls go: which connection, when to open another,
 * what to do with calls when connections fail, and how to close. */
#include "client.h"

#include <assert.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Connects in progress per endpoint: a recovering server sees a trickle of
 * new connections, not the whole pool at once. */
#define RN_MAX_CONNECTING 2
/* Period of the housekeeping round (pool_maintain). */
#define RN_MAINTENANCE_MS 1000

static void pool_maintain(rn_timer_t *timer);
static void pool_close_now(rn_pool_t *pool);

static void pool_close_deferred(rn_timer_t *timer) {
  rn_pool_t *pool = timer->data;
  pool->close_deferred = 0;
  pool_close_now(pool);
}
static void pool_reconnect_due(rn_timer_t *timer);

void rn_pool_options_init(rn_pool_options_t *o) {
  memset(o, 0, sizeof(*o));
  o->codec.protocol = RN_PROTOCOL_RESP;
  o->size = 8;
  o->max_pending = 1000;
  o->max_in_flight = RN_DEFAULT_MAX_IN_FLIGHT;
  o->connect_timeout_ms = 2000;
  o->timeout_ms = 5000;
  o->write_high_water = 1024 * 1024;
  o->reconnect.initial_ms = 100;
  o->reconnect.multiplier = 1.6;
  o->reconnect.jitter = 0.2;
  o->reconnect.max_ms = 30000;
  o->heartbeat.interval_ms = 1000;
  o->heartbeat.timeout_ms = 3000;
  o->heartbeat.probe_ms = 30000;
  o->keepalive.idle_ms = 20000;
  o->keepalive.interval_ms = 5000;
  o->keepalive.count = 3;
  o->keepalive.user_timeout_ms = 20000;
  o->idle_timeout_ms = 60000;
  o->retry.attempts = 3;
  o->retry.initial_ms = 10;
  o->retry.max_ms = 1000;
  o->retry.budget_tokens = 10;
  o->retry.budget_ratio = 0.1;
  o->eject.failures = 5;
  o->eject.time_ms = 10000;
  o->eject.max_time_ms = 300000;
  o->eject.max_share = 0.5;
  o->resolve_ttl_ms = 30000;
  o->hedge.max = 2;
  o->max_batch = RN_DEFAULT_MAX_BATCH;
}

/* The ping each heartbeat sends: RESP has PING; line and length have only
 * what the application configured. */
static int pool_make_ping(rn_pool_t *pool, const rn_pool_options_t *o) {
  int err;
  if (pool->codec.protocol == RN_PROTOCOL_RNP)
    return rn__rnp_make_frames(pool);
  if (o->heartbeat.interval_ms == 0) return 0;
  if (pool->codec.protocol == RN_PROTOCOL_RESP) {
    err = rn_resp_encode_array(&pool->ping_frame, 1);
    if (err == 0) err = rn_resp_encode_bulk(&pool->ping_frame, "PING", 4);
    return err;
  }
  if (o->heartbeat.ping == NULL || o->heartbeat.ping_len == 0) return 0;
  err = rn_codec_encode(&pool->codec, &pool->ping_frame, o->heartbeat.ping,
                        o->heartbeat.ping_len);
  if (err == 0 && pool->ping_frame.len > RN_CALL_INLINE_FRAME) err = UV_EINVAL;
  return err;
}

/* retry.not_executed's list and strings in one block, so that the
 * caller's need not outlive rn_pool_new. NULL (the built-in table) stays
 * NULL. */
static int pool_copy_codes(rn_pool_t *pool, const char *const *codes) {
  size_t i, n = 0, bytes;
  char **copy, *at;
  if (codes == NULL) return 0;
  while (codes[n] != NULL) n++;
  bytes = (n + 1) * sizeof(char *);
  for (i = 0; i < n; i++) bytes += strlen(codes[i]) + 1;
  copy = malloc(bytes);
  if (copy == NULL) return UV_ENOMEM;
  at = (char *)(copy + n + 1);
  for (i = 0; i < n; i++) {
    size_t len = strlen(codes[i]) + 1;
    memcpy(at, codes[i], len);
    copy[i] = at;
    at += len;
  }
  copy[n] = NULL;
  pool->not_executed = copy;
  pool->options.retry.not_executed = (const char *const *)copy;
  return 0;
}

static void pool_free_frames(rn_pool_t *pool) {
  free(pool->not_executed);
  rn_buf_free(&pool->ping_frame);
  rn__wipe(pool->hello_frame.base, pool->hello_frame.len);
  rn_buf_free(&pool->hello_frame);
  rn__setup_free(pool);
  rn_buf_free(&pool->scratch);
  rn_buf_free(&pool->tls_in);
  rn_buf_free(&pool->tls_out);
  rn__tls_ctx_unref(pool->tls);
}

void *rn_pool_data(rn_pool_t *pool) { return pool->data; }

const rn_codec_t *rn_pool_codec(rn_pool_t *pool) { return &pool->codec; }

void rn__pool_emit(rn_pool_t *pool, rn_event_type_t type,
                   rn_pool_endpoint_t *ep, rn_pool_event_t *ev) {
  if (pool->options.on_event == NULL) return;
  ev->type = type;
  if (ev->endpoint == NULL && ep != NULL) ev->endpoint = ep->text;
  pool->callback_depth++;
  pool->options.on_event(pool, ev);
  pool->callback_depth--;
}

void rn__pool_emit_reason(rn_pool_t *pool, rn_event_type_t type,
                          rn_pool_endpoint_t *ep, const char *reason,
                          int err) {
  rn_pool_event_t ev;
  memset(&ev, 0, sizeof(ev));
  ev.reason = reason;
  ev.error = err;
  rn__pool_emit(pool, type, ep, &ev);
}

void rn__pool_event(rn_pool_t *pool, rn_conn_t *conn, const char *state,
                    int err) {
  rn_pool_event_t ev;
  if (pool->options.on_event == NULL) return;
  memset(&ev, 0, sizeof(ev));
  ev.connection = conn->serial;
  ev.state = state;
  ev.error = err;
  if (strcmp(state, "closed") == 0)
    ev.reason = rn__conn_close_reason(conn);
  else
    ev.reason = strcmp(state, "ready") == 0 ? "connected" : "connect";
  rn__pool_emit(pool, RN_EVENT_STATE, conn->endpoint, &ev);
}

static void pool_later(rn_timer_t *timer);
static int pool_all_refused(rn_pool_t *pool);
static void pool_fail_pending(rn_pool_t *pool, int err);

void rn__pool_want_resolve(rn_pool_t *pool, const char *reason) {
  if (pool->closing) return;
  pool->resolve_reason = reason;
  pool->resolved_at = rn__loop_now(pool->loop);
  rn_timer_start(&pool->later_timer, 0);
}

static int pool_check_options(const rn_pool_options_t *o) {
  if (o->endpoint_count == 0 || o->endpoints == NULL || o->size == 0 ||
      o->timeout_ms == 0 || o->connect_timeout_ms == 0 ||
      o->write_high_water == 0 || rn__backoff_check(&o->reconnect) != 0 ||
      (o->heartbeat.interval_ms > 0 && o->heartbeat.timeout_ms == 0) ||
      o->retry.attempts == 0 || o->retry.max_ms < o->retry.initial_ms ||
      !(o->retry.budget_tokens > 0) || !(o->retry.budget_ratio >= 0) ||
      !(o->eject.max_share >= 0 && o->eject.max_share <= 1) ||
      (o->eject.failures > 0 &&
       (o->eject.time_ms == 0 || o->eject.max_time_ms < o->eject.time_ms)))
    return UV_EINVAL;
  /* A token only rnp's HELLO carries, of 1 to 255 bytes. */
  if (o->auth != NULL) {
    size_t len = o->auth_len != 0 ? o->auth_len : strlen(o->auth);
    if (o->codec.protocol != RN_PROTOCOL_RNP || len == 0 ||
        len > RN_RNP_AUTH_MAX)
      return UV_EINVAL;
  }
  /* A unix socket has no host name to verify: fail now, not each connect. */
  if (o->tls != NULL) {
    size_t i;
    for (i = 0; i < o->endpoint_count; i++) {
      rn_endpoint_t ep;
      const char *text = o->endpoints[i];
      if (text != NULL && rn_endpoint_parse(&ep, text, strlen(text)) == 0 &&
          rn_tls_endpoint_check(o->tls, &ep, NULL, 0) != 0)
        return UV_EINVAL;
    }
  }
  return 0;
}

static int pool_has_endpoint(const rn_pool_t *pool,
                             const rn_pool_endpoint_t *ep) {
  size_t i;
  for (i = 0; i < pool->endpoint_count; i++)
    if (pool->endpoints[i] == ep) return 1;
  return 0;
}

/* What the pool keeps of TLS options besides the context. */
static void pool_tls_note(rn_pool_t *pool, const rn_tls_options_t *o) {
  pool->tls_insecure = o->insecure != 0;
  pool->tls_named = o->server_name != NULL;
}

/* Parses a list into a new array of endpoints, reusing those of the
 * current list that appear in it (same canonical text). On failure nothing
 * is kept and the current list is untouched. */
static int pool_build_endpoints(rn_pool_t *pool, const char *const *texts,
                                size_t count, rn_pool_endpoint_t ***out) {
  rn_pool_endpoint_t **list;
  size_t i, j;
  int err = 0;

  *out = NULL;
  if (count == 0 || texts == NULL) return UV_EINVAL;
  list = calloc(count, sizeof(*list));
  if (list == NULL) return UV_ENOMEM;
  for (i = 0; i < count; i++) {
    err = rn__endpoint_new(pool, texts[i], &list[i]);
    if (err) break;
    if (pool->tls != NULL &&
        !rn__tls_endpoint_ok(pool->tls_insecure, pool->tls_named,
                             &list[i]->address))
      err = UV_EINVAL; /* as rn_pool_new would have: rn_tls_endpoint_check */
    for (j = 0; j < pool->endpoint_count; j++) {
      if (strcmp(pool->endpoints[j]->text, list[i]->text) == 0) {
        free(list[i]);
        list[i] = pool->endpoints[j];
        break;
      }
    }
    for (j = 0; j < i; j++)
      if (strcmp(list[j]->text, list[i]->text) == 0) err = UV_EINVAL;
    if (err) {
      i++; /* list[i] is cleaned up with the others */
      break;
    }
  }
  if (err) {
    for (j = 0; j < i; j++)
      if (!pool_has_endpoint(pool, list[j])) free(list[j]);
    free(list);
    return err;
  }
  *out = list;
  return 0;
}

/* Makes list the pool's endpoints; the ones left out are removed. */
static void pool_swap_endpoints(rn_pool_t *pool, rn_pool_endpoint_t **list,
                                size_t count) {
  rn_pool_endpoint_t **old = pool->endpoints;
  size_t old_count = pool->endpoint_count, i, j;

  pool->endpoints = list;
  pool->endpoint_count = count;
  pool->next_endpoint = 0;
  pool->resolved_at = rn__loop_now(pool->loop);
  for (i = 0; i < old_count; i++) {
    int kept = 0;
    for (j = 0; j < count; j++)
      if (list[j] == old[i]) kept = 1;
    if (!kept) rn__endpoint_remove(pool, old[i]);
  }
  free(old); /* removing an ejected endpoint took it off pool->ejected */
  rn__pool_peer_max_frame(pool);
}

int rn_pool_new(rn_loop_t *loop, const rn_pool_options_t *options,
                rn_pool_t **out) {
  rn_pool_t *pool;
  int err;

  *out = NULL;
  err = pool_check_options(options);
  if (err) return err;

  pool = calloc(1, sizeof(*pool));
  if (pool == NULL) return UV_ENOMEM;
  rn_buf_init(&pool->ping_frame);
  rn_buf_init(&pool->hello_frame);
  rn_buf_init(&pool->setup_frames);
  rn_buf_init(&pool->scratch);
  rn_buf_init(&pool->tls_in);
  rn_buf_init(&pool->tls_out);
  rn_list_init(&pool->removed);
  pool->loop = loop;
  pool->options = *options;
  pool->options.endpoints = NULL;
  pool->options.tls = NULL; /* the context is kept, not the options */
  if (options->tls != NULL) {
    err = rn__tls_ctx_new(options->tls, RN_TLS_CLIENT, &pool->tls, NULL, 0);
    if (err) goto fail;
    pool_tls_note(pool, options->tls);
  }
  pool->options.heartbeat.ping = NULL; /* the frame is kept, not the text */
  if (options->auth != NULL && options->auth_len == 0)
    pool->options.auth_len = strlen(options->auth);
  if (pool->options.retry.attempts > RN_MAX_ATTEMPTS)
    pool->options.retry.attempts = RN_MAX_ATTEMPTS;
  pool->options.retry.not_executed = NULL;
  err = pool_copy_codes(pool, options->retry.not_executed);
  if (err) goto fail;
  err = rn_codec_init(&pool->codec, &options->codec);
  if (err) goto fail;
  if (pool->codec.protocol == RN_PROTOCOL_LENGTH &&
      pool->codec.length_bytes == 4)
    pool->len4_window = (size_t)RN_MIN((uint64_t)pool->codec.max_frame - 3,
                                       (uint64_t)UINT32_MAX + 1);
  err = pool_make_ping(pool, options);
  pool->options.auth = NULL; /* in hello_frame now, and only there */
  pool->options.auth_len = 0;
  if (err == 0) err = rn__setup_make(pool, options);
  /* In setup_frames now, and only there. */
  pool->options.setup = NULL;
  pool->options.setup_count = 0;
  pool->options.password = pool->options.username = NULL;
  pool->options.client_name = NULL;
  if (err) goto fail;
  err = pool_build_endpoints(pool, options->endpoints,
                             options->endpoint_count, &pool->endpoints);
  if (err) goto fail;
  pool->endpoint_count = options->endpoint_count;

  pool->data = options->data;
  pool->budget = options->retry.budget_tokens;
  pool->resolved_at = rn__loop_now(loop);
  rn_list_init(&pool->pending);
  rn_list_init(&pool->retrying);
  rn_list_init(&pool->spare_calls);
  rn__hold_pool_init(pool);
  rn__timer_lane_init(loop, &pool->deadlines, pool->options.timeout_ms);
  rn_timer_init(loop, &pool->close_timer, NULL);
  pool->close_timer.data = pool;
  rn_timer_init(loop, &pool->reconnect_timer, pool_reconnect_due);
  pool->reconnect_timer.data = pool;
  rn_timer_init(loop, &pool->eject_timer, rn__endpoint_eject_due);
  pool->eject_timer.data = pool;
  rn_timer_unref(&pool->eject_timer);
  rn_timer_init(loop, &pool->later_timer, pool_later);
  pool->later_timer.data = pool;
  rn_timer_unref(&pool->later_timer);
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
  pool_free_frames(pool);
  free(pool);
  return err;
}

/* Drops a list set from a callback and not applied yet. It holds current
 * endpoints (the list has not changed since: only a swap changes it, and
 * every swap discards this first) and new ones, which are freed. */
static void pool_discard_next(rn_pool_t *pool) {
  size_t i;
  if (pool->next_endpoints == NULL) return;
  for (i = 0; i < pool->next_endpoint_count; i++)
    if (!pool_has_endpoint(pool, pool->next_endpoints[i]))
      free(pool->next_endpoints[i]);
  free(pool->next_endpoints);
  pool->next_endpoints = NULL;
}

int rn_pool_set_endpoints(rn_pool_t *pool, const char *const *endpoints,
                          size_t count) {
  rn_pool_endpoint_t **list;
  int err;

  if (pool->closing) return RN_ECLOSED;
  err = pool_build_endpoints(pool, endpoints, count, &list);
  if (err) return err;
  pool_discard_next(pool);
  if (pool->callback_depth > 0 || pool->dispatching) {
    pool->next_endpoints = list;
    pool->next_endpoint_count = count;
    rn_timer_start(&pool->later_timer, 0);
    return 0;
  }
  pool_swap_endpoints(pool, list, count);
  rn__pool_dispatch(pool);
  return 0;
}

/* Work that must not run inside the user's callbacks: an endpoint list
 * set from one, and RESOLVE events (whose handler sets a list). */
static void pool_later(rn_timer_t *timer) {
  rn_pool_t *pool = timer->data;
  const char *reason = pool->resolve_reason;

  if (pool->closing) return;
  if (pool->fail_refused_due) {
    pool->fail_refused_due = 0;
    if (pool_all_refused(pool))
      pool_fail_pending(pool, pool->last_connect_error);
    if (pool->closing) return;
  }
  if (pool->next_endpoints != NULL) {
    rn_pool_endpoint_t **list = pool->next_endpoints;
    pool->next_endpoints = NULL;
    pool_swap_endpoints(pool, list, pool->next_endpoint_count);
    rn__pool_dispatch(pool);
  }
  if (reason != NULL && !pool->closing) {
    pool->resolve_reason = NULL;
    rn__pool_emit_reason(pool, RN_EVENT_RESOLVE, NULL, reason, 0);
  }
}

/* ------------------------------------------------------------------------ */
/* Placing calls                                                              */

static int pool_endpoint_full(const rn_pool_t *pool,
                              const rn_pool_endpoint_t *ep) {
  return pool->options.max_in_flight != 0 &&
         ep->outstanding >= pool->options.max_in_flight;
}

/* rnp: the endpoint's server has no room for the requests of call (NULL:
 * one) from this pool: MAX_CONCURRENT over all its connections (the limit
 * is the server's, not a connection's: docs/protocol.md section 6; a
 * batch is its n requests). More would only be refused OVERLOADED, so calls wait
 * in the pool's queue (or go to other endpoints) until replies free
 * places; another connection to it would not help either. A batch larger
 * than MAX_CONCURRENT goes when nothing else is out there: alone, it gets
 * what the server can give (it admits MAX_CONCURRENT and queues or
 * refuses the rest), and waiting longer would not get it more. */
int rn__endpoint_at_server_limit(const rn_pool_endpoint_t *ep,
                                 const rn_call_t *call) {
  return ep->max_concurrent != 0 && ep->requests != 0 &&
         ep->requests + (call != NULL ? rn__call_requests(call) : 1) >
             ep->max_concurrent;
}

/* rnp: no endpoint's server accepts a frame of len bytes (each announced
 * a smaller MAX_FRAME): it can never be sent. */
static int pool_fits_nowhere(const rn_pool_t *pool, size_t len) {
  return pool->peer_max_frame != 0 && len > pool->peer_max_frame;
}

/* With a cap on calls in flight per endpoint: whether every endpoint that
 * could take a call is at it. */
static int pool_all_full(rn_pool_t *pool) {
  size_t i, full = 0;
  if (pool->options.max_in_flight == 0) return 0; /* every call asks */
  for (i = 0; i < pool->endpoint_count; i++) {
    rn_pool_endpoint_t *ep = pool->endpoints[i];
    /* The clock only for an ejected endpoint: every call asks this, and
     * almost always the first endpoint has room. */
    if (ep->ejected_until != 0 && rn__loop_now(pool->loop) < ep->ejected_until)
      continue;
    if (!pool_endpoint_full(pool, ep)) return 0;
    full++;
  }
  /* Every endpoint ejected is not every endpoint full: calls wait for an
   * ejection to end, as they do without a cap. */
  return full > 0;
}

/* A writable connection of ep that takes a frame of len bytes: an idle
 * one while some must be idle (fewer busy connections than ready ones),
 * since a call there waits behind nothing; else the first with no more
 * calls queued than the endpoint's average (the fewest, if none is):
 * searching all fifty busy connections for the very least loaded on every
 * call costs more than it balances. A connection moves to the tail when a
 * reply arrives on it, so the walk from there meets the one just answered
 * first; reusing it lets the others stay idle and expire. */
static inline rn_conn_t *endpoint_pick(rn_pool_endpoint_t *ep, rn_conn_t *skip,
                                size_t len) {
  int want_idle = ep->busy < ep->ready;
  rn_conn_t *best = NULL;
  rn_list_t *pos;
  for (pos = ep->conns.prev; pos != &ep->conns; pos = pos->prev) {
    rn_conn_t *conn = RN_CONTAINER_OF(pos, rn_conn_t, node);
    if (conn == skip || !rn__conn_writable(conn) || !rn__conn_fits(conn, len))
      continue;
    if (best == NULL || conn->queued < best->queued) best = conn;
    if (best->queued == 0) break;
    if (!want_idle && (uint64_t)best->queued * ep->ready <= ep->outstanding)
      break;
  }
  return best;
}

/* Whether ep may take call (NULL: any single request) now: has a ready
 * connection, is under its caps (max_in_flight, its server's
 * MAX_CONCURRENT), not ejected (an ejection past its time ends here).
 * Cheap tests first: this runs for every call. */
static inline int pool_endpoint_open_for_calls(rn_pool_t *pool,
                                               rn_pool_endpoint_t *ep,
                                               const rn_call_t *call) {
  return ep->ready != 0 && !pool_endpoint_full(pool, ep) &&
         !rn__endpoint_at_server_limit(ep, call) &&
         (ep->ejected_until == 0 ? !ep->removed
                                 : rn__endpoint_usable(
                                       pool, ep, rn__loop_now(pool->loop)));
}

/* A connection of the usable endpoint with the fewest calls outstanding
 * that takes a frame of len bytes and call's requests (NULL: one),
 * endpoints taken in turn so that ties spread over them. `avoid` (where a
 * call's last attempt failed) is taken only if no other endpoint can;
 * `skip` (a hedged call's own connection) never. `store`, when not 0: only
 * endpoints announcing that key store (a keyed call whose attempt may
 * have run, store.c); 0 at every other call site, where the compiler
 * drops the test. */
static inline rn_conn_t *pool_pick_any(rn_pool_t *pool,
                                       rn_pool_endpoint_t *avoid,
                                       rn_conn_t *skip, size_t len,
                                       const rn_call_t *call,
                                       uint16_t store) {
  rn_conn_t *best = NULL, *fallback = NULL;
  unsigned best_load = UINT_MAX;
  size_t n = pool->endpoint_count, k = pool->next_endpoint, i;

  /* One endpoint (one server, the common case): no turn to take, and
   * `avoid` would be the fallback anyway. */
  if (n == 1)
    return pool_endpoint_open_for_calls(pool, pool->endpoints[0], call) &&
                   (store == 0 || pool->endpoints[0]->store == store)
               ? endpoint_pick(pool->endpoints[0], skip, len)
               : NULL;
  for (i = 0; i < n; i++, k = k + 1 == n ? 0 : k + 1) {
    rn_pool_endpoint_t *ep = pool->endpoints[k];
    rn_conn_t *conn;
    if (ep->outstanding >= best_load ||
        !pool_endpoint_open_for_calls(pool, ep, call) ||
        (store != 0 && ep->store != store))
      continue;
    conn = endpoint_pick(ep, skip, len);
    if (conn == NULL) continue;
    if (ep == avoid) {
      fallback = conn;
      continue;
    }
    best = conn;
    best_load = ep->outstanding;
    if (best_load == 0) break;
  }
  if (best == NULL) best = fallback;
  if (best != NULL && n > 1)
    pool->next_endpoint = pool->next_endpoint + 1 == n ? 0
                                                       : pool->next_endpoint + 1;
  return best;
}

/* pool_pick once its first pick is an idle connection. A FIN that
 * arrived after the loop's last poll is unseen. Trust the connection only
 * while the loop polled in this very millisecond (a call made from a
 * reply's callback); otherwise peek. A connection's own last read proves
 * nothing: the server may have died since. Each failed check closes a
 * connection, so this ends. */
static RN_NOINLINE rn_conn_t *pool_pick_checked(rn_pool_t *pool,
                                                rn_pool_endpoint_t *avoid,
                                                rn_conn_t *skip, size_t len,
                                                const rn_call_t *call,
                                                uint16_t store,
                                                rn_conn_t *conn) {
  do {
    if (conn->queued > 0) break;
    rn__loop_update_time(pool->loop);
    if (rn__loop_now(pool->loop) <= pool->loop->last_poll ||
        rn__conn_check_idle(conn) == 0)
      break;
  } while ((conn = pool_pick_any(pool, avoid, skip, len, call, store)) !=
           NULL);
  return conn;
}

/* A busy connection (the pipelined case) needs no check: the out-of-line
 * loop, and the registers it saves, only for an idle one. */
static inline rn_conn_t *pool_pick(rn_pool_t *pool, rn_pool_endpoint_t *avoid,
                                   rn_conn_t *skip, size_t len,
                                   const rn_call_t *call, uint16_t store) {
  rn_conn_t *conn = pool_pick_any(pool, avoid, skip, len, call, store);
  if (conn == NULL || conn->queued > 0) return conn;
  return pool_pick_checked(pool, avoid, skip, len, call, store, conn);
}

/* rnp: a keyed call whose attempt may have run goes only where its key's
 * store is announced (docs/retry-rules.md, "Where a retried or moved call
 * goes"); RN_STORE_MIXED matches no endpoint. Out of line: only such
 * calls, all waiting in the queue, come here. */
static RN_NOINLINE rn_conn_t *pool_pick_bound(rn_pool_t *pool,
                                              rn_call_t *call, size_t len) {
  return pool_pick(pool, call->endpoint, NULL, len, call, call->store);
}

/* Opens one more connection, on the next endpoint (in turn) that has room
 * and is neither backing off nor ejected. Called when calls wait, or when a
 * call had to queue behind others on a busy connection. */
void rn__pool_grow(rn_pool_t *pool) {
  uint64_t now = 0;
  uint64_t wake = UINT64_MAX;
  size_t n = pool->endpoint_count, k = pool->next_endpoint, i;

  if (pool->closing) return;

  for (i = 0; i < n; i++, k = k + 1 == n ? 0 : k + 1) {
    rn_pool_endpoint_t *ep = pool->endpoints[k];
    /* Full: the usual case under load, so before anything costlier. */
    if (ep->open >= pool->options.size) continue;
    if (now == 0) now = rn__loop_now(pool->loop);
    if (ep->connecting >= RN_MAX_CONNECTING) continue;
    if (pool_endpoint_full(pool, ep) ||
        rn__endpoint_at_server_limit(ep, NULL))
      continue;
    if (!rn__endpoint_usable(pool, ep, now)) {
      if (ep->ejected_until != 0) wake = RN_MIN(wake, ep->ejected_until);
      continue;
    }
    if (ep->retry_at > now) {
      wake = RN_MIN(wake, ep->retry_at);
      continue;
    }
    /* Waiting calls are already covered by connects in progress. */
    if (ep->connecting > 0 && pool->pending_count <= ep->connecting) return;
    if (rn__conn_open(pool, ep) == 0) return;
  }
  /* Every endpoint with room is backing off or ejected: come back when the
   * first one may be tried again. Calls wait for it until their deadlines. */
  if (wake != UINT64_MAX && pool->pending_count > 0)
    rn_timer_start(&pool->reconnect_timer, wake - now);
}

static void pool_reconnect_due(rn_timer_t *timer) {
  rn__pool_dispatch(timer->data);
}

/* rnp: whether some connection would take the call at the head of the
 * queue were it smaller, when none takes it (its frame is above their
 * servers' MAX_FRAME): then smaller calls behind it go on. A batch waiting
 * for room under MAX_CONCURRENT is not passed over: single calls would
 * take each place as it frees, and it would wait forever. */
static int pool_takes_smaller(rn_pool_t *pool, const rn_call_t *head) {
  /* A keyed call waiting for its store's endpoint holds no one up. */
  return pool->codec.protocol == RN_PROTOCOL_RNP &&
         pool_pick(pool, NULL, NULL, 0, head->store != 0 ? NULL : head, 0) !=
             NULL;
}

/* Every endpoint refused (its certificate failed our checks, or our
 * credentials failed its, and no connection has been answered since): a
 * configuration fault that will outlast any call's deadline, so calls
 * waiting for a connection fail now, with the cause, instead of timing
 * out. */
static int pool_all_refused(rn_pool_t *pool) {
  uint64_t now;
  size_t i;
  if (pool->refused == 0 || pool->refused < pool->endpoint_count)
    return 0;
  /* Once one's wait is over, calls wait for its next connect: the fault
   * may have been mended at the server (a new certificate there). */
  now = rn__loop_now(pool->loop);
  for (i = 0; i < pool->endpoint_count; i++)
    if (pool->endpoints[i]->retry_at <= now) return 0;
  return 1;
}

/* Fails the calls waiting now; calls their callbacks make wait for the
 * next turn of the loop (pool_later), so that a task calling again on
 * every failure cannot keep the loop from ever turning (nor the refused
 * endpoint's wait from ever ending). */
static void pool_fail_pending(rn_pool_t *pool, int err) {
  rn_list_t failing;
  rn_list_init(&failing);
  while (!rn_list_empty(&pool->pending)) {
    rn_list_t *node = pool->pending.next;
    rn_list_remove(node);
    rn_list_insert_tail(&failing, node);
  }
  while (!rn_list_empty(&failing) && !pool->closing) {
    rn_call_t *call = RN_CONTAINER_OF(failing.next, rn_call_t, node);
    rn_list_remove(&call->node);
    pool->pending_count--;
    rn__fate_fail_why(call, err, rn__pool_connect_why(pool));
  }
  /* An event handler closed the pool: the close fails the rest. */
  while (!rn_list_empty(&failing)) {
    rn_list_t *node = failing.next;
    rn_list_remove(node);
    rn_list_insert_tail(&pool->pending, node);
  }
}

const char *rn__pool_connect_why(const rn_pool_t *pool) {
  int err = pool->last_connect_error;
  if (err != 0 && err == pool->connect_why_error &&
      pool->connect_why[0] != '\0')
    return pool->connect_why;
  return NULL;
}

/* rn__pool_grow for a call that queued behind others, skipped without a
 * call where it would find nothing to do: the one endpoint of most pools
 * already has its `size` connections, the usual case under load. */
static void pool_grow_crowded(rn_pool_t *pool) {
  if (pool->endpoint_count == 1 &&
      pool->endpoints[0]->open >= pool->options.size)
    return;
  rn__pool_grow(pool);
}

/* Sends call (not queued anywhere) on conn: what every placement does,
 * from the pending queue or straight from rn_pool_call. */
static void pool_place(rn_pool_t *pool, rn_conn_t *conn, rn_call_t *call) {
  if (conn->queued == 0 && conn->answered) pool->stats.reuses++;
  rn__fate_placed(call);
  rn__conn_enqueue(conn, call);
}

/* Puts the calls dispatch passed over back at the head of the queue, in
 * their order. */
static void pool_unpass(rn_pool_t *pool, rn_list_t *passed) {
  while (!rn_list_empty(passed)) {
    rn_list_t *node = passed->prev;
    rn_list_remove(node);
    rn_list_insert_head(&pool->pending, node);
  }
}

/* Not re-entrant: picking may close a dead connection, whose report comes
 * back here. A nested request only asks the running one to go round again.
 *
 * rnp servers may announce different MAX_FRAMEs: a call goes only to a
 * connection that takes it, and one that no ready connection takes is
 * passed over (kept pending, in order, counted in pending_count) so that
 * the calls behind it are not held up; it waits for a connection to an
 * endpoint that takes it. One that no endpoint takes fails. */
void rn__pool_dispatch(rn_pool_t *pool) {
  int crowded = 0;
  rn_list_t passed;
  /* Closing: waiting calls are failed by the close, not placed. */
  if (pool->closing) return;
  if (pool->dispatching) {
    pool->dispatch_again = 1;
    return;
  }
  pool->dispatching = 1;
  rn_list_init(&passed);
  do {
    /* No connection took a frame this large in this pass. */
    size_t too_large = SIZE_MAX;
    pool->dispatch_again = 0;
    while (!rn_list_empty(&pool->pending)) {
      rn_call_t *call = RN_CONTAINER_OF(pool->pending.next, rn_call_t, node);
      size_t len = call->frame_len;
      rn_conn_t *conn = NULL;
      if (pool_fits_nowhere(pool, len)) {
        /* Accepted before every server's MAX_FRAME was known (later calls
         * are refused by rn_pool_call): it must not be sent, anywhere. */
        rn_list_remove(&call->node);
        pool->pending_count--;
        rn__fate_fail(call, RN_EFRAMESIZE);
        continue;
      }
      if (len < too_large) {
        conn = call->store != 0
                   ? pool_pick_bound(pool, call, len)
                   : pool_pick(pool, call->endpoint, NULL, len, call, 0);
        if (conn == NULL && !pool_takes_smaller(pool, call)) break;
      }
      /* The check in pick may have failed calls (and run callbacks): the
       * connection was picked for the call at the head then. */
      if (rn_list_empty(&pool->pending) ||
          pool->pending.next != &call->node ||
          (conn != NULL && !rn__conn_fits(conn, call->frame_len)))
        continue;
      if (conn == NULL) {
        too_large = RN_MIN(too_large, len);
        rn_list_remove(&call->node);
        rn_list_insert_tail(&passed, &call->node);
        continue;
      }
      if (conn->queued > 0) crowded = 1;
      rn_list_remove(&call->node);
      pool->pending_count--;
      pool_place(pool, conn, call);
    }
    pool_unpass(pool, &passed);
    /* Failed from the loop, never inside rn_pool_call (whose caller must
     * not see its callback run before it returns). */
    if (pool->pending_count > 0 && pool_all_refused(pool)) {
      pool->fail_refused_due = 1;
      rn_timer_start(&pool->later_timer, 0);
    }
    if (pool->pending_count > 0)
      rn__pool_grow(pool);
    else if (crowded)
      pool_grow_crowded(pool);
  } while (pool->dispatch_again);
  pool->dispatching = 0;
}

rn_conn_t *rn__pool_pick_other(rn_pool_t *pool, rn_call_t *call) {
  return pool_pick(pool, call->endpoint, call->conn, call->frame_len, call, 0);
}

void rn__pool_conn_writable(rn_pool_t *pool) {
  if (pool->pending_count > 0 && !pool->closing) rn__pool_dispatch(pool);
}

/* Out of line: rn__pool_admit, on every call's path, stays small enough
 * to be inlined there. */
RN_NOINLINE int rn__pool_overloaded(rn_pool_t *pool, const char *reason) {
  pool->stats.overloaded++;
  rn__pool_emit_reason(pool, RN_EVENT_OVERLOAD, NULL, reason, RN_EOVERLOAD);
  return RN_EOVERLOAD;
}

int rn__pool_admit(rn_pool_t *pool) {
  if (pool->closing) return RN_ECLOSED;
  if (pool->pending_count >= pool->options.max_pending ||
      pool_all_full(pool))
    return rn__pool_overloaded(pool,
                               pool->pending_count >= pool->options.max_pending
                                   ? "max_pending"
                                   : "max_in_flight");
  return 0;
}

int rn__pool_accept(rn_pool_t *pool, rn_call_t *call,
                    const rn_call_options_t *options, rn_call_cb cb,
                    void *data) {
  int err;
  /* Larger than every server said it accepts: refused now, not sent. */
  if (pool_fits_nowhere(pool, call->frame_len)) return RN_EFRAMESIZE;
  err = rn__fate_begin(call, options, cb, data);
  if (err) return err;

  pool->stats.calls++;
  pool->active++;
  /* Nothing waits before it and no dispatch is under way: the call goes
   * straight to the connection picked for it, without the trip through
   * the pending queue. Otherwise it queues behind the others. */
  if (rn_list_empty(&pool->pending) && !pool->dispatching) {
    rn_conn_t *conn;
    /* Marked as a dispatch, as rn__pool_dispatch does: a close, or a
     * call, made by a callback that the pick's idle check runs waits
     * until this one is placed. */
    pool->dispatching = 1;
    pool->dispatch_again = 0;
    /* A new call: no key store binds it yet. */
    conn = pool_pick(pool, call->endpoint, NULL, call->frame_len, call, 0);
    if (conn != NULL && !pool->closing) {
      int crowded = conn->queued > 0;
      pool_place(pool, conn, call);
      pool->dispatching = 0;
      /* A call that queued behind others: one more connection may help. */
      if (crowded) pool_grow_crowded(pool);
      if (pool->dispatch_again) rn__pool_dispatch(pool);
      return 0;
    }
    pool->dispatching = 0;
  }
  rn_list_insert_tail(&pool->pending, &call->node);
  pool->pending_count++;
  rn__pool_dispatch(pool);
  return 0;
}

int rn_pool_call(rn_pool_t *pool, const char *frame, size_t len,
                 const rn_call_options_t *options, rn_call_cb cb, void *data) {
  rn_call_t *call;
  int err;

  /* (len 0: no frame, for rn__call_check_request_fast to say.) */
  if (!pool->closing && (frame == NULL || cb == NULL)) return UV_EINVAL;
  /* One frame, one reply; and the connection it lands on is shared: the
   * next call there must meet what the pool's setup made (rn_pool_hold is
   * for the rest). */
  if (!pool->closing &&
      (err = rn__call_check_request_fast(pool, frame, len, 1)) != 0)
    return err;
  if ((err = rn__pool_admit(pool)) != 0) return err;

  call = rn__call_new(pool);
  if (call == NULL) return UV_ENOMEM;
  if (pool->codec.protocol == RN_PROTOCOL_RNP) {
    err = rn__rnp_call_prepare(pool, call, frame, len, options);
  } else {
    err = rn__call_set_frame(call, frame, len);
  }
  if (err == 0) err = rn__pool_accept(pool, call, options, cb, data);
  if (err == 0) return 0;
  call->done = 1; /* never accepted: released at once, no callback */
  rn__call_release(call);
  return err;
}

/* ------------------------------------------------------------------------ */
/* What connections report                                                    */

/* Opens connections toward min_idle idle ones on ep, a few at a time. */
static void pool_warm(rn_pool_t *pool, rn_pool_endpoint_t *ep) {
  const rn_pool_options_t *o = &pool->options;
  unsigned idle = 0;
  rn_list_t *pos;
  if (o->min_idle == 0 || ep->retry_at > rn__loop_now(pool->loop) ||
      ep->open >= o->size || ep->connecting >= RN_MAX_CONNECTING)
    return;
  if (ep->ready + ep->connecting < o->min_idle) {
    /* Idle ones are among the ready ones, which fall short already: no
     * need to count them (warming up ten thousand connections would count
     * on each one's arrival). Opens no more than the exact count would. */
    idle = ep->ready;
  } else {
    for (pos = ep->conns.next; pos != &ep->conns; pos = pos->next) {
      rn_conn_t *conn = RN_CONTAINER_OF(pos, rn_conn_t, node);
      if (conn->state == RN_CONN_READY && conn->queued == 0 && !conn->retiring)
        idle++;
    }
  }
  while (idle + ep->connecting < o->min_idle && ep->open < o->size &&
         ep->connecting < RN_MAX_CONNECTING && !pool->closing)
    if (rn__conn_open(pool, ep) != 0) break;
}

void rn__pool_conn_ready(rn_pool_t *pool, rn_conn_t *conn) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  pool->stats.connects++;
  if (ep->lost) {
    pool->stats.reconnects++;
    ep->lost = 0;
  }
  pool->last_connect_error = 0;
  rn__pool_event(pool, conn, "ready", 0);
  rn__endpoint_update(pool, ep, "connected", 0);
  if (pool->conns_closed) {
    rn__conn_close(conn, RN_ECLOSED);
    return;
  }
  rn__hold_offer(pool, conn); /* a waiting hold first: calls can share */
  rn__pool_dispatch(pool);
  /* Warming up: each connection that comes up starts the next, a trickle
   * of at most RN_MAX_CONNECTING at a time rather than one per round. */
  if (!pool->closing && !ep->removed && ep->ejected_until == 0)
    pool_warm(pool, ep);
}

void rn__pool_peer_max_frame(rn_pool_t *pool) {
  size_t i, largest = 0;
  for (i = 0; i < pool->endpoint_count; i++) {
    size_t max_frame = pool->endpoints[i]->max_frame;
    if (max_frame == 0) { /* not heard: it may take anything */
      largest = 0;
      break;
    }
    largest = RN_MAX(largest, max_frame);
  }
  pool->peer_max_frame = largest;
}

void rn__pool_requeue(rn_pool_t *pool, rn_call_t *call) {
  assert(!call->done && call->conn == NULL && rn_list_empty(&call->node) &&
         call->parent == NULL && !call->backing_off && !call->parked);
  /* Ahead of newer calls: it was already in line once. */
  rn_list_insert_head(&pool->pending, &call->node);
  pool->pending_count++;
}

void rn__pool_conn_answered(rn_pool_t *pool, rn_conn_t *conn) {
  /* A server draining after its GOAWAY proves nothing about when it (or
   * its successor) takes new connections: the pause it asked for stays. */
  if (conn->goaway) return;
  rn__endpoint_answered(pool, conn->endpoint);
}

/* The peer reset or closed one connection (gone), or went silent: its
 * idle siblings on the same endpoint came from the same server incarnation
 * and are most likely dead too. Close them now rather than discover it one
 * failed call at a time. Busy ones find out by themselves, but after a
 * reset or EOF take no new calls until they prove their peer alive.
 * Subscribers and other endpoints are not touched. */
static void pool_drop_siblings(rn_pool_t *pool, rn_conn_t *conn, int gone) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  rn_list_t *pos, *tmp;
  (void)pool;
  rn_list_foreach_safe(pos, tmp, &ep->conns) {
    rn_conn_t *sibling = RN_CONTAINER_OF(pos, rn_conn_t, node);
    if (sibling == conn || sibling->state != RN_CONN_READY) continue;
    /* A subscriber's own heartbeat judges it: closed on a guess, it would
     * lose its messages (a gap) whenever one sibling is closed alone (a
     * server's idle timeout, CLIENT KILL). */
    if (sibling->sub_cb != NULL) continue;
    if (sibling->queued == 0)
      rn__conn_close(sibling, RN_ESTALE);
    else if (gone)
      rn__conn_suspect(sibling);
  }
}

static void pool_count_eviction(rn_pool_t *pool, const char *reason) {
  rn_pool_stats_t *st = &pool->stats;
  if (strcmp(reason, "idle_timeout") == 0)
    st->evictions.idle++;
  else if (strcmp(reason, "max_lifetime") == 0)
    st->evictions.lifetime++;
  else if (strcmp(reason, "stale") == 0)
    st->evictions.stale++;
  else if (strcmp(reason, "dead_peer") == 0)
    st->evictions.dead_peer++;
  else if (strcmp(reason, "eof") == 0 || strcmp(reason, "reset") == 0)
    st->evictions.peer_closed++;
  else if (strcmp(reason, "unexpected") == 0 ||
           strcmp(reason, "bad_frame") == 0 ||
           strcmp(reason, "protocol_error") == 0)
    st->evictions.unexpected++;
  else if (strcmp(reason, "removed") == 0)
    st->evictions.removed++;
  else if (strcmp(reason, "hold_reset") == 0)
    st->holds_reset++; /* given back in a state nobody may inherit */
  else if (strcmp(reason, "pool_closed") != 0)
    st->evictions.error++;
}

/* Errors of this process, not of the peer: out of descriptors or memory. */
static int pool_error_is_ours(int err) {
  return err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOMEM ||
         err == UV_ENOBUFS;
}

void rn__pool_conn_closed(rn_pool_t *pool, rn_conn_t *conn, int err) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  const char *reason = rn__conn_close_reason(conn);

  if ((err == RN_ETLS || err == RN_ETLSVERIFY) && conn->tls != NULL) {
    snprintf(pool->connect_why, sizeof(pool->connect_why), "%s",
             rn__tls_why(conn->tls));
    pool->connect_why_error = err;
  }
  rn__pool_event(pool, conn, "closed", err);
  if (conn->was_ready) pool_count_eviction(pool, reason);
  if (pool->closing) return;
  if (conn->was_ready && (err == UV_ECONNRESET || err == UV_EOF ||
                          err == UV_EPIPE || err == RN_EDEADPEER))
    pool_drop_siblings(pool, conn, err != RN_EDEADPEER);
  /* Closes the pool made itself (idle, lifetime, stale siblings, removed)
   * are not the endpoint's fault. Nor is a shortage of our own: no
   * failure is counted (no backoff growth, no ejection, no re-resolve);
   * connects there only pause for the first backoff step, so as not to
   * spin while it lasts, and waiting calls end with its error. */
  if (pool_error_is_ours(err)) {
    if (!conn->was_ready) {
      pool->stats.connect_failures++;
      pool->last_connect_error = err;
    }
    uv_update_time(pool->loop->uv);
    ep->retry_at = RN_MAX(ep->retry_at, rn__loop_now(pool->loop) +
                                            pool->options.reconnect.initial_ms);
  } else if (err == RN_ETLSVERIFY || err == RN_EAUTH) {
    /* The server's certificate, or our credentials, were refused: trying
     * again soon gets the same answer. */
    pool->stats.connect_failures++;
    if (err == RN_ETLSVERIFY) pool->stats.tls_failures++;
    pool->last_connect_error = err;
    rn__endpoint_refused(pool, ep, err);
  } else if ((!conn->answered && err != 0 && err != RN_ESTALE &&
              err != RN_ECLOSED) ||
             err == RN_EDEADPEER) {
    if (err == RN_ETLS) pool->stats.tls_failures++;
    /* Refused, timed out, accepted and then dropped before answering
     * anything, or gone silent: wait before the next connect to this
     * endpoint. */
    if (!conn->was_ready) {
      pool->stats.connect_failures++;
      pool->last_connect_error = err;
      /* The name may point somewhere else now, or discovery may know
       * better. */
      rn__pool_want_resolve(pool, "connect_failure");
    }
    rn__endpoint_failed(pool, ep, err);
  } else if (conn->was_ready && err != 0 && err != RN_ESTALE &&
             err != RN_ECLOSED) {
    ep->lost = 1;
  }
  if (pool->closing) return; /* an event handler closed the pool */
  rn__endpoint_update(pool, ep, reason, err);
  rn__pool_dispatch(pool);
}

/* ------------------------------------------------------------------------ */
/* Housekeeping                                                               */

/* Calls go only where a connection is ready, and connections open when
 * calls wait: an endpoint that came back while the others kept up would
 * never be used again. So a pool in use (calls since the last round,
 * served by some endpoint) keeps one connection to every usable one. */
static void pool_spread(rn_pool_t *pool, uint64_t now) {
  size_t i, serving = 0;
  int in_use = pool->stats.calls != pool->calls_at_maintenance;
  pool->calls_at_maintenance = pool->stats.calls;
  if (!in_use) return;
  for (i = 0; i < pool->endpoint_count; i++)
    if (pool->endpoints[i]->ready > 0) serving++;
  if (serving == 0 || serving == pool->endpoint_count) return;
  for (i = 0; i < pool->endpoint_count && !pool->closing; i++) {
    rn_pool_endpoint_t *ep = pool->endpoints[i];
    if (ep->open == 0 && ep->retry_at <= now &&
        rn__endpoint_usable(pool, ep, now))
      rn__conn_open(pool, ep);
  }
}

/* Once a second: retire old connections, close idle ones beyond min_idle,
 * warm up to min_idle, end ejections and ask for re-resolution when the
 * endpoint list is older than resolve_ttl_ms. A weak timer: it never keeps a
 * program alive. */
static void pool_maintain(rn_timer_t *timer) {
  rn_pool_t *pool = timer->data;
  const rn_pool_options_t *o = &pool->options;
  uint64_t now = rn__loop_now(pool->loop);
  size_t i;

  if (pool->conns_closed) return;
  for (i = 0; i < pool->endpoint_count && !pool->closing; i++) {
    rn_pool_endpoint_t *ep = pool->endpoints[i];
    unsigned idle = 0;
    rn_list_t *pos, *tmp;
    int usable = rn__endpoint_usable(pool, ep, now);
    /* Most recently used connections sit at the tail: count idle ones from
     * there, so the least recently used are the ones closed. */
    for (pos = ep->conns.prev; pos != &ep->conns; pos = tmp) {
      rn_conn_t *conn = RN_CONTAINER_OF(pos, rn_conn_t, node);
      tmp = pos->prev;
      if (conn->state != RN_CONN_READY) continue;
      /* (Not a subscriber: moving it would cost a gap.) */
      if (conn->expires_at != 0 && now >= conn->expires_at &&
          conn->sub_cb == NULL)
        rn__conn_retire(conn, "max_lifetime");
      if (conn->retiring) continue;
      /* Its prober left with no neighbour to take over. */
      if (conn->hold != NULL) continue; /* its user's until released */
      if (ep->prober == NULL && pool->ping_frame.len > 0 &&
          conn->blocking == 0)
        rn__conn_take_over_probing(conn);
      if (conn->queued != 0) continue;
      if (++idle > o->min_idle && o->idle_timeout_ms != 0 &&
          now >= conn->last_active + o->idle_timeout_ms) {
        conn->close_reason = "idle_timeout";
        rn__conn_close(conn, 0);
      }
    }
    if (pool->closing) return; /* an event handler closed the pool */
    if (usable) pool_warm(pool, ep);
  }
  if (pool->closing) return;
  pool_spread(pool, now);
  if (pool->closing) return;
  if (o->resolve_ttl_ms != 0 && now >= pool->resolved_at + o->resolve_ttl_ms)
    rn__pool_want_resolve(pool, "ttl");
  rn_timer_start(timer, RN_MAINTENANCE_MS);
}

/* ------------------------------------------------------------------------ */
/* Closing                                                                    */

static void pool_finish(rn_timer_t *timer) {
  rn_pool_t *pool = timer->data;
  rn_loop_t *loop = pool->loop;
  /* Freed only when no list holds a call and every callback has run. */
  assert(rn_list_empty(&pool->pending) && rn_list_empty(&pool->retrying));
  assert(pool->active == 0 && pool->conns == 0);
  if (pool->close_cb) pool->close_cb(pool);
  rn_timer_stop(&pool->close_timer);
  rn_timer_stop(&pool->maintenance_timer);
  rn_timer_stop(&pool->reconnect_timer);
  rn_timer_stop(&pool->eject_timer);
  rn_timer_stop(&pool->later_timer);
  rn_timer_stop(&pool->hold_timer);
  rn__timer_lane_close(&pool->deadlines);
  pool_free_frames(pool);
  pool_discard_next(pool);
  rn__endpoint_free_all(pool);
  rn__call_free_spares(pool);
  rn__store_free_all(pool);
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
  rn_list_t *epos, *etmp;
  size_t i;
  if (pool->conns_closed) return;
  pool->conns_closed = 1;
  rn_timer_stop(&pool->close_timer);
  rn_timer_stop(&pool->maintenance_timer);
  rn_timer_stop(&pool->reconnect_timer);
  rn_timer_stop(&pool->eject_timer);
  rn_timer_stop(&pool->later_timer);
  for (i = 0; i < pool->endpoint_count; i++) {
    rn_pool_endpoint_t *ep = pool->endpoints[i];
    rn_list_t *pos, *tmp;
    rn_list_foreach_safe(pos, tmp, &ep->conns) {
      rn__conn_close(RN_CONTAINER_OF(pos, rn_conn_t, node), RN_ECLOSED);
    }
  }
  /* Removed endpoints may still have busy connections. Closing them
   * frees nothing at once (that waits for libuv), so the lists hold. */
  rn_list_foreach_safe(epos, etmp, &pool->removed) {
    rn_pool_endpoint_t *ep =
        RN_CONTAINER_OF(epos, rn_pool_endpoint_t, removed_node);
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
  /* (A deferred close has calls to fail yet: it goes on from there.) */
  if (pool->closing && !pool->close_deferred && pool->active == 0)
    pool_close_conns(pool);
}

void rn__pool_conn_freed(rn_pool_t *pool, rn_conn_t *conn) {
  pool->conns--;
  rn__endpoint_conn_freed(pool, conn->endpoint);
  pool_maybe_finish(pool);
}

void rn_pool_close(rn_pool_t *pool, uint64_t drain_ms, rn_pool_close_cb cb) {
  if (pool->closing) return;
  pool->closing = 1;
  pool->close_cb = cb;
  pool->close_drain = drain_ms;
  /* From inside the pool's own work (an event, a call's callback, classify,
   * placing calls inside rn_pool_call), the code that called out is
   * half-way through moving a call between lists, and failing calls now
   * would run their callbacks before rn_pool_call returned: the close
   * runs from the loop instead, on a clean stack. `closing` holds
   * meanwhile, so nothing new is accepted, placed or retried. */
  if (pool->dispatching || pool->callback_depth > 0) {
    pool->close_deferred = 1;
    pool->close_timer.cb = pool_close_deferred;
    rn_timer_start(&pool->close_timer, 0);
    return;
  }
  pool_close_now(pool);
}

void rn_pool_abort(rn_pool_t *pool, rn_pool_close_cb cb) {
  pool->aborting = 1;
  if (!pool->closing) {
    rn_pool_close(pool, 0, cb);
    return;
  }
  /* Cuts a drain short. A close deferred from inside dispatch may not
   * have run yet (its timer is pending): the waiting calls must fail here,
   * or the pool would finish with them still on its lists. */
  if (!pool->close_deferred && !pool->conns_closed) pool_close_now(pool);
}

/* Calls waiting for a connection or a retry: their fate is ECLOSED. */
static void pool_fail_list(rn_list_t *list) {
  while (!rn_list_empty(list))
    rn__fate_closed(RN_CONTAINER_OF(list->next, rn_call_t, node));
}

static void pool_close_now(rn_pool_t *pool) {
  uint64_t drain_ms = pool->close_drain;

  pool_fail_list(&pool->pending);
  pool_fail_list(&pool->retrying);
  rn__hold_pool_closing(pool);
  if (pool->conns_closed) return; /* a callback above finished the drain */
  if (pool->active == 0 || drain_ms == 0 || pool->aborting) {
    pool_close_conns(pool);
    return;
  }
  pool->close_timer.cb = pool_drain_expired;
  uv_update_time(pool->loop->uv);
  rn_timer_start(&pool->close_timer, drain_ms);
}

void rn_pool_reset_backoff(rn_pool_t *pool) {
  size_t i;
  if (pool->closing) return;
  for (i = 0; i < pool->endpoint_count; i++) {
    rn_pool_endpoint_t *ep = pool->endpoints[i];
    ep->retry_at = ep->hold_until = 0;
    rn__backoff_reset(&ep->backoff);
    rn__endpoint_end_ejection(pool, ep);
  }
  /* States after the loop: a handler may set a new list. */
  for (i = 0; i < pool->endpoint_count && !pool->closing; i++)
    rn__endpoint_update(pool, pool->endpoints[i], "reset_backoff", 0);
  rn_timer_stop(&pool->reconnect_timer);
  if (!pool->closing) rn__pool_dispatch(pool);
}

int rn_pool_reload_tls(rn_pool_t *pool, const rn_tls_options_t *o) {
  rn__tls_ctx_t *ctx;
  size_t i;
  int err;

  if (pool->closing) return RN_ECLOSED;
  if (pool->tls == NULL || o == NULL) return UV_EINVAL;
  for (i = 0; i < pool->endpoint_count; i++)
    if (rn_tls_endpoint_check(o, &pool->endpoints[i]->address, NULL, 0) != 0)
      return UV_EINVAL;
  err = rn__tls_ctx_new(o, RN_TLS_CLIENT, &ctx, NULL, 0);
  if (err) return err;
  /* Open connections hold their own reference to the old one. */
  rn__tls_ctx_unref(pool->tls);
  pool->tls = ctx;
  pool_tls_note(pool, o);
  /* New trust may mend a refused certificate: those endpoints are tried
   * again now rather than after reconnect.max. */
  for (i = 0; i < pool->endpoint_count; i++) {
    rn_pool_endpoint_t *ep = pool->endpoints[i];
    if (ep->refused != RN_ETLSVERIFY) continue;
    rn__endpoint_trusted(pool, ep);
    ep->retry_at = 0;
    rn__backoff_reset(&ep->backoff);
    rn__endpoint_end_ejection(pool, ep);
  }
  if (pool->callback_depth == 0 && !pool->dispatching) rn__pool_dispatch(pool);
  return 0;
}

void rn_pool_stats(rn_pool_t *pool, rn_pool_stats_t *stats) {
  size_t i;
  *stats = pool->stats;
  stats->open = pool->conns;
  stats->pending = pool->pending_count + pool->retrying_count +
                   pool->holds_waiting_count;
  stats->ejected = pool->ejected;
  stats->budget = pool->budget;
  stats->idle = 0;
  stats->held = 0;
  for (i = 0; i < pool->endpoint_count; i++) {
    rn_list_t *pos;
    rn_pool_endpoint_t *ep = pool->endpoints[i];
    for (pos = ep->conns.next; pos != &ep->conns; pos = pos->next) {
      rn_conn_t *conn = RN_CONTAINER_OF(pos, rn_conn_t, node);
      if (rn__hold_granted(conn))
        stats->held++;
      else if (conn->state == RN_CONN_READY && conn->queued == 0)
        stats->idle++;
    }
  }
  /* Holds take a place in active while they wait or hold. */
  stats->in_flight = pool->active - stats->pending - stats->held;
}

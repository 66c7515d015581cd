/* A pool's endpoints: their lifetime (discovery may drop one while calls
 * still refer to it), their health (consecutive failures, reconnect
 * backoff, ejection) and the state the pool reports for each. */
#include "client.h"

#include <stdlib.h>
#include <string.h>

/* An IP literal needs no lookup. Its connections take this one-entry list
 * instead of a getaddrinfo request on libuv's thread pool: no wait for a
 * thread per connect, and a program that never resolves a name stays
 * single-threaded (glibc's syscall wrappers cost more once threads exist).
 * Forms getaddrinfo alone accepts ("127.1") still go to it. */
static void endpoint_set_literal(rn_pool_endpoint_t *ep) {
  struct sockaddr *sa = (struct sockaddr *)&ep->literal_address;
  const rn_endpoint_t *a = &ep->address;

  if (a->kind != RN_ENDPOINT_TCP) return;
  if (uv_ip4_addr(a->address, a->port, (struct sockaddr_in *)sa) == 0) {
    ep->literal.ai_family = AF_INET;
    ep->literal.ai_addrlen = sizeof(struct sockaddr_in);
  } else if (uv_ip6_addr(a->address, a->port,
                         (struct sockaddr_in6 *)sa) == 0) {
    ep->literal.ai_family = AF_INET6;
    ep->literal.ai_addrlen = sizeof(struct sockaddr_in6);
  } else {
    return;
  }
  ep->literal.ai_socktype = SOCK_STREAM;
  ep->literal.ai_protocol = IPPROTO_TCP;
  ep->literal.ai_addr = sa;
}

int rn__endpoint_new(rn_pool_t *pool, const char *text,
                     rn_pool_endpoint_t **out) {
  rn_pool_endpoint_t *ep;
  int err;

  *out = NULL;
  if (text == NULL) return UV_EINVAL;
  ep = calloc(1, sizeof(*ep));
  if (ep == NULL) return UV_ENOMEM;
  err = rn_endpoint_parse(&ep->address, text, strlen(text));
  if (err == 0) err = rn_endpoint_format(&ep->address, ep->text,
                                         sizeof(ep->text));
  if (err < 0) {
    free(ep);
    return err;
  }
  endpoint_set_literal(ep);
  rn_list_init(&ep->conns);
  rn_list_init(&ep->removed_node);
  rn__backoff_init(&ep->backoff, &pool->options.reconnect);
  ep->state = "idle";
  *out = ep;
  return 0;
}

static void endpoint_maybe_free(rn_pool_t *pool, rn_pool_endpoint_t *ep) {
  if (!ep->removed || ep->refs > 0 || !rn_list_empty(&ep->conns)) return;
  rn_list_remove(&ep->removed_node);
  rn__store_endpoint_gone(pool, ep);
  free(ep);
}

void rn__endpoint_release(rn_pool_t *pool, rn_pool_endpoint_t *ep) {
  ep->refs--;
  endpoint_maybe_free(pool, ep);
}

void rn__endpoint_conn_freed(rn_pool_t *pool, rn_pool_endpoint_t *ep) {
  endpoint_maybe_free(pool, ep);
}

/* Discovery dropped it: no more calls or connects. Idle and opening
 * connections close now; busy ones once their last reply is in. The
 * memory stays while a connection or a call's result still points here. */
void rn__endpoint_remove(rn_pool_t *pool, rn_pool_endpoint_t *ep) {
  rn_list_t *pos, *tmp;

  ep->removed = 1;
  rn__endpoint_end_ejection(pool, ep);
  rn__endpoint_trusted(pool, ep); /* no longer one of the pool's */
  rn_list_insert_tail(&pool->removed, &ep->removed_node);
  /* Nobody will call there again: nothing for a probe to learn. */
  if (ep->dead_probe != NULL) rn__conn_close(ep->dead_probe, RN_ECLOSED);
  rn_list_foreach_safe(pos, tmp, &ep->conns) {
    rn_conn_t *conn = RN_CONTAINER_OF(pos, rn_conn_t, node);
    if (conn->state == RN_CONN_CLOSING) continue;
    /* A handler that closed the pool while the endpoints before this one
     * were removed found this one on neither list: close it as the pool's
     * close would have. */
    if (pool->conns_closed) {
      rn__conn_close(conn, RN_ECLOSED);
      continue;
    }
    rn__conn_retire(conn, "removed");
  }
  endpoint_maybe_free(pool, ep);
}

/* Frees every endpoint at the end of the pool's life. */
void rn__endpoint_free_all(rn_pool_t *pool) {
  size_t i;
  for (i = 0; i < pool->endpoint_count; i++) free(pool->endpoints[i]);
  while (!rn_list_empty(&pool->removed)) {
    rn_pool_endpoint_t *ep =
        RN_CONTAINER_OF(pool->removed.next, rn_pool_endpoint_t, removed_node);
    rn_list_remove(&ep->removed_node);
    free(ep);
  }
}

/* ------------------------------------------------------------------------ */
/* State                                                                      */

static const char *endpoint_state(const rn_pool_endpoint_t *ep) {
  if (ep->ejected_until != 0) return "ejected";
  if (ep->ready > 0) return "ready";
  /* Sticky until a connection is ready again: a server that keeps refusing
   * reads as one failure, not as a flicker of connecting and failing. */
  if (ep->failures > 0 || ep->lost) return "transient_failure";
  if (ep->connecting > 0) return "connecting";
  return "idle";
}

void rn__endpoint_update(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                         const char *reason, int err) {
  rn_pool_event_t ev;
  const char *state;

  if (ep->removed) return;
  state = endpoint_state(ep);
  if (state == ep->state) return;
  ep->state = state;
  memset(&ev, 0, sizeof(ev));
  ev.state = state;
  ev.reason = reason;
  ev.error = err;
  rn__pool_emit(pool, RN_EVENT_STATE, ep, &ev);
}

/* ------------------------------------------------------------------------ */
/* Health                                                                     */

/* Back in service (if ejected) with a clean count of failures; its
 * reconnect backoff still paces the first connect. No event. */
void rn__endpoint_end_ejection(rn_pool_t *pool, rn_pool_endpoint_t *ep) {
  if (ep->ejected_until == 0) return;
  ep->ejected_until = 0;
  ep->failures = 0;
  pool->ejected--;
}

/* Whether calls and connects may go to ep now. An ejection that has run
 * its time ends here. */
int rn__endpoint_usable(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                        uint64_t now) {
  if (ep->removed) return 0;
  if (ep->ejected_until == 0) return 1;
  if (now < ep->ejected_until) return 0;
  rn__endpoint_end_ejection(pool, ep);
  rn__endpoint_update(pool, ep, "eject_expired", 0);
  return 1;
}

/* Ejections end on time even when no call asks for the endpoint, so that
 * its state (and min_idle warm-up) follow. */
static void endpoint_arm_eject_timer(rn_pool_t *pool) {
  uint64_t now = rn_loop_now(pool->loop), next = UINT64_MAX;
  size_t i;
  for (i = 0; i < pool->endpoint_count; i++)
    if (pool->endpoints[i]->ejected_until != 0)
      next = RN_MIN(next, pool->endpoints[i]->ejected_until);
  if (next == UINT64_MAX)
    rn_timer_stop(&pool->eject_timer);
  else
    rn_timer_start(&pool->eject_timer, next > now ? next - now : 0);
}

void rn__endpoint_eject_due(rn_timer_t *timer) {
  rn_pool_t *pool = timer->data;
  uint64_t now = rn_loop_now(pool->loop);
  size_t i;
  for (i = 0; i < pool->endpoint_count && !pool->closing; i++)
    rn__endpoint_usable(pool, pool->endpoints[i], now);
  if (pool->closing) return;
  endpoint_arm_eject_timer(pool);
  rn__pool_dispatch(pool);
}

static void endpoint_maybe_eject(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                                 uint64_t now, int err, const char *reason) {
  const rn_eject_options_t *o = &pool->options.eject;
  size_t cap = (size_t)(o->max_share * (double)pool->endpoint_count);
  uint64_t duration = o->time_ms;
  rn_pool_event_t ev;
  unsigned i;

  /* A removed endpoint is in no list that would ever end its ejection. */
  if (o->failures == 0 || ep->failures < o->failures ||
      ep->ejected_until != 0 || ep->removed)
    return;
  /* Never all of them, and never more than the share: past that, the
   * trouble is likely on our side, and calls are better off trying. */
  if (pool->ejected + 1 > cap || pool->ejected + 1 >= pool->endpoint_count)
    return;
  /* An endpoint that stayed in long enough starts again from `time`. */
  if (ep->last_ejected != 0 && now - ep->last_ejected > o->max_time_ms)
    ep->ejections = 0;
  for (i = 0; i < ep->ejections && duration < o->max_time_ms; i++)
    duration *= 2;
  duration = RN_MIN(duration, o->max_time_ms);
  ep->ejections++;
  ep->last_ejected = now;
  ep->ejected_until = now + duration;
  pool->ejected++;
  pool->stats.ejections++;
  endpoint_arm_eject_timer(pool);

  memset(&ev, 0, sizeof(ev));
  ev.reason = reason;
  ev.error = err;
  ev.duration = duration;
  rn__pool_emit(pool, RN_EVENT_EJECT, ep, &ev);
  rn__endpoint_update(pool, ep, reason, err);
}

/* A connect failed, a connection never answered, or a peer went silent
 * or reset with calls on it: back off, and eject after too many. */
void rn__endpoint_failed(rn_pool_t *pool, rn_pool_endpoint_t *ep, int err) {
  uint64_t now, delay;
  /* From the real now: the loop's cached clock can lag by however long
   * this turn of the loop has run, which would shorten the backoff. */
  uv_update_time(pool->loop->uv);
  now = rn_loop_now(pool->loop);
  ep->failures++;
  ep->lost = 1;
  delay = rn__backoff_next(&ep->backoff, pool->loop); /* grows it: once */
  ep->retry_at = RN_MAX(now + delay, ep->hold_until);
  endpoint_maybe_eject(pool, ep, now, err, "failures");
}

void rn__endpoint_refused(rn_pool_t *pool, rn_pool_endpoint_t *ep, int err) {
  const rn_pool_options_t *o = &pool->options;
  uint64_t now;
  uv_update_time(pool->loop->uv);
  now = rn_loop_now(pool->loop);
  ep->lost = 1;
  if (!ep->refused) pool->refused++;
  ep->refused = err;
  /* Straight to the longest wait, and to ejection if the share allows
   * (enough failures are counted at once). */
  ep->failures = RN_MAX(ep->failures + 1, o->eject.failures);
  ep->retry_at = RN_MAX(now + o->reconnect.max_ms, ep->hold_until);
  endpoint_maybe_eject(pool, ep, now, err,
                       err == RN_EAUTH ? "auth" : "tls_verify");
}

void rn__endpoint_trusted(rn_pool_t *pool, rn_pool_endpoint_t *ep) {
  if (!ep->refused) return;
  ep->refused = 0;
  pool->refused--;
}

/* The peer answered: only now is the endpoint known to be healthy. A bare
 * TCP accept proves little (a wedged server's kernel still accepts). An
 * ejection runs its course regardless. A pause its server asked for
 * (GOAWAY's RETRY_AFTER) ends too: a server that answers is back, and a
 * pause outliving that would only keep calls from it. */
void rn__endpoint_answered(rn_pool_t *pool, rn_pool_endpoint_t *ep) {
  rn__endpoint_trusted(pool, ep);
  ep->failures = 0;
  ep->retry_at = ep->hold_until = 0;
  rn__backoff_reset(&ep->backoff);
}

/* A pause the server chose (a restart's expected length, say): not a
 * failure, so no backoff growth and no ejection; connects wait for it,
 * calls go to other endpoints or wait, within their deadlines. The server
 * is not trusted with how long: past reconnect.max (the longest the pool
 * ever waits between connects of its own accord) the pause is cut to it,
 * counted and reported (the caller's "goaway" event). */
uint64_t rn__endpoint_hold_off(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                               uint64_t delay_ms) {
  uint64_t until, cap = pool->options.reconnect.max_ms;
  if (delay_ms > cap) {
    pool->stats.retry_after_capped++;
    delay_ms = cap;
  }
  uv_update_time(pool->loop->uv);
  until = rn_loop_now(pool->loop) + delay_ms;
  ep->hold_until = RN_MAX(ep->hold_until, until);
  ep->retry_at = RN_MAX(ep->retry_at, until);
  return delay_ms;
}

int rn__endpoint_any_held(rn_pool_t *pool, uint64_t now) {
  size_t i;
  for (i = 0; i < pool->endpoint_count; i++)
    if (pool->endpoints[i]->hold_until > now) return 1;
  return 0;
}

void rn__endpoint_probe_ended(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                              unsigned serial, const char *reason) {
  rn_pool_event_t ev;
  int answered = strcmp(reason, "answered") == 0;

  if (answered) {
    pool->stats.probes_answered++;
    /* The server is back: its next connect goes now, not after the
     * backoff that grew while it was frozen. */
    rn__endpoint_answered(pool, ep);
  } else if (strcmp(reason, "expired") == 0) {
    pool->stats.probes_expired++;
  }
  memset(&ev, 0, sizeof(ev));
  ev.connection = serial;
  ev.state = "probe";
  ev.reason = reason;
  rn__pool_emit(pool, RN_EVENT_STATE, ep, &ev);
  if (answered && !pool->closing) rn__pool_dispatch(pool);
}

int rn_pool_endpoint_info(rn_pool_t *pool, size_t index,
                          rn_endpoint_info_t *info) {
  rn_pool_endpoint_t *ep;
  uint64_t now;

  if (index >= pool->endpoint_count) return UV_EINVAL;
  ep = pool->endpoints[index];
  now = rn_loop_now(pool->loop);
  info->endpoint = ep->text;
  info->state = ep->state;
  info->open = ep->open;
  info->outstanding = ep->outstanding;
  info->failures = ep->failures;
  info->ejected_for = ep->ejected_until > now ? ep->ejected_until - now : 0;
  return 0;
}

size_t rn_pool_endpoint_count(rn_pool_t *pool) {
  return pool->endpoint_count;
}

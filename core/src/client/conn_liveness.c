/* Whether a connection's peer is alive: heartbeat pings and the silence
 * that makes a dead peer, the one idle connection per endpoint that pings
 * for all (its prober), connections held back as suspects after a
 * sibling's peer went away, the dead connection kept open as a probe for
 * a frozen server's return, and the kernel's own keepalive. conn.c reads,
 * writes and closes; this file decides when to ping and when a peer is
 * gone. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "client.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef POLLRDHUP /* not Linux: only a reset or a full hang-up is seen */
#define POLLRDHUP 0
#endif

static void conn_send_proof(rn_conn_t *conn);

/* An idle connection may stay silent this many heartbeat intervals while
 * its endpoint shows life: it still proves itself now and then, since a
 * NAT forgets a silent flow and a flow can die alone. */
#define RN_IDLE_PING_INTERVALS 8

/* Pings of idle connections leave on slots of an eighth of the interval:
 * a pool of ten thousand connections then wakes a few times per interval
 * to send thousands of pings, not once per ping. Only sending waits for
 * the slot; silence deadlines stay exact. Returns ms from now. */
static uint64_t conn_ping_delay(const rn_conn_t *conn, uint64_t due) {
  uint64_t now = rn_loop_now(conn->pool->loop);
  uint64_t slot = conn->pool->options.heartbeat.interval_ms / 8;
  if (slot > 1) due = (due + slot - 1) / slot * slot;
  return due > now ? due - now : 1;
}

/* When a connection pings next (an idle one on an endpoint without a
 * prober becomes it). One with calls out pings every interval:
 * its own silence is what matters. Idle ones share the work: one of them,
 * the endpoint's prober, pings every interval unless a byte on any of
 * them showed the server alive; the others every RN_IDLE_PING_INTERVALS.
 * Ten thousand idle connections to one server then cost an eighth of the
 * pings. A frozen server is still found within interval + timeout: the
 * prober's verdict closes its idle siblings (pool_drop_siblings), which
 * have shown nothing since either. */
static uint64_t conn_ping_due(rn_conn_t *conn) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  uint64_t interval = conn->pool->options.heartbeat.interval_ms;
  if (!rn_list_empty(&conn->sent)) return conn->last_read + interval;
  if (ep->prober == NULL) ep->prober = conn;
  if (ep->prober == conn) return ep->last_life + interval;
  return conn->last_read + interval * RN_IDLE_PING_INTERVALS;
}

/* Makes conn its endpoint's prober, pinging when that falls due. */
void rn__conn_take_over_probing(rn_conn_t *conn) {
  conn->endpoint->prober = conn;
  if (!conn->pinging)
    rn_timer_start(&conn->heartbeat_timer, conn_ping_delay(conn, 0));
}

/* The prober is leaving: a neighbour takes over now if it can (a look at
 * two, not a search: a pool closing ten thousand connections would search
 * for each), else the next maintenance round picks one. */
void rn__conn_hand_over_probing(rn_conn_t *conn) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  rn_list_t *near[2];
  int i;
  if (ep->prober != conn) return;
  ep->prober = NULL;
  if (conn->pool->closing) return;
  near[0] = conn->node.prev;
  near[1] = conn->node.next;
  for (i = 0; i < 2; i++) {
    rn_conn_t *next;
    if (near[i] == &ep->conns) continue;
    next = RN_CONTAINER_OF(near[i], rn_conn_t, node);
    if (next->state != RN_CONN_READY || next->hold != NULL ||
        next->blocking > 0)
      continue;
    rn__conn_take_over_probing(next);
    return;
  }
}

/* The kernel counts keepalive in whole seconds: ms rounded up. */
static unsigned conn_seconds(uint64_t ms) {
  return (unsigned)((ms + 999) / 1000);
}

/* Keepalive catches a peer that vanished while idle even without pings;
 * TCP_USER_TIMEOUT bounds how long written bytes may go unacknowledged,
 * which no application ping can see. Best effort: a platform without an
 * option keeps its defaults. */
void rn__conn_set_tcp_options(rn_conn_t *conn) {
  const rn_keepalive_options_t *o = &conn->pool->options.keepalive;
  uv_os_fd_t fd;

  uv_tcp_nodelay(&conn->h.tcp, 1);
  if (o->idle_ms > 0)
    uv_tcp_keepalive(&conn->h.tcp, 1, conn_seconds(o->idle_ms));
  if (uv_fileno(&conn->h.handle, &fd) != 0) return;
#if defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT)
  if (o->idle_ms > 0) {
    int interval = (int)conn_seconds(o->interval_ms), count = (int)o->count;
    if (interval > 0)
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
    if (count > 0)
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
  }
#endif
#ifdef TCP_USER_TIMEOUT
  if (o->user_timeout_ms > 0) {
    unsigned int ms = (unsigned)o->user_timeout_ms;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
  }
#endif
}

/* Whether the peer closed or reset the connection, without reading: its
 * FIN may wait behind replies not read yet, which a peek cannot see past.
 * 0, UV_EOF or UV_ECONNRESET. (SO_ERROR is left for the read to report.) */
static int conn_peer_gone(rn_conn_t *conn) {
  struct pollfd p;
  uv_os_fd_t fd;
  int n;

  if (uv_fileno(&conn->h.handle, &fd) != 0) return 0;
  p.fd = fd;
  p.events = POLLIN | POLLRDHUP;
  p.revents = 0;
  do
    n = poll(&p, 1, 0);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return 0;
  if (p.revents & POLLERR) return UV_ECONNRESET;
  if (p.revents & (POLLHUP | POLLRDHUP)) return UV_EOF;
  return 0;
}

/* A sibling's peer went away (EOF, a reset): the server behind this
 * busy connection may be dying too, its kernel closing one socket after
 * the other, so a FIN or RST may be on its way here. A call written now
 * would fail as maybe executed although no server ever read it. So the
 * connection takes no new calls until a ping sent from now on is answered
 * (without heartbeats: until its replies are in and no FIN waits); calls
 * meanwhile go to other connections or wait. */
void rn__conn_suspect(rn_conn_t *conn) {
  /* A held connection takes no pool calls anyway, and its own must not
   * be handed back to the pool (nor a proof ping land in its MULTI): its
   * calls learn of a dead peer by themselves. */
  if (conn->suspect || conn->state != RN_CONN_READY || conn->hold != NULL)
    return;
  conn->suspect = 1;
  /* A ping already out was sent before: its answer proves nothing. */
  if (!conn->pinging) conn_send_proof(conn);
}

/* A reply to a ping on a suspect connection: the proof, or the ping that
 * was out before, after which the proof goes. Proven, it takes calls
 * again. */
void rn__conn_suspect_pong(rn_conn_t *conn) {
  if (!conn->proving) {
    conn_send_proof(conn);
    return;
  }
  conn->suspect = 0;
  conn->proving = 0;
  rn__pool_conn_writable(conn->pool);
}

/* Without heartbeats a suspect has no proof to wait for: once its replies
 * are in, the look for a FIN is the best there is. */
void rn__conn_suspect_drained(rn_conn_t *conn) {
  int err = conn_peer_gone(conn);
  if (err != 0) {
    rn__conn_close(conn, err);
    return;
  }
  conn->suspect = 0;
  rn__pool_conn_writable(conn->pool);
}

/* Before a suspect connection writes: only its own frames (the proof
 * ping) leave; calls go back to the pool, since they never left. Returns
 * 1 if it closed (its peer is gone already). */
int rn__conn_flush_suspect(rn_conn_t *conn) {
  rn_pool_t *pool = conn->pool;
  rn_list_t calls;
  int err = conn_peer_gone(conn);

  if (err != 0 && rn_list_empty(&conn->sent)) {
    rn__conn_close(conn, err);
    return 1;
  }
  rn__conn_take_unsent(conn, &calls, 1);
  if (!rn_list_empty(&calls)) {
    rn__conn_return_all(&calls);
    rn__pool_dispatch(pool);
  }
  return conn->state == RN_CONN_CLOSING;
}

void rn__conn_send_ping(rn_conn_t *conn) {
  /* On failure the next beat tries again. */
  if (rn__conn_send_own(conn, &conn->pool->ping_frame, 0) != 0) return;
  conn->pinging = 1;
  conn->pool->stats.heartbeats++;
}

/* The ping whose answer clears a suspect connection (rn__conn_suspect).
 * Without heartbeats there is none: the read clears it instead. */
static void conn_send_proof(rn_conn_t *conn) {
  if (conn->pool->ping_frame.len == 0) return;
  rn__conn_send_ping(conn);
  conn->proving = conn->pinging;
}

void rn__conn_count_blocking(rn_conn_t *conn, const rn_call_t *call,
                             int delta) {
  uint64_t until = UINT64_MAX;
  if (delta < 0) {
    if (--conn->blocking == 0) conn->block_until = 0;
    return;
  }
  conn->blocking++;
  if (call->block_ms != 0)
    until = rn_loop_now(conn->pool->loop) + call->block_ms;
  conn->block_until = RN_MAX(conn->block_until, until);
}

/* Silence counts from the last byte read, or from when the connection
 * started waiting for a reply if that is later: an idle connection owes
 * nothing until it is asked. While a blocking call is out, from when the
 * latest block placed ends (conn->block_until): the server owes its reply
 * only then. */
void rn__conn_heartbeat(rn_timer_t *timer) {
  rn_conn_t *conn = timer->data;
  rn_pool_t *pool = conn->pool;
  const rn_pool_options_t *o = &pool->options;
  uint64_t now = rn_loop_now(pool->loop);
  uint64_t next = UINT64_MAX;

  if (conn->probe) {
    rn__conn_end_probe(conn, "expired");
    return;
  }
  if (conn->state != RN_CONN_READY) return;
  if (conn->blocking > 0 || conn->paused) {
    /* A blocking call is out: silence is its answer until its block ends
     * (block_ms; without one, as long as it is out: keepalive,
     * TCP_USER_TIMEOUT and the call's deadline watch the connection
     * meanwhile). A paused subscriber reads nothing: the answer to its
     * ping may sit unread, so its silence is not judged at all; it looks
     * for a FIN or RST every interval instead (one that comes behind
     * unread bytes waits for the resume). No ping either way: it would
     * wait behind the call, or unread. Its idle siblings need a prober
     * that does ping. Looks again each interval, so that pings resume soon
     * after the call is answered or the reading resumes. */
    int err = conn->paused ? conn_peer_gone(conn) : 0;
    if (err != 0) {
      rn__conn_close(conn, err);
      return;
    }
    rn__conn_hand_over_probing(conn);
    next = now + o->heartbeat.interval_ms;
    if (conn->paused) {
      rn_timer_start(timer, o->heartbeat.interval_ms);
      return;
    }
  }
  if (!rn_list_empty(&conn->sent) && conn->block_until != UINT64_MAX) {
    uint64_t since = RN_MAX(RN_MAX(conn->last_read, conn->waiting_since),
                            conn->block_until);
    uint64_t deadline = since + o->heartbeat.timeout_ms;
    if (now >= deadline) {
      if (pool->loop->last_poll < deadline) {
        /* The loop has not looked at the socket since the deadline passed
         * (it was busy): look first, then judge. */
        rn_timer_start(timer, 1);
        return;
      }
      pool->stats.dead_peers++;
      rn__conn_close(conn, RN_EDEADPEER);
      return;
    }
    next = RN_MIN(next, deadline);
  }
  /* While a ping is out, only its deadline matters: waking at the next
   * ping time, which has passed, would spin. */
  /* A held connection sends no pings (one inside its user's MULTI would be
   * queued by the server): its calls' silence is judged above. A
   * subscriber does ping: PING is allowed in subscribe mode, and its
   * silence is otherwise never judged. */
  if (!conn->pinging && conn->blocking == 0 &&
      (conn->hold == NULL || conn->sub_cb != NULL)) {
    uint64_t due = conn_ping_due(conn);
    if (now >= due) {
      rn__conn_send_ping(conn);
      if (conn->state != RN_CONN_READY) return;
      if (!rn_list_empty(&conn->sent))
        next = RN_MIN(next, RN_MAX(conn->last_read, conn->waiting_since) +
                                o->heartbeat.timeout_ms);
    } else {
      next = RN_MIN(next, now + conn_ping_delay(conn, due));
    }
  }
  /* A ping still waiting behind a write: look again in one interval. */
  if (next == UINT64_MAX) next = now + o->heartbeat.interval_ms;
  rn_timer_start(timer, next > now ? next - now : 1);
}

/* A frozen server (SIGSTOP, a VM paused, a long GC) keeps its sockets:
 * once it runs again it reads what it was sent and answers. The connection
 * judged dead closes for calls as any other, but its socket stays open
 * for heartbeat.probe_ms as its endpoint's probe: the first byte it reads
 * ends the endpoint's backoff (rn__endpoint_probe_ended), so calls go to
 * a fresh connection at once rather than after a backoff grown during the
 * freeze. It always has something unanswered (the verdict needs that).
 * One per endpoint: it costs a socket and no buffers while it waits. */
static int conn_may_probe(const rn_conn_t *conn) {
  const rn_pool_t *pool = conn->pool;
  return pool->options.heartbeat.probe_ms > 0 && !pool->closing &&
         !conn->endpoint->removed && conn->endpoint->dead_probe == NULL &&
         conn->handle_open && !uv_is_closing(&conn->h.handle);
}

static void conn_start_probe(rn_conn_t *conn) {
  conn->probe = 1;
  conn->endpoint->dead_probe = conn;
  conn->pool->stats.probes++;
  rn_buf_free(&conn->rbuf); /* the bytes it reads are not looked at */
  if (!conn->writing) rn_buf_free(&conn->wbuf);
  rn_timer_start(&conn->heartbeat_timer,
                 conn->pool->options.heartbeat.probe_ms);
}

/* Closes the probe's socket and tells the endpoint why it ended. */
void rn__conn_end_probe(rn_conn_t *conn, const char *reason) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  if (!conn->probe) return;
  conn->probe = 0;
  ep->dead_probe = NULL;
  rn_timer_stop(&conn->heartbeat_timer);
  rn__conn_close_handle(conn, 1);
  rn__endpoint_probe_ended(conn->pool, ep, conn->serial, reason);
}

int rn__conn_become_probe(rn_conn_t *conn) {
  if (!conn_may_probe(conn)) return 0;
  conn_start_probe(conn);
  return 1;
}

void rn__conn_beat_start(rn_conn_t *conn) {
  if (conn->pool->ping_frame.len > 0)
    rn_timer_start(&conn->heartbeat_timer,
                   conn_ping_delay(conn, conn->last_read +
                                             conn->pool->options
                                                 .heartbeat.interval_ms));
}

void rn__conn_ping_answered(rn_conn_t *conn) {
  const rn_heartbeat_options_t *o = &conn->pool->options.heartbeat;
  conn->pinging = 0; /* any reply to a ping is life enough */
  /* While the ping was out the timer waited for its deadline; the next
   * ping is due one interval after this reply, not then. */
  if (conn->state == RN_CONN_READY) {
    uint64_t due = rn_loop_now(conn->pool->loop) +
                   RN_MIN(o->interval_ms, o->timeout_ms);
    rn_timer_start(&conn->heartbeat_timer, conn_ping_delay(conn, due));
  }
}

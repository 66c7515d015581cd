/* One client connection: resolve, connect (trying each address), keep
 * reading, batch writes, match each frame to its call as the codec says
 * (codec/reply.h: in order or by id). It reports to its pool, and what
 * happens to a call to the call's fate (fate.c); it never decides policy
 * (which call goes where, when to reconnect, what a failure means). When
 * to ping and when a peer is dead is conn_liveness.c's. */
#define _GNU_SOURCE /* MSG_DONTWAIT, struct addrinfo */
#include "client.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Enough for a typical burst of replies in one read, small enough that an
 * idle connection does not hold much; grown on demand for large frames. */
#define RN_READ_CHUNK 65536

static void conn_try_connect(rn_conn_t *conn);
static void conn_maybe_free(rn_conn_t *conn);
static int conn_goaway_done(const rn_conn_t *conn);
static void conn_flush(rn_conn_t *conn);
static void conn_flush_later(rn_deferred_t *deferred);
static void conn_become_ready(rn_conn_t *conn);
static void conn_start_protocol(rn_conn_t *conn);
static void conn_resume_later(rn_deferred_t *deferred);

static void conn_set_state(rn_conn_t *conn, rn_conn_state_t state) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  int was_connecting = conn->state < RN_CONN_READY;
  int is_connecting = state < RN_CONN_READY;

  /* States only move forward: resolving, connecting, tls, handshake,
   * ready, closing (a step may be skipped); nothing leaves closing. */
  assert(state > conn->state);
  if (was_connecting && !is_connecting) ep->connecting--;
  if (!was_connecting && is_connecting) ep->connecting++;
  if (conn->state == RN_CONN_READY && state != RN_CONN_READY) ep->ready--;
  if (conn->state != RN_CONN_READY && state == RN_CONN_READY) ep->ready++;
  /* A closing connection no longer takes a place in the pool: its
   * replacement may open before libuv has finished closing it. (A
   * retiring one gave up its place already.) */
  if (state == RN_CONN_CLOSING && !conn->retiring) ep->open--;
  conn->state = state;
}

static void conn_connect_timeout(rn_timer_t *timer) {
  rn_conn_t *conn = timer->data;
  rn__conn_close(conn, UV_ETIMEDOUT);
}

static void conn_on_resolved(uv_getaddrinfo_t *req, int status,
                             struct addrinfo *res) {
  rn_conn_t *conn = req->data;

  conn->resolving = 0;
  if (conn->state == RN_CONN_CLOSING) {
    if (res) uv_freeaddrinfo(res);
    conn_maybe_free(conn);
    return;
  }
  if (status < 0) {
    rn__conn_close(conn, status);
    return;
  }
  conn->addrs = res;
  conn->next_addr = res;
  conn_set_state(conn, RN_CONN_CONNECTING);
  conn_try_connect(conn);
}

int rn__conn_open(rn_pool_t *pool, rn_pool_endpoint_t *ep) {
  rn_conn_t *conn;
  char port[8];
  struct addrinfo hints;
  int err;

  conn = calloc(1, sizeof(*conn));
  if (conn == NULL) return UV_ENOMEM;
  conn->pool = pool;
  conn->endpoint = ep;
  conn->serial = ++pool->next_serial;
  conn->next_id = 1;
  rn_list_init(&conn->unsent);
  rn_list_init(&conn->sent);
  rn_buf_init(&conn->rbuf);
  rn_buf_init(&conn->wbuf);
  rn_timer_init(pool->loop, &conn->connect_timer, conn_connect_timeout);
  conn->connect_timer.data = conn;
  rn_timer_init(pool->loop, &conn->heartbeat_timer, rn__conn_heartbeat);
  conn->heartbeat_timer.data = conn;
  /* Heartbeats of idle connections must not keep a program running. */
  rn_timer_unref(&conn->heartbeat_timer);
  conn->resolve_req.data = conn;
  conn->connect_req.data = conn;
  conn->write_req.data = conn;
  rn__deferred_init(&conn->flush_later, conn_flush_later);
  rn__deferred_init(&conn->resume_later, conn_resume_later);

  if (ep->address.kind == RN_ENDPOINT_TCP && ep->literal.ai_addr == NULL) {
    /* Names go through the thread pool, so a slow resolver never blocks
     * the loop. */
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(port, sizeof(port), "%u", (unsigned)ep->address.port);
    err = uv_getaddrinfo(pool->loop->uv, &conn->resolve_req, conn_on_resolved,
                         ep->address.address, port, &hints);
    if (err) {
      free(conn);
      return err;
    }
    conn->resolving = 1;
    conn->state = RN_CONN_RESOLVING;
  } else {
    if (ep->literal.ai_addr != NULL) conn->next_addr = &ep->literal;
    conn->state = RN_CONN_CONNECTING;
  }
  ep->connecting++;

  err = rn_timer_start(&conn->connect_timer, pool->options.connect_timeout_ms);
  (void)err; /* without the timer the call deadlines still bound the wait */

  rn_list_insert_tail(&ep->conns, &conn->node);
  ep->open++;
  pool->conns++;
  /* Start before telling anyone: a handler that closes the pool must find
   * a connection with its handle open, not free one still being set up. */
  if (!conn->resolving) conn_try_connect(conn);
  rn__pool_event(pool, conn, "connecting", 0);
  rn__endpoint_update(pool, ep, "connect", 0);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                    */

static void conn_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  rn_conn_t *conn = handle->data;
  (void)suggested;
  if (conn->tls != NULL) { /* ciphertext: decrypted into rbuf after */
    conn->pool->tls_in.len = 0;
    rn__buf_read_space(&conn->pool->tls_in, RN_READ_CHUNK, buf);
    return;
  }
  rn__buf_read_space(&conn->rbuf, RN_READ_CHUNK, buf);
}

static int conn_take_internal(rn_conn_t *conn, rn_call_t *call);

int rn__conn_take(rn_conn_t *conn, rn_call_t *call) {
  assert(call->conn == conn && call->state != RN_SEND_UNSENT);
  /* A handshake's answers prove the server alive, not usable: that waits
   * for the whole handshake (conn_become_ready), so that a setup refused
   * after a PONG still counts as a failed connect. */
  if (!conn->answered && conn->state == RN_CONN_READY) {
    conn->answered = 1;
    rn__pool_conn_answered(conn->pool, conn);
  }
  rn_list_remove(&call->node);
  call->conn = NULL;
  rn__conn_count_call(conn, call, -1);
  /* Idle now: a waiting hold gets it before any call does. */
  if (conn->queued == 0 && conn->pool->holds_waiting_count > 0)
    rn__hold_offer(conn->pool, conn);
  if (!call->internal) {
    /* Just answered, so the least loaded or idle: to the tail, where the
     * pool looks first, so that the next call finds it at once however
     * many siblings are busy; long idle ones gather at the head to expire.
     * (Not for a ping's reply: the prober would jump ahead of its idle
     * siblings.) Most replies find it there already. */
    if (conn->node.next != &conn->endpoint->conns) {
      rn_list_remove(&conn->node);
      rn_list_insert_tail(&conn->endpoint->conns, &conn->node);
    }
    /* A request's last activity: idle_timeout counts from the last one
     * answered, even when a ping still queued behind it keeps the
     * connection busy a while longer (only an idle one's is looked at). */
    conn->last_active = rn__loop_now(conn->pool->loop);
    return 1;
  }
  return conn_take_internal(conn, call);
}

/* rn__conn_take's connection's own call (a ping, the handshake, a setup
 * request, an abandoned attempt, a subscription's command): out of line,
 * so that taking a request saves no registers for it. */
static RN_NOINLINE int conn_take_internal(rn_conn_t *conn, rn_call_t *call) {
  int handshake;
  if (call->tombstone || call->sub_cmd) { /* an abandoned attempt's reply,
                                               a command's last answer */
    conn->last_active = rn__loop_now(conn->pool->loop);
    rn__call_release(call);
    return 0;
  }
  if (call->setup) { /* its reply passed rn__conn_setup_check */
    rn__call_release(call); /* its frame wiped (call.c) */
    if (--conn->setup_left == 0 && !conn->pinging &&
        conn->state == RN_CONN_HANDSHAKE)
      conn_become_ready(conn);
    return 0;
  }
  /* A ping's answer (or the handshake's). */
  handshake = conn->state == RN_CONN_HANDSHAKE;
  rn__conn_ping_answered(conn);
  rn__call_release(call);
  if (handshake) rn__conn_handshake_done(conn);
  if (conn->suspect) rn__conn_suspect_pong(conn);
  return 0;
}

/* Sent calls are in id order: ids are stamped as they leave. */
static rn_call_t *conn_find(rn_conn_t *conn, uint64_t id) {
  rn_list_t *pos;
  for (pos = conn->sent.next; pos != &conn->sent; pos = pos->next) {
    rn_call_t *call = RN_CONTAINER_OF(pos, rn_call_t, node);
    if (rn__call_has_id(call, id)) return call;
    if (call->rnp_id > id) break;
  }
  return NULL;
}

/* Whether m can be the answer to call: a request's (or an abandoned
 * attempt's) reply, a ping's pong or the handshake's answer. Replies in
 * order are matched by position: one the peer sent unasked (a proxy's
 * greeting, a leftover of the port's last user) would shift every reply
 * after it onto the wrong call. The ping proves the order holds. */
static int conn_answers(const rn_conn_t *conn, const rn_call_t *call,
                        const rn_reply_t *m) {
  /* a ping, the handshake (a setup request is answered as a request) */
  int own = call->internal && !call->tombstone && !call->setup;
  switch (m->kind) {
  case RN_REPLY_IN_ORDER:
    return !own || rn__codec_reply_is_pong(&conn->pool->codec, m);
  case RN_REPLY_PONG: return own && !call->handshake;
  case RN_REPLY_HELLO: return own && call->handshake;
  default: return !own;
  }
}

/* Hands one frame to whom it concerns: the call it answers, the
 * connection (GOAWAY), or nobody (a push). 0, or the error that must close
 * the connection. */
static int conn_deliver(rn_conn_t *conn, const rn_reply_t *m) {
  rn_call_t *call;
  int err;

  if (conn->sub_cb != NULL && (err = rn__subscribe_deliver(conn, m)) != 0)
    return err < 0 ? err : 0;
  if (m->kind == RN_REPLY_IN_ORDER) {
    call = rn_list_empty(&conn->sent)
               ? NULL
               : RN_CONTAINER_OF(conn->sent.next, rn_call_t, node);
    /* A caller's single request, the common reply: none of the checks
     * below concerns it (they are for the connection's own calls,
     * batches and rnp's kinds). */
    if (call != NULL && !call->internal && call->batch_n == 0) {
      if (rn__conn_take(conn, call))
        rn__fate_replied(call, m->status, m->body, m->body_len, m->flags);
      return 0;
    }
  } else if (m->kind == RN_REPLY_PUSH) {
    return 0;
  } else if (m->kind == RN_REPLY_GOAWAY) {
    rn__rnp_goaway(conn, m->id, m->retry_after_ms);
    return 0;
  } else {
    call = conn_find(conn, m->id);
  }
  if (call == NULL || !conn_answers(conn, call, m)) return RN_EUNEXPECTED;
  if (conn->state == RN_CONN_HANDSHAKE && call->internal &&
      (err = rn__conn_setup_check(conn, call, m)) != 0)
    return err;
  if (m->kind == RN_REPLY_HELLO && (err = rn__rnp_hello(conn, &m->rnp)) != 0)
    return err;
  if (call->batch_n > 0) {
    /* One of a batch's replies (batch.c keeps it): the call leaves the
     * connection with the last, a reply with status 0 to fate.c. */
    if ((err = rn__batch_reply(call, m)) <= 0) return err;
    if (!rn__conn_take(conn, call)) return 0;
    if (err == 2) { /* a transaction proven unrun: to the right server */
      rn_pool_t *pool = conn->pool;
      pool->stats.not_executed++;
      rn__fate_returned(call);
      rn__pool_dispatch(pool);
    } else {
      rn__fate_replied(call, 0, NULL, 0, 0);
    }
    return 0;
  }
  if (!rn__conn_take(conn, call)) return 0;
  if (m->kind == RN_REPLY_REFUSED)
    rn__fate_refused(call, m->status, m->again, m->retry_after_ms, m->body,
                     m->body_len);
  else if (m->kind == RN_REPLY_TRY_LATER)
    rn__fate_try_later(call, m->retry_after_ms, m->body, m->body_len);
  else
    rn__fate_replied(call, m->status, m->body, m->body_len, m->flags);
  return 0;
}

/* After GOAWAY nothing is owed once the requests the server accepted are
 * answered: a ping (or an abandoned attempt) still out then is no loss,
 * so the connection closes without waiting for it (the server may not
 * answer once its replies are out, and a dead-peer verdict then would
 * count against the endpoint). */
static int conn_goaway_done(const rn_conn_t *conn) {
  const rn_list_t *pos;
  if (!conn->goaway) return 0;
  for (pos = conn->sent.next; pos != &conn->sent; pos = pos->next)
    if (!RN_CONTAINER_OF(pos, rn_call_t, node)->internal) return 0;
  return 1;
}

/* Ciphertext read: decrypted into rbuf. 1 if application data arrived for
 * the codec (*peer_done: close_notify came after it); 0 if not (the
 * handshake, session tickets, a key update: life, not stray bytes; or the
 * connection closed). */
static int conn_read_tls(rn_conn_t *conn, const uv_buf_t *buf, ssize_t nread,
                         int *peer_done) {
  int got = rn__conn_tls_read(conn, buf->base, (size_t)nread);
  if (got == UV_ECANCELED) return 0; /* closed by a callback */
  if (got < 0) {
    rn__conn_close(conn, got);
    return 0;
  }
  if (conn->state == RN_CONN_CLOSING) return 0;
  if (!(got & RN_TLS_GOT_DATA)) {
    if (got & RN_TLS_GOT_CLOSE_NOTIFY) rn__conn_close(conn, UV_EOF);
    return 0;
  }
  *peer_done = (got & RN_TLS_GOT_CLOSE_NOTIFY) != 0;
  return 1;
}

static void conn_consume(rn_conn_t *conn, int peer_done);

static void conn_read(uv_stream_t *stream, ssize_t nread,
                      const uv_buf_t *buf) {
  rn_conn_t *conn = stream->data;
  rn_pool_t *pool = conn->pool;
  int peer_done = 0;

  if (nread == 0) return;
  if (conn->probe) { /* any byte: the server is back; nothing is matched */
    rn__conn_end_probe(conn, nread > 0 ? "answered" : "lost");
    return;
  }
  /* An EOF without close_notify (a killed server cannot send one) is the
   * peer closing, as a FIN is: every codec frames its messages, so a
   * truncated reply is caught there. */
  if (nread < 0) {
    rn__conn_close(conn, (int)nread);
    return;
  }
  conn->last_read = rn__loop_now(conn->pool->loop);
  conn->endpoint->last_life = conn->last_read;
  if (conn->tls == NULL)
    conn->rbuf.len += (size_t)nread;
  else if (!conn_read_tls(conn, buf, nread, &peer_done))
    return;

  /* A byte with no call waiting can only be garbage, a stale reply or the
   * first sign that the peer is a different server: drop the connection
   * before anything is matched to it. (An rnp server may also say GOAWAY
   * to an idle connection, so rnp looks at the frame first.) */
  if (rn_list_empty(&conn->sent) && !rn__codec_speaks_unasked(&pool->codec) &&
      conn->sub_cb == NULL) {
    rn__conn_close(conn, RN_EUNEXPECTED);
    return;
  }
  conn_consume(conn, peer_done);
}

/* Hands the whole frames in rbuf to whom they concern, until a callback
 * paused the connection (they wait in rbuf) or closed it. peer_done: the
 * server's TLS close_notify followed them. */
static void conn_consume(rn_conn_t *conn, int peer_done) {
  rn_pool_t *pool = conn->pool;
  size_t pos = 0;

  while (pos < conn->rbuf.len && conn->state != RN_CONN_CLOSING &&
         !conn->paused) {
    rn_reply_t m;
    int r = rn__codec_reply(&pool->codec, &conn->scan, conn->rbuf.base + pos,
                            conn->rbuf.len - pos, &m);
    if (r == 0) break;
    if (r > 0) r = conn_deliver(conn, &m);
    if (r < 0) {
      rn__conn_close(conn, r);
      return;
    }
    pos += m.size;
    /* Past its lifetime, its endpoint dropped or its server going away:
     * done once drained, whether the last reply was a call's, a ping's or
     * a tombstone's. */
    if (conn->retiring && conn->state != RN_CONN_CLOSING &&
        ((conn->queued == 0 && conn->hold == NULL) ||
         conn_goaway_done(conn)))
      rn__conn_close(conn, 0);
  }
  if (conn->state == RN_CONN_CLOSING) return; /* closed by a callback */

  rn_buf_consume(&conn->rbuf, pos);
  /* Part of a reply is here: its call has been answered, even if the rest
   * never comes. (Replies by id come in any order: which call a partial
   * one is for is not known, and sent and answered retry alike. A RESP
   * push is nobody's reply.) */
  if (conn->rbuf.len > 0 && !rn_list_empty(&conn->sent) &&
      rn__codec_partial_is_reply(&pool->codec, conn->rbuf.base)) {
    rn__fate_answering(RN_CONTAINER_OF(conn->sent.next, rn_call_t, node));
  }
  /* Replies free room on an endpoint held at max_in_flight, or at its rnp
   * server's MAX_CONCURRENT: calls that waited for it go now, not at the
   * next unrelated dispatch. */
  if (pool->options.max_in_flight != 0 || conn->endpoint->max_concurrent != 0)
    rn__pool_conn_writable(pool);
  if (conn->suspect && conn->queued == 0 && pool->ping_frame.len == 0 &&
      conn->state == RN_CONN_READY)
    rn__conn_suspect_drained(conn);
  /* TLS: the server's close_notify followed its last bytes (a paused
   * subscriber loses those it did not deliver, as when its heartbeat
   * finds the peer gone: the loss is a gap). */
  if (peer_done && conn->state != RN_CONN_CLOSING) rn__conn_close(conn, UV_EOF);
}

/* Everything one read hands out (replies, or failures when it closes the
 * connection) falls between the pool's on_deliveries edges, with the
 * connection marked as reading (rn__conn_check_idle leaves it be). The
 * pool outlives the read: it is freed only once its connections' handles
 * have closed, after the read's callback. */
static void conn_read_begin(rn_conn_t *conn) {
  rn_pool_t *pool = conn->pool;
  if (pool->options.on_deliveries != NULL)
    pool->options.on_deliveries(pool, 1);
  conn->reading = 1;
}

static void conn_read_end(rn_conn_t *conn) {
  rn_pool_t *pool = conn->pool;
  conn->reading = 0;
  if (pool->options.on_deliveries != NULL)
    pool->options.on_deliveries(pool, 0);
  /* An idle connection gives its read buffer back: a pool may hold
   * thousands of them, and each would keep RN_READ_CHUNK bytes for the
   * rare heartbeat reply. A busy one keeps it for the next burst. Looked
   * at once the read's callbacks have run, the end edge's included: a
   * binding's may only then make the calls that keep it busy. */
  if (conn->state != RN_CONN_CLOSING && conn->rbuf.len == 0 &&
      conn->queued == 0)
    rn_buf_free(&conn->rbuf);
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread,
                         const uv_buf_t *buf) {
  rn_conn_t *conn = stream->data;
  if (nread == 0) return;
  conn_read_begin(conn);
  conn_read(stream, nread, buf);
  conn_read_end(conn);
}

void rn__conn_read_pause(rn_conn_t *conn) {
  if (conn->paused || conn->state != RN_CONN_READY) return;
  conn->paused = 1;
  rn__deferred_cancel(&conn->resume_later);
  /* TLS too: every record read was decrypted into rbuf, none waits
   * inside the session. */
  uv_read_stop(&conn->h.stream);
}

void rn__conn_read_resume(rn_conn_t *conn) {
  if (!conn->paused || conn->state != RN_CONN_READY) return;
  conn->paused = 0;
  /* Nothing was read while paused: the silence judged from now on is the
   * peer's, not ours (conn_liveness.c). */
  conn->waiting_since = rn__loop_now(conn->pool->loop);
  rn__loop_defer(conn->pool->loop, &conn->resume_later);
}

static void conn_resume_later(rn_deferred_t *deferred) {
  rn_conn_t *conn = RN_CONTAINER_OF(deferred, rn_conn_t, resume_later);
  int err;
  if (conn->paused || conn->state != RN_CONN_READY) return;
  err = uv_read_start(&conn->h.stream, conn_alloc, conn_on_read);
  if (err) {
    rn__conn_close(conn, err);
    return;
  }
  conn_read_begin(conn); /* what was read before the pause first */
  conn_consume(conn, 0);
  conn_read_end(conn);
}

/* Reads what waits in the socket now and hands it to conn_on_read, as the
 * loop's next poll would. */
static void conn_read_now(rn_conn_t *conn, uv_os_fd_t fd) {
  uv_buf_t buf;
  ssize_t n;

  conn_alloc(&conn->h.handle, RN_READ_CHUNK, &buf);
  do
    n = recv(fd, buf.base, buf.len, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    n = errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
  else if (n == 0)
    n = UV_EOF;
  conn_on_read(&conn->h.stream, n, &buf);
}

/* An idle connection learns of a FIN or RST on the loop's next poll; this
 * is for the call made before that poll. One non-blocking peek: EOF, an
 * error, or bytes nobody asked for all mean the connection is done. But
 * an rnp server may say GOAWAY on an idle connection (a planned restart):
 * there the bytes are read and what they say decides. A GOAWAY retires
 * the connection (and closes it, nothing being owed on it), a frame
 * nobody asked for closes it as unexpected, and part of a frame leaves it
 * usable: a GOAWAY completing it would move a call sent meanwhile as not
 * executed. */
int rn__conn_check_idle(rn_conn_t *conn) {
  uv_os_fd_t fd;
  char byte;
  ssize_t n;
  int err;

  /* A callback of its own read (a reply's, making the next call): the
   * loop has just read it, and what waits is read once that read is done;
   * reading it here would walk a buffer the read is still walking. */
  if (conn->reading) return 0;
  if (uv_fileno(&conn->h.handle, &fd) != 0) return 0;
  do
    n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  /* TLS: what waits may be session tickets, read and decrypted as the
   * poll would (only data, close_notify or EOF ends the connection). */
  if (n > 0 &&
      (conn->tls != NULL || rn__codec_speaks_unasked(&conn->pool->codec))) {
    conn_read_now(conn, fd);
    if (conn->state == RN_CONN_READY && !conn->retiring) return 0;
    return conn->error != 0 ? conn->error : RN_ECLOSED;
  }
  err = n == 0 ? UV_EOF : n > 0 ? RN_EUNEXPECTED : -errno;
  rn__conn_close(conn, err);
  return err;
}

/* Queues a frame of the connection's own: a ping, or the handshake (rnp's
 * HELLO). */
int rn__conn_send_own(rn_conn_t *conn, const rn_buf_t *frame,
                      int handshake) {
  rn_call_t *call;

  if (frame->len > sizeof(call->inline_frame)) return UV_EINVAL;
  call = rn__call_new(conn->pool);
  if (call == NULL) return UV_ENOMEM;
  call->internal = 1;
  call->handshake = (unsigned)handshake;
  rn__call_set_frame(call, frame->base, frame->len); /* inline: no error */
  rn__conn_enqueue(conn, call);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Connecting                                                                 */

static void conn_on_connect(uv_connect_t *req, int status);

/* A TCP connect on loopback to a port nobody listens on can meet itself:
 * when the kernel picks that very port as the source, the simultaneous
 * open succeeds and every byte sent comes back as the "reply". Retrying a
 * dead local server hundreds of times makes that likely. Such a socket is
 * a refused connect. */
static int conn_is_self_connected(rn_conn_t *conn) {
  struct sockaddr_storage local, peer;
  int llen = sizeof(local), plen = sizeof(peer);
  if (uv_tcp_getsockname(&conn->h.tcp, (struct sockaddr *)&local, &llen) ||
      uv_tcp_getpeername(&conn->h.tcp, (struct sockaddr *)&peer, &plen))
    return 0;
  return llen == plen && memcmp(&local, &peer, (size_t)llen) == 0;
}

static void conn_retry_after_close(uv_handle_t *handle) {
  rn_conn_t *conn = handle->data;
  conn->handle_open = 0;
  if (conn->state == RN_CONN_CLOSING)
    conn_maybe_free(conn);
  else
    conn_try_connect(conn);
}

/* Starts a connect to the next address. A uv_tcp_t whose connect failed is
 * not reused: it is closed and a fresh one made. */
static void conn_try_connect(rn_conn_t *conn) {
  uv_loop_t *uv = conn->pool->loop->uv;
  rn_endpoint_t *address = &conn->endpoint->address;
  int err;

  if (address->kind == RN_ENDPOINT_UNIX) {
    uv_pipe_init(uv, &conn->h.pipe, 0);
    conn->h.handle.data = conn;
    conn->handle_open = 1;
    uv_unref(&conn->h.handle);
    uv_pipe_connect(&conn->connect_req, &conn->h.pipe, address->address,
                    conn_on_connect);
    return;
  }

  if (conn->next_addr == NULL) {
    rn__conn_close(conn, conn->error ? conn->error : UV_EADDRNOTAVAIL);
    return;
  }
  uv_tcp_init(uv, &conn->h.tcp);
  conn->h.handle.data = conn;
  conn->handle_open = 1;
  /* Idle pooled connections must not keep the loop alive; calls in flight
   * do, through their deadlines. */
  uv_unref(&conn->h.handle);
  err = uv_tcp_connect(&conn->connect_req, &conn->h.tcp,
                       conn->next_addr->ai_addr, conn_on_connect);
  conn->next_addr = conn->next_addr->ai_next;
  if (err) {
    conn->error = err;
    uv_close(&conn->h.handle, conn_retry_after_close);
  }
}

static void conn_on_connect(uv_connect_t *req, int status) {
  rn_conn_t *conn = req->data;
  int err;

  if (conn->state == RN_CONN_CLOSING) return; /* its close is under way */
  if (status < 0) {
    conn->error = status;
    if (conn->next_addr != NULL)
      uv_close(&conn->h.handle, conn_retry_after_close);
    else
      rn__conn_close(conn, status);
    return;
  }

  if (conn->endpoint->address.kind == RN_ENDPOINT_TCP) {
    if (conn_is_self_connected(conn)) {
      conn->error = UV_ECONNREFUSED;
      if (conn->next_addr != NULL)
        uv_close(&conn->h.handle, conn_retry_after_close);
      else
        rn__conn_close(conn, UV_ECONNREFUSED);
      return;
    }
    rn__conn_set_tcp_options(conn);
  }
  err = uv_read_start(&conn->h.stream, conn_alloc, conn_on_read);
  if (err) {
    rn__conn_close(conn, err);
    return;
  }
  conn->error = 0;
  conn->last_read = conn->last_active = rn__loop_now(conn->pool->loop);
  if (conn->pool->tls != NULL) {
    conn_set_state(conn, RN_CONN_TLS);
    err = rn__conn_tls_start(conn);
    if (err) {
      rn__conn_close(conn, err);
      return;
    }
    rn__conn_flush(conn);
    return;
  }
  conn_start_protocol(conn);
}

/* Connected (and through TLS, if any): the protocol's own handshake. */
static void conn_start_protocol(rn_conn_t *conn) {
  rn_pool_t *pool = conn->pool;
  int err;
  /* Accepting is the kernel's work; answering is the server's. Calls go
   * on a connection only once the server has answered a ping (rnp: its
   * HELLO) and its setup requests, within what is left of
   * connect_timeout: a wedged server that still accepts is a failed
   * connect, not a place to strand calls. The setup leaves with the ping,
   * ahead of it, in one write (rnp: once the HELLO is answered). */
  if (pool->hello_frame.len == 0 && pool->ping_frame.len == 0 &&
      pool->setup_count == 0) {
    conn_become_ready(conn);
    return;
  }
  conn_set_state(conn, RN_CONN_HANDSHAKE);
  if (pool->hello_frame.len > 0) {
    err = rn__conn_send_own(conn, &pool->hello_frame, 1);
    if (err) rn__conn_close(conn, err);
    return;
  }
  err = rn__conn_setup_send(conn);
  if (err) {
    rn__conn_close(conn, err);
    return;
  }
  if (pool->ping_frame.len > 0) rn__conn_send_ping(conn);
}

/* Its HELLO or readiness ping was answered: ready, unless setup requests
 * are still out (or, after a HELLO, still to send). */
void rn__conn_handshake_done(rn_conn_t *conn) {
  int err;
  if (!conn->setup_sent && conn->pool->setup_count > 0) {
    err = rn__conn_setup_send(conn);
    if (err) rn__conn_close(conn, err);
    return;
  }
  if (conn->setup_left == 0) conn_become_ready(conn);
}

void rn__conn_tls_established(rn_conn_t *conn) { conn_start_protocol(conn); }

static void conn_become_ready(rn_conn_t *conn) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  rn_timer_stop(&conn->connect_timer);
  /* Its whole handshake was answered (see rn__conn_take). */
  if (conn->state == RN_CONN_HANDSHAKE && !conn->answered) {
    conn->answered = 1;
    rn__pool_conn_answered(conn->pool, conn);
  }
  conn->was_ready = 1;
  conn->last_read = conn->last_active = rn__loop_now(conn->pool->loop);
  conn->endpoint->last_life = conn->last_read;
  if (conn->pool->options.max_lifetime_ms > 0) {
    uint64_t life = conn->pool->options.max_lifetime_ms;
    conn->expires_at = conn->last_read + life -
                       (uint64_t)((double)life * 0.1 *
                                  rn__random_unit(conn->pool->loop));
  }
  rn__conn_beat_start(conn);
  conn_set_state(conn, RN_CONN_READY);
  rn__pool_conn_ready(conn->pool, conn);
  /* The endpoint serves again: the dead connection has nothing to learn. */
  if (ep->dead_probe != NULL) rn__conn_end_probe(ep->dead_probe, "replaced");
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                    */

/* Once the setup's write is done (or never will be): AUTH's password
 * stays in the pool's copy alone (rn__setup_free wipes that). */
static void conn_wipe_wbuf(rn_conn_t *conn) {
  if (!conn->wipe_wbuf) return;
  rn__wipe(conn->wbuf.base, conn->wbuf.len);
  conn->wipe_wbuf = 0;
}

static void conn_on_write(uv_write_t *req, int status) {
  rn_conn_t *conn = req->data;
  conn->writing = 0;
  conn_wipe_wbuf(conn);
  if (status < 0) {
    rn__conn_close(conn, status);
    return;
  }
  /* libuv finishes a completed write as the handle closes: a closed
   * connection writes nothing more (a failed TLS session's alert may
   * still wait), and queuing its flush would outlive its memory. */
  if (conn->state == RN_CONN_CLOSING) return;
  if (!rn_list_empty(&conn->unsent) || rn__conn_tls_pending(conn))
    rn__loop_defer(conn->pool->loop, &conn->flush_later);
  if (rn__conn_writable(conn)) rn__pool_conn_writable(conn->pool);
}

static void conn_flush_later(rn_deferred_t *deferred) {
  conn_flush(RN_CONTAINER_OF(deferred, rn_conn_t, flush_later));
}

void rn__conn_flush(rn_conn_t *conn) { conn_flush(conn); }

/* Calls to write, or (TLS) the session's own bytes. */
static int conn_has_output(const rn_conn_t *conn) {
  return !rn_list_empty(&conn->unsent) || rn__conn_tls_pending(conn);
}

/* The call's bytes are in the batch about to be written. It stays on
 * `unsent`, which joins `sent` whole once every call of the batch went
 * through here (conn_flush): one splice, not a move per call. */
static void conn_written(rn_conn_t *conn, rn_call_t *call) {
  (void)conn;
  rn__fate_written(call);
}

/* Writes every unsent call in one batch, at the end of the loop's turn
 * (conn_flush_later). Calls made in one turn (the replies of one read each
 * making a new call, say) leave together, and only one write is in flight
 * per connection: calls made meanwhile wait for it. A burst of pipelined
 * calls costs one syscall, not one each. */
static void conn_flush(rn_conn_t *conn) {
  rn_list_t *pos, *tmp;
  rn_buf_t *out;
  uv_buf_t buf;
  int err, by_id, secret;

  if (conn->writing || conn->state < RN_CONN_TLS ||
      conn->state == RN_CONN_CLOSING || !conn_has_output(conn) ||
      (conn->suspect && rn__conn_flush_suspect(conn)) ||
      !conn_has_output(conn))
    return;

  if (!rn_list_empty(&conn->unsent) && rn_list_empty(&conn->sent))
    conn->waiting_since = rn__loop_now(conn->pool->loop);
  /* With TLS the batch is put together in plaintext and encrypted at
   * once (one record run per flush, not one per call). */
  out = conn->tls != NULL ? &conn->pool->tls_out : &conn->wbuf;
  out->len = 0;
  /* The setup (AUTH's password) leaves during the handshake: its
   * plaintext copy here is zeroed once sealed or written. */
  secret = conn->state == RN_CONN_HANDSHAKE && conn->pool->setup_count > 0;
  err = rn_buf_reserve(out, conn->unsent_bytes);
  if (err) {
    rn__conn_close(conn, err);
    return;
  }
  by_id = rn__codec_replies_by_id(&conn->pool->codec);
  rn_list_foreach_safe(pos, tmp, &conn->unsent) {
    rn_call_t *call = RN_CONTAINER_OF(pos, rn_call_t, node);
    rn__copy(out->base + out->len, call->frame, call->frame_len);
    if (by_id) {
      if (call->batch != NULL)
        rn__batch_stamp(conn, call, out->base + out->len);
      else
        rn__rnp_stamp(conn, call, out->base + out->len);
    }
    out->len += call->frame_len;
    if (conn->tls == NULL) conn_written(conn, call);
  }
  if (conn->tls != NULL) {
    /* Before any call counts as written: a batch that cannot be
     * encrypted never left, and its calls go elsewhere unsent. */
    conn->wbuf.len = 0;
    err = rn__conn_tls_seal(conn, out->base, out->len);
    if (secret) rn__wipe(out->base, out->len);
    out->len = 0;
    if (err) {
      rn__conn_close(conn, err);
      return;
    }
    rn_list_foreach_safe(pos, tmp, &conn->unsent) {
      conn_written(conn, RN_CONTAINER_OF(pos, rn_call_t, node));
    }
  }
  rn_list_splice_tail(&conn->sent, &conn->unsent);
  conn->unsent_bytes = 0;
  if (secret && conn->tls == NULL) conn->wipe_wbuf = 1;

  buf = uv_buf_init(conn->wbuf.base, (unsigned)conn->wbuf.len);
  err = uv_write(&conn->write_req, &conn->h.stream, &buf, 1, conn_on_write);
  if (err) {
    rn__conn_close(conn, err);
    return;
  }
  conn->writing = 1;
}

void rn__conn_enqueue(rn_conn_t *conn, rn_call_t *call) {
  /* Calls go only to a ready connection; its own frames also during the
   * handshake. The call is unsent and on no list. */
  assert(conn->state == RN_CONN_READY ||
         (call->internal && conn->state == RN_CONN_HANDSHAKE));
  assert(call->conn == NULL && rn_list_empty(&call->node) &&
         call->state == RN_SEND_UNSENT && !call->done);
  /* (last_active: stamped as a request leaves, rn__conn_take and
   * rn__conn_unqueue; only an idle connection's is read.) */
  if (!call->internal) rn__call_set_endpoint(call, conn->endpoint);
  call->conn = conn;
  rn_list_insert_tail(&conn->unsent, &call->node);
  conn->unsent_bytes += call->frame_len;
  rn__conn_count_call(conn, call, 1);
  if (!conn->writing) rn__loop_defer(conn->pool->loop, &conn->flush_later);
}

void rn__conn_retire(rn_conn_t *conn, const char *reason) {
  if (conn->retiring || conn->state == RN_CONN_CLOSING) return;
  conn->retiring = 1;
  if (conn->close_reason == NULL) conn->close_reason = reason;
  /* It takes no new calls, so it holds no place in the pool either: a
   * replacement may open while it drains. */
  conn->endpoint->open--;
  /* A held one closes when it is given back (rn_hold_release). A
   * subscriber is not given back while its subscription lives: its
   * server no longer being the pool's (dropped by discovery, in the wrong
   * role) closes it now, and the subscription moves (its loss a gap). */
  if ((conn->queued == 0 && conn->hold == NULL) || conn_goaway_done(conn) ||
      conn->sub_cb != NULL)
    rn__conn_close(conn, 0);
}

void rn__conn_unqueue(rn_conn_t *conn, rn_call_t *call) {
  assert(call->conn == conn && call->state == RN_SEND_UNSENT);
  rn_list_remove(&call->node);
  conn->unsent_bytes -= call->frame_len;
  rn__conn_count_call(conn, call, -1);
  call->conn = NULL;
  if (!call->internal) conn->last_active = rn__loop_now(conn->pool->loop);
  /* A retiring connection's last call gave up before it was written (its
   * deadline, its attempt's timeout): no reply will come to close it. */
  if (conn->retiring && conn->queued == 0 && conn->hold == NULL)
    rn__conn_close(conn, 0);
}

int rn__conn_abandon(rn_conn_t *conn, rn_call_t *call) {
  rn_call_t *stone;
  assert(call->conn == conn && call->state != RN_SEND_UNSENT &&
         !call->internal);
  stone = rn__call_new(conn->pool);
  if (stone == NULL) {
    rn__conn_close(conn, UV_ENOMEM);
    return UV_ENOMEM;
  }
  stone->internal = 1;
  stone->tombstone = 1;
  stone->conn = conn;
  stone->state = call->state;
  stone->rnp_id = call->rnp_id;
  stone->batch_n = call->batch_n; /* a batch's: the rest of its replies */
  stone->batch_got = call->batch_got;
  stone->blocking = call->blocking; /* counted on conn->blocking */
  /* In the call's place: replies are matched by position (or by id). */
  rn_list_insert_tail(&call->node, &stone->node);
  rn_list_remove(&call->node);
  rn_list_init(&call->node);
  call->conn = NULL;
  return 0;
}

const char *rn__conn_close_reason(const rn_conn_t *conn) {
  if (conn->close_reason != NULL) return conn->close_reason;
  switch (conn->error) {
  case 0: return "closed";
  case RN_ECLOSED: return "pool_closed";
  case RN_ESTALE: return "stale";
  case RN_EDEADPEER: return "dead_peer";
  case RN_EUNEXPECTED: return "unexpected";
  case RN_EBADFRAME:
  case RN_EFRAMESIZE: return "bad_frame";
  case RN_EPEERPROTOCOL: return "protocol_error";
  case RN_EAUTH: return "auth";
  case RN_ESETUP: return "setup";
  case RN_EROLE: return "wrong_role";
  case RN_ELOADING: return "loading";
  case RN_ETLSVERIFY: return "tls_verify";
  case RN_ETLS: return "tls";
  case UV_EOF: return "eof";
  case UV_ECONNRESET:
  case UV_EPIPE: return "reset";
  case UV_ECONNREFUSED: return "refused";
  case UV_ETIMEDOUT:
    /* Connected but never answered the handshake ping, or no connect. */
    return conn->was_ready ? "timeout" : "connect_timeout";
  default:
    if (conn->error <= UV_EAI_ADDRFAMILY && conn->error >= UV_EAI_PROTOCOL)
      return "resolve";
    return "error";
  }
}

/* ------------------------------------------------------------------------ */
/* Closing                                                                    */

static void conn_maybe_free(rn_conn_t *conn) {
  rn_pool_t *pool = conn->pool;

  if (conn->state != RN_CONN_CLOSING || conn->handle_open || conn->resolving)
    return;
  /* Every call was handed back or failed when it closed, and no timer of
   * its may fire into freed memory. */
  assert(rn_list_empty(&conn->unsent) && rn_list_empty(&conn->sent));
  assert(conn->queued == 0);
  assert(!rn_timer_is_active(&conn->connect_timer) &&
         !rn_timer_is_active(&conn->heartbeat_timer));
  if (conn->addrs) uv_freeaddrinfo(conn->addrs);
  rn__conn_tls_free(conn);
  rn_buf_free(&conn->rbuf);
  rn_frame_scan_reset(&conn->scan);
  conn_wipe_wbuf(conn); /* its write failed to start */
  rn_buf_free(&conn->wbuf);
  rn_list_remove(&conn->node);
  rn__pool_conn_freed(pool, conn);
  free(conn);
}

static void conn_on_close(uv_handle_t *handle) {
  rn_conn_t *conn = handle->data;
  conn->handle_open = 0;
  conn_maybe_free(conn);
}

/* Closes the handle: with a FIN, or with an RST when the pool is aborting
 * a connection that got as far as connecting. */
void rn__conn_close_handle(rn_conn_t *conn, int connected) {
  if (!conn->handle_open || uv_is_closing(&conn->h.handle)) return;
#if UV_VERSION_HEX >= 0x012000 /* uv_tcp_close_reset: libuv 1.32 */
  if (conn->pool->aborting && connected &&
      conn->h.handle.type == UV_TCP &&
      uv_tcp_close_reset(&conn->h.tcp, conn_on_close) == 0)
    return;
#else
  (void)connected;
#endif
  uv_close(&conn->h.handle, conn_on_close);
}

void rn__conn_return_all(rn_list_t *calls) {
  /* Newest first: each goes to the front of the pool's queue, so they end
   * up ahead of newer calls in their original order. */
  while (!rn_list_empty(calls)) {
    rn_call_t *call = RN_CONTAINER_OF(calls->prev, rn_call_t, node);
    rn_list_remove(&call->node);
    rn__fate_returned(call);
  }
}

/* Moves the calls not yet written to `out`, for the pool to place again.
 * The connection's own frames (pings, HELLO) are dropped, or left to be
 * written (keep_own). */
void rn__conn_take_unsent(rn_conn_t *conn, rn_list_t *out, int keep_own) {
  rn_list_t *pos, *tmp;
  rn_list_init(out);
  rn_list_foreach_safe(pos, tmp, &conn->unsent) {
    rn_call_t *call = RN_CONTAINER_OF(pos, rn_call_t, node);
    if (call->internal && keep_own) continue;
    rn__conn_unqueue(conn, call);
    if (call->internal) {
      rn__call_release(call);
    } else {
      if (call->parent == NULL) conn->pool->stats.requeued++;
      rn_list_insert_tail(out, &call->node);
    }
  }
}

void rn__conn_close(rn_conn_t *conn, int err) {
  rn_pool_t *pool = conn->pool;
  rn_list_t unsent;
  int connected;

  if (conn->state == RN_CONN_CLOSING) {
    if (conn->probe)
      rn__conn_end_probe(conn, err == RN_ECLOSED ? "closed" : "lost");
    return;
  }
  connected = conn->state >= RN_CONN_TLS;
  /* Our own orderly end (idle, lifetime, retiring, the pool closing):
   * close_notify, so the server can tell it from a truncation. */
  if ((err == 0 || err == RN_ECLOSED) && !conn->pool->aborting)
    rn__conn_tls_close_notify(conn);
  conn_set_state(conn, RN_CONN_CLOSING);
  conn->error = err;
  if (conn->hold != NULL) rn__hold_conn_closed(conn, err);
  if (conn->sub_cb != NULL) rn__subscribe_conn_closed(conn, err);
  rn_timer_stop(&conn->connect_timer);
  rn_timer_stop(&conn->heartbeat_timer);
  rn__deferred_cancel(&conn->flush_later);
  rn__deferred_cancel(&conn->resume_later);
  rn__conn_hand_over_probing(conn);
  if (conn->resolving) uv_cancel((uv_req_t *)&conn->resolve_req);
  /* A dead peer's socket may stay open as its endpoint's probe. */
  if (err != RN_EDEADPEER || !rn__conn_become_probe(conn))
    rn__conn_close_handle(conn, connected);

  /* Calls never written cannot have executed: back to the pool, which
   * sends them elsewhere. Taken off first, so that callbacks below cannot
   * see them on a dead connection. */
  rn__conn_take_unsent(conn, &unsent, 0);

  /* Calls written may have executed: the retry rules decide. */
  while (!rn_list_empty(&conn->sent)) {
    rn_call_t *call = RN_CONTAINER_OF(conn->sent.next, rn_call_t, node);
    rn_list_remove(&call->node);
    call->conn = NULL;
    rn__conn_count_call(conn, call, -1);
    if (call->internal) {
      if (!call->tombstone && !call->setup && !call->sub_cmd)
        pool->stats.heartbeats_missed++;
      rn__call_release(call);
    } else {
      rn__fate_lost(call, err);
    }
  }

  rn__conn_return_all(&unsent);
  rn__pool_conn_closed(pool, conn, err);
  conn_maybe_free(conn);
}

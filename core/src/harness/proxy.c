/* The fault-injection proxy: a listener, and for each client a pair of TCP
 * connections with one pipe per direction. Bytes read from one side are
 * handed to the faults (proxy_fault.c), which queue what survives as
 * pieces with release times; each pipe writes its pieces when they are
 * due. A pipe holding too many bytes stops reading, so a slow or stalled
 * direction pushes back on its sender as a real network would. */
#include "proxy.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Bytes one direction may hold (queued or being written) before it stops
 * reading its source. */
#define RN_PROXY_HIGH_WATER (256 * 1024)

static void proxy_maybe_finish(rn_proxy_t *proxy);
static void proxy_accept_next(rn_proxy_t *proxy);

void rn_proxy_options_init(rn_proxy_options_t *o) {
  memset(o, 0, sizeof(*o));
  o->backlog = 511;
}

void *rn_proxy_data(rn_proxy_t *proxy) { return proxy->data; }

unsigned rn_proxy_connections(rn_proxy_t *proxy) {
  unsigned n = 0;
  rn_list_t *pos;
  for (pos = proxy->conns.next; pos != &proxy->conns; pos = pos->next)
    if (!RN_CONTAINER_OF(pos, rn_proxy_conn_t, node)->closing) n++;
  return n;
}

/* ------------------------------------------------------------------------ */
/* Events: queued, delivered from a timer so the callback never runs in the
 * middle of the proxy's own bookkeeping. */

void rn__proxy_event(rn_proxy_t *proxy, const char *type, uint64_t conn,
                     uint64_t fault, unsigned dir, uint64_t bytes,
                     int status) {
  rn_proxy_event_t ev;
  if (proxy->options.on_event == NULL) return;
  ev.type = type;
  ev.conn = conn;
  ev.fault = fault;
  ev.direction = dir;
  ev.bytes = bytes;
  ev.status = status;
  ev.time = uv_now(proxy->loop->uv);
  if (rn_buf_append(&proxy->events, &ev, sizeof(ev)) != 0) return;
  if (!rn_timer_is_active(&proxy->event_timer))
    rn_timer_start(&proxy->event_timer, 0);
}

static void proxy_deliver_events(rn_proxy_t *proxy) {
  /* The callback may cause more events: take the batch first. */
  while (proxy->events.len > 0) {
    rn_buf_t batch = proxy->events;
    size_t off;
    rn_buf_init(&proxy->events);
    for (off = 0; off + sizeof(rn_proxy_event_t) <= batch.len;
         off += sizeof(rn_proxy_event_t)) {
      rn_proxy_event_t ev;
      memcpy(&ev, batch.base + off, sizeof(ev));
      proxy->options.on_event(proxy, &ev);
    }
    rn_buf_free(&batch);
  }
}

static void proxy_on_event_timer(rn_timer_t *timer) {
  proxy_deliver_events(timer->data);
}

/* ------------------------------------------------------------------------ */
/* Pipes                                                                      */

static void pipe_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  rn_proxy_conn_t *conn = handle->data;
  (void)suggested;
  *buf = uv_buf_init(conn->proxy->readbuf, sizeof(conn->proxy->readbuf));
}

static void pipe_on_read(uv_stream_t *stream, ssize_t nread,
                         const uv_buf_t *buf);

static void piece_on_write(uv_write_t *req, int status) {
  rn_proxy_piece_t *piece = req->data;
  rn_proxy_pipe_t *pipe = piece->pipe;
  rn_proxy_conn_t *conn = pipe->conn;

  pipe->writes--;
  pipe->held -= piece->len;
  free(piece);
  if (conn->closing) return; /* cancelled by the close */
  if (status < 0) {
    rn__proxy_event(conn->proxy, "peer_error", conn->id, 0, pipe->dir, 0,
                    status);
    rn__proxy_conn_close(conn, 1, 0);
    return;
  }
  rn__proxy_pipe_update(pipe);
}

/* Hands every due piece to libuv (which keeps them in order) and arms the
 * timer for the next one. */
static void pipe_flush(rn_proxy_pipe_t *pipe) {
  rn_proxy_conn_t *conn = pipe->conn;
  uint64_t now = uv_now(conn->proxy->loop->uv);

  if (conn->closing || !conn->connected) return;
  while (!rn_list_empty(&pipe->queue)) {
    rn_proxy_piece_t *piece =
        RN_CONTAINER_OF(pipe->queue.next, rn_proxy_piece_t, node);
    uv_buf_t buf;
    if (piece->due > now) {
      rn_timer_start(&pipe->timer, piece->due - now);
      return;
    }
    rn_list_remove(&piece->node);
    buf = uv_buf_init(piece->data, (unsigned)piece->len);
    piece->req.data = piece;
    if (uv_write(&piece->req, (uv_stream_t *)pipe->dst, &buf, 1,
                 piece_on_write) != 0) {
      pipe->held -= piece->len;
      free(piece);
      rn__proxy_conn_close(conn, 1, 0);
      return;
    }
    pipe->writes++;
  }
}

static void pipe_on_timer(rn_timer_t *timer) {
  rn_proxy_pipe_t *pipe = timer->data;
  pipe_flush(pipe);
}

int rn__proxy_pipe_queue(rn_proxy_pipe_t *pipe, const char *data, size_t len,
                         double delay_ms, uint64_t bytes_per_second,
                         size_t slice_bytes, uint64_t slice_delay) {
  uv_loop_t *uv = pipe->conn->proxy->loop->uv;
  double t;
  size_t step = len, off, n;
  int first = 1;

  /* A delay counts from now, not from when this loop turn's poll
   * returned: the cached time lags by the turn's work so far, and on a
   * busy loop a 60 ms fault would hold bytes for less than 60 ms. */
  uv_update_time(uv);
  t = (double)uv_now(uv) + delay_ms;

  if (slice_bytes > 0 && slice_bytes < step) step = slice_bytes;
  if (bytes_per_second > 0) {
    /* Pieces of 20 ms worth make a smooth rate rather than bursts. */
    size_t quantum = (size_t)(bytes_per_second / 50);
    if (quantum < 1) quantum = 1;
    if (quantum < step) step = quantum;
  }
  /* TCP keeps order: nothing overtakes what was queued before it. */
  if (t < pipe->cursor) t = pipe->cursor;
  for (off = 0; off < len; off += n, first = 0) {
    rn_proxy_piece_t *piece;
    n = RN_MIN(step, len - off);
    if (!first && slice_bytes > 0) t += (double)slice_delay;
    if (bytes_per_second > 0) t += (double)n * 1000.0 / (double)bytes_per_second;
    piece = malloc(offsetof(rn_proxy_piece_t, data) + n);
    if (piece == NULL) return UV_ENOMEM;
    piece->pipe = pipe;
    piece->len = n;
    piece->due = (uint64_t)t + ((double)(uint64_t)t < t); /* round up */
    memcpy(piece->data, data + off, n);
    rn_list_insert_tail(&pipe->queue, &piece->node);
    pipe->held += n;
  }
  pipe->cursor = t;
  pipe_flush(pipe);
  return 0;
}

static void pipe_on_shutdown(uv_shutdown_t *req, int status) {
  rn_proxy_pipe_t *pipe = req->data;
  rn_proxy_conn_t *conn = pipe->conn;
  (void)status;
  if (conn->closing) return;
  pipe->shut_done = 1;
  /* Both directions ended cleanly: the pair has nothing left to do. */
  if (conn->up.shut_done && conn->down.shut_done)
    rn__proxy_conn_close(conn, 0, 0);
}

void rn__proxy_pipe_shutdown(rn_proxy_pipe_t *pipe) {
  rn_proxy_conn_t *conn = pipe->conn;
  if (pipe->shut || conn->closing) return;
  pipe->shut = 1;
  pipe->shutdown_req.data = pipe;
  if (uv_shutdown(&pipe->shutdown_req, (uv_stream_t *)pipe->dst,
                  pipe_on_shutdown) != 0)
    pipe_on_shutdown(&pipe->shutdown_req, UV_ENOTCONN);
}

void rn__proxy_pipe_update(rn_proxy_pipe_t *pipe) {
  rn_proxy_conn_t *conn = pipe->conn;
  rn_proxy_pipe_t *other = pipe == &conn->up ? &conn->down : &conn->up;
  int stalled, want;

  if (conn->closing) return;
  stalled = rn__proxy_pipe_stalled(pipe);
  if (stalled != (int)pipe->stalled) {
    pipe->stalled = (unsigned)stalled;
    rn__proxy_event(conn->proxy, stalled ? "stall" : "unstall", conn->id, 0,
                    pipe->dir, pipe->held, 0);
  }
  want = conn->connected && !pipe->eof && !stalled && !pipe->close_after &&
         !other->close_after && pipe->held < RN_PROXY_HIGH_WATER;
  if (want && !pipe->reading) {
    if (uv_read_start((uv_stream_t *)pipe->src, pipe_alloc, pipe_on_read) == 0)
      pipe->reading = 1;
  } else if (!want && pipe->reading) {
    uv_read_stop((uv_stream_t *)pipe->src);
    pipe->reading = 0;
  }
  if (!conn->connected) return;
  pipe_flush(pipe);
  if (conn->closing || pipe->held != 0) return;
  if (pipe->close_after) {
    rn__proxy_conn_close(conn, pipe->close_after == 2, pipe->close_fault);
    return;
  }
  if (!pipe->shut &&
      (pipe->half_closed || (pipe->eof && !rn__proxy_pipe_blackholed(pipe)))) {
    if (pipe->eof) rn__proxy_event(conn->proxy, "eof", conn->id, 0, pipe->dir,
                                   0, 0);
    rn__proxy_pipe_shutdown(pipe);
  }
}

static void pipe_on_read(uv_stream_t *stream, ssize_t nread,
                         const uv_buf_t *buf) {
  rn_proxy_conn_t *conn = stream->data;
  rn_proxy_pipe_t *pipe =
      stream == (uv_stream_t *)&conn->client ? &conn->up : &conn->down;

  if (nread == 0 || conn->closing) return;
  if (nread == UV_EOF) {
    pipe->eof = 1;
    rn__proxy_event(conn->proxy, "peer_close", conn->id, 0, pipe->dir, 0, 0);
    rn__proxy_pipe_read_end(pipe);
    rn__proxy_pipe_update(pipe);
    return;
  }
  if (nread < 0) {
    /* Pass a reset on as a reset: the other side must not mistake it
     * for an orderly end. */
    rn__proxy_event(conn->proxy,
                    nread == UV_ECONNRESET ? "peer_reset" : "peer_error",
                    conn->id, 0, pipe->dir, 0, (int)nread);
    rn__proxy_conn_close(conn, 1, 0);
    return;
  }
  pipe->read_bytes += (uint64_t)nread;
  rn__proxy_pipe_read(pipe, buf->base, (size_t)nread);
  rn__proxy_pipe_update(pipe);
}

/* ------------------------------------------------------------------------ */
/* Connection pairs                                                           */

static void pipe_init(rn_proxy_conn_t *conn, rn_proxy_pipe_t *pipe,
                      unsigned dir, uv_tcp_t *src, uv_tcp_t *dst) {
  rn_proxy_t *proxy = conn->proxy;
  pipe->conn = conn;
  pipe->dir = dir;
  pipe->src = src;
  pipe->dst = dst;
  rn_list_init(&pipe->queue);
  rn_buf_init(&pipe->partial);
  rn_timer_init(proxy->loop, &pipe->timer, pipe_on_timer);
  pipe->timer.data = pipe;
  /* Its own stream per connection and direction: what one connection
   * draws does not depend on how the others' traffic interleaves. */
  pipe->rng = rn__proxy_mix(proxy->options.seed ^
                            rn__proxy_mix(conn->id * 2 + dir));
}

static void pipe_drop_queue(rn_proxy_pipe_t *pipe) {
  rn_timer_stop(&pipe->timer);
  while (!rn_list_empty(&pipe->queue)) {
    rn_proxy_piece_t *piece =
        RN_CONTAINER_OF(pipe->queue.next, rn_proxy_piece_t, node);
    rn_list_remove(&piece->node);
    pipe->held -= piece->len;
    free(piece);
  }
}

static void conn_on_close(uv_handle_t *handle) {
  rn_proxy_conn_t *conn = handle->data;
  rn_proxy_t *proxy = conn->proxy;
  if (--conn->handles > 0) return;
  rn__proxy_conn_free_links(conn);
  /* Not before: a close may come from inside the framing of a read. */
  rn__proxy_pipe_free_frames(&conn->up);
  rn__proxy_pipe_free_frames(&conn->down);
  rn_list_remove(&conn->node);
  proxy->conn_count--;
  free(conn);
  proxy_maybe_finish(proxy);
}

static void conn_close_handle(uv_tcp_t *tcp, int rst) {
  uv_os_fd_t fd;
  if (uv_is_closing((uv_handle_t *)tcp)) return;
  /* SO_LINGER 0 makes close() send RST and skip TIME_WAIT; set directly
   * because uv_tcp_close_reset refuses a handle that is shutting down. */
  if (rst && uv_fileno((uv_handle_t *)tcp, &fd) == 0) {
    struct linger l;
    l.l_onoff = 1;
    l.l_linger = 0;
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  uv_close((uv_handle_t *)tcp, conn_on_close);
}

void rn__proxy_conn_close(rn_proxy_conn_t *conn, int rst, uint64_t fault) {
  if (conn->closing) return;
  conn->closing = 1;
  rn__proxy_event(conn->proxy, rst ? "reset" : "close", conn->id, fault, 0,
                  0, 0);
  rn_timer_stop(&conn->close_timer);
  pipe_drop_queue(&conn->up);
  pipe_drop_queue(&conn->down);
  conn_close_handle(&conn->client, rst);
  conn_close_handle(&conn->upstream, rst);
}

static void conn_on_connect(uv_connect_t *req, int status) {
  rn_proxy_conn_t *conn = req->data;
  if (conn->closing) return;
  if (status < 0) {
    rn__proxy_event(conn->proxy, "upstream_error", conn->id, 0, 0, 0, status);
    rn__proxy_conn_close(conn, 1, 0);
    return;
  }
  conn->connected = 1;
  uv_tcp_nodelay(&conn->client, 1);
  uv_tcp_nodelay(&conn->upstream, 1);
  rn__proxy_event(conn->proxy, "connect", conn->id, 0, 0, 0, 0);
  rn__proxy_pipe_update(&conn->up);
  rn__proxy_pipe_update(&conn->down);
}

static void conn_on_close_timer(rn_timer_t *timer) {
  rn_proxy_conn_t *conn = timer->data;
  uint64_t now = uv_now(conn->proxy->loop->uv);
  size_t i;
  for (i = 0; i < conn->nlinks; i++) {
    rn_proxy_link_t *l = &conn->links[i];
    const rn_fault_options_t *o = &l->fault->o;
    if (l->applies && o->kind == RN_FAULT_CLOSE &&
        o->after_ms != RN_FAULT_UNSET && l->start + o->after_ms <= now) {
      rn__proxy_conn_close(conn, o->rst, l->fault->id);
      return;
    }
  }
  rn__proxy_conn_arm_close(conn);
}

static void free_handle(uv_handle_t *handle) { free(handle); }

static void proxy_accept(rn_proxy_t *proxy) {
  rn_proxy_conn_t *conn;
  rn_proxy_fault_t *f;
  int err;

  conn = calloc(1, sizeof(*conn));
  if (conn == NULL) {
    /* Take the socket anyway, or libuv would stop watching the listener
     * for good; without memory for a pair it can only be dropped. */
    uv_tcp_t *tmp = malloc(sizeof(*tmp));
    if (tmp == NULL) return;
    uv_tcp_init(proxy->loop->uv, tmp);
    (void)uv_accept((uv_stream_t *)proxy->listener, (uv_stream_t *)tmp);
    uv_close((uv_handle_t *)tmp, free_handle);
    return;
  }
  conn->proxy = proxy;
  conn->id = ++proxy->next_conn;
  pipe_init(conn, &conn->up, RN_PROXY_UP, &conn->client, &conn->upstream);
  pipe_init(conn, &conn->down, RN_PROXY_DOWN, &conn->upstream, &conn->client);
  rn_timer_init(proxy->loop, &conn->close_timer, conn_on_close_timer);
  conn->close_timer.data = conn;
  uv_tcp_init(proxy->loop->uv, &conn->client);
  uv_tcp_init(proxy->loop->uv, &conn->upstream);
  conn->client.data = conn;
  conn->upstream.data = conn;
  conn->connect_req.data = conn;
  conn->handles = 2;
  rn_list_insert_tail(&proxy->conns, &conn->node);
  proxy->conn_count++;

  err = uv_accept((uv_stream_t *)proxy->listener, (uv_stream_t *)&conn->client);
  if (err) {
    rn__proxy_event(proxy, "accept_error", conn->id, 0, 0, 0, err);
    rn__proxy_conn_close(conn, 0, 0);
    return;
  }
  rn__proxy_event(proxy, "accept", conn->id, 0, 0, 0, 0);
  f = rn__proxy_find(proxy, RN_FAULT_ACCEPT_CLOSE);
  if (f != NULL && rn__proxy_toxic(proxy, f, conn->id)) {
    rn__proxy_event(proxy, "accept_close", conn->id, f->id, 0, 0, f->o.rst);
    rn__proxy_conn_close(conn, f->o.rst, f->id);
    return;
  }
  err = rn__proxy_conn_attach_all(conn);
  if (err == 0)
    err = uv_tcp_connect(&conn->connect_req, &conn->upstream,
                         (const struct sockaddr *)&proxy->upstream_addr,
                         conn_on_connect);
  if (err) {
    rn__proxy_event(proxy, "upstream_error", conn->id, 0, 0, 0, err);
    rn__proxy_conn_close(conn, 1, 0);
    return;
  }
  rn__proxy_conn_arm_close(conn);
}

/* ------------------------------------------------------------------------ */
/* The listener                                                               */

/* libuv has accepted one socket and stops watching the listener until we
 * take it with uv_accept: holding it is how accepting pauses and slows. */
static void proxy_accept_next(rn_proxy_t *proxy) {
  int paused;
  if (!proxy->accept_held || proxy->closing || proxy->listener == NULL)
    return;
  paused = rn__proxy_find(proxy, RN_FAULT_STOP_ACCEPT) != NULL;
  if (paused != proxy->accept_paused) {
    proxy->accept_paused = paused;
    rn__proxy_event(proxy, paused ? "accept_paused" : "accept_resumed", 0, 0,
                    0, 0, 0);
  }
  if (paused || rn_timer_is_active(&proxy->accept_timer)) return;
  if (!proxy->accept_waited) {
    rn_proxy_fault_t *slow = rn__proxy_find(proxy, RN_FAULT_SLOW_ACCEPT);
    if (slow != NULL && rn__proxy_toxic(proxy, slow, proxy->next_conn + 1)) {
      double d = rn__proxy_delay(&slow->o, &proxy->rng);
      proxy->accept_waited = 1;
      rn__proxy_event(proxy, "accept_delay", proxy->next_conn + 1, slow->id,
                      0, (uint64_t)d, 0);
      rn_timer_start(&proxy->accept_timer, (uint64_t)d);
      return;
    }
  }
  proxy->accept_waited = 0;
  proxy->accept_held = 0;
  proxy_accept(proxy);
}

static void proxy_on_accept_timer(rn_timer_t *timer) {
  proxy_accept_next(timer->data);
}

static void proxy_on_connection(uv_stream_t *listener, int status) {
  rn_proxy_t *proxy = listener->data;
  if (status < 0 || proxy->closing) return;
  proxy->accept_held = 1;
  proxy_accept_next(proxy);
}

static void listener_on_close(uv_handle_t *handle) {
  rn_proxy_t *proxy = handle->data;
  free(handle);
  proxy->listeners--;
  proxy_maybe_finish(proxy);
}

static int proxy_listen(rn_proxy_t *proxy) {
  uv_tcp_t *l = malloc(sizeof(*l));
  int len = (int)sizeof(proxy->listen_addr);
  int err;

  if (l == NULL) return UV_ENOMEM;
  uv_tcp_init(proxy->loop->uv, l);
  l->data = proxy;
  proxy->listeners++;
  err = uv_tcp_bind(l, (const struct sockaddr *)&proxy->listen_addr, 0);
  if (err == 0)
    err = uv_listen((uv_stream_t *)l, proxy->options.backlog,
                    proxy_on_connection);
  /* Remember the port picked for port 0: listening again after a refuse
   * fault must come back on the same one. */
  if (err == 0)
    err = uv_tcp_getsockname(l, (struct sockaddr *)&proxy->listen_addr, &len);
  if (err) {
    uv_close((uv_handle_t *)l, listener_on_close);
    return err;
  }
  proxy->listener = l;
  return 0;
}

static void proxy_unlisten(rn_proxy_t *proxy) {
  if (proxy->listener == NULL) return;
  /* libuv closes a socket it was holding for us with the listener. */
  uv_close((uv_handle_t *)proxy->listener, listener_on_close);
  proxy->listener = NULL;
  proxy->accept_held = 0;
  proxy->accept_waited = 0;
  rn_timer_stop(&proxy->accept_timer);
}

void rn__proxy_update_listener(rn_proxy_t *proxy) {
  int refused;
  if (proxy->closing) return;
  refused = rn__proxy_find(proxy, RN_FAULT_REFUSE) != NULL;
  if (refused && proxy->listener != NULL) {
    proxy_unlisten(proxy);
    rn__proxy_event(proxy, "refuse", 0, 0, 0, 0, 0);
  } else if (!refused && proxy->listener == NULL) {
    int err = proxy_listen(proxy);
    rn__proxy_event(proxy, err ? "listen_error" : "listen", 0, 0, 0, 0, err);
  }
  proxy_accept_next(proxy);
}

/* ------------------------------------------------------------------------ */
/* The proxy                                                                  */

/* Literal addresses only (and "localhost"): a harness names loopback
 * ports, and resolving a name per connection would add a delay of its
 * own to every fault measured. */
static int proxy_sockaddr(const char *text, struct sockaddr_storage *ss) {
  rn_endpoint_t ep;
  const char *host;
  int err;

  if (text == NULL) return UV_EINVAL;
  err = rn_endpoint_parse(&ep, text, strlen(text));
  if (err) return err;
  if (ep.kind != RN_ENDPOINT_TCP) return UV_EINVAL;
  host = strcmp(ep.address, "localhost") == 0 ? "127.0.0.1" : ep.address;
  memset(ss, 0, sizeof(*ss));
  if (uv_ip4_addr(host, ep.port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, ep.port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return UV_EINVAL;
}

static void proxy_free(rn_proxy_t *proxy) {
  rn_loop_t *loop = proxy->loop;
  rn_timer_stop(&proxy->event_timer);
  rn_timer_stop(&proxy->finish_timer);
  rn_timer_stop(&proxy->accept_timer);
  rn_buf_free(&proxy->events);
  free(proxy);
  rn__loop_object_remove(loop);
}

static void proxy_finish(rn_timer_t *timer) {
  rn_proxy_t *proxy = timer->data;
  if (proxy->options.on_event != NULL) proxy_deliver_events(proxy);
  if (proxy->close_cb != NULL) proxy->close_cb(proxy);
  proxy_free(proxy);
}

static void proxy_maybe_finish(rn_proxy_t *proxy) {
  if (!proxy->closing || proxy->listeners != 0 || proxy->conn_count != 0 ||
      proxy->finishing)
    return;
  proxy->finishing = 1;
  rn_timer_start(&proxy->finish_timer, 0);
}

int rn_proxy_new(rn_loop_t *loop, const rn_proxy_options_t *options,
                 rn_proxy_t **out) {
  rn_proxy_t *proxy;
  int err;

  *out = NULL;
  if (options->backlog <= 0) return UV_EINVAL;
  proxy = calloc(1, sizeof(*proxy));
  if (proxy == NULL) return UV_ENOMEM;
  err = proxy_sockaddr(options->listen, &proxy->listen_addr);
  if (err == 0) err = proxy_sockaddr(options->upstream, &proxy->upstream_addr);
  if (err == 0 && options->codec.protocol != 0) {
    err = rn_codec_init(&proxy->codec, &options->codec);
    proxy->framed = 1;
  }
  if (err) {
    free(proxy);
    return err;
  }
  /* SIGPIPE, which resetting sockets would raise, is ignored by
   * rn_loop_new for every resilnet object. */
  proxy->data = options->data;
  proxy->loop = loop;
  proxy->options = *options;
  proxy->options.listen = NULL;
  proxy->options.upstream = NULL;
  proxy->options.codec.delimiter = NULL; /* copied into proxy->codec */
  proxy->rng = rn__proxy_mix(options->seed ^ 0x6c697374656e6572ull);
  rn_list_init(&proxy->conns);
  rn_list_init(&proxy->faults);
  rn_list_init(&proxy->rules);
  rn_buf_init(&proxy->events);
  rn_timer_init(loop, &proxy->event_timer, proxy_on_event_timer);
  proxy->event_timer.data = proxy;
  rn_timer_init(loop, &proxy->accept_timer, proxy_on_accept_timer);
  proxy->accept_timer.data = proxy;
  rn_timer_init(loop, &proxy->finish_timer, proxy_finish);
  proxy->finish_timer.data = proxy;
  rn__loop_object_add(loop);

  err = proxy_listen(proxy);
  if (err) {
    /* The caller gets the error now; the memory goes once the listener
     * handle has closed (with no callback: nobody is waiting). */
    proxy->closing = 1;
    proxy->options.on_event = NULL;
    proxy_maybe_finish(proxy);
    return err;
  }
  *out = proxy;
  return 0;
}

int rn_proxy_address(rn_proxy_t *proxy, char *host, size_t host_size,
                     int *port) {
  const struct sockaddr_storage *ss = &proxy->listen_addr;
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    *port = ntohs(sin6->sin6_port);
    return uv_ip6_name(sin6, host, host_size);
  }
  *port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
  return uv_ip4_name((const struct sockaddr_in *)ss, host, host_size);
}

void rn_proxy_reset_all(rn_proxy_t *proxy) {
  rn_list_t *pos, *tmp;
  rn_list_foreach_safe(pos, tmp, &proxy->conns) {
    rn__proxy_conn_close(RN_CONTAINER_OF(pos, rn_proxy_conn_t, node), 1, 0);
  }
}

void rn_proxy_close(rn_proxy_t *proxy, rn_proxy_close_cb cb) {
  rn_list_t *pos, *tmp;
  if (proxy->closing) return;
  proxy->closing = 1;
  proxy->close_cb = cb;
  proxy_unlisten(proxy);
  rn_list_foreach_safe(pos, tmp, &proxy->conns) {
    rn__proxy_conn_close(RN_CONTAINER_OF(pos, rn_proxy_conn_t, node), 0, 0);
  }
  /* Closing connections no longer look at their faults. */
  while (!rn_list_empty(&proxy->faults)) {
    rn_proxy_fault_t *f =
        RN_CONTAINER_OF(proxy->faults.next, rn_proxy_fault_t, node);
    rn_list_remove(&f->node);
    free(f);
  }
  rn__proxy_rule_clear(proxy);
  proxy_maybe_finish(proxy);
}

/* A server for the framed protocols: accept, read, hand requests to the
 * application, write replies, close. It bounds what it holds: requests
 * being handled (max_concurrent), reply bytes a slow client has not read
 * (then the connection stops being read), idle connections. The rnp
 * protocol's own work lives in server_rnp.c; dedupe in dedupe.c. */
#include "server.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RN_SERVER_READ_CHUNK 65536

static void server_conn_process(rn_server_conn_t *conn);
static rn_request_t *server_request_new(rn_server_conn_t *conn, int slot);

/* Clients' heartbeats: a RESP server answers PING itself, in order, so that
 * applications see only their own requests. Commands are case-insensitive,
 * as in Redis ("ping" typed in telnet). */
static int server_is_resp_ping(const rn_server_t *server, const char *body,
                               size_t len) {
  static const char ping[] = "*1\r\n$4\r\nPING\r\n";
  size_t i;
  if (server->codec.protocol != RN_PROTOCOL_RESP || len != sizeof(ping) - 1)
    return 0;
  for (i = 0; i < len; i++) {
    int c = (unsigned char)body[i];
    if (ping[i] >= 'A' && ping[i] <= 'Z') c = toupper(c);
    if (c != ping[i]) return 0;
  }
  return 1;
}

static int server_is_rnp(const rn_server_t *server) {
  return server->codec.protocol == RN_PROTOCOL_RNP;
}

void rn_server_options_init(rn_server_options_t *o) {
  memset(o, 0, sizeof(*o));
  o->codec.protocol = RN_PROTOCOL_RESP;
  o->backlog = 511;
  o->max_concurrent = 256;
  o->queue = 64;
  o->retry_after = 100;
  o->dedupe_window = 300000;
  o->dedupe_capacity = 100000;
}

void *rn_server_data(rn_server_t *server) { return server->data; }

const rn_codec_t *rn_server_codec(rn_server_t *server) {
  return &server->codec;
}

rn_server_t *rn_request_server(rn_request_t *request) {
  return request->server;
}

void rn_server_stats(rn_server_t *server, rn_server_stats_t *stats) {
  *stats = server->stats;
  stats->open = server->conn_count;
  stats->active = server->active;
  stats->queued = server->queued;
}

void rn__server_event(rn_server_t *server, rn_server_event_type_t type,
                      uint64_t id, int error) {
  rn_server_event_t ev;
  if (server->options.on_event == NULL) return;
  memset(&ev, 0, sizeof(ev));
  ev.type = type;
  ev.id = id;
  ev.error = error;
  ev.active = server->active;
  ev.queued = server->queued;
  server->options.on_event(server, &ev);
}

/* ------------------------------------------------------------------------ */
/* Flow control                                                               */

size_t rn__server_conn_backlog(const rn_server_conn_t *conn) {
  return conn->out.len + (conn->writing ? conn->wbuf.len : 0);
}

static void conn_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  rn_server_conn_t *conn = handle->data;
  (void)suggested;
  rn__buf_read_space(&conn->rbuf, RN_SERVER_READ_CHUNK, buf);
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread,
                         const uv_buf_t *buf);

/* Reads only while the server has room for requests and the client keeps
 * up with its replies: otherwise data stays in the kernel and TCP pushes
 * back on the client. rnp does not stop for max_concurrent (it queues and
 * then refuses, explicitly). After our FIN, reading only waits for the
 * client's. */
void rn__server_conn_update_reading(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  int rnp = server_is_rnp(server);
  int full = !rnp && server->active >= server->options.max_concurrent;
  int want;

  if (conn->closing || conn->eof)
    want = 0;
  else if (conn->shut || conn->broken)
    want = 1; /* discarding */
  else if (conn->finishing && !rnp)
    want = 0; /* draining: no new requests */
  else if (rnp)
    want = !conn->held_back &&
           rn__server_conn_backlog(conn) < RN_SERVER_HIGH_WATER;
  else
    want = !conn->paused && !full &&
           rn__server_conn_backlog(conn) < RN_SERVER_HIGH_WATER;

  /* Stopped only because the server is full: resume it when there is
   * room, like a connection holding buffered frames back. */
  if (full && !conn->closing && !conn->eof && !conn->paused &&
      !conn->finishing) {
    conn->paused = 1;
    server->paused++;
  }

  if (want && !conn->reading) {
    if (uv_read_start(&conn->h.stream, conn_alloc, conn_on_read) == 0)
      conn->reading = 1;
  } else if (!want && conn->reading) {
    uv_read_stop(&conn->h.stream);
    conn->reading = 0;
  }
}

/* Processing runs the application, which may close connections or the
 * server: after each one, walk again from the head. Every connection
 * processed is no longer paused (or paused again only when the server is
 * full, which stops the walk), so this ends. */
static void server_resume(rn_timer_t *timer) {
  rn_server_t *server = timer->data;

  if (server_is_rnp(server)) {
    rn__server_rnp_dequeue(server);
    return;
  }
  while (!server->closing &&
         server->active < server->options.max_concurrent) {
    rn_server_conn_t *found = NULL;
    rn_list_t *pos;
    for (pos = server->conns.next; pos != &server->conns; pos = pos->next) {
      rn_server_conn_t *conn = RN_CONTAINER_OF(pos, rn_server_conn_t, node);
      if (conn->paused) {
        found = conn;
        break;
      }
    }
    if (found == NULL) break;
    found->paused = 0;
    server->paused--;
    server_conn_process(found);
  }
}

void rn__server_request_release(rn_request_t *req) {
  rn_server_t *server = req->server;

  rn_list_remove(&req->node);
  rn_list_remove(&req->wait);
  free(req->reply);
  if (req->slot) {
    server->active--;
    /* Deferred: resuming may hand out requests, and this may be running
     * inside the application's own reply call. */
    if ((server->paused > 0 || server->queued > 0) &&
        !rn_timer_is_active(&server->resume_timer))
      rn_timer_start(&server->resume_timer, 0);
  }
  if (req->queued) server->queued--;
  free(req);
  server->held--;
  rn__server_maybe_finish(server);
}

/* ------------------------------------------------------------------------ */
/* Writing and finishing                                                      */

static void conn_on_write(uv_write_t *req, int status);

static void conn_on_shutdown(uv_shutdown_t *req, int status) {
  rn_server_conn_t *conn = req->data;
  if (conn->closing) return;
  if (status < 0 || conn->eof) rn__server_conn_close(conn);
}

/* The client sent all it will and has every reply: close. Or we are
 * finishing and everything is written: FIN, then wait for the client's. */
int rn__server_conn_settle(rn_server_conn_t *conn) {
  if (conn->closing) return 1;
  if (conn->shut) {
    if (conn->eof) rn__server_conn_close(conn);
    return 1;
  }
  if (!rn_list_empty(&conn->requests) || conn->writing || conn->out.len != 0)
    return 0;
  if (conn->finishing) {
    conn->shut = 1;
    if (uv_shutdown(&conn->shutdown_req, &conn->h.stream,
                    conn_on_shutdown) != 0) {
      rn__server_conn_close(conn);
      return 1;
    }
    rn_timer_start(&conn->timer, RN_SERVER_LINGER_MS);
    rn__server_conn_update_reading(conn);
    return 1;
  }
  if (conn->eof) {
    rn__server_conn_close(conn);
    return 1;
  }
  return 0;
}

void rn__server_conn_finish(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  if (conn->closing || conn->finishing) return;
  conn->finishing = 1;
  if (conn->paused) {
    conn->paused = 0;
    server->paused--;
  }
  if (!rn__server_conn_settle(conn)) rn__server_conn_update_reading(conn);
}

void rn__server_conn_write(rn_server_conn_t *conn) {
  rn_buf_t swap;
  uv_buf_t buf;

  if (conn->writing || conn->closing || conn->out.len == 0) return;
  swap = conn->wbuf;
  conn->wbuf = conn->out;
  conn->out = swap;
  conn->out.len = 0;
  buf = uv_buf_init(conn->wbuf.base, (unsigned)conn->wbuf.len);
  if (uv_write(&conn->write_req, &conn->h.stream, &buf, 1, conn_on_write)) {
    rn__server_conn_close(conn);
    return;
  }
  conn->writing = 1;
}

static void conn_on_write(uv_write_t *req, int status) {
  rn_server_conn_t *conn = req->data;
  conn->writing = 0;
  if (conn->closing) return;
  if (status < 0) {
    rn__server_conn_close(conn);
    return;
  }
  rn__server_conn_write(conn);
  if (rn__server_conn_settle(conn)) return;
  /* rnp frames left unparsed while the client was not reading. */
  if (conn->held_back &&
      rn__server_conn_backlog(conn) < RN_SERVER_HIGH_WATER) {
    conn->held_back = 0;
    server_conn_process(conn);
    return;
  }
  rn__server_conn_update_reading(conn);
}

/* Moves replies that are next in line into the output buffer. */
static int server_conn_flush_replies(rn_server_conn_t *conn) {
  while (!rn_list_empty(&conn->requests)) {
    rn_request_t *req = RN_CONTAINER_OF(conn->requests.next, rn_request_t, node);
    int err;
    if (!req->replied) break;
    err = rn_buf_append(&conn->out, req->reply, req->reply_len);
    rn__server_request_release(req);
    if (err) return err;
  }
  return 0;
}

int rn_request_reply(rn_request_t *req, const char *frame, size_t len) {
  rn_server_conn_t *conn = req->conn;
  int err;

  if (server_is_rnp(req->server))
    return rn__server_rnp_reply(req, frame, len);
  if (conn == NULL || conn->closing) {
    rn__server_request_release(req); /* nobody left to read it */
    return 0;
  }
  req->reply = malloc(len ? len : 1);
  if (req->reply == NULL) {
    rn__server_request_release(req);
    rn__server_conn_close(conn); /* its place in the reply order is lost */
    return UV_ENOMEM;
  }
  memcpy(req->reply, frame, len);
  req->reply_len = len;
  req->replied = 1;

  err = server_conn_flush_replies(conn);
  if (err) {
    rn__server_conn_close(conn);
    return err;
  }
  rn__server_conn_write(conn);
  if (!rn__server_conn_settle(conn)) rn__server_conn_update_reading(conn);
  return 0;
}

void rn_request_drop(rn_request_t *req) {
  static const char why[] = "the handler gave no reply";
  if (server_is_rnp(req->server)) {
    (void)rn__server_rnp_fail(req, RN_RNP_ERR_APPLICATION, why,
                              sizeof(why) - 1, 0);
    return;
  }
  if (req->conn != NULL) rn__server_conn_close(req->conn);
  rn__server_request_release(req);
}

int rn_request_fail(rn_request_t *req, unsigned code, const char *message,
                    size_t len, uint64_t retry_after_ms) {
  rn_buf_t out;
  size_t i;
  int err;

  switch (req->server->codec.protocol) {
  case RN_PROTOCOL_RNP:
    return rn__server_rnp_fail(req, code, message, len, retry_after_ms);
  case RN_PROTOCOL_RESP:
    rn_buf_init(&out);
    err = rn_buf_reserve(&out, len + 3);
    if (err) {
      rn_request_drop(req);
      return err;
    }
    out.base[out.len++] = '-';
    for (i = 0; i < len; i++) {
      char c = message[i];
      out.base[out.len++] = (c == '\r' || c == '\n') ? ' ' : c;
    }
    out.base[out.len++] = '\r';
    out.base[out.len++] = '\n';
    err = rn_request_reply(req, out.base, out.len);
    rn_buf_free(&out);
    return err;
  default:
    rn_request_drop(req);
    return 0;
  }
}

void rn_request_info(rn_request_t *req, rn_request_info_t *info) {
  memset(info, 0, sizeof(*info));
  if (!server_is_rnp(req->server)) return;
  info->id = req->id;
  info->idempotent = req->idempotent;
  info->key = req->key;
  info->key_len = req->key_len;
  if (req->has_deadline) {
    uint64_t now = rn_loop_now(req->server->loop);
    info->has_deadline = 1;
    info->deadline_ms = req->deadline > now ? req->deadline - now : 0;
  }
}

int rn_request_peer(rn_request_t *req, char *buf, size_t size) {
  rn_server_conn_t *conn = req->conn;
  char host[RN_ENDPOINT_ADDRESS_MAX];
  size_t len = sizeof(host);
  int port, n;

  if (conn == NULL || conn->closing) return UV_ENOTCONN;
  if (conn->server->address.kind == RN_ENDPOINT_UNIX) {
    /* Rarely asked and rarely named: no copy per connection. */
    if (uv_pipe_getpeername(&conn->h.pipe, host, &len) != 0) len = 0;
    n = snprintf(buf, size, "unix:%.*s", (int)len, host);
  } else if (conn->peer.sa.sa_family == AF_INET6) {
    if (uv_ip6_name(&conn->peer.in6, host, sizeof(host)) != 0)
      return UV_ENOTCONN;
    port = ntohs(conn->peer.in6.sin6_port);
    n = snprintf(buf, size, "[%s]:%d", host, port);
  } else if (conn->peer.sa.sa_family == AF_INET) {
    if (uv_ip4_name(&conn->peer.in, host, sizeof(host)) != 0)
      return UV_ENOTCONN;
    port = ntohs(conn->peer.in.sin_port);
    n = snprintf(buf, size, "%s:%d", host, port);
  } else {
    return UV_ENOTCONN; /* getpeername failed at accept */
  }
  if (n < 0 || (size_t)n >= size) return UV_ENOBUFS;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                    */

/* A request in conn's reply order; slot: it counts against
 * max_concurrent. NULL without memory. */
static rn_request_t *server_request_new(rn_server_conn_t *conn, int slot) {
  rn_server_t *server = conn->server;
  rn_request_t *req = calloc(1, sizeof(*req));
  if (req == NULL) return NULL;
  req->server = server;
  req->conn = conn;
  req->slot = slot ? 1 : 0;
  rn_list_init(&req->wait);
  rn_list_insert_tail(&conn->requests, &req->node);
  if (slot) server->active++;
  server->held++;
  return req;
}

/* The next frame at data, as server_resp.c's resp frame (body NULL when
 * there is nothing to hand out). */
static int server_conn_frame(rn_server_conn_t *conn, const char *data,
                             size_t len, rn_frame_t *f, const char **body,
                             char *why, size_t why_size) {
  rn_server_t *server = conn->server;
  int r;
  if (server->codec.protocol == RN_PROTOCOL_RESP)
    return rn__server_resp_frame(conn, data, len, f, body, why, why_size);
  r = rn_codec_frame(&server->codec, data, len, f);
  *body = r == 1 ? data + f->body_offset : NULL;
  return r;
}

void rn__server_conn_broken(rn_server_conn_t *conn, int error) {
  rn_server_t *server = conn->server;
  server->stats.protocol_errors++;
  conn->broken = 1;
  conn->rbuf.len = 0;
  rn__server_conn_finish(conn);
  rn__server_event(server, RN_SERVER_EVENT_PROTOCOL, 0, error);
}

/* resp answers the error in its turn, after the replies of the requests
 * before it, like Redis; line and length have no error frame. */
static void server_conn_protocol_error(rn_server_conn_t *conn, int error,
                                       const char *why) {
  if (conn->server->codec.protocol == RN_PROTOCOL_RESP) {
    rn_request_t *req = server_request_new(conn, 0);
    if (req == NULL) {
      rn__server_conn_close(conn);
      return;
    }
    (void)rn_request_fail(req, 0, why, strlen(why), 0);
    if (conn->closing) return;
  }
  rn__server_conn_broken(conn, error);
}

/* Hands out buffered frames while the server has room; keeps the rest for
 * server_resume. */
static void server_conn_process_framed(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  size_t pos = 0;

  while (pos < conn->rbuf.len && !conn->closing && !conn->finishing) {
    rn_frame_t f;
    rn_request_t *req;
    const char *body;
    char why[96];
    int r;

    if (server->active >= server->options.max_concurrent) {
      if (!conn->paused) {
        conn->paused = 1;
        server->paused++;
      }
      break;
    }
    r = server_conn_frame(conn, conn->rbuf.base + pos, conn->rbuf.len - pos,
                          &f, &body, why, sizeof(why));
    if (r == 0) break;
    if (r < 0) {
      /* cannot tell where the next frame starts */
      server_conn_protocol_error(conn, r, why);
      return;
    }
    pos += f.size;
    if (body == NULL) continue; /* nothing to run */
    req = server_request_new(conn, 1);
    if (req == NULL) {
      rn__server_conn_close(conn);
      return;
    }
    server->stats.requests++;
    if (server_is_resp_ping(server, body, f.body_len)) {
      rn_request_reply(req, "+PONG\r\n", 7);
    } else {
      server->stats.handled++;
      server->options.on_request(server, req, body, f.body_len);
    }
  }
  if (conn->closing) return;
  rn_buf_consume(&conn->rbuf, pos);
  rn__server_conn_update_reading(conn);
}

static void server_conn_process(rn_server_conn_t *conn) {
  if (server_is_rnp(conn->server))
    rn__server_rnp_process(conn);
  else
    server_conn_process_framed(conn);
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread,
                         const uv_buf_t *buf) {
  rn_server_conn_t *conn = stream->data;
  (void)buf;

  if (nread == 0) return;
  if (nread == UV_EOF) {
    /* The client sent everything it will; answer what it asked, then go. */
    conn->eof = 1;
    if (conn->paused) {
      conn->paused = 0;
      conn->server->paused--;
    }
    rn__server_conn_update_reading(conn);
    rn__server_conn_settle(conn);
    return;
  }
  if (nread < 0) {
    rn__server_conn_close(conn);
    return;
  }
  conn->last_read = rn_loop_now(conn->server->loop);
  if (conn->shut || conn->broken) {
    conn->rbuf.len = 0; /* discarding until the client's FIN */
    return;
  }
  conn->rbuf.len += (size_t)nread;
  server_conn_process(conn);
}

/* ------------------------------------------------------------------------ */
/* Connections                                                                */

static void conn_on_close(uv_handle_t *handle) {
  rn_server_conn_t *conn = handle->data;
  rn_server_t *server = conn->server;

  rn_buf_free(&conn->rbuf);
  rn_buf_free(&conn->out);
  rn_buf_free(&conn->wbuf);
  free(conn);
  server->conn_count--;
  rn__server_maybe_finish(server);
}

void rn__server_conn_close(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;

  if (conn->closing) return;
  conn->closing = 1;
  rn_timer_stop(&conn->timer);
  if (conn->paused) {
    conn->paused = 0;
    server->paused--;
  }
  rn_list_remove(&conn->node);
  if (server_is_rnp(server)) {
    rn__server_rnp_conn_closed(conn);
  } else {
    /* Requests still being handled outlive the connection; their replies
     * will be dropped. Replies already made go with it. */
    while (!rn_list_empty(&conn->requests)) {
      rn_request_t *req =
          RN_CONTAINER_OF(conn->requests.next, rn_request_t, node);
      rn_list_remove(&req->node);
      req->conn = NULL;
      if (req->replied) rn__server_request_release(req);
    }
  }
  uv_close(&conn->h.handle, conn_on_close);
}

/* idle_timeout, or the linger after our FIN ran out. */
static void conn_on_timer(rn_timer_t *timer) {
  rn_server_conn_t *conn = timer->data;
  rn_server_t *server = conn->server;
  uint64_t idle = server->options.idle_timeout;
  uint64_t now = rn_loop_now(server->loop);

  if (conn->shut || conn->finishing) {
    if (conn->shut || server->drain_over) rn__server_conn_close(conn);
    return; /* finishing: settles by itself once written */
  }
  if (!rn_list_empty(&conn->requests) || conn->writing ||
      conn->out.len != 0 || now - conn->last_read < idle) {
    uint64_t since = now - conn->last_read;
    rn_timer_start(timer, since < idle ? idle - since : idle);
    return;
  }
  if (server_is_rnp(server) && conn->hello) {
    /* The client may be sending a request right now: GOAWAY tells it
     * which ones we will not answer. */
    rn__server_rnp_goaway_conn(conn, "idle");
  } else {
    rn__server_conn_close(conn);
  }
  rn__server_event(server, RN_SERVER_EVENT_IDLE, 0, 0);
}

static void server_on_connection(uv_stream_t *listener, int status) {
  rn_server_t *server = listener->data;
  rn_server_conn_t *conn;

  if (status < 0 || server->closing || server->draining) return;
  conn = calloc(1, sizeof(*conn));
  if (conn == NULL) return; /* the client stays in the backlog */
  conn->server = server;
  rn_list_init(&conn->requests);
  conn->write_req.data = conn;
  conn->shutdown_req.data = conn;
  conn->peer_max_frame = server->codec.max_frame;
  rn_timer_init(server->loop, &conn->timer, conn_on_timer);
  conn->timer.data = conn;
  conn->last_read = rn_loop_now(server->loop);
  if (server->address.kind == RN_ENDPOINT_UNIX)
    uv_pipe_init(server->loop->uv, &conn->h.pipe, 0);
  else
    uv_tcp_init(server->loop->uv, &conn->h.tcp);
  conn->h.handle.data = conn;
  rn_list_insert_tail(&server->conns, &conn->node);
  server->conn_count++;
  if (uv_accept(listener, &conn->h.stream) != 0) {
    rn__server_conn_close(conn);
    return;
  }
  server->stats.connections++;
  if (server->address.kind == RN_ENDPOINT_TCP) {
    int len = (int)sizeof(conn->peer);
    uv_tcp_nodelay(&conn->h.tcp, 1);
    if (uv_tcp_getpeername(&conn->h.tcp, &conn->peer.sa, &len) != 0)
      conn->peer.sa.sa_family = AF_UNSPEC;
  }
  if (server->options.idle_timeout > 0)
    rn_timer_start(&conn->timer, server->options.idle_timeout);
  rn__server_conn_update_reading(conn);
}

/* ------------------------------------------------------------------------ */
/* Server                                                                     */

static int server_bind(rn_server_t *server) {
  uv_loop_t *uv = server->loop->uv;
  rn_endpoint_t *a = &server->address;
  struct sockaddr_storage ss;
  const char *host = a->address;

  if (a->kind == RN_ENDPOINT_UNIX) {
    uv_pipe_init(uv, &server->listener.pipe, 0);
    server->listener_open = 1;
    return uv_pipe_bind(&server->listener.pipe, a->address);
  }
  /* Listening takes an address, not a name to look up; "localhost" is the
   * one name worth knowing. */
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  if (uv_ip4_addr(host, a->port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, a->port, (struct sockaddr_in6 *)&ss) != 0)
    return UV_EINVAL;
  uv_tcp_init(uv, &server->listener.tcp);
  server->listener_open = 1;
  return uv_tcp_bind(&server->listener.tcp, (struct sockaddr *)&ss, 0);
}

static void listener_on_close(uv_handle_t *handle) {
  rn_server_t *server = handle->data;
  server->listener_open = 0;
  rn__server_maybe_finish(server);
}

static void server_free(rn_server_t *server) {
  rn_loop_t *loop = server->loop;
  rn_timer_stop(&server->resume_timer);
  rn_timer_stop(&server->finish_timer);
  rn_timer_stop(&server->drain_timer);
  rn_timer_stop(&server->expire_timer);
  rn_buf_free(&server->inline_args);
  rn_buf_free(&server->inline_out);
  if (server->dedupe != NULL) rn__dedupe_free(server->dedupe);
  free(server);
  rn__loop_object_remove(loop);
}

/* Frees the server once the listener closed after a failed bind. */
static void listener_on_close_failed(uv_handle_t *handle) {
  server_free(handle->data);
}

static void server_stop_listening(rn_server_t *server) {
  if (server->listener_closing) return;
  server->listener_closing = 1;
  uv_close(&server->listener.handle, listener_on_close);
  /* The socket file is ours: leaving it would make the next bind fail. */
  if (server->address.kind == RN_ENDPOINT_UNIX)
    unlink(server->address.address);
}

static void server_drain_expired(rn_timer_t *timer) {
  rn_server_t *server = timer->data;
  if (server_is_rnp(server))
    rn__server_rnp_drain_over(server);
  else
    rn_server_close(server, server->close_cb);
}

int rn_server_new(rn_loop_t *loop, const rn_server_options_t *options,
                  rn_server_t **out) {
  rn_server_t *server;
  int err;

  *out = NULL;
  if (options->listen == NULL || options->on_request == NULL ||
      options->max_concurrent == 0 || options->backlog <= 0 ||
      (options->dedupe && options->dedupe_window == 0) ||
      (options->dedupe && options->dedupe_store == NULL &&
       options->dedupe_capacity == 0))
    return UV_EINVAL;
  server = calloc(1, sizeof(*server));
  if (server == NULL) return UV_ENOMEM;
  err = rn_endpoint_parse(&server->address, options->listen,
                          strlen(options->listen));
  if (err == 0) err = rn_codec_init(&server->codec, &options->codec);
  if (err) {
    free(server);
    return err;
  }
  server->data = options->data;
  server->loop = loop;
  server->options = *options;
  server->options.listen = NULL;
  rn_list_init(&server->conns);
  rn_list_init(&server->queue);
  rn_timer_init(loop, &server->resume_timer, server_resume);
  server->resume_timer.data = server;
  rn_timer_init(loop, &server->finish_timer, NULL);
  server->finish_timer.data = server;
  rn_timer_init(loop, &server->drain_timer, server_drain_expired);
  server->drain_timer.data = server;
  rn_timer_init(loop, &server->expire_timer, NULL);
  server->expire_timer.data = server;
  rn__loop_object_add(loop);

  err = server_bind(server);
  server->listener.handle.data = server;
  if (err == 0)
    err = uv_listen(&server->listener.stream, options->backlog,
                    server_on_connection);
  /* Last, so that a failure before leaves the caller its dedupe store. */
  if (err == 0 && server_is_rnp(server)) err = rn__server_rnp_init(server);
  if (err) {
    /* The caller gets the error now; our memory goes with the handle. */
    if (server->listener_open)
      uv_close(&server->listener.handle, listener_on_close_failed);
    else
      server_free(server);
    return err;
  }
  *out = server;
  return 0;
}

int rn_server_address(rn_server_t *server, char *host, size_t host_size,
                      int *port) {
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);
  int err;

  if (server->address.kind == RN_ENDPOINT_UNIX) {
    if (strlen(server->address.address) + 1 > host_size) return UV_ENOBUFS;
    strcpy(host, server->address.address);
    *port = 0;
    return 0;
  }
  err = uv_tcp_getsockname(&server->listener.tcp, (struct sockaddr *)&ss,
                           &len);
  if (err) return err;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    *port = ntohs(sin6->sin6_port);
    return uv_ip6_name(sin6, host, host_size);
  }
  *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return uv_ip4_name((struct sockaddr_in *)&ss, host, host_size);
}

static void server_finish(rn_timer_t *timer) {
  rn_server_t *server = timer->data;
  if (server->close_cb) server->close_cb(server);
  server_free(server);
}

void rn__server_maybe_finish(rn_server_t *server) {
  if ((!server->closing && !server->draining) || server->listener_open ||
      server->conn_count != 0 || server->held != 0 || server->finishing ||
      (server->dedupe != NULL && rn__dedupe_busy(server->dedupe)))
    return;
  server->finishing = 1;
  server->finish_timer.cb = server_finish;
  rn_timer_start(&server->finish_timer, 0);
}

void rn_server_close(rn_server_t *server, rn_server_close_cb cb) {
  if (server->closing) return;
  server->closing = 1;
  server->close_cb = cb;
  rn_timer_stop(&server->drain_timer);
  server_stop_listening(server);
  while (!rn_list_empty(&server->conns))
    rn__server_conn_close(
        RN_CONTAINER_OF(server->conns.next, rn_server_conn_t, node));
  rn__server_maybe_finish(server);
}

void rn_server_drain(rn_server_t *server, uint64_t drain_ms,
                     rn_server_close_cb cb) {
  rn_list_t *pos, *tmp;

  if (server->closing || server->draining) return;
  server->draining = 1;
  server->close_cb = cb;
  server_stop_listening(server);
  rn_timer_start(&server->drain_timer, drain_ms);
  if (server_is_rnp(server)) {
    rn__server_rnp_goaway(server);
  } else {
    rn_list_foreach_safe(pos, tmp, &server->conns) {
      rn__server_conn_finish(RN_CONTAINER_OF(pos, rn_server_conn_t, node));
    }
  }
  if (!server->closing) rn__server_maybe_finish(server);
}

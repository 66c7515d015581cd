/* A server for the framed protocols: accept, frame requests, hand each to
 * the application, and send replies back in request order. It bounds what
 * it holds: requests being handled (max_concurrent) and reply bytes a slow
 * client has not read (then the connection stops being read). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RN_SERVER_READ_CHUNK 65536
/* Reply bytes queued for one client before its requests stop being read. */
#define RN_SERVER_HIGH_WATER (1024 * 1024)

typedef struct rn_server_conn_s rn_server_conn_t;

struct rn_server_s {
  void *data;
  rn_loop_t *loop;
  rn_codec_t codec;
  rn_server_options_t options;
  rn_endpoint_t address;
  rn_stream_handle_t listener;
  rn_list_t conns;
  unsigned conn_count;
  unsigned active;   /* requests handed out and not yet released */
  unsigned paused;   /* connections holding frames back for max_concurrent */
  rn_timer_t resume_timer;
  rn_timer_t finish_timer;
  rn_server_close_cb close_cb;
  unsigned closing : 1;
  unsigned listener_open : 1;
  unsigned finishing : 1;
};

struct rn_server_conn_s {
  rn_list_t node;
  rn_server_t *server;
  rn_stream_handle_t h;
  uv_write_t write_req;
  rn_buf_t rbuf;
  rn_buf_t out;  /* replies ready, waiting for the write in flight */
  rn_buf_t wbuf; /* the write in flight */
  rn_list_t requests; /* in arrival order, until their reply is queued */
  unsigned writing : 1;
  unsigned reading : 1;
  unsigned closing : 1;
  unsigned eof : 1;
  unsigned paused : 1;
};

struct rn_request_s {
  rn_list_t node;
  rn_server_t *server;
  rn_server_conn_t *conn; /* NULL once the connection is gone */
  char *reply;
  size_t reply_len;
  unsigned replied : 1;
};

static void server_conn_close(rn_server_conn_t *conn);

/* Clients' heartbeats: a RESP server answers PING itself, in order, so that
 * applications see only their own requests. */
static int server_is_resp_ping(const rn_server_t *server, const char *body,
                               size_t len) {
  static const char ping[] = "*1\r\n$4\r\nPING\r\n";
  return server->codec.protocol == RN_PROTOCOL_RESP &&
         len == sizeof(ping) - 1 && memcmp(body, ping, len) == 0;
}
static void server_conn_process(rn_server_conn_t *conn);
static void server_maybe_finish(rn_server_t *server);

void rn_server_options_init(rn_server_options_t *o) {
  memset(o, 0, sizeof(*o));
  o->codec.protocol = RN_PROTOCOL_RESP;
  o->backlog = 511;
  o->max_concurrent = 256;
}

void *rn_server_data(rn_server_t *server) { return server->data; }

const rn_codec_t *rn_server_codec(rn_server_t *server) {
  return &server->codec;
}

rn_server_t *rn_request_server(rn_request_t *request) {
  return request->server;
}

/* ------------------------------------------------------------------------ */
/* Flow control                                                               */

static size_t server_conn_backlog(const rn_server_conn_t *conn) {
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
 * back on the client. */
static void server_conn_update_reading(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  int full = server->active >= server->options.max_concurrent;
  int want = !conn->closing && !conn->eof && !conn->paused && !full &&
             server_conn_backlog(conn) < RN_SERVER_HIGH_WATER;

  /* Stopped only because the server is full: resume it when there is
   * room, like a connection holding buffered frames back. */
  if (full && !conn->closing && !conn->eof && !conn->paused) {
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

static void request_release(rn_request_t *req) {
  rn_server_t *server = req->server;

  rn_list_remove(&req->node);
  free(req->reply);
  free(req);
  server->active--;
  /* Deferred: resuming may hand out requests, and this may be running
   * inside the application's own reply call. */
  if (server->paused > 0 && !rn_timer_is_active(&server->resume_timer))
    rn_timer_start(&server->resume_timer, 0);
  server_maybe_finish(server);
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                    */

static void conn_on_write(uv_write_t *req, int status);

/* The client sent all it will and has every reply: close. 1 if closed. */
static int server_conn_finished(rn_server_conn_t *conn) {
  if (!conn->eof || conn->closing || !rn_list_empty(&conn->requests) ||
      conn->writing || conn->out.len != 0)
    return 0;
  server_conn_close(conn);
  return 1;
}

static void server_conn_write(rn_server_conn_t *conn) {
  rn_buf_t swap;
  uv_buf_t buf;

  if (conn->writing || conn->closing || conn->out.len == 0) return;
  swap = conn->wbuf;
  conn->wbuf = conn->out;
  conn->out = swap;
  conn->out.len = 0;
  buf = uv_buf_init(conn->wbuf.base, (unsigned)conn->wbuf.len);
  if (uv_write(&conn->write_req, &conn->h.stream, &buf, 1, conn_on_write)) {
    server_conn_close(conn);
    return;
  }
  conn->writing = 1;
}

static void conn_on_write(uv_write_t *req, int status) {
  rn_server_conn_t *conn = req->data;
  conn->writing = 0;
  if (status < 0) {
    server_conn_close(conn);
    return;
  }
  server_conn_write(conn);
  if (server_conn_finished(conn)) return;
  server_conn_update_reading(conn);
}

/* Moves replies that are next in line into the output buffer. */
static int server_conn_flush_replies(rn_server_conn_t *conn) {
  while (!rn_list_empty(&conn->requests)) {
    rn_request_t *req = RN_CONTAINER_OF(conn->requests.next, rn_request_t, node);
    int err;
    if (!req->replied) break;
    err = rn_buf_append(&conn->out, req->reply, req->reply_len);
    request_release(req);
    if (err) return err;
  }
  return 0;
}

int rn_request_reply(rn_request_t *req, const char *frame, size_t len) {
  rn_server_conn_t *conn = req->conn;
  int err;

  if (conn == NULL || conn->closing) {
    request_release(req); /* nobody left to read it */
    return 0;
  }
  req->reply = malloc(len ? len : 1);
  if (req->reply == NULL) {
    request_release(req);
    server_conn_close(conn); /* its place in the reply order is lost */
    return UV_ENOMEM;
  }
  memcpy(req->reply, frame, len);
  req->reply_len = len;
  req->replied = 1;

  err = server_conn_flush_replies(conn);
  if (err) {
    server_conn_close(conn);
    return err;
  }
  server_conn_write(conn);
  if (!conn->closing && !server_conn_finished(conn))
    server_conn_update_reading(conn);
  return 0;
}

void rn_request_drop(rn_request_t *req) {
  if (req->conn != NULL) server_conn_close(req->conn);
  request_release(req);
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                    */

/* Hands out buffered frames while the server has room; keeps the rest for
 * server_resume. */
static void server_conn_process(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  size_t pos = 0;

  while (pos < conn->rbuf.len && !conn->closing) {
    rn_frame_t f;
    rn_request_t *req;
    int r;

    if (server->active >= server->options.max_concurrent) {
      if (!conn->paused) {
        conn->paused = 1;
        server->paused++;
      }
      break;
    }
    r = rn_codec_frame(&server->codec, conn->rbuf.base + pos,
                       conn->rbuf.len - pos, &f);
    if (r == 0) break;
    if (r < 0) {
      server_conn_close(conn); /* cannot tell where the next frame starts */
      return;
    }
    req = calloc(1, sizeof(*req));
    if (req == NULL) {
      server_conn_close(conn);
      return;
    }
    req->server = server;
    req->conn = conn;
    rn_list_insert_tail(&conn->requests, &req->node);
    server->active++;
    if (server_is_resp_ping(server, conn->rbuf.base + pos + f.body_offset,
                            f.body_len))
      rn_request_reply(req, "+PONG\r\n", 7);
    else
      server->options.on_request(server, req,
                                 conn->rbuf.base + pos + f.body_offset,
                                 f.body_len);
    pos += f.size;
  }
  if (conn->closing) return;
  rn_buf_consume(&conn->rbuf, pos);
  server_conn_update_reading(conn);
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
    server_conn_update_reading(conn);
    server_conn_finished(conn);
    return;
  }
  if (nread < 0) {
    server_conn_close(conn);
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
  server_maybe_finish(server);
}

static void server_conn_close(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;

  if (conn->closing) return;
  conn->closing = 1;
  if (conn->paused) {
    conn->paused = 0;
    server->paused--;
  }
  rn_list_remove(&conn->node);
  /* Requests still being handled outlive the connection; their replies
   * will be dropped. Replies already made go with it. */
  while (!rn_list_empty(&conn->requests)) {
    rn_request_t *req = RN_CONTAINER_OF(conn->requests.next, rn_request_t, node);
    rn_list_remove(&req->node);
    req->conn = NULL;
    if (req->replied) request_release(req);
  }
  uv_close(&conn->h.handle, conn_on_close);
}

static void server_on_connection(uv_stream_t *listener, int status) {
  rn_server_t *server = listener->data;
  rn_server_conn_t *conn;

  if (status < 0 || server->closing) return;
  conn = calloc(1, sizeof(*conn));
  if (conn == NULL) return; /* the client stays in the backlog */
  conn->server = server;
  rn_list_init(&conn->requests);
  conn->write_req.data = conn;
  if (server->address.kind == RN_ENDPOINT_UNIX)
    uv_pipe_init(server->loop->uv, &conn->h.pipe, 0);
  else
    uv_tcp_init(server->loop->uv, &conn->h.tcp);
  conn->h.handle.data = conn;
  rn_list_insert_tail(&server->conns, &conn->node);
  server->conn_count++;
  if (uv_accept(listener, &conn->h.stream) != 0) {
    server_conn_close(conn);
    return;
  }
  if (server->address.kind == RN_ENDPOINT_TCP)
    uv_tcp_nodelay(&conn->h.tcp, 1);
  server_conn_update_reading(conn);
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
  server_maybe_finish(server);
}

static void server_free(rn_server_t *server) {
  rn_loop_t *loop = server->loop;
  rn_timer_stop(&server->resume_timer);
  rn_timer_stop(&server->finish_timer);
  free(server);
  rn__loop_object_remove(loop);
}

/* Frees the server once the listener closed after a failed bind. */
static void listener_on_close_failed(uv_handle_t *handle) {
  server_free(handle->data);
}

int rn_server_new(rn_loop_t *loop, const rn_server_options_t *options,
                  rn_server_t **out) {
  rn_server_t *server;
  int err;

  *out = NULL;
  if (options->listen == NULL || options->on_request == NULL ||
      options->max_concurrent == 0 || options->backlog <= 0)
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
  rn_timer_init(loop, &server->resume_timer, server_resume);
  server->resume_timer.data = server;
  rn_timer_init(loop, &server->finish_timer, NULL);
  server->finish_timer.data = server;
  rn__loop_object_add(loop);

  err = server_bind(server);
  server->listener.handle.data = server;
  if (err == 0)
    err = uv_listen(&server->listener.stream, options->backlog,
                    server_on_connection);
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

static void server_maybe_finish(rn_server_t *server) {
  if (!server->closing || server->listener_open || server->conn_count != 0 ||
      server->active != 0 || server->finishing)
    return;
  server->finishing = 1;
  server->finish_timer.cb = server_finish;
  rn_timer_start(&server->finish_timer, 0);
}

void rn_server_close(rn_server_t *server, rn_server_close_cb cb) {
  if (server->closing) return;
  server->closing = 1;
  server->close_cb = cb;
  uv_close(&server->listener.handle, listener_on_close);
  /* The socket file is ours: leaving it would make the next bind fail. */
  if (server->address.kind == RN_ENDPOINT_UNIX)
    unlink(server->address.address);
  while (!rn_list_empty(&server->conns))
    server_conn_close(
        RN_CONTAINER_OF(server->conns.next, rn_server_conn_t, node));
  server_maybe_finish(server);
}

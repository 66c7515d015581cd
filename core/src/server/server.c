/* A server for the framed protocols: accept, read, hand requests to the
 * application, write replies, close. It bounds what it holds: requests
 * being handled (max_concurrent), reply bytes a slow client has not read
 * (then the connection stops being read), idle connections. The rnp
 * protocol's own work lives in server/rnp.c; dedupe in dedupe.c. */
#include "server.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#define RN_SERVER_READ_CHUNK 65536

static void server_conn_process(rn_server_conn_t *conn);
static void conn_timer_arm(rn_server_conn_t *conn);
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
  o->retry_after_ms = 100;
  o->dedupe.window_ms = 300000;
  o->dedupe.capacity = 100000;
  o->codec.max_frame = RN_SERVER_DEFAULT_MAX_FRAME;
  o->idle_timeout_ms = RN_SERVER_DEFAULT_IDLE_TIMEOUT;
  o->frame_timeout_ms = RN_SERVER_DEFAULT_FRAME_TIMEOUT;
  o->input_budget = RN_SERVER_DEFAULT_BUDGET;
  o->output_budget = RN_SERVER_DEFAULT_BUDGET;
  o->max_elements = RN_SERVER_DEFAULT_MAX_ELEMENTS;
  o->max_pipeline = RN_SERVER_DEFAULT_MAX_PIPELINE;
  o->write_timeout_ms = RN_SERVER_DEFAULT_WRITE_TIMEOUT;
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
  stats->buffered_in = server->buffered_in;
  stats->buffered_out = server->buffered_out;
}

void rn__server_event_detail(rn_server_t *server, rn_server_event_type_t type,
                             uint64_t id, int error, const char *detail) {
  rn_server_event_t ev;
  if (server->options.on_event == NULL) return;
  memset(&ev, 0, sizeof(ev));
  ev.type = type;
  ev.id = id;
  ev.error = error;
  ev.active = server->active;
  ev.queued = server->queued;
  ev.detail = detail;
  server->options.on_event(server, &ev);
}

void rn__server_event(rn_server_t *server, rn_server_event_type_t type,
                      uint64_t id, int error) {
  rn__server_event_detail(server, type, id, error, NULL);
}

/* ------------------------------------------------------------------------ */
/* Flow control                                                               */

size_t rn__server_conn_backlog(const rn_server_conn_t *conn) {
  return conn->out.len + (conn->writing ? conn->wbuf.len : 0) +
         conn->pending_out;
}

/* The server's totals follow each connection's own numbers; a closing
 * connection counts for nothing. */
static size_t conn_account_out(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  size_t b = conn->closing ? 0 : rn__server_conn_backlog(conn);
  server->buffered_out = server->buffered_out - conn->accounted_out + b;
  conn->accounted_out = b;
  return b;
}

static void conn_account_in(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  size_t b = conn->closing ? 0 : conn->rbuf.cap;
  server->buffered_in = server->buffered_in - conn->accounted_in + b;
  conn->accounted_in = b;
}

/* Half the output budget is where the server stops taking requests from
 * connections with replies queued; the other half is for the replies of
 * requests already taken, before the budget closes anyone. */
static int conn_output_full(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  size_t b = conn_account_out(conn);
  return b >= RN_SERVER_HIGH_WATER ||
         (b > 0 && server->buffered_out >= server->options.output_budget / 2);
}

/* Replies still being made count too: without a bound on them, a client
 * pipelining requests to a handler that waits has them all taken before
 * the first reply exists, and their replies pile up past every mark. */
static int conn_full(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  return conn_output_full(conn) ||
         (!server_is_rnp(server) &&
          conn->handling >= server->options.max_pipeline);
}

/* Past output_budget, reached by replies of requests taken before the
 * hold (or by a connection with nothing queued making one): the
 * connections holding the most go at once, their replies dropped; they
 * are the clients not reading. Like the input budget, until under. */
static void server_shed_output(rn_server_t *server) {
  while (server->buffered_out > server->options.output_budget &&
         !server->closing) {
    rn_server_conn_t *worst = NULL;
    rn_list_t *pos;
    for (pos = server->conns.next; pos != &server->conns; pos = pos->next) {
      rn_server_conn_t *c = RN_CONTAINER_OF(pos, rn_server_conn_t, node);
      if (c->closing || c->accounted_out == 0) continue;
      if (worst == NULL || c->accounted_out > worst->accounted_out)
        worst = c;
    }
    if (worst == NULL) break;
    server->stats.budget_refused++;
    rn__server_conn_close(worst);
    rn__server_event(server, RN_SERVER_EVENT_BUDGET, 0, 0);
  }
}

void rn__server_conn_output(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  conn_account_out(conn);
  if (server->buffered_out > server->options.output_budget)
    server_shed_output(server);
}

int rn__server_conn_hold(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  if (!conn_full(conn)) return 0;
  if (!conn->held_back) {
    conn->held_back = 1;
    server->stats.backlogged++;
    rn__server_event(server, RN_SERVER_EVENT_BACKLOG, 0, 0);
  }
  return 1;
}

/* Every read lands in the server's one scratch buffer (libuv reads one
 * stream at a time, and frames are handed out before the callback
 * returns); only what is left unparsed is copied to the connection. */
static void conn_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  rn_server_conn_t *conn = handle->data;
  rn_server_t *server = conn->server;
  (void)suggested;
  if (server->scratch == NULL) server->scratch = malloc(RN_SERVER_READ_CHUNK);
  *buf = uv_buf_init(server->scratch,
                     server->scratch != NULL ? RN_SERVER_READ_CHUNK : 0);
}

/* After a large frame, the connection gives its buffer back. Only when a
 * frame was taken out of it: a frame still growing keeps its doubling
 * buffer, or each read would copy it whole. */
static void conn_shrink(rn_server_conn_t *conn, int consumed) {
  rn_buf_t *b = &conn->rbuf;
  if (b->len == 0) {
    rn_buf_free(b);
  } else if (consumed && b->cap > RN_SERVER_READ_CHUNK && b->cap / 4 > b->len) {
    char *base = realloc(b->base, b->len);
    if (base != NULL) {
      b->base = base;
      b->cap = b->len;
    }
  }
}

/* Which of two connections the input budget refuses first: the one
 * holding more; at equal (buffers double, so equal is common) the one
 * whose frame began first: a stalled upload before one arriving now. */
static int conn_costlier(const rn_server_conn_t *a,
                         const rn_server_conn_t *b) {
  uint64_t fa = a->frame_start ? a->frame_start : UINT64_MAX;
  uint64_t fb = b->frame_start ? b->frame_start : UINT64_MAX;
  if (a->rbuf.cap != b->rbuf.cap) return a->rbuf.cap > b->rbuf.cap;
  return fa < fb;
}

/* Over input_budget: refuse the connections holding the most, until
 * under. An event handler may close the server (every connection goes). */
static void server_shed_input(rn_server_t *server) {
  static const char why[] = "the server's input budget is spent";
  while (server->buffered_in > server->options.input_budget &&
         !server->closing) {
    rn_server_conn_t *worst = NULL;
    rn_list_t *pos;
    for (pos = server->conns.next; pos != &server->conns; pos = pos->next) {
      rn_server_conn_t *c = RN_CONTAINER_OF(pos, rn_server_conn_t, node);
      if (c->closing || c->refused || c->rbuf.cap == 0) continue;
      if (worst == NULL || conn_costlier(c, worst)) worst = c;
    }
    if (worst == NULL) break;
    rn__server_conn_refuse(worst, RN_SERVER_EVENT_BUDGET, why);
  }
}

void rn__server_conn_parsed(rn_server_conn_t *conn, size_t frames,
                            int partial) {
  rn_server_t *server = conn->server;
  uint64_t now = rn_loop_now(server->loop);

  /* Only a whole frame is activity: a byte at a time keeps nothing open. */
  if (frames > 0) conn->last_frame = now;
  if (!partial)
    conn->frame_start = 0;
  else if (frames > 0 || conn->frame_start == 0)
    conn->frame_start = now;
  conn_shrink(conn, frames > 0);
  conn_account_in(conn);
  conn_timer_arm(conn);
  if (server->buffered_in > server->options.input_budget)
    server_shed_input(server);
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
  else if (conn->shut || conn->broken || conn->refused)
    want = 1; /* discarding */
  else if (conn->finishing && !rnp)
    want = 0; /* draining: no new requests */
  else
    want = !conn->paused && !full && !conn->held_back && !conn_full(conn);

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
 * full, which stops the walk), or had room for a held-back frame and took
 * it (or had none left), so this ends. */
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
      if (conn->paused || (conn->held_back && !conn_full(conn))) {
        found = conn;
        break;
      }
    }
    if (found == NULL) break;
    if (found->paused) {
      found->paused = 0;
      server->paused--;
    } else {
      found->held_back = 0;
    }
    server_conn_process(found);
  }
}

void rn__server_request_release(rn_request_t *req) {
  rn_server_t *server = req->server;
  rn_server_conn_t *conn = server_is_rnp(server) ? NULL : req->conn;

  rn_list_remove(&req->node);
  rn_list_remove(&req->wait);
  free(req->reply);
  if (req->slot) {
    server->active--;
    if (conn != NULL) conn->handling--;
    /* Deferred: resuming may hand out requests, and this may be running
     * inside the application's own reply call. */
    if ((server->paused > 0 || server->queued > 0 ||
         (conn != NULL && conn->held_back)) &&
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
    /* TLS: close_notify first (libuv sends the FIN after the writes). */
    if (conn->tls != NULL) {
      rn__server_tls_close_notify(conn);
      if (conn->closing) return 1;
    }
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

  if (conn->writing || conn->closing) return;
  if (conn->tls != NULL) {
    /* One batch, encrypted once: the replies and what TLS has to say. */
    if (conn->out.len == 0 && !rn__tls_want_write(conn->tls)) return;
    conn->wbuf.len = 0;
    if (rn__server_tls_seal(conn) != 0 || conn->wbuf.len == 0) return;
  } else {
    if (conn->out.len == 0) return;
    swap = conn->wbuf;
    conn->wbuf = conn->out;
    conn->out = swap;
    conn->out.len = 0;
  }
  buf = uv_buf_init(conn->wbuf.base, (unsigned)conn->wbuf.len);
  if (uv_write(&conn->write_req, &conn->h.stream, &buf, 1, conn_on_write)) {
    rn__server_conn_close(conn);
    return;
  }
  conn->writing = 1;
  /* write_timeout runs from here, and again from each byte taken. What
   * is unsent is asked only when the timeout is due, not on every write:
   * the first look counts as progress, so a stall is found between one
   * and two write_timeouts after the last byte taken. */
  conn->write_since = rn_loop_now(conn->server->loop);
  conn->write_queued = SIZE_MAX;
  conn_account_out(conn);
  conn_timer_arm(conn);
}

static void conn_on_write(uv_write_t *req, int status) {
  rn_server_conn_t *conn = req->data;
  conn->writing = 0;
  conn->write_since = 0;
  if (conn->closing) return;
  if (status < 0) {
    rn__server_conn_close(conn);
    return;
  }
  rn__server_conn_write(conn);
  conn_account_out(conn);
  if (rn__server_conn_settle(conn)) return;
  /* Frames left unparsed while the client was not reading. */
  if (conn->held_back && !conn_full(conn)) {
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
    conn->pending_out -= req->reply_len;
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
  conn->pending_out += len;

  err = server_conn_flush_replies(conn);
  if (err) {
    rn__server_conn_close(conn);
    return err;
  }
  rn__server_conn_write(conn);
  if (!rn__server_conn_settle(conn)) rn__server_conn_update_reading(conn);
  rn__server_conn_output(conn);
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

/* resp: a request announcing more elements than max_elements is refused
 * from its header alone, before any of them is buffered. A count has at
 * most 20 digits: a longer header is the codec's to reject. */
static int server_resp_too_many(const rn_server_t *server, const char *data,
                                size_t len) {
  rn_resp_item_t it;
  if (server->codec.protocol != RN_PROTOCOL_RESP || data[0] != '*') return 0;
  return rn_resp_item(data, RN_MIN(len, 32), &it) == 1 && it.integer > 0 &&
         (uint64_t)it.integer > server->options.max_elements;
}

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
  if (slot) {
    server->active++;
    conn->handling++;
  }
  server->held++;
  return req;
}

/* The next frame at data, as server/resp.c's resp frame (body NULL when
 * there is nothing to hand out). */
static int server_conn_frame(rn_server_conn_t *conn, const char *data,
                             size_t len, rn_frame_t *f, const char **body,
                             char *why, size_t why_size) {
  rn_server_t *server = conn->server;
  int r;
  if (server->codec.protocol == RN_PROTOCOL_RESP)
    return rn__server_resp_frame(conn, data, len, f, body, why, why_size);
  /* Resumes where the last read left the frame: O(its size) in all,
   * however thinly it arrives. */
  r = rn_codec_scan(&server->codec, &conn->scan, data, len, f);
  *body = r == 1 ? data + f->body_offset : NULL;
  return r;
}

void rn__server_conn_stop_input(rn_server_conn_t *conn) {
  conn->broken = 1;
  /* What it sent is not to be acted on: freed now, not held until the
   * close. */
  rn_buf_free(&conn->rbuf);
  rn_frame_scan_reset(&conn->scan);
  conn->frame_start = 0;
  conn_account_in(conn);
  rn__server_conn_finish(conn);
}

void rn__server_conn_broken(rn_server_conn_t *conn, int error) {
  rn_server_t *server = conn->server;
  server->stats.protocol_errors++;
  rn__server_conn_stop_input(conn);
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
  static const char too_many[] =
      "Protocol error: the request has more elements than max_elements";
  rn_server_t *server = conn->server;
  size_t pos = 0, frames = 0;
  int partial = 0;

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
    /* Replies before requests: a client that does not read what it asked
     * for gets nothing more made for it. */
    if (rn__server_conn_hold(conn)) break;
    if (server_resp_too_many(server, conn->rbuf.base + pos,
                             conn->rbuf.len - pos)) {
      rn__server_conn_refuse(conn, RN_SERVER_EVENT_MAX_ELEMENTS, too_many);
      return;
    }
    r = server_conn_frame(conn, conn->rbuf.base + pos, conn->rbuf.len - pos,
                          &f, &body, why, sizeof(why));
    if (r == 0) {
      partial = 1;
      break;
    }
    if (r == UV_E2BIG) { /* an inline command's words */
      rn__server_conn_refuse(conn, RN_SERVER_EVENT_MAX_ELEMENTS, too_many);
      return;
    }
    if (r < 0) {
      /* cannot tell where the next frame starts */
      server_conn_protocol_error(conn, r, why);
      return;
    }
    pos += f.size;
    frames++;
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
  if (conn->closing || conn->refused) return;
  rn_buf_consume(&conn->rbuf, pos);
  rn__server_conn_parsed(conn, frames, partial);
  rn__server_conn_update_reading(conn);
}

static void server_conn_process(rn_server_conn_t *conn) {
  if (server_is_rnp(conn->server))
    rn__server_rnp_process(conn);
  else
    server_conn_process_framed(conn);
}

/* The client sent everything it will; answer what it asked, then go. */
static void conn_on_eof(rn_server_conn_t *conn) {
  conn->eof = 1;
  if (conn->paused) {
    conn->paused = 0;
    conn->server->paused--;
  }
  rn__server_conn_update_reading(conn);
  rn__server_conn_settle(conn);
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread,
                         const uv_buf_t *buf) {
  rn_server_conn_t *conn = stream->data;

  if (nread == 0) return;
  if (nread == UV_EOF) {
    /* TLS: an EOF without close_notify (a killed client) is a FIN too;
     * every protocol frames its requests, so truncation shows there. */
    conn_on_eof(conn);
    return;
  }
  if (nread < 0) {
    rn__server_conn_close(conn);
    return;
  }
  if (conn->shut || conn->broken || conn->refused)
    return; /* discarding until the client's FIN */
  if (conn->tls != NULL) {
    int got = rn__server_tls_read(conn, buf->base, (size_t)nread);
    if (got < 0 || conn->closing || conn->refused) return;
    if (got & RN_TLS_GOT_DATA) server_conn_process(conn);
    if ((got & RN_TLS_GOT_CLOSE_NOTIFY) && !conn->closing) conn_on_eof(conn);
    return;
  }
  if (rn_buf_append(&conn->rbuf, buf->base, (size_t)nread) != 0) {
    rn__server_conn_close(conn);
    return;
  }
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
  rn_frame_scan_reset(&conn->scan);
  rn__server_tls_conn_free(conn);
  free(conn->identity);
  free(conn);
  server->conn_count--;
  rn__server_maybe_finish(server);
}

void rn__server_conn_close(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;

  if (conn->closing) return;
  conn->closing = 1;
  conn_account_in(conn);
  conn_account_out(conn);
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

void rn__server_conn_refuse(rn_server_conn_t *conn,
                            rn_server_event_type_t type, const char *why) {
  rn_server_t *server = conn->server;

  if (conn->closing || conn->refused) return;
  conn->refused = 1;
  conn->frame_start = 0;
  /* Its input goes now: that is what the limits protect. */
  rn_buf_free(&conn->rbuf);
  rn_frame_scan_reset(&conn->scan);
  conn_account_in(conn);
  switch (type) {
  case RN_SERVER_EVENT_FRAME_TIMEOUT: server->stats.frame_timeouts++; break;
  case RN_SERVER_EVENT_BUDGET: server->stats.budget_refused++; break;
  case RN_SERVER_EVENT_MAX_ELEMENTS: server->stats.elements_refused++; break;
  default: break;
  }
  if (rn__server_tls_handshaking(conn)) {
    /* Nothing can be said before the handshake: just go. */
    rn__server_conn_close(conn);
    rn__server_event(server, type, 0, 0);
    return;
  }
  if (server_is_rnp(server)) {
    rn__server_rnp_goaway_conn(conn, why);
  } else {
    if (server->codec.protocol == RN_PROTOCOL_RESP) {
      /* After the replies it is owed, in their order. */
      rn_request_t *req = calloc(1, sizeof(*req));
      char text[128];
      int n = snprintf(text, sizeof(text), "ERR %s", why);
      if (req != NULL) {
        req->server = server;
        req->conn = conn;
        rn_list_init(&req->wait);
        rn_list_insert_tail(&conn->requests, &req->node);
        server->held++;
        (void)rn_request_fail(req, 0, text,
                              RN_MIN((size_t)n, sizeof(text) - 1), 0);
      }
    }
    rn__server_conn_finish(conn);
  }
  /* A client that reads nothing keeps our last words from being written:
   * the linger bounds it all the same. */
  if (!conn->closing) {
    conn->timer_due = rn_loop_now(server->loop) + RN_SERVER_LINGER_MS;
    rn_timer_start(&conn->timer, RN_SERVER_LINGER_MS);
  }
  rn__server_event(server, type, 0, 0);
}

/* The earliest of the frame and idle timeouts; a timer already due sooner
 * is left alone and rearms itself when it fires. */
static void conn_timer_arm(rn_server_conn_t *conn) {
  const rn_server_options_t *o = &conn->server->options;
  uint64_t due = UINT64_MAX, now;

  if (conn->closing || conn->shut || conn->refused ||
      (conn->finishing && conn->server->drain_over))
    return; /* the linger's */
  if (!conn->finishing) { /* else settling by itself, if its client reads */
    if (o->idle_timeout_ms > 0) due = conn->last_frame + o->idle_timeout_ms;
    if (o->frame_timeout_ms > 0 && conn->frame_start != 0)
      due = RN_MIN(due, conn->frame_start + o->frame_timeout_ms);
  }
  if (o->write_timeout_ms > 0 && conn->writing && conn->write_since != 0)
    due = RN_MIN(due, conn->write_since + o->write_timeout_ms);
  if (due == UINT64_MAX) return;
  if (rn_timer_is_active(&conn->timer) && conn->timer_due <= due) return;
  now = rn_loop_now(conn->server->loop);
  conn->timer_due = due;
  rn_timer_start(&conn->timer, due > now ? due - now : 0);
}

/* Bytes of conn's replies its client has not taken: libuv's queue, and
 * where the system tells, the socket's own (a socket is writable again
 * only once much of its buffer drained, so libuv's queue alone can stand
 * still while a slow client does read). */
static size_t conn_unsent(rn_server_conn_t *conn) {
  size_t n = uv_stream_get_write_queue_size(&conn->h.stream);
#ifdef TIOCOUTQ
  uv_os_fd_t fd;
  int queued;
  if (uv_fileno(&conn->h.handle, &fd) == 0 &&
      ioctl(fd, TIOCOUTQ, &queued) == 0 && queued > 0)
    n += (size_t)queued;
#endif
  return n;
}

/* 1 when the write in flight had no byte taken for write_timeout. Bytes
 * taken since the last look are progress: the wait starts again. */
static int conn_write_stalled(rn_server_conn_t *conn, uint64_t now) {
  uint64_t limit = conn->server->options.write_timeout_ms;
  size_t left;
  if (limit == 0 || !conn->writing || conn->write_since == 0 ||
      now - conn->write_since < limit)
    return 0;
  left = conn_unsent(conn);
  if (left < conn->write_queued) {
    conn->write_queued = left;
    conn->write_since = now;
    return 0;
  }
  return 1;
}

/* frame_timeout, idle_timeout, write_timeout, or the linger after our FIN
 * or a refusal ran out. */
static void conn_on_timer(rn_timer_t *timer) {
  static const char slow[] = "the request took longer than frame_timeout "
                             "to arrive";
  rn_server_conn_t *conn = timer->data;
  rn_server_t *server = conn->server;
  const rn_server_options_t *o = &server->options;
  uint64_t now = rn_loop_now(server->loop);

  if (conn->shut || conn->refused ||
      (conn->finishing && server->drain_over)) {
    /* Past the end of a drain, the linger is all it gets. */
    rn__server_conn_close(conn);
    return;
  }
  if (conn_write_stalled(conn, now)) {
    /* Its replies go nowhere: what it holds is the server's to free. */
    server->stats.write_timeouts++;
    rn__server_conn_close(conn);
    rn__server_event(server, RN_SERVER_EVENT_WRITE_TIMEOUT, 0, 0);
    return;
  }
  if (conn->finishing) {
    conn_timer_arm(conn); /* settles by itself once written */
    return;
  }
  if (o->frame_timeout_ms > 0 && conn->frame_start != 0 &&
      now - conn->frame_start >= o->frame_timeout_ms) {
    rn__server_conn_refuse(conn, RN_SERVER_EVENT_FRAME_TIMEOUT, slow);
    return;
  }
  if (o->idle_timeout_ms > 0 && now - conn->last_frame >= o->idle_timeout_ms) {
    if (!rn_list_empty(&conn->requests) || conn->writing ||
        conn->out.len != 0 || conn->paused || conn->held_back) {
      /* Work in flight, or whole requests waiting for room, is activity. */
      conn->last_frame = now;
    } else {
      server->stats.idle_timeouts++;
      if (server_is_rnp(server) && conn->hello) {
        /* The client may be sending a request right now: GOAWAY tells it
         * which ones we will not answer. */
        rn__server_rnp_goaway_conn(conn, "idle");
      } else {
        rn__server_conn_close(conn);
      }
      rn__server_event(server, RN_SERVER_EVENT_IDLE, 0, 0);
      return;
    }
  }
  conn_timer_arm(conn);
}

/* Past max_connections: what Redis says, best effort, then the close. */
static void server_conn_turn_away(rn_server_conn_t *conn) {
  static const char full[] = "-ERR max number of clients reached\r\n";
  rn_server_t *server = conn->server;
  server->stats.connections_refused++;
  if (server->codec.protocol == RN_PROTOCOL_RESP && server->tls == NULL) {
    uv_buf_t b = uv_buf_init((char *)full, sizeof(full) - 1);
    (void)uv_try_write(&conn->h.stream, &b, 1);
  }
  rn__server_conn_close(conn);
  rn__server_event(server, RN_SERVER_EVENT_MAX_CONNECTIONS, 0, 0);
}

static void server_on_connection(uv_stream_t *listener, int status) {
  rn_server_t *server = listener->data;
  rn_server_conn_t *conn;
  int full;

  if (status < 0 || server->closing || server->draining) return;
  /* Closing ones count until closed: their descriptors are still open. */
  full = server->conn_count >= server->options.max_connections;
  conn = calloc(1, sizeof(*conn));
  if (conn == NULL) return; /* the client stays in the backlog */
  conn->server = server;
  rn_list_init(&conn->requests);
  conn->write_req.data = conn;
  conn->shutdown_req.data = conn;
  conn->peer_max_frame = server->codec.max_frame;
  rn_timer_init(server->loop, &conn->timer, conn_on_timer);
  conn->timer.data = conn;
  conn->last_frame = rn_loop_now(server->loop);
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
  if (full) {
    server_conn_turn_away(conn);
    return;
  }
  server->stats.connections++;
  if (server->tls != NULL && rn__server_tls_start(conn) != 0) {
    rn__server_conn_close(conn);
    return;
  }
  if (server->address.kind == RN_ENDPOINT_TCP) {
    int len = (int)sizeof(conn->peer);
    uv_tcp_nodelay(&conn->h.tcp, 1);
    if (uv_tcp_getpeername(&conn->h.tcp, &conn->peer.sa, &len) != 0)
      conn->peer.sa.sa_family = AF_UNSPEC;
  }
  conn_timer_arm(conn);
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
  rn_buf_free(&server->tls_plain);
  rn__tls_ctx_unref(server->tls);
  if (server->dedupe != NULL) rn__dedupe_free(server->dedupe);
  rn__server_auth_free(server->auth);
  free(server->scratch);
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

/* Three quarters of the descriptors, the rest for the application's own
 * (its handlers' pools, files), whatever else the process serves. */
static unsigned server_default_max_connections(void) {
  struct rlimit rl;
  rlim_t n = 1024; /* unreadable: the usual soft limit */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    n = rl.rlim_cur == RLIM_INFINITY ? (rlim_t)1 << 20 : rl.rlim_cur;
  n = n / 4 * 3;
  if (n > UINT32_MAX) n = UINT32_MAX;
  return n > 0 ? (unsigned)n : 1;
}

int rn_server_new(rn_loop_t *loop, const rn_server_options_t *options,
                  rn_server_t **out) {
  rn_server_t *server;
  int err;

  *out = NULL;
  if (options->listen == NULL || options->on_request == NULL ||
      options->max_concurrent == 0 || options->backlog <= 0 ||
      options->input_budget == 0 || options->output_budget == 0 ||
      options->max_elements == 0 || options->max_pipeline == 0 ||
      (options->dedupe.on && options->dedupe.window_ms == 0) ||
      (options->dedupe.on && options->dedupe.store == NULL &&
       options->dedupe.capacity == 0))
    return UV_EINVAL;
  server = calloc(1, sizeof(*server));
  if (server == NULL) return UV_ENOMEM;
  server->options = *options;
  server->options.listen = NULL;
  if (server->options.codec.max_frame == 0)
    server->options.codec.max_frame = RN_SERVER_DEFAULT_MAX_FRAME;
  if (server->options.max_connections == 0)
    server->options.max_connections = server_default_max_connections();
  err = rn_endpoint_parse(&server->address, options->listen,
                          strlen(options->listen));
  if (err == 0) err = rn_codec_init(&server->codec, &server->options.codec);
  /* The files are read now; the caller's options are not kept. */
  if (err == 0 && options->tls != NULL)
    err = rn__server_tls_init(server, options->tls);
  server->options.tls = NULL;
  /* Copied too: the tokens are the server's to wipe. */
  if (err == 0 && options->auth != NULL)
    err = rn__server_auth_new(options, &server->auth);
  server->options.auth = NULL;
  if (err) {
    rn__tls_ctx_unref(server->tls);
    free(server);
    return err;
  }
  server->data = options->data;
  server->loop = loop;
  rn_list_init(&server->conns);
  rn_list_init(&server->queue);
  rn_list_init(&server->joined);
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

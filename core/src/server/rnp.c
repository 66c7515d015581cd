/* The server side of rnp (docs/protocol.md): the handshake, PING, request
 * ids, slots and the queue, refusals that prove nothing ran, replies in
 * any order, GOAWAY. server.c does the I/O; dedupe.c keyed requests. */
#include "server.h"

#include <stdlib.h>
#include <string.h>

/* Error messages are for people; a bound keeps one within any MAX_FRAME a
 * client may reasonably announce. */
#define RN_RNP_MESSAGE_MAX 1024

/* The smallest MAX_FRAME a client may announce (docs/protocol.md, section
 * 6): room for every frame the server sends whatever happens, a PONG of 64
 * bytes, an ERROR with RETRY_AFTER and a message, a GOAWAY. Below it the
 * server could not tell the client why its request got no REPLY. */

static void rnp_expire(rn_timer_t *timer);

int rn__server_rnp_init(rn_server_t *server) {
  size_t i;
  /* Unique per server start, so clients can tell a restarted server from
   * the one their idle connections came from. */
  if (uv_random(NULL, NULL, server->incarnation, sizeof(server->incarnation),
                0, NULL) != 0) {
    for (i = 0; i < sizeof(server->incarnation); i += 8) {
      uint64_t r = rn__random(server->loop) ^ uv_hrtime();
      memcpy(server->incarnation + i, &r, 8);
    }
  }
  server->expire_timer.cb = rnp_expire;
  if (server->options.dedupe.on) return rn__dedupe_new(server, &server->dedupe);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Sending                                                                    */

static void rnp_frame_init(rn_rnp_frame_t *f, unsigned type, uint64_t id) {
  memset(f, 0, sizeof(*f));
  f->type = type;
  f->id = id;
}

/* Appends one frame to conn's output and starts writing. UV_ENOMEM closes
 * the connection (its client would wait forever for what was lost). */
static int rnp_send(rn_server_conn_t *conn, const rn_rnp_frame_t *f) {
  int err;
  if (conn == NULL || conn->closing || conn->broken) return 0;
  err = rn_rnp_encode(&conn->out, f, conn->peer_max_frame);
  if (err == UV_ENOMEM) {
    rn__server_conn_close(conn);
    return err;
  }
  if (err == 0) rn__server_conn_write(conn);
  return err;
}

/* Bytes of text that fit in the client's MAX_FRAME after `overhead`:
 * messages and reasons are cut to fit rather than the frame dropped. */
static size_t rnp_room(const rn_server_conn_t *conn, size_t overhead) {
  size_t room = conn->peer_max_frame > overhead
                    ? conn->peer_max_frame - overhead : 0;
  return RN_MIN(room, RN_RNP_MESSAGE_MAX);
}

static int rnp_send_error(rn_server_conn_t *conn, uint64_t id, unsigned code,
                          unsigned flags, uint64_t retry_after,
                          const char *msg, size_t len) {
  rn_rnp_frame_t f;
  /* header, the u16 code, and RETRY_AFTER's 6 bytes when present */
  size_t overhead = RN_RNP_HEADER_SIZE + 2 + (retry_after > 0 ? 6 : 0);
  if (conn == NULL) return 0;
  rnp_frame_init(&f, RN_RNP_ERROR, id);
  f.flags = flags;
  f.error_code = code;
  f.payload = msg;
  f.payload_len = RN_MIN(len, rnp_room(conn, overhead));
  if (retry_after > 0) {
    f.present |= 1u << RN_RNP_F_RETRY_AFTER;
    f.retry_after_ms = retry_after > UINT32_MAX ? UINT32_MAX
                                                : (uint32_t)retry_after;
  }
  return rnp_send(conn, &f);
}

/* After an answer left (or was dropped): close a connection that is done,
 * resume reading one that may read again. */
static void rnp_conn_settle(rn_server_conn_t *conn) {
  if (conn != NULL && !rn__server_conn_settle(conn))
    rn__server_conn_update_reading(conn);
}

int rn__server_rnp_answer(rn_request_t *req, const rn__answer_t *a) {
  rn_server_conn_t *conn = req->conn;
  int err = 0;

  if (conn != NULL && !conn->closing && !conn->broken) {
    if (a->type == RN_RNP_REPLY) {
      rn_rnp_frame_t f;
      rnp_frame_init(&f, RN_RNP_REPLY, req->id);
      f.payload = a->body;
      f.payload_len = a->len;
      err = rnp_send(conn, &f);
      if (err == RN_EFRAMESIZE) {
        /* Every REQUEST gets one answer: this one says it ran. */
        static const char big[] = "the request ran, but its reply is "
                                  "larger than the client's MAX_FRAME";
        err = rnp_send_error(conn, req->id, RN_RNP_ERR_TOO_LARGE, 0, 0,
                             big, sizeof(big) - 1);
      }
    } else {
      err = rnp_send_error(conn, req->id, a->code, a->flags, a->retry_after,
                           a->body, a->len);
    }
  }
  if (conn != NULL && conn->closing) conn = NULL;
  rn__server_request_release(req);
  rnp_conn_settle(conn);
  if (conn != NULL) rn__server_conn_output(conn);
  return err == UV_ENOMEM ? err : 0;
}

/* Answers a request that did not run: the guarantee clients retry on. */
static void rnp_refuse(rn_request_t *req, unsigned code, uint64_t retry_after,
                       const char *msg) {
  rn__answer_t a;
  memset(&a, 0, sizeof(a));
  a.type = RN_RNP_ERROR;
  a.code = code;
  a.flags = RN_RNP_NOT_EXECUTED;
  a.retry_after = retry_after;
  a.body = msg;
  a.len = strlen(msg);
  (void)rn__server_rnp_answer(req, &a);
}

int rn__server_rnp_reply(rn_request_t *req, const char *payload,
                         size_t len) {
  rn__answer_t a;
  memset(&a, 0, sizeof(a));
  a.type = RN_RNP_REPLY;
  a.body = payload;
  a.len = len;
  if (req->owner) rn__dedupe_end(req->server->dedupe, req, &a);
  return rn__server_rnp_answer(req, &a);
}

int rn__server_rnp_fail(rn_request_t *req, unsigned code, const char *msg,
                        size_t len, uint64_t retry_after) {
  rn__answer_t a;
  memset(&a, 0, sizeof(a));
  a.type = RN_RNP_ERROR;
  a.code = code;
  a.flags = rn__rnp_not_executed(code) ? RN_RNP_NOT_EXECUTED : 0;
  a.retry_after = retry_after;
  a.body = msg;
  a.len = RN_MIN(len, RN_RNP_MESSAGE_MAX);
  if (req->owner) rn__dedupe_end(req->server->dedupe, req, &a);
  return rn__server_rnp_answer(req, &a);
}

/* ------------------------------------------------------------------------ */
/* Slots and the queue                                                        */

void rn__server_rnp_run(rn_request_t *req) {
  rn_server_t *server = req->server;
  server->stats.handled++;
  server->options.on_request(server, req, req->body, req->body_len);
}

static int rnp_late(const rn_request_t *req, uint64_t now) {
  return req->has_deadline && now >= req->deadline;
}

/* Refuses a request whose deadline passed before it started. */
static void rnp_refuse_late(rn_request_t *req) {
  rn_server_t *server = req->server;
  uint64_t id = req->id;
  server->stats.expired++;
  rnp_refuse(req, RN_RNP_ERR_DEADLINE, 0,
             "the deadline passed before the request could start");
  rn__server_event(server, RN_SERVER_EVENT_DEADLINE, id, 0);
}

/* req holds a slot: refuse it if too late, else run it (through dedupe
 * when it has a key). */
static void rnp_start(rn_request_t *req) {
  rn_server_t *server = req->server;
  if (rnp_late(req, rn_loop_now(server->loop))) {
    rnp_refuse_late(req);
    return;
  }
  if (server->dedupe != NULL && req->key_len > 0)
    rn__dedupe_begin(server->dedupe, req);
  else
    rn__server_rnp_run(req);
}

/* The expiry timer for the earliest deadline of a request not started
 * (at), or the earliest found when at is 0; stopped when none has one. */
static void rnp_arm_expiry(rn_server_t *server, uint64_t at) {
  uint64_t now = rn_loop_now(server->loop);
  rn_list_t *pos;
  if (at == 0) {
    at = UINT64_MAX;
    for (pos = server->queue.next; pos != &server->queue; pos = pos->next) {
      rn_request_t *req = RN_CONTAINER_OF(pos, rn_request_t, wait);
      if (req->has_deadline && req->deadline < at) at = req->deadline;
    }
    for (pos = server->joined.next; pos != &server->joined; pos = pos->next) {
      rn_request_t *req = RN_CONTAINER_OF(pos, rn_request_t, joined);
      if (req->deadline < at) at = req->deadline;
    }
  }
  if (at == UINT64_MAX) {
    rn_timer_stop(&server->expire_timer);
    return;
  }
  rn_timer_start(&server->expire_timer, at > now ? at - now : 0);
}

/* Arms the expiry timer for a deadline, unless it fires sooner already. */
static void rnp_expire_by(rn_server_t *server, uint64_t deadline) {
  if (!rn_timer_is_active(&server->expire_timer) ||
      server->expire_timer.due > deadline)
    rnp_arm_expiry(server, deadline);
}

void rn__server_rnp_joined(rn_request_t *req) {
  rn_list_insert_tail(&req->server->joined, &req->joined);
  rnp_expire_by(req->server, req->deadline);
}

/* A request not started is refused when its deadline passes, not when a
 * slot frees or its key's original finishes (docs/protocol.md, section
 * 8): the client learns at once that it may go elsewhere. A duplicate
 * waiting for its key has not started either (section 10): the
 * original's answer, later, is not its own. The expired ones move to a
 * list of their own first: refusing one may close its connection, which
 * releases others. */
static void rnp_expire(rn_timer_t *timer) {
  rn_server_t *server = timer->data;
  uint64_t now = rn_loop_now(server->loop);
  rn_list_t expired, *pos, *tmp;

  rn_list_init(&expired);
  rn_list_foreach_safe(pos, tmp, &server->queue) {
    rn_request_t *req = RN_CONTAINER_OF(pos, rn_request_t, wait);
    if (rnp_late(req, now)) {
      rn_list_remove(&req->wait);
      rn_list_insert_tail(&expired, &req->wait);
    }
  }
  rn_list_foreach_safe(pos, tmp, &server->joined) {
    rn_request_t *req = RN_CONTAINER_OF(pos, rn_request_t, joined);
    if (rnp_late(req, now)) {
      rn__dedupe_leave(req); /* off the waiters and off joined */
      rn_list_insert_tail(&expired, &req->wait);
    }
  }
  while (!rn_list_empty(&expired))
    rnp_refuse_late(RN_CONTAINER_OF(expired.next, rn_request_t, wait));
  if (!server->closing) rnp_arm_expiry(server, 0);
}

static void rnp_admit(rn_request_t *req) {
  rn_server_t *server = req->server;
  if (server->active < server->options.max_concurrent) {
    req->slot = 1;
    server->active++;
    rnp_start(req);
  } else if (server->queued < server->options.queue) {
    req->queued = 1;
    server->queued++;
    rn_list_insert_tail(&server->queue, &req->wait);
    if (req->has_deadline) rnp_expire_by(server, req->deadline);
  } else {
    uint64_t id = req->id;
    server->stats.overloaded++;
    rnp_refuse(req, RN_RNP_ERR_OVERLOADED, server->options.retry_after_ms,
               "the server is busy");
    rn__server_event(server, RN_SERVER_EVENT_OVERLOAD, id, 0);
  }
}

/* Each turn takes one request off the queue; the application may close
 * the server from inside (the queue is then empty). */
void rn__server_rnp_dequeue(rn_server_t *server) {
  while (!server->closing && !rn_list_empty(&server->queue) &&
         server->active < server->options.max_concurrent) {
    rn_request_t *req = RN_CONTAINER_OF(server->queue.next, rn_request_t,
                                        wait);
    rn_list_remove(&req->wait);
    req->queued = 0;
    server->queued--;
    req->slot = 1;
    server->active++;
    rnp_start(req);
  }
}

/* ------------------------------------------------------------------------ */
/* Frames                                                                     */

/* Requests of conn lose it: queued and waiting ones never ran and go; the
 * rest keep running (their answers are dropped, or recorded by dedupe). */
static void rnp_detach(rn_server_conn_t *conn) {
  while (!rn_list_empty(&conn->requests)) {
    rn_request_t *req =
        RN_CONTAINER_OF(conn->requests.next, rn_request_t, node);
    int never_ran = req->queued || req->waiting;
    rn_list_remove(&req->node);
    req->conn = NULL;
    if (req->waiting) rn__dedupe_leave(req);
    if (never_ran) rn__server_request_release(req);
  }
}

void rn__server_rnp_conn_closed(rn_server_conn_t *conn) { rnp_detach(conn); }

/* ERROR{id 0, PROTOCOL}, then the connection closes (after a FIN and the
 * client's, so the error is not lost to an RST). Nothing else changes. */
static void rnp_protocol_error(rn_server_conn_t *conn, int err,
                               const char *msg) {
  rnp_detach(conn);
  (void)rnp_send_error(conn, 0, RN_RNP_ERR_PROTOCOL, 0, 0, msg, strlen(msg));
  rn__server_conn_broken(conn, err);
}

/* 1 when the HELLO's credentials pass. Else the HELLO is answered
 * ERROR{UNAUTHENTICATED, NOT_EXECUTED}, and the connection is read no
 * more: frames pipelined behind the HELLO are dropped unread (the client
 * knows none ran from the code), and it closes once the ERROR is
 * written. */
static int rnp_authenticate(rn_server_conn_t *conn, const rn_rnp_frame_t *in) {
  static const char refused[] = "unauthenticated: the connection's "
                                "credentials were refused";
  rn_server_t *server = conn->server;
  const char *why = NULL;
  int err = rn__server_auth_check(conn, in, &why);

  if (err == 0) return 1;
  if (err != RN_EAUTH) {
    /* No memory for its identity: not the client's fault, so not a
     * refusal it would take for a wrong configuration. */
    rn__server_conn_close(conn);
    return 0;
  }
  server->stats.auth_refused++;
  (void)rnp_send_error(conn, in->id, RN_RNP_ERR_UNAUTHENTICATED,
                       RN_RNP_NOT_EXECUTED, 0, refused, sizeof(refused) - 1);
  rn__server_conn_stop_input(conn);
  rn__server_event_detail(server, RN_SERVER_EVENT_AUTH, in->id, err, why);
  return 0;
}

static void rnp_hello(rn_server_conn_t *conn, const rn_rnp_frame_t *in) {
  rn_server_t *server = conn->server;
  rn_rnp_frame_t f;
  size_t max_frame = server->codec.max_frame;

  if (in->id != 1) {
    rnp_protocol_error(conn, RN_EHANDSHAKE, "the HELLO's id must be 1");
    return;
  }
  if (in->present & (1u << RN_RNP_F_MAX_FRAME)) {
    conn->peer_max_frame = in->max_frame;
    if (in->max_frame < RN_RNP_HELLO_MIN_FRAME) {
      rnp_protocol_error(conn, RN_EHANDSHAKE,
                         "MAX_FRAME under 128: no room for the server's "
                         "ERROR and GOAWAY frames");
      return;
    }
  }
  if (server->auth != NULL && !rnp_authenticate(conn, in)) return;
  conn->hello = 1;
  rnp_frame_init(&f, RN_RNP_HELLO, in->id);
  f.present = (1u << RN_RNP_F_VERSION) | (1u << RN_RNP_F_MAX_FRAME) |
              (1u << RN_RNP_F_MAX_CONCURRENT) | (1u << RN_RNP_F_INCARNATION);
  f.version = RN_MIN(in->version, RN_RNP_VERSION);
  f.max_frame = max_frame > UINT32_MAX ? UINT32_MAX : (uint32_t)max_frame;
  f.max_concurrent = server->options.max_concurrent;
  f.incarnation = server->incarnation;
  /* Where its keys live: clients retry a keyed request only on a server
   * announcing the store its first attempt's server did (section 9.1). */
  if (server->dedupe != NULL) f.dedupe = server->store_id;
  (void)rnp_send(conn, &f);
}

static void rnp_request(rn_server_conn_t *conn, const rn_rnp_frame_t *f) {
  rn_server_t *server = conn->server;
  rn_request_t *req;
  size_t scope = 0;

  server->stats.requests++;
  if (conn->goaway || server->closing || server->draining) {
    server->stats.discarded++; /* GOAWAY told the client: not processed */
    return;
  }
  /* A key is scoped by identity: the identity's u16 length and bytes go
   * right before it, so the scoped key and the client's key share one
   * copy. */
  if (f->key_len > 0 && server->auth != NULL) scope = 2 + conn->identity_len;
  req = calloc(1, sizeof(*req) + scope + f->key_len + f->payload_len + 1);
  if (req == NULL) {
    rn__server_conn_close(conn); /* cannot answer it: the client must know */
    return;
  }
  conn->last_accepted = f->id;
  req->server = server;
  req->conn = conn;
  req->id = f->id;
  req->idempotent = (f->flags & RN_RNP_IDEMPOTENT) != 0;
  if (f->present & (1u << RN_RNP_F_DEADLINE)) {
    req->has_deadline = 1;
    req->deadline = rn_loop_now(server->loop) + f->deadline_ms;
  }
  if (scope > 0) {
    unsigned char *p = (unsigned char *)(req + 1);
    p[0] = (unsigned char)(conn->identity_len >> 8);
    p[1] = (unsigned char)conn->identity_len;
    memcpy(p + 2, conn->identity, conn->identity_len);
  }
  req->dedupe_key = (char *)(req + 1);
  req->dedupe_key_len = scope + f->key_len;
  req->key = req->dedupe_key + scope;
  req->key_len = f->key_len;
  if (f->key_len > 0) {
    memcpy(req->key, f->key, f->key_len);
  } else {
    req->key = NULL;
    req->dedupe_key = NULL;
  }
  req->body = (char *)(req + 1) + scope + f->key_len;
  req->body_len = f->payload_len;
  if (f->payload_len > 0) memcpy(req->body, f->payload, f->payload_len);
  rn_list_init(&req->wait);
  rn_list_insert_tail(&conn->requests, &req->node);
  server->held++;
  rnp_admit(req);
}

static void rnp_frame(rn_server_conn_t *conn, const rn_rnp_frame_t *f) {
  switch (f->type) {
  case RN_RNP_HELLO:
  case RN_RNP_REQUEST:
  case RN_RNP_PING:
    break;
  default:
    rnp_protocol_error(conn, RN_EBADFRAME,
                       "a server-to-client frame type from the client");
    return;
  }
  if (!conn->hello && f->type != RN_RNP_HELLO) {
    rnp_protocol_error(conn, RN_EHANDSHAKE, "the first frame must be HELLO");
    return;
  }
  if (conn->hello && f->type == RN_RNP_HELLO) {
    rnp_protocol_error(conn, RN_EBADFRAME, "HELLO sent twice");
    return;
  }
  if (f->id <= conn->last_id) {
    rnp_protocol_error(conn, RN_EBADFRAME,
                       "frame ids must increase on a connection");
    return;
  }
  conn->last_id = f->id;
  if (f->type == RN_RNP_HELLO) {
    rnp_hello(conn, f);
  } else if (f->type == RN_RNP_PING) {
    rn_rnp_frame_t pong;
    rnp_frame_init(&pong, RN_RNP_PONG, f->id);
    pong.payload = f->payload;
    pong.payload_len = f->payload_len;
    (void)rnp_send(conn, &pong);
  } else {
    rnp_request(conn, f);
  }
}

void rn__server_rnp_process(rn_server_conn_t *conn) {
  rn_server_t *server = conn->server;
  size_t pos = 0;
  int partial = 0;

  conn->held_back = 0;
  while (pos < conn->rbuf.len && !conn->closing && !conn->broken) {
    rn_rnp_frame_t f;
    int r;
    /* A client that does not read its replies stops being read, even for
     * frames already buffered: replies and refusals cannot pile up. */
    if (rn__server_conn_hold(conn)) break;
    r = rn_rnp_parse(conn->rbuf.base + pos, conn->rbuf.len - pos,
                     server->codec.max_frame, &f);
    if (r == 0) {
      partial = 1;
      break;
    }
    if (r < 0) {
      rnp_protocol_error(conn, r, r == RN_EFRAMESIZE
                                      ? "frame larger than max_frame"
                                      : "malformed frame");
      return;
    }
    pos += f.size;
    rnp_frame(conn, &f);
  }
  if (conn->closing || conn->broken || conn->refused) return;
  rn_buf_consume(&conn->rbuf, pos);
  rn__server_conn_parsed(conn, pos > 0, partial);
  rn__server_conn_update_reading(conn);
}

/* ------------------------------------------------------------------------ */
/* GOAWAY                                                                     */

void rn__server_rnp_goaway_conn(rn_server_conn_t *conn, const char *reason) {
  rn_server_t *server = conn->server;
  rn_rnp_frame_t f;
  uint64_t id = conn->last_accepted;

  if (conn->closing || conn->goaway) return;
  if (!conn->hello || conn->broken) {
    /* Nothing was accepted on it: nothing to announce. */
    rn__server_conn_close(conn);
    return;
  }
  conn->goaway = 1;
  rnp_frame_init(&f, RN_RNP_GOAWAY, id);
  f.payload = reason;
  f.payload_len = RN_MIN(strlen(reason), rnp_room(conn, RN_RNP_HEADER_SIZE));
  if (rnp_send(conn, &f) != 0) return;
  rn__server_conn_finish(conn);
  rn__server_event(server, RN_SERVER_EVENT_GOAWAY, id, 0);
}

/* An event handler may close the server: stop then (every connection is
 * already closed, the one after this one included). */
void rn__server_rnp_goaway(rn_server_t *server) {
  rn_list_t *pos, *tmp;
  rn_list_foreach_safe(pos, tmp, &server->conns) {
    rn__server_rnp_goaway_conn(RN_CONTAINER_OF(pos, rn_server_conn_t, node),
                               "the server is shutting down");
    if (server->closing) return;
  }
}

/* Requests of conn that never started: refused, not executed. */
static void rnp_refuse_unstarted(rn_server_conn_t *conn) {
  for (;;) {
    rn_request_t *found = NULL;
    rn_list_t *pos;
    for (pos = conn->requests.next; pos != &conn->requests; pos = pos->next) {
      rn_request_t *req = RN_CONTAINER_OF(pos, rn_request_t, node);
      if (req->queued || req->waiting) {
        found = req;
        break;
      }
    }
    if (found == NULL || conn->closing) return;
    if (found->waiting) rn__dedupe_leave(found);
    rnp_refuse(found, RN_RNP_ERR_SHUTDOWN, 0,
               "the server shut down before the request could start");
  }
}

/* Without the refusals a client would count these requests as maybe
 * executed, though GOAWAY accepted them and nothing ran. Connections with
 * refusals to write get them written first, bounded by the linger;
 * others close at once, as rn_server_close() would. */
void rn__server_rnp_drain_over(rn_server_t *server) {
  rn_list_t *pos, *tmp;

  server->drain_over = 1;
  rn_timer_stop(&server->expire_timer);
  rn_list_foreach_safe(pos, tmp, &server->conns) {
    rn_server_conn_t *conn = RN_CONTAINER_OF(pos, rn_server_conn_t, node);
    rnp_refuse_unstarted(conn);
    if (conn->closing) continue;
    rnp_detach(conn);
    if (conn->writing || conn->out.len != 0 || conn->shut)
      rn_timer_start(&conn->timer, RN_SERVER_LINGER_MS);
    else
      rn__server_conn_close(conn);
  }
  rn__server_maybe_finish(server);
}

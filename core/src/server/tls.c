/* The server side of TLS (issue 17): each accepted connection of a server
 * with `tls` gets a session (runtime/tls.c), and its bytes pass through
 * it: what is read is decrypted into the connection's rbuf, where every
 * protocol finds its frames as with plaintext; what server.c writes is
 * encrypted one batch per write. The handshake is timed like a frame. */
#include "server.h"
#include "tls.h"

#include <string.h>

int rn__server_tls_init(rn_server_t *server, const rn_tls_options_t *o) {
  return rn__tls_ctx_new(o, RN_TLS_SERVER, &server->tls, NULL, 0);
}

int rn_server_reload_tls(rn_server_t *server, const rn_tls_options_t *o) {
  rn__tls_ctx_t *ctx;
  int err;
  if (server->tls == NULL || o == NULL) return UV_EINVAL;
  err = rn__tls_ctx_new(o, RN_TLS_SERVER, &ctx, NULL, 0);
  if (err) return err;
  /* Open connections hold their own reference to the old one. */
  rn__tls_ctx_unref(server->tls);
  server->tls = ctx;
  return 0;
}

int rn__server_tls_start(rn_server_conn_t *conn) {
  return rn__tls_new(conn->server->tls, NULL, &conn->tls);
}

/* A failed handshake or a bad record: that connection only. Its alert
 * goes out if the socket takes it now; nothing waits for it. */
static void server_tls_failed(rn_server_conn_t *conn, int error) {
  rn_server_t *server = conn->server;
  rn_buf_t alert;

  rn_buf_init(&alert);
  if (rn__tls_pending(conn->tls, &alert) == 0 && alert.len > 0 &&
      !conn->writing) {
    uv_buf_t b = uv_buf_init(alert.base, (unsigned)alert.len);
    (void)uv_try_write(&conn->h.stream, &b, 1);
  }
  rn_buf_free(&alert);
  server->stats.tls_errors++;
  rn__server_conn_close(conn);
  /* The reason lives in the session, freed only in the close callback. */
  rn__server_event_detail(server, RN_SERVER_EVENT_TLS, 0, error,
                          rn__tls_why(conn->tls));
}

int rn__server_tls_read(rn_server_conn_t *conn, const char *data,
                        size_t len) {
  rn_server_t *server = conn->server;
  rn_buf_t *plain = &server->tls_plain;
  int got;

  plain->len = 0;
  got = rn__tls_read(conn->tls, data, len, plain);
  if (got >= 0 && plain->len > 0 &&
      rn_buf_append(&conn->rbuf, plain->base, plain->len) != 0)
    got = UV_ENOMEM;
  /* Decrypted bytes wait in the connection's rbuf, as read bytes do. */
  if (plain->cap > 65536) rn_buf_free(plain);
  if (got == UV_ENOMEM) {
    rn__server_conn_close(conn);
    return got;
  }
  if (got < 0) {
    server_tls_failed(conn, got);
    return got;
  }
  if (!conn->tls_ready) {
    /* The handshake is a frame: its first byte starts frame_timeout, and
     * its end is activity for idle_timeout. */
    if (rn__tls_established(conn->tls)) {
      conn->tls_ready = 1;
      rn__server_conn_parsed(conn, 1, 0);
    } else {
      rn__server_conn_parsed(conn, 0, 1);
    }
  }
  /* The handshake and TLS 1.3's session tickets answer reads. */
  if (rn__tls_want_write(conn->tls)) {
    rn__server_conn_write(conn);
    if (conn->closing) return UV_ECANCELED;
  }
  return got;
}

int rn__server_tls_seal(rn_server_conn_t *conn) {
  int err = rn__tls_write(conn->tls, conn->out.base, conn->out.len,
                          &conn->wbuf);
  if (err == UV_EAGAIN) return err; /* before the handshake: kept */
  conn->out.len = 0;
  if (err == UV_ENOMEM) {
    rn__server_conn_close(conn);
  } else if (err) {
    server_tls_failed(conn, err);
  }
  return err;
}

void rn__server_tls_close_notify(rn_server_conn_t *conn) {
  rn__tls_close(conn->tls);
  rn__server_conn_write(conn);
}

int rn__server_tls_handshaking(const rn_server_conn_t *conn) {
  return conn->tls != NULL && !conn->tls_ready;
}

void rn__server_tls_conn_free(rn_server_conn_t *conn) {
  rn__tls_free(conn->tls);
  conn->tls = NULL;
}

int rn_request_peer_subject(rn_request_t *req, char *buf, size_t size) {
  rn_server_conn_t *conn = req->conn;
  if (conn == NULL || conn->closing) return UV_ENOTCONN;
  if (conn->tls == NULL) return UV_ENOENT;
  return rn__tls_peer_subject(conn->tls, buf, size);
}

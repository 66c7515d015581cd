/* A client connection's TLS (issue 17): the session (runtime/tls.c) sits
 * between the socket and the connection's frames.
 *
 * The handshake is part of connecting: it runs in state RN_CONN_TLS,
 * inside connect_timeout, before the protocol's own handshake (ping, rnp
 * HELLO). No call is placed on a connection before both are done, so
 * calls queued meanwhile stay unsent in the pool's queue, and a reset
 * during the handshake moves them nowhere.
 *
 * Reads decrypt into rbuf, where the codecs find frames as with
 * plaintext; each flush encrypts its whole batch at once. Frames stay in
 * plaintext in their calls until answered: a call sent again goes through
 * whichever connection takes it, encrypted there, so TLS changes nothing
 * about what may be retried (docs/retry-rules.md). */
#include "client.h"

#include <string.h>

int rn__conn_tls_start(rn_conn_t *conn) {
  const rn_endpoint_t *a = &conn->endpoint->address;
  /* The name checked is the endpoint's host unless server_name says
   * otherwise; a unix socket has none (rn_pool_new refused one without
   * server_name or insecure: rn_tls_endpoint_check). */
  const char *host = a->kind == RN_ENDPOINT_TCP ? a->address : NULL;
  int err = rn__tls_new(conn->pool->tls, host, &conn->tls);
  if (err) return err;
  return rn__tls_handshake(conn->tls); /* the ClientHello, pending */
}

int rn__conn_tls_read(rn_conn_t *conn, const char *data, size_t len) {
  rn_pool_t *pool = conn->pool;
  int got = rn__tls_read(conn->tls, data, len, &conn->rbuf);

  if (got < 0) {
    /* Its alert goes out with the close, if the socket takes it. */
    rn__conn_tls_close_notify(conn);
    return got;
  }
  if (conn->state == RN_CONN_TLS && rn__tls_established(conn->tls)) {
    if (pool->tls_insecure) pool->stats.tls_insecure++;
    rn__conn_tls_established(conn);
    if (conn->state == RN_CONN_CLOSING) return UV_ECANCELED;
  }
  /* The handshake's next flight, or an answer to a key update. */
  if (rn__tls_want_write(conn->tls)) rn__conn_flush(conn);
  return got;
}

int rn__conn_tls_seal(rn_conn_t *conn, const char *plain, size_t len) {
  return rn__tls_write(conn->tls, plain, len, &conn->wbuf);
}

/* Best effort, as a FIN is: a socket that does not take the bytes at once
 * (or a write still in flight, which they must not overtake) closes
 * without them. For a failed session this sends its alert. */
void rn__conn_tls_close_notify(rn_conn_t *conn) {
  rn_buf_t *out = &conn->pool->tls_out;
  uv_buf_t b;

  if (conn->tls == NULL || conn->writing || !conn->handle_open ||
      uv_is_closing(&conn->h.handle))
    return;
  rn__tls_close(conn->tls);
  out->len = 0;
  if (rn__tls_pending(conn->tls, out) != 0 || out->len == 0) return;
  b = uv_buf_init(out->base, (unsigned)out->len);
  (void)uv_try_write(&conn->h.stream, &b, 1);
  out->len = 0;
}

void rn__conn_tls_free(rn_conn_t *conn) {
  rn__tls_free(conn->tls);
  conn->tls = NULL;
}

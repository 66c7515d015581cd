/* A TLS client for the C tests, on the filter (runtime/tls.h) over a
 * libuv socket: the other side of servers with TLS. It decrypts
 * everything it reads into `plain`, answers the handshake as bytes come,
 * and can also go raw (no TLS: bytes out as they are, for a server that
 * must refuse a plaintext client). */
#ifndef RN_TEST_TLS_CLIENT_H
#define RN_TEST_TLS_CLIENT_H

#include "resilnet.h"
#include "tls.h"

#include <uv.h>

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t creq;
  rn__tls_ctx_t *ctx;
  rn__tls_t *tls;
  rn_buf_t plain;    /* everything decrypted (raw: everything read) */
  int connected;
  int err;           /* the first TLS error */
  int got;           /* RN_TLS_GOT_* bits seen */
  int eof;           /* EOF or a read error */
  int closed;
  int raw;           /* no TLS */
} tls_client_t;

/* Connects to 127.0.0.1:port and starts the handshake with o (names
 * checked against "127.0.0.1"); o NULL: raw TCP. */
void tls_client_open(tls_client_t *c, uv_loop_t *uv, int port,
                     const rn_tls_options_t *o);
/* Sends data through the session (queued by the filter until the
 * handshake is done), or as it is when raw. */
void tls_client_send(tls_client_t *c, const char *data, size_t len);
/* Writes what the session has to say: handshake records, alerts, a
 * close_notify after rn__tls_close. */
void tls_client_flush(tls_client_t *c);
/* The handshake is done, or failed. */
int tls_client_ready(const tls_client_t *c);
/* The decrypted bytes so far contain text. */
int tls_client_has(const tls_client_t *c, const char *text);
/* Closes the socket (waiting for it, bounded) and frees the session. */
void tls_client_close(tls_client_t *c);

#endif /* RN_TEST_TLS_CLIENT_H */

/* TLS as a byte filter (issue 17). A connection keeps its socket and its
 * libuv handle; between them and the connection's frames sits a session:
 * ciphertext read from the socket goes in and plaintext comes out, and
 * plaintext to send goes in (one batch per flush) and ciphertext to write
 * comes out. Client and server connections use the same session; only the
 * context they are made from differs.
 *
 * A context holds what is loaded from files (certificates, key, trusted
 * CAs) and the policy (TLS 1.2 at least, no renegotiation, no 0-RTT,
 * verification). It is refcounted: each session holds a reference, so a
 * reload swaps the context for new connections while the old ones keep
 * theirs.
 *
 * Nothing here touches a socket or a loop, so the whole handshake can run
 * in memory between two sessions (core/test/test-tls-filter.c).
 *
 * Errors: RN_ETLSVERIFY when the peer's certificate was refused (the
 * reason as text: "unknown CA: ...", "name mismatch: ...", "expired: ...",
 * "no client certificate"), RN_ETLS for any other TLS failure, UV_ENOMEM,
 * RN_ENOTLS in a build without OpenSSL. */
#ifndef RN_TLS_H
#define RN_TLS_H

#include "internal.h"

typedef struct rn__tls_ctx_s rn__tls_ctx_t;
typedef struct rn__tls_s rn__tls_t;

/* Room for a reason: OpenSSL's texts are short, a prefix is added. */
#define RN_TLS_WHY_SIZE 192

/* What rn__tls_read() found, as bits (0: nothing for the application). */
enum {
  RN_TLS_GOT_DATA = 1,        /* application data, appended to plain */
  RN_TLS_GOT_CLOSE_NOTIFY = 2 /* the peer's orderly end: nothing follows */
};

/* rn_tls_endpoint_check's rule, for those that keep only the options'
 * shape (the pool: tls.insecure, whether tls.server_name is set): 1 if TLS
 * so set can verify the server at ep (a unix socket has no host name to
 * check its certificate against). */
int rn__tls_endpoint_ok(int insecure, int named, const rn_endpoint_t *ep);

/* Loads o for role. 0 and *out (one reference), or an error with the
 * reason in why (may be NULL). */
int rn__tls_ctx_new(const rn_tls_options_t *o, rn_tls_role_t role,
                    rn__tls_ctx_t **out, char *why, size_t why_size);
void rn__tls_ctx_ref(rn__tls_ctx_t *ctx);
/* Drops a reference; the last one frees the context. NULL is ignored. */
void rn__tls_ctx_unref(rn__tls_ctx_t *ctx);

/* A session for one connection (holds a reference on ctx). Client:
 * `host` is the endpoint's host, checked against the certificate unless
 * the context has a server_name (which wins) or is insecure; an IP
 * literal is checked against IP addresses and sends no SNI. Server: host
 * is ignored. 0 or UV_ENOMEM. */
int rn__tls_new(rn__tls_ctx_t *ctx, const char *host, rn__tls_t **out);
void rn__tls_free(rn__tls_t *t);

/* Takes ciphertext the peer sent (any amount, records may be split
 * anywhere), moves the handshake on and appends any plaintext to plain.
 * Returns the RN_TLS_GOT_* bits (>= 0) or an error; after an error the
 * session is done (its alert, if any, is in the pending output). Always
 * look at rn__tls_pending() afterwards: the handshake and the session
 * tickets of TLS 1.3 answer reads with writes. */
int rn__tls_read(rn__tls_t *t, const char *data, size_t len, rn_buf_t *plain);

/* The client's idle check on a pooled connection: what arrived while no
 * call was waiting (nread as libuv gave it, UV_EOF included). 1 when the
 * connection is over (application data nobody asked for, close_notify,
 * EOF, an error); 0 when it was only protocol records (TLS 1.3 session
 * tickets, sent after the handshake, a key update), which must not make
 * a healthy connection look stale. */
int rn__tls_idle_check(rn__tls_t *t, const char *data, ssize_t nread);

/* Starts (client) or continues the handshake without new input: a client
 * calls it once after connecting to produce its ClientHello. 0 or an
 * error, as rn__tls_read(). */
int rn__tls_handshake(rn__tls_t *t);

/* 1 once the handshake completed (the peer verified, if asked). */
int rn__tls_established(const rn__tls_t *t);

/* Encrypts one batch of plaintext (len may be 0) and appends everything
 * there is to write to cipher: the pending output first, then the batch's
 * records. Only once established, else UV_EAGAIN (the caller keeps its
 * plaintext). 0, UV_EAGAIN, RN_ETLS, UV_ENOMEM. */
int rn__tls_write(rn__tls_t *t, const char *data, size_t len,
                  rn_buf_t *cipher);

/* 1 when the session has bytes to write (handshake, alerts, tickets). */
int rn__tls_want_write(const rn__tls_t *t);
/* Appends the pending output to cipher. 0 or UV_ENOMEM. */
int rn__tls_pending(rn__tls_t *t, rn_buf_t *cipher);

/* Our orderly end: queues close_notify (then see rn__tls_pending()).
 * Nothing is sent for a session that never completed its handshake. */
void rn__tls_close(rn__tls_t *t);

/* Why the last call failed, as text ("" if none did). */
const char *rn__tls_why(const rn__tls_t *t);

/* The peer certificate's subject (RFC 2253). 0, UV_ENOENT (none),
 * UV_ENOBUFS. */
int rn__tls_peer_subject(const rn__tls_t *t, char *buf, size_t size);

#endif /* RN_TLS_H */

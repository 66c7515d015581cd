/*
 * resilnet/tls.h — TLS for resilnet's connections (issue 17): the options
 * a server or a pool takes, and the calls that go with them.
 *
 * TLS is OpenSSL 3 used as a byte filter: libuv keeps the socket, and the
 * bytes of every connection of a server or pool with `tls` set pass
 * through one TLS session. Verification is on unless asked otherwise; the minimum is
 * TLS 1.2; renegotiation is refused; 0-RTT data is never accepted.
 *
 * A build without OpenSSL has the same API: rn_tls_available() says 0 and
 * asking for TLS fails with RN_ENOTLS.
 *
 * Part of the public API: resilnet.h includes it, and it can be included
 * alone (it includes resilnet.h).
 */
#ifndef RESILNET_TLS_H
#define RESILNET_TLS_H

#include "../resilnet.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Which end of the handshake a set of options is for. */
typedef enum {
  RN_TLS_CLIENT = 1,
  RN_TLS_SERVER = 2
} rn_tls_role_t;

/* Files are PEM and are read when the options are used (rn_server_new(),
 * rn_server_reload_tls(), rn_pool_new(), rn_pool_reload_tls()); the
 * strings need not outlive that call.
 * Zeroed by rn_tls_options_init(), which is the safe default: a client
 * verifies its server against the system's trust store. */
struct rn_tls_options_s {
  /* Trusted CAs: a bundle file and/or an OpenSSL hashed directory.
   * Client: the server's chain must end at one of them (both NULL: the
   * system's trust store). Server: with verify_client, the CAs a client
   * certificate must chain to (required then). */
  const char *cafile;
  const char *capath;
  /* Our own certificate chain (leaf first) and its private key. Required
   * for a server; for a client, the certificate it presents when the
   * server asks for one (both or neither). */
  const char *certificate;
  const char *key;
  /* Client: the name the server's certificate must carry (an IP literal
   * is checked against the certificate's IP addresses) and, for a DNS
   * name, the SNI sent. NULL: the endpoint's host. */
  const char *server_name;
  /* Client: 1 skips verification of the server entirely (chain and name).
   * Loud and explicit: anyone on the path can then read and change the
   * traffic. */
  int insecure;
  /* Server: 1 requires every client to present a certificate that chains
   * to cafile/capath; a connection without one fails its handshake. The
   * certificate's subject is then rn_request_peer_subject(). */
  int verify_client;
};

void rn_tls_options_init(rn_tls_options_t *options);

/* 1 when this build has TLS (OpenSSL 3 was found), else 0. */
int rn_tls_available(void);

/* Loads the options as rn_server_new() would for `role`, without keeping
 * anything: for a caller that got RN_ETLS and wants to say why. 0,
 * UV_EINVAL (a missing or contradictory option), RN_ETLS (a file could not
 * be read or the key does not match the certificate) or RN_ENOTLS; the
 * reason as text in why (NUL-terminated, truncated to why_size; why may
 * be NULL). */
int rn_tls_options_check(const rn_tls_options_t *options, rn_tls_role_t role,
                         char *why, size_t why_size);

/* Whether a client with these options can check the server at endpoint:
 * a unix socket has no host name to verify the certificate against, so it
 * needs options->server_name (or options->insecure). 0, or UV_EINVAL with
 * the reason in why (as above). rn_pool_new() checks every endpoint with
 * it, so that such a pool fails when made, not on each connect. Needs no
 * OpenSSL. */
int rn_tls_endpoint_check(const rn_tls_options_t *options,
                          const rn_endpoint_t *endpoint, char *why,
                          size_t why_size);

/* Certificate rotation: loads the files again (new certificate, key or
 * CAs) and uses them for connections accepted from now on; connections
 * already open keep the session they have. On failure nothing changes.
 * 0, UV_EINVAL (the server has no TLS; TLS cannot be switched on or off
 * here), RN_ETLS (see rn_tls_options_check() for why), UV_ENOMEM. */
int rn_server_reload_tls(rn_server_t *server, const rn_tls_options_t *options);

/* Certificate rotation for a pool with TLS: loads the files again and
 * uses them for connections opened from now on; connections already open
 * keep their session until they retire (max_lifetime, idle_timeout) or
 * close. Endpoints held back by a refused certificate (RN_ETLSVERIFY) may
 * connect again at once. On failure nothing changes. 0, UV_EINVAL (the pool
 * has no TLS: it cannot be switched on or off here; or the options cannot
 * verify one of its endpoints: rn_tls_endpoint_check()), RN_ETLS (see
 * rn_tls_options_check() for why), RN_ECLOSED, UV_ENOMEM. */
int rn_pool_reload_tls(rn_pool_t *pool, const rn_tls_options_t *options);

/* The verified client certificate's subject, RFC 2253 text
 * ("CN=client,O=example"), NUL-terminated in buf. 0, UV_ENOENT (no TLS,
 * or verify_client off and the client sent no certificate), UV_ENOTCONN
 * (the connection closed already), UV_ENOBUFS (buf too small; 256 bytes
 * hold usual subjects). */
int rn_request_peer_subject(rn_request_t *request, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* RESILNET_TLS_H */

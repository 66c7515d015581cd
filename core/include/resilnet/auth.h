/*
 * resilnet/auth.h — who may talk to an rnp server (issue 17).
 *
 * A connection proves who it is in its HELLO, before anything of it runs:
 * with a shared-secret token (the HELLO's AUTH field, docs/protocol.md
 * section 6.1) and/or the client certificate its TLS handshake verified
 * (rn_tls_options_t.verify_client). What passes gives the connection an
 * identity; what does not gets ERROR{UNAUTHENTICATED, NOT_EXECUTED} on
 * the HELLO's id and is closed, with RN_SERVER_EVENT_AUTH and the stat
 * auth_refused. Frames pipelined behind a refused HELLO are discarded
 * unread: no handler runs for them.
 *
 * Dedupe keys are scoped by identity: the same KEY from two identities is
 * two keys, so one client can neither read another's recorded replies nor
 * hold or free its keys. The key a dedupe store sees is then the scoped
 * one: u16 big-endian identity length, the identity, the client's key.
 *
 * Tokens are compared in constant time and never logged, reported or kept
 * after the server is freed (their copies are wiped).
 *
 * Part of the public API: resilnet.h includes it, and it can be included
 * alone (it includes resilnet.h).
 */
#ifndef RESILNET_AUTH_H
#define RESILNET_AUTH_H

#include "../resilnet.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The longest identity: a certificate subject or a name given here. */
#define RN_AUTH_IDENTITY_MAX 1024

/* One accepted token and the identity it stands for. Several tokens may
 * name the same identity (rotation: old and new accepted at once, one
 * dedupe scope). len 0: strlen(token); 1..RN_RNP_AUTH_MAX bytes.
 * identity NULL: "token-N", N its place in the list from 1 (then a
 * rotation changes the identity: name it to keep keys across one). */
typedef struct rn_auth_token_s {
  const char *token;
  size_t len;
  const char *identity;
} rn_auth_token_t;

/* What a connection offered, for a check callback. */
typedef struct rn_auth_attempt_s {
  rn_server_t *server;
  const char *token;   /* the HELLO's token, or NULL (none sent) */
  size_t token_len;
  const char *subject; /* the verified client certificate's subject
                          (RFC 2253 text), or NULL */
} rn_auth_attempt_t;

/* Decides a connection a listed token did not settle. Synchronous, from
 * the server's read of the HELLO. Return 0 to accept, with the identity
 * written NUL-terminated into identity (identity_size is
 * RN_AUTH_IDENTITY_MAX + 1; "" is an identity too), or a negative code to
 * refuse. `attempt` and its strings are valid during the call only. */
typedef int (*rn_server_auth_cb)(void *data, const rn_auth_attempt_t *attempt,
                                 char *identity, size_t identity_size);

/* rn_server_options_t.auth. The rules, in order:
 *  1. a HELLO token equal to a listed one: accepted as its identity;
 *  2. else `check`, when set, decides (given the token or NULL and the
 *     subject or NULL);
 *  3. else, with `certificate`, a connection that sent no token and has a
 *     verified client certificate: accepted as its subject;
 *  4. else refused (a wrong token is refused even with a certificate: a
 *     client sending a bad secret is misconfigured, and saying so beats
 *     letting it in by another door).
 * At least one of tokens, check, certificate. certificate needs tls with
 * verify_client. Copied by rn_server_new(); the caller's memory need not
 * outlive it. */
struct rn_server_auth_options_s {
  void *data;                    /* given to check */
  const rn_auth_token_t *tokens; /* token_count entries, or NULL */
  size_t token_count;
  rn_server_auth_cb check;       /* or NULL */
  int certificate;
};

void rn_server_auth_options_init(rn_server_auth_options_t *options);

/* The identity the request's connection authenticated as,
 * NUL-terminated in buf. 0, UV_ENOENT (the server has no auth),
 * UV_ENOTCONN (the connection closed already), UV_ENOBUFS (buf too small:
 * RN_AUTH_IDENTITY_MAX + 1 is enough). */
int rn_request_identity(rn_request_t *request, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* RESILNET_AUTH_H */

/* rnp authentication (resilnet/auth.h): the server's copy of the accepted
 * tokens, the constant-time comparison, and the decision on a HELLO.
 * server/rnp.c asks here once per connection and refuses what fails. */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef RESILNET_HAVE_TLS
#include <openssl/crypto.h>
#endif

/* Tokens are kept padded to the longest a HELLO can carry, so comparing
 * any offered token with any listed one reads the same number of bytes:
 * the time taken tells neither the token's bytes nor its length. */
typedef struct {
  unsigned char padded[RN_RNP_AUTH_MAX];
  size_t len;
  char *identity;
} auth_token_t;

struct rn__server_auth_s {
  auth_token_t *tokens;
  size_t count;
  rn_server_auth_cb check;
  void *data;
  int certificate;
};

/* A store the compiler may not drop as dead: the secret must go. */
static void wipe(void *p, size_t n) {
#ifdef RESILNET_HAVE_TLS
  OPENSSL_cleanse(p, n);
#else
  volatile unsigned char *v = p;
  while (n--) *v++ = 0;
#endif
}

/* 0 when equal; never returns early. */
static int differ(const unsigned char *a, const unsigned char *b, size_t n) {
#ifdef RESILNET_HAVE_TLS
  return CRYPTO_memcmp(a, b, n) != 0;
#else
  volatile unsigned char d = 0;
  size_t i;
  for (i = 0; i < n; i++) d |= (unsigned char)(a[i] ^ b[i]);
  return d != 0;
#endif
}

void rn_server_auth_options_init(rn_server_auth_options_t *o) {
  memset(o, 0, sizeof(*o));
}

void rn__server_auth_free(rn__server_auth_t *auth) {
  size_t i;
  if (auth == NULL) return;
  for (i = 0; i < auth->count; i++) free(auth->tokens[i].identity);
  if (auth->tokens != NULL) wipe(auth->tokens, auth->count * sizeof(auth_token_t));
  free(auth->tokens);
  free(auth);
}

static int auth_options_valid(const rn_server_options_t *so) {
  const rn_server_auth_options_t *o = so->auth;
  size_t i;
  if (so->codec.protocol != RN_PROTOCOL_RNP) return 0; /* no HELLO */
  if (o->token_count == 0 && o->check == NULL && !o->certificate) return 0;
  if (o->token_count > 0 && o->tokens == NULL) return 0;
  if (o->certificate && (so->tls == NULL || !so->tls->verify_client))
    return 0; /* no verified certificate would ever be there */
  for (i = 0; i < o->token_count; i++) {
    const rn_auth_token_t *t = &o->tokens[i];
    size_t len = t->token == NULL ? 0 : t->len ? t->len : strlen(t->token);
    if (len == 0 || len > RN_RNP_AUTH_MAX) return 0;
    if (t->identity != NULL && strlen(t->identity) > RN_AUTH_IDENTITY_MAX)
      return 0;
  }
  return 1;
}

int rn__server_auth_new(const rn_server_options_t *so,
                        rn__server_auth_t **out) {
  const rn_server_auth_options_t *o = so->auth;
  rn__server_auth_t *auth;
  size_t i;

  *out = NULL;
  if (!auth_options_valid(so)) return UV_EINVAL;
  auth = calloc(1, sizeof(*auth));
  if (auth == NULL) return UV_ENOMEM;
  auth->check = o->check;
  auth->data = o->data;
  auth->certificate = o->certificate;
  if (o->token_count > 0) {
    auth->tokens = calloc(o->token_count, sizeof(auth_token_t));
    if (auth->tokens == NULL) {
      free(auth);
      return UV_ENOMEM;
    }
  }
  for (i = 0; i < o->token_count; i++) {
    const rn_auth_token_t *t = &o->tokens[i];
    auth_token_t *mine = &auth->tokens[i];
    char name[32];
    mine->len = t->len ? t->len : strlen(t->token);
    memcpy(mine->padded, t->token, mine->len);
    snprintf(name, sizeof(name), "token-%zu", i + 1);
    mine->identity = strdup(t->identity != NULL ? t->identity : name);
    auth->count = i + 1; /* freed with the rest from now on */
    if (mine->identity == NULL) {
      rn__server_auth_free(auth);
      return UV_ENOMEM;
    }
  }
  *out = auth;
  return 0;
}

/* The listed token equal to the offered one, or NULL. Every listed token
 * is compared in full, whichever matches. */
static const auth_token_t *auth_find(const rn__server_auth_t *auth,
                                     const char *token, size_t len) {
  unsigned char offered[RN_RNP_AUTH_MAX];
  const auth_token_t *found = NULL;
  size_t i;

  memset(offered, 0, sizeof(offered));
  memcpy(offered, token, len);
  for (i = 0; i < auth->count; i++) {
    const auth_token_t *t = &auth->tokens[i];
    int same = !(differ(offered, t->padded, sizeof(offered)) |
                 (t->len != len));
    if (same && found == NULL) found = t;
  }
  wipe(offered, sizeof(offered));
  return found;
}

static int conn_set_identity(rn_server_conn_t *conn, const char *id,
                             size_t len) {
  char *copy = malloc(len + 1);
  if (copy == NULL) return UV_ENOMEM;
  memcpy(copy, id, len);
  copy[len] = '\0';
  free(conn->identity);
  conn->identity = copy;
  conn->identity_len = len;
  return 0;
}

int rn__server_auth_check(rn_server_conn_t *conn, const rn_rnp_frame_t *hello,
                          const char **why) {
  const rn__server_auth_t *auth = conn->server->auth;
  char subject[RN_AUTH_IDENTITY_MAX + 1];
  int has_subject = 0;

  if (hello->auth != NULL) {
    const auth_token_t *t = auth_find(auth, hello->auth, hello->auth_len);
    if (t != NULL)
      return conn_set_identity(conn, t->identity, strlen(t->identity));
  }
  /* Only a certificate the handshake verified has a subject here. */
  if (conn->tls != NULL &&
      rn__tls_peer_subject(conn->tls, subject, sizeof(subject)) == 0)
    has_subject = 1;
  if (auth->check != NULL) {
    char identity[RN_AUTH_IDENTITY_MAX + 1];
    rn_auth_attempt_t a;
    int r;
    a.server = conn->server;
    a.token = hello->auth;
    a.token_len = hello->auth_len;
    a.subject = has_subject ? subject : NULL;
    identity[0] = '\0';
    r = auth->check(auth->data, &a, identity, sizeof(identity));
    if (r < 0) {
      *why = "refused by the check callback";
      return RN_EAUTH;
    }
    identity[sizeof(identity) - 1] = '\0';
    return conn_set_identity(conn, identity, strlen(identity));
  }
  if (hello->auth != NULL) {
    *why = "unknown token";
    return RN_EAUTH;
  }
  if (auth->certificate && has_subject)
    return conn_set_identity(conn, subject, strlen(subject));
  *why = auth->certificate ? "no token and no client certificate"
                           : "no token";
  return RN_EAUTH;
}

int rn_request_identity(rn_request_t *req, char *buf, size_t size) {
  rn_server_conn_t *conn = req->conn;
  if (req->server->auth == NULL) return UV_ENOENT;
  if (conn == NULL || conn->closing || conn->identity == NULL)
    return UV_ENOTCONN;
  if (size <= conn->identity_len) return UV_ENOBUFS;
  memcpy(buf, conn->identity, conn->identity_len + 1);
  return 0;
}

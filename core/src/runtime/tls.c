/* TLS as a byte filter on OpenSSL 3 memory BIOs (see tls.h). A build
 * without OpenSSL keeps the same functions, failing with RN_ENOTLS (at
 * the end of this file). */
#include "tls.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rn_tls_options_init(rn_tls_options_t *o) { memset(o, 0, sizeof(*o)); }

static void tls_say(char *why, size_t size, const char *text) {
  if (why != NULL && size > 0) snprintf(why, size, "%s", text);
}

/* What is wrong with o for role before any file is read: UV_EINVAL. */
static int tls_options_invalid(const rn_tls_options_t *o, rn_tls_role_t role,
                               char *why, size_t size) {
  const char *bad = NULL;
  if (role != RN_TLS_CLIENT && role != RN_TLS_SERVER)
    bad = "role must be RN_TLS_CLIENT or RN_TLS_SERVER";
  else if ((o->certificate == NULL) != (o->key == NULL))
    bad = "certificate and key go together";
  else if (role == RN_TLS_SERVER && o->certificate == NULL)
    bad = "a TLS server needs certificate and key";
  else if (role == RN_TLS_SERVER && o->verify_client && o->cafile == NULL &&
           o->capath == NULL)
    bad = "verify_client needs cafile or capath (the CAs clients chain to)";
  else if (role == RN_TLS_SERVER && (o->insecure || o->server_name != NULL))
    bad = "insecure and server_name are client options";
  else if (role == RN_TLS_CLIENT && o->verify_client)
    bad = "verify_client is a server option";
  if (bad == NULL) return 0;
  tls_say(why, size, bad);
  return UV_EINVAL;
}

int rn__tls_endpoint_ok(int insecure, int named, const rn_endpoint_t *ep) {
  return ep->kind != RN_ENDPOINT_UNIX || insecure || named;
}

int rn_tls_endpoint_check(const rn_tls_options_t *o,
                          const rn_endpoint_t *ep, char *why, size_t size) {
  char text[RN_ENDPOINT_ADDRESS_MAX + 8];
  if (rn__tls_endpoint_ok(o->insecure, o->server_name != NULL, ep)) return 0;
  if (why != NULL && size > 0) {
    if (rn_endpoint_format(ep, text, sizeof(text)) < 0) text[0] = '\0';
    snprintf(why, size, "tls on %s needs tls.server_name (a unix socket has "
             "no host name to check the server's certificate against), or "
             "tls.insecure", text);
  }
  return UV_EINVAL;
}

#ifdef RESILNET_HAVE_TLS

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Plaintext is decrypted into the caller's buffer a record at a time. */
#define RN_TLS_RECORD 16384

struct rn__tls_ctx_s {
  SSL_CTX *ssl_ctx;
  unsigned refs;
  rn_tls_role_t role;
  int insecure;
  int verify; /* the peer's certificate is checked (OpenSSL records a
                 verify result even when told to ignore it) */
  char *server_name; /* client: overrides the endpoint's host */
};

struct rn__tls_s {
  rn__tls_ctx_t *ctx;
  SSL *ssl;
  BIO *in;  /* ciphertext from the peer, read by OpenSSL */
  BIO *out; /* ciphertext OpenSSL wrote for the peer */
  int failed;
  char why[RN_TLS_WHY_SIZE];
};

int rn_tls_available(void) { return 1; }

/* The reason for OpenSSL's latest error, with what we were doing. */
static void tls_say_ssl(char *why, size_t size, const char *doing) {
  unsigned long e = ERR_peek_last_error();
  const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
  if (why == NULL || size == 0) return;
  if (reason != NULL)
    snprintf(why, size, "%s: %s", doing, reason);
  else
    snprintf(why, size, "%s", doing);
}

static int tls_ctx_load(SSL_CTX *c, const rn_tls_options_t *o,
                        rn_tls_role_t role, char *why, size_t size) {
  int verify = role == RN_TLS_CLIENT ? !o->insecure : o->verify_client;

  if (o->certificate != NULL) {
    if (SSL_CTX_use_certificate_chain_file(c, o->certificate) != 1) {
      tls_say_ssl(why, size, "cannot load certificate");
      return RN_ETLS;
    }
    if (SSL_CTX_use_PrivateKey_file(c, o->key, SSL_FILETYPE_PEM) != 1) {
      tls_say_ssl(why, size, "cannot load key");
      return RN_ETLS;
    }
    if (SSL_CTX_check_private_key(c) != 1) {
      tls_say_ssl(why, size, "key does not match certificate");
      return RN_ETLS;
    }
  }
  if (!verify) {
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    return 0;
  }
  if (o->cafile != NULL || o->capath != NULL) {
    if (SSL_CTX_load_verify_locations(c, o->cafile, o->capath) != 1) {
      tls_say_ssl(why, size, "cannot load cafile/capath");
      return RN_ETLS;
    }
  } else if (SSL_CTX_set_default_verify_paths(c) != 1) {
    tls_say_ssl(why, size, "cannot load the system trust store");
    return RN_ETLS;
  }
  if (role == RN_TLS_SERVER) {
    /* Sessions resumed under client verification must belong to this
     * server's own context, or OpenSSL refuses the resumption. */
    static const unsigned char sid[] = "resilnet";
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       NULL);
    SSL_CTX_set_session_id_context(c, sid, sizeof(sid) - 1);
  } else {
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
  }
  return 0;
}

int rn__tls_ctx_new(const rn_tls_options_t *o, rn_tls_role_t role,
                    rn__tls_ctx_t **out, char *why, size_t size) {
  rn__tls_ctx_t *ctx;
  SSL_CTX *c;
  int err;

  *out = NULL;
  tls_say(why, size, "");
  err = tls_options_invalid(o, role, why, size);
  if (err) return err;
  ctx = calloc(1, sizeof(*ctx));
  if (ctx == NULL) return UV_ENOMEM;
  ERR_clear_error();
  c = SSL_CTX_new(role == RN_TLS_CLIENT ? TLS_client_method()
                                        : TLS_server_method());
  if (c == NULL) {
    free(ctx);
    tls_say_ssl(why, size, "cannot make a TLS context");
    return UV_ENOMEM;
  }
  /* The policy of issue 17: nothing older than TLS 1.2; renegotiation
   * (a way to change who the peer is mid-connection) refused; 0-RTT early
   * data (replayable) never accepted. */
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_max_early_data(c, 0);
  /* Idle connections give their record buffers back. */
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  err = tls_ctx_load(c, o, role, why, size);
  if (err == 0 && o->server_name != NULL) {
    ctx->server_name = strdup(o->server_name);
    if (ctx->server_name == NULL) err = UV_ENOMEM;
  }
  if (err) {
    SSL_CTX_free(c);
    free(ctx);
    ERR_clear_error();
    return err;
  }
  ctx->ssl_ctx = c;
  ctx->refs = 1;
  ctx->role = role;
  ctx->insecure = o->insecure;
  ctx->verify = role == RN_TLS_CLIENT ? !o->insecure : o->verify_client;
  *out = ctx;
  return 0;
}

void rn__tls_ctx_ref(rn__tls_ctx_t *ctx) { ctx->refs++; }

void rn__tls_ctx_unref(rn__tls_ctx_t *ctx) {
  if (ctx == NULL || --ctx->refs > 0) return;
  SSL_CTX_free(ctx->ssl_ctx);
  free(ctx->server_name);
  free(ctx);
}

int rn_tls_options_check(const rn_tls_options_t *o, rn_tls_role_t role,
                         char *why, size_t size) {
  rn__tls_ctx_t *ctx;
  int err = rn__tls_ctx_new(o, role, &ctx, why, size);
  rn__tls_ctx_unref(ctx);
  return err;
}

/* An IP literal is checked against the certificate's IP addresses; SNI
 * carries DNS names only (RFC 6066). */
static int tls_is_ip(const char *host) {
  unsigned char a[16];
  return uv_inet_pton(AF_INET, host, a) == 0 ||
         uv_inet_pton(AF_INET6, host, a) == 0;
}

static int tls_client_name(rn__tls_t *t, const char *host) {
  X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
  const char *name = t->ctx->server_name ? t->ctx->server_name : host;
  int ip;

  if (name == NULL || name[0] == '\0') {
    if (t->ctx->insecure) return 0;
    /* Verifying a chain without a name verifies nothing about who. */
    snprintf(t->why, sizeof(t->why), "no name to verify the server against");
    return UV_EINVAL;
  }
  ip = tls_is_ip(name);
  if (!ip && SSL_set_tlsext_host_name(t->ssl, name) != 1) return UV_ENOMEM;
  if (t->ctx->insecure) return 0;
  if (ip) return X509_VERIFY_PARAM_set1_ip_asc(param, name) == 1
                     ? 0 : UV_EINVAL;
  X509_VERIFY_PARAM_set_hostflags(param,
                                  X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return X509_VERIFY_PARAM_set1_host(param, name, 0) == 1 ? 0 : UV_ENOMEM;
}

int rn__tls_new(rn__tls_ctx_t *ctx, const char *host, rn__tls_t **out) {
  rn__tls_t *t;
  int err = 0;

  *out = NULL;
  t = calloc(1, sizeof(*t));
  if (t == NULL) return UV_ENOMEM;
  t->ssl = SSL_new(ctx->ssl_ctx);
  t->in = BIO_new(BIO_s_mem());
  t->out = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->in == NULL || t->out == NULL) {
    BIO_free(t->in);
    BIO_free(t->out);
    SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    return UV_ENOMEM;
  }
  /* An empty input BIO means "wait for more", not end of stream. */
  BIO_set_mem_eof_return(t->in, -1);
  SSL_set_bio(t->ssl, t->in, t->out); /* the SSL owns both now */
  rn__tls_ctx_ref(ctx);
  t->ctx = ctx;
  if (ctx->role == RN_TLS_CLIENT) {
    SSL_set_connect_state(t->ssl);
    err = tls_client_name(t, host);
  } else {
    SSL_set_accept_state(t->ssl);
  }
  if (err) {
    rn__tls_free(t);
    ERR_clear_error();
    return err;
  }
  *out = t;
  return 0;
}

void rn__tls_free(rn__tls_t *t) {
  if (t == NULL) return;
  SSL_free(t->ssl);
  rn__tls_ctx_unref(t->ctx);
  free(t);
}

/* The peer's certificate was refused: which of the usual causes, first,
 * so that a log line says what to fix. */
static const char *tls_verify_class(long v) {
  switch (v) {
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
  case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
  case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
  case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    return "unknown CA";
  case X509_V_ERR_HOSTNAME_MISMATCH:
  case X509_V_ERR_IP_ADDRESS_MISMATCH:
  case X509_V_ERR_EMAIL_MISMATCH:
    return "name mismatch";
  case X509_V_ERR_CERT_HAS_EXPIRED:
  case X509_V_ERR_CRL_HAS_EXPIRED:
    return "expired";
  case X509_V_ERR_CERT_NOT_YET_VALID:
    return "not yet valid";
  default:
    return "certificate refused";
  }
}

/* After an OpenSSL call returned r <= 0: 0 when it only waits for more
 * input, else the session failed (reason in t->why). */
static int tls_failed(rn__tls_t *t, int r, const char *doing) {
  int e = SSL_get_error(t->ssl, r);
  long v;
  unsigned long last;

  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
  t->failed = 1;
  v = SSL_get_verify_result(t->ssl);
  last = ERR_peek_last_error();
  if (v != X509_V_OK && t->ctx->verify) {
    snprintf(t->why, sizeof(t->why), "%s: %s", tls_verify_class(v),
             X509_verify_cert_error_string(v));
    ERR_clear_error();
    return RN_ETLSVERIFY;
  }
  if (ERR_GET_LIB(last) == ERR_LIB_SSL &&
      ERR_GET_REASON(last) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    snprintf(t->why, sizeof(t->why), "no client certificate");
    ERR_clear_error();
    return RN_ETLSVERIFY;
  }
  if (e == SSL_ERROR_SSL)
    tls_say_ssl(t->why, sizeof(t->why), doing);
  else
    snprintf(t->why, sizeof(t->why), "%s: OpenSSL error %d", doing, e);
  ERR_clear_error();
  return RN_ETLS;
}

int rn__tls_handshake(rn__tls_t *t) {
  int r;
  if (t->failed) return RN_ETLS;
  if (SSL_is_init_finished(t->ssl)) return 0;
  ERR_clear_error();
  r = SSL_do_handshake(t->ssl);
  return r == 1 ? 0 : tls_failed(t, r, "handshake");
}

int rn__tls_established(const rn__tls_t *t) {
  return !t->failed && SSL_is_init_finished(t->ssl);
}

int rn__tls_read(rn__tls_t *t, const char *data, size_t len,
                 rn_buf_t *plain) {
  int got = 0, err;

  if (t->failed) return RN_ETLS;
  while (len > 0) { /* BIO_write counts in int */
    int n = len > INT_MAX ? INT_MAX : (int)len;
    if (BIO_write(t->in, data, n) != n)
      return UV_ENOMEM; /* a memory BIO takes all or fails to grow */
    data += n;
    len -= (size_t)n;
  }
  if (!SSL_is_init_finished(t->ssl)) {
    err = rn__tls_handshake(t);
    if (err) return err;
    if (!SSL_is_init_finished(t->ssl)) return 0;
  }
  /* Until OpenSSL wants more: records after the handshake may be data,
   * session tickets or a key update; only data reaches plain. */
  for (;;) {
    size_t n = 0;
    int r;
    if (rn_buf_reserve(plain, RN_TLS_RECORD) != 0) return UV_ENOMEM;
    ERR_clear_error();
    r = SSL_read_ex(t->ssl, plain->base + plain->len,
                    plain->cap - plain->len, &n);
    if (r == 1) {
      plain->len += n;
      got |= RN_TLS_GOT_DATA;
      continue;
    }
    if (SSL_get_error(t->ssl, r) == SSL_ERROR_ZERO_RETURN)
      return got | RN_TLS_GOT_CLOSE_NOTIFY;
    err = tls_failed(t, r, "read");
    return err ? err : got;
  }
}

int rn__tls_idle_check(rn__tls_t *t, const char *data, ssize_t nread) {
  rn_buf_t plain;
  int r;
  if (nread == 0) return 0;
  if (nread < 0) return 1; /* EOF, or the socket's own error */
  rn_buf_init(&plain);
  r = rn__tls_read(t, data, (size_t)nread, &plain);
  rn_buf_free(&plain);
  return r != 0; /* data, close_notify or an error */
}

int rn__tls_want_write(const rn__tls_t *t) {
  return BIO_ctrl_pending(t->out) > 0;
}

int rn__tls_pending(rn__tls_t *t, rn_buf_t *cipher) {
  size_t n = BIO_ctrl_pending(t->out);
  int r;
  if (n == 0) return 0;
  if (rn_buf_reserve(cipher, n) != 0) return UV_ENOMEM;
  r = BIO_read(t->out, cipher->base + cipher->len, (int)n);
  if (r > 0) cipher->len += (size_t)r;
  return 0;
}

int rn__tls_write(rn__tls_t *t, const char *data, size_t len,
                  rn_buf_t *cipher) {
  if (t->failed) return RN_ETLS;
  if (len > 0) {
    size_t n = 0;
    int r;
    if (!SSL_is_init_finished(t->ssl)) return UV_EAGAIN;
    ERR_clear_error();
    /* One call for the whole batch: a memory BIO never pushes back, so
     * OpenSSL takes it all and cuts it into records. */
    r = SSL_write_ex(t->ssl, data, len, &n);
    if (r != 1 || n != len) {
      int err = tls_failed(t, r, "write");
      return err ? err : RN_ETLS;
    }
  }
  return rn__tls_pending(t, cipher);
}

void rn__tls_close(rn__tls_t *t) {
  if (t->failed || !SSL_is_init_finished(t->ssl)) return;
  ERR_clear_error();
  (void)SSL_shutdown(t->ssl); /* 0: sent, the peer's not read; fine */
  ERR_clear_error();
}

const char *rn__tls_why(const rn__tls_t *t) { return t->why; }

int rn__tls_peer_subject(const rn__tls_t *t, char *buf, size_t size) {
  X509 *cert = SSL_get0_peer_certificate(t->ssl);
  BIO *mem;
  char *text;
  long n;
  int err = 0;

  if (cert == NULL || !SSL_is_init_finished(t->ssl)) return UV_ENOENT;
  mem = BIO_new(BIO_s_mem());
  if (mem == NULL) return UV_ENOMEM;
  if (X509_NAME_print_ex(mem, X509_get_subject_name(cert), 0,
                         XN_FLAG_RFC2253) < 0) {
    BIO_free(mem);
    ERR_clear_error();
    return UV_ENOMEM;
  }
  n = BIO_get_mem_data(mem, &text);
  if (n < 0 || (size_t)n >= size)
    err = UV_ENOBUFS;
  else {
    memcpy(buf, text, (size_t)n);
    buf[n] = '\0';
  }
  BIO_free(mem);
  return err;
}

#else /* !RESILNET_HAVE_TLS: the same API, without OpenSSL */

static const char rn_tls_missing[] =
    "TLS asked for, but resilnet was built without OpenSSL (install "
    "libssl-dev and build again)";

int rn_tls_available(void) { return 0; }

int rn__tls_ctx_new(const rn_tls_options_t *o, rn_tls_role_t role,
                    rn__tls_ctx_t **out, char *why, size_t size) {
  (void)o;
  (void)role;
  *out = NULL;
  tls_say(why, size, rn_tls_missing);
  return RN_ENOTLS;
}

void rn__tls_ctx_ref(rn__tls_ctx_t *ctx) { (void)ctx; }
void rn__tls_ctx_unref(rn__tls_ctx_t *ctx) { (void)ctx; }

int rn_tls_options_check(const rn_tls_options_t *o, rn_tls_role_t role,
                         char *why, size_t size) {
  int err = tls_options_invalid(o, role, why, size);
  if (err) return err;
  tls_say(why, size, rn_tls_missing);
  return RN_ENOTLS;
}

/* No context can exist, so no session either: the rest is unreachable
 * and says so. */
int rn__tls_new(rn__tls_ctx_t *ctx, const char *host, rn__tls_t **out) {
  (void)ctx;
  (void)host;
  *out = NULL;
  return RN_ENOTLS;
}
void rn__tls_free(rn__tls_t *t) { (void)t; }
int rn__tls_read(rn__tls_t *t, const char *d, size_t n, rn_buf_t *p) {
  (void)t, (void)d, (void)n, (void)p;
  return RN_ENOTLS;
}
int rn__tls_idle_check(rn__tls_t *t, const char *d, ssize_t n) {
  (void)t, (void)d, (void)n;
  return 1;
}
int rn__tls_handshake(rn__tls_t *t) {
  (void)t;
  return RN_ENOTLS;
}
int rn__tls_established(const rn__tls_t *t) {
  (void)t;
  return 0;
}
int rn__tls_write(rn__tls_t *t, const char *d, size_t n, rn_buf_t *c) {
  (void)t, (void)d, (void)n, (void)c;
  return RN_ENOTLS;
}
int rn__tls_want_write(const rn__tls_t *t) {
  (void)t;
  return 0;
}
int rn__tls_pending(rn__tls_t *t, rn_buf_t *c) {
  (void)t, (void)c;
  return 0;
}
void rn__tls_close(rn__tls_t *t) { (void)t; }
const char *rn__tls_why(const rn__tls_t *t) {
  (void)t;
  return rn_tls_missing;
}
int rn__tls_peer_subject(const rn__tls_t *t, char *buf, size_t size) {
  (void)t, (void)buf, (void)size;
  return UV_ENOENT;
}

#endif /* RESILNET_HAVE_TLS */

/* The TLS byte filter (core/src/runtime/tls.c) with no socket: a client
 * session and a server session hand each other their bytes in memory, so
 * every handshake, refusal and record is exact and repeatable. */
#define _GNU_SOURCE /* memmem */
#include "resilnet.h"
#include "task.h"
#include "tls.h"
#include "tls_certs.h"

#include <string.h>

typedef struct {
  rn__tls_ctx_t *cctx, *sctx;
  rn__tls_t *c, *s;
  rn_buf_t c_plain, s_plain; /* what each side decrypted */
  int c_got, s_got;          /* RN_TLS_GOT_* bits seen */
  int c_err, s_err;          /* the first error of each side */
} pair_t;

static void client_options(rn_tls_options_t *o, const char *ca) {
  rn_tls_options_init(o);
  o->cafile = ca != NULL ? test_cert(ca) : NULL;
}

/* name: "server" or "expired" (name.pem and name.key). */
static void server_options(rn_tls_options_t *o, const char *name) {
  char file[64];
  rn_tls_options_init(o);
  snprintf(file, sizeof(file), "%s.pem", name);
  o->certificate = test_cert(file);
  snprintf(file, sizeof(file), "%s.key", name);
  o->key = test_cert(file);
}

static void pair_open(pair_t *p, const rn_tls_options_t *co,
                      const rn_tls_options_t *so, const char *host) {
  char why[RN_TLS_WHY_SIZE];
  memset(p, 0, sizeof(*p));
  ASSERT_OK(rn__tls_ctx_new(co, RN_TLS_CLIENT, &p->cctx, why, sizeof(why)));
  ASSERT_OK(rn__tls_ctx_new(so, RN_TLS_SERVER, &p->sctx, why, sizeof(why)));
  ASSERT_OK(rn__tls_new(p->cctx, host, &p->c));
  ASSERT_OK(rn__tls_new(p->sctx, NULL, &p->s));
  rn_buf_init(&p->c_plain);
  rn_buf_init(&p->s_plain);
}

static void pair_close(pair_t *p) {
  rn__tls_free(p->c);
  rn__tls_free(p->s);
  rn__tls_ctx_unref(p->cctx);
  rn__tls_ctx_unref(p->sctx);
  rn_buf_free(&p->c_plain);
  rn_buf_free(&p->s_plain);
}

/* A pair with the usual certificates: the client trusts ca.pem, the
 * server shows server.pem. */
static void pair_open_trusted(pair_t *p, const char *host) {
  rn_tls_options_t co, so;
  client_options(&co, "ca.pem");
  server_options(&so, "server");
  pair_open(p, &co, &so, host);
}

/* Moves what `from` has to write into `to`, `step` bytes at a time (0:
 * all at once). 1 if anything moved. */
static int pass(rn__tls_t *from, rn__tls_t *to, rn_buf_t *plain, int *got,
                int *err, size_t step) {
  rn_buf_t wire;
  size_t off = 0;
  rn_buf_init(&wire);
  ASSERT_OK(rn__tls_pending(from, &wire));
  if (wire.len == 0) return 0;
  while (off < wire.len && *err == 0) {
    size_t n = step == 0 ? wire.len - off : RN_MIN(step, wire.len - off);
    int r = rn__tls_read(to, wire.base + off, n, plain);
    if (r < 0) *err = r;
    else *got |= r;
    off += n;
  }
  rn_buf_free(&wire);
  return 1;
}

/* Runs the handshake (and whatever follows) until neither side has
 * anything left to say or one failed. */
static void pump(pair_t *p, size_t step) {
  int rounds = 0;
  if (p->c_err == 0 && !rn__tls_established(p->c))
    p->c_err = rn__tls_handshake(p->c);
  while (rounds++ < 20) {
    int moved = 0;
    if (p->s_err == 0)
      moved |= pass(p->c, p->s, &p->s_plain, &p->s_got, &p->s_err, step);
    if (p->c_err == 0)
      moved |= pass(p->s, p->c, &p->c_plain, &p->c_got, &p->c_err, step);
    if (!moved) break;
  }
}

/* Guards each case: a build without OpenSSL has the API and says so. */
static int no_tls(void) {
  rn_tls_options_t o;
  char why[RN_TLS_WHY_SIZE];
  if (rn_tls_available()) return 0;
  rn_tls_options_init(&o);
  ASSERT_EQ(rn_tls_options_check(&o, RN_TLS_CLIENT, why, sizeof(why)),
            RN_ENOTLS);
  ASSERT(strstr(why, "without OpenSSL") != NULL);
  ASSERT_STR_EQ(rn_err_name(RN_ENOTLS), "ENOTLS");
  fprintf(stderr, "built without OpenSSL: RN_ENOTLS checked only\n");
  return 1;
}

static void test_handshake_and_data(void) {
  rn_buf_t wire;
  pair_t p;
  char subject[256];
  if (no_tls()) return;

  pair_open_trusted(&p, "localhost");
  ASSERT(!rn__tls_established(p.c));
  ASSERT_EQ(rn__tls_write(p.c, "x", 1, &p.c_plain), UV_EAGAIN);
  pump(&p, 0);
  ASSERT_OK(p.c_err);
  ASSERT_OK(p.s_err);
  ASSERT(rn__tls_established(p.c));
  ASSERT(rn__tls_established(p.s));
  ASSERT_EQ(p.c_got, 0); /* tickets and handshake: no data */
  ASSERT_EQ(p.s_got, 0);
  /* The client saw the server's certificate; no client certificate. */
  ASSERT_OK(rn__tls_peer_subject(p.c, subject, sizeof(subject)));
  ASSERT_STR_EQ(subject, "CN=localhost");
  ASSERT_EQ(rn__tls_peer_subject(p.s, subject, sizeof(subject)), UV_ENOENT);
  ASSERT_EQ(rn__tls_peer_subject(p.c, subject, 4), UV_ENOBUFS);

  rn_buf_init(&wire);
  ASSERT_OK(rn__tls_write(p.c, "PING\r\n", 6, &wire));
  ASSERT_GT(wire.len, 6);
  ASSERT(memmem(wire.base, wire.len, "PING", 4) == NULL); /* encrypted */
  ASSERT_EQ(rn__tls_read(p.s, wire.base, wire.len, &p.s_plain),
            RN_TLS_GOT_DATA);
  ASSERT_EQ(p.s_plain.len, 6);
  ASSERT_MEM_EQ(p.s_plain.base, "PING\r\n", 6);
  wire.len = 0;
  ASSERT_OK(rn__tls_write(p.s, "+PONG\r\n", 7, &wire));
  ASSERT_EQ(rn__tls_read(p.c, wire.base, wire.len, &p.c_plain),
            RN_TLS_GOT_DATA);
  ASSERT_MEM_EQ(p.c_plain.base, "+PONG\r\n", 7);
  rn_buf_free(&wire);
  pair_close(&p);
}

/* An IP literal is checked against the certificate's IP addresses. */
static void test_ip_literal(void) {
  pair_t p;
  if (no_tls()) return;
  pair_open_trusted(&p, "127.0.0.1");
  pump(&p, 0);
  ASSERT_OK(p.c_err);
  ASSERT(rn__tls_established(p.c));
  pair_close(&p);

  pair_open_trusted(&p, "127.0.0.2");
  pump(&p, 0);
  ASSERT_EQ(p.c_err, RN_ETLSVERIFY);
  ASSERT(strncmp(rn__tls_why(p.c), "name mismatch", 13) == 0);
  pair_close(&p);
}

/* Records cut anywhere, down to a byte at a time, still make a handshake
 * and whole data. */
static void test_byte_at_a_time(void) {
  rn_buf_t wire;
  pair_t p;
  size_t i;
  if (no_tls()) return;

  pair_open_trusted(&p, "localhost");
  pump(&p, 1);
  ASSERT_OK(p.c_err);
  ASSERT_OK(p.s_err);
  ASSERT(rn__tls_established(p.s));
  rn_buf_init(&wire);
  ASSERT_OK(rn__tls_write(p.c, "hello", 5, &wire));
  for (i = 0; i < wire.len; i++) {
    int r = rn__tls_read(p.s, wire.base + i, 1, &p.s_plain);
    ASSERT_EQ(r, i + 1 < wire.len ? 0 : RN_TLS_GOT_DATA);
  }
  ASSERT_EQ(p.s_plain.len, 5);
  rn_buf_free(&wire);
  pair_close(&p);
}

/* One write per flush: a batch larger than a record is cut into records
 * by the filter and arrives whole. */
static void test_large_batch(void) {
  rn_buf_t wire;
  pair_t p;
  size_t n = 100000, i;
  char *big = malloc(n);
  if (no_tls()) return;

  ASSERT(big != NULL);
  for (i = 0; i < n; i++) big[i] = (char)(i * 7);
  pair_open_trusted(&p, "localhost");
  pump(&p, 0);
  rn_buf_init(&wire);
  ASSERT_OK(rn__tls_write(p.s, big, n, &wire));
  ASSERT_GT(wire.len, n);
  ASSERT_EQ(rn__tls_read(p.c, wire.base, wire.len, &p.c_plain),
            RN_TLS_GOT_DATA);
  ASSERT_EQ(p.c_plain.len, n);
  ASSERT_MEM_EQ(p.c_plain.base, big, n);
  rn_buf_free(&wire);
  free(big);
  pair_close(&p);
}

static void expect_refused(const char *ca, const char *cert, const char *host,
                           const char *why) {
  rn_tls_options_t co, so;
  pair_t p;
  client_options(&co, ca);
  server_options(&so, cert);
  pair_open(&p, &co, &so, host);
  pump(&p, 0);
  ASSERT_EQ(p.c_err, RN_ETLSVERIFY);
  if (strncmp(rn__tls_why(p.c), why, strlen(why)) != 0) {
    fprintf(stderr, "reason: %s (expected %s...)\n", rn__tls_why(p.c), why);
    ASSERT(0);
  }
  ASSERT(!rn__tls_established(p.c));
  /* The client's alert ends the server's handshake too, as a plain
   * failure: it did not refuse anything itself. */
  ASSERT_EQ(p.s_err, RN_ETLS);
  ASSERT(!rn__tls_established(p.s));
  /* A failed session stays failed. */
  ASSERT_EQ(rn__tls_read(p.c, "x", 1, &p.c_plain), RN_ETLS);
  pair_close(&p);
}

static void test_unknown_ca(void) {
  if (no_tls()) return;
  expect_refused("wrong-ca.pem", "server", "localhost", "unknown CA");
}

static void test_wrong_name(void) {
  if (no_tls()) return;
  expect_refused("ca.pem", "server", "db.example", "name mismatch");
}

static void test_expired(void) {
  if (no_tls()) return;
  expect_refused("ca.pem", "expired", "localhost", "expired");
}

/* Verification is the default: without cafile the system's trust store
 * is used, which does not know the test CA. */
static void test_system_store_by_default(void) {
  if (no_tls()) return;
  expect_refused(NULL, "server", "localhost", "unknown CA");
}

/* insecure is the explicit opt-out: wrong CA, wrong name, expired, all
 * accepted. */
static void test_insecure(void) {
  rn_tls_options_t co, so;
  pair_t p;
  if (no_tls()) return;
  client_options(&co, "wrong-ca.pem");
  co.insecure = 1;
  server_options(&so, "expired");
  pair_open(&p, &co, &so, "db.example");
  pump(&p, 0);
  ASSERT_OK(p.c_err);
  ASSERT_OK(p.s_err);
  ASSERT(rn__tls_established(p.c));
  pair_close(&p);
}

/* server_name wins over the endpoint's host. */
static void test_server_name(void) {
  rn_tls_options_t co, so;
  pair_t p;
  if (no_tls()) return;
  client_options(&co, "ca.pem");
  co.server_name = "localhost";
  server_options(&so, "server");
  pair_open(&p, &co, &so, "10.1.2.3");
  pump(&p, 0);
  ASSERT_OK(p.c_err);
  ASSERT(rn__tls_established(p.c));
  pair_close(&p);
}

/* TLS 1.3 servers send session tickets after the handshake: bytes that
 * arrive on an idle pooled connection and are not application data. The
 * idle check must read them as "nothing", and still see data, the
 * close_notify and EOF. */
static void test_tickets_are_not_data(void) {
  rn_buf_t wire;
  pair_t p;
  int rounds;
  if (no_tls()) return;

  pair_open_trusted(&p, "localhost");
  rn_buf_init(&wire);
  /* Handshake until the client is done; the server's last flight (its
   * tickets) is then still on the wire. */
  ASSERT_OK(rn__tls_handshake(p.c));
  for (rounds = 0; rounds < 10 && !rn__tls_established(p.s); rounds++) {
    pass(p.c, p.s, &p.s_plain, &p.s_got, &p.s_err, 0);
    if (!rn__tls_established(p.s))
      pass(p.s, p.c, &p.c_plain, &p.c_got, &p.c_err, 0);
  }
  ASSERT(rn__tls_established(p.c));
  ASSERT(rn__tls_established(p.s));
  ASSERT_OK(rn__tls_pending(p.s, &wire));
  ASSERT_GT(wire.len, 100); /* the tickets */
  ASSERT_EQ(rn__tls_idle_check(p.c, wire.base, (ssize_t)wire.len), 0);
  ASSERT_EQ(rn__tls_idle_check(p.c, NULL, 0), 0);
  wire.len = 0;
  ASSERT_OK(rn__tls_write(p.s, "+stray\r\n", 8, &wire));
  ASSERT_EQ(rn__tls_idle_check(p.c, wire.base, (ssize_t)wire.len), 1);
  wire.len = 0;
  rn__tls_close(p.s);
  ASSERT_OK(rn__tls_pending(p.s, &wire));
  ASSERT_EQ(rn__tls_idle_check(p.c, wire.base, (ssize_t)wire.len), 1);
  ASSERT_EQ(rn__tls_idle_check(p.c, NULL, UV_EOF), 1);
  rn_buf_free(&wire);
  pair_close(&p);
}

/* close_notify on orderly close, seen by the peer as such. */
static void test_close_notify(void) {
  rn_buf_t wire;
  pair_t p;
  if (no_tls()) return;
  pair_open_trusted(&p, "localhost");
  pump(&p, 0);
  rn_buf_init(&wire);
  ASSERT_OK(rn__tls_write(p.c, "last", 4, &wire));
  rn__tls_close(p.c);
  ASSERT_OK(rn__tls_pending(p.c, &wire));
  /* Data and the close in one read: both reported, data first. */
  ASSERT_EQ(rn__tls_read(p.s, wire.base, wire.len, &p.s_plain),
            RN_TLS_GOT_DATA | RN_TLS_GOT_CLOSE_NOTIFY);
  ASSERT_EQ(p.s_plain.len, 4);
  rn_buf_free(&wire);
  pair_close(&p);

  /* A session that never finished its handshake sends nothing. */
  pair_open_trusted(&p, "localhost");
  rn__tls_close(p.s);
  ASSERT(!rn__tls_want_write(p.s));
  pair_close(&p);
}

/* verify_client: the client's certificate is checked and its subject
 * known; a client without one is refused as a verification failure. */
static void test_client_certificate(void) {
  rn_tls_options_t co, so;
  pair_t p;
  char subject[256];
  if (no_tls()) return;

  client_options(&co, "ca.pem");
  co.certificate = test_cert("client.pem");
  co.key = test_cert("client.key");
  server_options(&so, "server");
  so.cafile = test_cert("ca.pem");
  so.verify_client = 1;
  pair_open(&p, &co, &so, "localhost");
  pump(&p, 0);
  ASSERT_OK(p.c_err);
  ASSERT_OK(p.s_err);
  ASSERT(rn__tls_established(p.s));
  ASSERT_OK(rn__tls_peer_subject(p.s, subject, sizeof(subject)));
  ASSERT_STR_EQ(subject, "CN=resilnet-test-client,O=resilnet");
  pair_close(&p);

  co.certificate = co.key = NULL;
  pair_open(&p, &co, &so, "localhost");
  pump(&p, 0);
  ASSERT_EQ(p.s_err, RN_ETLSVERIFY);
  ASSERT_STR_EQ(rn__tls_why(p.s), "no client certificate");
  pair_close(&p);

  /* A certificate from another CA. */
  so.cafile = test_cert("wrong-ca.pem");
  co.certificate = test_cert("client.pem");
  co.key = test_cert("client.key");
  pair_open(&p, &co, &so, "localhost");
  pump(&p, 0);
  ASSERT_EQ(p.s_err, RN_ETLSVERIFY);
  ASSERT(strncmp(rn__tls_why(p.s), "unknown CA", 10) == 0);
  pair_close(&p);
}

/* Bytes that are not TLS (a plaintext client on a TLS port). */
static void test_garbage(void) {
  static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  rn_tls_options_t so;
  rn__tls_ctx_t *ctx;
  rn__tls_t *s;
  rn_buf_t plain;
  if (no_tls()) return;

  server_options(&so, "server");
  ASSERT_OK(rn__tls_ctx_new(&so, RN_TLS_SERVER, &ctx, NULL, 0));
  ASSERT_OK(rn__tls_new(ctx, NULL, &s));
  rn_buf_init(&plain);
  ASSERT_EQ(rn__tls_read(s, http, sizeof(http) - 1, &plain), RN_ETLS);
  ASSERT(rn__tls_why(s)[0] != '\0');
  ASSERT_EQ(plain.len, 0);
  rn_buf_free(&plain);
  rn__tls_free(s);
  rn__tls_ctx_unref(ctx);
}

/* A peer that claims a record longer than TLS allows (2^14 plus the
 * expansion) is refused at the header, before a byte of it is buffered or
 * decrypted: nothing reaches plain, and it stays refused. */
static void test_oversized_record(void) {
  static const char header[] = {23, 3, 3, (char)0xff, (char)0xff};
  static char rest[70000];
  pair_t p;
  if (no_tls()) return;
  pair_open_trusted(&p, "localhost");
  pump(&p, 0);
  ASSERT(rn__tls_established(p.c));
  ASSERT_EQ(rn__tls_read(p.c, header, sizeof(header), &p.c_plain), RN_ETLS);
  ASSERT(rn__tls_why(p.c)[0] != '\0');
  ASSERT_EQ(rn__tls_read(p.c, rest, sizeof(rest), &p.c_plain), RN_ETLS);
  ASSERT_EQ(p.c_plain.len, 0);
  pair_close(&p);
}

#ifdef RESILNET_HAVE_TLS
#include <openssl/ssl.h>

/* A TLS 1.2 peer of plain OpenSSL on memory BIOs (renegotiation exists in
 * 1.2 only), for the renegotiation test. */
typedef struct {
  SSL_CTX *ctx;
  SSL *ssl;
  BIO *in, *out;
} raw_t;

static void raw_open(raw_t *r, int server) {
  r->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  ASSERT(r->ctx != NULL);
  SSL_CTX_set_max_proto_version(r->ctx, TLS1_2_VERSION);
  if (server) {
    ASSERT_EQ(SSL_CTX_use_certificate_chain_file(r->ctx,
                                                 test_cert("server.pem")), 1);
    ASSERT_EQ(SSL_CTX_use_PrivateKey_file(r->ctx, test_cert("server.key"),
                                          SSL_FILETYPE_PEM), 1);
  }
  r->ssl = SSL_new(r->ctx);
  r->in = BIO_new(BIO_s_mem());
  r->out = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(r->in, -1);
  SSL_set_bio(r->ssl, r->in, r->out);
  if (server)
    SSL_set_accept_state(r->ssl);
  else
    SSL_set_connect_state(r->ssl);
}

static void raw_close(raw_t *r) {
  SSL_free(r->ssl);
  SSL_CTX_free(r->ctx);
}

/* What the raw peer wrote, read by t; returns rn__tls_read's result. */
static int raw_to(raw_t *r, rn__tls_t *t, rn_buf_t *plain) {
  static char wire[65536];
  int n = BIO_read(r->out, wire, sizeof(wire));
  return n > 0 ? rn__tls_read(t, wire, (size_t)n, plain) : 0;
}

static void raw_from(raw_t *r, rn__tls_t *t) {
  rn_buf_t wire;
  rn_buf_init(&wire);
  ASSERT_OK(rn__tls_pending(t, &wire));
  if (wire.len > 0) ASSERT_EQ(BIO_write(r->in, wire.base, (int)wire.len),
                              (int)wire.len);
  rn_buf_free(&wire);
}

static void raw_handshake(raw_t *r, rn__tls_t *t, rn_buf_t *plain) {
  int i;
  for (i = 0; i < 8 && !(rn__tls_established(t) &&
                         SSL_is_init_finished(r->ssl)); i++) {
    (void)SSL_do_handshake(r->ssl);
    ASSERT(raw_to(r, t, plain) >= 0);
    raw_from(r, t);
  }
  ASSERT(rn__tls_established(t) && SSL_is_init_finished(r->ssl));
  ASSERT_STR_EQ(SSL_get_version(r->ssl), "TLSv1.2");
}

/* Renegotiation (a way to change who the peer is mid-connection) is
 * refused both ways: our client answers a server's HelloRequest with a
 * no_renegotiation alert, our server does the same to a new ClientHello;
 * the peer gives up, and the session ends with ETLS, having handed no
 * byte of the attempt to plain. */
static void test_renegotiation_refused(void) {
  rn_tls_options_t co, so;
  rn__tls_ctx_t *ctx;
  rn__tls_t *t;
  rn_buf_t plain;
  raw_t r;
  char b[64];
  int ret;
  if (no_tls()) return;

  /* A server asks our client to renegotiate. */
  client_options(&co, "ca.pem");
  ASSERT_OK(rn__tls_ctx_new(&co, RN_TLS_CLIENT, &ctx, NULL, 0));
  ASSERT_OK(rn__tls_new(ctx, "localhost", &t));
  rn_buf_init(&plain);
  raw_open(&r, 1);
  ASSERT_OK(rn__tls_handshake(t));
  raw_from(&r, t);
  raw_handshake(&r, t, &plain);
  ASSERT_EQ(SSL_renegotiate(r.ssl), 1);
  (void)SSL_do_handshake(r.ssl); /* the HelloRequest */
  ASSERT_EQ(raw_to(&r, t, &plain), 0);
  ASSERT(rn__tls_want_write(t)); /* the refusal */
  raw_from(&r, t);
  ret = SSL_read(r.ssl, b, sizeof(b));
  ASSERT_EQ(SSL_get_error(r.ssl, ret), SSL_ERROR_SSL); /* it gave up */
  ASSERT_EQ(raw_to(&r, t, &plain), RN_ETLS);
  ASSERT_EQ(plain.len, 0);
  raw_close(&r);
  rn__tls_free(t);
  rn__tls_ctx_unref(ctx);

  /* A client asks our server to renegotiate. */
  server_options(&so, "server");
  ASSERT_OK(rn__tls_ctx_new(&so, RN_TLS_SERVER, &ctx, NULL, 0));
  ASSERT_OK(rn__tls_new(ctx, NULL, &t));
  raw_open(&r, 0);
  raw_handshake(&r, t, &plain);
  ASSERT_EQ(SSL_renegotiate(r.ssl), 1);
  (void)SSL_do_handshake(r.ssl); /* a new ClientHello */
  ASSERT_EQ(raw_to(&r, t, &plain), 0);
  ASSERT(rn__tls_want_write(t));
  raw_from(&r, t);
  ret = SSL_read(r.ssl, b, sizeof(b));
  ASSERT_EQ(SSL_get_error(r.ssl, ret), SSL_ERROR_SSL);
  ASSERT_EQ(raw_to(&r, t, &plain), RN_ETLS);
  ASSERT_EQ(plain.len, 0);
  raw_close(&r);
  rn__tls_free(t);
  rn__tls_ctx_unref(ctx);
  rn_buf_free(&plain);
}
#else
static void test_renegotiation_refused(void) { (void)no_tls(); }
#endif

/* A context outlives its last owner while sessions use it (a reload
 * swaps the server's context; open connections keep theirs). */
static void test_context_refcount(void) {
  pair_t p;
  if (no_tls()) return;
  pair_open_trusted(&p, "localhost");
  rn__tls_ctx_unref(p.sctx);
  rn__tls_ctx_unref(p.cctx);
  p.sctx = p.cctx = NULL;
  pump(&p, 0);
  ASSERT(rn__tls_established(p.c));
  pair_close(&p);
}

static void test_options_checked(void) {
  rn_tls_options_t o;
  char why[RN_TLS_WHY_SIZE];
  if (no_tls()) return;

  rn_tls_options_init(&o);
  ASSERT_OK(rn_tls_options_check(&o, RN_TLS_CLIENT, why, sizeof(why)));
  ASSERT_EQ(rn_tls_options_check(&o, RN_TLS_SERVER, why, sizeof(why)),
            UV_EINVAL);
  ASSERT(strstr(why, "certificate and key") != NULL);
  o.certificate = test_cert("server.pem");
  ASSERT_EQ(rn_tls_options_check(&o, RN_TLS_CLIENT, why, sizeof(why)),
            UV_EINVAL);
  o.key = test_cert("client.key"); /* not the certificate's */
  ASSERT_EQ(rn_tls_options_check(&o, RN_TLS_SERVER, why, sizeof(why)),
            RN_ETLS);
  ASSERT(strstr(why, "key values mismatch") != NULL);
  o.key = "/nonexistent/server.key";
  ASSERT_EQ(rn_tls_options_check(&o, RN_TLS_SERVER, why, sizeof(why)),
            RN_ETLS);
  ASSERT(strstr(why, "cannot load key") != NULL);
  o.key = test_cert("server.key");
  ASSERT_OK(rn_tls_options_check(&o, RN_TLS_SERVER, why, sizeof(why)));
  o.verify_client = 1;
  ASSERT_EQ(rn_tls_options_check(&o, RN_TLS_SERVER, why, sizeof(why)),
            UV_EINVAL);
  o.cafile = "/nonexistent/ca.pem";
  ASSERT_EQ(rn_tls_options_check(&o, RN_TLS_SERVER, why, sizeof(why)),
            RN_ETLS);
  ASSERT(strstr(why, "cafile") != NULL);
  ASSERT_STR_EQ(rn_err_name(RN_ETLSVERIFY), "ETLSVERIFY");
  ASSERT_STR_EQ(rn_err_name(RN_ETLS), "ETLS");
}

TEST_LIST_START
  TEST_ENTRY(test_handshake_and_data)
  TEST_ENTRY(test_ip_literal)
  TEST_ENTRY(test_byte_at_a_time)
  TEST_ENTRY(test_large_batch)
  TEST_ENTRY(test_unknown_ca)
  TEST_ENTRY(test_wrong_name)
  TEST_ENTRY(test_expired)
  TEST_ENTRY(test_system_store_by_default)
  TEST_ENTRY(test_insecure)
  TEST_ENTRY(test_server_name)
  TEST_ENTRY(test_tickets_are_not_data)
  TEST_ENTRY(test_close_notify)
  TEST_ENTRY(test_client_certificate)
  TEST_ENTRY(test_garbage)
  TEST_ENTRY(test_oversized_record)
  TEST_ENTRY(test_renegotiation_refused)
  TEST_ENTRY(test_context_refcount)
  TEST_ENTRY(test_options_checked)
TEST_LIST_END

/* rnp authentication (issue 17, resilnet/auth.h) over real loopback
 * sockets: a raw client without a token, with a wrong one, with the right
 * one, counting handler executions; dedupe keys scoped per identity; the
 * check callback; a verified client certificate as the credential over
 * TLS; the AUTH field on the wire. */
#include "resilnet.h"
#include "task.h"
#include "rnp_client.h"
#include "tls.h" /* the TLS filter, for a client certificate */
#include "tls_certs.h"
#include "tls_client.h"
#include "wait.h"

#include <stdio.h>

/* ------------------------------------------------------------------------ */
/* The server under test                                                      */

static rn_loop_t *loop;
static uv_loop_t *uv;
static rn_server_t *server;
static int port;
static int closed;
static unsigned handled;      /* handler executions */
static unsigned events[32];   /* by rn_server_event_type_t */
static char last_detail[128]; /* RN_SERVER_EVENT_AUTH's */
static int last_error;
static char last_identity[RN_AUTH_IDENTITY_MAX + 1];

/* Replies "<identity>:<body>#<executions so far>": whose answer it is and
 * which execution made it. */
static void on_request(rn_server_t *s, rn_request_t *req, const char *body,
                       size_t len) {
  char out[RN_AUTH_IDENTITY_MAX + 128];
  int n;
  (void)s;
  handled++;
  if (rn_request_identity(req, last_identity, sizeof(last_identity)) != 0)
    strcpy(last_identity, "-");
  n = snprintf(out, sizeof(out), "%s:%.*s#%u", last_identity, (int)len, body,
               handled);
  ASSERT_OK(rn_request_reply(req, out, (size_t)n));
}

static void on_event(rn_server_t *s, const rn_server_event_t *ev) {
  (void)s;
  ASSERT_LT(ev->type, 32);
  events[ev->type]++;
  if (ev->type == RN_SERVER_EVENT_AUTH) {
    last_error = ev->error;
    ASSERT(ev->detail != NULL);
    snprintf(last_detail, sizeof(last_detail), "%s", ev->detail);
  }
}

static void on_closed(rn_server_t *s) {
  (void)s;
  closed = 1;
}

static int is_closed(void *arg) {
  (void)arg;
  return closed;
}

/* tls may be NULL; so may auth (a server as before). */
static void start(const rn_server_auth_options_t *auth,
                  const rn_tls_options_t *tls, int dedupe) {
  rn_server_options_t o;
  char host[64];
  ASSERT_OK(rn_loop_new(NULL, &loop));
  uv = rn_loop_uv(loop);
  closed = 0;
  handled = 0;
  memset(events, 0, sizeof(events));
  last_detail[0] = '\0';
  last_error = 0;
  rn_server_options_init(&o);
  o.listen = "127.0.0.1:0";
  o.codec.protocol = RN_PROTOCOL_RNP;
  o.on_request = on_request;
  o.on_event = on_event;
  o.dedupe.on = dedupe;
  o.auth = auth;
  o.tls = tls;
  ASSERT_OK(rn_server_new(loop, &o, &server));
  ASSERT_OK(rn_server_address(server, host, sizeof(host), &port));
}

static void finish(void) {
  rn_server_close(server, on_closed);
  RUN_UNTIL(uv, is_closed(NULL), 5000);
  ASSERT_OK(rn_loop_free(loop));
}

/* Two identities, alice with two tokens (a rotation), bob with one. */
static const rn_auth_token_t tokens[] = {
    {"alice-secret-1", 0, "alice"},
    {"alice-secret-2", 0, "alice"},
    {"bob-secret", 0, "bob"},
};

static void tokens_options(rn_server_auth_options_t *a) {
  rn_server_auth_options_init(a);
  a->tokens = tokens;
  a->token_count = RN_ARRAY_SIZE(tokens);
}

/* ------------------------------------------------------------------------ */
/* A raw client with a token                                                  */

static void hello_with(rnp_client_t *c, const char *token) {
  rn_buf_t b;
  rn_buf_init(&b);
  ASSERT_OK(rn_rnp_encode_hello(&b, 1 << 20, token,
                                token ? strlen(token) : 0));
  rx_send_raw(c, b.base, b.len);
  rn_buf_free(&b);
  c->next_id = 2;
}

/* Connects, sends a HELLO with token and, pipelined right behind it
 * without waiting, `pipelined` requests. */
static void open_with(rnp_client_t *c, const char *token, int pipelined) {
  int i;
  rx_connect(uv, c, port);
  hello_with(c, token);
  for (i = 0; i < pipelined; i++) (void)rx_request(c, "early", NULL, -1, 0);
}

/* A refused connection: ERROR on the HELLO's id, UNAUTHENTICATED, not
 * executed, and nothing else; then the server closes it. */
static void expect_refused(rnp_client_t *c) {
  rx_wait_frames(uv, c, 1);
  RUN_UNTIL(uv, rx_eof(c), 5000);
  ASSERT_EQ(c->count, 1);
  ASSERT_EQ(c->frames[0].type, RN_RNP_ERROR);
  ASSERT_EQ(c->frames[0].id, 1);
  ASSERT_EQ(c->frames[0].code, RN_RNP_ERR_UNAUTHENTICATED);
  ASSERT_EQ(c->frames[0].flags, RN_RNP_NOT_EXECUTED);
  ASSERT(strstr(c->frames[0].payload, "unauthenticated") != NULL);
  ASSERT_EQ(c->bad, 0);
  rx_close(uv, c);
}

/* ------------------------------------------------------------------------ */
/* Cases                                                                      */

/* No token, a wrong one (also one a byte short of a right one, and the
 * right one with a byte more): refused, no handler ran, even for requests
 * pipelined behind the HELLO. Each counted and reported, the token
 * nowhere in the report. */
static void test_refused_without_the_token(void) {
  static const char *const wrong[] = {"wrong", "alice-secret-",
                                      "alice-secret-10", "bob-secreT"};
  rn_server_auth_options_t a;
  rn_server_stats_t st;
  rnp_client_t c;
  size_t i;

  tokens_options(&a);
  start(&a, NULL, 0);
  open_with(&c, NULL, 3);
  expect_refused(&c);
  ASSERT_STR_EQ(last_detail, "no token");
  ASSERT_EQ(last_error, RN_EAUTH);
  for (i = 0; i < RN_ARRAY_SIZE(wrong); i++) {
    open_with(&c, wrong[i], 2);
    expect_refused(&c);
    ASSERT_STR_EQ(last_detail, "unknown token");
  }
  ASSERT_EQ(handled, 0);
  rn_server_stats(server, &st);
  ASSERT_EQ(st.auth_refused, 1 + RN_ARRAY_SIZE(wrong));
  ASSERT_EQ(events[RN_SERVER_EVENT_AUTH], 1 + RN_ARRAY_SIZE(wrong));
  ASSERT_EQ(st.handled, 0);
  ASSERT_EQ(st.protocol_errors, 0);
  ASSERT_EQ(events[RN_SERVER_EVENT_PROTOCOL], 0);
  finish();
}

/* The right token: the HELLO is answered and requests run, as the
 * token's identity; every listed token works. */
static void test_right_token_runs(void) {
  rn_server_auth_options_t a;
  rn_server_stats_t st;
  rnp_client_t c;
  const rx_frame_t *r;
  uint64_t id;

  tokens_options(&a);
  start(&a, NULL, 0);
  open_with(&c, "bob-secret", 1); /* pipelined behind the HELLO: runs */
  rx_wait_frames(uv, &c, 2);
  ASSERT_EQ(c.frames[0].type, RN_RNP_HELLO);
  r = rx_find(&c, 2);
  ASSERT(r != NULL && r->type == RN_RNP_REPLY);
  ASSERT_STR_EQ(r->payload, "bob:early#1");
  rx_close(uv, &c);

  open_with(&c, "alice-secret-2", 0);
  rx_wait_frames(uv, &c, 1);
  ASSERT_EQ(c.frames[0].type, RN_RNP_HELLO);
  id = rx_request(&c, "hi", NULL, 1000, 0);
  rx_wait_frames(uv, &c, 2);
  r = rx_find(&c, id);
  ASSERT(r != NULL && r->type == RN_RNP_REPLY);
  ASSERT_STR_EQ(r->payload, "alice:hi#2");
  rx_close(uv, &c);
  ASSERT_EQ(handled, 2);
  rn_server_stats(server, &st);
  ASSERT_EQ(st.auth_refused, 0);
  ASSERT_EQ(events[RN_SERVER_EVENT_AUTH], 0);
  finish();
}

/* A server without auth is the server of before: a client that sends a
 * token anyway is served, and handlers have no identity. */
static void test_no_auth_as_before(void) {
  rnp_client_t c;
  const rx_frame_t *r;
  uint64_t id;

  start(NULL, NULL, 0);
  open_with(&c, "some-token", 0);
  rx_wait_frames(uv, &c, 1);
  ASSERT_EQ(c.frames[0].type, RN_RNP_HELLO);
  id = rx_request(&c, "x", NULL, -1, 0);
  rx_wait_frames(uv, &c, 2);
  r = rx_find(&c, id);
  ASSERT(r != NULL && r->type == RN_RNP_REPLY);
  ASSERT_STR_EQ(r->payload, "-:x#1");
  rx_close(uv, &c);
  finish();
}

/* The same KEY from two identities is two keys: each runs once and gets
 * its own answer; a duplicate gets its own identity's recorded answer,
 * whichever token of that identity it came with. */
static void test_dedupe_scoped_by_identity(void) {
  rn_server_auth_options_t a;
  rn_server_stats_t st;
  rnp_client_t alice, bob, again;
  const rx_frame_t *r;
  uint64_t ida, idb, id;

  tokens_options(&a);
  start(&a, NULL, 1);
  open_with(&alice, "alice-secret-1", 0);
  open_with(&bob, "bob-secret", 0);
  rx_wait_frames(uv, &alice, 1);
  rx_wait_frames(uv, &bob, 1);
  ida = rx_request(&alice, "charge", "order-17", -1, 0);
  rx_wait_frames(uv, &alice, 2);
  idb = rx_request(&bob, "charge", "order-17", -1, 0);
  rx_wait_frames(uv, &bob, 2);
  ASSERT_EQ(handled, 2);
  r = rx_find(&alice, ida);
  ASSERT(r != NULL && r->type == RN_RNP_REPLY);
  ASSERT_STR_EQ(r->payload, "alice:charge#1");
  r = rx_find(&bob, idb);
  ASSERT(r != NULL && r->type == RN_RNP_REPLY);
  ASSERT_STR_EQ(r->payload, "bob:charge#2");

  /* Alice again, on another connection with her other token: her
   * recorded answer, nothing runs. */
  open_with(&again, "alice-secret-2", 0);
  rx_wait_frames(uv, &again, 1);
  id = rx_request(&again, "charge", "order-17", -1, 0);
  rx_wait_frames(uv, &again, 2);
  r = rx_find(&again, id);
  ASSERT(r != NULL && r->type == RN_RNP_REPLY);
  ASSERT_STR_EQ(r->payload, "alice:charge#1");
  ASSERT_EQ(handled, 2);
  rn_server_stats(server, &st);
  ASSERT_EQ(st.replayed, 1);
  rx_close(uv, &again);
  rx_close(uv, &bob);
  rx_close(uv, &alice);
  finish();
}

/* The callback decides what no listed token settles; its identity is the
 * connection's. */
static int check_calls;
static int check_had_subject;

static int check(void *data, const rn_auth_attempt_t *at, char *identity,
                 size_t size) {
  ASSERT_STR_EQ((const char *)data, "check-data");
  ASSERT(at->server == server);
  check_calls++;
  if (at->subject != NULL) check_had_subject = 1;
  if (at->token != NULL && at->token_len == 8 &&
      memcmp(at->token, "cb-token", 8) == 0) {
    snprintf(identity, size, "from-callback");
    return 0;
  }
  return RN_EAUTH;
}

static void test_check_callback(void) {
  rn_server_auth_options_t a;
  rnp_client_t c;
  uint64_t id;

  tokens_options(&a);
  a.check = check;
  a.data = "check-data";
  check_calls = 0;
  check_had_subject = 0;
  start(&a, NULL, 0);
  /* A listed token does not reach the callback. */
  open_with(&c, "bob-secret", 0);
  rx_wait_frames(uv, &c, 1);
  ASSERT_EQ(c.frames[0].type, RN_RNP_HELLO);
  rx_close(uv, &c);
  ASSERT_EQ(check_calls, 0);

  open_with(&c, "cb-token", 0);
  rx_wait_frames(uv, &c, 1);
  ASSERT_EQ(c.frames[0].type, RN_RNP_HELLO);
  id = rx_request(&c, "q", NULL, -1, 0);
  rx_wait_frames(uv, &c, 2);
  ASSERT_STR_EQ(rx_find(&c, id)->payload, "from-callback:q#1");
  rx_close(uv, &c);

  open_with(&c, "other", 1);
  expect_refused(&c);
  ASSERT_STR_EQ(last_detail, "refused by the check callback");
  open_with(&c, NULL, 1);
  expect_refused(&c);
  ASSERT_EQ(check_calls, 3);
  ASSERT_EQ(check_had_subject, 0); /* no TLS: no subject */
  ASSERT_EQ(handled, 1);
  finish();
}

/* rn_server_new refuses what cannot work. */
static void test_bad_options(void) {
  static const rn_auth_token_t empty[] = {{"", 0, "x"}};
  static char long_token[RN_RNP_AUTH_MAX + 2];
  rn_auth_token_t too_long[1];
  rn_server_auth_options_t a;
  rn_server_options_t o;
  rn_server_t *s;

  ASSERT_OK(rn_loop_new(NULL, &loop));
  rn_server_options_init(&o);
  o.listen = "127.0.0.1:0";
  o.codec.protocol = RN_PROTOCOL_RNP;
  o.on_request = on_request;
  o.auth = &a;
  rn_server_auth_options_init(&a);
  ASSERT_EQ(rn_server_new(loop, &o, &s), UV_EINVAL); /* admits no one */
  a.certificate = 1; /* without TLS, no certificate is ever verified */
  ASSERT_EQ(rn_server_new(loop, &o, &s), UV_EINVAL);
  a.certificate = 0;
  a.tokens = empty;
  a.token_count = 1;
  ASSERT_EQ(rn_server_new(loop, &o, &s), UV_EINVAL);
  memset(long_token, 'x', sizeof(long_token) - 1);
  too_long[0].token = long_token;
  too_long[0].len = 0;
  too_long[0].identity = NULL;
  a.tokens = too_long;
  ASSERT_EQ(rn_server_new(loop, &o, &s), UV_EINVAL);
  too_long[0].len = RN_RNP_AUTH_MAX; /* the longest is fine */
  /* resp has no HELLO to carry a token */
  o.codec.protocol = RN_PROTOCOL_RESP;
  ASSERT_EQ(rn_server_new(loop, &o, &s), UV_EINVAL);
  o.codec.protocol = RN_PROTOCOL_RNP;
  ASSERT_OK(rn_server_new(loop, &o, &s));
  server = s;
  closed = 0;
  uv = rn_loop_uv(loop);
  finish();
}

/* A token of the longest length, without an identity: "token-1". */
static void test_longest_token_default_identity(void) {
  static char token[RN_RNP_AUTH_MAX + 1];
  rn_auth_token_t t[1];
  rn_server_auth_options_t a;
  rnp_client_t c;
  uint64_t id;

  memset(token, 'k', RN_RNP_AUTH_MAX);
  t[0].token = token;
  t[0].len = 0;
  t[0].identity = NULL;
  rn_server_auth_options_init(&a);
  a.tokens = t;
  a.token_count = 1;
  start(&a, NULL, 0);
  open_with(&c, token, 0);
  rx_wait_frames(uv, &c, 1);
  ASSERT_EQ(c.frames[0].type, RN_RNP_HELLO);
  id = rx_request(&c, "z", NULL, -1, 0);
  rx_wait_frames(uv, &c, 2);
  ASSERT_STR_EQ(rx_find(&c, id)->payload, "token-1:z#1");
  rx_close(uv, &c);
  finish();
}

/* ------------------------------------------------------------------------ */
/* The AUTH field on the wire                                                 */

static void test_wire(void) {
  rn_rnp_frame_t f;
  rn_buf_t b;
  char big[RN_RNP_AUTH_MAX + 1];
  /* A HELLO, then the same with AUTH "ab" (tag 130 = 0x82). */
  static const unsigned char with_auth[] = {
      0x00, 0x00, 0x00, 0x1a, 0x01, 0x00, 0x00, 0x0e, 0, 0, 0, 0, 0, 0, 0, 1,
      0x01, 0x02, 0x00, 0x01, 0x02, 0x04, 0x00, 0x10, 0x00, 0x00,
      0x82, 0x02, 'a',  'b'};

  rn_buf_init(&b);
  ASSERT_OK(rn_rnp_encode_hello(&b, 1 << 20, "ab", 2));
  ASSERT_EQ(b.len, sizeof(with_auth));
  ASSERT_MEM_EQ(b.base, with_auth, sizeof(with_auth));
  ASSERT_EQ(rn_rnp_parse(b.base, b.len, RN_DEFAULT_MAX_FRAME, &f), 1);
  ASSERT_EQ(f.auth_len, 2);
  ASSERT_MEM_EQ(f.auth, "ab", 2);
  ASSERT_EQ(f.max_frame, 1 << 20);
  ASSERT_EQ(f.id, 1);
  b.len = 0;
  ASSERT_OK(rn_rnp_encode_hello(&b, 1 << 20, NULL, 0));
  ASSERT_EQ(rn_rnp_parse(b.base, b.len, RN_DEFAULT_MAX_FRAME, &f), 1);
  ASSERT(f.auth == NULL);
  ASSERT_EQ(f.auth_len, 0);
  memset(big, 't', sizeof(big));
  ASSERT_EQ(rn_rnp_encode_hello(&b, 1 << 20, big, 0), UV_EINVAL);
  ASSERT_EQ(rn_rnp_encode_hello(&b, 1 << 20, big, sizeof(big)), UV_EINVAL);
  b.len = 0;
  ASSERT_OK(rn_rnp_encode_hello(&b, 1 << 20, big, RN_RNP_AUTH_MAX));
  ASSERT_EQ(rn_rnp_parse(b.base, b.len, RN_DEFAULT_MAX_FRAME, &f), 1);
  ASSERT_EQ(f.auth_len, RN_RNP_AUTH_MAX);
  rn_buf_free(&b);

  /* AUTH is for HELLO: the encoder refuses it elsewhere. */
  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_PING;
  f.auth = "ab";
  f.auth_len = 2;
  rn_buf_init(&b);
  ASSERT_EQ(rn_rnp_encode(&b, &f, RN_DEFAULT_MAX_FRAME), UV_EINVAL);
  rn_buf_free(&b);
}

/* ------------------------------------------------------------------------ */
/* The client certificate as the credential (TLS with verify_client)         */

/* A client (tls_client.h) presenting the client certificate. */
static void tcl_open(tls_client_t *c) {
  rn_tls_options_t o;
  rn_tls_options_init(&o);
  o.cafile = test_cert("ca.pem");
  o.certificate = test_cert("client.pem");
  o.key = test_cert("client.key");
  tls_client_open(c, uv, port, &o);
}

/* The frames decrypted so far, parsed: n of them, the last in *last. */
static size_t tcl_frames(tls_client_t *c, rn_rnp_frame_t *last) {
  size_t pos = 0, n = 0;
  rn_rnp_frame_t f;
  while (rn_rnp_parse(c->plain.base + pos, c->plain.len - pos,
                      RN_DEFAULT_MAX_FRAME, &f) == 1) {
    *last = f;
    pos += f.size;
    n++;
  }
  return n;
}

typedef struct {
  tls_client_t *c;
  size_t n;
} tcl_wait_t;

static int tcl_has(void *arg) {
  tcl_wait_t *w = arg;
  rn_rnp_frame_t f;
  return w->c->eof || tcl_frames(w->c, &f) >= w->n;
}

/* HELLO (with token, or none) and one REQUEST "who", through TLS with the
 * client certificate. Returns the frames' count, the last in *last. */
static size_t tcl_exchange(const char *token, rn_rnp_frame_t *last,
                           char *copy, size_t copy_size) {
  tls_client_t c;
  tcl_wait_t w;
  rn_rnp_frame_t f;
  rn_buf_t frames;
  size_t n;

  tcl_open(&c);
  /* Generous: under valgrind on a loaded machine (four runs at once) the
   * handshake took over 5 s. */
  RUN_UNTIL(uv, tls_client_ready(&c), 30000);
  ASSERT_OK(c.err);
  rn_buf_init(&frames);
  ASSERT_OK(rn_rnp_encode_hello(&frames, 1 << 20, token,
                                token ? strlen(token) : 0));
  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_REQUEST;
  f.id = 2;
  f.payload = "who";
  f.payload_len = 3;
  ASSERT_OK(rn_rnp_encode(&frames, &f, RN_DEFAULT_MAX_FRAME));
  tls_client_send(&c, frames.base, frames.len);
  rn_buf_free(&frames);
  w.c = &c;
  w.n = 2;
  RUN_UNTIL(uv, tcl_has(&w), 5000);
  if (c.eof) test_run_for(uv, 50); /* what arrived with the EOF */
  n = tcl_frames(&c, last);
  snprintf(copy, copy_size, "%.*s", (int)last->payload_len, last->payload);
  tls_client_close(&c);
  return n;
}

static void test_client_certificate(void) {
  rn_server_auth_options_t a;
  rn_tls_options_t tls;
  rn_rnp_frame_t last;
  char text[256];

  if (!rn_tls_available()) {
    fprintf(stderr, "built without OpenSSL: skipped\n");
    return;
  }
  rn_tls_options_init(&tls);
  tls.certificate = test_cert("server.pem");
  tls.key = test_cert("server.key");
  tls.cafile = test_cert("ca.pem");
  tls.verify_client = 1;
  tokens_options(&a);
  a.certificate = 1;
  start(&a, &tls, 0);

  /* No token: the certificate is the credential, its subject the
   * identity. */
  ASSERT_EQ(tcl_exchange(NULL, &last, text, sizeof(text)), 2);
  ASSERT_EQ(last.type, RN_RNP_REPLY);
  ASSERT_STR_EQ(text, "CN=resilnet-test-client,O=resilnet:who#1");

  /* A listed token wins over the certificate. */
  ASSERT_EQ(tcl_exchange("bob-secret", &last, text, sizeof(text)), 2);
  ASSERT_STR_EQ(text, "bob:who#2");

  /* A wrong token is refused, certificate or not. */
  ASSERT_EQ(tcl_exchange("nope", &last, text, sizeof(text)), 1);
  ASSERT_EQ(last.type, RN_RNP_ERROR);
  ASSERT_EQ(last.error_code, RN_RNP_ERR_UNAUTHENTICATED);
  ASSERT_EQ(last.flags, RN_RNP_NOT_EXECUTED);
  ASSERT_EQ(handled, 2);
  ASSERT_EQ(events[RN_SERVER_EVENT_AUTH], 1);
  finish();

  /* The callback sees the subject. */
  rn_server_auth_options_init(&a);
  a.check = check;
  a.data = "check-data";
  check_had_subject = 0;
  check_calls = 0;
  start(&a, &tls, 0);
  ASSERT_EQ(tcl_exchange("cb-token", &last, text, sizeof(text)), 2);
  ASSERT_STR_EQ(text, "from-callback:who#1");
  ASSERT_EQ(check_had_subject, 1);
  finish();
}

TEST_LIST_START
  TEST_ENTRY(test_refused_without_the_token)
  TEST_ENTRY(test_right_token_runs)
  TEST_ENTRY(test_no_auth_as_before)
  TEST_ENTRY(test_dedupe_scoped_by_identity)
  TEST_ENTRY(test_check_callback)
  TEST_ENTRY(test_bad_options)
  TEST_ENTRY(test_longest_token_default_identity)
  TEST_ENTRY(test_wire)
  TEST_ENTRY(test_client_certificate)
TEST_LIST_END

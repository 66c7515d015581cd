/* resilnet's server over TLS (issue 17): real handshakes over loopback,
 * with clients resilnet did not write (redis-cli --tls, openssl s_client)
 * and with a small libuv client on the TLS filter, for every protocol.
 * Certificates: core/test/tls_certs.h. */
#define _GNU_SOURCE /* memmem */
#include "resilnet.h"
#include "server_fixture.h"
#include "task.h"
#include "tls.h"
#include "tls_certs.h"
#include "tls_client.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static rn_loop_t *loop;
static uv_timer_t guard;
static int guard_fired;

static void on_guard(uv_timer_t *t) {
  (void)t;
  guard_fired = 1;
}

/* Runs the loop until cond holds; fails after ms. */
#define RUN_UNTIL(cond, ms)                                                   \
  do {                                                                        \
    guard_fired = 0;                                                          \
    ASSERT_OK(uv_timer_start(&guard, on_guard, (ms), 0));                     \
    while (!(cond) && !guard_fired)                                           \
      uv_run(rn_loop_uv(loop), UV_RUN_ONCE);                                  \
    ASSERT_OK(uv_timer_stop(&guard));                                         \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: timed out waiting for %s\n", __FILE__,          \
              __LINE__, #cond);                                               \
      abort();                                                                \
    }                                                                         \
  } while (0)

static void open_loop(void) {
  ASSERT_OK(rn_loop_new(NULL, &loop));
  ASSERT_OK(uv_timer_init(rn_loop_uv(loop), &guard));
}

static void finish(void) {
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

/* ------------------------------------------------------------------------ */
/* The server under test                                                      */

static int handled;          /* requests that reached the handler */
static int events[32];       /* by rn_server_event_type_t */
static int last_tls_error;   /* RN_SERVER_EVENT_TLS: its error */
static char last_tls_why[RN_TLS_WHY_SIZE];
static int server_closed;

static void on_event(rn_server_t *s, const rn_server_event_t *ev) {
  (void)s;
  if ((unsigned)ev->type < 32) events[ev->type]++;
  if (ev->type == RN_SERVER_EVENT_TLS) {
    last_tls_error = ev->error;
    ASSERT(ev->detail != NULL);
    snprintf(last_tls_why, sizeof(last_tls_why), "%s", ev->detail);
  }
}

/* resp: WHO answers the client certificate's subject (or "-"); anything
 * else its last argument. line and length: the body back. rnp: "re:"
 * and the payload. */
static void on_request(rn_server_t *s, rn_request_t *req, const char *body,
                       size_t len) {
  rn_protocol_t protocol = rn_server_codec(s)->protocol;
  handled++;
  if (protocol == RN_PROTOCOL_RESP) {
    char subject[256];
    const char *arg;
    size_t n;
    if (len >= 3 && memmem(body, len, "WHO", 3) != NULL) {
      if (rn_request_peer_subject(req, subject, sizeof(subject)) != 0)
        strcpy(subject, "-");
      test_reply_bulk(req, subject, strlen(subject));
      return;
    }
    /* The last bulk string: after the last "\r\n" but one. */
    n = len - 2;
    arg = body + n;
    while (arg > body && arg[-1] != '\n') arg--;
    test_reply_bulk(req, arg, (size_t)(body + n - arg));
  } else if (protocol == RN_PROTOCOL_RNP) {
    char out[64];
    int n = snprintf(out, sizeof(out), "re:%.*s", (int)len, body);
    ASSERT_OK(rn_request_reply(req, out, (size_t)n));
  } else {
    char out[256];
    ASSERT_LT(len, sizeof(out));
    memcpy(out, body, len);
    out[len] = '\n';
    ASSERT_OK(rn_request_reply(req, out, len + 1));
  }
}

static void on_server_closed(rn_server_t *s) {
  (void)s;
  server_closed = 1;
}

static void server_tls_options(rn_tls_options_t *o, int verify_client) {
  rn_tls_options_init(o);
  o->certificate = test_cert("server.pem");
  o->key = test_cert("server.key");
  if (verify_client) {
    o->cafile = test_cert("ca.pem");
    o->verify_client = 1;
  }
}

static rn_server_t *start(rn_protocol_t protocol, int verify_client,
                          int *port) {
  rn_server_options_t so;
  rn_tls_options_t tls;
  rn_server_t *server;
  char host[64];

  memset(events, 0, sizeof(events));
  handled = 0;
  last_tls_error = 0;
  last_tls_why[0] = '\0';
  server_closed = 0;
  server_tls_options(&tls, verify_client);
  rn_server_options_init(&so);
  so.listen = "127.0.0.1:0";
  so.codec.protocol = protocol;
  so.on_request = on_request;
  so.on_event = on_event;
  so.tls = &tls;
  ASSERT_OK(rn_server_new(loop, &so, &server));
  ASSERT_OK(rn_server_address(server, host, sizeof(host), port));
  return server;
}

static void stop(rn_server_t *server) {
  rn_server_close(server, on_server_closed);
  RUN_UNTIL(server_closed, 5000);
}

/* ------------------------------------------------------------------------ */
/* The TLS client (tls_client.h)                                             */

/* ca: the CA file the server must chain to (NULL: raw TCP, no TLS);
 * cert: "client" to present the client certificate. */
static void tc_open(tls_client_t *c, int port, const char *ca,
                    const char *cert) {
  rn_tls_options_t o;
  if (ca == NULL) {
    tls_client_open(c, rn_loop_uv(loop), port, NULL);
    return;
  }
  rn_tls_options_init(&o);
  o.cafile = test_cert(ca);
  if (cert != NULL) {
    o.certificate = test_cert("client.pem");
    o.key = test_cert("client.key");
  }
  tls_client_open(c, rn_loop_uv(loop), port, &o);
}

/* Runs the loop until c's handshake is done (bounded). */
static void tc_wait_established(tls_client_t *c) {
  RUN_UNTIL(c->tls != NULL && rn__tls_established(c->tls), 5000);
}

/* A client trusting ca.pem, with no certificate, its handshake done. */
static void tc_open_established(tls_client_t *c, int port) {
  tc_open(c, port, "ca.pem", NULL);
  tc_wait_established(c);
}

/* ------------------------------------------------------------------------ */
/* Child processes: redis-cli and openssl s_client                           */

typedef struct {
  uv_process_t proc;
  uv_pipe_t in, out;
  rn_buf_t output;
  int exited;
  int64_t status;
  int pipes_open;
} child_t;

static void child_exit(uv_process_t *p, int64_t status, int sig) {
  child_t *c = p->data;
  (void)sig;
  c->exited = 1;
  c->status = status;
}

static void child_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  child_t *c = h->data;
  (void)n;
  ASSERT_OK(rn_buf_reserve(&c->output, 4096));
  *buf = uv_buf_init(c->output.base + c->output.len,
                     (unsigned)(c->output.cap - c->output.len));
}

static void child_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  child_t *c = s->data;
  (void)buf;
  if (n > 0) c->output.len += (size_t)n;
  else if (n < 0) uv_read_stop(s);
}

static void child_pipe_closed(uv_handle_t *h) {
  child_t *c = h->data;
  c->pipes_open--;
}

/* Starts argv with a stdin pipe and stdout captured (stderr inherited:
 * the tools' complaints land in the test's log). */
static void child_start(child_t *c, char **argv) {
  uv_process_options_t po;
  uv_stdio_container_t stdio[3];
  memset(c, 0, sizeof(*c));
  rn_buf_init(&c->output);
  ASSERT_OK(uv_pipe_init(rn_loop_uv(loop), &c->in, 0));
  ASSERT_OK(uv_pipe_init(rn_loop_uv(loop), &c->out, 0));
  c->in.data = c->out.data = c->proc.data = c;
  c->pipes_open = 2;
  stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  stdio[0].data.stream = (uv_stream_t *)&c->in;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&c->out;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  memset(&po, 0, sizeof(po));
  po.file = argv[0];
  po.args = argv;
  po.exit_cb = child_exit;
  po.stdio = stdio;
  po.stdio_count = 3;
  ASSERT_OK(uv_spawn(rn_loop_uv(loop), &c->proc, &po));
  ASSERT_OK(uv_read_start((uv_stream_t *)&c->out, child_alloc, child_read));
}

static void child_write(child_t *c, const char *text) {
  uv_buf_t b = uv_buf_init((char *)text, (unsigned)strlen(text));
  ASSERT_EQ(uv_try_write((uv_stream_t *)&c->in, &b, 1), (int)b.len);
}

static int child_has(const child_t *c, const char *text) {
  return c->output.len > 0 &&
         memmem(c->output.base, c->output.len, text, strlen(text)) != NULL;
}

/* Ends the child (if it still runs) and closes everything of it. */
static void child_end(child_t *c) {
  if (!c->exited) uv_process_kill(&c->proc, SIGTERM);
  RUN_UNTIL(c->exited, 5000);
  uv_close((uv_handle_t *)&c->in, child_pipe_closed);
  uv_close((uv_handle_t *)&c->out, child_pipe_closed);
  uv_close((uv_handle_t *)&c->proc, NULL);
  RUN_UNTIL(c->pipes_open == 0, 2000);
  rn_buf_free(&c->output);
}

/* The tool on PATH, or NULL (the case then says it skipped). */
static const char *find_tool(const char *name) {
  static char found[4][256];
  static unsigned next;
  const char *path = getenv("PATH");
  char *out = found[next++ % 4];
  while (path != NULL && *path != '\0') {
    const char *end = strchr(path, ':');
    size_t n = end ? (size_t)(end - path) : strlen(path);
    snprintf(out, sizeof(found[0]), "%.*s/%s", (int)n, path, name);
    if (access(out, X_OK) == 0) return out;
    path = end ? end + 1 : NULL;
  }
  fprintf(stderr, "%s not found: skipped\n", name);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Cases                                                                      */

static int no_tls(void) {
  if (rn_tls_available()) return 0;
  fprintf(stderr, "built without OpenSSL: skipped\n");
  return 1;
}

/* resp over TLS: the server's own PING answer and the handler's replies,
 * then an orderly end. */
static void test_resp(void) {
  static const char ping[] = "*1\r\n$4\r\nPING\r\n";
  static const char echo[] = "*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n";
  rn_server_stats_t st;
  rn_server_t *server;
  uv_shutdown_t sreq;
  tls_client_t c;
  int port;

  if (no_tls()) return;
  open_loop();
  server = start(RN_PROTOCOL_RESP, 0, &port);
  tc_open_established(&c, port);
  tls_client_send(&c, ping, sizeof(ping) - 1);
  RUN_UNTIL(tls_client_has(&c, "+PONG\r\n"), 5000);
  tls_client_send(&c, echo, sizeof(echo) - 1);
  RUN_UNTIL(tls_client_has(&c, "$5\r\nhello\r\n"), 5000);
  ASSERT_EQ(handled, 1);
  ASSERT_OK(c.err);
  /* close_notify and FIN: the server closes its side. */
  rn__tls_close(c.tls);
  tls_client_flush(&c);
  ASSERT_OK(uv_shutdown(&sreq, (uv_stream_t *)&c.tcp, NULL));
  RUN_UNTIL(c.eof, 5000);
  rn_server_stats(server, &st);
  ASSERT_EQ(st.connections, 1);
  ASSERT_EQ(st.tls_errors, 0);
  tls_client_close(&c);
  stop(server);
  finish();
}

/* line protocol and rnp over TLS: the filter sits under every codec. */
static void test_line_and_rnp(void) {
  rn_rnp_frame_t f;
  rn_server_t *server;
  rn_buf_t frames;
  tls_client_t c;
  int port;

  if (no_tls()) return;
  open_loop();
  server = start(RN_PROTOCOL_LINE, 0, &port);
  tc_open(&c, port, "ca.pem", NULL);
  /* Before the handshake the filter keeps plaintext back. */
  RUN_UNTIL(c.connected, 5000);
  {
    rn_buf_t w;
    rn_buf_init(&w);
    ASSERT_EQ(rn__tls_write(c.tls, "early\n", 6, &w), UV_EAGAIN);
  }
  tc_wait_established(&c);
  tls_client_send(&c, "line one\n", 9);
  RUN_UNTIL(tls_client_has(&c, "line one\n"), 5000);
  tls_client_close(&c);
  stop(server);

  server = start(RN_PROTOCOL_RNP, 0, &port);
  tc_open_established(&c, port);
  rn_buf_init(&frames);
  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_HELLO;
  f.id = 1;
  f.present = (1u << RN_RNP_F_VERSION) | (1u << RN_RNP_F_MAX_FRAME);
  f.version = RN_RNP_VERSION;
  f.max_frame = 1 << 20;
  ASSERT_OK(rn_rnp_encode(&frames, &f, RN_DEFAULT_MAX_FRAME));
  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_REQUEST;
  f.id = 2;
  f.payload = "ping-over-tls";
  f.payload_len = 13;
  ASSERT_OK(rn_rnp_encode(&frames, &f, RN_DEFAULT_MAX_FRAME));
  tls_client_send(&c, frames.base, frames.len);
  rn_buf_free(&frames);
  RUN_UNTIL(tls_client_has(&c, "re:ping-over-tls"), 5000);
  ASSERT_EQ(rn_rnp_parse(c.plain.base, c.plain.len, RN_DEFAULT_MAX_FRAME,
                         &f), 1);
  ASSERT_EQ(f.type, RN_RNP_HELLO);
  tls_client_close(&c);
  stop(server);
  finish();
}

/* A client resilnet did not write: redis-cli --tls against resilnet's
 * RESP server, verifying it with the test CA. */
static void test_redis_cli(void) {
  const char *cli = find_tool("redis-cli");
  char port_text[16];
  rn_server_t *server;
  child_t ch;
  int port;

  if (no_tls() || cli == NULL) return;
  open_loop();
  server = start(RN_PROTOCOL_RESP, 0, &port);
  snprintf(port_text, sizeof(port_text), "%d", port);
  {
    char *argv[] = {(char *)cli, "--tls", "--cacert",
                    (char *)test_cert("ca.pem"), "-h", "127.0.0.1", "-p",
                    port_text, "ECHO", "hello-over-tls", NULL};
    child_start(&ch, argv);
  }
  RUN_UNTIL(ch.exited, 10000);
  RUN_UNTIL(child_has(&ch, "hello-over-tls"), 2000);
  ASSERT_EQ(ch.status, 0);
  ASSERT_EQ(handled, 1);
  child_end(&ch);

  /* And the server's own PING answer. */
  {
    char *argv[] = {(char *)cli, "--tls", "--cacert",
                    (char *)test_cert("ca.pem"), "-h", "127.0.0.1", "-p",
                    port_text, "PING", NULL};
    child_start(&ch, argv);
  }
  RUN_UNTIL(ch.exited, 10000);
  RUN_UNTIL(child_has(&ch, "PONG"), 2000);
  child_end(&ch);
  ASSERT_EQ(events[RN_SERVER_EVENT_TLS], 0);
  stop(server);
  finish();
}

static void s_client(child_t *ch, int port, int with_cert) {
  const char *openssl = find_tool("openssl");
  char connect[32];
  char *argv[16];
  int n = 0;
  ASSERT(openssl != NULL);
  snprintf(connect, sizeof(connect), "127.0.0.1:%d", port);
  argv[n++] = (char *)openssl;
  argv[n++] = "s_client";
  argv[n++] = "-quiet";
  argv[n++] = "-connect";
  argv[n++] = connect;
  argv[n++] = "-CAfile";
  argv[n++] = (char *)test_cert("ca.pem");
  argv[n++] = "-verify_return_error";
  argv[n++] = "-verify_quiet";
  if (with_cert) {
    argv[n++] = "-cert";
    argv[n++] = (char *)test_cert("client.pem");
    argv[n++] = "-key";
    argv[n++] = (char *)test_cert("client.key");
  }
  argv[n] = NULL;
  child_start(ch, argv);
}

/* A new loop, a RESP server with verify_client, and openssl s_client
 * (with the client certificate or not) asking it WHO. */
static rn_server_t *start_s_client_who(child_t *ch, int with_cert) {
  rn_server_t *server;
  int port;
  open_loop();
  server = start(RN_PROTOCOL_RESP, 1, &port);
  s_client(ch, port, with_cert);
  child_write(ch, "WHO\r\n"); /* an inline command */
  return server;
}

/* verify_client: openssl s_client with the client certificate; the
 * handler sees its subject. */
static void test_client_subject(void) {
  rn_server_t *server;
  child_t ch;

  if (no_tls() || find_tool("openssl") == NULL) return;
  server = start_s_client_who(&ch, 1);
  RUN_UNTIL(child_has(&ch, "CN=resilnet-test-client,O=resilnet"), 10000);
  ASSERT_EQ(handled, 1);
  child_end(&ch);
  ASSERT_EQ(events[RN_SERVER_EVENT_TLS], 0);
  stop(server);
  finish();
}

/* verify_client without a client certificate: the handshake fails on
 * the server, that connection closes, no handler runs. */
static void test_client_without_certificate(void) {
  rn_server_stats_t st;
  rn_server_t *server;
  child_t ch;

  if (no_tls() || find_tool("openssl") == NULL) return;
  server = start_s_client_who(&ch, 0);
  RUN_UNTIL(events[RN_SERVER_EVENT_TLS] == 1, 10000);
  ASSERT_EQ(last_tls_error, RN_ETLSVERIFY);
  ASSERT_STR_EQ(last_tls_why, "no client certificate");
  child_end(&ch);
  ASSERT(!child_has(&ch, "CN="));
  ASSERT_EQ(handled, 0);
  rn_server_stats(server, &st);
  ASSERT_EQ(st.tls_errors, 1);
  stop(server);
  finish();
}

/* Bytes that are not TLS (a plaintext client, a scanner) close that
 * connection only; a TLS client beside it carries on. */
static void test_garbage_closes_only_that(void) {
  static const char echo[] = "*2\r\n$4\r\nECHO\r\n$3\r\nyes\r\n";
  rn_server_stats_t st;
  rn_server_t *server;
  tls_client_t good, bad;
  int port;

  if (no_tls()) return;
  open_loop();
  server = start(RN_PROTOCOL_RESP, 0, &port);
  tc_open_established(&good, port);
  tc_open(&bad, port, NULL, NULL);
  RUN_UNTIL(bad.connected, 5000);
  tls_client_send(&bad, "*1\r\n$4\r\nPING\r\n", 14);
  RUN_UNTIL(bad.eof, 5000);
  ASSERT(!tls_client_has(&bad, "PONG"));
  ASSERT_EQ(events[RN_SERVER_EVENT_TLS], 1);
  ASSERT_EQ(last_tls_error, RN_ETLS);
  ASSERT(last_tls_why[0] != '\0');
  tls_client_send(&good, echo, sizeof(echo) - 1);
  RUN_UNTIL(tls_client_has(&good, "$3\r\nyes\r\n"), 5000);
  rn_server_stats(server, &st);
  ASSERT_EQ(st.tls_errors, 1);
  ASSERT_EQ(st.open, 1);
  tls_client_close(&bad);
  tls_client_close(&good);
  stop(server);
  finish();
}

/* A handshake that stalls is a frame that stalls: frame_timeout ends
 * it. */
static void test_stalled_handshake(void) {
  /* A TLS record header announcing a ClientHello that never comes. */
  static const char start_of_hello[] = {0x16, 0x03, 0x01, 0x01, 0x00};
  rn_server_options_t so;
  rn_tls_options_t tls;
  rn_server_stats_t st;
  rn_server_t *server;
  char host[64];
  int port;
  tls_client_t c;

  if (no_tls()) return;
  open_loop();
  memset(events, 0, sizeof(events));
  server_tls_options(&tls, 0);
  rn_server_options_init(&so);
  so.listen = "127.0.0.1:0";
  so.on_request = on_request;
  so.on_event = on_event;
  so.frame_timeout_ms = 200;
  so.tls = &tls;
  ASSERT_OK(rn_server_new(loop, &so, &server));
  ASSERT_OK(rn_server_address(server, host, sizeof(host), &port));
  tc_open(&c, port, NULL, NULL);
  RUN_UNTIL(c.connected, 5000);
  tls_client_send(&c, start_of_hello, sizeof(start_of_hello));
  RUN_UNTIL(c.eof, 5000);
  rn_server_stats(server, &st);
  ASSERT_EQ(st.frame_timeouts, 1);
  ASSERT_EQ(events[RN_SERVER_EVENT_FRAME_TIMEOUT], 1);
  ASSERT_EQ(c.plain.len, 0); /* nothing said in plaintext */
  tls_client_close(&c);
  server_closed = 0;
  stop(server);
  finish();
}

/* A drain ends each connection with close_notify before the FIN. */
static void test_drain_sends_close_notify(void) {
  rn_server_t *server;
  tls_client_t c;
  int port;

  if (no_tls()) return;
  open_loop();
  server = start(RN_PROTOCOL_RESP, 0, &port);
  tc_open_established(&c, port);
  tls_client_send(&c, "*1\r\n$4\r\nPING\r\n", 14);
  RUN_UNTIL(tls_client_has(&c, "+PONG"), 5000);
  rn_server_drain(server, 2000, on_server_closed);
  RUN_UNTIL(c.got & RN_TLS_GOT_CLOSE_NOTIFY, 5000);
  RUN_UNTIL(c.eof, 5000);
  ASSERT_OK(c.err);
  tls_client_close(&c);
  RUN_UNTIL(server_closed, 5000);
  finish();
}

/* Rotation: new connections get the new certificate, an open one keeps
 * its session; a reload that fails changes nothing. */
static void test_reload(void) {
  rn_tls_options_t tls;
  rn_server_t *server, *plain;
  rn_server_options_t so;
  tls_client_t old, fresh;
  int port;

  if (no_tls()) return;
  open_loop();
  server = start(RN_PROTOCOL_RESP, 0, &port);
  tc_open_established(&old, port);

  rn_tls_options_init(&tls);
  tls.certificate = "/nonexistent.pem";
  tls.key = test_cert("server.key");
  ASSERT_EQ(rn_server_reload_tls(server, &tls), RN_ETLS);
  /* The expired certificate: visible to new connections only. */
  tls.certificate = test_cert("expired.pem");
  tls.key = test_cert("expired.key");
  ASSERT_OK(rn_server_reload_tls(server, &tls));
  tc_open(&fresh, port, "ca.pem", NULL);
  RUN_UNTIL(fresh.err != 0, 5000);
  ASSERT_EQ(fresh.err, RN_ETLSVERIFY);
  ASSERT(strncmp(rn__tls_why(fresh.tls), "expired", 7) == 0);
  tls_client_send(&old, "*1\r\n$4\r\nPING\r\n", 14);
  RUN_UNTIL(tls_client_has(&old, "+PONG"), 5000);
  tls_client_close(&fresh);
  tls_client_close(&old);
  stop(server);

  /* TLS cannot be switched on by a reload. */
  rn_server_options_init(&so);
  so.listen = "127.0.0.1:0";
  so.on_request = on_request;
  ASSERT_OK(rn_server_new(loop, &so, &plain));
  ASSERT_EQ(rn_server_reload_tls(plain, &tls), UV_EINVAL);
  server_closed = 0;
  stop(plain);
  finish();
}

/* rn_server_new reads the files: a bad option fails there. */
static void test_bad_options(void) {
  rn_server_options_t so;
  rn_tls_options_t tls;
  rn_server_t *server;

  open_loop();
  rn_server_options_init(&so);
  so.listen = "127.0.0.1:0";
  so.on_request = on_request;
  so.tls = &tls;
  rn_tls_options_init(&tls);
  if (!rn_tls_available()) {
    ASSERT_EQ(rn_server_new(loop, &so, &server), RN_ENOTLS);
    finish();
    return;
  }
  ASSERT_EQ(rn_server_new(loop, &so, &server), UV_EINVAL); /* no cert */
  tls.certificate = test_cert("server.pem");
  tls.key = "/nonexistent.key";
  ASSERT_EQ(rn_server_new(loop, &so, &server), RN_ETLS);
  ASSERT(server == NULL);
  finish();
}

TEST_LIST_START
  TEST_ENTRY(test_resp)
  TEST_ENTRY(test_line_and_rnp)
  TEST_ENTRY(test_redis_cli)
  TEST_ENTRY(test_client_subject)
  TEST_ENTRY(test_client_without_certificate)
  TEST_ENTRY(test_garbage_closes_only_that)
  TEST_ENTRY(test_stalled_handshake)
  TEST_ENTRY(test_drain_sends_close_notify)
  TEST_ENTRY(test_reload)
  TEST_ENTRY(test_bad_options)
TEST_LIST_END

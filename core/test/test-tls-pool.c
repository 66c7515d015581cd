/* A pool over TLS (issue 17) against resilnet's own servers with TLS,
 * over loopback: verified calls, a refused certificate as a configuration
 * fault (no reconnect storm), heartbeats on idle TLS connections, mutual
 * TLS with rnp, certificate rotation. Certificates: tls_certs.h. (A real
 * redis-server over TLS: spec/tls_spec.lua.) */
#define _GNU_SOURCE /* memmem */
#include "resilnet.h"
#include "task.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

static rn_loop_t *loop;

/* Handshakes are slow under valgrind on a loaded machine: tests that do
 * not time connects give them this long (and calls their deadline). */
#define SLOW_MS 10000

#include "pool_fixture.h"
#include "raw_socket.h"
#include "server_fixture.h"
#include "wait.h"
#include "client.h"
#include "tls.h"
#include "tls_certs.h"

/* ------------------------------------------------------------------------ */
/* Servers: resp echoes its last argument; rnp and line answer "re:" and
 * the body (rnp: the client certificate's subject for "who").            */

static int server_closed;
static int handled; /* requests that reached a handler */

static void on_request(rn_server_t *s, rn_request_t *req, const char *body,
                       size_t len) {
  char subject[256], out[300];
  int n;
  handled++;
  if (rn_server_codec(s)->protocol == RN_PROTOCOL_RESP) {
    const char *arg;
    size_t end = len - 2;
    arg = body + end;
    while (arg > body && arg[-1] != '\n') arg--;
    test_reply_bulk(req, arg, (size_t)(body + end - arg));
    return;
  }
  if (len == 3 && memcmp(body, "who", 3) == 0) {
    if (rn_request_peer_subject(req, subject, sizeof(subject)) != 0)
      strcpy(subject, "-");
    n = snprintf(out, sizeof(out), "%s", subject);
  } else {
    n = snprintf(out, sizeof(out), "re:%.*s", (int)len, body);
  }
  if (rn_server_codec(s)->protocol == RN_PROTOCOL_LINE) out[n++] = '\n';
  ASSERT_OK(rn_request_reply(req, out, (size_t)n));
}

static void on_server_closed(rn_server_t *s) {
  (void)s;
  server_closed = 1;
}

static rn_server_t *start_server(rn_protocol_t protocol, int verify_client,
                                 int *port) {
  rn_server_options_t so;
  rn_tls_options_t tls;
  rn_server_t *server;
  char host[64];

  rn_tls_options_init(&tls);
  tls.certificate = test_cert("server.pem");
  tls.key = test_cert("server.key");
  if (verify_client) {
    tls.cafile = test_cert("ca.pem");
    tls.verify_client = 1;
  }
  rn_server_options_init(&so);
  so.listen = "127.0.0.1:0";
  so.codec.protocol = protocol;
  so.on_request = on_request;
  so.tls = &tls;
  ASSERT_OK(rn_server_new(loop, &so, &server));
  ASSERT_OK(rn_server_address(server, host, sizeof(host), port));
  return server;
}

static void stop_server(rn_server_t *server) {
  server_closed = 0;
  rn_server_close(server, on_server_closed);
  RUN_UNTIL(rn_loop_uv(loop), server_closed, SLOW_MS);
}

/* ------------------------------------------------------------------------ */
/* The pool                                                                   */

static int pool_closed;
static int connecting;      /* "connecting" events of connections */
static int tls_verify_events; /* events with reason "tls_verify" */

typedef struct {
  int done;
  int status;
  char body[256];
} result_t;

static void on_pool_event(rn_pool_t *pool, const rn_pool_event_t *ev) {
  (void)pool;
  if (ev->type == RN_EVENT_STATE && ev->connection != 0 &&
      strcmp(ev->state, "connecting") == 0)
    connecting++;
  if (ev->reason != NULL && strcmp(ev->reason, "tls_verify") == 0)
    tls_verify_events++;
}

static void on_result(rn_pool_t *pool, void *data, const rn_result_t *r) {
  result_t *res = data;
  (void)pool;
  res->done = 1;
  res->status = r->status;
  snprintf(res->body, sizeof(res->body), "%.*s", (int)r->body_len,
           r->body != NULL ? r->body : "");
}

static void on_pool_closed(rn_pool_t *pool) {
  (void)pool;
  pool_closed = 1;
}

static void close_pool(rn_pool_t *pool) {
  pool_closed = 0;
  rn_pool_close(pool, 0, on_pool_closed);
  RUN_UNTIL(rn_loop_uv(loop), pool_closed, SLOW_MS);
}

static void client_tls(rn_tls_options_t *tls, const char *ca) {
  rn_tls_options_init(tls);
  tls->cafile = test_cert(ca);
}

static rn_pool_t *open_pool(rn_protocol_t protocol, const char *host,
                            int port, const rn_tls_options_t *tls,
                            rn_pool_options_t *o) {
  static char endpoint[128];
  static const char *endpoints[1];
  rn_pool_t *pool;
  snprintf(endpoint, sizeof(endpoint), "%s:%d", host, port);
  endpoints[0] = endpoint;
  o->endpoints = endpoints;
  o->endpoint_count = 1;
  o->codec.protocol = protocol;
  o->tls = tls;
  o->on_event = on_pool_event;
  connecting = tls_verify_events = 0;
  ASSERT_OK(rn_pool_new(loop, o, &pool));
  return pool;
}

static void call_resp(rn_pool_t *pool, const char *arg, result_t *res) {
  rn_buf_t frame;
  memset(res, 0, sizeof(*res));
  rn_buf_init(&frame);
  ASSERT_OK(rn_resp_encode_array(&frame, 2));
  ASSERT_OK(rn_resp_encode_bulk(&frame, "ECHO", 4));
  ASSERT_OK(rn_resp_encode_bulk(&frame, arg, strlen(arg)));
  ASSERT_OK(rn_pool_call(pool, frame.base, frame.len, NULL, on_result, res));
  rn_buf_free(&frame);
}

/* The resp reply of an echo: "$N\r\n<arg>\r\n". */
static void assert_echo(const result_t *res, const char *arg) {
  char want[128];
  ASSERT_OK(res->status);
  snprintf(want, sizeof(want), "$%u\r\n%s\r\n", (unsigned)strlen(arg), arg);
  ASSERT_STR_EQ(res->body, want);
}

/* A RESP call of arg, waited for, answered with arg. */
static void echo_call(rn_pool_t *pool, const char *arg) {
  result_t res;
  call_resp(pool, arg, &res);
  RUN_UNTIL(rn_loop_uv(loop), res.done, SLOW_MS);
  assert_echo(&res, arg);
}

/* Closes the pool, then the server, then the loop. */
static void finish(rn_pool_t *pool, rn_server_t *server) {
  close_pool(pool);
  stop_server(server);
  test_loop_close(loop);
}

/* ------------------------------------------------------------------------ */

static int no_tls(void) {
  if (rn_tls_available()) return 0;
  fprintf(stderr, "built without OpenSSL: skipped\n");
  return 1;
}

/* Verification on (the default): by IP SAN for an IP literal, by DNS name
 * for "localhost"; a batch of pipelined calls all answered. */
static void test_verified_calls(void) {
  static result_t res[200];
  rn_tls_options_t tls;
  rn_pool_options_t o;
  rn_pool_stats_t st;
  rn_server_t *server;
  rn_pool_t *pool;
  const char *hosts[] = {"127.0.0.1", "localhost"};
  char arg[32];
  int port, h, i;

  if (no_tls()) return;
  loop = test_loop_open();
  server = start_server(RN_PROTOCOL_RESP, 0, &port);
  client_tls(&tls, "ca.pem");
  for (h = 0; h < 2; h++) {
    rn_pool_options_init(&o);
    o.size = 2;
    o.connect_timeout_ms = o.timeout_ms = SLOW_MS;
    pool = open_pool(RN_PROTOCOL_RESP, hosts[h], port, &tls, &o);
    for (i = 0; i < 200; i++) {
      snprintf(arg, sizeof(arg), "v%d", i);
      call_resp(pool, arg, &res[i]);
    }
    RUN_UNTIL(rn_loop_uv(loop), res[199].done, 10000);
    for (i = 0; i < 200; i++) {
      snprintf(arg, sizeof(arg), "v%d", i);
      ASSERT(res[i].done);
      assert_echo(&res[i], arg);
    }
    rn_pool_stats(pool, &st);
    ASSERT_EQ(st.tls_insecure, 0);
    ASSERT_EQ(st.tls_failures, 0);
    ASSERT_EQ(st.connect_failures, 0);
    close_pool(pool);
  }
  stop_server(server);
  test_loop_close(loop);
}

/* A refused certificate is a configuration fault: the call fails with
 * ETLSVERIFY and the reason, well within connect_timeout; calls made over
 * the next 5 s fail at once or wait for the next connect, which comes
 * only every reconnect.max (no storm); an event says "tls_verify". */
static void check_refused(const char *ca, const char *server_name,
                          const char *reason) {
  rn_tls_options_t tls;
  rn_pool_options_t o;
  rn_pool_stats_t st;
  rn_server_t *server;
  rn_pool_t *pool;
  result_t res;
  uint64_t start;
  int port, calls = 0;

  if (no_tls()) return;
  loop = test_loop_open();
  server = start_server(RN_PROTOCOL_RESP, 0, &port);
  client_tls(&tls, ca);
  tls.server_name = server_name;
  rn_pool_options_init(&o);
  o.connect_timeout_ms = 2000;
  o.timeout_ms = 3000;
  o.reconnect.max_ms = 2000;
  pool = open_pool(RN_PROTOCOL_RESP, "127.0.0.1", port, &tls, &o);

  start = uv_now(rn_loop_uv(loop));
  call_resp(pool, "x", &res);
  RUN_UNTIL(rn_loop_uv(loop), res.done, 10000);
  ASSERT_EQ(res.status, RN_ETLSVERIFY);
  ASSERT(strstr(res.body, reason) != NULL);
  ASSERT_LT(uv_now(rn_loop_uv(loop)) - start, o.connect_timeout_ms);
  ASSERT_GE(tls_verify_events, 1);

  /* 5 s of calls, one every 50 ms. */
  while (uv_now(rn_loop_uv(loop)) - start < 5000) {
    call_resp(pool, "x", &res);
    RUN_UNTIL(rn_loop_uv(loop), res.done, 4000);
    ASSERT_EQ(res.status, RN_ETLSVERIFY);
    calls++;
    uv_sleep(50);
    uv_update_time(rn_loop_uv(loop));
  }
  ASSERT_GT(calls, 10);
  /* The first, then one per reconnect.max (2 s) at most: 1 + 5/2. */
  ASSERT_LE(connecting, 4);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.tls_failures, (uint64_t)connecting);
  ASSERT_EQ(st.connects, 0);
  finish(pool, server);
}

static void test_wrong_ca(void) { check_refused("wrong-ca.pem", NULL,
                                                "unknown CA"); }

static void test_wrong_name(void) {
  check_refused("ca.pem", "db.example.com", "name mismatch");
}

/* insecure: no verification at all, and the pool says so in its stats. */
static void test_insecure_counted(void) {
  rn_tls_options_t tls;
  rn_pool_options_t o;
  rn_pool_stats_t st;
  rn_server_t *server;
  rn_pool_t *pool;
  int port;

  if (no_tls()) return;
  loop = test_loop_open();
  server = start_server(RN_PROTOCOL_RESP, 0, &port);
  client_tls(&tls, "wrong-ca.pem");
  tls.insecure = 1;
  rn_pool_options_init(&o);
  o.connect_timeout_ms = o.timeout_ms = SLOW_MS;
  pool = open_pool(RN_PROTOCOL_RESP, "127.0.0.1", port, &tls, &o);
  echo_call(pool, "anyway");
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.tls_insecure, 1);
  finish(pool, server);
}

/* Idle TLS connections under fast heartbeats for 2 s (20 intervals), and
 * calls made after idle stretches (each one looks at its socket first):
 * no false eviction, no reconnect. TLS 1.3 session tickets arrive on
 * them after the handshake: they are life, not stray bytes. */
static void test_idle_heartbeats(void) {
  rn_tls_options_t tls;
  rn_pool_options_t o;
  rn_pool_stats_t st;
  rn_server_t *server;
  rn_pool_t *pool;
  uint64_t start;
  int port, i;

  if (no_tls()) return;
  loop = test_loop_open();
  server = start_server(RN_PROTOCOL_RESP, 0, &port);
  client_tls(&tls, "ca.pem");
  rn_pool_options_init(&o);
  o.min_idle = 3;
  o.size = 3;
  o.heartbeat.interval_ms = 100;
  o.heartbeat.timeout_ms = 1500;
  o.connect_timeout_ms = o.timeout_ms = SLOW_MS;
  pool = open_pool(RN_PROTOCOL_RESP, "127.0.0.1", port, &tls, &o);
  rn_pool_stats(pool, &st);
  RUN_UNTIL(rn_loop_uv(loop), (rn_pool_stats(pool, &st), st.idle == 3), SLOW_MS);
  start = uv_now(rn_loop_uv(loop));
  for (i = 0; uv_now(rn_loop_uv(loop)) - start < 2000; i++) {
    RUN_UNTIL(rn_loop_uv(loop), uv_now(rn_loop_uv(loop)) - start >= (uint64_t)i * 250, 1000);
    echo_call(pool, "alive");
  }
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.connects, 3);
  ASSERT_EQ(st.dead_peers, 0);
  ASSERT_EQ(st.evictions.stale + st.evictions.unexpected +
                st.evictions.peer_closed + st.evictions.error,
            0);
  ASSERT_GT(st.heartbeats, 10);
  ASSERT_EQ(st.heartbeats_missed, 0);
  finish(pool, server);
}

static rn_buf_t rnp_frame;

static void call_rnp(rn_pool_t *pool, const char *body, result_t *res) {
  memset(res, 0, sizeof(*res));
  rnp_frame.len = 0;
  ASSERT_OK(rn_codec_encode(rn_pool_codec(pool), &rnp_frame, body,
                            strlen(body)));
  ASSERT_OK(rn_pool_call(pool, rnp_frame.base, rnp_frame.len, NULL,
                         on_result, res));
}

/* Mutual TLS with rnp: the pool presents its certificate, the handler sees
 * its subject. Without a certificate the server refuses the handshake: the
 * call fails with a TLS error and nothing runs. */
static void test_mutual_tls_rnp(void) {
  rn_tls_options_t tls;
  rn_pool_options_t o;
  rn_server_t *server;
  rn_pool_t *pool;
  result_t res;
  int port;

  if (no_tls()) return;
  loop = test_loop_open();
  rn_buf_init(&rnp_frame);
  server = start_server(RN_PROTOCOL_RNP, 1, &port);
  client_tls(&tls, "ca.pem");
  tls.certificate = test_cert("client.pem");
  tls.key = test_cert("client.key");
  rn_pool_options_init(&o);
  o.connect_timeout_ms = o.timeout_ms = SLOW_MS;
  pool = open_pool(RN_PROTOCOL_RNP, "127.0.0.1", port, &tls, &o);
  call_rnp(pool, "hello", &res);
  RUN_UNTIL(rn_loop_uv(loop), res.done, 10000);
  ASSERT_OK(res.status);
  ASSERT_STR_EQ(res.body, "re:hello");
  call_rnp(pool, "who", &res);
  RUN_UNTIL(rn_loop_uv(loop), res.done, 10000);
  ASSERT_OK(res.status);
  ASSERT(strstr(res.body, "CN=resilnet-test-client") != NULL);
  close_pool(pool);

  client_tls(&tls, "ca.pem");
  rn_pool_options_init(&o);
  o.timeout_ms = 1500;
  pool = open_pool(RN_PROTOCOL_RNP, "127.0.0.1", port, &tls, &o);
  call_rnp(pool, "hello", &res);
  RUN_UNTIL(rn_loop_uv(loop), res.done, 10000);
  ASSERT(res.status == RN_ETLS || res.status == UV_ECONNRESET ||
         res.status == UV_EOF);
  close_pool(pool);
  stop_server(server);
  rn_buf_free(&rnp_frame);
  test_loop_close(loop);
}

/* Rotation: a pool that trusts the wrong CA is refused; reloading with the
 * right one lets the next call through at once (not after reconnect.max),
 * and the pool without TLS cannot take TLS this way. */
static void test_reload(void) {
  rn_tls_options_t tls, bad;
  rn_pool_options_t o;
  rn_server_t *server;
  rn_pool_t *pool;
  result_t res;
  uint64_t start;
  int port;

  if (no_tls()) return;
  loop = test_loop_open();
  server = start_server(RN_PROTOCOL_RESP, 0, &port);
  client_tls(&tls, "wrong-ca.pem");
  rn_pool_options_init(&o);
  o.connect_timeout_ms = o.timeout_ms = SLOW_MS;
  o.reconnect.max_ms = 30000;
  pool = open_pool(RN_PROTOCOL_RESP, "127.0.0.1", port, &tls, &o);
  call_resp(pool, "x", &res);
  RUN_UNTIL(rn_loop_uv(loop), res.done, 10000);
  ASSERT_EQ(res.status, RN_ETLSVERIFY);

  rn_tls_options_init(&bad);
  bad.cafile = "/nonexistent/ca.pem";
  ASSERT_EQ(rn_pool_reload_tls(pool, &bad), RN_ETLS);
  client_tls(&tls, "ca.pem");
  ASSERT_OK(rn_pool_reload_tls(pool, &tls));
  start = uv_now(rn_loop_uv(loop));
  echo_call(pool, "rotated");
  ASSERT_LT(uv_now(rn_loop_uv(loop)) - start, 5000); /* not reconnect.max */
  close_pool(pool);

  rn_pool_options_init(&o);
  pool = open_pool(RN_PROTOCOL_RESP, "127.0.0.1", port, NULL, &o);
  ASSERT_EQ(rn_pool_reload_tls(pool, &tls), UV_EINVAL);
  finish(pool, server);
}

static int proxy_closed;

static void on_proxy_closed(rn_proxy_t *px) {
  (void)px;
  proxy_closed = 1;
}

/* A reset in the middle of the TLS handshake (a proxy resets every
 * connection after 200 bytes from the server: the ServerHello's flight is
 * cut) is a failed connect: the calls made meanwhile were never placed on
 * a connection, so they wait unsent, and once the fault is lifted every
 * one of them (not idempotent) runs exactly once. */
static void test_reset_during_handshake(void) {
  static result_t res[20];
  rn_proxy_options_t po;
  rn_fault_options_t fo;
  rn_tls_options_t tls;
  rn_pool_options_t o;
  rn_pool_stats_t st;
  rn_server_t *server;
  rn_proxy_t *proxy;
  rn_pool_t *pool;
  char upstream[64], host[64], arg[16];
  uint64_t fault;
  int port, pport, i;

  if (no_tls()) return;
  loop = test_loop_open();
  server = start_server(RN_PROTOCOL_RESP, 0, &port);
  snprintf(upstream, sizeof(upstream), "127.0.0.1:%d", port);
  rn_proxy_options_init(&po);
  po.listen = "127.0.0.1:0";
  po.upstream = upstream;
  ASSERT_OK(rn_proxy_new(loop, &po, &proxy));
  ASSERT_OK(rn_proxy_address(proxy, host, sizeof(host), &pport));
  rn_fault_options_init(&fo, RN_FAULT_CLOSE);
  fo.direction = RN_PROXY_DOWN;
  fo.after_bytes = 200;
  fo.rst = 1;
  ASSERT_OK(rn_proxy_fault_add(proxy, &fo, &fault));

  client_tls(&tls, "ca.pem");
  rn_pool_options_init(&o);
  o.timeout_ms = 2 * SLOW_MS;
  o.connect_timeout_ms = SLOW_MS;
  o.reconnect.initial_ms = 20;
  o.reconnect.max_ms = 100;
  o.eject.failures = 0;
  pool = open_pool(RN_PROTOCOL_RESP, "127.0.0.1", pport, &tls, &o);
  handled = 0;
  for (i = 0; i < 20; i++) {
    snprintf(arg, sizeof(arg), "c%d", i);
    call_resp(pool, arg, &res[i]);
  }
  RUN_UNTIL(rn_loop_uv(loop), (rn_pool_stats(pool, &st), st.connect_failures >= 3), SLOW_MS);
  ASSERT_EQ(handled, 0);
  for (i = 0; i < 20; i++) ASSERT(!res[i].done);
  ASSERT_OK(rn_proxy_fault_remove(proxy, fault));
  RUN_UNTIL(rn_loop_uv(loop), res[19].done, 2 * SLOW_MS);
  for (i = 0; i < 20; i++) {
    snprintf(arg, sizeof(arg), "c%d", i);
    assert_echo(&res[i], arg);
  }
  ASSERT_EQ(handled, 20);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.retries, 0);
  close_pool(pool);
  proxy_closed = 0;
  rn_proxy_close(proxy, on_proxy_closed);
  RUN_UNTIL(rn_loop_uv(loop), proxy_closed, SLOW_MS);
  stop_server(server);
  test_loop_close(loop);
}

/* A TLS server in a child process (its own loop), so that it answers
 * while this process's loop is not running: returns its pid, its port in
 * *port. */
static pid_t fork_server(rn_protocol_t protocol, int *port) {
  int fds[2];
  pid_t pid;
  test_cert("ca.pem"); /* made before the fork, once */
  ASSERT_OK(pipe(fds));
  pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    rn_server_t *server;
    close(fds[0]);
    ASSERT_OK(rn_loop_new(NULL, &loop));
    server = start_server(protocol, 0, port);
    (void)server;
    ASSERT_EQ(write(fds[1], port, sizeof(*port)), sizeof(*port));
    close(fds[1]);
    for (;;) uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  }
  close(fds[1]);
  ASSERT_EQ(read(fds[0], port, sizeof(*port)), sizeof(*port));
  close(fds[0]);
  return pid;
}

/* A TLS 1.3 server sends its session tickets after the handshake: on a
 * connection that became ready at the end of the handshake (line, no
 * ping), they wait unread in the socket when the loop has not run since.
 * The check before reusing an idle connection must decrypt them and find
 * no application data: the call goes on that very connection, nothing
 * is evicted. */
static void test_tickets_are_not_stray_bytes(void) {
  rn_tls_options_t tls;
  rn_pool_options_t o;
  rn_pool_stats_t st;
  rn_pool_t *pool;
  rn_conn_t *conn;
  result_t res;
  uv_os_fd_t fd;
  int port, waiting = 0, status, i;
  pid_t pid;

  if (no_tls()) return;
  pid = fork_server(RN_PROTOCOL_LINE, &port);
  loop = test_loop_open();
  client_tls(&tls, "ca.pem");
  rn_pool_options_init(&o);
  o.size = 1;
  o.min_idle = 1;
  o.heartbeat.interval_ms = 0;
  o.connect_timeout_ms = o.timeout_ms = SLOW_MS;
  pool = open_pool(RN_PROTOCOL_LINE, "127.0.0.1", port, &tls, &o);
  RUN_UNTIL(rn_loop_uv(loop), (rn_pool_stats(pool, &st), st.idle == 1), SLOW_MS);
  /* The loop stands still while the tickets arrive. */
  conn = RN_CONTAINER_OF(pool->endpoints[0]->conns.next, rn_conn_t, node);
  ASSERT_OK(uv_fileno(&conn->h.handle, &fd));
  for (i = 0; i < 500 && waiting == 0; i++) {
    usleep(20 * 1000);
    ASSERT_OK(ioctl(fd, FIONREAD, &waiting));
  }
  usleep(50 * 1000); /* all of them, not the first record only */
  ASSERT_GT(waiting, 0); /* the tickets: the case under test is real */

  memset(&res, 0, sizeof(res));
  ASSERT_OK(rn_pool_call(pool, "hello\n", 6, NULL, on_result, &res));
  RUN_UNTIL(rn_loop_uv(loop), res.done, 10000);
  ASSERT_OK(res.status);
  ASSERT_STR_EQ(res.body, "re:hello");
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.connects, 1);
  ASSERT_EQ(st.evictions.unexpected + st.evictions.peer_closed +
                st.evictions.error,
            0);
  close_pool(pool);
  test_loop_close(loop);
  kill(pid, SIGKILL);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
}

/* Bad options fail rn_pool_new, not a connect later. */
static void test_bad_options(void) {
  rn_tls_options_t tls;
  rn_pool_options_t o;
  rn_pool_t *pool;
  const char *endpoints[] = {"127.0.0.1:1"};

  loop = test_loop_open();
  rn_pool_options_init(&o);
  o.endpoints = endpoints;
  o.endpoint_count = 1;
  o.tls = &tls;
  rn_tls_options_init(&tls);
  if (!rn_tls_available()) {
    ASSERT_EQ(rn_pool_new(loop, &o, &pool), RN_ENOTLS);
    test_loop_close(loop);
    return;
  }
  tls.cafile = "/nonexistent/ca.pem";
  ASSERT_EQ(rn_pool_new(loop, &o, &pool), RN_ETLS);
  rn_tls_options_init(&tls);
  tls.certificate = test_cert("client.pem"); /* no key */
  ASSERT_EQ(rn_pool_new(loop, &o, &pool), UV_EINVAL);
  rn_tls_options_init(&tls);
  tls.verify_client = 1;
  ASSERT_EQ(rn_pool_new(loop, &o, &pool), UV_EINVAL);
  test_loop_close(loop);
}

/* ------------------------------------------------------------------------ */
/* A write that finished as its TLS connection failed (chaos, ASan): the
 * session's alert was still waiting to go, so the write's callback, run
 * by libuv as the handle closed, queued a flush of the closing connection,
 * which was then freed while queued: the loop's next turn used it. */

/* Sends all of len bytes (blocking). */
static void send_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    ASSERT_GE(n, 1);
    data += n;
    len -= (size_t)n;
  }
}

static void send_pending(int fd, rn__tls_t *t) {
  rn_buf_t wire;
  rn_buf_init(&wire);
  ASSERT_OK(rn__tls_pending(t, &wire));
  send_all(fd, wire.base, wire.len);
  rn_buf_free(&wire);
}

/* The child: a TLS server of blocking sockets that answers PING, and on
 * a request holding HOLD says so on `told`, waits for a byte on `go`,
 * sends a record no key made (a valid header, garbage inside), says so
 * again and reads until the client goes. */
static void garbage_server(int lfd, int told, int go) {
  rn_tls_options_t so;
  rn__tls_ctx_t *ctx;
  rn__tls_t *t;
  rn_buf_t plain;
  char buf[16384], byte = 1;
  int fd = accept(lfd, NULL, NULL);
  ASSERT_GE(fd, 0);
  rn_tls_options_init(&so);
  so.certificate = test_cert("server.pem");
  so.key = test_cert("server.key");
  ASSERT_OK(rn__tls_ctx_new(&so, RN_TLS_SERVER, &ctx, NULL, 0));
  ASSERT_OK(rn__tls_new(ctx, NULL, &t));
  rn_buf_init(&plain);
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) _exit(0);
    ASSERT_GE(rn__tls_read(t, buf, (size_t)n, &plain), 0);
    send_pending(fd, t);
    if (plain.len == 0) continue;
    if (memmem(plain.base, plain.len, "PING", 4) != NULL) {
      rn_buf_t wire;
      rn_buf_init(&wire);
      ASSERT_OK(rn__tls_write(t, "+PONG\r\n", 7, &wire));
      send_all(fd, wire.base, wire.len);
      rn_buf_free(&wire);
      plain.len = 0;
    } else if (memmem(plain.base, plain.len, "HOLD", 4) != NULL) {
      static const char header[] = {23, 3, 3, 0, 64};
      char garbage[64];
      memset(garbage, 0x5a, sizeof(garbage));
      ASSERT_EQ(write(told, &byte, 1), 1);
      ASSERT_EQ(read(go, &byte, 1), 1);
      send_all(fd, header, sizeof(header));
      send_all(fd, garbage, sizeof(garbage));
      ASSERT_EQ(write(told, &byte, 1), 1);
      plain.len = 0;
    }
  }
}

/* Whether a byte waits on fd (the child spoke), without blocking. */
static int readable(int fd) {
  int n = 0;
  return ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

static void test_write_done_as_tls_fails(void) {
  static const char *endpoints[1];
  struct sockaddr_in addr;
  rn_tls_options_t tls;
  rn_pool_options_t o;
  rn_pool_t *pool;
  result_t held, after;
  char endpoint[64], byte = 1;
  int lfd, told[2], go[2], status;
  pid_t pid;

  if (no_tls()) return;
  test_cert("ca.pem"); /* made before the fork, once */
  lfd = test_raw_listen(4, &addr);
  ASSERT_OK(pipe(told));
  ASSERT_OK(pipe(go));
  pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(told[0]);
    close(go[1]);
    garbage_server(lfd, told[1], go[0]);
    _exit(0);
  }
  close(lfd);
  close(told[1]);
  close(go[0]);

  loop = test_loop_open();
  snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", ntohs(addr.sin_port));
  endpoints[0] = endpoint;
  client_tls(&tls, "ca.pem");
  rn_pool_options_init(&o);
  o.endpoints = endpoints;
  o.endpoint_count = 1;
  o.size = 1;
  o.tls = &tls;
  o.connect_timeout_ms = o.timeout_ms = SLOW_MS;
  o.retry.attempts = 1;
  ASSERT_OK(rn_pool_new(loop, &o, &pool));
  /* A call the server holds: the connection has a call in flight. */
  call_resp(pool, "HOLD", &held);
  RUN_UNTIL(rn_loop_uv(loop), readable(told[0]), SLOW_MS);
  ASSERT_EQ(read(told[0], &byte, 1), 1);
  /* The loop stands still while the bad record arrives: the next turn
   * writes the call below and reads the record. */
  ASSERT_EQ(write(go[1], &byte, 1), 1);
  ASSERT_EQ(read(told[0], &byte, 1), 1);
  usleep(50 * 1000); /* loopback delivers it meanwhile */
  ASSERT(!held.done);
  call_resp(pool, "after", &after);
  RUN_UNTIL(rn_loop_uv(loop), held.done && after.done, SLOW_MS);
  ASSERT_EQ(held.status, RN_ETLS);
  ASSERT_EQ(after.status, RN_ETLS); /* written: maybe executed, no retry */
  test_run_for(rn_loop_uv(loop), 50); /* turns in which the bug bit */
  close_pool(pool);
  test_loop_close(loop);
  close(told[0]);
  close(go[1]);
  kill(pid, SIGKILL);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
}

/* A unix socket has no host name to verify the server's certificate
 * against: without server_name (or insecure) rn_pool_new refuses the
 * pool, saying why, instead of every connect failing later. With
 * server_name the name is checked: "localhost" works over the socket, a
 * name the certificate lacks is ETLSVERIFY. */
static void test_unix_needs_server_name(void) {
  rn_server_options_t so;
  rn_tls_options_t stls, tls;
  rn_pool_options_t o;
  rn_pool_stats_t st;
  rn_server_t *server;
  rn_pool_t *pool = NULL;
  rn_endpoint_t ep;
  result_t res;
  char path[64], listen[80], why[512];
  const char *endpoints[1];

  if (no_tls()) return;
  loop = test_loop_open();
  snprintf(path, sizeof(path), "/tmp/rn-tls-unix-%d.sock", (int)getpid());
  snprintf(listen, sizeof(listen), "unix:%s", path);
  unlink(path);
  rn_tls_options_init(&stls);
  stls.certificate = test_cert("server.pem");
  stls.key = test_cert("server.key");
  rn_server_options_init(&so);
  so.listen = listen;
  so.codec.protocol = RN_PROTOCOL_RESP;
  so.on_request = on_request;
  so.tls = &stls;
  ASSERT_OK(rn_server_new(loop, &so, &server));

  client_tls(&tls, "ca.pem");
  endpoints[0] = listen;
  rn_pool_options_init(&o);
  o.endpoints = endpoints;
  o.endpoint_count = 1;
  o.tls = &tls;
  o.connect_timeout_ms = o.timeout_ms = SLOW_MS;
  o.on_event = on_pool_event;
  ASSERT_EQ(rn_pool_new(loop, &o, &pool), UV_EINVAL);
  ASSERT(pool == NULL);
  ASSERT_OK(rn_endpoint_parse(&ep, listen, strlen(listen)));
  ASSERT_EQ(rn_tls_endpoint_check(&tls, &ep, why, sizeof(why)), UV_EINVAL);
  ASSERT(strstr(why, "needs tls.server_name") != NULL);
  ASSERT(strstr(why, listen) != NULL);
  /* A TCP endpoint needs no server_name: its host is the name. */
  ASSERT_OK(rn_endpoint_parse(&ep, "127.0.0.1:1", 11));
  ASSERT_OK(rn_tls_endpoint_check(&tls, &ep, why, sizeof(why)));

  /* insecure checks no name: accepted, and counted. */
  tls.insecure = 1;
  ASSERT_OK(rn_pool_new(loop, &o, &pool));
  echo_call(pool, "insecure");
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.tls_insecure, 1);
  close_pool(pool);
  tls.insecure = 0;

  tls.server_name = "localhost";
  ASSERT_OK(rn_pool_new(loop, &o, &pool));
  echo_call(pool, "over-unix");
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.tls_failures, 0);
  ASSERT_EQ(st.tls_insecure, 0);
  close_pool(pool);

  tls.server_name = "db.example.com";
  ASSERT_OK(rn_pool_new(loop, &o, &pool));
  call_resp(pool, "refused", &res);
  RUN_UNTIL(rn_loop_uv(loop), res.done, SLOW_MS);
  ASSERT_EQ(res.status, RN_ETLSVERIFY);
  close_pool(pool);

  stop_server(server);
  test_loop_close(loop);
  unlink(path);
}

/* The same rule for a unix socket added after rn_pool_new (discovery,
 * rn_pool_set_endpoints) and for new TLS options (rn_pool_reload_tls):
 * refused at once, nothing changed, rather than every connect to it
 * failing later. */
static void test_unix_added_later_needs_server_name(void) {
  rn_tls_options_t tls;
  rn_pool_options_t o;
  rn_pool_t *pool = NULL;
  rn_endpoint_info_t info;
  const char *tcp[1] = {"127.0.0.1:1"};
  const char *both[2] = {"127.0.0.1:1", "unix:/tmp/rn-tls-later.sock"};

  if (no_tls()) return;
  loop = test_loop_open();
  client_tls(&tls, "ca.pem");
  rn_pool_options_init(&o);
  o.endpoints = tcp;
  o.endpoint_count = 1;
  o.tls = &tls;
  o.min_idle = 0;
  ASSERT_OK(rn_pool_new(loop, &o, &pool));
  ASSERT_EQ(rn_pool_set_endpoints(pool, both, 2), UV_EINVAL);
  ASSERT_EQ(rn_pool_endpoint_count(pool), 1);
  ASSERT_OK(rn_pool_endpoint_info(pool, 0, &info));
  ASSERT(strcmp(info.endpoint, "127.0.0.1:1") == 0);
  close_pool(pool);

  /* With server_name the socket is accepted; new options without one
   * are then refused, and the pool keeps the old ones. */
  tls.server_name = "localhost";
  ASSERT_OK(rn_pool_new(loop, &o, &pool));
  ASSERT_OK(rn_pool_set_endpoints(pool, both, 2));
  ASSERT_EQ(rn_pool_endpoint_count(pool), 2);
  tls.server_name = NULL;
  ASSERT_EQ(rn_pool_reload_tls(pool, &tls), UV_EINVAL);
  tls.insecure = 1;
  ASSERT_OK(rn_pool_reload_tls(pool, &tls));
  close_pool(pool);
  test_loop_close(loop);
}

TEST_LIST_START
  TEST_ENTRY(test_verified_calls)
  TEST_ENTRY(test_wrong_ca)
  TEST_ENTRY(test_wrong_name)
  TEST_ENTRY(test_insecure_counted)
  TEST_ENTRY(test_idle_heartbeats)
  TEST_ENTRY(test_tickets_are_not_stray_bytes)
  TEST_ENTRY(test_mutual_tls_rnp)
  TEST_ENTRY(test_reload)
  TEST_ENTRY(test_reset_during_handshake)
  TEST_ENTRY(test_bad_options)
  TEST_ENTRY(test_unix_needs_server_name)
  TEST_ENTRY(test_unix_added_later_needs_server_name)
  TEST_ENTRY(test_write_done_as_tls_fails)
TEST_LIST_END

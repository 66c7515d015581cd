/* A connection's setup (client/conn_setup.c) against a scripted RESP
 * peer: the setup requests leave ahead of the readiness PING in one
 * write, no call goes out before all are answered, an error reply fails
 * the connect (WRONGPASS: a configuration fault, EAUTH; another: ESETUP),
 * an unanswered setup is a connect timeout, ROLE checks the role, and
 * -LOADING / -READONLY say something about the server, not the call. */
#include "resilnet.h"
#include "peer.h"
#include "pool_fixture.h"
#include "task.h"
#include "wait.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

static rn_loop_t *loop;
static rn_pool_t *pool;
static test_peer_t peer;
static rn_codec_t resp;

/* The peer's answers, by command (NULL: never answered). */
static const char *auth_reply;
static const char *role_reply;
static const char *ping_reply;
static const char *get_reply;
static int loading_pings; /* PINGs answered -LOADING before ping_reply */
static int hold;          /* answer nothing until cleared */
static char order[256];   /* the commands of the first connection, "A S ..." */
static int get_count;          /* GETs received, all connections */
static int first_read_frames; /* frames in a connection's first read */
static int wrong_roles, resolves;
static const char *wrong_role_reason, *resolve_reason;

static const char PASSWORD[] = "hunter2-setup-test";

static void answer(test_peer_conn_t *c, const char *reply) {
  if (reply != NULL) test_peer_send(c, reply, strlen(reply));
}

static void script(test_peer_conn_t *c) {
  size_t pos = 0;
  int frames = 0;
  rn_frame_t f;
  if (hold) return;
  while (rn_codec_frame(&resp, c->in.base + pos, c->in.len - pos, &f) == 1) {
    const char *p = c->in.base + pos;
    const char *word = "?";
    frames++;
    if (test_contains(p, f.size, "AUTH")) {
      word = "AUTH";
      answer(c, auth_reply);
    } else if (test_contains(p, f.size, "SELECT")) {
      word = "SELECT";
      answer(c, "+OK\r\n");
    } else if (test_contains(p, f.size, "CLIENT")) {
      word = "CLIENT";
      answer(c, "+OK\r\n");
    } else if (test_contains(p, f.size, "ROLE")) {
      word = "ROLE";
      answer(c, role_reply);
    } else if (test_contains(p, f.size, "PING")) {
      word = "PING";
      if (loading_pings > 0) {
        loading_pings--;
        answer(c, "-LOADING Redis is loading the dataset in memory\r\n");
      } else {
        answer(c, ping_reply);
      }
    } else if (test_contains(p, f.size, "GET")) {
      word = "GET";
      get_count++;
      answer(c, get_reply);
    } else {
      answer(c, "-ERR unknown command\r\n");
    }
    if (c == &peer.conns[0] && strlen(order) + strlen(word) + 2 < sizeof(order)) {
      strcat(order, word);
      strcat(order, " ");
    }
    pos += f.size;
  }
  if (c->reads == 1 && first_read_frames == 0) first_read_frames = frames;
  rn_buf_consume(&c->in, pos);
}

static void on_event(rn_pool_t *p, const rn_pool_event_t *ev) {
  (void)p;
  if (ev->type == RN_EVENT_WRONG_ROLE) {
    wrong_roles++;
    wrong_role_reason = ev->reason;
  } else if (ev->type == RN_EVENT_RESOLVE) {
    resolves++;
    resolve_reason = ev->reason;
  }
}

/* Options every case starts from: the scripted answers of a healthy Redis
 * with a password. */
static void begin(rn_pool_options_t *po) {
  test_codec_init(&resp, RN_PROTOCOL_RESP);
  loop = test_loop_open();
  test_peer_start(&peer, rn_loop_uv(loop), script);
  auth_reply = "+OK\r\n";
  role_reply = "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n";
  ping_reply = "+PONG\r\n";
  get_reply = "$1\r\nv\r\n";
  loading_pings = 0;
  hold = 0;
  order[0] = '\0';
  get_count = first_read_frames = wrong_roles = resolves = 0;
  wrong_role_reason = resolve_reason = NULL;
  test_pool_options(po, peer.endpoint, RN_PROTOCOL_RESP);
  po->password = PASSWORD;
  po->on_event = on_event;
  po->heartbeat.interval_ms = 1000;
  po->reconnect.initial_ms = 20;
  po->reconnect.max_ms = 200;
}

static void end(void) {
  test_pool_close_wait(loop, pool);
  test_peer_stop(&peer);
  test_loop_close(loop);
}

static const char get[] = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";

static void call(uint64_t timeout_ms, test_outcome_t *o) {
  rn_call_options_t co;
  memset(o, 0, sizeof(*o));
  memset(&co, 0, sizeof(co));
  co.timeout_ms = timeout_ms;
  ASSERT_OK(rn_pool_call(pool, get, sizeof(get) - 1, &co, test_record, o));
}

/* AUTH, SELECT and CLIENT SETNAME (the conveniences), then the caller's
 * own setup, ROLE and the readiness PING, in one write; the call after. */
static void test_setup_in_order_before_calls(void) {
  static const char *const words[] = {"SELECT", "3"};
  rn_setup_request_t own;
  rn_pool_options_t po;
  test_outcome_t o;
  begin(&po);
  po.database = 2;
  po.client_name = "setup-test";
  own.args = words;
  own.lens = NULL;
  own.count = 2;
  po.setup = &own;
  po.setup_count = 1;
  po.role = RN_ROLE_MASTER;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call(5000, &o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 5000);
  ASSERT_EQ(o.status, 0);
  ASSERT_EQ(strcmp(order, "AUTH SELECT CLIENT SELECT ROLE PING GET "), 0);
  ASSERT_EQ(first_read_frames, 6); /* one write: all but the call */
  ASSERT_EQ(test_pool_stats(pool).setup_failures, 0);
  end();
}

/* -WRONGPASS: a configuration fault. The waiting call fails at once with
 * EAUTH and the server's words (no password in them), never sent. */
static void test_wrong_password(void) {
  rn_pool_options_t po;
  test_outcome_t o;
  uint64_t t0;
  begin(&po);
  auth_reply = "-WRONGPASS invalid username-password pair or user is "
               "disabled.\r\n";
  po.connect_timeout_ms = 1000;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  t0 = uv_now(rn_loop_uv(loop));
  call(5000, &o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 5000);
  ASSERT_EQ(o.status, RN_EAUTH);
  ASSERT_EQ(o.maybe_executed, 0);
  ASSERT(test_contains(o.body, o.body_len, "WRONGPASS"));
  ASSERT(!test_contains(o.body, o.body_len, PASSWORD));
  ASSERT(uv_now(rn_loop_uv(loop)) - t0 < 1000);
  ASSERT_EQ(get_count, 0);
  ASSERT_EQ(test_pool_stats(pool).setup_failures, 1);
  ASSERT_EQ(test_pool_stats(pool).connect_failures, 1);
  end();
}

/* Another error reply: an ordinary connect failure (backoff), the call
 * waits and at its deadline fails with ESETUP and the server's text. */
static void test_other_setup_error(void) {
  static const char *const words[] = {"NOSUCHCOMMAND"};
  rn_setup_request_t own;
  rn_pool_options_t po;
  test_outcome_t o;
  begin(&po);
  po.password = NULL;
  own.args = words;
  own.lens = NULL;
  own.count = 1;
  po.setup = &own;
  po.setup_count = 1;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call(600, &o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 5000);
  ASSERT_EQ(o.status, RN_ESETUP);
  ASSERT_EQ(o.maybe_executed, 0);
  ASSERT(test_contains(o.body, o.body_len, "ERR unknown command"));
  ASSERT_EQ(get_count, 0);
  /* Backoff (20 ms growing by 1.6 up to 200 ms): a handful in 600 ms,
   * not one per loop turn. */
  ASSERT(peer.count >= 2 && peer.count <= 12);
  ASSERT_EQ(test_pool_stats(pool).setup_failures,
            test_pool_stats(pool).connect_failures);
  end();
}

/* A setup request never answered: the connect times out (connect_timeout
 * covers the setup), and no call was sent. */
static void test_setup_timeout(void) {
  rn_pool_options_t po;
  test_outcome_t o;
  begin(&po);
  auth_reply = NULL;
  po.connect_timeout_ms = 150;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call(400, &o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 5000);
  ASSERT_EQ(o.status, UV_ETIMEDOUT);
  ASSERT_EQ(o.maybe_executed, 0);
  ASSERT_EQ(get_count, 0);
  ASSERT(test_pool_stats(pool).connect_failures >= 1);
  end();
}

/* A call made while the setup is out waits, unsent, and goes once the
 * setup (and the ping) are answered. */
static void test_call_waits_for_setup(void) {
  rn_pool_options_t po;
  test_outcome_t o;
  begin(&po);
  hold = 1;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call(5000, &o);
  RUN_UNTIL(rn_loop_uv(loop), peer.count == 1 && peer.conns[0].in.len > 0,
            5000);
  /* Let the loop turn a while: nothing but the setup and PING leave. */
  {
    uint64_t until = uv_now(rn_loop_uv(loop)) + 100;
    RUN_UNTIL(rn_loop_uv(loop), uv_now(rn_loop_uv(loop)) >= until, 1000);
  }
  ASSERT_EQ(o.fired, 0);
  ASSERT(!test_contains(peer.conns[0].in.base, peer.conns[0].in.len,
                        "GET"));
  ASSERT_EQ(test_pool_stats(pool).in_flight, 0);
  hold = 0;
  script(&peer.conns[0]);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 5000);
  ASSERT_EQ(o.status, 0);
  ASSERT_EQ(get_count, 1);
  ASSERT_EQ(strcmp(order, "AUTH PING GET "), 0);
  end();
}

/* role = master and ROLE says slave: a failed connect (EROLE, a
 * wrong_role event), the call never sent. */
static void test_wrong_role(void) {
  rn_pool_options_t po;
  test_outcome_t o;
  begin(&po);
  po.role = RN_ROLE_MASTER;
  role_reply = "*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n"
               "$9\r\nconnected\r\n:1\r\n";
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call(300, &o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 5000);
  ASSERT_EQ(o.status, RN_EROLE);
  ASSERT_EQ(o.maybe_executed, 0);
  ASSERT(test_contains(o.body, o.body_len, "slave"));
  ASSERT_EQ(get_count, 0);
  ASSERT(wrong_roles >= 1);
  ASSERT_EQ(strcmp(wrong_role_reason, "role"), 0);
  ASSERT(test_pool_stats(pool).wrong_role >= 1);
  ASSERT(peer.count <= 12); /* backoff, not a storm */
  end();
}

/* -LOADING to the readiness PING: a failed connect; the call waits,
 * unsent, and succeeds once the server answers PONG. */
static void test_loading_ping(void) {
  rn_pool_options_t po;
  test_outcome_t o;
  begin(&po);
  po.password = NULL;
  loading_pings = 3;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call(5000, &o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 5000);
  ASSERT_EQ(o.status, 0);
  ASSERT_EQ(o.attempts, 1);
  ASSERT_EQ(get_count, 1);
  ASSERT_EQ(peer.count, 4);
  ASSERT_EQ(test_pool_stats(pool).loading, 3);
  end();
}

/* role = master: -READONLY to a call retires the connection, backs the
 * endpoint off and asks for discovery (wrong_role, then resolve); the
 * next connect's ROLE finds the replica and fails; the caller get_count
 * EROLE at its deadline, never READONLY. */
static void test_readonly_retires(void) {
  rn_pool_options_t po;
  test_outcome_t o;
  begin(&po);
  po.role = RN_ROLE_MASTER;
  get_reply = "-READONLY You can't write against a read only replica.\r\n";
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  call(400, &o);
  RUN_UNTIL(rn_loop_uv(loop), get_count == 1, 5000);
  role_reply = "*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n"
               "$9\r\nconnected\r\n:1\r\n";
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 5000);
  ASSERT_EQ(get_count, 1);
  ASSERT_EQ(o.status, RN_EROLE);
  ASSERT_EQ(o.maybe_executed, 0);
  ASSERT(wrong_roles >= 2); /* "readonly", then the connects' "role" */
  ASSERT(resolves >= 1);
  ASSERT(peer.count >= 2);
  ASSERT(peer.conns[0].closed_by_client);
  end();
}

/* Regression: -READONLY to one request of a batch on a role = master pool
 * was kept as that request's error and nothing more: the connection to
 * the replica went on taking calls. Now it does what a single call's
 * -READONLY does (wrong_role "readonly", resolve, the connection retired
 * once the batch is answered), and the batch's element stays the error. */
static int batch_fired, batch_status;
static size_t batch_count;
static int element_status[3];
static char element_body[3][16];

static void on_batch(rn_pool_t *p, void *data, const rn_batch_result_t *r) {
  size_t i;
  (void)p;
  (void)data;
  ASSERT_EQ(batch_fired, 0);
  batch_fired++;
  batch_status = r->status;
  batch_count = r->count;
  for (i = 0; r->status == 0 && i < r->count && i < 3; i++) {
    size_t n = r->results[i].body_len < sizeof(element_body[i]) - 1
                   ? r->results[i].body_len
                   : sizeof(element_body[i]) - 1;
    element_status[i] = r->results[i].status;
    memcpy(element_body[i], r->results[i].body, n);
    element_body[i][n] = '\0';
  }
}

static void test_batch_readonly_retires(void) {
  static const char frames[] = "*1\r\n$4\r\nPING\r\n"
                               "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
                               "*1\r\n$4\r\nPING\r\n";
  rn_pool_options_t po;
  test_outcome_t o;
  begin(&po);
  po.role = RN_ROLE_MASTER;
  get_reply = "-READONLY You can't write against a read only replica.\r\n";
  batch_fired = 0;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  ASSERT_OK(rn_pool_batch(pool, frames, sizeof(frames) - 1, 3, NULL,
                          on_batch, NULL));
  RUN_UNTIL(rn_loop_uv(loop), batch_fired, 5000);
  ASSERT_OK(batch_status);
  ASSERT_EQ(batch_count, 3);
  ASSERT_OK(element_status[0]);
  ASSERT_EQ(element_status[1], RN_EREPLY);
  ASSERT(strstr(element_body[1], "READONLY") != NULL);
  ASSERT_OK(element_status[2]);
  ASSERT_EQ(get_count, 1); /* not sent again */
  ASSERT_EQ(wrong_roles, 1);
  ASSERT_STR_EQ(wrong_role_reason, "readonly");
  ASSERT(resolves >= 1);
  ASSERT_EQ(test_pool_stats(pool).wrong_role, 1);
  RUN_UNTIL(rn_loop_uv(loop), peer.conns[0].closed_by_client, 5000);
  /* The next call goes on a new connection, whose ROLE finds the replica:
   * EROLE at its deadline, never to the retired one. */
  role_reply = "*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n"
               "$9\r\nconnected\r\n:1\r\n";
  call(300, &o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 5000);
  ASSERT_EQ(o.status, RN_EROLE);
  ASSERT_EQ(get_count, 1);
  end();
}

/* The conveniences and role are Redis's words: other protocols refuse
 * them, and a username needs a password. */
static void test_bad_options(void) {
  rn_pool_options_t po;
  rn_pool_t *p;
  test_pool_options(&po, "127.0.0.1:1", RN_PROTOCOL_LINE);
  po.password = "x";
  loop = test_loop_open();
  ASSERT_EQ(rn_pool_new(loop, &po, &p), UV_EINVAL);
  test_pool_options(&po, "127.0.0.1:1", RN_PROTOCOL_RESP);
  po.username = "u";
  ASSERT_EQ(rn_pool_new(loop, &po, &p), UV_EINVAL);
  test_pool_options(&po, "127.0.0.1:1", RN_PROTOCOL_RESP);
  po.role = (rn_role_t)7;
  ASSERT_EQ(rn_pool_new(loop, &po, &p), UV_EINVAL);
  /* A name Redis refuses (CLIENT SETNAME: no spaces, printable ASCII)
   * would fail every connect's setup with ESETUP: refused here. */
  test_pool_options(&po, "127.0.0.1:1", RN_PROTOCOL_RESP);
  po.client_name = "two words";
  ASSERT_EQ(rn_pool_new(loop, &po, &p), UV_EINVAL);
  po.client_name = "tab\there";
  ASSERT_EQ(rn_pool_new(loop, &po, &p), UV_EINVAL);
  po.client_name = "caf\xc3\xa9";
  ASSERT_EQ(rn_pool_new(loop, &po, &p), UV_EINVAL);
  po.client_name = "worker-7:eu/1";
  ASSERT_OK(rn_pool_new(loop, &po, &p));
  rn_pool_close(p, 0, NULL);
  test_loop_close(loop);
}

TEST_LIST_START
  TEST_ENTRY(test_setup_in_order_before_calls)
  TEST_ENTRY(test_wrong_password)
  TEST_ENTRY(test_other_setup_error)
  TEST_ENTRY(test_setup_timeout)
  TEST_ENTRY(test_call_waits_for_setup)
  TEST_ENTRY(test_wrong_role)
  TEST_ENTRY(test_batch_readonly_retires)
  TEST_ENTRY(test_loading_ping)
  TEST_ENTRY(test_readonly_retires)
  TEST_ENTRY(test_bad_options)
TEST_LIST_END

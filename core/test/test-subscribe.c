/* Subscriber connections (client/subscribe.c) against the scripted peer
 * acting as a server in subscribe mode: the confirmations and messages it
 * sends unasked (RESP2 arrays in the reply stream, RESP3 push frames)
 * reach the callback in order instead of closing the connection as
 * unexpected; its heartbeat keeps pinging (answered ["pong", ""]) so a
 * silent peer is a dead peer; the loss is told once; release closes. */
#define _GNU_SOURCE /* memmem */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"
#include "peer.h"
#include "pool_fixture.h"
#include "wait.h"

#include <string.h>
#include <uv.h>

static int contains(const char *data, size_t len, const char *word) {
  return memmem(data, len, word, strlen(word)) != NULL;
}

#define SEND(c, s) test_peer_send((c), (s), sizeof(s) - 1)

/* The peer: PING -> ["pong", ""] (RESP2 subscribe mode); SUBSCRIBE (of
 * channels a and b) -> a confirmation per channel, then a message on a;
 * PUSHME -> a RESP3 push message; SILENT -> nothing more, ever (a frozen
 * server). Anything else: +OK. */
static void answer_sub(test_peer_conn_t *c) {
  static rn_codec_t codec;
  static int ready;
  size_t pos = 0;
  rn_frame_t f;
  if (!ready) {
    rn_codec_options_t co;
    memset(&co, 0, sizeof(co));
    co.protocol = RN_PROTOCOL_RESP;
    ASSERT_OK(rn_codec_init(&codec, &co));
    ready = 1;
  }
  while (rn_codec_frame(&codec, c->in.base + pos, c->in.len - pos, &f) == 1) {
    const char *frame = c->in.base + pos;
    if (contains(frame, f.size, "SILENT")) c->data = c;
    if (c->data != NULL) {
      ;
    } else if (contains(frame, f.size, "PING")) {
      SEND(c, "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    } else if (contains(frame, f.size, "SUBSCRIBE")) {
      SEND(c, "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
              "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
              "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n");
    } else if (contains(frame, f.size, "PUSHME")) {
      SEND(c, ">3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$4\r\npush\r\n");
    } else {
      SEND(c, "+OK\r\n");
    }
    pos += f.size;
  }
  rn_buf_consume(&c->in, pos);
}

#define MAX_PUSHES 16

typedef struct {
  int pushes;
  char frames[MAX_PUSHES][64];
  int ended;      /* final calls (must stay at most 1) */
  int end_status;
} sub_record_t;

static void on_push(rn_hold_t *hold, void *data, const char *frame,
                    size_t len, int status) {
  sub_record_t *r = data;
  (void)hold;
  ASSERT_EQ(r->ended, 0); /* nothing after the last call */
  if (status != 0) {
    ASSERT(frame == NULL);
    r->ended++;
    r->end_status = status;
    return;
  }
  ASSERT(r->pushes < MAX_PUSHES && len < 64);
  memcpy(r->frames[r->pushes], frame, len);
  r->frames[r->pushes][len] = '\0';
  r->pushes++;
}

typedef struct {
  int fired;
  rn_hold_t *hold;
} granted_t;

static void on_hold(rn_pool_t *pool, void *data, rn_hold_t *hold,
                    int status) {
  granted_t *g = data;
  (void)pool;
  ASSERT_OK(status);
  g->fired++;
  g->hold = hold;
}

typedef struct {
  rn_loop_t *loop;
  uv_loop_t *uv;
  test_peer_t peer;
  rn_pool_t *pool;
  rn_hold_t *hold;
} fixture_t;

static void setup(fixture_t *fx, uint64_t interval_ms) {
  rn_pool_options_t po;
  granted_t g;
  fx->loop = test_loop_open();
  fx->uv = rn_loop_uv(fx->loop);
  test_peer_start(&fx->peer, fx->uv, answer_sub);
  test_pool_options(&po, fx->peer.endpoint, RN_PROTOCOL_RESP);
  po.heartbeat.interval_ms = interval_ms;
  po.heartbeat.timeout_ms = 3 * interval_ms;
  po.heartbeat.probe_ms = 0;
  po.size = 1;
  ASSERT_OK(rn_pool_new(fx->loop, &po, &fx->pool));
  memset(&g, 0, sizeof(g));
  ASSERT_OK(rn_pool_hold(fx->pool, NULL, on_hold, &g));
  RUN_UNTIL(fx->uv, g.fired, 2000);
  fx->hold = g.hold;
}

static void teardown(fixture_t *fx) {
  test_pool_close_wait(fx->loop, fx->pool);
  test_peer_stop(&fx->peer);
  test_loop_close(fx->loop);
}

static void write_cmd(rn_hold_t *hold, const char *cmd) {
  rn_buf_t frame;
  rn_buf_init(&frame);
  ASSERT_OK(rn_resp_encode_array(&frame, 1));
  ASSERT_OK(rn_resp_encode_bulk(&frame, cmd, strlen(cmd)));
  ASSERT_OK(rn_hold_write(hold, frame.base, frame.len));
  rn_buf_free(&frame);
}

/* RESP2: the confirmations and the message come in order to the
 * callback; pings go on and are answered by ["pong", ""] (the connection
 * would be closed as unexpected or dead otherwise); release closes the
 * connection and the callback hears nothing more. */
static void test_subscribe_resp2_in_order(void) {
  fixture_t fx;
  sub_record_t r;
  rn_pool_stats_t s;
  uint64_t beats;
  setup(&fx, 50);
  memset(&r, 0, sizeof(r));

  ASSERT_OK(rn_hold_subscribe(fx.hold, on_push, &r));
  write_cmd(fx.hold, "SUBSCRIBE");
  RUN_UNTIL(fx.uv, r.pushes == 3, 2000);
  ASSERT(strstr(r.frames[0], "subscribe\r\n$1\r\na") != NULL);
  ASSERT(strstr(r.frames[1], "subscribe\r\n$1\r\nb") != NULL);
  ASSERT(strstr(r.frames[2], "message\r\n$1\r\na\r\n$5\r\nhello") != NULL);

  rn_pool_stats(fx.pool, &s);
  beats = s.heartbeats;
  RUN_UNTIL(fx.uv, (rn_pool_stats(fx.pool, &s), s.heartbeats >= beats + 4),
            3000);
  ASSERT_EQ(s.dead_peers, 0);
  ASSERT_EQ(r.ended, 0);
  ASSERT_EQ(r.pushes, 3); /* the pongs went to the pings */
  ASSERT_EQ(fx.peer.count, 1);

  rn_hold_release(fx.hold, 0); /* never reused: closed */
  RUN_UNTIL(fx.uv, fx.peer.eofs == 1, 2000);
  rn_pool_stats(fx.pool, &s);
  ASSERT_EQ(s.holds_reset, 1);
  ASSERT_EQ(r.ended, 0);
  teardown(&fx);
}

/* RESP3 push frames go to the callback too; a peer gone silent is a dead
 * peer by the heartbeat, told to the callback exactly once. */
static void test_subscribe_dead_peer_told_once(void) {
  fixture_t fx;
  sub_record_t r;
  rn_pool_stats_t s;
  setup(&fx, 50);
  memset(&r, 0, sizeof(r));

  ASSERT_OK(rn_hold_subscribe(fx.hold, on_push, &r));
  write_cmd(fx.hold, "PUSHME");
  RUN_UNTIL(fx.uv, r.pushes == 1, 2000);
  ASSERT(strstr(r.frames[0], ">3\r\n$7\r\nmessage") == r.frames[0]);

  write_cmd(fx.hold, "SILENT");
  RUN_UNTIL(fx.uv, r.ended == 1, 3000);
  ASSERT_EQ(r.end_status, RN_EDEADPEER);
  rn_pool_stats(fx.pool, &s);
  ASSERT_EQ(s.dead_peers, 1);
  /* Gone: nothing more can be written; release only frees. */
  ASSERT_EQ(rn_hold_write(fx.hold, "*1\r\n$4\r\nPING\r\n", 14),
            RN_EDEADPEER);
  rn_hold_release(fx.hold, 0);
  uv_run(fx.uv, UV_RUN_NOWAIT);
  ASSERT_EQ(r.ended, 1);
  teardown(&fx);
}

/* Bad input is refused with UV_EINVAL and changes nothing; a pool close
 * tells the subscriber once. */
static void test_subscribe_bad_input_and_close(void) {
  fixture_t fx;
  sub_record_t r;
  setup(&fx, 0);
  memset(&r, 0, sizeof(r));

  ASSERT_EQ(rn_hold_write(fx.hold, "*1\r\n$4\r\nPING\r\n", 14), UV_EINVAL);
  ASSERT_EQ(rn_hold_subscribe(fx.hold, NULL, &r), UV_EINVAL);
  ASSERT_OK(rn_hold_subscribe(fx.hold, on_push, &r));
  ASSERT_EQ(rn_hold_subscribe(fx.hold, on_push, &r), UV_EINVAL);
  ASSERT_EQ(rn_hold_write(fx.hold, "*1\r\n$4\r\nPI", 10), UV_EINVAL);
  ASSERT_EQ(rn_hold_write(fx.hold, NULL, 0), UV_EINVAL);
  write_cmd(fx.hold, "SUBSCRIBE");
  RUN_UNTIL(fx.uv, r.pushes == 3, 2000);

  test_pool_close_wait(fx.loop, fx.pool);
  ASSERT_EQ(r.ended, 1);
  ASSERT(r.end_status != 0);
  rn_hold_release(fx.hold, 0);
  test_peer_stop(&fx.peer);
  test_loop_close(fx.loop);
}

TEST_LIST_START
  TEST_ENTRY(test_subscribe_resp2_in_order)
  TEST_ENTRY(test_subscribe_dead_peer_told_once)
  TEST_ENTRY(test_subscribe_bad_input_and_close)
TEST_LIST_END

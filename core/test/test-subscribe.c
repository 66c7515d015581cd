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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static int contains(const char *data, size_t len, const char *word) {
  return memmem(data, len, word, strlen(word)) != NULL;
}

#define SEND(c, s) test_peer_send((c), (s), sizeof(s) - 1)

/* The peer, one connection at a time (RESP2 subscribe mode): PING ->
 * ["pong", ""]; SUBSCRIBE a b -> a confirmation per channel, then a
 * message on a; SUBSCRIBE push -> a RESP3 push confirmation and message;
 * SUBSCRIBE flood -> its confirmation and FLOOD messages, one write;
 * SUBSCRIBE silent -> nothing more, ever (a frozen server); SUBSCRIBE
 * denied -> -NOPERM, held until the next PING arrives (so that the error
 * comes while a ping is out behind it), or, after SUBSCRIBE holdpong
 * (whose next PING's answer waits for it), right after that pong. */
#define FLOOD 200

static struct {
  test_peer_conn_t *conn;
  int silent;
  int deny_at_ping; /* a refusal waits for the next PING */
  int hold_pong;    /* the next PING's answer waits for a refusal */
  int pong_held;
} st;

static const char pong[] = "*2\r\n$4\r\npong\r\n$0\r\n\r\n";
static const char noperm[] = "-NOPERM no permissions to access a channel\r\n";

static void send_flood(test_peer_conn_t *c) {
  rn_buf_t out;
  char payload[32];
  int i;
  rn_buf_init(&out);
  ASSERT_OK(rn_resp_encode_array(&out, 3));
  ASSERT_OK(rn_resp_encode_bulk(&out, "subscribe", 9));
  ASSERT_OK(rn_resp_encode_bulk(&out, "flood", 5));
  ASSERT_OK(rn_resp_encode_integer(&out, 1));
  for (i = 1; i <= FLOOD; i++) {
    int n = snprintf(payload, sizeof(payload), "%d", i);
    ASSERT_OK(rn_resp_encode_array(&out, 3));
    ASSERT_OK(rn_resp_encode_bulk(&out, "message", 7));
    ASSERT_OK(rn_resp_encode_bulk(&out, "flood", 5));
    ASSERT_OK(rn_resp_encode_bulk(&out, payload, (size_t)n));
  }
  test_peer_send(c, out.base, out.len);
  rn_buf_free(&out);
}

static void answer_sub(test_peer_conn_t *c) {
  static rn_codec_t codec;
  static int ready;
  size_t pos = 0;
  rn_frame_t f;
  if (!ready) {
    test_codec_init(&codec, RN_PROTOCOL_RESP);
    ready = 1;
  }
  st.conn = c;
  while (rn_codec_frame(&codec, c->in.base + pos, c->in.len - pos, &f) == 1) {
    const char *frame = c->in.base + pos;
    if (contains(frame, f.size, "silent")) st.silent = 1;
    if (st.silent) {
      ;
    } else if (contains(frame, f.size, "PING")) {
      if (st.deny_at_ping) SEND(c, noperm);
      st.deny_at_ping = 0;
      if (st.hold_pong) st.pong_held = 1;
      else SEND(c, pong);
      st.hold_pong = 0;
    } else if (contains(frame, f.size, "denied")) {
      if (st.pong_held) {
        SEND(c, pong);
        SEND(c, noperm);
        st.pong_held = 0;
      } else {
        st.deny_at_ping = 1;
      }
    } else if (contains(frame, f.size, "holdpong")) {
      SEND(c, "*3\r\n$9\r\nsubscribe\r\n$8\r\nholdpong\r\n:1\r\n");
      st.hold_pong = 1;
    } else if (contains(frame, f.size, "push")) {
      SEND(c, ">3\r\n$9\r\nsubscribe\r\n$4\r\npush\r\n:1\r\n"
              ">3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$4\r\npush\r\n");
    } else if (contains(frame, f.size, "flood")) {
      send_flood(c);
    } else if (contains(frame, f.size, "SUBSCRIBE")) {
      SEND(c, "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
              "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
              "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n");
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
  int refusals;   /* status RN_EREPLY */
  char refusal[64];
  int ended;      /* final calls (must stay at most 1) */
  int end_status;
  int pause_at;   /* pause from the callback at this many pushes */
  int flood_last; /* the flood's last message, in order */
} sub_record_t;

static void on_push(rn_hold_t *hold, void *data, const char *frame,
                    size_t len, int status) {
  sub_record_t *r = data;
  ASSERT_EQ(r->ended, 0); /* nothing after the last call */
  if (status == RN_EREPLY) {
    ASSERT(frame != NULL && len < 64);
    memcpy(r->refusal, frame, len);
    r->refusal[len] = '\0';
    r->refusals++;
    return;
  }
  if (status != 0) {
    ASSERT(frame == NULL);
    r->ended++;
    r->end_status = status;
    return;
  }
  if (contains(frame, len, "message\r\n$5\r\nflood")) {
    /* payload: the message's number, after the last CRLF pair */
    const char *p = frame + len - 2;
    while (p > frame && p[-1] != '\n') p--;
    ASSERT_EQ(atoi(p), r->flood_last + 1);
    r->flood_last++;
    r->pushes++;
    if (r->pushes == r->pause_at) ASSERT_OK(rn_hold_pause(hold));
    return;
  }
  ASSERT(r->pushes < MAX_PUSHES && len < 64);
  memcpy(r->frames[r->pushes], frame, len);
  r->frames[r->pushes][len] = '\0';
  r->pushes++;
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
  test_granted_t g;
  memset(&st, 0, sizeof(st));
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
  ASSERT_OK(rn_pool_hold(fx->pool, NULL, test_on_granted, &g));
  RUN_UNTIL(fx->uv, g.fired, 2000);
  fx->hold = g.hold;
}

static void teardown(fixture_t *fx) {
  test_pool_close_wait(fx->loop, fx->pool);
  test_peer_stop(&fx->peer);
  test_loop_close(fx->loop);
}

/* SUBSCRIBE a [b]: written with no call attached. */
static void write_sub(rn_hold_t *hold, const char *a, const char *b) {
  rn_buf_t frame;
  rn_buf_init(&frame);
  ASSERT_OK(rn_resp_encode_array(&frame, b != NULL ? 3 : 2));
  ASSERT_OK(rn_resp_encode_bulk(&frame, "SUBSCRIBE", 9));
  ASSERT_OK(rn_resp_encode_bulk(&frame, a, strlen(a)));
  if (b != NULL) ASSERT_OK(rn_resp_encode_bulk(&frame, b, strlen(b)));
  ASSERT_OK(rn_hold_write(hold, frame.base, frame.len));
  rn_buf_free(&frame);
}

static uint64_t heartbeats(rn_pool_t *pool) {
  rn_pool_stats_t s;
  rn_pool_stats(pool, &s);
  return s.heartbeats;
}

static uint64_t dead_peers(rn_pool_t *pool) {
  rn_pool_stats_t s;
  rn_pool_stats(pool, &s);
  return s.dead_peers;
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
  write_sub(fx.hold, "a", "b");
  RUN_UNTIL(fx.uv, r.pushes == 3, 2000);
  ASSERT(strstr(r.frames[0], "subscribe\r\n$1\r\na") != NULL);
  ASSERT(strstr(r.frames[1], "subscribe\r\n$1\r\nb") != NULL);
  ASSERT(strstr(r.frames[2], "message\r\n$1\r\na\r\n$5\r\nhello") != NULL);

  beats = heartbeats(fx.pool);
  RUN_UNTIL(fx.uv, heartbeats(fx.pool) >= beats + 4, 3000);
  rn_pool_stats(fx.pool, &s);
  ASSERT_EQ(s.dead_peers, 0);
  ASSERT_EQ(s.heartbeats_missed, 0);
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

/* RESP3 push frames go to the callback too; a peer gone silent (its
 * SUBSCRIBE never confirmed, its pings never answered) is a dead peer by
 * the heartbeat, told to the callback exactly once. */
static void test_subscribe_dead_peer_told_once(void) {
  fixture_t fx;
  sub_record_t r;
  setup(&fx, 50);
  memset(&r, 0, sizeof(r));

  ASSERT_OK(rn_hold_subscribe(fx.hold, on_push, &r));
  write_sub(fx.hold, "push", NULL);
  RUN_UNTIL(fx.uv, r.pushes == 2, 2000);
  ASSERT(strstr(r.frames[0], ">3\r\n$9\r\nsubscribe") == r.frames[0]);
  ASSERT(strstr(r.frames[1], ">3\r\n$7\r\nmessage") == r.frames[1]);

  write_sub(fx.hold, "silent", NULL);
  RUN_UNTIL(fx.uv, r.ended == 1, 3000);
  ASSERT_EQ(r.end_status, RN_EDEADPEER);
  ASSERT_EQ(dead_peers(fx.pool), 1);
  /* Gone: nothing more can be written; release only frees. */
  ASSERT_EQ(rn_hold_write(fx.hold, "*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n", 26),
            RN_EDEADPEER);
  ASSERT_EQ(rn_hold_pause(fx.hold), RN_EDEADPEER);
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

  ASSERT_EQ(rn_hold_write(fx.hold, "*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n", 26),
            UV_EINVAL); /* not a subscriber yet */
  ASSERT_EQ(rn_hold_pause(fx.hold), UV_EINVAL);
  ASSERT_EQ(rn_hold_resume(fx.hold), UV_EINVAL);
  ASSERT_EQ(rn_hold_subscribe(fx.hold, NULL, &r), UV_EINVAL);
  ASSERT_OK(rn_hold_subscribe(fx.hold, on_push, &r));
  ASSERT_EQ(rn_hold_subscribe(fx.hold, on_push, &r), UV_EINVAL);
  ASSERT_EQ(rn_hold_write(fx.hold, "*1\r\n$4\r\nPI", 10), UV_EINVAL);
  ASSERT_EQ(rn_hold_write(fx.hold, NULL, 0), UV_EINVAL);
  /* Only subscribe commands that name something: each confirmation is
   * counted against what it answers. */
  ASSERT_EQ(rn_hold_write(fx.hold, "*1\r\n$4\r\nPING\r\n", 14), UV_EINVAL);
  ASSERT_EQ(rn_hold_write(fx.hold, "*1\r\n$11\r\nUNSUBSCRIBE\r\n", 22),
            UV_EINVAL);
  ASSERT_EQ(rn_hold_write(fx.hold, "*2\r\n$3\r\nGET\r\n$1\r\na\r\n", 20),
            UV_EINVAL);
  /* One bad frame among good ones: none is written. */
  ASSERT_EQ(rn_hold_write(fx.hold,
                          "*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n"
                          "*1\r\n$4\r\nPING\r\n", 40),
            UV_EINVAL);
  write_sub(fx.hold, "a", "b");
  RUN_UNTIL(fx.uv, r.pushes == 3, 2000);
  ASSERT_EQ(fx.peer.reads, 1);

  test_pool_close_wait(fx.loop, fx.pool);
  ASSERT_EQ(r.ended, 1);
  ASSERT(r.end_status != 0);
  rn_hold_release(fx.hold, 0);
  test_peer_stop(&fx.peer);
  test_loop_close(fx.loop);
}

/* Regression: a SUBSCRIBE refused (-NOPERM) while a PING was out behind
 * it had its error taken for the ping's answer, and the real pong that
 * followed closed the connection as unexpected: the application never
 * saw the refusal. Now each reply goes to what it answers, in the order
 * they were written, either way round: the refusal to the callback
 * (status RN_EREPLY, the connection kept), the pong to the ping. */
static void test_subscribe_refused_while_ping_out(void) {
  fixture_t fx;
  sub_record_t r;
  uint64_t beats;
  setup(&fx, 50);
  memset(&r, 0, sizeof(r));
  ASSERT_OK(rn_hold_subscribe(fx.hold, on_push, &r));

  /* SUBSCRIBE, then a PING: -NOPERM, then the pong. */
  write_sub(fx.hold, "denied", NULL);
  RUN_UNTIL(fx.uv, r.refusals == 1 || r.ended, 3000);
  ASSERT_EQ(r.ended, 0);
  ASSERT(strncmp(r.refusal, "-NOPERM", 7) == 0);
  ASSERT_EQ(r.pushes, 0);

  /* A PING, then SUBSCRIBE: the pong, then -NOPERM. */
  write_sub(fx.hold, "holdpong", NULL);
  RUN_UNTIL(fx.uv, st.pong_held || r.ended, 3000);
  write_sub(fx.hold, "denied", NULL);
  RUN_UNTIL(fx.uv, r.refusals == 2 || r.ended, 3000);
  ASSERT_EQ(r.ended, 0);

  /* Still in order and alive: a SUBSCRIBE works, pings are answered. */
  write_sub(fx.hold, "a", "b");
  RUN_UNTIL(fx.uv, r.pushes == 4 || r.ended, 2000); /* holdpong's too */
  beats = heartbeats(fx.pool);
  RUN_UNTIL(fx.uv, heartbeats(fx.pool) >= beats + 3 || r.ended, 3000);
  ASSERT_EQ(r.ended, 0);
  ASSERT_EQ(dead_peers(fx.pool), 0);
  ASSERT_EQ(r.refusals, 2);
  ASSERT_EQ(fx.peer.count, 1);
  rn_hold_release(fx.hold, 0);
  teardown(&fx);
}

/* Back-pressure: a pause from inside the callback stops delivery at once,
 * though the rest of the flood is already read; while paused, pings stop
 * and no silence is judged (several heartbeat timeouts pass: without that
 * the unread pong made a dead peer); resumed, the rest comes in order and
 * the heartbeat works again. */
static void test_subscribe_pause_holds_frames(void) {
  fixture_t fx;
  sub_record_t r;
  uint64_t beats;
  setup(&fx, 50); /* heartbeat timeout 150 ms */
  memset(&r, 0, sizeof(r));
  r.pause_at = 4; /* the confirmation and three messages */
  ASSERT_OK(rn_hold_subscribe(fx.hold, on_push, &r));

  write_sub(fx.hold, "flood", NULL);
  RUN_UNTIL(fx.uv, r.pushes == 4, 2000);
  ASSERT_OK(rn_hold_pause(fx.hold)); /* idempotent */
  beats = heartbeats(fx.pool);
  test_run_for(fx.uv, 600);
  ASSERT_EQ(r.pushes, 4);
  ASSERT_EQ(r.ended, 0);
  ASSERT_EQ(dead_peers(fx.pool), 0);
  ASSERT(heartbeats(fx.pool) <= beats + 1); /* at most one already due */

  ASSERT_OK(rn_hold_resume(fx.hold));
  ASSERT_EQ(r.pushes, 4); /* never inside the call */
  ASSERT_OK(rn_hold_resume(fx.hold));
  RUN_UNTIL(fx.uv, r.pushes == FLOOD + 1 || r.ended, 3000);
  ASSERT_EQ(r.flood_last, FLOOD);
  beats = heartbeats(fx.pool);
  RUN_UNTIL(fx.uv, heartbeats(fx.pool) >= beats + 3 || r.ended, 3000);
  ASSERT_EQ(r.ended, 0);
  ASSERT_EQ(dead_peers(fx.pool), 0);
  rn_hold_release(fx.hold, 0);
  teardown(&fx);
}

/* A paused subscriber whose peer closes is still found (the FIN, seen
 * without reading), and told once. */
static void test_subscribe_paused_peer_gone_found(void) {
  fixture_t fx;
  sub_record_t r;
  setup(&fx, 50);
  memset(&r, 0, sizeof(r));
  r.pause_at = 2;
  ASSERT_OK(rn_hold_subscribe(fx.hold, on_push, &r));
  write_sub(fx.hold, "flood", NULL);
  RUN_UNTIL(fx.uv, r.pushes == 2, 2000);
  test_peer_close(st.conn);
  RUN_UNTIL(fx.uv, r.ended == 1, 3000);
  ASSERT_EQ(r.end_status, UV_EOF);
  ASSERT_EQ(r.pushes, 2);
  ASSERT_EQ(dead_peers(fx.pool), 0);
  ASSERT_EQ(rn_hold_resume(fx.hold), UV_EOF);
  rn_hold_release(fx.hold, 0);
  teardown(&fx);
}

TEST_LIST_START
  TEST_ENTRY(test_subscribe_resp2_in_order)
  TEST_ENTRY(test_subscribe_dead_peer_told_once)
  TEST_ENTRY(test_subscribe_bad_input_and_close)
  TEST_ENTRY(test_subscribe_refused_while_ping_out)
  TEST_ENTRY(test_subscribe_pause_holds_frames)
  TEST_ENTRY(test_subscribe_paused_peer_gone_found)
TEST_LIST_END

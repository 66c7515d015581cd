/* Heartbeats: idle connections stay alive on pings (sharing them with
 * their siblings), a silent peer is declared dead after the timeout, and a
 * loop stalled by a long callback does not condemn a live peer. */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"

#include <unistd.h>
#include <uv.h>

static rn_loop_t *loop;
static rn_server_t *server;
static rn_pool_t *pool;
static int hold_all;           /* server holds every request */
static rn_request_t *held[64];
static int held_count;

/* RESP's PING the server answers itself; line pings ("ping") reach
 * on_request, which can count them. */
static rn_protocol_t protocol = RN_PROTOCOL_RESP;

/* Requests per client connection (by its address), while counting_peers. */
#define PEERS_MAX 16
static int counting_peers;
static struct {
  char addr[RN_ENDPOINT_ADDRESS_MAX + 16];
  unsigned requests;
} peers[PEERS_MAX];
static int peer_count;

static void count_peer(rn_request_t *req) {
  char addr[sizeof(peers[0].addr)];
  int i;
  ASSERT_OK(rn_request_peer(req, addr, sizeof(addr)));
  for (i = 0; i < peer_count; i++)
    if (strcmp(peers[i].addr, addr) == 0) break;
  if (i == peer_count) {
    ASSERT_LT(peer_count, PEERS_MAX);
    memcpy(peers[peer_count++].addr, addr, sizeof(addr));
  }
  peers[i].requests++;
}

static void on_request(rn_server_t *srv, rn_request_t *req, const char *body,
                       size_t len) {
  if (counting_peers) count_peer(req);
  if (hold_all) {
    ASSERT_LT(held_count, 64);
    held[held_count++] = req;
    return;
  }
  if (protocol == RN_PROTOCOL_LINE)
    test_echo(srv, req, body, len);
  else
    test_echo_bulk(srv, req, body, len);
}

static unsigned pool_size = 1;
static uint64_t probe_ms = 30000;      /* heartbeat.probe_ms */
static uint64_t reconnect_initial = 100;
/* "probe" events by reason: answered, expired, other */
static int probes_answered, probes_expired, probes_other;

static void on_event(rn_pool_t *p, const rn_pool_event_t *ev) {
  (void)p;
  if (ev->type != RN_EVENT_STATE || ev->state == NULL ||
      strcmp(ev->state, "probe") != 0)
    return;
  if (strcmp(ev->reason, "answered") == 0)
    probes_answered++;
  else if (strcmp(ev->reason, "expired") == 0)
    probes_expired++;
  else
    probes_other++;
}

static void start(uint64_t interval, uint64_t timeout) {
  rn_pool_options_t po;
  static char ep[96];

  ASSERT_OK(rn_loop_new(NULL, &loop));
  server = test_start_server(loop, protocol, on_request, "127.0.0.1:0", ep);
  test_pool_options(&po, ep, protocol);
  po.size = pool_size;
  po.min_idle = pool_size > 1 ? pool_size : 0;
  po.heartbeat.interval_ms = interval;
  po.heartbeat.timeout_ms = timeout;
  po.heartbeat.probe_ms = probe_ms;
  if (protocol == RN_PROTOCOL_LINE) {
    po.heartbeat.ping = "ping";
    po.heartbeat.ping_len = 4;
  }
  po.reconnect.initial_ms = reconnect_initial;
  po.on_event = on_event;
  po.timeout_ms = 10000;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  hold_all = 0;
  held_count = 0;
  probes_answered = probes_expired = probes_other = 0;
}

static void stop(void) {
  int i;
  rn_pool_close(pool, 0, NULL);
  for (i = 0; i < held_count; i++) rn_request_drop(held[i]);
  rn_server_close(server, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

static void call(test_outcome_t *o) {
  static const char frame[] = "*1\r\n$3\r\nGET\r\n";
  memset(o, 0, sizeof(*o));
  ASSERT_OK(rn_pool_call(pool, frame, sizeof(frame) - 1, NULL, test_record, o));
}

/* A uv timer ticking every heartbeat interval: late exactly as the loop
 * is, it counts the intervals the loop actually served. */
static unsigned interval_ticks;

static void count_tick(uv_timer_t *t) {
  (void)t;
  interval_ticks++;
}

static void test_idle_connection_lives_on_pings(void) {
  test_outcome_t o;
  rn_pool_stats_t st;
  uv_timer_t ticker;
  uint64_t before, pings;

  start(50, 150);
  call(&o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 10000);
  ASSERT_OK(o.status);
  before = test_pool_stats(pool).heartbeats;
  interval_ticks = 0;
  ASSERT_OK(uv_timer_init(rn_loop_uv(loop), &ticker));
  ASSERT_OK(uv_timer_start(&ticker, count_tick, 50, 50));
  test_run_for(rn_loop_uv(loop), 600);
  uv_close((uv_handle_t *)&ticker, NULL);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.connects, 1);
  ASSERT_EQ(st.dead_peers, 0);
  /* One ping per interval of silence: about one per interval the loop
   * served (12 in 600 ms on an idle machine; fewer on a busy one, which
   * the ticks count too). Waiting for each pong's deadline before the
   * next ping gave only one per timeout, about a third as many. */
  pings = st.heartbeats - before;
  fprintf(stderr, "%" PRIu64 " heartbeats, %u intervals served\n", pings,
          interval_ticks);
  ASSERT_GE(pings * 3, (uint64_t)interval_ticks * 2);
  ASSERT_LE(pings, (uint64_t)interval_ticks + 2);
  ASSERT_EQ(st.heartbeats_missed, 0);
  ASSERT_EQ(st.open, 1);
  /* Idle pings leave nothing behind that keeps uv_run busy. */
  stop();
}

static void test_silent_peer_declared_dead(void) {
  test_outcome_t o;
  rn_pool_stats_t st;
  uint64_t t0, elapsed;

  start(50, 200);
  hold_all = 1; /* the server accepts, reads, never answers */
  t0 = uv_hrtime();
  call(&o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 10000);
  elapsed = (uv_hrtime() - t0) / 1000000;
  ASSERT_EQ(o.status, RN_EDEADPEER);
  ASSERT_EQ(o.maybe_executed, 1);
  ASSERT_GE(elapsed, 190);
  ASSERT_LE(elapsed, 200 + 200); /* well before the call's 10 s deadline */
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.dead_peers, 1);
  stop();
}

/* Issue 14, defect 8: after a freeze the first call waited out a backoff
 * that grew during it. The connection judged dead stays open as a probe;
 * the server's late answer on it ends the backoff at once. Here the
 * backoff is 5 s: the next call must not wait for it. */
static void test_dead_probe_answer_ends_backoff(void) {
  test_outcome_t o;
  rn_pool_stats_t st;
  uint64_t t0, elapsed;
  int i;

  reconnect_initial = 5000;
  start(50, 150);
  call(&o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 10000);
  ASSERT_OK(o.status);
  hold_all = 1; /* frozen: reads, never answers */
  call(&o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 10000);
  ASSERT_EQ(o.status, RN_EDEADPEER);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.probes, 1);
  ASSERT_EQ(st.open, 1); /* the probe */

  /* Thawed: the server answers what it was sent, on the probe. */
  hold_all = 0;
  t0 = uv_hrtime();
  for (i = 0; i < held_count; i++)
    test_echo_bulk(server, held[i], "late", 4);
  held_count = 0;
  call(&o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 10000);
  elapsed = (uv_hrtime() - t0) / 1000000;
  ASSERT_OK(o.status);
  ASSERT_LE(elapsed, 200); /* not the 4-6 s of backoff */
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.probes_answered, 1);
  ASSERT_EQ(probes_answered, 1);
  ASSERT_EQ(probes_expired + probes_other, 0);
  stop();
  reconnect_initial = 100;
}

static int two_idle(void) {
  rn_pool_stats_t st;
  rn_pool_stats(pool, &st);
  return st.idle == 2;
}

static int probe_expired(void) {
  rn_pool_stats_t st;
  rn_pool_stats(pool, &st);
  return st.probes_expired > 0;
}

static int all_ten_idle(void) {
  rn_pool_stats_t st;
  rn_pool_stats(pool, &st);
  return st.idle == 10;
}

static int a_peer_dead(void) {
  rn_pool_stats_t st;
  rn_pool_stats(pool, &st);
  return st.dead_peers > 0;
}

#define SHARED_PINGS 34
static uint64_t heartbeats_before;

static int shared_pings_counted(void) {
  return test_pool_stats(pool).heartbeats - heartbeats_before >= SHARED_PINGS;
}

/* Idle connections to one server share its heartbeat: one pings every
 * interval, the others every eighth interval. Ten of them at a 50 ms
 * interval send about 1 + 9 / 8 pings per interval, where each pinging for
 * itself would send 10. The case waits for SHARED_PINGS heartbeats (about
 * 16 intervals' worth) however long the loop takes, then checks what the
 * loop did, not a count in a fixed time (a busy machine makes every timer
 * late, and fewer pings fit in 800 ms: it failed so under load):
 *  - they took at least SHARED_PINGS / 5 intervals of loop time (at most 5
 *    pings per interval; lateness only makes it longer);
 *  - every one of the ten pinged (the prober did not ping alone: by then
 *    each sibling's eighth interval came at least once);
 *  - none was judged dead. */
static void test_idle_siblings_share_pings(void) {
  rn_pool_stats_t st;
  uint64_t t0, took;
  int i;

  pool_size = 10;
  protocol = RN_PROTOCOL_LINE;
  start(50, 150);
  RUN_UNTIL(rn_loop_uv(loop), all_ten_idle(), 5000);
  heartbeats_before = test_pool_stats(pool).heartbeats;
  peer_count = 0;
  counting_peers = 1;
  t0 = uv_now(rn_loop_uv(loop));
  RUN_UNTIL(rn_loop_uv(loop), shared_pings_counted(), 20000);
  took = uv_now(rn_loop_uv(loop)) - t0;
  counting_peers = 0;
  fprintf(stderr, "%d heartbeats in %" PRIu64 " ms\n", SHARED_PINGS, took);
  ASSERT_GE(took, SHARED_PINGS * 50 / 5);
  ASSERT_EQ(peer_count, 10);
  for (i = 0; i < peer_count; i++) ASSERT_GE(peers[i].requests, 1);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.dead_peers, 0);
  ASSERT_EQ(st.heartbeats_missed, 0);
  /* (The wait ended on a ping just sent: its pong is still to come.) */
  RUN_UNTIL(rn_loop_uv(loop), all_ten_idle(), 5000);
  stop();
  pool_size = 1;
  protocol = RN_PROTOCOL_RESP;
}

/* The probe costs one socket per endpoint for heartbeat.probe_ms at most:
 * two connections judged dead leave one probe, closed unanswered when its
 * time is up, with a "probe" event "expired" and the stat. */
static void test_dead_probe_is_bounded(void) {
  test_outcome_t a, b;
  rn_pool_stats_t st;
  uint64_t t0, elapsed;

  pool_size = 2;
  probe_ms = 300;
  reconnect_initial = 5000; /* no new connection meanwhile */
  start(50, 150);
  RUN_UNTIL(rn_loop_uv(loop), two_idle(), 5000);
  hold_all = 1;
  call(&a);
  call(&b);
  RUN_UNTIL(rn_loop_uv(loop), a.fired, 10000);
  RUN_UNTIL(rn_loop_uv(loop), b.fired, 10000);
  ASSERT_EQ(a.status, RN_EDEADPEER);
  ASSERT_EQ(b.status, RN_EDEADPEER);
  t0 = uv_hrtime();
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.dead_peers, 2);
  ASSERT_EQ(st.probes, 1);
  RUN_UNTIL(rn_loop_uv(loop), probe_expired(), 5000);
  elapsed = (uv_hrtime() - t0) / 1000000;
  ASSERT_LE(elapsed, 300 + 100);
  test_run_for(rn_loop_uv(loop), 20); /* the close callbacks */
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.probes_expired, 1);
  ASSERT_EQ(st.probes_answered, 0);
  ASSERT_EQ(st.open, 0);
  ASSERT_EQ(probes_expired, 1);
  ASSERT_EQ(probes_answered + probes_other, 0);
  stop();
  pool_size = 1;
  probe_ms = 30000;
  reconnect_initial = 100;
}

/* An endpoint that discovery drops takes its probe with it at once. */
static void test_dead_probe_closed_with_its_endpoint(void) {
  test_outcome_t o;
  rn_pool_stats_t st;
  const char *other[1] = {"127.0.0.1:1"};

  reconnect_initial = 5000;
  start(50, 150);
  hold_all = 1;
  call(&o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 10000);
  ASSERT_EQ(o.status, RN_EDEADPEER);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.probes, 1);
  ASSERT_EQ(st.open, 1);
  ASSERT_OK(rn_pool_set_endpoints(pool, other, 1));
  ASSERT_EQ(probes_other, 1); /* "closed" */
  test_run_for(rn_loop_uv(loop), 20); /* the close callback */
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.open, 0);
  ASSERT_EQ(st.probes_answered + st.probes_expired, 0);
  stop();
  reconnect_initial = 100;
}

/* --- a server on its own thread, so that stalling the client's loop does
 * not stall the server: the peer must be alive while the client is busy. */

static rn_loop_t *server_loop;
static rn_server_t *thread_server;
static uv_async_t server_stop, server_freeze;
static uv_sem_t server_ready, server_thaw;
static uv_thread_t server_tid;
static int thread_port;

static void on_server_stop(uv_async_t *a) {
  rn_server_close(thread_server, NULL);
  uv_close((uv_handle_t *)a, NULL);
  uv_close((uv_handle_t *)&server_freeze, NULL);
}

/* The server process frozen, as by SIGSTOP: its thread blocks. */
static void on_server_freeze(uv_async_t *a) {
  (void)a;
  uv_sem_wait(&server_thaw);
}

static void server_thread(void *arg) {
  rn_server_options_t so;
  char host[64];
  (void)arg;
  ASSERT_OK(rn_loop_new(NULL, &server_loop));
  rn_server_options_init(&so);
  so.listen = "127.0.0.1:0";
  so.on_request = test_echo_bulk;
  ASSERT_OK(rn_server_new(server_loop, &so, &thread_server));
  ASSERT_OK(rn_server_address(thread_server, host, sizeof(host), &thread_port));
  ASSERT_OK(uv_async_init(rn_loop_uv(server_loop), &server_stop,
                          on_server_stop));
  ASSERT_OK(uv_async_init(rn_loop_uv(server_loop), &server_freeze,
                          on_server_freeze));
  uv_sem_post(&server_ready);
  uv_run(rn_loop_uv(server_loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(server_loop));
}

static void thread_server_start(void) {
  ASSERT_OK(uv_sem_init(&server_ready, 0));
  ASSERT_OK(uv_sem_init(&server_thaw, 0));
  ASSERT_OK(uv_thread_create(&server_tid, server_thread, NULL));
  uv_sem_wait(&server_ready);
}

static void thread_server_stop(void) {
  uv_sem_post(&server_thaw); /* if it was frozen */
  ASSERT_OK(uv_async_send(&server_stop));
  ASSERT_OK(uv_thread_join(&server_tid));
  uv_sem_destroy(&server_ready);
  uv_sem_destroy(&server_thaw);
}

/* A pool of `size` connections (all kept idle) to the threaded server. */
static void thread_pool_start(unsigned size, uint64_t interval,
                              uint64_t timeout) {
  rn_pool_options_t po;
  char ep[64];

  ASSERT_OK(rn_loop_new(NULL, &loop));
  snprintf(ep, sizeof(ep), "127.0.0.1:%d", thread_port);
  test_pool_options(&po, ep, RN_PROTOCOL_RESP);
  po.size = size;
  po.min_idle = size > 1 ? size : 0;
  po.heartbeat.interval_ms = interval;
  po.heartbeat.timeout_ms = timeout;
  po.timeout_ms = 10000;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
}

static void thread_pool_stop(void) {
  rn_pool_close(pool, 0, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

/* A server frozen while ten connections sit idle: the prober's verdict
 * comes within interval + timeout (plus a ping slot) and takes its silent
 * siblings with it; none is left to be handed out. Later than that only by
 * as much as the client's own loop was late meanwhile (a loaded machine
 * stalls the process, and the verdict rightly waits for a poll). */
static void test_frozen_server_idle_siblings(void) {
  rn_pool_stats_t st;
  test_probe_t probe;
  uint64_t t0;
  double elapsed, loop_late;

  thread_server_start();
  thread_pool_start(10, 50, 150);
  RUN_UNTIL(rn_loop_uv(loop), all_ten_idle(), 5000);
  test_probe_start(rn_loop_uv(loop), &probe);
  ASSERT_OK(uv_async_send(&server_freeze));
  t0 = uv_hrtime();
  RUN_UNTIL(rn_loop_uv(loop), a_peer_dead(), 5000);
  elapsed = (double)(uv_hrtime() - t0) / 1e6;
  loop_late = test_probe_take(&probe);
  test_probe_stop(&probe);
  rn_pool_stats(pool, &st);
  fprintf(stderr, "verdict after %.1f ms (the loop's own lateness: %.1f ms)\n",
          elapsed, loop_late);
  ASSERT_LE(elapsed - loop_late, 50 + 150 + 100);
  ASSERT_EQ(st.dead_peers, 1);
  ASSERT_EQ(st.evictions.dead_peer + st.evictions.stale, 10);
  ASSERT_EQ(st.idle, 0);
  thread_pool_stop();
  thread_server_stop();
}

static test_outcome_t stalled_call;

/* Blocks the loop for 3 x the heartbeat timeout from inside a callback, as
 * an application doing heavy work would. The reply arrives meanwhile and
 * waits in the kernel. */
static void stall(uv_timer_t *t) {
  (void)t;
  call(&stalled_call);
  usleep(600 * 1000);
}

static void test_stalled_loop_spares_live_peer(void) {
  uv_timer_t t;
  test_outcome_t o;
  rn_pool_stats_t st;

  thread_server_start();
  thread_pool_start(1, 50, 200);
  call(&o);
  RUN_UNTIL(rn_loop_uv(loop), o.fired, 10000); /* connected and answered */
  ASSERT_OK(o.status);
  uv_timer_init(rn_loop_uv(loop), &t);
  uv_timer_start(&t, stall, 10, 0);
  RUN_UNTIL(rn_loop_uv(loop), stalled_call.fired, 10000);
  ASSERT_OK(stalled_call.status);
  rn_pool_stats(pool, &st);
  ASSERT_EQ(st.dead_peers, 0);
  ASSERT_EQ(st.connects, 1);
  uv_close((uv_handle_t *)&t, NULL);
  thread_pool_stop();
  thread_server_stop();
}

static test_peer_t peer;

static unsigned loop_turns;

static void count_turn(uv_prepare_t *p) {
  (void)p;
  loop_turns++;
}

/* With a ping out and unanswered past heartbeat.interval_ms, the heartbeat
 * timer re-armed itself at 1 ms until the dead-peer deadline: one loop turn
 * per millisecond per silent connection. Waking for the deadline alone
 * takes a handful of turns. */
static void test_heartbeat_spinning_while_a_ping_is_out(void) {
  rn_pool_options_t po;
  rn_pool_stats_t st;
  uv_prepare_t turns;

  loop = test_loop_open();
  test_peer_start(&peer, rn_loop_uv(loop), test_peer_answer_lines);
  peer.answer_first_only = 1;
  ASSERT_OK(uv_prepare_init(rn_loop_uv(loop), &turns));
  ASSERT_OK(uv_prepare_start(&turns, count_turn));
  uv_unref((uv_handle_t *)&turns);
  loop_turns = 0;
  test_pool_line_options(&po, peer.endpoint);
  po.size = 1;
  po.min_idle = 1; /* one connection, opened now, with no call */
  po.heartbeat.ping = "PING";
  po.heartbeat.ping_len = 4;
  po.heartbeat.interval_ms = 100;
  po.heartbeat.timeout_ms = 500;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  RUN_UNTIL(rn_loop_uv(loop), test_pool_stats(pool).dead_peers == 1, 3000);
  st = test_pool_stats(pool);
  ASSERT_GE(st.heartbeats, 1);
  /* A spinning timer takes about one turn per ms of the 400-500 ms wait. */
  ASSERT_LT(loop_turns, 50);
  rn_pool_close(pool, 0, NULL);
  test_peer_stop(&peer);
  uv_close((uv_handle_t *)&turns, NULL);
  test_loop_close(loop);
}

TEST_LIST_START
  TEST_ENTRY(test_idle_connection_lives_on_pings)
  TEST_ENTRY(test_silent_peer_declared_dead)
  TEST_ENTRY(test_idle_siblings_share_pings)
  TEST_ENTRY(test_dead_probe_answer_ends_backoff)
  TEST_ENTRY(test_dead_probe_is_bounded)
  TEST_ENTRY(test_dead_probe_closed_with_its_endpoint)
  TEST_ENTRY(test_stalled_loop_spares_live_peer)
  TEST_ENTRY(test_frozen_server_idle_siblings)
  TEST_ENTRY(test_heartbeat_spinning_while_a_ping_is_out)
TEST_LIST_END

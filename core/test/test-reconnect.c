/* Reconnecting to a refused endpoint: 200 measured delays between connect
 * attempts all fall within the configured backoff bounds, so a dead server
 * sees a bounded, decreasing rate of connects, never a hot loop. */
#include "resilnet.h"
#include "task.h"
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#define ATTEMPTS 200

static rn_loop_t *loop;
static uint64_t connect_at[ATTEMPTS + 8];
static uint64_t closed_at[ATTEMPTS + 8];
static double loop_late[ATTEMPTS + 8]; /* ms, from the close before */
static test_probe_t probe;
static int connects, closes;
static int failed;

static void on_event(rn_pool_t *p, const rn_pool_event_t *ev) {
  if (ev->type != RN_EVENT_STATE || ev->connection == 0) return;
  (void)p;
  if (strcmp(ev->state, "closed") == 0) {
    if (closes < ATTEMPTS + 8) closed_at[closes] = uv_hrtime();
    closes++;
    (void)test_probe_take(&probe);
    return;
  }
  if (strcmp(ev->state, "connecting") != 0) return;
  if (connects < ATTEMPTS + 8) {
    connect_at[connects] = uv_hrtime();
    loop_late[connects] = test_probe_take(&probe);
  }
  connects++;
}

static void on_result(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  (void)data;
  ASSERT_EQ(r->status, RN_ECLOSED); /* still waiting when the pool closed */
  ASSERT_EQ(r->maybe_executed, 0);
  failed++;
}

static void stop_at_enough(uv_timer_t *t) {
  if (connects > ATTEMPTS) uv_stop(t->loop);
}

static void stop_after_three(uv_timer_t *t) {
  if (connects >= 3) uv_stop(t->loop);
}

/* Writes "host:port" of a port nobody listens on (bound, read, closed)
 * into ep (size >= 96). */
static void dead_endpoint(char *ep) {
  rn_server_options_t so;
  rn_server_t *gone;
  char host[64];
  int port;
  rn_server_options_init(&so);
  so.listen = "127.0.0.1:0";
  so.codec.protocol = RN_PROTOCOL_LINE;
  so.on_request = (rn_request_cb)(void (*)(void))abort;
  ASSERT_OK(rn_server_new(loop, &so, &gone));
  ASSERT_OK(rn_server_address(gone, host, sizeof(host), &port));
  rn_server_close(gone, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  snprintf(ep, 96, "%s:%d", host, port);
}

/* A new loop, and a pool on a dead endpoint with this reconnect backoff
 * in which one call waits for a connection the whole time. */
static rn_pool_t *pool_on_dead_endpoint(uint64_t initial_ms,
                                        double multiplier, double jitter,
                                        uint64_t max_ms) {
  static const char frame[] = "x\n";
  rn_call_options_t opts = {.timeout_ms = 30000};
  rn_pool_options_t po;
  rn_pool_t *pool;
  char ep[96];
  ASSERT_OK(rn_loop_new(NULL, &loop));
  dead_endpoint(ep);
  test_pool_options(&po, ep, RN_PROTOCOL_LINE);
  po.on_event = on_event;
  po.reconnect.initial_ms = initial_ms;
  po.reconnect.multiplier = multiplier;
  po.reconnect.jitter = jitter;
  po.reconnect.max_ms = max_ms;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  ASSERT_OK(rn_pool_call(pool, frame, 2, &opts, on_result, NULL));
  return pool;
}

/* Closes the pool and the watch timer: the waiting call fails, once. */
static void close_waiting_pool(rn_pool_t *pool, uv_timer_t *watch) {
  uv_close((uv_handle_t *)watch, NULL);
  rn_pool_close(pool, 0, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_EQ(failed, 1);
  ASSERT_OK(rn_loop_free(loop));
}

static void test_backoff_bounds(void) {
  rn_pool_t *pool;
  int i;
  uv_timer_t watch;
  double base = 5.0, min_total = 0, worst_over = -1e9, worst_late = 0;

  pool = pool_on_dead_endpoint(5, 1.6, 0.2, 20);
  uv_timer_init(rn_loop_uv(loop), &watch);
  uv_timer_start(&watch, stop_at_enough, 1, 1);
  test_probe_start(rn_loop_uv(loop), &probe);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  test_probe_stop(&probe);
  ASSERT_GT(connects, ATTEMPTS);

  for (i = 1; i <= ATTEMPTS; i++) {
    /* The backoff is the pause from a failure to the next attempt. */
    double gap = (double)(connect_at[i] - closed_at[i - 1]) / 1e6;
    double over; /* ms past the bound, beyond the loop's own lateness */
    double lo = base * 0.8, hi = base * 1.2;
    if (hi > 20) hi = 20;
    if (lo > 20) lo = 20;
    /* Never early: the loop clock has 1 ms steps. Late by no more than
     * the loop itself was meanwhile (a loaded machine stalls the process
     * for tens of ms, 126 ms once in a parallel sanitizer run), plus the
     * 1 ms steps and the probe's own period: never by the uncapped growth
     * a broken cap would show. */
    over = gap - loop_late[i] - hi;
    if (gap < lo - 1.5 || over > 5) {
      fprintf(stderr, "attempt %d: gap %.2f ms (the loop %.2f ms late) "
              "outside [%.2f, %.2f]\n", i, gap, loop_late[i], lo, hi);
      ASSERT(0);
    }
    if (over > worst_over) worst_over = over;
    if (loop_late[i] > worst_late) worst_late = loop_late[i];
    min_total += lo - 1.5;
    base = base * 1.6 > 20 ? 20 : base * 1.6;
  }
  fprintf(stderr, "worst gap past its bound beyond the loop's lateness: "
          "%.2f ms (the loop at worst %.2f ms late)\n", worst_over,
          worst_late);
  /* So the endpoint saw at most ~60 connects a second, not a hot loop. */
  ASSERT_GE((double)(connect_at[ATTEMPTS] - connect_at[0]) / 1e6, min_total);

  close_waiting_pool(pool, &watch);
}

/* Each failure grows the backoff by one step, not two: with steps large
 * enough to tell apart through scheduling noise (100, 300, 900 ms, no
 * jitter), the pauses are 100 and 300 ms, not 300 and 2700. (A backoff
 * step taken twice per failure once hid within test_backoff_bounds'
 * allowance for lateness.) */
static void test_backoff_grows_once_per_failure(void) {
  rn_pool_t *pool;
  uv_timer_t watch;
  double gap1, gap2;

  connects = closes = failed = 0;
  pool = pool_on_dead_endpoint(100, 3, 0, 60000);
  uv_timer_init(rn_loop_uv(loop), &watch);
  uv_timer_start(&watch, stop_after_three, 1, 1);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_GE(connects, 3);
  gap1 = (double)(connect_at[1] - closed_at[0]) / 1e6;
  gap2 = (double)(connect_at[2] - closed_at[1]) / 1e6;
  if (gap1 < 98.5 || gap1 > 200 || gap2 < 298.5 || gap2 > 600) {
    fprintf(stderr, "pauses %.1f and %.1f ms, want 100 and 300\n", gap1,
            gap2);
    ASSERT(0);
  }
  close_waiting_pool(pool, &watch);
}

/* Issue 14, defect 10: a connect that fails for want of descriptors here
 * (EMFILE) is our shortage, not the endpoint's failure: no failure is
 * counted, the backoff does not grow, and once descriptors are free again
 * the next connect goes at once. */

static int emfile_status, emfile_done;
static uint64_t emfile_at;

static void on_emfile_result(rn_pool_t *p, void *data, const rn_result_t *r) {
  (void)p;
  (void)data;
  emfile_status = r->status;
  emfile_done++;
  emfile_at = uv_now(rn_loop_uv(loop));
}

static void test_emfile_is_not_the_endpoints_failure(void) {
  static int fds[1024];
  int nfds = 0, i;
  struct rlimit saved, low;
  rn_server_t *server;
  rn_pool_options_t po;
  rn_pool_t *pool;
  rn_pool_stats_t st;
  rn_endpoint_info_t info;
  char ep[96];
  static const char frame[] = "x\n";
  rn_call_options_t opts = {.timeout_ms = 300};
  uint64_t start;

  ASSERT_OK(rn_loop_new(NULL, &loop));
  server = test_start_server(loop, RN_PROTOCOL_LINE, test_echo, "127.0.0.1:0",
                             ep);
  test_pool_options(&po, ep, RN_PROTOCOL_LINE);
  po.heartbeat.interval_ms = 0;
  po.reconnect.initial_ms = 20;
  po.reconnect.multiplier = 2;
  po.reconnect.jitter = 0;
  po.reconnect.max_ms = 5000;
  po.eject.failures = 2;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));

  /* Every descriptor taken: a low limit, filled. */
  ASSERT_OK(getrlimit(RLIMIT_NOFILE, &saved));
  low = saved;
  if (low.rlim_cur > 256) low.rlim_cur = 256;
  ASSERT_OK(setrlimit(RLIMIT_NOFILE, &low));
  for (;;) {
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0) {
      ASSERT_EQ(errno, EMFILE);
      break;
    }
    ASSERT_LT(nfds, 1024);
    fds[nfds++] = fd;
  }
  ASSERT_OK(rn_pool_call(pool, frame, 2, &opts, on_emfile_result, NULL));
  RUN_UNTIL(rn_loop_uv(loop), emfile_done, 10000);
  for (i = 0; i < nfds; i++) close(fds[i]);
  ASSERT_OK(setrlimit(RLIMIT_NOFILE, &saved));

  ASSERT_EQ(emfile_status, UV_EMFILE); /* the waiting call says why */
  rn_pool_stats(pool, &st);
  ASSERT_GE(st.connect_failures, 3); /* paced, yet tried all along */
  ASSERT_EQ(st.ejections, 0);
  ASSERT_OK(rn_pool_endpoint_info(pool, 0, &info));
  ASSERT_EQ(info.failures, 0);

  /* Descriptors are back: no grown backoff to wait out. */
  opts.timeout_ms = 2000;
  start = uv_now(rn_loop_uv(loop));
  ASSERT_OK(rn_pool_call(pool, frame, 2, &opts, on_emfile_result, NULL));
  RUN_UNTIL(rn_loop_uv(loop), emfile_done >= 2, 10000);
  ASSERT_OK(emfile_status);
  ASSERT_LT(emfile_at - start, 100);

  rn_pool_close(pool, 0, NULL);
  rn_server_close(server, NULL);
  uv_run(rn_loop_uv(loop), UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

static rn_server_t *server;
static char endpoint[96];

/* A connection the pool opened and later closed itself (idle_timeout)
 * without it ever carrying a call was counted as a failed connect: the
 * endpoint backed off and the next call waited out the delay. */
static void test_pool_initiated_close_counted_as_endpoint_failure(void) {
  test_outcome_t x, y, z;
  rn_pool_options_t po;
  rn_pool_stats_t st;
  rn_pool_t *pool;

  loop = test_loop_open();
  server = test_start_server(loop, RN_PROTOCOL_LINE, test_echo, "127.0.0.1:0",
                             endpoint);
  test_pool_line_options(&po, endpoint);
  po.idle_timeout_ms = 100;
  po.reconnect.initial_ms = 5000; /* far beyond the next call's deadline */
  po.reconnect.jitter = 0;
  ASSERT_OK(rn_pool_new(loop, &po, &pool));
  /* Two calls before any connection: two connections open, and the first
   * one ready takes both calls. */
  test_call(pool, "x", 0, &x);
  test_call(pool, "y", 0, &y);
  RUN_UNTIL(rn_loop_uv(loop), x.fired && y.fired, 2000);
  ASSERT_OK(x.status);
  ASSERT_OK(y.status);
  ASSERT_EQ(test_pool_stats(pool).open, 2);
  RUN_UNTIL(rn_loop_uv(loop), test_pool_stats(pool).open == 0, 3000);
  st = test_pool_stats(pool);
  ASSERT_EQ(st.evictions.idle, 2);
  ASSERT_EQ(st.connect_failures, 0);
  test_call(pool, "z", 1000, &z);
  RUN_UNTIL(rn_loop_uv(loop), z.fired, 3000);
  ASSERT_OK(z.status);
  rn_pool_close(pool, 0, NULL);
  rn_server_close(server, NULL);
  test_loop_close(loop);
}

TEST_LIST_START
  TEST_ENTRY(test_backoff_bounds)
  TEST_ENTRY(test_backoff_grows_once_per_failure)
  TEST_ENTRY(test_emfile_is_not_the_endpoints_failure)
  TEST_ENTRY(test_pool_initiated_close_counted_as_endpoint_failure)
TEST_LIST_END

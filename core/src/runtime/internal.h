/* Internal helpers shared by every subsystem of the core (runtime/ is on
 * the core's include path). Each subsystem's own internals live in its
 * folder: codec/codec.h, client/client.h, server/server.h, harness/proxy.h.
 * Not installed. */
#ifndef RN_INTERNAL_H
#define RN_INTERNAL_H

#include "resilnet.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define RN_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define RN_CONTAINER_OF(ptr, type, field)                                    \
  ((type *)((char *)(ptr) - offsetof(type, field)))
#define RN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RN_MAX(a, b) ((a) > (b) ? (a) : (b))
/* A rare branch kept out of a hot caller, so that the caller does not
 * save the registers only the branch needs. */
#if defined(__GNUC__)
#define RN_NOINLINE __attribute__((noinline))
#else
#define RN_NOINLINE
#endif

/* Intrusive circular doubly linked list (after libuv's queue.h, which is not
 * part of libuv's public headers). An empty list points at itself. */
typedef struct rn_list_s {
  struct rn_list_s *next;
  struct rn_list_s *prev;
} rn_list_t;

static inline void rn_list_init(rn_list_t *l) { l->next = l->prev = l; }
static inline int rn_list_empty(const rn_list_t *l) { return l->next == l; }
static inline void rn_list_insert_tail(rn_list_t *head, rn_list_t *node) {
  node->next = head;
  node->prev = head->prev;
  head->prev->next = node;
  head->prev = node;
}
static inline void rn_list_insert_head(rn_list_t *head, rn_list_t *node) {
  node->next = head->next;
  node->prev = head;
  head->next->prev = node;
  head->next = node;
}
/* Unlinks node and leaves it pointing at itself, so removing twice is safe. */
static inline void rn_list_remove(rn_list_t *node) {
  node->prev->next = node->next;
  node->next->prev = node->prev;
  node->next = node->prev = node;
}
/* Moves every node of `from` to the tail of `to`, in order; `from` is left
 * empty. */
static inline void rn_list_splice_tail(rn_list_t *to, rn_list_t *from) {
  if (rn_list_empty(from)) return;
  from->next->prev = to->prev;
  to->prev->next = from->next;
  from->prev->next = to;
  to->prev = from->prev;
  rn_list_init(from);
}
#define rn_list_foreach_safe(pos, tmp, head)                                   \
  for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);           \
       (pos) = (tmp), (tmp) = (pos)->next)

/* memcpy for the few bytes most requests are (a GET, an ECHO): up to 32
 * copied by two overlapping fixed-size moves in place, where a call to
 * memcpy costs more than the copy; larger ones go to memcpy. */
static inline void rn__copy(void *dst, const void *src, size_t n) {
  char *d = dst;
  const char *s = src;
  if (n > 32) {
    memcpy(d, s, n);
  } else if (n >= 16) {
    uint64_t a[2], b[2];
    memcpy(a, s, 16);
    memcpy(b, s + n - 16, 16);
    memcpy(d, a, 16);
    memcpy(d + n - 16, b, 16);
  } else if (n >= 8) {
    uint64_t a, b;
    memcpy(&a, s, 8);
    memcpy(&b, s + n - 8, 8);
    memcpy(d, &a, 8);
    memcpy(d + n - 8, &b, 8);
  } else if (n >= 4) {
    uint32_t a, b;
    memcpy(&a, s, 4);
    memcpy(&b, s + n - 4, 4);
    memcpy(d, &a, 4);
    memcpy(d + n - 4, &b, 4);
  } else {
    size_t i;
    for (i = 0; i < n; i++) d[i] = s[i];
  }
}

/* A connection's handle: TCP or unix socket, used as a stream. */
typedef union rn_stream_handle_u {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} rn_stream_handle_t;

/* Bytes read accumulate in one buffer per connection, reused across reads:
 * hands libuv the free space at its end, at least `chunk` bytes (none if
 * that cannot be had; libuv then reports UV_ENOBUFS). */
void rn__buf_read_space(rn_buf_t *buf, size_t chunk, uv_buf_t *out);

/* Zeroes n bytes at p with stores the compiler may not drop as dead (a
 * memset before free may go): for secrets (AUTH's password, rnp tokens). */
void rn__wipe(void *p, size_t n);

/* Work put off to the end of the loop's turn: it runs once the turn's
 * callbacks have had their say, just before the loop polls and again just
 * after (see loop.c). A connection's writes wait here, so that every call
 * made in one turn leaves in one write. */
typedef struct rn_deferred_s rn_deferred_t;
struct rn_deferred_s {
  rn_list_t node; /* on loop->deferred, or pointing at itself */
  void (*cb)(rn_deferred_t *deferred);
};

static inline void rn__deferred_init(rn_deferred_t *d,
                                     void (*cb)(rn_deferred_t *)) {
  rn_list_init(&d->node);
  d->cb = cb;
}
/* Queues d unless it is queued already. */
void rn__loop_defer(rn_loop_t *loop, rn_deferred_t *d);
static inline void rn__deferred_cancel(rn_deferred_t *d) {
  rn_list_remove(&d->node);
}

/* The loop: a uv loop plus the timer heap and counts of open objects. */
struct rn_loop_s {
  uv_loop_t *uv;
  uv_loop_t owned_uv; /* used when the caller gave no loop */
  int owns_uv;
  uv_timer_t heap_timer; /* fires at the earliest rn_timer_t due time */
  uv_idle_t heap_idle;   /* fires timers due now that were started by a
                            timer callback (see timer.c) */
  int heap_firing;
  int heap_referenced;     /* heap_timer and heap_idle keep the loop alive */
  uint64_t heap_armed_due; /* when heap_timer fires; UINT64_MAX: stopped */
  size_t strong_timers;  /* timers in the heap that keep the loop alive,
                            and lanes that hold any (one each) */
  uv_check_t poll_check; /* records when the loop last polled for I/O */
  uint64_t last_poll;    /* loop ms, just after the latest poll */
  uv_prepare_t defer_prepare; /* runs deferred work before the poll */
  uv_idle_t poll_nudge;  /* on from prepare to check when timer callbacks
                            ran before this poll: it must not block (loop.c) */
  int fired_since_poll;  /* timer callbacks ran since the latest poll */
  rn_list_t deferred;    /* rn_deferred_t due this turn */
  rn_timer_t **heap;     /* binary min-heap on (due, seq) */
  size_t heap_len;
  size_t heap_cap;
  uint64_t timer_seq;    /* ties broken by start order: FIFO for equal due */
  unsigned objects;      /* pools and servers not yet freed */
  uint64_t random_state; /* splitmix64, seeded per loop */
  int handles_closing;   /* rn_loop_free on a caller's loop */
};

/* A lane holds timers that all run one timeout, so they fall due in the
 * order they start: starting or stopping one is a list operation, and only
 * the lane's own timer, at (or before) the oldest one's due time, sits in
 * the heap. Call deadlines are started and stopped by the ten thousand per
 * second, almost all with the pool's timeout; the heap would pay a sift
 * for each. A lane's timers keep the loop alive, as strong timers do. */
typedef struct rn_timer_lane_s {
  rn_timer_t wake;
  rn_timer_t *oldest;
  rn_timer_t *newest;
  uint64_t timeout;
} rn_timer_lane_t;

/* The loop's time in ms, as uv_now() returns it: uv_now is a call across
 * the shared library for one load of a field its public struct has kept
 * since libuv 1.0 (its ABI cannot move it). Read several times a call. */
static inline uint64_t rn__loop_now(const rn_loop_t *l) {
  return l->uv->time;
}

/* rn_timer_stop, with the test for a timer that is not running (most
 * calls' attempt timers, every fresh call's deadline) done without a
 * call. */
static inline void rn__timer_stop(rn_timer_t *timer) {
  if (timer->lane != NULL || timer->heap_index != SIZE_MAX)
    rn_timer_stop(timer);
}

void rn__timer_lane_init(rn_loop_t *loop, rn_timer_lane_t *lane,
                         uint64_t timeout_ms);
/* Like rn_timer_start with the lane's timeout; rn_timer_stop and the other
 * rn_timer_* calls work on the timer as usual. 0 or UV_ENOMEM. */
int rn__timer_start_in_lane_slow(rn_timer_t *timer, rn_timer_lane_t *lane);
/* The common case inline: a stopped timer joins a lane that holds others
 * (its wake-up is armed then: timer.c). */
static inline int rn__timer_start_in_lane(rn_timer_t *timer,
                                          rn_timer_lane_t *lane) {
  if (lane->newest == NULL || timer->lane != NULL ||
      timer->heap_index != SIZE_MAX || lane->timeout == 0)
    return rn__timer_start_in_lane_slow(timer, lane);
  timer->due = rn__loop_now(timer->loop) + lane->timeout;
  timer->lane = lane;
  timer->lane_next = NULL;
  timer->lane_prev = lane->newest;
  lane->newest->lane_next = timer;
  lane->newest = timer;
  return 0;
}
/* Before the lane's memory goes; it must hold no timers. */
void rn__timer_lane_close(rn_timer_lane_t *lane);

/* uv_update_time, skipped when the clock shows the loop's time is still
 * current to the millisecond (cheaper than libuv's own read). */
void rn__loop_update_time(rn_loop_t *loop);

/* Jitter, not cryptography: a fast generator with a per-loop state. */
uint64_t rn__random(rn_loop_t *loop);
/* Uniform in [0, 1). */
double rn__random_unit(rn_loop_t *loop);

/* Pools and servers register while alive so rn_loop_free can refuse. */
void rn__loop_object_add(rn_loop_t *loop);
void rn__loop_object_remove(rn_loop_t *loop);

#endif /* RN_INTERNAL_H */

/* Internal structures of the client side: calls, connections, pools.
 *
 * Ownership: a call belongs to the pool's pending queue, to one connection's
 * unsent queue or to its sent FIFO, or to nobody. Its callback fires exactly
 * once (`done`). A call that timed out while sent stays in the sent FIFO so
 * that the late reply is matched to it and discarded; it is freed when it is
 * both done and off every connection. */
#ifndef RN_CLIENT_H
#define RN_CLIENT_H

#include "internal.h"
#include "tls.h"
#include "../codec/reply.h"

/* Backoff state of one endpoint (client/backoff.c). */
typedef struct rn_backoff_s {
  rn_backoff_options_t options;
  double next; /* ms, before jitter */
} rn_backoff_t;

void rn__backoff_init(rn_backoff_t *b, const rn_backoff_options_t *options);
/* The delay before the next attempt, and grows the one after it. */
uint64_t rn__backoff_next(rn_backoff_t *b, rn_loop_t *loop);
void rn__backoff_reset(rn_backoff_t *b);
/* 0 or UV_EINVAL. */
int rn__backoff_check(const rn_backoff_options_t *options);

struct addrinfo;

typedef struct rn_call_s rn_call_t;
typedef struct rn_conn_s rn_conn_t;
typedef struct rn_pool_endpoint_s rn_pool_endpoint_t;

/* How far an attempt got; decides what a retry may do (design §4). */
typedef enum {
  RN_SEND_UNSENT = 0, /* never handed to the socket */
  RN_SEND_SENT,       /* handed to the socket, no reply byte yet */
  RN_SEND_ANSWERED    /* a reply byte arrived */
} rn_send_state_t;

/* Policy retries are capped: past five, a retry is more likely to add to
 * an outage than to get through it. */
#define RN_MAX_ATTEMPTS 5

/* Frames up to this size live inside the call: one allocation per call. */
#define RN_CALL_INLINE_FRAME 96

struct rn_call_s {
  rn_list_t node;
  rn_pool_t *pool;
  /* The two timers come first: a spare call keeps them (rn__call_new),
   * and everything from `conn` to inline_frame is zeroed in one go. */
  rn_timer_t deadline;
  rn_timer_t attempt_timer;     /* the current attempt's timeout, or the
                                   wait before a policy retry */
  rn_conn_t *conn; /* set while on conn->unsent or conn->sent */
  rn_call_cb cb;
  void *data;
  char *frame;
  size_t frame_len;
  rn_pool_endpoint_t *endpoint; /* of the last attempt (referenced) */
  uint64_t attempt_timeout;     /* ms; 0: none */
  unsigned attempts;            /* attempts written to a socket */
  unsigned max_attempts;
  rn_send_state_t state;        /* of the current attempt */
  unsigned done : 1;
  unsigned idempotent : 1;
  unsigned internal : 1;   /* a heartbeat ping: no callback, not counted */
  unsigned was_sent : 1;   /* an earlier attempt (or a hedge) left and its
                              fate is unknown: maybe executed */
  unsigned backing_off : 1; /* waiting on attempt_timer, on no list */
  unsigned tombstone : 1;  /* stands in the sent FIFO for an abandoned
                              attempt, to match and drop its reply */
  unsigned hedged : 1;     /* attempt_timer sends hedges (attempt_timeout
                              is then the hedge delay) */
  unsigned parked : 1;     /* its attempt failed; waits for its hedges */
  unsigned completing : 1; /* its callback is running */
  unsigned keyed : 1;      /* rnp: carries a dedupe key, so the server runs
                              it at most once: retried like an idempotent
                              call, never hedged */
  unsigned reply_unrun : 1; /* resp: its answer is an error reply that
                                proves it did not run (resp_errors.c) */
  unsigned handshake : 1;  /* internal: the handshake (rnp HELLO), answered
                              by the server's own (RN_REPLY_HELLO) */
  unsigned setup : 1;      /* internal: a setup request (conn_setup.c),
                              answered like a caller's request */
  unsigned sub_cmd : 1;    /* internal: a (P|S)(UN)SUBSCRIBE written by
                              subscribe.c: in `sent` until its sub_left
                              confirmations (or its error) came, so that
                              each reply goes to what it answers */
  uint16_t deadline_offset; /* rnp: where to write the time left, or 0 */
  /* rnp, keyed: the key store (store.c) of the server its attempts were
   * written to: 0 none yet; RN_STORE_MIXED none that can be trusted (no
   * DEDUPE announced, or attempts in two stores). After an unknown fate it
   * is retried only on an endpoint announcing this store. */
  uint16_t store;
  uint64_t rnp_id;          /* rnp: the id of the attempt in flight */
  /* Hedging: a hedge is a shadow call carrying one more attempt of its
   * parent; its reply completes the parent. The parent outlives its
   * shadows (shadow_refs). */
  rn_call_t *parent;
  unsigned hedge_max;
  unsigned shadows_live;   /* shadows not done */
  unsigned shadows_written; /* shadows written and not done: while any is,
                               the call may have run */
  unsigned shadow_refs;    /* shadows not freed */
  int parked_error;
  /* A batch (batch.c): one call carrying batch_n requests, answered by
   * batch_n replies; batch_got of them arrived for the current attempt.
   * A tombstone keeps both, to drop the rest of an abandoned batch's
   * replies; only the call itself has `batch`, where replies are kept.
   * batch_n 0: a single request. */
  struct rn__batch_s *batch;
  uint32_t batch_n;
  uint32_t batch_got;
  uint32_t sub_left; /* sub_cmd: confirmations still to come, one a name */
  /* A held call (hold.c): it goes only on its hold's connection and is
   * never placed elsewhere (held); hold is its hold while it counts there
   * (cleared when it completes or the hold is released). */
  struct rn_hold_s *hold;
  unsigned held : 1;
  unsigned blocking : 1; /* its reply may take long (BLPOP): its
                            connection's silence is excused (block_ms),
                            and it takes no other call while this is out */
  uint32_t block_ms;     /* blocking: how long silence is excused after it
                            is placed; 0: as long as it is out (in the
                            padding before inline_frame: no larger call) */
  char inline_frame[RN_CALL_INLINE_FRAME];
};

typedef enum {
  RN_CONN_RESOLVING = 1,
  RN_CONN_CONNECTING,
  RN_CONN_TLS,       /* connected, TLS handshake under way (conn_tls.c) */
  RN_CONN_HANDSHAKE, /* connected, first ping (rnp: HELLO) and the setup
                        requests sent, not all answered yet */
  RN_CONN_READY,
  RN_CONN_CLOSING
} rn_conn_state_t;

struct rn_conn_s {
  rn_list_t node; /* endpoint->conns */
  rn_pool_t *pool;
  rn_pool_endpoint_t *endpoint;
  rn_stream_handle_t h;
  uv_getaddrinfo_t resolve_req;
  uv_connect_t connect_req;
  uv_write_t write_req;
  rn_deferred_t flush_later;  /* calls wait to leave at the turn's end */
  struct addrinfo *addrs;     /* resolved addresses, tried in order */
  struct addrinfo *next_addr;
  rn_timer_t connect_timer;
  rn_timer_t heartbeat_timer;
  uint64_t last_read;     /* loop ms of the last byte read */
  uint64_t waiting_since; /* loop ms when the sent FIFO last became non-empty */
  uint64_t last_active;   /* loop ms a request last left it (answered,
                             or taken back unsent): idle_timeout's start */
  uint64_t expires_at;    /* loop ms; 0: no lifetime limit */
  rn_buf_t rbuf;              /* bytes read, not yet framed */
  rn_frame_scan_t scan;       /* how far rbuf's partial frame was framed */
  rn_buf_t wbuf;              /* bytes of the write in flight */
  rn_list_t unsent;           /* calls waiting for the write in flight */
  rn_list_t sent;             /* calls awaiting replies, in send order */
  size_t unsent_bytes;
  unsigned queued;            /* calls on unsent and sent */
  unsigned serial;
  rn_conn_state_t state;
  int error;                  /* last connect error, then why it closed */
  const char *close_reason;   /* set by the pool for closes it decides */
  unsigned handle_open : 1;
  unsigned resolving : 1;
  unsigned writing : 1;
  unsigned was_ready : 1;
  unsigned answered : 1; /* a whole reply arrived */
  unsigned pinging : 1;  /* a heartbeat ping is queued or awaiting its reply */
  unsigned retiring : 1; /* past its lifetime: no new calls */
  unsigned goaway : 1;   /* rnp: the server said GOAWAY */
  unsigned suspect : 1;  /* a sibling's peer went away: no new calls until
                            this one's peer proves alive (rn__conn_suspect) */
  unsigned proving : 1;  /* the ping out is the one that proves it */
  unsigned probe : 1;    /* closed for calls (dead peer), socket still open:
                            its endpoint's dead_probe */
  unsigned setup_sent : 1; /* its setup requests were queued */
  unsigned wipe_wbuf : 1;  /* wbuf holds its setup requests (AUTH's
                              password): zeroed once written */
  unsigned setup_left;   /* setup requests not answered yet */
  uint64_t next_id;      /* rnp: the id of the next frame sent */
  /* rnp: the largest frame its server's HELLO said it accepts (0 for
   * other protocols: no limit but the pool's own). Calls are placed only
   * where they fit (rn__conn_fits). */
  size_t max_frame;
  char incarnation[RN_RNP_INCARNATION_SIZE]; /* rnp: of its server */
  unsigned has_store : 1; /* rnp: its server announced DEDUPE (store_id) */
  char store_id[RN_RNP_DEDUPE_SIZE];
  rn__tls_t *tls;         /* its TLS session (conn_tls.c), or NULL */
  /* hold.c: the hold it is reserved for (no pool call goes on it), or
   * NULL; blocking: blocking calls (and their tombstones) on it;
   * block_until: loop ms until which their silence is excused (the
   * latest end of their block_ms placed so far; UINT64_MAX: no bound,
   * 0 once none is out). conn_liveness.c. */
  struct rn_hold_s *hold;
  unsigned blocking;
  uint64_t block_until;
  /* subscribe.c: set while its hold is a subscriber: push frames and
   * subscribe-mode arrays go to sub_cb, not to calls. */
  rn_push_cb sub_cb;
  void *sub_data;
  struct rn_hold_s *sub_hold; /* (conn->hold is cleared first on close) */
  /* Inside its own read (conn_on_read, or a resume handing out what was
   * read before the pause): rbuf is being walked, so nothing may read
   * into it (rn__conn_check_idle leaves it be). */
  unsigned reading : 1;
  /* Back-pressure (rn_hold_pause): nothing is read from the socket, nor
   * delivered from rbuf, until resumed; resume_later starts reading again
   * from the loop. */
  unsigned paused : 1;
  rn_deferred_t resume_later;
};

struct rn_pool_endpoint_s {
  rn_endpoint_t address;
  char text[RN_ENDPOINT_ADDRESS_MAX + 16];
  rn_list_t conns;
  rn_list_t removed_node; /* pool->removed, once discovery dropped it */
  unsigned refs;        /* calls whose last attempt went here */
  unsigned open;        /* connections in conns not closing */
  unsigned connecting;  /* of which resolving or connecting */
  unsigned ready;       /* of which ready */
  unsigned outstanding; /* calls queued on its connections */
  unsigned requests;    /* of which requests (abandoned ones included, not
                           pings or HELLOs): what its server works on */
  unsigned busy;        /* connections with a call queued */
  unsigned failures;    /* consecutive failures (connects, dead peers) */
  unsigned ejections;   /* in a row; sets the next ejection's length */
  uint64_t retry_at;    /* no new connect before this (loop ms) */
  uint64_t hold_until;  /* rnp: its server asked for no connect before
                           this (GOAWAY's RETRY_AFTER, at most
                           reconnect.max ahead; loop ms) */
  /* rnp: what its server's latest HELLO announced. max_frame: the largest
   * frame it accepts (0: not heard yet); max_concurrent: requests it works
   * on at once over all its connections (0: no limit stated). */
  size_t max_frame;
  unsigned max_concurrent;
  uint64_t ejected_until; /* loop ms; 0: not ejected */
  uint64_t last_ejected;  /* loop ms of the last ejection */
  uint64_t last_life;   /* loop ms of the last byte read on any connection */
  rn_conn_t *prober;    /* the idle connection that pings for all (conn.c) */
  rn_conn_t *dead_probe; /* a connection judged dead, kept open to hear
                            the server come back (conn_start_probe) */
  const char *state;    /* last state reported */
  rn_backoff_t backoff;
  /* An IP literal's address as a one-entry list (ai_addr NULL for names
   * and unix paths): its connections skip the lookup. */
  struct addrinfo literal;
  struct sockaddr_storage literal_address;
  unsigned removed : 1;
  unsigned lost : 1;    /* a connection failed since the last connect */
  unsigned has_incarnation : 1;
  char incarnation[RN_RNP_INCARNATION_SIZE]; /* rnp: the newest server met */
  uint16_t store; /* rnp: its latest HELLO's key store (store.c); 0: none */
  int refused; /* RN_ETLSVERIFY or RN_EAUTH: a configuration fault
                  (rn__endpoint_refused); 0: none */
};

struct rn_pool_s {
  void *data;
  rn_loop_t *loop;
  rn_codec_t codec;
  /* length codec with a 4-byte prefix: max_frame - 3, at most 2^32 (what
   * the prefix can say); else 0. A call's request is checked against it
   * in one compare (rn__call_check_request_fast). */
  size_t len4_window;
  rn_pool_options_t options; /* endpoints pointer not kept */
  rn_pool_endpoint_t **endpoints;
  size_t endpoint_count;
  rn_list_t removed; /* endpoints dropped, kept until unreferenced */
  unsigned ejected;  /* endpoints ejected now */
  double budget;     /* retry tokens */
  uint64_t resolved_at; /* loop ms of the last endpoint list */
  size_t next_endpoint; /* round-robin start for picking and growing */
  rn_list_t pending;
  unsigned pending_count;
  struct rn__store_slot_s *stores; /* rnp key stores met (store.c) */
  uint16_t store_count;
  rn_timer_lane_t deadlines; /* of calls with the pool's timeout */
  rn_list_t spare_calls;     /* freed calls kept for reuse */
  unsigned spare_count;
  rn_list_t retrying; /* calls waiting out a retry delay */
  unsigned retrying_count;
  unsigned callback_depth; /* > 0 while the user's code runs */
  /* An endpoint list set from inside a callback waits here for later_timer,
   * so that no loop over the endpoints sees them change under it. */
  rn_pool_endpoint_t **next_endpoints;
  size_t next_endpoint_count;
  const char *resolve_reason; /* a RESOLVE event is due on later_timer */
  char **not_executed; /* the copy options.retry.not_executed points to */
  int fail_refused_due; /* every endpoint refused us: later_timer fails
                           the waiting calls (pool_all_refused) */
  rn_timer_t later_timer;
  unsigned active; /* calls accepted whose callback has not fired */
  uint64_t calls_at_maintenance; /* stats.calls at the last round */
  unsigned conns;  /* connections not yet freed */
  unsigned next_serial;
  rn_pool_stats_t stats;
  rn_buf_t ping_frame; /* empty: no heartbeats */
  rn_buf_t hello_frame; /* rnp: the handshake; empty for other protocols */
  rn_buf_t scratch;     /* rnp: re-encoding a keyed request */
  /* rnp: no call with a larger frame is accepted: the largest MAX_FRAME of
   * the endpoints' servers (0 while one has not announced its own). A call
   * under it goes only where it fits (rn__pool_dispatch). */
  size_t peer_max_frame;
  /* TLS (conn_tls.c): the context new connections are made from (NULL:
   * plaintext); ciphertext as read, before it is decrypted into a
   * connection's rbuf (one read at a time); a batch's plaintext, before it
   * is encrypted into the connection's wbuf. */
  rn__tls_ctx_t *tls;
  rn_buf_t tls_in;
  rn_buf_t tls_out;
  unsigned refused; /* endpoints with `refused` set */
  /* Why the last connect failed, when more can be said than its error
   * (a TLS handshake's "unknown CA: ...", a setup request's error reply):
   * the text of a call failing with last_connect_error ==
   * connect_why_error. */
  char connect_why[RN_TLS_WHY_SIZE];
  int connect_why_error;
  /* The setup requests every new connection sends (conn_setup.c), their
   * frames back to back in setup_frames (wiped when freed: AUTH's
   * password); setup_ends[i] is where request i ends. */
  rn_buf_t setup_frames;
  size_t *setup_ends;
  size_t setup_count;
  rn_timer_t maintenance_timer;
  rn_timer_t reconnect_timer;  /* next endpoint out of backoff */
  rn_timer_t eject_timer;      /* next ejection to end */
  int last_connect_error;      /* since the last successful connect */
  rn_timer_t close_timer;
  rn_pool_close_cb close_cb;
  unsigned closing : 1;
  unsigned conns_closed : 1; /* drain over: connections told to close */
  unsigned finishing : 1;
  unsigned dispatching : 1;
  unsigned dispatch_again : 1;
  unsigned close_deferred : 1;
  unsigned aborting : 1; /* connections close with RST */
  unsigned tls_insecure : 1; /* pool->tls verifies nothing (tls.insecure) */
  /* tls.server_name was set: with tls_insecure, what
   * rn__tls_endpoint_ok needs to check endpoints added after rn_pool_new
   * as rn_tls_endpoint_check checked the first ones. */
  unsigned tls_named : 1;
  uint64_t close_drain;
  /* hold.c: holds waiting for a connection, in order; hold_timer runs
   * the pass that hands them connections (and looks again while they
   * wait). */
  rn_list_t holds_waiting;
  unsigned holds_waiting_count;
  rn_timer_t hold_timer;
};

/* call.c */
/* A zeroed call of the pool (up to its inline frame), from the pool's
 * spares when it has one: a busy pool reuses the calls it frees instead of
 * a malloc and free per call. NULL when out of memory. */
rn_call_t *rn__call_new(rn_pool_t *pool);
/* Frees the pool's spares (the pool is going away). */
void rn__call_free_spares(rn_pool_t *pool);
void rn__call_complete(rn_call_t *call, int status, const char *body,
                       size_t body_len, int flags);
void rn__call_release(rn_call_t *call);
void rn__call_set_endpoint(rn_call_t *call, rn_pool_endpoint_t *ep);
/* Copies the frame into the call (inline when small). 0 or UV_ENOMEM. */
int rn__call_set_frame_large(rn_call_t *call, const char *frame, size_t len);
static inline int rn__call_set_frame(rn_call_t *call, const char *frame,
                                     size_t len) {
  if (len > sizeof(call->inline_frame))
    return rn__call_set_frame_large(call, frame, len);
  call->frame = call->inline_frame;
  rn__copy(call->frame, frame, len);
  call->frame_len = len;
  return 0;
}
/* What ends the making of a call: 0 if err is 0, else the call, never
 * accepted, is released at once (no callback) and err returned. */
int rn__call_unaccepted(rn_call_t *call, int err);
/* A single call's request (resp, line, length; rnp's is parsed by
 * rn__rnp_call_prepare): 0 if it is exactly one whole frame, else
 * UV_EINVAL (two frames would bring two replies to one call: the second
 * would be unexpected and close the connection), or RN_EFRAMESIZE. For a
 * `pooled` resp call, also UV_EINVAL if it would leave its connection
 * changed (rn__resp_call_check). */
int rn__call_check_request(const rn_pool_t *pool, const char *frame,
                           size_t len, int pooled);
/* The same, the common length codec (a 4-byte prefix) decided inline:
 * every call passes here, and the prefix alone says where the frame ends.
 * len - 4 < len4_window: 4 <= len <= max_frame, for that codec only. */
static inline int rn__call_check_request_fast(const rn_pool_t *pool,
                                              const char *frame, size_t len,
                                              int pooled) {
  if (len - 4 < pool->len4_window) {
    const unsigned char *p = (const unsigned char *)frame;
    uint32_t body = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                    (uint32_t)p[2] << 8 | p[3];
    return body == (uint32_t)(len - 4) ? 0 : UV_EINVAL; /* window < 2^32 */
  }
  return rn__call_check_request(pool, frame, len, pooled);
}

/* batch.c: a batch is one call whose frame holds batch_n requests. */
/* A reply m (any kind but PONG, HELLO, GOAWAY, PUSH) to the batch (or a
 * batch's tombstone) `call` arrived on its connection: kept as its
 * element's result. 1 if it was the attempt's last (the connection then
 * takes the call and reports rn__fate_replied with status 0), 2 if it was
 * and the batch is a transaction the wrong or a loading server refused
 * whole (-EXECABORT after -READONLY, -MASTERDOWN or -LOADING: nothing ran;
 * the connection hands it back as never sent, rn__fate_returned), 0 if
 * more are due, RN_EUNEXPECTED (an rnp id answered twice) or
 * RN_EFRAMESIZE (its replies together past max_frame): errors that close
 * the connection. */
int rn__batch_reply(rn_call_t *call, const struct rn_reply_s *m);
/* Whether id (rnp) belongs to call, a batch or a single request. */
static inline int rn__call_has_id(const rn_call_t *call, uint64_t id) {
  return id >= call->rnp_id &&
         id - call->rnp_id < (call->batch_n > 0 ? call->batch_n : 1);
}
/* The batch is written again: the replies of an earlier attempt go. */
void rn__batch_restart(rn_call_t *call);
/* rnp: stamps each request of the batch, as it leaves in out, with its
 * own id (consecutive from call->rnp_id) and the time left. */
void rn__batch_stamp(rn_conn_t *conn, rn_call_t *call, char *out);
/* rnp GOAWAY at last_id: the batch's requests above it will not run; each
 * gets that as its result. 1 if that completed the attempt. */
int rn__batch_goaway(rn_call_t *call, uint64_t last_id);
void rn__batch_free(struct rn__batch_s *batch);

/* fate.c: a call's state machine. Connections and the pool report what
 * happened to a call; fate.c decides what becomes of it (complete, retry
 * after a delay, requeue, park for its hedges) and hands placement back to
 * the pool and the connection. */
/* The pool accepted the call (its frame set): its callback, attempts,
 * deadline (started now), attempt timeout and hedging, from options or the
 * pool's. 0, or the error of starting the deadline. */
int rn__fate_begin(rn_call_t *call, const rn_call_options_t *options,
                   rn_call_cb cb, void *data);
/* The pool put the call (pending, unsent) on a connection: its attempt
 * timer starts (attempt_timeout, or the hedge delay). */
void rn__fate_placed(rn_call_t *call);
/* Its bytes went into a socket write: it may run from now on. */
void rn__fate_written(rn_call_t *call);
/* Part of its reply arrived (replies in order only). */
void rn__fate_answering(rn_call_t *call);
/* Its whole reply arrived (status 0, or RN_EREPLY for an error reply); the
 * connection took it off already. */
void rn__fate_replied(rn_call_t *call, int status, const char *body,
                      size_t body_len, int flags);
/* An error reply saying "try again after delay_ms" (rnp RETRY_AFTER, or
 * IN_PROGRESS for a keyed call: 0 for a full-jitter delay). */
void rn__fate_try_later(rn_call_t *call, uint64_t delay_ms, const char *body,
                        size_t body_len);
/* The server proved it did not run the call (rnp NOT_EXECUTED): err is
 * what the caller gets if it is not sent again; again 0 when sending it
 * again would be refused again (BAD_REQUEST). */
void rn__fate_refused(rn_call_t *call, int err, int again, uint64_t delay_ms,
                      const char *body, size_t body_len);
/* A connection hands back a call it never wrote (or that its server
 * proved unrun: above a GOAWAY's last id); off every list. */
void rn__fate_returned(rn_call_t *call);
/* The call's connection failed after it was written (or its attempt was
 * abandoned, err ETIMEDOUT); off its connection already. */
void rn__fate_lost(rn_call_t *call, int err);
/* The pool is closing: a call pending or backing off fails ECLOSED. */
void rn__fate_closed(rn_call_t *call);
/* Fails a call on no list and no connection. */
void rn__fate_fail(rn_call_t *call, int err);
/* The same, with a text saying why (or NULL). */
void rn__fate_fail_why(rn_call_t *call, int err, const char *why);
/* A call's deadline (call->deadline's callback). */
void rn__fate_deadline(rn_timer_t *timer);

/* retry.c: the checks of a policy retry. */
/* Full-jitter backoff after the given number of attempts. */
uint64_t rn__retry_delay(rn_pool_t *pool, unsigned attempts);
/* Asks the application's classify (RN_CLASSIFY_DEFAULT without one). */
rn_classify_t rn__retry_classify(rn_pool_t *pool, const rn_call_t *call,
                                 int status, const char *body,
                                 size_t body_len);
/* One more attempt of a call was decided (a policy retry or a hedge):
 * spends one token of the budget. */
void rn__retry_spend(rn_pool_t *pool);
int rn__retry_budget_allows(const rn_pool_t *pool);
/* A call completed: successes refill the retry budget. */
void rn__retry_succeeded(rn_pool_t *pool);
/* An extra attempt that was paid for proved to add no work (a hedge never
 * written, or refused unrun): its token goes back. */
void rn__retry_refund(rn_pool_t *pool);

/* conn.c */
int rn__conn_open(rn_pool_t *pool, rn_pool_endpoint_t *endpoint);
void rn__conn_enqueue(rn_conn_t *conn, rn_call_t *call);
void rn__conn_unqueue(rn_conn_t *conn, rn_call_t *call); /* unsent only */
/* Takes a sent call off its connection, leaving a tombstone in its place
 * so that the late reply is matched and dropped. 0, or UV_ENOMEM after
 * which the connection was closed (and the call handled by that). */
int rn__conn_abandon(rn_conn_t *conn, rn_call_t *call);
void rn__conn_close(rn_conn_t *conn, int err);
/* No new calls; closes once the calls on it are answered (at once if it
 * has none). reason: the close reason reported then. */
void rn__conn_retire(rn_conn_t *conn, const char *reason);
/* conn_liveness.c: a blocking call joins (+1) or leaves (-1) conn's
 * queues. Placed, it is written at the end of this turn of the loop (or
 * after the write in flight): its connection's silence is excused from
 * now for its block_ms (without one, as long as it is out). Out of line:
 * the common call pays one test. */
void rn__conn_count_blocking(rn_conn_t *conn, const rn_call_t *call,
                             int delta);
/* The requests a call puts to its server: a batch's n, each taking a
 * place of the server's MAX_CONCURRENT, else 1. */
static inline unsigned rn__call_requests(const rn_call_t *call) {
  return call->batch_n > 0 ? call->batch_n : 1;
}
/* A call joins (+1) or leaves (-1) the connection's queues. Requests are
 * counted apart for the server's MAX_CONCURRENT: pings and HELLOs are not
 * requests; a batch is its n requests, until its last reply; an abandoned
 * attempt (a tombstone) still holds its place on the server, which may be
 * running it. */
static inline void rn__conn_count_call(rn_conn_t *conn, const rn_call_t *call,
                                       int delta) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  /* (A batch is never internal; its tombstone is.) */
  int request = !call->internal || call->tombstone;
  if (call->blocking) rn__conn_count_blocking(conn, call, delta);
  if (delta > 0) {
    if (conn->queued++ == 0) ep->busy++;
    ep->outstanding++;
    if (call->batch_n > 0) ep->requests += call->batch_n;
    else if (request) ep->requests++;
  } else {
    if (--conn->queued == 0) ep->busy--;
    ep->outstanding--;
    if (call->batch_n > 0) ep->requests -= call->batch_n;
    else if (request) ep->requests--;
  }
}

/* Ready, not retiring, and its write queue under the high-water mark.
 * Asked for every call placed. */
static inline int rn__conn_writable(const rn_conn_t *conn) {
  size_t queued = conn->unsent_bytes + (conn->writing ? conn->wbuf.len : 0);
  return conn->state == RN_CONN_READY && !conn->retiring && !conn->suspect &&
         conn->hold == NULL && conn->blocking == 0 &&
         queued < conn->pool->options.write_high_water;
}
/* Whether a frame of len bytes fits what conn's server accepts (rnp
 * MAX_FRAME). */
static inline int rn__conn_fits(const rn_conn_t *conn, size_t len) {
  return conn->max_frame == 0 || len <= conn->max_frame;
}
/* For a connection with nothing queued, when the loop has not polled in
 * this millisecond: looks at the socket without reading (rnp reads what
 * waits: a GOAWAY may). 0 if it is usable; otherwise it is closed or
 * retiring, and returns why (EOF, a reset, stray bytes). */
int rn__conn_check_idle(rn_conn_t *conn);
/* Back-pressure (subscribe.c): pause stops reading conn (ready) at once,
 * frames already read included; resume starts again from the loop (never
 * inside the call), the frames already read first. */
void rn__conn_read_pause(rn_conn_t *conn);
void rn__conn_read_resume(rn_conn_t *conn);

/* Queues a frame of the connection's own: a ping, or the handshake (rnp
 * HELLO, answered by RN_REPLY_HELLO). 0, UV_EINVAL or UV_ENOMEM. */
int rn__conn_send_own(rn_conn_t *conn, const rn_buf_t *frame, int handshake);
/* Moves the calls not yet written to `out`, for the pool to place again.
 * The connection's own frames (pings, HELLO) are dropped, or left to be
 * written (keep_own). */
void rn__conn_take_unsent(rn_conn_t *conn, rn_list_t *out, int keep_own);
/* Closes the socket: with a FIN, or with an RST when the pool aborts a
 * connection that got as far as connecting. */
void rn__conn_close_handle(rn_conn_t *conn, int connected);

/* conn_setup.c: the requests every new connection sends before it takes
 * calls (setup, the resp conveniences, ROLE), and what a Redis reply says
 * about the server rather than the call (wrong role, loading). */
/* Encodes the pool's setup requests (rn_pool_new). 0, UV_EINVAL (a bad
 * request, an option of another protocol) or UV_ENOMEM. */
int rn__setup_make(rn_pool_t *pool, const rn_pool_options_t *options);
void rn__setup_free(rn_pool_t *pool);
/* Queues the setup requests on a connection in its handshake: 0 or an
 * error that must close it. */
int rn__conn_setup_send(rn_conn_t *conn);
/* A reply to one of the connection's own requests during its handshake
 * (a setup request or the readiness ping): 0 if it may go on, else the
 * error that fails the connect (RN_EAUTH, RN_ESETUP, RN_EROLE,
 * RN_ELOADING), its text kept as the pool's connect_why. */
int rn__conn_setup_check(rn_conn_t *conn, const rn_call_t *call,
                         const rn_reply_t *m);
/* A caller's call on ep was answered with an error reply (resp): one that
 * is about the server (-READONLY or -MASTERDOWN on a master pool,
 * -LOADING) retires ep's connections and backs it off (and asks for
 * discovery on a wrong role), once per change of the server. 1 if the
 * reply came from the wrong server (-READONLY, -MASTERDOWN on a master
 * pool): the call belongs elsewhere, as one never sent; else 0. */
/* Whether body is a resp error reply whose code (first word) is code. */
int rn__setup_error_is(const char *body, size_t len, const char *code);
int rn__setup_server_error(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                            const char *body, size_t body_len);

/* conn_tls.c: a connection's TLS session, between its socket and its
 * frames. */
/* Connected: starts the TLS handshake (the state is RN_CONN_TLS; the
 * ClientHello waits in the session for the next flush). 0 or an error. */
int rn__conn_tls_start(rn_conn_t *conn);
/* Ciphertext read (nread > 0): decrypts into conn->rbuf. Returns the
 * RN_TLS_GOT_* bits, or an error that must close the connection. Moves
 * the handshake on; once it completes, the protocol handshake follows
 * (rn__conn_tls_established). */
int rn__conn_tls_read(rn_conn_t *conn, const char *data, size_t len);
/* Encrypts one batch of plaintext into conn->wbuf, after whatever the
 * session has to send first. 0 or an error. */
int rn__conn_tls_seal(rn_conn_t *conn, const char *plain, size_t len);
/* An orderly close: close_notify goes out if the socket takes it now. */
void rn__conn_tls_close_notify(rn_conn_t *conn);
void rn__conn_tls_free(rn_conn_t *conn);
/* Whether the session has bytes to write (the handshake, tickets' and key
 * updates' answers, alerts). */
static inline int rn__conn_tls_pending(const rn_conn_t *conn) {
  return conn->tls != NULL && rn__tls_want_write(conn->tls);
}

/* conn.c, for conn_tls.c: the TLS handshake completed. */
void rn__conn_tls_established(rn_conn_t *conn);
/* Writes what is unsent (and the session's own output) now, if no write
 * is in flight. */
void rn__conn_flush(rn_conn_t *conn);

/* conn_liveness.c: whether a connection's peer is alive. */
/* A sibling reported its peer gone: conn (busy) takes no new calls until
 * its own peer proves alive. */
void rn__conn_suspect(rn_conn_t *conn);
/* Makes conn (ready) the one that pings for its endpoint's idle
 * connections (see conn_ping_due). */
void rn__conn_take_over_probing(rn_conn_t *conn);
/* conn->heartbeat_timer's callback: pings when due, judges silence. */
void rn__conn_heartbeat(rn_timer_t *timer);
/* The connection is ready: its first ping is due one interval on. */
void rn__conn_beat_start(rn_conn_t *conn);
/* Queues a heartbeat ping (on failure the next beat tries again). */
void rn__conn_send_ping(rn_conn_t *conn);
/* A reply to its ping (or handshake) arrived: the next ping is due one
 * interval on. */
void rn__conn_ping_answered(rn_conn_t *conn);
/* The same, on a suspect connection: the proof clears it. */
void rn__conn_suspect_pong(rn_conn_t *conn);
/* A suspect without heartbeats has all its replies: it takes calls again
 * unless its peer's FIN or RST is already there (then it closes). */
void rn__conn_suspect_drained(rn_conn_t *conn);
/* Before a suspect connection writes: calls go back to the pool, only its
 * own frames leave. 1 if it closed. */
int rn__conn_flush_suspect(rn_conn_t *conn);
/* Its endpoint's prober is closing: a neighbour takes over. */
void rn__conn_hand_over_probing(rn_conn_t *conn);
/* A connection closing for a dead peer keeps its socket as the endpoint's
 * probe, if it may. 1 if it does. */
int rn__conn_become_probe(rn_conn_t *conn);
/* Closes the probe's socket; reason as for rn__endpoint_probe_ended. */
void rn__conn_end_probe(rn_conn_t *conn, const char *reason);
/* TCP_NODELAY, keepalive and TCP_USER_TIMEOUT on a connected socket. */
void rn__conn_set_tcp_options(rn_conn_t *conn);

/* What conn.c and conn_rnp.c share. */
/* Takes a call whose reply (or a proof it was not run) arrived off its
 * connection. 1 if it is a caller's call, whose fate the reply decides
 * (fate.c), 0 if it was the connection's own (a ping, the handshake, an
 * abandoned attempt) and has been dealt with. */
int rn__conn_take(rn_conn_t *conn, rn_call_t *call);
void rn__conn_handshake_done(rn_conn_t *conn);
/* Hands calls never written (or proven unprocessed) back to their fate
 * (rn__fate_returned), which puts them back in the pool's queue ahead of
 * newer calls, in their order. */
void rn__conn_return_all(rn_list_t *calls);

/* conn_rnp.c: rnp on the client side. */
/* Copies an encoded REQUEST into the call, adding the key and the
 * idempotent flag. 0, UV_EINVAL (not a REQUEST frame) or UV_ENOMEM. */
int rn__rnp_call_prepare(rn_pool_t *pool, rn_call_t *call, const char *frame,
                         size_t len, const rn_call_options_t *options);
/* Writes the connection's next id, and the time left, into `out`, the
 * call's frame as it leaves. */
void rn__rnp_stamp(rn_conn_t *conn, rn_call_t *call, char *out);
/* The server's HELLO answered the handshake: its limits and incarnation.
 * 0, or RN_EHANDSHAKE (another version). */
int rn__rnp_hello(rn_conn_t *conn, const rn_rnp_frame_t *f);

/* store.c: the key stores rnp servers announce (DEDUPE), interned per
 * pool; a call's `store` is an index there. */
#define RN_STORE_MIXED UINT16_MAX
/* conn's server announced id (NULL: none): the connection and its
 * endpoint now speak for that store. */
void rn__store_announced(rn_conn_t *conn, const char *id);
void rn__store_endpoint_gone(rn_pool_t *pool, rn_pool_endpoint_t *ep);
/* A keyed call is being written on conn: records its server's store. */
void rn__store_bind(rn_call_t *call, const rn_conn_t *conn);
/* Forgets the call's store (proven unrun: it may go anywhere). */
static inline void rn__store_unbind(rn_call_t *call) { call->store = 0; }
void rn__store_free_all(rn_pool_t *pool);
/* A keyed call whose attempt may have run can be retried: its server
 * announced a store and every attempt went to that store. */
static inline int rn__store_holds(const rn_call_t *call) {
  return call->keyed && call->store != 0 && call->store != RN_STORE_MIXED;
}
/* The server said GOAWAY: calls above last_id, and those not written, go
 * elsewhere; the connection retires. asked: its RETRY_AFTER, or 0. */
void rn__rnp_goaway(rn_conn_t *conn, uint64_t last_id, uint64_t asked);
int rn__rnp_make_frames(rn_pool_t *pool);

/* hedge.c */
/* Sets the call up for hedging if options (or the pool's) ask for it. */
void rn__hedge_configure(rn_pool_t *pool, rn_call_t *call,
                         const rn_call_options_t *options);
/* Sends a hedge of call to another connection: 1 if sent, 0 if no other
 * connection was ready (one is being opened), -1 if none will be (out of
 * memory, or a callback ended the call or closed the pool). */
int rn__hedge_send(rn_call_t *call);

/* resp_state.c: what resp requests leave a connection in (an open MULTI,
 * a WATCH, or a state its pool did not give it: SUBSCRIBE, SELECT, AUTH,
 * ...). Zero it, then track the requests sent (frames: whole frames of
 * codec, back to back; other protocols than resp leave it as it is). */
typedef struct rn__resp_state_s {
  unsigned in_multi : 1; /* MULTI sent, no EXEC/DISCARD yet */
  unsigned watching : 1; /* WATCH sent, no EXEC/DISCARD/UNWATCH yet */
  unsigned unknown : 1;  /* one of the requests after which the pool
                            cannot know what the next user would meet */
} rn__resp_state_t;
void rn__resp_state_track(rn__resp_state_t *s, const rn_codec_t *codec,
                          const char *frames, size_t len);
/* The same for one whole resp frame. */
void rn__resp_state_track_one(rn__resp_state_t *s, const char *frame,
                              size_t len);
/* A resp call's request: 0 if it is exactly one whole frame and, when
 * `pooled`, does not leave its connection otherwise than it found it (an
 * open MULTI, a WATCH, SUBSCRIBE, SELECT, ...: not for a pool's shared
 * connections); else UV_EINVAL, or RN_EFRAMESIZE past max_frame. */
int rn__resp_call_check(const rn_codec_t *codec, const char *frame,
                        size_t len, int pooled);
/* Whether the resp request frame is the command word (upper case; the
 * request's may be any). */
int rn__resp_command_is(const char *frame, size_t len, const char *word);

/* hold.c: held connections. */
/* A connection became ready, or idle: reserved for the first waiting
 * hold if it may take one (the hold gets it on the next pass). */
void rn__hold_offer(rn_pool_t *pool, rn_conn_t *conn);
/* conn (conn->hold set) is closing: its hold loses it (err: why). */
void rn__hold_conn_closed(rn_conn_t *conn, int err);
/* A held call completes (status as its result's). */
void rn__hold_call_ended(rn_call_t *call, int status);
/* Why a held call that never left failed: its hold's connection's
 * error. */
int rn__hold_error(const rn_call_t *call);
/* The pool is closing: waiting holds fail with RN_ECLOSED. */
void rn__hold_pool_closing(rn_pool_t *pool);
/* Whether conn is held by a caller (not merely reserved). */
int rn__hold_granted(const rn_conn_t *conn);
/* subscribe.c: m (read on a subscriber connection) went to its callback
 * (or answered a command written by rn_hold_write): 1; 0 if it is matched
 * as any reply (a ping's answer); or the error that closes the
 * connection. */
int rn__subscribe_deliver(rn_conn_t *conn, const rn_reply_t *m);
/* The subscriber connection is closing: its callback hears err, once. */
void rn__subscribe_conn_closed(rn_conn_t *conn, int err);
/* hold.c: the held connection of a granted hold, or NULL and *err. */
rn_conn_t *rn__hold_conn(const rn_hold_t *hold, int *err);
/* rn_pool_new: the pool's hold queue and timer. */
void rn__hold_pool_init(rn_pool_t *pool);

/* batch.c, for hold.c: a batch's call, built and checked, not accepted
 * (*o: the options to accept it with). 0 or an error of rn_pool_batch;
 * on error nothing is left to free. pooled: for any connection of the
 * pool, so refused (UV_EINVAL) if it would leave one changed (resp: an
 * open MULTI or WATCH, SUBSCRIBE, SELECT, AUTH, ...: resp_state.c). */
int rn__batch_make(rn_pool_t *pool, const char *frames, size_t len,
                   size_t count, const rn_call_options_t *options,
                   rn_batch_cb cb, void *data, int pooled, rn_call_t **out,
                   rn_call_options_t *o);
/* batch.c: the call's callback of every batch (data: call->batch). */
void rn__batch_done(rn_pool_t *pool, void *data, const rn_result_t *r);

/* pool_endpoint.c */
int rn__endpoint_new(rn_pool_t *pool, const char *text,
                     rn_pool_endpoint_t **out);
void rn__endpoint_remove(rn_pool_t *pool, rn_pool_endpoint_t *ep);
void rn__endpoint_free_all(rn_pool_t *pool);
void rn__endpoint_conn_freed(rn_pool_t *pool, rn_pool_endpoint_t *ep);
void rn__endpoint_release(rn_pool_t *pool, rn_pool_endpoint_t *ep);
/* Reports the endpoint's state if it changed. */
void rn__endpoint_update(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                         const char *reason, int err);
int rn__endpoint_usable(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                        uint64_t now);
void rn__endpoint_failed(rn_pool_t *pool, rn_pool_endpoint_t *ep, int err);
/* Its server refused us (RN_ETLSVERIFY: its certificate failed our
 * checks; RN_EAUTH: our credentials failed its): a configuration fault,
 * which retrying soon cannot mend. No connect before reconnect.max (and
 * ejected if the share allows), with `refused` set until a connection
 * there is answered (or, for a certificate, the TLS files are reloaded). */
void rn__endpoint_refused(rn_pool_t *pool, rn_pool_endpoint_t *ep, int err);
/* The endpoint's server answered (or new TLS files came): `refused` ends. */
void rn__endpoint_trusted(rn_pool_t *pool, rn_pool_endpoint_t *ep);
void rn__endpoint_answered(rn_pool_t *pool, rn_pool_endpoint_t *ep);
/* The server asked for no new connection for delay_ms (rnp GOAWAY with
 * RETRY_AFTER). Returns the hold applied: at most reconnect.max, since
 * the server is not trusted to lock the pool out of it. */
uint64_t rn__endpoint_hold_off(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                               uint64_t delay_ms);
/* Whether a server's RETRY_AFTER holds back connects to some endpoint. */
int rn__endpoint_any_held(rn_pool_t *pool, uint64_t now);
/* The endpoint's dead probe ended: reason "answered" (the server is back:
 * its backoff ends now), "expired", "replaced" (a connection is ready
 * again), "lost" (EOF, a reset) or "closed" (the pool closed). Counts it
 * and fires a "probe" event. */
void rn__endpoint_probe_ended(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                              unsigned serial, const char *reason);
void rn__endpoint_end_ejection(rn_pool_t *pool, rn_pool_endpoint_t *ep);
void rn__endpoint_eject_due(rn_timer_t *timer); /* pool->eject_timer */

/* pool.c: what connections report back. */
void rn__pool_conn_ready(rn_pool_t *pool, rn_conn_t *conn);
void rn__pool_conn_answered(rn_pool_t *pool, rn_conn_t *conn);
void rn__pool_conn_closed(rn_pool_t *pool, rn_conn_t *conn, int err);
void rn__pool_conn_freed(rn_pool_t *pool, rn_conn_t *conn);
/* Puts a call back at the head of the queue (fate.c decided it goes). */
void rn__pool_requeue(rn_pool_t *pool, rn_call_t *call);
/* Whether the pool takes one more call (or batch) now: 0, RN_ECLOSED, or
 * RN_EOVERLOAD past max_pending or max_in_flight (the overload event
 * fired). */
int rn__pool_admit(rn_pool_t *pool);
/* Counts an overload, fires its event with reason (the limit's name) and
 * returns RN_EOVERLOAD. */
int rn__pool_overloaded(rn_pool_t *pool, const char *reason);
/* rnp: whether ep's server has no room under its MAX_CONCURRENT for call's
 * requests (NULL: one) besides the pool's requests out there. */
int rn__endpoint_at_server_limit(const rn_pool_endpoint_t *ep,
                                 const rn_call_t *call);
/* A new call, its frame set, joins the queue: its rules start
 * (rn__fate_begin) and it is dispatched. 0, or RN_EFRAMESIZE or a timer
 * error, after which the caller releases the call, never accepted. */
int rn__pool_accept(rn_pool_t *pool, rn_call_t *call,
                    const rn_call_options_t *options, rn_call_cb cb,
                    void *data);
/* A connection's write queue went back under the high-water mark. */
void rn__pool_conn_writable(rn_pool_t *pool);
void rn__pool_call_done(rn_pool_t *pool);
void rn__pool_event(rn_pool_t *pool, rn_conn_t *conn, const char *state,
                    int err);
/* Any event; fills in what ev leaves NULL/0 from the arguments. */
void rn__pool_emit(rn_pool_t *pool, rn_event_type_t type,
                   rn_pool_endpoint_t *ep, rn_pool_event_t *ev);
/* An event that carries only a reason and an error (overload, wrong
 * role, resolve). */
void rn__pool_emit_reason(rn_pool_t *pool, rn_event_type_t type,
                          rn_pool_endpoint_t *ep, const char *reason, int err);
/* The text for a call that failed with the pool's last connect error
 * (the TLS reason), or NULL. */
const char *rn__pool_connect_why(const rn_pool_t *pool);
/* The word for why a connection closed (or failed to connect). */
const char *rn__conn_close_reason(const rn_conn_t *conn);
/* Asks the application (through a RESOLVE event, from the loop) to look
 * its endpoints up again. */
void rn__pool_want_resolve(rn_pool_t *pool, const char *reason);
/* Places waiting calls (not re-entrant; a nested call asks for a rerun). */
void rn__pool_dispatch(rn_pool_t *pool);
/* A connection for a hedge of call: not its own, another endpoint if any.
 * NULL if none is ready. */
rn_conn_t *rn__pool_pick_other(rn_pool_t *pool, rn_call_t *call);
/* Opens one more connection where there is room. */
void rn__pool_grow(rn_pool_t *pool);
/* An endpoint's server announced the largest frame it accepts, or the
 * endpoints changed: recomputes pool->peer_max_frame. */
void rn__pool_peer_max_frame(rn_pool_t *pool);

#endif /* RN_CLIENT_H */

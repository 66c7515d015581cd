/*
 * resilnet — resilient TCP clients and servers on libuv.
 *
 * This header is the API for programs: errors, buffers, the loop and
 * timers, endpoints, codecs, client pools and servers. Two others serve
 * other audiences and are included at the end, so that including this one
 * declares everything: resilnet/wire.h (rnp frames and RESP values, for
 * code that reads or writes the formats themselves) and resilnet/harness.h
 * (the fault-injection proxy and child processes, for test harnesses).
 *
 * Conventions (after libuv):
 *  - Functions return 0 or a negative error code. libuv's UV_E* codes are
 *    reused as they are; resilnet's own codes live in a disjoint range
 *    (RN_E*, below -30000). rn_err_name() and rn_strerror() cover both.
 *  - A function that returns an error never calls its callback. A function
 *    that returns 0 calls its callback exactly once, never before it returned.
 *  - Objects (loops, pools, servers) are opaque and owned by the library.
 *    They close asynchronously; their memory is released after the close
 *    callback has returned.
 *  - The core never prints and never calls Lua; it reports through callbacks.
 */
#ifndef RESILNET_H
#define RESILNET_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RN_VERSION_MAJOR 0
#define RN_VERSION_MINOR 1
#define RN_VERSION_PATCH 0
#define RN_VERSION_STRING "0.1.0"

const char *rn_version_string(void);

/* ------------------------------------------------------------------------ */
/* Errors                                                                     */

/* resilnet's own codes: name, value, message. One table generates the enum,
 * rn_err_name() and rn_strerror(). Values never change once released. */
#define RN_ERRNO_MAP(XX)                                                      \
  XX(OVERLOAD, -30001, "too many calls pending or in flight")                 \
  XX(CLOSED, -30002, "closed")                                                \
  XX(FRAMESIZE, -30003, "frame larger than max_frame")                        \
  XX(BADFRAME, -30004, "malformed frame")                                     \
  XX(UNEXPECTED, -30005, "reply with no request waiting for it")              \
  XX(REPLY, -30006, "server replied with an error")                           \
  XX(DEADPEER, -30007, "peer stopped answering heartbeats")                   \
  XX(NOTEXEC, -30008, "server did not execute the request")                   \
  XX(HANDSHAKE, -30009, "peer did not complete the handshake")                \
  XX(HANDLER, -30010, "request handler failed")                              \
  XX(STALE, -30011, "connection outlived its server")                         \
  XX(PEERPROTOCOL, -30012, "peer reported a protocol error")                  \
  XX(TLS, -30013, "TLS failed")                                               \
  XX(TLSVERIFY, -30014, "TLS peer verification failed")                       \
  XX(NOTLS, -30015, "TLS asked for, but resilnet was built without OpenSSL") \
  XX(AUTH, -30016, "the server refused the connection's credentials")      \
  XX(SETUP, -30017, "a connection setup request failed")                     \
  XX(ROLE, -30018, "the server does not have the role asked for")            \
  XX(LOADING, -30019, "the server is loading its dataset")

typedef enum {
#define RN_ERRNO_ENUM_(name, value, msg) RN_E##name = (value),
  RN_ERRNO_MAP(RN_ERRNO_ENUM_)
#undef RN_ERRNO_ENUM_
  RN_ERRNO_MIN_ = -30999
} rn_errno_t;

/* "ECONNRESET", "EOVERLOAD", ...; "EUNKNOWN" for codes from neither table. */
const char *rn_err_name(int err);
/* Human-readable message; never NULL. */
const char *rn_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Byte buffers                                                               */

/* A growable byte buffer. base[0..len) holds data; capacity is cap. */
typedef struct rn_buf_s {
  char *base;
  size_t len;
  size_t cap;
} rn_buf_t;

void rn_buf_init(rn_buf_t *buf);
/* Ensures room for `extra` more bytes. 0 or UV_ENOMEM. */
int rn_buf_reserve(rn_buf_t *buf, size_t extra);
int rn_buf_append(rn_buf_t *buf, const void *data, size_t len);
/* Drops the first n bytes, moving the rest to the front. */
void rn_buf_consume(rn_buf_t *buf, size_t n);
void rn_buf_free(rn_buf_t *buf);

/* ------------------------------------------------------------------------ */
/* Loop and timers                                                            */

typedef struct rn_loop_s rn_loop_t;

/* Wraps `uv` (the caller's loop, which must outlive the rn_loop_t) or, when
 * `uv` is NULL, creates and owns a new uv loop. 0, UV_ENOMEM or a uv error.
 * Sets SIGPIPE to ignored if it still has its default action (which kills
 * the process on a write to a reset socket; resilnet sees EPIPE instead). */
int rn_loop_new(uv_loop_t *uv, rn_loop_t **out);
uv_loop_t *rn_loop_uv(rn_loop_t *loop);
/* Milliseconds, from the uv loop's cached clock. */
uint64_t rn_loop_now(rn_loop_t *loop);
/* Frees the loop. UV_EBUSY while pools, servers or timers are still open.
 * An owned uv loop is run until pending close callbacks finish, then closed. */
int rn_loop_free(rn_loop_t *loop);

/* Lightweight one-shot timers kept in one heap per loop, driven by a single
 * uv_timer_t. A timer is caller-allocated, needs no close and may be freed
 * as soon as it is stopped (or has fired). Thousands of call deadlines cost
 * one libuv handle. The callback may restart or stop any timer. */
typedef struct rn_timer_s rn_timer_t;
typedef void (*rn_timer_cb)(rn_timer_t *timer);
struct rn_timer_s {
  void *data;
  /* private */
  rn_loop_t *loop;
  rn_timer_cb cb;
  uint64_t due;
  uint64_t seq;
  size_t heap_index; /* SIZE_MAX when not in the heap */
  int weak;          /* see rn_timer_unref */
  void *lane;        /* the lane it waits in (core-internal), or NULL */
  rn_timer_t *lane_prev, *lane_next;
};

void rn_timer_init(rn_loop_t *loop, rn_timer_t *timer, rn_timer_cb cb);
/* (Re)starts the timer to fire `timeout_ms` from the loop's current time.
 * 0 or UV_ENOMEM (heap growth). */
int rn_timer_start(rn_timer_t *timer, uint64_t timeout_ms);
void rn_timer_stop(rn_timer_t *timer);
int rn_timer_is_active(const rn_timer_t *timer);
/* ms until an active timer fires, by the loop's clock; 0 if inactive. */
uint64_t rn_timer_remaining(const rn_timer_t *timer);
/* Like uv_unref: the timer still fires, but does not by itself keep
 * uv_run(UV_RUN_DEFAULT) going. For housekeeping such as heartbeats of idle
 * connections, which must not stop a program from finishing. */
void rn_timer_unref(rn_timer_t *timer);

/* ------------------------------------------------------------------------ */
/* Endpoints                                                                  */

typedef enum { RN_ENDPOINT_TCP = 1, RN_ENDPOINT_UNIX = 2 } rn_endpoint_kind_t;

#define RN_ENDPOINT_ADDRESS_MAX 256

typedef struct rn_endpoint_s {
  rn_endpoint_kind_t kind;
  uint16_t port;                          /* TCP only */
  char address[RN_ENDPOINT_ADDRESS_MAX];  /* host name, IP literal without
                                             brackets, or unix socket path */
} rn_endpoint_t;

/* Parses "host:port", "1.2.3.4:port", "[v6]:port" or "unix:/path".
 * 0 or UV_EINVAL (empty host, bad or missing port, over-long name or path,
 * unbalanced brackets, NUL bytes). Port 0 is accepted (for listening). */
int rn_endpoint_parse(rn_endpoint_t *ep, const char *text, size_t len);
/* Writes the canonical text form ("[::1]:7000", "unix:/x"). Returns the
 * length written, or UV_ENOBUFS if it does not fit (with the NUL). */
int rn_endpoint_format(const rn_endpoint_t *ep, char *out, size_t size);

/* ------------------------------------------------------------------------ */
/* Codecs: framing for each protocol                                         */

typedef enum {
  RN_PROTOCOL_LENGTH = 1, /* big-endian length prefix, 1, 2, 4 or 8 bytes */
  RN_PROTOCOL_LINE = 2,   /* frames end with a delimiter (default "\n") */
  RN_PROTOCOL_RESP = 3,   /* Redis RESP2/RESP3 */
  RN_PROTOCOL_RNP = 4     /* resilnet's own protocol (docs/protocol.md) */
} rn_protocol_t;

#define RN_DEFAULT_MAX_FRAME ((size_t)16 * 1024 * 1024)
/* A pool's calls in flight per endpoint unless told otherwise: far above
 * what a healthy server has outstanding, and a few MB of calls at most. */
#define RN_DEFAULT_MAX_IN_FLIGHT 10000
#define RN_DELIMITER_MAX 16

typedef struct rn_codec_options_s {
  rn_protocol_t protocol;
  unsigned length_bytes; /* length: 1, 2, 4 or 8; 0 means 4 */
  const char *delimiter; /* line: 1..16 bytes, NUL-terminated; NULL = "\n" */
  size_t max_frame;      /* largest frame accepted, header included;
                            0 means RN_DEFAULT_MAX_FRAME */
} rn_codec_options_t;

/* Flags describing a frame. */
enum {
  RN_FRAME_ERROR = 1, /* resp: top-level error reply (- or !) */
  RN_FRAME_PUSH = 2   /* resp: out-of-band push (>) */
};

typedef struct rn_frame_s {
  size_t size;        /* bytes of the whole frame */
  size_t body_offset; /* the body within the frame: payload without length */
  size_t body_len;    /* prefix or delimiter; the whole value for resp */
  int flags;
} rn_frame_t;

typedef struct rn_codec_s rn_codec_t;

/* A stream's place in the partial frame at the head of its buffer, kept
 * between reads by rn_codec_scan so that finding a frame costs O(its size)
 * in all, however thinly its bytes arrive. Zero it (or rn_frame_scan_reset)
 * before first use; reset it whenever the buffer's head is no longer the
 * frame it was scanning. Private fields. */
typedef struct rn_frame_scan_s {
  size_t need;      /* codecs without a scan: look again once this many
                       bytes are buffered */
  size_t done;      /* bytes of the frame already walked */
  size_t line_from; /* resp: the partial line item has no CR before this */
  uint64_t owed;    /* resp: values still owed */
  uint64_t *levels; /* resp: values owed per open level (malloc'ed) */
  unsigned depth;   /* resp: open levels below the top */
  unsigned capacity; /* of levels */
  int flags;
  uint64_t items;   /* resp: items parsed for this frame so far, a count
                       of the work done (tests prove it linear) */
} rn_frame_scan_t;

/* One codec implementation. All functions are pure: no allocation except in
 * `out` (and a scan's own state), no state between calls but a scan's. */
typedef struct rn_codec_type_s {
  const char *name;
  /* 1: a complete frame starts at data (frame filled in); 0: need more bytes;
   * RN_EBADFRAME or RN_EFRAMESIZE: the stream cannot be framed. Oversized
   * frames are reported as soon as the header proves it, not after
   * max_frame bytes were buffered. */
  int (*frame)(const rn_codec_t *codec, const char *data, size_t len,
               rn_frame_t *frame);
  /* Appends one frame carrying `body`: a length prefix, the body and the
   * delimiter, or for resp an array of one bulk string. UV_EINVAL when the
   * body cannot be framed (line: it contains the delimiter), RN_EFRAMESIZE
   * when it exceeds max_frame, UV_ENOMEM. */
  int (*encode)(const rn_codec_t *codec, rn_buf_t *out, const char *body,
                size_t len);
  /* Like frame, resuming from and updating `scan` (see rn_codec_scan),
   * called on every read so that a bad byte is reported as it arrives;
   * it must cost O(the new bytes). NULL: frame's hint is resume enough
   * (frame is called again only once the hint's bytes are in). */
  int (*scan)(const rn_codec_t *codec, rn_frame_scan_t *scan,
              const char *data, size_t len, rn_frame_t *frame);
} rn_codec_type_t;

struct rn_codec_s {
  const rn_codec_type_t *type;
  rn_protocol_t protocol;
  unsigned length_bytes;
  size_t max_frame;
  size_t delimiter_len;
  char delimiter[RN_DELIMITER_MAX];
};

/* Validates options and fills in the codec. 0 or UV_EINVAL. */
int rn_codec_init(rn_codec_t *codec, const rn_codec_options_t *options);
/* Parses "length", "line", "resp". 0 or UV_EINVAL. */
int rn_protocol_parse(const char *name, rn_protocol_t *out);

static inline int rn_codec_frame(const rn_codec_t *codec, const char *data,
                                 size_t len, rn_frame_t *frame) {
  return codec->type->frame(codec, data, len, frame);
}
/* rn_codec_frame for a stream read piecemeal: `data` must start with the
 * same frame as on the previous call with this scan, holding at least the
 * bytes it held then (a buffer that only grows at its end, or whose
 * consumed frames were cut from its head with the scan reset). Returns as
 * rn_codec_frame; the scan is reset on 1 and on an error. */
int rn_codec_scan(const rn_codec_t *codec, rn_frame_scan_t *scan,
                  const char *data, size_t len, rn_frame_t *frame);
/* Forgets the partial frame and frees what the scan held. */
void rn_frame_scan_reset(rn_frame_scan_t *scan);

static inline int rn_codec_encode(const rn_codec_t *codec, rn_buf_t *out,
                                  const char *body, size_t len) {
  return codec->type->encode(codec, out, body, len);
}

/* ------------------------------------------------------------------------ */
/* Client pools                                                               */

typedef struct rn_pool_s rn_pool_t;

typedef enum {
  RN_EVENT_STATE = 1, /* a connection or an endpoint changed state */
  RN_EVENT_EJECT,     /* an endpoint was ejected for `duration` ms */
  RN_EVENT_RETRY,     /* a failed call will be tried again after `duration` */
  RN_EVENT_BUDGET,    /* the retry budget: state "exhausted" or "restored" */
  RN_EVENT_OVERLOAD,  /* a call was refused: max_pending reached */
  RN_EVENT_RESOLVE,   /* time to look the endpoints up again (discovery):
                         reason "ttl", "connect_failure" or "wrong_role" */
  RN_EVENT_WRONG_ROLE /* an endpoint's server proved to have the wrong
                         role (pool option role): reason "role" (its
                         ROLE answer at connect), "readonly" or
                         "masterdown" (a call's reply); its connections
                         retire and discovery is asked at once */
} rn_event_type_t;

/* States. A connection: "connecting", "ready", "closed", "probe" (its
 * dead-peer probe ended), "goaway" (rnp: its server said GOAWAY; reason
 * "retry_after" with the connect hold in duration, "retry_after_capped"
 * when that was cut to reconnect.max, else "goaway"). An endpoint
 * (connection 0): "idle" (no connection and no failure), "connecting",
 * "ready" (at least one connection takes calls), "transient_failure" (its
 * last connect failed; backing off), "ejected". */
typedef struct rn_pool_event_s {
  rn_event_type_t type;
  const char *endpoint; /* canonical endpoint text, or NULL */
  unsigned connection;  /* connection serial (unique per pool); 0 when the
                           event is about the endpoint */
  const char *state;    /* see above, or NULL */
  const char *reason;   /* why, in a word ("refused", "dead_peer",
                           "idle_timeout", "failures", ...), or NULL */
  int error;            /* the error behind it, or 0 */
  uint64_t duration;    /* ms: eject time, retry delay, a GOAWAY's
                           connect hold (RETRY_AFTER, capped) */
  unsigned attempt;     /* retry: the attempt about to be made (2, 3, ...) */
} rn_pool_event_t;

typedef void (*rn_pool_event_cb)(rn_pool_t *pool, const rn_pool_event_t *ev);

/* The edges of one read's deliveries (rn_pool_options_t on_deliveries):
 * called with begin 1 before the replies one read of a connection brings
 * go to their callbacks, and with begin 0 once they all have, the pairs
 * nested if a callback makes another read happen. (A subscriber resumed
 * by rn_hold_resume hands out what it read before its pause between such
 * a pair too.) Whatever else that read
 * sets off (events, failed calls when its connection closes) also falls
 * in between. A binding may gather the callbacks in between and enter its
 * language once per read instead of once per reply; the results it
 * gathers are only valid during their callbacks, so it copies them. */
typedef void (*rn_deliveries_cb)(rn_pool_t *pool, int begin);

/* Reconnect backoff: each failed connect to an endpoint waits longer,
 * delay(n) = min(initial * multiplier^n, max), spread by +/- jitter * delay
 * at random so that clients that failed together do not return together. */
typedef struct rn_backoff_options_s {
  uint64_t initial_ms; /* 100 */
  double multiplier;   /* >= 1 (1.6) */
  double jitter;       /* 0..1 (0.2) */
  uint64_t max_ms;     /* 30000 */
} rn_backoff_options_t;

/* Policy retries (design §4) of calls that may have reached the server:
 * only for idempotent calls (or rnp calls with a key), at most `attempts`
 * attempts in all (1..5), after a full-jitter delay, random in
 * [0, min(max, initial * 2^n)). A per-pool budget keeps retries from
 * multiplying load in an outage: it holds up to `budget_tokens`; each
 * retry (and each hedge) spends one, a success earns `budget_ratio`; no
 * retry or hedge while it is at or below half. Calls that never left
 * (unsent), or that an rnp server proved it never ran, are sent again
 * transparently, whatever this says, until their deadline. */
typedef struct rn_retry_options_s {
  unsigned attempts;     /* 3; 1 turns policy retries off */
  uint64_t initial_ms;   /* 10 */
  uint64_t max_ms;       /* 1000 */
  double budget_tokens;  /* 10 */
  double budget_ratio;   /* 0.1 */
  /* resp: the Redis error codes (an error reply's first word) that prove
   * the command did not run, a NULL-terminated array. Such a reply to a
   * call's own attempt is retried whatever the call's kind (attempts,
   * budget, deadline and classify's FAIL still apply) and, when it is the
   * call's answer, has maybe_executed = 0. Never for EXEC, nor for a
   * script (EVAL, EVALSHA, FCALL and their _RO forms) except NOSCRIPT and
   * BUSY. NULL: the built-in table (LOADING, READONLY, MASTERDOWN,
   * TRYAGAIN, CLUSTERDOWN, MOVED, ASK, BUSY, NOREPLICAS, OOM, NOAUTH,
   * WRONGPASS, NOPERM, NOSCRIPT; docs/retry-rules.md); an empty array
   * (just NULL): none. Copied by rn_pool_new. (NULL) */
  const char *const *not_executed;
} rn_retry_options_t;

/* An endpoint with `failures` consecutive failures (connects refused or
 * timed out, no answer to the handshake, a dead peer, a reset with calls
 * in flight) gets no calls and no connects for `time` ms, doubled on each
 * ejection up to `max_time`. At most floor(max_share * endpoints) are
 * ejected at once, and never all of them. failures 0 turns it off. */
typedef struct rn_eject_options_s {
  unsigned failures;    /* 5 */
  uint64_t time_ms;     /* 10000 */
  uint64_t max_time_ms; /* 300000 */
  double max_share;     /* 0..1 (0.5) */
} rn_eject_options_t;

/* A failure a pool asks the application about (rn_pool_options_t
 * classify). Valid only during the call. */
typedef struct rn_failure_s {
  int status;              /* RN_EREPLY (body: the error reply), or the
                              error of a connection or an attempt timeout */
  const char *body;
  size_t body_len;
  const char *request;     /* the request frame as sent */
  size_t request_len;
  unsigned attempts;       /* attempts made so far */
  int idempotent;
  const char *endpoint;
} rn_failure_t;

typedef enum {
  RN_CLASSIFY_DEFAULT = 0, /* the rules of design §4 */
  RN_CLASSIFY_RETRY,       /* an error reply that proves the request was
                              not executed (Redis -LOADING, -TRYAGAIN):
                              retry it, whatever the call's kind */
  RN_CLASSIFY_FAIL         /* no retry */
} rn_classify_t;

typedef rn_classify_t (*rn_classify_cb)(rn_pool_t *pool,
                                        const rn_failure_t *failure);

/* Heartbeats: a ping after `interval_ms` without a byte read; the peer is
 * dead after `timeout_ms` of silence while a reply is awaited. interval 0
 * turns them off. resp pings with PING, rnp with its PING frame; line and
 * length send `ping` (a request body) and have no heartbeats without one.
 * On in-order protocols a call that legitimately takes longer than the
 * timeout silences the connection too: set the timeout above the slowest
 * call. After a dead-peer verdict the connection's calls fail as before,
 * but its socket stays open as a probe for up to `probe_ms`: no calls go
 * on it, and the first byte it reads (the frozen server answering what it
 * was sent) ends the endpoint's reconnect backoff at once. One per
 * endpoint; 0: none. (1000, 3000, NULL, 30000) */
typedef struct rn_heartbeat_options_s {
  uint64_t interval_ms;
  uint64_t timeout_ms;
  const char *ping;
  size_t ping_len;
  uint64_t probe_ms;
} rn_heartbeat_options_t;

/* TCP keepalive (idle_ms 0 turns it off; the kernel counts whole seconds,
 * so idle and interval are rounded up to them) and TCP_USER_TIMEOUT
 * (bounds how long written data may stay unacknowledged, which pings
 * cannot; 0: the system's). Set where the platform has them.
 * (20000, 5000, 3, 20000) */
typedef struct rn_keepalive_options_s {
  uint64_t idle_ms;
  uint64_t interval_ms;
  unsigned count;
  uint64_t user_timeout_ms;
} rn_keepalive_options_t;

/* Hedging, for idempotent calls only (never for rnp calls with a key):
 * after delay_ms without a reply another attempt goes out on a different
 * connection, up to `max` attempts in flight; the first reply wins and the
 * others' replies are dropped. Each hedge spends a retry-budget token
 * (given back if it never left or the server refused it unrun) and is
 * sent only while the budget is above half. A hedged call's attempts are
 * not timed out one by one (attempt_timeout_ms). delay_ms 0: off.
 * (0, 2) */
typedef struct rn_hedge_options_s {
  uint64_t delay_ms;
  unsigned max;
} rn_hedge_options_t;

/* The role a pool wants its servers in (resp: the ROLE command's first
 * word; "slave" is a replica). */
typedef enum {
  RN_ROLE_ANY = 0, /* no check */
  RN_ROLE_MASTER,
  RN_ROLE_REPLICA
} rn_role_t;

/* One request of a connection's setup (rn_pool_options_t setup). resp: a
 * command, its words args[0..count); line, length, rnp: count 1 and
 * args[0] the request body. lens NULL: each word is NUL-terminated. */
typedef struct rn_setup_request_s {
  const char *const *args;
  const size_t *lens;
  size_t count;
} rn_setup_request_t;

typedef struct rn_pool_options_s {
  void *data; /* the caller's; see rn_pool_data() */
  const char *const *endpoints;
  size_t endpoint_count;
  rn_codec_options_t codec;
  unsigned size;            /* connections per endpoint (8) */
  unsigned max_pending;     /* calls waiting for a connection (1000) */
  uint64_t connect_timeout_ms; /* 2000 */
  uint64_t timeout_ms;         /* default deadline of a call (5000) */
  size_t write_high_water;  /* bytes queued on one connection before it is
                               passed over for new calls (1 MiB) */
  rn_pool_event_cb on_event;
  rn_deliveries_cb on_deliveries; /* may be NULL (NULL) */
  rn_backoff_options_t reconnect;
  rn_heartbeat_options_t heartbeat;
  rn_keepalive_options_t keepalive;
  /* Housekeeping, checked about once a second: connections with nothing to
   * do for idle_timeout_ms close (min_idle per endpoint are kept open, and
   * opened ahead of demand); a connection older than max_lifetime_ms, less
   * up to 10% at random so they do not all go at once, takes no new calls
   * and closes when its last reply is in. 0 means never. (60000, 0, 0) */
  uint64_t idle_timeout_ms;
  uint64_t max_lifetime_ms;
  unsigned min_idle;
  rn_retry_options_t retry;
  /* Asked, when set, about every error reply and before every policy
   * retry. It may veto a retry (FAIL) or make an error reply retryable
   * (RETRY); it cannot make a call that may have executed retryable
   * unless the call is idempotent: RETRY after a connection failure
   * means DEFAULT. Retries it allows still count attempts, spend budget
   * and stop at the deadline. NULL: the rules alone, and no call out. */
  rn_classify_cb classify;
  rn_eject_options_t eject;
  /* ms one attempt may take before it is given up (an idempotent call is
   * then tried again, others fail with UV_ETIMEDOUT); 0: only the call's
   * deadline. (0) */
  uint64_t attempt_timeout_ms;
  /* Calls queued or awaiting replies per endpoint; past it calls go to
   * another endpoint, and with every endpoint full they fail at once with
   * RN_EOVERLOAD. With max_pending it bounds a pool's memory: a program
   * that calls faster than a server answers fails fast instead of
   * growing. 0: no cap. (10000) */
  unsigned max_in_flight;
  rn_hedge_options_t hedge;
  /* ms between RN_EVENT_RESOLVE events, for scripted discovery (30000);
   * 0: only after connect failures. Host names themselves are resolved
   * afresh for every new connection. */
  uint64_t resolve_ttl_ms;
  /* rnp: a shared-secret token sent in every connection's HELLO (the AUTH
   * field, docs/protocol.md section 6.1) for a server with `auth`. NULL:
   * none. auth_len 0: strlen(auth); at most RN_RNP_AUTH_MAX (255) bytes,
   * else rn_pool_new() fails with UV_EINVAL. Copied into the pool's HELLO
   * frame (wiped when the pool is freed); need not outlive rn_pool_new().
   * A server that refuses it answers UNAUTHENTICATED: the connection
   * closes with RN_EAUTH, a configuration fault (the endpoint waits
   * reconnect.max_ms before its next connect, or is ejected), and calls
   * waiting for it fail with RN_EAUTH, never sent, as with RN_ETLSVERIFY below. */
  const char *auth;
  size_t auth_len;
  /* TLS to every endpoint (resilnet/tls.h), or NULL: plaintext. The files
   * are read by rn_pool_new() (and rn_pool_reload_tls()); the options need
   * not outlive the call. The server is verified unless tls->insecure: its
   * name must be the endpoint's host (an IP literal: an IP address of the
   * certificate), or tls->server_name, which a unix socket endpoint needs
   * (else UV_EINVAL; rn_tls_endpoint_check()). The handshake is part of
   * connecting (inside connect_timeout_ms, before ping or HELLO). A refused
   * certificate (RN_ETLSVERIFY) is a configuration fault: the endpoint
   * waits reconnect.max_ms before its next connect (or is ejected). */
  const struct rn_tls_options_s *tls;
  /* Requests every new connection sends before it takes calls, as part
   * of becoming ready: after TLS (rnp: after the HELLO is answered), ahead
   * of the readiness ping (a server with a password answers a PING before
   * AUTH with -NOAUTH, which proves nothing), all in one write, answered
   * in order, within what is left of connect_timeout_ms. Encoded (and copied) by rn_pool_new(); need not
   * outlive it. An error reply fails the connect with the server's text:
   * resp -WRONGPASS, -NOAUTH, -NOPERM are a configuration fault (RN_EAUTH:
   * the endpoint waits reconnect.max_ms, calls waiting fail with it as
   * with a refused certificate), any other error RN_ESETUP (an ordinary
   * connect failure: backoff). No call goes on a connection before its
   * setup is answered. (NULL, 0) */
  const rn_setup_request_t *setup;
  size_t setup_count;
  /* resp conveniences, each put ahead of setup as its request: AUTH
   * [username] password, SELECT database (0: none), CLIENT SETNAME
   * client_name. The password lives only in the encoded setup (wiped when
   * the pool is freed), never in events, errors or stats. A username
   * without a password, or a client_name with a character Redis refuses
   * in one (a space, a control or non-ASCII byte), fails rn_pool_new()
   * with UV_EINVAL. (NULL...) */
  const char *password;
  const char *username;
  unsigned database;
  const char *client_name;
  /* resp: the role servers must have. Not RN_ROLE_ANY: ROLE is the last
   * setup request, and a server answering another role is a failed
   * connect (RN_EROLE, reason "wrong_role", backoff as for any failed
   * connect: roles change). With RN_ROLE_MASTER a call answered -READONLY
   * or -MASTERDOWN retires its endpoint's connections, backs the endpoint
   * off and asks for discovery at once (RN_EVENT_WRONG_ROLE, then
   * RN_EVENT_RESOLVE); the call itself is retried (retry.not_executed).
   * Whatever the role, -LOADING (to a call, or to the readiness PING)
   * retires the endpoint's connections and backs it off until its server
   * answers PING. (RN_ROLE_ANY) */
  rn_role_t role;
  /* Requests one rn_pool_batch() may carry (RN_DEFAULT_MAX_BATCH, 1024;
   * 0 means that default). A larger batch is refused with UV_E2BIG: its
   * replies are held until the last one arrives, so this bounds what one
   * batch keeps in memory and how long it holds a connection. */
  unsigned max_batch;
} rn_pool_options_t;

/* Fills in every default. */
void rn_pool_options_init(rn_pool_options_t *options);

/* Creates a pool. Connections open lazily, on the first calls. 0, UV_EINVAL
 * (no endpoints, a bad endpoint, bad codec options) or UV_ENOMEM. */
int rn_pool_new(rn_loop_t *loop, const rn_pool_options_t *options,
                rn_pool_t **out);
void *rn_pool_data(rn_pool_t *pool);
const rn_codec_t *rn_pool_codec(rn_pool_t *pool);

typedef enum {
  RN_HEDGE_POOL = 0, /* as the pool's options say */
  RN_HEDGE_ON,       /* as the call's options say */
  RN_HEDGE_OFF       /* never */
} rn_hedge_mode_t;

typedef struct rn_call_options_s {
  uint64_t timeout_ms; /* the whole call; 0 = the pool's default */
  int idempotent;      /* the call may safely execute more than once */
  unsigned attempts;   /* 0 = the pool's retry.attempts; capped at 5 */
  uint64_t attempt_timeout_ms; /* 0 = the pool's attempt_timeout_ms */
  rn_hedge_mode_t hedge_mode;  /* RN_HEDGE_POOL: the pool's hedging */
  rn_hedge_options_t hedge;    /* with RN_HEDGE_ON */
  /* rnp: a dedupe key (1..RN_RNP_KEY_MAX bytes), the same for every
   * attempt, so a server with dedupe runs the call at most once and the
   * pool may retry it like an idempotent one, but only on a server that
   * announced (HELLO DEDUPE) the key store of the server its attempt may
   * have run on; where none was announced it is not retried
   * (docs/protocol.md section 9.1). NULL: none. */
  const char *key;
  size_t key_len;
  /* A blocking command (BLPOP, XREAD BLOCK, WAIT): its reply may take
   * up to its own timeout. While it is out its connection's heartbeat
   * does not count silence (see block_ms) and the pool puts no other
   * call on that connection; no attempt timeout, no hedging. Its
   * deadline passing while it is out closes the connection (the server
   * would still run it, for nobody). */
  int blocking;
  /* How long the server may block in it (BLPOP key 5: 5000), which makes
   * it a blocking call even without `blocking`: its connection's silence
   * is excused for block_ms from when it is placed on its connection
   * (written at the end of that turn of the loop), then judged by the
   * heartbeat again (a frozen server is a dead peer about block_ms +
   * heartbeat.timeout_ms after the call, whatever the call's deadline).
   * 0 with `blocking`: excused as long as it is out (liveness is then TCP
   * keepalive, TCP_USER_TIMEOUT and the call's deadline; as is a
   * block_ms above 2^32 - 1, 49 days). The deadline bounds the call
   * either way: whichever comes first ends it. */
  uint64_t block_ms;
} rn_call_options_t;

/* What a call came to. Valid only during the callback. */
typedef struct rn_result_s {
  int status;             /* 0, or the error */
  const char *body;       /* the reply's body (status 0 or RN_EREPLY);
                             for some errors a text saying why (an rnp
                             server's refusal, a wait for a connect a
                             server's RETRY_AFTER held back), or NULL */
  size_t body_len;
  int flags;              /* RN_FRAME_* of the reply frame */
  unsigned attempts;      /* attempts made, >= 1 once anything was tried */
  int maybe_executed;     /* 0: the server cannot have executed the call */
  const char *endpoint;   /* endpoint of the last attempt, or NULL */
} rn_result_t;

typedef void (*rn_call_cb)(rn_pool_t *pool, void *data,
                           const rn_result_t *result);

/* Sends one request frame (already encoded, see rn_codec_encode and the
 * rn_resp_encode_* functions; it is copied) and calls cb exactly once with
 * the reply or the failure. A resp error reply completes with status
 * RN_EREPLY and the error text as body. Returns RN_EOVERLOAD past
 * max_pending or max_in_flight (the RN_EVENT_OVERLOAD event, fired first,
 * names which), RN_EFRAMESIZE for a frame larger than the pool's
 * max_frame or (rnp) than the MAX_FRAME every endpoint's server
 * announced (a frame fitting some of them goes only there), RN_ECLOSED
 * once the pool is closing, UV_EINVAL (bytes that are not exactly one
 * whole request: two frames, a partial one, or for resp a value Redis does
 * not answer exactly once, docs/c-api.md; also, resp, for a request that
 * would leave its shared connection changed for the next call there:
 * MULTI, WATCH, SUBSCRIBE, MONITOR, SELECT, AUTH, HELLO, RESET, READONLY,
 * CLIENT SETNAME and the like; rn_pool_batch with MULTI ... EXEC,
 * rn_pool_hold, or the pool's setup options are for those) or UV_ENOMEM;
 * then cb is never called. */
int rn_pool_call(rn_pool_t *pool, const char *frame, size_t len,
                 const rn_call_options_t *options, rn_call_cb cb, void *data);

typedef struct rn_pool_stats_s {
  uint64_t calls;       /* calls accepted */
  uint64_t completed;   /* callbacks fired with status 0 or RN_EREPLY */
  uint64_t failed;      /* callbacks fired with another error */
  uint64_t overloaded;  /* calls refused with RN_EOVERLOAD */
  uint64_t retries;     /* policy retries (idempotent calls sent again) */
  uint64_t hedges;      /* hedged attempts sent */
  uint64_t requeued;    /* unsent calls moved to another connection */
  uint64_t not_executed; /* attempts the server proved it never ran: rnp
                            refused, past their deadline, above a GOAWAY;
                            resp error replies of retry.not_executed */
  uint64_t goaways;     /* rnp: GOAWAYs received */
  uint64_t retry_after_capped; /* rnp: GOAWAY RETRY_AFTERs longer than
                                  reconnect.max, cut to it */
  uint64_t connects;    /* connections established */
  uint64_t reconnects;  /* of which replaced a connection that failed */
  uint64_t connect_failures;
  uint64_t reuses;      /* calls that went to an idle, already used
                           connection */
  uint64_t heartbeats;  /* pings sent */
  uint64_t heartbeats_missed; /* pings never answered */
  uint64_t dead_peers;  /* connections closed for silence */
  uint64_t probes;      /* of which kept open as a probe */
  uint64_t probes_answered; /* probes that heard their server again */
  uint64_t probes_expired;  /* probes closed unanswered at probe_ms */
  uint64_t ejections;   /* endpoints ejected */
  uint64_t tls_failures; /* TLS handshakes failed (RN_ETLS, RN_ETLSVERIFY) */
  uint64_t tls_insecure; /* connections made without verifying the server
                            (tls.insecure): anyone on the path could have
                            read and changed their traffic */
  uint64_t setup_failures; /* connects failed by a setup reply (auth
                              included) */
  uint64_t wrong_role;  /* servers found in the wrong role (ROLE at
                           connect, -READONLY / -MASTERDOWN to a call) */
  uint64_t loading;     /* -LOADING seen (readiness PING or a call) */
  struct {              /* connections closed, by reason */
    uint64_t idle;        /* idle_timeout */
    uint64_t lifetime;    /* max_lifetime */
    uint64_t stale;       /* a sibling was reset: same dead incarnation */
    uint64_t dead_peer;   /* heartbeat timeout */
    uint64_t peer_closed; /* EOF or reset from the peer */
    uint64_t unexpected;  /* bytes nobody asked for, a malformed frame */
    uint64_t removed;     /* discovery dropped its endpoint */
    uint64_t error;       /* any other error */
  } evictions;
  unsigned open;        /* connections open or opening */
  unsigned idle;        /* ready connections with no call queued */
  unsigned pending;     /* calls waiting for a connection or a retry */
  unsigned in_flight;   /* calls written or queued on a connection */
  unsigned ejected;     /* endpoints ejected now */
  double budget;        /* retry tokens left */
  uint64_t holds;       /* connections handed to rn_pool_hold */
  uint64_t holds_reset; /* of which closed on release (rn_hold_release) */
  unsigned held;        /* connections held now */
} rn_pool_stats_t;

void rn_pool_stats(rn_pool_t *pool, rn_pool_stats_t *stats);

/* Forgets every endpoint's reconnect backoff and connects again now if
 * calls are waiting: for when the application knows the server is back
 * (an operator said so, discovery announced it). */
void rn_pool_reset_backoff(rn_pool_t *pool);

/* Replaces the pool's endpoints (scripted discovery): endpoints in both
 * lists keep their connections and state; new ones start fresh; removed
 * ones take no more calls, their idle connections close at once and busy
 * ones when their last reply is in. 0, UV_EINVAL (empty list, a bad
 * endpoint, one listed twice, or a unix socket the pool's TLS cannot
 * verify, rn_tls_endpoint_check(): nothing changed), UV_ENOMEM,
 * RN_ECLOSED. */
int rn_pool_set_endpoints(rn_pool_t *pool, const char *const *endpoints,
                          size_t count);

/* Per-endpoint view, for stats. Index in [0, rn_pool_endpoint_count()). */
typedef struct rn_endpoint_info_s {
  const char *endpoint; /* canonical text; valid until the next change */
  const char *state;    /* as in events */
  unsigned open;        /* connections */
  unsigned outstanding; /* calls queued or awaiting replies */
  unsigned failures;    /* consecutive */
  uint64_t ejected_for; /* ms left of an ejection, 0 if not ejected */
} rn_endpoint_info_t;

size_t rn_pool_endpoint_count(rn_pool_t *pool);
int rn_pool_endpoint_info(rn_pool_t *pool, size_t index,
                          rn_endpoint_info_t *info);

typedef void (*rn_pool_close_cb)(rn_pool_t *pool);

/* Stops accepting calls and fails the calls still waiting for a connection
 * with RN_ECLOSED. Calls on connections may finish for up to drain_ms; then
 * the rest fail with RN_ECLOSED and the connections close. cb (may be NULL)
 * runs once every handle is closed; the pool is freed after it returns.
 * Calling it twice is an error the second call ignores. From inside one of
 * the pool's callbacks, no call is accepted from then on and the rest runs
 * from the loop after that callback returns. */
void rn_pool_close(rn_pool_t *pool, uint64_t drain_ms, rn_pool_close_cb cb);

/* Abortive close: every call not yet answered fails with RN_ECLOSED now
 * and every TCP connection is reset (RST, SO_LINGER 0) instead of closed
 * with a FIN, so nothing lingers in TIME_WAIT. Replies in flight are lost
 * and the server sees ECONNRESET: for connections known to be broken, not
 * for routine shutdown. Also cuts short a draining rn_pool_close(); cb as
 * there (ignored if a close was already asked for). */
void rn_pool_abort(rn_pool_t *pool, rn_pool_close_cb cb);

/* ------------------------------------------------------------------------ */
/* Servers                                                                    */
/*
 * One server speaks one protocol. For resp, line and length, replies leave
 * each connection in request order. For rnp (docs/protocol.md) the server
 * does the protocol's work itself: the HELLO handshake, PING, ids, replies
 * in any order as handlers finish, refusals (OVERLOADED past max_concurrent
 * plus the queue, DEADLINE for requests whose deadline passed before they
 * could start), GOAWAY on rn_server_drain(), and dedupe of keyed requests.
 * A malformed frame, anything but HELLO first, or an id that does not
 * increase gets ERROR{id 0, PROTOCOL} and closes that connection only.
 * resp takes arrays of bulk strings and Redis inline commands (handed to
 * on_request as arrays); anything else gets "-ERR Protocol error: ..." and
 * closes that connection, after the replies before it. */

typedef struct rn_server_s rn_server_t;
typedef struct rn_request_s rn_request_t;
/* TLS options and calls: resilnet/tls.h. */
typedef struct rn_tls_options_s rn_tls_options_t;
/* Who may talk to an rnp server: resilnet/auth.h. */
typedef struct rn_server_auth_options_s rn_server_auth_options_t;

/* A request frame arrived. `body` is valid only during the callback (rnp:
 * the REQUEST's payload). The request stays valid until rn_request_reply(),
 * rn_request_fail() or rn_request_drop() is called on it, exactly once,
 * even if its connection closes meanwhile. */
typedef void (*rn_request_cb)(rn_server_t *server, rn_request_t *request,
                              const char *body, size_t len);

/* Dedupe stores (rnp). A store remembers, per key, "in progress" or the
 * finished answer. The server keeps the logic (who waits for whom, what is
 * replayed); a store only answers claim/finish/release, asynchronously so
 * it may do I/O. Each operation is answered with rn_dedupe_op_done()
 * exactly once, from inside the call or later; `op` and `key` stay valid
 * until then. */
typedef struct rn_dedupe_store_s rn_dedupe_store_t;
typedef struct rn_dedupe_op_s rn_dedupe_op_t;

typedef enum {
  RN_DEDUPE_NEW = 1,  /* claim: the key was unknown and is now in progress,
                         for window_ms: run the request */
  RN_DEDUPE_BUSY = 2, /* claim: in progress, claimed by someone else */
  RN_DEDUPE_DONE = 3  /* claim: finished; the answer is given */
} rn_dedupe_state_t;

/* A finished answer: a REPLY (error 0, body = payload) or an ERROR that may
 * have executed (error = its code, usually RN_RNP_ERR_APPLICATION; body =
 * the message). */
typedef struct rn_dedupe_answer_s {
  unsigned error;
  const char *body;
  size_t len;
} rn_dedupe_answer_t;

struct rn_dedupe_store_s {
  void *data;
  /* Atomically: unknown -> in progress (NEW), else BUSY or DONE. */
  void (*claim)(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                const char *key, size_t key_len, uint64_t window_ms);
  /* Records the answer of a key this server claimed, kept window_ms. */
  void (*finish)(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                 const char *key, size_t key_len, uint64_t window_ms,
                 const rn_dedupe_answer_t *answer);
  /* Forgets a claim whose request did not run (it was refused as not
   * executed, or the server closed first): a retry may run it. */
  void (*release)(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                  const char *key, size_t key_len);
  /* The server is done with the store (every op answered); may be NULL. */
  void (*close)(rn_dedupe_store_t *store);
  /* RN_RNP_DEDUPE_SIZE bytes naming where its keys live, the same for
   * every server sharing them (a shared store's own id), read once when
   * the server starts and announced in its HELLO (docs/protocol.md section
   * 9.1). NULL: the keys die with the process (the in-memory store): the
   * server announces its incarnation. */
  const char *id;
};

/* A store's answer. status: 0 or an error (claim: the request is refused
 * as OVERLOADED, not executed; finish/release: an RN_SERVER_EVENT_STORE
 * event). state and answer: claim only (answer for DONE, copied). */
void rn_dedupe_op_done(rn_dedupe_op_t *op, int status,
                       rn_dedupe_state_t state,
                       const rn_dedupe_answer_t *answer);

/* The default store: in memory, at most `capacity` keys. A key is never
 * dropped inside its window (that would let its retry run twice): a claim
 * of a new key at capacity fails with UV_ENOSPC (the server refuses it as
 * not executed, retry later) until keys expire, window_ms after they
 * finished. Size capacity as keys per second x window + keys in progress.
 * Free it with its close function (or let a server own it). */
int rn_dedupe_memory_new(rn_loop_t *loop, size_t capacity,
                         rn_dedupe_store_t **out);

/* What a server reports (rn_server_options_t on_event). Called from the
 * server's own work: the callback may call rn_server_close() or
 * rn_server_drain(), but must not free anything the event points to. */
typedef enum {
  RN_SERVER_EVENT_OVERLOAD = 1, /* a request refused: max_concurrent busy
                                   and the queue full (id) */
  RN_SERVER_EVENT_DEADLINE,     /* a request refused: its deadline passed
                                   before it could start (id) */
  RN_SERVER_EVENT_GOAWAY,       /* GOAWAY sent on a connection (id: the
                                   last request id it will answer) */
  RN_SERVER_EVENT_PROTOCOL,     /* a connection closed for a malformed
                                   frame (error: RN_EBADFRAME, ...) */
  RN_SERVER_EVENT_IDLE,         /* a connection closed for idle_timeout */
  RN_SERVER_EVENT_STORE,        /* the dedupe store failed (error) */
  /* Limits for untrusted clients (rn_server_options_t): */
  RN_SERVER_EVENT_BACKLOG,      /* a connection stopped being read: its
                                   unread replies passed the high-water
                                   mark, or the server's output_budget,
                                   or max_pipeline of its requests are
                                   being handled */
  RN_SERVER_EVENT_FRAME_TIMEOUT, /* a connection refused: a frame took
                                    longer than frame_timeout */
  RN_SERVER_EVENT_BUDGET,       /* a connection refused: buffered input
                                   passed input_budget and its partial
                                   frame was the largest, or queued
                                   replies passed output_budget and its
                                   backlog was the largest */
  RN_SERVER_EVENT_MAX_CONNECTIONS, /* a new connection closed at once:
                                      max_connections were open */
  RN_SERVER_EVENT_MAX_ELEMENTS, /* resp: a connection refused: a request
                                   array announced more than max_elements */
  RN_SERVER_EVENT_DEDUPE_FULL,  /* a new key refused: the memory store
                                   holds dedupe.capacity keys, all inside
                                   their window (UV_ENOSPC) */
  RN_SERVER_EVENT_WRITE_TIMEOUT, /* a connection closed: its socket took
                                   no byte of its replies for
                                   write_timeout */
  RN_SERVER_EVENT_TLS,          /* a connection closed: its TLS handshake
                                   or a record failed (error: RN_ETLS or
                                   RN_ETLSVERIFY; detail: OpenSSL's
                                   reason) */
  RN_SERVER_EVENT_AUTH          /* rnp: a connection refused, nothing of it
                                   run: its HELLO's credentials did not
                                   pass `auth` (error: RN_EAUTH; detail:
                                   why, never the token) */
} rn_server_event_type_t;

typedef struct rn_server_event_s {
  rn_server_event_type_t type;
  uint64_t id;
  int error;
  unsigned active; /* requests holding a slot now */
  unsigned queued; /* requests waiting for one */
  const char *detail; /* RN_SERVER_EVENT_TLS, _AUTH: why, as text; valid
                         during the callback only; else NULL */
} rn_server_event_t;

typedef void (*rn_server_event_cb)(rn_server_t *server,
                                   const rn_server_event_t *event);

/* rnp: requests with a KEY run once per key within window_ms; a duplicate
 * waits for the original's answer or gets it replayed. Off unless `on`.
 * store NULL: an in-memory store of `capacity` keys. A store given here
 * belongs to the server once rn_server_new() succeeded (its close is
 * called when the server is freed). (0, 300000, 100000, NULL) */
typedef struct rn_dedupe_options_s {
  int on;
  uint64_t window_ms;
  size_t capacity;
  rn_dedupe_store_t *store;
} rn_dedupe_options_t;

typedef struct rn_server_options_s {
  void *data;
  const char *listen;       /* endpoint text; port 0 picks a free port */
  rn_codec_options_t codec;
  int backlog;              /* 511 */
  unsigned max_concurrent;  /* requests being handled per server (256);
                               past it, resp/line/length connections stop
                               being read and rnp requests queue */
  rn_request_cb on_request;
  /* rnp: requests waiting for a slot past max_concurrent (64); past it
   * they are refused as OVERLOADED, not executed, with retry_after_ms
   * (100) as pushback. */
  unsigned queue;
  uint64_t retry_after_ms;
  /* ms a connection may stay without completing a request frame and
   * with no request in flight before it closes (rnp: after a GOAWAY).
   * Bytes of an unfinished frame do not count as activity. 0: never
   * (RN_SERVER_DEFAULT_IDLE_TIMEOUT). */
  uint64_t idle_timeout_ms;
  /* Limits for clients the server did not choose (docs/operations.md,
   * "Running an exposed server"). Each fires its event and counts in the
   * stats when it triggers. A refused connection stops being read, gets
   * what the protocol can say (resp: an -ERR reply after the replies
   * owed; rnp: GOAWAY), then closes.
   * frame_timeout_ms: from a frame's first byte to its last, else the
   * connection is refused. 0: none (RN_SERVER_DEFAULT_FRAME_TIMEOUT).
   * max_connections: connections open at once; past it a new one is
   * closed as soon as accepted. 0: three quarters of RLIMIT_NOFILE's soft
   * limit when the server starts, the rest left to the application.
   * input_budget: bytes buffered for unfinished or held-back frames
   * across the server; past it the connection with the most is refused
   * (RN_SERVER_DEFAULT_BUDGET).
   * output_budget: reply bytes queued across the server; at it
   * connections with replies still queued stop being read until theirs
   * are written, and past it (replies of requests already taken) the
   * connection with the largest backlog is closed at once, its replies
   * dropped (RN_SERVER_DEFAULT_BUDGET). Each connection also stops being
   * read past RN_SERVER_HIGH_WATER bytes of its own.
   * max_pipeline: resp, line, length: requests of one connection handed
   * to on_request and not yet answered; at it the connection stops
   * being read until one is, so that one client's replies in the making
   * stay bounded too (RN_SERVER_DEFAULT_MAX_PIPELINE). rnp's are bounded
   * by max_concurrent and queue.
   * write_timeout_ms: a write may wait without the client's socket
   * taking a byte of it, finishing connections included; then the
   * connection closes (its replies dropped). Checked when it is due, so
   * a stalled client goes between write_timeout_ms and twice that after its
   * last byte taken. 0: never (RN_SERVER_DEFAULT_WRITE_TIMEOUT).
   * max_elements: resp: elements a request array may announce; more is
   * refused as soon as the header arrives (RN_SERVER_DEFAULT_MAX_ELEMENTS).
   * codec.max_frame defaults to RN_SERVER_DEFAULT_MAX_FRAME here. */
  uint64_t frame_timeout_ms;
  unsigned max_connections;
  size_t input_budget;
  size_t output_budget;
  size_t max_elements;
  unsigned max_pipeline;
  uint64_t write_timeout_ms;
  rn_server_event_cb on_event; /* may be NULL */
  rn_dedupe_options_t dedupe;
  /* NULL: plaintext. Else every connection, whatever the protocol, is
   * TLS (resilnet/tls.h); the files are read by rn_server_new(), which
   * then fails with UV_EINVAL (a missing or contradictory option),
   * RN_ETLS (a file; rn_tls_options_check() says why) or RN_ENOTLS, and
   * the options need not outlive it. The handshake is
   * timed like a frame (frame_timeout_ms from its first byte) and counts
   * as one completed (idle_timeout_ms restarts). */
  const rn_tls_options_t *tls;
  /* NULL: anyone who reaches the port is served (as before). Else, rnp
   * only: a connection runs nothing until its HELLO's token or its
   * verified client certificate passes (resilnet/auth.h); copied by
   * rn_server_new() (UV_EINVAL for a contradictory option). */
  const rn_server_auth_options_t *auth;
} rn_server_options_t;

#define RN_SERVER_DEFAULT_IDLE_TIMEOUT 120000     /* ms */
#define RN_SERVER_DEFAULT_FRAME_TIMEOUT 10000     /* ms */
#define RN_SERVER_DEFAULT_MAX_FRAME ((size_t)1024 * 1024)
#define RN_SERVER_DEFAULT_BUDGET ((size_t)64 * 1024 * 1024)
#define RN_SERVER_DEFAULT_MAX_ELEMENTS 65536
#define RN_SERVER_DEFAULT_MAX_PIPELINE 128
#define RN_SERVER_DEFAULT_WRITE_TIMEOUT 30000     /* ms */
/* Reply bytes queued for one client before its requests stop being read. */
#define RN_SERVER_HIGH_WATER ((size_t)1024 * 1024)

void rn_server_options_init(rn_server_options_t *options);

/* Binds and listens. 0, UV_EINVAL, UV_ENOMEM, or the bind/listen error. */
int rn_server_new(rn_loop_t *loop, const rn_server_options_t *options,
                  rn_server_t **out);
void *rn_server_data(rn_server_t *server);
const rn_codec_t *rn_server_codec(rn_server_t *server);
/* The bound address. For unix sockets, port is 0 and host the path. */
int rn_server_address(rn_server_t *server, char *host, size_t host_size,
                      int *port);

/* resp, line, length: queues the encoded reply frame (copied); replies
 * leave each connection in the order its requests arrived.
 * rnp: `frame` is the REPLY's payload only (the server frames it with the
 * request's id); the reply leaves at once. A reply larger than the
 * client's MAX_FRAME becomes an ERROR RN_RNP_ERR_TOO_LARGE (it ran).
 * If the connection has closed, the reply is discarded (rnp with dedupe:
 * still recorded for the key). Releases the request. 0 or UV_ENOMEM
 * (request released). */
int rn_request_reply(rn_request_t *request, const char *frame, size_t len);
/* The handler failed or refuses. rnp: an ERROR with `code`
 * (rn_rnp_error_t), the message, RETRY_AFTER if retry_after_ms > 0, and
 * the NOT_EXECUTED flag for OVERLOADED, DEADLINE, SHUTDOWN and
 * BAD_REQUEST (only say so when nothing ran). resp: the error reply
 * "-<message>" (CR and LF become spaces). line, length: as
 * rn_request_drop(). Releases the request. 0 or UV_ENOMEM. */
int rn_request_fail(rn_request_t *request, unsigned code,
                    const char *message, size_t len,
                    uint64_t retry_after_ms);
/* Releases the request without a reply. resp, line, length: closes its
 * connection (a failed handler must not leave the client waiting forever
 * nor let later replies be matched to the wrong request). rnp: answers an
 * APPLICATION error ("no reply"). */
void rn_request_drop(rn_request_t *request);
rn_server_t *rn_request_server(rn_request_t *request);

/* What an rnp request carried; other protocols: all zero. key points into
 * the request (valid until it is released). */
typedef struct rn_request_info_s {
  uint64_t id;
  int has_deadline;
  uint64_t deadline_ms; /* ms left now, by the loop's clock (0: past) */
  const char *key;      /* NULL if none */
  size_t key_len;
  int idempotent;
} rn_request_info_t;

void rn_request_info(rn_request_t *request, rn_request_info_t *info);

/* Who sent the request: its connection's peer as endpoint text,
 * "host:port" ("[v6]:port" for IPv6) or "unix:<path>" ("unix:" when the
 * client's socket has no name), NUL-terminated in buf. Any protocol.
 * 0, UV_ENOTCONN (the connection closed already), UV_ENOBUFS (buf too
 * small: RN_ENDPOINT_ADDRESS_MAX + 16 is enough). */
int rn_request_peer(rn_request_t *request, char *buf, size_t size);

typedef struct rn_server_stats_s {
  uint64_t connections;     /* accepted */
  uint64_t requests;        /* requests read */
  uint64_t handled;         /* handed to on_request */
  uint64_t overloaded;      /* refused: OVERLOADED */
  uint64_t expired;         /* refused: DEADLINE */
  uint64_t replayed;        /* dedupe: answered from a finished key */
  uint64_t joined;          /* dedupe: waited for the original */
  uint64_t busy;            /* dedupe: IN_PROGRESS (claimed elsewhere) */
  uint64_t discarded;       /* after GOAWAY, dropped unanswered */
  uint64_t protocol_errors; /* connections closed for bad frames */
  uint64_t idle_timeouts;   /* connections closed for idle_timeout */
  uint64_t frame_timeouts;  /* connections refused for frame_timeout */
  uint64_t budget_refused;  /* connections refused for input_budget or
                               output_budget */
  uint64_t connections_refused; /* closed at once past max_connections */
  uint64_t elements_refused; /* resp: refused past max_elements */
  uint64_t backlogged;      /* times a connection stopped being read for
                               its unread replies (or output_budget, or
                               max_pipeline) */
  size_t buffered_in;       /* bytes held for unfinished frames now */
  size_t buffered_out;      /* reply bytes queued now */
  uint64_t dedupe_full;     /* dedupe: new keys refused at capacity */
  uint64_t write_timeouts;  /* connections closed for write_timeout */
  uint64_t tls_errors;      /* connections closed for a failed TLS
                               handshake or record */
  uint64_t auth_refused;    /* rnp: connections refused as
                               unauthenticated */
  unsigned open;            /* connections open */
  unsigned active;          /* requests holding a slot */
  unsigned queued;          /* requests waiting for a slot */
} rn_server_stats_t;

void rn_server_stats(rn_server_t *server, rn_server_stats_t *stats);

typedef void (*rn_server_close_cb)(rn_server_t *server);

/* Stops listening and closes every connection. Requests still unanswered
 * stay valid until replied to or dropped (the replies are discarded);
 * queued rnp requests are released unanswered. cb (may be NULL) runs once
 * all handles are closed, every request was released and every dedupe
 * store op answered; the server is freed after it returns. Cuts a drain
 * short (its cb is then not called). A second call is ignored. */
void rn_server_close(rn_server_t *server, rn_server_close_cb cb);

/* Graceful close: stops listening; rnp connections get GOAWAY with the
 * last request id each will answer, later requests on them are discarded
 * unanswered, and each closes once its requests are answered and written
 * (other protocols: connections stop being read and close the same way).
 * After drain_ms, whatever is left closes as with rn_server_close(),
 * except that rnp requests accepted but never started are first answered
 * SHUTDOWN (not executed) and their connections close once that is
 * written (at most RN_SERVER_LINGER_MS, 2 s, later). cb as there. Ignored
 * once a close or drain was asked for. */
void rn_server_drain(rn_server_t *server, uint64_t drain_ms,
                     rn_server_close_cb cb);

/* ------------------------------------------------------------------------ */
/* Batches (client/batch.c)                                                    */

#define RN_DEFAULT_MAX_BATCH 1024

/* What a batch came to. Valid only during the callback. */
typedef struct rn_batch_result_s {
  /* 0: every request has its own result in results[]; otherwise the batch
   * failed as a whole (the connection failed, the deadline passed, the
   * pool closed: the codes of rn_result_t) and results is NULL. */
  int status;
  const char *body;     /* status != 0: a text saying why, or NULL */
  size_t body_len;
  unsigned attempts;    /* attempts of the whole batch written */
  int maybe_executed;   /* 0: no request of the batch can have run */
  const char *endpoint; /* of the last attempt, or NULL */
  size_t count;         /* requests in the batch */
  /* status 0: one result per request, in the order given. An element's
   * status is 0 (its reply), RN_EREPLY (an error reply: resp's -ERR ...,
   * rnp's ERROR) or an rnp refusal (RN_ENOTEXEC, RN_EOVERLOAD,
   * RN_ETIMEDOUT: that request did not run, maybe_executed 0). attempts
   * and endpoint are the batch's. */
  const rn_result_t *results;
} rn_batch_result_t;

typedef void (*rn_batch_cb)(rn_pool_t *pool, void *data,
                            const rn_batch_result_t *result);

/* Sends `count` request frames, encoded back to back in frames[0..len)
 * (rn_codec_encode appends: encode them one after the other into one
 * rn_buf_t), on one connection in one write, and calls cb exactly once
 * with all their replies (matched in order, or by id on rnp) or with the
 * failure of the whole batch. frames is copied.
 *
 * The batch is one call to the retry rules (docs/retry-rules.md section
 * 1b): unsent, it moves whole to another connection; written and then
 * lost (the connection died before the last reply), it is sent again
 * whole only if options->idempotent (or, on rnp, every frame carries a
 * KEY field), else it fails with maybe_executed 1. options as for
 * rn_pool_call except: no hedging, and no options->key (keys go in the
 * frames). It takes one place of max_in_flight and max_pending, and its
 * bytes together count as one frame against max_frame.
 *
 * Returns, without calling cb: UV_EINVAL (count 0, frames that are not
 * exactly count whole frames of the pool's protocol, rnp frames that are
 * not REQUESTs, options->key set), UV_E2BIG (count above max_batch),
 * RN_EFRAMESIZE, RN_EOVERLOAD, RN_ECLOSED, UV_ENOMEM as rn_pool_call. */
int rn_pool_batch(rn_pool_t *pool, const char *frames, size_t len,
                  size_t count, const rn_call_options_t *options,
                  rn_batch_cb cb, void *data);


/* ------------------------------------------------------------------------ */
/* Held connections                                                           */

/* One connection reserved for one user: calls made through it go on that
 * connection only (for WATCH ... MULTI ... EXEC with logic between, and
 * for blocking commands), until rn_hold_release. */
typedef struct rn_hold_s rn_hold_t;

/* status 0: hold is the reserved connection's handle, the caller's until
 * rn_hold_release. Otherwise hold is NULL and status says why none came:
 * UV_ETIMEDOUT (none was free before the deadline), RN_ECLOSED. */
typedef void (*rn_hold_cb)(rn_pool_t *pool, void *data, rn_hold_t *hold,
                           int status);

/* Asks for a connection of the pool's own, idle and ready, reserved for
 * the caller: cb fires exactly once, from the loop (never inside this
 * call). Waiting holds are bounded like calls: options->timeout_ms (0: the
 * pool's timeout_ms) and max_pending (holds and calls waiting together;
 * RN_EOVERLOAD). A pool with room opens a connection for it; a held
 * connection counts against `size` (connections per endpoint) as any
 * other. Only timeout_ms of options is used. Returns 0, RN_EOVERLOAD,
 * RN_ECLOSED, UV_EINVAL (cb NULL) or UV_ENOMEM; then cb never fires. */
int rn_pool_hold(rn_pool_t *pool, const rn_call_options_t *options,
                 rn_hold_cb cb, void *data);
/* rn_pool_call on the held connection only. Its retry rules are a
 * call's with attempts 1: a held call is never sent again, never moved
 * to another connection: unsent when the connection failed, it fails
 * with that error (maybe_executed 0); written, with maybe_executed 1.
 * options as rn_pool_call's (attempts, attempt timeout and hedging do not
 * apply). Returns as rn_pool_call, plus the error that ended the held
 * connection (its close error, RN_ECLOSED) once it is gone, UV_EINVAL
 * after rn_hold_release, and RN_EOVERLOAD (overload reason
 * "max_concurrent", unsent) while the rnp server's MAX_CONCURRENT is
 * taken by the pool's requests to it. */
int rn_hold_call(rn_hold_t *hold, const char *frame, size_t len,
                 const rn_call_options_t *options, rn_call_cb cb, void *data);
/* rn_pool_batch on the held connection only (rules as rn_hold_call). */
int rn_hold_batch(rn_hold_t *hold, const char *frames, size_t len,
                  size_t count, const rn_call_options_t *options,
                  rn_batch_cb cb, void *data);
/* Gives the connection back and frees hold. The connection is closed,
 * not reused ("hold_reset"), when reset is set or when the pool cannot
 * know its state: calls still out on it, a held call that failed without
 * a reply (timed out: its reply may still come), and for resp an
 * unfinished MULTI, a WATCH not ended by EXEC/DISCARD/UNWATCH, or a
 * (P|S)SUBSCRIBE or MONITOR sent on it. Calls still out then fail as the
 * connection's calls do (their callbacks fire later, from the loop or
 * inside this call). Safe after the pool closed. */
void rn_hold_release(rn_hold_t *hold, int reset);
/* Whether releasing hold now would reset its connection (see
 * rn_hold_release), or it has none any more: 1, else 0. */
int rn_hold_unknown(const rn_hold_t *hold);

/* Subscriptions (resp only). A subscriber connection gets frames nobody
 * asked for: RESP3 push frames, and in RESP2 subscribe mode the arrays
 * whose first element is message, pmessage, smessage, subscribe,
 * unsubscribe, psubscribe, punsubscribe (ssubscribe, sunsubscribe).
 * frame/len: one whole RESP value, valid during the call only; status 0.
 * A command written by rn_hold_write that the server refused (an ACL's
 * -NOPERM, say): frame is the error reply, status RN_EREPLY; the
 * connection stays. When the connection is lost (or the pool closes it)
 * cb fires once more with frame NULL and status the error, and never
 * again; after rn_hold_release it never fires. */
typedef void (*rn_push_cb)(rn_hold_t *hold, void *data, const char *frame,
                           size_t len, int status);
/* Turns the granted hold into a subscriber: from now on those frames go
 * to cb in the order read, the connection keeps its heartbeat (PING is
 * allowed in subscribe mode, and its answer is recognised) so a dead peer
 * is detected, and rn_hold_release always closes the connection. Returns
 * 0, UV_EINVAL (not resp, cb NULL, already a subscriber, released), or the
 * error that ended the held connection. */
int rn_hold_subscribe(rn_hold_t *hold, rn_push_cb cb, void *data);
/* Writes frames on the subscriber's connection with no call attached:
 * whole requests, each SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, UNSUBSCRIBE,
 * PUNSUBSCRIBE or SUNSUBSCRIBE naming at least one channel or pattern
 * (one confirmation comes per name: that is how each reply is matched to
 * what it answers). Their confirmations, or the error refusing one, come
 * to the rn_push_cb; the heartbeat judges their silence as a ping's.
 * Returns 0, UV_EINVAL (not a subscriber, frames not whole requests of
 * that kind), RN_EFRAMESIZE, UV_ENOMEM (then none is written), or the
 * error that ended the held connection. */
int rn_hold_write(rn_hold_t *hold, const char *frames, size_t len);
/* Back-pressure for a subscriber whose consumer is behind: pause stops
 * reading its connection at once (frames already read stay unread, also
 * when called from the rn_push_cb: no further frame comes until resumed)
 * and the server's and kernel's buffers hold the rest; resume reads again
 * from the loop, those frames first (never inside the call). While paused
 * the heartbeat neither pings nor judges silence (a ping's answer may sit
 * unread): it looks for the peer's FIN or RST each interval, and
 * TCP keepalive watches; once resumed, silence counts from the resume. A
 * server that closes a subscriber past its own output limit
 * (client-output-buffer-limit pubsub) is seen when its FIN arrives, at
 * the latest once resumed. Both idempotent. Return 0, UV_EINVAL (not a
 * subscriber, released), or the error that ended the held connection. */
int rn_hold_pause(rn_hold_t *hold);
int rn_hold_resume(rn_hold_t *hold);

#ifdef __cplusplus
}
#endif

/* Last, so that either can also be included on its own: each includes
 * this header first. */
#include "resilnet/wire.h"
#include "resilnet/harness.h"
#include "resilnet/tls.h"
#include "resilnet/auth.h"

#endif /* RESILNET_H */

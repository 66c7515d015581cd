/*
 * resilnet/harness.h — tools for test harnesses (docs/harness.md): the
 * fault-injection proxy and child processes.
 *
 * Part of the public API: resilnet.h includes it, and it can be
 * included alone (it includes resilnet.h).
 */
#ifndef RESILNET_HARNESS_H
#define RESILNET_HARNESS_H

#include "../resilnet.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Fault-injection proxy (test harnesses; docs/harness.md)                   */
/*
 * A TCP proxy between clients and one upstream that injects faults while
 * traffic flows. Each accepted connection is paired with a connection to
 * the upstream; bytes flow "up" (client to upstream) and "down" (upstream
 * to client). Faults are added and removed at any time and apply to live
 * connections at once. Every random choice (toxicity, jitter, corrupted
 * bytes, duplicates) comes from the seed, the connection's number (1, 2,
 * ... in accept order) and the direction, so a run replays from its seed.
 * TCP only, IPv4 or IPv6 literals (and "localhost"). On first use the
 * proxy sets SIGPIPE to ignored if it was at its default: it writes to
 * sockets its peers may have reset. */

typedef struct rn_proxy_s rn_proxy_t;

#define RN_PROXY_UP 1u
#define RN_PROXY_DOWN 2u
#define RN_PROXY_BOTH 3u

typedef enum {
  /* data faults, per direction */
  RN_FAULT_LATENCY = 1, /* each chunk waits ms (+ jitter); order is kept */
  RN_FAULT_BANDWIDTH,   /* at most bytes_per_second */
  RN_FAULT_SLICE,       /* chunks cut into slice_bytes, slice_delay ms apart */
  RN_FAULT_CLOSE,       /* after after_bytes or after_ms: close both sides,
                           with FIN or (rst) RST */
  RN_FAULT_HALF_CLOSE,  /* after after_bytes: FIN toward this direction's
                           receiver; later bytes dropped; the other
                           direction flows on */
  RN_FAULT_BLACKHOLE,   /* read and drop everything, FIN included */
  RN_FAULT_STALL,       /* stop reading: the sender's buffers fill up */
  RN_FAULT_CORRUPT,     /* each byte XORed with a random non-zero value
                           with probability rate */
  RN_FAULT_TRUNCATE,    /* pass after_bytes, drop the rest silently */
  RN_FAULT_DUPLICATE,   /* each chunk sent twice with probability rate */
  /* listener faults (direction ignored) */
  RN_FAULT_REFUSE,      /* stop listening: connects are refused */
  RN_FAULT_STOP_ACCEPT, /* listen but accept nothing: the backlog fills,
                           existing connections carry on */
  RN_FAULT_SLOW_ACCEPT, /* each accept waits ms (+ jitter) */
  RN_FAULT_ACCEPT_CLOSE /* accept, then close at once (FIN or rst RST) */
} rn_fault_kind_t;

#define RN_FAULT_UNSET UINT64_MAX

typedef struct rn_fault_options_s {
  rn_fault_kind_t kind;
  unsigned direction;     /* RN_PROXY_UP, _DOWN or _BOTH (BOTH) */
  double toxicity;        /* share of connections it applies to, 0..1 (1);
                             drawn per connection from the seed */
  uint64_t ms;            /* latency, slow_accept: delay (0) */
  uint64_t jitter;        /* ms: uniform in [-jitter, +jitter], or the
                             standard deviation when normal (0) */
  int normal;             /* jitter distribution: 0 uniform, 1 normal */
  uint64_t bytes_per_second; /* bandwidth (> 0) */
  size_t slice_bytes;     /* slice (> 0) */
  uint64_t slice_delay;   /* slice: ms between slices (0) */
  uint64_t after_bytes;   /* close, half_close, truncate: bytes through the
                             fault's directions first (RN_FAULT_UNSET) */
  uint64_t after_ms;      /* close: ms after the fault met the connection
                             (RN_FAULT_UNSET); both unset: at once */
  int rst;                /* close, accept_close: RST instead of FIN */
  double rate;            /* corrupt: per byte; duplicate: per chunk (1) */
} rn_fault_options_t;

/* What the proxy did, for a log. type: "accept", "connect" (upstream
 * connected), "upstream_error", "apply" (a fault met a connection and its
 * toxicity draw chose it), "close" (conn closed with FIN), "reset" (closed
 * with RST), "peer_close", "peer_reset", "eof" (a FIN passed), "blackhole",
 * "truncate", "half_close", "corrupt" (bytes: bytes changed),
 * "duplicate", "stall", "unstall", "refuse", "listen", "listen_error",
 * "accept_delay", "accept_close", "accept_paused", "accept_resumed";
 * with a codec: "request_reset", "request_close", "request_drop",
 * "reply_drop" (a rule acted on a frame; bytes: its size), "frame_error"
 * (status: why the direction no longer parses; its bytes pass as bytes). */
typedef struct rn_proxy_event_s {
  const char *type;   /* static string */
  uint64_t conn;      /* connection number, or 0 */
  uint64_t fault;     /* fault id, or 0 */
  unsigned direction; /* RN_PROXY_UP or _DOWN, or 0 */
  uint64_t bytes;
  int status;         /* an error code, or 0 */
  uint64_t time;      /* loop ms */
} rn_proxy_event_t;

/* Events are delivered on a later loop turn, never from inside the proxy's
 * own work: the callback may add or remove faults or close the proxy. */
typedef void (*rn_proxy_event_cb)(rn_proxy_t *proxy,
                                  const rn_proxy_event_t *event);

typedef struct rn_proxy_options_s {
  void *data;
  const char *listen;   /* "127.0.0.1:0" picks a free port */
  const char *upstream; /* "host:port" */
  uint64_t seed;        /* every random choice derives from it (0) */
  int backlog;          /* 511 */
  rn_proxy_event_cb on_event; /* may be NULL */
  /* The proxied protocol, which per-request rules need to find frames
   * (codec.protocol 0: none, the proxy moves bytes only). With one, each
   * direction goes on a whole frame at a time. */
  rn_codec_options_t codec;
} rn_proxy_options_t;

void rn_proxy_options_init(rn_proxy_options_t *options);
/* Binds and listens. 0, UV_EINVAL (bad or non-literal address, a unix
 * socket, bad codec options), UV_ENOMEM, or the bind/listen error. */
int rn_proxy_new(rn_loop_t *loop, const rn_proxy_options_t *options,
                 rn_proxy_t **out);
void *rn_proxy_data(rn_proxy_t *proxy);
int rn_proxy_address(rn_proxy_t *proxy, char *host, size_t host_size,
                     int *port);
/* Connections open now. */
unsigned rn_proxy_connections(rn_proxy_t *proxy);

/* Defaults for kind: BOTH, toxicity 1, rate 1, the rest 0 or unset. */
void rn_fault_options_init(rn_fault_options_t *options, rn_fault_kind_t kind);
/* Adds a fault; it applies to live connections at once and to later ones.
 * *id (> 0) names it. 0, UV_EINVAL (bad kind, direction or value),
 * UV_ENOMEM, RN_ECLOSED. */
int rn_proxy_fault_add(rn_proxy_t *proxy, const rn_fault_options_t *options,
                       uint64_t *id);
/* Lifts a fault: stalled reads resume, a refused listener listens again on
 * the same port, held accepts proceed. 0 or UV_ENOENT. */
int rn_proxy_fault_remove(rn_proxy_t *proxy, uint64_t id);
void rn_proxy_fault_clear(rn_proxy_t *proxy);

/* Per-request rules: they act on whole frames of the proxy's codec, for
 * the whole proxy (across its connections), in both directions at once:
 * requests are the frames clients send, replies the ones they get (rnp:
 * REQUEST, and REPLY or ERROR; HELLO, PING, PONG and GOAWAY pass
 * uncounted). Each rule counts from when it was added. */
typedef enum {
  RN_RULE_FAIL_REQUEST = 1, /* the n-th request fails */
  RN_RULE_FAIL_FIRST,       /* the next n requests fail */
  RN_RULE_DROP_REPLY        /* every n-th reply is dropped */
} rn_rule_kind_t;

/* What a failed request does; it never reaches the upstream. */
typedef enum {
  RN_RULE_RST = 1, /* the connection is reset, both sides */
  RN_RULE_CLOSE,   /* the connection is closed (FIN), both sides */
  RN_RULE_DROP     /* the request is swallowed; the connection carries on */
} rn_rule_action_t;

typedef struct rn_rule_options_s {
  rn_rule_kind_t kind;
  uint64_t n;              /* which request, how many, every how many (> 0) */
  rn_rule_action_t action; /* fail_request, fail_first (RN_RULE_RST) */
} rn_rule_options_t;

/* Defaults for kind: n 1, action RN_RULE_RST. */
void rn_rule_options_init(rn_rule_options_t *options, rn_rule_kind_t kind);
/* Adds a rule; it sees every frame completed after this call. *id (> 0)
 * comes from the faults' sequence: rn_proxy_fault_remove() and _clear()
 * lift rules too. 0, UV_EINVAL (a bad value, or the proxy has no codec),
 * UV_ENOMEM, RN_ECLOSED. */
int rn_proxy_rule_add(rn_proxy_t *proxy, const rn_rule_options_t *options,
                      uint64_t *id);

/* Resets (RST) every live connection, both sides. */
void rn_proxy_reset_all(rn_proxy_t *proxy);

typedef void (*rn_proxy_close_cb)(rn_proxy_t *proxy);
/* Stops listening and closes every connection (FIN). Events still pending
 * are delivered, then cb (may be NULL); the proxy is freed after it
 * returns. A second call is ignored. */
void rn_proxy_close(rn_proxy_t *proxy, rn_proxy_close_cb cb);

/* ------------------------------------------------------------------------ */
/* Child processes (test harnesses; docs/harness.md)                          */
/*
 * A child runs in a process group of its own (it leads it), so signals
 * reach a whole shell pipeline and closing kills every process in it. A
 * child is never left behind: rn_process_close() kills the group with
 * SIGKILL if the child has not exited, and waits for it. */

typedef struct rn_process_s rn_process_t;

typedef enum {
  RN_STDIO_INHERIT = 0, /* the parent's stream */
  RN_STDIO_IGNORE,      /* /dev/null */
  RN_STDIO_FILE,        /* appended to path */
  RN_STDIO_CALLBACK     /* chunks to on_output */
} rn_stdio_mode_t;

/* A chunk of the child's output: fd 1 or 2. data is valid only during the
 * callback. */
typedef void (*rn_process_output_cb)(rn_process_t *process, int fd,
                                     const char *data, size_t len);
/* Fires once: the child exited (term_signal 0, exit_status its code) or a
 * signal ended it, and all its output was delivered. */
typedef void (*rn_process_exit_cb)(rn_process_t *process,
                                   int64_t exit_status, int term_signal);

typedef struct rn_process_options_s {
  void *data;
  const char *file;        /* looked up in PATH if it has no slash */
  char **args;             /* NULL-terminated; args[0] is the program name */
  char **env;              /* NULL-terminated "K=V"; NULL: the parent's */
  const char *cwd;         /* NULL: the parent's */
  rn_stdio_mode_t stdout_mode;
  const char *stdout_path;
  rn_stdio_mode_t stderr_mode;
  const char *stderr_path;
  rn_process_output_cb on_output;
  rn_process_exit_cb on_exit;
} rn_process_options_t;

void rn_process_options_init(rn_process_options_t *options);
/* Starts the child. 0, or an error with no child left: UV_ENOENT (no such
 * program), UV_EACCES, UV_EINVAL, UV_ENOMEM, a file's open error. */
int rn_process_spawn(rn_loop_t *loop, const rn_process_options_t *options,
                     rn_process_t **out);
void *rn_process_data(rn_process_t *process);
int rn_process_pid(rn_process_t *process);
/* 1 once the child exited (on_exit may still be waiting for output). */
int rn_process_exited(rn_process_t *process);
/* Sends signum to the child's process group. 0, UV_ESRCH once it exited,
 * or kill(2)'s error (UV_EINVAL for a bad signal). */
int rn_process_kill(rn_process_t *process, int signum);

typedef void (*rn_process_close_cb)(rn_process_t *process);
/* Kills the group (SIGKILL) unless the child already exited, waits for it,
 * closes every handle; on_exit fires first if it had not, then cb (may be
 * NULL); the process is freed after cb returns. A second call is ignored. */
void rn_process_close(rn_process_t *process, rn_process_close_cb cb);

#ifdef __cplusplus
}
#endif
#endif /* RESILNET_HARNESS_H */

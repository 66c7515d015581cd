/* Internals shared by the fault-injection proxy's files: proxy.c moves
 * bytes between connection pairs and runs the listener; proxy_fault.c
 * decides what the faults do to them; proxy_rule.c cuts each direction
 * into frames (when the proxy knows the protocol) and applies the
 * per-request rules before the faults see the bytes. */
#ifndef RN_PROXY_H
#define RN_PROXY_H

#include "internal.h"

typedef struct rn_proxy_conn_s rn_proxy_conn_t;
typedef struct rn_proxy_fault_s rn_proxy_fault_t;
typedef struct rn_proxy_rule_s rn_proxy_rule_t;

/* Bytes waiting to be written, released at `due` (loop ms). The write
 * request lives in the piece, so one allocation covers both. */
typedef struct rn_proxy_piece_s {
  rn_list_t node;
  uv_write_t req;
  struct rn_proxy_pipe_s *pipe;
  uint64_t due;
  size_t len;
  char data[1];
} rn_proxy_piece_t;

/* One direction of a connection pair. */
typedef struct rn_proxy_pipe_s {
  rn_proxy_conn_t *conn;
  unsigned dir;         /* RN_PROXY_UP or RN_PROXY_DOWN */
  uv_tcp_t *src;
  uv_tcp_t *dst;
  rn_list_t queue;      /* pieces not yet handed to libuv, in due order */
  rn_timer_t timer;     /* the head piece's release */
  size_t held;          /* bytes queued or being written */
  unsigned writes;      /* writes in flight */
  uint64_t read_bytes;  /* bytes read from src */
  double cursor;        /* ms: when the last scheduled piece goes out */
  uint64_t rng;         /* per connection and direction, from the seed */
  uint64_t close_fault; /* the close fault that set close_after */
  uv_shutdown_t shutdown_req;
  rn_buf_t partial;     /* with a codec: a frame not yet complete */
  rn_frame_scan_t scan; /* how far the frame at partial's head was framed */
  unsigned reading : 1;
  unsigned eof : 1;       /* src sent its FIN */
  unsigned shut : 1;      /* dst's write side shut (or shutting) */
  unsigned shut_done : 1; /* that shutdown completed */
  unsigned half_closed : 1; /* by a half_close fault: drop what follows */
  unsigned stalled : 1;   /* last known stall state, for events */
  unsigned close_after : 2; /* close the pair once flushed: 1 FIN, 2 RST */
  unsigned unframed : 1;  /* did not parse: bytes only from here on */
} rn_proxy_pipe_t;

/* A fault as it meets one connection. */
typedef struct rn_proxy_link_s {
  rn_proxy_fault_t *fault;
  int applies;     /* the toxicity draw chose this connection */
  uint64_t count;  /* bytes through the fault's directions */
  uint64_t start;  /* loop ms the fault met the connection */
  int fired;       /* a one-shot effect happened (half_close) */
} rn_proxy_link_t;

struct rn_proxy_conn_s {
  rn_list_t node;
  rn_proxy_t *proxy;
  uint64_t id;
  uv_tcp_t client;
  uv_tcp_t upstream;
  uv_connect_t connect_req;
  rn_proxy_pipe_t up;
  rn_proxy_pipe_t down;
  rn_proxy_link_t *links;
  size_t nlinks;
  size_t caplinks;
  rn_timer_t close_timer; /* close faults with after_ms */
  unsigned handles;       /* uv handles not yet closed */
  unsigned connected : 1;
  unsigned closing : 1;
};

struct rn_proxy_fault_s {
  rn_list_t node;
  uint64_t id;
  rn_fault_options_t o;
};

/* A per-request rule: one per proxy, not per connection, since it counts
 * the frames of every connection. */
struct rn_proxy_rule_s {
  rn_list_t node;
  uint64_t id;
  rn_rule_options_t o;
  uint64_t seen; /* requests (or replies) since the rule was added */
};

struct rn_proxy_s {
  void *data;
  rn_loop_t *loop;
  rn_proxy_options_t options;
  struct sockaddr_storage listen_addr; /* the bound address, port fixed */
  struct sockaddr_storage upstream_addr;
  uv_tcp_t *listener;    /* NULL while refused */
  unsigned listeners;    /* listener handles not yet closed */
  int accept_held;       /* libuv holds an accepted socket for us */
  int accept_waited;     /* the held socket served its slow_accept delay */
  int accept_paused;     /* last known stop_accept state, for events */
  rn_timer_t accept_timer;
  rn_list_t conns;
  unsigned conn_count;
  uint64_t next_conn;
  rn_list_t faults;
  uint64_t next_fault;   /* fault and rule ids */
  rn_list_t rules;
  rn_codec_t codec;      /* valid when framed */
  int framed;            /* a codec was given: pipes cut frames */
  uint64_t rng;          /* listener-level draws */
  char readbuf[65536];   /* every read is consumed before the next one */
  rn_buf_t events;       /* rn_proxy_event_t not yet delivered */
  rn_timer_t event_timer;
  rn_timer_t finish_timer;
  rn_proxy_close_cb close_cb;
  unsigned closing : 1;
  unsigned finishing : 1;
};

/* proxy.c */
void rn__proxy_event(rn_proxy_t *proxy, const char *type, uint64_t conn,
                     uint64_t fault, unsigned dir, uint64_t bytes,
                     int status);
/* Queues len bytes on the pipe: released after delay_ms, paced to
 * bytes_per_second (0: no cap), cut into slices of slice_bytes (0: whole)
 * slice_delay ms apart. 0 or UV_ENOMEM. */
int rn__proxy_pipe_queue(rn_proxy_pipe_t *pipe, const char *data, size_t len,
                         double delay_ms, uint64_t bytes_per_second,
                         size_t slice_bytes, uint64_t slice_delay);
/* Re-evaluates reading, shutdown and close after faults changed. */
void rn__proxy_pipe_update(rn_proxy_pipe_t *pipe);
/* Shuts dst's write side (FIN toward dst). */
void rn__proxy_pipe_shutdown(rn_proxy_pipe_t *pipe);
/* Closes both sides; rst: with RST. fault: the fault that did it, or 0. */
void rn__proxy_conn_close(rn_proxy_conn_t *conn, int rst, uint64_t fault);
void rn__proxy_update_listener(rn_proxy_t *proxy);

/* proxy_fault.c */
uint64_t rn__proxy_mix(uint64_t x);
double rn__proxy_unit(uint64_t *state);
int rn__proxy_conn_attach_all(rn_proxy_conn_t *conn);
/* Applies the faults to bytes just read (data may be changed in place) and
 * queues what is left. */
void rn__proxy_pipe_data(rn_proxy_pipe_t *pipe, char *data, size_t len);
int rn__proxy_pipe_stalled(const rn_proxy_pipe_t *pipe);
int rn__proxy_pipe_blackholed(const rn_proxy_pipe_t *pipe);
/* Restarts the connection's after_ms close timer for its earliest due. */
void rn__proxy_conn_arm_close(rn_proxy_conn_t *conn);
void rn__proxy_conn_free_links(rn_proxy_conn_t *conn);
/* The first fault of kind that applies: to the next connection to be
 * accepted (listener faults) or NULL. */
rn_proxy_fault_t *rn__proxy_find(rn_proxy_t *proxy, rn_fault_kind_t kind);
/* The toxicity draw of fault for connection number conn. */
int rn__proxy_toxic(rn_proxy_t *proxy, const rn_proxy_fault_t *fault,
                    uint64_t conn);
/* A delay of ms +/- jitter (uniform or normal), never negative. */
double rn__proxy_delay(const rn_fault_options_t *o, uint64_t *rng);

/* proxy_rule.c */
/* Bytes just read: cut into frames and judged by the rules when the proxy
 * has a codec, then handed to the faults (rn__proxy_pipe_data). */
void rn__proxy_pipe_read(rn_proxy_pipe_t *pipe, char *data, size_t len);
/* The source sent its FIN: an incomplete frame held back goes on as the
 * bytes it is. */
void rn__proxy_pipe_read_end(rn_proxy_pipe_t *pipe);
void rn__proxy_pipe_free_frames(rn_proxy_pipe_t *pipe);
/* Removes rule id: 0, or UV_ENOENT if no rule has it. */
int rn__proxy_rule_remove(rn_proxy_t *proxy, uint64_t id);
void rn__proxy_rule_clear(rn_proxy_t *proxy);

#endif /* RN_PROXY_H */

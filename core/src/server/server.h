/* Internal structures of the server side: server.c (accept, read, write,
 * backpressure, closing), server/rnp.c (rnp frames, slots, the queue,
 * GOAWAY) and dedupe.c (keyed requests run once).
 *
 * Ownership: a request belongs to its connection's `requests` list until
 * its connection closes, and to the server's count `held` until it is
 * released; an rnp request may also sit on the server's queue or on a
 * dedupe entry's waiters (`wait`). Connections and the server are freed
 * only from close callbacks, once nothing refers to them. */
#ifndef RN_SERVER_H
#define RN_SERVER_H

#include "internal.h"
#include "tls.h"

/* After our FIN, how long the client gets to close its side. Closing with
 * unread bytes would send RST, and an RST can destroy the last frames we
 * wrote (GOAWAY, the PROTOCOL error) before the client reads them. */
#define RN_SERVER_LINGER_MS 2000

typedef struct rn_server_conn_s rn_server_conn_t;
typedef struct rn__dedupe_s rn__dedupe_t;
typedef struct rn__dedupe_entry_s rn__dedupe_entry_t;
typedef struct rn__server_auth_s rn__server_auth_t;

/* An rnp answer to send for a request: a REPLY (type RN_RNP_REPLY) or an
 * ERROR with code, flags and retry_after. */
typedef struct rn__answer_s {
  unsigned type;
  unsigned code;
  unsigned flags;
  uint64_t retry_after;
  const char *body;
  size_t len;
} rn__answer_t;

struct rn_server_s {
  void *data;
  rn_loop_t *loop;
  rn_codec_t codec;
  rn_server_options_t options;
  rn_endpoint_t address;
  rn_stream_handle_t listener;
  rn_list_t conns;
  unsigned conn_count;
  unsigned active;   /* requests holding a slot (resp/line/length: every
                        request handed out and not yet released) */
  unsigned held;     /* requests allocated and not yet released */
  unsigned paused;   /* connections holding frames back for max_concurrent */
  rn_list_t queue;   /* rnp: requests waiting for a slot, FIFO */
  rn_list_t joined;  /* rnp: duplicates with a deadline waiting for the
                        request that holds their key */
  unsigned queued;
  rn__dedupe_t *dedupe; /* rnp with dedupe, else NULL */
  rn__server_auth_t *auth; /* rnp with options.auth, else NULL */
  char incarnation[RN_RNP_INCARNATION_SIZE];
  /* rnp with dedupe: the id of the store its keys live in, announced in
   * its HELLO (DEDUPE): the store's own, or the incarnation for a store
   * whose keys die with the process. */
  char store_id[RN_RNP_DEDUPE_SIZE];
  rn_timer_t resume_timer;
  rn_timer_t finish_timer;
  rn_timer_t drain_timer;
  rn_timer_t expire_timer; /* rnp: the earliest deadline of a request not
                              started: queued, or joined to its key */
  rn_buf_t inline_args;    /* resp: an inline command being converted */
  rn_buf_t inline_out;
  rn_server_close_cb close_cb;
  rn_server_stats_t stats;
  rn__tls_ctx_t *tls;  /* NULL: plaintext; swapped by rn_server_reload_tls */
  rn_buf_t tls_plain;  /* each read's plaintext, before it joins an rbuf */
  /* Every read lands here first; a connection keeps only the bytes of
   * frames it could not hand out yet (rbuf), so an idle or dribbling
   * connection holds no read buffer. */
  char *scratch;
  size_t buffered_in;  /* sum of the connections' rbuf.cap */
  size_t buffered_out; /* sum of the connections' backlogs */
  unsigned closing : 1;   /* rn_server_close: everything goes now */
  unsigned draining : 1;  /* rn_server_drain: finishing what was accepted */
  unsigned listener_open : 1;
  unsigned listener_closing : 1;
  unsigned finishing : 1;
  unsigned drain_over : 1; /* the drain ran out: finishing connections
                              close once written, or at the linger */
};

struct rn_server_conn_s {
  rn_list_t node;
  rn_server_t *server;
  rn_stream_handle_t h;
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
  rn_timer_t timer;   /* idle_timeout and frame_timeout, then the linger
                         after a shutdown or a refusal */
  uint64_t timer_due;   /* loop ms the timer fires at, if active */
  uint64_t last_frame;  /* loop ms: accepted, or the last frame completed */
  uint64_t frame_start; /* loop ms an unfinished frame began; 0: none */
  size_t accounted_in;  /* rbuf.cap as counted in server->buffered_in */
  size_t accounted_out; /* backlog as counted in server->buffered_out */
  size_t pending_out;   /* resp/line/length: replies made, waiting for an
                           earlier request's */
  unsigned handling;    /* resp/line/length: requests handed out and not
                           yet released (max_pipeline) */
  uint64_t write_since; /* loop ms the write in flight last made
                           progress (write_timeout); 0: none */
  size_t write_queued;  /* its bytes the socket had not taken then */
  rn_frame_scan_t scan; /* resp/line/length: the place reached in the
                           partial frame at rbuf's head */
  union {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
  } peer; /* TCP: the client's address, taken once at accept */
  rn_buf_t rbuf;  /* bytes read (TLS: decrypted), not yet handed out */
  rn_buf_t out;  /* replies ready, waiting for the write in flight */
  rn_buf_t wbuf; /* the write in flight (TLS: encrypted) */
  rn__tls_t *tls; /* the server's TLS session, or NULL */
  rn_list_t requests; /* resp/line/length: arrival order, until their reply
                         is queued; rnp: every request not yet answered */
  /* rnp */
  uint64_t last_id;       /* highest id the client used */
  uint64_t last_accepted; /* highest REQUEST id that will be answered */
  size_t peer_max_frame;  /* the client's MAX_FRAME */
  char *identity;         /* with auth: who its HELLO proved it is (NUL-
                             terminated); NULL before */
  size_t identity_len;
  /* resp */
  size_t inline_scanned;  /* bytes of an inline command without its end */
  unsigned writing : 1;
  unsigned reading : 1;
  unsigned closing : 1;   /* uv_close asked for */
  unsigned eof : 1;
  unsigned paused : 1;
  unsigned hello : 1;     /* rnp: handshake done */
  unsigned goaway : 1;    /* rnp: GOAWAY sent; later requests discarded */
  unsigned finishing : 1; /* no more requests: close once all is written */
  unsigned shut : 1;      /* uv_shutdown asked for */
  unsigned held_back : 1; /* frames left in rbuf for backpressure */
  unsigned broken : 1;    /* rnp: protocol error; everything read is
                             discarded */
  unsigned refused : 1;   /* a limit refused it: everything read is
                             discarded, and it closes within the linger */
  unsigned tls_ready : 1; /* TLS: the handshake completed */
};

struct rn_request_s {
  rn_list_t node;   /* conn->requests */
  rn_list_t wait;   /* server->queue, or a dedupe entry's waiters */
  rn_list_t joined; /* server->joined, while waiting with a deadline */
  rn_server_t *server;
  rn_server_conn_t *conn; /* NULL once the connection is gone */
  char *reply;      /* resp/line/length: the reply, until its turn */
  size_t reply_len;
  /* rnp */
  uint64_t id;
  uint64_t deadline; /* loop ms, if has_deadline */
  rn__dedupe_entry_t *entry; /* the dedupe entry it owns or waits on */
  char *key;
  size_t key_len;
  /* What dedupe knows the request by: the key, scoped by its
   * connection's identity on a server with auth (resilnet/auth.h). */
  char *dedupe_key;
  size_t dedupe_key_len;
  char *body;
  size_t body_len;
  unsigned replied : 1;
  unsigned has_deadline : 1;
  unsigned idempotent : 1;
  unsigned slot : 1;    /* holds one of max_concurrent */
  unsigned queued : 1;  /* on server->queue */
  unsigned waiting : 1; /* on entry's waiters */
  unsigned owner : 1;   /* entry's original */
};

/* server.c */
void rn__server_conn_write(rn_server_conn_t *conn);
void rn__server_conn_close(rn_server_conn_t *conn);
/* No more requests on conn: close it once its requests are answered and
 * written (a FIN, then waiting for the client's FIN, bounded). */
void rn__server_conn_finish(rn_server_conn_t *conn);
void rn__server_conn_update_reading(rn_server_conn_t *conn);
/* Closes a connection that is done, or sends our FIN when finishing and
 * all is written. 1 if it is closing or shut (nothing more to do). */
int rn__server_conn_settle(rn_server_conn_t *conn);
size_t rn__server_conn_backlog(const rn_server_conn_t *conn);
/* 1 when conn must stop taking requests for its replies (its own queued
 * past the high-water mark, the server's past output_budget, or
 * max_pipeline of its requests being handled): then held_back is set,
 * reading stops, and the frames left in rbuf are processed once its
 * writes drained or a request of it was answered. Checked before each
 * frame. */
int rn__server_conn_hold(rn_server_conn_t *conn);
/* After a parse: `frames` were handed out, `partial` says an unfinished
 * frame is left (its first byte starts the frame timeout; completed
 * frames are activity for the idle timeout). */
void rn__server_conn_parsed(rn_server_conn_t *conn, size_t frames,
                            int partial);
/* A limit refuses conn (see rn_server_options_t): stats and event type,
 * the reason (resp: the -ERR text; rnp: the GOAWAY text). */
void rn__server_conn_refuse(rn_server_conn_t *conn,
                            rn_server_event_type_t type, const char *why);
/* After conn's output grew: counts it, and past output_budget closes the
 * connections with the largest backlogs (conn may be one of them). */
void rn__server_conn_output(rn_server_conn_t *conn);
void rn__server_request_release(rn_request_t *req);
void rn__server_event(rn_server_t *server, rn_server_event_type_t type,
                      uint64_t id, int error);
/* The same with the event's detail text (valid during the callback). */
void rn__server_event_detail(rn_server_t *server, rn_server_event_type_t type,
                             uint64_t id, int error, const char *detail);
void rn__server_maybe_finish(rn_server_t *server);

/* A protocol error on conn (error: RN_EBADFRAME, ...): counted, reported,
 * and the connection closes once what came before is answered; what the
 * client sends meanwhile is discarded. The caller sent any error frame. */
void rn__server_conn_broken(rn_server_conn_t *conn, int error);
/* The same without the protocol error's stat and event: nothing more is
 * read from conn; it closes once what it is owed is written. */
void rn__server_conn_stop_input(rn_server_conn_t *conn);

/* server/resp.c */
/* The next request of a resp client at data: 1 (f->size bytes; *body and
 * f->body_len the command as an array of bulk strings, or *body NULL when
 * there is nothing to run), 0 (need more), UV_E2BIG (an inline command
 * of more than max_elements arguments), or a protocol error with the
 * reply text in why ("ERR Protocol error: ..."). */
int rn__server_resp_frame(rn_server_conn_t *conn, const char *data,
                          size_t len, rn_frame_t *f, const char **body,
                          char *why, size_t why_size);

/* server/rnp.c */
int rn__server_rnp_init(rn_server_t *server);
void rn__server_rnp_process(rn_server_conn_t *conn);
/* Sends the answer for req (if its connection is still there) and
 * releases req. 0 or UV_ENOMEM. */
int rn__server_rnp_answer(rn_request_t *req, const rn__answer_t *answer);
/* Runs the request's handler (it holds a slot; dedupe said go). */
void rn__server_rnp_run(rn_request_t *req);
/* Hands free slots to queued requests. */
void rn__server_rnp_dequeue(rn_server_t *server);
/* req, a duplicate with a deadline, now waits for its key's original:
 * refused DEADLINE when its deadline passes first, as a queued one. */
void rn__server_rnp_joined(rn_request_t *req);
/* The drain ran out: requests that never started are refused SHUTDOWN
 * (not executed), running ones lose their connection, and connections
 * close once those refusals are written. */
void rn__server_rnp_drain_over(rn_server_t *server);
/* GOAWAY on every connection; requests above their last ids discarded. */
void rn__server_rnp_goaway(rn_server_t *server);
/* GOAWAY on one connection (reason: its text), then finish it. */
void rn__server_rnp_goaway_conn(rn_server_conn_t *conn, const char *reason);
/* Connection gone: drops its queued and waiting requests. */
void rn__server_rnp_conn_closed(rn_server_conn_t *conn);
int rn__server_rnp_reply(rn_request_t *req, const char *payload,
                         size_t len);
int rn__server_rnp_fail(rn_request_t *req, unsigned code, const char *msg,
                        size_t len, uint64_t retry_after);

/* server/tls.c (a server with options.tls) */
/* The server's context, from the caller's options. */
int rn__server_tls_init(rn_server_t *server, const rn_tls_options_t *o);
/* A new connection's session. 0 or UV_ENOMEM. */
int rn__server_tls_start(rn_server_conn_t *conn);
/* Ciphertext read: plaintext appended to rbuf (the caller processes it),
 * the handshake timed (see rn__server_conn_parsed) and its answers
 * written. The RN_TLS_GOT_* bits, or an error after which conn is closed
 * or closing (a TLS failure is counted and reported). */
int rn__server_tls_read(rn_server_conn_t *conn, const char *data,
                        size_t len);
/* Encrypts conn->out (and what the session has to say) into conn->wbuf.
 * 0; UV_EAGAIN (handshake not done, out kept); or an error, and conn is
 * closed. */
int rn__server_tls_seal(rn_server_conn_t *conn);
/* Orderly end: close_notify written ahead of our FIN. */
void rn__server_tls_close_notify(rn_server_conn_t *conn);
/* 1 while conn's TLS handshake is not complete (nothing can be said). */
int rn__server_tls_handshaking(const rn_server_conn_t *conn);
void rn__server_tls_conn_free(rn_server_conn_t *conn);

/* server/auth.c (a server with options.auth) */
/* The server's copy of the options (tokens wiped when freed). 0,
 * UV_EINVAL, UV_ENOMEM. */
int rn__server_auth_new(const rn_server_options_t *o, rn__server_auth_t **out);
void rn__server_auth_free(rn__server_auth_t *auth); /* NULL is fine */
/* Decides conn on its HELLO: 0 (conn->identity set), RN_EAUTH (*why: a
 * static reason for the event, never the token) or UV_ENOMEM. */
int rn__server_auth_check(rn_server_conn_t *conn, const rn_rnp_frame_t *hello,
                          const char **why);

/* dedupe.c */
int rn__dedupe_new(rn_server_t *server, rn__dedupe_t **out);
/* req has a key and a slot: runs it, joins its original, or replays. */
void rn__dedupe_begin(rn__dedupe_t *d, rn_request_t *req);
/* req (an original) is answered: waiters get the answer, the store
 * records it (or forgets the claim when it is not-executed). Does not
 * release req. */
void rn__dedupe_end(rn__dedupe_t *d, rn_request_t *req,
                    const rn__answer_t *answer);
/* A waiter leaves (its connection closed). */
void rn__dedupe_leave(rn_request_t *req);
/* 1 while store operations are pending. */
int rn__dedupe_busy(const rn__dedupe_t *d);
/* Closes the store once nothing is pending; frees d. */
void rn__dedupe_free(rn__dedupe_t *d);

/* 1 for the error codes that guarantee nothing ran. */
static inline int rn__rnp_not_executed(unsigned code) {
  return code == RN_RNP_ERR_OVERLOADED || code == RN_RNP_ERR_DEADLINE ||
         code == RN_RNP_ERR_SHUTDOWN || code == RN_RNP_ERR_BAD_REQUEST;
}

#endif /* RN_SERVER_H */

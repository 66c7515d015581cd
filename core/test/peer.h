/* The scripted peer of the C tests: a TCP listener on loopback whose
 * connections do what the test's script says with the bytes they get, for
 * what resilnet's own server would never do (answer out of turn, hold a
 * reply, go silent, send garbage, close or reset at a chosen moment).
 *
 *   test_peer_t peer;
 *   test_peer_start(&peer, uv, test_peer_answer_lines);
 *   ... a pool on peer.endpoint ...
 *   RUN_UNTIL(uv, test_peer_holding(&peer) == 1, 2000);
 *   test_peer_release(&peer);
 *   ...
 *   test_peer_stop(&peer);   (before the loop is closed)
 *
 * A script runs after each read with the bytes not yet consumed in c->in
 * (it consumes what it has handled; the last c->fresh of them came with
 * this read). Three kinds come with the peer: the line peer
 * (test_peer_answer_lines), the canned reply (test_peer_reply_each_read,
 * test_peer_reply_each_frame) and the echo (test_peer_echo); a test with
 * a protocol of its own (rnp) writes its script on test_peer_send,
 * test_peer_close and test_peer_reset. What a connection does when the
 * client's side ends (EOF or a reset) is the peer's on_end. */
#ifndef RN_TEST_PEER_H
#define RN_TEST_PEER_H

#include "resilnet.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define TEST_PEER_CONNS 32

typedef struct test_peer_s test_peer_t;
typedef struct test_peer_conn_s test_peer_conn_t;

typedef void (*test_peer_script_fn)(test_peer_conn_t *c);

/* What a connection does when its client's side ends. */
typedef enum {
  TEST_PEER_END_CLOSE,    /* close it too (the default) */
  TEST_PEER_END_SHUTDOWN, /* stop reading, send a FIN after what is queued
                             (an EOF only; a reset stops reading) */
  TEST_PEER_END_KEEP      /* stop reading, keep it open until stopped */
} test_peer_end_t;

struct test_peer_conn_s {
  uv_tcp_t tcp;
  test_peer_t *peer;
  int open;             /* not closed here yet (close, reset, on_end) */
  int closed_by_client; /* an EOF or a read error came (see on_end) */
  rn_buf_t in;          /* received, not yet consumed by the script */
  size_t fresh;         /* the bytes at the end of in from the last read */
  unsigned reads;       /* reads with data */
  unsigned frames;      /* frames received (test_peer_reply_each_frame) */
  uint64_t accepted_at; /* loop ms */
  /* The line peer's: */
  unsigned lines;       /* lines received */
  unsigned held;        /* lines not answered yet */
  unsigned marks;       /* lines "mark" received */
  size_t line_len;      /* bytes of the line being read */
  char line[8];
  void *data;           /* the test's */
};

struct test_peer_s {
  uv_tcp_t listener;
  test_peer_script_fn script;
  /* Called for each accepted connection before its first read, or NULL. */
  void (*on_accept)(test_peer_conn_t *c);
  test_peer_end_t on_end;
  test_peer_conn_t conns[TEST_PEER_CONNS];
  int count;            /* connections accepted */
  unsigned reads;       /* reads with data, all connections */
  uint64_t bytes;       /* bytes received, all connections */
  int eofs;             /* connections that read an EOF */
  int errors;           /* connections whose read failed (a reset) */
  int port;
  char endpoint[64];    /* "127.0.0.1:<port>" */
  /* test_peer_reply_each_read's script: reply on every read, first_reply
   * (if set) on a connection's first. Not copied. */
  const char *reply;
  size_t reply_len;
  const char *first_reply;
  /* test_peer_reply_each_frame's framing (not copied). */
  rn_codec_t *codec;
  /* test_peer_answer_lines' variants: */
  int never_hold;       /* answer "hold" too */
  int answer_first_only;/* answer a connection's first line, then nothing */
  int stop_reading;     /* answer the first bytes with one "ok", read no more */
  void *data;           /* the test's */
};

/* Listens on 127.0.0.1 (a free port) until test_peer_stop. The peer is
 * zeroed first: set its fields after this call. */
void test_peer_start(test_peer_t *p, uv_loop_t *uv, test_peer_script_fn script);

/* Closes the listener and every connection still open (FIN). */
void test_peer_stop(test_peer_t *p);

/* Writes len bytes (copied) if the connection is open and writable (not
 * shut down). */
void test_peer_send(test_peer_conn_t *c, const void *bytes, size_t len);

/* Closes a connection: the FIN leaves now. */
void test_peer_close(test_peer_conn_t *c);

/* Closes a connection with a reset (RST). */
void test_peer_reset(test_peer_conn_t *c);

/* The canned reply: writes p->reply back for every read. */
void test_peer_reply_each_read(test_peer_conn_t *c);

/* The canned reply once per whole frame of p->codec (a request and a
 * heartbeat ping that arrive in one read get a reply each). */
void test_peer_reply_each_frame(test_peer_conn_t *c);

/* The echo: writes back every byte as it came. */
void test_peer_echo(test_peer_conn_t *c);

/* The line peer: answers "ok\n" to every line, in order, except that a line
 * "hold" (and every line after it on that connection) waits for
 * test_peer_release. See never_hold, answer_first_only, stop_reading. */
void test_peer_answer_lines(test_peer_conn_t *c);

/* Lines held, all connections. */
unsigned test_peer_holding(const test_peer_t *p);

/* Answers every held line. */
void test_peer_release(test_peer_t *p);

/* Initializes c as protocol's codec with the default limits (a script's
 * way to cut what it read into frames). */
void test_codec_init(rn_codec_t *c, rn_protocol_t protocol);

/* 1 if word occurs in the len bytes at data (what a peer or a client
 * read), else 0. */
int test_contains(const char *data, size_t len, const char *word);

#endif /* RN_TEST_PEER_H */

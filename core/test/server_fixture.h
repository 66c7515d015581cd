/* The server fixture of the C tests: resilnet's server on a free loopback
 * port, with the handlers tests use most. */
#ifndef RN_TEST_SERVER_FIXTURE_H
#define RN_TEST_SERVER_FIXTURE_H

#include "resilnet.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Starts resilnet's server for protocol on listen ("127.0.0.1:0" for a
 * free port, or an endpoint to listen on again after a restart) and writes
 * its "host:port" into endpoint (size >= 96). */
rn_server_t *test_start_server(rn_loop_t *loop, rn_protocol_t protocol,
                               rn_request_cb on_request, const char *listen,
                               char *endpoint);

/* Answers req with body, framed by its server's codec. */
void test_reply(rn_request_t *req, const char *body, size_t len);

/* Answers req with text as a RESP bulk string. */
void test_reply_bulk(rn_request_t *req, const char *text, size_t len);

/* Answers every request with its own body (test_reply). */
void test_echo(rn_server_t *server, rn_request_t *req, const char *body,
               size_t len);

/* Replies with the request's body as a RESP bulk string. */
void test_echo_bulk(rn_server_t *server, rn_request_t *req, const char *body,
                    size_t len);

/* A server driven from a raw client (the server tests): its handler holds
 * every request for the test to answer, or answers at once (mode); it
 * counts its events and closes. */
#define TEST_HELD_MAX 1024

typedef enum {
  TEST_SERVER_HOLD = 0, /* keep each request in held[] (its body in bodies) */
  TEST_SERVER_ECHO = 1, /* reply with the body at once */
  TEST_SERVER_BIG = 2   /* reply with 64 KiB at once */
} test_server_mode_t;

typedef struct {
  rn_loop_t *loop;
  uv_loop_t *uv;
  rn_server_t *server;
  int port;
  int mode; /* a test_server_mode_t */
  rn_request_t *held[TEST_HELD_MAX];
  char bodies[TEST_HELD_MAX][32];
  size_t nheld;
  unsigned handled; /* requests handed to the handler */
  unsigned events[16];
  uint64_t last_event_id;
  int closed; /* close callbacks run (test_server_on_closed) */
} test_server_t;

/* Zeroes t and starts a server on a free loopback port with o, on loop (or
 * a new loop when NULL). o's listen and data are set here, and its
 * on_request and on_event if unset (to test_server_on_request and
 * test_server_on_event). */
void test_server_start(test_server_t *t, rn_loop_t *loop,
                       rn_server_options_t *o);

/* Closes the server unless it closed, waits for its close callback (once)
 * and frees the loop. */
void test_server_finish(test_server_t *t);

/* The handlers test_server_start installs (the server's data is t). */
void test_server_on_request(rn_server_t *server, rn_request_t *req,
                            const char *body, size_t len);
void test_server_on_event(rn_server_t *server, const rn_server_event_t *ev);

/* A close (or drain) callback counting into t->closed. */
void test_server_on_closed(rn_server_t *server);

#endif /* RN_TEST_SERVER_FIXTURE_H */

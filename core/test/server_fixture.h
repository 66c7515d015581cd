/* The server fixture of the C tests: resilnet's server on a free loopback
 * port, with the handlers tests use most. */
#ifndef RN_TEST_SERVER_FIXTURE_H
#define RN_TEST_SERVER_FIXTURE_H

#include "resilnet.h"

#include <stddef.h>

/* Starts resilnet's server for protocol on listen ("127.0.0.1:0" for a
 * free port, or an endpoint to listen on again after a restart) and writes
 * its "host:port" into endpoint (size >= 96). */
rn_server_t *test_start_server(rn_loop_t *loop, rn_protocol_t protocol,
                               rn_request_cb on_request, const char *listen,
                               char *endpoint);

/* Answers req with body, framed by its server's codec. */
void test_reply(rn_request_t *req, const char *body, size_t len);

/* Answers every request with its own body (test_reply). */
void test_echo(rn_server_t *server, rn_request_t *req, const char *body,
               size_t len);

/* Replies with the request's body as a RESP bulk string. */
void test_echo_bulk(rn_server_t *server, rn_request_t *req, const char *body,
                    size_t len);

#endif /* RN_TEST_SERVER_FIXTURE_H */

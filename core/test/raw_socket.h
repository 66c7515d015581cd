/* Plain sockets outside libuv, for tests that need a socket's kernel
 * behaviour as it is: a listener whose backlog fills, one that a forked
 * child serves. */
#ifndef RN_TEST_RAW_SOCKET_H
#define RN_TEST_RAW_SOCKET_H

#include <netinet/in.h>

/* A blocking listener on a free loopback port with this backlog, not
 * accepting until the test does; its address in *addr. Returns the fd. */
int test_raw_listen(int backlog, struct sockaddr_in *addr);

#endif /* RN_TEST_RAW_SOCKET_H */

/* Plain sockets outside libuv (raw_socket.h). Failures abort: it serves
 * tests only. */
#include "raw_socket.h"
#include "task.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

int test_raw_listen(int backlog, struct sockaddr_in *addr) {
  socklen_t alen = sizeof(*addr);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  memset(addr, 0, sizeof(*addr));
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_OK(bind(fd, (struct sockaddr *)addr, sizeof(*addr)));
  ASSERT_OK(listen(fd, backlog));
  ASSERT_OK(getsockname(fd, (struct sockaddr *)addr, &alen));
  return fd;
}

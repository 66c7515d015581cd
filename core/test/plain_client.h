/* A plain libuv TCP client for tests that look at a server (or the fault
 * proxy) from outside resilnet: connect, write, collect every byte read,
 * tell a reset from a FIN. Include after task.h. */
#ifndef RN_TEST_PLAIN_CLIENT_H
#define RN_TEST_PLAIN_CLIENT_H

#include "internal.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

typedef struct client_s {
  uv_tcp_t tcp;
  uv_connect_t creq;
  int connected;      /* 1 ok, < 0 the connect error */
  int eof;
  int read_error;     /* the read error (ECONNRESET), or 0 */
  int reads;          /* read callbacks with data */
  rn_buf_t got;
  uint64_t last_read; /* hrtime ms of the latest data */
} client_t;

static inline uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

static inline void cl_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  client_t *c = h->data;
  (void)n;
  rn__buf_read_space(&c->got, 65536, buf);
}

static inline void cl_read(uv_stream_t *s, ssize_t nread,
                           const uv_buf_t *buf) {
  client_t *c = s->data;
  (void)buf;
  if (nread > 0) {
    c->got.len += (size_t)nread;
    c->reads++;
    c->last_read = now_ms();
  } else if (nread == UV_EOF) {
    c->eof = 1;
  } else if (nread < 0) {
    c->read_error = (int)nread;
    uv_read_stop(s);
  }
}

static inline void cl_on_connect(uv_connect_t *req, int status) {
  client_t *c = req->data;
  c->connected = status == 0 ? 1 : status;
  if (status == 0)
    ASSERT_OK(uv_read_start((uv_stream_t *)&c->tcp, cl_alloc, cl_read));
}

/* Starts a connect to 127.0.0.1:port; c->connected says how it went. */
static inline void cl_start(client_t *c, uv_loop_t *uv, int port) {
  struct sockaddr_in addr;
  memset(c, 0, sizeof(*c));
  rn_buf_init(&c->got);
  ASSERT_OK(uv_ip4_addr("127.0.0.1", port, &addr));
  ASSERT_OK(uv_tcp_init(uv, &c->tcp));
  c->tcp.data = c;
  c->creq.data = c;
  ASSERT_OK(uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&addr,
                           cl_on_connect));
}

typedef struct cl_write_s {
  uv_write_t req;
  char data[1];
} cl_write_t;

static inline void cl_write_done(uv_write_t *req, int status) {
  (void)status;
  free(req->data);
}

/* Writes a copy of len bytes in one write, so that frames in them travel
 * together. A reset socket fails at once (EPIPE): tests look at reads. */
static inline void cl_send(client_t *c, const char *data, size_t len) {
  cl_write_t *w = malloc(offsetof(cl_write_t, data) + len);
  uv_buf_t b;
  ASSERT(w != NULL);
  memcpy(w->data, data, len);
  w->req.data = w;
  b = uv_buf_init(w->data, (unsigned)len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, cl_write_done) != 0)
    free(w);
}

/* Whether the peer reset the connection. libuv may report a reset that
 * follows data as a plain EOF (it trusts POLLHUP after a short read), so
 * the socket's pending error is asked too; a FIN leaves none. */
static inline int reset_seen(client_t *c) {
  uv_os_fd_t fd;
  int err = 0;
  socklen_t len = sizeof(err);
  if (c->read_error == UV_ECONNRESET) return 1;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) return 0;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return 0;
  return err == ECONNRESET;
}

static inline void cl_close(client_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, NULL);
}

static inline void cl_free(client_t *c) { rn_buf_free(&c->got); }

#endif /* RN_TEST_PLAIN_CLIENT_H */

/* rnb-echo-server: a plain libuv TCP server that writes back every byte it
 * reads. A length-framed request echoed byte for byte is its own reply, so
 * this serves the `length` benchmarks (and `length` heartbeats) without
 * parsing anything: the server should cost as little as a server can.
 *
 *   rnb-echo-server [--port N] [--host A]   prints "PORT <n>" once listening
 */
#include <signal.h>

#include "common.h"

typedef struct {
  uv_write_t req;
  uv_buf_t buf;
} echo_write_t;

static void on_close(uv_handle_t *h) { free(h); }

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  buf->base = malloc(65536);
  buf->len = buf->base ? 65536 : 0;
}

static void on_written(uv_write_t *req, int status) {
  echo_write_t *w = (echo_write_t *)req;
  (void)status; /* a failed write shows up as a read error next */
  free(w->buf.base);
  free(w);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  echo_write_t *w;
  if (n <= 0) {
    free(buf->base);
    if (n < 0 && !uv_is_closing((uv_handle_t *)s))
      uv_close((uv_handle_t *)s, on_close);
    return;
  }
  w = malloc(sizeof(*w));
  if (w == NULL) abort();
  w->buf = uv_buf_init(buf->base, (unsigned)n);
  if (uv_write(&w->req, s, &w->buf, 1, on_written) != 0) {
    free(buf->base);
    free(w);
    uv_close((uv_handle_t *)s, on_close);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  uv_tcp_t *c;
  if (status != 0) return;
  c = malloc(sizeof(*c));
  if (c == NULL) abort();
  uv_tcp_init(server->loop, c);
  if (uv_accept(server, (uv_stream_t *)c) != 0) {
    uv_close((uv_handle_t *)c, on_close);
    return;
  }
  uv_tcp_nodelay(c, 1);
  uv_read_start((uv_stream_t *)c, on_alloc, on_read);
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = 0, i, err, namelen;
  uv_tcp_t server;
  struct sockaddr_storage ss;
  struct sockaddr_in addr;

  for (i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--host") == 0) host = argv[i + 1];
  }
  signal(SIGPIPE, SIG_IGN);
  rnb_raise_nofile();
  uv_tcp_init(uv_default_loop(), &server);
  uv_ip4_addr(host, port, &addr);
  err = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&server, 4096, on_connection);
  if (err != 0) {
    fprintf(stderr, "rnb-echo-server: %s\n", uv_strerror(err));
    return 1;
  }
  namelen = sizeof(ss);
  uv_tcp_getsockname(&server, (struct sockaddr *)&ss, &namelen);
  printf("PORT %d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
  fflush(stdout);
  return uv_run(uv_default_loop(), UV_RUN_DEFAULT);
}

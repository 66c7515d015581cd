/* The C tests' TLS client (tls_client.h). */
#define _GNU_SOURCE /* memmem */
#include "tls_client.h"
#include "task.h"
#include "wait.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  uv_write_t req;
  rn_buf_t data;
} tls_client_write_t;

static void client_written(uv_write_t *req, int status) {
  tls_client_write_t *w = (tls_client_write_t *)req;
  (void)status;
  rn_buf_free(&w->data);
  free(w);
}

/* Writes data (taken over, freed once written) unless closed. */
static void client_put(tls_client_t *c, rn_buf_t *data) {
  tls_client_write_t *w;
  uv_buf_t b;
  if (data->len == 0 || c->closed) {
    rn_buf_free(data);
    return;
  }
  w = calloc(1, sizeof(*w));
  ASSERT(w != NULL);
  w->data = *data;
  b = uv_buf_init(w->data.base, (unsigned)w->data.len);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, client_written) != 0) {
    rn_buf_free(&w->data);
    free(w);
  }
}

void tls_client_flush(tls_client_t *c) {
  rn_buf_t wire;
  rn_buf_init(&wire);
  ASSERT_OK(rn__tls_pending(c->tls, &wire));
  client_put(c, &wire);
}

static void client_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  static char space[65536];
  (void)h;
  (void)n;
  *buf = uv_buf_init(space, sizeof(space));
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  tls_client_t *c = s->data;
  int r;
  if (n == 0) return;
  if (n < 0) {
    c->eof = 1;
    uv_read_stop(s);
    return;
  }
  if (c->raw) {
    ASSERT_OK(rn_buf_append(&c->plain, buf->base, (size_t)n));
    return;
  }
  if (c->err) return;
  r = rn__tls_read(c->tls, buf->base, (size_t)n, &c->plain);
  if (r < 0)
    c->err = r;
  else
    c->got |= r;
  tls_client_flush(c);
}

static void client_connected(uv_connect_t *req, int status) {
  tls_client_t *c = req->data;
  ASSERT_OK(status);
  c->connected = 1;
  ASSERT_OK(uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read));
  if (c->raw) return;
  c->err = rn__tls_handshake(c->tls);
  tls_client_flush(c);
}

void tls_client_open(tls_client_t *c, uv_loop_t *uv, int port,
                     const rn_tls_options_t *o) {
  struct sockaddr_in addr;
  memset(c, 0, sizeof(*c));
  rn_buf_init(&c->plain);
  if (o == NULL) {
    c->raw = 1;
  } else {
    ASSERT_OK(rn__tls_ctx_new(o, RN_TLS_CLIENT, &c->ctx, NULL, 0));
    ASSERT_OK(rn__tls_new(c->ctx, "127.0.0.1", &c->tls));
  }
  ASSERT_OK(uv_tcp_init(uv, &c->tcp));
  c->tcp.data = c;
  c->creq.data = c;
  ASSERT_OK(uv_ip4_addr("127.0.0.1", port, &addr));
  ASSERT_OK(uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&addr,
                           client_connected));
}

void tls_client_send(tls_client_t *c, const char *data, size_t len) {
  rn_buf_t wire;
  rn_buf_init(&wire);
  if (c->raw)
    ASSERT_OK(rn_buf_append(&wire, data, len));
  else
    ASSERT_OK(rn__tls_write(c->tls, data, len, &wire));
  client_put(c, &wire);
}

int tls_client_ready(const tls_client_t *c) {
  return c->err != 0 || (c->tls != NULL && rn__tls_established(c->tls));
}

int tls_client_has(const tls_client_t *c, const char *text) {
  return c->plain.len > 0 &&
         memmem(c->plain.base, c->plain.len, text, strlen(text)) != NULL;
}

static void client_on_close(uv_handle_t *h) {
  tls_client_t *c = h->data;
  c->closed = 1;
}

void tls_client_close(tls_client_t *c) {
  uv_close((uv_handle_t *)&c->tcp, client_on_close);
  RUN_UNTIL(c->tcp.loop, c->closed, 5000);
  rn__tls_free(c->tls);
  rn__tls_ctx_unref(c->ctx);
  rn_buf_free(&c->plain);
}

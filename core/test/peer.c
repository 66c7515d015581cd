/* The scripted peer (peer.h). Failures abort: it serves tests only. */
#include "peer.h"
#include "task.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void conn_closed(uv_handle_t *h) {
  test_peer_conn_t *c = h->data;
  rn_buf_free(&c->in);
}

void test_peer_close(test_peer_conn_t *c) {
  if (!c->open) return;
  c->open = 0;
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

void test_peer_reset(test_peer_conn_t *c) {
  if (!c->open) return;
  c->open = 0;
  ASSERT_OK(uv_tcp_close_reset(&c->tcp, conn_closed));
}

static void write_done(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

void test_peer_send(test_peer_conn_t *c, const void *bytes, size_t len) {
  uv_write_t *req;
  uv_buf_t buf;
  if (!c->open || !uv_is_writable((uv_stream_t *)&c->tcp)) return;
  req = malloc(sizeof(*req) + len);
  ASSERT(req != NULL);
  memcpy(req + 1, bytes, len);
  buf = uv_buf_init((char *)(req + 1), (unsigned)len);
  ASSERT_OK(uv_write(req, (uv_stream_t *)&c->tcp, &buf, 1, write_done));
}

static void conn_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  test_peer_conn_t *c = h->data;
  ASSERT_OK(rn_buf_reserve(&c->in, size));
  *buf = uv_buf_init(c->in.base + c->in.len, (unsigned)size);
}

static void shutdown_done(uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

static void conn_ended(test_peer_conn_t *c, ssize_t err) {
  test_peer_t *p = c->peer;
  c->closed_by_client = 1;
  if (err == UV_EOF)
    p->eofs++;
  else
    p->errors++;
  if (p->on_end == TEST_PEER_END_CLOSE) {
    test_peer_close(c);
    return;
  }
  ASSERT_OK(uv_read_stop((uv_stream_t *)&c->tcp));
  if (p->on_end == TEST_PEER_END_SHUTDOWN && err == UV_EOF) {
    uv_shutdown_t *req = malloc(sizeof(*req));
    ASSERT(req != NULL);
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, shutdown_done) != 0)
      free(req);
  }
}

static void conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  test_peer_conn_t *c = s->data;
  (void)buf;
  if (nread < 0) {
    conn_ended(c, nread);
    return;
  }
  if (nread == 0) return;
  c->in.len += (size_t)nread;
  c->fresh = (size_t)nread;
  c->reads++;
  c->peer->reads++;
  c->peer->bytes += (uint64_t)nread;
  c->peer->script(c);
}

static void on_connection(uv_stream_t *listener, int status) {
  test_peer_t *p = listener->data;
  test_peer_conn_t *c;
  ASSERT_OK(status);
  ASSERT_LT(p->count, TEST_PEER_CONNS);
  c = &p->conns[p->count++];
  memset(c, 0, sizeof(*c));
  c->peer = p;
  rn_buf_init(&c->in);
  ASSERT_OK(uv_tcp_init(listener->loop, &c->tcp));
  c->tcp.data = c;
  ASSERT_OK(uv_accept(listener, (uv_stream_t *)&c->tcp));
  /* Bytes leave as they are written: Nagle would hold a frame sent right
   * after another until the client's delayed ACK. */
  ASSERT_OK(uv_tcp_nodelay(&c->tcp, 1));
  c->open = 1;
  c->accepted_at = uv_now(listener->loop);
  if (p->on_accept != NULL) p->on_accept(c);
  ASSERT_OK(uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read));
}

void test_peer_start(test_peer_t *p, uv_loop_t *uv,
                     test_peer_script_fn script) {
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  memset(p, 0, sizeof(*p));
  p->script = script;
  ASSERT_OK(uv_tcp_init(uv, &p->listener));
  p->listener.data = p;
  ASSERT_OK(uv_ip4_addr("127.0.0.1", 0, &addr));
  ASSERT_OK(uv_tcp_bind(&p->listener, (const struct sockaddr *)&addr, 0));
  ASSERT_OK(uv_listen((uv_stream_t *)&p->listener, 64, on_connection));
  ASSERT_OK(uv_tcp_getsockname(&p->listener, (struct sockaddr *)&bound, &len));
  p->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
  snprintf(p->endpoint, sizeof(p->endpoint), "127.0.0.1:%d", p->port);
}

void test_peer_stop(test_peer_t *p) {
  int i;
  uv_close((uv_handle_t *)&p->listener, NULL);
  for (i = 0; i < p->count; i++) test_peer_close(&p->conns[i]);
}

void test_peer_echo(test_peer_conn_t *c) {
  test_peer_send(c, c->in.base + c->in.len - c->fresh, c->fresh);
  c->in.len = 0;
}

/* The canned reply to the n-th read or frame (from 1). */
static void reply_canned(test_peer_conn_t *c, unsigned n) {
  const test_peer_t *p = c->peer;
  if (p->first_reply != NULL && n == 1)
    test_peer_send(c, p->first_reply, strlen(p->first_reply));
  else if (p->reply_len > 0)
    test_peer_send(c, p->reply, p->reply_len);
}

void test_peer_reply_each_read(test_peer_conn_t *c) {
  c->in.len = 0;
  reply_canned(c, c->reads);
}

void test_peer_reply_each_frame(test_peer_conn_t *c) {
  size_t pos = 0;
  rn_frame_t f;
  while (rn_codec_frame(c->peer->codec, c->in.base + pos, c->in.len - pos,
                        &f) == 1) {
    pos += f.size;
    reply_canned(c, ++c->frames);
  }
  rn_buf_consume(&c->in, pos);
}

static void answer(test_peer_conn_t *c) { test_peer_send(c, "ok\n", 3); }

static void on_line(test_peer_conn_t *c) {
  const test_peer_t *p = c->peer;
  int hold = c->line_len == 4 && memcmp(c->line, "hold", 4) == 0;
  c->lines++;
  if (c->line_len == 4 && memcmp(c->line, "mark", 4) == 0) c->marks++;
  if (p->answer_first_only) {
    if (c->lines == 1) answer(c);
  } else if (!p->never_hold && (hold || c->held > 0)) {
    c->held++;
  } else {
    answer(c);
  }
}

void test_peer_answer_lines(test_peer_conn_t *c) {
  size_t i;
  if (c->peer->stop_reading) {
    c->in.len = 0;
    c->lines++;
    answer(c);
    ASSERT_OK(uv_read_stop((uv_stream_t *)&c->tcp));
    return;
  }
  for (i = 0; i < c->in.len; i++) {
    if (c->in.base[i] == '\n') {
      on_line(c);
      c->line_len = 0;
    } else if (c->line_len < sizeof(c->line)) {
      c->line[c->line_len++] = c->in.base[i];
    }
  }
  c->in.len = 0;
}

unsigned test_peer_holding(const test_peer_t *p) {
  int i;
  unsigned n = 0;
  for (i = 0; i < p->count; i++) n += p->conns[i].held;
  return n;
}

void test_peer_release(test_peer_t *p) {
  int i;
  for (i = 0; i < p->count; i++)
    for (; p->conns[i].held > 0; p->conns[i].held--) answer(&p->conns[i]);
}

int test_contains(const char *data, size_t len, const char *word) {
  size_t n = strlen(word), i;
  for (i = 0; i + n <= len; i++)
    if (memcmp(data + i, word, n) == 0) return 1;
  return 0;
}

void test_codec_init(rn_codec_t *c, rn_protocol_t protocol) {
  rn_codec_options_t o;
  memset(&o, 0, sizeof(o));
  o.protocol = protocol;
  ASSERT_OK(rn_codec_init(c, &o));
}

/* A raw rnp client for the server tests: frames built with rn_rnp_encode,
 * replies parsed with rn_rnp_parse and kept (copied) in arrival order.
 * Include after task.h. Every wait is a RUN_UNTIL (wait.h). */
#ifndef RN_TEST_RNP_CLIENT_H
#define RN_TEST_RNP_CLIENT_H

#include "resilnet.h"
#include "wait.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define RX_MAX 1024
#define RX_PAYLOAD 128

typedef struct rx_frame_s {
  unsigned type, flags, present, version, code;
  uint64_t id;
  uint32_t max_frame, max_concurrent, retry_after;
  char incarnation[RN_RNP_INCARNATION_SIZE];
  int has_dedupe; /* HELLO: DEDUPE announced, its store id in dedupe */
  char dedupe[RN_RNP_DEDUPE_SIZE];
  char payload[RX_PAYLOAD]; /* the first bytes (ERROR: the message) */
  size_t len;               /* the whole payload's length */
} rx_frame_t;

typedef struct rnp_client_s {
  uv_tcp_t tcp;
  uv_connect_t creq;
  rn_buf_t rbuf;
  rx_frame_t frames[RX_MAX];
  size_t count;
  int connected; /* 1 connected, < 0 the connect error */
  int eof;       /* 1 EOF, < 0 a read error */
  int closed;
  int bad;       /* the server sent something unparsable */
  uint64_t next_id;
} rnp_client_t;

typedef struct rx_write_s {
  uv_write_t req;
  char *data;
} rx_write_t;

static inline void rx_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  rnp_client_t *c = h->data;
  (void)suggested;
  ASSERT_OK(rn_buf_reserve(&c->rbuf, 65536));
  *buf = uv_buf_init(c->rbuf.base + c->rbuf.len,
                     (unsigned)(c->rbuf.cap - c->rbuf.len));
}

static inline void rx_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  rnp_client_t *c = s->data;
  size_t pos = 0;
  (void)buf;
  if (n == 0) return;
  if (n < 0) {
    c->eof = n == UV_EOF ? 1 : (int)n;
    uv_read_stop(s);
    return;
  }
  c->rbuf.len += (size_t)n;
  for (;;) {
    rn_rnp_frame_t f;
    rx_frame_t *x;
    int r = rn_rnp_parse(c->rbuf.base + pos, c->rbuf.len - pos,
                         RN_DEFAULT_MAX_FRAME, &f);
    if (r == 0) break;
    if (r < 0) {
      c->bad = r;
      break;
    }
    ASSERT_LT(c->count, RX_MAX);
    x = &c->frames[c->count++];
    memset(x, 0, sizeof(*x));
    x->type = f.type;
    x->flags = f.flags;
    x->present = f.present;
    x->version = f.version;
    x->code = f.error_code;
    x->id = f.id;
    x->max_frame = f.max_frame;
    x->max_concurrent = f.max_concurrent;
    x->retry_after = f.retry_after_ms;
    if (f.incarnation) memcpy(x->incarnation, f.incarnation, 16);
    x->has_dedupe = f.dedupe != NULL;
    if (f.dedupe) memcpy(x->dedupe, f.dedupe, RN_RNP_DEDUPE_SIZE);
    x->len = f.payload_len;
    memcpy(x->payload, f.payload, f.payload_len < RX_PAYLOAD
                                      ? f.payload_len : RX_PAYLOAD - 1);
    pos += f.size;
  }
  rn_buf_consume(&c->rbuf, pos);
}

static inline void rx_on_connect(uv_connect_t *req, int status) {
  rnp_client_t *c = req->data;
  c->connected = status == 0 ? 1 : status;
  /* Nagle plus the peer's delayed ACK would hold small frames for 40 ms */
  if (status == 0) uv_tcp_nodelay(&c->tcp, 1);
  if (status == 0)
    ASSERT_OK(uv_read_start((uv_stream_t *)&c->tcp, rx_alloc, rx_on_read));
}

static inline void rx_on_write(uv_write_t *req, int status) {
  rx_write_t *w = (rx_write_t *)req;
  (void)status; /* a reset connection is some tests' point */
  free(w->data);
  free(w);
}

static inline void rx_on_close(uv_handle_t *h) {
  rnp_client_t *c = h->data;
  c->closed = 1;
}

static inline int rx_eof(void *arg) { return ((rnp_client_t *)arg)->eof != 0; }

/* Waits until the client holds n frames in all. */
static inline void rx_wait_frames(uv_loop_t *uv, rnp_client_t *c, size_t n) {
  RUN_UNTIL(uv, c->count >= n, 5000);
}

/* Client ----------------------------------------------------------------- */

static inline void rx_connect(uv_loop_t *uv, rnp_client_t *c, int port) {
  struct sockaddr_in sa;
  memset(c, 0, sizeof(*c));
  rn_buf_init(&c->rbuf);
  c->next_id = 1;
  ASSERT_OK(uv_tcp_init(uv, &c->tcp));
  c->tcp.data = c;
  c->creq.data = c;
  ASSERT_OK(uv_ip4_addr("127.0.0.1", port, &sa));
  ASSERT_OK(uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&sa,
                           rx_on_connect));
  RUN_UNTIL(uv, c->connected != 0, 5000);
}

static inline void rx_send_raw(rnp_client_t *c, const char *data, size_t len) {
  rx_write_t *w = malloc(sizeof(*w));
  uv_buf_t buf;
  ASSERT(w != NULL);
  w->data = malloc(len ? len : 1);
  ASSERT(w->data != NULL);
  memcpy(w->data, data, len);
  buf = uv_buf_init(w->data, (unsigned)len);
  ASSERT_OK(uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1,
                     rx_on_write));
}

static inline void rx_send(rnp_client_t *c, const rn_rnp_frame_t *f) {
  rn_buf_t b;
  rn_buf_init(&b);
  ASSERT_OK(rn_rnp_encode(&b, f, RN_DEFAULT_MAX_FRAME));
  rx_send_raw(c, b.base, b.len);
  rn_buf_free(&b);
}

static inline void rx_hello(rnp_client_t *c) {
  rn_rnp_frame_t f;
  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_HELLO;
  f.id = c->next_id++;
  f.present = (1u << RN_RNP_F_VERSION) | (1u << RN_RNP_F_MAX_FRAME);
  f.version = 1;
  f.max_frame = 1 << 20;
  rx_send(c, &f);
}

/* A REQUEST with the next id; key may be NULL; deadline_ms < 0: none.
 * Returns its id. */
static inline uint64_t rx_request(rnp_client_t *c, const char *body,
                           const char *key, long deadline_ms,
                           int idempotent) {
  rn_rnp_frame_t f;
  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_REQUEST;
  f.id = c->next_id++;
  f.flags = idempotent ? RN_RNP_IDEMPOTENT : 0;
  f.payload = body;
  f.payload_len = strlen(body);
  if (key != NULL) {
    f.present |= 1u << RN_RNP_F_KEY;
    f.key = key;
    f.key_len = strlen(key);
  }
  if (deadline_ms >= 0) {
    f.present |= 1u << RN_RNP_F_DEADLINE;
    f.deadline_ms = (uint32_t)deadline_ms;
  }
  rx_send(c, &f);
  return f.id;
}

/* Connects and completes the handshake. */
static inline void rx_open(uv_loop_t *uv, rnp_client_t *c, int port) {
  rx_connect(uv, c, port);
  rx_hello(c);
  rx_wait_frames(uv, c, 1);
  ASSERT_EQ(c->frames[0].type, RN_RNP_HELLO);
}

static inline void rx_close(uv_loop_t *uv, rnp_client_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, rx_on_close);
  RUN_UNTIL(uv, c->closed, 5000);
  rn_buf_free(&c->rbuf);
}

/* The frame answering id, or NULL. */
static inline const rx_frame_t *rx_find(const rnp_client_t *c, uint64_t id) {
  size_t i;
  for (i = 0; i < c->count; i++)
    if (c->frames[i].id == id && c->frames[i].type != RN_RNP_GOAWAY)
      return &c->frames[i];
  return NULL;
}

/* Whether id was refused unrun: an ERROR with code and NOT_EXECUTED. */
static inline int rx_refused(const rnp_client_t *c, uint64_t id,
                             unsigned code) {
  const rx_frame_t *x = rx_find(c, id);
  return x != NULL && x->type == RN_RNP_ERROR && x->code == code &&
         x->flags == RN_RNP_NOT_EXECUTED;
}

#endif /* RN_TEST_RNP_CLIENT_H */

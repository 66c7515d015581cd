/* rnb-uv-client: the baseline. A plain libuv client written for the
 * benchmark and nothing else: one request frame encoded once, replies
 * parsed in place with no allocation per call, and all requests made
 * ready by one read sent back in one write. It is what this design (libuv,
 * pipelined connections, one loop) can do at best; resilnet's C API is
 * measured against it.
 *
 * Protocols: resp (ECHO <payload>, reply $<n>) and length (4-byte
 * big-endian prefix; against rnb-echo-server the reply is the request).
 * Options: see common.h. */
#include <signal.h>

#include "common.h"

#define RNB_BATCH 256 /* requests one write may carry */

typedef struct fifo_s { /* due times of calls in flight, oldest first */
  uint64_t *v;
  size_t head, tail, cap;
} fifo_t;

typedef struct conn_s {
  uv_tcp_t tcp;
  uv_connect_t connect;
  char *rbuf;
  size_t rlen, rcap;
  unsigned outstanding;
  unsigned want; /* rate mode: requests to write at the end of this tick */
  fifo_t due;
} conn_t;

static rnb_opts_t opts;
static conn_t *conns;
static char *batch; /* RNB_BATCH copies of the request */
static size_t req_len;
static unsigned connected, closed;
static int stopping; /* no new requests */
static uint64_t completed, failed, issued;
static uint64_t t_rate0, sent_due;
static rnb_lat_t lat;
static rnb_window_t win;
static uv_timer_t tick_timer;

static void fifo_push(fifo_t *f, uint64_t x) {
  if (f->tail == f->cap) {
    if (f->head > 0) {
      memmove(f->v, f->v + f->head, (f->tail - f->head) * sizeof(*f->v));
      f->tail -= f->head;
      f->head = 0;
    }
    if (f->tail == f->cap) {
      f->cap = f->cap ? f->cap * 2 : 1024;
      f->v = realloc(f->v, f->cap * sizeof(*f->v));
      if (f->v == NULL) abort();
    }
  }
  f->v[f->tail++] = x;
}

static void build_request(void) {
  char *payload = rnb_payload(opts.size);
  char *req = malloc(opts.size + 64);
  size_t i;
  if (req == NULL) abort();
  if (strcmp(opts.proto, "resp") == 0) {
    req_len = (size_t)sprintf(req, "*2\r\n$4\r\nECHO\r\n$%zu\r\n", opts.size);
    memcpy(req + req_len, payload, opts.size);
    req_len += opts.size;
    memcpy(req + req_len, "\r\n", 2);
    req_len += 2;
  } else if (strcmp(opts.proto, "length") == 0) {
    uint32_t n = (uint32_t)opts.size;
    req[0] = (char)(n >> 24);
    req[1] = (char)(n >> 16);
    req[2] = (char)(n >> 8);
    req[3] = (char)n;
    memcpy(req + 4, payload, opts.size);
    req_len = 4 + opts.size;
  } else {
    fprintf(stderr, "rnb-uv-client: protocol %s not supported\n", opts.proto);
    exit(2);
  }
  batch = malloc(req_len * RNB_BATCH);
  if (batch == NULL) abort();
  for (i = 0; i < RNB_BATCH; i++) memcpy(batch + i * req_len, req, req_len);
  free(req);
  free(payload);
}

/* Bytes of the complete reply frame at p, or 0 if it is not all here. */
static size_t frame_size(const char *p, size_t len) {
  if (opts.proto[0] == 'l') {
    size_t n;
    if (len < 4) return 0;
    n = 4 + (((size_t)(unsigned char)p[0] << 24) |
             ((size_t)(unsigned char)p[1] << 16) |
             ((size_t)(unsigned char)p[2] << 8) | (size_t)(unsigned char)p[3]);
    return len >= n ? n : 0;
  } else {
    const char *cr = memchr(p, '\r', len);
    size_t head;
    if (cr == NULL || (size_t)(cr - p) + 2 > len) return 0;
    head = (size_t)(cr - p) + 2;
    if (p[0] == '$' && p[1] != '-') {
      size_t n = (size_t)strtoul(p + 1, NULL, 10) + 2;
      return len >= head + n ? head + n : 0;
    }
    return head;
  }
}

/* Only the request is freed: the bytes it wrote are the shared, immutable
 * batch, which any number of writes may point at at once. */
static void on_written(uv_write_t *req, int status) {
  if (status != 0) failed++;
  free(req);
}

static void send_requests(conn_t *c, unsigned n) {
  while (n > 0) {
    unsigned k = n > RNB_BATCH ? RNB_BATCH : n;
    uv_write_t *w = malloc(sizeof(*w));
    uv_buf_t buf = uv_buf_init(batch, (unsigned)(k * req_len));
    if (w == NULL) abort();
    if (uv_write(w, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) abort();
    c->outstanding += k;
    issued += k;
    n -= k;
  }
}

static void on_close(uv_handle_t *h) {
  (void)h;
  closed++;
}

static void maybe_finish(void) {
  unsigned i;
  if (!stopping) return;
  for (i = 0; i < opts.conns; i++)
    if (conns[i].outstanding > 0) return;
  for (i = 0; i < opts.conns; i++)
    if (!uv_is_closing((uv_handle_t *)&conns[i].tcp))
      uv_close((uv_handle_t *)&conns[i].tcp, on_close);
  rnb_window_close(&win);
  if (!uv_is_closing((uv_handle_t *)&tick_timer))
    uv_close((uv_handle_t *)&tick_timer, NULL);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)hint;
  if (c->rcap - c->rlen < 65536) {
    c->rcap = c->rlen + 65536;
    c->rbuf = realloc(c->rbuf, c->rcap);
    if (c->rbuf == NULL) abort();
  }
  *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = s->data;
  size_t off = 0, f;
  unsigned replies = 0;
  (void)buf;
  if (n < 0) {
    fprintf(stderr, "rnb-uv-client: read: %s\n", uv_strerror((int)n));
    exit(1);
  }
  c->rlen += (size_t)n;
  while ((f = frame_size(c->rbuf + off, c->rlen - off)) > 0) {
    off += f;
    replies++;
  }
  if (off > 0) {
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
  }
  if (replies == 0) return;
  c->outstanding -= replies;
  completed += replies;
  if (opts.rate > 0) {
    uint64_t now = rnb_now_ns();
    unsigned i;
    for (i = 0; i < replies; i++) {
      uint64_t due = c->due.v[c->due.head++];
      if (rnb_window_has(&win, due)) rnb_lat_add(&lat, now - due);
    }
  } else if (!stopping) {
    unsigned more = replies;
    if (opts.calls > 0 && issued + more > opts.calls)
      more = (unsigned)(opts.calls - issued);
    if (opts.calls > 0 && issued + more >= opts.calls) stopping = 1;
    send_requests(c, more);
  }
  maybe_finish();
}

/* Rate mode: every millisecond, write every call that has come due. */
static void on_tick(uv_timer_t *t) {
  uint64_t now = rnb_now_ns(), due_total;
  unsigned i;
  (void)t;
  if (stopping) return;
  due_total = (uint64_t)((double)(now - t_rate0) / 1e9 * opts.rate);
  for (; sent_due < due_total; sent_due++) {
    conn_t *c = &conns[sent_due % opts.conns];
    fifo_push(&c->due, t_rate0 + (uint64_t)((double)sent_due * 1e9 / opts.rate));
    c->want++;
  }
  for (i = 0; i < opts.conns; i++) {
    if (conns[i].want > 0) send_requests(&conns[i], conns[i].want);
    conns[i].want = 0;
  }
}

static void on_window_end(void) {
  stopping = 1;
  maybe_finish();
}

static void start(void) {
  unsigned i;
  rnb_window_start(&win);
  if (opts.rate > 0) {
    t_rate0 = rnb_now_ns();
    uv_timer_start(&tick_timer, on_tick, 1, 1);
    return;
  }
  for (i = 0; i < opts.conns; i++) {
    unsigned k = opts.depth;
    if (opts.calls > 0 && issued + k > opts.calls)
      k = (unsigned)(opts.calls - issued);
    send_requests(&conns[i], k);
  }
  if (opts.calls > 0 && issued >= opts.calls) stopping = 1;
}

static void on_connect(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  if (status != 0) {
    fprintf(stderr, "rnb-uv-client: connect: %s\n", uv_strerror(status));
    exit(1);
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (++connected == opts.conns) start();
}

int main(int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  struct sockaddr_in addr;
  unsigned i;

  rnb_parse(argc, argv, &opts);
  signal(SIGPIPE, SIG_IGN);
  rnb_raise_nofile();
  build_request();
  uv_ip4_addr(opts.host, opts.port, &addr);
  conns = calloc(opts.conns, sizeof(*conns));
  if (conns == NULL) abort();
  rnb_window_init(&win, loop, &opts, &completed, on_window_end);
  uv_timer_init(loop, &tick_timer);
  for (i = 0; i < opts.conns; i++) {
    conn_t *c = &conns[i];
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->connect.data = c;
    if (uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&addr,
                       on_connect) != 0)
      abort();
  }
  uv_run(loop, UV_RUN_DEFAULT);
  rnb_window_report(&win, "uv", failed, opts.rate > 0 ? &lat : NULL);
  for (i = 0; i < opts.conns; i++) {
    free(conns[i].rbuf);
    free(conns[i].due.v);
  }
  free(conns);
  free(batch);
  free(lat.v);
  return uv_loop_close(loop) == 0 ? 0 : 1;
}

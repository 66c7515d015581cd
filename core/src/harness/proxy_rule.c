/* Per-request rules. With a codec, each direction of a connection is cut
 * into frames by the library's own codec (rn_codec_frame, as a pool reads
 * replies), and the rules judge each frame: fail the n-th request, the
 * first n, drop every n-th reply. What passes goes on to the byte faults
 * (proxy_fault.c) in runs of whole frames, so that a fault meets them much
 * as it would have met the reads. A stream that does not parse is logged
 * and then relayed as bytes: a harness must survive what it provokes. */
#include "proxy.h"

#include <stdlib.h>
#include <string.h>

void rn_rule_options_init(rn_rule_options_t *o, rn_rule_kind_t kind) {
  memset(o, 0, sizeof(*o));
  o->kind = kind;
  o->n = 1;
  o->action = RN_RULE_RST;
}

int rn_proxy_rule_add(rn_proxy_t *proxy, const rn_rule_options_t *options,
                      uint64_t *id) {
  rn_proxy_rule_t *r;

  if (id != NULL) *id = 0;
  if (proxy->closing) return RN_ECLOSED;
  /* Without a codec there are no frames to count. */
  if (!proxy->framed) return UV_EINVAL;
  if (options->kind < RN_RULE_FAIL_REQUEST ||
      options->kind > RN_RULE_DROP_REPLY || options->n == 0)
    return UV_EINVAL;
  if (options->kind != RN_RULE_DROP_REPLY &&
      (options->action < RN_RULE_RST || options->action > RN_RULE_DROP))
    return UV_EINVAL;
  r = calloc(1, sizeof(*r));
  if (r == NULL) return UV_ENOMEM;
  r->o = *options;
  r->id = ++proxy->next_fault;
  rn_list_insert_tail(&proxy->rules, &r->node);
  if (id != NULL) *id = r->id;
  return 0;
}

int rn__proxy_rule_remove(rn_proxy_t *proxy, uint64_t id) {
  rn_list_t *pos;
  for (pos = proxy->rules.next; pos != &proxy->rules; pos = pos->next) {
    rn_proxy_rule_t *r = RN_CONTAINER_OF(pos, rn_proxy_rule_t, node);
    if (r->id == id) {
      rn_list_remove(&r->node);
      free(r);
      return 0;
    }
  }
  return UV_ENOENT;
}

void rn__proxy_rule_clear(rn_proxy_t *proxy) {
  while (!rn_list_empty(&proxy->rules)) {
    rn_proxy_rule_t *r =
        RN_CONTAINER_OF(proxy->rules.next, rn_proxy_rule_t, node);
    rn_list_remove(&r->node);
    free(r);
  }
}

/* ------------------------------------------------------------------------ */
/* Judging frames                                                             */

/* Whether a complete frame is what the rules count: a request going up, a
 * reply coming down. Heartbeats and handshakes of rnp are told apart by
 * their type, so that "the third request" means the third call; the other
 * protocols cannot tell a heartbeat from a call. */
static int frame_counts(const rn_proxy_t *proxy, unsigned dir,
                        const char *data, const rn_frame_t *f) {
  if (proxy->codec.protocol == RN_PROTOCOL_RNP) {
    /* The codec has checked the 16-byte header: byte 4 is the type,
     * bytes 8..15 the id (0 only on connection-level errors). */
    unsigned type = (unsigned char)data[4];
    int i, id = 0;
    if (dir == RN_PROXY_UP) return type == RN_RNP_REQUEST;
    for (i = 8; i < RN_RNP_HEADER_SIZE; i++) id |= data[i] != 0;
    return type == RN_RNP_REPLY || (type == RN_RNP_ERROR && id);
  }
  /* A push answers no request. */
  return dir == RN_PROXY_UP || !(f->flags & RN_FRAME_PUSH);
}

/* Every rule of the direction counts the frame; the first (in the order
 * they were added) that fails it decides. */
static rn_proxy_rule_t *frame_judge(rn_proxy_t *proxy, unsigned dir) {
  rn_proxy_rule_t *hit = NULL;
  rn_list_t *pos;
  for (pos = proxy->rules.next; pos != &proxy->rules; pos = pos->next) {
    rn_proxy_rule_t *r = RN_CONTAINER_OF(pos, rn_proxy_rule_t, node);
    int fails;
    if ((r->o.kind == RN_RULE_DROP_REPLY) != (dir == RN_PROXY_DOWN)) continue;
    r->seen++;
    switch (r->o.kind) {
    case RN_RULE_FAIL_REQUEST:
      fails = r->seen == r->o.n;
      break;
    case RN_RULE_FAIL_FIRST:
      fails = r->seen <= r->o.n;
      break;
    default:
      fails = r->seen % r->o.n == 0;
      break;
    }
    if (fails && hit == NULL) hit = r;
  }
  return hit;
}

static const char *rule_event(const rn_proxy_rule_t *r) {
  if (r->o.kind == RN_RULE_DROP_REPLY) return "reply_drop";
  switch (r->o.action) {
  case RN_RULE_RST:
    return "request_reset";
  case RN_RULE_CLOSE:
    return "request_close";
  default:
    return "request_drop";
  }
}

/* Judges the frames in data[0..len). Kept frames go on to the faults; an
 * incomplete last frame is left for the caller to hold. Returns the bytes
 * dealt with: all of them once the connection is to close, or the stream
 * stopped parsing. */
static size_t pipe_frames(rn_proxy_pipe_t *pipe, char *data, size_t len) {
  rn_proxy_conn_t *conn = pipe->conn;
  rn_proxy_t *proxy = conn->proxy;
  size_t pos = 0, run = 0; /* data[run..pos): kept, not yet passed on */

  while (pos < len) {
    rn_proxy_rule_t *r;
    rn_frame_t f;
    int rc;

    /* Cut by a fault or a rule: what follows is lost anyway. */
    if (conn->closing || pipe->half_closed || pipe->close_after) return len;
    /* A partial frame stays at the head of what is held for it: the scan
     * keeps its place there, so a trickled frame is framed once. */
    rc = rn_codec_scan(&proxy->codec, &pipe->scan, data + pos, len - pos,
                       &f);
    if (rc == 0) break;
    if (rc < 0) {
      rn__proxy_event(proxy, "frame_error", conn->id, 0, pipe->dir,
                      len - pos, rc);
      pipe->unframed = 1;
      rn__proxy_pipe_data(pipe, data + run, len - run);
      return len;
    }
    if (!frame_counts(proxy, pipe->dir, data + pos, &f) ||
        (r = frame_judge(proxy, pipe->dir)) == NULL) {
      pos += f.size;
      continue;
    }
    /* What came before it goes on first, in order. */
    if (pos > run) rn__proxy_pipe_data(pipe, data + run, pos - run);
    rn__proxy_event(proxy, rule_event(r), conn->id, r->id, pipe->dir, f.size,
                    0);
    pos += f.size;
    run = pos;
    if (r->o.kind != RN_RULE_DROP_REPLY && r->o.action != RN_RULE_DROP &&
        !pipe->close_after && !conn->closing) {
      /* Closed once what went before is written (rn__proxy_pipe_update);
       * meanwhile neither side is read, so nothing overtakes the end. */
      pipe->close_after = r->o.action == RN_RULE_RST ? 2 : 1;
      pipe->close_fault = r->id;
      return len;
    }
  }
  if (pos > run && !conn->closing) rn__proxy_pipe_data(pipe, data + run,
                                                       pos - run);
  return pos;
}

void rn__proxy_pipe_read(rn_proxy_pipe_t *pipe, char *data, size_t len) {
  rn_proxy_conn_t *conn = pipe->conn;
  size_t used;

  if (!conn->proxy->framed || pipe->unframed) {
    rn__proxy_pipe_data(pipe, data, len);
    return;
  }
  if (pipe->partial.len == 0) {
    /* The common case, whole frames in one read: judged in place. */
    used = pipe_frames(pipe, data, len);
    if (used < len && !conn->closing &&
        rn_buf_append(&pipe->partial, data + used, len - used) != 0)
      rn__proxy_conn_close(conn, 1, 0);
    return;
  }
  if (rn_buf_append(&pipe->partial, data, len) != 0) {
    rn__proxy_conn_close(conn, 1, 0);
    return;
  }
  used = pipe_frames(pipe, pipe->partial.base, pipe->partial.len);
  rn_buf_consume(&pipe->partial, used);
  /* One large frame must not pin its buffer for the connection's life. */
  if (pipe->partial.len == 0) rn_buf_free(&pipe->partial);
}

void rn__proxy_pipe_read_end(rn_proxy_pipe_t *pipe) {
  rn_buf_t rest = pipe->partial;
  if (rest.len == 0) return;
  /* A frame cut by the FIN is no request; its bytes are what the peer
   * sent, and a byte proxy would have passed them. */
  rn_buf_init(&pipe->partial);
  rn_frame_scan_reset(&pipe->scan);
  rn__proxy_pipe_data(pipe, rest.base, rest.len);
  rn_buf_free(&rest);
}

void rn__proxy_pipe_free_frames(rn_proxy_pipe_t *pipe) {
  rn_buf_free(&pipe->partial);
  rn_frame_scan_reset(&pipe->scan);
}

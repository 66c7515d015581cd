/* The proxy's faults: which connections they meet (toxicity), and what
 * they do to the bytes of each direction. Every draw comes from a
 * splitmix64 stream derived from the seed, so a run replays from it. */
#include "proxy.h"

#include <stdlib.h>
#include <string.h>

uint64_t rn__proxy_mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

static uint64_t proxy_next(uint64_t *state) {
  *state += 0x9E3779B97F4A7C15ull;
  return rn__proxy_mix(*state);
}

double rn__proxy_unit(uint64_t *state) {
  return (double)(proxy_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

double rn__proxy_delay(const rn_fault_options_t *o, uint64_t *rng) {
  double d = (double)o->ms, j = (double)o->jitter;
  if (j > 0) {
    if (o->normal) {
      /* Sum of 12 uniforms minus 6: mean 0, deviation 1, within +/- 6;
       * close enough to a normal for network jitter, and no libm. */
      double z = -6.0;
      int i;
      for (i = 0; i < 12; i++) z += rn__proxy_unit(rng);
      d += j * z;
    } else {
      d += j * (2.0 * rn__proxy_unit(rng) - 1.0);
    }
  }
  return d < 0 ? 0 : d;
}

int rn__proxy_toxic(rn_proxy_t *proxy, const rn_proxy_fault_t *fault,
                    uint64_t conn) {
  uint64_t h;
  if (fault->o.toxicity >= 1.0) return 1;
  if (fault->o.toxicity <= 0.0) return 0;
  /* A pure function of (seed, fault, connection): the same connections
   * are chosen whatever order faults and connections arrive in. */
  h = rn__proxy_mix(proxy->options.seed ^
                    rn__proxy_mix(fault->id * 0x100000001B3ull ^
                                  rn__proxy_mix(conn)));
  return (double)(h >> 11) * (1.0 / 9007199254740992.0) < fault->o.toxicity;
}

static int is_listener_kind(rn_fault_kind_t kind) {
  return kind >= RN_FAULT_REFUSE;
}

rn_proxy_fault_t *rn__proxy_find(rn_proxy_t *proxy, rn_fault_kind_t kind) {
  rn_list_t *pos;
  for (pos = proxy->faults.next; pos != &proxy->faults; pos = pos->next) {
    rn_proxy_fault_t *f = RN_CONTAINER_OF(pos, rn_proxy_fault_t, node);
    if (f->o.kind == kind) return f;
  }
  return NULL;
}

static int link_in(const rn_proxy_link_t *l, const rn_proxy_pipe_t *pipe,
                   rn_fault_kind_t kind) {
  return l->applies && l->fault->o.kind == kind &&
         (l->fault->o.direction & pipe->dir) != 0;
}

static int pipe_has(const rn_proxy_pipe_t *pipe, rn_fault_kind_t kind) {
  const rn_proxy_conn_t *conn = pipe->conn;
  size_t i;
  for (i = 0; i < conn->nlinks; i++)
    if (link_in(&conn->links[i], pipe, kind)) return 1;
  return 0;
}

int rn__proxy_pipe_stalled(const rn_proxy_pipe_t *pipe) {
  return pipe_has(pipe, RN_FAULT_STALL);
}

int rn__proxy_pipe_blackholed(const rn_proxy_pipe_t *pipe) {
  return pipe_has(pipe, RN_FAULT_BLACKHOLE);
}

/* ------------------------------------------------------------------------ */
/* Faults meeting connections                                                 */

/* A half_close with nothing to wait for takes effect as it meets the
 * connection, not on the next byte. */
static void link_start(rn_proxy_conn_t *conn, rn_proxy_link_t *l) {
  const rn_fault_options_t *o = &l->fault->o;
  rn_proxy_pipe_t *pipes[2];
  int i;
  if (!l->applies || o->kind != RN_FAULT_HALF_CLOSE || o->after_bytes != 0)
    return;
  pipes[0] = &conn->up;
  pipes[1] = &conn->down;
  for (i = 0; i < 2; i++) {
    if ((o->direction & pipes[i]->dir) && !pipes[i]->half_closed) {
      pipes[i]->half_closed = 1;
      rn__proxy_event(conn->proxy, "half_close", conn->id, l->fault->id,
                      pipes[i]->dir, 0, 0);
    }
  }
  l->fired = 1;
}

static int link_attach(rn_proxy_conn_t *conn, rn_proxy_fault_t *f) {
  rn_proxy_link_t *l;
  if (conn->nlinks == conn->caplinks) {
    size_t cap = conn->caplinks ? conn->caplinks * 2 : 4;
    rn_proxy_link_t *links = realloc(conn->links, cap * sizeof(*links));
    if (links == NULL) return UV_ENOMEM;
    conn->links = links;
    conn->caplinks = cap;
  }
  l = &conn->links[conn->nlinks++];
  memset(l, 0, sizeof(*l));
  l->fault = f;
  l->applies = rn__proxy_toxic(conn->proxy, f, conn->id);
  l->start = uv_now(conn->proxy->loop->uv);
  if (l->applies)
    rn__proxy_event(conn->proxy, "apply", conn->id, f->id, 0, 0, 0);
  link_start(conn, l);
  return 0;
}

int rn__proxy_conn_attach_all(rn_proxy_conn_t *conn) {
  rn_list_t *pos;
  for (pos = conn->proxy->faults.next; pos != &conn->proxy->faults;
       pos = pos->next) {
    rn_proxy_fault_t *f = RN_CONTAINER_OF(pos, rn_proxy_fault_t, node);
    int err;
    if (is_listener_kind(f->o.kind)) continue;
    err = link_attach(conn, f);
    if (err) return err;
  }
  return 0;
}

void rn__proxy_conn_free_links(rn_proxy_conn_t *conn) {
  free(conn->links);
  conn->links = NULL;
  conn->nlinks = conn->caplinks = 0;
}

void rn__proxy_conn_arm_close(rn_proxy_conn_t *conn) {
  uint64_t best = UINT64_MAX, now;
  size_t i;
  if (conn->closing) return;
  for (i = 0; i < conn->nlinks; i++) {
    const rn_proxy_link_t *l = &conn->links[i];
    const rn_fault_options_t *o = &l->fault->o;
    if (l->applies && o->kind == RN_FAULT_CLOSE &&
        o->after_ms != RN_FAULT_UNSET && l->start + o->after_ms < best)
      best = l->start + o->after_ms;
  }
  if (best == UINT64_MAX) {
    rn_timer_stop(&conn->close_timer);
    return;
  }
  now = uv_now(conn->proxy->loop->uv);
  rn_timer_start(&conn->close_timer, best > now ? best - now : 0);
}

/* After faults changed: stalls lift, held FINs pass, timers move. */
static void proxy_refresh(rn_proxy_t *proxy) {
  rn_list_t *pos, *tmp;
  rn_list_foreach_safe(pos, tmp, &proxy->conns) {
    rn_proxy_conn_t *conn = RN_CONTAINER_OF(pos, rn_proxy_conn_t, node);
    rn__proxy_conn_arm_close(conn);
    rn__proxy_pipe_update(&conn->up);
    rn__proxy_pipe_update(&conn->down);
  }
  rn__proxy_update_listener(proxy);
}

/* ------------------------------------------------------------------------ */
/* The data path                                                              */

/* Bytes a counting fault lets through before it acts. */
static uint64_t link_room(const rn_proxy_link_t *l) {
  uint64_t after = l->fault->o.after_bytes;
  return after > l->count ? after - l->count : 0;
}

void rn__proxy_pipe_data(rn_proxy_pipe_t *pipe, char *data, size_t len) {
  rn_proxy_conn_t *conn = pipe->conn;
  rn_proxy_t *proxy = conn->proxy;
  double delay = 0;
  uint64_t bps = 0, slice_delay = 0;
  size_t slice = 0, i, n, keep = len;
  int dup = 0;

  if (pipe->half_closed || pipe->close_after) return; /* past its end */

  /* What survives: blackholes take all; counting faults cut. */
  for (i = 0; i < conn->nlinks; i++) {
    rn_proxy_link_t *l = &conn->links[i];
    if (!l->applies || !(l->fault->o.direction & pipe->dir)) continue;
    switch (l->fault->o.kind) {
    case RN_FAULT_BLACKHOLE:
      rn__proxy_event(proxy, "blackhole", conn->id, l->fault->id, pipe->dir,
                      len, 0);
      return;
    case RN_FAULT_TRUNCATE:
    case RN_FAULT_HALF_CLOSE:
    case RN_FAULT_CLOSE:
      if (l->fault->o.after_bytes != RN_FAULT_UNSET &&
          link_room(l) < (uint64_t)keep)
        keep = (size_t)link_room(l);
      break;
    default:
      break;
    }
  }
  for (i = 0; i < conn->nlinks; i++) {
    rn_proxy_link_t *l = &conn->links[i];
    const rn_fault_options_t *o = &l->fault->o;
    if (!l->applies || !(o->direction & pipe->dir)) continue;
    switch (o->kind) {
    case RN_FAULT_TRUNCATE:
      if (o->after_bytes != RN_FAULT_UNSET && keep < len &&
          link_room(l) == (uint64_t)keep)
        rn__proxy_event(proxy, "truncate", conn->id, l->fault->id, pipe->dir,
                        len - keep, 0);
      l->count += keep;
      break;
    case RN_FAULT_HALF_CLOSE:
      if (!l->fired && link_room(l) <= (uint64_t)keep) {
        /* The bytes before it go out, then the FIN; the rest is lost. */
        l->fired = 1;
        pipe->half_closed = 1;
        rn__proxy_event(proxy, "half_close", conn->id, l->fault->id,
                        pipe->dir, len - keep, 0);
      }
      l->count += keep;
      break;
    case RN_FAULT_CLOSE:
      if (o->after_bytes != RN_FAULT_UNSET && !pipe->close_after &&
          link_room(l) <= (uint64_t)keep) {
        pipe->close_after = o->rst ? 2 : 1;
        pipe->close_fault = l->fault->id;
      }
      l->count += keep;
      break;
    case RN_FAULT_CORRUPT:
      for (n = 0; n < keep; n++) {
        if (rn__proxy_unit(&pipe->rng) < o->rate) {
          data[n] ^= (char)(1 + proxy_next(&pipe->rng) % 255);
          l->count++;
        }
      }
      break;
    case RN_FAULT_DUPLICATE:
      if (keep > 0 && rn__proxy_unit(&pipe->rng) < o->rate) {
        dup = 1;
        rn__proxy_event(proxy, "duplicate", conn->id, l->fault->id, pipe->dir,
                        keep, 0);
      }
      break;
    case RN_FAULT_LATENCY:
      delay += rn__proxy_delay(o, &pipe->rng);
      break;
    case RN_FAULT_BANDWIDTH:
      if (bps == 0 || o->bytes_per_second < bps) bps = o->bytes_per_second;
      break;
    case RN_FAULT_SLICE:
      if (slice == 0) {
        slice = o->slice_bytes;
        slice_delay = o->slice_delay;
      }
      break;
    default:
      break;
    }
  }
  /* Corruption is reported per chunk, with how many bytes changed. */
  for (i = 0; i < conn->nlinks; i++) {
    rn_proxy_link_t *l = &conn->links[i];
    if (link_in(l, pipe, RN_FAULT_CORRUPT) && l->count > 0) {
      rn__proxy_event(proxy, "corrupt", conn->id, l->fault->id, pipe->dir,
                      l->count, 0);
      l->count = 0;
    }
  }
  if (keep == 0) return;
  if (rn__proxy_pipe_queue(pipe, data, keep, delay, bps, slice, slice_delay) ||
      (dup && rn__proxy_pipe_queue(pipe, data, keep, delay, bps, slice,
                                   slice_delay)))
    rn__proxy_conn_close(conn, 1, 0);
}

/* ------------------------------------------------------------------------ */
/* Adding and removing                                                        */

void rn_fault_options_init(rn_fault_options_t *o, rn_fault_kind_t kind) {
  memset(o, 0, sizeof(*o));
  o->kind = kind;
  o->direction = RN_PROXY_BOTH;
  o->toxicity = 1.0;
  o->rate = 1.0;
  o->after_bytes = RN_FAULT_UNSET;
  o->after_ms = RN_FAULT_UNSET;
}

static int fault_check(const rn_fault_options_t *o) {
  if (o->kind < RN_FAULT_LATENCY || o->kind > RN_FAULT_ACCEPT_CLOSE)
    return UV_EINVAL;
  if (o->direction < RN_PROXY_UP || o->direction > RN_PROXY_BOTH)
    return UV_EINVAL;
  if (!(o->toxicity >= 0.0 && o->toxicity <= 1.0) ||
      !(o->rate >= 0.0 && o->rate <= 1.0))
    return UV_EINVAL;
  if (o->kind == RN_FAULT_BANDWIDTH && o->bytes_per_second == 0)
    return UV_EINVAL;
  if (o->kind == RN_FAULT_SLICE && o->slice_bytes == 0) return UV_EINVAL;
  if (o->kind == RN_FAULT_TRUNCATE && o->after_bytes == RN_FAULT_UNSET)
    return UV_EINVAL;
  return 0;
}

int rn_proxy_fault_add(rn_proxy_t *proxy, const rn_fault_options_t *options,
                       uint64_t *id) {
  rn_proxy_fault_t *f;
  rn_list_t *pos;
  int err;

  if (id != NULL) *id = 0;
  if (proxy->closing) return RN_ECLOSED;
  err = fault_check(options);
  if (err) return err;
  f = calloc(1, sizeof(*f));
  if (f == NULL) return UV_ENOMEM;
  f->o = *options;
  if (f->o.kind == RN_FAULT_CLOSE && f->o.after_bytes == RN_FAULT_UNSET &&
      f->o.after_ms == RN_FAULT_UNSET)
    f->o.after_ms = 0; /* neither limit: close now */
  if (f->o.kind == RN_FAULT_HALF_CLOSE && f->o.after_bytes == RN_FAULT_UNSET)
    f->o.after_bytes = 0;
  f->id = ++proxy->next_fault;
  rn_list_insert_tail(&proxy->faults, &f->node);
  if (!is_listener_kind(f->o.kind)) {
    for (pos = proxy->conns.next; pos != &proxy->conns; pos = pos->next) {
      rn_proxy_conn_t *conn = RN_CONTAINER_OF(pos, rn_proxy_conn_t, node);
      if (conn->closing) continue;
      if (link_attach(conn, f) != 0)
        rn__proxy_conn_close(conn, 1, 0); /* cannot honour the fault */
    }
  }
  if (id != NULL) *id = f->id;
  proxy_refresh(proxy);
  return 0;
}

static void fault_detach(rn_proxy_t *proxy, rn_proxy_fault_t *f) {
  rn_list_t *pos;
  rn_list_remove(&f->node);
  for (pos = proxy->conns.next; pos != &proxy->conns; pos = pos->next) {
    rn_proxy_conn_t *conn = RN_CONTAINER_OF(pos, rn_proxy_conn_t, node);
    size_t i;
    for (i = 0; i < conn->nlinks; i++) {
      if (conn->links[i].fault == f) {
        memmove(&conn->links[i], &conn->links[i + 1],
                (conn->nlinks - i - 1) * sizeof(conn->links[0]));
        conn->nlinks--;
        break;
      }
    }
  }
  free(f);
}

int rn_proxy_fault_remove(rn_proxy_t *proxy, uint64_t id) {
  rn_list_t *pos;
  for (pos = proxy->faults.next; pos != &proxy->faults; pos = pos->next) {
    rn_proxy_fault_t *f = RN_CONTAINER_OF(pos, rn_proxy_fault_t, node);
    if (f->id == id) {
      fault_detach(proxy, f);
      proxy_refresh(proxy);
      return 0;
    }
  }
  /* Rules take their ids from the same sequence. */
  return rn__proxy_rule_remove(proxy, id);
}

void rn_proxy_fault_clear(rn_proxy_t *proxy) {
  while (!rn_list_empty(&proxy->faults))
    fault_detach(proxy,
                 RN_CONTAINER_OF(proxy->faults.next, rn_proxy_fault_t, node));
  rn__proxy_rule_clear(proxy);
  proxy_refresh(proxy);
}

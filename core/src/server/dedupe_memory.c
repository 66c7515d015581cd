/* The default dedupe store: in memory, answering at once.
 *
 * A key is never dropped inside its window: a dropped finished key would
 * let its retry run a second time. At capacity a new key is refused
 * (UV_ENOSPC: the server answers not executed, retry later) until old
 * ones expire. Records expire in the order they finished (the window is
 * the same for every key), so a sweep from the oldest end of `fifo` stops
 * at the first live one. Keys in progress are not on it: their requests
 * are running on this server, unless recording the answer failed (then
 * the key stays in progress for the window: duplicates are told to retry
 * later, never run again). */
#include "dedupe.h"

#include <stdlib.h>
#include <string.h>

/* Tests make allocations fail through this. */
void *(*rn__dedupe_memory_malloc)(size_t size) = malloc;

typedef struct mem_rec_s {
  rn__kmap_node_t node;
  rn_list_t fifo;  /* expiring: oldest first */
  uint64_t expires;
  int done;
  unsigned error;
  char *body;      /* after the key, in the same allocation */
  size_t len;
} mem_rec_t;

typedef struct mem_store_s {
  rn_dedupe_store_t base;
  rn_loop_t *loop;
  size_t capacity;
  rn__kmap_t map;
  rn_list_t fifo;
} mem_store_t;

static void rec_free(mem_store_t *m, mem_rec_t *r) {
  rn__kmap_remove(&m->map, &r->node);
  rn_list_remove(&r->fifo);
  free(r);
}

static void mem_sweep(mem_store_t *m) {
  uint64_t now = rn_loop_now(m->loop);
  while (!rn_list_empty(&m->fifo)) {
    mem_rec_t *r = RN_CONTAINER_OF(m->fifo.next, mem_rec_t, fifo);
    if (r->expires > now) break;
    rec_free(m, r);
  }
}

static mem_rec_t *mem_find(mem_store_t *m, const char *key, size_t len) {
  uint64_t hash = rn__kmap_hash(&m->map, key, len);
  rn__kmap_node_t *n = rn__kmap_find(&m->map, key, len, hash);
  return n ? RN_CONTAINER_OF(n, mem_rec_t, node) : NULL;
}

/* A record for key (in progress, or with room for an answer of
 * extra bytes after the key), not yet in the map. */
static mem_rec_t *rec_new(mem_store_t *m, const char *key, size_t len,
                          size_t extra) {
  mem_rec_t *r = rn__dedupe_memory_malloc(sizeof(*r) + len + extra);
  if (r == NULL) return NULL;
  memset(r, 0, sizeof(*r));
  memcpy(r + 1, key, len);
  r->node.key = (const char *)(r + 1);
  r->node.key_len = len;
  r->node.hash = rn__kmap_hash(&m->map, key, len);
  r->body = (char *)(r + 1) + len;
  rn_list_init(&r->fifo);
  return r;
}

/* A new key in progress: UV_ENOSPC at capacity (every key is inside its
 * window), UV_ENOMEM. */
static int mem_add(mem_store_t *m, const char *key, size_t len) {
  mem_rec_t *r;
  if (m->map.count >= m->capacity) return UV_ENOSPC;
  r = rec_new(m, key, len, 0);
  if (r == NULL) return UV_ENOMEM;
  rn__kmap_insert(&m->map, &r->node);
  return 0;
}

static void mem_claim(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                      const char *key, size_t len, uint64_t window) {
  mem_store_t *m = (mem_store_t *)store;
  mem_rec_t *r;
  int err;
  (void)window;
  mem_sweep(m);
  r = mem_find(m, key, len);
  if (r != NULL && r->done) {
    rn_dedupe_answer_t a;
    a.error = r->error;
    a.body = r->body;
    a.len = r->len;
    rn_dedupe_op_done(op, 0, RN_DEDUPE_DONE, &a);
  } else if (r != NULL) {
    rn_dedupe_op_done(op, 0, RN_DEDUPE_BUSY, NULL);
  } else if ((err = mem_add(m, key, len)) != 0) {
    rn_dedupe_op_done(op, err, 0, NULL);
  } else {
    rn_dedupe_op_done(op, 0, RN_DEDUPE_NEW, NULL);
  }
}

/* The answer goes after the key, in a new record that replaces the claim
 * only once it exists: when memory runs out the claim stays, in progress
 * until the window ends, so a duplicate is refused rather than run. */
static void mem_finish(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                       const char *key, size_t len, uint64_t window,
                       const rn_dedupe_answer_t *answer) {
  mem_store_t *m = (mem_store_t *)store;
  mem_rec_t *old = mem_find(m, key, len);
  mem_rec_t *r = rec_new(m, key, len, answer->len);
  uint64_t expires = rn_loop_now(m->loop) + window;

  if (r == NULL) {
    if (old != NULL && !old->done && rn_list_empty(&old->fifo)) {
      old->expires = expires;
      rn_list_insert_tail(&m->fifo, &old->fifo);
    }
    rn_dedupe_op_done(op, UV_ENOMEM, 0, NULL);
    return;
  }
  if (old != NULL) rec_free(m, old);
  if (answer->len > 0) memcpy(r->body, answer->body, answer->len);
  r->len = answer->len;
  r->error = answer->error;
  r->done = 1;
  r->expires = expires;
  rn__kmap_insert(&m->map, &r->node);
  rn_list_insert_tail(&m->fifo, &r->fifo);
  rn_dedupe_op_done(op, 0, 0, NULL);
}

static void mem_release(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                        const char *key, size_t len) {
  mem_store_t *m = (mem_store_t *)store;
  mem_rec_t *r = mem_find(m, key, len);
  if (r != NULL && !r->done) rec_free(m, r);
  rn_dedupe_op_done(op, 0, 0, NULL);
}

static void mem_close(rn_dedupe_store_t *store) {
  mem_store_t *m = (mem_store_t *)store;
  size_t i;
  for (i = 0; i <= m->map.mask; i++) {
    rn__kmap_node_t *n = m->map.buckets[i];
    while (n != NULL) {
      rn__kmap_node_t *next = n->next;
      free(RN_CONTAINER_OF(n, mem_rec_t, node));
      n = next;
    }
  }
  rn__kmap_free(&m->map);
  free(m);
}

int rn_dedupe_memory_new(rn_loop_t *loop, size_t capacity,
                         rn_dedupe_store_t **out) {
  mem_store_t *m;
  *out = NULL;
  if (capacity == 0) return UV_EINVAL;
  m = calloc(1, sizeof(*m));
  if (m == NULL) return UV_ENOMEM;
  if (rn__kmap_init(&m->map, rn__random(loop)) != 0) {
    free(m);
    return UV_ENOMEM;
  }
  m->loop = loop;
  m->capacity = capacity;
  rn_list_init(&m->fifo);
  m->base.data = NULL;
  m->base.claim = mem_claim;
  m->base.finish = mem_finish;
  m->base.release = mem_release;
  m->base.close = mem_close;
  *out = &m->base;
  return 0;
}

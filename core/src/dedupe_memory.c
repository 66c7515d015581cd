/* The default dedupe store: in memory, answering at once.
 *
 * Finished keys sit on two lists: by last use (capacity drops the least
 * recently used first) and by finish time (the window is the same for
 * every key, so expiry goes in finish order and a sweep from the oldest
 * end stops at the first live key). Keys in progress are never dropped:
 * their requests are running on this server. */
#include "dedupe.h"

#include <stdlib.h>
#include <string.h>

typedef struct mem_rec_s {
  rn__kmap_node_t node;
  rn_list_t lru;   /* finished: most recently used first */
  rn_list_t fifo;  /* finished: oldest first */
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
  rn_list_t lru;
  rn_list_t fifo;
} mem_store_t;

static void rec_free(mem_store_t *m, mem_rec_t *r) {
  rn__kmap_remove(&m->map, &r->node);
  rn_list_remove(&r->lru);
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

/* A record for key (in progress), making room if needed; NULL when every
 * key is in progress (or out of memory). */
static mem_rec_t *mem_add(mem_store_t *m, const char *key, size_t len) {
  mem_rec_t *r;
  if (m->map.count >= m->capacity) {
    if (rn_list_empty(&m->lru)) return NULL;
    rec_free(m, RN_CONTAINER_OF(m->lru.prev, mem_rec_t, lru));
  }
  r = calloc(1, sizeof(*r) + len);
  if (r == NULL) return NULL;
  memcpy(r + 1, key, len);
  r->node.key = (const char *)(r + 1);
  r->node.key_len = len;
  r->node.hash = rn__kmap_hash(&m->map, key, len);
  rn_list_init(&r->lru);
  rn_list_init(&r->fifo);
  rn__kmap_insert(&m->map, &r->node);
  return r;
}

static void mem_claim(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                      const char *key, size_t len, uint64_t window) {
  mem_store_t *m = (mem_store_t *)store;
  mem_rec_t *r;
  (void)window;
  mem_sweep(m);
  r = mem_find(m, key, len);
  if (r != NULL && r->done) {
    rn_dedupe_answer_t a;
    rn_list_remove(&r->lru);
    rn_list_insert_head(&m->lru, &r->lru);
    a.error = r->error;
    a.body = r->body;
    a.len = r->len;
    rn_dedupe_op_done(op, 0, RN_DEDUPE_DONE, &a);
  } else if (r != NULL) {
    rn_dedupe_op_done(op, 0, RN_DEDUPE_BUSY, NULL);
  } else if (mem_add(m, key, len) == NULL) {
    rn_dedupe_op_done(op, UV_ENOSPC, 0, NULL);
  } else {
    rn_dedupe_op_done(op, 0, RN_DEDUPE_NEW, NULL);
  }
}

static void mem_finish(rn_dedupe_store_t *store, rn_dedupe_op_t *op,
                       const char *key, size_t len, uint64_t window,
                       const rn_dedupe_answer_t *answer) {
  mem_store_t *m = (mem_store_t *)store;
  mem_rec_t *r = mem_find(m, key, len), *grown;

  if (r == NULL) r = mem_add(m, key, len);
  if (r == NULL) {
    rn_dedupe_op_done(op, UV_ENOSPC, 0, NULL);
    return;
  }
  /* The answer goes after the key, in the record's own allocation. */
  rn__kmap_remove(&m->map, &r->node);
  rn_list_remove(&r->lru);
  rn_list_remove(&r->fifo);
  grown = realloc(r, sizeof(*r) + len + answer->len);
  if (grown == NULL) {
    free(r);
    rn_dedupe_op_done(op, UV_ENOMEM, 0, NULL);
    return;
  }
  r = grown;
  r->node.key = (const char *)(r + 1);
  r->body = (char *)(r + 1) + len;
  if (answer->len > 0) memcpy(r->body, answer->body, answer->len);
  r->len = answer->len;
  r->error = answer->error;
  r->done = 1;
  r->expires = rn_loop_now(m->loop) + window;
  rn_list_init(&r->lru);
  rn_list_init(&r->fifo);
  rn__kmap_insert(&m->map, &r->node);
  rn_list_insert_head(&m->lru, &r->lru);
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
  rn_list_init(&m->lru);
  rn_list_init(&m->fifo);
  m->base.data = NULL;
  m->base.claim = mem_claim;
  m->base.finish = mem_finish;
  m->base.release = mem_release;
  m->base.close = mem_close;
  *out = &m->base;
  return 0;
}

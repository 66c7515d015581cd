/* A small intrusive hash map keyed by byte strings, shared by the dedupe
 * logic (keys in flight here) and the in-memory dedupe store. Keys come
 * from clients: the hash is seeded per map. */
#ifndef RN_DEDUPE_H
#define RN_DEDUPE_H

#include "internal.h"

typedef struct rn__kmap_node_s {
  struct rn__kmap_node_s *next;
  uint64_t hash;
  const char *key; /* owned by the node's container */
  size_t key_len;
} rn__kmap_node_t;

typedef struct rn__kmap_s {
  rn__kmap_node_t **buckets;
  size_t mask;  /* buckets - 1 (a power of two) */
  size_t count;
  uint64_t seed;
} rn__kmap_t;

/* 0 or UV_ENOMEM. */
int rn__kmap_init(rn__kmap_t *map, uint64_t seed);
void rn__kmap_free(rn__kmap_t *map); /* the nodes are the caller's */
uint64_t rn__kmap_hash(const rn__kmap_t *map, const char *key, size_t len);
rn__kmap_node_t *rn__kmap_find(const rn__kmap_t *map, const char *key,
                               size_t len, uint64_t hash);
/* node->hash, key and key_len set; the key is not in the map. Growing
 * may fail (UV_ENOMEM) but the node is inserted anyway. */
void rn__kmap_insert(rn__kmap_t *map, rn__kmap_node_t *node);
void rn__kmap_remove(rn__kmap_t *map, rn__kmap_node_t *node);

/* The memory store's allocator (malloc); tests make it fail. */
extern void *(*rn__dedupe_memory_malloc)(size_t size);

#endif /* RN_DEDUPE_H */

/* The byte-string hash map of dedupe.h. */
#include "dedupe.h"

#include <stdlib.h>
#include <string.h>

#define RN_KMAP_INITIAL 64

int rn__kmap_init(rn__kmap_t *map, uint64_t seed) {
  map->buckets = calloc(RN_KMAP_INITIAL, sizeof(*map->buckets));
  if (map->buckets == NULL) return UV_ENOMEM;
  map->mask = RN_KMAP_INITIAL - 1;
  map->count = 0;
  map->seed = seed;
  return 0;
}

void rn__kmap_free(rn__kmap_t *map) {
  free(map->buckets);
  map->buckets = NULL;
}

/* FNV-1a from a seeded start, then a 64-bit finaliser so that the low bits
 * used for the bucket depend on every byte. */
uint64_t rn__kmap_hash(const rn__kmap_t *map, const char *key, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL ^ map->seed;
  size_t i;
  for (i = 0; i < len; i++) {
    h ^= (unsigned char)key[i];
    h *= 0x100000001b3ULL;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

rn__kmap_node_t *rn__kmap_find(const rn__kmap_t *map, const char *key,
                               size_t len, uint64_t hash) {
  rn__kmap_node_t *n;
  for (n = map->buckets[hash & map->mask]; n != NULL; n = n->next)
    if (n->hash == hash && n->key_len == len &&
        memcmp(n->key, key, len) == 0)
      return n;
  return NULL;
}

static void kmap_grow(rn__kmap_t *map) {
  size_t size = (map->mask + 1) * 2, i;
  rn__kmap_node_t **b = calloc(size, sizeof(*b));
  if (b == NULL) return; /* longer chains, still correct */
  for (i = 0; i <= map->mask; i++) {
    rn__kmap_node_t *n = map->buckets[i];
    while (n != NULL) {
      rn__kmap_node_t *next = n->next;
      n->next = b[n->hash & (size - 1)];
      b[n->hash & (size - 1)] = n;
      n = next;
    }
  }
  free(map->buckets);
  map->buckets = b;
  map->mask = size - 1;
}

void rn__kmap_insert(rn__kmap_t *map, rn__kmap_node_t *node) {
  rn__kmap_node_t **head;
  if (map->count >= map->mask + 1) kmap_grow(map);
  head = &map->buckets[node->hash & map->mask];
  node->next = *head;
  *head = node;
  map->count++;
}

void rn__kmap_remove(rn__kmap_t *map, rn__kmap_node_t *node) {
  rn__kmap_node_t **p = &map->buckets[node->hash & map->mask];
  while (*p != NULL && *p != node) p = &(*p)->next;
  if (*p == NULL) return;
  *p = node->next;
  node->next = NULL;
  map->count--;
}

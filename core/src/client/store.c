/* rnp key stores: where a keyed call's attempt may be retried.
 *
 * A server that keeps dedupe keys names the store they live in (its HELLO's
 * DEDUPE, docs/protocol.md section 9.1); servers sharing a store name the
 * same one. A keyed call whose attempt may have run is safe to send again
 * only where the same store will recognise its key. The ids are interned
 * in a small per-pool table so that a call carries a uint16 index and the
 * placement check (pool.c) is one comparison. Endpoints hold references;
 * calls hold none (that would cost every call a check when it is freed):
 * instead a slot stays reserved until the deadline of the last call bound
 * to it, after which no call can read it (a done call is never placed).
 * A slot with neither is reused, so the table stays as small as the stores
 * in use (a restarted in-memory server names a new store each time). */
#include "client.h"

#include <stdlib.h>
#include <string.h>

struct rn__store_slot_s {
  char id[RN_RNP_DEDUPE_SIZE];
  uint32_t refs;       /* endpoints announcing it now */
  uint64_t bound_until; /* loop ms: the latest deadline of a call bound to
                           it; UINT64_MAX: a call without one */
};

static int store_slot_free(const struct rn__store_slot_s *s, uint64_t now) {
  return s->refs == 0 && s->bound_until < now;
}

/* Index of id's slot (ref: with one more reference); 0 when the table
 * cannot grow (the caller then knows no store, the safe side: no
 * retry). */
static uint16_t store_intern(rn_pool_t *pool, const char *id, int ref) {
  size_t i, free_slot = 0;
  uint64_t now = rn_loop_now(pool->loop);
  for (i = 1; i < pool->store_count; i++) {
    struct rn__store_slot_s *s = &pool->stores[i];
    if (store_slot_free(s, now)) {
      if (free_slot == 0) free_slot = i;
    } else if (memcmp(s->id, id, RN_RNP_DEDUPE_SIZE) == 0) {
      s->refs += ref != 0;
      return (uint16_t)i;
    }
  }
  if (free_slot == 0) {
    /* Slot 0 stands for "none"; RN_STORE_MIXED is never a slot. */
    size_t n = pool->store_count == 0 ? 2 : pool->store_count + 1;
    struct rn__store_slot_s *grown;
    if (n >= RN_STORE_MIXED) return 0;
    grown = realloc(pool->stores, n * sizeof(*grown));
    if (grown == NULL) return 0;
    pool->stores = grown;
    memset(&grown[0], 0, sizeof(grown[0]));
    free_slot = n - 1;
    pool->store_count = (uint16_t)n;
  }
  memcpy(pool->stores[free_slot].id, id, RN_RNP_DEDUPE_SIZE);
  pool->stores[free_slot].refs = ref != 0;
  pool->stores[free_slot].bound_until = 0;
  return (uint16_t)free_slot;
}

static void store_drop(rn_pool_t *pool, uint16_t store) {
  if (store != 0 && store != RN_STORE_MIXED) pool->stores[store].refs--;
}

void rn__store_announced(rn_conn_t *conn, const char *id) {
  rn_pool_endpoint_t *ep = conn->endpoint;
  uint16_t old = ep->store;
  conn->has_store = id != NULL;
  if (id != NULL) memcpy(conn->store_id, id, RN_RNP_DEDUPE_SIZE);
  /* Interned before the old one goes: the same id keeps its slot. */
  ep->store = id != NULL ? store_intern(conn->pool, id, 1) : 0;
  store_drop(conn->pool, old);
}

void rn__store_endpoint_gone(rn_pool_t *pool, rn_pool_endpoint_t *ep) {
  store_drop(pool, ep->store);
  ep->store = 0;
}

void rn__store_bind(rn_call_t *call, const rn_conn_t *conn) {
  rn_pool_t *pool = call->pool;
  struct rn__store_slot_s *slot;
  uint64_t until;
  if (call->store == RN_STORE_MIXED) return;
  if (call->store == 0) {
    uint16_t s = conn->has_store ? store_intern(pool, conn->store_id, 0) : 0;
    call->store = s != 0 ? s : RN_STORE_MIXED;
  } else if (!conn->has_store ||
             memcmp(pool->stores[call->store].id, conn->store_id,
                    RN_RNP_DEDUPE_SIZE) != 0) {
    /* Written where the store differs from an earlier attempt's that may
     * have run (a connection still open to its server's previous
     * process): no one store has seen every attempt, so none may be
     * trusted. */
    call->store = RN_STORE_MIXED;
  }
  if (call->store == RN_STORE_MIXED) return;
  /* Reserved for as long as the call may be placed. */
  until = rn_timer_is_active(&call->deadline) ? call->deadline.due
                                              : UINT64_MAX;
  slot = &pool->stores[call->store];
  if (until > slot->bound_until) slot->bound_until = until;
}

void rn__store_free_all(rn_pool_t *pool) {
  free(pool->stores);
  pool->stores = NULL;
  pool->store_count = 0;
}

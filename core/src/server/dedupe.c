/* Dedupe of keyed rnp requests: the one piece of logic, whatever the store.
 *
 * Per key in flight on this server there is one entry: its original (the
 * request that claimed the key) and the duplicates waiting for it. The
 * store (memory, or the application's: C or Lua) answers whether a key is
 * new, in progress elsewhere, or finished, and records answers; it may
 * take its time. An entry lives from the claim until the store recorded
 * the answer (or forgot the claim), so duplicates arriving meanwhile never
 * reach the store: they wait, or get the answer the entry keeps. */
#include "dedupe.h"
#include "server.h"

#include <stdlib.h>
#include <string.h>

typedef enum {
  DEDUPE_CLAIM = 1,
  DEDUPE_FINISH,
  DEDUPE_RELEASE
} dedupe_kind_t;

typedef enum {
  ENTRY_CLAIMING = 1, /* waiting for the store's claim */
  ENTRY_RUNNING,      /* the original runs */
  ENTRY_FINISHING,    /* answered; the store is recording it */
  ENTRY_RELEASING     /* refused as not executed; the store forgets it */
} entry_state_t;

struct rn_dedupe_op_s {
  rn__dedupe_entry_t *entry;
  dedupe_kind_t kind;
  int in_call;   /* inside the store's function */
  int completed; /* rn_dedupe_op_done was called */
  int status;
  rn_dedupe_state_t state;
  unsigned error;  /* claim DONE: the stored answer */
  char *body;
  size_t len;
};

struct rn__dedupe_entry_s {
  rn__kmap_node_t node;
  rn__dedupe_t *d;
  entry_state_t state;
  rn_request_t *owner;
  rn_list_t waiters;
  rn_dedupe_op_t op;
  rn__answer_t answer; /* FINISHING, RELEASING: given to late duplicates */
  char *answer_body;
};

struct rn__dedupe_s {
  rn_server_t *server;
  rn_dedupe_store_t *store;
  rn__kmap_t map;
  unsigned pending; /* store operations not yet answered */
};

int rn__dedupe_new(rn_server_t *server, rn__dedupe_t **out) {
  rn__dedupe_t *d = calloc(1, sizeof(*d));
  int err;
  *out = NULL;
  if (d == NULL) return UV_ENOMEM;
  d->server = server;
  err = rn__kmap_init(&d->map, rn__random(server->loop));
  if (err == 0 && server->options.dedupe.store == NULL)
    err = rn_dedupe_memory_new(server->loop, server->options.dedupe.capacity,
                               &d->store);
  if (err) {
    rn__kmap_free(&d->map);
    free(d);
    return err;
  }
  if (d->store == NULL) d->store = server->options.dedupe.store;
  /* A store that names itself is shared (servers on one Redis announce
   * the same id); one that does not keeps keys for this process only. */
  memcpy(server->store_id,
         d->store->id != NULL ? d->store->id : server->incarnation,
         RN_RNP_DEDUPE_SIZE);
  *out = d;
  return 0;
}

int rn__dedupe_busy(const rn__dedupe_t *d) { return d->pending > 0; }

void rn__dedupe_free(rn__dedupe_t *d) {
  /* Entries live while their owner or an op does: none are left. */
  rn__kmap_free(&d->map);
  if (d->store->close != NULL) d->store->close(d->store);
  free(d);
}

static void entry_free(rn__dedupe_entry_t *e) {
  rn__kmap_remove(&e->d->map, &e->node);
  free(e->op.body);
  free(e->answer_body);
  free(e);
}

/* ------------------------------------------------------------------------ */
/* Answers                                                                    */

static void answer_waiters(rn__dedupe_entry_t *e, const rn__answer_t *a,
                           uint64_t *counter) {
  while (!rn_list_empty(&e->waiters)) {
    rn_request_t *req = RN_CONTAINER_OF(e->waiters.next, rn_request_t, wait);
    rn_list_remove(&req->wait);
    req->waiting = 0;
    req->entry = NULL;
    if (req->has_deadline) rn_list_remove(&req->joined);
    if (counter != NULL) (*counter)++;
    (void)rn__server_rnp_answer(req, a);
  }
}

/* The original and its waiters all get a; the entry goes. */
static void entry_answer_all(rn__dedupe_entry_t *e, const rn__answer_t *a,
                             uint64_t *counter) {
  rn_request_t *owner = e->owner;
  e->owner = NULL;
  answer_waiters(e, a, counter);
  if (owner != NULL) {
    owner->owner = 0;
    owner->entry = NULL;
    if (counter != NULL) (*counter)++;
    (void)rn__server_rnp_answer(owner, a);
  }
  entry_free(e); /* last: a may point into it */
}

static void error_answer(rn__answer_t *a, unsigned code, unsigned flags,
                         uint64_t retry_after, const char *msg) {
  memset(a, 0, sizeof(*a));
  a->type = RN_RNP_ERROR;
  a->code = code;
  a->flags = flags;
  a->retry_after = retry_after;
  a->body = msg;
  a->len = strlen(msg);
}

/* ------------------------------------------------------------------------ */
/* Store operations                                                           */

static void op_finish(rn__dedupe_entry_t *e);

static void op_start(rn__dedupe_entry_t *e, dedupe_kind_t kind,
                     const rn_dedupe_answer_t *answer) {
  rn__dedupe_t *d = e->d;
  rn_dedupe_store_t *store = d->store;
  rn_dedupe_op_t *op = &e->op;
  uint64_t window = d->server->options.dedupe.window_ms;

  op->entry = e;
  op->kind = kind;
  op->completed = 0;
  op->status = 0;
  op->in_call = 1;
  d->pending++;
  switch (kind) {
  case DEDUPE_CLAIM:
    store->claim(store, op, e->node.key, e->node.key_len, window);
    break;
  case DEDUPE_FINISH:
    store->finish(store, op, e->node.key, e->node.key_len, window, answer);
    break;
  case DEDUPE_RELEASE:
    store->release(store, op, e->node.key, e->node.key_len);
    break;
  }
  op->in_call = 0;
  /* Answered from inside: carry on now that the store's frame is gone. */
  if (op->completed) op_finish(e);
}

void rn_dedupe_op_done(rn_dedupe_op_t *op, int status,
                       rn_dedupe_state_t state,
                       const rn_dedupe_answer_t *answer) {
  if (op->completed) return; /* a store bug; answering twice changes nothing */
  op->completed = 1;
  op->status = status;
  op->state = state;
  if (op->kind == DEDUPE_CLAIM && status == 0) {
    if (state == RN_DEDUPE_DONE && answer != NULL) {
      op->error = answer->error;
      op->len = answer->len;
      op->body = malloc(answer->len ? answer->len : 1);
      if (op->body == NULL)
        op->status = UV_ENOMEM;
      else if (answer->len > 0)
        memcpy(op->body, answer->body, answer->len);
    } else if (state != RN_DEDUPE_NEW && state != RN_DEDUPE_BUSY) {
      op->status = UV_EINVAL; /* DONE without an answer, or no state */
    }
  }
  if (!op->in_call) op_finish(op->entry);
}

/* The store could not claim the key: nothing ran, so the original and its
 * duplicates are refused as not executed. A store that failed half way
 * may hold the claim all the same (a write that timed out may have
 * landed): it is released, or the key would read "in progress" for the
 * whole window. A full store is the store working as sized: its own event
 * and stat. */
static void claim_failed(rn__dedupe_entry_t *e, int status) {
  rn_server_t *server = e->d->server;
  rn_request_t *owner = e->owner;
  int full = status == UV_ENOSPC;

  error_answer(&e->answer, RN_RNP_ERR_OVERLOADED, RN_RNP_NOT_EXECUTED,
               server->options.retry_after_ms,
               full ? "the dedupe store is full: retry later"
                    : "the dedupe store is unavailable");
  e->owner = NULL;
  e->state = ENTRY_RELEASING;
  answer_waiters(e, &e->answer, NULL);
  if (owner != NULL) {
    owner->owner = 0;
    owner->entry = NULL;
    (void)rn__server_rnp_answer(owner, &e->answer);
  }
  if (full) server->stats.dedupe_full++;
  rn__server_event(server,
                   full ? RN_SERVER_EVENT_DEDUPE_FULL : RN_SERVER_EVENT_STORE,
                   0, status);
  op_start(e, DEDUPE_RELEASE, NULL); /* may free e */
}

static void claim_done(rn__dedupe_entry_t *e) {
  rn__dedupe_t *d = e->d;
  rn_server_t *server = d->server;
  rn_dedupe_op_t *op = &e->op;
  rn__answer_t a;

  if (op->status < 0) {
    claim_failed(e, op->status);
    return;
  }
  switch (op->state) {
  case RN_DEDUPE_NEW:
    if (server->closing) {
      /* Not run after all: the key must not stay claimed. The owner's
       * connection is gone with the server's. */
      rn_request_t *owner = e->owner;
      e->owner = NULL;
      error_answer(&a, RN_RNP_ERR_SHUTDOWN, RN_RNP_NOT_EXECUTED, 0,
                   "the server is closing");
      answer_waiters(e, &a, NULL); /* none: their connections closed */
      e->state = ENTRY_RELEASING;
      if (owner != NULL) {
        owner->owner = 0;
        owner->entry = NULL;
      }
      op_start(e, DEDUPE_RELEASE, NULL); /* may free e */
      if (owner != NULL) rn__server_request_release(owner);
      return;
    }
    e->state = ENTRY_RUNNING;
    rn__server_rnp_run(e->owner);
    return;
  case RN_DEDUPE_BUSY:
    error_answer(&a, RN_RNP_ERR_IN_PROGRESS, 0, server->options.retry_after_ms,
                 "a request with this key is in progress");
    entry_answer_all(e, &a, &server->stats.busy);
    return;
  default: /* RN_DEDUPE_DONE */
    memset(&a, 0, sizeof(a));
    if (op->error == 0) {
      a.type = RN_RNP_REPLY;
    } else {
      a.type = RN_RNP_ERROR;
      a.code = op->error;
      /* A stored not-executed error would be a store's bug; the flag is
       * only ever a promise about this very request. */
    }
    a.body = op->body;
    a.len = op->len;
    entry_answer_all(e, &a, &server->stats.replayed);
    return;
  }
}

static void op_finish(rn__dedupe_entry_t *e) {
  rn__dedupe_t *d = e->d;
  rn_server_t *server = d->server;
  int status = e->op.status;

  /* Still counted while its outcome runs: releasing the last request
   * must not let a closing server finish under a follow-up op. */
  if (e->op.kind == DEDUPE_CLAIM) {
    claim_done(e);
  } else {
    /* Recorded or forgotten: duplicates from now on go to the store. */
    entry_free(e);
    if (status < 0)
      rn__server_event(server, RN_SERVER_EVENT_STORE, 0, status);
  }
  d->pending--;
  rn__server_maybe_finish(server);
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                   */

void rn__dedupe_begin(rn__dedupe_t *d, rn_request_t *req) {
  /* The scoped key: one identity's keys are not another's. */
  const char *key = req->dedupe_key;
  size_t key_len = req->dedupe_key_len;
  uint64_t hash = rn__kmap_hash(&d->map, key, key_len);
  rn__kmap_node_t *n = rn__kmap_find(&d->map, key, key_len, hash);
  rn__dedupe_entry_t *e;
  rn__answer_t a;

  if (n != NULL) {
    e = RN_CONTAINER_OF(n, rn__dedupe_entry_t, node);
    if (e->state == ENTRY_CLAIMING || e->state == ENTRY_RUNNING) {
      req->waiting = 1;
      req->entry = e;
      rn_list_insert_tail(&e->waiters, &req->wait);
      d->server->stats.joined++;
      if (req->has_deadline) rn__server_rnp_joined(req);
      return;
    }
    /* The answer is known; the store is still writing it down. */
    if (e->state == ENTRY_FINISHING) d->server->stats.replayed++;
    (void)rn__server_rnp_answer(req, &e->answer);
    return;
  }
  e = calloc(1, sizeof(*e));
  if (e == NULL) {
    error_answer(&a, RN_RNP_ERR_OVERLOADED, RN_RNP_NOT_EXECUTED,
                 d->server->options.retry_after_ms, "out of memory");
    (void)rn__server_rnp_answer(req, &a);
    return;
  }
  /* The key lives in the request while it owns the entry, then in the
   * entry's answer buffer: both outlive every use. Copy it once here. */
  e->answer_body = malloc(key_len);
  if (e->answer_body == NULL) {
    free(e);
    error_answer(&a, RN_RNP_ERR_OVERLOADED, RN_RNP_NOT_EXECUTED,
                 d->server->options.retry_after_ms, "out of memory");
    (void)rn__server_rnp_answer(req, &a);
    return;
  }
  memcpy(e->answer_body, key, key_len);
  e->d = d;
  e->node.hash = hash;
  e->node.key = e->answer_body;
  e->node.key_len = key_len;
  e->state = ENTRY_CLAIMING;
  e->owner = req;
  rn_list_init(&e->waiters);
  req->owner = 1;
  req->entry = e;
  rn__kmap_insert(&d->map, &e->node);
  op_start(e, DEDUPE_CLAIM, NULL);
}

void rn__dedupe_end(rn__dedupe_t *d, rn_request_t *req,
                    const rn__answer_t *a) {
  rn__dedupe_entry_t *e = req->entry;
  int executed = a->type == RN_RNP_REPLY || !rn__rnp_not_executed(a->code);
  rn_dedupe_answer_t stored;
  char *copy;
  (void)d;

  req->owner = 0;
  req->entry = NULL;
  e->owner = NULL;
  /* Keep the answer for duplicates that arrive while the store works:
   * key first, then the body, in one buffer. */
  copy = realloc(e->answer_body, e->node.key_len + a->len + 1);
  if (copy != NULL) {
    e->answer_body = copy;
    e->node.key = copy;
    if (a->len > 0) memcpy(copy + e->node.key_len, a->body, a->len);
    e->answer = *a;
    e->answer.body = copy + e->node.key_len;
  } else {
    /* Late duplicates get a refusal instead; they may retry. */
    error_answer(&e->answer, RN_RNP_ERR_IN_PROGRESS, 0,
                 d->server->options.retry_after_ms, "out of memory");
  }
  answer_waiters(e, a, NULL);
  if (executed) {
    e->state = ENTRY_FINISHING;
    stored.error = a->type == RN_RNP_REPLY ? 0 : a->code;
    stored.body = a->body;
    stored.len = a->len;
    op_start(e, DEDUPE_FINISH, &stored);
  } else {
    /* Refused without running: duplicates are refused alike, and the key
     * is forgotten so that a retry runs it. */
    e->state = ENTRY_RELEASING;
    op_start(e, DEDUPE_RELEASE, NULL);
  }
}

void rn__dedupe_leave(rn_request_t *req) {
  rn_list_remove(&req->wait);
  if (req->has_deadline) rn_list_remove(&req->joined);
  req->waiting = 0;
  req->entry = NULL;
}

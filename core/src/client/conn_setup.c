/* A connection's setup: the requests every new connection sends before it
 * takes calls (the pool's `setup`, the resp conveniences password,
 * database and client_name, ROLE for a pool that wants a role), and what
 * a Redis reply says about the server rather than about one call (it is
 * a replica now, it is loading its dataset).
 *
 * The frames are encoded once, by rn_pool_new, back to back in
 * pool->setup_frames: the password then lives in one buffer, wiped when
 * the pool goes. conn.c sends them during the handshake (ahead of the
 * readiness ping, in the same write) and asks rn__conn_setup_check about
 * each answer; the connection is ready once all are answered. */
#include "client.h"
#include "../codec/resp_errors.h" /* rn__resp_error_code */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Encoding                                                                   */

static size_t setup_len(const rn_setup_request_t *r, size_t i) {
  return r->lens != NULL ? r->lens[i] : strlen(r->args[i]);
}

/* Appends one resp command of count words. */
static int setup_add_words(rn_pool_t *pool, const char *const *words,
                           const size_t *lens, size_t count) {
  rn_setup_request_t r;
  size_t i;
  int err;
  r.args = words;
  r.lens = lens;
  r.count = count;
  err = rn_resp_encode_array(&pool->setup_frames, count);
  for (i = 0; i < count && err == 0; i++)
    err = rn_resp_encode_bulk(&pool->setup_frames, words[i], setup_len(&r, i));
  if (err == 0) pool->setup_ends[pool->setup_count++] = pool->setup_frames.len;
  return err;
}

/* One request of the pool's `setup`: a resp command, or a body the codec
 * frames (line, length, rnp). */
static int setup_add(rn_pool_t *pool, const rn_setup_request_t *r) {
  int err;
  size_t i;
  if (r->count == 0 || r->args == NULL) return UV_EINVAL;
  for (i = 0; i < r->count; i++)
    if (r->args[i] == NULL) return UV_EINVAL;
  if (pool->codec.protocol == RN_PROTOCOL_RESP)
    return setup_add_words(pool, r->args, r->lens, r->count);
  if (r->count != 1) return UV_EINVAL;
  if (pool->codec.protocol == RN_PROTOCOL_RNP) {
    /* Without the codec's DEADLINE placeholder (0: already expired), which
     * a call's deadline overwrites as it leaves: a setup request has no
     * deadline but connect_timeout, which is the client's to keep. */
    rn_rnp_frame_t f;
    memset(&f, 0, sizeof(f));
    f.type = RN_RNP_REQUEST;
    f.payload = r->args[0];
    f.payload_len = setup_len(r, 0);
    err = rn_rnp_encode(&pool->setup_frames, &f, pool->codec.max_frame);
  } else {
    err = rn_codec_encode(&pool->codec, &pool->setup_frames, r->args[0],
                          setup_len(r, 0));
  }
  if (err == 0) pool->setup_ends[pool->setup_count++] = pool->setup_frames.len;
  return err;
}

/* Whether Redis takes name for CLIENT SETNAME: printable ASCII without
 * spaces ('!' to '~'; empty clears a name). Refused when the pool is made,
 * not by every connect's setup. */
static int setup_name_ok(const char *name) {
  for (; *name != '\0'; name++)
    if (*name < '!' || *name > '~') return 0;
  return 1;
}

int rn__setup_make(rn_pool_t *pool, const rn_pool_options_t *o) {
  int resp = pool->codec.protocol == RN_PROTOCOL_RESP;
  size_t count = o->setup_count, i;
  int err = 0;

  if (o->setup_count > 0 && o->setup == NULL) return UV_EINVAL;
  if ((unsigned)o->role > RN_ROLE_REPLICA) return UV_EINVAL;
  /* Redis words: meaningless to another protocol's server. */
  if (!resp && (o->password != NULL || o->username != NULL ||
                o->database != 0 || o->client_name != NULL ||
                o->role != RN_ROLE_ANY))
    return UV_EINVAL;
  if (o->username != NULL && o->password == NULL) return UV_EINVAL;
  if (o->client_name != NULL && !setup_name_ok(o->client_name))
    return UV_EINVAL;
  count += (o->password != NULL) + (o->database != 0) +
           (o->client_name != NULL) + (o->role != RN_ROLE_ANY);
  if (count == 0) return 0;
  pool->setup_ends = malloc(count * sizeof(*pool->setup_ends));
  if (pool->setup_ends == NULL) return UV_ENOMEM;

  /* Authentication first: a server with a password answers nothing else
   * before it. */
  if (o->password != NULL) {
    const char *auth[3];
    size_t n = 0;
    auth[n++] = "AUTH";
    if (o->username != NULL) auth[n++] = o->username;
    auth[n++] = o->password;
    err = setup_add_words(pool, auth, NULL, n);
  }
  if (err == 0 && o->database != 0) {
    char db[16];
    const char *select[2];
    snprintf(db, sizeof(db), "%u", o->database);
    select[0] = "SELECT";
    select[1] = db;
    err = setup_add_words(pool, select, NULL, 2);
  }
  if (err == 0 && o->client_name != NULL) {
    const char *name[3];
    name[0] = "CLIENT";
    name[1] = "SETNAME";
    name[2] = o->client_name;
    err = setup_add_words(pool, name, NULL, 3);
  }
  for (i = 0; i < o->setup_count && err == 0; i++)
    err = setup_add(pool, &o->setup[i]);
  /* Last: the role of the server that accepted all the rest. */
  if (err == 0 && o->role != RN_ROLE_ANY) {
    const char *role[1];
    role[0] = "ROLE";
    err = setup_add_words(pool, role, NULL, 1);
  }
  return err;
}

void rn__setup_free(rn_pool_t *pool) {
  rn__wipe(pool->setup_frames.base, pool->setup_frames.len); /* AUTH's */
  rn_buf_free(&pool->setup_frames);
  free(pool->setup_ends);
  pool->setup_ends = NULL;
  pool->setup_count = 0;
}

/* ------------------------------------------------------------------------ */
/* Sending and checking                                                       */

int rn__conn_setup_send(rn_conn_t *conn) {
  rn_pool_t *pool = conn->pool;
  size_t i, start = 0;

  conn->setup_sent = 1;
  for (i = 0; i < pool->setup_count; i++) {
    rn_call_t *call = rn__call_new(pool);
    size_t end = pool->setup_ends[i];
    int err;
    if (call == NULL) return UV_ENOMEM;
    call->internal = 1;
    call->setup = 1;
    err = rn__call_set_frame(call, pool->setup_frames.base + start,
                             end - start);
    if (err) return rn__call_unaccepted(call, err);
    start = end;
    /* Flushed at the turn's end with the ping queued after them: one
     * write. */
    rn__conn_enqueue(conn, call);
    conn->setup_left++;
  }
  return 0;
}

/* The error code of a resp error reply (rn__resp_error_code), or "" (also
 * for a code too long to be one of those this file looks for). */
static void setup_error_code(const char *body, size_t len, char *code,
                             size_t size) {
  const char *c;
  size_t n;
  if (!rn__resp_error_code(body, len, &c, &n) || n >= size) n = 0;
  else memcpy(code, c, n);
  code[n] = '\0';
}

int rn__setup_error_is(const char *body, size_t len, const char *code) {
  char have[16];
  setup_error_code(body, len, have, sizeof(have));
  return strcmp(have, code) == 0;
}

/* The error reply's text, for the connect failure: the server's own words
 * (a WRONGPASS reply names no password), without the leading '-' and the
 * CRLF. */
static int setup_fail(rn_conn_t *conn, int err, const char *body,
                      size_t len) {
  rn_pool_t *pool = conn->pool;
  if (len > 0 && (body[0] == '-' || body[0] == '+')) {
    body++;
    len--;
  }
  while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r')) len--;
  snprintf(pool->connect_why, sizeof(pool->connect_why), "%.*s",
           (int)RN_MIN(len, sizeof(pool->connect_why) - 1), body);
  pool->connect_why_error = err;
  return err;
}

/* The first word of ROLE's array reply ("master", "slave", "sentinel"),
 * or NULL and 0. */
static const char *setup_role_word(const char *body, size_t len,
                                   size_t *word_len) {
  const char *p = body, *end = body + len, *nl;
  size_t n = 0;
  *word_len = 0;
  if (len < 1 || body[0] != '*') return NULL;
  nl = memchr(p, '\n', len);
  if (nl == NULL || nl + 1 >= end || nl[1] != '$') return NULL;
  for (p = nl + 2; p < end && *p >= '0' && *p <= '9'; p++)
    n = n * 10 + (size_t)(*p - '0');
  if (end - p < 2 || p[0] != '\r' || p[1] != '\n' ||
      (size_t)(end - p - 2) < n)
    return NULL;
  *word_len = n;
  return p + 2;
}

static int setup_role_ok(rn_role_t want, const char *word, size_t len) {
  if (word == NULL) return 0;
  if (want == RN_ROLE_MASTER) return len == 6 && memcmp(word, "master", 6) == 0;
  return len == 5 && memcmp(word, "slave", 5) == 0;
}

static void setup_wrong_role_event(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                                   const char *reason) {
  pool->stats.wrong_role++;
  rn__pool_emit_reason(pool, RN_EVENT_WRONG_ROLE, ep, reason, RN_EROLE);
}

int rn__conn_setup_check(rn_conn_t *conn, const rn_call_t *call,
                         const rn_reply_t *m) {
  rn_pool_t *pool = conn->pool;
  int resp = pool->codec.protocol == RN_PROTOCOL_RESP;
  int failed = m->status != 0 || m->kind == RN_REPLY_REFUSED ||
               m->kind == RN_REPLY_TRY_LATER;
  char code[16] = "";

  if (failed && resp) setup_error_code(m->body, m->body_len, code, sizeof(code));
  /* The readiness ping: any answer proves the server alive (a busy one
   * answers -BUSY), but these say it cannot take calls: loading its
   * dataset, or wanting credentials the pool does not send. */
  if (!call->setup) {
    if (strcmp(code, "LOADING") == 0) {
      pool->stats.loading++;
      return setup_fail(conn, RN_ELOADING, m->body, m->body_len);
    }
    if (strcmp(code, "NOAUTH") == 0) {
      pool->stats.setup_failures++;
      return setup_fail(conn, RN_EAUTH, m->body, m->body_len);
    }
    return 0;
  }
  if (failed) {
    int err = RN_ESETUP;
    /* Credentials or permissions: a configuration fault, which trying
     * again soon cannot mend. */
    if (strcmp(code, "WRONGPASS") == 0 || strcmp(code, "NOAUTH") == 0 ||
        strcmp(code, "NOPERM") == 0)
      err = RN_EAUTH;
    else if (strcmp(code, "LOADING") == 0)
      err = RN_ELOADING;
    if (err == RN_ELOADING)
      pool->stats.loading++;
    else
      pool->stats.setup_failures++;
    return setup_fail(conn, err, m->body, m->body_len);
  }
  /* ROLE, the last request, when the pool wants a role. */
  if (pool->options.role != RN_ROLE_ANY && conn->setup_left == 1) {
    size_t len;
    const char *word = setup_role_word(m->body, m->body_len, &len);
    if (!setup_role_ok(pool->options.role, word, len)) {
      char text[64];
      int n = snprintf(text, sizeof(text), "ROLE: the server is %.*s, not %s",
                       word != NULL ? (int)RN_MIN(len, 16) : 7,
                       word != NULL ? word : "unknown",
                       pool->options.role == RN_ROLE_MASTER ? "master"
                                                            : "a replica");
      setup_wrong_role_event(pool, conn->endpoint, "role");
      if (pool->closing) return RN_ECLOSED; /* the handler closed it */
      return setup_fail(conn, RN_EROLE, text, (size_t)RN_MAX(n, 0));
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Replies about the server                                                   */

int rn__setup_server_error(rn_pool_t *pool, rn_pool_endpoint_t *ep,
                           const char *body, size_t body_len) {
  char code[16];
  const char *reason;
  rn_list_t *pos, *tmp;
  int err, found = 0, wrong;

  setup_error_code(body, body_len, code, sizeof(code));
  if (strcmp(code, "LOADING") == 0) {
    reason = "loading";
    err = RN_ELOADING;
  } else if (pool->options.role == RN_ROLE_MASTER &&
             (strcmp(code, "READONLY") == 0 ||
              strcmp(code, "MASTERDOWN") == 0)) {
    reason = code[0] == 'R' ? "readonly" : "masterdown";
    err = RN_EROLE;
  } else {
    return 0;
  }
  /* A wrong server's answer belongs to no call: the call goes to the
   * right one as if never sent. A loading server's is the call's own: the
   * retry table retries it (and classify may veto). */
  wrong = err == RN_EROLE;
  if (ep == NULL || pool->closing) return wrong;
  /* Once per server change: the other calls out on its connections get
   * the same answer, and each would grow the backoff again. */
  rn_list_foreach_safe(pos, tmp, &ep->conns) {
    rn_conn_t *conn = RN_CONTAINER_OF(pos, rn_conn_t, node);
    if (conn->state == RN_CONN_READY && !conn->retiring) found = 1;
  }
  if (!found) return wrong;

  if (err == RN_ELOADING) pool->stats.loading++;
  /* No connect before the backoff's wait: the next one's readiness check
   * (PING, ROLE) says whether the server is back or still wrong. */
  rn__endpoint_failed(pool, ep, err);
  if (err == RN_EROLE) {
    setup_wrong_role_event(pool, ep, reason);
    if (pool->closing) return wrong;
  }
  /* No new call goes to the wrong server; calls out finish there. */
  rn_list_foreach_safe(pos, tmp, &ep->conns) {
    rn_conn_t *conn = RN_CONTAINER_OF(pos, rn_conn_t, node);
    if (conn->state == RN_CONN_READY)
      rn__conn_retire(conn, err == RN_EROLE ? "wrong_role" : "loading");
    if (pool->closing) return wrong;
  }
  if (err == RN_EROLE) rn__pool_want_resolve(pool, "wrong_role");
  rn__endpoint_update(pool, ep, reason, err);
  return wrong;
}

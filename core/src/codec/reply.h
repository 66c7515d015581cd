/* What a frame from a server means to a client connection: the seam
 * between the client and the codecs. A connection asks rn__codec_reply
 * what each frame it reads is (a reply matched in order or by id, the
 * answer to a ping, a refusal, a GOAWAY, a push) and acts on that, never on
 * the protocol's name; a new kind of frame (RESP pushes delivered, frames
 * under TLS) is a new kind here. Not installed. */
#ifndef RN_CODEC_REPLY_H
#define RN_CODEC_REPLY_H

#include "internal.h"

#include <string.h>

typedef enum {
  RN_REPLY_IN_ORDER = 1, /* the reply to the oldest request written */
  RN_REPLY_BY_ID,        /* the reply to request `id` (status 0 or EREPLY) */
  RN_REPLY_TRY_LATER,    /* an error reply to request `id` saying: again,
                            after retry_after_ms (0: when you like) */
  RN_REPLY_REFUSED,      /* request `id` was not run: status is what its
                            caller gets if it is not sent again */
  RN_REPLY_PONG,         /* the answer to ping `id` */
  RN_REPLY_HELLO,        /* the answer to the handshake `id` (see rnp) */
  RN_REPLY_GOAWAY,       /* no request above `id` will be run */
  RN_REPLY_PUSH          /* out of band: nobody's reply */
} rn_reply_kind_t;

typedef struct rn_reply_s {
  rn_reply_kind_t kind;
  int status;        /* IN_ORDER, BY_ID: 0 or RN_EREPLY; REFUSED: the
                        error if the request is not sent again */
  int flags;         /* RN_FRAME_* for the caller's result */
  unsigned again : 1; /* REFUSED: sending it again may be accepted */
  uint64_t id;
  uint64_t retry_after_ms; /* TRY_LATER, REFUSED, GOAWAY; 0: not said */
  const char *body;
  size_t body_len;
  size_t size; /* of the whole frame */
  rn_rnp_frame_t rnp; /* rnp: the frame itself (HELLO's fields) */
} rn_reply_t;

/* Reads the frame at data: 1 and *out filled in, 0 for more bytes, or the
 * error that closes the connection (RN_EBADFRAME, RN_EFRAMESIZE,
 * RN_EPEERPROTOCOL when the server says the client broke the protocol,
 * RN_EUNEXPECTED for a frame no server sends a client). */
int rn__codec_reply(const rn_codec_t *codec, rn_frame_scan_t *scan,
                    const char *data, size_t len, rn_reply_t *out);

static inline int rn__codec_body_is(const rn_reply_t *m, const char *s,
                                    size_t n) {
  return m->body_len == n && memcmp(m->body, s, n) == 0;
}

/* Whether an IN_ORDER reply can be the answer to a ping: RESP's +PONG, or
 * an error reply (a busy, loading or password-protected Redis answers PING
 * with -BUSY, -LOADING, -NOAUTH: still the reply to that PING, in its
 * place), or the array ["pong", ""] by which a RESP2 connection in
 * subscribe mode answers it (so a subscriber's heartbeat keeps working).
 * Any reply for line and length, whose pings the application chose.
 * Asked only when a ping is the oldest request out. */
static inline int rn__codec_reply_is_pong(const rn_codec_t *codec,
                                          const rn_reply_t *m) {
  /* a RESP body is the value */
  static const char pong[] = "+PONG\r\n";
  static const char sub_pong[] = "*2\r\n$4\r\npong\r\n$0\r\n\r\n";
  return codec->protocol != RN_PROTOCOL_RESP || (m->flags & RN_FRAME_ERROR) ||
         rn__codec_body_is(m, pong, sizeof(pong) - 1) ||
         rn__codec_body_is(m, sub_pong, sizeof(sub_pong) - 1);
}

/* Replies come matched by id, in any order (rnp): each request leaves with
 * an id stamped on it, and a partial frame is nobody's reply yet. */
static inline int rn__codec_replies_by_id(const rn_codec_t *codec) {
  return codec->protocol == RN_PROTOCOL_RNP;
}

/* The server may speak unasked (rnp: GOAWAY on an idle connection): bytes
 * with no request out are read and judged, not taken for garbage. */
static inline int rn__codec_speaks_unasked(const rn_codec_t *codec) {
  return codec->protocol == RN_PROTOCOL_RNP;
}

/* Whether the partial frame starting at data (at least one byte) is the
 * reply to the oldest request: not for replies by id, nor a RESP push. */
static inline int rn__codec_partial_is_reply(const rn_codec_t *codec,
                                             const char *data) {
  if (rn__codec_replies_by_id(codec)) return 0;
  return codec->protocol != RN_PROTOCOL_RESP || data[0] != RN_RESP_PUSH;
}

#endif /* RN_CODEC_REPLY_H */

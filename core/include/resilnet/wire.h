/*
 * resilnet/wire.h — the formats on the wire: rnp frames (docs/protocol.md)
 * and RESP values, parsed and encoded without a pool or a server: for
 * codecs, servers' handlers that build replies, fuzzers and tests.
 *
 * Part of the public API: resilnet.h includes it, and it can be
 * included alone (it includes resilnet.h).
 */
#ifndef RESILNET_WIRE_H
#define RESILNET_WIRE_H

#include "../resilnet.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* rnp frames (docs/protocol.md is the specification)                        */
/*
 * Every frame: a 16-byte header, then fields, then the payload. Integers are
 * big-endian.
 *   0  u32 size     bytes after this field: 12 + fields + payload
 *   4  u8  type     RN_RNP_HELLO ... RN_RNP_GOAWAY
 *   5  u8  flags    per type; undefined bits must be 0
 *   6  u16 fields   bytes of fields
 *   8  u64 id       request id (GOAWAY: the last id the server processes)
 *  16  fields       { u8 tag, u8 len, len bytes } ...
 *      payload      ERROR: u16 code, then the message
 * Tags 128..255 are extensions a v1 peer skips; two are defined: AUTH (the
 * client's token, on its HELLO) and DEDUPE (the server's key store, on its
 * HELLO).
 * As the codec's `encode`, rnp makes a REQUEST with id 0 and a DEADLINE
 * field of 0: a pool fills in both as the request leaves on a connection. */

#define RN_RNP_VERSION 1
#define RN_RNP_HEADER_SIZE 16
#define RN_RNP_KEY_MAX 255
#define RN_RNP_INCARNATION_SIZE 16
/* The least MAX_FRAME a client's HELLO may announce (docs/protocol.md,
 * section 6): below it a server cannot fit the PONG, ERROR and GOAWAY it
 * owes the client, and refuses the HELLO. */
#define RN_RNP_HELLO_MIN_FRAME 128
/* The extension field carrying a client's credential on its HELLO
 * (docs/protocol.md, section 6.1): 1..255 opaque bytes. In the extension
 * space so that a server that knows nothing of it skips it. */
#define RN_RNP_X_AUTH 130
#define RN_RNP_AUTH_MAX 255
/* The extension field naming the key store a server keeps dedupe keys in
 * (docs/protocol.md, section 9.1), on its HELLO: 16 bytes, the same on
 * every server sharing the store. Absent: the server keeps no keys, and a
 * keyed request whose fate is unknown is as unsafe to retry as any. */
#define RN_RNP_X_DEDUPE 131
#define RN_RNP_DEDUPE_SIZE 16

typedef enum {
  RN_RNP_HELLO = 1,   /* client first, server answers with the same id */
  RN_RNP_REQUEST = 2,
  RN_RNP_REPLY = 3,
  RN_RNP_ERROR = 4,
  RN_RNP_PING = 5,    /* client to server */
  RN_RNP_PONG = 6,    /* the PING's id and payload */
  RN_RNP_GOAWAY = 7   /* server to client: no request above id runs */
} rn_rnp_type_t;

/* Flags */
#define RN_RNP_IDEMPOTENT 0x01   /* REQUEST: safe to execute twice */
#define RN_RNP_NOT_EXECUTED 0x01 /* ERROR: the request had no effect */

/* ERROR codes */
typedef enum {
  RN_RNP_ERR_APPLICATION = 1, /* the handler failed */
  RN_RNP_ERR_OVERLOADED = 2,  /* not executed: retry later or elsewhere */
  RN_RNP_ERR_DEADLINE = 3,    /* not executed: its deadline had passed */
  RN_RNP_ERR_SHUTDOWN = 4,    /* not executed: the server is going away */
  RN_RNP_ERR_BAD_REQUEST = 5, /* not executed: the request was refused */
  RN_RNP_ERR_IN_PROGRESS = 6, /* its key is executing elsewhere */
  RN_RNP_ERR_PROTOCOL = 7,    /* id 0: a malformed frame; closing */
  RN_RNP_ERR_TOO_LARGE = 8,   /* it ran, but its reply is larger than the
                                 client's MAX_FRAME */
  RN_RNP_ERR_UNAUTHENTICATED = 9 /* not executed: the HELLO's credentials
                                    were refused (the HELLO's id); nothing
                                    on the connection runs; closing */
} rn_rnp_error_t;

/* Field tags; `present` holds 1 << tag for each field in a frame. */
typedef enum {
  RN_RNP_F_VERSION = 1,        /* u16; HELLO */
  RN_RNP_F_MAX_FRAME = 2,      /* u32; HELLO */
  RN_RNP_F_MAX_CONCURRENT = 3, /* u32; HELLO from the server */
  RN_RNP_F_INCARNATION = 4,    /* 16 bytes; HELLO from the server */
  RN_RNP_F_DEADLINE = 5,       /* u32 ms left; REQUEST */
  RN_RNP_F_KEY = 6,            /* 1..255 bytes; REQUEST */
  RN_RNP_F_RETRY_AFTER = 7     /* u32 ms; ERROR, GOAWAY */
} rn_rnp_field_t;

/* One frame, parsed or to encode. Pointers point into the parsed data. */
typedef struct rn_rnp_frame_s {
  size_t size;             /* parse: bytes of the whole frame */
  unsigned type;
  unsigned flags;
  uint64_t id;
  unsigned present;        /* 1 << RN_RNP_F_* */
  unsigned version;
  uint32_t max_frame;
  uint32_t max_concurrent;
  uint32_t deadline_ms;
  uint32_t retry_after_ms;
  const char *incarnation; /* RN_RNP_INCARNATION_SIZE bytes */
  const char *key;
  size_t key_len;
  unsigned error_code;     /* ERROR */
  const char *payload;     /* ERROR: the message after the code */
  size_t payload_len;
  size_t deadline_offset;  /* parse: where DEADLINE's value is, or 0 */
  const char *auth;        /* HELLO: the AUTH extension's value, or NULL */
  size_t auth_len;         /* 1..RN_RNP_AUTH_MAX when auth is set */
  const char *dedupe;      /* HELLO: the DEDUPE extension's value
                              (RN_RNP_DEDUPE_SIZE bytes), or NULL */
} rn_rnp_frame_t;

/* 1: a valid frame starts at data (out filled in); 0: need more bytes;
 * RN_EFRAMESIZE: it would exceed max_frame (known from the header alone);
 * RN_EBADFRAME: anything malformed (unknown type, undefined flag or field
 * tag, a field's length wrong for its tag or running past the fields, a
 * repeated field, a field not allowed on the type, a short ERROR payload,
 * an empty or repeated AUTH on a HELLO, a DEDUPE on a HELLO that is not
 * RN_RNP_DEDUPE_SIZE bytes or is repeated). AUTH and DEDUPE on other types
 * are skipped like any extension field. */
int rn_rnp_parse(const char *data, size_t len, size_t max_frame,
                 rn_rnp_frame_t *out);
/* Appends one frame: header, the fields named in `present`, payload.
 * UV_EINVAL for anything rn_rnp_parse would refuse, RN_EFRAMESIZE past
 * max_frame, UV_ENOMEM. */
int rn_rnp_encode(rn_buf_t *out, const rn_rnp_frame_t *frame,
                  size_t max_frame);
/* Appends a client's HELLO (id 1, VERSION, MAX_FRAME = max_frame capped
 * at 2^32 - 1) and, when token is not NULL, the AUTH extension carrying
 * it. The token is a secret: the caller wipes `out` when done with it.
 * 0, UV_EINVAL (token_len 0 or over RN_RNP_AUTH_MAX, max_frame under
 * RN_RNP_HELLO_MIN_FRAME) or UV_ENOMEM. */
int rn_rnp_encode_hello(rn_buf_t *out, size_t max_frame, const char *token,
                        size_t token_len);

/* ------------------------------------------------------------------------ */
/* RESP values: a pull parser shared by the frame finder and by decoders     */

typedef enum {
  RN_RESP_SIMPLE = '+',
  RN_RESP_ERROR = '-',
  RN_RESP_INTEGER = ':',
  RN_RESP_BULK = '$',
  RN_RESP_ARRAY = '*',
  RN_RESP_NULL = '_',      /* also RESP2's $-1 and *-1 */
  RN_RESP_BOOLEAN = '#',
  RN_RESP_DOUBLE = ',',
  RN_RESP_BIGNUM = '(',
  RN_RESP_BULK_ERROR = '!',
  RN_RESP_VERBATIM = '=',
  RN_RESP_MAP = '%',
  RN_RESP_SET = '~',
  RN_RESP_ATTRIBUTE = '|',
  RN_RESP_PUSH = '>'
} rn_resp_type_t;

#define RN_RESP_MAX_DEPTH 64

typedef struct rn_resp_item_s {
  rn_resp_type_t type;
  const char *str;  /* text of simple, error, bulk, bulk error, verbatim
                       (without its "xxx:" format prefix), bignum, double */
  size_t len;
  int64_t integer;  /* integer; boolean 0/1; aggregates: element count
                       (map and attribute: number of pairs) */
  double number;    /* double */
  size_t size;      /* bytes of this item, children excluded */
} rn_resp_item_t;

/* Parses the one item at data. 1: item filled in; 0: need more bytes;
 * RN_EBADFRAME: not RESP. Aggregates report only their header; their
 * elements follow as further items. */
int rn_resp_item(const char *data, size_t len, rn_resp_item_t *item);

/* Encoders (requests, and replies of a RESP server). 0, UV_EINVAL (CR or LF
 * in a simple string or error) or UV_ENOMEM. */
int rn_resp_encode_array(rn_buf_t *out, size_t count);
int rn_resp_encode_bulk(rn_buf_t *out, const char *data, size_t len);
int rn_resp_encode_integer(rn_buf_t *out, int64_t value);
int rn_resp_encode_simple(rn_buf_t *out, const char *text, size_t len);
int rn_resp_encode_error(rn_buf_t *out, const char *text, size_t len);
int rn_resp_encode_null(rn_buf_t *out); /* RESP2 null bulk string, $-1 */

#ifdef __cplusplus
}
#endif
#endif /* RESILNET_WIRE_H */

/* rnp v1 frames: the strict parser and encoder (docs/protocol.md), and the
 * generic codec "rnp" built on them.
 *
 * The parser never trusts a length before comparing it with what is there:
 * every read is bounded by `len`, the field area by F, and a frame's size by
 * max_frame as soon as its first four bytes are in. Whatever it refuses the
 * encoder refuses too, so a frame this library writes always parses. */
#include "codec.h"

#include <string.h>

/* A PING's payload is echoed by the PONG: small on purpose, so a peer
 * cannot make the other side hold large echoes. */
#define RN__RNP_PING_MAX 64
/* The shortest legal MAX_FRAME: one bare header. */
#define RN__RNP_MIN_MAX_FRAME 16
/* Every defined field once, KEY at its longest: the largest field area an
 * encoder can produce (2 bytes of tag and length per field). */
#define RN__RNP_FIELDS_MAX                                                    \
  ((2 + 2) + (2 + 4) + (2 + 4) + (2 + RN_RNP_INCARNATION_SIZE) + (2 + 4) +    \
   (2 + RN_RNP_KEY_MAX) + (2 + 4) + (2 + RN_RNP_AUTH_MAX) +                  \
   (2 + RN_RNP_DEDUPE_SIZE))

#define BIT(tag) (1u << (tag))

/* What each type may carry; index = type. Unlisted types are 0 rows. */
static const struct {
  unsigned flags;  /* allowed flag bits */
  unsigned fields; /* allowed defined fields, BIT(tag) */
} rn__rnp_rules[] = {
  {0, 0}, /* 0: not a type */
  /* HELLO */
  {0, BIT(RN_RNP_F_VERSION) | BIT(RN_RNP_F_MAX_FRAME) |
          BIT(RN_RNP_F_MAX_CONCURRENT) | BIT(RN_RNP_F_INCARNATION)},
  /* REQUEST */
  {RN_RNP_IDEMPOTENT, BIT(RN_RNP_F_DEADLINE) | BIT(RN_RNP_F_KEY)},
  /* REPLY */
  {0, 0},
  /* ERROR */
  {RN_RNP_NOT_EXECUTED, BIT(RN_RNP_F_RETRY_AFTER)},
  /* PING */
  {0, 0},
  /* PONG */
  {0, 0},
  /* GOAWAY */
  {0, BIT(RN_RNP_F_RETRY_AFTER)},
};

#define RN__RNP_TYPE_MAX ((unsigned)RN_ARRAY_SIZE(rn__rnp_rules) - 1)

static uint32_t get_u16(const unsigned char *p) {
  return (uint32_t)p[0] << 8 | (uint32_t)p[1];
}

static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

static uint64_t get_u64(const unsigned char *p) {
  return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static void put_u16(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 8);
  p[1] = (unsigned char)v;
}

static void put_u32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v) {
  put_u32(p, (uint32_t)(v >> 32));
  put_u32(p + 4, (uint32_t)v);
}

/* The exact value length of a defined tag (KEY: its longest). */
static size_t field_len(unsigned tag) {
  switch (tag) {
  case RN_RNP_F_VERSION:
    return 2;
  case RN_RNP_F_INCARNATION:
    return RN_RNP_INCARNATION_SIZE;
  case RN_RNP_F_KEY:
    return RN_RNP_KEY_MAX;
  default:
    return 4;
  }
}

/* Payload rules that do not depend on the fields. */
static int payload_ok(unsigned type, size_t payload_len) {
  switch (type) {
  case RN_RNP_HELLO:
    return payload_len == 0;
  case RN_RNP_ERROR:
    return payload_len >= 2; /* the code */
  case RN_RNP_PING:
  case RN_RNP_PONG:
    return payload_len <= RN__RNP_PING_MAX;
  default:
    return 1;
  }
}

/* One defined field: its value is `v`, `n` bytes, inside the frame at
 * `offset`. BADFRAME for the wrong length, a repeat, a tag the type may not
 * carry or a value the rules forbid. */
static int take_field(rn_rnp_frame_t *out, unsigned tag, const unsigned char *v,
                      size_t n, size_t offset) {
  if ((rn__rnp_rules[out->type].fields & BIT(tag)) == 0)
    return RN_EBADFRAME;
  if (out->present & BIT(tag))
    return RN_EBADFRAME;
  if (tag == RN_RNP_F_KEY ? n == 0 : n != field_len(tag))
    return RN_EBADFRAME;
  out->present |= BIT(tag);
  switch (tag) {
  case RN_RNP_F_VERSION:
    out->version = (unsigned)get_u16(v);
    if (out->version == 0)
      return RN_EBADFRAME;
    break;
  case RN_RNP_F_MAX_FRAME:
    out->max_frame = get_u32(v);
    if (out->max_frame < RN__RNP_MIN_MAX_FRAME)
      return RN_EBADFRAME;
    break;
  case RN_RNP_F_MAX_CONCURRENT:
    out->max_concurrent = get_u32(v);
    break;
  case RN_RNP_F_INCARNATION:
    out->incarnation = (const char *)v;
    break;
  case RN_RNP_F_DEADLINE:
    out->deadline_ms = get_u32(v);
    out->deadline_offset = offset;
    break;
  case RN_RNP_F_KEY:
    out->key = (const char *)v;
    out->key_len = n;
    break;
  default: /* RN_RNP_F_RETRY_AFTER */
    out->retry_after_ms = get_u32(v);
    break;
  }
  return 0;
}

int rn_rnp_parse(const char *data, size_t len, size_t max_frame,
                 rn_rnp_frame_t *out) {
  const unsigned char *p = (const unsigned char *)data;
  rn_rnp_frame_t f;
  uint32_t size;
  size_t nfields, pos, end, frame_size;
  int err;

  if (len < 4)
    return 0;
  size = get_u32(p);
  if (size < RN_RNP_HEADER_SIZE - 4)
    return RN_EBADFRAME;
  /* Decided on four bytes, before any of the body has to be buffered. */
  if ((uint64_t)size + 4 > (uint64_t)max_frame)
    return RN_EFRAMESIZE;
  frame_size = (size_t)size + 4;

  /* The rest of the header can be judged before the body arrives too. */
  if (len < RN_RNP_HEADER_SIZE)
    return 0;
  memset(&f, 0, sizeof(f));
  f.type = p[4];
  f.flags = p[5];
  nfields = get_u16(p + 6);
  if (f.type == 0 || f.type > RN__RNP_TYPE_MAX)
    return RN_EBADFRAME;
  if ((f.flags & ~rn__rnp_rules[f.type].flags) != 0)
    return RN_EBADFRAME;
  if (nfields > frame_size - RN_RNP_HEADER_SIZE)
    return RN_EBADFRAME;
  if (len < frame_size)
    return 0;
  f.size = frame_size;
  f.id = get_u64(p + 8);

  pos = RN_RNP_HEADER_SIZE;
  end = RN_RNP_HEADER_SIZE + nfields;
  while (pos < end) {
    unsigned tag;
    size_t n;

    if (end - pos < 2)
      return RN_EBADFRAME; /* a field header cut by the end of the fields */
    tag = p[pos];
    n = p[pos + 1];
    if (end - pos - 2 < n)
      return RN_EBADFRAME; /* a value running past the fields */
    if (tag == RN_RNP_X_AUTH && f.type == RN_RNP_HELLO) {
      /* The one extension this version defines: one credential, never
       * empty (an empty one would read as "no token" to one server and
       * as a token to another). */
      if (f.auth != NULL || n == 0)
        return RN_EBADFRAME;
      f.auth = (const char *)p + pos + 2;
      f.auth_len = n;
    } else if (tag == RN_RNP_X_DEDUPE && f.type == RN_RNP_HELLO) {
      /* One store id of its exact size: a client must not guess which of
       * two ids, or which bytes of a short one, name the store. */
      if (f.dedupe != NULL || n != RN_RNP_DEDUPE_SIZE)
        return RN_EBADFRAME;
      f.dedupe = (const char *)p + pos + 2;
    } else if (tag >= 128) {
      /* Extension space: later versions may add fields here, and a v1
       * peer steps over them by their length. */
    } else if (tag == 0 || tag > RN_RNP_F_RETRY_AFTER) {
      return RN_EBADFRAME;
    } else {
      err = take_field(&f, tag, p + pos + 2, n, pos + 2);
      if (err != 0)
        return err;
    }
    pos += 2 + n;
  }

  if (f.type == RN_RNP_HELLO && (f.present & BIT(RN_RNP_F_VERSION)) == 0)
    return RN_EBADFRAME;
  if (!payload_ok(f.type, frame_size - end))
    return RN_EBADFRAME;
  if (f.type == RN_RNP_ERROR) {
    f.error_code = (unsigned)get_u16(p + end);
    end += 2;
  }
  f.payload = data + end;
  f.payload_len = frame_size - end;
  *out = f;
  return 1;
}

/* The same rules as the parser, on the struct. Lengths of the frame as a
 * whole are the caller's to check. */
static int check_frame(const rn_rnp_frame_t *f) {
  unsigned present = f->present;

  if (f->type == 0 || f->type > RN__RNP_TYPE_MAX)
    return UV_EINVAL;
  if ((f->flags & ~rn__rnp_rules[f->type].flags) != 0)
    return UV_EINVAL;
  if ((present & ~rn__rnp_rules[f->type].fields) != 0)
    return UV_EINVAL; /* also catches bits of no defined tag */
  if (f->type == RN_RNP_HELLO && (present & BIT(RN_RNP_F_VERSION)) == 0)
    return UV_EINVAL;
  if ((present & BIT(RN_RNP_F_VERSION)) &&
      (f->version == 0 || f->version > 0xffff))
    return UV_EINVAL;
  if ((present & BIT(RN_RNP_F_MAX_FRAME)) &&
      f->max_frame < RN__RNP_MIN_MAX_FRAME)
    return UV_EINVAL;
  if ((present & BIT(RN_RNP_F_INCARNATION)) && f->incarnation == NULL)
    return UV_EINVAL;
  if ((present & BIT(RN_RNP_F_KEY)) &&
      (f->key == NULL || f->key_len == 0 || f->key_len > RN_RNP_KEY_MAX))
    return UV_EINVAL;
  if (f->payload == NULL && f->payload_len != 0)
    return UV_EINVAL;
  if (f->auth != NULL && (f->type != RN_RNP_HELLO || f->auth_len == 0 ||
                          f->auth_len > RN_RNP_AUTH_MAX))
    return UV_EINVAL;
  if (f->dedupe != NULL && f->type != RN_RNP_HELLO)
    return UV_EINVAL;
  if (f->type == RN_RNP_ERROR) {
    if (f->error_code > 0xffff)
      return UV_EINVAL;
  } else if (!payload_ok(f->type, f->payload_len)) {
    return UV_EINVAL;
  }
  return 0;
}

/* Fields go out in tag order, the AUTH and DEDUPE extensions after the
 * defined ones: one canonical encoding per frame, which the test vectors
 * rely on.
 * Returns the bytes written to `p`. */
static size_t put_fields(unsigned char *p, const rn_rnp_frame_t *f) {
  size_t n = 0;
  unsigned tag;

  for (tag = RN_RNP_F_VERSION; tag <= RN_RNP_F_RETRY_AFTER; tag++) {
    size_t vlen;

    if ((f->present & BIT(tag)) == 0)
      continue;
    vlen = tag == RN_RNP_F_KEY ? f->key_len : field_len(tag);
    p[n] = (unsigned char)tag;
    p[n + 1] = (unsigned char)vlen;
    n += 2;
    switch (tag) {
    case RN_RNP_F_VERSION:
      put_u16(p + n, f->version);
      break;
    case RN_RNP_F_MAX_FRAME:
      put_u32(p + n, f->max_frame);
      break;
    case RN_RNP_F_MAX_CONCURRENT:
      put_u32(p + n, f->max_concurrent);
      break;
    case RN_RNP_F_INCARNATION:
      memcpy(p + n, f->incarnation, vlen);
      break;
    case RN_RNP_F_DEADLINE:
      put_u32(p + n, f->deadline_ms);
      break;
    case RN_RNP_F_KEY:
      memcpy(p + n, f->key, vlen);
      break;
    default: /* RN_RNP_F_RETRY_AFTER */
      put_u32(p + n, f->retry_after_ms);
      break;
    }
    n += vlen;
  }
  if (f->auth != NULL) {
    p[n] = (unsigned char)RN_RNP_X_AUTH;
    p[n + 1] = (unsigned char)f->auth_len;
    memcpy(p + n + 2, f->auth, f->auth_len);
    n += 2 + f->auth_len;
  }
  if (f->dedupe != NULL) {
    p[n] = (unsigned char)RN_RNP_X_DEDUPE;
    p[n + 1] = (unsigned char)RN_RNP_DEDUPE_SIZE;
    memcpy(p + n + 2, f->dedupe, RN_RNP_DEDUPE_SIZE);
    n += 2 + RN_RNP_DEDUPE_SIZE;
  }
  return n;
}

int rn_rnp_encode(rn_buf_t *out, const rn_rnp_frame_t *frame,
                  size_t max_frame) {
  unsigned char head[RN_RNP_HEADER_SIZE + RN__RNP_FIELDS_MAX + 2];
  size_t nfields, nhead, total;
  uint64_t size;
  int err;

  if (out == NULL || frame == NULL)
    return UV_EINVAL;
  err = check_frame(frame);
  if (err != 0)
    return err;

  nfields = put_fields(head + RN_RNP_HEADER_SIZE, frame);
  nhead = RN_RNP_HEADER_SIZE + nfields;
  if (frame->type == RN_RNP_ERROR) {
    put_u16(head + nhead, frame->error_code);
    nhead += 2;
  }
  /* Compared in 64 bits so a huge payload cannot wrap the sum. */
  size = (uint64_t)nhead - 4 + frame->payload_len;
  if (size > 0xffffffffu || size + 4 > (uint64_t)max_frame)
    return RN_EFRAMESIZE;
  total = (size_t)size + 4;

  head[4] = (unsigned char)frame->type;
  head[5] = (unsigned char)frame->flags;
  put_u32(head, (uint32_t)size);
  put_u16(head + 6, (uint32_t)nfields);
  put_u64(head + 8, frame->id);

  /* All or nothing: `out` is untouched on failure. */
  err = rn_buf_reserve(out, total);
  if (err != 0)
    return err;
  rn_buf_append(out, head, nhead);
  rn_buf_append(out, frame->payload, frame->payload_len);
  return 0;
}

int rn_rnp_encode_hello(rn_buf_t *out, size_t max_frame, const char *token,
                        size_t token_len) {
  rn_rnp_frame_t f;

  if (token != NULL && (token_len == 0 || token_len > RN_RNP_AUTH_MAX))
    return UV_EINVAL;
  /* A HELLO every server would refuse is a configuration error, told
   * when the pool is made rather than as failed connects. */
  if (max_frame < RN_RNP_HELLO_MIN_FRAME) return UV_EINVAL;
  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_HELLO;
  f.id = 1; /* a client's HELLO is always its first frame */
  f.present = BIT(RN_RNP_F_VERSION) | BIT(RN_RNP_F_MAX_FRAME);
  f.version = RN_RNP_VERSION;
  f.max_frame = (uint32_t)RN_MIN(max_frame, UINT32_MAX);
  f.auth = token;
  f.auth_len = token != NULL ? token_len : 0;
  /* Before the server's HELLO its limit is the default (protocol.md,
   * section 6). */
  return rn_rnp_encode(out, &f, RN_DEFAULT_MAX_FRAME);
}

/* ------------------------------------------------------------------------ */
/* The generic codec: a frame's body is its payload (an ERROR's message). */

static int rnp_frame(const rn_codec_t *codec, const char *data, size_t len,
                     rn_frame_t *frame) {
  rn_rnp_frame_t f;
  int r;

  r = rn_rnp_parse(data, len, codec->max_frame, &f);
  if (r < 0)
    return r;
  if (r == 0) {
    /* The fewest bytes the frame can have (see codec/length.c): the header,
     * or once the size is in, the whole frame, which the parser has already
     * checked against max_frame. */
    frame->size = RN_RNP_HEADER_SIZE;
    if (len >= 4)
      frame->size = (size_t)get_u32((const unsigned char *)data) + 4;
    frame->body_offset = 0;
    frame->body_len = 0;
    frame->flags = 0;
    return 0;
  }
  frame->size = f.size;
  frame->body_offset = (size_t)(f.payload - data);
  frame->body_len = f.payload_len;
  frame->flags = f.type == RN_RNP_ERROR ? RN_FRAME_ERROR : 0;
  return 1;
}

/* A request as a client sends it: id and DEADLINE are placeholders the pool
 * overwrites when the request leaves on a connection, so one encoded
 * request can be sent, and retried, on any connection. */
static int rnp_encode(const rn_codec_t *codec, rn_buf_t *out,
                      const char *body, size_t len) {
  rn_rnp_frame_t f;

  memset(&f, 0, sizeof(f));
  f.type = RN_RNP_REQUEST;
  f.present = BIT(RN_RNP_F_DEADLINE);
  f.deadline_ms = 0;
  f.payload = body;
  f.payload_len = len;
  return rn_rnp_encode(out, &f, codec->max_frame);
}

const rn_codec_type_t rn__codec_rnp = {"rnp", rnp_frame, rnp_encode, NULL};

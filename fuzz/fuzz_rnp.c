/* libFuzzer target for rnp frames: rn_rnp_parse, rn_rnp_encode and the
 * "rnp" codec's frame().
 * Input: [max_frame byte] then the stream. */
/* Build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore/include \
 *     -Icore/src/runtime fuzz/fuzz_rnp.c \
 *     core/src/runtime/{error,buf}.c \
 *     core/src/codec/{codec,length,line,resp,resp_value,rnp}.c -luv -o /tmp/fuzz_rnp
 *   mkdir -p /tmp/rnp && /tmp/fuzz_rnp /tmp/rnp fuzz/corpus/rnp
 * The corpus files are the frames of docs/vectors/rnp/valid.txt behind a
 * 0 byte (the default max_frame). */
#include "resilnet.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(x) ((x) ? (void)0 : abort())
#define BIT(tag) (1u << (tag))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t get_u32(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 |
         (uint32_t)u[3];
}

/* Every pointer the parser hands out lies inside the frame. */
static void check_inside(const char *s, const rn_rnp_frame_t *f,
                         const char *p, size_t n) {
  CHECK(p >= s && n <= f->size && (size_t)(p - s) <= f->size - n);
}

/* Two parses of the same frame agree on everything but the bytes' places. */
static void check_same(const rn_rnp_frame_t *a, const rn_rnp_frame_t *b) {
  CHECK(a->type == b->type && a->flags == b->flags && a->id == b->id);
  CHECK(a->present == b->present && a->version == b->version);
  CHECK(a->max_frame == b->max_frame);
  CHECK(a->max_concurrent == b->max_concurrent);
  CHECK(a->deadline_ms == b->deadline_ms);
  CHECK(a->retry_after_ms == b->retry_after_ms);
  CHECK(a->error_code == b->error_code);
  CHECK(a->key_len == b->key_len && a->payload_len == b->payload_len);
  CHECK(a->key_len == 0 || memcmp(a->key, b->key, a->key_len) == 0);
  CHECK(a->payload_len == 0 ||
        memcmp(a->payload, b->payload, a->payload_len) == 0);
  CHECK((a->incarnation == NULL) == (b->incarnation == NULL));
  CHECK(a->incarnation == NULL ||
        memcmp(a->incarnation, b->incarnation, RN_RNP_INCARNATION_SIZE) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  rn_codec_options_t o;
  rn_codec_t c;
  rn_rnp_frame_t f, g;
  rn_frame_t fr;
  rn_buf_t b;
  const char *s;
  size_t len, max;
  int r, rc;

  if (size < 1)
    return 0;
  /* Small limits so the size checks are reached; 0 keeps the default. */
  max = data[0] == 0 ? RN_DEFAULT_MAX_FRAME
                     : (size_t)RN_RNP_HEADER_SIZE + data[0];
  s = (const char *)data + 1;
  len = size - 1;

  r = rn_rnp_parse(s, len, max, &f);
  CHECK(r == 1 || r == 0 || r == RN_EBADFRAME || r == RN_EFRAMESIZE);
  if (r == RN_EFRAMESIZE) {
    CHECK(len >= 4 && (uint64_t)get_u32(s) + 4 > max);
    CHECK(rn_rnp_parse(s, 4, max, &g) == RN_EFRAMESIZE);
  } else if (r == 0) {
    CHECK(len < 16 || len < (size_t)get_u32(s) + 4);
  } else if (r == 1) {
    CHECK(f.size >= RN_RNP_HEADER_SIZE && f.size <= len && f.size <= max);
    CHECK(f.size == (size_t)get_u32(s) + 4);
    CHECK(f.type >= RN_RNP_HELLO && f.type <= RN_RNP_GOAWAY);
    CHECK((f.present & ~0xfeu) == 0);
    check_inside(s, &f, f.payload, f.payload_len);
    CHECK(f.payload + f.payload_len == s + f.size);
    if (f.present & BIT(RN_RNP_F_KEY)) {
      CHECK(f.key_len >= 1 && f.key_len <= RN_RNP_KEY_MAX);
      check_inside(s, &f, f.key, f.key_len);
    }
    if (f.present & BIT(RN_RNP_F_INCARNATION))
      check_inside(s, &f, f.incarnation, RN_RNP_INCARNATION_SIZE);
    if (f.present & BIT(RN_RNP_F_DEADLINE)) {
      CHECK(f.deadline_offset >= RN_RNP_HEADER_SIZE + 2);
      check_inside(s, &f, s + f.deadline_offset, 4);
      CHECK(get_u32(s + f.deadline_offset) == f.deadline_ms);
    } else {
      CHECK(f.deadline_offset == 0);
    }
    /* The frame ends where it says, no sooner. */
    CHECK(rn_rnp_parse(s, f.size - 1, max, &g) == 0);
    /* Trailing bytes change nothing. */
    CHECK(len == f.size || rn_rnp_parse(s, f.size, max, &g) == 1);

    /* What parses encodes, to at most as many bytes (extension fields are
     * not re-encoded), and parses back the same. */
    rn_buf_init(&b);
    CHECK(rn_rnp_encode(&b, &f, max) == 0);
    CHECK(b.len <= f.size);
    CHECK(rn_rnp_parse(b.base, b.len, max, &g) == 1);
    CHECK(g.size == b.len);
    check_same(&f, &g);
    rn_buf_free(&b);
  }

  /* The codec frames exactly what the parser accepts. */
  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_RNP;
  o.max_frame = max;
  CHECK(rn_codec_init(&c, &o) == 0);
  rc = rn_codec_frame(&c, s, len, &fr);
  CHECK(rc == r);
  if (rc == 1) {
    CHECK(fr.size == f.size);
    CHECK(fr.body_offset == (size_t)(f.payload - s));
    CHECK(fr.body_len == f.payload_len);
    CHECK(fr.flags == (f.type == RN_RNP_ERROR ? RN_FRAME_ERROR : 0));
  } else if (rc == 0) {
    CHECK(fr.size > len && fr.size <= max);
  }

  /* Any body that fits becomes a REQUEST that parses back to it. */
  rn_buf_init(&b);
  r = rn_codec_encode(&c, &b, s, len);
  if (r == 0) {
    CHECK(rn_rnp_parse(b.base, b.len, max, &g) == 1);
    CHECK(g.type == RN_RNP_REQUEST && g.id == 0 && g.flags == 0);
    CHECK(g.present == BIT(RN_RNP_F_DEADLINE) && g.deadline_ms == 0);
    CHECK(g.deadline_offset == RN_RNP_HEADER_SIZE + 2);
    CHECK(g.payload_len == len);
    CHECK(len == 0 || memcmp(g.payload, s, len) == 0);
  } else {
    CHECK(r == RN_EFRAMESIZE && b.len == 0);
    CHECK(len + 22 > max);
  }
  rn_buf_free(&b);
  return 0;
}

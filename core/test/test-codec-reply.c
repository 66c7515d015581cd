/* What a frame from a server means to a client (codec/reply.h): the kind,
 * id, status and delay a client connection acts on, for rnp's frames and
 * for the codecs whose replies come in order. */
#include "reply.h"
#include "task.h"

#include <string.h>

static rn_codec_t codec;
static rn_frame_scan_t scan;
static rn_buf_t buf; /* zeroed: an empty buffer (rn_buf_init) */

static void use(rn_protocol_t protocol) {
  rn_codec_options_t o;
  memset(&o, 0, sizeof(o));
  o.protocol = protocol;
  ASSERT_OK(rn_codec_init(&codec, &o));
  rn_frame_scan_reset(&scan);
}

/* Encodes an rnp frame into buf and says what it means. */
static int rnp_means(unsigned type, unsigned flags, uint64_t id,
                     unsigned error_code, uint32_t retry_after_ms,
                     rn_reply_t *out) {
  rn_rnp_frame_t f;
  memset(&f, 0, sizeof(f));
  f.type = type;
  f.flags = flags;
  f.id = id;
  if (type == RN_RNP_ERROR) {
    f.error_code = error_code;
    f.payload = "why";
    f.payload_len = 3;
  } else if (type == RN_RNP_REPLY) {
    f.payload = "body";
    f.payload_len = 4;
  }
  if (retry_after_ms > 0) {
    f.present |= 1u << RN_RNP_F_RETRY_AFTER;
    f.retry_after_ms = retry_after_ms;
  }
  buf.len = 0;
  ASSERT_OK(rn_rnp_encode(&buf, &f, codec.max_frame));
  return rn__codec_reply(&codec, &scan, buf.base, buf.len, out);
}

static void test_rnp(void) {
  rn_reply_t m;
  use(RN_PROTOCOL_RNP);
  ASSERT(rn__codec_replies_by_id(&codec));
  ASSERT(rn__codec_speaks_unasked(&codec));

  ASSERT_EQ(rnp_means(RN_RNP_REPLY, 0, 7, 0, 0, &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_BY_ID);
  ASSERT_EQ(m.id, 7);
  ASSERT_EQ(m.status, 0);
  ASSERT_EQ(m.size, buf.len);
  ASSERT_EQ(m.body_len, 4);
  ASSERT_MEM_EQ(m.body, "body", 4);

  /* Refused unrun: the error its caller gets, and whether to try again. */
  ASSERT_EQ(rnp_means(RN_RNP_ERROR, RN_RNP_NOT_EXECUTED, 8,
                      RN_RNP_ERR_OVERLOADED, 30, &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_REFUSED);
  ASSERT_EQ(m.status, RN_EOVERLOAD);
  ASSERT_EQ(m.again, 1);
  ASSERT_EQ(m.retry_after_ms, 30);
  ASSERT_MEM_EQ(m.body, "why", 3);
  ASSERT_EQ(rnp_means(RN_RNP_ERROR, RN_RNP_NOT_EXECUTED, 8,
                      RN_RNP_ERR_DEADLINE, 0, &m), 1);
  ASSERT_EQ(m.status, UV_ETIMEDOUT);
  ASSERT_EQ(rnp_means(RN_RNP_ERROR, RN_RNP_NOT_EXECUTED, 8,
                      RN_RNP_ERR_BAD_REQUEST, 0, &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_REFUSED);
  ASSERT_EQ(m.status, RN_ENOTEXEC);
  ASSERT_EQ(m.again, 0);

  /* "Try later": IN_PROGRESS, or any error with RETRY_AFTER. */
  ASSERT_EQ(rnp_means(RN_RNP_ERROR, 0, 9, RN_RNP_ERR_IN_PROGRESS, 0, &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_TRY_LATER);
  ASSERT_EQ(m.status, RN_EREPLY);
  ASSERT_EQ(m.retry_after_ms, 0);
  ASSERT_EQ(rnp_means(RN_RNP_ERROR, 0, 9, RN_RNP_ERR_APPLICATION, 40, &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_TRY_LATER);
  ASSERT_EQ(m.retry_after_ms, 40);

  /* Any other error is an error reply to its request. */
  ASSERT_EQ(rnp_means(RN_RNP_ERROR, 0, 10, RN_RNP_ERR_APPLICATION, 0, &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_BY_ID);
  ASSERT_EQ(m.status, RN_EREPLY);
  ASSERT_EQ(m.flags, RN_FRAME_ERROR);
  ASSERT_EQ(m.id, 10);

  ASSERT_EQ(rnp_means(RN_RNP_GOAWAY, 0, 5, 0, 100, &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_GOAWAY);
  ASSERT_EQ(m.id, 5);
  ASSERT_EQ(m.retry_after_ms, 100);
  ASSERT_EQ(rnp_means(RN_RNP_PONG, 0, 3, 0, 0, &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_PONG);
  ASSERT_EQ(m.id, 3);

  /* About the connection, or not for a client: it closes. */
  ASSERT_EQ(rnp_means(RN_RNP_ERROR, 0, 0, RN_RNP_ERR_PROTOCOL, 0, &m),
            RN_EPEERPROTOCOL);
  ASSERT_EQ(rnp_means(RN_RNP_PING, 0, 4, 0, 0, &m), RN_EUNEXPECTED);
  ASSERT_EQ(rnp_means(RN_RNP_REQUEST, 0, 4, 0, 0, &m), RN_EUNEXPECTED);

  /* Part of a frame: more bytes wanted. */
  ASSERT_EQ(rnp_means(RN_RNP_REPLY, 0, 7, 0, 0, &m), 1);
  ASSERT_EQ(rn__codec_reply(&codec, &scan, buf.base, buf.len - 1, &m), 0);
  ASSERT(!rn__codec_partial_is_reply(&codec, buf.base));
  rn_buf_free(&buf);
}

static int resp_means(const char *frame, rn_reply_t *out) {
  rn_frame_scan_reset(&scan);
  return rn__codec_reply(&codec, &scan, frame, strlen(frame), out);
}

/* RESP: replies in order; a ping's answer is +PONG, ["pong", ""] (RESP2
 * subscribe mode), or an error reply (a loading Redis answers PING with
 * -LOADING); a push is nobody's. */
static void test_resp(void) {
  rn_reply_t m;
  use(RN_PROTOCOL_RESP);
  ASSERT(!rn__codec_replies_by_id(&codec));
  ASSERT(!rn__codec_speaks_unasked(&codec));

  ASSERT_EQ(resp_means("+PONG\r\n", &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_IN_ORDER);
  ASSERT_EQ(m.status, 0);
  ASSERT(rn__codec_reply_is_pong(&codec, &m));
  ASSERT_EQ(resp_means("+OK\r\n", &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_IN_ORDER);
  ASSERT(!rn__codec_reply_is_pong(&codec, &m));
  ASSERT_EQ(resp_means("-LOADING\r\n", &m), 1);
  ASSERT_EQ(m.status, RN_EREPLY);
  ASSERT_EQ(m.flags & RN_FRAME_ERROR, RN_FRAME_ERROR);
  ASSERT(rn__codec_reply_is_pong(&codec, &m));
  ASSERT_EQ(m.size, 10);
  /* RESP2 subscribe mode answers PING with an array, not +PONG */
  ASSERT_EQ(resp_means("*2\r\n$4\r\npong\r\n$0\r\n\r\n", &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_IN_ORDER);
  ASSERT(rn__codec_reply_is_pong(&codec, &m));
  /* ... but a message, or a pong carrying a payload, is not that answer */
  ASSERT_EQ(resp_means("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$0\r\n\r\n",
                       &m), 1);
  ASSERT(!rn__codec_reply_is_pong(&codec, &m));
  ASSERT_EQ(resp_means("*2\r\n$4\r\npong\r\n$1\r\nx\r\n", &m), 1);
  ASSERT(!rn__codec_reply_is_pong(&codec, &m));
  ASSERT_EQ(resp_means(">2\r\n+a\r\n+b\r\n", &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_PUSH);
  ASSERT_EQ(resp_means("$5\r\nab", &m), 0);
  ASSERT(rn__codec_partial_is_reply(&codec, "$5\r\nab"));
  ASSERT(!rn__codec_partial_is_reply(&codec, ">2\r\n"));
}

/* line and length: every frame is the next reply, and any reply answers
 * the application's own ping. */
static void test_in_order(void) {
  rn_reply_t m;
  use(RN_PROTOCOL_LINE);
  ASSERT_EQ(rn__codec_reply(&codec, &scan, "ok\nnext", 7, &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_IN_ORDER);
  ASSERT_EQ(m.size, 3);
  ASSERT_EQ(m.body_len, 2);
  ASSERT(rn__codec_reply_is_pong(&codec, &m));
  ASSERT(rn__codec_partial_is_reply(&codec, "n"));
  use(RN_PROTOCOL_LENGTH);
  ASSERT_EQ(rn__codec_reply(&codec, &scan, "\0\0\0\2hi", 6, &m), 1);
  ASSERT_EQ(m.kind, RN_REPLY_IN_ORDER);
  ASSERT_EQ(m.body_len, 2);
  ASSERT_MEM_EQ(m.body, "hi", 2);
}

TEST_LIST_START
  TEST_ENTRY(test_rnp)
  TEST_ENTRY(test_resp)
  TEST_ENTRY(test_in_order)
TEST_LIST_END

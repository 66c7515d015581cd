/* What a frame from a server means to a client (reply.h). Replies of
 * length, line and RESP come in request order; rnp's carry the id of the
 * request they answer, and say more: a refusal, "try later", GOAWAY. */
#include "reply.h"

static int reply_in_order(const rn_codec_t *codec, rn_frame_scan_t *scan,
                          const char *data, size_t len, rn_reply_t *out) {
  rn_frame_t f;
  int r = rn_codec_scan(codec, scan, data, len, &f);
  if (r <= 0) return r;
  out->size = f.size;
  /* A push is out-of-band: not a reply to any call. */
  out->kind = (f.flags & RN_FRAME_PUSH) ? RN_REPLY_PUSH : RN_REPLY_IN_ORDER;
  out->status = (f.flags & RN_FRAME_ERROR) ? RN_EREPLY : 0;
  out->flags = f.flags;
  out->body = data + f.body_offset;
  out->body_len = f.body_len;
  return 1;
}

/* What a NOT_EXECUTED refusal becomes if the call cannot be tried again. */
static int rnp_refusal_error(unsigned code) {
  switch (code) {
  case RN_RNP_ERR_OVERLOADED: return RN_EOVERLOAD;
  case RN_RNP_ERR_DEADLINE: return UV_ETIMEDOUT;
  default: return RN_ENOTEXEC;
  }
}

/* An ERROR about request f->id. */
static void rnp_error(const rn_rnp_frame_t *f, rn_reply_t *out) {
  if (f->flags & RN_RNP_NOT_EXECUTED) {
    out->kind = RN_REPLY_REFUSED;
    out->status = rnp_refusal_error(f->error_code);
    /* BAD_REQUEST: sent again, it would be refused again. */
    out->again = f->error_code != RN_RNP_ERR_BAD_REQUEST;
    return;
  }
  /* Still running (its key's first attempt), or an error the server says
   * to try again later. */
  out->kind = f->error_code == RN_RNP_ERR_IN_PROGRESS || out->retry_after_ms > 0
                  ? RN_REPLY_TRY_LATER
                  : RN_REPLY_BY_ID;
  out->status = RN_EREPLY;
  out->flags = RN_FRAME_ERROR;
}

static int reply_rnp(const rn_codec_t *codec, const char *data, size_t len,
                     rn_reply_t *out) {
  rn_rnp_frame_t *f = &out->rnp;
  int r = rn_rnp_parse(data, len, codec->max_frame, f);
  if (r <= 0) return r;
  out->size = f->size;
  out->id = f->id;
  out->retry_after_ms =
      (f->present & 1u << RN_RNP_F_RETRY_AFTER) ? f->retry_after_ms : 0;
  out->body = f->payload;
  out->body_len = f->payload_len;
  out->status = 0;
  out->flags = 0;
  out->again = 0;
  switch (f->type) {
  case RN_RNP_GOAWAY: out->kind = RN_REPLY_GOAWAY; return 1;
  case RN_RNP_REPLY: out->kind = RN_REPLY_BY_ID; return 1;
  case RN_RNP_PONG: out->kind = RN_REPLY_PONG; return 1;
  case RN_RNP_HELLO: out->kind = RN_REPLY_HELLO; return 1;
  case RN_RNP_ERROR:
    /* About the connection: the server says we broke the protocol (a
     * well-formed frame, so not EBADFRAME: the fault it reports is ours)
     * and is closing. */
    if (f->id == 0) return RN_EPEERPROTOCOL;
    /* The HELLO's credentials were refused: nothing of this connection
     * will run, and the server closes it. Not a refusal of one call (the
     * handshake is no call's): the connection's end, with its cause. */
    if (f->error_code == RN_RNP_ERR_UNAUTHENTICATED) return RN_EAUTH;
    rnp_error(f, out);
    return 1;
  default: /* requests and pings are not for clients */
    return RN_EUNEXPECTED;
  }
}

int rn__codec_reply(const rn_codec_t *codec, rn_frame_scan_t *scan,
                    const char *data, size_t len, rn_reply_t *out) {
  if (rn__codec_replies_by_id(codec)) return reply_rnp(codec, data, len, out);
  return reply_in_order(codec, scan, data, len, out);
}

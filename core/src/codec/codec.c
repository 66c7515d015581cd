/* Codec selection and option checking. */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

static const struct {
  const char *name;
  rn_protocol_t protocol;
  const rn_codec_type_t *type;
} rn__protocols[] = {
  {"length", RN_PROTOCOL_LENGTH, &rn__codec_length},
  {"line", RN_PROTOCOL_LINE, &rn__codec_line},
  {"resp", RN_PROTOCOL_RESP, &rn__codec_resp},
  {"rnp", RN_PROTOCOL_RNP, &rn__codec_rnp},
};

int rn_protocol_parse(const char *name, rn_protocol_t *out) {
  size_t i;

  if (name == NULL)
    return UV_EINVAL;
  for (i = 0; i < RN_ARRAY_SIZE(rn__protocols); i++) {
    if (strcmp(name, rn__protocols[i].name) == 0) {
      *out = rn__protocols[i].protocol;
      return 0;
    }
  }
  return UV_EINVAL;
}

/* Options that do not apply to the chosen protocol are ignored, so one
 * options struct can be filled in before the protocol is known. */
int rn_codec_init(rn_codec_t *codec, const rn_codec_options_t *options) {
  rn_codec_t c;
  size_t i, min_frame = 1;

  if (codec == NULL || options == NULL)
    return UV_EINVAL;
  memset(&c, 0, sizeof(c));
  for (i = 0; i < RN_ARRAY_SIZE(rn__protocols); i++)
    if (rn__protocols[i].protocol == options->protocol)
      c.type = rn__protocols[i].type;
  if (c.type == NULL)
    return UV_EINVAL;
  c.protocol = options->protocol;
  c.max_frame = options->max_frame ? options->max_frame : RN_DEFAULT_MAX_FRAME;

  if (c.protocol == RN_PROTOCOL_LENGTH) {
    c.length_bytes = options->length_bytes ? options->length_bytes : 4;
    if (c.length_bytes != 1 && c.length_bytes != 2 && c.length_bytes != 4 &&
        c.length_bytes != 8)
      return UV_EINVAL;
    min_frame = c.length_bytes;
  } else if (c.protocol == RN_PROTOCOL_LINE) {
    const char *delim = options->delimiter ? options->delimiter : "\n";
    /* Bounded: an over-long delimiter is refused without reading it all. */
    while (c.delimiter_len <= RN_DELIMITER_MAX && delim[c.delimiter_len])
      c.delimiter_len++;
    if (c.delimiter_len == 0 || c.delimiter_len > RN_DELIMITER_MAX)
      return UV_EINVAL;
    memcpy(c.delimiter, delim, c.delimiter_len);
    min_frame = c.delimiter_len;
  } else if (c.protocol == RN_PROTOCOL_RESP) {
    min_frame = 3; /* the shortest RESP value, "_\r\n" */
  } else {
    min_frame = RN_RNP_HEADER_SIZE; /* a bare rnp header */
  }
  /* A limit below the smallest frame could never pass a single frame. */
  if (c.max_frame < min_frame)
    return UV_EINVAL;
  *codec = c;
  return 0;
}

void rn_frame_scan_reset(rn_frame_scan_t *scan) {
  free(scan->levels);
  memset(scan, 0, sizeof(*scan));
}

int rn_codec_scan(const rn_codec_t *codec, rn_frame_scan_t *scan,
                  const char *data, size_t len, rn_frame_t *frame) {
  int r;

  /* The cheap case of a trickle: still short of what the frame needs.
   * Only for codecs that would walk the frame again from its start: a
   * resumable scan looks at the new bytes alone anyway, and its hint is
   * a lower bound (resp: every value owed at its smallest), so skipping
   * to it would leave a bad byte unseen until that many had come. */
  if (codec->type->scan == NULL && len < scan->need) {
    frame->size = scan->need;
    frame->body_offset = frame->body_len = 0;
    frame->flags = 0;
    return 0;
  }
  r = codec->type->scan != NULL
          ? codec->type->scan(codec, scan, data, len, frame)
          : codec->type->frame(codec, data, len, frame);
  /* Once a frame is done (or the stream is broken) the next starts
   * afresh. A codec without a scan keeps nothing but `need`: resetting
   * that alone spares every frame a free() and a memset. */
  if (r == 0)
    scan->need = frame->size;
  else if (codec->type->scan == NULL)
    scan->need = 0;
  else if (scan->levels != NULL)
    rn_frame_scan_reset(scan);
  else
    memset(scan, 0, sizeof(*scan)); /* as reset does, without a free() */
  return r;
}

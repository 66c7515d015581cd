/* Private to the codecs: the built-in codec types, named by codec.c's
 * table of protocols. Not installed. */
#ifndef RN_CODEC_H
#define RN_CODEC_H

#include "internal.h"

/* Codec implementations (in codec/). */
extern const rn_codec_type_t rn__codec_length;
extern const rn_codec_type_t rn__codec_line;
extern const rn_codec_type_t rn__codec_resp;
extern const rn_codec_type_t rn__codec_rnp;

#endif /* RN_CODEC_H */

/* What the codec fuzz targets share: rn_codec_scan checked against
 * rn_codec_frame on the same input. Include after resilnet.h and the
 * target's CHECK. */
#ifndef RN_FUZZ_SCAN_H
#define RN_FUZZ_SCAN_H

#include <string.h>

/* The input fed to one scan in pieces of a size the input picks: the
 * answer at its end agrees with rn_codec_frame on the whole (an error may
 * be seen a little later, once the bytes the frame needs are in, or as
 * the other error: either closes the stream). */
static void check_scan(const rn_codec_t *c, const char *s, size_t len,
                       int whole, const rn_frame_t *wf, size_t step) {
  rn_frame_scan_t scan;
  rn_frame_t f;
  size_t n = 0;
  int r = 0;

  memset(&scan, 0, sizeof(scan));
  for (;;) {
    n = n + step < len ? n + step : len;
    r = rn_codec_scan(c, &scan, s, n, &f);
    if (r != 0 || n == len) break;
    CHECK(f.size > n);
  }
  if (whole == 1) {
    CHECK(r == 1 && f.size == wf->size && f.flags == wf->flags);
    CHECK(f.body_offset == wf->body_offset && f.body_len == wf->body_len);
  } else if (whole == 0) {
    CHECK(r == 0);
  } else {
    CHECK(r == 0 || r == RN_EBADFRAME || r == RN_EFRAMESIZE);
  }
  rn_frame_scan_reset(&scan);
}

#endif /* RN_FUZZ_SCAN_H */

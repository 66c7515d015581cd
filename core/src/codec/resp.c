/* "resp": a frame is one complete RESP2/RESP3 value, attributes included.
 * The body is the whole frame; decoders walk it with rn_resp_item. */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

static int is_aggregate(rn_resp_type_t type) {
  return type == RN_RESP_ARRAY || type == RN_RESP_MAP || type == RN_RESP_SET ||
         type == RN_RESP_ATTRIBUTE || type == RN_RESP_PUSH;
}

/* The smallest RESP value, "_\r\n" or "+\r\n", is 3 bytes: a count of
 * values still owed proves a frame too large before those values arrive. */
#define RN_RESP_MIN_ITEM 3

/* A line item ("+OK\r\n", ":12\r\n"...) is over at its CR; a bulk one
 * ("$5\r\nhello\r\n") at a length its header gives, which the "need more"
 * hint covers. */
static int is_line_item(char first) {
  return first != RN_RESP_BULK && first != RN_RESP_BULK_ERROR &&
         first != RN_RESP_VERBATIM && !is_aggregate((rn_resp_type_t)first);
}

/* A CR ends a line, an LF out of place makes it bad: either is news. */
static int has_line_end(const char *data, size_t len) {
  return memchr(data, '\r', len) != NULL || memchr(data, '\n', len) != NULL;
}

/* Keeps the walk's place in scan, or forgets it if the levels cannot be
 * kept (out of memory: the next call starts over, slower but right). */
static void scan_pause(rn_frame_scan_t *scan, size_t off, uint64_t owed,
                       size_t depth, const uint64_t *left, int flags) {
  if (depth + 1 > scan->capacity) {
    uint64_t *levels = realloc(scan->levels, (depth + 1) * sizeof(*levels));
    if (levels == NULL) {
      scan->owed = 0;
      return;
    }
    scan->levels = levels;
    scan->capacity = (unsigned)(depth + 1);
  }
  memcpy(scan->levels, left, (depth + 1) * sizeof(*left));
  scan->done = off;
  scan->owed = owed;
  scan->depth = (unsigned)depth;
  scan->flags = flags;
}

/* The frame most replies are: one whole bulk string, simple string,
 * integer or error ("$3\r\nabc\r\n", "+OK\r\n", ":12\r\n", "-ERR x\r\n"),
 * all of it in data and within max_frame. Its size (flags: error or
 * not), or 0 for anything else: then the general walk decides, so what
 * this accepts is only ever what the walk would accept, as it would
 * (test_single_value_fast_path holds the two side by side). */
static size_t resp_single(const char *data, size_t len, size_t max,
                          int *flags) {
  const char *p = data + 1, *end = data + RN_MIN(len, max);
  uint64_t n = 0; /* 18 digits fit, whatever size_t's width */
  if (len < 3) return 0;
  switch (data[0]) {
  case RN_RESP_BULK:
    /* Up to 18 digits, no sign: a null ("$-1"), a longer or a bad length
     * goes the general way. */
    while (p < end && (unsigned)(*p - '0') <= 9 && p - data <= 18)
      n = n * 10 + (uint64_t)(*p++ - '0');
    /* The length's CRLF, n bytes and theirs, all before end. */
    if (p == data + 1 || end - p < 4 || p[0] != '\r' || p[1] != '\n' ||
        n > (uint64_t)(end - p) - 4)
      return 0;
    p += 2 + (size_t)n;
    if (p[0] != '\r' || p[1] != '\n') return 0;
    *flags = 0;
    return (size_t)(p + 2 - data);
  case RN_RESP_INTEGER:
    if (*p == '-') p++;
    while (p < end && (unsigned)(*p - '0') <= 9 && p - data <= 18) p++;
    if (p == data + 1 || p[-1] == '-') return 0;
    break;
  case RN_RESP_SIMPLE:
  case RN_RESP_ERROR:
    while (p < end && *p != '\r' && *p != '\n') p++;
    break;
  default:
    return 0;
  }
  if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return 0;
  *flags = data[0] == RN_RESP_ERROR ? RN_FRAME_ERROR : 0;
  return (size_t)(p + 2 - data);
}

/* Walks items with an explicit stack of counts instead of recursion, so a
 * hostile nesting depth costs a bounded array, not the C stack. With a
 * scan, the walk starts where the last one paused and pauses there again:
 * each item is parsed once however the frame is split. */
static RN_NOINLINE int resp_walk(const rn_codec_t *codec,
                                 rn_frame_scan_t *scan, const char *data,
                                 size_t len, rn_frame_t *frame) {
  uint64_t left[RN_RESP_MAX_DEPTH + 1]; /* values owed per open level */
  uint64_t owed = 1;                    /* the sum of left[0..depth] */
  size_t depth = 0, off = 0, max = codec->max_frame;
  int flags = 0;

  left[0] = 1; /* level 0 owes the frame's one value */
  if (scan != NULL && scan->owed > 0 && scan->done <= len) {
    off = scan->done;
    owed = scan->owed;
    depth = scan->depth;
    flags = scan->flags;
    memcpy(left, scan->levels, (depth + 1) * sizeof(*left));
    /* A long line item still without its CR: only the new bytes are
     * looked at (the parser would search the whole line again). */
    if (scan->line_from > off && len < max &&
        !has_line_end(data + scan->line_from - 1,
                      len - (scan->line_from - 1))) {
      scan->line_from = len;
      frame->size = len + 1;
      frame->body_offset = frame->body_len = 0;
      frame->flags = 0;
      return 0;
    }
  }
  do {
    rn_resp_item_t it;
    uint64_t children = 0, room;
    /* Bytes past max_frame cannot belong to a frame that fits: leaving
     * them out spares scanning a long buffer for a CRLF. */
    int r = rn_resp_item(data + off, RN_MIN(len, max) - off, &it);

    if (scan != NULL)
      scan->items++;
    if (r < 0)
      return r;
    if (it.size > max - off) /* on "need more", size is a lower bound */
      return RN_EFRAMESIZE;
    if (r == 0) {
      /* Hint, as in codec/length.c: the fewest bytes the frame needs, the
       * values owed after this one at their smallest. */
      uint64_t rest = (owed - 1) * RN_RESP_MIN_ITEM;
      if (rest > max - off - it.size)
        return RN_EFRAMESIZE;
      frame->size = off + it.size + (size_t)rest;
      frame->body_offset = frame->body_len = 0;
      frame->flags = 0;
      if (scan != NULL) {
        scan_pause(scan, off, owed, depth, left, flags);
        scan->line_from = off < len && is_line_item(data[off]) ? len : 0;
      }
      return 0;
    }
    off += it.size;

    if (depth == 0 &&
        (it.type == RN_RESP_ERROR || it.type == RN_RESP_BULK_ERROR))
      flags = RN_FRAME_ERROR;
    else if (depth == 0 && it.type == RN_RESP_PUSH)
      flags = RN_FRAME_PUSH;

    /* An attribute annotates the value after it: it adds its pairs but
     * does not count as the value its level owes. */
    if (it.type != RN_RESP_ATTRIBUTE) {
      left[depth]--;
      owed--;
    }
    if (is_aggregate(it.type)) {
      if (depth == RN_RESP_MAX_DEPTH)
        return RN_EBADFRAME;
      children = (uint64_t)it.integer;
      if (it.type == RN_RESP_MAP || it.type == RN_RESP_ATTRIBUTE)
        children *= 2; /* pairs; integer <= INT64_MAX, so no wrap */
    }
    /* (Nothing owed and no children: the frame is whole, and fits.) */
    if (owed > 0 || children > 0) {
      room = (max - off) / RN_RESP_MIN_ITEM;
      if (owed > room || children > room - owed)
        return RN_EFRAMESIZE;
    }
    if (children > 0) {
      left[++depth] = children;
      owed += children;
    }
    while (depth > 0 && left[depth] == 0)
      depth--;
  } while (owed > 0);

  frame->size = off;
  frame->body_offset = 0;
  frame->body_len = off;
  frame->flags = flags;
  return 1;
}

/* A frame starting afresh may be one of the values resp_single knows;
 * else, or if resuming, the walk. (Kept out of resp_walk: its stack of
 * counts costs a frame setup the common reply need not pay.) */
static int resp_find(const rn_codec_t *codec, rn_frame_scan_t *scan,
                     const char *data, size_t len, rn_frame_t *frame) {
  int flags;
  size_t size;
  if ((scan == NULL || scan->owed == 0) &&
      (size = resp_single(data, len, codec->max_frame, &flags)) > 0) {
    if (scan != NULL) scan->items++;
    frame->size = frame->body_len = size;
    frame->body_offset = 0;
    frame->flags = flags;
    return 1;
  }
  return resp_walk(codec, scan, data, len, frame);
}

static int resp_frame(const rn_codec_t *codec, const char *data, size_t len,
                      rn_frame_t *frame) {
  return resp_find(codec, NULL, data, len, frame);
}

static int resp_scan(const rn_codec_t *codec, rn_frame_scan_t *scan,
                     const char *data, size_t len, rn_frame_t *frame) {
  return resp_find(codec, scan, data, len, frame);
}

/* A string request becomes the array of one bulk string: "*1\r\n$N\r\n...". */
static int resp_encode(const rn_codec_t *codec, rn_buf_t *out,
                       const char *body, size_t len) {
  size_t digits = 1, total, v;
  int err;

  for (v = len; v >= 10; v /= 10)
    digits++;
  if (len > codec->max_frame)
    return RN_EFRAMESIZE;
  total = 4 + 1 + digits + 2 + len + 2;
  if (total < len || total > codec->max_frame)
    return RN_EFRAMESIZE;
  err = rn_buf_reserve(out, total); /* both appends below then fit */
  if (err == 0)
    err = rn_resp_encode_array(out, 1);
  if (err == 0)
    err = rn_resp_encode_bulk(out, body, len);
  return err;
}

const rn_codec_type_t rn__codec_resp = {"resp", resp_frame, resp_encode,
                                         resp_scan};

/* RESP2/RESP3 values: a strict pull parser and the encoders.
 *
 * The parser reads one item at a time and never recurses: aggregates report
 * their element count and the caller walks the elements (codec/resp.c does
 * so to find frame ends, decoders do so to build values).
 *
 * Streamed RESP3 strings and aggregates ("$?", "*?" and their ";"/"."
 * chunks) are rejected as RN_EBADFRAME: no server sends them unasked, and
 * supporting them would make every item's extent depend on later chunks. */
#include "resilnet.h"

#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Longest line content accepted for a decimal integer or length:
 * "-9223372036854775808". Anything longer is garbage, caught here rather
 * than after max_frame bytes of it were buffered. */
#define RN_RESP_NUMBER_MAX 20
/* Longest double text. Servers print "%.17g" (under 25 characters); this
 * leaves room for other writers while keeping the copy on the stack. */
#define RN_RESP_DOUBLE_MAX 320

/* On "need more", item->size is set to a lower bound of the item's size
 * (always more than what was given): the frame finder uses it to refuse an
 * oversized bulk string as soon as its header arrives. */
static int need(rn_resp_item_t *item, uint64_t size) {
  item->size = size > SIZE_MAX ? SIZE_MAX : (size_t)size;
  return 0;
}

/* Finds the CRLF ending the line data[1..*eol). 1: found; 0: need more;
 * RN_EBADFRAME: a CR or LF out of place, or content longer than max. */
static int find_eol(const char *data, size_t len, size_t max, size_t *eol) {
  size_t window = len - 1;
  const char *cr;

  if (window > max)
    window = max + 1; /* room for the CR that must follow max bytes */
  if (max <= RN_RESP_NUMBER_MAX) {
    /* A length or count ("$3\r\n"): a few bytes, where one pass costs
     * less than two memchr calls. The same verdicts: an LF before the
     * first CR is bad. */
    size_t i;
    cr = NULL;
    for (i = 1; i <= window; i++) {
      if (data[i] == '\r') {
        cr = data + i;
        break;
      }
      if (data[i] == '\n')
        return RN_EBADFRAME;
    }
  } else {
    cr = memchr(data + 1, '\r', window);
    if (memchr(data + 1, '\n', cr ? (size_t)(cr - data - 1) : window))
      return RN_EBADFRAME;
  }
  if (cr == NULL)
    return len - 1 > max ? RN_EBADFRAME : 0;
  if (cr + 1 == data + len)
    return 0;
  if (cr[1] != '\n')
    return RN_EBADFRAME;
  *eol = (size_t)(cr - data);
  return 1;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Decimal int64: optional '-', at least one digit, no overflow. */
static int parse_int64(const char *s, size_t n, int64_t *out) {
  uint64_t v = 0, limit = INT64_MAX;
  size_t i = 0;
  int neg = 0;

  if (n > 0 && s[0] == '-') {
    neg = 1;
    i = 1;
    limit = (uint64_t)INT64_MAX + 1;
  }
  if (i == n)
    return RN_EBADFRAME;
  if (n - i <= 18) {
    /* Eighteen digits cannot pass INT64_MAX: no test of overflow (a
     * division) per digit. */
    for (; i < n; i++) {
      unsigned d = (unsigned)(s[i] - '0');
      if (d > 9)
        return RN_EBADFRAME;
      v = v * 10 + d;
    }
  }
  for (; i < n; i++) {
    unsigned d = (unsigned)(s[i] - '0');
    if (!is_digit(s[i]) || v > (limit - d) / 10)
      return RN_EBADFRAME;
    v = v * 10 + d;
  }
  if (!neg)
    *out = (int64_t)v;
  else
    *out = v == limit ? INT64_MIN : -(int64_t)v;
  return 0;
}

static size_t skip_digits(const char *s, size_t i, size_t n) {
  while (i < n && is_digit(s[i]))
    i++;
  return i;
}

/* RESP3 doubles: [+-]digits[.digits][(e|E)[+-]digits], inf, -inf, nan.
 * The grammar is checked here because strtod accepts far more (hex, "infinity",
 * leading spaces); strtod then does the correctly rounded conversion. */
static int parse_double(const char *s, size_t n, double *out) {
  char buf[RN_RESP_DOUBLE_MAX + 1];
  const char *point;
  char *end;
  size_t i = 0, j;

  if (n == 3 && memcmp(s, "inf", 3) == 0) {
    *out = HUGE_VAL;
    return 0;
  }
  if (n == 4 && memcmp(s, "-inf", 4) == 0) {
    *out = -HUGE_VAL;
    return 0;
  }
  if (n == 3 && memcmp(s, "nan", 3) == 0) {
    *out = NAN;
    return 0;
  }
  if (i < n && (s[i] == '-' || s[i] == '+'))
    i++;
  if ((j = skip_digits(s, i, n)) == i)
    return RN_EBADFRAME;
  i = j;
  if (i < n && s[i] == '.') {
    if ((j = skip_digits(s, i + 1, n)) == i + 1)
      return RN_EBADFRAME;
    i = j;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '-' || s[i] == '+'))
      i++;
    if ((j = skip_digits(s, i, n)) == i)
      return RN_EBADFRAME;
    i = j;
  }
  if (i != n)
    return RN_EBADFRAME;

  memcpy(buf, s, n);
  buf[n] = '\0';
  /* strtod reads the decimal point of the current locale, which a host
   * program (os.setlocale in Lua) may have changed from ".". */
  point = localeconv()->decimal_point;
  if (point[0] != '.' && point[0] != '\0' && point[1] == '\0') {
    char *dot = memchr(buf, '.', n);
    if (dot != NULL)
      *dot = point[0];
  }
  *out = strtod(buf, &end);
  return end == buf + n ? 0 : RN_EBADFRAME;
}

/* $ ! = : "<len>\r\n<payload>\r\n". line/n is the length text. */
static int parse_blob(const char *data, size_t len, const char *line,
                      size_t n, rn_resp_item_t *item) {
  const char *payload = data + item->size;
  uint64_t total;
  int64_t blen;

  if (parse_int64(line, n, &blen) != 0)
    return RN_EBADFRAME; /* includes the streamed form "$?" */
  if (blen == -1 && item->type == RN_RESP_BULK) {
    item->type = RN_RESP_NULL; /* RESP2's null bulk string */
    return 1;
  }
  if (blen < 0)
    return RN_EBADFRAME;
  total = (uint64_t)item->size + (uint64_t)blen + 2;
  if (total > len) {
    if (total - 1 == len && payload[blen] != '\r')
      return RN_EBADFRAME; /* no need to wait for the LF to know */
    return need(item, total);
  }
  if (payload[blen] != '\r' || payload[blen + 1] != '\n')
    return RN_EBADFRAME;
  item->str = payload;
  item->len = (size_t)blen;
  item->size = (size_t)total;
  if (item->type == RN_RESP_VERBATIM) {
    /* "txt:..." : the 3-byte format and its colon are not the text. */
    if (blen < 4 || payload[3] != ':')
      return RN_EBADFRAME;
    item->str += 4;
    item->len -= 4;
  }
  return 1;
}

int rn_resp_item(const char *data, size_t len, rn_resp_item_t *item) {
  const char *line;
  size_t eol, n, max;
  int r;

  memset(item, 0, sizeof(*item));
  if (len == 0)
    return need(item, 1);
  switch (data[0]) {
  case '+': case '-': case '(':
    max = SIZE_MAX - 1;
    break;
  case ':': case '$': case '!': case '=':
  case '*': case '%': case '~': case '|': case '>':
    max = RN_RESP_NUMBER_MAX;
    break;
  case ',':
    max = RN_RESP_DOUBLE_MAX;
    break;
  case '#':
    max = 1;
    break;
  case '_':
    max = 0;
    break;
  default:
    return RN_EBADFRAME;
  }
  r = find_eol(data, len, max, &eol);
  if (r <= 0)
    return r < 0 ? r : need(item, (uint64_t)len + 1);

  line = data + 1;
  n = eol - 1;
  item->type = (rn_resp_type_t)data[0];
  item->size = eol + 2;
  switch (item->type) {
  case RN_RESP_SIMPLE:
  case RN_RESP_ERROR:
    break;
  case RN_RESP_INTEGER:
    if (parse_int64(line, n, &item->integer) != 0)
      return RN_EBADFRAME;
    break;
  case RN_RESP_BIGNUM: {
    size_t sign = n > 0 && line[0] == '-';
    if (sign == n || skip_digits(line, sign, n) != n)
      return RN_EBADFRAME;
    break;
  }
  case RN_RESP_DOUBLE:
    if (parse_double(line, n, &item->number) != 0)
      return RN_EBADFRAME;
    break;
  case RN_RESP_BOOLEAN:
    if (n != 1 || (line[0] != 't' && line[0] != 'f'))
      return RN_EBADFRAME;
    item->integer = line[0] == 't';
    break;
  case RN_RESP_NULL:
    return 1;
  case RN_RESP_BULK:
  case RN_RESP_BULK_ERROR:
  case RN_RESP_VERBATIM:
    return parse_blob(data, len, line, n, item);
  default: /* aggregates */
    if (parse_int64(line, n, &item->integer) != 0)
      return RN_EBADFRAME; /* includes the streamed form "*?" */
    if (item->integer == -1 && item->type == RN_RESP_ARRAY) {
      item->type = RN_RESP_NULL; /* RESP2's null array */
      item->integer = 0;
    } else if (item->integer < 0) {
      return RN_EBADFRAME;
    }
    return 1;
  }
  item->str = line;
  item->len = n;
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Encoders. Each reserves everything it writes first, so on UV_ENOMEM the
 * buffer is unchanged. */

/* Appends len bytes to room reserved before (no second capacity check). */
static void put_reserved(rn_buf_t *out, const char *data, size_t len) {
  if (len == 0) return; /* data may be NULL then */
  memcpy(out->base + out->len, data, len);
  out->len += len;
}

/* Appends "<type>[-]<magnitude>\r\n" and reserves `extra` more bytes. */
static int put_header(rn_buf_t *out, char type, int negative, uint64_t mag,
                      size_t extra) {
  char tmp[24]; /* type, sign, 20 digits, CRLF */
  char *p = tmp + sizeof(tmp);
  size_t n;
  int err;

  *--p = '\n';
  *--p = '\r';
  do {
    *--p = (char)('0' + mag % 10);
    mag /= 10;
  } while (mag != 0);
  if (negative)
    *--p = '-';
  *--p = type;
  n = (size_t)(tmp + sizeof(tmp) - p);
  if (extra > SIZE_MAX - n)
    return UV_ENOMEM;
  err = rn_buf_reserve(out, n + extra);
  if (err == 0)
    put_reserved(out, p, n);
  return err;
}

static int put_line(rn_buf_t *out, char type, const char *text, size_t len) {
  int err;

  if (len > 0 && (memchr(text, '\r', len) || memchr(text, '\n', len)))
    return UV_EINVAL;
  if (len > SIZE_MAX - 3)
    return UV_ENOMEM;
  err = rn_buf_reserve(out, len + 3);
  if (err != 0)
    return err;
  put_reserved(out, &type, 1);
  put_reserved(out, text, len);
  put_reserved(out, "\r\n", 2);
  return 0;
}

int rn_resp_encode_array(rn_buf_t *out, size_t count) {
  return put_header(out, '*', 0, count, 0);
}

int rn_resp_encode_bulk(rn_buf_t *out, const char *data, size_t len) {
  int err;

  if (len > SIZE_MAX - 2)
    return UV_ENOMEM;
  err = put_header(out, '$', 0, len, len + 2);
  if (err != 0)
    return err;
  put_reserved(out, data, len);
  put_reserved(out, "\r\n", 2);
  return 0;
}

int rn_resp_encode_integer(rn_buf_t *out, int64_t value) {
  /* Negated in unsigned arithmetic: -INT64_MIN does not fit an int64_t. */
  uint64_t mag = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
  return put_header(out, ':', value < 0, mag, 0);
}

int rn_resp_encode_simple(rn_buf_t *out, const char *text, size_t len) {
  return put_line(out, '+', text, len);
}

int rn_resp_encode_error(rn_buf_t *out, const char *text, size_t len) {
  return put_line(out, '-', text, len);
}

int rn_resp_encode_null(rn_buf_t *out) {
  return rn_buf_append(out, "$-1\r\n", 5);
}

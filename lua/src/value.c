/* Conversions between Lua values and protocol bytes: RESP replies into Lua
 * values, requests and server replies into frames, and lossless number
 * text. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrn.h"

/* ------------------------------------------------------------------------ */
/* Numbers                                                                    */

size_t lrn_format_number(lua_State *L, int idx, char *out, size_t size) {
  double d;
  int n, prec;
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) {
    n = snprintf(out, size, "%lld", (long long)lua_tointeger(L, idx));
    return n < 0 ? 0 : (size_t)n;
  }
#endif
  d = (double)lua_tonumber(L, idx);
  if (d != d) {
    n = snprintf(out, size, "nan");
  } else if (d - d != 0) {
    n = snprintf(out, size, d > 0 ? "inf" : "-inf");
  } else if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
             (double)(long long)d == d) {
    /* Integral values print as integers whatever their Lua subtype, so a
     * server reading an integer argument (INCRBY k 5) accepts them. */
    n = snprintf(out, size, "%lld", (long long)d);
  } else {
    /* The shortest of %.15g..%.17g that reads back as the same double. */
    n = 0;
    for (prec = 15; prec <= 17; prec++) {
      n = snprintf(out, size, "%.*g", prec, d);
      if (strtod(out, NULL) == d)
        break;
    }
  }
  return n < 0 ? 0 : (size_t)n;
}

/* ------------------------------------------------------------------------ */
/* RESP -> Lua                                                                */

typedef struct lrn_reader_s {
  const char *data;
  size_t len;
  size_t off;
} lrn_reader_t;

static int lrn_resp_next(lua_State *L, lrn_ctx_t *ctx, lrn_reader_t *r,
                         int depth);

static int lrn_resp_aggregate(lua_State *L, lrn_ctx_t *ctx, lrn_reader_t *r,
                              const rn_resp_item_t *it, int depth) {
  int64_t i, count = it->integer;
  /* Every element takes at least 3 bytes: a bogus count cannot make us
   * preallocate more than the frame could hold. */
  int64_t room = (int64_t)((r->len - r->off) / 3 + 1);
  int hint;
  if (count < 0)
    return RN_EBADFRAME;
  hint = (int)(count < room ? (count < INT_MAX ? count : INT_MAX)
                            : (room < INT_MAX ? room : INT_MAX));
  if (it->type == RN_RESP_MAP) {
    lua_createtable(L, 0, hint);
    for (i = 0; i < count; i++) {
      if (lrn_resp_next(L, ctx, r, depth + 1) != 0 ||
          lrn_resp_next(L, ctx, r, depth + 1) != 0)
        return RN_EBADFRAME;
      /* A NaN key would make rawset raise; use its text instead. */
      if (lua_type(L, -2) == LUA_TNUMBER &&
          lua_tonumber(L, -2) != lua_tonumber(L, -2)) {
        lua_pushliteral(L, "nan");
        lua_replace(L, -3);
      }
      lua_rawset(L, -3);
    }
  } else {
    lua_createtable(L, hint, 0);
    for (i = 0; i < count; i++) {
      if (lrn_resp_next(L, ctx, r, depth + 1) != 0)
        return RN_EBADFRAME;
      lua_rawseti(L, -2, (int)(i + 1));
    }
  }
  return 0;
}

static int lrn_resp_next(lua_State *L, lrn_ctx_t *ctx, lrn_reader_t *r,
                         int depth) {
  rn_resp_item_t it;
  int64_t i;
  if (depth > RN_RESP_MAX_DEPTH)
    return RN_EBADFRAME;
  luaL_checkstack(L, 4, "resilnet: reply nested too deeply");
  for (;;) {
    if (r->off >= r->len ||
        rn_resp_item(r->data + r->off, r->len - r->off, &it) != 1 ||
        it.size == 0)
      return RN_EBADFRAME;
    r->off += it.size;
    if (it.type != RN_RESP_ATTRIBUTE)
      break;
    /* Attributes annotate the value that follows; callers want the value. */
    for (i = 0; i < 2 * it.integer; i++) {
      if (lrn_resp_next(L, ctx, r, depth + 1) != 0)
        return RN_EBADFRAME;
      lua_pop(L, 1);
    }
  }
  switch (it.type) {
  case RN_RESP_SIMPLE:
  case RN_RESP_BULK:
  case RN_RESP_VERBATIM:
  case RN_RESP_BIGNUM:
    lua_pushlstring(L, it.str, it.len);
    return 0;
  case RN_RESP_ERROR:
  case RN_RESP_BULK_ERROR:
    lrn_error_push(L, ctx, "EREPLY", it.str, it.len, 0, -1, NULL);
    return 0;
  case RN_RESP_INTEGER:
    lua_pushinteger(L, (lua_Integer)it.integer);
    return 0;
  case RN_RESP_NULL:
    lua_pushlightuserdata(L, NULL);
    return 0;
  case RN_RESP_BOOLEAN:
    lua_pushboolean(L, it.integer != 0);
    return 0;
  case RN_RESP_DOUBLE:
    lua_pushnumber(L, (lua_Number)it.number);
    return 0;
  case RN_RESP_ARRAY:
  case RN_RESP_SET:
  case RN_RESP_PUSH:
  case RN_RESP_MAP:
    return lrn_resp_aggregate(L, ctx, r, &it, depth);
  default:
    return RN_EBADFRAME;
  }
}

/* The usual reply, a lone bulk string ("$<n>\r\n<n bytes>\r\n"), pushed
 * without the general walk (the core framed it, so it is well formed; the
 * lengths are checked anyway). 0, or -1 for any other reply. */
static int lrn_resp_push_bulk(lua_State *L, const char *data, size_t len) {
  size_t i = 1, n = 0;
  if (len < 6 || data[0] != '$')
    return -1;
  for (; i < len && i <= 18 && data[i] >= '0' && data[i] <= '9'; i++)
    n = n * 10 + (size_t)(data[i] - '0');
  if (i == 1 || i >= len || data[i] != '\r' || n > len ||
      i + 2 + n + 2 != len)
    return -1;
  lua_pushlstring(L, data + i + 2, n);
  return 0;
}

int lrn_resp_push(lua_State *L, lrn_ctx_t *ctx, const char *data,
                  size_t len) {
  lrn_reader_t r;
  int top = lua_gettop(L);
  if (lrn_resp_push_bulk(L, data, len) == 0)
    return 0;
  r.data = data;
  r.len = len;
  r.off = 0;
  if (lrn_resp_next(L, ctx, &r, 0) != 0) {
    lua_settop(L, top);
    return RN_EBADFRAME;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Lua -> requests                                                            */

static int lrn_encode_number_bulk(lua_State *L, int idx, rn_buf_t *out) {
  char text[64];
  size_t n = lrn_format_number(L, idx, text, sizeof(text));
  return rn_resp_encode_bulk(out, text, n);
}

/* The usual request, a short array of strings ({"GET", key}): its
 * elements are pushed once, sized, the buffer reserved once and every
 * header written in place, instead of a reserve and a header routine per
 * element. 1 when it encoded, 0 when the table is not one (nothing
 * written, the stack as it was), or a negative error. */
#define LRN_FAST_ELEMENTS 16

static char *lrn_put_header(char *p, char type, size_t v) {
  char tmp[24];
  char *t = tmp + sizeof(tmp);
  *p++ = type;
  if (v < 10) { /* most arguments and counts: no digit loop */
    p[0] = (char)('0' + v);
    p[1] = '\r';
    p[2] = '\n';
    return p + 3;
  }
  do {
    *--t = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  memcpy(p, t, (size_t)(tmp + sizeof(tmp) - t));
  p += tmp + sizeof(tmp) - t;
  *p++ = '\r';
  *p++ = '\n';
  return p;
}

static int lrn_encode_strings(lua_State *L, int idx, size_t n,
                              const rn_codec_t *codec, rn_buf_t *out) {
  const char *s[LRN_FAST_ELEMENTS];
  size_t len[LRN_FAST_ELEMENTS], total = 24, i;
  int rc;
  char *p;

  if (n > LRN_FAST_ELEMENTS)
    return 0;
  for (i = 0; i < n; i++) {
    int string = lrn_rawgeti(L, idx, (int)i + 1) == LUA_TSTRING;
    /* The table holds the string, and nothing here runs Lua code or
     * allocates from Lua until it is copied: the pointer stays valid
     * off the stack (no lua_checkstack for n of them). */
    s[i] = string ? lua_tolstring(L, -1, &len[i]) : NULL;
    lua_pop(L, 1);
    if (!string)
      return 0;
    if (len[i] > codec->max_frame)
      return RN_EFRAMESIZE;
    total += 1 + 20 + 2 + len[i] + 2; /* '$', digits at most, CRLFs */
  }
  rc = total > codec->max_frame + 24 + n * 25 ? RN_EFRAMESIZE
                                              : rn_buf_reserve(out, total);
  if (rc == 0) {
    p = lrn_put_header(out->base + out->len, '*', n);
    for (i = 0; i < n; i++) {
      p = lrn_put_header(p, '$', len[i]);
      memcpy(p, s[i], len[i]);
      p += len[i];
      *p++ = '\r';
      *p++ = '\n';
    }
    if ((size_t)(p - out->base) - out->len > codec->max_frame)
      rc = RN_EFRAMESIZE;
    out->len = (size_t)(p - out->base);
  }
  return rc < 0 ? rc : 1;
}

int lrn_encode_append(lua_State *L, int idx, int arg,
                      const rn_codec_t *codec, rn_buf_t *out) {
  size_t len, i, n, start = out->len;
  const char *s;
  int rc = 0;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &len);
    return rn_codec_encode(codec, out, s, len);
  case LUA_TTABLE:
    if (codec->protocol != RN_PROTOCOL_RESP)
      return luaL_error(L, "resilnet: a table request needs protocol 'resp' "
                           "(send a string)");
    n = lrn_rawlen(L, idx);
    if (n == 0)
      return luaL_error(L, "resilnet: the request table is empty");
    idx = lrn_absindex(L, idx);
    rc = lrn_encode_strings(L, idx, n, codec, out);
    if (rc != 0)
      return rc < 0 ? rc : 0;
    rc = rn_resp_encode_array(out, n);
    for (i = 1; rc == 0 && i <= n; i++) {
      lua_rawgeti(L, idx, (int)i);
      switch (lua_type(L, -1)) {
      case LUA_TSTRING:
        s = lua_tolstring(L, -1, &len);
        rc = rn_resp_encode_bulk(out, s, len);
        break;
      case LUA_TNUMBER:
        rc = lrn_encode_number_bulk(L, -1, out);
        break;
      default:
        return luaL_error(L, "resilnet: request[%d] is a %s; expected a "
                             "string or a number",
                          (int)i, luaL_typename(L, -1));
      }
      lua_pop(L, 1);
    }
    if (rc == 0 && out->len - start > codec->max_frame)
      rc = RN_EFRAMESIZE;
    return rc;
  default:
    (void)arg;
    return luaL_error(L, "resilnet: the request must be a string or a "
                         "table, got %s",
                      luaL_typename(L, idx));
  }
}

int lrn_encode_request(lua_State *L, int idx, int arg,
                       const rn_codec_t *codec, rn_buf_t *out) {
  out->len = 0;
  return lrn_encode_append(L, idx, arg, codec, out);
}

/* ------------------------------------------------------------------------ */
/* Lua -> RESP replies (a resp server)                                        */

static int lrn_encode_fail(lua_State *L, const char *why) {
  lua_pushstring(L, why);
  return -1;
}

/* Appends "-<text>" with CR and LF turned into spaces: an error line
 * cannot carry them, and the reply must go out whatever the handler said. */
static int lrn_encode_error_text(rn_buf_t *out, const char *text,
                                 size_t len) {
  size_t i;
  int rc;
  if ((rc = rn_buf_reserve(out, len + 3)) != 0)
    return rc;
  out->base[out->len++] = '-';
  for (i = 0; i < len; i++) {
    char c = text[i];
    out->base[out->len++] = (c == '\r' || c == '\n') ? ' ' : c;
  }
  out->base[out->len++] = '\r';
  out->base[out->len++] = '\n';
  return 0;
}

/* The RESP error text of the value at idx: an error object forwards a
 * server's reply text unchanged (EREPLY) or becomes "ERR CODE: message";
 * anything else "ERR <tostring>". Leaves the text pushed. */
static void lrn_error_text(lua_State *L, lrn_ctx_t *ctx, int idx) {
  idx = lrn_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TTABLE && lrn_is_error(L, ctx, idx)) {
    lua_getfield(L, idx, "code");
    lua_getfield(L, idx, "message");
    if (lua_type(L, -2) == LUA_TSTRING &&
        strcmp(lua_tostring(L, -2), "EREPLY") == 0 &&
        lua_type(L, -1) == LUA_TSTRING) {
      lua_remove(L, -2);
      return;
    }
    lua_pushfstring(L, "ERR %s: %s",
                    lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2)
                                                   : "ERROR",
                    lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                   : "");
    lua_replace(L, -3);
    lua_pop(L, 1);
    return;
  }
  if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER)
    lua_pushfstring(L, "ERR %s", lua_tostring(L, idx));
  else
    lua_pushfstring(L, "ERR %s", luaL_typename(L, idx));
}

int lrn_resp_encode_error_value(lua_State *L, lrn_ctx_t *ctx, int idx,
                                rn_buf_t *out) {
  size_t len;
  const char *text;
  int rc;
  lrn_error_text(L, ctx, idx);
  text = lua_tolstring(L, -1, &len);
  rc = lrn_encode_error_text(out, text, len);
  lua_pop(L, 1);
  return rc;
}

static int lrn_resp_encode_at(lua_State *L, lrn_ctx_t *ctx, int idx,
                              rn_buf_t *out, int depth) {
  const char *s;
  size_t len, n, count, i;
  int rc = 0;
  char text[64];
  idx = lrn_absindex(L, idx);
  if (depth > RN_RESP_MAX_DEPTH)
    return lrn_encode_fail(L, "reply nested too deeply");
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    rc = rn_resp_encode_null(out);
    break;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) != NULL)
      return lrn_encode_fail(L, "cannot encode a light userdata");
    rc = rn_resp_encode_null(out);
    break;
  case LUA_TBOOLEAN:
    rc = rn_resp_encode_integer(out, lua_toboolean(L, idx) ? 1 : 0);
    break;
  case LUA_TNUMBER:
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
      rc = rn_resp_encode_integer(out, (int64_t)lua_tointeger(L, idx));
      break;
    }
#else
    {
      /* No integer subtype: integral values are integers. */
      double d = (double)lua_tonumber(L, idx);
      if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
          (double)(long long)d == d) {
        rc = rn_resp_encode_integer(out, (int64_t)d);
        break;
      }
    }
#endif
    len = lrn_format_number(L, idx, text, sizeof(text));
    rc = rn_resp_encode_bulk(out, text, len);
    break;
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &len);
    rc = rn_resp_encode_bulk(out, s, len);
    break;
  case LUA_TTABLE:
    if (lrn_is_error(L, ctx, idx)) {
      rc = lrn_resp_encode_error_value(L, ctx, idx, out);
      break;
    }
    n = lrn_rawlen(L, idx);
    count = 0;
    luaL_checkstack(L, 4, "resilnet: reply nested too deeply");
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
      count++;
      lua_pop(L, 1);
    }
    if (count != n)
      return lrn_encode_fail(L, "cannot encode a table that is not an "
                                "array (RESP has no maps for replies)");
    rc = rn_resp_encode_array(out, n);
    for (i = 1; rc == 0 && i <= n; i++) {
      lua_rawgeti(L, idx, (int)i);
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return lrn_encode_fail(L, "cannot encode a table that is not an "
                                  "array (RESP has no maps for replies)");
      }
      if (lrn_resp_encode_at(L, ctx, -1, out, depth + 1) != 0) {
        lua_remove(L, -2);
        return -1;
      }
      lua_pop(L, 1);
    }
    break;
  default:
    lua_pushfstring(L, "cannot encode a %s as RESP", luaL_typename(L, idx));
    return -1;
  }
  if (rc != 0)
    return lrn_encode_fail(L, rn_strerror(rc));
  return 0;
}

int lrn_resp_encode_value(lua_State *L, lrn_ctx_t *ctx, int idx,
                          rn_buf_t *out) {
  return lrn_resp_encode_at(L, ctx, idx, out, 0);
}

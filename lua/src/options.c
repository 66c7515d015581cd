/* Options read through descriptor tables (after lua-cjson's one set of
 * option readers): each row names an option as Lua spells it, the C field
 * it fills, its check and its bounds. The same rows give the facade its
 * schema, with the defaults read from the core's rn_*_options_init, so an
 * option has one name per language, one default, one check.
 *
 * Lua spells durations in seconds, the core in ms: a row's kind says what
 * Lua may pass, its ctype how the value lands in C. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lrn.h"

/* What a Lua value must be, and how the message says it. */
static const struct {
  const char *name; /* the facade's name of the kind */
  const char *must; /* "option 'x' must be ..." */
} lrn_kinds[] = {
    [LRN_KIND_POSITIVE] = {"positive", "a number > 0"},
    [LRN_KIND_SECONDS] = {"seconds", "a number >= 0"},
    [LRN_KIND_RATIO] = {"ratio", "a number between 0 and 1"},
    [LRN_KIND_MULTIPLIER] = {"multiplier", "a number >= 1"},
    [LRN_KIND_COUNT] = {"count", "an integer >= 1"},
    [LRN_KIND_COUNT0] = {"count0", "an integer >= 0"},
    [LRN_KIND_ATTEMPTS] = {"attempts", "an integer from 1 to 5"},
    [LRN_KIND_STRING] = {"string", "a string without zero bytes"},
    [LRN_KIND_BOOLEAN] = {"boolean", "a boolean"},
    [LRN_KIND_PROTOCOL] = {"protocol",
                           "one of \"resp\", \"line\", \"length\", \"rnp\""},
    [LRN_KIND_LENGTH_BYTES] = {"length_bytes", "1, 2, 4 or 8"},
    [LRN_KIND_DELIMITER] = {"delimiter",
                            "a string of 1 to 16 bytes without NUL"},
    [LRN_KIND_TOKEN] = {"token", "a string of 1 to 255 bytes"},
    [LRN_KIND_ROLE] = {"role", "one of \"any\", \"master\", \"replica\""},
    [LRN_KIND_TABLE] = {"table", "a table"},
};

static const char *const lrn_roles[] = {"any", "master", "replica", NULL};

/* The rn_role_t of name, or -1. */
static int lrn_role_parse(const char *name) {
  int i;
  for (i = 0; lrn_roles[i] != NULL; i++)
    if (strcmp(name, lrn_roles[i]) == 0) return i;
  return -1;
}

static int lrn_is_integer(lua_Number n) {
  return n == floor(n) && n > -HUGE_VAL && n < HUGE_VAL;
}

/* Whether the value at idx is of kind. */
static int lrn_kind_ok(lua_State *L, int idx, lrn_kind_t kind) {
  lua_Number n;
  size_t len;
  const char *s;
  switch (kind) {
  case LRN_KIND_STRING:
    /* Handed to C as a C string: a zero byte would cut it there (a
     * password sent shorter than given). */
    if (lua_type(L, idx) != LUA_TSTRING)
      return 0;
    s = lua_tolstring(L, idx, &len);
    return strlen(s) == len;
  case LRN_KIND_BOOLEAN:
    return lua_type(L, idx) == LUA_TBOOLEAN;
  case LRN_KIND_PROTOCOL: {
    rn_protocol_t p;
    return lua_type(L, idx) == LUA_TSTRING &&
           rn_protocol_parse(lua_tostring(L, idx), &p) == 0;
  }
  case LRN_KIND_DELIMITER:
    if (lua_type(L, idx) != LUA_TSTRING)
      return 0;
    s = lua_tolstring(L, idx, &len);
    return len >= 1 && len <= 16 && strlen(s) == len;
  case LRN_KIND_TOKEN:
    if (lua_type(L, idx) != LUA_TSTRING)
      return 0;
    lua_tolstring(L, idx, &len);
    return len >= 1 && len <= RN_RNP_AUTH_MAX;
  case LRN_KIND_TABLE:
    return lua_type(L, idx) == LUA_TTABLE;
  case LRN_KIND_ROLE:
    return lua_type(L, idx) == LUA_TSTRING &&
           lrn_role_parse(lua_tostring(L, idx)) >= 0;
  default:
    break;
  }
  if (lua_type(L, idx) != LUA_TNUMBER)
    return 0;
  n = lua_tonumber(L, idx);
  switch (kind) {
  case LRN_KIND_POSITIVE: return n > 0;
  case LRN_KIND_SECONDS: return n >= 0;
  case LRN_KIND_RATIO: return n >= 0 && n <= 1;
  case LRN_KIND_MULTIPLIER: return n >= 1;
  case LRN_KIND_COUNT: return lrn_is_integer(n) && n >= 1;
  case LRN_KIND_COUNT0: return lrn_is_integer(n) && n >= 0;
  case LRN_KIND_ATTEMPTS: return lrn_is_integer(n) && n >= 1 && n <= 5;
  case LRN_KIND_LENGTH_BYTES: return n == 1 || n == 2 || n == 4 || n == 8;
  default: return 0;
  }
}

/* Raises "<fname>: option '<path>' <what>, got <value>", blaming the
 * caller of the facade's constructor (which calls the binding directly).
 * A string given to a string or token option is not shown: it may be a
 * password or a token, and error messages end up in logs. */
static int lrn_option_error(lua_State *L, const char *fname,
                            const char *path, const char *what, int idx,
                            lrn_kind_t kind) {
  const char *got;
  size_t len;
  idx = lrn_absindex(L, idx);
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
    if (kind == LRN_KIND_STRING || kind == LRN_KIND_TOKEN) {
      lua_tolstring(L, idx, &len);
      got = lua_pushfstring(L, "a string of %d bytes", (int)len);
    } else {
      got = lua_pushfstring(L, "'%s'", lua_tostring(L, idx));
    }
    break;
  case LUA_TNUMBER:
    lua_pushvalue(L, idx);
    got = lua_tostring(L, -1); /* converts the copy, as tostring would */
    break;
  default:
    got = luaL_typename(L, idx);
  }
  luaL_where(L, 2);
  lua_pushfstring(L, "%s%s: option '%s' %s, got %s", lua_tostring(L, -1),
                  fname, path, what, got);
  return lua_error(L);
}

/* Pushes the value at path in the table at t (absolute), or nil. *off is
 * set when a table on the way is false (switched off), *given when the
 * innermost table holding it was given. */
static void lrn_option_lookup(lua_State *L, int t, const char *path,
                              int *off, int *given) {
  const char *dot;
  *off = 0;
  *given = 1;
  lua_pushvalue(L, t);
  while ((dot = strchr(path, '.')) != NULL) {
    lua_pushlstring(L, path, (size_t)(dot - path));
    lua_rawget(L, -2);
    lua_remove(L, -2);
    if (lua_type(L, -1) != LUA_TTABLE) {
      *off = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
      *given = 0;
      lua_pop(L, 1);
      lua_pushnil(L);
      return;
    }
    path = dot + 1;
  }
  lua_getfield(L, -1, path);
  lua_remove(L, -2);
}

static void *lrn_field(void *base, size_t offset) {
  return (char *)base + offset;
}

/* Stores the Lua number v (checked) in the row's field. */
static void lrn_option_store(const lrn_option_t *r, void *out, double v) {
  void *f = lrn_field(out, r->offset);
  switch (r->ctype) {
  case LRN_C_MS: *(uint64_t *)f = (uint64_t)ceil(v * 1000); break;
  case LRN_C_UNSIGNED:
  case LRN_C_LENGTH_BYTES: *(unsigned *)f = (unsigned)v; break;
  case LRN_C_SIZE:
  case LRN_C_MAX_FRAME: *(size_t *)f = (size_t)v; break;
  case LRN_C_INT: *(int *)f = (int)v; break;
  case LRN_C_DOUBLE: *(double *)f = v; break;
  case LRN_C_BOOL: *(int *)f = v != 0; break;
  default: break;
  }
}

/* The largest Lua value a field of ctype takes when its row names no
 * bound: far past any sensible setting, well inside the C type. */
static double lrn_ctype_max(lrn_ctype_t ctype) {
  switch (ctype) {
  case LRN_C_MS: return (double)((uint64_t)1 << 40) / 1000;
  case LRN_C_SIZE:
  case LRN_C_MAX_FRAME: return (double)((uint64_t)1 << 40);
  case LRN_C_INT: return (double)(1 << 20);
  default: return (double)(1 << 30);
  }
}

void lrn_options_read(lua_State *L, int idx, const char *fname,
                      const lrn_option_t *rows, void *out) {
  const lrn_option_t *r;
  idx = lrn_absindex(L, idx);
  for (r = rows; r->path != NULL; r++) {
    int off, given, type;
    lrn_option_lookup(L, idx, r->path, &off, &given);
    type = lua_type(L, -1);
    if (type == LUA_TNIL) {
      if (off && (r->flags & LRN_OPT_OFF))
        lrn_option_store(r, out, r->off);
      else if (given && (r->flags & LRN_OPT_GIVEN))
        lrn_option_store(r, out, r->given);
    } else if (r->kind == LRN_KIND_TABLE) {
      /* A nested table, or false: off. */
      if (type == LUA_TBOOLEAN && !lua_toboolean(L, -1) &&
          (r->flags & LRN_OPT_OR_FALSE)) {
        if (r->ctype == LRN_C_BOOL)
          lrn_option_store(r, out, 0);
      } else if (type != LUA_TTABLE) {
        lrn_option_error(L, fname, r->path,
                         r->flags & LRN_OPT_OR_FALSE
                             ? "must be a table or false"
                             : "must be a table",
                         -1, r->kind);
      } else if (r->ctype == LRN_C_BOOL) {
        lrn_option_store(r, out, 1);
      }
    } else if (!lrn_kind_ok(L, -1, r->kind)) {
      lrn_option_error(L, fname, r->path,
                       lua_pushfstring(L, "must be %s",
                                       lrn_kinds[r->kind].must),
                       -2, r->kind);
    } else if (r->ctype == LRN_C_STRING || r->ctype == LRN_C_DELIMITER) {
      /* Stays referenced by the options table, which outlives its use. */
      *(const char **)lrn_field(out, r->offset) = lua_tostring(L, -1);
    } else if (r->ctype == LRN_C_LSTRING) {
      *(const char **)lrn_field(out, r->offset) =
          lua_tolstring(L, -1, (size_t *)lrn_field(out, r->len_offset));
    } else if (r->kind == LRN_KIND_BOOLEAN) {
      lrn_option_store(r, out, lua_toboolean(L, -1) ? 1 : 0);
    } else if (r->ctype == LRN_C_PROTOCOL) {
      rn_protocol_parse(lua_tostring(L, -1),
                        (rn_protocol_t *)lrn_field(out, r->offset));
    } else if (r->ctype == LRN_C_ROLE) {
      *(rn_role_t *)lrn_field(out, r->offset) =
          (rn_role_t)lrn_role_parse(lua_tostring(L, -1));
    } else {
      double v = (double)lua_tonumber(L, -1);
      double max = r->max > 0 ? r->max : lrn_ctype_max(r->ctype);
      if (v > max) {
        char text[48];
        snprintf(text, sizeof(text), "must be at most %.17g", max);
        lrn_option_error(L, fname, r->path, text, -1, r->kind);
      }
      lrn_option_store(r, out, v);
    }
    lua_pop(L, 1);
  }
}

/* Pushes the Lua value of the row's field in a struct filled in by
 * rn_*_options_init: its default, in Lua units. */
static void lrn_option_push_default(lua_State *L, const lrn_option_t *r,
                                    const void *init) {
  const void *f = (const char *)init + r->offset;
  rn_codec_options_t co;
  rn_codec_t codec;
  if (r->flags & LRN_OPT_NO_DEFAULT) {
    lua_pushnil(L);
    return;
  }
  switch (r->ctype) {
  case LRN_C_MS: {
    uint64_t ms = *(const uint64_t *)f;
    /* Whole seconds as integers, as a Lua literal would give them. */
    if (ms % 1000 == 0)
      lua_pushinteger(L, (lua_Integer)(ms / 1000));
    else
      lua_pushnumber(L, (lua_Number)ms / 1000);
    return;
  }
  case LRN_C_UNSIGNED:
    lua_pushinteger(L, (lua_Integer)*(const unsigned *)f);
    return;
  case LRN_C_SIZE:
    lua_pushinteger(L, (lua_Integer)*(const size_t *)f);
    return;
  case LRN_C_INT:
    lua_pushinteger(L, (lua_Integer)*(const int *)f);
    return;
  case LRN_C_DOUBLE:
    if (r->kind == LRN_KIND_COUNT) /* an integer kept in a double */
      lua_pushinteger(L, (lua_Integer)*(const double *)f);
    else
      lua_pushnumber(L, (lua_Number)*(const double *)f);
    return;
  case LRN_C_BOOL:
    lua_pushboolean(L, *(const int *)f);
    return;
  case LRN_C_STRING:
    if (*(const char *const *)f != NULL)
      lua_pushstring(L, *(const char *const *)f);
    else
      lua_pushnil(L);
    return;
  case LRN_C_LSTRING:
    if (*(const char *const *)f != NULL)
      lua_pushlstring(L, *(const char *const *)f,
                      *(const size_t *)((const char *)init + r->len_offset));
    else
      lua_pushnil(L);
    return;
  case LRN_C_ROLE:
    lua_pushstring(L, lrn_roles[*(const rn_role_t *)f]);
    return;
  case LRN_C_PROTOCOL:
    memset(&co, 0, sizeof(co));
    co.protocol = *(const rn_protocol_t *)f;
    if (rn_codec_init(&codec, &co) == 0)
      lua_pushstring(L, codec.type->name);
    else
      lua_pushnil(L);
    return;
  default:
    break;
  }
  /* The codec's own defaults (0 and NULL mean "the codec's"): what
   * rn_codec_init makes of them for the protocol that uses them. */
  memset(&co, 0, sizeof(co));
  co.protocol = r->ctype == LRN_C_LENGTH_BYTES ? RN_PROTOCOL_LENGTH
                : r->ctype == LRN_C_DELIMITER ? RN_PROTOCOL_LINE
                                              : RN_PROTOCOL_RESP;
  if (r->ctype == LRN_C_MAX_FRAME)
    co.max_frame = *(const size_t *)f;
  if (rn_codec_init(&codec, &co) != 0) {
    lua_pushnil(L);
    return;
  }
  switch (r->ctype) {
  case LRN_C_LENGTH_BYTES:
    lua_pushinteger(L, (lua_Integer)codec.length_bytes);
    return;
  case LRN_C_DELIMITER:
    lua_pushlstring(L, codec.delimiter, codec.delimiter_len);
    return;
  case LRN_C_MAX_FRAME:
    lua_pushinteger(L, (lua_Integer)codec.max_frame);
    return;
  default:
    lua_pushnil(L);
  }
}

/* Adds rows to the schema at index schema; groups maps the path of each
 * nested table met so far to its fields' schema. */
static void lrn_schema_rows(lua_State *L, int schema, int groups,
                            const lrn_option_t *rows, const void *init) {
  const lrn_option_t *r;
  for (r = rows; r->path != NULL; r++) {
    const char *dot = strrchr(r->path, '.');
    const char *name = dot != NULL ? dot + 1 : r->path;
    int parent;
    if (dot != NULL) {
      lua_pushlstring(L, r->path, (size_t)(dot - r->path));
      lua_rawget(L, groups);
    } else {
      lua_pushvalue(L, schema);
    }
    parent = lua_gettop(L);
    lua_createtable(L, 3, 3); /* { name, kind, default, ... } */
    lua_pushstring(L, name);
    lua_rawseti(L, -2, 1);
    if (r->kind == LRN_KIND_TABLE) {
      lua_createtable(L, 0, 3); /* { table = fields, or_false, on } */
      lua_newtable(L);
      lua_pushstring(L, r->path);
      lua_pushvalue(L, -2);
      lua_rawset(L, groups);
      lua_setfield(L, -2, "table");
      lua_pushboolean(L, (r->flags & LRN_OPT_OR_FALSE) != 0);
      lua_setfield(L, -2, "or_false");
      lua_pushboolean(L, (r->flags & LRN_OPT_ON) != 0);
      lua_setfield(L, -2, "on");
      lua_rawseti(L, -2, 2);
    } else {
      lua_pushstring(L, lrn_kinds[r->kind].name);
      lua_rawseti(L, -2, 2);
      if (r->flags & LRN_OPT_GIVEN)
        lua_pushnumber(L, (lua_Number)r->given);
      else
        lrn_option_push_default(L, r, init);
      lua_rawseti(L, -2, 3);
      /* Checked here, when the binding reads it: not again in Lua. */
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "core");
      if (r->protocol != NULL) {
        lua_pushstring(L, r->protocol);
        lua_setfield(L, -2, "protocol");
      }
    }
    lua_rawseti(L, parent, (int)lrn_rawlen(L, parent) + 1);
    lua_settop(L, groups);
    if (r->rows != NULL)
      lrn_schema_rows(L, schema, groups, r->rows, r->rows_init);
  }
}

void lrn_options_push_schema(lua_State *L, const lrn_option_t *rows,
                             const void *init) {
  int schema;
  lua_newtable(L); /* the schema */
  schema = lua_gettop(L);
  lua_newtable(L); /* path of a nested table -> its fields' schema */
  lrn_schema_rows(L, schema, schema + 1, rows, init);
  lua_pop(L, 1);
}

#define LRN_CODEC(field) offsetof(rn_codec_options_t, field)

const lrn_option_t lrn_codec_options[] = {
    LRN_OPTION("protocol", PROTOCOL, PROTOCOL, LRN_CODEC(protocol)),
    LRN_OPTION("max_frame", COUNT, MAX_FRAME, LRN_CODEC(max_frame)),
    LRN_OPTION("delimiter", DELIMITER, DELIMITER, LRN_CODEC(delimiter),
               .protocol = "line"),
    LRN_OPTION("length_bytes", LENGTH_BYTES, LENGTH_BYTES,
               LRN_CODEC(length_bytes), .protocol = "length"),
    LRN_OPTIONS_END};

/* ------------------------------------------------------------------------ */
/* TLS tables                                                                 */

int lrn_tls_read(lua_State *L, int idx, const char *fname,
                 const lrn_option_t *rows, rn_tls_options_t *tls) {
  int on;
  rn_tls_options_init(tls);
  lua_getfield(L, idx, "tls");
  on = lua_type(L, -1) == LUA_TTABLE;
  lua_pop(L, 1);
  if (on)
    lrn_options_read(L, idx, fname, rows, tls);
  return on;
}

const char *lrn_tls_why(lua_State *L, const rn_tls_options_t *tls,
                        rn_tls_role_t role, int rc) {
  char why[256];
  why[0] = '\0';
  if (rn_tls_options_check(tls, role, why, sizeof(why)) == 0 ||
      why[0] == '\0')
    lua_pushstring(L, rn_strerror(rc));
  else
    lua_pushstring(L, why);
  return lua_tostring(L, -1);
}

/* Options (options.c): one descriptor table per options struct. Included
 * by lrn.h. */
#ifndef LRN_OPTIONS_H
#define LRN_OPTIONS_H

#include "lrn.h"

/* What Lua may pass (the facade's kinds of the same names). */
typedef enum {
  LRN_KIND_POSITIVE,     /* a number > 0 */
  LRN_KIND_SECONDS,      /* a number >= 0 */
  LRN_KIND_RATIO,        /* a number from 0 to 1 */
  LRN_KIND_MULTIPLIER,   /* a number >= 1 */
  LRN_KIND_COUNT,        /* an integer >= 1 */
  LRN_KIND_COUNT0,       /* an integer >= 0 */
  LRN_KIND_ATTEMPTS,     /* an integer from 1 to 5 */
  LRN_KIND_STRING,
  LRN_KIND_BOOLEAN,
  LRN_KIND_PROTOCOL,     /* a protocol's name */
  LRN_KIND_LENGTH_BYTES, /* 1, 2, 4 or 8 */
  LRN_KIND_DELIMITER,    /* 1 to 16 bytes, no NUL */
  LRN_KIND_TOKEN,        /* 1 to 255 bytes (rnp's AUTH field) */
  LRN_KIND_ROLE,         /* "any", "master" or "replica" */
  LRN_KIND_TABLE         /* a nested table: the rows "<path>.*" follow */
} lrn_kind_t;

/* How the value lands in C. */
typedef enum {
  LRN_C_NONE,             /* nothing (a nested table without a flag) */
  LRN_C_MS,               /* seconds -> uint64_t ms, rounded up */
  LRN_C_UNSIGNED,
  LRN_C_SIZE,             /* size_t */
  LRN_C_INT,
  LRN_C_DOUBLE,
  LRN_C_BOOL,             /* int; for a nested table: 1 when given */
  LRN_C_STRING,           /* const char *, NUL-terminated */
  LRN_C_LSTRING,          /* const char * and its size_t at len_offset */
  LRN_C_PROTOCOL,         /* rn_protocol_t */
  LRN_C_ROLE,             /* rn_role_t */
  /* The codec's fields, whose 0 (NULL) means "the codec's default":
   * their defaults are what rn_codec_init makes of that. */
  LRN_C_LENGTH_BYTES,     /* unsigned */
  LRN_C_DELIMITER,        /* const char * */
  LRN_C_MAX_FRAME         /* size_t */
} lrn_ctype_t;

enum {
  LRN_OPT_OR_FALSE = 1,   /* a nested table that takes false (off) */
  LRN_OPT_ON = 2,         /* a nested table in use when left out */
  LRN_OPT_OFF = 4,        /* takes `off` when its table is false */
  LRN_OPT_GIVEN = 8,      /* takes `given` when its table is given without
                             it (the core's own default means off) */
  LRN_OPT_NO_DEFAULT = 16 /* the facade shows no default (per call) */
};

/* One option. Rows of a nested table follow the table's row. */
typedef struct lrn_option_s {
  const char *path;       /* as Lua spells it: "heartbeat.interval" */
  lrn_kind_t kind;
  lrn_ctype_t ctype;
  size_t offset;          /* of the C field */
  unsigned flags;
  double max;             /* in Lua units; 0: what the C type bounds */
  double off, given;      /* see LRN_OPT_OFF, LRN_OPT_GIVEN */
  const char *protocol;   /* only with this protocol (the facade checks) */
  size_t len_offset;      /* LRN_C_LSTRING: of the length */
  /* A nested table whose fields fill a struct of their own (the pool's
   * `tls`, an rn_tls_options_t it points to): its rows (full paths,
   * offsets into that struct, ending with a NULL path) and that struct
   * as its options_init leaves it, for the defaults. lrn_options_read
   * only checks the table; the caller reads rows into its struct. */
  const struct lrn_option_s *rows;
  const void *rows_init;
} lrn_option_t;

/* A row, named as the enums are without their prefixes:
 * LRN_OPTION("size", COUNT, UNSIGNED, offsetof(...), .max = 1 << 20). */
#define LRN_OPTION(path_, kind_, ctype_, offset_, ...)                      \
  {.path = (path_), .kind = LRN_KIND_##kind_, .ctype = LRN_C_##ctype_,      \
   .offset = (offset_), __VA_ARGS__}
#define LRN_OPTIONS_END {.path = NULL}

/* Fills out from the options table at idx through rows (ending with a
 * NULL path): absent options keep what out holds (the core's defaults).
 * Raises "<fname>: option '<path>' must be ..., got ..." blaming the
 * caller of the function that called the binding. */
void lrn_options_read(lua_State *L, int idx, const char *fname,
                      const lrn_option_t *rows, void *out);
/* The codec's options alone (the proxy's). */
extern const lrn_option_t lrn_codec_options[];
/* Pushes the facade's schema of rows ({name, kind, default, core = true,
 * protocol = ...}, nested tables as {name, {table = ..., or_false, on}}),
 * with the defaults read from init, a struct rn_*_options_init filled. */
void lrn_options_push_schema(lua_State *L, const lrn_option_t *rows,
                             const void *init);

/* `tls` of the options table at idx, read through rows into tls (first
 * set by rn_tls_options_init): 1 if it is a table (TLS on), 0 if absent
 * or false. Raises on a bad field. Pools and servers share it. */
int lrn_tls_read(lua_State *L, int idx, const char *fname,
                 const lrn_option_t *rows, rn_tls_options_t *tls);
/* Pushes why TLS options cannot be used by role (a file, a missing key, a
 * build without OpenSSL), for rc from the core, and returns it. */
const char *lrn_tls_why(lua_State *L, const rn_tls_options_t *tls,
                        rn_tls_role_t role, int rc);

#endif /* LRN_OPTIONS_H */

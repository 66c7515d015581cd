/* resilnet.server's `tls` and `auth` (server_tls.c): how they are read,
 * the Lua check an rnp server asks who may in, and server_reload_tls. */
#ifndef LRN_SERVER_TLS_H
#define LRN_SERVER_TLS_H

#include "lrn.h"

/* The rows of `tls`, and that struct as rn_tls_options_init leaves it
 * (for the schema's defaults): a row of lrn_server_options points to them. */
extern const lrn_option_t lrn_server_tls_options[];
extern const rn_tls_options_t lrn_server_tls_defaults;

/* What a server keeps of `auth`: the Lua check, if any. */
typedef struct lrn_server_auth_s {
  lrn_ctx_t *ctx;
  int check_ref; /* auth.check(token, subject) -> identity | nil */
} lrn_server_auth_t;

/* Everything `tls` and `auth` give rn_server_new, read from the options
 * table; the strings stay owned by that table. */
typedef struct lrn_server_secure_s {
  rn_tls_options_t tls;
  rn_server_auth_options_t auth;
  rn_auth_token_t *tokens; /* malloc'd; lrn_server_secure_free */
} lrn_server_secure_t;

/* Reads `tls` and `auth` of the options table at idx into sec and points
 * o->tls and o->auth to it (NULL when left out). A check function is
 * referenced in a (released by lrn_server_auth_unref). Raises on bad
 * fields. */
void lrn_server_secure_read(lua_State *L, int idx, lrn_server_secure_t *sec,
                            rn_server_options_t *o, lrn_server_auth_t *a);
void lrn_server_secure_free(lrn_server_secure_t *sec);
void lrn_server_auth_unref(lrn_server_auth_t *a);

/* rn_server_new failed with rc: raises naming `tls` or `auth` when one of
 * them is the cause (a file that cannot be used, a build without OpenSSL,
 * contradictory options); returns otherwise. */
void lrn_server_secure_raise(lua_State *L, const rn_server_options_t *o,
                             int rc);

/* server_reload_tls(h, {tls = {...}}): for lrn_server_open's table. */
int lrn_server_reload_tls_with(lua_State *L, rn_server_t *server,
                               lrn_ctx_t *ctx);

#endif /* LRN_SERVER_TLS_H */

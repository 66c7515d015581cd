/* resilnet.process handles: child processes (core/src/harness/process.c).
 *
 * Waiters live here, each with its own deadline timer, so a wait with a
 * timeout that ends early leaves nothing behind to keep the loop alive.
 * The exit is reported as (code, signal name): a child ended by a signal
 * gets code 128 + signal, as a shell would report it. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lrn.h"

extern char **environ;

typedef struct lrn_process_s {
  lrn_object_t o;
  rn_process_t *p;
  lrn_link_t waiters;
  int exited;
  int64_t code;
  int signal;
  int exit_ref;   /* dispatched with (code, signal name) once */
  int output_ref[2]; /* stdout, stderr functions */
} lrn_process_t;

typedef struct lrn_waiter_s {
  lrn_link_t link;
  rn_timer_t timer;
  lrn_process_t *owner;
  int ref;
} lrn_waiter_t;

static const struct {
  const char *name;
  int signum;
} lrn_signals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT},
    {"ABRT", SIGABRT}, {"KILL", SIGKILL}, {"USR1", SIGUSR1},
    {"SEGV", SIGSEGV}, {"USR2", SIGUSR2}, {"PIPE", SIGPIPE},
    {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"CHLD", SIGCHLD},
    {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},
    {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU}, {NULL, 0}};

static const char *lrn_signal_name(int signum) {
  int i;
  for (i = 0; lrn_signals[i].name != NULL; i++)
    if (lrn_signals[i].signum == signum) return lrn_signals[i].name;
  return NULL;
}

static void lrn_process_close_type(lrn_object_t *o);
static void lrn_process_at_exit(lrn_object_t *o);

static const lrn_type_t lrn_process_type = {
    "resilnet.process", lrn_process_close_type, lrn_process_at_exit};

#define lrn_process_get(L, idx)                                             \
  ((lrn_process_t *)lrn_object_get((L), (idx), &lrn_process_type))

static lrn_process_t *lrn_process_live(lua_State *L) {
  lrn_process_t *x = lrn_process_get(L, 1);
  if (x == NULL || x->o.closing)
    luaL_error(L, "resilnet.process: the process handle is closed");
  return x;
}

/* ------------------------------------------------------------------------ */
/* Callbacks from the core                                                    */

typedef struct lrn_chunk_s {
  const char *data;
  size_t len;
} lrn_chunk_t;

static int lrn_push_chunk(lua_State *L, void *arg) {
  lrn_chunk_t *c = (lrn_chunk_t *)arg;
  lua_pushlstring(L, c->data, c->len);
  return 1;
}

static void lrn_process_output(rn_process_t *p, int fd, const char *data,
                               size_t len) {
  lrn_process_t *x = (lrn_process_t *)rn_process_data(p);
  lrn_chunk_t c;
  c.data = data;
  c.len = len;
  lrn_call(x->o.ctx, x->output_ref[fd - 1], lrn_push_chunk, &c);
}

static int lrn_push_exit(lua_State *L, void *arg) {
  lrn_process_t *x = (lrn_process_t *)arg;
  lua_pushinteger(L, (lua_Integer)x->code);
  if (x->signal != 0) {
    const char *name = lrn_signal_name(x->signal);
    if (name != NULL)
      lua_pushstring(L, name);
    else
      lua_pushinteger(L, x->signal);
  } else {
    lua_pushnil(L);
  }
  return 2;
}

static int lrn_push_timeout(lua_State *L, void *arg) {
  lrn_process_t *x = (lrn_process_t *)arg;
  const char *msg = "the process did not exit in time";
  lua_pushnil(L);
  lrn_error_push(L, x->o.ctx, "ETIMEDOUT", msg, strlen(msg), 0, -1, NULL);
  return 2;
}

static void lrn_waiter_free(lrn_process_t *x, lrn_waiter_t *w) {
  rn_timer_stop(&w->timer);
  lrn_link_remove(&w->link);
  lrn_unref(x->o.ctx, &w->ref);
  free(w);
}

static void lrn_waiter_timeout(rn_timer_t *timer) {
  lrn_waiter_t *w = (lrn_waiter_t *)timer->data;
  lrn_process_t *x = w->owner;
  int ref = w->ref;
  w->ref = LUA_NOREF;
  lrn_waiter_free(x, w);
  lrn_dispatch(x->o.ctx, ref, lrn_push_timeout, x);
  lrn_unref(x->o.ctx, &ref);
}

static void lrn_process_exit(rn_process_t *p, int64_t status, int sig) {
  lrn_process_t *x = (lrn_process_t *)rn_process_data(p);
  x->exited = 1;
  x->code = sig != 0 ? 128 + sig : status;
  x->signal = sig;
  lrn_call(x->o.ctx, x->exit_ref, lrn_push_exit, x);
  lrn_unref(x->o.ctx, &x->exit_ref);
  while (x->waiters.next != &x->waiters) {
    lrn_waiter_t *w = LRN_CONTAINER_OF(x->waiters.next, lrn_waiter_t, link);
    int ref = w->ref;
    w->ref = LUA_NOREF;
    lrn_waiter_free(x, w);
    lrn_dispatch(x->o.ctx, ref, lrn_push_exit, x);
    lrn_unref(x->o.ctx, &ref);
  }
}

static void lrn_process_closed(rn_process_t *p) {
  lrn_process_t *x = (lrn_process_t *)rn_process_data(p);
  lrn_object_closed(&x->o, 1);
  lrn_unref(x->o.ctx, &x->output_ref[0]);
  lrn_unref(x->o.ctx, &x->output_ref[1]);
  lrn_unref(x->o.ctx, &x->exit_ref);
  free(x);
}

static void lrn_process_close_type(lrn_object_t *o) {
  rn_process_close(((lrn_process_t *)o)->p, lrn_process_closed);
}

/* Nobody is left to wait: drop the waiters' timers now. */
static void lrn_process_at_exit(lrn_object_t *o) {
  lrn_process_t *x = (lrn_process_t *)o;
  while (x->waiters.next != &x->waiters)
    lrn_waiter_free(x, LRN_CONTAINER_OF(x->waiters.next, lrn_waiter_t, link));
}

/* ------------------------------------------------------------------------ */
/* Functions                                                                  */

/* Collects the strings of the array at idx into a NULL-terminated vector
 * kept alive by the table itself. */
static char **lrn_string_array(lua_State *L, int idx, const char *what) {
  size_t n = lrn_rawlen(L, idx), i;
  char **v = (char **)lua_newuserdata(L, (n + 1) * sizeof(char *));
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, idx, (int)i + 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "resilnet.process: %s must be strings", what);
    v[i] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  v[n] = NULL;
  return v;
}

/* The parent's environment with the table at idx applied: name = string
 * sets, name = false removes. Built in a Lua table kept on the stack. */
static char **lrn_environment(lua_State *L, int idx) {
  int merged, n = 0, i;
  char **env, **e;
  lua_newtable(L);
  merged = lua_gettop(L);
  for (e = environ; e != NULL && *e != NULL; e++) {
    const char *eq = strchr(*e, '=');
    if (eq == NULL) continue;
    lua_pushlstring(L, *e, (size_t)(eq - *e));
    lua_pushstring(L, *e);
    lua_rawset(L, merged);
  }
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING ||
        (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TBOOLEAN &&
         lua_type(L, -1) != LUA_TNUMBER))
      luaL_error(L, "resilnet.process: env must map names to strings "
                    "(or false to unset)");
    {
      int k = lua_gettop(L) - 1, v = k + 1;
      lua_pushvalue(L, k);
      if (lua_type(L, v) == LUA_TBOOLEAN) {
        lua_pushnil(L); /* false: unset */
      } else {
        lua_pushvalue(L, k);
        lua_pushliteral(L, "=");
        lua_pushvalue(L, v);
        lua_concat(L, 3);
      }
      lua_rawset(L, merged);
      lua_pop(L, 1);
    }
  }
  lua_pushnil(L);
  while (lua_next(L, merged) != 0) {
    n++;
    lua_pop(L, 1);
  }
  env = (char **)lua_newuserdata(L, ((size_t)n + 1) * sizeof(char *));
  i = 0;
  lua_pushnil(L);
  while (lua_next(L, merged) != 0) {
    env[i++] = (char *)lua_tostring(L, -1); /* anchored in merged */
    lua_pop(L, 1);
  }
  env[i] = NULL;
  return env;
}

static void lrn_stdio(lua_State *L, const char *field, rn_stdio_mode_t *mode,
                      const char **path, int *ref) {
  lua_getfield(L, 1, field);
  switch (lua_type(L, -1)) {
  case LUA_TNIL:
    *mode = RN_STDIO_INHERIT;
    lua_pop(L, 1);
    return;
  case LUA_TBOOLEAN:
    *mode = lua_toboolean(L, -1) ? RN_STDIO_INHERIT : RN_STDIO_IGNORE;
    lua_pop(L, 1);
    return;
  case LUA_TSTRING:
    *mode = RN_STDIO_FILE;
    *path = lua_tostring(L, -1); /* anchored in the options table */
    lua_pop(L, 1);
    return;
  case LUA_TFUNCTION:
    *mode = RN_STDIO_CALLBACK;
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return;
  default:
    luaL_error(L, "resilnet.process: option '%s' must be a function, a "
                  "path or false", field);
  }
}

/* process_new({file, args, env, cwd, stdout, stderr}, exit_fn) -> h |
 * nil, err. Spawn failures (no such program) return nil, err. */
static int lrn_process_new(lua_State *L) {
  lrn_ctx_t *ctx = lrn_ctx(L);
  rn_process_options_t o;
  lrn_process_t *x;
  int rc, refs[2] = {LUA_NOREF, LUA_NOREF};

  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  rn_process_options_init(&o);
  lua_getfield(L, 1, "args"); /* 3 */
  luaL_argcheck(L, lua_type(L, 3) == LUA_TTABLE, 1, "args must be a table");
  o.args = lrn_string_array(L, 3, "the arguments"); /* 4 */
  if (o.args[0] == NULL)
    return luaL_error(L, "resilnet.process: no program given");
  o.file = o.args[0];
  lua_getfield(L, 1, "env"); /* 5 */
  if (lua_type(L, 5) == LUA_TTABLE)
    o.env = lrn_environment(L, 5); /* 6, 7 */
  lua_getfield(L, 1, "cwd");
  o.cwd = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* anchored in the options table */
  o.on_output = lrn_process_output;
  o.on_exit = lrn_process_exit;

  lrn_stdio(L, "stdout", &o.stdout_mode, &o.stdout_path, &refs[0]);
  lrn_stdio(L, "stderr", &o.stderr_mode, &o.stderr_path, &refs[1]);
  /* (A raise from here on leaks the refs above until lua_close: only when
   * out of memory.) */
  x = (lrn_process_t *)lrn_object_new(L, ctx, &lrn_process_type,
                                      sizeof(*x));
  x->exit_ref = LUA_NOREF;
  x->output_ref[0] = refs[0];
  x->output_ref[1] = refs[1];
  lrn_link_init(&x->waiters);
  o.data = x;
  rc = rn_process_spawn(ctx->loop, &o, &x->p);
  if (rc != 0) {
    char msg[256];
    lrn_unref(ctx, &x->output_ref[0]);
    lrn_unref(ctx, &x->output_ref[1]);
    free(x);
    snprintf(msg, sizeof(msg), "cannot start '%s': %s", o.file,
             rn_strerror(rc));
    lua_pushnil(L);
    lrn_error_push(L, ctx, rn_err_name(rc), msg, strlen(msg), 0, -1, NULL);
    return 2;
  }
  if (lua_type(L, 2) == LUA_TFUNCTION)
    lrn_set_ref(L, ctx, &x->exit_ref, 2);
  lrn_object_open(&x->o);
  return 1;
}

static int lrn_process_pid(lua_State *L) {
  lua_pushinteger(L, rn_process_pid(lrn_process_live(L)->p));
  return 1;
}

/* process_kill(h, signal) -> true | nil, err. signal: a number or a name
 * ("TERM", "SIGTERM"). An unknown name raises. */
static int lrn_process_kill(lua_State *L) {
  lrn_process_t *x = lrn_process_live(L);
  int signum = -1, rc, i;
  if (lua_type(L, 2) == LUA_TNUMBER) {
    signum = (int)lua_tointeger(L, 2);
  } else {
    const char *name = luaL_checkstring(L, 2);
    if (strncmp(name, "SIG", 3) == 0) name += 3;
    for (i = 0; lrn_signals[i].name != NULL; i++)
      if (strcmp(name, lrn_signals[i].name) == 0) signum = lrn_signals[i].signum;
    if (signum < 0)
      return luaL_argerror(L, 2, "unknown signal name");
  }
  rc = rn_process_kill(x->p, signum);
  if (rc == UV_EINVAL) return luaL_argerror(L, 2, "invalid signal");
  if (rc != 0) {
    lua_pushnil(L);
    lrn_error_push(L, x->o.ctx, rn_err_name(rc),
                   rc == UV_ESRCH ? "the process has exited" : rn_strerror(rc),
                   strlen(rc == UV_ESRCH ? "the process has exited"
                                         : rn_strerror(rc)),
                   0, -1, NULL);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* process_wait(h, ms, target) -> true: target is dispatched with (code,
 * signal) at the exit, or (nil, ETIMEDOUT error) after ms (< 0: never).
 * The facade answers itself once the exit is known. */
static int lrn_process_wait(lua_State *L) {
  lrn_process_t *x = lrn_process_get(L, 1);
  lua_Number ms = luaL_checknumber(L, 2);
  int type = lua_type(L, 3);
  lrn_waiter_t *w;
  luaL_argcheck(L, type == LUA_TFUNCTION || type == LUA_TTHREAD, 3,
                "expected a function or a thread");
  if (x == NULL || x->exited)
    return luaL_error(L, "resilnet.process: internal error: wait after "
                         "the exit");
  w = (lrn_waiter_t *)calloc(1, sizeof(*w));
  if (w == NULL) return luaL_error(L, "resilnet.process: out of memory");
  lua_settop(L, 3);
  w->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  w->owner = x;
  rn_timer_init(x->o.ctx->loop, &w->timer, lrn_waiter_timeout);
  w->timer.data = w;
  lrn_link_add(&x->waiters, &w->link);
  if (ms >= 0) {
    uv_update_time(rn_loop_uv(x->o.ctx->loop));
    rn_timer_start(&w->timer, (uint64_t)ms);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* process_close(h): kills the child's group unless it exited. The exit
 * still reaches exit_fn and any waiter. */
static int lrn_process_close(lua_State *L) {
  lrn_process_t *x = lrn_process_get(L, 1);
  if (x != NULL && !x->o.closing) {
    x->o.closing = 1;
    lrn_process_close_type(&x->o);
  }
  return 0;
}

static const luaL_Reg lrn_process_funcs[] = {
    {"process_new", lrn_process_new},
    {"process_pid", lrn_process_pid},
    {"process_kill", lrn_process_kill},
    {"process_wait", lrn_process_wait},
    {"process_close", lrn_process_close},
    {NULL, NULL}};

void lrn_process_open(lua_State *L) {
  lrn_object_register(L, &lrn_process_type, lrn_process_funcs);
}

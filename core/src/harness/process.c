/* Child processes for harnesses: uv_spawn in a process group of its own,
 * output to a callback or a file, signals to the whole group, and a close
 * that never leaves a child behind. on_exit waits for both the exit and
 * the end of the output pipes, so a caller that sees the exit has seen
 * every byte the child wrote. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RN_PROCESS_READ_CHUNK 65536

struct rn_process_s {
  void *data;
  rn_loop_t *loop;
  rn_process_options_t options;
  uv_process_t proc;
  uv_pipe_t out[2];     /* stdout, stderr when RN_STDIO_CALLBACK */
  int out_open[2];      /* pipe handles not yet closed */
  int out_reading[2];   /* pipes not yet at EOF */
  char buf[RN_PROCESS_READ_CHUNK];
  int pid;
  int proc_open;        /* the process handle not yet closed */
  int exited;
  int64_t exit_status;
  int term_signal;
  int exit_reported;
  int closing;
  rn_timer_t finish_timer;
  rn_process_close_cb close_cb;
};

void rn_process_options_init(rn_process_options_t *o) {
  memset(o, 0, sizeof(*o));
}

void *rn_process_data(rn_process_t *p) { return p->data; }
int rn_process_pid(rn_process_t *p) { return p->pid; }
int rn_process_exited(rn_process_t *p) { return p->exited; }

static void process_maybe_done(rn_process_t *p);

static void process_finish(rn_timer_t *timer) {
  rn_process_t *p = timer->data;
  rn_loop_t *loop = p->loop;
  if (p->close_cb != NULL) p->close_cb(p);
  free(p);
  rn__loop_object_remove(loop);
}

static void process_on_handle_close(uv_handle_t *handle) {
  rn_process_t *p = handle->data;
  if (handle == (uv_handle_t *)&p->proc)
    p->proc_open = 0;
  else
    p->out_open[handle == (uv_handle_t *)&p->out[0] ? 0 : 1] = 0;
  process_maybe_done(p);
}

/* Exit reported once the child is gone and its output fully read; the
 * memory goes once a close was asked for and every handle closed. */
static void process_maybe_done(rn_process_t *p) {
  int i;
  /* Closing, and the child is gone: output still open belongs to
   * something that escaped its group; stop waiting for it. */
  for (i = 0; i < 2 && p->closing && p->exited; i++) {
    if (p->out_reading[i]) {
      p->out_reading[i] = 0;
      uv_close((uv_handle_t *)&p->out[i], process_on_handle_close);
    }
  }
  if (!p->exit_reported && p->exited && !p->out_reading[0] &&
      !p->out_reading[1]) {
    p->exit_reported = 1;
    if (p->options.on_exit != NULL)
      p->options.on_exit(p, p->exit_status, p->term_signal);
  }
  if (p->closing && p->exit_reported && !p->proc_open && !p->out_open[0] &&
      !p->out_open[1] && !rn_timer_is_active(&p->finish_timer))
    rn_timer_start(&p->finish_timer, 0);
}

static void process_on_exit(uv_process_t *proc, int64_t exit_status,
                            int term_signal) {
  rn_process_t *p = proc->data;
  p->exited = 1;
  p->exit_status = exit_status;
  p->term_signal = term_signal;
  uv_close((uv_handle_t *)&p->proc, process_on_handle_close);
  process_maybe_done(p);
}

static void out_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  rn_process_t *p = handle->data;
  (void)suggested;
  *buf = uv_buf_init(p->buf, sizeof(p->buf));
}

static void out_on_read(uv_stream_t *stream, ssize_t nread,
                        const uv_buf_t *buf) {
  rn_process_t *p = stream->data;
  int i = stream == (uv_stream_t *)&p->out[0] ? 0 : 1;
  if (nread > 0) {
    if (p->options.on_output != NULL)
      p->options.on_output(p, i + 1, buf->base, (size_t)nread);
    return;
  }
  if (nread == 0) return;
  /* EOF, or an error: either way this stream is over. */
  p->out_reading[i] = 0;
  uv_close((uv_handle_t *)stream, process_on_handle_close);
  process_maybe_done(p);
}

/* Fills one stdio slot; *fd gets a file to close after the spawn. */
static int process_stdio(rn_process_t *p, int i, rn_stdio_mode_t mode,
                         const char *path, uv_stdio_container_t *c,
                         int *fd) {
  switch (mode) {
  case RN_STDIO_INHERIT:
    c->flags = UV_INHERIT_FD;
    c->data.fd = i + 1;
    return 0;
  case RN_STDIO_IGNORE:
    c->flags = UV_IGNORE;
    return 0;
  case RN_STDIO_FILE:
    if (path == NULL) return UV_EINVAL;
    *fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (*fd < 0) return uv_translate_sys_error(errno);
    c->flags = UV_INHERIT_FD;
    c->data.fd = *fd;
    return 0;
  case RN_STDIO_CALLBACK:
    uv_pipe_init(p->loop->uv, &p->out[i], 0);
    p->out[i].data = p;
    p->out_open[i] = 1;
    c->flags = (uv_stdio_flags)(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
    c->data.stream = (uv_stream_t *)&p->out[i];
    return 0;
  }
  return UV_EINVAL;
}

int rn_process_spawn(rn_loop_t *loop, const rn_process_options_t *options,
                     rn_process_t **out) {
  rn_process_t *p;
  uv_process_options_t po;
  uv_stdio_container_t stdio[3];
  int fds[2] = {-1, -1};
  int err, i;

  *out = NULL;
  if (options->file == NULL || options->args == NULL ||
      options->args[0] == NULL)
    return UV_EINVAL;
  p = calloc(1, sizeof(*p));
  if (p == NULL) return UV_ENOMEM;
  p->data = options->data;
  p->loop = loop;
  p->options = *options;
  rn_timer_init(loop, &p->finish_timer, process_finish);
  p->finish_timer.data = p;

  memset(stdio, 0, sizeof(stdio));
  stdio[0].flags = UV_IGNORE;
  err = process_stdio(p, 0, options->stdout_mode, options->stdout_path,
                      &stdio[1], &fds[0]);
  if (err == 0)
    err = process_stdio(p, 1, options->stderr_mode, options->stderr_path,
                        &stdio[2], &fds[1]);
  if (err == 0) {
    memset(&po, 0, sizeof(po));
    po.file = options->file;
    po.args = options->args;
    po.env = options->env;
    po.cwd = options->cwd;
    po.exit_cb = process_on_exit;
    po.stdio = stdio;
    po.stdio_count = 3;
    /* Its own session and group: signals reach all it starts, and a
     * terminal's Ctrl-C is ours to pass on, not the child's to catch. */
    po.flags = UV_PROCESS_DETACHED;
    p->proc.data = p;
    err = uv_spawn(loop->uv, &p->proc, &po);
  }
  for (i = 0; i < 2; i++)
    if (fds[i] >= 0) close(fds[i]);
  rn__loop_object_add(loop);
  if (err) {
    /* A failed uv_spawn still initialised the handle; pipes were too. */
    p->proc_open = 1;
    p->exited = 1;
    p->exit_reported = 1;
    p->closing = 1;
    p->options.on_exit = NULL;
    uv_close((uv_handle_t *)&p->proc, process_on_handle_close);
    for (i = 0; i < 2; i++)
      if (p->out_open[i]) uv_close((uv_handle_t *)&p->out[i],
                                   process_on_handle_close);
    return err;
  }
  p->pid = p->proc.pid;
  p->proc_open = 1;
  for (i = 0; i < 2; i++) {
    if (!p->out_open[i]) continue;
    if (uv_read_start((uv_stream_t *)&p->out[i], out_alloc, out_on_read) == 0)
      p->out_reading[i] = 1;
    else
      uv_close((uv_handle_t *)&p->out[i], process_on_handle_close);
  }
  *out = p;
  return 0;
}

int rn_process_kill(rn_process_t *p, int signum) {
  if (p->exited) return UV_ESRCH;
  /* The group first (a shell and its children); the leader alone if the
   * group is gone already. */
  if (kill(-p->pid, signum) == 0) return 0;
  if (errno == EINVAL) return UV_EINVAL;
  return uv_process_kill(&p->proc, signum);
}

void rn_process_close(rn_process_t *p, rn_process_close_cb cb) {
  if (p->closing) return;
  p->closing = 1;
  p->close_cb = cb;
  /* The output pipes end when the group dies (nothing else holds them). */
  if (!p->exited) (void)rn_process_kill(p, SIGKILL);
  process_maybe_done(p);
}

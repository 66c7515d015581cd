/* Child processes: exit codes, output to a callback or a file, the
 * environment, real signals (TERM, KILL, STOP/CONT seen in /proc), and
 * a close that kills and reaps what is still running. */
#include "resilnet.h"
#include "task.h"
#include "wait.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <uv.h>

static rn_loop_t *loop;
static uv_loop_t *uv;
static int exits;
static int64_t exit_status;
static int term_signal;
static rn_buf_t out1, out2;
static int closed;

static void on_exit_(rn_process_t *p, int64_t status, int sig) {
  (void)p;
  exits++;
  exit_status = status;
  term_signal = sig;
}

static void on_output(rn_process_t *p, int fd, const char *data, size_t len) {
  (void)p;
  /* Output is delivered before the exit is reported. */
  ASSERT_EQ(exits, 0);
  ASSERT_OK(rn_buf_append(fd == 1 ? &out1 : &out2, data, len));
}

static void on_closed(rn_process_t *p) {
  (void)p;
  closed++;
}

static void setup(void) {
  ASSERT_OK(rn_loop_new(NULL, &loop));
  uv = rn_loop_uv(loop);
  exits = closed = 0;
  exit_status = -1;
  term_signal = -1;
  rn_buf_init(&out1);
  rn_buf_init(&out2);
}

static void teardown(void) {
  rn_buf_free(&out1);
  rn_buf_free(&out2);
  uv_run(uv, UV_RUN_DEFAULT);
  ASSERT_OK(rn_loop_free(loop));
}

/* Options running `sh -c script`, its exit to on_exit_ (script must
 * outlive the spawn). */
static void sh_options(rn_process_options_t *o, const char *script) {
  static char *args[4];
  args[0] = "sh";
  args[1] = "-c";
  args[2] = (char *)script;
  args[3] = NULL;
  rn_process_options_init(o);
  o->file = "sh";
  o->args = args;
  o->on_exit = on_exit_;
}

static rn_process_t *sh(const char *script, rn_stdio_mode_t mode) {
  rn_process_options_t o;
  rn_process_t *p;
  sh_options(&o, script);
  o.stdout_mode = mode;
  o.stderr_mode = mode;
  o.on_output = on_output;
  ASSERT_OK(rn_process_spawn(loop, &o, &p));
  ASSERT_GT(rn_process_pid(p), 0);
  return p;
}

/* Runs the loop until the child reported its exit (bounded). */
static void run_until_exit(void) {
  RUN_UNTIL(uv, exits != 0, 10000);
  ASSERT_EQ(exits, 1);
}

/* The state letter in /proc/<pid>/stat, polled while the loop runs (a
 * signal is delivered asynchronously), until it is one of want. */
static char wait_state(int pid, const char *want) {
  char path[64], line[512], state = '?';
  int i;
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  for (i = 0; i < 500; i++) {
    FILE *f = fopen(path, "r");
    char *close_paren;
    if (f == NULL) return '-'; /* no such process */
    if (fgets(line, sizeof(line), f) == NULL) line[0] = '\0';
    fclose(f);
    close_paren = strrchr(line, ')');
    state = close_paren != NULL ? close_paren[2] : '?';
    if (strchr(want, state) != NULL) return state;
    uv_sleep(10); /* polling a kernel state, not waiting for our loop */
  }
  return state;
}

static void exit_code(void) {
  rn_process_t *p;
  setup();
  p = sh("exit 3", RN_STDIO_IGNORE);
  run_until_exit();
  ASSERT_EQ(exit_status, 3);
  ASSERT_EQ(term_signal, 0);
  ASSERT(rn_process_exited(p));
  ASSERT_EQ(rn_process_kill(p, SIGTERM), UV_ESRCH);
  rn_process_close(p, on_closed);
  rn_process_close(p, on_closed); /* ignored */
  teardown();
  ASSERT_EQ(closed, 1);
  ASSERT_EQ(exits, 1);
}

static void output_callback(void) {
  rn_process_t *p;
  setup();
  p = sh("echo hello; echo oops >&2; i=0; while [ $i -lt 2000 ]; do "
         "echo line$i; i=$((i+1)); done", RN_STDIO_CALLBACK);
  run_until_exit();
  ASSERT_EQ(exit_status, 0);
  ASSERT(out1.len > 6);
  ASSERT_MEM_EQ(out1.base, "hello\n", 6);
  ASSERT_MEM_EQ(out1.base + out1.len - 9, "line1999\n", 9); /* all of it */
  ASSERT_EQ(out2.len, 5);
  ASSERT_MEM_EQ(out2.base, "oops\n", 5);
  rn_process_close(p, NULL);
  teardown();
}

static void output_file(void) {
  char path[] = "/tmp/rn-test-process-XXXXXX";
  char text[64];
  rn_process_options_t o;
  rn_process_t *p;
  FILE *f;
  size_t n;
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  close(fd);
  setup();
  sh_options(&o, "echo to-file; echo also >&2");
  o.stdout_mode = RN_STDIO_FILE;
  o.stdout_path = path;
  o.stderr_mode = RN_STDIO_FILE;
  o.stderr_path = path;
  ASSERT_OK(rn_process_spawn(loop, &o, &p));
  run_until_exit();
  rn_process_close(p, NULL);
  teardown();
  f = fopen(path, "r");
  ASSERT(f != NULL);
  n = fread(text, 1, sizeof(text) - 1, f);
  fclose(f);
  text[n] = '\0';
  ASSERT_STR_EQ(text, "to-file\nalso\n");
  unlink(path);
}

static void environment(void) {
  rn_process_options_t o;
  rn_process_t *p;
  char *env[] = {"RN_TEST_VAR=from-env", "PATH=/usr/bin:/bin", NULL};
  setup();
  sh_options(&o, "echo \"$RN_TEST_VAR\"");
  o.env = env;
  o.stdout_mode = RN_STDIO_CALLBACK;
  o.on_output = on_output;
  ASSERT_OK(rn_process_spawn(loop, &o, &p));
  run_until_exit();
  ASSERT_EQ(out1.len, 9);
  ASSERT_MEM_EQ(out1.base, "from-env\n", 9);
  rn_process_close(p, NULL);
  teardown();
}

static void missing_program(void) {
  rn_process_options_t o;
  rn_process_t *p = (rn_process_t *)1;
  char *args[] = {"rn-no-such-program", NULL};
  setup();
  rn_process_options_init(&o);
  o.file = "rn-no-such-program";
  o.args = args;
  o.stdout_mode = RN_STDIO_CALLBACK;
  o.on_exit = on_exit_;
  ASSERT_EQ(rn_process_spawn(loop, &o, &p), UV_ENOENT);
  ASSERT(p == NULL);
  o.args = NULL;
  ASSERT_EQ(rn_process_spawn(loop, &o, &p), UV_EINVAL);
  teardown();
  ASSERT_EQ(exits, 0);
}

static void terminate(void) {
  rn_process_t *p;
  setup();
  p = sh("exec sleep 30", RN_STDIO_IGNORE);
  ASSERT_OK(rn_process_kill(p, SIGTERM));
  run_until_exit();
  ASSERT_EQ(term_signal, SIGTERM);
  rn_process_close(p, NULL);
  teardown();
}

/* STOP and CONT are real: the kernel shows the child stopped, then
 * sleeping again; neither ends it. */
static void stop_continue(void) {
  rn_process_t *p;
  int pid;
  setup();
  p = sh("exec sleep 30", RN_STDIO_IGNORE);
  pid = rn_process_pid(p);
  ASSERT_EQ(wait_state(pid, "S"), 'S');
  ASSERT_OK(rn_process_kill(p, SIGSTOP));
  ASSERT_EQ(wait_state(pid, "Tt"), 'T');
  ASSERT_OK(rn_process_kill(p, SIGCONT));
  ASSERT(strchr("SR", wait_state(pid, "SR")) != NULL); /* running again */
  uv_run(uv, UV_RUN_NOWAIT);
  ASSERT_EQ(exits, 0);
  ASSERT_EQ(rn_process_kill(p, 12345), UV_EINVAL);
  /* Stopped again, then closed: SIGKILL ends even a stopped child. */
  ASSERT_OK(rn_process_kill(p, SIGSTOP));
  ASSERT_EQ(wait_state(pid, "Tt"), 'T');
  rn_process_close(p, on_closed);
  teardown();
  ASSERT_EQ(exits, 1);
  ASSERT_EQ(term_signal, SIGKILL);
  ASSERT_EQ(closed, 1);
  ASSERT_EQ(kill(pid, 0), -1); /* reaped: no zombie left */
  ASSERT_EQ(errno, ESRCH);
}

/* Close kills the whole group: a shell's own child goes too. */
static void close_kills_group(void) {
  rn_process_t *p;
  int child = 0;
  size_t i;
  setup();
  p = sh("sleep 30 & echo $!; wait", RN_STDIO_CALLBACK);
  RUN_UNTIL(uv, out1.len > 0 && memchr(out1.base, '\n', out1.len) != NULL,
            10000);
  for (i = 0; i < out1.len && out1.base[i] != '\n'; i++)
    child = child * 10 + (out1.base[i] - '0');
  ASSERT_GT(child, 0);
  ASSERT_OK(kill(child, 0));
  rn_process_close(p, NULL);
  teardown();
  ASSERT_EQ(exits, 1);
  ASSERT_EQ(term_signal, SIGKILL);
  /* Dead: gone, or a zombie until whoever adopted it reaps it. */
  ASSERT(strchr("Z-", wait_state(child, "Z-")) != NULL);
}

TEST_LIST_START
  TEST_ENTRY(exit_code)
  TEST_ENTRY(output_callback)
  TEST_ENTRY(output_file)
  TEST_ENTRY(environment)
  TEST_ENTRY(missing_program)
  TEST_ENTRY(terminate)
  TEST_ENTRY(stop_continue)
  TEST_ENTRY(close_kills_group)
TEST_LIST_END

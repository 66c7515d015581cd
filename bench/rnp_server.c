/* rnb-rnp-server: resilnet's own rnp server with a C handler that replies
 * with the request's payload at once, so the rnp cells measure the
 * protocol and the library, not a Lua handler. Prints "PORT <n>" once
 * listening; exits 1 with the error if the library cannot serve rnp. */
#include <signal.h>

#include <resilnet.h>

#include "common.h"

static void on_request(rn_server_t *server, rn_request_t *request,
                       const char *body, size_t len) {
  (void)server;
  if (rn_request_reply(request, body, len) != 0) rn_request_drop(request);
}

int main(int argc, char **argv) {
  uv_loop_t *uv = uv_default_loop();
  rn_loop_t *loop;
  rn_server_t *server;
  rn_server_options_t so;
  char listen[64], host[64];
  int port = 0, i, err;

  for (i = 1; i + 1 < argc; i += 2)
    if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]);
  signal(SIGPIPE, SIG_IGN);
  rnb_raise_nofile();
  if (rn_loop_new(uv, &loop) != 0) abort();
  snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
  rn_server_options_init(&so);
  so.listen = listen;
  so.codec.protocol = RN_PROTOCOL_RNP;
  so.max_concurrent = 1u << 20; /* the handler answers at once */
  so.on_request = on_request;
  err = rn_server_new(loop, &so, &server);
  if (err == 0) err = rn_server_address(server, host, sizeof(host), &port);
  if (err != 0) {
    fprintf(stderr, "rnb-rnp-server: %s\n", rn_strerror(err));
    return 1;
  }
  printf("PORT %d\n", port);
  fflush(stdout);
  return uv_run(uv, UV_RUN_DEFAULT);
}

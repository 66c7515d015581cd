/* libFuzzer target for what the resp server accepts as a request
 * (server/resp.c): commands as arrays of bulk strings, inline commands,
 * protocol errors. Input: [chunk byte] then the stream, fed to the parser
 * in chunks of 1 + chunk % 16 bytes as reads would bring it. */
/* Build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore/include \
 *     -Icore/src/runtime -Icore/src/server fuzz/fuzz_server_resp.c \
 *     core/src/runtime/{error,buf,endpoint}.c \
 *     core/src/codec/{codec,length,line,resp,resp_value,rnp}.c \
 *     core/src/server/resp.c \
 *     -luv -o /tmp/fuzz_server_resp
 *   mkdir -p /tmp/server_resp && /tmp/fuzz_server_resp /tmp/server_resp \
 *     fuzz/corpus/server_resp */
#include "server.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(x) ((x) ? (void)0 : abort())

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the handler gets must be one RESP array of bulk strings, exactly
 * body_len bytes long. */
static void check_command(const rn_codec_t *codec, const char *body,
                          size_t len) {
  rn_frame_t f;
  rn_resp_item_t it, el;
  size_t off;
  int64_t i;
  CHECK(rn_codec_frame(codec, body, len, &f) == 1);
  CHECK(f.size == len);
  CHECK(rn_resp_item(body, len, &it) == 1);
  CHECK(it.type == RN_RESP_ARRAY && it.integer > 0);
  off = it.size;
  for (i = 0; i < it.integer; i++) {
    CHECK(rn_resp_item(body + off, len - off, &el) == 1);
    CHECK(el.type == RN_RESP_BULK);
    off += el.size;
  }
  CHECK(off == len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static rn_server_t server;
  static rn_server_conn_t conn;
  rn_codec_options_t o;
  const char *s = (const char *)data + 1;
  size_t chunk, have, pos = 0;
  char why[96];

  if (size < 1) return 0;
  chunk = 1 + data[0] % 16;
  size -= 1;
  memset(&o, 0, sizeof(o));
  o.protocol = RN_PROTOCOL_RESP;
  o.max_frame = 4096;
  if (rn_codec_init(&server.codec, &o) != 0) abort();
  /* Few, so that the bound on an inline command's words is met too. */
  server.options.max_elements = 64;
  memset(&conn, 0, sizeof(conn));
  conn.server = &server;
  have = RN_MIN(chunk, size);
  while (pos < size) {
    rn_frame_t f;
    const char *body;
    int r = rn__server_resp_frame(&conn, s + pos, have - pos, &f, &body,
                                  why, sizeof(why));
    if (r < 0) {
      /* E2BIG: the server refuses it as past max_elements, no message. */
      CHECK(r == UV_E2BIG || strncmp(why, "ERR Protocol error: ", 20) == 0);
      break;
    }
    if (r == 0) {
      if (have == size) break; /* the stream ends mid-request */
      have = RN_MIN(have + chunk, size);
      continue;
    }
    CHECK(f.size > 0 && f.size <= have - pos);
    if (body != NULL) check_command(&server.codec, body, f.body_len);
    pos += f.size;
  }
  /* What the server frees when a connection closes mid-request. */
  rn_frame_scan_reset(&conn.scan);
  rn_buf_free(&server.inline_args);
  rn_buf_free(&server.inline_out);
  memset(&server.inline_args, 0, sizeof(server.inline_args));
  memset(&server.inline_out, 0, sizeof(server.inline_out));
  return 0;
}

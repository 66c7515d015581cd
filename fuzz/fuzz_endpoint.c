/* libFuzzer target for endpoint parsing: anything accepted formats to a
 * canonical text that parses back to the same endpoint. */
/* Build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore/include \
 *     -Icore/src/runtime fuzz/fuzz_endpoint.c \
 *     core/src/runtime/{error,buf,endpoint}.c \
 *     core/src/codec/{codec,length,line,resp,resp_value,rnp}.c -luv -o /tmp/fuzz_endpoint
 *   mkdir -p /tmp/endpoint && /tmp/fuzz_endpoint /tmp/endpoint fuzz/corpus/endpoint */
#include "resilnet.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(x) ((x) ? (void)0 : abort())

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char text[RN_ENDPOINT_ADDRESS_MAX + 16], again[sizeof(text)];
  rn_endpoint_t ep, ep2;
  int n;

  if (rn_endpoint_parse(&ep, (const char *)data, size) != 0)
    return 0;
  CHECK(ep.kind == RN_ENDPOINT_TCP || ep.kind == RN_ENDPOINT_UNIX);
  CHECK(memchr(ep.address, '\0', sizeof(ep.address)) != NULL);
  CHECK(ep.address[0] != '\0');
  n = rn_endpoint_format(&ep, text, sizeof(text));
  CHECK(n > 0 && (size_t)n == strlen(text));
  CHECK(rn_endpoint_parse(&ep2, text, (size_t)n) == 0);
  CHECK(ep2.kind == ep.kind && ep2.port == ep.port);
  CHECK(strcmp(ep2.address, ep.address) == 0);
  CHECK(rn_endpoint_format(&ep2, again, sizeof(again)) == n);
  CHECK(strcmp(again, text) == 0);
  /* Only a shorter buffer than text + NUL is refused. */
  CHECK(rn_endpoint_format(&ep, again, (size_t)n) == UV_ENOBUFS);
  return 0;
}

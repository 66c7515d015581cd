/* What the TLS tests share: the throwaway certificates, made at test time
 * by tools/make-test-certs.sh into the build dir (the first test to need
 * them makes them; the script is safe to run from tests running at once).
 * cmake/ResilnetTests.cmake defines RN_TLS_CERTS_SCRIPT and
 * RN_TLS_CERTS_DIR for the test-tls-* programs. Include after task.h. */
#ifndef RN_TEST_TLS_CERTS_H
#define RN_TEST_TLS_CERTS_H

#include <stdio.h>
#include <stdlib.h>

#ifndef RN_TLS_CERTS_DIR
#error "RN_TLS_CERTS_DIR: see the end of cmake/ResilnetTests.cmake"
#endif

/* DIR/name, made once (static storage: one path per call site's use). */
static inline const char *test_cert(const char *name) {
  static char paths[16][512];
  static unsigned next;
  static int made;
  char *p = paths[next++ % 16];
  if (!made) {
    ASSERT_OK(system("sh '" RN_TLS_CERTS_SCRIPT "' '" RN_TLS_CERTS_DIR "'"));
    made = 1;
  }
  snprintf(p, sizeof(paths[0]), "%s/%s", RN_TLS_CERTS_DIR, name);
  return p;
}

#endif /* RN_TEST_TLS_CERTS_H */

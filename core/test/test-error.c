#include "resilnet.h"
#include "task.h"

#include <limits.h>

static void test_own_codes(void) {
  ASSERT_STR_EQ(rn_err_name(RN_EOVERLOAD), "EOVERLOAD");
  ASSERT_STR_EQ(rn_err_name(RN_ECLOSED), "ECLOSED");
  ASSERT_STR_EQ(rn_err_name(RN_EFRAMESIZE), "EFRAMESIZE");
  ASSERT_STR_EQ(rn_err_name(RN_EBADFRAME), "EBADFRAME");
  ASSERT_STR_EQ(rn_err_name(RN_EUNEXPECTED), "EUNEXPECTED");
  ASSERT_STR_EQ(rn_err_name(RN_EREPLY), "EREPLY");
  ASSERT_STR_EQ(rn_err_name(RN_EDEADPEER), "EDEADPEER");
  ASSERT_STR_EQ(rn_err_name(RN_ENOTEXEC), "ENOTEXEC");
  ASSERT_STR_EQ(rn_err_name(RN_EHANDSHAKE), "EHANDSHAKE");
  ASSERT_STR_EQ(rn_err_name(RN_EHANDLER), "EHANDLER");
  ASSERT_STR_EQ(rn_strerror(RN_EOVERLOAD),
                "too many calls pending or in flight");
  ASSERT_STR_EQ(rn_err_name(RN_EPEERPROTOCOL), "EPEERPROTOCOL");
  ASSERT_STR_EQ(rn_strerror(RN_EFRAMESIZE), "frame larger than max_frame");
  ASSERT_STR_EQ(rn_strerror(RN_EHANDLER), "request handler failed");
  ASSERT_EQ(RN_EOVERLOAD, -30001);
  ASSERT_EQ(RN_EHANDLER, -30010);
}

/* The table drives both functions: every code has a distinct "E" name and a
 * message, and none of them falls through to the unknown case. */
static void test_table_complete(void) {
  static const int codes[] = {
#define XX(name, value, msg) RN_E##name,
    RN_ERRNO_MAP(XX)
#undef XX
  };
  size_t i, j;

  for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    const char *name = rn_err_name(codes[i]);
    ASSERT(codes[i] < -30000 && codes[i] > -31000);
    ASSERT(name[0] == 'E');
    ASSERT(strcmp(name, "EUNKNOWN") != 0);
    ASSERT(strcmp(rn_strerror(codes[i]), "unknown error") != 0);
    for (j = 0; j < i; j++)
      ASSERT(strcmp(name, rn_err_name(codes[j])) != 0);
  }
}

static void test_uv_codes(void) {
  ASSERT_STR_EQ(rn_err_name(UV_ECONNRESET), "ECONNRESET");
  ASSERT_STR_EQ(rn_err_name(UV_ETIMEDOUT), "ETIMEDOUT");
  ASSERT_STR_EQ(rn_err_name(UV_ECONNREFUSED), "ECONNREFUSED");
  ASSERT_STR_EQ(rn_err_name(UV_EOF), "EOF");
  ASSERT_STR_EQ(rn_err_name(UV_EAI_NONAME), "EAI_NONAME");
  ASSERT_STR_EQ(rn_err_name(UV_ENOMEM), "ENOMEM");
  ASSERT_STR_EQ(rn_strerror(UV_ECONNRESET), uv_strerror(UV_ECONNRESET));
  ASSERT_STR_EQ(rn_strerror(UV_EINVAL), uv_strerror(UV_EINVAL));
}

/* Unknown codes must not reach uv_err_name (it leaks for them in libuv
 * 1.44; the sanitizer run's leak checker catches a regression). */
static void test_unknown(void) {
  static const int codes[] = {0, 1, 12345, -30000, -30998, -30999,
                              -29999, -99999, INT_MIN, INT_MAX};
  size_t i;

  for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    ASSERT_STR_EQ(rn_err_name(codes[i]), "EUNKNOWN");
    ASSERT_STR_EQ(rn_strerror(codes[i]), "unknown error");
  }
}

static void test_version(void) {
  ASSERT_STR_EQ(rn_version_string(), RN_VERSION_STRING);
}

TEST_LIST_START
  TEST_ENTRY(test_own_codes)
  TEST_ENTRY(test_table_complete)
  TEST_ENTRY(test_uv_codes)
  TEST_ENTRY(test_unknown)
  TEST_ENTRY(test_version)
TEST_LIST_END

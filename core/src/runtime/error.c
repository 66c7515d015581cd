/* Error names and messages for resilnet's own codes and libuv's. */
#include "resilnet.h"

/* uv_err_name() allocates (and leaks) a string for codes it does not know in
 * libuv before 1.45, so only known codes are handed to it. The switch is
 * generated from libuv's own table, which keeps it in step with uv.h. */
static int is_uv_code(int err) {
  switch (err) {
#define RN_UV_CASE_(name, msg) case UV_##name:
    UV_ERRNO_MAP(RN_UV_CASE_)
#undef RN_UV_CASE_
    return 1;
  default:
    return 0;
  }
}

const char *rn_err_name(int err) {
  switch (err) {
#define RN_NAME_CASE_(name, value, msg) case RN_E##name: return "E" #name;
    RN_ERRNO_MAP(RN_NAME_CASE_)
#undef RN_NAME_CASE_
  default:
    break;
  }
  return is_uv_code(err) ? uv_err_name(err) : "EUNKNOWN";
}

const char *rn_strerror(int err) {
  switch (err) {
#define RN_MSG_CASE_(name, value, msg) case RN_E##name: return msg;
    RN_ERRNO_MAP(RN_MSG_CASE_)
#undef RN_MSG_CASE_
  default:
    break;
  }
  return is_uv_code(err) ? uv_strerror(err) : "unknown error";
}

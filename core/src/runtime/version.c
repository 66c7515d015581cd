#include "resilnet.h"

const char *rn_version_string(void) { return RN_VERSION_STRING; }

-- LuaRocks package of resilnet 0.1.0, the release: built from the git tag
-- v0.1.0. Everything but `version` and `source` is the same as in
-- resilnet-scm-1.rockspec (that file says why the build is "cmake");
-- tools/test-luarocks.sh fails if the two drift apart.
--
-- The version is resilnet's own (RN_VERSION_STRING in core/include/
-- resilnet.h, which require("resilnet")._VERSION reports); the test checks
-- that they agree. To release X.Y.Z: set RN_VERSION_*, `git mv` this file
-- to resilnet-X.Y.Z-1.rockspec and set `version` and `source.tag`, add the
-- CHANGELOG.md section, tag vX.Y.Z, then `luarocks pack` this file: the
-- .src.rock holds the sources and builds offline with `luarocks install`.
rockspec_format = "3.0"
package = "resilnet"
version = "0.1.0-1"

source = {
  -- The host is a placeholder until the repository is published (the same
  -- in homepage and in the scm rockspec): `luarocks pack` clones from here.
  url = "git+https://example.invalid/resilnet/resilnet.git",
  tag = "v0.1.0",
}

description = {
  summary = "Resilient pooled TCP connections for Lua, on libuv",
  detailed = [[
Pooled TCP connections with heartbeat dead-peer detection, automatic
reconnect and idempotency-aware retry. The I/O, framing and retry decisions
run in C on libuv; policies and recovery handlers are scripted in Lua.
]],
  homepage = "https://example.invalid/resilnet",
  license = "MIT",
}

dependencies = {
  "lua >= 5.1, < 5.5",
}

-- `luarocks make` then `luarocks test`: busted over spec/, against the
-- installed module. The specs also need redis-server on PATH, and their
-- child processes run RESILNET_TEST_LUA (default lua5.4): set it to the
-- interpreter of this tree. `make test` runs the same specs under CTest.
test_dependencies = { "busted", "luasocket" }
test = { type = "busted" }

external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  -- TLS (OpenSSL 3; Debian: libssl-dev). CMake can build without it, the
  -- rock does not: a rock's users expect `tls = {...}` to work.
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
}

build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_C_FLAGS = "$(CFLAGS)",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    -- One module, for the Lua LuaRocks is installing for.
    RESILNET_LUA_INCDIR = "$(LUA_INCDIR)",
    LUA_CDIR = "$(LIBDIR)",
    LUA_LDIR = "$(LUADIR)",
    LIBUV_INCDIR = "$(LIBUV_INCDIR)",
    LIBUV_LIBDIR = "$(LIBUV_LIBDIR)",
    OPENSSL_ROOT_DIR = "$(OPENSSL_DIR)",
    RESILNET_TLS = "ON",
    -- Users' compilers may warn about things ours does not: no -Werror.
    RESILNET_WERROR = "OFF",
    RESILNET_BUILD_TESTS = "OFF",
  },
}

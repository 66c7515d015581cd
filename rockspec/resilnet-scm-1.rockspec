-- LuaRocks package of resilnet, built by the project's own CMakeLists.txt.
--
-- Build type "cmake", not "builtin": builtin needs every C file listed here
-- by hand (the core grows file by file) and would duplicate the flags and
-- libuv detection that CMakeLists.txt already owns. LuaRocks 3's cmake
-- backend configures in ./build.luarocks of the source dir (ignored by git).
-- tools/test-luarocks.sh checks that this file and the versioned one
-- (resilnet-X.Y.Z-1.rockspec) differ only in `version` and `source`.
-- CMake's install rules also put the C headers (resilnet.h and
-- resilnet/*.h) in the rock's include/ directory.
rockspec_format = "3.0"
package = "resilnet"
version = "scm-1"

source = {
  -- Placeholder: `luarocks make` builds the local checkout and never fetches.
  url = "git+https://example.invalid/resilnet/resilnet.git",
  branch = "main",
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

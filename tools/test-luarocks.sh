#!/usr/bin/env bash
# Usage: tools/test-luarocks.sh LUA_VERSION   (5.1, 5.2, 5.3 or 5.4)
#
# Installs resilnet with `luarocks make` from the rockspec into a fresh temp
# tree, then checks that `require "resilnet"` works with package paths that
# point at that tree only. LuaRocks' cmake backend builds in ./build.luarocks
# of its current dir, so it runs in a copy of the sources: the checkout (and
# its build dirs) are left untouched.
set -euo pipefail

ver=${1:?usage: $0 LUA_VERSION}
root=$(cd "$(dirname "$0")/.." && pwd)
lua=lua$ver
command -v "$lua" >/dev/null || { echo "$lua not found" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/resilnet-luarocks.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/src
tree=$work/tree
mkdir "$src"

# What the build reads; nothing else (no build dirs, no .git).
for f in CMakeLists.txt cmake core lua rockspec; do
  cp -R "$root/$f" "$src/"
done

# LUA_INCDIR explicitly: LuaRocks' guess must not pick another version's headers.
incdir=/usr/include/lua$ver
[ -d "$incdir" ] || incdir=$(luarocks --lua-version="$ver" config variables.LUA_INCDIR)

# LuaRocks runs `cmake --build` without -j; CMake reads the level from here.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
(cd "$src" && luarocks --lua-version="$ver" --tree="$tree" make --deps-mode=none \
   rockspec/resilnet-scm-1.rockspec "LUA_INCDIR=$incdir")

# Keep only the temp tree's entries of LuaRocks' paths.
only_tree() {
  tr ';' '\n' | grep -F "$tree/" | paste -sd ';' -
}
lpath=$(luarocks --lua-version="$ver" --tree="$tree" path --lr-path | only_tree)
cpath=$(luarocks --lua-version="$ver" --tree="$tree" path --lr-cpath | only_tree)

# A clean environment: no LUA_PATH_5_4, LUA_INIT or the like can leak in.
env -i PATH="$PATH" LUA_PATH="$lpath" LUA_CPATH="$cpath" "$lua" -e '
  local r = require "resilnet"
  assert(r._VERSION:match("^resilnet %d"), "bad _VERSION: " .. tostring(r._VERSION))
  -- The pure-Lua submodules are installed too.
  assert(type(r.check.history) == "function", "resilnet.check missing")
  assert(require("resilnet.dedupe_redis").new, "resilnet.dedupe_redis missing")
  print(r._VERSION .. " from " .. package.cpath)
'
echo "luarocks install for $lua: ok"

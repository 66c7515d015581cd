#!/usr/bin/env bash
# Usage: tools/test-luarocks.sh LUA_VERSION   (5.1, 5.2, 5.3 or 5.4)
#
# Does what a release does and what a user then does, offline:
#   1. `luarocks lint` both rockspecs, and check that the versioned one
#      (rockspec/resilnet-X.Y.Z-1.rockspec) differs from the scm one only in
#      `version` and `source`, so fixing one cannot leave the other broken;
#      CHANGELOG.md must have a section for X.Y.Z.
#   2. Commit a snapshot of the checkout (tracked and new files, as they are
#      now) to a scratch git repository, tag it vX.Y.Z, and let git map the
#      rockspec's source URL to it (url.insteadOf, in a config of its own):
#      `luarocks pack` then runs on the committed rockspec, unchanged.
#   3. `luarocks install` the .src.rock into a fresh tree, with no network
#      (a network namespace of its own, where unshare can make one).
#      `luarocks make` the scm rockspec into another, as from a checkout.
#   4. With package paths that point at one tree only, require "resilnet":
#      its _VERSION must be "resilnet X.Y.Z", the rockspec's version.
set -euo pipefail

ver=${1:?usage: $0 LUA_VERSION}
root=$(cd "$(dirname "$0")/.." && pwd)
lua=lua$ver
for tool in "$lua" luarocks git; do
  command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done

fail() { echo "test-luarocks: $*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/resilnet-luarocks.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- 1. the rockspecs --------------------------------------------------------
scm=$root/rockspec/resilnet-scm-1.rockspec
shopt -s nullglob
released=("$root"/rockspec/resilnet-[0-9]*-1.rockspec)
shopt -u nullglob
[ ${#released[@]} -eq 1 ] ||
  fail "want exactly one rockspec/resilnet-X.Y.Z-1.rockspec, found ${#released[@]}"
rockspec=${released[0]}
name_version=$(basename "$rockspec" .rockspec)   # resilnet-X.Y.Z-1
version=${name_version#resilnet-}
version=${version%-*}                            # X.Y.Z

luarocks lint "$scm"
luarocks lint "$rockspec"   # also fails if `version` disagrees with the name
# A release says what it changed.
grep -qE "^## ${version//./\\.}( |$)" "$root/CHANGELOG.md" ||
  fail "CHANGELOG.md has no '## $version' section"

# Compares the two, then prints the URL git will be asked for
# (git+https://h/x.git -> https://h/x.git).
url=$("$lua" - "$scm" "$rockspec" <<'LUA'
-- A rockspec is Lua that sets globals: load each into a table of its own.
local function load_spec(file)
  local env = {}
  local chunk
  if setfenv then
    chunk = assert(loadfile(file))
    setfenv(chunk, env)
  else
    chunk = assert(loadfile(file, "t", env))
  end
  chunk()
  return env
end
local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
local scm, rel = load_spec(arg[1]), load_spec(arg[2])
local url = rel.source.url:gsub("^git%+", "")
for _, key in ipairs { "version", "source" } do scm[key], rel[key] = nil, nil end
local keys = {}
for k in pairs(scm) do keys[k] = true end
for k in pairs(rel) do keys[k] = true end
for k in pairs(keys) do
  if not same(scm[k], rel[k]) then
    io.stderr:write("test-luarocks: the rockspecs differ in `", k,
                    "` (only version and source may)\n")
    os.exit(1)
  end
end
print(url)
LUA
)

# --- 2. pack from a tagged snapshot ------------------------------------------
origin=$work/origin
mkdir "$origin"
# Git reads this config only (not the user's nor the system's).
cat > "$work/gitconfig" <<EOF
[url "$origin"]
	insteadOf = $url
[user]
	name = test-luarocks
	email = test-luarocks@example.invalid
[advice]
	detachedHead = false
EOF
export GIT_CONFIG_GLOBAL=$work/gitconfig GIT_CONFIG_NOSYSTEM=1
# The files a clone of this checkout would have, as they are in the working
# tree (uncommitted edits are what is under test); build dirs are ignored.
# So the test runs from a git checkout, as `make test` does.
(cd "$root" && git ls-files -z --cached --others --exclude-standard |
   while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
   tar --null -T - -cf -) | tar -C "$origin" -xf -
git -C "$origin" init -q
git -C "$origin" add -A
git -C "$origin" commit -q -m "snapshot for tools/test-luarocks.sh"
git -C "$origin" tag "v$version"

# Without a network of its own, a step that tried to download would fail.
offline=()
if unshare -n true 2>/dev/null; then
  offline=(unshare -n)
elif unshare -rn true 2>/dev/null; then
  offline=(unshare -rn)
fi
if [ ${#offline[@]} -gt 0 ]; then
  echo "test-luarocks: pack and install with no network (${offline[*]})"
else
  echo "test-luarocks: cannot make a network namespace; running with the network" >&2
fi

mkdir "$work/pack"
(cd "$work/pack" && "${offline[@]}" luarocks pack "$rockspec")
rock=$work/pack/$name_version.src.rock
[ -f "$rock" ] || fail "luarocks pack made no $name_version.src.rock"

# --- 3. install it, and `luarocks make` the scm rockspec ---------------------
# LUA_INCDIR explicitly: LuaRocks' guess must not pick another version's headers.
incdir=/usr/include/lua$ver
[ -d "$incdir" ] || incdir=$(luarocks --lua-version="$ver" config variables.LUA_INCDIR)

# LuaRocks runs `cmake --build` without -j; CMake reads the level from here.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}

# The source rock builds in a temp dir of LuaRocks' own.
(cd "$work" && "${offline[@]}" luarocks --lua-version="$ver" --tree="$work/tree" \
   install "$rock" "LUA_INCDIR=$incdir")
# `luarocks make` builds in ./build.luarocks: in the snapshot, not the checkout.
(cd "$origin" && "${offline[@]}" luarocks --lua-version="$ver" \
   --tree="$work/tree-scm" make --deps-mode=none \
   rockspec/resilnet-scm-1.rockspec "LUA_INCDIR=$incdir")

# --- 4. require it from each tree only ---------------------------------------
# check_tree TREE ROCK_VERSION
check_tree() {
  local tree=$1 lpath cpath rockdir
  only_tree() { tr ';' '\n' | grep -F "$tree/" | paste -sd ';' -; }
  lpath=$(luarocks --lua-version="$ver" --tree="$tree" path --lr-path | only_tree)
  cpath=$(luarocks --lua-version="$ver" --tree="$tree" path --lr-cpath | only_tree)
  # A clean environment: no LUA_PATH_5_4, LUA_INIT or the like can leak in.
  env -i PATH="$PATH" LUA_PATH="$lpath" LUA_CPATH="$cpath" "$lua" - "$version" <<'LUA'
local r = require "resilnet"
local want = "resilnet " .. arg[1]
if r._VERSION ~= want then
  io.stderr:write("test-luarocks: _VERSION is ", tostring(r._VERSION),
                  ", the rockspec says ", want, "\n")
  os.exit(1)
end
-- The pure-Lua submodules are installed too.
assert(type(r.check.history) == "function", "resilnet.check missing")
assert(require("resilnet.dedupe_redis").new, "resilnet.dedupe_redis missing")
assert(require("resilnet.redis").sentinel, "resilnet.redis missing")
assert(package.searchpath == nil or package.searchpath("resilnet.discovery",
       package.path), "resilnet.discovery missing")
print(r._VERSION .. " from " .. package.cpath)
LUA
  rockdir=$(luarocks --lua-version="$ver" --tree="$tree" show --rock-dir resilnet "$2")
  [ -f "$rockdir/include/resilnet.h" ] || fail "no include/resilnet.h in $rockdir"
}
check_tree "$work/tree" "$version-1"
check_tree "$work/tree-scm" scm-1
echo "luarocks pack, offline install of $name_version and make of scm for $lua: ok"

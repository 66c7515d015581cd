#!/bin/sh
# Builds every libFuzzer target in fuzz/ (clang, -fsanitize=fuzzer with ASan
# and UBSan) and runs each for FUZZ_SECONDS, starting from its seed corpus
# fuzz/corpus/<name> (read only: new inputs go to a scratch directory).
# A crash, leak or sanitizer report fails the run and leaves the input in
# $FUZZ_OUT/<name>/ for replay: ./<binary> <input>.
#   tools/fuzz.sh [seconds] [target-name...]
set -eu

seconds=${1:-${FUZZ_SECONDS:-30}}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_OUT:-$root/build-fuzz}
cc=${FUZZ_CC:-clang}

if ! command -v "$cc" >/dev/null 2>&1; then
  echo "fuzz: $cc not found (install clang and libclang-rt-14-dev)" >&2
  exit 1
fi

flags="-g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
# The public headers, and every subsystem's private ones (fuzzers
# reach internals by name, as the tests do).
incs="-I$root/core/include"
for dir in "$root"/core/src/*/; do
  incs="$incs -I${dir%/}"
done
# The core once, instrumented; each target links against it.
objs=""
for src in "$root"/core/src/*/*.c; do
  rel=${src#"$root"/core/src/}
  obj="$out/obj/${rel%.c}.o"
  mkdir -p "$(dirname "$obj")"
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ]; then
    # shellcheck disable=SC2086
    $cc $flags $incs -c "$src" -o "$obj"
  fi
  objs="$objs $obj"
done

targets=$*
if [ -z "$targets" ]; then
  for f in "$root"/fuzz/fuzz_*.c; do
    targets="$targets $(basename "$f" .c | sed 's/^fuzz_//')"
  done
fi

status=0
for name in $targets; do
  bin="$out/fuzz_$name"
  # shellcheck disable=SC2086
  $cc $flags -fsanitize=fuzzer $incs \
    "$root/fuzz/fuzz_$name.c" $objs -luv -o "$bin"
  mkdir -p "$out/$name/new" "$out/$name/crashes"
  seeds="$root/fuzz/corpus/$name"
  [ -d "$seeds" ] || seeds=""
  echo "fuzz: $name for ${seconds}s"
  # shellcheck disable=SC2086
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$out/$name/crashes/" \
       "$out/$name/new" $seeds >"$out/$name/log" 2>&1; then
    echo "fuzz: $name FAILED; see $out/$name/log and $out/$name/crashes/" >&2
    tail -n 30 "$out/$name/log" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units" "$out/$name/log" |
      sed "s/^/fuzz: $name /" || true
  fi
done
exit $status

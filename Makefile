# Thin wrapper around CMake/CTest; the build itself lives in CMakeLists.txt.
#
#   make            build the core and resilnet/core.so for every Lua found
#   make test       deps, build, ctest, then the sanitizer pass (make asan)
#   make asan       ASan+UBSan build in build-asan and its ctest run
#   make fuzz       every libFuzzer target for FUZZ_SECONDS (30) each
#   make demo       the crash-and-recovery demo (examples/demo.lua, < 30 s)
#   make bench      the benchmarks (several minutes) in a Release build of
#                   their own; results to bench/results/ (bench.md, PNG)
#   make bench-quick  a smoke run of the benchmark harness (< 60 s)
#   make soak       random faults for MINUTES (10) against an rnp server
#                   through the proxy; fails past the RSS/descriptor bounds
#                   of docs/harness.md ("Soak"); SEED=n replays one
#   make clean      remove both build dirs

BUILD      ?= build
ASAN_BUILD ?= build-asan
BENCH_BUILD ?= build-bench
JOBS       ?= 2
# Lua versions of the sanitizer pass (the normal build takes every Lua found).
ASAN_LUA   ?= 5.4;jit
CTEST       = ctest --output-on-failure -j$(JOBS)
# CMake's generated makefiles run as our sub-makes: keep their
# "Entering directory" lines out of the log.
MAKEFLAGS  += --no-print-directory

# make test fuzzes each target briefly: enough to catch a decoder that
# crashes on its own seeds or near them, not a substitute for long runs.
FUZZ_SECONDS ?= 30
TEST_FUZZ_SECONDS ?= 5

.PHONY: all build test asan demo clean deps bench bench-quick fuzz soak

all: build

deps:
	@tools/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# The asan pass runs only if the normal one passed, so the last CTest summary
# line printed is always the one that failed, or the last of two that passed.
test: build
	cd $(BUILD) && $(CTEST)
	@$(MAKE) asan
	@tools/fuzz.sh $(TEST_FUZZ_SECONDS)
	@$(MAKE) bench-quick

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DRESILNET_SANITIZE=ON -DRESILNET_FAULT_LUA_TAGS=5.4 \
	  "-DRESILNET_LUA_VERSIONS=$(ASAN_LUA)" >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && $(CTEST)

fuzz: deps
	@tools/fuzz.sh $(FUZZ_SECONDS)

# The server processes the demo starts inherit these paths; its journals
# and timeline (PNG with gnuplot) go to $(BUILD)/demo.
demo: build
	@env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 \
	  LUA_PATH="$(CURDIR)/lua/?.lua;;" \
	  LUA_CPATH="$(abspath $(BUILD))/lua/5.4/?.so;;" \
	  lua5.4 examples/demo.lua "$(abspath $(BUILD))/demo"

MINUTES ?= 10
SEED    ?=
soak: build
	env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 \
	  LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/?.lua;;" \
	  LUA_CPATH="$(abspath $(BUILD))/lua/5.4/?.so;;" \
	  RESILNET_TEST_LUA=lua5.4 lua5.4 tools/soak.lua $(MINUTES) $(SEED)

# Measured optimised: Release, no tests, the module for lua5.4 and LuaJIT.
bench: deps
	@tools/install-deps.sh --bench || \
	  echo "bench: the peers' packages are missing: their rows are skipped"
	@cmake -S . -B $(BENCH_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DRESILNET_BUILD_TESTS=OFF -DRESILNET_BUILD_BENCH=ON \
	  "-DRESILNET_LUA_VERSIONS=5.4;jit" >/dev/null
	@cmake --build $(BENCH_BUILD) -j$(JOBS)
	python3 bench/run.py --build $(BENCH_BUILD)

# Checks the harness, not the speed: every client completes, results parse.
bench-quick: build
	python3 bench/run.py --quick --build $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(BENCH_BUILD) build-fuzz

# CTest suite. Every test has a timeout. Names say what runs where:
#   core.test-<x>.<case> one case of a C test program (core/test/test-<x>.c)
#   valgrind.core.test-<x> the program's cases under valgrind (per case,
#                        valgrind.core.test-<x>.<case>, with
#                        RESILNET_VALGRIND_PER_CASE)
#   spec.lua5.4 ...      the busted specs under one Lua (spec.luajit for LuaJIT)
#   spec-scale.lua5.4    spec/scale_spec.lua alone (1,000 connections, 10 s)
#   luarocks.lua5.4 ...  `luarocks pack` the versioned rockspec, install the
#                        .src.rock offline into a temp tree, check _VERSION
# In a RESILNET_SANITIZE build every name starts with "asan.".

set(RESILNET_C_TEST_TIMEOUT 30 CACHE STRING
    "Seconds allowed per C test case without a TEST_ENTRY_TIMEOUT of its own")
set(RESILNET_VALGRIND_SLOWDOWN 3 CACHE STRING
    "Factor on a C case's timeout under valgrind (RESILNET_VALGRIND_PER_CASE)")
set(RESILNET_SPEC_TIMEOUT 300 CACHE STRING "Seconds allowed per busted run")
set(RESILNET_SCALE_TIMEOUT 180 CACHE STRING "Seconds allowed per scale spec run")
set(RESILNET_LUAROCKS_TIMEOUT 300 CACHE STRING "Seconds allowed per LuaRocks test")

set(rn_prefix "")
set(rn_c_env "")
set(rn_lua_env "")
if(RESILNET_SANITIZE)
  set(rn_prefix "asan.")
  set(rn_c_env
      "ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1:strict_string_checks=1"
      "LSAN_OPTIONS=suppressions=${CMAKE_SOURCE_DIR}/tools/lsan.supp:print_suppressions=0"
      "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
  # Debian's lua is not instrumented: the ASan runtime must be the first
  # library in the process, before the module that needs it is dlopen'ed.
  set(rn_preload "")
  foreach(lib libasan.so libubsan.so)
    execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=${lib}
                    OUTPUT_VARIABLE path OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT IS_ABSOLUTE "${path}")
      message(FATAL_ERROR "${CMAKE_C_COMPILER} does not know ${lib}: the "
                          "sanitized Lua tests need gcc's sanitizer runtimes")
    endif()
    list(APPEND rn_preload "${path}")
  endforeach()
  list(JOIN rn_preload " " rn_preload)
  set(rn_lua_env ${rn_c_env} "LD_PRELOAD=${rn_preload}")
endif()

# ---------------------------------------------------------------------------
# C tests: each core/test/test-*.c is its own program; each case in its
# TEST_LIST (core/test/task.h) is its own test, core.test-<x>.<case>, so a
# hang names one case and costs one case's timeout. The cases are read from
# the list at configure time (one TEST_ENTRY a line); editing a test file
# configures again.

# What the tests share: the scripted peer, the bounded wait, the fixtures.
file(GLOB rn_test_support CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/core/test/*.c")
list(FILTER rn_test_support EXCLUDE REGEX "/test-[^/]*\\.c$")
add_library(resilnet_test_support STATIC ${rn_test_support})
target_include_directories(resilnet_test_support PUBLIC
  "${CMAKE_SOURCE_DIR}/core/test" ${RESILNET_CORE_PRIVATE_DIRS})
target_link_libraries(resilnet_test_support PUBLIC resilnet_core)

# rn_c_cases_<program>: the program's cases; rn_c_timeout_<program>.<case>:
# the seconds a case may take.
file(GLOB rn_c_tests CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/core/test/test-*.c")
foreach(src IN LISTS rn_c_tests)
  get_filename_component(name "${src}" NAME_WE)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${src}")
  file(STRINGS "${src}" entries
       REGEX "^[ \t]*TEST_ENTRY(_TIMEOUT)?\\([A-Za-z0-9_]+(, *[0-9]+)?\\)")
  if(NOT entries)
    message(FATAL_ERROR "${src}: no TEST_ENTRY lines (see core/test/task.h)")
  endif()
  set(rn_c_cases_${name} "")
  foreach(entry IN LISTS entries)
    string(REGEX MATCH "\\(([A-Za-z0-9_]+)(, *([0-9]+))?\\)" _ "${entry}")
    list(APPEND rn_c_cases_${name} "${CMAKE_MATCH_1}")
    if(CMAKE_MATCH_3)
      set(rn_c_timeout_${name}.${CMAKE_MATCH_1} ${CMAKE_MATCH_3})
    else()
      set(rn_c_timeout_${name}.${CMAKE_MATCH_1} ${RESILNET_C_TEST_TIMEOUT})
    endif()
  endforeach()

  add_executable(${name} "${src}")
  # Tests may check internals (any subsystem's private header, by name)
  # as well as the API.
  target_link_libraries(${name} PRIVATE resilnet_test_support)
  set_target_properties(${name} PROPERTIES
    RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/core-tests")
  foreach(case IN LISTS rn_c_cases_${name})
    set(test ${rn_prefix}core.${name}.${case})
    add_test(NAME ${test} COMMAND ${name} ${case})
    set_tests_properties(${test} PROPERTIES
      TIMEOUT ${rn_c_timeout_${name}.${case}} ENVIRONMENT "${rn_c_env}")
  endforeach()
endforeach()
# test-rnp also checks the language-neutral vectors in docs/vectors/rnp.
if(TARGET test-rnp)
  target_compile_definitions(test-rnp PRIVATE
    "RN_RNP_VECTORS_DIR=\"${CMAKE_SOURCE_DIR}/docs/vectors/rnp\"")
endif()

# The same C tests under valgrind's memcheck, in the uninstrumented build: it
# sees uninitialised reads that ASan does not. Tests whose assertions bound
# how fast something happens (heartbeat and housekeeping timing) are left to
# the sanitizer pass; valgrind slows a program too much for those bounds.
# test-buf asks realloc for absurd sizes on purpose (the out-of-memory path),
# which memcheck reports as an error by design.
#
# By default valgrind runs each program once, every case in order
# (valgrind.core.test-<x>; the log names each case as it starts): a
# valgrind start costs about half a second of CPU, which over some 200
# cases made the whole ctest run two to three minutes longer. With
# RESILNET_VALGRIND_PER_CASE each case is a test of its own
# (valgrind.core.test-<x>.<case>), as the plain and sanitizer runs are.
set(RESILNET_VALGRIND_SKIP test-heartbeat test-maintenance test-reconnect test-buf CACHE STRING
    "C test programs (or, per case, program.case) not run under valgrind")
# RUN_UNTIL's bounds (core/test/wait.c) are stretched this many times under
# valgrind: they only end waits that would never end.
set(RESILNET_VALGRIND_WAIT_SCALE 4 CACHE STRING
    "Factor on the C tests' wait bounds under valgrind")
option(RESILNET_VALGRIND_PER_CASE "One valgrind test per C case" OFF)
set(RESILNET_VALGRIND_PROGRAM_TIMEOUT 120 CACHE STRING
    "Seconds allowed per C test program under valgrind (all its cases)")
set(rn_valgrind valgrind -q --error-exitcode=99 --leak-check=full
    --errors-for-leak-kinds=definite,indirect --read-inline-info=no)
# Per case, valgrind runs code slowly the first time it meets it:
# RN_TEST_WARMUP makes a case do a round trip of each protocol through the
# proxy first (core/test/warmup.c), as it met warm code after other cases
# in one process. A first exchange that must beat a bound of tens of
# milliseconds on a path the warm-up does not take is left to the sanitizer
# pass. (Most of a valgrind start is reading debug information, most of
# that inlined-function information, of no use in a -O0 build's stacks.)
set(rn_valgrind_cold_skip
    test-proxy.latency_jitter_live) # 50 ms through a just-added fault
find_program(RESILNET_VALGRIND NAMES valgrind)
if(RESILNET_VALGRIND AND NOT RESILNET_SANITIZE)
  list(TRANSFORM rn_valgrind REPLACE "^valgrind$" "${RESILNET_VALGRIND}")
  foreach(src IN LISTS rn_c_tests)
    get_filename_component(name "${src}" NAME_WE)
    if(name IN_LIST RESILNET_VALGRIND_SKIP)
      continue()
    endif()
    if(NOT RESILNET_VALGRIND_PER_CASE)
      add_test(NAME valgrind.core.${name}
               COMMAND ${rn_valgrind} $<TARGET_FILE:${name}>)
      set_tests_properties(valgrind.core.${name} PROPERTIES
        TIMEOUT ${RESILNET_VALGRIND_PROGRAM_TIMEOUT}
        ENVIRONMENT "RN_TEST_WAIT_SCALE=${RESILNET_VALGRIND_WAIT_SCALE}")
      continue()
    endif()
    foreach(case IN LISTS rn_c_cases_${name})
      if("${name}.${case}" IN_LIST RESILNET_VALGRIND_SKIP OR
         "${name}.${case}" IN_LIST rn_valgrind_cold_skip)
        continue()
      endif()
      set(test valgrind.core.${name}.${case})
      math(EXPR timeout
           "${rn_c_timeout_${name}.${case}} * ${RESILNET_VALGRIND_SLOWDOWN}")
      add_test(NAME ${test}
               COMMAND ${rn_valgrind} $<TARGET_FILE:${name}> ${case})
      set_tests_properties(${test} PROPERTIES TIMEOUT ${timeout}
        ENVIRONMENT
          "RN_TEST_WARMUP=1;RN_TEST_WAIT_SCALE=${RESILNET_VALGRIND_WAIT_SCALE}")
    endforeach()
  endforeach()
endif()

# ---------------------------------------------------------------------------
# busted specs, once per Lua the module was built for.

function(resilnet_lua_test_name tag out)
  if(tag STREQUAL "jit")
    set(${out} luajit PARENT_SCOPE)
  else()
    set(${out} lua${tag} PARENT_SCOPE)
  endif()
endfunction()

# Lua paths for the specs and for any Lua child process a spec starts:
# the repo's lua/ and this build's module, then the interpreter's defaults
# (";;"), where busted itself lives. ";" is escaped: ENVIRONMENT is a list.
function(resilnet_lua_env tag out)
  set(lpath "${CMAKE_SOURCE_DIR}/lua/?.lua\;${CMAKE_SOURCE_DIR}/lua/?/init.lua\;\;")
  set(cpath "${CMAKE_BINARY_DIR}/lua/${tag}/?.so\;\;")
  set(${out} "LUA_PATH=${lpath}" "LUA_CPATH=${cpath}"
             "RESILNET_TEST_LUA=${RESILNET_LUA_EXE_${tag}}" ${rn_lua_env}
      PARENT_SCOPE)
endfunction()

file(GLOB rn_specs CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/spec/*_spec.lua")
set(RESILNET_SCALE_LUA_TAGS "5.4;jit" CACHE STRING
    "Lua versions (as in RESILNET_LUA_VERSIONS) that run spec/scale_spec.lua")
# Fault specs start server processes and inject real faults (kills, resets,
# restarts, outages); each takes tens of seconds. What they test lives in
# the C core, the same for every Lua, and the binding and facade they use
# are covered on every Lua by the other specs: they run, one test each, on
# the Luas below only.
set(RESILNET_FAULT_SPECS
    budget chaos examples freeze recovery redis_incr restart retry_table rnp
    rnp_redis_store sentinel tls transaction
    CACHE STRING "spec/<name>_spec.lua run only on RESILNET_FAULT_LUA_TAGS")
set(RESILNET_FAULT_LUA_TAGS "5.4;jit" CACHE STRING
    "Lua versions (as in RESILNET_LUA_VERSIONS) that run the fault specs")
# The packet-drop blackhole (docs/harness.md) needs root, network
# namespaces and iptables or nft; where it cannot have them it prints why
# and CTest counts it as skipped. Like the fault specs, on these Luas only.
set(RESILNET_BLACKHOLE_LUA_TAGS "5.4" CACHE STRING
    "Lua versions (as in RESILNET_LUA_VERSIONS) that run spec/blackhole_netns_spec.lua")
set(rn_quick_specs "")
set(rn_fault_specs "")
foreach(file IN LISTS rn_specs)
  get_filename_component(base "${file}" NAME)
  string(REGEX REPLACE "_spec\\.lua$" "" name "${base}")
  if(name STREQUAL "scale" OR name STREQUAL "blackhole_netns" OR
     name STREQUAL "hostile")
    continue()
  elseif(name IN_LIST RESILNET_FAULT_SPECS)
    list(APPEND rn_fault_specs "${name}")
  else()
    list(APPEND rn_quick_specs "spec/${base}")
  endif()
endforeach()
find_program(RESILNET_BUSTED NAMES busted)
if(rn_specs AND NOT RESILNET_BUSTED)
  message(WARNING "busted not found: the specs are not registered")
elseif(rn_specs)
  # Run busted's Lua script under the chosen interpreter directly: its own
  # --lua=X re-executes itself through a shell, unquoted.
  file(STRINGS "${RESILNET_BUSTED}" rn_busted_shebang LIMIT_COUNT 1)
  foreach(tag IN LISTS RESILNET_LUA_TAGS)
    if(NOT RESILNET_LUA_EXE_${tag})
      continue()
    endif()
    if(rn_busted_shebang MATCHES "lua")
      set(cmd "${RESILNET_LUA_EXE_${tag}}" "${RESILNET_BUSTED}")
    else() # a LuaRocks shell wrapper
      set(cmd "${RESILNET_BUSTED}" "--lua=${RESILNET_LUA_EXE_${tag}}")
    endif()
    resilnet_lua_test_name(${tag} lua_name)
    resilnet_lua_env(${tag} env)
    set(busted_args --output=plainTerminal --verbose
        "--lpath=${CMAKE_SOURCE_DIR}/lua/?.lua"
        "--cpath=${CMAKE_BINARY_DIR}/lua/${tag}/?.so")
    add_test(NAME ${rn_prefix}spec.${lua_name}
             COMMAND ${cmd} ${busted_args} ${rn_quick_specs}
             WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}")
    set_tests_properties(${rn_prefix}spec.${lua_name} PROPERTIES
      TIMEOUT ${RESILNET_SPEC_TIMEOUT} ENVIRONMENT "${env}")
    if(tag IN_LIST RESILNET_FAULT_LUA_TAGS)
      foreach(name IN LISTS rn_fault_specs)
        add_test(NAME ${rn_prefix}spec-fault.${name}.${lua_name}
                 COMMAND ${cmd} ${busted_args} spec/${name}_spec.lua
                 WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}")
        set_tests_properties(${rn_prefix}spec-fault.${name}.${lua_name}
          PROPERTIES TIMEOUT ${RESILNET_SPEC_TIMEOUT} ENVIRONMENT "${env}")
      endforeach()
    endif()
    # The scale spec runs on its own: it holds 1,000 connections (and a
    # server child holding 1,000 more) for 10 s, with 10,000 heartbeats a
    # second, so it runs alone (RUN_SERIAL) to neither skew nor be skewed
    # by the timing bounds of the other specs. What it measures lives in
    # the C core, which is the same for every Lua (the binding and facade
    # are covered on each by the spec run above): by default it runs on
    # the newest PUC Lua and on LuaJIT, about 13 s each.
    if(tag IN_LIST RESILNET_SCALE_LUA_TAGS)
      add_test(NAME ${rn_prefix}spec-scale.${lua_name}
               COMMAND ${cmd} ${busted_args} spec/scale_spec.lua
               WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}")
      set_tests_properties(${rn_prefix}spec-scale.${lua_name} PROPERTIES
        TIMEOUT ${RESILNET_SCALE_TIMEOUT} ENVIRONMENT "${env}"
        RUN_SERIAL TRUE)
    endif()
    # The hostile-client spec (issue 15) asserts a latency percentile while
    # child processes attack the server: alone too (RUN_SERIAL), on the
    # fault specs' Luas, about 10 s each.
    if(tag IN_LIST RESILNET_FAULT_LUA_TAGS)
      add_test(NAME ${rn_prefix}spec-hostile.${lua_name}
               COMMAND ${cmd} ${busted_args} spec/hostile_spec.lua
               WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}")
      set_tests_properties(${rn_prefix}spec-hostile.${lua_name} PROPERTIES
        TIMEOUT ${RESILNET_SPEC_TIMEOUT} ENVIRONMENT "${env}"
        RUN_SERIAL TRUE)
    endif()
    if(tag IN_LIST RESILNET_BLACKHOLE_LUA_TAGS)
      add_test(NAME ${rn_prefix}spec-fault.blackhole_netns.${lua_name}
               COMMAND ${cmd} ${busted_args} spec/blackhole_netns_spec.lua
               WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}")
      set_tests_properties(${rn_prefix}spec-fault.blackhole_netns.${lua_name}
        PROPERTIES TIMEOUT ${RESILNET_SPEC_TIMEOUT} ENVIRONMENT "${env}"
        SKIP_REGULAR_EXPRESSION "\\[blackhole_netns\\] skipped:")
    endif()
  endforeach()
endif()

# ---------------------------------------------------------------------------
# LuaRocks: pack the release rock and install it offline into a temp tree
# (tools/test-luarocks.sh), for the oldest and newest Lua. Not sanitized:
# LuaRocks builds its own module.

find_program(RESILNET_LUAROCKS NAMES luarocks)
if(RESILNET_LUAROCKS AND NOT RESILNET_SANITIZE)
  foreach(tag 5.1 5.4)
    if(tag IN_LIST RESILNET_LUA_TAGS AND RESILNET_LUA_EXE_${tag})
      add_test(NAME luarocks.lua${tag}
               COMMAND "${CMAKE_SOURCE_DIR}/tools/test-luarocks.sh" ${tag})
      set_tests_properties(luarocks.lua${tag} PROPERTIES
        TIMEOUT ${RESILNET_LUAROCKS_TIMEOUT})
    endif()
  endforeach()
endif()

include(ResilnetExamples)  # examples/ as tests (cmake/ResilnetExamples.cmake)

# ---------------------------------------------------------------------------
# Tests with TLS (issue 17: the filter, servers, rnp authentication by
# client certificate): the certificates are made at test time, by the first
# test that needs them (core/test/tls_certs.h), into the build dir.
foreach(rn_tls_test test-tls-filter test-tls-server test-rnp-auth
                    test-tls-pool)
  if(TARGET ${rn_tls_test})
    target_compile_definitions(${rn_tls_test} PRIVATE
      "RN_TLS_CERTS_SCRIPT=\"${CMAKE_SOURCE_DIR}/tools/make-test-certs.sh\""
      "RN_TLS_CERTS_DIR=\"${CMAKE_BINARY_DIR}/tls-certs\"")
  endif()
endforeach()

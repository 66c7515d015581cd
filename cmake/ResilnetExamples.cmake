# The examples in examples/ run as CTest tests, so they stay true as the
# code changes. Included from ResilnetTests.cmake (uses its rn_prefix,
# rn_c_env and resilnet_lua_env()). Names:
#   example.c_client             examples/c_client.c, built and run
#   valgrind.example.c_client    the same under memcheck
#   example.<name>.lua5.4        examples/<name>.lua under Lua 5.4
# Each must exit 0; the examples check their own outcome (every call
# answered, a retried INCR ran once, ...) and exit 1 otherwise.

set(RESILNET_EXAMPLE_TIMEOUT 60 CACHE STRING "Seconds allowed per example")

# The C API inside the program's own uv loop, against an in-process server.
add_executable(example-c-client "${CMAKE_SOURCE_DIR}/examples/c_client.c")
target_link_libraries(example-c-client PRIVATE resilnet_core)
set_target_properties(example-c-client PROPERTIES
  RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/examples")
add_test(NAME ${rn_prefix}example.c_client COMMAND example-c-client)
set_tests_properties(${rn_prefix}example.c_client PROPERTIES
  TIMEOUT ${RESILNET_EXAMPLE_TIMEOUT} ENVIRONMENT "${rn_c_env}")
if(RESILNET_VALGRIND AND NOT RESILNET_SANITIZE)
  add_test(NAME valgrind.example.c_client
           COMMAND ${RESILNET_VALGRIND} -q --error-exitcode=99
                   --leak-check=full --errors-for-leak-kinds=definite,indirect
                   $<TARGET_FILE:example-c-client>)
  set_tests_properties(valgrind.example.c_client PROPERTIES
    TIMEOUT ${RESILNET_EXAMPLE_TIMEOUT})
endif()

# Lua examples that run to completion on their own. Listed, not globbed:
# some examples are servers that run until stopped, or need a partner.
# Add a new example's name here. redis_pool needs redis-server in PATH
# (make test installs it); without it the example fails, as the redis
# specs do.
set(RESILNET_LUA_EXAMPLES redis_pool custom_policy)
set(RESILNET_EXAMPLE_LUA_TAG 5.4 CACHE STRING
    "Lua (as in RESILNET_LUA_VERSIONS) the Lua examples run under")

set(tag ${RESILNET_EXAMPLE_LUA_TAG})
if(tag IN_LIST RESILNET_LUA_TAGS AND RESILNET_LUA_EXE_${tag})
  resilnet_lua_test_name(${tag} lua_name)
  resilnet_lua_env(${tag} env)
  foreach(name IN LISTS RESILNET_LUA_EXAMPLES)
    add_test(NAME ${rn_prefix}example.${name}.${lua_name}
             COMMAND "${RESILNET_LUA_EXE_${tag}}"
                     "${CMAKE_SOURCE_DIR}/examples/${name}.lua"
             WORKING_DIRECTORY "${CMAKE_SOURCE_DIR}")
    set_tests_properties(${rn_prefix}example.${name}.${lua_name} PROPERTIES
      TIMEOUT ${RESILNET_EXAMPLE_TIMEOUT} ENVIRONMENT "${env}")
  endforeach()
else()
  message(STATUS "resilnet: no Lua ${tag} module: the Lua examples are not "
                 "registered as tests")
endif()

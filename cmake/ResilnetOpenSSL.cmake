# OpenSSL 3 from the system (Debian: libssl-dev), for TLS (issue 17): the
# interface target resilnet_tls. Optional: without it the core still
# builds, and asking for TLS fails with RN_ENOTLS at run time.
#
#   RESILNET_TLS  AUTO (default: use OpenSSL if found), ON (required), OFF

set(RESILNET_TLS AUTO CACHE STRING "TLS with OpenSSL 3: AUTO, ON or OFF")
set_property(CACHE RESILNET_TLS PROPERTY STRINGS AUTO ON OFF)

add_library(resilnet_tls INTERFACE)
set(RESILNET_HAVE_TLS OFF)

if(NOT RESILNET_TLS STREQUAL "OFF")
  if(RESILNET_TLS STREQUAL "ON")
    find_package(OpenSSL 3.0 REQUIRED)
  else()
    find_package(OpenSSL 3.0 QUIET)
  endif()
  if(OPENSSL_FOUND)
    set(RESILNET_HAVE_TLS ON)
    target_link_libraries(resilnet_tls INTERFACE OpenSSL::SSL OpenSSL::Crypto)
    target_compile_definitions(resilnet_tls INTERFACE RESILNET_HAVE_TLS=1)
    message(STATUS "resilnet: TLS with OpenSSL ${OPENSSL_VERSION}")
  endif()
endif()
if(NOT RESILNET_HAVE_TLS)
  message(STATUS "resilnet: no TLS (OpenSSL 3 not found or RESILNET_TLS=OFF; "
                 "install libssl-dev)")
endif()

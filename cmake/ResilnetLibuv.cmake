# libuv from the system (never vendored): the interface target resilnet_uv.
# When LuaRocks found libuv (the rockspec's external_dependencies) it passes
# LIBUV_INCDIR and LIBUV_LIBDIR: use exactly that one. Otherwise pkg-config,
# then a plain search.

add_library(resilnet_uv INTERFACE)

if(NOT LIBUV_INCDIR AND NOT LIBUV_LIBDIR)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    # Prefix UV, not LIBUV: pkg_check_modules would set LIBUV_LIBDIR itself.
    pkg_check_modules(UV QUIET IMPORTED_TARGET libuv)
  endif()
endif()

if(UV_FOUND)
  target_link_libraries(resilnet_uv INTERFACE PkgConfig::UV)
  message(STATUS "resilnet: libuv ${UV_VERSION} (pkg-config)")
else()
  find_path(RESILNET_UV_INCLUDE_DIR uv.h HINTS "${LIBUV_INCDIR}")
  find_library(RESILNET_UV_LIBRARY uv HINTS "${LIBUV_LIBDIR}")
  if(NOT RESILNET_UV_INCLUDE_DIR OR NOT RESILNET_UV_LIBRARY)
    message(FATAL_ERROR "libuv not found: install libuv1-dev "
                        "(tools/install-deps.sh) or set LIBUV_INCDIR/LIBUV_LIBDIR")
  endif()
  target_include_directories(resilnet_uv SYSTEM INTERFACE "${RESILNET_UV_INCLUDE_DIR}")
  target_link_libraries(resilnet_uv INTERFACE "${RESILNET_UV_LIBRARY}")
  message(STATUS "resilnet: libuv ${RESILNET_UV_LIBRARY}")
endif()

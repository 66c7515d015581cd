# Finding Lua headers/interpreters and building resilnet/core.so per Lua.
#
# A Lua is named by a tag: 5.1, 5.2, 5.3, 5.4 or jit. The module is never
# linked against liblua: the interpreter that loads it provides the Lua
# symbols (the module stays loadable by a static lua binary, and cannot drag a
# second Lua runtime into the process).

set(RESILNET_LUA_ALL_TAGS 5.1 5.2 5.3 5.4 jit)

# The Lua ABI directory name a tag installs into (LuaJIT speaks 5.1).
function(resilnet_lua_abi tag out)
  if(tag STREQUAL "jit")
    set(${out} 5.1 PARENT_SCOPE)
  else()
    set(${out} ${tag} PARENT_SCOPE)
  endif()
endfunction()

# The tag of the Lua whose headers are in incdir, or "" if they are not Lua's.
function(resilnet_lua_header_tag incdir out)
  set(${out} "" PARENT_SCOPE)
  if(EXISTS "${incdir}/luajit.h")
    set(${out} jit PARENT_SCOPE)
  elseif(EXISTS "${incdir}/lua.h")
    file(STRINGS "${incdir}/lua.h" line
         REGEX "^#define[ \t]+LUA_VERSION_NUM[ \t]+[0-9]+")
    if(line MATCHES "([0-9])0([0-9])[ \t]*$")
      set(${out} "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}" PARENT_SCOPE)
    endif()
  endif()
endfunction()

# Sets, in the caller's scope, RESILNET_LUA_TAGS (the Luas to build for),
# and caches RESILNET_LUA_INCDIR_<tag> and RESILNET_LUA_EXE_<tag> (the
# interpreter, for tests; may be NOTFOUND).
function(resilnet_find_lua)
  set(tags "")
  if(RESILNET_LUA_INCDIR)
    resilnet_lua_header_tag("${RESILNET_LUA_INCDIR}" tag)
    if(NOT tag)
      message(FATAL_ERROR "RESILNET_LUA_INCDIR=${RESILNET_LUA_INCDIR}: no lua.h")
    endif()
    set(RESILNET_LUA_INCDIR_${tag} "${RESILNET_LUA_INCDIR}" CACHE PATH "" FORCE)
    set(tags ${tag})
    set(required ${tag})
  else()
    set(required ${RESILNET_LUA_VERSIONS})
    foreach(tag IN LISTS required)
      if(NOT tag IN_LIST RESILNET_LUA_ALL_TAGS)
        message(FATAL_ERROR "RESILNET_LUA_VERSIONS: unknown '${tag}' "
                            "(known: ${RESILNET_LUA_ALL_TAGS})")
      endif()
    endforeach()
    set(wanted ${required})
    if(NOT wanted)
      set(wanted ${RESILNET_LUA_ALL_TAGS})
    endif()
    foreach(tag IN LISTS wanted)
      if(tag STREQUAL "jit")
        set(suffixes include/luajit-2.1 include/luajit-2.0)
      else()
        string(REPLACE "." "" nodot ${tag})
        set(suffixes include/lua${tag} include/lua-${tag} include/lua${nodot}
                     include/lua/${tag})
      endif()
      # Only versioned dirs: a bare include/lua.h may be any version.
      find_path(RESILNET_LUA_INCDIR_${tag} lua.h
                PATHS ${CMAKE_SYSTEM_PREFIX_PATH} PATH_SUFFIXES ${suffixes}
                NO_DEFAULT_PATH)
      resilnet_lua_header_tag("${RESILNET_LUA_INCDIR_${tag}}" found)
      if(found STREQUAL tag)
        list(APPEND tags ${tag})
      elseif(tag IN_LIST required)
        message(FATAL_ERROR "Lua ${tag} headers not found "
                            "(tools/install-deps.sh installs them)")
      endif()
    endforeach()
  endif()

  foreach(tag IN LISTS tags)
    if(tag STREQUAL "jit")
      find_program(RESILNET_LUA_EXE_${tag} NAMES luajit)
    else()
      string(REPLACE "." "" nodot ${tag})
      find_program(RESILNET_LUA_EXE_${tag} NAMES lua${tag} lua${nodot} lua-${tag})
    endif()
    message(STATUS "resilnet: Lua ${tag}: ${RESILNET_LUA_INCDIR_${tag}} "
                   "(interpreter: ${RESILNET_LUA_EXE_${tag}})")
  endforeach()
  if(NOT tags)
    message(WARNING "no Lua headers found: only the C core is built")
  endif()
  set(RESILNET_LUA_TAGS ${tags} PARENT_SCOPE)
endfunction()

# Export nothing but luaopen_*: the core's rn_* symbols stay inside the
# module, so two copies of resilnet (or another library's rn_ names) in one
# process cannot interpose on each other.
set(RESILNET_MODULE_MAP "${CMAKE_BINARY_DIR}/resilnet-module.map")
file(WRITE "${RESILNET_MODULE_MAP}" "{ global: luaopen_*; local: *; };\n")

# Target resilnet_lua_<tag>: <build>/lua/<tag>/resilnet/core.so.
function(resilnet_add_lua_module tag)
  set(target resilnet_lua_${tag})
  add_library(${target} MODULE ${RESILNET_LUA_SOURCES})
  target_include_directories(${target} SYSTEM PRIVATE "${RESILNET_LUA_INCDIR_${tag}}")
  # dladdr (lua/src/loop.c) is in libc from glibc 2.34 on, in libdl before.
  target_link_libraries(${target} PRIVATE resilnet_core ${CMAKE_DL_LIBS})
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    OUTPUT_NAME core
    SUFFIX ".so"
    LIBRARY_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/lua/${tag}/resilnet")
  if(NOT APPLE)
    # nodelete: lua_close() dlclose()s C modules; keeping the code mapped
    # lets LeakSanitizer name the functions that leaked at exit (instead of
    # "<unknown module>") and keeps code alive that libuv threads may run.
    target_link_options(${target} PRIVATE
                        "LINKER:--version-script=${RESILNET_MODULE_MAP}"
                        "LINKER:-z,nodelete")
    set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS "${RESILNET_MODULE_MAP}")
  else()
    # macOS: Lua symbols resolve when the interpreter loads the module.
    target_link_options(${target} PRIVATE "LINKER:-undefined,dynamic_lookup")
  endif()
endfunction()

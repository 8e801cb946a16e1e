# The engine's modules, each a target of its own that sees only what it may use.
#
# buzzer_module(NAME name [USES module...] [STORE_INTERFACE] [BEAST] [SQLITE]
#               [LINKS target...] [SOURCES extra...] [EXCLUDE regex])
#
# Builds the static library buzzer_<name> from src/<name>/**/*.cpp, less the files whose path
# matches EXCLUDE. Its sources include
# "<name>/..." and "<used>/..." headers only: the include root of the target is a generated
# directory of links to those module folders (with STORE_INTERFACE, to the store's interface
# alone: store.hpp and libraries.hpp), so an include of another module, of the store's backend
# or one that points up does not compile. Beast and sqlite3.h are shadowed by headers that stop
# the build unless BEAST or SQLITE is given. Every module sees include/ (the public embedding
# API) and core.
set(BUZZER_MODULE_ROOT ${PROJECT_BINARY_DIR}/modules)

# Headers that stop the build, in place of every Beast header and of sqlite3.h.
function(buzzer_make_forbidden_headers)
  get_target_property(boost_dirs Boost::headers INTERFACE_INCLUDE_DIRECTORIES)
  set(beast_root ${BUZZER_MODULE_ROOT}/forbidden/beast)
  set(sqlite_root ${BUZZER_MODULE_ROOT}/forbidden/sqlite)
  foreach(dir IN LISTS boost_dirs)
    file(GLOB_RECURSE beast_headers RELATIVE ${dir} ${dir}/boost/beast/*.hpp ${dir}/boost/beast/*.ipp)
    list(APPEND beast_headers boost/beast.hpp)
    foreach(h IN LISTS beast_headers)
      if(NOT EXISTS ${beast_root}/${h})
        file(WRITE ${beast_root}/${h}
             "#error \"Beast is for src/http/ only: this module speaks http/message.hpp\"\n")
      endif()
    endforeach()
  endforeach()
  if(NOT EXISTS ${sqlite_root}/sqlite3.h)
    file(WRITE ${sqlite_root}/sqlite3.h
         "#error \"sqlite3.h is for src/store/sqlite/ only: use the interface store/store.hpp\"\n")
  endif()
endfunction()
buzzer_make_forbidden_headers()

function(buzzer_module)
  cmake_parse_arguments(PARSE_ARGV 0 arg "STORE_INTERFACE;BEAST;SQLITE" "NAME;EXCLUDE"
                        "USES;LINKS;SOURCES;PCH")
  set(target buzzer_${arg_NAME})
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${arg_NAME}/*.cpp)
  if(arg_EXCLUDE)
    list(FILTER sources EXCLUDE REGEX "${arg_EXCLUDE}")
  endif()
  add_library(${target} STATIC ${sources} ${arg_SOURCES})

  # The include root: links to the module itself, core and what it uses.
  set(root ${BUZZER_MODULE_ROOT}/${arg_NAME})
  file(REMOVE_RECURSE ${root})
  file(MAKE_DIRECTORY ${root})
  foreach(m IN LISTS arg_NAME arg_USES ITEMS core)
    if(NOT EXISTS ${root}/${m})
      file(CREATE_LINK ${PROJECT_SOURCE_DIR}/src/${m} ${root}/${m} SYMBOLIC)
    endif()
  endforeach()
  if(arg_STORE_INTERFACE)
    target_link_libraries(${target} PUBLIC buzzer_store)
    file(MAKE_DIRECTORY ${root}/store)
    foreach(header store.hpp libraries.hpp)
      file(CREATE_LINK ${PROJECT_SOURCE_DIR}/src/store/${header} ${root}/store/${header} SYMBOLIC)
    endforeach()
  endif()
  target_include_directories(${target} PRIVATE ${root})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR}/include)
  if(NOT arg_BEAST)
    target_include_directories(${target} BEFORE PRIVATE ${BUZZER_MODULE_ROOT}/forbidden/beast)
  endif()
  if(NOT arg_SQLITE)
    target_include_directories(${target} BEFORE PRIVATE ${BUZZER_MODULE_ROOT}/forbidden/sqlite)
  endif()

  foreach(m IN LISTS arg_USES)
    target_link_libraries(${target} PUBLIC buzzer_${m})
  endforeach()
  if(NOT arg_NAME STREQUAL "core")
    target_link_libraries(${target} PUBLIC buzzer_core)
  endif()
  target_link_libraries(${target} PUBLIC ${arg_LINKS})
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(arg_PCH)
    target_precompile_headers(${target} PRIVATE ${arg_PCH})
  endif()
endfunction()

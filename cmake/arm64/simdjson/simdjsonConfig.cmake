# simdjson for the arm64 cross build (cmake/aarch64-linux-gnu.cmake): the
# arm64 library of libsimdjson14:arm64 with the headers of the host's
# libsimdjson-dev, which are the same on every architecture. /usr/include is on
# the cross compiler's own search path, so the target adds none (an -isystem
# /usr/include would reorder it before the C++ headers).
find_path(SIMDJSON_ARM64_INCLUDE_DIR simdjson.h PATHS /usr/include NO_CMAKE_FIND_ROOT_PATH)
find_file(SIMDJSON_ARM64_LIBRARY libsimdjson.so.14 PATHS /usr/lib/aarch64-linux-gnu
          NO_CMAKE_FIND_ROOT_PATH)
if(NOT SIMDJSON_ARM64_INCLUDE_DIR OR NOT SIMDJSON_ARM64_LIBRARY)
  set(simdjson_FOUND FALSE)
  set(simdjson_NOT_FOUND_MESSAGE
      "needs libsimdjson-dev and libsimdjson14:arm64: run scripts/bootstrap.sh arm64")
  return()
endif()
if(NOT TARGET simdjson::simdjson)
  add_library(simdjson::simdjson SHARED IMPORTED)
  set_target_properties(simdjson::simdjson PROPERTIES
    IMPORTED_LOCATION "${SIMDJSON_ARM64_LIBRARY}")
endif()
set(simdjson_FOUND TRUE)

# Cross-compiles perch for 64-bit Arm Linux with Debian's g++-aarch64-linux-gnu
# against the arm64 libraries of Debian's multiarch packages
# (scripts/bootstrap.sh arm64 installs both). `make build ARCH=arm64` uses it;
# see docs/install.md.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(PKG_CONFIG_EXECUTABLE aarch64-linux-gnu-pkg-config CACHE FILEPATH "")

# Libraries and CMake packages come from /usr/lib/aarch64-linux-gnu; programs
# (protoc, grpc_cpp_plugin) are the host's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)

# Test discovery and CTest run the arm64 binaries through user-mode qemu.
# The arm64 loader and libraries sit where multiarch installs them, so qemu
# needs no sysroot.
find_program(PERCH_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64)
if(PERCH_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${PERCH_QEMU_AARCH64}")
endif()

# libsimdjson-dev cannot be installed for two architectures at once: the
# arm64 library with the host's headers (cmake/arm64/simdjson).
set(simdjson_DIR "${CMAKE_CURRENT_LIST_DIR}/arm64/simdjson" CACHE PATH "")

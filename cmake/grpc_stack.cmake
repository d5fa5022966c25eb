# perch_grpc_stack: gRPC++, protobuf and the libraries under them, for perch_proto.
#
# Debian builds gRPC, protobuf and abseil as about 50 shared libraries (abseil
# alone is 40 of them). The dynamic loader resolved their ~9,500 symbol
# relocations at every start of perch, whatever the command: about half of the
# CPU time of `perch --version` (bench/RESULTS.md, "Cold start (session 8)").
# Their -dev packages also ship static archives built position-independent, so
# by default perch links those and the linker resolves the symbols once, at
# build time. OpenSSL and zlib stay shared: perch links them anyway.
option(PERCH_STATIC_GRPC
       "Link gRPC, protobuf and abseil from their static archives (faster process start)" ON)

add_library(perch_grpc_stack INTERFACE)
if(NOT PERCH_STATIC_GRPC)
  target_link_libraries(perch_grpc_stack INTERFACE gRPC::grpc++ protobuf::libprotobuf)
  return()
endif()

# pkg-config --static lists every library gRPC++ and protobuf need, in link order.
pkg_check_modules(PERCH_GRPC_STACK REQUIRED grpc++ protobuf)
set(shared_libraries ssl crypto z dl pthread atomic rt m)
set(archives "")
foreach(name IN LISTS PERCH_GRPC_STACK_STATIC_LIBRARIES)
  if(name IN_LIST shared_libraries)
    continue()
  endif()
  find_library(PERCH_ARCHIVE_${name} NAMES lib${name}.a)
  if(NOT PERCH_ARCHIVE_${name})
    message(FATAL_ERROR "lib${name}.a not found: install the -dev package that ships it "
                        "(scripts/bootstrap.sh) or configure with -DPERCH_STATIC_GRPC=OFF")
  endif()
  list(APPEND archives "${PERCH_ARCHIVE_${name}}")
endforeach()
list(REMOVE_DUPLICATES archives)

# The archives refer to each other in cycles (abseil), so the linker rescans
# them as one group instead of relying on pkg-config's repetitions.
target_link_libraries(perch_grpc_stack INTERFACE
  "$<LINK_GROUP:RESCAN,${archives}>"
  OpenSSL::SSL OpenSSL::Crypto ZLIB::ZLIB Threads::Threads ${CMAKE_DL_LIBS} rt
  # Some targets need libatomic for 64-bit atomics; where none are needed it is not linked.
  "-Wl,--push-state,--as-needed" atomic "-Wl,--pop-state")
target_include_directories(perch_grpc_stack SYSTEM INTERFACE
  "$<TARGET_PROPERTY:gRPC::grpc++,INTERFACE_INCLUDE_DIRECTORIES>"
  "$<TARGET_PROPERTY:protobuf::libprotobuf,INTERFACE_INCLUDE_DIRECTORIES>")

# CMake toolchain: 64-bit ARM Linux with Debian's cross compiler (g++-aarch64-linux-gnu) and the arm64 zlib
# (zlib1g-dev:arm64); programs and tests run under qemu-user. Used by tools/setup/cross_check.sh.
set(SSMTUNE_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(SSMTUNE_CROSS_QEMU qemu-aarch64)
set(SSMTUNE_CROSS_MULTIARCH /usr/lib/aarch64-linux-gnu)  # Debian's multiarch library folder
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)

# CMake toolchain: 32-bit x86 Linux with Debian's cross compiler (g++-i686-linux-gnu) and the i386 zlib
# (zlib1g-dev:i386); programs and tests run under qemu-user (the kernel here may not run 32-bit programs itself).
# Used by tools/setup/cross_check.sh.
set(SSMTUNE_CROSS_TRIPLE i686-linux-gnu)
set(CMAKE_SYSTEM_PROCESSOR i686)
set(SSMTUNE_CROSS_QEMU qemu-i386)
set(SSMTUNE_CROSS_MULTIARCH /usr/lib/i386-linux-gnu)  # Debian's multiarch library folder
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)

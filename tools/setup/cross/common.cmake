# The part of the cross toolchains that is the same for every target (included by <triple>.cmake): Debian's
# /usr/<triple> sysroot and multiarch library folder; header-only dependencies (Eigen, nlohmann/json, doctest)
# come from the build machine's /usr/include; ctest runs the target's programs through qemu-user.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${SSMTUNE_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${SSMTUNE_CROSS_TRIPLE}-g++)
set(CMAKE_FIND_ROOT_PATH /usr/${SSMTUNE_CROSS_TRIPLE} ${SSMTUNE_CROSS_MULTIARCH})
set(CMAKE_LIBRARY_PATH ${SSMTUNE_CROSS_MULTIARCH})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
set(CMAKE_CROSSCOMPILING_EMULATOR ${SSMTUNE_CROSS_QEMU};-L;/usr/${SSMTUNE_CROSS_TRIPLE})

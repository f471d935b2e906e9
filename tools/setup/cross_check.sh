#!/usr/bin/env bash
# Builds ssmtune for another CPU with Debian's cross compiler and runs its test suite there under qemu-user: the
# check for people who port it. TARGET is aarch64 (64-bit ARM: unsigned char, weak memory order, FMA contraction by
# default) or i686 (32-bit x86: 32-bit size_t and pointers, and Debian's i686 default of x87 floating point with its
# 80-bit intermediates). The build is CPU-only and Release, in ./build-cross-TARGET, with
# tools/setup/cross/TARGET-linux-gnu.cmake; the tests run on one OpenMP thread (qemu 7.2's user mode hangs in threaded
# programs here; see tests/CMakeLists.txt), and the consumer-project tests are left out (they would build for this
# machine). The Python checks run the program through the emulator.
# --install first adds the target's Debian architecture and installs the cross compiler, qemu-user and the target's
# zlib (apt; needs root or sudo).
# Usage: bash tools/setup/cross_check.sh aarch64|i686 [--install] [--build-only] [extra ctest arguments]
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${1:-}"
case "$target" in
  aarch64) triple=aarch64-linux-gnu debarch=arm64 qemu=qemu-aarch64 ;;
  i686) triple=i686-linux-gnu debarch=i386 qemu=qemu-i386 ;;
  *) echo "usage: bash tools/setup/cross_check.sh aarch64|i686 [--install] [--build-only] [ctest arguments]" >&2; exit 2 ;;
esac
shift
install=0 build_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --install) install=1; shift ;;
    --build-only) build_only=1; shift ;;
    *) break ;;
  esac
done
if [ "$install" = 1 ]; then
  bash tools/setup/install-deps.sh
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  dpkg --print-foreign-architectures | grep -qx "$debarch" || "${sudo_cmd[@]}" dpkg --add-architecture "$debarch"
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "g++-$triple" qemu-user "zlib1g-dev:$debarch" </dev/null
fi
for tool in "$triple-g++" "$qemu"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "cross_check: $tool not found; fix: rerun with --install" >&2; exit 1; }
done
dir="build-cross-$target"
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSSMTUNE_CUDA=OFF \
      -DCMAKE_TOOLCHAIN_FILE="$PWD/tools/setup/cross/$triple.cmake" >/dev/null
cmake --build "$dir" --parallel "$(nproc)"
[ "$build_only" = 1 ] && exit 0
"$qemu" -L "/usr/$triple" "$dir/tools/ssmtune" --version
ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" "$@"

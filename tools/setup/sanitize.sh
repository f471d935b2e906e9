#!/usr/bin/env bash
# Builds the CPU library, tools and tests with AddressSanitizer + UndefinedBehaviorSanitizer in ./build-asan and
# runs the whole suite through ctest. Any leak, memory error or UB report fails the run (halt_on_error). CUDA is
# off here (the sanitizers check the host code; the GPU tests skip without a GPU anyway).
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSSMTUNE_CUDA=OFF \
      -DSSMTUNE_SANITIZE=address,undefined "$@"
cmake --build build-asan --parallel "$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -E "consumer_"

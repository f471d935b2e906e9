#!/usr/bin/env bash
# The GPU suite without a GPU: configures ./build-emu with SSMTUNE_CUDA_EMULATION=ON (the whole CUDA backend compiled
# as host C++, its kernels run on host fibers — cuda/emulation/host_simt.h; no nvcc needed), builds the GPU test
# executable and runs it. It checks everything the GPU code does except the hardware: the kernels' own code (block
# scans, shuffles, shared memory, launch shapes, index math), the launchers, the ops' device glue, the runtime and
# its caching allocator, models, PEFT and the CLI with --device cuda, each against the CPU. Not timing (nothing here
# says how fast a GPU is) and not races between threads (a block's threads run one at a time).
#   bash tools/setup/emulate_gpu.sh [doctest options, e.g. -tc="*scan*"]
# SANITIZE=address,undefined builds it with the sanitizers (slower). SSMTUNE_EMULATION_SCHEDULE=reverse runs every
# block's threads last-first: a race between them shows as a result that differs from the default order's.
set -euo pipefail
cd "$(dirname "$0")/../.."
extra=()
if [ -n "${SANITIZE:-}" ]; then extra=(-DSSMTUNE_SANITIZE="$SANITIZE" -DCMAKE_BUILD_TYPE=RelWithDebInfo); fi
cmake -S . -B build-emu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSSMTUNE_CUDA_EMULATION=ON "${extra[@]}" >/dev/null
cmake --build build-emu --parallel "$(nproc)" --target ssmtune_gpu_tests
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
start=$(date +%s)
(cd build-emu/tests && ./ssmtune_gpu_tests "$@")
echo "emulated GPU suite: passed in $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in ./build-fuzz and fuzzes each for SECONDS (default 60),
# starting from the seed corpus in tests/fuzz/corpus/<target> plus the inputs that once crashed it,
# tests/fuzz/regressions/<target>_* (copied, so the repository's files are not changed).
# A crash, leak, UB report or non-ssmtune exception fails the run and leaves the input in build-fuzz/crashes/.
# Usage: bash tools/setup/fuzz.sh [SECONDS] [target ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"; shift || true
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(safetensors model_loader adapter_loader idx run_config)
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSSMTUNE_CUDA=OFF -DSSMTUNE_FUZZ=ON \
      -DSSMTUNE_BUILD_TESTS=OFF -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang >/dev/null
cmake --build build-fuzz --parallel "$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}")
mkdir -p build-fuzz/crashes
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  cp -n tests/fuzz/corpus/$t/* "build-fuzz/corpus/$t/" 2>/dev/null || true
  cp -n tests/fuzz/regressions/${t}_* "build-fuzz/corpus/$t/" 2>/dev/null || true
  echo "== fuzz_$t for ${seconds}s"
  ./build-fuzz/tests/fuzz/fuzz_$t "build-fuzz/corpus/$t" -max_total_time="$seconds" -rss_limit_mb=2048 \
      -max_len=65536 -artifact_prefix="build-fuzz/crashes/$t-" -print_final_stats=1 2>&1 | tail -n 40
done

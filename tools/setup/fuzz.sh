#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in ./build-asan — the sanitizer build of
# tools/setup/sanitize.sh, configured by it, so the two scripts share one build of the library — and fuzzes each for
# SECONDS (default 60), starting from the seed corpus in tests/fuzz/corpus/<target> plus the inputs that once crashed
# it, tests/fuzz/regressions/<target>_* (copied, so the repository's files are not changed).
# A crash, leak, UB report or non-ssmtune exception fails the run and leaves the input in build-asan/crashes/.
# Usage: bash tools/setup/fuzz.sh [SECONDS] [target ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"; shift || true
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(safetensors torch_checkpoint model_loader adapter_loader idx run_config)
if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz.sh: libFuzzer needs clang, not found; install it with: bash tools/setup/install-deps.sh --fuzz" >&2
  exit 1
fi
bash tools/setup/sanitize.sh --configure-only
cmake --build build-asan --parallel "$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}")
mkdir -p build-asan/crashes
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in "${targets[@]}"; do
  mkdir -p "build-asan/corpus/$t"
  cp -n tests/fuzz/corpus/$t/* "build-asan/corpus/$t/" 2>/dev/null || true
  cp -n tests/fuzz/regressions/${t}_* "build-asan/corpus/$t/" 2>/dev/null || true
  echo "== fuzz_$t for ${seconds}s"
  ./build-asan/tests/fuzz/fuzz_$t "build-asan/corpus/$t" -max_total_time="$seconds" -rss_limit_mb=2048 \
      -max_len=65536 -artifact_prefix="build-asan/crashes/$t-" -print_final_stats=1 2>&1 | tail -n 40
done

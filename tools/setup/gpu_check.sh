#!/usr/bin/env bash
# The GPU checks in one command, for a machine with an NVIDIA GPU (a session's device run, or any CUDA machine):
# configures ./build-gpu (Release, sm_90 unless CUDA_ARCH says otherwise), builds the GPU test executable and the
# program, runs the GPU suite, then `ssmtune bench --device cuda` (kernels, scan, mamba), each under a time limit,
# and writes everything to ${OUT:-build-gpu}/gpu_report.txt. Exit status: the GPU suite's.
#   bash tools/setup/gpu_check.sh --fetch-deps     on a Debian machine with apt, before going to a GPU machine that has
#       the CUDA Toolkit but not the Debian header packages: downloads libeigen3-dev, nlohmann-json3-dev, doctest-dev
#       and zlib1g-dev and unpacks them into .gpu-deps/ (git-ignored, ~10 MB) to carry along with the tree.
#   bash tools/setup/gpu_check.sh [all|tests|bench]   on the GPU machine (uses .gpu-deps/ when it is there).
set -uo pipefail
cd "$(dirname "$0")/../.."
deps="$PWD/.gpu-deps"
if [ "${1:-}" = "--fetch-deps" ]; then
  rm -rf "$deps" && mkdir -p "$deps/debs" || exit 1
  (cd "$deps/debs" && apt-get download libeigen3-dev nlohmann-json3-dev doctest-dev zlib1g-dev) || exit 1
  for f in "$deps"/debs/*.deb; do dpkg -x "$f" "$deps/root" || exit 1; done
  rm -rf "$deps/debs" "$deps/root/usr/share/doc"
  du -sh "$deps"
  exit 0
fi
what="${1:-all}"
case "$what" in all|tests|bench) ;; *) echo "usage: gpu_check.sh [--fetch-deps | all | tests | bench]" >&2; exit 2 ;; esac
out="${OUT:-build-gpu}"
mkdir -p "$out"
report="$out/gpu_report.txt"
: >"$report"
log() { echo "$@" | tee -a "$report"; }
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
extra=()
if [ -d "$deps/root/usr" ]; then
  extra=(-DCMAKE_PREFIX_PATH="$deps/root/usr" -DZLIB_INCLUDE_DIR="$deps/root/usr/include"
         -DZLIB_LIBRARY="$deps/root/usr/lib/x86_64-linux-gnu/libz.a")
fi
log "== $(date -u '+%F %T') $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
log "== nvcc: $(nvcc --version 2>/dev/null | tail -n 1)"
start=$(date +%s)
if ! cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSSMTUNE_CUDA=ON \
       -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" "${extra[@]}" >>"$report" 2>&1 ||
   ! cmake --build build-gpu --parallel "$(nproc)" --target ssmtune_gpu_tests ssmtune_cli >>"$report" 2>&1; then
  log "== build failed after $(( $(date +%s) - start )) s (the end of the log):"
  tail -n 40 "$report"
  exit 1
fi
log "== built in $(( $(date +%s) - start )) s"
status=0
if [ "$what" != bench ]; then
  log "== GPU suite"
  timeout "${TEST_SECONDS:-300}" ./build-gpu/tests/ssmtune_gpu_tests --duration=true 2>&1 | tee -a "$report"
  status=${PIPESTATUS[0]}
  log "== GPU suite exit status $status"
fi
if [ "$what" != tests ]; then
  for args in "--what kernels" "--what scan --inner 1536 --lengths 512,2048,8192" "--what mamba --steps 3"; do
    log "== ssmtune bench --device cuda $args"
    # shellcheck disable=SC2086
    timeout "${BENCH_SECONDS:-150}" ./build-gpu/tools/ssmtune bench --device cuda $args 2>&1 | tee -a "$report"
  done
fi
exit "$status"

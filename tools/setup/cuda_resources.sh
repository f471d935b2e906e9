#!/usr/bin/env bash
# What each CUDA kernel asks of the GPU, from the compiler alone (no GPU needed): ptxas's registers per thread,
# static shared memory per block, stack frame and spill bytes, for one architecture, and the warps per SM the
# registers allow (an upper bound on occupancy: 65536 registers per SM, allocated per warp in units of 256; the
# block size and shared memory can lower it further). A kernel that spills, or whose registers × block size exceed
# 65536, shows here before it meets a GPU ("too many resources requested for launch").
#   bash tools/setup/cuda_resources.sh [arch, default 90] [filter, e.g. scan]
# Not here: timing, achieved occupancy, anything that needs the hardware.
set -euo pipefail
cd "$(dirname "$0")/../.."
arch="${1:-90}"
filter="${2:-}"
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
command -v nvcc >/dev/null 2>&1 || { echo "cuda_resources.sh: nvcc not found; fix: install the CUDA Toolkit" >&2; exit 1; }
demangle=cat
if command -v cu++filt >/dev/null 2>&1; then demangle=cu++filt; elif command -v c++filt >/dev/null 2>&1; then demangle=c++filt; fi
echo "ptxas resources per kernel, sm_${arch}, $(nvcc --version | tail -n 1)"
printf '%-44s %5s %7s %6s %7s %9s\n' kernel regs "smem B" "stack" "spill" "warps/SM"
for f in cuda/*.cu; do
    nvcc -DSSMTUNE_WITH_CUDA=1 -I. -O3 -std=c++17 --generate-code="arch=compute_${arch},code=sm_${arch}" \
        -Xptxas -v -x cu -c "$f" -o /dev/null 2>&1 |
        awk '/Function properties for/ { name = $NF }
             /bytes stack frame/ { stack = $1; spill = $5 + $9 }
             /Used [0-9]+ registers/ {
                 regs = 0; smem = 0
                 for (i = 1; i <= NF; ++i) {
                     if ($(i + 1) == "registers,") regs = $i
                     if ($(i + 1) == "bytes" && $(i + 2) == "smem") smem = $i
                 }
                 print name, regs, smem, stack, spill
             }'
done | while read -r name regs smem stack spill; do
    pretty=$(echo "$name" | $demangle | sed -e 's/ssmtune::cuda::(anonymous namespace):://g' -e 's/^void //' -e 's/(.*//')
    if [ -n "$filter" ] && [[ "$pretty" != *"$filter"* ]]; then continue; fi
    per_warp=$(( (regs * 32 + 255) / 256 * 256 ))
    warps=$(( per_warp > 0 ? 65536 / per_warp : 64 ))
    [ "$warps" -gt 64 ] && warps=64
    printf '%-44s %5s %7s %6s %7s %9s\n' "$pretty" "$regs" "$smem" "$stack" "$spill" "$warps"
done | sort -u

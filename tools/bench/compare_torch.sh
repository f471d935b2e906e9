#!/usr/bin/env bash
# Issue 8's speed comparison in one run: the same Mamba LM training step (D=256, 4 layers, E=512, N=16, vocab 256,
# batch 8 x 256 tokens, AdamW, float32) in ssmtune (`ssmtune bench --what mamba`) and in PyTorch
# (tools/bench/mamba_torch.py, Debian's python3-torch), both on the same threads, one after the other, then the
# ratios. The PyTorch half is skipped (with a note) when torch is not installed: apt-get install python3-torch.
# Usage: tools/bench/compare_torch.sh [THREADS] [STEPS]   (defaults: nproc, 3; build first with tools/setup/build.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
threads="${1:-$(nproc)}"
steps="${2:-3}"
bin=./build/tools/ssmtune
[ -x "$bin" ] || { echo "error: $bin not found; fix: run bash tools/setup/build.sh first" >&2; exit 1; }
# Debian's torch lives in the system interpreter, which may not be the first python3 on PATH.
py=/usr/bin/python3
[ -x "$py" ] || py=python3

echo "machine: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; threads used: $threads; $(date -u +%F)"
ours=$(OMP_NUM_THREADS="$threads" "$bin" bench --what mamba --steps "$steps")
echo "$ours"
theirs=$("$py" tools/bench/mamba_torch.py --threads "$threads" --steps "$steps")
echo "pytorch: $theirs"

"$py" - "$ours" "$theirs" <<'EOF'
import json, re, sys
ours, theirs = sys.argv[1], json.loads(sys.argv[2])
ms = float(re.search(r"([\d.]+) ms/step", ours).group(1))
tok = float(re.search(r"([\d.]+) tokens/s", ours).group(1))
rss, rss_over = map(float, re.search(r"peak RSS ([\d.]+) MiB, ([\d.]+) MiB over", ours).groups())
print()
print(f"{'implementation':<22} {'ms/step':>9} {'tokens/s':>9} {'peak RSS MiB':>13} {'over start MiB':>15}")
print(f"{'ssmtune':<22} {ms:9.1f} {tok:9.0f} {rss:13.1f} {rss_over:15.1f}")
if "skipped" in theirs:
    print("pytorch: skipped -", theirs["skipped"])
    sys.exit(0)
print(f"{theirs['impl']:<22} {theirs['ms_per_step']:9.1f} {theirs['tokens_per_s']:9.0f} "
      f"{theirs['peak_rss_mib']:13.1f} {theirs['peak_rss_over_start_mib']:15.1f}")
print(f"ratio ssmtune/pytorch: tokens/s {tok / theirs['tokens_per_s']:.2f}x, peak RSS "
      f"{rss / theirs['peak_rss_mib']:.2f}, peak RSS over start {rss_over / theirs['peak_rss_over_start_mib']:.2f}")
EOF

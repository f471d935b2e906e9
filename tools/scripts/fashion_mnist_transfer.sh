#!/usr/bin/env bash
# PEFT transfer on Fashion-MNIST (row order): an S4D classifier trained on classes 0–4 is adapted to classes 5–9
# (renumbered 0–4) with several PEFT methods through `ssmtune finetune`; prints one line per method.
# Usage: bash tools/scripts/fashion_mnist_transfer.sh [OUT_DIR] [BASE_STEPS] [FINETUNE_STEPS]
set -euo pipefail
out="${1:-runs/fmnist_transfer}"; base_steps="${2:-400}"; ft_steps="${3:-200}"
bin="$(dirname "$0")/../../build/tools/ssmtune"
cfg="$(dirname "$0")/../configs/s4d_fashion_mnist_rows.json"
common="train.batch_size=64,train.eval_every=0,data.order=row"
[ -f "$out/base/model/model.safetensors" ] ||
  "$bin" train --config "$cfg" --steps "$base_steps" --set "$common,data.classes=[0,1,2,3,4]" --out "$out/base" --quiet
echo "base (classes 0-4): $(tail -n1 "$out/base/metrics.jsonl")"
for spec in 'FULL|{"peft_type":"FULL"}|1e-3' \
            'LORA r=4 (output_linear, decoder)|{"peft_type":"LORA","r":4,"lora_alpha":8}|4e-3' \
            'STATE_OFFSET y|{"peft_type":"STATE_OFFSET","variant":"y"}|1e-2' \
            'STATE_OFFSET h|{"peft_type":"STATE_OFFSET","variant":"h"}|1e-2' \
            'INITIAL_STATE|{"peft_type":"INITIAL_STATE"}|1e-2' \
            'BITFIT|{"peft_type":"BITFIT"}|1e-2' \
            'SURM circulant|{"peft_type":"SURM","target_modules":["output_linear.0","decoder"]}|1e-2'; do
  IFS='|' read -r name peft lr <<< "$spec"
  dir="$out/$(echo "$name" | tr ' =(),' '_____')"
  mkdir -p "$dir"
  "$bin" finetune --config "$cfg" --model "$out/base/model" --peft "$peft" --steps "$ft_steps" --lr "$lr" \
      --set "$common,data.classes=[5,6,7,8,9]" --out "$dir" > "$dir.log"
  echo "$name | $(grep -m1 -o 'trainable params: [0-9,]* || all params: [0-9,]* || trainable%: [0-9.]*' "$dir.log") | $(grep '^before' "$dir.log") | $(grep '^after' "$dir.log")"
done

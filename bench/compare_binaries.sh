#!/usr/bin/env bash
# Before/after of two `gpt` binaries on the same machine, in the same window, alternating:
#   bench/compare_binaries.sh OLD_BIN NEW_BIN TRANSLATE_MODEL_DIR [REPS] [OUT_DIR]
# Runs `gpt bench kernels`, `bench train` (tiny, char-baby; f32 and bf16), `bench generate`
# (f32 and bf16) and `bench translate` REPS times per binary (default 5), old then new each
# round, writes every raw output to OUT_DIR and prints the table of medians
# (bench/compare_binaries.py). Each bench output carries the matmul peak or the read bandwidth
# measured in that same run.
set -euo pipefail
old=$1; new=$2; model=$3; reps=${4:-5}; out=${5:-/tmp/gpt-compare}
mkdir -p "$out"
cd "$(dirname "$0")/.."
for i in $(seq 1 "$reps"); do
  for side in old new; do
    bin=$old; [ "$side" = new ] && bin=$new
    "$bin" bench kernels > "$out/k-$side-$i.txt" 2>&1
    "$bin" bench train --presets tiny,char-baby > "$out/t32-$side-$i.txt" 2>&1
    "$bin" bench train --presets tiny,char-baby --precision bf16 > "$out/t16-$side-$i.txt" 2>&1
    "$bin" bench generate --dtype bf16 > "$out/g-$side-$i.txt" 2>&1
    "$bin" bench translate --model "$model" --limit 50 > "$out/tr-$side-$i.txt" 2>&1
  done
done
python3 bench/compare_binaries.py "$out"

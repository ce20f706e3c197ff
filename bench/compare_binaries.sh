#!/usr/bin/env bash
# Before/after of two `gpt` binaries on the same machine, in the same window, alternating:
#   bench/compare_binaries.sh OLD_BIN NEW_BIN TRANSLATE_MODEL_DIR [REPS] [OUT_DIR]
# Runs `gpt bench kernels`, `bench train` (tiny, char-baby; f32 and bf16), `bench generate`
# (f32 and bf16) and `bench translate` REPS times per binary (default 5), each benchmark old then
# new back to back, writes every raw output to OUT_DIR and prints the table of medians
# (bench/compare_binaries.py). Each bench output carries the matmul peak or the read bandwidth
# measured in that same run.
set -euo pipefail
old=$1; new=$2; model=$3; reps=${4:-5}; out=${5:-/tmp/gpt-compare}
mkdir -p "$out"
cd "$(dirname "$0")/.."
# Each benchmark runs old then new back to back, so the two runs of a pair see the machine in
# nearly the same state.
run() { # run NAME ARGS...: both binaries, one after the other
  local name=$1; shift
  "$old" "$@" > "$out/$name-old-$i.txt" 2>&1
  "$new" "$@" > "$out/$name-new-$i.txt" 2>&1
}
for i in $(seq 1 "$reps"); do
  run k bench kernels
  run t32 bench train --presets tiny,char-baby
  run t16 bench train --presets tiny,char-baby --precision bf16
  run g bench generate --dtype bf16
  run tr bench translate --model "$model" --limit 50
done
python3 bench/compare_binaries.py "$out"

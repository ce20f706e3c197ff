#!/usr/bin/env bash
# GPT-1's Table 5 ablation at our scale (issue 13): fine-tune one base checkpoint on five tasks
# with `gpt finetune` (+ aux LM, no aux LM, no pre-training) and with the PyTorch reference
# (bench/finetune_torch.py, + aux LM), then score every model on the task's test split. COPA
# has no train split: the piqa models (2-choice, the same format) are scored on it zero-shot.
#
#   bench/finetune_quality.sh BASE_CHECKPOINT OUT_DIR [PYTHON]
#
# Budget per task: the paper's recipe (lr 6.25e-5, batch 32, warm-up 0.2%, linear decay, λ 0.5,
# dropout 0.1) for 3 epochs or MAX_STEPS optimizer steps (default 300), whichever is fewer; the
# same for both implementations. Threads: all cores (RAYON_NUM_THREADS / --threads to change).
# Results: OUT_DIR/results.jsonl, one line per (task, variant, test set); then
#   python3 bench/finetune_quality_table.py OUT_DIR/results.jsonl
set -euo pipefail
BASE=${1:?base checkpoint directory}
OUT=${2:?output directory}
PY=${3:-${GPT_PYTHON:-$HOME/.cache/gpt-refenv/bin/python}}
MAX_STEPS=${MAX_STEPS:-300}
SEEDS=${SEEDS:-1337}   # several seeds: the table shows the mean and the range
ONLY=${ONLY:-}
HERE=$(cd "$(dirname "$0")" && pwd)
GPT=${GPT:-$HERE/../target/release/gpt}
TASKS=${TASKS:-$HERE/../../shared/data/tasks}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl

# name kind train test [extra test sets scored by the same model]
SETS=(
  "sentiment_uci classify $TASKS/sentiment_uci/train.jsonl $TASKS/sentiment_uci/test.jsonl"
  "snli entail $TASKS/snli/train.jsonl $TASKS/snli/test.jsonl"
  "paraphrase_bible similar $TASKS/paraphrase_bible/train.jsonl $TASKS/paraphrase_bible/test.jsonl"
  "arc_easy choice $TASKS/multiple_choice/arc_easy/train.jsonl $TASKS/multiple_choice/arc_easy/test.jsonl"
  "piqa choice $TASKS/multiple_choice/piqa/train.jsonl $TASKS/multiple_choice/piqa/test.jsonl $TASKS/multiple_choice/copa/test.jsonl"
)

steps_for() { # 3 epochs of batch 32, capped at MAX_STEPS
  local n
  n=$(grep -c . "$1")
  local s=$(( 3 * ((n + 31) / 32) ))
  echo $(( s < MAX_STEPS ? s : MAX_STEPS ))
}

record() { # task variant test_path accuracy n seconds seed
  local tname
  tname=$(basename "$(dirname "$3")")
  printf '{"task":"%s","variant":"%s","test":"%s","accuracy":%s,"n":%s,"train_s":%s,"seed":%s}\n' \
    "$1" "$2" "$tname" "$4" "$5" "$6" "$7" >> "$RESULTS"
}

for line in "${SETS[@]}"; do
  read -r name kind train test extra <<< "$line"
  [[ -n "$ONLY" && "$ONLY" != *"$name"* ]] && continue
  steps=$(steps_for "$train")
  for seed in $SEEDS; do
  for variant in aux noaux scratch; do
    args=(--aux-lm 0.5)
    [[ $variant == noaux ]] && args=(--aux-lm 0)
    [[ $variant == scratch ]] && args=(--aux-lm 0.5 --from-scratch)
    dir=$OUT/$name/$variant-$seed
    echo "== $name ($kind) ours $variant: $steps steps" >&2
    mkdir -p "$OUT/$name"
    t0=$SECONDS
    "$GPT" finetune --model "$BASE" --task "$kind" --train "$train" --out "$dir" --overwrite \
      --max-steps "$steps" --seed "$seed" "${args[@]}" --json > "$dir.log" 2> "$dir.err"
    secs=$(( SECONDS - t0 ))
    for t in $test $extra; do
      r=$("$GPT" finetune eval --model "$dir" --data "$t" --json)
      acc=$(echo "$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')
      n=$(echo "$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)["n"])')
      record "$name" "ours-$variant" "$t" "$acc" "$n" "$secs" "$seed"
    done
  done
  echo "== $name ($kind) PyTorch reference aux: $steps steps, seed $seed" >&2
  tests=()
  for t in $test $extra; do tests+=(--test "$t"); done
  r=$("$PY" "$HERE/finetune_torch.py" --model "$BASE" --task "$kind" --train "$train" \
      --max-steps "$steps" --seed "$seed" --aux-lm 0.5 "${tests[@]}" 2> "$OUT/$name-torch-$seed.err" | tail -1)
  echo "$r" > "$OUT/$name-torch-$seed.json"
  python3 - "$r" "$name" "$seed" >> "$RESULTS" <<'EOF'
import json, os, sys
r, name, seed = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for path, t in r["tests"].items():
    print(json.dumps({"task": name, "variant": "torch-aux", "test": os.path.basename(os.path.dirname(path)),
                      "accuracy": t["accuracy"], "n": t["n"], "train_s": r["train_s"], "seed": seed}))
EOF
  done
done
echo "results: $RESULTS" >&2

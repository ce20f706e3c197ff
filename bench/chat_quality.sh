#!/usr/bin/env bash
# From a pretrained base to a chat model, measured (issue 15):
#  1. the synthetic instruction suite: SFT, then exact match on held-out instructions, beside the
#     base model's 3-shot accuracy;
#  2. HH-RLHF harmless: SFT on the chosen answers, a reward model (pairwise accuracy beside the
#     length heuristic), DPO (validation rewards/accuracies and KL), and the reward model's mean
#     score of sampled answers before and after DPO.
#
#   bench/chat_quality.sh BASE_CHECKPOINT OUT_DIR
#
# BASE_CHECKPOINT: the README's english_pd base (tiny preset, 4,096-token BPE, context 128).
# Threads: all cores (RAYON_NUM_THREADS / --threads to change). About 40 minutes on 2 cores.
set -euo pipefail
BASE=${1:?base checkpoint directory}
OUT=${2:?output directory}
HERE=$(cd "$(dirname "$0")" && pwd)
GPT=${GPT:-$HERE/../target/release/gpt}
HH=${HH:-$HERE/../data/chat/hh_rlhf_harmless}
mkdir -p "$OUT"
cd "$OUT"

# 1. Instruction suite: 2,500 training and 50 held-out instructions per kind (12 kinds).
"$GPT" sft suite --out suite --train-per-kind 2500 --heldout-per-kind 50 --seed 0
"$GPT" sft --model "$BASE" --data suite/train.jsonl --valid suite/heldout.jsonl --out suite_sft \
  --epochs 5 --batch-size 32 --lr 1e-3 --packing --overwrite 2> suite_sft.log
"$GPT" chat --model suite_sft --batch suite/heldout.jsonl --out suite_answers.jsonl --json \
  > suite_sft_exact_match.json
"$GPT" sft fewshot --model "$BASE" --train suite/train.jsonl --data suite/heldout.jsonl --shots 3 \
  --json > suite_base_3shot.json

# 2. HH-RLHF harmless (1,800 train / 200 valid pairs); the context is 128 tokens, so long
#    conversations keep their end (the last answer).
"$GPT" sft --model "$BASE" --data "$HH/train.jsonl" --valid "$HH/valid.jsonl" --out hh_sft \
  --epochs 2 --lr 3e-4 --packing --truncation keep_end --overwrite 2> hh_sft.log
"$GPT" reward --model hh_sft --data "$HH/train.jsonl" --valid "$HH/valid.jsonl" --out hh_rm \
  --epochs 3 --lr 1e-4 --overwrite --json > hh_rm.jsonl 2> hh_rm.log
"$GPT" dpo --model hh_sft --data "$HH/train.jsonl" --valid "$HH/valid.jsonl" --out hh_dpo \
  --epochs 1 --lr 2e-5 --eval-every 25 --overwrite --json > hh_dpo.jsonl 2> hh_dpo.log
for m in hh_sft hh_dpo; do
  "$GPT" chat --model $m --batch "$HH/valid.jsonl" --temperature 0.7 --seed 1 \
    --max-new-tokens 64 --out samples_$m.jsonl 2> /dev/null
  "$GPT" reward score --model hh_rm --data samples_$m.jsonl --json > rm_score_$m.json
done
echo "results in $OUT: suite_sft_exact_match.json, suite_base_3shot.json, hh_rm.jsonl (last line),"
echo "hh_dpo.jsonl (eval/ keys), rm_score_hh_sft.json, rm_score_hh_dpo.json"

#!/usr/bin/env bash
# int8 against f32 on one model and one text: per-token log-probabilities (`gpt score --json`
# in both dtypes: mean and max |Δ| in nats), perplexity of each and their ratio, and greedy
# continuations of a few prompts taken from the text (tokens equal before the first difference).
#
#   tools/int8_accuracy.sh MODEL TEXT_FILE [N_PROMPTS]
#
# MODEL: a model directory or GGUF file; TEXT_FILE: plain text (≥ 2,000 tokens for the issue's
# check). Needs the release binary (cargo build --release) and python3 (standard library only).
set -euo pipefail
MODEL=$1
TEXT=$2
PROMPTS=${3:-5}
GPT=${GPT:-./target/release/gpt}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for dt in f32 int8; do
  "$GPT" score --model "$MODEL" --dtype "$dt" --json "$TEXT" > "$TMP/score-$dt.json"
done
python3 - "$TMP" "$TEXT" "$PROMPTS" <<'EOF'
import json, sys, os
tmp, text_path, n_prompts = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = json.load(open(os.path.join(tmp, "score-f32.json")))
b = json.load(open(os.path.join(tmp, "score-int8.json")))
pairs = [(x["logprob"], y["logprob"]) for x, y in zip(a["tokens"], b["tokens"]) if x["logprob"] is not None]
d = [abs(x - y) for x, y in pairs]
print(f"tokens scored: {len(d)}")
print(f"per-token log-prob |int8 - f32|: mean {sum(d) / len(d):.5f} nats, max {max(d):.5f}")
print(f"perplexity: f32 {a['ppl']:.4f}, int8 {b['ppl']:.4f}, ratio {b['ppl'] / a['ppl']:.5f} ({100 * (b['ppl'] / a['ppl'] - 1):+.3f}%)")
# Prompts for the greedy check: evenly spaced 200-character pieces of the text.
text = open(text_path, encoding="utf-8").read()
step = max(1, (len(text) - 200) // max(1, n_prompts))
with open(os.path.join(tmp, "prompts.txt"), "w") as f:
    for i in range(n_prompts):
        f.write(json.dumps(text[i * step : i * step + 200]) + "\n")
EOF
agree=0
total=0
while IFS= read -r p; do
  prompt=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]))' "$p")
  for dt in f32 int8; do
    "$GPT" generate --model "$MODEL" --dtype "$dt" --prompt "$prompt" --max-new-tokens 32 \
      --temperature 0 --ignore-eos --json 2>/dev/null | tail -1 > "$TMP/gen-$dt.json"
  done
  n=$(python3 -c '
import json,sys
a=json.load(open(sys.argv[1]))["ids"]; b=json.load(open(sys.argv[2]))["ids"]
k=0
while k < min(len(a), len(b)) and a[k] == b[k]: k += 1
print(k)' "$TMP/gen-f32.json" "$TMP/gen-int8.json")
  agree=$((agree + n))
  total=$((total + 32))
  echo "greedy prompt $((total / 32)): $n of 32 tokens equal before the first difference"
done < "$TMP/prompts.txt"
echo "greedy: $agree of $total tokens equal before the first difference"

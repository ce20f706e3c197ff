#!/usr/bin/env bash
# Mixed-precision convergence check (issue 6): trains `char-baby` for 300 steps in f32 and in
# bf16 from the same seed on the bundled corpus, then requires the bf16 validation loss to stay
# within 1% of f32 at every eval and the final one within 0.02.
# Usage: tools/bf16_convergence.sh [OUT_DIR]   (≈ 10 minutes on 2 Zen 4 cores)
set -euo pipefail
out=${1:-runs/bf16-convergence}
bin=${GPT_BIN:-target/release/gpt}
[ -x "$bin" ] || cargo build --release
for p in f32 bf16; do
  "$bin" train --preset char-baby --batch-size 8 --block-size 256 --max-steps 300 \
    --eval-interval 50 --eval-iters 10 --sample-tokens 0 --precision "$p" --out "$out/$p" \
    2>&1 | grep -E "precision|^step" || true
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def evals(p):
    rows = [json.loads(l) for l in open(f"{out}/{p}/metrics.jsonl")]
    return {r["step"]: r["val_loss"] for r in rows if r.get("val_loss") is not None}, \
           {r["step"]: r for r in rows}
f, fr = evals("f32")
b, br = evals("bf16")
ok = True
print("step  val f32  val bf16  rel diff")
for s in sorted(f):
    rel = abs(b[s] - f[s]) / f[s]
    ok &= rel <= 0.01
    print(f"{s:4d}  {f[s]:.4f}   {b[s]:.4f}    {100 * rel:.2f}%")
last = max(f)
d = abs(b[last] - f[last])
ok &= d <= 0.02
tps = lambda r: sorted(x["tokens_per_sec"] for x in r.values())[len(r) // 2]
print(f"final val loss diff {d:.4f} (limit 0.02); median tokens/s f32 {tps(fr):.0f}, bf16 {tps(br):.0f}")
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY

"""Table of medians (before, after, ratio) from the raw outputs of bench/compare_binaries.sh."""
import glob
import re
import statistics
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/gpt-compare"
res = {}


def add(key, side, val):
    res.setdefault(key, {}).setdefault(side, []).append(val)


for side in ("old", "new"):
    for f in glob.glob(f"{out}/k-{side}-*.txt"):
        for line in open(f):
            m = re.match(r"^(.*?)\s+([\d.]+)\s+([\d.]+) (GFLOP/s|GB/s)", line)
            if m:
                name = re.sub(r"\s*\([\d.]+x f32\)", "", m.group(1)).strip()
                add(f"kernels: {name} (ms)", side, float(m.group(2)))
    for prec, label in (("32", "f32"), ("16", "bf16")):
        for f in glob.glob(f"{out}/t{prec}-{side}-*.txt"):
            txt = open(f).read()
            peak = float(re.search(r"peak ([\d.]+) GFLOP/s", txt).group(1))
            add("train: f32 matmul peak measured in the run (GFLOP/s)", side, peak)
            for m in re.finditer(r"^(tiny|char-baby)\s+\d+ x \d+\s+(\d+)\s+(\d+)%", txt, re.M):
                add(f"train {m.group(1)} {label}: tokens/s", side, float(m.group(2)))
                add(f"train {m.group(1)} {label}: MFU (%)", side, float(m.group(3)))
    for f in glob.glob(f"{out}/g-{side}-*.txt"):
        txt = open(f).read()
        for pat, key in (
            (r"read bandwidth ([\d.]+) GB/s", "generate: read bandwidth measured in the run (GB/s)"),
            (r"ours   batch 1: decode ([\d.]+)", "generate f32 batch 1: decode tokens/s"),
            (r"ours   batch 1: decode [\d.]+ tokens/s .*prefill ([\d.]+)", "generate f32: prefill tokens/s"),
            (r"huge pages: decode ([\d.]+)", "generate f32 batch 1, huge pages: decode tokens/s"),
            (r"batch 8: decode ([\d.]+)", "generate f32 batch 8: tokens/s"),
            (r"bf16 \(\w+\) weights .*decode ([\d.]+)", "generate bf16 batch 1: decode tokens/s"),
            (r"bf16 \(\w+\) weights .*prefill ([\d.]+)", "generate bf16: prefill tokens/s"),
            (r"peak RSS.*f32 (\d+) MiB", "generate f32: peak RSS (MiB)"),
            (r"peak RSS.*bf16 (\d+) MiB", "generate bf16: peak RSS (MiB)"),
        ):
            m = re.search(pat, txt)
            if m:
                add(key, side, float(m.group(1)))
    for f in glob.glob(f"{out}/tr-{side}-*.txt"):
        txt = open(f).read()
        for m in re.finditer(r"^(transformer-\w+)\s+(\d+)", txt, re.M):
            add(f"translate {m.group(1)}: training tokens/s", side, float(m.group(2)))
        m = re.search(r"beam 4 sentences/s: ours ([\d.]+)", txt)
        if m:
            add("translate: beam-4 sentences/s", side, float(m.group(1)))

print("| figure | before (median) | after (median) | after / before | runs |")
print("| --- | ---: | ---: | ---: | ---: |")
for key, v in res.items():
    o, n = v.get("old", []), v.get("new", [])
    if not o or not n:
        continue
    mo, mn = statistics.median(o), statistics.median(n)
    print(f"| {key} | {mo:.4g} | {mn:.4g} | {mn / mo:.3f} | {len(o)} + {len(n)} |")

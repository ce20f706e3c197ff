#!/usr/bin/env python3
"""Dev check: lm-evaluation-harness 0.4.x against `gpt eval`, metric by metric.

Needs lm-eval 0.4.x with its transformers backend (`~/.cache/gpt-refenv/bin/pip install
lm-eval`), run with that venv's python:

    ~/.cache/gpt-refenv/bin/python tools/check_lm_eval.py [--model DIR] [--limit N]
        [--fewshot 0,5] [--tasks arc_easy,copa,...] [--data-dir D] [--write-fixture]

The tasks are written as local lm-eval YAMLs over the same files `gpt eval` reads (our built-in
task TOMLs translated: same templates, delimiters, splits, metrics; WikiText pages split with the
same level-1-heading rule and scored through lm-eval's own `wikitext_detokenizer` and
`process_results`). lm-eval runs on the CPU in float32 (batch 1, few-shot seed 1234), `gpt eval`
with the same flags; every metric and stderr must agree to 1e-4 (relative for perplexities).

Without --model the model is tests/fixtures/hf_gpt2 (a random 2-layer GPT-2, context 128) with
the GPT-2 tokenizer of tokenizer/data/gpt2; --write-fixture PATH then records lm-eval's
metrics, request strings and per-request log-likelihoods, which tests/eval_lm_eval.rs compares
against without Python. The committed fixtures:

    tools/check_lm_eval.py --tasks arc_easy,arc_challenge,piqa,copa --fewshot 0,1,5 \
        --write-fixture tests/fixtures/eval/lm_eval_mc.json
    tools/check_lm_eval.py --tasks lambada_openai,wikitext --fewshot 0,1,5 \
        --data-dir tests/fixtures/eval/data --write-fixture tests/fixtures/eval/lm_eval_lm.json

(tests/fixtures/eval/data: the first 12 LAMBADA passages and 3 WikiText-2 test articles).
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

MC = {
    # name: (text, choice list expression, few-shot split or None)
    "arc_easy": ("Question: {{question}}\nAnswer:", "{{choices}}", None),
    "arc_challenge": ("Question: {{question}}\nAnswer:", "{{choices}}", None),
    "piqa": ("Question: {{question}}\nAnswer:", "{{choices}}", None),
    "copa": ("{{question}}", "{{[' ' ~ choices[0], ' ' ~ choices[1]]}}", "test"),
}


def find_folder(name, data_dir):
    roots = (
        [data_dir, os.path.join(data_dir, "eval"), os.path.join(data_dir, "tasks", "multiple_choice")]
        if data_dir
        else [os.path.join(ROOT, "data/eval"), os.path.join(ROOT, "../shared/data/eval"),
              os.path.join(ROOT, "../shared/data/tasks/multiple_choice")]
    )
    for r in roots:
        if os.path.isdir(os.path.join(r, name)):
            return os.path.abspath(os.path.join(r, name))
    sys.exit(f"no data folder {name} in {roots}")


def wikitext_pages(path):
    """Documents as gpt::eval::wikitext::documents splits them (EleutherAI's
    wikitext_document_level rule: 62 test pages)."""
    pages, ret = [], []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for line in lines:
        r = line.replace("= = =", "===").replace("= =", "==").strip()
        if r.startswith("= ") and r.endswith(" ="):
            page = "\n".join(ret)
            if page.strip():
                pages.append(page)
            ret = []
        ret.append(line)
    page = "\n".join(ret)
    if page.strip():
        pages.append(page)
    return pages


def write_yaml(inc, name, data_dir):
    """An lm-eval task YAML `x_<name>` equal to our built-in task `name`."""
    metric = lambda m, agg="mean", hib=True: (
        f"  - metric: {m}\n    aggregation: {agg}\n    higher_is_better: {str(hib).lower()}\n")
    y = f"task: x_{name}\ndataset_path: json\n"
    if name in MC:
        text, choices, fewshot = MC[name]
        folder = find_folder(name, data_dir)
        files = {s: os.path.join(folder, f) for s, f in
                 [("train", "train.jsonl"), ("validation", "valid.jsonl"), ("test", "test.jsonl")]
                 if os.path.exists(os.path.join(folder, f))}
        y += "dataset_kwargs:\n  data_files:\n" + "".join(f"    {s}: {p}\n" for s, p in files.items())
        y += "output_type: multiple_choice\ntest_split: test\n"
        if "train" in files:
            y += "training_split: train\n"
        if "validation" in files:
            y += "validation_split: validation\n"
        if fewshot:
            y += f"fewshot_split: {fewshot}\n"
        y += f"doc_to_text: {json.dumps(text)}\ndoc_to_target: \"{{{{label}}}}\"\n"
        y += f"doc_to_choice: {json.dumps(choices)}\nmetric_list:\n"
        y += metric("acc") + metric("acc_norm") + metric("acc_bytes")
    elif name == "lambada_openai":
        folder = find_folder(name, data_dir)
        y += f"dataset_kwargs:\n  data_files:\n    test: {folder}/test.jsonl\n"
        y += "output_type: loglikelihood\ntest_split: test\n"
        y += "doc_to_text: \"{{context}}\"\ndoc_to_target: \"{{' ' + continuation}}\"\n"
        y += "metric_list:\n" + metric("perplexity", "perplexity", False) + metric("acc")
    elif name == "wikitext":
        folder = find_folder("wikitext2", data_dir)
        pages = os.path.join(inc, "wikitext_pages.jsonl")
        with open(pages, "w", encoding="utf-8") as f:
            for p in wikitext_pages(os.path.join(folder, "wiki.test.tokens")):
                f.write(json.dumps({"page": p}) + "\n")
        with open(os.path.join(inc, "x_wikitext_utils.py"), "w") as f:
            f.write("from lm_eval.tasks.wikitext.preprocess_wikitext import "
                    "wikitext_detokenizer, process_results  # noqa: F401\n")
        y += f"dataset_kwargs:\n  data_files:\n    test: {pages}\n"
        y += "output_type: loglikelihood_rolling\ntest_split: test\ndoc_to_text: \"\"\n"
        y += "doc_to_target: !function x_wikitext_utils.wikitext_detokenizer\n"
        y += "process_results: !function x_wikitext_utils.process_results\nmetric_list:\n"
        y += "  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n"
    else:
        sys.exit(f"unknown task {name}")
    with open(os.path.join(inc, f"x_{name}.yaml"), "w") as f:
        f.write(y)


def default_model(tmp):
    d = os.path.join(tmp, "model")
    os.makedirs(d)
    for f in ["config.json", "model.safetensors"]:
        shutil.copy(os.path.join(ROOT, "tests/fixtures/hf_gpt2", f), d)
    for f in ["vocab.json", "merges.txt"]:
        shutil.copy(os.path.join(ROOT, "tokenizer/data/gpt2", f), d)
    return d


def run_lm_eval(model, tasks, k, limit, data_dir, boot, tmp):
    import types

    # lm-eval 0.4.9's multimodal wrapper (hf_vlms) names a class transformers 5 removed, which
    # breaks `import lm_eval.models`; the text-only HFLM used here does not need it, so a stub
    # module stands in for it.
    sys.modules.setdefault("lm_eval.models.hf_vlms", types.ModuleType("lm_eval.models.hf_vlms"))
    import lm_eval.evaluator
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    inc = os.path.join(tmp, f"tasks_{k}_{'_'.join(tasks)}")
    os.makedirs(inc, exist_ok=True)
    for t in tasks:
        write_yaml(inc, t, data_dir)
    # What simple_evaluate does, without its task listing (0.4.9.2's fails on YAMLs outside its
    # package): load the tasks, set num_fewshot and the few-shot seed on each, evaluate.
    tm = TaskManager(include_path=inc)
    task_dict = tm.load_task_or_group([f"x_{t}" for t in tasks])
    for obj in task_dict.values():
        obj.set_config(key="num_fewshot", value=k)
        obj.set_fewshot_seed(seed=1234)
    lm = HFLM(pretrained=model, dtype="float32", batch_size=1, device="cpu")
    # HFLM._model_call also names that removed class (in an `in (...)` test); give transformers
    # an alias (set after the imports, which reset the lazy module's attributes).
    import lm_eval.models.huggingface as hf

    if "AutoModelForVision2Seq" not in vars(hf.transformers):
        vars(hf.transformers)["AutoModelForVision2Seq"] = hf.transformers.AutoModelForImageTextToText
    t0 = time.time()
    out = lm_eval.evaluator.evaluate(lm=lm, task_dict=task_dict, limit=limit,
                                     bootstrap_iters=boot, log_samples=True)
    return out, time.time() - t0


def run_ours(gpt, model, tasks, k, limit, data_dir, boot):
    cmd = [gpt, "eval", "--model", model, "--tasks", ",".join(tasks), "--num-fewshot", str(k),
           "--bootstrap-iters", str(boot), "--json"]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    t0 = time.time()
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(res.stdout), time.time() - t0


def close(a, b, rel):
    if a == "N/A" or b == "N/A":
        return a == b
    if rel:
        return abs(a - b) <= 1e-4 * max(abs(a), abs(b), 1e-12)
    return abs(a - b) <= 1e-4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--tasks", default="arc_easy,arc_challenge,piqa,copa,lambada_openai,wikitext")
    ap.add_argument("--fewshot", default="0,5")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--data-dir")
    ap.add_argument("--bootstrap-iters", type=int, default=1000)
    ap.add_argument("--gpt", default=os.path.join(ROOT, "target/release/gpt"))
    ap.add_argument("--write-fixture", metavar="PATH",
                    help="record lm-eval's metrics, requests and log-likelihoods in PATH")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="check_lm_eval_")
    model = os.path.abspath(a.model) if a.model else default_model(tmp)
    tasks = a.tasks.split(",")
    fixture = {"model": "tests/fixtures/hf_gpt2" if not a.model else a.model, "limit": a.limit,
               "data_dir": a.data_dir,
               "bootstrap_iters": a.bootstrap_iters, "runs": []}
    bad = 0
    total_theirs = total_ours = 0.0
    for k in [int(x) for x in a.fewshot.split(",")]:
        # Few-shot does not apply to rolling tasks; run wikitext at K = 0 only.
        ts = [t for t in tasks if k == 0 or t != "wikitext"]
        theirs, t_theirs = run_lm_eval(model, ts, k, a.limit, a.data_dir, a.bootstrap_iters, tmp)
        ours, t_ours = run_ours(a.gpt, model, ts, k, a.limit, a.data_dir, a.bootstrap_iters)
        total_theirs += t_theirs
        total_ours += t_ours
        print(f"K={k}: lm-eval {t_theirs:.1f} s, gpt eval {t_ours:.1f} s")
        run = {"num_fewshot": k, "tasks": {}}
        for t in ts:
            r_theirs = theirs["results"][f"x_{t}"]
            r_ours = ours["results"][t]
            for key, v in r_ours.items():
                if key == "alias":
                    continue
                w = r_theirs.get(key, "missing")
                rel = "perplexity" in key
                ok = w != "missing" and close(v, w, rel)
                bad += not ok
                print(f"  {'ok ' if ok else 'BAD'} {t:15} {key:28} ours {v!s:>22}  lm-eval {w!s:>22}")
            samples = sorted(theirs["samples"][f"x_{t}"], key=lambda s: s["doc_id"])
            run["tasks"][t] = {
                "metrics": {k2: v2 for k2, v2 in r_theirs.items() if k2 != "alias"},
                "requests": [
                    {"doc_id": s["doc_id"], "arguments": [list(x) for x in s["arguments"]],
                     "ll": [r[0][0] if isinstance(r[0], (list, tuple)) else r[0] for r in s["resps"]]}
                    for s in samples
                ],
            }
        fixture["runs"].append(run)
    print(f"total: lm-eval {total_theirs:.1f} s, gpt eval {total_ours:.1f} s "
          f"({total_theirs / max(total_ours, 1e-9):.1f}x)")
    if a.write_fixture:
        path = a.write_fixture
        import lm_eval
        fixture["lm_eval_version"] = getattr(lm_eval, "__version__", "0.4")
        with open(path, "w") as f:
            json.dump(fixture, f, indent=1)
            f.write("\n")
        print("wrote", path)
    shutil.rmtree(tmp, ignore_errors=True)
    print("PASS" if bad == 0 else f"FAIL: {bad} metrics differ")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

"""Makes tests/fixtures/gguf: the small GPT-2 of tests/fixtures/hf_gpt2 converted to GGUF Q8_0 by
llama.cpp's own converter, and llama.cpp's logits on that file.

Run with the reference environment (`../shared/tools/setup-ref.sh --extras`: llama-cpp-python,
gguf) after `bench/setup_llamacpp.sh` (llama.cpp's `convert_hf_to_gguf.py` from the
llama-cpp-python source distribution):
    $HOME/.cache/gpt-refenv/bin/python tools/fixtures_gguf.py

Outputs:
- `tiny-q8_0.gguf`: `convert_hf_to_gguf.py --outtype q8_0` of hf_gpt2 (f16 weights, 2 layers,
  32 wide, the GPT-2 vocabulary and tokenizer; `n_ctx` added to the config, which the converter
  needs with transformers 5), 3.3 MB.
- `expected_llamacpp.json`: per prompt of hf_gpt2's expected.json, llama.cpp's logits on that
  file at every position for the 512 vocabulary indices `sub_idx` (`logits_all`), and its 20
  greedy tokens.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF = os.path.join(ROOT, "tests", "fixtures", "hf_gpt2")
TOK = os.path.join(ROOT, "tokenizer", "data", "gpt2")
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")
CONVERTER = os.environ.get(
    "LLAMA_CPP_CONVERT",
    os.path.expanduser(
        "~/.cache/gpt-llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py"
    ),
)


def main():
    from llama_cpp import Llama

    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for f in ["model.safetensors", "generation_config.json"]:
            shutil.copy(os.path.join(HF, f), tmp)
        for f in ["vocab.json", "merges.txt"]:
            shutil.copy(os.path.join(TOK, f), tmp)
        cfg = json.load(open(os.path.join(HF, "config.json")))
        cfg["n_ctx"] = cfg["n_positions"]
        json.dump(cfg, open(os.path.join(tmp, "config.json"), "w"))
        out = os.path.join(OUT, "tiny-q8_0.gguf")
        subprocess.run(
            [sys.executable, CONVERTER, tmp, "--outtype", "q8_0", "--outfile", out],
            check=True,
            capture_output=True,
        )
    meta = json.load(open(os.path.join(HF, "expected.json")))
    sub_idx = meta["sub_idx"]
    llm = Llama(model_path=out, n_ctx=128, n_threads=1, logits_all=True, verbose=False)
    res = {"sub_idx": sub_idx, "prompts": []}
    for p in meta["prompts"]:
        ids = p["ids"]
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
        greedy = []
        for _ in range(20):
            greedy.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([greedy[-1]])
        res["prompts"].append(
            {
                "ids": ids,
                "sub_logits": logits[:, sub_idx].round(6).tolist(),
                "greedy": greedy,
            }
        )
    with open(os.path.join(OUT, "expected_llamacpp.json"), "w") as f:
        json.dump(res, f)
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()

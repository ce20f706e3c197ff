#!/usr/bin/env python3
"""What the `gpt serve` dev checks share: a model directory with random weights and a server
started from the release binary on a free port.

The model is the tiny GPT-2 of tests/fixtures/hf_gpt2 (2 layers, width 32, context 128, the
real GPT-2 vocabulary of 50257 tokens) with GPT-2's tokenizer files beside it. With
`chat_template=True` it also gets a tokenizer_config.json whose template writes plain-text
role markers and ends every turn with <|endoftext|> (the serve path of a model with a
template); without one the server renders `role: content` lines.

Run as a script it writes the model directory (for the shell wrapper):
    python3 tools/serve_check_common.py make-model DIR [--chat-template]
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "gpt")

# Role markers in plain text (GPT-2's vocabulary has no chat tokens), each turn ended by EOS.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '### ' + message['role'] + ':\\n' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### assistant:\\n' }}{% endif %}"
)


def make_model(dir_, chat_template=False):
    """Writes the tiny random-weight GPT-2 (and its tokenizer) into `dir_`; returns `dir_`."""
    os.makedirs(dir_, exist_ok=True)
    fixture = os.path.join(ROOT, "tests", "fixtures", "hf_gpt2")
    tok = os.path.join(ROOT, "tokenizer", "data", "gpt2")
    for src in (os.path.join(fixture, "config.json"), os.path.join(fixture, "model.safetensors"),
                os.path.join(tok, "vocab.json"), os.path.join(tok, "merges.txt")):
        shutil.copy(src, dir_)
    if chat_template:
        with open(os.path.join(dir_, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "GPT2Tokenizer", "chat_template": CHAT_TEMPLATE,
                       "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}, f, indent=1)
    return dir_


class Server:
    """`gpt serve --model DIR --port 0 ARGS...` until `stop()`; `url` once ready."""

    def __init__(self, model_dir, args=(), binary=BINARY, log_path=None, ready_timeout=120):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: run `cargo build --release` first")
        self.log_path = log_path or os.path.join(model_dir, "server.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--model", model_dir, "--port", "0", *args],
            stdout=self.log, stderr=self.log)
        self.pid = self.proc.pid
        self.url = None
        deadline = time.time() + ready_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.output()}")
            if self.url is None:
                m = re.search(r"listening on (http://[0-9.:\[\]]+)", self.output())
                if m:
                    self.url = m.group(1)
            if self.url is not None:
                try:
                    with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"the server was not ready within {ready_timeout} s:\n{self.output()}")
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        """VmRSS and VmHWM of the server process, in KiB."""
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
        return out

    def stop(self, timeout=30):
        """SIGTERM, then the exit status (SIGKILL if it does not stop in `timeout` s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "make-model":
        print(make_model(sys.argv[2], chat_template="--chat-template" in sys.argv[3:]))
    else:
        sys.exit(__doc__)

#!/usr/bin/env python3
"""Dev check: `gpt serve` driven by the official `openai` Python package.

Starts the release binary on a tiny random-weight GPT-2 (tools/serve_check_common.py) with an
API key, then calls the package's own methods (completions, chat completions, models, the
streaming iterators) and checks that every response is one the package's types accept: the
client builds its objects without validating them, so each is also re-validated with
`Type.model_validate(obj.to_dict())`, and its typed fields are read. At temperature 0 a
streamed text must equal the non-streamed one, the usage chunk must come last, and API errors
must raise the package's exception classes.

    ~/.cache/gpt-refenv/bin/python tools/serve_openai_check.py [--binary target/release/gpt]

One PASS/FAIL line per check; the exit status is 1 if any failed. Not run by CI (it needs the
`openai` package and a release build).
"""

import argparse
import concurrent.futures
import math
import os
import shutil
import sys
import tempfile
import traceback

import openai
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_check_common import BINARY, Server, make_model  # noqa: E402

KEY = "sk-serve-check"
PROMPT = "The quick brown fox"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there!"}]

results = []


def check(name):
    """Runs the decorated function as one check, recording PASS or FAIL with the reason."""
    def wrap(fn):
        try:
            detail = fn()
            results.append((name, True, detail or ""))
            print(f"PASS  {name}" + (f"  ({detail})" if detail else ""), flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            tb = traceback.format_exc(limit=-2).strip().splitlines()
            results.append((name, False, f"{type(e).__name__}: {e}"))
            print(f"FAIL  {name}: {type(e).__name__}: {e}", flush=True)
            for line in tb[-4:-1]:
                print(f"      {line}", flush=True)
        return fn
    return wrap


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def revalidate(cls, obj):
    """`obj` through the package's type with validation on (the client only constructs)."""
    return cls.model_validate(obj.to_dict())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=BINARY)
    args = ap.parse_args()
    print(f"openai {openai.__version__}")
    tmp = tempfile.mkdtemp(prefix="serve-openai-")
    model_dir = make_model(f"{tmp}/tiny-gpt2")
    try:
        with Server(model_dir, ["--api-key", KEY, "--max-batch", "8"], binary=args.binary) as srv:
            print(f"server: {srv.url} (pid {srv.pid})")
            run_checks(srv)
            alive = srv.alive()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [r for r in results if not r[1]]
    print(f"\n{len(results) - len(failed)}/{len(results)} checks passed" +
          ("" if alive else "; the server died during the run"))
    sys.exit(1 if failed or not alive else 0)


def run_checks(srv):
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    model = None

    @check("models.list: one Model, the served id")
    def _():
        nonlocal model
        page = client.models.list()
        models = list(page)
        expect(len(models) == 1, f"{len(models)} models")
        m = revalidate(Model, models[0])
        expect(m.object == "model" and isinstance(m.created, int), m)
        model = m.id
        got = client.models.retrieve(model)
        expect(got.id == model, got)
        return f"id {model!r}"

    model = model or "tiny-gpt2"
    greedy = {}

    @check("completions.create: plain, temperature 0")
    def _():
        r = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
        c = revalidate(Completion, r)
        expect(c.object == "text_completion" and len(c.choices) == 1, c)
        ch = c.choices[0]
        expect(isinstance(ch.text, str) and ch.text, f"text {ch.text!r}")
        expect(ch.finish_reason in ("length", "stop") and ch.index == 0, ch)
        expect(ch.logprobs is None, "logprobs when not asked for")
        u = c.usage
        expect(u.prompt_tokens == 4 and u.total_tokens == u.prompt_tokens + u.completion_tokens, u)
        expect(ch.finish_reason == "stop" or u.completion_tokens == 12, u)
        greedy["completion"] = (ch.text, u.completion_tokens, ch.finish_reason)
        return f"{u.completion_tokens} tokens, finish {ch.finish_reason}: {ch.text!r}"

    @check("completions.create: logprobs=3")
    def _():
        r = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0,
                                      logprobs=3)
        c = revalidate(Completion, r)
        ch = c.choices[0]
        lp = ch.logprobs
        n = c.usage.completion_tokens
        expect(ch.text == greedy["completion"][0], "logprobs changed the greedy text")
        expect(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset),
               "logprobs lists of different lengths")
        expect(len(lp.tokens) == n, f"{len(lp.tokens)} logprob tokens for {n} completion tokens")
        expect(all(x <= 0 and math.isfinite(x) for x in lp.token_logprobs), lp.token_logprobs)
        for tok, x, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
            expect(1 <= len(top) <= 3, f"top_logprobs {top}")
            # Greedy: the chosen token is the most likely one.
            expect(abs(max(top.values()) - x) < 1e-4, f"greedy token {tok!r} {x} is not the top {top}")
        expect(lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0, lp.text_offset)
        if ch.finish_reason == "length":
            expect("".join(lp.tokens) == ch.text, f"tokens {lp.tokens} do not join to the text")
        return f"{n} tokens, first {lp.tokens[0]!r} {lp.token_logprobs[0]:.3f}"

    @check("completions.create: echo with logprobs (prompt log-probabilities)")
    def _():
        r = client.completions.create(model=model, prompt=PROMPT, max_tokens=3, temperature=0,
                                      echo=True, logprobs=1)
        # The prompt's first token has no log-probability (null, as OpenAI sends it), which
        # the package's List[float] does not admit when validated; read the typed fields.
        expect(isinstance(r, Completion), type(r))
        ch = r.choices[0]
        expect(ch.text.startswith(PROMPT), f"echoed text {ch.text!r}")
        lp = ch.logprobs
        expect(len(lp.tokens) == r.usage.prompt_tokens + r.usage.completion_tokens,
               f"{len(lp.tokens)} tokens for {r.usage}")
        expect(lp.token_logprobs[0] is None and lp.top_logprobs[0] is None, "first prompt token")
        expect(all(x is not None and x <= 0 for x in lp.token_logprobs[1:]), lp.token_logprobs)
        expect("".join(lp.tokens[:4]) == PROMPT, lp.tokens[:4])
        r0 = client.completions.create(model=model, prompt=PROMPT, max_tokens=0, echo=True,
                                       logprobs=0)
        expect(r0.choices[0].text == PROMPT and r0.usage.completion_tokens == 0, r0.choices[0])
        expect(r0.choices[0].logprobs.token_logprobs[1:] == lp.token_logprobs[1:4],
               "prompt log-probabilities differ between max_tokens 0 and 3")
        return f"prompt logprobs {[round(x, 3) for x in lp.token_logprobs[1:4]]}"

    @check("completions.create: stop string")
    def _():
        text, _, _ = greedy["completion"]
        stop = None
        for i in range(len(text) // 2, len(text) - 1):
            cand = text[i:i + 2]
            if cand.strip() and text.find(cand) == i:
                stop = cand
                break
        expect(stop is not None, f"no stop string to cut {text!r} with")
        r = revalidate(Completion, client.completions.create(
            model=model, prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop, "never-seen"]))
        ch = r.choices[0]
        expect(ch.text == text[:text.find(stop)], f"{ch.text!r}, expected {text[:text.find(stop)]!r}")
        expect(ch.finish_reason == "stop", ch.finish_reason)
        return f"stop {stop!r} -> {ch.text!r}"

    @check("completions.create: n=2 with a seed")
    def _():
        r = revalidate(Completion, client.completions.create(
            model=model, prompt=PROMPT, max_tokens=10, temperature=1.0, n=2, seed=11))
        expect([c.index for c in r.choices] == [0, 1], [c.index for c in r.choices])
        texts = [c.text for c in r.choices]
        expect(all(texts), texts)
        expect(texts[0] != texts[1], f"both choices are {texts[0]!r} (seeds seed and seed+1)")
        expect(r.usage.prompt_tokens == 4, r.usage)
        return f"{texts}"

    @check("completions.create: seed reproducibility at temperature 1")
    def _():
        kw = dict(model=model, prompt=PROMPT, max_tokens=16, temperature=1.0, top_p=0.95)
        a = client.completions.create(seed=1234, **kw).choices[0].text
        b = client.completions.create(seed=1234, **kw).choices[0].text
        c = client.completions.create(seed=4321, **kw).choices[0].text
        expect(a == b, f"same seed, different texts: {a!r} vs {b!r}")
        expect(a != c, f"different seeds, same text {a!r}")
        return "same seed equal, other seed different"

    @check("completions.create: stream with include_usage equals non-streamed")
    def _():
        text, n, finish = greedy["completion"]
        chunks = list(client.completions.create(
            model=model, prompt=PROMPT, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True}))
        for ch in chunks:
            expect(isinstance(ch, Completion), type(ch))
            # The package's Completion types finish_reason as a non-null literal, which the
            # chunks before the last (null, as OpenAI streams them) do not satisfy.
            if not ch.choices or ch.choices[0].finish_reason is not None:
                revalidate(Completion, ch)
        body, usage = chunks[:-1], chunks[-1]
        expect(usage.usage is not None and usage.choices == [], f"last chunk {usage}")
        expect(all(c.usage is None for c in body), "usage before the last chunk")
        streamed = "".join(c.choices[0].text for c in body)
        expect(streamed == text, f"streamed {streamed!r} != {text!r}")
        expect(body[-1].choices[0].finish_reason == finish, body[-1].choices[0])
        expect(usage.usage.completion_tokens == n, f"{usage.usage} vs {n} tokens")
        expect(sum(1 for c in body if c.choices[0].text) > 1, "text came in one chunk")
        return f"{len(chunks)} chunks"

    @check("completions.create: stream n=2 with a seed equals non-streamed")
    def _():
        kw = dict(model=model, prompt=PROMPT, max_tokens=10, temperature=1.0, n=2, seed=11)
        full = client.completions.create(**kw)
        texts = ["", ""]
        for ch in client.completions.create(stream=True, **kw):
            for c in ch.choices:
                texts[c.index] += c.text
        expect(texts == [c.text for c in full.choices], f"{texts} vs {[c.text for c in full.choices]}")
        return "both choices equal"

    @check("completions.create: long sampled streams (byte tokens, stop strings) equal non-streamed")
    def _():
        # Random weights sample all over the vocabulary, byte-level pieces of multi-byte
        # characters included: the held-back text of a partial character or of a possible
        # stop-string prefix must come out the same in both shapes.
        cut = 0
        for seed in range(5):
            kw = dict(model=model, prompt="Emoji 🙂 and 漢字:", max_tokens=100, temperature=1.0,
                      seed=seed, stop=["e", " the"] if seed % 2 else None)
            full = client.completions.create(**kw).choices[0]
            parts = [c.choices[0] for c in client.completions.create(stream=True, **kw)]
            streamed = "".join(c.text for c in parts)
            expect(streamed == full.text, f"seed {seed}: {streamed!r} != {full.text!r}")
            expect(parts[-1].finish_reason == full.finish_reason, f"seed {seed}: finish")
            cut += full.finish_reason == "stop"
        return f"5 seeds, {cut} ended by a stop string"

    @check("chat.completions.create: long sampled streams equal non-streamed")
    def _():
        for seed in range(3):
            kw = dict(model=model, messages=[{"role": "user", "content": "Über 🙂 naïve 漢字"}],
                      max_tokens=100, temperature=1.0, seed=seed)
            full = client.chat.completions.create(**kw).choices[0]
            streamed = "".join(c.choices[0].delta.content or ""
                               for c in client.chat.completions.create(stream=True, **kw))
            expect(streamed == full.message.content,
                   f"seed {seed}: {streamed!r} != {full.message.content!r}")
        return "3 seeds"

    @check("completions.create: stream with logprobs equals non-streamed logprobs")
    def _():
        kw = dict(model=model, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=2)
        full = client.completions.create(**kw).choices[0].logprobs
        toks, lps, offs = [], [], []
        for ch in client.completions.create(stream=True, **kw):
            for c in ch.choices:
                if c.logprobs and c.logprobs.tokens:
                    toks += c.logprobs.tokens
                    lps += c.logprobs.token_logprobs
                    offs += c.logprobs.text_offset
        expect(toks == full.tokens, f"{toks} vs {full.tokens}")
        expect(all(abs(a - b) < 1e-5 for a, b in zip(lps, full.token_logprobs)), "logprobs differ")
        expect(offs == full.text_offset, f"offsets {offs} vs {full.text_offset}")
        return f"{len(toks)} tokens"

    @check("chat.completions.create: plain, temperature 0")
    def _():
        r = revalidate(ChatCompletion, client.chat.completions.create(
            model=model, messages=CHAT, max_tokens=12, temperature=0))
        expect(r.object == "chat.completion" and r.id.startswith("chatcmpl-"), r.id)
        ch = r.choices[0]
        expect(ch.message.role == "assistant" and isinstance(ch.message.content, str), ch.message)
        expect(ch.finish_reason in ("stop", "length"), ch.finish_reason)
        expect(r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0, r.usage)
        greedy["chat"] = (ch.message.content, r.usage.completion_tokens, ch.finish_reason)
        return f"{r.usage.completion_tokens} tokens, finish {ch.finish_reason}: {ch.message.content!r}"

    @check("chat.completions.create: logprobs with top_logprobs=3")
    def _():
        r = revalidate(ChatCompletion, client.chat.completions.create(
            model=model, messages=CHAT, max_completion_tokens=12, temperature=0, logprobs=True,
            top_logprobs=3))
        ch = r.choices[0]
        content = ch.logprobs.content
        expect(ch.message.content == greedy["chat"][0], "logprobs changed the greedy text")
        expect(len(content) == r.usage.completion_tokens,
               f"{len(content)} entries for {r.usage.completion_tokens} tokens")
        for t in content:
            expect(t.logprob <= 0 and len(t.top_logprobs) == 3, t)
            expect(bytes(t.bytes).decode("utf-8", "replace") == t.token, t)
            expect(abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4, f"greedy {t.token!r} not top")
            expect([x.logprob for x in t.top_logprobs] == sorted((x.logprob for x in t.top_logprobs),
                                                                 reverse=True), "top not sorted")
        if ch.finish_reason == "length":
            expect("".join(t.token for t in content) == ch.message.content, "tokens != content")
        return f"{len(content)} tokens, first {content[0].token!r} {content[0].logprob:.3f}"

    @check("chat.completions.create: stream with include_usage equals non-streamed")
    def _():
        text, n, finish = greedy["chat"]
        chunks = list(client.chat.completions.create(
            model=model, messages=CHAT, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True}))
        for ch in chunks:
            revalidate(ChatCompletionChunk, ch)
        body, last = chunks[:-1], chunks[-1]
        expect(last.usage is not None and last.choices == [], f"last chunk {last}")
        expect(last.usage.completion_tokens == n, f"{last.usage} vs {n}")
        expect(body[0].choices[0].delta.role == "assistant", body[0])
        expect(all(c.object == "chat.completion.chunk" for c in chunks), "object")
        expect(len({c.id for c in chunks}) == 1, "chunk ids differ")
        streamed = "".join(c.choices[0].delta.content or "" for c in body)
        expect(streamed == text, f"streamed {streamed!r} != {text!r}")
        expect(body[-1].choices[0].finish_reason == finish, body[-1])
        return f"{len(chunks)} chunks"

    @check("chat.completions.stream (helper): events and final completion")
    def _():
        text = greedy["chat"][0]
        with client.chat.completions.stream(model=model, messages=CHAT, max_tokens=12,
                                            temperature=0,
                                            stream_options={"include_usage": True}) as s:
            deltas = [e.delta for e in s if e.type == "content.delta"]
            try:
                final = s.get_final_completion()
            except openai.LengthFinishReasonError as e:
                # What the helper raises for finish_reason "length"; it carries the completion.
                final = e.completion
        expect("".join(deltas) == text, f"{''.join(deltas)!r} != {text!r}")
        expect(final.choices[0].message.content == text, final.choices[0].message)
        expect(final.usage is not None and final.usage.completion_tokens == greedy["chat"][1], final.usage)
        return f"{len(deltas)} content deltas"

    @check("concurrent requests: 8 in parallel equal their sequential results")
    def _():
        prompts = [f"Item {i}: the" for i in range(8)]
        kw = dict(model=model, max_tokens=10, temperature=0)
        seq = [client.completions.create(prompt=p, **kw).choices[0].text for p in prompts]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            par = list(pool.map(lambda p: client.completions.create(prompt=p, **kw).choices[0].text,
                                prompts))
        diff = [i for i in range(8) if seq[i] != par[i]]
        expect(not diff, f"prompts {diff} differ: {[(seq[i], par[i]) for i in diff]}")
        return "batched = one at a time"

    @check("error: prompt over the context -> BadRequestError context_length_exceeded")
    def _():
        try:
            client.completions.create(model=model, prompt="hello " * 200, max_tokens=4)
        except openai.BadRequestError as e:
            expect(e.status_code == 400 and e.code == "context_length_exceeded", (e.status_code, e.code))
            expect(e.param == "prompt" and e.type == "invalid_request_error", (e.param, e.type))
            return f"{e.message[:70]}..."
        raise AssertionError("no error")

    @check("error: chat over the context -> BadRequestError")
    def _():
        try:
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "word " * 200}])
        except openai.BadRequestError as e:
            expect(e.code == "context_length_exceeded" and e.param == "messages", (e.code, e.param))
            return "param messages"
        raise AssertionError("no error")

    @check("error: invalid field -> BadRequestError naming it")
    def _():
        try:
            client.completions.create(model=model, prompt="x", temperature=5)
        except openai.BadRequestError as e:
            expect(e.param == "temperature", e.param)
            return e.message
        raise AssertionError("no error")

    @check("error: wrong API key -> AuthenticationError")
    def _():
        bad = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-wrong", max_retries=0)
        for call in (lambda: bad.models.list(),
                     lambda: bad.completions.create(model=model, prompt="x", max_tokens=1),
                     lambda: bad.chat.completions.create(model=model, messages=CHAT, stream=True)):
            try:
                call()
            except openai.AuthenticationError as e:
                expect(e.status_code == 401 and e.code == "invalid_api_key", (e.status_code, e.code))
                continue
            raise AssertionError("no error")
        return "models, completions, streaming chat"

    @check("error: unknown model -> NotFoundError")
    def _():
        try:
            client.completions.create(model="gpt-4o", prompt="x", max_tokens=1)
        except openai.NotFoundError as e:
            expect(e.code == "model_not_found", e.code)
            return e.message
        raise AssertionError("no error")


if __name__ == "__main__":
    main()

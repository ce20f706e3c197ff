#!/usr/bin/env python3
"""Dev check: about 1,150 malformed or hostile requests against `gpt serve` (the 1,125 cases
below run twice by default, so about 2,300).

Every request is written byte by byte on a raw socket (so the bytes can be wrong anywhere) and
must be answered with a 4xx, or the connection closed, within --timeout seconds: a 5xx, no
answer (a hang), or a 2xx to a request that is invalid counts as a failure. Requests that are
odd but valid (a field set to null, `seed: -1`, ...) may succeed; where the script's own idea
of validity and the server's disagree in the safe direction (a 4xx to what it thought valid)
it prints a NOTE. The families:

- JSON: not JSON, not an object, trailing commas, comments, BOM, invalid UTF-8, lone
  surrogates, NaN/Infinity/1e400 literals, 100,000-deep nesting, duplicate keys;
- every field of both endpoints set to every JSON type and to edge values (negative, 0, 2^64,
  1e308, 5e-324, ...), each judged against the field's documented range;
- size: 10 MB bodies (declared, chunked, behind `Expect: 100-continue`) over the 1 MiB
  limit, 200,000 token ids, 10,000 messages, 301 logit_bias entries;
- HTTP: unknown paths, wrong methods, bad request lines and versions, malformed and huge
  headers, bad Content-Length and chunked framing, request smuggling shapes, truncated
  requests (the client half-closes), pipelined garbage, invalid UTF-8 in the path, API keys
  that are wrong, empty or not ASCII;
- load: a burst of concurrent valid requests over --max-batch and --max-queue (200 or 429),
  clients that hang up mid-stream (their rows must be freed);
- slow clients, in the background while the rest runs: bodies dribbled slower than the
  server's 30 s body timeout (must get 408 or a close), and request heads dribbled the same
  way or never sent (the server must close the connection by --slow-wait).

Afterwards the server must answer a correct request exactly as it did before, report no
running or waiting request and an empty KV cache, and its resident memory (VmRSS, VmHWM from
/proc/PID/status, printed after each pass) must have grown by at most --max-rss-growth-mib.

The run takes about --slow-wait seconds (45 by default; the rest takes a few seconds);
`--slow-bodies 0 --slow-heads 0 --idle 0` skips the slow clients.

    python3 tools/serve_fuzz.py                    # starts target/release/gpt serve itself
    python3 tools/serve_fuzz.py --url http://127.0.0.1:8000 --pid PID [--api-key KEY]

Prints failures as they happen and a summary by status; the exit status is 1 on any failure.
Not run by CI.
"""

import argparse
import collections
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_check_common import BINARY, Server, make_model  # noqa: E402

KEY = "sk-fuzz"
MODEL = "tiny"
VOCAB = 50257
N_CTX = 128
MAX_BATCH = 4
MAX_QUEUE = 8

# --- raw HTTP ---------------------------------------------------------------------------------


class Outcome:
    """What came back for one request: a status, a close without one, or nothing (hang)."""

    def __init__(self, status=None, closed=False, hang=False, body=b"", error=""):
        self.status, self.closed, self.hang, self.body, self.error = status, closed, hang, body, error

    def label(self):
        if self.hang:
            return "hang"
        if self.status is None:
            return "closed"
        return str(self.status)


def read_response(sock, deadline, head_only=False):
    """Reads one HTTP response (skipping 100 Continue); returns (status, body) or None if the
    connection closed first. Raises socket.timeout past `deadline`."""
    buf = b""

    def more():
        nonlocal buf
        sock.settimeout(max(0.01, deadline - time.time()))
        chunk = sock.recv(65536)
        if not chunk:
            return False
        buf += chunk
        return True

    while True:
        while b"\r\n\r\n" not in buf:
            if not more():
                return None if not buf else (parse_status(buf), b"")
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = parse_status(head)
        if status == 100:
            buf = rest
            continue
        break
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    buf = rest
    if head_only or status in (204, 304) or 100 <= (status or 0) < 200:
        return status, b""
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        # The last chunk; SSE events end in "\n\n", so no data chunk ends like this.
        while not buf.endswith(b"0\r\n\r\n"):
            if not more():
                break
        return status, buf
    if b"content-length" in headers:
        n = int(headers[b"content-length"])
        while len(buf) < n:
            if not more():
                break
        return status, buf[:n]
    while more():
        pass
    return status, buf


def parse_status(head):
    try:
        return int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return -1


def exchange(addr, parts, timeout, half_close=False, head_only=False):
    """Sends `parts` (bytes, or a list of bytes and float pauses), then reads the response.
    `half_close`: shut the write side after sending (a client that gave up mid-request)."""
    if isinstance(parts, (bytes, bytearray)):
        parts = [parts]
    deadline = time.time() + timeout
    try:
        sock = socket.create_connection(addr, timeout=timeout)
    except OSError as e:
        return Outcome(error=f"connect: {e}", hang=True)
    try:
        send_error = None
        for p in parts:
            if isinstance(p, float):
                time.sleep(p)
                continue
            try:
                sock.sendall(p)
            except (BrokenPipeError, ConnectionResetError) as e:
                send_error = e  # the server answered and closed before reading it all
                break
        if half_close and send_error is None:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        try:
            r = read_response(sock, deadline, head_only)
        except socket.timeout:
            return Outcome(hang=True, error="no answer and no close")
        except (ConnectionResetError, BrokenPipeError):
            return Outcome(closed=True, error="reset")
        if r is None:
            return Outcome(closed=True)
        return Outcome(status=r[0], body=r[1])
    finally:
        sock.close()


def request(method, path, body=None, headers=(), version=b"HTTP/1.1", key=..., close=True,
            content_length=True):
    """The bytes of one request; `headers` are (name, value) pairs of bytes or str; `key`:
    the API key to send (default: the server's; None: no Authorization header)."""
    key = KEY if key is ... else key
    b = lambda x: x if isinstance(x, bytes) else str(x).encode()  # noqa: E731
    lines = [b(method) + b" " + b(path) + b" " + version, b"Host: 127.0.0.1"]
    if key is not None:
        lines.append(b"Authorization: Bearer " + b(key))
    if close:
        lines.append(b"Connection: close")
    if body is not None:
        body = b(body)
        lines.append(b"Content-Type: application/json")
        if content_length:
            lines.append(b"Content-Length: " + str(len(body)).encode())
    for k, v in headers:
        lines.append(b(k) + b": " + b(v))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


# --- the cases --------------------------------------------------------------------------------

# A case: (family, name, bytes or parts, allowed), where `allowed` is "4xx" (must be refused),
# "any" (valid or doubtful: 2xx or 4xx both fine), or "ok" (valid: a 4xx is printed as a NOTE).
# Options per case go in a dict as a fifth element (half_close, head_only, timeout).

COMPLETION = {"model": MODEL, "prompt": "hi", "max_tokens": 1}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}

# Edge values for every field: (name, JSON text).
VALUES = [
    ("true", "true"), ("false", "false"), ("str", '"x"'), ("empty-str", '""'), ("num-str", '"1"'),
    ("-1", "-1"), ("0", "0"), ("1", "1"), ("1.5", "1.5"), ("-0.5", "-0.5"),
    ("1e30-int", "1" + "0" * 30), ("u64max", str(2**64 - 1)), ("i64min", str(-2**63)),
    ("2^64", str(2**64)), ("1e308", "1e308"), ("-1e308", "-1e308"), ("5e-324", "5e-324"),
    ("[]", "[]"), ("[1]", "[1]"), ("{}", "{}"), ('{"a":1}', '{"a": 1}'), ("[[[]]]", "[[[]]]"),
]
# Literals that are not JSON, in numeric fields.
LITERALS = ["NaN", "Infinity", "-Infinity", "nan", "1e400", "-1e400", "+1", ".5", "01", "0x10",
            "1_000", "1.", "--1", "1e", "Infinity1"]


def number(v):
    try:
        x = json.loads(v)
    except ValueError:
        return None
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def integer(v, lo, hi):
    x = number(v)
    # serde_json reads an integer literal past u64 as a float, which the server refuses.
    return isinstance(x, int) and lo <= x <= hi


def in_range(v, lo, hi):
    x = number(v)
    return x is not None and lo <= x <= hi


def valid(endpoint, field, v):
    """Whether the request with `field` = JSON text `v` is valid: True, False, or None (doubtful)."""
    x = json.loads(v)
    chat = endpoint == "chat"
    room = N_CTX - (5 if chat else 1)  # prompt "hi" is 1 token; "user: hi\nassistant:" 5
    if field == "model":
        return x == MODEL
    if field == "prompt":
        if isinstance(x, str):
            return None if x == "" else True
        if isinstance(x, list) and x and all(isinstance(i, int) and 0 <= i < VOCAB for i in x):
            return True
        return False
    if field == "messages":
        return False
    if field in ("max_tokens", "max_completion_tokens"):
        return integer(v, 1, room)
    if field == "temperature":
        return in_range(v, 0, 2)
    if field == "top_p":
        return in_range(v, 0, 1)
    if field == "top_k":
        return integer(v, 0, VOCAB)
    if field == "repetition_penalty":
        return in_range(v, 0.01, 100)
    if field in ("presence_penalty", "frequency_penalty"):
        return in_range(v, -2, 2)
    if field == "logit_bias":
        return x == {}
    if field == "n":
        return integer(v, 1, MAX_BATCH)
    if field == "stop":
        if isinstance(x, str):
            return None if x == "" else True
        return isinstance(x, list) and len(x) <= 4 and all(isinstance(s, str) for s in x)
    if field == "seed":
        return integer(v, -2**63, 2**64 - 1)
    if field in ("stream", "echo"):
        return isinstance(x, bool)
    if field == "stream_options":
        return False  # only allowed with stream: true
    if field == "logprobs":
        return isinstance(x, bool) if chat else integer(v, 0, 5)
    if field == "top_logprobs":
        return False  # needs logprobs: true
    if field in ("user", "suffix", "tools", "metadata"):
        return True  # ignored
    raise KeyError(field)


def body_with(base, field, text):
    """`base` as JSON with `field` set to the raw JSON text `text` (which may be invalid)."""
    b = dict(base)
    b[field] = "@@VALUE@@"
    return json.dumps(b).replace('"@@VALUE@@"', text)


def field_cases():
    fields = {
        "completions": ["model", "prompt", "max_tokens", "temperature", "top_p", "top_k",
                        "repetition_penalty", "presence_penalty", "frequency_penalty",
                        "logit_bias", "n", "stop", "seed", "stream", "stream_options",
                        "logprobs", "echo", "user", "suffix"],
        "chat": ["model", "messages", "max_tokens", "max_completion_tokens", "temperature",
                 "top_p", "top_k", "presence_penalty", "frequency_penalty", "logit_bias", "n",
                 "stop", "seed", "stream", "stream_options", "logprobs", "top_logprobs", "tools"],
    }
    for endpoint, names in fields.items():
        base, path = (COMPLETION, "/v1/completions") if endpoint == "completions" else (CHAT, "/v1/chat/completions")
        for f in names:
            for vname, v in VALUES:
                if f == "max_completion_tokens":
                    b = {k: x for k, x in base.items() if k != "max_tokens"}
                else:
                    b = base
                ok = valid(endpoint, f, v)
                allowed = "ok" if ok else ("any" if ok is None else "4xx")
                yield ("field", f"{endpoint}.{f}={vname}", request("POST", path, body_with(b, f, v)), allowed)
        for f in ["temperature", "max_tokens", "seed"]:
            for lit in LITERALS:
                # 1e-400-like underflow is valid JSON (0.0); the rest are not JSON at all.
                yield ("literal", f"{endpoint}.{f}={lit}", request("POST", path, body_with(base, f, lit)), "4xx")


def json_cases():
    c, ch = "/v1/completions", "/v1/chat/completions"
    deep_a = "[" * 100_000 + "]" * 100_000
    deep_o = '{"a":' * 50_000 + "1" + "}" * 50_000
    bodies = [
        ("empty", b"", "4xx"), ("open-brace", b"{", "4xx"), ("close-brace", b"}", "4xx"),
        ("array", b"[]", "4xx"), ("null", b"null", "4xx"), ("number", b"1", "4xx"),
        ("string", b'"x"', "4xx"), ("trailing-garbage", b'{"prompt": "hi"} x', "4xx"),
        ("trailing-comma", b'{"prompt": "hi",}', "4xx"), ("single-quotes", b"{'prompt': 'hi'}", "4xx"),
        ("comment", b'{"prompt": "hi" /* c */}', "4xx"), ("bom", b'\xef\xbb\xbf{"prompt": "hi"}', "any"),
        ("invalid-utf8", b'{"prompt": "\xff\xfe\xfd"}', "4xx"), ("overlong-utf8", b'{"prompt": "\xc0\xaf"}', "4xx"),
        ("cesu-surrogate", b'{"prompt": "\xed\xa0\x80"}', "4xx"), ("lone-surrogate", b'{"prompt": "\\ud800"}', "4xx"),
        ("bad-escape", b'{"prompt": "\\x41"}', "4xx"), ("raw-control", b'{"prompt": "a\x01b"}', "4xx"),
        ("nul-escape", b'{"prompt": "a\\u0000b", "max_tokens": 1}', "any"),
        ("unterminated-str", b'{"prompt": "hi', "4xx"), ("deep-array", deep_a.encode(), "4xx"),
        ("deep-object", deep_o.encode(), "4xx"),
        ("deep-in-prompt", ('{"prompt": ' + deep_a + "}").encode(), "4xx"),
        ("deep-in-logit-bias", ('{"prompt": "hi", "logit_bias": ' + deep_o + "}").encode(), "4xx"),
        ("duplicate-key", b'{"prompt": "hi", "max_tokens": 1, "max_tokens": -5}', "4xx"),
        ("key-not-string", b'{1: 2}', "4xx"), ("nan-key-val", b'{"prompt": NaN}', "4xx"),
        ("utf16-body", '{"prompt": "hi"}'.encode("utf-16"), "4xx"),
        ("float-max-tokens", b'{"prompt": "hi", "max_tokens": 1.0}', "4xx"),
        ("exp-max-tokens", b'{"prompt": "hi", "max_tokens": 1e1}', "4xx"),
        ("neg-zero-temp", b'{"prompt": "hi", "max_tokens": 1, "temperature": -0.0}', "ok"),
        ("underflow-temp", b'{"prompt": "hi", "max_tokens": 1, "temperature": 1e-400}', "any"),
        ("ids-negative", b'{"prompt": [-1]}', "4xx"), ("ids-vocab", b'{"prompt": [50257]}', "4xx"),
        ("ids-float", b'{"prompt": [1.0]}', "4xx"), ("ids-mixed", b'{"prompt": [1, "a"]}', "4xx"),
        ("ids-nested-empty", b'{"prompt": [[1], []]}', "4xx"), ("ids-u64", b'{"prompt": [18446744073709551615]}', "4xx"),
        ("strs-mixed", b'{"prompt": ["a", 1]}', "4xx"), ("prompt-obj", b'{"prompt": {"text": "a"}}', "4xx"),
        ("prompt-empty", b'{"prompt": ""}', "4xx"), ("prompt-ws", b'{"prompt": " ", "max_tokens": 1}', "ok"),
        ("prompt-eot", b'{"prompt": "<|endoftext|>", "max_tokens": 1}', "ok"),
        ("ids-200k", ('{"prompt": [' + ",".join(["1"] * 200_000) + "]}").encode(), "4xx"),
        ("strs-1000-n4", ('{"prompt": [' + ",".join(['"a"'] * 1000) + '], "n": 4, "max_tokens": 1}').encode(), "4xx"),
        ("long-prompt-500k", ('{"prompt": "' + "word " * 100_000 + '"}').encode(), "4xx"),
        ("max-tokens-0", b'{"prompt": "hi", "max_tokens": 0}', "4xx"),
        ("max-tokens-ctx", b'{"prompt": "hi", "max_tokens": 128}', "4xx"),
        ("echo-0-tokens", b'{"prompt": "hi", "max_tokens": 0, "echo": true, "logprobs": 5}', "ok"),
        ("n-over-batch", b'{"prompt": "hi", "n": 5}', "4xx"), ("n-max", b'{"prompt": "hi", "n": 128}', "4xx"),
        ("logprobs-6", b'{"prompt": "hi", "logprobs": 6}', "4xx"),
        ("logit-bias-301", ('{"prompt": "hi", "logit_bias": {' + ",".join(f'"{i}": 1' for i in range(301)) + "}}").encode(), "4xx"),
        ("logit-bias-300", ('{"prompt": "hi", "max_tokens": 1, "logit_bias": {' + ",".join(f'"{i}": 100' for i in range(300)) + "}}").encode(), "ok"),
        ("logit-bias-neg-id", b'{"prompt": "hi", "logit_bias": {"-1": 1}}', "4xx"),
        ("logit-bias-big", b'{"prompt": "hi", "logit_bias": {"1": 101}}', "4xx"),
        ("logit-bias-str-val", b'{"prompt": "hi", "logit_bias": {"1": "1"}}', "4xx"),
        ("logit-bias-all-minus", b'{"prompt": "hi", "max_tokens": 3, "logit_bias": {"50256": -100}}', "ok"),
        ("stop-5", b'{"prompt": "hi", "stop": ["a","b","c","d","e"]}', "4xx"),
        ("stop-10k", ('{"prompt": "hi", "max_tokens": 2, "stop": "' + "x" * 10_000 + '"}').encode(), "any"),
        ("stop-empty-list-item", b'{"prompt": "hi", "max_tokens": 4, "stop": [""]}', "any"),
        ("stop-null-item", b'{"prompt": "hi", "stop": [null]}', "4xx"),
        ("stream-options-usage-str", b'{"prompt": "hi", "stream": true, "stream_options": {"include_usage": "yes"}}', "4xx"),
        ("model-500k", ('{"prompt": "hi", "model": "' + "m" * 500_000 + '"}').encode(), "4xx"),
        ("model-nul", b'{"prompt": "hi", "model": "tiny\\u0000"}', "4xx"),
        ("many-keys", ("{" + ",".join(f'"k{i}": {i}' for i in range(50_000)) + ', "prompt": "hi", "max_tokens": 1}').encode(), "any"),
    ]
    for name, b, allowed in bodies:
        yield ("json", f"completions:{name}", request("POST", c, b), allowed)
    chat = [
        ("empty", b"", "4xx"), ("array", b"[]", "4xx"), ("invalid-utf8", b'{"messages": [{"role": "user", "content": "\xff"}]}', "4xx"),
        ("no-messages", b"{}", "4xx"), ("messages-empty", b'{"messages": []}', "4xx"),
        ("message-null", b'{"messages": [null]}', "4xx"), ("message-str", b'{"messages": ["hi"]}', "4xx"),
        ("role-missing", b'{"messages": [{"content": "hi"}]}', "4xx"),
        ("role-tool", b'{"messages": [{"role": "tool", "content": "hi"}]}', "4xx"),
        ("role-function", b'{"messages": [{"role": "function", "content": "hi", "name": "f"}]}', "4xx"),
        ("role-upper", b'{"messages": [{"role": "USER", "content": "hi"}]}', "4xx"),
        ("role-number", b'{"messages": [{"role": 1, "content": "hi"}]}', "4xx"),
        ("content-null-user", b'{"messages": [{"role": "user", "content": null}]}', "4xx"),
        ("content-number", b'{"messages": [{"role": "user", "content": 5}]}', "4xx"),
        ("content-object", b'{"messages": [{"role": "user", "content": {"text": "hi"}}]}', "4xx"),
        ("content-image", b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]}', "4xx"),
        ("content-part-no-text", b'{"messages": [{"role": "user", "content": [{"type": "text"}]}]}', "4xx"),
        ("content-parts-empty", b'{"messages": [{"role": "user", "content": []}], "max_tokens": 1}', "any"),
        ("content-parts-deep", ('{"messages": [{"role": "user", "content": ' + deep_a + "}]}").encode(), "4xx"),
        ("assistant-null", b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": null}], "max_tokens": 1}', "ok"),
        ("developer", b'{"messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "hi"}], "max_tokens": 1}', "ok"),
        ("messages-10k", ('{"messages": [' + ",".join(['{"role": "user", "content": "hi"}'] * 10_000) + "]}").encode(), "4xx"),
        ("content-500k", ('{"messages": [{"role": "user", "content": "' + "word " * 100_000 + '"}]}').encode(), "4xx"),
        ("template-syntax", b'{"messages": [{"role": "user", "content": "{{ 7*7 }} {% for x in y %}"}], "max_tokens": 1}', "ok"),
        ("eot-in-content", b'{"messages": [{"role": "user", "content": "<|endoftext|>"}], "max_tokens": 1}', "ok"),
        ("max-completion-0", b'{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}', "4xx"),
        ("top-logprobs-21", b'{"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 21}', "4xx"),
        ("logprobs-int", b'{"messages": [{"role": "user", "content": "hi"}], "logprobs": 5}', "4xx"),
        ("n-5", b'{"messages": [{"role": "user", "content": "hi"}], "n": 5}', "4xx"),
    ]
    for name, b, allowed in chat:
        yield ("json", f"chat:{name}", request("POST", ch, b), allowed)


def http_cases():
    c = "/v1/completions"
    ok_body = json.dumps(COMPLETION)
    for path in ["/v1", "/v1/", "/v1/engines", "/v1/completions/", "/V1/completions", "/v1/models/other",
                 "/v1/models/" + "m" * 5000, "/%2e%2e/%2e%2e/etc/passwd", "/../../etc/passwd", "/v1/../health/x",
                 "/" + "a" * 60_000, "/%ff%fe", "/%00", "/metrics/x", "/health/", "//v1/models",
                 "/v1/chat", "/v1/embeddings", "/favicon.ico"]:
        yield ("path", f"GET {path[:40]}", request("GET", path), "4xx")
    yield ("path", "GET /?" + "&" * 20, request("GET", "/?" + "&" * 5000), "any")  # the page
    yield ("path", "POST /v1/embeddings", request("POST", "/v1/embeddings", ok_body), "4xx")
    yield ("path", "raw-bytes-path", request("GET", b"/\xff\xfe\x00"), "4xx")
    yield ("path", "asterisk-target", request("GET", "*"), "4xx")
    yield ("path", "absolute-form", request("GET", "http://evil.example/v1/nothing"), "4xx")
    yield ("path", "authority-form", request("CONNECT", "evil.example:443"), "4xx")
    for method, path in [("GET", "/v1/completions"), ("PUT", "/v1/completions"), ("DELETE", "/v1/completions"),
                         ("PATCH", "/v1/chat/completions"), ("GET", "/v1/chat/completions"),
                         ("POST", "/v1/models"), ("POST", "/health"), ("POST", "/metrics"), ("POST", "/"),
                         ("DELETE", "/v1/models/tiny"), ("TRACE", "/"), ("FOO", "/"), ("get", "/health"),
                         ("PROPFIND", "/v1/models"), ("HEAD", "/v1/completions")]:
        yield ("method", f"{method} {path}", request(method, path, ok_body if method != "GET" else None), "4xx",
               {"head_only": method == "HEAD"})
    yield ("method", "OPTIONS /v1/completions", request("OPTIONS", c), "any")
    yield ("method", "OPTIONS /nowhere", request("OPTIONS", "/nowhere"), "any")
    yield ("method", "HEAD /health", request("HEAD", "/health"), "any", {"head_only": True})
    raw = [
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64), "4xx"),
        ("garbage-text", b"HELLO WORLD\r\n\r\n", "4xx"),
        ("empty-lines", b"\r\n\r\n\r\n\r\n", "4xx"),
        ("http09", b"GET /\r\n\r\n", "4xx"),
        ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "4xx"),
        ("version-2", b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", "4xx"),
        ("version-9", b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", "4xx"),
        ("version-junk", b"GET /health HTTQ/1.1\r\nHost: x\r\n\r\n", "4xx"),
        ("no-host-1.1", b"POST /v1/completions HTTP/1.1\r\nAuthorization: Bearer sk-fuzz\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", "4xx"),
        ("http10-bad-body", b"POST /v1/completions HTTP/1.0\r\nAuthorization: Bearer sk-fuzz\r\nContent-Length: 2\r\n\r\n{}", "4xx"),
        ("header-no-colon", b"GET /health HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", "4xx"),
        ("header-space-name", b"GET /health HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", "4xx"),
        ("header-nul", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", "4xx"),
        ("header-obs-fold", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", "any"),
        ("header-empty-name", b"GET /health HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", "4xx"),
        ("bare-lf", b"GET /nowhere HTTP/1.1\nHost: x\nConnection: close\n\n", "4xx"),
        ("bare-cr", b"GET /nowhere HTTP/1.1\rHost: x\r\r", "4xx"),
        ("request-line-spaces", b"GET  /health  HTTP/1.1\r\nHost: x\r\n\r\n", "4xx"),
        ("method-utf8", "GÉT /health HTTP/1.1\r\nHost: x\r\n\r\n".encode(), "4xx"),
    ]
    # Complete requests keep the write side open: hyper drops the answer to a request whose
    # client half-closed (it takes the EOF for a hang-up); incomplete ones half-close.
    for name, b, allowed in raw:
        yield ("raw", name, b, allowed, {"half_close": name == "empty-lines"})
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-fuzz\r\nConnection: close\r\n"
    body = ok_body.encode()
    framing = [
        ("cl-letters", head + b"Content-Length: abc\r\n\r\n" + body, "4xx"),
        ("cl-negative", head + b"Content-Length: -1\r\n\r\n" + body, "4xx"),
        ("cl-plus", head + b"Content-Length: +10\r\n\r\n" + body, "4xx"),
        ("cl-overflow", head + b"Content-Length: 99999999999999999999999\r\n\r\n" + body, "4xx"),
        ("cl-two-different", head + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n" + body, "4xx"),
        ("cl-list", head + b"Content-Length: 5, 6\r\n\r\n" + body, "4xx"),
        ("cl-short", head + b"Content-Length: 5\r\n\r\n" + body, "4xx"),
        ("cl-zero", head + b"Content-Length: 0\r\n\r\n", "4xx"),
        ("cl-and-chunked", head + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "4xx"),
        ("te-gzip", head + b"Transfer-Encoding: gzip\r\n\r\n" + body, "4xx"),
        ("te-chunked-gzip", head + b"Transfer-Encoding: chunked, gzip\r\n\r\n" + body, "4xx"),
        ("te-space", head + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", "4xx"),
        ("chunk-size-junk", head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "4xx"),
        ("chunk-size-overflow", head + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", "4xx"),
        ("chunk-size-lies", head + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n", "4xx"),
        ("chunk-ext-junk", head + b"Transfer-Encoding: chunked\r\n\r\n2;\x01\x02\r\n{}\r\n0\r\n\r\n", "4xx"),
        ("chunk-no-end", head + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", "4xx"),
        ("chunk-empty-json", head + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", "4xx"),
        ("pipelined-garbage", request("POST", c, body, close=False) + b"GARBAGE / NONSENSE\r\n\r\n", "any"),
        ("pipelined-smuggle", request("POST", c, b'{"prompt": "hi"', close=False) + b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "4xx"),
    ]
    for name, b, allowed in framing:
        yield ("framing", name, b, allowed, {"half_close": name == "chunk-no-end"})
    # Truncated requests: the client half-closes mid-way.
    full = request("POST", c, body)
    cut_at = {"request-line": 10, "headers": full.index(b"Content-Length") + 5,
              "after-head": full.index(b"\r\n\r\n") + 4, "mid-body": len(full) - 5, "mid-utf8": None}
    for name, n in cut_at.items():
        if n is None:
            b = request("POST", c, '{"prompt": "é"}'.encode()[:14], content_length=False)
            b = b.replace(b"Connection: close\r\n", b"Connection: close\r\nContent-Length: 17\r\n")
        else:
            b = full[:n]
        yield ("truncated", name, b, "4xx", {"half_close": True})
    # Sizes: 10 MB bodies over the 1 MiB limit.
    big = b'{"prompt": "' + b"x" * (10 << 20) + b'"}'
    yield ("size", "10MB-declared", request("POST", c, big), "4xx")
    yield ("size", "10MB-declared-chat", request("POST", "/v1/chat/completions", big), "4xx")
    yield ("size", "10MB-chunked", head + b"Transfer-Encoding: chunked\r\n\r\n" +
           b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 65536]), big[i:i + 65536]) for i in range(0, len(big), 65536)) + b"0\r\n\r\n", "4xx")
    yield ("size", "10MB-no-length-http10", b"POST /v1/completions HTTP/1.0\r\nAuthorization: Bearer sk-fuzz\r\n\r\n" + big, "4xx",
           {"half_close": True})
    yield ("size", "10MB-expect-continue", head + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(big), "4xx")
    yield ("size", "10MB-unauthorized", request("POST", c, big, key="wrong"), "4xx")
    yield ("size", "1MiB+1", request("POST", c, b'{"prompt": "' + b"x" * (1 << 20) + b'"}'), "4xx")
    # Huge headers.
    yield ("headers", "100KB-value", request("GET", "/health", headers=[("X-Big", "a" * 100_000)]), "any")
    yield ("headers", "1MB-value", request("GET", "/health", headers=[("X-Big", "a" * 1_000_000)]), "4xx")
    yield ("headers", "2000-headers", request("GET", "/health", headers=[(f"X-H{i}", "v") for i in range(2000)]), "4xx")
    yield ("headers", "1MB-auth", request("POST", c, ok_body, key="k" * 1_000_000), "4xx")
    yield ("headers", "1MB-cookie", request("GET", "/v1/models", headers=[("Cookie", "a=" + "b" * 1_000_000)]), "4xx")
    yield ("headers", "300KB-path", request("GET", "/" + "p" * 300_000), "4xx")
    # API keys.
    m = "/v1/models"
    for name, h in [("missing", None), ("wrong", b"Bearer sk-nope"), ("empty", b"Bearer "), ("scheme-only", b"Bearer"),
                    ("basic", b"Basic c2stZnV6ejo="), ("lowercase-scheme", b"bearer sk-fuzz"),
                    ("non-ascii", b"Bearer sk-fuzz\xff"), ("prefix", b"Bearer sk-fu"), ("longer", b"Bearer sk-fuzzz"),
                    ("double", b"Bearer sk-fuzz, Bearer sk-fuzz"), ("tab", b"Bearer\tsk-fuzz")]:
        hdr = [] if h is None else [(b"Authorization", h)]
        for path, body_ in [(m, None), (c, ok_body)]:
            yield ("auth", f"{name} {path}", request("POST" if body_ else "GET", path, body_, headers=hdr, key=None), "4xx")
    yield ("auth", "two-headers", request("GET", m, headers=[(b"Authorization", b"Bearer sk-nope")]), "any")
    # Content types the server does not look at (a valid JSON body): allowed either way.
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]:
        b = request("POST", c, ok_body).replace(b"Content-Type: application/json", b"Content-Type: " + ct.encode())
        yield ("content-type", ct, b, "any")


def all_cases():
    for gen in (field_cases, json_cases, http_cases):
        for case in gen():
            yield case if len(case) == 5 else (*case, {})


# --- runs ---------------------------------------------------------------------------------------


def main():
    global KEY, MODEL
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=BINARY)
    ap.add_argument("--url", help="a running server (default: start one)")
    ap.add_argument("--pid", type=int, help="its process id (for the memory check)")
    ap.add_argument("--api-key", default=KEY)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds one request may take")
    ap.add_argument("--slow-bodies", type=int, default=3, help="connections dribbling a body")
    ap.add_argument("--slow-heads", type=int, default=2, help="connections dribbling a request head")
    ap.add_argument("--idle", type=int, default=1, help="connections that send nothing")
    ap.add_argument("--slow-interval", type=float, default=2.0, help="seconds between dribbled bytes")
    ap.add_argument("--slow-wait", type=float, default=45.0,
                    help="seconds a slow client may be held before it counts as a hang "
                         "(over the server's 30 s body timeout)")
    ap.add_argument("--burst", type=int, default=24, help="concurrent valid requests in the burst")
    ap.add_argument("--disconnects", type=int, default=16, help="clients that hang up mid-stream")
    ap.add_argument("--max-rss-growth-mib", type=float, default=64.0)
    ap.add_argument("--passes", type=int, default=2,
                    help="times the cases run (memory must level off after the first)")
    ap.add_argument("--verbose", action="store_true", help="print every case's outcome")
    args = ap.parse_args()
    KEY = args.api_key

    srv = tmp = None
    if args.url:
        host, port = args.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        addr, pid = (host, int(port)), args.pid
        # The served model's id (the cases name it); the field ranges assume the tiny model
        # (context 128, vocabulary 50257) and --max-batch 4.
        MODEL = json.loads(exchange(addr, request("GET", "/v1/models"), 10).body)["data"][0]["id"]
        COMPLETION["model"] = CHAT["model"] = MODEL
    else:
        tmp = tempfile.mkdtemp(prefix="serve-fuzz-")
        srv = Server(make_model(f"{tmp}/tiny"), ["--api-key", KEY, "--max-batch", str(MAX_BATCH),
                                                 "--max-queue", str(MAX_QUEUE)], binary=args.binary)
        addr, pid = (srv.host, srv.port), srv.pid
        print(f"server: {srv.url} (pid {pid}) --max-batch {MAX_BATCH} --max-queue {MAX_QUEUE}, "
              f"body limit 1 MiB (default), body timeout 30 s")
    try:
        ok = run(args, addr, pid)
    finally:
        if srv is not None:
            alive = srv.alive()
            rc = srv.stop()
            print(f"server {'stopped' if alive else 'had died'}, exit status {rc}")
            if not alive:
                ok = False
                print(srv.output()[-3000:])
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


def rss(pid):
    if pid is None:
        return None
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    return out


def fmt_rss(r):
    return "n/a" if r is None else f"VmRSS {r['VmRSS']:.1f} MiB, VmHWM {r['VmHWM']:.1f} MiB"


def completion(addr, body, path="/v1/completions", timeout=60):
    o = exchange(addr, request("POST", path, json.dumps(body)), timeout)
    return o.status, (json.loads(o.body) if o.body.startswith(b"{") else o.body)


def metrics(addr):
    o = exchange(addr, request("GET", "/metrics"), 10)
    out = {}
    for line in o.body.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def run(args, addr, pid):
    failures = []
    counts = collections.Counter()
    by_family = collections.defaultdict(collections.Counter)
    notes = []
    total = 0

    def judge(family, name, o, allowed):
        nonlocal total
        total += 1
        lab = o.label()
        counts[lab] += 1
        by_family[family][lab] += 1
        bad = None
        if o.hang:
            bad = f"no answer in time ({o.error})"
        elif o.status is not None and (o.status >= 500 or o.status < 0):
            bad = f"status {o.status}: {o.body[:200]!r}"
        elif o.status is not None and 200 <= o.status < 400 and allowed == "4xx":
            bad = f"accepted ({o.status}): {o.body[:160]!r}"
        elif o.status is not None and 400 <= o.status < 500 and allowed == "ok":
            notes.append(f"{family}/{name}: {o.status} {o.body[:160]!r}")
        if o.status is not None and 400 <= o.status < 500 and o.body and family not in ("raw", "framing", "headers", "size"):
            # The server's own 4xx are in OpenAI's shape (hyper's and axum's own may be empty).
            try:
                e = json.loads(o.body)["error"]
                assert set(e) == {"message", "type", "param", "code"}
            except Exception:  # noqa: BLE001
                if o.status not in (405, 431, 414):
                    notes.append(f"{family}/{name}: {o.status} body not in OpenAI's error shape: {o.body[:120]!r}")
        if bad:
            failures.append(f"{family}/{name}: {bad}")
            print(f"FAIL  {family}/{name}: {bad}", flush=True)
        elif args.verbose:
            print(f"      {family}/{name} [{allowed}]: {lab} {o.body[:100]!r}", flush=True)

    # Reference answers and memory before.
    ref_c = completion(addr, {"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0})
    ref_chat = completion(addr, {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 12,
                                 "temperature": 0}, "/v1/chat/completions")
    if ref_c[0] != 200 or ref_chat[0] != 200:
        print(f"FAIL  the reference requests: {ref_c} {ref_chat}")
        return False
    # Warm-up: fill every cache row once so that memory the engine allocates on first use is in
    # the "before" figure.
    completion(addr, {"prompt": "warm", "max_tokens": 100, "n": MAX_BATCH, "temperature": 1.0, "logprobs": 5})
    m0 = metrics(addr)
    before = rss(pid)
    print(f"memory before: {fmt_rss(before)}")
    t0 = time.time()

    # Slow clients, in the background.
    slow_results = []

    def slow(kind, i):
        body = json.dumps(COMPLETION).encode()
        if kind == "body":
            parts = [request("POST", "/v1/completions", body)[:-len(body)]]
            parts += [x for ch in body for x in (args.slow_interval, bytes([ch]))]
        elif kind == "head":
            full = request("POST", "/v1/completions", body)
            parts = [x for ch in full for x in (args.slow_interval, bytes([ch]))]
        else:
            parts = [args.slow_wait + 5.0]
        start = time.time()
        o = slow_exchange(addr, parts, args.slow_wait)
        slow_results.append((kind, i, o, time.time() - start))

    threads = [threading.Thread(target=slow, args=(k, i), daemon=True)
               for k, n in (("body", args.slow_bodies), ("head", args.slow_heads), ("idle", args.idle))
               for i in range(n)]
    for t in threads:
        t.start()

    # The cases, one connection each.
    for p in range(args.passes):
        for family, name, raw, allowed, opts in all_cases():
            o = exchange(addr, raw, opts.get("timeout", args.timeout), half_close=opts.get("half_close", False),
                         head_only=opts.get("head_only", False))
            judge(family, name, o, allowed)
            if total % 250 == 0:
                print(f"  {total} requests, {time.time() - t0:.0f} s, {fmt_rss(rss(pid))}", flush=True)
        print(f"pass {p + 1} of the cases done: {total} requests, {fmt_rss(rss(pid))}", flush=True)

    # A burst of valid requests over the batch and the queue: each gets 200 or 429.
    def burst_one(i):
        b = {"prompt": f"burst {i}", "max_tokens": 48, "temperature": 1.0, "seed": i, "stream": i % 2 == 0}
        return exchange(addr, request("POST", "/v1/completions", json.dumps(b)), 60)

    burst = [None] * args.burst
    ths = [threading.Thread(target=lambda i=i: burst.__setitem__(i, burst_one(i))) for i in range(args.burst)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    for i, o in enumerate(burst):
        judge("burst", f"burst-{i}", o, "any")
        if o.status not in (200, 429, None):
            failures.append(f"burst/burst-{i}: {o.status}, expected 200 or 429")
            print(f"FAIL  burst/burst-{i}: {o.status}, expected 200 or 429", flush=True)
    print(f"burst of {args.burst} over --max-batch {MAX_BATCH} --max-queue {MAX_QUEUE}: "
          f"{dict(collections.Counter(o.label() for o in burst))}")

    # Clients that hang up mid-stream (half of them before the first byte comes back).
    for i in range(args.disconnects):
        b = {"prompt": f"leave {i}", "max_tokens": 100, "stream": True, "n": 1 + i % MAX_BATCH}
        sock = socket.create_connection(addr, timeout=10)
        sock.sendall(request("POST", "/v1/completions", json.dumps(b)))
        if i % 2:
            sock.recv(64)
        sock.close()
        total += 1
        counts["hung up"] += 1
        by_family["disconnect"]["hung up"] += 1

    # Wait for the slow clients.
    for t in threads:
        t.join(args.slow_wait + 30)
    for kind, i, o, secs in sorted(slow_results, key=lambda r: (r[0], r[1])):
        total += 1
        lab = o.label()
        counts[lab] += 1
        by_family[f"slow-{kind}"][lab] += 1
        line = f"slow {kind} #{i}: {lab} after {secs:.1f} s"
        if o.hang or (o.status is not None and (o.status >= 500 or o.status < 400)):
            failures.append(line + (" (still open: the server never timed the client out)" if o.hang else ""))
            print(f"FAIL  {line}" + (" (held open until the check gave up)" if o.hang else ""), flush=True)
        else:
            print(f"      {line}")

    # The server afterwards.
    time.sleep(1.0)
    after_c = completion(addr, {"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0})
    after_chat = completion(addr, {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 12,
                                   "temperature": 0}, "/v1/chat/completions")
    same = (after_c[0] == 200 and after_c[1]["choices"][0]["text"] == ref_c[1]["choices"][0]["text"] and
            after_chat[0] == 200 and
            after_chat[1]["choices"][0]["message"] == ref_chat[1]["choices"][0]["message"])
    health = exchange(addr, request("GET", "/health"), 10)
    m1 = metrics(addr)
    after = rss(pid)
    print(f"\nafter the fuzzing ({time.time() - t0:.0f} s):")
    print(f"  correct requests: {'the same answers as before' if same else 'DIFFERENT'} "
          f"({after_c[1]['choices'][0]['text']!r} / {after_chat[1]['choices'][0]['message']['content']!r})"
          if after_c[0] == 200 and after_chat[0] == 200 else f"  correct requests: {after_c[0]}, {after_chat[0]}")
    if not same:
        failures.append("the server answers a correct request differently after the fuzzing")
    if health.status != 200:
        failures.append(f"/health is {health.status}")
    running, waiting = m1.get("gpt_requests_running"), m1.get("gpt_requests_waiting")
    print(f"  /health {health.status}; running {running:.0f}, waiting {waiting:.0f}, "
          f"cancelled {m1.get('gpt_requests_cancelled_total', 0) - m0.get('gpt_requests_cancelled_total', 0):+.0f}, "
          f"errors {m1.get('gpt_request_errors_total', 0) - m0.get('gpt_request_errors_total', 0):+.0f}, "
          f"KV cache use {m1.get('gpt_kv_cache_usage_ratio', 0):.3f}")
    if running or waiting or m1.get("gpt_kv_cache_usage_ratio", 0):
        failures.append(f"requests left behind: running {running}, waiting {waiting}, "
                        f"KV use {m1.get('gpt_kv_cache_usage_ratio')}")
    print(f"  memory before: {fmt_rss(before)}\n  memory after:  {fmt_rss(after)}")
    if before and after:
        growth = after["VmRSS"] - before["VmRSS"]
        print(f"  VmRSS growth {growth:+.1f} MiB, VmHWM growth {after['VmHWM'] - before['VmHWM']:+.1f} MiB "
              f"(limit {args.max_rss_growth_mib:.0f} MiB)")
        if growth > args.max_rss_growth_mib:
            failures.append(f"VmRSS grew by {growth:.1f} MiB")

    print(f"\n{total} requests; by outcome: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for fam, c in by_family.items():
        print(f"  {fam:12s} " + ", ".join(f"{k}: {v}" for k, v in sorted(c.items())))
    for n in notes:
        print(f"NOTE  {n}")
    if failures:
        print(f"\n{len(failures)} failure(s):")
        for f in failures:
            print(f"  {f}")
    else:
        print("\nno failure")
    return not failures


def slow_exchange(addr, parts, wait):
    """Like `exchange`, but stops dribbling as soon as the server answers or closes."""
    deadline = time.time() + wait
    sock = socket.create_connection(addr, timeout=10)
    sock.setblocking(False)
    buf = b""
    try:
        for p in parts:
            pause = p if isinstance(p, float) else 0.0
            end = min(deadline, time.time() + pause)
            while True:  # read whatever the server says while pausing
                try:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return Outcome(status=parse_status(buf) if buf else None, closed=not buf, body=buf)
                    buf += chunk
                    if b"\r\n\r\n" in buf:
                        return Outcome(status=parse_status(buf), body=buf)
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    return Outcome(closed=True, error="reset")
                if time.time() >= end:
                    break
                time.sleep(0.05)
            if time.time() >= deadline:
                return Outcome(hang=True, error=f"held open {wait:.0f} s")
            if isinstance(p, bytes):
                try:
                    sock.send(p)
                except (BrokenPipeError, ConnectionResetError):
                    return Outcome(closed=True, error="reset")
        # Everything sent: wait for the answer.
        sock.settimeout(max(0.01, deadline - time.time()))
        try:
            r = read_response(sock, deadline)
        except socket.timeout:
            return Outcome(hang=True, error="no answer after the whole request")
        return Outcome(closed=True) if r is None else Outcome(status=r[0], body=r[1])
    finally:
        sock.close()


if __name__ == "__main__":
    main()

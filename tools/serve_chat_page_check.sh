#!/usr/bin/env bash
# Dev check: the chat page of `gpt serve` in the system's Chromium (see
# tools/serve_chat_page_check.mjs). Starts the release binary on a tiny random-weight GPT-2
# with a chat template, runs the browser script, stops the server.
#
#   tools/serve_chat_page_check.sh [SCREENSHOT.png]      (default: /tmp/serve_chat_page.png)
#
# Needs: `cargo build --release`; Chromium (`apt-get install -y chromium`, or CHROMIUM=PATH);
# node with playwright-core in tools/node_modules (installed here on first use; it downloads
# no browser). Exit status: the browser script's.
set -euo pipefail
cd "$(dirname "$0")/.."
shot=$(realpath -m "${1:-/tmp/serve_chat_page.png}")
bin=target/release/gpt
[ -x "$bin" ] || { echo "$bin is missing: run cargo build --release" >&2; exit 2; }
if [ ! -d tools/node_modules/playwright-core ]; then
  (cd tools && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

dir=$(mktemp -d -t serve-chat-page.XXXXXX)
server=
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"
    wait "$server" || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
python3 tools/serve_check_common.py make-model "$dir/tiny-chat" --chat-template >/dev/null
"$bin" serve --model "$dir/tiny-chat" --port 0 >"$dir/server.log" 2>&1 </dev/null &
server=$!
url=
for _ in $(seq 600); do
  kill -0 "$server" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  url=${url:-$(grep -o 'listening on http://[0-9.:]*' "$dir/server.log" | head -1 | cut -d' ' -f3 || true)}
  if [ -n "$url" ] && curl -sf "$url/health" >/dev/null; then break; fi
  sleep 0.1
done
[ -n "$url" ] || { echo "the server did not start:" >&2; cat "$dir/server.log" >&2; exit 1; }
echo "server: $url (pid $server), chat template: $(grep -o '"chat_template": "[^"]*' "$dir/tiny-chat/tokenizer_config.json" | cut -c19-80)..."
rc=0
node tools/serve_chat_page_check.mjs "$url" "$shot" || rc=$?
exit $rc

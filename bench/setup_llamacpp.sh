#!/usr/bin/env bash
# Fetches llama.cpp's `convert_hf_to_gguf.py` (and the rest of llama.cpp's source) from the
# llama-cpp-python 0.3.36 source distribution on PyPI, checked against its published sha256,
# into ~/.cache/gpt-llamacpp. The llama_cpp Python package itself comes from
# `../shared/tools/setup-ref.sh --extras`. Used by `gpt bench generate --vs-llamacpp` and
# `tools/fixtures_gguf.py`.
set -euo pipefail
DEST="${GPT_LLAMACPP_DIR:-$HOME/.cache/gpt-llamacpp}"
VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
URL="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$VERSION.tar.gz"
CONVERT="$DEST/llama_cpp_python-$VERSION/vendor/llama.cpp/convert_hf_to_gguf.py"
if [ -f "$CONVERT" ]; then
  echo "$CONVERT"
  exit 0
fi
mkdir -p "$DEST"
curl -sSfL -o "$DEST/sdist.tar.gz" "$URL"
echo "$SHA256  $DEST/sdist.tar.gz" | sha256sum -c - >&2
tar xzf "$DEST/sdist.tar.gz" -C "$DEST"
rm "$DEST/sdist.tar.gz"
echo "$CONVERT"

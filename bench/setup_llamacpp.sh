#!/usr/bin/env bash
# Fetches llama.cpp's `convert_hf_to_gguf.py` (and the rest of llama.cpp's source) from the
# llama-cpp-python 0.3.36 source distribution on PyPI, checked against its published sha256,
# into ~/.cache/gpt-llamacpp. The llama_cpp Python package itself comes from
# `../shared/tools/setup-ref.sh --extras`. Used by `gpt bench generate --vs-llamacpp` and
# `tools/fixtures_gguf.py`. On a CPU with AMX it also rebuilds llama-cpp-python without the
# AMX backend (below).
set -euo pipefail
DEST="${GPT_LLAMACPP_DIR:-$HOME/.cache/gpt-llamacpp}"
VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
URL="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$VERSION.tar.gz"
CONVERT="$DEST/llama_cpp_python-$VERSION/vendor/llama.cpp/convert_hf_to_gguf.py"
PY="${REFENV:-$HOME/.cache/gpt-refenv}/bin/python"

# On a CPU with AMX (Intel Sapphire Rapids and later), a llama.cpp built for the native CPU
# includes the AMX backend, which crashed with SIGSEGV in ggml_backend_amx_mul_mat on every
# Q8_0 run on the 2-core Intel VM of 2026-12-04 (f32 and f16 ran). What a user there does:
# build without AMX, keeping every AVX-512 extension the CPU has. About 5 minutes on 2 cores.
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null && [ -x "$PY" ] \
  && "$PY" -c "import llama_cpp, sys; sys.exit(0 if b'AMX_INT8 = 1' in llama_cpp.llama_print_system_info() else 1)" 2>/dev/null; then
  echo "rebuilding llama-cpp-python $VERSION without its AMX backend (crashes on Q8_0 here)" >&2
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
-DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON \
-DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    "$PY" -m pip install -q --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" >&2
fi

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

#!/usr/bin/env bash
# Optional GGUF stack: llama-cpp-python (llama.cpp compiled once, cached) + llama.cpp's converter.
#   bash scripts/setup_gguf.sh              # what `make setup-gguf` runs
#   PSY_CACHE_DIR=/shared/cache bash scripts/setup_gguf.sh
# llama-cpp-python is published on PyPI as an sdist only; installing it compiles llama.cpp
# (4.5-12 min on 2 cores). pip's own wheel cache ignores CMAKE_ARGS, so we build the wheel
# explicitly into a cache directory keyed by version + CMake arguments and reuse it: a second
# run (or another venv, or a CI job on the same machine) installs in seconds.
# The build is portable (-DGGML_NATIVE=OFF: AVX2 baseline, runs on any AVX2 node of a cluster).
# The sdist also ships llama.cpp's convert_hf_to_gguf.py / convert_lora_to_gguf.py with their
# `conversion/` package and `gguf-py/`; they are unpacked into the same cache directory (never
# into the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
C=requirements/constraints.txt
VERSION=$(sed -n 's/^llama[-_]cpp[-_]python==//Ip' "$C")
[ -n "$VERSION" ] || { echo "[setup-gguf] llama-cpp-python is not pinned in $C" >&2; exit 1; }
CMAKE_ARGS_GGUF=${PSY_GGUF_CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}
CACHE=${PSY_CACHE_DIR:-$HOME/.cache/psyfactory}
KEY=$(printf '%s' "$CMAKE_ARGS_GGUF" | sha256sum | cut -c1-12)
DIR="$CACHE/llama-cpp-python/$VERSION-$KEY"
SDIST_DIR="$DIR/sdist"
WHEEL_DIR="$DIR/wheels"
CONV_DIR="$DIR/converter"
[ -x "$PY" ] || { echo "[setup-gguf] $PY not found: run 'make setup' first" >&2; exit 1; }
mkdir -p "$SDIST_DIR" "$WHEEL_DIR"
# One setup at a time per cache entry (parallel CI jobs / cluster nodes sharing the cache).
exec 9>"$DIR/.lock"
flock 9

# 1. The pinned sdist from the package index (needed for the wheel and for the converter).
SDIST=$(ls "$SDIST_DIR"/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)
if [ -z "$SDIST" ]; then
  echo "[setup-gguf] downloading llama-cpp-python==$VERSION sdist"
  "$PY" -m pip download -q --no-binary llama-cpp-python --no-deps -d "$SDIST_DIR" "llama-cpp-python==$VERSION"
  SDIST=$(ls "$SDIST_DIR"/llama_cpp_python-"$VERSION".tar.gz)
fi

# 2. The wheel, built once per (version, CMake args).
WHEEL=$(ls "$WHEEL_DIR"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$WHEEL" ]; then
  echo "[setup-gguf] compiling llama.cpp (CMAKE_ARGS='$CMAKE_ARGS_GGUF'); takes 5-12 min on 2 cores"
  start=$(date +%s)
  TMP_WHEELS=$(mktemp -d "$DIR/wheels.tmp.XXXXXX")
  CMAKE_ARGS="$CMAKE_ARGS_GGUF" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$PY" -m pip wheel -q --no-deps -w "$TMP_WHEELS" "$SDIST"
  mv "$TMP_WHEELS"/llama_cpp_python-*.whl "$WHEEL_DIR"/   # atomic within one filesystem
  rmdir "$TMP_WHEELS"
  WHEEL=$(ls "$WHEEL_DIR"/llama_cpp_python-"$VERSION"-*.whl | head -n1)
  echo "[setup-gguf] built $(basename "$WHEEL") in $(( $(date +%s) - start )) s"
else
  echo "[setup-gguf] reusing cached wheel $WHEEL"
fi

# 3. Install the wheel (its small runtime deps are pinned by the constraints file), the `gguf`
#    package (transformers needs it to read GGUF files; used by benchmarks/gguf_bench.py) and what
#    llama-cpp-python's OpenAI-compatible server needs beyond our stack (`make teacher`).
"$PY" -m pip install -q -c "$C" "$WHEEL" gguf starlette-context pydantic-settings

# 4. The converter, unpacked from the same sdist.
if [ ! -f "$CONV_DIR/convert_hf_to_gguf.py" ]; then
  echo "[setup-gguf] unpacking llama.cpp converter into $CONV_DIR"
  TMP_CONV=$(mktemp -d "$DIR/converter.tmp.XXXXXX")
  top="llama_cpp_python-$VERSION/vendor/llama.cpp"
  tar -xzf "$SDIST" -C "$TMP_CONV" --strip-components=3 \
    "$top/convert_hf_to_gguf.py" "$top/convert_lora_to_gguf.py" "$top/conversion" "$top/gguf-py"
  chmod 755 "$TMP_CONV"
  rm -rf "$CONV_DIR"
  mv "$TMP_CONV" "$CONV_DIR"
fi

# 5. Record where things are; psyfactory.gguf reads this file.
"$PY" - "$CONV_DIR" "$WHEEL" <<'PY'
import json, os, sys, tempfile
import llama_cpp
conv, wheel = sys.argv[1], sys.argv[2]
info = {"llama_cpp_python": llama_cpp.__version__, "converter_dir": conv, "wheel": wheel}
target = os.path.join(sys.prefix, "psyfactory-gguf.json")
fd, tmp = tempfile.mkstemp(dir=sys.prefix)
with os.fdopen(fd, "w") as f:
    json.dump(info, f, indent=2)
os.replace(tmp, target)
print(f"[setup-gguf] done: llama-cpp-python {info['llama_cpp_python']}, converter {conv}")
PY

#!/usr/bin/env bash
# Create the project virtualenv with a working, pinned LLaMA-Factory stack.
#   bash scripts/setup_env.sh            # CPU or CUDA, whatever `pip install torch==2.13.0` resolves to
#   VENV=/path/to/venv PYTHON=python3.11 bash scripts/setup_env.sh
# On a CUDA cluster the same pin pulls the CUDA build of torch 2.13.0 from PyPI. To use another torch (the
# cluster's own CUDA build, docs/install.md), set PSY_TORCH_SPEC:
#   PSY_TORCH_SPEC="torch==2.6.0 --index-url https://download.pytorch.org/whl/cu124" bash scripts/setup_env.sh
#   PSY_TORCH_SPEC=keep bash scripts/setup_env.sh   # the torch already importable in $VENV (e.g. a venv made with
#                                                   # --system-site-packages over the cluster's PyTorch module)
# Everything else stays pinned by the constraints file, torch's own line left out.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
C=requirements/constraints.txt
PIP_QUIET=${PIP_QUIET:--q}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install $PIP_QUIET --upgrade "pip>=24" setuptools wheel

# 1. torch first, so nothing later swaps it for another build.
TORCH_SPEC=${PSY_TORCH_SPEC:-}
if [ -z "$TORCH_SPEC" ]; then
  echo "[setup] torch (pinned in $C)"
  $PIP install $PIP_QUIET -c "$C" torch
else
  # Another torch: pyproject.toml asks only for a range (torch>=2.4,<2.14); every other pin still applies.
  NO_TORCH="$VENV/constraints-no-torch.txt"
  grep -v -E '^torch==' "$C" > "$NO_TORCH"
  C=$NO_TORCH
  if [ "$TORCH_SPEC" != keep ]; then
    echo "[setup] torch from PSY_TORCH_SPEC: $TORCH_SPEC"
    # shellcheck disable=SC2086  # pip arguments, split on purpose
    $PIP install $PIP_QUIET $TORCH_SPEC
  fi
  "$VENV/bin/python" -c "import torch" 2>/dev/null \
    || { echo "[setup] PSY_TORCH_SPEC=$TORCH_SPEC: no importable torch in $VENV" >&2; exit 1; }
  echo "[setup] torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') kept; the rest pinned by $C"
fi
# 2. The project and its runtime dependencies, all pinned by the constraints file; the extras the tests use
#    (dev; harness: lm-evaluation-harness for `make harness`, CPU-only, no vLLM).
echo "[setup] psyfactory + dependencies"
$PIP install $PIP_QUIET -c "$C" -e ".[dev,harness]"
# 3. LLaMA-Factory without its declared deps (they pull CUDA torchvision/torchaudio builds that
#    fail to import against this torch), and torchaudio, which llamafactory/data/mm_plugin.py imports
#    unconditionally. PyPI's torchaudio wheels carry C++ extensions built against CUDA and another
#    torch ABI; we drop them, and torchaudio falls back to its pure-Python API (it checks whether
#    the library files exist). We never load audio.
echo "[setup] llamafactory (no-deps) + pure-Python torchaudio"
$PIP install $PIP_QUIET --no-deps -c "$C" llamafactory torchaudio
TA_LIB=$("$VENV/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchaudio")
print(pathlib.Path(spec.origin).parent / "lib")
PY
)
rm -f "$TA_LIB"/*.so
# 4. Smoke check: the CLI that every target drives must import.
"$VENV/bin/python" -c "import torchaudio, llamafactory.data.mm_plugin, llamafactory.train.tuner" \
  || { echo "[setup] llamafactory failed to import; see above" >&2; exit 1; }
"$VENV/bin/python" -m pip check 2>/dev/null | grep -v -E "^llamafactory 0.9.5 requires (av|gradio|hf-transfer|modelscope|torchdata|torchvision|tyro)" || true
touch "$VENV/.psyfactory-setup"
echo "[setup] done: $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))"

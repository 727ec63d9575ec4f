"""Shared by the GGUF modules: what is installed, quantization names, cheap GGUF file checks."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path
from typing import Any

from psyfactory.core.errors import GGUFError

SETUP_COMMAND = "make setup-gguf"
QUANTS = ("Q4_K_M", "Q8_0", "Q5_K_M", "Q6_K")
DEFAULT_QUANT = "Q4_K_M"
SETUP_INFO = "psyfactory-gguf.json"  # written into the venv by scripts/setup_gguf.sh


class GGUFUnavailable(GGUFError):
    """The optional GGUF stack (llama-cpp-python + converter) is not installed."""

    def __init__(self, what: str) -> None:
        super().__init__(f"GGUF support is not installed ({what}). Enable it with: {SETUP_COMMAND}")


def setup_info() -> dict[str, Any]:
    """What scripts/setup_gguf.sh installed into this environment (raises GGUFUnavailable)."""
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise GGUFUnavailable("llama-cpp-python is missing from this Python environment")
    path = Path(sys.prefix) / SETUP_INFO
    if not path.is_file():
        raise GGUFUnavailable(f"{path} not found")
    info = json.loads(path.read_text(encoding="utf-8"))
    if not (Path(info["converter_dir"]) / "convert_hf_to_gguf.py").is_file():
        raise GGUFUnavailable(f"llama.cpp converter missing from {info['converter_dir']}")
    return info


def available() -> bool:
    try:
        setup_info()
    except GGUFUnavailable:
        return False
    return True


def check_gguf_file(path: str | Path) -> Path:
    """Cheap header check before llama.cpp sees the file: exists, GGUF magic, known version."""
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"{path}: GGUF file not found (run `make gguf` for this run first)")
    with path.open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        raise GGUFError(f"{path}: not a GGUF file (bad magic {head[:4]!r}, {path.stat().st_size} bytes)")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3):
        raise GGUFError(f"{path}: unsupported GGUF version {version}")
    if n_kv == 0:
        raise GGUFError(f"{path}: GGUF header has no metadata")
    return path



"""llama.cpp in a child process: HF -> GGUF conversion (convert_hf_to_gguf.py), LoRA adapters
(convert_lora_to_gguf.py) and quantization. A crash or abort of the child is a GGUFError."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from psyfactory.core.errors import GGUFError
from psyfactory.gguf.common import QUANTS, check_gguf_file, setup_info


def _worker(args: list[str], *, what: str) -> None:
    """Run `python -m psyfactory.gguf.worker ARGS`; a crash or abort becomes a GGUFError.

    stderr is read live: notices, warnings and the converter's verdict are shown as they come (all
    lines with PSY_GGUF_VERBOSE=1); the last lines go into the error message if the child fails.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    verbose = os.environ.get("PSY_GGUF_VERBOSE", "") not in ("", "0")
    tail: deque[str] = deque(maxlen=15)
    with subprocess.Popen([sys.executable, "-m", "psyfactory.gguf.worker", *args], env=env, text=True,
                          stderr=subprocess.PIPE, errors="replace") as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            if verbose or "NOTICE" in line or "successfully exported" in line or line.startswith("WARNING"):
                print(line, file=sys.stderr, flush=True)
    if proc.returncode != 0:
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise GGUFError(f"{what} failed ({how}):\n" + "\n".join(tail))


def _produce(final: Path, args_for: Any, what: str) -> Path:
    """Run a worker that writes `final` via a temp name in the same directory; rename on success only."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp.gguf")
    try:
        _worker(args_for(tmp), what=what)
        check_gguf_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(final)
    return final


def convert(model_dir: str | Path, outfile: str | Path, *, local_tokenizer: str | Path | None = None,
            outtype: str = "f16") -> Path:
    """HF model dir -> GGUF with llama.cpp's convert_hf_to_gguf.py.

    `local_tokenizer`: directory of PsyFactory's locally trained tokenizer (the tiny model's). If
    the model's tokenizer hashes like it, its (unknown to llama.cpp) pre-tokenizer is registered
    for this conversion only, with a printed notice; other tokenizers are unaffected.
    """
    info = setup_info()
    model_dir, outfile = Path(model_dir), Path(outfile)
    if not (model_dir / "config.json").is_file():
        raise GGUFError(f"{model_dir}: no config.json; not a local Hugging Face model directory")
    extra = ["--local-tokenizer", str(local_tokenizer)] if local_tokenizer else []
    return _produce(outfile, lambda tmp: ["convert", info["converter_dir"], str(model_dir), str(tmp),
                                          "--outtype", outtype, *extra], f"convert_hf_to_gguf {model_dir}")


def convert_lora(adapter_dir: str | Path, base_dir: str | Path, outfile: str | Path) -> Path:
    """PEFT LoRA adapter -> GGUF adapter (llama.cpp convert_lora_to_gguf.py), f16."""
    info = setup_info()
    adapter_dir, outfile = Path(adapter_dir), Path(outfile)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise GGUFError(f"{adapter_dir}: no adapter_config.json; expected a PEFT LoRA adapter")
    return _produce(outfile, lambda tmp: ["convert", info["converter_dir"], str(adapter_dir), str(tmp),
                                          "--lora-base", str(base_dir)], f"convert_lora_to_gguf {adapter_dir}")


def quantize(src: str | Path, dst: str | Path, quant: str, *, allow_requantize: bool = False) -> Path:
    """f16 GGUF -> quantized GGUF through llama_model_quantize (llama-cpp-python bindings).

    allow_requantize: accept an already quantized source (quality compounds; used by the benchmark
    for a model that is only published quantized). quant may then also be F16.
    """
    setup_info()
    quant = quant.upper()
    if quant not in QUANTS and not (allow_requantize and quant == "F16"):
        raise GGUFError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANTS)}")
    src = check_gguf_file(src)
    extra = ["--allow-requantize"] if allow_requantize else []
    return _produce(Path(dst), lambda tmp: ["quantize", str(src), str(tmp), quant, *extra],
                    f"quantize {src.name} -> {quant}")



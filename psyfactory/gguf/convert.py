"""llama.cpp in a child process: HF -> GGUF conversion (convert_hf_to_gguf.py), LoRA adapters
(convert_lora_to_gguf.py) and quantization. A crash or abort of the child is a GGUFError."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from psyfactory.core import settings
from psyfactory.core.errors import GGUFError
from psyfactory.core.paths import cache_dir
from psyfactory.gguf.common import QUANTS, check_gguf_file, setup_info
from psyfactory.gguf.tokcheck import check_tokenizer

_BACKTRACE = re.compile(r"^\s*(#\d+|\[New |\[Thread |\[Inferior |0x[0-9a-f]+ in |Using host libthread)")


def failure_reason(lines: list[str]) -> str:
    """The line of a failed child's stderr that says what went wrong (not a gdb backtrace frame)."""
    lines = [ln.strip() for ln in lines if ln.strip() and not _BACKTRACE.match(ln)]
    for pattern in (r"what\(\):", r"^[A-Za-z_.]*(Error|Exception|Exit)\b.*:", r"error|abort|failed"):
        hits = [ln for ln in lines if re.search(pattern, ln, re.IGNORECASE)]
        if hits:
            return hits[-1][:400]
    return lines[-1][:400] if lines else "no output"


def log_dir() -> Path:
    return cache_dir() / "logs"


def _worker(args: list[str], *, what: str, log: Path | None = None) -> None:
    """Run `python -m psyfactory.gguf.worker ARGS`; a crash or abort becomes a one-line GGUFError.

    stderr is read live: notices, warnings and the converter's verdict are shown as they come (all
    lines with PSY_GGUF_VERBOSE=1), and all of it goes to `log` (default: a file under
    $PSY_CACHE_DIR/logs), whose path the error names next to the line that says what failed.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    verbose = settings.flag("PSY_GGUF_VERBOSE", False)
    if log is None:
        log = log_dir() / f"gguf-{args[0]}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=200)
    with open(log, "w", encoding="utf-8") as fh, subprocess.Popen(
            [sys.executable, "-m", "psyfactory.gguf.worker", *args], env=env, text=True, stderr=subprocess.PIPE,
            errors="replace") as proc:
        assert proc.stderr is not None
        fh.write("$ python -m psyfactory.gguf.worker " + " ".join(args) + "\n")
        for line in proc.stderr:
            fh.write(line)
            line = line.rstrip("\n")
            tail.append(line)
            if verbose or "NOTICE" in line or "successfully exported" in line or line.startswith("WARNING"):
                print(line, file=sys.stderr, flush=True)
    if proc.returncode != 0:
        rc = proc.returncode
        how = (f"llama.cpp aborted (signal {-rc})" if rc == -signal.SIGABRT else
               f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}")
        raise GGUFError(f"{what} failed ({how}): {failure_reason(list(tail))} (full log: {log})")


def _produce(final: Path, args_for: Any, what: str) -> Path:
    """Run a worker that writes `final` via a temp name in the same directory; rename on success only.
    Its log is `logs/<final stem>.log` next to `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp.gguf")
    try:
        _worker(args_for(tmp), what=what, log=final.parent / "logs" / f"{final.stem}.log")
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
    check_tokenizer(model_dir)  # a wrong kind would convert, then abort llama.cpp at load
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



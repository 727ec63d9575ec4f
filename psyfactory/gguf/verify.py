"""Verification of a GGUF export against the HF model (in a child process), and greedy generation."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psyfactory.gguf.common import check_gguf_file, setup_info
from psyfactory.gguf.convert import _worker

# Verification thresholds for the lossless-ish f16 export (quantized exports are only reported).
# Relative logit error = max |Δlogit| / max |HF logit| over the compared positions: llama.cpp
# rounds activations to f16 in its f16 matmuls, so the absolute error grows with the logit scale.
F16_MIN_AGREEMENT = 0.95
F16_MAX_REL_LOGIT_ERROR = 0.02

# A few fixed chat prompts (plus samples of the task's eval set when available).
DEFAULT_PROMPTS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "最近总是失眠，白天也没精神，我该怎么办？"}],
    [{"role": "system", "content": "你是一名温和、专业的心理咨询师。"},
     {"role": "user", "content": "我觉得自己什么都做不好，同学们都比我优秀。"}],
    [{"role": "user", "content": "Give me three short tips for managing exam stress."}],
]


@dataclass
class Verification:
    gguf: str
    reference: str
    lora: str | None
    prompts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tokens_equal(self) -> bool:
        return all(p["tokens_equal"] for p in self.prompts)

    @property
    def agreement(self) -> float:
        total = sum(p["positions"] for p in self.prompts)
        return sum(p["agree"] for p in self.prompts) / total if total else 0.0

    @property
    def max_logit_error(self) -> float:
        return max((p["max_logit_error"] for p in self.prompts), default=float("nan"))

    @property
    def max_rel_logit_error(self) -> float:
        return max((p["max_logit_error"] / max(p["logit_scale"], 1e-6) for p in self.prompts), default=float("nan"))

    def summary(self) -> dict[str, Any]:
        return {"gguf": self.gguf, "reference": self.reference, "lora": self.lora,
                "tokens_equal": self.tokens_equal, "greedy_agreement": round(self.agreement, 4),
                "max_logit_error": round(self.max_logit_error, 5),
                "max_rel_logit_error": round(self.max_rel_logit_error, 5), "prompts": self.prompts}


def verify(gguf: str | Path, hf_dir: str | Path, *, conversations: list[list[dict[str, str]]] | None = None,
           lora: str | Path | None = None, enable_thinking: bool = False, steps: int = 8,
           log: Path | None = None) -> Verification:
    """Compare a GGUF (optionally + GGUF LoRA adapter) with the HF model in `hf_dir`, in a subprocess
    (its stderr goes to `log`; a llama.cpp abort is a one-line GGUFError naming it)."""
    setup_info()
    gguf = check_gguf_file(gguf)
    if lora:
        check_gguf_file(lora)
    conversations = conversations or DEFAULT_PROMPTS
    with tempfile.TemporaryDirectory(prefix="psy-gguf-") as tmp:
        conv_file, result = Path(tmp, "conversations.json"), Path(tmp, "result.json")
        conv_file.write_text(json.dumps(conversations, ensure_ascii=False), encoding="utf-8")
        args = ["verify", str(gguf), str(hf_dir), str(conv_file), str(result), "--steps", str(steps)]
        args += ["--lora", str(lora)] if lora else []
        args += ["--thinking"] if enable_thinking else []
        _worker(args, what=f"verify {gguf.name}", log=log)
        rows = json.loads(result.read_text(encoding="utf-8"))["prompts"]
    return Verification(str(gguf), str(hf_dir), str(lora) if lora else None, rows)


def generate(gguf: str | Path, conversations: list[list[dict[str, str]]], *, max_new_tokens: int,
             json_schema: dict | None = None, lora: str | Path | None = None,
             enable_thinking: bool = False) -> list[str]:
    """Greedy generation in a child process (safe against llama.cpp aborts); see psyfactory.gguf.backend."""
    setup_info()
    check_gguf_file(gguf)
    with tempfile.TemporaryDirectory(prefix="psy-gguf-") as tmp:
        conv_file, result = Path(tmp, "conversations.json"), Path(tmp, "result.json")
        conv_file.write_text(json.dumps(conversations, ensure_ascii=False), encoding="utf-8")
        args = ["generate", str(gguf), str(conv_file), str(result), "--max-new-tokens", str(max_new_tokens)]
        if json_schema is not None:
            schema_file = Path(tmp, "schema.json")
            schema_file.write_text(json.dumps(json_schema), encoding="utf-8")
            args += ["--schema", str(schema_file)]
        args += ["--lora", str(lora)] if lora else []
        args += ["--thinking"] if enable_thinking else []
        _worker(args, what=f"generate with {Path(gguf).name}")
        return json.loads(result.read_text(encoding="utf-8"))["outputs"]



"""Before conversion: is the tokenizer one that llama.cpp's converter reads correctly?

A wrong kind does not fail in the converter: it writes a GGUF whose vocabulary llama.cpp cannot
use and aborts later, at load or in verification (`std::out_of_range: unordered_map::at` for a
byte-fallback vocabulary without its byte tokens). This check reads the model folder only (no
llama.cpp) and refuses with one line naming the problem and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from psyfactory.core.errors import GGUFError

# config.json model_type -> the tokenizer kind its llama.cpp vocabulary loader expects
BYTE_LEVEL = "byte-level BPE"
SENTENCEPIECE = "SentencePiece"
EXPECTED_KIND = {
    "qwen2": BYTE_LEVEL, "qwen3": BYTE_LEVEL, "qwen2_moe": BYTE_LEVEL, "qwen3_moe": BYTE_LEVEL,
    "gpt2": BYTE_LEVEL, "starcoder2": BYTE_LEVEL, "gemma": SENTENCEPIECE, "gemma2": SENTENCEPIECE,
    # llama / mistral exist in both kinds (Llama 2 / Mistral: SentencePiece; Llama 3 / SmolLM: byte-level)
}
_BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]


def _steps(node: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not node:
        return []
    return list(node.get("pretokenizers", [])) if node.get("type") == "Sequence" else [node]


def tokenizer_kind(tokenizer_json: dict[str, Any]) -> str:
    """byte-level BPE, SentencePiece (byte-fallback BPE or Unigram with Metaspace) or 'other'."""
    model = tokenizer_json.get("model") or {}
    pre = [s.get("type") for s in _steps(tokenizer_json.get("pre_tokenizer"))]
    if model.get("type") == "BPE" and "ByteLevel" in pre and not model.get("byte_fallback"):
        return BYTE_LEVEL
    if model.get("type") == "Unigram" or model.get("byte_fallback") or "Metaspace" in pre:
        return SENTENCEPIECE
    return "other"


def _token(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def check_tokenizer(model_dir: str | Path) -> str:
    """Raise GGUFError when llama.cpp would mis-read the tokenizer of `model_dir`; return its kind."""
    model_dir = Path(model_dir)
    spm_file = (model_dir / "tokenizer.model").is_file()
    tj_path = model_dir / "tokenizer.json"
    if not tj_path.is_file():
        if spm_file:
            return SENTENCEPIECE
        raise GGUFError(f"{model_dir}: neither tokenizer.json nor tokenizer.model; copy the model's tokenizer files "
                        "next to its weights before exporting")
    try:
        tj = json.loads(tj_path.read_text(encoding="utf-8"))
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        tc_path = model_dir / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text(encoding="utf-8")) if tc_path.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise GGUFError(f"{model_dir}: unreadable tokenizer or config file ({e})") from None
    kind = tokenizer_kind(tj)
    model = tj.get("model") or {}
    vocab = dict(model.get("vocab") or {}) if isinstance(model.get("vocab"), dict) else {}
    added = {t["content"] for t in tj.get("added_tokens", [])}
    fix = ("use the model's original tokenizer files (tokenizer.json, tokenizer_config.json from its hub "
           "repository; for smollm2-135m `make real-model` rebuilds them)")
    if model.get("type") == "BPE" and model.get("byte_fallback") and not spm_file:
        missing = [t for t in _BYTE_TOKENS if t not in vocab]
        if missing:
            raise GGUFError(f"{tj_path}: a byte-fallback (SentencePiece-style) BPE without {len(missing)} of the 256 "
                            f"byte tokens <0x00>..<0xFF> (the kind transformers writes when it loads a GGUF); "
                            f"llama.cpp would abort on it: {fix}")
    expected = EXPECTED_KIND.get(str(cfg.get("model_type")))
    if expected and kind != expected and not (expected == SENTENCEPIECE and spm_file):
        raise GGUFError(f"{tj_path}: a {kind} tokenizer, but llama.cpp reads {cfg.get('model_type')} models "
                        f"with a {expected} vocabulary: {fix}")
    eos, pad = _token(tc.get("eos_token")), _token(tc.get("pad_token"))
    known = set(vocab) | added
    if not eos or eos not in known:
        raise GGUFError(f"{model_dir / 'tokenizer_config.json'}: eos_token {eos!r} is "
                        f"{'not set' if not eos else 'not in the vocabulary'}: generation would not stop; {fix}")
    jinja = model_dir / "chat_template.jinja"  # where transformers >= 4.5x saves it
    template = str(tc.get("chat_template") or (jinja.read_text(encoding="utf-8") if jinja.is_file() else ""))
    if "<|im_start|>" in template and "<|im_end|>" in template and eos == "<|im_start|>":
        raise GGUFError(f"{model_dir / 'tokenizer_config.json'}: eos_token is '<|im_start|>', the token that OPENS "
                        "a turn in this ChatML template: generation would run past the end of its reply; "
                        "set eos_token to '<|im_end|>'")
    if pad is not None and pad not in known:
        raise GGUFError(f"{model_dir / 'tokenizer_config.json'}: pad_token {pad!r} is not in the vocabulary; "
                        f"set it to the eos token {eos!r} or a special token")
    return kind

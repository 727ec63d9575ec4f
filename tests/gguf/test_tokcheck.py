"""The pre-conversion tokenizer check and the one-line report of a crashed llama.cpp child (no llama.cpp)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from psyfactory.core.errors import GGUFError
from psyfactory.gguf.convert import failure_reason
from psyfactory.gguf.tokcheck import BYTE_LEVEL, SENTENCEPIECE, check_tokenizer, tokenizer_kind


@pytest.fixture
def tok_dir(tiny_model: Path, tmp_path: Path) -> Path:
    """The tiny model's config + tokenizer files (a Qwen3 with a byte-level BPE), editable."""
    out = tmp_path / "model"
    out.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model / name).is_file():
            shutil.copy(tiny_model / name, out / name)
    return out


def edit(path: Path, fn) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    fn(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def test_a_good_tokenizer_passes(tok_dir: Path) -> None:
    assert check_tokenizer(tok_dir) == BYTE_LEVEL


def test_byte_fallback_without_byte_tokens_is_refused(tok_dir: Path) -> None:
    def to_spm_style(d):  # what transformers writes for a GGUF tokenizer: byte fallback, Metaspace
        d["model"]["byte_fallback"] = True
        d["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    edit(tok_dir / "tokenizer.json", to_spm_style)
    with pytest.raises(GGUFError, match=r"byte-fallback .* without 256 of the 256 byte tokens .* llama.cpp would abort"):
        check_tokenizer(tok_dir)
    assert tokenizer_kind(json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))) == SENTENCEPIECE


def test_wrong_kind_for_the_architecture_is_refused(tok_dir: Path) -> None:
    def spm_with_bytes(d):  # a complete SentencePiece-style vocabulary, but Qwen3 reads byte-level BPE
        d["model"]["byte_fallback"] = True
        n = len(d["model"]["vocab"])
        d["model"]["vocab"].update({f"<0x{i:02X}>": n + i for i in range(256)})
    edit(tok_dir / "tokenizer.json", spm_with_bytes)
    with pytest.raises(GGUFError, match="a SentencePiece tokenizer, but llama.cpp reads qwen3 models with a byte-level BPE"):
        check_tokenizer(tok_dir)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("eos_token", "<|im_start|>", "eos_token is '<|im_start|>', the token that OPENS a turn"),
    ("eos_token", None, "eos_token None is not set"),
    ("eos_token", "<|no_such_token|>", "not in the vocabulary"),
    ("pad_token", "<|pad_missing|>", "pad_token '<|pad_missing|>' is not in the vocabulary"),
])
def test_insane_eos_or_pad_is_refused(tok_dir: Path, key: str, value: str | None, message: str) -> None:
    edit(tok_dir / "tokenizer_config.json", lambda d: d.__setitem__(key, value))
    with pytest.raises(GGUFError, match=re.escape(message)):
        check_tokenizer(tok_dir)


def test_no_tokenizer_files(tok_dir: Path) -> None:
    (tok_dir / "tokenizer.json").unlink()
    with pytest.raises(GGUFError, match="neither tokenizer.json nor tokenizer.model"):
        check_tokenizer(tok_dir)


def test_failure_reason_skips_the_backtrace() -> None:
    stderr = ["llama_model_load: loading model", "terminate called after throwing an instance of 'std::out_of_range'",
              "  what():  unordered_map::at", "[New LWP 1234]", "0x00007f in wait4 () from libc.so.6",
              "#0  0x00007f in wait4 ()", "#1  0x00007f in ggml_print_backtrace ()"]
    assert failure_reason(stderr) == "what():  unordered_map::at"
    py = ["Traceback (most recent call last):", '  File "convert_hf_to_gguf.py", line 1', "    raise",
          "NotImplementedError: BPE pre-tokenizer was not recognized - update get_vocab_base_pre()"]
    assert failure_reason(py).startswith("NotImplementedError: BPE pre-tokenizer was not recognized")
    assert failure_reason([]) == "no output"

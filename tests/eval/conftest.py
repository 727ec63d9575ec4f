"""Fixtures for the evaluation tests: hand-written miniature datasets in the prepared format
(dataset_info.json + data/<task>/<split>.jsonl), written by us (no licensed text)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from psyfactory.core import paths

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# real data samples next to the checkout (never copied into the repo)
BENCH_FILE = paths.REPO_ROOT.parent / "shared" / "datasets" / "PsychCounsel-Bench" / "PsychCounsel-Bench.json"

SHAREGPT = {
    "formatting": "sharegpt",
    "columns": {"messages": "messages"},
    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
             "system_tag": "system"},
}

STUDENT_INSTRUCTION = ("阅读下面学生与辅导员的对话，评估学生的心理状态，只输出一个JSON对象，字段为 depression_level(0-3)、"
                       "anxiety_level(0-3)、risk_flag(none/suicidal/self_harm/violence)、student_distress_score(0-9)。")
STUDENT = [
    ("学生：最近考试多，有点紧张，但睡得还行。", (0, 1, "none", 2)),
    ("学生：我每天都提不起劲，觉得活着没意思，想过结束一切。", (3, 2, "suicidal", 9)),
    ("学生：心情烦的时候我会用小刀划手臂。", (2, 2, "self_harm", 7)),
    ("学生：室友总针对我，我真想狠狠揍他一顿。", (1, 2, "violence", 6)),
    ("学生：和朋友吵架了，难过了两天，现在好多了。", (1, 0, "none", 2)),
    ("学生：担心找不到实习，晚上常常失眠。", (1, 3, "none", 5)),
]
EMOTION = [
    ("i feel so lonely since my friend moved away", "sadness"),
    ("i am thrilled that the results came back good", "joy"),
    ("i feel so much tenderness for my little sister", "love"),
    ("i was furious when they cancelled without telling me", "anger"),
    ("i feel nervous walking home alone at night", "fear"),
    ("i was amazed to see snow in april", "surprise"),
]
DIALOGUES = [
    ("我最近总是失眠，白天没精神。", "听起来失眠已经影响到你的白天状态了。能说说通常是什么让你睡不着吗？"),
    ("我和父母总是吵架，觉得他们不理解我。", "和家人反复争吵会让人很疲惫。你希望他们理解你的哪一部分呢？"),
    ("考试没考好，我觉得自己很失败。", "一次考试的结果让你对自己很失望。除了这次考试，你还怎么看待自己？"),
]


def _labels(d: int, a: int, r: str, s: int) -> str:
    return json.dumps({"depression_level": d, "anxiety_level": a, "risk_flag": r, "student_distress_score": s},
                      ensure_ascii=False)


def write_dataset(root: Path) -> Path:
    """Write train and eval splits for student, emotion and every generation task under ``root``."""
    info: dict[str, dict] = {}
    rows: dict[str, list[dict]] = {
        "student": [{"instruction": STUDENT_INSTRUCTION, "input": t, "output": _labels(*lab)} for t, lab in STUDENT],
        "emotion": [{"instruction": "Classify the emotion of the text with one word: sadness, joy, love, anger, "
                                    "fear or surprise.", "input": t, "output": lab} for t, lab in EMOTION],
    }
    for task in ("psydt", "cpsycoun", "psyqa"):
        rows[task] = [{"messages": [{"role": "system", "content": "你是一位温和的心理咨询师。"},
                                    {"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                      for q, a in DIALOGUES]
    rows["es"] = [{"id": f"longemotion-es-{i + 1}", "instruction": "Write the counselor's reflection.", "input": q,
                   "output": a} for i, (q, a) in enumerate(DIALOGUES)]
    fields = ("causes", "symptoms", "treatment_process", "characteristics_of_illness", "treatment_effect")
    rows["es_summary"] = [{"id": f"longemotion-es-{i + 1}", "instruction": "Summarize as JSON.", "input": q,
                           "output": json.dumps({f: f"{f} of case {i + 1}" for f in fields})}
                          for i, (q, _) in enumerate(DIALOGUES)]
    for task, recs in rows.items():
        for split in ("train", "eval"):
            path = root / "data" / task / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
            entry = {"file_name": f"data/{task}/{split}.jsonl"}
            if "messages" in recs[0]:
                entry.update(SHAREGPT)
            info[f"{task}_{split}"] = entry
    (root / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def eval_dataset_writer() -> Callable[[Path], Path]:
    return write_dataset


@pytest.fixture(scope="session")
def real_bench_file() -> Path | None:
    return BENCH_FILE if BENCH_FILE.is_file() else None

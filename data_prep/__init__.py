"""Raw dataset parsers: raw files -> data/<task>/<split>.jsonl + dataset_info.json.

Public API: `prepare(tasks, raw_dir, dataset_dir, teacher=..., seed=...)`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_prep.common import Accounting, DataError, TaskOutput, info_entries, update_dataset_info, write_task

__all__ = ["TASKS", "Accounting", "DataError", "prepare", "format_table"]

TASKS = ("psydt", "cpsycoun", "psyqa", "es", "emotion", "student")
DEFAULT_SEED = 20240601


def _builder(task: str) -> Callable[..., TaskOutput]:
    from data_prep import cpsycoun, emotion, es, psydt, psyqa, student

    return {"psydt": psydt.build, "cpsycoun": cpsycoun.build, "psyqa": psyqa.build, "es": es.build,
            "emotion": emotion.build, "student": student.build}[task]


def prepare(
    tasks: list[str] | None,
    raw_dir: Path,
    dataset_dir: Path,
    *,
    teacher: Any = None,
    seed: int = DEFAULT_SEED,
    quiet: bool = False,
) -> dict[str, list[Accounting]]:
    """Build the given tasks (all when None); returns task -> per-source accounting.

    `teacher` only matters for `student`: a `data_prep.teacher.Teacher`, the string "lexicon"
    (offline heuristic, NOT a real labeller), a `TeacherEndpoint`, or None = endpoint from the
    environment (`PSY_TEACHER_BASE_URL`...). With None and no endpoint configured, `student` raises
    DataError when named explicitly and is skipped (with a reason in the accounting) when `tasks` is None.
    """
    from data_prep import student
    from data_prep.teacher import resolve_teacher

    raw_dir, dataset_dir = Path(raw_dir).resolve(), Path(dataset_dir).resolve()
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: raw-data folder not found (RAW_DIR=...; `make download` fetches public sources)")
    names = list(TASKS) if not tasks else list(dict.fromkeys(tasks))
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise DataError(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    result: dict[str, list[Accounting]] = {}
    for task in names:
        if task == "student":
            t = resolve_teacher(teacher)
            if t is None:
                if tasks:
                    raise DataError(student.NO_TEACHER)
                acc = Accounting("student", "CPsyCounD+PsyQA", skipped=student.NO_TEACHER)
                result[task] = [acc]
                continue
            out = student.build(raw_dir, seed, teacher=t, dataset_dir=dataset_dir)
        else:
            out = _builder(task)(raw_dir, seed)
        write_task(out, dataset_dir)
        update_dataset_info(dataset_dir, info_entries(task, out.fmt, out.splits))
        result[task] = out.accounting
    summary = {t: [a.as_dict() for a in accs] for t, accs in result.items()}
    from data_prep._io import atomic_write_json

    report = dataset_dir / "data" / "prep_accounting.json"
    if report.exists():  # keep other tasks from earlier runs
        summary = {**json.loads(report.read_text(encoding="utf-8")), **summary}
    atomic_write_json(report, dict(sorted(summary.items())))
    if not quiet:
        print(format_table(result))
        print(f"accounting (with the quirks fixed per source): {report}\n"
              f"quarantined records with file, line/record and reason: {dataset_dir / 'data'}/<task>/quarantine.jsonl")
    return result


def format_table(result: dict[str, list[Accounting]]) -> str:
    """Plain-text accounting table: read = written + quarantined (by reason), samples per split."""
    rows = [("task", "source", "read", "written", "quarantined (by reason)", "samples")]
    for accs in result.values():
        for a in accs:
            if a.skipped:
                rows.append((a.task, a.source, "-", "-", "SKIPPED: " + a.skipped.split(".")[0], "-"))
                continue
            q = ", ".join(f"{k}={v}" for k, v in sorted(a.quarantined.items())) or "0"
            s = ", ".join(f"{k}={v}" for k, v in sorted(a.samples.items()))
            rows.append((a.task, a.source, str(a.read), str(a.written), q, s))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

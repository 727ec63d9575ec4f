"""Raw dataset parsers: raw files -> data/<task>/<split>.jsonl + dataset_info.json.

A task is a module `data_prep/<task>.py` with `build(raw_dir, seed) -> TaskOutput` (a module that
also sets `NEEDS_TEACHER = True` gets `teacher=` and `dataset_dir=` too); adding a task is adding
that file. Public API: `tasks()`, `prepare(tasks, raw_dir, dataset_dir, teacher=..., seed=...)`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from data_prep.common import (
    _OPTIONS,
    Accounting,
    DataError,
    PrepOptions,
    TaskOutput,
    info_entries,
    write_task,
)

__all__ = ["Accounting", "DataError", "PrepOptions", "format_table", "prepare", "tasks"]

DEFAULT_SEED = 20240601


@cache
def _modules() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"data_prep.{info.name}")
        if callable(getattr(module, "build", None)):
            found[info.name] = module
    return found


def tasks() -> tuple[str, ...]:
    """Every task data_prep can build (the modules that define `build`), in name order."""
    return tuple(sorted(_modules()))


def _build(task: str, raw_dir: Path, seed: int, teacher: Any, dataset_dir: Path) -> TaskOutput:
    module = _modules()[task]
    if getattr(module, "NEEDS_TEACHER", False):
        return module.build(raw_dir, seed, teacher=teacher, dataset_dir=dataset_dir)
    return module.build(raw_dir, seed)


def prepare(
    tasks: list[str] | None,
    raw_dir: Path,
    dataset_dir: Path,
    *,
    teacher: Any = None,
    seed: int = DEFAULT_SEED,
    quiet: bool = False,
    scrub: bool = True,
    oversample_risk: int = 1,
    reply_rule: str = "mean",
) -> dict[str, list[Accounting]]:
    """Build the given tasks (all when None); returns task -> per-source accounting.

    `teacher` only matters for tasks that need one (`student`): a `data_prep.teacher.Teacher`, the
    string "lexicon" (offline heuristic, NOT a real labeller), a `TeacherEndpoint`, or None = endpoint
    from the environment (`PSY_TEACHER_BASE_URL`...). With None and no endpoint configured, such a task
    raises DataError when named explicitly and is skipped (with a reason in the accounting) when
    `tasks` is None.

    `scrub` (default on; `--no-scrub`) replaces PII in every task (data_prep.pii), counted per type in
    the accounting. `oversample_risk` (student, default 1 = off) repeats each train item whose risk_flag
    is not `none` that many times; `reply_rule` (student) is how the counselor-reply length rule applies
    to an item: `mean` (default), `all` or `any` of its counselor replies >= 80 characters.

    Every task is built before anything is written (a missing or broken source fails first); the
    outputs are then committed together (data_prep.commit), so a reader sees the old set or the new
    one. Leftovers of an interrupted prep are cleaned (or its commit finished) first.
    """
    token = _OPTIONS.set(PrepOptions(scrub=scrub, oversample_risk=oversample_risk, reply_rule=reply_rule))
    try:
        return _prepare(tasks, raw_dir, dataset_dir, teacher=teacher, seed=seed, quiet=quiet)
    finally:
        _OPTIONS.reset(token)


def _prepare(tasks: list[str] | None, raw_dir: Path, dataset_dir: Path, *, teacher: Any, seed: int,
             quiet: bool) -> dict[str, list[Accounting]]:
    from data_prep.commit import Commit, clean_orphans
    from data_prep.teacher import NO_TEACHER, resolve_teacher

    raw_dir, dataset_dir = Path(raw_dir).resolve(), Path(dataset_dir).resolve()
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: raw-data folder not found (RAW_DIR=...; `make download` fetches public sources)")
    tasks_available = tuple(sorted(_modules()))
    names = list(tasks_available) if not tasks else list(dict.fromkeys(tasks))
    unknown = [t for t in names if t not in tasks_available]
    if unknown:
        raise DataError(f"unknown task(s) {unknown}; choose from {list(tasks_available)}")
    clean_orphans(dataset_dir)
    teachers = {t: resolve_teacher(teacher) for t in names if getattr(_modules()[t], "NEEDS_TEACHER", False)}
    if tasks and (missing := [t for t, v in teachers.items() if v is None]):
        raise DataError(f"{missing[0]}: {NO_TEACHER}")
    result: dict[str, list[Accounting]] = {}
    outputs: list[TaskOutput] = []
    for task in names:  # build everything first: nothing is written if a source is missing or broken
        if task in teachers and teachers[task] is None:
            result[task] = [Accounting(task, getattr(_modules()[task], "SOURCES", task), skipped=f"{task}: {NO_TEACHER}")]
            continue
        out = _build(task, raw_dir, seed, teachers.get(task), dataset_dir)
        outputs.append(out)
        result[task] = out.accounting
    commit = Commit(dataset_dir)
    entries: dict[str, dict[str, Any]] = {}
    for out in outputs:
        write_task(out, dataset_dir, commit)
        entries.update(info_entries(out.task, out.fmt, out.splits))
    commit.commit(entries, {t: [a.as_dict() for a in accs] for t, accs in result.items()})
    report = dataset_dir / "data" / "prep_accounting.json"
    if not quiet:
        print(format_table(result))
        if steps := format_steps(result):
            print(steps)
        print(f"accounting (with the quirks fixed per source): {report}\n"
              f"quarantined records with file, line/record and reason: {dataset_dir / 'data'}/<task>/quarantine.jsonl")
    return result


def format_table(result: dict[str, list[Accounting]]) -> str:
    """Plain-text accounting table: read = written + quarantined (by reason), samples per split, PII
    replaced per type (or `off` with --no-scrub)."""
    rows = [("task", "source", "read", "written", "quarantined (by reason)", "samples", "PII replaced")]
    for accs in result.values():
        for a in accs:
            if a.skipped:
                rows.append((a.task, a.source, "-", "-", "SKIPPED: " + a.skipped.split(".")[0], "-", "-"))
                continue
            q = ", ".join(f"{k}={v}" for k, v in sorted(a.quarantined.items())) or "0"
            s = ", ".join(f"{k}={v}" for k, v in sorted(a.samples.items()))
            pii = (", ".join(f"{k}={v}" for k, v in sorted(a.pii.items())) or "0") if a.pii_scrub else "off (--no-scrub)"
            rows.append((a.task, a.source, str(a.read), str(a.written), q, s, pii))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_steps(result: dict[str, list[Accounting]]) -> str:
    """Units kept after each filter step (per source) and the class distribution of each split (per
    task, summed over its sources): the student task's."""
    lines = []
    for task, accs in result.items():
        totals: dict[str, dict[str, int]] = {}
        for a in accs:
            if a.steps:
                lines.append(f"{a.task}/{a.source} kept per step: " + " -> ".join(f"{k} {v}" for k, v in a.steps.items()))
            for split, dist in a.classes.items():
                for cls, n in dist.items():
                    totals.setdefault(split, {}).setdefault(cls, 0)
                    totals[split][cls] += n
        for split, dist in totals.items():
            lines.append(f"{task} {split} classes: " + ", ".join(f"{k}={v}" for k, v in dist.items()))
    return "\n".join(lines)

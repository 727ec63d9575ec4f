"""Raw dataset parsers and a generic reader of your own files: raw -> data/<task>/<split>.jsonl +
dataset_info.json.

A task's YAML says where its data come from (`psy.data`, read by psyfactory.prep): a built-in parser
of a public dataset (:data:`PARSERS`: `data_prep/<parser>.py` with `build(ctx) -> TaskOutput`; a module
that sets `NEEDS_TEACHER = True` gets a teacher in `ctx`), or a user's own file in alpaca, sharegpt or
OpenAI-messages shape (psyfactory.data_prep.userfile). Public API: `tasks()`, `prepare(specs, raw_dir, dataset_dir, ...)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from psyfactory.data_prep.common import (
    Accounting,
    BuildContext,
    DataError,
    PrepOptions,
    TaskOutput,
    info_entries,
    write_task,
)

__all__ = ["PARSERS", "Accounting", "DataError", "FileSpec", "PrepOptions", "TaskSpec", "format_table", "prepare",
           "tasks"]

DEFAULT_SEED = 20240601
# Built-in parsers of the public datasets, by name (a task YAML names one in psy.data.parser).
PARSERS: dict[str, str] = {
    "cpsycoun": "psyfactory.data_prep.cpsycoun",
    "emotion": "psyfactory.data_prep.emotion",
    "es": "psyfactory.data_prep.es",
    "es_summary": "psyfactory.data_prep.es_summary",
    "psydt": "psyfactory.data_prep.psydt",
    "psyqa": "psyfactory.data_prep.psyqa",
    "sos1k": "psyfactory.data_prep.sos1k",
    "student": "psyfactory.data_prep.student",
}


@dataclass(frozen=True)
class FileSpec:
    """A user's own data file (psy.data.file), with LLaMA-Factory's column mapping."""

    file: Path
    eval_file: Path | None = None
    format: str = "alpaca"  # alpaca | sharegpt | openai
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    eval_share: float = 0.1


@dataclass(frozen=True)
class TaskSpec:
    """One task to prepare: its name (the output's: data/<name>/, `<name>_train`...) and its source."""

    name: str
    parser: str | None = None
    file: FileSpec | None = None

    @property
    def needs_teacher(self) -> bool:
        return self.parser is not None and bool(getattr(_module(self.parser), "NEEDS_TEACHER", False))

    @property
    def sources(self) -> str:
        if self.file is not None:
            return self.file.file.name
        return str(getattr(_module(self.parser or ""), "SOURCES", self.parser))


def _module(parser: str) -> ModuleType:
    if parser not in PARSERS:
        raise DataError(f"unknown parser {parser!r}; built-in parsers: {', '.join(PARSERS)} (or give psy.data.file)")
    return importlib.import_module(PARSERS[parser])


def tasks() -> tuple[str, ...]:
    """The built-in parsers, in name order (each is also a task of the same name)."""
    return tuple(sorted(PARSERS))


def _build(spec: TaskSpec, ctx: BuildContext) -> TaskOutput:
    if spec.file is not None:
        from psyfactory.data_prep.userfile import build as build_file

        return build_file(ctx, spec.file)
    return _module(spec.parser or spec.name).build(ctx)


def prepare(
    specs: list[str | TaskSpec] | None,
    raw_dir: Path,
    dataset_dir: Path,
    *,
    teacher: Any = None,
    seed: int = DEFAULT_SEED,
    quiet: bool = False,
    scrub: bool = True,
    oversample_risk: int = 1,
    reply_rule: str = "mean",
    eval_share: float | None = None,
    named: bool | None = None,
) -> dict[str, list[Accounting]]:
    """Build the given tasks (a name = the built-in parser of that name; None = every built-in parser);
    returns task -> per-source accounting.

    `teacher` only matters for tasks that need one (`student`): a `psyfactory.data_prep.teacher.Teacher`, the
    string "lexicon" (offline heuristic, NOT a real labeller), a `TeacherEndpoint`, or None = endpoint
    from the environment (`PSY_TEACHER_BASE_URL`...). With None and no endpoint configured, such a task
    raises DataError when named explicitly and is skipped (with a reason in the accounting) when
    `specs` is None (or `named` is False: the caller chose every task).

    `scrub` (default on; `--no-scrub`) replaces PII in every task (data_prep.pii), counted per type in
    the accounting. `oversample_risk` (student, default 1 = off) repeats each train item whose risk_flag
    is not `none` that many times; `reply_rule` (student) is how the counselor-reply length rule applies
    to an item: `mean` (default), `all` or `any` of its counselor replies >= 80 characters. `eval_share`
    (student) is the share held out for eval (default: the parser's, 10%).

    The dataset folder is locked for the whole prep (a second prep of the same folder is refused, naming
    the first). Every task is built before anything is written (a missing or broken source fails first);
    the outputs are then committed together (psyfactory.data_prep.commit), so a reader sees the old set or the new
    one. Leftovers of an interrupted prep are cleaned (or its commit finished) first.
    """
    from psyfactory.core.files import exclusive

    options = PrepOptions(scrub=scrub, oversample_risk=oversample_risk, reply_rule=reply_rule, eval_share=eval_share)
    raw_dir, dataset_dir = Path(raw_dir).resolve(), Path(dataset_dir).resolve()
    named = (specs is not None and len(specs) > 0) if named is None else named
    chosen = [s if isinstance(s, TaskSpec) else TaskSpec(s, parser=s) for s in (specs or tasks())]
    chosen = list({s.name: s for s in chosen}.values())
    if any(s.file is None for s in chosen) and not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: raw-data folder not found (RAW_DIR=...; `make download` fetches public sources)")
    for s in chosen:
        if s.file is None:
            _module(s.parser or s.name)  # an unknown parser fails before anything starts
    with exclusive(dataset_dir / "data" / ".prep.lock", f"dataset folder {dataset_dir}"):
        return _prepare(chosen, named, raw_dir, dataset_dir, teacher=teacher, seed=seed, quiet=quiet, options=options)


def _prepare(specs: list[TaskSpec], named: bool, raw_dir: Path, dataset_dir: Path, *, teacher: Any, seed: int,
             quiet: bool, options: PrepOptions) -> dict[str, list[Accounting]]:
    from psyfactory.data_prep.commit import Commit, clean_orphans
    from psyfactory.data_prep.teacher import NO_TEACHER, resolve_teacher

    clean_orphans(dataset_dir)  # under the lock: no other prep is staging files here
    teachers = {s.name: resolve_teacher(teacher) for s in specs if s.needs_teacher}
    if named and (missing := [t for t, v in teachers.items() if v is None]):
        raise DataError(f"{missing[0]}: {NO_TEACHER}")
    result: dict[str, list[Accounting]] = {}
    outputs: list[TaskOutput] = []
    for spec in specs:  # build everything first: nothing is written if a source is missing or broken
        if spec.name in teachers and teachers[spec.name] is None:
            result[spec.name] = [Accounting(spec.name, spec.sources, skipped=f"{spec.name}: {NO_TEACHER}")]
            continue
        ctx = BuildContext(spec.name, raw_dir, seed, options, teachers.get(spec.name), dataset_dir)
        out = _build(spec, ctx)
        outputs.append(out)
        result[spec.name] = out.accounting
    commit = Commit(dataset_dir)
    entries: dict[str, dict[str, Any]] = {}
    for out in outputs:
        write_task(out, dataset_dir, commit)
        entries.update(info_entries(out.task, out.fmt, out.splits, out.split_formats))
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

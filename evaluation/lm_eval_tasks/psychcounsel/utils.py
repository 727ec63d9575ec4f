"""Python hooks of the PsychCounsel-Bench lm-eval tasks, for what their YAML cannot say: where the local
benchmark file is, and that each item has its own set of options. Standalone (the standard library and
`datasets`), so lm-eval users need only this folder on `--include_path`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

# <repo>/raw/PsychCounsel-Bench/PsychCounsel-Bench.json: where `make download` puts the benchmark
DEFAULT_BENCH = Path(__file__).resolve().parents[3] / "raw" / "PsychCounsel-Bench" / "PsychCounsel-Bench.json"


def load_bench(bench_file: str | None = None, **_: Any) -> datasets.DatasetDict:
    """The benchmark as one `test` split of {id, question, letters, options, gold}. lm-eval calls it with the
    task's metadata (`--metadata '{"bench_file": ...}'`). Items with an empty question or fewer than two
    options are left out, as PsyFactory's own psychcounsel_bench plugin leaves them out (the shipped file has
    two: ids 268 and 339); an answer that is not one of the item's options is an error."""
    path = Path(bench_file).expanduser() if bench_file else DEFAULT_BENCH
    if not path.is_file():
        raise FileNotFoundError(f"PsychCounsel-Bench file not found: {path} (fetch it with `make download`, or pass "
                                "--metadata '{\"bench_file\": \"/path/to/PsychCounsel-Bench.json\"}')")
    items = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON array of items")
    rows = []
    for i, rec in enumerate(items):
        opts = {str(k).strip().lower(): v for k, v in (rec.get("options") or {}).items()}
        if any(not isinstance(v, str) for v in opts.values()):
            raise ValueError(f"{path}: item #{i} (id={rec.get('id')!r}): option texts must be strings")
        question = str(rec.get("question") or "").strip()
        if not question or len(opts) < 2:
            continue
        keys = sorted(opts)
        answer = str(rec.get("answer") or "").strip().lower()
        if answer not in keys:
            raise ValueError(f"{path}: item #{i} (id={rec.get('id')!r}): answer {rec.get('answer')!r} is not an option")
        rows.append({"id": str(rec.get("id", i)), "question": question, "letters": [k.upper() for k in keys],
                     "options": [opts[k] for k in keys], "gold": keys.index(answer)})
    if not rows:
        raise ValueError(f"{path}: no item with a question and at least two options")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})

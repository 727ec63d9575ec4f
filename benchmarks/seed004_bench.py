"""Benchmark: seed 004's PsychCounsel-Bench two ways on the same items, one model (`make bench-seed004`).

* `seed004-exact` (configs/tasks/seed004-exact.yaml): the author's script: his three prompt texts (formats
  1 and 2 plain, format 3 through the chat template with its defaults), greedy, 50 new tokens, his letter
  extraction, every item counted. The project's strict and lenient extraction of the same generations
  are reported beside it.
* the project's protocol (configs/tasks/psychcounsel.yaml): letter log-likelihood, permutation-debiased.

Both run as `make eval ... BASE=1 EVAL_ARGS='--limit N'` would (the CLI, in this process), on the first N
items of the bench file, into a runs folder of their own (default: a temporary one; the per-item records
hold the benchmark's text, CC BY-NC-ND: keep them out of the repository). Prints one markdown table per
format and writes the figures as JSON.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/seed004_bench.py --model smollm2-135m --limit 100 \
        --bench-file ../shared/datasets/PsychCounsel-Bench/PsychCounsel-Bench.json --json out.json \
        [--project-formats seed004-professional seed004-simple seed004-chat] [--runs-dir DIR --reuse]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASKS = ("seed004-exact", "psychcounsel")


def evaluate(model: str, task: str, limit: int, bench_file: str, hw: str, batch_size: int, extra: list[str],
             reuse: bool = False) -> dict[str, Any]:
    from psyfactory.cli import main as cli
    from psyfactory.core.paths import runs_root

    done = sorted((runs_root() / f"{model}/{task}/lora" / "eval").glob("base*/metrics.json"))
    if reuse and done:  # an earlier call of this benchmark (same runs folder) evaluated it already
        m = json.loads(done[0].read_text(encoding="utf-8"))
        m["_seconds"] = sum(f["seconds"] for f in m["plugins"]["psychcounsel_bench"]["formats"].values())
        return m
    args = ["eval", "--model", model, "--task", task, "--base", "--hw", hw, "--limit", str(limit),
            "--batch-size", str(batch_size), f"psy.eval_options.psychcounsel_bench.bench_file={bench_file}", *extra]
    t0 = time.perf_counter()
    rc = cli(args)
    if rc != 0:
        raise SystemExit(f"psyfactory {' '.join(args)} failed ({rc})")
    variant = next((runs_root() / f"{model}/{task}/lora" / "eval").glob("base*/metrics.json"))
    m = json.loads(variant.read_text(encoding="utf-8"))
    m["_seconds"] = time.perf_counter() - t0
    m["_dir"] = str(variant.parent)
    return m


def summary(exact: dict[str, Any], project: dict[str, Any]) -> dict[str, Any]:
    ex, pr = exact["plugins"]["psychcounsel_bench"], project["plugins"]["psychcounsel_bench"]
    out: dict[str, Any] = {"exact": {}, "project": {}}
    for name, f in ex["formats"].items():
        out["exact"][name] = {"n": f["n"], "accuracy": f["accuracy"], "correct": f["correct"], "ci95": f["ci95"],
                              "unparsed": f["unparsed"], "think_blocks": f["think_blocks"], "seconds": f["seconds"],
                              "strict": f["extractors"]["strict"], "lenient": f["extractors"]["lenient"],
                              "predicted": f["bias"]["predicted"], "always_best": f["bias"]["best_constant"],
                              "chance": f["bias"]["chance"]}
    for name, f in pr["formats"].items():
        out["project"][name] = {"n": f["n"], "accuracy": f["accuracy"], "correct": f["correct"], "ci95": f["ci95"],
                                "debiased": f.get("debiased"), "seconds": f["seconds"],
                                "predicted": f["bias"]["predicted"], "always_best": f["bias"]["best_constant"],
                                "chance": f["bias"]["chance"]}
    return out


def table(s: dict[str, Any]) -> str:
    pairs = [("seed004-exact-professional", "seed004-professional", "1 专业心理咨询师格式"),
             ("seed004-exact-simple", "seed004-simple", "2 简单直接格式"),
             ("seed004-exact-chat", "seed004-chat", "3 对话格式")]
    lines = ["| format | exact: author's extraction (unparsed) | exact: strict (unparsed) | exact: lenient (unparsed) "
             "| think blocks | project: loglik | project: debiased (majority / mean p) | chance |",
             "|---|---|---|---|---|---|---|---|"]
    for ex_name, pr_name, label in pairs:
        e, p = s["exact"].get(ex_name), s["project"].get(pr_name)
        if not e or not p:
            continue
        deb = p.get("debiased") or {}
        lines.append(f"| {label} | {e['accuracy']:.3f} ({e['unparsed']}) | {e['strict']['accuracy']:.3f} "
                     f"({e['strict']['unparsed']}) | {e['lenient']['accuracy']:.3f} ({e['lenient']['unparsed']}) | "
                     f"{e['think_blocks']} | {p['accuracy']:.3f} | {deb.get('majority_accuracy', float('nan')):.3f} / "
                     f"{deb.get('mean_prob_accuracy', float('nan')):.3f} | {p['chance']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="configs/models/<name>.yaml")
    ap.add_argument("--limit", type=int, default=100, help="the first N items of the bench file")
    ap.add_argument("--bench-file", default="../shared/datasets/PsychCounsel-Bench/PsychCounsel-Bench.json")
    ap.add_argument("--hw", default="auto")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--runs-dir", default=None, help="where the two evaluations go (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--project-formats", nargs="+", default=None,
                    help="the project's protocol on these formats only (default: the psychcounsel task's four)")
    ap.add_argument("--reuse", action="store_true", help="keep an evaluation already in --runs-dir")
    args = ap.parse_args(argv)
    bench = str(Path(args.bench_file).resolve())
    with contextlib.ExitStack() as stack:
        runs = args.runs_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="seed004-bench-"))
        os.environ["PSY_RUNS_DIR"] = str(Path(runs).resolve())
        exact = evaluate(args.model, "seed004-exact", args.limit, bench, args.hw, args.batch_size, [], args.reuse)
        formats = [f"psy.eval_options.psychcounsel_bench.formats=[{','.join(args.project_formats)}]"] \
            if args.project_formats else []
        project = evaluate(args.model, "psychcounsel", args.limit, bench, args.hw, args.batch_size, formats, args.reuse)
        s = summary(exact, project)
    out = {"model": args.model, "limit": args.limit, "bench_file": Path(bench).name, "hw": exact["hw"],
           "dtype": exact.get("dtype"), "python": platform.python_version(),
           "threads": os.environ.get("OMP_NUM_THREADS"), "seconds": {"exact": exact["_seconds"],
                                                                    "project": project["_seconds"]}, **s}
    if args.json:
        from psyfactory.core.files import atomic_write_json

        atomic_write_json(Path(args.json), out)
    print(f"\n{args.model}, first {args.limit} items of {Path(bench).name}; exact {exact['_seconds']:.0f}s, "
          f"project {project['_seconds']:.0f}s\n")
    print(table(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

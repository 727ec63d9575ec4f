"""`psyfactory harness`: lm-evaluation-harness on a run (psyfactory.harness)."""

from __future__ import annotations

import argparse
from pathlib import Path

from psyfactory.commands.common import add_run_args, run_from_args
from psyfactory.core.errors import ConfigError


def cmd_harness(args: argparse.Namespace) -> None:
    from psyfactory.harness import run_harness

    if (args.adapter or args.model_path) and not args.task:
        raise ConfigError("ADAPTER= / MODEL_PATH=: name the task the model was trained on, TASK=<task> (the run is "
                          "external/<folder>); the lm-eval tasks to score are TASKS=")
    tasks = [t for word in args.tasks for t in word.split(",") if t.strip()] if args.tasks else None
    run = run_from_args(args)
    out = run_harness(run, tasks=[t.strip() for t in tasks] if tasks else None, base=args.base, merged=args.merged,
                      backend=args.backend, limit=args.limit, batch_size=args.batch_size,
                      num_fewshot=args.num_fewshot, data_dir=Path(args.data_dir) if args.data_dir else None,
                      chat_template=args.chat_template, include_path=[Path(p) for p in args.include_path],
                      bench_file=Path(args.bench_file).expanduser() if args.bench_file else None,
                      variant=args.variant, overwrite=args.overwrite, allow_unfinished=args.allow_unfinished)
    print(f"[psyfactory] harness: {out / 'metrics.json'}\n[psyfactory] report: {out / 'report.md'}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("harness", help="lm-evaluation-harness on a run (base, adapter, merged) as an eval variant "
                                       "runs/<run>/eval/harness-<kind>")
    add_run_args(p, external=True)
    p.add_argument("--tasks", action="append", default=[],
                   help="lm-eval tasks, groups or tags, comma-separated or repeated (default: CMMLU and C-Eval "
                        "psychology/medicine subjects and a commonsense control, psyfactory.harness.DEFAULT_TASKS)")
    p.add_argument("--base", action="store_true", help="the run's base model (variant harness-base)")
    p.add_argument("--merged", action="store_true", help="the run's merged model, `make merge` (harness-merged)")
    p.add_argument("--backend", default="auto", choices=["hf", "vllm", "auto"],
                   help="lm-eval model backend (auto: vLLM when installed with a CUDA GPU, else hf)")
    p.add_argument("--limit", type=int, default=None, help="the first N documents of each task only")
    p.add_argument("--batch-size", default="8", help="documents per batch: N, auto or auto:N (lm-eval's)")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: each task's own; 0 "
                                                                  "for CMMLU and C-Eval)")
    p.add_argument("--data-dir", default=None,
                   help="local task data, <dir>/<task>/<split>.jsonl|.json|.csv|.parquet (no hub access needed)")
    p.add_argument("--chat-template", action="store_true",
                   help="render prompts through the model's chat template (thinking off for hybrid models)")
    p.add_argument("--include-path", action="append", default=[], help="another folder of lm-eval task YAMLs")
    p.add_argument("--bench-file", default=None, help="PsychCounsel-Bench file for its lm-eval tasks (default "
                                                      "<raw_dir>/PsychCounsel-Bench/PsychCounsel-Bench.json)")
    p.add_argument("--raw-dir", default=None, help="raw sources folder (default $PSY_RAW_DIR or ./raw)")
    p.add_argument("--variant", default=None, help="name of the result folder runs/<run>/eval/<variant>")
    p.add_argument("--overwrite", action="store_true", help="replace a variant that holds a different evaluation")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="evaluate the adapter of a run whose training stopped before the end")
    p.set_defaults(func=cmd_harness)

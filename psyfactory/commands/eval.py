"""`psyfactory eval` and `psyfactory compare`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def cmd_eval(args: argparse.Namespace) -> None:
    from psyfactory import runs
    from psyfactory.core import paths
    from psyfactory.evaluate import run_eval

    if args.raw_dir:
        os.environ["PSY_RAW_DIR"] = str(Path(args.raw_dir).resolve())
    # The run is RUN, or <model>/<adapter task or task>/<method>; the eval task is TASK (default: the run's).
    run_task = args.adapter_task or args.task
    if args.recipe and not args.adapter_task:
        run_task = None  # a recipe names its training task: TASK names the eval task only
    if args.run and not args.adapter_task and runs.recorded(paths.run_dir(runs.check_name(args.run))):
        run_task = None  # a trained run: TASK names the eval task only
    rid, inherited = runs.resolve(args.run, args.model, run_task, args.method, args.recipe)
    cli_options = {"scoring": args.scoring, "prompt_format": args.prompt_format, "bench_file": args.bench_file,
                   "rubric": args.rubric, "judge_url": args.judge_url, "judge_model": args.judge_model}
    out = run_eval(rid, args.task or rid.task, base=args.base, hw=args.hw, overrides=args.overrides,
                   inherited=inherited, backend=args.backend, limit=args.limit, batch_size=args.batch_size,
                   cli_options=cli_options, plugins_only=args.plugins, variant=args.variant,
                   overwrite=args.overwrite, allow_unfinished=args.allow_unfinished)
    print(f"[psyfactory] eval: {out / 'metrics.json'}\n[psyfactory] report: {out / 'report.md'}")


def cmd_compare(args: argparse.Namespace) -> None:
    from psyfactory.compare import compare

    md, csv_path = compare(Path(args.runs_root) if args.runs_root else None, args.run or None)
    print(md.read_text(encoding="utf-8"))
    print(f"[psyfactory] written: {md}, {csv_path}")


def register(sub: argparse._SubParsersAction) -> None:
    from psyfactory.cli import add_run_args

    p = sub.add_parser("eval", help="run the task's eval plugins on a run's adapter (or --base), as a named variant")
    add_run_args(p)
    p.add_argument("--base", action="store_true", help="evaluate the run's base model (variant 'base')")
    p.add_argument("--variant", default=None,
                   help="name of the result folder runs/<run>/eval/<variant> (default: tuned, base, gguf-<QUANT>...)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a variant that holds results of a different evaluation")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="evaluate the adapter of a run whose training stopped before the end")
    p.add_argument("--backend", default="auto", choices=["hf", "vllm", "auto", "gguf"],
                   help="inference backend (auto: vLLM when installed with a GPU and no loglik scoring; "
                   "gguf: the run's `make gguf` export, env PSY_GGUF_QUANT/PSY_GGUF_LORA/PSY_GGUF_CONSTRAINED)")
    p.add_argument("--adapter-task", default=None,
                   help="evaluate the run trained on this task (<model>/<adapter task>/<method>) on TASK")
    p.add_argument("--plugins", nargs="+", default=None, help="run only these plugins (default: the task's list)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N samples/items only")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--scoring", choices=["loglik", "generate"], default=None,
                   help="option 'scoring' of the task's plugins (psychcounsel_bench)")
    p.add_argument("--prompt-format", nargs="+", default=None,
                   help="option 'formats': prompt format names or YAML paths (first = headline)")
    p.add_argument("--bench-file", default=None, help="option 'bench_file': benchmark JSON file")
    p.add_argument("--raw-dir", default=None,
                   help="raw sources folder for {raw_dir} in benchmark paths (default $PSY_RAW_DIR or ./raw)")
    p.add_argument("--rubric", default=None, help="option 'rubric' (llm_judge): rubric name or YAML path")
    p.add_argument("--judge-url", default=None, help="option 'base_url' (llm_judge): OpenAI-compatible base URL")
    p.add_argument("--judge-model", default=None, help="option 'model' (llm_judge): judge model name")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("compare", help="every evaluation of the named runs side by side (markdown + CSV)")
    p.add_argument("--run", action="append", default=[], help="a run to include (repeatable; default: every run)")
    p.add_argument("--runs-root", default=None, help="runs root (default: $PSY_RUNS_DIR or ./runs)")
    p.set_defaults(func=cmd_compare)

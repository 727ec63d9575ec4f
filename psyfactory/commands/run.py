"""Core commands: list, config, train, merge, predict, chat, demo."""

from __future__ import annotations

import argparse
import os
import time

from psyfactory.commands.common import add_run_args, run_from_args
from psyfactory.core import paths


def cmd_list(args: argparse.Namespace) -> None:
    from psyfactory.layers import list_names

    for kind in ("model", "task", "method", "hardware", "recipe"):
        print(f"{kind:9} {' '.join(list_names(kind))}")
    if args.psy:
        from psyfactory.psyconfig import describe

        print("\npsy keys (docs/configs.md):")
        for key, layer, typ, default, _ in describe():
            print(f"  psy.{key:26} {layer:9} {typ:40} default {default}")
    if args.paths:
        print(f"\npaths ({'installed package' if paths.INSTALLED else 'checkout'}; PSY_* variables move the user's):")
        for label, where in [("configs", os.pathsep.join(map(str, paths.config_dirs()))),
                             ("evaluation", paths.EVALUATION_DIR), ("slurm", paths.SLURM_DIR),
                             ("samples", paths.SAMPLES_DIR), ("work", paths.work_dir()), ("dataset", paths.dataset_dir()),
                             ("runs", paths.runs_root()), ("raw", paths.raw_dir()), ("cache", paths.cache_dir())]:
            print(f"  {label:10} {where}")
    if args.runs:
        from psyfactory.runs import all_runs

        print("\nruns under " + str(paths.runs_root()) + ":")
        for name in all_runs():
            print(f"  {name}")


def cmd_config(args: argparse.Namespace) -> None:
    from psyfactory import preflight

    run = run_from_args(args, inherit=False)
    preflight.check_run(run.config, run.task, need_files=False, with_lf=args.lf_check)
    print(run.config.to_yaml(), end="")


def cmd_train(args: argparse.Namespace) -> None:
    from psyfactory import runner

    out = runner.train(run_from_args(args, inherit=False), dry_run=args.dry_run,
                       accept_data_change=args.accept_data_change)
    print(f"[psyfactory] {'config written' if args.dry_run else 'adapter'}: {out}")


def cmd_merge(args: argparse.Namespace) -> None:
    from psyfactory import runner

    print(f"[psyfactory] merged model: {runner.merge(run_from_args(args), allow_unfinished=args.allow_unfinished)}")


def cmd_predict(args: argparse.Namespace) -> None:
    from psyfactory import runner

    print(f"[psyfactory] predictions: {runner.predict(run_from_args(args), allow_unfinished=args.allow_unfinished)}")


def cmd_chat(args: argparse.Namespace) -> None:
    from psyfactory import runner

    runner.chat(run_from_args(args), base=args.base)


DEMO_SAMPLES = paths.SAMPLES_DIR


def cmd_demo(args: argparse.Namespace) -> None:
    """prep (bundled sample data) -> train -> merge -> predict, on the tiny model, on CPU."""
    from psyfactory import runner
    from psyfactory.prep import prepare
    from psyfactory.runspec import resolve

    t0 = time.time()
    demo_root = paths.runs_root() / "_demo"
    os.environ["PSY_DATASET_DIR"] = str(demo_root / "dataset")  # keep the user's data/ untouched
    # The student task needs a teacher LLM; the demo uses the offline keyword stand-in (not a real labeller).
    prepare([args.task], DEMO_SAMPLES, paths.dataset_dir(), teacher="lexicon")
    overrides = ["max_steps=20", "logging_steps=5", "save_steps=20", "cutoff_len=1024",
                 "psy.generation.max_new_tokens=32", "overwrite_output_dir=true", *args.overrides]
    run = resolve(model="tiny", task=args.task, method="lora", hw="cpu", overrides=overrides, inherit=False)
    adapter = runner.train(run)
    merged = runner.merge(run)
    preds = runner.predict(run)
    print("\n[psyfactory] demo finished in %.0fs" % (time.time() - t0))
    for label, path in [("data", paths.dataset_dir()), ("adapter", adapter), ("merged model", merged),
                        ("predictions", preds), ("manifest", run.dir / "manifest.json")]:
        print(f"  {label:13} {path}")


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("list", help="list models, tasks, methods, hardware profiles")
    p.add_argument("--psy", action="store_true", help="also the psy: keys with their layer, type and default")
    p.add_argument("--runs", action="store_true", help="also the runs under the runs root")
    p.add_argument("--paths", action="store_true",
                   help="also where the package's own files (configs, schemas, templates, samples) and yours are")
    p.set_defaults(func=cmd_list)
    for name, func, help_ in [
        ("config", cmd_config, "print the composed flat LLaMA-Factory config"),
        ("train", cmd_train, "LoRA/QLoRA SFT through llamafactory-cli train"),
        ("merge", cmd_merge, "merge the run's adapter into the full-precision base"),
        ("predict", cmd_predict, "greedy generation on the task's eval set"),
        ("chat", cmd_chat, "interactive chat with the base model + the run's adapter"),
    ]:
        p = sub.add_parser(name, help=help_)
        add_run_args(p)
        if name == "train":
            p.add_argument("--dry-run", action="store_true", help="write and check train.yaml, don't train")
            p.add_argument("--accept-data-change", action="store_true",
                           help="resume checkpoints although the dataset files changed (recorded in the manifest)")
        if name in ("merge", "predict"):
            p.add_argument("--allow-unfinished", action="store_true",
                           help="use the adapter of a run whose training stopped before the end")
        if name == "config":
            p.add_argument("--lf-check", action="store_true",
                           help="also run LLaMA-Factory's own argument parser on it (imports LLaMA-Factory: seconds)")
        if name == "chat":
            p.add_argument("--base", action="store_true", help="chat with the base model (no adapter)")
        p.set_defaults(func=func)
    p = sub.add_parser("demo", help="sample data -> train -> merge -> predict on the tiny model (CPU)")
    p.add_argument("--task", default="psydt")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_demo)

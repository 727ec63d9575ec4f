"""`psyfactory reproduce` (a recipe's chain), `psyfactory recipes` (list them, docs/recipes.md) and
`psyfactory tensorboard` (a run's training logs)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from psyfactory.commands.common import run_from_args
from psyfactory.core.errors import ConfigError, RunError


def cmd_reproduce(args: argparse.Namespace) -> int:
    from psyfactory.reproduce import parse_steps, reproduce

    if not args.recipe:
        from psyfactory.recipes import list_recipes

        raise ConfigError(f"reproduce needs RECIPE=<name>; valid: {', '.join(list_recipes())}")
    if args.model or args.task or args.method:
        raise ConfigError(f"RECIPE={args.recipe} names the model, task and method; to vary them, "
                          "`make train RECIPE=... MODEL=... RUN=<name>`")
    steps = parse_steps(args.steps)
    # training composes from this command alone; later steps alone (a Slurm eval job) inherit the run's
    run = run_from_args(args, inherit="train" not in steps)
    reproduce(run, steps=steps, limit=args.limit, batch_size=args.batch_size, backend=args.backend)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from psyfactory import seedtable
    from psyfactory.recipes import describe, load_recipe

    names = [args.recipe] if args.recipe else None
    if names:
        load_recipe(args.recipe)  # unknown name: the error lists the valid ones
    if args.markdown or args.write:
        text = seedtable.markdown(args.hw, names)
        if args.write:
            from psyfactory.core.files import atomic_write_text

            atomic_write_text(Path(args.write), text)
            print(f"[psyfactory] written: {args.write}")
        else:
            print(text, end="")
        return 0
    if args.check:
        bad = [(n, r.setting.setting) for n in (names or [d[0] for d in describe()])
               for r in seedtable.setting_rows(n, args.hw) if not r.ok]
        for name, setting in bad:
            print(f"{name}: '{setting}' differs from the seed and the seed file gives no reason", file=sys.stderr)
        return 1 if bad else 0
    print(f"{'recipe':18} {'model/task/method':46} {'evaluations':34} seed")
    for name, mtm, evals, seed in describe():
        if names is None or name in names:
            print(f"{name:18} {mtm:46} {evals:34} {seed}")
    print("\nrun one: make reproduce RECIPE=<name>   side by side with its seed: make recipe-table (docs/recipes.md)")
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    """TensorBoard on a run's training logs (LF output_dir/runs), or on every run under the runs root."""
    from psyfactory.core import paths

    if args.run or args.recipe or args.model or args.task or args.method:
        logdir = run_from_args(args).adapter_dir / "runs"
        if not logdir.is_dir():
            raise RunError(f"no TensorBoard logs in {logdir}: train with `report_to: tensorboard` "
                           f"(ARGS=report_to=tensorboard, or a recipe that sets it)")
    else:
        logdir = paths.runs_root()
        if not logdir.is_dir():
            raise RunError(f"no runs under {logdir}")
    exe = Path(sys.executable).with_name("tensorboard")
    found = str(exe) if exe.exists() else shutil.which("tensorboard")
    if not found:
        raise RunError("tensorboard is not installed: run `make setup`")
    argv = [found, "--logdir", str(logdir), "--host", args.host, "--port", str(args.port)]
    print(f"[psyfactory] {' '.join(argv)}  (open http://{args.host}:{args.port}; Ctrl-C stops)", flush=True)
    if args.print_only:
        return 0
    os.execv(found, argv)
    return 0  # not reached


def register(sub: argparse._SubParsersAction) -> None:
    from psyfactory.commands.common import add_run_args
    from psyfactory.reproduce import STEPS

    p = sub.add_parser("reproduce", help="a recipe's chain: download -> prep -> train -> merge -> eval tuned+base -> compare [-> gguf]")
    add_run_args(p)
    p.add_argument("--steps", default=None, help=f"comma list of {', '.join(STEPS)} (default: all)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N samples/items only")
    p.add_argument("--batch-size", type=int, default=8, help="eval batch size")
    p.add_argument("--backend", default="auto", choices=["hf", "vllm", "auto"], help="eval backend")
    p.add_argument("--raw-dir", default=None, help="raw data folder (download, prep, benchmark files; default: "
                                                   "$PSY_RAW_DIR or ./raw)")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("recipes", help="list the recipes; --markdown: docs/recipes.md (seed vs recipe tables)")
    p.add_argument("--recipe", default=None, help="one recipe only")
    p.add_argument("--hw", default="a40", help="hardware profile the recipes are composed for (default a40)")
    p.add_argument("--markdown", action="store_true", help="print the side-by-side tables (docs/recipes.md)")
    p.add_argument("--write", default=None, metavar="FILE", help="write the tables to FILE")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a recipe differs from its seed without a reason in the seed file")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("tensorboard", help="TensorBoard on a run's training logs (or on every run)")
    add_run_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6006)
    p.add_argument("--print-only", action="store_true", help="print the command, don't start it")
    p.set_defaults(func=cmd_tensorboard)

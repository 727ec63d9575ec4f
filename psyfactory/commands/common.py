"""What every run-scoped command shares: its options, and the one place a command line becomes a run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psyfactory.runspec import Run


def add_run_args(p: argparse.ArgumentParser, *, method: bool = True, external: bool = False) -> None:
    """The options every run-scoped command takes, plus trailing key=value overrides; `external`: also
    --adapter / --model-path (a model trained elsewhere)."""
    p.add_argument("--run", default=None,
                   help="run name (runs/<name>); default: the recipe's name, else <model>/<task>/<method>")
    p.add_argument("--recipe", default=None,
                   help="configs/recipes/<name>.yaml: model, task, method and the experiment's own keys")
    p.add_argument("--model", default=None, help="configs/models/<name>.yaml (default: the run's, else tiny)")
    p.add_argument("--task", default=None, help="configs/tasks/<name>.yaml (default: the run's, else psydt)")
    if method:
        p.add_argument("--method", default=None, help="configs/methods/<name>.yaml (default: the run's, else lora)")
    p.add_argument("--hw", default="auto", help="configs/hardware/<name>.yaml; auto = a40 with CUDA else cpu")
    if external:
        p.add_argument("--adapter", default=None,
                       help="a LoRA adapter folder trained elsewhere (e.g. by `llamafactory-cli train`), evaluated as "
                            "run external/<folder> (or RUN=); MODEL= names its base when it cannot be read from it")
        p.add_argument("--model-path", default=None,
                       help="a merged model folder trained elsewhere, with MODEL=<the model it was tuned from>")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any config key (psy.* for ours)")


def run_from_args(args: argparse.Namespace, *, inherit: bool = True, eval_task: bool = False) -> Run:
    """The one place a command line becomes a run (psyfactory.runspec.Run). With `eval_task`, TASK names
    the task to evaluate on: for a recipe, a trained run or ADAPTER_TASK, the run is found without it."""
    from psyfactory import runs
    from psyfactory.core import paths
    from psyfactory.runspec import resolve

    task, target = args.task, None
    adapter_task = getattr(args, "adapter_task", None)
    if eval_task:
        target = args.task
        if adapter_task:
            task = adapter_task
        elif args.recipe or (args.run and runs.recorded(paths.run_dir(runs.check_name(args.run)))):
            task = None  # TASK is the eval task only
    raw = getattr(args, "raw_dir", None)
    return resolve(run=args.run, recipe=getattr(args, "recipe", None), model=args.model, task=task,
                   method=getattr(args, "method", None), hw=args.hw, overrides=args.overrides, inherit=inherit,
                   eval_task=target, adapter=getattr(args, "adapter", None),
                   model_path=getattr(args, "model_path", None), raw_dir=Path(raw).resolve() if raw else None)

"""Slurm commands: sbatch (submit the pipeline), status, stage (login node), slurm-prepare (in jobs)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from psyfactory.commands.common import add_run_args, run_from_args


def _request(args: argparse.Namespace, profile: dict[str, Any]) -> Any:
    """The run resolved once, for the hardware the cluster profile names (not the login node's)."""
    from psyfactory import slurm

    args.hw = slurm.profile_hw(args.hw, profile)
    run = run_from_args(args, inherit=False)
    stages = getattr(args, "stages", None)
    if not stages and run.recipe:  # the recipe's chain: GGUF (and its evaluation) only where the seed exported
        from psyfactory.recipes import load_recipe

        gguf = load_recipe(run.recipe).spec.gguf
        stages = ",".join(s for s in slurm.DEFAULT_STAGES if gguf or s not in ("gguf", "eval-gguf"))
    return slurm.Request(run, gpus=getattr(args, "gpus", 1), nodes=getattr(args, "nodes", 1),
                         stages=slurm.parse_stages(stages or ",".join(slurm.DEFAULT_STAGES)),
                         deepspeed=getattr(args, "deepspeed", None),
                         accept_data_change=getattr(args, "accept_data_change", False))


def cmd_sbatch(args: argparse.Namespace) -> int:
    from psyfactory import slurm

    profile = slurm.load_profile(args.set or [])
    req = _request(args, profile)
    slurm.submit(req, profile, dry_run=args.dry_run, restart=args.restart)
    if not args.dry_run:
        print(f"[psy] follow with: make status RUN={req.run}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from psyfactory import slurm

    return slurm.status(_run_dir(args), lines=args.lines)


def _run_dir(args: argparse.Namespace) -> Any:
    from psyfactory import runs

    return runs.resolve(args.run, args.model, args.task, args.method, args.recipe)[0].dir


def cmd_stage(args: argparse.Namespace) -> int:
    from psyfactory import slurm

    profile = slurm.load_profile(args.set or [])
    slurm.stage_offline(_request(args, profile), profile)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from psyfactory import slurm

    info = slurm.prepare(_request(args, {}), list(args.overrides))
    resume = info["resume_from"]
    print(f"[psy] run dir {info['run_dir']} config hash {info['config_hash']}: "
          + (f"resuming from {resume}" if resume else "starting fresh (no checkpoint)"))
    if info["tokenized_path"]:
        print(f"[psy] tokenized data {info['tokenized_path']}: {info['tokenized']}")
    sys.stdout.flush()
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Seeds x a grid of overrides, each point a run: Slurm job arrays, or here in turn (--local)."""
    import shutil
    from pathlib import Path

    from psyfactory import sweep

    seeds, grid = sweep.parse_seeds(args.seeds), sweep.parse_grid(args.grid or "")
    local = args.local or (shutil.which("sbatch") is None and not args.dry_run)
    if local:
        base = run_from_args(args, inherit=False)
    else:
        from psyfactory import slurm

        profile = slurm.load_profile(args.set or [])
        args.hw = slurm.profile_hw(args.hw, profile)
        base = run_from_args(args, inherit=False)
    if base.recipe:
        from psyfactory.recipes import load_recipe

        eval_tasks = load_recipe(base.recipe).spec.eval_tasks
    else:
        eval_tasks = [base.trained_task]
    points = sweep.plan(base, args.name, seeds, grid)
    for task in eval_tasks:  # every eval task's plugins and inputs, before anything trains or queues
        base.for_task(task).task.plugins()
    path = sweep.write_plan(base, args.name, points, eval_tasks, args.limit)
    print(f"[sweep] {len(points)} point(s) ({len(grid)} grid point(s) x {len(seeds)} seed(s)): {path}", flush=True)
    if local:
        if not args.local:
            print("[sweep] no sbatch here: running the points in turn", flush=True)
        sweep.run_local(path)
        print(f"[sweep] done; compare them: make compare RUNS=\"{base.name}/sweep-{args.name}\"", flush=True)
        return 0
    sweep.submit(base, Path(path), profile, dry_run=args.dry_run)
    return 0


def cmd_sweep_task(args: argparse.Namespace) -> int:
    from pathlib import Path

    from psyfactory import sweep

    sweep.run_stage(Path(args.plan), args.stage, sweep.array_index() if args.index is None else args.index)
    return 0


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("sbatch", help="submit [teacher ->] train -> merge -> gguf -> eval as dependent Slurm jobs")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per node for training (default 1)")
    p.add_argument("--nodes", type=int, default=1, help="nodes for training (default 1)")
    p.add_argument("--stages", default=None,
                   help="comma list, e.g. train,merge (default train,merge,gguf,eval,eval-gguf; a recipe: its chain); "
                        "teacher,train,... first labels the student set on a GPU node")
    p.add_argument("--deepspeed", default=None, help="z2 | z3 (configs/deepspeed/ds_<x>.json) | a JSON path")
    p.add_argument("--restart", action="store_true", help="move the run's old adapter dir aside, start over")
    p.add_argument("--accept-data-change", action="store_true",
                   help="the training job resumes the run's checkpoints although the dataset files changed")
    p.add_argument("--dry-run", action="store_true", help="print the scripts and sbatch commands only")
    p.add_argument("--set", action="append", metavar="key=value", help="override a profile key (repeatable)")
    add_run_args(p)
    p.set_defaults(func=cmd_sbatch)

    p = sub.add_parser("status", help="state of each job of the run's last Slurm pipeline")
    p.add_argument("--lines", type=int, default=25, help="log lines shown for a failed job")
    add_run_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("stage", help="login node: download model + check data + tokenize for offline jobs")
    p.add_argument("--set", action="append", metavar="key=value", help="override a profile key (repeatable)")
    add_run_args(p)
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("sweep", help="a recipe (or MODEL/TASK) over seeds x a grid of overrides, each point a run")
    p.add_argument("--seeds", default="1,2,3", help="comma list (default 1,2,3): each trains with seed=<s>")
    p.add_argument("--grid", default="", help='overrides to vary, "key=a,b other=c,d" (the cartesian product)')
    p.add_argument("--name", default="sweep", help="the sweep's folder: runs/<base run>/sweep-<name>/")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N samples/items only")
    p.add_argument("--local", action="store_true", help="run the points here in turn, not as Slurm arrays")
    p.add_argument("--dry-run", action="store_true", help="print the array scripts and sbatch commands only")
    p.add_argument("--set", action="append", metavar="key=value", help="override a profile key (repeatable)")
    add_run_args(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("sweep-task", help="(inside a sweep's array job) one stage of one point")
    p.add_argument("--plan", required=True)
    p.add_argument("--stage", required=True, choices=("prepare", "train", "eval"))
    p.add_argument("--index", type=int, default=None, help="the point (default: $SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=cmd_sweep_task)

    p = sub.add_parser("slurm-prepare", help="(inside a training job) guard the run dir, tokenize once")
    p.add_argument("--accept-data-change", action="store_true", help=argparse.SUPPRESS)
    add_run_args(p)
    p.set_defaults(func=cmd_prepare)

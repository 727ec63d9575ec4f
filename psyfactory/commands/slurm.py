"""Slurm commands: sbatch (submit the pipeline), status, stage (login node), slurm-prepare (in jobs)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from psyfactory.commands.common import add_run_args, run_from_args

STAGES = ("train", "merge", "gguf", "eval")  # psyfactory.slurm.DEFAULT_STAGES (imported lazily)


def _request(args: argparse.Namespace, profile: dict[str, Any]) -> Any:
    """The run resolved once, for the hardware the cluster profile names (not the login node's)."""
    from psyfactory import slurm

    args.hw = slurm.profile_hw(args.hw, profile)
    run = run_from_args(args, inherit=False)
    stages = getattr(args, "stages", None)
    if not stages and run.recipe:  # the recipe's chain: GGUF only where the seed exported one
        from psyfactory.recipes import load_recipe

        stages = ",".join(s for s in STAGES if s != "gguf" or load_recipe(run.recipe).spec.gguf)
    return slurm.Request(run, gpus=getattr(args, "gpus", 1), nodes=getattr(args, "nodes", 1),
                         stages=slurm.parse_stages(stages or ",".join(STAGES)),
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


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("sbatch", help="submit [teacher ->] train -> merge -> gguf -> eval as dependent Slurm jobs")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per node for training (default 1)")
    p.add_argument("--nodes", type=int, default=1, help="nodes for training (default 1)")
    p.add_argument("--stages", default=None,
                   help="comma list, e.g. train,merge (default train,merge,gguf,eval; a recipe: its chain); "
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

    p = sub.add_parser("slurm-prepare", help="(inside a training job) guard the run dir, tokenize once")
    p.add_argument("--accept-data-change", action="store_true", help=argparse.SUPPRESS)
    add_run_args(p)
    p.set_defaults(func=cmd_prepare)

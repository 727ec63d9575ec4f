"""`psyfactory` console entry point. Feature modules add subcommands via `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import sys

from psyfactory.config import ConfigError
from psyfactory.lf_train import PREEMPTED
from psyfactory.preflight import PreflightError
from psyfactory.runner import Preempted, RunError

COMMAND_MODULES = [
    "psyfactory.commands.run",
    "data_prep.cli",
    "psyfactory.evaluate",
    "psyfactory.commands.gguf",
    "psyfactory.commands.slurm",
]


def add_run_args(p: argparse.ArgumentParser, *, method: bool = True) -> None:
    """The options every run-scoped command takes, plus trailing key=value overrides."""
    p.add_argument("--model", default="tiny", help="configs/models/<name>.yaml")
    p.add_argument("--task", default="psydt", help="configs/tasks/<name>.yaml")
    if method:
        p.add_argument("--method", default="lora", help="configs/methods/<name>.yaml")
    p.add_argument("--hw", default="auto", help="configs/hardware/<name>.yaml; auto = a40 with CUDA else cpu")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any config key (psy.* for ours)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psyfactory", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return PREEMPTED
    except (ConfigError, PreflightError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

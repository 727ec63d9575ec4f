"""`psyfactory` console entry point. Feature modules add subcommands via `register(subparsers)`.

Errors: a `psyfactory.core.errors.UserError` anywhere below is printed here, once, as one
`error: ...` line with exit code 2; any other exception is a bug and keeps its traceback.
Command modules import their heavy dependencies (torch, transformers, LLaMA-Factory) inside the
commands, so `psyfactory list` and `--help` start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from psyfactory.core.errors import PREEMPTED, Preempted, UserError

COMMAND_MODULES = [
    "psyfactory.commands.run",
    "psyfactory.commands.data",
    "psyfactory.commands.eval",
    "psyfactory.commands.gguf",
    "psyfactory.commands.slurm",
    "psyfactory.commands.recipes",
]


def add_run_args(p: argparse.ArgumentParser, *, method: bool = True) -> None:
    """The options every run-scoped command takes, plus trailing key=value overrides."""
    p.add_argument("--run", default=None,
                   help="run name (runs/<name>); default: the recipe's name, else <model>/<task>/<method>")
    p.add_argument("--recipe", default=None,
                   help="configs/recipes/<name>.yaml: model, task, method and the experiment's own keys")
    p.add_argument("--model", default=None, help="configs/models/<name>.yaml (default: the run's, else tiny)")
    p.add_argument("--task", default=None, help="configs/tasks/<name>.yaml (default: the run's, else psydt)")
    if method:
        p.add_argument("--method", default=None, help="configs/methods/<name>.yaml (default: the run's, else lora)")
    p.add_argument("--hw", default="auto", help="configs/hardware/<name>.yaml; auto = a40 with CUDA else cpu")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any config key (psy.* for ours)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psyfactory", description=__doc__.split("\n")[0])
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
    except UserError as e:
        print("error: " + " ".join(str(e).split("\n")[0].split()) + _more(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _more(e: UserError) -> str:
    """Extra lines of a message (e.g. a child's log tail) go after the error line, indented."""
    rest = str(e).split("\n")[1:]
    return "".join(f"\n    {line}" for line in rest if line.strip())


if __name__ == "__main__":
    sys.exit(main())

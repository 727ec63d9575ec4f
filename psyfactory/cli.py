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

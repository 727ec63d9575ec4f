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

from psyfactory.core.errors import PREEMPTED, Preempted, UserError, storage_problem

COMMAND_MODULES = [
    "psyfactory.commands.run",
    "psyfactory.commands.data",
    "psyfactory.commands.eval",
    "psyfactory.commands.harness",
    "psyfactory.commands.gguf",
    "psyfactory.commands.export",
    "psyfactory.commands.slurm",
    "psyfactory.commands.recipes",
    "psyfactory.commands.crisis",
]



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psyfactory", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def expand_args(argv: list[str]) -> list[str]:
    """`--args "STRING"` (how the Makefile hands over ARGS and EVAL_ARGS) becomes the words of STRING, split
    like a shell splits them (quotes group words) but never run through a shell: backticks, `$( )`, `&`
    and `;` stay text."""
    import shlex

    out: list[str] = []
    it = iter(argv)
    for word in it:
        if word == "--args":
            value = next(it, "")
            try:
                out += shlex.split(value)
            except ValueError as e:  # an unclosed quote
                raise SystemExit(f"error: ARGS={value!r}: {e}") from None
        else:
            out.append(word)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(expand_args(sys.argv[1:] if argv is None else list(argv)))
    try:
        return int(args.func(args) or 0)
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return PREEMPTED
    except UserError as e:
        print("error: " + " ".join(str(e).split("\n")[0].split()) + _more(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        problem = storage_problem(e)
        if problem is None:
            raise  # anything else is a bug and keeps its traceback
        print(f"error: {problem}; files written before it are kept, nothing was left half-written (atomic writes)",
              file=sys.stderr)
        return 2



def _more(e: UserError) -> str:
    """Extra lines of a message (e.g. a child's log tail) go after the error line, indented."""
    rest = str(e).split("\n")[1:]
    return "".join(f"\n    {line}" for line in rest if line.strip())


if __name__ == "__main__":
    sys.exit(main())

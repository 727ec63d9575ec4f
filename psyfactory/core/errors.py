"""One base class for mistakes a user can fix; `psyfactory.cli.main` prints them as one `error:` line
and exits 2. Any other exception is a bug in PsyFactory and keeps its traceback."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any


class UserError(Exception):
    """A user-fixable problem (bad config, missing data, unknown name...). Message: one line that
    names the file, key or value at fault and, where there is one, the fix."""


class ConfigError(UserError):
    """A configuration mistake: unknown name, bad override, bad YAML, unknown or ill-typed key."""


class PreflightError(ConfigError):
    """A check before any model is loaded failed (LF key, template, dataset, adapter...)."""


class DataError(UserError):
    """Unrecoverable bad input data; the message names file, line/record and field."""


class EvalError(UserError):
    """A user-fixable problem with an evaluation request (missing adapter, bad benchmark file...)."""


class RunError(UserError):
    """A run stage cannot start or its child process failed."""


class BusyError(UserError):
    """Another process holds the lock of a run or a dataset folder (its pid and command are named)."""


class SlurmError(UserError):
    """Bad profile, rejected submission, a run dir that would mix runs."""


class GGUFError(RunError):
    """A GGUF step failed; the message says which file and why."""


class Preempted(Exception):
    """Training stopped early on SIGUSR1 after saving a checkpoint; rerunning resumes from it.
    Not an error: the CLI exits with PREEMPTED (75) so a Slurm job requeues itself."""


PREEMPTED = 75  # exit code after a checkpoint-on-SIGUSR1 stop (EX_TEMPFAIL)

# What the machine, not PsyFactory, refused: one line naming the path (disk full, read-only, permissions).
STORAGE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
                  errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded",
                  errno.EPERM: "operation not permitted"}


def storage_problem(e: OSError, where: str | Path = "a file") -> str | None:
    """`<path>: <strerror> (<what it means>)` for an OSError the machine raised (STORAGE_ERRORS), naming
    `where` when the error names no file; None for any other OSError (a bug: it keeps its traceback)."""
    if e.errno not in STORAGE_ERRORS:
        return None
    meaning = STORAGE_ERRORS[e.errno]
    return f"{e.filename or where}: {e.strerror or meaning} ({meaning})"


def format_validation_error(e: Any, prefix: str, valid: list[str] | None = None) -> str:
    """The first error of a pydantic ValidationError as one line: `prefix.key: message (got value)`;
    an unknown key gets a did-you-mean from `valid`."""
    import difflib

    err = e.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    if err["type"] == "extra_forbidden":
        key = ".".join(str(p) for p in err["loc"])  # `valid` may hold dotted keys of nested blocks
        hint = difflib.get_close_matches(key, valid or [], n=1)
        return f"unknown key '{loc}'" + (f" (did you mean '{prefix}.{hint[0]}'?)" if hint else
                                        f"; valid: {', '.join(valid)}" if valid else "")
    got = f" (got {err['input']!r})" if err["type"] not in ("value_error", "missing") and "input" in err else ""
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}{got}" if err["loc"] else f"{prefix}: {msg}"

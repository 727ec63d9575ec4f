"""Single-process training entry: LLaMA-Factory's `run_exp` on a composed YAML, plus a callback that
saves a checkpoint and stops when SIGUSR1 (Slurm's warning before a time limit or preemption) or Ctrl-C
(SIGINT, passed on by `psyfactory train`) arrives.

    python -m psyfactory.lf_train runs/<run>/train.yaml

Same code path as `llamafactory-cli train <yaml>` on one device (which calls `run_exp()` in-process);
multi-process runs go through `llamafactory-cli` (torchrun) and rely on periodic checkpoints.
Exit code PREEMPTED (75) means: stopped early on request, checkpoint saved, rerun to resume.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import yaml
from transformers import TrainerCallback

from psyfactory.core.errors import PREEMPTED


class CheckpointOnSignal(TrainerCallback):
    def __init__(self) -> None:
        self.requested = False
        self.saved_step: int | None = None

    def request(self, signum: int, frame: object) -> None:  # signal handler: only set a flag
        if signum == signal.SIGINT and self.requested:  # a second Ctrl-C: stop now, no checkpoint
            print("[psyfactory] second Ctrl-C: stopping without a checkpoint", flush=True)
            os._exit(130)
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.requested and self.saved_step is None:
            self.saved_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
            print(f"[psyfactory] stop requested: saving checkpoint-{state.global_step} and stopping", flush=True)
        return control


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m psyfactory.lf_train <train.yaml>", file=sys.stderr)
        return 2
    from llamafactory.train.tuner import run_exp

    cfg = yaml.safe_load(Path(argv[0]).read_text(encoding="utf-8"))
    cb = CheckpointOnSignal()
    signal.signal(signal.SIGUSR1, cb.request)
    signal.signal(signal.SIGINT, cb.request)  # Ctrl-C, as the parent passes it on: like SIGUSR1
    run_exp(cfg, callbacks=[cb])
    if cb.requested:
        print(f"[psyfactory] stopped early at step {cb.saved_step}: rerun the same command to resume", flush=True)
        return PREEMPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())

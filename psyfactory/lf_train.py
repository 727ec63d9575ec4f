"""Single-process training entry: LLaMA-Factory's `run_exp` on a composed YAML, plus a callback that
saves a checkpoint and stops when SIGUSR1 arrives (Slurm's warning before a time limit or preemption).

    python -m psyfactory.lf_train runs/<run>/train.yaml

Same code path as `llamafactory-cli train <yaml>` on one device (which calls `run_exp()` in-process);
multi-process runs go through `llamafactory-cli` (torchrun) and rely on periodic checkpoints.
Exit code PREEMPTED (75) means: stopped early on request, checkpoint saved, rerun to resume.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import yaml
from transformers import TrainerCallback

from psyfactory.core.errors import PREEMPTED


def atomic_trainer_state() -> None:
    """Write trainer_state.json through a temp file + rename. The Trainer writes it last in a checkpoint,
    so with this a checkpoint holds a whole trainer_state.json exactly when its save completed (what
    psyfactory.resume checks before a rerun resumes)."""
    from transformers.trainer_callback import TrainerState

    from psyfactory.core.files import atomic_write_text

    def save_to_json(self, json_path: str) -> None:
        import dataclasses
        import json

        atomic_write_text(json_path, json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n")

    TrainerState.save_to_json = save_to_json


class CheckpointOnSignal(TrainerCallback):
    def __init__(self) -> None:
        self.requested = False
        self.saved_step: int | None = None

    def request(self, signum: int, frame: object) -> None:  # signal handler: only set a flag
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.requested and self.saved_step is None:
            self.saved_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
            print(f"[psyfactory] SIGUSR1: saving checkpoint-{state.global_step} and stopping", flush=True)
        return control


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m psyfactory.lf_train <train.yaml>", file=sys.stderr)
        return 2
    from llamafactory.train.tuner import run_exp

    cfg = yaml.safe_load(Path(argv[0]).read_text(encoding="utf-8"))
    atomic_trainer_state()
    cb = CheckpointOnSignal()
    signal.signal(signal.SIGUSR1, cb.request)
    run_exp(cfg, callbacks=[cb])
    if cb.requested:
        print(f"[psyfactory] stopped early at step {cb.saved_step}: rerun the same command to resume", flush=True)
        return PREEMPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training entry: LLaMA-Factory's `run_exp` on a composed YAML, plus a callback that saves a checkpoint and
stops when a stop is requested: SIGUSR1 (Slurm's warning before a time limit or preemption) or Ctrl-C,
which `psyfactory train` turns into a file, `<output_dir>/.stop-requested`, that every rank checks at each
step end. Under torchrun the ranks agree through one all-reduce per step, so they all save at the same
step and stop together.

    python -m psyfactory.lf_train runs/<run>/train.yaml                 (one process)
    torchrun --nnodes ... --nproc_per_node ... -m psyfactory.lf_train runs/<run>/train.yaml

Same code path as `llamafactory-cli train <yaml>` (whose launcher calls `run_exp()`, under torchrun when
several processes train). Exit code PREEMPTED (75) means: stopped on request, checkpoint saved, rerun to
resume; rank 0 also writes `<output_dir>/.stopped.json` (torchrun reports a rank's 75 as a failure).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import yaml
from transformers import TrainerCallback

from psyfactory.core import settings
from psyfactory.core.errors import PREEMPTED, storage_problem

STOP_FILE, STOPPED_FILE = ".stop-requested", ".stopped.json"  # psyfactory.runner's names


class CheckpointOnSignal(TrainerCallback):
    def __init__(self, stop_file: Path | None = None) -> None:
        self.requested = False
        self.stop_file = stop_file
        self.saved_step: int | None = None

    def request(self, signum: int, frame: object) -> None:  # signal handler: only set a flag
        self.requested = True

    def _wanted(self, args) -> bool:  # noqa: ANN001
        want = self.requested or (self.stop_file is not None and self.stop_file.exists())
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # one rank's request stops them all, at one step
            import torch

            flag = torch.tensor([int(want)], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            want = bool(flag.item())
        return want

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.saved_step is None and self._wanted(args):
            self.saved_step = state.global_step
            control.should_save = True
            control.should_training_stop = True
            if state.is_world_process_zero:
                print(f"[psyfactory] stop requested: saving checkpoint-{state.global_step} and stopping", flush=True)
        return control


def cpu_ranks_resume_fix() -> None:
    """Resuming a multi-process run on CPU: transformers loads the optimizer state with
    `map_location=args.device`, which for CPU ranks is `cpu:0`, a location torch.load cannot restore
    ("don't know how to restore data location ... cpu:0"); on GPUs it is `cuda:N` and works. Only in
    this training process and only for CPU ranks, `cpu:N` is read as `cpu` (the state is the same).
    Reason for patching: the Trainer offers no hook before it loads the optimizer state."""
    import torch
    import transformers.trainer as hf_trainer

    real_load = hf_trainer.torch.load

    def load(f, map_location=None, **kwargs):  # noqa: ANN001, ANN202
        if isinstance(map_location, torch.device) and map_location.type == "cpu":
            map_location = "cpu"
        return real_load(f, map_location=map_location, **kwargs)

    hf_trainer.torch.load = load


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m psyfactory.lf_train <train.yaml>", file=sys.stderr)
        return 2
    from llamafactory.train.tuner import run_exp

    cfg = yaml.safe_load(Path(argv[0]).read_text(encoding="utf-8"))
    out = Path(cfg["output_dir"])
    cb = CheckpointOnSignal(out / STOP_FILE)
    import torch

    if settings.number("WORLD_SIZE", 1, int) > 1 and not torch.cuda.is_available():
        cpu_ranks_resume_fix()
    signal.signal(signal.SIGUSR1, cb.request)
    try:
        run_exp(cfg, callbacks=[cb])
    except OSError as e:  # disk full or read-only while saving: one line, not the trainer's traceback
        problem = storage_problem(e, out)
        if problem is None:
            raise
        print(f"error: {problem} while training; the checkpoints saved before it are kept in {out}",
              file=sys.stderr, flush=True)
        return 1
    if cb.saved_step is not None:
        if settings.number("RANK", 0, int) == 0:
            (out / STOPPED_FILE).write_text(json.dumps({"step": cb.saved_step}) + "\n", encoding="utf-8")
            print(f"[psyfactory] stopped early at step {cb.saved_step}: rerun the same command to resume", flush=True)
        return PREEMPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())

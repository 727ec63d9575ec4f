"""Stages of a run: train, merge, predict, chat. Each writes its flat LF YAML into the run directory,
checks it (preflight), records it in the manifest, then hands it to `llamafactory-cli`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from psyfactory import preflight
from psyfactory.config import parse_overrides
from psyfactory.core import settings
from psyfactory.core.errors import PREEMPTED, Preempted, RunError
from psyfactory.core.files import atomic_write_text
from psyfactory.manifest import record_identity, record_stage
from psyfactory.models import materialize
from psyfactory.resume import finished_training
from psyfactory.runspec import Run

# Keys a derived (merge/predict/chat) config inherits from the composed training config.
STOP_FILE = ".stop-requested"  # in the adapter folder: every rank saves and stops at its next step end
STOPPED_FILE = ".stopped.json"  # written by rank 0 after that checkpoint: {"step": N}
MODEL_KEYS = ("model_name_or_path", "template", "trust_remote_code", "finetuning_type", "enable_thinking")
QUANT_KEYS = ("quantization_bit", "quantization_method", "double_quantization")
PREDICT_KEYS = MODEL_KEYS + QUANT_KEYS + (
    "dataset_dir", "cutoff_len", "max_samples", "preprocessing_num_workers", "dataloader_num_workers",
    "per_device_eval_batch_size", "bf16", "flash_attn", "seed", "overwrite_cache", "report_to",
)

__all__ = ["PREEMPTED", "Preempted", "RunError", "chat", "merge", "predict", "train"]


def lf_cli() -> str:
    local = Path(sys.executable).with_name("llamafactory-cli")
    found = str(local) if local.exists() else shutil.which("llamafactory-cli")
    if not found:
        raise RunError("llamafactory-cli not found: run `make setup`")
    return found


def lf_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not _cuda_available():
        env.setdefault("OMP_NUM_THREADS", "1")  # measured: 25 ms/step vs seconds under contention
    return env


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _run(args: list[str], config_file: Path, *, stdin: Any = None, stop_file: Path | None = None) -> int:
    """Run a child in the config's directory; SIGUSR1 sent to us is passed on to it. With `stop_file` (the
    trainer, one process or torchrun's ranks): SIGUSR1 and Ctrl-C create that file instead, and every rank
    saves a checkpoint at the same step and stops (psyfactory.lf_train); the trainer runs in a session of
    its own, so the terminal's Ctrl-C reaches it only through us. A second Ctrl-C stops it at once."""
    print(f"[psyfactory] {' '.join(args)}", flush=True)
    proc = subprocess.Popen(args, cwd=config_file.parent, env=lf_env(), stdin=stdin,
                            start_new_session=stop_file is not None)
    pressed = [0]

    def request_stop(signum: int, frame: object) -> None:
        if stop_file is None:
            proc.send_signal(signum)
            return
        if signum == signal.SIGINT:
            pressed[0] += 1
            if pressed[0] > 1:
                print("\n[psyfactory] second Ctrl-C: stopping now, without a checkpoint", file=sys.stderr, flush=True)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                return
            print("\n[psyfactory] Ctrl-C: the trainer saves a checkpoint and stops (Ctrl-C again: stop at once)",
                  file=sys.stderr, flush=True)
        stop_file.parent.mkdir(parents=True, exist_ok=True)
        stop_file.touch()

    previous = signal.signal(signal.SIGUSR1, request_stop)
    previous_int = signal.signal(signal.SIGINT, request_stop) if stop_file is not None else None
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)


def _run_checked(args: list[str], config_file: Path, what: str, *, stdin: Any = None,
                 allowed: tuple[int, ...] = (), stop_file: Path | None = None) -> int:
    """Run a stage child; a nonzero exit code not in `allowed` raises a RunError naming `what`.
    The stage name in messages is the config file's stem."""
    t0 = time.time()
    rc = _run(args, config_file, stdin=stdin, stop_file=stop_file)
    if rc != 0 and rc not in allowed:
        raise RunError(f"{what} failed with exit code {rc}")
    if rc == 0:
        print(f"[psyfactory] {config_file.stem} finished in {time.time() - t0:.1f}s", flush=True)
    return rc


def run_lf(command: str, config_file: Path, *, stdin: Any = None) -> None:
    """Run `llamafactory-cli <command> <config_file>`."""
    _run_checked([lf_cli(), command, str(config_file)], config_file,
                 f"llamafactory-cli {command} {config_file}", stdin=stdin)


def multi_process() -> bool:
    """True when training runs under torchrun (FORCE_TORCHRUN, or several visible GPUs), as LLaMA-Factory's
    launcher decides."""
    if settings.flag("FORCE_TORCHRUN", False):
        return True
    import torch

    return torch.cuda.device_count() > 1


def train_command(cfg_file: Path, *, seqcls: bool = False) -> list[str]:
    """The trainer's command: `python -m psyfactory.lf_train <yaml>` (LF's `run_exp`, as `llamafactory-cli
    train` runs it on one device, plus checkpoint-on-request), or the same module under torchrun with the
    arguments LLaMA-Factory's launcher gives it (NNODES, NODE_RANK, NPROC_PER_NODE, MASTER_ADDR/PORT).
    `seqcls` (METHOD=lora-cls): `python -m psyfactory.cls_train <yaml>`, one process."""
    if seqcls:
        return [sys.executable, "-m", "psyfactory.cls_train", str(cfg_file)]
    if not multi_process():
        return [sys.executable, "-m", "psyfactory.lf_train", str(cfg_file)]
    import torch

    torchrun = Path(sys.executable).with_name("torchrun")
    nproc = settings.get("NPROC_PER_NODE") or str(max(1, torch.cuda.device_count()))
    return [str(torchrun if torchrun.exists() else "torchrun"), "--nnodes", settings.get("NNODES", "1"),
            "--node_rank", settings.get("NODE_RANK", "0"), "--nproc_per_node", nproc,
            "--master_addr", settings.get("MASTER_ADDR", "127.0.0.1"),
            "--master_port", settings.get("MASTER_PORT") or str(_free_port()),
            "-m", "psyfactory.lf_train", str(cfg_file)]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_rank() -> int:
    """This node's index in a multi-node run (0 alone writes the run's files)."""
    return int(settings.number("NODE_RANK", 0, int))


def write_config(path: Path, cfg: dict[str, Any], header: str) -> Path:
    atomic_write_text(path, header + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


def train(run: Run, *, dry_run: bool = False, accept_data_change: bool = False) -> Path:
    """Preflight, the resume guard (psyfactory.resume), then LLaMA-Factory; the manifest records
    `running`, then `done`, `preempted` or `failed`. The run is locked throughout. On the other nodes of a
    multi-node run (NODE_RANK > 0) only the trainer runs: node 0 writes the run's files."""
    if node_rank() > 0 and not dry_run:
        return _train_follower(run)
    with run.lock():
        return _train(run, dry_run=dry_run, accept_data_change=accept_data_change)


def _train_follower(run: Run) -> Path:
    """A node > 0: the same composed config from a private copy, the trainer, nothing written to the run."""
    import tempfile

    c = run.config
    preflight.check_run(c, run.task)
    materialize(c.model_ref)
    with tempfile.TemporaryDirectory(prefix="psy-node-") as tmp:
        cfg_file = write_config(Path(tmp) / "train.yaml", c.lf, c.header())
        rc = _run_checked(train_command(cfg_file), cfg_file, f"node {node_rank()}: training", allowed=(PREEMPTED, 1),
                          stop_file=run.adapter_dir / STOP_FILE)
    if (run.adapter_dir / STOPPED_FILE).is_file() or rc == PREEMPTED:
        raise Preempted(f"node {node_rank()}: training stopped on request with a checkpoint in {run.adapter_dir}")
    if rc != 0:
        raise RunError(f"node {node_rank()}: training failed with exit code {rc}")
    return run.adapter_dir


def _train(run: Run, *, dry_run: bool, accept_data_change: bool) -> Path:
    from psyfactory import resume

    c = run.config
    cfg_file = run.dir / "train.yaml"
    if not run.trained_here:
        raise RunError(f"run {run.name} evaluates a model trained elsewhere ({run.adapter_dir}); train under "
                       "another RUN=<name>")
    if c.psy.eval_only:
        raise preflight.PreflightError(f"{run.task.task_file}: task '{c.task}' is eval-only (no training "
                                       "data); train on another task and evaluate with ADAPTER_TASK or RUN")
    data_files = preflight.check_run(c, run.task, source=c.source(cfg_file))
    hashes = data_hashes(data_files)  # taken once, now: every later status records what training started on
    resume_from, accepted = resume.check(c, hashes, accept_data_change=accept_data_change)
    seqcls = c.psy.trainer == "seqcls"
    how = f"python -m psyfactory.cls_train {cfg_file}" if seqcls else f"llamafactory-cli train {cfg_file}"
    write_config(cfg_file, c.lf, c.header() + f"# Run: {how}\n")
    if dry_run:
        return cfg_file
    materialize(c.model_ref)
    record_identity(run.dir, c)
    meta = c.psy.model_dump(mode="json")
    extra: dict[str, Any] = {"resumed_from": str(resume_from) if resume_from else None}
    if accepted:
        extra["data_change_accepted"] = accepted
        print(f"[psyfactory] --accept-data-change: continuing {resume_from} on changed data: {'; '.join(accepted)}",
              flush=True)
    record_stage(run.dir, "train", cfg_file, c.lf, meta, data_sha256=hashes, status="running", **extra)
    stop, stopped = run.adapter_dir / STOP_FILE, run.adapter_dir / STOPPED_FILE
    for marker in (stop, stopped):  # left by an earlier stop: this attempt starts clean
        marker.unlink(missing_ok=True)
    try:
        command = train_command(cfg_file, seqcls=seqcls)
        # torchrun exits 1 when its ranks stop on request (75): the marker rank 0 wrote says which it was
        rc = _run_checked(command, cfg_file, " ".join(command[-3:]), allowed=(PREEMPTED, 1), stop_file=stop)
        if stopped.is_file() or rc == PREEMPTED:
            record_stage(run.dir, "train", cfg_file, c.lf, meta, data_sha256=hashes, status="preempted", **extra)
            raise Preempted(f"training stopped on request (SIGUSR1 or Ctrl-C) with a checkpoint in "
                            f"{run.adapter_dir}; rerun the same command to resume from it")
        if rc != 0:
            raise RunError(f"{' '.join(command[-3:])} failed with exit code {rc}")
    except Preempted:
        raise
    except BaseException as e:  # a failed child, Ctrl-C, disk full...: the manifest never stays `running`
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        with contextlib.suppress(OSError):  # the disk that failed the run may refuse this too
            record_stage(run.dir, "train", cfg_file, c.lf, meta, data_sha256=hashes, status=status, **extra)
        raise
    from psyfactory.manifest import adapter_sha256

    record_stage(run.dir, "train", cfg_file, c.lf, meta, data_sha256=hashes, status="done",
                 adapter_sha256=adapter_sha256(run.adapter_dir), **extra)
    return run.adapter_dir


def data_hashes(files: list[Path]) -> dict[str, str]:
    from psyfactory.manifest import sha256_file

    return {str(p): sha256_file(p) for p in files if Path(p).is_file()}


def model_keys(run: Run, keys: tuple[str, ...] = MODEL_KEYS) -> dict[str, Any]:
    """The composed keys a derived stage (merge, predict, chat) inherits; its template is the one prompts are
    rendered with after training (Composed.inference_template: the model's own for pre-rendered text)."""
    c = run.config
    cfg = {k: c.lf[k] for k in keys if k in c.lf}
    if "template" in cfg:
        cfg["template"] = c.inference_template
    return cfg


def merge_config(run: Run) -> dict[str, Any]:
    c = run.config
    cfg = model_keys(run)
    cfg.pop("enable_thinking", None)
    cfg.update(
        adapter_name_or_path=str(run.adapter_dir),
        export_dir=str(run.merged_dir),
        export_size=5,
        export_device="cpu",
        export_legacy_format=False,
    )
    # QLoRA trains on a 4-bit base, but the adapter merges onto the full-precision weights.
    # An explicit quantization override is kept so that preflight can refuse it.
    explicit = parse_overrides(c.overrides)
    cfg.update({k: explicit[k] for k in QUANT_KEYS if k in explicit})
    return cfg


def merge(run: Run, *, allow_unfinished: bool = False) -> Path:
    with run.lock():
        return _merge(run, allow_unfinished=allow_unfinished)


def _merge(run: Run, *, allow_unfinished: bool) -> Path:
    c = run.config
    cfg = merge_config(run)
    cfg_file = run.dir / "merge.yaml"
    if c.psy.trainer == "seqcls":  # not LF's export: peft merges the classifier adapter into the base classifier
        return _merge_classifier(run, cfg, cfg_file, allow_unfinished=allow_unfinished)
    preflight.check_merge(cfg, c.source(cfg_file))
    finished_training(run, allow_unfinished=allow_unfinished)
    write_config(cfg_file, cfg, c.header() + f"# Run: llamafactory-cli export {cfg_file}\n")
    from psyfactory.manifest import adapter_sha256

    source = adapter_sha256(run.adapter_dir)  # the input, before the export reads it
    materialize(c.model_ref)
    run_lf("export", cfg_file)
    if c.foreign_template:  # the merged model (and its GGUF) carries the format the run trained with
        from psyfactory.templates import write_into

        write_into(Path(cfg["export_dir"]), c.inference_template, c.lf.get("default_system"))
    record_stage(run.dir, "merge", cfg_file, cfg, c.psy.model_dump(mode="json"), status="done",
                 chat_template=c.inference_template if c.foreign_template else None, adapter_sha256=source)
    return Path(cfg["export_dir"])


def _merge_classifier(run: Run, cfg: dict[str, Any], cfg_file: Path, *, allow_unfinished: bool) -> Path:
    from psyfactory.cls_train import merge as merge_cls
    from psyfactory.manifest import adapter_sha256

    c = run.config
    finished_training(run, allow_unfinished=allow_unfinished)
    if not run.has_adapter:
        raise RunError(f"no trained adapter in {run.adapter_dir}: train the run first (`make train RUN={run.name}`)")
    write_config(cfg_file, cfg, c.header() + "# Run: make merge (peft merge_and_unload of the classifier adapter)\n")
    source = adapter_sha256(run.adapter_dir)
    materialize(c.model_ref)
    out = merge_cls(run.adapter_dir, c.lf["model_name_or_path"], run.merged_dir)
    record_stage(run.dir, "merge", cfg_file, cfg, c.psy.model_dump(mode="json"), status="done", adapter_sha256=source)
    print(f"[psyfactory] merged classifier: {out}", flush=True)
    return out


def refuse_classifier(run: Run, what: str) -> None:
    """Stages that generate text have nothing to run on a classification head."""
    if run.config.psy.trainer == "seqcls":
        raise RunError(f"run {run.name} is a classifier (METHOD={run.method}): {what} generates text, which it does not; "
                       f"`make eval RUN={run.name}` scores it, `python {run.adapter_dir}/inference_example.py TEXT` "
                       "classifies a text")


def predict_config(run: Run) -> dict[str, Any]:
    """LF predict with the task's generation spec (psy.generation; stop strings are applied to LF's output)."""
    c = run.config
    eval_dataset = run.task.eval_dataset
    if not eval_dataset:
        raise preflight.PreflightError(f"{run.task.task_file}: task '{c.task}' has no eval data to predict on "
                                       "(psy.data or psy.eval_dataset)")
    cfg = model_keys(run, PREDICT_KEYS)
    gen = run.task.generation
    cfg.update(
        stage="sft",
        do_predict=True,
        predict_with_generate=True,
        eval_dataset=eval_dataset,
        adapter_name_or_path=str(run.adapter_dir),
        output_dir=str(run.dir / "predict"),
        overwrite_output_dir=True,
        **gen.lf_keys(),
    )
    if gen.sampled:
        cfg["seed"] = gen.seed
    if gen.prompt == "plain":
        cfg["template"] = "empty"  # LF's template that renders the texts as they are
    return cfg


def _prepare_stage(run: Run, name: str, cfg: dict[str, Any], parser: str, lf_command: str) -> Path:
    """Check a derived stage config (keys for LF's `parser` group, template) and write runs/…/<name>.yaml."""
    cfg_file = run.dir / f"{name}.yaml"
    source = run.source(cfg_file)
    preflight.check_keys(cfg, parser, source)
    preflight.check_template(cfg, source)
    if name == "predict" and not (Path(cfg["adapter_name_or_path"]) / "adapter_config.json").is_file():
        raise preflight.PreflightError(f"{source}: no trained adapter at {cfg['adapter_name_or_path']} (run `make train`)")
    return write_config(cfg_file, cfg, run.config.header() + f"# Run: llamafactory-cli {lf_command} {cfg_file}\n")


def predict(run: Run, *, allow_unfinished: bool = False) -> Path:
    with run.lock():
        return _predict(run, allow_unfinished=allow_unfinished)


def _predict(run: Run, *, allow_unfinished: bool) -> Path:
    refuse_classifier(run, "make predict")
    cfg = predict_config(run)
    data_files = preflight.check_datasets(cfg["eval_dataset"], Path(cfg["dataset_dir"]))
    cfg_file = _prepare_stage(run, "predict", cfg, "train", "train")
    finished_training(run, allow_unfinished=allow_unfinished)
    materialize(run.config.model_ref)
    run_lf("train", cfg_file)
    out = Path(cfg["output_dir"]) / "generated_predictions.jsonl"
    stop = run.task.generation.stop
    if stop:  # LF has no stop strings: cut its predictions where the spec says the reply ends
        from psyfactory.core.files import atomic_write_jsonl, read_jsonl
        from psyfactory.core.generation import cut_at_stop

        atomic_write_jsonl(out, [{**r, "predict": cut_at_stop(r.get("predict", ""), stop)} for r in read_jsonl(out)])
    record_stage(run.dir, "predict", cfg_file, cfg, run.config.psy.model_dump(mode="json"), data_files,
                 status="done", output=str(out))
    return out


def chat_config(run: Run) -> dict[str, Any]:
    cfg = model_keys(run, MODEL_KEYS + QUANT_KEYS)
    if run.has_adapter:
        cfg["adapter_name_or_path"] = str(run.adapter_dir)
    cfg.update(infer_backend="huggingface", **run.task.generation.lf_keys())
    if run.task.generation.prompt == "plain":
        cfg["template"] = "empty"
    return cfg


def chat(run: Run, *, base: bool = False) -> None:
    """LLaMA-Factory's ChatModel on the config `llamafactory-cli chat` would get (written to chat.yaml), in
    psyfactory.labelchat's loop: clean exits, a length check, and for a label task whose plugins declare
    a crisis safety net, the net on each answer. Without a trained adapter it refuses, unless `base`."""
    refuse_classifier(run, "make chat")
    cfg = chat_config(run)
    net = run.task.safety_net()  # config mistakes fail here, before the model loads
    if "adapter_name_or_path" not in cfg and not base:
        raise RunError(f"no trained adapter in {run.adapter_dir}: train the run first (`make train RUN={run.name}`), "
                       "or chat with the base model on purpose: BASE=1")
    if base:
        cfg.pop("adapter_name_or_path", None)
    _prepare_stage(run, "chat", cfg, "infer", "chat")
    materialize(run.config.model_ref)
    from psyfactory.labelchat import chat_lf

    chat_lf(cfg, net, run.task.label_schema)

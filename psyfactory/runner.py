"""Stages of a run: train, merge, predict, chat. Each writes its flat LF YAML into the run directory,
checks it (preflight), records it in the manifest, then hands it to `llamafactory-cli`."""

from __future__ import annotations

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
from psyfactory.config import Composed, parse_overrides
from psyfactory.core.errors import PREEMPTED, Preempted, RunError
from psyfactory.core.files import atomic_write_text
from psyfactory.manifest import read_manifest, record_identity, record_stage
from psyfactory.models import materialize

# Keys a derived (merge/predict/chat) config inherits from the composed training config.
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


def _run(args: list[str], config_file: Path, *, stdin: Any = None) -> int:
    """Run a child in the config's directory; SIGUSR1 sent to us is passed on to it."""
    print(f"[psyfactory] {' '.join(args)}", flush=True)
    proc = subprocess.Popen(args, cwd=config_file.parent, env=lf_env(), stdin=stdin)
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: proc.send_signal(signum))
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGUSR1, previous)


def _run_checked(args: list[str], config_file: Path, what: str, *, stdin: Any = None,
                 allowed: tuple[int, ...] = ()) -> int:
    """Run a stage child; a nonzero exit code not in `allowed` raises a RunError naming `what`.
    The stage name in messages is the config file's stem."""
    t0 = time.time()
    rc = _run(args, config_file, stdin=stdin)
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
    """True when llamafactory-cli would launch torchrun (FORCE_TORCHRUN, or several visible GPUs)."""
    if os.environ.get("FORCE_TORCHRUN", "").lower() in ("1", "true", "y"):
        return True
    import torch

    return torch.cuda.device_count() > 1


def write_config(path: Path, cfg: dict[str, Any], header: str) -> Path:
    atomic_write_text(path, header + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


def adapter_dir(c: Composed) -> Path:
    return Path(c.lf["output_dir"])


def train(c: Composed, *, dry_run: bool = False, accept_data_change: bool = False) -> Path:
    """Preflight, the resume guard (psyfactory.resume), then LLaMA-Factory; the manifest records
    `running`, then `done`, `preempted` or `failed`."""
    from psyfactory import resume

    run_dir = c.run_dir
    cfg_file = run_dir / "train.yaml"
    if c.psy.eval_only:
        raise preflight.PreflightError(f"configs/tasks/{c.task}.yaml: task '{c.task}' is eval-only (no training "
                                       "data); train on another task and evaluate with ADAPTER_TASK or RUN")
    data_files = preflight.check_run(c, source=c.source(cfg_file))
    resume_from, accepted = resume.check(c, data_hashes(data_files), accept_data_change=accept_data_change)
    write_config(cfg_file, c.lf, c.header() + f"# Run: llamafactory-cli train {cfg_file}\n")
    if dry_run:
        return cfg_file
    materialize(c.model_ref)
    record_identity(run_dir, c)
    meta = c.psy.model_dump(mode="json")
    extra: dict[str, Any] = {"resumed_from": str(resume_from) if resume_from else None}
    if accepted:
        extra["data_change_accepted"] = accepted
        print(f"[psyfactory] --accept-data-change: continuing {resume_from} on changed data: {'; '.join(accepted)}",
              flush=True)
    record_stage(run_dir, "train", cfg_file, c.lf, meta, data_files, status="running", **extra)
    try:
        if multi_process():  # llamafactory-cli launches torchrun; resumes rely on periodic checkpoints
            run_lf("train", cfg_file)
        else:  # run_exp in-process, as llamafactory-cli does on one device, plus checkpoint-on-SIGUSR1
            rc = _run_checked([sys.executable, "-m", "psyfactory.lf_train", str(cfg_file)], cfg_file,
                              f"python -m psyfactory.lf_train {cfg_file}", allowed=(PREEMPTED,))
            if rc == PREEMPTED:
                record_stage(run_dir, "train", cfg_file, c.lf, meta, data_files, status="preempted", **extra)
                raise Preempted(f"training stopped on SIGUSR1 with a checkpoint in {adapter_dir(c)}; "
                                "rerun the same command to resume from it")
    except RunError:
        record_stage(run_dir, "train", cfg_file, c.lf, meta, data_files, status="failed", **extra)
        raise
    record_stage(run_dir, "train", cfg_file, c.lf, meta, data_files, status="done", **extra)
    return adapter_dir(c)


def data_hashes(files: list[Path]) -> dict[str, str]:
    from psyfactory.manifest import sha256_file

    return {str(p): sha256_file(p) for p in files if Path(p).is_file()}


def finished_training(c: Composed, *, allow_unfinished: bool = False) -> None:
    """Refuse to use an adapter whose training did not finish (a stopped run leaves a complete-looking
    adapter), saying where it stopped; `allow_unfinished` uses it anyway."""
    stage = read_manifest(c.run_dir).get("stages", {}).get("train")
    if not stage or stage.get("status") == "done":
        return
    state = adapter_dir(c) / "trainer_state.json"
    step = ""
    if state.is_file():
        import json

        st = json.loads(state.read_text(encoding="utf-8"))
        step = f" at step {st.get('global_step')} of {st.get('max_steps')}"
    else:
        ckpts = sorted(adapter_dir(c).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])
                       if p.name.split("-")[-1].isdigit() else -1)
        if ckpts:
            step = f" (last checkpoint {ckpts[-1].name})"
    if allow_unfinished:
        print(f"[psyfactory] --allow-unfinished: using the adapter of {c.run}, whose training is "
              f"'{stage.get('status')}'{step}", flush=True)
        return
    raise RunError(f"run {c.run}: training did not finish (manifest status '{stage.get('status')}'{step}); rerun "
                   f"`make train RUN={c.run}` to complete it, or pass --allow-unfinished to use the adapter as it is")


def merge_config(c: Composed) -> dict[str, Any]:
    cfg = {k: c.lf[k] for k in MODEL_KEYS if k in c.lf}
    cfg.pop("enable_thinking", None)
    cfg.update(
        adapter_name_or_path=str(adapter_dir(c)),
        export_dir=str(c.run_dir / "merged"),
        export_size=5,
        export_device="cpu",
        export_legacy_format=False,
    )
    # QLoRA trains on a 4-bit base, but the adapter merges onto the full-precision weights.
    # An explicit quantization override is kept so that preflight can refuse it.
    explicit = parse_overrides(c.overrides)
    cfg.update({k: explicit[k] for k in QUANT_KEYS if k in explicit})
    return cfg


def merge(c: Composed, *, allow_unfinished: bool = False) -> Path:
    cfg = merge_config(c)
    cfg_file = c.run_dir / "merge.yaml"
    preflight.check_merge(cfg, c.source(cfg_file))
    finished_training(c, allow_unfinished=allow_unfinished)
    write_config(cfg_file, cfg, c.header() + f"# Run: llamafactory-cli export {cfg_file}\n")
    materialize(c.model_ref)
    run_lf("export", cfg_file)
    if c.foreign_template:  # the merged model (and its GGUF) carries the format the run trained with
        from psyfactory.templates import write_into

        write_into(Path(cfg["export_dir"]), c.lf["template"])
    record_stage(c.run_dir, "merge", cfg_file, cfg, c.psy.model_dump(mode="json"), status="done",
                 chat_template=c.lf["template"] if c.foreign_template else None)
    return Path(cfg["export_dir"])


def predict_config(c: Composed) -> dict[str, Any]:
    eval_dataset = c.psy.eval_dataset
    if not eval_dataset:
        raise preflight.PreflightError(f"configs/tasks/{c.task}.yaml: no psy.eval_dataset to predict on")
    cfg = {k: c.lf[k] for k in PREDICT_KEYS if k in c.lf}
    cfg.update(
        stage="sft",
        do_predict=True,
        predict_with_generate=True,
        eval_dataset=eval_dataset,
        adapter_name_or_path=str(adapter_dir(c)),
        output_dir=str(c.run_dir / "predict"),
        overwrite_output_dir=True,
        do_sample=False,
        max_new_tokens=c.psy.max_new_tokens,
    )
    return cfg


def _prepare_stage(c: Composed, name: str, cfg: dict[str, Any], parser: str, lf_command: str) -> Path:
    """Check a derived stage config (keys for LF's `parser` group, template) and write runs/…/<name>.yaml."""
    cfg_file = c.run_dir / f"{name}.yaml"
    source = c.source(cfg_file)
    preflight.check_keys(cfg, parser, source)
    preflight.check_template(cfg, source)
    if name == "predict" and not (Path(cfg["adapter_name_or_path"]) / "adapter_config.json").is_file():
        raise preflight.PreflightError(f"{source}: no trained adapter at {cfg['adapter_name_or_path']} (run `make train`)")
    return write_config(cfg_file, cfg, c.header() + f"# Run: llamafactory-cli {lf_command} {cfg_file}\n")


def predict(c: Composed, *, allow_unfinished: bool = False) -> Path:
    cfg = predict_config(c)
    data_files = preflight.check_datasets(cfg["eval_dataset"], Path(cfg["dataset_dir"]))
    cfg_file = _prepare_stage(c, "predict", cfg, "train", "train")
    finished_training(c, allow_unfinished=allow_unfinished)
    materialize(c.model_ref)
    run_lf("train", cfg_file)
    out = Path(cfg["output_dir"]) / "generated_predictions.jsonl"
    record_stage(c.run_dir, "predict", cfg_file, cfg, c.psy.model_dump(mode="json"), data_files, status="done",
                 output=str(out))
    return out


def chat_config(c: Composed) -> dict[str, Any]:
    cfg = {k: c.lf[k] for k in MODEL_KEYS + QUANT_KEYS if k in c.lf}
    if (adapter_dir(c) / "adapter_config.json").is_file():
        cfg["adapter_name_or_path"] = str(adapter_dir(c))
    cfg.update(infer_backend="huggingface", max_new_tokens=c.psy.max_new_tokens)
    if c.psy.kind == "label":
        cfg["do_sample"] = False  # greedy, as `make eval` and the exported Modelfile (temperature 0)
    return cfg


def chat(c: Composed) -> None:
    """`llamafactory-cli chat`; a label task whose plugins declare a crisis safety net chats through
    psyfactory.labelchat instead (the same config, LLaMA-Factory's ChatModel, the net on each answer)."""
    from psyfactory.evaluate import task_safety_net

    cfg = chat_config(c)
    net = task_safety_net(c)  # config mistakes fail here, before the model loads
    if "adapter_name_or_path" not in cfg:
        print(f"[psyfactory] no adapter in {adapter_dir(c)}: chatting with the base model", flush=True)
    cfg_file = _prepare_stage(c, "chat", cfg, "infer", "chat")
    materialize(c.model_ref)
    if net is None:
        run_lf("chat", cfg_file)
        return
    from psyfactory.core.labels import load_schema
    from psyfactory.labelchat import chat_lf

    assert c.psy.label_schema  # task_safety_net returns a net only for label tasks
    chat_lf(cfg, net, load_schema(c.psy.label_schema))

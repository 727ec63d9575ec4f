"""Checks that run before any model is loaded, so config mistakes cost seconds, not GPU hours.

Each failure is one line naming the offending file/key, raised as PreflightError.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psyfactory.core.errors import PreflightError

if TYPE_CHECKING:
    from psyfactory.config import Composed

__all__ = ["PreflightError", "check_datasets", "check_keys", "check_merge", "check_run", "check_template",
           "check_train"]


@cache
def lf_keys(stage: str) -> frozenset[str]:
    """Every key LLaMA-Factory's argument parser accepts for 'train' or 'infer' (export/chat)."""
    from llamafactory.hparams import parser

    groups = parser._TRAIN_ARGS if stage == "train" else parser._INFER_ARGS
    return frozenset(f.name for g in groups for f in dataclasses.fields(g))


@cache
def lf_templates() -> frozenset[str]:
    from llamafactory.data.template import TEMPLATES

    return frozenset(TEMPLATES)


def check_keys(cfg: dict[str, Any], stage: str, source: str) -> None:
    known = lf_keys(stage)
    for key in cfg:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            raise PreflightError(
                f"{source}: unknown LLaMA-Factory key '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
            )


def check_template(cfg: dict[str, Any], source: str) -> None:
    name = cfg.get("template")
    if name is None:
        raise PreflightError(f"{source}: no 'template' set (add it to configs/models/<model>.yaml)")
    if name not in lf_templates():
        hint = difflib.get_close_matches(str(name), lf_templates(), n=3)
        raise PreflightError(
            f"{source}: template '{name}' is not in LLaMA-Factory's registry"
            + (f" (close: {', '.join(hint)})" if hint else "")
        )


def load_dataset_info(dataset_dir: Path) -> dict[str, Any]:
    path = dataset_dir / "dataset_info.json"
    if not path.is_file():
        raise PreflightError(f"{path}: missing (run `make prep` first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PreflightError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e


def check_datasets(names: str | list[str] | None, dataset_dir: Path, *, need_files: bool = True) -> list[Path]:
    """Each name must be registered in dataset_info.json and (if need_files) its file must exist."""
    if not names:
        return []
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    info = load_dataset_info(dataset_dir)
    files = []
    for name in names:
        if name not in info:
            raise PreflightError(
                f"{dataset_dir / 'dataset_info.json'}: dataset '{name}' is not registered "
                f"(registered: {', '.join(sorted(info)) or 'none'}; run `make prep`)"
            )
        entry = info[name]
        if "file_name" not in entry:
            raise PreflightError(f"{dataset_dir / 'dataset_info.json'}: dataset '{name}' has no 'file_name'")
        file = dataset_dir / entry["file_name"]
        if need_files and not file.exists():
            raise PreflightError(f"dataset '{name}': data file {file} is missing (run `make prep`)")
        files.append(file)
    return files


def check_model(cfg: dict[str, Any]) -> None:
    ref = str(cfg["model_name_or_path"])
    looks_local = ref.startswith(("/", "./", "../", "~")) or Path(ref).exists()
    if looks_local and not (Path(ref).expanduser() / "config.json").is_file():
        raise PreflightError(f"model_name_or_path: {ref} has no config.json (not a model directory)")


def check_memory(c: Composed) -> None:
    """The base weights alone must fit one GPU of the hardware profile (psy.params_b, psy.gpu_memory_gb);
    sharding with DeepSpeed ZeRO-3 lifts the limit."""
    params, gpu = c.psy.params_b, c.psy.gpu_memory_gb
    if not params or not gpu or c.lf.get("deepspeed"):
        return
    bits = c.lf.get("quantization_bit")
    need = params * (0.5 * 1.1 if bits == 4 else 1.1 if bits == 8 else 2.0)  # GB of weights (+ quant scales)
    if need > 0.9 * gpu:
        fix = "use METHOD=qlora" if bits is None else "use a smaller model"
        raise PreflightError(f"{c.source()}: {c.model} needs ~{need:.0f} GB for its weights alone, more than 90% of "
                             f"one {c.hw} GPU ({gpu:g} GB, psy.gpu_memory_gb); {fix}, or shard it across GPUs "
                             "with DS=z3")


def check_run(c: Composed, *, need_files: bool = True, source: str | None = None) -> list[Path]:
    """Everything checkable about a composed training config before a model is loaded."""
    source = source or c.source()
    files = check_train(c.lf, source, need_files=need_files)
    if not c.model_ref.startswith("builtin:"):
        check_model(c.lf)
    check_memory(c)
    from psyfactory.evaluate import check_options

    check_options(c)
    return files


def check_train(cfg: dict[str, Any], source: str, *, need_files: bool = True) -> list[Path]:
    check_keys(cfg, "train", source)
    check_template(cfg, source)
    return check_datasets(cfg.get("dataset"), Path(cfg["dataset_dir"]), need_files=need_files)


def check_merge(cfg: dict[str, Any], source: str) -> None:
    check_keys(cfg, "infer", source)
    check_template(cfg, source)
    if cfg.get("quantization_bit") is not None:
        raise PreflightError(
            f"{source}: cannot merge a LoRA adapter into a quantized base (quantization_bit="
            f"{cfg['quantization_bit']}); merge onto the full-precision base (drop quantization_bit)"
        )
    adapter = Path(str(cfg.get("adapter_name_or_path", "")))
    if not (adapter / "adapter_config.json").is_file():
        raise PreflightError(f"{source}: no trained adapter at {adapter} (run `make train` for this run first)")

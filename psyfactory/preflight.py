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
    from psyfactory.taskview import TaskView

__all__ = ["PreflightError", "check_datasets", "check_keys", "check_merge", "check_run", "check_template",
           "check_train"]

# LLaMA-Factory's public argument dataclasses, per parser (what `get_train_args` / `get_infer_args` parse).
_GROUPS = {"train": ("ModelArguments", "DataArguments", "TrainingArguments", "FinetuningArguments",
                     "GeneratingArguments"),
           "infer": ("ModelArguments", "DataArguments", "FinetuningArguments", "GeneratingArguments")}
SNAPSHOT = Path(__file__).with_name("lf_schema.json")  # keys, types and templates of the pinned LLaMA-Factory


def _lf_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("llamafactory")
    except metadata.PackageNotFoundError:
        return "missing"


def build_schema() -> dict[str, Any]:
    """Every key LLaMA-Factory's parsers accept, with the scalar kinds of its value, and the template
    names: read from LF's public classes (`llamafactory.hparams`, `llamafactory.data.template.TEMPLATES`)."""
    import typing

    import llamafactory.hparams as hp
    from llamafactory.data.template import TEMPLATES

    out: dict[str, Any] = {"llamafactory": _lf_version(), "templates": sorted(TEMPLATES)}
    for stage, groups in _GROUPS.items():
        fields: dict[str, Any] = {}
        for name in groups:
            cls = getattr(hp, name)
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                fields.setdefault(f.name, _kinds(hints.get(f.name, f.type)))
        out[stage] = dict(sorted(fields.items()))
    return out


@cache
def lf_schema() -> dict[str, Any]:
    """LF's keys, value kinds and templates without importing LLaMA-Factory (seconds saved per command):
    the shipped snapshot when it matches the installed version, else a cache built once per version."""
    from psyfactory.core.files import atomic_write_json
    from psyfactory.core.paths import cache_dir

    version = _lf_version()
    for path in (SNAPSHOT, cache_dir() / f"lf_schema-{version}.json"):
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("llamafactory") == version:
                return data
    data = build_schema()
    atomic_write_json(cache_dir() / f"lf_schema-{version}.json", data)
    return data


def lf_keys(stage: str) -> frozenset[str]:
    """Every key LLaMA-Factory's argument parser accepts for 'train' or 'infer' (export/chat)."""
    return frozenset(lf_schema()[stage])


def lf_templates() -> frozenset[str]:
    return frozenset(lf_schema()["templates"])


def _kinds(tp: Any) -> list[Any]:
    """JSON-able scalar kinds of a field type: "float", "int", "bool", "str", ["one of", v...], or "any"."""
    import enum
    import types
    import typing

    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return [["one of", *typing.get_args(tp)]]
    if origin in (typing.Union, types.UnionType):
        kinds = [k for a in typing.get_args(tp) if a is not type(None) for k in _kinds(a)]
        if any(isinstance(k, list) for k in kinds) and "str" in kinds:
            kinds.remove("str")  # transformers' `Union[SomeEnum, str]`: the string must name a member
        return kinds
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return [["one of", *(e.value for e in tp)]]
    if tp in (float, int, bool, str):
        return [tp.__name__]
    return ["any"]  # lists, dicts, anything else: not checked here


def _coerce(value: Any, kinds: list[Any]) -> tuple[bool, Any]:
    """(ok, value converted to the field's type) for a scalar config value."""
    if "any" in kinds or ("str" in kinds and isinstance(value, str)):
        return True, value
    for kind in kinds:
        if isinstance(kind, list):  # Literal / Enum
            allowed = kind[1:]
            if value in allowed:
                return True, value
            if value is False and "no" in allowed:  # YAML 1.1 reads a bare `no` as false
                return True, "no"
        elif kind == "bool":
            if isinstance(value, bool):
                return True, value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return True, value.lower() == "true"
        elif kind == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return True, value
            if isinstance(value, float) and value.is_integer():
                return True, int(value)
            if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                return True, int(value)
        elif kind == "float":
            if isinstance(value, int | float) and not isinstance(value, bool):
                return True, value
            if isinstance(value, str):
                try:
                    return True, float(value)
                except ValueError:
                    pass
        elif kind == "str" and isinstance(value, int | float) and not isinstance(value, bool):
            return True, str(value)
    return False, value


def _expected(kinds: list[Any]) -> str:
    names = [" | ".join(map(repr, k[1:])) if isinstance(k, list) else k for k in kinds]
    return " or ".join(sorted(names))


# Values LF's parser lets through and that fail only after the model has loaded: checked by meaning.
POSITIVE = ("learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
            "gradient_accumulation_steps", "cutoff_len", "lora_rank", "num_train_epochs", "save_steps",
            "logging_steps", "max_new_tokens")
NON_NEGATIVE = ("lora_dropout", "warmup_steps", "weight_decay", "max_grad_norm", "val_size", "lora_alpha")


def check_meaning(cfg: dict[str, Any], source: str) -> None:
    """Numbers that must be positive (a learning rate, a rank, a batch size...) or not negative."""
    for key in POSITIVE:
        value = cfg.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise PreflightError(f"{source}: {key}={value!r} must be greater than 0")
    for key in NON_NEGATIVE:
        value = cfg.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise PreflightError(f"{source}: {key}={value!r} must not be negative")
    dropout = cfg.get("lora_dropout")
    if isinstance(dropout, int | float) and not isinstance(dropout, bool) and dropout >= 1:
        raise PreflightError(f"{source}: lora_dropout={dropout!r} must be below 1")


def check_values(cfg: dict[str, Any], stage: str, source: str) -> dict[str, Any]:
    """Type/value check of every scalar key against LLaMA-Factory's dataclass fields, then LF's own
    argument parser (its `__post_init__` rules) on the result. Returns the config with numbers written
    as strings converted (`learning_rate: "1e-4"`), so LF gets the types it expects. One PreflightError
    per problem, before any model or dataset is loaded."""
    fields = lf_schema()[stage]
    out = dict(cfg)
    for key, value in cfg.items():
        if key not in fields or value is None or isinstance(value, list | dict):
            continue
        kinds = fields[key]
        ok, converted = _coerce(value, kinds)
        if not ok:
            raise PreflightError(f"{source}: {key}={value!r} is not a valid value (LLaMA-Factory expects "
                                 f"{_expected(kinds)})")
        out[key] = converted
    check_meaning(out, source)
    return out


def lf_parse(cfg: dict[str, Any], source: str) -> tuple[Any, ...]:
    """LLaMA-Factory's own check of a training config, through its public `get_train_args` (dataclass
    construction, `__post_init__` rules and its cross-argument checks); returns LF's (model, data,
    training, finetuning, generating) arguments. Hardware is not checked here: a config for A40 nodes is
    checked on a CPU login node too (use_cpu, no DeepSpeed, a scratch output_dir so that LF's resume
    probing of the real one does not apply)."""
    import logging
    import tempfile

    import torch
    from llamafactory.hparams import get_train_args

    args = {k: v for k, v in check_values(cfg, "train", source).items() if v is not None and k != "deepspeed"}
    if not torch.cuda.is_available():
        args["use_cpu"] = True
    args.pop("resume_from_checkpoint", None)
    quiet = logging.getLogger("llamafactory")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its per-process info lines are noise in a preflight
    try:
        with tempfile.TemporaryDirectory(prefix="psy-preflight-") as scratch:
            args["output_dir"] = str(Path(scratch) / "out")
            return tuple(get_train_args(args))
    except ValueError as e:
        raise PreflightError(f"{source}: LLaMA-Factory rejects the config: {' '.join(str(e).split())}") from None
    finally:
        quiet.setLevel(level)


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


def check_datasets(names: str | list[str] | None, dataset_dir: Path, *, need_files: bool = True) -> list[Path]:
    """Each name must be a sound entry of dataset_info.json (psyfactory.datasets) and, if need_files, its file
    must exist and fit the entry."""
    from psyfactory.datasets import entry

    if not names:
        return []
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    return [entry(name, dataset_dir, need_file=need_files)[1] for name in names]


def check_model(cfg: dict[str, Any]) -> None:
    ref = str(cfg["model_name_or_path"])
    looks_local = ref.startswith(("/", "./", "../", "~")) or Path(ref).exists()
    if looks_local and not (Path(ref).expanduser() / "config.json").is_file():
        raise PreflightError(f"model_name_or_path: {ref} has no config.json (not a model directory)")


def check_lora_target(cfg: dict[str, Any], source: str) -> None:
    """Every `lora_target` name must be a module of the model (peft's rule: the module's name, or its last
    dotted parts), checked on the model built on the meta device from its config.json: no weights are
    read. A model whose config is not on this machine yet is checked when it loads."""
    target = cfg.get("lora_target")
    names = [t.strip() for t in str(target or "").split(",") if t.strip()]
    if cfg.get("finetuning_type", "lora") != "lora" or not names or "all" in names:
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no config dump for a check
    try:
        config = AutoConfig.from_pretrained(str(cfg["model_name_or_path"]), local_files_only=True,
                                            trust_remote_code=bool(cfg.get("trust_remote_code")))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=bool(cfg.get("trust_remote_code")))
    except Exception:  # noqa: BLE001 (not downloaded yet, or an architecture transformers builds otherwise)
        return
    finally:
        hf_logging.set_verbosity(level)
    modules = [n for n, _ in model.named_modules() if n]
    missing = [t for t in names if not any(n == t or n.endswith("." + t) for n in modules)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")})
        raise PreflightError(f"{source}: lora_target={target}: the model has no module named {', '.join(missing)}; "
                             f"its linear layers are {', '.join(linear)} (or lora_target=all)")


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


def check_run(c: Composed, task: TaskView, *, need_files: bool = True, source: str | None = None,
              with_lf: bool = True) -> list[Path]:
    """Everything checkable about a composed training config before a model is loaded: LF keys, values
    and template, datasets, the model folder, memory, the task's eval plugins; with `with_lf`, LF's own
    parser too (it imports LLaMA-Factory: seconds; `make config` skips it)."""
    source = source or c.source()
    files = check_train(c.lf, source, need_files=need_files)
    if with_lf:
        lf_parse(c.lf, source)
    if not c.model_ref.startswith("builtin:"):
        check_model(c.lf)
    if with_lf:
        check_lora_target(c.lf, source)
    check_memory(c)
    task.check()
    notice = precision_notice(c)
    if notice and notice not in _SAID:  # once per process (make reproduce checks before it trains)
        import sys

        _SAID.add(notice)
        print(notice, file=sys.stderr, flush=True)
    return files


_SAID: set[str] = set()


# report_to integrations -> the modules transformers needs for them (any one of them)
REPORTERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
             "swanlab": ("swanlab",), "comet_ml": ("comet_ml",), "clearml": ("clearml",), "trackio": ("trackio",)}


def check_training_options(cfg: dict[str, Any], source: str) -> None:
    """What LF's parser lets through but fails later: no samples, evaluation without eval data, a logger
    whose package is missing."""
    import importlib.util

    n = cfg.get("max_samples")
    if n is not None and not isinstance(n, bool) and isinstance(n, int) and n < 1:
        raise PreflightError(f"{source}: max_samples={n} loads no samples (LLaMA-Factory then stops with "
                             "StopIteration); drop the key to use every sample, or set a positive number")
    strategy = str(cfg.get("eval_strategy") or "no")
    if strategy != "no" and not cfg.get("val_size") and not cfg.get("eval_dataset"):
        raise PreflightError(f"{source}: eval_strategy={strategy} evaluates during training but there is no eval "
                             "data: set val_size (a share of the training set, e.g. 0.05) or eval_dataset (a "
                             "dataset_info.json name)")
    reporters = cfg.get("report_to") or []
    for name in [reporters] if isinstance(reporters, str) else reporters:
        mods = REPORTERS.get(str(name))
        if mods and not any(importlib.util.find_spec(m) for m in mods):
            raise PreflightError(f"{source}: report_to={name} needs the {mods[0]} package, which is not installed "
                                 f"(.venv/bin/pip install {mods[0]})")


def precision_notice(c: Composed) -> str | None:
    """fp16 where the hardware profile trains in bf16 (A40): worth knowing, not an error (a seed used it)."""
    if not c.lf.get("fp16"):
        return None
    from psyfactory.layers import layer_path, load_layer

    if load_layer(layer_path("hardware", c.hw)).get("bf16"):
        return (f"warning: fp16 on {c.hw}, which trains in bf16 (same memory, fp32's range, no loss scaling); "
                f"{'RECIPE=' + c.recipe + ' keeps the seed' if c.recipe else 'the config asks for'} fp16. For bf16: "
                "ARGS='fp16=false bf16=true'")
    return None


def check_train(cfg: dict[str, Any], source: str, *, need_files: bool = True) -> list[Path]:
    """LF keys, values (converted in place where a number was written as a string), template, datasets."""
    check_keys(cfg, "train", source)
    cfg.update(check_values(cfg, "train", source))
    check_training_options(cfg, source)
    check_template(cfg, source)
    resume = cfg.get("resume_from_checkpoint")
    if resume and not (Path(str(resume)) / "trainer_state.json").is_file():
        raise PreflightError(f"{source}: resume_from_checkpoint={resume} is not a checkpoint folder (no "
                             "trainer_state.json); a rerun resumes the run's last checkpoint by itself")
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


def lf_effective(cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """Every LLaMA-Factory (and transformers) argument as LF's parser sets it for this config, defaults
    included: what the run really trains with. Enums are given as their values."""
    import enum

    out: dict[str, Any] = {}
    for group in lf_parse(cfg, source):
        for f in dataclasses.fields(group):
            value = getattr(group, f.name)
            out.setdefault(f.name, value.value if isinstance(value, enum.Enum) else value)
    return out

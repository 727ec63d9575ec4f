"""A run, resolved once: who it is, its composed config, its folders and its task.

The command line (psyfactory.cli) builds one :class:`Run` and hands it to the stages:
`runner.train(run)`, `runner.merge(run)`, `evaluate.run_eval(run, ...)`, the GGUF export, the Slurm
request, `make reproduce`. Nothing below resolves a run again.

A run is usually trained here (`make train`); a model trained elsewhere is a run too
(`ADAPTER=<LoRA folder>` or `MODEL_PATH=<merged folder>`): its provenance is recorded in the run's
manifest and `make eval` / `make compare` / `make ask` treat it like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from psyfactory import layers, runs
from psyfactory.config import Composed, compose
from psyfactory.core import paths
from psyfactory.core.errors import ConfigError
from psyfactory.manifest import read_manifest, sha256_file
from psyfactory.models import resolve_model_path
from psyfactory.runs import RunId
from psyfactory.taskview import TaskView


@dataclass(frozen=True)
class External:
    """A model trained elsewhere: a LoRA adapter folder and/or a merged model folder."""

    adapter: str | None = None
    model_path: str | None = None

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"adapter": self.adapter, "model_path": self.model_path}
        if self.adapter:
            weights = sorted(Path(self.adapter).glob("adapter_model.*"))
            out["adapter_sha256"] = sha256_file(weights[0]) if weights else None
        return out


@dataclass(frozen=True)
class Run:
    """One run: identity, composed config (for its own task), folders, task view, provenance."""

    id: RunId
    config: Composed
    inherited: tuple[str, ...] = ()  # the overrides the run was trained with
    overrides: tuple[str, ...] = ()  # this command's
    raw_dir: Path | None = None
    external: External | None = None

    # identity
    @property
    def name(self) -> str:
        return self.id.name

    @property
    def model(self) -> str:
        return self.id.model

    @property
    def method(self) -> str:
        return self.id.method

    @property
    def recipe(self) -> str | None:
        return self.id.recipe

    @property
    def hw(self) -> str:
        return self.config.hw

    @property
    def trained_task(self) -> str:
        return self.id.task

    # folders
    @property
    def dir(self) -> Path:
        return paths.run_dir(self.name)

    @property
    def adapter_dir(self) -> Path:
        if self.external is not None and self.external.adapter:
            return Path(self.external.adapter)
        return Path(self.config.lf["output_dir"])

    @property
    def has_adapter(self) -> bool:
        return (self.adapter_dir / "adapter_config.json").is_file()

    @property
    def merged_dir(self) -> Path:
        return self.dir / "merged"

    @property
    def gguf_dir(self) -> Path:
        return self.dir / "gguf"

    @property
    def trained_here(self) -> bool:
        return self.external is None

    def lock(self) -> Any:
        """Context manager: this process alone writes the run (train, merge, eval, gguf); a second command
        on the same run is refused with one line naming the first (psyfactory.core.files.exclusive), or, with
        PSY_WAIT_FOR_RUN=1 (Slurm jobs), waits for it."""
        from psyfactory.core import settings
        from psyfactory.core.files import exclusive

        return exclusive(self.dir / ".lock", f"run {self.name}", wait=settings.flag("PSY_WAIT_FOR_RUN"))

    # the task
    @cached_property
    def task(self) -> TaskView:
        return TaskView(self.config, self.raw_dir)

    def source(self, file: Path | str | None = None) -> str:
        return self.config.source(file)

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> Run:
        """The same run composed with other command overrides (a Slurm training job adds deepspeed and
        tokenized_path to the user's)."""
        c = compose(self.model, self.config.task, self.method, self.hw, overrides, run=self.name,
                    inherited=self.inherited if self.config.task == self.trained_task else (), recipe=self.recipe)
        return replace(self, config=_apply_external(c, self.external), overrides=tuple(overrides))

    def for_task(self, task: str) -> Run:
        """The same run composed for another task (an eval task): the recipe stays a layer, the run's
        training overrides apply to its own task only, this command's overrides always."""
        if task == self.config.task:
            return self
        c = compose(self.model, task, self.method, self.hw, self.overrides, run=self.name,
                    inherited=self.inherited if task == self.trained_task else (), recipe=self.recipe)
        return replace(self, config=_apply_external(c, self.external))


def _apply_external(c: Composed, ext: External | None) -> Composed:
    if ext is not None and ext.model_path:
        c.lf["model_name_or_path"] = ext.model_path
        c.model_ref = ext.model_path
    return c


def resolve(*, run: str | None = None, recipe: str | None = None, model: str | None = None, task: str | None = None,
            method: str | None = None, hw: str = "auto", overrides: list[str] | tuple[str, ...] = (),
            inherit: bool = True, eval_task: str | None = None, adapter: str | None = None,
            model_path: str | None = None, raw_dir: Path | None = None) -> Run:
    """The run a command names, composed once. `inherit`: apply the run's training overrides (every
    stage after training does). `eval_task`: compose for this task instead of the run's own.
    `adapter` / `model_path`: a model trained elsewhere (see module doc)."""
    if adapter or model_path:
        return _external(run=run, model=model, task=task or eval_task, hw=hw, overrides=overrides,
                         adapter=adapter, model_path=model_path, raw_dir=raw_dir, recipe=recipe)
    rid, inherited = runs.resolve(run, model, task, method, recipe)
    inherited = inherited if inherit else []
    recorded = read_manifest(rid.dir).get("external") or {}
    ext = External(recorded.get("adapter"), recorded.get("model_path")) if recorded else None
    target = eval_task or rid.task
    c = compose(rid.model, target, rid.method, hw, overrides, run=rid.name,
                inherited=inherited if target == rid.task else (), recipe=rid.recipe)
    return Run(rid, _apply_external(c, ext), tuple(inherited), tuple(overrides), raw_dir, ext)


def _external(*, run: str | None, model: str | None, task: str | None, hw: str, overrides: Any,
              adapter: str | None, model_path: str | None, raw_dir: Path | None, recipe: str | None) -> Run:
    if recipe:
        raise ConfigError("RECIPE= names a run trained here; to evaluate a model trained elsewhere give ADAPTER= or "
                          "MODEL_PATH= with MODEL= and TASK=")
    if not task:
        raise ConfigError("name the task to evaluate on: TASK=<task> (make list)")
    ad = Path(adapter).expanduser().resolve() if adapter else None
    mp = Path(model_path).expanduser().resolve() if model_path else None
    if ad is not None and not (ad / "adapter_config.json").is_file():
        raise ConfigError(f"ADAPTER={adapter}: no adapter_config.json there (a PEFT/LoRA adapter folder, e.g. "
                          "LLaMA-Factory's output_dir)")
    if mp is not None and not (mp / "config.json").is_file():
        raise ConfigError(f"MODEL_PATH={model_path}: no config.json there (a merged Hugging Face model folder)")
    if model is None:
        model = _model_of(ad, mp)
    layers.check_names(model, task, "lora")
    name = runs.check_name(run or f"external/{(ad or mp).name}")  # type: ignore[union-attr]
    ext = External(str(ad) if ad else None, str(mp) if mp else None)
    rid = RunId(name, model, task, "lora")
    rec = read_manifest(rid.dir)
    old = rec.get("external")
    if rec.get("run") and not old:
        raise ConfigError(f"run '{name}' was trained here; name the external model's run RUN=<another name>")
    if old and (old.get("adapter"), old.get("model_path")) != (ext.adapter, ext.model_path):
        raise ConfigError(f"run '{name}' records another external model ({old.get('adapter') or old.get('model_path')}); "
                          "name this one RUN=<another name>")
    c = compose(model, task, "lora", hw, overrides, run=name)
    return Run(rid, _apply_external(c, ext), (), tuple(overrides), raw_dir, ext)


def _model_of(adapter: Path | None, model_path: Path | None) -> str:
    """The model YAML whose weights an external adapter was trained on (adapter_config.json's
    base_model_name_or_path against each model's hub id or resolved path)."""
    if adapter is None:
        raise ConfigError(f"MODEL_PATH={model_path}: name the model it was fine-tuned from, MODEL=<name> (its chat "
                          "template and reasoning style come from configs/models/<name>.yaml)")
    base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    found = []
    for name in layers.list_names("model"):
        ref = str(layers.load_layer(layers.layer_path("model", name)).get("model_name_or_path", ""))
        where = resolve_model_path(name, ref)
        if base in (ref, where) or (base and Path(where).exists() and Path(base).exists()
                                     and Path(where).resolve() == Path(base).resolve()):
            found.append(name)
    if len(found) != 1:
        what = f"matches {', '.join(found)}" if found else "matches no configs/models/*.yaml"
        raise ConfigError(f"ADAPTER={adapter}: its base model {base!r} {what}; name it with MODEL=<name>")
    return found[0]

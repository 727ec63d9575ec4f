"""The `psy:` block: PsyFactory's own keys, typed, one default each.

Any config layer may hold a `psy:` mapping next to its LLaMA-Factory keys; the layers are merged
like the rest and the result is parsed into :class:`PsyConfig`, which never reaches LLaMA-Factory.
An unknown key fails with a did-you-mean, a wrong type or value names the key (one `error:` line),
before any model is loaded. `docs/configs.md` lists the keys (a test keeps it in step).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from psyfactory.core.errors import ConfigError, format_validation_error


def _layer(name: str) -> dict[str, str]:
    return {"layer": name}


class PsyConfig(BaseModel):
    """PsyFactory keys of a composed run (model, hardware and task layers, plus `psy.*` overrides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- model layer
    reasoning: Literal["none", "hybrid", "always"] = Field(
        "none", json_schema_extra=_layer("model"),
        description="Reasoning style of the chat template: `none`, `hybrid` (Qwen3: thinking can be switched "
                    "off) or `always` (R1 distills open a <think> block). Non-`none` models train and "
                    "generate with thinking off unless `thinking` is true.")
    params_b: float | None = Field(
        None, gt=0, json_schema_extra=_layer("model"),
        description="Parameters in billions. Preflight checks that the weights (2 bytes each, 0.5 with "
                    "4-bit QLoRA) fit the hardware's `gpu_memory_gb` before a job is started.")
    # -- hardware layer
    gpu_memory_gb: float | None = Field(
        None, gt=0, json_schema_extra=_layer("hardware"),
        description="Memory of one GPU of this hardware profile (A40: 48); unset on CPU.")
    # -- task layer
    kind: Literal["generation", "label"] = Field(
        "generation", json_schema_extra=_layer("task"),
        description="`label`: short deterministic answers (classification, JSON labels); exported Ollama "
                    "Modelfiles get temperature 0. `generation`: free text.")
    eval_dataset: str | None = Field(
        None, json_schema_extra=_layer("task"),
        description="dataset_info.json name of the eval split (`make predict`, `make eval`).")
    eval_only: bool = Field(
        False, json_schema_extra=_layer("task"),
        description="A benchmark task with no training data (e.g. `psychcounsel`): evaluate a base model or "
                    "another task's run.")
    eval_plugins: list[str] = Field(
        default_factory=list, json_schema_extra=_layer("task"),
        description="Eval plugins that apply (`plugins/<name>.py`), in report order.")
    eval_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, json_schema_extra=_layer("task"),
        description="Per-plugin options, `eval_options.<plugin>.<key>`; each plugin declares its keys "
                    "(checked in preflight).")
    label_schema: str | None = Field(
        None, json_schema_extra=_layer("task"),
        description="JSON Schema of a label task's answer (path relative to the repo): validated by "
                    "`json_labels`, used for constrained decoding by the GGUF backend and `chat-gguf`.")
    max_new_tokens: int = Field(
        512, ge=1, json_schema_extra=_layer("task"),
        description="Generation budget for predict, eval and chat.")
    thinking: bool = Field(
        False, json_schema_extra=_layer("task"),
        description="Train and generate with thinking on (reasoning models only); our data carry no "
                    "reasoning traces, so the default is off.")

    @model_validator(mode="after")
    def _check(self) -> PsyConfig:
        if "json_labels" in self.eval_plugins and not self.label_schema:
            raise ValueError("eval plugin json_labels needs psy.label_schema (the answer's JSON Schema)")
        if self.eval_only and not self.eval_plugins:
            raise ValueError("an eval_only task needs psy.eval_plugins")
        return self

    @classmethod
    def keys(cls) -> list[str]:
        return list(cls.model_fields)

    @classmethod
    def parse(cls, data: dict[str, Any] | None, source: str) -> PsyConfig:
        """Validate a merged `psy:` mapping; every problem is a one-line ConfigError naming the key."""
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{source}: 'psy' must be a mapping of PsyFactory keys, got {data!r}")
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as e:
            raise ConfigError(f"{source}: {format_validation_error(e, 'psy', cls.keys())}") from None


def describe() -> list[tuple[str, str, str, str, str]]:
    """(key, layer, type, default, help) per field, for docs and `psyfactory list --psy`."""
    import yaml

    rows = []
    for name, f in PsyConfig.model_fields.items():
        default = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
        ann = f.annotation.__name__ if isinstance(f.annotation, type) else str(f.annotation).replace("typing.", "")
        shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        rows.append((name, (f.json_schema_extra or {}).get("layer", ""), ann, shown, f.description or ""))
    return rows

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
from psyfactory.core.generation import GenerationSpec


def _layer(name: str) -> dict[str, str]:
    return {"layer": name}


# LLaMA-Factory's dataset_info.json column and tag names a user's data may map (its own keys).
COLUMNS = {"alpaca": ("prompt", "query", "response", "system", "history"),
           "sharegpt": ("messages", "system"), "openai": ("messages", "system")}
TAGS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag")
FILE_TYPES = (".json", ".jsonl", ".csv", ".parquet")


class DataSource(BaseModel):
    """`psy.data`: where a task's training/eval data come from. Either a built-in parser of the raw
    datasets (`parser: psydt`), or a user's own file in alpaca, sharegpt or OpenAI-messages shape with
    LLaMA-Factory's column mapping; `make prep TASK=<task>` turns it into data/<task>/{train,eval}.jsonl."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parser: str | None = Field(None, description="built-in parser of a public dataset (data_prep/<parser>.py)")
    file: str | None = Field(None, description="your data: JSON, JSONL, CSV or Parquet; relative to the task file's "
                                               "folder, or `{raw_dir}/...`")
    eval_file: str | None = Field(None, description="a separate eval file (default: split `file`)")
    format: Literal["alpaca", "sharegpt", "openai"] = Field(
        "alpaca", description="record shape: alpaca (instruction/input/output), sharegpt (conversations with "
                              "from/value tags) or openai (messages with role/content)")
    columns: dict[str, str] = Field(default_factory=dict, description="LLaMA-Factory column mapping: our key -> "
                                                                      "your column")
    tags: dict[str, str] = Field(default_factory=dict, description="sharegpt tag mapping (role_tag, content_tag, "
                                                                   "user_tag, assistant_tag, system_tag)")
    eval_share: float = Field(0.1, gt=0, lt=1, description="share of `file` held out for eval (no eval_file)")
    download: list[str] = Field(default_factory=list, description="sources `make download TASK=...` fetches")

    @model_validator(mode="after")
    def _check(self) -> DataSource:
        if (self.parser is None) == (self.file is None):
            raise ValueError("set exactly one of parser (a built-in dataset) or file (your own data)")
        if self.parser is not None and (self.eval_file or self.columns or self.tags):
            raise ValueError("eval_file, columns and tags describe your own file: use them with file, not parser")
        for name in (self.file, self.eval_file):
            if name and not name.lower().endswith(FILE_TYPES):
                raise ValueError(f"{name!r}: a data file ends in {', '.join(FILE_TYPES)}")
        bad = sorted(set(self.columns) - set(COLUMNS[self.format]))
        if bad:
            raise ValueError(f"columns: {', '.join(bad)} not a {self.format} column (valid: "
                             f"{', '.join(COLUMNS[self.format])})")
        if self.tags and self.format != "sharegpt":
            raise ValueError("tags map sharegpt role names: use them with format: sharegpt")
        if bad := sorted(set(self.tags) - set(TAGS)):
            raise ValueError(f"tags: {', '.join(bad)} not a tag (valid: {', '.join(TAGS)})")
        return self


class PsyConfig(BaseModel):
    """PsyFactory keys of a composed run (model, hardware and task layers, plus `psy.*` overrides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- model layer
    reasoning: Literal["none", "hybrid", "always"] = Field(
        "none", json_schema_extra=_layer("model"),
        description="Reasoning style of the chat template: `none`, `hybrid` (Qwen3: thinking can be switched "
                    "off) or `always` (R1 distills open a <think> block). Non-`none` models train and "
                    "generate with thinking off unless `generation.thinking` says otherwise.")
    params_b: float | None = Field(
        None, gt=0, json_schema_extra=_layer("model"),
        description="Parameters in billions. Preflight checks that the weights (2 bytes each, 0.5 with "
                    "4-bit QLoRA) fit the hardware's `gpu_memory_gb` before a job is started.")
    modelscope_id: str | None = Field(
        None, json_schema_extra=_layer("model"),
        description="The same weights' id on ModelScope (e.g. `LLM-Research/Meta-Llama-3.1-8B-Instruct`), used by "
                    "`make stage` with USE_MODELSCOPE_HUB=1; unset: the hub id is tried on ModelScope.")
    licence: str | None = Field(
        None, json_schema_extra=_layer("model"),
        description="Licence of the base weights as the model card states it (e.g. `apache-2.0`, `llama3.1`); "
                    "`make export` writes it into the exported model card.")
    # -- method layer
    trainer: Literal["llamafactory", "seqcls"] = Field(
        "llamafactory", json_schema_extra=_layer("method"),
        description="Who trains: `llamafactory` (causal LM SFT) or `seqcls` (a sequence-classification head + LoRA "
                    "through transformers' Trainer and peft, psyfactory/cls_train.py: METHOD=lora-cls).")
    # -- hardware layer
    gpu_memory_gb: float | None = Field(
        None, gt=0, json_schema_extra=_layer("hardware"),
        description="Memory of one GPU of this hardware profile (A40: 48); unset on CPU.")
    # -- task layer
    kind: Literal["generation", "label"] = Field(
        "generation", json_schema_extra=_layer("task"),
        description="`label`: short deterministic answers (classification, JSON labels); exported Ollama "
                    "Modelfiles get temperature 0. `generation`: free text.")
    data: DataSource | None = Field(
        None, json_schema_extra=_layer("task"),
        description="Where the task's data come from (`make prep TASK=<task>`): a built-in parser, or your own "
                    "file (docs/data.md, \"Your own data\"). The prepared splits are `<task>_train` and `<task>_eval`.")
    eval_dataset: str | None = Field(
        None, json_schema_extra=_layer("task"),
        description="dataset_info.json name of the eval split (`make predict`, `make eval`); default "
                    "`<task>_eval` for a task with `data`.")
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
        description="JSON Schema of a label task's answer (path relative to the checkout, or to the task file): validated by "
                    "`json_labels`, used for constrained decoding by the GGUF backend and `chat-gguf`.")
    download: list[str] = Field(
        default_factory=list, json_schema_extra=_layer("task"),
        description="Sources `make download TASK=<task>` fetches besides `data.download` (a benchmark's own files, "
                    "e.g. `psychcounsel_bench`).")
    eval_dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", json_schema_extra=_layer("task"),
        description="Weights' dtype of the transformers / vLLM eval backends on CUDA (`auto`: bfloat16); a CPU "
                    "always runs float32 (the report says so when another dtype was asked).")
    generation: GenerationSpec = Field(
        default_factory=GenerationSpec, json_schema_extra=_layer("task"),
        description="How every path generates (LF predict and chat, transformers, vLLM, llama.cpp): "
                    "`max_new_tokens`, `decoding` greedy|sample with `temperature` / `top_p` / `top_k` / `seed`, "
                    "`stop`, `thinking` (false, true or `template`; also the training template's switch), "
                    "`prompt` chat|plain.")

    @model_validator(mode="after")
    def _check(self) -> PsyConfig:
        if self.eval_only and not self.eval_plugins:
            raise ValueError("an eval_only task needs psy.eval_plugins")
        return self

    @classmethod
    def keys(cls) -> list[str]:
        """Every key, nested ones dotted (`generation.max_new_tokens`)."""
        return [row[0] for row in describe()]

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
    """(key, layer, type, default, help) per field, nested blocks (`generation.*`, `data.*`) expanded,
    for docs and `psyfactory list --psy`."""
    import yaml

    def type_name(ann: Any) -> str:
        return ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "").replace(
            "psyfactory.psyconfig.", "").replace("psyfactory.core.generation.", "")

    def rows_of(model: type[BaseModel], prefix: str, layer: str) -> list[tuple[str, str, str, str, str]]:
        rows = []
        for name, f in model.model_fields.items():
            nested = f.annotation if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel) else None
            inner = [a for a in getattr(f.annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            lay = (f.json_schema_extra or {}).get("layer", layer) if isinstance(f.json_schema_extra, dict) else layer
            if nested or inner:
                rows += rows_of(nested or inner[0], f"{prefix}{name}.", lay)
                continue
            default = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
            shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            rows.append((prefix + name, lay, type_name(f.annotation), shown, f.description or ""))
        return rows

    return rows_of(PsyConfig, "", "")

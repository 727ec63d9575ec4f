"""Compose layered YAML configs into the one flat LLaMA-Factory config a run executes.

Layers (later wins): configs/base.yaml < hardware/<hw> < methods/<method> < models/<model>
< tasks/<task> < recipes/<recipe> (if the run has one) < the overrides a run was trained with
< command-line overrides (`key=value`). Each layer holds LLaMA-Factory keys plus an optional `psy:`
block of PsyFactory keys (psyfactory.psyconfig.PsyConfig), which never reaches LLaMA-Factory. A key
written twice in one file is an error (YAML would silently keep the last).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from psyfactory import layers, runs
from psyfactory.core import paths, settings
from psyfactory.core.errors import ConfigError
from psyfactory.models import resolve_model_path
from psyfactory.psyconfig import PsyConfig
from psyfactory.recipes import load_recipe

BLOCK_KEY = "psy"
# LF's template that adds nothing: training on text already rendered in the model's chat format.
TEXT_TEMPLATE = "empty"
# Keys that hold credentials: a composed config is written to runs/<run>/*.yaml and manifest.json and
# printed, so they are refused there and read from the environment instead.
SECRET_KEY = re.compile(r"(^|_)(api_?key|token|secret|password|passwd|credentials?)$", re.IGNORECASE)
SECRET_ENV = {"hf_hub_token": "HF_TOKEN", "hub_token": "HF_TOKEN", "swanlab_api_key": "SWANLAB_API_KEY", "ms_hub_token": "MODELSCOPE_API_TOKEN", "om_hub_token": "MODELERS_API_TOKEN",
              "llm_judge.api_key": "PSY_JUDGE_API_KEY"}


def check_secrets(cfg: Any, source: str, prefix: str = "") -> None:
    """Refuse credentials in a config (anywhere, nested keys too), naming the environment variable to use."""
    if not isinstance(cfg, dict):
        return
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            check_secrets(value, source, f"{dotted}.")
        elif SECRET_KEY.search(str(key)) and value not in (None, ""):
            env = next((v for k, v in SECRET_ENV.items() if dotted.endswith(k)), None)
            raise ConfigError(f"{source}: {dotted} holds a credential; configs are written to runs/<run>/*.yaml and "
                              "manifest.json, so credentials are not accepted there: "
                              + (f"set {env} in the environment instead" if env else
                                 "pass it through an environment variable"))


def detect_hardware() -> str:
    """'a40' profile on a machine with an NVIDIA GPU visible, else 'cpu'. Read from the driver's files
    (no torch import: `make config` stays fast); Slurm jobs always name their profile."""
    visible = os_environ_devices()
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return "cpu"
    gpus = Path("/proc/driver/nvidia/gpus")
    return "a40" if (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists() else "cpu"


def os_environ_devices() -> str | None:
    """CUDA_VISIBLE_DEVICES as the process sees it (None: unset)."""
    import os

    return os.environ.get("CUDA_VISIBLE_DEVICES")


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`key=value` strings -> nested dict (values parsed as YAML scalars/lists)."""
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got: {' '.join(bad)}")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))  # type: ignore[return-value]
    except Exception as e:  # omegaconf grammar errors
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {' '.join(str(e).split())}") from None


@dataclass
class Composed:
    """One run's composed config: the flat LLaMA-Factory mapping `lf` and the typed `psy` block."""

    model: str
    task: str
    method: str
    hw: str
    lf: dict[str, Any]
    psy: PsyConfig
    model_ref: str  # model_name_or_path as the model layer writes it (hub id or builtin:tiny)
    run: str  # run name (psyfactory.runs)
    layers: list[Path] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # given to this command
    inherited: list[str] = field(default_factory=list)  # the run's training overrides, applied first
    recipe: str | None = None  # configs/recipes/<name>.yaml, composed after the task layer
    model_template: str | None = None  # the model layer's `template` (the model's own chat format)

    @property
    def inference_template(self) -> str | None:
        """The chat template prompts are rendered with after training. `template: empty` means the training
        data are text already rendered in a chat format (seed 004's ChatML dialogues, `TEXT_TEMPLATE`): LF
        adds nothing to them, and inference uses the model's own template, whose format the text is in."""
        template = self.lf.get("template")
        if template == TEXT_TEMPLATE and self.model_template is not None:
            return self.model_template
        return template

    @property
    def foreign_template(self) -> bool:
        """The run trains with another chat template than the model layer's (e.g. `qwen` on an R1 distill):
        evaluation and the merged tokenizer then use LLaMA-Factory's rendering of it (psyfactory.templates)."""
        return self.model_template is not None and self.inference_template != self.model_template

    @property
    def run_dir(self) -> Path:
        return paths.run_dir(self.run)

    @property
    def all_overrides(self) -> list[str]:
        return list(dict.fromkeys([*self.inherited, *self.overrides]))

    def source(self, file: Path | str | None = None) -> str:
        """Where a config problem comes from, for error messages."""
        recipe = f"RECIPE={self.recipe} " if self.recipe else ""
        what = f"RUN={self.run} ({recipe}MODEL={self.model} TASK={self.task} METHOD={self.method})"
        return f"{file} (from {what})" if file else what

    def header(self) -> str:
        rel = [layers.shown(p) for p in self.layers]
        over = self.all_overrides
        if self.recipe:
            run = "" if self.run == self.recipe else f" RUN={self.run}"
            what = f"RECIPE={self.recipe}{run} HW={self.hw}"
        else:
            run = "" if self.run == runs.default_name(self.model, self.task, self.method) else f" RUN={self.run}"
            what = f"MODEL={self.model} TASK={self.task} METHOD={self.method} HW={self.hw}{run}"
        if paths.INSTALLED:  # no Makefile beside an installed package: the same as CLI options
            what = " ".join(f"--{k.lower()} {v}" for k, v in re.findall(r"(\w+)=(\S+)", what))
            recreate = f"psyfactory config {what}" + "".join(f" {o}" for o in over)
        else:
            recreate = f"make config {what}" + (f' ARGS="{" ".join(over)}"' if over else "")
        lines = [
            "# Composed by psyfactory: " + " < ".join(rel) + (f" < {' '.join(over)}" if over else ""),
            f"# Recreate: {recreate}",
        ]
        return "\n".join(lines) + "\n"

    def to_yaml(self) -> str:
        return self.header() + yaml.safe_dump(self.lf, sort_keys=False, allow_unicode=True)


def compose(
    model: str,
    task: str,
    method: str = "lora",
    hw: str = "auto",
    overrides: list[str] | tuple[str, ...] = (),
    *,
    run: str | None = None,
    inherited: list[str] | tuple[str, ...] = (),
    recipe: str | None = None,
) -> Composed:
    """Merge the layers of (model, task, method, hw) and the recipe's with the overrides; `run` names
    the run (default: psyfactory.runs.default_name), `inherited` are overrides applied before `overrides`.
    Pure: reads config files only (psyfactory.runspec resolves a whole run around it)."""
    hw = settings.get("PSY_HW", hw) if hw == "auto" else hw
    if hw == "auto":
        hw = detect_hardware()
    files = [
        paths.CONFIG_DIR / "base.yaml",
        layers.layer_path("hardware", hw),
        layers.layer_path("method", method),
        layers.layer_path("model", model),
        layers.layer_path("task", task),
    ]
    data = [layers.load_layer(p) for p in files]
    if recipe:
        r = load_recipe(recipe)
        files.append(r.path)
        data.append(r.layer)
    run = run or runs.default_name(model, task, method, recipe)
    who = f"RUN={run} ({f'RECIPE={recipe} ' if recipe else ''}MODEL={model} TASK={task} METHOD={method}"
    try:
        merged = OmegaConf.merge(*(OmegaConf.create(d) for d in data),
                                 parse_overrides(list(inherited)), parse_overrides(list(overrides)))
        lf: dict[str, Any] = OmegaConf.to_container(merged, resolve=True)  # type: ignore[assignment]
    except ConfigError:
        raise
    except Exception as e:  # omegaconf: interpolation of an unknown key, a recursive alias...
        raise ConfigError(f"{who}): cannot compose the layers: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
                          ) from None
    psy_block = lf.pop(BLOCK_KEY, None)
    psy = PsyConfig.parse(psy_block, f"{who} HW={hw})")  # first: a misspelt key is named as one, not a credential
    check_secrets({**lf, BLOCK_KEY: psy_block}, who + ")")
    if "output_dir" in lf and any(o.split("=", 1)[0].strip() == "output_dir" for o in [*inherited, *overrides]):
        raise ConfigError(f"{who}): output_dir is the run's own folder (runs/<run>/adapter); to train elsewhere "
                          "name another run, RUN=<name>")
    if "model_name_or_path" not in lf or not isinstance(lf["model_name_or_path"], str):
        raise ConfigError(f"{layers.shown(files[3])}: model_name_or_path must be a hub id or a path (a string)")
    if "template" in lf and not isinstance(lf["template"], str):
        raise ConfigError(f"{who}): template must be a template name (a string), got {lf['template']!r}")

    ref = str(lf["model_name_or_path"])
    lf["model_name_or_path"] = resolve_model_path(model, ref)
    lf["dataset_dir"] = str(paths.dataset_dir())
    lf.setdefault("output_dir", str(paths.run_dir(run) / "adapter"))
    if psy.data is not None and not psy.eval_only:
        lf.setdefault("dataset", f"{task}_train")  # what `make prep TASK=<task>` registers
    if psy.reasoning != "none":
        # Reasoning templates add an empty <think> block to the prompt (no loss) when thinking is off,
        # matching Qwen3's own chat template with enable_thinking=False at inference.
        lf["enable_thinking"] = psy.generation.thinking is not False
    model_layer = data[3]
    return Composed(model, task, method, hw, lf, psy, ref, run, files, list(overrides), list(inherited), recipe,
                    model_layer.get("template") if isinstance(model_layer.get("template"), str) else None)

"""Recipes: one experiment in one file, `configs/recipes/<name>.yaml`.

A recipe names a model, a task and a method (its `recipe:` block, with the evaluation chain that
`make reproduce` runs) and holds the keys where the experiment departs from the layers, written like
any layer (LLaMA-Factory keys plus a `psy:` block). It composes after the task layer, so it may
override task defaults; the run is named after the recipe. Seed facts for the side-by-side tables
of docs/recipes.md live next to it in `configs/recipes/seeds/<name>.yaml` (psyfactory.seedtable).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from psyfactory import layers
from psyfactory.core import paths
from psyfactory.core.errors import ConfigError, format_validation_error

RECIPE_KEY = "recipe"
# Keys a recipe may not set: the run's identity and folders come from the recipe block and its name.
FORBIDDEN = {"model_name_or_path": "recipe.model", "output_dir": "the run's name (RUN=)"}


def recipe_dir() -> Path:
    """The repo's recipes (their seed facts are in `seeds/` below it)."""
    return paths.CONFIG_DIR / "recipes"


class RecipeData(BaseModel):
    """`recipe.data`: the recipe prepares its own data, as its seed did, apart from the task's default
    data: `make prep RECIPE=<name>` (and `make reproduce`) runs the training task's parser with these
    options into data/<recipe>/, registered as `<recipe>_train`, `<recipe>_eval`, ... (the recipe's
    `dataset` / `eval_dataset` / `psy.eval_dataset` name them). The task's own data stay as they are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scrub: bool = Field(True, description="PII scrubbing (data_prep.pii); false: the raw text, as the seeds trained "
                                          "on it (`--no-scrub`)")
    eval_share: float | None = Field(None, gt=0, lt=1, description="the share a splitting parser (student) holds out "
                                                                   "for eval; default: the parser's")


class RecipeSpec(BaseModel):
    """The `recipe:` block: what the experiment runs, and the chain `make reproduce` follows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="configs/models/<name>.yaml")
    task: str = Field(description="configs/tasks/<name>.yaml (the training task)")
    method: str = Field("lora", description="configs/methods/<name>.yaml")
    evals: list[str] = Field(default_factory=list,
                             description="eval tasks, each evaluated tuned and base (default: the training task)")
    gguf: str | None = Field(None, description="quantization of the final GGUF export (e.g. Q4_K_M); none: no export")
    seed: str | None = Field(None, description="the seed document it reproduces (its file name; the facts: configs/recipes/seeds/<recipe>.yaml)")
    data: RecipeData | None = Field(None, description="its own data, prepared as the seed did (RecipeData)")
    alternative_of: str | None = Field(None, description="the seed recipe this one is a named alternative to")
    why: str | None = Field(None, description="with alternative_of: what it does differently and why one would run it")

    @model_validator(mode="after")
    def _check(self) -> RecipeSpec:
        if self.gguf is not None:
            from psyfactory.gguf.common import QUANTS

            if self.gguf.upper() not in QUANTS:
                raise ValueError(f"gguf: {self.gguf!r} is not one of {', '.join(QUANTS)}")
        return self

    @model_validator(mode="after")
    def _alternative(self) -> RecipeSpec:
        if (self.alternative_of is None) != (self.why is None):
            raise ValueError("alternative_of and why go together: the seed recipe it departs from, and why")
        return self

    @property
    def eval_tasks(self) -> list[str]:
        return list(self.evals) or [self.task]


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    spec: RecipeSpec
    layer: dict[str, Any]  # LF keys + psy block, composed after the task layer
    header: str  # the leading comment block

    @property
    def run_command(self) -> str:
        return f"make reproduce RECIPE={self.name}"


def list_recipes() -> list[str]:
    return layers.list_names("recipe")


def recipe_path(name: str) -> Path:
    return layers.layer_path("recipe", name)


def load_recipe(name: str) -> Recipe:
    path = recipe_path(name)
    data = layers.load_layer(path)
    block = data.pop(RECIPE_KEY, None)
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: a recipe needs a `recipe:` block naming model, task and method")
    try:
        spec = RecipeSpec.model_validate(block)
    except ValidationError as e:
        raise ConfigError(f"{path}: {format_validation_error(e, RECIPE_KEY, list(RecipeSpec.model_fields))}") from None
    for key, where in FORBIDDEN.items():
        if key in data:
            raise ConfigError(f"{path}: a recipe does not set {key} (it comes from {where})")
    layers.check_names(spec.model, spec.task, spec.method, source=str(path))
    text = layers.read_text(path)
    header = "".join(line + "\n" for line in _leading_comments(text))
    return Recipe(name, path, spec, data, header)


def _leading_comments(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        out.append(line)
    return out


def describe() -> list[tuple[str, str, str, str]]:
    """(name, model/task/method, evals, seed) per recipe, for `psyfactory list`."""
    rows = []
    for name in list_recipes():
        r = load_recipe(name)
        s = r.spec
        seed = s.seed or (f"alternative to {s.alternative_of}" if s.alternative_of else "-")
        rows.append((name, f"{s.model}/{s.task}/{s.method}", ",".join(s.eval_tasks) + (f" +gguf {s.gguf}" if s.gguf else ""),
                     seed))
    return rows

"""Side-by-side tables: what a seed used against what its recipe composes to, and what the seed
reported against what this project's evaluation prints for the same quantity.

The seed's facts are data, `configs/recipes/seeds/<recipe>.yaml` (written from the seed document);
the recipe's values are computed: the recipe is composed (HW=a40 by default, the seeds' cluster) and
put through LLaMA-Factory's own parser, so a value is what the run trains with, defaults included.
docs/recipes.md is this module's output (`make recipe-table`); a test regenerates it and checks each
row against the seed file, so neither can drift. After `make reproduce`, the run's own figures go in
the results table (`runs/<recipe>/reproduce.md`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from psyfactory.core.errors import ConfigError, format_validation_error
from psyfactory.recipes import Recipe, list_recipes, load_recipe, recipe_dir

_PIPE = re.compile(r"(?<!\\)\|")  # a table cell's own "|" (not yet escaped)


class Setting(BaseModel):
    """One setting of the seed. `key`: the config key compared (LF's effective value, `psy.<key>` (dotted into
    nested blocks), or `recipe.<key>` of the recipe block); `task`: compose for this eval task of the recipe
    instead of its training task (benchmark settings);
    `expect`: the key's value that means the seed's setting, when the seed words it otherwise;
    `instead`: what the recipe does where it cannot or does not follow the seed, and why;
    `how`: how the project follows a setting that is not a config key;
    `own`: the project's own value where the seed names a setting but gives none (a prompt text it does not show)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    setting: str
    seed: Any = Field(description="the seed's value as the seed states it; null: the seed does not say")
    key: str | None = None
    task: str | None = None
    expect: Any = None
    instead: str | None = None
    how: str | None = None
    own: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Setting:
        if self.own is not None and (self.key or self.instead or self.how):
            raise ValueError(f"setting '{self.setting}': `own` (the project's value where the seed gives none) stands alone")
        if self.key is None and not (self.instead or self.how or self.own):
            raise ValueError(f"setting '{self.setting}': without a key, say `how` it is followed or what the recipe "
                             "does `instead`")
        if self.seed is None and self.key is None:
            raise ValueError(f"setting '{self.setting}': a setting the seed does not state needs a key")
        return self

    @property
    def wanted(self) -> Any:
        return self.seed if self.expect is None else self.expect


class Result(BaseModel):
    """A figure the seed reports, and where this project's run prints the same quantity:
    `file` (relative to the run dir) and a dotted `key` in it (a .safetensors file: its parameter count)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    result: str
    seed: str
    file: str
    key: str | None = None
    note: str | None = None


class SeedFacts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    settings: list[Setting]
    results: list[Result] = Field(default_factory=list)
    results_note: str | None = None  # under the results table (e.g. "the seed reports none")
    notes: str | None = None  # markdown after the tables: trade-offs, what a reproduction needs


def seed_path(recipe: str) -> Path:
    return recipe_dir() / "seeds" / f"{recipe}.yaml"


def load_seed(recipe: str) -> SeedFacts | None:
    """The seed facts of a recipe, or None for a recipe that reproduces no seed (tiny-student)."""
    from psyfactory.layers import load_layer

    path = seed_path(recipe)
    if not path.is_file():
        return None
    try:
        return SeedFacts.model_validate(load_layer(path))
    except ValidationError as e:
        raise ConfigError(f"{path}: {format_validation_error(e, 'seed', list(SeedFacts.model_fields))}") from None


# ---------------------------------------------------------------------------- values


def _norm(value: Any) -> Any:
    """Comparable form: lists as sorted tuples of strings (target modules come in any order), a comma
    string as the same, floats rounded."""
    if isinstance(value, str) and "," in value:
        value = [v.strip() for v in value.split(",")]
    if isinstance(value, list | tuple):
        return tuple(sorted(str(v) for v in value))
    if isinstance(value, float):
        return float(f"{value:.10g}") if not math.isnan(value) else value
    return value


def same(a: Any, b: Any) -> bool:
    a, b = _norm(a), _norm(b)
    if isinstance(a, tuple) != isinstance(b, tuple):  # `all` and LF's ['all']
        a, b = (a if isinstance(a, tuple) else (str(a),)), (b if isinstance(b, tuple) else (str(b),))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def show(value: Any) -> str:
    if value is None:
        return "not stated"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("\n", " ")


@dataclass
class Row:
    setting: Setting
    value: Any  # the composed, effective value (None without a key)
    origin: str  # the layer that sets it, "LLaMA-Factory default", or ""
    status: str  # same | not stated | not followed | followed | own | DIFFERS

    @property
    def ok(self) -> bool:
        return self.status != "DIFFERS"

    def cells(self) -> list[str]:
        s = self.setting
        seed = show(s.seed) + (f" (`{s.key}: {show(s.expect)}`)" if s.expect is not None else "")
        recipe = f"`{s.key}: {show(self.value)}` ({self.origin})" if s.key else "—"
        chosen = "the recipe's choice" if self.origin.startswith("recipes/") else "the layers' value"
        why = {"same": "✓ same", "not stated": f"the seed does not say; {chosen}",
               "not followed": f"✗ not followed: {s.instead}", "followed": f"✓ {s.how}",
               "own": f"the seed gives no text; the project's own: {s.own}",
               "DIFFERS": "✗ DIFFERS (no reason given)"}[self.status]
        if self.status in ("same", "not stated") and (s.how or s.instead):
            why += f"; {s.how or s.instead}"
        return [s.setting, seed, recipe, why]


def _origin(key: str, recipe: Recipe, layers: list[Path]) -> str:
    from psyfactory.layers import load_layer

    parts = key.split(".")
    found = ""
    for path in layers:
        data: Any = recipe.layer if path == recipe.path else load_layer(path)
        for p in parts:
            data = data.get(p) if isinstance(data, dict) else None
        if data is not None:
            found = path.parent.name + "/" + path.name if path.parent.name != "configs" else path.name
    if found:
        return found
    if key.startswith("psy."):
        return "psyfactory default"
    return "psyfactory" if key in ("enable_thinking", "output_dir", "dataset_dir") else "LLaMA-Factory default"


def _dig(value: Any, parts: list[str]) -> Any:
    for p in parts:
        value = value.get(p) if isinstance(value, dict) else None
    return value


def setting_rows(recipe: str, hw: str = "a40") -> list[Row]:
    from psyfactory import preflight
    from psyfactory.config import compose

    r = load_recipe(recipe)
    facts = load_seed(recipe)
    if facts is None:
        return []
    composed = {r.spec.task: compose(r.spec.model, r.spec.task, r.spec.method, hw, recipe=recipe)}
    effective = preflight.lf_effective(dict(composed[r.spec.task].lf), composed[r.spec.task].source())
    rows = []
    for s in facts.settings:
        if s.key is None:
            rows.append(Row(s, None, "", "own" if s.own else "not followed" if s.instead else "followed"))
            continue
        task = s.task or r.spec.task
        if task not in r.spec.eval_tasks and task != r.spec.task:
            raise ConfigError(f"{seed_path(recipe)}: setting '{s.setting}': task '{task}' is not one of the recipe's "
                              "tasks")
        if task not in composed:
            composed[task] = compose(r.spec.model, task, r.spec.method, hw, recipe=recipe)
        c = composed[task]
        if s.key.startswith("recipe."):
            value: Any = _dig(r.spec.model_dump(mode="json"), s.key.split(".")[1:])
        elif s.key.startswith("psy."):
            value = _dig(c.psy.model_dump(mode="json"), s.key.split(".")[1:])
        elif s.key == "model_name_or_path":  # as the model layer writes it (the local path varies per machine)
            value = c.model_ref
        elif s.key in effective and s.task is None:
            value = effective[s.key]
        else:
            raise ConfigError(f"{seed_path(recipe)}: setting '{s.setting}': '{s.key}' is neither a LLaMA-Factory "
                              "argument nor a psy.* key")
        if s.seed is None:
            status = "not stated"
        elif same(value, s.wanted):
            status = "same"
        else:
            status = "not followed" if s.instead else "DIFFERS"
        origin = "recipes/" + r.path.name if s.key.startswith("recipe.") else _origin(s.key, r, c.layers)
        rows.append(Row(s, value, origin, status))
    return rows


# ---------------------------------------------------------------------------- results


def measured(run_dir: Path, res: Result) -> Any:
    """This run's figure for a seed result, or None when the file is not there (yet)."""
    path = run_dir / res.file
    if not path.is_file():
        return None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:
            return sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())  # noqa: SIM118
    value: Any = json.loads(path.read_text(encoding="utf-8"))
    for part in (res.key or "").split(".") if res.key else []:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict) and {"accuracy", "correct", "n"} <= set(value):  # a benchmark format's figures
        return f"{value['accuracy']:.2%} ({value['correct']}/{value['n']})"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10000:
        return f"{value:,}"
    return show(value)


# ---------------------------------------------------------------------------- markdown


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_PIPE.sub(r"\\|", c.replace("\n", " ")) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def recipe_section(recipe: str, hw: str = "a40", run_dir: Path | None = None) -> str:
    """One recipe: its header, the settings table and the results table (with this run's figures
    when `run_dir` is given)."""
    r = load_recipe(recipe)
    facts = load_seed(recipe)
    s = r.spec
    out = [f"## {recipe}", "",
           f"`{r.run_command}` (Slurm: `make sbatch RECIPE={recipe}`): MODEL={s.model} TASK={s.task} "
           f"METHOD={s.method}; chain: download → "
           + (f"prep (its own data: data/{recipe}/, PII {'scrubbed' if s.data.scrub else 'not scrubbed'}) → "
              if s.data else "")
           + f"train → merge → eval {', '.join(s.eval_tasks)} (tuned and base) → compare"
           + (f" → GGUF {s.gguf}" if s.gguf else "") + "."]
    if facts is None:
        if s.alternative_of:
            out += ["", f"A named alternative to [`{s.alternative_of}`](#{s.alternative_of}): {s.why.strip()}."  # type: ignore[union-attr]
                    f" Its other settings are `{s.alternative_of}`'s (the table there)."]
            return "\n".join(out) + "\n"
        out += ["", "Reproduces no seed (no `configs/recipes/seeds/" + recipe + ".yaml`)."]
        return "\n".join(out) + "\n"
    out += ["", f"Seed: `{facts.source}` (its settings and results as transcribed in `configs/recipes/seeds/{recipe}.yaml`). "
                f"Recipe values composed for HW={hw} and read "
                "back through LLaMA-Factory's parser (defaults included); the layer that sets each is in brackets.", ""]
    out.append(_table(["setting", "seed", f"recipe (HW={hw})", "how it compares"],
                      [row.cells() for row in setting_rows(recipe, hw)]))
    out += ["", "Results the seed reports, and where this project's run prints the same quantity"
            + (" (this run's figure beside it)" if run_dir else " (filled in by `make reproduce` in "
               f"`runs/{recipe}/reproduce.md`)") + ":", ""]
    if facts.results:
        head = ["quantity", "seed", "this project prints it in"] + (["this run"] if run_dir else [])
        rows = []
        for res in facts.results:
            where = f"`runs/{recipe}/{res.file}`" + (f" `{res.key}`" if res.key else "") + (
                f" ({res.note})" if res.note else "")
            rows.append([res.result, res.seed, where] + ([_fmt(measured(run_dir, res))] if run_dir else []))
        out.append(_table(head, rows))
    if facts.results_note:
        out += ["", facts.results_note.strip()]
    if facts.notes:
        out += ["", facts.notes.strip()]
    return "\n".join(out) + "\n"


DOC_HEAD = """# Recipes: the seed experiments, one command each

<!-- Generated by `make recipe-table` (psyfactory recipes --markdown) from configs/recipes/ and
configs/recipes/seeds/; do not edit by hand: tests/test_recipes.py regenerates it and compares. -->

A recipe (`configs/recipes/<name>.yaml`) names a model, a task and a method and holds only the keys
where one experiment departs from the layers; `make reproduce RECIPE=<name>` runs the seed's chain
and `make sbatch RECIPE=<name>` submits it to Slurm (docs/configs.md, "Recipes"). Per recipe below:
every setting the seed states against the value the recipe composes to, and the results the seed
reports against where this project prints the same quantity. `make reproduce` writes the same
tables with the run's own figures to `runs/<recipe>/reproduce.md`.

| recipe | model / task / method | evaluations | seed |
|---|---|---|---|
"""


def markdown(hw: str = "a40", names: list[str] | None = None) -> str:
    from psyfactory.recipes import describe

    rows = [f"| `{n}` | {mtm} | {ev} | {seed} |" for n, mtm, ev, seed in describe() if names is None or n in names]
    return DOC_HEAD + "\n".join(rows) + "\n\n" + "\n".join(recipe_section(n, hw) for n in (names or list_recipes()))

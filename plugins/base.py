"""Plugin interface and small helpers shared by the plugins (statistics, markdown, plots).

A plugin is a module `plugins/<name>.py` with one :class:`EvalPlugin` subclass whose ``name`` is
``<name>``. It declares what it is, and the core asks instead of naming plugins:

- ``uses_samples``: it scores the task's eval set (``ctx.samples``); False for a benchmark that
  brings its own items;
- ``needs_generations(options)``: it scores the shared greedy generations (``ctx.predictions``);
- ``needs_backend``: it queries the model itself (log-likelihoods, its own prompts);
- ``Options``: the keys it accepts under ``psy.eval_options.<name>`` (checked in preflight);
- ``needs_loglik(options)``: whether it will call ``backend.option_logprobs`` (picks the backend);
- ``check(options, task)``: fail on bad inputs (a missing benchmark file, a task without the label
  schema the plugin needs...) in preflight, before a model is loaded;
- ``paired(items)`` / ``paired_scores(items)``: per-item outcomes / scores that ``psyfactory
  compare`` tests base vs tuned (McNemar / paired bootstrap);
- ``files(options)``: the data files it reads besides the eval set (their hashes fingerprint a result);
- ``safety_net(options)``: the crisis safety net it applies to a label task's answers, which
  ``make chat`` / ``make chat-gguf`` then apply too.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from psyfactory.core.errors import EvalError, format_validation_error
from psyfactory.core.generation import GenerationSpec

if TYPE_CHECKING:
    from psyfactory.core.backend import Backend
    from psyfactory.core.labels import LabelSchema
    from psyfactory.core.safety import SafetyNet

Message = dict[str, str]


@dataclass
class Sample:
    """One eval example: the prompt conversation (ending on a user turn) and the reference answer.
    ``text`` is the text under assessment when the prompt wraps it in an instruction (an alpaca
    ``input``); None: the user turns are that text (:meth:`input_text`). ``meta``: the eval record's
    `meta` object as it is (e.g. a level and a fold), for plugins that break their figures down by it."""

    id: str
    messages: list[Message]
    reference: str
    text: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def input_text(self) -> str:
        from psyfactory.core.safety import net_text

        return self.text if self.text is not None else net_text(self.messages)


class PluginOptions(BaseModel):
    """Base of a plugin's options (``psy.eval_options.<plugin>``): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class TaskInfo:
    """What a plugin may know of its task: name, kind, label schema and generation spec. Given to
    ``check`` (preflight) and ``run`` alike."""

    name: str
    kind: str = "generation"
    label_schema: LabelSchema | None = None  # the task's psy.label_schema, loaded
    generation: GenerationSpec = field(default_factory=GenerationSpec)  # the task's psy.generation
    source: str = ""  # where the task comes from, for error messages

    def __str__(self) -> str:
        return self.name


@dataclass
class EvalContext:
    """Everything a plugin may use. ``predictions`` are the think-stripped generations for ``samples``
    (same order, with the task's generation spec), or None when no plugin of the run asked for them."""

    task: TaskInfo
    out_dir: Path
    samples: list[Sample] = field(default_factory=list)
    predictions: list[str] | None = None
    backend: Backend | None = None
    options: Any = None  # the plugin's validated Options instance
    limit: int | None = None  # evaluate the first N items only (benchmarks with their own items)

    def __post_init__(self) -> None:
        if isinstance(self.task, str):  # a bare task name: defaults for the rest
            self.task = TaskInfo(self.task)

    @property
    def label_schema(self) -> LabelSchema | None:
        return self.task.label_schema

    @property
    def generation(self) -> GenerationSpec:
        return self.task.generation


@dataclass
class PluginResult:
    metrics: dict[str, Any]
    report: str  # markdown section (starts with a "## " heading)
    plots: list[str] = field(default_factory=list)  # file names under out_dir
    items: list[dict[str, Any]] = field(default_factory=list)  # per-item records (written as JSONL)


class EvalPlugin(ABC):
    """Base class of eval plugins."""

    name: ClassVar[str]
    #: True when the plugin scores the task's eval set (ctx.samples).
    uses_samples: ClassVar[bool] = True
    #: True when the plugin queries the model backend itself.
    needs_backend: ClassVar[bool] = False
    #: the plugin's options (psy.eval_options.<name>).
    Options: ClassVar[type[PluginOptions]] = PluginOptions
    #: metric keys (dotted paths into ``metrics``) shown in the ``compare`` table.
    headline: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, ctx: EvalContext) -> PluginResult: ...

    @classmethod
    def parse_options(cls, data: dict[str, Any] | None, source: str = "") -> PluginOptions:
        """Validate options; a problem is one EvalError naming `psy.eval_options.<plugin>.<key>`."""
        try:
            return cls.Options.model_validate(dict(data or {}))
        except ValidationError as e:
            where = f"{source}: " if source else ""
            raise EvalError(where + format_validation_error(
                e, f"psy.eval_options.{cls.name}", list(cls.Options.model_fields))) from None

    def needs_generations(self, options: Any) -> bool:
        """True when this run of the plugin scores the shared greedy generations of ctx.samples."""
        return self.uses_samples

    def needs_loglik(self, options: Any) -> bool:
        """True when this run of the plugin scores options by log-likelihood (hf backend only)."""
        return False

    def check(self, options: Any, task: TaskInfo) -> None:  # noqa: B027 (optional hook)
        """Raise a UserError for inputs that cannot work (files, endpoints, a task without what the plugin
        needs); preflight calls it before any model loads."""

    def headline_keys(self, metrics: dict[str, Any]) -> list[str]:
        """Metric keys for the compare table; plugins with data-dependent keys override this."""
        return list(self.headline)

    def paired(self, items: list[dict[str, Any]]) -> dict[str, dict[str, bool]] | None:
        """Per-item correctness for a paired test between two evaluations of the same items:
        {group (e.g. prompt format): {item id: correct}} (exact McNemar). None: no such records."""
        return None

    def paired_scores(self, items: list[dict[str, Any]]) -> dict[str, dict[str, float]] | None:
        """Per-item scores for a paired test of a mean difference: {metric: {item id: score}}
        (paired bootstrap CI and sign-flip permutation p). None: no such records."""
        return None

    def files(self, options: Any) -> list[Path]:
        """Data files this run of the plugin reads besides the eval set (default: its ``bench_file``);
        their sha256 goes into the evaluation's fingerprint."""
        bench = getattr(options, "bench_file", None)
        return [Path(str(bench))] if bench else []

    def safety_net(self, options: Any) -> SafetyNet | None:
        """The crisis safety net this plugin applies to a label task's answers (None: none)."""
        return None


# ---------------------------------------------------------------- statistics


def wilson_ci(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 0) when n == 0."""
    if n == 0:
        return (0.0, 0.0)
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return (max(0.0, float(lo)), min(1.0, float(hi)))


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, Any]:
    """Paired comparison of two systems on the same items: exact (binomial) McNemar test.

    ``only_a`` = items only A got right, ``only_b`` = items only B got right; ``diff`` = acc(B) - acc(A).
    """
    from statsmodels.stats.contingency_tables import mcnemar

    if len(a_correct) != len(b_correct):
        raise ValueError(f"paired results differ in length: {len(a_correct)} vs {len(b_correct)}")
    n = len(a_correct)
    pairs = list(zip(a_correct, b_correct, strict=True))
    both = sum(1 for x, y in pairs if x and y)
    only_a = sum(1 for x, y in pairs if x and not y)
    only_b = sum(1 for x, y in pairs if y and not x)
    neither = n - both - only_a - only_b
    p = 1.0 if only_a + only_b == 0 else float(mcnemar([[both, only_a], [only_b, neither]], exact=True).pvalue)
    return {
        "n": n,
        "only_a": only_a,
        "only_b": only_b,
        "diff": (sum(b_correct) - sum(a_correct)) / n if n else 0.0,
        "p_value": min(1.0, p),
    }


# ---------------------------------------------------------------- formatting


def lookup(metrics: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key path of a metrics mapping (`primary.accuracy`), or None."""
    cur: Any = metrics
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur



def fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats rendered with 4 decimals, pipes escaped."""

    def cell(x: Any) -> str:
        return fmt(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def save_confusion_png(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str,
                       row_labels: Sequence[str] | None = None) -> None:
    """Write a confusion-matrix heat map (rows = reference, columns = prediction). ``labels`` name
    the columns; ``row_labels`` the rows when they differ (no reference is ever "(invalid)")."""
    rows = list(row_labels) if row_labels is not None else list(labels)[: len(matrix)]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.7 * len(rows)))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title)
    peak = max((max(r) for r in matrix if len(r)), default=0)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black")
    fig.colorbar(im, ax=ax)
    save_fig(fig, path)


def save_fig(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    tmp.replace(path)


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def paired_difference(a: Sequence[float], b: Sequence[float], *, resamples: int = 9999) -> dict[str, Any]:
    """Mean of b - a over paired items: a 95% paired-bootstrap interval and a two-sided sign-flip
    permutation p-value (scipy; seeded, so a rerun gives the same figures)."""
    import numpy as np
    from scipy.stats import bootstrap, permutation_test

    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length: {len(a)} vs {len(b)}")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(x)
    diff = float(np.mean(y - x)) if n else 0.0
    if n < 2 or np.allclose(y - x, 0):
        return {"n": n, "diff": diff, "ci95": [diff, diff], "p_value": 1.0}

    def mean_diff(u: Any, v: Any, axis: int = -1) -> Any:
        return np.mean(v - u, axis=axis)

    ci = bootstrap((x, y), mean_diff, paired=True, n_resamples=resamples, vectorized=True,
                   random_state=np.random.default_rng(0), method="percentile").confidence_interval
    p = permutation_test((x, y), mean_diff, permutation_type="samples", n_resamples=resamples, vectorized=True,
                         random_state=np.random.default_rng(0)).pvalue
    return {"n": n, "diff": diff, "ci95": [float(ci.low), float(ci.high)], "p_value": float(min(1.0, p))}

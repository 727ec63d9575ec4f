"""Plugin interface and small helpers shared by the plugins (statistics, markdown, plots)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from psyfactory.inference import Backend

Message = dict[str, str]


@dataclass
class Sample:
    """One eval example: the prompt conversation (ending on a user turn) and the reference answer."""

    id: str
    messages: list[Message]
    reference: str


@dataclass
class EvalContext:
    """Everything a plugin may use. ``predictions`` are the think-stripped greedy generations for
    ``samples`` (same order), or None when no plugin of the run needed them."""

    task: str
    out_dir: Path
    samples: list[Sample] = field(default_factory=list)
    predictions: list[str] | None = None
    backend: Backend | None = None
    options: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int = 256


@dataclass
class PluginResult:
    metrics: dict[str, Any]
    report: str  # markdown section (starts with a "## " heading)
    plots: list[str] = field(default_factory=list)  # file names under out_dir
    items: list[dict[str, Any]] = field(default_factory=list)  # per-item records (written as JSONL)


class EvalPlugin(ABC):
    """Base class of eval plugins."""

    name: ClassVar[str]
    #: True when the plugin scores the shared greedy generations on the task's eval set.
    needs_predictions: ClassVar[bool] = True
    #: metric keys (dotted paths into ``metrics``) shown in the ``compare`` table.
    headline: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, ctx: EvalContext) -> PluginResult: ...

    def headline_keys(self, metrics: dict[str, Any]) -> list[str]:
        """Metric keys for the compare table; plugins with data-dependent keys override this."""
        return list(self.headline)


# ---------------------------------------------------------------- statistics


def wilson_ci(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 0) when n == 0."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, Any]:
    """Paired comparison of two systems on the same items: exact (binomial) McNemar test.

    ``b01`` = items only A got right, ``b10`` = items only B got right; ``diff`` = acc(B) - acc(A).
    """
    from scipy.stats import binomtest

    if len(a_correct) != len(b_correct):
        raise ValueError(f"paired results differ in length: {len(a_correct)} vs {len(b_correct)}")
    n = len(a_correct)
    only_a = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if y and not x)
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(min(only_a, only_b), discordant, 0.5).pvalue)
    return {
        "n": n,
        "only_a": only_a,
        "only_b": only_b,
        "diff": (sum(b_correct) - sum(a_correct)) / n if n else 0.0,
        "p_value": min(1.0, p),
    }


# ---------------------------------------------------------------- formatting


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

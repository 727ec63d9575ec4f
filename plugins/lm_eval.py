"""lm-evaluation-harness results of a run, read back: `make harness` (psyfactory.harness) runs lm-eval and files
its scores as an eval variant under this plugin's name; this class tells `make compare` and the model card
what to show (each task's primary metric, the interval from lm-eval's standard error) and how to pair two
evaluations (per document of each task: right or wrong, exact McNemar).

It is not a plugin a task lists in `psy.eval_plugins`: `make eval` refuses it in preflight.
"""

from __future__ import annotations

from typing import Any

from psyfactory.core.errors import EvalError
from psyfactory.plugins.base import EvalContext, EvalPlugin, PluginResult, TaskInfo

NOT_HERE = ("eval plugin lm_eval holds lm-evaluation-harness results written by `make harness RUN=...`; it is not "
            "listed in a task's psy.eval_plugins")


class LmEvalPlugin(EvalPlugin):
    name = "lm_eval"
    uses_samples = False

    def needs_generations(self, options: Any) -> bool:
        return False

    def check(self, options: Any, task: TaskInfo) -> None:
        raise EvalError(f"{task.source or task.name}: {NOT_HERE}")

    def run(self, ctx: EvalContext) -> PluginResult:
        raise EvalError(NOT_HERE)

    def headline_keys(self, metrics: dict[str, Any]) -> list[str]:
        """The primary metric (the first the task's YAML lists: acc for multiple choice) of each group and of
        each task outside a group (a group's tasks stay in metrics.json and the report)."""
        groups = metrics.get("groups") or {}
        inside = {c for g in groups.values() for c in g.get("tasks") or []}
        return [f"{kind}.{name}.{m['primary']}" for kind, entries in (("groups", groups), ("tasks", metrics.get("tasks")))
                for name, m in (entries or {}).items() if m.get("primary") and name not in inside]

    def paired(self, items: list[dict[str, Any]]) -> dict[str, dict[str, bool]] | None:
        """{lm-eval task: {document id: right}} from the per-document records (tasks scored by `acc`)."""
        out: dict[str, dict[str, bool]] = {}
        for it in items:
            if it.get("correct") is not None:
                out.setdefault(it["task"], {})[str(it["doc_id"])] = bool(it["correct"])
        return out or None

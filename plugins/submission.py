"""`submission`: the predictions written as a benchmark's submission file, e.g. LongEmotion ES:
one `{"id": <record id>, "experience_and_reflection": <prediction>}` per line, in eval order.

The file goes next to the variant's other results (`runs/<run>/eval/<variant>/<file>`). The id is the
sample id without `id_prefix` (`longemotion-es-7` -> 7; numbers are written as numbers).
"""

from __future__ import annotations

from typing import Any

from psyfactory.core.files import atomic_write_jsonl
from psyfactory.plugins.base import EvalContext, EvalPlugin, PluginOptions, PluginResult


class Options(PluginOptions):
    file: str = "submission.jsonl"
    field: str = "prediction"  # the key of the prediction in each line
    id_prefix: str = ""  # removed from the sample id


class SubmissionPlugin(EvalPlugin):
    name = "submission"
    Options = Options
    headline = ("n",)

    def run(self, ctx: EvalContext) -> PluginResult:
        assert ctx.predictions is not None
        opts: Options = ctx.options or Options()

        def record_id(sample_id: str) -> Any:
            rid = sample_id.removeprefix(opts.id_prefix)
            return int(rid) if rid.isdigit() else rid

        rows = [{"id": record_id(s.id), opts.field: p} for s, p in zip(ctx.samples, ctx.predictions, strict=True)]
        path = ctx.out_dir / opts.file
        n = atomic_write_jsonl(path, rows)
        return PluginResult({"n": n, "file": opts.file, "field": opts.field},
                            f"## submission\n\n{n} predictions written to `{opts.file}` as "
                            f"`{{\"id\", \"{opts.field}\"}}` lines.")

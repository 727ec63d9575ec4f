"""`psyfactory eval`: run a task's eval plugins on one variant of a run.

A run (psyfactory.runs) is evaluated as named variants, each in its own folder:

    runs/<run>/eval/<variant>/{metrics.json, report.md, predictions.jsonl, <plugin>_items.jsonl, *.png}

The default variant name says what was evaluated: `tuned` (the run's adapter, or the model trained
elsewhere that the run records), `base` (its base model, same prompts), `gguf-Q4_K_M` (its GGUF
export); evaluated on another task than the run was trained on, the task comes first
(`psychcounsel-tuned`); with another benchmark file than the task's, its name comes last
(`base-mybench`). `--variant NAME` picks any name. A variant that already holds results of a
different evaluation (other adapter weights, data, options, limit...) is never replaced silently: the
command refuses and says what differs (`--overwrite` replaces it). A variant is written into a
temporary folder and renamed into place whole: an interrupted evaluation leaves the previous one
intact (or nothing).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psyfactory.core import files, paths
from psyfactory.core.errors import EvalError
from psyfactory.core.llm_client import redact_all
from psyfactory.manifest import adapter_sha256, record_external, record_stage, sha256_file
from psyfactory.models import materialize
from psyfactory.plugins import EvalContext, PluginResult, Sample
from psyfactory.plugins.base import fmt, lookup, md_table
from psyfactory.resume import finished_training
from psyfactory.runs import check_name
from psyfactory.runspec import Run
from psyfactory.taskview import Plugin

if TYPE_CHECKING:
    from psyfactory.gguf.backend import EvalChoice


# ---------------------------------------------------------------------------- eval data


def load_samples(dataset: str, limit: int | None = None) -> list[Sample]:
    """The eval split registered as ``dataset`` in dataset_info.json, as prompt + reference pairs.

    sharegpt/OpenAI-tag entries: the prompt is every message before the last assistant message,
    which is the reference. alpaca entries: ``instruction`` + ``input`` (joined by a newline) as the
    user turn, optional ``system``, reference ``output``. A record's ``meta`` object (extra facts for the
    analysis, such as a level or a fold; never shown to the model) is carried to ``Sample.meta``.
    """
    from psyfactory.datasets import entry as dataset_entry

    entry, path = dataset_entry(dataset, paths.dataset_dir())
    records = files.read_jsonl(path) if path.suffix == ".jsonl" else json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list):
        raise EvalError(f"{path}: expected a JSON array of records")
    cols = entry.get("columns", {})
    samples: list[Sample] = []
    for n, rec in enumerate(records[:limit] if limit else records, start=1):
        where = f"{path}: line {n}"
        if not isinstance(rec, dict):
            raise EvalError(f"{where}: a record is a JSON object")
        meta = rec.get("meta") or {}
        if not isinstance(meta, dict):
            raise EvalError(f"{where}: field 'meta' must be a JSON object (facts for the analysis), not "
                            f"{type(meta).__name__}")
        if entry.get("formatting", "alpaca") != "alpaca":
            tags = entry.get("tags", {})
            role, content = tags.get("role_tag", "from"), tags.get("content_tag", "value")
            names = {tags.get("user_tag", "human"): "user", tags.get("assistant_tag", "gpt"): "assistant",
                     tags.get("system_tag", "system"): "system"}
            raw = rec.get(cols.get("messages", "conversations"))
            if not isinstance(raw, list) or not raw:
                raise EvalError(f"{where}: field '{cols.get('messages', 'conversations')}' must be a non-empty list")
            msgs = [{"role": names.get(m.get(role), m.get(role)), "content": m.get(content, "")} for m in raw]
            if cols.get("system") and rec.get(cols["system"]):
                msgs.insert(0, {"role": "system", "content": rec[cols["system"]]})
            if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
                raise EvalError(f"{where}: the last message must be the assistant's reference reply")
            samples.append(Sample(str(rec.get("id", n)), msgs[:-1], msgs[-1]["content"], meta=meta))
        else:
            prompt = rec.get(cols.get("prompt", "instruction"))
            query = rec.get(cols.get("query", "input")) or ""
            ref = rec.get(cols.get("response", "output"))
            if not isinstance(prompt, str) or not isinstance(ref, str):
                raise EvalError(f"{where}: fields '{cols.get('prompt', 'instruction')}' and "
                                f"'{cols.get('response', 'output')}' must be strings")
            system = rec.get(cols.get("system", "system"))
            msgs = [{"role": "system", "content": system}] if system else []
            msgs.append({"role": "user", "content": f"{prompt}\n{query}" if query else prompt})
            samples.append(Sample(str(rec.get("id", n)), msgs, ref, text=query or prompt, meta=meta))
    return samples


def dataset_file(dataset: str) -> Path:
    from psyfactory.datasets import entry as dataset_entry

    return dataset_entry(dataset, paths.dataset_dir())[1]


# ---------------------------------------------------------------------------- variants


def variant_name(run: Run, *, base: bool, gguf: EvalChoice | None = None) -> str:
    """tuned | base | gguf-<QUANT>, prefixed by the eval task when it is not the run's own, suffixed by the
    benchmark file's name when it is not the task's own."""
    kind = "base" if base else gguf.variant() if gguf is not None else "tuned"
    name = kind if run.config.task == run.trained_task else f"{run.config.task}-{kind}"
    own = _bench_files(run, with_overrides=False)
    used = _bench_files(run, with_overrides=True)
    extra = sorted(used - own)
    if extra:
        name += "-" + "-".join(Path(f).stem for f in extra)
    return name


def _bench_files(run: Run, *, with_overrides: bool) -> set[str]:
    from psyfactory.config import compose
    from psyfactory.taskview import TaskView, expand

    c = run.config
    if not with_overrides and run.overrides:
        c = compose(run.model, c.task, run.method, run.hw, (), run=run.name,
                    inherited=run.inherited if c.task == run.trained_task else (), recipe=run.recipe)
    raw = TaskView(c, run.raw_dir).raw_dir
    return {str(Path(expand(o["bench_file"], raw)).resolve()) for o in c.psy.eval_options.values()
            if isinstance(o, dict) and o.get("bench_file")}


def evaluated_weights(run: Run, adapter: Path | None, gguf: EvalChoice | None) -> str | None:
    """sha256 of the adapter weights really evaluated: the run's adapter, or for a GGUF export the adapter
    its merge was made from (gguf/export.json), which may be older than the run's current one."""
    if gguf is not None:
        export = run.gguf_dir / "export.json"
        return json.loads(export.read_text(encoding="utf-8")).get("adapter_sha256") if export.is_file() else None
    return adapter_sha256(adapter) if adapter is not None else None


def guard_variant(out_dir: Path, fingerprint: dict[str, Any], *, overwrite: bool) -> None:
    """Refuse to replace the results of a different evaluation unless told to."""
    old_file = out_dir / "metrics.json"
    if not old_file.is_file():
        return
    try:
        old = json.loads(old_file.read_text(encoding="utf-8")).get("fingerprint") or {}
    except json.JSONDecodeError:
        old = {}
    differs = sorted(k for k in {*old, *fingerprint} if old.get(k) != fingerprint.get(k))
    if not differs:
        print(f"[psyfactory] re-running the same evaluation: replacing {out_dir}", flush=True)
        return
    if overwrite:
        print(f"[psyfactory] --overwrite: replacing {out_dir} (it differed in {', '.join(differs)})", flush=True)
        return
    raise EvalError(f"{out_dir} holds results of a different evaluation (differs in: {', '.join(differs)}); "
                    "pass --variant NAME to keep both, or --overwrite to replace it")


def put_in_place(staged: Path, out_dir: Path) -> None:
    """Move a finished variant folder into place whole (the previous one is removed only after)."""
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    staged.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------- eval


def headline(plugins: list[Plugin], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{p.name}.{k}": lookup(results[p.name], k) for p in plugins
            for k in p.plugin.headline_keys(results[p.name])}


def run_eval(run: Run, *, base: bool = False, backend: str = "hf", limit: int | None = None, batch_size: int = 8,
             plugins_only: list[str] | None = None, variant: str | None = None, overwrite: bool = False,
             allow_unfinished: bool = False, gguf: EvalChoice | None = None) -> Path:
    """Evaluate `run` (its adapter, the model it records, its GGUF export, or its base model) on the task
    it is composed for (Run.for_task); returns the variant's folder."""
    task = run.task
    psy = task.psy
    if limit is not None and limit < 1:
        raise EvalError(f"--limit {limit}: the number of items to evaluate, at least 1 (drop it for all)")
    if batch_size < 1:
        raise EvalError(f"--batch-size {batch_size}: at least 1")
    if (backend == "gguf") != (gguf is not None):
        raise ValueError("backend gguf goes with an EvalChoice")
    if base and gguf is not None:
        raise EvalError("the gguf backend evaluates a run's export (make gguf), not its base model: drop BASE=1")
    adapter: Path | None = None
    model_path = run.config.lf["model_name_or_path"]
    if base:
        if run.external is not None and run.external.model_path:  # the base of a merged model: the model YAML's
            from psyfactory.models import resolve_model_path

            model_path = resolve_model_path(run.model, _model_ref(run))
    elif gguf is None:
        if psy.eval_only and run.config.task == run.trained_task:
            raise EvalError(f"task '{task.name}' is eval-only (no training data): pass BASE=1, or ADAPTER_TASK=<task> / "
                            f"RUN=<a trained run> / ADAPTER=<folder> to evaluate a trained adapter on it")
        if run.external is None or run.external.adapter:
            adapter = run.adapter_dir
            if not run.has_adapter:
                raise EvalError(f"no adapter at {adapter}: run `make train MODEL={run.model} TASK={run.trained_task} "
                                f"METHOD={run.method}` first (or RUN=<name> of a trained run), or BASE=1 for the base model")
        finished_training(run, allow_unfinished=allow_unfinished)
    plugins = task.plugins(plugins_only)  # bad inputs fail here, before a model is loaded
    name = check_name(variant) if variant else variant_name(run, base=base, gguf=gguf)
    if "/" in name:
        raise EvalError(f"--variant {name!r}: a variant name is one folder name")
    out_dir = run.dir / "eval" / name

    needs_samples = any(p.plugin.uses_samples for p in plugins)
    dataset = task.require_eval_dataset() if needs_samples else None
    samples = load_samples(dataset, limit) if dataset else []
    if needs_samples and not samples:
        raise EvalError(f"{dataset_file(dataset)}: the eval set is empty (nothing to evaluate)")  # type: ignore[arg-type]
    data_files = [f for p in plugins for f in p.plugin.files(p.options)]
    if dataset:
        data_files.append(dataset_file(dataset))
    fingerprint = {
        "model": model_path, "adapter_sha256": evaluated_weights(run, adapter, gguf), "backend": backend,
        "gguf": gguf.variant() if gguf else None, "eval_task": task.name, "plugins": [p.name for p in plugins],
        "limit": limit, "generation": task.generation.model_dump(mode="json"), "dtype": psy.eval_dtype,
        "options": {p.name: redact_all(p.options.model_dump(mode="json")) for p in plugins},
        "data_sha256": {str(f): sha256_file(f) for f in data_files if f.is_file()},
    }
    with run.lock():
        return _run_locked(run, out_dir, name, plugins, samples, data_files, fingerprint, model_path=model_path,
                           adapter=adapter, base=base, backend=backend, gguf=gguf, batch_size=batch_size, limit=limit,
                           overwrite=overwrite)


def _run_locked(run: Run, out_dir: Path, name: str, plugins: list[Plugin], samples: list[Sample],
                data_files: list[Path], fingerprint: dict[str, Any], *, model_path: str, adapter: Path | None,
                base: bool, backend: str, gguf: EvalChoice | None, batch_size: int, limit: int | None,
                overwrite: bool) -> Path:
    psy = run.task.psy
    guard_variant(out_dir, fingerprint, overwrite=overwrite)
    if run.external is not None:
        record_external(run.dir, {"name": run.name, "model": run.model, "task": run.trained_task, "method": run.method,
                                  "hw": run.hw, "overrides": [], "recipe": None}, run.external.record())
    for orphan in out_dir.parent.glob(f".{name}.*-*"):  # under the run lock: left by a killed evaluation
        shutil.rmtree(orphan, ignore_errors=True)
    staged = out_dir.with_name(f".{name}.tmp-{os.getpid()}")
    staged.mkdir(parents=True)
    try:
        _evaluate(run, staged, name, plugins, samples, data_files, fingerprint, model_path=model_path, adapter=adapter,
                  base=base, backend=backend, gguf=gguf, batch_size=batch_size, limit=limit)
        put_in_place(staged, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    eval_cfg = {k: fingerprint[k] for k in ("model", "backend", "plugins", "options", "limit", "generation")}
    summary = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    record_stage(run.dir, f"eval/{name}", out_dir / "metrics.json", eval_cfg, psy.model_dump(mode="json"),
                 data_files, status="done", headline=summary["headline"])
    return out_dir


def _model_ref(run: Run) -> str:
    from psyfactory.layers import layer_path, load_layer

    return str(load_layer(layer_path("model", run.model)).get("model_name_or_path"))


def open_backend(run: Run, *, model_path: str, adapter: Path | None, backend: str, gguf: EvalChoice | None,
                 batch_size: int = 8, needs_loglik: bool = False, merge_adapter: bool = True) -> Any:
    """The model to evaluate or ask: transformers / vLLM on base + adapter, or the run's GGUF export."""
    psy = run.config.psy
    if gguf is not None:
        from psyfactory.gguf.backend import backend_for_run

        return backend_for_run(run.dir, gguf, reasoning=psy.reasoning)
    from psyfactory.inference import make_backend

    materialize(run.config.model_ref if model_path == run.config.lf["model_name_or_path"] else model_path)
    kwargs: dict[str, Any] = {"reasoning": psy.reasoning, "batch_size": batch_size, "dtype": psy.eval_dtype,
                              "lf_template": run.config.inference_template if run.config.foreign_template else None}
    if run.config.foreign_template and run.config.lf.get("default_system") is not None:
        kwargs["default_system"] = run.config.lf["default_system"]  # LF's training rendered it
    if not merge_adapter:
        kwargs["merge_adapter"] = False
    return make_backend(backend, model_path, adapter, needs_loglik=needs_loglik, **kwargs)


def _evaluate(run: Run, out_dir: Path, name: str, plugins: list[Plugin], samples: list[Sample],
              data_files: list[Path], fingerprint: dict[str, Any], *, model_path: str, adapter: Path | None,
              base: bool, backend: str, gguf: EvalChoice | None, batch_size: int, limit: int | None) -> None:
    from psyfactory.inference import strip_think

    task = run.task
    schema, gen = task.label_schema, task.generation
    t0 = time.perf_counter()
    be = open_backend(run, model_path=model_path, adapter=adapter, backend=backend, gguf=gguf, batch_size=batch_size,
                      needs_loglik=any(p.plugin.needs_loglik(p.options) for p in plugins))
    load_s = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "run": run.name, "run_task": run.trained_task, "model": run.model, "method": run.method, "task": task.name,
        "variant": name, "kind": "base" if base else "tuned", "base_model": model_path,
        "adapter": str(adapter) if adapter else None, "backend": be.name, "hw": run.hw,
        "external": run.external.record() if run.external is not None and not base else None,
        "dtype": getattr(be, "dtype", None), "dtype_requested": getattr(be, "dtype_requested", None),
        "overrides": run.config.all_overrides, "fingerprint": fingerprint, "load_seconds": load_s,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
    }
    predictions: list[str] | None = None
    if samples and any(p.plugin.needs_generations(p.options) for p in plugins):
        t0 = time.perf_counter()
        raw = be.generate([s.messages for s in samples], gen, json_schema=schema.schema if schema else None)
        stripped = [strip_think(r) for r in raw]
        predictions = [t for t, _ in stripped]
        summary.update(n=len(samples), generation=gen.model_dump(mode="json"),
                       generate_seconds=time.perf_counter() - t0, think_blocks=sum(h for _, h in stripped))
        files.atomic_write_jsonl(out_dir / "predictions.jsonl", [
            {"id": s.id, "prompt": s.messages, "reference": s.reference, "raw": r, "prediction": p}
            for s, r, p in zip(samples, raw, predictions, strict=True)])
    results: dict[str, PluginResult] = {}
    info = task.info
    for p in plugins:
        ctx = EvalContext(info, out_dir, samples, predictions, be, p.options, limit=limit)
        results[p.name] = res = p.plugin.run(ctx)
        if res.items:
            files.atomic_write_jsonl(out_dir / f"{p.name}_items.jsonl", res.items)
    after = getattr(be, "after_eval", None)  # e.g. a classifier's model card gets the test metrics
    if callable(after):
        after(results)
    summary["plugins"] = {n: r.metrics for n, r in results.items()}
    summary["headline"] = headline(plugins, summary["plugins"])
    files.atomic_write_json(out_dir / "metrics.json", summary)
    files.atomic_write_text(out_dir / "report.md", _report(summary, results))
    close = getattr(be, "close", None)
    if callable(close):
        close()


def _report(s: dict[str, Any], results: dict[str, PluginResult]) -> str:
    head = [f"# Evaluation: {s['run']} · {s['task']} · {s['variant']}", "",
            f"- base model: `{s['base_model']}`", f"- adapter: `{s['adapter'] or 'none (base model)'}`",
            f"- backend: {s['backend']} (hw {s['hw']}), model load {s['load_seconds']:.1f}s"
            + (f", weights {s['dtype']}" if s.get("dtype") else "")
            + (f" ({s['dtype_requested']} asked: a CPU runs float32; CUDA honours it)"
               if s.get("dtype_requested") not in (None, "auto", s.get("dtype")) else "")]
    if s.get("external"):
        head.append(f"- trained elsewhere: `{s['external'].get('adapter') or s['external'].get('model_path')}`")
    if "n" in s:
        g = s["generation"]
        how = ("greedy" if g["decoding"] == "greedy" else
               f"sampled (T {g['temperature']}, top-p {g['top_p']}, top-k {g['top_k']}, seed {g['seed']})")
        head.append(f"- {s['n']} eval samples, {how}, max {g['max_new_tokens']} new tokens, thinking "
                    f"{g['thinking']}, {s['generate_seconds']:.1f}s; outputs with a <think> block (stripped): "
                    f"{s['think_blocks']}")
    if s["overrides"]:
        head.append(f"- overrides: `{' '.join(s['overrides'])}`")
    head += ["", md_table(["headline metric", "value"], [(k, fmt(v)) for k, v in s["headline"].items()])]
    return "\n".join(head) + "\n\n" + "\n\n".join(r.report for r in results.values()) + "\n"

"""`psyfactory eval`: run a task's eval plugins on one variant of a run.

A run (psyfactory.runs) is evaluated as named variants, each in its own folder:

    runs/<run>/eval/<variant>/{metrics.json, report.md, predictions.jsonl, <plugin>_items.jsonl, *.png}

The default variant name says what was evaluated: `tuned` (the run's adapter), `base` (its base
model, same prompts), `gguf-Q4_K_M` (its GGUF export); evaluated on another task than the run was
trained on, the task comes first (`psychcounsel-tuned`); with another benchmark file than the
task's, its name comes last (`base-mybench`). `--variant NAME` picks any name. A variant that
already holds results of a different evaluation (other adapter weights, data, options, limit...) is
never replaced silently: the command refuses and says what differs (`--overwrite` replaces it).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugins import EvalContext, EvalPlugin, PluginResult, Sample, plugin_class
from plugins.base import fmt, md_table
from psyfactory.config import Composed, compose
from psyfactory.core import files, paths
from psyfactory.core.errors import EvalError
from psyfactory.runs import RunId, check_name

if TYPE_CHECKING:
    from psyfactory.core.safety import SafetyNet

# CLI convenience flags -> the plugin option key they set, on every selected plugin that has it.
CLI_OPTION_KEYS = {"scoring": "scoring", "prompt_format": "formats", "bench_file": "bench_file",
                   "rubric": "rubric", "judge_url": "base_url", "judge_model": "model"}


# ---------------------------------------------------------------------------- eval data


def load_samples(dataset: str, limit: int | None = None) -> list[Sample]:
    """The eval split registered as ``dataset`` in dataset_info.json, as prompt + reference pairs.

    sharegpt/OpenAI-tag entries: the prompt is every message before the last assistant message,
    which is the reference. alpaca entries: ``instruction`` + ``input`` (joined by a newline) as the
    user turn, optional ``system``, reference ``output``.
    """
    from data_prep.commit import check_not_mid_commit

    check_not_mid_commit(paths.dataset_dir())
    info_path = paths.dataset_info_path()
    if not info_path.is_file():
        raise EvalError(f"{info_path} not found: run `make prep` first (or set PSY_DATASET_DIR)")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if dataset not in info:
        raise EvalError(f"{info_path}: no dataset '{dataset}'; known: {', '.join(sorted(info))}")
    entry = info[dataset]
    path = paths.dataset_dir() / entry["file_name"]
    if not path.is_file():
        raise EvalError(f"{info_path}: dataset '{dataset}' file {path} not found: run `make prep`")
    records = files.read_jsonl(path) if path.suffix == ".jsonl" else json.loads(path.read_text(encoding="utf-8"))
    cols = entry.get("columns", {})
    samples: list[Sample] = []
    for n, rec in enumerate(records[:limit] if limit else records, start=1):
        where = f"{path}: line {n}"
        if entry.get("formatting", "alpaca") == "sharegpt":
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
            samples.append(Sample(str(rec.get("id", n)), msgs[:-1], msgs[-1]["content"]))
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
            samples.append(Sample(str(rec.get("id", n)), msgs, ref, text=query or prompt))
    return samples


def dataset_file(dataset: str) -> Path:
    info = json.loads(paths.dataset_info_path().read_text(encoding="utf-8"))
    return paths.dataset_dir() / info[dataset]["file_name"]


# ---------------------------------------------------------------------------- options


def _expand(value: Any) -> Any:
    return value.replace("{raw_dir}", str(paths.raw_dir())) if isinstance(value, str) else value


def plugin_options(c: Composed, plugins: list[type[EvalPlugin]], cli: dict[str, Any] | None = None,
                   ) -> dict[str, Any]:
    """Validated options per plugin: psy.eval_options.<plugin>, then the CLI flags (each applied to
    the plugins that have its key; a flag no selected plugin takes is an error)."""
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    taken: set[str] = set()
    out: dict[str, Any] = {}
    for cls in plugins:
        data = dict(c.psy.eval_options.get(cls.name) or {})
        for flag, value in cli.items():
            key = CLI_OPTION_KEYS.get(flag, flag)
            if key in cls.Options.model_fields:
                data[key] = value
                taken.add(flag)
        out[cls.name] = cls.parse_options({k: _expand(v) for k, v in data.items()}, c.source())
    unused = sorted(set(cli) - taken)
    if unused:
        flags = ", ".join("--" + f.replace("_", "-") for f in unused)
        raise EvalError(f"{flags}: none of the plugins of task '{c.task}' ({', '.join(p.name for p in plugins)}) "
                        "takes this option")
    return out


def task_plugins(c: Composed, names: list[str] | None = None, cli_options: dict[str, Any] | None = None, *,
                 check: bool = True) -> tuple[list[EvalPlugin], dict[str, Any]]:
    """The task's eval plugins (or `names`) and their typed options; with `check`, each plugin's
    check() runs here, so bad inputs fail before a model is loaded."""
    classes = [plugin_class(n) for n in (c.psy.eval_plugins if names is None else names)]
    options = plugin_options(c, classes, cli_options)
    plugins = [cls() for cls in classes]
    if check:
        for p in plugins:
            p.check(options[p.name])
    return plugins, options


def task_safety_net(c: Composed) -> SafetyNet | None:
    """The crisis safety net a label task's plugins declare (`json_labels` with `safety_net`), checked
    against the task's label schema; None for other tasks. Used by `chat` and `chat-gguf`, so that they
    apply what `make eval` applies."""
    if not c.psy.label_schema:
        return None
    from psyfactory.core.labels import load_schema

    plugins, options = task_plugins(c, check=False)
    for p in plugins:
        net = p.safety_net(options[p.name])
        if net is not None:
            net.check(load_schema(c.psy.label_schema).values(net.field), c.source())
            return net
    return None


def check_options(c: Composed) -> None:
    """Preflight for psy.eval_plugins / psy.eval_options of a composed config (names, keys, types)."""
    listed = [plugin_class(n) for n in c.psy.eval_plugins]
    configured = [plugin_class(n) for n in c.psy.eval_options if n not in c.psy.eval_plugins]
    plugin_options(c, listed + configured)


# ---------------------------------------------------------------------------- variants


def variant_name(c: Composed, rid: RunId, *, base: bool, backend: str, bench_file: str | None = None) -> str:
    if base:
        kind = "base"
    elif backend == "gguf":
        from psyfactory.gguf.backend import EvalChoice

        kind = EvalChoice.from_env().variant()
    else:
        kind = "tuned"
    name = kind if c.task == rid.task else f"{c.task}-{kind}"
    if bench_file:  # another benchmark file than the task's is another evaluation
        configured = {Path(_expand(o["bench_file"])).resolve() for o in c.psy.eval_options.values()
                      if isinstance(o, dict) and o.get("bench_file")}
        if Path(_expand(bench_file)).resolve() not in configured:
            name += f"-{Path(bench_file).stem}"
    return name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def adapter_digest(adapter: Path | None) -> str | None:
    """sha256 of the adapter weights: a retrained adapter is another evaluation."""
    if adapter is None:
        return None
    weights = sorted(p for p in adapter.glob("adapter_model.*") if p.suffix in (".safetensors", ".bin"))
    return _sha256(weights[0]) if weights else None


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


# ---------------------------------------------------------------------------- eval


def _lookup(metrics: dict[str, Any], dotted: str) -> Any:
    cur: Any = metrics
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def headline(plugins: list[EvalPlugin], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{p.name}.{k}": _lookup(results[p.name], k) for p in plugins for k in p.headline_keys(results[p.name])}


def run_eval(rid: RunId, task: str, *, base: bool = False, hw: str = "auto", overrides: list[str] | tuple[str, ...] = (),
             inherited: list[str] | tuple[str, ...] = (), backend: str = "hf", limit: int | None = None,
             batch_size: int = 8, cli_options: dict[str, Any] | None = None, plugins_only: list[str] | None = None,
             variant: str | None = None, overwrite: bool = False, allow_unfinished: bool = False) -> Path:
    """Evaluate run `rid` (its adapter, or its base model) on `task`; returns the variant's folder."""
    # the recipe is a layer of every stage of its run (its chat template, too); the run's training
    # overrides apply to evaluations on its own task only
    c = compose(rid.model, task, rid.method, hw, overrides, run=rid.name,
                inherited=inherited if task == rid.task else (), recipe=rid.recipe)
    psy = c.psy
    if base and backend == "gguf":
        raise EvalError("the gguf backend evaluates a run's export (make gguf), not its base model: drop BASE=1")
    if base:
        adapter = None
    else:
        if psy.eval_only and task == rid.task:
            raise EvalError(f"task '{task}' is eval-only (no training data): pass BASE=1, or ADAPTER_TASK=<task> / "
                            f"RUN=<a trained run> to evaluate a trained adapter on it")
        adapter = rid.dir / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise EvalError(f"no adapter at {adapter}: run `make train MODEL={rid.model} TASK={rid.task} "
                            f"METHOD={rid.method}` first (or RUN=<name> of a trained run), or BASE=1 for the base model")
        from psyfactory.runner import finished_training

        finished_training(c, allow_unfinished=allow_unfinished)
    names = plugins_only or list(psy.eval_plugins)
    if not names:
        raise EvalError(f"task '{task}' lists no eval plugins (psy.eval_plugins in configs/tasks/{task}.yaml)")
    plugins, options = task_plugins(c, names, cli_options)  # bad inputs fail here, before a model is loaded
    name = check_name(variant) if variant else variant_name(
        c, rid, base=base, backend=backend, bench_file=(cli_options or {}).get("bench_file"))
    if "/" in name:
        raise EvalError(f"--variant {name!r}: a variant name is one folder name")
    out_dir = rid.dir / "eval" / name

    needs_samples = any(p.uses_samples for p in plugins)
    samples = load_samples(psy.eval_dataset or f"{task}_eval", limit) if needs_samples else []
    data_files = [f for p in plugins for f in p.files(options[p.name])]
    if needs_samples:
        data_files.append(dataset_file(psy.eval_dataset or f"{task}_eval"))
    fingerprint = {
        "model": c.lf["model_name_or_path"], "adapter_sha256": adapter_digest(adapter), "backend": backend,
        "eval_task": task, "plugins": names, "limit": limit, "max_new_tokens": psy.max_new_tokens,
        "options": {n: o.model_dump(mode="json") for n, o in options.items()},
        "data_sha256": {str(p): _sha256(p) for p in data_files if p.is_file()},
    }
    guard_variant(out_dir, fingerprint, overwrite=overwrite)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _evaluate(c, rid, out_dir, plugins, options, samples, data_files, fingerprint, adapter=adapter,
                         base=base, backend=backend, batch_size=batch_size, limit=limit, names=names)
    except BaseException:
        if created and not (out_dir / "metrics.json").exists():  # leave no half-written variant behind
            import shutil

            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _evaluate(c: Composed, rid: RunId, out_dir: Path, plugins: list[EvalPlugin], options: dict[str, Any],
              samples: list[Sample], data_files: list[Path], fingerprint: dict[str, Any], *, adapter: Path | None,
              base: bool, backend: str, batch_size: int, limit: int | None, names: list[str]) -> Path:
    from psyfactory.inference import make_backend, strip_think
    from psyfactory.manifest import record_stage
    from psyfactory.models import materialize

    psy, task, name = c.psy, c.task, out_dir.name
    schema = None
    if psy.label_schema:
        from psyfactory.core.labels import load_schema

        schema = load_schema(psy.label_schema)

    materialize(c.model_ref)
    t0 = time.perf_counter()
    be = make_backend(backend, c.lf["model_name_or_path"], adapter,
                      needs_loglik=any(p.needs_loglik(options[p.name]) for p in plugins),
                      reasoning=psy.reasoning, thinking=psy.thinking, batch_size=batch_size,
                      lf_template=c.lf["template"] if c.foreign_template else None)
    load_s = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "run": rid.name, "run_task": rid.task, "model": rid.model, "method": rid.method, "task": task,
        "variant": name, "kind": "base" if base else "tuned", "base_model": c.lf["model_name_or_path"],
        "adapter": str(adapter) if adapter else None, "backend": be.name, "hw": c.hw,
        "overrides": c.all_overrides, "fingerprint": fingerprint, "load_seconds": load_s,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
    }
    predictions: list[str] | None = None
    if samples and any(p.needs_generations(options[p.name]) for p in plugins):
        t0 = time.perf_counter()
        raw = be.generate([s.messages for s in samples], max_new_tokens=psy.max_new_tokens,
                          json_schema=schema.schema if schema else None)
        stripped = [strip_think(r) for r in raw]
        predictions = [t for t, _ in stripped]
        summary.update(n=len(samples), max_new_tokens=psy.max_new_tokens, generate_seconds=time.perf_counter() - t0,
                       think_blocks=sum(h for _, h in stripped))
        files.atomic_write_jsonl(out_dir / "predictions.jsonl", [
            {"id": s.id, "prompt": s.messages, "reference": s.reference, "raw": r, "prediction": p}
            for s, r, p in zip(samples, raw, predictions, strict=True)])
    results: dict[str, PluginResult] = {}
    for p in plugins:
        ctx = EvalContext(task, out_dir, samples, predictions, be, options[p.name], psy.max_new_tokens,
                          limit=limit, label_schema=schema)
        results[p.name] = res = p.run(ctx)
        if res.items:
            files.atomic_write_jsonl(out_dir / f"{p.name}_items.jsonl", res.items)
    summary["plugins"] = {n: r.metrics for n, r in results.items()}
    summary["headline"] = headline(plugins, summary["plugins"])
    files.atomic_write_json(out_dir / "metrics.json", summary)
    files.atomic_write_text(out_dir / "report.md", _report(summary, results))
    eval_cfg = {k: fingerprint[k] for k in ("model", "backend", "plugins", "options", "limit")}
    record_stage(rid.dir, f"eval/{name}", out_dir / "metrics.json", eval_cfg, psy.model_dump(mode="json"), data_files,
                 status="done", headline=summary["headline"])
    close = getattr(be, "close", None)
    if callable(close):
        close()
    return out_dir


def _report(s: dict[str, Any], results: dict[str, PluginResult]) -> str:
    head = [f"# Evaluation: {s['run']} · {s['task']} · {s['variant']}", "",
            f"- base model: `{s['base_model']}`", f"- adapter: `{s['adapter'] or 'none (base model)'}`",
            f"- backend: {s['backend']} (hw {s['hw']}), model load {s['load_seconds']:.1f}s"]
    if "n" in s:
        head.append(f"- {s['n']} eval samples, greedy, max {s['max_new_tokens']} new tokens, "
                    f"{s['generate_seconds']:.1f}s; outputs with a <think> block (stripped): {s['think_blocks']}")
    if s["overrides"]:
        head.append(f"- overrides: `{' '.join(s['overrides'])}`")
    head += ["", md_table(["headline metric", "value"], [(k, fmt(v)) for k, v in s["headline"].items()])]
    return "\n".join(head) + "\n\n" + "\n\n".join(r.report for r in results.values()) + "\n"

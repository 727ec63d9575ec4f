"""`psyfactory eval` and `psyfactory compare`: run a task's eval plugins on base or tuned model.

eval:    runs/<model>/<task>/<method>/eval/{metrics.json, report.md, predictions.jsonl, *_items.jsonl, *.png}
         (the base model: method ``base``; an adapter trained on another task: method ``<method>-<task>``)
compare: runs/compare.md + runs/compare.csv, every evaluated run, base vs tuned side by side.
"""

from __future__ import annotations

import argparse
import csv
import io as _io
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from plugins import EvalContext, PluginResult, Sample, get_plugin
from plugins.base import fmt, mcnemar_exact, md_table
from psyfactory import io, paths

BASE_METHOD = "base"


class EvalError(ValueError):
    """A user-fixable problem with an evaluation request (missing adapter, bad dataset...)."""


def raw_dir() -> Path:
    """Folder with the original dataset files: ``$PSY_RAW_DIR`` or ``<repo>/raw``."""
    value = os.environ.get("PSY_RAW_DIR")
    return Path(value).expanduser().resolve() if value else paths.REPO_ROOT / "raw"


# ---------------------------------------------------------------------------- eval data


def load_samples(dataset: str, limit: int | None = None) -> list[Sample]:
    """The eval split registered as ``dataset`` in dataset_info.json, as prompt + reference pairs.

    sharegpt/OpenAI-tag entries: the prompt is every message before the last assistant message,
    which is the reference. alpaca entries: ``instruction`` + ``input`` (joined by a newline) as the
    user turn, optional ``system``, reference ``output``.
    """
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
    records = io.read_jsonl(path) if path.suffix == ".jsonl" else json.loads(path.read_text(encoding="utf-8"))
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
            samples.append(Sample(str(rec.get("id", n)), msgs, ref))
    return samples


# ---------------------------------------------------------------------------- eval


def _plugin_options(meta: dict[str, Any], name: str, cli: dict[str, Any]) -> dict[str, Any]:
    opts = dict((meta.get("eval_options") or {}).get(name) or {})
    opts.update({k: v for k, v in cli.items() if v is not None})
    if isinstance(opts.get("bench_file"), str):
        opts["bench_file"] = opts["bench_file"].replace("{raw_dir}", str(raw_dir()))
    return opts


def _lookup(metrics: dict[str, Any], dotted: str) -> Any:
    cur: Any = metrics
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def run_eval(model: str, task: str, method: str = "lora", *, base: bool = False, hw: str = "auto",
             overrides: list[str] | tuple[str, ...] = (), backend: str = "hf", adapter_task: str | None = None,
             limit: int | None = None, batch_size: int = 8, plugin_options: dict[str, Any] | None = None,
             plugins_only: list[str] | None = None) -> Path:
    """Evaluate one run; returns its eval directory."""
    from psyfactory.config import compose
    from psyfactory.inference import make_backend, strip_think
    from psyfactory.manifest import record_stage
    from psyfactory.models import materialize

    c = compose(model, task, method, hw, overrides)
    meta = c.meta
    if base:
        label, adapter = BASE_METHOD, None
    else:
        src_task = adapter_task or task
        if meta.get("eval_only") and not adapter_task:
            raise EvalError(f"task '{task}' is eval-only (no training data): pass BASE=1, or ADAPTER_TASK=<task> "
                            f"to evaluate the adapter trained on that task")
        label = method if src_task == task else f"{method}-{src_task}"
        if backend == "gguf":  # GGUF results live next to the HF ones: <method>-gguf-<QUANT>[-free]
            from psyfactory.gguf_backend import eval_method_label

            label = eval_method_label(label)
        adapter = paths.run_dir(model, src_task, method) / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise EvalError(f"no adapter at {adapter}: run `make train MODEL={model} TASK={src_task} "
                            f"METHOD={method}` first, or BASE=1 for the base model")
    out_dir = paths.run_dir(model, task, label) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    names = plugins_only or list(meta.get("eval_plugins") or [])
    if not names:
        raise EvalError(f"task '{task}' lists no eval plugins (psy.eval_plugins in configs/tasks/{task}.yaml)")
    plugins = [get_plugin(n) for n in names]
    cli_opts = plugin_options or {}
    needs_loglik = any(p.name == "psychcounsel_bench" and _plugin_options(meta, p.name, cli_opts)
                       .get("scoring", "loglik") == "loglik" for p in plugins)

    materialize(str(meta.get("model_ref", c.lf["model_name_or_path"])))
    t0 = time.perf_counter()
    be = make_backend(backend, c.lf["model_name_or_path"], adapter, needs_loglik=needs_loglik,
                      reasoning=meta.get("reasoning", "none"), thinking=bool(meta.get("thinking", False)),
                      batch_size=batch_size)
    load_s = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "model": model, "task": task, "method": label, "base_model": c.lf["model_name_or_path"],
        "adapter": str(adapter) if adapter else None, "backend": be.name, "hw": c.hw,
        "overrides": list(overrides), "load_seconds": load_s, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
    }
    samples: list[Sample] = []
    predictions: list[str] | None = None
    if any(p.needs_predictions for p in plugins):
        samples = load_samples(meta.get("eval_dataset", f"{task}_eval"), limit)
        max_new = int(meta.get("max_new_tokens", 256))
        schema = _json_schema() if "json_labels" in names else None
        t0 = time.perf_counter()
        raw = be.generate([s.messages for s in samples], max_new_tokens=max_new, json_schema=schema)
        stripped = [strip_think(r) for r in raw]
        predictions = [t for t, _ in stripped]
        summary.update(n=len(samples), max_new_tokens=max_new, generate_seconds=time.perf_counter() - t0,
                       think_blocks=sum(h for _, h in stripped))
        io.atomic_write_jsonl(out_dir / "predictions.jsonl", [
            {"id": s.id, "prompt": s.messages, "reference": s.reference, "raw": r, "prediction": p}
            for s, r, p in zip(samples, raw, predictions, strict=True)])
    results: dict[str, PluginResult] = {}
    for p in plugins:
        opts = _plugin_options(meta, p.name, cli_opts)
        if limit and not p.needs_predictions:
            opts.setdefault("limit", limit)
        ctx = EvalContext(task, out_dir, samples, predictions, be, opts, int(meta.get("max_new_tokens", 256)))
        results[p.name] = res = p.run(ctx)
        if res.items:
            io.atomic_write_jsonl(out_dir / f"{p.name}_items.jsonl", res.items)
    summary["plugins"] = {n: r.metrics for n, r in results.items()}
    summary["headline"] = {f"{p.name}.{k}": _lookup(results[p.name].metrics, k)
                           for p in plugins for k in p.headline_keys(results[p.name].metrics)}
    io.atomic_write_json(out_dir / "metrics.json", summary)
    io.atomic_write_text(out_dir / "report.md", _report(summary, results))
    eval_cfg = {"model_name_or_path": c.lf["model_name_or_path"], "adapter": summary["adapter"], "backend": be.name,
                "plugins": names, "options": {n: _plugin_options(meta, n, cli_opts) for n in names}, "limit": limit}
    data_files = [Path(str(o["bench_file"])) for o in eval_cfg["options"].values() if o.get("bench_file")]
    if samples:
        data_files.append(_dataset_file(meta.get("eval_dataset", f"{task}_eval")))
    record_stage(out_dir.parent, "eval", out_dir / "metrics.json", eval_cfg, meta, data_files,
                 status="done", headline=summary["headline"])
    return out_dir


def _dataset_file(dataset: str) -> Path:
    info = json.loads(paths.dataset_info_path().read_text(encoding="utf-8"))
    return paths.dataset_dir() / info[dataset]["file_name"]


def _json_schema() -> dict[str, Any] | None:
    path = paths.REPO_ROOT / "evaluation" / "schemas" / "student_labels.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _report(s: dict[str, Any], results: dict[str, PluginResult]) -> str:
    head = [f"# Evaluation: {s['model']} / {s['task']} / {s['method']}", "",
            f"- base model: `{s['base_model']}`", f"- adapter: `{s['adapter'] or 'none (base model)'}`",
            f"- backend: {s['backend']} (hw {s['hw']}), model load {s['load_seconds']:.1f}s"]
    if "n" in s:
        head.append(f"- {s['n']} eval samples, greedy, max {s['max_new_tokens']} new tokens, "
                    f"{s['generate_seconds']:.1f}s; outputs with a <think> block (stripped): {s['think_blocks']}")
    if s["overrides"]:
        head.append(f"- overrides: `{' '.join(s['overrides'])}`")
    head += ["", md_table(["headline metric", "value"], [(k, fmt(v)) for k, v in s["headline"].items()])]
    return "\n".join(head) + "\n\n" + "\n\n".join(r.report for r in results.values()) + "\n"


# ---------------------------------------------------------------------------- compare


def _headline(run: dict[str, Any]) -> dict[str, Any]:
    """Headline metrics recomputed from the stored plugin metrics (so older runs get new keys too)."""
    out: dict[str, Any] = {}
    for name, metrics in (run.get("plugins") or {}).items():
        try:
            keys = get_plugin(name).headline_keys(metrics)
        except KeyError:  # a plugin no longer registered: keep what was stored
            out.update({k: v for k, v in run.get("headline", {}).items() if k.startswith(f"{name}.")})
            continue
        out.update({f"{name}.{k}": _lookup(metrics, k) for k in keys})
    return out


def collect_runs(root: Path | None = None) -> list[dict[str, Any]]:
    root = root or paths.runs_root()
    runs = []
    for path in sorted(root.glob("*/*/*/eval/metrics.json")):
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise EvalError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from e
        m["_dir"] = path.parent
        m["headline"] = _headline(m)
        runs.append(m)
    return runs


def _paired_psychcounsel(base_dir: Path, tuned_dir: Path) -> list[dict[str, Any]]:
    """Per prompt format: McNemar on the items both runs answered."""
    def load(d: Path) -> dict[tuple[str, str], bool]:
        f = d / "psychcounsel_bench_items.jsonl"
        return {(r["format"], r["id"]): bool(r["correct"]) for r in io.read_jsonl(f)} if f.is_file() else {}

    a, b = load(base_dir), load(tuned_dir)
    rows = []
    for fmt_name in sorted({k[0] for k in a} & {k[0] for k in b}):
        keys = sorted(k for k in a.keys() & b.keys() if k[0] == fmt_name)
        r = mcnemar_exact([a[k] for k in keys], [b[k] for k in keys])
        rows.append({"format": fmt_name, **r})
    return rows


def compare(root: Path | None = None) -> tuple[Path, Path]:
    """Write compare.md and compare.csv under the runs root; returns their paths."""
    root = root or paths.runs_root()
    runs = collect_runs(root)
    if not runs:
        raise EvalError(f"no evaluated runs under {root} (run `make eval` first)")
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in runs:
        groups[(r["model"], r["task"])][r["method"]] = r
    tuned_methods = sorted({r["method"] for r in runs} - {BASE_METHOD})
    header = ["model", "task", "metric", BASE_METHOD, *tuned_methods, *(f"Δ {m}" for m in tuned_methods)]
    rows: list[list[Any]] = []
    tests: list[list[Any]] = []
    notes: list[str] = []
    for (model, task), by_method in sorted(groups.items()):
        keys = list(dict.fromkeys(k for r in by_method.values() for k in r.get("headline", {})))
        for key in keys:
            vals = [by_method.get(m, {}).get("headline", {}).get(key) for m in (BASE_METHOD, *tuned_methods)]
            deltas = [(v - vals[0]) if isinstance(v, int | float) and isinstance(vals[0], int | float) else None
                      for v in vals[1:]]
            rows.append([model, task, key, *vals, *deltas])
            present = {v for v in vals if v is not None}
            if key.endswith((".n", ".n_items")) and len(present) > 1:
                notes.append(f"{model}/{task}: runs differ in `{key}` ({', '.join(map(str, sorted(present)))}); "
                             "the Δ columns compare different sample sets, the paired test does not.")
        if BASE_METHOD in by_method:
            for m in tuned_methods:
                if m in by_method:
                    for t in _paired_psychcounsel(by_method[BASE_METHOD]["_dir"], by_method[m]["_dir"]):
                        tests.append([model, task, m, t["format"], t["n"], t["diff"], t["only_a"], t["only_b"],
                                      t["p_value"]])
    md = ["# Base vs tuned", "", f"{len(runs)} evaluated runs under `{root}`. Δ = tuned − base.", "",
          md_table(header, [[fmt(x) if x is not None else "" for x in row] for row in rows])]
    md += [""] + [f"> Note: {n}" for n in notes] if notes else []
    if tests:
        md += ["", "## PsychCounsel-Bench: paired base vs tuned (exact McNemar)", "",
               md_table(["model", "task", "tuned", "prompt format", "n", "Δ accuracy", "only base right",
                         "only tuned right", "p"], tests)]
    md_path, csv_path = root / "compare.md", root / "compare.csv"
    io.atomic_write_text(md_path, "\n".join(md) + "\n")
    buf = _io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([["" if x is None else x for x in row] for row in rows])
    io.atomic_write_text(csv_path, buf.getvalue())
    return md_path, csv_path


# ---------------------------------------------------------------------------- CLI


def cmd_eval(args: argparse.Namespace) -> None:
    if args.raw_dir:
        os.environ["PSY_RAW_DIR"] = str(Path(args.raw_dir).resolve())
    cli_opts = {"scoring": args.scoring, "formats": args.prompt_format, "bench_file": args.bench_file,
                "rubric": args.rubric, "judge_url": args.judge_url, "judge_model": args.judge_model}
    try:
        out = run_eval(args.model, args.task, args.method, base=args.base, hw=args.hw, overrides=args.overrides,
                       backend=args.backend, adapter_task=args.adapter_task, limit=args.limit,
                       batch_size=args.batch_size, plugin_options=cli_opts,
                       plugins_only=args.plugins)
    except (EvalError, FileNotFoundError, KeyError) as e:
        raise SystemExit(f"error: {e}") from e
    print(f"[psyfactory] eval: {out / 'metrics.json'}\n[psyfactory] report: {out / 'report.md'}")


def cmd_compare(args: argparse.Namespace) -> None:
    try:
        md, csv_path = compare(Path(args.runs) if args.runs else None)
    except EvalError as e:
        raise SystemExit(f"error: {e}") from e
    print(md.read_text(encoding="utf-8"))
    print(f"[psyfactory] written: {md}, {csv_path}")


def register(sub: argparse._SubParsersAction) -> None:
    from psyfactory.cli import add_run_args

    p = sub.add_parser("eval", help="run the task's eval plugins on the tuned adapter (or --base)")
    add_run_args(p)
    p.add_argument("--base", action="store_true", help="evaluate the base model (results under method 'base')")
    p.add_argument("--backend", default="auto", choices=["hf", "vllm", "auto", "gguf"],
                   help="inference backend (auto: vLLM when installed with a GPU and no loglik scoring; "
                   "gguf: the run's `make gguf` export, env PSY_GGUF_QUANT/PSY_GGUF_LORA/PSY_GGUF_CONSTRAINED)")
    p.add_argument("--adapter-task", default=None,
                   help="use the adapter trained on this task (for eval-only tasks such as psychcounsel)")
    p.add_argument("--plugins", nargs="+", default=None, help="run only these plugins (default: the task's list)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N samples/items only")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--scoring", choices=["loglik", "generate"], default=None, help="psychcounsel_bench scoring")
    p.add_argument("--prompt-format", nargs="+", default=None,
                   help="psychcounsel_bench prompt format names or YAML paths (first = headline)")
    p.add_argument("--bench-file", default=None, help="psychcounsel_bench JSON file")
    p.add_argument("--raw-dir", default=None,
                   help="raw sources folder for {raw_dir} in benchmark paths (default $PSY_RAW_DIR or ./raw)")
    p.add_argument("--rubric", default=None, help="llm_judge rubric name or YAML path")
    p.add_argument("--judge-url", default=None, help="llm_judge OpenAI-compatible base URL")
    p.add_argument("--judge-model", default=None, help="llm_judge model name")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("compare", help="table of every evaluated run, base vs tuned (markdown + CSV)")
    p.add_argument("--runs", default=None, help="runs root (default: $PSY_RUNS_DIR or ./runs)")
    p.set_defaults(func=cmd_compare)

"""`psyfactory harness`: lm-evaluation-harness on a run, filed as an eval variant.

lm-eval's own API (`lm_eval.simple_evaluate`, pinned in the `[harness]` extra) scores the run's base model
(BASE=1), its adapter (the HF backend's `peft=`; default), its merged model (MERGED=1), or a model trained
elsewhere (ADAPTER= / MODEL_PATH=) on a list of lm-eval tasks: by default CMMLU and C-Eval subjects next to
the domain (psychology, clinical medicine) and one general-knowledge control (DEFAULT_TASKS), to measure what
fine-tuning on counselling data costs outside its own tasks. vLLM is used when it is installed with a GPU.

Results go to `runs/<run>/eval/harness-<base|tuned|merged>[-vllm][-<tasks>]/` in the format `make eval`
writes: metrics.json with a fingerprint (a different evaluation into the same folder is refused), report.md,
`lm_eval_items.jsonl` (right/wrong per document), plus lm-eval's own results; staged next to the folder and
renamed into place whole. `make compare` reads them through plugins/lm_eval.py: a table per model beside the
project's own evaluations, Δ against the base, 95% intervals from lm-eval's standard errors, McNemar per task.

Whatever a user can get wrong fails before a model loads, as one line: lm-eval not installed, an unknown task,
a missing adapter or merged model, vLLM asked for where it cannot run, task data lm-eval cannot load
(offline without a local copy). With `--data-dir DIR`, a task with a folder `DIR/<task>/` is read from the
files there (`<split>.jsonl|.json|.csv|.parquet`, split names as the task's YAML has them: CMMLU `test` +
`dev`, C-Eval `val` + `dev`), through a task YAML that includes lm-eval's own and changes only where the data
come from: no hub access is needed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from psyfactory.core import files, paths
from psyfactory.core.errors import EvalError
from psyfactory.evaluate import guard_variant, put_in_place
from psyfactory.manifest import adapter_sha256, merged_from, record_external, record_stage
from psyfactory.plugins import plugin_class
from psyfactory.plugins.base import fmt, lookup, md_table
from psyfactory.resume import finished_training
from psyfactory.runs import check_name
from psyfactory.runspec import Run

# Forgetting check, chosen for this domain: the CMMLU / C-Eval subjects closest to counselling (psychology,
# clinical knowledge and medicine: what a counselling fine-tune could plausibly shift) and one general
# control (elementary commonsense), so that a drop inside the domain can be told from a general one.
# ~1,030 items as published: CMMLU test splits (232 + 237 + 273 + 198), C-Eval validation splits (19 + 22 + 49).
DEFAULT_TASKS = (
    "cmmlu_professional_psychology",
    "cmmlu_clinical_knowledge",
    "cmmlu_college_medicine",
    "ceval-valid_basic_medicine",
    "ceval-valid_clinical_medicine",
    "ceval-valid_physician",
    "cmmlu_elementary_commonsense",
)
TASKS_DIR = paths.EVALUATION_DIR / "lm_eval_tasks"  # PsychCounsel-Bench as lm-eval tasks
TASK = "harness"  # the eval task a harness variant files under: compare gives it a table per model
PLUGIN = "lm_eval"  # plugins/lm_eval.py: headline and paired records for compare and the model card
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}  # datasets loaders
BOUNDED = {"acc", "acc_norm", "exact_match", "f1", "mcc"}  # metrics in [0, 1]: their interval is clipped
SPLIT_KEYS = ("test_split", "validation_split", "training_split", "fewshot_split")


@dataclass(frozen=True)
class Target:
    """What lm-eval loads: a model folder (or hub id) and, for the tuned variant, a PEFT adapter."""

    kind: str  # base | tuned | merged
    pretrained: str
    adapter: Path | None = None
    weights: str | None = None  # sha256 of the adapter weights evaluated (merged: merged from)
    build: str | None = None  # a builtin model reference to build before loading (builtin:tiny)


@dataclass
class Loaded:
    """The tasks, loaded before any model: lm-eval objects to hand to simple_evaluate, the leaf tasks,
    the local-data task YAMLs written for them, and a digest of each leaf task's prompts and data."""

    objects: list[Any]
    leaves: dict[str, Any]
    overlays: dict[str, str]
    local: dict[str, dict[str, str]]
    digests: dict[str, str]


# ---------------------------------------------------------------------------- checks before a model loads


def require_lm_eval() -> str:
    """lm-eval's version; one line when it is not installed."""
    try:
        import lm_eval
    except ImportError:
        raise EvalError("lm-evaluation-harness is not installed: pip install -e '.[harness]' (the pinned lm_eval, "
                        "see requirements/constraints.txt), then run make harness again") from None
    return str(getattr(lm_eval, "__version__", "unknown"))


def pick_backend(kind: str) -> tuple[str, str | None]:
    """(hf | vllm, why vLLM is not used). `auto`: vLLM when it is installed with a CUDA GPU, else HF."""
    from psyfactory.inference import vllm_unavailable_reason

    if kind not in ("hf", "vllm", "auto"):
        raise EvalError(f"--backend {kind}: use hf, vllm or auto")
    if kind == "hf":
        return "hf", None
    reason = vllm_unavailable_reason()
    if reason is None:
        return "vllm", None
    if kind == "vllm":
        raise EvalError(f"--backend vllm: {reason} (install vllm on a CUDA machine, or use --backend hf)")
    return "hf", f"vLLM not used: {reason}"


def target(run: Run, *, base: bool, merged: bool, allow_unfinished: bool) -> Target:
    """The model to evaluate, checked: its adapter or merged folder exists and is current."""
    if base and merged:
        raise EvalError("BASE=1 and MERGED=1: evaluate the base model or the merged one, not both at once")
    if base:
        from psyfactory.layers import layer_path, load_layer
        from psyfactory.models import resolve_model_path

        ref = str(load_layer(layer_path("model", run.model)).get("model_name_or_path"))
        return Target("base", resolve_model_path(run.model, ref), build=ref)
    ext = run.external
    if merged:
        if ext is not None:
            raise EvalError(f"MERGED=1 evaluates the run's `make merge` output; run {run.name} was trained elsewhere: "
                            "give its merged folder as MODEL_PATH= instead")
        if not (run.merged_dir / "config.json").is_file():
            raise EvalError(f"no merged model at {run.merged_dir}: run `make merge RUN={run.name}` first (or drop "
                            "MERGED=1 to evaluate the adapter)")
        current = adapter_sha256(run.adapter_dir) if run.has_adapter else None
        source = merged_from(run.dir)
        if current and source and current != source:
            raise EvalError(f"{run.merged_dir} was merged from another adapter (sha256 {source[:12]}…) than the run's "
                            f"current one ({current[:12]}…: retrained since); run `make merge RUN={run.name}` again")
        finished_training(run, allow_unfinished=allow_unfinished)
        return Target("merged", str(run.merged_dir), weights=source or current)
    if ext is not None and ext.model_path and not ext.adapter:
        return Target("tuned", ext.model_path)
    if not run.has_adapter:
        raise EvalError(f"no adapter at {run.adapter_dir}: run `make train MODEL={run.model} TASK={run.trained_task} "
                        f"METHOD={run.method}` first (or RUN=<name> of a trained run), or BASE=1 for the base model")
    finished_training(run, allow_unfinished=allow_unfinished)
    return Target("tuned", str(run.config.lf["model_name_or_path"]), run.adapter_dir, adapter_sha256(run.adapter_dir),
                  build=run.config.model_ref)


@lru_cache(maxsize=4)
def task_manager(include: tuple[str, ...], metadata: str) -> Any:
    """lm-eval's TaskManager over its own tasks and `include` (indexing them takes seconds: kept per process)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include), metadata=json.loads(metadata))


def expand_names(tm: Any, names: list[str]) -> list[str]:
    """Task, group and tag names as given (globs expanded); an unknown one is an error with a suggestion."""
    out: list[str] = []
    for name in names:
        if name in tm.task_index:
            out.append(name)
            continue
        matched = sorted(tm.match_tasks([name])) if any(c in name for c in "*?[") else []
        if not matched:
            hint = difflib.get_close_matches(name, tm.all_tasks, n=3)
            raise EvalError(f"unknown lm-eval task {name!r}" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                            + "; `python -m lm_eval ls tasks` lists them (add your own with --include-path DIR)")
        out += matched
    return list(dict.fromkeys(out))


def leaves(tm: Any, name: str) -> list[str]:
    """The tasks a name stands for: itself, a group's tasks (recursively), a tag's tasks."""
    entry = tm.task_index.get(name)
    if entry is None:
        return [name]
    if entry.kind.name == "TAG":
        return sorted(entry.tags)
    if entry.kind.name != "GROUP":
        return [name]
    out: list[str] = []
    for child in (entry.cfg or {}).get("task") or []:
        child_name = child if isinstance(child, str) else child.get("task") if isinstance(child, dict) else None
        if isinstance(child_name, str):
            out += leaves(tm, child_name)
    return out


def local_task(tm: Any, name: str, data_dir: Path, num_fewshot: int | None) -> tuple[str, dict[str, str]] | None:
    """A task YAML that includes lm-eval's own for `name` and reads DIR/<name>/<split>.<ext> instead of the hub;
    None when DIR has no folder for it. Splits without a local file are dropped (few-shot needs its split)."""
    folder = data_dir / name
    if not folder.is_dir():
        return None
    entry = tm.task_index[name]
    cfg = entry.cfg or {}
    if entry.yaml_path is None or "custom_dataset" in cfg:
        raise EvalError(f"{folder}: lm-eval task {name} does not read a hub dataset (it has its own loader); remove "
                        "the folder or name another task")
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix in BUILDERS:
            if f.stem in found:
                raise EvalError(f"{folder}: two files for split {f.stem!r} ({found[f.stem].name}, {f.name}); keep one")
            found[f.stem] = f
    builders = {BUILDERS[f.suffix] for f in found.values()}
    if len(builders) > 1:
        raise EvalError(f"{folder}: files of different formats ({', '.join(sorted(f.name for f in found.values()))}); "
                        "use one of .jsonl/.json, .csv or .parquet for every split")
    splits = {k: cfg.get(k) for k in SPLIT_KEYS if cfg.get(k)}
    scored = splits.get("test_split") or splits.get("validation_split")
    if scored not in found:
        raise EvalError(f"{folder}: no {scored}.jsonl (or .json/.csv/.parquet): lm-eval scores task {name} on its "
                        f"'{scored}' split")
    shots = num_fewshot if num_fewshot is not None else int(cfg.get("num_fewshot") or 0)
    fewshot = splits.get("fewshot_split")
    if shots > 0 and fewshot and fewshot not in found:
        raise EvalError(f"{folder}: no {fewshot}.jsonl: {shots}-shot prompts take their examples from the "
                        f"'{fewshot}' split (add it, or --num-fewshot 0)")
    data = {s: str(found[s].resolve()) for s in sorted(set(splits.values())) if s in found}
    spec: dict[str, Any] = {"include": str(entry.yaml_path), "task": name, "dataset_path": builders.pop(),
                            "dataset_name": None, "dataset_kwargs": {"data_files": data}}
    spec.update({k: None for k, s in splits.items() if s not in found})
    import yaml

    header = f"# {name} read from local files instead of the hub (written by `make harness --data-dir`)\n"
    return header + yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), data


def task_digest(task: Any) -> str:
    """sha256 of what a task asks: its description, each eval document's prompt, choices and target, and its
    few-shot pool. Equal digests: the same items and prompts (compare pairs base and tuned only then)."""
    h = hashlib.sha256()
    cfg = task.config
    h.update(json.dumps([cfg.description, cfg.target_delimiter, cfg.fewshot_delimiter], default=str).encode())
    mc = cfg.doc_to_choice is not None
    for doc in task.eval_docs:
        row = [task.doc_to_text(doc), task.doc_to_choice(doc) if mc else None, task.doc_to_target(doc)]
        h.update(json.dumps(row, ensure_ascii=False, default=str).encode())
    pool = task.fewshot_docs()
    for doc in pool if pool is not None else []:
        h.update(json.dumps(doc, ensure_ascii=False, sort_keys=True, default=str).encode())
    return h.hexdigest()


def load_tasks(tm: Any, names: list[str], *, data_dir: Path | None, num_fewshot: int | None) -> Loaded:
    """Build every task with its data (lm-eval's TaskManager.load), before any model: data that cannot be
    loaded (offline, no local copy, a bad file) is one line here, not a traceback after minutes of loading."""
    local: dict[str, dict[str, str]] = {}
    overlays: dict[str, str] = {}
    if data_dir is not None:
        if not data_dir.is_dir():
            raise EvalError(f"--data-dir {data_dir}: no such folder (local task data: <dir>/<task>/<split>.jsonl)")
        for name in names:
            parts = leaves(tm, name)
            if parts != [name] and any((data_dir / p).is_dir() for p in parts):
                raise EvalError(f"TASKS={name} is a group or tag: with --data-dir name its tasks ({', '.join(parts[:4])}"
                                f"{', ...' if len(parts) > 4 else ''}) so that each is read from {data_dir}")
            made = local_task(tm, name, data_dir, num_fewshot) if parts == [name] else None
            if made is not None:
                overlays[name], local[name] = made
    objects: list[Any] = []
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="psy-harness-") as tmp:
        for name in names:
            spec = name
            if name in overlays:
                spec = str(Path(tmp) / f"{name}.yaml")
                Path(spec).write_text(overlays[name], encoding="utf-8")
            where = ("local files: " + ", ".join(local[name].values()) if name in local
                     else f"the PsychCounsel-Bench file {_bench_of(tm)}" if _reads_bench([name])
                     else "lm-eval's dataset: hub or HF cache")
            print(f"[psyfactory] harness: loading task {name} ({where})", flush=True)
            try:
                out = tm.load([spec])
            except Exception as e:  # lm-eval and datasets raise anything here: the task's data could not be had
                msg = " ".join(str(e).split())[:300]
                hint = "" if name in local else ("; offline: give a local copy, --data-dir DIR with DIR/<task>/<split>"
                                                 ".jsonl (HARNESS_DATA=DIR), or set HF_ENDPOINT to a mirror")
                raise EvalError(f"lm-eval could not load task {name}: {type(e).__name__}: {msg}{hint}") from None
            groups, tasks = out.get("groups") or {}, out["tasks"]
            objects += [groups[name]] if name in groups else list(tasks.values())
            twice = sorted(set(tasks) & set(found))
            if twice:
                raise EvalError(f"task {twice[0]} is asked for twice (by {name} and an earlier name): list it once")
            found.update(tasks)
    digests = {n: task_digest(t) for n, t in sorted(found.items())}
    return Loaded(objects, found, overlays, local, digests)


# ---------------------------------------------------------------------------- the run


@lru_cache(maxsize=1)
def own_tasks() -> Any:
    """A TaskManager over the repo's lm-eval tasks alone (milliseconds: no index of lm-eval's own)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


def _reads_bench(names: list[str]) -> bool:
    """Whether a name asked for (task, tag or glob) stands for one of the repo's PsychCounsel-Bench tasks."""
    own = own_tasks()
    return any(n in own.task_index or (any(c in n for c in "*?[") and own.match_tasks([n])) for n in names)


def _bench_of(tm: Any) -> str:
    meta = getattr(tm, "metadata", None) or {}
    return str(meta.get("bench_file", "")) if isinstance(meta, dict) else ""


def variant_name(kind: str, backend: str, names: list[str], default: bool) -> str:
    """harness-<base|tuned|merged>, -vllm on vLLM, and the tasks when they are not the default list."""
    name = f"harness-{kind}" + ("-vllm" if backend == "vllm" else "")
    if not default:
        joined = "-".join(names)
        if len(joined) > 48 or not re.fullmatch(r"[A-Za-z0-9._+=-]+", joined):
            joined = f"{len(names)}tasks-{hashlib.sha256(','.join(names).encode()).hexdigest()[:8]}"
        name += f"-{joined}"
    return name


def run_harness(run: Run, *, tasks: list[str] | None = None, base: bool = False, merged: bool = False,
                backend: str = "auto", limit: int | None = None, batch_size: str = "8",
                num_fewshot: int | None = None, data_dir: Path | None = None, chat_template: bool = False,
                include_path: list[Path] | None = None, bench_file: Path | None = None, variant: str | None = None,
                overwrite: bool = False, allow_unfinished: bool = False) -> Path:
    """Evaluate `run` with lm-evaluation-harness on `tasks` (default DEFAULT_TASKS); returns the variant folder."""
    if limit is not None and limit < 1:
        raise EvalError(f"--limit {limit}: the number of documents per task, at least 1 (drop it for all)")
    if num_fewshot is not None and num_fewshot < 0:
        raise EvalError(f"--num-fewshot {num_fewshot}: 0 or more")
    if not re.fullmatch(r"[1-9]\d*|auto(:[1-9]\d*)?", batch_size):
        raise EvalError(f"--batch-size {batch_size}: a positive number, auto or auto:N")
    if variant and "/" in variant:
        raise EvalError(f"--variant {variant!r}: a variant name is one folder name")
    version = require_lm_eval()
    what = target(run, base=base, merged=merged, allow_unfinished=allow_unfinished)
    be, why = pick_backend(backend)
    if why:
        print(f"[psyfactory] harness: {why}; lm-eval's HF backend", flush=True)
    extra = [Path(p).expanduser().resolve() for p in include_path or []]
    for p in extra:
        if not p.is_dir():
            raise EvalError(f"--include-path {p}: no such folder (lm-eval task YAMLs)")
    bench = (bench_file or run.task.raw_dir / "PsychCounsel-Bench" / "PsychCounsel-Bench.json").resolve()
    asked = list(tasks or DEFAULT_TASKS)
    if _reads_bench(asked) and not bench.is_file():
        raise EvalError(f"PsychCounsel-Bench file not found: {bench} (`make download`, or --bench-file PATH)")
    print("[psyfactory] harness: indexing lm-eval's tasks", flush=True)
    tm = task_manager(tuple(str(p) for p in (TASKS_DIR, *extra)), json.dumps({"bench_file": str(bench)}))
    default = asked == list(DEFAULT_TASKS)
    names = expand_names(tm, asked)
    name = check_name(variant) if variant else variant_name(what.kind, be, names, default)
    out_dir = run.dir / "eval" / name
    loaded = load_tasks(tm, names, data_dir=data_dir.resolve() if data_dir else None, num_fewshot=num_fewshot)
    n_docs = sum(len(t.eval_docs) for t in loaded.leaves.values())
    versions = {n: t.config.metadata.get("version") if isinstance(t.config.metadata, dict) else None
                for n, t in sorted(loaded.leaves.items())}
    options = {"tasks": names, "num_fewshot": num_fewshot, "chat_template": chat_template, "lm_eval": version,
               "task_versions": versions}
    fingerprint = {"model": what.pretrained, "adapter_sha256": what.weights, "backend": f"lm_eval-{be}",
                   "eval_task": TASK, "plugins": [PLUGIN], "limit": limit, "generation": None,
                   "options": {PLUGIN: options}, "data_sha256": loaded.digests}
    print(f"[psyfactory] harness: {len(loaded.leaves)} task(s), {n_docs} documents"
          f"{f' (first {limit} of each)' if limit else ''} -> {out_dir}", flush=True)
    with run.lock():
        guard_variant(out_dir, fingerprint, overwrite=overwrite)
        if run.external is not None:
            record_external(run.dir, {"name": run.name, "model": run.model, "task": run.trained_task,
                                      "method": run.method, "hw": run.hw, "overrides": [], "recipe": None},
                            run.external.record())
        for orphan in out_dir.parent.glob(f".{name}.*-*"):  # under the run lock: left by a killed evaluation
            shutil.rmtree(orphan, ignore_errors=True)
        staged = out_dir.with_name(f".{name}.tmp-{os.getpid()}")
        staged.mkdir(parents=True)
        try:
            summary = _evaluate(run, staged, name, what, be, loaded, tm, fingerprint, batch_size=batch_size,
                                limit=limit, num_fewshot=num_fewshot, chat_template=chat_template)
            put_in_place(staged, out_dir)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        data_files = [Path(f) for d in loaded.local.values() for f in d.values()]
        record_stage(run.dir, f"eval/{name}", out_dir / "metrics.json",
                     {k: fingerprint[k] for k in ("model", "backend", "plugins", "options", "limit", "generation")},
                     run.config.psy.model_dump(mode="json"), data_files, status="done", headline=summary["headline"])
    return out_dir


def _model_args(run: Run, what: Target, backend: str, chat_template: bool) -> dict[str, Any]:
    args: dict[str, Any] = {"pretrained": what.pretrained}
    if backend == "hf":
        args["dtype"] = "auto"
        if what.adapter is not None:
            args["peft"] = str(what.adapter)
    elif what.adapter is not None:
        rank = json.loads((what.adapter / "adapter_config.json").read_text(encoding="utf-8")).get("r") or 16
        args.update(lora_local_path=str(what.adapter), max_lora_rank=max(16, int(rank)))
    if chat_template and run.config.psy.reasoning == "hybrid":
        args["enable_thinking"] = False  # score the answer, as make eval does (docs/evaluation.md)
    return args


def _evaluate(run: Run, out_dir: Path, name: str, what: Target, backend: str, loaded: Loaded, tm: Any,
              fingerprint: dict[str, Any], *, batch_size: str, limit: int | None, num_fewshot: int | None,
              chat_template: bool) -> dict[str, Any]:
    import lm_eval

    if what.build:
        from psyfactory.models import materialize

        materialize(what.build)
    margs = _model_args(run, what, backend, chat_template)
    device = None
    if backend == "hf":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"[psyfactory] harness: lm-eval {backend} backend on {device or 'vLLM'}: {what.pretrained}"
          f"{f' + adapter {what.adapter}' if what.adapter else ''}", flush=True)
    t0 = time.perf_counter()
    results = lm_eval.simple_evaluate(model=backend, model_args=margs, tasks=loaded.objects, task_manager=tm,
                                      batch_size=int(batch_size) if batch_size.isdigit() else batch_size,
                                      device=device, limit=limit, num_fewshot=num_fewshot, log_samples=True,
                                      apply_chat_template=chat_template)
    seconds = time.perf_counter() - t0
    if results is None:  # not rank 0 of a multi-process launch
        raise EvalError("lm-eval returned no results in this process (run make harness as one process)")
    metrics = summarize(results)
    plugin = plugin_class(PLUGIN)()
    headline = {f"{PLUGIN}.{k}": lookup(metrics, k) for k in plugin.headline_keys(metrics)}
    items = [rec for task, samples in sorted((results.get("samples") or {}).items()) for rec in item_records(task, samples)]
    files.atomic_write_jsonl(out_dir / f"{PLUGIN}_items.jsonl", items)
    raw = {k: v for k, v in results.items() if k != "samples"}
    files.atomic_write_text(out_dir / "lm_eval_results.json",
                            json.dumps(raw, indent=2, ensure_ascii=False, default=_jsonable) + "\n")
    for task, text in loaded.overlays.items():
        files.atomic_write_text(out_dir / "lm_eval_tasks" / f"{task}.yaml", text)
    summary = {
        "run": run.name, "run_task": run.trained_task, "model": run.model, "method": run.method, "task": TASK,
        "variant": name, "kind": "base" if what.kind == "base" else "tuned", "target": what.kind,
        "base_model": what.pretrained, "adapter": str(what.adapter) if what.adapter else None,
        "backend": f"lm_eval-{backend}", "hw": run.hw,
        "external": run.external.record() if run.external is not None and what.kind != "base" else None,
        "overrides": run.config.all_overrides, "fingerprint": fingerprint, "seconds": seconds, "n": metrics["n_docs"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
        "lm_eval": {"version": fingerprint["options"][PLUGIN]["lm_eval"], "model_args": margs, "device": device,
                    "batch_size": batch_size, "limit": limit, "num_fewshot": num_fewshot,
                    "chat_template": chat_template, "local_data": loaded.local,
                    "bench_file": _bench_of(tm) if _reads_bench(list(loaded.leaves)) else None,
                    "hub_tasks": [n for n in loaded.leaves if n not in loaded.local and not _reads_bench([n])]},
        "plugins": {PLUGIN: metrics}, "headline": headline,
    }
    files.atomic_write_json(out_dir / "metrics.json", summary)
    files.atomic_write_text(out_dir / "report.md", report(summary))
    print(f"[psyfactory] harness: {metrics['n_docs']} documents in {seconds:.1f}s", flush=True)
    return summary


# ---------------------------------------------------------------------------- results


def _jsonable(o: Any) -> Any:
    from lm_eval.utils import handle_non_serializable

    return handle_non_serializable(o)


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else None


def task_metrics(res: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's `metric,filter` keys as `metric` (filter `none`) or `metric_filter`, each with its standard
    error and a 95% normal interval (value ± 1.96 se; clipped to [0, 1] for accuracies); `primary`: the first."""
    out: dict[str, Any] = {}
    for key, value in res.items():
        metric, sep, filt = key.partition(",")
        if not sep or metric.endswith("_stderr"):
            continue
        label = metric if filt == "none" else f"{metric}_{filt}"
        out.setdefault("primary", label)
        out[label] = _number(value) if _number(value) is not None else value
        se = _number(res.get(f"{metric}_stderr,{filt}"))
        v = _number(value)
        if se is not None and v is not None:
            lo, hi = v - 1.96 * se, v + 1.96 * se
            if metric in BOUNDED:
                lo, hi = max(0.0, lo), min(1.0, hi)
            out[f"{label}_stderr"] = se
            out[f"{label}_ci95"] = [lo, hi]
    return out


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The plugin metrics of a harness variant: per task (n documents, shots, version) and per group."""
    tasks = {}
    for name, res in sorted(results.get("results", {}).items()):
        n = (results.get("n-samples", {}).get(name) or {}).get("effective")
        tasks[name] = {**task_metrics(res), "n": n, "n_shot": results.get("n-shot", {}).get(name),
                       "version": results.get("versions", {}).get(name)}
    groups = {name: {**task_metrics(res), "tasks": results.get("group_subtasks", {}).get(name, [])}
              for name, res in sorted((results.get("groups") or {}).items())}
    return {"tasks": tasks, "groups": groups, "n_docs": sum(t["n"] or 0 for t in tasks.values()),
            "lm_eval_version": results.get("lm_eval_version")}


def item_records(task: str, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per scored document: its metrics, right/wrong (`acc`) and, for multiple choice, each choice's
    log-likelihood and the one picked (index) next to the target."""
    out = []
    for s in samples:
        rec: dict[str, Any] = {"id": f"{task}/{s['doc_id']}", "task": task, "doc_id": s["doc_id"],
                               "target": s.get("target")}
        for m in s.get("metrics") or []:
            rec[m] = s.get(m)
        if "acc" in rec and _number(rec["acc"]) is not None:
            rec["correct"] = bool(rec["acc"])
        resps = s.get("filtered_resps")
        if isinstance(resps, list) and resps and all(isinstance(r, list | tuple) and r and _number(r[0]) is not None
                                                     for r in resps):
            scores = [float(r[0]) for r in resps]
            rec["scores"] = scores  # log-likelihood of each choice
            rec["pred"] = scores.index(max(scores))
        out.append(rec)
    return out


def report(s: dict[str, Any]) -> str:
    m = s["plugins"][PLUGIN]
    le = s["lm_eval"]
    head = [f"# lm-evaluation-harness: {s['run']} · {s['variant']}", "",
            f"- model: `{s['base_model']}`" + (f" + adapter `{s['adapter']}` (PEFT)" if s["adapter"] else "")
            + f" ({s['target']})",
            f"- lm-eval {le['version']}, {s['backend']} on {le['device'] or 'vLLM'}, batch {le['batch_size']}, "
            f"chat template {'on' if le['chat_template'] else 'off'}, few-shot "
            f"{le['num_fewshot'] if le['num_fewshot'] is not None else 'as each task sets it'}"
            + (f", first {le['limit']} documents per task" if le["limit"] else ""),
            f"- {m['n_docs']} documents in {s['seconds']:.1f}s",
            "- data: " + "; ".join([*(f"{t} from {', '.join(d.values())}" for t, d in le["local_data"].items()),
                                     *([f"PsychCounsel-Bench from {le['bench_file']}"] if le.get("bench_file") else []),
                                     *([f"{', '.join(le['hub_tasks'])} from lm-eval's datasets (hub or HF cache)"]
                                       if le.get("hub_tasks") else [])]) + " (sha256 of each task's prompts in the "
                                                                          "fingerprint)",
            "",
            "Intervals: value ± 1.96 × lm-eval's standard error (normal approximation; accuracies clipped to "
            "[0, 1]).", ""]
    rows = []
    for kind in ("groups", "tasks"):
        for name, t in (m.get(kind) or {}).items():
            for metric, v in t.items():
                if f"{metric}_stderr" in t:
                    lo, hi = t[f"{metric}_ci95"]
                    rows.append([name + (" (group)" if kind == "groups" else ""), metric, fmt(v),
                                 fmt(t[f"{metric}_stderr"]), f"[{lo:.4f}, {hi:.4f}]", t.get("n", ""),
                                 t.get("n_shot", "")])
    head += [md_table(["task", "metric", "value", "stderr", "95% interval", "n", "shots"], rows)]
    return "\n".join(head) + "\n"


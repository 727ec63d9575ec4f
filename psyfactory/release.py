"""`make export RUN=...`: one run made ready for release, in `runs/<run>/export/`.

The folder holds, flat (as a Hugging Face model repository wants them):
- `README.md`: the model card, in Chinese and English: base model and its licence, training data and
  their licences, the training settings the run's manifest recorded, evaluation tables with 95% intervals
  from the run's eval variants (and the paired tests against the base), intended use, out-of-scope use,
  the limits in a crisis and what the crisis safety net does and does not cover;
- the weights: the merged model (default when `make merge` made one) or the LoRA adapter (`--weights
  adapter`), hard-linked from the run (no copy on the same file system);
- the GGUF of `make gguf` (`--quant`, default the one it exported) and an Ollama `Modelfile`
  (psyfactory/gguf/modelfile.py), with the exact `ollama create` line;
- `release.json`: every file with its size and sha256, where it came from, the Ollama line.
The folder is built beside the old one and renamed into place whole. `--push org/name` uploads it to the
Hugging Face hub with huggingface_hub (`HF_TOKEN` from the environment only); `--dry-run` prints what
would be uploaded and where, and touches no network.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psyfactory.core import paths, settings
from psyfactory.core.errors import ConfigError, RunError
from psyfactory.core.files import atomic_write_json, atomic_write_text

WEIGHTS = ("auto", "merged", "adapter", "none")
# the files of a LoRA adapter folder that a user of the adapter needs (not checkpoints, logs or training_args.bin)
ADAPTER_FILE = re.compile(r"^(adapter_config\.json|adapter_model\.(safetensors|bin)|tokenizer[^/]*|"
                          r"special_tokens_map\.json|vocab\.json|merges\.txt|added_tokens\.json|chat_template\.jinja|"
                          r"[^/]+\.model)$")
MERGED_SKIP = {"README.md", "Modelfile"}  # LF's own card and Modelfile: ours replace them
TRAIN_KEYS = ("finetuning_type", "quantization_bit", "lora_rank", "lora_alpha", "lora_dropout", "lora_target",
              "template", "enable_thinking", "dataset", "cutoff_len", "max_samples", "num_train_epochs", "max_steps",
              "learning_rate", "lr_scheduler_type", "warmup_ratio", "warmup_steps", "weight_decay",
              "per_device_train_batch_size", "gradient_accumulation_steps", "bf16", "fp16", "packing", "neat_packing",
              "val_size", "seed", "deepspeed")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
HOTLINES_ZH = "中国大陆：紧急情况请拨打 120（急救）或 110（报警）；心理援助热线 12356"
HOTLINES_EN = "Mainland China: emergencies 120 (ambulance) or 110 (police); psychological assistance hotline 12356"


@dataclass
class Release:
    dir: Path
    weights: str | None  # "merged", "adapter" or None
    files: dict[str, dict[str, Any]]
    gguf: str | None
    modelfile: Path | None
    ollama_name: str
    ollama_create: str | None
    card: Path
    evaluations: int


# ---------------------------------------------------------------------------- what goes in


def ollama_name(run_name: str) -> str:
    """An Ollama model name for a run: `psy-<run>` lower-cased, `/` and other characters as `-`."""
    return re.sub(r"[^a-z0-9._-]+", "-", f"psy-{run_name}".lower()).strip("-.")


def pick_weights(run: Any, choice: str) -> tuple[str | None, Path | None]:
    """('merged' | 'adapter' | None, folder), after the lineage checks: an unfinished training is refused,
    and a merged model made from another adapter than the run's current one."""
    from psyfactory.manifest import adapter_sha256, merged_from
    from psyfactory.resume import finished_training

    if choice not in WEIGHTS:
        raise ConfigError(f"--weights {choice}: choose from {', '.join(WEIGHTS)}")
    has_merged = (run.merged_dir / "config.json").is_file()
    if choice == "auto":
        choice = "merged" if has_merged else "adapter" if run.has_adapter else "none"
        if choice == "none":
            raise RunError(f"run {run.name}: no adapter and no merged model to export; run `make train RUN={run.name}` "
                           "(and `make merge`) first")
    if choice == "none":
        return None, None
    if choice == "adapter" and not run.has_adapter:
        raise RunError(f"no adapter at {run.adapter_dir}: run `make train RUN={run.name}` first")
    if choice == "merged" and not has_merged:
        raise RunError(f"{run.merged_dir}: merged model not found; run `make merge RUN={run.name}` first, or export "
                       "the adapter (ARGS='--weights adapter')")
    finished_training(run)
    if choice == "merged":
        current, merged = adapter_sha256(run.adapter_dir), merged_from(run.dir)
        if current and merged and current != merged:
            raise RunError(f"{run.merged_dir} was merged from another adapter (sha256 {merged[:12]}…) than the run's "
                           f"current one ({current[:12]}…); run `make merge RUN={run.name}` again first")
        return "merged", run.merged_dir
    return "adapter", run.adapter_dir


def pick_gguf(run: Any, quant: str | None) -> Path | None:
    """The GGUF to ship: `model-<quant>.gguf`, by default the quantization `make gguf` exported; None when the
    run has none (and no quant was asked for). A GGUF of an older adapter is refused."""
    from psyfactory.manifest import adapter_sha256

    export = run.gguf_dir / "export.json"
    info = json.loads(export.read_text(encoding="utf-8")) if export.is_file() else {}
    want = (quant or info.get("quant") or "").upper() or None
    if want is None:
        found = sorted(p for p in run.gguf_dir.glob("model-*.gguf") if p.name != "model-f16.gguf")
        if not found:
            return None
        path = found[0]
    else:
        path = run.gguf_dir / ("model-f16.gguf" if want == "F16" else f"model-{want}.gguf")
        if not path.is_file():
            raise RunError(f"{path} not found: run `make gguf RUN={run.name} QUANT={want}` first"
                           + ("" if quant else " (gguf/export.json names it)"))
    made_from, current = info.get("adapter_sha256"), adapter_sha256(run.adapter_dir)
    if made_from and current and made_from != current:
        raise RunError(f"{path.name} was exported from another adapter (sha256 {made_from[:12]}…) than the run's "
                       f"current one ({current[:12]}…); run `make merge` and `make gguf RUN={run.name}` again first")
    return path


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _weight_files(kind: str, folder: Path) -> list[Path]:
    if kind == "adapter":
        return sorted(p for p in folder.iterdir() if p.is_file() and ADAPTER_FILE.match(p.name))
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in MERGED_SKIP)


def _modelfile(run: Any, staged: Path, final: Path, gguf: Path) -> Path:
    """The Ollama Modelfile beside the GGUF: written by psyfactory.gguf.modelfile from the merged model's
    tokenizer, else the one `make gguf` wrote (its FROM pointed at the shipped file)."""
    c = run.config
    if (run.merged_dir / "tokenizer_config.json").is_file():
        from psyfactory.gguf.modelfile import write_modelfile

        path = write_modelfile(staged, gguf.name, run.merged_dir, enable_thinking=bool(c.lf.get("enable_thinking")),
                               label_task=c.psy.kind == "label")
    elif (run.gguf_dir / "Modelfile").is_file():
        text = (run.gguf_dir / "Modelfile").read_text(encoding="utf-8")
        path = staged / "Modelfile"
        atomic_write_text(path, re.sub(r"(?m)^FROM .*$", f"FROM ./{gguf.name}", text, count=1))
    else:
        raise RunError(f"{run.merged_dir} has no tokenizer and {run.gguf_dir} no Modelfile: run `make gguf "
                       f"RUN={run.name}` again")
    text = path.read_text(encoding="utf-8").replace(str(staged), str(final))  # its usage line names the folder
    atomic_write_text(path, text)
    return path


# ---------------------------------------------------------------------------- evaluations


def evaluations(run: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(this run's evaluations, the base evaluations of the same models and tasks from any run)."""
    from psyfactory.compare import collect

    root = paths.runs_root()
    if not root.is_dir():
        return [], []
    entries = collect(root)
    ours = [e for e in entries if e["run"] == run.name]
    keys = {(e["model"], e["task"]) for e in ours}
    bases = [e for e in entries if e.get("kind") == "base" and (e["model"], e["task"]) in keys]
    return ours, bases


def mean_ci(xs: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% percentile-bootstrap interval (9,999 resamples, fixed seed), as compare's paired one."""
    import numpy as np
    from scipy.stats import bootstrap

    a = np.asarray(xs, dtype=float)
    if a.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(a.mean())
    if a.size < 2 or bool(np.all(a == a[0])):
        return mean, mean, mean
    ci = bootstrap((a,), np.mean, n_resamples=9999, confidence_level=0.95, random_state=np.random.default_rng(0),
                   method="percentile").confidence_interval
    return mean, float(ci.low), float(ci.high)


def item_rows(entry: dict[str, Any]) -> list[list[Any]]:
    """Per plugin and group of one evaluation: n, the value and its 95% interval, from the per-item records
    (right/wrong: accuracy with a Wilson interval; scores: mean with a bootstrap interval)."""
    from psyfactory.core.errors import UserError
    from psyfactory.core.files import read_jsonl
    from psyfactory.plugins import plugin_class
    from psyfactory.plugins.base import wilson_ci

    rows = []
    for name in sorted(entry.get("plugins") or {}):
        items_file = entry["_dir"] / f"{name}_items.jsonl"
        if not items_file.is_file():
            continue
        try:
            plugin = plugin_class(name)()
        except UserError:
            continue
        items = read_jsonl(items_file)
        for group, by_id in sorted((plugin.paired(items) or {}).items()):
            k, n = sum(by_id.values()), len(by_id)
            lo, hi = wilson_ci(k, n)
            rows.append([entry["variant"], name, group, "accuracy", n, f"{k / n:.4f}" if n else "n/a",
                         f"[{lo:.4f}, {hi:.4f}]" if n else "-"])
        for metric, by_id in sorted((plugin.paired_scores(items) or {}).items()):
            mean, lo, hi = mean_ci(list(by_id.values()))
            rows.append([entry["variant"], name, metric, "mean", len(by_id), f"{mean:.4f}",
                         f"[{lo:.4f}, {hi:.4f}]"])
    return rows


def headline_cell(metrics: dict[str, Any], plugin: str, key: str) -> str:
    """A headline value, with its interval when the plugin stored one beside it (`<key>_ci95`, or `ci95`
    next to an `accuracy`)."""
    from psyfactory.plugins.base import fmt, lookup

    value = lookup(metrics.get(plugin) or {}, key)
    head, _, leaf = key.rpartition(".")
    parent = lookup(metrics.get(plugin) or {}, head) if head else metrics.get(plugin)
    ci = None
    if isinstance(parent, dict):
        ci = parent.get(f"{leaf}_ci95") or (parent.get("ci95") if leaf == "accuracy" else None)
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(x, int | float) for x in ci):
        return f"{fmt(value)} [{ci[0]:.4f}, {ci[1]:.4f}]"
    return fmt(value)


def _crisis_rows(entry: dict[str, Any]) -> list[list[Any]]:
    """Recall of each risk class (model alone, and model + crisis safety net when the evaluation ran it)."""
    rows = []
    for _plugin, m in sorted((entry.get("plugins") or {}).items()):
        safety = m.get("safety") if isinstance(m, dict) else None
        if not isinstance(safety, dict) or not isinstance(safety.get("classes"), dict):
            continue
        net = (m.get("safety_net") or {}).get("model_net") or {}
        for cls, t in safety["classes"].items():
            rows.append([entry["variant"], f"{safety.get('field')}={cls}", t.get("support"),
                         _recall(t, safety.get("min_support")), _recall(net.get(cls), safety.get("min_support"))])
    return rows


def _recall(t: dict[str, Any] | None, min_support: Any) -> str:
    if not t:
        return "-"
    if not t.get("measurable"):
        return f"{t.get('found')}/{t.get('support')}: 不可测 not measurable (< {min_support})"
    lo, hi = t["recall_ci95"]
    return f"{t['found']}/{t['support']} = {t['recall']:.3f} [{lo:.3f}, {hi:.3f}]"


def eval_section(ours: list[dict[str, Any]], bases: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The card's evaluation section (markdown lines) and its crisis rows."""
    from psyfactory.compare import paired_tests, reference_for
    from psyfactory.plugins.base import md_table

    if not ours:
        return (["未评测：这次运行还没有任何评测结果（`make eval RUN=…`，基座 `BASE=1`）。发布前请先评测。", "",
                 "Not evaluated: the run has no evaluation yet (`make eval RUN=…`, the base with `BASE=1`). "
                 "Evaluate before releasing.", ""], [])
    lines: list[str] = []
    crisis: list[list[Any]] = []
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in ours:
        by_task[e["task"]].append(e)
    for task, group in sorted(by_task.items()):
        group.sort(key=lambda e: (e.get("kind") != "base", e["variant"]))
        lines += [f"### {task}", ""]
        head_rows = []
        for e in group:
            m = e.get("plugins") or {}
            for key in e["headline"]:
                plugin, _, sub = key.partition(".")
                head_rows.append([e["variant"], e.get("kind", ""), key, headline_cell(m, plugin, sub)])
        lines += ["核心指标（方括号内为插件给出的 95% 区间）/ Headline metrics (95% interval in brackets where the "
                  "plugin gives one):", "", md_table(["variant", "kind", "metric", "value"], head_rows), ""]
        rows = [r for e in group for r in item_rows(e)]
        if rows:
            lines += ["逐条记录上的数值与 95% 区间（对/错：Wilson 区间；分数：均值的 bootstrap 区间）/ From the per-item "
                      "records, with 95% intervals (right/wrong: Wilson; scores: bootstrap of the mean):", "",
                      md_table(["variant", "plugin", "group", "measure", "n", "value", "95% CI"], rows), ""]
        tests, scored = [], []
        task_bases = [b for b in bases if b["task"] == task and b["model"] == group[0]["model"]]
        for e in group:
            if e.get("kind") == "base":
                continue
            ref, borrowed = reference_for(e, task_bases)
            if ref is None:
                continue
            vs = f"{ref['run']} · {ref['variant']}" + ("*" if borrowed else "")
            paired, scores = paired_tests(ref, e)
            tests += [[e["variant"], vs, t["plugin"], t["group"], t["n"], f"{t['diff']:+.4f}", t["only_a"],
                       t["only_b"], f"{t['p_value']:.4f}"] for t in paired]
            scored += [[e["variant"], vs, t["plugin"], t["group"], t["n"], f"{t['diff']:+.4f}",
                        f"[{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}]", f"{t['p_value']:.4f}"] for t in scores]
        if tests:
            lines += ["与基座的配对比较（精确 McNemar 检验）/ Paired against the base (exact McNemar):", "",
                      md_table(["variant", "vs base", "plugin", "group", "n", "Δ accuracy", "only base right",
                                "only tuned right", "p"], tests), ""]
        if scored:
            lines += ["与基座的逐条分数差（配对 bootstrap 95% 区间，符号翻转置换检验）/ Per-item score difference against "
                      "the base (paired bootstrap 95% CI, sign-flip permutation p):", "",
                      md_table(["variant", "vs base", "plugin", "metric", "n", "Δ mean", "95% CI", "p"], scored), ""]
        crisis += [r for e in group for r in _crisis_rows(e)]
    return lines, crisis


# ---------------------------------------------------------------------------- the card


def _data_sources(task: str) -> tuple[list[str], str | None]:
    """(the public sources a task's data come from, its own file if it names one)."""
    from psyfactory import layers

    try:
        psy = layers.load_layer(layers.layer_path("task", task)).get("psy") or {}
    except Exception:  # noqa: BLE001 (a task YAML that is gone: say nothing about its data)
        return [], None
    data = psy.get("data") or {}
    return list(data.get("download") or []), data.get("file")


def _sources_for_files(files: list[str]) -> list[str]:
    from psyfactory.data_prep.download import SOURCES

    return sorted({name for name, s in SOURCES.items() for f in files if f"/{s.folder}/" in f.replace(os.sep, "/")})


def _licence_rows(names: list[str], role: str) -> list[list[str]]:
    from psyfactory.data_prep.download import SOURCES

    rows = []
    for n in names:
        s = SOURCES.get(n)
        rows.append([role, s.title if s else n, s.homepage if s else "-", s.licence if s else "见数据来源 / see the source"])
    return rows


def data_licences(run: Any, ours: list[dict[str, Any]]) -> list[list[str]]:
    if run.external is not None:  # trained elsewhere: its data are not known here
        train, own = [], None
        rows = [["训练 training", "在别处训练，数据未知 trained elsewhere, data not known here", "-",
                 "请在此写明数据及其许可 state the data and their licences here"]]
    else:
        train, own = _data_sources(run.trained_task)
        rows = _licence_rows(train, "训练 training")
    if own:
        rows.append(["训练 training", f"自有数据 your own data: `{own}`", "-", "请在此写明 state its licence here"])
    seen = set(train)
    for e in ours:
        names, own_eval = _data_sources(e["task"])
        names += _sources_for_files(list((e.get("fingerprint") or {}).get("data_sha256") or {}))
        for n in names:
            if n not in seen:
                seen.add(n)
                rows += _licence_rows([n], "评测 evaluation")
    return rows


def _yaml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def card(run: Any, *, weights: str | None, gguf: Path | None, name: str, ours: list[dict[str, Any]],
         bases: list[dict[str, Any]]) -> str:
    from psyfactory.manifest import read_manifest
    from psyfactory.plugins.base import md_table

    c = run.config
    manifest = read_manifest(run.dir)
    train = (manifest.get("stages") or {}).get("train") or {}
    base_ref = str(c.model_ref)
    hub_id = None if base_ref.startswith("builtin:") or Path(base_ref).is_absolute() else base_ref
    licence = c.psy.licence
    net = run.task.safety_net() if run.config.task == run.trained_task else None
    label_task = c.psy.kind == "label"
    lic_rows = data_licences(run, ours)
    eval_lines, crisis = eval_section(ours, bases)
    tags = ["psyfactory", "llama-factory", run.method, "mental-health", "chinese", *(["gguf"] if gguf else [])]
    front = ["---", f"license: {licence or 'other'}", *([f"base_model: {hub_id}"] if hub_id else []),
             f"library_name: {'peft' if weights == 'adapter' else 'transformers'}", "pipeline_tag: text-generation",
             "language: [zh, en]", f"tags: {_yaml_list(tags)}", "---", ""]
    out = [*front, f"# {run.name}", "",
           f"由 PsyFactory 微调：基座 `{hub_id or base_ref}`，任务 `{run.trained_task}`，方法 `{run.method}`。"
           "本模型用于中文心理健康方向的研究，**不能替代心理咨询师或精神科医生**，也不能用于危机干预。", "",
           f"Fine-tuned with PsyFactory: base `{hub_id or base_ref}`, task `{run.trained_task}`, method "
           f"`{run.method}`. A research model for Chinese mental-health NLP. **It does not replace a counsellor or a "
           "psychiatrist and must not be used for crisis intervention.**", ""]

    # -- overview
    files = [["README.md", "本模型卡 this model card"]]
    if weights == "merged":
        files.append(["config.json, *.safetensors, tokenizer*", "合并后的完整模型 merged model (transformers)"])
    elif weights == "adapter":
        files.append(["adapter_config.json, adapter_model.safetensors", f"LoRA 适配器 LoRA adapter (PEFT) for `{hub_id or base_ref}`"])
    if gguf:
        files += [[gguf.name, "llama.cpp / Ollama 量化模型 quantized GGUF"], ["Modelfile", "Ollama Modelfile"]]
    files.append(["release.json", "每个文件的大小与 sha256 / size and sha256 of every file"])
    out += ["## 概要 Overview", "", md_table(["", ""], [
        ["基座模型 base model", f"`{hub_id or base_ref}`" + (f" (ModelScope: `{c.psy.modelscope_id}`)" if c.psy.modelscope_id else "")],
        ["基座许可 base licence", licence or "未在模型 YAML 中写明 not stated in the model YAML (psy.licence)"],
        ["任务 task", f"`{run.trained_task}` ({'标签 label' if label_task else '生成 generation'})"],
        ["方法 method", run.method], ["运行 run", f"`{run.name}`"]]), "", md_table(["文件 file", "内容 what"], files), ""]

    # -- data
    out += ["## 训练数据与许可 Training data and licences", "",
            "发布前请核对每个数据集的条款：模型权重同时受基座许可与数据条款约束（例如 PsyQA 协议禁止商用和再分发）。",
            "",
            "Check every dataset's terms before publishing: the weights are bound by the base model's licence and by "
            "the data's terms (PsyQA's agreement, for one, forbids commercial use and redistribution).", ""]
    out += [md_table(["用途 role", "数据 data", "来源 source", "许可 licence"], lic_rows) if lic_rows else
            "（任务没有登记公开数据来源 the task names no public source）", ""]
    hashes = train.get("data") or {}
    if hashes:
        out += ["训练所用数据文件（sha256）/ Data files the training read (sha256):", "",
                md_table(["file", "sha256"], [[Path(f).name, h] for f, h in hashes.items()]), ""]
    out += ["`make prep` 默认对所有任务做个人信息脱敏（手机号、证件号、邮箱、QQ/微信号、人名、学校、班级），见 docs/data.md。", "",
            "`make prep` scrubs personal identifiers in every task by default (phones, ID numbers, emails, QQ/WeChat "
            "ids, names, schools, classes; docs/data.md).", ""]

    # -- training
    cfg = train.get("config") or {}
    rows = [[k, json.dumps(cfg[k], ensure_ascii=False) if not isinstance(cfg[k], str) else cfg[k]]
            for k in TRAIN_KEYS if k in cfg]
    results = run.adapter_dir / "all_results.json"
    if results.is_file():
        try:
            res = json.loads(results.read_text(encoding="utf-8"))
            rows += [[k, f"{res[k]:.4g}" if isinstance(res[k], float) else str(res[k])]
                     for k in ("train_loss", "epoch", "train_runtime") if k in res]
        except json.JSONDecodeError:
            pass
    out += ["## 训练设置 Training settings", ""]
    if train:
        versions = train.get("versions") or {}
        rows += [["status", str(train.get("status"))], ["adapter sha256", str(train.get("adapter_sha256"))],
                 ["git commit", f"{(train.get('git') or {}).get('commit')}"
                  + (" (dirty)" if (train.get("git") or {}).get("dirty") else "")],
                 ["versions", ", ".join(f"{k} {versions[k]}" for k in ("llamafactory", "transformers", "peft", "torch")
                                        if k in versions)],
                 ["trained", str(train.get("time"))]]
        out += ["来自运行的 manifest.json（`stages.train`）/ From the run's manifest.json (`stages.train`):", "",
                md_table(["key", "value"], rows), "",
                f"复现 Reproduce: `make train RUN={run.name}`; the flat LLaMA-Factory config it ran is "
                f"`runs/{run.name}/train.yaml` (`llamafactory-cli train` on it runs the same training).", ""]
    else:
        ext = (manifest.get("external") or {})
        out += ["这个模型在别处训练，PsyFactory 没有它的训练记录。/ Trained elsewhere: PsyFactory holds no record of its "
                f"training (`{ext.get('adapter') or ext.get('model_path') or run.adapter_dir}`).", ""]

    # -- evaluation
    out += ["## 评测 Evaluation", "", *eval_lines]

    # -- use
    out += ["## 预期用途 Intended use", "",
            "- 中文心理健康自然语言处理的研究与教学：复现、比较、误差分析。",
            "- 在受过训练的专业人员监督下的辅助工作（例如起草、标注辅助），每条输出都由人审核。"
            + ("标签模型的输出只是筛查线索，不是评估结论。" if label_task else ""),
            "- Research and teaching in Chinese mental-health NLP: reproduction, comparison, error analysis.",
            "- Assisting trained professionals under supervision (drafting, annotation support), a person reviewing "
            "every output." + (" A label model's output is a screening cue, not an assessment." if label_task else ""),
            "", "## 不适用范围 Out-of-scope use", "",
            "- 诊断、治疗或替代心理咨询师、精神科医生；无人监督地直接面向求助者，尤其是处于危机中的人。",
            "- 对个人作出决定（录取、处分、保险、雇用等）。",
            "- 违反数据条款的用途（见上表：部分数据仅限非商业研究、禁止再分发）。",
            "- Diagnosis, treatment, or replacing a counsellor or psychiatrist; talking to help-seekers without "
            "supervision, above all people in crisis.",
            "- Decisions about individuals (admission, discipline, insurance, employment).",
            "- Uses the data's terms forbid (see the table above: some data are for non-commercial research only and "
            "may not be redistributed).", ""]

    # -- crisis
    out += ["## 危机情境的局限与安全网 Crisis limitations and the safety net", "",
            "模型可能漏掉或误判自杀、自伤、暴力等危机信号，也可能给出不恰当的回答。任何部署都必须有人工值守的危机识别和转介流程。"
            f"{HOTLINES_ZH}（发布前请核对当地号码）。", "",
            "The model can miss or misjudge signs of suicide, self-harm or violence, and can answer inappropriately. "
            "Any deployment needs its own crisis detection and a human escalation path. "
            f"{HOTLINES_EN} (check the local numbers before release).", ""]
    if net is not None:
        lexicon = net.lexicon.path
        shown = paths.shown(lexicon)
        shown = Path(shown).name if Path(shown).is_absolute() else shown
        out += [f"安全网：PsyFactory 的 `make eval`、`make chat` 和 `make chat-gguf` 对这个任务使用危机词表安全网"
                f"（`{shown}`，sha256 {net.lexicon.sha256[:12]}）："
                f"输入中明确的危机表达会把 `{net.field}` 从无风险上调，但绝不下调。**导出的权重、GGUF 和 Modelfile 都不包含这个安全网**："
                "在 Ollama、transformers 或其他环境中运行时，只有模型本身在回答。", "",
                f"Safety net: for this task PsyFactory's `make eval`, `make chat` and `make chat-gguf` apply a crisis "
                f"lexicon: explicit crisis language in the input raises `{net.field}` from none, never lowers it. **The "
                "exported weights, GGUF and Modelfile do not contain this net**: run in Ollama, transformers or "
                "anything else, the model answers alone.", ""]
    else:
        out += ["安全网：这个任务在 PsyFactory 中没有危机安全网，模型的回答不经过任何危机检查；导出的文件也不包含任何安全网。", "",
                "Safety net: this task has no crisis safety net in PsyFactory; the model's answers pass no crisis "
                "check, and the exported files contain none.", ""]
    if crisis:
        out += ["各风险类别的召回率（模型本身 / 模型 + 安全网；少于 min_support 个样例时不可测）/ Recall per risk class "
                "(model alone / model + safety net; not measurable under min_support examples):", "",
                md_table(["variant", "class", "examples", "model alone", "model + net"], crisis), ""]

    # -- how to use
    out += ["## 使用 How to use", ""]
    if weights == "merged":
        out += ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                'tok = AutoTokenizer.from_pretrained("<this folder or repo>")',
                'model = AutoModelForCausalLM.from_pretrained("<this folder or repo>")', "```", ""]
    elif weights == "adapter":
        out += ["```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                f'base = AutoModelForCausalLM.from_pretrained("{hub_id or base_ref}")',
                'model = PeftModel.from_pretrained(base, "<this folder or repo>")',
                'tok = AutoTokenizer.from_pretrained("<this folder or repo>")', "```", ""]
    if gguf:
        out += ["Ollama（在本文件夹中 in this folder）:", "", "```bash", f"ollama create {name} -f Modelfile",
                f"ollama run {name}", "```", ""]
    if c.lf.get("enable_thinking") is False and c.psy.reasoning != "none":
        out += ["训练与评测都关闭了思考模式（`enable_thinking=false`），推理时也请关闭。/ Trained and evaluated with "
                "thinking off (`enable_thinking=false`): keep it off at inference.", ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------- export and push


def export(run: Any, *, weights: str = "auto", quant: str | None = None, name: str | None = None,
           out: Any = None) -> Release:
    """Build runs/<run>/export/ (see the module doc); returns what it holds."""
    import hashlib

    out = out or sys.stdout
    kind, folder = pick_weights(run, weights)
    gguf = pick_gguf(run, quant)
    name = name or ollama_name(run.name)
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*(:[\w.-]+)?", name):
        raise ConfigError(f"--ollama-name {name!r}: lower-case letters, digits, '.', '_', '-' (and an optional :tag)")
    ours, bases = evaluations(run)
    final = run.dir / "export"
    with run.lock():
        staged = run.dir / f".export.tmp-{os.getpid()}"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        try:
            sources: dict[str, str] = {}
            for p in _weight_files(kind, folder) if kind and folder else []:
                _link(p, staged / p.name)
                sources[p.name] = str(p)
            modelfile = None
            if gguf is not None:
                _link(gguf, staged / gguf.name)
                sources[gguf.name] = str(gguf)
                modelfile = _modelfile(run, staged, final, gguf)
                sources["Modelfile"] = "psyfactory.gguf.modelfile"
            atomic_write_text(staged / "README.md", card(run, weights=kind, gguf=gguf, name=name, ours=ours, bases=bases))
            create = f"ollama create {name} -f {final / 'Modelfile'}" if gguf is not None else None
            files = {}
            for p in sorted(staged.iterdir()):
                h = hashlib.sha256()
                with open(p, "rb") as fh:
                    while block := fh.read(1 << 20):
                        h.update(block)
                files[p.name] = {"bytes": p.stat().st_size, "sha256": h.hexdigest(), "from": sources.get(p.name)}
            atomic_write_json(staged / "release.json", {
                "run": run.name, "model": run.model, "task": run.trained_task, "method": run.method,
                "trained_elsewhere": run.external is not None,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "weights": kind, "gguf": gguf.name if gguf else None,
                "ollama": {"name": name, "create": create} if create else None,
                "evaluations": sorted(f"{e['task']}/{e['variant']}" for e in ours), "files": files})
            old = final.with_name(f".export.old-{os.getpid()}")
            if final.exists():
                final.rename(old)
            staged.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    files["release.json"] = {"bytes": (final / "release.json").stat().st_size}
    rel = Release(final, kind, files, gguf.name if gguf else None, final / "Modelfile" if modelfile else None, name,
                  create, final / "README.md", len(ours))
    total = sum(f["bytes"] for f in files.values())
    print(f"[export] {final}: model card (zh+en, {rel.evaluations} evaluation(s)), "
          f"{kind or 'no'} weights, {rel.gguf or 'no GGUF'}; {len(files)} files, {total / 2**20:.1f} MiB", file=out)
    if not ours:
        print("[export] WARNING: the run has no evaluation: the card says so; `make eval RUN=...` (and BASE=1) first",
              file=out)
    if create:
        print(f"[export] Ollama: {create}", file=out)
    else:
        print(f"[export] no GGUF: `make gguf RUN={run.name}` then `make export` again for the Ollama Modelfile",
              file=out)
    return rel


def push(rel: Release, repo_id: str, *, dry_run: bool, private: bool = True, out: Any = None) -> list[str]:
    """Upload the export folder to the Hugging Face hub (`HF_TOKEN` from the environment); with `dry_run`,
    print what would be uploaded and where, touching no network. Returns the files (would be) uploaded."""
    out = out or sys.stdout
    if not REPO_ID.fullmatch(repo_id):
        raise ConfigError(f"HUB_REPO={repo_id!r}: a hub repository id, <user or organisation>/<name>")
    from huggingface_hub import constants

    from psyfactory.data_prep.download import SOURCES

    endpoint = (settings.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    token = settings.get("HF_TOKEN")
    names = sorted(p.relative_to(rel.dir).as_posix() for p in rel.dir.rglob("*") if p.is_file())
    size = sum((rel.dir / n).stat().st_size for n in names)
    verb = "would upload" if dry_run else "uploading"
    print(f"[export] {verb} {len(names)} files ({size / 2**20:.1f} MiB) from {rel.dir} to {endpoint}/{repo_id} "
          f"({'private' if private else 'public'} model repository); HF_TOKEN {'is set' if token else 'is NOT set'}",
          file=out)
    for n in names:
        print(f"  {n}  {(rel.dir / n).stat().st_size} bytes", file=out)
    release = json.loads((rel.dir / "release.json").read_text(encoding="utf-8"))
    task_sources, _ = ([], None) if release.get("trained_elsewhere") else _data_sources(release.get("task") or "")
    terms = [f"{SOURCES[s].title}: {SOURCES[s].licence}" for s in task_sources if s in SOURCES]
    print("[export] data terms to check before publishing: "
          + ("; ".join(terms) if terms else "the training data's own terms (not known here)"), file=out)
    if dry_run:
        print("[export] dry run: nothing uploaded", file=out)
        return names
    if not token:
        raise RunError("HF_TOKEN is not set: export HF_TOKEN=<a write token> in the shell (never in a config file), "
                       "then rerun; DRY_RUN=1 shows what would be uploaded")
    if endpoint != "https://huggingface.co":
        print(f"[export] note: HF_ENDPOINT={endpoint}; a read-only mirror refuses uploads (unset HF_ENDPOINT to push to "
              "huggingface.co)", file=out)
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(rel.dir), repo_id=repo_id,
                          commit_message=f"PsyFactory export of run {release.get('run')}")
    except Exception as e:  # network, auth, a read-only mirror
        raise RunError(f"push to {endpoint}/{repo_id} failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    print(f"[export] pushed to {endpoint}/{repo_id}", file=out)
    return names

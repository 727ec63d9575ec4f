"""`make data-report`: per task, counts per split, token-length histograms (PNG) with the chosen
model's tokenizer, the share of samples longer than the task's cutoff_len, label distributions.

Lengths are measured the way LLaMA-Factory sees a sample: the conversation rendered with the
tokenizer's chat template (alpaca: instruction + "\\n" + input as the user turn, output as the reply).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psyfactory.core.errors import DataError
from psyfactory.core.files import atomic_write_json, atomic_write_text, read_jsonl

# task -> (tokenizer path, cutoff_len or None, task kind "label" | "generation"); supplied by the caller
TaskInfo = Callable[[str], tuple[str, int | None, str]]

DEFAULT_CUTOFF = 2048


def to_messages(rec: dict[str, Any]) -> list[dict[str, str]]:
    if "messages" in rec:
        return rec["messages"]
    user = rec["instruction"] + ("\n" + rec["input"] if rec.get("input") else "")
    msgs = [{"role": "system", "content": rec["system"]}] if rec.get("system") else []
    return [*msgs, {"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}]


def _count(tokenizer: Any, texts: list[str]) -> list[int]:
    from tqdm import tqdm

    out: list[int] = []
    for i in tqdm(range(0, len(texts), 512), desc="tokenize", unit="batch", leave=False, disable=len(texts) < 2048):
        out.extend(len(ids) for ids in tokenizer(texts[i: i + 512], add_special_tokens=False)["input_ids"])
    return out


def token_lengths(tokenizer: Any, records: list[dict[str, Any]]) -> list[int]:
    """Tokens of each whole sample as LLaMA-Factory renders it (the cutoff_len applies to these)."""
    texts = []
    for rec in records:
        msgs = to_messages(rec)
        if getattr(tokenizer, "chat_template", None):
            texts.append(tokenizer.apply_chat_template(msgs, tokenize=False))
        else:
            texts.append("\n".join(m["content"] for m in msgs))
    return _count(tokenizer, texts)


def target_lengths(tokenizer: Any, records: list[dict[str, Any]]) -> list[int]:
    """Tokens of each sample's target (the last reply): what psy.max_new_tokens must leave room for."""
    return _count(tokenizer, [to_messages(rec)[-1]["content"] for rec in records])


def _json_object(text: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def labels_of(kind: str, records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Label tasks: the distribution of each JSON label field, or of the answer itself; other tasks:
    of the records' `topic`, when they have one."""
    if kind == "label" and records and all("output" in r for r in records):
        objects = [_json_object(r["output"]) for r in records]
        if all(o is not None for o in objects):
            dist: dict[str, Counter] = {}
            for o in objects:
                for k, v in o.items():  # type: ignore[union-attr]
                    dist.setdefault(k, Counter())[str(v)] += 1
            return {k: dict(sorted(c.items())) for k, c in dist.items()}
        return {"label": dict(Counter(str(r["output"]) for r in records).most_common())}
    topics = Counter(r["topic"] for r in records if "topic" in r)
    return {"topic": dict(topics.most_common())} if topics else {}


def split_classes(folder: Path) -> tuple[str, dict[str, dict[str, int]], dict[str, Any]]:
    """(stratification field, split -> class -> samples summed over the sources, options) from a task's
    accounting (`classes`, written by tasks that stratify their split: student); ("", {}, {}) if none."""
    path = folder / "accounting.json"
    if not path.exists():
        return "", {}, {}
    field, totals, opts = "", {}, {}
    for acc in json.loads(path.read_text(encoding="utf-8")):
        opts = acc.get("options") or opts
        field = opts.get("stratify", field)
        for split, dist in (acc.get("classes") or {}).items():
            for cls, n in dist.items():
                totals.setdefault(split, {}).setdefault(cls, 0)
                totals[split][cls] += n
    return field, totals, opts


def _pct(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else 0


def _plot(task: str, lengths: dict[str, list[int]], cutoff: int, path: Path, tok_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for split, ls in lengths.items():
        if ls:
            ax.hist(ls, bins=50, alpha=0.6, label=f"{split} (n={len(ls)})")
    ax.axvline(cutoff, color="red", linestyle="--", label=f"cutoff_len={cutoff}")
    ax.set_xlabel(f"tokens ({tok_name})")
    ax.set_ylabel("samples")
    ax.set_title(f"{task}: sample length")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def data_report(tasks: list[str] | None, dataset_dir: Path, task_info: TaskInfo, *, label: str = "tiny",
                cutoff_len: int | None = None) -> dict[str, Any]:
    """`label` names the tokenizer in the report and the histogram file (lengths_<label>.png)."""
    from transformers import AutoTokenizer

    data = dataset_dir / "data"
    names = tasks or sorted(d.name for d in data.iterdir() if d.is_dir() and any(
        (d / f"{s}.jsonl").exists() for s in ("train", "eval"))) if data.is_dir() else tasks or []
    if not names:
        raise DataError(f"{dataset_dir / 'data'}: no prepared task found; run `make prep` first")
    out: dict[str, Any] = {}
    lines = [f"# Data report (tokenizer: {label})", "",
             "| task | split | n | tokens p50 | p95 | max | cutoff_len | truncated | target p50 | target p95 | target max |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in names:
        folder = dataset_dir / "data" / task
        if not any((folder / f"{s}.jsonl").exists() for s in ("train", "eval")):
            raise DataError(f"{folder}: no prepared split found; run `make prep TASK={task}` first")
        tok_path, cfg_cutoff, kind = task_info(task)
        cutoff = cutoff_len or cfg_cutoff or DEFAULT_CUTOFF
        tok = AutoTokenizer.from_pretrained(tok_path)
        splits = sorted(p.stem for p in folder.glob("*.jsonl") if p.stem in ("train", "eval", "val"))
        lengths: dict[str, list[int]] = {}
        info: dict[str, Any] = {"cutoff_len": cutoff, "tokenizer": str(tok_path), "splits": {}}
        for split in splits:
            recs = read_jsonl(folder / f"{split}.jsonl")
            ls = token_lengths(tok, recs)
            lengths[split] = ls
            srt, tgt = sorted(ls), sorted(target_lengths(tok, recs))
            trunc = sum(x > cutoff for x in ls) / len(ls) if ls else 0.0
            info["splits"][split] = {"n": len(recs), "tokens_p50": _pct(srt, 0.5), "tokens_p95": _pct(srt, 0.95),
                                     "tokens_max": srt[-1] if srt else 0, "truncated_share": round(trunc, 4),
                                     "target_p50": _pct(tgt, 0.5), "target_p95": _pct(tgt, 0.95),
                                     "target_max": tgt[-1] if tgt else 0, "labels": labels_of(kind, recs)}
            s = info["splits"][split]
            lines.append(f"| {task} | {split} | {s['n']} | {s['tokens_p50']} | {s['tokens_p95']} | {s['tokens_max']} "
                         f"| {cutoff} | {trunc:.1%} | {s['target_p50']} | {s['target_p95']} | {s['target_max']} |")
        png = folder / "report" / f"lengths_{label}.png"
        _plot(task, lengths, cutoff, png, Path(str(tok_path)).name)
        info["histogram"] = str(png.relative_to(dataset_dir))
        field, classes, opts = split_classes(folder)
        if classes:
            info["classes"] = {"field": field, "oversample_risk": opts.get("oversample_risk", 1), "splits": classes}
        atomic_write_json(folder / "report" / "report.json", info)
        out[task] = info
    for task, info in out.items():
        if "classes" in info:
            c = info["classes"]
            names = list(next(iter(c["splits"].values())))
            lines += ["", f"Class distribution of {task} (split stratified on `{c['field']}`; train oversampled "
                      f"x{c['oversample_risk']} for the risk classes)" if c["oversample_risk"] > 1 else
                      f"Class distribution of {task} (split stratified on `{c['field']}`)", "",
                      "| split | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for split, dist in c["splits"].items():
                n = sum(dist.values()) or 1
                lines.append(f"| {split} | " + " | ".join(f"{dist.get(k, 0)} ({dist.get(k, 0) / n:.0%})" for k in names)
                             + " |")
        for split, s in info["splits"].items():
            for field, dist in s["labels"].items():
                lines.append(f"\n{task}/{split} {field}: " + ", ".join(f"{k}={v}" for k, v in dist.items()))
    text = "\n".join(lines) + "\n"
    atomic_write_text(dataset_dir / "data" / "data_report.md", text)
    print(text)
    return out

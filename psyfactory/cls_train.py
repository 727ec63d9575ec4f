"""`METHOD=lora-cls`: LoRA on a sequence-classification head, trained with transformers' Trainer + peft.

Seed 003 trained `AutoModelForSequenceClassification` (a linear head on the last token) with LoRA r=8 /
alpha 16; LLaMA-Factory trains causal LMs only, so this small trainer runs that method on a run's
composed config (runs/<run>/train.yaml, the same flat keys: lora_rank / lora_alpha / lora_dropout /
lora_target, learning_rate, num_train_epochs or max_steps, batch sizes, warmup_steps, weight_decay,
lr_scheduler_type, seed, cutoff_len as the max length, dataset / eval_dataset / max_samples, save and
eval schedule, precision). The task's alpaca rows give the text (`input`, else `instruction`) and the
label (`output`); the labels are their sorted set, which for dair-ai Emotion is the seed's order (anger,
fear, joy, love, sadness, surprise). SIGUSR1 / Ctrl-C save a checkpoint and stop (exit 75), a rerun
resumes from the newest checkpoint.

    python -m psyfactory.cls_train runs/<run>/train.yaml

Besides the adapter (with the trained head) it writes `labels.json`, `inference_example.py` (runs as it
is: `python inference_example.py "some text"`) and `model_card.md` (intended use, data, training,
metrics with 95% intervals, limitations; `make eval` of the tuned variant adds the test metrics).
"""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from psyfactory.core.errors import PREEMPTED, PreflightError

LABELS_FILE = "labels.json"
CARD_STATE = "model_card.json"
EXAMPLE = "inference_example.py"


# ---------------------------------------------------------------------------- data


def read_rows(dataset: str, dataset_dir: Path, limit: int | None = None) -> list[tuple[str, str]]:
    """(text, label) of a registered alpaca dataset: the text is `input` (the text under assessment), else
    the instruction; the label is the response."""
    from psyfactory.core.files import read_jsonl
    from psyfactory.datasets import entry

    e, path = entry(dataset, dataset_dir)
    if e.get("formatting", "alpaca") != "alpaca":
        raise PreflightError(f"dataset '{dataset}': METHOD=lora-cls reads alpaca rows (text -> label), not "
                             f"{e.get('formatting')}")
    cols = e.get("columns", {})
    prompt, query, response = cols.get("prompt", "instruction"), cols.get("query", "input"), cols.get("response", "output")
    rows = []
    for n, rec in enumerate(read_jsonl(path), start=1):
        text = rec.get(query) or rec.get(prompt)
        label = rec.get(response)
        if not isinstance(text, str) or not isinstance(label, str) or not label.strip():
            raise PreflightError(f"{path}: line {n}: METHOD=lora-cls needs a text and a label (the '{response}' field)")
        rows.append((text, label.strip()))
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise PreflightError(f"{path}: no rows")
    return rows


def datasets(cfg: dict[str, Any], key: str) -> list[str]:
    value = cfg.get(key) or []
    return [d.strip() for d in (value.split(",") if isinstance(value, str) else value) if str(d).strip()]


def label_set(rows: list[tuple[str, str]]) -> list[str]:
    """The classes in the head's order: sorted (dair-ai Emotion: anger, fear, joy, love, sadness, surprise)."""
    labels = sorted({lab for _, lab in rows})
    if len(labels) < 2:
        raise PreflightError(f"METHOD=lora-cls needs at least two labels in the training data, found {labels}")
    return labels


# ---------------------------------------------------------------------------- model


def lora_targets(model: Any, target: Any) -> Any:
    """LF's `lora_target` for peft: `all` = every linear layer of the backbone (not the classification head)."""
    import torch

    names = [t.strip() for t in (target.split(",") if isinstance(target, str) else target)]
    if names != ["all"]:
        return names
    return sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
                  - {"score", "classifier", "lm_head"})


def load_classifier(base: str, labels: list[str], cfg: dict[str, Any] | None = None, adapter: str | Path | None = None,
                    dtype: Any = None) -> tuple[Any, Any]:
    """(tokenizer, model): the base model with a sequence-classification head for `labels`, and LoRA on it
    (new from `cfg`, or the trained `adapter`)."""
    import torch
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)},
        dtype=dtype or torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    if adapter is not None:
        return tok, PeftModel.from_pretrained(model, str(adapter))
    assert cfg is not None
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=int(cfg.get("lora_rank", 8)), lora_alpha=int(cfg.get("lora_alpha", 16)),
                      lora_dropout=float(cfg.get("lora_dropout", 0.0)),
                      target_modules=lora_targets(model, cfg.get("lora_target", "all")))
    return tok, get_peft_model(model, lora)


def predict(model: Any, tok: Any, texts: list[str], max_length: int, batch_size: int = 16) -> list[list[float]]:
    """Log-probabilities of the classes, one list per text."""
    import torch

    out: list[list[float]] = []
    model.eval()
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i: i + batch_size], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        enc = {k: v.to(model.device) for k, v in enc.items()}
        with torch.inference_mode():
            logits = model(**enc).logits.float()
        out.extend(torch.log_softmax(logits, dim=-1).tolist())
    return out


# ---------------------------------------------------------------------------- metrics and the card


def metrics(gold: list[str], pred: list[str], labels: list[str], resamples: int = 2000) -> dict[str, Any]:
    """Accuracy (Wilson 95% interval) and macro-F1 (percentile bootstrap 95% interval over items, seeded)."""
    import numpy as np
    from sklearn.metrics import f1_score

    from psyfactory.plugins.base import wilson_ci

    n, k = len(gold), sum(g == p for g, p in zip(gold, pred, strict=True))
    f1 = float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))
    rng = np.random.default_rng(0)
    g, p = np.asarray(gold), np.asarray(pred)
    boots = [f1_score(g[idx], p[idx], labels=labels, average="macro", zero_division=0)
             for idx in (rng.integers(0, n, n) for _ in range(resamples))] if n else [0.0]
    return {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "accuracy_ci95": list(wilson_ci(k, n)),
            "macro_f1": f1, "macro_f1_ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]}


def write_card(adapter: Path, **update: Any) -> Path:
    """model_card.md from the card's state (model_card.json), updated with `update` (e.g. test=metrics)."""
    from psyfactory.core.files import atomic_write_json, atomic_write_text

    state_file = adapter / CARD_STATE
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
    state.update(update)
    atomic_write_json(state_file, state)

    def figures(m: dict[str, Any] | None, what: str) -> str:
        if not m:
            return f"- {what}: not measured yet (`make eval RUN={state.get('run')}`)" if what.startswith("test") else \
                f"- {what}: not measured (no eval_dataset in the training config)"
        a, f = m["accuracy_ci95"], m["macro_f1_ci95"]
        return (f"- {what} (n = {m['n']}): accuracy **{m['accuracy']:.4f}** (95% Wilson interval {a[0]:.4f}–{a[1]:.4f}), "
                f"macro-F1 **{m['macro_f1']:.4f}** (95% bootstrap interval {f[0]:.4f}–{f[1]:.4f})")

    t = state.get("training", {})
    lines = [
        f"# Model card: {state.get('run')} (sequence classifier, LoRA)", "",
        "## Intended use",
        f"Classifies the emotion (or other single label) of one short English text into one of {len(state.get('labels', []))} "
        f"classes: {', '.join(state.get('labels', []))}. For research on emotion recognition and as a component that a "
        "person reviews; not a diagnostic or a mental-health assessment, and not for decisions about individuals.", "",
        "## Model",
        f"- base: `{state.get('base')}` with a linear classification head on the last token "
        "(AutoModelForSequenceClassification); LoRA on the backbone "
        f"(r={t.get('lora_rank')}, alpha={t.get('lora_alpha')}, dropout={t.get('lora_dropout')}, targets "
        f"{t.get('lora_target')}); the head is trained in full.",
        f"- the classes in the head's order (id 0..{len(state.get('labels', [])) - 1}): {', '.join(state.get('labels', []))}",
        f"- inputs are truncated at {t.get('max_length')} tokens", "",
        "## Data",
        f"- training: `{state.get('train_dataset')}` ({state.get('train_rows')} rows); the text is the alpaca `input`, the "
        "label its `output`",
        f"- validation: `{state.get('eval_dataset') or 'none'}`", f"- test: `{state.get('test_dataset') or 'the task eval split'}`", "",
        "## Training",
        f"- {t.get('epochs')} epoch(s) / max_steps {t.get('max_steps')}, batch {t.get('batch')} x accumulation "
        f"{t.get('accumulation')}, learning rate {t.get('learning_rate')} ({t.get('scheduler')} schedule, warmup "
        f"{t.get('warmup_steps')}), weight decay {t.get('weight_decay')}, seed {t.get('seed')}, {t.get('precision')}",
        f"- {t.get('steps')} optimizer steps, {t.get('seconds', 0):.0f} s", "",
        "## Metrics",
        figures(state.get("validation"), "validation split"),
        figures(state.get("test"), "test split"), "",
        "## Limitations",
        "- Trained on one English source (dair-ai Emotion: short social-media sentences, labels from hashtags, "
        "imbalanced: surprise ~3.6%); other languages, domains and long texts are out of distribution.",
        "- One label per text: mixed or absent emotions are forced into a class; the intervals above cover sampling "
        "error on the test items, not this.",
        "- Per-class quality differs (see the eval report's per-class table and confusion matrix); rare classes are "
        "the weakest.",
        "- Not a clinical instrument: emotion words are not symptoms, and no crisis or risk detection is done.", "",
        f"Inference: `python {EXAMPLE} \"some text\"` (in this folder).",
    ]
    path = adapter / "model_card.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


EXAMPLE_TEXT = '''"""Inference example for this classifier (written by psyfactory.cls_train): the base model with its
sequence-classification head and the LoRA adapter in this folder; each text is truncated at {max_length}
tokens and the argmax of the head is mapped to the labels in labels.json.

    python inference_example.py "I'm so happy today!" "I feel scared of the dark."
    python inference_example.py --base /path/to/base-model "..."
"""

import argparse
import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

HERE = Path(__file__).resolve().parent
BASE = {base!r}


def classify(texts, base=BASE, adapter=HERE):
    labels = json.loads((Path(adapter) / "labels.json").read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(labels))
    model.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    inputs = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length={max_length})
    with torch.inference_mode():
        predictions = model(**inputs).logits.argmax(dim=-1)
    return [labels[i] for i in predictions.tolist()]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="classify texts")
    ap.add_argument("texts", nargs="+")
    ap.add_argument("--base", default=BASE, help="the base model folder (default: the one it was trained on)")
    args = ap.parse_args()
    for text, label in zip(args.texts, classify(args.texts, args.base)):
        print(f"{{label}}\\t{{text}}")
'''


# ---------------------------------------------------------------------------- training


def train(cfg: dict[str, Any], *, run: str = "") -> dict[str, Any]:
    """Train on the config; returns the training summary (also in the adapter folder)."""
    import time

    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from psyfactory.core.files import atomic_write_json, atomic_write_text
    from psyfactory.lf_train import STOP_FILE, CheckpointOnSignal
    from psyfactory.resume import checkpoints

    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    dataset_dir = Path(cfg["dataset_dir"])
    limit = cfg.get("max_samples")
    max_length = int(cfg.get("cutoff_len") or 512)
    set_seed(int(cfg.get("seed", 42)))
    train_rows = [r for d in datasets(cfg, "dataset") for r in read_rows(d, dataset_dir, limit)]
    labels = label_set(train_rows)
    eval_rows = [r for d in datasets(cfg, "eval_dataset") for r in read_rows(d, dataset_dir, limit)]
    unknown = sorted({lab for _, lab in eval_rows} - set(labels))
    if unknown:
        raise PreflightError(f"eval_dataset: labels {unknown} do not occur in the training data")
    precision = "bf16" if cfg.get("bf16") else "fp16" if cfg.get("fp16") else "fp32"
    tok, model = load_classifier(cfg["model_name_or_path"], labels, cfg)
    index = {lab: i for i, lab in enumerate(labels)}

    def encode(rows: list[tuple[str, str]]) -> list[dict[str, Any]]:
        enc = tok([t for t, _ in rows], truncation=True, max_length=max_length)
        return [{"input_ids": ids, "attention_mask": m, "labels": index[lab]}
                for ids, m, (_, lab) in zip(enc["input_ids"], enc["attention_mask"], rows, strict=True)]

    def compute(pred: Any) -> dict[str, float]:
        from sklearn.metrics import f1_score

        guess = pred.predictions.argmax(-1)
        return {"accuracy": float((guess == pred.label_ids).mean()),
                "macro_f1": float(f1_score(pred.label_ids, guess, average="macro", labels=list(range(len(labels))),
                                           zero_division=0))}

    strategy = str(cfg.get("eval_strategy") or "no") if eval_rows else "no"
    args = TrainingArguments(
        output_dir=str(out), num_train_epochs=float(cfg.get("num_train_epochs", 3)), max_steps=int(cfg.get("max_steps", -1)),
        per_device_train_batch_size=int(cfg.get("per_device_train_batch_size", 8)),
        per_device_eval_batch_size=int(cfg.get("per_device_eval_batch_size", 8)),
        gradient_accumulation_steps=int(cfg.get("gradient_accumulation_steps", 1)),
        learning_rate=float(cfg.get("learning_rate", 2e-4)), weight_decay=float(cfg.get("weight_decay", 0.0)),
        warmup_steps=cfg.get("warmup_steps", 0), lr_scheduler_type=str(cfg.get("lr_scheduler_type", "linear")),
        seed=int(cfg.get("seed", 42)), logging_steps=int(cfg.get("logging_steps", 10)),
        save_steps=int(cfg.get("save_steps", 500)), save_total_limit=cfg.get("save_total_limit"),
        eval_strategy=strategy, eval_steps=cfg.get("eval_steps"), load_best_model_at_end=bool(
            cfg.get("load_best_model_at_end")) and strategy != "no",
        metric_for_best_model=cfg.get("metric_for_best_model"), bf16=bool(cfg.get("bf16")), fp16=bool(cfg.get("fp16")),
        report_to=cfg.get("report_to") or "none", dataloader_num_workers=int(cfg.get("dataloader_num_workers", 0)),
        optim=str(cfg.get("optim", "adamw_torch")), gradient_checkpointing=not cfg.get("disable_gradient_checkpointing", True),
        gradient_checkpointing_kwargs={"use_reentrant": False},
        max_grad_norm=float(cfg.get("max_grad_norm", 1.0)), remove_unused_columns=False)
    cb = CheckpointOnSignal(out / STOP_FILE)  # runner creates it on SIGUSR1 / Ctrl-C
    signal.signal(signal.SIGUSR1, cb.request)
    signal.signal(signal.SIGINT, cb.request)
    trainer = Trainer(model=model, args=args, train_dataset=encode(train_rows),
                      eval_dataset=encode(eval_rows) if strategy != "no" else None,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute, callbacks=[cb])
    resume = None
    if not cfg.get("overwrite_output_dir") and (ckpts := checkpoints(out)):
        resume = str(ckpts[-1])
        print(f"[psyfactory] resuming from {resume}", flush=True)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    if cb.requested:
        return {"stopped": True, "step": cb.saved_step}
    trainer.save_model(str(out))  # the adapter with the head (peft's modules_to_save)
    trainer.save_state()
    tok.save_pretrained(str(out))
    atomic_write_json(out / LABELS_FILE, labels)
    atomic_write_json(out / "train_results.json", {**result.metrics, "labels": labels, "train_rows": len(train_rows)})
    atomic_write_text(out / EXAMPLE, EXAMPLE_TEXT.format(base=str(cfg["model_name_or_path"]), max_length=max_length))
    validation = None
    if eval_rows:
        logps = predict(trainer.model, tok, [t for t, _ in eval_rows], max_length)
        pred = [labels[max(range(len(lp)), key=lp.__getitem__)] for lp in logps]
        validation = metrics([lab for _, lab in eval_rows], pred, labels)
    write_card(out, run=run or out.parent.name, base=str(cfg["model_name_or_path"]), labels=labels,
               train_dataset=cfg.get("dataset"), train_rows=len(train_rows), eval_dataset=cfg.get("eval_dataset"),
               validation=validation, training={
                   "lora_rank": cfg.get("lora_rank"), "lora_alpha": cfg.get("lora_alpha"),
                   "lora_dropout": cfg.get("lora_dropout"), "lora_target": cfg.get("lora_target"),
                   "max_length": max_length, "epochs": cfg.get("num_train_epochs"), "max_steps": cfg.get("max_steps", -1),
                   "batch": args.per_device_train_batch_size, "accumulation": args.gradient_accumulation_steps,
                   "learning_rate": args.learning_rate, "scheduler": args.lr_scheduler_type.value
                   if hasattr(args.lr_scheduler_type, "value") else str(args.lr_scheduler_type),
                   "warmup_steps": cfg.get("warmup_steps", 0), "weight_decay": args.weight_decay, "seed": args.seed,
                   "precision": precision, "steps": trainer.state.global_step, "seconds": seconds})
    if not math.isfinite(float(result.training_loss)):
        raise RuntimeError(f"training loss is {result.training_loss}")
    return {"stopped": False, "labels": labels, "steps": trainer.state.global_step, "loss": result.training_loss,
            "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu"))}


def merge(adapter: Path, base: str, export_dir: Path) -> Path:
    """The adapter merged into the base classifier, saved as a plain AutoModelForSequenceClassification."""
    labels = json.loads((adapter / LABELS_FILE).read_text(encoding="utf-8"))
    tok, model = load_classifier(base, labels, adapter=adapter)
    merged = model.merge_and_unload()
    export_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(export_dir))
    tok.save_pretrained(str(export_dir))
    return export_dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m psyfactory.cls_train <train.yaml>", file=sys.stderr)
        return 2
    path = Path(argv[0])
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    from psyfactory.core.paths import runs_root

    run_dir = path.resolve().parent
    res = train(cfg, run=run_dir.relative_to(runs_root().resolve()).as_posix()
                if run_dir.is_relative_to(runs_root().resolve()) else run_dir.name)
    if res.get("stopped"):
        print(f"[psyfactory] stopped early at step {res['step']}: rerun the same command to resume", flush=True)
        return PREEMPTED
    print(f"[psyfactory] lora-cls: {res['steps']} steps, loss {res['loss']:.4f}, labels {', '.join(res['labels'])}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

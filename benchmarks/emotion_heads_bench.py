"""Benchmark: seed 003's two ways to train an emotion classifier, on one model and the same test items
(`make bench-emotion-heads`).

* label word (`METHOD=lora`, recipe seed003-emotion-labelword): LLaMA-Factory SFT teaches the causal LM to
  answer the label word; scored by the six labels' log-likelihood;
* classification head (`METHOD=lora-cls`, recipe seed003-emotion): AutoModelForSequenceClassification +
  LoRA through transformers' Trainer and peft; scored by the head's class probabilities.

Both train briefly with the same steps and batch (each at its own learning rate: a head trained from
scratch needs a larger one), both are evaluated on the first N test items with the base model's zero-shot
label log-likelihood as the common base; prints accuracy and macro-F1 (95% intervals), the exact McNemar
test of each against the base and between the two, and writes the figures as JSON. Everything runs through
the CLI in this process, into a workspace of its own (default: a temporary folder).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/emotion_heads_bench.py --model smollm2-135m --steps 40 \\
        --limit 300 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cli(*args: str) -> None:
    from psyfactory.cli import main

    rc = main(list(args))
    if rc != 0:
        raise SystemExit(f"psyfactory {' '.join(args)} failed ({rc})")


def items(run_dir: Path, variant: str) -> dict[str, dict[str, Any]]:
    path = run_dir / "eval" / variant / "classification_items.jsonl"
    return {it["id"]: it for it in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--raw-dir", default="../shared/datasets", help="a raw folder with emotion/{train,val,test}.txt")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr-word", type=float, default=5e-4, help="learning rate of the label-word run")
    ap.add_argument("--lr-head", type=float, default=3e-3, help="learning rate of the classification-head run")
    ap.add_argument("--train-rows", type=int, default=2000, help="max_samples of the training split")
    ap.add_argument("--limit", type=int, default=300, help="the first N test items")
    ap.add_argument("--hw", default="cpu")
    ap.add_argument("--workdir", default=None, help="dataset and runs folder (default: a temporary one)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    from sklearn.metrics import f1_score

    from psyfactory.plugins.base import mcnemar_exact, wilson_ci

    with contextlib.ExitStack() as stack:
        work = Path(args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="emotion-heads-")))
        (work / "ds").mkdir(parents=True, exist_ok=True)
        os.environ.update(PSY_DATASET_DIR=str(work / "ds"), PSY_RUNS_DIR=str(work / "runs"))
        cli("prep", "--task", "emotion", "--raw-dir", args.raw_dir)
        common = [f"max_steps={args.steps}", f"per_device_train_batch_size={args.batch}", "gradient_accumulation_steps=1",
                  f"max_samples={args.train_rows}", f"save_steps={args.steps}", "logging_steps=5"]
        runs = {"label word": ("lora", args.lr_word), "classification head": ("lora-cls", args.lr_head)}
        seconds: dict[str, float] = {}
        for name, (method, lr) in runs.items():
            t0 = time.perf_counter()
            cli("train", "--model", args.model, "--task", "emotion", "--method", method, "--hw", args.hw,
                "--run", f"heads/{method}", *common, f"learning_rate={lr}")
            seconds[f"train {name}"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            cli("eval", "--run", f"heads/{method}", "--hw", args.hw, "--limit", str(args.limit))
            seconds[f"eval {name}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cli("eval", "--run", "heads/lora", "--hw", args.hw, "--limit", str(args.limit), "--base")
        seconds["eval base"] = time.perf_counter() - t0
        root = work / "runs" / "heads"
        got = {"base": items(root / "lora", "base"), "label word": items(root / "lora", "tuned"),
               "classification head": items(root / "lora-cls", "tuned")}
        ids = sorted(set.intersection(*(set(v) for v in got.values())))
        gold = [got["base"][i]["reference"] for i in ids]
        labels = sorted(set(gold))
        rng = np.random.default_rng(0)
        out: dict[str, Any] = {"model": args.model, "steps": args.steps, "batch": args.batch, "lr_word": args.lr_word,
                               "lr_head": args.lr_head, "train_rows": args.train_rows, "n": len(ids),
                               "python": platform.python_version(), "threads": os.environ.get("OMP_NUM_THREADS"),
                               "seconds": seconds, "variants": {}, "mcnemar": {}}
        for name, recs in got.items():
            pred = np.array([recs[i]["label"] or "(invalid)" for i in ids])
            g = np.array(gold)
            k = int((pred == g).sum())
            f1 = float(f1_score(g, pred, labels=labels, average="macro", zero_division=0))
            boots = [f1_score(g[idx], pred[idx], labels=labels, average="macro", zero_division=0)
                     for idx in (rng.integers(0, len(ids), len(ids)) for _ in range(2000))]
            out["variants"][name] = {"accuracy": k / len(ids), "correct": k, "accuracy_ci95": list(wilson_ci(k, len(ids))),
                                     "macro_f1": f1, "macro_f1_ci95": [float(np.percentile(boots, 2.5)),
                                                                       float(np.percentile(boots, 97.5))]}
        for a, b in (("base", "label word"), ("base", "classification head"), ("label word", "classification head")):
            t = mcnemar_exact([got[a][i]["correct"] for i in ids], [got[b][i]["correct"] for i in ids])
            out["mcnemar"][f"{b} vs {a}"] = t
    if args.json:
        from psyfactory.core.files import atomic_write_json

        atomic_write_json(Path(args.json), out)
    print(f"\n{args.model}: {args.steps} steps x {args.batch}, first {len(ids)} test items\n")
    print("| variant | accuracy (95% CI) | macro-F1 (95% CI) |\n|---|---|---|")
    for name, v in out["variants"].items():
        a, f = v["accuracy_ci95"], v["macro_f1_ci95"]
        print(f"| {name} | {v['accuracy']:.3f} ({a[0]:.3f}-{a[1]:.3f}) | {v['macro_f1']:.3f} ({f[0]:.3f}-{f[1]:.3f}) |")
    print("\n| comparison | Δ accuracy | only first right | only second right | McNemar p |\n|---|---|---|---|---|")
    for name, t in out["mcnemar"].items():
        print(f"| {name} | {t['diff']:+.3f} | {t['only_a']} | {t['only_b']} | {t['p_value']:.2g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""METHOD=lora-cls on the real CPU model (SmolLM2-135M-Instruct): seed 003's method, a sequence-classification
head with LoRA through transformers' Trainer and peft, as a run like any other (manifest, run folder, eval
variants, compare, merge). A short run on the shared dair-ai Emotion sample beats its base (the base model's
zero-shot label log-likelihood) on macro-F1 by a paired bootstrap over the same test items, and on accuracy by
McNemar; the model card carries the test metrics with intervals and the inference example it writes runs.

Measured on this repo's CPU machine (60 steps x 8 examples, lr 3e-3, first 100 test items): base accuracy
0.13 / macro-F1 0.171, tuned 0.62 / 0.428 (macro-F1 +0.257, paired bootstrap 95% interval +0.142..+0.394);
40 steps gave +0.108 with an interval reaching below 0, too close to call. Asserted: macro-F1 +0.10 with the
paired bootstrap's interval above 0, and McNemar p < 0.01. About 3-4 min of one CPU core (training 2.5 of
them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from psyutil import cli, real_model_workspace

from psyfactory.core.paths import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.real]  # it learns on real weights: `make test-real`
SHARED = REPO_ROOT.parent / "shared" / "datasets"
RUN = "smollm2/emotion-cls"
TRAIN = ["max_steps=60", "per_device_train_batch_size=8", "learning_rate=3e-3", "max_samples=2000", "save_steps=60",
         "logging_steps=5"]
N_EVAL = "100"
SEED_ORDER = ["anger", "fear", "joy", "love", "sadness", "surprise"]  # seed 003's inference example


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (SHARED / "emotion" / "train.txt").is_file():
        pytest.skip(f"the dair-ai Emotion sample is not at {SHARED / 'emotion'}")
    root = tmp_path_factory.mktemp("lora_cls")
    with real_model_workspace(root, threads=1):  # one thread: the machine is shared
        cli("prep", "--task", "emotion", "--raw-dir", str(SHARED))
        cli("train", "--model", "smollm2-135m", "--task", "emotion", "--method", "lora-cls", "--hw", "cpu", "--run", RUN,
            *TRAIN)
        cli("eval", "--run", RUN, "--base", "--limit", N_EVAL, "--hw", "cpu")
        cli("eval", "--run", RUN, "--limit", N_EVAL, "--hw", "cpu")
        cli("compare", "--run", RUN)
        yield root / "runs" / RUN


def _items(run: Path, variant: str) -> dict[str, dict]:
    lines = (run / "eval" / variant / "classification_items.jsonl").read_text(encoding="utf-8").splitlines()
    return {it["id"]: it for it in map(json.loads, lines)}


def test_the_classifier_beats_its_base_on_macro_f1_by_a_paired_test(trained: Path) -> None:
    import numpy as np
    from sklearn.metrics import f1_score

    from psyfactory.plugins.base import mcnemar_exact

    manifest = json.loads((trained / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["run"]["method"] == "lora-cls" and manifest["stages"]["train"]["status"] == "done"
    assert "python -m psyfactory.cls_train" in (trained / "train.yaml").read_text(encoding="utf-8")
    tuned = json.loads((trained / "eval" / "tuned" / "metrics.json").read_text(encoding="utf-8"))
    base = json.loads((trained / "eval" / "base" / "metrics.json").read_text(encoding="utf-8"))
    assert (tuned["backend"], base["backend"]) == ("hf-seqcls", "hf")  # the head; the base model's label words
    t_items, b_items = _items(trained, "tuned"), _items(trained, "base")
    ids = sorted(set(t_items) & set(b_items))
    assert len(ids) == int(N_EVAL)
    gold = np.array([t_items[i]["reference"] for i in ids])
    t_pred, b_pred = np.array([t_items[i]["label"] for i in ids]), np.array([b_items[i]["label"] for i in ids])
    labels = sorted(set(gold) | set(t_pred) | set(b_pred))

    def f1(pred, idx):
        return f1_score(gold[idx], pred[idx], labels=labels, average="macro", zero_division=0)

    rng = np.random.default_rng(42)
    full = np.arange(len(ids))
    diff = f1(t_pred, full) - f1(b_pred, full)
    boots = [f1(t_pred, idx) - f1(b_pred, idx) for idx in (rng.integers(0, len(ids), len(ids)) for _ in range(2000))]
    assert diff >= 0.10 and np.percentile(boots, 2.5) > 0, (diff, np.percentile(boots, [2.5, 97.5]))
    assert diff == pytest.approx(tuned["plugins"]["classification"]["macro_f1"] - base["plugins"]["classification"]["macro_f1"])
    test = mcnemar_exact([b_items[i]["correct"] for i in ids], [t_items[i]["correct"] for i in ids])
    assert test["diff"] > 0 and test["p_value"] < 0.01, test
    md = (trained.parents[1] / "compare.md").read_text(encoding="utf-8")
    assert "| smollm2/emotion-cls | tuned | smollm2/emotion-cls · base | classification | label |" in md


def test_card_labels_and_inference_example(trained: Path) -> None:
    adapter = trained / "adapter"
    assert json.loads((adapter / "labels.json").read_text(encoding="utf-8")) == SEED_ORDER
    card = (adapter / "model_card.md").read_text(encoding="utf-8")
    for heading in ("## Intended use", "## Data", "## Metrics", "## Limitations"):
        assert heading in card
    assert f"test split (n = {N_EVAL}): accuracy **" in card and "95% Wilson interval" in card
    assert "95% bootstrap interval" in card
    texts = ["I am so happy and grateful today", "I feel terrified walking home alone at night"]
    proc = subprocess.run([sys.executable, str(adapter / "inference_example.py"), *texts], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = [line.split("\t") for line in proc.stdout.strip().splitlines()]
    assert [t for _, t in out] == texts and all(label in SEED_ORDER for label, _ in out)


def test_merge_gives_the_same_classifier(trained: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from psyfactory.cls_train import load_classifier

    cli("merge", "--run", RUN, "--hw", "cpu")
    merged = trained / "merged"
    texts = ["i feel so alone", "i am thrilled about the trip", "that was a strange surprise"]
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    base = json.loads((trained / "manifest.json").read_text(encoding="utf-8"))["stages"]["train"]["config"][
        "model_name_or_path"]
    _, adapted = load_classifier(base, SEED_ORDER, adapter=trained / "adapter")
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        a, b = model(**enc).logits, adapted.eval()(**enc).logits
    assert torch.allclose(a, b, atol=1e-4) and model.config.id2label[0] == "anger"

"""CPU part of the training benchmark: padding share and tokens per step, plain vs tuned (packing)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from psyfactory.core import paths

pytestmark = pytest.mark.slow


def _varied_dialogues(path, n: int = 48) -> None:
    rng = random.Random(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            msgs = [{"role": "system", "content": "你是一位心理咨询师。"}]
            for _ in range(rng.randint(1, 6)):
                msgs.append({"role": "user", "content": "我最近学习压力很大。" * rng.randint(1, 4)})
                msgs.append({"role": "assistant", "content": "谢谢你愿意说出来，我们慢慢聊。" * rng.randint(1, 3)})
            fh.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")


def test_packing_cuts_padding_and_raises_tokens_per_step(workspace, tiny_model):
    _varied_dialogues(workspace / "dataset" / "data" / "psydt" / "train.jsonl")
    out = workspace / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(paths.REPO_ROOT / "benchmarks" / "train_bench.py"), "--model", "tiny", "--hw", "cpu",
         "--steps", "5", "--warmup", "1", "--cutoff", "512", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "tuned/plain" in proc.stdout
    report = json.loads(out.read_text())
    plain, tuned = report["variants"]["plain"], report["variants"]["tuned"]
    assert plain["steps_timed"] == tuned["steps_timed"] == 4
    assert plain["padding_share"] > 0.15 and tuned["padding_share"] < plain["padding_share"] / 2
    assert tuned["tokens_per_step"] > plain["tokens_per_step"]
    # Packing puts several dialogues in a row: more samples than rows per step.
    assert tuned["samples"] > 4 * 2
    assert len(plain["losses"]) == len(tuned["losses"]) == 5
    assert report["peak_bf16_flops"] is None and plain["mfu"] is None  # CPU: no MFU claimed

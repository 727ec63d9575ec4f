"""Fixtures for the Slurm tests: a real single-node cluster (session-wide), an isolated workspace
(runs, dataset, logs, HF cache in tmp) and a cluster profile for CPU jobs on fake A40s."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from localcluster import LocalSlurm, ensure_installed  # noqa: E402


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        pytest.skip("a local Slurm needs root (munged runs as the munge user, slurmd as root)")
    reason = ensure_installed()
    if reason:
        pytest.skip(reason)
    c = LocalSlurm(tmp_path_factory.mktemp("slurm-cluster"))
    t0 = time.monotonic()
    c.start()
    print(f"\n[slurm] local cluster ready in {time.monotonic() - t0:.1f}s ({c.root})")
    yield c
    c.stop()


def write_dataset(root: Path, n_train: int = 48) -> None:
    """A small multi-turn sharegpt set registered as psydt_train / psydt_eval (contract format)."""
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
            "assistant_tag": "assistant", "system_tag": "system"}
    info = {f"psydt_{s}": {"file_name": f"data/psydt/{s}.jsonl", "formatting": "sharegpt",
                           "columns": {"messages": "messages"}, "tags": tags} for s in ("train", "eval")}
    (root / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    out = root / "data" / "psydt"
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("eval", 4)):
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(n):
                msgs = [
                    {"role": "system", "content": "你是一位以来访者为中心的心理咨询师。"},
                    {"role": "user", "content": f"老师，我第{i}次考试没考好，晚上总是睡不着。"},
                    {"role": "assistant", "content": "听起来这次考试让你压力很大，你愿意多说一些吗？"},
                    {"role": "user", "content": "我怕爸妈失望，也怕同学看不起我。"},
                    {"role": "assistant", "content": "担心别人的看法是很常见的感受，我们一起慢慢梳理。"},
                ]
                fh.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")


@pytest.fixture
def slurm_ws(slurm_cluster: LocalSlurm, tmp_path: Path) -> dict[str, str]:
    """Environment for CLI calls: this cluster, runs/dataset/logs/HF cache under tmp_path, CPU profile."""
    ds = tmp_path / "dataset"
    ds.mkdir()
    write_dataset(ds)
    profile = {
        "hw": "cpu", "cpus_per_gpu": 1, "mem_per_gpu": "2G", "time": "00:20:00", "omp_threads": 1,
        "env_setup": "source {repo}/.venv/bin/activate",
        "hf_home": str(tmp_path / "hf"), "log_dir": str(tmp_path / "logs"), "signal_secs": 60,
        "stages": {s: {"gpus": 0, "cpus": 1, "mem": "2G", "time": "00:10:00"} for s in ("merge", "gguf", "eval")},
    }
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile), encoding="utf-8")
    return {
        **slurm_cluster.env(),
        "PSY_SLURM_PROFILE": str(tmp_path / "profile.yaml"),
        "PSY_DATASET_DIR": str(ds),
        "PSY_RUNS_DIR": str(tmp_path / "runs"),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }



"""Fixtures for the Slurm tests: a real single-node cluster (session-wide), an isolated workspace
(runs, dataset, logs, HF cache in tmp) and a cluster profile for CPU jobs on fake A40s."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from localcluster import LocalSlurm, ensure_installed  # noqa: E402
from psyutil import write_psydt_like  # noqa: E402


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


@pytest.fixture
def slurm_ws(slurm_cluster: LocalSlurm, tmp_path: Path) -> dict[str, str]:
    """Environment for CLI calls: this cluster, runs/dataset/logs/HF cache under tmp_path, CPU profile."""
    ds = tmp_path / "dataset"
    ds.mkdir()
    write_psydt_like(ds, n_train=48)
    profile = {
        "hw": "cpu", "cpus_per_gpu": 1, "mem_per_gpu": "2G", "time": "00:20:00", "omp_threads": 1,
        "env_setup": "source {repo}/.venv/bin/activate",
        "hf_home": str(tmp_path / "hf"), "log_dir": str(tmp_path / "logs"), "signal_secs": 60,
        "stages": {s: {"gpus": 0, "cpus": 1, "mem": "2G", "time": "00:10:00"} for s in ("merge", "gguf", "eval", "eval-gguf")},
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



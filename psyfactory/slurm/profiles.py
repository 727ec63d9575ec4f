"""The cluster profile: `slurm/profile.yaml` < ~/.config/psyfactory/slurm.yaml < slurm/profile.local.yaml
< $PSY_SLURM_PROFILE < `--set key=value`, deep-merged with OmegaConf (as the config layers are)."""

from __future__ import annotations

import getpass
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from psyfactory.core import paths, settings
from psyfactory.core.errors import SlurmError

STAGES = ("teacher", "train", "merge", "gguf", "eval", "eval-gguf")  # pipeline order
DEFAULT_STAGES = ("train", "merge", "gguf", "eval", "eval-gguf")  # teacher: opt-in (STAGES=teacher,train,...)
# What each stage reads, so what it waits for (afterok): eval reads the adapter, not the merged model, so a
# failed GGUF conversion cancels only the GGUF evaluation. A stage absent from the chain passes its place on.
DEPENDS = {"teacher": None, "train": "teacher", "merge": "train", "gguf": "merge", "eval": "train",
           "eval-gguf": "gguf"}


def parent_stage(stage: str, chain: tuple[str, ...]) -> str | None:
    """The stage of `chain` that `stage` waits for: its nearest ancestor in DEPENDS that is in the chain."""
    up = DEPENDS[stage]
    while up is not None and up not in chain:
        up = DEPENDS[up]
    return up
SLURM_DIR = paths.SLURM_DIR  # the job templates and the default profile (the package's own)
PROFILE_ENV = "PSY_SLURM_PROFILE"
PROFILE_KEYS = {
    "partition", "account", "qos", "gres", "cpus_per_gpu", "mem_per_gpu", "time", "hw", "env_setup",
    "hf_home", "log_dir", "requeue", "signal_secs", "master_port", "omp_threads", "nproc_per_node",
    "extra_sbatch", "extra_env", "stages", "launcher", "gpus_per_node",
}
STAGE_KEYS = {"gpus", "cpus", "mem", "time", "partition", "qos", "account", "args"}


def profile_files() -> list[Path]:
    """Profile layers that exist, lowest priority first."""
    files = [
        SLURM_DIR / "profile.yaml",
        Path.home() / ".config" / "psyfactory" / "slurm.yaml",
        paths.work_dir() / "slurm" / "profile.local.yaml",  # in a checkout: slurm/profile.local.yaml (gitignored)
    ]
    env_file = settings.path(PROFILE_ENV)
    if env_file is not None:
        if not env_file.is_file():
            raise SlurmError(f"${PROFILE_ENV}={env_file}: no such file")
        files.append(env_file)
    return [f for f in files if f.is_file()]


def _check_layer(data: Any, source: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SlurmError(f"{source}: top level must be a mapping of profile keys")
    unknown = sorted(set(data) - PROFILE_KEYS)
    if unknown:
        raise SlurmError(f"{source}: unknown profile key(s) {', '.join(unknown)}; valid: {', '.join(sorted(PROFILE_KEYS))}")
    for stage, res in (data.get("stages") or {}).items():
        if stage not in STAGES:
            raise SlurmError(f"{source}: stages.{stage}: unknown stage; valid: {', '.join(STAGES)}")
        bad = sorted(set(res or {}) - STAGE_KEYS)
        if bad:
            raise SlurmError(f"{source}: stages.{stage}: unknown key(s) {', '.join(bad)}; valid: {', '.join(sorted(STAGE_KEYS))}")
    return data


def load_profile(sets: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Merge the profile layers, then `key=value` settings (dotted keys reach into `stages`)."""
    layers: list[dict[str, Any]] = []
    for f in profile_files():
        try:
            data = yaml.safe_load(f.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise SlurmError(f"{f}: invalid YAML: {' '.join(str(e).split())}") from None
        layers.append(_check_layer(data, str(f)))
    for item in sets:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise SlurmError(f"--set expects key=value, got {item!r}")
        try:
            node = OmegaConf.to_container(OmegaConf.from_dotlist([item]), resolve=False)
        except Exception as e:  # omegaconf grammar errors
            raise SlurmError(f"--set {item}: {' '.join(str(e).split())}") from None
        layers.append(_check_layer(node, f"--set {item}"))
    merged = OmegaConf.merge(*(OmegaConf.create(layer) for layer in layers)) if layers else OmegaConf.create({})
    return OmegaConf.to_container(merged, resolve=False)  # type: ignore[return-value]  # $VARS stay for the shell


def parse_mem_mb(value: Any, source: str) -> int:
    """'60G' / '512M' / '1T' / 4096 (MB) -> megabytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(value), re.IGNORECASE)
    if not m:
        raise SlurmError(f"{source}: memory must look like 60G, 512M or a number of MB, got {value!r}")
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2).upper()]
    return max(1, int(float(m.group(1)) * scale))


def expand(value: str) -> str:
    """{repo} (the checkout; installed: the working folder) and {user} placeholders of profile values."""
    return str(value).replace("{repo}", str(paths.work_dir())).replace("{user}", getpass.getuser())

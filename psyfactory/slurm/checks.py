"""What would fail a job after it has queued, checked on the login node before anything is submitted:
the packages each chosen stage imports, the model weights in the offline cache the jobs read, every file
an evaluation stage reads, and what the partition's nodes offer (GPUs and memory per node, from sinfo).

`make sbatch` refuses the first problem with one `error:` line and submits nothing; a dry run prints
each as a warning above the scripts it renders.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psyfactory.core.errors import UserError

if TYPE_CHECKING:
    from psyfactory.slurm.batch import Request

LOADS_MODEL = ("train", "merge", "eval")


def problems(req: Request, profile: dict[str, Any]) -> list[str]:
    """Every problem found, one line each (empty: the chain can be queued)."""
    found: list[str] = []
    found += _packages(req)
    found += _model_cached(req, profile)
    found += _eval_inputs(req)
    found += _partition(req, profile)
    return found


def _packages(req: Request) -> list[str]:
    out = []
    if req.deepspeed and "train" in req.stages and importlib.util.find_spec("deepspeed") is None:
        out.append(f"DS={req.deepspeed}: DeepSpeed is not installed in this environment, so the training job would "
                   "fail at its start; install it where the jobs run (.venv/bin/pip install deepspeed) or drop DS=")
    if "train" in req.stages and importlib.util.find_spec("llamafactory") is None:
        out.append("the training job runs LLaMA-Factory, which is not installed here: run `make setup`")
    if {"gguf", "eval-gguf", "teacher"} & set(req.stages):
        from psyfactory.gguf.common import GGUFUnavailable, setup_info

        try:
            setup_info()
        except GGUFUnavailable as e:
            stages = ", ".join(s for s in req.stages if s in ("gguf", "eval-gguf", "teacher"))
            out.append(f"stage(s) {stages}: {e}")
    return out


def _model_cached(req: Request, profile: dict[str, Any]) -> list[str]:
    """Compute nodes are offline (HF_HUB_OFFLINE=1 in every job): a hub model must be in the profile's HF_HOME."""
    if not set(LOADS_MODEL) & set(req.stages):
        return []
    c = req.resolved.config
    ref, where = c.model_ref, str(c.lf["model_name_or_path"])
    if ref.startswith("builtin:") or Path(where).expanduser().is_dir():
        return []
    from huggingface_hub import try_to_load_from_cache

    from psyfactory.slurm.profiles import expand

    hf_home = Path(expand(str(profile.get("hf_home") or "~/.cache/huggingface"))).expanduser()
    cached = try_to_load_from_cache(repo_id=where, filename="config.json", cache_dir=str(hf_home / "hub"))
    if isinstance(cached, str):
        return []
    return [f"model {where} is not in the offline cache the jobs read ({hf_home / 'hub'}): stage it on this login "
            f"node first, `make stage RUN={req.run}` (HF_ENDPOINT for a mirror, USE_MODELSCOPE_HUB=1 for "
            "ModelScope), or point PSY_MODEL_DIR at a local copy"]


def _eval_tasks(req: Request) -> list[str]:
    if req.recipe:
        from psyfactory.recipes import load_recipe

        return load_recipe(req.recipe).spec.eval_tasks
    return [req.resolved.config.task]


def _eval_inputs(req: Request) -> list[str]:
    """The eval stages' plugins (their benchmark files, endpoints) and eval data, as the jobs will read them;
    a chain with a teacher stage writes its data first."""
    if not {"eval", "eval-gguf"} & set(req.stages):
        return []
    from psyfactory.datasets import entry

    out = []
    for task in _eval_tasks(req):
        view = req.resolved.for_task(task).task
        try:
            plugins = view.plugins()
            if "teacher" not in req.stages and any(p.plugin.uses_samples for p in plugins):
                entry(view.require_eval_dataset(), Path(req.resolved.config.lf["dataset_dir"]))
        except UserError as e:
            out.append(f"the eval job of task {task} would fail: {e}")
    return out


def _partition(req: Request, profile: dict[str, Any]) -> list[str]:
    """GPUs and memory per node the partition offers (sinfo), against what each stage asks."""
    from psyfactory.slurm.batch import stage_resources

    part = profile.get("partition")
    if not part or not shutil.which("sinfo"):
        return []
    res = subprocess.run(["sinfo", "-h", "-N", "-p", str(part), "-o", "%N|%G|%m"], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:  # no controller to ask (a laptop, a dry run): sbatch itself will tell
        return []
    nodes = [line.split("|") for line in res.stdout.splitlines() if line.count("|") == 2]
    if not nodes:
        return [f"partition {part!r}: sinfo lists no node in it (profile key `partition`)"]
    gpus = max(sum(int(n) for n in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres)) for _, gres, _ in nodes)
    mem = max(int(m) if m.strip().isdigit() else 0 for _, _, m in nodes)
    out = []
    for stage in req.stages:
        r = stage_resources(stage, req, profile)
        if r["gpus"] > gpus:
            out.append(f"{stage}: {r['gpus']} GPU(s) per node asked, partition {part} offers at most {gpus} per node")
        if mem and r["mem_mb"] > mem:
            out.append(f"{stage}: {r['mem_mb']} MB per node asked, the largest node of partition {part} has {mem} MB "
                       "(profile mem_per_gpu / stages.<stage>.mem)")
    if req.nodes > len(nodes):
        out.append(f"train: NODES={req.nodes}, partition {part} has {len(nodes)} node(s)")
    return out

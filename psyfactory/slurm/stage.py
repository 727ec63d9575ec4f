"""Login-node staging: download the model (Hugging Face hub, honouring HF_ENDPOINT; or ModelScope
with USE_MODELSCOPE_HUB=1), check the data, tokenize once, so compute nodes run offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from psyfactory.core import settings
from psyfactory.core.errors import SlurmError
from psyfactory.slurm.batch import Request, compose_request, train_overrides
from psyfactory.slurm.guard import prepare
from psyfactory.slurm.profiles import expand

IGNORE = ["original/*", "*.pth", "*.h5", "*.msgpack", "*.ot"]  # duplicate weight formats (Meta's original/, TF, Flax)


def use_modelscope() -> bool:
    """LLaMA-Factory's switch (USE_MODELSCOPE_HUB=1) selects ModelScope for downloads here too."""
    return settings.flag("USE_MODELSCOPE_HUB", False)


def download_model(hub_id: str, hf_home: Path, modelscope_id: str | None = None, out: Any = None) -> Path:
    """The model's files on local disk, from the Hugging Face hub (or HF_ENDPOINT, a mirror such as
    https://hf-mirror.com) into HF_HOME, or with USE_MODELSCOPE_HUB=1 from ModelScope (`modelscope_id`, the
    model YAML's psy.modelscope_id; else the hub id) into $PSY_MODEL_DIR/<hub id> (where the jobs find it
    offline, see psyfactory.models)."""
    if use_modelscope():
        store = settings.get("PSY_MODEL_DIR")
        if not store:
            raise SlurmError("USE_MODELSCOPE_HUB=1: set PSY_MODEL_DIR to a shared folder; models are downloaded into "
                             "$PSY_MODEL_DIR/<hub id>, where the compute nodes read them")
        try:
            from modelscope import snapshot_download as ms_download
        except ImportError:
            raise SlurmError("USE_MODELSCOPE_HUB=1 needs the modelscope package: pip install modelscope") from None
        target = Path(store).expanduser() / hub_id
        ms_id = modelscope_id or hub_id
        if not modelscope_id:
            print(f"[psy] model: no psy.modelscope_id in its YAML; trying the hub id {hub_id} on ModelScope",
                  file=out or sys.stdout)
        try:
            return Path(ms_download(ms_id, local_dir=str(target), ignore_file_pattern=IGNORE))
        except Exception as e:  # network, unknown model id
            raise SlurmError(f"cannot download {ms_id} from ModelScope into {target}: {type(e).__name__}: "
                             f"{' '.join(str(e).split())[:300]}"
                             + ("" if modelscope_id else " (set psy.modelscope_id in the model's YAML to its "
                                "ModelScope id)")) from None
    from huggingface_hub import constants, snapshot_download

    endpoint = (settings.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    try:
        return Path(snapshot_download(hub_id, cache_dir=str(hf_home / "hub"), ignore_patterns=IGNORE,
                                      endpoint=endpoint))
    except Exception as e:  # network, auth (gated models: `hf auth login`), unknown repo
        raise SlurmError(f"cannot download {hub_id} from {endpoint} into {hf_home}: {type(e).__name__}: "
                         f"{' '.join(str(e).split())[:300]}. Run `make stage` on a node with internet (HF_ENDPOINT="
                         "https://hf-mirror.com for a mirror, USE_MODELSCOPE_HUB=1 for ModelScope; gated models need "
                         "`hf auth login`), or point PSY_MODEL_DIR at a local copy.") from None


def stage_offline(req: Request, profile: dict[str, Any], out: Any = None) -> dict[str, Any]:
    """Download the model into the profile's HF_HOME, check the data files, tokenize once."""
    out = out or sys.stdout
    from psyfactory import preflight

    hf_home = Path(os.path.expandvars(expand(str(profile.get("hf_home") or "~/.cache/huggingface")))).expanduser()
    os.environ["HF_HOME"] = str(hf_home)  # the jobs read the same cache
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(var, None)
    overrides = train_overrides(req, profile)
    c = compose_request(req, overrides)
    data_files = preflight.check_run(c, req.resolved.task)
    print(f"[psy] data: {len(data_files)} file(s) present under {c.lf['dataset_dir']}", file=out)
    model_path = str(c.lf["model_name_or_path"])
    if c.model_ref.startswith("builtin:") or Path(model_path).is_dir():
        from psyfactory.models import materialize

        materialize(c.model_ref)
        print(f"[psy] model: local ({model_path})", file=out)
    else:
        local = download_model(model_path, hf_home, c.psy.modelscope_id, out=out)
        print(f"[psy] model: {c.psy.modelscope_id if use_modelscope() and c.psy.modelscope_id else model_path}"
              f"{' (ModelScope)' if use_modelscope() else ''} -> {local}", file=out)
        if use_modelscope():  # compose again: the model now resolves to $PSY_MODEL_DIR/<hub id>
            overrides = train_overrides(req, profile)
    info = prepare(req, overrides)
    print(f"[psy] tokenized data: {info['tokenized_path']} ({info['tokenized']})", file=out)
    return info

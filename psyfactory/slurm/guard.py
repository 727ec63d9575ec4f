"""The run-dir guard of a training job: resume the same run, never mix two; tokenize once."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path
from typing import Any

from psyfactory.core.errors import SlurmError
from psyfactory.slurm.batch import Request, compose_request


def checkpoints(adapter: Path) -> list[Path]:
    found = [p for p in adapter.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def check_resumable(c: Any) -> Path | None:
    """Last checkpoint the training job will resume from, or None for a fresh start.

    Raises when the run dir holds checkpoints of a different (or unknown) config: resuming would
    silently mix two runs."""
    from psyfactory.manifest import config_hash, read_manifest

    adapter = Path(c.lf["output_dir"])
    ckpts = checkpoints(adapter)
    if not ckpts or c.lf.get("overwrite_output_dir"):
        return None
    # A job killed while saving leaves a checkpoint without trainer_state.json (written last); LF
    # would pick it as the newest and fail to resume. Move it out of LF's `checkpoint-N` pattern.
    while ckpts and not (ckpts[-1] / "trainer_state.json").is_file():
        bad = ckpts.pop()
        bad.rename(bad.with_name(f"incomplete-{bad.name}"))
        print(f"[psy] {bad} is incomplete (no trainer_state.json): set aside as incomplete-{bad.name}", flush=True)
    if not ckpts:
        return None
    previous = read_manifest(c.run_dir).get("stages", {}).get("train") or {}
    now = config_hash(c.lf)
    if previous.get("config_hash") != now:
        what = f"config hash {previous['config_hash']}" if previous.get("config_hash") else "no recorded config"
        raise SlurmError(
            f"{adapter} holds {len(ckpts)} checkpoint(s) from a run with {what} "
            f"(manifest {c.run_dir / 'manifest.json'}), but this job's config hash is {now}: resuming would "
            "mix two runs. Resubmit with --restart (moves the old adapter dir aside) or name another run (RUN=<name>)."
        )
    return ckpts[-1]


def set_aside(adapter: Path) -> Path | None:
    """--restart: move an existing adapter dir away (never delete a user's checkpoints)."""
    if not adapter.exists():
        return None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = adapter.with_name(f"{adapter.name}.old-{stamp}")
    adapter.rename(dest)
    return dest


def tokenize_once(lf: dict[str, Any]) -> bool:
    """Write LF's tokenized dataset to lf['tokenized_path'] in this one process. False if already there."""
    import tempfile

    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.data.loader import has_tokenized_data
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    target = Path(lf["tokenized_path"])
    if has_tokenized_data(str(target)):
        return False
    print(f"[psy] tokenizing once into {target}", flush=True)
    # Written next to the target and renamed into place: a job killed meanwhile leaves no half copy.
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="psy-tokenize-") as tmp:
        # Only the data side matters here: no precision, quantization, DeepSpeed or resume checks.
        args = {**lf, "output_dir": tmp, "overwrite_output_dir": True, "bf16": False, "fp16": False,
                "deepspeed": None, "report_to": "none", "tokenized_path": str(partial)}
        for k in ("quantization_bit", "resume_from_checkpoint"):
            args.pop(k, None)
        model_args, data_args, training_args, _, _ = get_train_args({k: v for k, v in args.items() if v is not None})
        tok = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(tok["tokenizer"], data_args)
        get_dataset(template, model_args, data_args, training_args, stage=lf.get("stage", "sft"), **tok)
    if target.exists():  # an incomplete copy (no dataset markers) from an older version or by hand
        shutil.rmtree(target)
    partial.rename(target)
    return True


def has_tokenized(path: Path) -> bool:
    """What LF's has_tokenized_data checks, without importing LF (datasets' save_to_disk markers)."""
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "dataset_info.json", "state.json"))


def prepare(req: Request, overrides: list[str]) -> dict[str, Any]:
    """In the training job, once per attempt before the ranks start (also `make stage`'s last step)."""
    from psyfactory.manifest import config_hash
    from psyfactory.models import materialize

    c = compose_request(req, overrides)
    resume = check_resumable(c)
    materialize(c.model_ref)
    target = c.lf.get("tokenized_path")
    if not target:
        tokenized = "not used"
    elif has_tokenized(Path(target)):
        tokenized = "already prepared"
    else:  # in this one process, before any rank starts (and atomically, see tokenize_once)
        tokenize_once(c.lf)
        tokenized = "written now, once, before the ranks start"
    return {"config_hash": config_hash(c.lf), "resume_from": resume, "tokenized": tokenized,
            "tokenized_path": c.lf.get("tokenized_path"), "run_dir": c.run_dir}

"""The run-dir guard of a training job: resume the same run, never mix two; tokenize once."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path
from typing import Any

from psyfactory.core.errors import DataError
from psyfactory.slurm.batch import Request, compose_request


def check_resumable(c: Any, *, accept_data_change: bool = False) -> Path | None:
    """Last checkpoint the training job will resume from, or None for a fresh start (psyfactory.resume:
    incomplete checkpoints set aside; checkpoints of another config or other data refused)."""
    from psyfactory import preflight, resume
    from psyfactory.runner import data_hashes

    c.lf.update(preflight.check_values(c.lf, "train", c.source()))  # the same values `psyfactory train` hashes
    files = preflight.check_datasets(c.lf.get("dataset"), Path(c.lf["dataset_dir"]), need_files=False)
    return resume.check(c, data_hashes(files), accept_data_change=accept_data_change,
                        restart_hint="resubmit with --restart, which moves the old adapter dir aside")[0]


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
        from datasets.exceptions import DatasetGenerationError

        try:
            get_dataset(template, model_args, data_args, training_args, stage=lf.get("stage", "sft"), **tok)
        except (DatasetGenerationError, ValueError) as e:  # the data files' content (JSON, fields)
            cause = e.__cause__ or e
            raise DataError(f"tokenizing {lf.get('dataset')} from {lf.get('dataset_dir')} failed: "
                            f"{type(cause).__name__}: {' '.join(str(cause).split())[:300]} (rerun `make prep`)") from None
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
    resume = check_resumable(c, accept_data_change=req.accept_data_change)
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


def prepare_run(run: Any, *, accept_data_change: bool = False) -> Path | None:
    """A sweep's training array task, before its trainer: the same run-dir guard as a training job (resume
    the same run, never mix two); each task tokenizes for itself (one process each)."""
    from psyfactory.models import materialize

    resume = check_resumable(run.config, accept_data_change=accept_data_change)
    materialize(run.config.model_ref)
    print(f"[psy] run dir {run.dir}: " + (f"resuming from {resume}" if resume else "starting fresh (no checkpoint)"),
          flush=True)
    return resume

"""Slurm pipelines: render batch scripts from the templates in `slurm/` + the cluster profile,
submit the chain [teacher ->] train -> merge -> gguf -> eval with `afterok` dependencies, report its state,
and prepare offline compute nodes (model + data staged on the login node, data tokenized once).

Modules, one job each: `profiles` (profile layers), `batch` (batch scripts), `guard` (resume the
same run, never mix two; tokenize once), `jobs` (submit, status), `stage` (login-node staging).
A pipeline's job ids are appended to `<run dir>/slurm/pipelines.jsonl`; the rendered scripts are
kept next to it (`<stage>.sbatch`), so a job can be resubmitted by hand with plain `sbatch`.
"""

from psyfactory.core.errors import SlurmError
from psyfactory.resume import checkpoints
from psyfactory.slurm.batch import (
    Request,
    deepspeed_path,
    parse_stages,
    profile_hw,
    render,
    request,
    train_overrides,
)
from psyfactory.slurm.guard import (
    check_resumable,
    has_tokenized,
    prepare,
    set_aside,
    tokenize_once,
)
from psyfactory.slurm.jobs import (
    BAD_STATES,
    active_jobs,
    job_info,
    last_pipeline,
    records_path,
    status,
    submit,
)
from psyfactory.slurm.profiles import (
    DEFAULT_STAGES,
    DEPENDS,
    PROFILE_ENV,
    SLURM_DIR,
    STAGES,
    load_profile,
    parse_mem_mb,
)
from psyfactory.slurm.stage import stage_offline

__all__ = [
    "BAD_STATES", "DEFAULT_STAGES", "DEPENDS", "PROFILE_ENV", "SLURM_DIR", "STAGES", "Request", "SlurmError", "active_jobs", "check_resumable",
    "checkpoints", "deepspeed_path", "has_tokenized", "job_info", "last_pipeline", "load_profile", "parse_mem_mb",
    "parse_stages", "prepare", "records_path", "render", "request", "profile_hw", "set_aside", "stage_offline", "status",
    "submit", "tokenize_once", "train_overrides",
]

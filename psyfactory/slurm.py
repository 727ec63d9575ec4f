"""Slurm pipelines: render batch scripts from `slurm/job.sbatch` + the cluster profile, submit the
chain train -> merge -> gguf -> eval with `afterok` dependencies, report its state, and prepare
offline compute nodes (model + data staged on the login node, data tokenized once).

A pipeline's job ids are appended to `<run dir>/slurm/pipelines.jsonl`; the rendered scripts are
kept next to it (`<stage>.sbatch`), so a job can be resubmitted by hand with plain `sbatch`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import getpass
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from psyfactory import paths

STAGES = ("train", "merge", "gguf", "eval")
SLURM_DIR = paths.REPO_ROOT / "slurm"
TEMPLATE = SLURM_DIR / "job.sbatch"
DEEPSPEED_DIR = paths.CONFIG_DIR / "deepspeed"
PROFILE_ENV = "PSY_SLURM_PROFILE"
# Variables of the submitting shell that locate data, runs and caches; exported into every job.
FORWARD_ENV = ("PSY_RUNS_DIR", "PSY_DATASET_DIR", "PSY_CACHE_DIR", "PSY_MODEL_DIR")
# Final states of `scontrol show job` that mean "did not succeed".
BAD_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
              "PREEMPTED"}
PROFILE_KEYS = {
    "partition", "account", "qos", "gres", "cpus_per_gpu", "mem_per_gpu", "time", "hw", "env_setup",
    "hf_home", "log_dir", "requeue", "signal_secs", "master_port", "omp_threads", "nproc_per_node",
    "extra_sbatch", "extra_env", "stages", "launcher",
}
STAGE_KEYS = {"gpus", "cpus", "mem", "time", "partition", "qos", "account", "args"}


class SlurmError(RuntimeError):
    """A problem the user can fix: bad profile, rejected submission, a run dir that would mix runs."""


# ---------------------------------------------------------------------------------------------------
# Profile
# ---------------------------------------------------------------------------------------------------
def profile_files() -> list[Path]:
    """Profile layers that exist, lowest priority first."""
    files = [
        SLURM_DIR / "profile.yaml",
        Path.home() / ".config" / "psyfactory" / "slurm.yaml",
        SLURM_DIR / "profile.local.yaml",
    ]
    if os.environ.get(PROFILE_ENV):
        env_file = Path(os.environ[PROFILE_ENV]).expanduser()
        if not env_file.is_file():
            raise SlurmError(f"${PROFILE_ENV}={env_file}: no such file")
        files.append(env_file)
    return [f for f in files if f.is_file()]


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _check_profile_layer(data: Any, source: str) -> dict[str, Any]:
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
    profile: dict[str, Any] = {}
    for f in profile_files():
        try:
            data = yaml.safe_load(f.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise SlurmError(f"{f}: invalid YAML: {e}") from e
        profile = _merge(profile, _check_profile_layer(data, str(f)))
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SlurmError(f"--set expects key=value, got {item!r}")
        node: dict[str, Any] = {}
        cur = node
        *parents, leaf = key.split(".")
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[leaf] = yaml.safe_load(value) if value else None
        profile = _merge(profile, _check_profile_layer(node, f"--set {item}"))
    return profile


def parse_mem_mb(value: Any, source: str) -> int:
    """'60G' / '512M' / '1T' / 4096 (MB) -> megabytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(value), re.IGNORECASE)
    if not m:
        raise SlurmError(f"{source}: memory must look like 60G, 512M or a number of MB, got {value!r}")
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2).upper()]
    return max(1, int(float(m.group(1)) * scale))


def _expand(value: str) -> str:
    return str(value).replace("{repo}", str(paths.REPO_ROOT)).replace("{user}", getpass.getuser())


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------
@dataclass
class Request:
    model: str
    task: str
    method: str = "lora"
    hw: str = "auto"  # auto -> the profile's hw (resolved at submit time, so every job agrees)
    overrides: list[str] = field(default_factory=list)
    gpus: int = 1  # per node, for the training job
    nodes: int = 1
    stages: tuple[str, ...] = STAGES
    deepspeed: str | None = None  # z2 | z3 | path to a DeepSpeed JSON

    def job_name(self, stage: str) -> str:
        return f"psy-{stage}-{self.model}-{self.task}-{self.method}"


def parse_stages(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in names if s not in STAGES]
    if bad or not names:
        raise SlurmError(f"STAGES={text!r}: expected a comma list of {', '.join(STAGES)}")
    return tuple(s for s in STAGES if s in names)  # always in pipeline order


def deepspeed_path(choice: str) -> Path:
    named = DEEPSPEED_DIR / f"ds_{choice}.json"
    path = named if named.is_file() else Path(choice).expanduser().resolve()
    if not path.is_file():
        avail = ", ".join(p.stem.removeprefix("ds_") for p in sorted(DEEPSPEED_DIR.glob("ds_*.json")))
        raise SlurmError(f"DeepSpeed config {choice!r}: not one of {avail} and no such file")
    return path


def resolved_hw(req: Request, profile: dict[str, Any]) -> str:
    return str(profile.get("hw") or "a40") if req.hw == "auto" else req.hw


def train_overrides(req: Request, profile: dict[str, Any]) -> list[str]:
    """The user's overrides plus what a Slurm training job adds (deepspeed, tokenized_path)."""
    from psyfactory.config import compose
    from psyfactory.manifest import config_hash

    extra = list(req.overrides)
    if req.deepspeed:
        extra.append(f"deepspeed={deepspeed_path(req.deepspeed)}")
    c = compose(req.model, req.task, req.method, resolved_hw(req, profile), extra)
    if "tokenized_path" not in c.lf:
        # One tokenized copy per config: a changed config never reads stale tokens.
        extra.append(f"tokenized_path={c.run_dir / 'slurm' / ('tokenized-' + config_hash(c.lf))}")
    return extra


def stage_resources(stage: str, req: Request, profile: dict[str, Any]) -> dict[str, Any]:
    spec = (profile.get("stages") or {}).get(stage) or {}
    gpus = req.gpus if stage == "train" else int(spec.get("gpus", 1))
    nodes = req.nodes if stage == "train" else 1
    if gpus < 0 or nodes < 1:
        raise SlurmError(f"{stage}: GPUS must be >= 0 and NODES >= 1 (got {gpus}, {nodes})")
    cpg = int(profile.get("cpus_per_gpu", 8))
    mpg = parse_mem_mb(profile.get("mem_per_gpu", "60G"), "profile mem_per_gpu")
    cpus = int(spec["cpus"]) if "cpus" in spec else cpg * max(gpus, 1)
    mem = parse_mem_mb(spec["mem"], f"profile stages.{stage}.mem") if "mem" in spec else mpg * max(gpus, 1)
    return {
        "gpus": gpus, "nodes": nodes, "cpus": cpus, "mem_mb": mem,
        "time": str(spec.get("time") or profile.get("time") or "1-00:00:00"),
        "partition": spec.get("partition", profile.get("partition")),
        "account": spec.get("account", profile.get("account")),
        "qos": spec.get("qos", profile.get("qos")),
    }


def log_dir(profile: dict[str, Any]) -> Path:
    d = Path(_expand(str(profile.get("log_dir") or "logs")))
    return d if d.is_absolute() else paths.REPO_ROOT / d


def sbatch_options(stage: str, req: Request, profile: dict[str, Any]) -> list[str]:
    r = stage_resources(stage, req, profile)
    opts = [f"--job-name={req.job_name(stage)}"]
    opts += [f"--{k}={r[k]}" for k in ("partition", "account", "qos") if r[k]]
    opts += [f"--nodes={r['nodes']}", "--ntasks-per-node=1", f"--cpus-per-task={r['cpus']}", f"--mem={r['mem_mb']}M"]
    if r["gpus"] > 0:
        opts.append("--gres=" + str(profile.get("gres") or "gpu:{gpus}").replace("{gpus}", str(r["gpus"])))
    opts += [f"--time={r['time']}", f"--chdir={paths.REPO_ROOT}", f"--output={log_dir(profile)}/%x-%j.out",
             "--open-mode=append"]
    if stage == "train":
        if profile.get("requeue", True):
            opts.append("--requeue")
        if int(profile.get("signal_secs") or 0) > 0:
            opts.append(f"--signal=B:USR1@{int(profile['signal_secs'])}")
    else:
        opts.append("--no-requeue")
    opts += [str(o) for o in profile.get("extra_sbatch") or []]
    return opts


def _cli(command: str, req: Request, hw: str, overrides: list[str], profile: dict[str, Any] | None = None) -> list[str]:
    """`psyfactory <stage> [stage args from the profile] --model … --task … --method … --hw … overrides`."""
    extra = ((profile or {}).get("stages") or {}).get(command, {}) or {}
    return ["psyfactory", command, *shlex.split(str(extra.get("args") or "")), "--model", req.model,
            "--task", req.task, "--method", req.method, "--hw", hw, *overrides]


def _q(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def stage_body(stage: str, req: Request, profile: dict[str, Any], overrides: list[str]) -> str:
    hw = resolved_hw(req, profile)
    if stage != "train":
        return f"# --- {stage} ---\npsy_run {_q(_cli(stage, req, hw, list(req.overrides), profile))}"
    r = stage_resources(stage, req, profile)
    nproc = int(profile.get("nproc_per_node") or max(r["gpus"], 1))
    lines = [
        "# --- distributed: LLaMA-Factory starts torchrun on each node from these variables ---",
        'export NNODES="${SLURM_JOB_NUM_NODES:-1}"',
        f"export NPROC_PER_NODE={nproc}",
        'export MASTER_ADDR="$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" | head -n 1)"',
        f'export MASTER_PORT=$(( {int(profile.get("master_port") or 29500)} + ${{SLURM_JOB_ID:-0}} % 1000 ))',
    ]
    if nproc * r["nodes"] > 1:
        lines.append("export FORCE_TORCHRUN=1  # LF would only auto-launch torchrun for >1 visible CUDA device")
    else:
        lines.append("export PSY_FORWARD_USR1=1  # one process: on USR1 the trainer saves a checkpoint, then we requeue")
    lines += [
        "",
        "# --- once, before the ranks start: refuse a run dir whose checkpoints come from another config,",
        "# report the checkpoint to resume from, tokenize the data into tokenized_path ---",
        f"{_q(['psyfactory', 'slurm-prepare', '--model', req.model, '--task', req.task, '--method', req.method, '--hw', hw, *overrides])}",
        "",
        "# --- train ---",
    ]
    train = _q(_cli("train", req, hw, overrides, profile))
    launcher = str(profile.get("launcher") or "auto")
    if launcher not in ("auto", "srun", "direct"):
        raise SlurmError(f"profile launcher: expected auto, srun or direct, got {launcher!r}")
    if r["nodes"] > 1 and launcher == "direct":
        raise SlurmError("profile launcher: direct cannot start a multi-node job (use auto or srun)")
    if r["nodes"] > 1 or launcher == "srun":
        # One task per node; NODE_RANK (what LF reads) from the node's index in the allocation.
        lines.append('psy_run srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \\\n'
                     "  bash -c 'export NODE_RANK=\"${SLURM_NODEID:-$SLURM_PROCID}\"; exec \"$@\"' node-rank \\\n"
                     f"  {train}")
    else:
        lines.append(f"export NODE_RANK=0\npsy_run {train}")
    return "\n".join(lines)


PREEMPTION = """# --- preemption / time limit ---
# Slurm sends USR1 to this shell before the time limit (--signal=B:USR1@secs). A single-process
# training run gets the signal passed on: it saves a checkpoint at the current step and exits (75).
# Then we requeue the job: the next attempt resumes from the last checkpoint of the run directory
# (LLaMA-Factory resumes from output_dir/checkpoint-* when overwrite_output_dir is false;
# `psyfactory slurm-prepare` refuses checkpoints written under another config). Multi-process
# (torchrun) runs are requeued directly and resume from their last periodic checkpoint.
on_usr1() {
  echo "[psy] USR1 at $(date -Is)"
  if [ "${PSY_FORWARD_USR1:-0}" = 1 ] && [ -n "${PSY_CHILD:-}" ] && kill -0 "$PSY_CHILD" 2>/dev/null; then
    echo "[psy] asking the trainer (pid $PSY_CHILD) to save a checkpoint"
    kill -USR1 "$PSY_CHILD"
    wait "$PSY_CHILD" || true
  fi
  echo "[psy] requeueing job $SLURM_JOB_ID to resume from its last checkpoint"
  scontrol requeue "$SLURM_JOB_ID"
}
trap on_usr1 USR1
"""


def render(stage: str, req: Request, profile: dict[str, Any], overrides: list[str] | None = None) -> str:
    """The batch script for one stage of the pipeline."""
    overrides = list(req.overrides) if overrides is None else overrides
    r = stage_resources(stage, req, profile)
    procs = int(profile.get("nproc_per_node") or max(r["gpus"], 1)) if stage == "train" else 1
    omp = profile.get("omp_threads") or max(1, r["cpus"] // procs)
    exports = [f"export {k}={shlex.quote(os.environ[k])}" for k in FORWARD_ENV if os.environ.get(k)]
    exports += [f"export {k}={shlex.quote(_expand(str(v)))}" for k, v in (profile.get("extra_env") or {}).items()]
    values = {
        "sbatch": "\n".join(f"#SBATCH {o}" for o in sbatch_options(stage, req, profile)),
        "stage": stage, "model": req.model, "task": req.task, "method": req.method,
        "repo": shlex.quote(str(paths.REPO_ROOT)),
        "env_setup": _expand(str(profile.get("env_setup") or "")).rstrip(),
        "hf_home": _expand(str(profile.get("hf_home") or "$HOME/.cache/huggingface")),
        "omp_threads": str(omp),
        "exports": "\n".join(exports),
        "body": stage_body(stage, req, profile, overrides),
        "preemption": PREEMPTION if stage == "train" and int(profile.get("signal_secs") or 0) > 0 else "",
    }
    text = TEMPLATE.read_text(encoding="utf-8")

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise SlurmError(f"{TEMPLATE}: unknown placeholder {{{{{m.group(1)}}}}}")
        return values[m.group(1)]

    return re.sub(r"\{\{\s*(\w+)\s*\}\}", sub, text)


# ---------------------------------------------------------------------------------------------------
# Run-dir guard: resume the same run, never mix two
# ---------------------------------------------------------------------------------------------------
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
            "mix two runs. Resubmit with --restart (moves the old adapter dir aside) or use another METHOD/run dir."
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
    from psyfactory.config import compose
    from psyfactory.manifest import config_hash
    from psyfactory.models import materialize

    c = compose(req.model, req.task, req.method, req.hw, overrides)
    resume = check_resumable(c)
    materialize(c.meta["model_ref"])
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


# ---------------------------------------------------------------------------------------------------
# Submission and status
# ---------------------------------------------------------------------------------------------------
def _slurm(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    if not shutil.which(cmd[0]):
        raise SlurmError(f"`{cmd[0]}` not found: run this on a Slurm login node")
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise SlurmError(f"`{' '.join(cmd)}` failed (exit {res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res


def records_path(run_dir: Path) -> Path:
    return run_dir / "slurm" / "pipelines.jsonl"


def submit(req: Request, profile: dict[str, Any], *, dry_run: bool = False, restart: bool = False,
           out=sys.stdout) -> list[dict[str, Any]]:
    """Render and submit the chain; returns one record per job (stage, job_id, log, script)."""
    from psyfactory.config import compose
    from psyfactory.io import atomic_write_text
    from psyfactory.manifest import config_hash

    req = Request(**{**req.__dict__, "hw": resolved_hw(req, profile)})
    overrides = train_overrides(req, profile) if "train" in req.stages else list(req.overrides)
    c = compose(req.model, req.task, req.method, req.hw, overrides)
    if "train" in req.stages and not dry_run:
        from psyfactory import preflight

        preflight.check_train(c.lf, f"MODEL={req.model} TASK={req.task} METHOD={req.method}")
        active = active_jobs(c.run_dir)
        if active:
            raise SlurmError(f"{c.run_dir} has an active pipeline (jobs {', '.join(active)}): two trainers would "
                             f"share one output_dir. Wait for it or `scancel {' '.join(active)}` first.")
        if restart:
            moved = set_aside(Path(c.lf["output_dir"]))
            if moved:
                print(f"[psy] --restart: moved the previous adapter dir to {moved}", file=out)
        check_resumable(c)  # fail now, not after hours in the queue
    logs = log_dir(profile)
    slurm_dir = c.run_dir / "slurm"
    jobs: list[dict[str, Any]] = []
    prev: str | None = None
    if not dry_run:
        logs.mkdir(parents=True, exist_ok=True)  # Slurm fails the job (JobLaunchFailure) without it
        slurm_dir.mkdir(parents=True, exist_ok=True)
    for stage in req.stages:
        script = render(stage, req, profile, overrides if stage == "train" else None)
        path = slurm_dir / f"{stage}.sbatch"
        cmd = ["sbatch", "--parsable"]
        if prev:
            cmd += [f"--dependency=afterok:{prev}", "--kill-on-invalid-dep=yes"]
        cmd.append(str(path))
        name = req.job_name(stage)
        if dry_run:
            print(f"# ===== {stage}: {path} =====\n{script}", file=out)
            print(f"$ {_q(cmd)}\n", file=out)
            prev = f"<{stage}-jobid>"
            jobs.append({"stage": stage, "job_id": prev, "name": name, "script": str(path),
                         "log": str(logs / f"{name}-{prev}.out")})
            continue
        atomic_write_text(path, script)
        path.chmod(0o755)
        res = _slurm(cmd, check=False)
        if res.returncode != 0:
            for j in jobs:  # don't leave half a pipeline behind
                _slurm(["scancel", j["job_id"]], check=False)
            raise SlurmError(f"sbatch rejected the {stage} job ({path}): {res.stderr.strip()}"
                             + (f"; cancelled {', '.join(j['job_id'] for j in jobs)}" if jobs else ""))
        job_id = res.stdout.strip().split(";")[0]
        prev = job_id
        jobs.append({"stage": stage, "job_id": job_id, "name": name, "script": str(path),
                     "log": str(logs / f"{name}-{job_id}.out")})
    if not dry_run:
        record = {"submitted_at": _dt.datetime.now().isoformat(timespec="seconds"), "model": req.model,
                  "task": req.task, "method": req.method, "hw": req.hw, "gpus": req.gpus, "nodes": req.nodes,
                  "overrides": overrides, "config_hash": config_hash(c.lf), "jobs": jobs}
        rec_file = records_path(c.run_dir)
        old = rec_file.read_text(encoding="utf-8") if rec_file.is_file() else ""
        atomic_write_text(rec_file, old + json.dumps(record, ensure_ascii=False) + "\n")
    for j in jobs:
        print(f"{j['stage']:6} job {j['job_id']:>14}  log {j['log']}", file=out)
    return jobs


def last_pipeline(run_dir: Path) -> dict[str, Any]:
    path = records_path(run_dir)
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()] if path.is_file() else []
    if not lines:
        raise SlurmError(f"no pipeline recorded in {path}: submit one with `make sbatch`")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise SlurmError(f"{path}, line {len(lines)}: invalid JSON: {e}") from e


def job_info(job_id: str) -> dict[str, str]:
    """State of one job: `scontrol show job` while the controller remembers it, else `sacct`."""
    res = _slurm(["scontrol", "show", "job", "-o", job_id], check=False)
    if res.returncode == 0 and res.stdout.strip():
        return dict(tok.split("=", 1) for tok in res.stdout.split() if "=" in tok)
    if shutil.which("sacct"):
        acct = _slurm(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State,ExitCode,Reason"], check=False)
        first = acct.stdout.strip().splitlines()[:1]
        if first:
            state, exit_code, reason = (first[0].split("|") + ["", "", ""])[:3]
            return {"JobState": state.split()[0], "ExitCode": exit_code, "Reason": reason or "None"}
    if "invalid job id" in res.stderr.lower():
        return {"JobState": "UNKNOWN", "Reason": "the controller forgot the job (MinJobAge) and there is no sacct"}
    return {"JobState": "UNKNOWN", "Reason": f"scontrol: {res.stderr.strip() or 'no answer'}"}


ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                 "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT"}


def active_jobs(run_dir: Path) -> list[str]:
    """Job ids of the run's last pipeline that are still queued or running."""
    try:
        rec = last_pipeline(run_dir)
    except SlurmError:
        return []
    return [j["job_id"] for j in rec["jobs"] if job_info(j["job_id"]).get("JobState") in ACTIVE_STATES]


def tail(path: Path, n: int = 25) -> list[str]:
    if not path.is_file():
        return [f"(no log at {path})"]
    return path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]


def status(run_dir: Path, *, lines: int = 25, out=sys.stdout) -> int:
    """Print the last pipeline's jobs; 0 when none failed, 1 otherwise."""
    rec = last_pipeline(run_dir)
    print(f"pipeline of {rec['model']}/{rec['task']}/{rec['method']} submitted {rec['submitted_at']} "
          f"({rec['nodes']} node(s) x {rec['gpus']} GPU(s)), run dir {run_dir}", file=out)
    print(f"{'stage':6} {'job':>10} {'state':12} {'exit':6} {'restarts':8} why", file=out)
    failed = []
    by_id = {j["job_id"]: j for j in rec["jobs"]}
    for j in rec["jobs"]:
        info = job_info(j["job_id"])
        state, reason = info.get("JobState", "UNKNOWN"), info.get("Reason", "None")
        why = "" if reason == "None" else reason
        dep = info.get("Dependency", "")
        if state == "CANCELLED" and "DependencyNeverSatisfied" in reason:
            m = re.search(r"afterok:(\d+)", dep)
            parent = by_id.get(m.group(1)) if m else None
            why = (f"cancelled because its dependency {parent['stage']} (job {parent['job_id']}) did not succeed"
                   if parent else f"cancelled: dependency never satisfied ({dep})")
        elif state in BAD_STATES:
            why = f"{reason}; log {info.get('StdOut', j['log'])}"
        print(f"{j['stage']:6} {j['job_id']:>10} {state:12} {info.get('ExitCode', ''):6} "
              f"{info.get('Restarts', '0'):8} {why}", file=out)
        if state in BAD_STATES:
            failed.append((j, info))
    for j, info in failed:
        if "DependencyNeverSatisfied" in info.get("Reason", ""):
            continue  # never ran: no log
        log = Path(info.get("StdOut") or j["log"])
        print(f"\n--- {j['stage']} job {j['job_id']} {info.get('JobState')}: last {lines} lines of {log} ---", file=out)
        print("\n".join(tail(log, lines)), file=out)
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------------
# Login-node staging
# ---------------------------------------------------------------------------------------------------
def stage_offline(req: Request, profile: dict[str, Any], out=sys.stdout) -> dict[str, Any]:
    """Download the model into the profile's HF_HOME, check the data files, tokenize once."""
    from psyfactory import preflight
    from psyfactory.config import compose

    req = Request(**{**req.__dict__, "hw": resolved_hw(req, profile)})
    hf_home = Path(os.path.expandvars(_expand(str(profile.get("hf_home") or "~/.cache/huggingface")))).expanduser()
    os.environ["HF_HOME"] = str(hf_home)  # the jobs read the same cache
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(var, None)
    overrides = train_overrides(req, profile)
    c = compose(req.model, req.task, req.method, req.hw, overrides)
    data_files = preflight.check_train(c.lf, f"MODEL={req.model} TASK={req.task} METHOD={req.method}")
    print(f"[psy] data: {len(data_files)} file(s) present under {c.lf['dataset_dir']}", file=out)
    ref = c.meta["model_ref"]
    model_path = str(c.lf["model_name_or_path"])
    if ref.startswith("builtin:") or Path(model_path).is_dir():
        from psyfactory.models import materialize

        materialize(ref)
        print(f"[psy] model: local ({model_path})", file=out)
    else:
        from huggingface_hub import snapshot_download

        # Skip duplicate weight formats (Meta's original/ *.pth, TF, Flax): they double the download.
        try:
            local = snapshot_download(model_path, cache_dir=str(hf_home / "hub"),
                                      ignore_patterns=["original/*", "*.pth", "*.h5", "*.msgpack", "*.ot"])
        except Exception as e:  # network, auth (gated models: `huggingface-cli login`), unknown repo
            raise SlurmError(f"cannot download {model_path} into {hf_home}: {type(e).__name__}: {e}. Run "
                             "`make stage` on a node with internet (gated models need `huggingface-cli login`), "
                             "or point PSY_MODEL_DIR at a local copy.") from e
        print(f"[psy] model: {model_path} -> {local}", file=out)
    info = prepare(req, overrides)
    print(f"[psy] tokenized data: {info['tokenized_path']} ({info['tokenized']})", file=out)
    return info

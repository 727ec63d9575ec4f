"""Submitting a run's pipeline (afterok chain) and reporting its state."""

from __future__ import annotations

import datetime as _dt
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from psyfactory.core.errors import SlurmError, UserError
from psyfactory.slurm.batch import (
    Request,
    compose_request,
    log_dir,
    quote,
    render,
    train_overrides,
)
from psyfactory.slurm.guard import check_resumable, set_aside
from psyfactory.slurm.profiles import parent_stage

# Final states of `scontrol show job` that mean "did not succeed".
BAD_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
              "PREEMPTED"}


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
    from psyfactory import preflight
    from psyfactory.core.files import atomic_write_text
    from psyfactory.manifest import config_hash
    from psyfactory.slurm.checks import problems

    found = problems(req, profile)  # what would fail a job after it queued: nothing is submitted then
    if found and not dry_run:
        raise SlurmError(found[0] + (f" (and {len(found) - 1} more problem(s): see `make sbatch DRY_RUN=1`)"
                                     if len(found) > 1 else ""))
    for line in found:
        print(f"warning: a real submission would be refused: {line}", file=out)
    overrides = train_overrides(req, profile) if "train" in req.stages else list(req.overrides)
    c = compose_request(req, overrides)
    # the teacher job writes the student set first: its files cannot exist yet
    need_files = "teacher" not in req.stages
    if "train" in req.stages:  # config mistakes fail now, not after hours in the queue (a dry run too)
        preflight.check_run(c, req.resolved.task, need_files=need_files and not dry_run)
    if "train" in req.stages and dry_run:  # what only a real submission refuses, said as a warning
        checks = [lambda: refuse_active(c.run_dir)]
        if need_files:  # the data files, which the config check above left out
            checks.insert(0, lambda: preflight.check_datasets(c.lf.get("dataset"), Path(c.lf["dataset_dir"])))
        if not restart:
            checks.append(lambda: check_resumable(c, accept_data_change=req.accept_data_change))
        for check in checks:
            try:
                check()
            except UserError as e:
                print(f"warning: a real submission would be refused: {str(e).splitlines()[0]}", file=out)
    if "train" in req.stages and not dry_run:
        refuse_active(c.run_dir)
        if restart:
            moved = set_aside(Path(c.lf["output_dir"]))
            if moved:
                print(f"[psy] --restart: moved the previous adapter dir to {moved}", file=out)
        check_resumable(c, accept_data_change=req.accept_data_change)  # fail now, not after hours in the queue
    logs = log_dir(profile)
    slurm_dir = c.run_dir / "slurm"
    jobs: list[dict[str, Any]] = []
    job_of: dict[str, str] = {}
    if not dry_run:
        logs.mkdir(parents=True, exist_ok=True)  # Slurm fails the job (JobLaunchFailure) without it
        slurm_dir.mkdir(parents=True, exist_ok=True)
    for stage in req.stages:
        script = render(stage, req, profile, overrides if stage == "train" else None)
        path = slurm_dir / f"{stage}.sbatch"
        cmd = ["sbatch", "--parsable"]
        after = parent_stage(stage, req.stages)
        if after is not None:
            cmd += [f"--dependency=afterok:{job_of[after]}", "--kill-on-invalid-dep=yes"]
        cmd.append(str(path))
        name = req.job_name(stage)
        if dry_run:
            print(f"# ===== {stage}: {path} =====\n{script}", file=out)
            print(f"$ {quote(cmd)}\n", file=out)
            job_of[stage] = f"<{stage}-jobid>"
            jobs.append({"stage": stage, "job_id": job_of[stage], "name": name, "script": str(path), "after": after,
                         "log": str(logs / f"{name}-{job_of[stage]}.out")})
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
        job_of[stage] = job_id
        jobs.append({"stage": stage, "job_id": job_id, "name": name, "script": str(path), "after": after,
                     "log": str(logs / f"{name}-{job_id}.out")})
    if not dry_run:
        record = {"submitted_at": _dt.datetime.now().isoformat(timespec="seconds"), "run": req.run,
                  "recipe": req.recipe, "model": req.model,
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


def refuse_active(run_dir: Path) -> None:
    """A second pipeline into a run dir whose jobs are queued or running: two trainers, one output_dir."""
    active = active_jobs(run_dir)
    if active:
        raise SlurmError(f"{run_dir} has an active pipeline (jobs {', '.join(active)}): two trainers would "
                         f"share one output_dir. Wait for it or `scancel {' '.join(active)}` first.")


def tail(path: Path, n: int = 25) -> list[str]:
    if not path.is_file():
        return [f"(no log at {path})"]
    return path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]


def status(run_dir: Path, *, lines: int = 25, out=sys.stdout) -> int:
    """Print the last pipeline's jobs; 0 when none failed, 1 otherwise."""
    rec = last_pipeline(run_dir)
    print(f"pipeline of {rec.get('run') or '/'.join((rec['model'], rec['task'], rec['method']))} submitted {rec['submitted_at']} "
          f"({rec['nodes']} node(s) x {rec['gpus']} GPU(s)), run dir {run_dir}", file=out)
    print(f"{'stage':9} {'job':>10} {'state':12} {'exit':6} {'restarts':8} why", file=out)
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
        print(f"{j['stage']:9} {j['job_id']:>10} {state:12} {info.get('ExitCode', ''):6} "
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

"""`make sweep`: one recipe (or MODEL/TASK/METHOD) over seeds and a grid of overrides, each point a named run.

    make sweep RECIPE=seed004-psydt SEEDS=1,2,3 ARGS_GRID="learning_rate=1e-4,2e-4"

The plan (every point: its run name, overrides and seed) is written to `runs/<base>/sweep-<name>/plan.json`.
On a Slurm login node the points go out as job arrays, one array per stage (train, then eval with an
element-wise `aftercorr` dependency: each point's evaluation waits for its own training only); with
`LOCAL=1` (or without sbatch) they run here in turn. Each point is a run of its own,
`<base>/sweep-<name>/<grid point>/seed=<s>`, trained with `seed=<s>` and its grid values, evaluated on
the recipe's eval tasks (the first point also evaluates the base model once); its manifest records the
sweep, and `make compare` reports every metric as mean ± sd over the seeds per grid point, with a
paired t-test (paired by seed) between grid points.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from psyfactory.core import settings
from psyfactory.core.errors import ConfigError
from psyfactory.core.files import atomic_write_json, atomic_write_text
from psyfactory.manifest import read_manifest
from psyfactory.runspec import Run, resolve

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Point:
    index: int
    run: str
    label: str  # the grid point, e.g. learning_rate=1e-4
    seed: int
    overrides: tuple[str, ...]  # the grid values and seed=<s>, after the sweep's own overrides


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"SEEDS={text!r}: a comma list of whole numbers, e.g. 1,2,3") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"SEEDS={text!r}: at least one seed, none twice")
    return seeds


def parse_grid(text: str) -> list[dict[str, str]]:
    """`key=a,b other=c,d` -> the cartesian product as mappings (one empty mapping for no grid)."""
    axes: list[tuple[str, list[str]]] = []
    for word in text.split():
        key, sep, values = word.partition("=")
        vals = [v for v in values.split(",") if v]
        if not sep or not key or not vals:
            raise ConfigError(f"ARGS_GRID word {word!r}: expected key=value1,value2,...")
        if key == "seed":
            raise ConfigError("ARGS_GRID: seeds come from SEEDS=, not the grid")
        axes.append((key, vals))
    return [dict(zip([k for k, _ in axes], combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))]


def plan(base: Run, name: str, seeds: list[int], grid: list[dict[str, str]]) -> list[Point]:
    if not NAME.fullmatch(name):
        raise ConfigError(f"NAME={name!r}: letters, digits and ._- (the sweep's folder name)")
    points = []
    for values in grid:
        label = "+".join(f"{k}={v}" for k, v in values.items()) or "default"
        for seed in seeds:
            points.append(Point(len(points), f"{base.name}/sweep-{name}/{label}/seed={seed}", label, seed,
                                (*base.overrides, *(f"{k}={v}" for k, v in values.items()), f"seed={seed}")))
    return points


def plan_file(base: Run, name: str) -> Path:
    return base.dir / f"sweep-{name}" / "plan.json"


def write_plan(base: Run, name: str, points: list[Point], eval_tasks: list[str], limit: int | None) -> Path:
    path = plan_file(base, name)
    atomic_write_json(path, {"name": name, "base": base.name, "model": base.model, "task": base.trained_task,
                             "method": base.method, "recipe": base.recipe, "hw": base.hw,
                             "eval_tasks": eval_tasks, "limit": limit, "points": [asdict(p) for p in points]})
    return path


def point_run(spec: dict[str, Any], p: dict[str, Any], *, inherit: bool) -> Run:
    recipe = spec.get("recipe")
    return resolve(run=p["run"], recipe=recipe, model=None if recipe else spec["model"],
                   task=None if recipe else spec["task"], method=None if recipe else spec["method"], hw=spec["hw"],
                   overrides=list(p["overrides"]), inherit=inherit)


def _record(run: Run, spec: dict[str, Any], p: dict[str, Any]) -> None:
    manifest = read_manifest(run.dir)
    manifest["sweep"] = {"name": spec["name"], "base": spec["base"], "point": p["label"], "seed": p["seed"]}
    atomic_write_json(run.dir / "manifest.json", manifest)


def run_stage(plan_path: Path, stage: str, index: int) -> None:
    """One stage (prepare, train, eval) of one point: what a Slurm array task runs, and the local loop."""
    from psyfactory import runner
    from psyfactory.evaluate import run_eval

    spec = json.loads(plan_path.read_text(encoding="utf-8"))
    if not 0 <= index < len(spec["points"]):
        raise ConfigError(f"{plan_path}: no point {index} (the plan has {len(spec['points'])})")
    p = spec["points"][index]
    if stage == "prepare":  # the Slurm training task, before its trainer: guard the run dir, tokenize once
        from psyfactory.slurm.guard import prepare_run

        prepare_run(point_run(spec, p, inherit=False))
        return
    if stage == "train":
        run = point_run(spec, p, inherit=False)
        run.dir.mkdir(parents=True, exist_ok=True)
        _record(run, spec, p)
        runner.train(run)
        return
    run = point_run(spec, p, inherit=True)
    for task in spec["eval_tasks"]:
        view = run.for_task(task)
        run_eval(view, limit=spec.get("limit"), overwrite=True)
        if index == 0:  # the base model once per sweep: compare's reference for every point
            run_eval(view, base=True, limit=spec.get("limit"), overwrite=True)


def run_local(plan_path: Path, out: Any = sys.stdout) -> None:
    spec = json.loads(plan_path.read_text(encoding="utf-8"))
    for p in spec["points"]:
        print(f"[sweep] point {p['index'] + 1}/{len(spec['points'])}: {p['run']}", file=out, flush=True)
        run_stage(plan_path, "train", p["index"])
        run_stage(plan_path, "eval", p["index"])


def array_index() -> int:
    value = settings.get("SLURM_ARRAY_TASK_ID")
    if value is None:
        raise ConfigError("sweep-task runs inside a Slurm array job (SLURM_ARRAY_TASK_ID), or give --index")
    return int(value)


def submit(base: Run, plan_path: Path, profile: dict[str, Any], *, dry_run: bool = False,
           out: Any = sys.stdout) -> list[dict[str, Any]]:
    """The points as two job arrays: train, then eval element-wise after it (`aftercorr`)."""
    import jinja2

    from psyfactory.core import paths
    from psyfactory.slurm.batch import Request, log_dir, quote, sbatch_options
    from psyfactory.slurm.jobs import _slurm
    from psyfactory.slurm.profiles import SLURM_DIR, expand

    spec = json.loads(plan_path.read_text(encoding="utf-8"))
    n = len(spec["points"])
    req = Request(base, stages=("train", "eval"))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(SLURM_DIR)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    logs = log_dir(profile)
    jobs: list[dict[str, Any]] = []
    previous: str | None = None
    for stage in ("train", "eval"):
        name = f"psy-sweep-{spec['name']}-{stage}"
        opts = [o for o in sbatch_options(stage, req, profile) if not o.startswith(("--job-name", "--output"))]
        opts = [f"--job-name={name}", f"--array=0-{n - 1}", f"--output={logs}/%x-%A_%a.out", *opts]
        task = ["psyfactory", "sweep-task", "--plan", str(plan_path)]
        values = {"sbatch": opts, "stage": stage, "name": spec["name"], "points": n,
                  "repo": quote([str(paths.work_dir())]),
                  "env_setup": expand(str(profile.get("env_setup") or "")).rstrip(),
                  "hf_home": expand(str(profile.get("hf_home") or "$HOME/.cache/huggingface")),
                  "omp_threads": str(profile.get("omp_threads") or 1),
                  "preemption": stage == "train" and int(profile.get("signal_secs") or 0) > 0,
                  "prepare": quote([*task, "--stage", "prepare"]), "command": quote([*task, "--stage", stage])}
        script = env.get_template("array.sbatch").render(**values)
        path = plan_path.parent / f"{stage}.sbatch"
        cmd = ["sbatch", "--parsable", *([f"--dependency=aftercorr:{previous}"] if previous else []), str(path)]
        if dry_run:
            print(f"# ===== {stage} array ({n} points): {path} =====\n{script}\n$ {quote(cmd)}\n", file=out)
            previous = f"<{stage}-arrayid>"
            jobs.append({"stage": stage, "job_id": previous})
            continue
        logs.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, script)
        res = _slurm(cmd)
        previous = res.stdout.strip().split(";")[0]
        jobs.append({"stage": stage, "job_id": previous, "log": f"{logs}/{name}-{previous}_<index>.out"})
    if not dry_run:
        atomic_write_json(plan_path.parent / "jobs.json", jobs)
    for j in jobs:
        print(f"{j['stage']:6} array {j['job_id']} ({n} points)" + (f"  logs {j['log']}" if j.get("log") else ""),
              file=out)
    return jobs

"""Batch scripts for each stage of a run's pipeline, rendered from the Jinja templates in `slurm/`
(`job.sbatch`, which includes `train.sh` and `preemption.sh` for the training job) and the profile.
All shell logic lives in those templates; this module only computes their values."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psyfactory.core import paths, settings
from psyfactory.core.errors import SlurmError
from psyfactory.slurm.profiles import DEFAULT_STAGES, SLURM_DIR, STAGES, expand, parse_mem_mb

if TYPE_CHECKING:
    from psyfactory.runspec import Run

TEMPLATE = "job.sbatch"
DEEPSPEED_DIR = paths.CONFIG_DIR / "deepspeed"
# Variables of the submitting shell that locate data, runs and caches; exported into every job.
FORWARD_ENV = ("PSY_RUNS_DIR", "PSY_DATASET_DIR", "PSY_CACHE_DIR", "PSY_MODEL_DIR")


@dataclass
class Request:
    """A pipeline to submit: the resolved run (composed for the profile's hardware) and its Slurm shape."""

    resolved: Run
    gpus: int = 1  # per node, for the training job
    nodes: int = 1
    stages: tuple[str, ...] = DEFAULT_STAGES
    deepspeed: str | None = None  # z2 | z3 | path to a DeepSpeed JSON
    accept_data_change: bool = False  # the training job resumes checkpoints although the data changed

    def __post_init__(self) -> None:
        if "teacher" in self.stages:
            from psyfactory.prep import task_spec

            if not task_spec(self.task, self.resolved.task.raw_dir).needs_teacher:
                raise SlurmError(f"the teacher stage labels the data of a task whose parser needs a teacher LLM "
                                 f"(TASK=student); TASK={self.task} has none")

    # the run's identity, as the job commands name it
    @property
    def run(self) -> str:
        return self.resolved.name

    @property
    def model(self) -> str:
        return self.resolved.model

    @property
    def task(self) -> str:
        return self.resolved.trained_task

    @property
    def method(self) -> str:
        return self.resolved.method

    @property
    def recipe(self) -> str | None:
        return self.resolved.recipe

    @property
    def hw(self) -> str:
        return self.resolved.hw

    @property
    def overrides(self) -> list[str]:
        return list(self.resolved.overrides)

    def job_name(self, stage: str) -> str:
        return f"psy-{stage}-{self.run.replace('/', '-')}"


def request(profile: dict[str, Any], *, run: str | None = None, recipe: str | None = None, model: str | None = None,
            task: str | None = None, method: str | None = None, hw: str = "auto",
            overrides: list[str] | tuple[str, ...] = (), **shape: Any) -> Request:
    """A Request for the run these names resolve to, composed for the profile's hardware (what
    `make sbatch` does with its command line)."""
    from psyfactory.runspec import resolve

    resolved = resolve(run=run, recipe=recipe, model=model, task=task, method=method, hw=profile_hw(hw, profile),
                       overrides=overrides, inherit=False)
    return Request(resolved, **shape)


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


def profile_hw(hw: str, profile: dict[str, Any]) -> str:
    """HW=auto on a login node means the cluster profile's hardware, not the login node's."""
    return str(profile.get("hw") or "a40") if hw == "auto" else hw


def compose_request(req: Request, overrides: list[str] | None = None) -> Any:
    """The run's composed config with these command overrides (the training job's add deepspeed and
    tokenized_path to the user's)."""
    if overrides is None or list(overrides) == req.overrides:
        return req.resolved.config
    return req.resolved.with_overrides(overrides).config


def train_overrides(req: Request, profile: dict[str, Any]) -> list[str]:
    """The user's overrides plus what a Slurm training job adds (deepspeed, tokenized_path)."""
    from psyfactory.manifest import config_hash

    extra = list(req.overrides)
    if req.deepspeed:
        extra.append(f"deepspeed={deepspeed_path(req.deepspeed)}")
    c = compose_request(req, extra)
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
    most = int(profile.get("gpus_per_node") or 8)
    if gpus > most:
        raise SlurmError(f"{stage}: GPUS={gpus} per node, more than the profile's gpus_per_node ({most}); use NODES= "
                         "to spread a job over nodes, or set gpus_per_node for your cluster")
    if stage == "train" and gpus == 0 and req.resolved.config.psy.gpu_memory_gb:
        raise SlurmError(f"train: GPUS=0 on HW={req.hw}, a GPU profile: a training job needs GPUS >= 1 (HW=cpu for a "
                         "CPU-only job)")
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
    d = Path(expand(str(profile.get("log_dir") or "logs")))
    return d if d.is_absolute() else paths.work_dir() / d


def sbatch_options(stage: str, req: Request, profile: dict[str, Any]) -> list[str]:
    r = stage_resources(stage, req, profile)
    opts = [f"--job-name={req.job_name(stage)}"]
    opts += [f"--{k}={r[k]}" for k in ("partition", "account", "qos") if r[k]]
    opts += [f"--nodes={r['nodes']}", "--ntasks-per-node=1", f"--cpus-per-task={r['cpus']}", f"--mem={r['mem_mb']}M"]
    if r["gpus"] > 0:
        opts.append("--gres=" + str(profile.get("gres") or "gpu:{gpus}").replace("{gpus}", str(r["gpus"])))
    opts += [f"--time={r['time']}", f"--chdir={paths.work_dir()}", f"--output={log_dir(profile)}/%x-%j.out",
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


def run_args(req: Request) -> list[str]:
    """`--run … [--recipe …] --model … --task … --method …` of a job's command."""
    recipe = ["--recipe", req.recipe] if req.recipe else []
    return ["--run", req.run, *recipe, "--model", req.model, "--task", req.task, "--method", req.method]


def cli(command: str, req: Request, hw: str, overrides: list[str], profile: dict[str, Any] | None = None) -> list[str]:
    """`psyfactory <stage> [stage args from the profile] --run … --model … --task … --method … --hw … overrides`.
    The teacher stage: `psyfactory prep --task student --teacher gguf [args]` (the node serves and labels; a
    recipe with its own data: `--recipe <name>`).
    A recipe's eval job runs the eval part of its chain (`psyfactory reproduce --steps eval,compare,report`),
    its gguf job exports the recipe's quantization."""
    extra = shlex.split(str((((profile or {}).get("stages") or {}).get(command, {}) or {}).get("args") or ""))
    if command == "teacher":
        from psyfactory.recipes import load_recipe

        own = req.recipe is not None and load_recipe(req.recipe).spec.data is not None  # the recipe's own data
        return ["psyfactory", "prep", *(["--recipe", req.recipe] if own else ["--task", req.task]), "--teacher", "gguf",
                *extra]
    if req.recipe and command == "eval":
        return ["psyfactory", "reproduce", "--steps", "eval,compare,report", *extra, "--run", req.run,
                "--recipe", req.recipe, "--hw", hw, *overrides]
    if command == "eval-gguf":  # the GGUF export through llama.cpp, a variant beside the HF one
        return ["psyfactory", "eval", "--backend", "gguf", *extra, *run_args(req), "--hw", hw, *overrides]
    if req.recipe and command == "gguf" and "--quant" not in extra:
        from psyfactory.recipes import load_recipe

        quant = load_recipe(req.recipe).spec.gguf
        extra = ["--quant", quant.upper()] + extra if quant else extra
    return ["psyfactory", command, *extra, *run_args(req), "--hw", hw, *overrides]


def quote(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _train_values(req: Request, profile: dict[str, Any], hw: str, overrides: list[str]) -> dict[str, Any]:
    r = stage_resources("train", req, profile)
    nproc = int(profile.get("nproc_per_node") or max(r["gpus"], 1))
    launcher = str(profile.get("launcher") or "auto")
    if launcher not in ("auto", "srun", "direct"):
        raise SlurmError(f"profile launcher: expected auto, srun or direct, got {launcher!r}")
    if r["nodes"] > 1 and launcher == "direct":
        raise SlurmError("profile launcher: direct cannot start a multi-node job (use auto or srun)")
    accept = ["--accept-data-change"] if req.accept_data_change else []
    prepare = ["psyfactory", "slurm-prepare", *accept, *run_args(req), "--hw", hw, *overrides]
    train = cli("train", req, hw, overrides, profile)
    train[2:2] = accept
    return {"nproc": nproc, "multiprocess": nproc * r["nodes"] > 1, "master_port": int(profile.get("master_port") or 29500),
            "prepare": quote(prepare), "train": quote(train), "use_srun": r["nodes"] > 1 or launcher == "srun"}


def render(stage: str, req: Request, profile: dict[str, Any], overrides: list[str] | None = None) -> str:
    """The batch script for one stage of the pipeline."""
    import jinja2

    overrides = list(req.overrides) if overrides is None else overrides
    hw = req.hw
    r = stage_resources(stage, req, profile)
    procs = int(profile.get("nproc_per_node") or max(r["gpus"], 1)) if stage == "train" else 1
    omp = profile.get("omp_threads") or max(1, r["cpus"] // procs)
    exports = [f"export {k}={shlex.quote(v)}" for k in FORWARD_ENV if (v := settings.get(k))]
    exports += [f"export {k}={shlex.quote(expand(str(v)))}" for k, v in (profile.get("extra_env") or {}).items()]
    values: dict[str, Any] = {
        "sbatch": sbatch_options(stage, req, profile), "stage": stage, "run": req.run, "recipe": req.recipe,
        "model": req.model,
        "task": req.task, "method": req.method, "repo": shlex.quote(str(paths.work_dir())),
        "env_setup": expand(str(profile.get("env_setup") or "")).rstrip(),
        "hf_home": expand(str(profile.get("hf_home") or "$HOME/.cache/huggingface")),
        "omp_threads": str(omp), "exports": exports,
        "preemption": stage == "train" and int(profile.get("signal_secs") or 0) > 0,
        "command": quote(cli(stage, req, hw, list(req.overrides), profile)),
    }
    if stage == "train":
        values.update(_train_values(req, profile, hw, overrides))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(SLURM_DIR)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    try:
        return env.get_template(TEMPLATE).render(**values)
    except jinja2.TemplateError as e:
        raise SlurmError(f"{SLURM_DIR / TEMPLATE}: {type(e).__name__}: {e}") from None

"""`make reproduce RECIPE=<name>`: the chain a seed ran, in one command.

    download -> prep -> train -> merge -> eval (each of the recipe's eval tasks, tuned and base) -> compare
    [-> gguf] -> report

Each step is the command a user would run by hand (`make download TASK=...`, `make prep RECIPE=...`,
`make train`, `make merge`, `make eval [BASE=1]`, `make compare`, `make gguf`) on the run named after
the recipe. `download` fetches the public sources the training and eval tasks name that are not in the
raw folder yet; `prep` builds the recipe's own data (recipe `data:` block, e.g. unscrubbed as the
seed; a task whose labels come from a teacher LLM is prepared once by hand, `make prep RECIPE=...
TEACHER=...`, and reused). The report,
`runs/<run>/reproduce.md`, puts the seed's settings and results beside the run's
(psyfactory.seedtable). Every config and input is checked before the first step starts, so a
mistake costs seconds. A rerun resumes training from its last checkpoint and redoes the later
steps; `--steps` picks some (the Slurm pipeline runs `eval,compare,report` in its eval job).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from psyfactory.core.errors import ConfigError
from psyfactory.runspec import Run

STEPS = ("download", "prep", "train", "merge", "eval", "compare", "gguf", "report")


def parse_steps(text: str | None) -> tuple[str, ...]:
    if not text:
        return STEPS
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STEPS]
    if bad or not names:
        raise ConfigError(f"--steps {text!r}: expected a comma list of {', '.join(STEPS)}")
    return tuple(s for s in STEPS if s in names)


def reproduce(run: Run, *, steps: tuple[str, ...] = STEPS, limit: int | None = None, batch_size: int = 8,
              backend: str = "auto", out: Any = sys.stdout) -> Path:
    """Run the recipe's chain on the resolved run; returns the report's path."""
    from psyfactory import preflight, runner
    from psyfactory.compare import compare
    from psyfactory.evaluate import run_eval
    from psyfactory.recipes import load_recipe

    if run.recipe is None:
        raise ConfigError(f"run {run.name} has no recipe: make reproduce RECIPE=<name>")
    recipe = run.recipe
    spec = load_recipe(recipe).spec
    t_all = time.perf_counter()
    timings: list[tuple[str, float]] = []

    def say(msg: str) -> None:
        print(f"[reproduce] {msg}", file=out, flush=True)

    # fail fast: training config and data, every eval task's plugins and inputs, the GGUF stack (what the
    # download and prep steps will bring is checked after them)
    fetched = "download" in steps or ("prep" in steps and spec.data is not None)
    if "train" in steps and not fetched:
        preflight.check_run(run.config, run.task)
    evals = {task: run.for_task(task) for task in spec.eval_tasks}
    for view in evals.values():
        view.task.plugins(check="download" not in steps)
    if "gguf" in steps and spec.gguf:
        from psyfactory.gguf.common import setup_info

        setup_info()
    say(f"RECIPE={recipe} RUN={run.name}: {spec.model}/{spec.task}/{spec.method} on {run.hw}; steps {', '.join(steps)}")

    def step(name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        say(f"--- {name}")
        result = fn()
        timings.append((name, time.perf_counter() - t0))
        say(f"{name} done in {timings[-1][1]:.1f}s")
        return result

    if "download" in steps:
        step("download", lambda: fetch_sources(run, spec.task if spec.data else None, spec.eval_tasks))
    if "prep" in steps and spec.data is not None:
        step("prep", lambda: prepare_data(run, recipe))
    if fetched:  # what download and prep brought: the training data and the benchmark files, before training
        if "train" in steps:
            preflight.check_run(run.config, run.task)
        for view in evals.values():
            view.task.plugins()
    if "train" in steps:
        step("train", lambda: runner.train(run))
    if "merge" in steps:
        step("merge", lambda: runner.merge(run))
    if "eval" in steps:
        for task, view in evals.items():
            for base in (False, True):
                label = f"eval {task} {'base' if base else 'tuned'}"
                step(label, lambda view=view, base=base: run_eval(view, base=base, backend=backend, limit=limit,
                                                                  batch_size=batch_size))
    if "compare" in steps:
        md, _ = step("compare", lambda: compare(runs=[run.name], out_dir=run.dir))
        say(f"base vs tuned: {md}")
    if "gguf" in steps and spec.gguf:
        from psyfactory.gguf.export import export_for_run

        step(f"gguf {spec.gguf}", lambda: export_for_run(run, quant=spec.gguf.upper()))
    report = run.dir / "reproduce.md"
    if "report" in steps:
        write_report(recipe, run.dir, run.hw, timings, time.perf_counter() - t_all)
        say(f"report: {report}")
        print(report.read_text(encoding="utf-8"), file=out, flush=True)
    return report


def fetch_sources(run: Run, train_task: str | None, eval_tasks: list[str]) -> list[str]:
    """`make download` of what the chain reads from the raw folder, missing files only: the training task's
    sources when the recipe prepares its own data (`train_task`), and the benchmark files of the eval tasks
    (psy.download); a recipe on its task's prepared data needs no raw source for training."""
    from psyfactory.core import paths
    from psyfactory.data_prep.download import download
    from psyfactory.prep import download_sources

    wanted = ([*download_sources(train_task)] if train_task else []) + [
        s for t in eval_tasks for s in download_sources(t, data=False)]
    sources = list(dict.fromkeys(wanted))
    if not sources:
        return []
    raw = run.raw_dir or paths.raw_dir()
    failures = download(raw, sources=sources)
    if failures:  # what the chain cannot do without is checked next (prep, the benchmark files): say it here too
        print(f"[reproduce] download into {raw}: {len(failures)} file(s) failed ({failures[0]}); the steps that need "
              "them will say so (place them by hand, RAW_DIR=..., or rerun)", flush=True)
    return sources


def prepare_data(run: Run, recipe: str) -> None:
    """The recipe's own data (psyfactory.prep.prepare_recipe). A parser that needs a teacher LLM is not run
    here: its data, prepared once by `make prep RECIPE=<name> TEACHER=...`, are reused."""
    from psyfactory.core import paths
    from psyfactory.prep import prepare_recipe, recipe_spec

    raw = run.raw_dir or paths.raw_dir()
    spec, _ = recipe_spec(recipe, raw)
    if spec.needs_teacher:
        from psyfactory.core.errors import PreflightError
        from psyfactory.datasets import entry

        try:
            entry(f"{recipe}_train", paths.dataset_dir())
        except PreflightError as e:  # not prepared yet
            raise ConfigError(f"recipe {recipe}: its data are labelled by a teacher LLM; prepare them once with "
                              f"`make prep RECIPE={recipe} TEACHER=<url>|local` ({e})") from None
        print(f"[reproduce] {recipe}_train: labelled by a teacher earlier, reused (make prep RECIPE={recipe} "
              "TEACHER=... to redo it)", flush=True)
        return
    prepare_recipe(recipe, raw, paths.dataset_dir())


def write_report(recipe: str, run_dir: Path, hw: str, timings: list[tuple[str, float]], total: float) -> Path:
    """runs/<run>/reproduce.md: the recipe's side-by-side tables with this run's figures, and what ran."""
    from psyfactory.core.files import atomic_write_text
    from psyfactory.seedtable import recipe_section

    lines = [f"# Reproduction: RECIPE={recipe}, run `{run_dir.name}`", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M')} by `make reproduce`; hardware profile {hw}."]
    if timings:
        lines += ["", "| step | seconds |", "|---|---|"] + [f"| {n} | {s:.1f} |" for n, s in timings]
        lines += [f"| all | {total:.1f} |"]
    evals = sorted(p.parent.name for p in run_dir.glob("eval/*/metrics.json"))
    if evals:
        lines += ["", "Evaluations: " + ", ".join(f"`eval/{v}/report.md`" for v in evals)
                  + (" · base vs tuned: `compare.md`" if (run_dir / "compare.md").is_file() else "")]
    gguf = sorted(p.name for p in run_dir.glob("gguf/*.gguf"))
    if gguf:
        lines += ["", "GGUF: " + ", ".join(f"`gguf/{g}`" for g in gguf)]
    lines += ["", recipe_section(recipe, hw, run_dir).replace(f"## {recipe}\n", "## Recipe and seed\n", 1)]
    path = run_dir / "reproduce.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path

"""`psyfactory prep | data-report | download`: the data_prep package on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from psyfactory.core.errors import ConfigError

DEFAULT_SEED = 20240601  # data_prep.DEFAULT_SEED (not imported here: `--help` stays light)


def _dataset_dir_default() -> Path:
    from psyfactory.core.paths import dataset_dir

    return dataset_dir()


def _tasks(values: list[str] | None) -> list[str] | None:
    """--task may repeat or be comma-separated; 'all' (or nothing) means every task that declares data."""
    from psyfactory.prep import tasks_with_data

    names = [t.strip() for v in values or [] for t in v.split(",") if t.strip()]
    if not names or "all" in names:
        return None
    known = tasks_with_data()
    bad = [t for t in names if t not in known]
    if bad:
        raise ConfigError(f"unknown task(s) {bad}; tasks with data (psy.data): {', '.join(known)} or all")
    return names


def _teacher(args: argparse.Namespace) -> Any:
    if not args.teacher:
        return None
    if args.teacher == "local" or args.teacher.startswith(("http://", "https://")):
        from dataclasses import replace

        from psyfactory.data_prep.teacher import resolve_endpoint

        te = resolve_endpoint(args.teacher)
        if args.teacher_model:
            te = replace(te, endpoint=replace(te.endpoint, model=args.teacher_model))
        return replace(te, retries=args.teacher_retries) if args.teacher_retries is not None else te
    return args.teacher


def _gguf_path(value: str | None) -> Path:
    if value:
        return Path(value).expanduser()
    from psyfactory.smollm2 import gguf_file

    return gguf_file()


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts = {"oversample_risk": args.oversample_risk, "reply_rule": args.reply_rule}
    return opts if args.recipe else {"scrub": args.scrub, **opts}


def cmd_prep(args: argparse.Namespace) -> int:
    from functools import partial

    from psyfactory.prep import prepare, prepare_recipe

    tasks, raw, out = _tasks(args.task), Path(args.raw_dir), Path(args.dataset_dir or _dataset_dir_default())
    if args.recipe:
        if tasks:
            raise ConfigError("--recipe prepares the recipe's own data from its training task: drop --task")
        if not args.scrub:
            raise ConfigError("--recipe: the recipe says whether its data are scrubbed (recipe.data.scrub); drop "
                              "--no-scrub")
        prepare = partial(prepare_recipe, args.recipe)  # type: ignore[assignment]
        tasks = None
    if args.teacher != "gguf":
        if args.teacher_gguf:
            raise ConfigError("--teacher-gguf goes with --teacher gguf")
        prepare(*([] if args.recipe else [tasks]), raw, out, teacher=_teacher(args), seed=args.seed,
                **_options(args))
        return 0
    # a teacher served for this prep only (a Slurm `teacher` job: the GPU node serves and labels)
    import hashlib
    from dataclasses import replace

    from psyfactory.data_prep.teacher import served_endpoint
    from psyfactory.serve import serve_gguf

    gguf = _gguf_path(args.teacher_gguf)
    with serve_gguf(gguf, n_ctx=args.teacher_ctx) as ep:
        print(f"[prep] teacher {gguf.name} served by llama.cpp at {ep.base_url}", flush=True)
        te = served_endpoint(ep.base_url, ep.model, {"gguf": str(gguf.resolve()), "server": "llama-cpp-python",
                                                     "gguf_sha256": hashlib.sha256(gguf.read_bytes()).hexdigest()})
        if args.teacher_retries is not None:
            te = replace(te, retries=args.teacher_retries)
        prepare(*([] if args.recipe else [tasks]), raw, out, teacher=te, seed=args.seed, **_options(args))
    return 0


def task_info(model: str, tokenizer: str | None) -> Any:
    """data_report's view of a task under `model`: (tokenizer path, cutoff_len, psy.kind)."""
    from psyfactory.config import compose
    from psyfactory.models import materialize

    def info(task: str) -> tuple[str, int | None, str]:
        c = compose(model, task)
        if tokenizer:
            return tokenizer, c.lf.get("cutoff_len"), c.psy.kind
        materialize(c.model_ref)
        return str(c.lf["model_name_or_path"]), c.lf.get("cutoff_len"), c.psy.kind

    return info


def cmd_report(args: argparse.Namespace) -> int:
    from psyfactory.data_prep.report import data_report

    data_report(_tasks(args.task), Path(args.dataset_dir or _dataset_dir_default()), task_info(args.model, args.tokenizer),
                label=args.model if not args.tokenizer else "custom", cutoff_len=args.cutoff_len)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from psyfactory.data_prep.download import download

    sources = list(args.source or [])
    if args.task:  # the sources the tasks' YAMLs name (psy.data.download, psy.download)
        from psyfactory.prep import download_sources

        names = [t.strip() for v in args.task for t in v.split(",") if t.strip()]
        for task in names:
            found = download_sources(task)
            if not found:
                raise ConfigError(f"task '{task}' names no public source to download (psy.data.download or "
                                  "psy.download); its data come from its own file")
            sources += [s for s in found if s not in sources]
    failed = download(Path(args.raw_dir), sources=sources or None, base_url=args.base_url, force=args.force)
    return 1 if failed else 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def cmd_teacher(args: argparse.Namespace) -> int:
    """Serve a GGUF as the local teacher until Ctrl-C; TEACHER=local finds it through a state file."""
    import hashlib
    import os
    import signal
    import time

    from psyfactory.core.files import atomic_write_json
    from psyfactory.core.paths import local_teacher_file
    from psyfactory.serve import serve_gguf

    gguf = _gguf_path(args.gguf)
    state_file = local_teacher_file()
    log = state_file.parent / "server.log"
    with serve_gguf(gguf, port=args.port, model_name="teacher", n_ctx=args.ctx, log_path=log) as ep:
        digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
        atomic_write_json(state_file, {"base_url": ep.base_url, "model": ep.model, "gguf": str(gguf.resolve()),
                                       "gguf_sha256": digest, "server": "llama-cpp-python", "pid": os.getpid()})
        print(f"[teacher] {gguf.name} at {ep.base_url} (log {log}); label with: make prep TASK=student "
              "TEACHER=local   (Ctrl-C stops)", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)  # scancel / kill: stop the server, remove the state file
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            state_file.unlink(missing_ok=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prep", help="raw sources -> data/<task>/{train,eval}.jsonl + dataset_info.json")
    p.add_argument("--task", action="append", help="task(s) whose YAML declares psy.data, or all (default: all)")
    p.add_argument("--recipe", default=None,
                   help="a recipe's own data (its `data:` block: data/<recipe>/, `<recipe>_<split>`, e.g. unscrubbed "
                        "as the seed), from its training task's parser")
    p.add_argument("--raw-dir", default="raw/", help="raw data folder laid out as in docs/data.md, e.g. what `make download` fetched (default raw/)")
    p.add_argument("--dataset-dir", default=None, help="where dataset_info.json and data/ live (default: $PSY_DATASET_DIR, else the checkout or, installed, the current directory)")
    p.add_argument("--teacher", default=None,
                   help="student labeller: an OpenAI-compatible base URL, 'local' (the server `make teacher` runs, "
                        "schema-constrained), 'gguf' (serve --teacher-gguf with llama.cpp for this prep) or 'lexicon' "
                        "(offline keyword heuristic, NOT a real labeller). Default: $PSY_TEACHER_BASE_URL; none -> "
                        "student is skipped (an error when --task student is named)")
    p.add_argument("--teacher-gguf", default=None,
                   help="with --teacher gguf: the GGUF to serve (default: smollm2-135m, from its PyPI package)")
    p.add_argument("--teacher-ctx", type=int, default=4096, help="with --teacher gguf: context size (default 4096)")
    p.add_argument("--teacher-model", default=None, help="model name sent to the endpoint ($PSY_TEACHER_MODEL)")
    p.add_argument("--teacher-retries", type=int, default=None,
                   help="bounded retries per invalid answer (default: $PSY_TEACHER_RETRIES or 3)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="split seed (default %(default)s)")
    p.add_argument("--no-scrub", dest="scrub", action="store_false",
                   help="keep PII (phones, ID numbers, emails, QQ/WeChat ids, names, schools, classes) instead of "
                        "replacing it with placeholders in every task (default: scrubbed; recorded in the accounting)")
    p.add_argument("--oversample-risk", type=int, default=1, metavar="N",
                   help="student: each train item whose risk_flag is not none appears N times (default 1 = off; "
                        "eval is never oversampled; recorded in the accounting)")
    p.add_argument("--reply-rule", choices=("mean", "all", "any"), default="mean",
                   help="student: keep a dialogue when the mean (default), all or any of its counselor replies in "
                        "the kept window have >= 80 characters (seed 002's rule, applied to the whole item)")
    p.set_defaults(func=cmd_prep)

    t = subparsers.add_parser("teacher", help="serve a GGUF on loopback as the student teacher (TEACHER=local)")
    t.add_argument("--gguf", default=None, help="the GGUF to serve (default: smollm2-135m, from its PyPI package)")
    t.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    t.add_argument("--ctx", type=int, default=4096, help="context size in tokens (default 4096)")
    t.set_defaults(func=cmd_teacher)

    r = subparsers.add_parser("data-report", help="per-task counts, token-length histograms, truncation share, labels")
    r.add_argument("--task", action="append", help="task(s) (default: all prepared)")
    r.add_argument("--model", default="tiny", help="model whose tokenizer and task cutoff_len are used (default tiny)")
    r.add_argument("--tokenizer", default=None, help="tokenizer path overriding the model's")
    r.add_argument("--cutoff-len", type=int, default=None, help="override the task config's cutoff_len")
    r.add_argument("--dataset-dir", default=None)
    r.set_defaults(func=cmd_report)

    d = subparsers.add_parser("download", help="fetch the public raw sources into --raw-dir (hub files through "
                                               "huggingface_hub: HF_ENDPOINT, USE_MODELSCOPE_HUB=1)")
    d.add_argument("--raw-dir", default="raw/", help="where the raw files go (default raw/); their sha256 and origin "
                                                     "are recorded in <raw-dir>/download_manifest.json")
    d.add_argument("--source", action="append", help="psydt, cpsycoun, psyqa, emotion, longemotion, sos1k, psychcounsel_bench (default all)")
    d.add_argument("--task", action="append", help="the sources these tasks need (their psy.data.download and psy.download)")
    d.add_argument("--base-url", default=None,
                   help="a mirror laid out like the raw dir (<base>/<folder>/<file>); default: the hub (HF_ENDPOINT "
                        "or ModelScope) and GitHub at pinned revisions")
    d.add_argument("--force", action="store_true", help="re-download files that exist")
    d.set_defaults(func=cmd_download)


"""`make ask`: a prompt (or a file of prompts) answered by the base model and the tuned one, side by side,
non-interactively, as seed 004's compare scripts did by hand.

Both answers come from one model load when the run has a LoRA adapter (PEFT's adapter switched off for
the base answer); a merged model trained elsewhere (MODEL_PATH=) is loaded beside its base. Generation
follows the task's `psy.generation`; for a label task the crisis safety net is applied as in `make chat`.
Every call is kept in `runs/<run>/ask/<time>.jsonl`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from psyfactory.core.errors import ConfigError, EvalError
from psyfactory.core.files import atomic_write_jsonl
from psyfactory.evaluate import open_backend
from psyfactory.manifest import record_external
from psyfactory.resume import finished_training
from psyfactory.runspec import Run

MAX_PROMPTS = 1000


def prompts_from(prompt: str | None, file: str | None) -> list[str]:
    """The prompts of PROMPT= or FILE= (one per line, or JSONL records with a `prompt` field)."""
    if bool(prompt) == bool(file):
        raise ConfigError("ask needs exactly one of PROMPT='text' or FILE=prompts.txt|.jsonl")
    if prompt:
        return [prompt]
    path = Path(file).expanduser()  # type: ignore[arg-type]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"FILE={file}: cannot read it as UTF-8 text ({type(e).__name__})") from None
    out: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: line {n}: invalid JSON ({e.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
                raise ConfigError(f"{path}: line {n}: expected an object with a text field 'prompt'")
            out.append(rec["prompt"])
        else:
            out.append(line)
    if not out:
        raise ConfigError(f"{path}: no prompts in it")
    if len(out) > MAX_PROMPTS:
        raise ConfigError(f"{path}: {len(out)} prompts; `make ask` is for a handful (<= {MAX_PROMPTS}), use `make eval`")
    return out


def ask(run: Run, prompts: list[str], *, system: str | None = None, allow_unfinished: bool = False,
        out_dir: Path | None = None) -> list[dict[str, Any]]:
    """Base and tuned answers per prompt (and the crisis net's decision for label tasks)."""
    task = run.task
    gen = task.generation
    if run.external is None or run.external.adapter:
        if not run.has_adapter:
            raise EvalError(f"no adapter at {run.adapter_dir}: train the run first (`make train RUN={run.name}`) or "
                            "give ADAPTER= / MODEL_PATH= of a model trained elsewhere")
        finished_training(run, allow_unfinished=allow_unfinished)
    convs = [[*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": p}]
             for p in prompts]
    model_path = str(run.config.lf["model_name_or_path"])
    if run.external is not None and run.external.model_path:  # two folders: the YAML's base and the merged one
        from psyfactory.evaluate import _model_ref
        from psyfactory.models import resolve_model_path

        base_path = resolve_model_path(run.model, _model_ref(run))
        base_be = open_backend(run, model_path=base_path, adapter=None, backend="hf", gguf=None)
        base = base_be.generate(convs, gen)
        tuned = open_backend(run, model_path=model_path, adapter=None, backend="hf", gguf=None).generate(convs, gen)
        names = (base_path, model_path)
    else:
        be = open_backend(run, model_path=model_path, adapter=run.adapter_dir, backend="hf", gguf=None,
                          merge_adapter=False)
        tuned = be.generate(convs, gen)
        with be.without_adapter():
            base = be.generate(convs, gen)
        names = (model_path, f"{model_path} + {run.adapter_dir}")
    from psyfactory.inference import strip_think

    net, schema = task.safety_net(), task.label_schema
    rows = []
    for prompt, b, t in zip(prompts, base, tuned, strict=True):
        row: dict[str, Any] = {"prompt": prompt, "base": strip_think(b)[0], "tuned": strip_think(t)[0],
                               "base_model": names[0], "tuned_model": names[1], "task": task.name}
        if net is not None and schema is not None:
            from psyfactory.labelchat import label_reply

            for who in ("base", "tuned"):
                shown, decision = label_reply(row[who], schema, net, prompt)
                row[who] = shown
                if decision.raised or decision.hits:
                    row[f"{who}_safety_net"] = decision.record()
        rows.append(row)
    if run.external is not None:
        record_external(run.dir, {"name": run.name, "model": run.model, "task": run.trained_task,
                                  "method": run.method, "hw": run.hw, "overrides": [], "recipe": None},
                        run.external.record())
    out_dir = out_dir or run.dir / "ask"
    atomic_write_jsonl(out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}.jsonl",
                       [{**r, "generation": gen.model_dump(mode="json")} for r in rows])
    return rows

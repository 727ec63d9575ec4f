"""What a rerun of training resumes from: the newest complete checkpoint of the same config and data.

LLaMA-Factory resumes from the last `output_dir/checkpoint-N` when `overwrite_output_dir` is false.
Before that happens (`make train` and the Slurm training job alike):
- an incomplete checkpoint (a kill during the save: `trainer_state.json`, which the Trainer writes
  last, is missing) is moved aside as `incomplete-checkpoint-N`, with a one-line notice, so the
  newest complete one is used;
- checkpoints written under another config (hash of the flat LF config) are refused;
- checkpoints trained on other data (sha256 of the dataset files recorded in the manifest) are
  refused, unless the rerun says it continues on the new data on purpose (`--accept-data-change`,
  recorded in the manifest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from psyfactory.core.errors import RunError


def checkpoints(adapter: Path) -> list[Path]:
    """`checkpoint-N` folders in numeric order."""
    found = [p for p in adapter.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def complete(ckpt: Path) -> bool:
    """The Trainer writes trainer_state.json last in a checkpoint (after the weights, optimizer and RNG
    states; transformers' `_save_checkpoint`): a checkpoint is complete when that file is there and
    parses. A write cut short leaves a file that is empty or ends inside the JSON object, which never
    parses (tests/test_faults.py checks every prefix of a real one), so no atomic write is needed and
    the Trainer is not patched."""
    try:
        json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def set_aside_incomplete(adapter: Path) -> list[Path]:
    """Move incomplete checkpoints out of LF's `checkpoint-N` pattern; returns their new paths."""
    moved = []
    for ckpt in checkpoints(adapter):
        if not complete(ckpt):
            dest = ckpt.with_name(f"incomplete-{ckpt.name}")
            n = 1
            while dest.exists():
                dest, n = ckpt.with_name(f"incomplete-{ckpt.name}.{n}"), n + 1
            ckpt.rename(dest)
            print(f"[psyfactory] {ckpt} is incomplete (no whole trainer_state.json: a save was interrupted): "
                  f"set aside as {dest.name}; resuming from the newest complete checkpoint", flush=True)
            moved.append(dest)
    return moved


def data_changes(previous: dict[str, str], now: dict[str, str]) -> list[str]:
    """`file: sha256 a… -> b…` for every dataset file whose content differs from what the run saw."""
    out = []
    for path in sorted(set(previous) | set(now)):
        a, b = previous.get(path), now.get(path)
        if a != b:
            out.append(f"{path} (sha256 {a[:12] + '…' if a else 'none'} then, {b[:12] + '…' if b else 'none'} now)")
    return out


def check(c: Any, data: dict[str, str], *, accept_data_change: bool = False,
          restart_hint: str = "ARGS=overwrite_output_dir=true") -> tuple[Path | None, list[str]]:
    """(checkpoint training will resume from or None, the data changes accepted on purpose)."""
    from psyfactory.manifest import config_hash, read_manifest

    adapter = Path(c.lf["output_dir"])
    if c.lf.get("overwrite_output_dir") or not checkpoints(adapter):
        return None, []
    set_aside_incomplete(adapter)
    ckpts = checkpoints(adapter)
    if not ckpts:
        return None, []
    previous = read_manifest(c.run_dir).get("stages", {}).get("train") or {}
    now = config_hash(c.lf)
    if previous.get("config_hash") != now:
        what = f"config hash {previous['config_hash']}" if previous.get("config_hash") else "no recorded config"
        raise RunError(
            f"{adapter} holds {len(ckpts)} checkpoint(s) of a run with a different config ({what}; this one is "
            f"{now}, manifest {c.run_dir / 'manifest.json'}): resuming would mix two runs. Name a new run "
            f"(RUN=<name>) or start this one over ({restart_hint}).")
    changed = data_changes(previous.get("data") or {}, data)
    if changed and not accept_data_change:
        raise RunError(
            f"{adapter} holds {len(ckpts)} checkpoint(s) trained on other data: {'; '.join(changed)}. Resuming would "
            f"mix two datasets in one adapter. Start over ({restart_hint}), name a new run (RUN=<name>), or continue "
            "on the new data on purpose with --accept-data-change (recorded in the manifest).")
    return ckpts[-1], changed


def finished_training(run: Any, *, allow_unfinished: bool = False) -> None:
    """Refuse to use an adapter whose training did not finish (a stopped run leaves a complete-looking
    adapter), saying where it stopped; `allow_unfinished` uses it anyway. A model trained elsewhere
    (psyfactory.runspec.External) has no training stage here and passes."""
    from psyfactory.manifest import read_manifest

    stage = read_manifest(run.dir).get("stages", {}).get("train")
    if not stage or stage.get("status") == "done":
        return
    adapter = run.adapter_dir
    state = adapter / "trainer_state.json"
    step = ""
    if state.is_file():
        try:
            st = json.loads(state.read_text(encoding="utf-8"))
            step = f" at step {st.get('global_step')} of {st.get('max_steps')}"
        except ValueError:
            step = ""
    elif ckpts := checkpoints(adapter):
        step = f" (last checkpoint {ckpts[-1].name})"
    if allow_unfinished:
        print(f"[psyfactory] --allow-unfinished: using the adapter of {run.name}, whose training is "
              f"'{stage.get('status')}'{step}", flush=True)
        return
    raise RunError(f"run {run.name}: training did not finish (manifest status '{stage.get('status')}'{step}); rerun "
                   f"`make train RUN={run.name}` to complete it, or pass --allow-unfinished to use the adapter as it is")

"""Issue 22's remaining reproductions, one test each: the input a user gets wrong, and the one `error:` line
(exit 2, no traceback) they now see instead of the traceback or silent wrong answer of the round at 47eb8c9.
Config-level cases run the CLI in this process; the `make` cases go through the Makefile as a user types
them. The storage errors cannot be produced for real here (CI runs as root, no full disk to hand), so the
operating system's refusal is simulated where PsyFactory writes a file (`core.files.atomic_open`)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from psyutil import cli, one_error_line

from psyfactory.core.paths import REPO_ROOT

SAMPLES = REPO_ROOT / "data_prep" / "samples"
CPU = ["--hw", "cpu"]

# A user's own model files (PSY_CONFIG_DIRS), each wrong in one way, and the line each one gets.
BAD_MODELS = {
    "template-list": ("model_name_or_path: builtin:tiny\ntemplate: [qwen3]\n",
                      "template must be a template name (a string), got ['qwen3']"),
    "no-weights": ("template: qwen3\n", "models/no-weights.yaml: model_name_or_path must be a hub id or a path"),
    "recursive": ("model_name_or_path: builtin:tiny\ntemplate: qwen3\na: &x [*x]\n",
                  "models/recursive.yaml: a YAML alias refers to itself (recursive anchor)"),
    "not-utf8": (b"model_name_or_path: builtin:tiny\ntemplate: qwen3 \xff\n", "models/not-utf8.yaml: not valid UTF-8"),
    "interpolation": ("model_name_or_path: builtin:tiny\ntemplate: ${nope}\n",
                      "cannot compose the layers: InterpolationKeyError: Interpolation key 'nope' not found"),
}


@pytest.fixture
def own_configs(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = workspace / "my-configs"
    (root / "models").mkdir(parents=True)
    monkeypatch.setenv("PSY_CONFIG_DIRS", str(root))
    return root


@pytest.mark.parametrize("name", list(BAD_MODELS))
def test_a_broken_model_file_is_one_line(own_configs: Path, name: str) -> None:
    text, expected = BAD_MODELS[name]
    target = own_configs / "models" / f"{name}.yaml"
    target.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert expected in one_error_line(cli("config", "--model", name, *CPU, check=False))


def test_config_links_and_folders_are_not_followed(own_configs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("model_name_or_path: builtin:tiny\ntemplate: qwen3\n")
    models = own_configs / "models"
    (models / "linked.yaml").symlink_to(outside)
    (models / "dangling.yaml").symlink_to(tmp_path / "gone.yaml")
    (models / "folder.yaml").mkdir()
    err = one_error_line(cli("config", "--model", "linked", *CPU, check=False))
    assert f"models/linked.yaml: a symbolic link to {outside}, outside {own_configs}" in err
    for name in ("dangling", "folder"):
        assert f"unknown MODEL '{name}'; valid:" in one_error_line(cli("config", "--model", name, *CPU, check=False))


def test_a_missing_model_store_is_named_not_ignored(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSY_MODEL_DIR", str(workspace / "no-such-store"))
    err = one_error_line(cli("config", "--model", "qwen3-0.6b", *CPU, check=False))
    assert f"PSY_MODEL_DIR={workspace / 'no-such-store'}: no such folder" in err and "unset it" in err


@pytest.mark.parametrize(("override", "expected"), [
    ("psy.max_new_token=5", "unknown key 'psy.max_new_token' (did you mean 'psy.generation.max_new_tokens'?)"),
    ("output_dir=../other/adapter", "output_dir is the run's own folder"),
])
def test_override_mistakes_are_named_for_what_they_are(workspace: Path, override: str, expected: str) -> None:
    err = one_error_line(cli("config", *CPU, override, "overwrite_output_dir=true", check=False))
    assert expected in err and "credential" not in err


@pytest.mark.parametrize(("option", "expected"), [
    (["--limit", "-1"], "--limit -1: the number of items to evaluate, at least 1"),
    (["--batch-size", "0"], "--batch-size 0: at least 1"),
    (["--batch-size", "-2"], "--batch-size -2: at least 1"),
])
def test_eval_options_out_of_range_are_refused(workspace: Path, option: list[str], expected: str) -> None:
    res = cli("eval", "--model", "tiny", "--task", "psydt", *CPU, "--base", *option, check=False)
    assert expected in one_error_line(res)


def test_a_damaged_manifest_is_one_line_for_every_command(workspace: Path) -> None:
    run = workspace / "runs" / "tiny" / "psydt" / "lora"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text('{"stages": {')
    for command in (["merge"], ["eval", "--base"]):
        err = one_error_line(cli(*command, "--model", "tiny", "--task", "psydt", *CPU, check=False))
        assert f"{run / 'manifest.json'}: damaged (line 1:" in err and "move it aside" in err


def test_disk_full_during_prep_keeps_the_previous_data(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = workspace / "ds"
    cli("prep", "--task", "emotion", "--raw-dir", str(SAMPLES), "--dataset-dir", str(ds))
    before = {p: p.read_bytes() for p in (ds / "data" / "emotion").glob("*.jsonl")}
    assert before

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("psyfactory.core.files.os.fsync", full)
    err = one_error_line(cli("prep", "--task", "emotion", "--raw-dir", str(SAMPLES), "--dataset-dir", str(ds),
                             check=False))
    assert f"error: {ds}" in err and "No space left on device (no space left on the device)" in err
    assert {p: p.read_bytes() for p in (ds / "data" / "emotion").glob("*.jsonl")} == before  # nothing lost
    assert not [p for p in ds.rglob("*.tmp")]  # nothing half-written left behind


@pytest.mark.parametrize("folder", ["runs", "dataset"])
def test_a_read_only_folder_is_one_line(workspace: Path, monkeypatch: pytest.MonkeyPatch, folder: str) -> None:
    import tempfile

    def read_only(*args, dir=None, **kwargs):  # noqa: A002 (tempfile's own keyword)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    if folder == "runs":
        err = one_error_line(cli("train", "--model", "tiny", "--task", "psydt", *CPU, "--dry-run", check=False))
        where = workspace / "runs" / "tiny" / "psydt" / "lora"
    else:
        where = workspace / "ds"
        err = one_error_line(cli("prep", "--task", "emotion", "--raw-dir", str(SAMPLES), "--dataset-dir", str(where),
                                 check=False))
    assert f"error: {where}" in err and "(read-only file system)" in err


def test_credentials_in_an_endpoint_url_are_never_written() -> None:
    from psyfactory.core.llm_client import redact, redact_all

    url = "http://user:PW@host:8000/v1?key=K&model=m"
    assert redact(url) == "http://***@host:8000/v1?key=***&model=m"
    written = json.dumps(redact_all({"labelled_by": {"base_url": url, "models": [url]}}))
    assert "PW" not in written and "=K" not in written


@pytest.mark.parametrize(("variables", "expected"), [
    (["RUN=my run"], "RUN='my run': a run name is '/'-separated segments"),
    (["ARGS=learning_rate=`touch {marker}`"], "overrides must look like key=value"),
    (["ARGS=max_steps=1 & touch {marker}"], "overrides must look like key=value, got: &"),
])
def test_make_passes_names_and_args_without_a_shell(tmp_path: Path, variables: list[str], expected: str) -> None:
    """What a user types into RUN= and ARGS= reaches the CLI as words: nothing in it runs."""
    marker = tmp_path / "ran"
    env = {**os.environ, "PSY_RUNS_DIR": str(tmp_path / "runs"), "PSY_DATASET_DIR": str(tmp_path)}
    res = subprocess.run(["make", "-s", "config", "HW=cpu", *(v.format(marker=marker) for v in variables)],
                         capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert res.returncode != 0 and len(errors) == 1 and expected in errors[0], res.stderr
    assert "Traceback" not in res.stderr and not marker.exists()


def test_disk_full_inside_the_trainer_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The trainer process (`python -m psyfactory.lf_train`) saving a checkpoint onto a full disk: one line
    naming the file and what is kept, exit 1 (the parent then records the run as failed)."""
    import signal

    import llamafactory.train.tuner as tuner

    from psyfactory import lf_train

    out = tmp_path / "adapter"
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"output_dir: {out}\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "checkpoint-20" / "adapter_model.safetensors"))

    monkeypatch.setattr(tuner, "run_exp", full)
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        assert lf_train.main([str(cfg)]) == 1
    finally:
        signal.signal(signal.SIGUSR1, previous)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out / 'checkpoint-20' / 'adapter_model.safetensors'}: ")
    assert "(no space left on the device) while training; the checkpoints saved before it are kept in" in err[0]


def test_an_unknown_lora_target_is_refused_before_training(workspace: Path) -> None:
    """Checked on the model built on the meta device (no weights read), before any data is tokenized."""
    args = ["train", "--model", "tiny", "--task", "psydt", *CPU, "--dry-run"]
    err = one_error_line(cli(*args, "lora_target=q_proj,no_such_proj", check=False))
    assert "lora_target=q_proj,no_such_proj: the model has no module named no_such_proj" in err
    assert "its linear layers are " in err and "q_proj" in err.split("its linear layers are ")[1]
    cli(*args, "lora_target=q_proj,v_proj")  # real names pass

"""Faults that used to lose work or mislead (one test per case): data changed under a run, a torn
checkpoint, value errors found late, tracebacks in prep, half-finished preps, unknown speakers and
oversized records, credentials in configs, and using a run whose training did not finish."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from psyutil import cli, one_error_line

from psyfactory.core.paths import REPO_ROOT
from psyfactory.data_prep import prepare

SAMPLES = REPO_ROOT / "data_prep" / "samples"
TRAIN = ["--model", "tiny", "--task", "psydt", "--hw", "cpu", "max_steps=4", "save_steps=2", "logging_steps=1",
         "cutoff_len=128"]


def run_dir(ws: Path) -> Path:
    return ws / "runs" / "tiny" / "psydt" / "lora"


# ---------------------------------------------------------------- 1. data changed under a run
@pytest.mark.slow
def test_changed_data_is_not_mixed_into_a_run_silently(workspace):
    cli("train", *TRAIN, "max_steps=2")  # a run with a checkpoint that a rerun would resume from
    data = workspace / "dataset" / "data" / "psydt" / "train.jsonl"
    rows = data.read_text(encoding="utf-8").splitlines()
    data.write_text("\n".join(reversed(rows)) + "\n", encoding="utf-8")  # re-prepped: same size, other data
    err = one_error_line(cli("train", *TRAIN, "max_steps=2", check=False))
    assert "checkpoint(s) trained on other data" in err and str(data) in err and "--accept-data-change" in err
    assert "overwrite_output_dir=true" in err and "RUN=<name>" in err
    state = json.loads((run_dir(workspace) / "adapter" / "trainer_state.json").read_text())
    assert state["global_step"] == 2  # nothing trained on the new data
    out = cli("train", *TRAIN, "max_steps=2", "--accept-data-change").stdout
    assert "continuing" in out and "on changed data" in out
    stage = json.loads((run_dir(workspace) / "manifest.json").read_text())["stages"]["train"]
    assert stage["status"] == "done" and stage["data_change_accepted"] and str(data) in stage["data_change_accepted"][0]


def test_the_slurm_guard_checks_the_data_too(workspace):
    from psyfactory.config import compose
    from psyfactory.core.errors import UserError
    from psyfactory.manifest import config_hash
    from psyfactory.slurm import check_resumable

    c = compose("tiny", "psydt", "lora", "cpu", ["max_steps=10"])
    (Path(c.lf["output_dir"]) / "checkpoint-2").mkdir(parents=True)
    (Path(c.lf["output_dir"]) / "checkpoint-2" / "trainer_state.json").write_text("{}")
    data = workspace / "dataset" / "data" / "psydt" / "train.jsonl"
    stage = {"config_hash": config_hash(c.lf), "data": {str(data): "0" * 64}}
    (c.run_dir / "manifest.json").write_text(json.dumps({"stages": {"train": stage}}))
    with pytest.raises(UserError, match=r"trained on other data: .*train.jsonl \(sha256 000000000000… then"):
        check_resumable(c)
    assert check_resumable(c, accept_data_change=True) == Path(c.lf["output_dir"]) / "checkpoint-2"


# ---------------------------------------------------------------- 2. a torn checkpoint
@pytest.mark.slow
def test_a_torn_checkpoint_is_set_aside_and_the_rerun_resumes(workspace):
    cli("train", *TRAIN)  # checkpoint-2 and checkpoint-4
    adapter = run_dir(workspace) / "adapter"
    torn = adapter / "checkpoint-4"
    for f in torn.iterdir():  # as a kill during the save leaves it: the adapter config, nothing else
        if f.name != "adapter_config.json":
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    res = cli("train", *TRAIN)
    assert "checkpoint-4 is incomplete" in res.stdout and "set aside as incomplete-checkpoint-4" in res.stdout
    assert sorted(p.name for p in (adapter / "incomplete-checkpoint-4").iterdir()) == ["adapter_config.json"]
    stage = json.loads((run_dir(workspace) / "manifest.json").read_text())["stages"]["train"]
    assert stage["status"] == "done" and stage["resumed_from"].endswith("checkpoint-2")
    assert json.loads((torn / "trainer_state.json").read_text())["global_step"] == 4  # steps 3-4 trained again


def test_a_half_written_trainer_state_marks_a_checkpoint_incomplete(tmp_path):
    from transformers.trainer_callback import TrainerState

    from psyfactory.resume import complete, set_aside_incomplete

    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_step": 4, "log_hist')):  # 4: cut mid-write
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert [p.name for p in set_aside_incomplete(tmp_path)] == ["incomplete-checkpoint-4"]
    assert complete(tmp_path / "checkpoint-2")
    # why no atomic write is needed: the Trainer's own file, cut at any byte, never passes for complete
    TrainerState(global_step=7).save_to_json(str(tmp_path / "state.json"))
    whole = (tmp_path / "state.json").read_bytes()
    cut = tmp_path / "checkpoint-9"
    cut.mkdir()
    for n in range(len(whole.rstrip())):  # any cut before the closing brace
        (cut / "trainer_state.json").write_bytes(whole[:n])
        assert not complete(cut), n
    (cut / "trainer_state.json").write_bytes(whole)
    assert complete(cut)


# ---------------------------------------------------------------- 3. value errors before the model loads
def test_value_errors_are_one_line_before_anything_loads(workspace):
    err = one_error_line(cli("train", *TRAIN, "learning_rate=abc", check=False))
    assert "learning_rate='abc' is not a valid value (LLaMA-Factory expects float" in err
    err = one_error_line(cli("config", "--hw", "cpu", "num_train_epochs=abc", check=False))
    assert "num_train_epochs='abc'" in err
    err = one_error_line(cli("config", "--hw", "cpu", "lr_scheduler_type=cosin", check=False))
    assert "lr_scheduler_type='cosin' is not a valid value" in err and "'cosine'" in err
    for bad, say in (("learning_rate=-1", "learning_rate=-1 must be greater than 0"),
                     ("lora_rank=0", "lora_rank=0 must be greater than 0"),
                     ("per_device_train_batch_size=0", "per_device_train_batch_size=0 must be greater than 0"),
                     ("cutoff_len=0", "cutoff_len=0 must be greater than 0"),
                     ("lora_dropout=1.5", "lora_dropout=1.5 must be below 1")):
        assert say in one_error_line(cli("config", "--hw", "cpu", bad, check=False)), bad
    err = one_error_line(cli("config", "--hw", "cpu", "--lf-check", "val_size=0.05", "eval_strategy=no",
                             "load_best_model_at_end=true", check=False))
    assert "LLaMA-Factory rejects the config" in err and "load_best_model_at_end" in err
    err = one_error_line(cli("train", *TRAIN, "resume_from_checkpoint=/nowhere", check=False))
    assert "resume_from_checkpoint=/nowhere is not a checkpoint folder" in err
    assert not (run_dir(workspace) / "manifest.json").exists()  # nothing recorded as running
    cli("train", *TRAIN, "learning_rate=1e-4", "--dry-run")  # a number written as a string is converted
    assert yaml.safe_load((run_dir(workspace) / "train.yaml").read_text())["learning_rate"] == 1e-4


# ---------------------------------------------------------------- 4. tracebacks in prep
def test_unreadable_case_files_are_quarantined_and_a_teacher_typo_is_one_line(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(SAMPLES, raw)
    data = raw / "CPsyCoun" / "CPsyCounD" / "Data"
    (data / "case_90.txt").mkdir()  # a directory with a case file's name
    (data / "case_91.txt").symlink_to(tmp_path / "nowhere.txt")  # a dangling symlink
    res = prepare(["cpsycoun"], raw, tmp_path / "ds", quiet=True)
    q = {r["file"].rsplit("/", 1)[-1]: r for r in map(json.loads, (tmp_path / "ds" / "data" / "cpsycoun" /
                                                                   "quarantine.jsonl").read_text().splitlines())}
    assert q["case_90.txt"]["reason"] == q["case_91.txt"]["reason"] == "unreadable"
    assert "IsADirectoryError" in q["case_90.txt"]["detail"] and "FileNotFoundError" in q["case_91.txt"]["detail"]
    a = res["cpsycoun"][0]
    assert a.read == a.written + sum(a.quarantined.values())
    err = one_error_line(cli("prep", "--raw-dir", str(raw), "--dataset-dir", str(tmp_path / "ds2"), "--task",
                             "student", "--teacher", "lexcon", check=False))
    assert "unknown teacher 'lexcon'; valid: lexicon, local (the server of `make teacher`), gguf" in err
    assert "http(s)://<OpenAI-compatible base URL>" in err


# ---------------------------------------------------------------- 5. half-finished preps
def _digest(ds: Path) -> dict[str, str]:
    import hashlib

    return {p.relative_to(ds).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(ds.rglob("*")) if p.is_file() and ".lock" not in p.name}


def test_a_missing_source_fails_before_anything_is_written(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(SAMPLES, raw)
    ds = tmp_path / "ds"
    prepare(["psydt"], raw, ds, quiet=True)
    before = _digest(ds)
    shutil.rmtree(raw / "PsyQA")
    from psyfactory.data_prep import DataError

    with pytest.raises(DataError, match="PsyQA"):
        prepare(None, raw, ds, teacher="lexicon", quiet=True)  # psydt and cpsycoun come before psyqa
    assert _digest(ds) == before  # nothing written, nothing registered


def test_a_prep_killed_while_committing_is_finished_by_the_next_one(tmp_path, monkeypatch):
    from psyfactory.data_prep import DataError, commit
    from psyfactory.preflight import check_datasets

    ds = tmp_path / "ds"
    prepare(["emotion"], SAMPLES, ds, quiet=True)  # the old set
    real_rename, calls = commit._rename, []

    def dying_rename(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")  # stands in for SIGKILL between two renames of the commit
        real_rename(src, dst)

    monkeypatch.setattr(commit, "_rename", dying_rename)
    with pytest.raises(KeyboardInterrupt):
        prepare(["emotion", "psydt"], SAMPLES, ds, quiet=True)
    monkeypatch.setattr(commit, "_rename", real_rename)
    assert (ds / "data" / commit.JOURNAL).exists()  # committed, not yet applied: readers must not use it
    with pytest.raises(DataError, match="stopped while committing.*run `make prep` again"):
        check_datasets("emotion_train", ds)
    (ds / "data" / "emotion" / ".train.jsonl.x1y2.tmp").write_text("half")  # an atomic write cut short
    prepare(["cpsycoun"], SAMPLES, ds, quiet=True)  # any next prep finishes the commit first
    assert not (ds / "data" / commit.JOURNAL).exists()
    assert not list((ds / "data").rglob(".*.tmp")) and not list((ds / "data").rglob(".*.prep-*"))
    info = json.loads((ds / "dataset_info.json").read_text())
    assert {"emotion_train", "psydt_train", "cpsycoun_train"} <= set(info)
    fresh = tmp_path / "fresh"
    prepare(["emotion", "psydt", "cpsycoun"], SAMPLES, fresh, quiet=True)
    assert {k: v for k, v in _digest(ds).items() if k.startswith("data/")} == \
           {k: v for k, v in _digest(fresh).items() if k.startswith("data/")}  # the new set, whole


# ---------------------------------------------------------------- 6. unknown speakers, oversized records
def test_unknown_speakers_and_oversized_records_are_quarantined(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(SAMPLES, raw)
    data = raw / "CPsyCoun" / "CPsyCounD" / "Data"
    (data / "case_80.txt").write_text("来访者：我最近睡不好。\n\n咨询师：能多说一点吗？\n", encoding="utf-8")
    (data / "case_81.txt").write_text("来访者：妈妈总让我学习。\n\n妈妈：我是为你好。\n\n心理咨询师：你们都很在乎彼此。\n",
                                      encoding="utf-8")
    (data / "case_82.txt").write_text("来访者：我很紧张。\n\n心理咨询师：我们试试放松。\n建议：每天深呼吸十分钟。\n",
                                      encoding="utf-8")
    (data / "case_83.txt").write_text("来访者：" + "很" * 600_000 + "\n\n心理咨询师：嗯。\n", encoding="utf-8")
    with open(raw / "emotion" / "train.txt", "a", encoding="utf-8") as fh:
        fh.write("i feel " + "so " * 400_000 + "tired;sadness\n")
    res = prepare(["cpsycoun", "emotion"], raw, tmp_path / "ds", quiet=True)
    q = {(r["file"].rsplit("/", 1)[-1], r["reason"]) for r in map(json.loads, (
        tmp_path / "ds" / "data" / "cpsycoun" / "quarantine.jsonl").read_text().splitlines())}
    assert {("case_80.txt", "unknown_speaker"), ("case_81.txt", "unknown_speaker"),
            ("case_83.txt", "record_too_large")} <= q
    assert not any(f == "case_82.txt" for f, _ in q)  # `建议：` inside a turn is the counselor's text
    d = next(a for a in res["cpsycoun"] if a.source.startswith("CPsyCounD"))
    assert d.notes["prefixed_continuation_line"] == 1
    train = [json.loads(x) for x in (tmp_path / "ds" / "data" / "cpsycoun" / "train.jsonl").read_text().splitlines()]
    case82 = next(r for r in train if r["id"] == "case_82")
    assert case82["messages"][-1]["content"] == "我们试试放松。\n建议：每天深呼吸十分钟。"
    e = next(a for a in res["emotion"] if a.source == "emotion/train.txt")
    assert e.quarantined["record_too_large"] == 1


# ---------------------------------------------------------------- 7. credentials in configs
def test_credentials_in_configs_are_refused_naming_the_environment_variable(workspace):
    err = one_error_line(cli("config", "--task", "psyqa", "--hw", "cpu",
                             "psy.eval_options.llm_judge.api_key=sk-live-123", check=False))
    assert "psy.eval_options.llm_judge.api_key holds a credential" in err and "PSY_JUDGE_API_KEY" in err
    assert "sk-live-123" not in err
    err = one_error_line(cli("train", *TRAIN, "hf_hub_token=hf_abc", check=False))
    assert "hf_hub_token holds a credential" in err and "HF_TOKEN" in err and "hf_abc" not in err
    assert not (workspace / "runs").exists()  # nothing was written
    cli("config", "--hw", "cpu", "max_new_tokens=64")  # a key that merely contains "token" is fine


# ---------------------------------------------------------------- 8. using a run that did not finish
# (a real SIGUSR1 stop: test_e2e_spine.py::test_sigusr1_saves_a_checkpoint_and_a_rerun_resumes_from_it)
def test_an_unfinished_run_is_refused_unless_told(workspace, capsys):
    from psyfactory.core.errors import RunError
    from psyfactory.resume import finished_training
    from psyfactory.runspec import resolve

    c = resolve(model="tiny", task="psydt", method="lora", hw="cpu")
    adapter = c.adapter_dir
    (adapter / "checkpoint-3").mkdir(parents=True)
    (c.dir / "manifest.json").write_text(json.dumps({"stages": {"train": {"status": "failed"}}}))
    with pytest.raises(RunError, match=r"training did not finish \(manifest status 'failed' \(last checkpoint "
                                       r"checkpoint-3\)\); rerun `make train RUN=tiny/psydt/lora`"):
        finished_training(c)
    finished_training(c, allow_unfinished=True)
    assert "--allow-unfinished: using the adapter of tiny/psydt/lora" in capsys.readouterr().out
    (c.dir / "manifest.json").write_text(json.dumps({"stages": {"train": {"status": "done"}}}))
    finished_training(c)


# ---------------------------------------------------------------- locks: one writer per dataset folder and per run
def test_a_second_prep_of_a_folder_is_refused_naming_the_first(tmp_path):
    """The prep lock is taken before the orphan cleanup, so a second prep can never delete the staged
    files of one that is still writing them (issue 22, item 1)."""
    from psyfactory.core.files import exclusive

    ds = tmp_path / "ds"
    staged = ds / "data" / "emotion" / ".train.jsonl.prep-abcd"
    staged.parent.mkdir(parents=True)
    staged.write_text("being written by the first prep\n")
    with exclusive(ds / "data" / ".prep.lock", f"dataset folder {ds}"):
        err = one_error_line(cli("prep", "--task", "emotion", "--raw-dir", str(SAMPLES), "--dataset-dir", str(ds),
                                 check=False))
        assert f"dataset folder {ds} is in use by pid {os.getpid()}" in err
        assert staged.is_file()  # nothing of the first prep was touched
    cli("prep", "--task", "emotion", "--raw-dir", str(SAMPLES), "--dataset-dir", str(ds))  # free again
    assert not staged.exists()  # the next prep cleans what a dead one left


def test_a_second_command_on_a_run_is_refused_naming_the_first(workspace):
    from psyfactory.core.files import exclusive
    from psyfactory.runspec import resolve

    run = resolve(model="tiny", task="psydt", method="lora", hw="cpu")
    with exclusive(run.dir / ".lock", f"run {run.name}"):
        err = one_error_line(cli("train", *TRAIN, "--dry-run", check=False))
        assert f"run tiny/psydt/lora is in use by pid {os.getpid()}" in err
        assert not (run.dir / "train.yaml").exists()  # the holder's config is not rewritten under it
    cli("train", *TRAIN, "--dry-run")


def test_a_slurm_job_waits_for_the_run_instead(workspace, monkeypatch):
    """PSY_WAIT_FOR_RUN=1 (set in the Slurm job scripts: merge and eval both follow train and may start
    together): the second command waits for the lock, says for whom, and then runs."""
    import threading

    from psyfactory.core.files import exclusive
    from psyfactory.runspec import resolve

    monkeypatch.setenv("PSY_WAIT_FOR_RUN", "1")
    run = resolve(model="tiny", task="psydt", method="lora", hw="cpu")
    done: dict = {}
    second = threading.Thread(target=lambda: done.update(res=cli("train", *TRAIN, "--dry-run", check=False)))
    with exclusive(run.dir / ".lock", f"run {run.name}"):
        second.start()
        second.join(timeout=10)
        assert second.is_alive() and not (run.dir / "train.yaml").exists()  # waiting, nothing written
    second.join(timeout=120)
    assert not second.is_alive() and done["res"].returncode == 0, done
    assert f"run tiny/psydt/lora is in use by pid {os.getpid()}" in done["res"].stderr
    assert "waiting for it" in done["res"].stderr and (run.dir / "train.yaml").is_file()


def test_an_interrupted_evaluation_leaves_the_previous_variant_whole(workspace, monkeypatch):
    """A variant is written aside and renamed into place whole (issue 22, item 5)."""
    from psyfactory import evaluate

    def finished(run, out_dir, name, *args, **kwargs):
        (out_dir / "predictions.jsonl").write_text('{"id": "1", "prediction": "old"}\n')
        (out_dir / "metrics.json").write_text(json.dumps({"headline": {}, "fingerprint": {}, "n": 1}))

    def killed(run, out_dir, name, *args, **kwargs):
        (out_dir / "predictions.jsonl").write_text('{"id": "1", "prediction": "new, half written"}\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "_evaluate", finished)
    cli("eval", "--model", "tiny", "--task", "psydt", "--hw", "cpu", "--base")
    variant = workspace / "runs" / "tiny" / "psydt" / "lora" / "eval" / "base"
    before = {p.name: p.read_bytes() for p in variant.iterdir()}
    monkeypatch.setattr(evaluate, "_evaluate", killed)
    assert cli("eval", "--model", "tiny", "--task", "psydt", "--hw", "cpu", "--base", "--overwrite",
               check=False).returncode == 130
    assert {p.name: p.read_bytes() for p in variant.iterdir()} == before  # the old one, untouched
    assert [p.name for p in variant.parent.iterdir()] == ["base"]  # no half variant beside it


# ---------------------------------------------------------------- stage lineage (issue 22, items 3 and 4)
def test_training_records_the_data_it_started_on(workspace, monkeypatch):
    """A re-prep during training must not make the manifest claim the new data: every status of the
    train stage (running, preempted, failed, done) records the hashes taken when training started."""
    from psyfactory import runner
    from psyfactory.manifest import sha256_file

    data = workspace / "dataset" / "data" / "psydt" / "train.jsonl"
    before = sha256_file(data)

    def trains_while_data_changes(args, cfg_file, what, **kw):
        data.write_text(data.read_text(encoding="utf-8") + data.read_text(encoding="utf-8").splitlines()[0] + "\n",
                        encoding="utf-8")
        return 0

    monkeypatch.setattr(runner, "_run_checked", trains_while_data_changes)
    cli("train", *TRAIN)
    manifest = json.loads((run_dir(workspace) / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "done"
    assert manifest["stages"]["train"]["data"] == {str(data): before} != {str(data): sha256_file(data)}


def test_a_stale_merge_is_not_exported(workspace):
    """merge, retrain, gguf: refused before any conversion, naming both adapters (issue 22, item 4)."""
    from psyfactory.gguf.export import check_exportable
    from psyfactory.manifest import adapter_sha256, record_stage
    from psyfactory.runspec import resolve

    run = resolve(model="tiny", task="psydt", method="lora", hw="cpu")
    run.adapter_dir.mkdir(parents=True)
    (run.adapter_dir / "adapter_model.safetensors").write_bytes(b"first adapter")
    run.merged_dir.mkdir(parents=True)
    (run.merged_dir / "config.json").write_text("{}")
    record_stage(run.dir, "merge", run.dir / "merge.yaml", {}, {}, adapter_sha256=adapter_sha256(run.adapter_dir))
    assert check_exportable(run) == adapter_sha256(run.adapter_dir)
    (run.adapter_dir / "adapter_model.safetensors").write_bytes(b"retrained adapter")
    err = one_error_line(cli("gguf", "--check-only", "--model", "tiny", "--task", "psydt", "--hw", "cpu",
                             check=False))
    assert "was merged from another adapter" in err and "run `make merge RUN=tiny/psydt/lora` again first" in err


@pytest.mark.slow
def test_ctrl_c_in_training_saves_a_checkpoint_like_sigusr1(workspace):
    """Ctrl-C (SIGINT to `psyfactory train`) ends training as SIGUSR1 does: a checkpoint at the current
    step, the manifest `preempted`, exit 75 and a short message instead of a long traceback."""
    import signal
    import subprocess
    import sys
    import time

    args = [a for a in TRAIN if not a.startswith("max_steps")] + ["max_steps=400", "save_steps=1000"]
    proc = subprocess.Popen([sys.executable, "-m", "psyfactory", "train", *args], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PSY_RUNS_DIR": str(workspace / "runs")})
    log = run_dir(workspace) / "adapter" / "trainer_log.jsonl"
    deadline = time.time() + 300
    while not (log.is_file() and log.read_text().strip()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-2000:]
    assert "preempted: training stopped on request (SIGUSR1 or Ctrl-C)" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    stage = json.loads((run_dir(workspace) / "manifest.json").read_text())["stages"]["train"]
    assert stage["status"] == "preempted"
    assert sorted(p.name for p in (run_dir(workspace) / "adapter").glob("checkpoint-*"))  # saved at the stop


def test_a_fifo_among_the_raw_files_is_quarantined_not_waited_on(tmp_path):
    """A named pipe called case_98.txt used to hang prep forever (issue 22)."""
    import subprocess
    import sys

    raw = tmp_path / "raw"
    shutil.copytree(SAMPLES / "CPsyCoun", raw / "CPsyCoun")
    os.mkfifo(raw / "CPsyCoun" / "CPsyCounD" / "Data" / "case_98.txt")
    proc = subprocess.run([sys.executable, "-m", "psyfactory", "prep", "--task", "cpsycoun", "--raw-dir", str(raw),
                           "--dataset-dir", str(tmp_path / "ds")], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    q = [json.loads(line) for line in (tmp_path / "ds" / "data" / "cpsycoun" / "quarantine.jsonl").read_text().splitlines()]
    assert any(r["reason"] == "not_a_regular_file" and r["file"].endswith("case_98.txt") for r in q)

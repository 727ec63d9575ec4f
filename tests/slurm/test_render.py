"""Rendering, profiles and dry runs (no cluster needed)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from psyfactory import slurm
from psyfactory.core import paths
from psyfactory.core.errors import UserError

REPO = paths.REPO_ROOT


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Only the tracked profile applies (no ~/.config or $PSY_SLURM_PROFILE of the person testing)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(slurm.PROFILE_ENV, raising=False)
    monkeypatch.setenv("PSY_RUNS_DIR", str(tmp_path / "runs"))
    if (slurm.SLURM_DIR / "profile.local.yaml").exists():
        pytest.skip("slurm/profile.local.yaml exists here; these tests check the tracked defaults")
    return tmp_path


def scripts(gpus: int = 1, nodes: int = 1, **kw) -> dict[str, str]:
    profile = slurm.load_profile()
    names = {k: kw.pop(k) for k in ("run", "recipe", "overrides", "method") if k in kw}
    req = slurm.request(profile, model="qwen3-4b", task="psydt", gpus=gpus, nodes=nodes, **names, **kw)
    over = slurm.train_overrides(req, profile)
    return {s: slurm.render(s, req, profile, over if s == "train" else None) for s in req.stages}


def sbatch_lines(script: str) -> list[str]:
    return [ln.removeprefix("#SBATCH ") for ln in script.splitlines() if ln.startswith("#SBATCH ")]


def test_one_gpu(clean_env):
    s = scripts()
    opts = sbatch_lines(s["train"])
    for o in ("--partition=a40", "--gres=gpu:a40:1", "--cpus-per-task=8", "--mem=61440M", "--nodes=1",
              "--requeue", "--signal=B:USR1@300", f"--output={REPO}/logs/%x-%j.out", "--time=1-00:00:00"):
        assert o in opts, (o, opts)
    assert "export FORCE_TORCHRUN=1" not in s["train"] and "psy_run srun" not in s["train"]
    assert "export NODE_RANK=0" in s["train"] and "export NPROC_PER_NODE=1" in s["train"]
    assert "export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" in s["train"]
    assert f"export HF_HOME={REPO}/.cache/huggingface" in s["train"]
    assert re.search(r"psyfactory train --run qwen3-4b/psydt/lora --model qwen3-4b --task psydt --method lora --hw a40 "
                     r"tokenized_path=\S+/tokenized-[0-9a-f]{16}", s["train"])
    assert "psyfactory slurm-prepare --run qwen3-4b/psydt/lora --model qwen3-4b" in s["train"]
    assert "trap on_usr1 USR1" in s["train"] and "trap on_usr1" not in s["merge"]
    # non-training stages: their own resources, no requeue, rendered as the CLI calls they are
    assert "--no-requeue" in sbatch_lines(s["merge"]) and "--mem=98304M" in sbatch_lines(s["merge"])
    assert "psy_run psyfactory gguf --run qwen3-4b/psydt/lora --model qwen3-4b --task psydt --method lora --hw a40" in s["gguf"]
    assert "psy_run psyfactory eval --run qwen3-4b/psydt/lora --model qwen3-4b --task psydt --method lora --hw a40" in s["eval"]
    assert "--job-name=psy-train-qwen3-4b-psydt-lora" in opts
    assert "--gres=gpu:a40:1" in sbatch_lines(s["eval"]) and not any("gres" in o for o in sbatch_lines(s["gguf"]))


def test_four_gpus_one_node(clean_env):
    s = scripts(gpus=4)["train"]
    opts = sbatch_lines(s)
    assert {"--gres=gpu:a40:4", "--cpus-per-task=32", "--mem=245760M", "--nodes=1"} <= set(opts)
    assert "export NPROC_PER_NODE=4" in s and "export FORCE_TORCHRUN=1" in s
    assert "export OMP_NUM_THREADS=8" in s  # 32 CPUs / 4 processes


def test_two_nodes(clean_env):
    s = scripts(gpus=4, nodes=2)["train"]
    opts = sbatch_lines(s)
    assert {"--nodes=2", "--ntasks-per-node=1", "--gres=gpu:a40:4"} <= set(opts)
    assert 'export NNODES="${SLURM_JOB_NUM_NODES:-1}"' in s
    assert 'PSY_FIRST_NODE="$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" | head -n 1)"' in s
    assert 'export MASTER_ADDR="${PSY_NODE_ADDR:-$PSY_FIRST_NODE}"' in s
    assert "MASTER_PORT=$(( 29500 + ${SLURM_JOB_ID:-0} % 1000 ))" in s
    assert 'psy_run srun --nodes="$NNODES" --ntasks-per-node=1' in s
    assert 'NODE_RANK="${SLURM_NODEID:-$SLURM_PROCID}"' in s


def test_node_rank_wrapper_runs(clean_env):
    """The srun wrapper really gives each node its NODE_RANK (run here as srun would run it)."""
    s = scripts(gpus=4, nodes=2)["train"]
    wrapper = re.search(r"bash -c '(.+?)' node-rank", s).group(1)
    for node in ("0", "1"):
        out = subprocess.run(["bash", "-c", wrapper, "node-rank", "bash", "-c", "echo $NODE_RANK"],
                             capture_output=True, text=True, env={"SLURM_NODEID": node, "PATH": "/usr/bin:/bin"})
        assert out.stdout.strip() == node


def test_scripts_are_valid_bash(clean_env):
    for stage, text in scripts(gpus=4, nodes=2).items():
        res = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        assert res.returncode == 0, (stage, res.stderr)


def test_deepspeed_choice(clean_env):
    s = scripts(gpus=4, deepspeed="z3")["train"]
    path = REPO / "configs" / "deepspeed" / "ds_z3.json"
    assert f"deepspeed={path}" in s
    assert json.loads(path.read_text())["zero_optimization"]["stage"] == 3
    assert json.loads((path.parent / "ds_z2.json").read_text())["zero_optimization"]["stage"] == 2
    with pytest.raises(slurm.SlurmError, match="z2, z3"):
        scripts(deepspeed="z9")


def test_stage_args(clean_env, monkeypatch):
    cfg = clean_env / "mine.yaml"
    cfg.write_text("stages:\n  gguf: {args: --quant Q8_0 --lora}\n")
    monkeypatch.setenv(slurm.PROFILE_ENV, str(cfg))
    s = scripts()
    assert "psy_run psyfactory gguf --quant Q8_0 --lora --run qwen3-4b/psydt/lora --model qwen3-4b --task psydt" in s["gguf"]
    assert "psy_run psyfactory eval --run qwen3-4b/psydt/lora --model qwen3-4b" in s["eval"]


def test_a_named_run_names_its_jobs_and_commands(clean_env):
    s = scripts(run="exp/lr-5e-5")
    assert "--job-name=psy-merge-exp-lr-5e-5" in sbatch_lines(s["merge"])
    assert "psy_run psyfactory merge --run exp/lr-5e-5 --model qwen3-4b" in s["merge"]
    assert re.search(r"tokenized_path=\S+/runs/exp/lr-5e-5/slurm/tokenized-", s["train"])


def test_the_scripts_come_from_the_templates(clean_env, monkeypatch, tmp_path):
    """The shell logic lives in slurm/*.sh and job.sbatch, not in Python: a changed template shows up."""
    import shutil

    from psyfactory.slurm import batch, profiles

    tpl = tmp_path / "tpl"
    shutil.copytree(paths.REPO_ROOT / "slurm", tpl)
    (tpl / "train.sh").write_text((tpl / "train.sh").read_text() + "echo custom-train-step\n")
    monkeypatch.setattr(batch, "SLURM_DIR", tpl)
    monkeypatch.setattr(profiles, "SLURM_DIR", tpl)
    s = scripts()
    assert "echo custom-train-step" in s["train"] and "custom-train-step" not in s["merge"]
    (tpl / "job.sbatch").write_text("{{ undefined_value }}")
    with pytest.raises(slurm.SlurmError, match="job.sbatch: UndefinedError"):
        scripts()


def test_profile_layers_and_errors(clean_env, monkeypatch):
    home_cfg = clean_env / "home" / ".config" / "psyfactory" / "slurm.yaml"
    home_cfg.parent.mkdir(parents=True)
    home_cfg.write_text("account: mylab\nqos: normal\n")
    env_cfg = clean_env / "mine.yaml"
    env_cfg.write_text("qos: high\nstages:\n  merge: {gpus: 1}\n")
    monkeypatch.setenv(slurm.PROFILE_ENV, str(env_cfg))
    p = slurm.load_profile(["time=02:00:00"])
    assert (p["partition"], p["account"], p["qos"], p["time"]) == ("a40", "mylab", "high", "02:00:00")
    assert p["stages"]["merge"] == {"gpus": 1, "cpus": 8, "mem": "96G", "time": "03:00:00"}  # deep merge
    env_cfg.write_text("partitoin: x\n")
    with pytest.raises(slurm.SlurmError, match=r"mine.yaml: unknown profile key\(s\) partitoin"):
        slurm.load_profile()
    env_cfg.write_text("stages: {train: {gpu: 2}}\n")
    with pytest.raises(slurm.SlurmError, match=r"stages.train: unknown key\(s\) gpu"):
        slurm.load_profile()
    with pytest.raises(slurm.SlurmError, match="STAGES"):
        slurm.parse_stages("train,evaluate")
    assert slurm.parse_stages("merge,train") == ("train", "merge")


def test_make_dry_run_prints_scripts_and_commands(clean_env):
    res = subprocess.run(["make", "-s", "sbatch", "DRY_RUN=1", "MODEL=qwen3-4b", "TASK=psydt", "GPUS=4", "NODES=2",
                          "STAGES=train,merge,eval"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.count("#!/bin/bash") == 3 and "psy-gguf" not in out
    assert "$ sbatch --parsable " in out
    assert out.count("'--dependency=afterok:<train-jobid>' --kill-on-invalid-dep=yes") == 2  # merge and eval
    assert "afterok:<merge-jobid>" not in out  # eval reads the adapter, not the merged model
    assert not (clean_env / "runs").exists()  # a dry run writes nothing



def test_teacher_stage_serves_and_labels_on_a_gpu_node(clean_env):
    req = slurm.request(slurm.load_profile(), model="qwen3-4b", task="student",
                        stages=slurm.parse_stages("teacher,train,merge"))
    profile = slurm.load_profile(["stages.teacher.args=--raw-dir raw/ --teacher-gguf /models/qwen2.5-7b-q4_k_m.gguf"])
    teacher = slurm.render("teacher", req, profile)
    assert req.stages == ("teacher", "train", "merge")  # pipeline order, whatever order was typed
    assert ("psy_run psyfactory prep --task student --teacher gguf --raw-dir raw/ --teacher-gguf "
            "/models/qwen2.5-7b-q4_k_m.gguf") in teacher
    opts = sbatch_lines(teacher)
    assert "--gres=gpu:a40:1" in opts and "--no-requeue" in opts and "--job-name=psy-teacher-qwen3-4b-student-lora" in opts
    assert slurm.request({}, model="qwen3-4b", task="psydt").stages == slurm.DEFAULT_STAGES  # the teacher stage is opt-in
    with pytest.raises(slurm.SlurmError, match=r"needs a teacher LLM \(TASK=student\); TASK=psydt has none"):
        slurm.request({}, model="qwen3-4b", task="psydt", stages=("teacher", "train"))


def test_gpu_counts_are_checked_before_anything_renders(clean_env):
    with pytest.raises(slurm.SlurmError, match="GPUS=0 on HW=a40, a GPU profile"):
        scripts(gpus=0)
    with pytest.raises(slurm.SlurmError, match="GPUS=1000 per node, more than the profile's gpus_per_node"):
        scripts(gpus=1000)


def test_what_would_fail_after_queueing_is_refused_before(clean_env, monkeypatch):
    """DeepSpeed missing, a hub model not in the jobs' offline cache: one error line, nothing submitted
    (no sbatch needed to find out); a dry run shows the same as warnings above its scripts."""
    import importlib.util

    profile = slurm.load_profile()
    if importlib.util.find_spec("deepspeed") is None:
        req = slurm.request(profile, model="tiny", task="psydt", deepspeed="z3")
        with pytest.raises(slurm.SlurmError, match="DS=z3: DeepSpeed is not installed in this environment"):
            slurm.submit(req, profile)
    monkeypatch.setenv("PSY_DATASET_DIR", str(clean_env))  # no data either: the train check is not reached
    req = slurm.request(profile, model="qwen3-4b", task="psydt", stages=("merge", "eval"))
    with pytest.raises(slurm.SlurmError, match=r"model Qwen/Qwen3-4B is not in the offline cache the jobs read "
                                               r"\(.*\.cache/huggingface/hub\): stage it on this login node first"):
        slurm.submit(req, profile)
    import io

    buf = io.StringIO()
    slurm.submit(req, profile, dry_run=True, out=buf)
    out = buf.getvalue()
    assert "warning: a real submission would be refused: model Qwen/Qwen3-4B" in out
    assert "the eval job of task psydt would fail: " in out and "dataset_info.json: missing" in out  # its data
    assert "# ===== merge:" in out


def test_a_dry_run_checks_the_training_data_a_real_submission_checks(clean_env, monkeypatch):
    """Issue 22: the dry run skipped the data and resume checks of a real submission; it now reports them as
    warnings above the scripts it renders, while a config mistake still stops it."""
    import io

    from psyutil import write_psydt_like

    monkeypatch.setenv("PSY_DATASET_DIR", str(clean_env))
    write_psydt_like(clean_env)
    (clean_env / "data" / "psydt" / "train.jsonl").write_text('{"messages": [\n')  # broken after `make prep`
    profile = slurm.load_profile()
    req = slurm.request(profile, model="tiny", task="psydt", stages=("train",))
    with pytest.raises(UserError, match="train.jsonl: line 1: invalid JSON"):
        slurm.submit(req, profile)
    buf = io.StringIO()
    slurm.submit(req, profile, dry_run=True, out=buf)
    out = buf.getvalue()
    refused = [line for line in out.splitlines() if line.startswith("warning: a real submission would be refused:")]
    assert any("train.jsonl: line 1: invalid JSON" in line for line in refused), out
    assert "# ===== train:" in out
    bad = slurm.request(profile, model="tiny", task="psydt", stages=("train",), overrides=["learning_rate=fast"])
    with pytest.raises(UserError, match="learning_rate='fast' is not a valid value"):
        slurm.submit(bad, profile, dry_run=True, out=io.StringIO())


def test_a_sweep_renders_two_job_arrays_point_by_point(clean_env, monkeypatch, capsys):
    """3 seeds x 2 learning rates: a train array of 6 and an eval array waiting element-wise (aftercorr)."""
    from psyfactory.cli import main

    monkeypatch.setenv("PSY_DATASET_DIR", str(clean_env))
    (clean_env / "dataset_info.json").write_text("{}")  # the eval split is checked for the dry run's warning only
    assert main(["sweep", "--dry-run", "--model", "tiny", "--task", "psydt", "--seeds", "1,2,3",
                 "--grid", "learning_rate=1e-4,2e-4", "max_steps=2"]) == 0
    out = capsys.readouterr().out
    plan = json.loads((clean_env / "runs" / "tiny" / "psydt" / "lora" / "sweep-sweep" / "plan.json").read_text())
    runs = [p["run"] for p in plan["points"]]
    assert runs[0] == "tiny/psydt/lora/sweep-sweep/learning_rate=1e-4/seed=1" and len(runs) == 6
    assert plan["points"][4]["overrides"] == ["max_steps=2", "learning_rate=2e-4", "seed=2"]
    assert "#SBATCH --array=0-5" in out and "psyfactory sweep-task --plan" in out
    assert "--dependency=aftercorr:<train-arrayid>" in out and "--stage prepare" in out

"""The real pipeline on a real local Slurm (tiny model, CPU jobs, fake A40 GPUs).

Stages run here: the whole chain train -> merge -> gguf -> eval (gguf only when `make setup-gguf`
has installed its stack, which `make test` does)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from slurm_helpers import pipeline, pipeline_lines, psy, wait_final

from psyfactory import gguf

pytestmark = pytest.mark.slow

RUN = ["--model", "tiny", "--task", "psydt", "--method", "lora"]
FAST = ["cutoff_len=128", "logging_steps=1", "plot_loss=false"]


def run_dir(env: dict[str, str], method: str = "lora") -> Path:
    return Path(env["PSY_RUNS_DIR"]) / "tiny" / "psydt" / method


def test_whole_chain_completes(slurm_cluster, slurm_ws):
    # gguf needs `make setup-gguf` (make test depends on it); without it the chain skips that stage.
    stages = ["train", "merge", "gguf", "eval"] if gguf.available() else ["train", "merge", "eval"]
    print(f"stages run: {','.join(stages)}")
    out = psy(slurm_ws, "sbatch", "--stages", ",".join(stages), "--set", "stages.eval.args=--limit 4",
              *RUN, *FAST, "max_steps=4", "save_steps=2", "psy.generation.max_new_tokens=16").stdout
    rec = pipeline(run_dir(slurm_ws))
    ids = [j["job_id"] for j in rec["jobs"]]
    assert [j["stage"] for j in rec["jobs"]] == stages
    for j in rec["jobs"]:  # the CLI tells where the logs go
        assert j["job_id"] in out and j["log"] in out
    info = wait_final(slurm_cluster, ids, timeout=300)
    assert {i["JobState"] for i in info.values()} == {"COMPLETED"}, info
    rd = run_dir(slurm_ws)
    assert (rd / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((rd / "adapter" / "trainer_state.json").read_text())["global_step"] == 4
    assert (rd / "merged" / "config.json").is_file() and list((rd / "merged").glob("*.safetensors"))
    assert json.loads((rd / "eval" / "tuned" / "metrics.json").read_text())  # `psyfactory eval --limit 4` ran
    if "gguf" in stages:
        assert list((rd / "gguf").glob("*.gguf"))
    assert "psyfactory eval --limit 4 --run tiny/psydt/lora --model tiny" in (rd / "slurm" / "eval.sbatch").read_text()
    log = Path(info[ids[0]]["StdOut"]).read_text()
    assert "written now, once, before the ranks start" in log
    training = log.split("-m psyfactory.lf_train", 1)[1]  # single process: run_exp in-process
    assert "Loaded tokenized dataset" in training and "Running tokenizer" not in training
    assert list((rd / "slurm").glob("tokenized-*/dataset_dict.json"))
    assert not list((rd / "slurm").glob(".tokenized-*"))  # no partial copy left behind
    status = psy(slurm_ws, "status", *RUN)
    assert status.returncode == 0 and status.stdout.count("COMPLETED") == len(stages)

    # Resubmitting into this run dir with another config is refused before anything is queued ...
    changed = [*FAST, "max_steps=4", "save_steps=2", "learning_rate=0.001"]
    bad = psy(slurm_ws, "sbatch", "--stages", "train", *RUN, *changed, check=False)
    assert bad.returncode == 2 and "mix two runs" in bad.stderr, bad.stderr
    assert len(pipeline_lines(rd)) == 1
    # ... unless --restart, which keeps the old adapter dir aside.
    again = psy(slurm_ws, "sbatch", "--restart", "--stages", "train", *RUN, *changed)
    assert "moved the previous adapter dir" in again.stdout
    job = pipeline(rd)["jobs"][0]["job_id"]
    # While that pipeline is queued or running, a second one into the same run dir is refused.
    twice = psy(slurm_ws, "sbatch", "--stages", "train", *RUN, *changed, check=False)
    assert twice.returncode == 2 and f"active pipeline (jobs {job})" in twice.stderr, twice.stderr
    slurm_cluster.run(["scancel", job])
    assert list(rd.glob("adapter.old-*/adapter_model.safetensors")) and not (rd / "adapter").exists()


def test_training_failure_cancels_dependents(slurm_cluster, slurm_ws):
    # Config mistakes are refused at submission now (learning_rate=fast: one error line, nothing queued) ...
    bad = psy(slurm_ws, "sbatch", *RUN, *FAST, "max_steps=2", "learning_rate=fast", check=False)
    assert bad.returncode == 2 and "learning_rate='fast' is not a valid value" in bad.stderr
    assert not (run_dir(slurm_ws) / "slurm" / "pipelines.jsonl").exists()
    # ... and so is training data that is not JSON ...
    train = Path(slurm_ws["PSY_DATASET_DIR"]) / "data" / "psydt" / "train.jsonl"
    good = train.read_bytes()
    train.write_text('{"messages": [\n')
    refused = psy(slurm_ws, "sbatch", *RUN, *FAST, "max_steps=2", check=False)
    assert refused.returncode == 2 and "train.jsonl: line 1: invalid JSON" in refused.stderr, refused.stderr
    assert not (run_dir(slurm_ws) / "slurm" / "pipelines.jsonl").exists()
    # ... so the job fails on what only the job sees: data that went bad after submission (the jobs
    # are held while it breaks; SBATCH_HOLD is sbatch's own --hold).
    train.write_bytes(good)
    psy({**slurm_ws, "SBATCH_HOLD": "1"}, "sbatch", *RUN, *FAST, "max_steps=2")
    rec = pipeline(run_dir(slurm_ws))
    ids = [j["job_id"] for j in rec["jobs"]]
    train.write_text('{"messages": [\n')
    slurm_cluster.run(["scontrol", "release", ",".join(ids)])
    assert [j["stage"] for j in rec["jobs"]] == ["train", "merge", "gguf", "eval", "eval-gguf"]
    info = wait_final(slurm_cluster, ids, timeout=180)
    assert info[ids[0]]["JobState"] == "FAILED"
    for j in ids[1:]:
        assert info[j]["JobState"] == "CANCELLED" and info[j]["Reason"] == "DependencyNeverSatisfied", info[j]
    # `make status` says which job failed, why the others were cancelled, and shows the log tail.
    st = subprocess.run(["make", "-s", "status", "MODEL=tiny", "TASK=psydt"], capture_output=True, text=True,
                        env=slurm_ws, cwd=Path(__file__).parents[2])
    assert st.returncode != 0
    assert re.search(rf"train\s+{ids[0]}\s+FAILED", st.stdout), st.stdout
    for stage, j in zip(("merge", "gguf", "eval", "eval-gguf"), ids[1:], strict=True):
        assert re.search(rf"{stage}\s+{j}\s+CANCELLED", st.stdout)
    assert f"cancelled because its dependency train (job {ids[0]}) did not succeed" in st.stdout
    assert "merge (job" in st.stdout  # gguf names merge as the dependency that did not succeed
    tail = st.stdout.split("last 25 lines of", 1)[1]  # the failed job's log tail: our one error line
    assert "error: tokenizing psydt_train" in tail and "rerun `make prep`" in tail and "Traceback" not in tail


def test_what_the_partition_cannot_give_is_refused_before_queueing(slurm_cluster, slurm_ws):
    """GPUs and nodes are read from the cluster (sinfo), not only from the profile: nothing is submitted."""
    too_many = psy(slurm_ws, "sbatch", "--gpus", "6", *RUN, *FAST, check=False)
    assert too_many.returncode == 2
    assert "train: 6 GPU(s) per node asked, partition a40 offers at most 4 per node" in too_many.stderr
    nodes = psy(slurm_ws, "sbatch", "--nodes", "3", *RUN, *FAST, check=False)
    assert nodes.returncode == 2 and "train: NODES=3, partition a40 has 2 node(s)" in nodes.stderr
    assert not (run_dir(slurm_ws) / "slurm" / "pipelines.jsonl").exists()


def test_a_failed_gguf_export_cancels_only_what_reads_it(slurm_cluster, slurm_ws):
    """The chain is a graph of what each job reads: the HF evaluation reads the adapter, so a GGUF export
    that fails (here: no merged model to convert) cancels the GGUF evaluation and nothing else."""
    psy(slurm_ws, "sbatch", "--stages", "train,gguf,eval,eval-gguf", "--run", "dag", *RUN, *FAST, "max_steps=2",
        "save_steps=2", "--set", "stages.eval.args=--limit 2")
    rd = Path(slurm_ws["PSY_RUNS_DIR"]) / "dag"
    jobs = {j["stage"]: j for j in pipeline(rd)["jobs"]}
    assert {s: j["after"] for s, j in jobs.items()} == {"train": None, "gguf": "train", "eval": "train",
                                                         "eval-gguf": "gguf"}
    info = wait_final(slurm_cluster, [j["job_id"] for j in jobs.values()], timeout=300)
    state = {s: info[j["job_id"]]["JobState"] for s, j in jobs.items()}
    assert state == {"train": "COMPLETED", "gguf": "FAILED", "eval": "COMPLETED", "eval-gguf": "CANCELLED"}, info
    st = psy(slurm_ws, "status", "--run", "dag", check=False)
    assert st.returncode == 1
    assert f"cancelled because its dependency gguf (job {jobs['gguf']['job_id']}) did not succeed" in st.stdout
    assert "merged model not found" in st.stdout  # the failed job's own one-line error, from its log tail


def _wait_for(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise TimeoutError(what)


def test_preempted_training_resumes_from_checkpoint(slurm_cluster, slurm_ws):
    steps = 120
    # No periodic checkpoint before the end: the only one to resume from is the one saved on USR1.
    args = [*RUN, *FAST, f"max_steps={steps}", f"save_steps={steps}"]
    # Login-node staging first: the job then finds the model and the tokenized data in place.
    staged = psy(slurm_ws, "stage", *args).stdout
    assert "model: local" in staged and "written now, once, before the ranks start" in staged, staged
    psy(slurm_ws, "sbatch", "--stages", "train", *args)
    rd = run_dir(slurm_ws)
    job = pipeline(rd)["jobs"][0]["job_id"]
    trainer_log = rd / "adapter" / "trainer_log.jsonl"
    _wait_for(lambda: trainer_log.is_file() and len(trainer_log.read_text().splitlines()) >= 3, 240, "training steps")
    # As at a time limit: Slurm's warning signal to the batch shell; its trap asks the trainer to
    # save a checkpoint, then requeues the job.
    slurm_cluster.run(["scancel", "--batch", f"--signal={signal.SIGUSR1.name.removeprefix('SIG')}", job])
    _wait_for(lambda: slurm_cluster.job(job).get("Restarts", "0") != "0", 120, "requeue")
    info = wait_final(slurm_cluster, [job], timeout=300)[job]
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", info
    log = Path(info["StdOut"]).read_text()
    assert "USR1" in log and "asking the trainer" in log and "requeueing job" in log
    saved = re.search(r"stop requested: saving checkpoint-(\d+) and stopping", log)
    assert saved and 0 < int(saved.group(1)) < steps, log[-3000:]
    assert log.count(": already prepared") == 2 and "Running tokenizer" not in log  # staged once
    m = re.search(r"resuming from (\S+checkpoint-(\d+))", log)
    assert m, log[-3000:]
    assert m.group(2) == saved.group(1)  # resumed from the checkpoint written at the signal
    state = json.loads((rd / "adapter" / "trainer_state.json").read_text())
    assert state["global_step"] == steps  # the same total steps, not steps + resumed part
    logged = [json.loads(x)["current_steps"] for x in trainer_log.read_text().splitlines()]
    assert logged[-1] == steps


@pytest.mark.skipif(not gguf.available(), reason="the teacher stage serves a GGUF: run `make setup-gguf`")
def test_teacher_stage_labels_the_student_set_before_training(slurm_cluster, slurm_ws):
    from psyfactory.smollm2 import gguf_file

    samples = Path(__file__).resolve().parents[2] / "data_prep" / "samples"
    teacher_args = f"--raw-dir {samples} --teacher-gguf {gguf_file()}"
    psy(slurm_ws, "sbatch", "--stages", "teacher,train", "--model", "tiny", "--task", "student", "--method", "lora",
        "--set", f"stages.teacher.args={teacher_args}", "--set", "stages.teacher.gpus=0",
        "--set", "stages.teacher.cpus=1", "--set", "stages.teacher.mem=3G", *FAST, "max_steps=2", "save_steps=2")
    rd = Path(slurm_ws["PSY_RUNS_DIR"]) / "tiny" / "student" / "lora"
    rec = pipeline(rd)
    assert [j["stage"] for j in rec["jobs"]] == ["teacher", "train"]
    info = wait_final(slurm_cluster, [j["job_id"] for j in rec["jobs"]], timeout=400)
    assert {i["JobState"] for i in info.values()} == {"COMPLETED"}, info
    student = Path(slurm_ws["PSY_DATASET_DIR"]) / "data" / "student"
    who = json.loads((student / "accounting.json").read_text(encoding="utf-8"))[0]["labelled_by"]
    assert who["served"]["gguf"] == str(gguf_file()) and who["decoding"]["response_format"] == "json_object"
    assert (student / "train.jsonl").read_text(encoding="utf-8").strip()
    assert json.loads((rd / "adapter" / "trainer_state.json").read_text())["global_step"] == 2


def _losses(rd: Path) -> dict[int, float]:
    """Loss per step from trainer_log.jsonl (a resumed run appends: the last entry of a step counts)."""
    rows = [json.loads(x) for x in (rd / "adapter" / "trainer_log.jsonl").read_text().splitlines()]
    return {r["current_steps"]: r["loss"] for r in rows if "loss" in r}


def _adapter(rd: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(rd / "adapter" / "adapter_model.safetensors"))


EQ_STEPS = 30
EQ = [*FAST, f"max_steps={EQ_STEPS}", f"save_steps={EQ_STEPS}", "gradient_accumulation_steps=1", "lora_dropout=0"]


def test_two_nodes_preempted_and_resumed_train_what_one_process_trains(slurm_cluster, slurm_ws):
    """Two nodes, one rank each (srun, NODE_RANK from SLURM_NODEID, torchrun on gloo) with 2 examples per
    rank, sent USR1 mid-run (as at a time limit): every rank saves at the same step, once; the job
    requeues and resumes there. Against one uninterrupted process with 4 examples per step: the same
    global batch, so the same examples per step (accelerate gives each rank its own half of every
    global batch), and the same loss at every step and the same adapter, within float tolerance.
    Only node 0 writes the run's files."""
    runs = Path(slurm_ws["PSY_RUNS_DIR"])
    psy(slurm_ws, "sbatch", "--stages", "train", "--run", "eq-one", *RUN, *EQ, "per_device_train_batch_size=4")
    psy(slurm_ws, "sbatch", "--stages", "train", "--run", "eq-two", "--nodes", "2", *RUN, *EQ,
        "per_device_train_batch_size=2")
    one, two = runs / "eq-one", runs / "eq-two"
    jobs = {"one": pipeline(one)["jobs"][0]["job_id"], "two": pipeline(two)["jobs"][0]["job_id"]}
    trainer_log = two / "adapter" / "trainer_log.jsonl"
    _wait_for(lambda: trainer_log.is_file() and len(trainer_log.read_text().splitlines()) >= 3, 300, "training steps")
    slurm_cluster.run(["scancel", "--batch", "--signal=USR1", jobs["two"]])
    _wait_for(lambda: slurm_cluster.job(jobs["two"]).get("Restarts", "0") != "0", 180, "requeue")
    info = wait_final(slurm_cluster, list(jobs.values()), timeout=400)
    logs = {k: Path(info[j]["StdOut"]).read_text(errors="replace") for k, j in jobs.items()}  # two nodes: one log
    for k, j in jobs.items():
        assert info[j]["JobState"] == "COMPLETED", logs[k][-3000:]
    assert info[jobs["two"]]["NodeList"] == "n[1-2]" and info[jobs["two"]]["Restarts"] == "1"
    assert "world size: 2" in logs["two"] and "Process rank: 1" in logs["two"]
    assert "written now, once, before the ranks start" in logs["two"]
    training = logs["two"].split("-m psyfactory.lf_train", 1)[1]  # torchrun, as LF's launcher runs it
    assert "Loaded tokenized dataset" in training and "Running tokenizer" not in training  # ranks only load
    for log in logs.values():  # the global batch: ranks x per-device batch
        assert re.search(r"Total train batch size \(w\. parallel, distributed & accumulation\) = 4", log), log[-2000:]
    saved = re.findall(r"stop requested: saving checkpoint-(\d+) and stopping", logs["two"])
    assert len(saved) == 1 and 0 < int(saved[0]) < EQ_STEPS, logs["two"][-3000:]  # once, for both ranks
    resumed = re.search(r"resuming from (\S+checkpoint-(\d+))", logs["two"])
    assert resumed and resumed.group(2) == saved[0], logs["two"][-3000:]
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == list(range(1, EQ_STEPS + 1))
    rel = max(abs(a[k] - b[k]) / abs(a[k]) for k in a)
    print(f"\n[equivalence] stopped at step {saved[0]}; losses 1 process {[round(a[k], 6) for k in sorted(a)]}"
          f"\n[equivalence] losses 2 nodes   {[round(b[k], 6) for k in sorted(b)]}\n[equivalence] max rel diff {rel:.2e}")
    assert rel < 1e-3, (a, b)
    wa, wb = _adapter(one), _adapter(two)
    worst = max(float((wa[k] - wb[k]).abs().max() / (wa[k].abs().max() + 1e-12)) for k in wa)
    print(f"[equivalence] adapter max rel diff {worst:.2e} over {len(wa)} tensors")
    assert worst < 1e-3
    assert json.loads((two / "adapter" / "trainer_state.json").read_text())["global_step"] == EQ_STEPS
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "done" and manifest["stages"]["train"]["resumed_from"]
    assert {p.name for p in (two / "adapter").glob("checkpoint-*")} == {f"checkpoint-{saved[0]}",
                                                                       f"checkpoint-{EQ_STEPS}"}


def test_a_sweep_of_three_seeds_ends_in_mean_and_sd(slurm_cluster, slurm_ws):
    """`make sweep` on the cluster: a train array and an eval array (element-wise after it), three runs,
    then `make compare` groups them: mean ± sd over the three seeds (the paired test between grid points:
    tests/eval/test_compare.py, on recorded runs)."""
    psy(slurm_ws, "sweep", "--seeds", "1,2,3", "--grid", "learning_rate=5e-3", "--limit", "1", *RUN, *FAST,
        "max_steps=1", "save_steps=1", "psy.generation.max_new_tokens=4", "--set", "stages.eval.args=")
    folder = Path(slurm_ws["PSY_RUNS_DIR"]) / "tiny" / "psydt" / "lora" / "sweep-sweep"
    arrays = {j["stage"]: j["job_id"] for j in json.loads((folder / "jobs.json").read_text())}

    def states() -> dict[str, str]:
        out = "\n".join(slurm_cluster.run(["scontrol", "show", "job", "-o", a], check=False).stdout
                        for a in arrays.values())  # one array id per call: scontrol shows the first only
        found = {}
        for line in out.splitlines():
            info = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
            if "ArrayTaskId" in info:
                found[f"{info['ArrayJobId']}_{info['ArrayTaskId']}"] = info["JobState"]
        return found

    _wait_for(lambda: len(states()) == 6 and set(states().values()) <= {"COMPLETED", "FAILED", "CANCELLED"}, 600,
              "the sweep's arrays")
    assert set(states().values()) == {"COMPLETED"}, states()
    compare = psy(slurm_ws, "compare", "--run", "tiny/psydt/lora/sweep-sweep").stdout
    assert "## Sweep sweep of tiny/psydt/lora · psydt · tuned: mean ± sd over seeds" in compare
    assert re.search(r"\| learning_rate=5e-3 \| 3 \| [0-9.]+ ± [0-9.]+ \|", compare), compare
    runs = sorted(p.parent.name for p in folder.glob("*/seed=*/manifest.json"))
    assert runs == ["seed=1", "seed=2", "seed=3"]

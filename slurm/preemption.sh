# --- preemption / time limit ---
# Slurm sends USR1 to this shell before the time limit (--signal=B:USR1@secs). The training command
# gets the signal passed on (through srun to every node on a multi-node job): every rank saves a
# checkpoint at the same step and exits (psyfactory.lf_train). Then we requeue the job: the next attempt
# resumes from the last checkpoint of the run directory (LLaMA-Factory resumes from
# output_dir/checkpoint-* when overwrite_output_dir is false; `psyfactory slurm-prepare` refuses
# checkpoints written under another config).
on_usr1() {
  echo "[psy] USR1 at $(date -Is)"
  if [ "${PSY_FORWARD_USR1:-0}" = 1 ] && [ -n "${PSY_CHILD:-}" ] && kill -0 "$PSY_CHILD" 2>/dev/null; then
    echo "[psy] asking the trainer (pid $PSY_CHILD) to save a checkpoint"
    kill -USR1 "$PSY_CHILD"
    wait "$PSY_CHILD" || true
  fi
  echo "[psy] requeueing job $SLURM_JOB_ID to resume from its last checkpoint"
  scontrol requeue "$SLURM_JOB_ID"
}
trap on_usr1 USR1

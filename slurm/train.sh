# --- distributed: LLaMA-Factory starts torchrun on each node from these variables ---
export NNODES="${SLURM_JOB_NUM_NODES:-1}"
export NPROC_PER_NODE={{ nproc }}
PSY_FIRST_NODE="$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" | head -n 1)"
# node 0's address as Slurm knows it (NodeAddr: an IP or a resolvable name), else its name
PSY_NODE_ADDR="$(scontrol show node "$PSY_FIRST_NODE" -o 2>/dev/null | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')"
export MASTER_ADDR="${PSY_NODE_ADDR:-$PSY_FIRST_NODE}"
export MASTER_PORT=$(( {{ master_port }} + ${SLURM_JOB_ID:-0} % 1000 ))
{% if multiprocess %}
export FORCE_TORCHRUN=1  # torchrun even where fewer CUDA devices are visible (CPU ranks use gloo)
{% endif %}
export PSY_FORWARD_USR1=1  # on USR1 every rank saves a checkpoint at the same step, then we requeue

# --- once, before the ranks start: refuse a run dir whose checkpoints come from another config,
# report the checkpoint to resume from, tokenize the data into tokenized_path ---
{{ prepare }}

# --- train ---
{% if use_srun %}
# One task per node; NODE_RANK (what LF reads) from the node's index in the allocation.
psy_run srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
  bash -c 'export NODE_RANK="${SLURM_NODEID:-$SLURM_PROCID}"; exec "$@"' node-rank \
  {{ train }}
{% else %}
export NODE_RANK=0
psy_run {{ train }}
{% endif %}

#!/usr/bin/env bash
# The checks only a CUDA GPU can run, in one go, each step time-boxed; results land in OUT_DIR.
#   make bench-gpu GPU_OUT=out/                      # on a GPU node (= bash benchmarks/gpu_check.sh OUT_DIR)
#   PY=python3 BENCH_FILE=raw/PsychCounsel-Bench/PsychCounsel-Bench.json bash benchmarks/gpu_check.sh out/
# Steps (docs/performance.md, "GPU"):
#   1. QLoRA 4-bit on CUDA through `psyfactory train/merge METHOD=qlora HW=a40`, merge parity (pytest -m gpu)
#   2. Qwen3-4B LoRA, plain vs tuned (tokens/s, MFU, padding, peak memory, loss curves)
#   3. PsychCounsel-Bench on the Qwen3-4B architecture: loglik vs generate wall time and unparsed share
#   4. Qwen2-7B-Instruct QLoRA at cutoff 8192: peak memory (accumulation 1: memory does not depend on it)
# Needs the task data prepared (make prep TASK=cpsycoun) in PSY_DATASET_DIR or the repo.
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
PY=${PY:-python}
BENCH_FILE=${BENCH_FILE:-../shared/datasets/PsychCounsel-Bench/PsychCounsel-Bench.json}
TASK=${TASK:-cpsycoun}
HW=${HW:-a40}
MODEL_4B=${MODEL_4B:-qwen3-4b}          # MODEL_4B=tiny MODEL_7B=tiny HW=cpu: a dry run of this script on a CPU
MODEL_7B=${MODEL_7B:-qwen2-7b-instruct}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export PSY_MODEL_DIR=${PSY_MODEL_DIR:-${PSY_CACHE_DIR:-$HOME/.cache/psyfactory}/bench-models}
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() {  # step NAME SECONDS CMD...: run with a time limit, log to OUT/NAME.log, never stop the script
  local name=$1 limit=$2; shift 2
  local s=$(date +%s)
  echo "== $name (limit ${limit}s, at +$(( s - t0 ))s)"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   $name: exit $rc in $(( $(date +%s) - s ))s"; tail -n 25 "$OUT/$name.log"
  echo "$name $rc $(( $(date +%s) - s ))" >>"$OUT/steps.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c 'import torch, transformers, peft, bitsandbytes, llamafactory as lf; print("torch", torch.__version__, "cuda", torch.version.cuda, "| transformers", transformers.__version__, "| peft", peft.__version__, "| bitsandbytes", bitsandbytes.__version__, "| llamafactory", lf.__version__)'
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step qlora_cuda "${T_QLORA:-150}" $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_e2e_spine.py -k qlora -rs
step bench_qwen3_4b_lora "${T_4B:-200}" $PY benchmarks/train_bench.py --model "$MODEL_4B" --task "$TASK" --method lora \
  --hw "$HW" --cutoff "${CUTOFF_4B:-4096}" --steps "${STEPS_4B:-6}" --warmup 2 --out "$OUT/bench-qwen3-4b-lora.json"
step eval_qwen3_4b "${T_EVAL:-100}" $PY benchmarks/eval_bench.py --model "$MODEL_4B" --bench-file "$BENCH_FILE" \
  --formats seed004-professional --limit "${EVAL_LIMIT:-500}" --batch-size 16 --no-debias --json "$OUT/eval-qwen3-4b.json"
step bench_qwen2_7b_qlora "${T_7B:-150}" $PY benchmarks/train_bench.py --model "$MODEL_7B" --task "$TASK" \
  --method qlora --hw "$HW" --cutoff "${CUTOFF_7B:-8192}" --steps "${STEPS_7B:-3}" --warmup 1 --variants plain \
  --set gradient_accumulation_steps=1 --out "$OUT/bench-qwen2-7b-qlora.json"
echo "== done in $(( $(date +%s) - t0 ))s"; cat "$OUT/steps.txt"

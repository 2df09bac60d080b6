# Set-up and everyday commands. Every target creates .venv/ first if it is missing or stale (idempotent).
#   make quickstart   set up, then run the quickstart
#   make test         set up, then run the test suite
#   make lint         ruff over the repository
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# A pinned CPU build: a bare `torch` requirement would pull a multi-GB CUDA build. On a machine where this version is
# not on a local index, point pip at PyTorch's CPU index: make TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
# Pinned versions of everything else (what the tests last passed with); CONSTRAINTS= installs the newest instead.
CONSTRAINTS ?= .ci/constraints.txt
STAMP  := $(VENV)/.lvu-installed

.PHONY: setup quickstart test lint clean-venv
setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev]"
	@touch $(STAMP)
	@echo "lvu is installed in $(VENV)/ (activate with: source $(VENV)/bin/activate)"

quickstart: setup
	$(BIN)/lvu quickstart

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)

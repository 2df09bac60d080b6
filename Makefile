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
OPS    := $(VENV)/.lvu-deepspeed-ops

.PHONY: setup deepspeed-ops lmms-venv quickstart test lint clean-venv
setup: $(STAMP)

# DeepSpeed's CPU ops (the offload optimiser's CPU Adam, the CPU all-reduce) are compiled the first time a run needs
# them, minutes on 2 cores, in the middle of that run. Build them once here, into torch's extension cache
# (~/.cache/torch_extensions, or $$TORCH_EXTENSIONS_DIR), as a cluster install would with DS_BUILD_OPS.
deepspeed-ops: $(OPS)

$(OPS): $(STAMP)
	DS_ACCELERATOR=cpu $(BIN)/python -c "from deepspeed.accelerator import get_accelerator as a; \
		[a().create_op_builder(n).load() for n in ('CPUAdamBuilder', 'ShareMemCommBuilder')]"
	@touch $(OPS)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev]"
	@touch $(STAMP)
	@echo "lvu is installed in $(VENV)/ (activate with: source $(VENV)/bin/activate)"

# lmms-eval's environment (.venv-lmms/, for tests/test_lmms_plugin.py and for `lmms-eval --model lvu`): lmms-eval
# pins PyAV below 16 and filelock below 4, so it cannot share .venv. The same pinned CPU torch; lvu in editable mode
# with .venv's constraints except those two; lmms-eval without its dependencies (see .ci/lmms-requirements.txt).
LMMS_VENV  := .venv-lmms
LMMS_STAMP := $(LMMS_VENV)/.lvu-installed
lmms-venv: $(LMMS_STAMP)

$(LMMS_STAMP): pyproject.toml $(CONSTRAINTS) .ci/lmms-requirements.txt
	@test -x $(LMMS_VENV)/bin/python || $(PYTHON) -m venv $(LMMS_VENV)
	$(LMMS_VENV)/bin/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	grep -v -e '^av==' -e '^filelock==' $(CONSTRAINTS) > $(LMMS_VENV)/constraints.txt
	printf 'av<16\nfilelock<4\n' >> $(LMMS_VENV)/constraints.txt
	$(LMMS_VENV)/bin/python -m pip install --quiet -c $(LMMS_VENV)/constraints.txt -e . "av<16" "filelock<4"
	$(LMMS_VENV)/bin/python -m pip install --quiet --no-deps $$(grep -e '^lmms-eval' .ci/lmms-requirements.txt)
	$(LMMS_VENV)/bin/python -m pip install --quiet --no-warn-conflicts -c $(LMMS_VENV)/constraints.txt \
		$$(grep -v -e '^#' -e '^lmms-eval' .ci/lmms-requirements.txt)
	$(LMMS_VENV)/bin/python -c "import lmms_eval.evaluator, lvu.lmms"
	@touch $(LMMS_STAMP)

quickstart: setup
	$(BIN)/lvu quickstart

test: setup deepspeed-ops lmms-venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)

# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing, installs the CPU build of torch first (so pip
# never pulls CUDA wheels on a CPU machine), then the package with its extras.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tomo4d-installed
TORCH  ?= torch==2.13.0
DEMO_DIR ?= demo_output
PYTEST_ARGS ?=

.PHONY: demo test install clean benchmark

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,reconstruct]"
	$(BIN)/python -m tomo4d._warmup  # compile the numba kernels once per install (issue 20)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tomo4d demo $(DEMO_DIR) --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

benchmark: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build src/*.egg-info .pytest_cache

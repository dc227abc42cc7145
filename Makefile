# The README's two commands, plus lint and bench. Each target installs what it needs.
# make bench BENCH_ARGS=--quick checks that the benchmarks run (bench/README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

run:
	$(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q -e . && $(BIN)/wahub run -c config.example.yaml

test:
	$(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q -e '.[test]' && $(BIN)/pytest

lint:
	$(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q -e '.[test,lint]'
	$(BIN)/ruff check wahub tests bench docs/examples
	$(BIN)/ruff format --check wahub tests bench docs/examples
	$(BIN)/mypy wahub bench docs/examples/wahub-tinycrm/wahub_tinycrm
	$(BIN)/lint-imports --no-cache

bench:
	$(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q -e '.[test]'
	command -v wrk >/dev/null || echo "wrk not found: apt-get install wrk (falling back to a Python load generator)"
	command -v taskset >/dev/null || echo "taskset not found (util-linux): server and load will share the CPUs"
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

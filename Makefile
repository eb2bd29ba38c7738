# The two commands of the README: `make demo` sets everything up and runs the main scenario;
# `make test` sets everything up and runs the test suite. Both are idempotent.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_PY := $(VENV)/.installed
STAMP_NPM := node_modules/.installed

.PHONY: setup demo demo-aml test lint bench-gas bench-anchoring bench-audit bench-rounds bench-paillier bench-psi bench-vertical bench-sme clean

setup: $(STAMP_PY) $(STAMP_NPM)

$(STAMP_PY): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

$(STAMP_NPM): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# demo-out/ holds the last demo's stores, journals and bundle; each demo starts it afresh.
# The SME-credit job at a size that trains in about a minute with 2048-bit keys; the full-size
# job is `consortium simulate sme-credit` with its defaults.
DEMO_SME := --businesses 3000 --batch-size 256 --learning-rate 0.2
demo: setup
	rm -rf demo-out
	$(BIN)/consortium simulate sme-credit $(DEMO_SME) --out demo-out

demo-aml: setup
	rm -rf demo-out-aml
	$(BIN)/consortium simulate aml --out demo-out-aml

test: lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: setup
	$(BIN)/ruff check consortium tests scripts
	$(BIN)/ruff format --check consortium tests scripts

bench-gas: setup
	$(BIN)/python scripts/bench/gas.py

bench-anchoring: setup
	$(BIN)/python scripts/bench/anchoring.py

bench-audit: setup
	$(BIN)/python scripts/bench/audit.py

bench-rounds: setup
	$(BIN)/python scripts/bench/rounds.py

bench-paillier: setup
	$(BIN)/python scripts/bench/paillier.py

bench-psi: setup
	$(BIN)/python scripts/bench/psi.py

bench-vertical: setup
	$(BIN)/python scripts/bench/vertical.py

bench-sme: setup
	$(BIN)/python scripts/bench/sme.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache

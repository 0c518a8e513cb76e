# Two commands matter: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
PY    := .venv/bin/python
PIP   := .venv/bin/pip
STAMP := .stamps

.PHONY: setup demo test lint typecheck pytest bench clean help contracts contracts-check

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(STAMP)/venv $(STAMP)/npm  ## create .venv, install torch (CPU), the package, and the npm tools

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP)/venv: pyproject.toml
	@mkdir -p $(STAMP)
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	@touch $@

$(STAMP)/npm: package.json package-lock.json contracts/package.json contracts/package-lock.json
	@mkdir -p $(STAMP)
	npm ci --no-audit --no-fund --loglevel=error
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

contracts-check: $(STAMP)/npm  ## recompile the Solidity sources and fail if the committed artifacts differ
	node contracts/compile.js --check

contracts: $(STAMP)/npm  ## recompile the Solidity sources into contracts/artifacts
	node contracts/compile.js

demo: setup  ## a Lightning digits classifier trained on the embedded devnet, then the REE's replay, spot check and tamper checks
	$(PY) recipes/lightning_mnist.py
	$(PY) -m gensyn_integrations.demo

lint: setup  ## ruff and mypy
	.venv/bin/ruff check .
	.venv/bin/mypy

typecheck: lint

pytest: setup
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q --durations=25 $(PYTEST_ARGS)

test: lint contracts-check pytest  ## lint, the compiled-artifacts check, and the whole suite

bench: setup  ## print the benchmarks' measured ratios
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(STAMP) .pytest_cache .mypy_cache .ruff_cache

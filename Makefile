# kequn — developer tasks. Each area keeps its targets in its own block.
#
# Quick start (README): `make up` runs the whole suite, `make test` the tests.

PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
BUF ?= npx --yes @bufbuild/buf@1.75.0

# ---------------------------------------------------------------------------
# Contracts (protos/, gen/python/, buf.yaml, scripts/gen_protos.py)
#   make protos           regenerate gen/python/kequn and the descriptor set
#                         gen/descriptors/kequn.binpb from protos/kequn
#   make protos-check     fail if the committed generated code or descriptor
#                         set drifts from protos/
#   make lint-protos      buf STANDARD lint, offline (see buf.yaml)
#   make breaking-protos  buf breaking against the previous commit, offline
#                         (KEQUN_BREAKING_AGAINST=<rev> for another base)
# ---------------------------------------------------------------------------
.PHONY: protos protos-check lint-protos breaking-protos

protos:
	$(PYTHON) scripts/gen_protos.py

protos-check:
	$(PYTHON) scripts/gen_protos.py --check

lint-protos:
	$(BUF) lint

breaking-protos:
	BUF="$(BUF)" bash scripts/buf_breaking.sh
# ------------------------------------------------------------ end contracts

# ---------------------------------------------------------------------------
# Quick start
#   make up      install into .venv, migrate, run all four services with demo data, and the console
#   make test    install into .venv and run the whole test suite
#   make install just the install (editable, with the dev extras)
# ---------------------------------------------------------------------------
.PHONY: up test install ci

VENV ?= .venv
SYSTEM_PYTHON ?= python3

$(VENV)/.installed: pyproject.toml
	@$(SYSTEM_PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "kequn needs Python 3.11 or newer"'
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

up: install
	$(VENV)/bin/kequn up

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# What CI runs (see .ci/run): contracts, operations checks, then the tests.
ci: install protos-check
	$(MAKE) lint-protos
	$(MAKE) breaking-protos
	@if [ -f .ci/ops.sh ]; then bash .ci/ops.sh; fi
	$(MAKE) test
# -------------------------------------------------------------- end quick start

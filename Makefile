# kequn — developer tasks. Each area keeps its targets in its own block.

PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
BUF ?= npx --yes @bufbuild/buf@1.75.0

# ---------------------------------------------------------------------------
# Contracts (protos/, gen/python/, buf.yaml, scripts/gen_protos.py)
#   make protos        regenerate gen/python/kequn from protos/kequn
#   make protos-check  fail if the committed generated code drifts from protos/
#   make lint-protos   buf STANDARD lint, offline (see buf.yaml)
# ---------------------------------------------------------------------------
.PHONY: protos protos-check lint-protos

protos:
	$(PYTHON) scripts/gen_protos.py

protos-check:
	$(PYTHON) scripts/gen_protos.py --check

lint-protos:
	$(BUF) lint
# ------------------------------------------------------------ end contracts

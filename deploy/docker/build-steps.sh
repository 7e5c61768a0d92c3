#!/bin/sh
# The build of the kequn image, as one script: the Dockerfile's build stage
# RUNs it, and CI (.ci/ops.sh) runs the very same script into a temporary
# directory, so the image recipe is exercised even where no Docker engine runs.
#
#   deploy/docker/build-steps.sh PREFIX [SOURCE]
#
# PREFIX  a new virtual environment with kequn installed (non-editable) and
#         nothing else: the runtime stage copies it whole.
# SOURCE  the repository root (default: the current directory).
#
# Needs python3 (3.11+) with venv, and a C compiler: durable-rules ships as
# source only and builds its Rete engine in C.
set -eu

PREFIX=${1:?usage: build-steps.sh PREFIX [SOURCE]}
SOURCE=$(cd "${2:-.}" && pwd)
PYTHON=${PYTHON:-python3}

echo "build-steps: venv $PREFIX"
"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --upgrade pip wheel

echo "build-steps: install kequn from $SOURCE"
# A non-editable install: the image holds no source tree, only site-packages.
"$PREFIX/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "$SOURCE"

echo "build-steps: smoke test of the installed package (outside the source tree)"
cd /
"$PREFIX/bin/kequn" --help >/dev/null
"$PREFIX/bin/python" - <<'PY'
"""What a container needs at run time, imported from site-packages only."""
import pathlib
import sys

import services
from services.cli import registry

src = pathlib.Path(services.__file__).resolve().parent
assert "site-packages" in str(src), f"kequn imported from {src}, not from the installed package"
for name in registry.SERVICES:
    spec = registry.spec(name)                       # imports the service and its generated protos
    rulesets = sorted(pathlib.Path(spec.rulesets_dir).glob("*.yaml"))
    assert rulesets, f"{name}: default rulesets missing from the package"
    versions = pathlib.Path(spec.migrations_dir) / "versions"
    assert (pathlib.Path(spec.migrations_dir) / "env.py").exists() and any(versions.glob("*.py")), \
        f"{name}: Alembic migrations missing from the package"
from services.rules.engine import default_engine    # the compiled durable-rules engine loads
default_engine()
from services.console import web                     # the console: its templates and static files
for needed in ("base.html", "overview.html", "books.html", "approvals.html"):
    assert (web.HERE / "templates" / needed).exists(), f"console: template {needed} missing from the package"
assert (web.HERE / "static" / "console.css").exists(), "console: static files missing from the package"
print(f"build-steps: ok ({len(registry.SERVICES)} services and the console, python {sys.version.split()[0]})")
PY

# Bytecode for a read-only root filesystem (PYTHONDONTWRITEBYTECODE at run time).
"$PREFIX/bin/python" -m compileall -q "$PREFIX/lib" >/dev/null || true

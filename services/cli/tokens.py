"""Development tokens: ``kequn up`` writes them, the CLI reads them."""
from __future__ import annotations

import json
import os
from pathlib import Path

from services.common.auth import generate_dev_tokens


def data_dir() -> Path:
    return Path(os.environ.get("KEQUN_DATA_DIR", ".kequn"))


def dev_tokens_path() -> Path:
    return data_dir() / "dev-tokens.json"


def make_dev_tokens() -> dict[str, str]:
    """Hashed tokens file for the servers, plaintext copy (0600) for the CLI."""
    directory = data_dir()
    directory.mkdir(parents=True, exist_ok=True)
    tokens = generate_dev_tokens(Path(os.environ.get("KEQUN_TOKENS_FILE", directory / "tokens.yaml")))
    path = dev_tokens_path()
    path.write_text(json.dumps(tokens, indent=2))
    path.chmod(0o600)
    return tokens


def token_for(role: str) -> str | None:
    """``KEQUN_TOKEN`` wins; else the dev token of ``role`` if ``kequn up`` made one."""
    if os.environ.get("KEQUN_TOKEN"):
        return os.environ["KEQUN_TOKEN"]
    path = dev_tokens_path()
    if path.exists():
        return json.loads(path.read_text()).get(role)
    return None

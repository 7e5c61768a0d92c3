"""Helpers for tests that run real servers (in-process or as processes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from services.common.auth import generate_dev_tokens

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def start_service_process(module: str, env: dict[str, str], **popen_kwargs) -> subprocess.Popen:
    """`python -m <module>` from the repo root with the repo and gen/python
    importable; `env` is added to the current environment. Output goes to the
    test's stderr unless popen_kwargs redirect it."""
    full_env = {**os.environ, **env}
    paths = [str(REPO_ROOT), str(REPO_ROOT / "gen" / "python")]
    if full_env.get("PYTHONPATH"):
        paths.append(full_env["PYTHONPATH"])
    full_env["PYTHONPATH"] = os.pathsep.join(paths)
    popen_kwargs.setdefault("cwd", str(REPO_ROOT))
    return subprocess.Popen([sys.executable, "-m", module], env=full_env, **popen_kwargs)


class DevTokens(dict):
    """name -> plaintext token, plus `.path` of the tokens file written."""

    path: Path


def dev_tokens(tmpdir: str | os.PathLike) -> DevTokens:
    """Write `<tmpdir>/tokens.yaml` with one principal per role; return the plaintext tokens."""
    path = Path(tmpdir) / "tokens.yaml"
    tokens = DevTokens(generate_dev_tokens(path))
    tokens.path = path
    return tokens


@contextmanager
def calling_as(name: str, request_id: str, role: str = "operations"):
    """What the server's interceptors set for an RPC — the principal and the
    x-request-id — for tests that call a use case directly."""
    from services.common import auth
    from services.common import logging as kequn_logging

    principal = auth._principal.set(auth.Principal(name, frozenset({role})))
    request = kequn_logging._request_id.set(request_id)
    try:
        yield
    finally:
        kequn_logging._request_id.reset(request)
        auth._principal.reset(principal)

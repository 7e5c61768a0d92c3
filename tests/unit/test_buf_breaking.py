"""scripts/buf_breaking.sh (what `make ci` runs) on throw-away git
repositories holding a copy of protos/ and buf.yaml: a renamed field or a
removed RPC fails it, an added field passes, a first commit is skipped, and a
shallow clone is deepened rather than passing unchecked.

Needs npx (buf runs through it, as `make lint-protos` does); with CI=true a
missing npx fails, elsewhere it skips."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIERING = Path("protos/kequn/tiering/v1/tiering.proto")


@pytest.fixture(scope="module", autouse=True)
def _npx():
    if shutil.which("npx") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("npx not installed (buf runs through it)", pytrace=False)
        pytest.skip("npx not installed")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", repo / "protos")
    shutil.copy(ROOT / "buf.yaml", repo / "buf.yaml")
    (repo / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "buf_breaking.sh", repo / "scripts" / "buf_breaking.sh")
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "protos as on main")
    return repo


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", message)


def edit(repo: Path, path: Path, old: str, new: str) -> None:
    text = (repo / path).read_text()
    assert old in text, old
    (repo / path).write_text(text.replace(old, new, 1))


def run(repo: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/buf_breaking.sh"], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_renamed_field_fails(tmp_path):
    repo = make_repo(tmp_path)
    edit(repo, TIERING, "string customer_id = 1;", "string client_id = 1;")
    commit(repo, "rename a field")
    result = run(repo)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "customer_id" in result.stdout + result.stderr


def test_removed_rpc_fails(tmp_path):
    repo = make_repo(tmp_path)
    text = (repo / TIERING).read_text()
    rpc = re.search(r"\n\s*rpc GetCustomerTier\([^;]*;", text)
    assert rpc is not None
    (repo / TIERING).write_text(text.replace(rpc.group(0), "", 1))
    commit(repo, "drop an RPC")
    result = run(repo)
    assert result.returncode != 0
    assert "GetCustomerTier" in result.stdout + result.stderr


def test_added_field_passes(tmp_path):
    repo = make_repo(tmp_path)
    text = (repo / TIERING).read_text()
    message = re.search(r"message GetCustomerTierRequest \{[^}]*", text)
    numbers = [int(n) for n in re.findall(r"= (\d+);", message.group(0))]
    (repo / TIERING).write_text(text.replace(
        message.group(0), message.group(0) + f"  string note_for_test = {max(numbers) + 1};\n", 1))
    commit(repo, "add a field")
    result = run(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no breaking change" in result.stdout


def test_first_commit_is_skipped_with_a_note(tmp_path):
    result = run(make_repo(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stdout


def test_a_break_behind_a_merge_base_is_caught(tmp_path):
    repo = make_repo(tmp_path)
    base = git(repo, "rev-parse", "HEAD").strip()
    edit(repo, TIERING, "string customer_id = 1;", "string client_id = 1;")
    commit(repo, "the break")
    (repo / "protos" / "README").write_text("unrelated\n")
    commit(repo, "a later harmless commit")
    assert run(repo).returncode == 0  # HEAD~1 alone does not see it...
    assert run(repo, KEQUN_BREAKING_AGAINST=base).returncode != 0  # ...the merge base does


def test_shallow_clone_is_deepened(tmp_path):
    repo = make_repo(tmp_path)
    edit(repo, TIERING, "string customer_id = 1;", "string client_id = 1;")
    commit(repo, "rename a field")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth=1", f"file://{repo}", str(clone)], check=True)
    assert git(clone, "rev-parse", "--is-shallow-repository").strip() == "true"
    result = run(clone)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "customer_id" in result.stdout + result.stderr

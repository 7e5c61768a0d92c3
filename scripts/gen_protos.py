#!/usr/bin/env python3
"""Regenerate the Python code of the kequn contracts (protos/kequn/**).

    python scripts/gen_protos.py            # write gen/python/kequn/
    python scripts/gen_protos.py --check    # exit 1 if gen/python/kequn/ drifts

Produces, per proto file, ``*_pb2.py`` (protobuf), ``*_pb2_grpc.py`` (grpc),
``*_pb2.pyi`` and ``*_pb2_grpc.pyi`` (typed stubs from mypy-protobuf), plus an
``__init__.py`` in every package directory and ``kequn/py.typed``, so that
``from kequn.tiering.v1 import tiering_pb2, tiering_pb2_grpc`` works with
gen/python on sys.path (pyproject.toml maps it as a package root).

Also writes the descriptor set ``gen/descriptors/kequn.binpb`` (every kequn
file with its imports) for gateways and clients, and from it the gRPC service
config ``deploy/grpc/service_config.json`` (services/common/service_config.py).

Uses ``grpc_tools.protoc`` (pinned through grpcio-tools) with the include path
of grpc_tools' bundled well-known types and of googleapis-common-protos (for
google/rpc/status.proto). Nothing under protos/vendor/ (a copy of
google/rpc/status.proto kept only for offline ``buf lint``) is generated: its
Python module is ``google.rpc.status_pb2`` from googleapis-common-protos.

Output is deterministic: files are fed to protoc in sorted order, the whole
tree is generated into a temporary directory and then synced into place
(stale files removed), so the same inputs and tool versions give the same
bytes. ``--check`` generates into a temporary directory only and compares.
"""

from __future__ import annotations

import argparse
import difflib
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_PACKAGE = PROTO_ROOT / "kequn"  # only this tree is generated
OUT_ROOT = ROOT / "gen" / "python"
OUT_PACKAGE = OUT_ROOT / "kequn"  # entirely generated; owned by this script
# The published descriptor set (FileDescriptorSet, with every import): what
# gateways (Envoy's gRPC-JSON transcoder, grpc-gateway) and clients without
# reflection load. Owned by this script too, checked for drift by --check.
DESCRIPTOR_SET = ROOT / "gen" / "descriptors" / "kequn.binpb"
DESCRIPTOR_NAME = DESCRIPTOR_SET.name
# The gRPC service config (timeouts, retries) derived from the descriptors by
# services/common/service_config.py; published for clients.
SERVICE_CONFIG = ROOT / "deploy" / "grpc" / "service_config.json"

# The committed code was generated with these tool versions; other versions
# may produce different bytes (and --check would then report drift).
PINNED = {"grpcio-tools": "1.85.1", "mypy-protobuf": "5.1.0"}


def _fail(msg: str) -> None:
    print(f"gen_protos: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _include_dirs() -> list[Path]:
    try:
        import grpc_tools  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - environment problem
        _fail("grpcio-tools is not installed (pip install -e '.[dev]')")
    wkt = Path(grpc_tools.__file__).resolve().parent / "_proto"
    try:
        import google.rpc.status_pb2 as status_pb2
    except ImportError:  # pragma: no cover - environment problem
        _fail("googleapis-common-protos is not installed")
    # .../site-packages/google/rpc/status_pb2.py -> .../site-packages
    googleapis = Path(status_pb2.__file__).resolve().parent.parent.parent
    if not (googleapis / "google" / "rpc" / "status.proto").is_file():
        _fail(f"google/rpc/status.proto not found under {googleapis}")
    return [PROTO_ROOT, wkt, googleapis]


def _plugin(name: str) -> Path:
    """Find protoc-gen-<name> next to the running interpreter, else on PATH."""
    exe = f"protoc-gen-{name}"
    candidate = Path(sys.executable).parent / exe
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(exe)
    if not found:
        _fail(f"{exe} not found (pip install mypy-protobuf)")
    return Path(found)


def _proto_files() -> list[str]:
    files = sorted(
        p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_PACKAGE.rglob("*.proto")
    )
    if not files:
        _fail(f"no .proto files under {PROTO_PACKAGE}")
    return files


def generate(out_root: Path) -> None:
    """Generate the full kequn package tree under out_root (must be empty)."""
    out_root.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "grpc_tools.protoc"]
    args += [f"--proto_path={d}" for d in _include_dirs()]
    args += [
        f"--plugin=protoc-gen-mypy={_plugin('mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        f"--descriptor_set_out={out_root / DESCRIPTOR_NAME}",
        "--include_imports",
    ]
    args += _proto_files()
    # Run from the repo root (protoc resolves file names against the
    # proto_path entries) and keep the plugins' chatter unless protoc fails.
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        _fail(f"protoc failed with exit code {proc.returncode}")

    pkg = out_root / "kequn"
    if not pkg.is_dir():
        _fail("protoc produced no kequn package")
    # __init__.py in every package directory (kequn, kequn/<area>, .../v1).
    for d in sorted([pkg, *(p for p in pkg.rglob("*") if p.is_dir())]):
        (d / "__init__.py").write_text("", encoding="utf-8")
    # PEP 561: the .pyi stubs are the package's types.
    (pkg / "py.typed").write_text("", encoding="utf-8")
    # protoc may leave byte-compiled files if anything imported from out_root.
    for cache in pkg.rglob("__pycache__"):
        shutil.rmtree(cache)


def _service_config(descriptor_set: Path) -> str:
    from google.protobuf import descriptor_pb2

    sys.path.insert(0, str(ROOT))
    from services.common import service_config

    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    return service_config.render(service_config.build(files))


def _published_ok(fresh: Path) -> bool:
    """The descriptor set and the service config match the fresh protos."""
    ok = True
    if not (DESCRIPTOR_SET.is_file() and filecmp.cmp(fresh / DESCRIPTOR_NAME, DESCRIPTOR_SET, shallow=False)):
        print(f"gen_protos: {DESCRIPTOR_SET.relative_to(ROOT)} is out of date with protos/ "
              "-- run `make protos` and commit", file=sys.stderr)
        ok = False
    if not (SERVICE_CONFIG.is_file()
            and SERVICE_CONFIG.read_text(encoding="utf-8") == _service_config(fresh / DESCRIPTOR_NAME)):
        print(f"gen_protos: {SERVICE_CONFIG.relative_to(ROOT)} is out of date with protos/ "
              "-- run `make protos` and commit", file=sys.stderr)
        ok = False
    return ok


def _files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _compare(expected: Path, actual: Path) -> tuple[list[str], list[str], list[str]]:
    """(missing, extra, changed) of actual against expected."""
    want, have = _files(expected), _files(actual) if actual.is_dir() else set()
    missing = sorted(want - have)
    extra = sorted(have - want)
    changed = sorted(
        f
        for f in want & have
        if not filecmp.cmp(expected / f, actual / f, shallow=False)
    )
    return missing, extra, changed


def _version_notes() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    notes = []
    for dist, want in PINNED.items():
        try:
            have = version(dist)
        except PackageNotFoundError:
            have = "not installed"
        if have != want:
            notes.append(f"{dist} {have} is installed; the committed code uses {want}")
    return notes


def check() -> int:
    with tempfile.TemporaryDirectory(prefix="kequn-gen-") as tmp:
        fresh = Path(tmp)
        generate(fresh)
        missing, extra, changed = _compare(fresh / "kequn", OUT_PACKAGE)
        published_ok = _published_ok(fresh)
        if not (missing or extra or changed):
            if not published_ok:
                return 1
            print(f"gen_protos: {OUT_PACKAGE.relative_to(ROOT)} is up to date")
            return 0
        rel = OUT_PACKAGE.relative_to(ROOT)
        print(
            f"gen_protos: {rel} is out of date with protos/ "
            "-- run `make protos` (python scripts/gen_protos.py) and commit",
            file=sys.stderr,
        )
        for f in missing:
            print(f"  missing:  {rel}/{f}", file=sys.stderr)
        for f in extra:
            print(f"  stale:    {rel}/{f}", file=sys.stderr)
        for f in changed:
            a = (OUT_PACKAGE / f).read_text(encoding="utf-8", errors="replace")
            b = (fresh / "kequn" / f).read_text(encoding="utf-8", errors="replace")
            diff = list(
                difflib.unified_diff(
                    a.splitlines(), b.splitlines(), f"committed/{f}", f"generated/{f}", lineterm=""
                )
            )
            print(f"  changed:  {rel}/{f} ({len(diff)} diff lines)", file=sys.stderr)
            for line in diff[:20]:
                print(f"    {line}", file=sys.stderr)
        for note in _version_notes():
            print(f"  note: {note}", file=sys.stderr)
        return 1


def write() -> int:
    with tempfile.TemporaryDirectory(prefix="kequn-gen-") as tmp:
        fresh = Path(tmp)
        generate(fresh)
        src = fresh / "kequn"
        missing, extra, changed = _compare(src, OUT_PACKAGE)
        OUT_PACKAGE.mkdir(parents=True, exist_ok=True)
        for f in extra:
            (OUT_PACKAGE / f).unlink()
        for f in missing + changed:
            dst = OUT_PACKAGE / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / f, dst)
        # Remove directories left empty by stale files.
        for d in sorted((p for p in OUT_PACKAGE.rglob("*") if p.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
        DESCRIPTOR_SET.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fresh / DESCRIPTOR_NAME, DESCRIPTOR_SET)
        SERVICE_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        SERVICE_CONFIG.write_text(_service_config(fresh / DESCRIPTOR_NAME), encoding="utf-8")
    for note in _version_notes():
        print(f"gen_protos: warning: {note}", file=sys.stderr)
    n = len(_files(OUT_PACKAGE))
    print(
        f"gen_protos: {OUT_PACKAGE.relative_to(ROOT)}: {n} files "
        f"({len(missing)} new, {len(changed)} changed, {len(extra)} removed)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and fail if gen/python differs",
    )
    args = parser.parse_args(argv)
    return check() if args.check else write()


if __name__ == "__main__":
    sys.exit(main())

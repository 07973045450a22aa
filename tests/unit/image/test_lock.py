"""requirements.lock, the image's dependencies: pinned, hashed, and current with pyproject.toml.

The image installs the lock with ``pip install --require-hashes`` (tests/container/ proves it
installs); these checks tell a contributor who changed pyproject's dependencies to run
``bash .ci/lock`` before the image build does.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[3]
LOCK = REPO / "requirements.lock"
DEPENDENCIES: list[str] = tomllib.loads((REPO / "pyproject.toml").read_text())[
    "project"]["dependencies"]


def _entries() -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, hashes), parsed from the lock's continuation-line format."""
    out: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for raw in LOCK.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not raw[0].isspace():
            req = Requirement(line.rstrip("\\ ").strip())
            (spec,) = req.specifier
            assert spec.operator == "==", f"{req.name} is not pinned with == in the lock"
            current = canonicalize_name(req.name)
            out[current] = (spec.version, [])
        elif line.startswith("--hash=sha256:"):
            assert current is not None
            out[current][1].append(line.removeprefix("--hash=sha256:").rstrip("\\ ").strip())
    return out


def test_the_lock_is_current_with_pyproject() -> None:
    digest = hashlib.sha256(json.dumps(sorted(DEPENDENCIES)).encode()).hexdigest()
    header = LOCK.read_text().splitlines()[0]
    assert header == f"# pyproject-dependencies-sha256: {digest}", (
        "pyproject.toml's dependencies changed since requirements.lock was made: run "
        "'bash .ci/lock' and commit requirements.lock")


@pytest.mark.parametrize("dependency", DEPENDENCIES)
def test_every_runtime_dependency_is_pinned_within_its_range(dependency: str) -> None:
    entries = _entries()
    req = Requirement(dependency)
    name = canonicalize_name(req.name)
    assert name in entries, f"{req.name} is missing from requirements.lock: run 'bash .ci/lock'"
    version, _ = entries[name]
    assert req.specifier.contains(version, prereleases=True), (
        f"requirements.lock pins {req.name}=={version}, outside pyproject's {req.specifier}: "
        "run 'bash .ci/lock'")
    # an extra's own requirements (e.g. psycopg[binary] -> psycopg-binary) are locked too
    for extra in req.extras:
        for needed in importlib.metadata.requires(req.name) or []:
            sub = Requirement(needed)
            if sub.marker is not None and sub.marker.evaluate({"extra": extra}) and \
                    not sub.marker.evaluate({"extra": ""}):
                assert canonicalize_name(sub.name) in entries, (
                    f"{req.name}[{extra}] needs {sub.name}, missing from requirements.lock")


def test_every_locked_package_has_sha256_hashes() -> None:
    entries = _entries()
    assert len(entries) >= len(DEPENDENCIES)
    for name, (_version, hashes) in entries.items():
        assert hashes, f"{name} has no --hash in requirements.lock"
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in hashes), name

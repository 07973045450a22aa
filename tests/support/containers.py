"""The container tier's fixtures: a private real Docker Engine and the image built from the
Dockerfile, exactly as ``make image`` builds it.

- ``engine``: ``dockerd`` (Debian's docker.io) started once per session by
  ``wingman.dev.engine.DockerEngine`` with a private socket, data root and exec root, stopped
  at the end of the session (also on Ctrl-C, SIGTERM and SIGHUP; see tests/conftest.py).
- ``base_image``: the Debian base made by ``.ci/base-image`` (debootstrap, cached in
  ``~/.cache/wingman/base``) and imported into the engine, since public registries are out of
  reach here.
- ``image``: ``.ci/image`` run against that engine with ``BASE`` set to the local base, the
  same script users run; the result is inspected once.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wingman.dev.engine import DockerEngine, docker_cli

REPO = Path(__file__).resolve().parents[2]
IMAGE_TAG = "wingman:container-tests"


@dataclass(frozen=True)
class Image:
    """The built image: its tag, id and ``docker image inspect`` document."""

    tag: str
    id: str
    inspect: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.inspect["Config"].get("Labels") or {})


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the container tier runs dockerd and debootstrap, which need root")


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    """A private Docker Engine for this session."""
    need_root()
    started = DockerEngine.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def base_image(engine: DockerEngine) -> str:
    """The locally made Debian base (python3 3.11), imported into the engine; its tag."""
    result = subprocess.run(["bash", str(REPO / ".ci" / "base-image")], capture_output=True,
                            text=True, timeout=1200)
    if result.returncode != 0:
        raise AssertionError(f".ci/base-image failed:\n{result.stderr[-3000:]}")
    tarball = Path(result.stdout.strip().splitlines()[-1])
    tag = f"wingman-base:{tarball.parent.name}"
    if not engine.has_image(tag):
        engine.import_rootfs(tarball, tag)
    return tag


def build_image(engine: DockerEngine, base: str, tag: str = IMAGE_TAG) -> Image:
    """Run ``.ci/image`` against ``engine``; the inspected result."""
    env = engine.env()
    env.update(DOCKER=docker_cli(), BASE=base)
    result = subprocess.run(["bash", str(REPO / ".ci" / "image"), tag], capture_output=True,
                            text=True, timeout=1200, env=env, cwd=REPO)
    if result.returncode != 0:
        raise AssertionError(f".ci/image failed (exit {result.returncode}):\n"
                             f"{result.stderr[-4000:]}")
    assert result.stdout.strip().splitlines()[-1] == tag
    inspect = json.loads(engine.docker("image", "inspect", tag).stdout)[0]
    return Image(tag, str(inspect["Id"]), inspect)


@pytest.fixture(scope="session")
def image(engine: DockerEngine, base_image: str) -> Image:
    """The image built from this checkout's Dockerfile on the local base."""
    return build_image(engine, base_image)


def run(engine: DockerEngine, image: Image, *args: str, options: tuple[str, ...] = (),
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``docker run --rm --network none [options] image args...`` (no check)."""
    return engine.docker("run", "--rm", "--network", "none", *options, image.tag, *args,
                         check=False, timeout=timeout)


def assert_one_audited_flow(audit_file: Path) -> None:
    """The operator and the gateway appended to one chain (a shared audit volume) that
    verifies and tells the whole story of a reviewed, granted and executed command."""
    from wingman.audit import verify

    report = verify(str(audit_file))
    assert report.ok, report
    events = [json.loads(line)["event"] for line in audit_file.read_text().splitlines()]
    for event in ("ApprovalReviewed", "TokenMinted", "GrantAuthorized", "GatewayTokenBurned",
                  "GatewayExecuting", "GatewayExecuted"):
        assert event in events, event


__all__ = [
    "IMAGE_TAG",
    "Image",
    "assert_one_audited_flow",
    "base_image",
    "build_image",
    "engine",
    "image",
    "need_root",
    "run",
]

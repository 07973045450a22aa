"""The distribution and the kubectl plugin as users get them: the krew archive built by
``.ci/plugin-archive``, installed by its launcher into a fresh virtualenv (offline, from the
wheels in the archive), and the krew manifest a release fills in.

From an installed wheel (no checkout), ``wingman dev`` says it needs a checkout, and the
plugin's help lists the commands for people only.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(os.uname().machine)


def test_the_distribution_is_not_named_like_an_unrelated_project() -> None:
    """'wingman' on the Python Package Index is someone else's; the import package stays."""
    assert PYPROJECT["project"]["name"] == "wingman-operator"
    assert PYPROJECT["project"]["scripts"] == {
        "wingman": "wingman.cli.main:main", "kubectl-wingman": "wingman.cli.main:main",
        # kubectl's plugin completion (`kubectl wingman <TAB>`)
        "kubectl_complete-wingman": "wingman.cli.main:kubectl_complete"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if ARCH is None:
        pytest.skip(f"no plugin archive for {os.uname().machine}")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(["bash", str(REPO / ".ci" / "plugin-archive"), str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.name == f"kubectl-wingman_v{VERSION}_linux_{ARCH}.tar.gz"
    return path


@pytest.fixture(scope="module")
def installed(archive: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Path, dict[str, str]]]:
    """The archive unpacked where krew would put it, and an environment whose caches are a
    fresh, empty directory (nothing of this checkout on the path)."""
    root = tmp_path_factory.mktemp("krew-store")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    home = tmp_path_factory.mktemp("home")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "WINGMAN_PYTHON": sys.executable, "PIP_NO_INDEX": "1"}
    first = subprocess.run([str(root / "kubectl-wingman"), "--version"], env=env,
                           capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"installing {VERSION}" in first.stderr and VERSION in first.stdout
    yield root, env


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_archive_holds_the_launcher_the_wheels_and_the_license(archive: Path) -> None:
    with tarfile.open(archive) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
    assert members["kubectl-wingman"].mode & 0o111
    assert {"LICENSE", "VERSION", "requirements.lock"} <= set(members)
    wheels = [n for n in members if n.startswith("wheels/") and n.endswith(".whl")]
    assert [w for w in wheels if w.startswith(f"wheels/wingman_operator-{VERSION}-")]
    assert not [m for m in members if "/dev/" in m or m.startswith("wheels/wingman-")]


def test_the_plugin_help_lists_commands_for_people_only(
        installed: tuple[Path, dict[str, str]]) -> None:
    root, env = installed
    out = _run([str(root / "kubectl-wingman"), "--help"], env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: kubectl wingman")
    listed = {line.split()[0] for line in out.stdout.splitlines()
              if re.match(r"^    \S", line)}
    assert {"request", "approve", "reject", "exec", "describe", "list"} <= listed
    assert not listed & {"operator", "gateway", "chat"}, listed


def test_wingman_dev_from_an_installed_wheel_says_it_needs_a_checkout(
        installed: tuple[Path, dict[str, str]]) -> None:
    root, env = installed
    venv = Path(env["XDG_CACHE_HOME"]) / "kubectl-wingman" / VERSION
    for argv in ([str(venv / "bin" / "wingman"), "dev", "run"],
                 [str(root / "kubectl-wingman"), "dev", "cluster"]):
        out = _run(argv, env)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "needs a source checkout" in out.stderr and "make run" in out.stderr
        assert "Traceback" not in out.stderr
    probe = _run([str(venv / "bin" / "python"), "-c",
                  "import importlib.metadata as m, importlib.util as u, wingman; "
                  "print(m.version('wingman-operator'), u.find_spec('wingman.dev') is None, "
                  "wingman.__file__)"], env)
    version, no_dev, location = probe.stdout.split()
    assert (version, no_dev) == (VERSION, "True")
    assert location.startswith(str(venv)), "the installed package, not this checkout"


def _release(manifest: str, tag: str, sha: dict[str, str]) -> dict[str, Any]:
    """What krew-release-bot does to .krew.yaml for a release: TagName, and each archive's
    URL and SHA-256."""
    def uri_and_sha(m: re.Match[str]) -> str:
        url = m.group(1).replace("{{ .TagName }}", tag)
        return f"uri: {url}\n      sha256: {sha[url.rsplit('/', 1)[1]]}"

    text = re.sub(r'\{\{addURIAndSha "([^"]+)" \.TagName \}\}', uri_and_sha, manifest)
    data = yaml.safe_load(text.replace("{{ .TagName }}", tag))
    assert isinstance(data, dict)
    return data


def test_the_krew_manifest_installs_the_archive_for_this_platform(archive: Path) -> None:
    tag = f"v{VERSION}"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    names = {f"kubectl-wingman_{tag}_linux_{a}.tar.gz": digest for a in ("amd64", "arm64")}
    plugin = _release((REPO / ".krew.yaml").read_text(), tag, names)
    assert plugin["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert plugin["kind"] == "Plugin" and plugin["metadata"]["name"] == "wingman"
    spec = plugin["spec"]
    assert spec["version"] == tag and re.fullmatch(r"v\d+\.\d+\.\d+(-[\w.]+)?", tag)
    assert spec["shortDescription"] and len(spec["shortDescription"]) <= 50
    assert spec["homepage"].startswith("https://")
    platforms = {(p["selector"]["matchLabels"]["os"], p["selector"]["matchLabels"]["arch"]): p
                 for p in spec["platforms"]}
    assert set(platforms) == {("linux", "amd64"), ("linux", "arm64")}
    mine = platforms[("linux", ARCH)]
    assert mine["uri"].endswith("/" + archive.name) and mine["sha256"] == digest
    with tarfile.open(archive) as tar:
        assert mine["bin"] in {m.name.removeprefix("./") for m in tar.getmembers()}

"""The Dockerfile, read statically against the chart, the package and the lock.

tests/container/ builds it and runs the image; these checks point at the line that drifted:
the entrypoint the chart and the gateway Job run, the chart's non-root user, a hermetic build
(one base image, offline installs with hashes, nothing fetched), and a base whose Python is the
one requirements.lock is resolved for.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from support.chart import find, render
from wingman.operator import manifests
from wingman.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = (REPO / "Dockerfile").read_text()
# continuation lines joined, comments dropped
INSTRUCTIONS = [i.strip() for i in re.sub(r"\\\n", " ", "\n".join(
    line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#"))).splitlines()
    if i.strip()]


def test_the_image_runs_the_entrypoints_the_chart_and_jobs_use(tmp_path: Path) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["wingman"] == "wingman.cli.main:main"
    assert re.search(r"ENV PATH=/opt/wingman/bin:", DOCKERFILE)
    objs = render("test")
    (deployment,) = find(objs, "Deployment", "wingman-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["wingman", "operator"]
    (test_pod,) = find(objs, "Pod", "wingman-verify-privileges")
    assert test_pod["spec"]["containers"][0]["args"][:2] == ["wingman", "verify-privileges"]
    policy = tmp_path / "p.yaml"
    policy.write_text("environment: test\n")
    job = manifests.gateway_job(
        {"metadata": {"name": "g", "namespace": "n", "uid": "u"}},
        OperatorSettings.from_env({"WINGMAN_POLICY_FILE": str(policy)}), 300)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "/usr/bin/tini", "--", "wingman", "gateway"]


def test_the_image_runs_as_the_charts_non_root_user() -> None:
    values = yaml.safe_load((REPO / "charts/wingman/values.yaml").read_text())
    uid = values["operator"]["runAsUser"]
    users = [i for i in INSTRUCTIONS if i.startswith("USER ")]
    assert users[-1] == f"USER {uid}:{uid}"
    assert uid != 0


def test_the_build_is_hermetic_one_base_offline_installs_with_hashes() -> None:
    froms = [i for i in INSTRUCTIONS if i.startswith("FROM ")]
    assert froms and all(f.split()[1] == "${BASE}" for f in froms), froms
    for line in INSTRUCTIONS:
        assert not line.startswith("ADD "), "ADD of URLs or archives is not allowed"
        assert "curl" not in line and "wget" not in line and "| sh" not in line
    installs = [m.group(0) for i in INSTRUCTIONS
                for m in re.finditer(r"pip install[^&]*", i)]
    assert len(installs) == 2
    assert all("--no-index" in i for i in installs), installs
    assert "--require-hashes -r /build/requirements.lock" in installs[0]
    assert "pip uninstall --yes pip setuptools" in DOCKERFILE


def test_the_default_base_has_the_python_the_lock_is_resolved_for() -> None:
    base = re.search(r"^ARG BASE=python:(\d+\.\d+)-slim-(\w+)$", DOCKERFILE, re.M)
    assert base is not None, "the default base is the public Python image"
    lock = (REPO / ".ci" / "lock").read_text()
    assert f"--python-version {base.group(1)}" in lock
    local = (REPO / ".ci" / "base-image").read_text()
    assert f"suite={base.group(2)}" in local, "the local base is the same Debian release"


def test_kubectl_comes_from_the_pinned_module() -> None:
    assert "COPY kubectl /usr/local/bin/kubectl" in INSTRUCTIONS
    script = (REPO / ".ci" / "image").read_text()
    assert "kubectl=$(bash .ci/provision-tools.sh)/kubectl" in script
    provision = (REPO / ".ci" / "provision-tools.sh").read_text()
    assert re.search(r"^\s*build_kube .*k8s\.io/kubernetes/cmd/kubectl", provision, re.M)
    for key in ("org.opencontainers.image.version", "org.opencontainers.image.revision",
                "org.opencontainers.image.source", "org.opencontainers.image.licenses"):
        assert key in DOCKERFILE, key

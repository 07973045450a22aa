"""The image cannot be built here; its contents are checked against what the tests run.

The Dockerfile must install this package (whose console script ``wingman`` is what the chart's
Deployment, the gateway Job and the helm test pod run), build kubectl from the pinned module the
tests use, run as the chart's non-root user, and fetch nothing unpinned from the network.
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
INSTRUCTIONS = [line.strip() for line in DOCKERFILE.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]


def test_the_image_runs_the_entrypoints_the_chart_and_jobs_use(tmp_path: Path) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["wingman"] == "wingman.cli.main:main"
    assert "/opt/wingman/bin/pip install ." in DOCKERFILE
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
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["wingman", "gateway"]


def test_the_image_runs_as_the_charts_non_root_user() -> None:
    values = yaml.safe_load((REPO / "charts/wingman/values.yaml").read_text())
    uid = values["operator"]["runAsUser"]
    users = [i for i in INSTRUCTIONS if i.startswith("USER ")]
    assert users[-1] == f"USER {uid}:{uid}"
    assert uid != 0


def test_kubectl_is_built_from_the_pinned_module_the_tests_use() -> None:
    assert "COPY .ci/tools/kube/ ./" in DOCKERFILE
    assert (REPO / ".ci/tools/kube/go.mod").is_file() and (REPO / ".ci/tools/kube/go.sum").is_file()
    go = re.search(r"^go (\d+\.\d+)", (REPO / ".ci/tools/kube/go.mod").read_text(), re.M)
    assert go is not None
    assert f"FROM golang:{go.group(1)}-" in DOCKERFILE, "builder matches go.mod's Go version"
    assert "k8s.io/kubernetes/cmd/kubectl" in DOCKERFILE


def test_nothing_unpinned_is_fetched_and_no_shell_pipes() -> None:
    for line in INSTRUCTIONS:
        assert not line.startswith("ADD "), "ADD of URLs or archives is not allowed"
        assert "curl" not in line and "wget" not in line and "| sh" not in line
    copied = [i.split()[1] for i in INSTRUCTIONS if i.startswith("COPY ") and "--from" not in i]
    for src in copied:
        assert (REPO / src).exists(), src

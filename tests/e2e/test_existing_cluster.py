"""The e2e tier's existing-cluster mode (``WINGMAN_E2E_KUBECONFIG``), as ``make e2e-kind`` uses
it, run here against a separately started local control plane.

A second control plane is started on its own (``wingman.dev.cluster``); a nested test session
is pointed at its admin kubeconfig and runs e2e tests there: people are impersonated, the chart
is installed by helm, and verify-privileges and the operator meet that cluster's RBAC and
admission policies. The nested session starts no control plane of its own: what it did is found
in the separate one afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from support.chart import REPO
from support.clusters import KUBECONFIG_ENV, NODES_ENV
from wingman.dev.cluster import running


def test_e2e_tests_run_against_an_existing_cluster(tmp_path: Path) -> None:
    with running(tmp_path / "separate") as separate:
        assert separate.kubectl("get", "crd", "-o", "name").stdout.strip() == ""
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", NODES_ENV)}
        env[KUBECONFIG_ENV] = str(separate.kubeconfig)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
             "--junitxml", str(tmp_path / "nested.xml"),
             "tests/e2e/test_privileges.py",
             "tests/e2e/test_flow.py::test_unapproved_and_edited_commands_are_blocked",
             "tests/e2e/test_flow.py::test_a_scale_approved_by_a_human_sets_the_replicas"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
        assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout
        # it worked on the separate control plane: the CRDs it applied are there
        crds = separate.kubectl("get", "crd", "-o", "name").stdout.split()
        assert "customresourcedefinition.apiextensions.k8s.io/approvalrequests.wingman.dev" in crds
        # and the harness played the node there
        nodes = yaml.safe_load(separate.kubectl("get", "nodes", "-o", "yaml").stdout)["items"]
        assert [n["metadata"]["name"] for n in nodes] == ["wingman-dev-node"]


def test_real_nodes_mode_skips_what_needs_the_harness(tmp_path: Path) -> None:
    with running(tmp_path / "separate") as separate:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env.update({KUBECONFIG_ENV: str(separate.kubeconfig), NODES_ENV: "cluster"})
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
             "tests/e2e/test_flow.py::test_a_scale_approved_by_a_human_sets_the_replicas",
             "tests/e2e/test_flow.py::test_unapproved_and_edited_commands_are_blocked"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-4000:]
        assert "3 passed, 1 skipped" in result.stdout, result.stdout[-2000:]
        assert "node harness" in result.stdout

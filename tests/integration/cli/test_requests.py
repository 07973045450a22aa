"""The kubectl plugin's commands, run as real identities against the installed chart."""

from __future__ import annotations

import argparse
import io
import json
import uuid
from collections.abc import Iterator

import pytest

from support.chart import APPROVER, WORKER, Release, approver_groups, installed, worker_groups
from wingman.cli import requests as client
from wingman.dev.cluster import LocalCluster


@pytest.fixture(scope="module")
def release(cluster: LocalCluster, crds: object) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    with installed(cluster, "test", namespace=f"wm-cli-{suffix}",
                   target_namespace=f"apps-cli-{suffix}") as rel:
        yield rel


def _run(cluster: LocalCluster, user: str, groups: list[str], *argv: str) -> tuple[int, str]:
    ns = argv[argv.index("-n") + 1]
    from wingman.cli.main import _parser

    args: argparse.Namespace = _parser().parse_args(
        [*argv, "--kubeconfig", str(cluster.kubeconfig_for(user, groups))])
    out = io.StringIO()
    assert args.namespace == ns
    return client.main(args, out=out), out.getvalue()


def test_request_names_the_real_caller_and_approve_records_the_approver(
    cluster: LocalCluster, release: Release
) -> None:
    ns = release.namespace
    cmd = f"kubectl rollout restart deployment/web -n {release.target_namespace}"
    code, out = _run(cluster, WORKER, worker_groups("test"), "request", "-n", ns,
                     "--env", "test", "--instruction", "restart web", "--command", cmd,
                     "--name", "cli-req")
    assert code == 0, out
    ar = json.loads(cluster.kubectl("get", "ar", "cli-req", "-n", ns, "-o", "json").stdout)
    assert ar["spec"]["requester"] == WORKER
    assert ar["spec"]["commands"] == [cmd]

    # The worker cannot approve their own request: admission says why.
    with pytest.raises(client.ClientError, match=r"(?i)approve|forbidden|requester"):
        _run(cluster, WORKER, worker_groups("test"), "approve", "-n", ns, "cli-req")

    code, out = _run(cluster, APPROVER, approver_groups("test"), "approve", "-n", ns,
                     "cli-req", "--reason", "change window")
    assert code == 0, out
    ar = json.loads(cluster.kubectl("get", "ar", "cli-req", "-n", ns, "-o", "json").stdout)
    assert ar["spec"]["decisions"] == [
        {"verdict": "Approve", "by": APPROVER, "reason": "change window"}]

    code, out = _run(cluster, APPROVER, approver_groups("test"), "describe", "-n", ns, "cli-req")
    assert code == 0
    assert f"Approve by {APPROVER}: change window" in out


def test_request_for_another_environment_is_refused_with_the_reason(
    cluster: LocalCluster, release: Release
) -> None:
    with pytest.raises(client.ClientError, match=r"prd|environment"):
        _run(cluster, WORKER, worker_groups("test"), "request", "-n", release.namespace,
             "--env", "prd", "--instruction", "x", "--command", "kubectl get pods")


def test_exec_grants_in_the_requesters_name_and_other_workers_are_told_why_not(
    cluster: LocalCluster, release: Release
) -> None:
    ns = release.namespace
    cmd = f"kubectl rollout restart deployment/api -n {release.target_namespace}"
    code, out = _run(cluster, WORKER, worker_groups("test"), "request", "-n", ns,
                     "--env", "test", "--instruction", "restart api", "--command", cmd,
                     "--name", "cli-exec")
    assert code == 0, out
    # another worker may not grant alice's request: admission names the rule
    with pytest.raises(client.ClientError,
                       match=r"must be in your own name: set spec.requester to 'mallory'"):
        _run(cluster, "mallory", worker_groups("test"), "exec", "-n", ns, "cli-exec",
             "--command", cmd)
    code, out = _run(cluster, WORKER, worker_groups("test"), "exec", "-n", ns, "cli-exec",
                     "--command", cmd)
    assert code == 0, out
    name = client.grant_name("cli-exec", cmd)
    eg = json.loads(cluster.kubectl("get", "eg", name, "-n", ns, "-o", "json").stdout)
    assert eg["spec"] == {"approvalRef": {"name": "cli-exec"}, "command": cmd,
                          "requester": WORKER}

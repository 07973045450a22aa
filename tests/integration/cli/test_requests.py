"""The command line as agents and people run it, against the installed chart and the operator.

The agent's CLI runs the way it runs in a pod: no kubeconfig anywhere, the API server named by
``KUBERNETES_SERVICE_HOST``/``_PORT``, and a real ServiceAccount token (TokenRequest), the
cluster CA and the namespace in a ServiceAccount directory (``WINGMAN_SERVICEACCOUNT_DIR``
points at it instead of /var/run/secrets). Approvers use their kubeconfig (``--kubeconfig``).
Every read command's ``-o json`` must parse, and the exit codes must say what happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.apiproxy import FaultyApiProxy
from support.chart import (
    APPROVER,
    WORKER,
    Release,
    approver_groups,
    installed,
    sa_user,
    worker_groups,
)
from support.operator import OperatorProcess, wait_for
from wingman.cli import requests as cli
from wingman.dev.cluster import LocalCluster
from wingman.kube import APPROVALS, GRANTS

AGENT_SA = "agent"


@dataclass
class Env:
    cluster: LocalCluster
    release: Release
    pod_env: dict[str, str]

    @property
    def ns(self) -> str:
        return self.release.namespace

    def restart(self, name: str) -> str:
        return f"kubectl rollout restart deployment/{name} -n {self.release.target_namespace}"

    def agent(self, *argv: str) -> tuple[int, str, str]:
        """The CLI in the pod-like environment (the agent's ServiceAccount)."""
        proc = subprocess.run([sys.executable, "-m", "wingman.cli", *argv], env=self.pod_env,
                              capture_output=True, text=True, timeout=120, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def agent_through(self, proxy: FaultyApiProxy, *argv: str) -> tuple[int, str, str]:
        """The agent's CLI with every API call through ``proxy`` (which counts them): the pod's
        API server address is the proxy's, and its ServiceAccount directory trusts the proxy."""
        sa = Path(self.pod_env["WINGMAN_SERVICEACCOUNT_DIR"])
        proxied = sa.with_name("serviceaccount-proxied")
        proxied.mkdir(exist_ok=True)
        for name in ("token", "namespace"):
            shutil.copy(sa / name, proxied / name)
        shutil.copy(proxy.ca_file, proxied / "ca.crt")
        host, port = proxy.url.rsplit("//", 1)[1].rsplit(":", 1)
        env = {**self.pod_env, "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port,
               "WINGMAN_SERVICEACCOUNT_DIR": str(proxied)}
        proc = subprocess.run([sys.executable, "-m", "wingman.cli", *argv], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    def person(self, user: str, groups: list[str], *argv: str) -> tuple[int, str, str]:
        env = {**self.pod_env, "KUBERNETES_SERVICE_HOST": ""}
        kubeconfig = str(self.cluster.kubeconfig_for(user, groups))
        proc = subprocess.run([sys.executable, "-m", "wingman.cli", *argv, "-n", self.ns,
                               "--kubeconfig", kubeconfig], env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def env(cluster: LocalCluster, crds: object, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Env]:
    suffix = uuid.uuid4().hex[:6]
    work = tmp_path_factory.mktemp("cli")
    ns, apps = f"wm-cli-{suffix}", f"apps-cli-{suffix}"
    values = {"operator.replicas": 0,
              "rbac.workers.serviceAccounts": [{"name": AGENT_SA}],
              "policy.allowlist": [f"kubectl rollout restart deployment/{{name}} -n {apps}",
                                   f"kubectl scale deployment/{{name}} "
                                   f"--replicas={{int:0..10}} -n {apps}"]}
    with installed(cluster, "test", namespace=ns, target_namespace=apps,
                   values=values) as rel:
        cluster.kubectl("create", "serviceaccount", AGENT_SA, "-n", ns)
        sa = work / "serviceaccount"
        sa.mkdir()
        (sa / "token").write_text(cluster.sa_token(ns, AGENT_SA, expiration_seconds=3600))
        (sa / "ca.crt").write_bytes(Path(cluster.ca_file).read_bytes())
        (sa / "namespace").write_text(ns)
        host, port = cluster.server.rsplit("//", 1)[1].rsplit(":", 1)
        home = work / "home"
        home.mkdir()
        pod_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                   "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port,
                   "WINGMAN_SERVICEACCOUNT_DIR": str(sa)}
        if os.environ.get("PYTHONPATH"):  # the tree under test, not an installed copy
            pod_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        op = OperatorProcess(cluster, ns, work / "operator")
        op.start()
        try:
            yield Env(cluster, rel, pod_env)
        finally:
            op.stop()


def _json(out: str) -> Any:
    return json.loads(out)


def test_in_a_pod_the_agent_requests_waits_and_executes_with_its_serviceaccount(env: Env
                                                                                ) -> None:
    cmd = env.restart("web")
    code, out, err = env.agent("request", "--instruction", "restart web after the config "
                               "change", "--command", cmd, "--name", "pod-req",
                               "--source-reference", "OPS-1", "--agent", "ops-bot",
                               "--wait", "--timeout", "60", "-o", "json")
    assert code == cli.EXIT_OK, err
    answer = _json(out)
    assert answer["state"] == "auto_approved" and answer["name"] == "pod-req"
    assert answer["namespace"] == env.ns, "the namespace comes from the pod's ServiceAccount"
    assert answer["requester"] == sa_user(env.ns, AGENT_SA)
    assert answer["source"] == {"reference": "OPS-1", "agent": "ops-bot"}
    assert "kubectl wingman exec pod-req" in answer["next"]
    assert err == "", "quiet when not on a terminal"

    code, out, err = env.agent("exec", "pod-req", "--command", cmd, "-o", "json")
    assert code == cli.EXIT_OK, err
    grant = _json(out)
    assert grant["state"] == "granted" and grant["request"] == "pod-req"
    # idempotent: the same exec answers the same grant
    code, out, _ = env.agent("exec", "pod-req", "--command", cmd, "-o", "json")
    assert code == cli.EXIT_OK and _json(out)["name"] == grant["name"]

    # every read command's -o json parses (and -o yaml too)
    code, out, _ = env.agent("describe", "pod-req", "-o", "json")
    described = _json(out)
    assert code == 0 and described["commands"][0]["grant"] == grant["name"]
    assert [g["name"] for g in described["grants"]] == [grant["name"]]
    code, out, _ = env.agent("result", grant["name"], "-o", "json")
    assert code == 0 and _json(out)["kind"] == "ExecutionGrant"
    code, out, _ = env.agent("list", "-o", "json")
    listed = _json(out)
    assert code == 0 and "pod-req" in [r["name"] for r in listed["requests"]]
    assert grant["name"] in [g["name"] for g in listed["grants"]]
    code, out, _ = env.agent("list", "--mine", "-o", "yaml")
    assert code == 0 and [r["name"] for r in yaml.safe_load(out)["requests"]] == ["pod-req"]
    code, out, _ = env.agent("policy", "-o", "json")
    policy = _json(out)
    assert code == 0 and policy["environment"] == "test" and policy["workers_may_grant"]
    assert env.restart("{name}") in policy["allowlist"]
    code, out, _ = env.agent("describe", "pod-req")
    assert code == 0 and "reference    OPS-1" in out and "State:        auto_approved" in out


def test_describe_and_list_read_each_object_once_and_show_everything_from_that_read(
        env: Env, tmp_path: Path) -> None:
    """``describe`` reads the request once and its grants once, and prints the grants table
    and the state from those reads (a second read could find a grant changed: two states on
    one page); ``list`` lists the requests once and the grants once. Counted on the wire, at a
    proxy in front of the real API server."""
    cmd = env.restart("reads")
    code, out, err = env.agent("request", "--instruction", "restart reads", "--command", cmd,
                               "--name", "reads-req", "--wait", "--timeout", "60",
                               "-o", "json")
    assert code == cli.EXIT_OK and _json(out)["state"] == "auto_approved", err
    code, out, err = env.agent("exec", "reads-req", "--command", cmd, "-o", "json")
    assert code == cli.EXIT_OK, err
    grant = _json(out)["name"]
    request_path = APPROVALS.path(env.ns, "reads-req")
    requests_path, grants_path = APPROVALS.path(env.ns), GRANTS.path(env.ns)

    def reads(proxy: FaultyApiProxy) -> dict[str, int]:
        return {path: proxy.count("GET", path)
                for path in (request_path, requests_path, grants_path)}

    (tmp_path / "proxy").mkdir()
    with FaultyApiProxy(env.cluster.server, env.cluster.ca_file, tmp_path / "proxy") as proxy:
        for fmt in ("text", "json", "yaml"):
            proxy.calls.clear()
            code, out, err = env.agent_through(proxy, "describe", "reads-req", "-o", fmt)
            assert code == cli.EXIT_OK, err
            assert grant in out
            assert reads(proxy) == {request_path: 1, requests_path: 0, grants_path: 1}, \
                (fmt, proxy.calls)
        for argv in (["list"], ["list", "--mine"], ["list", "-o", "json"]):
            proxy.calls.clear()
            code, out, err = env.agent_through(proxy, *argv)
            assert code == cli.EXIT_OK, err
            assert "reads-req" in out and grant in out
            assert reads(proxy) == {request_path: 0, requests_path: 1, grants_path: 1}, \
                (argv, proxy.calls)
        # a retired (deleted) request: one read, and describe says where its story is
        env.cluster.kubectl("delete", "executiongrant", grant, "-n", env.ns, "--wait=true")
        env.cluster.kubectl("delete", "approvalrequest", "reads-req", "-n", env.ns,
                            "--wait=true")
        proxy.calls.clear()
        code, _, err = env.agent_through(proxy, "describe", "reads-req")
        assert code == cli.EXIT_API and "wingman audit show" in err, err
        assert "--subject reads-req" in err
        assert reads(proxy) == {request_path: 1, requests_path: 0, grants_path: 0}, proxy.calls


def test_exit_codes_tell_waiting_denied_and_api_errors_apart(env: Env) -> None:
    risky = f"kubectl scale deployment/web --replicas=0 -n {env.release.target_namespace}"
    code, out, _ = env.agent("request", "--instruction", "scale web to zero", "--command",
                             risky, "--name", "needs-human", "--wait", "--timeout", "3",
                             "-o", "json")
    answer = _json(out)
    assert code == cli.EXIT_WAITING, out
    assert answer["state"] == "awaiting_approval" and answer["waited_seconds"] >= 3
    assert answer["approvals"] == {"have": 0, "need": 1, "by": []}

    # a worker cannot decide, its own request least of all: RBAC refuses, an API error
    code, _, err = env.agent("approve", "needs-human")
    assert code == cli.EXIT_API and 'cannot patch resource "approvalrequests"' in err

    code, out, err = env.person(APPROVER, approver_groups("test"), "reject", "needs-human",
                                "--reason", "not during the freeze", "-o", "json")
    assert code == cli.EXIT_OK, err
    assert _json(out)["state"] in ("awaiting_approval", "rejected")  # the operator counts it
    wait_for("the rejection counted", lambda: _json(env.agent(
        "describe", "needs-human", "-o", "json")[1])["state"] == "rejected", 30)
    code, out, _ = env.agent("request", "--instruction", "x", "--command", risky, "--wait",
                             "--timeout", "1", "--name", "needs-human", "-o", "json")
    assert code == cli.EXIT_USAGE  # AlreadyExists: the input (the name) is the problem
    code, out, _ = env.agent("describe", "needs-human", "-o", "json")
    rejected = _json(out)
    assert (rejected["state"], rejected["by"], rejected["message"]) == (
        "rejected", APPROVER, "not during the freeze")
    code, out, _ = env.agent("exec", "needs-human", "--command", risky, "-o", "json")
    assert code == cli.EXIT_DENIED and _json(out)["state"] == "rejected"

    code, _, err = env.agent("result", "no-such-grant")
    assert code == cli.EXIT_API and "NotFound" in err
    code, _, err = env.agent("request", "--env", "prd", "--instruction", "x", "--command",
                             "kubectl get pods")
    assert code == cli.EXIT_USAGE and "prd" in err  # admission: not this environment


def test_people_use_their_kubeconfig_and_another_worker_cannot_grant_alices_request(
        env: Env) -> None:
    cmd = env.restart("api")
    code, out, err = env.person(WORKER, worker_groups("test"), "request", "--instruction",
                                "restart api", "--command", cmd, "--name", "alice-req",
                                "--wait", "--timeout", "60", "-o", "json")
    assert code == cli.EXIT_OK, err
    assert _json(out)["requester"] == WORKER
    code, _, err = env.person("mallory", worker_groups("test"), "exec", "alice-req",
                              "--command", cmd)
    assert code == cli.EXIT_API
    assert "must be in your own name: set spec.requester to 'mallory'" in err


def test_a_wait_interrupted_after_the_request_was_made_names_the_request(env: Env) -> None:
    risky = f"kubectl scale deployment/web --replicas=0 -n {env.release.target_namespace}"
    proc = subprocess.Popen([sys.executable, "-m", "wingman.cli", "request", "--instruction",
                             "scale web to zero, interrupted", "--command", risky, "--wait", "-o",
                             "json"],
                            env=env.pod_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for("the request was made", lambda: "scale web to zero, interrupted" in env.agent(
            "list", "-o", "json")[1], 60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    listed = [r for r in _json(env.agent("list", "-o", "json")[1])["requests"]
              if r["instruction"] == "scale web to zero, interrupted"]
    assert len(listed) == 1
    name = listed[0]["name"]
    assert proc.returncode == cli.EXIT_INTERRUPTED and out == ""
    # whoever ran it learns that the request exists and how to follow it, not to ask again
    assert f"ApprovalRequest {name} exists" in err
    assert f"kubectl wingman describe {name}" in err and "Traceback" not in err

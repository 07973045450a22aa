"""The preview end to end on the real control plane: the operator starts the preview Job when a
request arrives, the node harness runs it (``wingman preview`` with the preview identity's
real token), the operator records what it reported before the panel votes, and the gateway
holds an approval to the state its preview saw.

The chart is installed for real with previews on; the node harness runs every pod of the
release namespace (preview Jobs and gateway Jobs) for the whole module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.chart import (
    APPROVER,
    DEFAULT_GATEWAY_IMAGE,
    WORKER,
    approval_request,
    approver_groups,
    installed,
    worker_groups,
)
from support.operator import OperatorProcess, get, wait_for
from wingman.dev.node import NodeHarness

pytestmark = pytest.mark.e2e


class World:
    def __init__(self, cluster: Any, ns: str, apps: str, op: OperatorProcess) -> None:
        self.cluster, self.ns, self.apps, self.op = cluster, ns, apps, op

    def request(self, *commands: str) -> str:
        name = f"pv-{uuid.uuid4().hex[:6]}"
        body = approval_request(name, requester=WORKER, environment="test", commands=commands)
        self.cluster.kubectl("apply", "-n", self.ns, "-f", "-", input=json.dumps(body),
                             user=WORKER, groups=worker_groups("test"))
        return name

    def wait(self, kind: str, name: str, *phases: str, timeout: float = 120) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = get(self.cluster, kind, self.ns, name)
            return obj if obj and (obj.get("status") or {}).get("phase") in phases else None
        found: dict[str, Any] = wait_for(f"{kind}/{name} in {phases}", probe, timeout,
                                         on_timeout=self.op.log_tail)
        return found

    def approve(self, name: str) -> None:
        entry = {"verdict": "Approve", "by": APPROVER, "reason": "e2e"}
        self.cluster.kubectl("patch", "ar", name, "-n", self.ns, "--type=json", "-p",
                             json.dumps([{"op": "add", "path": "/spec/decisions",
                                          "value": [entry]}]),
                             user=APPROVER, groups=approver_groups("test"))

    def grant(self, name: str, approval: str, command: str) -> None:
        body = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                "metadata": {"name": name},
                "spec": {"approvalRef": {"name": approval}, "command": command,
                         "requester": WORKER}}
        self.cluster.kubectl("apply", "-n", self.ns, "-f", "-", input=json.dumps(body),
                             user=WORKER, groups=worker_groups("test"))

    def deployment(self) -> dict[str, Any]:
        obj = get(self.cluster, "deployment", self.apps, "web")
        assert obj is not None
        return obj

    def approved(self, *commands: str) -> tuple[str, dict[str, Any]]:
        """A request, previewed and approved (by the panel or, else, a human)."""
        name = self.request(*commands)
        ar = self.wait("ar", name, "AutoApproved", "AwaitingDecision")
        if ar["status"]["phase"] == "AwaitingDecision":
            self.approve(name)
            ar = self.wait("ar", name, "Approved")
        return name, ar


def _cli(world: World, *argv: str) -> str:
    kubeconfig = str(world.cluster.kubeconfig_for(WORKER, worker_groups("test")))
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST",
                                                            "KUBECONFIG")}
    proc = subprocess.run([sys.executable, "-m", "wingman.cli", *argv, "-n", world.ns,
                           "--kubeconfig", kubeconfig], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def world(cluster: Any, crds: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    suffix = uuid.uuid4().hex[:6]
    ns, apps = f"wm-pv-{suffix}", f"apps-pv-{suffix}"
    work = tmp_path_factory.mktemp("preview-e2e")
    values = {"operator.replicas": 0, "policy.allowlist": [
        f"kubectl scale deployment/{{name}} --replicas={{int:0..10}} -n {apps}",
        f"kubectl rollout restart deployment/{{name}} -n {apps}"]}
    with installed(cluster, "test", namespace=ns, target_namespace=apps, values=values):
        cluster.kubectl("create", "deployment", "web", "-n", apps,
                        "--image=registry.k8s.io/pause:3.9", "--replicas=1")
        op = OperatorProcess(cluster, ns, work / "operator", preview=True,
                             extra_env={"WINGMAN_AUDIT_VOLUME_CLAIM": "wingman-audit"})
        op.start()
        try:
            with NodeHarness(cluster=cluster, namespaces=[ns], workdir=work / "node",
                             gateway_image=DEFAULT_GATEWAY_IMAGE,
                             volume_dirs={"wingman-audit": op.audit_path.parent}):
                yield World(cluster, ns, apps, op)
        finally:
            op.stop()


def test_the_preview_of_a_scale_shows_the_replica_change_and_the_targets_version(
        world: World) -> None:
    scale = f"kubectl scale deployment/web --replicas=3 -n {world.apps}"
    before = world.deployment()["metadata"]
    name, ar = world.approved(scale)
    preview = ar["status"]["preview"]
    assert preview["phase"] == "Completed", preview
    (command,) = preview["commands"]
    assert command["outcome"] == "Previewed"
    (target,) = command["targets"]
    assert (target["kind"], target["namespace"], target["name"]) == ("Deployment", world.apps,
                                                                     "web")
    assert (target["uid"], target["generation"]) == (before["uid"], before["generation"])
    assert "-  replicas: 1\n+  replicas: 3" in command["diff"]
    assert preview["summary"]["objects"] == 1
    conds = {c["type"]: c for c in ar["status"]["conditions"]}
    assert conds["Previewed"]["status"] == "True"
    assert conds["Previewed"]["reason"] == "PreviewSucceeded"
    # the panel saw it: the blast-radius voter weighed what the preview found
    blast = next(v for v in ar["status"]["consensus"]["votes"] if v["voter"] == "blast-radius")
    assert f"preview: 1 object(s) (Deployment) in {world.apps}" in blast["rationale"]
    assert world.deployment()["spec"]["replicas"] == 1, "the preview changed nothing"
    events = [r["event"] for r in world.op.audit_events() if r["subject"].get("name") == name]
    assert events.index("ApprovalPreviewStarted") < events.index("ApprovalPreviewed") \
        < events.index("ApprovalReviewed")
    # people and agents see it: kubectl wingman describe, and the status protocol the MCP
    # server answers with (describe -o json), as the worker, from the live object
    text = _cli(world, "describe", name)
    assert f"Preview:      1 object(s) would change (Deployment) in {world.apps}" in text
    assert f"Previewed: Update Deployment {world.apps}/web (generation " \
        f"{before['generation']})" in text
    assert "-  replicas: 1" in text and "+  replicas: 3" in text
    answer = json.loads(_cli(world, "describe", name, "-o", "json"))
    assert answer["preview"]["commands"][0]["targets"][0]["uid"] == before["uid"]


def test_a_missing_target_is_a_finding_the_panel_sees(world: World) -> None:
    name = world.request(f"kubectl scale deployment/ghost --replicas=2 -n {world.apps}")
    ar = world.wait("ar", name, "AwaitingDecision", "AutoApproved", "Rejected")
    assert ar["status"]["phase"] == "AwaitingDecision", "a finding is never auto-approved"
    (command,) = ar["status"]["preview"]["commands"]
    assert command["outcome"] == "TargetMissing" and '"ghost" not found' in command["message"]
    conds = {c["type"]: c for c in ar["status"]["conditions"]}
    assert conds["Previewed"]["reason"] == "PreviewFindings"
    assert "TargetMissing" in conds["Previewed"]["message"]
    assert "PreviewFinding" in ar["status"]["consensus"]["flags"]
    blast = next(v for v in ar["status"]["consensus"]["votes"] if v["voter"] == "blast-radius")
    assert blast["verdict"] == "reject" and "TargetMissing" in blast["rationale"]
    events = json.loads(world.cluster.kubectl(
        "get", "events", "-n", world.ns, "-o", "json", "--field-selector",
        f"involvedObject.name={name}").stdout)["items"]
    assert "PreviewFindings" in {e["reason"] for e in events}


def test_a_target_changed_after_approval_is_refused_and_with_drift_allowed_it_runs(
        world: World) -> None:
    scale = f"kubectl scale deployment/web --replicas=2 -n {world.apps}"
    name, ar = world.approved(scale)
    seen = ar["status"]["preview"]["commands"][0]["targets"][0]["generation"]
    world.cluster.kubectl("scale", "deployment/web", "--replicas=5", "-n", world.apps)  # by hand
    world.grant(f"{name}-1", name, scale)
    eg = world.wait("eg", f"{name}-1", "Succeeded", "Failed")
    assert (eg["status"]["phase"], eg["status"]["reason"]) == ("Failed", "TargetChanged")
    assert f"generation:{seen} then, generation:{seen + 1} now" in eg["status"]["message"]
    assert world.deployment()["spec"]["replicas"] == 5, "nothing ran"
    refused = [r for r in world.op.audit_events() if r["event"] == "GatewayRefused"
               and r["subject"]["name"] == f"{name}-1"]
    assert refused and refused[0]["data"]["reason"] == "TargetChanged"

    # the environment allows drift (gateway pods read the policy ConfigMap when they start)
    policy = world.cluster.kubectl("get", "configmap", "wingman-policy", "-n", world.ns, "-o",
                                   "jsonpath={.data.policy\\.yaml}").stdout
    world.cluster.kubectl("patch", "configmap", "wingman-policy", "-n", world.ns,
                          "--type=merge", "-p", json.dumps({"data": {
                              "policy.yaml": policy.replace("targetDrift: Refuse",
                                                            "targetDrift: Allow")}}))
    try:
        again, _ = world.approved(scale)
        world.cluster.kubectl("scale", "deployment/web", "--replicas=4", "-n", world.apps)
        world.grant(f"{again}-1", again, scale)
        eg = world.wait("eg", f"{again}-1", "Succeeded", "Failed")
        assert eg["status"]["phase"] == "Succeeded", eg["status"]
        assert world.deployment()["spec"]["replicas"] == 2
        executing = [r for r in world.op.audit_events() if r["event"] == "GatewayExecuting"
                     and r["subject"]["name"] == f"{again}-1"]
        assert "changed since the preview" in executing[0]["data"]["targetDrift"][0]
    finally:
        world.cluster.kubectl("patch", "configmap", "wingman-policy", "-n", world.ns,
                              "--type=merge", "-p", json.dumps({"data": {
                                  "policy.yaml": policy}}))

"""Wingman as it is deployed, through the node harness: the fallback of test_real_node.py.

Runs where the real node cannot (``wingman.dev.kubelet.unavailable()``) or with
``WINGMAN_DEV_NODE=harness``; otherwise test_real_node.py runs the same flow on kubelet and
containerd.

The chart installed, every pod a real container of the image.

``helm install`` with the test values and the locally built image (``image.repository`` and
``image.tag``). The node harness runs pods as containers in the real Docker Engine, with
the flags their specs ask for (wingman.dev.podspec, derived from the pod objects the API server
holds, not from a copy): the operator pod the Deployment controller creates from the chart's
Deployment, each gateway pod the Job controller creates from the Job the operator built, and
``helm test``'s verify-privileges pod. Each runs as 65532 with a read-only root, every
capability dropped, no privilege escalation, its Secret / ConfigMap / token volumes mounted
where the spec says, a real ServiceAccount token from TokenRequest, on the node's network
(the local API server listens on loopback).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.chart import WORKER, approval_request, installed
from support.chart import worker_groups as groups_of_workers
from support.containers import Image, assert_one_audited_flow
from support.operator import free_port, get, wait_for
from wingman.dev import kubelet
from wingman.dev.cluster import LocalCluster
from wingman.dev.engine import DockerEngine
from wingman.dev.node import NodeHarness, PodRun
from wingman.dev.run import NODE_ENV, node_mode
from wingman.model import names

pytestmark = [
    pytest.mark.nodeharness,
    pytest.mark.skipif(node_mode() == "real" and kubelet.unavailable() is None,
                       reason="a real node runs the deployed image here (test_real_node.py); "
                              f"the node harness is the fallback, {NODE_ENV}=harness selects it"),
]


@dataclass
class Deployed:
    cluster: LocalCluster
    ns: str
    apps: str
    node: NodeHarness
    audit_dir: Path
    engine: DockerEngine

    def as_worker(self, *args: str, input: str | None = None) -> Any:
        return self.cluster.kubectl(*args, "-n", self.ns, input=input, user=WORKER,
                                    groups=groups_of_workers("test"))

    def wait_phase(self, kind: str, name: str, *phases: str, timeout: float = 120
                   ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = get(self.cluster, kind, self.ns, name)
            return obj if obj and (obj.get("status") or {}).get("phase") in phases else None
        found: dict[str, Any] = wait_for(f"{kind}/{name} in {phases}", probe, timeout,
                                         on_timeout=self.logs)
        return found

    def runs(self, prefix: str) -> list[PodRun]:
        return [r for r in self.node.runs if r.name.startswith(prefix)]

    def logs(self) -> str:
        out = []
        for ctr in self.engine.client().containers.list(all=True):
            out.append(f"--- {ctr.name}\n{ctr.logs(tail=40).decode(errors='replace')}")
        for run in self.node.runs:
            out.append(f"--- {run.name} exit {run.exit_code}\n"
                       f"{run.stderr.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)


@pytest.fixture(scope="module")
def deployed(cluster: LocalCluster, crds: Path, engine: DockerEngine, image: Image,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    suffix = uuid.uuid4().hex[:6]
    ns, apps = f"wm-img-{suffix}", f"apps-{suffix}"
    work = tmp_path_factory.mktemp("deployed")
    audit_dir = work / "audit-volume"
    values = {
        "image.repository": image.tag.rsplit(":", 1)[0],
        "image.tag": image.tag.rsplit(":", 1)[1],
        "operator.replicas": 1,
        # the node's network is the host's: ports nobody else uses
        "operator.healthPort": free_port(),
        "operator.metricsPort": free_port(),
        "operator.clockLeewaySeconds": 30,
        "audit.file.persistence.enabled": True,
        "policy.allowlist": [f"kubectl rollout restart deployment/{{name}} -n {apps}"],
    }
    with installed(cluster, "test", namespace=ns, target_namespace=apps, values=values):
        cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": apps},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "containers": [{"name": "web",
                                         "image": "registry.k8s.io/pause:3.9"}]}}}}))
        with NodeHarness(cluster=cluster, namespaces=[ns], workdir=work / "node",
                         gateway_image=image.tag, engine=engine, keep=True,
                         volume_dirs={"wingman-audit": audit_dir}) as node:
            yield Deployed(cluster, ns, apps, node, audit_dir, engine)


def _operator_running(d: Deployed) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        pods = json.loads(d.cluster.kubectl(
            "get", "pods", "-n", d.ns, "-o", "json",
            "-l", "app.kubernetes.io/component=operator").stdout)["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return running[0] if running else None
    pod: dict[str, Any] = wait_for("the operator pod Running", probe, 120, on_timeout=d.logs)
    return pod


def test_the_operator_pod_takes_a_request_to_an_executed_audited_restart(
        deployed: Deployed) -> None:
    d = deployed
    pod = _operator_running(d)
    (status,) = pod["status"]["containerStatuses"]
    assert status["containerID"].startswith("docker://")
    container = d.engine.client().containers.get(status["containerID"].removeprefix("docker://"))
    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == "65532:65532"
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert container.attrs["Config"]["Cmd"] == ["wingman", "operator"]

    body = approval_request("restart-web", requester=WORKER, environment="test",
                            commands=[f"kubectl rollout restart deployment/web -n {d.apps}"])
    d.as_worker("apply", "-f", "-", input=json.dumps(body))
    ar = d.wait_phase("ar", "restart-web", "AutoApproved")
    # previewed first, by the image's `wingman preview` as a real container of the preview Job
    preview = ar["status"]["preview"]
    assert preview["phase"] == "Completed", (preview, d.logs())
    assert preview["commands"][0]["outcome"] == "Previewed", preview
    assert "kubectl.kubernetes.io/restartedAt" in preview["commands"][0]["diff"]
    (prun,) = d.runs(names.preview_job_name("restart-web"))
    assert prun.exit_code == 0 and prun.argv == ("/usr/bin/tini", "--", "wingman", "preview")
    d.as_worker("apply", "-f", "-", input=json.dumps({
        "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
        "metadata": {"name": "restart-web-1"},
        "spec": {"approvalRef": {"name": "restart-web"}, "requester": WORKER,
                 "command": f"kubectl rollout restart deployment/web -n {d.apps}"}}))
    eg = d.wait_phase("eg", "restart-web-1", "Succeeded", "Failed", timeout=180)
    assert eg["status"]["phase"] == "Succeeded", (eg["status"], d.logs())
    assert "restarted" in eg["status"]["output"]
    web = get(d.cluster, "deployment", d.apps, "web")
    assert web is not None
    assert "kubectl.kubernetes.io/restartedAt" in web["spec"]["template"]["metadata"].get(
        "annotations", {})
    # the Job the operator built ran as a real container and the Job controller saw it complete
    wait_for("the gateway Job succeeded", lambda: (get(
        d.cluster, "job", d.ns, names.job_name("restart-web-1")) or {}).get(
        "status", {}).get("succeeded") == 1, 60, on_timeout=d.logs)
    (run,) = d.runs(names.job_name("restart-web-1"))
    assert run.exit_code == 0 and run.argv == ("/usr/bin/tini", "--", "wingman", "gateway")
    # operator and gateway wrote one chain through the shared audit volume
    assert_one_audited_flow(d.audit_dir / "audit.jsonl")


def test_helm_test_runs_verify_privileges_from_the_image(deployed: Deployed) -> None:
    d = deployed
    _operator_running(d)
    result = d.cluster.helm("test", "wingman", "-n", d.ns, "--timeout", "4m", check=False,
                            timeout=300)
    (run,) = d.runs("wingman-verify-privileges")
    assert run.argv[:2] == ("wingman", "verify-privileges")
    out = run.stdout.read_text()
    assert result.returncode == 0, (result.stderr, out, run.stderr.read_text()[-3000:])
    assert run.exit_code == 0
    assert "wingman-gateway" in out and "wingman-verifier" in out


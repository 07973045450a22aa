"""Wingman on a real node: kubelet + containerd run the image's pods, nothing plays the node.

A local control plane with a real node joined (``wingman.dev.kubelet``: kubelet, kube-proxy and
kube-scheduler from the pinned module, Debian's containerd and CNI plugins), the image built
from the Dockerfile imported into containerd from ``docker save``, the chart installed with the
test values. The scheduler places the operator pod the Deployment controller creates; the
kubelet runs it, and the preview and gateway pods the Job controller creates from the Jobs the
operator built, as the specs say (user, read-only root, capabilities, seccomp: the OCI specs
runc received are read back from containerd), each in its own network namespace reaching the
API server through the ``kubernetes`` Service (kube-proxy). The Job controller sees the pods'
real phases; the audit volume is a real PersistentVolume the binder bound to the chart's claim.
"""

from __future__ import annotations

import ipaddress
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.chart import WORKER, approval_request, installed
from support.chart import worker_groups as groups_of_workers
from support.containers import Image, assert_one_audited_flow
from support.operator import get, wait_for
from wingman.dev import kubelet
from wingman.dev.cluster import LocalCluster
from wingman.dev.engine import DockerEngine
from wingman.dev.run import NODE_ENV, node_mode
from wingman.model import names

REPO = Path(__file__).resolve().parents[2]
GATEWAY_UID = 65532


@dataclass
class OnNode:
    cluster: LocalCluster
    node: kubelet.RealNode
    ns: str
    apps: str
    audit_dir: Path

    def as_worker(self, *args: str, input: str | None = None) -> Any:
        return self.cluster.kubectl(*args, "-n", self.ns, input=input, user=WORKER,
                                    groups=groups_of_workers("test"))

    def logs(self) -> str:
        out = [self.cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout,
               self.cluster.kubectl("get", "events", "-A", check=False).stdout[-4000:]]
        for name in ("kubelet", "containerd"):
            out.append(f"--- {name}\n{self.node.log_tail(name, 40)}")
        pods = json.loads(self.cluster.kubectl("get", "pods", "-n", self.ns, "-o", "json",
                                               check=False).stdout or '{"items": []}')
        for pod in pods["items"]:
            res = self.cluster.kubectl("logs", "-n", self.ns, pod["metadata"]["name"],
                                       "--tail", "30", check=False)
            out.append(f"--- pod {pod['metadata']['name']}\n{res.stdout}{res.stderr}")
        return "\n".join(out)

    def wait_phase(self, kind: str, name: str, *phases: str, timeout: float = 180
                   ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = get(self.cluster, kind, self.ns, name)
            return obj if obj and (obj.get("status") or {}).get("phase") in phases else None
        found: dict[str, Any] = wait_for(f"{kind}/{name} in {phases}", probe, timeout,
                                         on_timeout=self.logs)
        return found

    def pods_of(self, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(self.cluster.kubectl(
            "get", "pods", "-n", self.ns, "-l", selector, "-o", "json").stdout)["items"]
        return items

    def oci_spec(self, container_id: str) -> dict[str, Any]:
        """The OCI runtime spec containerd handed runc for a container."""
        info = json.loads(self.node.ctr("containers", "info",
                                        container_id.removeprefix("containerd://")).stdout)
        spec: dict[str, Any] = info["Spec"]
        return spec


@pytest.fixture(scope="module")
def on_node(engine: DockerEngine, image: Image, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[OnNode]:
    if node_mode() == "harness":
        pytest.skip(f"{NODE_ENV}=harness: the node harness runs this tier (test_deployed.py)")
    reason = kubelet.unavailable()
    if reason is not None:
        pytest.skip(f"a real node cannot run on this machine: {reason} (test_deployed.py runs "
                    "the image through the node harness instead)")
    work = tmp_path_factory.mktemp("real-node")
    archive = work / "image.tar"
    engine.docker("save", "-o", str(archive), image.tag, timeout=600)
    suffix = uuid.uuid4().hex[:6]
    ns, apps = f"wm-node-{suffix}", f"apps-{suffix}"
    audit_dir = work / "audit-volume"
    audit_dir.mkdir()
    os.chown(audit_dir, GATEWAY_UID, GATEWAY_UID)  # a hostPath volume: no fsGroup applies
    with kubelet.cluster_with_node(work, images=[archive]) as (cluster, node):
        archive.unlink()
        cluster.apply_crds(REPO / "crds")
        # the audit volume: a real PersistentVolume for the chart's claim (bound by the
        # PersistentVolume binder; the kubelet mounts it into operator and gateway pods)
        cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": f"audit-{suffix}"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": str(audit_dir), "type": "Directory"},
                     "claimRef": {"namespace": ns, "name": "wingman-audit"}}}))
        values = {
            "image.repository": image.tag.rsplit(":", 1)[0],
            "image.tag": image.tag.rsplit(":", 1)[1],
            "operator.replicas": 1,
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
                             "containers": [{"name": "web", "image": kubelet.PAUSE_IMAGE,
                                             "imagePullPolicy": "Never"}]}}}}))
            yield OnNode(cluster, node, ns, apps, audit_dir)


def _running(d: OnNode, selector: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        running = [p for p in d.pods_of(selector) if p["status"].get("phase") == "Running"]
        return running[0] if running else None
    pod: dict[str, Any] = wait_for(f"a Running pod {selector}", probe, 180, on_timeout=d.logs)
    return pod


def _assert_restricted(spec: dict[str, Any]) -> None:
    """What the chart and the operator's Job promise, as runc received it."""
    process = spec["process"]
    assert process["user"]["uid"] == GATEWAY_UID and process["user"]["gid"] == GATEWAY_UID
    assert spec["root"].get("readonly") is True
    assert process.get("noNewPrivileges") is True
    assert not any(process.get("capabilities", {}).get(k) for k in
                   ("bounding", "effective", "permitted", "inheritable", "ambient"))
    assert spec["linux"].get("seccomp", {}).get("defaultAction") == "SCMP_ACT_ERRNO"


def test_the_operator_pod_runs_on_the_node_as_the_chart_says(on_node: OnNode) -> None:
    d = on_node
    pod = _running(d, "app.kubernetes.io/component=operator")
    assert pod["spec"]["nodeName"] == d.node.node_name  # placed by kube-scheduler
    assert not pod["spec"].get("hostNetwork")
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(
        kubelet.POD_SUBNET)
    (status,) = pod["status"]["containerStatuses"]
    assert status["containerID"].startswith("containerd://")
    spec = d.oci_spec(status["containerID"])
    _assert_restricted(spec)
    assert spec["process"]["args"] == ["wingman", "operator"]


def test_a_released_gateway_job_runs_as_a_real_pod_and_the_restart_is_audited(
        on_node: OnNode) -> None:
    d = on_node
    _running(d, "app.kubernetes.io/component=operator")
    command = f"kubectl rollout restart deployment/web -n {d.apps}"
    body = approval_request("restart-web", requester=WORKER, environment="test",
                            commands=[command])
    d.as_worker("apply", "-f", "-", input=json.dumps(body))
    ar = d.wait_phase("ar", "restart-web", "AutoApproved")
    preview = ar["status"]["preview"]
    assert preview["phase"] == "Completed", (preview, d.logs())
    assert preview["commands"][0]["outcome"] == "Previewed", preview
    d.as_worker("apply", "-f", "-", input=json.dumps({
        "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
        "metadata": {"name": "restart-web-1"},
        "spec": {"approvalRef": {"name": "restart-web"}, "requester": WORKER,
                 "command": command}}))
    eg = d.wait_phase("eg", "restart-web-1", "Succeeded", "Failed", timeout=240)
    assert eg["status"]["phase"] == "Succeeded", (eg["status"], d.logs())
    assert "restarted" in eg["status"]["output"]
    web = get(d.cluster, "deployment", d.apps, "web")
    assert web is not None
    assert "kubectl.kubernetes.io/restartedAt" in web["spec"]["template"]["metadata"].get(
        "annotations", {})

    job_name = names.job_name("restart-web-1")
    wait_for("the gateway Job succeeded", lambda: (get(d.cluster, "job", d.ns, job_name) or {}
                                                   ).get("status", {}).get("succeeded") == 1,
             60, on_timeout=d.logs)
    job = get(d.cluster, "job", d.ns, job_name)
    assert job is not None
    (pod,) = d.pods_of(f"batch.kubernetes.io/job-name={job_name}")
    # the pod is the Job's template as the operator built it: no host network, a pod IP
    assert pod["spec"]["nodeName"] == d.node.node_name
    assert not pod["spec"].get("hostNetwork")
    (ctr,) = pod["spec"]["containers"]
    (built,) = job["spec"]["template"]["spec"]["containers"]
    # admission only adds the ServiceAccount token's mount
    assert {k: v for k, v in ctr.items() if k != "volumeMounts"} == {
        k: v for k, v in built.items() if k != "volumeMounts"}
    assert all(m in ctr["volumeMounts"] for m in built.get("volumeMounts", []))
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(
        kubelet.POD_SUBNET)
    # the phase the kubelet reported from the container's real exit
    assert pod["status"]["phase"] == "Succeeded"
    (status,) = pod["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 0
    assert status["containerID"].startswith("containerd://")
    assert status["imageID"].startswith("sha256:") or "@sha256:" in status["imageID"]
    spec = d.oci_spec(status["containerID"])
    _assert_restricted(spec)
    # the container's first process is the image's init, which forwards the kubelet's SIGTERM
    assert spec["process"]["args"] == ["/usr/bin/tini", "--", "wingman", "gateway"]
    # operator and gateway appended to one chain on the PersistentVolume
    assert_one_audited_flow(d.audit_dir / "audit.jsonl")


def test_helm_test_runs_verify_privileges_as_a_real_pod(on_node: OnNode) -> None:
    d = on_node
    _running(d, "app.kubernetes.io/component=operator")
    result = d.cluster.helm("test", "wingman", "-n", d.ns, "--logs", "--timeout", "4m",
                            check=False, timeout=300)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr, d.logs())
    pod = get(d.cluster, "pod", d.ns, "wingman-verify-privileges")
    assert pod is not None and pod["status"]["phase"] == "Succeeded"
    (status,) = pod["status"]["containerStatuses"]
    spec = d.oci_spec(status["containerID"])
    _assert_restricted(spec)
    assert spec["process"]["args"][:2] == ["wingman", "verify-privileges"]
    assert "wingman-gateway" in result.stdout and "wingman-verifier" in result.stdout

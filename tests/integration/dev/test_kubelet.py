"""The real node (wingman.dev.kubelet) on the local control plane: kubelet, kube-proxy,
kube-scheduler and containerd run pods for real, the Job controller sees their real phases,
and stopping the node leaves nothing behind.

The pods run the node's sandbox image (``/pause -v`` prints and exits 0), so these tests need
no image build; the container tier runs Wingman's own image on the node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wingman.dev import kubelet
from wingman.dev.cluster import LocalCluster

Node = tuple[LocalCluster, kubelet.RealNode]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    reason = kubelet.unavailable()
    if reason is not None:
        pytest.skip(f"a real node cannot run on this machine: {reason}")
    with kubelet.cluster_with_node(tmp_path_factory.mktemp("kubelet")) as started:
        yield started


def _job(name: str, command: list[str]) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name,
                                                                "namespace": "default"},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "automountServiceAccountToken": False,
                "containers": [{"name": "c", "image": kubelet.PAUSE_IMAGE,
                                "imagePullPolicy": "Never", "command": command}]}}}}


def _wait_job(cluster: LocalCluster, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = json.loads(cluster.kubectl("get", "job", name, "-o",
                                                         "json").stdout)
        done = [c["type"] for c in job.get("status", {}).get("conditions", [])
                if c["type"] in ("Complete", "Failed") and c["status"] == "True"]
        if done:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {name} did not finish: "
                         f"{cluster.kubectl('get', 'pods', '-o', 'wide').stdout}")


def _pod_of(cluster: LocalCluster, job: str) -> dict[str, Any]:
    (pod,) = json.loads(cluster.kubectl("get", "pods", "-l", f"batch.kubernetes.io/job-name={job}",
                                        "-o", "json").stdout)["items"]
    return dict(pod)


def test_the_job_controller_sees_the_real_exit_of_a_pod_the_kubelet_ran(node: Node) -> None:
    cluster, real = node
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_job("ok", ["/pause", "-v"])))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_job("bad", ["/no/such/binary"])))
    ok, bad = _wait_job(cluster, "ok"), _wait_job(cluster, "bad")
    assert ok["status"].get("succeeded") == 1
    assert bad["status"].get("failed") == 1
    pod = _pod_of(cluster, "ok")
    assert pod["spec"]["nodeName"] == real.node_name
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert "pause (wingman.dev.kubelet sandbox)" in cluster.kubectl(
        "logs", pod["metadata"]["name"]).stdout
    failed = _pod_of(cluster, "bad")
    assert failed["status"]["phase"] == "Failed"
    assert failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] != 0


def test_the_kubelet_acts_as_its_node_only(node: Node) -> None:
    """Node authorizer + NodeRestriction: the node's identity cannot read unrelated Secrets
    nor change another Node."""
    cluster, real = node
    cluster.kubectl("create", "secret", "generic", "unrelated", "--from-literal=k=v")
    as_node = {"user": f"system:node:{real.node_name}", "groups": ["system:nodes"]}
    denied = cluster.kubectl("get", "secret", "unrelated", check=False, **as_node)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    other = cluster.kubectl("label", "node", real.node_name, "x=y", check=False,
                            user="system:node:someone-else", groups=["system:nodes"])
    assert other.returncode != 0 and "forbidden" in other.stderr.lower()


def test_stopping_the_node_leaves_nothing_running_or_mounted(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    if kubelet.unavailable() is not None:
        pytest.skip(f"a real node cannot run on this machine: {kubelet.unavailable()}")
    work = tmp_path_factory.mktemp("kubelet-stop")
    with kubelet.cluster_with_node(work) as (cluster, real):
        sleeper = _job("sleeper", ["/pause"])
        sleeper["spec"]["template"]["spec"]["automountServiceAccountToken"] = True  # a volume
        cluster.kubectl("apply", "-f", "-", input=json.dumps(sleeper))
        deadline = time.monotonic() + 120
        while _pod_of(cluster, "sleeper")["status"].get("phase") != "Running":
            assert time.monotonic() < deadline, cluster.kubectl("get", "pods").stdout
            time.sleep(0.5)
        netns, socket = real.netns, str(real.socket).encode()
        pids = kubelet.RealNode._pids_with(socket)
        assert pids  # containerd and the pod's shim
        cgroups = kubelet._cgroup_dirs(real.cgroup)
        assert any(d.is_dir() for d in cgroups)
        run_dir = real.run_dir
        assert kubelet._mounts_under(run_dir)  # the pod's volumes, mounted by the kubelet
    assert not kubelet.RealNode._pids_with(socket)
    assert not kubelet.RealNode._pids_with(str(work).encode())
    assert not kubelet._mounts_under(work)
    assert not run_dir.exists()
    assert not Path("/run/netns", netns).exists()
    assert not any(d.exists() for d in cgroups)

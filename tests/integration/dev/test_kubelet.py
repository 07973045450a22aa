"""The real node (wingman.dev.kubelet) on the local control plane: kubelet, kube-proxy,
kube-scheduler and containerd run pods for real, the Job controller sees their real phases,
and stopping the node leaves nothing behind.

The pods run the node's sandbox image (``/pause -v`` prints and exits 0), so these tests need
no image build; the container tier runs Wingman's own image on the node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.chart import KubectlAs
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
    as_node: KubectlAs = {"user": f"system:node:{real.node_name}", "groups": ["system:nodes"]}
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
        pids = kubelet._pids_with(socket)
        assert pids  # containerd and the pod's shim
        cgroups = kubelet._cgroup_dirs(real.cgroup)
        assert any(d.is_dir() for d in cgroups)
        run_dir = real.run_dir
        assert kubelet._mounts_under(run_dir)  # the pod's volumes, mounted by the kubelet
    assert not kubelet._pids_with(socket)
    assert not kubelet._pids_with(str(work).encode())
    assert not kubelet._mounts_under(work)
    assert not run_dir.exists()
    assert not Path("/run/netns", netns).exists()
    assert not any(d.exists() for d in cgroups)


_OWNER = r"""
import json, sys, time
from pathlib import Path
from wingman.dev import kubelet
with kubelet.cluster_with_node(Path(sys.argv[1])) as (cluster, node):
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "left", "namespace": "default"},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "c", "image": kubelet.PAUSE_IMAGE, "imagePullPolicy": "Never",
                "command": ["/pause"]}]}}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(job))
    while "Running" not in cluster.kubectl("get", "pods", "-l", "job-name=left").stdout:
        time.sleep(0.5)
    print(json.dumps({"netns": node.netns, "run_dir": str(node.run_dir),
                      "cgroup": node.cgroup}), flush=True)
    time.sleep(600)
"""


def test_a_node_whose_owner_was_killed_is_removed_by_the_next_one(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGKILL leaves no chance to clean up: the node's components stop with their owner
    (parent-death signal), and the next node started on the machine removes the rest (its
    containers, mounts, network namespace and cgroups); live nodes are left alone."""
    if kubelet.unavailable() is not None:
        pytest.skip(f"a real node cannot run on this machine: {kubelet.unavailable()}")
    work = tmp_path_factory.mktemp("kubelet-killed")
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(work)], stdout=subprocess.PIPE,
                             text=True)
    try:
        line = owner.stdout.readline() if owner.stdout else ""
        assert line, "the node did not start"
        node = json.loads(line)
        with kubelet.RealNode() as live:  # a live node: the sweep must spare it
            os.kill(owner.pid, signal.SIGKILL)
            owner.wait(timeout=30)
            assert Path("/run/netns", node["netns"]).exists()
            removed = kubelet.sweep_stale_nodes()
            assert node["netns"] in removed and live.netns not in removed
            assert Path("/run/netns", live.netns).exists()
        assert not Path("/run/netns", node["netns"]).exists()
        assert not kubelet._pids_with(f"{node['run_dir']}/".encode())
        assert not kubelet._pids_with(f"{work}/node/".encode())
        assert not kubelet._mounts_under(Path(node["run_dir"]))
        assert not kubelet._mounts_under(work)
        assert not any(d.exists() for d in kubelet._cgroup_dirs(node["cgroup"]))
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        # the killed owner's control plane, should its parent-death signal not have stopped it
        for pid in kubelet._pids_with(f"{work}/cluster/".encode()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

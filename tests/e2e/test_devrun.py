"""README's first command (`make run` → `wingman dev run`) on a machine with no cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.operator import wait_for
from support.ports import listening_addresses
from support.processes import kill_if_running


@pytest.mark.parametrize("node", ["real", "harness"])
def test_dev_run_starts_a_control_plane_and_the_demo_executes(tmp_path: Path,
                                                              node: str) -> None:
    """The node harness with WINGMAN_DEV_NODE=harness, or where the real node cannot run (said
    so); where it can, the real node's run is the next-but-one test."""
    from wingman.dev.kubelet import unavailable
    from wingman.dev.tools import cache_dir

    if node == "real" and unavailable() is None:
        pytest.skip("the real node runs here: test_dev_run_on_the_real_node_... covers it")

    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["WINGMAN_CACHE"] = str(cache_dir())  # the provisioned tools, wherever HOME points
    env["HOME"] = str(tmp_path)  # no ~/.kube/config: the local control plane is used
    env["TMPDIR"] = str(tmp_path)  # every file and process of the run lives under tmp_path
    env["WINGMAN_DEV_NODE"] = node
    proc = subprocess.run([sys.executable, "-m", "wingman.cli", "dev", "run",
                           "--exit-after-demo"], env=env, capture_output=True, text=True,
                          timeout=1200, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "starting a local control plane" in out
    if node == "real":
        assert "the real node cannot run here" in out, out[-3000:]
    else:
        assert "node harness running" in out and "real node" not in out, out[-3000:]
    assert "approvalrequest/demo-restart: AutoApproved" in out
    assert "grant finished: Succeeded exit=0" in out
    assert "deployment/web restartedAt: 20" in out
    assert "OK: " in out, "the audit trail verifies"
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True,
                               check=False)
    assert leftovers.stdout.strip() == "", "no stray processes"
    assert list(tmp_path.glob("wingman-dev-*")) == [], "its working directory is removed"


def test_dev_run_uses_a_configured_cluster_instead(cluster: Any, crds: Path,
                                                   tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    env["TMPDIR"] = str(tmp_path)  # where its working directory is made (and removed)
    try:
        proc = subprocess.run([sys.executable, "-m", "wingman.cli", "dev", "run",
                               "--exit-after-demo"], env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert f"using the cluster configured in {cluster.kubeconfig}" in out
        assert "starting a local control plane" not in out
        releases = cluster.helm("list", "-n", "wingman-test", "-o", "json").stdout
        assert '"name":"wingman"' in releases.replace(" ", "")
        # the operator ran against this cluster: it generated the signing key there
        secret = cluster.kubectl("get", "secret", "wingman-signing-key", "-n", "wingman-test",
                                 check=False)
        assert secret.returncode == 0, secret.stderr + out[-3000:]
        assert list(tmp_path.glob("wingman-dev-*")) == [], "its working directory is removed"
    finally:
        cluster.helm("uninstall", "wingman", "-n", "wingman-test", "--wait=false", check=False)
        for ns in ("wingman-test", "apps"):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_dev_run_stops_everything_it_started_on_sigterm_and_sighup(tmp_path: Path,
                                                                  sig: int) -> None:
    from wingman.dev.tools import cache_dir

    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update({"WINGMAN_CACHE": str(cache_dir()), "HOME": str(tmp_path),
                "TMPDIR": str(tmp_path), "WINGMAN_DEV_NODE": "harness"})
    log = (tmp_path / "dev-run.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "wingman.cli", "dev", "run", "--no-demo"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while "operator running" not in (tmp_path / "dev-run.log").read_text():
            assert proc.poll() is None, (tmp_path / "dev-run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "wingman dev run did not start in time"
            time.sleep(1)
        started = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True,
                                 text=True, check=False).stdout.split()
        assert len(started) >= 3, "etcd, kube-apiserver and kube-controller-manager run"
        text = (tmp_path / "dev-run.log").read_text()
        operator_pid = int(text.split("operator running (pid ", 1)[1].split(")", 1)[0])
        assert Path(f"/proc/{operator_pid}").exists()
        # its health and metrics ports on this machine only, not every network it is on
        bound = wait_for("the operator's two ports", lambda: (
            a if len(a := listening_addresses(operator_pid)) >= 2 else None), 60)
        assert {address for address, _ in bound} == {"127.0.0.1"}, bound
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 0
    finally:
        kill_if_running(proc)
        log.close()
    out = (tmp_path / "dev-run.log").read_text()
    assert f"{signal.Signals(sig).name}: stopped everything this command started" in out, out
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True,
                               check=False)
    assert leftovers.stdout.strip() == "", "no stray processes"
    assert not Path(f"/proc/{operator_pid}").exists(), "the operator was stopped too"


def test_dev_run_on_the_real_node_shows_the_demo_then_sigterm_removes_the_node(
        tmp_path: Path) -> None:
    """`make run` as a newcomer sees it: the image built, the real node joined, the demo
    executed by a gateway pod; SIGTERM then stops the pods, the node (its network namespace,
    mounts, processes) and the control plane."""
    from wingman.dev.kubelet import unavailable
    from wingman.dev.tools import cache_dir

    if unavailable() is not None:
        pytest.skip(f"a real node cannot run on this machine: {unavailable()} (the fallback "
                    "to the node harness is tested above)")
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "WINGMAN_DEV_NODE")}
    env.update({"WINGMAN_CACHE": str(cache_dir()), "HOME": str(tmp_path),
                "TMPDIR": str(tmp_path)})
    log_path = tmp_path / "dev-run.log"
    log = log_path.open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "wingman.cli", "dev", "run"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 900
        while "Ctrl-C (or SIGTERM, SIGHUP) stops everything" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "wingman dev run did not finish the demo"
            time.sleep(1)
        out = log_path.read_text()
        assert "starting a local control plane with a real node" in out
        assert "operator pod running on wingman-node" in out
        assert "approvalrequest/demo-restart: AutoApproved" in out
        assert "grant finished: Succeeded exit=0" in out
        assert "deployment/web restartedAt: 20" in out
        assert "OK: " in out, "the audit trail verifies"
        netns = out.split("in network namespace ", 1)[1].split(";", 1)[0]
        node_dir = Path(out.split("; logs in ", 1)[1].split(")", 1)[0])
        assert Path("/run/netns", netns).exists() and node_dir.is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        kill_if_running(proc)
        log.close()
    out = log_path.read_text()
    assert "SIGTERM: stopped everything this command started" in out, out[-3000:]
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True,
                               check=False)
    assert leftovers.stdout.strip() == "", "no stray processes"
    assert not Path("/run/netns", netns).exists(), "the node's network namespace is gone"
    assert not node_dir.exists()
    with open("/proc/self/mountinfo") as mounts:
        assert str(tmp_path) not in mounts.read(), "nothing left mounted"

"""The local control plane is a real one: RBAC, TokenRequest, admission policies, controllers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wingman.dev.cluster import LocalCluster
from wingman.errors import ClusterError


def _eventually(fn, timeout: float = 60.0, interval: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def test_rbac_is_enforced_for_real_identities(cluster: LocalCluster, namespace: str) -> None:
    denied = cluster.kubectl("get", "pods", "-n", namespace, user="mallory", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    cluster.kubectl("create", "rolebinding", "view", "--clusterrole=view",
                    "--user=mallory", "-n", namespace)
    allowed = cluster.kubectl("get", "pods", "-n", namespace, user="mallory")
    assert allowed.returncode == 0


def test_groups_come_from_the_client_certificate(cluster: LocalCluster) -> None:
    out = cluster.kubectl("auth", "whoami", "-o", "json", user="bob",
                          groups=["wingman:approvers"]).stdout
    info = json.loads(out)["status"]["userInfo"]
    assert info["username"] == "bob"
    assert "wingman:approvers" in info["groups"]


def test_serviceaccount_tokens_authenticate(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "robot", "-n", namespace)
    token = cluster.sa_token(namespace, "robot", expiration_seconds=600)
    kubeconfig = cluster.token_kubeconfig(token)
    result = subprocess.run(
        [str(cluster.tool("kubectl")), "--kubeconfig", str(kubeconfig), "auth", "whoami",
         "-o", "json"], capture_output=True, text=True, check=True,
    )
    username = json.loads(result.stdout)["status"]["userInfo"]["username"]
    assert username == f"system:serviceaccount:{namespace}:robot"


def test_validating_admission_policies_are_enforced(cluster: LocalCluster, namespace: str) -> None:
    policy = f"""
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: deny-forbidden-{namespace}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE]
      resources: [configmaps]
  validations:
  - expression: "!has(object.data) || !('forbidden' in object.data)"
    message: configmaps may not carry a 'forbidden' key
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: deny-forbidden-{namespace}}}
spec:
  policyName: deny-forbidden-{namespace}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {namespace}}}
"""
    cluster.kubectl("apply", "-f", "-", input=policy)
    try:
        def rejected() -> bool:
            r = cluster.kubectl("create", "configmap", "c", "--from-literal=forbidden=1",
                                "-n", namespace, check=False)
            if r.returncode == 0:  # the policy is not active yet: undo and retry
                cluster.kubectl("delete", "configmap", "c", "-n", namespace)
                return False
            assert "may not carry a 'forbidden' key" in r.stderr
            return True

        _eventually(rejected)
        cluster.kubectl("create", "configmap", "ok", "--from-literal=fine=1", "-n", namespace)
    finally:
        cluster.kubectl("delete", "-f", "-", input=policy, check=False)


def test_job_controller_creates_pods_as_its_own_identity(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.kubectl("create", "job", "hello", "--image=busybox:1.36", "-n", namespace,
                    "--", "true")
    pods = _eventually(lambda: json.loads(cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", "job-name=hello", "-o", "json").stdout)["items"])
    owner = pods[0]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Job"
    # Garbage collection: deleting the Job removes its pods.
    cluster.kubectl("delete", "job", "hello", "-n", namespace, "--cascade=background")
    _eventually(lambda: not json.loads(cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", "job-name=hello", "-o", "json").stdout)["items"])


def test_the_control_plane_reports_the_pinned_release(cluster: LocalCluster) -> None:
    """Clients check the server's version (helm refuses a chart whose kubeVersion it does not
    meet): the binaries carry the pinned release's, as upstream's builds do."""
    from support.chart import kube_version

    versions = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == f"v{kube_version()}"
    assert versions["clientVersion"]["gitVersion"] == f"v{kube_version()}"


_OWNER = """
import json, sys, time
from pathlib import Path
from wingman.dev.cluster import LocalCluster
from wingman.errors import ClusterError
cluster = LocalCluster.start(Path(sys.argv[1]))
print(json.dumps({name: cluster.pid(name) for name in
                  ("etcd", "kube-apiserver", "kube-controller-manager")}), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has stopped; only its parent (init here) may reap it


def test_the_control_plane_stops_when_its_owner_is_killed(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A test run, bench or ``wingman dev run`` killed with SIGKILL gets no chance to stop what
    it started: etcd, kube-apiserver and kube-controller-manager stop with it (parent-death
    signal) instead of running on and holding their ports and data."""
    work = tmp_path_factory.mktemp("cluster-owner-killed")
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(work / "cluster")],
                             stdout=subprocess.PIPE, text=True)
    pids: dict[str, int] = {}
    try:
        line = owner.stdout.readline() if owner.stdout else ""
        assert line, "the control plane did not start"
        pids = json.loads(line)
        assert all(_alive(pid) for pid in pids.values())
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=30)
        _eventually(lambda: not any(_alive(pid) for pid in pids.values()), timeout=60)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_background_dev_cluster_stops_the_control_plane_on_each_signal(
        tmp_path_factory: pytest.TempPathFactory, sig: int) -> None:
    """``wingman dev cluster &`` in a script: started with SIGINT ignored, as a non-interactive
    shell starts background jobs; SIGINT (``kill -INT``), SIGTERM and SIGHUP each stop etcd,
    kube-apiserver and kube-controller-manager, and it says so."""
    work = tmp_path_factory.mktemp("dev-cluster-signal")
    out_path = work / "out"
    env = {**os.environ, "TMPDIR": str(work)}
    shell = subprocess.Popen(
        ["sh", "-c", '"$0" -m wingman.cli dev cluster > "$1" 2>&1 & pid=$!; echo "$pid"; '
                     'wait "$pid"; echo "exit $?" >> "$1"', sys.executable, str(out_path)],
        stdout=subprocess.PIPE, text=True, env=env)
    started: list[int] = []
    owner = 0
    try:
        assert shell.stdout is not None
        owner = int(shell.stdout.readline())
        _eventually(lambda: "press Ctrl-C to stop" in (
            out_path.read_text() if out_path.exists() else ""), timeout=120)
        started = [int(pid) for pid in subprocess.run(
            ["pgrep", "-f", str(work)], capture_output=True, text=True,
            check=False).stdout.split()]
        assert len(started) >= 3, "etcd, kube-apiserver and kube-controller-manager run"
        os.kill(owner, sig)
        try:
            shell.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{signal.Signals(sig).name} left wingman dev cluster "
                                 f"running: {out_path.read_text()}") from None
        out = out_path.read_text()
        assert "stopped everything this command started" in out, out
        assert "exit 0" in out, out
        assert not any(_alive(pid) for pid in started), "the control plane is stopped"
    finally:
        if shell.poll() is None:
            for pid in [pid for pid in (*started, owner) if pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shell.wait()


def test_a_second_ctrl_c_does_not_cut_the_dev_cluster_s_clean_up_short(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Ctrl-C, then Ctrl-C again (and SIGTERM, SIGHUP) while ``wingman dev cluster`` stops
    the control plane: the further signals are ignored, it says so once, and every process
    and its data are gone when it exits."""
    work = tmp_path_factory.mktemp("dev-cluster-second-signal")
    out_path = work / "out"
    env = {**os.environ, "TMPDIR": str(work)}
    with out_path.open("w") as written:
        owner = subprocess.Popen([sys.executable, "-m", "wingman.cli", "dev", "cluster"],
                                 stdout=written, stderr=subprocess.STDOUT, env=env)
    started: list[int] = []
    try:
        _eventually(lambda: "press Ctrl-C to stop" in out_path.read_text(), timeout=120)
        started = [int(pid) for pid in subprocess.run(
            ["pgrep", "-f", str(work)], capture_output=True, text=True,
            check=False).stdout.split()]
        first = next(pid for pid in started  # the last started, so the first stopped
                     if b"kube-controller-manager" in Path(f"/proc/{pid}/cmdline").read_bytes())
        os.kill(owner.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while _alive(first):  # the clean-up has begun; kube-apiserver and etcd run still
            assert time.monotonic() < deadline, "the clean-up did not begin"
            time.sleep(0.01)
        assert any(_alive(pid) for pid in started), "the clean-up was over too soon to test"
        for again in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(owner.pid, again)
        assert owner.wait(timeout=60) == 0, out_path.read_text()
        out = out_path.read_text()
        assert out.count("clean-up in progress") == 1, out
        assert "Ctrl-C: stopped everything this command started" in out, out
        assert not any(_alive(pid) for pid in started), "the control plane is stopped"
        assert not [p for p in work.iterdir() if p.name.startswith("wingman-cluster")], \
            "its data is removed"
    finally:
        if owner.poll() is None:
            for pid in [*started, owner.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        owner.wait()


def _crd(plural: str, kind: str) -> dict[str, object]:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.clash.wingman.test"},
            "spec": {"group": "clash.wingman.test", "scope": "Namespaced",
                     "names": {"plural": plural, "kind": kind},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                         "openAPIV3Schema": {"type": "object",
                                             "x-kubernetes-preserve-unknown-fields": True}}}]}}


def test_applying_crds_waits_for_each_and_names_one_that_never_becomes_established(
        cluster: LocalCluster, tmp_path: Path) -> None:
    """``apply_crds`` returns once every CRD is Established and, when one never is (here its
    kind clashes with another CRD's of the group: NamesAccepted False), says which after its
    timeout, rather than failing at once as ``kubectl wait`` did on a CRD not yet given any
    condition."""
    first, clash = tmp_path / "first", tmp_path / "clash"
    first.mkdir()
    clash.mkdir()
    (first / "widgets.json").write_text(json.dumps(_crd("widgets", "Widget")))
    (clash / "gadgets.json").write_text(json.dumps(_crd("gadgets", "Widget")))
    try:
        cluster.apply_crds(first)
        started = time.monotonic()
        with pytest.raises(ClusterError) as refused:
            cluster.apply_crds(clash, timeout=3)
        assert 3 <= time.monotonic() - started < 30
        said = str(refused.value)
        assert "gadgets.clash.wingman.test" in said and "widgets." not in said, said
        assert "kubectl describe crd" in said
    finally:
        cluster.kubectl("delete", "crd", "gadgets.clash.wingman.test",
                        "widgets.clash.wingman.test", "--ignore-not-found", "--timeout=60s")


def test_the_control_plane_starts_when_the_api_server_s_port_is_taken_after_it_was_picked(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process (a test's server, another control plane) can bind the port picked for
    kube-apiserver before it does: the control plane starts on another port instead of failing
    with "address already in use". The picker hands out a port this test holds for the first
    try, as such a process would."""
    import socket

    from wingman.dev import cluster as cluster_module

    picked: list[int] = []
    pick = cluster_module._free_port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = int(taken.getsockname()[1])

        def picker(host: str = "127.0.0.1") -> int:
            picked.append(taken_port if not picked else pick(host))
            return picked[-1]

        monkeypatch.setattr(cluster_module, "_free_port", picker)
        with LocalCluster.start(tmp_path_factory.mktemp("cluster-port-taken")) as started:
            assert picked[0] == taken_port
            assert started.server == f"https://127.0.0.1:{picked[-1]}" != (
                f"https://127.0.0.1:{taken_port}")
            assert started.kubectl("get", "serviceaccount", "default", "-n",
                                   "default").returncode == 0
            assert "address already in use" in started.log_tail("kube-apiserver", 10_000)


def test_the_control_plane_s_etcd_and_controller_manager_listen_on_no_tcp_port(
        cluster: LocalCluster) -> None:
    """etcd serves kube-apiserver on a unix socket in the control plane's directory and
    kube-controller-manager serves nothing: no TCP port for them to pick, which another
    process could take before they bind it, and no etcd another local user can reach."""
    from support.ports import listening_ports

    for component in ("etcd", "kube-controller-manager"):
        pid = cluster.pid(component)
        assert pid is not None, f"{component} is not running"
        assert listening_ports(pid) == set(), component
    pid = cluster.pid("kube-apiserver")
    assert pid is not None
    assert listening_ports(pid) == {int(cluster.server.rsplit(":", 1)[1])}


def test_a_control_plane_in_a_relative_workdir_starts_and_its_components_restart(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The components run in the control plane's directory (etcd's unix sockets are named
    relative to it), so a directory given relative to the caller's must still name the same
    files for them, however long its absolute path (a socket's path is limited to 108 bytes).
    etcd killed leaves its socket files behind and is restarted on them; kube-apiserver comes
    back only on its own port (the kubeconfigs name it): when that port was taken while it was
    down, the restart says so, and it restarts once the port is free."""
    import socket
    import stat

    monkeypatch.chdir(tmp_path_factory.mktemp("relative"))
    relative = Path("d" * 60) / ("e" * 60)
    assert len(str(relative.absolute() / "etcd-client.sock:0")) > 108
    with LocalCluster.start(relative) as started:
        assert started.workdir == relative.absolute()
        started.kubectl("create", "configmap", "before", "-n", "default")
        for name in ("etcd-client.sock:0", "etcd-peer.sock:0"):
            assert stat.S_ISSOCK((started.workdir / name).stat().st_mode), name

        etcd = started.pid("etcd")
        with pytest.raises(ClusterError, match=r"etcd is running .*kill it first"):
            started.restart("etcd")  # not killed: a second etcd would take its sockets
        assert started.pid("etcd") == etcd
        started.kill("etcd")
        assert (started.workdir / "etcd-client.sock:0").exists()
        started.restart("etcd")
        deadline = time.monotonic() + 60
        while started.kubectl("create", "configmap", "after", "-n", "default",
                              check=False).returncode != 0:
            assert time.monotonic() < deadline, started.log_tail("etcd")
            time.sleep(0.5)

        port = int(started.server.rsplit(":", 1)[1])
        started.kill("kube-apiserver")
        with socket.socket() as taken:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taken.bind(("127.0.0.1", port))
            taken.listen()
            with pytest.raises(ClusterError) as refused:
                started.restart("kube-apiserver")
        message = str(refused.value)
        assert f"could not listen on its port {port} again" in message, message
        assert "took it while kube-apiserver was stopped" in message, message
        started.restart("kube-apiserver")
        assert started.server == f"https://127.0.0.1:{port}"
        names = started.kubectl("get", "configmap", "-n", "default", "-o",
                                "jsonpath={.items[*].metadata.name}").stdout.split()
        assert {"before", "after"} <= set(names), names

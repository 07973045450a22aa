"""The dev node harness against the real control plane: real Job controller, real tokens, RBAC.

Each test creates plain batch/v1 Jobs; the real kube-controller-manager makes their pods, the
harness binds and runs them as local processes, and the Job controller decides Complete/Failed
from the pod status the harness reports.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wingman.dev.cluster import LocalCluster
from wingman.dev.node import NODE_NAME, NodeHarness
from wingman.model import names

PROBE_IMAGE = "example.test/probe:1"

# Runs inside the "pod": reads its mounted files through paths the env names, then uses the
# ServiceAccount token + CA the harness provisioned to call the API server directly.
PROBE = r"""
import base64, json, os, ssl, sys, urllib.error, urllib.request
sa = os.environ["WINGMAN_SERVICEACCOUNT_DIR"]
ns = open(os.path.join(sa, "namespace")).read()
token = open(os.path.join(sa, "token")).read().strip()
ctx = ssl.create_default_context(cafile=os.path.join(sa, "ca.crt"))
base = "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"],
                          os.environ["KUBERNETES_SERVICE_PORT"])
def call(path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, None
payload = token.split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
cm_status, cm = call("/api/v1/namespaces/%s/configmaps/probe-config" % ns)
secrets_status, _ = call("/api/v1/namespaces/%s/secrets" % ns)
secret_file = os.environ["SECRET_FILE"]
with open(os.environ["AUDIT_FILE"], "w") as fh:
    fh.write("written by " + os.environ["POD_NAME"])
print(json.dumps({
    "cm_status": cm_status,
    "cm_greeting": (cm or {}).get("data", {}).get("greeting"),
    "secrets_status": secrets_status,
    "token_pod": claims["kubernetes.io"]["pod"]["name"],
    "token_sub": claims["sub"],
    "config_file": open(os.environ["CONFIG_FILE"]).read(),
    "secret_matches": open(secret_file).read() == os.environ["EXPECTED_SECRET"],
    "secret_mode": os.stat(secret_file).st_mode & 0o777,
    "greeting_env": os.environ["GREETING"],
    "job_uid": os.environ["JOB_UID"],
    "pod_name": os.environ["POD_NAME"],
    "argv": sys.argv[1:],
    "env_names": sorted(os.environ),
    "home": os.environ["HOME"],
}))
sys.exit(0 if cm_status == 200 and secrets_status == 403 else 1)
"""


def _apply(cluster: LocalCluster, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def _job(ns: str, name: str, container: dict[str, Any], *, volumes: list[dict[str, Any]]
         | None = None, pod_spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "serviceAccountName": "probe", "automountServiceAccountToken": True,
            "restartPolicy": "Never",
            "containers": [{"name": "probe", "image": PROBE_IMAGE, "command": ["probe"],
                            **container}],
            "volumes": volumes or [],
            **(pod_spec or {}),
        }}},
    }


def _poll(what: str, fetch: Callable[[], Any], done: Callable[[Any], bool],
          timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fetch()
        if last is not None and done(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s; last seen: "
                         f"{json.dumps(last)[:2000] if last is not None else None}")


def _get(cluster: LocalCluster, *args: str) -> Any:
    res = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(res.stdout) if res.returncode == 0 else None


def _job_condition(cluster: LocalCluster, ns: str, name: str) -> str:
    """Wait for the Job controller to finish the Job; its terminal condition type."""
    job = _poll(f"Job {name} finished", lambda: _get(cluster, "job", name, "-n", ns),
                lambda j: any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
                              for c in j.get("status", {}).get("conditions", [])))
    condition: str = next(c["type"] for c in job["status"]["conditions"]
                          if c["type"] in ("Complete", "Failed") and c["status"] == "True")
    return condition


def _job_pod(cluster: LocalCluster, ns: str, job: str,
             done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def fetch() -> Any:
        pods = _get(cluster, "pods", "-n", ns, "-l", f"job-name={job}")
        return pods["items"][0] if pods and pods["items"] else None

    pod: dict[str, Any] = _poll(f"pod of Job {job}", fetch, done)
    return pod


def _phase(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda pod: pod.get("status", {}).get("phase") in phases


@pytest.fixture
def probe_sa(cluster: LocalCluster, namespace: str) -> str:
    """ServiceAccount `probe` allowed to get ConfigMaps (and nothing else), plus its data."""
    _apply(
        cluster,
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "probe", "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "probe", "namespace": namespace},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "probe", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe"},
         "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": namespace}]},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "probe-config", "namespace": namespace},
         "data": {"greeting": "hello from the configmap"}},
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "probe-secret", "namespace": namespace},
         "stringData": {"password": "not-a-real-password"}},
    )
    return "probe"


def _harness(cluster: LocalCluster, namespace: str, tmp_path: Path, *,
             script: str = PROBE, **kwargs: Any) -> NodeHarness:
    return NodeHarness(
        cluster=cluster, namespaces=[namespace], workdir=tmp_path / "node",
        gateway_image="example.test/wingman:0",
        images={PROBE_IMAGE: [sys.executable, "-c", script]}, **kwargs)


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    path = tmp_path / "audit-pvc"
    path.mkdir()
    return path


@pytest.fixture
def harness(cluster: LocalCluster, namespace: str, tmp_path: Path, audit_dir: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[NodeHarness]:
    # Ambient credentials the harness must NOT pass on to pods.
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("WINGMAN_HARNESS_ONLY", "1")
    with _harness(cluster, namespace, tmp_path, volume_dirs={"audit": audit_dir}) as h:
        yield h


def test_job_pod_runs_with_its_volumes_env_and_a_real_bound_token(
    cluster: LocalCluster, namespace: str, probe_sa: str, harness: NodeHarness,
    audit_dir: Path,
) -> None:
    container = {
        "args": ["$(POD_NAME)", "/etc/probe/config/greeting", "/etc/probe/configx"],
        "env": [
            {"name": "CONFIG_FILE", "value": "/etc/probe/config/greeting"},
            {"name": "SECRET_FILE", "value": "/etc/probe/secret/password"},
            {"name": "AUDIT_FILE", "value": "/var/lib/probe/audit/out.txt"},
            {"name": "EXPECTED_SECRET", "valueFrom": {"secretKeyRef": {
                "name": "probe-secret", "key": "password"}}},
            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {
                "name": "probe-config", "key": "greeting"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "JOB_UID", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.labels['batch.kubernetes.io/controller-uid']"}}},
        ],
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/probe/config", "readOnly": True},
            {"name": "secret", "mountPath": "/etc/probe/secret", "readOnly": True},
            {"name": "audit", "mountPath": "/var/lib/probe/audit"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes = [
        {"name": "config", "configMap": {"name": "probe-config"}},
        {"name": "secret", "secret": {"secretName": "probe-secret", "defaultMode": 0o400}},
        {"name": "audit", "persistentVolumeClaim": {"claimName": "audit"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    _apply(cluster, _job(namespace, "probe-ok", container, volumes=volumes))

    assert _job_condition(cluster, namespace, "probe-ok") == "Complete"
    pod = _job_pod(cluster, namespace, "probe-ok", _phase("Succeeded"))
    harness.wait_idle(10)
    [run] = harness.runs
    assert (run.name, run.namespace, run.exit_code) == (pod["metadata"]["name"], namespace, 0)
    assert run.argv[:2] == (sys.executable, "-c")
    out = json.loads(run.stdout.read_text())

    # Real authentication and RBAC: the token works for what the Role grants, nothing else.
    assert out["cm_status"] == 200, run.stderr.read_text()
    assert out["cm_greeting"] == "hello from the configmap"
    assert out["secrets_status"] == 403
    assert out["token_sub"] == f"system:serviceaccount:{namespace}:probe"
    assert out["token_pod"] == pod["metadata"]["name"]  # bound to this pod

    # Volumes materialized, found through rewritten paths; env resolved from the API.
    assert out["config_file"] == "hello from the configmap"
    assert out["secret_matches"] is True
    assert out["secret_mode"] == 0o400
    assert out["greeting_env"] == "hello from the configmap"
    assert out["pod_name"] == pod["metadata"]["name"]
    assert out["job_uid"] == pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"]
    assert out["argv"][0] == pod["metadata"]["name"]
    assert out["argv"][1].startswith(str(harness.workdir)) and out["argv"][1].endswith(
        "/greeting")
    assert out["argv"][2] == "/etc/probe/configx"  # only whole path components match
    assert (audit_dir / "out.txt").read_text() == f"written by {pod['metadata']['name']}"
    assert out["home"].startswith(str(harness.workdir))
    # Only the pod's env: no KUBECONFIG or other harness variables leak in.
    assert "KUBECONFIG" not in out["env_names"]
    assert "WINGMAN_HARNESS_ONLY" not in out["env_names"]

    # Kubelet-like status: bound to the node, terminated container with timestamps.
    assert pod["spec"]["nodeName"] == NODE_NAME
    [cs] = pod["status"]["containerStatuses"]
    term = cs["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    assert term["startedAt"] and term["finishedAt"]

    # Secret data and the token are gone from disk once the process ended.
    pod_dir = run.stdout.parent
    assert not (pod_dir / "serviceaccount").exists()
    assert not (pod_dir / "volumes").exists()

    node = _get(cluster, "node", NODE_NAME)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


FAIL_WITH_MESSAGE = """
import os, sys
with open(os.environ["TERM_LOG"], "w") as fh:
    fh.write("why: " + "x" * 5000)
print("failing")
sys.exit(3)
"""


def test_failing_process_fails_the_job_with_its_exit_code_and_termination_message(
    cluster: LocalCluster, namespace: str, probe_sa: str, tmp_path: Path
) -> None:
    with _harness(cluster, namespace, tmp_path, script=FAIL_WITH_MESSAGE) as harness:
        # the default terminationMessagePath, named through the env as an image would
        _apply(cluster, _job(namespace, "probe-fail", {"env": [
            {"name": "TERM_LOG", "value": "/dev/termination-log"}]}))
        assert _job_condition(cluster, namespace, "probe-fail") == "Failed"
        pod = _job_pod(cluster, namespace, "probe-fail", _phase("Failed"))
        harness.wait_idle(10)
        [run] = harness.runs
        assert run.exit_code == 3
        assert run.stdout.read_text() == "failing\n"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    assert term["message"] == ("why: " + "x" * 5000)[:4096], "the kubelet's 4096-byte cut"


def test_unknown_image_or_volume_is_refused_and_never_run(
    cluster: LocalCluster, namespace: str, probe_sa: str, harness: NodeHarness
) -> None:
    _apply(cluster,
           _job(namespace, "unknown-image", {"image": "example.test/unknown:9"}),
           _job(namespace, "unknown-pvc", {"volumeMounts": [
               {"name": "data", "mountPath": "/data"}]},
               volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "nope"}}]))
    assert _job_condition(cluster, namespace, "unknown-image") == "Failed"
    pod = _job_pod(cluster, namespace, "unknown-image", _phase("Failed"))
    assert pod["status"]["reason"] == "ImageNotRunnable"
    assert "example.test/unknown:9" in pod["status"]["message"]
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == (
        "ImageNotRunnable")

    assert _job_condition(cluster, namespace, "unknown-pvc") == "Failed"
    pod = _job_pod(cluster, namespace, "unknown-pvc", _phase("Failed"))
    assert pod["status"]["reason"] == "VolumeNotAvailable"
    assert "'nope'" in pod["status"]["message"]
    harness.wait_idle(10)
    assert harness.runs == []


def test_deleted_pod_is_killed_and_deadline_is_enforced(
    cluster: LocalCluster, namespace: str, probe_sa: str, tmp_path: Path
) -> None:
    with _harness(cluster, namespace, tmp_path, script="import time; time.sleep(60)",
                  kill_grace_seconds=2) as harness:
        _apply(cluster, _job(namespace, "sleeper", {}),
               _job(namespace, "deadline", {}, pod_spec={"activeDeadlineSeconds": 1}))
        pod = _job_pod(cluster, namespace, "sleeper", _phase("Running"))
        assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace,
                        "--wait=false")
        _poll("deleted pod gone", lambda: _get(cluster, "pods", "-n", namespace, "-l",
                                               "job-name=sleeper"),
              lambda pods: pods["items"] == [] or all(
                  p["metadata"]["uid"] != pod["metadata"]["uid"] for p in pods["items"]),
              timeout=30)

        assert _job_condition(cluster, namespace, "deadline") == "Failed"
        dl = _job_pod(cluster, namespace, "deadline", _phase("Failed"))
        assert dl["status"]["reason"] == "DeadlineExceeded"
        harness.wait_idle(15)
        by_name = {r.name: r for r in harness.runs}
        killed = by_name[pod["metadata"]["name"]]
        assert (killed.reason, killed.exit_code) == ("Deleted", 143)
        assert (by_name[dl["metadata"]["name"]].reason) == "DeadlineExceeded"


GATEWAY_PROBE = r"""
import base64, json, os, sys
env = os.environ
token_file = env["WINGMAN_TOKEN_FILE"]
sa = env["WINGMAN_SERVICEACCOUNT_DIR"]
jwt = open(os.path.join(sa, "token")).read().strip().split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(jwt + "=" * (-len(jwt) % 4)))
audit = env["WINGMAN_AUDIT_TARGET"]
with open(audit, "a") as fh:
    fh.write("{}\n")
print(json.dumps({
    "argv": sys.argv[1:],
    "token": open(token_file).read(),
    "token_mode": os.stat(token_file).st_mode & 0o777,
    "keys": sorted(os.listdir(env["WINGMAN_PUBLIC_KEYS_DIR"])),
    "policy": open(env["WINGMAN_POLICY_FILE"]).read(),
    "grant": env["WINGMAN_GRANT_NAME"],
    "job_uid": env["WINGMAN_JOB_UID"],
    "pod": env["WINGMAN_POD_NAME"],
    "sa_files": sorted(f for f in os.listdir(sa) if not f.startswith("..")),
    "sa_namespace": open(os.path.join(sa, "namespace")).read(),
    "sa_sub": claims["sub"],
    "sa_pod": claims["kubernetes.io"]["pod"]["name"],
    "sa_life": claims["exp"] - claims["iat"],
    "api": [env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]],
}))
"""


def test_operator_gateway_job_template_runs_with_its_contract_env(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    from wingman.operator import manifests
    from wingman.settings import OperatorSettings

    image = "example.test/wingman:contract"
    settings = OperatorSettings.from_env({
        "WINGMAN_NAMESPACE": namespace, "WINGMAN_GATEWAY_IMAGE": image,
        "WINGMAN_AUDIT_VOLUME_CLAIM": "wingman-audit"})
    grant = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
             "metadata": {"name": "g1", "namespace": namespace, "uid": "0000-grant"}}
    job = manifests.gateway_job(grant, settings, ttl_seconds=60)
    del job["metadata"]["ownerReferences"]  # no real grant here: keep the GC away
    secret = {"apiVersion": "v1", "kind": "Secret", "type": names.SECRET_TYPE,
              "metadata": {"name": manifests.job_token_secret(job), "namespace": namespace},
              "stringData": {"token": "not.a.jwt"}}
    _apply(cluster,
           {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "wingman-gateway", "namespace": namespace}},
           {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "wingman-public-keys", "namespace": namespace},
            "data": {"k1.pem": "PEM-1", "k2.pem": "PEM-2"}},
           {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "wingman-policy", "namespace": namespace},
            "data": {"policy.yaml": "environments: {}\n", "other": "x"}},
           job)
    audit_dir = tmp_path / "audit"
    with NodeHarness(cluster=cluster, namespaces=[namespace], workdir=tmp_path / "node",
                     gateway_image=image, volume_dirs={"wingman-audit": audit_dir},
                     images={image: [sys.executable, "-c", GATEWAY_PROBE]}) as harness:
        name = names.job_name("g1")
        # the Job is runnable at once, as the operator creates it; its pod waits for the token
        # Secret, which the operator stores last: nothing runs before it exists
        waiting = _job_pod(cluster, namespace, name, lambda pod: True)
        time.sleep(1.5)
        assert harness.runs == []
        assert _get(cluster, "pod", waiting["metadata"]["name"], "-n", namespace)["status"].get(
            "phase") == "Pending"
        _apply(cluster, secret)
        assert _job_condition(cluster, namespace, name) == "Complete"
        pod = _job_pod(cluster, namespace, name, _phase("Succeeded"))
        harness.wait_idle(10)
        [run] = harness.runs
        out = json.loads(run.stdout.read_text())
    assert out["argv"] == ["gateway"]
    assert (out["token"], out["token_mode"]) == ("not.a.jwt", 0o400)
    assert out["keys"] == ["k1.pem", "k2.pem"]
    assert out["policy"] == "environments: {}\n"
    assert out["grant"] == "g1"
    assert out["pod"] == pod["metadata"]["name"]
    assert out["job_uid"] == pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"]
    # its own ServiceAccount volume (no automounted token), found where in-cluster clients
    # look: a token of wingman-gateway bound to the pod that lives 10 minutes
    assert out["sa_files"] == ["ca.crt", "namespace", "token"]
    assert out["sa_namespace"] == namespace
    assert out["sa_sub"] == f"system:serviceaccount:{namespace}:wingman-gateway"
    assert out["sa_pod"] == pod["metadata"]["name"]
    assert out["sa_life"] == 600
    assert out["api"][0] == "127.0.0.1"
    assert cluster.server.endswith(f":{out['api'][1]}")
    assert (audit_dir / "audit.jsonl").read_text() == "{}\n"

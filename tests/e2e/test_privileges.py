"""``wingman verify-privileges`` on a real cluster with the chart installed by ``helm install``.

The command runs in-process, once with the admin kubeconfig and once exactly as the chart's
``helm test`` pod runs it: as ServiceAccount ``wingman-verifier`` (a real token from
TokenRequest) with the pod's own arguments and environment. Then the cluster is broken on
purpose, as an administrator could: the workers' group gets ClusterRole ``edit`` in the target
namespace, a pod mounting the Docker socket appears in the release namespace, an admission
policy's binding is deleted. Each must be reported, with exit status 1.
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.chart import (
    DEFAULT_GATEWAY_IMAGE,
    Release,
    can,
    dump,
    find,
    pod_manifest,
    render,
    worker_groups,
)
from support.chart import (
    installed as chart_installed,
)
from wingman.dev.cluster import LocalCluster
from wingman.verifier import privileges
from wingman.verifier.privileges import verify_privileges_main
from wingman.verifier.rights import policy_content_digest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def release(cluster: LocalCluster, crds: Path) -> Iterator[Release]:
    s = uuid.uuid4().hex[:8]
    # chat on, with people mapped: its impersonation rules must still be as designed
    chat = {"chat.enabled": True,
            "chat.webhook": {"enabled": True, "url": "https://hooks.example.com/wingman"},
            "chat.people": [{"kubernetesUser": "bob", "groups": ["wingman:approvers"],
                             "slackUserId": "U0BOB"}]}
    with chart_installed(cluster, "test", namespace=f"priv-{s}",
                         target_namespace=f"priv-apps-{s}", values=chat) as rel:
        yield rel


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = verify_privileges_main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _admin(cluster: LocalCluster, release: Release, *extra: str) -> tuple[int, str, str]:
    return _run("--namespace", release.namespace, "--release", release.name,
                "--kubeconfig", str(cluster.kubeconfig),
                "--gateway-image", DEFAULT_GATEWAY_IMAGE, *extra)


def _rows(text: str) -> list[dict[str, str]]:
    """The access table, parsed by its header's column offsets."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("IDENTITY "))
    header = lines[start]
    names = header.split()
    offsets = [header.index(n) for n in names] + [10_000]
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append({n: line[offsets[i]:offsets[i + 1]].strip() for i, n in enumerate(names)})
    return rows


def _executors(rows: list[dict[str, str]], namespace: str) -> set[str]:
    execution = {"create pods", "create pods/exec", "create pods/attach",
                 "patch pods/ephemeralcontainers", "create pods/binding", "create bindings",
                 "create jobs", "create cronjobs",
                 "create deployments", "patch deployments", "update deployments/scale"}
    # a right held for dry runs only (the preview, confined by admission) executes nothing
    return {r["IDENTITY"] for r in rows if r["NAMESPACE"] == namespace
            and r["RIGHT"] in execution and r["ALLOWED"] == "yes"
            and r["EXPECTED"] != "dry runs only"}


def test_as_admin_everything_is_as_designed(cluster: LocalCluster, release: Release) -> None:
    code, out, err = _admin(cluster, release)
    assert code == 0, out + err
    rows = _rows(out)
    executor = f"executor sa/{release.namespace}/wingman-executor"
    # The target namespace was discovered from the gateway's Role; the executor (what the
    # gateway's commands run as) is the only identity that can change workloads there, and it
    # really can.
    assert _executors(rows, release.target_namespace) == {executor}
    patch = [r for r in rows if r["IDENTITY"] == executor and r["RIGHT"] == "patch deployments"
             and r["NAMESPACE"] == release.target_namespace]
    assert patch == [{"IDENTITY": executor, "NAMESPACE": release.target_namespace,
                      "RIGHT": "patch deployments", "ALLOWED": "yes",
                      "EXPECTED": "by design", "RESULT": "ok"}]
    # The workers and approvers came from the release's RoleBindings.
    identities = {r["IDENTITY"] for r in rows}
    for group in worker_groups("test"):
        assert f"worker group/{group}" in identities
    assert {r["RESULT"] for r in rows} == {"ok"}
    # The chat identity, which impersonates bob, can neither decide itself nor impersonate
    # anyone powerful; approvers (and only they, of the people) can decide.
    chat = f"chat sa/{release.namespace}/wingman-chat"
    held = {(r["IDENTITY"], r["RIGHT"]) for r in rows if r["ALLOWED"] == "yes"}
    for right in ("patch approvalrequests", "approve environments test",
                  "create executiongrants", "impersonate users", "impersonate groups",
                  "impersonate users system:admin", "impersonate groups system:masters",
                  f"impersonate users system:serviceaccount:{release.namespace}:"
                  "wingman-gateway"):
        assert (chat, right) not in held
        assert any(r["IDENTITY"] == chat and r["RIGHT"] == right for r in rows), right
    assert ("approver group/wingman:approvers", "approve environments test") in held
    assert ("approver group/wingman:approvers", "patch approvalrequests") in held
    assert ("worker group/wingman:workers", "patch approvalrequests") not in held
    assert out.splitlines()[-1].startswith("OK: ")
    assert f"{release.target_namespace}: {executor}" in out.splitlines()[-1]


def test_json_output(cluster: LocalCluster, release: Release) -> None:
    code, out, _ = _admin(cluster, release, "--output", "json")
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True and data["violations"] == []
    assert data["targetNamespaces"] == [release.target_namespace]
    assert {i["role"] for i in data["identities"]} >= {
        "worker", "approver", "operator", "gateway", "executor", "verifier", "any-user",
        "anonymous"}


def _helm_test_pod(release: Release) -> dict[str, Any]:
    """The chart's ``helm test`` pod, rendered with the values the release was installed with."""
    objs = render(release.env, {"gateway.targets": [{"namespace": release.target_namespace}],
                                "audit.file.persistence.enabled": False},
                  namespace=release.namespace, release=release.name)
    (pod,) = find(objs, "Pod", "wingman-verify-privileges")
    return pod


def test_as_the_verifier_exactly_like_helm_test(
    cluster: LocalCluster, release: Release, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    pod = _helm_test_pod(release)
    assert pod["spec"]["serviceAccountName"] == "wingman-verifier"
    (container,) = pod["spec"]["containers"]
    for env in container["env"]:
        monkeypatch.setenv(env["name"], env["value"])
    args = container["args"]
    assert args[:2] == ["wingman", "verify-privileges"]

    token = cluster.sa_token(release.namespace, "wingman-verifier", expiration_seconds=600)
    kubeconfig = cluster.token_kubeconfig(token, name="wingman-verifier")
    # in a pod, the verifier reads its own mounted token's audiences (the API server's)
    mounted = tmp_path / "token"
    mounted.write_text(token)
    monkeypatch.setattr(privileges, "SERVICE_ACCOUNT_TOKEN", mounted)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "in-a-pod")
    try:
        code, out, err = _run(*args[2:], "--kubeconfig", str(kubeconfig))
        assert code == 0, out + err
        rows = _rows(out)
        assert _executors(rows, release.target_namespace) == {
            f"executor sa/{release.namespace}/wingman-executor"}
        assert "(environment test)" in out

        # Least privilege: the verifier cannot list Roles cluster-wide, so without the
        # targets the chart passes it stops with a clear message instead of guessing.
        code, out, err = _run("--namespace", release.namespace, "--kubeconfig",
                              str(kubeconfig))
        assert code == 2 and out == ""
        assert "(403)" in err and "--target-namespace" in err

        # an API server whose tokens carry audiences the chart value does not list: every
        # executor token would be refused, and helm test says so with the value to set
        other = cluster.sa_token(release.namespace, "wingman-verifier", expiration_seconds=600,
                                 audiences=["https://elsewhere.example"])
        mounted.write_text(other)
        code, out, err = _run(*args[2:], "--kubeconfig", str(kubeconfig))
        assert code == 1, out + err
        assert "ExecutorTokenUnavailable" in out
        assert 'admission.executorTokenAudiences to ["https://elsewhere.example"]' in out
        assert other not in out + err
    finally:
        kubeconfig.unlink(missing_ok=True)
    assert token not in err


def _wait(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_worker_with_edit_in_the_target_is_reported(
    cluster: LocalCluster, release: Release,
) -> None:
    group = worker_groups("test")[0]
    name = f"too-much-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "rolebinding", name, "-n", release.target_namespace,
                    "--clusterrole=edit", f"--group={group}")
    try:
        _wait(lambda: can(cluster, user="", groups=[group, "system:authenticated"],
                          verb="patch", resource="deployments", group="apps",
                          namespace=release.target_namespace), "the RoleBinding to take effect")
        code, out, err = _admin(cluster, release)
        assert code == 1, out + err
        worker = f"worker group/{group}"
        bad = {(r["IDENTITY"], r["NAMESPACE"], r["RIGHT"]) for r in _rows(out)
               if r["RESULT"] == "VIOLATION"}
        assert (worker, release.target_namespace, "patch deployments") in bad
        assert (worker, release.target_namespace, "create pods/exec") in bad
        assert (worker, release.target_namespace, "get secrets") in bad
        assert {who for who, _, _ in bad} == {worker}
        assert {ns for _, ns, _ in bad} == {release.target_namespace}
        assert re.search(rf"^  - {re.escape(worker)} may patch deployments in namespace "
                         rf"{re.escape(release.target_namespace)} \(execution right; "
                         r"by design: executor\)$", out, re.MULTILINE)
        assert out.splitlines()[-1].startswith("FAIL: ")
    finally:
        cluster.kubectl("delete", "rolebinding", name, "-n", release.target_namespace)
    _wait(lambda: _admin(cluster, release)[0] == 0, "the report to be clean again")


def test_the_preview_may_write_only_while_admission_confines_it_to_dry_runs(
    cluster: LocalCluster, release: Release,
) -> None:
    preview = f"preview sa/{release.namespace}/wingman-preview"
    code, out, err = _admin(cluster, release)
    assert code == 0, out + err
    writes = [r for r in _rows(out) if r["IDENTITY"] == preview and r["ALLOWED"] == "yes"]
    assert {(r["NAMESPACE"], r["RIGHT"]) for r in writes} >= {
        (release.target_namespace, "patch deployments"),
        (release.target_namespace, "update deployments/scale")}
    assert {r["EXPECTED"] for r in writes} == {"dry runs only"}
    policy = f"wingman-{release.namespace}-preview-dry-run"
    assert f"ValidatingAdmissionPolicy {policy} refuses it every request" in out
    # an administrator turns the binding into a warning: the write rights are now violations
    cluster.kubectl("patch", "validatingadmissionpolicybinding", policy, "--type=merge",
                    "-p", json.dumps({"spec": {"validationActions": ["Warn"]}}))
    try:
        code, out, err = _admin(cluster, release)
        assert code == 1, out + err
        bad = {(r["IDENTITY"], r["NAMESPACE"], r["RIGHT"]) for r in _rows(out)
               if r["RESULT"] == "VIOLATION"}
        assert (preview, release.target_namespace, "patch deployments") in bad
        assert {who for who, _, _ in bad} == {preview}
        assert "wingman-preview is not confined to dry runs" in out
        assert "no binding denies" in out
    finally:
        cluster.kubectl("patch", "validatingadmissionpolicybinding", policy, "--type=merge",
                        "-p", json.dumps({"spec": {"validationActions": ["Deny"]}}))


def test_a_deleted_admission_binding_is_reported_by_name(
    cluster: LocalCluster, release: Release,
) -> None:
    code, out, err = _admin(cluster, release)
    assert code == 0, out + err
    assert "of the release is missing" not in out
    name = f"wingman-{release.namespace}-executor-workloads"
    saved = json.loads(cluster.kubectl("get", "validatingadmissionpolicybinding", name,
                                       "-o", "json").stdout)
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        saved["metadata"].pop(key, None)
    cluster.kubectl("delete", "validatingadmissionpolicybinding", name)
    try:
        code, out, err = _admin(cluster, release)
        assert code == 1, out + err
        assert {r["RESULT"] for r in _rows(out)} == {"ok"}  # access is still as designed
        assert (f"  - ValidatingAdmissionPolicyBinding {name} of the release is missing: "
                f"policy {name} is not enforced; restore it with `helm upgrade` of the "
                "release") in out, out
        assert "1 configuration" in out.splitlines()[-1]
    finally:
        cluster.kubectl("create", "-f", "-", input=json.dumps(saved))
    assert _admin(cluster, release)[0] == 0


def test_an_admission_policy_edited_to_fail_open_or_match_nothing_is_reported(
    cluster: LocalCluster, release: Release,
) -> None:
    """Present and bound with Deny is not enough: a policy that admits what it cannot evaluate,
    or a binding narrowed to nothing, refuses nothing either."""
    name = f"wingman-{release.namespace}-executor-workloads"
    cluster.kubectl("patch", "validatingadmissionpolicy", name, "--type=merge",
                    "-p", json.dumps({"spec": {"failurePolicy": "Ignore"}}))
    cluster.kubectl("patch", "validatingadmissionpolicybinding", name, "--type=merge",
                    "-p", json.dumps({"spec": {"matchResources": {
                        "objectSelector": {"matchLabels": {"nothing": "has-this"}}}}}))
    try:
        code, out, err = _admin(cluster, release)
        assert code == 1, out + err
        text = " ".join(out.split())
        assert (f"ValidatingAdmissionPolicy {name} has failurePolicy Ignore, not Fail"
                in text), out
        assert (f"ValidatingAdmissionPolicyBinding {name} narrows what it matches "
                "(matchResources.objectSelector)") in text, out
    finally:
        cluster.kubectl("patch", "validatingadmissionpolicy", name, "--type=merge",
                        "-p", json.dumps({"spec": {"failurePolicy": "Fail"}}))
        cluster.kubectl("patch", "validatingadmissionpolicybinding", name, "--type=json",
                        "-p", json.dumps([{"op": "replace",
                                           "path": "/spec/matchResources/objectSelector",
                                           "value": {}}]))
    assert _admin(cluster, release)[0] == 0


def test_an_admission_policy_whose_content_was_edited_is_reported_by_helm_test(
    cluster: LocalCluster, release: Release, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Present, failing closed and bound with Deny, a policy may still refuse nothing: its
    expression edited to "true", a validation removed, a match condition that never holds.
    helm test compares each policy's content with the digest the chart put on it."""
    code, out, err = _admin(cluster, release)
    assert code == 0, out + err
    assert "content differs" not in out  # as the API server returns them, with its defaults
    pods = f"wingman-{release.namespace}-gateway-pods"
    workloads = f"wingman-{release.namespace}-executor-workloads"
    edits = {
        "expression true": (pods, [{"op": "replace", "path": "/spec/validations/0/expression",
                                    "value": "true"}]),
        "validation removed": (workloads, [{"op": "remove", "path": "/spec/validations/1"}]),
        "match condition never holds": (pods, [
            {"op": "replace", "path": "/spec/matchConditions/0/expression",
             "value": "false"}]),
        "variable changed": (workloads, [{"op": "replace",
                                          "path": "/spec/variables/0/expression",
                                          "value": "object"}]),
    }
    pod = _helm_test_pod(release)
    (container,) = pod["spec"]["containers"]
    for env in container["env"]:
        monkeypatch.setenv(env["name"], env["value"])
    token = cluster.sa_token(release.namespace, "wingman-verifier", expiration_seconds=600)
    kubeconfig = cluster.token_kubeconfig(token, name="wingman-verifier")
    try:
        for what, (name, patch) in edits.items():
            saved = json.loads(cluster.kubectl("get", "validatingadmissionpolicy", name,
                                               "-o", "json").stdout)["spec"]
            cluster.kubectl("patch", "validatingadmissionpolicy", name, "--type=json",
                            "-p", json.dumps(patch))
            try:
                # exactly as the helm test pod runs it, as ServiceAccount wingman-verifier
                code, out, err = _run(*container["args"][2:], "--kubeconfig", str(kubeconfig))
                assert code == 1, f"{what}: {out}{err}"
                assert {r["RESULT"] for r in _rows(out)} == {"ok"}  # access is as designed
                text = " ".join(out.split())
                assert (f"- ValidatingAdmissionPolicy {name}: content differs from the chart "
                        "(its matchConstraints, matchConditions, variables, validations, "
                        "auditAnnotations do not hash to its annotation "
                        "wingman.dev/content-sha256)") in text, f"{what}: {out}"
                assert "restore it with `helm upgrade` of the release" in text
                assert "1 configuration" in out.splitlines()[-1], f"{what}: {out}"
            finally:
                cluster.kubectl("patch", "validatingadmissionpolicy", name, "--type=json",
                                "-p", json.dumps([{"op": "replace", "path": "/spec",
                                                   "value": saved}]))
        # edited along with its annotation: the digests the chart gave the test pod tell
        live = json.loads(cluster.kubectl("get", "validatingadmissionpolicy", workloads,
                                          "-o", "json").stdout)
        saved, annotation = live["spec"], live["metadata"]["annotations"][
            "wingman.dev/content-sha256"]
        edited = {**saved, "validations": saved["validations"][1:]}
        cluster.kubectl("patch", "validatingadmissionpolicy", workloads, "--type=merge",
                        "-p", json.dumps({"metadata": {"annotations": {
                            "wingman.dev/content-sha256": policy_content_digest(edited)}},
                            "spec": {"validations": edited["validations"]}}))
        try:
            code, out, err = _run(*container["args"][2:], "--kubeconfig", str(kubeconfig))
            assert code == 1, out + err
            assert (f"- ValidatingAdmissionPolicy {workloads}: content differs from the chart "
                    "(its matchConstraints, matchConditions, variables, validations, "
                    "auditAnnotations do not hash to the digest of the release's chart, though "
                    "they hash to its annotation wingman.dev/content-sha256)"
                    ) in " ".join(out.split()), out
        finally:
            cluster.kubectl("patch", "validatingadmissionpolicy", workloads, "--type=merge",
                            "-p", json.dumps({"metadata": {"annotations": {
                                "wingman.dev/content-sha256": annotation}},
                                "spec": {"validations": saved["validations"]}}))
    finally:
        kubeconfig.unlink(missing_ok=True)
    assert _admin(cluster, release)[0] == 0


def test_a_pod_mounting_the_docker_socket_is_reported(
    cluster: LocalCluster, release: Release,
) -> None:
    name = f"sock-{uuid.uuid4().hex[:6]}"
    pod = pod_manifest(name, service_account="default", image="docker:cli",
                       automountServiceAccountToken=False,
                       volumes=[{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}])
    # The default ServiceAccount appears shortly after the namespace (a controller makes it).
    _wait(lambda: cluster.kubectl("create", "-n", release.namespace, "-f", "-",
                                  input=dump(pod), check=False).returncode == 0,
          "the pod to be created")
    try:
        code, out, err = _admin(cluster, release)
        assert code == 1, out + err
        assert {r["RESULT"] for r in _rows(out)} == {"ok"}  # access is still as designed
        assert re.search(rf"^pod/{name}\s+default\s+hostPath volume docker mounts "
                         r"/var/run/docker.sock \(the Docker socket: root on the node\)$",
                         out, re.MULTILINE), out
        assert f"  - pod/{name} (serviceAccount default): hostPath volume docker" in out
        assert out.splitlines()[-1].startswith("FAIL: 1 violations (0 access, 1 pod spec)")
        code, out, _ = _admin(cluster, release, "--output", "json")
        assert code == 1
        (problem,) = json.loads(out)["podProblems"]
        assert problem["object"] == f"pod/{name}"
    finally:
        cluster.kubectl("delete", "pod", name, "-n", release.namespace, "--wait=false")


def test_workers_can_read_the_policy_and_an_identity_that_cannot_is_reported(
        cluster: LocalCluster, release: Release) -> None:
    code, out, err = _admin(cluster, release)
    assert code == 0, out + err
    assert "cannot get configmaps/wingman-policy" not in out, "the chart's workers can read it"
    # an explicitly named worker without the release's RoleBinding lacks what agents need
    code, out, err = _admin(cluster, release, "--worker-user", "stranger")
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert "note: worker user/stranger cannot get configmaps/wingman-policy: agents read what " \
        "passes: kubectl wingman policy and the MCP policy resource" in notes, out + err
    assert "note: worker user/stranger cannot create approvalrequests: workers ask for " \
        "approval by creating ApprovalRequests" in notes

"""The admission policies, installed by a real `helm install`, against real identities.

Two releases are installed once for this module: TEST (manifests/test/values.yaml) and PRD
(manifests/prd/values.yaml), each in a namespace of its own with a target namespace for the
gateway. People are real client certificates (user + groups); the operator acts with a real
ServiceAccount token; the Job controller of the local control plane creates gateway pods.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.chart import (
    APPROVER,
    DEFAULT_GATEWAY_IMAGE,
    SECOND_APPROVER,
    WORKER,
    WORKER_AND_APPROVER,
    InvalidSample,
    Release,
    all_invalid_samples,
    approval_request,
    approver_groups,
    dump,
    installed,
    job_manifest,
    kubectl_as_sa,
    pod_manifest,
    worker_groups,
)
from wingman.dev.cluster import LocalCluster
from wingman.model import names

pytestmark = pytest.mark.integration

PRD_APPROVER = "frank"
OUTSIDER = "eve"


def _suffix() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def test_release(cluster: LocalCluster, crds: Path) -> Iterator[Release]:
    s = _suffix()
    with installed(cluster, "test", namespace=f"adm-test-{s}",
                   target_namespace=f"adm-test-apps-{s}") as release:
        yield release


@pytest.fixture(scope="module")
def prd_release(cluster: LocalCluster, crds: Path) -> Iterator[Release]:
    s = _suffix()
    with installed(cluster, "prd", namespace=f"adm-prd-{s}",
                   target_namespace=f"adm-prd-apps-{s}") as release:
        yield release


def _groups(env: str, *roles: str) -> list[str]:
    out: list[str] = []
    for role in roles:
        out += worker_groups(env) if role == "worker" else approver_groups(env)
    return out


def _as(env: str, user: str) -> dict[str, Any]:
    """kubectl keyword arguments for the people of these tests in ``env``."""
    roles = {
        WORKER: ("worker",),
        APPROVER: ("approver",),
        SECOND_APPROVER: ("approver",),
        WORKER_AND_APPROVER: ("worker", "approver"),
        PRD_APPROVER: ("approver",) if env == "prd" else (),
        OUTSIDER: (),
    }[user]
    return {"user": user, "groups": _groups(env, *roles)}


def _submit(cluster: LocalCluster, release: Release, name: str, requester: str,
            **spec: Any) -> Any:
    obj = approval_request(name, requester=requester, environment=release.env, **spec)
    return cluster.kubectl("create", "-n", release.namespace, "-f", "-", input=dump(obj),
                           check=False, **_as(release.env, requester))


def _decide(cluster: LocalCluster, release: Release, name: str, caller: str, *,
            by: str | None = None, verdict: str = "Approve") -> Any:
    """Append a decision the way `kubectl wingman approve` does (a JSON patch)."""
    current = json.loads(cluster.kubectl(
        "get", f"ar/{name}", "-n", release.namespace, "-o", "json").stdout)
    entry = {"verdict": verdict, "by": by or caller, "reason": f"checked by {caller}"}
    ops = ([{"op": "add", "path": "/spec/decisions/-", "value": entry}]
           if current["spec"].get("decisions") else
           [{"op": "add", "path": "/spec/decisions", "value": [entry]}])
    return cluster.kubectl("patch", f"ar/{name}", "-n", release.namespace, "--type=json",
                           "-p", json.dumps(ops), check=False, **_as(release.env, caller))


def _decisions(cluster: LocalCluster, release: Release, name: str) -> list[dict[str, Any]]:
    obj = json.loads(cluster.kubectl("get", f"ar/{name}", "-n", release.namespace,
                                     "-o", "json").stdout)
    return list(obj["spec"].get("decisions", []))


# --------------------------------------------------------------------------- requests


def test_worker_submits_a_request_in_their_own_name(
    cluster: LocalCluster, test_release: Release,
) -> None:
    result = _submit(cluster, test_release, "own-name", WORKER)
    assert result.returncode == 0, result.stderr
    listed = cluster.kubectl("get", "ar", "-n", test_release.namespace, "-o", "name",
                             **_as("test", WORKER)).stdout
    assert "approvalrequest.wingman.dev/own-name" in listed.split()


def test_requester_must_be_the_caller(cluster: LocalCluster, test_release: Release) -> None:
    obj = approval_request("not-mine", requester=APPROVER, environment="test")
    result = cluster.kubectl("create", "-n", test_release.namespace, "-f", "-", input=dump(obj),
                             check=False, **_as("test", WORKER))
    assert result.returncode != 0
    assert f"spec.requester '{APPROVER}' must be your own user name '{WORKER}'" in result.stderr


def _admission_samples() -> list[InvalidSample]:
    return [s for s in all_invalid_samples() if s.layer == "admission"]


@pytest.mark.parametrize("sample", _admission_samples(), ids=lambda s: s.id)
def test_invalid_sample_is_rejected_by_admission(
    cluster: LocalCluster, test_release: Release, prd_release: Release, sample: InvalidSample,
) -> None:
    release = test_release if sample.id.startswith("test/") else prd_release
    result = cluster.kubectl("apply", "-n", release.namespace, "-f", str(sample.path),
                             check=False, **_as(release.env, WORKER))
    assert result.returncode != 0, f"{sample.path.name} was accepted ({sample.why})"
    assert sample.expect in result.stderr, result.stderr


def test_unknown_environment_message_names_the_served_one(
    cluster: LocalCluster, prd_release: Release,
) -> None:
    obj = approval_request("wrong-env", requester=WORKER, environment="staging")
    result = cluster.kubectl("create", "-n", prd_release.namespace, "-f", "-", input=dump(obj),
                             check=False, **_as("prd", WORKER))
    assert result.returncode != 0
    assert "serves only environment 'prd'" in result.stderr


@pytest.mark.parametrize("env", ["test", "prd"])
def test_valid_samples_pass_admission(
    cluster: LocalCluster, test_release: Release, prd_release: Release, env: str,
) -> None:
    release = test_release if env == "test" else prd_release
    samples = Path(__file__).resolve().parents[2] / "manifests" / env / "samples"
    for path in sorted(samples.glob("*.yaml")):
        # grants: by the worker where workers may grant (TEST), else by an approver (PRD)
        caller = PRD_APPROVER if env == "prd" and "ExecutionGrant" in path.read_text() \
            else WORKER
        result = cluster.kubectl("apply", "-n", release.namespace, "-f", str(path),
                                 check=False, **_as(env, caller))
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


# --------------------------------------------------------------------------- workers


@pytest.mark.parametrize(("what", "ops"), [
    ("approve", [{"op": "add", "path": "/spec/decisions",
                  "value": [{"verdict": "Approve", "by": WORKER}]}]),
    ("edit-commands", [{"op": "replace", "path": "/spec/commands/0",
                        "value": "kubectl delete namespace apps"}]),
    ("edit-status", None),
])
def test_worker_cannot_decide_edit_or_write_status(
    cluster: LocalCluster, test_release: Release, what: str, ops: list[dict[str, Any]] | None,
) -> None:
    name = f"w-{what}"
    assert _submit(cluster, test_release, name, WORKER).returncode == 0
    args = ["patch", f"ar/{name}", "-n", test_release.namespace, "--type=json"]
    if ops is None:
        ops = [{"op": "add", "path": "/status", "value": {"phase": "Approved"}}]
        args.append("--subresource=status")
    result = cluster.kubectl(*args, "-p", json.dumps(ops), check=False, **_as("test", WORKER))
    assert result.returncode != 0
    assert "Forbidden" in result.stderr
    assert f'User "{WORKER}" cannot' in result.stderr, result.stderr
    assert _decisions(cluster, test_release, name) == []


# --------------------------------------------------------------------------- approvers


def test_approvers_decide_another_workers_request(
    cluster: LocalCluster, prd_release: Release,
) -> None:
    assert _submit(cluster, prd_release, "two-approvers", WORKER).returncode == 0
    # prd approvers bind to the prd group; frank and a second prd approver decide.
    first = _decide(cluster, prd_release, "two-approvers", PRD_APPROVER)
    assert first.returncode == 0, first.stderr
    second = cluster.kubectl(
        "patch", "ar/two-approvers", "-n", prd_release.namespace, "--type=json", "-p",
        json.dumps([{"op": "add", "path": "/spec/decisions/-",
                     "value": {"verdict": "Reject", "by": "grace", "reason": "not today"}}]),
        user="grace", groups=approver_groups("prd"), check=False)
    assert second.returncode == 0, second.stderr
    assert [(d["by"], d["verdict"]) for d in _decisions(cluster, prd_release, "two-approvers")] \
        == [(PRD_APPROVER, "Approve"), ("grace", "Reject")]


def test_approver_decides_in_test(cluster: LocalCluster, test_release: Release) -> None:
    assert _submit(cluster, test_release, "to-decide", WORKER).returncode == 0
    result = _decide(cluster, test_release, "to-decide", APPROVER)
    assert result.returncode == 0, result.stderr
    result = _decide(cluster, test_release, "to-decide", SECOND_APPROVER, verdict="Reject")
    assert result.returncode == 0, result.stderr
    assert [d["by"] for d in _decisions(cluster, test_release, "to-decide")] == [
        APPROVER, SECOND_APPROVER]


def test_decision_in_someone_elses_name_is_rejected(
    cluster: LocalCluster, test_release: Release,
) -> None:
    assert _submit(cluster, test_release, "spoofed", WORKER).returncode == 0
    result = _decide(cluster, test_release, "spoofed", APPROVER, by=SECOND_APPROVER)
    assert result.returncode != 0
    assert (f"must be your own user name '{APPROVER}'" in result.stderr
            and f"not one by '{SECOND_APPROVER}'" in result.stderr), result.stderr
    assert _decisions(cluster, test_release, "spoofed") == []


def test_requester_who_is_an_approver_cannot_decide_their_own_request(
    cluster: LocalCluster, test_release: Release,
) -> None:
    assert _submit(cluster, test_release, "self-approval", WORKER_AND_APPROVER).returncode == 0
    for verdict in ("Approve", "Reject"):
        result = _decide(cluster, test_release, "self-approval", WORKER_AND_APPROVER,
                         verdict=verdict)
        assert result.returncode != 0
        assert "cannot decide their own request" in result.stderr, result.stderr
    assert _decisions(cluster, test_release, "self-approval") == []
    # ...but they may decide somebody else's.
    assert _submit(cluster, test_release, "for-dave", WORKER).returncode == 0
    assert _decide(cluster, test_release, "for-dave", WORKER_AND_APPROVER).returncode == 0


def test_edit_rights_without_the_approve_right_cannot_decide(
    cluster: LocalCluster, test_release: Release,
) -> None:
    ns = test_release.namespace
    cluster.kubectl("create", "role", "ar-editor", "-n", ns, "--verb=get,patch",
                    "--resource=approvalrequests.wingman.dev")
    cluster.kubectl("create", "rolebinding", "ar-editor", "-n", ns, "--role=ar-editor",
                    f"--user={OUTSIDER}")
    assert _submit(cluster, test_release, "outsider", WORKER).returncode == 0
    result = _decide(cluster, test_release, "outsider", OUTSIDER)
    assert result.returncode != 0
    assert (f"user '{OUTSIDER}' may not decide requests for environment 'test'"
            in result.stderr), result.stderr


def test_test_approvers_cannot_decide_prd_requests(
    cluster: LocalCluster, prd_release: Release,
) -> None:
    ns = prd_release.namespace
    assert _submit(cluster, prd_release, "prd-only", WORKER).returncode == 0
    # Without RBAC in the prd namespace a test approver cannot even patch...
    denied = cluster.kubectl(
        "patch", "ar/prd-only", "-n", ns, "--type=json", "-p",
        json.dumps([{"op": "add", "path": "/spec/decisions",
                     "value": [{"verdict": "Approve", "by": APPROVER}]}]),
        check=False, user=APPROVER, groups=approver_groups("test"))
    assert denied.returncode != 0 and f'User "{APPROVER}" cannot' in denied.stderr
    # ...and with edit rights there, the approve right for 'prd' is still missing.
    cluster.kubectl("create", "rolebinding", "test-approver-edits", "-n", ns,
                    "--role=wingman-approver", f"--user={APPROVER}")
    result = cluster.kubectl(
        "patch", "ar/prd-only", "-n", ns, "--type=json", "-p",
        json.dumps([{"op": "add", "path": "/spec/decisions",
                     "value": [{"verdict": "Approve", "by": APPROVER}]}]),
        check=False, user=APPROVER, groups=approver_groups("test"))
    assert result.returncode != 0
    assert "may not decide requests for environment 'prd'" in result.stderr, result.stderr


def test_admission_applies_only_in_the_release_namespace(
    cluster: LocalCluster, test_release: Release,
) -> None:
    obj = approval_request("elsewhere", requester="somebody-else", environment="staging")
    result = cluster.kubectl("create", "-n", test_release.target_namespace, "-f", "-",
                             input=dump(obj), check=False)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- grants


def _grant(cluster: LocalCluster, release: Release, caller: str,
           requester: str | None) -> Any:
    spec: dict[str, Any] = {"approvalRef": {"name": "some-request"},
                            "command": "kubectl rollout restart deployment/web -n apps"}
    if requester is not None:
        spec["requester"] = requester
    obj = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
           "metadata": {"name": f"g-{uuid.uuid4().hex[:8]}"}, "spec": spec}
    return cluster.kubectl("create", "--dry-run=server", "-n", release.namespace, "-f", "-",
                           input=dump(obj), check=False, **_as(release.env, caller))


def test_worker_grants_only_in_their_own_name(
    cluster: LocalCluster, test_release: Release,
) -> None:
    own = _grant(cluster, test_release, WORKER, WORKER)
    assert own.returncode == 0, own.stderr
    other = _grant(cluster, test_release, WORKER, APPROVER)
    assert other.returncode != 0
    assert (f"user '{WORKER}' is not an approver for environment 'test', so an ExecutionGrant "
            f"must be in your own name: set spec.requester to '{WORKER}'") in other.stderr
    assert f"not '{APPROVER}'" in other.stderr
    nameless = _grant(cluster, test_release, WORKER, None)
    assert nameless.returncode != 0
    assert f"set spec.requester to '{WORKER}'" in nameless.stderr


@pytest.mark.parametrize("requester", [None, WORKER, APPROVER])
def test_approvers_grant_in_any_name(
    cluster: LocalCluster, test_release: Release, requester: str | None,
) -> None:
    result = _grant(cluster, test_release, APPROVER, requester)
    assert result.returncode == 0, result.stderr


def test_prd_approvers_grant_for_prd(cluster: LocalCluster, prd_release: Release) -> None:
    result = _grant(cluster, prd_release, PRD_APPROVER, None)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- gateway pods/Jobs


def test_gateway_pods_are_created_only_by_the_job_controller(
    cluster: LocalCluster, test_release: Release,
) -> None:
    ns = test_release.namespace
    result = cluster.kubectl("create", "-n", ns, "-f", "-",
                             input=dump(pod_manifest("direct-gateway")), check=False)
    assert result.returncode != 0
    assert "may only be created by the Job controller" in result.stderr
    assert "not by 'admin'" in result.stderr
    # The same pod under another ServiceAccount is none of the policy's business.
    control = pod_manifest("direct-default", service_account="default")
    assert cluster.kubectl("create", "-n", ns, "-f", "-", input=dump(control),
                           check=False).returncode == 0


def test_gateway_jobs_are_created_only_by_the_operator(
    cluster: LocalCluster, test_release: Release,
) -> None:
    ns = test_release.namespace
    result = cluster.kubectl("create", "-n", ns, "-f", "-",
                             input=dump(job_manifest("admin-job")), check=False)
    assert result.returncode != 0
    assert "may only be created or changed by the Wingman operator" in result.stderr
    assert "not by 'admin'" in result.stderr


def test_operator_cannot_use_another_image(cluster: LocalCluster, test_release: Release) -> None:
    ns = test_release.namespace
    job = job_manifest("other-image", image="ghcr.io/attacker/tool:1.0")
    result = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                           input=dump(job))
    assert result.returncode != 0
    assert "must use the pinned gateway image" in result.stderr
    assert "gateway=ghcr.io/attacker/tool:1.0" in result.stderr


def _gateway_pod_token(cluster: LocalCluster, ns: str, job: str) -> tuple[str, str]:
    """The operator creates gateway Job ``job``; its pod's name and a gateway ServiceAccount
    token bound to that pod (what the kubelet mounts into it)."""
    created = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                            input=dump(job_manifest(job)))
    assert created.returncode == 0, created.stderr
    pod_name = _wait_for_pod(cluster, ns, job).split("/", 1)[1]
    uid = cluster.kubectl("get", "pod", pod_name, "-n", ns, "-o",
                          "jsonpath={.metadata.uid}").stdout
    return pod_name, cluster.sa_token(ns, "wingman-gateway", expiration_seconds=600,
                                      pod=(pod_name, uid))


def _wait_for_pod(cluster: LocalCluster, ns: str, job: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = cluster.kubectl("get", "pods", "-n", ns, "-l", f"job-name={job}",
                                "-o", "name").stdout.split()
        if names:
            return names[0]
        time.sleep(0.5)
    events = cluster.kubectl("get", "events", "-n", ns, "--field-selector",
                             f"involvedObject.name={job}").stdout
    raise AssertionError(f"the Job controller created no pod for {job}; events:\n{events}")


def test_the_operators_preview_job_runs_and_only_the_operator_may_create_one(
    cluster: LocalCluster, test_release: Release, tmp_path: Path,
) -> None:
    from wingman.operator import manifests
    from wingman.settings import OperatorSettings

    ns = test_release.namespace
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: test\n")
    settings = OperatorSettings.from_env({"WINGMAN_NAMESPACE": ns,
                                          "WINGMAN_POLICY_FILE": str(policy)})
    job = manifests.preview_job({"apiVersion": "wingman.dev/v1alpha1",
                                 "kind": "ApprovalRequest",
                                 "metadata": {"name": "prev", "namespace": ns,
                                              "uid": "00000000-0000-0000-0000-000000000001"}},
                                settings)
    job["metadata"].pop("ownerReferences")  # no such request here; the pod rules are the point
    refused = cluster.kubectl("create", "-n", ns, "-f", "-", input=dump(job), check=False)
    assert refused.returncode != 0 and "ServiceAccount 'wingman-preview'" in refused.stderr
    result = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                           input=dump(job))
    assert result.returncode == 0, result.stderr
    _wait_for_pod(cluster, ns, "prev-preview")
    args = {**job}
    args["metadata"] = {**job["metadata"], "name": "prev-shell"}
    args["spec"]["template"]["spec"]["containers"][0]["args"] = ["--debug"]
    shell = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                          input=dump(args))
    assert shell.returncode != 0 and '["/usr/bin/tini", "--", "wingman", "preview"]' in shell.stderr


def test_a_request_named_past_a_label_value_s_length_gets_its_preview_job(
    cluster: LocalCluster, test_release: Release, tmp_path: Path,
) -> None:
    """An ApprovalRequest's name may have up to 253 characters, a label value at most 63: the
    preview Job labels a longer name shortened (else the API server refuses the Job, and the
    request ends unreviewed, OperatorWriteRejected)."""
    from wingman.operator import manifests
    from wingman.settings import OperatorSettings

    ns = test_release.namespace
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: test\n")
    settings = OperatorSettings.from_env({"WINGMAN_NAMESPACE": ns,
                                          "WINGMAN_POLICY_FILE": str(policy)})
    request = "restart-the-frontend-so-it-picks-up-the-rotated-certificate." + "x" * 40
    job = manifests.preview_job({"apiVersion": "wingman.dev/v1alpha1",
                                 "kind": "ApprovalRequest",
                                 "metadata": {"name": request, "namespace": ns,
                                              "uid": "00000000-0000-0000-0000-000000000002"}},
                                settings)
    job["metadata"].pop("ownerReferences")  # no such request here; the Job is the point
    made = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                         input=dump(job))
    assert made.returncode == 0, made.stderr
    label = cluster.kubectl("get", "job", names.preview_job_name(request), "-n", ns, "-o",
                            "jsonpath={.metadata.labels.wingman\\.dev/approval}").stdout
    assert label == names.label_value(request) and label.startswith(request[:50]), label
    cluster.kubectl("delete", "job", names.preview_job_name(request), "-n", ns)


def _claims(token: str) -> dict[str, Any]:
    """The claims of a ServiceAccount token (a JWT; read, not verified)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(
        payload + "=" * (-len(payload) % 4)))
    return claims


def _projection_token(cluster: LocalCluster, ns: str, account: str, pod: dict[str, Any],
                      seconds: int) -> str:
    """The token the kubelet gets for a pod's projected serviceAccountToken source of
    ``seconds`` and no audience: a TokenRequest bound to the pod, for the API server's own
    audiences (which it fills in)."""
    answer = cluster.kubectl(
        "create", "--raw",
        f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token", "-f", "-",
        input=json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                          "spec": {"expirationSeconds": seconds, "boundObjectRef": {
                              "apiVersion": "v1", "kind": "Pod",
                              "name": pod["metadata"]["name"],
                              "uid": pod["metadata"]["uid"]}}}))
    return str(json.loads(answer.stdout)["status"]["token"])


@pytest.mark.parametrize("kind", ["gateway", "preview"])
def test_the_operators_pods_hold_their_own_ten_minute_token_not_the_automounted_one(
    cluster: LocalCluster, test_release: Release, tmp_path: Path, kind: str,
) -> None:
    """The Jobs exactly as the operator builds them pass the chart's admission policies, and
    their pods carry no ``kube-api-access-*`` volume (the automounted token: 3607 s, which the
    API server extends to a year, valid as long as the finished pod exists) but their own
    projection of 600 s, which the API server grants as asked."""
    from wingman.operator import manifests
    from wingman.settings import OperatorSettings

    ns = test_release.namespace
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: test\n")
    settings = OperatorSettings.from_env({"WINGMAN_NAMESPACE": ns,
                                          "WINGMAN_POLICY_FILE": str(policy)})
    owner = {"metadata": {"name": f"own-token-{kind}", "namespace": ns,
                          "uid": "00000000-0000-0000-0000-000000000002"}}
    job = (manifests.gateway_job(owner, settings, 300) if kind == "gateway"
           else manifests.preview_job(owner, settings))
    job["metadata"].pop("ownerReferences")  # no such grant or request here
    created = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                            input=dump(job))
    assert created.returncode == 0, created.stderr
    pod = json.loads(cluster.kubectl(
        "get", _wait_for_pod(cluster, ns, job["metadata"]["name"]), "-n", ns,
        "-o", "json").stdout)
    spec = pod["spec"]
    account = f"wingman-{kind}"
    assert spec["serviceAccountName"] == account
    assert spec["automountServiceAccountToken"] is False
    assert not [v["name"] for v in spec["volumes"] if v["name"].startswith("kube-api-access")]
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"]
                if m["mountPath"].startswith("/var/run/secrets/kubernetes.io/")]
    assert mount == {"name": "serviceaccount", "readOnly": True,
                     "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    (volume,) = [v for v in spec["volumes"] if v["name"] == "serviceaccount"]
    (projection,) = [s["serviceAccountToken"] for s in volume["projected"]["sources"]
                     if "serviceAccountToken" in s]
    assert projection == {"path": "token", "expirationSeconds": 600}

    # what the kubelet mounts: a token of the pod's account, bound to the pod, for the API
    # server, that expires 600 s after it was issued...
    claims = _claims(_projection_token(cluster, ns, account, pod, 600))
    assert claims["sub"] == f"system:serviceaccount:{ns}:{account}"
    assert claims["kubernetes.io"]["pod"]["uid"] == pod["metadata"]["uid"]
    assert claims["exp"] - claims["iat"] == 600
    # ... where the automounted projection's 3607 s would have given it a year
    extended = _claims(_projection_token(cluster, ns, account, pod, 3607))
    assert extended["exp"] - extended["iat"] > 30 * 86400


def test_operator_gateway_job_runs_and_its_pod_is_locked(
    cluster: LocalCluster, test_release: Release,
) -> None:
    ns = test_release.namespace
    result = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                           input=dump(job_manifest("legit-gateway")))
    assert result.returncode == 0, result.stderr
    pod = _wait_for_pod(cluster, ns, "legit-gateway")
    image = cluster.kubectl("get", pod, "-n", ns, "-o",
                            "jsonpath={.spec.containers[0].image}").stdout
    assert image == DEFAULT_GATEWAY_IMAGE
    # Nobody, not even an admin, swaps the image or attaches a debug container.
    swap = cluster.kubectl("patch", pod, "-n", ns, "--type=json", "-p", json.dumps(
        [{"op": "replace", "path": "/spec/containers/0/image", "value": "busybox:1.36"}]),
        check=False)
    assert swap.returncode != 0 and "must use the pinned gateway image" in swap.stderr
    debug = cluster.kubectl("patch", pod, "-n", ns, "--subresource=ephemeralcontainers",
                            "--type=strategic", "-p", json.dumps({"spec": {"ephemeralContainers": [
                                {"name": "debug", "image": DEFAULT_GATEWAY_IMAGE}]}}),
                            check=False)
    assert debug.returncode != 0 and "must not have ephemeral containers" in debug.stderr
    # Only the operator changes the Job's spec; metadata edits by others pass.
    release = cluster.kubectl("patch", "job/legit-gateway", "-n", ns, "--type=merge",
                              "-p", '{"spec":{"suspend":true}}', check=False)
    assert release.returncode != 0 and "not by 'admin'" in release.stderr
    assert cluster.kubectl("label", "job/legit-gateway", "-n", ns, "note=seen",
                           check=False).returncode == 0
    by_operator = kubectl_as_sa(cluster, ns, "wingman-operator", "patch", "job/legit-gateway",
                                "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    assert by_operator.returncode == 0, by_operator.stderr


def test_the_operator_still_changes_a_gateway_job_an_earlier_release_made(
    cluster: LocalCluster, test_release: Release,
) -> None:
    """Jobs made before the token rules (automounted token, no projection of their own) and
    before the image's init (command ``["wingman", "gateway"]``) stay the operator's to patch
    (deadline, suspend, annotations) after an upgrade; the rules keep what their pods hold and
    run as it was, and refuse a new Job of that shape."""
    ns = test_release.namespace
    old = job_manifest("old-release-gw", automountServiceAccountToken=True,
                       container={"command": ["wingman", "gateway"]})
    old["spec"]["suspend"] = True
    refused = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                            input=dump(old))
    assert refused.returncode != 0 and "automountServiceAccountToken to false" in \
        refused.stderr, refused.stderr
    # made as the earlier release did, before its policies had the rule
    _without_binding(cluster, f"wingman-{ns}-gateway-jobs", lambda: kubectl_as_sa(
        cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-", input=dump(old)))
    deadline = time.monotonic() + 30
    while kubectl_as_sa(cluster, ns, "wingman-operator", "create", "--dry-run=server", "-n", ns,
                        "-f", "-", input=dump({**old, "metadata": {"name": "probe-old"}})
                        ).returncode == 0:
        assert time.monotonic() < deadline, "the gateway-jobs policy is not enforced again"
        time.sleep(0.5)
    for patch in ({"metadata": {"annotations": {"wingman.dev/note": "seen"}}},
                  {"spec": {"activeDeadlineSeconds": 900}},
                  {"spec": {"suspend": False}}):
        changed = kubectl_as_sa(cluster, ns, "wingman-operator", "patch", "job/old-release-gw",
                                "-n", ns, "--type=merge", "-p", json.dumps(patch))
        assert changed.returncode == 0, f"{patch}: {changed.stderr}"


EARLIER_IMAGE = "ghcr.io/wingman-dev/wingman:0.0.9"


def _without_binding(cluster: LocalCluster, binding: str, make: Any) -> None:
    """``make()`` (returning a CompletedProcess) while the policy binding ``binding`` is away,
    as an earlier release, whose policies had not this rule, made it; the binding restored."""
    saved = json.loads(cluster.kubectl("get", "validatingadmissionpolicybinding", binding,
                                       "-o", "json").stdout)
    cluster.kubectl("delete", "validatingadmissionpolicybinding", binding)
    try:
        deadline = time.monotonic() + 30
        while True:
            made = make()
            if made.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert made.returncode == 0, made.stderr
    finally:
        meta = saved["metadata"]
        for k in ("resourceVersion", "uid", "creationTimestamp", "generation",
                  "managedFields"):
            meta.pop(k, None)
        cluster.kubectl("create", "-f", "-", input=json.dumps(saved))


def test_a_job_and_pod_an_earlier_release_made_with_its_image_can_still_be_finished(
    cluster: LocalCluster, test_release: Release,
) -> None:
    """After an upgrade that pins a new image, a gateway Job (and its pod) made with the
    earlier image is still updated with that image unchanged (the operator's patches, a
    finalizer added and removed by the controllers), so it can be finished and cleaned up;
    a new Job with the earlier image, and a change of a pod's image to it, are refused."""
    ns = test_release.namespace
    old = job_manifest("old-image-gw", image=EARLIER_IMAGE)
    old["spec"]["suspend"] = True
    refused = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                            input=dump(old))
    assert refused.returncode != 0 and "must use the pinned gateway image" in refused.stderr \
        and f"gateway={EARLIER_IMAGE}" in refused.stderr, refused.stderr
    _without_binding(cluster, f"wingman-{ns}-gateway-jobs", lambda: kubectl_as_sa(
        cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-", input=dump(old)))
    pod = pod_manifest("old-image-gw-pod", image=EARLIER_IMAGE,
                       nodeSelector={"wingman.dev/no-such-node": "x"})
    _without_binding(cluster, f"wingman-{ns}-gateway-pods", lambda: cluster.kubectl(
        "create", "-n", ns, "-f", "-", input=dump(pod), check=False))

    # the pod's image changed (to anything but the pinned one) is refused, once enforced again
    other = {"spec": {"containers": [{"name": "gateway", "image": "busybox:1.36"}]}}
    deadline = time.monotonic() + 30
    while cluster.kubectl("patch", "pod/old-image-gw-pod", "-n", ns, "--dry-run=server",
                          "-p", json.dumps(other), check=False).returncode == 0:
        assert time.monotonic() < deadline, "the gateway-pods policy is not enforced again"
        time.sleep(0.5)
    changed = cluster.kubectl("patch", "pod/old-image-gw-pod", "-n", ns, "-p", json.dumps(other),
                              check=False)
    assert changed.returncode != 0 and "must use the pinned gateway image" in changed.stderr \
        and "gateway=busybox:1.36" in changed.stderr, changed.stderr
    assert cluster.kubectl("get", "pod/old-image-gw-pod", "-n", ns, "-o",
                           "jsonpath={.spec.containers[0].image}").stdout == EARLIER_IMAGE
    # a new Job with the earlier image is still refused
    probe = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "--dry-run=server", "-n",
                          ns, "-f", "-", input=dump({**old, "metadata": {"name": "probe-old"}}))
    assert probe.returncode != 0 and "must use the pinned gateway image" in probe.stderr

    patch: dict[str, Any]  # each a merge patch of a different shape
    for kind, name in (("job", "old-image-gw"), ("pod", "old-image-gw-pod")):
        for patch in ({"metadata": {"finalizers": ["wingman.dev/test-hold"]}},
                      {"metadata": {"finalizers": None}},
                      {"metadata": {"labels": {"wingman.dev/seen": "yes"}}}):
            done = cluster.kubectl("patch", f"{kind}/{name}", "-n", ns, "--type=merge", "-p",
                                   json.dumps(patch), check=False)
            assert done.returncode == 0, f"{kind} {patch}: {done.stderr}"
    for patch in ({"metadata": {"annotations": {"wingman.dev/note": "seen"}}},
                  {"spec": {"activeDeadlineSeconds": 900}},
                  {"spec": {"suspend": False}}):
        changed = kubectl_as_sa(cluster, ns, "wingman-operator", "patch", "job/old-image-gw",
                                "-n", ns, "--type=merge", "-p", json.dumps(patch))
        assert changed.returncode == 0, f"{patch}: {changed.stderr}"
    for kind, name in (("job", "old-image-gw"), ("pod", "old-image-gw-pod")):
        cluster.kubectl("delete", kind, name, "-n", ns, "--wait=false")


def test_a_pod_an_earlier_release_made_keeps_each_image_only_in_its_own_container(
    cluster: LocalCluster, test_release: Release,
) -> None:
    """The exception for an earlier release's pod is per container, by name and image: images
    swapped between two containers, an init container given the image another container had,
    or a debug container (the ephemeralcontainers subresource) with the earlier image are all
    refused, each image counted against its own container's (a pod of more than one container
    is refused on any update by the one-container rule as well)."""
    ns = test_release.namespace
    other = "ghcr.io/wingman-dev/wingman:0.0.8"
    pod = pod_manifest("old-two-gw", image=EARLIER_IMAGE,
                       nodeSelector={"wingman.dev/no-such-node": "x"},
                       initContainers=[{"name": "init", "image": EARLIER_IMAGE,
                                        "command": ["true"]}])
    pod["spec"]["containers"].append({"name": "side", "image": other, "command": ["true"]})
    _without_binding(cluster, f"wingman-{ns}-gateway-pods", lambda: cluster.kubectl(
        "create", "-n", ns, "-f", "-", input=dump(pod), check=False))

    def patched(patch: list[dict[str, Any]], *options: str) -> Any:
        return cluster.kubectl("patch", "pod/old-two-gw", "-n", ns, "--type=json", "-p",
                               json.dumps(patch), *options, check=False)

    deadline = time.monotonic() + 30
    while patched([{"op": "replace", "path": "/spec/containers/1/image",
                    "value": "busybox:1.36"}], "--dry-run=server").returncode == 0:
        assert time.monotonic() < deadline, "the gateway-pods policy is not enforced again"
        time.sleep(0.5)
    done = patched([{"op": "replace", "path": "/spec/containers/0/image", "value": other},
                    {"op": "replace", "path": "/spec/containers/1/image",
                     "value": EARLIER_IMAGE}])
    assert done.returncode != 0 and "must use the pinned" in done.stderr, done.stderr
    assert f"gateway={other}" in done.stderr and f"side={EARLIER_IMAGE}" in done.stderr
    init = patched([{"op": "replace", "path": "/spec/initContainers/0/image", "value": other}])
    assert init.returncode != 0 and f"init={other}" in init.stderr, init.stderr
    debug = patched([{"op": "add", "path": "/spec/ephemeralContainers", "value": [
        {"name": "debug", "image": EARLIER_IMAGE, "command": ["sh"]}]}],
        "--subresource=ephemeralcontainers")
    assert debug.returncode != 0 and "must not have ephemeral containers" in debug.stderr, \
        debug.stderr
    spec = json.loads(cluster.kubectl("get", "pod/old-two-gw", "-n", ns, "-o", "json").stdout)
    assert [c["image"] for c in spec["spec"]["containers"] + spec["spec"]["initContainers"]] \
        == [EARLIER_IMAGE, other, EARLIER_IMAGE]
    assert not spec["spec"].get("ephemeralContainers")
    cluster.kubectl("delete", "pod", "old-two-gw", "-n", ns, "--wait=false")


POD_SPEC_VIOLATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "privileged": ({"container": {"securityContext": {"privileged": True}}},
                   "must not be privileged"),
    "capabilities": ({"container": {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}},
                     "must not add Linux capabilities"),
    "hostNetwork": ({"hostNetwork": True}, "must not share the node's network"),
    "hostPID": ({"hostPID": True}, "must not share the node's network, PID or IPC"),
    "hostIPC": ({"hostIPC": True}, "must not share the node's network, PID or IPC"),
    "hostPath": ({"volumes": [{"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}]},
                 "must not mount hostPath volumes"),
    "initContainer": ({"initContainers": [{"name": "init", "image": "busybox:1.36"}]},
                      "init=busybox:1.36"),
    "otherCommand": ({"container": {"command": ["kubectl", "get", "secrets"]}},
                     'whose command is ["/usr/bin/tini", "--", "wingman", "gateway"]'),
    "otherCommandUnderInit": ({"container": {"command": ["/usr/bin/tini", "--", "kubectl", "get",
                                                         "secrets"]}},
                              'whose command is ["/usr/bin/tini", "--", "wingman", "gateway"]'),
    # wingman as PID 1 would lose a SIGTERM that comes before its handler is installed
    "withoutInit": ({"container": {"command": ["wingman", "gateway"]}},
                    'whose command is ["/usr/bin/tini", "--", "wingman", "gateway"]'),
    "initOptions": ({"container": {"command": ["/usr/bin/tini", "-s", "--", "wingman",
                                               "gateway"]}},
                    'whose command is ["/usr/bin/tini", "--", "wingman", "gateway"]'),
    "extraArgs": ({"container": {"args": ["--anything"]}},
                  'whose command is ["/usr/bin/tini", "--", "wingman", "gateway"]'),
    # other code run with the gateway's rights by its one allowed command
    "pythonPath": ({"container": {"env": [{"name": "WINGMAN_NAMESPACE", "value": "x"},
                                          {"name": "PYTHONPATH", "value": "/tmp/evil"}]}},
                   "found: PYTHONPATH"),
    "preload": ({"container": {"env": [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}]}},
                "take only WINGMAN_* environment variables"),
    "envFrom": ({"container": {"envFrom": [{"configMapRef": {"name": "evil"}}]}},
                "have no envFrom and no workingDir"),
    "workingDir": ({"container": {"workingDir": "/tmp"}}, "have no envFrom and no workingDir"),
    "postStart": ({"container": {"lifecycle": {"postStart": {"exec": {
        "command": ["kubectl", "get", "secrets"]}}}}}, "no lifecycle hooks and no probes"),
    "execProbe": ({"container": {"livenessProbe": {"exec": {"command": ["sh", "-c", "id"]}}}},
                  "no lifecycle hooks and no probes"),
    "mountOverCode": ({"container": {"volumeMounts": [{"name": "x", "mountPath": "/opt/wingman"}]},
                       "volumes": [{"name": "x", "configMap": {"name": "evil"}}]},
                      "found: /opt/wingman"),
    "mountPreload": ({"container": {"volumeMounts": [
        {"name": "x", "mountPath": "/etc/ld.so.preload", "subPath": "preload"}]},
                      "volumes": [{"name": "x", "configMap": {"name": "evil"}}]},
                     "found: /etc/ld.so.preload"),
    "mountDotDot": ({"container": {"volumeMounts": [
        {"name": "x", "mountPath": "/etc/wingman/../../usr/lib"}]},
                     "volumes": [{"name": "x", "configMap": {"name": "evil"}}]},
                    "as a clean absolute path"),
    # the pod's own token: no automounted one, none for another audience or living longer
    "automountedToken": ({"automountServiceAccountToken": True},
                         "set automountServiceAccountToken to false (it is true)"),
    "automountUnset": ({"automountServiceAccountToken": None},
                       "set automountServiceAccountToken to false (it is unset)"),
    "tokenAudience": ({"volumes": [{"name": "sa", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "audience": "vault",
                                 "expirationSeconds": 600}}]}}]},
                      "found: volume 'sa' (audience 'vault', expirationSeconds 600)"),
    "tokenLong": ({"volumes": [{"name": "sa", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 601}}]}}]},
                  "found: volume 'sa' (audience '', expirationSeconds 601)"),
    # unset: the API server's default, an hour
    "tokenDefaultLife": ({"volumes": [{"name": "sa", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}}]}}]},
                         "found: volume 'sa' (audience '', expirationSeconds 3600)"),
}


@pytest.mark.parametrize("violation", sorted(POD_SPEC_VIOLATIONS))
def test_gateway_pod_spec_rules_bind_the_operator_too(
    cluster: LocalCluster, test_release: Release, violation: str,
) -> None:
    ns = test_release.namespace
    spec, message = POD_SPEC_VIOLATIONS[violation]
    job = job_manifest(f"bad-{violation.lower()}", **spec)
    pod = job["spec"]["template"]["spec"]
    for key in [k for k, v in pod.items() if v is None]:
        del pod[key]
    result = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                           input=dump(job))
    assert result.returncode != 0, f"{violation} was admitted"
    assert message in result.stderr, result.stderr


def test_the_operators_jobs_run_only_as_the_gateway_or_the_preview(
    cluster: LocalCluster, test_release: Release,
) -> None:
    """A Job of the operator's that ran as another ServiceAccount (the chat service's, which
    impersonates approvers; the namespace's default) would hand that identity's token to a pod
    the operator chose."""
    ns = test_release.namespace
    for account in ("wingman-chat", "default"):
        job = job_manifest(f"as-{account}", service_account=account)
        result = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                               input=dump(job))
        assert result.returncode != 0, f"a Job as {account} was admitted"
        assert "Jobs run only as wingman-gateway or wingman-preview, not as ServiceAccount " \
            f"'{account}'" in result.stderr, result.stderr
    unnamed = job_manifest("as-nobody")
    del unnamed["spec"]["template"]["spec"]["serviceAccountName"]
    result = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                           input=dump(unnamed))
    assert result.returncode != 0
    assert "not as ServiceAccount 'default'" in result.stderr, result.stderr


def test_nobody_creates_a_lasting_service_account_token_in_the_release_namespace(
    cluster: LocalCluster, test_release: Release,
) -> None:
    """The token controller would fill such a Secret with a token of the gateway (or the chat
    service) bound to no pod and never expiring; whoever created it reads it back."""
    ns = test_release.namespace
    for who in ("operator", "admin"):
        secret = {"apiVersion": "v1", "kind": "Secret",
                  "type": "kubernetes.io/service-account-token",
                  "metadata": {"name": f"lasting-{who}", "annotations": {
                      "kubernetes.io/service-account.name": "wingman-gateway"}}}
        if who == "operator":
            result = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f",
                                   "-", input=dump(secret))
        else:
            result = cluster.kubectl("create", "-n", ns, "-f", "-", input=dump(secret),
                                     check=False)
        assert result.returncode != 0, f"{who} created a service-account-token Secret"
        assert "kubernetes.io/service-account-token are refused in namespace " + ns \
            in result.stderr, result.stderr
        assert "kubectl create token" in result.stderr
        assert cluster.kubectl("get", "secret", f"lasting-{who}", "-n", ns,
                               check=False).returncode != 0
    opaque = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"},
              "stringData": {"k": "v"}}
    made = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                         input=dump(opaque))
    assert made.returncode == 0, made.stderr
    cluster.kubectl("delete", "secret", "plain", "-n", ns)


def test_only_the_operator_makes_a_secret_named_like_a_grants_token_secret(
    cluster: LocalCluster, test_release: Release,
) -> None:
    """A gateway pod binds the executor's tokens to ``<its Job>-token-<16 hex digits>``: a
    Secret of that name made by anyone else who holds the pod's token would keep such tokens
    valid after the operator ends the grant."""
    ns = test_release.namespace
    role = f"secret-writer-{_suffix()}"
    cluster.kubectl("create", "role", role, "-n", ns, "--verb=create,get,update,patch,delete",
                    "--resource=secrets")
    cluster.kubectl("create", "rolebinding", role, "-n", ns, f"--role={role}",
                    f"--user={OUTSIDER}")

    def secret(name: str) -> str:
        return dump({"apiVersion": "v1", "kind": "Secret", "type": names.SECRET_TYPE,
                     "metadata": {"name": name}, "stringData": {"token": "x"}})

    shaped = "x-token-0123456789abcdef"
    refused = cluster.kubectl("create", "-n", ns, "-f", "-", input=secret(shaped),
                              check=False, **_as("test", OUTSIDER))
    assert refused.returncode != 0, "another user created a token-shaped Secret"
    assert (f"only the Wingman operator (system:serviceaccount:{ns}:wingman-operator) may "
            f"create Secret '{shaped}' in namespace {ns}, not '{OUTSIDER}'") in refused.stderr, \
        refused.stderr
    assert "reserved for the token Secrets of ExecutionGrants" in refused.stderr
    other = cluster.kubectl("create", "-n", ns, "-f", "-", input=secret("x-token-other"),
                            check=False, **_as("test", OUTSIDER))
    assert other.returncode == 0, other.stderr
    # the operator creates it, labels it, and it and an admin delete it
    made = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                         input=secret(shaped))
    assert made.returncode == 0, made.stderr
    labelled = kubectl_as_sa(cluster, ns, "wingman-operator", "label", "secret", shaped, "-n",
                             ns, "note=seen")
    assert labelled.returncode == 0, labelled.stderr
    # nobody else changes it (its data, its finalizers), not even an admin
    for who in (_as("test", OUTSIDER), {}):
        changed = cluster.kubectl("patch", "secret", shaped, "-n", ns, "--type=merge", "-p",
                                  json.dumps({"metadata": {"finalizers": ["example.com/keep"]}}),
                                  check=False, **who)
        assert changed.returncode != 0, f"{who or 'admin'} changed the token-shaped Secret"
        assert f"may change Secret '{shaped}'" in changed.stderr, changed.stderr
    gone = kubectl_as_sa(cluster, ns, "wingman-operator", "delete", "secret", shaped, "-n", ns)
    assert gone.returncode == 0, gone.stderr
    assert kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                         input=secret(shaped)).returncode == 0
    assert cluster.kubectl("delete", "secret", shaped, "-n", ns, check=False).returncode == 0
    cluster.kubectl("delete", "secret", "x-token-other", "-n", ns)


def test_a_grant_deleted_with_orphans_leaves_its_token_secret_to_the_garbage_collector(
    cluster: LocalCluster, test_release: Release,
) -> None:
    """Deleting a grant with ``--cascade=orphan`` has the garbage collector remove the grant's
    owner reference from its token Secret: an UPDATE by another identity than the operator,
    which admission lets through because it only removes."""
    ns = test_release.namespace
    grant = f"orphan-{_suffix()}"
    cluster.kubectl("create", "-n", ns, "-f", "-", input=dump({
        "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
        "metadata": {"name": grant},
        "spec": {"approvalRef": {"name": "r"}, "command": "kubectl get pods"}}))
    uid = cluster.kubectl("get", "eg", grant, "-n", ns, "-o",
                          "jsonpath={.metadata.uid}").stdout
    name = names.token_secret_name(names.job_name(grant), "0123456789abcdef")
    made = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                         input=dump({
                             "apiVersion": "v1", "kind": "Secret", "type": names.SECRET_TYPE,
                             "metadata": {"name": name, "ownerReferences": [{
                                 "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                                 "name": grant, "uid": uid, "controller": True}]},
                             "stringData": {"token": "x"}}))
    assert made.returncode == 0, made.stderr
    cluster.kubectl("delete", "eg", grant, "-n", ns, "--cascade=orphan", "--wait=false")
    deadline = time.monotonic() + 60
    while True:
        owners = cluster.kubectl("get", "secret", name, "-n", ns, "-o",
                                 "jsonpath={.metadata.ownerReferences}").stdout
        if not owners:
            break
        assert time.monotonic() < deadline, f"the garbage collector left {owners}"
        time.sleep(0.5)
    assert cluster.kubectl("get", "eg", grant, "-n", ns, check=False).returncode != 0
    cluster.kubectl("delete", "secret", name, "-n", ns)


def test_docker_socket_is_the_only_hostpath_when_docker_is_enabled(
    cluster: LocalCluster, crds: Path,
) -> None:
    s = _suffix()
    with installed(cluster, "test", namespace=f"adm-docker-{s}",
                   target_namespace=f"adm-docker-apps-{s}",
                   values={"gateway.docker.enabled": True}) as release:
        ns = release.namespace
        sock = job_manifest("docker-sock", volumes=[
            {"name": "sock", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}}])
        ok = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                           input=dump(sock))
        assert ok.returncode == 0, ok.stderr
        root = job_manifest("host-root", volumes=[{"name": "root", "hostPath": {"path": "/"}}])
        bad = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "-n", ns, "-f", "-",
                            input=dump(root))
        assert bad.returncode != 0
        assert "no hostPath volume except the Docker socket" in bad.stderr


# --------------------------------------------------------------------------- the chart's notes


def test_install_notes_tell_how_to_submit_and_approve(
    cluster: LocalCluster, test_release: Release,
) -> None:
    notes = cluster.helm("get", "notes", "wingman", "-n", test_release.namespace).stdout
    assert f"kubectl wingman request -n {test_release.namespace} --env test" in notes
    assert f"kubectl wingman approve -n {test_release.namespace} NAME" in notes
    assert "kubectl wingman exec" in notes
    assert "approved automatically" in notes  # TEST auto-approves low/medium risk


def test_prd_notes_flag_the_placeholders_of_the_prd_values(
    cluster: LocalCluster, prd_release: Release,
) -> None:
    """manifests/prd/values.yaml pins an all-zero digest and documentation addresses; the
    install says so instead of leaving pods that cannot start or reach anything."""
    notes = cluster.helm("get", "notes", "wingman", "-n", prd_release.namespace).stdout
    assert "image.digest is the all-zero placeholder" in notes
    assert "192.0.2.10/32, a documentation address" in notes
    assert "198.51.100.20/32, a documentation address" in notes
    # and the API server accepted the NetworkPolicies the prd values enable
    names = cluster.kubectl("get", "networkpolicies", "-n", prd_release.namespace, "-o",
                            "name").stdout.split()
    assert sorted(names) == ["networkpolicy.networking.k8s.io/wingman-gateway",
                             "networkpolicy.networking.k8s.io/wingman-operator",
                             "networkpolicy.networking.k8s.io/wingman-preview"]


# --------------------------------------------------------------------------- gateway writes


def _as_token(cluster: LocalCluster, token: str, *args: str,
              input: str | None = None) -> Any:
    kubeconfig = cluster.token_kubeconfig(token, name="gateway")
    try:
        return subprocess.run([str(cluster.tool("kubectl")), "--kubeconfig", str(kubeconfig),
                               *args], input=input, capture_output=True, text=True, timeout=60,
                              env=cluster.env(kubeconfig), check=False)
    finally:
        kubeconfig.unlink(missing_ok=True)


def test_a_gateway_pod_writes_only_its_own_grants_status_and_only_burn_markers(
    cluster: LocalCluster, test_release: Release,
) -> None:
    ns = test_release.namespace
    for grant in ("mine", "other"):
        cluster.kubectl("create", "-n", ns, "-f", "-", input=dump({
            "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
            "metadata": {"name": grant},
            "spec": {"approvalRef": {"name": "r"}, "command": "kubectl get pods"}}))
        # what the operator records before it releases the grant's gateway Job
        cluster.kubectl("patch", "eg", grant, "-n", ns, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"phase": "TokenIssued",
                                                     "jobName": names.job_name(grant)}}))
    pod_name, bound = _gateway_pod_token(cluster, ns, names.job_name("mine"))
    running = json.dumps({"status": {"phase": "Running"}})

    def patch(token: str, grant: str) -> Any:
        return _as_token(cluster, token, "patch", "eg", grant, "-n", ns,
                         "--subresource=status", "--type=merge", "-p", running)

    own = patch(bound, "mine")
    assert own.returncode == 0, own.stderr
    other = patch(bound, "other")
    assert other.returncode != 0
    assert (f"gateway pod '{pod_name}' may write the status of its own grant only" in
            other.stderr), other.stderr
    # the same ServiceAccount without a pod (a token requested by hand) writes nothing
    unbound = cluster.sa_token(ns, "wingman-gateway", expiration_seconds=600)
    loose = patch(unbound, "mine")
    assert loose.returncode != 0 and "pod-bound ServiceAccount token" in loose.stderr

    def lease(name: str) -> Any:
        return _as_token(cluster, bound, "create", "-n", ns, "-f", "-", input=dump({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name}, "spec": {"holderIdentity": pod_name}}))

    assert lease("wingman-burn-0123456789abcdef").returncode == 0
    squatter = lease("wingman-operator-leader")
    assert squatter.returncode != 0 and "only burn markers" in squatter.stderr


def test_a_gateway_pod_writes_running_over_its_own_grant_issued_on_its_claim_only(
    cluster: LocalCluster, test_release: Release,
) -> None:
    """A grant whose token the operator issued on its claim has a stored status without
    ``jobName`` (still Pending): its Job is ``<grant>-gw`` for a name of at most 54 characters,
    and only that Job's pod writes its status, recording no other Job; a longer name's Job
    cannot be derived, and its status stays the operator's until it records the Job."""
    ns = test_release.namespace
    s = _suffix()
    mine, other, long = f"claimed-{s}", f"other-{s}", f"claimed-{s}-" + "x" * 38
    assert len(long) == 55 and names.job_name(long) != long + "-gw"
    for grant in (mine, other, long):
        cluster.kubectl("create", "-n", ns, "-f", "-", input=dump({
            "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
            "metadata": {"name": grant},
            "spec": {"approvalRef": {"name": "r"}, "command": "kubectl get pods"}}))
        cluster.kubectl("patch", "eg", grant, "-n", ns, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"phase": "Pending"}}))
    pod_name, bound = _gateway_pod_token(cluster, ns, names.job_name(mine))

    def running(grant: str, job: str, token: str = bound) -> Any:
        status = {"phase": "Running", "tokenSHA256": "sha256:" + "a" * 64,
                  "tokenExpirationTime": "2030-01-01T00:00:00Z", "jobName": job,
                  "tokenSecretName": f"{job}-token-0123456789abcdef"}
        return _as_token(cluster, token, "patch", "eg", grant, "-n", ns,
                         "--subresource=status", "--type=merge",
                         "-p", json.dumps({"status": status}))

    # not another Job in its own grant's status
    forged = running(mine, names.job_name(other))
    assert forged.returncode != 0
    assert (f"gateway pod '{pod_name}' may record only its own grant's gateway Job in "
            f"status.jobName: ExecutionGrant '{mine}' belongs to Job '{mine}-gw', not "
            f"'{other}-gw'") in forged.stderr, forged.stderr
    # not another grant's status, its Job derived from its name
    theirs = running(other, names.job_name(other))
    assert theirs.returncode != 0
    assert (f"gateway pod '{pod_name}' may write the status of its own grant only" in
            theirs.stderr and f"belongs to Job '{other}-gw'" in theirs.stderr), theirs.stderr
    assert cluster.kubectl("get", "eg", other, "-n", ns, "-o",
                           "jsonpath={.status.phase}").stdout == "Pending"
    # its own: Running with the token's fields over the Pending status
    own = running(mine, names.job_name(mine))
    assert own.returncode == 0, own.stderr
    assert cluster.kubectl("get", "eg", mine, "-n", ns, "-o",
                           "jsonpath={.status.phase}/{.status.jobName}").stdout == \
        f"Running/{mine}-gw"
    # a name over 54 characters: no Job can be derived, not even by the pod of its own Job
    long_pod, long_token = _gateway_pod_token(cluster, ns, names.job_name(long))
    refused = running(long, names.job_name(long), token=long_token)
    assert refused.returncode != 0
    assert (f"gateway pod '{long_pod}' may write the status of its own grant only" in
            refused.stderr and "its name is longer than 54 characters" in refused.stderr), \
        refused.stderr
    # a shorter grant named as the long grant's hashed Job is named (its base ends in '-' and
    # nine hex digits): not related to that Job by its name, so the long grant's pod cannot
    # write it (nor can any pod: such a grant's Job is hashed too and recorded with TokenIssued)
    base = names.job_name(long)[:-len("-gw")]
    assert len(base) <= 54 and not names.derived_job(base)
    cluster.kubectl("create", "-n", ns, "-f", "-", input=dump({
        "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
        "metadata": {"name": base},
        "spec": {"approvalRef": {"name": "r"}, "command": "kubectl get pods"}}))
    cluster.kubectl("patch", "eg", base, "-n", ns, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"phase": "Pending"}}))
    squatted = running(base, names.job_name(long), token=long_token)
    assert squatted.returncode != 0
    assert "ends in '-' and nine hex digits" in squatted.stderr, squatted.stderr
    assert cluster.kubectl("get", "eg", base, "-n", ns, "-o",
                           "jsonpath={.status.phase}").stdout == "Pending"


def test_a_gateway_pod_neither_rewrites_a_grant_closed_without_its_job_nor_drops_its_job(
    cluster: LocalCluster, test_release: Release,
) -> None:
    """Only a grant still Pending is related to its gateway Job by its name: once the operator
    closed it before any token was recorded in its status (``Denied``: its claim never issued
    one), the pod of ``<grant>-gw`` cannot write its status, say over it ``Succeeded`` with an
    output nothing produced; and a Job its status records stays recorded (not removed, not
    emptied), so the grant is never related to a Job by its name again."""
    ns = test_release.namespace
    grant = f"closed-{_suffix()}"
    cluster.kubectl("create", "-n", ns, "-f", "-", input=dump({
        "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
        "metadata": {"name": grant},
        "spec": {"approvalRef": {"name": "r"}, "command": "kubectl get pods"}}))

    def operator_writes(status: dict[str, Any]) -> None:
        cluster.kubectl("patch", "eg", grant, "-n", ns, "--subresource=status",
                        "--type=merge", "-p", json.dumps({"status": status}))

    operator_writes({"phase": "Denied", "reason": "CommandAlreadyGranted"})
    pod_name, bound = _gateway_pod_token(cluster, ns, names.job_name(grant))

    def pod_writes(status: dict[str, Any]) -> Any:
        return _as_token(cluster, bound, "patch", "eg", grant, "-n", ns, "--subresource=status",
                         "--type=merge", "-p", json.dumps({"status": status}))

    forged = pod_writes({"phase": "Succeeded", "reason": "Executed", "exitCode": 0,
                         "output": "done"})
    assert forged.returncode != 0
    assert (f"gateway pod '{pod_name}' may write the status of its own grant only" in
            forged.stderr and f"ExecutionGrant '{grant}' records no gateway Job "
            "(status.jobName) and is Denied: the operator closed it" in forged.stderr), \
        forged.stderr
    assert cluster.kubectl("get", "eg", grant, "-n", ns, "-o",
                           "jsonpath={.status.phase}").stdout == "Denied"
    # a status that records the Job: the pod writes it, but never without the Job
    operator_writes({"phase": "Running", "jobName": names.job_name(grant)})
    for dropped in (None, ""):
        refused = pod_writes({"phase": "Succeeded", "jobName": dropped})
        assert refused.returncode != 0
        assert (f"ExecutionGrant '{grant}' belongs to Job '{grant}-gw', which its status "
                "records and keeps (status.jobName may not be removed or emptied)") in \
            refused.stderr, refused.stderr
    assert pod_writes({"phase": "Succeeded", "reason": "Executed"}).returncode == 0
    assert cluster.kubectl("get", "eg", grant, "-n", ns, "-o",
                           "jsonpath={.status.phase}/{.status.jobName}").stdout == \
        f"Succeeded/{grant}-gw"


def _operator_secret(cluster: LocalCluster, ns: str, name: str) -> None:
    """An empty Secret ``name`` made by the operator (only it may make one named like a
    grant's token Secret, ``<job>-token-<16 hex digits>``)."""
    made = kubectl_as_sa(cluster, ns, "wingman-operator", "create", "secret", "generic", name,
                         "-n", ns)
    assert made.returncode == 0, made.stderr


def _audiences(token: str) -> list[str]:
    """The ``aud`` claim of a ServiceAccount token (a JWT; read, not verified)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    aud = claims["aud"]
    return [aud] if isinstance(aud, str) else list(aud)


def test_a_gateway_pod_gets_only_short_lived_executor_tokens_and_no_pod_runs_as_it(
    cluster: LocalCluster, test_release: Release,
) -> None:
    ns, target = test_release.namespace, test_release.target_namespace
    grant = f"tok-{_suffix()}"
    job = names.job_name(grant)
    pod_name, gateway = _gateway_pod_token(cluster, ns, job)
    # the grant's token Secret, as the operator names it (after the Job)
    own = names.token_secret_name(job, uuid.uuid4().hex[:16])
    _operator_secret(cluster, ns, own)

    def request(account: str, duration: str = "10m", *, token: str = gateway,
                bound: tuple[str, str] | None = ("Secret", own),
                audiences: tuple[str, ...] = ()) -> Any:
        args = [f"--bound-object-kind={bound[0]}", f"--bound-object-name={bound[1]}"] \
            if bound else []
        return _as_token(cluster, token, "create", "token", account, "-n", ns,
                         f"--duration={duration}", *args,
                         *(f"--audience={a}" for a in audiences))

    issued = request("wingman-executor")
    assert issued.returncode == 0, issued.stderr
    executor = issued.stdout.strip()
    # the executor's token acts in the target namespace, and nowhere in the release namespace
    can = _as_token(cluster, executor, "auth", "can-i", "patch", "deployments", "-n", target)
    assert can.stdout.strip() == "yes", can.stdout + can.stderr
    for verb, resource in (("get", "executiongrants"), ("patch", "executiongrants/status"),
                           ("create", "leases"), ("create", "serviceaccounts/token")):
        cannot = _as_token(cluster, executor, "auth", "can-i", verb, resource, "-n", ns)
        assert cannot.stdout.strip() == "no", (verb, resource, cannot.stdout)
    # a token not bound to the pod lives at most the longest command deadline and a minute
    lasting = request("wingman-executor", "2h")
    assert lasting.returncode != 0
    assert "may request tokens only of ServiceAccount wingman-executor, expiring within " \
           "3660 s" in lasting.stderr, lasting.stderr
    # ... and only as long as the pod's own grant's token Secret, named after the pod's Job:
    # not bound to nothing, nor to another Secret of the namespace (another grant's, one named
    # after the grant as earlier releases did), nor to anything else
    nonce = uuid.uuid4().hex[:16]
    others = {"nothing": None,
              f"'v1/Secret' '{names.token_secret_name(names.job_name('other'), nonce)}'":
                  ("Secret", names.token_secret_name(names.job_name("other"), nonce)),
              f"'v1/Secret' '{grant}-token-{nonce}'": ("Secret", f"{grant}-token-{nonce}"),
              f"'v1/Secret' '{job}-token-{nonce}x'": ("Secret", f"{job}-token-{nonce}x"),
              f"'v1/Secret' '{job}-token-{nonce[:15]}g'": ("Secret",
                                                         f"{job}-token-{nonce[:15]}g"),
              f"'v1/Pod' '{pod_name}'": ("Pod", pod_name)}
    for bound in others.values():
        if bound is not None and bound[0] == "Secret":  # they exist: only admission refuses
            _operator_secret(cluster, ns, bound[1])
    for shown, bound in others.items():
        stray = request("wingman-executor", bound=bound)
        assert stray.returncode != 0, shown
        message = " ".join(stray.stderr.split())
        assert (f"gateway pod '{pod_name}' may request tokens of wingman-executor only bound "
                f"to its own grant's token Secret (spec.boundObjectRef: apiVersion v1, kind "
                f"Secret, name '{job}-token-<16 hex digits>'), so that the token dies with the "
                f"grant; this request was bound to {shown}; ") in message, message
        assert "create a new grant" in message, message
    # ... and for the API server's own audiences only, those it fills in when none is asked
    # for (what the gateway does): not for another service that trusts the cluster's issuer
    api = _audiences(executor)
    explicit = request("wingman-executor", audiences=tuple(api))
    assert explicit.returncode == 0, explicit.stderr
    for audiences in (("vault",), (*api, "sts.amazonaws.com")):
        replayable = request("wingman-executor", audiences=audiences)
        assert replayable.returncode != 0, audiences
        message = " ".join(replayable.stderr.split())
        assert (f"gateway pod '{pod_name}' may request tokens of wingman-executor only for the "
                "API server's own audiences (leave spec.audiences unset; the chart value "
                "admission.executorTokenAudiences lists them: "
                "'https://kubernetes.default.svc.cluster.local', "
                "'https://kubernetes.default.svc'); this request was for '"
                + "', '".join(audiences) + "': if that is what the API server fills in") \
            in message, message
    # only from a gateway pod: the gateway account's token not bound to a pod gets none
    loose = request("wingman-executor",
                    token=cluster.sa_token(ns, "wingman-gateway", expiration_seconds=600))
    assert loose.returncode != 0 and "pod-bound ServiceAccount token" in loose.stderr, \
        loose.stderr
    # any other account: refused by RBAC (resourceNames)
    other = request("wingman-gateway")
    assert other.returncode != 0 and "forbidden" in other.stderr.lower(), other.stderr
    # and nobody, not even an administrator, runs a pod as the executor
    pod = cluster.kubectl("create", "-n", ns, "-f", "-", check=False, input=dump(
        pod_manifest(f"exec-{_suffix()}", service_account="wingman-executor")))
    assert pod.returncode != 0
    assert "no pod may run as ServiceAccount 'wingman-executor'" in pod.stderr, pod.stderr
    # ... nor does anyone but the gateway request its tokens, whatever RBAC lets them do
    minted = cluster.kubectl("create", "token", "wingman-executor", "-n", ns,
                             "--duration=10m", "--bound-object-kind=Secret",
                             f"--bound-object-name={own}", check=False)
    assert minted.returncode != 0
    assert "only the gateway requests tokens of ServiceAccount 'wingman-executor'" \
        in minted.stderr, minted.stderr


def _executor_token(cluster: LocalCluster, ns: str) -> str:
    """A token of wingman-executor as the gateway obtains it: requested by a gateway pod,
    bound to its own grant's token Secret (the only way admission lets anyone have one)."""
    job = names.job_name(f"exe-{_suffix()}")
    _, gateway = _gateway_pod_token(cluster, ns, job)
    secret = names.token_secret_name(job, uuid.uuid4().hex[:16])
    _operator_secret(cluster, ns, secret)
    issued = _as_token(cluster, gateway, "create", "token", "wingman-executor", "-n", ns,
                       "--duration=10m", "--bound-object-kind=Secret",
                       f"--bound-object-name={secret}")
    assert issued.returncode == 0, issued.stderr
    return str(issued.stdout.strip())


def test_an_approved_command_restarts_scales_and_sets_images_but_switches_no_identity(
    cluster: LocalCluster, test_release: Release,
) -> None:
    ns, target = test_release.namespace, test_release.target_namespace
    name = f"web-{_suffix()}"
    cluster.kubectl("create", "serviceaccount", "admin", "-n", target, check=False)
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"automountServiceAccountToken": False,
                                       "containers": [{"name": "web", "image": "nginx:1"}]}}}}))
    executor = _executor_token(cluster, ns)

    def run(*args: str) -> Any:
        return _as_token(cluster, executor, *args, "-n", target)

    def patch(spec: dict[str, Any]) -> Any:
        return run("patch", "deployment", name, "--type=strategic", "-p",
                   json.dumps({"spec": {"template": {"spec": spec}}}))

    # what the default rules are for: restart, scale, a new image
    for allowed in (run("rollout", "restart", f"deployment/{name}"),
                    run("scale", f"deployment/{name}", "--replicas=2"),
                    run("set", "image", f"deployment/{name}", "web=nginx:2")):
        assert allowed.returncode == 0, allowed.stderr
    # another ServiceAccount: refused, by either field
    for switched in (patch({"serviceAccountName": "admin"}),
                     run("set", "serviceaccount", f"deployment/{name}", "admin")):
        assert switched.returncode != 0
        message = " ".join(switched.stderr.split())
        assert ("an approved command (ServiceAccount wingman-executor) may not change the "
                f"ServiceAccount the pods of Deployment '{target}/{name}' run as, from "
                "'default' to 'admin': they would act as another, possibly more privileged "
                "identity") in message, message
        assert "have the workload's owners make this change with their own rights" in message
    # a token, a Secret or the node the pods did not have: refused, each named
    container = {"name": "web", "image": "nginx:2"}
    escalations: dict[str, dict[str, Any]] = {
        "automountServiceAccountToken true (was false)": {"automountServiceAccountToken": True},
        "hostNetwork": {"hostNetwork": True},
        "privileged container 'web'": {"containers": [
            {**container, "securityContext": {"privileged": True}}]},
        "capability SYS_ADMIN in container 'web'": {"containers": [
            {**container, "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]},
        "hostPath volume 'root' (/)": {"volumes": [{"name": "root",
                                                    "hostPath": {"path": "/"}}]},
        "Secret 'admin-token'": {"volumes": [{"name": "t",
                                              "secret": {"secretName": "admin-token"}}]},
        "a service-account token in volume 'sa'": {"volumes": [{"name": "sa", "projected": {
            "sources": [{"serviceAccountToken": {"path": "token"}}]}}]},
    }
    for shown, spec in escalations.items():
        refused = patch(spec)
        assert refused.returncode != 0, shown
        message = " ".join(refused.stderr.split())
        assert ("an approved command (ServiceAccount wingman-executor) may not give the pods "
                f"of Deployment '{target}/{name}' what they did not have: {shown} ") \
            in message, message
    # an administrator changes the workload's identity and host access with their own rights
    admin = cluster.kubectl("patch", "deployment", name, "-n", target, "--type=strategic",
                            "-p", json.dumps({"spec": {"template": {"spec": {
                                "serviceAccountName": "admin", "hostNetwork": True}}}}),
                            check=False)
    assert admin.returncode == 0, admin.stderr
    # ... after which the executor still restarts it and sets its image (nothing added);
    # kubectl refuses a second restart within the second of the first (its restartedAt)
    time.sleep(1.1)
    for allowed in (run("rollout", "restart", f"deployment/{name}"),
                    run("set", "image", f"deployment/{name}", "web=nginx:3")):
        assert allowed.returncode == 0, allowed.stderr
    # the preview's dry run of the same command is refused alike, before anyone approves it
    preview = cluster.sa_token(ns, "wingman-preview", expiration_seconds=600)
    previewed = _as_token(cluster, preview, "set", "serviceaccount", f"deployment/{name}",
                          "default", "--dry-run=server", "-n", target)
    assert previewed.returncode != 0
    assert ("the preview of an approved command (ServiceAccount wingman-preview) may not "
            f"change the ServiceAccount the pods of Deployment '{target}/{name}' run as, from "
            "'admin' to 'default'") in " ".join(previewed.stderr.split()), previewed.stderr
    new_image = _as_token(cluster, preview, "set", "image", f"deployment/{name}",
                          "web=nginx:4", "--dry-run=server", "-n", target)
    assert new_image.returncode == 0, new_image.stderr
    # a CronJob's pod template is refused the same (a target that grants patching it)
    cron = f"cron-{_suffix()}"
    cluster.kubectl("create", "cronjob", cron, "-n", target, "--image=busybox:1",
                    "--schedule=0 0 * * *")
    cluster.kubectl("create", "role", cron, "-n", target, "--verb=get,patch",
                    "--resource=cronjobs.batch")
    cluster.kubectl("create", "rolebinding", cron, "-n", target, f"--role={cron}",
                    f"--serviceaccount={ns}:wingman-executor")
    deadline = time.monotonic() + 10
    while run("auth", "can-i", "patch", f"cronjob/{cron}").stdout.strip() != "yes":
        assert time.monotonic() < deadline, "the executor was not granted patch on cronjobs"
        time.sleep(0.2)
    cron_patch = run("patch", "cronjob", cron, "--type=merge", "-p", json.dumps(
        {"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "serviceAccountName": "admin"}}}}}}))
    assert cron_patch.returncode != 0
    assert (f"ServiceAccount the pods of CronJob '{target}/{cron}' run as, from 'default' to "
            "'admin'") in " ".join(cron_patch.stderr.split()), cron_patch.stderr
    suspended = run("patch", "cronjob", cron, "--type=merge", "-p",
                    json.dumps({"spec": {"suspend": True}}))
    assert suspended.returncode == 0, suspended.stderr


@pytest.fixture(scope="module")
def executor(cluster: LocalCluster, test_release: Release) -> Any:
    """Run kubectl in the test release's target namespace as an approved command does: with a
    token of wingman-executor, which here may also patch the other workload controllers (a
    target's rules can grant it)."""
    ns, target = test_release.namespace, test_release.target_namespace
    name = f"workloads-{_suffix()}"
    cluster.kubectl("create", "role", name, "-n", target, "--verb=get,list,patch,update",
                    "--resource=statefulsets.apps,daemonsets.apps,statefulsets.apps/scale,"
                    "jobs.batch,replicationcontrollers,replicationcontrollers/scale")
    cluster.kubectl("create", "rolebinding", name, "-n", target, f"--role={name}",
                    f"--serviceaccount={ns}:wingman-executor")
    token = _executor_token(cluster, ns)

    def run(*args: str) -> Any:
        return _as_token(cluster, token, *args, "-n", target)

    deadline = time.monotonic() + 10
    while run("auth", "can-i", "patch", "jobs.batch").stdout.strip() != "yes":
        assert time.monotonic() < deadline, "the executor was not granted patch on jobs"
        time.sleep(0.2)
    return run


def _refused(result: Any, workload: str, shown: str) -> None:
    assert result.returncode != 0, shown
    message = " ".join(result.stderr.split())
    assert ("an approved command (ServiceAccount wingman-executor) may not give the pods of "
            f"{workload} what they did not have: {shown} (") in message, message


def test_an_approved_command_weakens_no_isolation_and_picks_no_node(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    target = test_release.target_namespace
    name = f"locked-{_suffix()}"
    hardened = {"runAsNonRoot": True, "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}}
    web = {"name": "web", "image": "nginx:1",
           "securityContext": {"allowPrivilegeEscalation": False}}
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"automountServiceAccountToken": False,
                                       "securityContext": hardened,
                                       "hostUsers": False,
                                       "initContainers": [{"name": "init",
                                                           "image": "busybox:1"}],
                                       "containers": [web]}}}}))
    workload = f"Deployment '{target}/{name}'"

    def patch(template: dict[str, Any]) -> Any:
        return executor("patch", "deployment", name, "--type=strategic", "-p",
                        json.dumps({"spec": {"template": template}}))

    both = "in container 'web' (was {0}), {1} in container 'init' (was {0})"
    escalations: dict[str, dict[str, Any]] = {
        # weaker isolation, pod level (every container) or one container's
        "seccomp profile Unconfined " + both.format("RuntimeDefault", "seccomp profile Unconfined"):
            {"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}},
        "seccomp profile Localhost profiles/any.json in container 'web' (was RuntimeDefault)":
            {"spec": {"containers": [{"name": "web", "securityContext": {"seccompProfile": {
                "type": "Localhost", "localhostProfile": "profiles/any.json"}}}]}},
        "AppArmor profile Unconfined in container 'web' (was unset)":
            {"spec": {"containers": [{"name": "web", "securityContext": {
                "appArmorProfile": {"type": "Unconfined"}}}]}},
        "AppArmor profile Unconfined in container 'init' (was unset)":
            {"metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/init": "unconfined"}}},
        "SELinux options (user:role:type:level) ::spc_t: in container 'web' (was unset)":
            {"spec": {"containers": [{"name": "web", "securityContext": {
                "seLinuxOptions": {"type": "spc_t"}}}]}},
        "allowPrivilegeEscalation true in container 'web' (was false)":
            {"spec": {"containers": [{"name": "web", "securityContext": {
                "allowPrivilegeEscalation": True}}]}},
        "runAsUser 0 " + both.format("1000", "runAsUser 0"):
            {"spec": {"securityContext": {"runAsUser": 0}}},
        "runAsNonRoot false in container 'init' (was true)":
            {"spec": {"initContainers": [{"name": "init", "securityContext": {
                "runAsNonRoot": False}}]}},
        "procMount Unmasked in container 'web' (was unset)":
            {"spec": {"containers": [{"name": "web", "securityContext": {
                "procMount": "Unmasked"}}]}},
        "hostUsers true (was false: the pods would share the node's user namespace)":
            {"spec": {"hostUsers": True}},
        "privileged container 'init'":
            {"spec": {"initContainers": [{"name": "init", "securityContext": {
                "privileged": True}}]}},
        "sysctl kernel.shm_rmid_forced=1":
            {"spec": {"securityContext": {"sysctls": [{"name": "kernel.shm_rmid_forced",
                                                        "value": "1"}]}}},
        # a Secret by another way, and node access by a driver
        "imagePullSecret 'regcred'": {"spec": {"imagePullSecrets": [{"name": "regcred"}]}},
        "csi volume 'vault' (driver secrets-store.csi.k8s.io)": {"spec": {"volumes": [
            {"name": "vault", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": True,
                                      "volumeAttributes": {"secretProviderClass": "db"}}}]}},
        # a node of the command's choosing
        "nodeName 'control-plane-1' (was '')": {"spec": {"nodeName": "control-plane-1"}},
        "toleration of taint 'node-role.kubernetes.io/control-plane'": {"spec": {
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                             "operator": "Exists", "effect": "NoSchedule"}]}},
        "nodeSelector node-role.kubernetes.io/control-plane=": {"spec": {
            "nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}},
        "a new nodeAffinity": {"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane",
                                       "operator": "Exists"}]}]}}}}},
    }
    for shown, template in escalations.items():
        _refused(patch(template), workload, shown)
    # what the executor is for still works
    for allowed in (executor("rollout", "restart", f"deployment/{name}"),
                    executor("scale", f"deployment/{name}", "--replicas=2"),
                    executor("set", "image", f"deployment/{name}", "web=nginx:2",
                             "init=busybox:2")):
        assert allowed.returncode == 0, allowed.stderr
    # a workload that already runs so (its owners changed it) keeps being restarted and
    # getting new images
    cluster.kubectl("patch", "deployment", name, "-n", target, "--type=strategic", "-p",
                    json.dumps({"spec": {"template": {"spec": {
                        "nodeName": "control-plane-1",
                        "securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                                            "seccompProfile": {"type": "Unconfined"}},
                        "containers": [{"name": "web", "securityContext": {
                            "allowPrivilegeEscalation": True}}]}}}}))
    time.sleep(1)  # kubectl triggers one restart a second
    for allowed in (executor("rollout", "restart", f"deployment/{name}"),
                    executor("set", "image", f"deployment/{name}", "web=nginx:3")):
        assert allowed.returncode == 0, allowed.stderr
    # ... and going back to the node's seccomp default from Unconfined weakens nothing
    back = patch({"spec": {"securityContext": {"seccompProfile": None}}})
    assert back.returncode == 0, back.stderr


def test_an_approved_command_removes_a_users_id_only_where_run_as_non_root_holds(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """Without runAsUser a container runs as its image's user, root for many: removing a
    non-root runAsUser is refused, but not for a container that runAsNonRoot: true (its own,
    else the pod's) still covers, which the kubelet starts only as another user."""
    target = test_release.target_namespace
    name = f"nonroot-{_suffix()}"
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "automountServiceAccountToken": False,
                     "securityContext": {"runAsUser": 1000},
                     "initContainers": [{"name": "init", "image": "busybox:1"}],
                     "containers": [{"name": "web", "image": "nginx:1",
                                     "securityContext": {"runAsNonRoot": True}}]}}}}))
    workload = f"Deployment '{target}/{name}'"
    spec = "/spec/template/spec"
    no_user = {"op": "remove", "path": f"{spec}/securityContext/runAsUser"}

    def json_patch(*ops: dict[str, Any]) -> Any:
        return executor("patch", "deployment", name, "--type=json", "-p", json.dumps(ops))

    # web runs as non-root by its own setting; init has none
    only_init = json_patch(no_user)
    _refused_all(only_init, workload, "runAsUser unset in container 'init' (was 1000)")
    assert "runAsUser unset in container 'web'" not in " ".join(only_init.stderr.split())
    # the pod's runAsNonRoot true does not hold where the container's own says false
    _refused_all(json_patch(no_user, {"op": "add", "path": f"{spec}/securityContext/runAsNonRoot",
                                      "value": True},
                            {"op": "replace", "value": False,
                             "path": f"{spec}/containers/0/securityContext/runAsNonRoot"}),
                 workload, "runAsUser unset in container 'web' (was 1000)",
                 "runAsNonRoot false in container 'web' (was true)")
    # runAsNonRoot true for both, by the pod's setting for init
    allowed = json_patch(no_user, {"op": "add", "path": f"{spec}/securityContext/runAsNonRoot",
                                   "value": True})
    assert allowed.returncode == 0, allowed.stderr


def test_an_approved_command_gives_back_no_capability_a_container_dropped(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """Dropped capabilities stay dropped: removing a drop gives the container the runtime's
    defaults back (NET_RAW, SETUID, ...), whether by a JSON patch, a strategic merge patch or a
    container renamed (a new container drops what every old one dropped)."""
    target = test_release.target_namespace
    name = f"caps-{_suffix()}"
    dropped = {"capabilities": {"drop": ["ALL"]}}
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"automountServiceAccountToken": False,
                                       "containers": [{"name": "web", "image": "nginx:1",
                                                       "securityContext": dropped}]}}}}))
    workload = f"Deployment '{target}/{name}'"
    container = "/spec/template/spec/containers/0"

    def json_patch(*ops: dict[str, Any]) -> Any:
        return executor("patch", "deployment", name, "--type=json", "-p", json.dumps(ops))

    _refused(json_patch({"op": "remove", "path": f"{container}/securityContext/capabilities"}),
             workload, "capability ALL no longer dropped in container 'web'")
    _refused(executor("patch", "deployment", name, "--type=strategic", "-p", json.dumps(
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "securityContext": {
            "capabilities": {"drop": ["NET_RAW"]}}}]}}}})),
             workload, "capability ALL no longer dropped in container 'web'")
    _refused(json_patch({"op": "replace", "path": f"{container}/name", "value": "web2"},
                        {"op": "remove", "path": f"{container}/securityContext"}),
             workload, "capability ALL no longer dropped in container 'web2'")
    # dropping more, a new image and a renamed container that drops as much still pass
    for allowed in (
        json_patch({"op": "add", "path": f"{container}/securityContext/capabilities/drop/-",
                    "value": "NET_RAW"}),
        executor("set", "image", f"deployment/{name}", "web=nginx:2"),
        json_patch({"op": "replace", "path": f"{container}/name", "value": "web2"}),
    ):
        assert allowed.returncode == 0, allowed.stderr


def test_an_approved_command_adds_a_capability_the_same_however_it_is_spelled(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """The runtimes read an added capability's name in any case, ALL as any-case all, and
    CRI-O reads CAP_X as X: a capability the pods had, spelled otherwise, is no new one, and a
    new one is refused however it is spelled. A capability the pods had only as CAP_X
    (containerd prefixes CAP_ again, so it gave them nothing there) is new as X."""
    target = test_release.target_namespace
    name = f"spelled-{_suffix()}"
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "automountServiceAccountToken": False,
                     "containers": [{"name": "web", "image": "nginx:1", "securityContext": {
                         "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}}}}))
    workload = f"Deployment '{target}/{name}'"

    def add(*caps: str, admin: bool = False) -> Any:
        patch = json.dumps({"spec": {"template": {"spec": {"containers": [{
            "name": "web", "securityContext": {"capabilities": {"drop": ["ALL"],
                                                                "add": list(caps)}}}]}}}})
        if admin:  # the workload's owners
            return cluster.kubectl("patch", "deployment", name, "-n", target,
                                   "--type=strategic", "-p", patch)
        return executor("patch", "deployment", name, "--type=strategic", "-p", patch)

    for new in ("CAP_SYS_ADMIN", "cap_sys_admin", "CAP_ALL", "all"):
        _refused(add("NET_BIND_SERVICE", new), workload,
                 f"capability {new} in container 'web'")
    for same in ("Net_Bind_Service", "NET_BIND_SERVICE", "CAP_NET_BIND_SERVICE",
                 "cap_net_bind_service"):
        allowed = add(same)
        assert allowed.returncode == 0, (same, allowed.stderr)
    add("CAP_NET_ADMIN", admin=True)
    _refused(add("NET_ADMIN"), workload, "capability NET_ADMIN in container 'web'")
    kept = add("cap_net_admin")
    assert kept.returncode == 0, kept.stderr
    add("ALL", admin=True)
    for same in ("all", "ALL", "CAP_ALL"):
        allowed = add(same)
        assert allowed.returncode == 0, (same, allowed.stderr)


def test_an_approved_command_leaves_a_sandbox_and_process_isolation_as_they_are(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """A RuntimeClass (a gVisor or Kata sandbox) is isolation as much as a seccomp profile, and
    a shared process namespace lets a container read another's environment and files."""
    target = test_release.target_namespace
    name = f"sandboxed-{_suffix()}"
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"automountServiceAccountToken": False,
                                       "runtimeClassName": "gvisor",
                                       "containers": [{"name": "web", "image": "nginx:1"}]}}}}))
    workload = f"Deployment '{target}/{name}'"

    def json_patch(*ops: dict[str, Any]) -> Any:
        return executor("patch", "deployment", name, "--type=json", "-p", json.dumps(ops))

    _refused(json_patch({"op": "remove", "path": "/spec/template/spec/runtimeClassName"}),
             workload, "runtimeClassName unset (was 'gvisor')")
    _refused(json_patch({"op": "replace", "path": "/spec/template/spec/runtimeClassName",
                         "value": "runc"}), workload, "runtimeClassName 'runc' (was 'gvisor')")
    _refused(json_patch({"op": "add", "path": "/spec/template/spec/shareProcessNamespace",
                         "value": True}), workload, "shareProcessNamespace")
    for allowed in (executor("set", "image", f"deployment/{name}", "web=nginx:2"),
                    executor("rollout", "restart", f"deployment/{name}")):
        assert allowed.returncode == 0, allowed.stderr


def test_an_approved_command_adds_no_root_group_other_claim_or_priority(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """The root group (files of group 0 on the node and in volumes), another workload's
    PersistentVolumeClaim (its data), an ephemeral volume bound to existing storage, or another
    PriorityClass (preempting other workloads' pods) are as much a change of isolation as
    running as root."""
    target = test_release.target_namespace
    name = f"grouped-{_suffix()}"
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "automountServiceAccountToken": False,
                     "priorityClassName": "batch-low",
                     "securityContext": {"runAsGroup": 1000, "fsGroup": 1000,
                                         "supplementalGroups": [1000]},
                     "volumes": [{"name": "data",
                                  "persistentVolumeClaim": {"claimName": "web-data"}}],
                     "containers": [{"name": "web", "image": "nginx:1", "securityContext": {
                         "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}}}}))
    workload = f"Deployment '{target}/{name}'"

    def patch(spec: dict[str, Any]) -> Any:
        return executor("patch", "deployment", name, "--type=strategic", "-p",
                        json.dumps({"spec": {"template": {"spec": spec}}}))

    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    escalations: list[tuple[str, dict[str, Any]]] = [
        ("runAsGroup 0 in container 'web' (was 1000)",
         {"securityContext": {"runAsGroup": 0}}),
        ("runAsGroup 0 in container 'web' (was 1000)",
         {"containers": [{"name": "web", "securityContext": {"runAsGroup": 0}}]}),
        ("fsGroup 0 (was 1000)", {"securityContext": {"fsGroup": 0}}),
        ("supplementalGroups 0 (the root group)",
         {"securityContext": {"supplementalGroups": [1000, 0]}}),
        ("PersistentVolumeClaim 'db-data' in volume 'db'",
         {"volumes": [{"name": "db", "persistentVolumeClaim": {"claimName": "db-data"}}]}),
        ("PersistentVolumeClaim 'db-data' in volume 'data'",
         {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}}]}),
        ("ephemeral volume 'scratch' on existing storage (volumeName)",
         {"volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
             "spec": {**claim, "volumeName": "pv-db"}}}}]}),
        ("ephemeral volume 'clone' on existing storage (dataSource)",
         {"volumes": [{"name": "clone", "ephemeral": {"volumeClaimTemplate": {"spec": {
             **claim, "dataSource": {"kind": "PersistentVolumeClaim", "name": "db-data"}}}}}]}),
        ("priorityClassName 'system-cluster-critical' (was 'batch-low')",
         {"priorityClassName": "system-cluster-critical"}),
    ]
    for shown, spec in escalations:
        _refused(patch(spec), workload, shown)
    _refused(executor("patch", "deployment", name, "--type=json", "-p", json.dumps(
        [{"op": "remove", "path": "/spec/template/spec/priorityClassName"}])),
        workload, "priorityClassName unset (was 'batch-low')")
    # a lower-case "all" is taken as another name (the runtimes read it as ALL; write ALL)
    _refused(patch({"containers": [{"name": "web", "securityContext": {
        "capabilities": {"drop": ["all"]}}}]}),
        workload, "capability ALL no longer dropped in container 'web'")
    # what the executor is for still works, the claim it had included; a capability spelled
    # in lower case is the same capability; new, empty storage of an ephemeral volume is no
    # one's data
    for allowed in (executor("rollout", "restart", f"deployment/{name}"),
                    executor("scale", f"deployment/{name}", "--replicas=2"),
                    executor("set", "image", f"deployment/{name}", "web=nginx:2"),
                    patch({"containers": [{"name": "web", "securityContext": {"capabilities": {
                        "drop": ["ALL"], "add": ["net_bind_service"]}}}]}),
                    patch({"volumes": [{"name": "cache", "ephemeral": {
                        "volumeClaimTemplate": {"spec": claim}}}]})):
        assert allowed.returncode == 0, allowed.stderr


def test_an_approved_command_mounts_no_host_path_volume_through_an_ephemeral_claim(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """An ephemeral volume's claim template naming a PersistentVolume (volumeName) binds that
    volume: a hostPath PersistentVolume would give the pods the node's files, which a hostPath
    volume in the pod spec may not."""
    target = test_release.target_namespace
    name = f"ephemeral-{_suffix()}"
    volume = f"host-root-{_suffix()}"
    cluster.kubectl("create", "-f", "-", input=dump({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "", "hostPath": {"path": "/"}}}))
    try:
        cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "automountServiceAccountToken": False,
                         "containers": [{"name": "web", "image": "nginx:1"}]}}}}))
        claim = {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Gi"}}, "volumeName": volume}
        _refused(executor("patch", "deployment", name, "--type=strategic", "-p", json.dumps(
            {"spec": {"template": {"spec": {
                "volumes": [{"name": "host", "ephemeral": {"volumeClaimTemplate": {
                    "spec": claim}}}],
                "containers": [{"name": "web", "volumeMounts": [
                    {"name": "host", "mountPath": "/host"}]}]}}}})),
            f"Deployment '{target}/{name}'", "ephemeral volume 'host' on existing storage "
            "(volumeName)")
    finally:
        cluster.kubectl("delete", "persistentvolume", volume, "--wait=false", check=False)


def test_an_approved_command_makes_no_read_only_host_path_or_claim_writable(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """A hostPath or PersistentVolumeClaim the pods mount read-only is the node's files or
    another's data they may only read: a writable mount of it is a new right."""
    target = test_release.target_namespace
    name = f"readonly-{_suffix()}"
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "automountServiceAccountToken": False,
                     "volumes": [{"name": "logs", "hostPath": {"path": "/var/log"}},
                                 {"name": "data", "persistentVolumeClaim": {
                                     "claimName": "web-data", "readOnly": True}}],
                     "containers": [{"name": "web", "image": "nginx:1", "volumeMounts": [
                         {"name": "logs", "mountPath": "/logs", "readOnly": True},
                         {"name": "data", "mountPath": "/data"}]}]}}}}))
    workload = f"Deployment '{target}/{name}'"

    def patch(spec: dict[str, Any]) -> Any:
        return executor("patch", "deployment", name, "--type=strategic", "-p",
                        json.dumps({"spec": {"template": {"spec": spec}}}))

    for shown, spec in (
        ("volume 'logs' writable in container 'web' (was read-only)",
         {"containers": [{"name": "web", "volumeMounts": [
             {"name": "logs", "mountPath": "/logs", "readOnly": False}]}]}),
        ("volume 'data' writable in container 'web' (was read-only)",
         {"volumes": [{"name": "data", "persistentVolumeClaim": {
             "claimName": "web-data", "readOnly": False}}]}),
        ("volume 'logs' writable in container 'side' (was read-only)",
         {"containers": [{"name": "side", "image": "busybox:1", "volumeMounts": [
             {"name": "logs", "mountPath": "/logs"}]}]}),
    ):
        _refused(patch(spec), workload, shown)
    for allowed in (executor("rollout", "restart", f"deployment/{name}"),
                    executor("set", "image", f"deployment/{name}", "web=nginx:2")):
        assert allowed.returncode == 0, allowed.stderr


def test_an_approved_command_gives_no_device_claim(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """A ResourceClaim the pods did not use is another workload's device (a GPU and what its
    memory holds), one of a template a new device that may reach the node's hardware."""
    target = test_release.target_namespace
    name = f"devices-{_suffix()}"
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "automountServiceAccountToken": False,
                     "resourceClaims": [{"name": "gpu", "resourceClaimName": "web-gpu"}],
                     "containers": [{"name": "web", "image": "nginx:1", "resources": {
                         "claims": [{"name": "gpu"}]}}]}}}}))
    workload = f"Deployment '{target}/{name}'"

    def claims(*entries: dict[str, Any]) -> Any:
        return executor("patch", "deployment", name, "--type=json", "-p", json.dumps(
            [{"op": "replace", "path": "/spec/template/spec/resourceClaims",
              "value": list(entries)}]))

    _refused(claims({"name": "gpu", "resourceClaimName": "db-gpu"}), workload,
             "resource claim 'gpu' (ResourceClaim 'db-gpu')")
    _refused(claims({"name": "gpu", "resourceClaimName": "web-gpu"},
                    {"name": "nic", "resourceClaimTemplateName": "host-nic"}), workload,
             "resource claim 'nic' (ResourceClaimTemplate 'host-nic')")
    for allowed in (executor("rollout", "restart", f"deployment/{name}"),
                    executor("set", "image", f"deployment/{name}", "web=nginx:2")):
        assert allowed.returncode == 0, allowed.stderr


def test_an_approved_command_changes_no_pod_label_or_annotation_but_the_restart(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """A pod's labels and annotations choose what reaches it and what it reaches (Services and
    NetworkPolicies select pods by label, a deny-all policy included) and what mutating webhooks
    inject (the Vault agent's secrets by annotation, a cloud's workload identity by label):
    only the annotation of ``kubectl rollout restart`` may change."""
    target = test_release.target_namespace
    name = f"labelled-{_suffix()}"
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name, "isolated": "true"},
                                           "annotations": {"team": "web"}},
                              "spec": {"automountServiceAccountToken": False,
                                       "containers": [{"name": "web", "image": "nginx:1"}]}}}}))
    workload = f"Deployment '{target}/{name}'"
    meta = "/spec/template/metadata"

    def json_patch(*ops: dict[str, Any]) -> Any:
        return executor("patch", "deployment", name, "--type=json", "-p", json.dumps(ops))

    _refused(json_patch({"op": "add", "path": f"{meta}/annotations/vault.hashicorp.com~1role",
                         "value": "db-admin"}),
             workload, "pod annotation vault.hashicorp.com/role=db-admin (was unset)")
    _refused(json_patch({"op": "add", "path": f"{meta}/labels/azure.workload.identity~1use",
                         "value": "true"}),
             workload, "pod label azure.workload.identity/use=true (was unset)")
    _refused(json_patch({"op": "remove", "path": f"{meta}/labels/isolated"}),
             workload, "pod label isolated removed (was true)")
    _refused(json_patch({"op": "replace", "path": f"{meta}/annotations/team", "value": "db"}),
             workload, "pod annotation team=db (was web)")
    for allowed in (executor("rollout", "restart", f"deployment/{name}"),
                    executor("set", "image", f"deployment/{name}", "web=nginx:2")):
        assert allowed.returncode == 0, allowed.stderr
    time.sleep(1)  # kubectl triggers one restart a second
    again = executor("rollout", "restart", f"deployment/{name}")
    assert again.returncode == 0, again.stderr


def _refused_all(result: Any, workload: str, *shown: str) -> None:
    """Refused by the policy, for (at least) each reason shown, each named once."""
    assert result.returncode != 0, shown
    message = " ".join(result.stderr.split())
    assert ("an approved command (ServiceAccount wingman-executor) may not give the pods of "
            f"{workload} what they did not have: ") in message, message
    for reason in shown:
        assert message.count(reason) == 1, (reason, message)


def _grant_executor(cluster: LocalCluster, release: Release, executor: Any, resource: str,
                    verbs: str = "get,patch,update") -> None:
    """Let the executor change RESOURCE in the target namespace (a target's rules can)."""
    ns, target = release.namespace, release.target_namespace
    role = f"extra-{_suffix()}"
    cluster.kubectl("create", "role", role, "-n", target, f"--verb={verbs}",
                    f"--resource={resource}")
    cluster.kubectl("create", "rolebinding", role, "-n", target, f"--role={role}",
                    f"--serviceaccount={ns}:wingman-executor")
    deadline = time.monotonic() + 10
    kind, _, sub = resource.partition("/")
    while executor("auth", "can-i", "patch", kind,
                   *([f"--subresource={sub}"] if sub else [])).stdout.strip() != "yes":
        assert time.monotonic() < deadline, f"the executor was not granted patch on {resource}"
        time.sleep(0.2)


def test_an_approved_command_keeps_windows_users_groups_mounts_and_name_resolution(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """A Windows user (ContainerAdministrator is the node's administrator), the image's groups
    merged in where the pods had only their own (supplementalGroupsPolicy Strict), mounts below
    a read-only one made writable (recursiveReadOnly) or the node's mounts propagated in, and
    where the pods' own calls go (hostAliases, dnsPolicy, dnsConfig: a server of the command's
    choosing would receive them, credentials and all) are the workload's isolation too."""
    target = test_release.target_namespace
    name = f"resolved-{_suffix()}"
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "automountServiceAccountToken": False,
                     "securityContext": {"windowsOptions": {"runAsUserName": "ContainerUser"},
                                         "supplementalGroupsPolicy": "Strict"},
                     "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["db"]}],
                     "dnsConfig": {"options": [{"name": "ndots", "value": "2"}]},
                     "volumes": [{"name": "logs", "hostPath": {"path": "/var/log"}},
                                 {"name": "cache", "emptyDir": {}}],
                     "containers": [{"name": "web", "image": "nginx:1", "volumeMounts": [
                         {"name": "logs", "mountPath": "/logs", "readOnly": True,
                          "recursiveReadOnly": "Enabled"},
                         {"name": "cache", "mountPath": "/cache"}]}]}}}}))
    workload = f"Deployment '{target}/{name}'"
    spec = "/spec/template/spec"

    def json_patch(*ops: dict[str, Any]) -> Any:
        return executor("patch", "deployment", name, "--type=json", "-p", json.dumps(ops))

    for shown, ops in (
        ("windowsOptions.runAsUserName ContainerAdministrator in container 'web' "
         "(was ContainerUser)",
         [{"op": "replace", "path": f"{spec}/securityContext/windowsOptions/runAsUserName",
           "value": "ContainerAdministrator"}]),
        ("windowsOptions.runAsUserName ContainerAdministrator in container 'web' "
         "(was ContainerUser)",
         [{"op": "add", "path": f"{spec}/containers/0/securityContext", "value": {
             "windowsOptions": {"runAsUserName": "ContainerAdministrator"}}}]),
        ("windowsOptions.gmsaCredentialSpecName admins in container 'web' (was unset)",
         [{"op": "add", "path": f"{spec}/securityContext/windowsOptions/gmsaCredentialSpecName",
           "value": "admins"}]),
        ("supplementalGroupsPolicy Merge (was Strict",
         [{"op": "replace", "path": f"{spec}/securityContext/supplementalGroupsPolicy",
           "value": "Merge"}]),
        ("(was Strict: the image's groups would join the pods' own)",
         [{"op": "remove", "path": f"{spec}/securityContext/supplementalGroupsPolicy"}]),
        ("volume 'logs' not recursively read-only in container 'web' "
         "(recursiveReadOnly Disabled)",
         [{"op": "replace", "path": f"{spec}/containers/0/volumeMounts/0/recursiveReadOnly",
           "value": "Disabled"}]),
        ("volume 'logs' not recursively read-only in container 'web' (recursiveReadOnly unset)",
         [{"op": "remove", "path": f"{spec}/containers/0/volumeMounts/0/recursiveReadOnly"}]),
        ("mountPropagation HostToContainer of volume 'cache' in container 'web'",
         [{"op": "add", "path": f"{spec}/containers/0/volumeMounts/1/mountPropagation",
           "value": "HostToContainer"}]),
        ("hostAliases changed (names the pods resolve)",
         [{"op": "replace", "path": f"{spec}/hostAliases/0/ip", "value": "10.9.9.9"}]),
        ("hostAliases changed (names the pods resolve)",
         [{"op": "remove", "path": f"{spec}/hostAliases"}]),
        ("dnsPolicy Default (was ClusterFirst)",
         [{"op": "replace", "path": f"{spec}/dnsPolicy", "value": "Default"}]),
        ("dnsConfig changed (the pods' name servers)",
         [{"op": "add", "path": f"{spec}/dnsConfig/nameservers", "value": ["10.9.9.9"]}]),
    ):
        _refused_all(json_patch(*ops), workload, shown)
    for allowed in (executor("rollout", "restart", f"deployment/{name}"),
                    executor("scale", f"deployment/{name}", "--replicas=2"),
                    executor("set", "image", f"deployment/{name}", "web=nginx:2")):
        assert allowed.returncode == 0, allowed.stderr


def test_an_approved_command_adds_no_weaker_ephemeral_container_to_a_pod(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """kubectl debug adds a container to a running pod through the pods/ephemeralcontainers
    subresource: a new container is held to every old one's isolation (--profile=sysadmin's
    privileged one, root, privilege escalation, capabilities given back refused; a
    --profile=restricted one passes), and may not join another container's process
    namespace (--target) where the pod shares none."""
    target = test_release.target_namespace
    _grant_executor(cluster, test_release, executor, "pods/ephemeralcontainers")
    name = f"debugged-{_suffix()}"
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                  "seccompProfile": {"type": "RuntimeDefault"}}
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"automountServiceAccountToken": False,
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                 "initContainers": [{"name": "init", "image": "busybox:1",
                                     "securityContext": restricted}],
                 "containers": [{"name": "web", "image": "nginx:1",
                                 "securityContext": restricted}]}}))
    workload = f"Pod '{target}/{name}'"

    def debug(container: dict[str, Any]) -> Any:
        return executor("patch", "pod", name, "--subresource=ephemeralcontainers",
                        "--type=strategic", "-p", json.dumps({"spec": {"ephemeralContainers": [
                            {"image": "busybox:1", "stdin": True, "tty": True, **container}]}}))

    _refused_all(debug({"name": "sysadmin", "securityContext": {"privileged": True}}),
                 workload, "privileged container 'sysadmin'")
    _refused_all(debug({"name": "general"}), workload,
                 "seccomp profile unset in container 'general' (was RuntimeDefault)",
                 "allowPrivilegeEscalation unset in container 'general' (was false)",
                 "capability ALL no longer dropped in container 'general'")
    _refused_all(debug({"name": "root", "securityContext": {
        **restricted, "runAsUser": 0, "runAsNonRoot": False}}), workload,
        "runAsUser 0 in container 'root' (was 1000)",
        "runAsNonRoot false in container 'root' (was true)")
    _refused_all(debug({"name": "caps", "securityContext": {
        **restricted, "capabilities": {"drop": ["ALL"], "add": ["SYS_PTRACE"]}}}), workload,
        "capability SYS_PTRACE in container 'caps'")
    _refused_all(debug({"name": "target", "targetContainerName": "web",
                        "securityContext": restricted}), workload,
                 "the process namespace of container 'web' in container 'target'")
    # kubectl debug --profile=restricted: as isolated as the pod's own container
    added = debug({"name": "restricted", "securityContext": restricted})
    assert added.returncode == 0, added.stderr


def test_no_target_rule_lets_an_approved_command_bind_a_pod_to_a_node(
    cluster: LocalCluster, test_release: Release, executor: Any, tmp_path: Path,
) -> None:
    """A binding (the pods/binding subresource, or the core bindings resource) puts a pending
    pod on the node it names, past the scheduler and what admission keeps a workload's pods to
    (nodeSelector, taints, affinity): the API server does it for whoever may create one, so
    the chart refuses a target rule granting either without allowEscalatingRules, naming why."""
    from support.chart import CHART_DIR, set_args, values_file

    ns, target = test_release.namespace, test_release.target_namespace
    for resource in ("pods/binding", "bindings"):
        kind, _, sub = resource.partition("/")
        can_i = ("auth", "can-i", "create", kind, *([f"--subresource={sub}"] if sub else []))
        rule = {"apiGroups": [""], "resources": [resource], "verbs": ["create"]}
        refused = cluster.helm(
            "upgrade", "wingman", str(CHART_DIR), "--namespace", ns, "-f",
            str(values_file(test_release.env)),
            *set_args({"gateway.targets": [{"namespace": target, "rules": [rule]}],
                       "audit.file.persistence.enabled": False}), check=False)
        assert refused.returncode != 0, f"a target rule granting {resource} was installed"
        message = " ".join(refused.stderr.split())
        assert f'gateway.targets: namespace "{target}", rules[0]' in message, message
        assert (f"create on {resource}: places a pending pod on a node of the caller's "
                "choosing, past the scheduler") in message, message
        assert "set allowEscalatingRules: true on this target" in message, message
        assert executor(*can_i).stdout.strip() == "no"
        # what such a rule (allowEscalatingRules: true) lets an approved command do
        role = f"bind-{_suffix()}"
        cluster.kubectl("create", "role", role, "-n", target, "--verb=create",
                        f"--resource={resource}")
        cluster.kubectl("create", "rolebinding", role, "-n", target, f"--role={role}",
                        f"--serviceaccount={ns}:wingman-executor")
        try:
            deadline = time.monotonic() + 10
            while executor(*can_i).stdout.strip() != "yes":
                assert time.monotonic() < deadline, f"the executor was not granted {resource}"
                time.sleep(0.2)
            pod = f"pending-{_suffix()}"
            cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
                "spec": {"automountServiceAccountToken": False,
                         "schedulerName": "no-scheduler",  # pending until bound
                         "nodeSelector": {"pool": "apps"},
                         "containers": [{"name": "web", "image": "nginx:1"}]}}))
            binding = tmp_path / f"{kind}.json"
            binding.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
                "target": {"apiVersion": "v1", "kind": "Node", "name": "control-plane-1"}}))
            bound = (executor("create", "--raw",
                              f"/api/v1/namespaces/{target}/pods/{pod}/binding",
                              "-f", str(binding)) if sub
                     else executor("create", "--validate=false", "-f", str(binding)))
            assert bound.returncode == 0, bound.stderr
            node = cluster.kubectl("get", "pod", pod, "-n", target, "-o",
                                   "jsonpath={.spec.nodeName}").stdout
            assert node == "control-plane-1", f"{resource}: the pod is on {node!r}"
        finally:
            cluster.kubectl("delete", "rolebinding,role", role, "-n", target, check=False)


def test_an_approved_command_changes_a_pod_template_object_only_as_a_workloads(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """A core PodTemplate (its template at the top level, no spec) is what some controllers
    run pods from: judged like a workload's pod template."""
    target = test_release.target_namespace
    _grant_executor(cluster, test_release, executor, "podtemplates")
    name = f"template-{_suffix()}"
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": "busybox:1"}]}}}))
    workload = f"PodTemplate '{target}/{name}'"

    def patch(spec: dict[str, Any]) -> Any:
        return executor("patch", "podtemplate", name, "--type=strategic", "-p",
                        json.dumps({"template": {"spec": spec}}))

    switched = patch({"serviceAccountName": "admin"})
    assert switched.returncode != 0
    assert (f"ServiceAccount the pods of {workload} run as, from 'default' to 'admin'"
            in " ".join(switched.stderr.split())), switched.stderr
    _refused_all(patch({"hostNetwork": True}), workload, "hostNetwork")
    image = patch({"containers": [{"name": "main", "image": "busybox:2"}]})
    assert image.returncode == 0, image.stderr


def test_a_custom_workload_with_a_pod_template_is_held_to_the_same_rules(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """A custom resource whose ``spec.template`` is a pod template (an Argo Rollout, say) has
    its controller run pods from it: a target's Role that lets the executor patch it must not
    let it run them as another ServiceAccount or privileged either."""
    ns, target = test_release.namespace, test_release.target_namespace
    group = f"x{_suffix()}.example.com"
    cluster.kubectl("create", "-f", "-", input=dump({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"rollouts.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "rollouts", "singular": "rollout", "kind": "Rollout"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                         "type": "object",
                         "x-kubernetes-preserve-unknown-fields": True}}}}}]}}))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/rollouts.{group}",
                    "--timeout=30s")
    name = f"rollout-{_suffix()}"
    cluster.kubectl("create", "role", name, "-n", target, "--verb=get,patch,update",
                    f"--resource=rollouts.{group}")
    cluster.kubectl("create", "rolebinding", name, "-n", target, f"--role={name}",
                    f"--serviceaccount={ns}:wingman-executor")
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
        "apiVersion": f"{group}/v1", "kind": "Rollout", "metadata": {"name": name},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": name}}, "spec": {
            "containers": [{"name": "main", "image": "busybox:1"}]}}}}))
    resource = f"rollouts.{group}/{name}"
    deadline = time.monotonic() + 10
    while executor("get", resource).returncode != 0:
        assert time.monotonic() < deadline, "the executor was not granted patch on rollouts"
        time.sleep(0.2)

    def patch(spec: dict[str, Any]) -> Any:
        return executor("patch", resource, "--type=merge", "-p",
                        json.dumps({"spec": {"template": {"spec": spec}}}))

    switched = patch({"serviceAccountName": "admin"})
    assert switched.returncode != 0
    assert (f"ServiceAccount the pods of Rollout '{target}/{name}' run as, from 'default' to "
            "'admin'") in " ".join(switched.stderr.split()), switched.stderr
    _refused(patch({"hostNetwork": True}), f"Rollout '{target}/{name}'", "hostNetwork")
    for allowed in (executor("patch", resource, "--type=merge", "-p",
                             json.dumps({"spec": {"replicas": 3}})),
                    patch({"containers": [{"name": "main", "image": "busybox:2"}]})):
        assert allowed.returncode == 0, allowed.stderr


def test_a_custom_workloads_pod_templates_elsewhere_are_judged_or_kept(
    cluster: LocalCluster, test_release: Release, executor: Any,
) -> None:
    """A custom resource's pod template need not be spec.template: a KEDA ScaledJob's is
    spec.jobTargetRef.template (judged field by field like spec.template), a RayCluster's,
    JobSet's or PyTorchJob's are several, deeper (kept as they are: any change refused). A
    projected pod certificate or ClusterTrustBundle hands the pods an identity or a trust
    they did not have."""
    ns, target = test_release.namespace, test_release.target_namespace
    group = f"x{_suffix()}.example.com"
    cluster.kubectl("create", "-f", "-", input=dump({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"workloads.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "workloads", "singular": "workload", "kind": "Workload"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                         "type": "object",
                         "x-kubernetes-preserve-unknown-fields": True}}}}}]}}))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/workloads.{group}",
                    "--timeout=30s")
    role = f"workloads-{_suffix()}"
    cluster.kubectl("create", "role", role, "-n", target, "--verb=get,patch,update",
                    f"--resource=workloads.{group}")
    cluster.kubectl("create", "rolebinding", role, "-n", target, f"--role={role}",
                    f"--serviceaccount={ns}:wingman-executor")

    def pod(image: str = "busybox:1") -> dict[str, Any]:
        return {"metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "main", "image": image}]}}

    def create(spec: dict[str, Any]) -> str:
        name = f"w-{_suffix()}"
        cluster.kubectl("create", "-n", target, "-f", "-", input=dump({
            "apiVersion": f"{group}/v1", "kind": "Workload", "metadata": {"name": name},
            "spec": spec}))
        deadline = time.monotonic() + 10
        while executor("get", f"workloads.{group}/{name}").returncode != 0:
            assert time.monotonic() < deadline, "the executor was not granted workloads"
            time.sleep(0.2)
        return name

    def json_patch(name: str, *ops: dict[str, Any]) -> Any:
        return executor("patch", f"workloads.{group}/{name}", "--type=json", "-p",
                        json.dumps(ops))

    # a KEDA ScaledJob: spec.jobTargetRef.template, judged field by field
    scaled = create({"pollingInterval": 30, "jobTargetRef": {"template": pod()}})
    workload = f"Workload '{target}/{scaled}'"
    template = "/spec/jobTargetRef/template/spec"
    switched = json_patch(scaled, {"op": "add", "path": f"{template}/serviceAccountName",
                                   "value": "admin"})
    assert switched.returncode != 0
    assert (f"ServiceAccount the pods of {workload} run as, from 'default' to 'admin'"
            in " ".join(switched.stderr.split())), switched.stderr
    _refused(json_patch(scaled, {"op": "add", "path": f"{template}/hostNetwork", "value": True}),
             workload, "hostNetwork")
    for allowed in (json_patch(scaled, {"op": "replace", "path": "/spec/pollingInterval",
                                        "value": 60}),
                    json_patch(scaled, {"op": "replace",
                                        "path": f"{template}/containers/0/image",
                                        "value": "busybox:2"})):
        assert allowed.returncode == 0, allowed.stderr

    # a projected pod certificate or ClusterTrustBundle in spec.template
    plain = create({"replicas": 1, "template": pod()})
    for shown, source in (
        ("a pod certificate in volume 'cert'", {"podCertificate": {
            "signerName": "example.com/identity", "keyType": "ED25519",
            "credentialBundlePath": "bundle.pem"}}),
        ("a ClusterTrustBundle in volume 'cert'", {"clusterTrustBundle": {
            "signerName": "example.com/identity", "labelSelector": {}, "path": "ca.pem"}}),
    ):
        _refused(json_patch(plain, {"op": "add", "path": "/spec/template/spec/volumes",
                                    "value": [{"name": "cert",
                                               "projected": {"sources": [source]}}]}),
                 f"Workload '{target}/{plain}'", shown)

    # pod templates this policy does not judge field by field: any change refused, the rest
    # of the object still the command's
    spec: dict[str, Any]  # each row's custom object spec (of a different shape each)
    for spec, path, change in (
        ({"headGroupSpec": {"template": pod()},
          "workerGroupSpecs": [{"groupName": "w", "replicas": 1, "template": pod()}]},
         "spec.workerGroupSpecs[].template",
         "/spec/workerGroupSpecs/0/template/spec/hostNetwork"),
        ({"headGroupSpec": {"template": pod()}}, "spec.headGroupSpec.template",
         "/spec/headGroupSpec/template/spec/hostNetwork"),
        ({"replicatedJobs": [{"name": "r", "replicas": 1,
                              "template": {"spec": {"template": pod()}}}]},
         "spec.replicatedJobs[].template",
         "/spec/replicatedJobs/0/template/spec/template/spec/hostPID"),
        ({"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": pod()}}},
         "spec.pytorchReplicaSpecs.Master.template",
         "/spec/pytorchReplicaSpecs/Master/template/spec/hostIPC"),
        ({"leaderWorkerTemplate": {"size": 2, "workerTemplate": pod()}},
         "spec.leaderWorkerTemplate.workerTemplate",
         "/spec/leaderWorkerTemplate/workerTemplate/spec/hostNetwork"),
        # a pod template without containers (merged into the controller's own, as Flink's
        # podTemplate is), a bare pod spec (an Argo CronWorkflow's workflowSpec), pod spec
        # fields in spec itself (a Prometheus's)
        ({"podTemplate": {"spec": {"serviceAccountName": "default"}}}, "spec.podTemplate",
         "/spec/podTemplate/spec/hostNetwork"),
        ({"workflowSpec": {"serviceAccountName": "default"}}, "spec.workflowSpec",
         "/spec/workflowSpec/hostNetwork"),
        ({"serviceAccountName": "default", "replicas": 1}, "spec.hostNetwork",
         "/spec/hostNetwork"),
    ):
        name = create(spec)
        refused = json_patch(name, {"op": "add", "path": change, "value": True})
        assert refused.returncode != 0, path
        message = " ".join(refused.stderr.split())
        assert ("an approved command (ServiceAccount wingman-executor) may not change the pod "
                f"template at {path} of Workload '{target}/{name}'") in message, message
    # below the levels looked into (a RayService's worker groups, a TrainingRuntime's
    # JobSet, a list of lists, deeper maps), a changed map or list could hold a pod template:
    # refused
    for spec, path, change in (
        ({"rayClusterConfig": {"workerGroupSpecs": [{"groupName": "w", "replicas": 1,
                                                      "template": pod()}]}},
         "spec.rayClusterConfig.workerGroupSpecs[]",
         "/spec/rayClusterConfig/workerGroupSpecs/0/template/spec/hostNetwork"),
        ({"template": {"spec": {"replicatedJobs": [{"name": "r", "template": {
            "spec": {"template": pod()}}}]}}},
         "spec.template.spec.replicatedJobs",
         "/spec/template/spec/replicatedJobs/0/template/spec/template/spec/hostNetwork"),
        ({"groups": [[pod()]]}, "spec.groups[]", "/spec/groups/0/0/spec/hostNetwork"),
        ({"a": {"b": {"c": {"template": pod()}}}}, "spec.a.b.c",
         "/spec/a/b/c/template/spec/hostNetwork"),
    ):
        name = create(spec)
        refused = json_patch(name, {"op": "add", "path": change, "value": True})
        assert refused.returncode != 0, path
        message = " ".join(refused.stderr.split())
        assert ("an approved command (ServiceAccount wingman-executor) may not change "
                f"{path} of Workload '{target}/{name}', below the levels") in message, message
    ray = create({"workerGroupSpecs": [{"groupName": "w", "replicas": 1, "template": pod()}]})
    scaled_up = json_patch(ray, {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas",
                                 "value": 3})
    assert scaled_up.returncode == 0, scaled_up.stderr
    # pod spec fields in spec itself are kept, the rest of spec is the command's; a scalar
    # at the last level looked into holds no pod template
    monitor = create({"serviceAccountName": "default", "replicas": 1})
    deep = create({"a": {"b": {"c": 1}}})
    for allowed in (json_patch(monitor, {"op": "replace", "path": "/spec/replicas",
                                         "value": 2}),
                    json_patch(deep, {"op": "replace", "path": "/spec/a/b/c", "value": 2})):
        assert allowed.returncode == 0, allowed.stderr
    # a custom resource with no pod template (a spec.template of another kind) is the
    # command's to change
    text = create({"template": "plain text", "size": 1})
    resized = json_patch(text, {"op": "replace", "path": "/spec/size", "value": 2})
    assert resized.returncode == 0, resized.stderr


def _workload(kind: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = {"metadata": {"labels": {"app": name}},
                           "spec": {"automountServiceAccountToken": False,
                                    "containers": [{"name": "main", "image": "busybox:1"}]}}
    if kind == "Job":
        pod["spec"]["restartPolicy"] = "Never"
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": name},
                "spec": {"suspend": True, "template": pod}}
    if kind == "ReplicationController":
        return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name},
                "spec": {"replicas": 1, "selector": {"app": name}, "template": pod}}
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": name}}, "template": pod}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


# kind, a refused change of its pod template (the reason shown; '' for another account),
# what the executor may still do ({} is the workload)
WORKLOAD_CASES = [
    ("StatefulSet", {"hostNetwork": True}, "hostNetwork",
     [["rollout", "restart", "{}"], ["scale", "{}", "--replicas=2"],
      ["set", "image", "{}", "main=busybox:2"]]),
    ("DaemonSet", {"containers": [{"name": "main", "securityContext": {"privileged": True}}]},
     "privileged container 'main'",
     [["rollout", "restart", "{}"], ["set", "image", "{}", "main=busybox:2"]]),
    # a Job's pod template is immutable but for where its pods may run, while it is suspended
    # and has never started: that is what an update could change
    ("Job", {"nodeSelector": {"kubernetes.io/hostname": "control-plane-1"}},
     "nodeSelector kubernetes.io/hostname=control-plane-1",
     [["patch", "{}", "--type=merge", "-p", '{"spec":{"parallelism":2}}'],
      ["label", "{}", "team=web"]]),
    ("ReplicationController", {"serviceAccountName": "admin"}, "",
     [["scale", "{}", "--replicas=2"], ["label", "{}", "team=web"]]),
]


@pytest.mark.parametrize(("kind", "change", "shown", "allowed"), WORKLOAD_CASES,
                         ids=[c[0] for c in WORKLOAD_CASES])
def test_every_workload_controller_is_held_to_the_same_rules(
    cluster: LocalCluster, test_release: Release, executor: Any, kind: str,
    change: dict[str, Any], shown: str, allowed: list[list[str]],
) -> None:
    target = test_release.target_namespace
    name = f"{kind.lower()}-{_suffix()}"
    cluster.kubectl("create", "-n", target, "-f", "-", input=dump(_workload(kind, name)))
    workload = f"{kind} '{target}/{name}'"
    resource = f"{kind.lower()}/{name}"
    refused = executor("patch", resource, "--type=strategic", "-p",
                       json.dumps({"spec": {"template": {"spec": change}}}))
    if shown:
        _refused(refused, workload, shown)
    else:
        assert refused.returncode != 0
        assert (f"ServiceAccount the pods of {workload} run as, from 'default' to 'admin'"
                in " ".join(refused.stderr.split())), refused.stderr
    for args in allowed:
        done = executor(*(resource if a == "{}" else a for a in args))
        assert done.returncode == 0, (args, done.stderr)


# --------------------------------------------------------------------------- metadata


def _with_metadata(name: str, kind: str = "ApprovalRequest", **meta: Any) -> dict[str, Any]:
    if kind == "ApprovalRequest":
        obj = approval_request(name, requester=WORKER, environment="test")
    else:
        obj = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
               "metadata": {"name": name},
               "spec": {"approvalRef": {"name": "some-request"}, "requester": WORKER,
                        "command": "kubectl rollout restart deployment/web -n apps"}}
    obj["metadata"].update(meta)
    return obj


@pytest.mark.parametrize(("kind", "meta", "message"), [
    ("ApprovalRequest", {"ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "gone",
        "uid": "00000000-0000-0000-0000-000000000001"}]},
     "ApprovalRequests cannot be given metadata.ownerReferences"),
    ("ApprovalRequest", {"finalizers": ["example.com/hold"]},
     "ApprovalRequests cannot be given metadata.finalizers: a finalizer blocks deletion and "
     "the retention of finished objects; remove finalizer(s) 'example.com/hold'"),
    ("ApprovalRequest", {"annotations": {"wingman.dev/last-handled-configuration": "{}"}},
     "reserved for the Wingman operator on ApprovalRequests; remove "
     "'wingman.dev/last-handled-configuration'"),
    ("ApprovalRequest", {"labels": {"kopf.zalando.org/x": "v1"}},
     "remove 'kopf.zalando.org/x'"),
    ("ExecutionGrant", {"finalizers": ["example.com/hold"]},
     "ExecutionGrants cannot be given metadata.finalizers"),
    ("ExecutionGrant", {"annotations": {"kopf.zalando.org/last-handled-configuration": "{}"}},
     "reserved for the Wingman operator on ExecutionGrants"),
])
def test_metadata_a_worker_has_no_business_setting_is_refused(
    cluster: LocalCluster, test_release: Release, kind: str, meta: dict[str, Any],
    message: str,
) -> None:
    obj = _with_metadata(f"meta-{_suffix()}", kind, **meta)
    result = cluster.kubectl("create", "--dry-run=server", "-n", test_release.namespace,
                             "-f", "-", input=dump(obj), check=False, **_as("test", WORKER))
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split()), result.stderr
    plain = _with_metadata(f"meta-{_suffix()}", kind, labels={"team": "web"},
                           annotations={"example.com/ticket": "42"})
    ok = cluster.kubectl("create", "--dry-run=server", "-n", test_release.namespace, "-f", "-",
                         input=dump(plain), check=False, **_as("test", WORKER))
    assert ok.returncode == 0, ok.stderr


def test_approvers_cannot_add_reserved_metadata_or_finalizers_to_a_request(
    cluster: LocalCluster, test_release: Release,
) -> None:
    ns = test_release.namespace
    name = f"meta-{_suffix()}"
    assert _submit(cluster, test_release, name, WORKER).returncode == 0
    annotate = cluster.kubectl("annotate", f"ar/{name}", "-n", ns,
                               "wingman.dev/last-handled-configuration={}", check=False,
                               **_as("test", APPROVER))
    assert annotate.returncode != 0 and "reserved for the Wingman operator" in annotate.stderr
    finalize = cluster.kubectl("patch", f"ar/{name}", "-n", ns, "--type=merge", "-p",
                               json.dumps({"metadata": {"finalizers": ["example.com/x"]}}),
                               check=False, **_as("test", APPROVER))
    assert finalize.returncode != 0 and "metadata.finalizers" in finalize.stderr
    own = cluster.kubectl("annotate", f"ar/{name}", "-n", ns, "example.com/note=fine",
                          check=False, **_as("test", APPROVER))
    assert own.returncode == 0, own.stderr

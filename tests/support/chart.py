"""Test helpers for Wingman's API surface: the chart, the CRDs and the sample manifests.

Used by ``tests/unit/test_chart.py`` (real helm, no cluster) and by the integration tests of
the CRDs, the admission policies and RBAC (real API server, real ``helm install``). Paths are
the repository's own files, never copies, so a test always checks what ships.

Invalid samples (``manifests/<env>/samples/invalid/*.yaml``) carry their expectation in a
header of comment lines::

    # Invalid: <why, for humans>
    # expect: <a substring of the API server's error message>
    # layer: admission        (optional; default 'crd': the CRD schema or CEL rejects it)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import pytest
import yaml

from wingman.dev import tools as devtools

REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO / "crds"
CHART_DIR = REPO / "charts" / "wingman"
MANIFESTS_DIR = REPO / "manifests"
ENVIRONMENTS = ("test", "prd")

#: The image every gateway pod must use with the chart's default values.
DEFAULT_GATEWAY_IMAGE = "ghcr.io/wingman-dev/wingman:0.1.0"
#: Identities the integration tests act as (real client certificates in the local cluster).
WORKER = "alice"
APPROVER = "bob"
SECOND_APPROVER = "carol"
WORKER_AND_APPROVER = "dave"


def values_file(env: str) -> Path:
    """``manifests/<env>/values.yaml``."""
    return MANIFESTS_DIR / env / "values.yaml"


def env_values(env: str) -> dict[str, Any]:
    """The parsed values file of ``env``."""
    data = yaml.safe_load(values_file(env).read_text())
    assert isinstance(data, dict)
    return data


def worker_groups(env: str) -> list[str]:
    return list(env_values(env)["rbac"]["workers"]["groups"])


def approver_groups(env: str) -> list[str]:
    return list(env_values(env)["rbac"]["approvers"]["groups"])


def helm_binary() -> Path:
    """The pinned helm; skips the test with a hint when it has not been provisioned."""
    path = devtools.find_tool("helm")
    if path is None:
        pytest.skip("helm is not provisioned; run `bash .ci/provision-tools.sh`")
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real helm without a cluster (lint, template); ``template`` renders for the
    Kubernetes release the tests run (:func:`kube_version`) unless told another."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    if args[:1] == ("template",) and "--kube-version" not in args:
        args = (*args, "--kube-version", kube_version())
    result = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=120, env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def set_args(values: Mapping[str, Any]) -> list[str]:
    """``--set-json key=<json>`` arguments for helm (types survive, unlike ``--set``)."""
    out: list[str] = []
    for key, value in values.items():
        out += ["--set-json", f"{key}={json.dumps(value)}"]
    return out


def kube_version() -> str:
    """The Kubernetes release the tests run (the pinned k8s.io/kubernetes, e.g. ``1.34.4``).

    ``helm template`` renders without a cluster for Kubernetes 1.20 unless told otherwise, which
    the chart's ``kubeVersion`` (>= 1.30) refuses; the tests render for the release they test.
    """
    gomod = (REPO / ".ci" / "tools" / "kube" / "go.mod").read_text()
    match = re.search(r"^require k8s\.io/kubernetes v(\d+\.\d+\.\d+)$", gomod, flags=re.M)
    assert match, "cannot read the pinned Kubernetes version from .ci/tools/kube/go.mod"
    return match.group(1)


def template_args(
    env: str | None = None,
    values: Mapping[str, Any] | None = None,
    *,
    namespace: str = "wingman-test",
    release: str = "wingman",
) -> list[str]:
    args = ["template", release, str(CHART_DIR), "--namespace", namespace]
    if env is not None:
        args += ["-f", str(values_file(env))]
    return args + set_args(values or {})


def render(
    env: str | None = None,
    values: Mapping[str, Any] | None = None,
    *,
    namespace: str = "wingman-test",
    release: str = "wingman",
) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders (CRDs excluded, as helm does by default)."""
    out = helm(*template_args(env, values, namespace=namespace, release=release)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(objs: Sequence[dict[str, Any]], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[dict[str, Any]]:
    """Rendered objects of ``kind`` (and ``name``/``namespace`` when given)."""
    return [
        o for o in objs
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class InvalidSample:
    """One file of ``manifests/<env>/samples/invalid/`` and what the API server must say."""

    path: Path
    why: str
    expect: str
    layer: str
    obj: dict[str, Any] = field(compare=False)

    @property
    def id(self) -> str:
        return f"{self.path.parent.parent.parent.name}/{self.path.stem}"


def valid_samples(env: str) -> list[Path]:
    """The valid sample manifests of ``env``, ApprovalRequests before ExecutionGrants."""
    paths = sorted((MANIFESTS_DIR / env / "samples").glob("*.yaml"))

    def kind(p: Path) -> str:
        return str(yaml.safe_load(p.read_text())["kind"])

    return sorted(paths, key=lambda p: (kind(p) != "ApprovalRequest", p.name))


def invalid_samples(env: str) -> list[InvalidSample]:
    """The invalid samples of ``env`` with their parsed expectation header."""
    out = []
    for path in sorted((MANIFESTS_DIR / env / "samples" / "invalid").glob("*.yaml")):
        lines = path.read_text().splitlines()
        header: dict[str, str] = {}
        for line in lines:
            if not line.startswith("#"):
                break
            key, _, value = line.lstrip("# ").partition(":")
            header[key.strip().lower()] = value.strip()
        if not lines[0].startswith("# Invalid:") or "expect" not in header:
            raise AssertionError(
                f"{path}: the first line must be '# Invalid: <why>' and a '# expect: <text>' "
                "line must follow"
            )
        out.append(InvalidSample(
            path=path, why=header["invalid"], expect=header["expect"],
            layer=header.get("layer", "crd"), obj=yaml.safe_load(path.read_text()),
        ))
    return out


def all_invalid_samples() -> list[InvalidSample]:
    return [s for env in ENVIRONMENTS for s in invalid_samples(env)]


# --------------------------------------------------------------------------- live cluster


def sa_user(namespace: str, name: str) -> str:
    """The user name the API server gives ServiceAccount ``namespace/name``."""
    return f"system:serviceaccount:{namespace}:{name}"


def sa_groups(namespace: str) -> list[str]:
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
            "system:authenticated"]


class KubectlAs(TypedDict):
    """Whom ``LocalCluster.kubectl`` acts as, passed on as its keywords (``**as_who``)."""

    user: str
    groups: list[str]


@dataclass(frozen=True)
class Release:
    """A chart installed by ``helm install`` into ``namespace`` for ``env``."""

    name: str
    namespace: str
    env: str
    target_namespace: str


@contextmanager
def installed(
    cluster: Any, env: str, *, namespace: str, target_namespace: str,
    values: Mapping[str, Any] | None = None,
) -> Iterator[Release]:
    """Create the namespaces, ``helm install`` the chart with ``env``'s values, clean up after.

    The gateway's target is ``target_namespace`` (created here); the audit file uses an
    emptyDir (no volume provisioner runs in the local control plane) and, for prd, the DSN
    Secret name is left as the values say (nothing runs the operator here).
    """
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("create", "namespace", target_namespace)
    overrides: dict[str, Any] = {
        "gateway.targets": [{"namespace": target_namespace}],
        "audit.file.persistence.enabled": False,
    }
    overrides.update(values or {})
    try:
        cluster.helm("install", "wingman", str(CHART_DIR), "--namespace", namespace,
                     "-f", str(values_file(env)), *set_args(overrides))
        wait_for_admission(cluster, namespace,
                           env=env if overrides.get("policy.workersMayGrant", True) else None,
                           preview=bool(overrides.get("policy.preview.enabled", True)))
        yield Release("wingman", namespace, env, target_namespace)
    finally:
        cluster.helm("uninstall", "wingman", "--namespace", namespace, "--wait=false",
                     check=False)
        for ns in (namespace, target_namespace):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def wait_for_admission(cluster: Any, namespace: str, timeout: float = 60,
                       env: str | None = None, preview: bool = True) -> None:
    """Wait until the API server enforces the release's admission policies.

    Policies take effect a moment after they are created (the API server loads them through
    an informer); server-side dry runs of objects each policy must deny tell when. The grant
    policy is probed where a worker may create grants (TEST): only a non-approver meets it.
    The preview's dry-run-only policy lets dry runs through, so it is probed with a real
    create by the preview's user name (with rights RBAC grants, so only the policy can refuse
    it); a probe that got through before the policy was loaded is deleted and tried again.
    """
    if preview:
        _wait_for_dry_run_policy(cluster, namespace, timeout)
    probes: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (approval_request("probe", requester="nobody-at-all", environment="probe"), {}),
        (pod_manifest("probe"), {}),
        (job_manifest("probe"), {}),
        # the gateway identity without a pod-bound token: gateway-writes denies it
        ({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
          "metadata": {"name": "wingman-burn-probe"}, "spec": {}},
         {"user": f"system:serviceaccount:{namespace}:wingman-gateway",
          "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                     "system:authenticated"]}),
        # the checkpoints ConfigMap, by anyone but the operator (here the cluster admin)
        ({"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "wingman-audit-checkpoints"}, "data": {}}, {}),
    ]
    if env == "test":
        probes.append(({"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                        "metadata": {"name": "probe"},
                        "spec": {"approvalRef": {"name": "probe"}, "command": "probe",
                                 "requester": "nobody-at-all"}},
                       {"user": WORKER, "groups": worker_groups(env)}))
    deadline = time.monotonic() + timeout
    pending = list(probes)
    while pending:
        result = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-",
                                 input=dump(pending[0][0]), check=False, **pending[0][1])
        if "ValidatingAdmissionPolicy" in result.stderr:
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise AssertionError(
                f"admission policies of {namespace} not enforced after {timeout:.0f}s: "
                f"{pending[0][0]['kind']} probe got {result.stdout or result.stderr}"
            )
        time.sleep(0.25)


def _wait_for_dry_run_policy(cluster: Any, namespace: str, timeout: float) -> None:
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "preview-probe"}}
    who = {"user": sa_user(namespace, "wingman-preview"), "groups": ["system:masters"]}
    deadline = time.monotonic() + timeout
    while True:
        result = cluster.kubectl("create", "-n", namespace, "-f", "-", input=dump(probe),
                                 check=False, **who)
        if "ValidatingAdmissionPolicy" in result.stderr:
            return
        cluster.kubectl("delete", "configmap", "preview-probe", "-n", namespace,
                        "--ignore-not-found", check=False)
        if time.monotonic() > deadline:
            raise AssertionError(f"the preview dry-run policy of {namespace} is not enforced "
                                 f"after {timeout:.0f}s: {result.stdout or result.stderr}")
        time.sleep(0.25)


def kubectl_as_sa(
    cluster: Any, namespace: str, name: str, *args: str, input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl with a real token of ServiceAccount ``namespace/name`` (TokenRequest)."""
    token = cluster.sa_token(namespace, name, expiration_seconds=600)
    kubeconfig = cluster.token_kubeconfig(token, name=name)
    try:
        return subprocess.run(
            [str(cluster.tool("kubectl")), "--kubeconfig", str(kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=60,
            env=cluster.env(kubeconfig),
        )
    finally:
        kubeconfig.unlink(missing_ok=True)


def can(
    cluster: Any, *, user: str, groups: Sequence[str], verb: str, resource: str,
    group: str = "", namespace: str | None = None, name: str | None = None,
    subresource: str | None = None,
) -> bool:
    """Ask the API server (as admin) whether ``user`` may do it: a SubjectAccessReview."""
    from kubernetes import client

    attrs = client.V1ResourceAttributes(
        verb=verb, resource=resource, group=group, namespace=namespace, name=name,
        subresource=subresource,
    )
    body = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user, groups=list(groups), resource_attributes=attrs,
        ),
    )
    with cluster.api_client() as api:
        review = client.AuthorizationV1Api(api).create_subject_access_review(body)
    assert review.status is not None
    return bool(review.status.allowed)


def pod_manifest(
    name: str, *, service_account: str = "wingman-gateway", image: str = DEFAULT_GATEWAY_IMAGE,
    **spec: Any,
) -> dict[str, Any]:
    """A minimal Pod; ``spec`` keyword arguments are merged into its spec."""
    container: dict[str, Any] = {"name": "gateway", "image": image,
                                 "command": ["/usr/bin/tini", "--", "wingman",
                                             "gateway"]}
    container.update(spec.pop("container", {}))
    body: dict[str, Any] = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        "containers": [container],
    }
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body}


def job_manifest(
    name: str, *, service_account: str = "wingman-gateway", image: str = DEFAULT_GATEWAY_IMAGE,
    **spec: Any,
) -> dict[str, Any]:
    """A gateway-like Job; ``spec`` keyword arguments are merged into its pod spec."""
    pod = pod_manifest(name, service_account=service_account, image=image, **spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": pod["spec"]}},
    }


def approval_request(
    name: str, *, requester: str, environment: str,
    commands: Sequence[str] = ("kubectl rollout restart deployment/frontend -n apps",),
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requester": requester,
        "environment": environment,
        "instruction": "Restart the frontend to pick up the new configuration.",
        "commands": list(commands),
    }
    body.update(spec)
    return {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": name}, "spec": body}


def dump(obj: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(obj))


def client_as(cluster: Any, namespace: str, user: str, groups: list[str]) -> Any:
    """A WingmanClient authenticated as ``user`` in ``groups`` (the chart's identities)."""
    from wingman.client import WingmanClient, connect
    from wingman.client.status import COMMANDS

    conn = connect(kubeconfig=str(cluster.kubeconfig_for(user, groups)), namespace=namespace)
    return WingmanClient(conn, hints=COMMANDS)


__all__ = [
    "APPROVER",
    "CHART_DIR",
    "CRDS_DIR",
    "DEFAULT_GATEWAY_IMAGE",
    "ENVIRONMENTS",
    "MANIFESTS_DIR",
    "REPO",
    "SECOND_APPROVER",
    "WORKER",
    "WORKER_AND_APPROVER",
    "InvalidSample",
    "KubectlAs",
    "Release",
    "all_invalid_samples",
    "approval_request",
    "approver_groups",
    "can",
    "client_as",
    "dump",
    "env_values",
    "find",
    "helm",
    "helm_binary",
    "installed",
    "invalid_samples",
    "job_manifest",
    "kube_version",
    "kubectl_as_sa",
    "pod_manifest",
    "render",
    "sa_groups",
    "sa_user",
    "set_args",
    "template_args",
    "valid_samples",
    "values_file",
    "wait_for_admission",
    "worker_groups",
]

"""``wingman verify-privileges``: proof, on a live cluster, that only the gateway can execute.

Owns the privilege model of a Wingman release (which identity may hold which dangerous right,
where) and the command that checks a live cluster against it; ``cli.py`` dispatches
``wingman verify-privileges ...`` to :func:`verify_privileges_main`, and the chart's
``helm test`` pod runs it as ServiceAccount ``wingman-verifier``.

**Access.** Every identity of the release is put to the API server's own authorizer with
SubjectAccessReviews (they store nothing), for every right in :data:`RIGHTS`, in the release
namespace, in each gateway target namespace and at cluster scope. Identities: the workers and
approvers bound by the release's RoleBindings (or given as options), the ServiceAccounts
``wingman-operator``, ``wingman-gateway``, ``wingman-verifier`` and ``default`` of the release
namespace, any authenticated user (``system:authenticated``) and anonymous requests.

**Design.** :func:`designed` says who may hold a right by design; any other holder is a
violation:

- release namespace: the operator creates Jobs (admission lets only the operator create gateway
  Jobs, pinned image), reads and patches Secrets (tokens, signing key), writes the public-key
  ConfigMap, patches ``executiongrants/status`` and deletes burn markers (Leases); the gateway
  patches ``executiongrants/status`` and creates burn markers.
- target namespaces: the gateway holds whatever *execution* rights its ``gateway.targets``
  rules grant (by default patch of Deployments and their scale). Credential rights (read
  Secrets, mint ServiceAccount tokens) and escalation (impersonate, escalate, bind) are never by
  design, not even for the gateway.
- cluster scope: nobody (impersonation, RBAC escalation, namespace labels, ``nodes/proxy``,
  PersistentVolumes, admission policies).

The Job controller, which creates gateway pods, is a Kubernetes component and is not checked.

**Pods.** Every Pod and Job in the release namespace is inspected: privileged containers,
added capabilities, ``hostNetwork``/``hostPID``/``hostIPC``, ``hostPath`` volumes (the Docker
socket named as such; gateway pods may mount exactly ``--docker-socket`` when the docker
executor is enabled), and pods running as ``wingman-gateway`` with another image than the
pinned gateway image or with ephemeral containers.

Exit status: 0 everything as designed, 1 violations (listed), 2 usage or connection errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from wingman.errors import WingmanError

Place = Literal["release", "target", "cluster"]
Kind = Literal["execution", "credentials", "escalation", "integrity"]

GATEWAY_SA = "wingman-gateway"
OPERATOR_SA = "wingman-operator"
VERIFIER_SA = "wingman-verifier"
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
RELEASE_NAMESPACE_ANNOTATION = "wingman.dev/release-namespace"
REQUEST_TIMEOUT_SECONDS = 15


class VerifyError(WingmanError):
    """verify-privileges could not run: bad arguments, no cluster, missing read rights."""

    reason = "VerifyPrivilegesFailed"


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Right:
    """A right worth checking: ``verb`` on ``resource[/subresource]`` in API ``group``.

    ``scope`` says where it is asked: ``namespace`` (release and target namespaces),
    ``release`` (only the release namespace, where Wingman's own objects live) or ``cluster``.
    """

    verb: str
    resource: str
    group: str
    kind: Kind
    scope: Literal["namespace", "release", "cluster"]
    subresource: str = ""

    @property
    def label(self) -> str:
        sub = f"/{self.subresource}" if self.subresource else ""
        return f"{self.verb} {self.resource}{sub}"


def _r(verb: str, resource: str, group: str = "", *, kind: Kind,
       scope: Literal["namespace", "release", "cluster"] = "namespace") -> Right:
    resource, _, sub = resource.partition("/")
    return Right(verb, resource, group, kind, scope, sub)


RBAC = "rbac.authorization.k8s.io"
ADMISSION = "admissionregistration.k8s.io"

#: Every right verify-privileges asks about, for every identity.
RIGHTS: tuple[Right, ...] = (
    # Execution: run code, or change what runs (a pod template names any ServiceAccount).
    _r("create", "pods", kind="execution"),
    _r("create", "pods/exec", kind="execution"),
    _r("create", "pods/attach", kind="execution"),
    _r("patch", "pods/ephemeralcontainers", kind="execution"),
    _r("create", "jobs", "batch", kind="execution"),
    _r("create", "cronjobs", "batch", kind="execution"),
    _r("create", "deployments", "apps", kind="execution"),
    _r("patch", "deployments", "apps", kind="execution"),
    _r("update", "deployments/scale", "apps", kind="execution"),
    # Credentials: get, list and watch all reveal a Secret's data; tokens for any SA.
    _r("get", "secrets", kind="credentials"),
    _r("list", "secrets", kind="credentials"),
    _r("watch", "secrets", kind="credentials"),
    _r("create", "serviceaccounts/token", kind="credentials"),
    # Escalation inside a namespace.
    _r("impersonate", "serviceaccounts", kind="escalation"),
    _r("escalate", "roles", RBAC, kind="escalation"),
    _r("bind", "roles", RBAC, kind="escalation"),
    # Integrity of Wingman's own objects in the release namespace.
    _r("patch", "secrets", kind="integrity", scope="release"),  # the signing key
    _r("patch", "configmaps", kind="integrity", scope="release"),  # the public keys
    _r("update", "configmaps", kind="integrity", scope="release"),
    _r("patch", "executiongrants/status", "wingman.dev", kind="integrity", scope="release"),
    _r("create", "leases", "coordination.k8s.io", kind="integrity", scope="release"),
    _r("delete", "leases", "coordination.k8s.io", kind="integrity", scope="release"),
    # Cluster-wide escalation.
    _r("impersonate", "users", kind="escalation", scope="cluster"),
    _r("impersonate", "groups", kind="escalation", scope="cluster"),
    _r("escalate", "clusterroles", RBAC, kind="escalation", scope="cluster"),
    _r("bind", "clusterroles", RBAC, kind="escalation", scope="cluster"),
    _r("patch", "namespaces", kind="escalation", scope="cluster"),  # Pod Security labels
    _r("get", "nodes/proxy", kind="execution", scope="cluster"),  # exec on any pod
    _r("create", "persistentvolumes", kind="escalation", scope="cluster"),  # hostPath
    _r("update", "validatingadmissionpolicies", ADMISSION, kind="escalation", scope="cluster"),
    _r("delete", "validatingadmissionpolicybindings", ADMISSION, kind="escalation",
       scope="cluster"),
)

#: (role, place) -> labels of the rights that role holds there by design.
DESIGN: Mapping[tuple[str, Place], frozenset[str]] = {
    ("operator", "release"): frozenset({
        "create jobs",  # gateway Jobs only: admission rejects any other gateway Job
        "get secrets", "list secrets", "watch secrets", "patch secrets",
        "patch configmaps", "update configmaps",
        "patch executiongrants/status",
        "delete leases",  # clean-up of expired burn markers
    }),
    ("gateway", "release"): frozenset({"patch executiongrants/status", "create leases"}),
    ("gateway", "target"): frozenset(r.label for r in RIGHTS
                                      if r.kind == "execution" and r.scope == "namespace"),
}


def designed(role: str, place: Place, right: Right) -> bool:
    """Whether ``role`` may hold ``right`` in ``place`` by design."""
    return right.label in DESIGN.get((role, place), frozenset())


def holders_by_design(place: Place, right: Right) -> list[str]:
    """The roles that may hold ``right`` in ``place`` (for messages)."""
    return sorted(role for (role, p), labels in DESIGN.items()
                  if p == place and right.label in labels)


@dataclass(frozen=True)
class Identity:
    """Who is asked about: ``role`` (worker, approver, operator, ...) and how they authenticate.

    ``subject`` is for humans (``group/wingman:workers``); ``user`` and ``groups`` go into the
    SubjectAccessReview exactly as the API server would authenticate that identity.
    """

    role: str
    subject: str
    user: str
    groups: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.role} {self.subject}"


def sa_identity(role: str, namespace: str, name: str) -> Identity:
    """A ServiceAccount, with the groups the API server gives every ServiceAccount token."""
    return Identity(role, f"sa/{namespace}/{name}", f"system:serviceaccount:{namespace}:{name}",
                    ("system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                     "system:authenticated"))


def group_identity(role: str, group: str) -> Identity:
    return Identity(role, f"group/{group}", "", (group, "system:authenticated"))


def user_identity(role: str, user: str) -> Identity:
    return Identity(role, f"user/{user}", user, ("system:authenticated",))


def fixed_identities(namespace: str) -> list[Identity]:
    """The identities every release has, whatever its values."""
    return [
        sa_identity("operator", namespace, OPERATOR_SA),
        sa_identity("gateway", namespace, GATEWAY_SA),
        sa_identity("verifier", namespace, VERIFIER_SA),
        sa_identity("default-sa", namespace, "default"),
        Identity("any-user", "system:authenticated", "", ("system:authenticated",)),
        Identity("anonymous", "system:anonymous", "system:anonymous",
                 ("system:unauthenticated",)),
    ]


@dataclass(frozen=True)
class Question:
    """May ``identity`` do ``right`` in ``namespace`` (None: cluster scope)?"""

    identity: Identity
    place: Place
    namespace: str | None
    right: Right


def questions(identities: Sequence[Identity], namespace: str,
              targets: Sequence[str]) -> list[Question]:
    """Every question to ask: each identity, each right, everywhere the right matters."""
    out: list[Question] = []
    for ident in identities:
        for right in RIGHTS:
            if right.scope == "cluster":
                out.append(Question(ident, "cluster", None, right))
                continue
            out.append(Question(ident, "release", namespace, right))
            if right.scope == "namespace":
                out.extend(Question(ident, "target", t, right) for t in targets)
    return out


@dataclass(frozen=True)
class Finding:
    """One answered question, judged against the design."""

    question: Question
    allowed: bool
    expected: bool  # held by design

    @property
    def violation(self) -> bool:
        return self.allowed and not self.expected

    @property
    def result(self) -> str:
        return "VIOLATION" if self.violation else "ok"

    def describe(self) -> str:
        q = self.question
        where = f"namespace {q.namespace}" if q.namespace else "cluster scope"
        who = holders_by_design(q.place, q.right)
        design = "by design: " + (", ".join(who) if who else "nobody")
        return (f"{q.identity.label} may {q.right.label} in {where} "
                f"({q.right.kind} right; {design})")


def evaluate(answers: Iterable[tuple[Question, bool]]) -> list[Finding]:
    """Judge each (question, allowed) pair against :func:`designed`."""
    return [Finding(q, allowed, designed(q.identity.role, q.place, q.right))
            for q, allowed in answers]


# --------------------------------------------------------------------------- pod specs


@dataclass(frozen=True)
class PodProblem:
    """Something in a Pod's or Job's pod spec that breaks the release namespace's rules."""

    obj: str  # pod/name or job/name
    service_account: str
    problem: str

    def describe(self) -> str:
        return f"{self.obj} (serviceAccount {self.service_account}): {self.problem}"


def _containers(spec: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = spec.get(key) or []
    return [c for c in value if isinstance(c, Mapping)]


def inspect_pod_spec(obj: str, spec: Mapping[str, Any], *, gateway_image: str,
                     docker_socket: str | None = None) -> list[PodProblem]:
    """The problems of one pod spec (camelCase keys, as the API serves it)."""
    sa = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    is_gateway = sa == GATEWAY_SA
    problems: list[str] = []
    regular = _containers(spec, "containers") + _containers(spec, "initContainers")
    ephemeral = _containers(spec, "ephemeralContainers")
    for c in regular + ephemeral:
        name = str(c.get("name", "?"))
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"container {name} is privileged")
        added = (sc.get("capabilities") or {}).get("add") or []
        if added:
            problems.append(f"container {name} adds capabilities {', '.join(map(str, added))}")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} is true (shares the node's namespace)")
    for vol in spec.get("volumes") or []:
        host = (vol or {}).get("hostPath")
        if not host:
            continue
        path = str(host.get("path", ""))
        if is_gateway and docker_socket is not None and path == docker_socket:
            continue
        what = "the Docker socket: root on the node" if (
            path in DOCKER_SOCKETS or path.endswith("docker.sock")) else "node filesystem"
        problems.append(f"hostPath volume {vol.get('name', '?')} mounts {path} ({what})")
    if is_gateway:
        for c in regular:
            image = str(c.get("image", ""))
            if image != gateway_image:
                problems.append(f"runs as {GATEWAY_SA} with image {image} in container "
                                f"{c.get('name', '?')}; only the pinned gateway image "
                                f"{gateway_image} may")
        if ephemeral:
            problems.append(f"has ephemeral containers while running as {GATEWAY_SA}")
    return [PodProblem(obj, sa, p) for p in problems]


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    namespace: str
    release: str
    environment: str
    targets: list[str]
    identities: list[Identity]
    findings: list[Finding]
    pod_problems: list[PodProblem] = field(default_factory=list)
    inspected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        return ([f.describe() for f in self.findings if f.violation]
                + [p.describe() for p in self.pod_problems])

    @property
    def ok(self) -> bool:
        return not self.violations

    def executors(self, namespace: str) -> list[str]:
        """The identities holding any execution right in ``namespace``."""
        seen: dict[str, None] = {}
        for f in self.findings:
            q = f.question
            if f.allowed and q.namespace == namespace and q.right.kind == "execution":
                seen[q.identity.label] = None
        return list(seen)

    def summary(self) -> str:
        rights = sum(f.violation for f in self.findings)
        pods = len(self.pod_problems)
        counts = (f"{len(self.findings)} access checks for {len(self.identities)} identities, "
                  f"{len(self.inspected)} pods/jobs inspected")
        if self.ok:
            parts = []
            for t in self.targets:
                who = self.executors(t)
                parts.append(f"{t}: {', '.join(who) if who else 'nobody'}")
            execs = ("; execution rights in target namespaces: " + "; ".join(parts)
                     if parts else "")
            return f"OK: {counts}; everything as designed{execs}"
        return (f"FAIL: {rights + pods} violations ({rights} access, {pods} pod spec); "
                f"{counts}")

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "release": self.release,
            "environment": self.environment,
            "targetNamespaces": self.targets,
            "identities": [{"role": i.role, "subject": i.subject, "user": i.user,
                            "groups": list(i.groups)} for i in self.identities],
            "checks": [{
                "identity": f.question.identity.label,
                "role": f.question.identity.role,
                "namespace": f.question.namespace,
                "place": f.question.place,
                "right": f.question.right.label,
                "group": f.question.right.group,
                "kind": f.question.right.kind,
                "allowed": f.allowed,
                "expected": "by design" if f.expected else "denied",
                "result": f.result,
            } for f in self.findings],
            "inspected": self.inspected,
            "podProblems": [{"object": p.obj, "serviceAccount": p.service_account,
                             "problem": p.problem} for p in self.pod_problems],
            "notes": self.notes,
            "violations": self.violations,
            "ok": self.ok,
            "summary": self.summary(),
        }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]


def render_text(report: Report) -> str:
    """The human-readable report: the access table, pod problems, violations, summary."""
    lines = [
        f"wingman verify-privileges: release {report.release!r} in namespace "
        f"{report.namespace!r} (environment {report.environment or '?'}), target namespaces: "
        f"{', '.join(report.targets) or 'none'}",
        "",
    ]
    rows = [(f.question.identity.label, f.question.namespace or "(cluster)",
             f.question.right.label, "yes" if f.allowed else "no",
             "by design" if f.expected else "denied", f.result) for f in report.findings]
    lines += _table(("IDENTITY", "NAMESPACE", "RIGHT", "ALLOWED", "EXPECTED", "RESULT"), rows)
    lines += ["", f"Pods and Jobs in {report.namespace}: {len(report.inspected)} inspected, "
              f"{len(report.pod_problems)} problems"]
    if report.pod_problems:
        lines += _table(("OBJECT", "SERVICEACCOUNT", "PROBLEM"),
                        [(p.obj, p.service_account, p.problem) for p in report.pod_problems])
    for note in report.notes:
        lines.append(f"note: {note}")
    if report.violations:
        lines += ["", f"VIOLATIONS ({len(report.violations)}):"]
        lines += [f"  - {v}" for v in report.violations]
    lines += ["", report.summary()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the cluster


class _Cluster:
    """The few reads and reviews verify-privileges makes, with errors turned into VerifyError."""

    def __init__(self, api: Any, server: str) -> None:
        self.api = api
        self.server = server

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
        except ApiException as exc:
            detail = str(exc.reason)
            if isinstance(exc.body, str | bytes) and exc.body:
                try:
                    detail = str(json.loads(exc.body).get("message", detail))
                except (ValueError, AttributeError):
                    pass
            hint = {
                401: "the API server did not accept the credentials: check KUBECONFIG or "
                     "--kubeconfig (an expired token?)",
                403: "the caller lacks a read right verify-privileges needs: run it as "
                     "ServiceAccount wingman-verifier (helm test) or as a cluster admin",
            }.get(int(exc.status or 0), "")
            raise VerifyError(f"{what} failed ({exc.status}): {detail}"
                              + (f"; {hint}" if hint else ""), reason="ApiError") from exc
        except (HTTPError, OSError) as exc:
            raise VerifyError(
                f"cannot reach the API server at {self.server} ({what}: "
                f"{type(exc).__name__}): set KUBECONFIG or pass --kubeconfig with a reachable "
                "cluster (inside a pod, the in-cluster ServiceAccount configuration is used)",
                reason="Unreachable",
            ) from exc

    def allowed(self, q: Question) -> bool:
        from kubernetes import client

        attrs = client.V1ResourceAttributes(
            verb=q.right.verb, group=q.right.group, resource=q.right.resource,
            subresource=q.right.subresource or None, namespace=q.namespace,
        )
        body = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=q.identity.user or None, groups=list(q.identity.groups),
            resource_attributes=attrs,
        ))
        review = self.call(f"SubjectAccessReview for {q.identity.label}",
                           client.AuthorizationV1Api(self.api).create_subject_access_review,
                           body)
        return bool(review.status is not None and review.status.allowed)

    def rolebindings(self, namespace: str, release: str) -> list[Mapping[str, Any]]:
        from kubernetes import client

        resp = self.call(f"listing RoleBindings of release {release!r} in {namespace}",
                         client.RbacAuthorizationV1Api(self.api).list_namespaced_role_binding,
                         namespace, label_selector=f"{INSTANCE_LABEL}={release}")
        return [self.api.sanitize_for_serialization(b) for b in resp.items]

    def gateway_roles(self, release: str) -> list[Mapping[str, Any]]:
        from kubernetes import client

        resp = self.call(
            "listing the gateway's Roles in all namespaces (to find the target namespaces; "
            "or pass --target-namespace)",
            client.RbacAuthorizationV1Api(self.api).list_role_for_all_namespaces,
            label_selector=f"{INSTANCE_LABEL}={release},{COMPONENT_LABEL}=gateway",
        )
        return [self.api.sanitize_for_serialization(r) for r in resp.items]

    def pod_specs(self, namespace: str) -> list[tuple[str, Mapping[str, Any]]]:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        batch = client.BatchV1Api(self.api)
        pods = self.call(f"listing pods in {namespace}", core.list_namespaced_pod, namespace)
        jobs = self.call(f"listing jobs in {namespace}", batch.list_namespaced_job, namespace)
        out: list[tuple[str, Mapping[str, Any]]] = []
        for p in pods.items:
            data = self.api.sanitize_for_serialization(p)
            out.append((f"pod/{p.metadata.name}", data.get("spec") or {}))
        for j in jobs.items:
            data = self.api.sanitize_for_serialization(j)
            spec = ((data.get("spec") or {}).get("template") or {}).get("spec") or {}
            out.append((f"job/{j.metadata.name}", spec))
        return out

    def operator_gateway_image(self, namespace: str) -> str | None:
        from kubernetes import client

        dep = self.call(f"reading Deployment {OPERATOR_SA} in {namespace} (for the pinned "
                        "gateway image; or pass --gateway-image)",
                        client.AppsV1Api(self.api).read_namespaced_deployment,
                        OPERATOR_SA, namespace)
        for c in dep.spec.template.spec.containers or []:
            for e in c.env or []:
                if e.name == "WINGMAN_GATEWAY_IMAGE" and e.value:
                    return str(e.value)
        return None


def _connect(kubeconfig: str | None) -> tuple[_Cluster, str | None]:
    """An API client (explicit kubeconfig, $KUBECONFIG, in-cluster, ~/.kube/config, in order)
    and the context's namespace."""
    from kubernetes import client, config

    cfg = client.Configuration()
    namespace: str | None = None
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    in_cluster = path is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=cfg)
            ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            if ns_file.is_file():
                namespace = ns_file.read_text().strip() or None
        else:
            if path is None and not Path("~/.kube/config").expanduser().is_file():
                raise VerifyError(
                    "no cluster configured: set KUBECONFIG or pass --kubeconfig (inside a "
                    "pod, the in-cluster ServiceAccount configuration is used)",
                    reason="NoKubeconfig")
            if path is not None and not Path(path).expanduser().is_file():
                raise VerifyError(f"kubeconfig {path} does not exist: set KUBECONFIG or pass "
                                  "--kubeconfig with an existing file", reason="NoKubeconfig")
            config.load_kube_config(config_file=path, client_configuration=cfg)
            _, active = config.list_kube_config_contexts(config_file=path)
            namespace = (active or {}).get("context", {}).get("namespace") or None
    except VerifyError:
        raise
    except Exception as exc:  # any kubeconfig problem is the user's to fix
        where = ("the in-cluster configuration" if in_cluster
                 else f"kubeconfig {path or '~/.kube/config'}")
        raise VerifyError(f"cannot load {where}: {exc}; set KUBECONFIG or pass --kubeconfig",
                          reason="NoKubeconfig") from exc
    cfg.retries = 1
    return _Cluster(client.ApiClient(cfg), str(cfg.host)), namespace


def _identities_from_bindings(bindings: Sequence[Mapping[str, Any]], namespace: str,
                              role: str) -> list[Identity]:
    out: list[Identity] = []
    for b in bindings:
        if (b.get("metadata", {}).get("labels") or {}).get(COMPONENT_LABEL) != role:
            continue
        for s in b.get("subjects") or []:
            kind, name = s.get("kind"), str(s.get("name", ""))
            if kind == "Group":
                out.append(group_identity(role, name))
            elif kind == "User":
                out.append(user_identity(role, name))
            elif kind == "ServiceAccount":
                out.append(sa_identity(role, str(s.get("namespace") or namespace), name))
    return list(dict.fromkeys(out))


def _targets_from_roles(roles: Sequence[Mapping[str, Any]], namespace: str) -> list[str]:
    name = f"wingman-{namespace}-gateway"
    found = {
        str(r["metadata"]["namespace"]) for r in roles
        if r.get("metadata", {}).get("name") == name
        and (r["metadata"].get("annotations") or {}).get(RELEASE_NAMESPACE_ANNOTATION)
        == namespace
        and r["metadata"].get("namespace") != namespace
    }
    return sorted(found)


# --------------------------------------------------------------------------- the command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wingman verify-privileges",
        description="Prove on a live cluster that only wingman-gateway can execute: "
                    "SubjectAccessReviews for every Wingman identity and an inspection of the "
                    "pod specs in the release namespace. Exit 0: as designed; 1: violations; "
                    "2: usage or connection error.",
    )
    p.add_argument("-n", "--namespace", help="the release namespace (default: the "
                   "kubeconfig context's or the pod's namespace)")
    p.add_argument("--release", default="wingman", help="the Helm release name "
                   "(default: wingman)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster "
                   "configuration, ~/.kube/config)")
    p.add_argument("--target-namespace", dest="targets", action="append", default=[],
                   metavar="NS", help="a gateway target namespace (repeatable; default: every "
                   "namespace holding Role wingman-<namespace>-gateway, which needs cluster-wide "
                   "list of Roles)")
    for role in ("worker", "approver"):
        p.add_argument(f"--{role}-group", dest=f"{role}_groups", action="append", default=[],
                       metavar="GROUP", help=f"a {role} group (repeatable; default: the "
                       f"subjects of the release's {role} RoleBinding)")
        p.add_argument(f"--{role}-user", dest=f"{role}_users", action="append", default=[],
                       metavar="USER", help=f"a {role} user (repeatable)")
    p.add_argument("--gateway-image", default=os.environ.get("WINGMAN_GATEWAY_IMAGE") or None,
                   help="the pinned gateway image (default: $WINGMAN_GATEWAY_IMAGE, else the "
                   "operator Deployment's)")
    p.add_argument("--docker-socket", default=os.environ.get("WINGMAN_DOCKER_SOCKET") or None,
                   metavar="PATH", help="the one hostPath gateway pods may mount (only when "
                   "the docker executor is enabled)")
    p.add_argument("--environment", default=os.environ.get("WINGMAN_ENVIRONMENT", ""),
                   help="shown in the report (default: $WINGMAN_ENVIRONMENT)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--workers", type=int, default=8, help="concurrent SubjectAccessReviews")
    return p


def _check_name(value: str, what: str) -> str:
    import re

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise VerifyError(f"{what} {value!r} is not a valid Kubernetes name (lowercase "
                          "letters, digits and '-', at most 63 characters)", reason="BadArgument")
    return value


def collect(cluster: _Cluster, args: argparse.Namespace, namespace: str) -> Report:
    """Ask the cluster everything and judge it."""
    notes: list[str] = []
    bindings: list[Mapping[str, Any]] | None = None
    explicit = {
        "worker": [*map(lambda g: group_identity("worker", g), args.worker_groups),
                   *map(lambda u: user_identity("worker", u), args.worker_users)],
        "approver": [*map(lambda g: group_identity("approver", g), args.approver_groups),
                     *map(lambda u: user_identity("approver", u), args.approver_users)],
    }
    people: list[Identity] = []
    for role in ("worker", "approver"):
        if explicit[role]:
            people += explicit[role]
            continue
        if bindings is None:
            bindings = cluster.rolebindings(namespace, args.release)
            if not bindings:
                raise VerifyError(
                    f"no RoleBinding of release {args.release!r} in namespace {namespace!r}: "
                    "is Wingman installed there? pass the right --namespace and --release",
                    reason="ReleaseNotFound")
        found = _identities_from_bindings(bindings, namespace, role)
        if not found:
            notes.append(f"no {role}s are bound by the release (rbac.{role}s is empty)")
        people += found
    identities = list(dict.fromkeys([*people, *fixed_identities(namespace)]))
    environment = args.environment or next(
        (str(b["metadata"]["labels"]["wingman.dev/environment"]) for b in bindings or []
         if "wingman.dev/environment" in (b.get("metadata", {}).get("labels") or {})), "")

    targets = sorted({_check_name(t, "--target-namespace") for t in args.targets})
    if not targets:
        targets = _targets_from_roles(cluster.gateway_roles(args.release), namespace)
        if not targets:
            notes.append("no gateway target namespaces found (gateway.targets is empty)")
    if namespace in targets:
        raise VerifyError(f"--target-namespace {namespace} is the release namespace; the "
                          "gateway must not target it", reason="BadArgument")

    image = args.gateway_image or cluster.operator_gateway_image(namespace)
    if not image:
        raise VerifyError("the pinned gateway image is unknown: pass --gateway-image or set "
                          "WINGMAN_GATEWAY_IMAGE", reason="BadArgument")

    qs = questions(identities, namespace, targets)
    with ThreadPoolExecutor(max_workers=max(1, min(args.workers, 32))) as pool:
        answers = list(zip(qs, pool.map(cluster.allowed, qs), strict=True))
    findings = evaluate(answers)

    specs = cluster.pod_specs(namespace)
    problems = [p for obj, spec in specs
                for p in inspect_pod_spec(obj, spec, gateway_image=image,
                                          docker_socket=args.docker_socket)]
    return Report(namespace=namespace, release=args.release, environment=environment,
                  targets=targets, identities=identities, findings=findings,
                  pod_problems=problems, inspected=[o for o, _ in specs], notes=notes)


def verify_privileges_main(argv: list[str], *, out: TextIO | None = None,
                           err: TextIO | None = None) -> int:
    """``wingman verify-privileges``: 0 as designed, 1 violations, 2 usage/connection error."""
    stdout = out if out is not None else sys.stdout
    stderr = err if err is not None else sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        _check_name(args.release, "--release")
        if args.namespace:
            _check_name(args.namespace, "--namespace")
        cluster, context_ns = _connect(args.kubeconfig)
        namespace = args.namespace or context_ns
        if not namespace:
            cluster.api.close()
            raise VerifyError("the release namespace is unknown: pass --namespace",
                              reason="BadArgument")
        try:
            report = collect(cluster, args, namespace)
        finally:
            cluster.api.close()
    except VerifyError as exc:
        print(f"wingman verify-privileges: error ({exc.reason}): {exc}", file=stderr)
        return 2
    if args.output == "json":
        print(json.dumps(report.to_json(), indent=2), file=stdout)
    else:
        stdout.write(render_text(report))
    return 0 if report.ok else 1


__all__ = [
    "DESIGN",
    "RIGHTS",
    "Finding",
    "Identity",
    "PodProblem",
    "Question",
    "Report",
    "Right",
    "VerifyError",
    "designed",
    "evaluate",
    "fixed_identities",
    "group_identity",
    "inspect_pod_spec",
    "questions",
    "render_text",
    "sa_identity",
    "user_identity",
    "verify_privileges_main",
]

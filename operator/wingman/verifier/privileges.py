"""``wingman verify-privileges``: proof, on a live cluster, that only the gateway's commands can
execute (as ``wingman-executor``, whose tokens only the gateway requests).

Owns the privilege model of a Wingman release (which identity may hold which dangerous right,
where) and the command that checks a live cluster against it; ``cli.py`` dispatches
``wingman verify-privileges ...`` to :func:`verify_privileges_main`, and the chart's
``helm test`` pod runs it as ServiceAccount ``wingman-verifier``.

**Access.** Every identity of the release is put to the API server's own authorizer with
SubjectAccessReviews (they store nothing), for every right in :data:`RIGHTS`, in the release
namespace, in each gateway target namespace and at cluster scope. Identities: the workers and
approvers bound by the release's RoleBindings (or given as options), the ServiceAccounts
``wingman-operator``, ``wingman-gateway``, ``wingman-executor``, ``wingman-verifier``,
``wingman-chat``,
``wingman-preview`` and ``default`` of the release namespace, any authenticated user
(``system:authenticated``) and anonymous requests.

**Design.** :func:`designed` says who may hold a right by design; any other holder is a
violation:

- release namespace: the operator creates Jobs (admission lets only the operator create gateway
  Jobs, pinned image), reads and patches Secrets (tokens, signing key, audit key), creates and
  writes ConfigMaps (the public keys, the signed audit checkpoints), patches
  ``executiongrants/status`` and deletes burn markers (Leases); the gateway patches
  ``executiongrants/status``, creates burn markers and requests tokens of ``wingman-executor``
  (``serviceaccounts/token``, that name only). Nobody deletes ConfigMaps there.
- target namespaces: the executor identity (what the gateway's kubectl commands run as) holds
  whatever *execution* rights the ``gateway.targets`` rules grant (by default patch of
  Deployments and their scale); the gateway itself holds none. Credential rights (read
  Secrets, mint ServiceAccount tokens) and escalation (impersonate, escalate, bind) are never by
  design, not even for the executor. The preview identity holds the executor's execution rights
  there (a server-side dry run is authorized like the write) as *dry runs only*: by design only
  when the cluster's admission policies prove it can do nothing else (``dry_run_confinement``:
  a ValidatingAdmissionPolicy matching every operation on every resource for exactly its user
  name, requiring ``request.dryRun == true``, failing closed, loaded, and bound with ``Deny``
  and no selector). Without that proof each of its execution rights is a violation; with it the
  summary still names the executor as the only identity that can execute.
- cluster scope: nobody (impersonation, RBAC escalation, namespace labels, ``nodes/proxy``,
  PersistentVolumes, admission policies). Impersonation is also asked by name for
  ``system:admin``, ``system:masters`` and the operator's and gateway's users: the chat
  identity may impersonate the people the values map (``resourceNames``), never these.
- deciding: only approvers may ``patch`` ApprovalRequests (append decisions; the operator
  patches them too, for kopf's progress annotations, and admission refuses it any decision)
  and ``approve`` ``environments/<environment>``; approvers and workers may create
  ExecutionGrants (workers only where ``policy.workersMayGrant``). No Wingman component holds
  any of these: in particular the chat identity never decides in its own name, it relays a
  person's decision by impersonating that person.

**Needs.** :data:`NEEDS` lists the harmless rights the roles need for Wingman to work (workers
create ApprovalRequests and, like approvers, read the policy ConfigMap ``wingman-policy``, so
agents can shape requests that pass). An identity that lacks one is reported as a note.

The Job controller, which creates gateway pods, is a Kubernetes component and is not checked.

**Pods.** Every Pod and Job in the release namespace is inspected: privileged containers,
added capabilities, ``hostNetwork``/``hostPID``/``hostIPC``, ``hostPath`` volumes (the Docker
socket named as such; gateway pods may mount exactly ``--docker-socket`` when the docker
executor is enabled), pods running as ``wingman-gateway`` with another image than the
pinned gateway image or with ephemeral containers, and any pod running as ``wingman-executor``.

**Admission policies.** Every ValidatingAdmissionPolicy the release's chart renders
(``wingman-<namespace>-<name>``, :data:`~wingman.verifier.rights.ADMISSION_POLICIES`, and the
preview's unless ``--no-preview``) must exist, with its binding of the same name binding it
with ``validationActions`` including ``Deny``; each fails closed and takes no parameters, and
its binding matches no less than the chart's (``missing_admission``): a missing or disarmed one
is a violation that names it (RBAC alone does not give what they refuse). Policies that
cannot be read are one too. Each policy's content (what it matches, its match conditions,
variables, validations and audit annotations) must still be what the chart rendered: its
digest (``policy_content_digest``) must be the one the chart put in its annotation
``wingman.dev/content-sha256``, or the policy is reported as edited; and, given the digests
the release's chart rendered (``--policy-digests``, ``$WINGMAN_POLICY_DIGESTS``: the helm test
pod's), that digest too, so that a policy edited along with its annotation is reported. That
finds drift and careless edits; whoever may edit a policy and the release's Secret may edit
both.

**Executor token audiences.** Run in a pod (the ``helm test`` pod), the verifier reads the
audiences of its own ServiceAccount token, which are the API server's (the kubelet asks for
none), and checks that the release's ``...-gateway-writes`` policy admits executor tokens for
each of them (chart value ``admission.executorTokenAudiences``); otherwise every kubectl command
of the gateway would fail, and that is reported as a violation with the value to set.

Exit status: 0 everything as designed, 1 violations (listed), 2 usage or connection errors.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from wingman.errors import ClusterError, ConfigError, shown_url
from wingman.kube import ApiError, Kube, failed_exec_plugin, load_kubeconfig
from wingman.settings import env_bool
from wingman.verifier.rights import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    NEEDS,
    OPERATOR_SA,
    PREVIEW_SA,
    RELEASE_NAMESPACE_ANNOTATION,
    REQUEST_TIMEOUT_SECONDS,
    Identity,
    Need,
    Question,
    Report,
    VerifyError,
    dry_run_confinement,
    evaluate,
    executor_audience_problems,
    fixed_identities,
    group_identity,
    inspect_pod_spec,
    missing_admission,
    need_notes,
    questions,
    render_text,
    sa_identity,
    user_identity,
)


class _Cluster:
    """The few reads and reviews verify-privileges makes, with errors turned into VerifyError.

    Each is ``wingman.kube.Kube``'s request (as every other call of Wingman's): plain JSON, no
    redirect followed (a 3xx, which an API server never sends, is no answer), at most
    ``kube.MAX_UNBOUNDED_ANSWER_BYTES`` of an answer read, ``REQUEST_TIMEOUT_SECONDS`` per
    try."""

    def __init__(self, kube: Kube, server: str) -> None:
        self.kube = kube
        #: the kubernetes ApiClient the calls are made on (its authentication, its pool)
        self.api = kube.api
        self.server = server

    def call(self, what: str, method: str, path: str, body: Any = None, *,
             query: Mapping[str, str] | None = None) -> dict[str, Any]:
        try:
            return self.kube.request(method, path, body, query=query)
        except ApiError as exc:
            detail = exc.detail
            hint = {
                401: "the API server did not accept the credentials: check KUBECONFIG or "
                     "--kubeconfig (an expired token?)",
                403: "the caller lacks a read right verify-privileges needs: run it as "
                     "ServiceAccount wingman-verifier (helm test) or as a cluster admin",
            }.get(exc.status, "")
            raise VerifyError(f"{what} failed ({exc.status}): {detail}"
                              + (f"; {hint}" if hint else ""), reason="ApiError") from None
        except ClusterError as exc:
            if exc.reason != "Unreachable":  # an answer no API server gives (a redirect...)
                raise VerifyError(f"{what} failed: {exc.message}", reason=exc.reason) from None
            cause = exc.message.rsplit(f"{shown_url(self.server)}: ", 1)[-1]
            raise VerifyError(
                f"cannot reach the API server at {shown_url(self.server)} ({what}: "
                f"{cause}): set KUBECONFIG or pass --kubeconfig with a reachable "
                "cluster (inside a pod, the in-cluster ServiceAccount configuration is used)",
                reason="Unreachable",
            ) from None

    def _review(self, label: str, user: str, groups: Sequence[str],
                attributes: Mapping[str, Any]) -> bool:
        spec: dict[str, Any] = {"groups": list(groups),
                                "resourceAttributes": {k: v for k, v in attributes.items()
                                                       if v is not None}}
        if user:
            spec["user"] = user
        review = self.call(f"SubjectAccessReview for {label}", "POST",
                           "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                           {"apiVersion": "authorization.k8s.io/v1",
                            "kind": "SubjectAccessReview", "spec": spec})
        return (review.get("status") or {}).get("allowed") is True

    def allowed(self, q: Question) -> bool:
        return self._review(q.identity.label, q.identity.user, q.identity.groups, {
            "verb": q.right.verb, "group": q.right.group, "resource": q.right.resource,
            "subresource": q.right.subresource or None, "namespace": q.namespace,
            "name": q.name})

    def has(self, identity: Identity, need: Need, namespace: str) -> bool:
        """Whether ``identity`` holds ``need`` in ``namespace`` (a SubjectAccessReview)."""
        return self._review(identity.label, identity.user, identity.groups, {
            "verb": need.verb, "group": need.group, "resource": need.resource,
            "name": need.name or None, "namespace": namespace})

    def _items(self, what: str, path: str, *, label_selector: str | None = None
               ) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        items = self.call(what, "GET", path, query=query).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    def admission(self) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """Every ValidatingAdmissionPolicy and binding of the cluster."""
        base = "/apis/admissionregistration.k8s.io/v1"
        policies = self._items("listing ValidatingAdmissionPolicies",
                               f"{base}/validatingadmissionpolicies")
        bindings = self._items("listing ValidatingAdmissionPolicyBindings",
                               f"{base}/validatingadmissionpolicybindings")
        return list(policies), list(bindings)

    def rolebindings(self, namespace: str, release: str) -> list[Mapping[str, Any]]:
        return list(self._items(
            f"listing RoleBindings of release {release!r} in {namespace}",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{quote(namespace, safe='')}"
            "/rolebindings", label_selector=f"{INSTANCE_LABEL}={release}"))

    def gateway_roles(self, release: str) -> list[Mapping[str, Any]]:
        return list(self._items(
            "listing the gateway's Roles in all namespaces (to find the target namespaces; "
            "or pass --target-namespace)", "/apis/rbac.authorization.k8s.io/v1/roles",
            label_selector=f"{INSTANCE_LABEL}={release},{COMPONENT_LABEL}=gateway"))

    def pod_specs(self, namespace: str) -> list[tuple[str, Mapping[str, Any]]]:
        ns = quote(namespace, safe="")
        pods = self._items(f"listing pods in {namespace}", f"/api/v1/namespaces/{ns}/pods")
        jobs = self._items(f"listing jobs in {namespace}",
                           f"/apis/batch/v1/namespaces/{ns}/jobs")
        out: list[tuple[str, Mapping[str, Any]]] = []
        for p in pods:
            out.append((f"pod/{(p.get('metadata') or {}).get('name')}", p.get("spec") or {}))
        for j in jobs:
            spec = ((j.get("spec") or {}).get("template") or {}).get("spec") or {}
            out.append((f"job/{(j.get('metadata') or {}).get('name')}", spec))
        return out

    def operator_gateway_image(self, namespace: str) -> str | None:
        dep = self.call(f"reading Deployment {OPERATOR_SA} in {namespace} (for the pinned "
                        "gateway image; or pass --gateway-image)", "GET",
                        f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/deployments/"
                        f"{quote(OPERATOR_SA, safe='')}")
        spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in spec.get("containers") or []:
            for e in (c or {}).get("env") or []:
                if (e or {}).get("name") == "WINGMAN_GATEWAY_IMAGE" and e.get("value"):
                    return str(e["value"])
        return None


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _connect(kubeconfig: str | None, *, need_namespace: bool = True
             ) -> tuple[_Cluster, str | None]:
    """An API client (explicit kubeconfig, $KUBECONFIG, in-cluster, ~/.kube/config, in order)
    and the context's namespace (in a pod, read only when ``need_namespace``)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    namespace: str | None = None
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    in_cluster = path is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=cfg)
            ns_file = SERVICE_ACCOUNT_NAMESPACE
            if need_namespace and ns_file.is_file():
                try:
                    namespace = ns_file.read_text(encoding="utf-8").strip() or None
                except UnicodeDecodeError:
                    raise VerifyError(f"the ServiceAccount namespace file {ns_file} is not "
                                      "UTF-8 text, while it should hold the pod's namespace; "
                                      "pass --namespace", reason="NoKubeconfig") from None
        else:
            if path is None and not Path("~/.kube/config").expanduser().is_file():
                raise VerifyError(
                    "no cluster configured: set KUBECONFIG or pass --kubeconfig (inside a "
                    "pod, the in-cluster ServiceAccount configuration is used)",
                    reason="NoKubeconfig")
            # --kubeconfig names one file, never split; KUBECONFIG may name several, merged as
            # kubectl does; neither expands ~ (kubectl does not)
            names = ([path] if kubeconfig else path.split(os.pathsep)) if path else []
            for name in filter(None, names):
                if Path(name).exists() and not Path(name).is_file():
                    raise VerifyError(f"kubeconfig {name} is not a regular file (a directory, "
                                      "a FIFO or a device): set KUBECONFIG or pass --kubeconfig "
                                      "with the kubeconfig file itself", reason="NoKubeconfig")
            if names and not any(Path(n).is_file() for n in names if n):
                raise VerifyError(f"kubeconfig {path} does not exist: set KUBECONFIG or pass "
                                  "--kubeconfig with an existing file", reason="NoKubeconfig")
            # kubectl's current context (the first file that sets one), not the library's
            files = [path] if kubeconfig and path else path
            active = load_kubeconfig(cfg, files)
            namespace = (active or {}).get("context", {}).get("namespace") or None
            command = failed_exec_plugin(files, active, cfg)
            if command is not None:
                raise VerifyError(
                    f"kubeconfig {path or '~/.kube/config'} gets its credentials from the "
                    f"command {command!r}, which failed or gave none, so every question would "
                    "be asked as system:anonymous; run 'kubectl version' with the same "
                    "kubeconfig to see the command's error, and fix it", reason="NoKubeconfig")
    except VerifyError:
        raise
    except Exception as exc:  # any kubeconfig problem is the user's to fix
        where = ("the in-cluster configuration" if in_cluster
                 else f"kubeconfig {path or '~/.kube/config'}")
        raise VerifyError(f"cannot load {where}: {exc}; set KUBECONFIG or pass --kubeconfig",
                          reason="NoKubeconfig") from exc
    cfg.retries = 1
    return _Cluster(Kube(client.ApiClient(cfg), timeout=REQUEST_TIMEOUT_SECONDS),
                    str(cfg.host)), namespace


SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def token_audiences(token: str) -> list[str]:
    """The ``aud`` claim of a ServiceAccount token (a JWT), read without verifying it: only
    to learn which audiences the API server gives its tokens. Empty when it cannot be read."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return []
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return []
    aud = claims.get("aud") if isinstance(claims, dict) else None
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def _own_audiences() -> list[str]:
    """The audiences of this pod's own ServiceAccount token (the kubelet asks for none, so
    they are the API server's); empty outside a pod."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return []
    try:
        return token_audiences(SERVICE_ACCOUNT_TOKEN.read_text())
    except OSError:
        return []


def _admission(cluster: _Cluster) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]],
                                        str | None]:
    """The cluster's admission policies and bindings (one read for every check that needs
    them), or why they cannot be read."""
    try:
        policies, bindings = cluster.admission()
    except VerifyError as exc:
        return [], [], exc.message
    return policies, bindings, None


def _preview_confinement(policies: Sequence[Mapping[str, Any]],
                         bindings: Sequence[Mapping[str, Any]], unreadable: str | None,
                         namespace: str) -> tuple[str | None, list[str]]:
    """The admission policy confining the preview identity to dry runs (or why there is none);
    a verifier that cannot read the policies proves nothing (fail closed)."""
    if unreadable is not None:
        return None, [f"the admission policies cannot be read ({unreadable})"]
    return dry_run_confinement(policies, bindings,
                               f"system:serviceaccount:{namespace}:{PREVIEW_SA}")


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
        description="Prove on a live cluster that only wingman-executor (the gateway's "
                    "commands) can execute: "
                    "SubjectAccessReviews for every Wingman identity, an inspection of the "
                    "pod specs in the release namespace, and a check that every admission "
                    "policy of the release and its binding exist, deny and hold the content "
                    "the chart rendered. Exit 0: as "
                    "designed; 1: violations; 2: usage or connection error.",
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
                       metavar="GROUP", help=f"{role} group (repeatable; default: the "
                       f"subjects of the release's {role} RoleBinding)")
        p.add_argument(f"--{role}-user", dest=f"{role}_users", action="append", default=[],
                       metavar="USER", help=f"{role} user (repeatable)")
    p.add_argument("--gateway-image", default=os.environ.get("WINGMAN_GATEWAY_IMAGE") or None,
                   help="the pinned gateway image (default: $WINGMAN_GATEWAY_IMAGE, else the "
                   "operator Deployment's)")
    p.add_argument("--docker-socket", default=os.environ.get("WINGMAN_DOCKER_SOCKET") or None,
                   metavar="PATH", help="the one hostPath gateway pods may mount (only when "
                   "the docker executor is enabled)")
    p.add_argument("--preview", action=argparse.BooleanOptionalAction, default=None,
                   help="whether the release runs previews (policy.preview.enabled), and so "
                   "has the preview's admission policies (default: $WINGMAN_PREVIEW, true or "
                   "false, else true)")
    p.add_argument("--policy-digests", default=os.environ.get("WINGMAN_POLICY_DIGESTS") or None,
                   metavar="JSON", help="the content digest of each admission policy as the "
                   "release's chart renders it, a JSON object by policy name (default: "
                   "$WINGMAN_POLICY_DIGESTS, which the helm test pod sets; without it only each "
                   "policy's own annotation is compared)")
    p.add_argument("--environment", default=os.environ.get("WINGMAN_ENVIRONMENT", ""),
                   help="shown in the report (default: $WINGMAN_ENVIRONMENT)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--workers", type=int, default=8, help="concurrent SubjectAccessReviews")
    return p


def _policy_digests(text: str | None) -> dict[str, str] | None:
    """``--policy-digests`` read: a JSON object of policy names to SHA-256 hex digests."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        value, why = None, str(exc)
    else:
        why = "not an object of policy names to SHA-256 hex digests"
    if not (isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
            for k, v in value.items())):
        raise VerifyError(f"--policy-digests ($WINGMAN_POLICY_DIGESTS) is not the chart's "
                          f"digests ({why}); pass what the chart renders into the helm test "
                          "pod, or leave it out", reason="BadArgument")
    return dict(value)


def _preview_from_env(env: Mapping[str, str]) -> bool:
    """``$WINGMAN_PREVIEW`` (default true), for want of --preview/--no-preview."""
    try:
        return env_bool(env, "WINGMAN_PREVIEW", True)
    except ConfigError as exc:
        raise VerifyError(f"{exc}; fix it, or pass --preview or --no-preview",
                          reason="BadArgument") from None


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

    qs = questions(identities, namespace, targets, environment)
    with ThreadPoolExecutor(max_workers=max(1, min(args.workers, 32))) as pool:
        answers = list(zip(qs, pool.map(cluster.allowed, qs), strict=True))
    policies, admission_bindings, unreadable = _admission(cluster)
    confined, why = _preview_confinement(policies, admission_bindings, unreadable, namespace)
    findings = evaluate(answers, confined=["preview"] if confined else [])
    holds = [f for f in findings if f.allowed and f.question.identity.role == "preview"
             and f.question.place == "target"]
    if confined and holds:
        notes.append(f"wingman-preview holds write rights in the target namespaces for server-"
                     f"side dry runs only: ValidatingAdmissionPolicy {confined} refuses it "
                     "every request that is not a dry run")
    elif holds:
        notes += [f"wingman-preview is not confined to dry runs: {w}" for w in why]
    wanted = [(ident, need) for ident in people for need in NEEDS if need.role == ident.role]
    with ThreadPoolExecutor(max_workers=max(1, min(args.workers, 32))) as pool:
        held = list(pool.map(lambda pair: cluster.has(pair[0], pair[1], namespace), wanted))
    notes += need_notes(pair for pair, ok in zip(wanted, held, strict=True) if not ok)

    config = executor_audience_problems(policies, namespace, _own_audiences())
    if unreadable is not None:  # fail closed: what cannot be read proves nothing
        config.append(f"the release's admission policies cannot be checked ({unreadable})")
    else:
        config += missing_admission(policies, admission_bindings, namespace,
                                    preview=args.preview,
                                    digests=args.digests)

    specs = cluster.pod_specs(namespace)
    problems = [p for obj, spec in specs
                for p in inspect_pod_spec(obj, spec, gateway_image=image,
                                          docker_socket=args.docker_socket)]
    return Report(namespace=namespace, release=args.release, environment=environment,
                  targets=targets, identities=identities, findings=findings,
                  pod_problems=problems, inspected=[o for o, _ in specs], notes=notes,
                  config_problems=config)


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
        if args.preview is None:
            args.preview = _preview_from_env(os.environ)
        args.digests = _policy_digests(args.policy_digests)
        _check_name(args.release, "--release")
        if args.namespace:
            _check_name(args.namespace, "--namespace")
        cluster, context_ns = _connect(args.kubeconfig, need_namespace=not args.namespace)
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


__all__ = ["verify_privileges_main"]

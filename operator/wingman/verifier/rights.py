"""The privilege model of a Wingman release, as data and pure checks.

Which identity may hold which dangerous right, where (:data:`RIGHTS`, :func:`designed`); the
SubjectAccessReview questions to ask; the findings they produce; the pod-spec inspection; the
checks of the release's admission policies and bindings (``missing_admission``: present, bound
with Deny, and with the content the chart rendered, ``policy_content_digest``); the report and
its table. ``wingman.verifier.privileges`` asks a live cluster.

Execution rights in the target namespaces belong to the executor identity
(``wingman-executor``), whose short-lived tokens only the gateway requests (one per
command); the gateway itself holds none there. The preview identity
(``wingman-preview``) needs the executor's write verbs in the target namespaces, because a
server-side dry run is authorized like the write itself; it holds them by design only while an
admission policy refuses it everything that is not a dry run (:func:`dry_run_confinement`
checks that policy and its binding, :data:`DRY_RUN_ONLY` names those rights). Without that
proof each of its write rights is a violation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from wingman.errors import WingmanError

Place = Literal["release", "target", "cluster"]
Kind = Literal["execution", "credentials", "escalation", "integrity", "decision"]

GATEWAY_SA = "wingman-gateway"
EXECUTOR_SA = "wingman-executor"
PREVIEW_SA = "wingman-preview"
CHAT_SA = "wingman-chat"
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
    ``name`` asks about one object (``resourceNames`` rules answer only such questions);
    ``{environment}`` and ``{namespace}`` in it are the release's.
    """

    verb: str
    resource: str
    group: str
    kind: Kind
    scope: Literal["namespace", "release", "cluster"]
    subresource: str = ""
    name: str = ""

    @property
    def label(self) -> str:
        sub = f"/{self.subresource}" if self.subresource else ""
        named = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.resource}{sub}{named}"

    def resolved_name(self, namespace: str, environment: str) -> str | None:
        if not self.name:
            return None
        return self.name.replace("{namespace}", namespace).replace("{environment}",
                                                                   environment)


def _r(verb: str, resource: str, group: str = "", *, kind: Kind,
       scope: Literal["namespace", "release", "cluster"] = "namespace", name: str = ""
       ) -> Right:
    resource, _, sub = resource.partition("/")
    return Right(verb, resource, group, kind, scope, sub, name)


RBAC = "rbac.authorization.k8s.io"
ADMISSION = "admissionregistration.k8s.io"

#: Every right verify-privileges asks about, for every identity.
RIGHTS: tuple[Right, ...] = (
    # Execution: run code, or change what runs (a pod template names any ServiceAccount).
    _r("create", "pods", kind="execution"),
    _r("create", "pods/exec", kind="execution"),
    _r("create", "pods/attach", kind="execution"),
    _r("patch", "pods/ephemeralcontainers", kind="execution"),
    # A binding places a pending pod on a node of the caller's choosing, past the scheduler
    # (the nodeSelector, taints and affinity admission keeps a workload's pods to).
    _r("create", "pods/binding", kind="execution"),
    _r("create", "bindings", kind="execution"),
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
    # The public keys, and the signed checkpoints of the audit trail (which no writer of the
    # trail may touch: admission also reserves that ConfigMap for the operator).
    _r("create", "configmaps", kind="integrity", scope="release"),
    _r("patch", "configmaps", kind="integrity", scope="release"),
    _r("update", "configmaps", kind="integrity", scope="release"),
    _r("delete", "configmaps", kind="integrity", scope="release"),
    _r("patch", "executiongrants/status", "wingman.dev", kind="integrity", scope="release"),
    # A request's status is what the gateway trusts: its phase, its grants, and the preview
    # that says which state an approval covers (status.preview). Only the operator writes it.
    _r("patch", "approvalrequests/status", "wingman.dev", kind="integrity", scope="release"),
    _r("update", "approvalrequests/status", "wingman.dev", kind="integrity", scope="release"),
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
    # Impersonation of the most powerful names, asked one by one: a rule limited by
    # resourceNames (the chat identity's) answers only such questions.
    _r("impersonate", "users", kind="escalation", scope="cluster", name="system:admin"),
    _r("impersonate", "groups", kind="escalation", scope="cluster", name="system:masters"),
    _r("impersonate", "users", kind="escalation", scope="cluster",
       name="system:serviceaccount:{namespace}:wingman-operator"),
    _r("impersonate", "users", kind="escalation", scope="cluster",
       name="system:serviceaccount:{namespace}:wingman-gateway"),
    _r("impersonate", "users", kind="escalation", scope="cluster",
       name="system:serviceaccount:{namespace}:wingman-executor"),
    # A token of the executor account is its execution rights: only the gateway asks for one.
    _r("create", "serviceaccounts/token", kind="credentials", scope="release",
       name="wingman-executor"),
    # Deciding: only people (approvers) decide, never a Wingman component (the chat identity
    # relays a person's decision by impersonating that person, and holds no such right).
    _r("patch", "approvalrequests", "wingman.dev", kind="decision", scope="release"),
    _r("approve", "environments", "wingman.dev", kind="decision", scope="cluster",
       name="{environment}"),
    _r("create", "executiongrants", "wingman.dev", kind="decision", scope="release"),
)

#: (role, place) -> labels of the rights that role holds there by design.
DESIGN: Mapping[tuple[str, Place], frozenset[str]] = {
    ("operator", "release"): frozenset({
        "create jobs",  # gateway Jobs only: admission rejects any other gateway Job
        "get secrets", "list secrets", "watch secrets", "patch secrets",
        "create configmaps", "patch configmaps", "update configmaps",
        "patch executiongrants/status",
        "patch approvalrequests/status", "update approvalrequests/status",
        "delete leases",  # clean-up of expired burn markers
        # kopf's progress annotations; admission refuses it any decision (by != caller,
        # no approve right)
        "patch approvalrequests",
    }),
    ("gateway", "release"): frozenset({"patch executiongrants/status", "create leases",
                                       "create serviceaccounts/token wingman-executor"}),
    ("executor", "target"): frozenset(r.label for r in RIGHTS
                                       if r.kind == "execution" and r.scope == "namespace"),
    ("approver", "release"): frozenset({"patch approvalrequests", "create executiongrants"}),
    ("approver", "cluster"): frozenset({"approve environments {environment}"}),
    # workers create grants for their own approved requests where policy.workersMayGrant
    ("worker", "release"): frozenset({"create executiongrants"}),
}


#: (role, place) -> rights that role may hold there only as dry runs: by design only while the
#: release's admission policy confines the role to dry runs (:func:`dry_run_confinement`).
DRY_RUN_ONLY: Mapping[tuple[str, Place], frozenset[str]] = {
    ("preview", "target"): DESIGN[("executor", "target")],
}


@dataclass(frozen=True)
class Need:
    """A right a role needs for Wingman to work as designed (not a dangerous one): the verifier
    asks for it too and reports, as a note, an identity that lacks it."""

    role: str
    verb: str
    resource: str
    group: str
    name: str
    why: str

    @property
    def label(self) -> str:
        return f"{self.verb} {self.resource}" + (f"/{self.name}" if self.name else "")


#: Rights the roles need in the release namespace (reads and asks, never execution).
NEEDS: tuple[Need, ...] = (
    Need("worker", "create", "approvalrequests", "wingman.dev", "",
         "workers ask for approval by creating ApprovalRequests"),
    Need("worker", "get", "configmaps", "", "wingman-policy",
         "agents read what passes: kubectl wingman policy and the MCP policy resource"),
    Need("approver", "get", "configmaps", "", "wingman-policy",
         "approvers read the environment's policy (kubectl wingman policy)"),
)


def need_notes(missing: Iterable[tuple[Identity, Need]]) -> list[str]:
    """The notes for identities that lack a right they need."""
    return [f"{ident.label} cannot {need.label}: {need.why}" for ident, need in missing]


def designed(role: str, place: Place, right: Right, confined: Iterable[str] = ()) -> bool:
    """Whether ``role`` may hold ``right`` in ``place`` by design; the roles in ``confined``
    (proven confined to dry runs) may also hold their :data:`DRY_RUN_ONLY` rights."""
    if right.label in DESIGN.get((role, place), frozenset()):
        return True
    return role in confined and right.label in DRY_RUN_ONLY.get((role, place), frozenset())


def _normal(expression: object) -> str:
    return " ".join(str(expression or "").split())


def dry_run_confinement(policies: Sequence[Mapping[str, Any]],
                        bindings: Sequence[Mapping[str, Any]], user: str
                        ) -> tuple[str | None, list[str]]:
    """Whether an admission policy refuses ``user`` every request that is not a dry run:
    (the policy's name, or None; why each candidate falls short).

    The policy must match every operation on every resource and subresource (``*``, ``*/*``)
    with no exclusions or selectors, select exactly that user name in its only match condition,
    require ``request.dryRun == true``, fail closed (``failurePolicy: Fail``) and have been
    loaded (``status.observedGeneration``); a binding must name it with ``validationActions``
    including ``Deny``, no parameters and no resource, namespace or object restriction.
    """
    problems: list[str] = []
    literal = f"request.userInfo.username == '{user}'"
    for policy in policies:
        meta = policy.get("metadata") or {}
        name = str(meta.get("name") or "")
        spec = policy.get("spec") or {}
        conditions = spec.get("matchConditions") or []
        if not any(literal in _normal(c.get("expression")) for c in conditions
                   if isinstance(c, Mapping)):
            continue
        why: list[str] = []
        if len(conditions) != 1 or _normal(conditions[0].get("expression")) != literal:
            why.append("its match conditions are not exactly the user name check")
        validations = [_normal(v.get("expression")) for v in spec.get("validations") or []
                       if isinstance(v, Mapping)]
        if not any(v in ("request.dryRun == true", "request.dryRun") for v in validations):
            why.append("no validation requires request.dryRun == true")
        if spec.get("failurePolicy", "Fail") != "Fail":
            why.append(f"failurePolicy is {spec.get('failurePolicy')}, not Fail")
        constraints = spec.get("matchConstraints") or {}
        rules = constraints.get("resourceRules") or []
        if not any(set(r.get("apiGroups") or []) >= {"*"}
                   and set(r.get("apiVersions") or []) >= {"*"}
                   and set(r.get("resources") or []) >= {"*/*"}
                   and (set(r.get("operations") or []) >= {"*"} or set(
                       r.get("operations") or []) >= {"CREATE", "UPDATE", "DELETE", "CONNECT"})
                   and not r.get("resourceNames") and r.get("scope", "*") == "*"
                   for r in rules if isinstance(r, Mapping)):
            why.append("it does not match every operation on every resource and subresource")
        for key in ("excludeResourceRules", "namespaceSelector", "objectSelector"):
            if constraints.get(key):
                why.append(f"matchConstraints.{key} narrows it")
        status = policy.get("status") or {}
        if status.get("observedGeneration") is not None and \
                status.get("observedGeneration") != meta.get("generation"):
            why.append("the API server has not loaded its current version yet")
        bound = [b for b in bindings if (b.get("spec") or {}).get("policyName") == name]
        good = [b for b in bound
                if "Deny" in ((b.get("spec") or {}).get("validationActions") or [])
                and not (b.get("spec") or {}).get("paramRef")
                and not any(((b.get("spec") or {}).get("matchResources") or {}).get(k)
                            for k in ("namespaceSelector", "objectSelector", "resourceRules",
                                      "excludeResourceRules"))]
        if not bound:
            why.append("no binding uses it")
        elif not good:
            why.append("no binding denies for it everywhere (validationActions Deny, no "
                       "selector, no parameters)")
        if not why:
            return name, []
        problems.append(f"ValidatingAdmissionPolicy {name}: {'; '.join(why)}")
    if not problems:
        problems.append(f"no ValidatingAdmissionPolicy refuses {user} requests that are not "
                        "dry runs")
    return None, problems


def executor_audience_problems(policies: Sequence[Mapping[str, Any]], namespace: str,
                               audiences: Sequence[str] | None) -> list[str]:
    """Why the gateways of the release in ``namespace`` would be refused executor tokens: the
    API server gives a token requested for no audience its own audiences (``audiences``, read
    off a token it issued, such as the verifier pod's), and the release's
    ``...-gateway-writes`` policy admits only the audiences its ``apiAudiences`` variable lists
    (chart value ``admission.executorTokenAudiences``). Every kubectl command would then fail
    (``ExecutorTokenUnavailable``). Nothing to say when the audiences are unknown (no token of
    the API server's at hand) or the policy is not found (the other checks report that)."""
    if not audiences:
        return []
    gateway = f"'system:serviceaccount:{namespace}:{GATEWAY_SA}'"
    for policy in policies:
        spec = policy.get("spec") or {}
        if not any(gateway in _normal(c.get("expression")) for c in
                   spec.get("matchConditions") or [] if isinstance(c, Mapping)):
            continue
        listed = next((v.get("expression") for v in spec.get("variables") or []
                       if isinstance(v, Mapping) and v.get("name") == "apiAudiences"), None)
        if listed is None:
            continue
        name = (policy.get("metadata") or {}).get("name")
        try:
            allowed = json.loads(str(listed))
        except ValueError:
            allowed = None
        if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
            return [f"ValidatingAdmissionPolicy {name}: its apiAudiences variable is not a "
                    "list of strings, so no executor token is admitted; reinstall the chart"]
        missing = [a for a in audiences if a not in allowed]
        if missing:
            return [f"ValidatingAdmissionPolicy {name} admits executor tokens only for "
                    f"{', '.join(map(repr, allowed)) or 'no audience'}, but this API server "
                    f"gives its tokens the audiences {', '.join(map(repr, audiences))}: every "
                    "kubectl command of the gateway would fail (ExecutorTokenUnavailable); "
                    "set the chart value admission.executorTokenAudiences to "
                    f"{json.dumps(list(audiences))} and upgrade the release"]
        return []
    return []


#: The admission policies every release renders (each with a binding of the same name), as
#: ``wingman-<release namespace>-<suffix>`` (templates/admission-policies.yaml).
ADMISSION_POLICIES: tuple[str, ...] = (
    "approvalrequests", "executiongrants", "gateway-writes", "gateway-pods", "gateway-jobs",
    "audit-checkpoints", "metadata", "service-account-tokens", "operator-jobs",
    "executor-pods", "executor-tokens", "executor-workloads",
)
#: The ones a release renders only with previews on (``policy.preview.enabled``).
PREVIEW_ADMISSION_POLICIES: tuple[str, ...] = ("preview-pods", "preview-jobs",
                                               "preview-dry-run")


#: The ones whose bindings select every namespace (the identities they follow act in the target
#: namespaces too); the others are bound to the release namespace only.
EVERYWHERE_ADMISSION_POLICIES: tuple[str, ...] = ("preview-dry-run", "executor-workloads")
_NAMESPACE_LABEL = "kubernetes.io/metadata.name"


#: The annotation on each of the release's policies holding the digest of its content as the
#: chart rendered it (:func:`policy_content_digest`; templates/admission-policies.yaml).
CONTENT_DIGEST_ANNOTATION = "wingman.dev/content-sha256"
#: The fields of a policy's spec that its digest covers: what it matches and what it enforces.
#: (failurePolicy and paramKind are checked on their own.)
CONTENT_FIELDS: tuple[str, ...] = ("matchConstraints", "matchConditions", "variables",
                                   "validations", "auditAnnotations")
#: What the API server fills into matchConstraints when the chart leaves it out: it is not a
#: change of content, and is dropped before hashing (:func:`policy_content`).
_MATCH_DEFAULTS: Mapping[str, Any] = {"matchPolicy": "Equivalent", "namespaceSelector": {},
                                      "objectSelector": {}}
_RULE_DEFAULTS: Mapping[str, Any] = {"scope": "*"}
#: Go's encoding/json (Helm's toJson) escapes these in strings; Python's json does not.
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _without(obj: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in defaults or v != defaults[k]}


def policy_content(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a ValidatingAdmissionPolicy's spec that its content digest covers
    (:data:`CONTENT_FIELDS`), without the defaults the API server adds to matchConstraints
    (``matchPolicy: Equivalent``, empty selectors, ``scope: "*"`` in each rule)."""
    out = {k: spec[k] for k in CONTENT_FIELDS if spec.get(k) is not None}
    match = out.get("matchConstraints")
    if isinstance(match, Mapping):
        match = _without(match, _MATCH_DEFAULTS)
        for key in ("resourceRules", "excludeResourceRules"):
            if isinstance(match.get(key), list):
                match[key] = [_without(r, _RULE_DEFAULTS) if isinstance(r, Mapping) else r
                              for r in match[key]]
        out["matchConstraints"] = match
    return out


def policy_content_digest(spec: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of :func:`policy_content`, byte for byte what the chart computes with
    ``toJson | sha256sum`` (Go's encoding/json: keys sorted, no spaces, non-ASCII as UTF-8,
    ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as ``\\u003c``...)."""
    text = json.dumps(policy_content(spec), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).translate(_GO_ESCAPES)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def admission_policy_names(namespace: str, *, preview: bool) -> list[str]:
    """The names of the ValidatingAdmissionPolicies (and of their bindings) that the release in
    ``namespace`` renders."""
    suffixes = ADMISSION_POLICIES + (PREVIEW_ADMISSION_POLICIES if preview else ())
    return [f"wingman-{namespace}-{s}" for s in suffixes]


def missing_admission(policies: Sequence[Mapping[str, Any]],
                      bindings: Sequence[Mapping[str, Any]], namespace: str, *,
                      preview: bool, digests: Mapping[str, str] | None = None) -> list[str]:
    """What is missing of the release's admission policies: each policy the chart renders
    must exist, fail closed (``failurePolicy`` Fail), take no parameters and match no less
    (no selector or exclusion in ``matchConstraints``), and so must its
    binding (same name), binding that policy with ``validationActions`` including ``Deny``, no
    ``paramRef`` and matching no less than the chart's (no object selector or resource rules;
    the release namespace's selector, or none for the policies that hold everywhere). Each
    policy's content must hash to the digest the chart put on it
    (:data:`CONTENT_DIGEST_ANNOTATION`, :func:`policy_content_digest`) and, where ``digests``
    (by policy name: what the chart rendered, which ``helm test`` passes) names it, to that
    digest too: whoever edits a policy may edit its annotation, not the release. Each policy
    ``digests`` names is required as well (those the chart renders only for some values, the
    chat state's with chat enabled). Without
    them the guarantees they give (who may decide, what a gateway pod may do, what an approved
    command may change...) are silently gone: RBAC alone does not give them."""
    specs = {str((p.get("metadata") or {}).get("name") or ""): p.get("spec") or {}
             for p in policies}
    have = set(specs)
    annotations = {str((p.get("metadata") or {}).get("name") or ""):
                   (p.get("metadata") or {}).get("annotations") or {} for p in policies}
    bound = {str((b.get("metadata") or {}).get("name") or ""): b.get("spec") or {}
             for b in bindings}
    restore = ("; restore it with `helm upgrade` of the release (same values), and find out "
               "who removed or changed it")
    flag = "" if not preview else (
        " (if the release runs without previews, policy.preview.enabled false, run "
        "verify-privileges with --no-preview)")
    problems: list[str] = []
    names = admission_policy_names(namespace, preview=preview)
    # What the chart rendered beyond these (the chat state's policy when chat is enabled)
    # must be there too.
    names += sorted(n for n in digests or {} if n not in names)
    for name in names:
        hint = flag if name.endswith(PREVIEW_ADMISSION_POLICIES) else ""
        if name not in have:
            problems.append(f"ValidatingAdmissionPolicy {name} of the release is missing: "
                            f"what it refuses is no longer refused{restore}{hint}")
        else:
            failure = specs[name].get("failurePolicy") or "Fail"
            if failure != "Fail":
                problems.append(f"ValidatingAdmissionPolicy {name} has failurePolicy "
                                f"{failure}, not Fail: an expression that cannot be evaluated "
                                f"admits the request{restore}")
            constraints = specs[name].get("matchConstraints") or {}
            narrows = [k for k in ("namespaceSelector", "objectSelector",
                                   "excludeResourceRules") if constraints.get(k)]
            if narrows:
                problems.append(f"ValidatingAdmissionPolicy {name} narrows what it matches "
                                f"(matchConstraints.{', matchConstraints.'.join(narrows)}), "
                                f"which the chart's does not{restore}")
            expected = annotations[name].get(CONTENT_DIGEST_ANNOTATION)
            if expected != policy_content_digest(specs[name]):
                why = (f"it has no annotation {CONTENT_DIGEST_ANNOTATION}" if expected is None
                       else f"its {', '.join(CONTENT_FIELDS)} do not hash to its annotation "
                       f"{CONTENT_DIGEST_ANNOTATION}")
                problems.append(f"ValidatingAdmissionPolicy {name}: content differs from the "
                                f"chart ({why}): what it matches or enforces was edited, or "
                                f"an older chart installed it{restore}")
            elif digests is not None and name in digests and digests[name] != expected:
                problems.append(f"ValidatingAdmissionPolicy {name}: content differs from the "
                                f"chart (its {', '.join(CONTENT_FIELDS)} do not hash to the "
                                "digest of the release's chart, though they hash to its "
                                f"annotation {CONTENT_DIGEST_ANNOTATION}): it was edited "
                                "along with the annotation, or the release was upgraded "
                                f"without its test pod{restore}")
            if specs[name].get("paramKind"):
                problems.append(f"ValidatingAdmissionPolicy {name} has a paramKind, which the "
                                "chart's has not: a binding whose parameters are missing may "
                                f"skip it{restore}")
        spec = bound.get(name)
        if spec is None:
            problems.append(f"ValidatingAdmissionPolicyBinding {name} of the release is "
                            f"missing: policy {name} is not enforced{restore}{hint}")
            continue
        if spec.get("policyName") != name:
            problems.append(f"ValidatingAdmissionPolicyBinding {name} binds policy "
                            f"{spec.get('policyName')!r}, not {name}: policy {name} is not "
                            f"enforced{restore}")
        actions = [str(a) for a in spec.get("validationActions") or []]
        if "Deny" not in actions:
            problems.append(f"ValidatingAdmissionPolicyBinding {name} has validationActions "
                            f"{actions}, without Deny: policy {name} refuses nothing"
                            f"{restore}")
        if spec.get("paramRef"):
            problems.append(f"ValidatingAdmissionPolicyBinding {name} has a paramRef, which "
                            f"the chart's has not: policy {name} may be skipped for want of "
                            f"parameters{restore}")
        narrowed = _narrowed(spec.get("matchResources") or {}, namespace,
                             everywhere=name.endswith(EVERYWHERE_ADMISSION_POLICIES))
        if narrowed:
            problems.append(f"ValidatingAdmissionPolicyBinding {name} narrows what it matches "
                            f"(matchResources.{', matchResources.'.join(narrowed)}): policy "
                            f"{name} does not hold where the chart has it hold{restore}")
    return problems


def _narrowed(match: Mapping[str, Any], namespace: str, *, everywhere: bool) -> list[str]:
    """The fields of a binding's ``matchResources`` that match less than the chart's binding
    (as read back, with the API server's defaults: empty selectors, ``matchPolicy``)."""
    out = [key for key in ("objectSelector", "resourceRules", "excludeResourceRules")
           if match.get(key)]
    selector = match.get("namespaceSelector") or {}
    release = {"matchLabels": {_NAMESPACE_LABEL: namespace}}
    if selector and (everywhere or {k: v for k, v in selector.items() if v} != release):
        out.insert(0, "namespaceSelector")
    return out


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
        sa_identity("executor", namespace, EXECUTOR_SA),
        sa_identity("verifier", namespace, VERIFIER_SA),
        sa_identity("chat", namespace, CHAT_SA),
        sa_identity("preview", namespace, PREVIEW_SA),
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
    name: str | None = None  # the object asked about (Right.name, resolved)

    @property
    def label(self) -> str:
        """The right as asked: with the object's resolved name."""
        r = self.right
        if self.name is None:
            return r.label
        sub = f"/{r.subresource}" if r.subresource else ""
        return f"{r.verb} {r.resource}{sub} {self.name}"


def questions(identities: Sequence[Identity], namespace: str,
              targets: Sequence[str], environment: str = "") -> list[Question]:
    """Every question to ask: each identity, each right, everywhere the right matters."""
    out: list[Question] = []
    for ident in identities:
        for right in RIGHTS:
            name = right.resolved_name(namespace, environment)
            if right.name and not name:
                continue
            if right.scope == "cluster":
                out.append(Question(ident, "cluster", None, right, name))
                continue
            out.append(Question(ident, "release", namespace, right, name))
            if right.scope == "namespace":
                out.extend(Question(ident, "target", t, right, name) for t in targets)
    return out


@dataclass(frozen=True)
class Finding:
    """One answered question, judged against the design."""

    question: Question
    allowed: bool
    expected: bool  # held by design
    dry_run_only: bool = False  # held by design as dry runs only (admission confines it)

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
        return (f"{q.identity.label} may {q.label} in {where} "
                f"({q.right.kind} right; {design})")


def evaluate(answers: Iterable[tuple[Question, bool]], confined: Iterable[str] = ()
             ) -> list[Finding]:
    """Judge each (question, allowed) pair against :func:`designed`; ``confined``: the roles
    proven confined to dry runs."""
    roles = frozenset(confined)
    out = []
    for q, allowed in answers:
        plain = designed(q.identity.role, q.place, q.right)
        expected = plain or designed(q.identity.role, q.place, q.right, roles)
        out.append(Finding(q, allowed, expected, expected and not plain))
    return out


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
    if sa in (GATEWAY_SA, PREVIEW_SA):
        problems += _token_problems(spec)
    if sa == EXECUTOR_SA:
        problems.append(f"runs as {EXECUTOR_SA}, whose tokens only the gateway may hold (one "
                        "per command); no pod runs as it")
    return [PodProblem(obj, sa, p) for p in problems]


POD_TOKEN_SECONDS = 600
"""The longest life of a gateway or preview pod's own ServiceAccount token
(``operator.manifests.SERVICE_ACCOUNT_TOKEN_SECONDS``; the admission policies' limit too)."""


def _token_problems(spec: Mapping[str, Any]) -> list[str]:
    """A gateway or preview pod spec's ServiceAccount tokens beyond its own short-lived one:
    the automounted token, a projection for another audience or of a longer life."""
    problems: list[str] = []
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("mounts the automounted ServiceAccount token (automountServiceAccount"
                        "Token is not false; its life the API server extends to a year); a Job "
                        "an earlier release made goes after its ttlSecondsAfterFinished")
    for vol in spec.get("volumes") or []:
        for source in ((vol or {}).get("projected") or {}).get("sources") or []:
            token = (source or {}).get("serviceAccountToken")
            if not isinstance(token, Mapping):
                continue
            audience = token.get("audience")
            seconds = token.get("expirationSeconds")
            if audience:
                problems.append(f"projects a ServiceAccount token for audience {audience} in "
                                f"volume {vol.get('name', '?')}")
            if not isinstance(seconds, int) or seconds > POD_TOKEN_SECONDS:
                problems.append(f"projects a ServiceAccount token that lives "
                                f"{seconds if isinstance(seconds, int) else 'an hour (unset)'}"
                                f"{' s' if isinstance(seconds, int) else ''}, more than "
                                f"{POD_TOKEN_SECONDS} s, in volume {vol.get('name', '?')}")
    return problems


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
    #: The release's configuration disagreeing with the cluster (executor_audience_problems,
    #: missing_admission).
    config_problems: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        return ([f.describe() for f in self.findings if f.violation]
                + [p.describe() for p in self.pod_problems] + list(self.config_problems))

    @property
    def ok(self) -> bool:
        return not self.violations

    def executors(self, namespace: str) -> list[str]:
        """The identities holding any execution right in ``namespace``."""
        seen: dict[str, None] = {}
        for f in self.findings:
            q = f.question
            if f.allowed and q.namespace == namespace and q.right.kind == "execution" \
                    and not f.dry_run_only:
                seen[q.identity.label] = None
        return list(seen)

    def summary(self) -> str:
        rights = sum(f.violation for f in self.findings)
        pods = len(self.pod_problems)
        config = len(self.config_problems)
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
        return (f"FAIL: {rights + pods + config} violations ({rights} access, {pods} pod spec"
                + (f", {config} configuration" if config else "") + f"); {counts}")

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
                "right": f.question.label,
                "group": f.question.right.group,
                "kind": f.question.right.kind,
                "allowed": f.allowed,
                "expected": _expected(f),
                "result": f.result,
            } for f in self.findings],
            "inspected": self.inspected,
            "podProblems": [{"object": p.obj, "serviceAccount": p.service_account,
                             "problem": p.problem} for p in self.pod_problems],
            "notes": self.notes,
            "configProblems": self.config_problems,
            "violations": self.violations,
            "ok": self.ok,
            "summary": self.summary(),
        }


def _expected(f: Finding) -> str:
    return "dry runs only" if f.dry_run_only else "by design" if f.expected else "denied"


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
             f.question.label, "yes" if f.allowed else "no",
             _expected(f), f.result) for f in report.findings]
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


__all__ = [
    "ADMISSION",
    "ADMISSION_POLICIES",
    "CHAT_SA",
    "COMPONENT_LABEL",
    "CONTENT_DIGEST_ANNOTATION",
    "CONTENT_FIELDS",
    "DESIGN",
    "DOCKER_SOCKETS",
    "DRY_RUN_ONLY",
    "EVERYWHERE_ADMISSION_POLICIES",
    "EXECUTOR_SA",
    "GATEWAY_SA",
    "INSTANCE_LABEL",
    "NEEDS",
    "OPERATOR_SA",
    "POD_TOKEN_SECONDS",
    "PREVIEW_ADMISSION_POLICIES",
    "PREVIEW_SA",
    "RBAC",
    "RELEASE_NAMESPACE_ANNOTATION",
    "REQUEST_TIMEOUT_SECONDS",
    "RIGHTS",
    "VERIFIER_SA",
    "Finding",
    "Identity",
    "Kind",
    "Need",
    "Place",
    "PodProblem",
    "Question",
    "Report",
    "Right",
    "VerifyError",
    "admission_policy_names",
    "designed",
    "dry_run_confinement",
    "evaluate",
    "executor_audience_problems",
    "fixed_identities",
    "group_identity",
    "holders_by_design",
    "inspect_pod_spec",
    "missing_admission",
    "need_notes",
    "policy_content",
    "policy_content_digest",
    "questions",
    "render_text",
    "sa_identity",
    "user_identity",
]

"""Least privilege, proven by the API server: SubjectAccessReviews for every Wingman identity.

The chart is installed by a real `helm install` with the PRD values (workers may not grant) and
the TEST values (workers may). Every answer comes from the API server's RBAC authorizer, asked
as admin on behalf of the identity, so what these tests show is what the cluster enforces.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.chart import (
    Release,
    approver_groups,
    can,
    installed,
    sa_groups,
    sa_user,
    worker_groups,
)
from wingman.dev.cluster import LocalCluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prd(cluster: LocalCluster, crds: Path) -> Iterator[Release]:
    s = uuid.uuid4().hex[:8]
    with installed(cluster, "prd", namespace=f"rbac-prd-{s}",
                   target_namespace=f"rbac-apps-{s}") as release:
        yield release


@dataclass(frozen=True)
class Check:
    """One question: may ``who`` do ``verb`` on ``resource`` ``where``?"""

    who: str  # worker | approver | operator | gateway | executor | verifier
    verb: str
    resource: str
    where: str = "release"  # release | target | other | cluster
    expected: bool = False
    group: str = ""
    subresource: str | None = None
    name: str | None = None

    @property
    def id(self) -> str:
        sub = f"/{self.subresource}" if self.subresource else ""
        name = f"/{self.name}" if self.name else ""
        verdict = "may" if self.expected else "may-not"
        return f"{self.who}-{verdict}-{self.verb}-{self.resource}{sub}{name}@{self.where}"


W = "wingman.dev"
LEADER = "wingman-operator-leader"
CHECKS = [
    # Workers ask and read; nothing else.
    Check("worker", "create", "approvalrequests", group=W, expected=True),
    Check("worker", "get", "approvalrequests", group=W, expected=True),
    Check("worker", "watch", "executiongrants", group=W, expected=True),
    Check("worker", "list", "events", expected=True),
    Check("worker", "create", "executiongrants", group=W),  # PRD: workersMayGrant false
    Check("worker", "patch", "approvalrequests", group=W),
    Check("worker", "update", "approvalrequests", group=W),
    Check("worker", "delete", "approvalrequests", group=W),
    Check("worker", "patch", "approvalrequests", group=W, subresource="status"),
    Check("worker", "update", "executiongrants", group=W, subresource="status"),
    Check("worker", "approve", "environments", group=W, where="cluster", name="prd"),
    Check("worker", "get", "secrets"),
    Check("worker", "list", "secrets"),
    Check("worker", "watch", "secrets"),
    Check("worker", "create", "pods"),
    Check("worker", "create", "pods", subresource="exec"),
    Check("worker", "create", "jobs", group="batch"),
    Check("worker", "create", "cronjobs", group="batch"),
    Check("worker", "create", "deployments", group="apps"),
    Check("worker", "patch", "deployments", group="apps", where="target"),
    # Approvers decide and grant; they cannot read secrets or run workloads.
    Check("approver", "patch", "approvalrequests", group=W, expected=True),
    Check("approver", "update", "approvalrequests", group=W, expected=True),
    Check("approver", "create", "executiongrants", group=W, expected=True),
    Check("approver", "delete", "executiongrants", group=W, expected=True),
    Check("approver", "approve", "environments", group=W, where="cluster", name="prd",
          expected=True),
    Check("approver", "approve", "environments", group=W, where="cluster", name="test"),
    Check("approver", "create", "approvalrequests", group=W),
    Check("approver", "patch", "approvalrequests", group=W, subresource="status"),
    Check("approver", "get", "secrets"),
    Check("approver", "create", "pods"),
    Check("approver", "create", "pods", subresource="exec"),
    Check("approver", "create", "jobs", group="batch"),
    Check("approver", "patch", "deployments", group="apps", where="target"),
    # The operator manages its resources, Secrets and Jobs, but executes nothing.
    Check("operator", "patch", "approvalrequests", group=W, subresource="status",
          expected=True),
    Check("operator", "update", "executiongrants", group=W, subresource="status",
          expected=True),
    Check("operator", "delete", "approvalrequests", group=W, expected=True),  # retention
    Check("operator", "delete", "executiongrants", group=W, expected=True),
    Check("operator", "create", "secrets", expected=True),
    Check("operator", "create", "jobs", group="batch", expected=True),
    Check("operator", "delete", "jobs", group="batch", expected=True),
    Check("operator", "update", "configmaps", expected=True),
    Check("operator", "delete", "leases", group="coordination.k8s.io", expected=True),
    Check("operator", "create", "events", expected=True),
    Check("operator", "patch", "leases", group="coordination.k8s.io", name=LEADER,
          expected=True),
    Check("operator", "patch", "leases", group="coordination.k8s.io"),  # only its own Lease
    Check("operator", "watch", "customresourcedefinitions", group="apiextensions.k8s.io",
          where="cluster", expected=True),
    Check("operator", "create", "leases", group="coordination.k8s.io"),
    Check("operator", "update", "approvalrequests", group=W),  # never the spec or metadata
    Check("operator", "patch", "approvalrequests", group=W),
    Check("operator", "create", "pods"),
    Check("operator", "create", "pods", subresource="exec"),
    Check("operator", "create", "pods", subresource="attach"),
    Check("operator", "patch", "pods", subresource="ephemeralcontainers"),
    Check("operator", "create", "deployments", group="apps"),
    Check("operator", "create", "cronjobs", group="batch"),
    Check("operator", "create", "serviceaccounts", subresource="token", name="wingman-gateway"),
    Check("operator", "create", "serviceaccounts", subresource="token",
          name="wingman-executor"),
    Check("operator", "approve", "environments", group=W, where="cluster", name="prd"),
    Check("operator", "get", "deployments", group="apps", where="target"),
    Check("operator", "patch", "deployments", group="apps", where="target"),
    Check("operator", "get", "secrets", where="target"),
    Check("operator", "create", "jobs", group="batch", where="target"),
    Check("operator", "create", "secrets", where="other"),
    Check("operator", "impersonate", "users", where="cluster"),
    Check("operator", "escalate", "roles", group="rbac.authorization.k8s.io"),
    Check("operator", "bind", "roles", group="rbac.authorization.k8s.io"),
    Check("operator", "patch", "namespaces", where="cluster"),
    # The executor (what the gateway's commands run as): the only execution rights, only in
    # the target namespace, and nothing at all in the release namespace.
    Check("executor", "patch", "deployments", group="apps", where="target", expected=True),
    Check("executor", "get", "deployments", group="apps", where="target", expected=True),
    Check("executor", "patch", "deployments", group="apps", where="target",
          subresource="scale", expected=True),
    Check("executor", "list", "replicasets", group="apps", where="target", expected=True),
    Check("executor", "get", "executiongrants", group=W),
    Check("executor", "get", "approvalrequests", group=W),
    Check("executor", "patch", "executiongrants", group=W, subresource="status"),
    Check("executor", "create", "leases", group="coordination.k8s.io"),
    Check("executor", "create", "serviceaccounts", subresource="token",
          name="wingman-executor"),
    Check("executor", "create", "serviceaccounts", subresource="token",
          name="wingman-gateway"),
    Check("executor", "delete", "deployments", group="apps", where="target"),
    Check("executor", "get", "secrets", where="target"),
    # The gateway: its grant, its burn marker, and tokens of the executor account only.
    Check("gateway", "create", "serviceaccounts", subresource="token",
          name="wingman-executor", expected=True),
    Check("gateway", "create", "serviceaccounts", subresource="token",
          name="wingman-gateway"),
    Check("gateway", "create", "serviceaccounts", subresource="token"),
    Check("gateway", "get", "deployments", group="apps", where="target"),
    Check("gateway", "patch", "deployments", group="apps", where="target"),
    Check("gateway", "get", "approvalrequests", group=W, expected=True),
    Check("gateway", "get", "executiongrants", group=W, expected=True),
    Check("gateway", "patch", "executiongrants", group=W, subresource="status", expected=True),
    Check("gateway", "create", "leases", group="coordination.k8s.io", expected=True),
    Check("gateway", "get", "leases", group="coordination.k8s.io", expected=True),
    Check("gateway", "delete", "leases", group="coordination.k8s.io"),
    Check("gateway", "update", "leases", group="coordination.k8s.io"),
    Check("gateway", "patch", "executiongrants", group=W),
    Check("gateway", "patch", "approvalrequests", group=W),
    Check("gateway", "patch", "approvalrequests", group=W, subresource="status"),
    Check("gateway", "patch", "deployments", group="apps"),  # in its own namespace
    Check("gateway", "patch", "deployments", group="apps", where="other"),
    Check("gateway", "delete", "deployments", group="apps", where="target"),
    Check("gateway", "create", "deployments", group="apps", where="target"),
    Check("gateway", "get", "secrets"),
    Check("gateway", "get", "secrets", where="target"),
    Check("gateway", "create", "pods"),
    Check("gateway", "create", "pods", where="target"),
    Check("gateway", "create", "pods", subresource="exec", where="target"),
    Check("gateway", "get", "jobs", group="batch", expected=True),  # its own Job's deadline
    Check("gateway", "list", "jobs", group="batch"),
    Check("gateway", "patch", "jobs", group="batch"),
    Check("gateway", "create", "jobs", group="batch"),
    Check("gateway", "update", "configmaps"),
    # The signed audit checkpoints (a ConfigMap) are out of reach of the trail's writers.
    Check("gateway", "patch", "configmaps"),
    Check("gateway", "create", "configmaps"),
    Check("gateway", "delete", "configmaps"),
    Check("operator", "delete", "configmaps"),
    # The helm-test verifier only asks questions and reads pods.
    Check("verifier", "create", "subjectaccessreviews", group="authorization.k8s.io",
          where="cluster", expected=True),
    Check("verifier", "list", "pods", expected=True),
    Check("verifier", "get", "secrets"),
    Check("verifier", "create", "pods"),
    Check("verifier", "list", "pods", where="target"),
]


def _identity(release: Release, who: str) -> tuple[str, list[str]]:
    ns = release.namespace
    if who == "worker":
        return "alice", worker_groups(release.env)
    if who == "approver":
        return "bob", approver_groups(release.env)
    name = {"operator": "wingman-operator", "gateway": "wingman-gateway",
            "executor": "wingman-executor", "verifier": "wingman-verifier"}[who]
    return sa_user(ns, name), sa_groups(ns)


def _namespace(release: Release, where: str) -> str | None:
    return {"release": release.namespace, "target": release.target_namespace,
            "other": "default", "cluster": None}[where]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.id)
def test_access(cluster: LocalCluster, prd: Release, check: Check) -> None:
    user, groups = _identity(prd, check.who)
    allowed = can(cluster, user=user, groups=groups, verb=check.verb, resource=check.resource,
                  group=check.group, namespace=_namespace(prd, check.where),
                  subresource=check.subresource, name=check.name)
    assert allowed is check.expected, (
        f"{user} {'can' if allowed else 'cannot'} {check.verb} {check.resource}"
        f"{'/' + check.subresource if check.subresource else ''} in {check.where}"
    )


def test_nobody_but_the_executor_may_change_target_workloads(
    cluster: LocalCluster, prd: Release,
) -> None:
    """The SAR matrix of SECURITY-NOTES §1.8 for the target namespace."""
    for who in ("worker", "approver", "operator", "verifier", "gateway", "executor"):
        user, groups = _identity(prd, who)
        for verb, resource, group, sub in [
            ("patch", "deployments", "apps", None),
            ("update", "deployments", "apps", "scale"),
            ("create", "pods", "", None),
            ("create", "pods", "", "exec"),
            ("get", "secrets", "", None),
        ]:
            allowed = can(cluster, user=user, groups=groups, verb=verb, resource=resource,
                          group=group, namespace=prd.target_namespace, subresource=sub)
            expected = who == "executor" and resource == "deployments"
            assert allowed is expected, f"{who}: {verb} {resource}/{sub} -> {allowed}"


def test_workers_may_grant_where_the_policy_allows(cluster: LocalCluster, crds: Path) -> None:
    s = uuid.uuid4().hex[:8]
    with installed(cluster, "test", namespace=f"rbac-test-{s}",
                   target_namespace=f"rbac-test-apps-{s}") as release:
        user, groups = _identity(release, "worker")
        assert can(cluster, user=user, groups=groups, verb="create", resource="executiongrants",
                   group=W, namespace=release.namespace)
        assert not can(cluster, user=user, groups=groups, verb="delete",
                       resource="executiongrants", group=W, namespace=release.namespace)
        # TEST workers and approvers have no rights in other environments' namespaces.
        assert not can(cluster, user=user, groups=groups, verb="create",
                       resource="approvalrequests", group=W, namespace="default")


def test_no_release_reaches_into_another_releases_namespace(cluster: LocalCluster,
                                                             prd: Release) -> None:
    """A test release whose gateway.targets names prd's namespace would get rights over prd's
    operator; a release installed into prd's target namespace would be prd's target. Both
    fail at install, naming the other release."""
    from support.chart import CHART_DIR, set_args, values_file

    s = uuid.uuid4().hex[:8]
    into_prd = cluster.helm(
        "install", "other", str(CHART_DIR), "--namespace", f"rbac-other-{s}",
        "-f", str(values_file("test")),
        *set_args({"gateway.targets": [{"namespace": prd.namespace}],
                   "audit.file.persistence.enabled": False}), check=False)
    assert into_prd.returncode != 0
    assert f'namespace "{prd.namespace}", which holds another Wingman release' in \
        into_prd.stderr, into_prd.stderr
    in_target = cluster.helm(
        "install", "other", str(CHART_DIR), "--namespace", prd.target_namespace,
        "-f", str(values_file("test")),
        *set_args({"gateway.targets": [{"namespace": f"rbac-other-apps-{s}"}],
                   "audit.file.persistence.enabled": False}), check=False)
    assert in_target.returncode != 0
    assert (f'namespace "{prd.target_namespace}" is a gateway target of the Wingman release '
            f'in namespace "{prd.namespace}"') in in_target.stderr, in_target.stderr
    for ns in (f"rbac-other-{s}", prd.target_namespace):
        listed = cluster.helm("list", "-q", "--namespace", ns)
        assert "other" not in listed.stdout.split()


def test_escalating_target_rules_need_the_opt_in_and_stay_the_executors(
    cluster: LocalCluster, prd: Release, crds: Path,
) -> None:
    """`helm upgrade` refuses a target rule that reaches other identities, naming the target,
    the rule and the opt-in, and the executor's rights stay as they were; with
    allowEscalatingRules the API server grants the rule to the executor (what the gateway's
    commands run as), never to the gateway itself nor to the preview."""
    from support.chart import CHART_DIR, set_args, values_file

    exec_rule = {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}
    read_rule = {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}
    refused = cluster.helm(
        "upgrade", "wingman", str(CHART_DIR), "--namespace", prd.namespace,
        "-f", str(values_file("prd")),
        *set_args({"gateway.targets": [{"namespace": prd.target_namespace,
                                        "rules": [exec_rule]}],
                   "audit.file.persistence.enabled": False}), check=False)
    assert refused.returncode != 0
    assert f'gateway.targets: namespace "{prd.target_namespace}", rules[0]' in refused.stderr, \
        refused.stderr
    assert "set allowEscalatingRules: true on this target" in refused.stderr
    user, groups = _identity(prd, "executor")
    assert not can(cluster, user=user, groups=groups, verb="create", resource="pods",
                   subresource="exec", namespace=prd.target_namespace)
    assert can(cluster, user=user, groups=groups, verb="patch", resource="deployments",
               group="apps", namespace=prd.target_namespace)

    s = uuid.uuid4().hex[:8]
    target = f"rbac-opt-apps-{s}"
    with installed(cluster, "test", namespace=f"rbac-opt-{s}", target_namespace=target,
                   values={"gateway.targets": [{"namespace": target,
                                                "allowEscalatingRules": True,
                                                "rules": [exec_rule, read_rule]}]}) as release:
        executor = _identity(release, "executor")
        gateway = _identity(release, "gateway")
        preview = sa_user(release.namespace, "wingman-preview"), sa_groups(release.namespace)
        for (user, groups), may_exec, may_read in ((executor, True, True),
                                                   (gateway, False, False),
                                                   (preview, False, True)):
            assert can(cluster, user=user, groups=groups, verb="create", resource="pods",
                       subresource="exec", namespace=target) is may_exec, user
            assert can(cluster, user=user, groups=groups, verb="get", resource="deployments",
                       group="apps", namespace=target) is may_read, user

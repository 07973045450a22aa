"""Retention: finished requests and grants (and their Jobs and Secrets) are deleted after the
policy's retention; the audit trail keeps their story and the CLI says where to find it."""

from __future__ import annotations

import contextlib
import io
import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.chart import APPROVER, DEFAULT_GATEWAY_IMAGE, WORKER, approver_groups, installed
from support.operator import OperatorProcess, get, wait_for
from wingman.audit import records_about, show_main, verify
from wingman.cli.main import main as cli
from wingman.dev.node import NodeHarness
from wingman.operator import manifests


@pytest.fixture
def release(cluster: Any, crds: Path, tmp_path: Path) -> Iterator[tuple[str, str, OperatorProcess]]:
    ns = f"wm-ret-{uuid.uuid4().hex[:8]}"
    apps = f"{ns}-apps"
    values = {"operator.replicas": 0, "policy.retentionSeconds": 3,
              "policy.allowlist": [f"kubectl rollout restart deployment/{{name}} -n {apps}"]}
    with installed(cluster, "test", namespace=ns, target_namespace=apps, values=values):
        cluster.kubectl("create", "deployment", "web", "-n", apps,
                        "--image=registry.k8s.io/pause:3.9")
        op = OperatorProcess(cluster, ns, tmp_path / "operator",
                             extra_env={"WINGMAN_AUDIT_VOLUME_CLAIM": "wingman-audit"})
        op.start()
        try:
            yield ns, apps, op
        finally:
            op.stop()


def test_finished_objects_are_retired_and_their_story_stays_in_the_audit_trail(
        cluster: Any, release: tuple[str, str, OperatorProcess], tmp_path: Path) -> None:
    ns, apps, op = release
    command = f"kubectl rollout restart deployment/web -n {apps}"
    worker = {"user": WORKER, "groups": ["wingman:workers"]}
    approver = {"user": APPROVER, "groups": approver_groups("test")}
    body = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": "done"},
            "spec": {"requester": WORKER, "environment": "test", "instruction": "restart",
                     "commands": [command]}}
    cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(body), **worker)
    wait_for("auto-approved", lambda: (get(cluster, "ar", ns, "done") or {}).get(
        "status", {}).get("phase") == "AutoApproved", 60, on_timeout=op.log_tail)
    grant = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
             "metadata": {"name": "done-1"},
             "spec": {"approvalRef": {"name": "done"}, "command": command,
                      "requester": WORKER}}
    with NodeHarness(cluster=cluster, namespaces=[ns], workdir=tmp_path / "node",
                     gateway_image=DEFAULT_GATEWAY_IMAGE,
                     volume_dirs={"wingman-audit": op.audit_path.parent}):
        cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(grant), **worker)
        wait_for("the command ran", lambda: (get(cluster, "eg", ns, "done-1") or {}).get(
            "status", {}).get("phase") == "Succeeded", 120, on_timeout=op.log_tail)
        job = wait_for("the Job finished", lambda: (j := get(cluster, "job", ns, "done-1-gw"))
                       and (j.get("status") or {}).get("succeeded") and j, 60)
    # the grant is final: retired after the retention, its Job with it (owner reference)
    wait_for("the grant retired", lambda: get(cluster, "eg", ns, "done-1") is None, 60,
             on_timeout=op.log_tail)
    wait_for("its Job deleted", lambda: get(cluster, "job", ns, "done-1-gw") is None, 60)
    token_secret = manifests.job_token_secret(job)
    assert token_secret is not None and token_secret.startswith("done-1-gw-token-")
    assert get(cluster, "secret", ns, token_secret) is None
    # the approval is still usable (not final), so it stays until it is rejected or expires
    assert get(cluster, "ar", ns, "done") is not None
    reject = [{"op": "add", "path": "/spec/decisions", "value": [
        {"verdict": "Reject", "by": APPROVER, "reason": "done with it"}]}]
    cluster.kubectl("patch", "ar", "done", "-n", ns, "--type=json", "-p", json.dumps(reject),
                    **approver)
    wait_for("the request retired", lambda: get(cluster, "ar", ns, "done") is None, 60,
             on_timeout=op.log_tail)

    story = [r["event"] for r in records_about(str(op.audit_path), "done", ns)]
    assert story[0] == "ApprovalReviewed" and story[-1] == "ApprovalRetired"
    assert "ApprovalCommandGranted" in story and "ApprovalRevoked" in story
    grant_story = [r["event"] for r in records_about(str(op.audit_path), "done-1", ns)]
    for event in ("TokenMinted", "GrantAuthorized", "GatewayExecuted", "GrantRetired"):
        assert event in grant_story, grant_story
    retired = next(r for r in records_about(str(op.audit_path), "done-1", ns)
                   if r["event"] == "GrantRetired")
    assert retired["data"]["phase"] == "Succeeded" and retired["data"]["retentionSeconds"] == 3
    assert job["metadata"]["uid"] in json.dumps(list(records_about(str(op.audit_path),
                                                                    "done-1", ns)))
    assert verify(str(op.audit_path)).ok
    out = io.StringIO()
    assert show_main(str(op.audit_path), "done-1", ns, out=out) == 0
    assert '"event": "GrantRetired"' in out.getvalue()

    metrics = op.metrics()
    assert 'wingman_retired_total{environment="test",resource="executiongrants"} 1.0' in \
        metrics
    assert 'wingman_retired_total{environment="test",resource="approvalrequests"} 1.0' in \
        metrics

    # the CLI says where a retired name's story is
    kubeconfig = cluster.kubeconfig_for(WORKER, ["wingman:workers"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli(["describe", "done", "-n", ns, "--kubeconfig", str(kubeconfig)])
    text = " ".join(err.getvalue().split())
    assert code != 0
    assert "retired after the environment's retention" in text, text
    assert f"wingman audit show <audit target> --subject done -n {ns}" in text


def _in_phase(cluster: Any, kind: str, ns: str, name: str, phase: str) -> Callable[[], bool]:
    """A probe of whether object ``name`` is in ``phase`` (bound to that name, for a wait
    inside a loop)."""
    return lambda: (get(cluster, kind, ns, name) or {}).get("status", {}).get("phase") == phase


def test_a_grant_the_api_server_refuses_to_delete_keeps_back_only_itself_and_its_request(
        cluster: Any, release: tuple[str, str, OperatorProcess]) -> None:
    """A cluster's own admission policy refuses to delete one grant (kept for an
    investigation): the other finished objects are still retired, the refused one and its
    request stay, and its retirement is audited once and reported by one Warning Event
    however often the sweep retries it; every refusal is counted."""
    ns, apps, op = release
    command = f"kubectl rollout restart deployment/web -n {apps}"
    worker = {"user": WORKER, "groups": ["wingman:workers"]}
    approver = {"user": APPROVER, "groups": approver_groups("test")}
    policy = f"{ns}-keep-stuck"
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": policy},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [
                      {"apiGroups": ["wingman.dev"], "apiVersions": ["*"],
                       "operations": ["DELETE"], "resources": ["executiongrants"]}]},
                  "validations": [{"expression": "oldObject.metadata.name != 'stuck-1'",
                                   "message": "kept for an investigation"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1",
         "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": policy},
         "spec": {"policyName": policy, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {"matchLabels": {
                      "kubernetes.io/metadata.name": ns}}}}}]}))
    try:
        for name in ("stuck", "free"):
            cluster.kubectl("create", "-n", ns, "-f", "-", **worker, input=json.dumps({
                "apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
                "metadata": {"name": name},
                "spec": {"requester": WORKER, "environment": "test", "instruction": "restart",
                         "commands": [command]}}))
            wait_for(f"{name} auto-approved", _in_phase(cluster, "ar", ns, name, "AutoApproved"),
                     60, on_timeout=op.log_tail)
            # a command the request does not hold: denied at once, final, nothing to run
            cluster.kubectl("create", "-n", ns, "-f", "-", **worker, input=json.dumps({
                "apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                "metadata": {"name": f"{name}-1"},
                "spec": {"approvalRef": {"name": name}, "requester": WORKER,
                         "command": f"kubectl rollout restart deployment/other -n {apps}"}}))
            wait_for(f"{name}-1 denied", _in_phase(cluster, "eg", ns, f"{name}-1", "Denied"), 60,
                     on_timeout=op.log_tail)
            reject = [{"op": "add", "path": "/spec/decisions", "value": [
                {"verdict": "Reject", "by": APPROVER, "reason": "done"}]}]
            cluster.kubectl("patch", "ar", name, "-n", ns, "--type=json", "-p",
                            json.dumps(reject), **approver)
        wait_for("the free request retired", lambda: get(cluster, "ar", ns, "free") is None, 60,
                 on_timeout=op.log_tail)
        assert get(cluster, "eg", ns, "free-1") is None
        wait_for("the refused delete retried", lambda: 'wingman_reconcile_errors_total{'
                 'resource="housekeeping"} 3.0' in op.metrics(), 60, on_timeout=op.log_tail)
        assert get(cluster, "eg", ns, "stuck-1") is not None
        assert get(cluster, "ar", ns, "stuck") is not None  # its grant is still there
        events = [r["event"] for r in records_about(str(op.audit_path), "stuck-1", ns)]
        assert events.count("GrantRetired") == 1, events
        assert "ApprovalRetired" not in [
            r["event"] for r in records_about(str(op.audit_path), "stuck", ns)]
        refusals = re.search(r'^wingman_retirement_refused_total\{environment="test",'
                             r'resource="executiongrants"\} (\S+)$', op.metrics(), re.MULTILINE)
        assert refusals and float(refusals.group(1)) >= 3, refusals
        assert 'wingman_retirement_refused_total{environment="test",resource="approvalrequests"}' \
            not in op.metrics()
        events = wait_for("the refusal reported", lambda: refused_events(cluster, ns), 30,
                          on_timeout=op.log_tail)
        assert [(e["involvedObject"]["name"], e["involvedObject"]["kind"], e["type"])
                for e in events] == [("stuck-1", "ExecutionGrant", "Warning")], events
        message = events[0]["message"]
        assert "refused to delete this ExecutionGrant after the retention (3 s)" in message
        assert "kept for an investigation" in message, message
        assert "admission policies and webhooks that match DELETE of " \
            "executiongrants.wingman.dev" in message, message
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
                        policy, "--ignore-not-found")


def refused_events(cluster: Any, ns: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "events", "-n", ns, "-o", "json",
                          "--field-selector", "reason=RetirementRefused").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items

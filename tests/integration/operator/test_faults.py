"""Odd objects and faults never wedge the operator: every object ends with a reason.

Real API server, the chart's identities; the operator runs as its ServiceAccount.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.operator.test_operator import RESTART, Env
from support.chart import installed
from support.operator import OperatorProcess
from wingman.audit import verify

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"


@pytest.fixture
def env(cluster: Any, crds: Path, tmp_path: Path) -> Iterator[Env]:
    ns = f"wm-flt-{uuid.uuid4().hex[:8]}"
    with installed(cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
                   values={"operator.replicas": 0}):
        op = OperatorProcess(cluster, ns, tmp_path / "operator")
        op.start()
        try:
            yield Env(cluster, ns, op)
        finally:
            op.stop()


def _no_tracebacks(env: Env) -> None:
    assert "Traceback" not in env.op.log_path.read_text(), env.op.log_tail()


def test_token_shaped_text_outside_the_command_ends_requests_and_grants_with_the_reason(
        env: Env) -> None:
    body = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": "leaky", "annotations": {"ticket": f"see {JWT}"}},
            "spec": {"requester": "alice", "environment": "test", "instruction": "restart",
                     "commands": [RESTART]}}
    env.as_worker("create", "-f", "-", input=json.dumps(body))
    ar = env.wait_phase("ar", "leaky", "Rejected")
    rejected = {c["type"]: c for c in ar["status"]["conditions"]}["Rejected"]
    assert rejected["reason"] == "LooksLikeToken"
    assert "metadata.annotations.ticket" in rejected["message"]
    assert "consensus" not in ar["status"], "no reviewer saw it"
    assert any(e["reason"] == "LooksLikeToken" for e in env.events("leaky"))

    env.request("fine")
    env.wait_phase("ar", "fine", "AutoApproved")
    grant = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
             "metadata": {"name": "g", "labels": {"team": "x"}, "annotations": {"why": JWT}},
             "spec": {"approvalRef": {"name": "fine"}, "command": RESTART}}
    env.as_approver("create", "-f", "-", input=json.dumps(grant))
    eg = env.wait_phase("eg", "g", "Denied")
    assert eg["status"]["reason"] == "LooksLikeToken"
    assert "metadata.annotations.why" in eg["status"]["message"]
    assert env.secret("g") is None and env.job("g") is None
    records = env.op.audit_events()
    assert JWT not in env.op.audit_path.read_text()
    assert [r["data"]["reason"] for r in records if r["event"] == "GrantDenied"] == \
        ["LooksLikeToken"]
    assert verify(str(env.op.audit_path)).ok
    _no_tracebacks(env)


def test_annotations_near_the_api_servers_limit_do_not_stop_the_flow(env: Env) -> None:
    big = {f"note-{i}": "x" * 60000 for i in range(4)}  # 240,000 of the 262,144 bytes allowed
    body = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": "heavy", "annotations": big},
            "spec": {"requester": "alice", "environment": "test", "instruction": "restart",
                     "commands": [RESTART]}}
    env.as_worker("create", "-f", "-", input=json.dumps(body))
    env.wait_phase("ar", "heavy", "AutoApproved")
    grant = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
             "metadata": {"name": "heavy-1", "annotations": big},
             "spec": {"approvalRef": {"name": "heavy"}, "command": RESTART}}
    env.as_approver("create", "-f", "-", input=json.dumps(grant))
    env.wait_phase("eg", "heavy-1", "TokenIssued")
    _no_tracebacks(env)


def _refuse_status_writes(env: Env, name: str, expression: str) -> None:
    """A real admission policy that makes the API server refuse some of the operator's status
    writes (422), the kind of error retrying can never fix."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
            "apiGroups": ["wingman.dev"], "apiVersions": ["*"], "operations": ["UPDATE"],
            "resources": ["approvalrequests/status", "executiongrants/status"]}]},
            "validations": [{"expression": expression, "reason": "Invalid",
                             "message": "refused by the test's admission policy"}]}}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.ns}}}}}
    env.cluster.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [policy, binding]}))


def test_a_write_the_api_server_will_never_accept_ends_the_object_instead_of_looping(
        env: Env) -> None:
    name = f"refuse-{env.ns}"
    _refuse_status_writes(
        env, name, "!(object.metadata.name.startsWith('doomed') && has(object.status) && "
        "(has(object.status.consensus) || (has(object.status.phase) && "
        "object.status.phase == 'TokenIssued')))")
    try:
        import time

        time.sleep(2)  # the API server loads new policies through an informer
        env.request("doomed-req")
        ar = env.wait_phase("ar", "doomed-req", "Rejected")
        rejected = {c["type"]: c for c in ar["status"]["conditions"]}["Rejected"]
        assert rejected["reason"] == "OperatorWriteRejected"
        assert "refused by the test's admission policy" in rejected["message"]
        env.request("ok-req")
        env.wait_phase("ar", "ok-req", "AutoApproved")
        env.grant("doomed-g", "ok-req", RESTART)
        eg = env.wait_phase("eg", "doomed-g", "Denied")
        assert eg["status"]["reason"] == "OperatorWriteRejected"
        assert env.secret("doomed-g") is None
        events = [r["event"] for r in env.op.audit_events()]
        assert "ApprovalRejected" in events and "GrantDenied" in events
        assert verify(str(env.op.audit_path)).ok
        _no_tracebacks(env)
    finally:
        env.cluster.kubectl("delete", "validatingadmissionpolicybinding,"
                            "validatingadmissionpolicy", name, check=False)

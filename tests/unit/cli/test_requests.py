"""The plugin's manifests and its human-readable description."""

from __future__ import annotations

import io

from wingman.cli.requests import build_grant, build_request, describe, grant_name


def test_request_manifest_carries_exactly_what_the_worker_asked() -> None:
    body = build_request(
        name="req-1", namespace="wingman-test", requester="alice", environment="test",
        instruction="restart web", commands=["kubectl rollout restart deployment/web -n apps"],
        justification=None, expires_after_seconds=600,
    )
    assert body["apiVersion"] == "wingman.dev/v1alpha1"
    assert body["kind"] == "ApprovalRequest"
    assert body["spec"] == {
        "requester": "alice", "environment": "test", "instruction": "restart web",
        "commands": ["kubectl rollout restart deployment/web -n apps"],
        "expiresAfterSeconds": 600,
    }


def test_grant_names_are_deterministic_per_command() -> None:
    a = grant_name("req-1", "kubectl scale deployment/web --replicas=3 -n apps")
    assert a == grant_name("req-1", "kubectl scale deployment/web --replicas=3 -n apps")
    assert a != grant_name("req-1", "kubectl scale deployment/web --replicas=4 -n apps")
    assert len(grant_name("r" * 253, "x")) <= 63
    body = build_grant(request_name="req-1", namespace="ns", command="kubectl get pods",
                       ttl_seconds=None, requester="alice")
    assert body["spec"] == {"approvalRef": {"name": "req-1"}, "command": "kubectl get pods",
                            "requester": "alice"}


def test_describe_shows_votes_dissent_decisions_and_grants() -> None:
    obj = {
        "metadata": {"namespace": "ns", "name": "req-1"},
        "spec": {"requester": "alice", "environment": "prd", "instruction": "scale",
                 "commands": ["kubectl scale deployment/web --replicas=0 -n apps"],
                 "decisions": [{"verdict": "Approve", "by": "bob", "reason": "ok"}]},
        "status": {"phase": "AwaitingDecision",
                   "consensus": {"outcome": "NoConsensus", "risk": "high", "approvals": 1,
                                 "rejections": 1, "abstentions": 0,
                                 "votes": [{"voter": "destructive", "verdict": "reject",
                                            "risk": "high", "rationale": "scales to zero"}],
                                 "dissent": ["destructive"]},
                   "conditions": [{"type": "Reviewed", "status": "True",
                                   "reason": "ConsensusReached", "message": "done"}],
                   "grants": [{"command": "kubectl scale deployment/web --replicas=0 -n apps",
                               "grant": "req-1-def", "grantUID": "u",
                               "grantedAt": "2026-11-25T12:00:00Z"}]},
    }
    grants = [{"metadata": {"name": "req-1-abc"}, "spec": {"command": "kubectl x"},
               "status": {"phase": "Denied", "reason": "ApprovalNotApproved"}}]
    out = io.StringIO()
    describe(obj, grants, out)
    text = out.getvalue()
    for expected in ("AwaitingDecision", "scales to zero", "dissent", "Approve by bob",
                     "ApprovalNotApproved", "risk high",
                     "--replicas=0 -n apps  (granted to req-1-def: runs once)"):
        assert expected in text

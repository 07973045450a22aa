"""A decision bound to the request the approver saw never lands on a look-alike.

Chat sends the uid of the request a person pressed a button for, and `approve`/`reject --uid` the
one `describe` showed: a request deleted and created again under the same name in between is
refused (StaleRequest), and the new one stays undecided.
A decision that would change nothing (the request is already decided) is refused before it is
written, saying how the request was decided (AlreadyDecided).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from support.chart import (
    APPROVER,
    WORKER,
    approver_groups,
    client_as,
    installed,
    worker_groups,
)
from wingman.dev.cluster import LocalCluster
from wingman.errors import Invalid


@pytest.fixture(scope="module")
def release(cluster: LocalCluster, crds: object) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:6]
    ns, apps = f"wm-decide-{suffix}", f"apps-decide-{suffix}"
    with installed(cluster, "test", namespace=ns, target_namespace=apps,
                   values={"operator.replicas": 0}):
        yield ns, apps


def test_a_decision_for_a_request_that_was_replaced_is_refused(
        cluster: LocalCluster, release: tuple[str, str]) -> None:
    ns, apps = release
    cmd = f"kubectl scale deployment/web --replicas=3 -n {apps}"
    with client_as(cluster, ns, WORKER, worker_groups("test")) as agent, \
            client_as(cluster, ns, APPROVER, approver_groups("test")) as approver:
        agent.create_request(instruction="scale web", commands=[cmd], name="same")
        seen = approver.get_request_object("same")["metadata"]["uid"]
        cluster.kubectl("delete", "ar", "same", "-n", ns, "--wait=true")
        agent.create_request(instruction="scale web, again", commands=[cmd], name="same")
        with pytest.raises(Invalid) as refused:
            approver.decide("same", "Approve", uid=seen)
        assert refused.value.reason == "StaleRequest"
        assert "deleted and created again" in refused.value.message
        assert not approver.get_request_object("same")["spec"].get("decisions")

        # the command line pins the request the same way, with the UID `describe` shows
        stale = _cli(cluster, ns, "approve", "same", "--uid", seen)
        assert stale.returncode == 2, stale.stderr
        assert "error (StaleRequest): ApprovalRequest same was deleted and created again" in \
            stale.stderr and seen in stale.stderr
        assert not approver.get_request_object("same")["spec"].get("decisions")
        current = approver.get_request_object("same")["metadata"]["uid"]
        described = _cli(cluster, ns, "describe", "same")
        assert f"UID:          {current}\n" in described.stdout, described.stderr
        done = _cli(cluster, ns, "approve", "same", "--uid", current.upper())
        assert done.returncode == 0, done.stderr
        decisions = approver.get_request_object("same")["spec"]["decisions"]
        assert [(d["verdict"], d["by"]) for d in decisions] == [("Approve", APPROVER)]


def _cli(cluster: LocalCluster, ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``wingman ARGV -n NS`` run as the approver, as a person runs it."""
    kubeconfig = str(cluster.kubeconfig_for(APPROVER, approver_groups("test")))
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    return subprocess.run([sys.executable, "-m", "wingman.cli", *argv, "-n", ns,
                           "--kubeconfig", kubeconfig], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def _decided(cluster: LocalCluster, ns: str, name: str, kind: str, reason: str,
             message: str, **decision: object) -> None:
    """The status the operator writes once ``name`` is decided (``kind``: Approved, Rejected)."""
    at = "2026-01-01T00:00:00Z"
    conds = [{"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": at}
             for t, r, m in (("Reviewed", "ConsensusReached", "reviewed"),
                             (kind, reason, message))]
    status = {"phase": "AutoApproved" if reason == "AutoApproved" else kind,
              "conditions": conds, "expirationTime": "2099-01-01T00:00:00Z",
              "decision": {"approvedBy": [], "requiredApprovals": 1, **decision}}
    cluster.kubectl("patch", "ar", name, "-n", ns, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": status}))


def test_a_decision_on_a_request_already_decided_is_refused_saying_how_and_not_written(
        cluster: LocalCluster, release: tuple[str, str]) -> None:
    ns, apps = release
    cmd = f"kubectl scale deployment/web --replicas=3 -n {apps}"
    with client_as(cluster, ns, WORKER, worker_groups("test")) as agent, \
            client_as(cluster, ns, APPROVER, approver_groups("test")) as approver:
        agent.create_request(instruction="scale web", commands=[cmd], name="auto")
        _decided(cluster, ns, "auto", "Approved", "AutoApproved", "within the policy")
        with pytest.raises(Invalid) as refused:
            approver.decide("auto", "Approve")
        assert refused.value.reason == "AlreadyDecided"
        assert "auto is already approved automatically by the environment's policy" in \
            refused.value.message
        assert "your Approve was not recorded" in refused.value.message
        assert not approver.get_request_object("auto")["spec"].get("decisions")

        # the command line says the same and exits as for refused input
        cli = _cli(cluster, ns, "approve", "auto")
        assert cli.returncode == 2, cli.stderr
        assert "error (AlreadyDecided): ApprovalRequest auto is already approved" in cli.stderr
        assert not approver.get_request_object("auto")["spec"].get("decisions")

        # a Reject still revokes an approval: it is recorded
        approver.decide("auto", "Reject", "wrong cluster")
        decisions = approver.get_request_object("auto")["spec"]["decisions"]
        assert [(d["verdict"], d["by"]) for d in decisions] == [("Reject", APPROVER)]

        agent.create_request(instruction="scale web", commands=[cmd], name="turned-down")
        _decided(cluster, ns, "turned-down", "Rejected", "RejectedByApprover",
                 "rejected by carol: freeze", rejectedBy="carol")
        for verdict, reason in (("Approve", ""), ("Reject", "no")):
            with pytest.raises(Invalid) as refused:
                approver.decide("turned-down", verdict, reason)
            assert refused.value.reason == "AlreadyDecided"
            assert "is already rejected by carol" in refused.value.message
        assert not approver.get_request_object("turned-down")["spec"].get("decisions")


def test_a_reason_of_the_limit_in_emoji_is_kept_whole_and_one_more_is_refused_first(
        cluster: LocalCluster, release: tuple[str, str]) -> None:
    """spec.decisions[].reason holds 1,000 characters, counted by the API server in code points:
    1,000 emoji (4,000 bytes of UTF-8) are accepted whole by the real API server; 1,001 are
    refused by the client before any call, naming the limit, and nothing is written."""
    from wingman.model import limits

    ns, apps = release
    cmd = f"kubectl scale deployment/web --replicas=2 -n {apps}"
    with client_as(cluster, ns, WORKER, worker_groups("test")) as agent, \
            client_as(cluster, ns, APPROVER, approver_groups("test")) as approver:
        agent.create_request(instruction="scale web", commands=[cmd], name="long-reason")
        with pytest.raises(Invalid) as refused:
            approver.decide("long-reason", "Reject", "🙂" * (limits.REASON + 1))
        assert refused.value.reason == "TooLong"
        assert "the reason is 1,001 characters; the limit is 1,000" in refused.value.message
        assert not approver.get_request_object("long-reason")["spec"].get("decisions")
        reason = "🙂" * limits.REASON
        approver.decide("long-reason", "Reject", reason)
        decisions = approver.get_request_object("long-reason")["spec"]["decisions"]
        assert [(d["verdict"], d["reason"]) for d in decisions] == [("Reject", reason)]


def test_a_decision_past_the_number_a_request_holds_is_refused_before_it_is_written(
        cluster: LocalCluster, release: tuple[str, str]) -> None:
    """spec.decisions holds at most 10 decisions, the tenth a Reject: an eleventh is refused by
    the client saying so (TooManyDecisions), not by the API server's 422."""
    from wingman.model import limits

    ns, apps = release
    cmd = f"kubectl scale deployment/web --replicas=4 -n {apps}"
    with client_as(cluster, ns, WORKER, worker_groups("test")) as agent, \
            client_as(cluster, ns, APPROVER, approver_groups("test")) as approver:
        agent.create_request(instruction="scale web", commands=[cmd], name="many")
        for i in range(limits.DECISIONS - 1):  # nine approvers (no operator runs: pending)
            with client_as(cluster, ns, f"approver-{i}", approver_groups("test")) as one:
                one.decide("many", "Approve")
        last = f"approver-{limits.DECISIONS - 1}"
        with client_as(cluster, ns, last, approver_groups("test")) as one:
            # the tenth is kept for a rejection (the CRD's rule): an approval can be revoked
            with pytest.raises(Invalid) as approving:
                one.decide("many", "Approve")
            assert "the tenth decision must be a Reject" in approving.value.message
            one.decide("many", "Reject", "revoked")
        with pytest.raises(Invalid) as refused:
            approver.decide("many", "Reject", "no")
        assert refused.value.reason == "TooManyDecisions", refused.value.message
        assert "holds 10 decisions" in refused.value.message
        assert len(approver.get_request_object("many")["spec"]["decisions"]) == limits.DECISIONS

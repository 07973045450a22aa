"""The status protocol: one state per object, the details it carries, and a usable ``next``."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest

from wingman.client import status as st

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
LATER = "2026-11-26T12:00:00Z"
CMD = "kubectl rollout restart deployment/web -n apps"


def cond(type_: str, reason: str, message: str = "", status: str = "True") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-25T11:00:00Z"}


def request(*conditions: dict[str, Any], decisions: list[dict[str, Any]] | None = None,
            decision: dict[str, Any] | None = None, grants: list[dict[str, Any]] | None = None,
            expires: str = LATER, source: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"requester": "alice", "environment": "test",
                            "instruction": "restart web", "commands": [CMD]}
    if decisions:
        spec["decisions"] = decisions
    if source:
        spec["source"] = source
    status: dict[str, Any] = {"conditions": list(conditions), "expirationTime": expires,
                              "decision": decision or {"approvedBy": [],
                                                       "requiredApprovals": 2}}
    if grants:
        status["grants"] = grants
    return {"metadata": {"name": "req-1", "namespace": "wm"}, "spec": spec, "status": status}


def grant(phase: str | None, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "req-1-abc", "namespace": "wm"},
                            "spec": {"approvalRef": {"name": "req-1"}, "command": CMD,
                                     "requester": "alice"}}
    if phase:
        body["status"] = {"phase": phase, **status}
    return body


def test_a_request_without_a_review_is_pending_review_and_says_to_wait() -> None:
    s = st.of_request({"metadata": {"name": "req-1"}, "spec": {"commands": [CMD]}}, now=NOW)
    assert s.state is st.State.PENDING_REVIEW and s.waiting and not s.final
    assert "get_request(name='req-1'" in s.next
    assert s.to_dict()["retry_after_seconds"] > 0


def test_awaiting_approval_carries_n_of_m_and_who_approved() -> None:
    s = st.of_request(request(cond("Reviewed", "ConsensusReached"),
                              cond("Approved", "HumanApprovalRequired", status="False"),
                              decision={"approvedBy": ["bob"], "requiredApprovals": 2}),
                      now=NOW)
    assert s.state is st.State.AWAITING_APPROVAL
    assert s.to_dict()["approvals"] == {"have": 1, "need": 2, "by": ["bob"]}
    assert "1 of 2" in s.next and "cannot approve your own" in s.next
    assert s.reason == "HumanApprovalRequired"


def test_auto_approved_tells_the_agent_to_execute_the_exact_command() -> None:
    s = st.of_request(request(cond("Reviewed", "ConsensusReached"),
                              cond("Approved", "AutoApproved", "within limits")),
                      now=NOW, workers_may_grant=True)
    assert s.state is st.State.AUTO_APPROVED and s.by == "policy"
    assert f"execute(request='req-1', command={CMD!r})" in s.next
    assert not s.final and not s.waiting


def test_approved_where_workers_may_not_grant_points_to_an_approver() -> None:
    s = st.of_request(request(cond("Reviewed", "ConsensusReached"),
                              cond("Approved", "Approved", "approved by bob, carol"),
                              decision={"approvedBy": ["bob", "carol"], "requiredApprovals": 2}),
                      now=NOW, workers_may_grant=False)
    assert s.state is st.State.APPROVED and s.by == "bob, carol"
    assert "ask an approver" in s.next and "kubectl wingman exec req-1" in s.next


def test_a_human_rejection_names_the_approver_and_their_reason() -> None:
    s = st.of_request(request(cond("Reviewed", "ConsensusReached"),
                              cond("Rejected", "ApprovalRejected", "rejected by bob: no"),
                              decisions=[{"verdict": "Reject", "by": "bob",
                                          "reason": "not during the freeze"}],
                              decision={"approvedBy": [], "rejectedBy": "bob",
                                        "requiredApprovals": 1}), now=NOW)
    assert s.state is st.State.REJECTED and s.final
    assert (s.by, s.message, s.reason) == ("bob", "not during the freeze", "ApprovalRejected")
    assert "unchanged" in s.next


def test_a_panel_rejection_is_by_the_reviewers() -> None:
    s = st.of_request(request(cond("Reviewed", "ConsensusReached"),
                              cond("Rejected", "PromptInjection", "instructs reviewers")),
                      now=NOW)
    assert (s.state, s.by, s.reason) == (st.State.REJECTED, "reviewers", "PromptInjection")


def test_a_revocation_beats_the_approval_it_revokes() -> None:
    s = st.of_request(request(cond("Approved", "Approved"), cond("Revoked", "ApprovalRevoked"),
                              decisions=[{"verdict": "Approve", "by": "bob"},
                                         {"verdict": "Reject", "by": "carol",
                                          "reason": "wrong cluster"}],
                              decision={"approvedBy": ["bob"], "rejectedBy": "carol",
                                        "requiredApprovals": 1}), now=NOW)
    assert (s.state, s.by, s.message) == (st.State.REVOKED, "carol", "wrong cluster")
    assert s.final


def test_expiry_is_read_from_the_clock_too_and_is_not_a_rejection() -> None:
    body = request(cond("Approved", "AutoApproved"), expires="2026-11-25T11:59:59Z")
    s = st.of_request(body, now=NOW)
    assert s.state is st.State.EXPIRED and s.final
    assert "not a rejection" in s.next
    assert st.of_request(body, now=NOW - dt.timedelta(minutes=1)).state is \
        st.State.AUTO_APPROVED


def test_a_decision_that_would_change_nothing_is_named_with_how_the_request_was_decided(
) -> None:
    auto = request(cond("Reviewed", "ConsensusReached"), cond("Approved", "AutoApproved"))
    said = st.late_decision(auto, "Approve", now=NOW)
    assert said is not None
    assert "req-1 is already approved automatically by the environment's policy:" \
        in said and "your Approve was not recorded" in said and "reject it" in said
    assert st.late_decision(auto, "Reject", now=NOW) is None, "a Reject revokes an approval"

    rejected = request(cond("Reviewed", "ConsensusReached"),
                       cond("Rejected", "ApprovalRejected", "rejected by bob: no"),
                       decisions=[{"verdict": "Reject", "by": "bob", "reason": "freeze"}],
                       decision={"approvedBy": [], "rejectedBy": "bob",
                                 "requiredApprovals": 1})
    for verdict in ("Approve", "Reject"):
        said = st.late_decision(rejected, verdict, now=NOW)
        assert said is not None and "is already rejected by bob (freeze):" in said
        assert f"your {verdict} was not recorded" in said and "new request" in said

    pending = request(cond("Reviewed", "ConsensusReached"),
                      cond("Approved", "HumanApprovalRequired", status="False"),
                      expires="2026-11-25T11:59:59Z")
    said = st.late_decision(pending, "Approve", now=NOW)
    assert said is not None and "is already expired (the request expired at" in said
    assert st.late_decision(pending, "Approve", now=NOW - dt.timedelta(minutes=1)) is None
    assert st.late_decision(pending, "Reject", now=NOW - dt.timedelta(minutes=1)) is None


def test_a_granted_command_shows_its_grant_and_state() -> None:
    body = request(cond("Approved", "AutoApproved"),
                   grants=[{"command": CMD, "grant": "req-1-abc", "grantUID": "u",
                            "grantedAt": "2026-11-25T11:30:00Z"}])
    s = st.of_request(body, [grant("Running")], now=NOW, workers_may_grant=True)
    assert s.to_dict()["commands"] == [{"command": CMD, "grant": "req-1-abc",
                                        "state": "running"}]
    assert "get_result(grant='req-1-abc'" in s.next


@pytest.mark.parametrize(("phase", "state"), [
    (None, st.State.GRANTED), ("Pending", st.State.GRANTED), ("TokenIssued", st.State.GRANTED),
    ("Running", st.State.RUNNING), ("Succeeded", st.State.SUCCEEDED),
    ("Failed", st.State.FAILED), ("Denied", st.State.REFUSED), ("Expired", st.State.EXPIRED)])
def test_every_grant_phase_maps_to_one_state(phase: str | None, state: st.State) -> None:
    assert st.of_grant(grant(phase), now=NOW).state is state


def test_a_result_carries_exit_code_and_bounded_output() -> None:
    s = st.of_grant(grant("Failed", exitCode=3, output="x" * 100, reason="CommandFailed",
                          outputSHA256="sha256:ab"), now=NOW, max_output=10)
    d = s.to_dict()
    assert (d["state"], d["exit_code"], d["reason"]) == ("failed", 3, "CommandFailed")
    assert d["output"] == "x" * 10 and d["output_truncated"] is True and d["final"] is True
    assert "ran and failed" in d["next"]
    ok = st.of_grant(grant("Succeeded", exitCode=0, output="done"), now=NOW).to_dict()
    assert (ok["output"], ok["output_truncated"]) == ("done", False)


def test_refused_grants_say_nothing_ran() -> None:
    s = st.of_grant(grant("Denied", reason="CommandAlreadyGranted", message="m"), now=NOW)
    assert s.state is st.State.REFUSED and "no command ran" in s.next and s.final


def test_the_wire_form_is_json_and_uses_only_the_closed_set() -> None:
    s = st.of_request(request(cond("Reviewed", "x")), now=NOW,
                      hints=st.COMMANDS)
    data = json.loads(json.dumps(s.to_dict()))
    assert data["state"] in {x.value for x in st.State}
    assert data["next"].startswith("wait") and "kubectl wingman describe req-1" in data["next"]
    err = st.error(st.State.FORBIDDEN, "RBAC said no").to_dict()
    assert err["state"] == "forbidden" and err["message"] == "RBAC said no" and err["next"]


def test_provenance_is_shown_with_snake_case_keys() -> None:
    s = st.of_request(request(source={"reference": "JIRA-1", "agent": "ops-bot",
                                      "inputTrust": "Untrusted", "excerpt": "restart it"}),
                      now=NOW)
    assert s.to_dict()["source"] == {"reference": "JIRA-1", "agent": "ops-bot",
                                     "excerpt": "restart it", "input_trust": "Untrusted"}


def test_grant_names_are_deterministic_per_command_and_bounded() -> None:
    a = st.grant_name("req-1", "kubectl scale deployment/web --replicas=3 -n apps")
    assert a == st.grant_name("req-1", "kubectl scale deployment/web --replicas=3 -n apps")
    assert a != st.grant_name("req-1", "kubectl scale deployment/web --replicas=4 -n apps")
    assert len(st.grant_name("r" * 253, "x")) <= 63


#: What the API server takes as an object's name (a DNS-1123 subdomain, as Kubernetes checks it).
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@pytest.mark.parametrize("request_name", [
    "a" * 49 + ".b",  # the cut at 50 ends in '.'
    "release.v1.2.3." + "x" * 34 + ".patch-7",
    "a" * 47 + ".b.c",
    "req-1", "a" * 49 + "-b", "r" * 253,
])
def test_grant_names_are_names_the_api_server_takes(request_name: str) -> None:
    """Every valid request name gives a grant name the API server takes: a request name with
    a '.' where it is cut would give ``<...>.-<digest>``, refused, so none of its commands
    could ever be started."""
    assert _SUBDOMAIN.fullmatch(request_name)
    name = st.grant_name(request_name, CMD)
    assert _SUBDOMAIN.fullmatch(name) and len(name) <= 63, name


def test_grant_names_of_names_not_cut_at_a_dot_stay_as_they_were() -> None:
    # grants created by earlier releases keep being found under the names they got
    assert st.grant_name("a" * 49 + "-b", "x") == "a" * 49 + "--2d711642"
    assert st.grant_name("req-1", "x") == "req-1-2d711642"


def test_answers_carry_the_preview_the_operator_recorded() -> None:
    body = request()
    body["status"]["preview"] = {"phase": "Completed", "summary": {"objects": 1}}
    assert st.of_request(body, now=NOW).to_dict()["preview"] == {
        "phase": "Completed", "summary": {"objects": 1}}
    assert "preview" not in st.of_request(request(), now=NOW).to_dict()

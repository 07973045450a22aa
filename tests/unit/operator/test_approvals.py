"""ApprovalRequest transitions as pure functions: review, human decisions, expiry, usability."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from typing import Any

from wingman.conditions import approval_phase, is_approved
from wingman.errors import ScopeViolation
from wingman.model import approvals as rules
from wingman.operator import approvals
from wingman.review.consensus import PanelConfig, Risk, Verdict, Vote, decide, run_panel
from wingman.review.policy import EnvironmentPolicy
from wingman.review.voters import builtin_panel
from wingman.scope import Allowlist, parse

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
#: The allowlist of the environments below (that of manifests/test): a command outside it is
#: never auto-approved.
ALLOW = ["kubectl rollout restart deployment/{name} -n apps"]
# these requests carry no preview: a policy that does not preview
TEST = EnvironmentPolicy.from_dict({"environment": "test", "autoApprove": True,
                                    "autoApproveMaxRisk": "medium", "allowlist": ALLOW,
                                    "preview": {"enabled": False}})
PRD = EnvironmentPolicy.from_dict({"environment": "prd", "requiredApprovals": 2})


def body(**status: Any) -> dict[str, Any]:
    return {"kind": "ApprovalRequest",
            "metadata": {"name": "r", "namespace": "ns", "uid": "u1", "generation": 1,
                         "creationTimestamp": "2026-11-25T11:00:00Z"},
            "spec": {"requester": "alice", "environment": "test", "instruction": "x",
                     "commands": ["kubectl rollout restart deployment/web -n apps"]},
            "status": status}


def panel(verdict: Verdict, risk: Risk = Risk.LOW) -> Any:
    return decide([Vote(n, verdict, risk, "r") for n in ("a", "b", "c")], 3, 3)


def merged(b: dict[str, Any], t: approvals.Transition | None) -> dict[str, Any]:
    assert t is not None
    return {**b, "status": {**b["status"], **t.status}}


def test_panel_approval_within_policy_auto_approves_and_sets_expiry() -> None:
    t = approvals.reviewed(body(), panel(Verdict.APPROVE), TEST, NOW)
    assert t is not None and t.phase == "AutoApproved" and t.decision == "AutoApproved"
    # the approval is valid for approvalTTLSeconds (default 1 h) from the decision
    assert (t.status["approvedAt"], t.status["expirationTime"]) == (
        "2026-11-25T12:00:00Z", "2026-11-25T13:00:00Z")
    assert all(c["observedGeneration"] == 1 for c in t.status["conditions"])
    assert t.audit_event == "ApprovalReviewed"
    assert approvals.reviewed(merged(body(), t), panel(Verdict.APPROVE), TEST, NOW) is None


def test_requester_may_shorten_but_never_extend_the_policy_lifetime() -> None:
    prd = EnvironmentPolicy.from_dict({"environment": "prd", "requiredApprovals": 2,
                                       "requestTTLSeconds": 14400})
    long = body()
    long["spec"]["expiresAfterSeconds"] = 604800
    t = approvals.reviewed(long, panel(Verdict.APPROVE), prd, NOW)
    assert t is not None
    assert t.status["expirationTime"] == "2026-11-25T15:00:00Z", "capped at 4 h, not 7 days"
    reviewed_cond = next(c for c in t.status["conditions"] if c["type"] == "Reviewed")
    assert "capped at 14400s" in reviewed_cond["message"]
    short = body()
    short["spec"]["expiresAfterSeconds"] = 600
    t = approvals.reviewed(short, panel(Verdict.APPROVE), prd, NOW)
    assert t is not None and t.status["expirationTime"] == "2026-11-25T11:10:00Z"
    assert "capped" not in next(c for c in t.status["conditions"]
                                if c["type"] == "Reviewed")["message"]


def test_prd_never_auto_approves_and_counts_two_distinct_approvers() -> None:
    t = approvals.reviewed(body(), panel(Verdict.APPROVE), PRD, NOW)
    assert t is not None and t.phase == "AwaitingDecision" and t.decision is None
    b = merged(body(), t)
    b["spec"]["decisions"] = [{"verdict": "Approve", "by": "bob"},
                              {"verdict": "Approve", "by": "alice"}]  # requester: ignored
    one = approvals.decided(b, PRD, NOW)
    assert one is not None and one.phase == "AwaitingDecision"
    assert one.status["decision"]["approvedBy"] == ["bob"]
    b = merged(b, one)
    assert approvals.decided(b, PRD, NOW) is None, "nothing new: no second write"
    b["spec"]["decisions"].append({"verdict": "Approve", "by": "carol"})
    two = approvals.decided(b, PRD, NOW)
    assert two is not None and two.phase == "Approved" and two.decision == "Approved"


def test_reject_before_approval_rejects_and_after_approval_revokes() -> None:
    b = merged(body(), approvals.reviewed(body(), panel(Verdict.APPROVE, Risk.HIGH), TEST, NOW))
    assert b["status"]["phase"] == "AwaitingDecision"
    b["spec"]["decisions"] = [{"verdict": "Reject", "by": "bob", "reason": "no"}]
    t = approvals.decided(b, TEST, NOW)
    assert t is not None and t.phase == "Rejected" and t.audit_event == "ApprovalRejected"

    auto = merged(body(), approvals.reviewed(body(), panel(Verdict.APPROVE), TEST, NOW))
    auto["spec"]["decisions"] = [{"verdict": "Reject", "by": "bob"}]
    revoked = approvals.decided(auto, TEST, NOW)
    assert revoked is not None and revoked.audit_event == "ApprovalRevoked"
    conds = revoked.status["conditions"]
    assert approval_phase(conds) == "Rejected" and not is_approved(conds)
    ok, reason, _ = rules.usable(merged(auto, revoked), NOW)
    assert not ok and reason == "ApprovalRevoked"


def test_prompt_injection_is_rejected_outright() -> None:
    votes = [Vote("a", Verdict.APPROVE, Risk.LOW, "r"),
             Vote("pi", Verdict.REJECT, Risk.HIGH, "r", flags=("PromptInjection",))]
    t = approvals.reviewed(body(), decide(votes, 1, 1), TEST, NOW)
    assert t is not None and t.phase == "Rejected" and t.warning


def test_expiry_ends_an_approval_and_is_written_once() -> None:
    b = merged(body(), approvals.reviewed(body(), panel(Verdict.APPROVE), TEST, NOW))
    assert approvals.expired(b, NOW) is None
    later = NOW + dt.timedelta(days=2)
    t = approvals.expired(b, later)
    assert t is not None and t.phase == "Expired"
    b = merged(b, t)
    assert approvals.expired(b, later) is None
    assert rules.usable(b, later)[1] == "ApprovalExpired"
    assert rules.usable(b, NOW)[1] == "ApprovalExpired", "the condition alone suffices"


def test_usable_needs_an_approval() -> None:
    b = merged(body(), approvals.reviewed(body(), panel(Verdict.APPROVE, Risk.HIGH), TEST, NOW))
    ok, reason, message = rules.usable(b, NOW)
    assert not ok and reason == "ApprovalNotApproved" and "AwaitingDecision" in message
    assert rules.usable(body(), NOW)[1] == "ApprovalNotApproved"


def test_decisions_before_review_wait_for_it() -> None:
    b = body()
    b["spec"]["decisions"] = [{"verdict": "Approve", "by": "bob"}]
    assert approvals.decided(b, TEST, NOW) is None


def _ready(t: approvals.Transition | None) -> tuple[str, str]:
    assert t is not None
    (ready,) = [c for c in t.status["conditions"] if c["type"] == "Ready"]
    assert ready["observedGeneration"] == 1 and ready["message"]
    return ready["status"], ready["reason"]


def test_ready_is_true_exactly_while_the_request_is_approved() -> None:
    """Argo CD, Flux and `kubectl wait --for=condition=Ready` read one summary condition."""
    auto = approvals.reviewed(body(), panel(Verdict.APPROVE), TEST, NOW)
    assert _ready(auto) == ("True", "AutoApproved")
    waiting = approvals.reviewed(body(), panel(Verdict.APPROVE, Risk.HIGH), TEST, NOW)
    assert _ready(waiting) == ("False", "AwaitingDecision")
    b = merged(body(), waiting)
    b["spec"]["decisions"] = [{"verdict": "Approve", "by": "bob"}]
    approved = approvals.decided(b, TEST, NOW)
    assert _ready(approved) == ("True", "Approved")
    b = merged(b, approved)
    b["spec"]["decisions"].append({"verdict": "Reject", "by": "carol"})
    assert _ready(approvals.decided(b, TEST, NOW)) == ("False", "Rejected")
    assert _ready(approvals.expired(b, NOW + dt.timedelta(days=2))) == ("False", "Expired")
    injected = decide([Vote("pi", Verdict.REJECT, Risk.HIGH, "r", flags=("PromptInjection",))],
                      1, 1)
    assert _ready(approvals.reviewed(body(), injected, TEST, NOW)) == ("False", "Rejected")


def _awaiting(policy: EnvironmentPolicy = PRD) -> dict[str, Any]:
    t = approvals.reviewed(body(), panel(Verdict.APPROVE), policy, NOW)
    assert t is not None and t.phase == "AwaitingDecision"
    return merged(body(), t)


def test_pending_and_approval_lifetimes_are_separate_and_validity_counts_from_the_decision(
) -> None:
    policy = EnvironmentPolicy.from_dict({"environment": "prd", "requiredApprovals": 1,
                                          "requestTTLSeconds": 7200,
                                          "approvalTTLSeconds": 1800})
    b = _awaiting(policy)
    assert b["status"]["expirationTime"] == "2026-11-25T13:00:00Z", "created 11:00 + 2 h"
    b["spec"]["decisions"] = [{"verdict": "Approve", "by": "bob"}]
    later = NOW + dt.timedelta(minutes=50)  # 12:50: ten minutes of the pending life left
    t = approvals.decided(b, policy, later)
    assert t is not None and t.phase == "Approved"
    assert (t.status["approvedAt"], t.status["expirationTime"]) == (
        "2026-11-25T12:50:00Z", "2026-11-25T13:20:00Z"), "30 min from the decision"
    assert t.audit_data["expirationTime"] == "2026-11-25T13:20:00Z"
    approved = merged(b, t)
    ok, _, _ = rules.usable(approved, dt.datetime(2026, 11, 25, 13, 10, tzinfo=dt.UTC))
    assert ok, "still valid after the pending lifetime would have ended"
    assert approvals.expired(approved, dt.datetime(2026, 11, 25, 13, 20, tzinfo=dt.UTC))


def test_a_decision_after_the_pending_lifetime_counts_nothing() -> None:
    b = _awaiting()
    b["spec"]["decisions"] = [{"verdict": "Approve", "by": "bob"},
                              {"verdict": "Approve", "by": "carol"}]
    too_late = dt.datetime(2026, 11, 26, 11, 0, tzinfo=dt.UTC)
    assert approvals.decided(b, PRD, too_late) is None
    assert approvals.expired(b, too_late) is not None


def test_a_pending_request_is_warned_once_before_it_expires() -> None:
    policy = EnvironmentPolicy.from_dict({"environment": "prd", "requiredApprovals": 2,
                                          "expiryWarningSeconds": 3600})
    b = _awaiting(policy)  # expires 2026-11-26T11:00 (created 11:00 + 24 h)
    assert approvals.next_warning(b, policy) == dt.datetime(2026, 11, 26, 10, 0,
                                                            tzinfo=dt.UTC)
    assert approvals.expiring(b, policy, dt.datetime(2026, 11, 26, 9, 59, tzinfo=dt.UTC)) \
        is None
    t = approvals.expiring(b, policy, dt.datetime(2026, 11, 26, 10, 30, tzinfo=dt.UTC))
    assert t is not None and t.warning and t.event_reason == "ExpiringSoon"
    assert t.audit_event == "ApprovalExpiringSoon" and t.audit_data["secondsLeft"] == 1800
    soon = next(c for c in t.status["conditions"] if c["type"] == "ExpiringSoon")
    assert soon["status"] == "True" and "in about 30 min" in soon["message"]
    warned = merged(b, t)
    assert t.phase == "AwaitingDecision"
    assert approvals.expiring(warned, policy, dt.datetime(2026, 11, 26, 10, 40,
                                                          tzinfo=dt.UTC)) is None, "once"
    assert approvals.next_warning(warned, policy) is None
    # once approved there is nothing to warn about, and the warning is withdrawn
    warned["spec"]["decisions"] = [{"verdict": "Approve", "by": "bob"},
                                   {"verdict": "Approve", "by": "carol"}]
    approved = approvals.decided(warned, policy, dt.datetime(2026, 11, 26, 10, 45,
                                                             tzinfo=dt.UTC))
    assert approved is not None
    assert "ExpiringSoon" not in {c["type"] for c in approved.status["conditions"]}
    off = EnvironmentPolicy.from_dict({"environment": "prd", "expiryWarningSeconds": 0})
    assert approvals.next_warning(_awaiting(off), off) is None


JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"


def test_token_shaped_text_anywhere_a_worker_writes_is_found_by_its_path() -> None:
    b = body()
    assert approvals.token_fields(b) == []
    b["spec"]["requester"] = f"alice {JWT}"
    b["metadata"]["annotations"] = {"note": JWT, "fine": "plain text"}
    b["metadata"]["labels"] = {"x": "y"}
    assert approvals.token_fields(b) == ["spec.requester", "metadata.annotations.note"]
    encoded = base64.b64encode(f"Bearer {JWT}".encode()).decode()
    b = body()
    b["spec"]["commands"] = [f"kubectl create secret generic t --from-literal=t={encoded}"]
    assert approvals.token_fields(b) == ["spec.commands[0]"], "base64 of a token is a token"


def test_a_refused_request_is_rejected_with_the_reason_and_is_never_reviewed() -> None:
    t = approvals.refused(body(), "LooksLikeToken", "spec.requester looks like a token", NOW,
                          {"fields": ["spec.requester"]})
    assert t is not None and t.phase == "Rejected" and t.warning
    assert t.audit_event == "ApprovalRejected"
    assert t.audit_data == {"reason": "LooksLikeToken", "fields": ["spec.requester"]}
    conds = {c["type"]: c for c in t.status["conditions"]}
    assert conds["Rejected"]["reason"] == "LooksLikeToken"
    assert conds["Reviewed"]["status"] == "False", "marked as handled, not as reviewed"
    done = approvals.merged(body(), t)
    assert approvals.is_reviewed(done) and rules.is_final(done)
    assert approvals.reviewed(done, panel(Verdict.APPROVE), TEST, NOW) is None
    assert approvals.refused(done, "LooksLikeToken", "again", NOW) is None


def test_review_and_decisions_already_present_merge_into_one_status() -> None:
    b = body()
    b["spec"]["decisions"] = [{"verdict": "Approve", "by": "bob"}]
    t1 = approvals.reviewed(b, panel(Verdict.REJECT, Risk.HIGH), TEST, NOW)
    assert t1 is not None and t1.phase == "AwaitingDecision"
    t2 = approvals.decided(approvals.merged(b, t1), TEST, NOW)
    assert t2 is not None and t2.phase == "Approved"
    final = approvals.merged(approvals.merged(b, t1), t2)
    assert final["status"]["consensus"] == t1.status["consensus"]
    assert approval_phase(final["status"]["conditions"]) == "Approved"


def _late(b: dict[str, Any], verdict: str, by: str) -> dict[str, Any]:
    """``b`` after an approver added a decision: the spec changed, so its generation moved."""
    late = {**b, "metadata": {**b["metadata"], "generation": b["metadata"]["generation"] + 1},
            "spec": {**b["spec"], "decisions": [*(b["spec"].get("decisions") or []),
                                                {"verdict": verdict, "by": by, "reason": "x"}]}}
    return late


def test_an_approve_on_an_auto_approved_request_is_reported_ignored_once() -> None:
    auto = merged(body(), approvals.reviewed(body(), panel(Verdict.APPROVE), TEST, NOW))
    late = _late(auto, "Approve", "carol")
    t = approvals.decided(late, TEST, NOW)
    assert t is not None and t.audit_event == "DecisionIgnored" and t.warning
    assert t.phase == "AutoApproved" and t.decision is None, "nothing was decided by it"
    assert t.audit_data["ignored"] == [{"by": "carol", "verdict": "Approve"}]
    assert "approved (automatically, by the environment's policy)" in t.message
    assert set(t.status) == {"observedGeneration"}, "the decision changes nothing else"
    assert approvals.decided(merged(late, t), TEST, NOW) is None, "reported once"
    assert rules.usable(merged(late, t), NOW)[0], "still approved, as before"


def test_a_decision_on_a_rejected_or_expired_request_is_reported_ignored() -> None:
    reviewed = merged(body(), approvals.reviewed(body(), panel(Verdict.APPROVE, Risk.HIGH),
                                                 TEST, NOW))
    b = _late(reviewed, "Reject", "bob")
    rejected = merged(b, approvals.decided(b, TEST, NOW))
    late = _late(rejected, "Approve", "carol")
    t = approvals.decided(late, TEST, NOW)
    assert t is not None and t.audit_event == "DecisionIgnored" and t.phase == "Rejected"
    assert "rejected by bob" in t.message and "Approve by carol ignored" in t.message
    assert not rules.usable(merged(late, t), NOW)[0]

    expired = merged(reviewed, approvals.expired(reviewed, NOW + dt.timedelta(days=2)))
    late = _late(expired, "Approve", "carol")
    t = approvals.decided(late, TEST, NOW + dt.timedelta(days=2))
    assert t is not None and t.audit_event == "DecisionIgnored" and t.phase == "Expired"
    assert "already expired" in t.message
    # past its pending lifetime, not yet marked Expired: not counted, said so, then expired
    late = _late(reviewed, "Approve", "carol")
    t = approvals.decided(late, TEST, NOW + dt.timedelta(days=2))
    assert t is not None and t.audit_event == "DecisionIgnored"
    assert "past its pending lifetime" in t.message


def test_a_final_request_with_a_late_decision_needs_the_operator() -> None:
    from wingman.operator.state import approval_needs

    reviewed = merged(body(), approvals.reviewed(body(), panel(Verdict.APPROVE, Risk.HIGH),
                                                 TEST, NOW))
    expired = merged(reviewed, approvals.expired(reviewed, NOW + dt.timedelta(days=2)))
    assert approval_needs(expired, False, NOW) is None
    assert approval_needs(_late(expired, "Approve", "carol"), True, NOW) == "decisions"


def test_a_review_finished_after_the_requests_lifetime_approves_nothing_and_it_expires() -> None:
    """The panel (or an operator down, or a backlog) outlived the request: the policy would
    auto-approve, but nothing is approved past the lifetime the request or its policy set;
    it awaits no one and ends Expired in the same pass, its approval window never opened."""
    short = body()
    short["spec"]["expiresAfterSeconds"] = 600  # created 11:00: its lifetime ends 11:10
    late = dt.datetime(2026, 11, 25, 11, 10, tzinfo=dt.UTC)
    t = approvals.reviewed(short, panel(Verdict.APPROVE), TEST, late)
    assert t is not None and t.decision is None and t.phase != "AutoApproved"
    assert "approvedAt" not in t.status
    assert t.status["expirationTime"] == "2026-11-25T11:10:00Z"
    assert t.audit_data["reason"] == "LifetimeEnded"
    assert "lifetime ended at 2026-11-25T11:10:00Z" in t.audit_data["message"]
    ended = approvals.expired(merged(short, t), late)
    assert ended is not None and ended.phase == "Expired"
    # a moment earlier it is auto-approved, as before
    t = approvals.reviewed(short, panel(Verdict.APPROVE), TEST,
                           late - dt.timedelta(seconds=1))
    assert t is not None and t.phase == "AutoApproved"


def test_a_preview_finding_keeps_a_request_the_panel_approved_for_a_human() -> None:
    """The policy previews; the panel approved unanimously at low risk without flagging the
    preview (a panel without the blast-radius voter): the Forbidden dry run the operator
    recorded still keeps the request from auto-approval."""
    previewing = EnvironmentPolicy.from_dict({"environment": "test", "autoApprove": True,
                                              "autoApproveMaxRisk": "medium",
                                              "allowlist": ALLOW})
    command = "kubectl rollout restart deployment/web -n apps"
    forbidden = {"phase": "Completed", "commands": [
        {"command": command, "executor": "kubectl", "outcome": "Forbidden",
         "message": "deployments.apps is forbidden"}]}
    t = approvals.reviewed(body(preview=forbidden), panel(Verdict.APPROVE), previewing, NOW)
    assert t is not None and t.phase == "AwaitingDecision" and t.decision is None
    assert t.audit_data["reason"] == "PreviewFinding"
    assert "command 1 was previewed Forbidden" in t.message
    clean = {"phase": "Completed", "commands": [
        {"command": command, "executor": "kubectl", "outcome": "Previewed"}]}
    t = approvals.reviewed(body(preview=clean), panel(Verdict.APPROVE), previewing, NOW)
    assert t is not None and t.phase == "AutoApproved"


def test_a_preview_without_an_entry_for_every_command_keeps_the_request_for_a_human() -> None:
    """The request has two commands; its recorded preview shows only the first, cleanly, and
    the panel approved unanimously at low risk: the second command was never previewed (and the
    gateway would refuse to run it, having nothing to bind it to), so auto-approval is not
    granted and the Reviewed condition says why."""
    previewing = EnvironmentPolicy.from_dict({"environment": "test", "autoApprove": True,
                                              "autoApproveMaxRisk": "medium",
                                              "allowlist": ALLOW})
    first = "kubectl rollout restart deployment/web -n apps"
    request = body(preview={"phase": "Completed", "commands": [
        {"command": first, "executor": "kubernetes", "outcome": "Previewed"}]})
    request["spec"]["commands"] = [first, "kubectl rollout restart deployment/api -n apps"]
    t = approvals.reviewed(request, panel(Verdict.APPROVE), previewing, NOW)
    assert t is not None and t.phase == "AwaitingDecision" and t.decision is None
    assert t.audit_data["reason"] == "PreviewFinding"
    reviewed_cond = next(c for c in t.status["conditions"] if c["type"] == "Reviewed")
    assert "the preview has 1 entries for the request's 2 command(s)" in reviewed_cond["message"]


def test_a_preview_that_could_not_read_its_request_is_a_finding_for_the_default_panel() -> None:
    """The preview pod could not read the request (its result holds a message and no command):
    the built-in panel flags it, and the policy, which reads the preview itself, keeps it for
    a human whatever the panel says."""
    previewing = EnvironmentPolicy.from_dict({"environment": "test", "autoApprove": True,
                                              "autoApproveMaxRisk": "medium",
                                              "allowlist": ALLOW})
    unread = {"phase": "Completed", "commands": [], "summary": {"objects": 0},
              "message": "cannot read ApprovalRequest r: Forbidden"}
    request = body(preview=unread)
    shipped = PanelConfig(builtin_panel(lambda _: True), threshold=3, quorum=3)
    consensus = asyncio.run(run_panel(shipped, approvals.review_input(request)))
    assert "PreviewFinding" in consensus.flags
    t = approvals.reviewed(request, consensus, previewing, NOW)
    assert t is not None and t.phase == "AwaitingDecision"
    assert t.audit_data["reason"] == "PreviewFinding"
    assert "cannot read ApprovalRequest r: Forbidden" in t.message


def _allowlist_panel(policy: EnvironmentPolicy) -> PanelConfig:
    """The shipped panel of four, its allowlist voter judging with ``policy``'s allowlist."""
    allowlist = Allowlist.from_patterns(policy.allowlist)

    def allowed(command: str) -> bool:
        try:
            return allowlist.matches(parse(command))
        except ScopeViolation:
            return False
    return PanelConfig(builtin_panel(allowed), threshold=3, quorum=3)


def test_an_allowlist_reject_keeps_a_request_from_auto_approval_at_any_risk_limit() -> None:
    """autoApproveMaxRisk: high, and the four built-in voters: destructive, blast-radius and
    prompt-injection approve a routine restart, the allowlist voter rejects it (another
    namespace than the allowlist's), so the panel approves 3 of 4 at risk high. A grant of the
    command would be refused (the allowlist is enforced again at grant time): it is not
    auto-approved, and the message says the allowlist's finding."""
    lenient = EnvironmentPolicy.from_dict({"environment": "test", "autoApprove": True,
                                           "autoApproveMaxRisk": "high", "allowlist": ALLOW,
                                           "preview": {"enabled": False}})
    request = body()
    request["spec"]["commands"] = ["kubectl rollout restart deployment/web -n shop"]
    consensus = asyncio.run(run_panel(_allowlist_panel(lenient), approvals.review_input(request)))
    assert (consensus.outcome.value, consensus.approvals, consensus.risk) == ("Approve", 3,
                                                                             Risk.HIGH)
    assert [v.voter for v in consensus.dissent] == ["allowlist"]
    t = approvals.reviewed(request, consensus, lenient, NOW)
    assert t is not None and t.phase == "AwaitingDecision" and t.decision is None
    assert t.audit_data["reason"] == "OutsideAllowlist"
    assert "command 1 of the request is outside the allowlist of environment test" in t.message
    assert "1 of 1 commands are outside the environment's allowlist" in t.message
    # the same request inside the allowlist auto-approves at that limit
    request["spec"]["commands"] = ["kubectl rollout restart deployment/web -n apps"]
    consensus = asyncio.run(run_panel(_allowlist_panel(lenient), approvals.review_input(request)))
    t = approvals.reviewed(request, consensus, lenient, NOW)
    assert t is not None and t.phase == "AutoApproved"


def test_a_rollback_outside_the_allowlist_keeps_a_previewed_request_from_auto_approval() -> None:
    """Rollbacks are not previewed, and a reviewed rollback is granted later without a new
    decision: a request whose command is allowlisted and cleanly previewed, and whose rollback
    the allowlist does not cover, waits for a human at autoApproveMaxRisk high too."""
    lenient = EnvironmentPolicy.from_dict({"environment": "test", "autoApprove": True,
                                           "autoApproveMaxRisk": "high", "allowlist": ALLOW})
    command = "kubectl rollout restart deployment/web -n apps"
    request = body(preview={"phase": "Completed", "commands": [
        {"command": command, "executor": "kubernetes", "outcome": "Previewed"}]})
    request["spec"]["rollbacks"] = [{"command": command,
                                     "rollback": "kubectl rollout restart deployment/web -n shop"}]
    consensus = asyncio.run(run_panel(_allowlist_panel(lenient), approvals.review_input(request)))
    assert consensus.outcome.value == "Approve"
    t = approvals.reviewed(request, consensus, lenient, NOW)
    assert t is not None and t.phase == "AwaitingDecision"
    assert t.audit_data["reason"] == "OutsideAllowlist"
    assert "rollback 1 of the request is outside the allowlist" in t.message

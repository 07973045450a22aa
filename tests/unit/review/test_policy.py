"""Environment policy parsing and the auto-approval / human-approval decisions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wingman.errors import ConfigError
from wingman.model import limits
from wingman.review.consensus import (
    DESTRUCTIVE,
    PROMPT_INJECTION,
    Risk,
    Verdict,
    Vote,
    abstain,
    decide,
)
from wingman.review.policy import (
    MAX_REQUIRED_APPROVALS,
    AutoDecision,
    EnvironmentPolicy,
    HumanOutcome,
    PreviewSpec,
    auto_approval,
    human_decision,
    preview_finding,
)

REPO = Path(__file__).resolve().parents[3]


def approve_all(risk: str = "low", flags: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    votes = [Vote(n, Verdict.APPROVE, Risk(risk), "ok", flags=flags) for n in "abc"]
    return decide(votes, 3, 3)


@pytest.mark.parametrize("env", ["test", "prd"])
def test_shipped_values_parse_into_a_policy(env: str) -> None:
    values = yaml.safe_load((REPO / "manifests" / env / "values.yaml").read_text())
    policy = EnvironmentPolicy.from_dict({"environment": env, **values["policy"]})
    assert policy.name == env
    assert policy.allowlist


def test_required_approvals_leave_the_last_decision_for_a_revocation() -> None:
    """A request holds ten decisions and the CRD keeps the tenth for a Reject: a policy that
    needs ten approvals would leave no room to revoke one, so at most nine, with a message
    that says why; nine and one are taken."""
    assert MAX_REQUIRED_APPROVALS == limits.DECISIONS - 1
    with pytest.raises(ConfigError, match=r"requiredApprovals must be an integer from 1 to 9, "
                                          r"got 10: .*an approval can always be revoked"):
        EnvironmentPolicy.from_dict({"environment": "prd", "requiredApprovals": 10})
    for required in (1, MAX_REQUIRED_APPROVALS):
        assert EnvironmentPolicy.from_dict(
            {"environment": "prd", "requiredApprovals": required}).required_approvals == required


def test_bad_policy_names_the_field() -> None:
    with pytest.raises(ConfigError, match="autoApproveMaxRisk"):
        EnvironmentPolicy.from_dict({"environment": "test", "autoApproveMaxRisk": "tiny"})
    with pytest.raises(ConfigError, match="tokenTTLSeconds"):
        EnvironmentPolicy.from_dict({"environment": "test", "tokenTTLSeconds": 5000})
    with pytest.raises(ConfigError, match="serves 'prd'"):
        EnvironmentPolicy.from_dict({"environment": "test"}, environment="prd")
    with pytest.raises(ConfigError, match=r"unknown typed wildcard \{x\}"):
        EnvironmentPolicy.from_dict({"environment": "test",
                                     "allowlist": ["kubectl get deployment/{x}"]})
    for bad, field in (({"targetDrift": "Ignore"}, "targetDrift must be Refuse or Allow"),
                       ({"preview": {"enabled": "yes"}}, "preview.enabled"),
                       ({"preview": {"timeout": 5}}, "unknown field"),
                       ({"approvalTTLSeconds": 10}, "approvalTTLSeconds"),
                       ({"rollbackWindowSeconds": -1}, "rollbackWindowSeconds")):
        with pytest.raises(ConfigError, match=field):
            EnvironmentPolicy.from_dict({"environment": "test", **bad})


def _llm(name: str, model: str, **extra: object) -> dict[str, object]:
    return {"type": "openai", "name": name, "model": model, "apiKeySecretKey": name, **extra}


def test_a_voter_timeout_the_panel_would_cut_short_is_refused_naming_the_voter() -> None:
    """The panel stops waiting for every voter at its own timeout: a voter given longer (an LLM
    allowed 120 s under the default 30 s panel) would abstain at 30 s without a word."""
    voters = [{"type": "builtin", "name": "destructive"}, _llm("gpt", "gpt-4o"),
              _llm("claude", "claude-sonnet-4-5", timeoutSeconds=120)]
    with pytest.raises(ConfigError, match=(
            r"policy\.panel\.voters\[2\] \(claude\)\.timeoutSeconds is 120, more than "
            r"policy\.panel\.timeoutSeconds \(30\).*raise policy\.panel\.timeoutSeconds to at "
            r"least 120 .*or lower the voter's timeoutSeconds")):
        EnvironmentPolicy.from_dict({"environment": "test", "panel": {
            "threshold": 1, "voters": voters}})
    # a voter without timeoutSeconds has its default, 20 s
    with pytest.raises(ConfigError, match=r"voters\[1\] \(gpt\)\.timeoutSeconds is 20 \(its "
                                          r"default\), more than policy\.panel\.timeoutSeconds "
                                          r"\(10\)"):
        EnvironmentPolicy.from_dict({"environment": "test", "panel": {
            "threshold": 1, "timeoutSeconds": 10, "voters": voters[:2]}})
    policy = EnvironmentPolicy.from_dict({"environment": "test", "panel": {
        "threshold": 1, "timeoutSeconds": 120, "voters": voters}})
    assert policy.panel.timeout_seconds == 120.0
    assert EnvironmentPolicy.from_dict({"environment": "test", "panel": {
        "threshold": 1, "timeoutSeconds": 5, "voters": voters[:1]}}).panel.timeout_seconds == 5


@pytest.mark.parametrize("timeout", [0, -1, 301, "30", True])
def test_the_panel_timeout_is_bounded_by_the_longest_voter_timeout(timeout: object) -> None:
    with pytest.raises(ConfigError, match=r"policy\.panel\.timeoutSeconds must be a number "
                                          r"greater than 0 and at most 300, got "):
        EnvironmentPolicy.from_dict({"environment": "test", "panel": {"timeoutSeconds": timeout}})


def test_prd_refuses_drift_and_every_shipped_environment_previews() -> None:
    for env in ("test", "prd"):
        values = yaml.safe_load((REPO / "manifests" / env / "values.yaml").read_text())
        policy = EnvironmentPolicy.from_dict({"environment": env, **values["policy"]})
        assert policy.preview.enabled
    prd = yaml.safe_load((REPO / "manifests" / "prd" / "values.yaml").read_text())
    assert EnvironmentPolicy.from_dict({"environment": "prd", **prd["policy"]}
                                       ).target_drift.value == "Refuse"
    assert EnvironmentPolicy(name="x").target_drift.value == "Refuse", "refusing is the default"


def test_auto_approval_only_within_policy() -> None:
    test = EnvironmentPolicy(name="test", auto_approve=True, auto_approve_max_risk=Risk.MEDIUM)
    prd = EnvironmentPolicy(name="prd", auto_approve=False, required_approvals=2)
    assert auto_approval(approve_all(), test).decision is AutoDecision.AUTO_APPROVE
    assert auto_approval(approve_all("high"), test).decision is AutoDecision.AWAIT_HUMAN
    assert auto_approval(approve_all(), prd).decision is AutoDecision.AWAIT_HUMAN
    destructive = approve_all(flags=(DESTRUCTIVE,))
    assert auto_approval(destructive, test).decision is AutoDecision.AWAIT_HUMAN
    injected = approve_all(flags=(PROMPT_INJECTION,))
    assert auto_approval(injected, test).decision is AutoDecision.AUTO_REJECT


def test_a_voter_that_failed_or_abstained_blocks_auto_approval() -> None:
    """3 of 4 approve and the panel's outcome is Approve, but one reviewer could not judge:
    auto-approval needs every voter's vote, so a human decides, and the message says why."""
    test = EnvironmentPolicy(name="test", auto_approve=True, auto_approve_max_risk=Risk.MEDIUM)
    approving = [Vote(n, Verdict.APPROVE, Risk.LOW, "ok") for n in "abc"]
    for last, reason, said in (
            (abstain("llm", "Timeout after 30s"), "VoterFailed",
             "voter llm failed: Timeout after 30s"),
            (abstain("builtin", "ValueError"), "VoterFailed", "voter builtin failed: ValueError"),
            (Vote("llm", Verdict.ABSTAIN, Risk.LOW, "cannot judge"), "VoterAbstained",
             "voter llm abstained")):
        consensus = decide([*approving, last], 3, 3)
        assert consensus.outcome.value == "Approve"
        decision = auto_approval(consensus, test)
        assert decision.decision is AutoDecision.AWAIT_HUMAN
        assert decision.reason == reason
        assert said in decision.message
        assert "a human decides" in decision.message
    # Refusing stays the safe side: a prompt injection is still rejected outright.
    injected = decide([*approving[:2], Vote("c", Verdict.APPROVE, Risk.LOW, "ok",
                                            flags=(PROMPT_INJECTION,)),
                       abstain("llm", "Timeout after 30s")], 3, 3)
    assert auto_approval(injected, test).decision is AutoDecision.AUTO_REJECT
    # Every voter voted: auto-approved as before.
    full = decide([*approving, Vote("d", Verdict.APPROVE, Risk.LOW, "ok")], 3, 3)
    assert auto_approval(full, test).decision is AutoDecision.AUTO_APPROVE


def test_human_decision_needs_distinct_approvers_and_any_reject_rejects() -> None:
    prd = EnvironmentPolicy(name="prd", required_approvals=2)
    one = [{"verdict": "Approve", "by": "bob"}]
    assert human_decision(one, prd, "alice").outcome is HumanOutcome.PENDING
    same_twice = [*one, {"verdict": "Approve", "by": "bob"}]
    assert human_decision(same_twice, prd, "alice").outcome is HumanOutcome.PENDING
    self_approval = [*one, {"verdict": "Approve", "by": "alice"}]
    assert human_decision(self_approval, prd, "alice").outcome is HumanOutcome.PENDING
    two = [*one, {"verdict": "Approve", "by": "carol"}]
    d = human_decision(two, prd, "alice")
    assert d.outcome is HumanOutcome.APPROVED and d.approved_by == ("bob", "carol")
    rejected = [*one, {"verdict": "Reject", "by": "carol", "reason": "no"}]
    assert human_decision(rejected, prd, "alice").outcome is HumanOutcome.REJECTED


#: Commands of the requests below, and the allowlist that covers them (a command outside the
#: allowlist is never auto-approved, whatever its preview).
ALLOW = ("kubectl rollout restart deployment/{name} -n apps",)


def _command(i: int) -> str:
    return f"kubectl rollout restart deployment/c{i} -n apps"


C0, C1 = _command(0), _command(1)


def _preview(*outcomes: str, phase: str = "Completed") -> dict[str, object]:
    return {"phase": phase, "commands": [{"command": _command(i), "executor": "kubectl",
                                          "outcome": o} for i, o in enumerate(outcomes)]}


def _commands(n: int) -> list[str]:
    """The request's spec.commands that :func:`_preview` previews, one each, in order."""
    return [_command(i) for i in range(n)]


@pytest.mark.parametrize(("preview", "said"), [
    (_preview("Previewed", "Forbidden"), "command 2 was previewed Forbidden"),
    (_preview("TargetMissing"), "command 1 was previewed TargetMissing"),
    ({"phase": "Failed", "message": "the preview did not report"},
     "the preview is Failed: the preview did not report"),
    ({"phase": "Running"}, "the preview is Running"),
    ({"phase": "Completed", "message": "the request could not be read"},
     "the preview recorded no command: the request could not be read"),
    ({"phase": "Completed", "commands": ["not an entry"]},
     "the preview's entry 1 is not for the request's command 1"),
    ({"phase": "Completed", "commands": [{"command": C0}]},
     "command 1 was previewed without an outcome"),
    ({}, "no preview was recorded"),
])
def test_a_preview_finding_blocks_auto_approval_whichever_voters_sit(
        preview: dict[str, object], said: str) -> None:
    """The panel approves unanimously and nobody flagged PreviewFinding (no blast-radius voter
    on this panel): the recorded preview still keeps the request for a human."""
    test = EnvironmentPolicy(name="test", auto_approve=True, auto_approve_max_risk=Risk.MEDIUM,
                             allowlist=ALLOW)
    entries = preview.get("commands")
    decision = auto_approval(approve_all(), test, preview,
                             _commands(len(entries) if isinstance(entries, list) else 1))
    assert decision.decision is AutoDecision.AWAIT_HUMAN
    assert decision.reason == "PreviewFinding"
    assert said in decision.message and "a human decides" in decision.message


def test_a_clean_preview_or_none_where_the_policy_does_not_preview_auto_approves() -> None:
    test = EnvironmentPolicy(name="test", auto_approve=True, auto_approve_max_risk=Risk.MEDIUM,
                             allowlist=ALLOW)
    clean = _preview("Previewed", "ReadOnly")
    assert preview_finding(clean, test, _commands(2)) == ""
    assert auto_approval(approve_all(), test, clean, _commands(2)
                         ).decision is AutoDecision.AUTO_APPROVE
    unpreviewed = EnvironmentPolicy(name="test", auto_approve=True,
                                    preview=PreviewSpec(enabled=False), allowlist=ALLOW)
    assert auto_approval(approve_all(), unpreviewed, {}).decision is AutoDecision.AUTO_APPROVE
    # a preview recorded while the policy previewed still counts after previews were turned off
    assert auto_approval(approve_all(), unpreviewed, _preview("Forbidden"), _commands(1)
                         ).reason == "PreviewFinding"


@pytest.mark.parametrize(("entries", "commands", "said"), [
    # the preview has no entry for the request's second command
    ([C0], [C0, C1],
     "the preview has 1 entries for the request's 2 command(s)"),
    # an entry for a command the request does not have
    ([C0, C1], [C0],
     "the preview has 2 entries for the request's 1 command(s)"),
    # as many entries, one of them for another command's text (one command previewed twice)
    ([C0, C0], [C0, C1],
     "the preview's entry 2 is not for the request's command 2"),
    # the right commands in another order: entries bind each command in turn
    ([C1, C0], [C0, C1],
     "the preview's entry 1 is not for the request's command 1"),
    # a command that differs from the previewed one only in a space is another command
    ([C0], [C0.replace("restart ", "restart  ")],
     "the preview's entry 1 is not for the request's command 1"),
    # an entry that names no command
    ([None], [C0], "the preview's entry 1 is not for the request's command 1"),
])
def test_a_preview_that_did_not_show_every_command_of_the_request_blocks_auto_approval(
        entries: list[str | None], commands: list[str], said: str) -> None:
    """Every entry is clean (Previewed), the panel approves unanimously: a preview whose
    entries are not the request's commands, one each in order, did not show what the request
    would run, so a human decides, and the message says which entry is wrong."""
    test = EnvironmentPolicy(name="test", auto_approve=True, auto_approve_max_risk=Risk.MEDIUM,
                             allowlist=ALLOW)
    preview = {"phase": "Completed", "commands": [
        {**({"command": c} if c is not None else {}), "executor": "kubernetes",
         "outcome": "Previewed"} for c in entries]}
    decision = auto_approval(approve_all(), test, preview, commands)
    assert decision.decision is AutoDecision.AWAIT_HUMAN
    assert decision.reason == "PreviewFinding"
    assert said in decision.message and "a human decides" in decision.message
    # and the same preview of exactly its commands auto-approves
    exact = {"phase": "Completed", "commands": [
        {"command": c, "executor": "kubernetes", "outcome": "Previewed"} for c in commands]}
    assert auto_approval(approve_all(), test, exact, commands
                         ).decision is AutoDecision.AUTO_APPROVE


def test_a_command_or_rollback_outside_the_allowlist_is_never_auto_approved() -> None:
    """Whichever voters sit on the panel (here three that approve unanimously, no allowlist
    voter) and whatever the risk limit, the policy checks the request's commands and rollbacks
    against the allowlist as a grant would: one outside it (or one that cannot be parsed)
    waits for a human, and the message names it."""
    lenient = EnvironmentPolicy(name="test", auto_approve=True, auto_approve_max_risk=Risk.HIGH,
                                allowlist=ALLOW, preview=PreviewSpec(enabled=False))
    for commands, rollbacks, said in (
            ([C0, "kubectl delete namespace apps"], [], "command 2 of the request is"),
            ([C0], ["kubectl scale deployment/c0 --replicas=1 -n apps"], "rollback 1 of"),
            (["kubectl get pods; rm -rf /"], [C1], "command 1 of"),
            (["kubectl get pods"], ["kubectl get nodes"], "command 1, rollback 1 of the request "
                                                          "are outside")):
        decision = auto_approval(approve_all("high"), lenient, {}, commands, rollbacks)
        assert decision.decision is AutoDecision.AWAIT_HUMAN
        assert decision.reason == "OutsideAllowlist"
        assert said in decision.message and "a human decides" in decision.message
    assert auto_approval(approve_all("high"), lenient, {}, [C0], [C1]
                         ).decision is AutoDecision.AUTO_APPROVE
    # an empty allowlist allows nothing: no grant could run it
    empty = EnvironmentPolicy(name="test", auto_approve=True, preview=PreviewSpec(enabled=False))
    assert auto_approval(approve_all(), empty, {}, [C0]).reason == "OutsideAllowlist"

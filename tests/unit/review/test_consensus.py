"""Consensus arithmetic: thresholds, quorum, abstentions, risk aggregation, dissent."""

from __future__ import annotations

import asyncio

import pytest

from wingman.errors import ConsensusError
from wingman.review.consensus import (
    PROMPT_INJECTION,
    Outcome,
    PanelConfig,
    ReviewInput,
    Risk,
    Verdict,
    Vote,
    decide,
    run_panel,
)

REQ = ReviewInput("ns", "r", "test", "alice", "restart", ("kubectl get pods",))


def v(name: str, verdict: str, risk: str = "low", flags: tuple[str, ...] = ()) -> Vote:
    return Vote(name, Verdict(verdict), Risk(risk), "because", flags=flags)


def test_threshold_of_approvals_approves_and_keeps_dissent() -> None:
    c = decide([v("a", "approve"), v("b", "approve"), v("c", "reject", "high")], 2, 2)
    assert c.outcome is Outcome.APPROVE
    assert [d.voter for d in c.dissent] == ["c"]
    assert c.risk is Risk.HIGH  # the highest, not the average
    assert c.risk_distribution == {"low": 2, "medium": 0, "high": 1, "critical": 0}


def test_abstentions_never_count_as_approval() -> None:
    c = decide([v("a", "approve"), v("b", "abstain"), v("c", "abstain")], 2, 1)
    assert c.outcome is Outcome.NO_CONSENSUS
    assert c.abstentions == 2


def test_quorum_not_met_is_no_consensus_and_all_abstain_is_critical() -> None:
    c = decide([v("a", "abstain"), v("b", "abstain")], 1, 1)
    assert c.outcome is Outcome.NO_CONSENSUS
    assert c.risk is Risk.CRITICAL


def test_rejection_majority_rejects() -> None:
    c = decide([v("a", "approve"), v("b", "reject"), v("c", "reject")], 3, 2)
    assert c.outcome is Outcome.REJECT


def test_prompt_injection_flag_blocks_approval_and_raises_risk() -> None:
    votes = [v("a", "approve"), v("b", "approve"), v("c", "approve"),
             v("d", "reject", "low", (PROMPT_INJECTION,))]
    c = decide(votes, 3, 3)
    assert c.outcome is Outcome.REJECT
    assert c.risk >= Risk.HIGH


def test_panel_configuration_is_validated() -> None:
    class V:
        name = "x"

        async def review(self, request: ReviewInput) -> Vote:
            return v("x", "approve")

    with pytest.raises(ConsensusError, match="threshold"):
        PanelConfig([V()], threshold=2, quorum=1)
    with pytest.raises(ConsensusError, match="no voters"):
        PanelConfig([], threshold=1, quorum=1)


def test_failing_and_slow_voters_abstain() -> None:
    class Boom:
        name = "boom"

        async def review(self, request: ReviewInput) -> Vote:
            raise RuntimeError("model exploded")

    class Slow:
        name = "slow"

        async def review(self, request: ReviewInput) -> Vote:
            await asyncio.sleep(10)
            return v("slow", "approve")

    class Yes:
        name = "yes"

        async def review(self, request: ReviewInput) -> Vote:
            return v("yes", "approve")

    cfg = PanelConfig([Boom(), Slow(), Yes()], threshold=2, quorum=1, timeout_seconds=0.2)
    c = asyncio.run(run_panel(cfg, REQ))
    by = {x.voter: x for x in c.votes}
    assert by["boom"].verdict is Verdict.ABSTAIN and by["boom"].error == "RuntimeError"
    assert by["slow"].verdict is Verdict.ABSTAIN and "Timeout" in (by["slow"].error or "")
    assert c.outcome is Outcome.NO_CONSENSUS
    assert c.to_dict()["votes"][0]["latencySeconds"] >= 0

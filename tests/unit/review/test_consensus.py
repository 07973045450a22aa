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


class _Local:
    """A built-in-like voter: reviews the request alone (``local``)."""

    local = True

    def __init__(self, name: str, verdict: str = "approve", wait: float = 0.0) -> None:
        self.name, self.verdict, self.wait = name, verdict, wait
        self.task: asyncio.Task[object] | None = None

    async def review(self, request: ReviewInput) -> Vote:
        self.task = asyncio.current_task()
        if self.wait:
            await asyncio.sleep(self.wait)
        return v(self.name, self.verdict)


class _Remote:
    """A voter behind an API: waits ``wait`` seconds for its answer."""

    def __init__(self, name: str, wait: float) -> None:
        self.name, self.wait = name, wait
        self.started: float | None = None
        self.cancelled = False

    async def review(self, request: ReviewInput) -> Vote:
        self.started = asyncio.get_running_loop().time()
        try:
            await asyncio.sleep(self.wait)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return v(self.name, "approve")


def test_a_panel_of_local_voters_answers_without_giving_the_event_loop_up() -> None:
    # under a burst every turn of the loop waits behind every other object's work: the
    # built-ins' reviews have nothing to wait for, so the panel takes no turn at all
    async def main() -> tuple[Outcome, bool, bool]:
        turned = asyncio.Event()
        asyncio.get_running_loop().call_soon(turned.set)
        voters = [_Local("a"), _Local("b"), _Local("c", "reject")]
        c = await run_panel(PanelConfig(voters, threshold=2, quorum=3), REQ)
        return c.outcome, turned.is_set(), all(x.task is asyncio.current_task() for x in voters)

    outcome, turned, same_task = asyncio.run(main())
    assert outcome is Outcome.APPROVE
    assert not turned, "the panel gave the event loop up"
    assert same_task


def test_remote_voters_run_alongside_the_local_ones_and_the_votes_keep_the_panel_order() -> None:
    async def main() -> tuple[list[str], float]:
        slow = [_Remote("m1", 0.3), _Remote("m2", 0.3)]
        voters: list[_Local | _Remote] = [slow[0], _Local("a", wait=0.3), slow[1], _Local("b")]
        loop = asyncio.get_running_loop()
        began = loop.time()
        c = await run_panel(PanelConfig(voters, threshold=4, quorum=4), REQ)
        return [x.voter for x in c.votes], loop.time() - began

    order, took = asyncio.run(main())
    assert order == ["m1", "a", "m2", "b"]
    # the remote voters waited while a local one did (one after another would be 0.9 s; the
    # margin is for a machine busy with other tests)
    assert took < 0.8


def test_a_local_voter_that_waits_past_the_timeout_abstains() -> None:
    cfg = PanelConfig([_Local("stuck", wait=10), _Local("b")], threshold=1, quorum=1,
                      timeout_seconds=0.1)
    c = asyncio.run(run_panel(cfg, REQ))
    by = {x.voter: x for x in c.votes}
    assert by["stuck"].verdict is Verdict.ABSTAIN and "Timeout" in (by["stuck"].error or "")
    assert by["b"].verdict is Verdict.APPROVE


def test_a_cancelled_panel_cancels_the_remote_voters_it_started() -> None:
    async def main() -> _Remote:
        remote = _Remote("m", 10)
        panel = asyncio.ensure_future(run_panel(
            PanelConfig([remote, _Local("a", wait=10)], threshold=1, quorum=1,
                        timeout_seconds=30), REQ))
        await asyncio.sleep(0.05)  # the local voter is waiting; the remote one started
        panel.cancel()
        with pytest.raises(asyncio.CancelledError):
            await panel
        await asyncio.sleep(0)
        return remote

    remote = asyncio.run(main())
    assert remote.started is not None and remote.cancelled


def test_the_built_in_voters_say_they_are_local() -> None:
    from wingman.review.consensus import is_local
    from wingman.review.injection import PromptInjectionVoter
    from wingman.review.llm import AnthropicVoter, OpenAIVoter
    from wingman.review.voters import AllowlistVoter, BlastRadiusVoter, DestructivePatternVoter

    assert all(is_local(x) for x in (DestructivePatternVoter, BlastRadiusVoter, AllowlistVoter,
                                      PromptInjectionVoter))
    assert not any(is_local(x) for x in (OpenAIVoter, AnthropicVoter))

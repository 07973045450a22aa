"""The consensus verifier: M independent voters, an N-of-M threshold, quorum, risk aggregation.

It owns the arithmetic of a review, nothing else: which voters sit on a panel comes from
configuration (``wingman.review.panel``), what the outcome means for a request comes from the
environment's policy (``wingman.review.policy``).

Rules (fail closed):

- A vote is approve, reject or abstain. A voter that raises or times out abstains, with
  ``error`` set; abstentions and errors never count as approval. The outcome may still be
  ``Approve`` without them; the policy (``wingman.review.policy.auto_approval``) then never
  auto-approves: a request a voter could not judge waits for a human.
- Outcome: ``Approve`` when at least ``threshold`` voters approve, quorum (non-abstaining
  votes) is met and no voter flagged ``PromptInjection``; ``Reject`` when rejections reach
  ``threshold`` or form a strict majority of the non-abstaining votes; otherwise
  ``NoConsensus`` (quorum not met, or neither side reached its bar).
- Risk is the highest risk among non-abstaining votes (conservative); when every voter
  abstained nobody assessed the request, so it is ``critical``. A ``PromptInjection`` flag
  raises it to at least ``high``. The full distribution is kept.
- Dissent: every non-abstaining vote that disagrees with the outcome, kept whole.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from wingman.errors import ConsensusError

MAX_RATIONALE = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Verdict(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    ABSTAIN = "abstain"


class Risk(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RISK_ORDER.index(self)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Risk):
            return NotImplemented
        return self.rank >= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Risk):
            return NotImplemented
        return self.rank > other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Risk):
            return NotImplemented
        return self.rank <= other.rank

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Risk):
            return NotImplemented
        return self.rank < other.rank


_RISK_ORDER = [Risk.LOW, Risk.MEDIUM, Risk.HIGH, Risk.CRITICAL]


class Outcome(enum.StrEnum):
    APPROVE = "Approve"
    REJECT = "Reject"
    NO_CONSENSUS = "NoConsensus"


PROMPT_INJECTION = "PromptInjection"
DESTRUCTIVE = "Destructive"
#: The request's preview could not show a clean change for some command (target missing,
#: forbidden, invalid, not previewable, failed): people must look.
PREVIEW_FINDING = "PreviewFinding"


def clean_rationale(text: str) -> str:
    """Rationales go to status and audit: strip control characters and bound the length."""
    return _CONTROL.sub(" ", text)[:MAX_RATIONALE]


@dataclass(frozen=True)
class ReviewInput:
    """What voters judge. Every text field is UNTRUSTED data, never instructions."""

    namespace: str
    name: str
    environment: str
    requester: str
    instruction: str
    commands: tuple[str, ...]
    justification: str | None = None
    #: ``spec.source``: provenance (reference, agent, model, excerpt, inputTrust), as given.
    source: Mapping[str, Any] | None = None
    #: ``spec.rollbacks`` as (command, rollback): reviewed together with the commands.
    rollbacks: tuple[tuple[str, str], ...] = ()
    #: ``status.preview`` as the operator recorded it (what the commands would change), or
    #: None when the environment does not preview. Target state, so untrusted data too.
    preview: Mapping[str, Any] | None = None

    @property
    def all_commands(self) -> tuple[str, ...]:
        """The commands and their rollbacks: everything the request may ever run."""
        return self.commands + tuple(r for _, r in self.rollbacks)

    @property
    def untrusted_input(self) -> bool:
        """The worker says the input that led to the request came from untrusted content."""
        return bool(self.source) and (self.source or {}).get("inputTrust") == "Untrusted"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "environment": self.environment,
            "requester": self.requester,
            "instruction": self.instruction,
            "commands": list(self.commands),
            "justification": self.justification,
        }
        if self.source:
            out["source"] = dict(self.source)
        if self.rollbacks:
            out["rollbacks"] = [{"command": c, "rollback": r} for c, r in self.rollbacks]
        if self.preview:
            out["preview"] = _preview_view(self.preview)
        return out


def _preview_view(preview: Mapping[str, Any]) -> dict[str, Any]:
    """What reviewers read of a preview: its outcome per command, targets and diff."""
    commands = []
    for c in preview.get("commands") or []:
        if not isinstance(c, Mapping):
            continue
        targets = [f"{t.get('kind')} "
                   f"{str(t.get('namespace')) + '/' if t.get('namespace') else ''}"
                   f"{t.get('name')} ({t.get('action', 'Update')})"
                   for t in c.get("targets") or [] if isinstance(t, Mapping)]
        commands.append({"command": c.get("command"), "outcome": c.get("outcome"),
                         "message": c.get("message"), "targets": targets,
                         "diff": str(c.get("diff") or "")[:2048]})
    return {"phase": preview.get("phase"), "message": preview.get("message"),
            "summary": preview.get("summary"), "commands": commands}


@dataclass(frozen=True)
class Vote:
    voter: str
    verdict: Verdict
    risk: Risk
    rationale: str
    latency_seconds: float = 0.0
    flags: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "voter": self.voter,
            "verdict": self.verdict.value,
            "risk": self.risk.value,
            "rationale": clean_rationale(self.rationale),
            "latencySeconds": round(self.latency_seconds, 4),
            "flags": list(self.flags),
        }
        if self.error:
            out["error"] = clean_rationale(self.error)
        return out


def abstain(voter: str, error: str, latency: float = 0.0) -> Vote:
    """The vote of a voter that could not judge: never an approval."""
    return Vote(voter, Verdict.ABSTAIN, Risk.CRITICAL, f"abstained: {error}", latency,
                error=error)


class Voter(Protocol):
    """A member of the panel. A voter whose review reads the request alone, waiting for
    nothing outside the process (the built-ins), says so with a class attribute ``local =
    True``: :func:`run_panel` then reviews it in the panel's own task (see there); any other
    voter (a model behind an API) runs as a task of its own."""

    name: str

    async def review(self, request: ReviewInput) -> Vote: ...


def is_local(voter: object) -> bool:
    """Whether ``voter`` says its review waits for nothing outside the process."""
    return getattr(voter, "local", False) is True


@dataclass(frozen=True)
class PanelConfig:
    voters: Sequence[Voter]
    threshold: int
    quorum: int
    timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        m = len(self.voters)
        if m == 0:
            raise ConsensusError("the reviewer panel has no voters; configure at least one")
        names = [v.name for v in self.voters]
        if len(set(names)) != m:
            raise ConsensusError(f"voter names must be unique on a panel, got {names}")
        if not 1 <= self.threshold <= m:
            raise ConsensusError(
                f"threshold {self.threshold} must be between 1 and the number of voters ({m})")
        if not 1 <= self.quorum <= m:
            raise ConsensusError(
                f"quorum {self.quorum} must be between 1 and the number of voters ({m})")
        if self.timeout_seconds <= 0:
            raise ConsensusError("timeoutSeconds must be positive")


@dataclass(frozen=True)
class Consensus:
    votes: tuple[Vote, ...]
    outcome: Outcome
    approvals: int
    rejections: int
    abstentions: int
    risk: Risk
    risk_distribution: dict[str, int]
    dissent: tuple[Vote, ...]
    flags: tuple[str, ...]
    duration_seconds: float = 0.0
    threshold: int = 0
    quorum: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "votes": [v.to_dict() for v in self.votes],
            "outcome": self.outcome.value,
            "approvals": self.approvals,
            "rejections": self.rejections,
            "abstentions": self.abstentions,
            "risk": self.risk.value,
            "riskDistribution": dict(self.risk_distribution),
            "dissent": [v.to_dict() for v in self.dissent],
            "flags": list(self.flags),
            "durationSeconds": round(self.duration_seconds, 4),
        }


def decide(votes: Sequence[Vote], threshold: int, quorum: int,
           duration_seconds: float = 0.0) -> Consensus:
    """The panel's outcome from its votes (pure)."""
    approvals = sum(v.verdict is Verdict.APPROVE for v in votes)
    rejections = sum(v.verdict is Verdict.REJECT for v in votes)
    abstentions = len(votes) - approvals - rejections
    voting = [v for v in votes if v.verdict is not Verdict.ABSTAIN]
    flags = tuple(sorted({f for v in votes for f in v.flags}))
    injected = PROMPT_INJECTION in flags

    if len(voting) >= quorum and approvals >= threshold and not injected \
            and approvals > rejections:
        outcome = Outcome.APPROVE
    elif rejections >= threshold or (voting and rejections * 2 > len(voting)) or injected:
        outcome = Outcome.REJECT
    else:
        outcome = Outcome.NO_CONSENSUS

    risk = max((v.risk for v in voting), key=lambda r: r.rank, default=Risk.CRITICAL)
    if injected and risk < Risk.HIGH:
        risk = Risk.HIGH
    distribution = {r.value: sum(v.risk is r for v in voting) for r in _RISK_ORDER}
    if outcome is Outcome.APPROVE:
        dissent = tuple(v for v in voting if v.verdict is Verdict.REJECT)
    elif outcome is Outcome.REJECT:
        dissent = tuple(v for v in voting if v.verdict is Verdict.APPROVE)
    else:
        dissent = tuple(voting) if approvals and rejections else ()
    return Consensus(tuple(votes), outcome, approvals, rejections, abstentions, risk,
                     distribution, dissent, flags, duration_seconds, threshold, quorum)


async def _one(voter: Voter, request: ReviewInput, timeout: float,
               clock: Callable[[], float]) -> Vote:
    start = clock()
    try:
        async with asyncio.timeout(timeout):  # in the caller's task (wait_for makes another)
            vote = await voter.review(request)
    except TimeoutError:
        return abstain(voter.name, f"Timeout after {timeout:g}s", clock() - start)
    except Exception as exc:  # noqa: BLE001 - any voter failure is an abstention
        return abstain(voter.name, f"{type(exc).__name__}", clock() - start)
    if not isinstance(vote, Vote) or vote.voter != voter.name:
        return abstain(voter.name, "InvalidVote", clock() - start)
    if vote.latency_seconds == 0.0:
        vote = Vote(vote.voter, vote.verdict, vote.risk, vote.rationale, clock() - start,
                    vote.flags, vote.error)
    return vote


async def run_panel(config: PanelConfig, request: ReviewInput, *,
                    clock: Callable[[], float] = time.monotonic) -> Consensus:
    """Run every voter (each bounded by the panel timeout) and decide, the votes in the
    panel's order.

    The voters that wait on something outside the process run concurrently, each as a task,
    started first; the local ones (:func:`is_local`) are then reviewed one after the other in
    the calling task, under the same timeout. Under a burst every task costs turns of a busy
    event loop (a task started, a timer, a result handed back), milliseconds each, and a local
    review has nothing to wait for: a panel of built-ins answers without giving the loop up.
    (The prompt-injection scan of a very large request goes to a thread: the remote voters'
    tasks go on meanwhile.) Cancelled, the panel cancels the tasks it started."""
    start = clock()
    remote = {i: asyncio.ensure_future(_one(v, request, config.timeout_seconds, clock))
              for i, v in enumerate(config.voters) if not is_local(v)}
    try:
        local = {i: await _one(v, request, config.timeout_seconds, clock)
                 for i, v in enumerate(config.voters) if i not in remote}
        answered = dict(zip(remote, await asyncio.gather(*remote.values()), strict=True)) \
            if remote else {}
    except BaseException:
        for task in remote.values():
            task.cancel()
        raise
    votes = [local[i] if i in local else answered[i] for i in range(len(config.voters))]
    return decide(votes, config.threshold, config.quorum, clock() - start)


__all__ = [
    "DESTRUCTIVE",
    "PROMPT_INJECTION",
    "Consensus",
    "Outcome",
    "PanelConfig",
    "ReviewInput",
    "Risk",
    "Verdict",
    "Vote",
    "Voter",
    "abstain",
    "clean_rationale",
    "decide",
    "is_local",
    "run_panel",
]

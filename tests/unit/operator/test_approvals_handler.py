"""The request reconciler's write step without an API server: a reconcile's transitions are
audited as one unit (one wait), written in one status write, and an attempt cut short keeps
what it audited, so the next one writes it with the same records instead of auditing again."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import types
from typing import Any, cast

import pytest

from support.retries import taken_retries
from wingman.audit import AuditRecord, make_record
from wingman.errors import AuditUnavailable
from wingman.kube import ApiError
from wingman.operator.approvals import Transition
from wingman.operator.context import Context
from wingman.operator.handlers.approvals import Recorded, apply
from wingman.operator.metrics import Metrics
from wingman.settings import OperatorSettings

SUBJECT = {"kind": "ApprovalRequest", "namespace": "ns", "name": "req", "uid": "a1"}


def request() -> dict[str, Any]:
    return {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": "req", "namespace": "ns", "uid": "a1",
                         "resourceVersion": "5", "creationTimestamp": "2026-12-02T12:00:00Z"},
            "spec": {"requester": "w", "environment": "test",
                     "commands": ["kubectl rollout restart deployment/web -n apps"]}}


def transition(event: str, phase: str, **status: Any) -> Transition:
    return Transition(status={"phase": phase, **status}, phase=phase, event_reason=phase,
                      message=phase, audit_event=event, audit_data={"step": event})


# a review, and an approver's decision that arrived before it was written: counted in the
# same pass (an auto-approval would be part of the review's one record)
REVIEWED = transition("ApprovalReviewed", "AwaitingDecision", consensus={"outcome": "Approve"})
APPROVED = transition("ApprovalApproved", "Approved", approvedAt="2026-12-02T12:00:01Z")


class Api:
    """Status writes answered as listed (``None``: applied)."""

    def __init__(self, answers: list[ApiError | None]) -> None:
        self.answers = answers
        self.patches: list[dict[str, Any]] = []

    def patch(self, res: Any, namespace: str, name: str, body: dict[str, Any], *,
              subresource: str | None = None) -> dict[str, Any]:
        assert (res.plural, name, subresource) == ("approvalrequests", "req", "status")
        self.patches.append(body)
        answer = self.answers.pop(0)
        if answer is not None:
            raise answer
        written = request()
        written["metadata"]["resourceVersion"] = "6"
        written["status"] = body["status"]
        return written


def setup(monkeypatch: pytest.MonkeyPatch, api: Api, fail_at: int | None = None
          ) -> tuple[Context, list[list[str]]]:
    """A context whose audit units are recorded (each entry from ``fail_at`` on refused, as
    the sink refuses the rest of a unit after a refusal)."""
    ctx = Context(OperatorSettings.from_env({}), cast(Any, api), cast(Any, None),
                  cast(Any, None), cast(Any, None), cast(Any, None), Metrics())
    units: list[list[str]] = []
    seq = [0]

    async def audit_unit(entries: list[tuple[str, dict[str, Any], dict[str, Any]]]
                         ) -> list[AuditRecord | AuditUnavailable]:
        units.append([event for event, _, _ in entries])
        out: list[AuditRecord | AuditUnavailable] = []
        for i, (event, subject, data) in enumerate(entries):
            if fail_at is not None and i >= fail_at:
                out.append(AuditUnavailable("refused", reason="AuditRecordRejected"))
                continue
            out.append(make_record(seq[0], "0" * 64, event, actor="operator", subject=subject,
                                   data=data, now=dt.datetime.now(dt.UTC)))
            seq[0] += 1
        return out

    monkeypatch.setattr(ctx, "audit_unit", audit_unit)
    ctx.events = cast(Any, types.SimpleNamespace(post=lambda *a: None))
    return ctx, units


def test_a_reconcile_s_transitions_are_audited_with_one_wait_and_written_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    api = Api([None])
    ctx, units = setup(monkeypatch, api)
    asyncio.run(apply(ctx, request(), [REVIEWED, APPROVED]))
    assert units == [["ApprovalReviewed", "ApprovalApproved"]]
    (patch,) = api.patches
    assert patch["metadata"] == {"resourceVersion": "5"}
    assert patch["status"]["phase"] == "Approved"
    assert patch["status"]["consensus"] == {"outcome": "Approve"}
    assert patch["status"]["auditHead"].startswith("sha256:")


def test_a_refusal_in_the_unit_keeps_what_was_recorded_before_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The review is recorded, the approval refused: nothing is written to the API server, and
    the next attempt audits only what is missing."""
    api = Api([None])
    ctx, units = setup(monkeypatch, api, fail_at=1)
    unwritten: list[Recorded] = []
    with pytest.raises(AuditUnavailable, match="refused"):
        asyncio.run(apply(ctx, request(), [REVIEWED, APPROVED], unwritten))
    assert api.patches == [] and [r.event for r in unwritten] == ["ApprovalReviewed"]
    reviewed = unwritten[0].record

    ctx, units = setup(monkeypatch, api)
    asyncio.run(apply(ctx, request(), [REVIEWED, APPROVED], unwritten))
    assert units == [["ApprovalApproved"]]
    assert [r.event for r in unwritten] == ["ApprovalReviewed", "ApprovalApproved"]
    assert unwritten[0].record is reviewed
    assert api.patches[0]["status"]["phase"] == "Approved"


def test_a_status_write_that_failed_is_made_again_with_the_same_records(
        monkeypatch: pytest.MonkeyPatch) -> None:
    api = Api([ApiError(503, "ServiceUnavailable", "the API server is away"), None])
    ctx, units = setup(monkeypatch, api)
    unwritten: list[Recorded] = []
    with pytest.raises(ApiError):
        asyncio.run(apply(ctx, request(), [REVIEWED, APPROVED], unwritten))
    assert units == [["ApprovalReviewed", "ApprovalApproved"]]
    asyncio.run(apply(ctx, request(), [REVIEWED, APPROVED], unwritten))
    assert units == [["ApprovalReviewed", "ApprovalApproved"]]  # no second record
    first, second = api.patches
    assert first["status"] == second["status"]


def test_a_transition_that_is_not_the_one_recorded_is_audited_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What an earlier attempt recorded is reused only as far as the transitions repeat it in
    order (the request changed meanwhile: a rejection instead of the approval)."""
    api = Api([ApiError(503, "ServiceUnavailable", "away"), None])
    ctx, units = setup(monkeypatch, api)
    unwritten: list[Recorded] = []
    with pytest.raises(ApiError):
        asyncio.run(apply(ctx, request(), [REVIEWED, APPROVED], unwritten))
    rejected = transition("ApprovalRejected", "Rejected")
    asyncio.run(apply(ctx, request(), [REVIEWED, rejected], unwritten))
    assert units == [["ApprovalReviewed", "ApprovalApproved"], ["ApprovalRejected"]]
    assert [r.event for r in unwritten] == ["ApprovalReviewed", "ApprovalRejected"]
    assert api.patches[-1]["status"]["phase"] == "Rejected"


def test_records_kept_beyond_a_shorter_attempt_are_still_reused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An attempt with fewer transitions than were recorded (the request read again before an
    approval was counted) writes only its own, and keeps the rest for a later attempt."""
    api = Api([ApiError(503, "ServiceUnavailable", "away"),
               ApiError(503, "ServiceUnavailable", "away"), None])
    ctx, units = setup(monkeypatch, api)
    unwritten: list[Recorded] = []
    with pytest.raises(ApiError):
        asyncio.run(apply(ctx, request(), [REVIEWED, APPROVED], unwritten))
    with pytest.raises(ApiError):
        asyncio.run(apply(ctx, request(), [REVIEWED], unwritten))
    assert api.patches[-1]["status"]["phase"] == "AwaitingDecision"  # only what it was asked
    assert [r.event for r in unwritten] == ["ApprovalReviewed", "ApprovalApproved"]
    asyncio.run(apply(ctx, request(), [REVIEWED, APPROVED], unwritten))
    assert units == [["ApprovalReviewed", "ApprovalApproved"]]  # nothing recorded twice
    assert api.patches[-1]["status"]["phase"] == "Approved"


def test_a_late_decision_is_work_unless_the_reconcile_would_not_look_at_it() -> None:
    """A decision added to a final request is work (``DecisionIgnored``), except on a request
    refused for token-shaped text, whose decisions the reconcile never reads: work it would
    never do would keep the request unsettled for ever."""
    from wingman.operator.handlers.approvals import pending_decisions

    ctx = Context(OperatorSettings.from_env({}), cast(Any, None), cast(Any, None),
                  cast(Any, None), cast(Any, None), cast(Any, None), Metrics())
    body = request()
    body["metadata"]["generation"] = 2
    body["spec"]["decisions"] = [{"verdict": "Approve", "by": "carol", "reason": ""}]
    body["status"] = {"observedGeneration": 1, "phase": "Rejected", "conditions": [
        {"type": "Reviewed", "status": "True", "reason": "ConsensusReached"},
        {"type": "Rejected", "status": "True", "reason": "PromptInjection"}]}
    now = dt.datetime(2026, 12, 2, 12, 5, tzinfo=dt.UTC)
    assert pending_decisions(ctx, body, now)
    body["spec"]["instruction"] = "use eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlMTIz"
    assert not pending_decisions(ctx, body, now)


def test_a_copy_from_before_the_operator_s_own_write_is_read_again_not_reviewed_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After an outage a request can be reconciled twice from the same copy (the re-sync's read
    and the watch's re-list, both made before the write): the second must not record the
    review again before its write is refused by the guard. It is read afresh instead (the
    outage test found a review recorded twice this way); so is a copy from before an earlier
    write than the last, or from before anyone's change the operator has seen."""
    from wingman.operator.handlers import approvals as handler
    from wingman.review.consensus import Risk, Verdict, Vote, decide
    from wingman.review.policy import EnvironmentPolicy

    # the API server as it is: the first write lands, a write over the old copy is refused
    api = Api([None, ApiError(409, "Conflict", "the object has been modified")])
    ctx, units = setup(monkeypatch, api)
    settings: Any = types.SimpleNamespace(**vars(ctx.settings))
    settings.policy = EnvironmentPolicy.from_dict(
        {"environment": "test", "autoApprove": True, "preview": {"enabled": False}})
    ctx.settings = settings
    panels: list[str] = []

    async def panel(config: Any, request: Any) -> Any:
        panels.append("ran")
        return decide([Vote(n, Verdict.APPROVE, Risk.LOW, "r") for n in ("a", "b", "c")], 3, 3)
    monkeypatch.setattr(handler, "run_panel", panel)
    monkeypatch.setattr(ctx, "outside_turn", contextlib.nullcontext)
    ctx.reconcilers["approval"] = handler.Approvals()

    def fresh(version: str = "5") -> dict[str, Any]:  # created now: within its lifetime
        made = request()
        made["metadata"]["creationTimestamp"] = dt.datetime.now(dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        made["metadata"]["resourceVersion"] = version
        return made

    async def run(body: dict[str, Any]) -> bool:
        """Run ``body`` as the watch hands it over; whether a fresh read was scheduled."""
        await ctx.run("approval", body)
        return bool(taken_retries(ctx))

    assert not asyncio.run(run(fresh()))
    assert units == [["ApprovalReviewed"]] and len(api.patches) == 1
    for before in ("5", "4"):  # the version written over, and an older one
        assert asyncio.run(run(fresh(before))), "read afresh"
        assert units == [["ApprovalReviewed"]], "no second record"
        assert len(api.patches) == 1 and panels == ["ran"], "no second write, no second panel"
    newer = fresh("6")
    newer["status"] = api.patches[0]["status"]
    assert not asyncio.run(run(newer))  # as written: nothing to do, not refused
    assert units == [["ApprovalReviewed"]] and len(api.patches) == 1


def test_a_relisted_copy_older_than_one_seen_changes_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch's re-list delivers a copy from before the operator's review was written: the
    tracker keeps the reviewed request it knows (its phase, its copy for grants) and the
    reconciler is not handed the old copy. A request that needs nothing more costs nothing;
    one that still needs work (a decision to count) is read again."""
    from wingman.operator.handlers import approvals as handler

    ctx, units = setup(monkeypatch, Api([]))
    reconciler = handler.Approvals()
    ctx.reconcilers["approval"] = reconciler
    reviewed = request()
    reviewed["metadata"]["resourceVersion"] = "6"
    reviewed["status"] = {"phase": "AwaitingDecision", "observedGeneration": 1,
                          "conditions": [{"type": "Reviewed", "status": "True",
                                          "reason": "ConsensusReached"}]}
    entry = handler.observe(ctx, reviewed)
    assert (entry.needs, entry.packed_version) == (None, "6")

    async def relisted() -> set[str]:
        await handler.on_event(ctx, reconciler, {"type": None, "object": request()})
        return taken_retries(ctx)
    assert asyncio.run(relisted()) == set(), "needs nothing: nothing to read"
    assert (entry.phase, entry.needs, entry.newest, entry.packed_version) == (
        "AwaitingDecision", None, "6", "6")
    decided = {**reviewed, "metadata": {**reviewed["metadata"], "resourceVersion": "7",
                                        "generation": 2},
               "spec": {**reviewed["spec"],
                        "decisions": [{"verdict": "Approve", "by": "carol", "reason": ""}]}}
    assert handler.observe(ctx, decided).needs == "decisions"
    assert asyncio.run(relisted()) == {"approval/a1"}, "work to do: read again"
    assert (entry.needs, entry.newest, entry.packed_version) == ("decisions", "7", "7")
    assert units == [], "not reviewed again"

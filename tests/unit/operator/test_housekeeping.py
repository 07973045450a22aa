"""The sweep: a stage that fails does not keep the later ones from running, and an object
that cannot be retired does not keep the others."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import types
from pathlib import Path
from typing import Any, cast

import pytest

from wingman.audit.file import FileSink
from wingman.errors import ClusterError
from wingman.kube import JOBS, SECRETS, ApiError
from wingman.model import names
from wingman.operator import memory
from wingman.operator.context import Context, NotLeading
from wingman.operator.events import Events
from wingman.operator.handlers import grants, housekeeping
from wingman.operator.handlers.housekeeping import _job_outline, orphans, retire, run_stages
from wingman.operator.handlers.housekeeping import refused as is_refusal
from wingman.operator.metrics import Metrics
from wingman.operator.state import Tracker

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def test_every_stage_runs_after_one_failed_and_the_first_failure_is_raised() -> None:
    ran: list[str] = []

    async def ok(name: str) -> None:
        ran.append(name)

    async def fails(name: str) -> None:
        ran.append(name)
        raise ClusterError(f"{name}: delete refused (403)")

    with pytest.raises(ClusterError, match="retire: delete refused"):
        asyncio.run(run_stages(lambda: ok("resync"), lambda: fails("retire"),
                               lambda: ok("keys"), lambda: fails("markers")))
    assert ran == ["resync", "retire", "keys", "markers"]


def test_losing_the_lead_stops_the_remaining_stages() -> None:
    ran: list[str] = []

    async def ok(name: str) -> None:
        ran.append(name)

    async def lost() -> None:
        raise NotLeading("another replica leads")

    with pytest.raises(NotLeading):
        asyncio.run(run_stages(lambda: ok("resync"), lost, lambda: ok("keys")))
    assert ran == ["resync"]


class Refusing:
    """The API server's answers to deletes: ``status`` (403) for the names in ``refused``;
    Events are created and kept in ``events``."""

    def __init__(self, *refused: str, status: int = 403) -> None:
        self.refused = set(refused)
        self.status = status
        self.deleted: list[str] = []
        self.tried: list[str] = []
        self.events: list[dict[str, Any]] = []

    def delete(self, res: Any, namespace: str, name: str, *, uid: str) -> bool:
        self.tried.append(name)
        if name in self.refused:
            raise ApiError(self.status, "Forbidden" if self.status == 403 else "Busy",
                           f"API server answered {self.status}: deleting {name} is refused")
        self.deleted.append(name)
        return True

    def create(self, res: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.events.append(body)
        return body


def finished(tracker: Tracker, request: str, *grants: str) -> None:
    """A request and its grants, all final for an hour, their Secrets gone."""
    an_hour_ago = NOW - dt.timedelta(hours=1)
    a = tracker.observe_approval(
        {"metadata": {"name": request, "namespace": "ns", "uid": f"u-{request}"},
         "status": {"phase": "Expired"}}, False, an_hour_ago)
    a.final_at, a.needs = an_hour_ago, None
    for g in grants:
        e = tracker.observe_grant(
            {"metadata": {"name": g, "namespace": "ns", "uid": f"u-{g}"},
             "spec": {"approvalRef": {"name": request}}, "status": {"phase": "Succeeded"}},
            an_hour_ago)
        e.final_at, e.needs, e.cleaned = an_hour_ago, None, True


def context(kube: Refusing, tmp_path: Path, **setting: object) -> Context:
    settings: Any = types.SimpleNamespace(
        environment="test", api_concurrency=4, **setting,
        policy=types.SimpleNamespace(retention_seconds=60, rollback_window_seconds=0))
    sink = FileSink(tmp_path / "audit.jsonl")
    none: Any = None
    metrics = Metrics()
    ctx = Context(settings, cast(Any, kube), none, sink, none, none, metrics)
    ctx.events = Events(cast(Any, kube), "operator-0", metrics.events_dropped)
    return ctx


def sweeps(ctx: Context, kube: Refusing, times: int, events: int) -> None:
    """``times`` sweeps' retirements, each refused; then the Events they queued are posted
    (at least ``events`` of them, and a moment for any more)."""
    async def run() -> None:
        assert ctx.events is not None
        ctx.events.start()
        try:
            for _ in range(times):
                result = await retire(ctx, NOW)
                assert isinstance(result.failure, ApiError)
                assert "stuck-1" in str(result.failure)
            assert ctx.events._queue is not None
            for _ in range(500):
                if ctx.events._queue.empty() and len(kube.events) >= events:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
        finally:
            await ctx.events.stop()
    asyncio.run(run())


def refused(ctx: Context) -> float:
    value = ctx.metrics.registry.get_sample_value(
        "wingman_retirement_refused_total",
        {"environment": "test", "resource": "executiongrants"})
    return value or 0.0


def test_an_object_that_cannot_be_deleted_keeps_back_only_itself_and_is_audited_once(
        tmp_path: Path) -> None:
    kube = Refusing("stuck-1")
    ctx = context(kube, tmp_path)
    finished(ctx.tracker, "stuck", "stuck-1", "stuck-2")
    for i in range(40):
        finished(ctx.tracker, f"r{i}", f"r{i}-g")

    sweeps(ctx, kube, 2, events=1)  # two sweeps: the refused delete is retried
    # everything else is gone, grants before their requests; the stuck grant keeps its request
    assert sorted(kube.deleted) == sorted(
        ["stuck-2", *(f"r{i}-g" for i in range(40)), *(f"r{i}" for i in range(40))])
    assert kube.deleted.index("r0-g") < kube.deleted.index("r0")
    assert set(ctx.tracker.grants) == {"u-stuck-1"}
    assert set(ctx.tracker.approvals) == {"u-stuck"}
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    retired = [r["subject"]["name"] for r in records if r["event"] == "GrantRetired"]
    assert retired.count("stuck-1") == 1 and len(retired) == 42
    # each refusal is counted; the object gets one Warning Event that says what to do
    assert refused(ctx) == 2.0
    (event,) = kube.events
    assert event["involvedObject"] == {"apiVersion": "wingman.dev/v1alpha1",
                                       "kind": "ExecutionGrant", "name": "stuck-1",
                                       "namespace": "ns", "uid": "u-stuck-1"}
    assert (event["type"], event["reason"]) == ("Warning", "RetirementRefused")
    message = event["message"]
    assert "refused to delete this ExecutionGrant after the retention (60 s)" in message
    assert "API server answered 403: deleting stuck-1 is refused" in message
    assert "so does its ApprovalRequest" in message
    assert "admission policies and webhooks that match DELETE of " \
        "executiongrants.wingman.dev" in message


def test_a_burst_is_retired_in_waves_oldest_first_each_request_after_its_grants(
        tmp_path: Path) -> None:
    kube = Refusing()
    ctx = context(kube, tmp_path)
    for i in range(5):
        finished(ctx.tracker, f"req-{i}", f"grant-{i}")
        age = dt.timedelta(hours=2, minutes=-i)  # req-0 and grant-0 finished first
        for e in (ctx.tracker.approval(f"req-{i}"), ctx.tracker.grants[f"u-grant-{i}"]):
            assert e is not None
            e.final_at = NOW - age
    waves = []
    for _ in range(5):
        kube.deleted.clear()
        result = asyncio.run(retire(ctx, NOW, wave=3))
        waves.append((list(kube.deleted), result.retired, result.more))
        assert result.failure is None
        if not result.more:
            break
    assert waves == [
        (["grant-0", "grant-1", "grant-2"], 3, True),
        (["grant-3", "grant-4", "req-0"], 3, True),
        (["req-1", "req-2", "req-3"], 3, True),
        (["req-4"], 1, False),
    ]
    assert not ctx.tracker.grants and not ctx.tracker.approvals


def aged(ctx: Context, minutes: int, *names: str) -> None:
    """Make the objects named finish ``minutes`` later than the others."""
    for e in [*ctx.tracker.grants.values(), *ctx.tracker.approvals.values()]:
        if e.name in names:
            assert e.final_at is not None
            e.final_at += dt.timedelta(minutes=minutes)


def test_deletes_refused_before_take_no_room_in_a_wave_and_are_tried_again_apart(
        tmp_path: Path) -> None:
    """As many grants held by an admission policy as a wave takes: the rest of the burst still
    goes, at the waves' pace; the held ones are tried again only when ``refused_too``."""
    kube = Refusing("stuck-1", "stuck-2")
    ctx = context(kube, tmp_path)
    finished(ctx.tracker, "old", "stuck-1", "stuck-2")
    for i in range(3):
        finished(ctx.tracker, f"req-{i}", f"grant-{i}")
        aged(ctx, 1 + i, f"req-{i}", f"grant-{i}")
    passes = []
    for refused_too in (True, False, False, True):
        kube.deleted.clear()
        result = asyncio.run(retire(ctx, NOW, wave=2, refused_too=refused_too))
        failure = result.failure is not None and "refused" in str(result.failure)
        passes.append((sorted(kube.deleted), result.retired, result.more, failure))
    assert passes == [
        ([], 0, True, True),  # the two oldest are refused: the first time, they fill a wave
        (["grant-0", "grant-1"], 2, True, False),  # then they take no room, and are not tried
        (["grant-2", "req-0"], 2, True, False),
        (["req-1", "req-2"], 2, False, True),  # tried again, refused again: nothing more due
    ]
    assert set(ctx.tracker.grants) == {"u-stuck-1", "u-stuck-2"}
    assert {e.name for e in ctx.tracker.approvals.values()} == {"old"}
    assert refused(ctx) == 4.0


@pytest.mark.parametrize(("pairs", "wave", "retired", "more"), [
    (3, 2, 1, False),  # half of the wave failed: an API server in trouble is not asked sooner
    (12, 11, 10, True),  # one in eleven: one object that keeps failing does not slow the rest
])
def test_deletes_that_fail_slow_the_waves_only_when_they_are_many(
        tmp_path: Path, pairs: int, wave: int, retired: int, more: bool) -> None:
    kube = Refusing("grant-0", status=503)
    ctx = context(kube, tmp_path)
    for i in range(pairs):
        finished(ctx.tracker, f"req-{i}", f"grant-{i}")
    result = asyncio.run(retire(ctx, NOW, wave=wave))
    assert isinstance(result.failure, ApiError) and result.failure.status == 503
    assert (result.retired, result.more) == (retired, more)


def test_every_refused_object_is_tried_again_in_turn_however_many_are_held(
        tmp_path: Path) -> None:
    held = [f"s-{i}" for i in range(3)]
    kube = Refusing(*held)
    ctx = context(kube, tmp_path)
    finished(ctx.tracker, "held", *held)
    for _ in range(2):  # each refused once, as the oldest of a wave of two
        asyncio.run(retire(ctx, NOW, wave=2, refused_too=False))
    assert sorted(kube.tried) == held
    kube.tried.clear()
    for _ in range(3):
        asyncio.run(retire(ctx, NOW, wave=2, refused_too=True))
    assert sorted(kube.tried) == sorted(held * 2)  # two a pass, each twice in three passes


def test_a_lost_lead_is_the_failure_handed_back(tmp_path: Path) -> None:
    kube = Refusing("stuck-1")
    ctx = context(kube, tmp_path)
    finished(ctx.tracker, "old", "stuck-1")
    for i in range(3):
        finished(ctx.tracker, f"req-{i}", f"grant-{i}")
    real_delete = kube.delete

    def delete_then_lose_the_lead(res: Any, namespace: str, name: str, *, uid: str) -> bool:
        done = real_delete(res, namespace, name, uid=uid)
        ctx.leader = cast(Any, types.SimpleNamespace(leading=False))
        return done
    kube.refused.add("stuck-1")
    kube.delete = delete_then_lose_the_lead  # type: ignore[method-assign]
    result = asyncio.run(retire(ctx, NOW, wave=10))
    assert isinstance(result.failure, NotLeading)
    assert kube.tried[0] == "stuck-1" and "grant-0" in kube.tried


def test_the_next_pass_comes_sooner_only_while_a_leader_has_waves_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kube = Refusing()
    ctx = context(kube, tmp_path, sweep_interval_seconds=10)
    released: list[float] = []
    monkeypatch.setattr(housekeeping, "RETIRE_WAVE", 3)
    monkeypatch.setattr(memory, "release", lambda: released.append(1.0))
    for i in range(2):
        finished(ctx.tracker, f"req-{i}", f"grant-{i}")
    sweeper = housekeeping.Sweeper(ctx)
    assert sweeper.pause() == 10
    asyncio.run(sweeper._retire(NOW, 10.0))
    assert (len(kube.deleted), released) == (3, [])
    assert sweeper.pause() == housekeeping.RETIRE_PAUSE_SECONDS
    ctx.leader = cast(Any, types.SimpleNamespace(leading=False))
    assert sweeper.pause() == 10  # a follower sweeps at its interval
    ctx.leader = None
    asyncio.run(sweeper._retire(NOW, 12.0))
    assert (len(kube.deleted), sweeper.pause(), released) == (4, 10, [])
    asyncio.run(sweeper._retire(NOW, 22.0))  # nothing left: what they held goes back, once
    asyncio.run(sweeper._retire(NOW, 32.0))
    assert (len(kube.deleted), sweeper.pause(), released) == (4, 10, [1.0])


@pytest.mark.parametrize(("status", "message", "refusal"), [
    (403, "forbidden: the policy wingman-hold denied the request", True),
    (422, "ValidatingAdmissionPolicy 'hold' denied request", True),
    (400, "bad request", True),
    (500, 'Internal error occurred: failed calling webhook "hold.example.com"', True),
    (500, "etcdserver: request timed out", False),  # the API server's trouble, not a refusal
    (409, "Precondition failed: UID in precondition", False),  # replaced meanwhile
    (429, "too many requests", False),
    (503, 'failed calling webhook "hold.example.com": service unavailable', False),
    (504, "timeout", False),
])
def test_what_counts_as_a_refused_delete(status: int, message: str, refusal: bool) -> None:
    assert is_refusal(ApiError(status, "x", message)) is refusal


def test_an_overloaded_api_server_is_not_a_refusal(tmp_path: Path) -> None:
    kube = Refusing("stuck-1", status=429)
    ctx = context(kube, tmp_path)
    finished(ctx.tracker, "stuck", "stuck-1")

    sweeps(ctx, kube, 1, events=0)
    assert refused(ctx) == 0.0 and kube.events == []
    assert set(ctx.tracker.grants) == {"u-stuck-1"}  # retried at the next sweep



def test_a_burn_marker_outlives_every_token_that_shares_its_jti() -> None:
    """Tokens minted again for one grant share its jti and its iat, each living at most
    MAX_TTL_SECONDS: the marker, removed MARKER_GRACE_SECONDS after the expiry it records (at
    least iat + 1 s), must still be there when any of them could be presented."""
    from wingman.capability.tokens import MAX_TTL_SECONDS
    from wingman.operator.handlers.housekeeping import MARKER_GRACE_SECONDS

    assert 1 + MARKER_GRACE_SECONDS >= MAX_TTL_SECONDS


def _owned(uid: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant", "name": "g",
             "uid": uid}]


def _outline(name: str, grant: str, grant_uid: str, *, owners: list[dict[str, Any]] | None = None,
             role: str = "gateway") -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"job-{name}", "ownerReferences": owners,
                         "labels": {names.ROLE_LABEL: role, names.GRANT_LABEL: grant}},
            "grant": grant_uid}


def _token_secret(name: str, grant: str, job: str, *, owners: list[dict[str, Any]] | None = None,
                  type_: str = names.SECRET_TYPE, grant_uid: str | None = None
                  ) -> dict[str, Any]:
    """A token Secret's metadata as listed; ``grant_uid``: the grant's UID it records, as this
    release makes them (None: as an earlier release made them, without it)."""
    annotations = {names.JOB_UID_ANNOTATION: f"job-{job}"}
    if grant_uid is not None:
        annotations[names.GRANT_UID_ANNOTATION] = grant_uid
    return {"type": type_, "metadata": {
        "name": name, "uid": f"secret-{name}", "ownerReferences": owners,
        "labels": {names.GRANT_LABEL: grant}, "annotations": annotations}}


def test_a_listed_token_secret_is_kept_as_its_metadata_and_never_as_another_type() -> None:
    """The sweep lists token Secrets by type and metadata alone: what it keeps of one that
    could be an orphan is its metadata (never its data), and should an API server send whole
    Secrets of another type anyway, none of them is taken for a token Secret."""
    listed = _token_secret("gone-token", "gone", "gone-gw")
    whole = {**listed, "data": {"token": "c2VjcmV0"}}
    metadata_only = {"kind": "PartialObjectMetadata", "metadata": listed["metadata"]}
    for obj in (whole, metadata_only):
        kept = housekeeping._secret_outline(obj)
        assert kept is not None and "data" not in kept and kept["type"] == names.SECRET_TYPE
        assert kept["metadata"]["annotations"] == listed["metadata"]["annotations"]
    assert housekeeping._secret_outline({**whole, "type": "Opaque"}) is None
    owned = _token_secret("live-token", "live", "live-gw", owners=_owned("uid-live"))
    assert housekeeping._secret_outline(owned) is None


def test_orphans_are_only_the_unowned_objects_of_grants_that_are_gone() -> None:
    jobs = [
        _outline("gone-gw", "gone", "uid-gone"),
        _outline("live-gw", "live", "uid-live", owners=_owned("uid-live")),
        # no owner, but made for a grant that is still there: not judged gone
        _outline("stripped-gw", "stripped", "uid-stripped"),
        _outline("gone-preview", "gone", "uid-gone", role="preview"),
        # owned by something else: not the operator's leftover
        _outline("foreign-gw", "foreign", "uid-foreign", owners=[
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "cm"}]),
    ]
    secrets = [
        _token_secret("gone-token", "gone", "gone-gw"),
        _token_secret("live-token", "live", "live-gw", owners=_owned("uid-live")),
        # no owner, but its Job is a live grant's (or was made for one): kept
        _token_secret("live-token-2", "live", "live-gw"),
        _token_secret("stripped-token", "stripped", "stripped-gw"),
        _token_secret("gone-opaque", "gone", "gone-gw", type_="Opaque"),
        # its Job is gone too: the grant's UID is the one the Secret records
        _token_secret("old-gw-token-0123456789abcdef", "old", "old-gw", grant_uid="uid-old"),
        # ... or, made by an earlier release, which did not record it, unknown
        _token_secret("older-token", "older", "older-gw"),
        # its Job is gone, and it records a grant still there: kept
        _token_secret("kept-gw-token-0123456789abcdef", "stripped", "kept-gw",
                      grant_uid="uid-stripped"),
        # ... but not on a name anyone allowed to make Secrets could give it (only the
        # operator may make a Secret named as a token Secret): its record is not believed
        _token_secret("forged-token", "stripped", "forged-gw", grant_uid="uid-stripped"),
    ]
    found = orphans(secrets, jobs, {"uid-live", "uid-stripped"})
    assert {k: sorted((r.plural, o["metadata"]["name"]) for r, o in v)
            for k, v in found.items()} == {
        ("gone", "uid-gone"): [(JOBS.plural, "gone-gw"), (SECRETS.plural, "gone-token")],
        ("old", "uid-old"): [(SECRETS.plural, "old-gw-token-0123456789abcdef")],
        ("older", None): [(SECRETS.plural, "older-token")],
        ("stripped", None): [(SECRETS.plural, "forged-token")],
    }


def test_a_token_secret_whose_job_was_deleted_during_the_sweep_is_left_for_the_next() -> None:
    """A gateway Job listed by the sweep and gone when it reads it: its token Secret's record
    named the grant UID "" (the Job's was not known). What deleted the Job may be removing the
    Secret as well (a grant created again under the name removes its namesake's orphans, with
    their grant's UID), so the sweep leaves it for the next one; no record names an empty
    grant UID."""
    secrets = [_token_secret("gone-token", "gone", "gone-gw"),
               _token_secret("went-token", "went", "went-gw", grant_uid="uid-went"),
               _token_secret("other-token", "other", "other-gw")]
    found = orphans(secrets, [], set(), frozenset({"job-gone-gw", "job-went-gw"}))
    assert {k: [o["metadata"]["name"] for _, o in v] for k, v in found.items()} == {
        ("other", None): ["other-token"]}
    assert all(uid != "" for _, uid in orphans(secrets, [], set()))


def test_only_a_deletion_the_retirement_did_not_make_sends_the_sweep_looking_for_orphans(
        tmp_path: Path) -> None:
    """A grant deleted by someone (``kubectl delete eg``, maybe ``--cascade=orphan``) makes the
    next sweep look for what it left without an owner; the retirement's own deletions
    (background propagation: the garbage collector takes the Job and Secret) do not, so a busy
    operator does not list every Job and Secret at each sweep."""
    ctx = context(Refusing(), tmp_path)
    finished(ctx.tracker, "r1", "by-someone", "retired")
    ctx.orphans_due = False
    ctx.tracker.grants["u-retired"].retire_recorded = True  # retire_one, before its delete
    grants.deleted(ctx, "u-retired")
    assert not ctx.orphans_due
    grants.deleted(ctx, "u-unknown")  # forgotten already (retired, or never seen)
    assert not ctx.orphans_due
    grants.deleted(ctx, "u-by-someone")
    assert ctx.orphans_due
    assert "u-by-someone" not in ctx.tracker.grants


def _gateway_job(name: str, grant: str, grant_uid: str, *, deleting: bool) -> dict[str, Any]:
    """A gateway Job as the API server lists it: left without an owner (its grant deleted with
    propagation Orphan), and, when ``deleting``, whose deletion was asked already and a
    finalizer holds it."""
    meta: dict[str, Any] = {
        "name": name, "namespace": "ns", "uid": f"job-{name}",
        "labels": {names.ROLE_LABEL: "gateway", names.GRANT_LABEL: grant}}
    if deleting:
        meta |= {"deletionTimestamp": "2026-11-25T11:00:00Z",
                 "finalizers": ["example.com/hold"]}
    return {"metadata": meta, "spec": {"template": {"spec": {
        "serviceAccountName": "wingman-gateway",
        "containers": [{"name": "gateway",
                        "env": [{"name": "WINGMAN_GRANT_UID", "value": grant_uid}]}]}}}}


def test_an_orphan_whose_deletion_was_asked_already_is_not_removed_and_recorded_again() -> None:
    """An orphaned gateway Job (and token Secret) removed once, held by a finalizer: each sweep
    (and each try of a grant waiting for its name, about once a second) found it again as an
    orphan, recorded GrantOrphansRemoved again and deleted it again, for as long as the
    finalizer held it. Being deleted already, it is no orphan left to remove."""
    held = _job_outline(_gateway_job("held-gw", "held", "uid-held", deleting=True))
    fresh = _job_outline(_gateway_job("fresh-gw", "fresh", "uid-fresh", deleting=False))
    held_secret = _token_secret("held-token", "held", "held-gw")
    held_secret["metadata"]["deletionTimestamp"] = "2026-11-25T11:00:00Z"
    found = orphans([held_secret, _token_secret("fresh-token", "fresh", "fresh-gw")],
                    [held, fresh], set())
    assert {k: sorted(o["metadata"]["name"] for _, o in v) for k, v in found.items()} == {
        ("fresh", "uid-fresh"): ["fresh-gw", "fresh-token"]}


def test_a_new_grant_waits_for_a_deleted_namesakes_orphan_a_finalizer_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A grant created again under a deleted one's name finds that grant's orphaned gateway Job
    being deleted (removed once, a finalizer holds it): it waits for the name, removing and
    recording nothing again (no list, no delete), and after a while says on the grant what it
    waits for and what to check, then tries less often."""
    monkeypatch.setattr(grants, "NAMESAKE_WAIT_SECONDS", 0.0)
    kube = Refusing()
    ctx = context(kube, tmp_path, namespace="ns", gateway_service_account="wingman-gateway")
    grant = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
             "metadata": {"name": "g1", "namespace": "ns", "uid": "uid-new"},
             "spec": {"approvalRef": {"name": "r1"}}, "status": {}}
    ctx.tracker.observe_grant(grant, NOW)
    job = _gateway_job("g1-gw", "g1", "uid-old", deleting=True)

    async def run() -> tuple[str | None, float]:
        assert ctx.events is not None
        ctx.events.start()
        try:
            found = await grants._deleted_namesakes_job(ctx, grant, job)
            delay = grants._await_collector(ctx, grant, job)
            for _ in range(500):
                if kube.events:
                    break
                await asyncio.sleep(0.01)
        finally:
            await ctx.events.stop()
        return found, delay

    found, delay = asyncio.run(run())
    assert (found, delay) == ("collecting", grants.NAMESAKE_RETRY_SECONDS)
    assert kube.deleted == []
    assert not (tmp_path / "audit.jsonl").exists() or \
        "GrantOrphansRemoved" not in (tmp_path / "audit.jsonl").read_text()
    [event] = kube.events
    assert event["reason"] == "WaitingForGarbageCollector"
    message = event["message"]
    assert "Job g1-gw" in message and "uid uid-old" in message, message
    assert "a finalizer holds it" in message and "left without an owner" in message, message
    assert "names that grant as its owner" not in message, message

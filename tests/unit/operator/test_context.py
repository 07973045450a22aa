"""How ``Context.run`` schedules reconciles: a burst takes turns, each object still runs once;
audit appends have a thread of their own."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from support.retries import taken_retries
from wingman.audit import FileSink
from wingman.errors import AuditUnavailable
from wingman.kube import ApiError, Kube, Resource
from wingman.operator.context import (
    RUNNING_PER_THREAD,
    STALE_READS,
    TRANSIENT_DELAYS,
    Context,
    Retry,
)
from wingman.operator.metrics import Metrics
from wingman.operator.pool import CallPool


class Counting:
    """A reconciler that notes how many reconciles run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.done: list[str] = []

    def observe(self, ctx: Context, body: dict[str, Any]) -> Any:
        return ctx.tracker.observe_grant(body, dt.datetime.now(dt.UTC))

    async def reconcile(self, ctx: Context, body: dict[str, Any]) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.005)  # an API call
        self.running -= 1
        self.done.append(body["metadata"]["name"])

    async def abandon(self, ctx: Context, body: dict[str, Any], reason: str,
                      message: str) -> None:
        raise AssertionError("nothing fails here")


def context(concurrency: int) -> tuple[Context, Counting]:
    settings: Any = types.SimpleNamespace(api_concurrency=concurrency, environment="test")
    none: Any = None
    ctx = Context(settings, none, none, none, none, none, Metrics())
    reconciler = Counting()
    ctx.reconcilers["grant"] = reconciler
    return ctx, reconciler


def body(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"g{i}", "namespace": "ns", "uid": f"u{i}"}}


def test_a_burst_is_reconciled_a_bounded_number_at_a_time() -> None:
    """A thousand objects at once: every one is reconciled, never more than the pool's threads
    times RUNNING_PER_THREAD together (the rest wait without holding responses in memory)."""
    ctx, reconciler = context(4)

    async def burst() -> None:
        await asyncio.gather(*(ctx.run("grant", body(i)) for i in range(1000)))
    asyncio.run(burst())
    assert sorted(reconciler.done) == sorted(f"g{i}" for i in range(1000))
    assert reconciler.most == 4 * RUNNING_PER_THREAD


def _histogram(metric: Any, **labels: str) -> tuple[float, float, dict[float, float]]:
    """(count, sum, cumulative buckets) of a histogram's series."""
    got: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.name.endswith("_bucket"):
                buckets[float(sample.labels["le"])] = sample.value
            else:
                got[sample.name.rsplit("_", 1)[1]] = sample.value
    return got.get("count", 0.0), got.get("sum", 0.0), buckets


def test_each_reconcile_s_wait_for_its_turn_and_its_time_are_measured() -> None:
    """``wingman_reconcile_wait_seconds`` and ``_duration_seconds``: once per reconcile; in a
    burst larger than the slots, the objects after the first slots wait for a turn."""
    ctx, _ = context(1)  # 2 slots; each reconcile takes about 5 ms

    async def burst() -> None:
        await asyncio.gather(*(ctx.run("grant", body(i)) for i in range(10)))
    asyncio.run(burst())
    waits, waited, buckets = _histogram(ctx.metrics.reconcile_wait,
                                        resource="executiongrants")
    runs, ran, _ = _histogram(ctx.metrics.reconcile_duration, resource="executiongrants")
    assert waits == runs == 10
    assert ran >= 10 * 0.004
    assert buckets[0.001] <= 2 + 1  # the first two start at once (one more may be quick)
    assert waited >= 0.005 * (1 + 2 + 3 + 4) * 2 * 0.8  # the other eight queued, in pairs


def test_a_blocking_call_s_wait_for_a_thread_is_measured() -> None:
    """``wingman_call_wait_seconds``: with the one thread busy, the next call waits for it."""
    ctx, _ = context(1)
    ctx.executor = CallPool(1, thread_name_prefix="api")

    async def two() -> None:
        await asyncio.gather(ctx.call(time.sleep, 0.05), ctx.call(time.sleep, 0.0))
    try:
        asyncio.run(two())
    finally:
        ctx.executor.shutdown(wait=True)
    count, total, _ = _histogram(ctx.metrics.call_wait)
    assert count == 2 and total >= 0.04


def test_a_new_event_loop_gets_its_own_turns() -> None:
    """A context outlives an event loop (a restart in the same process): runs go on."""
    ctx, reconciler = context(1)

    async def five() -> None:
        await asyncio.wait_for(asyncio.gather(*(ctx.run("grant", body(i)) for i in range(5))),
                               10)
    for _ in range(2):
        asyncio.run(five())
    assert len(reconciler.done) == 10 and reconciler.most == RUNNING_PER_THREAD


def test_a_request_waiting_for_its_review_leaves_its_turn_to_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reviews can take the panel's whole timeout (LLM voters, each with a few calls at once):
    requests waiting for theirs do not hold every slot, so a grant still runs meanwhile."""
    from wingman.operator.handlers import approvals as handler
    from wingman.review.policy import EnvironmentPolicy

    ctx, grants = context(1)  # RUNNING_PER_THREAD slots
    settings: Any = ctx.settings
    settings.policy = EnvironmentPolicy.from_dict(
        {"environment": "test", "preview": {"enabled": False}})
    ctx.reconcilers["approval"] = handler.Approvals()
    reviewing: list[str] = []
    verdicts = asyncio.Event()

    async def slow_panel(panel: Any, request: Any) -> Any:
        reviewing.append(str(request))
        await verdicts.wait()
        raise AssertionError("the test ends before any verdict")
    monkeypatch.setattr(handler, "run_panel", slow_panel)

    def request(i: int) -> dict[str, Any]:
        return {"kind": "ApprovalRequest", "apiVersion": "wingman.dev/v1alpha1",
                "metadata": {"name": f"r{i}", "namespace": "ns", "uid": f"a{i}",
                             "generation": 1, "resourceVersion": "1",
                             "creationTimestamp": "2026-11-25T11:00:00Z"},
                "spec": {"requester": "alice", "environment": "test", "instruction": "x",
                         "commands": ["kubectl get pods -n apps"]},
                "status": {}}

    async def scenario() -> None:
        waiting = [asyncio.ensure_future(ctx.run("approval", request(i)))
                   for i in range(3 * RUNNING_PER_THREAD)]
        for _ in range(5000):  # every slot is taken by a request that waits for its review
            if len(reviewing) >= RUNNING_PER_THREAD:
                break
            await asyncio.sleep(0.001)
        await asyncio.wait_for(ctx.run("grant", body(0)), 2)
        assert len(reviewing) == 3 * RUNNING_PER_THREAD, "no request waits for a turn"
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    asyncio.run(scenario())
    assert grants.done == ["g0"]


class Refused(Counting):
    """Every write is refused for good (a 422), and ending the object meets a conflict: it
    changed since it was read."""

    def __init__(self) -> None:
        super().__init__()
        self.abandoned = 0

    async def reconcile(self, ctx: Context, body: dict[str, Any]) -> None:
        raise ApiError(422, "Invalid", "the object is too large")

    async def abandon(self, ctx: Context, body: dict[str, Any], reason: str,
                      message: str) -> None:
        self.abandoned += 1
        raise Retry("the grant changed since it was read")


def test_a_conflict_while_ending_an_object_is_retried_from_a_fresh_read() -> None:
    """The refusal that ends an object is itself a guarded write: a conflict must bring the
    object back (a resync) rather than escape into the framework and leave it as it is."""
    ctx, _ = context(1)
    refused = Refused()
    ctx.reconcilers["grant"] = refused

    async def once() -> bool:
        await ctx.run("grant", body(1))  # must not raise
        scheduled = "grant/u1" in ctx._retries
        for handle in ctx._retries.values():
            handle.cancel()
        return scheduled
    assert asyncio.run(once()) and refused.abandoned == 1


def test_an_audit_append_does_not_wait_for_a_thread_behind_api_calls(tmp_path: Path) -> None:
    """Every API thread is busy (a burst's calls, each waiting for the API server): a
    transition's audit record is still written at once, on the audit thread."""
    settings: Any = types.SimpleNamespace(api_concurrency=2, environment="test")
    none: Any = None
    sink = FileSink(tmp_path / "audit.jsonl")
    ctx = Context(settings, none, none, sink, none, none, Metrics())
    ctx.executor = CallPool(2, thread_name_prefix="api")
    ctx.audit_executor = CallPool(1, thread_name_prefix="audit")
    release = threading.Event()

    async def burst() -> str:
        calls = [asyncio.ensure_future(ctx.call(release.wait, 30)) for _ in range(4)]
        await asyncio.sleep(0.05)  # both API threads taken, two calls queued for them
        try:
            record = await asyncio.wait_for(
                ctx.audit("ApprovalReviewed", {"kind": "ApprovalRequest", "name": "r"}, {}), 5)
        finally:
            release.set()
            await asyncio.gather(*calls)
        return record.event
    try:
        assert asyncio.run(burst()) == "ApprovalReviewed"
    finally:
        ctx.executor.shutdown(wait=True)
        ctx.audit_executor.shutdown(wait=True)
        sink.close()
    assert "ApprovalReviewed" in (tmp_path / "audit.jsonl").read_text()


def test_a_unit_of_records_is_written_through_the_sink_and_counted(tmp_path: Path) -> None:
    """``audit_unit`` on the real file sink: the records in order, the sequence gauge at the
    last one, and a refusal counted once, with nothing of the unit after it written."""
    import jwt

    settings: Any = types.SimpleNamespace(api_concurrency=2, environment="test")
    none: Any = None
    sink = FileSink(tmp_path / "audit.jsonl")
    metrics = Metrics()
    ctx = Context(settings, none, none, sink, none, none, metrics)
    subject = {"kind": "ExecutionGrant", "name": "g"}
    token = jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256")

    async def both() -> tuple[list[Any], list[Any]]:
        written = await ctx.audit_unit([("TokenMinted", subject, {"n": 1}),
                                        ("GrantAuthorized", subject, {"n": 2})])
        refused = await ctx.audit_unit([("TokenMinted", subject, {"t": token}),
                                        ("GrantAuthorized", subject, {"n": 3})])
        return written, refused
    try:
        written, refused = asyncio.run(both())
    finally:
        sink.close()
    assert [(r.event, r.seq) for r in written] == [("TokenMinted", 0), ("GrantAuthorized", 1)]
    assert all(isinstance(r, AuditUnavailable) for r in refused)
    assert metrics.audit_sequence._value.get() == 1
    assert metrics.audit_errors.labels(component="operator")._value.get() == 1
    # each unit's wait once, each write with its records (the refused unit wrote none)
    assert _histogram(metrics.audit_wait)[0] == 2
    groups, _, sizes = _histogram(metrics.audit_group)
    assert groups == 2 and sizes[2.0] == 2
    assert [r.event for r in FileSink(tmp_path / "audit.jsonl").records()] == \
        ["TokenMinted", "GrantAuthorized"]


class Reads(Kube):
    """The API server's answers to the re-sync's reads of one grant, in turn. A ``Kube``
    (what the context holds) that never calls the base ``__init__``: there is no API server,
    and any other call fails loudly on its missing client."""

    def __init__(self, *versions: str) -> None:
        self.versions = list(versions)
        self.reads = 0

    def get_or_none(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        version = self.versions.pop(0)
        phase = "Succeeded" if version == "4" else "Pending"  # what the store went back to
        return {"metadata": {"name": name, "namespace": namespace, "uid": "u1",
                             "resourceVersion": version},
                "spec": {"approvalRef": {"name": "req"}},
                "status": {"phase": phase, "completionTime": "2026-12-07T10:00:00Z"}}


def seen(ctx: Context, version: str) -> None:
    """The tracker has seen the grant ``u1`` at ``version`` (a watch event, a write's answer)."""
    ctx.tracker.observe_grant({"metadata": {"name": "g1", "namespace": "ns", "uid": "u1",
                                            "resourceVersion": version},
                               "spec": {"approvalRef": {"name": "req"}}, "status": {}},
                              dt.datetime.now(dt.UTC))


def cancel_retries(ctx: Context) -> bool:
    return bool(taken_retries(ctx))


async def resyncs(ctx: Context, seen_at: str, times: int) -> list[bool]:
    """The grant seen at ``seen_at``, then re-synced ``times`` times: whether each scheduled
    a read again."""
    seen(ctx, seen_at)
    scheduled = []
    for _ in range(times):
        await ctx.resync("grant", "ns", "g1", "u1")
        scheduled.append(cancel_retries(ctx))
    return scheduled


def test_a_copy_older_than_one_seen_is_read_again_instead_of_reconciled() -> None:
    """A re-list's copy made before the operator's own write, run after the write's answer:
    acted on, it would repeat what the write recorded. It is not reconciled; a fresh read is."""
    ctx, reconciler = context(1)
    stale = {"metadata": {"name": "g1", "namespace": "ns", "uid": "u1", "resourceVersion": "9"}}

    async def once() -> tuple[bool, list[str]]:
        seen(ctx, "10")
        await ctx.run("grant", stale)
        scheduled = cancel_retries(ctx)
        done = list(reconciler.done)
        await ctx.run("grant", {**stale, "metadata": {**stale["metadata"],
                                                      "resourceVersion": "10"}})
        return scheduled, done
    scheduled, done = asyncio.run(once())
    assert scheduled and done == [], "the stale copy is read again, not reconciled"
    assert reconciler.done == ["g1"], "the copy as new as the one seen is reconciled"


def test_a_fresh_read_older_than_a_copy_seen_is_read_again_then_trusted() -> None:
    """A re-sync's read answered before a write this process saw answered is read again; a
    store that went back (etcd restored without a revision bump) answers older reads every
    time, and after a few the operator goes on from the API server's copy, not forever deaf."""
    ctx, reconciler = context(1)
    reads = Reads("9", "11")
    ctx.kube = reads

    async def race() -> bool:
        seen(ctx, "10")
        await ctx.resync("grant", "ns", "g1", "u1")  # read "9": read again
        again = cancel_retries(ctx) and reconciler.done == []
        await ctx.resync("grant", "ns", "g1", "u1")  # read "11": reconciled
        return again
    assert asyncio.run(race()) and reconciler.done == ["g1"] and reads.reads == 2
    assert ctx.metrics.registry.get_sample_value(
        "wingman_stale_copies_total", {"resource": "executiongrants", "outcome": "reread"}) == 1
    entry = ctx.tracker.grants["u1"]
    assert (entry.newest, entry.behind) == ("11", 0), "the read acted on is the newest seen"
    stale = {"metadata": {"name": "g1", "namespace": "ns", "uid": "u1", "resourceVersion": "10"}}

    async def relisted() -> bool:  # a re-list's copy from before that read, delivered after
        await ctx.run("grant", stale)
        return cancel_retries(ctx)
    assert asyncio.run(relisted()) and reconciler.done == ["g1"], "not acted on"

    ctx, reconciler = context(1)
    went_back = Reads(*["4"] * STALE_READS)
    ctx.kube = went_back

    assert asyncio.run(resyncs(ctx, "10", STALE_READS)) == [True] * (STALE_READS - 1) + [False]
    assert reconciler.done == ["g1"], "trusted after STALE_READS reads"
    assert ctx.metrics.registry.get_sample_value(
        "wingman_stale_copies_total", {"resource": "executiongrants", "outcome": "trusted"}) == 1
    entry = ctx.tracker.grants["u1"]
    assert (entry.newest, entry.behind) == ("4", 0)
    # the tracker follows the store as it now is, not the versions it lost
    assert entry.phase == "Succeeded" and entry.final_at is not None


def test_separate_races_do_not_add_up_to_trusting_an_older_read() -> None:
    """Each time a copy is acted on, the count of older reads starts again: two races with a
    write, months apart, are not the store going back."""
    ctx, reconciler = context(1)
    ctx.kube = Reads("9", "19", "29")

    async def races() -> list[bool]:
        scheduled = []
        for seen_at, acted in (("10", "10"), ("20", "20"), ("30", "30")):
            seen(ctx, seen_at)
            await ctx.resync("grant", "ns", "g1", "u1")  # older than the copy seen: again
            scheduled.append(cancel_retries(ctx))
            await ctx.run("grant", {"metadata": {"name": "g1", "namespace": "ns", "uid": "u1",
                                                 "resourceVersion": acted}})
        return scheduled
    assert asyncio.run(races()) == [True, True, True]
    assert reconciler.done == ["g1"] * 3
    assert ctx.tracker.grants["u1"].newest == "30", "never trusted: no read in a row"


class Overtaken(Reads):
    """Reads each answered after a newer copy of the grant arrived while it was on its way (a
    write's answer, or a watch event, that came first)."""

    def __init__(self, ctx: Context, *versions: str) -> None:
        super().__init__(*versions)
        self.ctx = ctx

    def get_or_none(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        body = super().get_or_none(res, namespace, name)
        seen(self.ctx, str(int(body["metadata"]["resourceVersion"]) + 1))
        return body


def test_reads_overtaken_by_a_newer_copy_never_add_up_to_trusting_an_older_read() -> None:
    """However many reads in a row are older than a copy that arrived while each was on its
    way, the store did not go back (a read sees every copy seen before it was sent): each is
    read again, none is trusted, nothing older is acted on."""
    ctx, reconciler = context(1)
    reads = 2 * STALE_READS - 1
    ctx.kube = Overtaken(ctx, *[str(10 + 2 * i) for i in range(reads)])

    assert asyncio.run(resyncs(ctx, "9", reads)) == [True] * reads
    assert reconciler.done == [], "no older copy acted on"
    entry = ctx.tracker.grants["u1"]
    assert entry.behind == 0 and entry.newest == str(10 + 2 * (reads - 1) + 1)
    assert ctx.metrics.registry.get_sample_value(
        "wingman_stale_copies_total", {"resource": "executiongrants", "outcome": "trusted"}) \
        is None


class Holding(Counting):
    """Holds the object's turn on its first reconcile until ``free`` is set (a panel that
    takes its time), and notes the version of every copy it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.free = asyncio.Event()
        self.versions: list[str] = []

    async def reconcile(self, ctx: Context, body: dict[str, Any]) -> None:
        self.versions.append(body["metadata"]["resourceVersion"])
        if len(self.versions) == 1:
            await self.free.wait()


def test_a_copy_queued_behind_the_object_s_turn_is_not_acted_on_after_a_newer_read() -> None:
    """A re-list's copy waits for the object's turn while a reconcile holds it; meanwhile a
    re-sync reads a newer version (a write whose answer was lost landed). When the turn is
    free the queued copy is older than a copy in hand: read again, not acted on."""
    ctx, _ = context(1)
    holding = Holding()
    ctx.reconcilers["grant"] = holding
    ctx.kube = Reads("12")

    def copy(version: str) -> dict[str, Any]:
        return {"metadata": {"name": "g1", "namespace": "ns", "uid": "u1",
                             "resourceVersion": version}}

    async def scenario() -> None:
        seen(ctx, "10")
        first = asyncio.ensure_future(ctx.run("grant", copy("10")))
        await asyncio.sleep(0.05)  # the first holds the turn
        queued = asyncio.ensure_future(ctx.run("grant", copy("10")))
        await asyncio.sleep(0.05)
        resync = asyncio.ensure_future(ctx.resync("grant", "ns", "g1", "u1"))
        await asyncio.sleep(0.2)  # its read is answered; it waits for the turn as well
        holding.free.set()
        await asyncio.gather(first, queued, resync)
        cancel_retries(ctx)
    asyncio.run(scenario())
    assert holding.versions == ["10", "12"], holding.versions


def test_a_stale_copy_during_an_outage_keeps_the_object_s_back_off() -> None:
    """A stale copy is read again at once, but not faster than the object's back-off while
    its calls fail (the retry it replaced was waiting that long): a re-list after an outage
    does not turn the quiet retries into a read per event."""
    ctx, reconciler = context(1)
    stale = {"metadata": {"name": "g1", "namespace": "ns", "uid": "u1", "resourceVersion": "9"}}

    async def delay_of_reread() -> float:
        seen(ctx, "10")
        await ctx.run("grant", stale)
        (handle,) = ctx._retries.values()
        left = handle.when() - asyncio.get_running_loop().time()
        taken_retries(ctx)
        return left
    assert asyncio.run(delay_of_reread()) < 0.05, "no failure: at once"
    ctx._attempts["grant/u1"] = 2  # two transient failures in a row
    assert asyncio.run(delay_of_reread()) >= 0.8 * TRANSIENT_DELAYS[1]
    assert reconciler.done == []


class Blocking(Counting):
    """Holds its turn for every object but ``g1`` until ``free`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.free = asyncio.Event()

    async def reconcile(self, ctx: Context, body: dict[str, Any]) -> None:
        if body["metadata"]["name"] != "g1":
            await self.free.wait()
        self.done.append(body["metadata"]["name"])


def test_a_copy_that_waited_for_a_turn_while_its_object_changed_is_read_again() -> None:
    """Every turn is taken by other objects; meanwhile a write the operator made elsewhere (a
    grant's claim on its request) moved the waiting object on. Its copy is checked once it
    has its turn, not before: read again, not acted on."""
    ctx, _ = context(1)
    blocking = Blocking()
    ctx.reconcilers["grant"] = blocking

    async def scenario() -> set[str]:
        seen(ctx, "10")
        others = [asyncio.ensure_future(ctx.run("grant", body(i)))
                  for i in range(2, 2 + RUNNING_PER_THREAD)]
        await asyncio.sleep(0.05)  # every turn taken
        waiting = asyncio.ensure_future(ctx.run("grant", {"metadata": {
            "name": "g1", "namespace": "ns", "uid": "u1", "resourceVersion": "10"}}))
        await asyncio.sleep(0.05)
        seen(ctx, "11")  # the write's answer, while the copy waits for a turn
        blocking.free.set()
        await asyncio.gather(*others, waiting)
        return taken_retries(ctx)
    assert asyncio.run(scenario()) == {"grant/u1"}
    assert "g1" not in blocking.done

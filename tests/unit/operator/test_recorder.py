"""Group commit of the operator's appends: appends that arrive together are written together,
every caller still gets its own durable record (or its own refusal), in the order asked."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest

from wingman.audit import AuditRecord, FileSink, NewRecord, verify
from wingman.errors import AuditUnavailable
from wingman.operator import recorder as recorder_module
from wingman.operator.recorder import Recorder

SUBJECT = {"kind": "ApprovalRequest", "namespace": "ns", "name": "r", "uid": "u"}


class CountingSink(FileSink):
    """The real file sink, noting the size of every group it was handed."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.groups: list[int] = []

    def append_all(self, entries: Sequence[NewRecord]) -> list[AuditRecord | AuditUnavailable]:
        self.groups.append(len(entries))
        return super().append_all(entries)


@contextmanager
def recording(sink: FileSink) -> Iterator[Recorder]:
    """A recorder on ``sink`` with a pool of its own; both are closed afterwards."""
    pool = ThreadPoolExecutor(4)

    async def run(fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)
    try:
        yield Recorder(sink, run)
    finally:
        pool.shutdown()
        sink.close()


def entry(i: int, **data: Any) -> NewRecord:
    return NewRecord("Step", "operator", SUBJECT, {"i": i, **data})


def test_a_burst_of_appends_is_written_in_a_few_groups_in_the_order_asked(
        tmp_path: Path) -> None:
    sink = CountingSink(tmp_path / "audit.jsonl")

    async def burst() -> list[AuditRecord]:
        return list(await asyncio.gather(*(rec.append(entry(i)) for i in range(300))))
    with recording(sink) as rec:
        records = asyncio.run(burst())
    assert [r.data["i"] for r in records] == list(range(300))
    assert [r.seq for r in records] == list(range(300))
    assert sum(sink.groups) == 300
    # the first append goes alone; the rest queue behind it and go together (at most
    # MAX_GROUP at a time)
    assert len(sink.groups) <= 4 and max(sink.groups) <= recorder_module.MAX_GROUP
    assert verify(str(tmp_path / "audit.jsonl"), expected_head=records[-1].hash).ok


def test_a_refused_record_fails_its_own_caller_only(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "audit.jsonl")
    token = jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256")

    async def three() -> list[Any]:
        return list(await asyncio.gather(rec.append(entry(0)), rec.append(entry(1, t=token)),
                                         rec.append(entry(2)), return_exceptions=True))
    with recording(sink) as rec:
        first, refused, last = asyncio.run(three())
    assert isinstance(refused, AuditUnavailable) and refused.reason == "AuditRecordRejected"
    assert isinstance(first, AuditRecord) and isinstance(last, AuditRecord)
    assert last.prev == first.hash
    assert token not in (tmp_path / "audit.jsonl").read_text()


def test_a_sink_failure_fails_every_caller_of_the_group_each_with_its_own_error(
        tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "audit.jsonl")
    sink.close()  # every append now fails: nothing may proceed

    async def five() -> list[Any]:
        return list(await asyncio.gather(*(rec.append(entry(i)) for i in range(5)),
                                         return_exceptions=True))
    with recording(sink) as rec:
        errors = asyncio.run(five())
    assert all(isinstance(e, AuditUnavailable) and "closed" in str(e) for e in errors)
    assert len({id(e) for e in errors}) == 5
    assert (tmp_path / "audit.jsonl").read_bytes() == b""


def test_the_recorder_goes_on_in_a_new_event_loop(tmp_path: Path) -> None:
    """A context outlives an event loop (a restart in the same process)."""
    sink = FileSink(tmp_path / "audit.jsonl")
    with recording(sink) as rec:
        first = asyncio.run(rec.append(entry(0)))
        second = asyncio.run(rec.append(entry(1)))
    assert (first.seq, second.seq, second.prev) == (0, 1, first.hash)


def test_a_caller_cancelled_while_its_group_is_written_does_not_stop_the_others(
        tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "audit.jsonl")

    async def scenario() -> list[Any]:
        tasks = [asyncio.ensure_future(rec.append(entry(i))) for i in range(4)]
        await asyncio.sleep(0)
        tasks[1].cancel()
        return list(await asyncio.gather(*tasks, return_exceptions=True))
    with recording(sink) as rec:
        results = asyncio.run(scenario())
    assert isinstance(results[1], asyncio.CancelledError)
    assert all(isinstance(r, AuditRecord) for i, r in enumerate(results) if i != 1)
    assert verify(str(tmp_path / "audit.jsonl")).ok


@pytest.mark.parametrize("size", [1, 2])
def test_groups_never_exceed_max_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       size: int) -> None:
    monkeypatch.setattr(recorder_module, "MAX_GROUP", size)
    sink = CountingSink(tmp_path / "audit.jsonl")

    async def burst() -> list[AuditRecord]:
        return list(await asyncio.gather(*(rec.append(entry(i)) for i in range(7))))
    with recording(sink) as rec:
        records = asyncio.run(burst())
    assert [r.seq for r in records] == list(range(7))
    assert max(sink.groups) == size and sum(sink.groups) == 7


def test_large_records_are_written_in_groups_of_about_max_group_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "MAX_GROUP_BYTES", 10_000)
    sink = CountingSink(tmp_path / "audit.jsonl")

    async def burst() -> list[AuditRecord]:
        # 4 KB each: two fit in a group; one larger than the cap still goes, alone
        sizes = [4000] * 6 + [20_000] + [4000] * 2
        return list(await asyncio.gather(*(rec.append(entry(i, pad="x" * size))
                                           for i, size in enumerate(sizes))))
    with recording(sink) as rec:
        records = asyncio.run(burst())
    assert [r.seq for r in records] == list(range(9))
    assert sum(sink.groups) == 9 and max(sink.groups) == 2
    assert 1 in sink.groups[1:]  # the 20 KB record
    assert verify(str(tmp_path / "audit.jsonl"), expected_head=records[-1].hash).ok


class MiscountingSink(FileSink):
    """A sink that breaks its contract: one result fewer than the entries it was given."""

    def append_all(self, entries: Sequence[NewRecord]) -> list[AuditRecord | AuditUnavailable]:
        return super().append_all(entries)[:-1]


def test_no_caller_waits_forever_when_the_sink_answers_wrongly(tmp_path: Path) -> None:
    sink = MiscountingSink(tmp_path / "audit.jsonl")

    async def three() -> list[Any]:
        return list(await asyncio.wait_for(asyncio.gather(
            *(rec.append(entry(i)) for i in range(3)), return_exceptions=True), 10))
    with recording(sink) as rec:
        results = asyncio.run(three())
    assert all(isinstance(r, AuditUnavailable) and "confirmed durable" in str(r)
               for r in results)


def test_callers_waiting_when_the_operator_stops_get_audit_unavailable(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "audit.jsonl")

    async def scenario(rec: Recorder, started: threading.Event,
                       release: threading.Event) -> list[Any]:
        callers = [asyncio.ensure_future(rec.append(entry(i))) for i in range(3)]
        while not started.is_set():
            await asyncio.sleep(0.01)
        later = asyncio.ensure_future(rec.append(entry(3)))  # queued behind the group
        await asyncio.sleep(0.01)
        assert rec._writer is not None
        rec._writer.cancel()
        results = await asyncio.gather(*callers, later, return_exceptions=True)
        release.set()
        return list(results)
    try:
        with held_recording(sink) as held:
            results = asyncio.run(scenario(*held))
    finally:
        sink.close()
    assert all(isinstance(r, AuditUnavailable) and "stopping" in str(r) for r in results)


class BrokenSink(FileSink):
    """A sink with a bug: it answers nothing at all (once)."""

    broken = True

    def append_all(self, entries: Sequence[NewRecord]) -> Any:
        if self.broken:
            self.broken = False
            time.sleep(0.2)  # more callers queue meanwhile
            return None
        return super().append_all(entries)


def test_a_writer_that_fails_unexpectedly_fails_everyone_waiting_and_the_next_append_works(
        tmp_path: Path) -> None:
    sink = BrokenSink(tmp_path / "audit.jsonl")

    async def scenario() -> tuple[list[Any], AuditRecord]:
        first = asyncio.ensure_future(rec.append(entry(0)))
        await asyncio.sleep(0.05)  # the first group is being written
        queued = [asyncio.ensure_future(rec.append(entry(i))) for i in (1, 2)]
        failed = await asyncio.wait_for(
            asyncio.gather(first, *queued, return_exceptions=True), 10)
        return list(failed), await rec.append(entry(3))
    with recording(sink) as rec:
        failed, later = asyncio.run(scenario())
    assert all(isinstance(r, AuditUnavailable) and "writer failed" in str(r) for r in failed)
    assert later.seq == 0 and later.data["i"] == 3


# --------------------------------------------------------------------------- units


def test_a_unit_is_written_in_one_group_in_order_with_one_wait(tmp_path: Path) -> None:
    """A reconcile's records for consecutive steps: one write for all of them, even behind a
    queue that fills a whole group (a unit is never split between two writes)."""
    sink = CountingSink(tmp_path / "audit.jsonl")

    async def queued_then_unit() -> tuple[list[Any], list[Any]]:
        # queued before the writer runs: the unit starts at the group's last place
        others = [asyncio.ensure_future(rec.append(entry(i)))
                  for i in range(recorder_module.MAX_GROUP - 1)]
        unit = asyncio.ensure_future(rec.append_unit([entry(1000), entry(1001), entry(1002)]))
        return list(await asyncio.gather(*others)), await unit

    with recording(sink) as rec:
        others, unit = asyncio.run(queued_then_unit())
    assert [r.data["i"] for r in unit] == [1000, 1001, 1002]
    assert [r.seq for r in unit] == [recorder_module.MAX_GROUP - 1 + i for i in range(3)]
    assert [r.seq for r in others] == list(range(recorder_module.MAX_GROUP - 1))
    assert sink.groups == [recorder_module.MAX_GROUP + 2]  # the unit's rest went with its start
    assert verify(str(tmp_path / "audit.jsonl"), expected_head=unit[-1].hash).ok


def test_nothing_of_a_unit_after_a_refused_record_is_written(tmp_path: Path) -> None:
    """As if its caller had appended the records one by one and stopped at the refusal; an
    append of another caller in the same group is not affected."""
    sink = FileSink(tmp_path / "audit.jsonl")
    token = jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256")

    async def both() -> tuple[list[Any], Any]:
        unit = asyncio.ensure_future(rec.append_unit([entry(0), entry(1, t=token), entry(2)]))
        other = asyncio.ensure_future(rec.append(entry(3)))
        return await unit, await other

    with recording(sink) as rec:
        unit, other = asyncio.run(both())
    assert isinstance(unit[0], AuditRecord) and unit[0].data["i"] == 0
    assert isinstance(unit[1], AuditUnavailable) and "data.t" in unit[1].message
    assert isinstance(unit[2], AuditUnavailable)
    assert "the record before it in its unit" in unit[2].message
    assert isinstance(other, AuditRecord) and other.seq == 1
    written = [r.data["i"] for r in FileSink(tmp_path / "audit.jsonl").records()]
    assert written == [0, 3]


def test_a_single_append_never_follows_another_caller_s_record(tmp_path: Path) -> None:
    """``follows`` belongs to units: one append marked so is written on its own merit."""
    import dataclasses

    sink = FileSink(tmp_path / "audit.jsonl")
    token = jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256")

    async def two() -> list[Any]:
        return list(await asyncio.gather(
            rec.append(entry(0, t=token)),
            rec.append(dataclasses.replace(entry(1), follows=True)), return_exceptions=True))

    with recording(sink) as rec:
        refused, written = asyncio.run(two())
    assert isinstance(refused, AuditUnavailable) and isinstance(written, AuditRecord)


def test_a_unit_cut_by_the_byte_limit_still_goes_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The byte limit closes a group inside a unit: the rest of the unit goes with it."""
    monkeypatch.setattr(recorder_module, "MAX_GROUP_BYTES", 200)
    sink = CountingSink(tmp_path / "audit.jsonl")

    async def queued() -> tuple[Any, list[Any]]:
        first = asyncio.ensure_future(rec.append(entry(0)))
        unit = asyncio.ensure_future(rec.append_unit([entry(1), entry(2, pad="y" * 150)]))
        return await first, await unit

    with recording(sink) as rec:
        first, unit = asyncio.run(queued())
    assert [r.seq for r in (first, *unit)] == [0, 1, 2]
    # by bytes the group would end after the unit's first record (its second goes past the
    # limit); it takes the whole unit instead
    assert sink.groups == [3]


def test_a_unit_s_first_record_never_follows_another_caller_s(tmp_path: Path) -> None:
    """A unit starts on its own merit, whatever its first entry says."""
    import dataclasses

    sink = FileSink(tmp_path / "audit.jsonl")
    token = jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256")

    async def two() -> tuple[Any, list[Any]]:
        refused = asyncio.ensure_future(rec.append(entry(0, t=token)))
        unit = asyncio.ensure_future(rec.append_unit(
            [dataclasses.replace(entry(1), follows=True), entry(2)]))
        return (await asyncio.gather(refused, return_exceptions=True))[0], await unit

    with recording(sink) as rec:
        refused, unit = asyncio.run(two())
    assert isinstance(refused, AuditUnavailable)
    assert [r.data["i"] for r in unit if isinstance(r, AuditRecord)] == [1, 2]


def test_every_write_is_told_to_the_observer_with_its_records_and_time(tmp_path: Path) -> None:
    """The operator's audit metrics (records per write, time of a write) come from this: each
    group the sink wrote, once, the sizes adding up to every record."""
    sink = CountingSink(tmp_path / "audit.jsonl")
    told: list[tuple[int, float]] = []
    pool = ThreadPoolExecutor(1)

    async def run(fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    async def burst() -> None:
        rec = Recorder(sink, run, lambda records, seconds: told.append((records, seconds)))
        await asyncio.gather(*(rec.append(entry(i)) for i in range(100)),
                             rec.append_unit([entry(100), entry(101)]))
    try:
        asyncio.run(burst())
    finally:
        pool.shutdown()
        sink.close()
    assert [records for records, _ in told] == sink.groups
    assert sum(sink.groups) == 102
    assert all(seconds > 0 for _, seconds in told)


def test_an_observer_that_fails_never_fails_a_durable_write(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "audit.jsonl")
    pool = ThreadPoolExecutor(1)

    async def run(fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    def broken(records: int, seconds: float) -> None:
        raise RuntimeError("metrics are down")

    async def one() -> AuditRecord:
        return await Recorder(sink, run, broken).append(entry(0))
    try:
        record = asyncio.run(one())
    finally:
        pool.shutdown()
        sink.close()
    assert record.seq == 0


@contextmanager
def held_recording(sink: FileSink) -> Iterator[tuple[Recorder, threading.Event,
                                                    threading.Event]]:
    """A recorder whose writes wait for ``release`` (``started`` once one does)."""
    started, release = threading.Event(), threading.Event()
    pool = ThreadPoolExecutor(1)

    async def slow(fn: Any) -> Any:
        def held() -> Any:
            started.set()
            release.wait(10)
            return fn()
        return await asyncio.get_running_loop().run_in_executor(pool, held)
    try:
        yield Recorder(sink, slow), started, release
    finally:
        release.set()
        pool.shutdown()
        sink.close()


async def _until(started: threading.Event) -> None:
    while not started.is_set():
        await asyncio.sleep(0.01)


def test_a_unit_whose_caller_was_cancelled_while_queued_is_not_written(tmp_path: Path) -> None:
    """A reconcile cancelled while its unit waits behind another write: nothing of the unit
    is written, so its retry records each step once (not twice), and the chain goes on."""
    path = tmp_path / "audit.jsonl"

    async def scenario() -> tuple[Any, ...]:
        first = asyncio.ensure_future(rec.append(entry(0)))
        await _until(started)  # the first group is at the sink
        cancelled = asyncio.ensure_future(rec.append_unit([entry(1), entry(2)]))
        single = asyncio.ensure_future(rec.append(entry(3)))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        release.set()
        done = await asyncio.gather(first, cancelled, single, return_exceptions=True)
        retried = await rec.append_unit([entry(1), entry(2)])  # the reconcile's retry
        return (*done, retried)
    with held_recording(FileSink(path)) as (rec, started, release):
        first, cancelled, single, retried = asyncio.run(scenario())
    assert isinstance(cancelled, asyncio.CancelledError)
    assert isinstance(first, AuditRecord) and isinstance(single, AuditRecord)
    assert [r.data["i"] for r in retried] == [1, 2]
    lines = path.read_text().splitlines()

    assert [json.loads(line)["data"]["i"] for line in lines] == [0, 3, 1, 2]
    assert verify(str(path)).ok


def test_a_unit_whose_caller_was_cancelled_while_it_is_written_is_recorded_at_least_once(
        tmp_path: Path) -> None:
    """A reconcile cancelled once its unit is at the sink: the write is not recalled, so the
    records land (never missing) and the retry records the steps again (documented: at least
    once); both copies are valid records of the chain."""
    path = tmp_path / "audit.jsonl"

    async def scenario() -> list[AuditRecord | AuditUnavailable]:
        cancelled = asyncio.ensure_future(rec.append_unit([entry(1), entry(2)]))
        await _until(started)
        cancelled.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return await rec.append_unit([entry(1), entry(2)])
    with held_recording(FileSink(path)) as (rec, started, release):
        retried = asyncio.run(scenario())
    assert [r.seq for r in retried if isinstance(r, AuditRecord)] == [2, 3]

    assert [json.loads(line)["data"]["i"] for line in path.read_text().splitlines()] == \
        [1, 2, 1, 2]
    assert verify(str(path)).ok

"""The operator's audit appends, written together (group commit).

In a burst many reconciles append at once: each transition of a request, a grant's claim,
its token, its authorization. One at a time, every append is a trip to the thread pool, the
sink's lock, a read of the chain's head and an fsync (a transaction in PostgreSQL), and the
appends queue behind each other. Here an append is queued, and one writer takes everything
queued so far (at most ``MAX_GROUP`` records and about ``MAX_GROUP_BYTES``) and hands it to
``AuditSink.append_all``: one head read, one write and one fsync
for the lot (``tests/bench/bench_audit.py``, 64 appenders: about 5x the rate with the file
sink, 9x with PostgreSQL).

Nothing about durability changes: every caller returns only once its own record is durable,
records keep the order they were asked for in (a caller awaits each of its appends, so its own
records stay in its order), a record the sink refuses (``AuditRecordRejected``) fails only its
caller. A caller with several records for consecutive steps (a request's transitions in one
reconcile, a grant's token and its authorization) appends them as a unit (``append_unit``):
one wait for all of them instead of one each, in order, in one write, and nothing of the unit
after a refused record is written (``NewRecord.follows``), as if it had appended them one by
one and stopped there. A failure of the sink fails every caller of that group (the sink
removes what it wrote of the group, or refuses every further append if it cannot). A caller
cancelled while its records wait in the queue has none of them written (its retry records
them once); one cancelled once its group was handed to the sink may still have them written,
as with any append that reached the sink (its retry records them again); when the writer
itself stops (the operator shuts down) or fails unexpectedly, every caller still waiting
gets ``AuditUnavailable``: no caller waits forever, and none proceeds without its record.

Imports ``wingman.audit`` and ``wingman.errors`` only; the caller passes how to run the blocking
append (the operator: on a thread of its own, ``Context.audit_executor``, never behind the API
calls of a burst) and, optionally, what to tell of each write (the operator's metrics).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from wingman.audit import AuditRecord, AuditSink, NewRecord
from wingman.errors import AuditUnavailable

log = logging.getLogger("wingman.operator.recorder")

#: The most records one write carries (a burst larger than this takes several writes), but
#: for the rest of a unit (``append_unit``) that starts within it.
MAX_GROUP = 256
#: About the most bytes one write carries: a group is closed once its records' content
#: reaches this (a single larger record still goes, alone), so a group of large records never
#: holds the sink's lock, which the gateway's appends also wait for, for one huge write.
MAX_GROUP_BYTES = 1024 * 1024

Results = list[AuditRecord | AuditUnavailable]


class Recorder:
    """Group commit of appends to ``sink`` (start none of it: the first ``append`` does)."""

    def __init__(self, sink: AuditSink,
                 run: Callable[[Callable[[], Results]], Awaitable[Results]],
                 observe: Callable[[int, float], None] | None = None) -> None:
        self.sink = sink  # serialises its appends itself (its own lock, then flock or SQL)
        self._run = run  # runs the blocking append off the event loop
        self._observe = observe  # told of each write the sink answered: (records, seconds)
        self._queue: list[tuple[NewRecord, asyncio.Future[AuditRecord]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def append(self, entry: NewRecord) -> AuditRecord:
        """Append ``entry`` durably (with whatever else is queued); ``AuditUnavailable`` if it
        was refused or the sink failed."""
        (done,) = self._queue_unit([entry])  # a unit of one: it follows no other caller's
        return await done

    async def append_unit(self, entries: Sequence[NewRecord]) -> Results:
        """Append ``entries``, a caller's consecutive records, durably with one wait instead of
        one each: in order, in the same write (a unit is never split between groups, so a group
        may exceed ``MAX_GROUP`` or ``MAX_GROUP_BYTES`` by the rest of a unit), each after the
        first marked ``follows`` (the first never: it does not follow another caller's record)
        so that nothing after a refused one is written. Per entry: its record or its
        ``AuditUnavailable``; the records before the first failure are durable. After a
        refusal nothing of the unit after the refused record is written; after a failure of
        the sink or of the writer (the operator stopping) any of them may have been, as with
        single appends."""
        futures = self._queue_unit(entries)
        results = await asyncio.gather(*futures, return_exceptions=True)
        out: Results = []
        for result in results:
            if isinstance(result, AuditRecord | AuditUnavailable):
                out.append(result)
            else:  # cancelled, or a bug: raised as it would be for one append
                raise result
        return out

    def _queue_unit(self, entries: Sequence[NewRecord]) -> list[asyncio.Future[AuditRecord]]:
        """Queue ``entries`` together, each after the first marked ``follows``, the first
        never; their futures, in order."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop: what the old one queued has no waiter
            self._loop, self._queue, self._writer = loop, [], None
        futures: list[asyncio.Future[AuditRecord]] = []
        for i, entry in enumerate(entries):
            if entry.follows != (i > 0):
                entry = dataclasses.replace(entry, follows=i > 0)
            done: asyncio.Future[AuditRecord] = loop.create_future()
            self._queue.append((entry, done))
            futures.append(done)
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write(), name="audit writer")
        return futures

    async def _write(self) -> None:
        while self._queue:
            self._queue = _uncancelled(self._queue)
            if not self._queue:
                break
            taken = _group_size([entry for entry, _ in self._queue[:MAX_GROUP]])
            while taken < len(self._queue) and self._queue[taken][0].follows:
                taken += 1  # the rest of a unit goes with its start
            group, self._queue = self._queue[:taken], self._queue[taken:]
            try:
                await self._write_group(group)
            except BaseException as exc:
                # the operator stops, or a bug: nobody still waiting may wait forever, and
                # nobody is told a record is durable that may not be
                stopping = isinstance(exc, asyncio.CancelledError)
                for _, done in group + self._queue:
                    _settle(done, _unknown("the operator is stopping" if stopping
                                           else "the audit writer failed"))
                self._queue = []
                if stopping or not isinstance(exc, Exception):
                    raise
                log.exception("the audit writer failed; the transitions waiting for it are "
                              "retried")
                return
            finally:
                for _, done in group:  # a sink that answered too few: they fail
                    _settle(done, _unknown("the audit writer failed"))

    async def _write_group(self, group: list[tuple[NewRecord, asyncio.Future[AuditRecord]]]
                           ) -> None:
        entries = [entry for entry, _ in group]
        start = time.monotonic()
        try:
            results = await self._run(functools.partial(self.sink.append_all, entries))
        except Exception as exc:  # noqa: BLE001 - every caller of the group gets it
            for _, done in group:
                _settle(done, exc)
            return
        if self._observe is not None:  # a write the sink answered
            try:
                self._observe(len(entries), time.monotonic() - start)
            except Exception as exc:  # noqa: BLE001 - a metric never fails a durable write
                log.debug("the audit write observer failed",
                          extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"})
        if len(results) != len(group):
            return  # a sink that broke its contract: ``_write`` fails them all
        for (_, done), result in zip(group, results, strict=True):
            _settle(done, result)


def _uncancelled(queue: list[tuple[NewRecord, asyncio.Future[AuditRecord]]]
                 ) -> list[tuple[NewRecord, asyncio.Future[AuditRecord]]]:
    """``queue`` without the units of cancelled callers: a unit not yet handed to the sink is
    not written once its caller is gone (nobody would write the status it stands for, and the
    retry would record it again). The rest of such a unit, if any was not cancelled, fails
    with nothing of it written."""
    kept: list[tuple[NewRecord, asyncio.Future[AuditRecord]]] = []
    i = 0
    while i < len(queue):
        end = i + 1
        while end < len(queue) and queue[end][0].follows:
            end += 1
        unit = queue[i:end]
        if any(done.cancelled() for _, done in unit):
            for _, done in unit:
                _settle(done, AuditUnavailable(
                    "the audit unit of this record was cancelled before it was written; "
                    "nothing of it was written"))
        else:
            kept += unit
        i = end
    return kept


def _group_size(entries: list[NewRecord]) -> int:
    """How many of ``entries`` (at least one) the next group takes: up to ``MAX_GROUP_BYTES``
    of content, measured as the sink will serialise it, roughly (pure)."""
    total = 0
    for i, entry in enumerate(entries):
        total += _content_bytes(entry)
        if total > MAX_GROUP_BYTES:
            return max(1, i)
    return len(entries)


def _content_bytes(entry: NewRecord) -> int:
    try:
        return len(json.dumps([entry.event, entry.actor, entry.subject, entry.data],
                              default=str, separators=(",", ":")))
    except Exception:  # noqa: BLE001 - any failure (a __str__ that raises): the sink judges it
        return 0


def _settle(done: asyncio.Future[AuditRecord], result: Any) -> None:
    if done.done():  # settled already, or its caller was cancelled meanwhile
        return
    if isinstance(result, BaseException):
        done.set_exception(_own(result))
    elif isinstance(result, AuditRecord):
        done.set_result(result)
    else:
        done.set_exception(_unknown(f"the audit sink returned {type(result).__name__}"))


def _unknown(why: str) -> AuditUnavailable:
    return AuditUnavailable(f"{why} before this audit record was confirmed durable; the "
                            "transition is retried (its record may be written twice)")


def _own(exc: BaseException) -> BaseException:
    """A copy of a sink failure for each caller (one exception object raised in many tasks
    would collect all their tracebacks)."""
    if isinstance(exc, AuditUnavailable):
        return AuditUnavailable(exc.message, reason=exc.reason)
    return exc


__all__ = ["MAX_GROUP", "MAX_GROUP_BYTES", "Recorder"]

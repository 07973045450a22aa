"""Kubernetes Events about requests and grants, posted in the background as ``wingman-operator``.

``Events.post`` never blocks a handler and never fails it: the Event is queued and a single
background task writes it, one at a time in the writer process (``writer``), or on the
operator's own pool of API threads without one (``source.component`` and
``reportingComponent`` ``wingman-operator``, ``reportingInstance`` the replica's identity).
When the API server is unreachable an Event is retried a few times and then dropped (counted in
``wingman_events_dropped_total``): Events are notifications, the audit trail and the status are
the record. A full queue drops the newest Event the same way, and so does any other failure
to post one (the poster itself goes on).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from wingman import conditions
from wingman.errors import ClusterError
from wingman.kube import Kube, Resource
from wingman.operator.writer import Unsendable

if TYPE_CHECKING:
    from wingman.operator.writer import Writer

log = logging.getLogger("wingman.operator.events")
EVENTS = Resource("", "v1", "events")
COMPONENT = "wingman-operator"
QUEUE_SIZE = 10000
RETRY_DELAYS = (1.0, 2.0, 4.0)
#: The longest message of a core/v1 Event the API server takes, in bytes (not characters)
MESSAGE_BYTES = 1024


def _micro(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(obj: Mapping[str, Any], type_: str, reason: str, message: str, instance: str,
               now: dt.datetime) -> dict[str, Any]:
    """The core/v1 Event about ``obj`` (pure)."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{name[:200]}.{secrets.token_hex(8)}",
                     "namespace": meta.get("namespace", "")},
        "involvedObject": {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
                           "name": name, "namespace": meta.get("namespace", ""),
                           "uid": meta.get("uid", "")},
        "type": type_, "reason": reason[:128],
        "message": conditions.fit_bytes(message, MESSAGE_BYTES),
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT, "reportingInstance": instance[:128],
        "firstTimestamp": stamp, "lastTimestamp": stamp, "eventTime": _micro(now),
        "action": reason[:128], "count": 1,
    }


class Events:
    """The background poster (start it inside the operator's event loop)."""

    def __init__(self, kube: Kube, instance: str, dropped: Any = None, *,
                 executor: Executor | None = None) -> None:
        self.kube = kube
        self.instance = instance
        self.dropped = dropped  # a prometheus Counter, or None
        #: the threads the posts run on (the operator's own pool; None: asyncio's default)
        self.executor = executor
        #: the writer process the posts run in instead (``writer``), once the operator has one
        self.writer: Writer | None = None
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(QUEUE_SIZE)
        self._task = asyncio.create_task(self._drain(), name="event poster")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        body = event_body(obj, type_, reason, message, self.instance, dt.datetime.now(dt.UTC))
        queue, loop = self._queue, self._loop
        if queue is None or loop is None:
            self._drop()
            return
        try:
            if asyncio.get_running_loop() is loop:
                self._put(body)  # a full queue drops the Event, never the caller's work
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(self._put, body)

    def _put(self, body: dict[str, Any]) -> None:
        assert self._queue is not None
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self._drop()

    def _drop(self) -> None:
        if self.dropped is not None:
            self.dropped.inc()

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            body = await self._queue.get()
            ns = body["metadata"]["namespace"]
            for delay in (*RETRY_DELAYS, None):
                try:
                    try:
                        if self.writer is None:
                            raise Unsendable("no writer process")
                        await self.writer.call("create", EVENTS, ns, body)
                    except Unsendable:  # posted here, as without a writer
                        await asyncio.get_running_loop().run_in_executor(
                            self.executor, self.kube.create, EVENTS, ns, body)
                    break
                except ClusterError as exc:
                    if delay is None or getattr(exc, "status", 0) in (400, 403, 404, 422):
                        self._drop()
                        log.warning("event not posted", extra={
                            "reason": body["reason"], "object": body["involvedObject"]["name"],
                            "error": str(exc)[:300]})
                        break
                    await asyncio.sleep(delay)
                except Exception as exc:  # noqa: BLE001 - one Event lost, never the poster
                    self._drop()
                    log.warning("event not posted", extra={
                        "reason": body["reason"], "object": body["involvedObject"]["name"],
                        "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                    break


__all__ = ["COMPONENT", "EVENTS", "Events", "event_body"]

"""Events are posted in the background: a full queue drops one and counts it, and the caller
(a handler that just made a transition) carries on."""

from __future__ import annotations

import asyncio

from kubernetes import client as k8s
from prometheus_client import CollectorRegistry, Counter

from wingman.kube import Kube
from wingman.operator import events

OBJ = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
       "metadata": {"name": "req", "namespace": "ns", "uid": "u-1"}}


def test_a_full_queue_drops_the_event_and_counts_it_instead_of_failing_the_caller() -> None:
    dropped = Counter("dropped", "events dropped", registry=CollectorRegistry())
    poster = events.Events(Kube(k8s.ApiClient()), "operator-0", dropped)

    async def run() -> int:
        poster.start()
        try:
            assert poster._queue is not None
            for _ in range(poster._queue.maxsize + 3):  # the poster gets no turn meanwhile
                poster.post(OBJ, "Normal", "Reviewed", "reviewed")
            return poster._queue.qsize()
        finally:
            await poster.stop()
    queued = asyncio.run(run())
    assert queued == events.QUEUE_SIZE
    assert dropped._value.get() == 3

"""Events are posted in the background: a full queue drops one and counts it, and the caller
(a handler that just made a transition) carries on."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

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


def test_a_post_that_fails_unexpectedly_drops_that_event_and_the_poster_goes_on() -> None:
    dropped = Counter("dropped", "events dropped", registry=CollectorRegistry())
    pool = ThreadPoolExecutor(1)
    pool.shutdown()  # every post now fails with RuntimeError, not a ClusterError
    poster = events.Events(Kube(k8s.ApiClient()), "operator-0", dropped, executor=pool)

    async def run() -> bool:
        poster.start()
        try:
            for _ in range(3):
                poster.post(OBJ, "Normal", "Reviewed", "reviewed")
            for _ in range(200):
                if dropped._value.get() == 3:
                    break
                await asyncio.sleep(0.01)
            assert poster._task is not None
            return poster._task.done()
        finally:
            await poster.stop()
    assert asyncio.run(run()) is False
    assert dropped._value.get() == 3

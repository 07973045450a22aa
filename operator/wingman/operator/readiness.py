"""Readiness: whether this operator replica can act now (the answer of ``/readyz``).

Liveness (kopf's ``/healthz``) says the process works; readiness says more: this replica has
started its handlers and is the one that acts. With peering, replicas other than the one with
the highest priority are paused by the framework; they are alive but not ready, so a
Deployment's status, ``kubectl rollout status`` and the metrics Service's endpoints show which
replica is active. The rule is the framework's own (``kopf._core.engines.peering``): a replica
acts while no other live peer in the KopfPeering object has a priority as high as its own.

``peering_active`` is pure; ``Readiness`` reads the KopfPeering object at most once per
``cache_seconds`` and answers from memory in between, so probes cost the API server little.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from wingman.model.approvals import parse_time

Verdict = tuple[bool, str]


def peering_active(status: Mapping[str, Any] | None, priority: int, now: dt.datetime
                   ) -> Verdict:
    """Whether the replica registered with ``priority`` acts, from the peering object's status
    (``{identity: {priority, lastseen, lifetime}}``), and why."""
    mine = False
    for identity, peer in (status or {}).items():
        if not isinstance(peer, Mapping):
            continue
        seen = parse_time(str(peer.get("lastseen") or ""))
        try:
            lifetime = int(peer.get("lifetime") or 60)
            peer_priority = int(peer.get("priority") or 0)
        except (TypeError, ValueError):
            continue
        if seen is None or seen + dt.timedelta(seconds=lifetime) <= now:
            continue  # dead peers pause nobody
        if peer_priority == priority and not mine:
            mine = True
            continue
        if peer_priority >= priority:
            return False, (f"standing by: peer {identity} has priority {peer_priority} "
                           f"(this replica: {priority}); it acts while it is alive")
    if not mine:
        return False, "this replica has not registered in the peering object yet"
    return True, "active: the highest-priority live replica"


class Readiness:
    """``check()``: (ready, reason). Not ready before the handlers run, after a stop was asked
    for, and, with peering, while another replica acts or the peering object cannot be read."""

    def __init__(self, *, started: threading.Event, stopping: threading.Event | None = None,
                 peering: Callable[[], Mapping[str, Any] | None] | None = None,
                 priority: int = 0, cache_seconds: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._started = started
        self._stopping = stopping
        self._peering = peering
        self._priority = priority
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Verdict] | None = None

    def check(self) -> Verdict:
        if self._stopping is not None and self._stopping.is_set():
            return False, "stopping"
        if not self._started.is_set():
            return False, "starting: the handlers are not running yet"
        if self._peering is None:
            return True, "active: standalone (no peering)"
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self._cache_seconds:
                return self._cached[1]
            try:
                obj = self._peering()
            except Exception as exc:  # noqa: BLE001 - any failure means "cannot tell": not ready
                verdict: Verdict = (False, f"cannot read the peering object: {exc}")
            else:
                if obj is None:
                    verdict = (False, "the peering object does not exist")
                else:
                    verdict = peering_active(obj.get("status"), self._priority,
                                             dt.datetime.now(dt.UTC))
            self._cached = (now, verdict)
            return verdict


__all__ = ["Readiness", "Verdict", "peering_active"]

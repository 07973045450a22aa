"""Readiness: whether this operator replica can act now (the answer of ``/readyz``).

Liveness (kopf's ``/healthz``) says the process works; readiness says more: this replica has
started its handlers and is the one that acts, i.e. it holds the leader Lease
(``wingman.operator.leader``). Replicas that stand by are alive but not ready, so a
Deployment's status, ``kubectl rollout status`` and the metrics Service's endpoints show which
replica is active. The answer comes from memory (the election thread's own view), so probes
cost the API server nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Verdict = tuple[bool, str]


class Readiness:
    """``check()``: (ready, reason). Not ready before the handlers run, after a stop was asked
    for, and, with leader election, while this replica does not hold the Lease."""

    def __init__(self, *, started: threading.Event, stopping: threading.Event | None = None,
                 leading: Callable[[], bool] | None = None, lease: str = "") -> None:
        self._started = started
        self._stopping = stopping
        self._leading = leading
        self._lease = lease

    def check(self) -> Verdict:
        if self._stopping is not None and self._stopping.is_set():
            return False, "stopping"
        if not self._started.is_set():
            return False, "starting: the handlers are not running yet"
        if self._leading is None:
            return True, "active: a single replica without leader election"
        if self._leading():
            return True, f"active: this replica holds the leader Lease {self._lease}"
        return False, (f"standing by: another replica holds the leader Lease {self._lease} "
                       "(or it could not be renewed); this one takes over when it is free")


__all__ = ["Readiness", "Verdict"]

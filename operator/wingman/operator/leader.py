"""Leader election over a coordination.k8s.io Lease: one operator replica acts at a time.

Every replica runs the same watches; only the one holding the Lease ``wingman-operator-leader``
(``settings.leader_lease``; created by the chart when ``operator.leaderElection.enabled``, so the
operator never needs the right to create Leases) reconciles.
The rules are those of client-go's leader election:

- the holder renews every ``retry`` seconds, each write guarded by the Lease's
  resourceVersion; when it has not renewed for ``renew_deadline`` seconds it stops acting
  (``leading`` turns false) until it renews again. A holder renews with one request, guarded by
  the resourceVersion its own last write left (as client-go does); only when that write is
  refused (anyone else wrote the Lease since) does it read the Lease and decide again, so a
  takeover is never missed;
- a candidate takes the Lease when it is free (released on a graceful stop) or when it has
  seen the same record, unchanged, for ``duration`` seconds by its own clock (so clock skew
  between replicas does not matter); ``renew_deadline`` < ``duration``, so the old holder has
  stopped acting before anyone else starts;
- the identity is the pod name: a container restarted in the same pod (after a crash or a
  SIGKILL) is the holder already and resumes at once;
- a renewal that hangs (etcd stalled behind a live API server) makes ``leading`` false once
  the renew deadline passes; when it completes, the replica acts again and ``on_change(True)``
  is called as after a takeover, so what arrived meanwhile is re-synced.

The defaults (10 s / 7 s / 2 s) put a takeover after a SIGKILL at about 10 to 12 s, and after a
graceful stop at one ``retry`` period. The election runs in a thread of its own, so a busy
event loop never delays a renewal.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wingman.errors import ClusterError
from wingman.kube import LEASES, ApiError, Kube

log = logging.getLogger("wingman.operator.leader")


def _micro(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Timing:
    duration: float = 10.0
    renew_deadline: float = 7.0
    retry: float = 2.0


@dataclass
class Observation:
    """The Lease record as last seen, and when (monotonic) it last changed."""

    record: tuple[str, str, str] = ("", "", "")  # holder, renewTime, resourceVersion
    changed_at: float = 0.0


def decide(lease: dict[str, Any], identity: str, seen: Observation, mono: float,
           timing: Timing) -> str:
    """What to do with this Lease now (pure): ``renew`` (ours), ``acquire`` (free or expired)
    or ``wait`` (someone else's, alive). Updates ``seen``."""
    spec = lease.get("spec") or {}
    holder = str(spec.get("holderIdentity") or "")
    record = (holder, str(spec.get("renewTime") or ""),
              str((lease.get("metadata") or {}).get("resourceVersion") or ""))
    if record != seen.record:
        seen.record, seen.changed_at = record, mono
    if holder == identity:
        return "renew"
    if not holder:
        return "acquire"
    duration = float(spec.get("leaseDurationSeconds") or timing.duration)
    return "acquire" if mono - seen.changed_at >= duration else "wait"


class LeaderElector:
    """Holds (or waits for) the Lease in a background thread; ``leading`` says whether this
    replica may act now. ``on_change(leading)`` is called from the election thread."""

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, *,
                 timing: Timing | None = None,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.kube, self.namespace, self.name, self.identity = kube, namespace, name, identity
        self.timing = timing or Timing()
        self.on_change = on_change
        self._leading = False
        self._renewed = 0.0
        self._seen = Observation()
        self._version = ""  # the Lease's resourceVersion our own last write left
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._complained = ""

    @property
    def leading(self) -> bool:
        return self._leading and time.monotonic() - self._renewed < self.timing.renew_deadline

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        """Stop campaigning; when holding the Lease, hand it back so a standby takes over at
        once (call only after this replica stopped acting)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timing.retry + 5)
        if release and self._leading:
            self._set(False)
            try:
                lease = self.kube.get(LEASES, self.namespace, self.name)
                if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                    self.kube.patch(LEASES, self.namespace, self.name, {
                        "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                        "spec": {"holderIdentity": "", "leaseDurationSeconds": 1}})
                    log.info("leader lease released", extra={"identity": self.identity})
            except ClusterError as exc:
                log.warning("could not release the leader lease; a standby takes over when "
                            "it expires", extra={"error": str(exc)})
            except Exception:  # a fault (a Lease not as expected, a bug): the release is a
                # courtesy, never the end of the shutdown that closes the audit sink after it
                log.exception("could not release the leader lease; a standby takes over when "
                              "it expires")

    # -- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
                self._complained = ""
            except ClusterError as exc:
                self._complain(exc)
            except Exception as exc:  # noqa: BLE001 - a fault (a Lease not as expected, a
                self._fault(exc)  # bug): logged, never the end of the loop
            if self._leading and time.monotonic() - self._renewed >= self.timing.renew_deadline:
                log.warning("leader lease not renewed within the renew deadline; this replica "
                            "stops acting until it holds the lease again",
                            extra={"identity": self.identity})
                self._set(False)
            self._stop.wait(self.timing.retry)

    def _fault(self, exc: Exception) -> None:
        """A tick that failed with anything but a ClusterError: its traceback, once per kind of
        fault (not every ``retry`` seconds while it lasts), as for the API server's failures."""
        text = f"{type(exc).__name__}: fault"
        if text != self._complained:
            self._complained = text
            log.exception("leader election: this tick failed; trying again (not logged again "
                          "while it fails so)", extra={"lease": self.name})

    def _complain(self, exc: ClusterError) -> None:
        text = f"{type(exc).__name__}: {exc.reason}"
        if text != self._complained:  # once per kind of failure, not once per tick
            self._complained = text
            hint = ""
            if isinstance(exc, ApiError) and exc.not_found:
                hint = ("; the chart creates this Lease (operator.leaderElection): upgrade the "
                        "release, or create the Lease by hand")
            log.warning("leader election: cannot read or write the lease" + hint,
                        extra={"lease": self.name, "error": str(exc)})

    def _tick(self) -> None:
        # The renew deadline counts from before the read: the write may be applied at once and
        # answered late, and a standby counts the Lease's duration from when it saw the write.
        # Counting from the answer would let this replica act past the moment the standby
        # takes over; counting from here it stops renew_deadline after, at the latest.
        started = time.monotonic()
        if self._leading and self._version and self._renew(started):
            return
        lease = self.kube.get(LEASES, self.namespace, self.name)
        mono = time.monotonic()
        action = decide(lease, self.identity, self._seen, mono, self.timing)
        if action == "wait":
            if self._leading:
                self._set(False)
            return
        now = dt.datetime.now(dt.UTC)
        spec: dict[str, Any] = {"holderIdentity": self.identity, "renewTime": _micro(now),
                                "leaseDurationSeconds": int(self.timing.duration)}
        if action == "acquire":
            current = lease.get("spec") or {}
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        try:
            written = self.kube.patch(LEASES, self.namespace, self.name, {
                "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": spec})
        except ApiError as exc:
            if exc.conflict:  # someone else wrote first; look again next tick
                return
            raise
        self._renewed_at(started, written)

    def _renew(self, started: float) -> bool:
        """The holder's renewal in one request, over the version its last write left; False
        when the Lease changed since (anyone's write: the caller reads it and decides)."""
        now = dt.datetime.now(dt.UTC)
        try:
            written = self.kube.patch(LEASES, self.namespace, self.name, {
                "metadata": {"resourceVersion": self._version},
                "spec": {"holderIdentity": self.identity, "renewTime": _micro(now),
                         "leaseDurationSeconds": int(self.timing.duration)}})
        except ApiError as exc:
            if exc.conflict or exc.not_found:
                self._version = ""
                return False
            raise
        self._renewed_at(started, written)
        return True

    def _renewed_at(self, started: float, written: dict[str, Any]) -> None:
        """Our write (sent at ``started``) landed: the renew deadline counts from there."""
        self._version = str((written.get("metadata") or {}).get("resourceVersion") or "")
        # leading was false meanwhile when the previous renewal is older than the deadline
        lapsed = self._leading and \
            time.monotonic() - self._renewed >= self.timing.renew_deadline
        self._renewed = started
        if not self._leading:
            log.info("leader lease acquired; this replica acts",
                     extra={"identity": self.identity, "lease": self.name})
            self._set(True)
        elif lapsed:
            # a renewal that hung past the renew deadline (etcd stalled): ``leading`` was false
            # meanwhile and what arrived then was not acted on; act as after a takeover
            log.info("leader lease renewed after a lapse; this replica acts again",
                     extra={"identity": self.identity, "lease": self.name})
            self._notify(True)

    def _set(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        self._notify(leading)

    def _notify(self, leading: bool) -> None:
        if self.on_change is not None:
            try:
                self.on_change(leading)
            except Exception:
                log.exception("leader change callback failed")


class AlwaysLeader:
    """A single replica without election (``leaderElection`` off): always acting."""

    leading = True

    def __init__(self, on_change: Callable[[bool], None] | None = None) -> None:
        self.on_change = on_change

    def start(self) -> None:
        if self.on_change is not None:
            self.on_change(True)

    def stop(self, *, release: bool = True) -> None:
        return None


__all__ = ["AlwaysLeader", "LeaderElector", "Observation", "Timing", "decide"]

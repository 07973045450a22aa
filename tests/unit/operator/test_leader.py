"""Leader election decisions (pure): renew our own Lease, take a free or expired one, wait."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, ClassVar

import pytest
from kubernetes import client as k8s

from support.localserver import QuietHandler, serving
from wingman.kube import Kube
from wingman.operator.leader import LeaderElector, Observation, Timing, decide

TIMING = Timing(duration=10, renew_deadline=7, retry=2)


def lease(holder: str = "", renew: str = "t0", rv: str = "1", duration: int = 10
          ) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": rv},
            "spec": {"holderIdentity": holder, "renewTime": renew,
                     "leaseDurationSeconds": duration}}


def test_a_free_lease_is_taken_and_our_own_is_renewed() -> None:
    assert decide(lease(""), "me", Observation(), 0.0, TIMING) == "acquire"
    assert decide(lease("me"), "me", Observation(), 0.0, TIMING) == "renew"


def test_a_live_holder_is_waited_for_while_it_renews() -> None:
    seen = Observation()
    assert decide(lease("other", "t0", "1"), "me", seen, 100.0, TIMING) == "wait"
    assert decide(lease("other", "t1", "2"), "me", seen, 108.0, TIMING) == "wait"
    assert decide(lease("other", "t2", "3"), "me", seen, 116.0, TIMING) == "wait"


def test_a_silent_holder_is_replaced_after_the_lease_duration_by_our_own_clock() -> None:
    seen = Observation()
    assert decide(lease("dead", "t0", "1"), "me", seen, 100.0, TIMING) == "wait"
    assert decide(lease("dead", "t0", "1"), "me", seen, 109.9, TIMING) == "wait"
    assert decide(lease("dead", "t0", "1"), "me", seen, 110.0, TIMING) == "acquire"


def test_the_duration_written_on_the_lease_wins() -> None:
    seen = Observation()
    decide(lease("dead", duration=30), "me", seen, 0.0, TIMING)
    assert decide(lease("dead", duration=30), "me", seen, 20.0, TIMING) == "wait"
    assert decide(lease("dead", duration=30), "me", seen, 30.0, TIMING) == "acquire"


class _BrokenLease(QuietHandler):
    """An API server whose Lease has no resourceVersion (a fault the election cannot write
    past), counting the reads."""

    reads: ClassVar[list[str]] = []
    read_twice: ClassVar[threading.Event] = threading.Event()
    read_thrice: ClassVar[threading.Event] = threading.Event()

    def do_GET(self) -> None:
        type(self).reads.append(self.path)
        if len(type(self).reads) >= 2:
            type(self).read_twice.set()
        if len(type(self).reads) >= 3:
            type(self).read_thrice.set()
        self.send_json(200, {"kind": "Lease", "metadata": {"name": "l"}, "spec": {}})


def test_a_tick_that_fails_with_anything_but_a_cluster_error_does_not_end_the_election(
        caplog: pytest.LogCaptureFixture) -> None:
    """A failure of a tick that is not the API server's (here a Lease without a
    resourceVersion: a KeyError; a fault of the client is raised as it is, no more reported
    as an unreachable API server) is logged and the election goes on: the thread that ends
    would leave this replica campaigning never again. Its traceback is logged once, not
    again at every tick while the same fault lasts."""
    _BrokenLease.reads = []
    _BrokenLease.read_twice.clear()
    _BrokenLease.read_thrice.clear()
    with serving(_BrokenLease) as url:
        kube = Kube(k8s.ApiClient(k8s.Configuration(host=url)))
        elector = LeaderElector(kube, "ns", "l", "me", timing=Timing(retry=0.05))
        try:
            with caplog.at_level(logging.ERROR, "wingman.operator.leader"):
                elector.start()
                assert _BrokenLease.read_twice.wait(30), "the election ended after a failed tick"
                # two ticks failed (and were logged) by now
                assert _BrokenLease.read_thrice.wait(30)
        finally:
            elector.stop(release=False)
            kube.close()
    assert not elector.leading
    failed = [r for r in caplog.records if "this tick failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None


class _LeaseServer(QuietHandler):
    """An API server holding one Lease that PATCH writes (its holder); once ``broken``, the
    Lease it answers has no resourceVersion (a fault the release cannot write past)."""

    holder: ClassVar[str] = ""
    version: ClassVar[int] = 1
    broken: ClassVar[bool] = False

    def _answer(self) -> None:
        cls = type(self)
        metadata: dict[str, Any] = {"name": "l", "namespace": "ns"}
        if not cls.broken:
            metadata["resourceVersion"] = str(cls.version)
        self.send_json(200, {"kind": "Lease", "metadata": metadata,
                             "spec": {"holderIdentity": cls.holder}})

    def do_GET(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        sent = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        cls = type(self)
        cls.holder = str((sent.get("spec") or {}).get("holderIdentity") or "")
        cls.version += 1
        self._answer()


def test_a_release_that_fails_with_anything_but_a_cluster_error_does_not_fail_the_shutdown(
        caplog: pytest.LogCaptureFixture) -> None:
    """Handing the Lease back at a graceful stop is a courtesy (a standby takes over when it
    expires anyway): a fault in it (here a Lease without a resourceVersion, a KeyError) is
    logged and ``stop`` returns, the replica no longer acting, so the shutdown after it (the
    audit sink closed, the API client) still happens."""
    _LeaseServer.holder, _LeaseServer.version, _LeaseServer.broken = "", 1, False
    with serving(_LeaseServer) as url:
        kube = Kube(k8s.ApiClient(k8s.Configuration(host=url)))
        changes: list[bool] = []
        acquired = threading.Event()

        def changed(leading: bool) -> None:
            changes.append(leading)
            if leading:
                acquired.set()

        elector = LeaderElector(kube, "ns", "l", "me", timing=Timing(retry=0.05),
                                on_change=changed)
        try:
            elector.start()
            assert acquired.wait(30), "the free Lease was not taken"
            _LeaseServer.broken = True
            with caplog.at_level(logging.ERROR, "wingman.operator.leader"):
                elector.stop(release=True)
        finally:
            elector.stop(release=False)
            kube.close()
    assert not elector.leading and changes == [True, False]
    assert any("could not release the leader lease" in r.getMessage()
               for r in caplog.records)

"""Readiness is distinct from liveness: ready only while this replica can act."""

from __future__ import annotations

import datetime as dt
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from wingman.operator.metrics import Metrics, serve
from wingman.operator.readiness import Readiness, peering_active

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def peer(priority: int, seen_ago: float = 5, lifetime: int = 60) -> dict[str, Any]:
    seen = NOW - dt.timedelta(seconds=seen_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


@pytest.mark.parametrize(("status", "ready", "why"), [
    ({"me": peer(50)}, True, "active"),
    ({"me": peer(50), "other": peer(10)}, True, "active"),
    ({"me": peer(50), "other": peer(90)}, False, "peer other has priority 90"),
    # the framework pauses every replica of equal priority
    ({"me": peer(50), "other": peer(50)}, False, "peer other has priority 50"),
    # a dead peer (its keep-alive expired) pauses nobody
    ({"me": peer(50), "other": peer(90, seen_ago=120)}, True, "active"),
    ({"other": peer(10)}, False, "not registered"),
    ({"me": peer(50, seen_ago=120)}, False, "not registered"),
    ({}, False, "not registered"),
    (None, False, "not registered"),
    ({"junk": "x", "me": peer(50), "bad": {"priority": "high", "lastseen": "x"}}, True, "active"),
])
def test_peering_rule_is_the_frameworks(status: dict[str, Any] | None, ready: bool,
                                        why: str) -> None:
    ok, reason = peering_active(status, 50, NOW)
    assert ok is ready and why in reason


def test_not_ready_before_start_and_after_stop_and_when_peering_cannot_be_read() -> None:
    started, stopping = threading.Event(), threading.Event()
    reads: list[int] = []

    def peering() -> dict[str, Any]:
        reads.append(1)
        if len(reads) == 1:
            raise ConnectionError("API server unreachable")
        return {"status": {"me": {"priority": 7, "lifetime": 60,
                                  "lastseen": dt.datetime.now(dt.UTC).isoformat()}}}

    clock = [0.0]
    readiness = Readiness(started=started, stopping=stopping, peering=peering, priority=7,
                          cache_seconds=2, clock=lambda: clock[0])
    assert readiness.check() == (False, "starting: the handlers are not running yet")
    started.set()
    ok, reason = readiness.check()
    assert not ok and "API server unreachable" in reason
    assert readiness.check() == (ok, reason), "answered from the cache"
    clock[0] = 3.0
    assert readiness.check()[0] is True
    assert len(reads) == 2
    stopping.set()
    assert readiness.check() == (False, "stopping")
    standalone = Readiness(started=started)
    assert standalone.check()[0] is True


def test_readyz_and_metrics_share_the_metrics_port() -> None:
    metrics = Metrics()
    verdict = [(False, "standing by: peer x has priority 9")]
    server = serve(0, metrics, lambda: verdict[0], host="127.0.0.1")
    port = server.server_port
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert info.value.code == 503 and b"standing by" in info.value.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert b"wingman_operator_active 0.0" in resp.read()
        verdict[0] = (True, "active")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b"ok: active\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert b"wingman_operator_active 1.0" in resp.read()
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=5)
        assert info.value.code == 404
    finally:
        server.shutdown()
        server.server_close()

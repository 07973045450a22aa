"""Readiness is distinct from liveness: ready only while this replica can act."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from wingman.operator.metrics import Metrics, serve
from wingman.operator.readiness import Readiness


def test_ready_only_once_started_while_leading_and_not_stopping() -> None:
    started, stopping = threading.Event(), threading.Event()
    leading = [False]
    readiness = Readiness(started=started, stopping=stopping, leading=lambda: leading[0],
                          lease="wingman-operator-leader")
    assert readiness.check() == (False, "starting: the handlers are not running yet")
    started.set()
    ok, reason = readiness.check()
    assert not ok and "standing by" in reason and "wingman-operator-leader" in reason
    leading[0] = True
    ok, reason = readiness.check()
    assert ok and "holds the leader Lease wingman-operator-leader" in reason
    stopping.set()
    assert readiness.check() == (False, "stopping")
    single = Readiness(started=started)
    assert single.check()[0] is True


def test_readyz_and_metrics_share_the_metrics_port() -> None:
    metrics = Metrics()
    verdict = [(False, "standing by: another replica holds the leader Lease")]
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


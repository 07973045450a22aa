"""Readiness is distinct from liveness: ready only while this replica can act."""

from __future__ import annotations

import errno
import os
import socket
import threading
import urllib.error
import urllib.request

import pytest

from wingman.operator.metrics import Metrics, serve
from wingman.operator.readiness import Readiness
from wingman.operator.run import cannot_listen_on, health_endpoint, health_port_free


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


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = pytest.mark.skipif(not _ipv6_loopback(), reason="this host has no IPv6 loopback")


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=IPV6)])
def test_the_probes_listen_on_the_address_they_are_given(host: str) -> None:
    """``WINGMAN_LISTEN_ADDRESS``: IPv4 or IPv6, the metrics server and kopf's liveness
    endpoint (its URL, and the check that its port is free) on that address alone."""
    server = serve(0, Metrics(), lambda: (True, "active"), host=host)
    port = server.server_port
    netloc = f"{f'[{host}]' if ':' in host else host}:{port}"
    try:
        with urllib.request.urlopen(f"http://{netloc}/readyz", timeout=5) as resp:
            assert resp.read() == b"ok: active\n"
        assert server.server_address[0] == host
        with pytest.raises(OSError):  # taken on this address: the start names the setting
            health_port_free(port, host)
    finally:
        server.shutdown()
        server.server_close()
    health_port_free(port, host)  # free again
    assert health_endpoint(host, port) == f"http://{netloc}/healthz"


@IPV6
def test_every_ipv6_address_is_ipv6_only_as_kopf_s_liveness_endpoint() -> None:
    """``::`` is every IPv6 address and no IPv4 one, on both ports alike (asyncio's servers,
    kopf's among them, are IPv6-only): the IPv4 side of a port stays another process's."""
    server = serve(0, Metrics(), lambda: (True, "active"), host="::")
    port = server.server_port
    try:
        with urllib.request.urlopen(f"http://[::1]:{port}/readyz", timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as ipv4:  # held on IPv4 only: the port is still free for kopf's
        ipv4.bind(("0.0.0.0", 0))  # noqa: S104 - the port's other family
        ipv4.listen()
        health_port_free(ipv4.getsockname()[1], "::")


def test_an_address_the_host_cannot_listen_on_names_the_address_setting() -> None:
    """An address this host does not have (or an IPv6 address where it has no IPv6): the
    start says which setting to change, not the port's; a port in use stays the port's."""
    for code in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL):
        said = cannot_listen_on(OSError(code, os.strerror(code)), "203.0.113.9")
        assert said is not None and said.startswith(
            f"cannot listen on 203.0.113.9 (WINGMAN_LISTEN_ADDRESS): {os.strerror(code)}; "), said
        assert "operator.listenAddress" in said
    with socket.socket() as held:  # a port in use is the port's setting, not the address's
        held.bind(("127.0.0.1", 0))
        held.listen()
        with pytest.raises(OSError) as raised:
            health_port_free(held.getsockname()[1], "127.0.0.1")
    assert cannot_listen_on(raised.value, "127.0.0.1") is None

"""The operator's log stays readable while the API server is away; kopf watches only what the
operator acts on and keeps no per-event bookkeeping; its health and metrics ports listen on the
address they are given."""

from __future__ import annotations

import errno
import gc
import io
import json
import logging
import os
import signal
import socket
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator

import kopf
import pytest
from kopf._cogs.structs import references

from wingman.errors import cannot_listen_on
from wingman.logs import setup_logging
from wingman.model import names
from wingman.operator import run
from wingman.operator.metrics import Metrics, serve
from wingman.operator.run import (
    GC_THRESHOLDS,
    WORKER_IDLE_SECONDS,
    QuietRetries,
    configure_kopf,
    health_endpoint,
    health_port_free,
    tune_gc,
)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("json", "info", stream=stream, component="operator")
    yield stream
    setup_logging("json", "info", component="operator")


def _lines(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_frameworks_failed_attempts_are_one_warning_per_period(
        captured: io.StringIO) -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(QuietRetries(period=60.0))
    watching = logging.getLogger("kopf._cogs.clients.watching")
    for i in range(35):  # five watches, seven attempts each
        watching.error(f"Request attempt #{i % 7 + 1}/7 failed; will retry: GET "
                       f"https://127.0.0.1:6443/apis/x?watch=true -> ClientConnectorError()")
    watching.error("Stopping the watch-stream: something else")
    logging.getLogger("wingman.operator").error("Request attempt: our own line stays")
    lines = _lines(captured)
    attempts = [r for r in lines if r["message"].startswith("Request attempt #")]
    assert len(attempts) == 1 and attempts[0]["level"] == "warning"
    assert [r["message"] for r in lines[1:]] == ["Stopping the watch-stream: something else",
                                                 "Request attempt: our own line stays"]


def test_a_new_line_after_the_period(captured: io.StringIO) -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(QuietRetries(period=0.0))
    api = logging.getLogger("kopf._cogs.clients.api")
    api.error("Request attempt #1/7 failed; will retry: GET https://x")
    api.error("Request attempt #2/7 failed; will retry: GET https://x")
    assert len(_lines(captured)) == 2


def _resource(group: str, plural: str, kind: str) -> references.Resource:
    return references.Resource(group, "v1", plural, kind=kind, singular=kind.lower(),
                               namespaced=True, verbs=frozenset({"list", "watch"}))


def test_only_jobs_with_wingmans_role_label_are_watched() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    jobs = _resource("batch", "jobs", "Job")
    grants = _resource("wingman.dev", "executiongrants", "ExecutionGrant")
    assert settings.watching.label_selectors.collect(jobs) == [names.ROLE_LABEL]
    assert settings.watching.label_selectors.collect(grants) == []


def test_an_objects_worker_ends_soon_after_its_last_event() -> None:
    """kopf keeps each object's worker, and the last body it handled, for 5 s after its last
    event by default: in a burst, thousands of them at once. The setting is the one kopf reads
    (a deprecated alias, or a setting kopf removed, would warn and change nothing)."""
    settings = kopf.OperatorSettings()
    default = settings.queueing.idle_timeout
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        configure_kopf(settings)
    assert settings.queueing.idle_timeout == WORKER_IDLE_SECONDS < default


def test_the_declared_kopf_floor_has_the_watch_label_selectors() -> None:
    """``settings.watching.label_selectors`` came with kopf 1.45.0: an older kopf, which
    the declared floor allowed, failed the operator's start with an AttributeError."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    kopf_req = next(Requirement(d) for d in deps if Requirement(d).name == "kopf")
    floors = [s.version for s in kopf_req.specifier if s.operator == ">="]
    assert floors and tuple(int(p) for p in floors[0].split(".")[:2]) >= (1, 45), kopf_req


def test_no_last_handled_copy_of_objects_is_built_or_kept() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    storage = settings.persistence.diffbase_storage
    body = kopf.Body({"metadata": {"name": "g", "annotations": {}}, "spec": {"x": 1}})
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=kopf.BodyEssence())
    assert not patch


def test_the_start_up_objects_are_kept_out_of_the_collectors_walks() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 10_000  # the libraries' start-up objects
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_hangup_stops_the_operator_as_a_sigterm_does() -> None:
    got: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, _frame: got.append(signum))
    hup = signal.getsignal(signal.SIGHUP)
    try:
        assert run.hangup_stops()
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):  # delivered to the main thread between bytecodes
            if got:
                break
            time.sleep(0.01)
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGHUP, hup)


def test_only_the_main_thread_can_make_a_hangup_stop_the_operator() -> None:
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(run.hangup_stops()))
    worker.start()
    worker.join()
    assert result == [False]


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
        said = cannot_listen_on(OSError(code, os.strerror(code)), "203.0.113.9",
                                "operator.listenAddress")
        assert said is not None and said.startswith(
            f"cannot listen on 203.0.113.9 (WINGMAN_LISTEN_ADDRESS): {os.strerror(code)}; "), said
        assert "operator.listenAddress" in said
    with socket.socket() as held:  # a port in use is the port's setting, not the address's
        held.bind(("127.0.0.1", 0))
        held.listen()
        with pytest.raises(OSError) as raised:
            health_port_free(held.getsockname()[1], "127.0.0.1")
    assert cannot_listen_on(raised.value, "127.0.0.1", "operator.listenAddress") is None

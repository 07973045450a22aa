"""The operator's log stays readable while the API server is away; kopf watches only what the
operator acts on and keeps no per-event bookkeeping."""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator

import kopf
import pytest
from kopf._cogs.structs import references

from wingman.logs import setup_logging
from wingman.model import names
from wingman.operator import run
from wingman.operator.run import (
    GC_THRESHOLDS,
    WORKER_IDLE_SECONDS,
    QuietRetries,
    configure_kopf,
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
                               namespaced=True, verbs=["list", "watch"])


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

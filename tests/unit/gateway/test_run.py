"""The gateway run's checks that need no API server, and its reads' retries on a local one."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from support.localserver import QuietHandler, serving
from wingman.errors import GrantDenied
from wingman.gateway import executors, run
from wingman.gateway.checks import check_targets
from wingman.kube import GRANTS, ApiError, Kube
from wingman.settings import GatewaySettings

from .test_checks import CMD, WEB, _previewed


@pytest.mark.parametrize("recorded", ["sha256:another", None])
def test_a_token_the_grant_does_not_record_is_refused_and_the_answer_says_a_new_request(
        recorded: str | None) -> None:
    """A TokenIssued grant whose status records another token (or none) refuses this pod's:
    nothing ran, the token is unspent, and as the approval holds the command for this grant
    (a new grant for it is refused CommandAlreadyGranted), the way on is a new request."""
    status = {"phase": "TokenIssued", **({"tokenSHA256": recorded} if recorded else {})}
    with pytest.raises(GrantDenied) as info:
        run._check_recorded({"status": status}, "sha256:this")
    assert info.value.reason == "BindingMismatch"
    assert "the token was not spent and nothing was executed" in info.value.message
    assert "submit a new request" in info.value.message
    assert "new grant" not in info.value.message


class _Unavailable(QuietHandler):
    """An API server that answers every read 503 (a failure that may pass), counting them."""

    reads = 0

    def do_GET(self) -> None:
        type(self).reads += 1
        self.send_json(503, {"kind": "Status", "status": "Failure", "code": 503,
                             "reason": "ServiceUnavailable", "message": "etcd is away"})


class _SigtermOnRetry(logging.Handler):
    """SIGTERM to this process when the gateway logs that it will try again: it arrives as the
    pause before the next try begins (the kubelet stopping the pod meanwhile)."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", "") in ("ApiCallRetried", "JobReadRetried"):
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture
def unavailable_run() -> Iterator[run._Run]:
    yield from _unavailable_run(signal_on_retry=True)


@pytest.fixture
def unsignalled_run() -> Iterator[run._Run]:
    yield from _unavailable_run(signal_on_retry=False)


def _unavailable_run(*, signal_on_retry: bool) -> Iterator[run._Run]:
    _Unavailable.reads = 0
    with serving(_Unavailable) as url:
        handler = _SigtermOnRetry()
        gateway_log = logging.getLogger("wingman.gateway")
        if signal_on_retry:
            gateway_log.addHandler(handler)
        restore = executors.TERMINATION.install()
        settings = GatewaySettings.from_env({
            "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443",
            "WINGMAN_GRANT_NAME": "g1"})
        kube = Kube(k8s.ApiClient(k8s.Configuration(host=url)))
        try:
            yield run._Run(settings=settings, clock=time.time, kube=kube)
        finally:
            restore()
            gateway_log.removeHandler(handler)
            kube.close()


@pytest.mark.parametrize("read", ["grant", "job", "target"])
def test_a_sigterm_in_a_retry_pause_ends_the_retries_at_once_and_nothing_runs(
        unavailable_run: run._Run, read: str, caplog: pytest.LogCaptureFixture) -> None:
    """A read that failed in a way that may pass is made again after a pause; a SIGTERM during
    that pause (the grant cancelled, the Job's deadline, a drain) ends it there: the gateway
    reads no more and refuses GatewayTerminating (nothing is executed), the stop, not the API
    server, named as the cause (not ApiUnavailable, DeadlineUnknown or TargetUnreadable, which
    would send the reader to a healthy API server), and its log says the read was not made
    again, after the line that said it would be."""
    with pytest.raises(GrantDenied) as info, caplog.at_level(logging.INFO, "wingman.gateway"):
        if read == "grant":
            run._get(unavailable_run, GRANTS, "g1", "ExecutionGrant")
        elif read == "job":
            run._check_job_deadline(unavailable_run, {"metadata": {"name": "g1", "uid": "u1"}})
        else:  # check_targets turns a read's failure into TargetUnreadable: not this one
            unavailable_run.executor_kube = unavailable_run.kube
            check_targets(_previewed(WEB), CMD, allow_drift=False,
                          read=lambda t: run._read_target(unavailable_run, t))
    assert executors.TERMINATION.requested
    assert _Unavailable.reads == 1, "read again after the SIGTERM"
    assert info.value.reason == "GatewayTerminating"
    assert "asked to stop (SIGTERM)" in info.value.message
    assert "etcd is away" in info.value.message  # the failure the stop cut short is kept
    events = [getattr(r, "event", "") for r in caplog.records]
    stopped = "JobReadStopped" if read == "job" else "ApiCallStopped"
    assert events[-1] == stopped, events


def test_a_gateway_not_asked_to_stop_keeps_reading_the_job_until_its_budget_ends(
        unsignalled_run: run._Run) -> None:
    """The Job read's stop is the SIGTERM only: with the handler installed and no signal, a
    read that fails in a way that may pass is made again (within ``JOB_READ_RETRY_SECONDS``)
    before the gateway refuses, instead of giving up after the first answer."""
    with pytest.raises(GrantDenied) as info:
        run._check_job_deadline(unsignalled_run, {"metadata": {"name": "g1", "uid": "u1"}})
    assert not executors.TERMINATION.requested
    assert _Unavailable.reads >= 2, "gave up after one read though not asked to stop"
    assert info.value.reason == "DeadlineUnknown"
    assert "etcd is away" in info.value.message


class _Contended(QuietHandler):
    """An API server on which another writer keeps changing the grant: each read answers a
    little under half a second after it was asked, and each write of its status 409 Conflict
    (a newer version of it was written meanwhile)."""

    reads = 0

    def do_GET(self) -> None:
        type(self).reads += 1
        time.sleep(0.45)
        self.send_json(200, {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                             "metadata": {"name": "g1", "uid": "u1",
                                          "resourceVersion": str(type(self).reads)},
                             "status": {"phase": "Running"}})

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_json(409, {"kind": "Status", "status": "Failure", "code": 409,
                             "reason": "Conflict", "message": "the object has been modified"})


def test_a_status_write_ends_within_its_budget_whatever_its_calls_take() -> None:
    """The writes of the grant's status have a budget (the result's: what the deadline check
    kept before the Job's deadline): a read and a write made again on each conflict, each
    answered slowly, stop when too little of it is left for another call, and the write
    fails with the last answer, within the budget, not a call or two past it."""
    _Contended.reads = 0
    settings = GatewaySettings.from_env({
        "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443",
        "WINGMAN_GRANT_NAME": "g1"})
    budget = 1.0
    with serving(_Contended) as url:
        kube = Kube(k8s.ApiClient(k8s.Configuration(host=url)))
        try:
            started = time.monotonic()
            with pytest.raises(ApiError) as info:
                run._Run(settings=settings, clock=time.time, kube=kube).patch_status(
                    lambda grant: {"phase": "Failed"}, seconds=budget)
            elapsed = time.monotonic() - started
        finally:
            kube.close()
    assert info.value.conflict
    assert _Contended.reads >= 2, "the write was not made again on a conflict"
    # one call more would take 0.45 s past the budget; 0.3 s leaves room for a busy machine
    assert elapsed <= budget + 0.3, f"the status write took {elapsed:.2f} s of a {budget} s budget"

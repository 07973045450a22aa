"""The grant reconciler without an API server: the early return (a final grant whose token
Secret this process already removed costs no API call when its own status write comes back),
the guard against stale copies, the TokenIssued status and token Secret written side by
side, and the Job's deadline extended for a late claim."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import types
from pathlib import Path
from typing import Any, cast

import pytest

from support.retries import taken_retries
from wingman.audit import FileSink
from wingman.kube import ApiError
from wingman.model import names
from wingman.operator import manifests
from wingman.operator.context import Context, Retry
from wingman.operator.handlers import grants as grants_handler
from wingman.operator.handlers.grants import (
    Grants,
    _secret_expiry,
    cover_deadline,
    side_by_side,
)
from wingman.operator.metrics import Metrics
from wingman.settings import OperatorSettings

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


class NoApiServer:
    """Stands where the API client would be: any use of it fails the test, naming the call."""

    def __getattr__(self, call: str) -> Any:
        raise AssertionError(f"the reconciler called the API server ({call})")


def grant(phase: str) -> dict[str, Any]:
    return {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
            "metadata": {"name": "g", "namespace": "ns", "uid": "g1", "resourceVersion": "7",
                         "creationTimestamp": "2026-11-25T11:50:00Z"},
            "spec": {"approvalRef": {"name": "req"},
                     "command": "kubectl rollout restart deployment/web -n apps"},
            "status": {"phase": phase, "completionTime": "2026-11-25T11:59:00Z"}}


def context(**setting: object) -> Context:
    """A context whose settings are only those the handler reads here (and ``setting``)."""
    settings: Any = types.SimpleNamespace(environment="test", api_concurrency=4, **setting)
    none: Any = None  # no keys, audit sink, panel or allowlist: none may be used either
    return Context(settings, cast(Any, NoApiServer()), none, none, none, none, Metrics())


def test_an_expired_grant_whose_secret_is_gone_already_is_left_alone() -> None:
    ctx = context()
    entry = ctx.tracker.observe_grant(grant("TokenIssued"), NOW)
    entry.cleaned = True  # the expiry removed its token Secret, then wrote Expired
    entry = ctx.tracker.observe_grant(grant("Expired"), NOW)  # that write, back from the watch
    assert entry.cleaned and entry.needs is None

    asyncio.run(Grants().reconcile(ctx, grant("Expired")))  # no read, no write, no audit
    assert ctx.tracker.grants["g1"] is entry and entry.cleaned and entry.needs is None


def test_a_final_grant_not_known_to_be_cleaned_up_is_looked_at() -> None:
    """The other side of the early return: without it, the token Secrets would be listed."""
    ctx = context()
    entry = ctx.tracker.observe_grant(grant("Expired"), NOW)  # e.g. final when we started
    assert not entry.cleaned and entry.needs == "cleanup"

    with pytest.raises(AssertionError, match=r"called the API server \(list\)"):
        asyncio.run(Grants().reconcile(ctx, grant("Expired")))


class OneRead(NoApiServer):
    """An API server that answers reads of the grant with ``current`` and nothing else."""

    def __init__(self, current: dict[str, Any]) -> None:
        self.current = current
        self.reads = 0

    def get_or_none(self, res: Any, namespace: str, name: str) -> dict[str, Any] | None:
        assert res.plural == "executiongrants" and name == "g", (res, name)
        self.reads += 1
        return self.current


def test_a_copy_older_than_the_final_status_this_process_saw_is_not_acted_on() -> None:
    """A reconcile that read the grant while it was still Pending and waited for its turn while
    the grant was denied (its Job and Secret removed) must not act on that copy: it would make
    a new Job for a Denied grant. It reads the grant once more and goes on with that."""
    stale = grant("Pending")
    denied = grant("Denied")
    denied["metadata"]["resourceVersion"] = "8"
    api = OneRead(denied)
    ctx = context()
    ctx.kube = cast(Any, api)
    ctx.tracker.observe_grant(stale, NOW)
    entry = ctx.tracker.observe_grant(denied, NOW)  # the denial, written meanwhile
    entry.cleaned = True

    asyncio.run(Grants().reconcile(ctx, stale))  # one read; no write, no audit
    assert api.reads == 1 and entry.phase == "Denied" and entry.cleaned

    # a status reset to Pending since: reconciled again (here: the approval is read)
    reset = grant("Pending")
    reset["metadata"]["resourceVersion"] = "9"
    api.current = reset
    entry = ctx.tracker.observe_grant(denied, NOW)
    with pytest.raises(AssertionError, match=r"plural='approvalrequests'"):  # authorizing it
        asyncio.run(Grants().reconcile(ctx, stale))
    assert api.reads == 2 and entry.phase == "Pending" and not entry.cleaned


def test_the_status_and_the_secret_are_written_at_the_same_time() -> None:
    """One round trip for both: each write starts before the other has finished."""
    ctx = context(fault_kill_at=None)
    started = {"status": asyncio.Event(), "secret": asyncio.Event()}

    async def write() -> dict[str, Any]:
        started["status"].set()
        await asyncio.wait_for(started["secret"].wait(), 5)  # a sequential run never gets here
        return {"status": "written"}

    async def create() -> tuple[dict[str, Any], bool]:
        started["secret"].set()
        await asyncio.wait_for(started["status"].wait(), 5)
        return {"secret": "made"}, True

    assert asyncio.run(side_by_side(ctx, write, create)) == (
        {"status": "written"}, ({"secret": "made"}, True))


def test_an_error_of_one_write_is_raised_once_the_other_has_finished() -> None:
    """A failed Secret must not cut the status write short (nor the other way round): the next
    run has to find whatever landed, and nothing may still be on its way when it looks."""
    ctx = context(fault_kill_at=None)
    finished: list[str] = []

    async def write() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        finished.append("status")
        return {}

    async def create() -> tuple[dict[str, Any], bool]:
        finished.append("secret")
        raise RuntimeError("the Secret's create failed")

    with pytest.raises(RuntimeError, match="the Secret's create failed"):
        asyncio.run(side_by_side(ctx, write, create))
    assert finished == ["secret", "status"]


@pytest.mark.parametrize(("step", "first"), [("status-written", "status"),
                                             ("secret-created", "secret")])
def test_under_fault_injection_the_write_the_crash_follows_goes_first_alone(
        step: str, first: str) -> None:
    """So the crash tests leave each half without the other, every time."""
    ctx = context(fault_kill_at=step)
    order: list[str] = []

    async def write() -> dict[str, Any]:
        order.append("status")
        await asyncio.sleep(0.01)
        order.append("status done")
        return {}

    async def create() -> tuple[dict[str, Any], bool]:
        order.append("secret")
        await asyncio.sleep(0.01)
        order.append("secret done")
        return {}, True

    asyncio.run(side_by_side(ctx, write, create))
    second = "secret" if first == "status" else "status"
    assert order == [first, f"{first} done", second, f"{second} done"]


class Killed(Exception):
    """Where the operator's SIGKILL would come."""


@pytest.mark.parametrize(("step", "expected"), [
    ("status-landed", ["status", "status done", "kill"]),
    ("secret-landed", ["secret", "secret done", "kill"]),
    ("both-landed", ["status", "secret", "status done", "secret done", "kill"]),
])
def test_under_fault_injection_in_flight_the_kill_comes_while_the_writes_are_under_way(
        step: str, expected: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The crash tests' cuts of the concurrent path: both writes are started together; the one
    that must not land is held back until the other has landed, and the kill comes then (at
    ``both-landed``, once both have landed)."""
    ctx = context(fault_kill_at=step)
    order: list[str] = []

    def crash(_ctx: Context, at: str) -> None:
        assert at == step
        order.append("kill")
        raise Killed

    monkeypatch.setattr(grants_handler, "crashpoint", crash)

    def half(name: str, result: Any) -> Any:
        async def run() -> Any:
            order.append(name)
            await asyncio.sleep(0.01 if name == "status" else 0.02)
            order.append(f"{name} done")
            return result
        return run

    with pytest.raises(Killed):
        asyncio.run(side_by_side(ctx, half("status", {}), half("secret", ({}, True))))
    assert order[:order.index("kill") + 1] == expected


def test_when_both_writes_fail_the_status_write_s_error_is_raised() -> None:
    ctx = context(fault_kill_at=None)

    async def write() -> dict[str, Any]:
        raise LookupError("the status write failed")

    async def create() -> tuple[dict[str, Any], bool]:
        raise RuntimeError("the Secret's create failed")

    with pytest.raises(LookupError, match="the status write failed"):
        asyncio.run(side_by_side(ctx, write, create))


# --------------------------------------------------------------------------- late claims


class JobApi:
    """A Job store for ``cover_deadline``: patches answer as listed (``None``: applied), reads
    return the Job as it is now."""

    def __init__(self, job: dict[str, Any], answers: list[ApiError | None]) -> None:
        self.job, self.answers = job, answers
        self.patches: list[dict[str, Any]] = []
        self.reads = 0

    def patch(self, res: Any, namespace: str, name: str, body: dict[str, Any]) -> Any:
        self.patches.append(body)
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer
        self.job["spec"].update(body["spec"])
        return self.job

    def get_or_none(self, res: Any, namespace: str, name: str) -> Any:
        self.reads += 1
        self.job["metadata"]["resourceVersion"] = str(int(
            self.job["metadata"]["resourceVersion"]) + 1)  # its controller wrote its status
        return copy.deepcopy(self.job)


def late(answers: list[ApiError | None]) -> tuple[Context, JobApi, dict[str, Any]]:
    settings = OperatorSettings.from_env({})
    job = manifests.gateway_job(grant("Pending"), settings, 300)
    job["metadata"].update(uid="j1", resourceVersion="10", creationTimestamp="2026-11-25T12:00:00Z")
    api = JobApi(copy.deepcopy(job), answers)
    ctx = Context(settings, cast(Any, api), cast(Any, None), cast(Any, None), cast(Any, None),
                  cast(Any, None), Metrics())
    return ctx, api, job


def expiring(claimed_after: int) -> int:
    return int(dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC).timestamp()) + claimed_after + 300


def test_a_token_claimed_soon_after_its_job_costs_no_request() -> None:
    ctx, api, job = late([])
    asyncio.run(cover_deadline(ctx, grant("Pending"), job, expiring(30)))
    assert api.patches == [] and api.reads == 0


def test_a_late_claim_extends_the_deadline_over_the_version_read() -> None:
    ctx, api, job = late([])
    asyncio.run(cover_deadline(ctx, grant("Pending"), job, expiring(45)))
    assert api.patches == [{"metadata": {"resourceVersion": "10"},
                            "spec": {"activeDeadlineSeconds": 45 + 300 + 5 + 120 + 60}}]


def test_a_job_its_controller_changed_meanwhile_is_read_again_then_extended() -> None:
    ctx, api, job = late([ApiError(409, "Conflict", "changed")])
    asyncio.run(cover_deadline(ctx, grant("Pending"), job, expiring(45)))
    assert api.reads == 1 and len(api.patches) == 2
    assert api.patches[1]["metadata"]["resourceVersion"] == "11"
    assert api.job["spec"]["activeDeadlineSeconds"] == 45 + 485


def test_a_job_that_keeps_changing_is_retried_by_the_next_run() -> None:
    ctx, api, job = late([ApiError(409, "Conflict", "changed")] * 3)
    with pytest.raises(Retry):
        asyncio.run(cover_deadline(ctx, grant("Pending"), job, expiring(45)))
    assert len(api.patches) == 3


def test_an_extension_admission_refuses_leaves_the_deadline_and_goes_on() -> None:
    """After an upgrade that changed the pinned image, admission refuses any change to a Job
    made before it: the grant goes on with the deadline it has (a Warning Event says so)."""
    ctx, api, job = late([ApiError(403, "Forbidden", "pinned image")])
    posted: list[tuple[str, str]] = []
    ctx.events = cast(Any, types.SimpleNamespace(
        post=lambda obj, type_, reason, message: posted.append((type_, reason))))
    asyncio.run(cover_deadline(ctx, grant("Pending"), job, expiring(45)))
    assert posted == [("Warning", "DeadlineNotExtended")]
    assert api.job["spec"]["activeDeadlineSeconds"] == 485


def test_a_job_that_ended_is_not_extended() -> None:
    ctx, api, job = late([])
    job["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    asyncio.run(cover_deadline(ctx, grant("Pending"), job, expiring(45)))
    assert api.patches == []


@pytest.mark.parametrize("expires", ["", "soon", "\u00b2", "\u0661\u0667\u0660\u0660"])
def test_a_token_secret_with_a_garbled_expiry_counts_as_expired(expires: str) -> None:
    # str.isdigit also says yes to "\u00b2" (int() refuses it) and to Arabic-Indic digits
    # (int() reads them): only ASCII digits are an expiry
    secret = {"metadata": {"annotations": {names.EXPIRES_ANNOTATION: expires}}}
    assert _secret_expiry(secret) == 0
    secret["metadata"]["annotations"][names.EXPIRES_ANNOTATION] = "1700000000"
    assert _secret_expiry(secret) == 1700000000


def test_the_audit_record_of_a_job_that_ended_without_a_result_keeps_all_of_its_message(
        tmp_path: Path) -> None:
    """The record an investigator reads (on the real file sink) says all the grant's status
    says: that the command may or may not have run, where to tell, and to check the target."""
    written: list[dict[str, Any]] = []

    class Api:
        def patch(self, res: Any, namespace: str, name: str, body: dict[str, Any],
                  **kwargs: Any) -> dict[str, Any]:
            written.append(body["status"])
            return body

    settings: Any = types.SimpleNamespace(environment="test", api_concurrency=4)
    none: Any = None
    sink = FileSink(tmp_path / "audit.jsonl")
    ctx = Context(settings, cast(Any, Api()), none, sink, none, none, Metrics())
    running = grant("Running")
    try:
        asyncio.run(grants_handler.job_result(ctx, running, ("Failed", "BackoffLimitExceeded")))
    finally:
        sink.close()
    (status,) = written
    assert status["reason"] == "GatewayFailed"
    assert status["message"].endswith("Check the target before running the command again")
    (record,) = [r for r in FileSink(tmp_path / "audit.jsonl").records()
                 if r.event == "GrantFailed"]
    assert record.data["message"] == status["message"]


def test_a_token_to_store_never_shows_in_a_repr() -> None:
    """The token issued on the claim travels to its Secret's create inside the operator; its
    repr (a log line, a traceback's locals) names its hash and record, never the manifest
    that holds the token."""
    import functools

    from wingman.operator.handlers.grants import _Minted

    secret: dict[str, object] = {"data": {"token": "ZXlKaGJHY2lPaUpGWkVSVFFTSjkuc2VjcmV0"}}

    async def create(body: dict[str, object]) -> tuple[dict[str, object], bool]:
        return body, True

    minted = _Minted("sha256:ab", ("TokenMinted", {}, {"tokenSHA256": "sha256:ab"}),
                     functools.partial(create, secret))
    assert "sha256:ab" in repr(minted)
    assert "ZXlK" not in repr(minted) and "create" not in repr(minted)


def test_a_relisted_pending_copy_of_an_issued_grant_is_not_issued_again() -> None:
    """A long name's grant: the operator wrote TokenIssued (version 8); the watch's re-list
    then delivers a Pending copy listed before that write (version 7). It must not make the
    grant one to issue again (a second ApprovalCommandGranted and GrantAuthorized, and a false
    GrantDenied once its Job ended): the tracker keeps what it knows and nothing reaches the
    reconciler (whose API client here fails any call). Released, the grant needs nothing: the
    copy costs nothing. Not yet released (its Secret still to store), it is read again."""
    ctx = context()
    ctx.reconcilers["grant"] = Grants()
    issued = grant("TokenIssued")
    issued["metadata"]["resourceVersion"] = "8"
    entry = ctx.tracker.observe_grant(issued, NOW)
    assert entry.needs == "release"

    async def relisted() -> set[str]:
        await grants_handler.on_event(ctx, {"type": None, "object": grant("Pending")})
        return taken_retries(ctx)
    assert asyncio.run(relisted()) == {"grant/g1"}, "still to release: read again"
    assert (entry.phase, entry.released, entry.needs, entry.newest) == (
        "TokenIssued", False, "release", "8")
    entry.released = True
    ctx.tracker.settle(entry, None, NOW)
    assert asyncio.run(relisted()) == set(), "released: nothing to read"
    # mypy still holds entry.needs to be "release", as asserted above: settle() changed it
    assert (entry.phase, entry.released, entry.needs, entry.newest) == (  # type: ignore[comparison-overlap]
        "TokenIssued", True, None, "8")


def test_a_copy_trusted_after_the_store_went_back_has_its_outcome_counted() -> None:
    """The re-sync trusts a read older than the copies seen once the store went back (etcd
    restored): the grant's entry is re-fed from it (``Grants.observe``), and a final outcome
    there is counted as a watch event's would be, once."""
    ctx = context()
    ctx.started = NOW - dt.timedelta(hours=1)
    ended = grant("Succeeded")
    entry = Grants().observe(ctx, ended)
    Grants().observe(ctx, ended)
    assert entry.phase == "Succeeded" and entry.final_at is not None
    assert ctx.metrics.registry.get_sample_value(
        "wingman_grants_total", {"environment": "test", "outcome": "Succeeded"}) == 1

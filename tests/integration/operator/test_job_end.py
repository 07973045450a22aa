"""A gateway Job's end without a result on its grant, against the real API server, the grant
reconciler run in-process: what the operator says of the command (it did not run, or it may
have) is judged on the grant as read after the Job's end was seen, never on an older copy, at
one read of the grant a Job's end."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import types
from pathlib import Path
from typing import Any

from wingman.audit.file import FileSink
from wingman.client.api import build_grant
from wingman.dev.cluster import LocalCluster
from wingman.kube import GRANTS, Kube
from wingman.operator.context import Context
from wingman.operator.handlers import grants
from wingman.operator.metrics import Metrics

EXPIRES = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token(name: str) -> dict[str, str]:
    """The token fields of a claim that issued ``name``'s token."""
    return {"tokenSHA256": "sha256:" + "ab" * 32, "tokenExpirationTime": EXPIRES,
            "jobName": f"{name}-gw", "tokenSecretName": f"{name}-gw-token-0123456789abcdef"}


def _issued_on_its_claim(ctx: Context, kube: Kube, namespace: str, name: str
                         ) -> dict[str, Any]:
    """A grant whose token was issued on its claim (stored Pending, its view TokenIssued), as
    the grant watch delivered it; its gateway Job is gone (so none is read as active)."""
    body = build_grant(request_name="req", namespace=namespace, command="kubectl get pods",
                       requester="someone")
    body["metadata"] = {"name": name}
    grant = kube.create(GRANTS, namespace, body)
    uid = grant["metadata"]["uid"]
    ctx.tracker.claims[uid] = {"grantUID": uid, **_token(name)}
    entry = ctx.tracker.observe_grant(grant, dt.datetime.now(dt.UTC))
    assert entry.phase == "TokenIssued"
    return grant


def _records(audit: Path, name: str) -> list[dict[str, Any]]:
    return [r for r in (json.loads(line) for line in audit.read_text().splitlines())
            if r["subject"].get("name") == name]


def test_a_command_that_ran_is_never_said_not_to_have_run_on_a_copy_from_before_running(
        cluster: LocalCluster, crds: Path, namespace: str, tmp_path: Path) -> None:
    """The gateway wrote Running (and ran the command), then its Job failed; the grant watch
    then delivers a copy from before that Running (it lags), and that event runs before the
    Job event's read of the grant. The operator must not say the command did not run: it
    reads the grant again, and says the command may or may not have run, once (one record,
    one status write). A grant whose gateway never ran still costs one read of the grant when
    its Job ends (the Job event's), which says plainly that the command did not run."""
    calls: list[tuple[str, str]] = []
    kube = Kube(cluster.api_client(),
                observer=lambda verb, resource, code, seconds: calls.append((verb, resource)))
    audit = tmp_path / "audit.jsonl"
    settings: Any = types.SimpleNamespace(namespace=namespace, environment="test",
                                          api_concurrency=4)
    none: Any = None
    ctx = Context(settings, kube, none, FileSink(audit), none, none, Metrics())
    ctx.reconcilers["grant"] = grants.Grants()

    ran = _issued_on_its_claim(ctx, kube, namespace, "ran")
    stale = ran  # the watch's copy, from before the gateway's Running
    kube.patch(GRANTS, namespace, "ran", {"status": {
        "phase": "Running", "reason": "Running", "message": "the gateway runs the command",
        "startTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **_token("ran")}}, subresource="status")
    entry = ctx.tracker.grants[ran["metadata"]["uid"]]
    grants.job_ended(ctx, entry, ("Failed", "BackoffLimitExceeded"))  # the Job event
    calls.clear()
    asyncio.run(ctx.run("grant", dict(stale)))  # the lagging grant event, before the resync

    (failed,) = [r for r in _records(audit, "ran") if r["event"] == "GrantFailed"]
    message = failed["data"]["message"]
    assert "did not run" not in message and "may or may not have run" in message, message
    assert calls.count(("get", "executiongrants")) == 1, calls
    assert calls.count(("patch", "executiongrants/status")) == 1, calls
    status = kube.get(GRANTS, namespace, "ran")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "GatewayFailed"), status
    assert status["message"] == message

    waited = _issued_on_its_claim(ctx, kube, namespace, "waited")  # its pod never started
    entry = ctx.tracker.grants[waited["metadata"]["uid"]]
    grants.job_ended(ctx, entry, ("Failed", "BackoffLimitExceeded"))  # the Job event...
    calls.clear()
    asyncio.run(ctx.resync("grant", namespace, "waited", waited["metadata"]["uid"]))  # its read

    (failed,) = [r for r in _records(audit, "waited") if r["event"] == "GrantFailed"]
    assert "so the command did not run" in failed["data"]["message"], failed
    assert calls.count(("get", "executiongrants")) == 1, calls
    assert kube.get(GRANTS, namespace, "waited")["status"]["phase"] == "Failed"


def test_a_grant_reset_to_pending_before_its_read_after_its_job_s_end_is_reconciled_again(
        cluster: LocalCluster, crds: Path, namespace: str, tmp_path: Path) -> None:
    """The grant's Job ended, and its status was reset to Pending (here recording a token its
    claim does not: its view is Pending, not TokenIssued) before the Job event's read of the
    grant. That read, not the event's older copy, decides: a Pending grant is reconciled again
    (here its approval is gone: Denied, ApprovalNotFound), as the grant watch's copy of that
    status is, never failed by the Job's end as if it were still issued."""
    kube = Kube(cluster.api_client())
    audit = tmp_path / "audit.jsonl"
    settings: Any = types.SimpleNamespace(namespace=namespace, environment="test",
                                          api_concurrency=4, policy=None)
    none: Any = None
    ctx = Context(settings, kube, none, FileSink(audit), none, none, Metrics())
    ctx.reconcilers["grant"] = grants.Grants()

    stale = _issued_on_its_claim(ctx, kube, namespace, "reset")
    kube.patch(GRANTS, namespace, "reset", {"status": {
        "phase": "Pending", "tokenSHA256": "sha256:" + "cd" * 32}}, subresource="status")
    entry = ctx.tracker.grants[stale["metadata"]["uid"]]
    grants.job_ended(ctx, entry, ("Failed", "BackoffLimitExceeded"))  # the Job event
    asyncio.run(ctx.run("grant", dict(stale)))  # the watch's copy, from before the reset

    events = [r["event"] for r in _records(audit, "reset")]
    assert "GrantFailed" not in events and "GrantDenied" in events, events
    status = kube.get(GRANTS, namespace, "reset")["status"]
    assert (status["phase"], status["reason"]) == ("Denied", "ApprovalNotFound"), status

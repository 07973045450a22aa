"""A gateway Job's end without a result on its grant, against the real API server, the grant
reconciler run in-process: what the operator says of the command (it did not run, or it may
have) is judged on the grant as read after the Job's end was seen, never on an older copy, at
one read of the grant a Job's end."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import types
from pathlib import Path
from typing import Any

from wingman.audit.file import FileSink
from wingman.capability.keyring import new_ring
from wingman.capability.tokens import token_sha256
from wingman.client.api import build_grant
from wingman.dev.cluster import LocalCluster
from wingman.kube import APPROVALS, GRANTS, JOBS, SECRETS, Kube
from wingman.operator import manifests
from wingman.operator.context import Context
from wingman.operator.handlers import grants
from wingman.operator.metrics import Metrics
from wingman.settings import OperatorSettings

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


def _ended_job(kube: Kube, grant: dict[str, Any], settings: OperatorSettings
               ) -> dict[str, Any]:
    """The grant's gateway Job as the operator makes it, ended by its deadline (the Job
    controller's DeadlineExceeded; this cluster has no node, so no pod ever started)."""
    body = manifests.gateway_job(grant, settings, 30, job=f"{grant['metadata']['name']}-gw")
    body["spec"]["activeDeadlineSeconds"] = 1
    job = kube.create(JOBS, grant["metadata"]["namespace"], body)
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    while grants._job_finished(job) is None:
        assert dt.datetime.now(dt.UTC) < deadline, f"the Job did not end: {job.get('status')}"
        time.sleep(0.5)
        job = kube.get(JOBS, job["metadata"]["namespace"], job["metadata"]["name"])
    return job


def test_a_pending_copy_of_a_grant_issued_on_its_claim_whose_job_ended_is_failed_at_once(
        cluster: LocalCluster, crds: Path, namespace: str, tmp_path: Path) -> None:
    """The grant's token was issued on its claim and stored, its gateway Job ended (the Job
    event seen), and the grant is reconciled from a copy this process judges Pending (the
    claim on its approval not seen yet, as after a restart). The fresh read of the approval
    shows it TokenIssued: its Job's end is settled then, and the grant Failed at once, saying
    the command did not run. The end seen before the Pending copy's reconcile decides nothing
    (kept, it was taken as settled already: the token adopted for the ended Job, the grant
    left TokenIssued until its token expired)."""
    settings = OperatorSettings.from_env({"WINGMAN_NAMESPACE": namespace})
    kube = Kube(cluster.api_client())
    audit = tmp_path / "audit.jsonl"
    none: Any = None
    ctx = Context(settings, kube, new_ring(), FileSink(audit), none, none, Metrics())
    ctx.reconcilers["grant"] = grants.Grants()

    body = build_grant(request_name="req", namespace=namespace, command="kubectl get pods",
                       requester="someone")
    body["metadata"] = {"name": "g"}
    grant = kube.create(GRANTS, namespace, body)
    job = _ended_job(kube, grant, settings)
    secret_name = manifests.job_token_secret(job)
    assert secret_name is not None
    kube.create(SECRETS, namespace, manifests.token_secret(
        grant, secret_name, "the-token", int(dt.datetime.fromisoformat(EXPIRES).timestamp()),
        job["metadata"]["uid"], settings))
    kube.create(APPROVALS, namespace, {
        "apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
        "metadata": {"name": "req"},
        "spec": {"requester": "someone", "environment": settings.policy.name,
                 "instruction": "list the pods", "commands": ["kubectl get pods"]}})
    kube.patch(APPROVALS, namespace, "req", {"status": {"grants": [{
        "command": "kubectl get pods", "grant": "g", "grantUID": grant["metadata"]["uid"],
        "grantedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **_token("g"), "tokenSHA256": token_sha256("the-token"),
        "tokenSecretName": secret_name}]}}, subresource="status")
    entry = ctx.tracker.observe_grant(grant, dt.datetime.now(dt.UTC))
    assert entry.phase == "Pending"  # its claim not seen
    grants.job_ended(ctx, entry, ("Failed", "DeadlineExceeded"))  # the Job event

    async def reconciled() -> dict[str, Any]:
        await ctx.run("grant", dict(grant))  # and what the operator does next on its own
        for _ in range(50):
            status: dict[str, Any] = kube.get(GRANTS, namespace, "g").get("status") or {}
            if status.get("phase") == "Failed":
                return status
            await asyncio.sleep(0.1)
        return status

    status = asyncio.run(reconciled())
    assert (status.get("phase"), status.get("reason")) == ("Failed", "DeadlineExceeded"), status
    assert "so the command did not run" in status["message"], status
    assert [r["event"] for r in _records(audit, "g")] == ["GrantFailed"]

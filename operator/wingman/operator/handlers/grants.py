"""ExecutionGrant handlers: authorize, then Job (suspended) → the approval records the grant →
token → Secret → status → release.

Every step is create-if-absent on a deterministic name, so the flow can be killed at any
point and run again: the restarted operator adopts the Job and the Secret it finds and never
makes a second Job or a second usable token (a token minted but never stored in the Secret is
never seen by anyone). The Job is released (unsuspended) only after the grant's status says
TokenIssued, so the gateway never races the operator's own status write.

The gateway writes the result into the grant's status; the Job watcher fills in a failure the
gateway could not report (crash, deadline) and the token Secret is deleted as soon as the grant
is final.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import signal
from typing import Any

import kopf

from wingman import GROUP, VERSION, approvals, conditions, manifests
from wingman import grants as logic
from wingman.approvals import parse_time
from wingman.handlers import Context, subject_of
from wingman.kube import APPROVALS, GRANTS, JOBS, SECRETS, ApiError, create_or_adopt
from wingman.tokens import mint, token_sha256

log = logging.getLogger("wingman.operator.grants")
MINTED_ANNOTATION = "wingman.dev/token-sha256"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


STEPS = ("job-created", "command-claimed", "token-minted", "secret-created", "status-written",
         "job-released")


def crashpoint(ctx: Context, step: str) -> None:
    """Fault injection for the crash-safety tests (``WINGMAN_FAULT_KILL_AT``); a no-op else."""
    if ctx.settings.fault_kill_at == step:
        log.warning("fault injection: SIGKILL after step", extra={"step": step})
        os.kill(os.getpid(), signal.SIGKILL)


async def write_status(ctx: Context, grant: Any, status: dict[str, Any]) -> dict[str, Any]:
    """Write status only over the version that was read (the gateway writes status too)."""
    meta = grant["metadata"]
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
    try:
        updated: dict[str, Any] = await ctx.call(ctx.kube.patch, GRANTS, meta["namespace"],
                                                 meta["name"], body, subresource="status")
    except ApiError as exc:
        if exc.conflict:
            raise kopf.TemporaryError("the grant changed since it was read; re-reading",
                                      delay=1) from None
        raise
    return updated


async def claim_command(ctx: Context, grant: Any, approval: Any,
                        entries: list[dict[str, Any]]) -> bool:
    """Record in the approval that its command now belongs to this grant, over the version read
    (of two grants racing for a command exactly one write lands; the loser re-reads and is
    denied). False when the API server did not keep the record (an outdated CRD)."""
    meta = approval["metadata"]
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": {"grants": entries}}
    try:
        updated = await ctx.call(ctx.kube.patch, APPROVALS, meta["namespace"], meta["name"],
                                 body, subresource="status")
    except ApiError as exc:
        if exc.conflict:
            raise kopf.TemporaryError("the approval changed since it was read; re-checking",
                                      delay=1) from None
        raise
    holder = approvals.granted_to(updated, str(grant["spec"]["command"]))
    if holder is None or holder.get("grantUID") != grant["metadata"]["uid"]:
        return False
    await ctx.audit("ApprovalCommandGranted", subject_of(approval), {
        "command": grant["spec"]["command"], "grant": grant["metadata"]["name"],
        "grantUID": grant["metadata"]["uid"]})
    return True


def owned_by(obj: Any, grant: Any) -> bool:
    uid = grant["metadata"]["uid"]
    return obj is not None and any(
        o.get("uid") == uid for o in obj.get("metadata", {}).get("ownerReferences") or [])


async def deny(ctx: Context, grant: Any, reason: str, message: str, *,
               cleanup: bool = True) -> None:
    """Denied, audited, counted; what was already made for the grant is removed."""
    auth = logic.Authorization(False, reason, message)
    record = await ctx.audit("GrantDenied", subject_of(grant),
                             {"reason": reason, "message": message[:500]})
    status = logic.denied_status(grant, auth, _now())
    status["auditRecordHash"] = f"sha256:{record.hash}"
    await write_status(ctx, grant, status)
    if cleanup:
        await remove_artifacts(ctx, grant, job=True)
    kopf.event(grant, type="Warning", reason=reason, message=message[:1000])
    ctx.metrics.denial(ctx.env, "operator", reason)
    ctx.metrics.grants.labels(environment=ctx.env, outcome="Denied").inc()
    ctx.counted.add(grant["metadata"]["uid"])
    log.warning("grant denied", extra={"grant": grant["metadata"]["name"], "reason": reason})


async def remove_artifacts(ctx: Context, grant: Any, *, job: bool) -> bool:
    """Delete the grant's token Secret (and Job): only objects this grant owns, by uid."""
    meta = grant["metadata"]
    targets = [(SECRETS, manifests.secret_name(meta["name"]))]
    if job:
        targets.append((JOBS, manifests.grant_job_name(grant)))
    removed = False
    for res, name in targets:
        obj = await ctx.call(ctx.kube.get_or_none, res, meta["namespace"], name)
        if owned_by(obj, grant):
            assert obj is not None
            removed |= await ctx.call(ctx.kube.delete, res, meta["namespace"], name,
                                      uid=obj["metadata"]["uid"])
    return removed


def _secret_token(secret: dict[str, Any]) -> str:
    return base64.b64decode((secret.get("data") or {}).get("token", "")).decode()


async def issue(ctx: Context, grant: Any) -> None:
    """The whole flow for a grant that is not final yet (idempotent)."""
    meta = grant["metadata"]
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    now = _now()
    phase = logic.phase(grant)
    if phase == "Pending":
        ref = str(grant["spec"]["approvalRef"]["name"])
        approval = await ctx.call(ctx.kube.get_or_none, APPROVALS, ns, ref)
        auth = logic.authorize(grant, approval, ctx.settings.policy, ctx.allowlist, now)
        if not auth.ok:
            await deny(ctx, grant, auth.reason, auth.message)
            return
        assert approval is not None
        ttl = auth.ttl_seconds
    elif phase == "TokenIssued":
        approval, ttl = None, 0
    else:
        return  # Running or final: the gateway and the Job watcher take it from here

    job_body = manifests.gateway_job(dict(grant), ctx.settings, max(ttl, 30))
    # the name the grant was issued with (earlier releases let long Job names reach 63)
    job_body["metadata"]["name"] = manifests.grant_job_name(grant)
    job, _ = await ctx.call(create_or_adopt, ctx.kube, JOBS, ns, job_body)
    crashpoint(ctx, "job-created")
    if not owned_by(job, grant):
        await deny(ctx, grant, "JobConflict",
                   f"Job {job['metadata']['name']} exists and does not belong to this grant; "
                   "use another grant name", cleanup=False)
        return
    job_uid = job["metadata"]["uid"]

    secret_name = manifests.secret_name(name)
    secret = await ctx.call(ctx.kube.get_or_none, SECRETS, ns, secret_name)
    if secret is not None and not owned_by(secret, grant):
        await deny(ctx, grant, "SecretConflict",
                   f"Secret {secret_name} exists and does not belong to this grant; use another "
                   "grant name", cleanup=False)
        return
    if approval is not None:  # the last check before a token exists: the command is used up
        taken = logic.claim(grant, approval, now)
        if taken.denial is not None:
            await deny(ctx, grant, taken.denial.reason, taken.denial.message)
            return
        if taken.grants is not None:
            if not await claim_command(ctx, grant, approval, taken.grants):
                await deny(ctx, grant, "ApprovalSchemaOutdated",
                           "the API server did not keep status.grants on the ApprovalRequest: "
                           "its CRD is older than this operator; apply the release's CRDs "
                           "(kubectl apply -f crds/) and create a new grant")
                return
            crashpoint(ctx, "command-claimed")
    minted = (job["metadata"].get("annotations") or {}).get(MINTED_ANNOTATION)
    if secret is None:
        if approval is None or minted:  # the Secret is gone after a mint: never mint again
            await finish(ctx, grant, "Failed", "TokenMissing",
                         "the token Secret disappeared before the gateway ran; create a new "
                         "grant")
            return
        token, claims = mint(
            ctx.ring.signer, issuer=ctx.settings.issuer, audience=ctx.env,
            subject=str(approval["spec"]["requester"]), namespace=ns,
            approval_name=approval["metadata"]["name"], approval_uid=approval["metadata"]["uid"],
            grant_name=name, grant_uid=uid, command=str(grant["spec"]["command"]),
            job_uid=job_uid, ttl_seconds=ttl, now=int(now.timestamp()))
        await ctx.audit("TokenMinted", subject_of(grant), {
            "tokenSHA256": token_sha256(token), "jti": claims.jti, "kid": ctx.ring.active,
            "expires": claims.exp, "jobUID": job_uid, "approvalUID": approval["metadata"]["uid"],
            "command": grant["spec"]["command"]})
        crashpoint(ctx, "token-minted")
        secret, created = await ctx.call(
            create_or_adopt, ctx.kube, SECRETS, ns,
            manifests.token_secret(dict(grant), token, claims.exp, job_uid))
        if created:
            ctx.metrics.tokens_minted.labels(environment=ctx.env).inc()
        del token
        crashpoint(ctx, "secret-created")
    assert secret is not None
    if not owned_by(secret, grant):
        await deny(ctx, grant, "SecretConflict",
                   f"Secret {secret_name} exists and does not belong to this grant; use another "
                   "grant name", cleanup=False)
        return
    annotations = secret["metadata"].get("annotations") or {}
    if annotations.get(manifests.JOB_UID_ANNOTATION) != job_uid:
        await deny(ctx, grant, "TokenBindingMismatch",
                   "the token Secret is bound to another Job than the grant's; create a new grant")
        return
    token_hash = token_sha256(_secret_token(secret))
    expires = int(annotations.get(manifests.EXPIRES_ANNOTATION, "0"))
    if minted != token_hash:
        # on the Job, where only the operator writes: whatever later happens to the grant's
        # status or the Secret, this grant never gets a second token
        await ctx.call(ctx.kube.patch, JOBS, ns, job["metadata"]["name"],
                       {"metadata": {"annotations": {MINTED_ANNOTATION: token_hash}}})

    if phase == "Pending":
        gen = int(meta.get("generation") or 1)
        conds = conditions.set_condition(grant.get("status", {}).get("conditions") or [],
                                         "Authorized", True, "Authorized",
                                         "approved command, inside the allowlist", gen, now)
        conds = conditions.set_condition(conds, "TokenIssued", True, "TokenIssued",
                                         f"single-use token in Secret {secret_name}", gen, now)
        record = await ctx.audit("GrantAuthorized", subject_of(grant), {
            "tokenSHA256": token_hash, "job": job["metadata"]["name"], "jobUID": job_uid})
        await write_status(ctx, grant, {
            "phase": "TokenIssued", "reason": "TokenIssued",
            "message": f"gateway Job {job['metadata']['name']} released",
            "tokenSecretName": secret_name, "tokenSHA256": token_hash,
            "tokenExpirationTime": conditions.rfc3339(dt.datetime.fromtimestamp(expires, dt.UTC)),
            "jobName": job["metadata"]["name"], "conditions": conds,
            "observedGeneration": gen, "auditRecordHash": f"sha256:{record.hash}"})
        ctx.metrics.grants.labels(environment=ctx.env, outcome="TokenIssued").inc()
        crashpoint(ctx, "status-written")
        kopf.event(grant, type="Normal", reason="TokenIssued",
                   message=f"token {token_hash[:19]}… issued; gateway Job released")

    if job.get("spec", {}).get("suspend"):
        await ctx.call(ctx.kube.patch, JOBS, ns, job["metadata"]["name"],
                       {"spec": {"suspend": False}})
        crashpoint(ctx, "job-released")
        created_at = parse_time(meta.get("creationTimestamp"))
        if created_at is not None:
            ctx.metrics.grant_latency.labels(environment=ctx.env).observe(
                max(0.0, (_now() - created_at).total_seconds()))


async def finish(ctx: Context, grant: Any, phase: str, reason: str, message: str) -> None:
    """A final phase the gateway could not write itself (crash, deadline, expiry)."""
    now = _now()
    gen = int(grant["metadata"].get("generation") or 1)
    record = await ctx.audit(f"Grant{phase}", subject_of(grant), {"reason": reason,
                                                                  "message": message[:500]})
    conds = conditions.set_condition(grant.get("status", {}).get("conditions") or [],
                                     "Succeeded", False, reason, message, gen, now)
    await write_status(ctx, grant, {"phase": phase, "reason": reason, "message": message,
                                    "completionTime": conditions.rfc3339(now),
                                    "conditions": conds, "observedGeneration": gen,
                                    "auditRecordHash": f"sha256:{record.hash}"})
    kopf.event(grant, type="Warning", reason=reason, message=message[:1000])


def _job_finished(job: Any) -> tuple[str, str] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
            return str(c["type"]), str(c.get("reason") or "")
    return None


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    res = (GROUP, VERSION, "executiongrants")

    @kopf.on.resume(*res, registry=registry)
    @kopf.on.create(*res, registry=registry)
    async def grant_created(body: kopf.Body, **_: Any) -> None:
        try:
            fresh = await ctx.call(ctx.kube.get, GRANTS, body["metadata"]["namespace"],
                                   body["metadata"]["name"])
            if logic.is_terminal(fresh):
                # e.g. a stale replica's Secret, or what a denial killed mid-way left behind
                # (a Denied grant's Job was never released)
                await remove_artifacts(ctx, fresh, job=logic.phase(fresh) == "Denied")
            else:
                await issue(ctx, fresh)
        except (kopf.TemporaryError, kopf.PermanentError):
            raise
        except ApiError as exc:
            if exc.not_found:
                return
            ctx.metrics.reconcile_errors.labels(resource="executiongrants").inc()
            raise kopf.TemporaryError(str(exc), delay=5) from None
        except Exception:
            ctx.metrics.reconcile_errors.labels(resource="executiongrants").inc()
            raise

    @kopf.on.event(*res, registry=registry)
    async def grant_observed(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        if event.get("type") == "DELETED":
            ctx.counted.discard(uid)
            ctx.counted.discard(uid + "/replay")
            return
        status = obj.get("status") or {}
        if conditions.is_true(status.get("conditions"), "ReplayDetected") \
                and uid + "/replay" not in ctx.counted:
            ctx.counted.add(uid + "/replay")
            ctx.metrics.denial(ctx.env, "gateway", "ReplayRejected")
            kopf.event(kopf.Body(obj), type="Warning", reason="ReplayRejected",
                       message="a second gateway run presented this grant's token; refused")
        if logic.is_terminal(obj):
            if uid not in ctx.counted:
                ctx.counted.add(uid)
                done = parse_time(status.get("completionTime"))
                if done is None or done >= ctx.started:
                    phase = logic.phase(obj)
                    ctx.metrics.grants.labels(environment=ctx.env, outcome=phase).inc()
                    if phase == "Failed" and status.get("reason") not in (None, "CommandFailed"):
                        ctx.metrics.denial(ctx.env, "gateway", str(status.get("reason")))
            # a Denied grant's Job was never released: remove it too (a denial killed between
            # its status write and its clean-up is finished here, at the latest on restart)
            if await remove_artifacts(ctx, obj, job=logic.phase(obj) == "Denied"):
                log.info("grant artifacts deleted", extra={"grant": meta["name"]})

    @kopf.on.event("batch", "v1", "jobs", labels={manifests.ROLE_LABEL: "gateway"},
                   registry=registry)
    async def job_observed(event: kopf.RawEvent, **_: Any) -> None:
        job = event.get("object") or {}
        if event.get("type") == "DELETED":
            return
        finished = _job_finished(job)
        grant_name = (job.get("metadata", {}).get("labels") or {}).get(manifests.GRANT_LABEL)
        if finished is None or not grant_name:
            return
        ns = job["metadata"]["namespace"]
        grant = await ctx.call(ctx.kube.get_or_none, GRANTS, ns, grant_name)
        if grant is None or logic.is_terminal(grant) or not owned_by(job, grant):
            return
        kind, reason = finished
        if kind == "Complete":
            await finish(ctx, grant, "Failed", "GatewayNoResult",
                         "the gateway Job completed without recording a result; see its pod log")
        else:
            why = "DeadlineExceeded" if reason == "DeadlineExceeded" else "GatewayFailed"
            await finish(ctx, grant, "Failed", why,
                         f"the gateway Job failed ({reason or 'no reason'}) before recording "
                         "a result; see its pod log")

    def not_terminal(body: kopf.Body, **_: Any) -> bool:
        return not logic.is_terminal(body)

    @kopf.timer(*res, interval=ctx.settings.expiry_interval_seconds, when=not_terminal,
                registry=registry)
    async def grant_expiry(body: kopf.Body, **_: Any) -> None:
        status = body.get("status") or {}
        if status.get("phase") != "TokenIssued":
            return
        expires = parse_time(status.get("tokenExpirationTime"))
        leeway = dt.timedelta(seconds=ctx.settings.leeway_seconds)
        if expires is None or _now() < expires + leeway:
            return
        job = await ctx.call(ctx.kube.get_or_none, JOBS, body["metadata"]["namespace"],
                             manifests.grant_job_name(body))
        if job is not None and ((job.get("status") or {}).get("active") or 0) > 0:
            return  # a gateway pod is running; it will refuse the expired token itself
        fresh = await ctx.call(ctx.kube.get, GRANTS, body["metadata"]["namespace"],
                               body["metadata"]["name"])
        if logic.phase(fresh) != "TokenIssued":
            return
        await finish(ctx, fresh, "Expired", "TokenExpired",
                     "the token expired before the gateway ran; create a new grant")
        # only the Secret: a gateway that already started is bounded by the Job's deadline
        await remove_artifacts(ctx, fresh, job=False)


__all__ = ["STEPS", "claim_command", "crashpoint", "deny", "finish", "issue", "register",
           "remove_artifacts"]

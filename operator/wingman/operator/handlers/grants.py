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

from wingman import GROUP, VERSION, conditions
from wingman.capability.tokens import mint as mint_token
from wingman.capability.tokens import token_sha256
from wingman.kube import APPROVALS, GRANTS, JOBS, SECRETS, ApiError, create_or_adopt
from wingman.model import approvals as rules
from wingman.model import grants as grant_rules
from wingman.model import names
from wingman.operator import grants as logic
from wingman.operator import manifests
from wingman.operator.context import Context, subject_of

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
    undoes = logic.undoes(grant, approval)
    holder = rules.granted_to(updated, str(grant["spec"]["command"]), rollback_of=undoes)
    if holder is None or holder.get("grantUID") != grant["metadata"]["uid"]:
        return False
    await ctx.audit("ApprovalCommandGranted", subject_of(approval), {
        "command": grant["spec"]["command"], "grant": grant["metadata"]["name"],
        "grantUID": grant["metadata"]["uid"],
        **({"rollbackOf": undoes} if undoes is not None else {})})
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
    targets = [(SECRETS, names.secret_name(meta["name"]))]
    if job:
        targets.append((JOBS, names.grant_job_name(grant)))
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


class _Stop(Exception):  # control flow inside issue(), never escapes it
    """A step ended the grant's flow (denied, failed) after writing why."""


async def issue(ctx: Context, grant: Any) -> None:
    """The whole flow for a grant that is not final yet, as named steps (idempotent: a re-run
    after a crash at any point continues from what it finds)."""
    phase = grant_rules.phase(grant)
    if phase not in ("Pending", "TokenIssued"):
        return  # Running or final: the gateway and the Job watcher take it from here
    now = _now()
    try:
        approval, ttl = (await authorize(ctx, grant, now) if phase == "Pending"
                         else (None, 0))
        job = await create_job(ctx, grant, ttl)
        secret = await find_secret(ctx, grant)
        if approval is not None:
            await claim(ctx, grant, approval, now)
        if secret is None:
            secret = await mint(ctx, grant, approval, job, ttl, now)
        token_hash, expires = await bind(ctx, grant, job, secret)
        if phase == "Pending":
            await record_issued(ctx, grant, job, token_hash, expires, now)
        await release(ctx, grant, job)
    except _Stop:
        return


async def authorize(ctx: Context, grant: Any, now: dt.datetime) -> tuple[Any, int]:
    """Re-check everything the grant depends on; deny with the first failure."""
    meta = grant["metadata"]
    ref = str(grant["spec"]["approvalRef"]["name"])
    approval = await ctx.call(ctx.kube.get_or_none, APPROVALS, meta["namespace"], ref)
    forward = None
    if logic.rollback_of(grant):  # a rollback: the grant that ran the command it undoes
        forward = await ctx.call(ctx.kube.get_or_none, GRANTS, meta["namespace"],
                                 logic.rollback_of(grant))
    auth = logic.authorize(grant, approval, ctx.settings.policy, ctx.allowlist, now,
                           forward=forward)
    if not auth.ok:
        await deny(ctx, grant, auth.reason, auth.message)
        raise _Stop
    assert approval is not None
    return approval, auth.ttl_seconds


async def create_job(ctx: Context, grant: Any, ttl: int) -> dict[str, Any]:
    """The suspended gateway Job (created, or adopted when it is this grant's)."""
    job_body = manifests.gateway_job(dict(grant), ctx.settings, max(ttl, 30))
    # the name the grant was issued with (earlier releases let long Job names reach 63)
    job_body["metadata"]["name"] = names.grant_job_name(grant)
    job, _ = await ctx.call(create_or_adopt, ctx.kube, JOBS, grant["metadata"]["namespace"],
                            job_body)
    crashpoint(ctx, "job-created")
    if not owned_by(job, grant):
        await deny(ctx, grant, "JobConflict",
                   f"Job {job['metadata']['name']} exists and does not belong to this grant; "
                   "use another grant name", cleanup=False)
        raise _Stop
    return dict(job)


async def _secret_conflict(ctx: Context, grant: Any) -> None:
    secret_name = names.secret_name(grant["metadata"]["name"])
    await deny(ctx, grant, "SecretConflict",
               f"Secret {secret_name} exists and does not belong to this grant; use another "
               "grant name", cleanup=False)
    raise _Stop


async def find_secret(ctx: Context, grant: Any) -> dict[str, Any] | None:
    """The grant's token Secret if it exists already (it must be this grant's)."""
    secret = await ctx.call(ctx.kube.get_or_none, SECRETS, grant["metadata"]["namespace"],
                            names.secret_name(grant["metadata"]["name"]))
    if secret is not None and not owned_by(secret, grant):
        await _secret_conflict(ctx, grant)
    return secret


async def claim(ctx: Context, grant: Any, approval: Any, now: dt.datetime) -> None:
    """The last check before a token exists: the approved command is used up by this grant."""
    taken = logic.claim(grant, approval, now, undoes=logic.undoes(grant, approval))
    if taken.denial is not None:
        await deny(ctx, grant, taken.denial.reason, taken.denial.message)
        raise _Stop
    if taken.grants is None:
        return  # already recorded for this grant (an operator restarted mid-way)
    if not await claim_command(ctx, grant, approval, taken.grants):
        await deny(ctx, grant, "ApprovalSchemaOutdated",
                   "the API server did not keep status.grants on the ApprovalRequest: "
                   "its CRD is older than this operator; apply the release's CRDs "
                   "(kubectl apply -f crds/) and create a new grant")
        raise _Stop
    crashpoint(ctx, "command-claimed")


async def mint(ctx: Context, grant: Any, approval: Any, job: dict[str, Any], ttl: int,
               now: dt.datetime) -> dict[str, Any]:
    """Mint the token, bound to the Job's UID, into the grant's Secret; never a second time."""
    meta = grant["metadata"]
    minted = (job["metadata"].get("annotations") or {}).get(MINTED_ANNOTATION)
    if approval is None or minted:  # the Secret is gone after a mint: never mint again
        await finish(ctx, grant, "Failed", "TokenMissing",
                     "the token Secret disappeared before the gateway ran; create a new grant")
        raise _Stop
    job_uid = job["metadata"]["uid"]
    token, claims = mint_token(
        ctx.ring.signer, issuer=ctx.settings.issuer, audience=ctx.env,
        subject=str(approval["spec"]["requester"]), namespace=meta["namespace"],
        approval_name=approval["metadata"]["name"], approval_uid=approval["metadata"]["uid"],
        grant_name=meta["name"], grant_uid=meta["uid"], command=str(grant["spec"]["command"]),
        job_uid=job_uid, ttl_seconds=ttl, now=int(now.timestamp()))
    await ctx.audit("TokenMinted", subject_of(grant), {
        "tokenSHA256": token_sha256(token), "jti": claims.jti, "kid": ctx.ring.active,
        "expires": claims.exp, "jobUID": job_uid, "approvalUID": approval["metadata"]["uid"],
        "command": grant["spec"]["command"]})
    crashpoint(ctx, "token-minted")
    secret, created = await ctx.call(
        create_or_adopt, ctx.kube, SECRETS, meta["namespace"],
        manifests.token_secret(dict(grant), token, claims.exp, job_uid,
                               ctx.settings))
    if created:
        ctx.metrics.tokens_minted.labels(environment=ctx.env).inc()
    del token
    crashpoint(ctx, "secret-created")
    if not owned_by(secret, grant):
        await _secret_conflict(ctx, grant)
    return dict(secret)


async def bind(ctx: Context, grant: Any, job: dict[str, Any], secret: dict[str, Any]
               ) -> tuple[str, int]:
    """Check the Secret is bound to this Job and record the token's hash on the Job, where only
    the operator writes: whatever later happens to the grant's status or the Secret, this grant
    never gets a second token. Returns (token hash, expiry)."""
    annotations = secret["metadata"].get("annotations") or {}
    if annotations.get(names.JOB_UID_ANNOTATION) != job["metadata"]["uid"]:
        await deny(ctx, grant, "TokenBindingMismatch",
                   "the token Secret is bound to another Job than the grant's; create a new grant")
        raise _Stop
    token_hash = token_sha256(_secret_token(secret))
    if (job["metadata"].get("annotations") or {}).get(MINTED_ANNOTATION) != token_hash:
        await ctx.call(ctx.kube.patch, JOBS, grant["metadata"]["namespace"],
                       job["metadata"]["name"],
                       {"metadata": {"annotations": {MINTED_ANNOTATION: token_hash}}})
    return token_hash, int(annotations.get(names.EXPIRES_ANNOTATION, "0"))


async def record_issued(ctx: Context, grant: Any, job: dict[str, Any], token_hash: str,
                        expires: int, now: dt.datetime) -> None:
    """Audit ``GrantAuthorized`` and write ``TokenIssued`` (before the Job is released, so the
    gateway never races this write)."""
    meta = grant["metadata"]
    secret_name = names.secret_name(meta["name"])
    gen = int(meta.get("generation") or 1)
    conds = conditions.set_condition(grant.get("status", {}).get("conditions") or [],
                                     "Authorized", True, "Authorized",
                                     "approved command, inside the allowlist", gen, now)
    conds = conditions.set_condition(conds, "TokenIssued", True, "TokenIssued",
                                     f"single-use token in Secret {secret_name}", gen, now)
    conds = conditions.grant_ready(conds, "TokenIssued", "token issued; waiting for the gateway "
                                   "to run the command", gen, now)
    record = await ctx.audit("GrantAuthorized", subject_of(grant), {
        "tokenSHA256": token_hash, "job": job["metadata"]["name"],
        "jobUID": job["metadata"]["uid"]})
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


async def release(ctx: Context, grant: Any, job: dict[str, Any]) -> None:
    """Unsuspend the Job: the Job controller starts the gateway pod."""
    if not job.get("spec", {}).get("suspend"):
        return
    await ctx.call(ctx.kube.patch, JOBS, grant["metadata"]["namespace"], job["metadata"]["name"],
                   {"spec": {"suspend": False}})
    crashpoint(ctx, "job-released")
    created_at = rules.parse_time(grant["metadata"].get("creationTimestamp"))
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
    conds = conditions.grant_ready(conds, phase, message, gen, now)
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
            if grant_rules.is_terminal(fresh):
                # e.g. a stale replica's Secret, or what a denial killed mid-way left behind
                # (a Denied grant's Job was never released)
                await remove_artifacts(ctx, fresh, job=grant_rules.phase(fresh) == "Denied")
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
        if grant_rules.is_terminal(obj):
            if uid not in ctx.counted:
                ctx.counted.add(uid)
                done = rules.parse_time(status.get("completionTime"))
                if done is None or done >= ctx.started:
                    phase = grant_rules.phase(obj)
                    ctx.metrics.grants.labels(environment=ctx.env, outcome=phase).inc()
                    if phase == "Failed" and status.get("reason") not in (None, "CommandFailed"):
                        ctx.metrics.denial(ctx.env, "gateway", str(status.get("reason")))
            # a Denied grant's Job was never released: remove it too (a denial killed between
            # its status write and its clean-up is finished here, at the latest on restart)
            if await remove_artifacts(ctx, obj, job=grant_rules.phase(obj) == "Denied"):
                log.info("grant artifacts deleted", extra={"grant": meta["name"]})

    @kopf.on.event("batch", "v1", "jobs", labels={names.ROLE_LABEL: "gateway"},
                   registry=registry)
    async def job_observed(event: kopf.RawEvent, **_: Any) -> None:
        job = event.get("object") or {}
        if event.get("type") == "DELETED":
            return
        finished = _job_finished(job)
        grant_name = (job.get("metadata", {}).get("labels") or {}).get(names.GRANT_LABEL)
        if finished is None or not grant_name:
            return
        ns = job["metadata"]["namespace"]
        grant = await ctx.call(ctx.kube.get_or_none, GRANTS, ns, grant_name)
        if grant is None or grant_rules.is_terminal(grant) or not owned_by(job, grant):
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
        return not grant_rules.is_terminal(body)

    @kopf.timer(*res, interval=ctx.settings.expiry_interval_seconds, when=not_terminal,
                registry=registry)
    async def grant_expiry(body: kopf.Body, **_: Any) -> None:
        status = body.get("status") or {}
        if status.get("phase") != "TokenIssued":
            return
        expires = rules.parse_time(status.get("tokenExpirationTime"))
        leeway = dt.timedelta(seconds=ctx.settings.leeway_seconds)
        if expires is None or _now() < expires + leeway:
            return
        job = await ctx.call(ctx.kube.get_or_none, JOBS, body["metadata"]["namespace"],
                             names.grant_job_name(body))
        if job is not None and ((job.get("status") or {}).get("active") or 0) > 0:
            return  # a gateway pod is running; it will refuse the expired token itself
        fresh = await ctx.call(ctx.kube.get, GRANTS, body["metadata"]["namespace"],
                               body["metadata"]["name"])
        if grant_rules.phase(fresh) != "TokenIssued":
            return
        await finish(ctx, fresh, "Expired", "TokenExpired",
                     "the token expired before the gateway ran; create a new grant")
        # only the Secret: a gateway that already started is bounded by the Job's deadline
        await remove_artifacts(ctx, fresh, job=False)


__all__ = ["STEPS", "authorize", "bind", "claim", "claim_command", "crashpoint", "create_job",
           "deny", "find_secret", "finish", "issue", "mint", "record_issued", "register",
           "release", "remove_artifacts"]

"""ExecutionGrant: authorize, then Job → the approval's claim records the grant and its token →
audit → Secret; afterwards the Job watcher and clean-up — one level-triggered reconcile.

The gateway Job is created runnable, but its pod mounts the token Secret, which does not exist
yet: the kubelet starts no container before the Secret is in place, so creating the Secret is
what releases the gateway. The claim is the issue: the approval's ``status.grants`` entry that
claims the command for the grant records the token (``tokenSHA256``, ``tokenExpirationTime``,
``jobName``, ``tokenSecretName``, as a grant's status names them), then ``ApprovalCommandGranted``,
``TokenMinted`` and ``GrantAuthorized`` go into the audit trail (one unit), then the Secret is
stored; nothing is written to the grant, whose stored phase stays ``Pending`` until the gateway
writes ``Running``. The operator and the gateway judge a grant by
``wingman.model.grants.view``: a Pending grant whose claim records its token is
``TokenIssued``. Only grants whose Job name admission cannot derive from their name
(``names.derived_job``: names over 54 characters, or ending in ``-`` and nine hex digits, whose
Job's name carries a digest), are issued as before: the claim without a token, then the
grant's ``TokenIssued`` status written at the same time as the Secret (``side_by_side``; the
gateway spends its token only once the grant's phase has left Pending, and both are written
after ``TokenMinted`` and ``GrantAuthorized`` are in the audit trail).

The token is a pure function of what the flow has recorded where only the operator writes: the
signing key, the approval, the grant, the Job's UID, and the claim on the approval (its
``grantedAt`` is the token's ``iat``); its ``jti`` is derived from the grant's UID with the signing
key (``tokens.grant_jti``). Minting it again gives the same token byte for byte, so a token minted
but not yet stored (a run cut short after the claim, or the status, landed but before the Secret
did) is stored again, its records written again first when the claim issued it, and only when it
hashes to the ``tokenSHA256`` recorded for it (the grant's view's): made with each key
still in the ring, as the status does not say which one signed it (a key pruned since, or another
issuer, fails the grant, closed; the lifetime is taken from the status). Whatever happens to
the status, the Secret or the Job, every token a grant gets under one signing key burns the one
marker of its ``jti``: one execution per grant. A rotated key gives another ``jti``, so burn
markers do not span a key rotation (nor earlier releases' random ``jti``): what does is the
grant's ``status.tokenSHA256``, which the CRD lets nobody change or remove once written. A grant
whose status was reset to Pending after a token was issued gets that very token again or none
(``only_the_recorded_token``; made with each key still in the ring, as a lost one is), so neither
a rotated key nor a new Job gives it a second token with a marker of its own. Once a grant is
TokenIssued, every ending the operator writes is Failed or Expired, never Denied.

Every step is create-if-absent on a name known before the create, or a write guarded by the
resourceVersion that was read, so the flow can be killed at any point and run again: the
restarted operator adopts the Job and the Secret it finds and never makes another token, nor
a second Job beside the first (a Pending grant's Job that ended before its token was issued,
by its deadline or an evicted pod, is deleted and made again; one a token was stored for is
not). The token Secret's name is the one the Job's pod mounts: the Job's name and a random
part chosen with the Job (``names.token_secret_name``; admission lets a gateway pod bind
executor tokens only to such a name after its own Job), read back from the Job created or
adopted, so no Secret can be planted under it before the Job exists, and nothing needs reading
before the command is claimed. The grant's token Secrets are looked for (one list, by label)
only when an earlier run had claimed the command (a crash or a retry after the claim, a status
reset to Pending): a token of this grant in place for this Job is adopted when it is the one
the operator makes for it, and one stored for an earlier Job refuses the grant. A TokenIssued
grant's Secret is read by name. Jobs of earlier releases mount ``<grant>-token``, a
predictable name, which is read before the claim as those releases did, or
``<grant>-token-<random>``; their grants are still issued, but admission refuses their
gateways an executor token (bound to a Secret not named after the Job), so a kubectl command
of theirs fails closed, its token unspent (``ExecutorTokenUnavailable``).

Requests on the way to a released gateway: create the Job, claim the command on the approval
with the token, create the Secret (three; a long name's grant writes its status with the
Secret, four requests in three round trips). A claim made more than 30 s after the Job (the
operator or the API server away in between) first extends the Job's deadline
(``cover_deadline``, before the token is recorded anywhere), so a command the token lets the
gateway start late still ends before it. No Event: the claim (or the status), the audit trail
and the metrics carry a routine grant; Events are for what went wrong. The approval is the one
the watch delivered: the claim is written over its resourceVersion, so a stale copy costs a
retry, never a wrong token, and nothing is refused on its strength without reading it again.

The gateway writes the result into the grant's status; the Job watcher fills in a failure the
gateway could not report (crash, deadline), the shared sweep expires unused tokens, and the
token Secret is deleted as soon as the grant is final.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

import kopf

from wingman import GROUP, VERSION, conditions
from wingman.audit import AuditRecord
from wingman.capability.keys import SigningKey
from wingman.capability.tokens import grant_jti, jti_sha256, token_sha256
from wingman.capability.tokens import mint as mint_token
from wingman.errors import AuditUnavailable, ConfigError
from wingman.kube import APPROVALS, GRANTS, JOBS, SECRETS, ApiError, create_or_adopt
from wingman.model import approvals as rules
from wingman.model import grants as grant_rules
from wingman.model import names
from wingman.operator import approvals as approval_logic
from wingman.operator import grants as logic
from wingman.operator import manifests
from wingman.operator.context import Context, Retry, subject_of
from wingman.operator.handlers import housekeeping
from wingman.operator.manifests import owned_by
from wingman.operator.state import Entry, job_deadline

log = logging.getLogger("wingman.operator.grants")
MINTED_ANNOTATION = "wingman.dev/token-sha256"
"""Set on the Jobs of grants released by earlier releases (which created Jobs suspended): such a
Job's grant never gets a token minted again."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


#: The crash points of a token issued on its claim are ``job-created``, ``command-claimed`` (the
#: claim with the token landed, no record), ``token-minted`` (the records written),
#: ``secret-created`` and ``token-stored``; a long name's grant also passes ``status-written``
#: and those of ``IN_FLIGHT``.
#: Crash points inside the concurrent writes of the status and the Secret (``side_by_side``):
#: both writes are started together, as without fault injection, and the operator is killed
#: once the status has landed while the Secret's create is still held back, once the Secret has
#: landed while the status write is held back, or once both have landed, before the flow goes
#: on with either answer.
IN_FLIGHT = ("status-landed", "secret-landed", "both-landed")
STEPS = ("job-created", "command-claimed", "token-minted", "status-written", "secret-created",
         "token-stored", *IN_FLIGHT)


def crashpoint(ctx: Context, step: str) -> None:
    """Fault injection for the crash-safety tests (``WINGMAN_FAULT_KILL_AT``); a no-op else."""
    if ctx.settings.fault_kill_at == step:
        log.warning("fault injection: SIGKILL after step", extra={"step": step})
        os.kill(os.getpid(), signal.SIGKILL)


def _entry(ctx: Context, grant: Any) -> Entry | None:
    return ctx.tracker.grants.get(str(grant["metadata"]["uid"]))


async def write_status(ctx: Context, grant: Any, status: dict[str, Any]) -> dict[str, Any]:
    """Write status only over the version that was read (the gateway writes status too)."""
    meta = grant["metadata"]
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
    try:
        updated: dict[str, Any] = await ctx.write(ctx.kube.patch, GRANTS, meta["namespace"],
                                                  meta["name"], body, subresource="status")
    except ApiError as exc:
        if exc.conflict:
            raise Retry("the grant changed since it was read") from None
        raise
    ctx.tracker.observe_grant(updated, _now())
    return updated


async def read_approval(ctx: Context, name: str, namespace: str) -> Any:
    approval = await ctx.call(ctx.kube.get_or_none, APPROVALS, namespace, name)
    if approval is not None:
        from wingman.operator.handlers.approvals import observe

        observe(ctx, approval)
    return approval


async def claim_command(ctx: Context, grant: Any, approval: Any,
                        entries: list[dict[str, Any]], *, audit: bool = True) -> Any:
    """Record in the approval that its command now belongs to this grant, over the version read
    (of two grants racing for a command exactly one write lands; the loser re-reads and is
    denied), and audit it (unless not ``audit``: a claim that issues the token is audited with
    the token, ``store_claimed``). Returns the approval as written; None when the API server did
    not keep the record (an outdated CRD)."""
    meta = approval["metadata"]
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": {"grants": entries}}
    try:
        updated = await ctx.write(ctx.kube.patch, APPROVALS, meta["namespace"], meta["name"],
                                  body, subresource="status")
    except ApiError as exc:
        if exc.conflict:
            raise Retry("the approval changed since it was read; re-checking") from None
        raise
    from wingman.operator.handlers.approvals import observe

    observe(ctx, updated)
    undoes = logic.undoes(grant, approval)
    holder = rules.granted_to(updated, str(grant["spec"]["command"]), rollback_of=undoes)
    if holder is None or holder.get("grantUID") != grant["metadata"]["uid"]:
        return None
    if audit:
        await audit_claim(ctx, grant, approval)
    return updated


def claim_record(grant: Any, approval: Any) -> tuple[str, Any, dict[str, Any]]:
    """The ``ApprovalCommandGranted`` record of the grant's claim on ``approval``."""
    undoes = logic.undoes(grant, approval)
    return ("ApprovalCommandGranted", subject_of(approval), {
        "command": grant["spec"]["command"], "grant": grant["metadata"]["name"],
        "grantUID": grant["metadata"]["uid"],
        **({"rollbackOf": undoes} if undoes is not None else {})})


async def audit_claim(ctx: Context, grant: Any, approval: Any) -> None:
    await ctx.audit(*claim_record(grant, approval))


async def audit_issue(ctx: Context, grant: Any, approval: Any, job: dict[str, Any],
                      token_hash: str, minted: tuple[str, Any, dict[str, Any]]) -> None:
    """The records of a token issued on the claim, one unit, one wait: the claim
    (``ApprovalCommandGranted``), ``TokenMinted``, ``GrantAuthorized``; written before the
    token Secret is stored (again, at least once, by a run that finds the claim but no
    Secret)."""
    results = await ctx.audit_unit([claim_record(grant, approval), minted,
                                    authorized_record(grant, job, token_hash)])
    for result in results:
        if isinstance(result, AuditUnavailable):
            raise result
    crashpoint(ctx, "token-minted")


def authorized_record(grant: Any, job: dict[str, Any], token_hash: str
                      ) -> tuple[str, Any, dict[str, Any]]:
    """The ``GrantAuthorized`` record of ``grant``'s token (by its hash) for ``job``."""
    return ("GrantAuthorized", subject_of(grant), {
        "tokenSHA256": token_hash, "job": job["metadata"]["name"],
        "jobUID": job["metadata"]["uid"]})


def count_issued(ctx: Context) -> None:
    """A token stored for the first time: the grant is TokenIssued, a token was minted."""
    ctx.metrics.grants.labels(environment=ctx.env, outcome="TokenIssued").inc()
    ctx.metrics.tokens_minted.labels(environment=ctx.env).inc()


async def deny(ctx: Context, grant: Any, reason: str, message: str, *,
               cleanup: bool = True) -> None:
    """Denied, audited, counted; what was already made for the grant is removed."""
    auth = logic.Authorization(False, reason, message)
    record = await ctx.audit("GrantDenied", subject_of(grant),
                             {"reason": reason, "message": message[:500]})
    status = logic.denied_status(grant, auth, _now())
    status["auditRecordHash"] = f"sha256:{record.hash}"
    updated = await write_status(ctx, grant, status)
    if cleanup:
        await remove_artifacts(ctx, updated, job=True)
    ctx.event(grant, "Warning", reason, message)
    ctx.metrics.denial(ctx.env, "operator", reason)
    ctx.metrics.grants.labels(environment=ctx.env, outcome="Denied").inc()
    ctx.counted.add(grant["metadata"]["uid"])
    log.warning("grant denied", extra={"grant": grant["metadata"]["name"], "reason": reason})


async def remove_artifacts(ctx: Context, grant: Any, *, job: bool) -> bool:
    """Delete the grant's token Secret (and Job): only objects this grant owns, by uid. The
    Secret goes first (no gateway pod may start with it once the Job is being deleted): the one
    this process stored, else every token Secret the grant owns (one list by label: whatever
    they are named, however many earlier Jobs left; nothing is taken from the status, which
    the gateway can write)."""
    meta = grant["metadata"]
    ns = meta["namespace"]
    entry = _entry(ctx, grant)
    removed = False
    if entry is not None and entry.secret_uid is not None and entry.secret_name is not None:
        # the Secret this process made: no need to read it first
        removed |= await ctx.write(ctx.kube.delete, SECRETS, ns, entry.secret_name,
                                   uid=entry.secret_uid)
    else:
        for secret in await token_secrets(ctx, grant):
            removed |= await ctx.write(ctx.kube.delete, SECRETS, ns, secret["metadata"]["name"],
                                       uid=secret["metadata"]["uid"])
    if job:
        name = names.grant_job_name(grant)
        obj = await ctx.call(ctx.kube.get_or_none, JOBS, ns, name)
        if owned_by(obj, grant):
            assert obj is not None
            removed |= await ctx.write(ctx.kube.delete, JOBS, ns, name,
                                       uid=obj["metadata"]["uid"])
    if entry is not None:
        entry.cleaned = True
        entry.secret_uid = entry.secret_name = None
        ctx.tracker.settle(entry, None, _now())
    return removed


def _secret_token(secret: dict[str, Any]) -> str:
    return base64.b64decode((secret.get("data") or {}).get("token", "")).decode()


class _Stop(Exception):
    """A step ended the grant's flow (denied, failed) after writing why."""


class Grants:
    """The reconciler of ExecutionGrants (``Context.run`` calls it under the object's lock)."""

    def observe(self, ctx: Context, body: dict[str, Any]) -> Entry:
        """A copy trusted after older reads (the store went back): fed to the tracker and its
        outcome counted, as a watch event's would be."""
        entry = ctx.tracker.observe_grant(body, _now())
        count_outcome(ctx, body)
        return entry

    async def reconcile(self, ctx: Context, body: dict[str, Any]) -> None:
        stored = body
        body = dict(ctx.tracker.view(body))  # a Pending grant issued on its claim: TokenIssued
        phase = grant_rules.phase(body)
        entry = _entry(ctx, body)
        if entry is not None and entry.final_at is not None and not grant_rules.is_terminal(body):
            # a copy read before a final status this process has seen since (its own denial,
            # say, while this reconcile waited for the object's turn): acting on it would make
            # again what the final status removed. Read the grant once more and go on with that
            # (a status reset to Pending since is a grant to reconcile again)
            fresh = await ctx.call(ctx.kube.get_or_none, GRANTS, body["metadata"]["namespace"],
                                   body["metadata"]["name"])
            if fresh is None or fresh["metadata"].get("uid") != body["metadata"]["uid"]:
                return
            stored, body = fresh, dict(ctx.tracker.view(fresh))
            entry = ctx.tracker.observe_grant(body, _now())
            phase = grant_rules.phase(body)
        if grant_rules.is_terminal(body):
            if entry is not None and entry.cleaned:
                # removed already, e.g. by the expiry that ended it, while this event (its
                # own status write) waited for the object's turn: no read of a Secret gone
                return
            # e.g. a stale replica's Secret, or what a denial killed mid-way left behind
            # (a Denied grant's Job never got its token: its pod may still be waiting)
            await remove_artifacts(ctx, body, job=phase == "Denied")
            return
        if entry is not None and entry.job_done is not None and phase != "Pending":
            job = await ctx.call(ctx.kube.get_or_none, JOBS, body["metadata"]["namespace"],
                                 names.grant_job_name(body))
            if job is None or _job_finished(job) is not None:
                done = entry.job_done
                if logic.never_running(stored) and \
                        stored["metadata"].get("resourceVersion") != entry.job_done_read:
                    # "did not run" is said only of the grant as read after its Job's end was
                    # seen (no gateway writes after that); this copy is not that read (a watch
                    # event's, which may lag a Running written before the Job failed): read it
                    fresh = await _read_after_end(ctx, body, entry)
                    if fresh is None:
                        return
                    stored, body = fresh, dict(ctx.tracker.view(fresh))
                    ctx.tracker.observe_grant(body, _now())
                    if grant_rules.is_terminal(body):
                        return  # written meanwhile: its event cleans up
                    phase = grant_rules.phase(body)
                if phase != "Pending":
                    await job_result(ctx, body, done, ran_nothing=logic.never_running(stored))
                    return
                # reset to Pending meanwhile: reconciled again below, as a copy that shows
                # Pending is (its ended Job is the issue's to deal with)
            else:
                entry.job_done = None  # a late event of a Job since replaced: this one runs
        if phase == "Pending" and entry is not None:
            # a Pending grant's Job is judged as issue() reads it (create_job replaces an ended
            # one, refuses one a token was stored for, and settles again the end of one found
            # TokenIssued on a fresh read of the approval), never by an end seen before: kept,
            # that end would be taken as settled already, and another Job's end ignored
            entry.job_done, entry.job_done_read = None, ""
        if phase == "TokenIssued" and await expire_token(ctx, body):
            return
        if phase in ("Pending", "TokenIssued") and not (entry is not None and entry.released):
            await issue(ctx, body)

    async def abandon(self, ctx: Context, body: dict[str, Any], reason: str,
                      message: str) -> None:
        body = dict(ctx.tracker.view(body))  # issued on its claim: never Denied
        phase = grant_rules.phase(body)
        if phase == "Pending":
            await deny(ctx, body, reason, message)
        elif not grant_rules.is_terminal(body):
            await finish(ctx, body, "Failed", reason, message)


async def _read_after_end(ctx: Context, grant: Any, entry: Entry) -> dict[str, Any] | None:
    """The grant read again once its Job's end was seen (marked as such on ``entry``); None
    when it is gone, or is another grant of the same name."""
    done = entry.job_done
    fresh: dict[str, Any] | None = await ctx.call(
        ctx.kube.get_or_none, GRANTS, grant["metadata"]["namespace"], grant["metadata"]["name"])
    if fresh is None or fresh["metadata"].get("uid") != grant["metadata"]["uid"]:
        return None
    if done is not None and entry.job_done is done:
        entry.job_done_read = str(fresh["metadata"].get("resourceVersion") or "")
    return fresh


def job_ended(ctx: Context, entry: Entry, done: tuple[str, str]) -> None:
    """The grant of ``entry`` has its gateway Job ended (``done``: its condition and reason,
    as the Jobs watch or a read shows it): its result is due. Nothing read of the grant so far
    is known to show all its gateway wrote (``Entry.job_done_read``)."""
    entry.job_done, entry.job_done_read = done, ""
    ctx.tracker.settle(entry, "result", _now())


class _Issued(Exception):
    """A fresh read of the approval shows that the grant's token was issued on its claim (a
    run cut short after the claim, whose approval this process had not seen): the grant is
    ``TokenIssued`` (``grant``, its view) and goes on as such, never Denied."""

    def __init__(self, grant: dict[str, Any]) -> None:
        super().__init__("the grant's token was issued on its claim")
        self.grant = grant


def _issued_check(ctx: Context, grant: Any) -> None:
    """Raise ``_Issued`` when the approval just read records a token issued on the claim of
    the ``Pending`` grant ``grant`` (``read_approval`` told the tracker)."""
    judged = ctx.tracker.view(grant)
    if grant_rules.phase(grant) == "Pending" and grant_rules.phase(judged) == "TokenIssued":
        raise _Issued(dict(judged))


def _on_claim(ctx: Context, grant: Any) -> bool:
    """Whether ``grant``'s token was issued on its claim (the approval's ``status.grants``
    entry records it; the grant's stored phase is Pending until the gateway writes Running)."""
    return str(grant["metadata"]["uid"]) in ctx.tracker.claims


def _issues_on_claim(grant: Any, job: dict[str, Any], legacy: bool) -> bool:
    """Whether the claim of ``grant`` issues its token: a grant whose Job name admission
    derives from its name (``names.derived_job``: names of at most 54 characters that do not
    end in ``-`` and nine hex digits), whose Job is that one (not an earlier release's) and
    whose status records no earlier token. Any other grant is issued as before the claim
    recorded tokens: the claim, then its ``TokenIssued`` status (which gives admission
    ``status.jobName``) and its Secret."""
    name = str(grant["metadata"]["name"])
    return (names.derived_job(name) and job["metadata"]["name"] == name + "-gw"
            and not legacy and not (grant.get("status") or {}).get("tokenSHA256")
            and not (job["metadata"].get("annotations") or {}).get(MINTED_ANNOTATION))


async def issue(ctx: Context, grant: Any) -> None:
    """The whole flow for a grant that is not final yet, as named steps (idempotent: a re-run
    after a crash at any point continues from what it finds)."""
    grant = dict(ctx.tracker.view(grant))
    for _ in range(2):
        try:
            await _issue(ctx, grant)
        except _Issued as issued:  # found issued on a fresh read: go on as TokenIssued
            grant = issued.grant
            continue
        except _Stop:
            pass
        return


async def _issue(ctx: Context, grant: Any) -> None:
    phase = grant_rules.phase(grant)
    if phase not in ("Pending", "TokenIssued"):
        return  # Running or final: the gateway and the Job watcher take it from here
    now = _now()
    try:
        if phase == "Pending":
            await check_content(ctx, grant)
            approval, ttl = await authorize(ctx, grant, now)
        else:
            approval, ttl = None, 0
        job = await create_job(ctx, grant, ttl)
        secret_name = await mounted_secret(ctx, grant, job)
        legacy = secret_name == names.legacy_secret_name(grant["metadata"]["name"])
        secret = None
        if phase == "TokenIssued" or legacy:
            # issued before (a restart): is its token in place? Or an earlier release's Job,
            # whose Secret's name was predictable: read before the command is claimed, as that
            # release did, so a Secret planted under it uses nothing up
            secret = await check_secret(ctx, grant, secret_name,
                                        await read_secret(ctx, grant, secret_name))
        if approval is not None:
            issuing = (job, secret_name, ttl) if _issues_on_claim(grant, job, legacy) else None
            approval, again, minted = await claim(ctx, grant, approval, now, issuing=issuing)
            if minted is not None:
                grant = dict(grant_rules.view(grant, approval))
                stored = await store_claimed(ctx, grant, approval, job, minted)
                await release(ctx, grant, job, stored=stored)
                return
            if again and secret is None:
                # claimed by an earlier run (a crash or a retry after the claim, a status
                # reset to Pending): a token of this grant may be in place already
                secret = await stored_before(ctx, grant, secret_name)
        if secret is None:
            stored = await store_token(ctx, grant, approval, job, secret_name, ttl, now)
        else:
            stored = await adopt(ctx, grant, approval, job, secret, ttl, now, legacy=legacy)
        await release(ctx, grant, job, stored=stored)
    except _Stop:
        return


async def check_content(ctx: Context, grant: Any) -> None:
    """Token-shaped text anywhere but the command (which authorize names precisely)."""
    fields = [f for f in approval_logic.token_fields(grant) if f != "spec.command"]
    if fields:
        await deny(ctx, grant, "LooksLikeToken",
                   f"{', '.join(fields)} contain(s) text shaped like a capability token (a "
                   "JWT); Wingman never records or passes credentials: create a new grant "
                   "without it")
        raise _Stop


async def forward_of(ctx: Context, grant: Any) -> Any:
    """For a rollback grant, the grant that ran the command it undoes (None if absent, or for
    a forward grant)."""
    name = logic.rollback_of(grant)
    if not name:
        return None
    return await ctx.call(ctx.kube.get_or_none, GRANTS, grant["metadata"]["namespace"], name)


async def authorize(ctx: Context, grant: Any, now: dt.datetime) -> tuple[Any, int]:
    """Re-check everything the grant depends on; deny with the first failure. The approval
    the watch delivered is used when it is at hand; a refusal is confirmed on a fresh read."""
    meta = grant["metadata"]
    ref = str(grant["spec"]["approvalRef"]["name"])
    forward = await forward_of(ctx, grant)
    cached = ctx.tracker.approval(ref)
    approval = cached.body if cached is not None else None
    fresh = approval is None
    if approval is None:
        approval = await read_approval(ctx, ref, meta["namespace"])
    auth = logic.authorize(grant, approval, ctx.settings.policy, ctx.allowlist, now,
                           forward=forward)
    if not auth.ok and not fresh:
        approval = await read_approval(ctx, ref, meta["namespace"])
        auth = logic.authorize(grant, approval, ctx.settings.policy, ctx.allowlist, now,
                               forward=forward)
    if not auth.ok:
        _issued_check(ctx, grant)  # its claim issued its token: TokenIssued, never Denied
        await deny(ctx, grant, auth.reason, auth.message)
        raise _Stop
    assert approval is not None
    judged = grant_rules.view(grant, approval)
    if grant_rules.phase(judged) != grant_rules.phase(grant):
        # its token was issued on its claim (a run cut short, whose approval this process had
        # not seen yet): TokenIssued, before a Job is made for it
        raise _Issued(dict(judged))
    return approval, auth.ttl_seconds


async def create_job(ctx: Context, grant: Any, ttl: int) -> dict[str, Any]:
    """The gateway Job (created, or adopted when it is this grant's). A TokenIssued grant whose
    Job is gone fails: a new Job could never match the token recorded for it. A Pending grant's
    Job that already ended (its deadline passed while the operator was down, its waiting pod
    was evicted) is replaced before the command is claimed for it."""
    ns = grant["metadata"]["namespace"]
    name = names.grant_job_name(grant)
    pending = grant_rules.phase(grant) == "Pending"
    job: dict[str, Any] | None = None
    if not pending:  # issued before: the Job exists, read it
        job = await ctx.call(ctx.kube.get_or_none, JOBS, ns, name)
        if job is None:
            await finish(ctx, grant, "Failed", "JobMissing",
                         f"the gateway Job {name} disappeared before the gateway ran; "
                         f"{_USED_UP}")
            raise _Stop
    if job is None:
        # the name the grant was issued with (earlier releases let long Job names reach 63)
        job_body = manifests.gateway_job(dict(grant), ctx.settings, max(ttl, 30), job=name)
        ctx.check_leading()
        job, _ = await ctx.call(create_or_adopt, ctx.kube, JOBS, ns, job_body)
    crashpoint(ctx, "job-created")
    assert job is not None
    if not owned_by(job, grant):
        namesakes = await _deleted_namesakes_job(ctx, grant, job) if pending else None
        if namesakes is not None:
            delay = 1.0 if namesakes == "removed" else _await_collector(ctx, grant, job)
            raise Retry(f"the gateway Job {job['metadata']['name']} of a deleted grant of the "
                        "same name was in the way: removed, or its removal awaited",
                        delay=delay)
        if pending:  # nothing of the grant's was made: nothing to remove
            # (an earlier run may have claimed the command: another grant is refused then)
            await deny(ctx, grant, "JobConflict",
                       f"Job {job['metadata']['name']} exists and does not belong to this "
                       "grant; use another grant name (or submit a new request, if the "
                       "approval already granted its command to this grant: "
                       "CommandAlreadyGranted)", cleanup=False)
            raise _Stop
        await refuse(ctx, grant, "JobConflict",
                     f"Job {job['metadata']['name']} exists and does not belong to this grant; "
                     f"{_USED_UP}")
    if manifests.job_pod_spec(job).get("serviceAccountName") != \
            ctx.settings.gateway_service_account:
        # admission lets only the operator create Jobs that run as the gateway: a Job that
        # does not is not one it made, whatever its owner reference says
        await refuse(ctx, grant, "JobConflict",
                     f"Job {job['metadata']['name']} does not run as the gateway's "
                     f"ServiceAccount {ctx.settings.gateway_service_account}, so it is not a "
                     f"gateway Job the operator made; {_start_over(grant)}")
    done = _job_finished(job)
    entry = _entry(ctx, grant)
    if not pending and done is not None and entry is not None and entry.job_done is None:
        # its Job ended while this process was away, and the Jobs watch listed it before the
        # grant was tracked, so no Job event settled it: settle it as that event would (the
        # grant's next run takes the Job's end, reading the grant again where it matters)
        job_ended(ctx, entry, done)
        raise Retry(f"the gateway Job {name} ended before this process tracked its grant")
    if pending and done is not None:
        mounted = manifests.job_token_secret(job)
        stored = None if mounted is None else await read_secret(ctx, grant, mounted)
        if owned_by(stored, grant):
            # a token was stored for that Job and the grant's status does not record it: the
            # grant never gets another Job, nor another token
            assert stored is not None
            await ended_with_token(ctx, grant, name, stored)
        await ctx.write(ctx.kube.delete, JOBS, ns, name, uid=job["metadata"]["uid"])
        if entry is not None:
            entry.job_done = entry.job_deadline = None
            entry.secret_uid = entry.secret_name = None
        raise Retry(f"the grant's gateway Job {name} ended before its token was issued; it is "
                    "replaced")
    return dict(job)


async def _deleted_namesakes_job(ctx: Context, grant: Any, job: dict[str, Any]
                                 ) -> Literal["removed", "collecting"] | None:
    """Whether ``job``, found in place of the Pending ``grant``'s own, is the gateway Job of a
    deleted grant of the same name (the operator's: it runs as the gateway, has the gateway
    role and this grant's name as labels, and was made for another grant UID; its owner can
    only be gone, as this grant holds the name). Left without an owner (its grant deleted with
    propagation Orphan) it is removed now as the sweep would (``housekeeping.remove_orphans``:
    ``GrantOrphansRemoved`` audited first, then its token Secrets and the Job, each with a UID
    precondition: ``removed``), and once its deletion was asked (a finalizer holding it) it is
    waited for (``collecting``), not removed and recorded again; still naming its deleted
    grant, the garbage collector deletes it (``collecting``: the operator never does, its pod
    may be running that grant's command). Either way the grant waits for the name, instead of
    a final JobConflict; None: another Job."""
    name, meta = str(grant["metadata"]["name"]), job["metadata"]
    labels = meta.get("labels") or {}
    made_for = housekeeping.job_grant_uid(job)
    if (labels.get(names.ROLE_LABEL) != "gateway" or labels.get(names.GRANT_LABEL) != name
            or manifests.job_pod_spec(job).get("serviceAccountName")
            != ctx.settings.gateway_service_account
            or not made_for or made_for == grant["metadata"]["uid"]):
        return None
    refs = meta.get("ownerReferences") or []
    if refs:  # its deleted grant's own: the garbage collector removes it
        return "collecting" if all(r.get("kind") == "ExecutionGrant" and r.get("name") == name
                                   and r.get("uid") == made_for for r in refs) else None
    if meta.get("deletionTimestamp"):  # removed already (GrantOrphansRemoved), a finalizer holds it
        return "collecting"
    await housekeeping.remove_orphans(ctx, name)
    return "removed"


#: How long a grant waits, trying about once a second, for the garbage collector to delete a
#: deleted namesake's gateway Job that is in the way of its own before it says so (a Warning
#: Event on the grant, and the log), then tries every ``NAMESAKE_RETRY_SECONDS``
NAMESAKE_WAIT_SECONDS = 60.0
NAMESAKE_RETRY_SECONDS = 10.0


def _await_collector(ctx: Context, grant: Any, job: dict[str, Any]) -> float:
    """The wait for the garbage collector to delete ``job`` (a deleted namesake's, still
    naming that grant as its owner), or for the deletion of one left without an owner to end
    (a finalizer holds it): quiet, trying about once a second, for
    ``NAMESAKE_WAIT_SECONDS``; then said once (a Warning Event on the grant: what it waits for
    and what to check) and tried less often. Returns the delay of the next try."""
    entry = _entry(ctx, grant)
    if entry is None:
        return 1.0
    uid, now = str(job["metadata"]["uid"]), time.monotonic()
    if entry.namesake_job != uid:
        entry.namesake_job, entry.namesake_since, entry.namesake_reported = uid, now, False
    waited = now - entry.namesake_since
    if waited < NAMESAKE_WAIT_SECONDS:
        return 1.0
    if not entry.namesake_reported:
        entry.namesake_reported = True
        meta = job["metadata"]
        held = " (it is being deleted: a finalizer holds it)" if meta.get(
            "deletionTimestamp") else ""
        who = ("Kubernetes' garbage collector deletes it, as it names that grant as its owner; "
               "the operator does not, as its pod may be running that grant's command. Check "
               "that kube-controller-manager runs with its garbage collector (its log; its "
               "--controllers flag), and the Job's finalizers" if meta.get("ownerReferences")
               else "it was left without an owner, and the operator asked for its deletion "
               "(GrantOrphansRemoved); Kubernetes removes it once its finalizers are gone. "
               "Check the Job's finalizers, and what should remove them")
        message = (
            f"this grant waits for the name of its gateway Job: Job {meta['name']}, made for a "
            f"deleted grant of the same name (uid {housekeeping.job_grant_uid(job)}), is still "
            f"there {int(waited)} s later{held}. {who} (kubectl get job {meta['name']} -n "
            f"{meta['namespace']} -o yaml). The grant goes on once the Job is gone; to give "
            "up, delete this grant")
        log.warning("a deleted grant's gateway Job is in the way of a new grant's", extra={
            "grant": grant["metadata"]["name"], "job": meta["name"],
            "waited_seconds": int(waited)})
        ctx.event(grant, "Warning", "WaitingForGarbageCollector", message)
    return NAMESAKE_RETRY_SECONDS


async def ended_with_token(ctx: Context, grant: Any, job_name: str,
                           secret: dict[str, Any]) -> NoReturn:
    """A Pending grant whose gateway Job ended after its token was stored. If the token has
    expired, the operator did not record it within its lifetime (it was away, or its writes
    failed) and the gateway gave up waiting for ``TokenIssued``: ``Expired``. Otherwise the
    status does not record a token that was stored (reset to Pending since, or never written
    while the gateway ran and gave up): ``TokenBindingMismatch``."""
    if _secret_expiry(secret) <= int(_now().timestamp()):
        await finish(ctx, grant, "Expired", "TokenExpired",
                     f"the token stored for the grant's gateway Job {job_name} expired before "
                     "the grant's status recorded it (the operator was away or could not write "
                     "the status for the token's whole lifetime), and the Job ended; nothing "
                     "ran; submit a new request (the command is used up)")
        await remove_artifacts(ctx, grant, job=True)
        raise _Stop
    await refuse(ctx, grant, "TokenBindingMismatch",
                 f"the grant's gateway Job {job_name} ended after a token was stored for it, "
                 "and the grant's status does not record that token (it was reset to Pending "
                 f"since, or never written while the gateway ran); {_USED_UP}")


async def mounted_secret(ctx: Context, grant: Any, job: dict[str, Any]) -> str:
    """The token Secret the grant's Job mounts: the only name its token is ever stored under."""
    name = manifests.job_token_secret(job)
    if name is None:
        await refuse(ctx, grant, "JobConflict",
                     f"Job {job['metadata']['name']} mounts no token Secret, so it is not a "
                     f"gateway Job the operator made; {_start_over(grant)}")
    return name


async def refuse(ctx: Context, grant: Any, reason: str, message: str) -> NoReturn:
    """End a grant that cannot go on, with what was made for it: ``Denied`` while ``Pending``;
    once ``TokenIssued``, every ending is ``Failed`` (or ``Expired``)."""
    if grant_rules.phase(grant) == "Pending":
        await deny(ctx, grant, reason, message)
    else:
        await finish(ctx, grant, "Failed", reason, message)
        await remove_artifacts(ctx, grant, job=True)
    raise _Stop


async def _secret_conflict(ctx: Context, grant: Any, secret_name: str) -> NoReturn:
    # the grant's own Job goes too: its pod would mount that Secret
    await refuse(ctx, grant, "SecretConflict",
                 f"Secret {secret_name}, which the grant's gateway Job mounts, exists and does "
                 "not belong to this grant: someone created it after the Job existed; find out "
                 "who (the API server's audit log), then create a new grant (a new request if "
                 "this one's command is used up)")


async def read_secret(ctx: Context, grant: Any, secret_name: str) -> dict[str, Any] | None:
    """The Secret ``secret_name`` (the grant's Job mounts it), if one exists (anyone's)."""
    return await ctx.call(ctx.kube.get_or_none, SECRETS, grant["metadata"]["namespace"],
                          secret_name)


async def check_secret(ctx: Context, grant: Any, secret_name: str,
                       secret: dict[str, Any] | None) -> dict[str, Any] | None:
    """The grant's token Secret if it exists already; refused when it is not this grant's."""
    if secret is not None and not owned_by(secret, grant):
        await _secret_conflict(ctx, grant, secret_name)
    return secret


async def token_secrets(ctx: Context, grant: Any) -> list[dict[str, Any]]:
    """Every token Secret this grant owns, whatever it is named (one list, by label)."""
    meta = grant["metadata"]
    items = await ctx.call(ctx.kube.list, SECRETS, meta["namespace"],
                           label_selector=f"{names.GRANT_LABEL}={meta['name']}")
    return [s for s in items if s.get("type") == names.SECRET_TYPE and owned_by(s, grant)]


async def stored_before(ctx: Context, grant: Any, secret_name: str) -> dict[str, Any] | None:
    """For a Pending grant an earlier run claimed the command for: its token Secret, if one
    was stored (then the status was reset, or an earlier release stored it first). One stored
    for another Job of the grant (a Job since gone) refuses the grant: it never gets a second
    Job while a token exists, nor a second token."""
    mine = await token_secrets(ctx, grant)
    others = sorted(s["metadata"]["name"] for s in mine if s["metadata"]["name"] != secret_name)
    if others:
        await refuse(ctx, grant, "TokenBindingMismatch",
                     f"a token was stored for an earlier gateway Job of this grant (Secret "
                     f"{', '.join(others)}) and the grant's status no longer records it; "
                     f"{_USED_UP}")
    return next((s for s in mine if s["metadata"]["name"] == secret_name), None)


async def adopt(ctx: Context, grant: Any, approval: Any, job: dict[str, Any],
                secret: dict[str, Any], ttl: int, now: dt.datetime, *, legacy: bool) -> bool:
    """A token Secret of this grant already in place: check it and record it (Pending) instead
    of storing another. It must hold the very token recorded (TokenIssued) or the one the
    operator makes for this Job (Pending); an earlier release's random token is taken on its
    binding to the Job alone, as that release did. True when this run recorded ``TokenIssued``
    (the Secret of a run cut short before its status): then, as when it stores the token, the
    gateway can start from now on, and ``release`` measures the grant's time to it."""
    if grant_rules.phase(grant) == "TokenIssued":
        status = grant.get("status") or {}
        await bind(ctx, grant, job, secret, expected=status.get("tokenSHA256"))
        recorded = rules.parse_time(status.get("tokenExpirationTime"))
        if recorded is not None:  # the expiry the status records, not the Secret's annotation
            await cover_deadline(ctx, grant, job, int(recorded.timestamp()))
        return False
    expected, exp = None, None
    if not legacy:
        _, token, claims, _kid = await mint_for(ctx, grant, approval, job, ttl,
                                                signer=_signer_of(ctx, secret))
        expected, exp = token_sha256(token), int(claims.exp)
        del token
    token_hash, expires = await bind(ctx, grant, job, secret, expected=expected)
    await only_the_recorded_token(ctx, grant, token_hash)
    expires = expires if exp is None else exp
    if expires <= int(now.timestamp()):
        # stored by a run cut short before the status recorded it, and claimed longer than
        # the token's lifetime ago: as a token minted now would be, it is born expired
        await born_expired(ctx, grant, ttl)
    await cover_deadline(ctx, grant, job, expires)
    await record_issued(ctx, grant, job, str(secret["metadata"]["name"]), token_hash, expires,
                        now)
    return True


async def only_the_recorded_token(ctx: Context, grant: Any, token_hash: str) -> None:
    """A Pending grant whose status records a token (``status.tokenSHA256``, which the CRD
    keeps once written) had one issued before, and its status was reset since: it gets that
    very token or none. Another one (a rotated signing key gives another ``jti``, so another
    burn marker; a new Job another binding) could run the command a second time."""
    recorded = (grant.get("status") or {}).get("tokenSHA256")
    if recorded and token_hash != recorded:
        await refuse(ctx, grant, "TokenBindingMismatch",
                     "a token was issued to this grant before (status.tokenSHA256) and its "
                     "status was reset to Pending since; no signing key in the ring makes that "
                     "token again (the key that signed it was pruned, or the gateway Job is "
                     f"another), and a grant never gets a second token; {_USED_UP}")


async def born_expired(ctx: Context, grant: Any, ttl: int, *, lost: bool = False) -> NoReturn:
    """A Pending grant whose token (minted now, or adopted from a Secret an interrupted run
    stored) expired before its status could record it, or a grant whose token was issued on its
    claim and expired before a run stored it (made again now, to be stored): the command was
    claimed more than the token's lifetime ago (the operator was down). ``Expired``, with the
    Job and the Secret; no ``TokenIssued``, no ``GrantAuthorized`` (again) and no Secret for a
    token nobody can use. ``lost``: a TokenIssued grant whose status records its token (a long
    name's) and whose token Secret was lost: it is not stored again."""
    stage = "stored again (its token Secret was lost)" if lost else \
        "stored" if grant_rules.phase(grant) == "TokenIssued" else "issued"
    await finish(ctx, grant, "Expired", "TokenExpired",
                 f"the token expired before it could be {stage}: the command was claimed "
                 f"more than its {ttl}s lifetime ago; {_USED_UP}")
    await remove_artifacts(ctx, grant, job=True)
    raise _Stop


async def _recheck(ctx: Context, grant: Any, approval: Any, now: dt.datetime
                  ) -> logic.Authorization:
    return logic.authorize(grant, approval, ctx.settings.policy, ctx.allowlist, now,
                           forward=await forward_of(ctx, grant))


@dataclass(frozen=True)
class _Minted:
    """A token issued on the claim, to store: its hash, its ``TokenMinted`` record and the
    create of its Secret (which holds the token; nothing else does)."""

    token_hash: str
    record: tuple[str, Any, dict[str, Any]]
    # the create holds the Secret's manifest, the token in it: never in a repr
    create: Callable[[], Awaitable[tuple[dict[str, Any], bool]]] = field(repr=False)


async def claim(ctx: Context, grant: Any, approval: Any, now: dt.datetime, *,
                issuing: tuple[dict[str, Any], str, int] | None = None
                ) -> tuple[Any, bool, _Minted | None]:
    """The last check before a token is stored: the approved command is used up by this grant.
    Returns the approval the claim was checked against, whether an earlier run had claimed it
    already, and, when ``issuing`` (the Job, its token Secret's name and the token's TTL: a
    grant ``_issues_on_claim``) and this run made the claim, the token it issued: minted
    (``grantedAt`` is now), the Job's deadline covered, then recorded in the claim's entry."""
    taken = logic.claim(grant, approval, now, undoes=logic.undoes(grant, approval))
    if taken.denial is not None:
        # the copy may be stale: confirm on a fresh read before refusing
        approval = await read_approval(ctx, approval["metadata"]["name"],
                                       grant["metadata"]["namespace"])
        auth = await _recheck(ctx, grant, approval, now)
        taken = logic.claim(grant, approval, now, undoes=logic.undoes(grant, approval)) \
            if auth.ok and approval is not None else logic.Claim(denial=auth)
        if taken.denial is not None:
            await deny(ctx, grant, taken.denial.reason, taken.denial.message)
            raise _Stop
    if taken.grants is None:
        # already recorded for this grant (a run cut short after the claim): re-check the
        # approval as it is now (no guarded write will), and make sure the claim has its
        # audit record (the append may be what failed): at least once, never missing
        approval = await read_approval(ctx, approval["metadata"]["name"],
                                       grant["metadata"]["namespace"])
        _issued_check(ctx, grant)  # its token was issued on the claim: TokenIssued
        auth = await _recheck(ctx, grant, approval, now)
        if not auth.ok:
            await deny(ctx, grant, auth.reason, auth.message)
            raise _Stop
        await audit_claim(ctx, grant, approval)
        return approval, True, None
    minted = None
    if issuing is not None:
        job, secret_name, ttl = issuing
        undoes = logic.undoes(grant, approval)
        # the approval as the claim will make it, which dates the token (grantedAt: now)
        prospective = {**approval, "status": {**(approval.get("status") or {}),
                                              "grants": taken.grants}}
        _, token, claims, kid = await mint_for(ctx, grant, prospective, job, ttl,
                                               claimed=False)
        token_hash = token_sha256(token)
        await cover_deadline(ctx, grant, job, int(claims.exp))  # before it is recorded
        taken = logic.claim(grant, approval, now, undoes=undoes, token={
            "tokenSHA256": token_hash, "jobName": str(job["metadata"]["name"]),
            "tokenExpirationTime": conditions.rfc3339(
                dt.datetime.fromtimestamp(claims.exp, dt.UTC)),
            "tokenSecretName": secret_name})
        job_uid = job["metadata"]["uid"]
        minted = _Minted(token_hash, ("TokenMinted", subject_of(grant), {
            "tokenSHA256": token_hash, "jtiSHA256": jti_sha256(claims.jti), "kid": kid,
            "expires": claims.exp, "jobUID": job_uid, "approvalUID": approval["metadata"]["uid"],
            "command": grant["spec"]["command"]}), functools.partial(
                create_secret, ctx, manifests.token_secret(
                    dict(grant), secret_name, token, claims.exp, job_uid, ctx.settings)))
        del token
    assert taken.grants is not None
    updated = await claim_command(ctx, grant, approval, taken.grants, audit=minted is None)
    if updated is None:
        await deny(ctx, grant, "ApprovalSchemaOutdated",
                   "the API server did not keep status.grants on the ApprovalRequest: "
                   "its CRD is older than this operator; apply the release's CRDs "
                   "(kubectl apply -f crds/) and create a new grant")
        raise _Stop
    if minted is not None and (grant_rules.issued_claim(grant, updated) or {}).get(
            "tokenSHA256") != minted.token_hash:
        # the API server kept the claim but not its token fields (a CRD older than the
        # operator's): the claim issued nothing, the token is issued as for a long name
        await audit_claim(ctx, grant, approval)
        minted = None
    crashpoint(ctx, "command-claimed")
    return updated, False, minted


async def store_claimed(ctx: Context, grant: Any, approval: Any, job: dict[str, Any],
                        minted: _Minted) -> bool:
    """The token this run issued on the claim (``grant`` is TokenIssued by it): audited
    (claim, TokenMinted, GrantAuthorized), then stored in the Secret the Job mounts, which lets
    the gateway start. Nothing is written to the grant. True when this run created the
    Secret."""
    await audit_issue(ctx, grant, approval, job, minted.token_hash, minted.record)
    secret, created = await minted.create()
    crashpoint(ctx, "token-stored")
    if not owned_by(secret, grant):
        await _secret_conflict(ctx, grant, str(secret["metadata"]["name"]))
    await bind(ctx, grant, job, secret, expected=minted.token_hash)
    if created:
        count_issued(ctx)
    return created


#: What a grant that claimed its command and then cannot get its token leaves to do: the
#: approval records the command as this grant's, so another grant for it is refused
#: (``CommandAlreadyGranted``).
_USED_UP = ("the approval granted its command to this grant, so another grant for it is "
            "refused (CommandAlreadyGranted): submit a new request to run it")


def _start_over(grant: Any) -> str:
    """What to do after a grant ends on what it found before its token: a ``Pending`` grant may
    not have claimed its command yet (a new grant can), one past it has (a new request)."""
    if grant_rules.phase(grant) == "Pending":
        return ("create a new grant (or submit a new request, if the approval already granted "
                "its command to this grant: CommandAlreadyGranted)")
    return _USED_UP


async def _cannot_mint(ctx: Context, grant: Any, why: str, *, claimed: bool = True
                       ) -> NoReturn:
    """Refuse a grant whose token cannot be made. ``claimed``: the command was claimed for
    it before (the long-name path mints after the claim, a token made again after it): the
    command is used up. Not ``claimed``: minted before the claim (a token issued on its claim),
    so the approval still holds the command for a new grant."""
    if grant_rules.phase(grant) == "TokenIssued":
        await refuse(ctx, grant, "TokenMissing",
                     f"the token Secret disappeared before the gateway ran and {why}; "
                     f"{_USED_UP}")
    after = _USED_UP if claimed else (
        "the command was not claimed for this grant, so it is not used up: remove the cause "
        "(a shorter command, in a new request, for a command too long), then create a new "
        "grant")
    await refuse(ctx, grant, "TokenNotMintable",
                 f"the grant's token cannot be minted: {why}; {after}")


def _signer_of(ctx: Context, secret: dict[str, Any]) -> SigningKey:
    """The ring's key that the token stored in ``secret`` names (its header's ``kid``), else
    the active one. A token an interrupted run stored just before a key rotation is made again
    with the key that signed it, to be compared with what the Secret holds (the same bytes or
    nothing is adopted): a rotation does not refuse a token the operator made, which the
    gateway verifies until the retired key is pruned."""
    ring = ctx.ring  # once: a key reload (another thread) may replace the ring
    head = _secret_token(secret).split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError:
        return ring.signer
    kid = header.get("kid") if isinstance(header, dict) else None
    return ring.keys.get(kid, ring.signer) if isinstance(kid, str) else ring.signer


async def mint_for(ctx: Context, grant: Any, approval: Any, job: dict[str, Any], ttl: int, *,
                   signer: SigningKey | None = None, claimed: bool = True
                   ) -> tuple[Any, str, Any, str]:
    """The grant's token for ``job``, a pure function of what is recorded (the claim on the
    approval dates it; a TokenIssued grant's lifetime is the one its status records), signed
    by ``signer`` (default: the active key). Returns (approval, token, claims, kid): ``kid``
    names the key that signed it (one read of the ring for the token and its ``jti``);
    refuses the grant when it cannot be made (``claimed``: whether its command was claimed
    already, which the refusal says: not when ``approval`` is the claim about to be written)."""
    meta = grant["metadata"]
    status = grant.get("status") or {}
    if approval is None:  # TokenIssued: the claim on the approval dates the token
        approval = await read_approval(ctx, str(grant["spec"]["approvalRef"]["name"]),
                                       meta["namespace"])
    entry = None if approval is None else rules.granted_to(
        approval, str(grant["spec"]["command"]), rollback_of=logic.undoes(grant, approval))
    issued_at = rules.parse_time((entry or {}).get("grantedAt"))
    if approval is None or entry is None or entry.get("grantUID") != meta["uid"] \
            or issued_at is None:
        await _cannot_mint(ctx, grant, "the approval no longer records this grant's claim")
    assert approval is not None and issued_at is not None
    if grant_rules.phase(grant) == "TokenIssued":
        expires = rules.parse_time(status.get("tokenExpirationTime"))
        ttl = int((expires - issued_at).total_seconds()) if expires is not None else 0
    if signer is None:
        signer = ctx.ring.signer  # once: a key reload (another thread) may replace the ring
    try:
        token, claims = mint_token(
            signer, issuer=ctx.settings.issuer, audience=ctx.env,
            subject=str(approval["spec"]["requester"]), namespace=meta["namespace"],
            approval_name=approval["metadata"]["name"],
            approval_uid=approval["metadata"]["uid"], grant_name=meta["name"],
            grant_uid=meta["uid"], command=str(grant["spec"]["command"]),
            job_uid=job["metadata"]["uid"], ttl_seconds=ttl, now=issued_at.timestamp(),
            jti=grant_jti(signer, str(meta["uid"])))
    except ConfigError as exc:
        await _cannot_mint(ctx, grant, exc.message, claimed=claimed)
    return approval, token, claims, signer.kid


async def remint_recorded(ctx: Context, grant: Any, job: dict[str, Any], ttl: int
                          ) -> tuple[Any, str, Any, str]:
    """A TokenIssued grant whose Secret is gone: its token made again, byte for byte. The status
    records the token's hash, not the key that signed it, so the token is made again with every
    key in the ring (the active one first) and kept only when exactly one of them gives the
    recorded hash: a rotation since the token was issued does not lose it (the retired key
    still signs the same token, with the same ``jti``, so the same burn marker, and the gateway
    verifies it until the key is pruned). No key giving it (the one that signed it was pruned,
    or the issuer changed) fails the grant, closed: no other token is ever stored. Returns what
    ``mint_for`` returns."""
    found, tried = await _made_by_the_ring(ctx, grant, None, job, ttl)
    if not found:
        await _cannot_mint(
            ctx, grant, f"none of the {tried} signing key(s) in the ring makes the token "
            "recorded for it (status.tokenSHA256) again: the key that signed it was pruned "
            "(wingman keys prune) or the issuer changed since it was issued, so the same token "
            "cannot be made again")
    return found[0]


async def _made_by_the_ring(ctx: Context, grant: Any, approval: Any, job: dict[str, Any],
                            ttl: int) -> tuple[list[tuple[Any, str, Any, str]], int]:
    """The grant's token for ``job`` made with every key in the ring (the active one first),
    kept when it hashes to the one its status records (``status.tokenSHA256``): what
    ``mint_for`` returns for the one key that makes it (an empty list: none does), and how
    many keys were tried. More than one key making it refuses the grant, closed: which token
    was issued would not be certain."""
    recorded = (grant.get("status") or {}).get("tokenSHA256")
    ring = ctx.ring  # once: a key reload (another thread) may replace the ring
    signers = [ring.signer, *(key for kid, key in sorted(ring.keys.items())
                              if kid != ring.active)]
    found: list[tuple[Any, str, Any, str]] = []
    for signer in signers:
        approval, token, claims, kid = await mint_for(ctx, grant, approval, job, ttl,
                                                      signer=signer)
        if recorded and token_sha256(token) == recorded:
            found.append((approval, token, claims, kid))
        del token
    if len(found) > 1:
        found.clear()
        await _cannot_mint(ctx, grant, "more than one signing key in the ring makes a token "
                           "with the hash recorded for it, so which one was issued is not "
                           "certain")
    return found, len(signers)


async def store_token(ctx: Context, grant: Any, approval: Any, job: dict[str, Any],
                      secret_name: str, ttl: int, now: dt.datetime) -> bool:
    """Mint the grant's token, bound to the Job's UID, record it in the status (Pending: a
    grant not issued on its claim) and store it in the Secret ``secret_name`` the Job mounts,
    which lets the gateway start. For a TokenIssued grant whose Secret is gone, the same token
    is minted again (with the ring's key that signed it, ``remint_recorded``) and stored only if
    it hashes to the one recorded (see the module docstring); anything else fails the grant,
    closed; one issued on its claim gets the claim's records written again first (the run that
    made the claim may have been cut short before them). A Secret of this grant already in
    place (a status reset to Pending) must hold that very token. True when this was the
    token's first store (False: stored again; a token issued on its claim is first stored by
    the run that made the claim, ``store_claimed``, which counts it: one stored by a later run,
    after a crash or a lost Secret, is not counted again)."""
    issued = grant_rules.phase(grant) == "TokenIssued"
    if (job["metadata"].get("annotations") or {}).get(MINTED_ANNOTATION):
        await _cannot_mint(ctx, grant, "an earlier release already released its Job")
    if issued:
        approval, token, claims, kid = await remint_recorded(ctx, grant, job, ttl)
    elif (grant.get("status") or {}).get("tokenSHA256"):
        # reset to Pending after a token was issued: that very token again, with the ring's
        # key that makes it (a rotation since does not lose it); none does, the active key's
        # token, which only_the_recorded_token refuses
        found, _ = await _made_by_the_ring(ctx, grant, approval, job, ttl)
        approval, token, claims, kid = found[0] if found else await mint_for(
            ctx, grant, approval, job, ttl)
        found.clear()
    else:
        approval, token, claims, kid = await mint_for(ctx, grant, approval, job, ttl)
    job_uid = job["metadata"]["uid"]
    token_hash = token_sha256(token)
    if not issued:
        await only_the_recorded_token(ctx, grant, token_hash)
    on_claim = issued and _on_claim(ctx, grant)
    if claims.exp <= int(now.timestamp()):
        # claimed longer than the token's lifetime ago (the operator was down), and never
        # stored (a token issued on its claim whose Secret an earlier run did not create), or
        # its Secret lost (within the leeway after its expiry, before the sweep ends the
        # grant): a token no gateway should start a command on is never stored
        del token
        await born_expired(ctx, grant, int(claims.exp - claims.iat),
                           lost=issued and not on_claim)
    await cover_deadline(ctx, grant, job, int(claims.exp))
    minted = ("TokenMinted", subject_of(grant), {
        "tokenSHA256": token_hash, "jtiSHA256": jti_sha256(claims.jti), "kid": kid,
        "expires": claims.exp, "jobUID": job_uid, "approvalUID": approval["metadata"]["uid"],
        "command": grant["spec"]["command"], **({"again": True} if issued else {})})
    create = functools.partial(create_secret, ctx, manifests.token_secret(
        dict(grant), secret_name, token, claims.exp, job_uid, ctx.settings))
    del token
    if on_claim:
        # issued on its claim and no Secret: a run cut short after the claim, whose records
        # may not have been written; they are written (again) before the Secret
        await audit_issue(ctx, grant, approval, job, token_hash, minted)
        secret, created = await create()
    elif issued:
        await ctx.audit(*minted)
        crashpoint(ctx, "token-minted")
        secret, created = await create()
    else:
        # TokenMinted and GrantAuthorized: one unit, one wait
        written = await authorized(ctx, grant, job, secret_name, token_hash, claims.exp, now,
                                   minted=minted)
        grant, (secret, created) = await side_by_side(
            ctx, functools.partial(write_issued, ctx, grant, written), create)
    del create
    crashpoint(ctx, "token-stored")
    if not owned_by(secret, grant):
        await _secret_conflict(ctx, grant, secret_name)
    await bind(ctx, grant, job, secret, expected=token_hash)
    return created and not issued


async def cover_deadline(ctx: Context, grant: Any, job: dict[str, Any], expires: int) -> None:
    """Before a token expiring at ``expires`` is stored or recorded (or adopted again): extend its
    Job's ``activeDeadlineSeconds`` when the command was claimed so long after the Job was made
    (the operator, or the API server, was away in between) that the deadline could cut short a
    command the token still lets the gateway start (``logic.deadline_for``; the leeway and the
    timeout are the ones the Job gives its gateway). No request otherwise, nor for a Job that
    ended. Over the version read; a Job that changed meanwhile (its controller writes its
    status) is read again. A patch admission refuses (the release's pinned image or pod rules
    changed since the Job was made) leaves the Job's deadline as it is, with a Warning Event:
    the grant goes on as it would have without the extension."""
    meta = job["metadata"]
    for attempt in range(3):
        leeway = manifests.job_gateway_seconds(job, "WINGMAN_LEEWAY_SECONDS")
        timeout = manifests.job_gateway_seconds(job, "WINGMAN_EXEC_TIMEOUT_SECONDS")
        seconds = logic.deadline_for(
            job, expires, leeway=ctx.settings.leeway_seconds if leeway is None else leeway,
            exec_timeout=ctx.settings.gateway_timeout_seconds if timeout is None else timeout,
            start_seconds=manifests.START_SECONDS)
        if seconds is None or _job_finished(job) is not None:
            return
        body = {"metadata": {"resourceVersion": job["metadata"]["resourceVersion"]},
                "spec": {"activeDeadlineSeconds": seconds}}
        try:
            await ctx.write(ctx.kube.patch, JOBS, meta["namespace"], meta["name"], body)
        except ApiError as exc:
            if exc.conflict and attempt < 2:
                fresh = await ctx.call(ctx.kube.get_or_none, JOBS, meta["namespace"],
                                       meta["name"])
                if fresh is not None and fresh["metadata"].get("uid") == meta["uid"]:
                    job = fresh
                    continue
            if exc.conflict:
                raise Retry("the gateway Job changed since it was read") from None
            if exc.status not in (403, 422):
                raise
            message = (f"the deadline of gateway Job {meta['name']} could not be extended for "
                       f"a command claimed long after the Job was made (API server answered "
                       f"{exc.status}: admission or validation refused the patch); a command "
                       "started late in the token's life may be stopped by the Job's deadline")
            log.warning("gateway Job deadline not extended", extra={
                "grant": grant["metadata"]["name"], "job": meta["name"],
                "status": exc.status, "error": exc.message[:300]})
            ctx.event(grant, "Warning", "DeadlineNotExtended", message)
            return
        log.info("gateway Job deadline extended for a late claim", extra={
            "grant": grant["metadata"]["name"], "job": meta["name"],
            "from_seconds": (job.get("spec") or {}).get("activeDeadlineSeconds"),
            "to_seconds": seconds})
        return


async def create_secret(ctx: Context, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create the token Secret ``body`` (or adopt the one in its place, whoever's)."""
    ctx.check_leading()
    made: tuple[dict[str, Any], bool] = await ctx.call(
        create_or_adopt, ctx.kube, SECRETS, body["metadata"]["namespace"], body)
    crashpoint(ctx, "secret-created")
    return made


async def side_by_side(ctx: Context, write: Callable[[], Awaitable[dict[str, Any]]],
                       create: Callable[[], Awaitable[tuple[dict[str, Any], bool]]]
                       ) -> tuple[dict[str, Any], tuple[dict[str, Any], bool]]:
    """The TokenIssued status and the token Secret of a grant not issued on its claim (a long name),
    written at the same time: one round trip instead of two. Neither needs the other first: the
    gateway spends its token only once the grant's phase has left Pending (``wingman.gateway.run``
    waits for it, until the token expires), and a run cut short between the two finds the other half
    (a TokenIssued grant stores its Secret again; a Pending grant whose command it claimed adopts
    the Secret in place). Both writes finish before an error of either is raised (the status write's
    first; the other one's is logged). Under fault injection at ``status-written`` or
    ``secret-created`` that write goes first, alone (the second is not made if the first fails), so
    the crash tests leave each half without the other; at one of ``IN_FLIGHT`` both are started
    together and the crash comes while they are under way (``_cut``)."""
    if ctx.settings.fault_kill_at == "status-written":
        return await write(), await create()
    if ctx.settings.fault_kill_at == "secret-created":
        made = await create()
        return await write(), made
    if ctx.settings.fault_kill_at in IN_FLIGHT:
        write, create = _cut(ctx, ctx.settings.fault_kill_at, write, create)
    written, made = await asyncio.gather(write(), create(), return_exceptions=True)
    if isinstance(written, BaseException):
        if isinstance(made, BaseException):
            # its type and status only: the message of a refused create might echo the body
            log.warning("the token Secret's create failed as well", extra={
                "error": type(made).__name__, "status": getattr(made, "status", None)})
        raise written
    if isinstance(made, BaseException):
        raise made
    return written, made


def _cut(ctx: Context, step: str, write: Callable[[], Awaitable[dict[str, Any]]],
         create: Callable[[], Awaitable[tuple[dict[str, Any], bool]]]
         ) -> tuple[Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[], Awaitable[tuple[dict[str, Any], bool]]]]:
    """Fault injection inside ``side_by_side``'s concurrent writes (``IN_FLIGHT``): the half
    that must not land (the Secret at ``status-landed``, the status at ``secret-landed``) is
    started with the other and held back until the other has landed, and the kill comes then;
    at ``both-landed`` both go out at once and the kill comes when both have landed."""
    landed = {"status": asyncio.Event(), "secret": asyncio.Event()}
    first = {"status-landed": "status", "secret-landed": "secret"}.get(step)

    def cut(half: str, fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            if first is not None and half != first:
                await landed[first].wait()  # the kill comes as soon as that is set
            try:
                result = await fn()
            finally:  # a write that failed holds nothing back
                landed[half].set()
            if first is None:
                await asyncio.gather(*(e.wait() for e in landed.values()))
            crashpoint(ctx, step)
            return result
        return run
    return cut("status", write), cut("secret", create)


async def bind(ctx: Context, grant: Any, job: dict[str, Any], secret: dict[str, Any], *,
               expected: str | None = None) -> tuple[str, int]:
    """Check the Secret is bound to this Job (and holds the ``expected`` token, by its hash,
    when one is recorded). Returns (token hash, expiry)."""
    annotations = secret["metadata"].get("annotations") or {}
    token_hash = token_sha256(_secret_token(secret))
    if annotations.get(names.JOB_UID_ANNOTATION) != job["metadata"]["uid"]:
        await refuse(ctx, grant, "TokenBindingMismatch",
                     f"the token Secret is bound to another Job than the grant's; {_USED_UP}")
    if expected is not None and token_hash != expected:
        await refuse(ctx, grant, "TokenBindingMismatch",
                     "the token Secret does not hold the token recorded for this grant; "
                     f"{_USED_UP}")
    entry = _entry(ctx, grant)
    if entry is not None:
        entry.secret_uid = str(secret["metadata"]["uid"])
        entry.secret_name = str(secret["metadata"]["name"])
    return token_hash, _secret_expiry(secret)


def _secret_expiry(secret: dict[str, Any]) -> int:
    """The token's expiry a token Secret records (0, long past, when none or garbled: ASCII
    digits only, as ``str.isdigit`` also takes '²', which int() refuses, and other scripts'
    digits, which it reads)."""
    expires = str((secret["metadata"].get("annotations") or {}).get(names.EXPIRES_ANNOTATION,
                                                                     ""))
    return int(expires) if expires.isascii() and expires.isdigit() else 0


async def record_issued(ctx: Context, grant: Any, job: dict[str, Any], secret_name: str,
                        token_hash: str, expires: int, now: dt.datetime) -> dict[str, Any]:
    """Audit ``GrantAuthorized`` and write ``TokenIssued``; returns the grant as written."""
    status = await authorized(ctx, grant, job, secret_name, token_hash, expires, now)
    return await write_issued(ctx, grant, status)


async def authorized(ctx: Context, grant: Any, job: dict[str, Any], secret_name: str,
                     token_hash: str, expires: int, now: dt.datetime, *,
                     minted: tuple[str, dict[str, Any], dict[str, Any]] | None = None
                     ) -> dict[str, Any]:
    """Audit ``GrantAuthorized`` (after ``minted``, the ``TokenMinted`` record, when given: one
    unit, one wait for both, and this GrantAuthorized is not written if that TokenMinted is
    refused); returns the ``TokenIssued`` status that records it."""
    meta = grant["metadata"]
    gen = int(meta.get("generation") or 1)
    conds = conditions.set_condition(grant.get("status", {}).get("conditions") or [],
                                     "Authorized", True, "Authorized",
                                     "approved command, inside the allowlist", gen, now)
    conds = conditions.set_condition(conds, "TokenIssued", True, "TokenIssued",
                                     f"single-use token issued; the gateway reads it from Secret "
                                     f"{secret_name}", gen, now)
    conds = conditions.grant_ready(conds, "TokenIssued", "token issued; waiting for the gateway "
                                   "to run the command", gen, now)
    results = await ctx.audit_unit([*([minted] if minted is not None else []),
                                    authorized_record(grant, job, token_hash)])
    for result in results:
        if isinstance(result, AuditUnavailable):
            raise result
    if minted is not None:
        crashpoint(ctx, "token-minted")
    record = results[-1]
    assert isinstance(record, AuditRecord)
    return {
        "phase": "TokenIssued", "reason": "TokenIssued",
        "message": f"token issued to gateway Job {job['metadata']['name']}",
        "tokenSecretName": secret_name, "tokenSHA256": token_hash,
        "tokenExpirationTime": conditions.rfc3339(dt.datetime.fromtimestamp(expires, dt.UTC)),
        "jobName": job["metadata"]["name"], "conditions": conds,
        "observedGeneration": gen, "auditRecordHash": f"sha256:{record.hash}"}


async def write_issued(ctx: Context, grant: Any, status: dict[str, Any]) -> dict[str, Any]:
    """Write the ``TokenIssued`` status; returns the grant as written. The token it records is
    counted as minted here, once: whether this run stores its Secret or adopts the one an
    interrupted run stored (which counted nothing: it did not get as far as the status); a
    token stored again after its Secret was lost is not written here."""
    updated = await write_status(ctx, grant, status)
    ctx.metrics.grants.labels(environment=ctx.env, outcome="TokenIssued").inc()
    ctx.metrics.tokens_minted.labels(environment=ctx.env).inc()
    crashpoint(ctx, "status-written")
    return updated


async def release(ctx: Context, grant: Any, job: dict[str, Any], *, stored: bool) -> None:
    """The gateway may start: its token is in place (``stored``: by this run, or this run
    recorded the ``TokenIssued`` of a Secret an interrupted run stored, or created the Secret
    of a token issued on its claim; the grant's time from its creation to this is observed).
    A Job an earlier release created suspended is unsuspended here (the Job controller starts
    the gateway pod)."""
    if job.get("spec", {}).get("suspend"):
        await ctx.write(ctx.kube.patch, JOBS, grant["metadata"]["namespace"],
                        job["metadata"]["name"], {"spec": {"suspend": False}})
        stored = True
    entry = _entry(ctx, grant)
    if entry is not None:
        entry.released = True
        ctx.tracker.settle(entry, None, _now())
    if stored:
        created_at = rules.parse_time(grant["metadata"].get("creationTimestamp"))
        if created_at is not None:
            ctx.metrics.grant_latency.labels(environment=ctx.env).observe(
                max(0.0, (_now() - created_at).total_seconds()))


async def finish(ctx: Context, grant: Any, phase: str, reason: str, message: str) -> None:
    """A final phase the gateway could not write itself (crash, deadline, expiry). ``grant`` is
    its view: the final status of a grant issued on its claim records its token's fields."""
    now = _now()
    gen = int(grant["metadata"].get("generation") or 1)
    record = await ctx.audit(f"Grant{phase}", subject_of(grant), {  # all of what status keeps
        "reason": reason, "message": message[:logic.MESSAGE_CHARS]})
    conds = conditions.set_condition(grant.get("status", {}).get("conditions") or [],
                                     "Succeeded", False, reason, message, gen, now)
    conds = conditions.grant_ready(conds, phase, message, gen, now)
    status = grant.get("status") or {}
    # a grant issued on its claim (its view): the final status records its token too
    token = {k: status[k] for k in grant_rules.ISSUED_FIELDS if status.get(k)}
    await write_status(ctx, grant, {**token, "phase": phase, "reason": reason,
                                    "message": message,
                                    "completionTime": conditions.rfc3339(now),
                                    "conditions": conds, "observedGeneration": gen,
                                    "auditRecordHash": f"sha256:{record.hash}"})
    ctx.event(grant, "Warning", reason, message)


async def job_result(ctx: Context, grant: Any, done: tuple[str, str], *,
                     ran_nothing: bool = False) -> None:
    """The gateway Job finished, but the grant has no final phase: the gateway could not say
    why (a crash, the deadline). ``ran_nothing``: the grant as stored, read after its Job's end
    was seen (``Entry.job_done_read``: a watch event's copy may lag the gateway's ``Running``),
    shows no gateway ever wrote ``Running`` (``logic.never_running``; the status is written
    over that version, so one that landed since refuses the write and the grant is read
    again)."""
    why, message = logic.job_ended_without_result(grant, names.grant_job_name(grant), *done,
                                                  ran_nothing=ran_nothing)
    await finish(ctx, grant, "Failed", why, message)


async def expire_token(ctx: Context, grant: Any) -> bool:
    """A TokenIssued grant (its view: issued on its claim, or by its status) whose token expired
    (plus leeway) while no gateway pod is active becomes Expired; True when that happened."""
    status = grant.get("status") or {}
    expires = rules.parse_time(status.get("tokenExpirationTime"))
    leeway = dt.timedelta(seconds=ctx.settings.leeway_seconds)
    if expires is None or _now() < expires + leeway:
        return False
    job = await ctx.call(ctx.kube.get_or_none, JOBS, grant["metadata"]["namespace"],
                         names.grant_job_name(grant))
    if job is not None and ((job.get("status") or {}).get("active") or 0) > 0:
        # a gateway pod is running (or waiting for a node); it refuses the expired token
        # itself, and the Job's end settles the grant: the sweep waits for its deadline
        entry = _entry(ctx, grant)
        if entry is not None:
            entry.job_deadline = job_deadline(job)
        return True
    await finish(ctx, grant, "Expired", "TokenExpired",
                 f"the token expired before the gateway ran; {_USED_UP}")
    # only the Secret: a gateway that already started is bounded by the Job's deadline
    await remove_artifacts(ctx, grant, job=False)
    return True


def _job_finished(job: Any) -> tuple[str, str] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
            return str(c["type"]), str(c.get("reason") or "")
    return None


def count_outcome(ctx: Context, obj: Any) -> None:
    """Metrics and Events for what the gateway wrote (once per grant and process)."""
    meta = obj.get("metadata") or {}
    uid = str(meta.get("uid"))
    status = obj.get("status") or {}
    if conditions.is_true(status.get("conditions"), "ReplayDetected") \
            and uid + "/replay" not in ctx.counted:
        ctx.counted.add(uid + "/replay")
        ctx.metrics.denial(ctx.env, "gateway", "ReplayRejected")
        if ctx.leading:
            ctx.event(obj, "Warning", "ReplayRejected",
                      "a second gateway run presented this grant's token; refused")
    if grant_rules.is_terminal(obj) and uid not in ctx.counted:
        ctx.counted.add(uid)
        done = rules.parse_time(status.get("completionTime"))
        if done is None or done >= ctx.started:
            phase = grant_rules.phase(obj)
            ctx.metrics.grants.labels(environment=ctx.env, outcome=phase).inc()
            if phase == "Failed" and status.get("reason") not in (None, "CommandFailed"):
                ctx.metrics.denial(ctx.env, "gateway", str(status.get("reason")))


def deleted(ctx: Context, uid: str) -> None:
    """A grant's deletion, as the watch delivers it: forgotten. Deleted by someone else than
    the operator's retirement, possibly with propagation Orphan, its Job and token Secret may
    stay without an owner, so the next sweep looks for them (``housekeeping.remove_orphans``).
    The retirement's own deletions (the entry's ``retire_recorded``, set before the delete; or
    already forgotten) use background propagation and leave nothing: they do not make every
    sweep of a busy operator list every Job and Secret."""
    entry = ctx.tracker.grants.get(uid)
    ctx.tracker.forget("grant", uid)
    ctx.counted.discard(uid)
    ctx.counted.discard(uid + "/replay")
    if entry is not None and not entry.retire_recorded:
        ctx.orphans_due = True


async def on_event(ctx: Context, event: Any) -> None:
    """A watch event of a grant: fed to the tracker, counted, reconciled if it needs work."""
    obj = event.get("object") or {}
    uid = (obj.get("metadata") or {}).get("uid")
    if not uid:
        return
    if event.get("type") == "DELETED":
        deleted(ctx, str(uid))
        return
    if await ctx.stale_event("grant", obj):
        return
    entry = ctx.tracker.observe_grant(obj, _now())
    count_outcome(ctx, obj)
    if entry.needs is None or not ctx.leading:
        return
    if entry.needs == "cleanup" and event.get("type") is None:
        return  # listed at start: the sweep removes leftovers with one list, not a read each
    await ctx.run("grant", dict(obj))


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    res = (GROUP, VERSION, "executiongrants")
    ctx.reconcilers["grant"] = Grants()

    @kopf.on.event(*res, registry=registry)
    async def grant_event(event: kopf.RawEvent, **_: Any) -> None:
        await on_event(ctx, event)

    @kopf.on.event("batch", "v1", "jobs", labels={names.ROLE_LABEL: "gateway"},
                   registry=registry)
    async def job_event(event: kopf.RawEvent, **_: Any) -> None:
        job: dict[str, Any] = dict(event.get("object") or {})
        refs: list[dict[str, Any]] = list((job.get("metadata") or {}).get("ownerReferences")
                                          or [])
        owners = [str(o.get("uid")) for o in refs if o.get("kind") == "ExecutionGrant"]
        entry = next((ctx.tracker.grants[u] for u in owners if u in ctx.tracker.grants), None)
        if entry is None:
            return
        if event.get("type") == "DELETED":
            entry.job_deadline = None  # a grant whose Job is gone: the sweep looks at expiry
            return
        finished = _job_finished(job)
        if finished is None:
            # its gateway pod was made (running, or waiting for a node or its token Secret),
            # as the watch tells it: the sweep reads nothing at the token's expiry and waits
            # for the Job's end, a watch event (``state.expiry_due``). Not cleared when the
            # pod goes (the Job fails then, backoffLimit 0, and its end settles the grant)
            if ((job.get("status") or {}).get("active") or 0) > 0:
                entry.job_deadline = job_deadline(job)
            return
        if entry.final_at is not None or entry.job_done is not None:
            return
        job_ended(ctx, entry, finished)
        if ctx.leading:
            await ctx.resync("grant", entry.namespace, entry.name, entry.uid)


__all__ = ["MINTED_ANNOTATION", "STEPS", "Grants", "deleted", "on_event", "owned_by",
           "register"]

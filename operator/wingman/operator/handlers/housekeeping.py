"""The shared sweep: one loop instead of a timer per object.

Every ``sweepIntervalSeconds`` (and at once when this replica becomes the leader) it:

- expires requests past their ``expirationTime`` (and warns before a pending one does) and
  grants whose token expired unused;
- re-syncs every request and grant that still needs work and was not attempted for
  ``resyncSeconds`` (an event lost to an outage, a write answered with an error although the
  server applied it): it is read afresh and reconciled again. On a takeover every unsettled
  object is re-synced at once;
- removes the token Secrets (and Denied grants' Jobs) of grants that were final when the
  operator started, with one list instead of one read per grant;
- removes the token Secrets and gateway Jobs that deleted grants left without an owner (a
  deletion with propagation Orphan): at start, at the next sweep after a grant's deletion and
  every ``GC_INTERVAL`` besides, with one list of each (``remove_orphans``);
- retires finished requests and grants older than the policy's ``retentionSeconds``: a
  ``...Retired`` audit record, then the object is deleted (its Job and Secret follow by owner
  reference); ``kubectl wingman describe`` points at the audit trail for them. Grants of a
  request that names rollbacks stay for ``rollbackWindowSeconds`` too, and a request goes only
  after its grants. In waves (``retire``): at most ``RETIRE_WAVE`` a pass, grants first, each
  kind oldest first; while more are due and fewer than a tenth of the pass's deletes failed
  for another reason than a refusal, the next pass follows ``RETIRE_PAUSE_SECONDS`` later
  (when the sweep interval is longer). A delete the API server refused (an admission policy
  or webhook) takes no room in a wave: such objects are tried again once per sweep interval,
  after the wave, least recently tried first, counted in ``wingman_retirement_refused_total``
  and reported once per object by a Warning Event ``RetirementRefused``;
- at the first pass that retires nothing after some were retired, hands the memory they held
  back to the OS (``memory.release``; at most once a minute while retirements go on);
- exports the gauges (requests by phase, pending approvals, the age of the oldest object
  still waiting for the operator), reloads rotated signing keys (every few seconds) and
  collects burn markers (every few minutes).

Burn markers (Leases ``wingman-burn-<jti>``) prove a token was used; one deleted too early
would let its token be used again, so a marker is removed only when its token has been
expired for longer than the leeway plus ``MARKER_GRACE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from wingman import API_VERSION, GROUP
from wingman.capability import keyring as keyring
from wingman.errors import AuditUnavailable, ClusterError
from wingman.kube import APPROVALS, GRANTS, JOBS, LEASES, SECRETS, ApiError, Keep
from wingman.model import names
from wingman.operator import manifests, memory
from wingman.operator.context import KINDS, Context, NotLeading, subject_of
from wingman.operator.manifests import owned_by
from wingman.operator.state import Entry, due_for_retirement, expiry_due

log = logging.getLogger("wingman.operator.housekeeping")
MARKER_GRACE_SECONDS = 3600
KEY_RELOAD_SECONDS = 5.0
GC_INTERVAL = 300.0
RELEASE_INTERVAL = 60.0
RESYNC_CONCURRENCY = 16
#: The most finished objects one pass of the sweep retires; the rest follow in the next
#: passes, ``RETIRE_PAUSE_SECONDS`` apart. Retiring a whole burst at once (thousands of
#: deletions, each followed by its watch event and that of the Job the garbage collector
#: removes after it) held all their events in the operator at the same moment.
RETIRE_WAVE = 200
RETIRE_PAUSE_SECONDS = 2.0
#: The waves go on at the sweep interval instead once a tenth or more of a pass's deletes
#: failed for another reason than a refusal (an API server in trouble is not asked sooner).
SLOW_DOWN_SHARE = 10
#: The token Secrets, as the API server selects them (by type): the sweep's lists of them read
#: their metadata alone, so no sweep ever reads a token. (Its lists of gateway Jobs read
#: metadata alone too: a page of 500 Jobs with their pod specs, decoded, held 28-43 MiB for a
#: moment at every orphan sweep of a namespace that keeps a burst's Jobs.)
TOKEN_SECRETS = f"type={names.SECRET_TYPE}"
#: Objects per page of the sweep's lists, of which it keeps little: a Job's metadata is still
#: 1-2 KB (its managed fields), so pages of 100 keep a decoded page to a few MiB.
SWEEP_PAGE_SIZE = 100
#: Answers that refuse a delete (an admission policy, RBAC, a webhook's denial); a server
#: error counts only when it names a webhook (one that failed or timed out): anything else of
#: 5xx, a 409 (the object was replaced) or 429 is "not now", not a refusal.
REFUSED_STATUSES = (400, 403, 405, 422)
PHASES = ("Pending", "Reviewing", "AwaitingDecision", "AutoApproved", "Approved", "Rejected",
          "Expired")


def refused(exc: ApiError) -> bool:
    """Whether the API server refused a delete (pure)."""
    return exc.status in REFUSED_STATUSES or (
        exc.status >= 500 and exc.status not in (503, 504) and "webhook" in str(exc).lower())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def update_gauges(ctx: Context, now: dt.datetime) -> None:
    approvals = list(ctx.tracker.approvals.values())
    counts = Counter(e.phase for e in approvals)
    for phase in PHASES:
        ctx.metrics.requests.labels(environment=ctx.env, phase=phase).set(counts.get(phase, 0))
    pending = [e.created for e in approvals if e.phase == "AwaitingDecision"]
    ctx.metrics.pending.labels(environment=ctx.env).set(len(pending))
    oldest = max(((now - c).total_seconds() for c in pending), default=0.0)
    ctx.metrics.oldest_pending.labels(environment=ctx.env).set(max(0.0, oldest))
    for kind in ("approval", "grant"):
        resource = KINDS[kind].plural
        unsettled = sum(1 for e in ctx.tracker.all() if e.kind == kind and e.needs)
        ctx.metrics.unprocessed.labels(environment=ctx.env, resource=resource).set(unsettled)
        ctx.metrics.oldest_unprocessed.labels(environment=ctx.env, resource=resource).set(
            ctx.tracker.oldest_unsettled(kind, now))
    ctx.metrics.active.set(1 if ctx.leading else 0)


def expired_markers(leases: list[dict[str, Any]], now: float, leeway: int) -> list[str]:
    """Names of burn markers whose token expired more than leeway + grace ago (pure)."""
    out = []
    for lease in leases:
        meta = lease.get("metadata", {})
        try:
            expires = int((meta.get("annotations") or {})[names.EXPIRES_ANNOTATION])
        except (KeyError, ValueError):
            continue  # no readable expiry: keep it (never delete a marker early)
        if now > expires + leeway + MARKER_GRACE_SECONDS:
            out.append(str(meta["name"]))
    return out


def collect_markers(ctx: Context) -> int:
    ns = ctx.settings.namespace
    leases = ctx.kube.list(LEASES, ns, label_selector=f"{names.ROLE_LABEL}=burn-marker")
    expired = expired_markers(leases, dt.datetime.now(dt.UTC).timestamp(),
                              ctx.settings.leeway_seconds)
    for name in expired:
        ctx.check_leading()
        ctx.kube.delete(LEASES, ns, name)
    return len(expired)


def reload_keys(ctx: Context) -> None:
    """Pick up a rotation made with ``wingman keys rotate`` and republish the public keys."""
    secret = ctx.kube.get(SECRETS, ctx.settings.namespace,
                          ctx.settings.signing_key_secret)
    ring = keyring.ring_from_secret(secret, ctx.settings.signing_key_secret)
    if set(ring.keys) != set(ctx.ring.keys) or ring.active != ctx.ring.active:
        ctx.check_leading()
        keyring.publish(ctx.kube, ctx.settings.namespace, ctx.settings.public_keys_configmap,
                        ring, labels=ctx.settings.object_labels)
        ctx.ring = ring
        ctx.metrics.signing_keys.set(len(ring.keys))
        log.info("signing keys reloaded", extra={"active_kid": ring.active,
                                                 "kids": sorted(ring.keys)})


def due_for_resync(ctx: Context, now: dt.datetime, mono: float, everything: bool
                   ) -> list[Entry]:
    """Objects the sweep reconciles now: due expiries (:func:`expiry_due`), and unsettled
    objects not attempted for ``resyncSeconds`` (every unsettled one on a takeover); none
    that is being reconciled or has a retry scheduled (``Context.busy``)."""
    leeway = dt.timedelta(seconds=ctx.settings.leeway_seconds)
    out: list[Entry] = []
    for e in ctx.tracker.all():
        if ctx.busy(e.kind, e.uid):
            continue
        if expiry_due(e, now, mono, leeway, ctx.settings.resync_seconds):
            out.append(e)
        elif e.final_at is None and e.warn_at is not None and now >= e.warn_at:
            out.append(e)
        elif e.needs is not None and e.needs != "cleanup" and (
                everything or mono - e.attempted >= ctx.settings.resync_seconds):
            out.append(e)
    return out


async def resync_all(ctx: Context, entries: list[Entry]) -> None:
    gate = asyncio.Semaphore(RESYNC_CONCURRENCY)

    async def one(e: Entry) -> None:
        async with gate:
            e.attempted = time.monotonic()
            await ctx.resync(e.kind, e.namespace, e.name, e.uid)
    for result in await asyncio.gather(*(one(e) for e in entries), return_exceptions=True):
        if isinstance(result, Exception):  # Context.run handles failures; this is a bug
            log.error("re-sync failed", exc_info=result)


async def clean_leftovers(ctx: Context) -> None:
    """Token Secrets (and Denied grants' Jobs) of grants that were already final when this
    replica started: one list of each instead of one read per grant."""
    waiting = [e for e in ctx.tracker.grants.values()
               if e.needs == "cleanup" and e.attempted == 0.0]
    if not waiting:
        return
    ns = ctx.settings.namespace
    owners = {e.uid for e in waiting}
    denied = {e.uid for e in waiting if e.phase == "Denied"}

    def owned(uids: set[str]) -> Keep:
        """Only the metadata of what one of ``uids`` owns is kept of a list, page by page: the
        Jobs of a week's grants are never held at once, nor a token (should whole objects
        come where metadata alone was asked for)."""
        return lambda o: {"metadata": o.get("metadata") or {}} if _of_type(o) and any(
            str(r.get("uid")) in uids for r in (
                (o.get("metadata") or {}).get("ownerReferences") or [])) else None

    secrets = await ctx.call(ctx.kube.list, SECRETS, ns, label_selector=names.GRANT_LABEL,
                             field_selector=TOKEN_SECRETS, keep=owned(owners),
                             metadata_only=True, page_size=SWEEP_PAGE_SIZE)
    jobs = await ctx.call(ctx.kube.list, JOBS, ns, label_selector=f"{names.ROLE_LABEL}=gateway",
                          keep=owned(denied), metadata_only=True, page_size=SWEEP_PAGE_SIZE)
    by_owner: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for res, items in ((SECRETS, secrets), (JOBS, jobs)):
        for obj in items:
            for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
                by_owner.setdefault(str(ref.get("uid")), []).append((res, obj))
    for e in waiting:
        e.attempted = time.monotonic()
        grant = {"metadata": {"uid": e.uid, "name": e.name, "namespace": e.namespace}}
        for res, obj in by_owner.get(e.uid, []):
            if res is JOBS and e.phase != "Denied":
                continue  # a finished grant's Job stays (its pod log) until retention
            if owned_by(obj, grant):
                await ctx.write(ctx.kube.delete, res, ns, obj["metadata"]["name"],
                                uid=obj["metadata"]["uid"])
        e.cleaned = True
        ctx.tracker.settle(e, None, _now())


def _owned(obj: dict[str, Any]) -> bool:
    """Whether anything owns ``obj`` (pure): the operator makes a grant's Job and Secret with
    the grant's owner reference only, which a deletion with propagation Orphan removes."""
    return bool((obj.get("metadata") or {}).get("ownerReferences"))


def _deleting(obj: dict[str, Any]) -> bool:
    """Whether ``obj`` is being deleted already (pure): its deletion was asked, and a finalizer
    holds it until it is removed."""
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def job_grant_uid(job: dict[str, Any]) -> str:
    """The UID of the grant a gateway Job was made for (its pod's ``WINGMAN_GRANT_UID``), or ""
    (pure)."""
    for container in manifests.job_pod_spec(job).get("containers") or []:
        for var in container.get("env") or []:
            if var.get("name") == "WINGMAN_GRANT_UID" and var.get("value"):
                return str(var["value"])
    return ""


def _job_outline(job: dict[str, Any]) -> dict[str, Any]:
    """What the orphan sweep keeps of a gateway Job: identity, labels, owners, whether it is
    being deleted, and the UID of its grant when its pod spec is there (never the spec; of a
    Job listed by its metadata alone, "")."""
    meta = job.get("metadata") or {}
    return {"metadata": {k: meta.get(k) for k in ("name", "uid", "labels", "ownerReferences",
                                                  "deletionTimestamp")},
            "grant": job_grant_uid(job)}


def _candidate(obj: dict[str, Any]) -> bool:
    """Whether a listed token Secret (its metadata) could be an orphan: nothing owns it and it
    is not being deleted (pure). Only these are kept of the orphan sweep's list."""
    return not _owned(obj) and not _deleting(obj)


def _of_type(obj: dict[str, Any]) -> bool:
    """False for a listed Secret whose type shows it is no token Secret (pure): the lists
    select token Secrets by type, and metadata alone has no type, so this holds only should an
    API server send whole objects and ignore the selector; a Job has no type."""
    return obj.get("type") in (None, names.SECRET_TYPE)


def _secret_outline(obj: dict[str, Any]) -> dict[str, Any] | None:
    """What the orphan sweep keeps of a listed token Secret (``TOKEN_SECRETS``: its type is
    known) that could be an orphan: identity, labels, owners, deletion and its annotations (its
    Job's UID, its grant's); and nothing of the others."""
    meta = obj.get("metadata") or {}
    return {"metadata": {k: meta.get(k) for k in ("name", "uid", "labels", "annotations",
                                                  "ownerReferences", "deletionTimestamp")},
            "type": names.SECRET_TYPE} if _candidate(obj) and _of_type(obj) else None


async def _whole(ctx: Context, res: Any, listed: dict[str, Any]) -> dict[str, Any] | None:
    """The object ``listed`` (its metadata) names, read whole; None when it is gone or was
    replaced (another UID) since the list."""
    meta = listed["metadata"]
    obj: dict[str, Any] | None = await ctx.call(ctx.kube.get_or_none, res,
                                                ctx.settings.namespace, meta["name"])
    if obj is None or (obj.get("metadata") or {}).get("uid") != meta.get("uid"):
        return None
    return obj


#: A token Secret's name as the operator makes it (``names.token_secret_name``): the chart's
#: admission policy lets only the operator create or change a Secret of this shape.
_TOKEN_SHAPED = re.compile(r".+-token-[0-9a-f]{16}\Z")


def orphans(secrets: list[dict[str, Any]], jobs: list[dict[str, Any]], live: set[str],
            vanished: frozenset[str] = frozenset()
            ) -> dict[tuple[str, str | None], list[tuple[Any, dict[str, Any]]]]:
    """The token Secrets and gateway Jobs (``_job_outline``) that a deleted grant left without
    an owner, by (grant name, grant UID) (pure).

    The grant's UID is its Job's (``WINGMAN_GRANT_UID``), else the one its token Secret records
    (``GRANT_UID_ANNOTATION``, read only on a name of the shape only the operator may make,
    ``<job>-token-<16 hex>``), else None: unknown, never "" (the Job is gone, or was made by
    a release that did not record it in its pod spec, and the Secrets were made by one that did
    not record it either; the grant's UID is then nowhere but in the token, which the sweep
    never reads). A Secret whose Job was listed and gone
    when read (``vanished``: deleted during this sweep) is left for the next sweep, neither
    recorded nor removed now: what deleted the Job may be removing the Secret too (a grant
    created again under the name removes its namesake's orphans at once), and the next sweep
    judges it on what is there then.

    Ours only: a Secret of type ``SECRET_TYPE`` with the grant label, a Job with the gateway
    role and the grant label. Orphaned only: nothing owns it (the garbage collector removed the
    owner reference of the grant deleted with propagation Orphan). Never one of a
    grant that is still there (``live``, by UID: a grant recreated under the old name is
    another UID): a Job made for it, or a Secret whose Job (``JOB_UID_ANNOTATION``) was made
    for it or is still owned, or whose own ``GRANT_UID_ANNOTATION`` names it (its Job gone or
    recording no grant). Never one being deleted already (``deletionTimestamp``: its
    deletion was asked, by an earlier sweep or anyone, and a finalizer may hold it for long):
    removing it again would record ``GrantOrphansRemoved`` again, at every sweep and every try
    of a grant that waits for its name, for what was removed once."""
    by_uid = {str(j["metadata"].get("uid")): j for j in jobs}
    out: dict[tuple[str, str | None], list[tuple[Any, dict[str, Any]]]] = {}
    for job in jobs:
        labels = job["metadata"].get("labels") or {}
        name = labels.get(names.GRANT_LABEL)
        if (not name or labels.get(names.ROLE_LABEL) != "gateway" or _owned(job)
                or job["grant"] in live or _deleting(job)):
            continue
        out.setdefault((name, job["grant"] or None), []).append((JOBS, job))
    for secret in secrets:
        meta = secret.get("metadata") or {}
        name = (meta.get("labels") or {}).get(names.GRANT_LABEL)
        if (not name or secret.get("type") != names.SECRET_TYPE or _owned(secret)
                or _deleting(secret)):
            continue
        annotations = meta.get("annotations") or {}
        job_uid = str(annotations.get(names.JOB_UID_ANNOTATION))
        if job_uid in vanished:
            continue  # its Job was deleted during this sweep: the next one judges it
        mounter = by_uid.get(job_uid)
        if mounter is not None and (_owned(mounter) or mounter["grant"] in live):
            continue  # its Job is owned, or a live grant's: not this sweep's to judge
        # the annotation only on a name only the operator may make (the chart's admission
        # policy): anyone else allowed to make Secrets could name a live grant in it
        recorded = (annotations.get(names.GRANT_UID_ANNOTATION)
                    if _TOKEN_SHAPED.match(str(meta.get("name") or "")) else None)
        grant = str((mounter or {}).get("grant") or recorded or "") or None
        if grant in live:
            continue  # it records a grant still there: not this sweep's to judge
        out.setdefault((name, grant), []).append((SECRETS, secret))
    return out


async def remove_orphans(ctx: Context, grant: str | None = None) -> int:
    """Delete the token Secrets and gateway Jobs of deleted grants that were left without an
    owner (``orphans``; a deletion with propagation Orphan, made while the operator ran or
    not): one list of each (of the grants named ``grant`` only, when given: a grant created
    again under a deleted one's name, whose orphaned Job is in the way), of their metadata
    only (the Secrets selected by type, ``TOKEN_SECRETS``), and a read of each Job that
    nothing owns (normally none: a grant owns its Job and Secret until both go with it), so
    that an orphan sweep never reads every retained Job's pod spec, nor any token. Per
    grant, a
    ``GrantOrphansRemoved`` audit record first, then the Secrets (no gateway pod may start with
    one once its Job is going), then the Jobs (their pods with them), each with a UID
    precondition; the record names the grant's UID as ``orphans`` finds it, null when unknown.
    A Secret whose Job was listed and gone when read is left to the next sweep, which is due at
    the next pass (``Context.orphans_due``). Returns how many were deleted."""
    ns = ctx.settings.namespace
    named = names.GRANT_LABEL if grant is None else f"{names.GRANT_LABEL}={grant}"

    secrets = await ctx.call(ctx.kube.list, SECRETS, ns, label_selector=named,
                             field_selector=TOKEN_SECRETS, keep=_secret_outline,
                             metadata_only=True, page_size=SWEEP_PAGE_SIZE)
    jobs: list[dict[str, Any]] = []
    vanished: set[str] = set()  # Jobs listed, and gone when read
    for listed in await ctx.call(ctx.kube.list, JOBS, ns,
                                 label_selector=f"{names.ROLE_LABEL}=gateway,{named}",
                                 keep=_job_outline, metadata_only=True, page_size=SWEEP_PAGE_SIZE):
        # the UID of an orphan's grant is in its pod spec, which a Job's metadata lacks: every
        # Job nothing owns is read whole (one being deleted too: its unowned Secret is judged
        # by it); every Job's outline is kept (an unowned Secret's Job may be owned: then the
        # Secret is not orphaned)
        job = await _whole(ctx, JOBS, listed) if not _owned(listed) else listed
        if job is not None:
            jobs.append(_job_outline(job))
        else:
            vanished.add(str(listed["metadata"].get("uid")))
    found = orphans(secrets, jobs, set(ctx.tracker.grants), frozenset(vanished))
    if vanished:  # a Secret of a Job deleted meanwhile may have been left: look again soon
        ctx.orphans_due = True
    removed = 0
    for (name, uid), objs in sorted(found.items(), key=lambda item: (item[0][0],
                                                                     item[0][1] or "")):
        # an unknown UID is recorded as null, and said so: never as ""
        subject = {"kind": "ExecutionGrant", "namespace": ns, "name": name, "uid": uid}
        why = ("the grant was deleted and its dependents were left without an owner "
               "(propagation Orphan)")
        if uid is None:
            why += ("; the grant's UID is not known: nothing left of it records it (its "
                    "gateway Job is gone or was made by an earlier release, and its token "
                    "Secrets were made by an earlier release, which did not record it there)")
        await ctx.audit("GrantOrphansRemoved", subject, {
            "secrets": sorted(o["metadata"]["name"] for r, o in objs if r is SECRETS),
            "jobs": sorted(o["metadata"]["name"] for r, o in objs if r is JOBS),
            "why": why})
        for res, obj in sorted(objs, key=lambda ro: ro[0] is JOBS):
            ctx.check_leading()
            if await ctx.write(ctx.kube.delete, res, ns, obj["metadata"]["name"],
                               uid=obj["metadata"]["uid"]):
                removed += 1
                ctx.metrics.orphans_removed.labels(environment=ctx.env,
                                                   resource=res.plural).inc()
        log.info("removed what a deleted grant left without an owner", extra={
            "grant": name, "grant_uid": uid, "objects": len(objs)})
    return removed


async def retire_one(ctx: Context, e: Entry, seconds: int) -> None:
    """Audit ``...Retired``, then delete the object (its Job and Secret follow by owner
    reference) and forget it."""
    res = APPROVALS if e.kind == "approval" else GRANTS
    kind = "ApprovalRequest" if e.kind == "approval" else "ExecutionGrant"
    subject = subject_of({"kind": kind, "metadata": {
        "namespace": e.namespace, "name": e.name, "uid": e.uid}})
    if not e.retire_recorded:  # once, however often a refused delete is retried
        await ctx.audit(f"{'Approval' if e.kind == 'approval' else 'Grant'}Retired", subject, {
            "phase": e.phase, "finishedAt": e.final_at.isoformat() if e.final_at else None,
            "retentionSeconds": seconds})
        e.retire_recorded = True
    try:
        await ctx.write(ctx.kube.delete, res, e.namespace, e.name, uid=e.uid)
    except ApiError as exc:
        if not exc.not_found:
            if refused(exc):
                report_refusal(ctx, e, kind, seconds, exc)
            raise
    ctx.tracker.forget(e.kind, e.uid)
    ctx.metrics.retired.labels(environment=ctx.env, resource=res.plural).inc()


def report_refusal(ctx: Context, e: Entry, kind: str, seconds: int, exc: ApiError) -> None:
    """The API server refused to delete ``e`` after the retention: counted every time, and a
    Warning Event on the object once, however often the sweep retries it (once per process:
    a restarted or new leader reports it once more)."""
    res = KINDS[e.kind]
    ctx.metrics.retirement_refused.labels(environment=ctx.env, resource=res.plural).inc()
    if e.retire_refusal_reported:
        return
    e.retire_refusal_reported = True
    stays = "It stays, and so does its ApprovalRequest" if e.kind == "grant" else "It stays"
    obj = {"apiVersion": API_VERSION, "kind": kind,
           "metadata": {"namespace": e.namespace, "name": e.name, "uid": e.uid}}
    ctx.event(obj, "Warning", "RetirementRefused",
              f"The API server refused to delete this {kind} after the retention "
              f"({seconds} s): {str(exc)[:500].rstrip('.')}. {stays}, and the operator "
              "tries again once per sweep interval. Unless it is kept on purpose, check the "
              f"admission policies and webhooks that match DELETE of {res.plural}.{GROUP} "
              "(kubectl get validatingadmissionpolicies,validatingwebhookconfigurations).")


@dataclasses.dataclass
class Retirement:
    """What one pass of :func:`retire` did: how many it retired, whether more are due that a
    pass can take now (the next pass comes sooner then), and its first failure (the others
    were retired all the same)."""

    retired: int = 0
    more: bool = False
    failure: Exception | None = None


async def retire(ctx: Context, now: dt.datetime, *, wave: int = RETIRE_WAVE,
                 refused_too: bool = True) -> Retirement:
    """Delete finished requests and grants older than the retention, after auditing it:
    grants first, then the requests none of whose grants is left, up to
    ``RESYNC_CONCURRENCY`` at a time; at most ``wave`` of those not refused before, each kind
    oldest first. Those whose delete the API server refused before take no room in that wave:
    after it, and only when ``refused_too`` (the sweep: once per sweep interval), up to
    ``wave`` grants and ``wave`` requests of them are tried again, least recently tried first
    (so each gets its turn, however many are held). One that fails stays (and so does its
    request) for a later pass, the others are retired all the same; a lost lead is the failure
    handed back whatever else failed. ``more`` is set when objects not refused before were left
    for the next pass, unless a tenth or more of this pass's deletes failed for another reason
    than a refusal (``SLOW_DOWN_SHARE``: an API server in trouble is not asked again sooner)."""
    seconds = ctx.settings.policy.retention_seconds
    if seconds <= 0:
        return Retirement()
    window = dt.timedelta(seconds=ctx.settings.policy.rollback_window_seconds)
    due = due_for_retirement(ctx.tracker, dt.timedelta(seconds=seconds), now,
                             rollback_window=window)
    gate = asyncio.Semaphore(RESYNC_CONCURRENCY)
    out = Retirement()
    tried: set[str] = set()
    failed = 0  # deletes that failed for another reason than a refusal

    async def one(e: Entry) -> int:
        nonlocal failed
        async with gate:
            e.retire_tried = time.monotonic()
            try:
                await retire_one(ctx, e, seconds)
            except Exception as exc:  # noqa: BLE001 - handed back, after the others
                # losing the lead says more than any other failure: it stops the sweep
                out.failure = exc if isinstance(exc, NotLeading) else out.failure or exc
                failed += not (isinstance(exc, ApiError) and refused(exc))
                return 0
            return 1

    async def wave_of(entries: list[Entry], room: int, key: Callable[[Entry], Any]) -> int:
        chosen = sorted(entries, key=key)[:max(0, room)]
        tried.update(e.uid for e in chosen)
        return sum(await asyncio.gather(*(one(e) for e in chosen)))

    def free(entries: list[Entry]) -> list[Entry]:
        """The requests of ``entries`` none of whose grants is left."""
        return [e for e in entries if e.kind == "approval" and not ctx.tracker.grants_of(e.name)]

    fresh = [e for e in due if not e.retire_refusal_reported]
    again = [e for e in due if e.retire_refusal_reported]  # before this pass refuses any
    grants = [e for e in fresh if e.kind == "grant"]
    out.retired += await wave_of(grants, wave, _age)
    out.retired += await wave_of(free(fresh), wave - len(grants), _age)
    held = {g.approval for g in ctx.tracker.grants.values() if g.retire_refusal_reported}
    out.more = failed * SLOW_DOWN_SHARE < max(1, len(tried)) and any(
        e.uid not in tried and not (e.kind == "approval" and e.name in held) for e in fresh)
    if refused_too and ctx.leading:  # least recently tried first: each gets its turn
        out.retired += await wave_of([e for e in again if e.kind == "grant"], wave, _tried)
        out.retired += await wave_of(free(again), wave, _tried)
    if out.retired:
        log.info("retired finished objects", extra={"count": out.retired, "more": out.more,
                                                    "retention_seconds": seconds})
    return out


def _age(e: Entry) -> dt.datetime:
    return e.final_at or dt.datetime.min.replace(tzinfo=dt.UTC)


def _tried(e: Entry) -> float:
    return e.retire_tried


class Sweeper:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.stopped = asyncio.Event()
        self.wake = asyncio.Event()
        self.takeover = False
        self.task: asyncio.Task[None] | None = None
        self._keys_at = 0.0
        self._gc_at = 0.0
        self._orphans_at = 0.0
        self._retired = 0  # retired since memory was last released
        self._more_to_retire = False  # the last wave left some: the next pass comes sooner
        self._refused_at = 0.0  # when deletes refused before were last tried again
        self._released_at = 0.0

    def leadership_changed(self, leading: bool) -> None:
        """Called from the election thread."""
        if leading and self.task is not None:
            loop = self.task.get_loop()
            loop.call_soon_threadsafe(self._takeover)

    def _takeover(self) -> None:
        self.takeover = True
        self.ctx.orphans_due = True
        self.wake.set()

    async def loop(self) -> None:
        ctx = self.ctx
        while not self.stopped.is_set():
            try:
                await self.once()
            except NotLeading:
                self._more_to_retire = False
            except (ClusterError, AuditUnavailable) as exc:
                ctx.metrics.reconcile_errors.labels(resource="housekeeping").inc()
                log.warning("sweep failed; it runs again shortly",
                            extra={"error": str(exc)[:300]})
            except Exception:
                ctx.metrics.reconcile_errors.labels(resource="housekeeping").inc()
                log.exception("sweep failed")
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), self.pause())
            except TimeoutError:
                pass

    async def once(self) -> None:
        ctx = self.ctx
        now, mono = _now(), time.monotonic()
        update_gauges(ctx, now)
        if not ctx.leading:
            return
        everything, self.takeover = self.takeover, False
        if everything:
            log.info("leading: re-syncing every object that still needs work",
                     extra={"objects": len(ctx.tracker.unsettled())})
        await run_stages(
            lambda: resync_all(ctx, due_for_resync(ctx, now, mono, everything)),
            lambda: clean_leftovers(ctx),
            lambda: self._orphans(mono),
            lambda: self._retire(now, mono),
            lambda: self._keys(mono),
            lambda: self._markers(mono))

    def pause(self) -> float:
        """How long until the next pass: the sweep interval, or ``RETIRE_PAUSE_SECONDS`` while
        a retirement goes on in waves (on the leader only)."""
        interval = float(self.ctx.settings.sweep_interval_seconds)
        if self._more_to_retire and self.ctx.leading:
            return min(interval, RETIRE_PAUSE_SECONDS)
        return interval

    async def _retire(self, now: dt.datetime, mono: float) -> None:
        self._more_to_retire = False
        refused_too = mono - self._refused_at >= self.ctx.settings.sweep_interval_seconds
        if refused_too:
            self._refused_at = mono
        result = await retire(self.ctx, now, wave=RETIRE_WAVE, refused_too=refused_too)
        self._more_to_retire = result.more
        self._retired += result.retired
        if self._retired and (not result.retired or mono - self._released_at >= RELEASE_INTERVAL):
            # a pass with nothing left to retire after some were (or the waves have gone on for
            # a while): what they freed goes back. Not at every pass that retired a few: a
            # steady trickle would run a full collection at every sweep
            self._retired, self._released_at = 0, mono
            await self.ctx.call(memory.release)
        if result.failure is not None:
            raise result.failure

    async def _orphans(self, mono: float) -> None:
        """Look for what deleted grants left without an owner: at start (and on a takeover),
        at the next sweep after a grant was deleted by someone else than the retirement, and
        every ``GC_INTERVAL`` besides (a deletion the watch did not deliver)."""
        ctx = self.ctx
        if not ctx.orphans_due and mono - self._orphans_at < GC_INTERVAL:
            return
        ctx.orphans_due, self._orphans_at = False, mono  # a deletion from now on: once more
        try:
            await remove_orphans(ctx)
        except BaseException:
            ctx.orphans_due = True
            raise

    async def _keys(self, mono: float) -> None:
        if mono - self._keys_at >= KEY_RELOAD_SECONDS:
            self._keys_at = mono
            await self.ctx.call(reload_keys, self.ctx)

    async def _markers(self, mono: float) -> None:
        if mono - self._gc_at >= GC_INTERVAL:
            self._gc_at = mono
            await self.ctx.call(collect_markers, self.ctx)


async def run_stages(*stages: Callable[[], Awaitable[object]]) -> None:
    """Run the sweep's stages in order, each even when an earlier one failed (a grant that
    cannot be retired must not keep a rotated key from being noticed), then raise the first
    failure; ``NotLeading`` stops them at once (nothing else is this replica's to do)."""
    failure: Exception | None = None
    for stage in stages:
        try:
            await stage()
        except NotLeading:
            raise
        except Exception as exc:  # noqa: BLE001 - raised once every stage had its turn
            failure = failure or exc
    if failure is not None:
        raise failure


def register(registry: kopf.OperatorRegistry, ctx: Context) -> Sweeper:
    sweeper = Sweeper(ctx)

    @kopf.on.startup(registry=registry)
    async def start_housekeeping(**_: Any) -> None:
        if ctx.events is not None:
            ctx.events.start()
        sweeper.task = asyncio.create_task(sweeper.loop(), name="sweep")
        if ctx.leading:
            sweeper._takeover()

    @kopf.on.cleanup(registry=registry)
    async def stop_housekeeping(**_: Any) -> None:
        sweeper.stopped.set()
        sweeper.wake.set()
        if sweeper.task is not None:
            await sweeper.task
        if ctx.events is not None:
            await ctx.events.stop()

    return sweeper


__all__ = ["MARKER_GRACE_SECONDS", "RETIRE_PAUSE_SECONDS", "RETIRE_WAVE", "Retirement", "Sweeper",
           "collect_markers", "due_for_resync", "expired_markers", "orphans", "refused",
           "register", "reload_keys", "remove_orphans", "report_refusal", "retire", "retire_one",
           "run_stages", "update_gauges"]

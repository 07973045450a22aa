"""ApprovalRequest: preview, review, count decisions, warn, expire — one level-triggered
reconcile.

Where the policy previews, a new request first gets its preview Job (``manifests.preview_job``,
the transitions in ``wingman.operator.previews``); the panel votes once the preview is
recorded, from the request with its preview, so the voters and people see it. The Job's
completion (or failure) is watched and reconciles the request at once; the sweep catches a
preview that outlives its deadline.

Every watch event of a request feeds the tracker; when the request still needs something
(``state.approval_needs``: a review, decisions not yet counted, the warning before a pending
request expires, an expiry) the leader
reconciles it from the body the event carried, without reading it again. All transitions due
in one pass (a review and the decisions approvers already added, say) are audited as one unit
(one wait, ``Context.audit_unit``) and written in one status write, guarded by the
resourceVersion that was read: a request that changed meanwhile is re-read and reconciled
again (the panel's result is kept, the panel does not run twice). The events of the
operator's own writes find nothing to do, and a copy older than one the operator has seen of
the request (a re-list's event or a re-sync's read, made before a write and run after it) is
read again instead of reconciled (``Context.run``): its review would otherwise be recorded a
second time before the write's guard refused it.

Nothing of the operator's progress lives in the object's metadata: what the operator did is
its status, which only the operator writes. Expiries and warnings that fall due are found by
the shared sweep (``housekeeping``), not by a timer per request.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import kopf

from wingman import GROUP, VERSION
from wingman.audit import AuditRecord
from wingman.errors import AuditUnavailable
from wingman.kube import APPROVALS, JOBS, PODS, ApiError, create_or_adopt
from wingman.model import names
from wingman.operator import approvals as logic
from wingman.operator import manifests, previews
from wingman.operator.context import Context, Retry, subject_of
from wingman.operator.state import Entry
from wingman.review.consensus import Consensus, run_panel

log = logging.getLogger("wingman.operator.approvals")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def pending_decisions(ctx: Context, body: Any, now: dt.datetime) -> bool:
    """Whether ``decided`` has something to write (as ``Approvals.reconcile`` calls it: never
    for a request refused for token-shaped text, whose decisions it does not look at)."""
    return logic.decided(body, ctx.settings.policy, now) is not None and \
        not logic.token_fields(body)


def observe(ctx: Context, body: Any) -> Entry:
    now = _now()
    return ctx.tracker.observe_approval(body, pending_decisions(ctx, body, now), now,
                                        warn_at=logic.next_warning(body, ctx.settings.policy))


class Approvals:
    """The reconciler of ApprovalRequests (``Context.run`` calls it under the object's lock)."""

    def __init__(self) -> None:
        self.results: dict[str, Consensus] = {}  # panel results not yet written, by uid
        # transitions audited whose status write failed (an outage), by uid: written again
        # with the same record instead of a second one
        self.unwritten: dict[str, list[Recorded]] = {}

    def observe(self, ctx: Context, body: dict[str, Any]) -> Entry:
        return observe(ctx, body)

    async def reconcile(self, ctx: Context, body: dict[str, Any]) -> None:
        now = _now()
        uid = str(body["metadata"]["uid"])
        transitions: list[logic.Transition] = []
        current: dict[str, Any] = body
        fields = logic.token_fields(body)
        if fields:
            t = logic.refused(body, "LooksLikeToken",
                              f"{', '.join(fields)} contain(s) text shaped like a capability "
                              "token (a JWT); Wingman never records, reviews or passes "
                              "credentials: submit a new request without it", now,
                              {"fields": fields})
            if t is not None:
                transitions.append(t)
        elif not logic.is_reviewed(body):
            if previews.needs_preview(body, ctx.settings.policy):
                t = await preview_step(ctx, body, now)
                if t is not None:
                    transitions.append(t)
                    current = logic.merged(current, t)
        if not fields and not logic.is_reviewed(current) and \
                previews.ready_for_review(current, ctx.settings.policy):
            consensus = self.results.get(uid)
            if consensus is None:
                # the panel may take its whole timeout: other objects take turns meanwhile
                async with ctx.outside_turn():
                    consensus = await run_panel(ctx.panel, logic.review_input(current))
                    self.results[uid] = consensus
                now = _now()  # as the review finished: the panel may have outlived the request
                ctx.metrics.consensus_latency.labels(environment=ctx.env).observe(
                    consensus.duration_seconds)
                for vote in consensus.votes:
                    ctx.metrics.votes.labels(environment=ctx.env, voter=vote.voter,
                                             verdict=vote.verdict.value).inc()
            t = logic.reviewed(current, consensus, ctx.settings.policy, now)
            if t is not None:
                transitions.append(t)
                current = logic.merged(current, t)
        if not fields:
            t = logic.decided(current, ctx.settings.policy, now)
            if t is not None:
                transitions.append(t)
                current = logic.merged(current, t)
            t = logic.expired(current, now) or logic.expiring(current, ctx.settings.policy, now)
            if t is not None:
                transitions.append(t)
        if transitions:
            await apply(ctx, body, transitions, self.unwritten.setdefault(uid, []))
        self.results.pop(uid, None)
        self.unwritten.pop(uid, None)

    def forget(self, uid: str) -> None:
        """A deleted request: drop what was kept for its next attempt."""
        self.results.pop(uid, None)
        self.unwritten.pop(uid, None)

    async def abandon(self, ctx: Context, body: dict[str, Any], reason: str,
                      message: str) -> None:
        uid = str(body["metadata"]["uid"])
        self.results.pop(uid, None)
        t = logic.refused(body, reason, message, _now())
        if t is not None:
            await apply(ctx, body, [t], self.unwritten.setdefault(uid, []))
        self.unwritten.pop(uid, None)


def _owns(obj: dict[str, Any], body: dict[str, Any]) -> bool:
    uid = body["metadata"]["uid"]
    return any(o.get("uid") == uid for o in (obj.get("metadata") or {}).get("ownerReferences")
               or [])


async def preview_step(ctx: Context, body: dict[str, Any], now: dt.datetime
                       ) -> logic.Transition | None:
    """Start the request's preview Job, or read its result once its pod has terminated."""
    meta = body["metadata"]
    ns = meta["namespace"]
    if not previews.phase_of(body):
        made, _ = await ctx.write(create_or_adopt, ctx.kube, JOBS, ns,
                                  manifests.preview_job(body, ctx.settings))
        if not _owns(made, body):
            return previews.failed(body, "PreviewJobConflict",
                                   f"Job {made['metadata']['name']} exists and belongs to "
                                   "another object; the request is reviewed without a preview",
                                   now)
        return previews.started(body, str(made["metadata"]["name"]), now)
    name = str((body.get("status") or {}).get("preview", {}).get("jobName")
               or names.preview_job_name(meta["name"]))
    job: dict[str, Any] | None = await ctx.call(ctx.kube.get_or_none, JOBS, ns, name)
    if job is None or not _owns(job, body):
        return previews.timed_out(body, ctx.settings.policy, now) or previews.failed(
            body, "PreviewJobMissing", f"the preview Job {name} is gone without a result", now)
    listed = await ctx.call(ctx.kube.list, PODS, ns, label_selector=(
        f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}"))
    pods = previews.job_pods(listed, job, ctx.settings.preview_service_account)
    failed = any(c.get("type") == "Failed" and c.get("status") == "True"
                 for c in (job.get("status") or {}).get("conditions") or [])
    return (previews.finished(body, pods, job_failed=failed, now=now)
            or previews.timed_out(body, ctx.settings.policy, now))


@dataclass(frozen=True)
class Recorded:
    """A transition whose audit record was appended, with the status it stands for."""

    event: str
    record: AuditRecord
    status: dict[str, Any]


async def apply(ctx: Context, body: dict[str, Any], transitions: list[logic.Transition],
                unwritten: list[Recorded] | None = None) -> dict[str, Any]:
    """Audit the transitions (durably, as one unit: one wait), write the status once, then
    Events and metrics.

    ``unwritten`` holds what an earlier attempt audited but could not write (the API server
    went away between the record and the status write): transitions that repeat it, in order,
    are written with that record and its status (its timestamps) instead of being audited
    again, so an outage leaves one record per transition. The list is extended with this
    attempt's records; the caller drops it once the write landed. (A reconcile cancelled while
    its records are written keeps none of them here: they may be written, and the next attempt
    records them again, at least once as every append.)"""
    subject = subject_of(body)
    done = unwritten if unwritten is not None else []
    kept = 0  # the transitions an earlier attempt audited, in the same order
    while kept < min(len(done), len(transitions)) and \
            done[kept].event == transitions[kept].audit_event:
        kept += 1
    fresh = transitions[kept:]
    if fresh:  # one wait for all of them; those before a failure stay recorded
        del done[kept:]
        results = await ctx.audit_unit([(t.audit_event, subject,
                                         {**t.audit_data, "phase": t.phase}) for t in fresh])
        for t, result in zip(fresh, results, strict=True):
            if isinstance(result, AuditUnavailable):
                raise result
            done.append(Recorded(t.audit_event, result, dict(t.status)))
    written = done[:len(transitions)]  # an earlier attempt may have recorded more
    status: dict[str, Any] = {}
    for recorded in written:
        status.update(recorded.status)
    status["auditHead"] = f"sha256:{written[-1].record.hash}"
    meta = body["metadata"]
    patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
    try:
        updated: dict[str, Any] = await ctx.write(
            ctx.kube.patch, APPROVALS, meta["namespace"], meta["name"], patch,
            subresource="status")
    except ApiError as exc:
        if exc.conflict:
            raise Retry("the request changed since it was read") from None
        raise
    observe(ctx, updated)
    for t in transitions:
        ctx.event(body, "Warning" if t.warning else "Normal", t.event_reason, t.message)
        ctx.metrics.transitions.labels(environment=ctx.env, phase=t.phase).inc()
        if t.decision:
            ctx.metrics.decisions.labels(environment=ctx.env, decision=t.decision).inc()
        if t.event_reason == "ExpiringSoon":
            ctx.metrics.expiry_warnings.labels(environment=ctx.env).inc()
        log.info("approval transition", extra={"approval": meta["name"], "phase": t.phase,
                                               "reason": t.event_reason})
    return updated


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    res = (GROUP, VERSION, "approvalrequests")
    reconciler = Approvals()
    ctx.reconcilers["approval"] = reconciler

    @kopf.on.event("batch", "v1", "jobs", labels={names.ROLE_LABEL: "preview"},
                   registry=registry)
    async def preview_job_event(event: kopf.RawEvent, **_: Any) -> None:
        """A preview Job that finished: its request is reconciled now (its result is read)."""
        job: dict[str, Any] = dict(event.get("object") or {})
        if event.get("type") == "DELETED" or not ctx.leading:
            return
        if not any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                   for c in (job.get("status") or {}).get("conditions") or []):
            return
        for ref in (job.get("metadata") or {}).get("ownerReferences") or []:
            entry = ctx.tracker.approvals.get(str(ref.get("uid")))
            if ref.get("kind") == "ApprovalRequest" and entry is not None \
                    and entry.needs == "review":
                await ctx.resync("approval", entry.namespace, entry.name, entry.uid)

    @kopf.on.event(*res, registry=registry)
    async def approval_event(event: kopf.RawEvent, **_: Any) -> None:
        await on_event(ctx, reconciler, event)


async def on_event(ctx: Context, reconciler: Approvals, event: Any) -> None:
    """A watch event of a request: fed to the tracker, and reconciled if it needs work."""
    obj = event.get("object") or {}
    uid = (obj.get("metadata") or {}).get("uid")
    if not uid:
        return
    if event.get("type") == "DELETED":
        ctx.tracker.forget("approval", uid)
        reconciler.forget(str(uid))
        return
    if await ctx.stale_event("approval", obj):
        return
    entry = observe(ctx, obj)
    if entry.needs is not None and ctx.leading:
        await ctx.run("approval", dict(obj))


__all__ = ["Approvals", "apply", "observe", "on_event", "pending_decisions", "register"]

"""ApprovalRequest handlers: review on create/resume, count decisions, warn and expire on a
timer."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import kopf

from wingman import GROUP, VERSION
from wingman.kube import APPROVALS
from wingman.model import approvals as rules
from wingman.operator import approvals as logic
from wingman.operator.context import Context, subject_of
from wingman.review.consensus import run_panel

log = logging.getLogger("wingman.operator.approvals")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def apply(ctx: Context, body: Any, t: logic.Transition) -> dict[str, Any]:
    """Audit (durably), write status, post the Event, count: in that order."""
    subject = subject_of(body)
    record = await ctx.audit(t.audit_event, subject, {**t.audit_data, "phase": t.phase})
    status = {**t.status, "auditHead": f"sha256:{record.hash}"}
    meta = body["metadata"]
    updated = await ctx.call(ctx.kube.patch, APPROVALS, meta["namespace"], meta["name"],
                             {"status": status}, subresource="status")
    kopf.event(body, type="Warning" if t.warning else "Normal", reason=t.event_reason,
               message=t.message[:1000])
    ctx.metrics.transitions.labels(environment=ctx.env, phase=t.phase).inc()
    if t.decision:
        ctx.metrics.decisions.labels(environment=ctx.env, decision=t.decision).inc()
    log.info("approval transition", extra={"approval": meta["name"], "phase": t.phase,
                                           "reason": t.event_reason})
    return updated


async def review(ctx: Context, body: Any) -> None:
    """Run the panel once, write its result, then count any decisions already present."""
    if not logic.is_reviewed(body):
        consensus = await run_panel(ctx.panel, logic.review_input(body))
        ctx.metrics.consensus_latency.labels(environment=ctx.env).observe(
            consensus.duration_seconds)
        for vote in consensus.votes:
            ctx.metrics.votes.labels(environment=ctx.env, voter=vote.voter,
                                     verdict=vote.verdict.value).inc()
        t = logic.reviewed(body, consensus, ctx.settings.policy, _now())
        if t is not None:
            await apply(ctx, body, t)
    meta = body["metadata"]
    fresh = await ctx.call(ctx.kube.get, APPROVALS, meta["namespace"], meta["name"])
    await decide(ctx, fresh)


async def decide(ctx: Context, body: Any) -> None:
    t = logic.decided(body, ctx.settings.policy, _now())
    if t is not None:
        await apply(ctx, body, t)


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    res = (GROUP, VERSION, "approvalrequests")

    @kopf.on.resume(*res, registry=registry)
    @kopf.on.create(*res, registry=registry)
    async def approval_created(body: kopf.Body, **_: Any) -> None:
        try:
            await review(ctx, body)
        except kopf.TemporaryError:
            raise
        except Exception:
            ctx.metrics.reconcile_errors.labels(resource="approvalrequests").inc()
            raise

    @kopf.on.field(*res, field="spec.decisions", registry=registry)
    async def decisions_changed(body: kopf.Body, **_: Any) -> None:
        meta = body["metadata"]
        try:
            fresh = await ctx.call(ctx.kube.get, APPROVALS, meta["namespace"], meta["name"])
            await decide(ctx, fresh)
        except kopf.TemporaryError:
            raise
        except Exception:
            ctx.metrics.reconcile_errors.labels(resource="approvalrequests").inc()
            raise

    def not_final(body: kopf.Body, **_: Any) -> bool:
        return not rules.is_final(body)

    @kopf.timer(*res, interval=ctx.settings.expiry_interval_seconds, when=not_final,
                registry=registry)
    async def expire(body: kopf.Body, **_: Any) -> None:
        now = _now()
        t = logic.expired(body, now) or logic.expiring(body, ctx.settings.policy, now)
        if t is not None:
            await apply(ctx, body, t)
            if t.event_reason == "ExpiringSoon":
                ctx.metrics.expiry_warnings.labels(environment=ctx.env).inc()

    @kopf.on.event(*res, registry=registry)
    def track(event: kopf.RawEvent, **_: Any) -> None:
        obj = event.get("object") or {}
        uid = obj.get("metadata", {}).get("uid")
        if not uid:
            return
        if event.get("type") == "DELETED":
            ctx.approvals.pop(uid, None)
            return
        created = rules.parse_time(obj["metadata"].get("creationTimestamp")) or _now()
        phase = (obj.get("status") or {}).get("phase") or "Pending"
        ctx.approvals[uid] = (phase, created)


__all__ = ["apply", "decide", "register", "review"]

"""Background duties: the pending-approval gauges, key reload (every few seconds), burn-marker
garbage collection (every few minutes).

Burn markers (Leases ``wingman-burn-<jti>``) prove a token was used; one deleted too early
would let its token be used again, so a marker is removed only when its token has been
expired for longer than the leeway plus ``MARKER_GRACE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import kopf

from wingman.capability import keyring as keyring
from wingman.kube import LEASES, SECRETS
from wingman.model import names
from wingman.operator.context import Context

log = logging.getLogger("wingman.operator.housekeeping")
MARKER_GRACE_SECONDS = 3600
GAUGE_INTERVAL = 5.0
GC_INTERVAL = 300.0
PHASES = ("Pending", "Reviewing", "AwaitingDecision", "AutoApproved", "Approved", "Rejected",
          "Expired")


def update_gauges(ctx: Context, now: dt.datetime) -> None:
    counts = Counter(phase for phase, _ in ctx.approvals.values())
    for phase in PHASES:
        ctx.metrics.requests.labels(environment=ctx.env, phase=phase).set(counts.get(phase, 0))
    pending = [created for phase, created in ctx.approvals.values()
               if phase == "AwaitingDecision"]
    ctx.metrics.pending.labels(environment=ctx.env).set(len(pending))
    oldest = max(((now - c).total_seconds() for c in pending), default=0.0)
    ctx.metrics.oldest_pending.labels(environment=ctx.env).set(max(0.0, oldest))


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
        ctx.kube.delete(LEASES, ns, name)
    return len(expired)


def reload_keys(ctx: Context) -> None:
    """Pick up a rotation made with ``wingman keys rotate`` and republish the public keys."""
    secret = ctx.kube.get(SECRETS, ctx.settings.namespace,
                          ctx.settings.signing_key_secret)
    ring = keyring.ring_from_secret(secret, ctx.settings.signing_key_secret)
    if set(ring.keys) != set(ctx.ring.keys) or ring.active != ctx.ring.active:
        keyring.publish(ctx.kube, ctx.settings.namespace, ctx.settings.public_keys_configmap,
                        ring, labels=ctx.settings.object_labels)
        ctx.ring = ring
        ctx.metrics.signing_keys.set(len(ring.keys))
        log.info("signing keys reloaded", extra={"active_kid": ring.active,
                                                 "kids": sorted(ring.keys)})


async def _loop(ctx: Context, stopped: asyncio.Event) -> None:
    ticks = 0
    while not stopped.is_set():
        update_gauges(ctx, dt.datetime.now(dt.UTC))
        ticks += 1
        duties: list[Callable[[Context], object]] = [reload_keys]
        if ticks % int(GC_INTERVAL / GAUGE_INTERVAL) == 1:
            duties.append(collect_markers)
        for duty in duties:
            try:
                await ctx.call(duty, ctx)
            except Exception as exc:  # noqa: BLE001 - retried next round, counted
                ctx.metrics.reconcile_errors.labels(resource="housekeeping").inc()
                log.warning("housekeeping failed", extra={"duty": duty.__name__,
                                                          "error": type(exc).__name__})
        try:
            await asyncio.wait_for(stopped.wait(), GAUGE_INTERVAL)
        except TimeoutError:
            pass


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    stopped = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_housekeeping(**_: Any) -> None:
        tasks.append(asyncio.create_task(_loop(ctx, stopped)))

    @kopf.on.cleanup(registry=registry)
    async def stop_housekeeping(**_: Any) -> None:
        stopped.set()
        for task in tasks:
            await task


__all__ = ["MARKER_GRACE_SECONDS", "collect_markers", "expired_markers", "register",
           "reload_keys", "update_gauges"]

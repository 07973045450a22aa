"""Signed checkpoints of the audit head, made regularly by the operator.

Each round (``settings.checkpoint_interval_seconds``, run by the housekeeping loop):

1. read the audit key ring from Secret ``settings.audit_key_secret`` (Ed25519, created at the
   first start; never the token-signing key; a rotation is picked up here);
2. read the stored checkpoints from ConfigMap ``settings.checkpoints_configmap`` and check
   their signatures against the ring;
3. verify the audit trail against them, reading only what is new since the last verified
   point (the whole trail once after a start);
4. when the head moved, sign a checkpoint of it, store it in the ConfigMap (the newest
   ``settings.checkpoints_kept`` are kept, with the ring's public keys) and send it to the
   external witness when one is configured (the newest one again next round if that failed).

A trail that does not extend the stored checkpoints is never checkpointed: the round raises
``CheckpointError`` (counted in ``wingman_audit_checkpoint_failures_total{reason}``, logged, and
alerted on) and the next round tries again from the same verified point. The gateway cannot
write the ConfigMap (no RBAC right; an admission policy lets only the operator write it), and
cannot read the audit key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from wingman.audit import (
    Checkpoint,
    Resume,
    parse_checkpoints,
    verify,
)
from wingman.audit.signing import check_signatures, sign_checkpoint
from wingman.audit.witness import WitnessError, send
from wingman.capability import keyring
from wingman.capability.keys import KeySet
from wingman.errors import AuditTampered, AuditUnavailable, ConfigError, WingmanError
from wingman.kube import CONFIGMAPS, ApiError, Kube, create_or_adopt
from wingman.operator.context import Context
from wingman.settings import OperatorSettings

log = logging.getLogger("wingman.operator.checkpoints")

CHECKPOINTS_KEY = "checkpoints.jsonl"
"""The ConfigMap key holding the checkpoints, oldest first (JSON Lines)."""


class CheckpointError(WingmanError):
    """No checkpoint this round: the trail did not verify, or the checkpoints did not."""

    reason = "AuditCheckpointFailed"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def configmap_body(name: str, namespace: str, checkpoints: list[Checkpoint], keys: KeySet,
                   ) -> dict[str, Any]:
    """The checkpoints ConfigMap: ``checkpoints.jsonl`` and ``<kid>.pem`` per audit key."""
    published = keys.to_mapping()  # {"<kid>.pem": public PEM}
    data = {entry: published[entry] for entry in sorted(published)}
    data[CHECKPOINTS_KEY] = "".join(f"{c.to_line()}\n" for c in checkpoints)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {**keyring.MANAGED,
                                    "app.kubernetes.io/component": "audit-checkpoints"}},
            "data": data}


def stored_checkpoints(configmap: dict[str, Any] | None, source: str) -> list[Checkpoint]:
    """The checkpoints in the ConfigMap, unverified (``AuditTampered`` if malformed)."""
    if configmap is None:
        return []
    text = (configmap.get("data") or {}).get(CHECKPOINTS_KEY) or ""
    return parse_checkpoints(str(text), source)


@dataclass
class Checkpointer:
    """The operator's checkpoint duty; ``round()`` is blocking (run it off the event loop)."""

    settings: OperatorSettings
    kube: Kube
    clock: Callable[[], dt.datetime] = _utcnow
    resume: Resume | None = None
    unwitnessed: Checkpoint | None = None
    newest: Checkpoint | None = field(default=None, init=False)

    @property
    def log_name(self) -> str:
        return self.settings.namespace

    def ring(self) -> keyring.KeyRing:
        """The audit key ring, generated (Secret created) when absent."""
        ring, created = keyring.load_or_create(self.kube, self.settings.namespace,
                                               self.settings.audit_key_secret)
        if created:
            log.info("audit key generated", extra={"secret": self.settings.audit_key_secret,
                                                   "kid": ring.active})
        return ring

    def round(self) -> Checkpoint | None:
        """Verify the new records and checkpoint the head; the new checkpoint, or ``None`` when
        the head has not moved. Raises ``CheckpointError`` (nothing signed) or ``WitnessError``
        (signed and stored, not yet witnessed)."""
        s = self.settings
        try:
            ring = self.ring()
        except ConfigError as exc:
            raise CheckpointError(f"the audit key is unusable: {exc.message}",
                                  reason="AuditKeyInvalid") from None
        keys = KeySet.from_mapping(ring.public_data())
        source = f"ConfigMap {s.namespace}/{s.checkpoints_configmap}"
        existing = self.kube.get_or_none(CONFIGMAPS, s.namespace, s.checkpoints_configmap)
        try:
            stored = check_signatures(stored_checkpoints(existing, source), keys, source)
        except AuditTampered as exc:
            raise CheckpointError(exc.message, reason="AuditCheckpointInvalid") from None
        previous = self.newest
        lost = previous is not None and (not stored or stored[-1].seq < previous.seq)
        try:
            report = verify(s.audit_target, checkpoints=stored, resume=self.resume)
        except AuditUnavailable as exc:
            raise CheckpointError(f"cannot read the audit trail: {exc.message}",
                                  reason="AuditUnavailable") from None
        if not report.ok:
            assert report.problem is not None
            raise CheckpointError(f"the audit trail does not verify, so it is not "
                                  f"checkpointed: {report.summary()}",
                                  reason=f"Audit{report.problem.kind}")
        self.resume = report.resume
        latest = stored[-1] if stored else None
        head = report.anchor
        if head is None or (latest is not None and latest.seq >= head.seq and not lost):
            self.newest = latest
            self._witness_pending()
            return None
        checkpoint = sign_checkpoint(ring.signer, log=self.log_name, anchor=head,
                                     now=self.clock())
        kept = [*stored, checkpoint][-s.checkpoints_kept:]
        self._store(existing, kept, keys)
        self.newest = checkpoint
        self.unwitnessed = checkpoint if s.witness_url else None
        log.info("audit checkpoint signed", extra={"seq": checkpoint.seq,
                                                   "hash": checkpoint.hash,
                                                   "kid": checkpoint.kid})
        if lost:
            assert previous is not None
            raise CheckpointError(
                f"{source} no longer holds the checkpoint this operator stored last "
                f"({previous.describe()}): someone deleted, emptied or rolled it back. The "
                f"trail still extends it and a new checkpoint (seq {checkpoint.seq}) is "
                "stored; find out who changed the ConfigMap (see docs/runbook.md)",
                reason="AuditCheckpointsLost")
        self._witness_pending()
        return checkpoint

    def _store(self, existing: dict[str, Any] | None, kept: list[Checkpoint],
               keys: KeySet) -> None:
        s = self.settings
        body = configmap_body(s.checkpoints_configmap, s.namespace, kept, keys)
        try:
            if existing is None:
                _obj, created = create_or_adopt(self.kube, CONFIGMAPS, s.namespace, body)
                if created:
                    return
                raise CheckpointError("the checkpoints ConfigMap appeared concurrently; "
                                      "checkpointing again next round", reason="Conflict")
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self.kube.request("PUT", CONFIGMAPS.path(s.namespace, s.checkpoints_configmap),
                              body)
        except ApiError as exc:
            reason = "Conflict" if exc.conflict else "ApiUnavailable"
            raise CheckpointError(f"cannot store the checkpoint in ConfigMap "
                                  f"{s.namespace}/{s.checkpoints_configmap}: {exc.message}",
                                  reason=reason) from None

    def _witness_pending(self) -> None:
        s = self.settings
        pending = self.unwitnessed
        if pending is None or not s.witness_url or not s.witness_hmac_key:
            return
        send(s.witness_url, s.witness_hmac_key.encode("utf-8"), pending,
             timeout=float(s.witness_timeout_seconds))
        self.unwitnessed = None
        log.info("audit checkpoint witnessed", extra={"seq": pending.seq})


def checkpoint_round(ctx: Context, checkpointer: Checkpointer) -> Checkpoint | None:
    """One round with its metrics and logs; never raises (an exception of no known kind, a
    fault, is counted ``Unexpected`` and logged with its traceback): the loop that calls it
    every interval outlives it, and the next round checkpoints what this one did not."""
    metrics = ctx.metrics
    if not ctx.leading:  # the replica that acts checkpoints; a standby only watches
        return None
    try:
        checkpoint = checkpointer.round()
    except WitnessError as exc:
        metrics.audit_witness_failures.inc()
        log.warning("audit checkpoint not witnessed; sent again next round",
                    extra={"reason": exc.reason, "error": exc.message})
        checkpoint = None
    except WingmanError as exc:
        if exc.reason == "Conflict":  # another replica stored one first: nothing lost
            log.info("audit checkpoint deferred", extra={"error": exc.message})
            return None
        metrics.audit_checkpoint_failures.labels(reason=exc.reason).inc()
        log.error("audit checkpoint failed", extra={"reason": exc.reason, "error": exc.message})
        return None
    except Exception:  # a fault: never the end of the checkpoint loop (nothing signed after it)
        metrics.audit_checkpoint_failures.labels(reason="Unexpected").inc()
        log.exception("audit checkpoint failed unexpectedly; tried again next round",
                      extra={"reason": "Unexpected"})
        return None
    newest = checkpointer.newest
    if newest is not None:
        metrics.audit_checkpoint_sequence.set(newest.seq)
        metrics.audit_checkpoint_time.set(newest.at.timestamp())
    return checkpoint


async def _loop(ctx: Context, checkpointer: Checkpointer, stopped: asyncio.Event) -> None:
    interval = float(ctx.settings.checkpoint_interval_seconds)
    while not stopped.is_set():
        await ctx.call(checkpoint_round, ctx, checkpointer)
        try:
            await asyncio.wait_for(stopped.wait(), interval)
        except TimeoutError:
            pass


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    """Run a round at start, every interval, and once more at shutdown (the records written
    until then are covered)."""
    checkpointer = Checkpointer(ctx.settings, ctx.kube)
    stopped = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_checkpoints(**_: Any) -> None:
        tasks.append(asyncio.create_task(_loop(ctx, checkpointer, stopped)))

    @kopf.on.cleanup(registry=registry)
    async def stop_checkpoints(**_: Any) -> None:
        stopped.set()
        for task in tasks:
            await task
        try:
            await asyncio.wait_for(ctx.call(checkpoint_round, ctx, checkpointer), 20)
        except TimeoutError:
            log.warning("final audit checkpoint timed out")


__all__ = ["CHECKPOINTS_KEY", "CheckpointError", "Checkpointer", "WitnessError",
           "checkpoint_round", "configmap_body", "register", "stored_checkpoints"]

"""The ``Context`` every handler shares, built once from ``OperatorSettings``.

It holds the API client, the signing keys, the audit sink, the reviewer panel, the allowlist
and the metrics, and the one way a handler appends to the audit trail (durably, or the
transition is refused and retried).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf

from wingman.audit import AuditRecord, AuditSink, open_sink
from wingman.capability import keyring as keyring
from wingman.errors import AuditUnavailable, WingmanError
from wingman.kube import SECRETS, Kube
from wingman.operator.metrics import Metrics
from wingman.review.consensus import PanelConfig
from wingman.review.panel import voters_from_config
from wingman.scope import Allowlist
from wingman.settings import OperatorSettings

T = TypeVar("T")
log = logging.getLogger("wingman.operator")


@dataclass
class Context:
    settings: OperatorSettings
    kube: Kube
    ring: keyring.KeyRing
    sink: AuditSink
    panel: PanelConfig
    allowlist: Allowlist
    metrics: Metrics
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    # uid -> (phase, creation time) of every ApprovalRequest seen (for the gauges)
    approvals: dict[str, tuple[str, dt.datetime]] = field(default_factory=dict)
    # grants whose terminal phase / replay condition has been counted already
    counted: set[str] = field(default_factory=set)
    audit_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def env(self) -> str:
        return self.settings.environment

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (API, audit) off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def audit(self, event: str, subject: dict[str, Any], data: dict[str, Any]
                    ) -> AuditRecord:
        """Append durably or raise TemporaryError: no transition without its record."""
        def append() -> AuditRecord:
            with self.audit_lock:
                return self.sink.append(event, actor="operator", subject=subject, data=data)
        try:
            record = await self.call(append)
        except AuditUnavailable as exc:
            self.metrics.audit_errors.labels(component="operator").inc()
            log.error("audit append failed; the transition is refused and retried",
                      extra={"event": event, "reason": exc.reason})
            raise kopf.TemporaryError(f"audit trail unavailable: {exc}", delay=10) from None
        self.metrics.audit_sequence.set(record.seq)
        return record


def subject_of(body: Any) -> dict[str, Any]:
    meta = body.get("metadata", {})
    return {"kind": body.get("kind", ""), "namespace": meta.get("namespace", ""),
            "name": meta.get("name", ""), "uid": meta.get("uid", "")}


def build_context(settings: OperatorSettings, kube: Kube | None = None) -> Context:
    """Everything the handlers share; ConfigError / ClusterError / AuditUnavailable if not."""
    kube = kube or Kube.from_environment()
    labels = {**settings.object_labels, "wingman.dev/environment": settings.environment}
    ring, created = keyring.load_or_create(kube, settings.namespace,
                                           settings.signing_key_secret, labels=labels)
    keyring.publish(kube, settings.namespace, settings.public_keys_configmap, ring,
                    labels=labels)
    allowlist = Allowlist.from_patterns(settings.policy.allowlist)
    api_keys: dict[str, str] = {}
    if settings.voters_secret:
        obj = kube.get(SECRETS, settings.namespace, settings.voters_secret)
        api_keys = _decode_secret(obj)
    spec = settings.policy.panel
    voters = voters_from_config(spec.voters, secrets=api_keys,
                                is_allowed=lambda c: _allowed(allowlist, c))
    panel = PanelConfig(voters, spec.threshold, spec.quorum, spec.timeout_seconds)
    sink = open_sink(settings.audit_target)
    metrics = Metrics()
    metrics.signing_keys.set(len(ring.keys))
    ctx = Context(settings, kube, ring, sink, panel, allowlist, metrics)
    sink.append("OperatorStarted", actor="operator",
                subject={"kind": "Namespace", "name": settings.namespace},
                data={"environment": settings.environment, "signingKid": ring.active,
                      "keyGenerated": created, "voters": [v.name for v in voters],
                      "threshold": spec.threshold, "quorum": spec.quorum})
    return ctx


def _decode_secret(obj: dict[str, Any]) -> dict[str, str]:
    import base64

    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


def _allowed(allowlist: Allowlist, command: str) -> bool:
    from wingman.scope import parse

    try:
        return allowlist.matches(parse(command))
    except WingmanError:
        return False


__all__ = ["Context", "build_context", "subject_of"]

"""The operator process: kopf handlers wired to one ``Context``, and ``run_operator``.

Handlers are thin (``approvals``, ``grants``, ``housekeeping``): they read objects, call the
pure functions of ``wingman.approvals`` / ``wingman.grants`` / ``wingman.consensus``, append to
the audit trail, and write status. The ``Context`` holds everything a handler needs, built
once from ``OperatorSettings``: the API client, the signing keys, the audit sink, the reviewer
panel, the allowlist and the metrics. One operator serves one namespace (one environment);
replicas coordinate through kopf peering so that only one acts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf

from wingman import keys as keyring
from wingman.audit import AuditRecord, AuditSink, open_sink
from wingman.consensus import PanelConfig
from wingman.errors import AuditUnavailable, WingmanError
from wingman.kube import SECRETS, Kube
from wingman.logs import setup_logging
from wingman.metrics import Metrics
from wingman.scope import Allowlist
from wingman.settings import OperatorSettings
from wingman.voters import voters_from_config

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
    ring, created = keyring.load_or_create(kube, settings.namespace,
                                           settings.signing_key_secret)
    keyring.publish(kube, settings.namespace, settings.public_keys_configmap, ring)
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


def make_registry(ctx: Context) -> kopf.OperatorRegistry:
    from wingman.handlers import approvals, grants, housekeeping

    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster ServiceAccount credentials, else the kubeconfig (the kubernetes client)."""
        return kopf.login_via_client(**kwargs)

    approvals.register(registry, ctx)
    grants.register(registry, ctx)
    housekeeping.register(registry, ctx)
    return registry


def configure_kopf(settings: kopf.OperatorSettings, peering: bool) -> None:
    """Progress in annotations under wingman.dev (status is schema-pruned), our own Events."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="wingman.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="wingman.dev", key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.peering.name = "default"
    settings.peering.mandatory = peering
    settings.peering.standalone = not peering
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


def run_operator(settings: OperatorSettings, *, peering: bool | None = None,
                 stop_flag: threading.Event | None = None,
                 ready_flag: threading.Event | None = None) -> int:
    """Run until stopped; 2 on a configuration or startup error (message on stderr)."""
    setup_logging(settings.log_format)
    try:
        ctx = build_context(settings)
    except WingmanError as exc:
        print(f"wingman operator: cannot start: {exc}", file=sys.stderr)
        return 2
    from prometheus_client import start_http_server

    server, _thread = start_http_server(settings.metrics_port, registry=ctx.metrics.registry)
    log.info("operator starting", extra={
        "namespace": settings.namespace, "environment": settings.environment,
        "metrics_port": server.server_port, "signing_kid": ctx.ring.active})
    registry = make_registry(ctx)
    use_peering = settings.peering if peering is None else peering
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(kopf_settings, use_peering)
    ctx.metrics.up.set(1)
    try:
        kopf.run(
            registry=registry, settings=kopf_settings, namespaces=[settings.namespace],
            clusterwide=False, standalone=not use_peering,
            priority=secrets.randbelow(2**31) + 1 if use_peering else None,
            peering_name="default" if use_peering else None,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
            stop_flag=stop_flag, ready_flag=ready_flag,
        )
    finally:
        ctx.metrics.up.set(0)
        server.shutdown()
        ctx.sink.close()
        ctx.kube.close()
    return 0


__all__ = ["Context", "build_context", "configure_kopf", "make_registry", "run_operator",
           "subject_of"]

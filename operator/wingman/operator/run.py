"""The operator process: kopf configured for Wingman, the handlers registered, ``run_operator``.

One operator serves one namespace (one environment); replicas coordinate through kopf peering
so that only one acts.
"""

from __future__ import annotations

import logging
import secrets
import sys
import threading
from typing import Any

import kopf

from wingman.errors import WingmanError
from wingman.kube import Resource
from wingman.logs import setup_logging
from wingman.operator.context import Context, build_context
from wingman.operator.metrics import serve
from wingman.operator.readiness import Readiness
from wingman.settings import OperatorSettings

PEERINGS = Resource("kopf.dev", "v1", "kopfpeerings")

log = logging.getLogger("wingman.operator")


def make_registry(ctx: Context) -> kopf.OperatorRegistry:
    from wingman.operator import checkpoints
    from wingman.operator.handlers import approvals, grants, housekeeping

    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster ServiceAccount credentials, else the kubeconfig (the kubernetes client)."""
        return kopf.login_via_client(**kwargs)

    approvals.register(registry, ctx)
    grants.register(registry, ctx)
    housekeeping.register(registry, ctx)
    checkpoints.register(registry, ctx)
    return registry


#: The name Events are reported by (``kubectl describe`` shows it under "From").
EVENT_SOURCE = "wingman-operator"


def configure_kopf(settings: kopf.OperatorSettings, peering: bool, *, instance: str = ""
                   ) -> None:
    """Progress in annotations under wingman.dev (status is schema-pruned), our own Events,
    reported by ``wingman-operator`` (``instance``: this replica's pod)."""
    settings.posting.reporting_component = EVENT_SOURCE
    if instance:
        settings.posting.reporting_instance = instance
    settings.posting.event_name_prefix = "wingman-"
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
    """Run until stopped; 2 on a configuration or startup error (message on stderr).

    Liveness is kopf's ``/healthz`` on the health port; readiness (``/readyz``, beside
    ``/metrics`` on the metrics port) is true only while this replica acts."""
    setup_logging(settings.log_format, settings.log_level, component="operator")
    try:
        ctx = build_context(settings)
    except WingmanError as exc:
        print(f"wingman operator: cannot start: {exc}", file=sys.stderr)
        return 2
    use_peering = settings.peering if peering is None else peering
    priority = secrets.randbelow(2**31) + 1 if use_peering else 0
    started = ready_flag if ready_flag is not None else threading.Event()
    readiness = Readiness(
        started=started, stopping=stop_flag, priority=priority,
        peering=(lambda: ctx.kube.get_or_none(PEERINGS, settings.namespace, "default"))
        if use_peering else None)
    server = serve(settings.metrics_port, ctx.metrics, readiness.check)
    log.info("operator starting", extra={
        "namespace": settings.namespace, "environment": settings.environment,
        "metrics_port": server.server_port, "signing_kid": ctx.ring.active})
    registry = make_registry(ctx)
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(kopf_settings, use_peering, instance=settings.pod_name)
    ctx.metrics.up.set(1)
    try:
        kopf.run(
            registry=registry, settings=kopf_settings, namespaces=[settings.namespace],
            clusterwide=False, standalone=not use_peering,
            priority=priority if use_peering else None,
            peering_name="default" if use_peering else None,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
            stop_flag=stop_flag, ready_flag=started,
        )
    finally:
        ctx.metrics.up.set(0)
        server.shutdown()
        ctx.sink.close()
        ctx.kube.close()
    return 0


__all__ = ["EVENT_SOURCE", "PEERINGS", "configure_kopf", "make_registry", "run_operator"]

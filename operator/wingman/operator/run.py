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
from wingman.logs import setup_logging
from wingman.operator.context import Context, build_context
from wingman.settings import OperatorSettings

log = logging.getLogger("wingman.operator")


def make_registry(ctx: Context) -> kopf.OperatorRegistry:
    from wingman.operator.handlers import approvals, grants, housekeeping

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


__all__ = ["configure_kopf", "make_registry", "run_operator"]

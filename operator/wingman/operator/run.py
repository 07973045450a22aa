"""The operator process: kopf configured for Wingman, the handlers registered, ``run_operator``.

One operator serves one namespace (one environment). Every replica watches; the one holding
the leader Lease acts (``leader``). kopf is used for its watches only: the handlers are
``on.event`` handlers that reconcile from the object they are given, so kopf keeps no
progress or last-handled state in the objects (nothing a worker or approver could edit) and
makes no writes of its own.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf

from wingman.audit import AuditSink, PostgresSink
from wingman.errors import WingmanError, cannot_listen, cannot_listen_on
from wingman.kube import Kube
from wingman.logs import setup_logging
from wingman.model import names
from wingman.operator import lag, memory
from wingman.operator.context import Context, build_context
from wingman.operator.leader import AlwaysLeader, LeaderElector, Timing
from wingman.operator.metrics import serve
from wingman.operator.pool import CallPool
from wingman.operator.readiness import Readiness
from wingman.operator.writer import Writer
from wingman.settings import OperatorSettings

log = logging.getLogger("wingman.operator")

#: The name Events are reported by (``kubectl describe`` shows it under "From").
EVENT_SOURCE = "wingman-operator"


def make_registry(ctx: Context) -> tuple[kopf.OperatorRegistry, Any]:
    from wingman.operator import checkpoints
    from wingman.operator.handlers import approvals, grants, housekeeping

    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster ServiceAccount credentials, else the kubeconfig (the kubernetes client)."""
        return kopf.login_via_client(**kwargs)

    approvals.register(registry, ctx)
    grants.register(registry, ctx)
    sweeper = housekeeping.register(registry, ctx)
    checkpoints.register(registry, ctx)
    sampling: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def watch_writer(**_: Any) -> None:  # its loss stops the operator at once
        if ctx.writer is not None:
            ctx.writer.watch()

    @kopf.on.startup(registry=registry)
    async def start_lag_sampling(**_: Any) -> None:
        sampling.append(asyncio.create_task(lag.sample(ctx.metrics.loop_lag.observe),
                                            name="event loop lag"))

    @kopf.on.cleanup(registry=registry)
    async def stop_lag_sampling(**_: Any) -> None:
        for task in sampling:
            task.cancel()
        await asyncio.gather(*sampling, return_exceptions=True)
    return registry, sweeper


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf keeps a "last handled" copy of every object to find what changed between events,
    which only its change handlers (``on.create``/``on.update``...) use. The operator has
    event handlers only, so the copy (a deep copy of every object of every watch event) is
    neither built nor kept."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


#: How long kopf keeps an object's worker (a task, its queue and the last event it handled:
#: the whole object) once no event for it arrives. kopf's default is 5 s: in a burst of 1,000
#: requests and grants every object's worker, and its last body, outlived its work by that
#: much, so a few thousand of them were held at once (requests, grants, their Jobs, and again
#: as the retirement deletes them).
WORKER_IDLE_SECONDS = 0.5


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Watches only: no peering (the Lease decides), no Events of kopf's own (the operator
    posts its own, as ``wingman-operator``), no per-event bookkeeping for change handlers
    (there are none), only the Jobs the operator makes (selected by the API server, not
    decoded and dropped here), short retries of failed list/watch calls so that the operator
    is back within seconds of the API server, and an object's worker gone half a second after
    its last event (``WORKER_IDLE_SECONDS``)."""
    settings.posting.enabled = False
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.label_selectors["batch", "jobs"] = names.ROLE_LABEL
    settings.posting.reporting_component = EVENT_SOURCE
    settings.peering.standalone = True
    settings.peering.mandatory = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 0.5
    settings.networking.error_backoffs = (0.5, 1, 1, 2, 2, 3)
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS


#: Thresholds of Python's cyclic garbage collector for the operator (the default is 700, 10, 10).
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path. With the defaults a burst of 1,000
    requests and grants spent about 5 s of the operator's ~15 s of CPU in collections, with
    full collections of up to 0.6 s during which nothing else runs: every full collection
    walks every object, including the few hundred thousand that the libraries create at
    start-up and keep for the life of the process. Those are moved out of the collector's
    sight once started (``gc.freeze``), and the young generation is collected every 10,000
    allocations instead of 700 (a full collection then needs 1,000,000): about 1.8 s in all
    for the same burst, the longest pause 0.2 s. Reference counting still frees everything
    that is not in a cycle at once; cycles wait a little longer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class QuietRetries(logging.Filter):
    """kopf logs every failed attempt of every API request at ERROR: while the API server is
    away that is each watch (five of them), seven attempts a round, round after round. Keep
    one such line per ``period`` seconds, as a warning (the operator retries on its own; the
    ``transient failure`` line and ``wingman_retries_total`` say so)."""

    def __init__(self, period: float = 10.0) -> None:
        super().__init__()
        self.period = period
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kopf") or not str(record.msg).startswith(
                "Request attempt"):
            return True
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.period
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def warn_missing_indexes(sink: AuditSink) -> bool:
    """Log a warning when the PostgreSQL audit table lacks its look-up indexes (a table
    created by an earlier release) or holds one invalid: every gateway run then reads the whole
    table to learn what ran, slower as the trail grows. Says the SQL its owner runs. Whether it
    warned."""
    repairs = sink.index_repairs if isinstance(sink, PostgresSink) else ()
    if repairs:
        log.warning(
            "the audit table wingman_audit lacks its look-up indexes: each gateway run reads "
            "the whole table to find what ran already. Run the statements in 'sql' as the "
            "table's owner, one at a time outside a transaction (appends go on meanwhile)",
            extra={"sql": [statement + ";" for statement in repairs]})
    return bool(repairs)


def hangup_stops() -> bool:
    """Make SIGHUP (a closed terminal, a supervisor's stop) stop the operator as SIGTERM does:
    kopf handles SIGINT and SIGTERM only, and SIGHUP's default ends the process on the spot,
    leaving the Lease to run out. Only the main thread can install it; True if installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    return True


def health_port_free(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's
    """OSError when kopf's liveness endpoint could not bind ``port`` on ``host`` (an IP
    address), reusing an address in TIME_WAIT as asyncio's servers do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # IPv6 alone, as kopf's server binds it
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((host, port))


def health_endpoint(host: str, port: int) -> str:
    """kopf's liveness endpoint URL for ``host`` (an IP address) and ``port``."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"


def run_operator(settings: OperatorSettings, *, stop_flag: threading.Event | None = None,
                 ready_flag: threading.Event | None = None) -> int:
    """Run until stopped; 2 on a configuration or startup error (message on stderr).

    Liveness is kopf's ``/healthz`` on the health port; readiness (``/readyz``, beside
    ``/metrics`` on the metrics port) is true only while this replica acts (holds the leader
    Lease)."""
    refused = memory.refusal(settings.allocator, memory.active(), os.environ)
    if refused is not None:
        print(f"wingman operator: cannot start: {refused}", file=sys.stderr)
        return 2
    memory.limit_arenas(memory.MALLOC_ARENAS)  # before any of the operator's threads allocates
    setup_logging(settings.log_format, settings.log_level, component="operator")
    memory.warn_other_allocators(os.environ, memory.find_jemalloc())
    if settings.log_level != "debug":
        quiet = QuietRetries()
        for handler in logging.getLogger().handlers:
            handler.addFilter(quiet)
    lost: list[str] = []

    def writer_lost(why: str) -> None:  # the operator cannot write any more: stop, and say so
        lost.append(why)
        # as SIGTERM does (kopf's handler; a flag of our own would hold a thread of the loop's
        # default pool waiting for it, which the loop's end then waits for)
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        ctx = build_context(settings)
    except WingmanError as exc:
        print(f"wingman operator: cannot start: {exc}", file=sys.stderr)
        return 2
    writer = start_writer(settings, ctx.kube, writer_lost) if settings.writer_process else None
    # a thread idle for a while ends, and with it the connections the burst opened
    ctx.executor = CallPool(settings.api_concurrency, thread_name_prefix="wingman-call",
                            on_shrink=lambda alive: ctx.kube.drop_connections(keep=alive + 1))
    if ctx.events is not None:
        ctx.events.executor = ctx.executor
    # the audit appends on a thread of their own: a burst's API calls, each waiting for the
    # API server, would otherwise hold every thread while a group commit waits for one
    ctx.audit_executor = CallPool(1, thread_name_prefix="wingman-audit")
    if writer is not None:
        ctx.use_writer(writer)
    registry, sweeper = make_registry(ctx)
    tune_gc()

    def changed(leading: bool) -> None:
        ctx.metrics.active.set(1 if leading else 0)
        sweeper.leadership_changed(leading)

    if settings.leader_election:
        ctx.leader = LeaderElector(
            ctx.kube, settings.namespace, settings.leader_lease, settings.identity,
            timing=Timing(settings.lease_duration_seconds, settings.renew_deadline_seconds,
                          settings.retry_period_seconds), on_change=changed)
    else:
        ctx.leader = AlwaysLeader(on_change=changed)
    started = ready_flag if ready_flag is not None else threading.Event()
    leader = ctx.leader
    readiness = Readiness(started=started, stopping=stop_flag,
                          leading=(lambda: leader.leading) if settings.leader_election else None,
                          lease=settings.leader_lease)
    # kopf binds the health port itself, once it runs, and a port in use there ends it with a
    # traceback: the port is tried first, to refuse the start with what to do instead
    port, setting, value = settings.health_port, "WINGMAN_HEALTH_PORT", "operator.healthPort"
    try:
        health_port_free(settings.health_port, settings.listen_address)
        port, setting = settings.metrics_port, "WINGMAN_METRICS_PORT"
        value = "operator.metricsPort"
        server = serve(settings.metrics_port, ctx.metrics, readiness.check,
                       settings.listen_address)
    except OSError as exc:
        ctx.executor.shutdown(wait=True, cancel_futures=True)
        ctx.audit_executor.shutdown(wait=True, cancel_futures=True)
        ctx.sink.close()
        ctx.kube.close()
        if writer is not None:
            writer.close()
        said = cannot_listen_on(exc, settings.listen_address, "operator.listenAddress") or \
            cannot_listen(exc, port, setting, value)
        print(f"wingman operator: cannot start: {said}", file=sys.stderr)
        return 2
    log.info("operator starting", extra={
        "namespace": settings.namespace, "environment": settings.environment,
        "metrics_port": server.server_port, "signing_kid": ctx.ring.active,
        "identity": settings.identity, "leader_election": settings.leader_election,
        "allocator": memory.active()})
    warn_missing_indexes(ctx.sink)
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(kopf_settings)
    ctx.metrics.up.set(1)
    ctx.leader.start()
    hangup_stops()
    try:
        kopf.run(
            registry=registry, settings=kopf_settings, namespaces=[settings.namespace],
            clusterwide=False, standalone=True,
            liveness_endpoint=health_endpoint(settings.listen_address, settings.health_port),
            stop_flag=stop_flag, ready_flag=started,
        )
    finally:
        ctx.metrics.up.set(0)
        # every write queued is dropped and those running finish before the Lease is handed
        # over: none lands after another replica took over
        if writer is not None:
            writer.close()
        ctx.executor.shutdown(wait=True, cancel_futures=True)
        ctx.audit_executor.shutdown(wait=True, cancel_futures=True)
        ctx.leader.stop(release=True)
        server.shutdown()
        ctx.sink.close()
        ctx.kube.close()
    if lost:
        print(f"wingman operator: stopped: the writer process is gone ({lost[0]}); "
              "see its log lines above, and start the operator again (in a pod, Kubernetes "
              "does)", file=sys.stderr)
        return 1
    return 0


def start_writer(settings: OperatorSettings, kube: Kube, on_lost: Callable[[str], object]
                 ) -> Writer | None:
    """The writer process (``operator.writer``), calling as ``kube`` does, or None, with a
    warning, when it cannot be started (the calls then run on the operator's own threads)."""
    try:
        return Writer.start(kube, pool=settings.api_concurrency,
                            audit_target=settings.audit_target, log_format=settings.log_format,
                            log_level=settings.log_level, on_lost=on_lost)
    except Exception as exc:  # noqa: BLE001 - any reason: the threads take the calls
        said = str(exc) if isinstance(exc, OSError | WingmanError) else \
            f"{type(exc).__name__}: {str(exc)[:300]}"
        log.warning("the writer process could not be started: the API calls and audit "
                    "appends run on the operator's threads", extra={"error": said})
        return None


__all__ = ["EVENT_SOURCE", "GC_THRESHOLDS", "WORKER_IDLE_SECONDS", "QuietRetries",
           "configure_kopf", "hangup_stops", "health_endpoint",
           "health_port_free", "make_registry", "run_operator", "tune_gc",
           "warn_missing_indexes"]

"""The operator's Prometheus metrics: one ``Metrics`` object on one registry, served on /metrics.

The same port answers ``/readyz`` (``serve``): readiness is distinct from kopf's liveness
endpoint (``/healthz`` on the health port), see ``wingman.operator.readiness``.

Names are part of the product's interface (the chart's PrometheusRule and dashboard read
them); ``docs/runbook.md`` explains each. Label values are bounded sets (phases, verdicts,
reasons, voter names from configuration), never names of objects or users.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: The operator's own steps: from a millisecond (an audit write, a call to an idle API server)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0)
#: Records per audit write (group commit writes up to ``recorder.MAX_GROUP``)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Every wingman_* series the operator exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Gauge(
            "wingman_approval_requests", "ApprovalRequests seen by this operator, by phase.",
            ["environment", "phase"], registry=r)
        self.transitions = Counter(
            "wingman_approval_transitions_total",
            "ApprovalRequest phase transitions written by the operator.",
            ["environment", "phase"], registry=r)
        self.votes = Counter(
            "wingman_votes_total", "Reviewer votes, by voter and verdict.",
            ["environment", "voter", "verdict"], registry=r)
        self.consensus_latency = Histogram(
            "wingman_consensus_duration_seconds",
            "Wall-clock time of one reviewer panel.", ["environment"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.decisions = Counter(
            "wingman_decisions_total",
            "Final decisions on ApprovalRequests (AutoApproved, Approved, Rejected, Expired).",
            ["environment", "decision"], registry=r)
        self.pending = Gauge(
            "wingman_pending_approvals", "ApprovalRequests awaiting a human decision.",
            ["environment"], registry=r)
        self.expiry_warnings = Counter(
            "wingman_expiry_warnings_total",
            "Pending ApprovalRequests warned (ExpiringSoon) that they expire within the "
            "policy's expiryWarningSeconds.", ["environment"], registry=r)
        self.oldest_pending = Gauge(
            "wingman_oldest_pending_approval_age_seconds",
            "Age of the oldest ApprovalRequest awaiting a human decision (0 when none).",
            ["environment"], registry=r)
        self.grants = Counter(
            "wingman_grants_total",
            "ExecutionGrants reaching a phase (TokenIssued, Succeeded, Failed, Denied, Expired).",
            ["environment", "outcome"], registry=r)
        self.tokens_minted = Counter(
            "wingman_tokens_minted_total",
            "Capability tokens issued: counted once, as the token's Secret is first stored "
            "(a token issued on its grant's claim) or the grant's status first records the "
            "token (TokenIssued; grants whose Job is not named after them), also for such a Secret "
            "adopted after an interrupted run; not a lost token stored again.",
            ["environment"],
            registry=r)
        self.denials = Counter(
            "wingman_denials_total",
            "Refusals, by stage (operator: grant validation; gateway: token, replay, scope) "
            "and reason.", ["environment", "stage", "reason"], registry=r)
        self.grant_latency = Histogram(
            "wingman_grant_to_job_seconds",
            "Time from an ExecutionGrant's creation to its token issued (on its claim, or in "
            "its TokenIssued status) and its token Secret in place (the gateway can start and "
            "spend its token).",
            ["environment"], buckets=LATENCY_BUCKETS, registry=r)
        self.reconcile_errors = Counter(
            "wingman_reconcile_errors_total", "Handler failures (retried by the operator).",
            ["resource"], registry=r)
        self.audit_errors = Counter(
            "wingman_audit_errors_total",
            "Audit appends that failed (the transition was refused: fail closed).",
            ["component"], registry=r)
        self.audit_sequence = Gauge(
            "wingman_audit_head_sequence",
            "Sequence number of the last audit record this operator appended.", registry=r)
        self.audit_checkpoint_sequence = Gauge(
            "wingman_audit_checkpoint_sequence",
            "Sequence number of the newest signed checkpoint of the audit head.", registry=r)
        self.audit_checkpoint_time = Gauge(
            "wingman_audit_checkpoint_timestamp_seconds",
            "When the newest signed checkpoint of the audit head was made (Unix time).",
            registry=r)
        self.audit_checkpoint_failures = Counter(
            "wingman_audit_checkpoint_failures_total",
            "Checkpoint rounds that signed nothing because the audit trail or the stored "
            "checkpoints did not verify (or could not be read), by reason.", ["reason"],
            registry=r)
        self.audit_witness_failures = Counter(
            "wingman_audit_witness_failures_total",
            "Deliveries of a checkpoint to the external witness that failed (retried).",
            registry=r)
        self.signing_keys = Gauge(
            "wingman_public_keys", "Public keys published for the gateway (rotation overlap).",
            registry=r)
        self.retries = Counter(
            "wingman_reconcile_retries_total",
            "Reconciles retried after a transient failure (API server unreachable or "
            "overloaded, audit sink unavailable), by resource and reason.",
            ["resource", "reason"], registry=r)
        self.stale_copies = Counter(
            "wingman_stale_copies_total",
            "Copies of a request or grant older than one the operator had seen (a re-list's "
            "event, a read answered after a write): read again instead of acted on "
            "(outcome=reread), or, older on three fresh reads in a row, taken as the API "
            "server now has them (outcome=trusted: the store went back, restart the operator).",
            ["resource", "outcome"], registry=r)
        self.unprocessed = Gauge(
            "wingman_unprocessed_objects",
            "ApprovalRequests and ExecutionGrants that still wait for the operator.",
            ["environment", "resource"], registry=r)
        self.oldest_unprocessed = Gauge(
            "wingman_oldest_unprocessed_seconds",
            "Age of the oldest ApprovalRequest or ExecutionGrant still waiting for the "
            "operator (0 when none).", ["environment", "resource"], registry=r)
        self.retired = Counter(
            "wingman_retired_total",
            "Finished ApprovalRequests and ExecutionGrants deleted after the retention "
            "(their story stays in the audit trail).", ["environment", "resource"], registry=r)
        self.orphans_removed = Counter(
            "wingman_orphans_removed_total",
            "Token Secrets and gateway Jobs of deleted ExecutionGrants that the garbage "
            "collector left without an owner (a deletion with propagation Orphan), removed by "
            "the operator.", ["environment", "resource"], registry=r)
        self.retirement_refused = Counter(
            "wingman_retirement_refused_total",
            "Deletes of finished ApprovalRequests and ExecutionGrants after the retention that "
            "the API server refused (an admission policy or webhook; tried again once per sweep "
            "interval).",
            ["environment", "resource"], registry=r)
        self.events_dropped = Counter(
            "wingman_events_dropped_total",
            "Kubernetes Events the operator could not post (the API server refused or was "
            "unreachable).", registry=r)
        # where a reconcile's time goes (the bench prints these per phase)
        self.reconcile_wait = Histogram(
            "wingman_reconcile_wait_seconds",
            "Time from a reconcile being asked for (an event's handler; a retry or the sweep "
            "after its fresh read) to its start: behind the same object's reconcile, then for "
            "one of the operator's slots (2 x operator.apiConcurrency objects at once).",
            ["resource"], buckets=STEP_BUCKETS, registry=r)
        self.reconcile_duration = Histogram(
            "wingman_reconcile_duration_seconds",
            "Time of one reconcile once started (its audit appends and API calls included; a "
            "reviewer panel's wait and taking a slot again after it too).", ["resource"],
            buckets=STEP_BUCKETS, registry=r)
        self.call_wait = Histogram(
            "wingman_call_wait_seconds",
            "Time a blocking call (mostly to the API server) waited for one of the operator's "
            "operator.apiConcurrency threads before it started (with operator.writerProcess, "
            "the default: for one of the writer's, from its send, or of the operator's own, "
            "for what stays there).",
            buckets=STEP_BUCKETS, registry=r)
        self.writer_local = Counter(
            "wingman_writer_local_calls_total",
            "With operator.writerProcess: calls the writer process could not take, run on the "
            "operator's own threads instead, by call: arguments the writer could not read (a "
            "function, an object of a class it has not imported). Lists always run on the "
            "operator's threads and are not counted.", ["call"], registry=r)
        self.api_latency = Histogram(
            "wingman_api_request_duration_seconds",
            "Time of the operator's calls to the API server, from building the request to the "
            "answer read and decoded, by verb and resource (the plural, with its subresource; "
            "kopf's watches are not among them).",
            ["verb", "resource"], buckets=STEP_BUCKETS, registry=r)
        self.api_requests = Counter(
            "wingman_api_requests_total",
            "The operator's calls to the API server, by verb, resource and HTTP status "
            "(\"error\": no answer, or none that could be read; kopf's watches are not among "
            "them).", ["verb", "resource", "code"], registry=r)
        self.audit_wait = Histogram(
            "wingman_audit_append_seconds",
            "Time a step waited for its audit records to be durable: queued behind the write "
            "in flight, then written with whatever else was queued (group commit).",
            buckets=STEP_BUCKETS, registry=r)
        self.audit_write = Histogram(
            "wingman_audit_write_seconds",
            "Time of one write to the audit sink that it answered (a group of records: the "
            "sink's lock, the chain's head, the write, the fsync or the transaction).",
            buckets=STEP_BUCKETS, registry=r)
        self.audit_group = Histogram(
            "wingman_audit_write_records", "Records per write to the audit sink that it "
            "answered.",
            buckets=GROUP_BUCKETS, registry=r)
        self.loop_lag = Histogram(
            "wingman_event_loop_lag_seconds",
            "How late the operator's event loop ran a timer due every 100 ms: how long every "
            "watch event, reconcile step and answer waited for the loop then.",
            buckets=STEP_BUCKETS, registry=r)
        self.up = Gauge("wingman_operator_ready",
                        "1 when the operator has started and holds its configuration.",
                        registry=r)
        self.active = Gauge("wingman_operator_active",
                            "1 while this replica acts (ready: started, holds the leader "
                            "Lease); 0 when it stands by.",
                            registry=r)

    def denial(self, environment: str, stage: str, reason: str) -> None:
        self.denials.labels(environment=environment, stage=stage, reason=reason).inc()

    def api_call(self, verb: str, resource: str, code: str, seconds: float) -> None:
        """One call to the API server (``kube.Observer``; from any thread)."""
        self.api_latency.labels(verb=verb, resource=resource).observe(seconds)
        self.api_requests.labels(verb=verb, resource=resource, code=code).inc()

    def audit_written(self, records: int, seconds: float) -> None:
        """One write of a group of audit records (``recorder.Recorder``'s observer)."""
        self.audit_write.observe(seconds)
        self.audit_group.observe(records)


class _ServerV6(ThreadingHTTPServer):
    """On an IPv6 address only, as kopf's liveness endpoint (asyncio's servers): ``::`` is
    every IPv6 address, not every IPv4 address as well."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


def serve(port: int, metrics: Metrics, ready: Callable[[], tuple[bool, str]],
          host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104 - the pod's port
    """Serve ``/metrics`` and ``/readyz`` (200 ready / 503 not, with the reason) in a thread;
    stop it with ``shutdown()``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/readyz":
                ok, reason = ready()
                metrics.active.set(1 if ok else 0)
                self._reply(200 if ok else 503, "text/plain; charset=utf-8",
                            f"{'ok' if ok else 'not ready'}: {reason}\n".encode())
            elif path in ("/metrics", "/"):
                ok, _ = ready()
                metrics.active.set(1 if ok else 0)
                self._reply(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            else:
                self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics or "
                            b"/readyz\n")

        def _reply(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes and scrapes are not worth a log line each

    server_class = _ServerV6 if ":" in host else ThreadingHTTPServer
    server = server_class((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="wingman-probes", daemon=True).start()
    return server


__all__ = ["GROUP_BUCKETS", "LATENCY_BUCKETS", "STEP_BUCKETS", "Metrics", "serve"]

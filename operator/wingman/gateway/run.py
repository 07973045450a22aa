"""The execution gateway: ``wingman gateway``, the entrypoint of a grant's gateway Job.

This module owns the gateway's sequence and its decisions; it is a thin run of steps over pure
functions (:func:`read_token`, :func:`load_keys`, :func:`authorize`, :func:`check_approval`,
:func:`check_granted`, the status builders), and every refusal fails closed:

1. read the capability token (``NoToken``) and the public keys (``NoPublicKeys``);
2. connect to the API server as the gateway's ServiceAccount (never a kubeconfig) and re-read
   the ExecutionGrant and its ApprovalRequest;
3. verify the token against the live objects: signature, issuer, audience (the environment),
   times, and every binding (approval, grant, Job, namespace, command); the approval must still
   be approved and unexpired (these times, like the deadline below, judged on the later of the
   gateway's clock and the API server's ``Date`` of the approval read: ``checks.judged_now``)
   and record this grant as the one its command was granted to (``status.grants``), and when
   that claim records the token issued with it, record this very token (``BindingMismatch``),
   the command one of its commands byte for byte and inside the allowlist (``scope.check``); the
   grant is judged with its approval (``wingman.model.grants.view``): the operator issues a
   token on the claim, writing nothing to the grant, so a ``Pending`` grant whose claim records
   its token is ``TokenIssued`` and runs without waiting; a grant still ``Pending`` without one
   (its Job not derived from its name, or issued by an earlier release: the operator writes
   ``TokenIssued`` at the same time as the token Secret, so the pod may start first) is read
   again, with its approval, until it is judged otherwise or the token expires
   (``GrantNotIssued``; moved on past ``TokenIssued`` while this token's burn marker exists:
   another pod ran it, a replay), and these checks are made again on what is current; a
   ``TokenIssued`` grant must record this very token (``status.tokenSHA256``, or its claim's:
   ``BindingMismatch``); the executor must be able to run it; a kubectl command needs a fresh
   token of the executor account, the identity it runs as (``wingman.gateway.identity``,
   ``ExecutorTokenUnavailable``; asked for again before the burn when what it has left no
   longer covers the command's timeout and ``identity.START_MARGIN_SECONDS``); every target
   the request's preview recorded for the command must be the object, at the version, the
   preview saw (``TargetChanged`` otherwise, unless the policy allows drift); the command's
   timeout and the writes of its result must end before the deadline of the pod's own Job,
   read from the Job and measured on the later of the gateway's clock and the API server's
   (``DeadlineTooClose``; ``DeadlineUnknown`` when it cannot be read, after a few quick tries
   when the failure may pass): a deadline that stops the command half-way would leave a
   half-done change;
4. judge the token's expiry again (``TokenExpired``, unspent: the checks above may have taken
   long; the expiry bounds the burn, not the start: once burnt, the token can never be
   presented again, and the steps after the burn are bounded by what they check again, the
   approval's expiry included, while refusing then would use up the approved command), then
   burn the token: create the Lease ``wingman-burn-<jti>``; a 409 is a replay
   (exit 4: the grant gets condition ``ReplayDetected`` and nothing else changes);
5. audit ``GatewayTokenBurned``, check the approval again, and that the audit trail does
   not record the command as started already (``CommandAlreadyRan``: an etcd restored from a
   backup forgot it, the trail did not), check the previewed targets again, audit
   ``GatewayStarting`` (the intent the ``Running`` phase stands for), set phase ``Running``
   (only on the grant the token names, not being deleted, ``TokenIssued`` with this token, as
   judged with the approval last read: :func:`check_startable`; a grant whose token was issued
   on its claim gets the token's fields with it), measure the Job's deadline again
   (``DeadlineTooClose``, the token spent: what came after the first look may have taken
   long) and the executor's token's life (``ExecutorTokenUnavailable``, the token spent: it
   must outlive the command's timeout from its start), and only then audit
   ``GatewayExecuting`` (the claim that the command runs: never
   written for a run that the write of ``Running`` refused), execute
   (``wingman.gateway.executors``), audit ``GatewayExecuted`` and write the result. Each
   record is durable before what it stands for.

A refusal sets phase ``Failed`` with the typed reason (unless an execution already owns the
grant's status, or the grant is judged ``Pending``: no token issued, its status is the
operator's, or the grant under the name is no longer the one this run read, or, before any
read, not the one its Job was made for: ``WINGMAN_GRANT_UID``), audits ``GatewayRefused``
and exits 3.
A SIGTERM (the kubelet stopping the pod: a cancel, the Job's deadline, a drained node) is
handled (``executors.TERMINATION``; tini, the container's first process, forwards it):
before the command starts it refuses (``GatewayTerminating``), while a kubectl command runs it
kills its process group and the result is recorded (``CommandInterrupted``); while the Docker
engine acts it stops waiting for it, the outcome recorded as unknown (``CommandInterrupted``).
Every call to the API server is one try bounded by ``API_CALL_SECONDS`` (the Job read by its
own budget); the reads and the executor's TokenRequest are made again while they fail in a way
that may pass, within ``API_RETRY_SECONDS``, as is the write of ``Running`` (which knows its
own, landed with its answer lost), none of them once the pod was asked to stop (a SIGTERM
ends a pause at once, and the gateway refuses ``GatewayTerminating``), the burn never: a
check that still gets no answer refuses; the writes after the command (and of a refusal)
are made again within ``RESULT_SECONDS``, and a result still unwritten is audited
``GatewayResultUnrecorded`` (exit 1). Each waits as long as a 429's ``Retry-After`` asks
before it is made again, and is not made again when that is past its budget.
Exit 0 means the command ran and its result is recorded (whatever its exit code); 1 is an
internal error. Logs are JSON lines on stderr in the common format (``wingman.logs``) with
``WINGMAN_LOG_FORMAT=json``; they carry ``token_sha256``, never the token.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from wingman import conditions, logs
from wingman.audit import AuditRecord, AuditSink, open_sink
from wingman.capability import tokens
from wingman.errors import (
    AuditUnavailable,
    ClusterError,
    ExecutionFailed,
    GrantDenied,
    WingmanError,
)
from wingman.gateway import executors, identity
from wingman.gateway.checks import (
    RESULT_SECONDS,
    JobDeadline,
    Replay,
    Terminating,
    _binding,
    authorize,
    burn_marker,
    check_approval,
    check_deadline,
    check_granted,
    check_not_run,
    check_startable,
    check_targets,
    check_unexpired,
    judged_now,
    load_keys,
    read_token,
    refusal_reason,
    undone_command,
)
from wingman.gateway.status import final_status, refused_status, replay_status, running_status
from wingman.kube import (
    APPROVALS,
    GRANTS,
    JOBS,
    LEASES,
    ApiError,
    Kube,
    RetryPolicy,
    call_retried,
    retry_pause,
    transient,
    try_seconds,
)
from wingman.model import grants as grant_rules
from wingman.model import names
from wingman.model import preview as previews
from wingman.settings import GatewaySettings

log = logging.getLogger("wingman.gateway")
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_REFUSED = 3
EXIT_REPLAY = 4

_STATUS_RETRIES = 5
ISSUE_POLL_MAX_SECONDS = 2.0
"""The longest pause between two reads of a grant (and its approval) that records no token yet
(neither in its status nor in its claim)."""
JOB_READ_RETRY_SECONDS = 3.0
"""How long a read of the gateway's own Job that failed in a way that may pass (no answer,
429, 5xx) is tried again before the gateway refuses ``DeadlineUnknown`` (not once the pod was
asked to stop): a few tries, small next to the time the operator's deadline leaves beyond the
command's (``RESULT_SECONDS``), and whatever it takes is measured by the deadline check that
follows."""
JOB_READ_FIRST_DELAY = 0.2
"""The first pause before the Job is read again (doubling after each failed try)."""
JOB_READ_CALL_SECONDS = 2.0
"""How long one read of the gateway's own Job may wait for the API server (and never past what
is left of ``JOB_READ_RETRY_SECONDS``, but at least ``JOB_READ_CALL_MIN_SECONDS``): a read held
up (an API server that accepts the connection and never answers) is a failure that may pass,
tried again within the budget, not one that takes the client's own 30 s timeout first."""
JOB_READ_CALL_MIN_SECONDS = 0.5
API_CALL_SECONDS = 5.0
"""How long any other one call of the gateway to the API server may wait for it (connecting,
the TLS handshake, sending, the whole answer, however slowly it comes, and at most
``kube.MAX_ANSWER_BYTES`` of it: a deadline for the call, not a timeout of each socket read):
one try (``Kube.call_seconds``), none of the HTTP library's silent retries, given up as a
failure with no answer. A check whose read gets none refuses (nothing
runs on a check that could not be made); a write given up so may or may not have been applied.
The checks before the command are all measured by the Job's deadline, taken again just before
it starts; the writes after it have ``checks.RESULT_SECONDS``."""
API_RETRY_SECONDS = 10.0
"""How long a read (the grant, its approval, the grant a rollback undoes, a previewed target)
or the executor's TokenRequest that failed in a way that may pass (no answer within
``API_CALL_SECONDS``, a reset connection, 429, 5xx: ``wingman.kube.transient``) is made again,
backing off from ``API_RETRY_FIRST_DELAY``, before the gateway refuses: a briefly slow or
restarting API server (a rolling upgrade of the control plane, API Priority and Fairness
shedding load) does not use up an approved command. These calls change nothing (a TokenRequest
whose answer was lost leaves a token nobody holds, bound to the grant's token Secret), and the
time they take is measured by the deadline check before the burn and again before the command
starts. The burn marker is not made again (a create that landed would read as a replay); the
write of ``Running`` is, for this long, knowing its own (:func:`_own_running`)."""
API_RETRY_FIRST_DELAY = 0.2
STATUS_RETRY_FIRST_DELAY = 0.5
"""The first pause before a write of the grant's status that got no definite answer is made
again (doubling after each; longer when the answer's ``Retry-After`` asks), within its budget."""
STATUS_CALL_MIN_SECONDS = 0.5
"""A call of a write of the grant's status is not started with less of its budget left (one
given less could not be answered): the write ends within its budget, its last failure
raised."""


class NoTimeLeft(ClusterError):
    """A write of the grant's status given no time: nothing was written (no answer)."""

    reason = "Unreachable"


class _OutOfTime(Exception):
    """Too little of a status write's budget is left for another call."""


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class _Run:
    settings: GatewaySettings
    clock: Callable[[], float]
    token: str | None = field(default=None, repr=False)
    token_ref: str | None = None
    kube: Kube | None = None
    #: the executor account's token and a client that acts as it (kubectl commands only)
    executor_token: identity.ExecutorToken | None = None
    executor_kube: Kube | None = None
    #: when the executor's token expires (monotonic: asked for at, plus its lifetime)
    executor_expires: float = 0.0
    #: executor tokens asked for again were replaced (still scrubbed from the log until the end)
    retired_tokens: list[str] = field(default_factory=list, repr=False)
    grant: dict[str, Any] | None = None
    approval: dict[str, Any] | None = None
    """The grant's ApprovalRequest as last read: its claim may record the grant's token
    (``wingman.model.grants.view``; the claim is append-only)."""
    sink: AuditSink | None = None
    running: bool = False
    """This run wrote the grant's ``Running`` phase: a refusal closes it."""
    executing: bool = False
    """The command was (about to be) started: an error is internal, no more a refusal."""

    # -- logging ------------------------------------------------------------------------------
    def log(self, event: str, *, level: str = "info", reason: str = "", message: str = "",
            **extra: Any) -> None:
        """One record in the common format (``wingman.logs``); ``event`` names the step."""
        s = self.settings
        fields = {"event": event, "grant": s.grant_name, "namespace": s.namespace,
                  "pod": s.pod_name, "token_sha256": self.token_ref, "reason": reason or None,
                  **extra}
        log.log(_LEVELS[level], message or event,
                extra={k: v for k, v in fields.items() if v is not None})

    # -- audit --------------------------------------------------------------------------------
    def open_audit(self) -> AuditSink:
        if self.sink is None:
            try:
                self.sink = open_sink(self.settings.audit_target)
            except WingmanError as exc:
                raise AuditUnavailable(f"cannot open the audit trail: {exc.message}",
                                       reason="AuditUnavailable") from None
        return self.sink

    def audit(self, event: str, data: Mapping[str, Any]) -> AuditRecord:
        sink = self.open_audit()
        uid = str(((self.grant or {}).get("metadata") or {}).get("uid") or "")
        subject = {"kind": "ExecutionGrant", "namespace": self.settings.namespace,
                   "name": self.settings.grant_name, "uid": uid}
        payload = {"token_sha256": self.token_ref, "pod": self.settings.pod_name, **data}
        return sink.append(event, actor=f"gateway/{self.settings.pod_name}", subject=subject,
                           data=payload)

    # -- status -------------------------------------------------------------------------------
    def patch_status(self, build: Callable[[dict[str, Any]], dict[str, Any] | None], *,
                     seconds: float = RESULT_SECONDS, until_stopped: bool = False) -> bool:
        """Read-modify-write of the grant's status guarded by resourceVersion; False if skipped
        (also when the grant under the name is no longer the one this run read, or, before any
        read, not the one the Job was made for: deleted and created again, it is not this
        gateway's to write).

        All of it within ``seconds``: each call waits for the API server at most
        ``API_CALL_SECONDS`` and never past what is left, and none is started with less than
        ``STATUS_CALL_MIN_SECONDS`` left (the last failure is raised then, or ``NoTimeLeft``
        when no call was made: a call given less could not be answered); a conflict is read
        and written again, and so is a failure that may pass (no answer, 429, 5xx), backing
        off, or after as long as the answer's ``Retry-After`` asks (API Priority and Fairness
        sends one with a 429), while time is left; then, or at once when the pause asked for is
        past the budget, the last error is raised. ``until_stopped`` (the write of ``Running``): not
        made again either once the pod was asked to stop (SIGTERM; one during the pause ends
        it), as nothing runs then; the writes of an outcome go on, as they are what records
        it. A write with no definite answer may have landed: the builder, given the grant as
        it is then, must tell its own write (the result, written again the same; ``Running``:
        :func:`_own_running`)."""
        assert self.kube is not None
        s = self.settings
        policy = RetryPolicy(budget=seconds, first_delay=STATUS_RETRY_FIRST_DELAY,
                             call_seconds=API_CALL_SECONDS, call_min_seconds=0.0)
        give_up = time.monotonic() + seconds
        conflicts = tries = 0
        failed: WingmanError | None = None

        def once() -> float:
            left = give_up - time.monotonic()
            if left < STATUS_CALL_MIN_SECONDS:  # the budget holds: no call it cannot end
                raise _OutOfTime
            return try_seconds(policy, left)

        while True:
            try:
                grant = self.kube.get(GRANTS, s.namespace, s.grant_name, once=once())
                uid = (grant.get("metadata") or {}).get("uid")
                if self.grant is not None and uid != (self.grant.get("metadata") or {}).get(
                        "uid"):
                    return False
                if s.grant_uid and uid != s.grant_uid:
                    return False
                status = build(grant)
                if status is None:
                    return False
                body = {"metadata": {"resourceVersion": grant["metadata"]["resourceVersion"]},
                        "status": status}
                self.grant = self.kube.patch(GRANTS, s.namespace, s.grant_name, body,
                                             subresource="status", once=once())
                return True
            except _OutOfTime:
                raise failed or NoTimeLeft(
                    f"no time was left of the {seconds:g} s for writing the grant's status "
                    "(nothing was written)") from None
            except ApiError as exc:
                failed = exc
                if exc.conflict and conflicts < _STATUS_RETRIES - 1:
                    conflicts += 1
                    continue
            except WingmanError as exc:
                failed = exc
            tries += 1
            pause = retry_pause(policy, failed, tries, give_up - time.monotonic())
            if pause is None or (until_stopped and executors.TERMINATION.requested):
                raise failed
            self.log("StatusWriteRetried", level="warning", reason=failed.reason,
                     message=f"writing the grant's status failed ({failed.message}); trying "
                     f"again in {pause:.2f} s")
            if until_stopped:  # a SIGTERM in the pause ends it, and the write is not made
                if executors.TERMINATION.wait(pause):
                    raise failed
            else:
                time.sleep(pause)

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    def executor_left(self) -> float:
        """Seconds the executor's token has left (by the monotonic clock)."""
        return self.executor_expires - time.monotonic()

    # -- outcomes -----------------------------------------------------------------------------
    def refuse(self, exc: WingmanError) -> int:
        reason, detail = refusal_reason(exc)
        message = exc.message
        self.log("GatewayRefused", level="warning", reason=reason, message=message,
                 detail=detail if detail != reason else None)
        audit_hash: str | None = None
        try:
            record = self.audit("GatewayRefused", {"reason": reason, "detail": detail,
                                                   "message": message[:2000]})
            audit_hash = f"sha256:{record.hash}"
        except WingmanError as audit_exc:
            self.log("AuditFailed", level="error", reason=audit_exc.reason,
                     message=audit_exc.message)
        if self.kube is None:  # refused before connecting (no token, no keys): still report
            try:
                self.kube = _connect(self.settings)
            except WingmanError as conn_exc:
                self.log("StatusUpdateFailed", level="error", reason=conn_exc.reason,
                         message=conn_exc.message)
        if self.kube is not None:
            try:
                now = self.now()
                written = self.patch_status(
                    lambda g: refused_status(grant_rules.view(g, self.approval), reason,
                                             message, now, audit_hash,
                                             own_running=self.running))
                if not written:
                    self.log("StatusLeftAlone", reason=reason,
                             message="an execution already owns this grant's status, or the "
                             "grant was deleted and created again")
            except WingmanError as status_exc:
                self.log("StatusUpdateFailed", level="error", reason=status_exc.reason,
                         message=status_exc.message)
        return EXIT_REFUSED

    def replay(self, lease: str) -> int:
        ref = self.token_ref or ""
        self.log("GatewayReplayRejected", level="warning", reason="ReplayRejected",
                 message=f"burn marker {lease} exists: this token was already used",
                 lease=lease)
        try:
            self.audit("GatewayReplayRejected", {"lease": lease, "reason": "ReplayRejected"})
        except WingmanError as exc:
            self.log("AuditFailed", level="error", reason=exc.reason, message=exc.message)
        try:
            now = self.now()
            self.patch_status(lambda g: replay_status(g, self.settings.pod_name, ref, now))
        except WingmanError as exc:
            self.log("StatusUpdateFailed", level="error", reason=exc.reason, message=exc.message)
        return EXIT_REPLAY

    def internal_error(self, exc: BaseException) -> int:
        what = exc.message if isinstance(exc, WingmanError) else type(exc).__name__
        self.log("GatewayInternalError", level="error", reason="GatewayInternalError",
                 message=what)
        if self.kube is not None:
            message = f"the gateway failed internally ({what}); see its log"
            now = self.now()

            def build(grant: dict[str, Any]) -> dict[str, Any] | None:
                # once executing, a Running phase is our own: close it
                return refused_status(grant_rules.view(grant, self.approval),
                                      "GatewayInternalError", message, now, None,
                                      own_running=self.running)

            try:
                self.patch_status(build)
            except Exception:  # noqa: BLE001 - best effort while failing
                self.log("StatusUpdateFailed", level="error", reason="GatewayInternalError")
        return EXIT_INTERNAL

    def close(self) -> None:
        if self.token:
            logs.forget(self.token)
        if self.sink is not None:
            self.sink.close()
        if self.kube is not None:
            self.kube.close()
        if self.executor_kube is not None:
            self.executor_kube.close()
        if self.executor_token is not None:
            logs.forget(self.executor_token.token)
        for retired in self.retired_tokens:
            logs.forget(retired)


def _connect(settings: GatewaySettings) -> Kube:
    """The gateway's client: its ServiceAccount, every call bounded (``API_CALL_SECONDS``)."""
    kube = Kube.from_service_account(settings.api_server, settings.serviceaccount_dir)
    kube.call_seconds = API_CALL_SECONDS
    return kube


_T = TypeVar("_T")


def _retried(run: _Run, what: str, call: Callable[[float], _T]) -> _T:
    """``call(once)`` (``once``: how long its one try may wait for an answer), made again while
    it fails in a way that may pass (``wingman.kube.transient``), backing off, for
    ``API_RETRY_SECONDS`` at most, waiting as long as an answer's ``Retry-After`` asks (and
    giving up when that is past the budget); then, or at once for any other failure or once
    the pod is asked to stop (a SIGTERM ends a pause at once: ``TERMINATION.wait``), its last
    error (``wingman.kube.call_retried``); a call that would be made again when the pod is
    asked to stop, or is during the pause, is not, and the gateway refuses
    ``GatewayTerminating`` (:func:`_stopped`), not with the call's error. Only for calls that
    change nothing (``API_RETRY_SECONDS``)."""
    def retrying(exc: WingmanError, pause: float) -> None:
        run.log("ApiCallRetried", level="warning", reason=exc.reason,
                message=f"{what} failed ({exc.message}); trying again in {pause:.2f} s")

    policy = RetryPolicy(budget=API_RETRY_SECONDS, first_delay=API_RETRY_FIRST_DELAY,
                         call_seconds=API_CALL_SECONDS,
                         call_min_seconds=JOB_READ_CALL_MIN_SECONDS)
    return call_retried(policy, call, retrying=retrying,
                        stop=lambda: executors.TERMINATION.requested,
                        wait=executors.TERMINATION.wait,
                        stopped=lambda exc: _stopped(run, "ApiCallStopped", what, exc))


def _stopped(run: _Run, event: str, what: str, exc: WingmanError) -> Terminating:
    """The refusal of a read (or the executor's TokenRequest) that is not made again because the
    pod was asked to stop (SIGTERM) before its next try: logged as such (``event``: the log
    line after its ``...Retried``, which said it would be tried again), the last failure
    kept in the message."""
    run.log(event, level="warning", reason="GatewayTerminating",
            message=f"{what} failed ({exc.message}) and is not tried again: the pod was asked "
            "to stop (SIGTERM)")
    return Terminating(f"the gateway's pod was asked to stop (SIGTERM) while {what} was "
                       f"being tried again (it had failed: {exc.message}); nothing was "
                       "executed; if the grant was not cancelled, submit a new request to run "
                       "the command")


def _get(run: _Run, resource: Any, name: str, kind: str) -> dict[str, Any]:
    return _get_dated(run, resource, name, kind)[0]


def _get_dated(run: _Run, resource: Any, name: str, kind: str
               ) -> tuple[dict[str, Any], dt.datetime | None]:
    """The object and the API server's clock when it answered (``Kube.get_dated``), for
    :func:`wingman.gateway.checks.judged_now`, read again while the failure may pass
    (:func:`_retried`); a refusal when it cannot be read."""
    kube, namespace = run.kube, run.settings.namespace
    assert kube is not None
    try:
        return _retried(run, f"reading {kind} {namespace}/{name}",
                        lambda once: kube.get_dated(resource, namespace, name, once=once))
    except ApiError as exc:
        if exc.not_found:
            raise GrantDenied(f"{kind} {namespace}/{name} does not exist",
                              reason=f"{kind}NotFound") from None
        raise GrantDenied(f"cannot read {kind} {namespace}/{name}: {exc.message}",
                          reason="ApiUnavailable") from None
    except Terminating:
        raise
    except WingmanError as exc:
        raise GrantDenied(f"cannot read {kind} {namespace}/{name}: {exc.message}",
                          reason="ApiUnavailable") from None


def _issued(run: _Run, grant: dict[str, Any], approval: dict[str, Any], until: float,
            now: float, forward: Mapping[str, Any] | None = None
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The grant, and its approval, once the grant is no longer judged ``Pending``
    (``wingman.model.grants.view``: a claim that records its token makes it ``TokenIssued``).
    For a grant whose token is recorded in its own status (its Job not derived from its name,
    or a grant an earlier release issued) the operator writes ``TokenIssued`` at the same time
    as the token Secret, not before it, so a gateway may start first: it reads the grant and
    its approval again (backing off from 0.1 s to 2 s) until then, or until ``until`` (the token's
    expiry with the leeway: it is useless after that anyway; ``now`` is the time the token was
    judged on, ``checks.judged_now``), and spends nothing meanwhile.
    A read that fails is tried again; a grant deleted, or deleted and created again under its
    name, refuses (the token is for the one deleted), and so does an approval deleted, or one
    no longer usable (revoked, rejected, expired: ``checks.check_approval``, the check after the
    wait, with its reason; ``forward``: for a rollback grant, the grant whose command it
    undoes)."""
    s = run.settings
    assert run.kube is not None
    uid = (grant.get("metadata") or {}).get("uid")
    approval_name = str((approval.get("metadata") or {}).get("name") or "")
    deadline = time.monotonic() + max(0.0, until - now)
    delay = 0.1
    while grant_rules.phase(grant_rules.view(grant, approval)) == "Pending" and not (
            grant.get("metadata") or {}).get("deletionTimestamp"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise GrantDenied(
                f"ExecutionGrant {s.grant_name} was still Pending when its token expired: the "
                "operator did not record the token it had stored (see the operator's log for "
                "the grant); the token was not spent and nothing was executed; submit a new "
                "request", reason="GrantNotIssued")
        _refuse_if_terminating("its grant recorded the token")
        time.sleep(min(delay, left))
        delay = min(delay * 2, ISSUE_POLL_MAX_SECONDS)
        try:
            fresh = run.kube.get(GRANTS, s.namespace, s.grant_name)
        except ApiError as exc:
            if exc.not_found:
                raise GrantDenied(f"ExecutionGrant {s.namespace}/{s.grant_name} was deleted "
                                  "while its gateway waited for its status",
                                  reason="ExecutionGrantNotFound") from None
            continue  # the API server may come back before the token expires
        except WingmanError:
            continue
        if (fresh.get("metadata") or {}).get("uid") != uid:
            raise _binding("ExecutionGrant")
        grant = fresh
        try:
            approval, server_now = run.kube.get_dated(APPROVALS, s.namespace, approval_name)
        except ApiError as exc:
            if exc.not_found:
                raise GrantDenied(f"ApprovalRequest {s.namespace}/{approval_name} was deleted "
                                  "while the gateway of its grant waited for the token",
                                  reason="ApprovalRequestNotFound") from None
            continue
        except WingmanError:
            continue
        # revoked, rejected or expired meanwhile: refused now, not when the token expires
        check_approval(approval, judged_now(run.now(), server_now), forward=forward,
                       rollback=undone_command(grant, forward) is not None,
                       window_seconds=s.policy.rollback_window_seconds)
    return grant, approval


def _refuse_if_terminating(before: str) -> None:
    """GrantDenied ``GatewayTerminating`` when the pod was asked to stop (SIGTERM: its grant
    deleted, its Job's deadline, its node drained): nothing more is started."""
    if executors.TERMINATION.requested:
        raise Terminating(f"the gateway's pod was asked to stop (SIGTERM) before it {before}; "
                          "nothing was executed; if the grant was not cancelled, submit a new "
                          "request to run the command")


def _check_recorded(grant: Mapping[str, Any], token_ref: str | None) -> None:
    """A ``TokenIssued`` grant (as judged: ``wingman.model.grants.view``, which gives a grant
    whose token was issued on its claim the claim's fields) records the SHA-256 of the token
    the operator stored for it: it must be this token's (a status without one records no token
    at all)."""
    recorded = (grant.get("status") or {}).get("tokenSHA256")
    if not recorded or recorded != token_ref:
        raise GrantDenied("the grant's status does not record the token this pod holds "
                          f"(status.tokenSHA256 is {'another' if recorded else 'missing'}); the "
                          "token was not spent and nothing was executed; the approval granted "
                          "its command to this grant, so submit a new request to run it",
                          reason="BindingMismatch")


def _rollback_of(grant: Mapping[str, Any]) -> str:
    """The forward grant a rollback grant undoes, as its records name it (``rollbackOf``)."""
    return str(((grant.get("spec") or {}).get("rollbackOf") or {}).get("name"))


def _forward(run: _Run, grant: Mapping[str, Any]) -> dict[str, Any] | None:
    """For a rollback grant, the grant that ran the command it undoes (None: absent)."""
    name = ((grant.get("spec") or {}).get("rollbackOf") or {}).get("name")
    if not name:
        return None
    assert run.kube is not None
    kube = run.kube
    try:
        return _retried(run, f"reading ExecutionGrant {name}",
                        lambda once: kube.get(GRANTS, run.settings.namespace, str(name),
                                              once=once))
    except ApiError as exc:
        if exc.not_found:
            return None
        raise GrantDenied(f"cannot read ExecutionGrant {name}: {exc.message}",
                          reason="ApiUnavailable") from None
    except Terminating:
        raise
    except WingmanError as exc:  # no answer (within API_CALL_SECONDS): nothing runs on it
        raise GrantDenied(f"cannot read ExecutionGrant {name}: {exc.message}",
                          reason="ApiUnavailable") from None


def _raise_if_spent(run: _Run, claims: tokens.CapabilityClaims) -> None:
    """Replay when another pod already burnt this token. The executor's token is bound to the
    grant's token Secret, which the operator deletes once that pod's run ended the grant: a
    second pod with the same token then gets no executor token, and is a replay, not a grant
    that cannot run. (Whether the marker can be read or not, the caller's refusal stands.)"""
    if run.kube is None:
        return
    name = burn_marker(claims, run.settings, run.token_ref or "")["metadata"]["name"]
    try:
        found = run.kube.get_or_none(LEASES, run.settings.namespace, name)
    except WingmanError:
        return
    if found is not None:
        raise Replay(name)


def _read_job(run: _Run, name: str) -> tuple[dict[str, Any], dt.datetime | None]:
    """The gateway's own Job and the API server's clock when it answered. A failure that may
    pass (no answer, also none within ``JOB_READ_CALL_SECONDS``; 429, 5xx:
    ``wingman.kube.transient``) is tried again, backing off, for ``JOB_READ_RETRY_SECONDS`` at
    most, waiting as long as the answer's ``Retry-After`` asks (and giving up when that is past
    the budget); any other answer (403, 404...) at once. Once the pod is asked to stop (a
    SIGTERM ends a pause at once: ``TERMINATION.wait``) it is not read again: the refusal is
    ``GatewayTerminating`` (:func:`_stopped`)."""
    kube = run.kube
    assert kube is not None

    def retrying(exc: WingmanError, pause: float) -> None:
        run.log("JobReadRetried", level="warning", reason=exc.reason,
                message=f"reading the gateway Job failed ({exc.message}); trying again in "
                f"{pause:.2f} s")

    policy = RetryPolicy(budget=JOB_READ_RETRY_SECONDS, first_delay=JOB_READ_FIRST_DELAY,
                         call_seconds=JOB_READ_CALL_SECONDS,
                         call_min_seconds=JOB_READ_CALL_MIN_SECONDS)
    return call_retried(policy, lambda once: kube.get_dated(JOBS, run.settings.namespace, name,
                                                            once=once), retrying=retrying,
                        stop=lambda: executors.TERMINATION.requested,
                        wait=executors.TERMINATION.wait,
                        stopped=lambda exc: _stopped(run, "JobReadStopped",
                                                     "reading the gateway Job", exc))


def _burn_failed(exc: WingmanError, lease_name: str, claims: tokens.CapabilityClaims
                 ) -> GrantDenied:
    """The ``BurnFailed`` refusal of a burn marker not created. It never names the marker, nor
    quotes the token's ``jti`` (the API server's answer names the Lease): the refusal goes
    into the grant's status, its log and the audit trail, which others read, and a marker
    that may not exist yet (a refusal stored nothing) named there could be created first by
    whoever can create Leases, spending the token of another run. The ``jti``'s SHA-256,
    as ``TokenMinted`` records it, says which token it was."""
    said = exc.message.replace(lease_name, "<burn marker>").replace(claims.jti, "<jti>")
    return GrantDenied(f"cannot create the burn marker of the token whose jti's SHA-256 is "
                       f"{tokens.jti_sha256(claims.jti)}: {said}; {_burn_outcome(exc)}",
                       reason="BurnFailed")


def _burn_outcome(exc: WingmanError) -> str:
    """What a failed create of the burn marker left: a refusal (4xx) wrote nothing; a create
    with no definite answer (none at all, or a 5xx: the API server may have stored the Lease
    and then failed) may have spent the token. Nothing was executed either way."""
    if isinstance(exc, ApiError) and 400 <= exc.status < 500:
        return "the token was not spent and nothing was executed"
    return ("the API server gave no definite answer, so the marker may have been stored and "
            "the token spent; nothing was executed; submit a new request to run the command")


def _check_job_deadline(run: _Run, grant: Mapping[str, Any]) -> JobDeadline:
    """Refuse (``DeadlineTooClose``) a command its own Job's deadline could stop half-way. The
    deadline is read from the Job itself (its start and ``activeDeadlineSeconds``, which the
    operator may have extended since the pod started), the one whose UID the pod carries, and
    measured on the later of the gateway's clock and the API server's (a gateway whose clock is
    behind the control plane's must not see more time left than there is). A Job that cannot
    be read, after a few quick tries when the failure may pass, refuses (``DeadlineUnknown``):
    the gateway cannot tell whether the command would be cut short, and refusing leaves the
    token unspent and nothing changed. Returns the deadline, to measure again before the
    command starts."""
    assert run.kube is not None
    s = run.settings
    name = names.grant_job_name(grant)
    try:
        job, server_now = _read_job(run, name)
    except Terminating:
        raise
    except WingmanError as exc:
        hint = ("the gateway Role needs get on jobs (batch) in the release namespace: helm "
                "upgrade restores it; " if isinstance(exc, ApiError) and exc.status == 403
                else "")
        raise GrantDenied(
            f"cannot read the gateway Job {s.namespace}/{name} for its deadline "
            f"({exc.message}); the gateway does not start a command its Job's deadline could "
            "stop half-way, so the token was not spent and nothing was executed; "
            f"{hint}submit a new request to run the command", reason="DeadlineUnknown"
        ) from None
    if (job.get("metadata") or {}).get("uid") != s.job_uid:
        raise _binding("Job")
    deadline = JobDeadline.read(job, run.now(), server_now, time.monotonic())
    check_deadline(job, deadline.now(time.monotonic()), s.exec_timeout_seconds)
    return deadline


def _executor_token(run: _Run, grant: Mapping[str, Any], claims: tokens.CapabilityClaims
                    ) -> None:
    """A token of the executor account (``wingman.gateway.identity``), and a client acting as
    it, for the run (one asked for before replaced); refused (``ExecutorTokenUnavailable``,
    the capability token unspent) when none is given, a replay when another pod spent it."""
    s = run.settings
    assert run.kube is not None
    asked = time.monotonic()  # its lifetime counts from before the request
    try:
        fresh = identity.request_token(
            run.kube, s, str((grant.get("status") or {}).get("tokenSecretName") or ""),
            retried=lambda call: _retried(run, "the executor's TokenRequest", call),
            now=run.now)
    except Terminating:
        raise
    except GrantDenied:
        _raise_if_spent(run, claims)
        raise
    logs.never_log(fresh.token)
    if run.executor_token is not None:
        run.retired_tokens.append(run.executor_token.token)
    if run.executor_kube is not None:
        run.executor_kube.close()
    run.executor_token, run.executor_expires = fresh, asked + fresh.lifetime
    run.executor_kube = Kube.from_token(s.api_server, fresh.token,
                                        s.serviceaccount_dir / "ca.crt")
    run.executor_kube.call_seconds = API_CALL_SECONDS


def _read_target(run: _Run, target: previews.Target) -> dict[str, Any] | None:
    """The live state of a previewed target, as the executor account (the one that will act
    on it: the gateway's own holds no rights in the target namespaces) reads it."""
    if target.group == "docker":
        state = executors.inspect_container(target.name, settings=run.settings)
        return None if state is None else previews.container_identity(state)
    if run.executor_kube is None:
        raise GrantDenied("a kubectl target is read as the executor account, and the gateway "
                          "holds no token of it", reason="ExecutorTokenUnavailable")
    kube = run.executor_kube
    try:
        return _retried(run, f"reading target {target.ref}",
                        lambda once: kube.request("GET", previews.target_path(target),
                                                  once=once))
    except ApiError as exc:
        if exc.not_found:
            return None
        raise


def _credentials(settings: GatewaySettings, token: str,
                 executor_token: identity.ExecutorToken | None) -> executors.Credentials:
    """What the executor runs with: the executor account's token (none for Docker), and every
    secret the gateway holds, to redact from the output."""
    secrets: list[str] = [token]
    try:
        sa_token = (settings.serviceaccount_dir / "token").read_text().strip()
    except OSError:
        sa_token = ""
    if sa_token:
        secrets.append(sa_token)
    if executor_token is not None:
        secrets.append(executor_token.token)
    return executors.Credentials(server=settings.api_server,
                                 ca_file=settings.serviceaccount_dir / "ca.crt",
                                 token=executor_token.token if executor_token else "",
                                 secrets=tuple(secrets),
                                 secret_files=(settings.serviceaccount_dir / "token",))


def _execute(run: _Run) -> int:
    s = run.settings
    token = run.token = read_token(s.token_file)
    logs.never_log(token)  # defence in depth: a token never reaches the log
    run.token_ref = tokens.token_sha256(token)
    keys = load_keys(s.public_keys_dir)
    try:
        run.kube = _connect(s)
    except WingmanError as exc:
        raise GrantDenied(exc.message, reason="NoCredentials") from None
    run.grant = grant = _get(run, GRANTS, s.grant_name, "ExecutionGrant")
    approval_name = str(((grant.get("spec") or {}).get("approvalRef") or {}).get("name") or "")
    if not approval_name:
        raise GrantDenied("the ExecutionGrant has no spec.approvalRef.name",
                          reason="BindingMismatch")
    approval, server_now = _get_dated(run, APPROVALS, approval_name, "ApprovalRequest")
    forward = _forward(run, grant)
    # the grant as judged with its approval: a token issued on the claim makes it TokenIssued
    run.approval = approval
    grant = dict(grant_rules.view(grant, approval))

    # token and approval times on the later of this node's clock and the API server's
    judged = judged_now(run.now(), server_now).timestamp()
    claims, argv = authorize(token, keys, grant, approval, s, judged, forward=forward)
    if grant_rules.phase(grant) == "Pending":
        # neither the grant's status nor its claim records the token yet: for a grant the
        # operator issues in its status (TokenIssued at the same time as the token Secret),
        # this pod may have started first. Wait for it, then check everything again on what
        # is current
        run.log("GatewayWaiting", message="neither the grant's status nor its claim on the "
                "approval records the token yet: waiting for the operator to issue it")
        run.grant, _ = _issued(run, grant, approval, claims.exp + s.leeway_seconds, judged,
                               forward)
        approval, server_now = _get_dated(run, APPROVALS, approval_name,
                                          "ApprovalRequest")
        run.approval = approval
        grant = dict(grant_rules.view(run.grant, approval))
        forward = _forward(run, grant)
        claims, argv = authorize(token, keys, grant, approval, s,
                                 judged_now(run.now(), server_now).timestamp(), forward=forward)
        phase = grant_rules.phase(grant)
        if phase != "TokenIssued":
            _raise_if_spent(run, claims)  # another pod ran this token meanwhile: a replay
            raise GrantDenied(f"ExecutionGrant {s.grant_name} went from Pending to {phase} "
                              "while its gateway waited for TokenIssued; the token was not "
                              "spent and nothing was executed", reason="GrantNotIssued")
    if grant_rules.phase(grant) == "TokenIssued":
        _check_recorded(grant, run.token_ref)
    undoes = undone_command(grant, forward)
    executor = executors.preflight(argv, settings=s)
    run.open_audit()  # an audit trail that cannot even be opened refuses before the burn
    if executor.name == "kubernetes":
        # kubectl runs (and its targets are read) as the executor account: no token of it,
        # no execution, and the capability token stays unspent
        _executor_token(run, grant, claims)
    # the state the approval was given on: refused here, the token stays unspent
    allow_drift = s.policy.target_drift.value == "Allow"
    if undoes is None:  # a rollback acts on what its command changed: nothing to bind
        check_targets(approval, claims.command, allow_drift=allow_drift,
                      read=lambda t: _read_target(run, t))

    if run.executor_token is not None and run.executor_left() < (
            s.exec_timeout_seconds + identity.START_MARGIN_SECONDS):
        # the checks since it was asked for may have eaten the margin the executor's token was
        # asked for with: ask again, so that it outlives the command from its start (refused
        # unspent if it cannot); before the deadline and the expiry, which measure this too
        _executor_token(run, grant, claims)
        identity.check_covers(s, run.executor_token, run.executor_left(), spent=False,
                              margin=identity.START_MARGIN_SECONDS)

    # the last check before the burn: the command and its result fit before the Job's deadline
    deadline = _check_job_deadline(run, grant)
    # the checks since the token was verified may have taken long: an expired token is not spent
    check_unexpired(claims, deadline.now(time.monotonic()), s.leeway_seconds,
                    str(run.token_ref))
    _refuse_if_terminating("spent the token")
    lease = burn_marker(claims, s, run.token_ref)
    lease_name = lease["metadata"]["name"]
    try:
        run.kube.create(LEASES, s.namespace, lease)
    except ApiError as exc:
        if exc.conflict:
            raise Replay(lease_name) from None
        raise _burn_failed(exc, lease_name, claims) from None
    except WingmanError as exc:
        raise _burn_failed(exc, lease_name, claims) from None
    run.log("GatewayTokenBurned", lease=lease_name)
    # the jti itself only now that its marker exists; TokenMinted records its digest alone
    common = {"jti": claims.jti, "jti_sha256": tokens.jti_sha256(claims.jti),
              "lease": lease_name, "job_uid": s.job_uid,
              "command_sha256": f"sha256:{claims.command_sha256}",
              "approval_uid": claims.approval_uid}
    run.audit("GatewayTokenBurned", common)
    # the approval may have been revoked while the token was being burned: look once more
    fresh, server_now = _get_dated(run, APPROVALS, approval_name, "ApprovalRequest")
    if (fresh.get("metadata") or {}).get("uid") != claims.approval_uid:
        raise _binding("ApprovalRequest")
    check_approval(fresh, judged_now(run.now(), server_now), forward=_forward(run, grant),
                   rollback=undoes is not None,
                   window_seconds=s.policy.rollback_window_seconds)
    run.approval = fresh
    check_granted(fresh, claims.command, claims.grant_uid, claims.grant_name,
                  rollback_of=undoes, token_ref=run.token_ref)
    # the trail, which lives outside etcd, remembers a run a restored etcd forgot; after the
    # burn, so that a token presented again with the cluster intact is a replay
    check_not_run(run.open_audit().executions(claims.approval_uid, claims.grant_uid), claims,
                  rollback_of=_rollback_of(grant) if undoes is not None else None)
    drift = [] if undoes is not None else check_targets(
        fresh, claims.command, allow_drift=allow_drift, read=lambda t: _read_target(run, t))
    extra: dict[str, Any] = {"targetDrift": drift} if drift else {}
    if drift:
        run.log("TargetDriftAllowed", level="warning", reason="TargetChanged",
                message="; ".join(drift)[:2000])
    if undoes is not None:
        extra["rollbackOf"] = _rollback_of(grant)
    intent = {**common, "command": claims.command, "executor": executor.name,
              "approval": claims.approval_name, "requester": claims.sub, **extra}
    # the record Running stands for: about to start, not yet started (the guarded write of
    # Running may still refuse, and then the trail must not claim an execution)
    run.audit("GatewayStarting", intent)

    refused: list[GrantDenied] = []
    landed: list[bool] = []
    started = run.now()

    def to_running(g: dict[str, Any]) -> dict[str, Any] | None:
        if _own_running(g, claims.grant_uid, str(run.token_ref), started):
            landed.append(True)  # an earlier try of this write landed, its answer lost
            return None
        # only the grant the token names, not cancelled meanwhile, only from TokenIssued and
        # only while it records this token (check_startable), judged with the approval as
        # last read (its claim is append-only); a token issued on the claim is recorded in
        # the grant's status with Running
        judged = grant_rules.view(g, fresh)
        try:
            check_startable(judged, grant_uid=claims.grant_uid, token_ref=str(run.token_ref))
        except GrantDenied as exc:
            refused.append(exc)
            return None
        return running_status(judged, started)

    try:
        running = run.patch_status(to_running, seconds=API_RETRY_SECONDS,
                                   until_stopped=True) or bool(landed)
    except WingmanError as exc:
        if transient(exc):  # no definite answer: Running may have been written, by this run
            run.running = True  # (the token is spent: no other run gets past the burn)
        _refuse_if_terminating("recorded phase Running")  # the write given up for the stop
        raise GrantDenied(f"cannot record phase Running on the grant ({exc.message}); the "
                          "command was not executed", reason="StatusUnavailable") from None
    if not running:
        raise refused[-1] if refused else GrantDenied(
            "the grant is no longer waiting for its gateway (it was deleted and created again "
            "under its name); the command was not executed", reason="GrantNotIssued")
    run.running = True
    # the burn, its records, the approval read again and the write of Running took time since
    # the deadline was measured: measure again (on the same clock, no API call) before the
    # claim of execution; a refusal now closes the Running phase, the token spent
    check_deadline(deadline.job, deadline.now(time.monotonic()), s.exec_timeout_seconds,
                   spent=True)
    if run.executor_token is not None:  # and the executor's token outlives the command
        identity.check_covers(s, run.executor_token, run.executor_left(), spent=True)
    _refuse_if_terminating("started the command")
    # the claim of execution, only once this run owns the grant's Running phase, and before
    # the child starts: no record, no run (a refusal now closes the Running phase)
    run.audit("GatewayExecuting", intent)
    run.executing = True
    run.log("GatewayExecuting", executor=executor.name)

    try:
        result = executor.run(argv, settings=s,
                              credentials=_credentials(s, token, run.executor_token))
    except ExecutionFailed as exc:
        return _record_execution_failure(run, exc, common, time.monotonic())
    ended = time.monotonic()  # the result's writes have RESULT_SECONDS from here

    audit_hash: str | None = None
    try:
        record = run.audit("GatewayExecuted", {
            **common, "exit_code": result.exit_code, "output_sha256": result.output_sha256,
            "output_truncated": result.truncated, "timed_out": result.timed_out,
            **({"interrupted": True} if result.interrupted else {}),
            **({"message": result.message} if result.message else {}),
            "duration_seconds": result.duration_seconds})
        audit_hash = f"sha256:{record.hash}"
    except WingmanError as exc:
        run.log("AuditFailed", level="error", reason=exc.reason, message=exc.message)
    now = run.now()
    outcome = {"exit_code": result.exit_code, "output_sha256": result.output_sha256,
               "timed_out": result.timed_out,
               **({"interrupted": True} if result.interrupted else {})}
    try:
        run.patch_status(lambda g: final_status(g, result, audit_hash, now),
                         seconds=_left(ended))
    except WingmanError as exc:
        return _result_unrecorded(run, exc, {**common, **outcome},
                                  f"the command ran (exit code {result.exit_code})")
    run.log("GatewayExecuted", reason="CommandInterrupted" if result.interrupted else
            "CommandSucceeded" if result.exit_code == 0 else "CommandFailed",
            exit_code=result.exit_code, output_sha256=result.output_sha256,
            duration_seconds=result.duration_seconds)
    return EXIT_OK if audit_hash is not None else EXIT_INTERNAL


def _own_running(grant: Mapping[str, Any], grant_uid: str, token_ref: str,
                 started: dt.datetime) -> bool:
    """Whether ``grant`` is ``Running`` as this run writes it: the grant the token names,
    recording this token and the start this run wrote. Only the run that burnt the token gets
    as far as writing ``Running`` with it (a second one is a replay at the burn), so a write of
    ``Running`` made again after one that got no answer finds its own and goes on."""
    status = grant.get("status") or {}
    return ((grant.get("metadata") or {}).get("uid") == grant_uid
            and status.get("phase") == "Running" and status.get("tokenSHA256") == token_ref
            and status.get("startTime") == conditions.rfc3339(started))


def _left(ended: float) -> float:
    """What is left of the ``RESULT_SECONDS`` after the command ended (monotonic ``ended``):
    the deadline check left that much before the Job's deadline, and the kubelet's grace
    period after a SIGTERM (30 s) is longer."""
    return max(0.0, RESULT_SECONDS - (time.monotonic() - ended))


def _result_unrecorded(run: _Run, exc: WingmanError, data: Mapping[str, Any], what: str
                       ) -> int:
    """The grant's status could not be written after the command ran, within its budget: the
    log and the audit trail (``GatewayResultUnrecorded``) say what is known. Exit 1: the Job
    fails, and the operator's Job watcher records that on a grant left ``Running``."""
    if isinstance(exc, NoTimeLeft):
        known = ("no write of the result was made (too little of that time was left for one), "
                 "so the grant's status does not hold it (the operator then records the Job's "
                 "failure on a grant left Running)")
    elif transient(exc):
        known = ("the last write got no answer within the time left or a server error, so the "
                 "grant's status may hold the result or may still say Running (the operator "
                 "then records the Job's failure)")
    else:
        known = "the API server refused the write, so the grant's status does not hold it"
    message = (f"{what}, but its result could not be written to the grant's status within "
               f"{RESULT_SECONDS} s of its end ({exc.message}); {known}; this record and "
               "GatewayExecuted hold the result")
    run.log("StatusUpdateFailed", level="error", reason="StatusUnavailable", message=message)
    try:
        run.audit("GatewayResultUnrecorded", {**data, "reason": "StatusUnavailable",
                                              "message": message[:2000]})
    except WingmanError as audit_exc:
        run.log("AuditFailed", level="error", reason=audit_exc.reason,
                message=audit_exc.message)
    return EXIT_INTERNAL


def _record_execution_failure(run: _Run, exc: ExecutionFailed, common: Mapping[str, Any],
                              ended: float) -> int:
    """The executor could not run the command after the token was spent."""
    run.log("GatewayExecutionFailed", level="error", reason=exc.reason, message=exc.message)
    audit_hash: str | None = None
    try:
        record = run.audit("GatewayExecuted", {**common, "exit_code": None,
                                               "reason": exc.reason, "message": exc.message})
        audit_hash = f"sha256:{record.hash}"
    except WingmanError as audit_exc:
        run.log("AuditFailed", level="error", reason=audit_exc.reason,
                message=audit_exc.message)
    now = run.now()

    def build(grant: dict[str, Any]) -> dict[str, Any] | None:
        # the Running phase this execution wrote is closed; a result anyone wrote is kept
        return refused_status(grant, exc.reason, exc.message, now, audit_hash,
                              own_running=True)

    try:
        run.patch_status(build, seconds=_left(ended))
    except WingmanError as status_exc:
        return _result_unrecorded(run, status_exc, {**common, "exit_code": None,
                                                    "reason": exc.reason},
                                  f"the executor could not run the command ({exc.reason})")
    return EXIT_INTERNAL


def run_gateway(settings: GatewaySettings, *, clock: Callable[[], float] = time.time,
                asked_to_stop: Callable[[], bool] = lambda: False) -> int:
    """The gateway process: 0 ran and recorded, 3 refused, 4 replay, 1 internal error.
    ``asked_to_stop``: whether a SIGTERM came before this (``wingman gateway`` notes one from
    its first line on); then the gateway refuses, as for one that comes later."""
    logs.setup_logging(settings.log_format, settings.log_level, component="gateway")
    run = _Run(settings, clock)
    # handle SIGTERM (tini, the container's first process, forwards it), so that a cancel or
    # the kubelet stopping the pod stops the command and its end is recorded
    restore = executors.TERMINATION.install()
    if asked_to_stop():  # (after install: one in between is the new handler's)
        executors.TERMINATION.request()
    try:
        return _execute(run)
    except Replay as exc:
        return run.replay(exc.message)
    except WingmanError as exc:
        return run.internal_error(exc) if run.executing else run.refuse(exc)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: log, record, exit 1
        return run.internal_error(exc)
    finally:
        run.close()
        restore()


__all__ = ["EXIT_INTERNAL", "EXIT_OK", "EXIT_REFUSED", "EXIT_REPLAY", "run_gateway"]

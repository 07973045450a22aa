"""The execution gateway: ``wingman gateway``, the entrypoint of a grant's gateway Job.

This module owns the gateway's sequence and its decisions; it is a thin run of steps over pure
functions (:func:`read_token`, :func:`load_keys`, :func:`authorize`, :func:`check_approval`,
:func:`check_granted`, the status builders), and every refusal fails closed:

1. read the capability token (``NoToken``) and the public keys (``NoPublicKeys``);
2. connect to the API server as the gateway's ServiceAccount (never a kubeconfig) and re-read
   the ExecutionGrant and its ApprovalRequest;
3. verify the token against the live objects: signature, issuer, audience (the environment),
   times, and every binding (approval, grant, Job, namespace, command); the approval must
   still be approved and unexpired and record this grant as the one its command was granted
   to (``status.grants``), the command one of its commands byte for byte and inside
   the allowlist (``scope.check``); the executor must be able to run it;
4. burn the token: create the Lease ``wingman-burn-<jti>``; a 409 is a replay (exit 4: the
   grant gets condition ``ReplayDetected`` and nothing else changes);
5. audit ``GatewayTokenBurned`` and ``GatewayExecuting`` durably, set phase ``Running``,
   execute (``wingman.executors``), audit ``GatewayExecuted`` and write the result.

A refusal sets phase ``Failed`` with the typed reason (unless an execution already owns the
grant's status), audits ``GatewayRefused`` and exits 3. Exit 0 means the command ran and its
result is recorded (whatever its exit code); 1 is an internal error. Logs are JSON lines on
stderr with ``WINGMAN_LOG_FORMAT=json``; they carry ``token_sha256``, never the token.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wingman import approvals, conditions, executors, manifests, scope, tokens
from wingman.audit import AuditRecord, AuditSink, open_sink
from wingman.errors import (
    AuditUnavailable,
    ExecutionFailed,
    GrantDenied,
    ScopeViolation,
    TokenRejected,
    WingmanError,
)
from wingman.kube import APPROVALS, GRANTS, LEASES, ApiError, Kube
from wingman.settings import GatewaySettings

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_REPLAY",
    "Replay",
    "authorize",
    "burn_marker",
    "check_approval",
    "check_granted",
    "final_status",
    "load_keys",
    "read_token",
    "refusal_reason",
    "refused_status",
    "replay_status",
    "run_gateway",
]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_REFUSED = 3
EXIT_REPLAY = 4

Body = Mapping[str, Any]

_MAX_TOKEN_FILE = 64 * 1024
_LEASE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_STATUS_RETRIES = 5
# Token reasons that would be ambiguous on a grant (its phase can be "Expired" too).
_TOKEN_REASONS = {
    "Expired": "TokenExpired",
    "NotYetValid": "TokenNotYetValid",
    "IssuedInFuture": "TokenIssuedInFuture",
    "Malformed": "TokenMalformed",
    "Oversized": "TokenOversized",
    "MissingClaim": "TokenMissingClaim",
    "LifetimeTooLong": "TokenLifetimeTooLong",
}
# Once a gateway has started executing, the grant's phase and output belong to that execution.
_OWNED_PHASES = frozenset(("Running", *conditions.GRANT_TERMINAL))


class Replay(WingmanError):
    """The token's burn marker exists already: this token was used before."""

    reason = "ReplayRejected"


# ---------------------------------------------------------------------------------------------
# Pure steps


def read_token(path: Path) -> str:
    """The capability token from its file, or GrantDenied(NoToken)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_TOKEN_FILE)
    except OSError as exc:
        raise GrantDenied(
            f"no capability token at {path} ({exc.strerror}); the gateway only runs from the "
            "Job the operator launches with the grant's token Secret mounted",
            reason="NoToken",
        ) from None
    token = raw.decode("utf-8", errors="replace").strip()
    if not token:
        raise GrantDenied(f"the capability token file {path} is empty; the token Secret "
                          "carries no token", reason="NoToken")
    return token


def load_keys(directory: Path) -> tokens.KeySet:
    """Public keys from ``<kid>.pem`` files (ConfigMap mount; ``..*`` entries are skipped)."""
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise GrantDenied(
            f"cannot read the public keys directory {directory} ({exc.strerror}); mount the "
            "ConfigMap wingman-public-keys there", reason="NoPublicKeys") from None
    pems: dict[str, bytes] = {}
    for entry in entries:
        if entry.name.startswith("..") or not entry.name.endswith(".pem"):
            continue
        try:
            if entry.is_file():
                pems[entry.name] = entry.read_bytes()
        except OSError as exc:
            raise GrantDenied(f"cannot read public key {entry} ({exc.strerror})",
                              reason="NoPublicKeys") from None
    if not pems:
        raise GrantDenied(
            f"no public keys (<kid>.pem) in {directory}; the operator publishes them in the "
            "ConfigMap wingman-public-keys", reason="NoPublicKeys")
    try:
        return tokens.KeySet.from_mapping(pems)
    except WingmanError as exc:
        raise GrantDenied(f"the public keys in {directory} are invalid: {exc.message}",
                          reason="InvalidPublicKey") from None


def check_approval(approval: Body, now: dt.datetime) -> None:
    """GrantDenied unless the approval is approved, not rejected/revoked and unexpired now
    (the operator's own rule, ``wingman.approvals.usable``, applied again at execution time)."""
    ok, reason, message = approvals.usable(approval, now)
    if not ok:
        raise GrantDenied(f"{message}; nothing was executed", reason=reason)


def check_granted(approval: Body, command: str, grant_uid: str, grant_name: str) -> None:
    """GrantDenied unless the approval records ``command`` as granted to this very grant (the
    operator writes ``status.grants`` before it mints: each approved command runs once)."""
    holder = approvals.granted_to(approval, command)
    name = (approval.get("metadata") or {}).get("name")
    if holder is None:
        raise GrantDenied(f"ApprovalRequest {name} records this command as granted to no grant "
                          "(the operator records the grant before it mints its token); nothing "
                          "was executed", reason="CommandNotGranted")
    if holder.get("grantUID") != grant_uid:
        raise GrantDenied(f"ApprovalRequest {name} records this command as granted to "
                          f"ExecutionGrant {holder.get('grant')!r}, not to ExecutionGrant "
                          f"{grant_name}; each approved command runs once; nothing was executed",
                          reason="CommandAlreadyGranted")


def _binding(what: str) -> GrantDenied:
    return GrantDenied(f"the capability token is bound to a different {what} than the live "
                       "objects; nothing was executed", reason="BindingMismatch")


def authorize(token: str, keys: tokens.KeySet, grant: Body, approval: Body,
              settings: GatewaySettings, now: float) -> tuple[tokens.CapabilityClaims, list[str]]:
    """Every check between reading the objects and burning the token: (claims, argv).

    Raises TokenRejected (the token's own reason), GrantDenied (bindings, approval state,
    grant state) or ScopeViolation (command not approved byte for byte or not allowlisted).
    """
    if not settings.job_uid:
        raise GrantDenied("WINGMAN_JOB_UID is empty: the gateway cannot prove which Job it runs "
                          "in, so it does not act", reason="BindingMismatch")
    meta = grant.get("metadata") or {}
    spec = grant.get("spec") or {}
    if meta.get("deletionTimestamp"):
        raise GrantDenied(f"ExecutionGrant {meta.get('name')} is being deleted",
                          reason="GrantDeleted")
    phase = str((grant.get("status") or {}).get("phase") or "")
    if phase in ("Denied", "Expired"):
        raise GrantDenied(f"ExecutionGrant {meta.get('name')} is {phase}; it can no longer "
                          "execute", reason=f"Grant{phase}")
    command = spec.get("command")
    if not isinstance(command, str) or not command:
        raise GrantDenied("the ExecutionGrant has no spec.command", reason="BindingMismatch")
    ameta = approval.get("metadata") or {}
    claims = tokens.verify(
        token, keys, issuer=settings.issuer, audience=settings.environment, now=now,
        leeway=settings.leeway_seconds,
        expected=tokens.Expected(
            approval_uid=str(ameta.get("uid") or ""), grant_uid=str(meta.get("uid") or ""),
            job_uid=settings.job_uid, namespace=settings.namespace, command=command),
    )
    if claims.grant_name != meta.get("name") or claims.grant_name != settings.grant_name:
        raise _binding("ExecutionGrant")
    if (claims.approval_name != ameta.get("name")
            or claims.approval_name != (spec.get("approvalRef") or {}).get("name")):
        raise _binding("ApprovalRequest")
    if meta.get("namespace") != settings.namespace or ameta.get("namespace") != settings.namespace:
        raise _binding("namespace")
    environment = (approval.get("spec") or {}).get("environment")
    if environment != settings.environment:
        raise GrantDenied(f"ApprovalRequest {ameta.get('name')} is for environment "
                          f"{environment!r}; this gateway serves {settings.environment!r}",
                          reason="EnvironmentMismatch")
    check_approval(approval, dt.datetime.fromtimestamp(now, dt.UTC))
    check_granted(approval, command, claims.grant_uid, str(meta.get("name")))
    approved = (approval.get("spec") or {}).get("commands") or []
    if not isinstance(approved, list):
        raise GrantDenied("the ApprovalRequest's spec.commands is not a list",
                          reason="BindingMismatch")
    argv = scope.check(command, approved=[str(c) for c in approved],
                       allowlist=scope.Allowlist.from_patterns(settings.policy.allowlist))
    return claims, argv


def refusal_reason(exc: WingmanError) -> tuple[str, str]:
    """(the grant's reason, the detailed reason) for an error that refuses execution."""
    if isinstance(exc, TokenRejected):
        return _TOKEN_REASONS.get(exc.reason, exc.reason), exc.reason
    if isinstance(exc, ScopeViolation):
        return "ScopeViolation", exc.reason
    return exc.reason, exc.reason


def burn_marker(claims: tokens.CapabilityClaims, settings: GatewaySettings,
                token_ref: str) -> dict[str, Any]:
    """The Lease whose creation spends the token (its name is derived from ``jti``)."""
    name = manifests.burn_marker_name(claims.jti)
    if len(name) > 253 or _LEASE_NAME.fullmatch(name) is None:
        raise GrantDenied("the token's id (jti) cannot name a burn marker (lowercase letters, "
                          "digits and '-'); the token cannot be spent", reason="TokenMalformed")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {manifests.GRANT_LABEL: settings.grant_name,
                       manifests.ROLE_LABEL: "burn-marker", **manifests.MANAGED},
            "annotations": {"wingman.dev/token-sha256": token_ref,
                            "wingman.dev/expires": str(claims.exp),
                            "wingman.dev/pod": settings.pod_name},
        },
        "spec": {"holderIdentity": settings.pod_name[:253]},
    }


def _generation(grant: Body) -> int:
    return int((grant.get("metadata") or {}).get("generation") or 1)


def _conds(grant: Body) -> list[dict[str, Any]]:
    return list((grant.get("status") or {}).get("conditions") or [])


def refused_status(grant: Body, reason: str, message: str, now: dt.datetime,
                   audit_hash: str | None) -> dict[str, Any] | None:
    """The status patch of a refusal, or None when an execution already owns the status."""
    if str((grant.get("status") or {}).get("phase") or "") in _OWNED_PHASES:
        return None
    status: dict[str, Any] = {
        "phase": "Failed", "reason": reason, "message": message,
        "completionTime": conditions.rfc3339(now),
        "conditions": conditions.set_condition(_conds(grant), "Succeeded", False, reason,
                                               message, _generation(grant), now),
    }
    if audit_hash:
        status["auditRecordHash"] = audit_hash
    return status


def replay_status(grant: Body, pod: str, token_ref: str, now: dt.datetime) -> dict[str, Any]:
    """Only the ``ReplayDetected`` condition: phase and output belong to the first execution."""
    message = (f"gateway pod {pod} presented capability token {token_ref}, which was already "
               "used; it was not executed again")
    return {"conditions": conditions.set_condition(
        _conds(grant), "ReplayDetected", True, "ReplayRejected", message, _generation(grant),
        now)}


def running_status(now: dt.datetime) -> dict[str, Any]:
    return {"phase": "Running", "startTime": conditions.rfc3339(now), "reason": "Executing",
            "message": "the gateway verified and spent the token and is executing the command"}


def final_status(grant: Body, result: executors.ExecResult, audit_hash: str | None,
                 now: dt.datetime) -> dict[str, Any]:
    """The status patch recording an execution's result."""
    ok = result.exit_code == 0 and not result.timed_out
    if result.timed_out:
        reason, message = "CommandTimedOut", (
            f"the command did not finish within the gateway's deadline and was killed "
            f"(exit code {result.exit_code})")
    elif ok:
        reason, message = "CommandSucceeded", "the command ran and exited 0"
    else:
        reason, message = "CommandFailed", f"the command ran and exited {result.exit_code}"
    if audit_hash is None:
        reason = "AuditUnavailable"
        message += "; the result could not be recorded in the audit trail"
    status: dict[str, Any] = {
        "phase": "Succeeded" if ok else "Failed",
        "exitCode": max(-255, min(255, result.exit_code)),
        "output": result.output,
        "outputSHA256": result.output_sha256,
        "outputTruncated": result.truncated,
        "completionTime": conditions.rfc3339(result.finished),
        "reason": reason,
        "message": message,
        "conditions": conditions.set_condition(_conds(grant), "Succeeded", ok, reason, message,
                                               _generation(grant), now),
    }
    if audit_hash is not None:
        status["auditRecordHash"] = audit_hash
    return status


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class _Run:
    settings: GatewaySettings
    clock: Callable[[], float]
    token: str | None = field(default=None, repr=False)
    token_ref: str | None = None
    kube: Kube | None = None
    grant: dict[str, Any] | None = None
    sink: AuditSink | None = None
    executing: bool = False

    # -- logging ------------------------------------------------------------------------------
    def log(self, event: str, *, level: str = "info", reason: str = "", message: str = "",
            **extra: Any) -> None:
        s = self.settings
        record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                  "level": level, "event": event, "grant": s.grant_name, "namespace": s.namespace,
                  "pod": s.pod_name, "token_sha256": self.token_ref, "reason": reason or None,
                  "message": message or None, **extra}
        record = {k: v for k, v in record.items() if v is not None}
        if s.log_format == "json":
            line = json.dumps(record, sort_keys=False, default=str)
        else:
            fields = " ".join(f"{k}={v}" for k, v in record.items()
                              if k not in ("time", "level", "event", "message"))
            line = f"wingman-gateway {level.upper()} {event} {fields}"
            if message:
                line += f": {message}"
        if self.token:  # defence in depth: a token never reaches the log
            line = line.replace(self.token, executors.REDACTED)
        print(line, file=sys.stderr, flush=True)

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
    def patch_status(self, build: Callable[[dict[str, Any]], dict[str, Any] | None]) -> bool:
        """Read-modify-write of the grant's status guarded by resourceVersion; False if skipped."""
        assert self.kube is not None
        s = self.settings
        for attempt in range(_STATUS_RETRIES):
            grant = self.kube.get(GRANTS, s.namespace, s.grant_name)
            status = build(grant)
            if status is None:
                return False
            body = {"metadata": {"resourceVersion": grant["metadata"]["resourceVersion"]},
                    "status": status}
            try:
                self.grant = self.kube.patch(GRANTS, s.namespace, s.grant_name, body,
                                             subresource="status")
                return True
            except ApiError as exc:
                if not exc.conflict or attempt == _STATUS_RETRIES - 1:
                    raise
        return False

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

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
                self.kube = Kube.from_service_account(self.settings.api_server,
                                                      self.settings.serviceaccount_dir)
            except WingmanError as conn_exc:
                self.log("StatusUpdateFailed", level="error", reason=conn_exc.reason,
                         message=conn_exc.message)
        if self.kube is not None:
            try:
                now = self.now()
                written = self.patch_status(
                    lambda g: refused_status(g, reason, message, now, audit_hash))
                if not written:
                    self.log("StatusLeftAlone", reason=reason,
                             message="an execution already owns this grant's status")
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
                phase = (grant.get("status") or {}).get("phase")
                if self.executing and phase == "Running":  # our own Running phase: close it
                    grant = {**grant, "status": {**(grant.get("status") or {}), "phase": ""}}
                return refused_status(grant, "GatewayInternalError", message, now, None)

            try:
                self.patch_status(build)
            except Exception:  # noqa: BLE001 - best effort while failing
                self.log("StatusUpdateFailed", level="error", reason="GatewayInternalError")
        return EXIT_INTERNAL

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        if self.kube is not None:
            self.kube.close()


def _get(kube: Kube, resource: Any, namespace: str, name: str, kind: str) -> dict[str, Any]:
    try:
        return kube.get(resource, namespace, name)
    except ApiError as exc:
        if exc.not_found:
            raise GrantDenied(f"{kind} {namespace}/{name} does not exist",
                              reason=f"{kind}NotFound") from None
        raise GrantDenied(f"cannot read {kind} {namespace}/{name}: {exc.message}",
                          reason="ApiUnavailable") from None
    except WingmanError as exc:
        raise GrantDenied(f"cannot read {kind} {namespace}/{name}: {exc.message}",
                          reason="ApiUnavailable") from None


def _credentials(settings: GatewaySettings, token: str) -> executors.Credentials:
    token_file = settings.serviceaccount_dir / "token"
    secrets: list[str] = [token]
    try:
        sa_token = token_file.read_text().strip()
    except OSError:
        sa_token = ""
    if sa_token:
        secrets.append(sa_token)
    return executors.Credentials(server=settings.api_server,
                                 ca_file=settings.serviceaccount_dir / "ca.crt",
                                 token_file=token_file, secrets=tuple(secrets))


def _execute(run: _Run) -> int:
    s = run.settings
    token = run.token = read_token(s.token_file)
    run.token_ref = tokens.token_sha256(token)
    keys = load_keys(s.public_keys_dir)
    try:
        run.kube = Kube.from_service_account(s.api_server, s.serviceaccount_dir)
    except WingmanError as exc:
        raise GrantDenied(exc.message, reason="NoCredentials") from None
    run.grant = grant = _get(run.kube, GRANTS, s.namespace, s.grant_name, "ExecutionGrant")
    approval_name = str(((grant.get("spec") or {}).get("approvalRef") or {}).get("name") or "")
    if not approval_name:
        raise GrantDenied("the ExecutionGrant has no spec.approvalRef.name",
                          reason="BindingMismatch")
    approval = _get(run.kube, APPROVALS, s.namespace, approval_name, "ApprovalRequest")

    claims, argv = authorize(token, keys, grant, approval, s, run.clock())
    executor = executors.preflight(argv, settings=s)
    run.open_audit()  # an audit trail that cannot even be opened refuses before the burn

    lease = burn_marker(claims, s, run.token_ref)
    lease_name = lease["metadata"]["name"]
    try:
        run.kube.create(LEASES, s.namespace, lease)
    except ApiError as exc:
        if exc.conflict:
            raise Replay(lease_name) from None
        raise GrantDenied(f"cannot create the burn marker {lease_name}: {exc.message}; the "
                          "token was not spent and nothing was executed",
                          reason="BurnFailed") from None
    except WingmanError as exc:
        raise GrantDenied(f"cannot create the burn marker {lease_name}: {exc.message}",
                          reason="BurnFailed") from None
    run.log("GatewayTokenBurned", lease=lease_name)
    common = {"jti": claims.jti, "lease": lease_name, "job_uid": s.job_uid,
              "command_sha256": f"sha256:{claims.command_sha256}"}
    run.audit("GatewayTokenBurned", common)
    # the approval may have been revoked while the token was being burned: look once more
    fresh = _get(run.kube, APPROVALS, s.namespace, approval_name, "ApprovalRequest")
    if (fresh.get("metadata") or {}).get("uid") != claims.approval_uid:
        raise _binding("ApprovalRequest")
    check_approval(fresh, run.now())
    check_granted(fresh, claims.command, claims.grant_uid, claims.grant_name)
    run.audit("GatewayExecuting", {**common, "command": claims.command,
                                   "executor": executor.name, "approval": claims.approval_name,
                                   "requester": claims.sub})

    def to_running(g: dict[str, Any]) -> dict[str, Any] | None:
        # only the grant the token names, and only from TokenIssued: never over a result,
        # a denial or an expiry the operator wrote after this gateway read the grant
        ok = (g.get("metadata") or {}).get("uid") == claims.grant_uid and \
            (g.get("status") or {}).get("phase") == "TokenIssued"
        return running_status(run.now()) if ok else None

    try:
        running = run.patch_status(to_running)
    except WingmanError as exc:
        raise GrantDenied(f"cannot record phase Running on the grant ({exc.message}); the "
                          "command was not executed", reason="StatusUnavailable") from None
    if not running:
        raise GrantDenied("the grant is no longer waiting for its gateway (its phase is not "
                          "TokenIssued); the command was not executed", reason="GrantNotIssued")
    run.executing = True
    run.log("GatewayExecuting", executor=executor.name)

    try:
        result = executor.run(argv, settings=s, credentials=_credentials(s, token))
    except ExecutionFailed as exc:
        return _record_execution_failure(run, exc, common)

    audit_hash: str | None = None
    try:
        record = run.audit("GatewayExecuted", {
            **common, "exit_code": result.exit_code, "output_sha256": result.output_sha256,
            "output_truncated": result.truncated, "timed_out": result.timed_out,
            "duration_seconds": result.duration_seconds})
        audit_hash = f"sha256:{record.hash}"
    except WingmanError as exc:
        run.log("AuditFailed", level="error", reason=exc.reason, message=exc.message)
    now = run.now()
    run.patch_status(lambda g: final_status(g, result, audit_hash, now))
    run.log("GatewayExecuted", reason="CommandSucceeded" if result.exit_code == 0 else
            "CommandFailed", exit_code=result.exit_code, output_sha256=result.output_sha256,
            duration_seconds=result.duration_seconds)
    return EXIT_OK if audit_hash is not None else EXIT_INTERNAL


def _record_execution_failure(run: _Run, exc: ExecutionFailed, common: Mapping[str, Any]
                              ) -> int:
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
        grant = {**grant, "status": {**(grant.get("status") or {}), "phase": ""}}
        return refused_status(grant, exc.reason, exc.message, now, audit_hash)

    run.patch_status(build)
    return EXIT_INTERNAL


def run_gateway(settings: GatewaySettings, *, clock: Callable[[], float] = time.time) -> int:
    """The gateway process: 0 ran and recorded, 3 refused, 4 replay, 1 internal error."""
    run = _Run(settings, clock)
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

"""The gateway's checks before it acts, as functions of the token, the keys and the live objects.

Each raises a typed ``WingmanError`` whose reason becomes the grant's ``Failed`` reason: the
token file (``NoToken``, oversized), the public keys (``NoPublicKeys``), the token against the
live grant and approval (:func:`authorize`), the approval's usability and its record of which
grant its command went to, and the state the approval was given on (:func:`check_targets`: each
target the request's preview saw, compared with the live object), and whether the grant, read
again for the write of ``Running``, may still run (:func:`check_startable`). :func:`burn_marker`
builds the Lease whose creation spends a token.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wingman import scope
from wingman.audit import AuditRecord
from wingman.capability import tokens
from wingman.capability.keys import KeySet
from wingman.errors import (
    GrantDenied,
    ScopeViolation,
    TokenRejected,
    WingmanError,
)
from wingman.model import approvals as rules
from wingman.model import names
from wingman.model import preview as previews
from wingman.settings import GatewaySettings

Body = Mapping[str, Any]

# A token is at most tokens.MAX_TOKEN_BYTES; the file may add a little whitespace, no more.
MAX_TOKEN_FILE_BYTES = tokens.MAX_TOKEN_BYTES + 1024
_LEASE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
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


class Replay(WingmanError):
    """The token's burn marker exists already: this token was used before."""

    reason = "ReplayRejected"


class Terminating(GrantDenied):
    """The gateway's pod was asked to stop (SIGTERM) before the command started: nothing more
    is started or read again. Its own type so that a step that turns the errors of its reads
    into a refusal of its own (``ApiUnavailable``, ``DeadlineUnknown``, ``TargetUnreadable``,
    ``ExecutorTokenUnavailable``) lets it through: the stop, not the API server, ended them."""

    reason = "GatewayTerminating"


# ---------------------------------------------------------------------------------------------
# Pure steps


def read_token(path: Path) -> str:
    """The capability token from its file: GrantDenied ``NoToken`` when it is missing or
    empty, ``TokenOversized`` when the file is larger than any token (never cut short)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise GrantDenied(
            f"no capability token at {path} ({exc.strerror}); the gateway only runs from the "
            "Job the operator launches with the grant's token Secret mounted",
            reason="NoToken",
        ) from None
    if len(raw) > MAX_TOKEN_FILE_BYTES:
        raise GrantDenied(
            f"the capability token file {path} holds more than {MAX_TOKEN_FILE_BYTES} bytes, "
            f"more than any token ({tokens.MAX_TOKEN_BYTES} bytes at most): it is not a token "
            "the operator minted; nothing was executed (investigate the token Secret as "
            "tampering)", reason="TokenOversized")
    token = raw.decode("utf-8", errors="replace").strip()
    if not token:
        raise GrantDenied(f"the capability token file {path} is empty; the token Secret "
                          "carries no token", reason="NoToken")
    return token


def load_keys(directory: Path) -> KeySet:
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
        return KeySet.from_mapping(pems)
    except WingmanError as exc:
        raise GrantDenied(f"the public keys in {directory} are invalid: {exc.message}",
                          reason="InvalidPublicKey") from None


def check_approval(approval: Body, now: dt.datetime, *, forward: Body | None = None,
                   rollback: bool = False, window_seconds: int = 0) -> None:
    """GrantDenied unless the approval is approved, not rejected/revoked and unexpired now
    (the operator's own rule, ``wingman.model.approvals.usable``, applied again at execution
    time). For a ``rollback`` grant the operator's rollback rule instead
    (``rollback_usable``: ``forward`` is the grant that ran the command it undoes)."""
    if rollback:
        ok, reason, message = rules.rollback_usable(approval, forward, now, window_seconds)
    else:
        ok, reason, message = rules.usable(approval, now)
    if not ok:
        raise GrantDenied(f"{message}; nothing was executed", reason=reason)


def undone_command(grant: Body, forward: Body | None) -> str | None:
    """For a rollback grant the command it undoes (the forward grant's); None otherwise."""
    if not ((grant.get("spec") or {}).get("rollbackOf") or {}).get("name"):
        return None
    return str(((forward or {}).get("spec") or {}).get("command") or "")


def check_granted(approval: Body, command: str, grant_uid: str, grant_name: str, *,
                  rollback_of: str | None = None, token_ref: str | None = None) -> None:
    """GrantDenied unless the approval records ``command`` (with ``rollback_of``: the rollback
    of that command) as granted to this very grant (the operator writes ``status.grants``
    before it mints: each approved command, and each rollback, runs once), and, when that
    claim records the token issued with it (``tokenSHA256``), unless it is this token
    (``token_ref``: ``BindingMismatch``)."""
    holder = rules.granted_to(approval, command, rollback_of=rollback_of)
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
    recorded = holder.get("tokenSHA256")
    if recorded and recorded != token_ref:
        raise GrantDenied(f"ApprovalRequest {name} records another token as issued to "
                          f"ExecutionGrant {grant_name} (status.grants[].tokenSHA256) than the "
                          "one this pod holds; the token was not spent and nothing was "
                          "executed; the approval granted its command to this grant, so submit "
                          "a new request to run it", reason="BindingMismatch")


def check_not_run(executions: Sequence[AuditRecord], claims: tokens.CapabilityClaims, *,
                  rollback_of: str | None) -> None:
    """``CommandAlreadyRan`` when the audit trail (``executions``: its ``GatewayExecuting``
    records of the token's request and grant) says that the token's command started already
    under any grant, as a command of its request, or (``rollback_of``: the forward grant a
    rollback undoes) as the rollback of that same grant: the cluster forgot it (etcd restored
    from a backup: the request's record of its grants, the grant's status and the burn marker
    went back with it), the trail, kept outside the cluster, did not. Each approved command,
    and each rollback, runs at most once (two commands may share a rollback's text: each has
    its own). Checked after the burn: a token presented again while the cluster remembers is a
    replay (its marker exists), not this."""
    command = f"sha256:{claims.command_sha256}"
    for record in executions:
        if record.data.get("command_sha256") != command:
            continue
        if record.data.get("rollbackOf") != rollback_of:
            continue  # a command and a rollback, or the rollbacks of two commands
        raise GrantDenied(
            f"the audit trail records that this approved command started already (audit seq "
            f"{record.seq}, {record.time}, ExecutionGrant {record.subject.get('name')!r}), "
            "although the cluster no longer shows it (was etcd restored from a backup?); each "
            "approved command runs at most once, so it is not run again; the token is spent "
            "and nothing was executed; submit a new request to run it",
            reason="CommandAlreadyRan")


def check_startable(grant: Body, *, grant_uid: str, token_ref: str) -> None:
    """GrantDenied unless ``grant``, as read for the write of ``Running`` and judged with its
    approval (``wingman.model.grants.view``: a ``Pending`` grant whose claim records its token
    is ``TokenIssued``), may still run: the grant the token names (``BindingMismatch``), not
    being deleted (``GrantDeleted``: an approver cancels a grant by deleting it, and a
    foreground deletion or any finalizer keeps it readable a while), and ``TokenIssued`` with
    this very token recorded (``GrantNotIssued``: never over a result, a denial or an expiry
    the operator wrote after the gateway read it)."""
    meta = grant.get("metadata") or {}
    status = grant.get("status") or {}
    if meta.get("uid") != grant_uid:
        raise _binding("ExecutionGrant")
    if meta.get("deletionTimestamp"):
        raise GrantDenied(f"ExecutionGrant {meta.get('name')} is being deleted (cancelled); the "
                          "command was not executed", reason="GrantDeleted")
    if status.get("phase") != "TokenIssued" or status.get("tokenSHA256") != token_ref:
        raise GrantDenied("the grant is no longer waiting for its gateway (its phase is not "
                          "TokenIssued); the command was not executed", reason="GrantNotIssued")


def check_targets(approval: Body, command: str, *, allow_drift: bool,
                  read: Callable[[previews.Target], Mapping[str, Any] | None]) -> list[str]:
    """The approval covers the objects and versions its preview saw: each recorded target of
    ``command`` is read (``read``: the live object, None when it does not exist) and compared
    (:func:`wingman.model.preview.drift`). Unless ``allow_drift`` (the policy's
    ``targetDrift: Allow``) any change, or a target that cannot be read, raises
    GrantDenied(TargetChanged / TargetUnreadable); with it the changes are returned, for the
    audit record. A command the preview recorded no targets for (read-only, not previewable,
    a failed preview, no preview) binds nothing. A record that cannot be trusted (previewed,
    but the preview is gone, unfinished, unreadable or lacks the command) refuses with
    GrantDenied(PreviewUnusable), whatever ``allow_drift`` says: the drift policy is about
    targets that changed, not about an approval whose coverage is unknown.
    """
    plan = previews.binding(approval, command)
    name = (approval.get("metadata") or {}).get("name")
    if plan.unusable:
        raise GrantDenied(
            f"the preview of ApprovalRequest {name} cannot tell which state the approval "
            f"covers: {plan.unusable}. Nothing was executed and the token was not spent; "
            "submit a new request (it is previewed and reviewed again)",
            reason="PreviewUnusable")
    if plan.missing:
        return []
    changed: list[str] = []
    unreadable: list[str] = []
    for target in plan.targets:
        try:
            change = previews.drift(target, read(target))
        except Terminating:
            raise
        except WingmanError as exc:
            unreadable.append(f"{target.ref}: {exc.message}")
            continue
        if change is not None:
            changed.append(change.describe())
    if allow_drift:
        return changed + [f"unreadable {u}" for u in unreadable]
    if changed:
        raise GrantDenied(
            f"{len(changed)} target(s) changed since the preview ApprovalRequest {name} was "
            f"approved on: {'; '.join(changed)}. Nothing was executed: the approval covers the "
            "state its reviewers saw; submit a new request to act on the current state (this "
            "environment's policy refuses drift: targetDrift Refuse)", reason="TargetChanged")
    if unreadable:
        raise GrantDenied(
            f"the gateway cannot read {len(unreadable)} target(s) the preview of "
            f"ApprovalRequest {name} recorded, so it cannot prove they did not change: "
            f"{'; '.join(unreadable)}. Nothing was executed (give the gateway 'get' on them, or "
            "set targetDrift: Allow)", reason="TargetUnreadable")
    return []


def _binding(what: str) -> GrantDenied:
    return GrantDenied(f"the capability token is bound to a different {what} than the live "
                       "objects; nothing was executed", reason="BindingMismatch")


def authorize(token: str, keys: KeySet, grant: Body, approval: Body,
              settings: GatewaySettings, now: float, *, forward: Body | None = None
              ) -> tuple[tokens.CapabilityClaims, list[str]]:
    """Every check between reading the objects and burning the token: (claims, argv).
    ``forward``: for a rollback grant, the grant that ran the command it undoes. ``now``
    (epoch seconds) judges the token's times and the approval's (:func:`judged_now`).

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
    undoes = undone_command(grant, forward)
    check_approval(approval, dt.datetime.fromtimestamp(now, dt.UTC), forward=forward,
                   rollback=undoes is not None,
                   window_seconds=settings.policy.rollback_window_seconds)
    check_granted(approval, command, claims.grant_uid, str(meta.get("name")),
                  rollback_of=undoes, token_ref=tokens.token_sha256(token))
    if undoes is not None:
        approved: Any = [rules.reviewed_rollback(approval, undoes) or ""]
    else:
        approved = (approval.get("spec") or {}).get("commands") or []
    if not isinstance(approved, list):
        raise GrantDenied("the ApprovalRequest's spec.commands is not a list",
                          reason="BindingMismatch")
    argv = scope.check(command, approved=[str(c) for c in approved],
                       allowlist=scope.Allowlist.from_patterns(settings.policy.allowlist))
    return claims, argv


RESULT_SECONDS = 15
"""What the gateway keeps between the end of its command's timeout and its Job's deadline: the
writes of the result (audit record, grant status) after the command. Less than the operator's
``SLACK_SECONDS`` (``wingman.operator.grants``), so a Job whose deadline the operator left as it
was, or extended, always fits a command started while its token is valid."""


def job_stop_time(job: Body) -> dt.datetime | None:
    """When the Job controller stops ``job`` for its ``activeDeadlineSeconds`` (None: it has
    none). Counted from ``status.startTime``; from the Job's creation, an earlier moment, while
    the start is not recorded yet (the Job controller records it with its first pod's creation):
    never later than the real deadline."""
    seconds = (job.get("spec") or {}).get("activeDeadlineSeconds")
    if seconds is None:
        return None
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise GrantDenied(f"the gateway Job's spec.activeDeadlineSeconds is {seconds!r}, not a "
                          "number of seconds; the token was not spent and nothing was executed",
                          reason="DeadlineUnknown")
    start = rules.parse_time((job.get("status") or {}).get("startTime")) or rules.parse_time(
        (job.get("metadata") or {}).get("creationTimestamp"))
    if start is None:
        raise GrantDenied("the gateway Job records neither its start nor its creation time, so "
                          "when its deadline stops it is unknown; the token was not spent and "
                          "nothing was executed", reason="DeadlineUnknown")
    return start + dt.timedelta(seconds=seconds)


def check_deadline(job: Body, now: dt.datetime, exec_timeout: int, *,
                   spent: bool = False) -> None:
    """GrantDenied ``DeadlineTooClose`` unless a command started ``now`` ends, killed at its
    ``exec_timeout`` at the latest, and its result is written (``RESULT_SECONDS``) before the
    Job's deadline stops the pod: otherwise the deadline could stop it half-way. ``spent``:
    measured again after the burn (the refusal says the token is spent)."""
    stop = job_stop_time(job)
    if stop is None:
        return
    needed = exec_timeout + RESULT_SECONDS
    left = (stop - now).total_seconds()
    if left >= needed:
        return
    name = (job.get("metadata") or {}).get("name")
    token = ("the token was spent (its burn marker exists) but nothing was executed. The "
             "checks after the burn took too long (a slow API server or audit trail)"
             if spent else "the token was not spent and nothing was executed. The Job "
             "started late or its deadline was not extended for a late claim (see the "
             "grant's Warning Event DeadlineNotExtended)")
    raise GrantDenied(
        f"gateway Job {name} is stopped by its deadline at {stop.strftime('%Y-%m-%dT%H:%M:%SZ')} "
        f"({max(0, int(left))} s from now), and the command may take up to {exec_timeout} s "
        f"plus {RESULT_SECONDS} s to record its result ({needed} s): it could be stopped "
        f"half-way, so it was not started; {token}; the approval granted its command to this "
        "grant, so submit a new request to run it",
        reason="DeadlineTooClose")


def check_unexpired(claims: tokens.CapabilityClaims, now: dt.datetime, leeway: int,
                    token_ref: str) -> None:
    """TokenRejected ``Expired`` (the grant's ``TokenExpired``) when the token, valid when it
    was verified, has expired by ``now`` (with ``leeway``, as ``tokens.verify`` judges it):
    the checks between its verification and the burn (the executor's token, the previewed
    targets, the Job, each read again while it fails in a way that may pass) can take many
    seconds, and a token is never spent after its expiry. Nothing is spent or run. Judged
    last before the burn, not again before the start: the expiry bounds the burn (what
    follows it is bounded by the approval's expiry and the Job's deadline, checked again)."""
    if now.timestamp() >= claims.exp + leeway:
        raise TokenRejected(
            f"capability token {token_ref} rejected: it expired at {claims.exp} (leeway "
            f"{leeway}s) while the gateway's checks before the burn ran; the token was not "
            "spent and nothing was executed; the approval granted its command to this grant, "
            "so submit a new request to run it", reason="Expired")


def judged_now(local_now: dt.datetime, server_now: dt.datetime | None) -> dt.datetime:
    """The time the gateway's time-bound checks are judged on (the token's ``exp``/``nbf``/
    ``iat``, the approval's expiry and rollback window, the Job's deadline): the later of its own
    clock and the API server's when it answered a read (its HTTP ``Date``, whole seconds, so one
    second is added); its own clock alone when the answer carried no ``Date``. The later clock
    fails closed: a gateway on a node whose clock is behind the control plane's (which mints the
    token, expires the approval and enforces the Job's deadline) would otherwise accept what has
    expired and see more time left than there is; a clock ahead only refuses earlier."""
    if server_now is None:
        return local_now
    return max(local_now, server_now + dt.timedelta(seconds=1))


@dataclass(frozen=True)
class JobDeadline:
    """The gateway's Job as read for its deadline, and the clock the deadline is measured on:
    :func:`judged_now` when the Job was read, carried on from ``read_at`` by the monotonic
    clock (no API call, and no step of the wall clock, when it is measured again): the control
    plane wrote the Job's ``startTime`` and enforces its deadline."""

    job: Body
    read_at: dt.datetime
    read_monotonic: float

    @classmethod
    def read(cls, job: Body, local_now: dt.datetime, server_now: dt.datetime | None,
             monotonic: float) -> JobDeadline:
        return cls(job, judged_now(local_now, server_now), monotonic)

    def now(self, monotonic: float) -> dt.datetime:
        """The clock the deadline is measured on, at ``monotonic``."""
        return self.read_at + dt.timedelta(seconds=max(0.0, monotonic - self.read_monotonic))


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
    name = names.burn_marker_name(claims.jti)
    if len(name) > 253 or _LEASE_NAME.fullmatch(name) is None:
        raise GrantDenied("the token's id (jti) cannot name a burn marker (lowercase letters, "
                          "digits and '-'); the token cannot be spent", reason="TokenMalformed")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {names.GRANT_LABEL: settings.grant_name,
                       names.ROLE_LABEL: "burn-marker", **names.MANAGED},
            "annotations": {"wingman.dev/token-sha256": token_ref,
                            "wingman.dev/expires": str(claims.exp),
                            "wingman.dev/pod": settings.pod_name},
        },
        "spec": {"holderIdentity": settings.pod_name[:253]},
    }


__all__ = ["MAX_TOKEN_FILE_BYTES", "RESULT_SECONDS", "JobDeadline", "Replay", "authorize",
           "burn_marker", "check_approval", "check_deadline", "check_granted", "check_not_run",
           "check_startable",
           "check_targets", "check_unexpired", "job_stop_time", "judged_now", "load_keys",
           "read_token", "refusal_reason", "undone_command"]

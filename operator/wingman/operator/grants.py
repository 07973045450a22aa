"""Whether an ExecutionGrant may be honoured, and the grant status that says so (pure).

``authorize`` re-checks everything a grant depends on, in the order a human would: the
approval exists in the same namespace, serves this environment, belongs to the grant's
``spec.requester`` when it names one (admission makes non-approvers name themselves), is
approved and unexpired; the command is byte-identical to one of its commands and inside the
allowlist; the token TTL is within the environment's cap. The first failure is the grant's
``Denied`` reason. The operator calls it before minting; the gateway repeats the approval,
command and allowlist checks before executing.

A rollback grant (``spec.rollbackOf`` names the grant that ran a command) is authorized without
a new decision: its command must be the request's reviewed rollback of that grant's command
(``RollbackNotReviewed`` otherwise) and inside the allowlist, and
``wingman.model.approvals.rollback_usable`` must hold (approved and never revoked, the forward
command ran, within the policy's ``rollbackWindowSeconds``); the request's own expiry does not
matter. Its claim is recorded with ``rollbackOf``, so each rollback is granted once.

``claim`` then makes the approval single-use per command: the first authorized grant for a
command is recorded in the approval's ``status.grants`` before any token is stored (the entry
records the token it issues: its hash, expiry, Job and Secret; only for grants whose Job is
not named after them, ``names.derived_job``, does it come before the token and record none),
and every later grant for that command is ``CommandAlreadyGranted``. An approved command
therefore runs at most once, whoever creates grants and however many.

``deadline_for`` says how long a gateway Job's deadline must be for a token claimed long after
the Job was made.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wingman import conditions
from wingman.audit import looks_like_token
from wingman.errors import ScopeViolation
from wingman.model import approvals as rules
from wingman.model.grants import ISSUED_FIELDS
from wingman.review.policy import EnvironmentPolicy
from wingman.scope import Allowlist, check

Body = Mapping[str, Any]
_SCOPE_REASONS = {"CommandMismatch": "CommandNotApproved"}


@dataclass(frozen=True)
class Authorization:
    ok: bool
    reason: str
    message: str
    ttl_seconds: int = 0
    argv: tuple[str, ...] = ()


def _deny(reason: str, message: str) -> Authorization:
    return Authorization(False, reason, message)


def rollback_of(grant: Body) -> str:
    """The name of the grant a rollback grant undoes ('' for a forward grant)."""
    return str(((grant.get("spec") or {}).get("rollbackOf") or {}).get("name") or "")


def undoes(grant: Body, approval: Body) -> str | None:
    """For a rollback grant, the command it undoes (the command the approval records as
    granted to ``spec.rollbackOf``); None for a forward grant. The latest such claim: a grant
    deleted after its command ran leaves its claim, and a grant created again under its name
    for another of the request's commands claims that one after it; the rollback is of the grant
    under the name now (the one ``authorize`` judged it by, and whose command the gateway finds
    the rollback's claim under)."""
    forward = rollback_of(grant)
    if not forward:
        return None
    for entry in reversed((approval.get("status") or {}).get("grants") or []):
        if isinstance(entry, Mapping) and entry.get("grant") == forward \
                and entry.get("rollbackOf") is None:
            return str(entry.get("command") or "")
    return ""


def authorize(grant: Body, approval: Body | None, policy: EnvironmentPolicy,
              allowlist: Allowlist, now: dt.datetime, *, forward: Body | None = None
              ) -> Authorization:
    """The verdict on a grant (see the module docstring); ``forward`` is the grant a rollback
    grant names (None when it does not exist, or for a forward grant)."""
    spec = grant.get("spec", {})
    ref = str((spec.get("approvalRef") or {}).get("name", ""))
    if approval is None:
        return _deny("ApprovalNotFound",
                     f"ApprovalRequest {ref!r} does not exist in namespace "
                     f"{grant.get('metadata', {}).get('namespace')}; grants reference an "
                     "approval in their own namespace")
    env = approval.get("spec", {}).get("environment")
    if env != policy.name:
        return _deny("EnvironmentMismatch",
                     f"ApprovalRequest {ref} is for environment {env!r}, but this operator "
                     f"serves {policy.name!r}")
    requester = spec.get("requester")
    owner = approval.get("spec", {}).get("requester")
    if requester is not None and requester != owner:
        return _deny("RequesterMismatch",
                     f"spec.requester {requester!r} is not the requester of ApprovalRequest "
                     f"{ref} ({owner!r}): a worker can only grant their own requests; ask "
                     f"{owner!r} or an approver to create the grant")
    command = spec.get("command")
    if rollback_of(grant):
        ok, reason, message = rules.rollback_usable(approval, forward, now,
                                                    policy.rollback_window_seconds)
        if not ok:
            return _deny(reason, message)
        assert forward is not None
        undoes = str((forward.get("spec") or {}).get("command") or "")
        reviewed = rules.reviewed_rollback(approval, undoes)
        if reviewed is None or reviewed != command:
            return _deny("RollbackNotReviewed",
                         f"spec.command is not the rollback ApprovalRequest {ref} names for the "
                         f"command of ExecutionGrant {rollback_of(grant)} (spec.rollbacks); only "
                         "a rollback reviewed with the command may be granted without a new "
                         "decision")
        approved = [reviewed]
    else:
        ok, reason, message = rules.usable(approval, now)
        if not ok:
            return _deny(reason, message)
        approved = list(approval.get("spec", {}).get("commands", []))
    try:
        argv = check(str(command), approved=approved, allowlist=allowlist)
    except ScopeViolation as exc:
        return _deny(_SCOPE_REASONS.get(exc.reason, exc.reason), str(exc))
    if looks_like_token(str(command)):
        return _deny("CommandLooksLikeToken",
                     "the command contains a token-shaped string (a JWT, or the base64 of "
                     "one); Wingman never records or passes credentials in commands: remove it")
    ttl = spec.get("ttlSeconds")
    ttl_seconds = policy.token_ttl_seconds if ttl is None else int(ttl)
    if ttl_seconds > policy.max_token_ttl_seconds:
        return _deny("TTLAboveCap",
                     f"spec.ttlSeconds {ttl_seconds} exceeds the environment's cap of "
                     f"{policy.max_token_ttl_seconds}s; ask for {policy.max_token_ttl_seconds} "
                     "or less")
    what = (f"reviewed rollback of ExecutionGrant {rollback_of(grant)}" if rollback_of(grant)
            else "approved command")
    return Authorization(True, "Authorized",
                         f"{what} of {ref}, inside the allowlist; token TTL "
                         f"{ttl_seconds}s", ttl_seconds, tuple(argv))


@dataclass(frozen=True)
class Claim:
    """``grants``: the approval's new ``status.grants`` to write first (None: this grant already
    holds the command); ``denial``: set when another grant holds it."""

    grants: list[dict[str, Any]] | None = None
    denial: Authorization | None = None


def claim(grant: Body, approval: Body, now: dt.datetime, *, undoes: str | None = None,
          token: Mapping[str, str] | None = None) -> Claim:
    """Whether ``grant`` may take its command of ``approval`` (see the module docstring);
    ``undoes`` is the forward command when ``grant`` is a rollback. ``token``: the token
    fields (``wingman.model.grants.ISSUED_FIELDS``) the new entry records when the claim
    issues the grant's token; the entry's ``grantedAt`` is ``now``, the token's ``iat``."""
    meta = grant.get("metadata", {})
    command = str(grant.get("spec", {}).get("command", ""))
    holder = rules.granted_to(approval, command, rollback_of=undoes)
    if holder is not None:
        if holder.get("grantUID") == meta.get("uid"):
            return Claim()
        ref = approval.get("metadata", {}).get("name")
        if undoes is not None:
            return Claim(denial=_deny(
                "RollbackAlreadyGranted",
                f"ApprovalRequest {ref} already granted this rollback to ExecutionGrant "
                f"{holder.get('grant')!r}: each reviewed rollback runs at most once"))
        return Claim(denial=_deny(
            "CommandAlreadyGranted",
            f"ApprovalRequest {ref} already granted this command to ExecutionGrant "
            f"{holder.get('grant')!r}: each approved command runs at most once; submit a new "
            "ApprovalRequest to run it again"))
    entries = [dict(e) for e in (approval.get("status") or {}).get("grants") or []]
    entry = {"command": command, "grant": str(meta.get("name", "")),
             "grantUID": str(meta.get("uid", "")), "grantedAt": conditions.rfc3339(now)}
    if undoes is not None:
        entry["rollbackOf"] = undoes
    for name in ISSUED_FIELDS:
        if token is not None and token.get(name):
            entry[name] = str(token[name])
    entries.append(entry)
    return Claim(grants=entries)


SLACK_SECONDS = 30
"""The least a gateway Job's deadline must give beyond a token's last moment (its expiry, the
leeway) and the command's timeout before ``deadline_for`` extends it: the gateway's checks
before the command and its result after. Half of what a Job is made with, so a claim up to
30 s after the Job's creation needs no extension."""


def deadline_for(job: Body, expires: int, *, leeway: int, exec_timeout: int,
                 start_seconds: int) -> int | None:
    """The ``activeDeadlineSeconds`` the gateway ``job`` needs so that a command its gateway
    starts as late as a token expiring at ``expires`` (epoch seconds) allows (the expiry plus
    ``leeway``) still ends, its ``exec_timeout`` and its result with it, before the deadline
    kills the pod; None when the Job's own deadline leaves ``SLACK_SECONDS`` for that, or when
    it has none, no creation time or is suspended (an earlier release's Job: its deadline counts
    from its release). The deadline counts from the Job's start, which is no earlier than its
    creation: counted from the creation here, the new one gives ``start_seconds`` beyond the
    command's end again, as a Job made at the claim would have. Only a claim made long after
    the Job (the operator, or the API server, was away in between) needs one."""
    spec = job.get("spec") or {}
    seconds = spec.get("activeDeadlineSeconds")
    created = rules.parse_time((job.get("metadata") or {}).get("creationTimestamp"))
    if spec.get("suspend") or created is None or not isinstance(seconds, int) \
            or isinstance(seconds, bool):
        return None
    last_end = expires + leeway + exec_timeout - int(created.timestamp())
    if seconds >= last_end + SLACK_SECONDS:
        return None
    return last_end + start_seconds


#: the most of a Job condition's reason quoted in a grant's message (the Job controller's are
#: a CamelCase word; with the longest names the message stays within MESSAGE_CHARS)
JOB_REASON_CHARS = 48
#: the most of a grant's message kept: its condition's and its audit record's
MESSAGE_CHARS = 1000


def never_running(stored: Body) -> bool:
    """Whether the grant ``stored`` (as stored, not its view) shows that no gateway ever wrote
    ``Running`` on it: its phase is ``Pending`` and its status records no token. A gateway
    writes ``Running``, with the token's fields, before it starts any command (its
    ``GatewayExecuting`` comes after that write landed), and the CRD lets nobody remove
    ``status.tokenSHA256`` once written, so a status reset since cannot hide a run. Only a grant
    whose token was issued on its claim can be so once its Job ran; one whose status records
    its token (a long name's) never is: for it a reset could, so nothing is known (pure)."""
    status = stored.get("status") or {}
    return str(status.get("phase") or "Pending") == "Pending" and not status.get("tokenSHA256")


def job_ended_without_result(grant: Body, job_name: str, kind: str, reason: str, *,
                             ran_nothing: bool = False) -> tuple[str, str]:
    """(reason, message) of a grant whose gateway Job ended (``kind`` ``Complete`` or
    ``Failed``, the Job's ``reason``) while the grant records no final phase (pure).

    A Job that failed says only that its gateway exited non-zero or was stopped (by the Job's
    deadline, a deleted pod...), not when: before the command started, or after it ran with its
    result not written (the gateway's exit 1, the audit's ``GatewayResultUnrecorded``). So the
    message says the command may or may not have run, and where the answer is; unless
    ``ran_nothing``: the grant as stored shows no gateway ever got as far as ``Running``
    (``never_running``; the status written with this message is guarded by that version), for
    instance its pod waited for a token Secret that was never stored. Then it says plainly that
    the command did not run."""
    meta = grant.get("metadata") or {}
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    reason = reason[:JOB_REASON_CHARS]  # the Job controller's, short; whoever wrote it
    if ran_nothing:
        why = ("GatewayNoResult" if kind == "Complete" else
               "DeadlineExceeded" if reason == "DeadlineExceeded" else "GatewayFailed")
        ended = {"GatewayNoResult": "completed",
                 "DeadlineExceeded": "passed its deadline (DeadlineExceeded)",
                 "GatewayFailed": f"failed ({reason or 'no reason'})"}[why]
        return why, (
            f"the gateway Job {ended} before its gateway started the command, so the command "
            "did not run: the grant never became Running, which a gateway writes before it "
            "starts any command (its pod may have waited for a token Secret that was never "
            "stored: the operator was away for the token's lifetime, or the Secret's create "
            "was refused, see the operator's log; the Job's log says more: kubectl logs "
            f"job/{job_name} -n {namespace}). The approval granted its command to this grant, "
            "so another grant for it is refused (CommandAlreadyGranted): submit a new request "
            "to run it")
    if kind == "Complete":
        return "GatewayNoResult", (
            "the gateway Job completed without recording a result; see its pod log "
            f"(kubectl logs job/{job_name} -n {namespace})")
    why = "DeadlineExceeded" if reason == "DeadlineExceeded" else "GatewayFailed"
    ended = ("passed its deadline (DeadlineExceeded) and its gateway was stopped"
             if why == "DeadlineExceeded" else
             f"failed ({reason or 'no reason'}): its gateway exited non-zero or was stopped")
    return why, (
        f"the gateway Job {ended} without recording a result on the grant, so the command may "
        "or may not have run. The audit trail tells which: a GatewayExecuting record for this "
        "grant means the command was started, and a GatewayResultUnrecorded record holds its "
        "result when the gateway could not write it here (wingman audit show <audit target> "
        f"--subject {name} -n {namespace}); the Job's log says more (kubectl logs "
        f"job/{job_name} -n {namespace}). Check the target before running the command again")


def denied_status(grant: Body, auth: Authorization, now: dt.datetime) -> dict[str, Any]:
    gen = int(grant.get("metadata", {}).get("generation") or 1)
    conds = conditions.set_condition((grant.get("status") or {}).get("conditions") or [],
                                     "Authorized", False, auth.reason, auth.message, gen, now)
    conds = conditions.grant_ready(conds, "Denied", auth.message, gen, now)
    return {"phase": "Denied", "reason": auth.reason, "message": auth.message,
            "conditions": conds, "observedGeneration": gen,
            "completionTime": conditions.rfc3339(now)}


__all__ = ["JOB_REASON_CHARS", "MESSAGE_CHARS", "SLACK_SECONDS", "Authorization", "Claim",
           "authorize", "claim", "deadline_for",
           "denied_status", "job_ended_without_result", "never_running", "rollback_of",
           "undoes"]

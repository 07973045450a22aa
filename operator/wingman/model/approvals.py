"""The ApprovalRequest rules that the operator and the gateway both apply.

The operator checks an approval with ``usable`` before it issues a token; the gateway checks
it again with the same function after it burned the token, so the two can never disagree on
what a usable approval is. ``usable`` reads a Reject from ``spec.decisions`` itself, so a
revocation holds even when the status the operator writes has not caught up with it. An
approval being deleted (``metadata.deletionTimestamp``) is never usable (``ApprovalDeleted``).
``granted_to`` reads which grant an approved command (or its rollback) went to.

Rollbacks: ``reviewed_rollback`` is the command the request names as the undo of one of its
commands (``spec.rollbacks``, reviewed with it); ``rollback_usable`` says whether that rollback
may be granted now, without a new decision: the request was approved and never rejected or
revoked (a Reject in ``spec.decisions`` counts, as for ``usable``), the forward command ran (its
grant, the one the approval records for it, executed it: ``Succeeded``, or ``Failed`` with an
exit code) and the policy's rollback window since it finished has not passed. The request's own
expiry does not end a rollback's window.
Pure: imports only ``wingman.conditions`` and the standard library.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from wingman import conditions as cond

Body = Mapping[str, Any]


def _conditions(body: Body) -> list[dict[str, Any]]:
    return [dict(c) for c in (body.get("status") or {}).get("conditions") or []]


def parse_time(text: object) -> dt.datetime | None:
    """An RFC 3339 time with its zone, or None (never a naive time: callers fail closed)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def is_final(body: Body) -> bool:
    conds = _conditions(body)
    return any(cond.is_true(conds, t) for t in ("Rejected", "Revoked", "Expired"))


def rejection(body: Body) -> Mapping[str, Any] | None:
    """The first Reject in ``spec.decisions`` (whoever recorded it), or None.

    Read from the spec itself, not from the status the operator derived from it: a Reject
    rejects, and after an approval revokes, whether or not the operator has counted it yet.
    Anything in ``spec.decisions`` that is not a decision object counts as a Reject (fail
    closed)."""
    decisions = (body.get("spec") or {}).get("decisions") or []
    if not isinstance(decisions, list):
        return {"verdict": "Reject", "by": "", "reason": "spec.decisions is not a list"}
    for decision in decisions:
        if not isinstance(decision, Mapping):
            return {"verdict": "Reject", "by": "", "reason": "a decision is not an object"}
        if decision.get("verdict") == "Reject":
            return decision
    return None


def _being_deleted(body: Body) -> str:
    """The refusal for an approval someone is deleting ('' when nobody is): whoever deletes it
    (an administrator, retention) means nothing more to run under it."""
    meta = body.get("metadata") or {}
    if not meta.get("deletionTimestamp"):
        return ""
    return (f"ApprovalRequest {meta.get('name', '')} is being deleted; nothing runs under it "
            "any more: submit a new request if the command is still wanted")


def usable(body: Body, now: dt.datetime) -> tuple[bool, str, str]:
    """Whether a grant may act on this approval now: (ok, reason, message).

    Revocation is derived from ``spec.decisions`` as well as from the conditions: an approval
    whose spec holds a Reject is never usable, even while its status still says Approved."""
    status = body.get("status") or {}
    conds = status.get("conditions") or []
    name = body.get("metadata", {}).get("name", "")
    deleted = _being_deleted(body)
    if deleted:
        return False, "ApprovalDeleted", deleted
    if cond.is_true(conds, "Revoked"):
        return False, "ApprovalRevoked", f"ApprovalRequest {name} was revoked by an approver"
    if cond.is_true(conds, "Rejected"):
        return False, "ApprovalRejected", f"ApprovalRequest {name} was rejected"
    rejected = rejection(body)
    if rejected is not None:
        by = str(rejected.get("by") or "") or "an unnamed approver"
        if cond.is_true(conds, "Approved"):
            return False, "ApprovalRevoked", (
                f"ApprovalRequest {name} was revoked: spec.decisions holds a Reject by {by} "
                "(whatever its status says)")
        return False, "ApprovalRejected", (
            f"ApprovalRequest {name} was rejected: spec.decisions holds a Reject by {by}")
    expires = parse_time(status.get("expirationTime"))
    if cond.is_true(conds, "Expired") or (expires is not None and now >= expires):
        return False, "ApprovalExpired", f"ApprovalRequest {name} has expired"
    if not cond.is_true(conds, "Approved"):
        phase = status.get("phase") or "Pending"
        return False, "ApprovalNotApproved", (
            f"ApprovalRequest {name} is {phase}, not Approved or AutoApproved; wait for the "
            "decision")
    if expires is None:
        return False, "ApprovalExpired", f"ApprovalRequest {name} has no expirationTime"
    return True, "", ""


def granted_to(body: Body, command: str, *, rollback_of: str | None = None
               ) -> Mapping[str, Any] | None:
    """The ``status.grants`` entry that gave ``command`` to a grant, or None (not granted yet).
    With ``rollback_of`` (the forward command), the entry that gave that command's rollback;
    without, the command itself (rollback entries never count as the command)."""
    for entry in (body.get("status") or {}).get("grants") or []:
        if isinstance(entry, Mapping) and entry.get("command") == command \
                and entry.get("rollbackOf") == rollback_of:
            return entry
    return None


def reviewed_rollback(body: Body, command: str) -> str | None:
    """The rollback the request names for ``command`` (``spec.rollbacks``), or None."""
    for entry in (body.get("spec") or {}).get("rollbacks") or []:
        if isinstance(entry, Mapping) and entry.get("command") == command:
            rollback = entry.get("rollback")
            return rollback if isinstance(rollback, str) else None
    return None


def ran(grant: Body) -> bool:
    """Whether a grant's gateway executed its command (whatever the exit code)."""
    status = grant.get("status") or {}
    return status.get("phase") == "Succeeded" or (
        status.get("phase") == "Failed" and isinstance(status.get("exitCode"), int))


def rollback_usable(approval: Body, forward: Body | None, now: dt.datetime,
                    window_seconds: int) -> tuple[bool, str, str]:
    """Whether the rollback of ``forward``'s command may be granted now: (ok, reason, message).
    See the module docstring."""
    name = (approval.get("metadata") or {}).get("name", "")
    deleted = _being_deleted(approval)
    if deleted:
        return False, "ApprovalDeleted", deleted
    if window_seconds <= 0:
        return False, "RollbackDisabled", ("this environment grants no rollbacks "
                                           "(policy.rollbackWindowSeconds is 0)")
    conds = _conditions(approval)
    if cond.is_true(conds, "Revoked") or (rejection(approval) is not None
                                           and cond.is_true(conds, "Approved")):
        return False, "ApprovalRevoked", (f"ApprovalRequest {name} was revoked; its reviewed "
                                          "rollbacks were revoked with it")
    if cond.is_true(conds, "Rejected") or rejection(approval) is not None \
            or not cond.is_true(conds, "Approved"):
        return False, "ApprovalNotApproved", (f"ApprovalRequest {name} was never approved, so "
                                              "neither were its rollbacks")
    if forward is None:
        return False, "ForwardGrantNotFound", ("the grant named in spec.rollbackOf does not "
                                               "exist; name the grant that ran the command")
    fmeta = forward.get("metadata") or {}
    fname = fmeta.get("name", "")
    command = str((forward.get("spec") or {}).get("command") or "")
    if ((forward.get("spec") or {}).get("approvalRef") or {}).get("name") != name:
        return False, "ForwardGrantMismatch", (f"ExecutionGrant {fname} belongs to another "
                                               f"request than {name}")
    if (forward.get("spec") or {}).get("rollbackOf"):
        return False, "ForwardGrantMismatch", (f"ExecutionGrant {fname} is itself a rollback; "
                                               "a rollback is not rolled back")
    holder = granted_to(approval, command)
    if holder is None or holder.get("grantUID") != fmeta.get("uid"):
        return False, "ForwardGrantMismatch", (f"ApprovalRequest {name} does not record "
                                               f"ExecutionGrant {fname} as the grant of its "
                                               "command")
    if not ran(forward):
        phase = (forward.get("status") or {}).get("phase") or "Pending"
        return False, "ForwardNotRun", (f"the command of ExecutionGrant {fname} has not run "
                                        f"(phase {phase}); a rollback is granted only after "
                                        "the command it undoes ran")
    finished = parse_time((forward.get("status") or {}).get("completionTime"))
    if finished is None:
        return False, "ForwardNotRun", f"ExecutionGrant {fname} has no completionTime"
    closes = finished + dt.timedelta(seconds=window_seconds)
    if now >= closes:
        return False, "RollbackWindowClosed", (
            f"the rollback window of {window_seconds}s after ExecutionGrant {fname} finished "
            f"closed at {cond.rfc3339(closes)}; submit a new request to undo it")
    return True, "", ""


__all__ = ["Body", "granted_to", "is_final", "parse_time", "ran", "rejection",
           "reviewed_rollback", "rollback_usable", "usable"]

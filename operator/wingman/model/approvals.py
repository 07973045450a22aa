"""The ApprovalRequest rules that the operator and the gateway both apply.

The operator checks an approval with ``usable`` before it issues a token; the gateway checks
it again with the same function after it burned the token, so the two can never disagree on
what a usable approval is. ``usable`` reads a Reject from ``spec.decisions`` itself, so a
revocation holds even when the status the operator writes has not caught up with it.
``granted_to`` reads which grant an approved command went to. Pure: imports only
``wingman.conditions`` and the standard library.
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


def usable(body: Body, now: dt.datetime) -> tuple[bool, str, str]:
    """Whether a grant may act on this approval now: (ok, reason, message).

    Revocation is derived from ``spec.decisions`` as well as from the conditions: an approval
    whose spec holds a Reject is never usable, even while its status still says Approved."""
    status = body.get("status") or {}
    conds = status.get("conditions") or []
    name = body.get("metadata", {}).get("name", "")
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


def granted_to(body: Body, command: str) -> Mapping[str, Any] | None:
    """The ``status.grants`` entry that gave ``command`` to a grant, or None (not granted yet)."""
    for entry in (body.get("status") or {}).get("grants") or []:
        if isinstance(entry, Mapping) and entry.get("command") == command:
            return entry
    return None


__all__ = ["Body", "granted_to", "is_final", "parse_time", "rejection", "usable"]

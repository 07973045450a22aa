"""Conditions (the truth of a resource's status) and the phase derived from them.

``set_condition`` upserts by type, keeps ``lastTransitionTime`` when the status did not change
and always stamps ``observedGeneration`` (cert-manager's SetCertificateCondition). The phases
are summaries for humans, computed from conditions by one function each and never read back to
make a decision. Approved and Rejected only ever become True, and never both. A Reject decision
that arrives after an approval sets ``Revoked`` (phase Rejected): the approval stays on record,
and nothing may act on it any more.

Both resources also carry ``Ready``, a summary for tools that know only that convention (Argo
CD and Flux health checks, ``kubectl wait --for=condition=Ready``): True once the resource did
what it exists for (an ApprovalRequest is approved and usable; an ExecutionGrant's command
succeeded), False otherwise, with the phase as its reason. It is written with every phase
change and, like the phase, never read back to make a decision.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

Condition = dict[str, Any]

#: The longest ``status.message`` of an ExecutionGrant (the CRD's ``maxLength``)
STATUS_MESSAGE_CHARS = 32768
#: What ends a text :func:`fit` cut
CUT_MARK = " [cut]"


def fit(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters (pure): as it is when it fits, else cut, ending in
    ``CUT_MARK``. Characters are Unicode code points, as the API server counts a schema's
    ``maxLength``: a text Wingman does not control (an exception's message quoting an API
    server's answer) is cut to its field, never the reason the whole write is refused."""
    if len(text) <= limit:
        return text
    return text[:max(0, limit - len(CUT_MARK))] + CUT_MARK[:limit]


def fit_bytes(text: str, limit: int) -> str:
    """``text`` within ``limit`` bytes of UTF-8 (pure), cut on a character's boundary and
    ending in ``CUT_MARK`` when cut: for the fields the API server counts in bytes (a
    core/v1 Event's ``message``, 1 KiB), where a text of characters of several bytes within
    ``limit`` characters is still refused."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    mark = CUT_MARK.encode()[:limit]
    kept = data[:max(0, limit - len(mark))].decode("utf-8", "ignore")
    return kept + mark.decode()


def rfc3339(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]], type_: str, status: bool, reason: str,
    message: str, generation: int, now: dt.datetime,
) -> list[Condition]:
    """A new condition list with ``type_`` set (pure)."""
    value = "True" if status else "False"
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        same = cond.get("status") == value
        out.append({
            "type": type_, "status": value, "reason": reason, "message": message[:1000],
            "lastTransitionTime": cond.get("lastTransitionTime") if same else rfc3339(now),
            "observedGeneration": generation,
        })
    if not found:
        out.append({"type": type_, "status": value, "reason": reason, "message": message[:1000],
                    "lastTransitionTime": rfc3339(now), "observedGeneration": generation})
    return out


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions or [])


def get(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for c in conditions or []:
        if c.get("type") == type_:
            return c
    return None


def is_approved(conditions: Sequence[Mapping[str, Any]] | None) -> bool:
    """Approved True, and neither Rejected, Revoked nor Expired: the only state a grant may
    act on (callers also compare ``status.expirationTime`` with their own clock)."""
    return is_true(conditions, "Approved") and not any(
        is_true(conditions, t) for t in ("Rejected", "Revoked", "Expired"))


def approval_phase(conditions: Sequence[Mapping[str, Any]] | None) -> str:
    """The ApprovalRequest phase for humans, from its conditions."""
    if is_true(conditions, "Rejected") or is_true(conditions, "Revoked"):
        return "Rejected"
    if is_true(conditions, "Expired"):
        return "Expired"
    if is_true(conditions, "Approved"):
        cond = get(conditions, "Approved") or {}
        return "AutoApproved" if cond.get("reason") == "AutoApproved" else "Approved"
    if is_true(conditions, "Reviewed"):
        return "AwaitingDecision"
    if get(conditions, "Reviewed") is not None or get(conditions, "Previewed") is not None:
        return "Reviewing"
    return "Pending"


GRANT_TERMINAL = ("Denied", "Succeeded", "Failed", "Expired")
READY = "Ready"

_APPROVAL_READY_MESSAGES = {
    "Pending": "waiting for the reviewer panel",
    "Reviewing": "the reviewer panel has not reached an outcome",
    "AwaitingDecision": "waiting for human decisions",
    "Approved": "approved: grants may execute its commands, each once, until it expires",
    "AutoApproved": "approved by policy: grants may execute its commands, each once, until it "
                    "expires",
    "Rejected": "rejected: nothing can be executed under it",
    "Expired": "expired: nothing can be executed under it",
}


def approval_ready(conditions: Sequence[Mapping[str, Any]], generation: int,
                   now: dt.datetime) -> list[Condition]:
    """``conditions`` with ``Ready`` summarizing the approval's phase (pure)."""
    phase = approval_phase(conditions)
    return set_condition(conditions, READY, phase in ("Approved", "AutoApproved"), phase,
                         _APPROVAL_READY_MESSAGES[phase], generation, now)


def grant_ready(conditions: Sequence[Mapping[str, Any]], phase: str, message: str,
                generation: int, now: dt.datetime) -> list[Condition]:
    """``conditions`` with ``Ready`` for a grant in ``phase``: True only once its command
    succeeded (pure)."""
    return set_condition(conditions, READY, phase == "Succeeded", phase, message, generation,
                         now)


__all__ = ["CUT_MARK", "GRANT_TERMINAL", "READY", "STATUS_MESSAGE_CHARS", "approval_phase",
           "approval_ready", "fit", "fit_bytes", "get", "grant_ready", "is_approved", "is_true",
           "rfc3339", "set_condition"]

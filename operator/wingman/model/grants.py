"""The ExecutionGrant phases both the operator and the gateway read (pure).

A grant's token is issued on the claim: the operator records the token (its SHA-256, expiry,
Job and Secret) in the approval's ``status.grants`` entry that claims the command for the
grant, and writes nothing to the grant itself; the gateway writes the grant's first status,
``Running``. So a grant whose stored phase is ``Pending`` may already hold a token, and both
the operator and the gateway judge a grant by :func:`view`, which reads that claim: such a
grant is ``TokenIssued``, with the claim's token fields. Grants an earlier release issued
(and grants whose Job name admission cannot derive, ``names.derived_job``) have
``TokenIssued`` and the token fields in their own status, which :func:`view` leaves as it finds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wingman import conditions

Body = Mapping[str, Any]
TERMINAL = conditions.GRANT_TERMINAL

#: The token fields a claim that issued a token records, named as in a grant's status.
ISSUED_FIELDS = ("tokenSHA256", "tokenExpirationTime", "jobName", "tokenSecretName")


def phase(grant: Body) -> str:
    return str((grant.get("status") or {}).get("phase") or "Pending")


def is_terminal(grant: Body) -> bool:
    return phase(grant) in TERMINAL


def claim_of(grant: Body, approval: Body | None) -> Mapping[str, Any] | None:
    """The ``status.grants`` entry of ``approval`` that claimed a command for ``grant`` (by
    the grant's UID: one entry per grant), or None."""
    uid = (grant.get("metadata") or {}).get("uid")
    if not uid or approval is None:
        return None
    for entry in (approval.get("status") or {}).get("grants") or []:
        if isinstance(entry, Mapping) and entry.get("grantUID") == uid:
            return entry
    return None


def issued_claim(grant: Body, approval: Body | None) -> Mapping[str, Any] | None:
    """The claim of ``grant`` on ``approval`` when it records an issued token, else None."""
    entry = claim_of(grant, approval)
    return entry if entry is not None and entry.get("tokenSHA256") else None


def view(grant: Body, approval: Body | None) -> Body:
    """``grant`` as the operator and the gateway judge it: a ``Pending`` grant whose claim on
    ``approval`` records its token is ``TokenIssued``, its status given the claim's token
    fields (a copy; ``metadata``, and so the resourceVersion a write is guarded by, are the
    grant's own). A status that records a token already (an earlier release's) keeps its own
    fields, and is ``TokenIssued`` only when the claim records that very token. Any other
    grant is returned as it is."""
    if phase(grant) != "Pending":
        return grant
    entry = issued_claim(grant, approval)
    if entry is None:
        return grant
    status = dict(grant.get("status") or {})
    recorded = status.get("tokenSHA256")
    if recorded and recorded != entry.get("tokenSHA256"):
        return grant
    for name in ISSUED_FIELDS:
        if entry.get(name) and not status.get(name):
            status[name] = entry[name]
    status["phase"] = "TokenIssued"
    out = dict(grant)
    out["status"] = status
    return out


__all__ = ["ISSUED_FIELDS", "TERMINAL", "claim_of", "is_terminal", "issued_claim", "phase",
           "view"]

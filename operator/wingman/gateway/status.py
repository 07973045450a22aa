"""The grant status the gateway writes: Running, the result, a refusal, a replay (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from wingman import conditions
from wingman.gateway import executors
from wingman.model import grants as grant_rules

Body = Mapping[str, Any]

_OWNED_PHASES = frozenset(("Running", *conditions.GRANT_TERMINAL))


def _generation(grant: Body) -> int:
    return int((grant.get("metadata") or {}).get("generation") or 1)


def _conds(grant: Body) -> list[dict[str, Any]]:
    return list((grant.get("status") or {}).get("conditions") or [])


def _issued_fields(grant: Body) -> dict[str, Any]:
    """The token fields of ``grant`` as judged (``grants.view``): a grant whose token was issued
    on its claim gets them in the status the gateway writes, so a grant that ran (or was
    refused) records its token; for one whose stored status records them they are the same."""
    status = grant.get("status") or {}
    return {name: status[name] for name in grant_rules.ISSUED_FIELDS if status.get(name)}


def refused_status(grant: Body, reason: str, message: str, now: dt.datetime,
                   audit_hash: str | None, *, own_running: bool = False
                   ) -> dict[str, Any] | None:
    """The status patch of a refusal, or None when an execution already owns the status
    (``own_running``: a ``Running`` phase is this gateway's own, which it closes), or while the
    grant is still ``Pending``: until the operator issues the token (a ``Pending`` grant whose
    claim records it is judged ``TokenIssued``: ``grant`` is given as
    ``wingman.model.grants.view`` judges it) the grant's status is the operator's alone, and
    its Job watcher reports the gateway's failure. A refusal of a grant whose token was issued
    on its claim records the token's fields too."""
    message = conditions.fit(message, conditions.STATUS_MESSAGE_CHARS)  # an answer it quotes
    phase = grant_rules.phase(grant)
    if phase == "Pending" or (phase in _OWNED_PHASES and not (own_running
                                                               and phase == "Running")):
        return None
    status: dict[str, Any] = {
        **(_issued_fields(grant) if phase == "TokenIssued" else {}),
        "phase": "Failed", "reason": reason, "message": message,
        "completionTime": conditions.rfc3339(now),
        "conditions": conditions.grant_ready(
            conditions.set_condition(_conds(grant), "Succeeded", False, reason, message,
                                     _generation(grant), now),
            "Failed", message, _generation(grant), now),
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


def running_status(grant: Body, now: dt.datetime) -> dict[str, Any]:
    """``Running``: written just before the command starts (``GatewayExecuting`` is audited once
    this write landed), so its message says the command is starting, not that it runs.
    ``grant`` as ``wingman.model.grants.view`` judges it: a grant whose token was issued on its
    claim (its stored status still ``Pending``, without the token fields) gets the claim's
    ``tokenSHA256``, ``tokenExpirationTime``, ``jobName`` and ``tokenSecretName`` with this
    write, so a grant that ran records its token (the CRD lets nobody change
    ``tokenSHA256`` once set)."""
    message = "the gateway verified and spent the token and is starting the command"
    return {**_issued_fields(grant), "phase": "Running", "startTime": conditions.rfc3339(now),
            "reason": "Executing", "message": message,
            "conditions": conditions.grant_ready(_conds(grant), "Running", message,
                                                 _generation(grant), now)}


def final_status(grant: Body, result: executors.ExecResult, audit_hash: str | None,
                 now: dt.datetime) -> dict[str, Any]:
    """The status patch recording an execution's result."""
    ok = result.exit_code == 0 and not result.timed_out and not result.interrupted
    if result.interrupted:
        reason, message = "CommandInterrupted", result.message or (
            "the gateway's pod was asked to stop (SIGTERM: the grant deleted, its Job's "
            "deadline, the node drained) while the command ran, and killed it (exit code "
            f"{result.exit_code}); what it changed before that is in its output")
    elif result.timed_out:
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
    message = conditions.fit(message, conditions.STATUS_MESSAGE_CHARS)
    status: dict[str, Any] = {
        "phase": "Succeeded" if ok else "Failed",
        "exitCode": max(-255, min(255, result.exit_code)),
        "output": result.output,
        "outputSHA256": result.output_sha256,
        "outputTruncated": result.truncated,
        "completionTime": conditions.rfc3339(result.finished),
        "reason": reason,
        "message": message,
        "conditions": conditions.grant_ready(
            conditions.set_condition(_conds(grant), "Succeeded", ok, reason, message,
                                     _generation(grant), now),
            "Succeeded" if ok else "Failed", message, _generation(grant), now),
    }
    if audit_hash is not None:
        status["auditRecordHash"] = audit_hash
    return status


__all__ = ["final_status", "refused_status", "replay_status", "running_status"]

"""A trail with gateway records of two requests, for the sinks' look-up of what ran
(``AuditSink.executions``), shared by the file sink's tests and PostgreSQL's."""

from __future__ import annotations

from typing import Any

from wingman.audit import AuditSink

REQUEST, OTHER_REQUEST = "ar-uid-1", "ar-uid-2"
GRANT, OLD_GRANT = "eg-uid-1", "eg-uid-0"


def _grant(uid: str, name: str) -> dict[str, Any]:
    return {"kind": "ExecutionGrant", "namespace": "team-a", "name": name, "uid": uid}


def fill(sink: AuditSink) -> list[int]:
    """Records that are not executions of REQUEST or GRANT (other events, another request's,
    the request's UID in another field), and three that are: a gateway of this release's
    (``approval_uid``), an earlier release's of GRANT (no ``approval_uid``), and one of
    another grant of REQUEST. The seqs of those three, in order."""
    found = []
    sink.append("GatewayTokenBurned", actor="gateway/p", subject=_grant(GRANT, "g"),
                data={"approval_uid": REQUEST, "command_sha256": "sha256:aa"})
    sink.append("GatewayExecuting", actor="gateway/p", subject=_grant("eg-uid-9", "other"),
                data={"approval_uid": OTHER_REQUEST, "command_sha256": "sha256:aa"})
    sink.append("GatewayExecuting", actor="gateway/p", subject=_grant("eg-uid-8", "mention"),
                data={"approval_uid": OTHER_REQUEST, "note": REQUEST})
    found.append(sink.append("GatewayExecuting", actor="gateway/p",
                             subject=_grant(OLD_GRANT, "earlier"),
                             data={"approval_uid": REQUEST, "command_sha256": "sha256:aa"}).seq)
    found.append(sink.append("GatewayExecuting", actor="gateway/p", subject=_grant(GRANT, "g"),
                             data={"command_sha256": "sha256:bb"}).seq)
    sink.append("GatewayExecuted", actor="gateway/p", subject=_grant(GRANT, "g"),
                data={"approval_uid": REQUEST, "exit_code": 0})
    found.append(sink.append("GatewayExecuting", actor="gateway/p",
                             subject=_grant("eg-uid-2", "rollback"),
                             data={"approval_uid": REQUEST, "command_sha256": "sha256:cc",
                                   "rollbackOf": "earlier"}).seq)
    return found


def check(sink: AuditSink, seqs: list[int]) -> None:
    """What ``fill`` wrote is found, and only that, by request and grant alike."""
    assert [r.seq for r in sink.executions(REQUEST, GRANT)] == seqs
    assert [r.seq for r in sink.executions(REQUEST, "")] == [seqs[0], seqs[2]]
    assert [r.seq for r in sink.executions("", GRANT)] == [seqs[1]]
    assert sink.executions("ar-uid-none", "eg-uid-none") == []
    assert all(r.event == "GatewayExecuting" for r in sink.executions(REQUEST, GRANT))

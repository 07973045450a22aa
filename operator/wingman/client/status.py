"""The status protocol: one state from a closed set, and what the caller can do next.

Every answer the client API, the CLI (``-o json``) and the MCP server give about an
ApprovalRequest or an ExecutionGrant is a :class:`Status`, computed here as a pure function of
the objects (and the caller's clock). The states are documented in ``docs/agents.md``:

    requests  pending_review, awaiting_approval (n of m), approved, auto_approved,
              rejected (reason, by whom), revoked (reason, by whom), expired
    grants    granted, running, succeeded (exit code, output), failed (reason, exit code,
              output), refused (reason), expired
    calls     awaiting_grant (approved, but only an approver may start the execution),
              not_found, forbidden, invalid, too_large, unavailable

``waiting`` states change on their own (wait, then ask again); ``final`` states never change.
``approved`` and ``auto_approved`` are neither: they last until the request expires or an
approver revokes it, and the caller acts on them (execute a command).

Pure: imports only ``wingman.conditions``, ``wingman.model`` and the standard library (no
kopf, no kubernetes), so the chat component and tests can apply it to any object they hold.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from wingman import conditions as cond
from wingman.model.approvals import parse_time

Body = Mapping[str, Any]

#: Output longer than this (characters) is cut in answers; the full output stays on the grant.
DEFAULT_MAX_OUTPUT = 16384


class State(enum.StrEnum):
    """The closed set of states an answer carries."""

    PENDING_REVIEW = "pending_review"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    AUTO_APPROVED = "auto_approved"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"
    AWAITING_GRANT = "awaiting_grant"
    GRANTED = "granted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    INVALID = "invalid"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"


#: States that change on their own: wait (or ask again later).
WAITING = frozenset({State.PENDING_REVIEW, State.AWAITING_APPROVAL, State.AWAITING_GRANT,
                     State.GRANTED, State.RUNNING})
#: States that never change again for this object.
FINAL = frozenset({State.REJECTED, State.REVOKED, State.EXPIRED, State.SUCCEEDED,
                   State.FAILED, State.REFUSED})
#: How long to wait before asking again, per waiting state (seconds).
RETRY_AFTER = {State.PENDING_REVIEW: 2.0, State.AWAITING_APPROVAL: 30.0,
               State.AWAITING_GRANT: 30.0, State.GRANTED: 2.0, State.RUNNING: 2.0}


class Hints(Protocol):
    """How ``next`` names the caller's actions (MCP tool calls or CLI commands)."""

    def get_request(self, name: str) -> str: ...
    def execute(self, request: str, command: str) -> str: ...
    def get_result(self, grant: str) -> str: ...
    def request_approval(self) -> str: ...
    def list_requests(self) -> str: ...
    def policy(self) -> str: ...
    def approver_exec(self, request: str, command: str) -> str: ...


class ToolHints:
    """``next`` in terms of the MCP tools."""

    def get_request(self, name: str) -> str:
        return f"get_request(name={name!r}, wait_seconds=...)"

    def execute(self, request: str, command: str) -> str:
        return f"execute(request={request!r}, command={command!r})"

    def get_result(self, grant: str) -> str:
        return f"get_result(grant={grant!r}, wait_seconds=...)"

    def request_approval(self) -> str:
        return "request_approval(...)"

    def list_requests(self) -> str:
        return "list_requests"

    def policy(self) -> str:
        return "the policy resource (wingman://policy)"

    def approver_exec(self, request: str, command: str) -> str:
        return f"kubectl wingman exec {request} --command {_quote(command)}"


class CommandHints:
    """``next`` in terms of the ``kubectl wingman`` commands."""

    def get_request(self, name: str) -> str:
        return f"kubectl wingman describe {name}"

    def execute(self, request: str, command: str) -> str:
        return f"kubectl wingman exec {request} --command {_quote(command)}"

    def get_result(self, grant: str) -> str:
        return f"kubectl wingman result {grant}"

    def request_approval(self) -> str:
        return "kubectl wingman request ..."

    def list_requests(self) -> str:
        return "kubectl wingman list"

    def policy(self) -> str:
        return "kubectl wingman policy"

    def approver_exec(self, request: str, command: str) -> str:
        return self.execute(request, command)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


TOOLS: Hints = ToolHints()
COMMANDS: Hints = CommandHints()


@dataclass(frozen=True)
class Approvals:
    """Human approvals counted so far: ``have`` of ``need``, by whom."""

    have: int
    need: int
    by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Vote:
    voter: str
    verdict: str
    risk: str
    rationale: str
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Review:
    """The reviewer panel's result, as an agent needs it to understand a decision."""

    outcome: str
    risk: str
    approvals: int
    rejections: int
    abstentions: int
    flags: tuple[str, ...] = ()
    votes: tuple[Vote, ...] = ()


@dataclass(frozen=True)
class CommandState:
    """One approved command: the grant it went to (each approved command runs once)."""

    command: str
    grant: str | None = None
    state: State | None = None


@dataclass(frozen=True)
class Status:
    """One answer of the protocol. ``to_dict`` is the wire form (JSON/YAML, MCP)."""

    state: State
    next: str
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None
    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    by: str | None = None
    approvals: Approvals | None = None
    expires_at: str | None = None
    environment: str | None = None
    requester: str | None = None
    instruction: str | None = None
    commands: tuple[CommandState, ...] = ()
    review: Review | None = None
    source: Mapping[str, Any] | None = None
    #: ``status.preview`` as the operator wrote it (what the commands would change), verbatim.
    preview: Mapping[str, Any] | None = None
    request: str | None = None
    command: str | None = None
    exit_code: int | None = None
    output: str | None = None
    output_truncated: bool = False
    output_sha256: str | None = None
    waited_seconds: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def waiting(self) -> bool:
        return self.state in WAITING

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def retry_after_seconds(self) -> float | None:
        return RETRY_AFTER.get(self.state)

    def with_wait(self, waited: float) -> Status:
        return _replace(self, waited_seconds=round(waited, 3))

    def to_dict(self) -> dict[str, Any]:
        """The wire form: fields that carry nothing are left out; keys are snake_case."""
        out: dict[str, Any] = {"state": self.state.value, "final": self.final,
                               "waiting": self.waiting, "next": self.next}
        for key in ("kind", "name", "namespace", "phase", "reason", "message", "by",
                    "expires_at", "environment", "requester", "instruction", "request",
                    "command", "exit_code", "output", "output_sha256", "waited_seconds"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.output is not None:
            out["output_truncated"] = self.output_truncated
        if self.retry_after_seconds is not None:
            out["retry_after_seconds"] = self.retry_after_seconds
        if self.approvals is not None:
            out["approvals"] = {"have": self.approvals.have, "need": self.approvals.need,
                                "by": list(self.approvals.by)}
        if self.commands:
            out["commands"] = [
                {k: v for k, v in (("command", c.command), ("grant", c.grant),
                                   ("state", c.state.value if c.state else None))
                 if v is not None}
                for c in self.commands]
        if self.review is not None:
            r = self.review
            out["review"] = {
                "outcome": r.outcome, "risk": r.risk, "approvals": r.approvals,
                "rejections": r.rejections, "abstentions": r.abstentions,
                "flags": list(r.flags),
                "votes": [{"voter": v.voter, "verdict": v.verdict, "risk": v.risk,
                           "rationale": v.rationale, "flags": list(v.flags)}
                          for v in r.votes]}
        if self.source:
            out["source"] = dict(self.source)
        if self.preview:
            out["preview"] = dict(self.preview)
        out.update(self.extra)
        return out


def _replace(status: Status, **changes: Any) -> Status:
    import dataclasses

    return dataclasses.replace(status, **changes)


# --------------------------------------------------------------------------- requests


def _str(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _review(consensus: Mapping[str, Any] | None) -> Review | None:
    if not consensus:
        return None
    votes = tuple(
        Vote(str(v.get("voter", "")), str(v.get("verdict", "")), str(v.get("risk", "")),
             str(v.get("rationale", "")), tuple(str(f) for f in v.get("flags") or ()))
        for v in consensus.get("votes") or () if isinstance(v, Mapping))
    return Review(outcome=str(consensus.get("outcome", "")), risk=str(consensus.get("risk", "")),
                  approvals=int(consensus.get("approvals") or 0),
                  rejections=int(consensus.get("rejections") or 0),
                  abstentions=int(consensus.get("abstentions") or 0),
                  flags=tuple(str(f) for f in consensus.get("flags") or ()), votes=votes)


def source_view(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """``spec.source`` as the protocol shows it (snake_case keys)."""
    src = spec.get("source")
    if not isinstance(src, Mapping) or not src:
        return None
    keys = {"reference": "reference", "agent": "agent", "model": "model",
            "excerpt": "excerpt", "inputTrust": "input_trust"}
    return {out: src[k] for k, out in keys.items() if src.get(k) not in (None, "")}


def late_decision(obj: Body, verdict: str, *, now: dt.datetime) -> str | None:
    """Why ``verdict`` on this request would change nothing, or None when it may count: a
    rejected, revoked or expired request takes no decision, and an approved one (by approvers
    or by the policy) no Approve (a Reject still revokes it). Says how it was decided."""
    s = of_request(obj, now=now)
    approved = s.state in (State.APPROVED, State.AUTO_APPROVED)
    if s.state not in (State.REJECTED, State.REVOKED, State.EXPIRED) and not (
            verdict == "Approve" and approved):
        return None
    how = {State.AUTO_APPROVED: "approved automatically by the environment's policy",
           State.APPROVED: f"approved by {s.by}" if s.by else "approved",
           State.REJECTED: f"rejected by {s.by}", State.REVOKED: f"revoked by {s.by}",
           State.EXPIRED: f"expired ({s.message})"}[s.state]
    if s.state in (State.REJECTED, State.REVOKED) and s.message:
        how += f" ({s.message})"
    then = ("its commands may run as approved; to stop that, reject it (a Reject revokes the "
            "approval)" if approved else "nothing can run under it any more; if the work is "
            "still needed, a new request must be submitted")
    return (f"ApprovalRequest {s.name} is already {how}: your {verdict} was not recorded "
            f"and would change nothing; {then}")


def _decision_reason(spec: Mapping[str, Any], by: str | None) -> str | None:
    for d in spec.get("decisions") or ():
        if isinstance(d, Mapping) and d.get("by") == by and d.get("verdict") == "Reject":
            return _str(d.get("reason"))
    return None


def of_request(obj: Body, grants: Sequence[Body] = (), *, now: dt.datetime,
               workers_may_grant: bool | None = None, hints: Hints = TOOLS) -> Status:
    """The state of an ApprovalRequest (``grants``: the ExecutionGrants that name it)."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    status = obj.get("status") or {}
    conds = status.get("conditions") or []
    name = str(meta.get("name", ""))
    commands: list[str] = [str(c) for c in spec.get("commands") or ()]
    decision = status.get("decision") or {}
    approved_by = tuple(str(b) for b in decision.get("approvedBy") or ())
    need = int(decision.get("requiredApprovals") or 0)
    expires = _str(status.get("expirationTime"))
    expires_at = parse_time(expires)
    holders = {str(e.get("command")): str(e.get("grant"))
               for e in status.get("grants") or () if isinstance(e, Mapping)}
    by_name = {str((g.get("metadata") or {}).get("name")): g for g in grants}
    command_states = []
    for command in commands:
        holder = holders.get(command)
        state = of_grant(by_name[holder], now=now).state if holder in by_name else None
        command_states.append(CommandState(command, holder, state))
    base: dict[str, Any] = {
        "kind": "ApprovalRequest", "name": name, "namespace": _str(meta.get("namespace")),
        "phase": str(status.get("phase") or "Pending"), "expires_at": expires,
        "environment": _str(spec.get("environment")), "requester": _str(spec.get("requester")),
        "instruction": _str(spec.get("instruction")), "commands": tuple(command_states),
        "review": _review(status.get("consensus")), "source": source_view(spec),
        "preview": status.get("preview") if isinstance(status.get("preview"), Mapping) else None,
        "approvals": Approvals(len(approved_by), need, approved_by) if need else None,
    }

    if cond.is_true(conds, "Revoked"):
        cnd = cond.get(conds, "Revoked") or {}
        by = _str(decision.get("rejectedBy"))
        return Status(State.REVOKED, reason=_str(cnd.get("reason")) or "ApprovalRevoked",
                      message=_decision_reason(spec, by) or _str(cnd.get("message")), by=by,
                      next="nothing: an approver revoked the approval, so nothing may run "
                           "under it. Do not retry the same request; if the work is still "
                           f"needed, address the reason and call {hints.request_approval()}",
                      **base)
    if cond.is_true(conds, "Rejected"):
        cnd = cond.get(conds, "Rejected") or {}
        reason = _str(cnd.get("reason")) or "ApprovalRejected"
        by = _str(decision.get("rejectedBy"))
        message = _decision_reason(spec, by) or _str(cnd.get("message"))
        if by is None:
            by = "reviewers"  # the panel rejected outright (prompt injection)
        return Status(State.REJECTED, reason=reason, message=message, by=by,
                      next="nothing: the request was rejected and will never run. Read "
                           "`reason` and `message`; do not resubmit it unchanged. If the work "
                           f"is still needed, fix what was objected to and call "
                           f"{hints.request_approval()}", **base)
    if cond.is_true(conds, "Expired") or (expires_at is not None and now >= expires_at):
        cnd = cond.get(conds, "Expired") or {}
        return Status(State.EXPIRED, reason=_str(cnd.get("reason")) or "ApprovalExpired",
                      message=_str(cnd.get("message")) or f"the request expired at {expires}",
                      next="nothing runs under an expired request (this is a timeout, not a "
                           f"rejection); if the work is still needed, call "
                           f"{hints.request_approval()} again", **base)
    if cond.is_true(conds, "Approved"):
        cnd = cond.get(conds, "Approved") or {}
        auto = cnd.get("reason") == "AutoApproved"
        left = [cs.command for cs in command_states if cs.grant is None]
        if left and workers_may_grant is False:
            act = (f"ask an approver to start it ({hints.approver_exec(name, left[0])}); "
                   "in this environment only approvers may create executions")
        elif left:
            act = f"call {hints.execute(name, left[0])}" + (
                f" (and likewise for the {len(left) - 1} other approved command(s))"
                if len(left) > 1 else "")
        else:
            holder = next((cs.grant for cs in command_states if cs.grant), "")
            act = (f"nothing new to run: every approved command was granted once; read "
                   f"results with {hints.get_result(holder)}")
        return Status(State.AUTO_APPROVED if auto else State.APPROVED,
                      reason=_str(cnd.get("reason")), message=_str(cnd.get("message")),
                      by="policy" if auto else (", ".join(approved_by) or None),
                      next=f"{act}. Each approved command runs at most once, until "
                           f"{expires or 'the request expires'}", **base)
    if cond.is_true(conds, "Reviewed"):
        cnd = cond.get(conds, "Approved") or cond.get(conds, "Reviewed") or {}
        have = len(approved_by)
        return Status(State.AWAITING_APPROVAL, reason=_str(cnd.get("reason")),
                      message=_str(cnd.get("message")),
                      next=f"wait: a human approver must decide ({have} of {need or '?'} "
                           f"approvals so far; you cannot approve your own request). Call "
                           f"{hints.get_request(name)} later; the request expires at "
                           f"{expires or '(unknown)'}", **base)
    return Status(State.PENDING_REVIEW, reason=None,
                  message="the reviewer panel has not judged the request yet",
                  next=f"wait: the reviewers are judging (usually seconds); call "
                       f"{hints.get_request(name)}", **base)


# --------------------------------------------------------------------------- grants


def bounded_output(text: str | None, limit: int = DEFAULT_MAX_OUTPUT) -> tuple[str | None, bool]:
    if text is None:
        return None, False
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def of_grant(obj: Body, *, now: dt.datetime, max_output: int = DEFAULT_MAX_OUTPUT,
             hints: Hints = TOOLS) -> Status:
    """The state of an ExecutionGrant: granted, running, succeeded, failed, refused, expired."""
    del now  # the grant's phase is authoritative; kept for a uniform signature
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    status = obj.get("status") or {}
    name = str(meta.get("name", ""))
    phase = str(status.get("phase") or "Pending")
    request = _str((spec.get("approvalRef") or {}).get("name"))
    output, truncated = bounded_output(_str(status.get("output")), max_output)
    exit_code = status.get("exitCode")
    base: dict[str, Any] = {
        "kind": "ExecutionGrant", "name": name, "namespace": _str(meta.get("namespace")),
        "phase": phase, "request": request, "command": _str(spec.get("command")),
        "requester": _str(spec.get("requester")),
        "reason": _str(status.get("reason")), "message": _str(status.get("message")),
        "exit_code": int(exit_code) if isinstance(exit_code, int) else None,
        "output": output, "output_truncated": truncated,
        "output_sha256": _str(status.get("outputSHA256")),
    }
    again = (f"running the command again needs a new request: call "
             f"{hints.request_approval()}")
    if phase == "Succeeded":
        return Status(State.SUCCEEDED, next="done: read exit_code and output. The approved "
                      f"command was used up; {again}", **base)
    if phase == "Failed":
        ran = base["exit_code"] is not None
        what = ("the command ran and failed (see exit_code and output)" if ran else
                "the command did not complete (see reason and message)")
        return Status(State.FAILED, next=f"nothing: {what}. The grant is final and the "
                      f"approved command is used up; {again}", **base)
    if phase == "Denied":
        return Status(State.REFUSED, next="nothing: the operator refused to issue this grant "
                      f"(see reason and message); no command ran. {again} if the cause "
                      "can be fixed", **base)
    if phase == "Expired":
        return Status(State.EXPIRED, next="nothing ran: the grant's token expired before the "
                      f"gateway used it; {again}", **base)
    if phase == "Running":
        return Status(State.RUNNING, next=f"wait: the gateway is running the command; call "
                      f"{hints.get_result(name)}", **base)
    return Status(State.GRANTED, next=f"wait: the operator is issuing the grant and starting "
                  f"the gateway (seconds); call {hints.get_result(name)}", **base)


# --------------------------------------------------------------------------- call outcomes


def error(state: State, message: str, *, reason: str | None = None, kind: str | None = None,
          name: str | None = None, namespace: str | None = None,
          hints: Hints = TOOLS) -> Status:
    """An answer for a call that has no object to describe (not found, refused, ...)."""
    nexts = {
        State.NOT_FOUND: f"check the name ({hints.list_requests()} shows what exists) or the "
                         "namespace; "
                         "a grant an approver has yet to create appears once they have",
        State.FORBIDDEN: "nothing to retry: your identity may not do this (RBAC or an "
                         "admission policy refused it; the message says which). Ask a "
                         "person with the right to act",
        State.INVALID: f"fix the input as the message says and call again; "
                       f"{hints.policy()} lists what this environment accepts",
        State.TOO_LARGE: "nothing to retry: asking again gets the same answer, larger than "
                         "Wingman reads; do what the message says (or ask a person who runs "
                         "Wingman)",
        State.UNAVAILABLE: "retry later: the Kubernetes API could not be reached or failed",
    }
    return Status(state, next=nexts.get(state, "see message"), reason=reason, message=message,
                  kind=kind, name=name, namespace=namespace)


def grant_name(request_name: str, command: str) -> str:
    """The deterministic grant name for one command of one request (re-running is
    idempotent: the API server answers AlreadyExists for the second create). The request's
    name is cut to 50 characters, and a '.' the cut leaves at its end dropped: ``.-`` is no
    name the API server takes."""
    digest = hashlib.sha256(command.encode()).hexdigest()[:8]
    return f"{request_name[:50].rstrip('.')}-{digest}"


__all__ = ["COMMANDS", "DEFAULT_MAX_OUTPUT", "FINAL", "RETRY_AFTER", "TOOLS", "WAITING",
           "Approvals", "CommandHints", "CommandState", "Hints", "Review", "State", "Status",
           "ToolHints", "Vote", "bounded_output", "error", "grant_name", "late_decision",
           "of_grant", "of_request", "source_view"]

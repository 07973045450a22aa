"""What happens to an ApprovalRequest, as pure functions of (object, policy, panel result, now).

The operator's handlers call these and write what they return; nothing here talks to the API.
Each function returns a ``Transition``: the status to merge, the new phase, the Kubernetes
Events and audit records the transition owes, or ``None`` when there is nothing to do (so a
handler re-run after a crash changes nothing).

- ``reviewed``: the panel's votes and outcome, then the environment policy: AutoApproved,
  Rejected (prompt injection) or AwaitingDecision.
- ``decided``: human decisions in ``spec.decisions`` (distinct approvers, never the requester;
  any Reject rejects; a Reject after an approval revokes it). A decision added once the
  request is rejected, revoked or expired, or an Approve added once it is approved, counts
  for nothing: ``DecisionIgnored`` (a Warning Event and an audit record) says so, once.
- ``expired``: past ``status.expirationTime`` and not already final.
- ``expiring``: a pending request within the policy's ``expiryWarningSeconds`` of its
  expiration gets ``ExpiringSoon`` and a Warning Event, once.
- ``refused``: the request carries token-shaped text (``token_fields``) or cannot be processed
  at all: Rejected at once with the reason, never reviewed (no reviewer, local or remote, ever
  sees a credential).

Lifetimes are separate: a pending request expires at its creation plus its pending lifetime
(``lifetime_seconds``); the moment it is approved (auto-approval or the human approval that
completes the count) ``status.approvedAt`` is set and ``expirationTime`` becomes that moment
plus the policy's ``approvalTTLSeconds``: an approval's validity counts from the decision. A
decision that arrives after the pending lifetime ended counts nothing (the request expires).

``merged`` applies a transition's status to the body, so several transitions of one pass
(review, then decisions already present) become one status write.

``usable`` says whether a grant may act on an approval now; ``granted_to`` names the grant an
approved command was given to (``status.grants``: each approved command is granted once).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wingman import conditions as cond
from wingman.audit import looks_like_token
from wingman.model import preview as previews
from wingman.model.approvals import is_final, parse_time
from wingman.review.consensus import Consensus, ReviewInput, clean_rationale
from wingman.review.policy import (
    AutoDecision,
    Decision,
    EnvironmentPolicy,
    HumanOutcome,
    auto_approval,
    human_decision,
)

Body = Mapping[str, Any]


@dataclass(frozen=True)
class Transition:
    status: dict[str, Any]
    phase: str
    event_reason: str
    message: str
    warning: bool = False
    audit_event: str = ""
    audit_data: dict[str, Any] = field(default_factory=dict)
    decision: str | None = None  # AutoApproved / Approved / Rejected / Expired, for metrics


def review_input(body: Body) -> ReviewInput:
    """What the panel judges: the request as submitted, its rollbacks, and the preview the
    operator recorded (when there is one)."""
    spec = body.get("spec", {})
    meta = body.get("metadata", {})
    return ReviewInput(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        environment=str(spec.get("environment", "")),
        requester=str(spec.get("requester", "")),
        instruction=str(spec.get("instruction", "")),
        commands=tuple(str(c) for c in spec.get("commands", [])),
        justification=spec.get("justification"),
        source=dict(spec["source"]) if isinstance(spec.get("source"), Mapping) else None,
        rollbacks=tuple((str(r.get("command", "")), str(r.get("rollback", "")))
                        for r in spec.get("rollbacks") or [] if isinstance(r, Mapping)),
        preview=previews.status_of(body) or None,
    )


def _generation(body: Body) -> int:
    return int(body.get("metadata", {}).get("generation") or 1)


def _conditions(body: Body) -> list[dict[str, Any]]:
    return [dict(c) for c in (body.get("status") or {}).get("conditions") or []]


def lifetime_seconds(body: Body, policy: EnvironmentPolicy) -> int:
    """How long the request and its approval live: ``spec.expiresAfterSeconds``, capped by the
    policy's request TTL, which is also the default. A requester may ask for less, never more."""
    asked = body.get("spec", {}).get("expiresAfterSeconds")
    if not asked:
        return policy.request_ttl_seconds
    return min(int(asked), policy.request_ttl_seconds)


def expiration_time(body: Body, policy: EnvironmentPolicy) -> dt.datetime:
    """Creation time plus :func:`lifetime_seconds`."""
    created = parse_time(body.get("metadata", {}).get("creationTimestamp"))
    if created is None:
        created = dt.datetime.now(dt.UTC)
    return created + dt.timedelta(seconds=lifetime_seconds(body, policy))


def approval_expiration(policy: EnvironmentPolicy, approved_at: dt.datetime) -> dt.datetime:
    """An approval is valid for the policy's ``approvalTTLSeconds`` from the decision."""
    return approved_at + dt.timedelta(seconds=policy.approval_ttl_seconds)


def is_reviewed(body: Body) -> bool:
    return cond.get(_conditions(body), "Reviewed") is not None


def reviewed(body: Body, consensus: Consensus, policy: EnvironmentPolicy, now: dt.datetime
             ) -> Transition | None:
    """Status after the panel ran; None if the request was reviewed already."""
    if is_reviewed(body):
        return None
    gen = _generation(body)
    conds = _conditions(body)
    request = review_input(body)
    decision = auto_approval(consensus, policy, previews.status_of(body), request.commands,
                             [rollback for _, rollback in request.rollbacks])
    if decision.decision is AutoDecision.AUTO_APPROVE and now >= expiration_time(body, policy):
        # the review finished after the request's lifetime (the operator down, a backlog, a
        # slow panel): nothing is approved past it; ``expired`` ends the request in this pass
        decision = Decision(AutoDecision.AWAIT_HUMAN, "LifetimeEnded",
                            f"the request's lifetime ended at "
                            f"{cond.rfc3339(expiration_time(body, policy))}, before its review "
                            "finished, so it is not auto-approved; create a new request")
    summary = (f"panel {consensus.outcome.value}: {consensus.approvals} approve, "
               f"{consensus.rejections} reject, {consensus.abstentions} abstain; "
               f"risk {consensus.risk.value}")
    asked = int(body.get("spec", {}).get("expiresAfterSeconds") or 0)
    if asked > lifetime_seconds(body, policy):
        summary += (f"; lifetime capped at {policy.request_ttl_seconds}s by the environment "
                    f"policy (requestTTLSeconds), not the {asked}s asked for")
    conds = cond.set_condition(conds, "Reviewed", True, f"Consensus{consensus.outcome.value}",
                               summary if decision.decision is not AutoDecision.AWAIT_HUMAN
                               else f"{summary}. {decision.message}", gen, now)
    expires = expiration_time(body, policy)
    audit_data: dict[str, Any] = {
        "outcome": consensus.outcome.value, "risk": consensus.risk.value,
        "approvals": consensus.approvals, "rejections": consensus.rejections,
        "abstentions": consensus.abstentions, "flags": list(consensus.flags),
        "votes": [{"voter": v.voter, "verdict": v.verdict.value, "risk": v.risk.value,
                   **({"error": clean_rationale(v.error)} if v.error else {})}
                  for v in consensus.votes],
        "dissent": [v.voter for v in consensus.dissent],
        "policyDecision": decision.decision.value, "reason": decision.reason,
        "message": decision.message,
    }
    final: str | None = None
    warning = False
    approved_at: dt.datetime | None = None
    if decision.decision is AutoDecision.AUTO_APPROVE:
        conds = cond.set_condition(conds, "Approved", True, "AutoApproved", decision.message,
                                   gen, now)
        final = "AutoApproved"
        approved_at = now
        expires = approval_expiration(policy, now)
    elif decision.decision is AutoDecision.AUTO_REJECT:
        conds = cond.set_condition(conds, "Rejected", True, decision.reason, decision.message,
                                   gen, now)
        final, warning = "Rejected", True
    conds = cond.approval_ready(conds, gen, now)
    status: dict[str, Any] = {
        "consensus": consensus.to_dict(),
        "decision": {"approvedBy": [], "requiredApprovals": policy.required_approvals},
        "expirationTime": cond.rfc3339(expires),
        "conditions": conds,
        "observedGeneration": gen,
    }
    if approved_at is not None:
        status["approvedAt"] = cond.rfc3339(approved_at)
        audit_data["approvedAt"] = status["approvedAt"]
    audit_data["expirationTime"] = status["expirationTime"]
    phase = cond.approval_phase(conds)
    status["phase"] = phase
    return Transition(status, phase, decision.reason if final else "AwaitingDecision",
                      f"{summary}. {decision.message}", warning, "ApprovalReviewed", audit_data,
                      final)


def _late(body: Body) -> list[dict[str, str]]:
    """The decisions in ``spec.decisions`` that the status does not count (``approvedBy``,
    ``rejectedBy``), each approver once, when the spec changed since the operator last wrote
    the status (``observedGeneration``): what arrived after the request was decided."""
    status = body.get("status") or {}
    if _generation(body) <= int(status.get("observedGeneration") or 0):
        return []
    decision = status.get("decision") or {}
    counted = {str(b) for b in decision.get("approvedBy") or []}
    counted.add(str(decision.get("rejectedBy") or ""))
    requester = str((body.get("spec") or {}).get("requester", ""))
    late: dict[str, str] = {}
    for d in (body.get("spec") or {}).get("decisions") or []:
        by = str(d.get("by", "")) if isinstance(d, Mapping) else ""
        if by and by not in counted and by != requester and by not in late:
            late[by] = str(d.get("verdict", ""))
    return [{"by": by, "verdict": verdict} for by, verdict in late.items()]


def _ignored(body: Body, now: dt.datetime, already: str) -> Transition | None:
    """``DecisionIgnored``: decisions added to a request that was ``already`` decided (in
    words) count for nothing, and the trail and an Event say so, once per spec change (the
    status records the generation seen); None when nothing new arrived."""
    late = _late(body)
    if not late:
        return None
    who = ", ".join(f"{d['verdict'] or 'a decision'} by {d['by']}" for d in late)
    message = (f"{who} ignored: the request was already {already}; a decision added after "
               "that changes nothing")
    phase = cond.approval_phase(_conditions(body))
    return Transition({"observedGeneration": _generation(body)}, phase, "DecisionIgnored",
                      message, True, "DecisionIgnored",
                      {"ignored": late, "already": already})


def _already(body: Body) -> str:
    """How a final or approved request was decided, in words, for ``DecisionIgnored``."""
    status = body.get("status") or {}
    conds = _conditions(body)
    for kind in ("Revoked", "Rejected", "Expired", "Approved"):
        found = cond.get(conds, kind)
        if found is not None and found.get("status") == "True":
            detail = str(found.get("message") or found.get("reason") or "")
            if kind == "Approved" and found.get("reason") == "AutoApproved":
                detail = "automatically, by the environment's policy"
            return f"{kind.lower()} ({detail})" if detail else kind.lower()
    return f"past its pending lifetime (expired at {status.get('expirationTime')})"


def decided(body: Body, policy: EnvironmentPolicy, now: dt.datetime) -> Transition | None:
    """Status after a change of ``spec.decisions``; None when it changes nothing. A decision
    added to a request already rejected, revoked or expired, or an Approve added to one already
    approved, counts for nothing and is reported as such (``DecisionIgnored``, once)."""
    conds = _conditions(body)
    if any(cond.is_true(conds, t) for t in ("Rejected", "Revoked", "Expired")):
        return _ignored(body, now, _already(body))
    if not is_reviewed(body):
        return None  # the review writes first; decisions are counted right after it
    approved = cond.is_true(conds, "Approved")
    deadline = parse_time((body.get("status") or {}).get("expirationTime"))
    if not approved and deadline is not None and now >= deadline:
        # its pending lifetime is over: ``expired`` ends it, nothing is counted
        return _ignored(body, now, _already(body))
    spec = body.get("spec", {})
    requester = str(spec.get("requester", ""))
    human = human_decision(spec.get("decisions") or [], policy, requester)
    gen = _generation(body)
    decision_status = {"approvedBy": list(human.approved_by),
                       "requiredApprovals": human.required}
    if human.rejected_by:
        decision_status["rejectedBy"] = human.rejected_by
    data = {"approvedBy": list(human.approved_by), "rejectedBy": human.rejected_by,
            "required": human.required}
    if human.outcome is HumanOutcome.REJECTED:
        if approved:
            conds = cond.set_condition(conds, "Revoked", True, "RevokedByApprover",
                                       f"approval revoked: {human.message}", gen, now)
            event, audit, final = "Revoked", "ApprovalRevoked", "Rejected"
        else:
            conds = cond.set_condition(conds, "Rejected", True, "RejectedByApprover",
                                       human.message, gen, now)
            event, audit, final = "Rejected", "ApprovalRejected", "Rejected"
        conds = cond.approval_ready(conds, gen, now)
        phase = cond.approval_phase(conds)
        return Transition({"conditions": conds, "decision": decision_status, "phase": phase,
                           "observedGeneration": gen}, phase, event, human.message, True,
                          audit, data, final)
    if approved:
        return _ignored(body, now, _already(body))
    if human.outcome is HumanOutcome.APPROVED:
        conds = cond.set_condition(conds, "Approved", True, "ApprovedByHumans", human.message,
                                   gen, now)
        conds = [c for c in conds if c.get("type") != "ExpiringSoon"]  # no longer pending
        conds = cond.approval_ready(conds, gen, now)
        phase = cond.approval_phase(conds)
        expires = cond.rfc3339(approval_expiration(policy, now))
        return Transition({"conditions": conds, "decision": decision_status, "phase": phase,
                           "observedGeneration": gen, "approvedAt": cond.rfc3339(now),
                           "expirationTime": expires}, phase, "Approved",
                          f"{human.message}; valid until {expires}", False,
                          "ApprovalApproved", {**data, "approvedAt": cond.rfc3339(now),
                                               "expirationTime": expires}, "Approved")
    current = (body.get("status") or {}).get("decision") or {}
    if list(current.get("approvedBy") or []) == list(human.approved_by):
        return None
    phase = cond.approval_phase(conds)
    return Transition({"decision": decision_status, "observedGeneration": gen}, phase,
                      "ApprovalCounted", human.message, False, "ApprovalCounted", data)


def expired(body: Body, now: dt.datetime) -> Transition | None:
    """Expire a request past its expirationTime; None when not due or already final."""
    status = body.get("status") or {}
    expires = parse_time(status.get("expirationTime"))
    if expires is None or now < expires or is_final(body):
        return None
    conds = cond.set_condition(_conditions(body), "Expired", True, "Expired",
                               f"the request expired at {status.get('expirationTime')}; "
                               "create a new request", _generation(body), now)
    conds = cond.approval_ready(conds, _generation(body), now)
    phase = cond.approval_phase(conds)
    return Transition({"conditions": conds, "phase": phase}, phase, "Expired",
                      "the request expired; nothing can be executed under it any more",
                      False, "ApprovalExpired", {"expirationTime": status.get("expirationTime")},
                      "Expired")


def expiring(body: Body, policy: EnvironmentPolicy, now: dt.datetime) -> Transition | None:
    """The warning before a pending request expires: ``ExpiringSoon`` (once) when it is
    reviewed, not yet decided and within ``expiryWarningSeconds`` of ``expirationTime``."""
    when = next_warning(body, policy)
    if when is None or now < when:
        return None
    status = body.get("status") or {}
    expires = parse_time(status.get("expirationTime"))
    if expires is None or now >= expires:
        return None
    left = (expires - now).total_seconds()
    minutes = max(1, int(left // 60))
    message = (f"the request still awaits a decision and expires at "
               f"{status.get('expirationTime')} (in about {minutes} min); decide it before "
               "then, or it must be submitted again")
    conds = cond.set_condition(_conditions(body), "ExpiringSoon", True, "PendingExpiresSoon",
                               message, _generation(body), now)
    phase = cond.approval_phase(conds)
    return Transition({"conditions": conds}, phase, "ExpiringSoon", message, True,
                      "ApprovalExpiringSoon",
                      {"expirationTime": status.get("expirationTime"),
                       "secondsLeft": int(left)})


def next_warning(body: Body, policy: EnvironmentPolicy) -> dt.datetime | None:
    """When :func:`expiring` will have something to say about ``body`` (None: never)."""
    if policy.expiry_warning_seconds <= 0 or not is_reviewed(body) or is_final(body):
        return None
    conds = _conditions(body)
    if cond.is_true(conds, "Approved") or cond.get(conds, "ExpiringSoon") is not None:
        return None
    expires = parse_time((body.get("status") or {}).get("expirationTime"))
    if expires is None:
        return None
    return expires - dt.timedelta(seconds=policy.expiry_warning_seconds)


def token_fields(body: Body) -> list[str]:
    """Paths of the strings in ``spec``, labels and annotations that look like a capability
    token (a JWT): the audit trail refuses to store such text, and no reviewer may see it."""
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if len(found) >= 10:
            return
        if isinstance(value, str):
            if looks_like_token(value):
                found.append(path)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{path}.{k}")
                if isinstance(k, str) and looks_like_token(k):
                    found.append(f"{path} (a key)")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")

    meta = body.get("metadata") or {}
    walk(body.get("spec") or {}, "spec")
    walk(meta.get("annotations") or {}, "metadata.annotations")
    walk(meta.get("labels") or {}, "metadata.labels")
    return found


def refused(body: Body, reason: str, message: str, now: dt.datetime,
            data: Mapping[str, Any] | None = None) -> Transition | None:
    """Rejected without a review (token-shaped text, or an object the operator cannot
    complete); None when the request is final already."""
    if is_final(body):
        return None
    gen = _generation(body)
    conds = _conditions(body)
    if cond.get(conds, "Reviewed") is None:
        conds = cond.set_condition(conds, "Reviewed", False, reason,
                                   "not reviewed: " + message, gen, now)
    conds = cond.set_condition(conds, "Rejected", True, reason, message, gen, now)
    conds = cond.approval_ready(conds, gen, now)
    phase = cond.approval_phase(conds)
    return Transition({"conditions": conds, "phase": phase, "observedGeneration": gen},
                      phase, reason, message, True, "ApprovalRejected",
                      {"reason": reason, **(data or {})}, "Rejected")


def merged(body: Body, t: Transition) -> dict[str, Any]:
    """``body`` as it reads after ``t``'s status is written (a merge patch of the status)."""
    return {**body, "status": {**(body.get("status") or {}), **t.status}}


__all__ = ["Transition", "approval_expiration", "decided", "expiration_time", "expired",
           "expiring", "is_reviewed", "lifetime_seconds", "merged", "next_warning", "refused",
           "review_input", "reviewed", "token_fields"]

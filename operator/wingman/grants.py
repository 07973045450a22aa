"""Whether an ExecutionGrant may be honoured, and the grant status that says so (pure).

``authorize`` re-checks everything a grant depends on, in the order a human would: the
approval exists in the same namespace, serves this environment, is approved and unexpired;
the command is byte-identical to one of its commands and inside the allowlist; the token
TTL is within the environment's cap. The first failure is the grant's ``Denied`` reason.
The operator calls it before minting and the gateway repeats the same checks before executing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wingman import approvals, conditions
from wingman.audit import looks_like_token
from wingman.errors import ScopeViolation
from wingman.policy import EnvironmentPolicy
from wingman.scope import Allowlist, check

Body = Mapping[str, Any]
TERMINAL = conditions.GRANT_TERMINAL
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


def authorize(grant: Body, approval: Body | None, policy: EnvironmentPolicy,
              allowlist: Allowlist, now: dt.datetime) -> Authorization:
    """The verdict on a grant (see the module docstring)."""
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
    ok, reason, message = approvals.usable(approval, now)
    if not ok:
        return _deny(reason, message)
    command = spec.get("command")
    try:
        argv = check(str(command), approved=list(approval.get("spec", {}).get("commands", [])),
                     allowlist=allowlist)
    except ScopeViolation as exc:
        return _deny(_SCOPE_REASONS.get(exc.reason, exc.reason), str(exc))
    if looks_like_token(str(command)):
        return _deny("CommandLooksLikeToken",
                     "the command contains a token-shaped string (a JWT); Wingman never records "
                     "or passes credentials in commands: remove it")
    ttl = spec.get("ttlSeconds")
    ttl_seconds = policy.token_ttl_seconds if ttl is None else int(ttl)
    if ttl_seconds > policy.max_token_ttl_seconds:
        return _deny("TTLAboveCap",
                     f"spec.ttlSeconds {ttl_seconds} exceeds the environment's cap of "
                     f"{policy.max_token_ttl_seconds}s; ask for {policy.max_token_ttl_seconds} "
                     "or less")
    return Authorization(True, "Authorized",
                         f"approved command of {ref}, inside the allowlist; token TTL "
                         f"{ttl_seconds}s", ttl_seconds, tuple(argv))


def denied_status(grant: Body, auth: Authorization, now: dt.datetime) -> dict[str, Any]:
    gen = int(grant.get("metadata", {}).get("generation") or 1)
    conds = conditions.set_condition((grant.get("status") or {}).get("conditions") or [],
                                     "Authorized", False, auth.reason, auth.message, gen, now)
    return {"phase": "Denied", "reason": auth.reason, "message": auth.message,
            "conditions": conds, "observedGeneration": gen,
            "completionTime": conditions.rfc3339(now)}


def phase(grant: Body) -> str:
    return str((grant.get("status") or {}).get("phase") or "Pending")


def is_terminal(grant: Body) -> bool:
    return phase(grant) in TERMINAL


__all__ = ["TERMINAL", "Authorization", "authorize", "denied_status", "is_terminal", "phase"]

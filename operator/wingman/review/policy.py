"""The environment policy and the decisions it makes: auto-approval and human approval.

Both decisions are pure functions of data:

- ``auto_approval(consensus, policy)``: ``AutoApprove`` only when the policy allows
  auto-approval, the panel's outcome is Approve, the aggregated risk is at most
  ``autoApproveMaxRisk`` and no voter flagged PromptInjection or Destructive. A prompt
  injection is rejected outright (``AutoReject``): a request that tries to instruct its
  reviewers is not put in front of a human as if it were honest. Everything else, including
  a panel that rejects, waits for a human (``AwaitingDecision``) with the dissent visible:
  reviewers advise, people decide.
- ``human_decision(decisions, policy, requester)``: Rejected as soon as any approver rejects;
  Approved once ``requiredApprovals`` DISTINCT approvers (never the requester, defensively —
  admission already refuses it) approved; otherwise Pending with the count.

The policy file is the ``policy`` block of the Helm values (camelCase) plus ``environment``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wingman.errors import ConfigError
from wingman.review.consensus import DESTRUCTIVE, PROMPT_INJECTION, Consensus, Outcome, Risk
from wingman.scope import Allowlist

HARD_MAX_TTL_SECONDS = 3600


@dataclass(frozen=True)
class PanelSpec:
    threshold: int = 3
    quorum: int = 3
    voters: tuple[Mapping[str, Any], ...] = (
        {"type": "builtin", "name": "destructive"},
        {"type": "builtin", "name": "blast-radius"},
        {"type": "builtin", "name": "allowlist"},
        {"type": "builtin", "name": "prompt-injection"},
    )
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class EnvironmentPolicy:
    name: str
    auto_approve: bool = False
    auto_approve_max_risk: Risk = Risk.LOW
    required_approvals: int = 1
    token_ttl_seconds: int = 300
    max_token_ttl_seconds: int = 900
    request_ttl_seconds: int = 86400
    allowlist: tuple[str, ...] = ()
    workers_may_grant: bool = False
    panel: PanelSpec = field(default_factory=PanelSpec)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, environment: str | None = None
                  ) -> EnvironmentPolicy:
        """Parse and validate a policy mapping; ConfigError names the offending field."""
        if not isinstance(data, Mapping):
            raise ConfigError("the policy must be a mapping of settings")
        name = str(data.get("environment") or environment or "")
        if not name:
            raise ConfigError("policy.environment is missing: name the environment it governs")
        if environment and name != environment:
            raise ConfigError(f"the policy file governs environment {name!r}, but this "
                              f"process serves {environment!r}; mount the right policy")

        def integer(key: str, default: int, lo: int, hi: int) -> int:
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"policy.{key} must be an integer from {lo} to {hi}, "
                                  f"got {value!r}")
            return value

        def boolean(key: str, default: bool) -> bool:
            value = data.get(key, default)
            if not isinstance(value, bool):
                raise ConfigError(f"policy.{key} must be true or false, got {value!r}")
            return value

        risk_text = data.get("autoApproveMaxRisk", "low")
        try:
            max_risk = Risk(str(risk_text))
        except ValueError:
            raise ConfigError(f"policy.autoApproveMaxRisk must be one of low, medium, high, "
                              f"critical; got {risk_text!r}") from None
        token_ttl = integer("tokenTTLSeconds", 300, 30, HARD_MAX_TTL_SECONDS)
        max_ttl = integer("maxTokenTTLSeconds", max(token_ttl, 900), 30, HARD_MAX_TTL_SECONDS)
        if token_ttl > max_ttl:
            raise ConfigError(f"policy.tokenTTLSeconds ({token_ttl}) exceeds "
                              f"policy.maxTokenTTLSeconds ({max_ttl})")
        allowlist = data.get("allowlist", [])
        if not isinstance(allowlist, list) or not all(isinstance(p, str) for p in allowlist):
            raise ConfigError("policy.allowlist must be a list of command patterns")
        Allowlist.from_patterns(allowlist)  # ConfigError naming the first bad pattern, at load
        panel_data = data.get("panel", {}) or {}
        if not isinstance(panel_data, Mapping):
            raise ConfigError("policy.panel must be a mapping")
        voters = panel_data.get("voters", list(PanelSpec.voters))
        if not isinstance(voters, list) or not voters or not all(
                isinstance(v, Mapping) for v in voters):
            raise ConfigError("policy.panel.voters must be a non-empty list of voter specs")
        threshold = panel_data.get("threshold", min(3, len(voters)))
        quorum = panel_data.get("quorum", threshold)
        for key, value in (("threshold", threshold), ("quorum", quorum)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 1 <= value <= len(voters):
                raise ConfigError(f"policy.panel.{key} must be from 1 to the number of voters "
                                  f"({len(voters)}), got {value!r}")
        timeout = panel_data.get("timeoutSeconds", 30)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigError(f"policy.panel.timeoutSeconds must be positive, got {timeout!r}")
        return cls(
            name=name,
            auto_approve=boolean("autoApprove", False),
            auto_approve_max_risk=max_risk,
            required_approvals=integer("requiredApprovals", 1, 1, 10),
            token_ttl_seconds=token_ttl,
            max_token_ttl_seconds=max_ttl,
            request_ttl_seconds=integer("requestTTLSeconds", 86400, 60, 604800),
            allowlist=tuple(allowlist),
            workers_may_grant=boolean("workersMayGrant", False),
            panel=PanelSpec(threshold, quorum, tuple(dict(v) for v in voters), float(timeout)),
        )

    @classmethod
    def load(cls, path: Path, *, environment: str | None = None) -> EnvironmentPolicy:
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read the policy file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"the policy file {path} is not valid YAML: {exc}") from None
        return cls.from_dict(data or {}, environment=environment)


class AutoDecision(enum.StrEnum):
    AUTO_APPROVE = "AutoApprove"
    AUTO_REJECT = "AutoReject"
    AWAIT_HUMAN = "AwaitingDecision"


@dataclass(frozen=True)
class Decision:
    decision: AutoDecision
    reason: str
    message: str


def auto_approval(consensus: Consensus, policy: EnvironmentPolicy) -> Decision:
    """What the policy does with the panel's result (see the module docstring)."""
    if PROMPT_INJECTION in consensus.flags:
        return Decision(AutoDecision.AUTO_REJECT, "PromptInjection",
                        "a reviewer found text that tries to instruct the reviewers; "
                        "the request is rejected, submit it again without such text")
    if not policy.auto_approve:
        return Decision(AutoDecision.AWAIT_HUMAN, "HumanApprovalRequired",
                        f"environment {policy.name} requires a human decision "
                        f"({policy.required_approvals} approval(s))")
    if consensus.outcome is not Outcome.APPROVE:
        return Decision(AutoDecision.AWAIT_HUMAN, f"Consensus{consensus.outcome.value}",
                        f"the panel did not approve ({consensus.approvals} approve, "
                        f"{consensus.rejections} reject, {consensus.abstentions} abstain); "
                        "a human decides")
    if DESTRUCTIVE in consensus.flags:
        return Decision(AutoDecision.AWAIT_HUMAN, "DestructiveCommand",
                        "a reviewer flagged a destructive command; a human decides")
    if consensus.risk > policy.auto_approve_max_risk:
        return Decision(AutoDecision.AWAIT_HUMAN, "RiskAboveAutoApproval",
                        f"aggregated risk {consensus.risk.value} is above the auto-approval "
                        f"limit {policy.auto_approve_max_risk.value}; a human decides")
    return Decision(AutoDecision.AUTO_APPROVE, "AutoApproved",
                    f"the panel approved ({consensus.approvals} of "
                    f"{len(consensus.votes)}) at risk {consensus.risk.value}, within the "
                    f"auto-approval limit of environment {policy.name}")


class HumanOutcome(enum.StrEnum):
    APPROVED = "Approved"
    REJECTED = "Rejected"
    PENDING = "Pending"


@dataclass(frozen=True)
class HumanDecision:
    outcome: HumanOutcome
    approved_by: tuple[str, ...]
    rejected_by: str | None
    required: int
    message: str


def human_decision(decisions: Sequence[Mapping[str, Any]], policy: EnvironmentPolicy,
                   requester: str) -> HumanDecision:
    """Count distinct human approvers; any rejection rejects (see the module docstring)."""
    approvers: list[str] = []
    for d in decisions:
        by = str(d.get("by", ""))
        if not by or by == requester:
            continue
        if d.get("verdict") == "Reject":
            return HumanDecision(HumanOutcome.REJECTED, tuple(approvers), by,
                                 policy.required_approvals,
                                 f"rejected by {by}: {d.get('reason', '')}".strip())
        if d.get("verdict") == "Approve" and by not in approvers:
            approvers.append(by)
    if len(approvers) >= policy.required_approvals:
        return HumanDecision(HumanOutcome.APPROVED, tuple(approvers), None,
                             policy.required_approvals,
                             f"approved by {', '.join(approvers)}")
    return HumanDecision(HumanOutcome.PENDING, tuple(approvers), None,
                         policy.required_approvals,
                         f"{len(approvers)} of {policy.required_approvals} approvals")


__all__ = [
    "AutoDecision",
    "Decision",
    "EnvironmentPolicy",
    "HumanDecision",
    "HumanOutcome",
    "PanelSpec",
    "auto_approval",
    "human_decision",
]

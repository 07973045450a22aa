"""The environment policy and the decisions it makes: auto-approval and human approval.

Both decisions are pure functions of data:

- ``auto_approval(consensus, policy)``: ``AutoApprove`` only when the policy allows
  auto-approval, the panel's outcome is Approve, the aggregated risk is at most
  ``autoApproveMaxRisk``, every voter voted (none abstained, failed or timed out: a
  request one reviewer could not judge waits for a human), every command and rollback is
  inside the allowlist (``outside_allowlist``, checked as a grant checks it whichever voters
  sit and whatever the risk limit: a grant of it would be refused), no voter flagged
  PromptInjection or Destructive, and the request's recorded preview shows a clean change for
  every command (``preview_finding``, read from the preview itself whichever voters sit on
  the panel, one entry per command of ``spec.commands`` in order; where the policy previews,
  no preview is a finding too). A prompt
  injection is rejected outright (``AutoReject``): a request that tries to instruct its
  reviewers is not put in front of a human as if it were honest. Everything else, including
  a panel that rejects, waits for a human (``AwaitingDecision``) with the dissent visible:
  reviewers advise, people decide.
- ``human_decision(decisions, policy, requester)``: Rejected as soon as any approver rejects;
  Approved once ``requiredApprovals`` DISTINCT approvers (never the requester, defensively —
  admission already refuses it) approved; otherwise Pending with the count.

Lifetimes are separate: ``requestTTLSeconds`` is how long a request may wait for a decision
(from its creation; ``spec.expiresAfterSeconds`` may shorten it), ``approvalTTLSeconds`` how
long an approval stays valid (from the decision), ``expiryWarningSeconds`` how long before a
pending request expires the operator warns. ``preview`` configures the server-side preview run
before the panel votes, ``targetDrift`` what the gateway does when a previewed target changed
since (``Refuse``, the default, or ``Allow``), and ``rollbackWindowSeconds`` how long after a
command ran its reviewed rollback may still be granted (0: never).

The policy file is the ``policy`` block of the Helm values (camelCase) plus ``environment``.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wingman.errors import ConfigError, ScopeViolation
from wingman.review.consensus import (
    DESTRUCTIVE,
    PREVIEW_FINDING,
    PROMPT_INJECTION,
    Consensus,
    Outcome,
    Risk,
    Verdict,
    clean_rationale,
)
from wingman.review.llm import DEFAULT_TIMEOUT_SECONDS as VOTER_DEFAULT_TIMEOUT_SECONDS
from wingman.review.llm import MAX_TIMEOUT_SECONDS as VOTER_MAX_TIMEOUT_SECONDS
from wingman.review.panel import check_independent
from wingman.scope import Allowlist, check

HARD_MAX_TTL_SECONDS = 3600
MAX_LIFETIME_SECONDS = 604800
#: The most ``requiredApprovals`` may be: a request holds ten decisions (the CRD's
#: ``spec.decisions`` ``maxItems``), and the CRD keeps the tenth for a Reject, so that an
#: approval can always be revoked however many approvers approved.
MAX_REQUIRED_APPROVALS = 9
#: The most ``panel.timeoutSeconds`` may be: the longest a voter's own ``timeoutSeconds`` may
#: be (a longer panel would wait for nothing).
MAX_PANEL_TIMEOUT_SECONDS = VOTER_MAX_TIMEOUT_SECONDS


class Drift(enum.StrEnum):
    """What the gateway does when a target changed since the preview the approval saw."""

    REFUSE = "Refuse"
    ALLOW = "Allow"


@dataclass(frozen=True)
class PreviewSpec:
    enabled: bool = True
    timeout_seconds: int = 60


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
    #: How long finished requests and grants stay before the operator deletes them (their
    #: story stays in the audit trail); 0 keeps them forever.
    retention_seconds: int = 604800
    allowlist: tuple[str, ...] = ()
    workers_may_grant: bool = False
    panel: PanelSpec = field(default_factory=PanelSpec)
    approval_ttl_seconds: int = 3600
    expiry_warning_seconds: int = 3600
    preview: PreviewSpec = field(default_factory=PreviewSpec)
    target_drift: Drift = Drift.REFUSE
    rollback_window_seconds: int = 3600

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, environment: str | None = None,
                  voter_timeouts: bool = True) -> EnvironmentPolicy:
        """Parse and validate a policy mapping; ConfigError names the offending field.
        ``voter_timeouts``: refuse an LLM voter whose timeout the panel's would cut short (the
        operator, which runs the panel); a client reading the environment's policy does not,
        so that a policy an earlier release's chart rendered (no ``panel.timeoutSeconds``, a
        voter given longer), which that release's operator runs, can still be read."""
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
        check_independent(voters)
        threshold = panel_data.get("threshold", min(3, len(voters)))
        quorum = panel_data.get("quorum", threshold)
        for key, value in (("threshold", threshold), ("quorum", quorum)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not 1 <= value <= len(voters):
                raise ConfigError(f"policy.panel.{key} must be from 1 to the number of voters "
                                  f"({len(voters)}), got {value!r}")
        timeout = panel_data.get("timeoutSeconds", 30)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) \
                or not 0 < timeout <= MAX_PANEL_TIMEOUT_SECONDS:
            raise ConfigError(f"policy.panel.timeoutSeconds must be a number greater than 0 and "
                              f"at most {MAX_PANEL_TIMEOUT_SECONDS:g}, got {timeout!r}")
        if voter_timeouts:
            _check_voter_timeouts(voters, float(timeout))
        preview = _preview_spec(data.get("preview", {}))
        drift_text = data.get("targetDrift", Drift.REFUSE.value)
        try:
            drift = Drift(drift_text)
        except ValueError:
            raise ConfigError(f"policy.targetDrift must be Refuse or Allow, got {drift_text!r}"
                              ) from None
        required = data.get("requiredApprovals", 1)
        if isinstance(required, int) and not isinstance(required, bool) and \
                required > MAX_REQUIRED_APPROVALS:
            raise ConfigError(
                f"policy.requiredApprovals must be an integer from 1 to {MAX_REQUIRED_APPROVALS}, "
                f"got {required}: a request holds ten decisions and the last is kept for a "
                "rejection, so that an approval can always be revoked; require fewer approvals")
        return cls(
            name=name,
            auto_approve=boolean("autoApprove", False),
            auto_approve_max_risk=max_risk,
            required_approvals=integer("requiredApprovals", 1, 1, MAX_REQUIRED_APPROVALS),
            token_ttl_seconds=token_ttl,
            max_token_ttl_seconds=max_ttl,
            request_ttl_seconds=integer("requestTTLSeconds", 86400, 60, 604800),
            retention_seconds=integer("retentionSeconds", 604800, 0, 31536000),
            allowlist=tuple(allowlist),
            workers_may_grant=boolean("workersMayGrant", False),
            panel=PanelSpec(threshold, quorum, tuple(dict(v) for v in voters), float(timeout)),
            approval_ttl_seconds=integer("approvalTTLSeconds", 3600, 60, MAX_LIFETIME_SECONDS),
            expiry_warning_seconds=integer("expiryWarningSeconds", 3600, 0,
                                           MAX_LIFETIME_SECONDS),
            preview=preview,
            target_drift=drift,
            rollback_window_seconds=integer("rollbackWindowSeconds", 3600, 0,
                                            MAX_LIFETIME_SECONDS),
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


def _check_voter_timeouts(voters: Sequence[Mapping[str, Any]], panel_timeout: float) -> None:
    """ConfigError naming the first LLM voter whose ``timeoutSeconds`` (given, or its default)
    exceeds the panel's: the panel cancels every voter at its own timeout, so the voter's
    longer one would do nothing. A malformed value is left to the voter's own check."""
    for i, spec in enumerate(voters):
        if spec.get("type") not in ("openai", "anthropic"):
            continue
        value = spec.get("timeoutSeconds", VOTER_DEFAULT_TIMEOUT_SECONDS)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or value <= panel_timeout:
            continue
        given = "" if "timeoutSeconds" in spec else " (its default)"
        raise ConfigError(
            f"policy.panel.voters[{i}] ({spec.get('name')}).timeoutSeconds is {value:g}{given}, "
            f"more than policy.panel.timeoutSeconds ({panel_timeout:g}): the panel stops "
            f"waiting for every voter after {panel_timeout:g} s, so the voter would abstain "
            f"(Timeout) before its own timeout; raise policy.panel.timeoutSeconds to at least "
            f"{value:g} (at most {MAX_PANEL_TIMEOUT_SECONDS:g}), or lower the voter's "
            "timeoutSeconds")


def _preview_spec(data: Any) -> PreviewSpec:
    if not isinstance(data, Mapping):
        raise ConfigError("policy.preview must be a mapping (enabled, timeoutSeconds)")
    unknown = sorted(set(map(str, data)) - {"enabled", "timeoutSeconds"})
    if unknown:
        raise ConfigError(f"policy.preview has unknown field(s) {', '.join(unknown)}; allowed: "
                          "enabled, timeoutSeconds")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"policy.preview.enabled must be true or false, got {enabled!r}")
    timeout = data.get("timeoutSeconds", 60)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 10 <= timeout <= 600:
        raise ConfigError(f"policy.preview.timeoutSeconds must be an integer from 10 to 600, "
                          f"got {timeout!r}")
    return PreviewSpec(enabled, timeout)


class AutoDecision(enum.StrEnum):
    AUTO_APPROVE = "AutoApprove"
    AUTO_REJECT = "AutoReject"
    AWAIT_HUMAN = "AwaitingDecision"


@dataclass(frozen=True)
class Decision:
    decision: AutoDecision
    reason: str
    message: str


def preview_finding(preview: Mapping[str, Any] | None, policy: EnvironmentPolicy,
                    commands: Sequence[str]) -> str:
    """Why the request's recorded preview (``status.preview``) does not show a clean change for
    every command of ``commands`` (its ``spec.commands``), or '' when it does (or when the
    policy does not preview and none was recorded). Read from the preview itself, not from a
    voter's flag: a panel without the built-in ``blast-radius`` voter flags nothing, and a
    finding must still keep the request from auto-approval (fail closed: no preview where the
    policy previews, one not ``Completed``, or one whose commands cannot be read, is a finding
    too). The preview binds each command by its text (the gateway compares the targets of the
    entry whose ``command`` is the one it runs), and the preview Job previews the request's
    commands in order: a preview whose entries are not exactly ``commands``, one each, in
    order (one missing, one more, another command's text), did not show every command, and
    is a finding."""
    if not preview:
        return "no preview was recorded" if policy.preview.enabled else ""
    phase = str(preview.get("phase") or "")
    if phase != "Completed":
        detail = clean_rationale(str(preview.get("message") or ""))[:200]
        return f"the preview is {phase or 'without a phase'}" + (f": {detail}" if detail else "")
    entries = preview.get("commands")
    if not isinstance(entries, list) or not entries:
        detail = clean_rationale(str(preview.get("message") or ""))[:200]
        return "the preview recorded no command" + (f": {detail}" if detail else "")
    if len(entries) != len(commands):
        return (f"the preview has {len(entries)} entries for the request's {len(commands)} "
                "command(s): each command needs its own")
    for i, (entry, command) in enumerate(zip(entries, commands, strict=True), 1):
        if not isinstance(entry, Mapping) or entry.get("command") != command:
            return (f"the preview's entry {i} is not for the request's command {i}: the "
                    "preview did not show that command")
        outcome = entry.get("outcome")
        if outcome not in ("Previewed", "ReadOnly"):
            return f"command {i} was previewed {str(outcome or 'without an outcome')[:40]}"
    return ""


@functools.lru_cache(maxsize=8)
def _allowlist(patterns: tuple[str, ...]) -> Allowlist:
    return Allowlist.from_patterns(patterns)


def outside_allowlist(policy: EnvironmentPolicy, commands: Sequence[str],
                      rollbacks: Sequence[str] = ()) -> str:
    """Which of the request's commands and rollbacks (``spec.rollbacks[].rollback``) the
    environment's allowlist does not cover, as ``command 2, rollback 1``; '' when it covers
    every one. Checked as a grant is (:func:`wingman.scope.check`: a command that cannot be
    parsed is outside too), so that nothing is auto-approved that its grant would refuse."""
    allowlist = _allowlist(policy.allowlist)
    outside = []
    for what, items in (("command", commands), ("rollback", rollbacks)):
        for i, command in enumerate(items, 1):
            try:
                check(command, approved=[command], allowlist=allowlist)
            except ScopeViolation:
                outside.append(f"{what} {i}")
    return ", ".join(outside)


def auto_approval(consensus: Consensus, policy: EnvironmentPolicy,
                  preview: Mapping[str, Any] | None = None,
                  commands: Sequence[str] = (), rollbacks: Sequence[str] = ()) -> Decision:
    """What the policy does with the panel's result (see the module docstring). ``preview``:
    the request's ``status.preview`` as the operator recorded it ({} when none), checked by
    :func:`preview_finding` against ``commands`` (the request's ``spec.commands``); None
    judges the panel's result alone. ``commands`` and ``rollbacks`` (the rollback commands of
    ``spec.rollbacks``) are checked against the allowlist (:func:`outside_allowlist`)."""
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
    abstained = [v for v in consensus.votes if v.verdict is Verdict.ABSTAIN]
    if abstained:
        failed = [v for v in abstained if v.error]
        who = "; ".join(f"voter {v.voter} failed: {clean_rationale(v.error or '')[:120]}"
                        if v.error else f"voter {v.voter} abstained" for v in abstained)
        return Decision(AutoDecision.AWAIT_HUMAN, "VoterFailed" if failed else "VoterAbstained",
                        f"{who}; auto-approval needs every voter's vote, so a human decides")
    if DESTRUCTIVE in consensus.flags:
        return Decision(AutoDecision.AWAIT_HUMAN, "DestructiveCommand",
                        "a reviewer flagged a destructive command; a human decides")
    outside = outside_allowlist(policy, commands, rollbacks)
    if outside:
        said = next((f" (voter {v.voter}: {clean_rationale(v.rationale)[:200]})"
                     for v in consensus.votes
                     if v.voter == "allowlist" and v.verdict is Verdict.REJECT), "")
        return Decision(AutoDecision.AWAIT_HUMAN, "OutsideAllowlist",
                        f"{outside} of the request {'is' if ',' not in outside else 'are'} "
                        f"outside the allowlist of environment {policy.name}{said}, and a grant "
                        "of it would be refused; it is not auto-approved whatever the panel "
                        "and risk, a human decides")
    finding = preview_finding(preview, policy, commands) if preview is not None else ""
    if PREVIEW_FINDING in consensus.flags or finding:
        return Decision(AutoDecision.AWAIT_HUMAN, "PreviewFinding",
                        "the preview could not show a clean change for every command "
                        f"({finding or 'see status.preview'}); a human decides")
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
    "MAX_REQUIRED_APPROVALS",
    "AutoDecision",
    "Decision",
    "Drift",
    "EnvironmentPolicy",
    "HumanDecision",
    "HumanOutcome",
    "PanelSpec",
    "PreviewSpec",
    "auto_approval",
    "human_decision",
    "outside_allowlist",
    "preview_finding",
]

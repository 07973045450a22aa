"""Built-in deterministic voters: the panel works offline, and every review is reproducible.

- ``destructive``: reads each command's argv for destructive verbs and flags.
- ``blast-radius``: weighs the environment, the number of commands and their reach.
- ``allowlist``: rejects any command the environment's allowlist does not cover.
- ``prompt-injection``: rejects requests whose text tries to instruct the reviewers.
  (``wingman.review.injection``; the provenance excerpt is scanned too)

``destructive`` and ``blast-radius`` raise their risk one level, and flag ``UntrustedInput``,
when the request says (``spec.source.inputTrust: Untrusted``) that the input that led to it came
from content the agent does not trust: an action prompted by a web page or an issue comment
deserves more caution than one a person asked for.

``wingman.review.panel`` builds a panel from the policy's voter specs.

The request text is untrusted data: voters only match it against fixed tables, never act on it.
The tables are documented where they are defined.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence

from wingman.errors import ConfigError
from wingman.review.consensus import (
    DESTRUCTIVE,
    ReviewInput,
    Risk,
    Verdict,
    Vote,
    Voter,
)
from wingman.review.injection import PromptInjectionVoter

# Verbs (argv[1] for kubectl, argv[1] for docker) and what they risk.
DESTRUCTIVE_VERBS = {
    "delete": Risk.CRITICAL, "drain": Risk.HIGH, "cordon": Risk.HIGH, "replace": Risk.HIGH,
    "exec": Risk.CRITICAL, "cp": Risk.HIGH, "rm": Risk.CRITICAL, "kill": Risk.HIGH,
    "prune": Risk.CRITICAL, "rmi": Risk.HIGH, "taint": Risk.HIGH, "apply": Risk.HIGH,
    "create": Risk.MEDIUM, "patch": Risk.HIGH, "edit": Risk.HIGH, "set": Risk.MEDIUM,
    "run": Risk.HIGH, "debug": Risk.CRITICAL, "port-forward": Risk.HIGH, "proxy": Risk.HIGH,
    "attach": Risk.CRITICAL, "label": Risk.MEDIUM, "annotate": Risk.MEDIUM,
}
# Verbs that change little and are routinely safe to repeat.
ROUTINE_VERBS = {
    ("rollout", "restart"): Risk.LOW, ("rollout", "status"): Risk.LOW,
    ("rollout", "undo"): Risk.MEDIUM, ("scale",): Risk.MEDIUM, ("get",): Risk.LOW,
    ("describe",): Risk.LOW, ("logs",): Risk.LOW, ("top",): Risk.LOW,
    ("restart",): Risk.LOW, ("start",): Risk.LOW, ("stop",): Risk.MEDIUM,
}
DANGEROUS_FLAGS = {"--force": Risk.HIGH, "--all": Risk.HIGH, "--grace-period=0": Risk.HIGH,
                   "--cascade=orphan": Risk.HIGH, "--prune": Risk.CRITICAL,
                   "--privileged": Risk.CRITICAL}
SECRET_WORDS = ("secret", "secrets", "serviceaccount", "token", "kubeconfig")
UNTRUSTED_INPUT = "UntrustedInput"
_LEVELS = (Risk.LOW, Risk.MEDIUM, Risk.HIGH, Risk.CRITICAL)


def untrusted(request: ReviewInput, risk: Risk, why: list[str]) -> tuple[Risk, tuple[str, ...]]:
    """One risk level up (and the ``UntrustedInput`` flag) for a request acting on untrusted
    input; unchanged otherwise."""
    if not request.untrusted_input:
        return risk, ()
    raised = _LEVELS[min(risk.rank + 1, len(_LEVELS) - 1)]
    why.append(f"acts on untrusted input (risk {risk.value} -> {raised.value})")
    return raised, (UNTRUSTED_INPUT,)



def _argv(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def command_risk(command: str) -> tuple[Risk, list[str]]:
    """The risk of one command and the reasons, from the tables above."""
    argv = _argv(command)
    if not argv:
        return Risk.CRITICAL, ["empty command"]
    reasons: list[str] = []
    risk = Risk.MEDIUM  # unknown verbs are not low risk
    words = [a for a in argv[1:] if not a.startswith("-")]
    for key, r in ROUTINE_VERBS.items():
        if tuple(words[: len(key)]) == key:
            risk = r
            reasons.append(f"{' '.join(key)} is routine ({r.value})")
            break
    if words and words[0] in DESTRUCTIVE_VERBS:
        risk = max(risk, DESTRUCTIVE_VERBS[words[0]], key=lambda x: x.rank)
        reasons.append(f"'{words[0]}' is destructive or invasive")
    for arg in argv[1:]:
        for flag, r in DANGEROUS_FLAGS.items():
            if arg == flag or arg.startswith(flag + "="):
                risk = max(risk, r, key=lambda x: x.rank)
                reasons.append(f"flag {flag}")
        if re.fullmatch(r"--replicas=0+", arg):
            risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
            reasons.append("scales to zero")
        if any(w in arg.lower() for w in SECRET_WORDS):
            risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
            reasons.append(f"touches credentials ({arg})")
        if re.match(r"https?://", arg):
            risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
            reasons.append("loads remote content")
    return risk, reasons


class DestructivePatternVoter:
    """Approves routine commands; rejects destructive or credential-touching ones."""

    name = "destructive"

    async def review(self, request: ReviewInput) -> Vote:
        worst, why = Risk.LOW, []
        for cmd in request.commands:
            risk, reasons = command_risk(cmd)
            worst = max(worst, risk, key=lambda x: x.rank)
            why += reasons
        destructive = worst >= Risk.HIGH
        worst, flags = untrusted(request, worst, why)
        if destructive:
            return Vote(self.name, Verdict.REJECT, worst,
                        "destructive: " + "; ".join(why), flags=(DESTRUCTIVE, *flags))
        if worst >= Risk.HIGH:
            return Vote(self.name, Verdict.REJECT, worst, "; ".join(why), flags=flags)
        return Vote(self.name, Verdict.APPROVE, worst,
                    "; ".join(why) or "no destructive pattern found", flags=flags)


class BlastRadiusVoter:
    """Weighs reach: production, many commands, all namespaces, kube-system, cluster scope."""

    name = "blast-radius"
    PRODUCTION = ("prd", "prod", "production")

    async def review(self, request: ReviewInput) -> Vote:
        risk = Risk.MEDIUM if request.environment in self.PRODUCTION else Risk.LOW
        why = [f"environment {request.environment}"]
        if len(request.commands) > 3:
            risk = max(risk, Risk.MEDIUM, key=lambda x: x.rank)
            why.append(f"{len(request.commands)} commands")
        for cmd in request.commands:
            argv = _argv(cmd)
            if "-A" in argv or "--all-namespaces" in argv:
                risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
                why.append("all namespaces")
            if "kube-system" in argv or any(a.endswith("=kube-system") for a in argv):
                risk = max(risk, Risk.CRITICAL, key=lambda x: x.rank)
                why.append("kube-system")
            if any(a.split("/")[0] in ("nodes", "node", "namespace", "namespaces", "crd",
                                       "clusterrole", "clusterrolebinding") for a in argv):
                risk = max(risk, Risk.HIGH, key=lambda x: x.rank)
                why.append("cluster-scoped resource")
        risk, flags = untrusted(request, risk, why)
        verdict = Verdict.REJECT if risk >= Risk.HIGH else Verdict.APPROVE
        return Vote(self.name, verdict, risk, ", ".join(why), flags=flags)


class AllowlistVoter:
    """Rejects any command outside the environment's allowlist (checked again at grant time)."""

    name = "allowlist"

    def __init__(self, is_allowed: Callable[[str], bool]) -> None:
        self._is_allowed = is_allowed

    async def review(self, request: ReviewInput) -> Vote:
        outside = [c for c in request.commands if not self._is_allowed(c)]
        if outside:
            return Vote(self.name, Verdict.REJECT, Risk.HIGH,
                        f"{len(outside)} of {len(request.commands)} commands are outside the "
                        "environment's allowlist")
        return Vote(self.name, Verdict.APPROVE, Risk.LOW, "every command is allowlisted")


BUILTIN = ("destructive", "blast-radius", "allowlist", "prompt-injection")


def builtin_voter(name: str, is_allowed: Callable[[str], bool]) -> Voter:
    """One built-in voter by name."""
    if name == "destructive":
        return DestructivePatternVoter()
    if name == "blast-radius":
        return BlastRadiusVoter()
    if name == "allowlist":
        return AllowlistVoter(is_allowed)
    if name == "prompt-injection":
        return PromptInjectionVoter()
    raise ConfigError(f"unknown built-in voter {name!r}; choose one of {', '.join(BUILTIN)}")


def builtin_panel(is_allowed: Callable[[str], bool],
                  names: Sequence[str] = BUILTIN) -> list[Voter]:
    """The built-in voters, in order."""
    return [builtin_voter(n, is_allowed) for n in names]


__all__ = [
    "BUILTIN",
    "UNTRUSTED_INPUT",
    "AllowlistVoter",
    "BlastRadiusVoter",
    "DestructivePatternVoter",
    "builtin_panel",
    "builtin_voter",
    "command_risk",
    "untrusted",
]

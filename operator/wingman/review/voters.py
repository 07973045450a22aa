"""Built-in deterministic voters: the panel works offline, and every review is reproducible.

- ``destructive``: reads each command's argv for destructive verbs and flags.
- ``blast-radius``: weighs the environment, the number of commands and their reach.
- ``allowlist``: rejects any command the environment's allowlist does not cover.
- ``prompt-injection``: rejects requests whose text tries to instruct the reviewers.

``voters_from_config`` builds a panel's voters from the environment policy's
``panel.voters`` specs: built-in voters by name, and LLM voters (``type: openai`` for any
OpenAI-compatible endpoint, ``type: anthropic``; see ``wingman.llm``) whose API keys come from
the Secret named by ``operator.votersSecret``. Every bad spec is a ``ConfigError`` naming the
field and what to do; no message ever contains a key.

The request text is untrusted data: voters only match it against fixed tables, never act on it.
The tables are documented where they are defined.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wingman.consensus import (
    DESTRUCTIVE,
    PROMPT_INJECTION,
    ReviewInput,
    Risk,
    Verdict,
    Vote,
    Voter,
)
from wingman.errors import ConfigError

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

INJECTION_PATTERNS = [re.compile(p, re.IGNORECASE) for p in (
    r"ignore (all |any |the )?(previous|prior|above|earlier) (instructions|rules|prompts?)",
    r"disregard (all |any |the )?(previous|prior|above|your) ",
    r"\byou are now\b", r"\bact as\b", r"\bpretend (to be|you)\b",
    r"\b(approve|accept) (this|the|my) (request|command)",
    r"\b(must|should|always) (be )?approve",
    r"\bverdict\b\s*[:=]", r'"verdict"', r"\bsystem\s*(prompt|message)?\s*:",
    r"\b(assistant|user|system)\s*:", r"<\s*/?\s*(system|instructions?|prompt|im_start|im_end)",
    r"\[/?INST\]", r"\bjailbreak\b", r"\bdeveloper mode\b", r"\boverride\b.*\b(policy|rules)\b",
    r"\brisk\b\s*[:=]\s*\"?low",
    r"[A-Za-z0-9+/]{80,}={0,2}",  # a long base64 blob smuggling instructions
)]


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
        if worst >= Risk.HIGH:
            return Vote(self.name, Verdict.REJECT, worst,
                        "destructive: " + "; ".join(why), flags=(DESTRUCTIVE,))
        return Vote(self.name, Verdict.APPROVE, worst,
                    "; ".join(why) or "no destructive pattern found")


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
        verdict = Verdict.REJECT if risk >= Risk.HIGH else Verdict.APPROVE
        return Vote(self.name, verdict, risk, ", ".join(why))


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


def injection_findings(request: ReviewInput) -> list[str]:
    """Which injection patterns the request's text matches (empty when clean)."""
    texts = [request.instruction, request.justification or "", *request.commands]
    hits = []
    for pattern in INJECTION_PATTERNS:
        if any(pattern.search(t) for t in texts):
            hits.append(pattern.pattern[:40])
    return hits


class PromptInjectionVoter:
    """Rejects and flags requests whose text tries to instruct the reviewers."""

    name = "prompt-injection"

    async def review(self, request: ReviewInput) -> Vote:
        hits = injection_findings(request)
        if hits:
            return Vote(self.name, Verdict.REJECT, Risk.HIGH,
                        f"request text tries to instruct reviewers ({len(hits)} patterns)",
                        flags=(PROMPT_INJECTION,))
        return Vote(self.name, Verdict.APPROVE, Risk.LOW, "no instruction-like text found")


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


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BUILTIN_FIELDS = ("type", "name")
_LLM_FIELDS = ("type", "name", "model", "baseURL", "apiKeySecretKey", "timeoutSeconds",
               "maxConcurrency", "maxTokens")
VOTER_TYPES = ("builtin", "openai", "anthropic")


def _check_fields(spec: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in spec:
        if key in allowed:
            continue
        hint = next((a for a in allowed if str(key).lower() == a.lower()), None)
        advice = f"did you mean {hint!r}?" if hint else f"allowed: {', '.join(allowed)}"
        raise ConfigError(f"{where}: unknown field {str(key)[:60]!r} for a voter of type "
                          f"{spec.get('type')!r}; {advice}")


def _number(spec: Mapping[str, Any], key: str, where: str, default: float, *,
            integer: bool, low: float, high: float) -> Any:
    value = spec.get(key, default)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high \
            or (not integer and value <= 0):
        what = "an integer" if integer else "a positive number"
        raise ConfigError(f"{where}.{key} must be {what} from {low:g} to {high:g}, "
                          f"got {value!r}")
    return value


def voters_from_config(specs: Sequence[Mapping[str, Any]], *, secrets: Mapping[str, str],
                       is_allowed: Callable[[str], bool]) -> list[Voter]:
    """The voters of ``policy.panel.voters``, in order.

    ``secrets`` is the data of the Secret named by ``operator.votersSecret`` (key -> API key);
    ``is_allowed`` is the environment's allowlist check, for the built-in ``allowlist`` voter.
    """
    from wingman import llm  # llm imports this module's injection detector

    if isinstance(specs, str | bytes) or not isinstance(specs, Sequence) or not specs:
        raise ConfigError("policy.panel.voters must be a non-empty list of voter specs, "
                          "e.g. [{type: builtin, name: destructive}]")
    voters: list[Voter] = []
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        where = f"policy.panel.voters[{i}]"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where} must be a mapping with at least type and name")
        kind, name = spec.get("type"), spec.get("name")
        if kind not in VOTER_TYPES:
            raise ConfigError(f"{where}.type must be one of {', '.join(VOTER_TYPES)}, "
                              f"got {kind!r}")
        if not isinstance(name, str) or not _NAME.match(name) or len(name) > 63:
            raise ConfigError(f"{where}.name must be a lowercase DNS label (a-z, 0-9, '-', "
                              f"at most 63 characters), got {name!r}")
        if name in seen:
            raise ConfigError(f"{where}.name {name!r} is used by another voter; voter names "
                              "must be unique on a panel")
        seen.add(name)
        where = f"{where} ({name})"
        if kind == "builtin":
            _check_fields(spec, _BUILTIN_FIELDS, where)
            if name not in BUILTIN:
                raise ConfigError(f"{where}: unknown built-in voter {name!r}; choose one of "
                                  f"{', '.join(BUILTIN)} or set type openai or anthropic")
            voters.append(builtin_voter(name, is_allowed))
            continue
        _check_fields(spec, _LLM_FIELDS, where)
        model = spec.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"{where}.model is required: the model name the endpoint "
                              "serves, e.g. gpt-4o-mini or claude-sonnet-4-5")
        default_url = (llm.OPENAI_DEFAULT_BASE_URL if kind == "openai"
                       else llm.ANTHROPIC_DEFAULT_BASE_URL)
        base_url = llm.validate_base_url(spec.get("baseURL", default_url), f"{where}.baseURL")
        secret_key = spec.get("apiKeySecretKey")
        if not isinstance(secret_key, str) or not secret_key:
            raise ConfigError(f"{where}.apiKeySecretKey is required: the key, in the Secret "
                              "named by operator.votersSecret, that holds this voter's API key")
        api_key = secrets.get(secret_key)
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigError(
                f"{where}: the Secret named by operator.votersSecret (WINGMAN_VOTERS_SECRET) "
                f"has no non-empty key {secret_key!r}; add the API key under that key, or set "
                "operator.votersSecret if it is unset")
        timeout = _number(spec, "timeoutSeconds", where, llm.DEFAULT_TIMEOUT_SECONDS,
                          integer=False, low=0.0, high=llm.MAX_TIMEOUT_SECONDS)
        concurrency = _number(spec, "maxConcurrency", where, llm.DEFAULT_MAX_CONCURRENCY,
                              integer=True, low=1, high=llm.MAX_CONCURRENCY)
        max_tokens = None if spec.get("maxTokens") is None else _number(
            spec, "maxTokens", where, llm.DEFAULT_MAX_TOKENS, integer=True, low=1,
            high=llm.MAX_TOKENS)
        cls = llm.OpenAIVoter if kind == "openai" else llm.AnthropicVoter
        voters.append(cls(name, model=model, api_key=api_key, base_url=base_url,
                          timeout_seconds=float(timeout), max_concurrency=int(concurrency),
                          max_tokens=max_tokens))
    return voters


__all__ = [
    "BUILTIN",
    "VOTER_TYPES",
    "AllowlistVoter",
    "BlastRadiusVoter",
    "DestructivePatternVoter",
    "PromptInjectionVoter",
    "builtin_panel",
    "builtin_voter",
    "command_risk",
    "injection_findings",
    "voters_from_config",
]

"""A review panel from the environment policy's ``panel.voters`` specs.

Built-in voters by name, and LLM voters (``type: openai`` for any OpenAI-compatible endpoint,
``type: anthropic``; see ``wingman.review.llm``) whose API keys come from the Secret named by
``operator.votersSecret``. Every bad spec is a ``ConfigError`` naming the field and what to do;
no message ever contains a key. Two LLM voters of one model are refused (``check_independent``):
a panel counts independent reviewers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wingman.errors import ConfigError
from wingman.review import llm
from wingman.review.consensus import Voter
from wingman.review.voters import BUILTIN, Namespaces, builtin_voter

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_BUILTIN_FIELDS = ("type", "name")
_LLM_FIELDS = ("type", "name", "model", "baseURL", "apiKeySecretKey", "timeoutSeconds",
               "maxConcurrency", "maxTokens", "allowInsecureHTTP")
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


#: A model ID as endpoints spell them (gpt-4o-mini, meta-llama/Llama-3.1-8B-Instruct,
#: llama3.1:8b, claude-3-5-sonnet@20240620): printable ASCII, no spaces. Nothing else names a
#: model, and look-alike letters or invisible characters would let one model pass as two.
_MODEL = re.compile(r"[!-~]{1,253}", re.ASCII)
#: What makes another name for the same model: a date snapshot or a "latest" alias at the end.
_MODEL_ALIAS = re.compile(r"([-@]([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8})|[-:]latest)$")


def _model(spec: Mapping[str, Any], where: str) -> str:
    """The voter's model, stripped; ConfigError unless it is a model ID."""
    model = spec.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"{where}.model is required: the model name the endpoint "
                          "serves, e.g. gpt-4o-mini or claude-sonnet-4-5")
    if not _MODEL.fullmatch(model.strip()):
        raise ConfigError(f"{where}.model must be the model's ID as the endpoint names it: "
                          "1 to 253 printable ASCII characters without spaces, e.g. "
                          "gpt-4o-mini or claude-sonnet-4-5")
    return model.strip()


def model_identity(model: str) -> str:
    """The model ``model`` names, as the independence check compares it: lowercase, without a
    provider or organisation prefix (up to the last ``/``: ``openai/gpt-4o`` is ``gpt-4o``)
    and without a date snapshot or ``latest`` alias at the end (``gpt-4o-2024-08-06``,
    ``claude-sonnet-4-5-20250929``, ``claude-3-5-sonnet@20240620``, ``llama3:latest``)."""
    name = model.strip().lower()
    base = name.rsplit("/", 1)[-1] or name
    return _MODEL_ALIAS.sub("", base) or base


def check_independent(specs: Sequence[Any]) -> None:
    """ConfigError when two LLM voters of a panel ask the same model.

    A panel counts independent reviewers: two voters of one model (through one endpoint or two,
    of one provider type or both) share its blind spots and any prompt injection that fools it,
    so counting them as two votes would let one model's opinion reach a threshold meant for
    several. Models are compared by ``model_identity``; other aliases (a deployment name, a
    cloud's own model ID) are not recognised."""
    seen: dict[str, tuple[int, str, str]] = {}
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or spec.get("type") not in ("openai", "anthropic"):
            continue
        model = _model(spec, f"policy.panel.voters[{i}] ({spec.get('name')})")
        key = model_identity(model)
        if key in seen:
            j, other, other_model = seen[key]
            written = "" if model == other_model else \
                f" (written {model[:100]!r} and {other_model[:100]!r})"
            raise ConfigError(
                f"policy.panel.voters[{i}] ({spec.get('name')}) and policy.panel.voters[{j}] "
                f"({other}) both ask model {key[:100]!r}{written}: a panel counts independent "
                "reviewers, and two voters of one model would count its opinion twice; give "
                "one of them a different model, or remove it (and lower threshold and quorum)")
        seen[key] = (i, str(spec.get("name")), model)


def voters_from_config(specs: Sequence[Mapping[str, Any]], *, secrets: Mapping[str, str],
                       is_allowed: Callable[[str], bool],
                       namespaces: Namespaces | None = None) -> list[Voter]:
    """The voters of ``policy.panel.voters``, in order.

    ``secrets`` is the data of the Secret named by ``operator.votersSecret`` (key -> API key);
    ``is_allowed`` is the environment's allowlist check, for the built-in ``allowlist`` voter;
    ``namespaces``, the release namespace and the gateway's targets, for the built-in
    ``destructive`` and ``blast-radius`` voters.
    """
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
        if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 63:
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
            voters.append(builtin_voter(name, is_allowed, namespaces))
            continue
        _check_fields(spec, _LLM_FIELDS, where)
        model = _model(spec, where)
        default_url = (llm.OPENAI_DEFAULT_BASE_URL if kind == "openai"
                       else llm.ANTHROPIC_DEFAULT_BASE_URL)
        insecure = spec.get("allowInsecureHTTP", False)
        if not isinstance(insecure, bool):
            raise ConfigError(f"{where}.allowInsecureHTTP must be true or false, got "
                              f"{insecure!r}")
        base_url = llm.validate_base_url(spec.get("baseURL", default_url), f"{where}.baseURL",
                                         allow_insecure_http=insecure)
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
                          max_tokens=max_tokens, allow_insecure_http=insecure))
    check_independent(specs)
    return voters


__all__ = ["VOTER_TYPES", "check_independent", "model_identity", "voters_from_config"]

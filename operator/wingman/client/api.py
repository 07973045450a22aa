"""The typed client API: what a worker or an approver can do, as the caller, and its status.

``WingmanClient`` wraps one authenticated connection (``wingman.client.connect``) and one
namespace (the release's). Every operation answers with a ``status.Status`` (the protocol) or
raises a ``wingman.errors.ClientError`` subclass (``NotFound``, ``Forbidden``, ``Invalid``,
``Unavailable``) with the API server's own message. Reads never block; ``wait_*`` polls for at
most the time it is given and returns the state it found then. The client never reads a
Secret, never impersonates unless asked, and so never holds more than the caller's rights:
RBAC and the admission policies decide what the caller may do.

The CLI (``wingman.cli``), the MCP server (``wingman.mcp``) and the chat component all use it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from wingman import API_VERSION
from wingman.client import shape
from wingman.client import status as st
from wingman.client.connect import Connection
from wingman.errors import (
    ClientError,
    ClusterError,
    ConfigError,
    Forbidden,
    Invalid,
    NotFound,
    TooLarge,
    Unavailable,
    WingmanError,
)
from wingman.kube import (
    APPROVALS,
    CONFIGMAPS,
    GRANTS,
    JSON_PATCH,
    AnswerTooLarge,
    ApiError,
    Kube,
    ListTooLarge,
    Resource,
    UnusableAnswer,
)
from wingman.logs import looks_like_token
from wingman.model import approvals as rules
from wingman.model import commandline, limits, names, text
from wingman.review.policy import EnvironmentPolicy

POLICY_CONFIGMAP = "wingman-policy"
#: Bounds of the CRD's spec.source (crds/approvalrequests.wingman.dev.yaml).
SOURCE_LIMITS = limits.SOURCE
#: A Kubernetes object name (an RFC 1123 subdomain); ExecutionGrants' are at most 63 characters.
_NAME = names.OBJECT_NAME
_NAME_LIMITS = {"ApprovalRequest": 253, "ExecutionGrant": 63}
#: An environment's name (the CRD's ``spec.environment``).
_ENVIRONMENT = re.compile(limits.ENVIRONMENT_PATTERN)
SELF_SUBJECT_ACCESS_REVIEWS = Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews")

Tick = Callable[[st.Status, float], None]


@dataclass(frozen=True)
class Source:
    """Provenance of a request (``spec.source``): what led the agent to ask.

    ``reference``: the task or ticket; ``agent`` and ``model``: who asked; ``excerpt``: the
    input that led to the action; ``untrusted_input``: whether that input came from content the
    agent read and does not trust (a web page, an issue comment, an e-mail). Reviewers see it;
    the built-in voters treat untrusted input as a reason for more caution.
    """

    reference: str | None = None
    agent: str | None = None
    model: str | None = None
    excerpt: str | None = None
    untrusted_input: bool | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Source | None:
        """From the MCP tool's or a caller's mapping (snake_case or the CRD's camelCase)."""
        if not data:
            return None
        known = {"reference", "agent", "model", "excerpt", "untrusted_input", "untrustedInput",
                 "input_trust", "inputTrust"}
        unknown = sorted(k if isinstance(k, str) else _shown(k) for k in set(data) - known)
        if unknown:
            raise Invalid(f"source has unknown keys {', '.join(unknown)}; it takes reference, "
                          "agent, model, excerpt and untrusted_input")
        untrusted = _one_spelling(data, "untrusted_input", "untrustedInput")
        trust = _one_spelling(data, "input_trust", "inputTrust")
        if untrusted is not None and not isinstance(untrusted, bool):
            raise Invalid(f"source.untrusted_input must be true or false, got {untrusted!r}")
        if trust is not None:
            if trust not in ("Trusted", "Untrusted"):
                raise Invalid(f"source.input_trust must be Trusted or Untrusted, got {trust!r}")
            if untrusted is not None and untrusted != (trust == "Untrusted"):
                raise Invalid(f"source gives untrusted_input {str(untrusted).lower()} and "
                              f"input_trust {trust}, which disagree: give one of them")
            untrusted = trust == "Untrusted"
        values: dict[str, Any] = {}
        for key, limit in SOURCE_LIMITS.items():
            value = data.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise Invalid(f"source.{key} must be text, got {type(value).__name__}")
            long = limits.too_long(f"source.{key}", value, limit,
                                   "shorten it (quote the part of the input that matters)")
            if long:
                raise Invalid(long, reason="TooLong")
            why = text.refusal(f"source.{key}", value, one_line=key != "excerpt")
            if why:
                raise Invalid(why, reason="ForbiddenCharacter")
            values[key] = value
        return cls(untrusted_input=untrusted, **values)

    def to_spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in SOURCE_LIMITS
                               if getattr(self, k) is not None}
        if self.untrusted_input is not None:
            out["inputTrust"] = "Untrusted" if self.untrusted_input else "Trusted"
        return out


def _one_spelling(data: Mapping[str, Any], snake: str, camel: str) -> Any:
    """The value of a field ``data`` may spell two ways (``snake`` and the CRD's ``camel``),
    None when it gives neither. Both given with different values (``null`` and ``true`` too)
    is refused: which one was meant cannot be told, and letting one win silently could drop
    the untrusted-input flag."""
    if snake in data and camel in data and data[snake] != data[camel]:
        raise Invalid(f"source gives both {snake} ({_shown(data[snake])}) and {camel} "
                      f"({_shown(data[camel])}), which differ: give one of them")
    return data[snake] if snake in data else data.get(camel)


def _shown(value: Any) -> str:
    """A value as an error message quotes it: JSON's spelling, cut short."""
    try:
        said = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        said = type(value).__name__
    return said if len(said) <= 40 else said[:37] + "..."


def build_request(
    *, name: str, namespace: str, requester: str, environment: str, instruction: str,
    commands: Sequence[str], justification: str | None = None,
    expires_after_seconds: int | None = None, source: Source | None = None,
    rollbacks: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ApprovalRequest manifest a worker submits; ``rollbacks`` maps a command to the
    command that undoes it (reviewed together with it)."""
    spec: dict[str, Any] = {"requester": requester, "environment": environment,
                            "instruction": instruction, "commands": list(commands)}
    if rollbacks:
        spec["rollbacks"] = [{"command": c, "rollback": r} for c, r in rollbacks.items()]
    if justification:
        spec["justification"] = justification
    if expires_after_seconds is not None:
        spec["expiresAfterSeconds"] = expires_after_seconds
    if source is not None and source.to_spec():
        spec["source"] = source.to_spec()
    return {"apiVersion": API_VERSION, "kind": "ApprovalRequest",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def build_rollback(forward: Mapping[str, Any], *, rollback: str, requester: str,
                   ttl_seconds: int | None = None) -> dict[str, Any]:
    """The ExecutionGrant for the reviewed rollback of the command ``forward`` ran:
    ``forward`` is that ExecutionGrant as the API server answers it (``WingmanClient.rollback``
    reads it); anything else is refused (Invalid) naming what is missing."""
    why = shape.problem(forward, "ExecutionGrant", ("namespace",))
    if why is None and not _ref(forward):
        why = "spec.approvalRef.name is missing or empty"
    if why is not None:
        raise Invalid("build_rollback needs the ExecutionGrant whose command the rollback "
                      f"undoes, as the API server answers it: {why}; read it first "
                      "(WingmanClient.rollback does)")
    meta = forward["metadata"]
    spec: dict[str, Any] = {"approvalRef": {"name": _ref(forward)}, "command": rollback,
                            "requester": requester, "rollbackOf": {"name": meta["name"]}}
    if ttl_seconds is not None:
        spec["ttlSeconds"] = ttl_seconds
    return {"apiVersion": API_VERSION, "kind": "ExecutionGrant",
            "metadata": {"name": names.rollback_grant_name(str(meta["name"])),
                         "namespace": meta["namespace"]},
            "spec": spec}


def build_grant(*, request_name: str, namespace: str, command: str, requester: str,
                ttl_seconds: int | None = None) -> dict[str, Any]:
    """The ExecutionGrant manifest for one approved command, in the request's requester's
    name (admission lets only approvers name anyone but themselves)."""
    spec: dict[str, Any] = {"approvalRef": {"name": request_name}, "command": command,
                            "requester": requester}
    if ttl_seconds is not None:
        spec["ttlSeconds"] = ttl_seconds
    return {"apiVersion": API_VERSION, "kind": "ExecutionGrant",
            "metadata": {"name": st.grant_name(request_name, command), "namespace": namespace},
            "spec": spec}


def check_tokens(spec: Mapping[str, Any]) -> None:
    """Refuse, before any call, an ApprovalRequest's ``spec`` holding token-shaped text (a JWT
    pasted in; ``wingman.logs.looks_like_token``, the audit trail's own detector): the object
    would carry it to everyone who may read requests, and the operator rejects the request
    (LooksLikeToken). Invalid, LooksLikeToken, naming the field, never quoting the text."""
    for field, value, _ in _spec_texts(spec):
        if isinstance(value, str):
            refuse_token(field, value)


def refuse_token(field: str, value: str) -> None:
    """Invalid (LooksLikeToken) when ``value``, to be written as ``field``, holds token-shaped
    text; the message names the field and never quotes the text."""
    if looks_like_token(value):
        raise Invalid(f"{field} holds what looks like a token (a JWT, eyJ... with two dots, or "
                      "its base64), which Wingman never records or passes: nothing was "
                      "written; remove it and try again", reason="LooksLikeToken")


def check_texts(spec: Mapping[str, Any]) -> None:
    """Refuse, before any call, what the CRD refuses in an ApprovalRequest's ``spec``: control
    characters, bidirectional overrides and invisible characters (``wingman.model.text``),
    naming the field."""
    for field, value, one_line in _spec_texts(spec):
        why = text.refusal(field, value, one_line=one_line) if isinstance(value, str) else None
        if why:
            raise Invalid(why, reason="ForbiddenCharacter")


def _spec_texts(spec: Mapping[str, Any]) -> list[tuple[str, object, bool]]:
    """The texts of an ApprovalRequest's ``spec``: (field, value, whether one line only)."""
    fields: list[tuple[str, object, bool]] = [
        ("spec.requester", spec.get("requester"), True),
        ("spec.instruction", spec.get("instruction"), False),
        ("spec.justification", spec.get("justification"), False)]
    fields += [(f"spec.commands[{i}]", c, True) for i, c in enumerate(spec.get("commands") or [])]
    for i, entry in enumerate(spec.get("rollbacks") or []):
        fields += [(f"spec.rollbacks[{i}].{key}", entry.get(key), True)
                   for key in ("command", "rollback")]
    source = spec.get("source") or {}
    fields += [(f"spec.source.{key}", source.get(key), key != "excerpt") for key in SOURCE_LIMITS]
    return fields


def check_sizes(*, instruction: str | None = None, justification: str | None = None,
                commands: Sequence[str] = (), rollbacks: Mapping[str, str] | None = None,
                expires_after_seconds: int | None = None) -> None:
    """Refuse, before any call, what the CRD's schema bounds in an ApprovalRequest's ``spec``
    (``wingman.model.limits``): each text's length as the API server counts it (code points),
    the number of commands, the request's lifetime; and each command's and rollback's bytes of
    UTF-8, which the operator's scope check bounds (its rule: ``wingman.model.commandline``);
    naming the field, the limit and what to do (Invalid, TooLong or OutOfRange)."""
    if len(commands) > limits.COMMANDS:
        raise Invalid(f"{len(commands)} commands; a request holds at most {limits.COMMANDS}: "
                      "split the work into several requests", reason="TooLong")
    found = [
        limits.too_long("instruction", instruction, limits.INSTRUCTION,
                        "shorten it (say what and why; the commands say how)"),
        limits.too_long("justification", justification, limits.JUSTIFICATION,
                        "shorten it")]
    found += [limits.too_long(f"commands[{i}]", c, limits.COMMAND,
                              "a longer command line cannot be approved: split the work "
                              "into several commands") for i, c in enumerate(commands)]
    listed = list(commands)
    found += [limits.too_long(
        f"the rollback of commands[{listed.index(c) if c in listed else '?'}]", r,
        limits.ROLLBACK, "shorten it: a longer command line cannot be approved")
        for c, r in (rollbacks or {}).items()]
    # the characters the CRD counts fit, yet the operator's scope check counts bytes of UTF-8
    found += [commandline.too_long(f"commands[{i}]", c) for i, c in enumerate(commands)]
    found += [commandline.too_long(
        f"the rollback of commands[{listed.index(c) if c in listed else '?'}]", r)
        for c, r in (rollbacks or {}).items()]
    for why in found:
        if why:
            raise Invalid(why, reason="TooLong")
    why = limits.out_of_range("expires_after_seconds", expires_after_seconds,
                              limits.EXPIRES_AFTER_SECONDS,
                              "give a lifetime in that range, or leave it out for the policy's")
    if why:
        raise Invalid(why, reason="OutOfRange")


def check_plain_ascii(commands: Sequence[str], rollbacks: Mapping[str, str] | None) -> None:
    """Refuse, before any call, a command or a rollback holding a character that is not plain
    ASCII (Invalid, NonAsciiCharacter): the CRD takes it (what it refuses, ``check_texts``
    names first), yet the operator's scope check runs only plain ASCII (its rule, and words:
    ``wingman.model.commandline``), so such a request would be reviewed and could never run."""
    listed = list(commands)
    named = [(f"commands[{i}]", c) for i, c in enumerate(commands)] + [
        (f"the rollback of commands[{listed.index(c) if c in listed else '?'}]", r)
        for c, r in (rollbacks or {}).items()]
    for what, value in named:
        found = commandline.not_plain(what, value)
        if found is not None:
            reason, why = found
            raise Invalid(why, reason=reason)


def check_ttl(ttl_seconds: int | None) -> None:
    """Refuse, before any call, a grant's token lifetime the CRD's schema refuses."""
    why = limits.out_of_range("ttl_seconds", ttl_seconds, limits.TTL_SECONDS,
                              "give a lifetime in that range, or leave it out for the "
                              "policy's tokenTTLSeconds")
    if why:
        raise Invalid(why, reason="OutOfRange")


def check_reason(reason: str) -> None:
    """Refuse, before any call, a decision's reason the CRD's schema refuses: too long, or
    holding characters it refuses; and one holding token-shaped text (LooksLikeToken): in
    ``spec.decisions`` everyone who may read requests would read it, and the operator would
    reject the request for it."""
    long = limits.too_long("the reason", reason, limits.REASON, "shorten it")
    if long:
        raise Invalid(long, reason="TooLong")
    why = text.refusal("the reason", reason, one_line=False)
    if why:
        raise Invalid(why, reason="ForbiddenCharacter")
    refuse_token("the reason", reason)


def check_name(kind: str, name: str) -> str:
    """``name`` if it can name a ``kind``; else Invalid, before any call: an empty name or "."
    would read the whole collection, ".." or one with "/" another resource, and one the API
    server refuses (``a..b``, ``a.-b``) would be refused only after the call."""
    limit = _NAME_LIMITS[kind]
    if not (len(name) <= limit and _NAME.fullmatch(name)):
        raise Invalid(f"{shown(name)} is not a valid {kind} name: a name is 1 to {limit} "
                      "characters, lowercase letters, digits, '-' and '.', in parts joined by "
                      "single '.', each starting and ending with a letter or digit (an RFC "
                      "1123 subdomain; list shows the names there are)")
    return name


def shown(value: str) -> str:
    """A refused value as an answer quotes it: escaped (``repr``), and when longer than 80
    characters its first 60 and its length, so a huge or hostile value is never echoed whole."""
    return repr(value) if len(value) <= 80 else f"{value[:60]!r}... ({len(value)} characters)"


def client_error(exc: WingmanError, what: str) -> ClientError:
    """The ClientError for an API failure while doing ``what`` (keeps the server's message)."""
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, ApiError):
        text = f"{what}: {exc.message}"
        if exc.status == 404:
            return NotFound(text)
        if exc.status == 403 or exc.reason == "Forbidden":
            return Forbidden(text)
        if exc.status in (400, 409, 422):
            return Invalid(text, reason=exc.reason or "Invalid")
        if exc.status == 413:
            return Invalid(f"{text}; shorten the texts (the instruction and the justification "
                           f"hold at most {limits.INSTRUCTION:,} and {limits.JUSTIFICATION:,} "
                           "characters)", reason=exc.reason or "TooLarge")
        if exc.status == 401:
            return Unavailable(f"{text}. The API server did not accept your credentials: they "
                               "expired or are wrong; renew them (log in again, or fix the "
                               "kubeconfig's user; in a pod, its ServiceAccount token)",
                               reason="Unauthorized")
        if exc.status in (429, 503) and exc.retry_after is not None:  # throttled, or busy
            return Unavailable(f"{text}; the API server is busy: try again in "
                               f"{exc.retry_after:g} s, as it asked")
        return Unavailable(text)
    if isinstance(exc, AnswerTooLarge | ListTooLarge):  # asking again gets the same
        return TooLarge(f"{what}: {exc.message}", reason=exc.reason)
    if exc.reason == "Unreachable":  # the HTTP library's error names no cause
        if "certificate verify failed" in exc.message:
            hint = ("the kubeconfig's certificate authority (certificate-authority-data) did "
                    "not sign the server's certificate: fix it, or the server address")
        elif "PEM lib" in exc.message:
            hint = ("the kubeconfig's client certificate or key (client-certificate-data, "
                    "client-key-data) is not a usable PEM pair: fix or renew them")
        elif "[SSL" in exc.message:
            hint = ("TLS with the server failed: check the kubeconfig's certificates, and that "
                    "the address is the API server's HTTPS port")
        else:
            hint = ("is the API server running, and does the kubeconfig (or the pod's "
                    "environment) name the right address?")
        return Unavailable(f"{what}: {exc.message}; {hint}", reason="Unreachable")
    # its own reason (UnusableAnswer, Expired, NoCredentials...): the error line and the
    # protocol's answer say what failed, not only that something did
    return Unavailable(f"{what}: {exc.message}",
                       reason=exc.reason if isinstance(exc, ClusterError) else None)


def error_answer(exc: WingmanError, *, kind: str | None = None, name: str | None = None,
                 namespace: str | None = None, hints: st.Hints = st.TOOLS) -> st.Status:
    """The protocol's answer for a call that failed: ``not_found``, ``forbidden``, ``invalid``
    (the input or the configuration), ``too_large`` or ``unavailable``, with the message and
    what to do."""
    state = st.State.UNAVAILABLE
    if isinstance(exc, TooLarge):
        state = st.State.TOO_LARGE
    elif isinstance(exc, NotFound):
        state = st.State.NOT_FOUND
    elif isinstance(exc, Forbidden):
        state = st.State.FORBIDDEN
    elif isinstance(exc, Invalid | ConfigError):
        state = st.State.INVALID
    return st.error(state, str(exc), reason=exc.reason, kind=kind, name=name,
                    namespace=namespace, hints=hints)


@dataclass(frozen=True)
class PolicyView:
    """The environment's policy as an agent needs it to shape requests that pass."""

    environment: str
    auto_approve: bool
    auto_approve_max_risk: str
    required_approvals: int
    workers_may_grant: bool
    request_ttl_seconds: int
    token_ttl_seconds: int
    allowlist: tuple[str, ...]
    voters: tuple[str, ...]

    @classmethod
    def of(cls, policy: EnvironmentPolicy) -> PolicyView:
        return cls(policy.name, policy.auto_approve, policy.auto_approve_max_risk.value,
                   policy.required_approvals, policy.workers_may_grant,
                   policy.request_ttl_seconds, policy.token_ttl_seconds, policy.allowlist,
                   tuple(str(v.get("name", "")) for v in policy.panel.voters))

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "auto_approve": self.auto_approve,
            "auto_approve_max_risk": self.auto_approve_max_risk,
            "required_approvals": self.required_approvals,
            "workers_may_grant": self.workers_may_grant,
            "request_ttl_seconds": self.request_ttl_seconds,
            "token_ttl_seconds": self.token_ttl_seconds,
            "allowlist": list(self.allowlist),
            "voters": list(self.voters),
            "explanation": (
                "A command can ever run only if it matches one of the allowlist patterns "
                "({name}: a Kubernetes name, {int:a..b}: an integer in range; everything else "
                "literally). "
                + (f"Requests are approved without a human when the panel approves and "
                   f"every voter voted (none failed or abstained), every command and rollback "
                   f"matches the allowlist (otherwise a human decides, whatever the risk), no "
                   f"voter flags the request as destructive or as a prompt injection, the "
                   f"preview shows a clean change for every command, and the aggregated risk "
                   f"is at most {self.auto_approve_max_risk}; otherwise "
                   if self.auto_approve else "Every request needs ")
                + f"{self.required_approvals} human approval(s). "
                + ("You may start the execution of your own approved commands."
                   if self.workers_may_grant else
                   "Only an approver may start the execution of an approved command.")
                + " Text that tries to instruct the reviewers is rejected outright; input "
                  "marked untrusted raises the reviewers' caution."),
        }


class WingmanClient:
    """Wingman operations as the connected caller (see the module docstring)."""

    def __init__(self, connection: Connection, *, hints: st.Hints = st.TOOLS,
                 max_output: int = st.DEFAULT_MAX_OUTPUT, poll_seconds: float = 1.0,
                 clock: Callable[[], dt.datetime] | None = None,
                 identity_seconds: float = 0.0) -> None:
        self.kube: Kube = connection.kube
        self.namespace = connection.namespace
        self.origin = connection.origin
        self.hints = hints
        self.max_output = max_output
        self.poll_seconds = poll_seconds
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._policy: PolicyView | None = None
        self.identity_seconds = identity_seconds
        #: (user, the credential's digest it was asked with, until: time.monotonic())
        self._identity: tuple[str, str, float] | None = None

    def close(self) -> None:
        self.kube.close()

    def __enter__(self) -> WingmanClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WingmanError as exc:
            raise client_error(exc, what) from None

    def _object(self, what: str, kind: str, fn: Callable[..., Any], *args: Any,
                **kwargs: Any) -> Any:
        """``fn``'s answer (a ``kind``, or None) checked for the shape the client relies on
        (``shape.checked``: else ``UnusableAnswer``); ClientError as ``_call``'s."""
        def read() -> Any:
            obj = fn(*args, **kwargs)
            return None if obj is None else shape.checked(obj, kind)
        return self._call(what, read)

    def now(self) -> dt.datetime:
        return self._clock()

    def whoami(self) -> str:
        """The caller's user name as the API server authenticates it (SelfSubjectReview).

        Asked at each call unless ``identity_seconds`` (a long-running process, as the MCP
        server) keeps an answer that long, and only for as long as the credential calls are
        made with stays the one the review was made with (``Kube.credential``: a token an exec
        plugin or a token file hands out after a new login may be another user's). Only an
        answer is kept, so a lookup that fails raises (``Unavailable``...) every time until
        one succeeds; an answer whose credential changed while it was asked is not kept."""
        kept = self._identity
        credential = self.kube.credential() if self.identity_seconds > 0 else ""
        if kept is not None and kept[1] == credential and time.monotonic() < kept[2]:
            return kept[0]
        since = time.monotonic()
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        resp = self._call("asking the API server who you are (SelfSubjectReview)",
                          self.kube.request, "POST",
                          "/apis/authentication.k8s.io/v1/selfsubjectreviews", body)
        status = resp.get("status")
        info = status.get("userInfo") if isinstance(status, Mapping) else None
        user = info.get("username") if isinstance(info, Mapping) else None
        if not user or not isinstance(user, str):
            raise Unavailable("the API server did not say who you are (SelfSubjectReview)")
        if self.identity_seconds > 0 and self.kube.credential() == credential:
            self._identity = (str(user), credential, since + self.identity_seconds)
        return str(user)

    def can(self, verb: str, resource: Resource, name: str | None = None) -> bool:
        """Whether the caller may ``verb`` ``resource`` here (SelfSubjectAccessReview)."""
        attrs: dict[str, Any] = {"namespace": self.namespace, "verb": verb,
                                 "group": resource.group, "resource": resource.plural}
        if name:
            attrs["name"] = name
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attrs}}
        resp = self._call("asking the API server what you may do (SelfSubjectAccessReview)",
                          self.kube.request, "POST",
                          "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body)
        status = resp.get("status")
        return isinstance(status, Mapping) and status.get("allowed") is True

    # -- the environment's policy -------------------------------------------------------------
    def policy(self, configmap: str = POLICY_CONFIGMAP) -> PolicyView:
        """The environment's policy (ConfigMap ``wingman-policy``, which workers may read)."""
        cm = self._call(f"reading the policy ConfigMap {self.namespace}/{configmap}",
                        self.kube.get, CONFIGMAPS, self.namespace, configmap)
        held = cm.get("data")
        text = held.get("policy.yaml", "") if isinstance(held, Mapping) else ""
        if not isinstance(text, str):
            raise client_error(UnusableAnswer(
                "the API server answered with a ConfigMap whose data.policy.yaml is no text, "
                "which no API server answers: check that the address is the API server's (not "
                "a proxy or another service) and that it is healthy"),
                f"reading the policy ConfigMap {self.namespace}/{configmap}")
        try:
            data = yaml.safe_load(text) or {}
            # the panel's timeouts are the operator's to judge: a policy of an earlier
            # release's chart, whose operator runs it, may give a voter longer
            view = PolicyView.of(EnvironmentPolicy.from_dict(data, voter_timeouts=False))
        except (yaml.YAMLError, ConfigError) as exc:
            raise Invalid(f"the policy ConfigMap {configmap} is not a valid policy: {exc}"
                          ) from None
        self._policy = view
        return view

    def _workers_may_grant(self) -> bool | None:
        try:
            return (self._policy or self.policy()).workers_may_grant
        except ClientError:
            return None

    # -- requests ---------------------------------------------------------------------------
    def create_request(
        self, *, instruction: str, commands: Sequence[str], environment: str | None = None,
        justification: str | None = None, expires_after_seconds: int | None = None,
        source: Source | None = None, name: str | None = None,
        rollbacks: Mapping[str, str] | None = None,
    ) -> st.Status:
        """Submit an ApprovalRequest in the caller's own name; answers its first state.
        ``rollbacks``: for some commands, the command that undoes it (reviewed with it)."""
        commands = [str(c) for c in commands]
        # first: the refusals below quote a command, and token-shaped text is never quoted
        check_tokens({"instruction": instruction, "justification": justification,
                      "commands": commands, "source": source.to_spec() if source else {},
                      "rollbacks": [{"command": c, "rollback": r}
                                    for c, r in (rollbacks or {}).items()]})
        for forward, undo in (rollbacks or {}).items():
            if forward not in commands:
                raise Invalid(f"a rollback is given for {shown(forward)}, which is not one of "
                              "the commands: give rollbacks only for commands of this request, "
                              "byte for byte")
            if not undo.strip():
                raise Invalid(f"the rollback given for {shown(forward)} is blank: give the "
                              "exact command line that undoes it, or leave that rollback out")
        if not commands:
            raise Invalid("commands is empty: name at least one exact command line")
        check_sizes(instruction=instruction, justification=justification, commands=commands,
                    rollbacks=rollbacks, expires_after_seconds=expires_after_seconds)
        blank = next((i for i, c in enumerate(commands) if not c.strip()), None)
        if blank is not None:
            raise Invalid(f"commands[{blank}] is blank: each command is an exact command line "
                          "to run (e.g. kubectl get pods -n apps); remove it or write it out")
        twice = next((c for i, c in enumerate(commands) if c in commands[:i]), None)
        if twice is not None:
            raise Invalid(f"{shown(twice)} is given twice: each approved command runs at most "
                          "once, so give it once (a request to run it again later is a new "
                          "request)")
        if not instruction or not instruction.strip():
            raise Invalid("instruction is empty: say what you want to achieve, for reviewers")
        if environment is not None and not _ENVIRONMENT.fullmatch(environment):
            raise Invalid(f"environment {shown(environment)} is not an environment name: 1 to "
                          f"{limits.ENVIRONMENT} lowercase letters, digits and '-', starting "
                          "with a letter (e.g. test); leave it out for the one this namespace "
                          "serves (the policy names it)")
        if name is not None:
            check_name("ApprovalRequest", name)
        check_texts({"instruction": instruction, "justification": justification,
                     "commands": commands, "source": source.to_spec() if source else {},
                     "rollbacks": [{"command": c, "rollback": r}
                                   for c, r in (rollbacks or {}).items()]})
        check_plain_ascii(commands, rollbacks)
        if environment is None:
            environment = self.policy().environment
        name = name or f"req-{uuid.uuid4().hex[:8]}"
        body = build_request(
            name=name, namespace=self.namespace, requester=self.whoami(),
            environment=environment, instruction=instruction, commands=commands,
            justification=justification, expires_after_seconds=expires_after_seconds,
            source=source, rollbacks=rollbacks)
        try:
            obj = self.kube.create(APPROVALS, self.namespace, body)
        except WingmanError as exc:
            obj = self._landed(body, exc)
        obj = self._call("creating the ApprovalRequest", shape.checked, obj, "ApprovalRequest")
        return self._request_status(obj, [])

    def _landed(self, body: Mapping[str, Any], exc: WingmanError) -> dict[str, Any]:
        """The request ``body`` as stored, when its create got no answer it can use (the
        connection lost, a timeout, a 5xx, an answer larger than Wingman reads) but it landed:
        read back by its name, which the caller could not do with a name generated here, and
        asking again would make a second request. Raises the create's error when the API server
        answered it (a 4xx: nothing was created) or nothing landed when read back (after an
        answer too large, saying so and naming the request to read: what answered may not be
        the API server, and the create may land later); when that cannot be told, that error
        names the request to read."""
        what = "creating the ApprovalRequest"
        if isinstance(exc, ApiError) and 0 < exc.status < 500:
            raise client_error(exc, what) from None  # the server's answer: nothing created
        name = str(body["metadata"]["name"])
        try:
            found = self.kube.get_or_none(APPROVALS, self.namespace, name)
            if found is not None:
                found = shape.checked(found, "ApprovalRequest")
        except WingmanError:
            err = client_error(exc, what)
            raise type(err)(f"{err.message}; ApprovalRequest {name} may have been created "
                            f"all the same: read it ({self.hints.get_request(name)}) before "
                            "asking again, which would ask a second time",
                            reason=err.reason) from None
        spec = (found or {}).get("spec") or {}
        if found is None and isinstance(exc, AnswerTooLarge):
            # what answered need not be the API server (a proxy's error page can answer while
            # the POST is still on its way): not found now, it may land later all the same
            err = client_error(exc, what)
            raise type(err)(f"{err.message}; read back by its name just now, ApprovalRequest "
                            f"{name} was not found, but the create may still land: read it "
                            f"({self.hints.get_request(name)}) before asking again, which "
                            "would ask a second time", reason=err.reason) from None
        if found is None or any(spec.get(k) != v for k, v in body["spec"].items()):
            raise client_error(exc, what) from None  # nothing landed (or not this request)
        return found

    def get_request_object(self, name: str) -> dict[str, Any]:
        check_name("ApprovalRequest", name)
        obj: dict[str, Any] = self._object(f"reading ApprovalRequest {name}", "ApprovalRequest",
                                           self.kube.get, APPROVALS, self.namespace, name)
        return obj

    def _request_status(self, obj: Mapping[str, Any], grants: Sequence[Mapping[str, Any]]
                        ) -> st.Status:
        may_grant = None
        if (obj.get("status") or {}).get("phase") in ("Approved", "AutoApproved"):
            may_grant = self._workers_may_grant()
        return st.of_request(obj, grants, now=self.now(), workers_may_grant=may_grant,
                             hints=self.hints)

    def request_state(self, obj: Mapping[str, Any], grants: Sequence[Mapping[str, Any]]
                      ) -> st.Status:
        """The state of the request ``obj`` with its ``grants`` as read: whoever shows the
        objects and the state (``describe``) computes it from the very objects it shows, never
        from a second read, where a grant that changed meanwhile would show two states."""
        return self._request_status(obj, grants)

    def grant_state(self, obj: Mapping[str, Any]) -> st.Status:
        """The state of the grant ``obj`` as read, its output cut at ``max_output`` as every
        grant this client answers (``describe`` shows the grants it read with the request)."""
        return st.of_grant(obj, now=self.now(), max_output=self.max_output, hints=self.hints)

    def request_status(self, name: str) -> st.Status:
        obj = self.get_request_object(name)
        return self._request_status(obj, self.grants_of(name))

    def list_request_objects(self, keep: Callable[[dict[str, Any]], bool] | None = None
                             ) -> list[dict[str, Any]]:
        """The namespace's requests (``keep``: those it keeps, filtered page by page), oldest
        first."""
        items: list[dict[str, Any]] = self._call("listing ApprovalRequests", _listing,
                                                 self.kube, APPROVALS, "ApprovalRequest",
                                                 self.namespace, keep)
        return _oldest_first(items)

    def _callers(self) -> Callable[[dict[str, Any]], bool]:
        """Keeps the caller's own requests."""
        user = self.whoami()

        def keep(o: dict[str, Any]) -> bool:
            return (o.get("spec") or {}).get("requester") == user
        return keep

    def list_requests_and_grants(self, *, mine: bool = False
                                 ) -> tuple[list[st.Status], list[st.Status]]:
        """Every request in the namespace (``mine``: only the caller's) and every grant in it,
        oldest first, from one list of each: the requests' states are computed from the very
        grants returned, so a grant never shows one state in its request's and another in its
        own (``kubectl wingman list``)."""
        keep = self._callers() if mine else None
        items = self.list_request_objects(keep)
        grants = self.list_grant_objects()
        by_request = grants_by_request(grants)
        requests = [self._request_status(o, by_request.get(o["metadata"]["name"], []))
                    for o in items]
        return requests, [st.of_grant(g, now=self.now(), max_output=self.max_output,
                                      hints=self.hints) for g in grants]

    def list_requests(self, *, mine: bool = False) -> list[st.Status]:
        """Every request in the namespace (``mine``: only the caller's), oldest first."""
        keep = self._callers() if mine else None
        items = self.list_request_objects(keep)
        names = {o["metadata"]["name"] for o in items}
        grants = self.list_grant_objects(lambda g: _ref(g) in names) if items else []
        by_request = grants_by_request(grants)
        return [self._request_status(o, by_request.get(o["metadata"]["name"], []))
                for o in items]

    def wait_request(self, name: str, timeout: float, on_tick: Tick | None = None, *,
                     stop: threading.Event | None = None) -> st.Status:
        """Poll until the request leaves the waiting states, ``timeout`` passes or ``stop`` is
        set (a caller that gave up: the wait ends at once)."""
        return self._wait(lambda: self.request_status(name), timeout, on_tick, stop)

    def decide(self, name: str, verdict: str, reason: str = "", *,
               uid: str | None = None) -> st.Status:
        """Append the caller's decision (approvers only: admission checks it).

        With ``uid``, the decision lands only on that very object: a request deleted and
        created again under the same name since the caller looked is refused (StaleRequest).
        A decision that would change nothing (the request is rejected, revoked or expired, or
        an Approve of an approved one) is refused before anything is written (AlreadyDecided,
        saying how it was decided)."""
        check_name("ApprovalRequest", name)
        if verdict not in ("Approve", "Reject"):
            raise Invalid(f"verdict must be Approve or Reject, got {verdict!r}")
        if verdict == "Reject" and not reason.strip():
            raise Invalid("a rejection needs a reason: the requester is told it")
        check_reason(reason)
        entry = {"verdict": verdict, "by": self.whoami(), "reason": reason}
        for attempt in range(3):
            obj = self._call(f"reading ApprovalRequest {name}", shape.checked,
                             self.get_request_object(name), "ApprovalRequest",
                             ("resourceVersion",))  # the first decision's patch tests it
            if uid is not None and obj["metadata"].get("uid") != uid:
                raise Invalid(f"ApprovalRequest {name} was deleted and created again since you "
                              f"looked at it (its UID is {obj['metadata'].get('uid')}, not "
                              f"{shown(uid)}): read the new one before deciding",
                              reason="StaleRequest")
            late = st.late_decision(obj, verdict, now=self.now())
            if late is not None:  # the operator would ignore it: say so, write nothing
                raise Invalid(late, reason="AlreadyDecided")
            # the uid is tested in the patch too: the object cannot be swapped in between
            patch: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid",
                                            "value": obj["metadata"]["uid"]}]
            if len(obj["spec"].get("decisions") or []) >= limits.DECISIONS:
                raise Invalid(f"ApprovalRequest {name} holds {limits.DECISIONS} decisions, as "
                              "many as a request holds: no further decision can be recorded; "
                              "a new request can be decided anew", reason="TooManyDecisions")
            if obj["spec"].get("decisions"):
                patch.append({"op": "add", "path": "/spec/decisions/-", "value": entry})
            else:  # first decision: never replace a concurrent first decision
                patch += [{"op": "test", "path": "/metadata/resourceVersion",
                           "value": obj["metadata"]["resourceVersion"]},
                          {"op": "add", "path": "/spec/decisions", "value": [entry]}]
            try:
                self._call(f"recording your decision on {name}", self.kube.patch, APPROVALS,
                           self.namespace, name, patch, content_type=JSON_PATCH)
                break
            except Invalid as exc:
                if attempt == 2 or "test operation" not in str(exc).lower():
                    raise
        return self.request_status(name)

    # -- grants -----------------------------------------------------------------------------
    def list_grant_objects(self, keep: Callable[[dict[str, Any]], bool] | None = None
                           ) -> list[dict[str, Any]]:
        """The namespace's grants (``keep``: those it keeps, filtered page by page), oldest
        first."""
        items: list[dict[str, Any]] = self._call("listing ExecutionGrants", _listing,
                                                 self.kube, GRANTS, "ExecutionGrant",
                                                 self.namespace, keep)
        return _oldest_first(items)

    def grants_of(self, request: str) -> list[dict[str, Any]]:
        """The grants of one request, oldest first: the API server selects them by
        ``spec.approvalRef.name`` (the CRD's selectableFields), so a poll reads the request's
        grants, never the namespace's. An API server that cannot select by that field (before
        Kubernetes 1.31, or the CRD of an older Wingman) refuses the selector: the grants are
        then filtered here, page by page."""
        check_name("ApprovalRequest", request)

        def read() -> list[dict[str, Any]]:
            try:
                return _listing(self.kube, GRANTS, "ExecutionGrant", self.namespace,
                                field_selector=f"{GRANT_REQUEST_FIELD}={request}")
            except ApiError as exc:
                if not _field_not_selectable(exc):
                    raise
            return _listing(self.kube, GRANTS, "ExecutionGrant", self.namespace,
                            lambda g: _ref(g) == request)

        items: list[dict[str, Any]] = self._call(f"reading the ExecutionGrants of {request}",
                                                 read)
        return _oldest_first(items)

    def list_grants(self, request: str | None = None) -> list[st.Status]:
        grants = self.grants_of(request) if request else self.list_grant_objects()
        return [st.of_grant(g, now=self.now(), max_output=self.max_output, hints=self.hints)
                for g in grants]

    def grant_status(self, name: str, *, requester: str | None = None) -> st.Status:
        """The grant's state. With ``requester`` (a worker reading its own command's result:
        the MCP server's get_result), a grant in another's name is refused, not answered
        (Invalid, NotYourGrant): once the worker's grant is retired after the retention, any
        worker who may create grants can create one under its name, and the worker would read
        that grant's result as its command's. Approvers create grants in the requester's name,
        so a grant an approver started for the worker is its own."""
        check_name("ExecutionGrant", name)
        obj = self._object(f"reading ExecutionGrant {name}", "ExecutionGrant", self.kube.get,
                           GRANTS, self.namespace, name)
        if requester is not None:
            self._check_requester(obj, requester)
        return st.of_grant(obj, now=self.now(), max_output=self.max_output, hints=self.hints)

    def _check_requester(self, grant: Mapping[str, Any], requester: str) -> None:
        spec = grant.get("spec") or {}
        theirs = str(spec.get("requester") or "")
        if theirs == requester:
            return
        name = str((grant.get("metadata") or {}).get("name") or "")
        raise Invalid(
            f"ExecutionGrant {name} is not yours: it was created for requester {shown(theirs)} "
            f"(request {shown(_ref(grant))}), you are {shown(requester)}, so its result is not "
            f"your command's. If a grant of yours had this name, it finished and was retired "
            f"after the environment's retention, and another took the name: "
            f"{self.hints.list_requests()} and {self.hints.get_request('<request>')} show your "
            "requests and the grants of their commands; the audit trail keeps the retired "
            "grant's result (ask an operator of Wingman)", reason="NotYourGrant")

    def wait_grant(self, name: str, timeout: float, on_tick: Tick | None = None, *,
                   stop: threading.Event | None = None,
                   requester: str | None = None) -> st.Status:
        """Poll until the grant leaves the waiting states, ``timeout`` passes or ``stop`` is
        set. ``requester``: as for ``grant_status``, checked at every poll."""
        return self._wait(lambda: self.grant_status(name, requester=requester), timeout,
                          on_tick, stop)

    def execute(self, request: str, command: str, *, ttl_seconds: int | None = None
                ) -> st.Status:
        """Start the execution of one approved command: create its ExecutionGrant.

        Idempotent: the grant's name is derived from the request and the command, so a second
        call answers the first grant's state. When the request is not approved (yet), answers
        the request's state and creates nothing. When the caller may not create grants in this
        environment, answers ``awaiting_grant``: an approver must start it.
        """
        check_ttl(ttl_seconds)
        obj = self.get_request_object(request)
        commands = [str(c) for c in (obj.get("spec") or {}).get("commands") or ()]
        if command not in commands:
            listed = "; ".join(shown(c) for c in commands)  # a command may take 4096 characters
            raise Invalid(f"{shown(command)} is not one of the commands of request {request} "
                          f"(byte for byte): {listed}")
        gname = st.grant_name(request, command)
        requester = str((obj.get("spec") or {}).get("requester") or "")
        existing = self._object(f"reading ExecutionGrant {gname}", "ExecutionGrant",
                                self.kube.get_or_none, GRANTS, self.namespace, gname)
        if existing is not None:
            _check_own(existing, request=request, command=command, requester=requester,
                       namespace=self.namespace)
            return st.of_grant(existing, now=self.now(), max_output=self.max_output,
                               hints=self.hints)
        grants = self.grants_of(request)
        req_state = self._request_status(obj, grants)
        if req_state.state not in (st.State.APPROVED, st.State.AUTO_APPROVED):
            return _replace(req_state, message=(
                f"not executed: the request is {req_state.state.value}"
                + (f" ({req_state.message})" if req_state.message else "")))
        holder = next((c.grant for c in req_state.commands
                       if c.command == command and c.grant), None)
        if holder is not None:  # the operator granted it: to a grant of that name then
            check_name("ExecutionGrant", holder)
            # the copy the request's grants were just read with (as fresh as a read now, and
            # the one its state was computed from); read only when it was not among them
            held = next((g for g in grants
                         if (g.get("metadata") or {}).get("name") == holder), None)
            if held is None:
                held = self._object(f"reading ExecutionGrant {holder}", "ExecutionGrant",
                                    self.kube.get, GRANTS, self.namespace, holder)
            _check_own(held, request=request, command=command, requester=requester,
                       namespace=self.namespace)
            return st.of_grant(held, now=self.now(), max_output=self.max_output,
                               hints=self.hints)
        if not self.can("create", GRANTS):
            return st.Status(
                st.State.AWAITING_GRANT, kind="ExecutionGrant", name=gname,
                namespace=self.namespace, request=request, command=command,
                phase=None, reason="ApproverMustGrant", requester=requester or None,
                message=f"you may not create ExecutionGrants in {self.namespace}: in this "
                        "environment only approvers start executions",
                next=f"ask an approver to run: {self.hints.approver_exec(request, command)}; "
                     f"then call {self.hints.get_result(gname)} (that is the grant's name)")
        body = build_grant(request_name=request, namespace=self.namespace, command=command,
                           requester=requester, ttl_seconds=ttl_seconds)
        try:
            created = self.kube.create(GRANTS, self.namespace, body)
        except ApiError as exc:
            if not exc.conflict:
                raise client_error(exc, "creating the ExecutionGrant") from None
            created = self._object(f"reading ExecutionGrant {gname}", "ExecutionGrant",
                                   self.kube.get, GRANTS, self.namespace, gname)
            _check_own(created, request=request, command=command, requester=requester,
                       namespace=self.namespace)
        except WingmanError as exc:
            raise client_error(exc, "creating the ExecutionGrant") from None
        created = self._call("creating the ExecutionGrant", shape.checked, created,
                             "ExecutionGrant")
        return st.of_grant(created, now=self.now(), max_output=self.max_output,
                           hints=self.hints)

    def rollback(self, grant: str, *, ttl_seconds: int | None = None) -> st.Status:
        """Start the reviewed rollback of the command ``grant`` ran: create its rollback grant
        (``<grant>-rollback``), without a new decision. The operator grants it once, only after
        the command ran and within the environment's rollback window; its answer says so.
        Idempotent: a second call answers the rollback grant's state."""
        check_name("ExecutionGrant", grant)
        check_ttl(ttl_seconds)
        forward = self._call(f"reading ExecutionGrant {grant}", shape.checked, self._object(
            f"reading ExecutionGrant {grant}", "ExecutionGrant", self.kube.get, GRANTS,
            self.namespace, grant), "ExecutionGrant", ("namespace",))  # its rollback's
        if (forward.get("spec") or {}).get("rollbackOf"):
            raise Invalid(f"ExecutionGrant {grant} is itself a rollback; a rollback is not "
                          "rolled back")
        gname = names.rollback_grant_name(grant)
        requester = str((forward.get("spec") or {}).get("requester") or "")
        existing = self._object(f"reading ExecutionGrant {gname}", "ExecutionGrant",
                                self.kube.get_or_none, GRANTS, self.namespace, gname)
        if existing is not None:
            _check_own(existing, request=_ref(forward), requester=requester,
                       rollback_of=grant, namespace=self.namespace)
            return st.of_grant(existing, now=self.now(), max_output=self.max_output,
                               hints=self.hints)
        request = self.get_request_object(_ref(forward))
        command = str((forward.get("spec") or {}).get("command") or "")
        rollback = rules.reviewed_rollback(request, command)
        if rollback is None:
            raise Invalid(f"request {_ref(forward)} names no rollback for the command of "
                          f"{grant} ({shown(command)}): only a rollback reviewed with the command "
                          "can be granted without a new decision; submit a new request")
        if not rules.ran(forward):
            phase = (forward.get("status") or {}).get("phase") or "Pending"
            raise Invalid(f"the command of {grant} has not run (phase {phase}); a rollback "
                          "is granted only after the command it undoes ran")
        body = build_rollback(forward, rollback=rollback,
                              requester=str(request["spec"].get("requester") or ""),
                              ttl_seconds=ttl_seconds)
        try:
            created = self.kube.create(GRANTS, self.namespace, body)
        except ApiError as exc:
            if not exc.conflict:
                raise client_error(exc, "creating the rollback's ExecutionGrant") from None
            created = self._object(f"reading ExecutionGrant {gname}", "ExecutionGrant",
                                   self.kube.get, GRANTS, self.namespace, gname)
            _check_own(created, request=_ref(forward), requester=requester,
                       rollback_of=grant, namespace=self.namespace)
        except WingmanError as exc:
            raise client_error(exc, "creating the rollback's ExecutionGrant") from None
        created = self._call("creating the rollback's ExecutionGrant", shape.checked, created,
                             "ExecutionGrant")
        return st.of_grant(created, now=self.now(), max_output=self.max_output,
                           hints=self.hints)

    # -- waiting ----------------------------------------------------------------------------
    def _wait(self, probe: Callable[[], st.Status], timeout: float, on_tick: Tick | None,
              stop: threading.Event | None = None) -> st.Status:
        start = time.monotonic()
        deadline = start + max(0.0, timeout)
        pause = stop if stop is not None else threading.Event()
        while True:
            current = probe()
            elapsed = time.monotonic() - start
            if on_tick is not None:
                on_tick(current, elapsed)
            if not current.waiting or time.monotonic() >= deadline or pause.is_set():
                return current.with_wait(elapsed) if timeout > 0 else current
            pause.wait(min(self.poll_seconds, max(0.0, deadline - time.monotonic())))


def _check_own(grant: Mapping[str, Any], *, request: str, requester: str, namespace: str,
               command: str | None = None, rollback_of: str | None = None) -> None:
    """Refuse to answer ``grant``, found under the name the grant of ``command`` of
    ``request`` (or the rollback of the grant ``rollback_of``) takes, as that grant when it is
    not: any worker who may create grants can take that name first (names are derived from the
    request and the command, and requests are listed), and the caller would be told that its
    command was granted, ran or was refused when another's grant was. Invalid
    (GrantNameTaken) saying whose grant it is and what to do."""
    spec = grant.get("spec") or {}
    undoes = str((spec.get("rollbackOf") or {}).get("name") or "") or None
    if (_ref(grant) == request and spec.get("requester") == requester
            and (command is None or spec.get("command") == command) and undoes == rollback_of):
        return
    name = str((grant.get("metadata") or {}).get("name") or "")
    what = (f"the rollback of ExecutionGrant {rollback_of}" if rollback_of is not None
            else "this command")
    theirs = (f"request {shown(_ref(grant))}, requester {shown(str(spec.get('requester')))}, "
              f"command {shown(str(spec.get('command')))}"
              + (f", rollback of {shown(undoes)}" if undoes else ""))
    raise Invalid(f"ExecutionGrant {name}, the name {what}'s grant takes, is another grant "
                  f"({theirs}), so it was not started: ask an approver to delete that grant "
                  f"(kubectl delete executiongrant {name} -n {namespace}), then ask again",
                  reason="GrantNameTaken")


#: The field of an ExecutionGrant the API server selects grants by (the CRD's selectableFields).
GRANT_REQUEST_FIELD = "spec.approvalRef.name"


def _field_not_selectable(exc: ApiError) -> bool:
    """Whether ``exc`` is the API server's refusal of a field selector on a field the CRD does
    not declare selectable (400 BadRequest, "field label not supported")."""
    said = str(exc).lower()
    return exc.status == 400 and "field label" in said and "not supported" in said


def _listing(kube: Kube, res: Resource, kind: str, namespace: str,
             keep: Callable[[dict[str, Any]], bool] | None = None, *,
             field_selector: str | None = None) -> list[dict[str, Any]]:
    """The ``kind`` objects of ``res`` the selector selects (and ``keep`` keeps, filtered page
    by page), each checked for the shape the client relies on (``shape.checked``: else
    ``UnusableAnswer``)."""
    if keep is None:  # the list counts each page's answer, not each object encoded again
        return [shape.checked(o, kind)
                for o in kube.list(res, namespace, field_selector=field_selector)]
    return kube.list(res, namespace, field_selector=field_selector,
                     keep=shape.picking(kind, keep))


def _oldest_first(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first; objects created in the same second in the API server's order (by name)."""
    return sorted(items, key=lambda o: str(o["metadata"].get("creationTimestamp", "")))


def _ref(grant: Mapping[str, Any]) -> str:
    return str(((grant.get("spec") or {}).get("approvalRef") or {}).get("name", ""))


def grants_by_request(grants: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``grants`` grouped by the request each names (``spec.approvalRef.name``), in their
    order: each request's grants found once, not every grant scanned for every request."""
    out: dict[str, list[dict[str, Any]]] = {}
    for g in grants:
        out.setdefault(_ref(g), []).append(g)
    return out


def _replace(status: st.Status, **changes: Any) -> st.Status:
    import dataclasses

    return dataclasses.replace(status, **changes)


__all__ = ["POLICY_CONFIGMAP", "SOURCE_LIMITS", "PolicyView", "Source", "WingmanClient",
           "build_grant", "build_request", "build_rollback", "check_name", "client_error",
           "error_answer", "grants_by_request", "shown"]

"""Wingman's error types: one shallow tree, one vocabulary of reasons.

Every class carries a ``reason`` (CamelCase, specific). The same string becomes the
condition reason, the Event reason, the metric label and the audit field, so one
vocabulary runs end to end. Messages are for humans: they say what is wrong and what to
do. A message never contains a token, a key or a Secret's data: :func:`shown_url` shows a URL
from configuration in one without its ``user:password@``, query and fragment.

    WingmanError
    ├── ConfigError            the settings or a configuration file are invalid
    ├── ScopeViolation         a command is malformed, not approved or not allowlisted
    ├── TokenRejected          a capability token failed verification
    ├── ReplayRejected         a capability token was already used
    ├── AuditUnavailable       the audit sink could not durably record (callers fail closed)
    ├── AuditTampered          the audit chain does not verify
    ├── ConsensusError         the reviewer panel is misconfigured
    ├── GrantDenied            an ExecutionGrant fails a re-check
    ├── ExecutionFailed        the executor could not run the command
    ├── ClusterError           the local control plane could not be provisioned or started
    └── ClientError            a client call (CLI, MCP server, chat) could not be carried out
        ├── NotFound           the object does not exist
        ├── Forbidden          RBAC or an admission policy refused the caller
        ├── Invalid            the input is wrong (the client's checks, the CRD schema or CEL)
        ├── TooLarge           an answer or a list is larger than Wingman reads (lasting)
        └── Unavailable        the API server could not be reached or failed
"""

from __future__ import annotations

import errno
import os
import re

#: A scheme and its slashes at the start of a URL (``https://``, also mistyped ``https:/``).
_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*:/+")
#: '@' and the characters Unicode normalisation (NFKC, which URL parsers apply to a host) turns
#: into one.
_AT = ("@", "\ufe6b", "\uff20")
#: Where a URL's query or fragment begins.
_QUERY = re.compile("[?#\ufe16\ufe5f\uff03\uff1f]")


def without_userinfo(url: str) -> str:
    """``url`` with its userinfo replaced by ``***``, for messages that show it.

    The userinfo is taken to be everything between the scheme's ``://`` (or the start, when
    there is no scheme) and the LAST '@': a password may hold an unencoded '/', '?', '#' or
    '@' that a URL parser would read as the end of the authority, and parsers disagree. When
    the last '@' is in the path or the query, more than the userinfo is hidden: the message
    loses a detail, never a secret."""
    at = max(url.rfind(c) for c in _AT)
    if at < 0:
        return url
    scheme = _SCHEME.match(url)
    keep = scheme.group() if scheme is not None and scheme.end() <= at else ""
    return f"{keep}***{url[at:]}"


def shown_url(url: str, limit: int = 200) -> str:
    """``url`` as a message or a log line may show it: without userinfo
    (:func:`without_userinfo`), query and fragment (``?token=...`` carries a secret as
    often as a password does; ``?…`` marks that there was one), at most ``limit``
    characters. Show it with ``!r``, which escapes control characters."""
    text = without_userinfo(url)
    cut = _QUERY.search(text)
    if cut is not None:
        text = f"{text[:cut.end()]}…"
    return text if len(text) <= limit else f"{text[:limit]}…"


class WingmanError(Exception):
    """Base class of every error Wingman raises on purpose."""

    reason: str = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled as its class, ``args`` and attributes, whatever its ``__init__`` takes (the
        operator's writer process sends errors back to the operator: ``operator.writer``)."""
        return _restore, (type(self), self.args, dict(self.__dict__))


def _restore(cls: type[WingmanError], args: tuple[object, ...], state: dict[str, object]
             ) -> WingmanError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigError(WingmanError):
    """The settings, values or a configuration file are invalid."""

    reason = "InvalidConfiguration"


class ScopeViolation(WingmanError):
    """A command is malformed, differs from the approved one, or is outside the allowlist."""

    reason = "CommandNotApproved"


class TokenRejected(WingmanError):
    """A capability token failed verification; ``reason`` names the exact check."""

    reason = "TokenRejected"


class ReplayRejected(WingmanError):
    """A capability token was presented after it had already been used once."""

    reason = "ReplayRejected"


class AuditUnavailable(WingmanError):
    """The audit sink could not durably record an event; the caller must not proceed."""

    reason = "AuditUnavailable"


class AuditTampered(WingmanError):
    """The audit chain does not verify: a record was edited, removed, inserted or reordered."""

    reason = "AuditTampered"


class ConsensusError(WingmanError):
    """The reviewer panel or its thresholds are misconfigured."""

    reason = "ConsensusMisconfigured"


class GrantDenied(WingmanError):
    """An ExecutionGrant fails one of the operator's or the gateway's re-checks."""

    reason = "GrantDenied"


class ExecutionFailed(WingmanError):
    """The executor could not run the command (not: the command ran and exited non-zero)."""

    reason = "ExecutionFailed"


class ClusterError(WingmanError):
    """The local control plane could not be provisioned or started."""

    reason = "ClusterUnavailable"


class ClientError(WingmanError):
    """A client call (CLI, MCP server, chat) could not be carried out."""

    reason = "ClientError"


class NotFound(ClientError):
    """The object the caller named does not exist (in that namespace)."""

    reason = "NotFound"


class Forbidden(ClientError):
    """RBAC or an admission policy refused the caller; the message says which."""

    reason = "Forbidden"


class Invalid(ClientError):
    """The input is wrong: the client's own checks, the CRD's schema or its CEL rules."""

    reason = "Invalid"


class TooLarge(ClientError):
    """An answer of the API server, or a list over its pages, is larger than Wingman reads
    (``wingman.kube.AnswerTooLarge``, ``ListTooLarge``): asking again gets the same, so it is
    not reported as a failure that may pass; the message says what to do. ``reason`` is the
    one of the error it stands for."""

    reason = "TooLarge"


class Unavailable(ClientError):
    """The API server could not be reached, or failed; retrying later may help."""

    reason = "Unavailable"


def cannot_listen(exc: OSError, port: int, setting: str, value: str) -> ConfigError:
    """The start-up error of a server whose port (``setting``, the chart's ``value``) cannot
    be bound: in use (another process listens on it), or refused for another reason."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"port {port} ({setting}) is in use: another process listens on "
                           f"it; stop it, or give this process another port ({setting}; the "
                           f"chart's {value})")
    why = os.strerror(exc.errno) if exc.errno else exc.strerror or type(exc).__name__
    return ConfigError(f"cannot listen on port {port} ({setting}): {why}; give it another port "
                       f"({setting}; the chart's {value})")


def cannot_listen_on(exc: OSError, address: str, value: str) -> str | None:
    """What to do when a process's ports cannot listen on ``address`` (``WINGMAN_LISTEN_ADDRESS``,
    the chart's ``value``) at all: an address this host does not have, or IPv6 where it is off;
    None for a refusal of the port itself (``cannot_listen``)."""
    if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL):
        return None
    return (f"cannot listen on {address} (WINGMAN_LISTEN_ADDRESS): {os.strerror(exc.errno)}; "
            "set one of this host's addresses, or "
            f"0.0.0.0 for every IPv4 address (the chart's {value})")


__all__ = [
    "AuditTampered",
    "AuditUnavailable",
    "ClientError",
    "ClusterError",
    "ConfigError",
    "ConsensusError",
    "ExecutionFailed",
    "Forbidden",
    "GrantDenied",
    "Invalid",
    "NotFound",
    "ReplayRejected",
    "ScopeViolation",
    "TokenRejected",
    "TooLarge",
    "Unavailable",
    "WingmanError",
    "cannot_listen",
    "cannot_listen_on",
    "shown_url",
    "without_userinfo",
]

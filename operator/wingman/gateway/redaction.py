"""Redaction of command output: what the gateway keeps of what a command printed.

Output is the target's, so hostile: every pattern runs in linear time. Pure: the standard
library only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# A JWT (or the start of one cut off by the output bound): base64url JSON header "eyJ..."
# optionally followed by further dot-separated segments.
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,4}")
_BEARER_RE = re.compile(r"(?i)\b(bearer)(\s+)(?!\[REDACTED\])[^\s\"',;]+")
# A key naming a credential, then ':' or '=', then its value (optionally quoted). Linear time
# on any output (the output is the target's, so hostile): a key starts only where a key
# character does not precede it, the lookahead stays inside that one key, and the possessive
# quantifiers never backtrack.
_KEY_CHARS = r"[A-Za-z0-9_.-]"
_KEYVALUE_RE = re.compile(
    rf"(?i)(?<!{_KEY_CHARS})(?={_KEY_CHARS}*?(?:token|password|passwd|secret|api[_-]?key))"
    rf"({_KEY_CHARS}++[\"']?\s*+[:=]\s*+[\"']?)(?!\[REDACTED\])([^\s\"',;}}\]]++)"
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials replaced by ``[REDACTED]``.

    Replaced: every string of ``secrets``; anything JWT-shaped (``eyJ...``, including a JWT cut
    short); the credential after ``Bearer``; the value after a key that names a token,
    password, secret or API key (``token: x``, ``password=x``, ``"clientSecret": "x"``).
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _JWT_RE.sub(REDACTED, text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _KEYVALUE_RE.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def output_sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def bound_output(raw: bytes, *, limit: int, truncated: bool, secrets: Iterable[str] = ()
                 ) -> tuple[str, bool, str]:
    """(redacted text of at most ``limit`` UTF-8 bytes, truncated, its ``sha256:<hex>``)."""
    text = redact(raw.decode("utf-8", errors="replace"), secrets)
    data = text.encode("utf-8")
    if len(data) > limit:
        text = data[:limit].decode("utf-8", errors="ignore")
        truncated = True
    return text, truncated, output_sha256(text)


__all__ = ["REDACTED", "bound_output", "output_sha256", "redact"]

"""Capability tokens: minting and verifying the signed, single-use JWT for one approved command.

This module owns the token format and every verification rule; the keys are in
``wingman.capability.keys``. It is pure: no I/O, no global state, ``now`` is
injected. Single use (burning the ``jti``) is the gateway's job, through the API server.

Format (JWS compact serialization, EdDSA/Ed25519 only). Header, exactly these three
parameters::

    {"alg": "EdDSA", "kid": "<key id>", "typ": "wingman-capability+jwt"}

Payload, exactly these claims (the private ones are namespaced under ``wingman.dev/`` so they
cannot collide with registered or other public claims)::

    iss, aud, sub, jti         non-empty strings; aud is ONE string (the environment)
    iat, nbf, exp              integers, epoch seconds; iat <= nbf < exp, exp - iat <= 3600
    "wingman.dev/ns"           the namespace of the ApprovalRequest and ExecutionGrant
    "wingman.dev/approval"     {"name": str, "uid": str}
    "wingman.dev/grant"        {"name": str, "uid": str}
    "wingman.dev/command"      {"text": str, "sha256": <64 lowercase hex of text's UTF-8>}
    "wingman.dev/job"          {"uid": str | null}   the gateway Job the token is bound to

Verification (:func:`verify`) fails closed; every failure is :class:`TokenRejected` with one of
the reasons below. The size is checked before anything is decoded, the header before the
signature, the signature before any claim is believed:

- ``Malformed``: not a string, not three base64url segments of printable ASCII, non-canonical
  base64url, JSON that is not an object, has duplicate keys or non-finite numbers, a claim of
  the wrong type or an unknown claim, incoherent times (``nbf < iat`` or ``exp <= nbf``);
- ``Oversized``: more than 8 KiB, checked before anything is decoded;
- ``BadHeader``: a header parameter other than ``alg``/``kid``/``typ`` (``jku``, ``x5u``,
  ``jwk``, ``x5c``, ``crit``, ``b64``, ...), or a missing or ill-formed ``kid``;
- ``BadAlgorithm``: ``alg`` other than ``EdDSA`` (``none``, ``HS256``, ``ES256``, ``RS256``...).
  The accepted algorithm is pinned here, never read from the token;
- ``WrongType``: ``typ`` other than ``wingman-capability+jwt``;
- ``UnknownKey``: a ``kid`` that the :class:`KeySet` does not hold (for example a retired key);
- ``BadSignature``: the signature does not verify with that key;
- ``MissingClaim``: any claim above absent, or a field of a ``wingman.dev/`` object;
- ``WrongIssuer`` / ``WrongAudience``: not exactly the expected string (a list ``aud`` is
  rejected even when it contains the environment);
- ``Expired``: ``now >= exp + leeway``; ``IssuedInFuture``: ``now < iat - leeway`` (a
  freshly minted token seen by a gateway whose clock lags; ``nbf == iat`` when minted);
  ``NotYetValid``: ``now < nbf - leeway`` (``nbf`` later than ``iat``);
  ``LifetimeTooLong``: ``exp - iat > 3600``;
- ``CommandHashMismatch``: the command's SHA-256 is not the one the token carries;
- ``BindingMismatch``: an :class:`Expected` value (approval UID, grant UID, Job UID,
  namespace, command) differs; an expected Job UID also rejects a token bound to no Job.

Messages name the failed check and the token's ``sha256:<hex>`` (:func:`token_sha256`),
never the token, a part of it, or a key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import jwt

from wingman.capability.keys import _KID_RE, KeySet, SigningKey, _b64url
from wingman.errors import ConfigError, ScopeViolation, TokenRejected
from wingman.scope import command_sha256

__all__ = [
    "ALGORITHM",
    "DEFAULT_TTL_SECONDS",
    "MAX_TOKEN_BYTES",
    "MAX_TTL_SECONDS",
    "TOKEN_TYPE",
    "CapabilityClaims",
    "Expected",
    "grant_jti",
    "jti_sha256",
    "mint",
    "token_sha256",
    "verify",
]

ALGORITHM = "EdDSA"
"""The only signing algorithm, pinned on both sides."""

TOKEN_TYPE = "wingman-capability+jwt"  # noqa: S105 - a media type, not a secret
"""The ``typ`` header: a capability token never validates as any other kind of JWT."""

MAX_TTL_SECONDS = 3600
"""Hard ceiling on a token's lifetime; per-environment caps are applied by the caller."""

MAX_TOKEN_BYTES = 8192
"""Longest token accepted (and minted); longer input is rejected before decoding."""

DEFAULT_TTL_SECONDS = 300

_NS = "wingman.dev/"
_CLAIM_NS = _NS + "ns"
_CLAIM_APPROVAL = _NS + "approval"
_CLAIM_GRANT = _NS + "grant"
_CLAIM_COMMAND = _NS + "command"
_CLAIM_JOB = _NS + "job"
_REQUIRED = ("iss", "aud", "sub", "jti", "iat", "nbf", "exp")
_CLAIMS = frozenset(
    (*_REQUIRED, _CLAIM_NS, _CLAIM_APPROVAL, _CLAIM_GRANT, _CLAIM_COMMAND, _CLAIM_JOB)
)
_HEADER_PARAMS = frozenset(("alg", "kid", "typ"))

_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]+")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_MAX_STRING = 4096  # longest string claim other than the command
_MAX_TIME = 2**40  # epoch seconds far beyond any real clock; keeps arithmetic sane


def token_sha256(token: str) -> str:
    """``sha256:<hex>`` of a token: the only way a token may appear in logs and messages."""
    data = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else bytes(token)
    return "sha256:" + hashlib.sha256(data).hexdigest()


_JTI_CONTEXT = b"wingman.dev/jti\x00"


def grant_jti(key: SigningKey, grant_uid: str) -> str:
    """The ``jti`` of every token minted for one grant: 128 bits of SHA-256 over the Ed25519
    signature of the grant's UID (RFC 8032 signatures are deterministic).

    So every token a grant gets under one key burns the same marker (one execution per grant,
    however often a token is minted again; a rotated key gives another ``jti``), and nobody
    without the signing key can predict it (and create the burn marker first). The signed
    message starts with a NUL-separated context, so it is never a JWS signing input (base64url
    segments), and only a hash of the signature leaves this function.
    """
    if not isinstance(key, SigningKey):
        raise ConfigError("grant_jti needs a SigningKey")
    signature = key.private_key.sign(_JTI_CONTEXT + _require_text("grant_uid", grant_uid)
                                     .encode("utf-8", "surrogatepass"))
    return hashlib.sha256(signature).hexdigest()[:32]


def jti_sha256(jti: str) -> str:
    """``sha256:<hex>`` of a token's ``jti``: all the audit trail records of it before the
    token is spent (``TokenMinted``), so that whoever reads the trail (a gateway pod, with the
    file sink) cannot learn the name of another token's burn marker and create it first; the
    gateway's records of the burn carry the same digest, which ties the burn to the mint."""
    return "sha256:" + hashlib.sha256(_require_text("jti", jti).encode("utf-8", "surrogatepass")
                                        ).hexdigest()


@dataclass(frozen=True, slots=True)
class CapabilityClaims:
    """What a verified capability token grants (see the module doc for the JSON names)."""

    iss: str
    aud: str
    sub: str
    jti: str
    iat: int
    nbf: int
    exp: int
    approval_name: str
    approval_uid: str
    grant_name: str
    grant_uid: str
    namespace: str
    command: str
    command_sha256: str
    job_uid: str | None = None

    def to_payload(self) -> dict[str, Any]:
        """The JWT payload (claim names as documented in the module)."""
        return {
            "iss": self.iss,
            "aud": self.aud,
            "sub": self.sub,
            "jti": self.jti,
            "iat": self.iat,
            "nbf": self.nbf,
            "exp": self.exp,
            _CLAIM_NS: self.namespace,
            _CLAIM_APPROVAL: {"name": self.approval_name, "uid": self.approval_uid},
            _CLAIM_GRANT: {"name": self.grant_name, "uid": self.grant_uid},
            _CLAIM_COMMAND: {"text": self.command, "sha256": self.command_sha256},
            _CLAIM_JOB: {"uid": self.job_uid},
        }


@dataclass(frozen=True, slots=True)
class Expected:
    """Bindings the verifier requires; ``None`` means "not checked by this caller"."""

    approval_uid: str | None = None
    grant_uid: str | None = None
    job_uid: str | None = None
    namespace: str | None = None
    command: str | None = None


def _require_text(name: str, value: object, limit: int = _MAX_STRING) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ConfigError(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def mint(
    key: SigningKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    namespace: str,
    approval_name: str,
    approval_uid: str,
    grant_name: str,
    grant_uid: str,
    command: str,
    job_uid: str | None = None,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: float,
    jti: str | None = None,
) -> tuple[str, CapabilityClaims]:
    """Sign a capability token for one exact command; returns the token and its claims.

    ``iat`` = ``nbf`` = ``floor(now)``, ``exp`` = ``iat + ttl_seconds``. ``jti`` defaults to
    128 random bits. Minting is deterministic: the same arguments (with ``jti``) give the same
    token, byte for byte (Ed25519 signatures and the encoding are), which is what lets the
    operator store a lost token again without ever making a second one. ConfigError for an
    invalid argument or a TTL outside 1..3600 seconds.
    """
    if not isinstance(key, SigningKey):
        raise ConfigError("mint needs a SigningKey")
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        raise ConfigError("ttl_seconds must be an integer number of seconds")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise ConfigError(
            f"ttl_seconds={ttl_seconds} is outside 1..{MAX_TTL_SECONDS}; capability tokens "
            "are short-lived by design"
        )
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ConfigError("now must be a finite number of epoch seconds")
    if not 0 <= now < _MAX_TIME - MAX_TTL_SECONDS:
        raise ConfigError("now is not a plausible epoch time in seconds")
    if jti is None:
        jti = secrets.token_hex(16)
    _require_text("command", command, limit=MAX_TOKEN_BYTES)
    try:
        digest = command_sha256(command)
    except ScopeViolation as exc:
        raise ConfigError(f"command cannot be minted: {exc.message}") from None
    if job_uid is not None:
        _require_text("job_uid", job_uid)
    iat = math.floor(now)
    claims = CapabilityClaims(
        iss=_require_text("issuer", issuer),
        aud=_require_text("audience", audience),
        sub=_require_text("subject", subject),
        jti=_require_text("jti", jti),
        iat=iat,
        nbf=iat,
        exp=iat + ttl_seconds,
        approval_name=_require_text("approval_name", approval_name),
        approval_uid=_require_text("approval_uid", approval_uid),
        grant_name=_require_text("grant_name", grant_name),
        grant_uid=_require_text("grant_uid", grant_uid),
        namespace=_require_text("namespace", namespace),
        command=command,
        command_sha256=digest,
        job_uid=job_uid,
    )
    token = jwt.encode(
        claims.to_payload(),
        key.private_key,
        algorithm=ALGORITHM,
        headers={"kid": key.kid, "typ": TOKEN_TYPE},
    )
    if len(token) > MAX_TOKEN_BYTES:
        raise ConfigError(
            f"the token would be {len(token)} bytes, more than the {MAX_TOKEN_BYTES} the "
            "gateway accepts; the command is too long to be carried in a token"
        )
    return token, claims


# ----------------------------------------------------------------------------------------------
# Verification


def _reject(reason: str, check: str, ref: str) -> NoReturn:
    # ``from None``: the library's exception (which may quote the header) is never chained.
    raise TokenRejected(f"capability token {ref} rejected: {check}", reason=reason) from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError("duplicate key")
        result[name] = value
    return result


def _no_constant(_: str) -> NoReturn:
    raise ValueError("non-finite number")


def _decode_segment(segment: str, what: str, ref: str) -> bytes:
    if _SEGMENT_RE.fullmatch(segment) is None or len(segment) % 4 == 1:
        _reject("Malformed", f"the {what} is not base64url", ref)
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if _b64url(data) != segment:
        _reject("Malformed", f"the {what} is not canonical base64url", ref)
    return data


def _json_object(data: bytes, what: str, ref: str) -> dict[str, Any]:
    try:
        value = json.loads(
            data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (ValueError, RecursionError):
        _reject("Malformed", f"the {what} is not a JSON object without duplicate keys", ref)
    if not isinstance(value, dict):
        _reject("Malformed", f"the {what} is not a JSON object", ref)
    return value


def _text(payload: Mapping[str, Any], name: str, ref: str, limit: int = _MAX_STRING) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        _reject("Malformed", f"claim {name!r} is not a non-empty string", ref)
    return value


def _time(payload: Mapping[str, Any], name: str, ref: str) -> int:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_TIME:
        _reject("Malformed", f"claim {name!r} is not an integer number of epoch seconds", ref)
    return value


def _pair(
    payload: Mapping[str, Any], name: str, fields: tuple[str, ...], ref: str
) -> dict[str, Any]:
    value = payload.get(name)
    if not isinstance(value, dict):
        _reject("Malformed", f"claim {name!r} is not an object", ref)
    missing = [f for f in fields if f not in value]
    if missing:
        _reject("MissingClaim", f"required claim {name!r} has no {missing[0]!r}", ref)
    if len(value) != len(fields):
        _reject("Malformed", f"claim {name!r} has fields other than {fields}", ref)
    return value


def _claims(payload: Mapping[str, Any], ref: str) -> CapabilityClaims:
    missing = [name for name in sorted(_CLAIMS) if name not in payload]
    if missing:
        _reject("MissingClaim", f"required claim {missing[0]!r} is missing", ref)
    unknown = sorted(set(payload) - _CLAIMS)
    if unknown:
        _reject("Malformed", f"the token carries {len(unknown)} unknown claim(s)", ref)
    approval = _pair(payload, _CLAIM_APPROVAL, ("name", "uid"), ref)
    grant = _pair(payload, _CLAIM_GRANT, ("name", "uid"), ref)
    command = _pair(payload, _CLAIM_COMMAND, ("text", "sha256"), ref)
    job = _pair(payload, _CLAIM_JOB, ("uid",), ref)
    job_uid = job["uid"]
    if job_uid is not None:
        job_uid = _text(job, "uid", ref)
    return CapabilityClaims(
        iss=_text(payload, "iss", ref),
        aud=_text(payload, "aud", ref),
        sub=_text(payload, "sub", ref),
        jti=_text(payload, "jti", ref),
        iat=_time(payload, "iat", ref),
        nbf=_time(payload, "nbf", ref),
        exp=_time(payload, "exp", ref),
        approval_name=_text(approval, "name", ref),
        approval_uid=_text(approval, "uid", ref),
        grant_name=_text(grant, "name", ref),
        grant_uid=_text(grant, "uid", ref),
        namespace=_text(payload, _CLAIM_NS, ref),
        command=_text(command, "text", ref, limit=MAX_TOKEN_BYTES),
        command_sha256=_text(command, "sha256", ref),
        job_uid=job_uid,
    )


_PYJWT_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.InvalidSignatureError, "BadSignature"),
    (jwt.InvalidAlgorithmError, "BadAlgorithm"),
    (jwt.MissingRequiredClaimError, "MissingClaim"),
    (jwt.InvalidAudienceError, "WrongAudience"),
    (jwt.InvalidIssuerError, "WrongIssuer"),
)


def verify(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway: int = 5,
    expected: Expected | None = None,
) -> CapabilityClaims:
    """Verify a capability token completely; TokenRejected (with a specific reason) otherwise.

    The checks and their reasons are listed in the module doc. ``leeway`` (seconds, 0..60)
    absorbs clock skew for ``exp``, ``nbf`` and ``iat``.
    """
    if isinstance(leeway, bool) or not isinstance(leeway, int) or not 0 <= leeway <= 60:
        raise ConfigError("leeway must be an integer number of seconds in 0..60")
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ConfigError("now must be a finite number of epoch seconds")
    if not isinstance(token, str):
        raise TokenRejected("capability token rejected: it is not a string", reason="Malformed")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected(
            f"capability token rejected: it is longer than {MAX_TOKEN_BYTES} bytes",
            reason="Oversized",
        )
    ref = token_sha256(token)
    segments = token.split(".")
    if len(segments) != 3:
        _reject("Malformed", "it does not have exactly three segments", ref)
    header = _json_object(_decode_segment(segments[0], "header", ref), "header", ref)
    extra = sorted(set(header) - _HEADER_PARAMS)
    if extra:
        _reject("BadHeader", f"header parameter(s) {extra} are not allowed", ref)
    if header.get("alg") != ALGORITHM:
        _reject("BadAlgorithm", f"the algorithm is not {ALGORITHM}", ref)
    if header.get("typ") != TOKEN_TYPE:
        _reject("WrongType", f"the type is not {TOKEN_TYPE}", ref)
    kid = header.get("kid")
    if not isinstance(kid, str) or _KID_RE.fullmatch(kid) is None:
        _reject("BadHeader", "the 'kid' header is missing or ill-formed", ref)
    public_key = keys.get(kid)
    if public_key is None:
        _reject("UnknownKey", "no verification key has the kid the token names", ref)
    _decode_segment(segments[2], "signature", ref)
    payload = _json_object(_decode_segment(segments[1], "payload", ref), "payload", ref)

    try:
        jwt.decode_complete(
            token,
            public_key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={
                "require": list(_REQUIRED),
                "strict_aud": True,
                # Times are checked below against the injected clock, not the wall clock.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError as exc:
        for kind, reason in _PYJWT_REASONS:
            if isinstance(exc, kind):
                _reject(reason, f"{type(exc).__name__} from the JWT library", ref)
        _reject("Malformed", f"{type(exc).__name__} from the JWT library", ref)

    claims = _claims(payload, ref)
    if claims.iss != issuer:
        _reject("WrongIssuer", f"the issuer is not {issuer!r}", ref)
    if claims.aud != audience:
        _reject("WrongAudience", f"the audience is not {audience!r}", ref)
    if claims.nbf < claims.iat or claims.exp <= claims.nbf:
        _reject("Malformed", "the times are incoherent (need iat <= nbf < exp)", ref)
    if now >= claims.exp + leeway:
        _reject("Expired", f"it expired at {claims.exp} (leeway {leeway}s)", ref)
    if now < claims.iat - leeway:
        _reject("IssuedInFuture", f"it was issued in the future ({claims.iat})", ref)
    if now < claims.nbf - leeway:
        _reject("NotYetValid", f"it is not valid before {claims.nbf} (leeway {leeway}s)", ref)
    if claims.exp - claims.iat > MAX_TTL_SECONDS:
        _reject("LifetimeTooLong", f"its lifetime exceeds {MAX_TTL_SECONDS}s", ref)
    try:
        digest = command_sha256(claims.command)
    except ScopeViolation:
        _reject("Malformed", "the command is not valid Unicode text", ref)
    if _HEX64_RE.fullmatch(claims.command_sha256) is None or not secrets.compare_digest(
        digest, claims.command_sha256
    ):
        _reject("CommandHashMismatch", "the command does not match its SHA-256 claim", ref)
    if expected is not None:
        _check_bindings(claims, expected, ref)
    return claims


def _check_bindings(claims: CapabilityClaims, expected: Expected, ref: str) -> None:
    checks = (
        ("approval_uid", expected.approval_uid, claims.approval_uid),
        ("grant_uid", expected.grant_uid, claims.grant_uid),
        ("job_uid", expected.job_uid, claims.job_uid),
        ("namespace", expected.namespace, claims.namespace),
        ("command", expected.command, claims.command),
    )
    for name, want, got in checks:
        if want is not None and want != got:
            _reject("BindingMismatch", f"its {name} is not the expected one", ref)
    if expected.command is not None and command_sha256(expected.command) != claims.command_sha256:
        _reject("CommandHashMismatch", "the expected command does not match its SHA-256", ref)

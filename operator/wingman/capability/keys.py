"""Ed25519 signing and verification keys, each with a ``kid`` for rotation (pure).

A ``SigningKey`` signs capability tokens (the operator holds it); a ``KeySet`` holds the public
keys a gateway verifies with. Nothing here reads a Secret: ``capability.keyring`` does.

A ``KeySet`` refuses weak public keys (``weak_public_key``): non-canonical encodings, points off
the curve, small-order points and points outside the prime-order subgroup. The verifier the
tokens use (OpenSSL's, cofactorless) accepts a forged signature for any message under a
small-order key, so such a key in the public-keys ConfigMap would let anyone mint tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from wingman.errors import ConfigError

_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an Ed25519 public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}, separators=(",", ":"), sort_keys=True
    )
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def _check_kid(kid: str) -> str:
    if not isinstance(kid, str) or _KID_RE.fullmatch(kid) is None:
        raise ConfigError(
            f"key id {ascii(kid)[:80]} is invalid; a kid is 1-128 characters of "
            "A-Z a-z 0-9 '_' '-' (the RFC 7638 thumbprint is used when none is given)"
        )
    return kid


# Edwards25519 (RFC 8032 section 5.1): the field prime, the curve constant d, the order L of
# the prime-order subgroup, and sqrt(-1).
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_L = 2**252 + 27742317777372353535851937790883648493
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)
_IDENTITY: _Point = (0, 1, 1, 0)


def _decode_point(raw: bytes) -> _Point | str:
    """The point a 32-byte public key encodes (RFC 8032 5.1.3), or why it is not canonical."""
    if len(raw) != 32:
        return "is not 32 bytes long"
    number = int.from_bytes(raw, "little")
    sign, y = number >> 255, number & ((1 << 255) - 1)
    if y >= _P:
        return "is a non-canonical encoding (y is not reduced modulo 2^255-19)"
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P == (-u) % _P:
        x = x * _SQRT_M1 % _P
    if v * x * x % _P != u:
        return "is not a point on the Ed25519 curve"
    if x == 0 and sign:
        return "is a non-canonical encoding (x = 0 with the sign bit set)"
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _add(a: _Point, b: _Point) -> _Point:
    """Point addition in extended coordinates (RFC 8032 5.1.4); also doubles."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    pa = (y1 - x1) * (y2 - x2) % _P
    pb = (y1 + x1) * (y2 + x2) % _P
    pc = t1 * 2 * _D * t2 % _P
    pd = z1 * 2 * z2 % _P
    e, f, g, h = pb - pa, pd - pc, pd + pc, pb + pa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _multiply(scalar: int, point: _Point) -> _Point:
    result = _IDENTITY
    while scalar:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _is_identity(point: _Point) -> bool:
    x, y, z, _t = point
    return x % _P == 0 and (y - z) % _P == 0


def weak_public_key(raw: bytes) -> str | None:
    """Why a raw Ed25519 public key must be refused, or ``None`` for a sound one.

    Refused: non-canonical encodings, points off the curve, small-order points (with one, a
    signature verifies for any message without the private key) and points outside the
    prime-order subgroup. Every key made from a private key passes.
    """
    point = _decode_point(raw)
    if isinstance(point, str):
        return point
    if _is_identity(_multiply(8, point)):
        return "is a small-order point (a signature would verify without any private key)"
    if not _is_identity(_multiply(_L, point)):
        return "is not in the prime-order subgroup (it has a small-order component)"
    return None


def _check_public(kid: str, key: Ed25519PublicKey) -> Ed25519PublicKey:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    why = weak_public_key(raw)
    if why is not None:
        raise ConfigError(
            f"public key {kid!r} {why}; it is refused. A key made with 'openssl genpkey "
            "-algorithm ed25519' (or by the operator) is never refused: republish the "
            "operator's keys (wingman keys show) and investigate who wrote this one"
        )
    return key


def _public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True, slots=True, eq=False)
class SigningKey:
    """The operator's private signing key and its ``kid``. Its repr never shows the key."""

    kid: str
    private_key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_kid(self.kid)
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise ConfigError("a signing key must be an Ed25519 private key (EdDSA only)")

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def private_pem(self) -> bytes:
        """PKCS#8 PEM of the private key (unencrypted: store it in a Secret, never log it)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM of the public key, for the gateway's :class:`KeySet`."""
        return _public_pem(self.public_key)

    @classmethod
    def from_pem(cls, pem: bytes | str, kid: str | None = None) -> SigningKey:
        """Load a PKCS#8 PEM Ed25519 private key; ``kid`` defaults to its JWK thumbprint."""
        data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ConfigError(
                "the signing key is not an unencrypted PEM private key; generate one with "
                "'openssl genpkey -algorithm ed25519' (or delete the Secret and let the "
                "operator generate one)"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(
                f"the signing key is a {type(key).__name__}, not Ed25519; only EdDSA is allowed"
            )
        return cls(kid if kid is not None else jwk_thumbprint(key.public_key()), key)


def generate_signing_key(kid: str | None = None) -> SigningKey:
    """A fresh Ed25519 signing key; ``kid`` defaults to the RFC 7638 thumbprint."""
    key = Ed25519PrivateKey.generate()
    return SigningKey(kid if kid is not None else jwk_thumbprint(key.public_key()), key)


def _load_public(kid: str, pem: bytes | str) -> Ed25519PublicKey:
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"public key {kid!r} is not a PEM SubjectPublicKeyInfo public key"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(
            f"public key {kid!r} is a {type(key).__name__}, not Ed25519; only EdDSA is allowed"
        )
    return _check_public(kid, key)


class KeySet:
    """The verifier's public keys by ``kid``.

    During rotation the operator publishes old public keys beside the new one until every
    token they signed has expired; verification picks the key named by the token's ``kid``.
    """

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str | bytes]) -> KeySet:
        """Keys from ``{kid: pem}`` or ConfigMap-style ``{"<kid>.pem": pem}`` entries."""
        keys = cls()
        for name, pem in mapping.items():
            kid = name[: -len(".pem")] if name.endswith(".pem") else name
            if kid in keys:
                raise ConfigError(f"key id {kid!r} appears twice in the key set")
            keys.add(kid, pem)
        return keys

    def to_mapping(self) -> dict[str, str]:
        """ConfigMap data: ``{"<kid>.pem": public PEM}``."""
        return {f"{kid}.pem": _public_pem(key).decode("ascii") for kid, key in self._keys.items()}

    def add(self, kid: str, public_key: Ed25519PublicKey | str | bytes) -> None:
        """Add a public key (object or PEM); a kid already bound to another key is refused."""
        _check_kid(kid)
        if isinstance(public_key, Ed25519PublicKey):
            key = _check_public(kid, public_key)
        elif isinstance(public_key, str | bytes):
            key = _load_public(kid, public_key)
        else:
            raise ConfigError(f"public key {kid!r} must be an Ed25519 key or its PEM")
        existing = self._keys.get(kid)
        if existing is not None and _public_pem(existing) != _public_pem(key):
            raise ConfigError(f"key id {kid!r} is already bound to a different public key")
        self._keys[kid] = key

    def remove(self, kid: str) -> None:
        """Retire a key: tokens it signed are rejected as ``UnknownKey`` from now on."""
        self._keys.pop(kid, None)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeySet(kids={sorted(self._keys)!r})"


__all__ = ["KeySet", "SigningKey", "generate_signing_key", "jwk_thumbprint", "weak_public_key"]

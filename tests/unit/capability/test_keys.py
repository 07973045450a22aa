"""Weak Ed25519 public keys are refused wherever public keys are loaded.

A small-order key makes OpenSSL's (cofactorless) verifier accept a forged signature for any
message: with one in the public-keys ConfigMap anyone could mint capability tokens. Refused:
every small-order point in every encoding, non-canonical encodings, points off the curve and
points with a small-order component.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from wingman.capability import keys as keymod
from wingman.capability.keys import KeySet, generate_signing_key, weak_public_key
from wingman.capability.tokens import verify
from wingman.errors import ConfigError, GrantDenied, TokenRejected
from wingman.gateway.checks import load_keys

P = 2**255 - 19

# The small-order points as libsodium's blocklist spells them (orders 1, 2, 4, 8).
SMALL_ORDER = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
]


def _encode(y: int, sign: int) -> bytes:
    return (y | (sign << 255)).to_bytes(32, "little")


def _all_encodings() -> list[bytes]:
    """Every encoding of every small-order point, both sign bits, y and y + p."""
    out: set[bytes] = set()
    for text in SMALL_ORDER:
        raw = int.from_bytes(bytes.fromhex(text), "little")
        y = raw & ((1 << 255) - 1)
        for sign in (0, 1):
            out.add(_encode(y, sign))
            if y + P < 2**255:
                out.add(_encode(y + P, sign))
    return sorted(out)


def _non_canonical() -> list[bytes]:
    """y >= p for every y that still fits, with either sign bit (points or not)."""
    return [_encode(y, sign) for y in range(P, 2**255) for sign in (0, 1)]


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _pem(raw: bytes) -> bytes:
    return Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _mixed_order(raw_good: bytes, torsion_hex: str) -> bytes:
    """A sound key plus a small-order point: the same key to the eye, a torsion component."""
    good = keymod._decode_point(raw_good)
    torsion = keymod._decode_point(bytes.fromhex(torsion_hex))
    assert not isinstance(good, str) and not isinstance(torsion, str)
    x, y, z, _t = keymod._add(good, torsion)
    zi = pow(z, P - 2, P)
    return _encode(y * zi % P, (x * zi % P) & 1)


def test_the_threat_is_real_openssl_accepts_a_forgery_under_the_identity_key() -> None:
    identity = bytes.fromhex(SMALL_ORDER[0])
    Ed25519PublicKey.from_public_bytes(identity).verify(identity + bytes(32), b"any message")


@pytest.mark.parametrize("raw", _all_encodings(), ids=lambda b: b.hex()[:12] + b.hex()[-2:])
def test_every_small_order_encoding_is_refused(raw: bytes) -> None:
    assert weak_public_key(raw) is not None
    with pytest.raises(ConfigError, match="refused"):
        KeySet.from_mapping({"evil.pem": _pem(raw)})
    with pytest.raises(ConfigError, match="refused"):
        KeySet().add("evil", Ed25519PublicKey.from_public_bytes(raw))


def test_non_canonical_encodings_are_refused() -> None:
    encodings = _non_canonical()
    assert len(encodings) == 38
    for raw in encodings:
        assert weak_public_key(raw) is not None, raw.hex()


def test_negative_zero_x_is_refused() -> None:
    # y = 1 with the sign bit set: x = 0 cannot be negative.
    assert "non-canonical" in (weak_public_key(_encode(1, 1)) or "")


@pytest.mark.parametrize("torsion", SMALL_ORDER[1:], ids=range(1, len(SMALL_ORDER)))
def test_keys_with_a_small_order_component_are_refused(torsion: str) -> None:
    good = _raw(generate_signing_key().public_key)
    mixed = _mixed_order(good, torsion)
    assert mixed != good
    assert "prime-order subgroup" in (weak_public_key(mixed) or "")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_arbitrary_bytes_are_either_sound_or_refused_with_a_reason(raw: bytes) -> None:
    why = weak_public_key(raw)
    if why is None:
        # A sound key is a prime-order point: OpenSSL rejects the identity forgery under it.
        key = Ed25519PublicKey.from_public_bytes(raw)
        with pytest.raises(InvalidSignature):
            key.verify(bytes.fromhex(SMALL_ORDER[0]) + bytes(32), b"m")
    else:
        assert why.startswith("is ")


def test_generated_keys_are_always_accepted() -> None:
    for _ in range(50):
        key = generate_signing_key()
        assert weak_public_key(_raw(key.public_key)) is None
        KeySet.from_mapping({f"{key.kid}.pem": key.public_pem()})


def _forged_token(kid: str) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = {"alg": "EdDSA", "typ": "wingman-capability+jwt", "kid": kid}
    claims = {"iss": "i", "aud": "test", "sub": "mallory", "iat": now, "nbf": now,
              "exp": now + 60, "jti": "j" * 32}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(bytes.fromhex(SMALL_ORDER[0]) + bytes(32))}"


def test_the_gateway_refuses_a_small_order_key_in_its_key_directory(tmp_path: Path) -> None:
    good = generate_signing_key()
    (tmp_path / f"{good.kid}.pem").write_bytes(good.public_pem())
    (tmp_path / "evil.pem").write_bytes(_pem(bytes.fromhex(SMALL_ORDER[0])))
    with pytest.raises(GrantDenied) as err:
        load_keys(tmp_path)
    assert err.value.reason == "InvalidPublicKey"
    assert "small-order" in err.value.message
    # Without the weak key the directory loads, and the forged token is still refused.
    (tmp_path / "evil.pem").unlink()
    keys = load_keys(tmp_path)
    with pytest.raises(TokenRejected):
        verify(_forged_token(good.kid), keys, issuer="i", audience="test", now=time.time())

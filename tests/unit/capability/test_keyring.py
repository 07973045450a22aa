"""The signing-key Secret: parsing, rotation keeps old keys verifying, pruning, bad data."""

from __future__ import annotations

import base64
import time

import pytest

from wingman.capability import keyring as keys
from wingman.capability.keys import KeySet
from wingman.capability.tokens import mint, verify
from wingman.errors import ConfigError


def as_secret(data: dict[str, str]) -> dict[str, object]:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _mint(ring: keys.KeyRing) -> str:
    token, _ = mint(ring.signer, issuer="i", audience="test", subject="alice", namespace="ns",
                    approval_name="a", approval_uid="au", grant_name="g", grant_uid="gu",
                    command="kubectl get pods", now=time.time())
    return token


def test_round_trip_and_rotation_keeps_old_tokens_valid() -> None:
    ring = keys.new_ring()
    parsed = keys.ring_from_secret(as_secret(ring.secret_data()), "s")
    assert parsed.active == ring.active and set(parsed.keys) == set(ring.keys)
    old_token = _mint(ring)
    rotated = keys.rotate(ring)
    assert rotated.active != ring.active and set(rotated.keys) == {ring.active, rotated.active}
    published = KeySet.from_mapping(rotated.public_data())
    for token in (old_token, _mint(rotated)):
        assert verify(token, published, issuer="i", audience="test", now=time.time()).sub == \
            "alice"
    pruned = keys.prune(rotated)
    assert set(pruned.keys) == {rotated.active}
    assert all("PRIVATE" not in pem for pem in rotated.public_data().values())


@pytest.mark.parametrize(("data", "message"), [
    ({}, "holds no <kid>.pem"),
    ({"k.pem": "not a key"}, "not an Ed25519 private key"),
])
def test_bad_secrets_are_refused_with_advice(data: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        keys.ring_from_secret(as_secret(data), "s")


def test_active_must_name_a_key() -> None:
    ring = keys.new_ring()
    data = ring.secret_data()
    data["active"] = "missing"
    with pytest.raises(ConfigError, match="'active' names 'missing'"):
        keys.ring_from_secret(as_secret(data), "s")

"""Capability tokens: what a gateway accepts, and the attack list it must reject.

Forged tokens are built by hand (header and payload JSON, base64url, signature) so that every
header, claim and encoding detail is under the test's control; "signed with the real key"
means the attacker somehow got a token shape past the operator but not the private key, or
the operator has a bug. Every rejection is also checked for leaking the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wingman.capability.keys import KeySet, SigningKey, generate_signing_key, jwk_thumbprint
from wingman.capability.tokens import (
    MAX_TOKEN_BYTES,
    MAX_TTL_SECONDS,
    TOKEN_TYPE,
    CapabilityClaims,
    Expected,
    grant_jti,
    jti_sha256,
    mint,
    token_sha256,
    verify,
)
from wingman.errors import ConfigError, TokenRejected

NOW = 1_750_000_000
ISS = "wingman-operator"
AUD = "prod"
COMMAND = "kubectl rollout restart deployment/web"
LEEWAY = 5

# One key pair for the whole module: generating keys is cheap, but a fixed key keeps
# hypothesis examples reproducible within a run.
KEY = generate_signing_key()
KEYS = KeySet()
KEYS.add(KEY.kid, KEY.public_pem())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def js(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def mint_default(**overrides: Any) -> tuple[str, CapabilityClaims]:
    args: dict[str, Any] = {
        "issuer": ISS,
        "audience": AUD,
        "subject": "agent-7",
        "namespace": "team-a",
        "approval_name": "restart-web",
        "approval_uid": "11111111-aaaa",
        "grant_name": "restart-web-1",
        "grant_uid": "22222222-bbbb",
        "command": COMMAND,
        "job_uid": "33333333-cccc",
        "now": NOW,
        "jti": "jti-0001",
    }
    args.update(overrides)
    key = args.pop("key", KEY)
    return mint(key, **args)


def good_payload() -> dict[str, Any]:
    _, claims = mint_default()
    return claims.to_payload()


def good_header(**extra: Any) -> dict[str, Any]:
    return {"alg": "EdDSA", "kid": KEY.kid, "typ": TOKEN_TYPE, **extra}


def forge(
    header: dict[str, Any] | bytes,
    payload: dict[str, Any] | bytes,
    *,
    signer: ed25519.Ed25519PrivateKey | None = None,
) -> str:
    """A JWS compact token signed with Ed25519 (the real key unless another is given)."""
    h = header if isinstance(header, bytes) else js(header)
    p = payload if isinstance(payload, bytes) else js(payload)
    signing_input = f"{b64(h)}.{b64(p)}".encode()
    signature = (signer or KEY.private_key).sign(signing_input)
    return f"{signing_input.decode()}.{b64(signature)}"


def check(token: str, **kwargs: Any) -> CapabilityClaims:
    kwargs.setdefault("now", NOW + 1)
    return verify(token, kwargs.pop("keys", KEYS), issuer=ISS, audience=AUD, **kwargs)


def rejected(token: Any, reason: str, **kwargs: Any) -> TokenRejected:
    """Assert rejection with ``reason`` and that the message leaks nothing of the token."""
    with pytest.raises(TokenRejected) as info:
        check(token, **kwargs)
    exc = info.value
    assert exc.reason == reason, f"expected {reason}, got {exc.reason}: {exc}"
    assert_no_leak(token, exc)
    return exc


def assert_no_leak(token: Any, exc: BaseException) -> None:
    if not isinstance(token, str):
        return
    text = str(exc) + repr(exc)
    for part in [token, *token.split(".")]:
        if len(part) >= 8:
            assert part not in text
    # no chained library exception (whose message might quote the header) travels with it
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


# ------------------------------------------------------------------------------------------
# Round trip


def test_minted_token_verifies_with_all_claims() -> None:
    token, claims = mint_default()
    got = check(
        token,
        expected=Expected(
            approval_uid="11111111-aaaa",
            grant_uid="22222222-bbbb",
            job_uid="33333333-cccc",
            namespace="team-a",
            command=COMMAND,
        ),
    )
    assert got == claims
    assert got.iat == got.nbf == NOW and got.exp == NOW + 300
    assert got.command_sha256 == hashlib.sha256(COMMAND.encode()).hexdigest()
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "kid": KEY.kid, "typ": "wingman-capability+jwt"}


def test_documented_claim_names() -> None:
    token, _ = mint_default()
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["wingman.dev/approval"] == {"name": "restart-web", "uid": "11111111-aaaa"}
    assert payload["wingman.dev/grant"] == {"name": "restart-web-1", "uid": "22222222-bbbb"}
    assert payload["wingman.dev/command"]["text"] == COMMAND
    assert payload["wingman.dev/job"] == {"uid": "33333333-cccc"}
    assert payload["wingman.dev/ns"] == "team-a"
    assert isinstance(payload["aud"], str)


def test_mint_floors_fractional_now_and_generates_distinct_jtis() -> None:
    first, c1 = mint_default(now=NOW + 0.9, jti=None)
    second, c2 = mint_default(now=NOW + 0.9, jti=None)
    assert c1.iat == NOW
    assert c1.jti != c2.jti and first != second


def test_minting_is_deterministic_so_a_lost_token_can_be_made_again_exactly() -> None:
    """The operator stores a token it minted but could not store again only because the same
    inputs give the same token, byte for byte; any input that differs gives another one."""
    jti = grant_jti(KEY, "grant-uid-1")
    first, claims = mint_default(jti=jti, now=NOW + 0.9)
    again, _ = mint_default(jti=jti, now=NOW)
    assert again == first and claims.jti == jti and claims.iat == NOW
    assert mint_default(jti=jti, now=NOW + 1)[0] != first
    assert mint_default(jti=jti, ttl_seconds=301)[0] != first
    assert mint_default(key=generate_signing_key(), jti=jti)[0] != first  # a rotated key


def test_a_grants_jti_is_fixed_per_grant_and_key_and_unpredictable_without_the_key() -> None:
    jti = grant_jti(KEY, "grant-uid-1")
    assert jti == grant_jti(KEY, "grant-uid-1") and len(jti) == 32
    assert int(jti, 16) >= 0 and jti == jti.lower()  # a DNS-safe burn-marker name
    assert grant_jti(KEY, "grant-uid-2") != jti
    assert grant_jti(generate_signing_key(), "grant-uid-1") != jti
    # not a hash anyone can compute from the grant's UID alone
    assert jti not in {hashlib.sha256(b"grant-uid-1").hexdigest()[:32],
                       hashlib.sha256(b"wingman.dev/jti\x00grant-uid-1").hexdigest()[:32]}
    # and only a hash of the signature leaves the function, never the signature
    sig = KEY.private_key.sign(b"wingman.dev/jti\x00grant-uid-1")
    assert jti == hashlib.sha256(sig).hexdigest()[:32] and sig.hex()[:32] != jti
    with pytest.raises(ConfigError):
        grant_jti(KEY, "")


def test_what_the_trail_records_of_a_jti_does_not_name_its_burn_marker() -> None:
    jti = grant_jti(KEY, "grant-uid-1")
    digest = jti_sha256(jti)
    assert digest == "sha256:" + hashlib.sha256(jti.encode()).hexdigest()
    assert jti not in digest and jti_sha256(grant_jti(KEY, "grant-uid-2")) != digest
    with pytest.raises(ConfigError):
        jti_sha256("")


def test_unbound_token_verifies_when_no_job_is_expected() -> None:
    token, claims = mint_default(job_uid=None)
    assert claims.job_uid is None
    assert check(token, expected=Expected(grant_uid="22222222-bbbb")).job_uid is None


@pytest.mark.parametrize("ttl", [0, -1, MAX_TTL_SECONDS + 1, True, 1.5])
def test_mint_refuses_bad_ttl(ttl: Any) -> None:
    with pytest.raises(ConfigError):
        mint_default(ttl_seconds=ttl)


def test_mint_accepts_the_hard_maximum_ttl() -> None:
    token, claims = mint_default(ttl_seconds=MAX_TTL_SECONDS)
    assert claims.exp - claims.iat == MAX_TTL_SECONDS
    check(token, now=NOW + MAX_TTL_SECONDS - 1)


@pytest.mark.parametrize(
    "field", ["issuer", "audience", "subject", "namespace", "approval_uid", "grant_uid", "command"]
)
def test_mint_refuses_empty_fields(field: str) -> None:
    with pytest.raises(ConfigError):
        mint_default(**{field: ""})


def test_mint_refuses_a_token_too_large_for_the_gateway() -> None:
    with pytest.raises(ConfigError, match="too long"):
        mint_default(command="kubectl get " + '"' * 4000)


def test_mint_refuses_non_text_command() -> None:
    with pytest.raises(ConfigError):
        mint_default(command="kubectl get \ud800")


# ------------------------------------------------------------------------------------------
# Keys


def test_rfc8037_thumbprint_vector() -> None:
    # RFC 8037 Appendix A.2/A.3: the Ed25519 example key and its RFC 7638 thumbprint.
    x = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    public = ed25519.Ed25519PublicKey.from_public_bytes(x)
    assert jwk_thumbprint(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_signing_key_pem_round_trip_and_default_kid() -> None:
    key = generate_signing_key()
    assert key.kid == jwk_thumbprint(key.public_key)
    loaded = SigningKey.from_pem(key.private_pem())
    assert loaded.kid == key.kid
    token, _ = mint_default(key=loaded)
    keys = KeySet()
    keys.add(key.kid, key.public_pem())
    check(token, keys=keys)
    assert SigningKey.from_pem(key.private_pem().decode(), kid="given").kid == "given"


def test_signing_key_repr_hides_the_key() -> None:
    key = generate_signing_key("k1")
    pem_body = key.private_pem().decode().splitlines()[1]
    assert pem_body not in repr(key) and repr(key) == "SigningKey(kid='k1')"


def test_signing_key_rejects_other_key_types() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError, match="not Ed25519"):
        SigningKey.from_pem(other)
    with pytest.raises(ConfigError):
        SigningKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")


@pytest.mark.parametrize("kid", ["", "../../etc/passwd", "a b", "k\x00", "x" * 129, "ключ"])
def test_invalid_kids_are_refused(kid: str) -> None:
    with pytest.raises(ConfigError):
        generate_signing_key(kid)
    with pytest.raises(ConfigError):
        KeySet().add(kid, KEY.public_pem())


def test_keyset_mapping_round_trip_and_pem_suffix() -> None:
    old, new = generate_signing_key("old"), generate_signing_key("new")
    mapping: dict[str, str | bytes] = {
        "old.pem": old.public_pem().decode(),
        "new": new.public_pem(),
    }
    keys = KeySet.from_mapping(mapping)
    assert "old" in keys and "new" in keys and "old.pem" not in keys
    again = KeySet.from_mapping(keys.to_mapping())
    assert set(again) == {"old", "new"}
    assert set(keys.to_mapping()) == {"old.pem", "new.pem"}
    token, _ = mint_default(key=old)
    check(token, keys=again)


def test_keyset_refuses_duplicates_and_non_ed25519_keys() -> None:
    pem = KEY.public_pem().decode()
    with pytest.raises(ConfigError, match="twice"):
        KeySet.from_mapping({"a": pem, "a.pem": pem})
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(ConfigError, match="not Ed25519"):
        KeySet.from_mapping(
            {
                "r": rsa_pem.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            }
        )
    with pytest.raises(ConfigError):
        KeySet.from_mapping({"g": "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----"})
    keys = KeySet()
    keys.add("a", pem)
    with pytest.raises(ConfigError, match="different"):
        keys.add("a", generate_signing_key().public_pem())


def test_rotation_old_key_verifies_until_removed() -> None:
    old, new = generate_signing_key(), generate_signing_key()
    keys = KeySet()
    keys.add(old.kid, old.public_pem())
    keys.add(new.kid, new.public_pem())
    old_token, _ = mint_default(key=old)
    new_token, _ = mint_default(key=new)
    check(old_token, keys=keys)
    check(new_token, keys=keys)
    keys.remove(old.kid)
    rejected(old_token, "UnknownKey", keys=keys)
    check(new_token, keys=keys)


# ------------------------------------------------------------------------------------------
# Algorithm attacks


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
@pytest.mark.parametrize("with_signature", [False, True])
def test_alg_none_is_rejected(alg: str, with_signature: bool) -> None:
    valid, _ = mint_default()
    signature = valid.split(".")[2] if with_signature else ""
    token = f"{b64(js(good_header(alg=alg)))}.{b64(js(good_payload()))}.{signature}"
    rejected(token, "BadAlgorithm")


def _public_jwk() -> bytes:
    raw = KEY.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return js({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)})


@pytest.mark.parametrize(
    "secret",
    [
        KEY.public_pem(),
        KEY.public_pem().strip(),
        _public_jwk(),
        KEY.public_key.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        KEY.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    ],
    ids=["pem", "pem-stripped", "jwk", "openssh", "raw"],
)
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_with_the_public_key_as_secret_is_rejected(secret: bytes, alg: str) -> None:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = f"{b64(js(good_header(alg=alg)))}.{b64(js(good_payload()))}"
    mac = hmac.new(secret, signing_input.encode(), digest).digest()
    rejected(f"{signing_input}.{b64(mac)}", "BadAlgorithm")


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256"])
def test_other_asymmetric_algorithms_are_rejected(alg: str) -> None:
    other: Any = (
        ec.generate_private_key(ec.SECP256R1())
        if alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    token = jwt.encode(good_payload(), other, algorithm=alg, headers=good_header(alg=alg))
    rejected(token, "BadAlgorithm")


def test_eddsa_signed_by_another_key_under_our_kid_is_rejected() -> None:
    rejected(
        forge(good_header(), good_payload(), signer=ed25519.Ed25519PrivateKey.generate()),
        "BadSignature",
    )


# ------------------------------------------------------------------------------------------
# Header attacks


@pytest.mark.parametrize(
    "extra",
    [
        {"jku": "https://evil.example/jwks.json"},
        {"x5u": "https://evil.example/cert.pem"},
        {
            "jwk": {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            }
        },
        {"x5c": ["MIIB"]},
        {"crit": ["exp"]},
        {"crit": ["b64"], "b64": False},
        {"b64": True},
        {"cty": "JWT"},
        {"zip": "DEF"},
    ],
    ids=lambda e: "+".join(e),
)
def test_dangerous_or_unknown_header_parameters_are_rejected(extra: dict[str, Any]) -> None:
    rejected(forge(good_header(**extra), good_payload()), "BadHeader")


@pytest.mark.parametrize(
    "kid", [None, 7, "", "../../dev/null", "' OR 1=1 --", "k\x00", ["a"], "x" * 200]
)
def test_missing_or_ill_formed_kid_is_rejected(kid: Any) -> None:
    header = good_header(kid=kid)
    if kid is None:
        del header["kid"]
    rejected(forge(header, good_payload()), "BadHeader")


def test_unknown_kid_is_rejected() -> None:
    rejected(forge(good_header(kid="not-a-known-key"), good_payload()), "UnknownKey")


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "wingman-capability+JWT", "", None, 1])
def test_wrong_or_missing_type_is_rejected(typ: Any) -> None:
    header = good_header(typ=typ)
    if typ is None:
        del header["typ"]
    rejected(forge(header, good_payload()), "WrongType")


# ------------------------------------------------------------------------------------------
# Claim attacks


TOP_LEVEL_CLAIMS = sorted(good_payload())
NESTED_FIELDS = [
    ("wingman.dev/approval", "name"),
    ("wingman.dev/approval", "uid"),
    ("wingman.dev/grant", "name"),
    ("wingman.dev/grant", "uid"),
    ("wingman.dev/command", "text"),
    ("wingman.dev/command", "sha256"),
    ("wingman.dev/job", "uid"),
]


def test_all_claims_are_listed() -> None:
    assert len(TOP_LEVEL_CLAIMS) == 12


@pytest.mark.parametrize("claim", TOP_LEVEL_CLAIMS)
def test_each_stripped_claim_is_rejected(claim: str) -> None:
    payload = good_payload()
    del payload[claim]
    rejected(forge(good_header(), payload), "MissingClaim")


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "jti", "iat", "nbf", "exp"])
def test_each_null_registered_claim_counts_as_missing(claim: str) -> None:
    payload = good_payload()
    payload[claim] = None
    rejected(forge(good_header(), payload), "MissingClaim")


@pytest.mark.parametrize(("claim", "field"), NESTED_FIELDS)
def test_each_stripped_nested_field_is_rejected(claim: str, field: str) -> None:
    payload = good_payload()
    del payload[claim][field]
    rejected(forge(good_header(), payload), "MissingClaim")


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", str(NOW + 300)),
        ("exp", float(NOW + 300)),
        ("exp", True),
        ("nbf", -1),
        ("exp", 2**70),
        ("jti", 42),
        ("jti", ""),
        ("sub", ["agent-7"]),
        ("wingman.dev/ns", ""),
        ("wingman.dev/approval", "restart-web"),
        ("wingman.dev/grant", {"name": "g", "uid": "u", "extra": "x"}),
        ("wingman.dev/job", {"uid": 5}),
        ("wingman.dev/command", {"text": "", "sha256": "0" * 64}),
    ],
)
def test_claims_of_the_wrong_shape_are_rejected(claim: str, value: Any) -> None:
    payload = good_payload()
    payload[claim] = value
    rejected(forge(good_header(), payload), "Malformed")


def test_unknown_claim_is_rejected() -> None:
    payload = good_payload()
    payload["scope"] = "admin"
    rejected(forge(good_header(), payload), "Malformed")


@pytest.mark.parametrize(
    "aud", [[AUD], [AUD, "staging"], ["staging", AUD], "staging", "PROD", "prod ", {"a": AUD}]
)
def test_audience_must_be_exactly_the_environment(aud: Any) -> None:
    payload = good_payload()
    payload["aud"] = aud
    exc = rejected(forge(good_header(), payload), "WrongAudience")
    assert "staging" not in str(exc)


@pytest.mark.parametrize("iss", ["wingman-operator2", "wingman", "", ["wingman-operator"], 5])
def test_issuer_must_be_exact(iss: Any) -> None:
    payload = good_payload()
    payload["iss"] = iss
    rejected(forge(good_header(), payload), "WrongIssuer")


def test_tampered_payload_with_original_signature_is_rejected() -> None:
    token, _ = mint_default()
    header, _, signature = token.split(".")
    changes: list[dict[str, Any]] = [
        {"wingman.dev/command": {"text": "kubectl delete ns prod", "sha256": "0" * 64}},
        {"exp": NOW + 3000},
        {"aud": AUD, "sub": "someone-else"},
    ]
    for change in changes:
        payload = {**good_payload(), **change}
        rejected(f"{header}.{b64(js(payload))}.{signature}", "BadSignature")
    # a re-serialised but semantically identical payload is also a different message
    spaced = json.dumps(good_payload(), indent=1).encode()
    rejected(f"{header}.{b64(spaced)}.{signature}", "BadSignature")


def test_swapped_header_with_original_signature_is_rejected() -> None:
    token, _ = mint_default()
    _, payload, signature = token.split(".")
    header = b64(json.dumps(good_header(), sort_keys=False).encode())
    assert header != token.split(".")[0]
    rejected(f"{header}.{payload}.{signature}", "BadSignature")


def test_duplicate_json_keys_are_rejected_even_when_signed() -> None:
    payload = js(good_payload())
    doubled = payload[:-1] + b',"aud":"staging"}'
    rejected(forge(good_header(), doubled), "Malformed")
    header = b'{"alg":"EdDSA","alg":"none","kid":"' + KEY.kid.encode() + b'","typ":"x"}'
    rejected(forge(header, good_payload()), "Malformed")


def test_non_finite_numbers_are_rejected() -> None:
    payload = js(good_payload()).replace(str(NOW + 300).encode(), b"Infinity")
    rejected(forge(good_header(), payload), "Malformed")


# ------------------------------------------------------------------------------------------
# Time


def test_expiry_at_the_leeway_boundary() -> None:
    token, claims = mint_default()
    check(token, now=claims.exp + LEEWAY - 1)
    check(token, now=claims.exp + LEEWAY - 0.001)
    rejected(token, "Expired", now=claims.exp + LEEWAY)
    rejected(token, "Expired", now=claims.exp + LEEWAY + 1)
    rejected(token, "Expired", now=claims.exp + 10_000)


def test_issued_in_future_at_the_leeway_boundary() -> None:
    token, claims = mint_default()
    check(token, now=claims.iat - LEEWAY + 1)
    check(token, now=claims.iat - LEEWAY)
    rejected(token, "IssuedInFuture", now=claims.iat - LEEWAY - 1)


def test_not_before_at_the_leeway_boundary() -> None:
    payload = good_payload()
    payload["nbf"] = NOW + 100
    token = forge(good_header(), payload)
    check(token, now=NOW + 100 - LEEWAY + 1)
    check(token, now=NOW + 100 - LEEWAY)
    rejected(token, "NotYetValid", now=NOW + 100 - LEEWAY - 1)


def test_leeway_zero_is_exact() -> None:
    token, claims = mint_default()
    check(token, now=claims.exp - 1, leeway=0)
    rejected(token, "Expired", now=claims.exp, leeway=0)


def test_lifetime_above_the_hard_maximum_is_rejected() -> None:
    payload = good_payload()
    payload["exp"] = payload["iat"] + MAX_TTL_SECONDS
    check(forge(good_header(), payload))
    payload["exp"] = payload["iat"] + MAX_TTL_SECONDS + 1
    rejected(forge(good_header(), payload), "LifetimeTooLong")


@pytest.mark.parametrize(("nbf", "exp"), [(NOW - 1, NOW + 300), (NOW + 300, NOW + 300)])
def test_incoherent_times_are_rejected(nbf: int, exp: int) -> None:
    payload = good_payload()
    payload["nbf"], payload["exp"] = nbf, exp
    rejected(forge(good_header(), payload), "Malformed")


@pytest.mark.parametrize("leeway", [-1, 61, 1.5, True])
def test_bad_leeway_is_a_configuration_error(leeway: Any) -> None:
    token, _ = mint_default()
    with pytest.raises(ConfigError):
        check(token, leeway=leeway)


# ------------------------------------------------------------------------------------------
# Command and bindings


def test_command_hash_must_match_the_command() -> None:
    for digest in [
        "0" * 64,
        hashlib.sha256(b"kubectl delete ns prod").hexdigest(),
        hashlib.sha256(COMMAND.encode()).hexdigest().upper(),
        "abc",
    ]:
        payload = good_payload()
        payload["wingman.dev/command"]["sha256"] = digest
        rejected(forge(good_header(), payload), "CommandHashMismatch")


def test_lone_surrogate_command_is_rejected() -> None:
    payload = js(good_payload()).replace(COMMAND.encode(), b"kubectl \\ud800")
    rejected(forge(good_header(), payload), "Malformed")


@pytest.mark.parametrize(
    "expected",
    [
        Expected(approval_uid="11111111-aaaX"),
        Expected(grant_uid="22222222-bbbX"),
        Expected(job_uid="33333333-cccX"),
        Expected(namespace="team-b"),
        Expected(command=COMMAND + " "),
        Expected(command="kubectl rollout restart deployment/WEB"),
        Expected(approval_uid="11111111-aaaa", grant_uid="other"),
    ],
)
def test_binding_mismatches_are_rejected(expected: Expected) -> None:
    token, _ = mint_default()
    rejected(token, "BindingMismatch", expected=expected)


def test_expected_job_rejects_a_token_bound_to_no_job() -> None:
    token, _ = mint_default(job_uid=None)
    rejected(token, "BindingMismatch", expected=Expected(job_uid="33333333-cccc"))


# ------------------------------------------------------------------------------------------
# Encoding, size, garbage


def test_oversized_tokens_are_rejected_before_parsing() -> None:
    token, _ = mint_default()
    rejected(token + "A" * (MAX_TOKEN_BYTES + 1 - len(token)), "Oversized")
    rejected("x" * (MAX_TOKEN_BYTES * 100), "Oversized")
    rejected("A" * MAX_TOKEN_BYTES, "Malformed")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "eyJ.eyJ.",
        "....",
        "\x00.\x00.\x00",
        "é.é.é",
        b64(b"[1,2]") + "." + b64(b"{}") + ".AA",
        b64(b'"str"') + "." + b64(b"{}") + ".AA",
        b64(b"not json") + "." + b64(b"{}") + ".AA",
        b64(b"\xff\xfe") + "." + b64(b"{}") + ".AA",
        "=" + b64(js(good_header())) + "." + b64(b"{}") + ".AA",
        b64(js(good_header())) + ".!!!!." + "AA",
    ],
)
def test_garbage_is_malformed(garbage: str) -> None:
    rejected(garbage, "Malformed")


@pytest.mark.parametrize("not_a_string", [None, 5, b"a.b.c", ["a", "b", "c"]])
def test_non_string_tokens_are_malformed(not_a_string: Any) -> None:
    rejected(not_a_string, "Malformed")


def test_non_canonical_base64_is_rejected() -> None:
    token, _ = mint_default()
    header, payload, signature = token.split(".")
    # A 64-byte signature is 86 base64url characters: the last one carries 2 bits + 4 zero
    # padding bits. Setting a padding bit decodes to the same bytes but is another token.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    twin = signature[:-1] + alphabet[last | 1]
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(signature + "==")
    rejected(f"{header}.{payload}.{twin}", "Malformed")
    rejected(f"{header}.{payload}.{signature}==", "Malformed")
    rejected(f"{header}=.{payload}.{signature}", "Malformed")


def test_token_sha256_format() -> None:
    assert token_sha256("abc") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_rejection_message_names_the_token_hash() -> None:
    token, claims = mint_default()
    exc = rejected(token, "Expired", now=claims.exp + 60)
    assert token_sha256(token) in str(exc)


# ------------------------------------------------------------------------------------------
# Randomised mutations: zero accepted


VALID_TOKEN, _ = mint_default()
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \x00é"


@st.composite
def mutated_tokens(draw: st.DrawFn) -> str:
    token = VALID_TOKEN
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "flipbit"]))
        i = draw(st.integers(0, max(len(token) - 1, 0)))
        if kind == "replace":
            token = token[:i] + draw(st.sampled_from(TOKEN_ALPHABET)) + token[i + 1 :]
        elif kind == "insert":
            token = token[:i] + draw(st.text(TOKEN_ALPHABET, min_size=1, max_size=4)) + token[i:]
        elif kind == "delete":
            token = token[:i] + token[i + draw(st.integers(1, 4)) :]
        elif kind == "truncate":
            token = token[:i]
        else:  # flip one bit of one decoded byte of one segment, re-encode canonically
            segments = token.split(".")
            if len(segments) != 3:
                continue
            s = draw(st.integers(0, 2))
            try:
                raw = bytearray(
                    base64.urlsafe_b64decode(segments[s] + "=" * (-len(segments[s]) % 4))
                )
            except ValueError:
                continue
            if not raw:
                continue
            j = draw(st.integers(0, len(raw) - 1))
            raw[j] ^= 1 << draw(st.integers(0, 7))
            segments[s] = b64(bytes(raw))
            token = ".".join(segments)
    return token


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_tokens())
def test_every_mutation_of_a_valid_token_is_rejected(token: str) -> None:
    if token == VALID_TOKEN:
        check(token)
        return
    with pytest.raises(TokenRejected) as info:
        check(token)
    assert_no_leak(token, info.value)

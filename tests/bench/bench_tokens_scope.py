"""Benchmark: capability-token mint/verify cost and command-scope check throughput.

Run: ``.venv/bin/python tests/bench/bench_tokens_scope.py [--seconds 1.0]``

Prints, per operation, the median over 5 rounds:
- ``mint``: ``wingman.capability.tokens.mint`` (µs/op);
- ``verify``: ``wingman.capability.tokens.verify`` with every check and all bindings (µs/op);
- ``floor``: a raw ``jwt.decode`` of the same token with the same public key and PyJWT's own
  claim checks (require, strict_aud, issuer, leeway), i.e. the library cost ``verify`` builds on;
- the ratio verify/floor (the price of the extra header, schema and binding checks);
- ``scope.check`` per second on an approved, allowlisted command, and on a rejected one.

The figures are for people (and the SECURITY-NOTES target P1: verify p50 <= 200 µs); no test
asserts on them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jwt

from wingman.capability.keys import KeySet, generate_signing_key
from wingman.capability.tokens import Expected, mint, verify
from wingman.errors import ScopeViolation
from wingman.scope import Allowlist, check

NOW = 1_750_000_000
COMMAND = "kubectl scale deployment/web --replicas=3"


def per_op_seconds(fn: Callable[[], object], seconds: float) -> float:
    """Median seconds per call over 5 rounds of roughly ``seconds / 5`` each."""
    calls = 1
    while True:  # calibrate a batch size that takes ~10 ms
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if time.perf_counter() - start > 0.01:
            break
        calls *= 2
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        done = 0
        while time.perf_counter() - start < seconds / 5:
            for _ in range(calls):
                fn()
            done += calls
        rounds.append((time.perf_counter() - start) / done)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    seconds = parser.parse_args().seconds

    key = generate_signing_key()
    keys = KeySet()
    keys.add(key.kid, key.public_pem())
    public = key.public_key
    fields: dict[str, Any] = {
        "issuer": "wingman-operator",
        "audience": "prod",
        "subject": "agent-7",
        "namespace": "team-a",
        "approval_name": "scale-web",
        "approval_uid": "11111111-aaaa",
        "grant_name": "scale-web-1",
        "grant_uid": "22222222-bbbb",
        "command": COMMAND,
        "job_uid": "33333333-cccc",
    }
    token, _ = mint(key, now=NOW, jti="bench", **fields)
    expected = Expected(
        approval_uid="11111111-aaaa",
        grant_uid="22222222-bbbb",
        job_uid="33333333-cccc",
        namespace="team-a",
        command=COMMAND,
    )

    def do_mint() -> object:
        return mint(key, now=NOW, **fields)

    def do_verify() -> object:
        return verify(
            token, keys, issuer="wingman-operator", audience="prod", now=NOW + 1, expected=expected
        )

    def do_floor() -> object:
        return jwt.decode(
            token,
            public,
            algorithms=["EdDSA"],
            audience="prod",
            issuer="wingman-operator",
            leeway=5,
            options={
                "require": ["exp", "iat", "nbf", "jti", "aud", "iss", "sub"],
                "strict_aud": True,
                "verify_exp": False,  # the token's times are fixed in the past
                "verify_nbf": False,
                "verify_iat": False,
            },
        )

    allowlist = Allowlist.from_patterns(
        [
            "kubectl rollout restart deployment/*",
            "kubectl scale deployment/{name} --replicas={int:0..50}",
            "docker restart *",
        ]
    )
    approved = [COMMAND, "kubectl rollout restart deployment/api"]
    rejected = "kubectl scale deployment/web --replicas=3 --kubeconfig=/evil"

    def do_check() -> object:
        return check(COMMAND, approved=approved, allowlist=allowlist)

    def do_check_rejected() -> object:
        try:
            return check(rejected, approved=[rejected], allowlist=allowlist)
        except ScopeViolation as exc:
            return exc

    mint_s = per_op_seconds(do_mint, seconds)
    verify_s = per_op_seconds(do_verify, seconds)
    floor_s = per_op_seconds(do_floor, seconds)
    check_s = per_op_seconds(do_check, seconds)
    check_rej_s = per_op_seconds(do_check_rejected, seconds)

    print(f"token bytes            {len(token)}")
    print(f"mint                   {mint_s * 1e6:8.1f} µs/op")
    print(f"verify (all checks)    {verify_s * 1e6:8.1f} µs/op")
    print(f"floor: raw jwt.decode  {floor_s * 1e6:8.1f} µs/op")
    print(f"verify / floor         {verify_s / floor_s:8.2f}")
    print(f"scope.check accepted   {1 / check_s:8.0f} /s")
    print(f"scope.check rejected   {1 / check_rej_s:8.0f} /s")


if __name__ == "__main__":
    main()

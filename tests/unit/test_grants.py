"""Grant authorization as a pure function: every denial reason, in order, and the happy path."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from wingman import grants
from wingman.policy import EnvironmentPolicy
from wingman.scope import Allowlist

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
CMD = "kubectl rollout restart deployment/web -n apps"
POLICY = EnvironmentPolicy.from_dict({
    "environment": "test", "allowlist": ["kubectl rollout restart deployment/{name} -n apps"],
    "tokenTTLSeconds": 300, "maxTokenTTLSeconds": 600})
ALLOW = Allowlist.from_patterns(POLICY.allowlist)


def approval(*conds: tuple[str, str], env: str = "test", commands: tuple[str, ...] = (CMD,),
             expires: str = "2026-11-26T00:00:00Z") -> dict[str, Any]:
    return {"metadata": {"name": "req", "uid": "a1"},
            "spec": {"environment": env, "commands": list(commands)},
            "status": {"expirationTime": expires, "phase": "x",
                       "conditions": [{"type": t, "status": s} for t, s in conds]}}


def grant(command: str = CMD, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "g", "namespace": "ns", "uid": "g1", "generation": 1},
            "spec": {"approvalRef": {"name": "req"}, "command": command, **spec}}


APPROVED = ("Approved", "True")


@pytest.mark.parametrize(("g", "a", "reason"), [
    (grant(), None, "ApprovalNotFound"),
    (grant(), approval(APPROVED, env="prd"), "EnvironmentMismatch"),
    (grant(), approval(("Reviewed", "True")), "ApprovalNotApproved"),
    (grant(), approval(("Rejected", "True")), "ApprovalRejected"),
    (grant(), approval(APPROVED, ("Revoked", "True")), "ApprovalRevoked"),
    (grant(), approval(APPROVED, ("Expired", "True")), "ApprovalExpired"),
    (grant(), approval(APPROVED, expires="2026-11-25T11:59:59Z"), "ApprovalExpired"),
    (grant(CMD + " "), approval(APPROVED), "CommandNotApproved"),
    (grant(CMD.replace("web", "wab")), approval(APPROVED), "CommandNotApproved"),
    (grant("kubectl delete ns apps"), approval(APPROVED, commands=("kubectl delete ns apps",)),
     "NotInAllowlist"),
    (grant(ttlSeconds=601), approval(APPROVED), "TTLAboveCap"),
])
def test_denials(g: dict[str, Any], a: dict[str, Any] | None, reason: str) -> None:
    auth = grants.authorize(g, a, POLICY, ALLOW, NOW)
    assert not auth.ok and auth.reason == reason and auth.message
    status = grants.denied_status(g, auth, NOW)
    assert status["phase"] == "Denied" and status["reason"] == reason
    assert status["conditions"][0]["status"] == "False"


def test_authorized_with_default_and_explicit_ttl() -> None:
    auth = grants.authorize(grant(), approval(APPROVED), POLICY, ALLOW, NOW)
    assert auth.ok and auth.ttl_seconds == 300 and auth.argv[:3] == ("kubectl", "rollout",
                                                                     "restart")
    assert grants.authorize(grant(ttlSeconds=600), approval(APPROVED), POLICY, ALLOW,
                            NOW).ttl_seconds == 600


def test_a_command_carrying_a_token_is_denied_before_anything_is_recorded() -> None:
    jwt_like = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"
    command = f"kubectl rollout restart deployment/web -n apps --token={jwt_like}"
    auth = grants.authorize(grant(command), approval(APPROVED, commands=(command,)),
                            EnvironmentPolicy.from_dict({
                                "environment": "test",
                                "allowlist": ["kubectl rollout restart deployment/{name} -n apps "
                                              "--token=*"]}),
                            Allowlist.from_patterns(["kubectl rollout restart deployment/{name} "
                                                     "-n apps --token=*"]), NOW)
    assert not auth.ok and auth.reason == "CommandLooksLikeToken"
    assert jwt_like not in auth.message

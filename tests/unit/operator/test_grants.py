"""Grant authorization as a pure function: every denial reason, in order, and the happy path."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from wingman.operator import grants
from wingman.review.policy import EnvironmentPolicy
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
            "spec": {"environment": env, "commands": list(commands), "requester": "alice"},
            "status": {"expirationTime": expires, "phase": "x",
                       "conditions": [{"type": t, "status": s} for t, s in conds]}}


def grant(command: str = CMD, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "g", "namespace": "ns", "uid": "g1", "generation": 1},
            "spec": {"approvalRef": {"name": "req"}, "command": command, **spec}}


APPROVED = ("Approved", "True")


@pytest.mark.parametrize(("g", "a", "reason"), [
    (grant(), None, "ApprovalNotFound"),
    (grant(), approval(APPROVED, env="prd"), "EnvironmentMismatch"),
    (grant(requester="mallory"), approval(APPROVED), "RequesterMismatch"),
    (grant(requester="mallory"), approval(("Rejected", "True")), "RequesterMismatch"),
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


@pytest.mark.parametrize("requester", [{}, {"requester": "alice"}])
def test_a_grant_in_the_requesters_name_or_naming_nobody_is_authorized(
        requester: dict[str, str]) -> None:
    assert grants.authorize(grant(**requester), approval(APPROVED), POLICY, ALLOW, NOW).ok


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


OTHER = "kubectl rollout restart deployment/api -n apps"


def test_the_first_grant_for_a_command_claims_it_and_keeps_what_is_already_recorded() -> None:
    a = approval(APPROVED, commands=(CMD, OTHER))
    a["status"]["grants"] = [{"command": OTHER, "grant": "api-1", "grantUID": "x",
                              "grantedAt": "2026-11-25T11:00:00Z"}]
    taken = grants.claim(grant(), a, NOW)
    assert taken.denial is None
    assert taken.grants == [
        {"command": OTHER, "grant": "api-1", "grantUID": "x", "grantedAt": "2026-11-25T11:00:00Z"},
        {"command": CMD, "grant": "g", "grantUID": "g1", "grantedAt": "2026-11-25T12:00:00Z"}]
    assert a["status"]["grants"][0] == taken.grants[0] and len(a["status"]["grants"]) == 1


def test_the_holder_claims_again_without_a_write_after_a_restart() -> None:
    a = approval(APPROVED)
    a["status"]["grants"] = grants.claim(grant(), a, NOW).grants
    again = grants.claim(grant(), a, NOW)
    assert again.denial is None and again.grants is None


def test_a_second_grant_for_a_granted_command_is_denied_naming_the_holder() -> None:
    a = approval(APPROVED)
    a["status"]["grants"] = grants.claim(grant(), a, NOW).grants
    second = grant()
    second["metadata"].update(name="g2", uid="g2-uid")
    taken = grants.claim(second, a, NOW)
    assert taken.grants is None and taken.denial is not None
    assert taken.denial.reason == "CommandAlreadyGranted"
    assert "'g'" in taken.denial.message and "new ApprovalRequest" in taken.denial.message


def test_a_claim_is_per_command_byte_for_byte() -> None:
    a = approval(APPROVED, commands=(CMD, OTHER))
    a["status"]["grants"] = grants.claim(grant(), a, NOW).grants
    other = grant(OTHER)
    other["metadata"].update(name="g2", uid="g2-uid")
    taken = grants.claim(other, a, NOW)
    assert taken.denial is None and taken.grants is not None and len(taken.grants) == 2


def test_a_denied_grant_is_not_ready_and_says_why() -> None:
    auth = grants.authorize(grant(ttlSeconds=601), approval(APPROVED), POLICY, ALLOW, NOW)
    status = grants.denied_status(grant(ttlSeconds=601), auth, NOW)
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Denied")
    assert ready["message"] == auth.message

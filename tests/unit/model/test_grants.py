"""A grant's phase as the operator and the gateway judge it: issued on the claim."""

from __future__ import annotations

from typing import Any

from wingman.model import grants


def _grant(status: dict[str, Any] | None = None, uid: str = "g-uid") -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "g1", "uid": uid, "resourceVersion": "7"},
                            "spec": {"command": "kubectl get pods"}}
    if status is not None:
        body["status"] = status
    return body


def _approval(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "r1"}, "status": {"grants": list(entries)}}


ISSUED = {"command": "kubectl get pods", "grant": "g1", "grantUID": "g-uid",
          "grantedAt": "2026-12-05T07:00:00Z", "tokenSHA256": "sha256:ab",
          "tokenExpirationTime": "2026-12-05T07:05:00Z", "jobName": "g1-gw",
          "tokenSecretName": "g1-gw-token-0123456789abcdef"}


def test_a_pending_grant_whose_claim_records_its_token_is_token_issued() -> None:
    seen = grants.view(_grant(), _approval(ISSUED))
    assert grants.phase(seen) == "TokenIssued"
    for name in grants.ISSUED_FIELDS:
        assert seen["status"][name] == ISSUED[name]
    assert seen["metadata"]["resourceVersion"] == "7"  # writes stay guarded by the grant's own


def test_the_view_is_a_copy() -> None:
    grant = _grant({"conditions": []})
    grants.view(grant, _approval(ISSUED))
    assert grant["status"] == {"conditions": []}


def test_a_claim_without_a_token_issues_nothing() -> None:
    claim = {k: v for k, v in ISSUED.items() if k not in grants.ISSUED_FIELDS}
    grant = _grant()
    assert grants.view(grant, _approval(claim)) is grant
    assert grants.issued_claim(grant, _approval(claim)) is None
    assert grants.claim_of(grant, _approval(claim)) == claim


def test_another_grants_claim_is_not_this_ones() -> None:
    grant = _grant(uid="other-uid")
    assert grants.view(grant, _approval(ISSUED)) is grant
    assert grants.claim_of(grant, _approval(ISSUED)) is None


def test_no_approval_no_uid_and_later_phases_are_left_as_they_are() -> None:
    assert grants.view(_grant(), None)["metadata"]["uid"] == "g-uid"
    assert grants.phase(grants.view(_grant(), None)) == "Pending"
    nameless = {"metadata": {"name": "g1"}}
    assert grants.claim_of(nameless, _approval(ISSUED)) is None
    for later in ("Running", "Succeeded", "Failed", "Expired", "Denied"):
        grant = _grant({"phase": later})
        assert grants.view(grant, _approval(ISSUED)) is grant


def test_a_status_that_records_another_token_is_not_issued_by_the_claim() -> None:
    grant = _grant({"tokenSHA256": "sha256:other"})
    assert grants.phase(grants.view(grant, _approval(ISSUED))) == "Pending"


def test_a_status_that_records_the_same_token_keeps_its_own_fields() -> None:
    grant = _grant({"tokenSHA256": "sha256:ab", "jobName": "recorded-gw"})
    seen = grants.view(grant, _approval(ISSUED))
    assert grants.phase(seen) == "TokenIssued"
    assert seen["status"]["jobName"] == "recorded-gw"
    assert seen["status"]["tokenSecretName"] == ISSUED["tokenSecretName"]


def test_entries_that_are_not_objects_are_skipped() -> None:
    approval = {"status": {"grants": ["garbage", None, ISSUED]}}
    assert grants.phase(grants.view(_grant(), approval)) == "TokenIssued"

"""When an approval may be acted on: the rule the operator and the gateway both apply.

A Reject in ``spec.decisions`` ends an approval by itself: the status the operator writes is
derived from the spec and may lag behind it (or be kept from catching up), so neither the
operator before it mints nor the gateway after it burned a token trusts the phase alone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from wingman.errors import GrantDenied
from wingman.gateway.checks import check_approval
from wingman.model.approvals import rejection, usable

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
LATER = "2026-06-01T13:00:00Z"


def approval(*decisions: Any, approved: bool = True, reason: str = "AutoApproved",
             extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    conds = [{"type": "Approved", "status": "True" if approved else "False", "reason": reason}]
    return {"metadata": {"name": "req"},
            "spec": {"requester": "alice", "decisions": list(decisions)},
            "status": {"phase": "AutoApproved" if approved else "AwaitingDecision",
                       "expirationTime": LATER, "conditions": conds + (extra or [])}}


def test_an_approved_approval_without_a_reject_is_usable() -> None:
    assert usable(approval(), NOW) == (True, "", "")
    assert usable(approval({"verdict": "Approve", "by": "bob"}, reason="HumanApproved"),
                  NOW)[0]


@pytest.mark.parametrize("decisions", [
    ({"verdict": "Reject", "by": "bob", "reason": "not now"},),
    ({"verdict": "Approve", "by": "bob"}, {"verdict": "Reject", "by": "carol"}),
    ({"verdict": "Reject", "by": "carol"}, {"verdict": "Approve", "by": "bob"}),
    ({"verdict": "Reject"},),
    ("garbage",),
])
def test_a_reject_in_the_spec_revokes_whatever_the_status_says(decisions: Any) -> None:
    body = approval(*decisions)  # the status still says AutoApproved: it did not catch up
    ok, reason, message = usable(body, NOW)
    assert (ok, reason) == (False, "ApprovalRevoked")
    assert "spec.decisions holds a Reject" in message
    with pytest.raises(GrantDenied) as err:
        check_approval(body, NOW)
    assert err.value.reason == "ApprovalRevoked"
    assert "nothing was executed" in err.value.message


def test_a_reject_before_any_approval_is_a_rejection() -> None:
    body = approval({"verdict": "Reject", "by": "bob"}, approved=False)
    assert usable(body, NOW)[:2] == (False, "ApprovalRejected")


def test_decisions_that_are_not_a_list_fail_closed() -> None:
    body = approval()
    body["spec"]["decisions"] = {"verdict": "Approve"}
    assert not usable(body, NOW)[0]
    assert rejection(body) is not None


def test_conditions_still_decide_first() -> None:
    revoked = approval(extra=[{"type": "Revoked", "status": "True"}])
    assert usable(revoked, NOW)[1] == "ApprovalRevoked"
    expired = approval()
    assert usable(expired, dt.datetime(2026, 6, 1, 13, 0, tzinfo=dt.UTC))[1] == \
        "ApprovalExpired"


def test_an_approval_being_deleted_is_refused_at_execution_too() -> None:
    body = approval()
    body["metadata"]["deletionTimestamp"] = "2026-06-01T11:59:00Z"
    assert usable(body, NOW)[1] == "ApprovalDeleted"
    with pytest.raises(GrantDenied) as exc:
        check_approval(body, NOW)
    assert exc.value.reason == "ApprovalDeleted" and "nothing was executed" in exc.value.message

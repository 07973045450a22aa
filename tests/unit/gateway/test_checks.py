"""The gateway's pure checks that need no cluster (the run itself: tests/integration)."""

from __future__ import annotations

from typing import Any

import pytest

from wingman.errors import GrantDenied
from wingman.gateway.checks import check_granted

CMD = "kubectl rollout restart deployment/web -n apps"


def approval(*grants: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "req"}, "status": {"grants": list(grants)}}


def entry(command: str = CMD, grant: str = "g", uid: str = "g1") -> dict[str, str]:
    return {"command": command, "grant": grant, "grantUID": uid,
            "grantedAt": "2026-11-25T12:00:00Z"}


def test_the_grant_the_approval_records_may_run() -> None:
    check_granted(approval(entry("kubectl get pods"), entry()), CMD, "g1", "g")


@pytest.mark.parametrize(("recorded", "reason", "names"), [
    ((), "CommandNotGranted", "no grant"),
    ((entry(grant="first", uid="u0"),), "CommandAlreadyGranted", "'first'"),
    ((entry(command=CMD + " "),), "CommandNotGranted", "no grant"),
])
def test_any_other_record_refuses(recorded: tuple[dict[str, str], ...], reason: str,
                                  names: str) -> None:
    with pytest.raises(GrantDenied) as err:
        check_granted(approval(*recorded), CMD, "g1", "g")
    assert err.value.reason == reason
    assert names in err.value.message and "nothing was executed" in err.value.message


def test_a_grant_named_like_the_holder_but_with_another_uid_is_refused() -> None:
    with pytest.raises(GrantDenied):
        check_granted(approval(entry()), CMD, "another-uid", "g")

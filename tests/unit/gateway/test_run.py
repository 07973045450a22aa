"""The gateway run's checks that need no API server."""

from __future__ import annotations

import pytest

from wingman.errors import GrantDenied
from wingman.gateway import run


@pytest.mark.parametrize("recorded", ["sha256:another", None])
def test_a_token_the_grant_does_not_record_is_refused_and_the_answer_says_a_new_request(
        recorded: str | None) -> None:
    """A TokenIssued grant whose status records another token (or none) refuses this pod's:
    nothing ran, the token is unspent, and as the approval holds the command for this grant
    (a new grant for it is refused CommandAlreadyGranted), the way on is a new request."""
    status = {"phase": "TokenIssued", **({"tokenSHA256": recorded} if recorded else {})}
    with pytest.raises(GrantDenied) as info:
        run._check_recorded({"status": status}, "sha256:this")
    assert info.value.reason == "BindingMismatch"
    assert "the token was not spent and nothing was executed" in info.value.message
    assert "submit a new request" in info.value.message
    assert "new grant" not in info.value.message

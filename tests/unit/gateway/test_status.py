"""The grant status the gateway writes carries the Ready summary health checks read."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from wingman import conditions
from wingman.gateway import status
from wingman.gateway.executors import ExecResult
from wingman.model import grants as grant_rules

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def grant(phase: str = "TokenIssued") -> dict[str, Any]:
    return {"metadata": {"name": "g", "uid": "g1", "generation": 2},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": "False", "reason": "TokenIssued", "message": "m",
                 "lastTransitionTime": "2026-11-25T11:00:00Z", "observedGeneration": 2}]}}


def ready(patch: dict[str, Any] | None) -> tuple[str, str, str]:
    assert patch is not None
    (cond,) = [c for c in patch["conditions"] if c["type"] == "Ready"]
    assert cond["observedGeneration"] == 2
    return cond["status"], cond["reason"], cond["lastTransitionTime"]


def result(exit_code: int, timed_out: bool = False) -> ExecResult:
    return ExecResult(exit_code=exit_code, output="ok", output_sha256="0" * 64, truncated=False,
                      timed_out=timed_out, started=NOW, finished=NOW)


def test_running_keeps_ready_false_with_the_phase_as_reason() -> None:
    assert ready(status.running_status(grant(), NOW)) == ("False", "Running",
                                                           "2026-11-25T11:00:00Z")


@pytest.mark.parametrize(("code", "timed_out", "expected"), [
    (0, False, ("True", "Succeeded")),
    (1, False, ("False", "Failed")),
    (0, True, ("False", "Failed")),
])
def test_the_result_sets_ready(code: int, timed_out: bool, expected: tuple[str, str]) -> None:
    patch = status.final_status(grant("Running"), result(code, timed_out), "sha256:x", NOW)
    assert ready(patch)[:2] == expected
    assert patch["phase"] == expected[1]


def test_a_command_killed_because_the_pod_was_stopped_failed_and_says_why() -> None:
    """Exit 0 or not, a command the gateway killed on SIGTERM did not run to its end."""
    killed = ExecResult(exit_code=0, output="ok", output_sha256="0" * 64, truncated=False,
                        started=NOW, finished=NOW, interrupted=True)
    patch = status.final_status(grant("Running"), killed, "sha256:x", NOW)
    assert (patch["phase"], patch["reason"]) == ("Failed", "CommandInterrupted")
    assert "SIGTERM" in patch["message"]
    assert ready(patch)[:2] == ("False", "Failed")


def test_a_refusal_is_not_ready() -> None:
    patch = status.refused_status(grant(), "TokenExpired", "expired", NOW, None)
    assert ready(patch)[:2] == ("False", "Failed")
    assert status.refused_status(grant("Succeeded"), "TokenExpired", "x", NOW, None) is None


@pytest.mark.parametrize("phase", ["Pending", ""])
def test_a_refusal_leaves_a_grant_whose_token_is_not_recorded_yet_to_the_operator(
        phase: str) -> None:
    """Until TokenIssued the status is the operator's alone (admission refuses the gateway's
    write); its Job watcher reports the gateway's failure."""
    assert status.refused_status(grant(phase), "GrantNotIssued", "x", NOW, None) is None


ISSUED = {"tokenSHA256": "sha256:" + "a" * 64, "tokenExpirationTime": "2026-11-25T12:05:00Z",
          "jobName": "g-gw", "tokenSecretName": "g-gw-token-0123456789abcdef"}


def claimed(phase: str = "Pending") -> dict[str, Any]:
    """A grant whose token was issued on its claim, as ``grants.view`` judges it."""
    g = grant(phase)
    approval = {"status": {"grants": [{"command": "c", "grant": "g", "grantUID": "g1",
                                       "grantedAt": "2026-11-25T12:00:00Z", **ISSUED}]}}
    return dict(grant_rules.view(g, approval))


def test_running_over_a_grant_issued_on_its_claim_records_its_token() -> None:
    """The stored status of such a grant is Pending, without the token fields: the Running
    write records them (nobody may change tokenSHA256 once set), so a grant that ran says which
    token it ran with."""
    patch = status.running_status(claimed(), NOW)
    assert patch["phase"] == "Running"
    assert {k: patch[k] for k in ISSUED} == ISSUED
    # a grant whose own status recorded its token (TokenIssued) writes no other fields
    own = grant()
    own["status"].update(ISSUED)
    assert {k: status.running_status(own, NOW).get(k) for k in ISSUED} == ISSUED
    assert not set(ISSUED) & set(status.running_status(grant(), NOW))


def test_a_refusal_of_a_grant_issued_on_its_claim_fails_it_and_records_its_token() -> None:
    patch = status.refused_status(claimed(), "BindingMismatch", "x", NOW, None)
    assert patch is not None and (patch["phase"], patch["reason"]) == ("Failed",
                                                                       "BindingMismatch")
    assert {k: patch[k] for k in ISSUED} == ISSUED


def test_a_failure_after_running_closes_the_gateway_s_own_running_phase_only() -> None:
    """The execution's own Running phase is closed (Failed); anyone's result is kept, and
    without ``own_running`` a Running phase belongs to an execution."""
    patch = status.refused_status(grant("Running"), "DockerUnavailable", "x", NOW, None,
                                  own_running=True)
    assert patch is not None and patch["phase"] == "Failed"
    assert status.refused_status(grant("Running"), "DockerUnavailable", "x", NOW, None) is None
    for final in ("Succeeded", "Failed", "Expired", "Denied"):
        assert status.refused_status(grant(final), "DockerUnavailable", "x", NOW, None,
                                     own_running=True) is None


def test_a_refusal_message_past_the_status_field_is_cut_to_it_in_characters() -> None:
    """An error quoting an API server's answer longer than ``status.message`` holds (32768
    characters, counted as the API server counts them: code points, not bytes) is cut to the
    field, marked as cut, so the API server does not refuse the whole status."""
    long = "é" * (conditions.STATUS_MESSAGE_CHARS + 10)
    patch = status.refused_status(grant(), "ApiUnavailable", long, NOW, None)
    assert patch is not None
    assert len(patch["message"]) == conditions.STATUS_MESSAGE_CHARS
    assert patch["message"].endswith(conditions.CUT_MARK)
    fits = "é" * conditions.STATUS_MESSAGE_CHARS  # 64 KiB of UTF-8, yet within the field
    again = status.refused_status(grant(), "ApiUnavailable", fits, NOW, None)
    assert again is not None and again["message"] == fits

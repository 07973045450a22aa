"""Leader election decisions (pure): renew our own Lease, take a free or expired one, wait."""

from __future__ import annotations

from typing import Any

from wingman.operator.leader import Observation, Timing, decide

TIMING = Timing(duration=10, renew_deadline=7, retry=2)


def lease(holder: str = "", renew: str = "t0", rv: str = "1", duration: int = 10
          ) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": rv},
            "spec": {"holderIdentity": holder, "renewTime": renew,
                     "leaseDurationSeconds": duration}}


def test_a_free_lease_is_taken_and_our_own_is_renewed() -> None:
    assert decide(lease(""), "me", Observation(), 0.0, TIMING) == "acquire"
    assert decide(lease("me"), "me", Observation(), 0.0, TIMING) == "renew"


def test_a_live_holder_is_waited_for_while_it_renews() -> None:
    seen = Observation()
    assert decide(lease("other", "t0", "1"), "me", seen, 100.0, TIMING) == "wait"
    assert decide(lease("other", "t1", "2"), "me", seen, 108.0, TIMING) == "wait"
    assert decide(lease("other", "t2", "3"), "me", seen, 116.0, TIMING) == "wait"


def test_a_silent_holder_is_replaced_after_the_lease_duration_by_our_own_clock() -> None:
    seen = Observation()
    assert decide(lease("dead", "t0", "1"), "me", seen, 100.0, TIMING) == "wait"
    assert decide(lease("dead", "t0", "1"), "me", seen, 109.9, TIMING) == "wait"
    assert decide(lease("dead", "t0", "1"), "me", seen, 110.0, TIMING) == "acquire"


def test_the_duration_written_on_the_lease_wins() -> None:
    seen = Observation()
    decide(lease("dead", duration=30), "me", seen, 0.0, TIMING)
    assert decide(lease("dead", duration=30), "me", seen, 20.0, TIMING) == "wait"
    assert decide(lease("dead", duration=30), "me", seen, 30.0, TIMING) == "acquire"

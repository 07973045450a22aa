"""The fault bench judges its figures against their 15 s target: a MISS line for each figure
over it and exit code 2 then, distinct from 1 for something lost or done twice
(tests/bench/bench_faults.py)."""

from __future__ import annotations

from bench import bench_faults
from support import faults


def test_each_takeover_figure_over_the_target_is_missed_by_name() -> None:
    result = faults.Takeover(how="SIGKILL", ready_after=16.2, first_action_after=15.0,
                             settled_after=40.0)
    # 15.0 s is within the target; the settling time has none
    assert bench_faults.missed("SIGKILL", result) == [
        "SIGKILL: kill -> acting replica ready 16.2 s (target ≤ 15 s)"]
    fast = faults.Takeover(how="SIGTERM", ready_after=1.9, first_action_after=2.0,
                           settled_after=30.0)
    assert bench_faults.missed("SIGTERM", fast) == []


def test_each_outage_figure_over_the_target_is_missed_by_name() -> None:
    result = faults.Outage(component="etcd", seconds=30, requests=100, grants=20,
                           last_request_after=15.1, last_grant_after=20.0)
    assert bench_faults.missed("etcd", result) == [
        "etcd: return -> last request reviewed 15.1 s (target ≤ 15 s)",
        "etcd: return -> last grant's Job released 20.0 s (target ≤ 15 s)"]


def test_a_miss_fails_the_bench_with_its_own_exit_code() -> None:
    assert bench_faults.exit_code([], problems=False) == 0
    assert bench_faults.exit_code(["etcd: ..."], problems=False) == 2
    # something lost or done twice stays the failure it was
    assert bench_faults.exit_code(["etcd: ..."], problems=True) == 1
    assert bench_faults.exit_code([], problems=True) == 1

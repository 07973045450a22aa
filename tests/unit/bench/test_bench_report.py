"""The operator bench's verdicts: the targets are judged on the medians of the runs, and a run
without the no-op claims no ratio (tests/bench/bench_operator.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import bench_operator as bench


def run(consensus95: float, released95: float, created95: float, grant_requests: int,
        peak: float, idle: float = 80.0, after: float = 90.0) -> dict[str, Any]:
    phase = {"seconds": 5.0, "apiserver_cpu": 6.0, "operator_cpu": 3.0}
    return {
        "count": 100, "rss_idle_mib": idle, "rss_peak_mib": peak,
        "rss_after_retention_mib": after, "retired_all": True,
        "threads_idle": 6, "threads_after_retention": 8,
        "consensus_ms": {50: consensus95 / 2, 95: consensus95, 99: consensus95 * 1.1},
        "job_created_ms": {50: created95 / 2, 95: created95, 99: created95 * 1.1},
        "job_released_ms": {50: released95 / 2, 95: released95, 99: released95 * 1.1},
        "requests_phase": {**phase, "requests": {"patch approvalrequests/status": 100}},
        "grants_phase": {**phase, "requests": {"create jobs": 100,
                                               "create secrets": grant_requests - 100}},
        "retention_phase": {**phase, "requests": {"delete secrets": 100}},
    }


def verdicts(reals: list[dict[str, Any]], noops: list[dict[str, Any]]
             ) -> dict[str, float | None]:
    return {name: value for name, value, _ in bench.targets(reals, noops)}


def test_targets_are_judged_on_the_medians_not_on_one_lucky_run() -> None:
    reals = [run(100, 900, 0, 300, 140), run(500, 3000, 0, 300, 160),
             run(200, 1200, 0, 300, 155)]
    noops = [run(100, 0, 400, 100, 100), run(120, 0, 300, 100, 100),
             run(90, 0, 500, 100, 100)]
    got = verdicts(reals, noops)
    assert got["create→consensus p95 ≤ 1.5x no-op"] == pytest.approx(200 / 100)
    assert got["grant→Job released p95 ≤ 3x no-op Job created p95"] == pytest.approx(1200 / 400)
    assert got["API requests per grant ≤ 3x no-op"] == pytest.approx(3.0)
    assert got["operator peak RSS ≤ 150 MiB"] == pytest.approx(155 / 150)


def test_without_the_noop_no_ratio_is_claimed(capsys: pytest.CaptureFixture[str]) -> None:
    reals = [run(100, 900, 0, 300, 140, idle=80, after=90)]
    got = verdicts(reals, [])
    assert got["create→consensus p95 ≤ 1.5x no-op"] is None
    assert got["API requests per grant ≤ 3x no-op"] is None
    assert got["operator peak RSS ≤ 150 MiB"] == pytest.approx(140 / 150)
    bench.report(reals, [])
    out = capsys.readouterr().out
    assert "n/a   create→consensus p95" in out
    assert "PASS  create→consensus" not in out and "MISS  create→consensus" not in out
    assert "PASS  operator peak RSS" in out


def test_the_report_shows_how_far_the_runs_were_apart(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    reals = [run(100, 900, 0, 300, 140), run(500, 3000, 0, 300, 160)]
    bench.report(reals, [run(100, 0, 400, 100, 100), run(100, 0, 400, 100, 100)])
    out = capsys.readouterr().out
    assert "median of 2 runs" in out
    row = next(line for line in out.splitlines() if line.startswith("create→consensus p95"))
    assert row.split()[3:] == ["300.0", "100.0", "3.00", "100.0", "to", "500.0"]
    # the threads a burst left behind, beside those of the idle operator
    row = next(line for line in out.splitlines() if line.startswith("operator threads"))
    assert row.split()[-3:] == ["6", "/", "8"]

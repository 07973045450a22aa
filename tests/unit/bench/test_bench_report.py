"""The operator bench's verdicts: the targets are judged on the medians of the runs, and a run
without the no-op claims no ratio (tests/bench/bench_operator.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
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
        "consensus_written_ms": {50: consensus95 / 2, 95: consensus95, 99: consensus95 * 1.1},
        "job_created_written_ms": {50: created95 / 2, 95: created95, 99: created95 * 1.1},
        "released_written_ms": {50: released95 / 2, 95: released95, 99: released95 * 1.1},
        # as the bench's watches saw them: later, and not what the targets judge
        "consensus_ms": {50: consensus95, 95: consensus95 * 3, 99: consensus95 * 4},
        "job_created_ms": {50: created95, 95: created95 * 5, 99: created95 * 6},
        "job_released_ms": {50: released95, 95: released95 * 7, 99: released95 * 8},
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


def test_the_peak_judged_is_the_whole_runs_the_retirement_wave_included() -> None:
    """Retiring a burst at once brings every deletion's watch event at once: a peak after the
    burst's, which the target counts too."""
    burst_only = run(100, 900, 0, 300, 140)
    waved = {**run(100, 900, 0, 300, 140), "rss_peak_run_mib": 156.0}
    assert verdicts([burst_only], [])["operator peak RSS ≤ 150 MiB"] == pytest.approx(140 / 150)
    assert verdicts([waved], [])["operator peak RSS ≤ 150 MiB"] == pytest.approx(156 / 150)


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
    # beside it, the same moments as the bench's watches saw them
    row = next(line for line in out.splitlines()
               if line.startswith("create→consensus seen p95"))
    assert row.split()[4:] == ["900.0", "300.0", "3.00", "300.0", "to", "1500.0"]
    # the threads a burst left behind, beside those of the idle operator
    row = next(line for line in out.splitlines() if line.startswith("operator threads"))
    assert row.split()[-3:] == ["6", "/", "8"]


def test_the_operator_s_steps_are_read_per_phase_from_its_metrics(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Between two scrapes of the real operator's metrics: per step how many, their mean and
    p95 (read from the buckets as PromQL does), for what happened in between only; the
    report prints them per object."""
    from prometheus_client import generate_latest

    from wingman.operator.metrics import Metrics

    metrics = Metrics()
    op = bench.Running(0, lambda: None, "", lambda: generate_latest(metrics.registry).decode())
    metrics.api_call("patch", "approvalrequests/status", "200", 9.0)  # before the phase
    before = bench.scrape(op)
    for i in range(100):  # 1, 2, ... 100 ms
        metrics.api_call("patch", "approvalrequests/status", "200", (i + 1) / 1000)
    metrics.reconcile_wait.labels(resource="approvalrequests").observe(0.002)
    metrics.audit_written(4, 0.003)
    after = bench.scrape(op)
    assert before is not None and after is not None
    got = bench.steps(before, after)
    patch = got["API patch approvalrequests/status"]
    assert patch["count"] == 100
    assert patch["mean"] == pytest.approx(50.5)
    assert 50 <= patch["p95"] <= 100  # inside the bucket (50, 100] ms that holds the 95th
    assert got["reconcile wait approvalrequests"]["count"] == 1
    assert got["audit records/write"]["mean"] == 4  # records, not milliseconds
    assert "reconcile approvalrequests" not in got  # nothing happened to it
    assert bench.scrape(bench.Running(0, lambda: None, "")) is None  # the no-op has none

    phase = {"seconds": 5.0, "apiserver_cpu": 6.0, "operator_cpu": 3.0, "steps": got}
    real = run(100, 900, 0, 300, 140)
    real["requests_phase"] = {**real["requests_phase"], **phase}
    bench.report([real], [])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "API patch approvalrequests/status" in x)
    assert line.split()[-3:] == ["1.00", "50.5", f"{patch['p95']:.1f}"]


def test_a_histogram_s_quantile_is_read_as_promql_reads_it() -> None:
    buckets = {0.1: 10.0, 0.2: 20.0, float("inf"): 20.0}
    assert bench.quantile(0.5, buckets) == pytest.approx(0.1)
    assert bench.quantile(0.75, buckets) == pytest.approx(0.15)
    assert bench.quantile(0.95, {0.1: 1.0, float("inf"): 2.0}) == pytest.approx(0.1)
    assert bench.quantile(0.95, {0.1: 0.0, float("inf"): 0.0}) == 0.0


def test_an_operator_restarted_between_the_scrapes_counts_from_its_restart() -> None:
    from prometheus_client import generate_latest

    from wingman.operator.metrics import Metrics

    old, new = Metrics(), Metrics()
    for _ in range(10):
        old.audit_written(2, 0.004)
    new.audit_written(3, 0.002)
    before = bench.scrape(bench.Running(0, lambda: None, "",
                                        lambda: generate_latest(old.registry).decode()))
    after = bench.scrape(bench.Running(0, lambda: None, "",
                                       lambda: generate_latest(new.registry).decode()))
    assert before is not None and after is not None
    got = bench.steps(before, after)["audit records/write"]
    assert got["count"] == 1 and got["mean"] == 3  # not 1 - 10 writes of nonsense


def test_the_report_returns_the_targets_missed(capsys: pytest.CaptureFixture[str]) -> None:
    reals = [run(300, 900, 0, 300, 160)]
    noops = [run(100, 0, 400, 100, 100)]
    missed = bench.report(reals, noops)
    assert missed == ["create→consensus p95 ≤ 1.5x no-op", "operator peak RSS ≤ 150 MiB"]
    assert bench.report([run(100, 900, 0, 300, 140)], noops) == []
    assert bench.report([run(100, 900, 0, 300, 140)], []) == []  # n/a is no miss


def test_requests_that_expired_before_their_review_miss_the_run_saying_so(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A request that expired before its review approved it (LifetimeEnded) has its grant
    refused and no figure: the run says so plainly and misses, however good the figures of
    the rest; a run in which none expired is judged on its figures alone."""
    noops = [run(100, 0, 400, 100, 100)]
    late = {**run(100, 900, 0, 300, 140), "expired_unapproved": 37}
    missed = bench.report([late, {**run(100, 900, 0, 300, 140), "expired_unapproved": 0}],
                          noops)
    assert missed == ["every request reviewed within its lifetime"]
    out = " ".join(capsys.readouterr().out.split())
    assert ("MISS every request reviewed within its lifetime: 37 of 100 requests expired "
            "before being reviewed (LifetimeEnded)") in out
    assert bench.exit_code(missed) == 2
    assert bench.report([{**run(100, 900, 0, 300, 140), "expired_unapproved": 0}],
                        noops) == []


@pytest.mark.parametrize(("status", "expired"), [
    # its review finished after its lifetime: the Reviewed condition says LifetimeEnded, the
    # request is not approved, and the sweep ends it in the same pass
    ({"phase": "Expired", "consensus": {"outcome": "Approve"},
      "expirationTime": "2026-01-01T00:02:00Z"}, True),
    ({"phase": "Expired", "expirationTime": "2026-01-01T00:02:00Z"}, True),  # never reviewed
    # approved in time, then its approval's validity ended: the bench's expiry phase
    ({"phase": "Expired", "approvedAt": "2026-01-01T00:01:00Z",
      "expirationTime": "2026-01-01T00:03:00Z"}, False),
    ({"phase": "AutoApproved", "approvedAt": "2026-01-01T00:01:00Z"}, False),
    ({"phase": "Reviewing"}, False),
    ({}, False),
])
def test_a_request_expired_before_it_was_approved_is_told_from_one_expired_after(
        status: dict[str, Any], expired: bool) -> None:
    assert bench.expired_unapproved(status) is expired


def test_the_burst_s_requests_outlive_the_wait_for_their_reviews_and_nothing_else_changes(
        ) -> None:
    """The burst's pending lifetime covers the burst's creation and the whole wait for its
    reviews, so a slow machine's late review still approves; every other setting (an
    approval's validity, tokens, retention: what the expiry phase measures) is the policy's."""
    lifetime = bench.BURST_VALUES["policy.requestTTLSeconds"]
    assert isinstance(lifetime, int) and lifetime >= bench.REVIEW_WAIT_SECONDS + 300
    assert {k: v for k, v in bench.BURST_VALUES.items() if k != "policy.requestTTLSeconds"} \
        == {k: v for k, v in bench.BENCH_VALUES.items() if k != "policy.requestTTLSeconds"}


def test_a_missed_target_fails_the_run_with_its_own_exit_code(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A job running the bench fails on a miss: 2, neither 1 (an error) nor 130 (stopped)."""
    noops = [run(100, 0, 400, 100, 100)]
    assert bench.exit_code(bench.report([run(300, 900, 0, 300, 160)], noops)) == 2
    assert bench.exit_code(bench.report([run(100, 900, 0, 300, 140)], noops)) == 0


@pytest.mark.parametrize(("missed", "keep", "kept", "says"), [
    (["operator peak RSS ≤ 150 MiB"], False, True,
     "kept (1 target(s) missed: operator peak RSS ≤ 150 MiB)"),
    (["operator peak RSS ≤ 150 MiB"], True, True, "target(s) missed"),
    (None, False, True, "kept (the run did not finish)"),
    ([], True, True, "work directory kept"),
    ([], False, False, "work directory removed (--keep-work keeps it)"),
])
def test_the_work_directory_is_kept_when_a_target_is_missed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], missed: list[str] | None,
        keep: bool, kept: bool, says: str) -> None:
    """A run that missed a target keeps its operator logs and audit trails to read (and says
    where); one that met them all is removed unless --keep-work."""
    work = tmp_path / "wingman-bench-x"
    (work / "real-bench").mkdir(parents=True)
    (work / "real-bench" / "operator.log").write_text("log\n")
    bench.finish_work(work, missed, keep=keep)
    assert work.exists() is kept
    err = capsys.readouterr().err
    assert says in err and str(work) in err


def test_failover_and_outage_figures_over_their_target_are_missed() -> None:
    """The failover and outage modes judge their worst round against 15 s, as the burst judges
    its targets: a miss fails the run (exit 2)."""
    missed = bench.recovery_missed({"SIGKILL of the active replica": [9.0, 15.5, 11.0],
                                    "SIGTERM of the active replica": [2.0, 15.0],
                                    "single replica SIGKILLed, new pod": []})
    assert missed == ["SIGKILL of the active replica: worst 15.5 s (target ≤ 15 s)"]
    assert bench.exit_code(missed) == 2
    assert bench.recovery_missed({"etcd back -> last request reviewed": [3.4]}) == []


OPERATOR = "system:serviceaccount:bench:wingman-operator"


def audit_line(verb: str, resource: str, name: str, user: str, received: float,
               answered: float, *, code: int = 201, namespace: str = "bench",
               subresource: str = "") -> str:
    """One line of the API server's audit log as it writes it (level Metadata)."""
    def stamp(at: float) -> str:
        return dt.datetime.fromtimestamp(1_800_000_000 + at, dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")
    ref = {"resource": resource, "namespace": namespace, "name": name, "apiVersion": "v1",
           **({"subresource": subresource} if subresource else {})}
    return json.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "stage": "ResponseComplete", "verb": verb, "user": {"username": user},
        "objectRef": ref, "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": stamp(received), "stageTimestamp": stamp(answered)},
        separators=(",", ":"))


def test_latencies_are_read_as_the_api_server_answered_the_operator_s_writes(
        tmp_path: Path) -> None:
    """From a create's arrival to the answer of the operator's write; the first successful
    write per object, the operator's own, in the bench's namespace; released is the last of
    the grant's Job, its token Secret, the claim on its request and (a token recorded in the
    grant's own status, written with the Secret) that status write."""
    lines = [
        # a line of an earlier run, before the offset: not read
        audit_line("create", "approvalrequests", "r0", "alice", 0.0, 0.1),
        audit_line("create", "approvalrequests", "r0", "alice", 10.0, 10.02),
        audit_line("create", "approvalrequests", "r1", "alice", 10.5, 10.6),
        # refused, then written: the written one counts
        audit_line("patch", "approvalrequests", "r0", OPERATOR, 10.1, 10.15, code=409,
                   subresource="status"),
        audit_line("patch", "approvalrequests", "r0", OPERATOR, 10.2, 10.25,
                   subresource="status"),
        # a later status write (its expiry) does not move consensus
        audit_line("patch", "approvalrequests", "r0", OPERATOR, 50.0, 50.1,
                   subresource="status"),
        # someone else's write, and another namespace's, are not the operator's
        audit_line("patch", "approvalrequests", "r1", "mallory", 10.6, 10.7,
                   subresource="status"),
        audit_line("patch", "approvalrequests", "r1", OPERATOR, 10.6, 10.7,
                   subresource="status", namespace="elsewhere"),
        audit_line("create", "executiongrants", "g0", "bob", 20.0, 20.05),
        audit_line("create", "jobs", "g0-gw", OPERATOR, 20.1, 20.3),
        audit_line("patch", "approvalrequests", "r0", OPERATOR, 20.31, 20.35,
                   subresource="status"),
        audit_line("create", "secrets", "g0-gw-token-0123456789abcdef", OPERATOR, 20.4, 21.0),
        audit_line("patch", "executiongrants", "g0", OPERATOR, 20.4, 20.7,
                   subresource="status"),
        # a grant whose token Secret never came: Job created, never released
        audit_line("create", "executiongrants", "g1", "bob", 30.0, 30.01),
        audit_line("create", "jobs", "g1-gw", OPERATOR, 30.1, 30.5),
        "not json",
    ]
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join(lines) + "\n")
    offset = len(lines[0]) + 1
    got = bench.written_latencies(bench.first_writes(log, offset, "bench"), OPERATOR,
                                  bench.status_writes(log, offset, "bench", "approvalrequests",
                                                      OPERATOR))
    assert got["consensus"] == pytest.approx([0.25])  # r1 was never written by the operator
    # and where it went: the create, the operator's reaction, its write
    where: tuple[object, ...] = (pytest.approx([0.02]), pytest.approx([0.18]),
                                 pytest.approx([0.05]))
    assert (got["consensus-create"], got["consensus-react"], got["consensus-write"]) == where
    assert got["job-created"] == pytest.approx([0.3, 0.5])
    assert got["released"] == pytest.approx([1.0])  # the Secret, last of the three


def test_without_token_secrets_nothing_is_released(tmp_path: Path) -> None:
    """The no-op makes Jobs only: it has no released to judge."""
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join([
        audit_line("create", "executiongrants", "g0", "bob", 1.0, 1.1),
        audit_line("create", "jobs", "g0-gw", "noop", 1.2, 1.4)]) + "\n")
    got = bench.written_latencies(bench.first_writes(log, 0, "bench"), "noop")
    assert got["job-created"] == pytest.approx([0.4])
    assert "released" not in got


def test_a_target_without_a_figure_is_missed_not_passed(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """No grant released in the audit log (or in one of the runs) is no figure: NaN compares
    below every limit, so it must not read as a pass."""
    nan = float("nan")
    noops = [run(100, 0, 400, 100, 100)] * 3
    none = run(100, 900, 0, 300, 140)
    none["released_written_ms"] = {50: nan, 95: nan, 99: nan}
    target = "grant→Job released p95 ≤ 3x no-op Job created p95"
    assert bench.report([none], noops) == [target]
    out = capsys.readouterr().out
    assert f"MISS  {target}: no figure (limit 3.0)" in out
    # one run of three without it: not a median of the other two
    for order in ([none, run(100, 900, 0, 300, 140), run(100, 900, 0, 300, 140)],
                  [run(100, 900, 0, 300, 140), none, run(100, 900, 0, 300, 140)]):
        assert bench.report(order, noops) == [target]
    capsys.readouterr()
    # the floor without a figure (the no-op's Jobs not in the audit log): no ratio either
    blind = run(100, 0, 400, 100, 100)
    blind["job_created_written_ms"] = {50: nan, 95: nan, 99: nan}
    assert bench.report([run(100, 900, 0, 300, 140)], [blind]) == [target]
    assert f"MISS  {target}: no figure (limit 3.0)" in capsys.readouterr().out


def test_latencies_over_fewer_writes_than_objects_are_named_by_row_with_their_counts(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The warning names the rows as the report prints them, how many writes the audit log
    held against how many the watches saw, so a reader can tell an operator that did not
    finish (as few seen) from audit events dropped or late (more seen)."""
    real = {**run(100, 900, 0, 300, 140), "consensus_written_n": 100, "consensus_n": 100,
            "job_created_written_n": 100, "job_created_n": 100,
            "released_written_n": 97, "job_released_n": 100}
    noop = {**run(100, 0, 400, 100, 100), "consensus_written_n": 90, "consensus_n": 90,
            "job_created_written_n": 100, "job_created_n": 100}
    bench.report([real], [noop])
    out = " ".join(capsys.readouterr().out.split())
    assert "WARNING" in out
    assert "wingman grant→Job released: 97 written, 100 seen, of 100" in out
    assert "no-op create→consensus: 90 written, 90 seen, of 100" in out
    assert "wingman create→consensus" not in out.split("WARNING", 1)[1]
    assert "dropped or late" in out and "did not make" in out


def test_released_on_the_claim_is_the_last_of_the_job_the_claim_and_the_secret(
        tmp_path: Path) -> None:
    """A token issued on the claim: the operator writes the claim (recording the token) after
    the Job's create was answered, then the Secret, and nothing to the grant; the grant's
    first status write, much later, is its expiry and does not count. The request's review,
    before the Job, is not its claim: a grant with no claim after its Job gets no figure."""
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join([
        audit_line("create", "approvalrequests", "r2", "alice", 1.0, 1.01),
        audit_line("patch", "approvalrequests", "r2", OPERATOR, 1.1, 1.2, subresource="status"),
        audit_line("create", "executiongrants", "g2", "bob", 40.0, 40.01),
        audit_line("create", "jobs", "g2-gw", OPERATOR, 40.1, 40.2),
        audit_line("patch", "approvalrequests", "r2", OPERATOR, 40.25, 40.6,
                   subresource="status"),
        audit_line("create", "secrets", "g2-gw-token-0123456789abcdef", OPERATOR, 40.65, 40.7),
        audit_line("patch", "executiongrants", "g2", OPERATOR, 100.0, 100.1,
                   subresource="status"),
        # reviewed, Job and Secret made, but no claim after the Job: no figure
        audit_line("create", "approvalrequests", "r3", "alice", 2.0, 2.01),
        audit_line("patch", "approvalrequests", "r3", OPERATOR, 2.1, 2.2, subresource="status"),
        audit_line("create", "executiongrants", "g3", "bob", 41.0, 41.01),
        audit_line("create", "jobs", "g3-gw", OPERATOR, 41.1, 41.2),
        audit_line("create", "secrets", "g3-gw-token-0123456789abcdef", OPERATOR, 41.3, 41.4),
    ]) + "\n")
    claims = bench.status_writes(log, 0, "bench", "approvalrequests", OPERATOR)
    assert [t - 1_800_000_000 for pair in claims["r2"] for t in pair] == pytest.approx(
        [1.1, 1.2, 40.25, 40.6], abs=1e-5)
    got = bench.written_latencies(bench.first_writes(log, 0, "bench"), OPERATOR, claims)
    assert got["released"] == pytest.approx([0.7])  # the Secret, after the claim; g3: none
    assert bench.written_latencies(bench.first_writes(log, 0, "bench"), OPERATOR
                                   )["released"] == []  # no claims read, no figure


def test_background_requests_are_counted_apart_from_what_objects_caused(
        tmp_path: Path) -> None:
    """The leader Lease's renewals, the signing keys' reloads, the audit's checkpoints and the
    framework's watches come on a clock (their keys made once; a watch when the API server
    ends it), not per object: requests per object leave them out, and they are shown per
    second of the phase."""
    log = tmp_path / "audit.jsonl"
    lines = [audit_line("create", "jobs", f"g{i}-gw", OPERATOR, 1.0, 1.1) for i in range(4)]
    lines += [audit_line("get", "leases", "wingman-operator-leader", OPERATOR, 1.0, 1.1),
              audit_line("update", "leases", "wingman-operator-leader", OPERATOR, 1.0, 1.1),
              audit_line("get", "secrets", "wingman-signing-key", OPERATOR, 1.0, 1.1),
              audit_line("get", "secrets", "g0-gw-token-0123456789abcdef", OPERATOR, 1.0, 1.1),
              audit_line("create", "leases", "wingman-burn-x", "gateway", 1.0, 1.1),
              # made once, at the first grant and the audit's first checkpoint
              audit_line("create", "secrets", "wingman-signing-key", OPERATOR, 1.0, 1.1),
              audit_line("create", "configmaps", "wingman-public-keys", OPERATOR, 1.0, 1.1),
              audit_line("create", "secrets", "wingman-audit-key", OPERATOR, 1.0, 1.1),
              audit_line("get", "configmaps", "wingman-audit-checkpoints", OPERATOR, 1.0, 1.1),
              # a watch the API server ended (after minutes), opened again by the framework
              audit_line("watch", "jobs", "", OPERATOR, 1.0, 1.1)]
    log.write_text("\n".join(lines) + "\n")
    requests = bench.ApiRequests(log)
    counts = requests.since_mark(OPERATOR)
    assert counts == {"create jobs": 4, "get secrets": 1,
                      f"{bench.BACKGROUND_PREFIX}get leases": 1,
                      f"{bench.BACKGROUND_PREFIX}update leases": 1,
                      f"{bench.BACKGROUND_PREFIX}get secrets": 1,
                      f"{bench.BACKGROUND_PREFIX}create secrets": 2,
                      f"{bench.BACKGROUND_PREFIX}create configmaps": 1,
                      f"{bench.BACKGROUND_PREFIX}get configmaps": 1,
                      f"{bench.BACKGROUND_PREFIX}watch jobs": 1}
    phase = {"count": 4, "grants_phase": {"requests": dict(counts), "seconds": 2.0}}
    assert bench._total("grants_phase")(phase) == pytest.approx(5 / 4)
    assert bench._background("grants_phase")(phase) == pytest.approx(8 / 2.0)


def test_a_grant_status_write_made_before_its_job_is_not_taken_for_token_issued(
        tmp_path: Path) -> None:
    """The audit log (level Metadata) does not say what a status write held. Where the
    operator records the token in the grant's status (TokenIssued), it writes it after the
    Job's create was answered (then the claim, then the status with the Secret), so a grant's
    first status write that arrived before that is another one (a denial, a write of an
    earlier run) and does not count: released is then the last of the Job, the claim and the
    Secret."""
    log = tmp_path / "audit.jsonl"
    log.write_text("\n".join([
        audit_line("create", "executiongrants", "g0", "bob", 1.0, 1.01),
        audit_line("patch", "executiongrants", "g0", OPERATOR, 1.05, 1.1, subresource="status"),
        audit_line("create", "jobs", "g0-gw", OPERATOR, 1.2, 1.3),
        audit_line("patch", "approvalrequests", "r0", OPERATOR, 1.31, 1.35,
                   subresource="status"),
        audit_line("create", "secrets", "g0-gw-token-0123456789abcdef", OPERATOR, 1.4, 1.5),
        audit_line("create", "executiongrants", "g1", "bob", 2.0, 2.01),
        audit_line("create", "jobs", "g1-gw", OPERATOR, 2.1, 2.2),
        audit_line("patch", "approvalrequests", "r1", OPERATOR, 2.21, 2.25,
                   subresource="status"),
        audit_line("create", "secrets", "g1-gw-token-0123456789abcdef", OPERATOR, 2.3, 2.6),
        audit_line("patch", "executiongrants", "g1", OPERATOR, 2.3, 2.7, subresource="status"),
    ]) + "\n")
    got = bench.written_latencies(bench.first_writes(log, 0, "bench"), OPERATOR,
                                  bench.status_writes(log, 0, "bench", "approvalrequests",
                                                      OPERATOR))
    assert got["job-created"] == pytest.approx([0.2, 0.3])
    # g0: its status write before the Job is not the issue (the Secret is last); g1: the
    # TokenIssued status, written with the Secret, answered last
    assert got["released"] == pytest.approx([0.5, 0.7])


def test_the_no_op_ends_its_idle_workers_as_the_operator_does() -> None:
    """The floor is kopf with the operator's settings: an idle worker (and the last body it
    holds) kept for kopf's default 5 s would be memory the real operator does not hold."""
    from wingman.operator.run import WORKER_IDLE_SECONDS

    assert f"settings.queueing.idle_timeout = {WORKER_IDLE_SECONDS}" in bench.NOOP


def test_the_split_of_create_to_consensus_is_printed_beside_the_no_op_s(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Where create → consensus goes (the create, the operator's reaction, its write), each
    beside the no-op's, right after create → consensus's own rows; runs recorded before the
    split print no such rows."""
    def split(r: dict[str, Any], create: float, react: float, write: float) -> dict[str, Any]:
        for key, ms in (("create", create), ("react", react), ("write", write)):
            r[f"consensus_{key}_written_ms"] = {50: ms / 2, 95: ms, 99: ms}
        return r
    reals = [split(run(100, 900, 0, 300, 140), 20, 300, 80)]
    noops = [split(run(100, 0, 400, 100, 100), 10, 100, 40)]
    bench.report(reals, noops)
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("create→consensus p99 ms"))
    assert [line.split() for line in lines[at + 1:at + 7]] == [
        ["the", "create", "p50", "ms", "10.0", "5.0", "2.00"],
        ["the", "create", "p95", "ms", "20.0", "10.0", "2.00"],
        ["create", "answered→write", "p50", "ms", "150.0", "50.0", "3.00"],
        ["create", "answered→write", "p95", "ms", "300.0", "100.0", "3.00"],
        ["the", "status", "write", "p50", "ms", "40.0", "20.0", "2.00"],
        ["the", "status", "write", "p95", "ms", "80.0", "40.0", "2.00"]]
    bench.report(reals, [])  # --skip-noop: no floor, no ratio
    assert [line.split()[-3:] for line in capsys.readouterr().out.splitlines()
            if "answered→write p95" in line] == [["300.0", "—", "—"]]
    bench.report([run(100, 900, 0, 300, 140)], noops)
    assert "answered→write" not in capsys.readouterr().out

"""The operator bench's floor: the no-op kopf operator, in a release of the chart with its
admission policies, reviews requests and creates its Jobs (tests/bench/bench_operator.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import bench_operator as bench
from support.chart import installed
from wingman.dev.cluster import LocalCluster

pytestmark = pytest.mark.integration


def _until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"the no-op never {what}")


def test_the_no_op_floor_does_its_work_under_the_charts_admission(
        cluster: LocalCluster, crds: Path, tmp_path: Path) -> None:
    """Admission lets the operator's own identity run Jobs only as the gateway or the preview:
    the no-op keeps the operator's Role under a name of its own, and its Jobs (a floor with no
    pod spec to check) are still created, as before."""
    ns = f"bench-noop-{uuid.uuid4().hex[:8]}"
    with installed(cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
                   values=bench.BENCH_VALUES):
        clients = bench.Clients(cluster)
        noop = bench.start_noop(cluster, ns, tmp_path)
        timeline = bench.Timeline()
        try:
            assert noop.user == f"system:serviceaccount:{ns}:{bench.NOOP_ACCOUNT}"
            with bench.watching(clients.admin_api, ns, timeline):
                clients.create_request(ns, "r1")
                _until("reviewed the request", lambda: (cluster.kubectl(
                    "get", "approvalrequest", "r1", "-n", ns, "-o", "jsonpath={.status.phase}",
                    check=False).stdout == "Reviewing"))
                clients.create_grant(ns, "g1", "r1")
                _until("created the grant's Job", lambda: cluster.kubectl(
                    "get", "job", "g1-gw", "-n", ns, check=False).returncode == 0)
                # the bench's own watches (objects taken as JSON) saw both, as the bench times
                _until("was seen by the bench's watches", lambda: "r1" in timeline.seen.get(
                    "reviewing", {}) and "g1" in timeline.seen.get("job-created", {}), 30)
            assert "g1" not in timeline.seen.get("job-released", {})  # the no-op's is suspended
        finally:
            noop.stop()
        log = (tmp_path / "noop.log").read_text(errors="replace")
        assert "Forbidden" not in log, log[-2000:]

"""Failover and outages mid-flow: a standby takes over, a restarted replica resumes, and an API
server or etcd outage ends with everything settled; nothing lost, nothing done twice.

Real API server, the chart's identities, the operator as its ServiceAccount. The scenarios and
their checks are ``support.faults`` (shared with ``tests/bench/bench_faults.py``, which
measures the figures precisely); the bounds here are generous correctness bounds (a replica
that waited for a dead peer, or an operator that backed off for a minute, fails them), not
speed goals.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import faults
from support.chart import installed

#: Generous: the lease expires after 10 s and is retried every 2 s (≤ 15 s on an idle machine).
TAKEOVER_BOUND = 30.0
#: After an outage, objects are retried within 5 s and the watches within 3 s.
RECOVERY_BOUND = 30.0
#: The lease's duration (not the default 10 s) in the tests that tell a lease handed over, or
#: held by the same pod, from one waited out: a lease waited out then takes 38 s or more, far
#: past ``HANDOVER_BOUND``.
LONG_LEASE = {"WINGMAN_LEASE_DURATION_SECONDS": "40"}
#: Generous (a retry period, 2 s, on an idle machine; a fresh operator's start included after a
#: kill), well below a ``LONG_LEASE`` waited out.
HANDOVER_BOUND = 20.0


@pytest.fixture
def ns(cluster: Any, crds: Path) -> Iterator[str]:
    name = f"wm-fo-{uuid.uuid4().hex[:8]}"
    with installed(cluster, "test", namespace=name, target_namespace=f"{name}-apps",
                   values={"operator.replicas": 0}):
        yield name


def test_the_standby_takes_over_when_the_active_replica_is_killed_mid_flow(
        cluster: Any, ns: str, tmp_path: Path) -> None:
    result = faults.failover(cluster, ns, tmp_path, "SIGKILL", before=5, after=3)
    assert not result.problems, result.problems
    assert result.requests >= 10 and result.grants == result.requests
    assert result.ready_after <= TAKEOVER_BOUND, result
    assert result.first_action_after <= TAKEOVER_BOUND, result


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP"])
def test_a_stopped_active_replica_hands_the_lease_over_at_once(
        cluster: Any, ns: str, tmp_path: Path, how: str) -> None:
    result = faults.failover(cluster, ns, tmp_path, how, before=4, after=2, env=LONG_LEASE)
    assert not result.problems, result.problems
    assert "leader lease released" in (tmp_path / result.active / "operator.log").read_text()
    # handed back, not expired: the standby acts before the lease could have run out
    assert result.ready_after < HANDOVER_BOUND, result


def test_a_single_replica_restarted_after_a_kill_resumes_without_waiting_for_itself(
        cluster: Any, ns: str, tmp_path: Path) -> None:
    """The same pod name is the same lease identity: the restarted container holds the lease
    already (no pause for the dead process's record)."""
    result = faults.restart(cluster, ns, tmp_path, same_identity=True, before=4,
                            env=LONG_LEASE)
    assert not result.problems, result.problems
    # its own lease, held at once: not waited out as a dead holder's
    assert result.ready_after < HANDOVER_BOUND, result
    assert result.first_action_after <= TAKEOVER_BOUND, result


def _local(cluster: Any) -> None:
    if not hasattr(cluster, "kill"):
        pytest.skip("stops the control plane's own processes: needs the local control plane")


def test_an_api_server_outage_with_requests_and_grants_in_flight_settles_after_it(
        cluster: Any, ns: str, tmp_path: Path) -> None:
    _local(cluster)
    result = faults.outage(cluster, ns, tmp_path, "kube-apiserver", seconds=15, requests=30,
                           grants=10)
    assert not result.problems, result.problems
    assert result.last_request_after <= RECOVERY_BOUND, result
    assert result.last_grant_after <= RECOVERY_BOUND, result


def test_an_etcd_pause_with_requests_and_grants_in_flight_settles_after_it(
        cluster: Any, ns: str, tmp_path: Path) -> None:
    _local(cluster)
    result = faults.outage(cluster, ns, tmp_path, "etcd", seconds=12, requests=30, grants=10)
    assert not result.problems, result.problems
    assert result.last_request_after <= RECOVERY_BOUND, result
    assert result.last_grant_after <= RECOVERY_BOUND, result

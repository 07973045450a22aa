"""etcd restored from a backup without a revision bump, under a running operator: the store
goes back, and the operator finds out, says so and goes on from the store as it now is.

The operator is left running through the restore (``support.restore``): the case its
stale-copy guard (``Context.resync``) exists for.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.chart import WORKER, approval_request, installed, worker_groups
from support.operator import OperatorProcess, get, phase_of, wait_for
from support.restore import backup, own_control_plane, restore
from wingman.dev.cluster import LocalCluster

#: A request's shortest lifetime (the CRD's minimum) and the warning before it ends: the
#: warning is the operator's write the restore takes back, the end is what reads the request
#: afresh once the restored store holds an older copy of it.
LIFETIME = 60
WARNING = 30
#: With auto-approval off (this test's policy), any command waits for a human.
SCALE = "kubectl scale deployment/checkout --replicas=3 -n apps"


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_control_plane(tmp_path_factory.mktemp("restore-cluster")) as local:
        yield local


def _stale_copies(op: OperatorProcess) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(op.metrics()):
        for sample in family.samples:
            if sample.name == "wingman_stale_copies_total" \
                    and sample.labels.get("resource") == "approvalrequests":
                found[sample.labels["outcome"]] = sample.value
    return found


def test_after_etcd_went_back_the_operator_says_so_and_goes_on_from_the_store(
        own_cluster: LocalCluster, tmp_path: Path) -> None:
    cluster = own_cluster
    ns = f"wm-rs-{uuid.uuid4().hex[:8]}"
    with installed(cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
                   values={"operator.replicas": 0, "policy.autoApprove": False,
                           "policy.expiryWarningSeconds": WARNING}):
        op = OperatorProcess(cluster, ns, tmp_path / "op")
        op.start()
        try:
            body = approval_request("scale", requester=WORKER, environment="test",
                                    commands=[SCALE], expiresAfterSeconds=LIFETIME)
            cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body),
                            user=WORKER, groups=worker_groups("test"))
            wait_for("the request reviewed, waiting for a human",
                     lambda: phase_of(cluster, "ar", ns, "scale") == "AwaitingDecision",
                     60, on_timeout=op.log_tail)
            assert _condition(cluster, ns, "ExpiringSoon") is None, "backed up before it"
            copy = tmp_path / "etcd-backup"
            backup(cluster, copy)

            # the operator's write after the backup: the warning, WARNING s before the end
            warned = wait_for("the expiry warning written",
                              lambda: _condition(cluster, ns, "ExpiringSoon"), LIFETIME,
                              on_timeout=op.log_tail)
            assert warned["status"] == "True"
            restore(cluster, copy)
            restored = get(cluster, "ar", ns, "scale")
            assert restored is not None and _condition(cluster, ns, "ExpiringSoon") is None, \
                "the store went back to before the warning"

            # At the request's end the operator reads it afresh: older than the copy it wrote,
            # read again twice, then trusted; the request ends from the store's copy
            ended = wait_for("the request expired after the restore",
                             lambda: get(cluster, "ar", ns, "scale")
                             if phase_of(cluster, "ar", ns, "scale") == "Expired" else None,
                             LIFETIME + 60, 0.5, on_timeout=op.log_tail)
            expires = dt.datetime.fromisoformat(ended["status"]["expirationTime"])
            created = dt.datetime.fromisoformat(ended["metadata"]["creationTimestamp"])
            assert expires - created == dt.timedelta(seconds=LIFETIME)
            assert _stale_copies(op).get("trusted") == 1, op.log_tail()
            assert (_stale_copies(op).get("reread") or 0) >= 2
            log = op.log_path.read_text()
            assert "its store went back" in log and "Restart the operator" in log
            records = [r for r in op.audit_events() if r["subject"]["name"] == "scale"]
            events = [r["event"] for r in records]
            # reviewed once (the restored copy holds the review), warned before the restore,
            # expired once from the restored copy
            assert events.count("ApprovalReviewed") == 1, events
            assert events.count("ApprovalExpired") == 1, events
        finally:
            op.stop()


def _condition(cluster: LocalCluster, ns: str, kind: str) -> dict[str, Any] | None:
    obj = get(cluster, "ar", ns, "scale") or {}
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None

"""The fuzz tier: random and hostile requests, grants and decisions through the real API server
as the chart's worker and approver; gateway pods run in the node harness.

Every object the API server admits ends with a final phase (or AwaitingDecision) and a reason
within a bounded time, the operator never logs a traceback, and the audit trail verifies.
``WINGMAN_FUZZ_COUNT`` (default 150) and ``WINGMAN_FUZZ_SEED`` size and reproduce a run; the
big run is ``tests/bench/bench_operator.py fuzz``.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client

from support.chart import (
    APPROVER,
    DEFAULT_GATEWAY_IMAGE,
    WORKER,
    approver_groups,
    installed,
    worker_groups,
)
from support.fuzz import Fuzzer, send, unsettled
from support.operator import OperatorProcess
from wingman.audit import verify
from wingman.dev.node import NodeHarness
from wingman.kube import APPROVALS, JSON_PATCH, Kube

G, V = "wingman.dev", "v1alpha1"


@pytest.fixture
def release(cluster: Any, crds: Path, tmp_path: Path) -> Iterator[tuple[str, str, OperatorProcess]]:
    ns = f"wm-fz-{uuid.uuid4().hex[:8]}"
    apps = f"{ns}-apps"
    values = {"operator.replicas": 0,
              "policy.allowlist": [f"kubectl rollout restart deployment/{{name}} -n {apps}",
                                   f"kubectl scale deployment/{{name}} --replicas={{int:0..10}} "
                                   f"-n {apps}"]}
    with installed(cluster, "test", namespace=ns, target_namespace=apps, values=values):
        cluster.kubectl("create", "deployment", "web", "-n", apps,
                        "--image=registry.k8s.io/pause:3.9")
        op = OperatorProcess(cluster, ns, tmp_path / "operator",
                             extra_env={"WINGMAN_AUDIT_VOLUME_CLAIM": "wingman-audit"})
        op.start()
        try:
            yield ns, apps, op
        finally:
            op.stop()


def run_fuzz(cluster: Any, ns: str, apps: str, op: OperatorProcess, workdir: Path,
             count: int, seed: int, settle_seconds: float) -> dict[str, Any]:
    """Send the fuzz and wait for it to settle; returns figures, raises on a finding."""
    worker = client.CustomObjectsApi(cluster.api_client(WORKER, worker_groups("test")))
    approver = client.CustomObjectsApi(cluster.api_client(APPROVER, approver_groups("test")))
    admin = client.CustomObjectsApi(cluster.api_client())
    approver_kube = Kube(approver.api_client)

    def decide(name: str, verdict: str) -> None:
        # the client types a custom object as ``object``: it is the API server's JSON
        obj = cast(dict[str, Any], admin.get_namespaced_custom_object(
            G, V, ns, "approvalrequests", name))
        entry = {"verdict": verdict, "by": APPROVER, "reason": "fuzz"}
        ops = ([{"op": "add", "path": "/spec/decisions/-", "value": entry}]
               if (obj.get("spec") or {}).get("decisions")
               else [{"op": "add", "path": "/spec/decisions", "value": [entry]}])
        approver_kube.patch(APPROVALS, ns, name, ops, content_type=JSON_PATCH)

    def listed(plural: str) -> list[dict[str, Any]]:
        """The namespace's objects of ``plural``, as the API server's JSON."""
        answer = cast(dict[str, Any], admin.list_namespaced_custom_object(G, V, ns, plural))
        return cast(list[dict[str, Any]], answer["items"])

    started = time.monotonic()
    with NodeHarness(cluster=cluster, namespaces=[ns], workdir=workdir / "node",
                     gateway_image=DEFAULT_GATEWAY_IMAGE,
                     volume_dirs={"wingman-audit": op.audit_path.parent}):
        sent = send(Fuzzer(seed, WORKER, apps), count, ns,
                    lambda n, b: worker.create_namespaced_custom_object(
                        G, V, n, "approvalrequests", b),
                    lambda n, b: approver.create_namespaced_custom_object(
                        G, V, n, "executiongrants", b),
                    decide)
        deadline = time.monotonic() + settle_seconds
        left: list[str] = ["?"]
        while time.monotonic() < deadline:
            reqs = {o["metadata"]["name"]: o for o in listed("approvalrequests")
                    if o["metadata"]["name"] in sent.requests}
            grants = {o["metadata"]["name"]: o for o in listed("executiongrants")
                      if o["metadata"]["name"] in sent.grants}
            left = unsettled(reqs, grants)
            if not left:
                break
            time.sleep(2)
    settled_after = time.monotonic() - started
    assert not left, (f"seed {seed}: {len(left)} admitted objects did not settle within "
                      f"{settle_seconds:.0f}s: {left[:20]}\n{op.log_tail()}")
    log = op.log_path.read_text(errors="replace")
    assert "Traceback" not in log, f"seed {seed}: the operator logged a traceback\n{log[-5000:]}"
    report = verify(str(op.audit_path))
    assert report.ok, f"seed {seed}: {report.summary()}"
    phases: dict[str, int] = {}
    for obj in list(reqs.values()) + list(grants.values()):
        key = f"{obj['kind']}/{obj['status']['phase']}"
        phases[key] = phases.get(key, 0) + 1
    return {"seed": seed, "sent": count, "admitted_requests": len(sent.requests),
            "admitted_grants": len(sent.grants), "decisions": sent.decided,
            "refused": sent.refused, "phases": phases, "settled_seconds": settled_after,
            "audit_records": report.records if hasattr(report, "records") else None}


def test_hostile_and_random_objects_all_end_with_a_reason(
        cluster: Any, release: tuple[str, str, OperatorProcess], tmp_path: Path) -> None:
    ns, apps, op = release
    count = int(os.environ.get("WINGMAN_FUZZ_COUNT", "150"))
    seed = int(os.environ.get("WINGMAN_FUZZ_SEED", str(random.randrange(2**31))))
    figures = run_fuzz(cluster, ns, apps, op, tmp_path, count, seed, settle_seconds=300)
    print(json.dumps(figures, sort_keys=True))
    assert figures["admitted_requests"] > 0 and figures["admitted_grants"] > 0
    assert figures["refused"], "the hostile half is refused by the API server"

"""The whole flow with the audit trail in a real PostgreSQL database (the PRD setup).

The chart is installed with ``audit.type=postgres``: the operator and every gateway pod read
the DSN from a file on a volume of the Secret the values name (never from an environment
variable), and both append to one hash chain in the database, which ``wingman audit verify``
checks against the operator's signed checkpoints.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from support.chart import DEFAULT_GATEWAY_IMAGE, WORKER, approval_request, installed, worker_groups
from support.operator import OperatorProcess, get, wait_for
from wingman.audit import open_sink, verify, verify_main
from wingman.cli.main import main as cli_main
from wingman.dev.node import NodeHarness

pytestmark = pytest.mark.nodeharness


def test_operator_and_gateway_share_one_verified_chain_in_postgres(
        cluster: Any, crds: Path, audit_dsn: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    ns, apps = f"wm-pg-{suffix}", f"apps-{suffix}"
    restart = f"kubectl rollout restart deployment/web -n {apps}"
    values = {"operator.replicas": 0, "audit.type": "postgres",
              "audit.postgres.secretName": "wingman-audit-dsn",
              "policy.allowlist": [f"kubectl rollout restart deployment/{{name}} -n {apps}"]}
    with installed(cluster, "test", namespace=ns, target_namespace=apps, values=values):
        cluster.kubectl("create", "secret", "generic", "wingman-audit-dsn", "-n", ns,
                        f"--from-literal=dsn={audit_dsn}")
        cluster.kubectl("create", "deployment", "web", "-n", apps,
                        "--image=registry.k8s.io/pause:3.9")
        dsn_file = tmp_path / "dsn"  # what the operator's Secret volume holds
        dsn_file.write_text(audit_dsn)
        op = OperatorProcess(cluster, ns, tmp_path / "op", extra_env={
            "WINGMAN_AUDIT_TARGET": "", "WINGMAN_AUDIT_TARGET_FILE": str(dsn_file),
            "WINGMAN_AUDIT_SECRET": "wingman-audit-dsn/dsn",
            "WINGMAN_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "1"})
        op.start()
        try:
            def kubectl(*args: str, input: str | None = None) -> Any:
                return cluster.kubectl(*args, "-n", ns, input=input, user=WORKER,
                                       groups=worker_groups("test"))

            body = approval_request("restart", requester=WORKER, environment="test",
                                    commands=(restart,))
            kubectl("apply", "-f", "-", input=json.dumps(body))
            grant = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                     "metadata": {"name": "restart-1"},
                     "spec": {"approvalRef": {"name": "restart"}, "command": restart,
                              "requester": WORKER}}
            wait_for("approved", lambda: ((get(cluster, "ar", ns, "restart") or {})
                     .get("status", {}).get("phase")) == "AutoApproved", 60,
                     on_timeout=op.log_tail)
            with NodeHarness(cluster=cluster, namespaces=[ns], workdir=tmp_path / "node",
                             gateway_image=DEFAULT_GATEWAY_IMAGE, keep=True) as node:
                kubectl("apply", "-f", "-", input=json.dumps(grant))
                eg = wait_for("the grant's result", lambda: (
                    (o := get(cluster, "eg", ns, "restart-1")) and
                    o.get("status", {}).get("phase") in ("Succeeded", "Failed") and o), 90,
                    on_timeout=op.log_tail)
                node.wait_idle(60)
                runs = node.runs
                job = get(cluster, "job", ns, "restart-1-gw")
                head = verify(audit_dsn).records - 1
                wait_for("a checkpoint of the head", lambda: (
                    cm := get(cluster, "configmap", ns, "wingman-audit-checkpoints")) and
                    f'"seq":{head},' in cm["data"]["checkpoints.jsonl"], 30,
                    on_timeout=op.log_tail)
                verified = io.StringIO()
                with contextlib.redirect_stdout(verified):
                    code = cli_main(["audit", "verify", audit_dsn, "-n", ns, "--kubeconfig",
                                     str(cluster.kubeconfig)])
                assert code == 0, verified.getvalue()
                assert f"last verified point: signed checkpoint seq {head} " in \
                    verified.getvalue()
        finally:
            op.stop()
    assert eg["status"]["phase"] == "Succeeded", eg["status"]
    sink = open_sink(audit_dsn)
    try:
        records = list(sink.records())
    finally:
        sink.close()
    events = [r.event for r in records]
    for event in ("OperatorStarted", "ApprovalReviewed", "TokenMinted", "GrantAuthorized",
                  "GatewayTokenBurned", "GatewayExecuting", "GatewayExecuted"):
        assert event in events, event
    assert {r.actor.split("/")[0] for r in records} == {"operator", "gateway"}
    assert eg["status"]["auditRecordHash"] == f"sha256:{records[-1].hash}" or \
        any(f"sha256:{r.hash}" == eg["status"]["auditRecordHash"] for r in records)
    with (tmp_path / "verify.out").open("w") as out:
        assert verify_main(audit_dsn, out=out) == 0
    secret_dsn = audit_dsn
    # The gateway pod got the DSN as a file on a Secret volume, never in its environment.
    assert job is not None and secret_dsn not in json.dumps(job)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert not any("secretKeyRef" in json.dumps(e) for e in container["env"])
    assert {"name": "WINGMAN_AUDIT_TARGET_FILE", "value": "/etc/wingman/audit-dsn/dsn"} in \
        container["env"]
    logs = [op.log_path] + [p for r in runs for p in (r.stdout, r.stderr)]
    for path in logs:
        assert secret_dsn not in path.read_text(errors="replace"), path.name
    assert base64.b64encode(secret_dsn.encode()).decode() not in op.log_path.read_text()

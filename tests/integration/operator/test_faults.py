"""Odd objects and faults never wedge the operator: every object ends with a reason.

Real API server, the chart's identities; the operator runs as its ServiceAccount.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.operator.test_operator import RESTART, Env, operator_env
from support.admission import refuse_updates, wait_refused
from support.chart import DEFAULT_GATEWAY_IMAGE, installed
from support.operator import OperatorProcess, get, wait_for
from wingman.audit import verify
from wingman.capability.tokens import token_sha256
from wingman.dev.node import NodeHarness

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl"


@pytest.fixture
def env(cluster: Any, crds: Path, tmp_path: Path) -> Iterator[Env]:
    with operator_env(cluster, tmp_path, "wm-flt") as made:
        yield made


def _no_tracebacks(env: Env) -> None:
    assert "Traceback" not in env.op.log_path.read_text(), env.op.log_tail()


def test_token_shaped_text_outside_the_command_ends_requests_and_grants_with_the_reason(
        env: Env) -> None:
    body = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": "leaky", "annotations": {"ticket": f"see {JWT}"}},
            "spec": {"requester": "alice", "environment": "test", "instruction": "restart",
                     "commands": [RESTART]}}
    env.as_worker("create", "-f", "-", input=json.dumps(body))
    ar = env.wait_phase("ar", "leaky", "Rejected")
    rejected = {c["type"]: c for c in ar["status"]["conditions"]}["Rejected"]
    assert rejected["reason"] == "LooksLikeToken"
    assert "metadata.annotations.ticket" in rejected["message"]
    assert "consensus" not in ar["status"], "no reviewer saw it"
    assert any(e["reason"] == "LooksLikeToken" for e in env.events("leaky"))

    env.request("fine")
    env.wait_phase("ar", "fine", "AutoApproved")
    grant = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
             "metadata": {"name": "g", "labels": {"team": "x"}, "annotations": {"why": JWT}},
             "spec": {"approvalRef": {"name": "fine"}, "command": RESTART}}
    env.as_approver("create", "-f", "-", input=json.dumps(grant))
    eg = env.wait_phase("eg", "g", "Denied")
    assert eg["status"]["reason"] == "LooksLikeToken"
    assert "metadata.annotations.why" in eg["status"]["message"]
    assert env.secret("g") is None and env.job("g") is None
    records = env.op.audit_events()
    assert JWT not in env.op.audit_path.read_text()
    assert [r["data"]["reason"] for r in records if r["event"] == "GrantDenied"] == \
        ["LooksLikeToken"]
    assert verify(str(env.op.audit_path)).ok
    _no_tracebacks(env)


def test_annotations_near_the_api_servers_limit_do_not_stop_the_flow(env: Env) -> None:
    big = {f"note-{i}": "x" * 60000 for i in range(4)}  # 240,000 of the 262,144 bytes allowed
    body = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": "heavy", "annotations": big},
            "spec": {"requester": "alice", "environment": "test", "instruction": "restart",
                     "commands": [RESTART]}}
    env.as_worker("create", "-f", "-", input=json.dumps(body))
    env.wait_phase("ar", "heavy", "AutoApproved")
    grant = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
             "metadata": {"name": "heavy-1", "annotations": big},
             "spec": {"approvalRef": {"name": "heavy"}, "command": RESTART}}
    env.as_approver("create", "-f", "-", input=json.dumps(grant))
    env.wait_phase("eg", "heavy-1", "TokenIssued")
    _no_tracebacks(env)


def _refuse_status_writes(env: Env, name: str, expression: str) -> None:
    """A real admission policy that makes the API server refuse some of the operator's status
    writes (422), the kind of error retrying can never fix."""
    refuse_updates(env.cluster, env.ns, name, group="wingman.dev",
                   resources=["approvalrequests/status", "executiongrants/status"],
                   expression=expression, reason="Invalid")


def test_a_write_the_api_server_will_never_accept_ends_the_object_instead_of_looping(
        env: Env) -> None:
    name = f"refuse-{env.ns}"
    # a request the policy's rule matches once it is loaded (its status has a consensus),
    # settled before there is a policy: a dry run of a write to its status tells when the
    # API server (its informer) has loaded the policy
    env.request("doomed-probe")
    env.wait_phase("ar", "doomed-probe", "AutoApproved")
    _refuse_status_writes(
        env, name, "!(object.metadata.name.startsWith('doomed') && has(object.status) && "
        "(has(object.status.consensus) || (has(object.status.phase) && "
        "object.status.phase == 'TokenIssued')))")
    try:
        wait_refused(env.cluster, "patch", "ar", "doomed-probe", "-n", env.ns,
                     "--subresource=status", "--type=merge", "--dry-run=server",
                     "-p", '{"status": {"phase": "AutoApproved"}}')
        env.request("doomed-req")
        ar = env.wait_phase("ar", "doomed-req", "Rejected")
        rejected = {c["type"]: c for c in ar["status"]["conditions"]}["Rejected"]
        assert rejected["reason"] == "OperatorWriteRejected"
        assert "refused by the test's admission policy" in rejected["message"]
        env.request("ok-req")
        env.wait_phase("ar", "ok-req", "AutoApproved")
        # named over 54 characters, so its token is issued in its TokenIssued status (which the
        # policy refuses), not on its claim
        doomed = "doomed-" + "g" * 53
        env.grant(doomed, "ok-req", RESTART)
        eg = env.wait_phase("eg", doomed, "Denied")
        assert eg["status"]["reason"] == "OperatorWriteRejected"
        assert env.secret(doomed) is None
        events = [r["event"] for r in env.op.audit_events()]
        assert "ApprovalRejected" in events and "GrantDenied" in events
        assert verify(str(env.op.audit_path)).ok
        _no_tracebacks(env)
    finally:
        env.cluster.kubectl("delete", "validatingadmissionpolicybinding,"
                            "validatingadmissionpolicy", name, check=False)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs) for the audit trail, so it can run full."""
    mount = tmp_path / "audit-volume"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs",
                           str(mount)], capture_output=True, text=True, check=False)
    if done.returncode != 0:  # the tier runs as root on CI; say so plainly when it cannot
        pytest.fail(f"cannot mount a small tmpfs for the audit volume (needs root): "
                    f"{done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(volume: Path) -> Path:
    filler = volume / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass  # ENOSPC: the volume is full
    finally:
        os.close(fd)
    return filler


def test_a_full_audit_volume_mid_flow_leaves_no_state_change_without_its_record(
        cluster: Any, crds: Path, tmp_path: Path, small_volume: Path) -> None:
    """Issue 17 item 4: with the volume full the operator fails closed; once space returns,
    every claim, mint and execution has its record and the trail verifies."""
    ns = f"wm-full-{uuid.uuid4().hex[:8]}"
    apps = f"{ns}-apps"
    audit = small_volume / "audit.jsonl"
    values = {"operator.replicas": 0,
              "policy.allowlist": [f"kubectl rollout restart deployment/{{name}} -n {apps}"]}
    with installed(cluster, "test", namespace=ns, target_namespace=apps, values=values):
        cluster.kubectl("create", "deployment", "web", "-n", apps,
                        "--image=registry.k8s.io/pause:3.9")
        op = OperatorProcess(cluster, ns, tmp_path / "operator", extra_env={
            "WINGMAN_AUDIT_TARGET": str(audit), "WINGMAN_AUDIT_VOLUME_CLAIM": "wingman-audit"})
        op.audit_path = audit
        op.start()
        env = Env(cluster, ns, op)
        command = f"kubectl rollout restart deployment/web -n {apps}"
        try:
            requests = [f"r{i}" for i in range(8)]
            for r in requests:
                env.request(r, commands=(command,))
            for r in requests:
                env.wait_phase("ar", r, "AutoApproved")
            filler = _fill(small_volume)
            for i, r in enumerate(requests):
                env.grant(f"g{i}", r, command)
            # the claims reach the API server, their records cannot: nothing is issued
            wait_for("claims recorded on the approvals", lambda: all(
                (get(cluster, "ar", ns, r) or {}).get("status", {}).get("grants")
                for r in requests), 60, on_timeout=op.log_tail)
            time.sleep(3)
            # fail closed: no token stored without its records. A full volume still takes the
            # few records that fit in the slack of the trail's last page, so a grant or two may
            # get its token Secret, each with its records already in the trail; the rest wait
            # (their claims record their tokens, which no gateway can hold).
            # The Secrets first, then the trail: a grant's records are written before its
            # Secret, so one stored between the two reads is then missing here (read the other
            # way round, a Secret could show a token the trail read before it lacks).
            secrets = [env.secret(f"g{i}") for i in range(len(requests))]
            trail = [json.loads(line) for line in audit.read_text().splitlines()]
            held = []
            for i, secret in enumerate(secrets):
                if secret is None:
                    held.append(i)
                    continue
                token = base64.b64decode(secret["data"]["token"]).decode()
                assert token_sha256(token) in {
                    r["data"]["tokenSHA256"] for r in trail if r["event"] == "TokenMinted"}, (
                    f"g{i}'s token Secret holds a token the full trail has no record of")
            assert held, "the volume ran full, yet every grant got its token"
            assert "wingman_audit_errors_total" in op.metrics()
            filler.unlink()
            with NodeHarness(cluster=cluster, namespaces=[ns], workdir=tmp_path / "node",
                             gateway_image=DEFAULT_GATEWAY_IMAGE,
                             volume_dirs={"wingman-audit": small_volume}):
                for i in range(len(requests)):  # (restarts racing on one Deployment may
                    # fail with a conflict: what matters is that each command ran, once)
                    eg = env.wait_phase("eg", f"g{i}", "Succeeded", "Failed", timeout=120)
                    assert isinstance(eg["status"].get("exitCode"), int), eg["status"]
            records = [json.loads(line) for line in audit.read_text().splitlines()]
            assert verify(str(audit)).ok
            # completeness: each claim, mint and execution has its record
            claimed = {(r["data"]["grantUID"]) for r in records
                       if r["event"] == "ApprovalCommandGranted"}
            minted = {r["data"]["tokenSHA256"] for r in records if r["event"] == "TokenMinted"}
            executed = {r["subject"]["name"] for r in records if r["event"] == "GatewayExecuted"}
            for r in requests:
                for entry in (get(cluster, "ar", ns, r) or {})["status"]["grants"]:
                    assert entry["grantUID"] in claimed, f"claim of {entry['grant']} unrecorded"
            for i in range(len(requests)):
                stored = get(cluster, "eg", ns, f"g{i}")
                assert stored is not None
                assert stored["status"]["tokenSHA256"] in minted, f"mint of g{i} unrecorded"
                assert f"g{i}" in executed, f"execution of g{i} unrecorded"
            _no_tracebacks(env)
        finally:
            op.stop()

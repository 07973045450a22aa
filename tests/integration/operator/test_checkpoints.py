"""Signed checkpoints on the real control plane: made by the operator, out of the writers' reach.

The operator runs as the chart's ServiceAccount and checkpoints its audit trail every second,
into the ConfigMap the chart's admission policy reserves for it and to a witness (the
reference witness server, over HTTP). Then the trail is attacked the way any writer of it
(the gateway included) can: re-chained, cut, replaced. ``wingman audit verify -n`` must catch
each one with no head kept by hand, and the operator must refuse to checkpoint a forgery.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.chart import WORKER, approval_request, installed, kubectl_as_sa, worker_groups
from support.operator import OperatorProcess, get, wait_for
from wingman.audit import make_record, parse_checkpoints, verify
from wingman.audit.witness import WitnessStore, make_server
from wingman.cli.main import main as cli_main
from wingman.operator.checkpoints import CHECKPOINTS_KEY

HMAC_KEY = "witness-shared-key-0123456789abcdef"
RESTART = "kubectl rollout restart deployment/frontend -n apps"


class Witness:
    def __init__(self, workdir: Path) -> None:
        self.store_path = workdir / "witnessed.jsonl"
        self.store = WitnessStore(self.store_path, None)
        self.server = make_server(("127.0.0.1", 0), self.store, HMAC_KEY.encode())
        self.url = f"http://127.0.0.1:{self.server.server_port}/checkpoints"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Witness:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class Env:
    def __init__(self, cluster: Any, ns: str, op: OperatorProcess, witness: Witness,
                 tmp: Path) -> None:
        self.cluster, self.ns, self.op, self.witness, self.tmp = cluster, ns, op, witness, tmp

    def checkpoints(self) -> list[Any]:
        cm = get(self.cluster, "configmap", self.ns, "wingman-audit-checkpoints")
        if cm is None:
            return []
        return parse_checkpoints(cm["data"].get(CHECKPOINTS_KEY, ""), "cm")

    def wait_checkpoint_at(self, seq: int) -> Any:
        return wait_for(f"a checkpoint at seq >= {seq}",
                        lambda: next((c for c in reversed(self.checkpoints()) if c.seq >= seq),
                                     None), 60, on_timeout=self.op.log_tail)

    def head_seq(self) -> int:
        return len(self.op.audit_path.read_bytes().splitlines()) - 1

    def verify_cli(self, *extra: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli_main(["audit", "verify", str(self.op.audit_path), "-n", self.ns,
                             "--kubeconfig", str(self.cluster.kubeconfig), *extra])
        return code, out.getvalue()

    def failures(self, reason: str) -> float:
        match = re.search(
            r'^wingman_audit_checkpoint_failures_total\{reason="' + reason + r'"\} (\S+)$',
            self.op.metrics(), re.M)
        return float(match.group(1)) if match else 0.0


@pytest.fixture
def env(cluster: Any, crds: Path, tmp_path: Path) -> Iterator[Env]:
    ns = f"wm-cp-{uuid.uuid4().hex[:8]}"
    key_file = tmp_path / "hmac-key"
    key_file.write_text(HMAC_KEY)
    with installed(cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
                   values={"operator.replicas": 0}), Witness(tmp_path) as witness:
        op = OperatorProcess(cluster, ns, tmp_path / "operator", extra_env={
            "WINGMAN_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "1",
            "WINGMAN_AUDIT_WITNESS_URL": witness.url,
            "WINGMAN_AUDIT_WITNESS_HMAC_KEY_FILE": str(key_file)})
        op.start()
        try:
            yield Env(cluster, ns, op, witness, tmp_path)
        finally:
            op.stop()


def _rechain(lines: list[bytes], start: int) -> list[bytes]:
    out = list(lines[:start])
    prev = json.loads(lines[start - 1])["hash"]
    for raw in lines[start:]:
        obj = json.loads(raw)
        record = make_record(obj["seq"], prev, obj["event"], actor=obj["actor"],
                             subject=obj["subject"], data={**obj["data"], "forged": True},
                             now=dt.datetime.now(dt.UTC))
        prev = record.hash
        out.append(record.to_bytes() + b"\n")
    return out


def test_the_operator_checkpoints_its_trail_where_no_writer_of_it_can_write(env: Env) -> None:
    first = env.wait_checkpoint_at(0)
    # A dedicated audit key, not the token-signing key.
    audit_key = get(env.cluster, "secret", env.ns, "wingman-audit-key")
    signing_key = get(env.cluster, "secret", env.ns, "wingman-signing-key")
    assert audit_key is not None and signing_key is not None
    assert set(audit_key["data"]) & set(signing_key["data"]) == {"active"}
    cm = get(env.cluster, "configmap", env.ns, "wingman-audit-checkpoints")
    assert cm is not None and f"{first.kid}.pem" in cm["data"]

    # New records are covered within a round.
    body = approval_request("restart", requester=WORKER, environment="test",
                            commands=(RESTART,))
    env.cluster.kubectl("apply", "-f", "-", "-n", env.ns, input=json.dumps(body), user=WORKER,
                        groups=worker_groups("test"))
    wait_for("the review record", lambda: len(env.op.audit_events()) >= 2, 60)
    env.wait_checkpoint_at(env.head_seq())
    code, out = env.verify_cli()
    assert code == 0, out
    assert "last verified point: signed checkpoint seq" in out

    # The gateway has no right to the ConfigMap or the audit key...
    for args in (["patch", "configmap", "wingman-audit-checkpoints", "-p",
                  '{"data":{"checkpoints.jsonl":""}}'],
                 ["delete", "configmap", "wingman-audit-checkpoints"],
                 ["get", "secret", "wingman-audit-key"]):
        done = kubectl_as_sa(env.cluster, env.ns, "wingman-gateway", "-n", env.ns, *args)
        assert done.returncode != 0 and "forbidden" in done.stderr.lower(), done.stderr
    # ...and admission refuses even an administrator who is not the operator.
    for args in (["patch", "configmap", "wingman-audit-checkpoints", "-p",
                  '{"data":{"checkpoints.jsonl":""}}'],
                 ["delete", "configmap", "wingman-audit-checkpoints"]):
        done = env.cluster.kubectl(*args, "-n", env.ns, check=False)
        assert done.returncode != 0 and "only the Wingman operator" in done.stderr, done.stderr

    # Every checkpoint reached the witness, which checked its HMAC.
    witnessed = wait_for("the witness's copy", lambda: (
        cps := parse_checkpoints(env.witness.store_path.read_bytes()
                                 if env.witness.store_path.exists() else b"", "w"))
        and cps[-1].seq == env.checkpoints()[-1].seq and cps, 30)
    assert [c.to_line() for c in witnessed] == [c.to_line() for c in env.checkpoints()]
    assert env.op.metrics().count("wingman_audit_witness_failures_total 0.0") == 1


def test_a_rechained_trail_is_caught_and_never_checkpointed(env: Env) -> None:
    env.wait_checkpoint_at(0)
    body = approval_request("restart", requester=WORKER, environment="test",
                            commands=(RESTART,))
    env.cluster.kubectl("apply", "-f", "-", "-n", env.ns, input=json.dumps(body), user=WORKER,
                        groups=worker_groups("test"))
    wait_for("two records", lambda: len(env.op.audit_events()) >= 2, 60)
    covered = env.wait_checkpoint_at(env.head_seq())
    original = env.op.audit_path.read_bytes()
    lines = original.splitlines(keepends=True)
    forged = b"".join(_rechain(lines, 1))
    env.op.audit_path.write_bytes(forged)
    assert verify(str(env.op.audit_path)).ok  # the chain alone is fooled

    code, out = env.verify_cli()
    assert code == 1 and "Rewritten" in out, out
    wait_for("the operator to refuse", lambda: env.failures("AuditRewritten") >= 1, 30,
             on_timeout=env.op.log_tail)
    assert env.checkpoints()[-1] == covered  # nothing signed over the forgery
    # The witness's copy alone (with the audit key pinned) catches it too.
    pem = env.tmp / "audit-key.pem"
    cm = get(env.cluster, "configmap", env.ns, "wingman-audit-checkpoints")
    assert cm is not None
    pem.write_text(cm["data"][f"{covered.kid}.pem"])
    out_stream = io.StringIO()
    with contextlib.redirect_stdout(out_stream):
        code = cli_main(["audit", "verify", str(env.op.audit_path), "--checkpoints",
                         str(env.witness.store_path), "--audit-key", str(pem)])
    assert code == 1 and "Rewritten" in out_stream.getvalue()

    # The real history back: the operator carries on from where it verified.
    env.op.audit_path.write_bytes(original)
    code, out = env.verify_cli()
    assert code == 0, out


@pytest.mark.parametrize("attack", ["cut-tail", "emptied", "replaced"])
def test_a_cut_or_replaced_trail_is_caught_without_a_hand_kept_head(env: Env,
                                                                    attack: str) -> None:
    body = approval_request("restart", requester=WORKER, environment="test",
                            commands=(RESTART,))
    env.cluster.kubectl("apply", "-f", "-", "-n", env.ns, input=json.dumps(body), user=WORKER,
                        groups=worker_groups("test"))
    wait_for("two records", lambda: len(env.op.audit_events()) >= 2, 60)
    env.wait_checkpoint_at(env.head_seq())
    lines = env.op.audit_path.read_bytes().splitlines(keepends=True)
    if attack == "cut-tail":
        env.op.audit_path.write_bytes(b"".join(lines[:-1]))
    elif attack == "emptied":
        env.op.audit_path.write_bytes(b"")
    else:
        from wingman.audit import FileSink

        fresh = env.tmp / "fresh.jsonl"
        with FileSink(fresh) as sink:
            for i in range(len(lines) + 3):
                sink.append("OperatorStarted", actor="operator", subject={}, data={"i": i})
        env.op.audit_path.write_bytes(fresh.read_bytes())
    code, out = env.verify_cli()
    assert code == 1, out
    assert ("Truncated" in out) if attack != "replaced" else ("Rewritten" in out), out
    assert verify(str(env.op.audit_path)).ok  # the chain alone is fooled each time


def test_a_namespace_deleted_without_uninstalling_still_goes(cluster: Any, crds: Path,
                                                            tmp_path: Path) -> None:
    # The admission policy that guards the checkpoints must not keep the namespace
    # controller from removing the ConfigMap with its namespace.
    ns = f"wm-cpdel-{uuid.uuid4().hex[:8]}"
    with installed(cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
                   values={"operator.replicas": 0}):
        op = OperatorProcess(cluster, ns, tmp_path / "operator", extra_env={
            "WINGMAN_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "1"})
        op.start()
        try:
            wait_for("the checkpoints ConfigMap", lambda: get(
                cluster, "configmap", ns, "wingman-audit-checkpoints"), 60,
                on_timeout=op.log_tail)
        finally:
            op.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
        wait_for(f"namespace {ns} to be gone",
                 lambda: cluster.kubectl("get", "namespace", ns, check=False).returncode != 0,
                 120, on_timeout=lambda: cluster.kubectl(
                     "get", "namespace", ns, "-o", "jsonpath={.status}", check=False).stdout)


def test_a_collection_delete_cannot_take_the_checkpoints_with_it(env: Env) -> None:
    env.wait_checkpoint_at(0)
    done = env.cluster.kubectl("delete", "configmap", "--all", "-n", env.ns, check=False)
    assert done.returncode != 0 and "only the Wingman operator" in done.stderr, done.stderr
    assert env.checkpoints()

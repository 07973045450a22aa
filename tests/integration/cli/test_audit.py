"""``wingman audit verify -n`` against the real API server: a checkpoints ConfigMap that holds
no checkpoint does not make a trail with records verify (deleting the checkpoints must not let
a rewritten trail pass); an empty trail still does (a fresh install). Nor does a source that
holds nothing, next to one that verifies."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from pathlib import Path

import pytest

from wingman.audit import FileSink
from wingman.capability.keys import generate_signing_key
from wingman.cli.main import main as cli_main
from wingman.dev.cluster import LocalCluster
from wingman.kube import CONFIGMAPS, Kube

T0 = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)


def _verify(cluster: LocalCluster, namespace: str, target: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["audit", "verify", str(target), "-n", namespace,
                         "--kubeconfig", str(cluster.kubeconfig)])
    return code, out.getvalue()


@pytest.mark.parametrize("checkpoints", [None, "", "\n"])
def test_a_configmap_without_checkpoints_does_not_verify_a_trail_with_records(
        cluster: LocalCluster, namespace: str, tmp_path: Path, checkpoints: str | None) -> None:
    key = generate_signing_key()
    data = {f"{key.kid}.pem": key.public_pem().decode()}
    if checkpoints is not None:
        data["checkpoints.jsonl"] = checkpoints
    Kube(cluster.api_client()).create(CONFIGMAPS, namespace, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wingman-audit-checkpoints"}, "data": data})
    trail = tmp_path / "audit.jsonl"
    trail.write_text("")
    code, out = _verify(cluster, namespace, trail)
    assert code == 0 and out.startswith("OK: 0 records"), out  # a fresh install

    with FileSink(trail, clock=lambda: T0) as sink:
        sink.append("VoteCast", actor="reviewer", subject={"kind": "X", "name": "g"})
    code, out = _verify(cluster, namespace, trail)
    assert code == 1, out
    assert out.startswith(f"UNVERIFIED: there is no checkpoint in ConfigMap {namespace}/"
                          "wingman-audit-checkpoints, yet the trail holds 1 record "), out


def test_a_witness_copy_or_a_configmap_that_holds_nothing_is_not_passed_over(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """``-n NS --checkpoints witness.jsonl``: when either source holds no checkpoint of the
    trail, the verdict says so (exit 1), though the other verifies the trail: the person
    believes both were consulted, and only the witness shows a rewrite the cluster's own
    checkpoints were made to agree with."""
    from wingman.audit import AuditAnchor
    from wingman.audit.signing import sign_checkpoint

    trail = tmp_path / "audit.jsonl"
    with FileSink(trail, clock=lambda: T0) as sink:
        last = sink.append("VoteCast", actor="reviewer", subject={"kind": "X", "name": "g"})
    key = generate_signing_key()
    line = sign_checkpoint(key, log=namespace, anchor=AuditAnchor(last.seq, last.hash),
                           now=T0).to_line() + "\n"
    kube = Kube(cluster.api_client())
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "wingman-audit-checkpoints"},
            "data": {f"{key.kid}.pem": key.public_pem().decode(), "checkpoints.jsonl": line}}
    kube.create(CONFIGMAPS, namespace, body)
    witness = tmp_path / "witness.jsonl"
    for configmap, copy, empty in ((line, "", str(witness)),
                                   ("", line, f"ConfigMap {namespace}/wingman-audit-checkpoints")):
        current = kube.get_or_none(CONFIGMAPS, namespace, "wingman-audit-checkpoints")
        assert current is not None
        current["data"]["checkpoints.jsonl"] = configmap
        kube.request("PUT", CONFIGMAPS.path(namespace, "wingman-audit-checkpoints"), current)
        witness.write_text(copy)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli_main(["audit", "verify", str(trail), "-n", namespace, "--kubeconfig",
                             str(cluster.kubeconfig), "--checkpoints", str(witness)])
        assert code == 1, out.getvalue()
        assert out.getvalue().startswith(f"UNVERIFIED: there is no checkpoint in {empty}, yet "
                                         "the trail holds 1 record "), out.getvalue()
        assert "The other sources verify it: 1 records" in out.getvalue(), out.getvalue()

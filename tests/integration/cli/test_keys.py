"""``wingman keys`` against the real API server: a rotation is either reported done or not made.

The Secret is replaced first, then the public keys are published; when the second step is
refused, the rotation has happened all the same, and the error must say so (running ``rotate``
again would rotate a second time)."""

from __future__ import annotations

import subprocess
import sys

from wingman.capability import keyring
from wingman.cli import requests as cli
from wingman.dev.cluster import LocalCluster
from wingman.kube import SECRETS, Kube


def test_a_rotation_whose_public_keys_are_refused_says_it_was_made(
        cluster: LocalCluster, namespace: str) -> None:
    ring = keyring.new_ring()
    admin = Kube(cluster.api_client())
    admin.create(SECRETS, namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wingman-signing-key"},
        "stringData": ring.secret_data()})
    # may rotate the Secret, may not publish: no right on ConfigMaps
    cluster.kubectl("create", "role", "rotator", "-n", namespace, "--verb=get,update",
                    "--resource=secrets")
    cluster.kubectl("create", "rolebinding", "rotator", "-n", namespace, "--role=rotator",
                    "--user=rotator")
    proc = subprocess.run([sys.executable, "-m", "wingman.cli", "keys", "rotate", "-n",
                           namespace, "--kubeconfig", str(cluster.kubeconfig_for("rotator"))],
                          capture_output=True, text=True, timeout=120, check=False)
    rotated = keyring.ring_from_secret(admin.get(SECRETS, namespace, "wingman-signing-key"),
                                       "wingman-signing-key")
    assert rotated.active != ring.active and set(ring.keys) < set(rotated.keys)
    assert proc.returncode == cli.EXIT_API and "Traceback" not in proc.stderr
    assert f"rotated: {rotated.active} signs now" in proc.stderr, proc.stderr
    assert "do not rotate again" in proc.stderr
    assert "at its next sweep, within seconds" in proc.stderr  # as the runbook says
    assert "PRIVATE KEY" not in proc.stderr + proc.stdout

"""With several files in ``KUBECONFIG`` the CLI acts on the cluster, as the user, that kubectl
does: the current context of the first file that sets one (the kubernetes library alone would
take the last file's), unless ``--context`` names another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.kubeconfigs import one_per_user, whoami
from wingman.client.connect import connect
from wingman.dev.cluster import LocalCluster
from wingman.settings import ClientSettings


def _cli(cluster: LocalCluster, kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env(), "KUBECONFIG": kubeconfig}
    env.pop("WINGMAN_NAMESPACE", None)
    return subprocess.run([sys.executable, "-m", "wingman.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_the_cli_acts_as_the_user_of_kubectls_current_context(
        cluster: LocalCluster, crds: object, namespace: str, tmp_path: Path) -> None:
    first, second = one_per_user(cluster, tmp_path, "kctx-reader", "kctx-stranger")
    cluster.kubectl("create", "role", "reader", "-n", namespace, "--verb=get,list,watch",
                    "--resource=approvalrequests.wingman.dev,executiongrants.wingman.dev")
    cluster.kubectl("create", "rolebinding", "reader", "-n", namespace, "--role=reader",
                    "--user=kctx-reader")
    merged = f"{first}{os.pathsep}{second}"

    listed = _cli(cluster, merged, "list", "-n", namespace, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["namespace"] == namespace

    # an explicit --context still wins: that user may not list here
    refused = _cli(cluster, merged, "list", "-n", namespace, "-o", "json",
                   "--context", "kctx-stranger")
    assert refused.returncode != 0
    assert "kctx-stranger" in refused.stdout + refused.stderr


def test_connect_uses_kubectls_current_context_and_an_explicit_one(
        cluster: LocalCluster, tmp_path: Path) -> None:
    first, second = one_per_user(cluster, tmp_path, "kctx-one", "kctx-two")
    empty = tmp_path / "empty.kubeconfig"  # adds nothing, for kubectl as for Wingman
    empty.write_text("")
    settings = ClientSettings.from_env(
        {"KUBECONFIG": os.pathsep.join(map(str, (empty, first, second))),
         "HOME": str(tmp_path)})
    for context, user in ((None, "kctx-one"), ("kctx-two", "kctx-two")):
        connection = connect(settings, context=context)
        try:
            assert whoami(connection.kube.api) == user
        finally:
            connection.kube.close()

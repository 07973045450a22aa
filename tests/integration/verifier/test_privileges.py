"""verify-privileges asks its questions as the user kubectl would act as: with several files in
``KUBECONFIG``, the current context of the first file that sets one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.kubeconfigs import one_per_user, whoami
from wingman.dev.cluster import LocalCluster
from wingman.verifier import privileges


def test_several_kubeconfig_files_are_merged_as_kubectl_merges_them(
        cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = one_per_user(cluster, tmp_path, "kctx-asker", "kctx-other")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}{os.pathsep}{first}"
                                     f"{os.pathsep}{second}")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    connected, _ = privileges._connect(None)
    assert connected.server == cluster.server
    assert whoami(connected.api) == "kctx-asker"

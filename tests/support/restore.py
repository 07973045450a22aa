"""etcd restored from a backup on a local control plane of the test's own (the restore takes
every namespace back, which the session's shared control plane must not see).

The backup is a copy of etcd's data directory taken while etcd is stopped, as a volume
snapshot would be; the restore follows Kubernetes' procedure (the API server stopped, etcd's
data replaced, etcd and then the API server started again). The store's revision then goes
back below versions clients have seen, which ``etcdutl snapshot restore --bump-revision`` would
have avoided.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.chart import CRDS_DIR
from support.clusters import existing_kubeconfig
from wingman.dev.cluster import LocalCluster


@contextmanager
def own_control_plane(workdir: Path) -> Iterator[LocalCluster]:
    """A local control plane with the CRDs applied (skips against an existing cluster)."""
    if existing_kubeconfig() is not None:
        pytest.skip("restores etcd from a backup: needs a local control plane of its own")
    with LocalCluster.start(workdir) as local:
        local.apply_crds(CRDS_DIR)
        yield local


def backup(cluster: LocalCluster, to: Path) -> None:
    """etcd's data directory copied to ``to`` while etcd is stopped; etcd started again."""
    cluster.kill("etcd")
    try:
        shutil.copytree(cluster.workdir / "etcd", to)
    finally:
        cluster.restart("etcd")


def restore(cluster: LocalCluster, copy: Path) -> None:
    """The API server stopped, etcd's data replaced by ``copy``, etcd and the API server
    started again."""
    cluster.kill("kube-apiserver")
    cluster.kill("etcd")
    shutil.rmtree(cluster.workdir / "etcd")
    shutil.copytree(copy, cluster.workdir / "etcd")
    cluster.restart("etcd")
    cluster.restart("kube-apiserver")

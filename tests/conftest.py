"""Shared fixtures: the real local control plane, fresh namespaces, PostgreSQL, ordering.

Tiers are chosen by markers (``integration``, ``container``, ``e2e``, ``postgres``); every tier
runs under the README's test command, unit tests first and e2e last. Integration, container and
e2e tests use a real kube-apiserver + etcd + kube-controller-manager started once per session
(``wingman.dev.cluster``); they never read the developer's own kubeconfig. The container tier
also starts a private Docker Engine and builds the image (``tests/support/containers.py``).

With ``WINGMAN_E2E_KUBECONFIG`` set, ``cluster`` is that existing cluster instead of a local
control plane (``tests/support/clusters.py``; ``make e2e-kind`` uses it with kind).

SIGTERM and SIGHUP end a session the way Ctrl-C does, so every fixture's teardown runs and no
server a test started (control plane, dockerd, PostgreSQL, operator) is left behind.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.clusters import ExistingCluster, existing_kubeconfig, nodes_mode
from support.postgres import audit_dsn, postgres_dsn  # noqa: F401 - fixtures
from wingman.dev.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"

_TIER_ORDER = {"unit": 0, "postgres": 1, "integration": 2, "container": 3, "e2e": 4}


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM and SIGHUP interrupt like Ctrl-C: pytest then tears every fixture down."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _interrupt)


def _tier(item: pytest.Item) -> str:
    path = Path(str(item.fspath))
    for tier in ("e2e", "container", "integration", "unit", "bench"):
        if tier in path.parts:
            return tier
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark by directory and run the slow tiers last (every tier still runs)."""
    real_nodes = existing_kubeconfig() is not None and nodes_mode() == "cluster"
    for item in items:
        tier = _tier(item)
        if tier in ("integration", "container", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))
        if real_nodes and item.get_closest_marker("nodeharness"):
            item.add_marker(pytest.mark.skip(
                reason="runs gateway pods through the node harness; WINGMAN_E2E_NODES=cluster "
                       "lets the cluster's own nodes run pods, which would race it"))
    items.sort(key=lambda i: _TIER_ORDER.get(_tier(i), 0))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The real local control plane, started once per test session (or the existing cluster
    WINGMAN_E2E_KUBECONFIG names)."""
    existing = existing_kubeconfig()
    if existing is not None:
        found = ExistingCluster.connect(existing)
        try:
            yield found
        finally:
            found.stop()
        return
    workdir = tmp_path_factory.mktemp("cluster")
    local = LocalCluster.start(workdir)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def crds(cluster: LocalCluster) -> Path:
    """Top-level crds/ applied to the cluster and Established."""
    cluster.apply_crds(CRDS)
    return CRDS


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(autouse=True)
def _no_ambient_kubeconfig(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never fall back to the developer's own kubeconfig by accident."""
    monkeypatch.delenv("KUBECONFIG", raising=False)

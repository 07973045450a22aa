"""The review panel's tables against the real API server: the types it serves and their scope."""

from __future__ import annotations

import pytest

from wingman.dev.cluster import LocalCluster
from wingman.review.commands import resource_types
from wingman.review.voters import CLUSTER_RESOURCES, NAMESPACED_RESOURCES

pytestmark = pytest.mark.integration

# The API groups kube-apiserver serves itself (an existing cluster may serve custom resources
# and aggregated APIs besides, in groups of their own, some of them under k8s.io).
ADD_ON_GROUPS = ("gateway.networking.k8s.io", "snapshot.storage.k8s.io", "metrics.k8s.io")


def _built_in(name: str) -> bool:
    group = name.partition(".")[2]
    return group in ("", "apps", "batch", "autoscaling", "policy") or (
        group.endswith(".k8s.io") and not group.endswith(ADD_ON_GROUPS))


@pytest.mark.parametrize(("namespaced", "table"), [("false", CLUSTER_RESOURCES),
                                                   ("true", NAMESPACED_RESOURCES)])
def test_the_scope_tables_know_every_built_in_type_the_api_server_serves(
        cluster: LocalCluster, namespaced: str, table: frozenset[str]) -> None:
    # blast-radius reads a type's scope from these tables: one missing from the cluster-scoped
    # table would be rated as acting in a namespace (and, with targets, refused for the wrong
    # reason)
    listed = cluster.kubectl("api-resources", f"--namespaced={namespaced}", "-o",
                             "name").stdout.split()
    served = [name for name in listed if _built_in(name)]
    missing = [name for name in served if not set(resource_types(name)) <= table]
    assert served and not missing, missing

"""A decision bound to the request the approver saw never lands on a look-alike.

Chat sends the uid of the request a person pressed a button for: a request deleted and created
again under the same name in between is refused (StaleRequest), and the new one stays undecided.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from support.chart import (
    APPROVER,
    WORKER,
    approver_groups,
    client_as,
    installed,
    worker_groups,
)
from wingman.dev.cluster import LocalCluster
from wingman.errors import Invalid


@pytest.fixture(scope="module")
def release(cluster: LocalCluster, crds: object) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:6]
    ns, apps = f"wm-decide-{suffix}", f"apps-decide-{suffix}"
    with installed(cluster, "test", namespace=ns, target_namespace=apps,
                   values={"operator.replicas": 0}):
        yield ns, apps


def test_a_decision_for_a_request_that_was_replaced_is_refused(
        cluster: LocalCluster, release: tuple[str, str]) -> None:
    ns, apps = release
    cmd = f"kubectl scale deployment/web --replicas=3 -n {apps}"
    with client_as(cluster, ns, WORKER, worker_groups("test")) as agent, \
            client_as(cluster, ns, APPROVER, approver_groups("test")) as approver:
        agent.create_request(instruction="scale web", commands=[cmd], name="same")
        seen = approver.get_request_object("same")["metadata"]["uid"]
        cluster.kubectl("delete", "ar", "same", "-n", ns, "--wait=true")
        agent.create_request(instruction="scale web, again", commands=[cmd], name="same")
        with pytest.raises(Invalid) as refused:
            approver.decide("same", "Approve", uid=seen)
        assert refused.value.reason == "StaleRequest"
        assert "deleted and created again" in refused.value.message
        assert not approver.get_request_object("same")["spec"].get("decisions")

        current = approver.get_request_object("same")["metadata"]["uid"]
        approver.decide("same", "Approve", uid=current)
        decisions = approver.get_request_object("same")["spec"]["decisions"]
        assert [(d["verdict"], d["by"]) for d in decisions] == [("Approve", APPROVER)]

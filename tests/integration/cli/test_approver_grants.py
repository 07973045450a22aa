"""Where workers may not start executions (policy.workersMayGrant: false), the client says so.

The agent's ``execute`` answers ``awaiting_grant`` with the grant's deterministic name and the
exact command an approver runs; nothing is created in the agent's name. Once the approver runs
it, the agent's next read of that name sees the grant.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.chart import (
    APPROVER,
    WORKER,
    approver_groups,
    client_as,
    installed,
    worker_groups,
)
from support.operator import OperatorProcess
from wingman.client import State
from wingman.dev.cluster import LocalCluster


@pytest.fixture(scope="module")
def release(cluster: LocalCluster, crds: object, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:6]
    ns, apps = f"wm-nogrant-{suffix}", f"apps-nogrant-{suffix}"
    values = {"operator.replicas": 0, "policy.workersMayGrant": False,
              "policy.allowlist": [f"kubectl rollout restart deployment/{{name}} -n {apps}"]}
    with installed(cluster, "test", namespace=ns, target_namespace=apps, values=values):
        op = OperatorProcess(cluster, ns, Path(tmp_path_factory.mktemp("nogrant")))
        op.start()
        try:
            yield ns, apps
        finally:
            op.stop()


def test_the_agent_is_told_an_approver_must_start_it_and_then_sees_the_grant(
        cluster: LocalCluster, release: tuple[str, str]) -> None:
    ns, apps = release
    cmd = f"kubectl rollout restart deployment/web -n {apps}"
    with client_as(cluster, ns, WORKER, worker_groups("test")) as agent, \
            client_as(cluster, ns, APPROVER, approver_groups("test")) as approver:
        assert agent.policy().workers_may_grant is False
        asked = agent.create_request(instruction="restart web", commands=[cmd])
        decided = agent.wait_request(str(asked.name), 60)
        assert decided.state is State.AUTO_APPROVED, decided
        assert "ask an approver" in decided.next

        answer = agent.execute(str(asked.name), cmd)
        assert answer.state is State.AWAITING_GRANT and answer.waiting
        assert f"kubectl wingman exec {asked.name} --command '{cmd}'" in answer.next
        assert agent.list_grants() == [], "nothing was created in the agent's name"

        started = approver.execute(str(asked.name), cmd)
        assert started.name == answer.name, "the approver's grant has the name the agent got"
        seen = agent.grant_status(str(answer.name))
        assert seen.state in (State.GRANTED, State.RUNNING, State.FAILED, State.EXPIRED)
        again = agent.execute(str(asked.name), cmd)
        assert again.kind == "ExecutionGrant" and again.name == answer.name

"""Where workers may not start executions (policy.workersMayGrant: false), the client says so.

The agent's ``execute`` answers ``awaiting_grant`` with the grant's deterministic name and the
exact command an approver runs; nothing is created in the agent's name. Once the approver runs
it, the agent's next read of that name sees the grant.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

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
from wingman.client.api import WingmanClient
from wingman.dev.cluster import LocalCluster
from wingman.mcp import server as mcp_server


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


def test_the_agent_is_not_offered_another_workers_approved_command(
        cluster: LocalCluster, release: tuple[str, str]) -> None:
    """Through MCP, ``execute`` on another worker's approved request answers awaiting_grant
    without the command an approver would run: another worker's request is for the agent to
    know of, not to act on (or to get an approver to act on)."""
    ns, apps = release
    cmd = f"kubectl rollout restart deployment/db -n {apps}"
    with client_as(cluster, ns, WORKER, worker_groups("test")) as agent, \
            client_as(cluster, ns, "mallory", worker_groups("test")) as other:
        theirs = other.create_request(instruction="restart db", commands=[cmd])
        assert other.wait_request(str(theirs.name), 60).state is State.AUTO_APPROVED

        async def call(client: WingmanClient) -> dict[str, Any]:
            async with Client(mcp_server.build_server(client)) as session:
                result = await session.call_tool("execute", {"request": str(theirs.name),
                                                             "command": cmd})
                assert not result.is_error, result
                return dict(json.loads(result.content[0].text))  # type: ignore[union-attr]

        seen = anyio.run(call, agent)
        assert seen["state"] == "awaiting_grant", seen
        assert "wingman exec" not in seen["next"], seen
        assert seen["other_worker"]["requester"] == "mallory", seen
        own = anyio.run(call, other)  # its requester is told what to ask an approver
        assert own["state"] == "awaiting_grant" and "other_worker" not in own, own
        assert f"kubectl wingman exec {theirs.name} --command '{cmd}'" in own["next"], own
        assert all(g.request != theirs.name for g in agent.list_grants()), "nothing created"

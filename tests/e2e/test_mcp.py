"""Agents through MCP: the SDK's own client drives ``wingman mcp`` on the real control plane.

The chart is installed (test values), the operator runs as its ServiceAccount, and the node
harness runs the gateway pods the Job controller creates. The agent is a worker: over stdio
the server runs with the worker's kubeconfig (user alice), over streamable HTTP it runs the way
a sidecar does, with the in-cluster configuration of a real ServiceAccount token. Every answer
is read as an agent reads it: ``state``, ``next`` and the details the state carries.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

import wingman
from support.chart import (
    APPROVER,
    DEFAULT_GATEWAY_IMAGE,
    SECOND_APPROVER,
    WORKER,
    approver_groups,
    installed,
    sa_user,
    worker_groups,
)
from support.operator import OperatorProcess, get, wait_for
from support.ports import serving_port
from wingman.dev.cluster import LocalCluster
from wingman.dev.node import NodeHarness

#: ``wingman mcp`` runs the code under test, not an installed copy
OPERATOR_SRC = Path(wingman.__file__).resolve().parents[1]
AGENT_SA = "agent"
MAX_WAIT = 20.0
TOOLS = {"request_approval", "get_request", "execute", "get_result", "list_requests",
         "rollback"}

pytestmark = pytest.mark.nodeharness


@dataclass
class World:
    cluster: LocalCluster
    ns: str
    apps: str
    work: Path
    pod_env: dict[str, str]
    expiring: str
    transcript: list[str] = field(default_factory=list)

    @property
    def restart(self) -> str:
        return f"kubectl rollout restart deployment/web -n {self.apps}"

    def scale(self, n: int) -> str:
        return f"kubectl scale deployment/web --replicas={n} -n {self.apps}"

    def decide(self, name: str, verdict: str, reason: str, who: str = APPROVER) -> None:
        """An approver decides with the CLI and their own kubeconfig (never through MCP)."""
        kubeconfig = self.cluster.kubeconfig_for(who, approver_groups("test"))
        env = {**self.pod_env, "KUBERNETES_SERVICE_HOST": ""}
        proc = subprocess.run(
            [sys.executable, "-m", "wingman.cli", "approve" if verdict == "Approve" else "reject",
             name, "--reason", reason, "-n", self.ns, "--kubeconfig", str(kubeconfig)],
            env=env, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr

    def stdio_params(self) -> StdioServerParameters:
        kubeconfig = self.cluster.kubeconfig_for(WORKER, worker_groups("test"))
        return StdioServerParameters(
            command=sys.executable,
            args=["-m", "wingman.cli", "mcp", "-n", self.ns, "--kubeconfig", str(kubeconfig),
                  "--max-wait-seconds", str(MAX_WAIT)],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.work),
                 "PYTHONPATH": str(OPERATOR_SRC)})


@pytest.fixture(scope="module")
def world(cluster: LocalCluster, crds: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    suffix = uuid.uuid4().hex[:6]
    ns, apps = f"wm-mcp-{suffix}", f"apps-mcp-{suffix}"
    work = tmp_path_factory.mktemp("mcp")
    values = {
        "operator.replicas": 0,
        "rbac.workers.serviceAccounts": [{"name": AGENT_SA}],
        "policy.allowlist": [f"kubectl rollout restart deployment/{{name}} -n {apps}",
                             f"kubectl scale deployment/{{name}} --replicas={{int:0..10}} "
                             f"-n {apps}"],
    }
    with installed(cluster, "test", namespace=ns, target_namespace=apps, values=values):
        cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": apps},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "containers": [{"name": "web",
                                         "image": "registry.k8s.io/pause:3.9"}]}}}}))
        cluster.kubectl("create", "serviceaccount", AGENT_SA, "-n", ns)
        sa = work / "serviceaccount"
        sa.mkdir()
        (sa / "token").write_text(cluster.sa_token(ns, AGENT_SA, expiration_seconds=3600))
        (sa / "ca.crt").write_bytes(Path(cluster.ca_file).read_bytes())
        (sa / "namespace").write_text(ns)
        host, port = cluster.server.rsplit("//", 1)[1].rsplit(":", 1)
        pod_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
                   "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port,
                   "WINGMAN_SERVICEACCOUNT_DIR": str(sa), "PYTHONPATH": str(OPERATOR_SRC)}
        op = OperatorProcess(cluster, ns, work / "operator",
                             extra_env={"WINGMAN_AUDIT_VOLUME_CLAIM": "wingman-audit"})
        op.start()
        node = NodeHarness(cluster=cluster, namespaces=[ns], workdir=work / "node",
                           gateway_image=DEFAULT_GATEWAY_IMAGE,
                           volume_dirs={"wingman-audit": op.audit_path.parent})
        try:
            with node:
                w = World(cluster, ns, apps, work, pod_env, expiring="short-lived")
                # created first, checked last: the shortest lifetime the CRD allows is 60 s
                answer = anyio.run(_one_call, w, "request_approval", {
                    "instruction": "restart web (a request that is left to expire)",
                    "commands": [w.scale(5)], "expires_after_seconds": 60,
                    "source": {"untrusted_input": True, "reference": "chat:42"}})
                w.expiring = answer["name"]
                yield w
        finally:
            op.stop()


@asynccontextmanager
async def stdio_session(w: World) -> AsyncIterator[ClientSession]:
    async with stdio_client(w.stdio_params()) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def call(w: World, session: ClientSession, tool: str, args: dict[str, Any]
               ) -> dict[str, Any]:
    result = await session.call_tool(tool, args)
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    w.transcript.append(json.dumps(data))
    assert data["state"] and data["next"], data
    return data


async def _one_call(w: World, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    async with stdio_session(w) as s:
        return await call(w, s, tool, args)


def test_over_stdio_a_low_risk_request_is_auto_approved_executed_and_its_output_read(
        world: World) -> None:
    async def flow() -> None:
        async with stdio_session(world) as s:
            tools = await s.list_tools()
            assert {t.name for t in tools.tools} == TOOLS, "no tool decides a request"
            policy = await s.read_resource("wingman://policy")
            view = json.loads(policy.contents[0].text)  # type: ignore[union-attr]
            assert world.restart.replace("web", "{name}") in view["allowlist"]
            assert view["auto_approve"] is True and view["workers_may_grant"] is True

            asked = await call(world, s, "request_approval", {
                "instruction": "restart web to pick up the new config",
                "commands": [world.restart], "wait_seconds": MAX_WAIT,
                "source": {"reference": "OPS-7", "agent": "ops-bot", "model": "m-1"}})
            assert asked["state"] == "auto_approved", asked
            assert asked["requester"] == WORKER and asked["by"] == "policy"
            assert asked["source"] == {"reference": "OPS-7", "agent": "ops-bot", "model": "m-1"}
            assert f"execute(request={asked['name']!r}" in asked["next"]

            ran = await call(world, s, "execute", {"request": asked["name"],
                                                   "command": world.restart,
                                                   "wait_seconds": MAX_WAIT})
            if ran["state"] in ("granted", "running"):
                ran = await call(world, s, "get_result", {"grant": ran["name"],
                                                          "wait_seconds": MAX_WAIT})
            assert ran["state"] == "succeeded", ran
            assert ran["exit_code"] == 0 and "restarted" in ran["output"]
            assert ran["final"] is True and "new request" in ran["next"]
            again = await call(world, s, "execute", {"request": asked["name"],
                                                     "command": world.restart})
            assert (again["state"], again["name"]) == ("succeeded", ran["name"]), \
                "execute is idempotent: the command ran once"
            listed = await call(world, s, "list_requests", {})
            mine = {r["name"]: r for r in listed["requests"]}
            assert mine[asked["name"]]["commands"][0]["state"] == "succeeded"
    anyio.run(flow)


def test_a_request_from_untrusted_input_waits_for_a_human_and_the_agent_sees_the_decision(
        world: World) -> None:
    async def flow() -> None:
        async with stdio_session(world) as s:
            asked = await call(world, s, "request_approval", {
                "instruction": "scale web to 3 as the issue asks", "commands": [world.scale(3)],
                "source": {"reference": "issue 17", "excerpt": "please scale web to 3",
                           "untrusted_input": True},
                "wait_seconds": MAX_WAIT})
            name = asked["name"]
            assert asked["state"] == "awaiting_approval", asked
            assert asked["approvals"] == {"have": 0, "need": 1, "by": []}
            assert "UntrustedInput" in asked["review"]["flags"]
            assert "cannot approve your own request" in asked["next"]
            # executing now changes nothing: no grant exists for an unapproved request
            early = await call(world, s, "execute", {"request": name,
                                                     "command": world.scale(3)})
            assert early["state"] == "awaiting_approval"
            assert get(world.cluster, "eg", world.ns, f"{name}-x") is None
            grants = json.loads(world.cluster.kubectl("get", "eg", "-n", world.ns,
                                                      "-o", "json").stdout)["items"]
            assert all(g["spec"]["approvalRef"]["name"] != name for g in grants)

            world.decide(name, "Approve", "change window 42")
            seen = await call(world, s, "get_request", {"name": name,
                                                        "wait_seconds": MAX_WAIT})
            assert (seen["state"], seen["by"]) == ("approved", APPROVER), seen
            ran = await call(world, s, "execute", {"request": name, "command": world.scale(3),
                                                   "wait_seconds": MAX_WAIT})
            if ran["state"] != "succeeded":
                ran = await call(world, s, "get_result", {"grant": ran["name"],
                                                          "wait_seconds": MAX_WAIT})
            assert ran["state"] == "succeeded" and "scaled" in ran["output"], ran
    anyio.run(flow)


def test_rejected_and_revoked_requests_say_why_and_by_whom(world: World) -> None:
    async def flow() -> None:
        async with stdio_session(world) as s:
            risky = await call(world, s, "request_approval", {
                "instruction": "scale web to zero", "commands": [world.scale(0)],
                "wait_seconds": MAX_WAIT})
            assert risky["state"] == "awaiting_approval"
            world.decide(risky["name"], "Reject", "not during the freeze")
            rejected = await call(world, s, "get_request", {"name": risky["name"],
                                                            "wait_seconds": MAX_WAIT})
            assert (rejected["state"], rejected["by"], rejected["message"]) == (
                "rejected", APPROVER, "not during the freeze")
            assert rejected["final"] and "unchanged" in rejected["next"]

            auto = await call(world, s, "request_approval", {
                "instruction": "restart web once more", "commands": [world.restart],
                "wait_seconds": MAX_WAIT})
            assert auto["state"] == "auto_approved"
            world.decide(auto["name"], "Reject", "wrong cluster", who=SECOND_APPROVER)
            revoked = await call(world, s, "get_request", {"name": auto["name"],
                                                           "wait_seconds": MAX_WAIT})
            deadline = time.monotonic() + 30
            while revoked["state"] == "auto_approved" and time.monotonic() < deadline:
                revoked = await call(world, s, "get_request", {"name": auto["name"]})
                await anyio.sleep(0.5)
            assert (revoked["state"], revoked["by"], revoked["message"]) == (
                "revoked", SECOND_APPROVER, "wrong cluster"), revoked
            refused = await call(world, s, "execute", {"request": auto["name"],
                                                       "command": world.restart})
            assert refused["state"] == "revoked", "nothing runs under a revoked approval"
    anyio.run(flow)


def test_waits_are_bounded_and_bad_input_is_an_answer(world: World) -> None:
    async def flow() -> None:
        async with stdio_session(world) as s:
            pending = await call(world, s, "request_approval", {
                "instruction": "scale web to zero again", "commands": [world.scale(0)],
                "wait_seconds": MAX_WAIT})
            assert pending["state"] == "awaiting_approval"
            start = time.monotonic()
            waited = await call(world, s, "get_request", {"name": pending["name"],
                                                          "wait_seconds": 2})
            took = time.monotonic() - start
            assert waited["state"] == "awaiting_approval" and 2 <= took < 8, took
            assert waited["waited_seconds"] >= 2
            quick = await call(world, s, "get_request", {"name": pending["name"]})
            assert "waited_seconds" not in quick, "non-blocking by default"

            missing = await call(world, s, "get_request", {"name": "no-such-request"})
            assert missing["state"] == "not_found"
            wrong = await call(world, s, "execute", {"request": pending["name"],
                                                     "command": "kubectl delete ns apps"})
            assert wrong["state"] == "invalid" and "not one of the commands" in wrong["message"]
            outside = await call(world, s, "request_approval", {
                "instruction": "x", "commands": ["kubectl get pods"], "environment": "prd"})
            assert outside["state"] == "invalid" and "prd" in outside["message"]
    anyio.run(flow)


@pytest.fixture(scope="module")
def http_server(world: World) -> Iterator[tuple[str, str]]:
    """``wingman mcp --transport http`` as a sidecar: in-cluster credentials, bearer token.
    Port 0: the server binds a free port itself and names it in its "serving" line; none is
    picked here and handed over, which another process could take in between."""
    token = uuid.uuid4().hex
    token_file = world.work / "mcp-token"
    token_file.write_text(token)
    log = (world.work / "mcp-http.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wingman.cli", "mcp", "--transport", "http", "--port", "0",
         "--max-wait-seconds", "3", "--auth-token-file", str(token_file)],
        env=world.pod_env, stdout=log, stderr=subprocess.STDOUT)
    log_path = world.work / "mcp-http.log"
    try:
        def named() -> bool:
            return "serving streamable HTTP on" in log_path.read_text(errors="replace") or (
                proc.poll() is not None)
        wait_for("the MCP HTTP server to name its port", named, 60)
        assert proc.poll() is None, log_path.read_text()
        url = f"http://127.0.0.1:{serving_port(log_path.read_text())}/mcp"

        def up() -> bool:
            try:
                urllib.request.urlopen(
                    urllib.request.Request(url, method="POST", data=b"{}"), timeout=2)
            except urllib.error.HTTPError:
                return True  # answering (401 without the token)
            except OSError:
                return proc.poll() is not None
            return True
        wait_for("the MCP HTTP server", up, 60)
        assert proc.poll() is None, (world.work / "mcp-http.log").read_text()
        yield url, token
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        log.close()
        # uvicorn shuts down gracefully and re-raises the signal it caught, which the server
        # absorbs: a clean exit, with the exit hooks run
        assert code == 0, (world.work / "mcp-http.log").read_text()


def test_over_http_a_sidecar_serves_the_agent_with_its_serviceaccount(
        world: World, http_server: tuple[str, str]) -> None:
    import httpx2

    url, token = http_server
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b"{}"),  # noqa: S310
                               timeout=5)
    assert denied.value.code == 401

    async def flow() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http, \
                streamable_http_client(url, http_client=http) as (read, write), \
                ClientSession(read, write) as s:
            await s.initialize()
            asked = await call(world, s, "request_approval", {
                "instruction": "restart web from the sidecar", "commands": [world.restart]})
            assert asked["state"] == "pending_review" and asked["waiting"]
            assert asked["requester"] == sa_user(world.ns, AGENT_SA)
            start = time.monotonic()
            seen = await call(world, s, "get_request", {"name": asked["name"],
                                                        "wait_seconds": 10_000})
            assert time.monotonic() - start < 3 + 8, "this server caps waits at 3 s"
            assert seen.get("waited_seconds", 0) <= 3.5
            for _ in range(20):
                if seen["state"] == "auto_approved":
                    break
                seen = await call(world, s, "get_request", {"name": asked["name"],
                                                            "wait_seconds": 3})
            assert seen["state"] == "auto_approved", seen
            ran = await call(world, s, "execute", {"request": asked["name"],
                                                   "command": world.restart})
            for _ in range(30):
                if ran["final"]:
                    break
                ran = await call(world, s, "get_result", {"grant": ran["name"],
                                                          "wait_seconds": 3})
            assert ran["state"] == "succeeded" and ran["exit_code"] == 0, ran
            listed = await call(world, s, "list_requests", {"mine": True})
            assert [r["name"] for r in listed["requests"]] == [asked["name"]]
            protocol = await s.read_resource("wingman://status-protocol")
            assert "awaiting_approval" in protocol.contents[0].text  # type: ignore[union-attr]
    anyio.run(flow)


def test_an_unattended_request_expires_and_the_agent_is_told_it_is_not_a_rejection(
        world: World) -> None:
    async def flow() -> dict[str, Any]:
        async with stdio_session(world) as s:
            deadline = time.monotonic() + 90
            while True:
                seen = await call(world, s, "get_request", {"name": world.expiring,
                                                            "wait_seconds": MAX_WAIT})
                if seen["state"] != "awaiting_approval" or time.monotonic() > deadline:
                    return seen
    seen = anyio.run(flow)
    assert seen["state"] == "expired" and seen["final"], seen
    assert "not a rejection" in seen["next"]


def test_no_answer_ever_carried_a_capability_token(world: World) -> None:
    assert world.transcript, "the flows above ran"
    assert not any("eyJ" in answer for answer in world.transcript), \
        "a JWT-shaped value reached the agent"

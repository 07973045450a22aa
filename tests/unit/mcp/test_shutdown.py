"""A tool call that waits ends its wait when it is cancelled: the client went away, or the
server stops (SIGINT, SIGTERM or SIGHUP) and exits within a second or two, idle or not, not
when the wait would have ended, and cleanly: the temporary files the kubernetes client wrote
from the kubeconfig (the client key among them) are gone. Against a local API server (HTTPS,
with a client certificate, for the processes) whose request never changes. Over HTTP, a wait
(and the client's event stream) is never taken for an idle connection and cut."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import LATEST_PROTOCOL_VERSION

import wingman
from support.localserver import QuietHandler, serving
from support.mcp_timers import wingman_argv
from support.operator import wait_for
from support.ports import serving_port
from support.processes import kill_if_running
from support.tls import serving_tls
from wingman.client import status as st
from wingman.client.api import WingmanClient
from wingman.client.connect import connect
from wingman.mcp.server import Tools

OPERATOR_SRC = Path(wingman.__file__).resolve().parents[1]
NS = "wm"
WAIT = 30  # what the calls ask for; none of them may last that long


class FakeApi:
    """Answers the two reads a request's status needs: the request (awaiting a decision,
    forever) and its grants (none); and who the caller is (its requester). ``fake_api``
    serves it."""

    def __init__(self) -> None:
        self.reads = 0
        self.url = ""
        self.pems: list[bytes] = []  # what the kubeconfig carries inline: CA, cert, key
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # SelfSubjectReview: the MCP server asks who it is
                self.send_json(201, {"kind": "SelfSubjectReview", "status": {
                    "userInfo": {"username": "agent"}}})

            def do_GET(self) -> None:
                base = f"/apis/wingman.dev/v1alpha1/namespaces/{NS}/"
                if self.path.startswith(base + "approvalrequests/"):
                    outer.reads += 1
                    body: dict[str, Any] = {
                        "apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
                        "metadata": {"name": "r1", "namespace": NS, "uid": "u1",
                                     "creationTimestamp": "2030-01-01T00:00:00Z"},
                        "spec": {"requester": "agent", "environment": "test",
                                 "instruction": "x", "commands": ["kubectl get pods"]},
                        "status": {"phase": "AwaitingDecision",
                                   "expirationTime": "2099-01-01T00:00:00Z"}}
                    status = 200
                elif self.path.split("?")[0] == base + "executiongrants":
                    body, status = {"kind": "ExecutionGrantList", "items": []}, 200
                else:
                    body, status = {"kind": "Status", "code": 404, "reason": "NotFound"}, 404
                self.send_json(status, body)

        self.handler = Handler

    def kubeconfig(self, tmp: Path) -> Path:
        path = tmp / "kubeconfig"
        cluster: dict[str, Any] = {"server": self.url}
        user: dict[str, Any] = {"token": "agent-token"}
        if self.pems:
            ca, cert, key = (base64.b64encode(p).decode() for p in self.pems)
            cluster["certificate-authority-data"] = ca
            user = {"client-certificate-data": cert, "client-key-data": key}
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u",
                                                   "namespace": NS}}]}))
        return path

    def written(self, tmpdir: Path) -> list[str]:
        """The files in ``tmpdir`` holding what the kubeconfig carries inline (the kubernetes
        client writes them there for the TLS library, and deletes them at exit)."""
        return sorted(p.name for p in tmpdir.iterdir()
                      if p.is_file() and p.read_bytes() in self.pems)


@contextmanager
def fake_api(tls: Path | None = None) -> Iterator[FakeApi]:
    """A ``FakeApi`` served until the block ends; with ``tls`` (a directory for its files):
    over HTTPS, and the kubeconfig authenticates with a client certificate, inline
    (``*-data``)."""
    api = FakeApi()
    if tls is None:
        with serving(api.handler) as url:
            api.url = url
            yield api
        return
    with serving_tls(api.handler, tls) as (url, ca):
        api.url = url
        api.pems = [ca.cert_pem, *ca.issue("agent")]
        yield api


def test_a_cancelled_wait_stops_polling_at_once(tmp_path: Path) -> None:
    with fake_api() as api:
        client = WingmanClient(connect(kubeconfig=str(api.kubeconfig(tmp_path))),
                               poll_seconds=0.2)
        tools = Tools(client, max_wait=WAIT)

        async def main() -> None:
            with anyio.move_on_after(0.6):  # the client gives up
                await tools.get_request("r1", wait_seconds=WAIT)
        anyio.run(main)
        time.sleep(0.5)
        reads = api.reads
        time.sleep(1.0)
        assert reads >= 2 and api.reads == reads  # nobody polls any more
        # an uncancelled wait still waits and answers the state, with the time it waited
        start = time.monotonic()
        answer = anyio.run(tools.get_request, "r1", 0.5)
        assert answer["waiting"] and answer["state"] in {s.value for s in st.WAITING}
        assert answer["waited_seconds"] >= 0.5 and time.monotonic() - start < 3
        client.close()


def _env(tmp: Path) -> dict[str, str]:
    """The process's environment; its temporary files go to ``tmp/tmp``, and nowhere else."""
    (tmp / "tmp").mkdir(exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp),
            "TMPDIR": str(tmp / "tmp"),
            "PYTHONPATH": str(OPERATOR_SRC)}  # the code under test, not an installed copy


def _exits_promptly(proc: subprocess.Popen[bytes], sig: int, log: Path) -> None:
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {WAIT} s after the signal:\n"
                             f"{log.read_text()[-2000:]}") from None
    took = time.monotonic() - start
    # a second or two on a quiet machine; the bound is what tells an ended wait from one that
    # ran its course (WAIT), with room for a loaded machine (3.1 s seen at a load of ~10)
    assert took < WAIT / 3, f"exited {took:.1f} s after the signal:\n{log.read_text()[-2000:]}"
    # a clean exit, not the signal's default action
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{log.read_text()[-2000:]}"


SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


@pytest.mark.parametrize("waiting", [False, True], ids=["idle", "during-a-wait"])
@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_a_signal_stops_the_stdio_server_cleanly(tmp_path: Path, sig: signal.Signals,
                                                 waiting: bool) -> None:
    with fake_api(tls=tmp_path) as api:
        log = tmp_path / "mcp.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "wingman.cli", "mcp", "--kubeconfig",
                 str(api.kubeconfig(tmp_path)), "--max-wait-seconds", str(WAIT)],
                env=_env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=err)
        assert proc.stdin is not None and proc.stdout is not None

        def send(message: dict[str, Any]) -> None:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
            proc.stdin.flush()

        try:
            send({"id": 1, "method": "initialize", "params": {
                "protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"}}})
            assert json.loads(proc.stdout.readline())["id"] == 1, log.read_text()
            send({"method": "notifications/initialized"})
            # the client's CA, certificate and key, written for the TLS library
            assert len(api.written(tmp_path / "tmp")) == 3
            if waiting:
                send({"id": 2, "method": "tools/call", "params": {
                    "name": "get_request", "arguments": {"name": "r1", "wait_seconds": WAIT}}})
                wait_for("the call to wait", lambda: api.reads >= 2, timeout=30)
            # stdin stays open: the client did not go away
            _exits_promptly(proc, sig, log)
            assert api.written(tmp_path / "tmp") == []  # the client key is not left behind
        finally:
            kill_if_running(proc)


@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_a_signal_stops_the_http_server_cleanly_during_a_wait(tmp_path: Path,
                                                             sig: signal.Signals) -> None:
    import httpx2

    with fake_api(tls=tmp_path) as api:
        token = uuid.uuid4().hex
        (tmp_path / "token").write_text(token)
        log = tmp_path / "mcp.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "wingman.cli", "mcp", "--transport", "http", "--port",
                 "0", "--kubeconfig", str(api.kubeconfig(tmp_path)),
                 "--max-wait-seconds", str(WAIT), "--auth-token-file",
                 str(tmp_path / "token")],
                env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT)

        async def call() -> None:
            headers = {"Authorization": f"Bearer {token}"}
            port = serving_port(log.read_text())
            async with httpx2.AsyncClient(headers=headers, timeout=60) as http, \
                    streamable_http_client(f"http://127.0.0.1:{port}/mcp",
                                           http_client=http) as (read, write), \
                    ClientSession(read, write) as s:
                await s.initialize()
                await s.call_tool("get_request", {"name": "r1", "wait_seconds": WAIT})

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                async def client() -> None:
                    try:
                        await call()
                    except Exception:  # noqa: BLE001, S110 - the server goes away mid-call
                        pass
                start = time.monotonic()
                while "serving" not in log.read_text():  # it names its port once it listens
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() - start < 30, log.read_text()
                    await anyio.sleep(0.2)
                tg.start_soon(client)
                while api.reads < 2:
                    assert time.monotonic() - start < 60, log.read_text()
                    await anyio.sleep(0.1)
                await anyio.to_thread.run_sync(_exits_promptly, proc, sig, log)
                tg.cancel_scope.cancel()
        try:
            anyio.run(main)
            assert api.written(tmp_path / "tmp") == []
        finally:
            kill_if_running(proc)


def test_over_http_a_wait_and_the_event_stream_outlast_the_idle_timeout(
        tmp_path: Path) -> None:
    # a connection is idle only while it has no request being answered: a tool call that
    # waits, and the event stream (GET) an MCP client holds open, are not cut however long
    # they last beyond --idle-timeout-seconds
    import httpx2

    head = 3.0  # the headers' deadline (HEAD_SECONDS) this server runs with
    gets: list[str] = []

    async def count(request: httpx2.Request) -> None:
        if request.method == "GET":
            gets.append(str(request.url))

    with fake_api() as api:
        proc = subprocess.Popen(
            [*wingman_argv({"HEAD_SECONDS": head}), "mcp", "--transport", "http", "--port",
             "0", "--kubeconfig", str(api.kubeconfig(tmp_path)),
             "--idle-timeout-seconds", "1"],
            env=_env(tmp_path), stderr=subprocess.PIPE, text=True)

        async def main() -> None:
            async with httpx2.AsyncClient(timeout=60, event_hooks={"request": [count]}) as http, \
                    streamable_http_client(f"http://127.0.0.1:{port}/mcp",
                                           http_client=http) as (read, write), \
                    ClientSession(read, write) as s:
                await s.initialize()
                wait = head + 2  # past the idle timeout and the headers' deadline
                answer = await s.call_tool("get_request", {"name": "r1", "wait_seconds": wait})
                assert not answer.is_error and answer.structured_content is not None, answer
                assert answer.structured_content["waited_seconds"] >= wait, answer
                await anyio.sleep(3)  # the event stream stays open, nothing on it
                assert {t.name for t in (await s.list_tools()).tools} >= {"get_request"}
        try:
            assert proc.stderr is not None
            port = serving_port(proc.stderr.readline())
            anyio.run(main)
        finally:
            proc.terminate()
            proc.wait(30)
            assert proc.stderr is not None
            proc.stderr.close()
    assert len(gets) == 1, f"the event stream was cut and opened again: {gets}"

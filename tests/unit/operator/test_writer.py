"""The writer process (``wingman.operator.writer``): calls and their answers, errors as their
own types, the API calls observed, its loss, its stop, and its end with the operator.

Each scenario runs in a fresh Python process that plays the operator (its ``Kube`` from a
kubeconfig, a real audit file) beside a local HTTP server speaking the API server's protocol,
which records the Authorization header of every call it answers."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.processes import running
from wingman.audit import verify

OPERATOR = str(Path(__file__).resolve().parents[3] / "operator")

#: Serves one API server answer per method (a 409 Status to GET, the object to PATCH), writes a
#: kubeconfig for it, starts the writer, runs SCENARIO and prints its result as JSON.
PRELUDE = r'''
import asyncio, json, os, signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

work = Path(sys.argv[1])

authorizations = []

class Api(BaseHTTPRequestHandler):
    def _answer(self, code, body):
        authorizations.append(self.headers.get("Authorization"))
        data = json.dumps(body).encode()
        self.send_response(code)
        for header in (("Content-Type", "application/json"), ("Content-Length", len(data))):
            self.send_header(*map(str, header))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path.endswith("/slow"):
            time.sleep(30)
        self._answer(409, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "Conflict", "message": "the object changed", "code": 409})
    def do_PATCH(self):
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        self._answer(200, {"metadata": {"name": self.path.rsplit("/", 2)[-2]}, **body})
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]
(work / "kubeconfig").write_text(json.dumps({
    "apiVersion": "v1", "kind": "Config", "current-context": "c",
    "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
os.environ["KUBECONFIG"] = str(work / "kubeconfig")

from wingman.audit import NewRecord
from wingman.kube import APPROVALS, Kube
from wingman.operator.writer import APPEND, Writer

lost, seen = [], []
kube = Kube.from_environment(retries=False)
def observe(calls, waited):
    seen.extend(calls)
    if os.environ.get("OBSERVER_FAILS"):
        raise RuntimeError("the metrics are broken")

import wingman.operator.writer as writer_module
if os.environ.get("AUTH_REFRESH"):  # the credential read again that often
    writer_module.AUTH_REFRESH_SECONDS = float(os.environ["AUTH_REFRESH"])
if os.environ.get("HEARTBEAT"):  # "every,stuck" seconds
    every, stuck = map(float, os.environ["HEARTBEAT"].split(","))
    writer_module.HEARTBEAT_SECONDS, writer_module.STUCK_SECONDS = every, stuck
    writer_module.KILL_HOLD_SECONDS = 1.0
audit_target = os.environ.get("AUDIT_TARGET", str(work / "audit.jsonl"))
writer = Writer.start(kube, pool=4, audit_target=audit_target, on_lost=lost.append,
                      on_answer=observe)
out = {"writer": writer.pid}

def named(exc):
    return {"type": type(exc).__name__, "text": str(exc),
            "status": getattr(exc, "status", None), "reason": getattr(exc, "reason", None)}
'''


#: One status write, answered with the patch
ONE_PATCH = r'''
async def main():
    out["patched"] = await writer.call("patch", APPROVALS, "ns", "r1", {"status": {}},
                                       subresource="status")
asyncio.run(main())
writer.close()
'''


def _spawn(tmp_path: Path, scenario: str, cwd: Path | None = None,
           **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "scenario.py"
    script.write_text(PRELUDE + scenario)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
        timeout=60, env={**os.environ, "PYTHONPATH": OPERATOR, **env}, check=False, cwd=cwd)


def _run(tmp_path: Path, scenario: str, cwd: Path | None = None,
         **env: str) -> dict[str, Any]:
    done = _spawn(tmp_path, scenario + "\nprint(json.dumps(out), flush=True)\n", cwd, **env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_appends_are_written_by_the_writer_and_answered_with_their_records(
        tmp_path: Path) -> None:
    out = _run(tmp_path, r'''
async def main():
    first = await writer.call(APPEND, [NewRecord("A", "operator", {"kind": "X"}, {"n": 1}),
                                       NewRecord("B", "operator", {"kind": "X"}, {"n": 2})])
    second = await writer.call(APPEND, [NewRecord("C", "operator", {"kind": "X"}, {"n": 3})])
    out["records"] = [[r.seq, r.event, r.hash] for r in first + second]
asyncio.run(main())
writer.close()
''')
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [[r["seq"], r["event"], r["hash"]] for r in lines] == out["records"]
    assert [r[1] for r in out["records"]] == ["A", "B", "C"]
    assert verify(str(tmp_path / "audit.jsonl")).ok


def test_an_api_servers_refusal_arrives_as_its_own_error_and_every_call_is_observed(
        tmp_path: Path) -> None:
    out = _run(tmp_path, r'''
async def main():
    try:
        await writer.call("get", APPROVALS, "ns", "r1")
    except Exception as exc:
        out["error"] = named(exc)
        out["conflict"] = exc.conflict
    out["patched"] = await writer.call("patch", APPROVALS, "ns", "r1",
                                       {"status": {"phase": "Reviewing"}}, subresource="status")
    try:
        await writer.call("exec", "rm -rf /")
    except Exception as exc:
        out["unknown"] = named(exc)
    try:
        await writer.call("get", APPROVALS, "ns", "r1", keep=lambda obj: True)
    except Exception as exc:
        out["unsendable"] = named(exc)
    try:  # a list's answer is never unpickled on the operator's loop: it runs there
        await writer.call("list", APPROVALS, "ns")
    except Exception as exc:
        out["list"] = named(exc)
asyncio.run(main())
writer.close()
out["seen"] = [[verb, resource, code] for verb, resource, code, _ in seen]
''')
    assert out["error"]["type"] == "ApiError"
    assert out["error"]["status"] == 409 and out["conflict"] is True
    assert "the object changed" in out["error"]["text"]
    assert out["patched"]["status"] == {"phase": "Reviewing"}
    assert out["unknown"] == {"type": "ValueError", "status": None, "reason": None,
                              "text": "the writer runs no call named 'exec'"}
    assert out["unsendable"]["type"] == "Unsendable"  # the operator runs that one itself
    assert out["list"]["text"] == "the writer runs no call named 'list'"
    assert out["seen"] == [["get", "approvalrequests", "409"],
                           ["patch", "approvalrequests/status", "200"]]


def test_a_writer_that_dies_fails_its_waiting_calls_and_says_so_once(tmp_path: Path) -> None:
    out = _run(tmp_path, r'''
async def main():
    slow = asyncio.ensure_future(writer.call("get", APPROVALS, "ns", "slow"))
    await asyncio.sleep(1)
    os.kill(writer.pid, signal.SIGKILL)
    try:
        await slow
    except Exception as exc:
        out["waiting"] = named(exc)
    for op, args in (("get", (APPROVALS, "ns", "r1")), (APPEND, ([],))):
        try:
            await writer.call(op, *args)
        except Exception as exc:
            out.setdefault("after", []).append(named(exc))
asyncio.run(main())
out["lost"] = lost
writer.close()
''')
    assert out["waiting"]["type"] == "ClusterError"
    assert out["waiting"]["text"].startswith(
        "the operator's writer process is gone (it ended (signal 9)): whether the call")
    assert [e["type"] for e in out["after"]] == ["ClusterError", "AuditUnavailable"]
    assert "whether the records were written is unknown" in out["after"][1]["text"]
    assert out["lost"] == ["it ended (signal 9)"]
    assert not running(out["writer"])


def test_close_ends_the_writer_and_leaves_no_process(tmp_path: Path) -> None:
    out = _run(tmp_path, r'''
asyncio.run(writer.call(APPEND, [NewRecord("A", "operator", {"kind": "X"}, {})]))
writer.close()
try:
    os.waitpid(writer.pid, os.WNOHANG)
    out["reaped"] = False
except ChildProcessError:
    out["reaped"] = True
out["lost"] = lost
''')
    assert out["reaped"] is True
    assert out["lost"] == []  # a stop is no loss
    assert not running(out["writer"])


@pytest.mark.parametrize("how", ["SIGKILL", "exit"])
def test_the_writer_dies_with_the_operator_even_in_the_middle_of_a_call(
        tmp_path: Path, how: str) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.touch()
    with audit.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the writer's append waits for this lock
        done = _spawn(tmp_path, r'''
async def main():
    asyncio.ensure_future(writer.call(APPEND, [NewRecord("A", "operator", {"kind": "X"}, {})]))
    await asyncio.sleep(1)
asyncio.run(main())
print(json.dumps(out), flush=True)
if os.environ["HOW"] == "SIGKILL":
    os.kill(os.getpid(), signal.SIGKILL)
os._exit(0)
''', HOW=how)
        assert done.returncode == (-signal.SIGKILL if how == "SIGKILL" else 0), done.stderr
        pid = json.loads(done.stdout.strip().splitlines()[-1])["writer"]
        deadline = time.monotonic() + 10
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(pid)  # not left waiting for the lock, to write for a dead operator
    assert audit.read_text() == ""


def test_the_writer_calls_with_the_operators_credential_as_it_is_refreshed(
        tmp_path: Path) -> None:
    out = _run(tmp_path, r'''
async def main():
    await writer.call("patch", APPROVALS, "ns", "r1", {"status": {}}, subresource="status")
    kube.api.configuration.refresh_api_key_hook = (  # a token refreshed, as an exec plugin's
        lambda configuration: configuration.api_key.update(BearerToken="Bearer t2"))
    await asyncio.sleep(1)  # read again on its thread
    await writer.call("patch", APPROVALS, "ns", "r1", {"status": {}}, subresource="status")
    try:
        await writer.call("get", APPROVALS, "ns", "r1")  # answered 409
    except Exception:
        pass
asyncio.run(main())
writer.close()
out["authorizations"] = authorizations
''', AUTH_REFRESH="0.1")
    assert out["authorizations"] == ["Bearer t", "Bearer t2", "Bearer t2"]


def test_what_the_writer_has_not_imported_is_sent_as_plain_data_or_not_at_all(
        tmp_path: Path) -> None:
    """The framework hands the operator views of an object's body (mappings of its own
    classes): the writer gets them as dicts and lists, without importing what defines them
    (the framework, and the memory it costs); a function it has not imported is not sent:
    the operator runs that call itself."""
    out = _run(tmp_path, r'''
from collections.abc import Mapping

class View(Mapping):  # as the framework's body views: defined where the writer cannot look
    def __init__(self, data):
        self._data = data
    def __getitem__(self, key):
        value = self._data[key]
        return View(value) if isinstance(value, dict) else value
    def __iter__(self):
        return iter(self._data)
    def __len__(self):
        return len(self._data)

def unowned(obj):
    return obj

async def main():
    body = View({"status": {"phase": "Reviewing", "votes": ("a", "b")}})
    out["patched"] = await writer.call("patch", APPROVALS, "ns", "r1", body,
                                       subresource="status")
    try:
        await writer.call("get", APPROVALS, "ns", "r1", keep=unowned)
    except Exception as exc:
        out["unsendable"] = named(exc)
asyncio.run(main())
with open(f"/proc/{writer.pid}/maps") as maps:
    out["loaded"] = sorted({line.split("/")[-1].split(".")[0] for line in maps
                            if "pydantic" in line or "aiohttp" in line})
writer.close()
''')
    assert out["patched"]["status"] == {"phase": "Reviewing", "votes": ["a", "b"]}
    assert out["unsendable"]["type"] == "Unsendable"
    assert "__main__.unowned is not something the writer process has" in \
        out["unsendable"]["text"]
    assert out["loaded"] == []


def test_a_call_the_writer_cannot_read_is_answered_and_the_writer_goes_on(
        tmp_path: Path) -> None:
    """An argument the writer cannot rebuild (here a key that arrives as a list) fails that
    call alone, as one the operator then runs itself; the writer serves the next call."""
    out = _run(tmp_path, r'''
from typing import NamedTuple

class Key(NamedTuple):  # a hashable sequence of the operator's: sent as a list
    a: str

async def main():
    try:
        await writer.call("patch", APPROVALS, "ns", "r1", {"status": {Key("x"): 1}})
    except Exception as exc:
        out["unreadable"] = named(exc)
    out["next"] = await writer.call("patch", APPROVALS, "ns", "r1", {"status": {"ok": 1}},
                                    subresource="status")
asyncio.run(main())
out["lost"] = lost
writer.close()
''')
    assert out["unreadable"]["type"] == "Unsendable"
    assert "the writer process cannot read its arguments" in out["unreadable"]["text"]
    assert out["next"]["status"] == {"ok": 1}
    assert out["lost"] == []


def test_a_call_sent_to_a_writer_that_just_died_fails_at_once(tmp_path: Path) -> None:
    """Even when the credential changed meanwhile (its frame goes first): the call is failed
    with the writer's loss, never left waiting."""
    out = _run(tmp_path, r'''
async def main():
    os.kill(writer.pid, signal.SIGKILL)
    time.sleep(0.5)  # dead, and nothing read yet on the event loop
    writer._auth_now = "Bearer changed"
    try:
        await asyncio.wait_for(writer.call("get", APPROVALS, "ns", "r1"), 5)
    except Exception as exc:
        out["error"] = named(exc)
asyncio.run(main())
writer.close()
''')
    assert out["error"]["type"] == "ClusterError"
    assert "the operator's writer process is gone" in out["error"]["text"]


def test_the_writer_never_imports_from_the_operators_working_directory(
        tmp_path: Path) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "json.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('ran').write_text('')\n"
        "from _json import *\n")
    out = _run(tmp_path, ONE_PATCH, cwd=elsewhere)
    assert out["patched"]["status"] == {}
    assert not (elsewhere / "ran").exists()


def test_a_writer_that_cannot_open_the_audit_trail_is_refused_at_start(
        tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    done = _spawn(tmp_path, "", AUDIT_TARGET=str(tmp_path / "file" / "audit.jsonl"))
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("wingman.errors.AuditUnavailable: "), done.stderr
    assert str(tmp_path / "file" / "audit.jsonl") in last
    assert "Traceback" in done.stderr and "writer process failed" not in done.stderr


def test_the_writer_process_imports_neither_the_kubernetes_client_nor_the_framework() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, wingman.operator.writer; "
         "print(sorted({m.split('.')[0] for m in sys.modules} & {'kubernetes', 'kopf', "
         "'pydantic', 'aiohttp', 'asyncio'}))"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": OPERATOR},
        check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


WITHDRAWN = r'''
async def main():
    first = asyncio.ensure_future(
        writer.call(APPEND, [NewRecord("A", "operator", {"kind": "X"}, {})]))
    second = asyncio.ensure_future(
        writer.call(APPEND, [NewRecord("B", "operator", {"kind": "X"}, {})]))
    await asyncio.sleep(1)  # both sent: the first waits for the lock, the second for its turn
    second.cancel()
    await asyncio.sleep(0.5)  # the withdrawal sent
    print("withdrawn", flush=True)
    sys.stdin.readline()  # until the lock is let go
    out["first"] = (await first)[0].event
asyncio.run(main())
writer.close()
print(json.dumps(out), flush=True)
'''


def _run_holding(tmp_path: Path, scenario: str, said_first: str,
                 **env: str) -> dict[str, Any]:
    """Run ``scenario`` while the audit file's lock is held here; once it prints
    ``said_first``, let the lock go and send it a line, then read its result as ``_run``."""
    audit = tmp_path / "audit.jsonl"
    audit.touch()
    script = tmp_path / "scenario.py"
    script.write_text(PRELUDE + scenario)
    with audit.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": OPERATOR, **env})
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == said_first
            fcntl.flock(held, fcntl.LOCK_UN)
            proc.stdin.write("\n")
            proc.stdin.flush()
            said, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    result: dict[str, Any] = json.loads(said.strip().splitlines()[-1])
    return result


def test_a_call_withdrawn_before_it_started_is_never_made(tmp_path: Path) -> None:
    # the first append waits for the lock held, the second is withdrawn meanwhile
    assert _run_holding(tmp_path, WITHDRAWN, "withdrawn")["first"] == "A"
    assert [json.loads(line)["event"] for line in
            (tmp_path / "audit.jsonl").read_text().splitlines()] == ["A"]


def test_an_observer_that_fails_fails_no_call(tmp_path: Path) -> None:
    out = _run(tmp_path, ONE_PATCH, OBSERVER_FAILS="1")
    assert out["patched"]["status"] == {}


def test_a_writer_that_stops_answering_is_lost_and_its_waiting_calls_fail(
        tmp_path: Path) -> None:
    """A writer that is alive but reads nothing (here stopped with SIGSTOP) answers no
    heartbeat: it is killed, every call waiting for it fails, and ``on_lost`` says it was
    stuck, instead of the operator waiting on it for ever."""
    out = _run(tmp_path, r'''
async def main():
    writer.watch()
    os.kill(writer.pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        await asyncio.wait_for(writer.call("patch", APPROVALS, "ns", "r1", {"status": {}},
                                           subresource="status"), 20)
    except Exception as exc:
        out["waiting"] = named(exc)
    out["after"] = round(time.monotonic() - started, 1)
asyncio.run(main())
out["lost"] = lost
writer.close()
''', HEARTBEAT="0.2,1.5")
    assert out["waiting"]["type"] == "ClusterError", out
    assert "the operator's writer process is gone (it answered no heartbeat for " in \
        out["waiting"]["text"] and " s: stuck)" in out["waiting"]["text"], out
    assert 1.4 <= out["after"] < 10, out
    assert len(out["lost"]) == 1 and out["lost"][0].endswith(" s: stuck"), out
    assert not running(out["writer"])


def test_a_writer_busy_with_a_long_call_is_not_taken_for_stuck(tmp_path: Path) -> None:
    """A call that waits (here an append held behind the audit file's lock for longer than
    the heartbeat allows) keeps the writer: its calls run on threads of their own and the
    heartbeat is answered meanwhile."""
    out = _run_holding(tmp_path, r'''
async def main():
    writer.watch()
    append = asyncio.ensure_future(
        writer.call(APPEND, [NewRecord("A", "operator", {"kind": "X"}, {})]))
    await asyncio.sleep(3)  # the lock is held all along: two heartbeats' windows
    print("waited", flush=True)
    sys.stdin.readline()
    out["appended"] = [r.event for r in await append]
asyncio.run(main())
out["lost"] = lost
writer.close()
print(json.dumps(out), flush=True)
''', "waited", HEARTBEAT="0.2,1.5")
    assert out["appended"] == ["A"] and out["lost"] == []


#: The writer answers, but the operator's loop is held: once for longer than the heartbeat
#: allows (LAG "hold"), or at every turn (LAG "every"), with the writer stopped (STOP)
LAGGING = r'''
async def main():
    writer.watch()
    if os.environ.get("STOP"):
        os.kill(writer.pid, signal.SIGSTOP)
    started = time.monotonic()
    if os.environ["LAG"] == "hold":
        await asyncio.sleep(0.5)
        time.sleep(3)  # the loop held: no beat, no answer read
    while time.monotonic() - started < 8 and not lost:
        await asyncio.sleep(0)
        if os.environ["LAG"] == "every":
            time.sleep(0.25)  # every turn late: each beat's interval past two beats
    out["after"] = round(time.monotonic() - started, 1)
    if not lost:
        out["patched"] = await writer.call("patch", APPROVALS, "ns", "r1", {"status": {}},
                                           subresource="status")
asyncio.run(main())
out["lost"] = lost
writer.close()
'''


def test_a_held_event_loop_is_not_taken_for_a_stuck_writer(tmp_path: Path) -> None:
    out = _run(tmp_path, LAGGING, HEARTBEAT="0.2,1.5", LAG="hold")
    assert out["lost"] == [] and out["patched"]["status"] == {}


def test_a_stuck_writer_is_found_while_the_event_loop_lags_at_every_turn(
        tmp_path: Path) -> None:
    """Each beat comes later than two beats' interval: each counts two, and the window fills."""
    out = _run(tmp_path, LAGGING, HEARTBEAT="0.2,1.5", LAG="every", STOP="1")
    assert len(out["lost"]) == 1 and out["lost"][0].endswith(" s: stuck"), out
    assert out["after"] < 7, out
    assert not running(out["writer"])


def test_a_stuck_writer_is_killed_even_while_the_audit_file_is_locked(tmp_path: Path) -> None:
    """Before the kill the operator waits (at most KILL_HOLD_SECONDS) for the audit file's lock,
    so that no append of the writer's is cut short; one held elsewhere delays the kill, never
    prevents it."""
    audit = tmp_path / "audit.jsonl"
    audit.touch()
    with audit.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        out = _run(tmp_path, r'''
async def main():
    writer.watch()
    os.kill(writer.pid, signal.SIGSTOP)
    started = time.monotonic()
    while time.monotonic() - started < 10 and not lost:
        await asyncio.sleep(0.05)
    out["after"] = round(time.monotonic() - started, 1)
asyncio.run(main())
out["lost"] = lost
writer.close()
''', HEARTBEAT="0.2,1.5")
    assert len(out["lost"]) == 1 and out["lost"][0].endswith(" s: stuck"), out
    assert 2.4 <= out["after"] < 8, out  # the stuck window, then the lock's second
    assert not running(out["writer"])

"""The witness protocol: the operator's client against the reference witness server, over HTTP."""
# ruff: noqa: S310 - every URL here is the local witness's http:// URL

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from support import checkpoints as long_checkpoints
from support.localserver import serving
from support.processes import kill_if_running, stop_process
from support.redirects import redirecting
from wingman import audit
from wingman.audit import AuditAnchor, parse_checkpoints
from wingman.audit.checkpoints import MAX_CHECKPOINTS_BYTES
from wingman.audit.signing import sign_checkpoint
from wingman.audit.witness import (
    RECENT_PER_LOG,
    SIGNATURE_HEADER,
    WitnessError,
    WitnessStore,
    make_server,
    send,
    signature,
)
from wingman.capability.keys import KeySet, generate_signing_key
from wingman.errors import AuditTampered

KEY = generate_signing_key()
KEYS = KeySet.from_mapping({f"{KEY.kid}.pem": KEY.public_pem()})
HMAC = b"0123456789abcdef-shared"
T0 = dt.datetime(2026, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
OPERATOR_SRC = Path(audit.__file__).resolve().parents[2]


class Running:
    def __init__(self, store: WitnessStore) -> None:
        self.store = store
        self.server = make_server(("127.0.0.1", 0), store, HMAC)
        self.url = f"http://127.0.0.1:{self.server.server_port}/checkpoints"


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[Running]:
    running = Running(WitnessStore(tmp_path / "w.jsonl", KEYS))
    thread = threading.Thread(target=running.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.server.shutdown()
        running.server.server_close()
        thread.join(10)


def _cp(seq: int, digest: str = "ab" * 32, key: object = KEY) -> audit.Checkpoint:
    return sign_checkpoint(key, log="wingman-prd", anchor=AuditAnchor(seq, digest),  # type: ignore[arg-type]
                           now=T0)


def test_checkpoints_are_stored_and_served(witness: Running) -> None:
    for seq in (3, 9, 9):
        send(witness.url, HMAC, _cp(seq))
    with urllib.request.urlopen(witness.url, timeout=5) as resp:
        served = parse_checkpoints(resp.read(), "witness")
    assert [c.seq for c in served] == [3, 9]
    assert served == parse_checkpoints(witness.store.path.read_bytes(), "file")


def test_a_wrong_or_missing_hmac_is_refused(witness: Running) -> None:
    with pytest.raises(WitnessError, match="HTTP 401"):
        send(witness.url, b"another-key-entirely", _cp(1))
    body = _cp(1).to_line().encode()
    request = urllib.request.Request(witness.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 401
    assert not witness.store.path.exists()


def test_a_checkpoint_the_audit_key_did_not_sign_is_refused(witness: Running) -> None:
    with pytest.raises(WitnessError, match="HTTP 403"):
        send(witness.url, HMAC, _cp(1, key=generate_signing_key()))


def test_a_rewrite_and_a_rollback_are_refused(witness: Running) -> None:
    send(witness.url, HMAC, _cp(10))
    with pytest.raises(WitnessError, match=r"HTTP 409.*rewritten"):
        send(witness.url, HMAC, _cp(10, "cd" * 32))
    with pytest.raises(WitnessError, match=r"HTTP 409.*rollback"):
        send(witness.url, HMAC, _cp(4))
    send(witness.url, HMAC, _cp(11))
    assert [c.seq for c in parse_checkpoints(witness.store.path.read_bytes(), "w")] == [10, 11]


@pytest.mark.parametrize("body", [b"not json", b"[" * 3000, b"{}", b"x" * 5000])
def test_hostile_bodies_are_refused(witness: Running, body: bytes) -> None:
    request = urllib.request.Request(witness.url, data=body, method="POST", headers={
        "Content-Type": "application/json", SIGNATURE_HEADER: signature(HMAC, body)})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code in (400, 413)


def test_an_unreachable_witness_is_a_witness_error() -> None:
    with pytest.raises(WitnessError, match="cannot reach"):
        send("http://127.0.0.1:9/checkpoints", HMAC, _cp(1), timeout=2)


JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A witness that refuses with a body meant to fake log lines, recolour or reorder the
    operator's terminal, or plant a token in its logs."""

    body = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(403)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _refusal(body: bytes) -> str:
    handler = type("Handler", (_Hostile,), {"body": body})
    with serving(handler) as url:
        with pytest.raises(WitnessError) as caught:
            send(f"{url}/checkpoints", HMAC, _cp(1), timeout=5)
    return caught.value.message


@pytest.mark.parametrize("body", [
    b'denied\n{"level": "info", "message": "audit checkpoint witnessed"}\r\nok',
    b"denied \x1b[2J\x1b[32mOK\x1b[0m \x07\x00\x08",
    "denied \u202eevil\u2066 \u200b\u2028fake\u0085line".encode(),
    b"\xff\xfe denied \xc3",
])
def test_a_witness_reply_is_shown_escaped_on_one_line(body: bytes) -> None:
    message = _refusal(body)
    assert message.startswith("the audit witness refused checkpoint seq 1: HTTP 403 denied") \
        or message.startswith("the audit witness refused checkpoint seq 1: HTTP 403 \ufffd")
    assert message.isprintable(), repr(message)
    for char in "\u202e\u2066\u200b\u2028":
        assert char not in message


def test_a_witness_reply_holding_a_token_is_not_shown() -> None:
    message = _refusal(f"denied {JWT}".encode())
    assert "eyJ" not in message and "token-shaped" in message


def test_a_long_witness_reply_is_cut() -> None:
    message = _refusal(b"\x1b" * 4000)
    assert len(message) < 400 and message.endswith("\u2026")


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_taken_for_a_witnessed_checkpoint(witness: Running, code: int) -> None:
    """urllib would follow a 301, 302 or 303 to a POST with a GET, whose 200 (here the witness's
    own copy) would count as stored: the checkpoint never reached the witness, yet no delivery
    failure would be counted or alerted on."""
    # a server in front of the witness that answers a POST with a redirect (an http-to-https
    # or trailing-slash rule of a proxy, say) to where the witness serves its copy
    with serving(redirecting(witness.url, code)) as url:
        with pytest.raises(WitnessError, match=f"HTTP {code}.*redirects are not followed"):
            send(f"{url}/checkpoints", HMAC, _cp(1), timeout=5)
    assert not witness.store.path.exists()


class _Trickling(http.server.BaseHTTPRequestHandler):
    """A witness that answers a byte at a time, each within the delivery's timeout."""

    answer = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with contextlib.suppress(OSError):
            for byte in self.answer:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.3)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 201 Created\r\nX-Slow: " + b"y" * 100,
    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 200\r\n\r\n" + b"n" * 200,
], ids=["headers", "refusal"])
def test_a_witness_that_answers_a_byte_at_a_time_is_given_up_at_the_timeout(
        answer: bytes) -> None:
    """The delivery's timeout bounds the whole delivery, not each wait for a byte: a witness
    (another party) that trickles its answer would otherwise hold the operator's checkpoint
    round, and with it every later checkpoint and the operator's shutdown, for as long as it
    likes."""
    handler = type("Handler", (_Trickling,), {"answer": answer})
    with serving(handler) as url:
        started = time.monotonic()
        with pytest.raises(WitnessError, match="within 1s"):
            send(f"{url}/checkpoints", HMAC, _cp(1), timeout=1)
        assert time.monotonic() - started < 4


def test_a_witness_url_query_never_shows_in_a_delivery_error() -> None:
    # http.client quotes the URL's path and query when it refuses it
    for url in ("http://127.0.0.1:9/c?token=s3cr3t\x01", "http://127.0.0.1:9/c?token=s3cr3t"):
        with pytest.raises(WitnessError) as caught:
            send(url, HMAC, _cp(1), timeout=2)
        assert "s3cr3t" not in caught.value.message
        assert "127.0.0.1:9/c?\u2026" in caught.value.message


def _key_files(tmp_path: Path) -> tuple[Path, Path]:
    """The HMAC key file and the audit public key PEM the witness command is given."""
    key = tmp_path / "hmac"
    key.write_bytes(HMAC)
    pem = tmp_path / "audit.pem"
    pem.write_bytes(KEY.public_pem())
    return key, pem


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_the_witness_command_stops_on_signals(tmp_path: Path, sig: int) -> None:
    key, pem = _key_files(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wingman.cli", "audit", "witness", "--listen", "127.0.0.1:0",
         "--store", str(tmp_path / "w.jsonl"), "--hmac-key-file", str(key),
         "--audit-key", str(pem)],
        stderr=subprocess.PIPE, text=True, env={"PYTHONPATH": str(OPERATOR_SRC)})
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert '"listening"' in line, line
        time.sleep(0.2)
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
    finally:
        kill_if_running(proc)


def test_a_client_that_stops_sending_is_dropped(tmp_path: Path) -> None:
    """Before the HMAC is checked anyone may connect: a request whose body never comes
    holds a thread only for the read timeout."""
    import socket

    server = make_server(("127.0.0.1", 0), WitnessStore(tmp_path / "w.jsonl", KEYS), HMAC,
                         timeout_seconds=1.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for partial in (b"POST /checkpoints HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"a\"",
                        b"POST /checkpoints HTTP/1.1\r\nContent-Le"):
            with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
                sock.sendall(partial)
                started = time.monotonic()
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
                assert time.monotonic() - started < 5
                if b"\r\n\r\n{" in partial:
                    assert answer.startswith(b"HTTP/1.0 408"), answer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_client_that_sends_a_byte_at_a_time_is_dropped_at_the_timeout(tmp_path: Path) -> None:
    """The read timeout bounds the whole request, not each wait for a byte: a client that
    trickles its headers or its body in under the timeout per byte holds no thread past it."""
    import socket

    server = make_server(("127.0.0.1", 0), WitnessStore(tmp_path / "w.jsonl", KEYS), HMAC,
                         timeout_seconds=1.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for head, trickled in ((b"POST /checkpoints HTTP/1.1\r\nContent-Length: 4000\r\n\r\n",
                                b"x" * 4000),
                               (b"POST /checkpoints HTTP/1.1\r\n", b"X-Slow: " + b"y" * 4000)):
            with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
                sock.sendall(head)
                started = time.monotonic()
                sock.settimeout(0.2)
                answer = b""
                for byte in trickled:
                    if time.monotonic() - started > 8:
                        break
                    try:
                        sock.sendall(bytes([byte]))
                        chunk = sock.recv(4096)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                    answer += chunk
                    if not chunk:
                        break
                assert time.monotonic() - started < 4, "the witness kept reading a trickle"
                if head.endswith(b"\r\n\r\n"):
                    assert answer.startswith(b"HTTP/1.0 408"), answer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# --------------------------------------------------------------------------- a year-long store
# The store grows by a checkpoint a minute for good: 100k lines is ~30 MB, over what a whole
# list may be. A restart streams it and keeps only what answering needs.


def _serve(store: WitnessStore) -> tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    server = make_server(("127.0.0.1", 0), store, HMAC)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def test_a_witness_restarts_on_a_year_long_store_and_answers_as_before(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    records = long_checkpoints.write_trail(tmp_path / "audit.jsonl", 100_000)
    held = long_checkpoints.checkpoints_of(records, None)  # keys=None: no signature to check
    long_checkpoints.write_checkpoints(path, held)
    assert path.stat().st_size > MAX_CHECKPOINTS_BYTES
    store = WitnessStore(path, None)
    assert store.newest == {"wingman-prd": held[-1]}
    assert len(store.recent["wingman-prd"]) <= RECENT_PER_LOG + 1  # not every seq it ever saw
    # the operator sends its newest again when the answer was lost: still "already witnessed"
    assert store.accept(held[-1]) == (200, "already witnessed")
    assert store.accept(held[-RECENT_PER_LOG]) == (200, "already witnessed")
    rewritten = dataclasses.replace(held[-3], hash="cd" * 32)
    assert store.accept(rewritten)[0] == 409 and "rewritten" in store.accept(rewritten)[1]
    assert store.accept(held[7])[0] == 409 and "rollback" in store.accept(held[7])[1]
    server, thread = _serve(store)
    try:
        url = f"http://127.0.0.1:{server.server_port}/checkpoints"
        send(url, HMAC, _cp(100_000))
        with urllib.request.urlopen(url, timeout=30) as resp:
            served = resp.read()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert served == path.read_bytes()
    assert served.count(b"\n") == 100_001


def test_a_forged_line_deep_in_the_store_stops_the_witness_from_starting(
        tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    records = long_checkpoints.write_trail(tmp_path / "audit.jsonl", 15_000)
    held = long_checkpoints.checkpoints_of(records, KEY)
    held[14_989] = dataclasses.replace(held[14_989], hash="cd" * 32)  # line 14,990
    long_checkpoints.write_checkpoints(path, held)
    assert path.stat().st_size > MAX_CHECKPOINTS_BYTES
    with pytest.raises(AuditTampered, match=f"{path} line 14990 .*does not verify"):
        WitnessStore(path, KEYS)
    key, pem = _key_files(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "wingman.cli", "audit", "witness", "--listen", "127.0.0.1:0",
         "--store", str(path), "--hmac-key-file", str(key), "--audit-key", str(pem)],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PYTHONPATH": str(OPERATOR_SRC)})
    assert done.returncode == 2, done.stderr
    assert "cannot start" in done.stderr and "line 14990" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_store_holding_two_disagreeing_checkpoints_does_not_start(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(f"{_cp(3).to_line()}\n{_cp(4).to_line()}\n{_cp(3, 'cd' * 32).to_line()}\n")
    with pytest.raises(AuditTampered, match=f"{path} line 3 .*disagrees with an earlier line"):
        WitnessStore(path, KEYS)


@pytest.mark.parametrize(("case", "expected"), [
    ("port-too-large", "port 0 to 65535"),
    ("no-port", "port 0 to 65535"),
    ("hmac-key-fifo", "HMAC key file"),
    ("audit-key-fifo", "audit key"),
    ("store-fifo", "store"),
    ("hmac-key-device", "HMAC key file"),
])
def test_a_bad_listen_address_or_file_is_a_clear_refusal_not_a_hang(
        tmp_path: Path, case: str, expected: str) -> None:
    key, pem = _key_files(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: reading it would wait for good
    args = {"--listen": "127.0.0.1:0", "--store": str(tmp_path / "w.jsonl"),
            "--hmac-key-file": str(key), "--audit-key": str(pem)}
    args.update({"port-too-large": {"--listen": "127.0.0.1:99999"},
                 "no-port": {"--listen": "localhost"},
                 "hmac-key-fifo": {"--hmac-key-file": str(fifo)},
                 "audit-key-fifo": {"--audit-key": str(fifo)},
                 "store-fifo": {"--store": str(fifo)},
                 "hmac-key-device": {"--hmac-key-file": "/dev/zero"}}[case])
    done = subprocess.run(
        [sys.executable, "-m", "wingman.cli", "audit", "witness",
         *[item for pair in args.items() for item in pair]],
        capture_output=True, text=True, timeout=30, check=False,
        env={"PYTHONPATH": str(OPERATOR_SRC)})
    assert done.returncode == 2, done.stderr
    assert "cannot start" in done.stderr and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_listen_address_in_use_is_named_with_what_to_do(tmp_path: Path) -> None:
    # another process (another witness) listens on the port: the start names the address and
    # the option to change, not only the system's 'Address already in use'
    key, pem = _key_files(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = int(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "wingman.cli", "audit", "witness", "--listen",
             f"127.0.0.1:{held}", "--store", str(tmp_path / "w.jsonl"), "--hmac-key-file",
             str(key), "--audit-key", str(pem)],
            capture_output=True, text=True, timeout=30, check=False,
            env={"PYTHONPATH": str(OPERATOR_SRC)})
    assert done.returncode == 2, done.stderr
    assert (f"wingman audit witness: cannot start: 127.0.0.1:{held} is in use: another "
            "process listens on it") in done.stderr, done.stderr
    assert "--listen" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "w.jsonl").exists() or (tmp_path / "w.jsonl").stat().st_size == 0


def test_a_checkpoint_the_disk_cannot_hold_is_refused_and_leaves_the_store_whole(
        tmp_path: Path) -> None:
    """A full disk (here the file size limit, RLIMIT_FSIZE, which cuts a write short and then
    refuses it as ENOSPC would) while a checkpoint is appended: the witness answers that it did
    not store it, the store keeps no part of it (a torn line would stop every later start and
    every verification against the copy), and the operator's next sending stores it."""
    import resource

    key, pem = _key_files(tmp_path)
    store = tmp_path / "w.jsonl"
    store.write_text(f"{_cp(1).to_line()}\n")
    before = store.read_bytes()
    limit = len(before) + 100  # the next line (about 300 bytes) is cut a third of the way

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    proc = subprocess.Popen(
        [sys.executable, "-m", "wingman.cli", "audit", "witness", "--listen", "127.0.0.1:0",
         "--store", str(store), "--hmac-key-file", str(key), "--audit-key", str(pem)],
        stderr=subprocess.PIPE, text=True, preexec_fn=limited,
        env={"PYTHONPATH": str(OPERATOR_SRC), "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert '"listening"' in line, line
        address = json.loads(line)["address"]
        url = f"http://{address}/checkpoints"
        with pytest.raises(WitnessError, match=r"HTTP 503 .*cannot store"):
            send(url, HMAC, _cp(2), timeout=10)
        assert store.read_bytes() == before
        assert [c.seq for c in parse_checkpoints(store.read_bytes(), "w")] == [1]
        # space again: the operator sends its newest checkpoint again next round
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        send(url, HMAC, _cp(2), timeout=10)
        assert [c.seq for c in parse_checkpoints(store.read_bytes(), "w")] == [1, 2]
    finally:
        stop_process(proc, timeout=15)


def test_slow_readers_are_bounded_and_cut_and_the_operator_still_posts(tmp_path: Path) -> None:
    """GET is unauthenticated: clients that ask for the store and then read it at a trickle
    (fast enough that no single write waits past the read timeout) must neither pile up (each
    would hold a thread and a handle of the store until file handles ran out and the operator's
    POSTs failed) nor be served for as long as they like."""
    import socket

    path = tmp_path / "w.jsonl"
    records = long_checkpoints.write_trail(tmp_path / "audit.jsonl", 80_000)
    long_checkpoints.write_checkpoints(path, long_checkpoints.checkpoints_of(records, None))
    size = path.stat().st_size
    # the whole answer is due within 1 s (the read timeout) + 3 s (its size at the rate)
    server = make_server(("127.0.0.1", 0), WitnessStore(path, None), HMAC,
                         timeout_seconds=1.0, max_readers=2, min_send_rate=size // 3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/checkpoints"
    slow: list[socket.socket] = []
    try:
        for _ in range(6):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", server.server_port))
            sock.sendall(b"GET /checkpoints HTTP/1.1\r\nHost: witness\r\n\r\n")
            slow.append(sock)
        statuses = [sock.recv(12) for sock in slow]
        assert sorted(statuses) == [b"HTTP/1.0 200"] * 2 + [b"HTTP/1.0 503"] * 4, statuses
        handles = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                    handles.append(fd)
        assert len(handles) <= 2, handles
        # the operator's POST is stored while the readers hold on
        send(url, HMAC, _cp(80_000), timeout=5)
        # the two served read up to 640 KB/s, enough for each write to be taken within the
        # read timeout: they would be served for some 30 s, and hold on as long again if they
        # read half as fast
        readers = {sock: 0 for sock, status in zip(slow, statuses, strict=True)
                   if status == b"HTTP/1.0 200"}
        ended: dict[socket.socket, float] = {}
        started = time.monotonic()
        while len(ended) < len(readers) and time.monotonic() - started < 10:
            for sock in readers:
                if sock in ended:
                    continue
                sock.settimeout(0.05)
                try:
                    chunk = sock.recv(1 << 16)
                except TimeoutError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    ended[sock] = time.monotonic() - started
                readers[sock] += len(chunk)
            time.sleep(0.1)
        assert len(ended) == 2, f"readers still served after 10 s: {readers}"
        assert all(got < size for got in readers.values()), readers
        assert max(ended.values()) < 8, ended
        with urllib.request.urlopen(url, timeout=10) as resp:  # the slots are free again
            assert resp.read() == path.read_bytes()
    finally:
        for sock in slow:
            sock.close()
        server.shutdown()
        server.server_close()
        thread.join(10)


# --------------------------------------------------------------------------- busy witnesses


class _Busy(http.server.BaseHTTPRequestHandler):
    """A witness in front of which a proxy answers 503 with a Retry-After the first times."""

    retry_after = "1"
    busy = 1
    answered: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status = 503 if len(self.answered) < self.busy else 201
        self.answered.append(status)
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", self.retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _busy(retry_after: str, busy: int = 1) -> Iterator[tuple[str, list[int]]]:
    answered: list[int] = []
    handler = type("Handler", (_Busy,), {"retry_after": retry_after, "busy": busy,
                                         "answered": answered})
    with serving(handler) as url:
        yield f"{url}/checkpoints", answered


@pytest.mark.parametrize("retry_after", ["1", "0"])
def test_a_busy_witness_is_sent_the_checkpoint_again_after_its_retry_after(
        retry_after: str) -> None:
    """A 503 with a Retry-After says the witness will take it soon: the checkpoint is sent
    again within the delivery, not a failure counted and alerted on until the next round."""
    with _busy(retry_after, busy=2) as (url, answered):
        started = time.monotonic()
        send(url, HMAC, _cp(1), timeout=8)
        elapsed = time.monotonic() - started
    assert answered == [503, 503, 201]
    assert elapsed >= 2 * max(float(retry_after), 0.5) - 0.1, elapsed


def test_a_retry_after_past_the_timeout_fails_at_once() -> None:
    """The wait is bounded by the delivery's timeout: a witness asking for more (or a date in
    an hour) is not waited for, and the operator's round goes on."""
    for retry_after in ("30", "Wed, 21 Oct 2065 07:28:00 GMT"):
        with _busy(retry_after) as (url, answered):
            started = time.monotonic()
            with pytest.raises(WitnessError, match=r"HTTP 503.*sent again in .*past the "
                                                   r"delivery's 20s timeout"):
                send(url, HMAC, _cp(1), timeout=20)
            # at once: not the 20 s a wait until the timeout would take (generous, for a
            # loaded machine)
            assert time.monotonic() - started < 5
        assert answered == [503]


def test_a_503_without_retry_after_is_not_sent_again() -> None:
    with _busy("soon") as (url, answered), pytest.raises(WitnessError, match="HTTP 503"):
        send(url, HMAC, _cp(1), timeout=5)
    assert answered == [503]


def test_the_witness_answers_every_503_with_a_retry_after(tmp_path: Path) -> None:
    server = make_server(("127.0.0.1", 0), WitnessStore(tmp_path / "w.jsonl", KEYS), HMAC,
                         max_readers=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/checkpoints",
                                   timeout=5)
        assert err.value.code == 503
        assert err.value.headers["Retry-After"] == "60"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_flood_of_idle_connections_holds_a_bounded_number_of_threads_and_the_operator_posts(
        tmp_path: Path) -> None:
    """Anyone may connect, and a connection that sends nothing holds its thread until the read
    timeout: a flood of them must not start a thread each. One over the bound is answered 503
    with a Retry-After at once, and the operator's POST, refused while the flood holds every
    slot, is sent again after it and stored once the idle connections are dropped."""
    import socket

    server = make_server(("127.0.0.1", 0), WitnessStore(tmp_path / "w.jsonl", KEYS), HMAC,
                         timeout_seconds=3.0, max_connections=4)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    baseline = threading.active_count()
    idle: list[socket.socket] = []
    try:
        for _ in range(4):  # every slot held, by connections that send nothing
            idle.append(socket.create_connection(("127.0.0.1", server.server_port), timeout=5))
        time.sleep(0.3)
        for _ in range(30):
            idle.append(socket.create_connection(("127.0.0.1", server.server_port), timeout=5))
            refused = idle[-1].recv(4096)
            assert refused.startswith(b"HTTP/1.0 503"), refused
            assert b"\r\nRetry-After: 1\r\n" in refused
            assert b"4 connections are being served already" in refused
        # a thread and its read watchdog for each of the 4 served, none for the rest
        assert threading.active_count() - baseline <= 2 * 4, threading.active_count()
        started = time.monotonic()
        send(f"http://127.0.0.1:{server.server_port}/checkpoints", HMAC, _cp(1), timeout=8)
        assert 0.9 < time.monotonic() - started < 6  # refused, then sent again and stored
        stored = (tmp_path / "w.jsonl").read_bytes()
        assert [c.seq for c in parse_checkpoints(stored, "w")] == [1]
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_connection_closed_before_its_answer_is_sent_again_within_the_delivery(
        tmp_path: Path) -> None:
    """A busy witness answers 503 and closes at once, and on a loaded machine the close (a
    reset, the request unread) can overtake the answer: the operator gets a broken pipe or a
    reset, not the 503. It sends the checkpoint again after the busy witness's Retry-After, as
    after the 503 (a checkpoint sent twice is "already witnessed"), and it is stored."""
    import socket
    import struct

    server = make_server(("127.0.0.1", 0), WitnessStore(tmp_path / "w.jsonl", KEYS), HMAC)
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while len(accepted) < 2:
            conn, addr = listener.accept()
            accepted.append(1)
            if len(accepted) == 1:  # reset at once, nothing answered
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:  # the real witness serves the one sent again
                server.process_request(conn, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        send(f"http://127.0.0.1:{listener.getsockname()[1]}/checkpoints", HMAC, _cp(1),
             timeout=8)
        assert 0.9 < time.monotonic() - started < 6
        assert len(accepted) == 2
        stored = (tmp_path / "w.jsonl").read_bytes()
        assert [c.seq for c in parse_checkpoints(stored, "w")] == [1]
    finally:
        listener.close()
        thread.join(10)
        server.server_close()

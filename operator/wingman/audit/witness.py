"""An external witness for signed checkpoints: the operator's client and a reference server.

A witness keeps a copy of every checkpoint outside the cluster and outside the audit store,
as transparency logs do, so not even an administrator of both can rewrite history unnoticed.

**Protocol.** ``POST <url>`` with the checkpoint's stored form (``Checkpoint.to_line()``, one
JSON object) as the body, ``Content-Type: application/json`` and the header
``X-Wingman-Signature: sha256=<hex HMAC-SHA256 of the body with the shared key>``. Any 2xx
answer means the witness stored it; a redirect is a failure, never followed. The checkpoint
is also signed with the audit key, so a witness that knows the audit public key can verify it
independently of the HMAC.

**Reference server** (``wingman audit witness``): checks the HMAC (constant time) and, when
given the audit public keys, the signature; refuses a checkpoint that contradicts one it holds
(same log and seq, another hash: ``409``) and one older than the newest it holds for that log
(a rollback: ``409``); appends accepted checkpoints to a JSON Lines file (fsynced; one it
cannot store whole is answered ``503`` and nothing of it stays in the file) and serves
that file at ``GET <path>`` for ``wingman audit verify --checkpoints``. The file grows by a line
a minute for good; the server holds only the newest checkpoint of each log and the
``RECENT_PER_LOG`` before it (a re-sent one is answered "already witnessed"), reads the file as
a stream at start (every line parsed, and signature-checked when given the audit keys) and
streams it to ``GET``: its memory stays bounded however old the file. ``GET`` is not
authenticated: at most ``MAX_READERS`` are served at once, each before a deadline, so slow
readers cannot use up threads and file handles and starve the operator's ``POST``s. Anyone may
connect: at most ``MAX_CONNECTIONS`` connections are served at once (a thread each, for at most
the read timeout before the request is read); one more is answered ``503`` with
``Retry-After: 1`` at once, from the accepting thread. Every ``503`` carries a ``Retry-After``,
and the client sends again after it when that fits in the delivery's timeout.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Sequence
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from wingman.audit.checkpoints import Checkpoint, iter_checkpoints, parse_checkpoint
from wingman.audit.file import open_regular
from wingman.audit.records import _loads, _Malformed
from wingman.audit.signing import check_signature, keyset_from_pems
from wingman.capability.keys import KeySet
from wingman.errors import AuditTampered, WingmanError, shown_url
from wingman.logs import looks_like_token
from wingman.model.text import terminal_text

SIGNATURE_HEADER = "X-Wingman-Signature"
MAX_BODY = 4096
READ_TIMEOUT_SECONDS = 10.0
"""How long the reference witness waits on a client's request or body."""
MAX_READERS = 8
"""``GET``s the reference witness serves at once; one more is answered ``503`` at once, with no
file opened. ``GET`` is unauthenticated: without a bound, clients that read slowly would each
hold a thread and a handle of the store until file handles ran out and the operator's ``POST``s
failed."""
MAX_CONNECTIONS = 32
"""Connections the reference witness serves at once, each on a thread of its own. Anyone may
connect, and a connection that sends nothing holds its thread for the read timeout: without a
bound, a flood of idle connections would start threads without end. One more is answered
``503`` with ``Retry-After: BUSY_RETRY_AFTER`` at once, and closed."""
BUSY_RETRY_AFTER = 1
"""The ``Retry-After`` (seconds) of a connection refused because ``MAX_CONNECTIONS`` are
served."""
STORE_RETRY_AFTER = 60
"""The ``Retry-After`` (seconds) of the reference witness's other ``503``s: the store could not
take the checkpoint, or ``MAX_READERS`` are being served (the operator sends its newest
checkpoint again next round anyway)."""
MIN_RETRY_WAIT = 0.5
"""Least the client waits before it sends again after a ``503`` (``Retry-After: 0`` too)."""
MIN_SEND_RATE = 64 * 1024
"""Bytes a second a ``GET``'s client must at least take: the whole answer gets the read timeout
plus its size at this rate (a busy year's store of 150 MB: some 40 minutes), then the
connection is reset, its thread and file handle freed."""
RECENT_PER_LOG = 1024
"""Checkpoints per log the reference witness remembers besides the newest: one of them sent
again is "already witnessed" (the operator re-sends only its newest, when the answer was lost);
an older one is refused as a rollback."""


MAX_REPLY_READ = 300
"""Bytes of a witness's error reply read for the operator's message."""
MAX_REPLY_SHOWN = 300
"""Characters of it shown, escaped."""


def _reply(exc: urllib.error.HTTPError) -> str:
    """The start of a witness's error reply as a message may show it: the witness is another
    party, and what it answers reaches the operator's logs. Control characters, newlines (a
    fake log line), ANSI escapes and bidirectional or invisible characters are shown escaped
    (``\\x1b``), a token-shaped text not at all, and it is cut to ``MAX_REPLY_SHOWN``."""
    try:
        raw = exc.read(MAX_REPLY_READ)
    except (OSError, ValueError):
        return "(no reply body)"
    text = raw.decode("utf-8", "replace").strip()
    if looks_like_token(text):
        return "(a reply holding a token-shaped text, not shown)"
    shown = terminal_text(text, None)
    return shown if len(shown) <= MAX_REPLY_SHOWN else f"{shown[:MAX_REPLY_SHOWN]}…"


class WitnessError(WingmanError):
    """A checkpoint could not be delivered to the witness (retried next round)."""

    reason = "AuditWitnessUnavailable"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers, never followed: urllib would follow a 301, 302 or 303 to a POST
    with a GET (whose 2xx would pass for a stored checkpoint), to any host."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: Message, newurl: str) -> None:
        return None


class _Deadline:
    """Ends a delivery at its deadline, whatever it waits for: a socket timeout bounds each
    wait for a byte, so a witness that answers a byte at a time would hold the delivery (and
    the operator's checkpoint round, its later rounds and its shutdown) for as long as it
    likes. At the deadline the connection is shut down, through a descriptor of its own (a
    ``dup``, closed once the delivery is over: never a number the process may have reused)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            for fd in self._fds:
                os.close(fd)
            self._fds = []

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline (at once when it passed)."""
        with self._lock:
            fd = os.dup(sock.fileno())
            self._fds.append(fd)
            if self.expired:
                _shut_down(fd)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for fd in self._fds:
                _shut_down(fd)


def _shut_down(fd: int) -> None:
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=fd)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # the descriptor stays the deadline's, closed by it


def _watched(base: type[http.client.HTTPConnection], deadline: _Deadline
             ) -> type[http.client.HTTPConnection]:
    """``base`` whose socket ``deadline`` shuts down (the TCP socket, under TLS too)."""

    class Watched(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = self._connect_watched

        @staticmethod
        def _connect_watched(address: tuple[str, int], timeout: Any = None,
                             source_address: Any = None) -> socket.socket:
            sock = socket.create_connection(address, timeout, source_address)
            try:
                deadline.watch(sock)
            except OSError:
                sock.close()
                raise
            return sock

    return Watched


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """An opener whose connections end at ``deadline`` and that follows no redirect."""

    class Plain(urllib.request.HTTPHandler):
        def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
            return super().do_open(_watched(http_class, deadline), req, **kwargs)

    class Secure(urllib.request.HTTPSHandler):
        def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
            return super().do_open(_watched(http_class, deadline), req, **kwargs)

    return urllib.request.build_opener(Plain, Secure, _NoRedirect)


def signature(key: bytes, body: bytes) -> str:
    """The ``X-Wingman-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def send(url: str, key: bytes, checkpoint: Checkpoint, *, timeout: float = 10.0) -> None:
    """POST ``checkpoint`` to the witness at ``url``; ``WitnessError`` unless it answers 2xx
    within ``timeout`` seconds (the whole delivery, its answer read included). A ``503`` or
    ``429`` with a ``Retry-After`` is sent again after it (``MIN_RETRY_WAIT`` at least) while
    that leaves time before the timeout; past it, it fails at once."""
    body = checkpoint.to_line().encode("ascii")
    request = urllib.request.Request(  # noqa: S310 - the URL's scheme is checked by settings
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature(key, body),
                 "User-Agent": "wingman-operator"})
    ends = time.monotonic() + timeout
    with _Deadline(timeout) as deadline:
        while True:
            failure, retry_after = _deliver(request, deadline, url, checkpoint.seq)
            if failure is None or retry_after is None or deadline.expired:
                break
            wait = max(retry_after, MIN_RETRY_WAIT)
            if time.monotonic() + wait >= ends:
                failure = WitnessError(f"{failure.message} (it asked to be sent again in "
                                       f"{retry_after:g}s, past the delivery's {timeout:g}s "
                                       "timeout); it is sent again next round")
                break
            time.sleep(wait)
    if deadline.expired:  # whatever came of it, an answer cut short says nothing
        raise WitnessError(f"the audit witness {shown_url(url)!r} did not answer checkpoint "
                           f"seq {checkpoint.seq} within {timeout:g}s (the timeout bounds the "
                           "whole delivery); it is sent again next round")
    if failure is not None:
        raise failure


MAX_RETRY_AFTER = 24 * 3600
"""Largest ``Retry-After`` taken as given (a larger one is as good: past any timeout)."""


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    """The seconds a ``503`` or ``429`` asks to wait before sending again, or ``None``: another
    answer, no ``Retry-After``, or one that is neither seconds nor an HTTP date."""
    if exc.code not in (429, 503) or exc.headers is None:
        return None
    value = (exc.headers.get("Retry-After") or "").strip()
    if re.fullmatch(r"[0-9]{1,10}", value):
        return float(min(int(value), MAX_RETRY_AFTER))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when.timestamp() - time.time(), 0.0), float(MAX_RETRY_AFTER))


def _deliver(request: urllib.request.Request, deadline: _Deadline, url: str, seq: int
             ) -> tuple[WitnessError | None, float | None]:
    """The delivery of ``request`` (before ``deadline``): no error when the witness stored it;
    with an error, the seconds the witness asked to wait before sending again, if it did."""
    try:
        with _opener(deadline).open(request, timeout=deadline.seconds) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return _refused(exc, seq), _retry_after(exc)
    except (ValueError, http.client.InvalidURL) as exc:  # its message quotes the URL's query
        return WitnessError(f"the audit witness URL {shown_url(url)!r} cannot be used "
                            f"({type(exc).__name__}); fix WINGMAN_AUDIT_WITNESS_URL "
                            "(audit.checkpoints.witness.url)"), None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        # a connection closed before its answer (a busy witness answers 503 and closes at once,
        # and the close may overtake the answer): sent again as after that 503, since a
        # checkpoint sent twice is "already witnessed"
        again = float(BUSY_RETRY_AFTER) if isinstance(
            reason, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)) else None
        return WitnessError(f"cannot reach the audit witness {shown_url(url)!r}: "
                            f"{terminal_text(reason, None)[:MAX_REPLY_SHOWN]}; the checkpoint "
                            "is kept in the ConfigMap and sent again next round"), again
    if not 200 <= status < 300:
        return WitnessError(f"the audit witness answered HTTP {status} for checkpoint seq "
                            f"{seq}"), None
    return None, None


def _refused(exc: urllib.error.HTTPError, seq: int) -> WitnessError:
    """The error of a witness's answer that is not 2xx."""
    if 300 <= exc.code < 400:
        return WitnessError(f"the audit witness answered checkpoint seq {seq} with HTTP "
                            f"{exc.code}, a redirect: redirects are not followed (a 301, "
                            "302 or 303 would turn the POST into a GET, whose answer does "
                            "not say the checkpoint was stored); set "
                            "audit.checkpoints.witness.url to the URL that answers")
    return WitnessError(f"the audit witness refused checkpoint seq {seq}: HTTP "
                        f"{exc.code} {_reply(exc)}")


class WitnessStore:
    """The reference witness's state: accepted checkpoints, appended to a JSON Lines file."""

    def __init__(self, path: Path, keys: KeySet | None) -> None:
        self.path = path
        self.keys = keys
        self.lock = threading.Lock()
        self.newest: dict[str, Checkpoint] = {}
        self.recent: dict[str, OrderedDict[int, str]] = {}
        """Per log, seq -> hash of the newest ``RECENT_PER_LOG`` + 1 witnessed."""
        self.broken: str | None = None
        """Why no checkpoint is stored any more (a failed write that could not be removed)."""
        if path.exists():
            with open_regular(path, "store", WitnessError) as fh:
                for number, checkpoint in iter_checkpoints(fh, str(path)):
                    where = f"{path} line {number}"
                    if keys is not None:
                        check_signature(checkpoint, keys, where)
                    self._remember(checkpoint, where)

    def _remember(self, checkpoint: Checkpoint, where: str = "") -> None:
        recent = self.recent.setdefault(checkpoint.log, OrderedDict())
        known = recent.get(checkpoint.seq)
        if known is not None and known != checkpoint.hash:
            raise AuditTampered(f"checkpoint {where} ({checkpoint.describe()}) disagrees with "
                                f"an earlier line, sha256:{known}: the store was edited",
                                reason="AuditCheckpointInvalid")
        recent[checkpoint.seq] = checkpoint.hash
        recent.move_to_end(checkpoint.seq)
        while len(recent) > RECENT_PER_LOG + 1:
            recent.popitem(last=False)
        newest = self.newest.get(checkpoint.log)
        if newest is None or checkpoint.seq > newest.seq:
            self.newest[checkpoint.log] = checkpoint

    def accept(self, checkpoint: Checkpoint) -> tuple[int, str]:
        """(HTTP status, message) for one authenticated checkpoint."""
        if self.keys is not None:
            try:
                check_signature(checkpoint, self.keys)
            except AuditTampered as exc:
                return 403, exc.message
        with self.lock:
            recent = self.recent.get(checkpoint.log)
            known = None if recent is None else recent.get(checkpoint.seq)
            if known is not None:
                if known != checkpoint.hash:
                    return 409, (f"log {checkpoint.log} seq {checkpoint.seq} was witnessed as "
                                 f"sha256:{known}, not sha256:{checkpoint.hash}: the log was "
                                 "rewritten")
                return 200, "already witnessed"
            newest = self.newest.get(checkpoint.log)
            if newest is not None and checkpoint.seq < newest.seq:
                return 409, (f"log {checkpoint.log} was witnessed up to seq {newest.seq}; seq "
                             f"{checkpoint.seq} is a rollback")
            if self.broken is not None:
                return 503, self.broken
            failed = self._append((checkpoint.to_line() + "\n").encode("ascii"))
            if failed is not None:
                return 503, failed
            self._remember(checkpoint)
            return 201, "witnessed"

    def _append(self, line: bytes) -> str | None:
        """Append ``line`` whole and fsync it; else remove what was written of it and say why
        (a torn line would stop every later start and every verification against the copy).
        When even that fails, every later checkpoint is refused until a restart."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            return f"cannot store the checkpoint (cannot open the store: {exc.strerror})"
        try:
            try:
                size = os.fstat(fd).st_size
            except OSError as exc:
                return f"cannot store the checkpoint (cannot stat the store: {exc.strerror})"
            try:
                view = memoryview(line)
                while view:  # a write cut short (a full disk) goes on, or raises
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, size)
                except OSError as undo:
                    self.broken = ("cannot store checkpoints: a failed write to the store could "
                                   f"not be removed ({undo.strerror}); repair the store and "
                                   "restart the witness")
                    return self.broken
                return f"cannot store the checkpoint ({exc.strerror}); nothing of it was kept"
            return None
        finally:
            os.close(fd)


def _handler(store: WitnessStore, key: bytes, path: str, timeout_seconds: float,
             max_readers: int, min_send_rate: int
             ) -> type[http.server.BaseHTTPRequestHandler]:
    readers = threading.BoundedSemaphore(max_readers)

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "wingman-witness"
        # a client that stops sending (before its HMAC is even checked) holds no thread
        # for longer than this; one that trickles a byte at a time neither: the watchdog
        # ends the reading of the whole request at the same time
        timeout = timeout_seconds
        _expired = False

        def setup(self) -> None:
            super().setup()
            self._guard = threading.Lock()
            self._reading = True
            self._sending = False
            self._late = False
            self._watchdog = threading.Timer(timeout_seconds, self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()

        def _expire(self) -> None:
            """The request was not read in time: end its reading (an answer can still go)."""
            with self._guard:
                if not self._reading:
                    return
                self._expired = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RD)

        def _read(self) -> bool:
            """The request is read: the watchdog stands down. False when it had fired."""
            with self._guard:
                self._reading = False
            self._watchdog.cancel()
            return not self._expired

        def _cut(self) -> None:
            """The answer was not taken in time: shut the connection down (the write fails,
            and the thread and the store's handle are freed)."""
            with self._guard:
                if self._sending:
                    self._late = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)

        def finish(self) -> None:
            self._watchdog.cancel()
            with contextlib.suppress(OSError):  # a client gone before its answer
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(json.dumps({"witness": format % args}) + "\n")

        def _answer(self, status: int, message: str, body: bytes | None = None) -> None:
            data = body if body is not None else (json.dumps({"message": message}) + "\n"
                                                  ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if body is None
                             else "application/x-ndjson")
            self.send_header("Content-Length", str(len(data)))
            if status == 503:
                self.send_header("Retry-After", str(STORE_RETRY_AFTER))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if not self._read():
                self.close_connection = True
                return
            if self.path != path:
                self._answer(404, f"not found; checkpoints are at {path}")
                return
            if not readers.acquire(blocking=False):
                self.close_connection = True
                self._answer(503, f"{max_readers} readers are being served already; try again "
                             "in a minute")
                return
            try:
                self._serve_store()
            finally:
                readers.release()

        def _serve_store(self) -> None:
            """The store, as it is now, before a deadline: the read timeout plus its size at
            ``min_send_rate``."""
            with store.lock:  # the file only grows: the prefix up to this size is whole
                try:
                    fh = store.path.open("rb")
                except FileNotFoundError:
                    self._answer(200, "", b"")
                    return
                size = os.fstat(fh.fileno()).st_size
            with self._guard:
                self._sending = True
            deadline = threading.Timer(timeout_seconds + size / min_send_rate, self._cut)
            deadline.daemon = True
            deadline.start()
            try:
                with fh:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-ndjson")
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    while size > 0:
                        chunk = fh.read(min(size, 1 << 16))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        size -= len(chunk)
            except OSError:  # cut at the deadline, or the client went away
                self.close_connection = True
            finally:
                deadline.cancel()
                with self._guard:
                    self._sending = False
                if self._late:  # what the kernel still queues for it is dropped: a reset
                    with contextlib.suppress(OSError):
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   struct.pack("ii", 1, 0))

        def do_POST(self) -> None:
            if self.path != path:
                self._answer(404, f"not found; POST checkpoints to {path}")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._answer(411, "a Content-Length is required")
                return
            if not 0 < length <= MAX_BODY:
                self._answer(413, f"a checkpoint is at most {MAX_BODY} bytes")
                return
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                body = None
            if not self._read() or body is None:
                self.close_connection = True
                self._answer(408, f"the body did not arrive within {timeout_seconds:g}s")
                return
            if len(body) != length:
                self.close_connection = True
                self._answer(400, "the body is shorter than its Content-Length")
                return
            given = self.headers.get(SIGNATURE_HEADER, "")
            if not hmac.compare_digest(given.encode(), signature(key, body).encode()):
                self._answer(401, f"missing or wrong {SIGNATURE_HEADER}")
                return
            try:
                checkpoint = parse_checkpoint(_loads(body), "in the request")
            except _Malformed as exc:
                self._answer(400, f"the body {exc}")
                return
            except AuditTampered as exc:
                self._answer(400, exc.message)
                return
            status, message = store.accept(checkpoint)
            self._answer(status, message)

    return Handler


def _busy_answer(max_connections: int) -> bytes:
    """The whole answer to a connection over ``max_connections``."""
    body = (json.dumps({"message": f"{max_connections} connections are being served "
                                   f"already; try again in {BUSY_RETRY_AFTER}s"}) + "\n"
            ).encode()
    return (f"HTTP/1.0 503 Service Unavailable\r\nServer: wingman-witness\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Retry-After: {BUSY_RETRY_AFTER}\r\nConnection: close\r\n\r\n").encode() + body


class _Server(http.server.ThreadingHTTPServer):
    """Serves at most ``max_connections`` connections at once, a thread each; one more is
    answered ``503`` at once by the accepting thread (which never waits on it) and closed."""

    daemon_threads = True

    def __init__(self, listen: tuple[str, int],
                 handler: type[http.server.BaseHTTPRequestHandler], max_connections: int
                 ) -> None:
        super().__init__(listen, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._busy = _busy_answer(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (none to be had): the slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        """Answer ``503`` without waiting: what arrived of the request is read first (a
        connection closed with unread bytes is reset, and the reset may overtake the answer)."""
        try:
            request.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                request.recv(MAX_BODY * 4)
            request.send(self._busy)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)


def make_server(listen: tuple[str, int], store: WitnessStore, key: bytes,
                path: str = "/checkpoints", timeout_seconds: float = READ_TIMEOUT_SECONDS,
                *, max_readers: int = MAX_READERS, min_send_rate: int = MIN_SEND_RATE,
                max_connections: int = MAX_CONNECTIONS) -> http.server.ThreadingHTTPServer:
    """The reference witness server (not started)."""
    return _Server(listen, _handler(store, key, path, timeout_seconds, max_readers,
                                    min_send_rate), max_connections)


MAX_KEY_FILE_BYTES = 64 * 1024
"""Largest HMAC or audit key file the reference witness reads."""


def _key_file(name: str, what: str) -> bytes:
    with open_regular(name, what, WitnessError) as fh:
        data = fh.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise WitnessError(f"{what} {name} is larger than {MAX_KEY_FILE_BYTES} bytes; pass the "
                           "key file itself")
    return data


def _listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: any free one); ``WitnessError`` says what is wrong."""
    host, _, port = text.rpartition(":")
    if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise WitnessError(f"--listen {text!r} is not HOST:PORT with a port 0 to 65535, e.g. "
                           "127.0.0.1:8470")
    return host or "127.0.0.1", int(port)


def _cannot_listen(listen: str, exc: OSError) -> str:
    """Why the witness cannot listen on ``listen`` (``HOST:PORT``), and what to do."""
    if exc.errno == errno.EADDRINUSE:
        return (f"{listen} is in use: another process listens on it; stop it, or give this "
                "witness another --listen (port 0: any free one)")
    return (f"cannot listen on {listen}: {exc.strerror or type(exc).__name__}; give another "
            "--listen (a HOST of this machine; port 0: any free one)")


def witness_main(argv: Sequence[str]) -> int:
    """``wingman audit witness``: serve until SIGINT, SIGTERM or SIGHUP."""
    import argparse


    p = argparse.ArgumentParser(prog="wingman audit witness",
                                description="A reference witness for signed audit checkpoints.")
    p.add_argument("--listen", default="127.0.0.1:8470", help="HOST:PORT (default %(default)s)")
    p.add_argument("--store", required=True, help="JSON Lines file the checkpoints go to")
    p.add_argument("--hmac-key-file", required=True, help="file holding the shared HMAC key")
    p.add_argument("--audit-key", action="append", default=[],
                   help="audit public key PEM file (repeatable); checkpoints must verify")
    p.add_argument("--path", default="/checkpoints",
                   help="the HTTP path checkpoints are POSTed to (default %(default)s)")
    args = p.parse_args(list(argv))
    try:
        host, port = _listen(args.listen)
        key = _key_file(args.hmac_key_file, "HMAC key file").strip()
        keys = keyset_from_pems([_key_file(f, "audit key") for f in args.audit_key]) \
            if args.audit_key else None
        if len(key) < 16:
            raise WitnessError("the HMAC key must be at least 16 bytes")
        store = WitnessStore(Path(args.store), keys)
        try:
            server = make_server((host, port), store, key, args.path)
        except OSError as exc:
            raise WitnessError(_cannot_listen(args.listen, exc)) from None
    except (OSError, ValueError, WingmanError) as exc:
        print(f"wingman audit witness: cannot start: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    print(json.dumps({"witness": "listening", "address": f"{host}:{server.server_port}",
                      "store": args.store}), file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


__all__ = ["SIGNATURE_HEADER", "WitnessError", "WitnessStore", "make_server", "send",
           "signature", "witness_main"]

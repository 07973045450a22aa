"""A TLS proxy in front of the real API server that fails or slows down chosen calls.

For tests of what a client does when the API server blips: every call passes through to the
real API server, answer and headers as they came (its ``Date`` too), but the first calls that
match a rule (method and path) are answered by the proxy with an error status (a Kubernetes
``Status``, as the API server answers a 503 or a 429), dropped (the connection closed with no
answer), passed on with their answer lost, held for a while before they pass, or passed on
with their answer trickled back a byte at a time (a server that keeps every read of the
client waiting a little, never long enough for a timeout of one socket read).
Point a client at ``url`` and trust ``ca_file`` (issued for 127.0.0.1 for the proxy).
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from support.tls import serve_tls

#: Headers about one hop of the connection, never passed on.
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                  "proxy-connection", "content-length", "host"})


@dataclass
class _Rule:
    method: str
    path: str
    times: int
    status: int
    delay: float
    seen: int = 0
    after: int = 0
    passed: int = 0
    drop: bool = False
    lose: bool = False
    trickle: int = 0
    """Bytes of the answer given back one at a time, ``delay`` seconds apart."""
    trickle_from_body: bool = False
    retry_after: int | None = None
    message: str | None = None


class FaultyApiProxy:
    """The proxy (a context manager: served in a thread while inside)."""

    def __init__(self, upstream: str, upstream_ca: Path, directory: Path) -> None:
        parts = urlsplit(upstream)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 443
        self._upstream_ctx = ssl.create_default_context(cafile=str(upstream_ca))
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        ca = serve_tls(self._server, directory)
        self.ca_file = directory / "proxy-ca.crt"
        self.ca_file.write_bytes(ca.cert_pem)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, method: str, path: str, *, times: int, status: int = 503,
             after: int = 0, retry_after: int | None = None,
             message: str | None = None) -> None:
        """Answer the first ``times`` calls of ``method`` on ``path`` with ``status`` (and the
        header ``Retry-After: <retry_after>``, when given, as API Priority and Fairness does;
        the Status's ``message``, when given, as an admission webhook's long denial);
        the first ``after`` such calls that no earlier rule took pass."""
        with self._lock:
            self._rules.append(_Rule(method, path, times, status, 0.0, after=after,
                                     retry_after=retry_after, message=message))

    def drop(self, method: str, path: str, *, times: int) -> None:
        """Close the connection of the first ``times`` calls of ``method`` on ``path``, read
        and never passed on, without an answer (as an API server that restarts does)."""
        with self._lock:
            self._rules.append(_Rule(method, path, times, 0, 0.0, drop=True))

    def lose(self, method: str, path: str, *, times: int, after: int = 0) -> None:
        """Pass the first ``times`` calls of ``method`` on ``path`` on to the API server, and
        close the connection instead of giving its answer back (a write that landed, its
        answer lost); the first ``after`` such calls that no earlier rule took pass."""
        with self._lock:
            self._rules.append(_Rule(method, path, times, 0, 0.0, after=after, lose=True))

    def hold(self, method: str, path: str, *, seconds: float, times: int = 1,
             after: int = 0) -> None:
        """Hold the first ``times`` calls of ``method`` on a path starting with ``path`` for
        ``seconds`` before passing them on; the first ``after`` such calls pass at once."""
        with self._lock:
            self._rules.append(_Rule(method, path, times, 0, seconds, after=after))

    def trickle(self, method: str, path: str, *, every: float, count: int, times: int = 1,
                after: int = 0, from_body: bool = False) -> None:
        """Pass the first ``times`` calls of ``method`` on a path starting with ``path`` on to
        the API server, and give the answer back with its first ``count`` bytes (from its
        status line, or ``from_body``: from its body, the head sent at once) one at a time,
        ``every`` seconds apart, then the rest; the first ``after`` such calls pass as they
        are. A client that gives up meanwhile ends the trickle (its connection closed)."""
        with self._lock:
            self._rules.append(_Rule(method, path, times, 0, every, after=after,
                                     trickle=count, trickle_from_body=from_body))

    def count(self, method: str, path: str) -> int:
        """How many calls of ``method`` on ``path`` reached the proxy."""
        with self._lock:
            return sum(1 for call in self.calls if call == (method, path))

    def _match(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            self.calls.append((method, path))
            for rule in self._rules:
                exact = rule.status or rule.drop or rule.lose
                hit = path == rule.path if exact else path.startswith(
                    rule.path)
                if rule.method == method and hit and rule.passed < rule.after:
                    rule.passed += 1
                    continue
                if rule.method == method and hit and rule.seen < rule.times:
                    rule.seen += 1
                    return rule
        return None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        method, target = handler.command, handler.path
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        rule = self._match(method, urlsplit(target).path)
        if rule is not None and rule.drop:
            handler.close_connection = True
            return
        if rule is not None and rule.status:
            data = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "message": rule.message
                               or f"injected by the test proxy ({rule.status})",
                               "reason": "ServiceUnavailable" if rule.status == 503 else "",
                               "code": rule.status}).encode()
            headers = [("Content-Type", "application/json")]
            if rule.retry_after is not None:
                headers.append(("Retry-After", str(rule.retry_after)))
            self._reply(handler, rule.status, headers, data)
            return
        if rule is not None and not rule.trickle:
            time.sleep(rule.delay)
        conn = http.client.HTTPSConnection(self._host, self._port, context=self._upstream_ctx,
                                           timeout=60)
        try:
            forwarded = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
            conn.request(method, target, body=body, headers=forwarded)
            resp = conn.getresponse()
            data = resp.read()
            if rule is not None and rule.lose:
                handler.close_connection = True
                return
            kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            if rule is not None and rule.trickle:
                self._trickle(handler, rule, resp.status, kept, data)
                return
            self._reply(handler, resp.status, kept, data)
        finally:
            conn.close()

    @staticmethod
    def _trickle(handler: BaseHTTPRequestHandler, rule: _Rule, status: int,
                 headers: list[tuple[str, str]], data: bytes) -> None:
        handler.close_connection = True
        head = f"HTTP/1.1 {status} {http.client.responses.get(status, '')}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers)
        head += f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        whole = head.encode("latin-1") + data
        start = len(head) if rule.trickle_from_body else 0
        try:
            handler.wfile.write(whole[:start])
            for i in range(start, min(start + rule.trickle, len(whole))):
                handler.wfile.write(whole[i:i + 1])
                handler.wfile.flush()
                time.sleep(rule.delay)
            handler.wfile.write(whole[start + rule.trickle:])
        except OSError:  # the client gave up and closed its connection
            return

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]],
               data: bytes) -> None:
        handler.send_response_only(status)  # no Date of the proxy's own: the server's passes
        for key, value in headers:
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)

    def __enter__(self) -> FaultyApiProxy:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


__all__ = ["FaultyApiProxy"]

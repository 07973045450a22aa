"""Local HTTP servers that stand in, at an address a client is given, for what cannot be real
there: an API server answering what no real one does (a 503, a Status of a hostile proxy, a
Lease without a resourceVersion), a proxy, a witness. ``serving`` runs a handler on a free
loopback port; ``QuietHandler`` answers JSON the way the API server does and logs nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A handler that writes no access log (the test's output stays the test's) and answers
    JSON with ``send_json``."""

    def send_json(self, code: int, value: Any,
                  headers: Mapping[str, str] | None = None) -> None:
        """Answer ``code`` with ``value`` as JSON, its length in ``Content-Length``, and
        ``headers`` beside."""
        body = json.dumps(value).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        for name, header in (headers or {}).items():
            self.send_header(name, header)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def running(server: ThreadingHTTPServer, scheme: str = "http") -> Iterator[str]:
    """Serve ``server`` (bound to a loopback port) on a thread, a thread a connection, until
    the block ends; yields its URL (``SCHEME://127.0.0.1:PORT``). On the way out the server
    stops accepting, its socket is closed and its serving thread has ended."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port, a thread a connection, until the block ends;
    yields the server's URL (``http://127.0.0.1:PORT``), as ``running`` does."""
    with running(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        yield url


__all__ = ["QuietHandler", "running", "serving"]

"""A local server that answers every call with a redirect, as a proxy or another service at
an API server's address might: for tests that a client follows none (an API server never
redirects)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def redirecting_server(answer: Mapping[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """Serve on a free loopback port: every call is answered ``302`` to ``/elsewhere<path>``,
    where ``answer`` would be answered as JSON. Yields (the server's URL, the paths asked at
    ``/elsewhere``: a client that follows no redirect leaves it empty)."""
    followed: list[str] = []
    body_of_answer = json.dumps(dict(answer)).encode()

    class Redirecting(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path.startswith("/elsewhere"):
                followed.append(self.path)
                body = body_of_answer
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
            else:
                body = b""
                self.send_response(302)
                self.send_header("Location", "/elsewhere" + self.path)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", followed
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


__all__ = ["redirecting_server"]

"""TLS for the tests' local HTTP servers: a throwaway CA (the one ``wingman dev`` uses for its
control plane) and a server socket wrapped with a certificate for 127.0.0.1 it issued."""

from __future__ import annotations

import socketserver
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from support.localserver import running
from wingman.dev.cluster import _CA


def serve_tls(server: socketserver.TCPServer, directory: Path) -> _CA:
    """Wrap ``server``'s socket for TLS with a certificate for 127.0.0.1 (files written in
    ``directory``); returns the CA that issued it (``cert_pem``, ``issue`` for clients)."""
    ca = _CA.create()
    cert, key = ca.issue("127.0.0.1", server_ips=["127.0.0.1"])
    (directory / "server.crt").write_bytes(cert)
    (directory / "server.key").write_bytes(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(directory / "server.crt", directory / "server.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    return ca


@contextmanager
def serving_tls(handler: type[BaseHTTPRequestHandler],
                directory: Path) -> Iterator[tuple[str, _CA]]:
    """``serving`` over HTTPS: ``handler`` on a free loopback port, with a certificate for
    127.0.0.1 (``serve_tls``, its files in ``directory``), until the block ends; yields the
    server's URL (``https://127.0.0.1:PORT``) and the CA that issued the certificate."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    try:
        ca = serve_tls(server, directory)
    except BaseException:
        server.server_close()
        raise
    with running(server, "https") as url:
        yield url, ca

"""TLS for the tests' local HTTP servers: a throwaway CA (the one ``wingman dev`` uses for its
control plane) and a server socket wrapped with a certificate for 127.0.0.1 it issued."""

from __future__ import annotations

import socketserver
import ssl
from pathlib import Path

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

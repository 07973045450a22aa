"""Ports of the servers the tests start, learnt from the servers, never handed to them.

Picking a free port by binding port 0 and closing it, then telling a server to bind that
number, races: another process (the suite runs servers in parallel) can take it in between.
So a server binds port 0 itself and names the port it got (``serving_port``: the MCP server's
line; ``logged_ports``: a JSON record, the chat service's), or, where it cannot (kopf's
liveness endpoint, PostgreSQL), the start is retried on a new port when the one picked was
taken: the operator's port counts only once its own process listens on it
(``listening_ports``), whoever else answers there; PostgreSQL's start (``pg_ctl -w``) fails
when it cannot bind its port.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: ``wingman mcp --transport http``'s "serving streamable HTTP on http://<host>:<port><path>"
_SERVING = re.compile(r"serving streamable HTTP on http://(?:\[[^\]]*\]|[^\s:/\"]+):(\d+)/")


def serving_port(line: str) -> int:
    """The port named in the MCP server's "serving" line (it binds ``--port 0`` itself)."""
    found = _SERVING.search(line)
    if found is None:
        raise AssertionError(f"no 'serving streamable HTTP on http://host:port/' in {line!r}")
    return int(found.group(1))


def logged_ports(log: str, message: str, *keys: str) -> dict[str, int] | None:
    """The ports named under ``keys`` in the first JSON record of ``log`` whose message is
    ``message`` (``chat starting``: ``httpPort``, ``metricsPort``); None before that record."""
    for line in log.splitlines():
        if f'"{message}"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("message") == message:
            missing = [k for k in keys if not isinstance(record.get(k), int)]
            if missing:
                raise AssertionError(f"the {message!r} record names no port {missing}: {line}")
            return {k: int(record[k]) for k in keys}
    return None


def _sockets(pid: int) -> list[list[str]]:
    """The rows of ``/proc/<pid>/net/tcp`` and ``tcp6`` for the sockets process ``pid`` holds
    (its ``fd`` links; none when it is gone), split into fields: local_address and
    rem_address are HEX_ADDR:HEX_PORT, the state is field 3 (0A is LISTEN), the inode field 9."""
    inodes: set[str] = set()
    try:
        entries = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return []
    for fd in entries:
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    rows: list[list[str]] = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        rows += [f for f in (row.split() for row in lines) if len(f) > 9 and f[9] in inodes]
    return rows


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (Linux: its sockets in ``/proc``): a server
    this process started owns a port only if it is among them, whoever else answers on it."""
    return {_port(f[1]) for f in _sockets(pid) if f[3] == "0A"}


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The (IP address, TCP port) pairs process ``pid`` listens on (Linux: its sockets in
    ``/proc``): ``("0.0.0.0", p)`` is every IPv4 address, ``("127.0.0.1", p)`` this machine
    only."""
    return {(_address(f[1]), _port(f[1])) for f in _sockets(pid) if f[3] == "0A"}


def _address(field: str) -> str:
    """``/proc/net/tcp``'s address: hex in the host's byte order, 32-bit word by word."""
    raw = bytes.fromhex(field.rsplit(":", 1)[0])
    words = b"".join(raw[i:i + 4][::-1] if sys.byteorder == "little" else raw[i:i + 4]
                     for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(words) == 4 else socket.AF_INET6, words)


def connections_to(pid: int, port: int) -> int:
    """How many TCP connections to ``port`` (its remote port) process ``pid`` holds open: its
    sockets in ``/proc``, whatever their state (one the peer closed stays, CLOSE_WAIT, until
    the process closes it)."""
    return sum(1 for f in _sockets(pid) if f[3] != "0A" and _port(f[2]) == port)


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs: bound, never listening,
    so no other process can take it and answer (a port closed after it was picked could be
    taken by another test's server before the test connects to it)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


__all__ = ["connections_to", "listening_addresses", "listening_ports", "logged_ports",
           "refused_port", "serving_port"]

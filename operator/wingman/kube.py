"""A small, typed Kubernetes REST client for the objects Wingman touches, and idempotent creates.

The operator's own calls (kopf makes its watches itself), the gateway, the chat service, the
MCP server, the CLI, ``wingman verify-privileges`` and the dev node harness (but for its pod
watch) need only a handful of calls (get, list, create, merge/JSON patch, delete) on a
handful of resources; this module does them as plain JSON over the ``kubernetes`` package's
authenticated connection (or, in the operator's writer process, a connection described by an
``Endpoint``: that process never imports the ``kubernetes`` package, whose models cost every
process that imports it about 30 MiB; this module imports it only when a function needs it),
returning dicts, and turns API errors into ``ApiError`` with the
server's own message. It follows no redirect and reads every answer to a cap; only a failure of
the network, TLS or HTTP layer is ``Unreachable``. ``Kube.list`` reads in pages
(``LIST_PAGE_SIZE``), bounded over all pages (``MAX_LIST_BYTES``: ``ListTooLarge``), started
again when its continue token expires (``LIST_RESTARTS``, then ``ListExpired``).
``create_or_adopt`` is how every object the operator makes is created: a 409 means "it exists
already, adopt it", which is what makes an operator killed at any point safe to restart.
"""

from __future__ import annotations

import copy
import datetime as dt
import email.utils
import http.client
import io
import json
import logging
import os
import pickle
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote, urlencode

import yaml
from urllib3 import HTTPConnectionPool, HTTPHeaderDict, PoolManager
from urllib3 import Timeout as HTTPTimeout
from urllib3.connection import HTTPConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    LocationParseError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ResponseError,
)
from urllib3.exceptions import HTTPError as HTTPLibraryError
from urllib3.util.connection import allowed_gai_family
from urllib3.util.retry import Retry as HTTPRetry
from urllib3.util.ssl_ import is_ipaddress

from wingman import GROUP, VERSION
from wingman.errors import ClusterError, WingmanError, shown_url

if TYPE_CHECKING:
    from kubernetes import client as k8s

log = logging.getLogger("wingman.kube")

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
JSON = "application/json"
#: What a list asks for to get each object's metadata alone (``Kube.list(metadata_only=True)``);
#: whole objects from what cannot give that (as client-go asks).
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class ApiError(ClusterError):
    """The API server refused a call; ``status`` is the HTTP code, ``reason`` its reason."""

    def __init__(self, status: int, reason: str, message: str, *,
                 retry_after: float | None = None, said: str | None = None) -> None:
        super().__init__(message, reason=reason or "ApiError")
        self.status = status
        #: the answer's ``Retry-After`` in seconds (a 429 or 503 of API Priority and Fairness
        #: says when to ask again), None when it had none that parses
        self.retry_after = retry_after
        #: the API server's own words (its Status's ``message``, "" when it gave none); None
        #: for an error made here, not read from an answer
        self.said = said

    @property
    def detail(self) -> str:
        """What the API server said, for a message of the caller's own: its words, else its
        reason; an error made here, its message."""
        if self.said is None:
            return self.message
        return self.said or self.reason

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclass(frozen=True)
class Resource:
    """Where a kind lives: ``/api/v1`` or ``/apis/<group>/<version>``, plural, namespaced."""

    group: str
    version: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None
             ) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        out = f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        if name is not None:
            out += f"/{quote(name, safe='')}"
        if subresource:
            out += f"/{subresource}"
        return out


#: Told of every call ``Kube`` makes: (verb, resource, code, seconds). The verb is the API
#: server's (get, list, create, patch, update, delete), the resource its plural with the
#: subresource (``approvalrequests/status``), the code the HTTP status ("error": no answer, or
#: none that could be read). An observer that raises is logged and ignored.
Observer = Callable[[str, str, str, float], None]
#: What a list keeps of each object it reads (``Kube.list``): the object, a part of it (the
#: fields the caller uses), or None to drop it.
Keep = Callable[[dict[str, Any]], "dict[str, Any] | None"]
#: A Namespace's own subresources (``/api/v1/namespaces/<name>/status``)
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def call_labels(method: str, path: str) -> tuple[str, str]:
    """(verb, resource) of a call to ``path`` (pure): ``GET`` of a collection is ``list``, of
    an object ``get``; the resource is the plural, ``/<subresource>`` when there is one."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[0] not in ("api", "apis"):
        return method.lower(), "unknown"  # not a resource's path (discovery, OpenAPI)
    rest = parts[2:] if parts[0] == "api" else parts[3:]  # after the group and version
    if rest[:1] == ["watch"]:
        rest = rest[1:]  # the old watch paths: the resource's path after "watch"
    if len(rest) >= 3 and rest[0] == "namespaces" and \
            not (len(rest) == 3 and rest[2] in NAMESPACE_SUBRESOURCES):
        rest = rest[2:]  # a namespaced resource's path, not a namespace's own subresource
    resource = rest[0] if rest else "unknown"
    if len(rest) >= 3:
        resource += "/" + rest[2]
    named = len(rest) >= 2
    verb = {"GET": "get" if named else "list", "POST": "create", "PUT": "update",
            "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())
    return verb, resource


APPROVALS = Resource(GROUP, VERSION, "approvalrequests")
GRANTS = Resource(GROUP, VERSION, "executiongrants")
SECRETS = Resource("", "v1", "secrets")
CONFIGMAPS = Resource("", "v1", "configmaps")
PODS = Resource("", "v1", "pods")
JOBS = Resource("batch", "v1", "jobs")
LEASES = Resource("coordination.k8s.io", "v1", "leases")


# ---------------------------------------------------------------------------------------------
# Whole-call deadlines
#
# urllib3's timeouts bound each socket operation, not a call: a server that sends a byte of its
# answer every few seconds keeps a read "alive" for as long as it likes. A call made with
# ``once`` sets its deadline here (per thread: the client is shared), and the connections of
# a ``Kube``'s pools connect, read and send with what is left of it: connecting, the TLS
# handshake after it, and every receive and send wait at most until the deadline, so
# connecting, sending and the whole answer (status line, headers, body) end by it, or the call
# fails as a timeout does. No thread per call, but for looking up a host name: the system
# resolver keeps its own timeouts (30 s and more), so the lookup runs in a thread of its own,
# waited for until the deadline (then left to end in the background, the call failed as a
# timeout); each address it gives is then connected to with what is left, as the HTTP library
# does. A pod's API server address is an IP: no lookup, no thread there.
#
# A call without ``once`` is bounded so too, try by try: each try the HTTP library makes (its
# own retries, as the client's configuration says) has the client's ``timeout`` in all, its
# deadline set as the try starts (the pool's ``urlopen``, which the library calls again for
# each retry, after its pause), so a server trickling its answer holds no call past its tries.
# A page of a list (``Kube.list``) may be tens of MiB, more than a slow link carries in that
# timeout: such a try's deadline moves on by a second for each ``PAGE_MIN_BYTES_PER_SECOND``
# bytes of the answer received, so a page that keeps coming at least that fast is read whole,
# up to ``PAGE_MAX_SECONDS`` from the try's start in all (then the list fails, saying so:
# one page no longer holds a try for the 512 s a 64 MiB page gets at that rate), while one
# trickled a byte at a time gains nothing.

_CALL = threading.local()


def _deadline() -> float | None:
    """The monotonic deadline of the call this thread is making (None: no deadline)."""
    value: float | None = getattr(_CALL, "deadline", None)
    return value


def _start_try() -> None:
    """A try of a call bounded per try (``_CALL.per_try`` seconds) starts: its deadline is
    that many seconds from now."""
    per_try: float | None = getattr(_CALL, "per_try", None)
    if per_try is not None:
        _CALL.deadline = time.monotonic() + per_try
        _CALL.page_ceiling = None  # of an earlier try's page


def _left(deadline: float) -> float:
    """Seconds left before ``deadline``; a timeout once none is."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out (the call's deadline passed)")
    return left


class _DeadlineReader(io.RawIOBase):
    """The socket's own reader (which keeps the socket open while the answer is read, after the
    connection lets go of it) with each receive waiting at most until the call's deadline (the
    socket's own timeout is per receive)."""

    def __init__(self, sock: Any, deadline: float, per_byte: float = 0.0,
                 ceiling: float | None = None) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline
        #: seconds the deadline moves on for each byte received (a page of a list: see above)
        self._per_byte = per_byte
        #: the latest the deadline moves on to (a page of a list: ``PAGE_MAX_SECONDS``)
        self._ceiling = deadline if ceiling is None else max(deadline, ceiling)
        #: whether the deadline can move on at all (not when the try's own is the later one)
        self._moves = per_byte > 0 and self._ceiling > deadline
        self._received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        try:
            self._sock.settimeout(_left(self._deadline))
            read: int | None = self._raw.readinto(buffer)
        except TimeoutError:
            # the ceiling, when the bytes received moved the deadline on to it (said by
            # ``_request``); else the try's own timeout, as any answer's
            if self._moves and self._deadline >= self._ceiling:
                _CALL.page_ceiling = self._received
            raise
        if read:
            self._received += read
            self._deadline = min(self._deadline + read * self._per_byte, self._ceiling)
        return read

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """What ``http.client.HTTPResponse`` is given to read from: the socket, its reads bounded by
    the deadline."""

    def __init__(self, sock: Any, deadline: float, per_byte: float = 0.0,
                 ceiling: float | None = None) -> None:
        self._sock = sock
        self._deadline = deadline
        self._per_byte = per_byte
        self._ceiling = ceiling

    def makefile(self, mode: str) -> io.BufferedReader:
        assert mode == "rb", mode
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline, self._per_byte,
                                                 self._ceiling))


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP response read, status line to the last byte, by the call's deadline (when the
    call has one)."""

    def __init__(self, sock: Any, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None) -> None:
        deadline = _deadline()
        # a page of a list read by the try (never a call with ``once``: its budget is fixed)
        per_try: float | None = getattr(_CALL, "per_try", None)
        page = per_try is not None and getattr(_CALL, "page", False)
        read: Any = sock if deadline is None else _DeadlineSocket(
            sock, deadline, 1.0 / PAGE_MIN_BYTES_PER_SECOND if page else 0.0,
            # the try's deadline was set ``per_try`` seconds after its start (``_start_try``)
            deadline - (per_try or 0.0) + PAGE_MAX_SECONDS if page else None)
        super().__init__(read, debuglevel, method, url)


class _DeadlineMixin:
    """Connects and sends by the call's deadline too (and the answer read so:
    :class:`_DeadlineResponse`).

    Connecting waits for what is left of the deadline, and so does what follows on the new
    socket before the request is sent: the TLS handshake (which the ``ssl`` module bounds as
    a whole by the socket's timeout), a proxy's tunnel. Without this the handshake would wait
    for the whole bound again however long connecting took (through a proxy slow to connect,
    to an API server that then trickles its handshake)."""

    sock: Any
    timeout: Any

    def _new_conn(self) -> Any:
        deadline = _deadline()
        if deadline is None:
            return super()._new_conn()  # type: ignore[misc]
        sock = self._connect_by(deadline)
        try:
            sock.settimeout(_left(deadline))
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect_by(self, deadline: float) -> Any:
        """A connection made by ``deadline``: a host name (not an IP) looked up by then
        (:func:`_resolve`), then each address it gives tried with what is left, as the HTTP
        library's own connecting does (a connection class that connects in a way of its own, a
        SOCKS proxy's, is left to it)."""
        host: str = getattr(self, "_dns_host", "")
        plain = getattr(super(), "_new_conn", None)
        if not host or is_ipaddress(host.strip("[]")) or getattr(
                plain, "__func__", None) is not HTTPConnection._new_conn:
            self.timeout = _left(deadline)
            return super()._new_conn()  # type: ignore[misc]
        try:
            found = _resolve(host.strip("[]"), int(getattr(self, "port", 0) or 0), deadline)
        except socket.gaierror as exc:
            raise NameResolutionError(host, self, exc) from exc  # type: ignore[arg-type]
        except UnicodeError:  # no lookup can encode it (a label over 63 characters): as the
            # HTTP library's own connecting says it, an error of its own, not the encoder's
            raise LocationParseError(f"'{host}', label empty or too long") from None
        except TimeoutError:
            raise ConnectTimeoutError(self, f"Connection to {host} timed out (looking up its "
                                      "name took past the call's deadline)") from None
        failed: Exception | None = None
        for address in dict.fromkeys(str(info[4][0]) for info in found):
            self._dns_host = address  # connect to it; TLS still checks the name
            try:
                self.timeout = _left(deadline)
                return super()._new_conn()  # type: ignore[misc]
            except (NewConnectionError, ConnectTimeoutError) as exc:
                failed = exc
            finally:
                self._dns_host = host
        raise failed or NameResolutionError(host, self, socket.gaierror(  # type: ignore[arg-type]
            f"{host} has no address"))

    def send(self, data: Any) -> None:
        deadline = _deadline()
        if deadline is not None and self.sock is not None:
            self.sock.settimeout(_left(deadline))
        super().send(data)  # type: ignore[misc]


class _Lookup:
    """One ``getaddrinfo`` under way in its daemon thread, and what it found or raised."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.found: list[Any] = []
        self.failed: list[BaseException] = []


#: the lookups under way, by (host, port, family): a call whose lookup of the same is already
#: under way waits on that one, so a name server that never answers holds one thread per name
#: (until the system resolver's own timeouts), not one per connection tried meanwhile
_LOOKUPS: dict[tuple[str, int, int], _Lookup] = {}
_LOOKUPS_LOCK = threading.Lock()


def _resolve(host: str, port: int, deadline: float) -> list[Any]:
    """``getaddrinfo`` of ``host``, waited for until ``deadline`` (``TimeoutError`` then: the
    lookup, left to the system resolver's own timeouts, ends in its daemon thread; a call that
    asks for the same meanwhile waits on it rather than starting another)."""
    family = allowed_gai_family()
    key = (host, port, int(family))
    with _LOOKUPS_LOCK:
        lookup = _LOOKUPS.get(key)
        start = lookup is None
        if lookup is None:
            lookup = _LOOKUPS[key] = _Lookup()

    def run(lookup: _Lookup) -> None:
        try:
            lookup.found.extend(socket.getaddrinfo(host, port, family, socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed to the callers
            lookup.failed.append(exc)
        finally:
            with _LOOKUPS_LOCK:
                if _LOOKUPS.get(key) is lookup:
                    del _LOOKUPS[key]  # done: the next call looks up afresh
            lookup.done.set()

    if start:
        threading.Thread(target=run, args=(lookup,), name="wingman-lookup",
                         daemon=True).start()
    if not lookup.done.wait(_left(deadline)):
        raise TimeoutError("timed out (looking up the host name)")
    if lookup.failed:
        raise lookup.failed[0]
    return list(lookup.found)


_DEADLINE_POOLS: dict[type[HTTPConnectionPool], type[HTTPConnectionPool]] = {}
_DEADLINE_POOLS_LOCK = threading.Lock()


def _urlopen_per_try(pool: type[HTTPConnectionPool]) -> Callable[..., Any]:
    """``pool``'s ``urlopen`` (one try; the library calls it again for each retry), starting
    the try's deadline first when the call is bounded per try."""
    def urlopen(self: HTTPConnectionPool, *args: Any, **kwargs: Any) -> Any:
        _start_try()
        return pool.urlopen(self, *args, **kwargs)
    return urlopen


def _deadline_pool(pool: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    """``pool`` with connections that keep a call's deadline: a subclass of it and of its own
    connection class, so whatever those do (a SOCKS proxy's connection, TLS, a proxy tunnel)
    is kept; ``pool`` itself when its connections read answers in a way of their own."""
    with _DEADLINE_POOLS_LOCK:
        made = _DEADLINE_POOLS.get(pool)
        if made is not None:
            return made
        connection: Any = getattr(pool, "ConnectionCls", None)
        if (isinstance(connection, type) and issubclass(connection, _DeadlineMixin)) or \
                not (isinstance(connection, type) and issubclass(connection, HTTPConnection)
                     and connection.response_class is http.client.HTTPResponse):
            made = pool
        else:
            bounded = type(f"Deadline{connection.__name__}", (_DeadlineMixin, connection),
                           {"response_class": _DeadlineResponse})
            made = type(f"Deadline{pool.__name__}", (pool,),
                        {"ConnectionCls": bounded, "urlopen": _urlopen_per_try(pool)})
        _DEADLINE_POOLS[pool] = made
        _DEADLINE_POOLS[made] = made
        return made


def _bound_calls(api_client: ApiConnection) -> None:
    """Make the client's connections keep a call's deadline (pools made from now on), each
    scheme's pool and connection classes kept underneath (those of a proxy's pool manager)."""
    manager = api_client.rest_client.pool_manager
    classes = getattr(manager, "pool_classes_by_scheme", None)
    if not isinstance(classes, Mapping):
        return
    bounded = {scheme: _deadline_pool(pool) for scheme, pool in classes.items()}
    if bounded == dict(classes):
        return
    manager.pool_classes_by_scheme = bounded
    manager.clear()  # a pool made before (none, normally) is made again with them


class TokenFile:
    """A bearer token kept in a file that its issuer replaces (a projected ServiceAccount
    token: the kubelet writes a new one at 80 % of the old one's life, by swapping the
    volume's ``..data`` link), read again before a call whenever the file changed.

    A change is seen from the file's identity, modification time and size (one ``stat``
    per call; the file is read only when these differ). A file that cannot be read, or reads
    empty, while being replaced leaves the last token in use: the API server, not this
    client, judges whether it is still valid."""

    #: far more than any ServiceAccount token (a JWT of a few KiB)
    MAX_BYTES = 64 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int, int] | None = None
        self._token = ""
        self._tokens: dict[str, None] = {}

    @staticmethod
    def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
        return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size

    def read(self) -> str:
        """The token in the file now (stripped); ClusterError when it cannot be read, or holds
        more than ``MAX_BYTES`` (read no further: a wrong path, a device that never ends)."""
        try:
            with self.path.open("rb") as f:
                stamp = self._stamp(os.fstat(f.fileno()))
                raw = f.read(self.MAX_BYTES + 1)
        except OSError as exc:
            raise ClusterError(f"cannot read the ServiceAccount token at {self.path}: "
                               f"{exc.strerror}", reason="NoCredentials") from None
        if len(raw) > self.MAX_BYTES:
            raise ClusterError(f"the ServiceAccount token file {self.path} is larger than "
                               f"{self.MAX_BYTES // 1024} KiB: not a ServiceAccount token; "
                               "mount the projected token there", reason="NoCredentials")
        token = raw.decode("utf-8", "replace").strip()
        with self._lock:
            if token:
                self._seen, self._token = stamp, token
                self._tokens[token] = None
        return token

    def current(self) -> str:
        """The token to call with now: the file's, read again if it changed since it was last
        read ('' before any token was read)."""
        try:
            stamp = self._stamp(os.stat(self.path))
        except OSError:
            return self._token  # being replaced, or gone: keep the last token
        if stamp != self._seen:
            try:
                self.read()
            except ClusterError:
                pass
        return self._token

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token read from the file so far, oldest first (to redact them all)."""
        with self._lock:
            return tuple(self._tokens)

    def refresh(self, configuration: k8s.Configuration) -> None:
        """The client's ``refresh_api_key_hook``: put the file's token in ``configuration``
        if the file changed since it was last read."""
        token = self.current()
        if token:
            configuration.api_key["authorization"] = token


class ApiConnection(Protocol):
    """What ``Kube`` uses of an authenticated connection: the kubernetes package's
    ``ApiClient``, or an ``Endpoint``'s connection (``Kube.from_endpoint``)."""

    configuration: Any
    rest_client: Any

    def update_params_for_auth(self, headers: Any, queries: Any, auth_settings: Any,
                               resource_path: Any, method: Any, body: Any,
                               request_auth: Any = None) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Endpoint:
    """How a ``Kube`` reaches the API server, for another process to call it the same way
    without the kubernetes package (the operator's writer process): the server's URL, the
    HTTP pool's settings as the kubernetes package made them from the kubeconfig or the pod's
    ServiceAccount (TLS verification, the CA, the client certificate's and key's files, the
    server name, socket options, retries, the pool's size) and the client's timeouts. It
    holds no credential: the bearer token goes separately, as the client would send it now
    (``Kube.authorization``, given to the other side's ``Kube.authorize``), so a token that
    is refreshed (a projected ServiceAccount token, an exec plugin's) is refreshed where it
    was loaded. Made by ``Kube.endpoint``; picklable."""

    host: str
    #: urllib3 ``PoolManager``'s keyword arguments, as (name, value) pairs
    pool: tuple[tuple[str, Any], ...]
    #: the configuration's ``retries`` (``Kube`` gives each call its own, from it)
    retries: Any
    timeout: float
    call_seconds: float | None
    impersonate: tuple[str, tuple[str, ...]] | None


class _EndpointSettings:
    """The part of the kubernetes package's ``Configuration`` that ``Kube`` reads."""

    def __init__(self, endpoint: Endpoint) -> None:
        pool = dict(endpoint.pool)
        self.host = endpoint.host
        self.retries = endpoint.retries
        self.cert_file = pool.get("cert_file")
        self.key_file = pool.get("key_file")


class _EndpointRest:
    def __init__(self, pool_manager: PoolManager) -> None:
        self.pool_manager = pool_manager


class _EndpointConnection:
    """An ``Endpoint``'s connection (an ``ApiConnection``): its own urllib3 pool, and the
    Authorization header it was last given."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.configuration = _EndpointSettings(endpoint)
        self.rest_client = _EndpointRest(PoolManager(**dict(endpoint.pool)))
        self.authorization: str | None = None

    def update_params_for_auth(self, headers: Any, queries: Any, auth_settings: Any,
                               resource_path: Any, method: Any, body: Any,
                               request_auth: Any = None) -> None:
        if self.authorization:
            headers["authorization"] = self.authorization

    def close(self) -> None:
        self.rest_client.pool_manager.clear()


class Kube:
    """JSON calls on one authenticated connection (thread-safe; blocking)."""

    def __init__(self, api_client: ApiConnection, timeout: float = 30.0, *,
                 impersonate: tuple[str, tuple[str, ...]] | None = None,
                 observer: Observer | None = None, call_seconds: float | None = None) -> None:
        self.api = api_client
        self.timeout = timeout
        self.impersonate = impersonate
        #: told of every call (the operator's metrics)
        self.observer = observer
        #: when set, every call is one try given up after that many seconds without an answer
        #: (as with ``once``), unless a call names its own ``once``: for a process whose every
        #: call must end within a deadline (the gateway)
        self.call_seconds = call_seconds
        _bound_calls(api_client)

    def as_user(self, user: str, groups: tuple[str, ...] = ()) -> Kube:
        """The same connection, acting as ``user`` in ``groups`` (Kubernetes impersonation:
        the caller needs ``impersonate`` on those users and groups, and the API server then
        authorizes and admits each call as that user)."""
        return Kube(self.api, self.timeout, impersonate=(user, tuple(groups)),
                    observer=self.observer, call_seconds=self.call_seconds)

    @classmethod
    def from_environment(cls, *, retries: bool = True, pool_size: int | None = None) -> Kube:
        """In-cluster credentials when in a pod, else KUBECONFIG / ~/.kube/config as kubectl
        reads them (several files: the first that sets ``current-context`` wins).

        ``retries=False``: a failed connection is reported at once instead of after the HTTP
        library's own silent retries (and a warning line each), for callers that retry
        themselves. ``pool_size``: connections kept to the API server (the library's default
        is five per core; match the number of threads that call at once)."""
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config

        configuration = k8s.Configuration()
        if not retries:
            configuration.retries = False
        if pool_size is not None:  # as many connections as threads that may use them at once
            configuration.connection_pool_maxsize = pool_size
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            try:
                # KUBECONFIG as it is now (the library reads it once, when imported), with
                # kubectl's current context
                active = load_kubeconfig(configuration)
            except (k8s_config.ConfigException, OSError) as exc:
                raise ClusterError(
                    f"no Kubernetes credentials: not in a pod and no usable kubeconfig ({exc}); "
                    "set KUBECONFIG", reason="NoCredentials") from None
            command = failed_exec_plugin(None, active, configuration)
            if command is not None:
                raise ClusterError(
                    f"no Kubernetes credentials: the kubeconfig's exec plugin {command!r} failed "
                    "or gave none (calls would go out anonymous); run 'kubectl version' to see "
                    "its error, and fix it", reason="NoCredentials") from None
        return cls(k8s.ApiClient(configuration))

    @classmethod
    def from_service_account(cls, server: str, sa_dir: Path) -> Kube:
        """A client that authenticates with the ServiceAccount token mounted in ``sa_dir``,
        and reads it again whenever the file changes (:class:`TokenFile`): the kubelet
        replaces a projected token before it expires, so a process that outlives its first
        token keeps calling with the current one."""
        token_file, ca_file = TokenFile(sa_dir / "token"), sa_dir / "ca.crt"
        token = token_file.read()
        if not token or not ca_file.is_file():
            raise ClusterError(f"the ServiceAccount directory {sa_dir} needs a non-empty token "
                               "and ca.crt", reason="NoCredentials")
        kube = cls.from_token(server, token, ca_file)
        kube.api.configuration.refresh_api_key_hook = token_file.refresh
        return kube

    @classmethod
    def from_token(cls, server: str, token: str, ca_file: Path) -> Kube:
        """A client that authenticates with the bearer ``token`` (held in memory only)."""
        from kubernetes import client as k8s

        configuration = k8s.Configuration(host=server)
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        configuration.ssl_ca_cert = str(ca_file)
        return cls(k8s.ApiClient(configuration))

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint) -> Kube:
        """A client that calls as the one ``endpoint`` describes (``Kube.endpoint``), without
        the kubernetes package; it sends no credential until ``authorize`` gives it one."""
        return cls(_EndpointConnection(endpoint), endpoint.timeout,
                   impersonate=endpoint.impersonate, call_seconds=endpoint.call_seconds)

    def endpoint(self, *, pool_size: int | None = None) -> Endpoint:
        """How this client reaches the API server (``Endpoint``), its pool ``pool_size``
        connections when given; ClusterError (reason ``NotPortable``) when it goes through
        a proxy or its settings cannot be handed to another process."""
        manager = self.api.rest_client.pool_manager
        if type(manager) is not PoolManager:  # a proxy's manager (HTTP or SOCKS)
            raise ClusterError(
                f"the API connection goes through a proxy ({type(manager).__name__}), which "
                "only this process can use", reason="NotPortable")
        pool = dict(getattr(manager, "connection_pool_kw", {}))
        if pool_size is not None:
            pool["maxsize"] = pool_size
        endpoint = Endpoint(host=str(self.api.configuration.host),
                            pool=tuple(sorted(pool.items())),
                            retries=self.api.configuration.retries, timeout=self.timeout,
                            call_seconds=self.call_seconds, impersonate=self.impersonate)
        try:
            pickle.dumps(endpoint)
        except Exception as exc:  # noqa: BLE001 - whatever cannot be sent, said so
            raise ClusterError(
                f"the API connection's settings cannot be handed to another process "
                f"({type(exc).__name__}: {exc})", reason="NotPortable") from None
        return endpoint

    def authorization(self) -> str | None:
        """The Authorization header the next call would send (the configuration's refresh
        hook run, as before a call), None when it sends none. Never logged."""
        headers: dict[str, Any] = {}
        self.api.update_params_for_auth(headers, [], ["BearerToken"], "/", "GET", None)
        value = headers.get("authorization")
        return value if isinstance(value, str) and value else None

    def authorize(self, authorization: str | None) -> None:
        """Send ``authorization`` as the Authorization header from now on (None: none); only
        for a client made by ``from_endpoint``, whose credential is loaded elsewhere."""
        if not isinstance(self.api, _EndpointConnection):
            raise TypeError("authorize: only a client made by Kube.from_endpoint takes its "
                            "credential from outside")
        self.api.authorization = authorization

    def close(self) -> None:
        self.api.close()

    def credential(self) -> str:
        """A digest of what authenticates the next call (the bearer token as the client would
        send it now, its refresh hook run; the client certificate and key files, as they are
        on disk; the user it impersonates): it changes when the identity calls are made with
        may have changed. Never the credential itself. When it cannot be told (a refresh that
        fails), a value no other call gets, so nothing keyed on it is ever reused."""
        import hashlib
        import uuid

        digest = hashlib.sha256()
        try:
            headers: dict[str, Any] = {}
            self.api.update_params_for_auth(headers, [], ["BearerToken"], "/", "GET", None)
            digest.update(repr(sorted(headers.items())).encode())
            configuration = self.api.configuration
            for path in (configuration.cert_file, configuration.key_file):
                stamp: tuple[int, ...] = ()
                if path:
                    st = os.stat(path)
                    stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                digest.update(repr((path, stamp)).encode())
            digest.update(repr(self.impersonate).encode())
        except Exception:  # noqa: BLE001 - unknown: matches nothing, not even itself
            return f"unknown-{uuid.uuid4().hex}"
        return digest.hexdigest()

    def drop_connections(self, keep: int = 0) -> int:
        """Close the connections kept open to the API server that no call is using now, all
        but the ``keep`` most recently used (calls in flight keep theirs; a later call opens a
        new one). Returns how many were closed.

        Each of urllib3's pools is a queue of idle connections and empty slots; the idle ones
        are swapped for empty slots in one step under the queue's own lock (the queue never
        looks empty and never holds more than its size, so no call opens a connection it
        could not put back), and closed after. Closing the pools instead would fail a call
        that had picked its pool a moment before."""
        manager = self.api.rest_client.pool_manager
        taken: list[Any] = []
        for key in list(manager.pools.keys()):
            pool = manager.pools.get(key)
            idle = getattr(pool, "pool", None)  # None: a pool closed meanwhile
            if idle is None:
                continue
            with idle.mutex:  # a LifoQueue: the most recently returned connection is last
                slots = idle.queue
                for i in range(len(slots) - 1, -1, -1):
                    if slots[i] is None:
                        continue
                    if keep > 0:
                        keep -= 1
                        continue
                    taken.append(slots[i])
                    slots[i] = None
        for conn in taken:
            try:
                conn.close()
            except Exception as exc:  # noqa: BLE001 - one socket that will not close is no
                log.debug("closing an idle API connection failed",  # reason to keep the rest
                          extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"})
        return len(taken)

    # -- raw ------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json",
                query: Mapping[str, str] | None = None,
                once: float | None = None, accept: str = JSON) -> dict[str, Any]:
        return self._observed(method, path, body, content_type=content_type, query=query,
                              once=once, accept=accept)[0]

    def request_dated(self, method: str, path: str, body: Any = None, *,
                      once: float | None = None) -> tuple[dict[str, Any], dt.datetime | None]:
        """:meth:`request`, and the API server's clock when it answered (its HTTP ``Date``, as
        :meth:`get_dated` gives it)."""
        return self._observed(method, path, body, content_type="application/json", query=None,
                              once=once)

    def _observed(self, method: str, path: str, body: Any, *, content_type: str,
                  query: Mapping[str, str] | None, once: float | None = None,
                  accept: str = JSON) -> tuple[dict[str, Any], dt.datetime | None]:
        """(decoded answer, the API server's clock when it answered) of a call, told to the
        observer."""
        if self.observer is None:
            return self._request(method, path, body, content_type=content_type, query=query,
                                 once=once, accept=accept)[1:]
        start, code = time.monotonic(), "error"
        try:
            status, out, date = self._request(method, path, body, content_type=content_type,
                                              query=query, once=once, accept=accept)
            code = str(status)
            return out, date
        except ApiError as exc:
            code = str(exc.status) if exc.status > 0 else "error"  # 0: no HTTP answer
            raise
        finally:
            try:
                self.observer(*call_labels(method, path), code, time.monotonic() - start)
            except Exception as exc:  # noqa: BLE001 - a metric never fails a call
                log.debug("the API call observer failed",
                          extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"})

    def _request(self, method: str, path: str, body: Any, *, content_type: str,
                 query: Mapping[str, str] | None, once: float | None = None,
                 accept: str = JSON) -> tuple[int, dict[str, Any], dt.datetime | None]:
        """(HTTP status, decoded answer, its ``Date``) of a call that succeeded; else
        ``ApiError`` (the server refused) or ``ClusterError`` (no answer).

        ``once`` (else ``call_seconds``, when set): one try, given up (no answer) when
        connecting, sending or the answer keeps it waiting longer than that many seconds in
        all, instead of the client's ``timeout`` per try and the HTTP library's own silent
        retries: for a caller that has a budget and retries itself, so a call held up counts
        as a failure that may pass, within the budget. A write given up so has no definite
        outcome: the API server may have applied it. Without ``once``, each try (connecting,
        sending, the whole answer read) is given up after the client's ``timeout`` seconds in
        all, the HTTP library retrying as the client's configuration says.

        Every call, with a deadline or without, is the same request: it reads at most
        ``MAX_ANSWER_BYTES`` (with a deadline) or ``MAX_UNBOUNDED_ANSWER_BYTES`` (without) of
        the answer, decoded (past it ``AnswerTooLarge``), follows no redirect (a 3xx is
        ``UnusableAnswer``), and a success whose body is neither empty nor a JSON object or
        array fails as ``UnusableAnswer``: both ``ClusterError``, no answer."""
        if once is None:
            once = self.call_seconds
        url = self.api.configuration.host + path
        if query:
            url += "?" + urlencode(query)
        headers = HTTPHeaderDict({"Accept": accept})
        if body is not None:
            headers["Content-Type"] = content_type
        if self.impersonate is not None:
            user, groups = self.impersonate
            headers["Impersonate-User"] = user
            for group in groups:  # one header per group: a comma would be part of the name
                headers.add("Impersonate-Group", group)
        auth: dict[str, Any] = {}
        self.api.update_params_for_auth(headers, auth, ["BearerToken"], path, method, body)
        _check_headers(headers)
        host = str(self.api.configuration.host)
        if once is not None:  # one try: connect within ``once``, then send and read by then
            timeout: HTTPTimeout | None = HTTPTimeout(total=once)
            options: dict[str, Any] = {"retries": False}
            cap = MAX_ANSWER_BYTES
        else:  # the client's timeout per try, and its own retries (its configuration's)
            timeout = HTTPTimeout(total=self.timeout) if self.timeout else None
            options = {"retries": _without_retry_after(self.api.configuration.retries)}
            cap = MAX_UNBOUNDED_ANSWER_BYTES
        try:
            _CALL.deadline = None if once is None else time.monotonic() + once
            _CALL.per_try = self.timeout if once is None and self.timeout else None
            _CALL.page_ceiling = None
            try:
                resp = self.api.rest_client.pool_manager.request(
                    method, url, headers=headers,
                    body=None if body is None else json.dumps(body).encode(),
                    timeout=timeout, redirect=False, preload_content=False, **options)
                data = _read_capped(resp, method, path, host, cap)
            finally:
                _CALL.deadline = _CALL.per_try = None
        except _NO_ANSWER as exc:
            received = getattr(_CALL, "page_ceiling", None)
            _CALL.page_ceiling = None
            if received is not None:
                raise ClusterError(
                    f"reading a page of a list from the API server at {shown_url(host)} "
                    f"({method} {path.split('?', 1)[0]}) took more than "
                    f"{PAGE_MAX_SECONDS:.0f} s in all, the most one page is waited for "
                    f"({received} bytes of it received): the link to the API server is too "
                    f"slow for a page this large, or what answers at its address sends it "
                    f"slowly; try again over a faster link, or delete the objects no longer "
                    f"needed so that the pages are smaller (finished requests and grants go "
                    f"after the policy's retentionSeconds: lower it to keep fewer)",
                    reason="Unreachable") from None
            raise ClusterError(f"cannot reach the API server at {shown_url(host)}: "
                               f"{unreachable_cause(exc)}", reason="Unreachable") from None
        if resp.status >= 400:
            error = _api_error(resp.status, data, resp.reason)
            error.retry_after = retry_after(resp.headers.get("Retry-After"))
            raise error
        where = (f"the API server at {shown_url(host)} answered "
                 f"{method} {path.split('?', 1)[0]} with {resp.status}")
        if not 200 <= resp.status < 300:  # a redirect (never followed), or a 1xx: no answer
            raise UnusableAnswer(
                f"{where} {resp.reason or ''}, which an API server never answers: "
                f"{_NO_USABLE_ANSWER}")
        date = server_date(resp.headers.get("Date"))
        if not data:
            return resp.status, {}, date
        _CALL.answer_bytes = len(data)  # what ``list`` counts of a page it keeps whole
        try:
            decoded = json.loads(data)
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested past reason
            raise UnusableAnswer(
                f"{where} and a body that is not JSON ({type(exc).__name__}, {len(data)} "
                f"bytes): {_NO_USABLE_ANSWER}") from None
        if not isinstance(decoded, (dict, list)):
            raise UnusableAnswer(
                f"{where} and JSON that is no object ({type(decoded).__name__}): "
                f"{_NO_USABLE_ANSWER}")
        return resp.status, decoded if isinstance(decoded, dict) else {"items": decoded}, date

    # -- verbs ----------------------------------------------------------------------------
    def get(self, res: Resource, namespace: str, name: str, *,
            once: float | None = None) -> dict[str, Any]:
        return self.request("GET", res.path(namespace, name), once=once)

    def get_dated(self, res: Resource, namespace: str, name: str, *,
                  once: float | None = None) -> tuple[dict[str, Any], dt.datetime | None]:
        """The object and the API server's clock when it answered: its HTTP ``Date``, whole
        seconds (None when the answer had none that parses). ``once``: one try, given up
        (``ClusterError`` ``Unreachable``) after that many seconds without an answer."""
        return self._observed("GET", res.path(namespace, name), None,
                              content_type="application/json", query=None, once=once)

    def get_or_none(self, res: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(res, namespace, name)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list(self, res: Resource, namespace: str, *, label_selector: str | None = None,
             field_selector: str | None = None, keep: Keep | None = None,
             page_size: int | None = None, metadata_only: bool = False
             ) -> list[dict[str, Any]]:
        """The collection's objects the selectors select (the API server filters), in the API
        server's order (by name); with ``keep``, what it keeps of each (filtered here, page by
        page: what it drops is never held; a caller that keeps little of large objects asks for
        smaller pages, ``page_size``, so that a page decoded is never much). With
        ``metadata_only``, each object's ``metadata`` alone (the API server's
        ``PartialObjectMetadata``: ``{"kind", "apiVersion", "metadata"}``), never its spec,
        status or data: for a caller that decides by labels, owners and deletion only.

        Read in pages of at most ``page_size`` (never more than ``LIST_PAGE_SIZE``) objects
        (``limit`` and ``continue``: one consistent snapshot, whatever changes meanwhile),
        each page one answer read to ``MAX_UNBOUNDED_ANSWER_BYTES``; what the list keeps is
        bounded by ``MAX_LIST_BYTES``
        (``ListTooLarge`` past it, saying what to do). A continue token the API server no
        longer honours (410 Gone: its history was compacted while the pages were read) starts
        the list again from its first page, at most ``LIST_RESTARTS`` times (then
        ``ListExpired``): never a list stitched from two snapshots."""
        if page_size is not None and page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        base = {"limit": str(min(page_size or LIST_PAGE_SIZE, LIST_PAGE_SIZE))}
        if label_selector:
            base["labelSelector"] = label_selector
        if field_selector:
            base["fieldSelector"] = field_selector
        path = res.path(namespace)
        for _ in range(LIST_RESTARTS + 1):
            kept: list[dict[str, Any]] = []
            held, token = 0, ""
            try:
                while True:
                    _CALL.answer_bytes = 0
                    _CALL.page = True  # its try's deadline allows a full page (see above)
                    try:
                        page = self.request("GET", path, query={**base, "continue": token}
                                            if token else base,
                                            accept=METADATA_LIST if metadata_only else JSON)
                    finally:
                        _CALL.page = False
                    items = page.get("items") or []
                    meta = page.get("metadata") or {}
                    if not isinstance(items, list) or not isinstance(meta, dict) or not all(
                            isinstance(item, dict) for item in items):
                        raise UnusableAnswer(
                            f"the API server answered a list of {res.plural} in {namespace} "
                            f"with a page that is no list of objects (its items or metadata "
                            f"are of another type): {_NO_USABLE_ANSWER}")
                    if keep is None:  # the page's answer, not each object encoded again
                        held += int(getattr(_CALL, "answer_bytes", 0) or 0)
                        if held > MAX_LIST_BYTES:
                            raise _list_too_large(res, namespace)
                        kept.extend(items)
                    else:
                        for item in items:
                            part = keep(item)
                            if part is None:
                                continue
                            held += len(json.dumps(part, separators=(",", ":")))
                            if held > MAX_LIST_BYTES:
                                raise _list_too_large(res, namespace)
                            kept.append(part)
                    token = str(meta.get("continue") or "")
                    if not token:
                        return kept
            except ApiError as exc:
                if exc.status != 410 or not token:
                    raise
                log.info("a list's continue token expired; listing again from the start",
                         extra={"resource": res.plural, "namespace": namespace})
        raise ListExpired(
            f"listing {res.plural} in {namespace} failed: {LIST_RESTARTS + 1} times the API "
            f"server compacted its history before the list's pages were read (410 Gone, an "
            f"expired continue token); try again, and if it keeps failing, delete the "
            f"{res.plural} no longer needed (finished ones go after the policy's "
            f"retentionSeconds: lower it to keep fewer) so the list is read sooner")

    def create(self, res: Resource, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", res.path(namespace), dict(body))

    def patch(self, res: Resource, namespace: str, name: str, body: Any, *,
              subresource: str | None = None, content_type: str = MERGE,
              once: float | None = None) -> dict[str, Any]:
        return self.request("PATCH", res.path(namespace, name, subresource), body,
                            content_type=content_type, once=once)

    def delete(self, res: Resource, namespace: str, name: str, *,
               propagation: str = "Background", uid: str | None = None) -> bool:
        """Delete (only the object with ``uid``, when given); False when it was already gone."""
        options: dict[str, Any] = {"propagationPolicy": propagation}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", res.path(namespace, name), options)
        except ApiError as exc:
            if exc.not_found or (uid and exc.conflict):
                return False
            raise
        return True


MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""The most a bounded call (``once``, ``call_seconds``) reads of an answer, decoded: far more
than any object such a call reads (a grant, an approval, a Secret, a Job, a ConfigMap; the API
server stores none larger than about 1.5 MiB), far less than a broken or hostile server could
send to exhaust the caller's memory."""
MAX_UNBOUNDED_ANSWER_BYTES = 64 * 1024 * 1024
"""The most a call without a deadline reads of an answer, decoded. Larger than
``MAX_ANSWER_BYTES`` because such calls read pages of lists (``Kube.list``): up to
``LIST_PAGE_SIZE`` ApprovalRequests, ExecutionGrants or gateway Jobs, a few KiB to a few tens
of KiB each (a grant keeps its command's output), so a page is a few MiB to a few tens of MiB;
past it the page fails with what to do (keep fewer of them). It bounds what one answer holds;
``MAX_LIST_BYTES`` bounds what a list keeps of all its pages."""
LIST_PAGE_SIZE = 500
"""The most objects one page of a list holds (the API server's ``limit``; its own default page
size for clients that chunk): a page of requests or grants is a few MiB, decoded (the objects
take about four to five times their JSON's size in memory) and dropped before the next page is
read."""
MAX_LIST_BYTES = 32 * 1024 * 1024
"""The most a list keeps of its objects, summed over its pages: the compact JSON of what its
``keep`` returns (what it drops counts for nothing), or, without ``keep``, each page's answer
as read (the API server's compact JSON of the same objects: not encoded again). Some 150 MiB
decoded, within the operator's default 512 MiB and the chat service's 256 MiB. The lists
that keep every object are the CLI's ``list``, the MCP server's ``list_requests
mine=false`` and the chat service's requests; the others keep only what they act on. Past it
``ListTooLarge`` says what to do: the ApprovalRequests and ExecutionGrants are kept for the
policy's ``retentionSeconds`` (a week by default, up to a year): a week at a thousand
requests a day is tens of MiB."""
PAGE_MIN_BYTES_PER_SECOND = 128 * 1024
"""How fast a page of a list read by a client with a timeout per try (the CLI, the MCP server,
the chat service, the Python client) must keep coming for its try to wait for all of it: each
such try's deadline moves on by a second for each this many bytes received (1 Mbit/s; a full
``MAX_UNBOUNDED_ANSWER_BYTES`` page would get 512 s more), up to ``PAGE_MAX_SECONDS`` in
all. A page trickled slower than that (a byte at a time) is given up at the try's timeout as
any answer is."""
PAGE_MAX_SECONDS = 120.0
"""The most one try of a page of a list (``PAGE_MIN_BYTES_PER_SECOND``) may take in all, from
its start to the page's last byte, however fast the page keeps coming: past it the list fails
(``ClusterError`` ``Unreachable``, saying so and what to do), so a server feeding a page at
that rate holds a try for two minutes at most, not the 512 s a page of
``MAX_UNBOUNDED_ANSWER_BYTES`` would take. A page of 500 requests or grants, a few MiB to a
few tens of MiB, needs a link of 1 to 2 Mbit/s or more to arrive within it."""
LIST_RESTARTS = 2
"""How often a list whose continue token expired (410 Gone) is started again before it fails
(``ListExpired``): the API server's history is compacted every five minutes, and a list read
page by page takes seconds."""
_READ_CHUNK = 64 * 1024
#: What the messages of an answer no API server gives say it means, and what to check.
_CHECK_ADDRESS = ("check that the address is the API server's (not a proxy or another "
                  "service) and that it is healthy")
_NO_USABLE_ANSWER = f"no answer it can use (a write's outcome is unknown); {_CHECK_ADDRESS}"


class UnusableAnswer(ClusterError):
    """The API server (or what answers at its address) answered a call in a way no API server
    does: a body that is not JSON (garbled, an HTML page of a proxy), or a status that is neither
    a success nor an error (a redirect, never followed). Treated as no answer: transient (a
    write's outcome is unknown; the call may be made again)."""

    reason = "UnusableAnswer"


class AnswerTooLarge(ClusterError):
    """An answer was larger than a call reads (``MAX_ANSWER_BYTES`` with a deadline,
    ``MAX_UNBOUNDED_ANSWER_BYTES`` without): read no further, and treated as no answer (a
    write's outcome is unknown; the call may be made again)."""

    reason = "AnswerTooLarge"


class ListTooLarge(ClusterError):
    """A list kept more than ``MAX_LIST_BYTES`` of objects: read no further."""

    reason = "ListTooLarge"


class ListExpired(ClusterError):
    """A list's continue token expired (410 Gone) every time it was read: the API server's
    history was compacted before its pages were read. Transient: the list may be read again."""

    reason = "Expired"


def _list_too_large(res: Resource, namespace: str) -> ListTooLarge:
    return ListTooLarge(
        f"the {res.plural} in {namespace} are more than Wingman holds in one list "
        f"({MAX_LIST_BYTES // (1024 * 1024)} MiB of objects): read no further; delete those "
        f"no longer needed (finished requests and grants, their Jobs, go after the policy's "
        f"retentionSeconds: lower it to keep fewer), or, if the namespace holds that many "
        f"legitimately, report it")


#: The longest the HTTP library sleeps on an answer's ``Retry-After`` before trying again (a
#: client that keeps its retries: the chat service, the CLI, the MCP server). The API server
#: asks for 1 s when past its max-in-flight limit, 5 s while it shuts down, and 1 to 32 s
#: under API Priority and Fairness (longer while it keeps rejecting): an answer asking for
#: more than 5 s is not tried again at all but handed back at once (its ``Retry-After``
#: the caller's to say or weigh); a server asking for hours is not slept on for hours.
RETRY_AFTER_SLEEP_MAX = 5.0


class _ShortRetryAfter(HTTPRetry):
    """urllib3's retries, waiting out an answer's ``Retry-After`` of at most
    ``RETRY_AFTER_SLEEP_MAX`` and trying again as before, but handing back at once an answer
    whose ``Retry-After`` asks for longer (never tried again sooner than the server asked),
    and handing back the last answer (not an error of its own) once its retries are spent,
    so the caller sees the server's status and ``Retry-After``.

    A ``Retry-After`` date past what the calendar holds (year 99999: urllib3 raises a bare
    ``ValueError`` or ``OverflowError`` on it) asks for no wait, as :func:`retry_after`
    reads it: the answer is the caller's, never an error that escapes it."""

    def _asked(self, response: Any) -> float | None:
        """The wait the answer asks for; None for none, or a date no calendar holds."""
        try:
            return super().get_retry_after(response)
        except (ValueError, OverflowError):  # an HTTP date no calendar holds
            return None

    def get_retry_after(self, response: Any) -> float | None:
        seconds = self._asked(response)
        return None if seconds is None else min(seconds, RETRY_AFTER_SLEEP_MAX)

    def increment(self, method: str | None = None, url: str | None = None,
                  response: Any = None, error: Exception | None = None,
                  _pool: Any = None, _stacktrace: TracebackType | None = None
                  ) -> _ShortRetryAfter:
        """The next try's retries; none when the answer asks for a wait past
        ``RETRY_AFTER_SLEEP_MAX``: urllib3 then hands that answer back as it is (its retries
        spent, ``raise_on_status`` off), without sleeping or asking again."""
        if response is not None and self.respect_retry_after_header:
            asked = self._asked(response)
            if asked is not None and asked > RETRY_AFTER_SLEEP_MAX:
                raise MaxRetryError(_pool, url or "", ResponseError(
                    f"the answer asks for {asked:.0f} s, past {RETRY_AFTER_SLEEP_MAX:.0f} s"))
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _without_retry_after(retries: Any) -> Any:
    """The client's own retries (``False``, a count: None is urllib3's default, 3, or a
    ``Retry`` of its own, its settings kept) for a call without a deadline, except that the
    HTTP library sleeps at most ``RETRY_AFTER_SLEEP_MAX`` on an answer's ``Retry-After`` (it
    would sleep as long as the answer asks: hours, if a server says so, three times) and then
    returns the answer as it is (an ``ApiError`` with its ``retry_after``), for the caller's
    own retry to weigh against its budget (:func:`retry_pause`)."""
    if retries is False:
        return False
    if isinstance(retries, HTTPRetry):  # every setting of its own, the sleep bounded
        short = _ShortRetryAfter.__new__(_ShortRetryAfter)
        short.__dict__.update(vars(retries))
        short.raise_on_status = False
        return short
    total = 3 if retries is None else retries
    return _ShortRetryAfter(total=total, raise_on_status=False)


def _too_large(method: str, path: str, host: str, cap: int) -> AnswerTooLarge:
    """The error of an answer past ``cap``: what it means, and what to do. A list that large
    may be legitimate (a collection grown past what Wingman reads in one answer); an object
    that large never is."""
    verb, resource = call_labels(method, path)
    said = (f"the API server at {shown_url(host)} answered {method} {path.split('?', 1)[0]} "
            f"with more than {cap // (1024 * 1024)} MiB")
    if verb == "list":
        return AnswerTooLarge(
            f"{said}, more than Wingman reads in one answer: read no further; a page of a list "
            f"holds at most {LIST_PAGE_SIZE} objects, so these {resource} are far larger than "
            f"Wingman's (a grant is at most a few tens of KiB): {_CHECK_ADDRESS}; if the "
            f"cluster holds objects that large legitimately, report it")
    landed = ("" if method in ("GET", "HEAD") else
              f"; the {method} may have landed: read the object before trying it again")
    return AnswerTooLarge(
        f"{said}, more than any object Wingman reads: no answer it can use, read no further"
        f"{landed}; {_CHECK_ADDRESS}")


def _read_capped(resp: Any, method: str, path: str, host: str,
                 cap: int = MAX_ANSWER_BYTES) -> bytes:
    """The body of ``resp`` (a urllib3 response not yet read), decoded (gzip...) and read in
    chunks, never more than ``cap`` bytes of it held: ``AnswerTooLarge`` as soon as it says (its
    ``Content-Length``) or turns out to be larger, the connection then closed rather than kept
    with an answer half read.

    Everything read here is the server's: an answer the HTTP library fails on in a way of its
    own (a ``ValueError`` on a chunk of negative size, which urllib3 does not check) is a
    broken answer, a ``ProtocolError`` as any other, never raised as a fault of the caller."""
    chunks: list[bytes] = []
    size = 0
    try:
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.strip().isascii() and \
                declared.strip().isdigit() and int(declared) > cap:
            raise _too_large(method, path, host, cap)
        try:
            for chunk in resp.stream(_READ_CHUNK):
                size += len(chunk)
                if size > cap:
                    raise _too_large(method, path, host, cap)
                chunks.append(chunk)
        except (AnswerTooLarge, MemoryError, *_NO_ANSWER):  # (out of memory: not the answer)
            raise
        except Exception as exc:  # noqa: BLE001 - the answer broke the HTTP library's reading
            raise ProtocolError("the answer's body could not be read "
                                f"({type(exc).__name__})") from None
    except BaseException:
        resp.close()  # what is left unread is never read as the next call's answer
        resp.release_conn()
        raise
    resp.release_conn()
    return b"".join(chunks)


#: What a call that got no answer fails with: the HTTP library's own errors (a refused or reset
#: connection, a timeout, a TLS failure, a broken answer: ``NewConnectionError``,
#: ``ProtocolError``, ``SSLError``, ``ReadTimeoutError``, ``DecodeError``..., and
#: ``MaxRetryError`` once its retries are spent), and what the socket, ``ssl`` and
#: ``http.client`` raise beneath it where it does not wrap them (``OSError``, ``ssl.SSLError``
#: and the call's deadline, ``TimeoutError``, among them; ``HTTPException``). Anything else
#: (a ``TypeError``, an ``AttributeError``...) is a fault of the caller or of this client, and
#: is raised as it is, never reported as an API server that cannot be reached.
_NO_ANSWER = (HTTPLibraryError, OSError, http.client.HTTPException)
#: A line break in a header value, as ``http.client`` refuses it (with the value in its
#: message: a token)
_BAD_HEADER_VALUE = re.compile(r"\n(?![ \t])|\r(?![ \t\n])")


def _check_headers(headers: Mapping[str, Any]) -> None:
    """ClusterError when a header the request would send cannot be sent: a line break in it, or
    a character outside Latin-1 (``http.client`` refuses the first with a ValueError that
    quotes the value, a bearer token, and fails on the second with a UnicodeEncodeError). The
    error names the header, never its value, and what to fix."""
    for name, value in headers.items():
        if not isinstance(value, str):
            continue
        try:
            value.encode("latin-1")
            bad = _BAD_HEADER_VALUE.search(value) is not None
        except UnicodeEncodeError:
            bad = True
        if not bad:
            continue
        if name.lower() == "authorization":
            raise ClusterError(
                "cannot send the request to the API server: the bearer token (the kubeconfig "
                "user's, its exec plugin's, or the ServiceAccount token file's) holds a line "
                "break or a character an HTTP header cannot carry: fix the credential",
                reason="InvalidCredentials")
        raise ClusterError(
            f"cannot send the request to the API server: its {name} header holds a line break "
            "or a character an HTTP header cannot carry: fix the name it carries",
            reason="InvalidRequest")


_CAUSE = re.compile(r"certificate verify failed: [^(')\"]+|\[Errno -?\d+\] [^(')\"]+"
                    r"|\[SSL[^\]]*\][^(')\"]*|(?:Read|Connect) timed out|timed out")


def unreachable_cause(exc: BaseException) -> str:
    """Why a call got no answer, in a few words: the HTTP library's error type, and the cause it
    wraps (a refused connection, a name that does not resolve, a certificate not trusted, a
    timeout); never the request, so never a header."""
    cause = getattr(exc, "reason", None)  # urllib3's MaxRetryError wraps what failed
    found = _CAUSE.search(str(cause if cause is not None else exc))
    return f"{type(exc).__name__} ({found.group().strip()})" if found else type(exc).__name__


def transient(exc: BaseException) -> bool:
    """Whether a call that failed with ``exc`` may succeed when made again a moment later: no
    answer from the API server (unreachable, reset, timed out), 429 (too many requests) or a
    server error (5xx). Anything else (403, 404, 409, 422...) is the server's answer to this
    very request, and asking again gets the same."""
    if isinstance(exc, ApiError):
        return exc.status == 0 or exc.status == 429 or exc.status >= 500
    return isinstance(exc, ClusterError)


# ---------------------------------------------------------------------------------------------
# Bounded retries
#
# A call made again while it fails in a way that may pass, within a budget of time: each try is
# one try (``once``) waiting at most ``call_seconds`` for its answer and never past what is left
# of the budget (but at least ``call_min_seconds``), the pauses between tries doubling from
# ``first_delay``, or as long as the answer's ``Retry-After`` asks; no new try when its pause
# would end past the budget, or after ``tries`` tries. The decisions are the pure functions
# below; :func:`call_retried` and :func:`call_retried_async` are the loops over them.


@dataclass(frozen=True)
class RetryPolicy:
    """How a call on the API server is made again (see :func:`retry_pause`)."""

    #: seconds from the start of the first try: a new try only when its pause ends within them
    budget: float
    #: the first pause between two tries, doubling after each
    first_delay: float
    #: how long one try may wait for the API server (``once``) ...
    call_seconds: float
    #: ... and never past what is left of the budget, but at least this
    call_min_seconds: float
    #: at most this many tries (None: as many as the budget allows)
    tries: int | None = None
    #: a Conflict (409) is made again too: for a conditional write whose call reads back what
    #: is stored (a write whose answer was lost, or a newer version to write over)
    conflicts: bool = False


def retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """Whether a call that failed with ``exc`` may be made again under ``policy`` (pure): a
    failure that may pass (:func:`transient`), or a Conflict when the policy says so."""
    if policy.conflicts and isinstance(exc, ApiError) and exc.conflict:
        return True
    return transient(exc)


def try_seconds(policy: RetryPolicy, left: float) -> float:
    """How long the next try may wait for its answer when ``left`` seconds of the budget are
    left (pure): ``call_seconds``, never more than is left, but at least ``call_min_seconds``."""
    return min(policy.call_seconds, max(policy.call_min_seconds, left))


def retry_pause(policy: RetryPolicy, exc: BaseException, tries: int, left: float
                ) -> float | None:
    """How long to wait before the call is made again, after its ``tries``-th try failed with
    ``exc`` and with ``left`` seconds of the budget left (pure); None: give up (raise ``exc``).

    The pause is the backoff's (``first_delay`` doubled after each failed try), or longer when
    the answer said so (``Retry-After``: API Priority and Fairness sends one with a 429, and is
    asked no sooner). Given up: a failure that is the server's answer to this very request
    (:func:`retryable`), the ``tries``-th try of a policy allowing that many, or a pause that
    would end past the budget."""
    if not retryable(exc, policy):
        return None
    if policy.tries is not None and tries >= policy.tries:
        return None
    pause = policy.first_delay * 2 ** (tries - 1)
    after = exc.retry_after if isinstance(exc, ApiError) else None
    if after is not None:
        pause = max(pause, after)
    return None if left < pause else pause


_T = TypeVar("_T")
#: Told of each failed try that is made again: the error, and the pause before the next try.
RetryObserver = Callable[[WingmanError, float], None]


#: Told that a call that would have been made again is not, as the process is stopping: the
#: last error; returns the error to raise instead of it.
StopObserver = Callable[[WingmanError], BaseException]


def call_retried(policy: RetryPolicy, call: Callable[[float], _T], *,
                 retrying: RetryObserver | None = None,
                 stop: Callable[[], bool] | None = None,
                 wait: Callable[[float], bool] | None = None,
                 stopped: StopObserver | None = None) -> _T:
    """``call(once)`` (``once``: how long its one try may wait, :func:`try_seconds`), made again
    as :func:`retry_pause` decides; then its last error. Blocking: between tries it sleeps the
    pause, or, with ``wait``, calls ``wait(pause)``, which waits up to the pause and says whether
    the process was asked to stop meanwhile (the gateway's ``TERMINATION.wait``: a SIGTERM ends
    the pause at once). A call that would be made again is not when ``stop()`` says the process
    is stopping, or ``wait`` that it was asked to during the pause: then ``stopped(error)`` is
    raised (the stop, not the API server, ends the call: the gateway's ``GatewayTerminating``),
    or the last error when no ``stopped`` is given."""
    give_up = time.monotonic() + policy.budget
    tries = 0
    while True:
        tries += 1
        try:
            return call(try_seconds(policy, give_up - time.monotonic()))
        except WingmanError as exc:
            pause = retry_pause(policy, exc, tries, give_up - time.monotonic())
            if pause is None:
                raise
            if stop is not None and stop():
                if stopped is None:
                    raise
                raise stopped(exc) from None
            if retrying is not None:
                retrying(exc, pause)
            if wait is not None:
                if wait(pause):
                    if stopped is None:
                        raise
                    raise stopped(exc) from None
                continue
        time.sleep(pause)


async def call_retried_async(policy: RetryPolicy, call: Callable[[float], Awaitable[_T]], *,
                             retrying: RetryObserver | None = None,
                             stop: Callable[[], bool] | None = None) -> _T:
    """:func:`call_retried` for a coroutine: the same tries and pauses, waiting without
    blocking the event loop."""
    import asyncio  # here: the operator's writer process imports this module, never asyncio

    give_up = time.monotonic() + policy.budget
    tries = 0
    while True:
        tries += 1
        try:
            return await call(try_seconds(policy, give_up - time.monotonic()))
        except WingmanError as exc:
            pause = retry_pause(policy, exc, tries, give_up - time.monotonic())
            if pause is None or (stop is not None and stop()):
                raise
            if retrying is not None:
                retrying(exc, pause)
        await asyncio.sleep(pause)


def retry_after(value: str | None) -> float | None:
    """An HTTP ``Retry-After`` header in seconds (pure): delay-seconds, or an HTTP date (from
    now, at least 0); None when absent or neither."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):  # ASCII digits only: str.isdigit takes "²" too
        return float(value)
    when = server_date(value)
    if when is None:
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def server_date(value: str | None) -> dt.datetime | None:
    """An HTTP ``Date`` header as an aware UTC time (None: absent or not a date)."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
        if parsed.tzinfo is None:  # "-0000": UTC by RFC 5322, no zone in Python's reading
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    except (TypeError, ValueError, IndexError, OverflowError):  # out of range: year 9999 -2359
        return None


def _api_error(status: int, body: Any, reason: str | None) -> ApiError:
    message, why = "", ""
    try:
        status_obj = json.loads(body) if body else {}
        message = str(status_obj.get("message", ""))
        why = str(status_obj.get("reason", ""))
    except (ValueError, TypeError, AttributeError, RecursionError):  # a body not a Status
        pass
    return ApiError(status, why or str(reason or ""),
                    f"API server answered {status} {why or reason or ''}: "
                    f"{message or 'no message'}".strip(), said=message)


def create_or_adopt(kube: Kube, res: Resource, namespace: str, body: Mapping[str, Any]
                    ) -> tuple[dict[str, Any], bool]:
    """Create ``body``; if it exists (409), return the existing object. (object, created)."""
    try:
        return kube.create(res, namespace, body), True
    except ApiError as exc:
        if not exc.conflict:
            raise
    name = body["metadata"]["name"]
    return kube.get(res, namespace, name), False



#: Which kubeconfig files: a str names several joined by ``os.pathsep``, as ``KUBECONFIG`` does;
#: a sequence names the files themselves (``--kubeconfig``: one file, never split, as kubectl
#: takes it); None: ``KUBECONFIG``, else ~/.kube/config.
KubeconfigFiles = str | Sequence[str] | None


def _kubeconfig_names(config_file: KubeconfigFiles) -> list[str]:
    """The kubeconfig files ``config_file`` names (see :data:`KubeconfigFiles`), in kubectl's
    order. Each is a path as it is, as kubectl's loader (client-go's clientcmd) takes it: a
    ``~`` in ``KUBECONFIG`` or ``--kubeconfig`` is not expanded (only the default is in the
    home directory), and a ``--kubeconfig`` holding ``os.pathsep`` is one file."""
    if config_file is None or isinstance(config_file, str):
        joined = os.environ.get("KUBECONFIG", "") if config_file is None else config_file
        names = joined.split(os.pathsep)
    else:
        names = list(config_file)
    # kubectl's default (not the kubernetes library's constant: that is KUBECONFIG as it was
    # when the library was first imported, which is now whenever a client is first made)
    return [name for name in names if name] or [os.path.expanduser("~/.kube/config")]


def _kubeconfig_files(config_file: KubeconfigFiles) -> list[tuple[Path, Any]]:
    """The existing files of :func:`_kubeconfig_names`, each with its YAML (None: the file is
    empty). A missing file is skipped, as kubectl does; one that is not YAML is a
    ConfigException naming it."""
    from kubernetes import config as k8s_config

    files = []
    for name in _kubeconfig_names(config_file):
        path = Path(name)
        if not path.is_file():
            continue
        try:
            files.append((path, yaml.safe_load(path.read_text(encoding="utf-8"))))
        except yaml.YAMLError as exc:
            raise k8s_config.ConfigException(
                f"cannot read the kubeconfig {path}: {_yaml_problem(exc)}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise k8s_config.ConfigException(
                f"cannot read the kubeconfig {path}: {exc}") from None
    return files


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong with a kubeconfig that is not YAML, and where, never quoting the file: the
    YAML library's own message shows the line it failed on, and that line may be a token or a
    key (``token: ...`` indented with a tab)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    # a scanner's or parser's problem quotes at most a character or the kind of YAML token it
    # found; others (a tag, an alias) may quote what the file holds
    problem = getattr(exc, "problem", None) if isinstance(
        exc, yaml.scanner.ScannerError | yaml.parser.ParserError) else None
    return f"not valid YAML{where}" + (f" ({problem})" if problem else "")


def _merged(config_file: KubeconfigFiles) -> Any:
    """The kubernetes library's merger (``KubeConfigMerger``) of the files of ``config_file``
    that exist and are not empty (kubectl skips both, while the library refuses an empty one),
    each given to it as one path: its own reading of a joined string would split a path
    holding ``os.pathsep`` and expand ``~``, which kubectl does not. ConfigException when no
    file is left."""
    from kubernetes import config as k8s_config

    merger = k8s_config.kube_config.KubeConfigMerger("")  # "": no file read yet
    for path, config in _kubeconfig_files(config_file):
        if config is not None:
            merger.paths.append(str(path))
            merger.load_config(str(path))
    merger.config_saved = copy.deepcopy(merger.config_files)
    if merger.config is None:
        raise k8s_config.ConfigException(
            f"no kubeconfig to use: {', '.join(_kubeconfig_names(config_file))} is missing or "
            "empty")
    return merger


def kubeconfig_contexts(config_file: KubeconfigFiles = None) -> list[dict[str, Any]]:
    """The contexts of the kubeconfig ``config_file`` (see :data:`KubeconfigFiles`), merged as
    kubectl merges them (the first file's entry of each name)."""
    from kubernetes import config as k8s_config

    loader = k8s_config.kube_config.KubeConfigLoader(config_dict=_merged(config_file).config,
                                                     config_base_path=None)
    return list(loader.list_contexts())


def current_context(config_file: KubeconfigFiles = None) -> tuple[str, Path] | None:
    """The current context kubectl uses with the kubeconfig ``config_file`` (see
    :data:`KubeconfigFiles`) and the file it comes from, or None when no file sets one.
    kubectl merges several files so that the first file that sets ``current-context`` wins;
    the kubernetes library's merger keeps the last one, so it is not asked. A missing file is
    skipped, as kubectl does; one that is not a YAML kubeconfig is a ConfigException naming
    it."""
    for path, config in _kubeconfig_files(config_file):
        context = config.get("current-context") if isinstance(config, dict) else None
        if isinstance(context, str) and context:
            return context, path
    return None


def load_kubeconfig(configuration: k8s.Configuration, config_file: KubeconfigFiles = None,
                    context: str | None = None, *, persist_config: bool = True
                    ) -> dict[str, Any] | None:
    """Load the kubeconfig ``config_file`` (see :data:`KubeconfigFiles`) into
    ``configuration`` as kubectl reads it, and return the entry of the context used
    (``{"name": ..., "context": {...}}``, for its namespace and for
    :func:`failed_exec_plugin`), None when there is none.

    The context is ``context`` when given, else kubectl's current context (the first file that
    sets one, see :func:`current_context`). Every cluster, context and user name is the first
    file's that defines it, as in kubectl (the library's merger does the same), and a relative
    path in a file (a certificate, a key) is relative to that file's directory. A kubeconfig
    that cannot be used raises ConfigException (or OSError); an empty file is skipped, as
    kubectl skips it."""
    from kubernetes import config as k8s_config

    names = _kubeconfig_names(config_file)
    if context is None:
        current = current_context(names)
        context = current[0] if current is not None else None
    merger = _merged(names)
    loader = k8s_config.kube_config.KubeConfigLoader(
        config_dict=merger.config, config_base_path=None, active_context=context,
        config_persister=merger.save_changes if persist_config else None)
    loader.load_and_set(configuration)
    entry = loader.current_context
    return entry if isinstance(entry, dict) else None


def failed_exec_plugin(config_file: KubeconfigFiles, context: Mapping[str, Any] | None,
                       configuration: k8s.Configuration) -> str | None:
    """The command of ``context``'s exec credential plugin when it gave no credentials to
    ``configuration`` (loaded from ``config_file``, None: ``KUBECONFIG`` or ~/.kube/config),
    else None. The kubernetes library only logs an exec plugin's failure and goes on without
    credentials, so every call would go out as ``system:anonymous``."""
    keys = configuration.api_key  # the library keeps a kubeconfig's token under BearerToken
    if keys.get("authorization") or keys.get("BearerToken") or configuration.cert_file:
        return None
    user = ((context or {}).get("context") or {}).get("user")
    try:
        merged = _merged(config_file)
        users = merged.config.value.get("users") or []
    except Exception:  # noqa: BLE001 - the library read it just before; nothing more to say
        return None
    for node in users:
        entry = getattr(node, "value", node)
        if isinstance(entry, dict) and entry.get("name") == user:
            plugin = (getattr(entry.get("user"), "value", entry.get("user")) or {}).get("exec")
            plugin = getattr(plugin, "value", plugin)
            if isinstance(plugin, dict):
                return str(plugin.get("command", ""))
    return None

__all__ = ["APPROVALS", "CONFIGMAPS", "GRANTS", "JOBS", "JSON", "JSON_PATCH", "LEASES",
           "LIST_PAGE_SIZE", "LIST_RESTARTS", "MAX_ANSWER_BYTES", "MAX_LIST_BYTES",
           "MAX_UNBOUNDED_ANSWER_BYTES", "MERGE", "METADATA_LIST", "PAGE_MIN_BYTES_PER_SECOND",
           "PODS", "SECRETS", "AnswerTooLarge", "ApiConnection", "ApiError", "Endpoint", "Keep",
           "Kube", "ListExpired", "ListTooLarge", "Observer", "Resource",
           "RetryObserver", "RetryPolicy", "StopObserver", "TokenFile", "UnusableAnswer",
           "call_labels", "call_retried", "call_retried_async", "create_or_adopt",
           "current_context", "failed_exec_plugin", "kubeconfig_contexts", "load_kubeconfig",
           "retry_pause", "retryable", "server_date", "transient", "try_seconds"]

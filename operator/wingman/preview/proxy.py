"""The preview's API proxy: every write kubectl makes becomes a server-side dry run, recorded.

kubectl in a preview talks to this proxy (HTTPS on 127.0.0.1 with a certificate made for the
run, authenticated with a random per-run bearer token: client-go sends no credentials over
plain HTTP) instead of the API server. The proxy forwards each call with the preview
ServiceAccount's token, and:

- reads (``GET``, ``HEAD``) pass through, except watches (refused: nothing in a preview waits);
- every write (``POST``, ``PUT``, ``PATCH``, ``DELETE``) gets ``dryRun=All`` (any other
  ``dryRun`` the caller sent is replaced; a ``DELETE``'s options body, which the API server
  reads instead of the query, gets ``"dryRun": ["All"]`` and must be JSON), whatever kubectl
  was told: the proxy is the runner's own guarantee, and the preview identity's admission
  policy refuses a write without it as the backstop;
- before a write to a named object it reads the object (and the parent object of a
  subresource, such as the Deployment of a ``deployments/scale``), so the recorded exchange
  holds the live object before the change, its identity and version, and the dry run's result;
- calls passed on to a pod, service or node (the ``proxy``, ``exec``, ``attach`` and
  ``portforward`` subresources, reads too), connection upgrades, writes that are not to a
  resource path, deletes of whole collections, calls asking to impersonate someone
  (``Impersonate-*`` headers) and more than :data:`MAX_WRITES` writes are refused with a
  Kubernetes ``Status`` kubectl prints.

Bodies are bounded (:data:`MAX_REQUEST_BYTES` in, :data:`MAX_RESPONSE_BYTES` out); a request
whose ``Content-Length`` is not one decimal number (negative, not a number, given twice) gets
a ``400`` and the connection is closed. The proxy holds the ServiceAccount token (read again
from its file when the kubelet renews it); kubectl never sees it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import http.client
import ipaddress
import json
import os
import re
import secrets
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

MAX_REQUEST_BYTES = 3 * 1024 * 1024
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
MAX_WRITES = 50
UPSTREAM_TIMEOUT = 30.0
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_CONNECT_SUBRESOURCES = frozenset({"proxy", "exec", "attach", "portforward"})
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ApiPath:
    """A resource path: ``/apis/<g>/<v>[/namespaces/<ns>]/<resource>[/<name>[/<sub>]]``."""

    group: str
    version: str
    resource: str
    namespace: str = ""
    name: str = ""
    subresource: str = ""

    @classmethod
    def parse(cls, path: str) -> ApiPath | None:
        parts = [unquote(p) for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and not (
                group == "" and len(rest) == 3 and rest[2] in _NAMESPACE_SUBRESOURCES):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        resource = rest[0]
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        return cls(group, version, resource, namespace, name, sub)

    def object_path(self, *, subresource: bool = True) -> str:
        group, version = quote(self.group, safe=""), quote(self.version, safe="")
        base = f"/apis/{group}/{version}" if self.group else f"/api/{version}"
        where = f"/namespaces/{quote(self.namespace, safe='')}" if self.namespace else ""
        out = f"{base}{where}/{quote(self.resource, safe='')}"
        if self.name:
            out += f"/{quote(self.name, safe='')}"
            if subresource and self.subresource:
                out += f"/{quote(self.subresource, safe='')}"
        return out

    def named(self, name: str) -> ApiPath:
        return ApiPath(self.group, self.version, self.resource, self.namespace, name, "")


@dataclass
class Exchange:
    """One call kubectl made through the proxy, as far as a preview needs it."""

    method: str
    path: str
    status: int = 0
    api: ApiPath | None = None
    refused: str = ""  # why the proxy refused it ('' when forwarded)
    message: str = ""  # the API server's Status message on an error
    reason: str = ""  # the API server's Status reason on an error
    before: dict[str, Any] | None = None  # the object (or subresource) before the write
    parent: dict[str, Any] | None = None  # the object a subresource belongs to, before
    after: dict[str, Any] | None = None  # the dry run's result
    exists: bool = True  # False when the written object did not exist before (a create)

    @property
    def write(self) -> bool:
        return self.method in WRITE_METHODS

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.refused


def _status_body(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": message, "reason": reason,
                       "code": code}).encode()


def _json(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _connects(path: str) -> bool:
    """Whether the call is passed on to a pod, service or node (``proxy``, ``exec``,
    ``attach``, ``portforward``), which knows nothing of dryRun: ``<resource>/<name>/<sub>``
    after the group, version and namespace."""
    parts = [unquote(p) for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return False
    if len(rest) > 2 and rest[0] == "namespaces":
        rest = rest[2:]
    return len(rest) > 2 and rest[2] in _CONNECT_SUBRESOURCES


def _is_watch(path: str, query: list[tuple[str, str]]) -> bool:
    """Whether the API server serves this read as a watch: a ``watch`` parameter whose value
    is anything but ``0`` or ``false`` (an empty one included), or the legacy
    ``/api/<v>/watch/...`` and ``/apis/<g>/<v>/watch/...`` paths."""
    if any(k == "watch" and v != "0" and v.lower() != "false" for k, v in query):
        return True
    parts = [unquote(p) for p in path.split("/") if p]
    return (len(parts) > 2 and parts[0] == "api" and parts[2] == "watch") or (
        len(parts) > 3 and parts[0] == "apis" and parts[3] == "watch")


class TokenSource(Protocol):
    """Where the proxy gets the token to call the API server with
    (:class:`wingman.kube.TokenFile`: the file the kubelet renews it in)."""

    def current(self) -> str:
        """The token to call with now."""
        ...

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token it has given out so far."""
        ...


@dataclass
class _Upstream:
    host: str
    port: int
    context: ssl.SSLContext
    token: TokenSource | str = field(repr=False)

    def call(self, method: str, target: str, body: bytes | None, headers: Mapping[str, str]
             ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                           timeout=UPSTREAM_TIMEOUT)
        try:
            sent = {k: v for k, v in headers.items()
                    if k.lower() not in ("authorization", "host", "accept-encoding",
                                         "connection", "content-length", "upgrade",
                                         "proxy-connection", "te", "transfer-encoding")}
            token = self.token if isinstance(self.token, str) else self.token.current()
            sent["Authorization"] = f"Bearer {token}"
            sent["Accept-Encoding"] = "identity"
            if body is not None:
                sent["Content-Length"] = str(len(body))
            conn.request(method, target, body=body, headers=sent)
            resp = conn.getresponse()
            data = resp.read(MAX_RESPONSE_BYTES + 1)
            if len(data) > MAX_RESPONSE_BYTES:
                return 502, {"Content-Type": "application/json"}, _status_body(
                    502, "ResponseTooLarge",
                    f"the API server's answer is larger than {MAX_RESPONSE_BYTES} bytes; the "
                    "preview does not read it")
            keep = {k: v for k, v in resp.getheaders()
                    if k.lower() in ("content-type", "warning", "audit-id")}
            return resp.status, keep, data
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, dict[str, Any] | None]:
        status, _, data = self.call("GET", path, None, {"Accept": "application/json"})
        return status, _json(data) if status == 200 else None


def self_signed(directory: Path) -> tuple[bytes, Path, Path]:
    """A certificate for 127.0.0.1 valid for a day, and its key, written 0600 into
    ``directory``: (certificate PEM, certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wingman-preview-proxy")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    paths = []
    for filename, data in (("proxy.crt", pem), ("proxy.key", key_pem)):
        path = directory / filename
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        paths.append(path)
    return pem, paths[0], paths[1]


class DryRunProxy:
    """The proxy for one preview run; use as a context manager, ``begin`` per command.

    ``token`` is the ServiceAccount token to call the API server with, or the file the kubelet
    keeps it in (:class:`wingman.kube.TokenFile`), read again whenever it changes: a preview
    that outlives its first token (the kubelet renews it at 80 % of its 600 s) keeps calling
    with the current one. ``workdir`` receives the proxy's certificate and key
    (``certificate`` is the PEM kubectl must trust)."""

    def __init__(self, server: str, ca_file: Path, token: TokenSource | str,
                 workdir: Path) -> None:
        split = urlsplit(server)
        if split.scheme != "https" or not split.hostname:
            raise ValueError(f"the API server must be an https:// URL, got {server!r}")
        context = ssl.create_default_context(cafile=str(ca_file))
        self._upstream = _Upstream(split.hostname, split.port or 443, context, token)
        self.nonce = secrets.token_urlsafe(32)
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self._writes = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.certificate, cert_file, key_file = self_signed(workdir)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self._tls.load_cert_chain(cert_file, key_file)

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> DryRunProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="preview-proxy",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def tokens(self) -> tuple[str, ...]:
        """Every ServiceAccount token the proxy has held (a renewed token's predecessors too):
        what the preview redacts from anything it reports."""
        token = self._upstream.token
        return (token,) if isinstance(token, str) else token.tokens

    @property
    def url(self) -> str:
        assert self._server is not None, "the proxy is not running"
        host, port = self._server.server_address[:2]
        return f"https://{host!s}:{port}"

    # -- records ----------------------------------------------------------------------------
    def begin(self) -> None:
        """Start recording for the next command."""
        with self._lock:
            self._exchanges = []
            self._writes = 0

    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self._exchanges.append(exchange)

    def _count_write(self) -> bool:
        with self._lock:
            self._writes += 1
            return self._writes <= MAX_WRITES

    # -- the work ---------------------------------------------------------------------------
    def authorized(self, header: str | None) -> bool:
        expected = f"Bearer {self.nonce}"
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
               ) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(target)
        query = parse_qsl(split.query, keep_blank_values=True)
        api = ApiPath.parse(split.path)
        if any(k.lower().startswith("impersonate-") for k in headers):
            return self._refuse(Exchange(method, split.path, api=api),
                                "a preview acts as its own identity, never impersonating another")
        if _connects(split.path):
            return self._refuse(Exchange(method, split.path, api=api),
                                "the call reaches a pod, service or node (proxy, exec, attach, "
                                "port-forward), which has no dry run")
        if method in ("GET", "HEAD"):
            if _is_watch(split.path, query):
                return self._refuse(Exchange(method, split.path, api=api),
                                    "a preview does not watch; the command waits for something "
                                    "a dry run never does")
            status, keep, data = self._upstream.call(method, target, None, headers)
            if status >= 400 and api is not None:
                err = _json(data) or {}
                self._record(Exchange(method, split.path, status, api, message=str(
                    err.get("message") or ""), reason=str(err.get("reason") or "")))
            return status, keep, data
        if method not in WRITE_METHODS:
            return 405, {"Content-Type": "application/json"}, _status_body(
                405, "MethodNotAllowed", f"{method} is not allowed in a preview")
        exchange = Exchange(method, split.path, api=api)
        upgrade = {k.lower(): v.lower() for k, v in headers.items()}
        if "upgrade" in upgrade or "upgrade" in upgrade.get("connection", ""):
            return self._refuse(exchange, "a preview does not open streams (exec, attach, "
                                "port-forward)")
        if api is None:
            return self._refuse(exchange, f"a preview writes only to resource paths, not "
                                f"{split.path}")
        if method == "DELETE" and not api.name:
            return self._refuse(exchange, "deleting a whole collection cannot be previewed "
                                "object by object; name the objects")
        if not self._count_write():
            return self._refuse(exchange, f"the command makes more than {MAX_WRITES} writes; "
                                "a preview records at most that many")
        if api.name:
            if not (method == "POST" and api.subresource):  # e.g. eviction: no GET
                _, exchange.before = self._upstream.get(api.object_path())
            if api.subresource:
                _, exchange.parent = self._upstream.get(api.object_path(subresource=False))
            else:
                exchange.parent = exchange.before
        sent = dict(headers)
        if method == "DELETE" and body:
            # the API server reads a DELETE's options from its body when there is one and then
            # ignores the query: the body must say dryRun too
            options = _json(body)
            if options is None:
                return self._refuse(exchange, "a delete's options must be a JSON object")
            options = {k: v for k, v in options.items() if k.lower() != "dryrun"}
            options["dryRun"] = ["All"]
            body = json.dumps(options).encode()
            sent = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            sent["Content-Type"] = "application/json"
        dry = [(k, v) for k, v in query if k != "dryRun"] + [("dryRun", "All")]
        forwarded = api.object_path() + "?" + urlencode(dry)
        sent["Accept"] = "application/json"
        status, keep, data = self._upstream.call(method, forwarded, body, sent)
        exchange.status = status
        result = _json(data)
        if 200 <= status < 300:
            exchange.after = result
            if method == "POST" and not api.name and result is not None:
                name = str((result.get("metadata") or {}).get("name") or "")
                if name:
                    exchange.api = api.named(name)
                    code, existing = self._upstream.get(exchange.api.object_path())
                    exchange.exists = code == 200
                    exchange.before = exchange.parent = existing
        else:
            exchange.message = str((result or {}).get("message") or "")
            exchange.reason = str((result or {}).get("reason") or "")
        self._record(exchange)
        return status, keep, data

    def _refuse(self, exchange: Exchange, why: str) -> tuple[int, dict[str, str], bytes]:
        exchange.status, exchange.refused, exchange.message = 403, why, why
        self._record(exchange)
        return 403, {"Content-Type": "application/json"}, _status_body(403, "Forbidden",
                                                                       f"preview: {why}")


class _Handler(BaseHTTPRequestHandler):
    owner: DryRunProxy
    protocol_version = "HTTP/1.1"
    server_version = "wingman-preview"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return  # request lines could carry object names; the runner logs what it needs

    def _send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self) -> None:
        if not self.owner.authorized(self.headers.get("Authorization")):
            self._send(401, {"Content-Type": "application/json"},
                       _status_body(401, "Unauthorized", "preview proxy: unknown caller"))
            return
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._send(411, {"Content-Type": "application/json"},
                       _status_body(411, "LengthRequired", "preview proxy: send a length"))
            return
        lengths = [v.strip() for v in self.headers.get_all("Content-Length") or []]
        if len(lengths) > 1 or (lengths and _DIGITS.fullmatch(lengths[0]) is None):
            # the body's end is unknown: answer, and read nothing more from this connection
            self.close_connection = True
            self._send(400, {"Content-Type": "application/json"}, _status_body(
                400, "BadRequest", "preview proxy: the Content-Length header must appear at "
                "most once, as a decimal number of bytes"))
            return
        digits = lengths[0].lstrip("0") if lengths else ""
        if len(digits) > len(str(MAX_REQUEST_BYTES)) or int(digits or 0) > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._send(413, {"Content-Type": "application/json"}, _status_body(
                413, "RequestEntityTooLarge", "preview proxy: request body too large"))
            return
        length = int(digits or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()}
        try:
            status, keep, data = self.owner.handle(self.command, self.path, headers, body)
        except (OSError, http.client.HTTPException) as exc:
            status, keep, data = 502, {"Content-Type": "application/json"}, _status_body(
                502, "BadGateway", f"preview proxy: the API server is unreachable "
                                   f"({type(exc).__name__})")
        self._send(status, keep, data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def do_OPTIONS(self) -> None:
        self._send(405, {"Content-Type": "application/json"},
                   _status_body(405, "MethodNotAllowed", "preview proxy: not allowed"))


__all__ = ["MAX_WRITES", "ApiPath", "DryRunProxy", "Exchange", "TokenSource"]

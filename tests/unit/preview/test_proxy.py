"""The preview proxy's own decisions, made before anything reaches the API server."""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.localserver import QuietHandler
from support.tls import serving_tls
from wingman.kube import TokenFile
from wingman.preview.proxy import ApiPath, DryRunProxy, self_signed


@pytest.fixture
def proxy(tmp_path: Path) -> DryRunProxy:
    ca = tmp_path / "ca"
    ca.mkdir()
    _, cert, _ = self_signed(ca)
    # nothing listens on port 1: a call that reached upstream fails with OSError
    return DryRunProxy("https://127.0.0.1:1", cert, "sa-token", tmp_path)


@pytest.mark.parametrize("target", [
    "/api/v1/namespaces/apps/pods?watch=true",
    "/api/v1/namespaces/apps/pods?watch=1",
    "/api/v1/namespaces/apps/pods?watch=",  # the API server reads any value but 0/false as true
    "/api/v1/namespaces/apps/pods?watch=yes",
    "/api/v1/namespaces/apps/pods?watch=0&watch=TRUE",
    "/api/v1/namespaces/apps/pods?wat%63h=t",
    "/api/v1/watch/namespaces/apps/pods",  # the legacy watch path
    "/apis/apps/v1/watch/namespaces/apps/deployments/web",
])
def test_a_watch_in_any_spelling_is_refused(proxy: DryRunProxy, target: str) -> None:
    status, _, body = proxy.handle("GET", target, {}, None)
    assert status == 403
    assert "does not watch" in json.loads(body)["message"]
    (exchange,) = proxy.exchanges()
    assert exchange.refused


@pytest.mark.parametrize("target", [
    "/api/v1/namespaces/apps/pods?watch=false",
    "/api/v1/namespaces/apps/pods?watch=0",
    "/api/v1/namespaces/watch/pods",  # a namespace called watch
])
def test_a_read_that_is_not_a_watch_goes_to_the_api_server(proxy: DryRunProxy,
                                                            target: str) -> None:
    with pytest.raises(OSError):
        proxy.handle("GET", target, {}, None)
    assert proxy.exchanges() == []


@pytest.mark.parametrize("path", [
    "/api/v1/namespaces/apps/pods/web/status%3Fx%3D",
    "/apis/apps/v1/namespaces/apps/deployments/web/scale%23",
    "/apis/apps%3Fx%3D/v1/namespaces/apps/deployments/web/scale",
    "/api/v1%3Fx%3D/namespaces/apps/pods/web/eviction",
])
def test_each_part_of_a_path_stays_one_segment_before_the_dry_run_query(path: str) -> None:
    # the proxy appends ?dryRun=All to this path: an encoded '?' or '#' in any part of it
    # must not start the query (or a fragment) before it
    api = ApiPath.parse(path)
    assert api is not None and api.subresource
    forwarded = api.object_path()
    assert "?" not in forwarded and "#" not in forwarded
    assert ApiPath.parse(forwarded) == api


@pytest.mark.parametrize(("method", "target"), [
    ("POST", "/api/v1/namespaces/apps/pods/web/proxy"),
    ("DELETE", "/api/v1/namespaces/apps/services/web:80/proxy"),
    ("POST", "/api/v1/namespaces/apps/pods/web/exec?command=sh"),
    ("POST", "/api/v1/namespaces/apps/pods/web/portforward"),
    ("GET", "/api/v1/namespaces/apps/services/web/proxy/admin/reset"),
    ("GET", "/api/v1/nodes/node-1/proxy/configz"),
    ("GET", "/api/v1/namespaces/apps/pods/web/attach?stdin=true"),
])
def test_calls_that_reach_a_pod_service_or_node_are_refused(proxy: DryRunProxy, method: str,
                                                           target: str) -> None:
    # proxy, exec, attach and portforward pass the request on to the workload itself, which
    # knows nothing of dryRun
    status, _, body = proxy.handle(method, target, {}, b"{}" if method != "GET" else None)
    assert status == 403
    assert "reaches" in json.loads(body)["message"]
    (exchange,) = proxy.exchanges()
    assert exchange.refused


@pytest.mark.parametrize("method", ["GET", "PATCH"])
@pytest.mark.parametrize("header", ["Impersonate-User", "impersonate-group",
                                    "Impersonate-Extra-scopes", "Impersonate-Uid"])
def test_a_call_that_asks_to_act_as_someone_else_is_refused(proxy: DryRunProxy, method: str,
                                                            header: str) -> None:
    # the proxy calls with its own identity's token; impersonation would make it another's
    status, _, body = proxy.handle(method, "/apis/apps/v1/namespaces/apps/deployments/web",
                                   {header: "system:admin"}, None if method == "GET" else b"{}")
    assert status == 403
    assert "impersonat" in json.loads(body)["message"]


def _raw(proxy: DryRunProxy, head: str, body: bytes = b"") -> tuple[int, dict[str, object]]:
    """Send one request as raw bytes (headers no HTTP client would write); the answer's status
    and JSON body."""
    host, port = proxy.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cadata=proxy.certificate.decode())
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as conn:
        conn.sendall(f"POST /api/v1/namespaces/apps/configmaps HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {proxy.nonce}\r\n{head}\r\n".encode() + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize(("head", "status"), [
    ("Content-Length: -5\r\n", 400),
    ("Content-Length: abc\r\n", 400),
    ("Content-Length: 1_0\r\n", 400),  # Python's int() would read 10
    ("Content-Length: +3\r\n", 400),
    ("Content-Length: 5\r\nContent-Length: 7\r\n", 400),
    ("Content-Length: 5\r\nContent-Length: 5\r\n", 400),
    ("Content-Length: " + "9" * 5000 + "\r\n", 413),  # past int()'s digit limit
    ("Content-Length: 99999999999999999999999\r\n", 413),
])
def test_an_invalid_content_length_is_a_clean_refusal(proxy: DryRunProxy, head: str,
                                                       status: int,
                                                       capfd: pytest.CaptureFixture[str]
                                                       ) -> None:
    with proxy:
        got, body = _raw(proxy, head + "Connection: close\r\n")
    assert got == status and body["code"] == status
    assert "Content-Length" in str(body["message"]) or "too large" in str(body["message"])
    assert proxy.exchanges() == []  # nothing was forwarded
    assert "Traceback" not in capfd.readouterr().err


def test_a_valid_content_length_reaches_the_api_server(proxy: DryRunProxy) -> None:
    with proxy:  # the API server (port 1) is unreachable: 502, not 400
        got, body = _raw(proxy, "Content-Length: 0002\r\nConnection: close\r\n", b"{}")
    assert got == 502 and body["reason"] == "BadGateway"



@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A real HTTPS server standing in for the API server: (its URL, its CA file, the
    Authorization header of every call it got)."""
    seen: list[str] = []
    directory = tmp_path / "upstream"
    directory.mkdir()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization") or "")
            self.send_json(200, {"kind": "PodList", "items": []})

    with serving_tls(Handler, directory) as (url, ca):
        ca_file = directory / "ca.crt"
        ca_file.write_bytes(ca.cert_pem)
        yield url, ca_file, seen


def _renew(token_file: Path, token: str) -> None:
    """Replace the token as the kubelet does: a new file swapped in at once."""
    staged = token_file.with_name("..token_tmp")
    staged.write_text(token)
    os.replace(staged, token_file)


def test_the_proxy_calls_with_the_token_the_kubelet_last_wrote_and_knows_every_one(
        tmp_path: Path, upstream: tuple[str, Path, list[str]]) -> None:
    """The kubelet renews the preview's 600 s token at 80 % of its life: a preview that runs
    longer calls the API server with the current one, and redacts each it held."""
    url, ca, seen = upstream
    token_file = tmp_path / "token"
    _renew(token_file, "first-token\n")
    work = tmp_path / "work"
    work.mkdir()
    proxy = DryRunProxy(url, ca, TokenFile(token_file), work)
    assert proxy.handle("GET", "/api/v1/namespaces/apps/pods", {}, None)[0] == 200
    _renew(token_file, "second-token")
    assert proxy.handle("GET", "/api/v1/namespaces/apps/pods", {}, None)[0] == 200
    # a file caught empty while replaced keeps the last token in use
    _renew(token_file, "")
    assert proxy.handle("GET", "/api/v1/namespaces/apps/pods", {}, None)[0] == 200
    assert seen == ["Bearer first-token", "Bearer second-token", "Bearer second-token"]
    assert proxy.tokens() == ("first-token", "second-token")

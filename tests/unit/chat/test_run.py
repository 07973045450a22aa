"""No secret of the chat Secret reaches a log line, whichever library logs it; /healthz fails
once a loop of the process has ended; the HTTP server cuts off clients that send their
headers slowly; given port 0, the process serves on the free ports it names."""

from __future__ import annotations

import asyncio
import errno
import gzip
import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from aiohttp import ClientSession, web

import wingman
from support.fake_chat import FakeSlack, serving
from support.oddapi import odd_api
from support.ports import listening_addresses, listening_ports, logged_ports, refused_port
from support.processes import stop_process
from wingman.chat.run import RedactSecrets, health, http_runner
from wingman.logs import JsonFormatter, TextFormatter

TOKEN = "7000001:AAH-secret-bot-token-value"
SLACK_TOKEN = "xoxb-revoked-bot-token-value"
STATE = "/api/v1/namespaces/wingman/configmaps/wingman-chat-state"


def test_secrets_are_redacted_in_messages_arguments_fields_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s %(url)s"))
    handler.addFilter(RedactSecrets([TOKEN, "short"]))
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("POST https://api.telegram.org/bot%s/getUpdates failed", TOKEN,
                    extra={"url": f"https://api.telegram.org/bot{TOKEN}/sendMessage"})
        try:
            raise RuntimeError(f"connection to /bot{TOKEN}/getMe refused")
        except RuntimeError:
            log.exception("boom", extra={"url": "-"})
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert TOKEN not in text
    assert text.count("[redacted]") == 3
    assert "getUpdates failed" in text and "RuntimeError" in text


@pytest.mark.parametrize("formatter", [JsonFormatter("chat"), TextFormatter("chat")])
def test_a_secret_inside_any_field_of_a_record_is_redacted_as_the_line_shows_it(
        formatter: logging.Formatter) -> None:
    """A field that is not a string (the problems listed, a library's parameters, an exception
    or bytes passed as a field) shows the token inside its text on the line: redacted there
    too, and so is the token URL-encoded in a query; the line keeps the rest."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets([TOKEN]))
    log = logging.getLogger("test.redaction.fields")
    log.addHandler(handler)
    log.propagate = False
    url = f"https://api.telegram.org/bot{TOKEN}/getMe"
    try:
        log.warning("listed", extra={"problems": [f"GET {url} failed", "other"]})
        log.warning("nested", extra={"params": {"request": {"url": url}}, "count": 3})
        log.warning("exception", extra={"failure": RuntimeError(f"connecting to {url}")})
        log.warning("bytes", extra={"raw": url.encode()})
        log.warning("encoded", extra={"query": f"token={quote(TOKEN, safe='')}&x=1"})
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5
    for line in lines:
        assert TOKEN not in line and quote(TOKEN, safe="") not in line, line
        assert "AAH-secret" not in line, line
        assert "[redacted]" in line, line
    assert "failed" in lines[0] and "other" in lines[0] and "count" in lines[1]
    assert "&x=1" in lines[4]


def test_a_chat_librarys_record_never_shows_what_it_received() -> None:
    """python-telegram-bot logs a batch of updates it cannot read whole: the chat messages in
    it (a step-up code) must not reach the log; its own words still do."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets([]))
    lib = logging.getLogger("telegram.Bot")
    lib.addHandler(handler)
    try:
        lib.critical("Error while parsing updates! Received data was %r (%d%%)",
                     [{"update_id": 7, "message": {"text": "/confirm 493817"}}], 50)
        logging.getLogger("wingman.chat.test").addHandler(handler)
        logging.getLogger("wingman.chat.test").warning("ours keeps its %s", "arguments")
    finally:
        lib.removeHandler(handler)
        logging.getLogger("wingman.chat.test").removeHandler(handler)
    text = stream.getvalue()
    assert "493817" not in text and "/confirm" not in text
    assert "Received data was <withheld> (<withheld>%)" in text
    assert "ours keeps its arguments" in text


def test_healthz_fails_naming_a_loop_that_ended() -> None:
    async def main() -> tuple[int, str, int, str]:
        forever = asyncio.create_task(asyncio.Event().wait(), name="reconciler")
        ok = await health([forever])
        ended = asyncio.create_task(asyncio.sleep(0), name="telegram polling")
        await ended
        bad = await health([forever, ended])
        forever.cancel()
        return ok.status, str(ok.text), bad.status, str(bad.text)

    ok_status, ok_text, bad_status, bad_text = asyncio.run(main())
    assert (ok_status, ok_text) == (200, "ok")
    assert bad_status == 503 and bad_text == "not running: telegram polling"


async def _serve(app: web.Application, idle_seconds: float) -> tuple[web.AppRunner, int]:
    runner = http_runner(app, idle_seconds)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


@pytest.mark.parametrize("opening, drip", [
    (b"", b""),
    (b"POST /slack/commands?pad=", b"a"),
    (b"POST /slack/commands HTTP/1.1\r\nHost: x\r\nX-Pad: ", b"a"),
], ids=["nothing", "request-line-trickled", "headers-trickled"])
def test_a_client_that_sends_its_headers_slowly_is_cut_off(
        opening: bytes, drip: bytes) -> None:
    """Anyone can reach the Slack endpoints: a client that opens connections and sends the
    headers a byte at a time (or nothing) must not hold them for good (slowloris); a request
    sent at once is answered as always."""

    async def main() -> tuple[float, bytes, int]:
        app = web.Application()
        async def healthz(_request: web.Request) -> web.Response:
            return await health([])

        app.router.add_get("/healthz", healthz)
        runner, port = await _serve(app, 1.0)  # chat.httpIdleTimeoutSeconds
        try:
            async with ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    status = resp.status
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            writer.write(opening)
            got = b""
            try:
                for _ in range(40):  # a byte every 0.1 s: 4 s, were it not cut off
                    writer.write(drip)
                    await writer.drain()
                    try:
                        got = await asyncio.wait_for(reader.read(1024), 0.1)
                    except TimeoutError:
                        continue
                    break
            except ConnectionError:
                got = b""
            elapsed = time.monotonic() - started
            writer.close()
            return elapsed, got, status
        finally:
            await runner.cleanup()

    elapsed, got, status = asyncio.run(main())
    assert status == 200
    assert got == b"" and elapsed < 3.0, (elapsed, got)



def _started_ports(proc: subprocess.Popen[bytes], log: Path) -> dict[str, int]:
    deadline = time.monotonic() + 60
    while True:
        ports = logged_ports(log.read_text(errors="replace"), "chat starting",
                             "httpPort", "metricsPort")
        if ports is not None:
            return ports
        assert proc.poll() is None, f"wingman chat exited {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no 'chat starting' record:\n{log.read_text()}"
        time.sleep(0.1)


@contextmanager
def _chat_process(tmp_path: Path, api: str, hook: str, *, slack: str = "", **ports: int | str
                  ) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``wingman chat`` (this tree's code) with the webhook channel (to ``hook``), and Slack's
    when given its Web API (``slack``, its bot token ``SLACK_TOKEN``), its API server at
    ``api``, ports 0 (but those given: ``WINGMAN_METRICS_PORT=...``) and JSON logs: the
    process and its log; stopped (SIGTERM) at the end."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "webhook-secret").write_text("webhook-secret-value\n")
    config: dict[str, Any] = {"environment": "test", "webhook": {"enabled": True, "url": hook}}
    if slack:
        (secrets / "slack-bot-token").write_text(SLACK_TOKEN + "\n")
        (secrets / "slack-signing-secret").write_text("slack-signing-secret-value\n")
        config["slack"] = {"enabled": True, "teamId": "T0WINGMAN", "channel": "C0APPROVE",
                           "baseUrl": slack}
    (tmp_path / "chat.yaml").write_text(yaml.safe_dump(config))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": api}}],
        "users": [{"name": "u", "user": {"token": "not-used"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "KUBECONFIG": str(kubeconfig), "WINGMAN_CHAT_CONFIG": str(tmp_path / "chat.yaml"),
           "WINGMAN_CHAT_SECRETS_DIR": str(secrets),
           "WINGMAN_AUDIT_TARGET": str(tmp_path / "audit.jsonl"),
           "WINGMAN_CHAT_HTTP_PORT": "0", "WINGMAN_METRICS_PORT": "0",
           "WINGMAN_LOG_FORMAT": "json",
           # the code under test, not an installed copy
           "PYTHONPATH": str(Path(wingman.__file__).resolve().parents[1]),
           **{name: str(port) for name, port in ports.items()}}
    log = tmp_path / "chat.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wingman.cli", "chat"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc, log
    finally:
        stop_process(proc, timeout=20)


def test_with_port_0_the_chat_serves_on_the_free_ports_its_starting_record_names(
        tmp_path: Path) -> None:
    # A test harness (or several processes on one host) cannot hand the process a port picked
    # free beforehand: another process may take it before the chat binds it. Port 0 binds a
    # free one, and the 'chat starting' record tells where /healthz and /metrics are.
    with refused_port() as nowhere:  # the API server and the webhook receiver: not reached
        with _chat_process(tmp_path, f"https://127.0.0.1:{nowhere}",
                           f"http://127.0.0.1:{nowhere}/hook") as (proc, log):
            ports = _started_ports(proc, log)
            http, scrape = ports["httpPort"], ports["metricsPort"]
            assert 0 not in (http, scrape) and http != scrape, ports
            # the process's own sockets, not another server that happens to answer there
            assert {http, scrape} <= listening_ports(proc.pid), ports
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=10) as resp:
                assert resp.status == 200 and resp.read() == b"ok"
            with urllib.request.urlopen(f"http://127.0.0.1:{scrape}/metrics",
                                        timeout=10) as resp:
                assert 'wingman_chat_up{environment="test"} 1.0' in resp.read().decode()
    assert proc.returncode == 0, log.read_text()


def test_both_ports_listen_on_the_address_set_and_nowhere_else(tmp_path: Path) -> None:
    """``WINGMAN_LISTEN_ADDRESS`` (the chart's ``chat.listenAddress``): 127.0.0.1 keeps the
    HTTP and metrics ports on this machine, not on every network it is on."""
    with refused_port() as nowhere:
        with _chat_process(tmp_path, f"https://127.0.0.1:{nowhere}",
                           f"http://127.0.0.1:{nowhere}/hook",
                           WINGMAN_LISTEN_ADDRESS="127.0.0.1") as (proc, log):
            ports = _started_ports(proc, log)
            assert listening_addresses(proc.pid) == {
                ("127.0.0.1", ports["httpPort"]), ("127.0.0.1", ports["metricsPort"])}
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['metricsPort']}/metrics",
                                        timeout=10) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain; version=")
                assert 'wingman_chat_up{environment="test"} 1.0' in resp.read().decode()
    assert proc.returncode == 0, log.read_text()


@pytest.mark.parametrize("address, said", [
    # TEST-NET-3: an address this host does not have
    ("203.0.113.9", "cannot listen on 203.0.113.9 (WINGMAN_LISTEN_ADDRESS): "
                    "Cannot assign requested address; set one of this host's addresses, or "
                    "0.0.0.0 for every IPv4 address (the chart's chat.listenAddress)"),
    ("chat.example", "WINGMAN_LISTEN_ADDRESS='chat.example' must be an IP address"),
    ("fe80::1%eth0", "is an IPv4-mapped or link-local IPv6 address"),
])
def test_an_address_it_cannot_listen_on_is_named_and_the_chat_exits_2(
        tmp_path: Path, address: str, said: str) -> None:
    with refused_port() as nowhere:
        with _chat_process(tmp_path, f"https://127.0.0.1:{nowhere}",
                           f"http://127.0.0.1:{nowhere}/hook",
                           WINGMAN_LISTEN_ADDRESS=address) as (proc, log):
            assert proc.wait(timeout=60) == 2, log.read_text()
    text = log.read_text()
    assert said in text and "Traceback" not in text and "chat starting" not in text, text


#: Loaded by the chat process (``sitecustomize``): its kernel has no IPv6, as one booted with
#: ``ipv6.disable=1`` (every IPv6 socket refused, EAFNOSUPPORT).
NO_IPV6 = """
import errno, os, socket
_socket = socket.socket
class _NoIPv6(_socket):
    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        if family == socket.AF_INET6 and fileno is None:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
        super().__init__(family, type, proto, fileno)
socket.socket = _NoIPv6
"""


def test_ipv6_on_a_kernel_without_it_is_named_and_the_chat_exits_2(tmp_path: Path) -> None:
    """asyncio skips an address whose socket the system refuses and would serve on none at
    all: the start must say which setting to change, not crash on the missing port."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(NO_IPV6)
    code = str(Path(wingman.__file__).resolve().parents[1])
    with refused_port() as nowhere:
        with _chat_process(tmp_path, f"https://127.0.0.1:{nowhere}",
                           f"http://127.0.0.1:{nowhere}/hook", WINGMAN_LISTEN_ADDRESS="::",
                           PYTHONPATH=f"{shim}{os.pathsep}{code}") as (proc, log):
            assert proc.wait(timeout=60) == 2, log.read_text()
    text = log.read_text()
    assert ("wingman chat: cannot start: cannot listen on :: (WINGMAN_LISTEN_ADDRESS): "
            f"{os.strerror(errno.EAFNOSUPPORT)}; ") in text, text
    assert "chat.listenAddress" in text and "Traceback" not in text, text


def test_prometheus_is_answered_in_the_format_it_asks_for(tmp_path: Path) -> None:
    """Prometheus asks for OpenMetrics first; a scraper that asks for nothing gets the text
    format; one that accepts gzip gets it compressed."""
    with refused_port() as nowhere:
        with _chat_process(tmp_path, f"https://127.0.0.1:{nowhere}",
                           f"http://127.0.0.1:{nowhere}/hook") as (proc, log):
            url = f"http://127.0.0.1:{_started_ports(proc, log)['metricsPort']}/metrics"
            asked = urllib.request.Request(url, headers={"Accept": (
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;"
                "q=0.4,*/*;q=0.1")})
            with urllib.request.urlopen(asked, timeout=10) as resp:  # noqa: S310 - http://
                assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
                body = resp.read().decode()
                assert 'wingman_chat_up{environment="test"} 1.0' in body
                assert body.rstrip().endswith("# EOF")
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain")
                assert "Content-Encoding" not in resp.headers
            # Prometheus asks for gzip: the answer is compressed, as the operator's is
            zipped = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
            with urllib.request.urlopen(zipped, timeout=10) as resp:  # noqa: S310 - http://
                assert resp.headers["Content-Encoding"] == "gzip"
                assert 'wingman_chat_up{environment="test"} 1.0' in \
                    gzip.decompress(resp.read()).decode()


@pytest.mark.parametrize("setting", ["WINGMAN_CHAT_HTTP_PORT", "WINGMAN_METRICS_PORT"])
def test_a_port_in_use_is_named_and_the_chat_exits_2_without_a_traceback(
        tmp_path: Path, setting: str) -> None:
    # another process (an earlier chat on the host, a sidecar) listens on the port: the start
    # says which port of which setting, and what to do, not a traceback
    with refused_port() as nowhere, socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - where the chat binds its ports
        taken.listen()
        held = int(taken.getsockname()[1])
        with _chat_process(tmp_path, f"https://127.0.0.1:{nowhere}",
                           f"http://127.0.0.1:{nowhere}/hook",
                           **{setting: str(held)}) as (proc, log):
            assert proc.wait(timeout=60) == 2, log.read_text()
    said = log.read_text()
    assert "Traceback" not in said, said
    assert (f"wingman chat: cannot start: port {held} ({setting}) is in use: another process "
            "listens on it") in said, said
    assert "chat starting" not in said, said


def _records(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_a_state_configmap_answered_in_a_shape_no_api_server_gives_is_retried_saying_why(
        tmp_path: Path) -> None:
    """What answers at the API server's address (a proxy, another service) gives the state
    ConfigMap in a shape no API server does: the process does not crash on it (a restart loop
    whose record names only a TypeError), it goes on trying, each try logged with the reason
    and what is wrong; once the answer is right it starts its reconciler, no restart needed."""
    path = STATE
    good = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "wingman-chat-state", "namespace": "wingman",
                         "resourceVersion": "7"},
            "data": {"state.json": json.dumps({"horizon": "2026-01-01T00:00:00Z"})}}
    answers: dict[str, Any] = {path: {**good, "data": {"state.json": 5}}}
    with odd_api(answers) as api, refused_port() as nowhere:
        with _chat_process(tmp_path, api, f"http://127.0.0.1:{nowhere}/hook") as (proc, log):
            _started_ports(proc, log)

            def retried() -> list[dict[str, Any]]:
                return [r for r in _records(log)
                        if r["message"] == "cannot read the chat state yet; retrying"]
            deadline = time.monotonic() + 30
            while len(retried()) < 2:  # tried again, not stopped
                assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            record = retried()[0]
            assert record["reason"] == "UnusableAnswer", record
            assert "ConfigMap wingman/wingman-chat-state" in record["error"], record
            assert "data.state.json is not text" in record["error"], record
            answers[path] = good  # the proxy fixed: the reconciler starts
            while not any(r["message"] == "chat sync failed; retrying" for r in _records(log)):
                assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
                assert time.monotonic() < deadline + 30, log.read_text()
                time.sleep(0.1)
    assert proc.returncode == 0, log.read_text()
    assert not any(r.get("event") == "UncaughtException" for r in _records(log))


def test_a_bot_token_slack_rejects_fails_healthz_naming_it(tmp_path: Path) -> None:
    """A wrong or revoked slack-bot-token only made every delivery back off: the pod stayed
    healthy for good while no approver could be reached, where Telegram's rejected token fails
    /healthz. The process checks the token at start (auth.test) and /healthz answers 503
    naming the Web API and the reason, so that the pod is restarted (reading the Secret
    again) and WingmanChatBotTokenRejected fires; the log says so, never the token."""
    state = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "wingman-chat-state", "namespace": "wingman",
                          "resourceVersion": "7"},
             "data": {"state.json": json.dumps({"horizon": "2026-01-01T00:00:00Z"})}}
    with odd_api({STATE: state}) as api, refused_port() as nowhere, \
            serving(FakeSlack("xoxb-the-apps-current-token", "T0WINGMAN", {})) as fake:
        with _chat_process(tmp_path, api, f"http://127.0.0.1:{nowhere}/hook",
                           slack=fake.base_url) as (proc, log):
            ports = _started_ports(proc, log)
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{ports['httpPort']}/healthz", timeout=10):
                        pass
                except urllib.error.HTTPError as exc:
                    status, said = exc.code, exc.read().decode()
                    break
                assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"/healthz stays 200:\n{log.read_text()}"
                time.sleep(0.2)
            assert (status, said) == (503, "not running: slack web api (BotTokenRejected)")
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['metricsPort']}/metrics",
                                        timeout=10) as resp:
                assert ('wingman_chat_loop_failures_total{environment="test",'
                        'kind="Unauthorized",loop="slack-web-api"} 1.0'
                        in resp.read().decode())
    [ended] = [r for r in _records(log)
               if r["message"] == "slack ends: the bot token was rejected"]
    assert ended["reason"] == "BotTokenRejected", ended
    assert "invalid_auth" in ended["error"] and "slack-bot-token" in ended["error"], ended
    assert SLACK_TOKEN not in log.read_text()

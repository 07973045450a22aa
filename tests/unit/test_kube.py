"""How the API client names a call for the operator's metrics (``kube.call_labels``): the API
server's verb and the resource with its subresource, whatever the path's shape; and which
token a client of a mounted ServiceAccount sends (``Kube.from_service_account``); and when a
failed call is made again (``retry_pause``: what may pass, how long to wait, when to give up)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import gzip
import json
import os
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from kubernetes import client as k8s
from urllib3 import HTTPConnectionPool, PoolManager
from urllib3.connection import HTTPConnection
from urllib3.util.retry import Retry

from support.localserver import QuietHandler, serving
from wingman import kube as kube_module
from wingman.errors import ClusterError
from wingman.kube import (
    APPROVALS,
    CONFIGMAPS,
    GRANTS,
    JOBS,
    LIST_PAGE_SIZE,
    LIST_RESTARTS,
    MAX_ANSWER_BYTES,
    MAX_UNBOUNDED_ANSWER_BYTES,
    SECRETS,
    AnswerTooLarge,
    ApiError,
    Kube,
    ListExpired,
    RetryPolicy,
    UnusableAnswer,
    _api_error,
    _too_large,
    call_labels,
    call_retried,
    call_retried_async,
    current_context,
    kubeconfig_contexts,
    load_kubeconfig,
    retry_after,
    retry_pause,
    server_date,
    transient,
    try_seconds,
)


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", JOBS.path("ns"), ("create", "jobs")),
    ("GET", SECRETS.path("ns", "t"), ("get", "secrets")),
    ("GET", SECRETS.path("ns") + "?labelSelector=a%3Db", ("list", "secrets")),
    ("PATCH", APPROVALS.path("ns", "r", "status"), ("patch", "approvalrequests/status")),
    ("DELETE", APPROVALS.path("ns", "r"), ("delete", "approvalrequests")),
    ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", ("update", "leases")),
    ("GET", "/api/v1/namespaces/ns/pods/p/log", ("get", "pods/log")),
    ("GET", "/api/v1/namespaces/ns", ("get", "namespaces")),
    ("GET", "/api/v1/namespaces", ("list", "namespaces")),
    ("PUT", "/api/v1/namespaces/ns/finalize", ("update", "namespaces/finalize")),
    ("GET", "/api/v1/nodes/n/status", ("get", "nodes/status")),
    ("GET", "/apis/wingman.dev/v1alpha1/executiongrants", ("list", "executiongrants")),
    ("GET", "/version", ("get", "unknown")),
])
def test_a_call_is_named_by_the_api_server_s_verb_and_its_resource(
        method: str, path: str, expected: tuple[str, str]) -> None:
    assert call_labels(method, path) == expected


@pytest.mark.parametrize("path", [
    "/openapi/v3/apis/wingman.dev/v1alpha1", "/healthz", "relative/x/y/z/w", "",
    "https://example.test/api/v1/namespaces/ns/pods",
])
def test_a_path_that_is_no_resource_s_is_unknown_never_a_name_from_it(path: str) -> None:
    """A label is a bounded set: no segment of an odd path (a namespace, a name) becomes one."""
    assert call_labels("GET", path) == ("get", "unknown")


def test_an_old_watch_path_names_the_watched_resource() -> None:
    assert call_labels("GET", "/api/v1/watch/namespaces/ns/pods") == ("list", "pods")


def _project(sa_dir: Path, generation: int, token: str) -> None:
    """Write ``token`` (and ca.crt) into ``sa_dir`` as the kubelet updates a projected volume:
    a new timestamped directory, then the ``..data`` link swapped to it in one rename."""
    data = sa_dir / f"..2026_12_03_12_00_0{generation}"
    data.mkdir()
    (data / "token").write_text(token)
    (data / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    staged = sa_dir / "..data_tmp"
    staged.symlink_to(data.name)
    staged.rename(sa_dir / "..data")
    for name in ("token", "ca.crt"):
        if not (sa_dir / name).is_symlink():
            (sa_dir / name).symlink_to(f"..data/{name}")


def _sent(kube: Kube) -> str:
    """The Authorization header the client's next call carries."""
    return str(kube.api.configuration.auth_settings()["BearerToken"]["value"])


def test_a_service_account_client_sends_the_token_the_kubelet_last_wrote(
        tmp_path: Path) -> None:
    """The kubelet replaces a projected token at 80 % of its life: a gateway whose command
    outlives the first token (10 minutes) writes its result with the current one."""
    _project(tmp_path, 1, "first-token\n")
    kube = Kube.from_service_account("https://127.0.0.1:6443", tmp_path)
    assert _sent(kube) == "Bearer first-token"
    assert _sent(kube.as_user("someone")) == "Bearer first-token"
    _project(tmp_path, 2, "second-token")
    assert _sent(kube) == "Bearer second-token"
    assert _sent(kube.as_user("someone")) == "Bearer second-token"
    # a file caught empty or unreadable while replaced keeps the last token in use
    _project(tmp_path, 3, "")
    assert _sent(kube) == "Bearer second-token"
    os.unlink(tmp_path / "..data")
    assert _sent(kube) == "Bearer second-token"
    _project(tmp_path, 4, "fourth-token")
    assert _sent(kube) == "Bearer fourth-token"
    kube.close()


def test_a_token_file_larger_than_any_token_is_not_read_whole(tmp_path: Path) -> None:
    """A ServiceAccount token is a few KiB: a file far larger (a wrong path, a device that
    never ends) is refused at start and, once running, leaves the last token in use, read no
    further than the limit."""
    _project(tmp_path, 1, "x" * (1 << 20))
    with pytest.raises(ClusterError, match=r"larger than 64 KiB: not a ServiceAccount token"):
        Kube.from_service_account("https://127.0.0.1:6443", tmp_path)
    _project(tmp_path, 2, "second-token")
    kube = Kube.from_service_account("https://127.0.0.1:6443", tmp_path)
    _project(tmp_path, 3, "y" * (1 << 20))
    assert _sent(kube) == "Bearer second-token"
    os.unlink(tmp_path / "token")
    (tmp_path / "token").symlink_to("/dev/zero")
    assert _sent(kube) == "Bearer second-token"
    kube.close()


def test_a_service_account_directory_without_a_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="cannot read the ServiceAccount token"):
        Kube.from_service_account("https://127.0.0.1:6443", tmp_path)
    _project(tmp_path, 1, " ")
    with pytest.raises(ClusterError, match=r"needs a non-empty token and ca\.crt"):
        Kube.from_service_account("https://127.0.0.1:6443", tmp_path)


@pytest.mark.parametrize("host", ["https://alice:s3/cr3t@127.0.0.1:9",
                                  "https://127.0.0.1:9/?alice=s3cr3t",
                                  "https://alice:s3?cr#3t@127.0.0.1:9"])
def test_an_unreachable_api_server_is_named_without_credentials_or_query(host: str) -> None:
    from kubernetes import client as k8s

    configuration = k8s.Configuration(host=host)
    configuration.retries = False
    kube = Kube(k8s.ApiClient(configuration), timeout=2)
    try:
        with pytest.raises(ClusterError) as caught:
            kube.get(SECRETS, "ns", "x")
    finally:
        kube.close()
    assert "cannot reach the API server at https://" in caught.value.message
    for part in ("alice", "s3", "cr3t"):
        assert part not in caught.value.message


def _refusing_port() -> int:
    """A local port nothing listens on (bound, then closed: connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_fault_in_the_call_itself_is_raised_as_it_is_not_as_an_unreachable_api_server(
        ) -> None:
    """Only what means the network, TLS or HTTP failed is "cannot reach the API server"
    (``Unreachable``, a failure that may pass and is made again): a fault of the caller, here
    a body that is no JSON (a TypeError while the request is made), is raised as it is, for
    its traceback to show the bug, and not retried as an API server that is away. A refused
    connection still is ``Unreachable``."""
    configuration = k8s.Configuration(host=f"http://127.0.0.1:{_refusing_port()}")
    configuration.retries = False
    kube = Kube(k8s.ApiClient(configuration), timeout=2)
    try:
        with pytest.raises(TypeError, match="not JSON serializable"):
            kube.create(CONFIGMAPS, "ns", {"data": {"when": object()}})
        with pytest.raises(ClusterError) as caught:
            kube.create(CONFIGMAPS, "ns", {"data": {"when": "now"}})
        assert caught.value.reason == "Unreachable"
        assert not transient(TypeError("not JSON serializable"))
        with pytest.raises(ClusterError) as once:
            kube.get(CONFIGMAPS, "ns", "x", once=2.0)
        assert once.value.reason == "Unreachable" and "cannot reach the API server" in \
            once.value.message
    finally:
        kube.close()


@pytest.mark.parametrize("header", ["token", "impersonate"])
def test_a_header_http_cannot_carry_is_named_without_its_value(header: str) -> None:
    """A bearer token (or an impersonated name) holding a line break: http.client would refuse
    it with a ValueError quoting the value (the token, into a traceback and the log); the call
    fails with what to fix instead, naming the header, never the value, and sends nothing."""
    secret = "s3cr3t-t0ken\nInjected: yes"
    configuration = k8s.Configuration(host=f"http://127.0.0.1:{_refusing_port()}")
    if header == "token":
        configuration.api_key = {"authorization": secret}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    kube = Kube(k8s.ApiClient(configuration), timeout=2)
    if header == "impersonate":
        kube = kube.as_user(secret)
    try:
        with pytest.raises(ClusterError) as caught:
            kube.get(CONFIGMAPS, "ns", "x", once=2.0)
    finally:
        kube.close()
    assert caught.value.reason == ("InvalidCredentials" if header == "token"
                                   else "InvalidRequest")
    assert "line break" in caught.value.message
    assert "s3cr3t" not in caught.value.message


def test_from_environment_refuses_an_exec_plugin_that_gave_no_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the kubernetes library only logs the plugin's failure and calls out anonymous
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1,"
        " command: 'false', interactiveMode: Never}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with pytest.raises(ClusterError, match=r"exec plugin 'false' failed") as err:
        Kube.from_environment()
    assert err.value.reason == "NoCredentials"


def test_from_environment_takes_an_exec_plugin_that_gave_a_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin that works (as cloud providers' kubeconfigs use) is not taken for one that
    failed: its token is what the client sends."""
    plugin = tmp_path / "plugin"
    plugin.write_text("#!/bin/sh\necho '{\"apiVersion\": \"client.authentication.k8s.io/v1\","
                      " \"kind\": \"ExecCredential\", \"status\": {\"token\": \"from-plugin\"}}'\n")
    plugin.chmod(0o755)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
            "interactiveMode": "Never"}}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    kube = Kube.from_environment()
    assert kube.authorization() == "Bearer from-plugin"
    kube.close()


def _kubeconfig(path: Path, context: str, server: str, user: dict[str, object],
                ca: str | None = None) -> Path:
    cluster: dict[str, object] = {"server": server}
    if ca is not None:
        cluster["certificate-authority"] = ca
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context}))
    return path


@pytest.mark.parametrize("empty_first", [False, True])
def test_the_exec_plugin_checked_is_that_of_kubectls_current_context(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_first: bool) -> None:
    # the first file's context (kubectl's) gets its credentials from a failing plugin; the
    # last file's has a token, which the library alone would have used instead (an empty
    # file, which kubectl skips, changes nothing)
    plugin = _kubeconfig(tmp_path / "plugin", "plugin", "https://127.0.0.1:1", {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "false",
        "interactiveMode": "Never"}})
    token = _kubeconfig(tmp_path / "token", "token", "https://127.0.0.2:2", {"token": "t"})
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv("KUBECONFIG", f"{empty}:" * empty_first + f"{plugin}:{token}")
    with pytest.raises(ClusterError, match=r"exec plugin 'false' failed") as err:
        Kube.from_environment()
    assert err.value.reason == "NoCredentials"


#: A credential in a kubeconfig that is not YAML: on the very line the YAML library fails on.
_BROKEN_SECRET = "sha256~Bn5vQ3rTz8Kw1YpLx0Jm7HdA2sFqE9uR"


@pytest.mark.parametrize("line", [
    f"\ttoken: {_BROKEN_SECRET}",  # indented with a tab
    f"    token: {_BROKEN_SECRET}: more",  # a value holding ": "
    f"    client-key-data: \"{_BROKEN_SECRET}",  # a quote never closed
], ids=["tab", "colon", "unclosed-quote"])
def test_a_kubeconfig_that_is_not_yaml_is_refused_without_quoting_its_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str) -> None:
    """The YAML library's message shows the line it failed on: a token or a key must never
    reach the error a command prints (or the MCP server logs); where it is, is said."""
    broken = tmp_path / "config"
    broken.write_text("apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n"
                      f"{line}\ncurrent-context: x\n")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(broken))
    with pytest.raises(ClusterError) as err:
        Kube.from_environment()
    from wingman.client.connect import connect
    from wingman.errors import ConfigError
    with pytest.raises(ConfigError) as refused:
        connect(kubeconfig=str(broken))
    for said in (err.value.message, refused.value.message):
        assert f"cannot read the kubeconfig {broken}: not valid YAML at line " in said
        assert _BROKEN_SECRET[:12] not in said and _BROKEN_SECRET[-12:] not in said, said


def test_an_empty_kubeconfig_file_is_skipped_as_kubectl_skips_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    # relative paths in a file are relative to that file's directory, as in kubectl
    (tmp_path / "b" / "ca.crt").parent.mkdir()
    (tmp_path / "b" / "ca.crt").write_text("not read before the first call\n")
    second = _kubeconfig(tmp_path / "b" / "config", "b", "https://127.0.0.2:2",
                         {"token": "t"}, ca="ca.crt")
    monkeypatch.setenv("KUBECONFIG", f"{empty}:{second}")
    configuration = k8s.Configuration()
    entry = load_kubeconfig(configuration)
    assert entry is not None and entry["name"] == "b"
    assert configuration.host == "https://127.0.0.2:2"
    assert configuration.ssl_ca_cert == str(tmp_path / "b" / "ca.crt")


@pytest.mark.parametrize(("exc", "again"), [
    (ApiError(503, "ServiceUnavailable", "x"), True),
    (ApiError(500, "InternalError", "x"), True),
    (ApiError(429, "TooManyRequests", "x"), True),
    (ApiError(0, "", "no HTTP answer"), True),
    (ClusterError("cannot reach the API server", reason="Unreachable"), True),
    (ApiError(403, "Forbidden", "x"), False),
    (ApiError(404, "NotFound", "x"), False),
    (ApiError(409, "Conflict", "x"), False),
    (ApiError(422, "Invalid", "x"), False),
    (ValueError("a bug"), False),
])
def test_only_a_failure_that_may_pass_is_transient(exc: BaseException, again: bool) -> None:
    assert transient(exc) is again


# the gateway's reads (``API_RETRY_SECONDS``) and the chat's state writes (``SAVE_*``)
READS = RetryPolicy(budget=10.0, first_delay=0.2, call_seconds=5.0, call_min_seconds=0.5)
WRITES = RetryPolicy(budget=10.0, first_delay=0.2, call_seconds=5.0, call_min_seconds=0.5,
                     tries=3, conflicts=True)
UNREACHABLE = ClusterError("cannot reach the API server", reason="Unreachable")


def _busy(after: float | None) -> ApiError:
    return ApiError(429, "TooManyRequests", "x", retry_after=after)


def test_a_failure_that_may_pass_is_tried_again_after_a_pause_doubling_each_time() -> None:
    assert [retry_pause(READS, UNREACHABLE, tries, 10.0) for tries in (1, 2, 3, 4)] == [
        0.2, 0.4, 0.8, 1.6]


@pytest.mark.parametrize("exc", [ApiError(403, "Forbidden", "x"), ApiError(404, "NotFound", "x"),
                                 ApiError(422, "Invalid", "x")])
def test_the_servers_answer_to_the_request_itself_is_never_asked_again(exc: ApiError) -> None:
    assert retry_pause(READS, exc, 1, 10.0) is None
    assert retry_pause(WRITES, exc, 1, 10.0) is None


def test_a_conflict_is_tried_again_only_where_the_call_reads_back_what_is_stored() -> None:
    conflict = ApiError(409, "Conflict", "x")
    assert retry_pause(READS, conflict, 1, 10.0) is None
    assert retry_pause(WRITES, conflict, 1, 10.0) == 0.2


def test_retry_after_is_waited_for_when_longer_than_the_backoff_and_gives_up_past_the_budget(
        ) -> None:
    assert retry_pause(READS, _busy(3.0), 1, 10.0) == 3.0  # asked no sooner
    assert retry_pause(READS, _busy(0.0), 2, 10.0) == 0.4  # the backoff is kept
    assert retry_pause(READS, _busy(None), 1, 10.0) == 0.2
    assert retry_pause(READS, _busy(30.0), 1, 10.0) is None  # past what is left: give up now
    assert retry_pause(WRITES, _busy(3.0), 1, 10.0) == 3.0


def test_no_new_try_whose_pause_would_end_past_the_budget_or_past_the_tries() -> None:
    assert retry_pause(READS, UNREACHABLE, 1, 0.19) is None
    assert retry_pause(READS, UNREACHABLE, 1, 0.2) == 0.2
    assert retry_pause(READS, UNREACHABLE, 30, 1e12) is not None  # no count: the budget only
    assert retry_pause(WRITES, UNREACHABLE, 2, 10.0) == 0.4
    assert retry_pause(WRITES, UNREACHABLE, 3, 10.0) is None  # the third try was the last


def test_one_try_waits_its_bound_never_past_the_budget_but_at_least_its_least() -> None:
    assert try_seconds(READS, 10.0) == 5.0
    assert try_seconds(READS, 2.0) == 2.0
    assert try_seconds(READS, 0.1) == 0.5
    assert try_seconds(READS, -3.0) == 0.5


def _flaky(failures: list[BaseException]) -> tuple[list[float], Any]:
    onces: list[float] = []

    def call(once: float) -> str:
        onces.append(once)
        if failures:
            raise failures.pop(0)
        return "answer"
    return onces, call


def test_a_call_is_made_again_until_it_answers_and_each_retry_is_told() -> None:
    fast = RetryPolicy(budget=10.0, first_delay=0.0, call_seconds=5.0, call_min_seconds=0.5)
    onces, call = _flaky([UNREACHABLE, _busy(None)])
    told: list[tuple[str, float]] = []
    assert call_retried(fast, call, retrying=lambda exc, pause: told.append(
        (exc.reason, pause))) == "answer"
    assert onces == [5.0, 5.0, 5.0]
    assert told == [("Unreachable", 0.0), ("TooManyRequests", 0.0)]


def test_a_call_given_up_raises_its_last_error() -> None:
    fast = RetryPolicy(budget=10.0, first_delay=0.0, call_seconds=5.0, call_min_seconds=0.5,
                       tries=2, conflicts=True)
    last = ApiError(409, "Conflict", "the last")
    _, call = _flaky([UNREACHABLE, last, UNREACHABLE])
    with pytest.raises(ApiError) as raised:
        call_retried(fast, call)
    assert raised.value is last
    forbidden = ApiError(403, "Forbidden", "x")
    onces, call = _flaky([forbidden])
    with pytest.raises(ApiError):
        call_retried(fast, call)
    assert len(onces) == 1  # not asked again


def test_a_process_asked_to_stop_makes_no_new_try() -> None:
    onces, call = _flaky([UNREACHABLE, UNREACHABLE])
    with pytest.raises(ClusterError):
        call_retried(READS, call, stop=lambda: True)
    assert len(onces) == 1


def test_a_stop_during_a_pause_ends_the_retries_at_once_with_the_last_error() -> None:
    """With ``wait`` (the gateway's ``TERMINATION.wait``), a pause is waited through it: one
    that says the process was asked to stop meanwhile ends the retries there, raising the
    failed try's error, and no new try is made; one that waited its whole pause goes on."""
    slow = RetryPolicy(budget=60.0, first_delay=20.0, call_seconds=5.0, call_min_seconds=0.5)
    last = _busy(None)
    onces, call = _flaky([last, UNREACHABLE])
    waited: list[float] = []

    def stopped(seconds: float) -> bool:
        waited.append(seconds)
        return True
    with pytest.raises(ApiError) as raised:
        call_retried(slow, call, wait=stopped, stop=lambda: False)
    assert raised.value is last and len(onces) == 1 and waited == [20.0]

    onces, call = _flaky([last])
    waited.clear()

    def waited_out(seconds: float) -> bool:
        waited.append(seconds)
        return False
    assert call_retried(slow, call, wait=waited_out) == "answer"
    assert len(onces) == 2 and waited == [20.0]


def test_the_async_loop_makes_the_same_tries() -> None:
    fast = RetryPolicy(budget=10.0, first_delay=0.0, call_seconds=5.0, call_min_seconds=0.5,
                       tries=3, conflicts=True)
    onces, call = _flaky([ApiError(409, "Conflict", "x"), UNREACHABLE])

    async def call_async(once: float) -> str:
        result: str = call(once)
        return result

    assert asyncio.run(call_retried_async(fast, call_async)) == "answer"
    assert len(onces) == 3
    onces, call = _flaky([UNREACHABLE] * 5)
    with pytest.raises(ClusterError):
        asyncio.run(call_retried_async(fast, call_async))
    assert len(onces) == 3  # the tries' limit


def test_a_cancelled_async_call_is_cancelled_not_made_again() -> None:
    # a service stopping (SIGTERM cancels its tasks) must not wait out the budget: the
    # cancellation goes through the loop, in a try or in a pause, never taken as a failure
    tries: list[float] = []
    in_pause = [True]

    async def hangs(once: float) -> str:
        tries.append(once)
        if len(tries) == 1:
            raise UNREACHABLE  # then a pause: cancelled in it
        if len(tries) == 2 and not in_pause[0]:
            await asyncio.Event().wait()  # cancelled in the try
        return "made again"  # a cancellation taken as a failure

    async def cancelled_in(pauses: bool) -> None:
        in_pause[0] = pauses
        policy = RetryPolicy(budget=1e6, first_delay=1e5 if pauses else 0.0,
                             call_seconds=5.0, call_min_seconds=0.5, conflicts=True)
        tries.clear()
        task = asyncio.create_task(call_retried_async(policy, hangs))
        while len(tries) < (1 if pauses else 2):
            await asyncio.sleep(0)
        for _ in range(3):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(tries) == (1 if pauses else 2)

    asyncio.run(cancelled_in(pauses=True))
    asyncio.run(cancelled_in(pauses=False))


def test_the_api_servers_date_is_read_as_utc() -> None:
    assert server_date("Thu, 03 Dec 2026 22:30:05 GMT") == dt.datetime(
        2026, 12, 3, 22, 30, 5, tzinfo=dt.UTC)
    assert server_date(None) is None
    assert server_date("yesterday") is None


def test_a_retry_after_is_read_in_seconds() -> None:
    assert retry_after("1") == 1.0
    assert retry_after(" 30 ") == 30.0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    got = retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert got is not None and 100 < got <= 120
    assert retry_after("Thu, 03 Dec 2020 22:30:05 GMT") == 0.0  # past: at once
    assert retry_after(None) is None
    assert retry_after("soon") is None
    assert retry_after("-5") is None


@pytest.mark.parametrize("value", [
    "\u00b2",  # a Latin-1 byte of the header that str.isdigit takes for a digit
    "1\u00b9",
    "Fri, 31 Dec 9999 23:59:59 -2359",  # past the last date Python can hold, in UTC
])
def test_a_hostile_date_or_retry_after_reads_as_none_never_an_error(value: str) -> None:
    """An API server (or a proxy before it) that answers with such a header fails no call:
    the header is taken as absent."""
    assert retry_after(value) is None
    assert server_date(value) is None


def test_kubeconfig_names_are_paths_as_they_are_as_kubectl_takes_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kubectl (client-go's loader) expands no ``~`` in KUBECONFIG: ``~/cfg`` is the file
    ``cfg`` in a directory ``~`` of the working directory, not one in the home directory."""
    home = tmp_path / "home"
    _kubeconfig(home / "cfg", "home", "https://127.0.0.1:1", {"token": "h"})
    literal = _kubeconfig(tmp_path / "~" / "cfg", "literal", "https://127.0.0.2:2", {"token": "l"})
    other = _kubeconfig(tmp_path / "other", "other", "https://127.0.0.3:3", {"token": "o"})
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KUBECONFIG", f"~/cfg{os.pathsep}{other}")
    assert current_context() == ("literal", Path("~/cfg"))
    configuration = k8s.Configuration()
    entry = load_kubeconfig(configuration)
    assert entry is not None and entry["name"] == "literal"
    assert configuration.host == "https://127.0.0.2:2"
    literal.unlink()  # a missing file is skipped, as kubectl skips it
    assert current_context() == ("other", other)
    entry = load_kubeconfig(k8s.Configuration())
    assert entry is not None and entry["name"] == "other"


def test_an_explicit_kubeconfig_is_one_file_even_with_a_colon_in_its_path(
        tmp_path: Path) -> None:
    """``--kubeconfig d:e/cfg`` is the file ``d:e/cfg``, as kubectl takes it, never the files
    ``d`` and ``e/cfg`` that KUBECONFIG=d:e/cfg would name."""
    colon = _kubeconfig(tmp_path / "d:e" / "cfg", "colon", "https://127.0.0.1:1", {"token": "c"})
    _kubeconfig(tmp_path / "d", "d", "https://127.0.0.2:2", {"token": "d"})
    assert current_context([str(colon)]) == ("colon", colon)
    configuration = k8s.Configuration()
    entry = load_kubeconfig(configuration, [str(colon)])
    assert entry is not None and entry["name"] == "colon"
    assert configuration.host == "https://127.0.0.1:1"
    assert [c["name"] for c in kubeconfig_contexts([str(colon)])] == ["colon"]
    # the same path as a KUBECONFIG list is split, as kubectl splits it
    assert current_context(str(colon)) == ("d", tmp_path / "d")


#: what the local API server sends for the paths of answers larger than a bounded call reads
_HUGE = 24 * 1024 * 1024


#: answers no API server gives, by the name asked for: (status, body, Location)
_ODD: dict[str, tuple[int, bytes, str | None]] = {
    "garbled": (200, b"<html><body>502 Bad Gateway</body></html>", None),
    "not-utf8": (200, b'{"kind": "ConfigMap", "data": {"k": "\xff\xfe"}}', None),
    "nested": (200, b"[" * 100_000, None),
    "scalar": (200, b"42", None),
    "redirected": (302, b"{}", "/api/v1/namespaces/ns/configmaps/seen"),
    "failed-nested": (500, b"[" * 100_000, None),
}


@functools.cache
def _bomb() -> bytes:
    """A gzip answer of a few hundred KiB that decodes to more than either cap: JSON (a list
    or an object), its length said (the compressed one, under the caps)."""
    pad = b" " * (MAX_UNBOUNDED_ANSWER_BYTES + 8 * 1024 * 1024)
    return gzip.compress(b'{"kind": "List", "items": [], "x": "' + pad + b'"}', compresslevel=1)


#: Retry-After dates no calendar holds (urllib3's parsing fails on them with a bare ValueError,
#: an OverflowError), by the name of the ConfigMap read
_PAST_THE_CALENDAR = {"year-99999": "Mon, 01 Jan 99999 00:00:00 GMT",
                      "year-overflow": "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"}


#: how long the local API server trickles an answer before it stops: far past the timeouts of
#: the calls that read one, and past the generous bounds (on a loaded machine) of the tests
#: that tell a call given up at its timeout from one that ran the trickle out
_TRICKLE_SECONDS = 30.0

#: ConfigMaps in a page of the local API server's lists, by namespace: "slow-page"'s (1 MiB,
#: 2 s at a slow link's rate), "long-page"'s (8 MiB, 16 s at the same rate: a page a try is
#: given up on long before it ends, so that the tests' bounds on when it was given up can be
#: generous) and "trickled-page"'s (1 MiB, a byte at a time)
_PAGE_ITEMS = {"slow-page": 40, "long-page": 320, "trickled-page": 40}


@functools.cache
def _page_body(items: int) -> bytes:
    """A list of ``items`` ConfigMaps of 26 KiB each (made once: not in the time of a try)."""
    return json.dumps({"kind": "ConfigMapList", "metadata": {}, "items": [
        {"kind": "ConfigMap", "metadata": {"name": f"cm-{i}"},
         "data": {"k": "x" * (26 * 1024)}} for i in range(items)]}).encode()


class _Api(QuietHandler):
    throttled = 0  # reads of "throttled" answered
    throttled_once = 0  # reads of "throttled-once" answered
    busy: ClassVar[dict[str, int]] = {}  # reads of "busy-<status>-<Retry-After>" answered, by name
    trickled: ClassVar[dict[str, int]] = {}  # reads of "trickle-head"/"trickle-body", by name

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        namespace = self.path.split("/namespaces/", 1)[-1].split("/", 1)[0]
        if namespace in _PAGE_ITEMS:
            self._slow_page(_PAGE_ITEMS[namespace], trickled=namespace == "trickled-page")
            return
        if name.startswith("trickle-"):
            _Api.trickled[name] = _Api.trickled.get(name, 0) + 1
            self._trickle(head=name == "trickle-head")
            return
        if name.startswith("busy-"):  # always busy: come back in the seconds the name says
            _Api.busy[name] = _Api.busy.get(name, 0) + 1
            code, seconds = name.removeprefix("busy-").split("-")
            self._busy(int(code), "ServiceUnavailable" if code == "503" else "TooManyRequests",
                       retry_after=seconds)
            return
        if self.path.endswith("/throttled-once"):  # the API server's throttling, then an answer
            type(self).throttled_once += 1
            if type(self).throttled_once == 1:
                self._busy(429, "TooManyRequests", retry_after="1")
                return
        if self.path.rsplit("/", 1)[-1] in _PAST_THE_CALENDAR:  # busy: come back in year 99999
            self._busy(503, "ServiceUnavailable",
                       retry_after=_PAST_THE_CALENDAR[self.path.rsplit("/", 1)[-1]])
            return
        if self.path.endswith("/throttled"):  # busy: come back in an hour
            type(self).throttled += 1
            self._busy(503, "ServiceUnavailable", retry_after="3600")
            return
        if self.path.endswith("/bomb") or self.path.endswith("?labelSelector=bomb"):
            body = _bomb()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:  # the client stopped reading and closed the connection
                pass
            return
        if self.path.endswith("/huge-declared"):  # says 1 GiB, sends up to 3 x 24 MiB of it
            self._huge(declared=True)
            return
        if self.path.endswith("/huge"):  # 24 MiB of JSON, its length not said before
            self._huge(declared=False)
            return
        if self.path.rsplit("/", 1)[-1] in _ODD:
            self._odd()
            return
        self.send_json(200, {"kind": "ConfigMap", "metadata": {"name": "seen"}})

    def _busy(self, code: int, reason: str, *, retry_after: str) -> None:
        """A Status failure asking the client to come back after ``retry_after`` seconds."""
        self.send_json(code, {"kind": "Status", "status": "Failure", "code": code,
                              "reason": reason, "message": "busy"},
                       headers={"Retry-After": retry_after})

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._odd()

    def _slow_page(self, items: int, *, trickled: bool) -> None:
        """A page of a list of ``items`` ConfigMaps (40: 1 MiB in all), sent as a slow but
        healthy link does, 32 KiB every 1/16 s (512 KiB/s: 2 s a MiB), or ``trickled``, a byte
        every 0.2 s."""
        body = _page_body(items)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        step, pause = (1, 0.2) if trickled else (32 * 1024, 1 / 16)
        try:
            for at in range(0, len(body), step):
                self.wfile.write(body[at:at + step])
                self.wfile.flush()
                time.sleep(pause)
        except OSError:  # the client gave up and closed the connection
            pass
        self.close_connection = True

    def _trickle(self, *, head: bool) -> None:
        """An answer sent a byte every 0.2 s for up to ``_TRICKLE_SECONDS`` (each read of it
        answered long before a timeout of one socket read): in its headers (``head``), else in
        its body, after the headers say it is 1 KiB long."""
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        if not head:
            self.wfile.write(b"Content-Length: 1024\r\n\r\n")
        self.wfile.write(b"X-Slow: " if head else b" ")
        self.wfile.flush()
        end = time.monotonic() + _TRICKLE_SECONDS
        try:
            while time.monotonic() < end:
                time.sleep(0.2)
                self.wfile.write(b"a" if head else b" ")
                self.wfile.flush()
        except OSError:  # the client gave up and closed the connection
            pass
        self.close_connection = True

    def _odd(self) -> None:
        status, body, location = _ODD[self.path.rsplit("/", 1)[-1]]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _huge(self, *, declared: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if declared:
            self.send_header("Content-Length", str(1024 ** 3))
        self.end_headers()
        chunk = b" " * (1024 * 1024)
        try:
            self.wfile.write(b'{"kind": "ConfigMap", "data": {"k": "')
            for _ in range(_HUGE // len(chunk) * (3 if declared else 1)):
                self.wfile.write(chunk)
            self.wfile.write(b'"}}')
        except OSError:  # the client stopped reading and closed the connection
            pass


@pytest.fixture
def local_api() -> Iterator[tuple[str, int]]:
    with serving(_Api) as url:
        port = urlsplit(url).port
        assert port is not None
        yield "127.0.0.1", port


@pytest.mark.parametrize("once", [None, 2.0])
def test_a_pool_manager_s_own_connections_are_kept_under_the_call_deadline(
        local_api: tuple[str, int], once: float | None) -> None:
    """A client whose pool manager opens its connections its own way (urllib3's
    SOCKSProxyManager: each through the proxy) still opens them so once ``Kube`` bounds its
    calls: here they reach the API server only through that way, the host being unresolvable."""
    class Routed(HTTPConnection):
        def _new_conn(self) -> socket.socket:  # as a SOCKS connection: elsewhere than host
            return socket.create_connection(local_api, timeout=5)

    class RoutedPool(HTTPConnectionPool):
        ConnectionCls = Routed

    class RoutedManager(PoolManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.pool_classes_by_scheme = {"http": RoutedPool, "https": RoutedPool}

    api = k8s.ApiClient(k8s.Configuration(host="http://kube.invalid"))
    api.rest_client.pool_manager = RoutedManager()
    kube = Kube(api)
    assert kube.get(CONFIGMAPS, "ns", "seen", once=once)["metadata"]["name"] == "seen"
    assert Kube(api).get(CONFIGMAPS, "ns", "seen", once=once)["metadata"]["name"] == "seen"


@pytest.fixture
def stalled_tls() -> Iterator[tuple[str, int]]:
    """A server that accepts TCP connections and trickles the TLS handshake: the head of a
    16 KiB handshake record, then one byte of it every 0.2 s, never the whole (a client waits
    for the rest, each read answered long before a timeout of one socket read)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def trickle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(bytes([0x16, 0x03, 0x03, 0x40, 0x00]))
                while not stop.wait(0.2):
                    conn.sendall(b"\x00")
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            thread = threading.Thread(target=trickle, args=(conn,), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield server.getsockname()[:2]
    finally:
        stop.set()
        server.close()
        acceptor.join(5)
        for thread in threads:
            thread.join(5)


def test_a_tls_handshake_trickled_after_a_slow_connect_ends_by_the_call_s_deadline(
        stalled_tls: tuple[str, int]) -> None:
    """The TLS handshake waits only for what is left of the call's deadline once the
    connection is made, not for the whole bound again: here the connection takes a second
    (as through a proxy slow to connect), and the API server then trickles its handshake."""
    from urllib3 import HTTPSConnectionPool
    from urllib3.connection import HTTPSConnection

    class SlowlyRouted(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            time.sleep(1.0)
            return socket.create_connection(stalled_tls, timeout=self.timeout)

    class SlowlyRoutedPool(HTTPSConnectionPool):
        ConnectionCls = SlowlyRouted

    class SlowlyRoutedManager(PoolManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.pool_classes_by_scheme = {"http": SlowlyRoutedPool,
                                           "https": SlowlyRoutedPool}

    api = k8s.ApiClient(k8s.Configuration(host="https://kube.invalid"))
    api.rest_client.pool_manager = SlowlyRoutedManager()
    kube = Kube(api)
    once = 2.0
    started = time.monotonic()
    with pytest.raises(ClusterError) as raised:
        kube.get(CONFIGMAPS, "ns", "seen", once=once)
    assert time.monotonic() - started < once + 0.5
    assert not isinstance(raised.value, ApiError) and transient(raised.value)
    assert raised.value.reason == "Unreachable" and "timed out" in raised.value.message


_SILENT_RESOLVER = """
import socket, sys, threading, time
from kubernetes import client as k8s
from wingman.kube import CONFIGMAPS, Kube

# the name server of this namespace's resolv.conf: takes every query and never answers
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", 53))
threading.Thread(target=lambda: [server.recvfrom(4096) for _ in iter(int, 1)],
                 daemon=True).start()
kube = Kube(k8s.ApiClient(k8s.Configuration(host="https://api.cluster.wingman.test:6443")))
started = time.monotonic()
try:
    kube.get(CONFIGMAPS, "ns", "seen", once=float(sys.argv[1]))
except Exception as exc:
    print(type(exc).__name__, getattr(exc, "reason", ""), exc)
print(time.monotonic() - started)
for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 0):  # the calls after it
    try:
        kube.get(CONFIGMAPS, "ns", "seen", once=float(sys.argv[1]))
    except Exception:
        pass
print(sum(t.name == "wingman-lookup" for t in threading.enumerate()))
"""


def _run_silent_resolver(tmp_path: Path, once: float, calls_after: int) -> list[str]:
    """The lines ``_SILENT_RESOLVER`` prints, run in a namespace of its own (its own network,
    loopback only, and a resolv.conf naming a silent name server on it); skipped where that
    cannot be made."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a resolver of its own")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
    script = tmp_path / "lookup.py"
    script.write_text(_SILENT_RESOLVER)
    shell = (f"ip link set lo up && mount --bind {resolv} /etc/resolv.conf && "
             f"exec {sys.executable} {script} {once} {calls_after}")
    try:
        done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "--net",
                               "sh", "-c", shell], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                              check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the call waited for the resolver, past its deadline and a minute")
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip(f"user namespaces are not allowed here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_looking_up_the_api_server_s_host_name_ends_by_the_call_s_deadline(
        tmp_path: Path) -> None:
    """A kubeconfig naming its API server by a host name whose lookup hangs (a name server that
    does not answer: the system resolver waits its own timeouts, 30 s here): the call is given
    up by its deadline, as one that gets no answer. Run in a namespace of its own (its own
    network, loopback only, and a resolv.conf naming a silent name server on it)."""
    once = 1.0
    outcome, elapsed, _ = _run_silent_resolver(tmp_path, once, 0)
    assert float(elapsed) < once + 1.0, outcome
    assert outcome.startswith("ClusterError Unreachable"), outcome
    assert "timed out" in outcome, outcome


def test_calls_while_the_api_server_s_host_name_lookup_hangs_share_one_lookup(
        tmp_path: Path) -> None:
    """Each call (and each retry) given up while the name server does not answer leaves its
    lookup to the system resolver's own timeouts (30 s here); a call that looks up the same name
    meanwhile waits on that lookup, so those calls hold one lookup thread, not one each."""
    outcome, _, threads = _run_silent_resolver(tmp_path, 0.5, 5)
    assert outcome.startswith("ClusterError Unreachable"), outcome
    assert int(threads) == 1, f"{threads} lookups of the same name under way at once"


def test_a_host_name_that_resolves_is_connected_to_within_the_call_s_deadline(
        local_api: tuple[str, int]) -> None:
    """The lookup made by the deadline gives the addresses the call connects to (``localhost``),
    and a name that does not exist fails as no answer."""
    _, port = local_api
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://localhost:{port}")))
    assert kube.get(CONFIGMAPS, "ns", "seen", once=2.0)["metadata"]["name"] == "seen"
    missing = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://kube.invalid:{port}")))
    with pytest.raises(ClusterError) as raised:
        missing.get(CONFIGMAPS, "ns", "seen", once=5.0)
    assert raised.value.reason == "Unreachable" and transient(raised.value)
    assert "NameResolutionError" in raised.value.message or "Errno" in raised.value.message


@pytest.mark.parametrize("once", [2.0, None])
def test_a_host_name_no_lookup_can_encode_fails_as_no_answer(once: float | None) -> None:
    """A kubeconfig naming its API server by a host name that cannot be looked up at all (a
    label over 63 characters, which the lookup's IDNA encoding refuses before any name server
    is asked) fails as the HTTP library fails it, ``cannot reach the API server``, never with
    the encoder's bare ``UnicodeError``, bounded call or not."""
    host = "a" * 64 + ".example"
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"https://{host}:6443")))
    with pytest.raises(ClusterError) as raised:
        if once is None:
            kube.get(CONFIGMAPS, "ns", "seen")
        else:
            kube.get(CONFIGMAPS, "ns", "seen", once=once)
    assert raised.value.reason == "Unreachable", raised.value
    assert "cannot reach the API server" in raised.value.message


def test_a_call_without_once_whose_answer_trickles_is_given_up_at_its_timeout(
        local_api: tuple[str, int]) -> None:
    """A client with no ``once`` (the CLI, the MCP server, the Python client) bounds each try
    of a call as a whole by its ``timeout``: an API server trickling its answer a byte at a
    time (each socket read answered within the timeout) cannot hold the call past it."""
    host, port = local_api
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://{host}:{port}")), timeout=1.0)
    start = time.monotonic()
    with pytest.raises(ClusterError) as raised:
        kube.get(CONFIGMAPS, "ns", "trickle-body")
    # given up at its 1 s (generous, for a loaded machine), not when the trickle ends (30 s)
    assert time.monotonic() - start < 5.0
    assert not isinstance(raised.value, ApiError) and transient(raised.value)
    assert raised.value.reason == "Unreachable"
    assert "cannot reach the API server" in raised.value.message
    assert "timed out" in raised.value.message
    assert kube.get(CONFIGMAPS, "ns", "seen")["metadata"]["name"] == "seen"


def _paged(local_api: tuple[str, int], monkeypatch: pytest.MonkeyPatch, *, ceiling: float,
           timeout: float) -> Kube:
    """A client of the local API server with ``timeout`` per try and no retries, the page
    ceiling (``PAGE_MAX_SECONDS``) lowered to ``ceiling``."""
    monkeypatch.setattr(kube_module, "PAGE_MAX_SECONDS", ceiling)
    host, port = local_api
    configuration = k8s.Configuration(host=f"http://{host}:{port}")
    configuration.retries = 0
    return Kube(k8s.ApiClient(configuration), timeout=timeout)


def test_a_large_page_of_a_list_on_a_slow_link_is_read_whole_past_the_try_s_timeout(
        local_api: tuple[str, int]) -> None:
    """A page of a list is the one answer a healthy API server makes large (up to 500 objects,
    tens of MiB): on a slow link it takes longer than a client's timeout per try (the CLI's,
    the MCP server's), and was given up at it, try after try, so a big but healthy list never
    completed. Its try waits as long as the page keeps coming at
    ``PAGE_MIN_BYTES_PER_SECOND``; a page trickled a byte at a time is still given up at the
    timeout."""
    host, port = local_api
    configuration = k8s.Configuration(host=f"http://{host}:{port}")
    configuration.retries = 0
    kube = Kube(k8s.ApiClient(configuration), timeout=1.0)
    start = time.monotonic()
    items = kube.list(CONFIGMAPS, "slow-page")
    assert [o["metadata"]["name"] for o in items] == [f"cm-{i}" for i in range(40)]
    assert time.monotonic() - start > 1.5  # longer than the timeout: it waited for the page
    start = time.monotonic()
    with pytest.raises(ClusterError) as raised:
        kube.list(CONFIGMAPS, "trickled-page")
    # given up at the 1 s timeout (generous, for a loaded machine), not waited for up to the
    # page's ceiling (``PAGE_MAX_SECONDS``, 120 s) as if it kept coming
    assert time.monotonic() - start < 5.0
    assert raised.value.reason == "Unreachable" and "timed out" in raised.value.message
    # an object (not a page) is bounded by the timeout as before
    with pytest.raises(ClusterError):
        kube.get(CONFIGMAPS, "ns", "trickle-body")


def test_a_page_that_keeps_coming_fast_enough_is_still_read_within_a_fixed_ceiling(
        local_api: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A page coming at ``PAGE_MIN_BYTES_PER_SECOND`` or faster moved its try's deadline on
    with each byte, up to the answer cap: some 512 s of one try (more with retries) for a
    server feeding 64 MiB slowly. The whole read of a page ends by ``PAGE_MAX_SECONDS`` from
    the try's start, however fast it comes, saying what happened and what to do (the ceiling
    lowered here to 1.2 s: above the try's timeout, far below the 16 s the long page takes)."""
    kube = _paged(local_api, monkeypatch, ceiling=1.2, timeout=0.5)
    host, port = local_api
    start = time.monotonic()
    with pytest.raises(ClusterError) as raised:
        kube.list(CONFIGMAPS, "long-page")
    # waited past the try's 0.5 s, up to the ceiling; given up there (generous, for a loaded
    # machine), long before the page's end
    assert 1.1 < time.monotonic() - start < 5.0
    message = raised.value.message
    assert raised.value.reason == "Unreachable", message
    assert message.startswith(f"reading a page of a list from the API server at "
                              f"http://{host}:{port} (GET /api/v1/namespaces/long-page/"
                              "configmaps) took more than 1 s in all, the most one page is "
                              "waited for ("), message
    assert "bytes of it received): the link to the API server is too slow" in message
    assert "delete the objects no longer needed" in message
    # the ceiling bounds pages only: an object is bounded by the timeout as before
    with pytest.raises(ClusterError) as raised:
        kube.get(CONFIGMAPS, "ns", "trickle-body")
    assert raised.value.message.startswith("cannot reach the API server")


@pytest.mark.parametrize("namespace", ["long-page", "trickled-page"])
def test_a_page_given_up_at_a_try_s_timeout_above_the_ceiling_says_it_timed_out(
        local_api: tuple[str, int], monkeypatch: pytest.MonkeyPatch, namespace: str) -> None:
    """A client whose timeout per try is above ``PAGE_MAX_SECONDS`` (lowered here below the
    try's 1 s) gives a page that try's timeout, which no byte moves on: a page given up at it
    timed out, as any answer does, and is not said to have taken longer than the ceiling."""
    kube = _paged(local_api, monkeypatch, ceiling=0.5, timeout=1.0)
    start = time.monotonic()
    with pytest.raises(ClusterError) as raised:
        kube.list(CONFIGMAPS, namespace)
    # at the try's 1 s (generous above, for a loaded machine), long before either page's end
    assert 0.9 < time.monotonic() - start < 5.0
    message = raised.value.message
    assert raised.value.reason == "Unreachable", message
    assert message.startswith("cannot reach the API server") and "timed out" in message, message
    assert "the most one page is waited for" not in message, message


def test_each_try_of_a_call_without_once_has_its_own_timeout_and_retries_are_kept(
        local_api: tuple[str, int]) -> None:
    """The HTTP library's retries (the client's configuration: here one) still happen, each
    try given the whole ``timeout`` again: two tries of a trickled answer, about 2 s in all."""
    host, port = local_api
    configuration = k8s.Configuration(host=f"http://{host}:{port}")
    configuration.retries = 1
    kube = Kube(k8s.ApiClient(configuration), timeout=1.0)
    _Api.trickled.clear()
    start = time.monotonic()
    with pytest.raises(ClusterError) as raised:
        kube.get(CONFIGMAPS, "ns", "trickle-head")
    took = time.monotonic() - start
    assert _Api.trickled["trickle-head"] == 2
    # each try its whole 1 s; each given up there (generous, for a loaded machine), neither
    # running the trickle out (30 s)
    assert 1.8 < took < 8.0
    assert raised.value.reason == "Unreachable" and "timed out" in raised.value.message


@pytest.mark.parametrize("name", ["huge", "huge-declared"])
def test_a_bounded_call_reads_no_more_than_its_cap_of_an_answer_and_fails_closed(
        local_api: tuple[str, int], name: str) -> None:
    """An answer larger than any object a bounded call reads (a broken or hostile server) is
    read in chunks and given up past ``MAX_ANSWER_BYTES`` (at once when its Content-Length
    says so): a clear error, as no answer, never the whole of it in memory; and the
    connection is not reused with the rest of it unread."""
    host, port = local_api
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://{host}:{port}")))
    with pytest.raises(AnswerTooLarge) as raised:
        kube.get(CONFIGMAPS, "ns", name, once=10.0)
    assert isinstance(raised.value, ClusterError) and not isinstance(raised.value, ApiError)
    assert raised.value.reason == "AnswerTooLarge"
    assert f"more than {MAX_ANSWER_BYTES // 2 ** 20} MiB" in raised.value.message
    assert f"/namespaces/ns/configmaps/{name}" in raised.value.message
    assert transient(raised.value)  # no answer: a write's outcome is unknown
    assert kube.get(CONFIGMAPS, "ns", "seen", once=10.0)["metadata"]["name"] == "seen"


@pytest.mark.parametrize("method", ["POST", "PATCH", "PUT", "DELETE"])
def test_a_write_answered_past_the_cap_says_it_may_have_landed(method: str) -> None:
    """A write whose answer is too large to read has an unknown outcome: the error says it may
    have landed and to read the object before trying again (the CLI and the MCP server answer
    it as ``too_large``, "nothing to retry", which must not read as "nothing happened"); a
    read's says no such thing."""
    path = "/apis/wingman.dev/v1alpha1/namespaces/ns/approvalrequests/r"
    wrote = _too_large(method, path, "https://10.0.0.1:6443", MAX_ANSWER_BYTES)
    read = _too_large("GET", path, "https://10.0.0.1:6443", MAX_ANSWER_BYTES)
    assert f"the {method} may have landed: read the object before trying it again" \
        in wrote.message
    assert "may have landed" not in read.message
    assert wrote.reason == read.reason == "AnswerTooLarge"


@pytest.mark.parametrize(("once", "cap"), [(None, MAX_UNBOUNDED_ANSWER_BYTES),
                                           (10.0, MAX_ANSWER_BYTES)])
@pytest.mark.parametrize("listed", [False, True])
def test_a_compressed_answer_is_read_no_further_than_the_cap_once_decoded(
        local_api: tuple[str, int], once: float | None, cap: int, listed: bool) -> None:
    """A gzip answer a few hundred KiB long that decodes to more than the cap (a broken or
    hostile server: a gzip bomb) stops at the cap, decoded bytes counted, for a call with a
    deadline and for one without (the operator's, the chat service's): never its whole in
    memory. A list's page that large says its objects are far larger than Wingman's (a page
    holds at most 500), an object never legitimately is; and the connection is not reused
    with the rest unread."""
    host, port = local_api
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://{host}:{port}")))
    with pytest.raises(AnswerTooLarge) as raised:
        if listed:
            kube.request("GET", CONFIGMAPS.path("ns"), query={"labelSelector": "bomb"},
                         once=once)
        else:
            kube.get(CONFIGMAPS, "ns", "bomb", once=once)
    assert raised.value.reason == "AnswerTooLarge" and transient(raised.value)
    assert f"more than {cap // 2 ** 20} MiB" in raised.value.message
    assert ("a page of a list holds at most 500 objects, so these configmaps are far larger"
            in raised.value.message) is listed
    assert kube.get(CONFIGMAPS, "ns", "seen", once=once)["metadata"]["name"] == "seen"


def test_a_call_without_a_deadline_reads_a_list_larger_than_a_bounded_call_s_cap(
        local_api: tuple[str, int]) -> None:
    """The operator's, the chat service's and the MCP server's calls list whole collections
    (requests and grants kept for the retention): an answer past ``MAX_ANSWER_BYTES`` but
    under their own cap is read whole."""
    host, port = local_api
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://{host}:{port}")))
    assert MAX_ANSWER_BYTES < 24 * 2 ** 20 < MAX_UNBOUNDED_ANSWER_BYTES
    assert kube.get(CONFIGMAPS, "ns", "huge")["kind"] == "ConfigMap"


@pytest.mark.parametrize("once", [None, 2.0])
@pytest.mark.parametrize("name", ["garbled", "not-utf8", "nested", "scalar"])
def test_an_answer_that_is_not_json_is_a_clear_cluster_error_never_a_crash(
        local_api: tuple[str, int], name: str, once: float | None) -> None:
    """A 200 whose body is not JSON an API server sends (a proxy's HTML page, bytes not UTF-8,
    arrays nested past the parser's recursion limit, a bare number) fails the call as
    ``UnusableAnswer``: a ``ClusterError`` every caller handles (no ValueError or
    RecursionError crashing it with a traceback), counted as no answer (a write's outcome is
    unknown), naming the call and never the body."""
    host, port = local_api
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://{host}:{port}")))
    with pytest.raises(UnusableAnswer) as raised:
        kube.get(CONFIGMAPS, "ns", name, once=once)
    assert isinstance(raised.value, ClusterError) and not isinstance(raised.value, ApiError)
    assert raised.value.reason == "UnusableAnswer" and transient(raised.value)
    assert f"GET /api/v1/namespaces/ns/configmaps/{name} with 200" in raised.value.message
    assert "Bad Gateway" not in raised.value.message
    assert "check that the address is the API server's" in raised.value.message
    assert kube.get(CONFIGMAPS, "ns", "seen", once=once)["metadata"]["name"] == "seen"


@pytest.fixture
def negative_chunk() -> Iterator[int]:
    """A server whose answers announce a chunk of negative size (``-2``), a framing no HTTP
    server sends and urllib3 does not check: a broken or hostile proxy in front of the API
    server. Its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept
        server.close()
        thread.join(timeout=5)


@pytest.mark.parametrize("once", [None, 2.0])
def test_an_answer_the_http_library_cannot_read_is_no_answer_never_a_fault_of_the_caller(
        negative_chunk: int, once: float | None) -> None:
    """An answer whose body breaks the HTTP library's reading in a way of its own (a chunk of
    negative size: urllib3 raises a bare ValueError) is a broken answer: ``Unreachable``, a
    ``ClusterError`` that may pass and that every caller handles (the gateway makes the write
    of a command's result again, then records it unrecorded), never an exception that escapes
    them as a fault of the caller."""
    configuration = k8s.Configuration(host=f"http://127.0.0.1:{negative_chunk}")
    configuration.retries = False
    kube = Kube(k8s.ApiClient(configuration), timeout=5)
    try:
        with pytest.raises(ClusterError) as raised:
            kube.get(CONFIGMAPS, "ns", "x", once=once)
    finally:
        kube.close()
    assert not isinstance(raised.value, ApiError)
    assert raised.value.reason == "Unreachable" and transient(raised.value)
    assert raised.value.message == (f"cannot reach the API server at http://127.0.0.1:"
                                    f"{negative_chunk}: ProtocolError")


@pytest.mark.parametrize("once", [None, 2.0])
@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_a_call_answered_with_a_redirect_fails_never_succeeds(
        local_api: tuple[str, int], method: str, once: float | None) -> None:
    """A redirect (which an API server never sends: a proxy, another service) is neither
    followed nor taken for the call's success, whether the call has a deadline (the gateway's)
    or not (the operator's): a read is not answered by what another address says, and a write
    answered ``302`` with ``{}`` did not land as far as the caller can tell (a burn, a status
    write, a Job the operator creates), so it fails as no answer."""
    host, port = local_api
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://{host}:{port}")))
    with pytest.raises(UnusableAnswer) as raised:
        if method == "GET":
            kube.get(CONFIGMAPS, "ns", "redirected", once=once)
        else:
            kube.patch(CONFIGMAPS, "ns", "redirected", {"data": {"k": "v"}}, once=once)
    assert transient(raised.value)
    assert f"{method} /api/v1/namespaces/ns/configmaps/redirected with 302" in \
        raised.value.message


@pytest.mark.parametrize("once", [None, 2.0])
def test_an_error_answer_whose_body_is_nested_past_reason_is_still_the_api_error(
        local_api: tuple[str, int], once: float | None) -> None:
    """A 5xx whose body is no Status (here arrays nested past the parser's recursion limit) is
    the ApiError of its status, never a RecursionError."""
    host, port = local_api
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://{host}:{port}")))
    with pytest.raises(ApiError) as raised:
        kube.get(CONFIGMAPS, "ns", "failed-nested", once=once)
    assert raised.value.status == 500 and transient(raised.value)


@pytest.mark.parametrize(("body", "detail"), [
    (b'{"kind": "Status", "reason": "Forbidden", "message": "pods is forbidden: no"}',
     "pods is forbidden: no"),
    (b'{"kind": "Status", "reason": "Forbidden"}', "Forbidden"),
    (b"<html>proxy</html>", "Forbidden"),
])
def test_an_api_errors_detail_is_the_api_servers_own_words_else_its_reason(
        body: bytes, detail: str) -> None:
    """What callers quote in messages of their own (verify-privileges, the dev node): the
    Status's message, else its reason (or the HTTP reason phrase), never our "API server
    answered" framing; an error made here, not read from an answer, is its own message."""
    error = _api_error(403, body, "Forbidden")
    assert error.detail == detail
    assert error.message.startswith("API server answered 403 Forbidden: ")
    made = ApiError(404, "NotFound", "ConfigMap x is missing in ns: the chart creates it")
    assert made.detail == made.message


def _throttled_answer(kube: Kube) -> ApiError:
    """The error of a read answered 503 with ``Retry-After: 3600`` (counted in
    ``_Api.throttled``, reset here), made on a thread so that a client sleeping the hour fails
    the test instead of hanging it."""
    _Api.throttled = 0
    got: list[BaseException] = []

    def call() -> None:
        try:
            kube.get(CONFIGMAPS, "ns", "throttled")
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            got.append(exc)
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(60)  # a bound for a test that would otherwise sleep hours, not a speed
    assert not thread.is_alive(), "the HTTP library slept on the answer's Retry-After"
    assert len(got) == 1 and isinstance(got[0], ApiError), got
    return got[0]


@pytest.mark.parametrize("retries", [None, 2])
def test_an_answer_s_long_retry_after_is_the_caller_s_to_weigh_not_slept_on_for_hours(
        local_api: tuple[str, int], retries: int | None) -> None:
    """A call without a deadline, on a client that keeps the HTTP library's retries (the chat
    service, the CLI, the MCP server, verify-privileges), answered 503 with
    ``Retry-After: 3600``, past ``RETRY_AFTER_SLEEP_MAX``: the server's answer comes back at
    once, asked once (neither slept on for the hour nor asked again sooner than it said),
    with its ``retry_after``, for the caller to say or weigh against its budget (not an
    error of the library's)."""
    host, port = local_api
    configuration = k8s.Configuration(host=f"http://{host}:{port}")
    configuration.retries = retries
    kube = Kube(k8s.ApiClient(configuration))
    got = _throttled_answer(kube)
    assert got.status == 503 and got.retry_after == 3600
    assert _Api.throttled == 1


def test_the_api_server_s_throttling_is_still_waited_out_by_the_http_library(
        local_api: tuple[str, int]) -> None:
    """The API server's own throttling (429, ``Retry-After: 1``) is still tried again after
    the second it asks, as before: the call succeeds."""
    host, port = local_api
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://{host}:{port}")))
    _Api.throttled_once = 0
    assert kube.get(CONFIGMAPS, "ns", "throttled-once")["metadata"]["name"] == "seen"
    assert _Api.throttled_once == 2


def test_an_answer_asking_for_a_wait_within_the_cap_is_still_waited_and_asked_again(
        local_api: tuple[str, int]) -> None:
    """A 503 with ``Retry-After: 1`` (within ``RETRY_AFTER_SLEEP_MAX``) on a client that
    keeps the HTTP library's default retries is waited out and asked again as before, each of its
    retries, and only then handed back as the server's answer, its ``retry_after`` kept."""
    host, port = local_api
    kube = Kube(k8s.ApiClient(k8s.Configuration(host=f"http://{host}:{port}")))
    _Api.busy.clear()
    with pytest.raises(ApiError) as raised:
        kube.get(CONFIGMAPS, "ns", "busy-503-1")
    assert raised.value.status == 503 and raised.value.retry_after == 1
    assert _Api.busy["busy-503-1"] == 1 + 3  # urllib3's default: three retries


def test_a_client_configured_with_a_retry_of_its_own_keeps_it_with_short_sleeps(
        local_api: tuple[str, int]) -> None:
    """A client whose configuration's ``retries`` is a ``Retry`` (the kubernetes library
    accepts one, as an int): its tries are the ones it says (here 2 more), the HTTP library
    waiting out a ``Retry-After`` within ``RETRY_AFTER_SLEEP_MAX`` (here 0 s) before each,
    and the server's answer comes back as it is once they are spent; not taken for a count,
    failing every call as 'cannot reach the API server'."""
    host, port = local_api
    configuration = k8s.Configuration(host=f"http://{host}:{port}")
    configuration.retries = Retry(total=2)
    kube = Kube(k8s.ApiClient(configuration))
    _Api.busy.clear()
    with pytest.raises(ApiError) as raised:
        kube.get(CONFIGMAPS, "ns", "busy-503-0")
    assert raised.value.status == 503 and raised.value.retry_after == 0
    assert _Api.busy["busy-503-0"] == 3
    assert kube.get(CONFIGMAPS, "ns", "seen")["metadata"]["name"] == "seen"


class _Chunking(QuietHandler):
    """The API server's chunked lists: the ConfigMaps a, b (continue "t1"), then c; a continue
    token answered 410 Gone (Expired) ``expire`` times, as the API server answers one whose
    snapshot etcd compacted; a field selector on grants refused as on a CRD without
    selectableFields."""

    expire = 0
    firsts = 0  # first pages read (a list started, or started again)
    grant_lists: ClassVar[list[str]] = []  # the field selector of each list of grants ("": none)
    limits: ClassVar[list[str]] = []  # the page size each page was asked with

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if p)
        type(self).limits.append(params.get("limit", ""))
        if path.endswith("/executiongrants"):
            type(self).grant_lists.append(unquote(params.get("fieldSelector", "")))
            if "req-refused" in params.get("fieldSelector", ""):  # a 400 for another cause
                self.send_json(400, {"kind": "Status", "status": "Failure", "code": 400,
                                     "reason": "BadRequest", "message":
                                     "the server rejected our request for an unknown reason"})
                return
            if "fieldSelector" in params:
                self.send_json(400, {"kind": "Status", "status": "Failure", "code": 400,
                                     "reason": "BadRequest", "message":
                                     "field label not supported: spec.approvalRef.name"})
                return
            self.send_json(200, {"kind": "List", "metadata": {}, "items": [
                {"metadata": {"name": f"g-{ref}-{i}", "creationTimestamp": f"2026-01-0{i}",
                              "uid": f"uid-{i}", "resourceVersion": str(i)},
                 "spec": {"approvalRef": {"name": ref}}}
                for i, ref in ((1, "req-b"), (2, "req-a"), (3, "req-b"), (4, "req-a"))]})
            return
        if "continue" not in params:
            type(self).firsts += 1
            if params.get("labelSelector") == "expired-first":
                self._expired()
                return
            self.send_json(200, {"kind": "List", "metadata": {"continue": "t1"}, "items": [
                {"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]})
            return
        if type(self).expire > 0:
            type(self).expire -= 1
            self._expired()
            return
        self.send_json(200, {"kind": "List", "metadata": {},
                             "items": [{"metadata": {"name": "c"}}]})

    def _expired(self) -> None:
        self.send_json(410, {"kind": "Status", "status": "Failure", "code": 410,
                             "reason": "Expired", "metadata": {"continue": "inconsistent"},
                             "message": "The provided continue parameter is too old to display a "
                                        "consistent list result."})


@pytest.fixture
def chunking() -> Iterator[Kube]:
    _Chunking.expire, _Chunking.firsts, _Chunking.grant_lists, _Chunking.limits = 0, 0, [], []
    with serving(_Chunking) as url:
        yield Kube(k8s.ApiClient(k8s.Configuration(host=url)))


def test_an_expired_continue_token_starts_the_list_again_never_stitching_two_snapshots(
        chunking: Kube) -> None:
    """A 410 Gone on a later page (etcd compacted the list's snapshot) starts the list again
    from its first page: every object exactly once, in order, none of the first try's pages
    kept, and never the inconsistent continue token the 410 offers."""
    _Chunking.expire = 1
    assert [o["metadata"]["name"] for o in chunking.list(CONFIGMAPS, "ns")] == ["a", "b", "c"]
    assert _Chunking.firsts == 2


def test_a_caller_that_keeps_little_of_each_object_asks_for_smaller_pages(
        chunking: Kube) -> None:
    names_ = [o["metadata"]["name"] for o in chunking.list(CONFIGMAPS, "ns", page_size=100)]
    assert (names_, _Chunking.limits) == (["a", "b", "c"], ["100", "100"])
    _Chunking.limits.clear()
    chunking.list(CONFIGMAPS, "ns")
    assert _Chunking.limits == [str(LIST_PAGE_SIZE)] * 2
    _Chunking.limits.clear()
    chunking.list(CONFIGMAPS, "ns", page_size=LIST_PAGE_SIZE + 1)  # never more than the cap
    assert _Chunking.limits == [str(LIST_PAGE_SIZE)] * 2
    with pytest.raises(ValueError, match="page_size must be at least 1, not 0"):
        chunking.list(CONFIGMAPS, "ns", page_size=0)


def test_a_list_whose_continue_token_keeps_expiring_fails_clearly(chunking: Kube) -> None:
    _Chunking.expire = 100
    with pytest.raises(ListExpired) as raised:
        chunking.list(CONFIGMAPS, "ns")
    assert _Chunking.firsts == LIST_RESTARTS + 1
    assert "try again" in raised.value.message and "410 Gone" in raised.value.message
    assert transient(raised.value)
    _Chunking.firsts = 0  # a 410 on a first page is the API server's error, never a restart
    with pytest.raises(ApiError) as refused:
        chunking.list(CONFIGMAPS, "ns", label_selector="expired-first")
    assert refused.value.status == 410
    assert _Chunking.firsts == 1


def test_a_request_s_grants_are_filtered_by_the_client_where_the_field_is_not_selectable(
        chunking: Kube) -> None:
    """An API server that cannot select grants by spec.approvalRef.name (Kubernetes 1.30, or
    an older CRD) refuses the field selector: the grants of the request are then those the
    client keeps of the whole list, the same ones, oldest first."""
    from wingman.client.api import WingmanClient
    from wingman.client.connect import Connection

    client = WingmanClient(Connection(chunking, "ns", "test"))
    assert [g["metadata"]["name"] for g in client.grants_of("req-a")] == ["g-req-a-2",
                                                                           "g-req-a-4"]
    assert chunking.list(GRANTS, "ns")  # the whole list, for contrast


@pytest.mark.parametrize("name", sorted(_PAST_THE_CALENDAR))
@pytest.mark.parametrize("retries", [None, 1])
def test_a_retry_after_past_the_calendar_is_the_callers_answer_never_an_error_that_escapes(
        local_api: tuple[str, int], name: str, retries: int | None) -> None:
    """A 503 whose ``Retry-After`` is a date no calendar holds (a broken or hostile server) is
    made again by the HTTP library as one that asks for no wait, then handed to the caller
    as the server's answer (``ApiError`` 503, no ``retry_after``): a call without a deadline,
    with the client's own retries (the operator's, the chat service's, verify-privileges'),
    never fails with the ValueError or OverflowError urllib3 raises on it, which no caller
    handles."""
    host, port = local_api
    configuration = k8s.Configuration(host=f"http://{host}:{port}")
    configuration.retries = retries
    kube = Kube(k8s.ApiClient(configuration), timeout=5)
    try:
        with pytest.raises(ApiError) as raised:
            kube.get(CONFIGMAPS, "ns", name)
    finally:
        kube.close()
    assert raised.value.status == 503 and raised.value.retry_after is None
    assert transient(raised.value)


def test_a_field_selector_refused_for_another_cause_fails_never_listing_every_grant(
        chunking: Kube) -> None:
    """Only the API server's "field label not supported" falls back to filtering the whole
    list: a 400 for any other cause is the caller's error (Invalid, the server's message),
    and no list of every grant is made in its place."""
    from wingman.client.api import WingmanClient
    from wingman.client.connect import Connection
    from wingman.errors import Invalid

    client = WingmanClient(Connection(chunking, "ns", "test"))
    with pytest.raises(Invalid, match="rejected our request"):
        client.grants_of("req-refused")
    assert _Chunking.grant_lists == ["spec.approvalRef.name=req-refused"]
    assert [g["metadata"]["name"] for g in client.grants_of("req-a")] == ["g-req-a-2",
                                                                           "g-req-a-4"]
    assert _Chunking.grant_lists[1:] == ["spec.approvalRef.name=req-a", ""]


def test_an_endpoint_carries_the_connection_and_no_credential(tmp_path: Path) -> None:
    """The operator's writer process calls as the operator's client does (TLS: the CA, the
    client certificate's and key's files; the timeouts; the pool's size) from its
    ``Endpoint``, which holds no token: the token goes apart, as refreshed."""
    ca, cert, key = (tmp_path / name for name in ("ca.crt", "client.crt", "client.key"))
    kubeconfig = _kubeconfig(tmp_path / "config", "c", "https://127.0.0.1:6443",
                             {"token": "secret-token", "client-certificate": str(cert),
                              "client-key": str(key)}, ca=str(ca))
    for path in (ca, cert, key):
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        kube = Kube.from_environment(retries=False)
    finally:
        del os.environ["KUBECONFIG"]
    endpoint = kube.endpoint(pool_size=7)
    pool = dict(endpoint.pool)
    assert endpoint.host == "https://127.0.0.1:6443"
    assert (pool["ca_certs"], pool["cert_file"], pool["key_file"]) == (str(ca), str(cert),
                                                                       str(key))
    assert pool["maxsize"] == 7 and endpoint.retries is False
    assert endpoint.timeout == kube.timeout and endpoint.impersonate is None
    assert b"secret-token" not in pickle.dumps(endpoint)
    assert kube.authorization() == "Bearer secret-token"

    elsewhere = Kube.from_endpoint(endpoint)
    assert elsewhere.authorization() is None  # until the operator gives it one
    elsewhere.authorize("Bearer secret-token")
    assert elsewhere.authorization() == "Bearer secret-token"
    assert elsewhere.api.configuration.cert_file == str(cert)
    with pytest.raises(TypeError, match=r"only a client made by Kube\.from_endpoint"):
        kube.authorize("Bearer other")
    kube.close()
    elsewhere.close()


def test_a_call_from_an_endpoint_sends_what_it_was_authorized_with() -> None:
    seen: list[str | None] = []

    class Api(QuietHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_json(200, {"metadata": {"name": "seen"}})

    with serving(Api) as url:
        kube = Kube.from_endpoint(Kube.from_token(url, "t", Path("/dev/null")).endpoint())
        kube.get(CONFIGMAPS, "ns", "seen")
        kube.authorize("Bearer t2")
        kube.get(CONFIGMAPS, "ns", "seen")
        kube.close()
    assert seen == [None, "Bearer t2"]


def test_a_connection_through_a_proxy_is_not_handed_to_another_process() -> None:
    configuration = k8s.Configuration(host="https://kube.example:6443")
    configuration.proxy = "http://proxy.example:3128"
    kube = Kube(k8s.ApiClient(configuration))
    with pytest.raises(ClusterError, match=r"through a proxy \(ProxyManager\)") as raised:
        kube.endpoint()
    assert raised.value.reason == "NotPortable"

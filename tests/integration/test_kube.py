"""The API client against the real API server: the connections the operator's pool drops when
its threads go idle are closed, and dropping them never fails a call; a client of a mounted
ServiceAccount calls with the token the kubelet last wrote; lists are read page by page, bounded,
and the API server selects one request's grants; a metadata-only list holds no object's data."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from support.kubeconfigs import one_per_user, whoami
from wingman import kube as kube_module
from wingman.chat import render
from wingman.chat.cluster import ChatCluster
from wingman.client.api import WingmanClient, build_grant
from wingman.client.connect import Connection
from wingman.dev.cluster import LocalCluster
from wingman.kube import GRANTS, SECRETS, Kube, ListTooLarge, Resource

CONFIGMAPS = Resource("", "v1", "configmaps")


def _idle_connections(kube: Kube) -> int:
    manager = kube.api.rest_client.pool_manager
    pools = [manager.pools.get(key) for key in list(manager.pools.keys())]
    return sum(1 for p in pools if p is not None for c in list(p.pool.queue) if c is not None)


def test_idle_connections_are_closed_and_the_next_call_opens_one(cluster: LocalCluster,
                                                                  namespace: str) -> None:
    kube = Kube(cluster.api_client())
    with ThreadPoolExecutor(4) as threads:  # four calls at once: four connections kept
        barrier = threading.Barrier(4)

        def call(_: int) -> Any:
            barrier.wait(10)
            return kube.list(CONFIGMAPS, namespace)

        list(threads.map(call, range(4)))
    assert _idle_connections(kube) == 4
    assert kube.drop_connections(keep=1) == 3  # the most recently used one stays
    assert _idle_connections(kube) == 1
    assert kube.drop_connections() == 1
    assert _idle_connections(kube) == 0
    assert kube.list(CONFIGMAPS, namespace) is not None  # a new connection
    assert _idle_connections(kube) == 1
    kube.close()


def test_dropping_connections_never_fails_a_call(cluster: LocalCluster, namespace: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    kube = Kube(cluster.api_client())
    kube.create(CONFIGMAPS, namespace, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    stop = threading.Event()
    dropped = 0

    def drop() -> None:
        nonlocal dropped
        while not stop.is_set():
            dropped += kube.drop_connections()
            stop.wait(0.002)

    dropper = threading.Thread(target=drop)
    dropper.start()
    try:
        with ThreadPoolExecutor(8) as threads:
            got = list(threads.map(lambda _: kube.get(CONFIGMAPS, namespace, "c"), range(400)))
    finally:
        stop.set()
        dropper.join()
    assert all(c["data"] == {"k": "v"} for c in got)
    assert dropped > 0  # connections were closed while the calls went on
    # and the pool never held more than its size (urllib3 would discard one, with a warning)
    assert "Connection pool is full" not in caplog.text
    kube.close()


def test_every_call_is_told_to_the_observer_with_its_verb_resource_and_status(
        cluster: LocalCluster, namespace: str, crds: Any) -> None:
    """The operator's API metrics come from this: each call once, as the API server's verb,
    the resource with its subresource, and the HTTP status (a refusal too)."""
    from wingman.kube import APPROVALS, ApiError

    seen: list[tuple[str, str, str]] = []
    kube = Kube(cluster.api_client(),
                observer=lambda verb, res, code, seconds: seen.append((verb, res, code)))
    body = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": "r"},
            "spec": {"requester": "someone", "environment": "test", "instruction": "observed",
                     "commands": ["kubectl rollout restart deployment/web -n apps"]}}
    kube.create(APPROVALS, namespace, body)
    kube.get(APPROVALS, namespace, "r")
    kube.list(APPROVALS, namespace)
    kube.patch(APPROVALS, namespace, "r", {"status": {"phase": "Pending"}},
               subresource="status")
    assert kube.get_or_none(CONFIGMAPS, namespace, "missing") is None
    with pytest.raises(ApiError):
        kube.as_user("system:serviceaccount:nobody:none").list(CONFIGMAPS, namespace)
    kube.delete(APPROVALS, namespace, "r")
    assert seen == [("create", "approvalrequests", "201"), ("get", "approvalrequests", "200"),
                    ("list", "approvalrequests", "200"),
                    ("patch", "approvalrequests/status", "200"),
                    ("get", "configmaps", "404"), ("list", "configmaps", "403"),
                    ("delete", "approvalrequests", "200")]
    kube.close()


def test_an_observer_that_fails_never_changes_a_call_s_result(cluster: LocalCluster,
                                                             namespace: str) -> None:
    def broken(verb: str, resource: str, code: str, seconds: float) -> None:
        raise RuntimeError("metrics are down")

    kube = Kube(cluster.api_client(), observer=broken)
    assert kube.get_or_none(CONFIGMAPS, namespace, "missing") is None  # the 404 still means it
    made = kube.create(CONFIGMAPS, namespace, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    assert made["data"] == {"k": "v"}
    kube.close()


def _write_projection(sa_dir: Path, generation: int, token: str, ca: bytes) -> None:
    """As the kubelet updates a projected volume: a new directory, then ``..data`` swapped."""
    data = sa_dir / f"..gen{generation}"
    data.mkdir()
    (data / "token").write_text(token)
    (data / "ca.crt").write_bytes(ca)
    (sa_dir / "..tmp").symlink_to(data.name)
    (sa_dir / "..tmp").rename(sa_dir / "..data")
    for name in ("token", "ca.crt"):
        if not (sa_dir / name).is_symlink():
            (sa_dir / name).symlink_to(f"..data/{name}")


def test_a_service_account_client_calls_with_the_token_the_kubelet_last_wrote(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    """A gateway whose command outlives its first ServiceAccount token (600 s) writes its
    result with the token the kubelet wrote meanwhile. The two tokens here are of two
    accounts, so the API server itself says which one each call carried."""
    for account in ("first", "second"):
        cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    path = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    ca = cluster.ca_file.read_bytes()

    def token(account: str) -> str:
        return cluster.kubectl("create", "token", account, "-n", namespace,
                               "--duration=10m").stdout.strip()

    def caller() -> str:
        return str(kube.request("POST", path, review)["status"]["userInfo"]["username"])

    _write_projection(sa_dir, 1, token("first"), ca)
    kube = Kube.from_service_account(cluster.server, sa_dir)
    assert caller() == f"system:serviceaccount:{namespace}:first"
    _write_projection(sa_dir, 2, token("second"), ca)
    for _ in range(3):  # every later call, not only the first after the change
        assert caller() == f"system:serviceaccount:{namespace}:second"
    kube.close()


def test_from_environment_acts_as_the_user_kubectl_does_with_several_kubeconfigs(
        cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # kubectl takes the current context of the first file that sets one; the kubernetes
    # library alone takes the last file's, and would act as another user than kubectl does
    first, second = one_per_user(cluster, tmp_path, "kctx-first", "kctx-second")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubectl = subprocess.run(
        [str(cluster.tool("kubectl")), "auth", "whoami", "-o",
         "jsonpath={.status.userInfo.username}"], capture_output=True, text=True, timeout=60,
        check=True, env={**cluster.env(), "KUBECONFIG": f"{first}:{second}"}).stdout
    assert kubectl == "kctx-first"
    kube = Kube.from_environment()
    try:
        assert whoami(kube.api) == kubectl
    finally:
        kube.close()


def _listed(cluster: LocalCluster) -> tuple[Kube, list[str]]:
    """A client and the lists it makes (the observer's calls: one per page)."""
    calls: list[str] = []

    def observe(verb: str, resource: str, code: str, _seconds: float) -> None:
        if verb == "list":
            calls.append(f"{resource} {code}")
    return Kube(cluster.api_client(), observer=observe), calls


def test_a_list_larger_than_a_page_is_read_page_by_page_every_object_once_in_order(
        cluster: LocalCluster, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page holds at most ``LIST_PAGE_SIZE`` objects (the API server's chunking, one
    snapshot): seven objects at three a page are three answers, and the list is every object
    exactly once, in the API server's order, whatever ``keep`` drops never held."""
    kube, calls = _listed(cluster)
    made = [f"cm-{i}" for i in (3, 0, 6, 1, 5, 2, 4)]
    for name in made:
        kube.create(CONFIGMAPS, namespace, {"metadata": {"name": name,
                                                         "labels": {"t": "paged"}}})
    monkeypatch.setattr(kube_module, "LIST_PAGE_SIZE", 3)
    listed = kube.list(CONFIGMAPS, namespace, label_selector="t=paged")
    assert [o["metadata"]["name"] for o in listed] == sorted(made)
    assert calls == ["configmaps 200"] * 3
    calls.clear()
    odd = kube.list(CONFIGMAPS, namespace, label_selector="t=paged",
                    keep=lambda o: o if int(o["metadata"]["name"][3:]) % 2 else None)
    assert [o["metadata"]["name"] for o in odd] == ["cm-1", "cm-3", "cm-5"]
    assert len(calls) == 3


def test_a_metadata_only_list_holds_each_object_s_metadata_and_never_its_data(
        cluster: LocalCluster, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``metadata_only``: the API server sends each object's metadata alone (labels, owners,
    UID), page by page, and none of its data: the orphan sweep decides by these and never
    reads a live token or a Job's pod spec to do so."""
    kube, calls = _listed(cluster)
    for i in range(3):
        kube.create(SECRETS, namespace, {"metadata": {"name": f"s-{i}", "labels": {"t": "meta"}},
                                         "stringData": {"token": f"secret-value-{i}"}})
    monkeypatch.setattr(kube_module, "LIST_PAGE_SIZE", 2)
    listed = kube.list(SECRETS, namespace, label_selector="t=meta", metadata_only=True)
    assert [o["metadata"]["name"] for o in listed] == ["s-0", "s-1", "s-2"]
    assert {o["kind"] for o in listed} == {"PartialObjectMetadata"}
    assert all(o["metadata"]["labels"] == {"t": "meta"} and o["metadata"]["uid"]
               for o in listed)
    assert "secret-value" not in repr(listed) and all("data" not in o for o in listed)
    assert calls == ["secrets 200"] * 2
    whole = kube.list(SECRETS, namespace, label_selector="t=meta")
    assert all(o["data"]["token"] for o in whole)


def test_a_list_keeping_more_than_it_may_hold_fails_saying_what_to_do(
        cluster: LocalCluster, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a list keeps is bounded over all its pages, not only per answer: past
    ``MAX_LIST_BYTES`` it fails (delete finished ones, lower retentionSeconds); what ``keep``
    drops counts for nothing."""
    kube = Kube(cluster.api_client())
    for i in range(4):
        kube.create(CONFIGMAPS, namespace, {"metadata": {"name": f"big-{i}",
                                                         "labels": {"t": "big"}},
                                            "data": {"k": "x" * 4000}})
    monkeypatch.setattr(kube_module, "LIST_PAGE_SIZE", 2)
    monkeypatch.setattr(kube_module, "MAX_LIST_BYTES", 4 * 4000)  # three, not four
    with pytest.raises(ListTooLarge) as raised:
        kube.list(CONFIGMAPS, namespace, label_selector="t=big")
    assert "retentionSeconds" in raised.value.message
    assert "delete those no longer needed" in raised.value.message
    kept = kube.list(CONFIGMAPS, namespace, label_selector="t=big",
                     keep=lambda o: o if o["metadata"]["name"] != "big-0" else None)
    assert len(kept) == 3


def test_the_grants_of_one_request_are_selected_by_the_api_server(
        cluster: LocalCluster, crds: Path, namespace: str) -> None:
    """The ExecutionGrant CRD declares spec.approvalRef.name selectable: one request's grants
    are read with a field selector (``kubectl get executiongrants --field-selector``), the API
    server answering only them, and ``grants_of`` (a request's status, every poll of a wait)
    reads only them, oldest first as before."""
    kube, calls = _listed(cluster)
    client = WingmanClient(Connection(kube, namespace, "test"))
    for request, commands in (("req-a", ["kubectl get pods", "kubectl get svc"]),
                              ("req-b", ["kubectl get nodes", "kubectl get ns", "uptime"])):
        for command in commands:
            kube.create(GRANTS, namespace, build_grant(
                request_name=request, namespace=namespace, command=command,
                requester="someone"))
    raw = kube.request("GET", GRANTS.path(namespace),
                       query={"fieldSelector": "spec.approvalRef.name=req-a"})
    assert sorted(g["spec"]["command"] for g in raw["items"]) == [
        "kubectl get pods", "kubectl get svc"]
    out = cluster.kubectl("get", "executiongrants", "-n", namespace, "-o", "name",
                          "--field-selector", "spec.approvalRef.name=req-b")
    assert len(out.stdout.split()) == 3
    calls.clear()
    mine = client.grants_of("req-a")
    assert {g["spec"]["approvalRef"]["name"] for g in mine} == {"req-a"}
    assert sorted(g["spec"]["command"] for g in mine) == ["kubectl get pods", "kubectl get svc"]
    assert calls == ["executiongrants 200"]  # one selected list, no fallback
    assert client.grants_of("req-none") == []
    everything = client.list_grant_objects()
    assert [g["metadata"]["name"] for g in mine] == [
        g["metadata"]["name"] for g in everything if g["spec"]["approvalRef"]["name"] == "req-a"]


def test_the_chat_service_holds_what_its_cards_show_of_grants_never_their_output(
        cluster: LocalCluster, crds: Path, namespace: str) -> None:
    """The chat service lists every grant of the retention at each sync: it keeps of each
    only what a card shows (``grant_summary``), not the command's output (up to 16 KiB a
    grant), and its cards are the same as from the whole grants."""
    kube = Kube(cluster.api_client())
    body = build_grant(request_name="req-a", namespace=namespace, command="kubectl get pods",
                       requester="someone")
    kube.create(GRANTS, namespace, body)
    kube.patch(GRANTS, namespace, body["metadata"]["name"], {"status": {
        "phase": "Succeeded", "exitCode": 0, "reason": "Succeeded",
        "output": "pod-1 Running\n" * 1000}}, subresource="status")
    whole = kube.list(GRANTS, namespace)
    assert whole[0]["status"]["output"]
    held = ChatCluster(kube, namespace, "state").grants()
    assert "output" not in held[0]["status"]
    assert len(json.dumps(held)) < 1024 < len(json.dumps(whole))
    request = {"metadata": {"name": "req-a", "uid": "u"}, "spec": {
        "commands": ["kubectl get pods"]}}
    now = dt.datetime.now(dt.UTC)
    assert render.view(request, held, now) == render.view(request, whole, now)
    assert render.view(request, held, now).grants[0].exit_code == 0

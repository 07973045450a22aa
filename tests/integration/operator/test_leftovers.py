"""The leftover cleanup at a replica's start (``clean_leftovers``), against the real API server:
the token Secrets of the grants that were already final, and the Jobs of the Denied ones, are
deleted; nothing else is (another grant's Secret or Job, a Succeeded grant's Job, a Secret of
another type), read page by page."""

from __future__ import annotations

import asyncio
import datetime as dt
import types
from pathlib import Path
from typing import Any

import pytest

from wingman import kube as kube_module
from wingman.audit.file import FileSink
from wingman.client.api import build_grant
from wingman.dev.cluster import LocalCluster
from wingman.kube import GRANTS, JOBS, SECRETS, Kube
from wingman.model import names
from wingman.operator.context import Context
from wingman.operator.handlers.housekeeping import clean_leftovers
from wingman.operator.metrics import Metrics


def _grant(kube: Kube, namespace: str, request: str, command: str, phase: str
           ) -> dict[str, Any]:
    body = build_grant(request_name=request, namespace=namespace, command=command,
                       requester="someone")
    made = kube.create(GRANTS, namespace, body)
    return kube.patch(GRANTS, namespace, made["metadata"]["name"], {"status": {
        "phase": phase, "reason": phase}}, subresource="status")


def _owner(grant: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"apiVersion": grant["apiVersion"], "kind": grant["kind"],
             "name": grant["metadata"]["name"], "uid": grant["metadata"]["uid"]}]


def _secret(kube: Kube, namespace: str, name: str, grant: dict[str, Any], *,
            type_: str = names.SECRET_TYPE) -> None:
    kube.create(SECRETS, namespace, {
        "metadata": {"name": name, "labels": {names.GRANT_LABEL: grant["metadata"]["name"]},
                     "ownerReferences": _owner(grant)},
        "type": type_, "stringData": {"token": "not-a-real-token"}})


def _job(kube: Kube, namespace: str, name: str, grant: dict[str, Any]) -> None:
    kube.create(JOBS, namespace, {
        "metadata": {"name": name, "labels": {names.ROLE_LABEL: "gateway"},
                     "ownerReferences": _owner(grant)},
        "spec": {"suspend": True, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "gw", "image": "registry.k8s.io/pause:3.9"}]}}}})


def _names(kube: Kube, res: Any, namespace: str) -> set[str]:
    return {o["metadata"]["name"] for o in kube.list(res, namespace)}


def test_leftovers_of_final_grants_are_deleted_and_nothing_else(
        cluster: LocalCluster, crds: Path, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    kube = Kube(cluster.api_client())
    # two final grants waiting on their cleanup, one already cleaned
    succeeded = _grant(kube, namespace, "req-a", "kubectl get pods", "Succeeded")
    denied = _grant(kube, namespace, "req-a", "kubectl get svc", "Denied")
    other = _grant(kube, namespace, "req-b", "kubectl get pods", "Succeeded")
    _secret(kube, namespace, "s-succeeded", succeeded)
    _secret(kube, namespace, "s-denied", denied)
    _secret(kube, namespace, "s-other", other)
    _secret(kube, namespace, "s-succeeded-opaque", succeeded, type_="Opaque")
    _job(kube, namespace, "j-succeeded", succeeded)
    _job(kube, namespace, "j-denied", denied)
    _job(kube, namespace, "j-other", other)

    settings: Any = types.SimpleNamespace(namespace=namespace, environment="test",
                                          api_concurrency=4)
    none: Any = None
    ctx = Context(settings, kube, none, FileSink(tmp_path / "audit.jsonl"), none, none,
                  Metrics())
    now = dt.datetime.now(dt.UTC)
    waiting = [ctx.tracker.observe_grant(g, now) for g in (succeeded, denied)]
    done = ctx.tracker.observe_grant(other, now)
    ctx.tracker.settle(done, None, now)
    for e in waiting:
        ctx.tracker.settle(e, "cleanup", now)
    assert [e.needs for e in waiting] == ["cleanup", "cleanup"]
    assert {e.phase for e in waiting} == {"Succeeded", "Denied"}

    monkeypatch.setattr(kube_module, "LIST_PAGE_SIZE", 1)  # every object on a page of its own
    asyncio.run(clean_leftovers(ctx))

    assert _names(kube, SECRETS, namespace) >= {"s-other", "s-succeeded-opaque"}
    assert not _names(kube, SECRETS, namespace) & {"s-succeeded", "s-denied"}
    assert _names(kube, JOBS, namespace) == {"j-succeeded", "j-other"}
    assert all(e.cleaned and e.needs is None for e in waiting)
    kube.close()

"""What a deleted grant leaves behind, against the real API server and the garbage collector of
kube-controller-manager: a grant deleted with propagation Orphan (``kubectl delete eg X
--cascade=orphan``) leaves its gateway Job and token Secret without an owner; the sweep removes
them (the Job's pod with it), whether the operator ran at the deletion or started after it, and
never what a grant still there owns, a grant recreated under the old name included."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wingman.audit.file import FileSink
from wingman.client.api import build_grant
from wingman.dev.cluster import LocalCluster
from wingman.kube import GRANTS, JOBS, METADATA_LIST, PODS, SECRETS, Kube, Resource
from wingman.model import names
from wingman.operator.context import Context
from wingman.operator.handlers import grants
from wingman.operator.handlers.housekeeping import Sweeper
from wingman.operator.metrics import Metrics

GC_SECONDS = 60.0


def _wait(what: str, check: Callable[[], bool], timeout: float = GC_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _grant(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    body = build_grant(request_name="req", namespace=namespace, command="kubectl get pods",
                       requester="someone")
    body["metadata"] = {"name": name}
    return kube.create(GRANTS, namespace, body)


def _owner(grant: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"apiVersion": grant["apiVersion"], "kind": grant["kind"],
             "name": grant["metadata"]["name"], "uid": grant["metadata"]["uid"]}]


def _job(kube: Kube, namespace: str, name: str, grant: dict[str, Any]) -> dict[str, Any]:
    """A gateway Job as the operator makes it for ``grant`` (labels, owner, the grant's UID in
    its pod's environment); runnable, so the Job controller makes its pod (which stays
    Pending: there is no node)."""
    return kube.create(JOBS, namespace, {
        "metadata": {"name": name, "labels": {names.ROLE_LABEL: "gateway",
                                              names.GRANT_LABEL: grant["metadata"]["name"]},
                     "ownerReferences": _owner(grant)},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "containers": [{"name": "gateway", "image": "registry.k8s.io/pause:3.9", "env": [
                {"name": "WINGMAN_GRANT_UID", "value": grant["metadata"]["uid"]}]}]}}}})


def _secret(kube: Kube, namespace: str, name: str, grant: dict[str, Any],
            job: dict[str, Any], *, records_grant: bool = True) -> dict[str, Any]:
    """A token Secret as the operator makes it for ``grant``'s Job; not ``records_grant``: as
    an earlier release made it, without the grant's UID in its annotations."""
    annotations = {names.JOB_UID_ANNOTATION: job["metadata"]["uid"]}
    if records_grant:
        annotations[names.GRANT_UID_ANNOTATION] = grant["metadata"]["uid"]
    return kube.create(SECRETS, namespace, {
        "metadata": {"name": name, "labels": {names.GRANT_LABEL: grant["metadata"]["name"]},
                     "annotations": annotations, "ownerReferences": _owner(grant)},
        "type": names.SECRET_TYPE, "stringData": {"token": "not-a-real-token"}})


def _context(kube: Kube, namespace: str, audit: Path, live: list[dict[str, Any]]) -> Context:
    """The operator's context at its start: the grants there are tracked (the watch's list)."""
    settings: Any = types.SimpleNamespace(namespace=namespace, environment="test",
                                          api_concurrency=4)
    none: Any = None
    ctx = Context(settings, kube, none, FileSink(audit), none, none, Metrics())
    for grant in live:
        ctx.tracker.observe_grant(grant, dt.datetime.now(dt.UTC))
    return ctx


def _names(kube: Kube, res: Any, namespace: str) -> set[str]:
    return {o["metadata"]["name"] for o in kube.list(res, namespace)}


def _pods_of(kube: Kube, namespace: str, job: dict[str, Any]) -> list[dict[str, Any]]:
    return kube.list(PODS, namespace, label_selector=(
        f"batch.kubernetes.io/controller-uid={job['metadata']['uid']}"))


def _delete_orphaning(kube: Kube, namespace: str, grant: dict[str, Any],
                      dependents: list[tuple[Any, str]]) -> None:
    """``kubectl delete eg X --cascade=orphan``, then wait for the garbage collector: the grant
    gone, its dependents there without an owner."""
    kube.delete(GRANTS, namespace, grant["metadata"]["name"], propagation="Orphan")
    _wait("the grant deleted", lambda: kube.get_or_none(
        GRANTS, namespace, grant["metadata"]["name"]) is None)
    for res, name in dependents:
        obj = kube.get_or_none(res, namespace, name)
        assert obj is not None, f"{name} was deleted, not orphaned"
        assert not obj["metadata"].get("ownerReferences"), obj["metadata"]


def _records(audit: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]


def test_an_orphaned_job_and_secret_are_removed_at_the_next_sweep(
        cluster: LocalCluster, crds: Path, namespace: str, tmp_path: Path) -> None:
    """Only a Job nothing owns is read whole: a sweep lists Jobs and token Secrets by their
    metadata, and reads no owned Job's pod spec and no token."""
    calls: list[str] = []
    kube = Kube(cluster.api_client(),
                observer=lambda verb, resource, code, _s: calls.append(f"{verb} {resource}"))
    grant = _grant(kube, namespace, "g1")
    job = _job(kube, namespace, "g1-gw", grant)
    secret = _secret(kube, namespace, "g1-gw-token-a1", grant, job)
    _wait("the gateway pod made", lambda: bool(_pods_of(kube, namespace, job)))
    audit = tmp_path / "audit.jsonl"
    ctx = _context(kube, namespace, audit, [grant])
    sweeper = Sweeper(ctx)

    accepts: list[str] = []
    request = kube._request

    def told(*args: Any, **kwargs: Any) -> Any:
        accepts.append(kwargs.get("accept", ""))
        return request(*args, **kwargs)

    kube._request = told  # type: ignore[method-assign]
    calls.clear()
    asyncio.run(sweeper._orphans(time.monotonic()))  # at start: the live grant's stay
    assert sorted(calls) == ["list jobs", "list secrets"], calls
    assert accepts == [METADATA_LIST, METADATA_LIST], "a whole object was read"
    kube._request = request  # type: ignore[method-assign]
    assert {"g1-gw"} <= _names(kube, JOBS, namespace)
    assert {"g1-gw-token-a1"} <= _names(kube, SECRETS, namespace)

    _delete_orphaning(kube, namespace, grant, [(JOBS, "g1-gw"), (SECRETS, "g1-gw-token-a1")])
    grants.deleted(ctx, grant["metadata"]["uid"])  # the watch's DELETED event
    calls.clear()
    asyncio.run(sweeper._orphans(time.monotonic()))  # the next sweep
    # the orphaned Job is read whole (its grant's UID is in its pod spec); no token is read
    assert sorted(c for c in calls if c.startswith("get")) == ["get jobs"]

    assert "g1-gw" not in _names(kube, JOBS, namespace)
    assert "g1-gw-token-a1" not in _names(kube, SECRETS, namespace)
    _wait("the gateway pod deleted with its Job",
          lambda: not _pods_of(kube, namespace, job))
    (record,) = [r for r in _records(audit) if r["event"] == "GrantOrphansRemoved"]
    assert record["subject"]["name"] == "g1"
    assert record["subject"]["uid"] == grant["metadata"]["uid"]
    assert record["data"]["jobs"] == ["g1-gw"]
    assert record["data"]["secrets"] == [secret["metadata"]["name"]]
    removed = ctx.metrics.orphans_removed
    assert removed.labels(environment="test", resource="jobs")._value.get() == 1
    assert removed.labels(environment="test", resource="secrets")._value.get() == 1
    kube.close()


def test_orphans_of_a_deletion_while_stopped_go_at_start_a_recreated_grants_stay(
        cluster: LocalCluster, crds: Path, namespace: str, tmp_path: Path) -> None:
    kube = Kube(cluster.api_client())
    old = _grant(kube, namespace, "g2")
    old_job = _job(kube, namespace, "g2-old-gw", old)
    _secret(kube, namespace, "g2-old-gw-token-a1", old, old_job)
    other = _grant(kube, namespace, "g3")
    other_job = _job(kube, namespace, "g3-gw", other)
    _secret(kube, namespace, "g3-gw-token-c3", other, other_job)

    # no operator runs: the grant is deleted orphaning, then recreated under its name
    _delete_orphaning(kube, namespace, old, [(JOBS, "g2-old-gw"),
                                             (SECRETS, "g2-old-gw-token-a1")])
    new = _grant(kube, namespace, "g2")
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    new_job = _job(kube, namespace, "g2-gw", new)
    _secret(kube, namespace, "g2-gw-token-b2", new, new_job)

    # the operator starts: its first sweep looks for leftovers without an owner
    ctx = _context(kube, namespace, tmp_path / "audit.jsonl", [new, other])
    asyncio.run(Sweeper(ctx)._orphans(time.monotonic()))

    assert _names(kube, JOBS, namespace) == {"g2-gw", "g3-gw"}
    assert {"g2-gw-token-b2", "g3-gw-token-c3"} <= _names(kube, SECRETS, namespace)
    assert "g2-old-gw-token-a1" not in _names(kube, SECRETS, namespace)
    _wait("the old gateway pod deleted with its Job",
          lambda: not _pods_of(kube, namespace, old_job))
    assert _pods_of(kube, namespace, new_job)
    kube.close()


def test_a_token_secret_whose_job_is_deleted_during_the_sweep_is_never_recorded_without_uid(
        cluster: LocalCluster, crds: Path, namespace: str, tmp_path: Path) -> None:
    """Two deleted grants' orphaned gateway Jobs are deleted by someone else between the
    sweep's list and its read of them: their token Secrets were recorded under the grant UID
    "" and removed. They are left for the next sweep, which comes at once (what deleted the
    Jobs may be removing them too); then each is recorded under the grant's UID its own
    annotation records, or, for a Secret made by an earlier release, which did not record it,
    under none (null, said in ``why``), and removed."""
    kube = Kube(cluster.api_client())
    made = {}
    for name, records_grant in (("g4", True), ("g5", False)):
        grant = _grant(kube, namespace, name)
        job = _job(kube, namespace, f"{name}-gw", grant)
        secret = _secret(kube, namespace, f"{name}-gw-token-0123456789abcdef", grant, job,
                         records_grant=records_grant)
        made[name] = (grant, job, secret)
    for name, (grant, _, secret) in made.items():
        _delete_orphaning(kube, namespace, grant, [(JOBS, f"{name}-gw"),
                                                   (SECRETS, secret["metadata"]["name"])])
    audit = tmp_path / "audit.jsonl"
    ctx = _context(kube, namespace, audit, [])
    sweeper = Sweeper(ctx)

    read = kube.get_or_none

    def deleted_before_read(res: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        if res is JOBS:  # someone deletes the Job between the sweep's list and its read
            kube.delete(JOBS, namespace, name)
        return read(res, namespace, name)

    kube.get_or_none = deleted_before_read  # type: ignore[method-assign]
    try:
        asyncio.run(sweeper._orphans(time.monotonic()))
    finally:
        kube.get_or_none = read  # type: ignore[method-assign]
    assert not {"g4-gw", "g5-gw"} & _names(kube, JOBS, namespace)
    left = {"g4-gw-token-0123456789abcdef", "g5-gw-token-0123456789abcdef"}
    assert left <= _names(kube, SECRETS, namespace), (
        "a token Secret whose Job went during the sweep was removed by it")
    assert not [r for r in _records(audit) if r["event"] == "GrantOrphansRemoved"], (
        _records(audit))
    assert ctx.orphans_due, "no next sweep looks for what was left"

    asyncio.run(sweeper._orphans(time.monotonic()))  # the next sweep
    assert not left & _names(kube, SECRETS, namespace)
    records = {r["subject"]["name"]: r for r in _records(audit)
               if r["event"] == "GrantOrphansRemoved"}
    assert set(records) == {"g4", "g5"}, records
    assert records["g4"]["subject"]["uid"] == made["g4"][0]["metadata"]["uid"]
    assert records["g4"]["data"]["secrets"] == ["g4-gw-token-0123456789abcdef"]
    assert records["g5"]["subject"]["uid"] is None
    assert "UID is not known" in records["g5"]["data"]["why"]
    assert records["g5"]["data"]["secrets"] == ["g5-gw-token-0123456789abcdef"]
    assert not ctx.orphans_due
    kube.close()


def test_a_new_grant_says_what_it_waits_for_when_its_deleted_namesakes_job_stays(
        cluster: LocalCluster, crds: Path, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A grant created again under a deleted one's name whose gateway Job still names that
    grant as its owner (here a finalizer holds it; a garbage collector that does not run
    leaves it the same): the operator never deletes that Job (its pod may be running the
    deleted grant's command); after a while it says on the new grant, once, what it waits for
    and what to check, and tries less often."""
    from wingman.operator.events import EVENTS
    from wingman.settings import OperatorSettings

    monkeypatch.setattr(grants, "NAMESAKE_WAIT_SECONDS", 0.5)
    settings = OperatorSettings.from_env({"WINGMAN_NAMESPACE": namespace})
    kube = Kube(cluster.api_client())
    old = _grant(kube, namespace, "g1")
    job = kube.create(JOBS, namespace, {
        "metadata": {"name": "g1-gw", "finalizers": ["wingman.dev/test-hold"],
                     "labels": {names.ROLE_LABEL: "gateway", names.GRANT_LABEL: "g1"},
                     "ownerReferences": _owner(old)},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "serviceAccountName": settings.gateway_service_account,
            "containers": [{"name": "gateway", "image": "registry.k8s.io/pause:3.9", "env": [
                {"name": "WINGMAN_GRANT_UID", "value": old["metadata"]["uid"]}]}]}}}})
    try:
        kube.delete(GRANTS, namespace, "g1")
        _wait("the grant deleted", lambda: kube.get_or_none(GRANTS, namespace, "g1") is None)
        new = _grant(kube, namespace, "g1")

        delays = _namesake_tries(kube, settings, new, tmp_path / "audit.jsonl", 3)
        assert delays[0] == 1.0 and delays[1:] == [grants.NAMESAKE_RETRY_SECONDS] * 2, delays
        stays = kube.get_or_none(JOBS, namespace, "g1-gw")
        assert stays is not None and stays["metadata"]["uid"] == job["metadata"]["uid"]
        said = [e for e in kube.list(EVENTS, namespace)
                if e["involvedObject"].get("uid") == new["metadata"]["uid"]]
        assert [e["reason"] for e in said] == ["WaitingForGarbageCollector"], said
        message = said[0]["message"]
        assert "Job g1-gw" in message and old["metadata"]["uid"] in message, message
        assert "garbage collector" in message and "kube-controller-manager" in message
        assert "finalizer" in message, message
    finally:
        kube.patch(JOBS, namespace, "g1-gw", {"metadata": {"finalizers": None}})


def test_a_new_grant_waits_for_its_deleted_namesakes_orphan_a_finalizer_holds_removing_it_once(
        cluster: LocalCluster, crds: Path, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A grant created again under a deleted one's name whose gateway Job was left without an
    owner (``--cascade=orphan``) and is held by a finalizer: the operator removes it once
    (``GrantOrphansRemoved``, then the delete), and from then on waits for its deletion to end,
    never removing and recording it again at each try (about once a second) as it did; after a
    while it says on the new grant what it waits for and what to check, and tries less often."""
    from wingman.operator.events import EVENTS
    from wingman.settings import OperatorSettings

    monkeypatch.setattr(grants, "NAMESAKE_WAIT_SECONDS", 0.5)
    settings = OperatorSettings.from_env({"WINGMAN_NAMESPACE": namespace})
    kube = Kube(cluster.api_client())
    audit = tmp_path / "audit.jsonl"
    old = _grant(kube, namespace, "g2")
    kube.create(JOBS, namespace, {
        "metadata": {"name": "g2-gw", "finalizers": ["wingman.dev/test-hold"],
                     "labels": {names.ROLE_LABEL: "gateway", names.GRANT_LABEL: "g2"},
                     "ownerReferences": _owner(old)},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "serviceAccountName": settings.gateway_service_account,
            "containers": [{"name": "gateway", "image": "registry.k8s.io/pause:3.9", "env": [
                {"name": "WINGMAN_GRANT_UID", "value": old["metadata"]["uid"]}]}]}}}})
    try:
        kube.delete(GRANTS, namespace, "g2", propagation="Orphan")
        _wait("the grant deleted and its Job orphaned", lambda: kube.get_or_none(
            GRANTS, namespace, "g2") is None and not (kube.get(JOBS, namespace, "g2-gw")[
                "metadata"].get("ownerReferences")))
        new = _grant(kube, namespace, "g2")

        delays = _namesake_tries(kube, settings, new, audit, 4)
        assert delays == [1.0, 1.0] + [grants.NAMESAKE_RETRY_SECONDS] * 2, delays
        held = kube.get(JOBS, namespace, "g2-gw")
        assert held["metadata"].get("deletionTimestamp"), held["metadata"]
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        assert [r["event"] for r in records] == ["GrantOrphansRemoved"], records
        said = [e for e in kube.list(EVENTS, namespace)
                if e["involvedObject"].get("uid") == new["metadata"]["uid"]]
        assert [e["reason"] for e in said] == ["WaitingForGarbageCollector"], said
        message = said[0]["message"]
        assert "Job g2-gw" in message and "left without an owner" in message, message
        assert "finalizer" in message, message
    finally:
        kube.patch(JOBS, namespace, "g2-gw", {"metadata": {"finalizers": None}})
        kube.close()


def _namesake_tries(kube: Kube, settings: Any, new: dict[str, Any], audit: Path,
                    count: int) -> list[float]:
    """``count`` tries of the new grant's Job, 0.6 s apart, as the operator makes them (its
    Events posted for real): the delays each refused try asked for."""
    from wingman.operator.context import Retry
    from wingman.operator.events import Events

    async def tries() -> list[float]:
        events = Events(kube, "test")
        events.start()
        none: Any = None
        ctx = Context(settings, kube, none, FileSink(audit), none, none, Metrics(),
                      events=events)
        ctx.tracker.observe_grant(new, dt.datetime.now(dt.UTC))
        delays = []
        try:
            for _ in range(count):
                try:
                    await grants.create_job(ctx, new, 30)
                except Retry as retry:
                    delays.append(retry.delay)
                await asyncio.sleep(0.6)
        finally:
            await events.stop()
        return delays

    return asyncio.run(tries())

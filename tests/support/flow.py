"""A flow of ApprovalRequests and their ExecutionGrants through the real API server, as the
chart's worker and approver identities, and what the operator made of it.

The failover and outage tests and ``tests/bench/bench_faults.py`` share it: a ``Feeder`` keeps
requests coming and grants each one once it is approved; a ``Snapshot`` (one list per kind)
says which requests are reviewed, which grants have their Job released with the token in place,
and whether anything was done twice.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes import client

from support.chart import APPROVER, WORKER, approver_groups, worker_groups
from wingman.capability.tokens import token_sha256
from wingman.model import grants as grant_rules
from wingman.model import names

GROUP, VERSION = "wingman.dev", "v1alpha1"
#: Inside the test environment's allowlist and auto-approved by the panel.
COMMAND = "kubectl rollout restart deployment/frontend -n apps"


@dataclass
class Snapshot:
    requests: dict[str, dict[str, Any]]
    grants: dict[str, dict[str, Any]]
    jobs: list[dict[str, Any]]
    secrets: list[dict[str, Any]]

    def reviewed(self) -> set[str]:
        """Requests the panel decided (``AutoApproved`` for the flow's command)."""
        return {n for n, o in self.requests.items()
                if (o.get("status") or {}).get("phase") == "AutoApproved"}

    def view(self, grant: str) -> dict[str, Any]:
        """The grant as the operator and the gateway judge it (``grants.view``): TokenIssued
        when its claim on its request records its token, its stored phase still Pending."""
        body = self.grants[grant]
        ref = str(((body.get("spec") or {}).get("approvalRef") or {}).get("name", ""))
        return dict(grant_rules.view(body, self.requests.get(ref)))

    def released(self) -> set[str]:
        """Grants with their token issued, their gateway Job runnable and their token Secret in
        place (the gateway can start)."""
        released_jobs = {(j["metadata"].get("labels") or {}).get(names.GRANT_LABEL)
                         for j in self.jobs if not (j.get("spec") or {}).get("suspend")}
        stored = {(s["metadata"].get("labels") or {}).get(names.GRANT_LABEL)
                  for s in self.secrets}
        return {n for n in self.grants
                if grant_rules.phase(self.view(n)) == "TokenIssued" and n in released_jobs
                and n in stored}

    def doubles(self, grants: Iterable[str]) -> list[str]:
        """What was done twice or does not match: each grant must have exactly one Job and one
        token Secret, the Secret must carry the token whose hash the grant records and name
        its Job."""
        jobs = Counter((j["metadata"].get("labels") or {}).get(names.GRANT_LABEL)
                       for j in self.jobs)
        problems = []
        for g in grants:
            mine = [s for s in self.secrets
                    if (s["metadata"].get("labels") or {}).get(names.GRANT_LABEL) == g]
            if jobs[g] != 1 or len(mine) != 1:
                problems.append(f"{g}: {jobs[g]} Jobs, {len(mine)} token Secrets")
                continue
            token = base64.b64decode(mine[0]["data"]["token"]).decode()
            status = self.view(g).get("status") or {}
            if status.get("tokenSHA256") != token_sha256(token):
                problems.append(f"{g}: the Secret's token is not the one the grant records")
            job = next(j for j in self.jobs
                       if (j["metadata"].get("labels") or {}).get(names.GRANT_LABEL) == g)
            if (mine[0]["metadata"].get("annotations") or {}).get(
                    names.JOB_UID_ANNOTATION) != job["metadata"]["uid"]:
                problems.append(f"{g}: the Secret names another Job")
        return problems


class Flow:
    """Creates requests as the worker and grants as the approver; reads as the admin."""

    def __init__(self, cluster: Any, namespace: str, command: str = COMMAND) -> None:
        self.ns, self.command = namespace, command
        self.worker = client.CustomObjectsApi(cluster.api_client(WORKER, worker_groups("test")))
        self.approver = client.CustomObjectsApi(
            cluster.api_client(APPROVER, approver_groups("test")))
        admin = cluster.api_client()
        self.custom = client.CustomObjectsApi(admin)
        self.batch = client.BatchV1Api(admin)
        self.core = client.CoreV1Api(admin)
        self.sanitize = admin.sanitize_for_serialization

    def request(self, name: str) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ApprovalRequest",
                "metadata": {"name": name},
                "spec": {"requester": WORKER, "environment": "test",
                         "instruction": "restart the frontend", "commands": [self.command]}}
        self.worker.create_namespaced_custom_object(GROUP, VERSION, self.ns,
                                                    "approvalrequests", body)

    def grant(self, name: str, approval: str) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ExecutionGrant",
                "metadata": {"name": name},
                "spec": {"approvalRef": {"name": approval}, "command": self.command}}
        self.approver.create_namespaced_custom_object(GROUP, VERSION, self.ns,
                                                      "executiongrants", body)

    def _items(self, plural: str) -> list[dict[str, Any]]:
        """The namespace's objects of ``plural``, as the API server's JSON (the client types
        a custom object list as ``object``)."""
        listed = cast(dict[str, Any], self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.ns, plural))
        return cast(list[dict[str, Any]], listed["items"])

    def reviewed(self) -> set[str]:
        """The reviewed requests (one list)."""
        items = self._items("approvalrequests")
        return {o["metadata"]["name"] for o in items
                if (o.get("status") or {}).get("phase") == "AutoApproved"}

    def snapshot(self) -> Snapshot:
        def objects(plural: str) -> dict[str, dict[str, Any]]:
            return {o["metadata"]["name"]: o for o in self._items(plural)}
        jobs = self.sanitize(self.batch.list_namespaced_job(self.ns).items)
        secrets = self.sanitize(self.core.list_namespaced_secret(
            self.ns, field_selector=f"type={names.SECRET_TYPE}").items)
        return Snapshot(objects("approvalrequests"), objects("executiongrants"), jobs, secrets)


@dataclass
class Feeder:
    """Keeps a flow going in a thread: a new request every ``interval`` seconds, and a grant
    ``g-<n>`` for request ``r-<n>`` as soon as it is reviewed. Creations refused while the API
    server is away are retried, so every name is created exactly once."""

    flow: Flow
    interval: float = 0.25
    limit: int = 1000
    created: list[str] = field(default_factory=list)
    granted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop_creating: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Feeder:
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _create(self, make: Any, *args: str) -> bool:
        try:
            make(*args)
            return True
        except client.ApiException as exc:
            if exc.status == 409:  # created by an attempt whose answer was lost
                return True
            self.errors.append(f"{args[0]}: {exc.status} {exc.reason}")
        except Exception as exc:  # noqa: BLE001 - the API server is away: next round
            self.errors.append(f"{args[0]}: {type(exc).__name__}")
        return False

    def _run(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            if not self.stop_creating.is_set() and n < self.limit \
                    and time.monotonic() >= next_at:
                name = f"r-{n:04d}"
                if self._create(self.flow.request, name):
                    self.created.append(name)
                    n += 1
                next_at = time.monotonic() + self.interval
            try:
                reviewed = self.flow.reviewed()
            except Exception:  # noqa: BLE001 - the API server is away: next round
                reviewed = set()
            for r in self.created:
                g = "g-" + r[2:]
                if r in reviewed and g not in self.granted and self._create(
                        self.flow.grant, g, r):
                    self.granted.append(g)
            self._stop.wait(min(self.interval, 0.25))


def audit_counts(records: Iterable[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
    """(ApprovalReviewed per request, TokenMinted per grant) over the given records."""
    reviewed: Counter[str] = Counter()
    minted: Counter[str] = Counter()
    for r in records:
        if r["event"] == "ApprovalReviewed":
            reviewed[r["subject"]["name"]] += 1
        elif r["event"] == "TokenMinted":
            minted[r["subject"]["name"]] += 1
    return reviewed, minted


__all__ = ["COMMAND", "Feeder", "Flow", "Snapshot", "audit_counts"]

"""Leader election against the real API server: a replica never acts past the moment a
standby may take the Lease over, even when the API server answers its renewal late."""

from __future__ import annotations

import time
from typing import Any

from wingman.dev.cluster import LocalCluster
from wingman.kube import LEASES, Kube, Resource
from wingman.operator.leader import LeaderElector, Timing

LATE = 2.5  # seconds between the API server applying a write and the answer arriving


class LateAnswers(Kube):
    """The real client; every patch is applied by the API server at once and answered late
    (a congested network or API server on the way back)."""

    def patch(self, res: Resource, namespace: str, name: str, body: Any, **kwargs: Any
              ) -> dict[str, Any]:
        result = super().patch(res, namespace, name, body, **kwargs)
        time.sleep(LATE)
        return result


def test_a_late_answer_to_a_renewal_never_extends_leadership(cluster: LocalCluster,
                                                             namespace: str) -> None:
    admin = Kube(cluster.api_client())
    admin.create(LEASES, namespace, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                     "metadata": {"name": "leader"},
                                     "spec": {"leaseDurationSeconds": 5}})
    # The renew deadline leaves 1.5 s past the late answer for the read and the write before
    # it (a loaded machine's API server); counted from the answer instead, the replica would
    # act until 1.5 s after a standby may take over.
    timing = Timing(duration=5, renew_deadline=4, retry=1)
    elector = LeaderElector(LateAnswers(cluster.api_client()), namespace, "leader", "pod-a",
                            timing=timing)
    sent = time.monotonic()
    elector._tick()  # one acquisition; the thread is not started, so nothing renews after
    assert elector.leading  # asked before reading the Lease: that read takes time as well
    answered = time.monotonic()
    assert answered - sent >= LATE
    lease = admin.get(LEASES, namespace, "leader")
    assert lease["spec"]["holderIdentity"] == "pod-a"
    # A standby saw the write no earlier than it was sent, and takes the Lease over once it
    # has seen it unchanged for the duration: by then this replica must have stopped acting.
    time.sleep(max(0.0, sent + timing.duration - time.monotonic()))
    assert not elector.leading, (
        "the replica still acts when a standby may already have taken the Lease over: the "
        "renew deadline was counted from the late answer, not from the request")


class Counted(Kube):
    """The real client, counting the calls it makes to the API server by verb."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def get(self, res: Resource, namespace: str, name: str, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("get")
        return super().get(res, namespace, name, **kwargs)

    def patch(self, res: Resource, namespace: str, name: str, body: Any, **kwargs: Any
              ) -> dict[str, Any]:
        self.calls.append("patch")
        return super().patch(res, namespace, name, body, **kwargs)


def test_the_holder_renews_with_one_request_and_still_sees_a_takeover(
        cluster: LocalCluster, namespace: str) -> None:
    """A replica holding the Lease renews with one guarded write a tick, not a read and a
    write; when anyone else wrote the Lease meanwhile (a standby that took it over while this
    replica was cut off), that write is refused and the replica reads the Lease, sees the new
    holder and stops acting: never two acting replicas."""
    admin = Kube(cluster.api_client())
    admin.create(LEASES, namespace, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                     "metadata": {"name": "leader"},
                                     "spec": {"leaseDurationSeconds": 10}})
    kube = Counted(cluster.api_client())
    elector = LeaderElector(kube, namespace, "leader", "pod-a",
                            timing=Timing(duration=10, renew_deadline=7, retry=1))
    elector._tick()  # the acquisition: a read, then a write
    assert elector.leading and kube.calls == ["get", "patch"]
    before = admin.get(LEASES, namespace, "leader")["spec"]["renewTime"]
    kube.calls.clear()
    for _ in range(3):
        time.sleep(0.01)
        elector._tick()
    assert kube.calls == ["patch"] * 3, "one request per renewal"
    lease = admin.get(LEASES, namespace, "leader")
    assert lease["spec"]["holderIdentity"] == "pod-a" and lease["spec"]["renewTime"] > before
    # a standby took the Lease over (its write, not this replica's)
    admin.patch(LEASES, namespace, "leader", {"spec": {
        "holderIdentity": "pod-b", "renewTime": lease["spec"]["renewTime"]}})
    kube.calls.clear()
    elector._tick()
    assert kube.calls == ["patch", "get"], "the refused renewal is followed by a read"
    assert not elector.leading
    assert admin.get(LEASES, namespace, "leader")["spec"]["holderIdentity"] == "pod-b"
    kube.calls.clear()
    elector._tick()  # a live holder: read and wait, no write
    assert kube.calls == ["get"] and not elector.leading

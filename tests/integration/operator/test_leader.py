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

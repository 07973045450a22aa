"""The operator's Events against the real API server: a message the API server would refuse
as too long (it counts a core/v1 Event's ``message`` in bytes, at most 1 KiB) is cut to fit,
and the Event lands."""

from __future__ import annotations

import datetime as dt

from wingman import conditions
from wingman.dev.cluster import LocalCluster
from wingman.kube import Kube, Resource
from wingman.operator.events import EVENTS, event_body

CONFIGMAPS = Resource("", "v1", "configmaps")


def test_an_event_quoting_a_long_text_of_several_byte_characters_is_cut_and_lands(
        cluster: LocalCluster, namespace: str) -> None:
    """1,000 characters of two bytes each (a reason quoted from a chat user, a path in another
    script): within 1,024 characters but past the API server's 1,024 bytes. The Event is
    posted with its message cut on a character's boundary, not refused (422) and lost."""
    kube = Kube(cluster.api_client())
    obj = kube.create(CONFIGMAPS, namespace, {"metadata": {"name": "about"}})
    obj = {**obj, "apiVersion": "v1", "kind": "ConfigMap"}
    message = "é" * 1000
    body = event_body(obj, "Warning", "Quoted", message, "wingman-operator-0",
                      dt.datetime.now(dt.UTC))
    made = kube.create(EVENTS, namespace, body)
    stored = kube.get(EVENTS, namespace, made["metadata"]["name"])["message"]
    assert len(stored.encode("utf-8")) <= 1024
    assert stored.endswith(conditions.CUT_MARK)
    kept = stored.removesuffix(conditions.CUT_MARK)
    assert len(kept) > 500 and message.startswith(kept)
    kube.close()

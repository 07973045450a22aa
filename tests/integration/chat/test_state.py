"""The chat service's memory of what it posted lives in a ConfigMap: whatever that ConfigMap
holds, the service starts (an unreadable state is forgotten, and messages are posted again)."""

from __future__ import annotations

import json

import pytest

from wingman.chat.cluster import STATE_KEY, ChatCluster
from wingman.dev.cluster import LocalCluster
from wingman.kube import CONFIGMAPS, Kube


@pytest.mark.parametrize("raw, expected", [
    ("[" * 100_000 + "]" * 100_000, {}),      # past the JSON parser's depth
    ("{not json", {}),
    ('["a list"]', {}),
    (json.dumps({"requests": {"r1": {"ts": "1"}}}), {"requests": {"r1": {"ts": "1"}}}),
], ids=["nested", "not-json", "not-an-object", "kept"])
def test_any_stored_state_loads_without_stopping_the_service(
        cluster: LocalCluster, namespace: str, raw: str, expected: dict[str, object]) -> None:
    kube = Kube(cluster.api_client())
    kube.create(CONFIGMAPS, namespace, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wingman-chat-state"}, "data": {STATE_KEY: raw}})
    assert ChatCluster(kube, namespace, "wingman-chat-state").load_state() == expected

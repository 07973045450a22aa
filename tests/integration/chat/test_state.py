"""The chat service's memory of what it posted lives in a ConfigMap: whatever that ConfigMap
holds, the service starts (an unreadable state is forgotten, and messages are posted again);
state of the wrong shape is dropped once, and the ConfigMap rewritten without it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from wingman.audit import open_sink
from wingman.chat.cluster import STATE_KEY, ChatCluster
from wingman.chat.guard import StepUp
from wingman.chat.metrics import ChatMetrics
from wingman.chat.service import ChatService
from wingman.dev.cluster import LocalCluster
from wingman.kube import CONFIGMAPS, Kube
from wingman.settings import ChatConfig

HORIZON = "2026-01-01T00:00:00Z"
UID = "0f8fad5b-d9cb-469f-a165-000000000001"
CARD = {"name": "web", "telegram": {"ref": {"chat": -100, "message": 7}, "hash": "h"}}


def _store(cluster: LocalCluster, namespace: str, raw: str) -> Kube:
    kube = Kube(cluster.api_client())
    kube.create(CONFIGMAPS, namespace, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wingman-chat-state"}, "data": {STATE_KEY: raw}})
    return kube


@pytest.mark.parametrize("raw, expected", [
    ("[" * 100_000 + "]" * 100_000, {}),      # past the JSON parser's depth
    ("{not json", {}),
    (json.dumps({"requests": {"r1": {"ts": "1"}}}), {"requests": {"r1": {"ts": "1"}}}),
], ids=["nested", "not-json", "kept"])
def test_any_stored_state_loads_without_stopping_the_service(
        cluster: LocalCluster, namespace: str, raw: str, expected: dict[str, object]) -> None:
    kube = _store(cluster, namespace, raw)
    assert ChatCluster(kube, namespace, "wingman-chat-state").load_state() == expected


@pytest.mark.parametrize("stored, expected", [
    (["a list"], None),
    ({"horizon": HORIZON, "requests": {UID: CARD, "u2": ["posted"]}},
     {"horizon": HORIZON, "requests": {UID: CARD}}),
    ({"horizon": HORIZON, "requests": {UID: {**CARD, "slack": {"ref": "1712.5"}}}},
     {"horizon": HORIZON, "requests": {UID: {**CARD, "slack": {}}}}),
], ids=["not-an-object", "entry-not-an-object", "ref-not-a-reference"])
def test_a_state_of_the_wrong_shape_is_rewritten_without_what_cannot_be_read(
        cluster: LocalCluster, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        stored: Any, expected: dict[str, Any] | None) -> None:
    kube = _store(cluster, namespace, json.dumps(stored))
    chat = ChatCluster(kube, namespace, "wingman-chat-state")
    svc = ChatService(config=ChatConfig(environment="prd"), cluster=chat,
                      sink=open_sink(str(tmp_path / "audit.log")), metrics=ChatMetrics(),
                      step_up=StepUp({}))
    asyncio.run(svc.load())
    saved = json.loads(kube.get(CONFIGMAPS, namespace, "wingman-chat-state")["data"][STATE_KEY])
    if expected is None:  # started afresh, from now on
        assert saved["requests"] == {} and saved["horizon"] > HORIZON
    else:
        assert saved == expected
    warned = [r for r in caplog.records if "wrong shape" in r.getMessage()]
    assert len(warned) == 1 and vars(warned[0])["configmap"] == "wingman-chat-state"
    # read again (the next start): nothing left to drop, nothing logged
    caplog.clear()
    asyncio.run(svc.load())
    assert not [r for r in caplog.records if "wrong shape" in r.getMessage()]

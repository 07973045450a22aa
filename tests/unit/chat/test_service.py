"""The reconciler's bookkeeping: what is due for a message, and when a request is settled
(its state entry shrinks to a marker, so the state ConfigMap stays small); the bounded memory
of unidentified senders' refusals."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wingman.chat import render
from wingman.chat import service as service_module
from wingman.chat.guard import StepUp, refuse
from wingman.chat.metrics import ChatMetrics
from wingman.chat.service import ChatService
from wingman.settings import ChatConfig

from . import world
from .test_render import NOW, request


@dataclass
class Named:
    name: str


def service() -> Any:
    svc = ChatService(config=ChatConfig(environment="prd", expiry_warning_minutes=15),
                      cluster=None, sink=None, metrics=ChatMetrics(),  # type: ignore[arg-type]
                      step_up=StepUp({}))
    svc.channels = [Named("telegram"), Named("slack")]  # type: ignore[list-item]
    return svc


def test_a_new_request_needs_its_card_and_a_changed_one_an_edit() -> None:
    svc = service()
    v = render.view(request(), [], NOW)
    assert svc._due(v, {}, NOW) == [("post", None)]
    assert svc._due(v, {"ref": {}, "hash": "old"}, NOW) == [("update", None)]
    assert svc._due(v, {"ref": {}, "hash": v.fingerprint()}, NOW) == []


def test_only_long_final_requests_with_everything_delivered_are_settled() -> None:
    svc = service()
    expired = request()
    expired["status"]["conditions"] = [{"type": "Expired", "status": "True"}]
    late = NOW + dt.timedelta(hours=3)
    v = render.view(expired, [], late)
    done = {"ref": {}, "hash": v.fingerprint(), "sent": ["final:Expired"]}
    assert svc._settled(v, {"telegram": done, "slack": done}, late)
    # a channel still behind, or too recent, or a grant still running: not settled
    assert not svc._settled(v, {"telegram": done}, late)
    assert not svc._settled(v, {"telegram": done, "slack": {**done, "sent": []}}, late)
    assert not svc._settled(v, {"telegram": done, "slack": done},
                            NOW + dt.timedelta(hours=1, minutes=30))
    running = {"metadata": {"name": "g"}, "spec": {"approvalRef": {"name": "req-1"},
                                                   "command": "x"},
               "status": {"phase": "Running"}}
    busy = render.view(expired, [running], late)
    assert not svc._settled(busy, {"telegram": done, "slack": done}, late)
    open_request = render.view(request(), [], NOW)
    assert not svc._settled(open_request, {"telegram": done, "slack": done}, late)


def test_remembered_refusals_stay_bounded_and_every_one_is_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More unidentified senders in one window than are remembered: the map never grows past
    its bound, the metric counts every refusal, and every refusal is in the audit trail, as a
    record or in a count (``suppressed``, ``suppressedOthers`` for the forgotten), or is still
    held for the next record."""
    cap = 20
    monkeypatch.setattr(service_module, "_MAX_REFUSAL_KEYS", cap)
    now = [world.NOW]
    svc = world.service(tmp_path, clock=lambda: now[0])
    unmapped = refuse("Unmapped", "not mapped")
    sizes = []

    async def flood() -> int:
        sent = 0
        for sender in [f"hot{i}" for i in range(10)] * 5 + [f"x{i}" for i in range(100)] \
                + [f"hot{i}" for i in range(10)] * 2:
            await svc.refused("telegram", sender, unmapped)
            sent += 1
            sizes.append(len(svc._quiet))
            now[0] += dt.timedelta(milliseconds=100)  # all inside one window
        return sent

    sent = asyncio.run(flood())
    assert max(sizes) == cap
    assert world.metric(svc, "wingman_chat_refusals_total", channel="telegram",
                        reason="Unmapped") == sent
    records = world.audited(svc)
    # the hot senders' left-out refusals (4 each) were handed over when they were forgotten
    assert sum(r.get("suppressedOthers", 0) for r in records) == 40
    held = sum(q.suppressed for q in svc._quiet.values())
    assert sum(1 + r.get("suppressed", 0) + r.get("suppressedOthers", 0)
               for r in records) + held == sent  # each one once

"""The reconciler's bookkeeping: what is due for a message, and when a request is settled
(its state entry shrinks to a marker, so the state ConfigMap stays small)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from wingman.chat import render
from wingman.chat.guard import StepUp
from wingman.chat.metrics import ChatMetrics
from wingman.chat.service import ChatService
from wingman.settings import ChatConfig

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

"""A chat service over a cluster held in memory and a real file audit trail, for the channel
tests (the channels themselves talk to tests/support/fake_chat.py's servers)."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

from wingman.audit import open_sink
from wingman.chat.guard import StepUp
from wingman.chat.metrics import ChatMetrics
from wingman.chat.service import ChatService
from wingman.settings import ChatConfig, ChatPerson

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
BOB = ChatPerson(user="bob", groups=("approvers",), telegram_id=111, slack_id="U0BOB")


def request(name: str, n: int, **spec: Any) -> dict[str, Any]:
    """An ApprovalRequest awaiting a decision, created ``n`` minutes after the others."""
    return {"metadata": {"name": name, "uid": f"0f8fad5b-d9cb-469f-a165-{n:012d}",
                         "creationTimestamp": (NOW + dt.timedelta(minutes=n - 60)).strftime(
                             "%Y-%m-%dT%H:%M:%SZ")},
            "spec": {"requester": "agent", "environment": "prd", "instruction": "restart web",
                     "commands": ["kubectl rollout restart deployment/web -n apps"], **spec},
            "status": {"phase": "AwaitingDecision",
                       "expirationTime": (NOW + dt.timedelta(hours=1)).strftime(
                           "%Y-%m-%dT%H:%M:%SZ")}}


def oversized(name: str, n: int) -> dict[str, Any]:
    """As large as the CRD allows where a card shows it: too long even abridged."""
    return request(name, n, requester="system:serviceaccount:agents:" + "a" * 120,
                   instruction="i" * 2000, justification="j" * 2000,
                   commands=["kubectl get pods\u200b" + "x" * 215 for _ in range(10)],
                   source={"reference": "r" * 512, "agent": "g" * 253, "model": "m" * 253,
                           "excerpt": "e" * 4000, "inputTrust": "Untrusted"})


class Cluster:
    namespace = "wingman"

    def __init__(self, *objs: dict[str, Any]) -> None:
        self.objs = list(objs)
        self.saved: dict[str, Any] = {}

    def requests(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.objs)

    def grants(self) -> list[dict[str, Any]]:
        return []

    def load_state(self) -> dict[str, Any]:
        return copy.deepcopy(self.saved)

    def save_state(self, state: dict[str, Any]) -> None:
        self.saved = copy.deepcopy(state)


def service(tmp: Path, *objs: dict[str, Any], people: tuple[ChatPerson, ...] = (BOB,),
            clock: Any = None) -> ChatService:
    svc = ChatService(config=ChatConfig(environment="prd", people=people),
                      cluster=Cluster(*objs),  # type: ignore[arg-type]
                      sink=open_sink(str(tmp / "audit.log")), metrics=ChatMetrics(),
                      step_up=StepUp({}))
    if clock is not None:
        svc.clock = clock
    svc.state = {"horizon": (NOW - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "requests": {}}
    return svc


def audited(svc: ChatService, event: str = "ChatRefused") -> list[dict[str, Any]]:
    return [dict(r.data) for r in svc.sink.records() if r.event == event]


def metric(svc: ChatService, name: str, **labels: str) -> float:
    value = svc.metrics.registry.get_sample_value(name, {"environment": "prd", **labels})
    return float(value or 0.0)


__all__ = ["BOB", "NOW", "Cluster", "audited", "metric", "oversized", "request", "service"]

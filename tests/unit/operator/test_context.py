"""How ``Context.run`` schedules reconciles: a burst takes turns, each object still runs once."""

from __future__ import annotations

import asyncio
import types
from typing import Any

from wingman.operator.context import RUNNING_PER_THREAD, Context
from wingman.operator.metrics import Metrics


class Counting:
    """A reconciler that notes how many reconciles run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.done: list[str] = []

    async def reconcile(self, ctx: Context, body: dict[str, Any]) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.005)  # an API call
        self.running -= 1
        self.done.append(body["metadata"]["name"])

    async def abandon(self, ctx: Context, body: dict[str, Any], reason: str,
                      message: str) -> None:
        raise AssertionError("nothing fails here")


def context(concurrency: int) -> tuple[Context, Counting]:
    settings: Any = types.SimpleNamespace(api_concurrency=concurrency, environment="test")
    none: Any = None
    ctx = Context(settings, none, none, none, none, none, Metrics())
    reconciler = Counting()
    ctx.reconcilers["grant"] = reconciler
    return ctx, reconciler


def body(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"g{i}", "namespace": "ns", "uid": f"u{i}"}}


def test_a_burst_is_reconciled_a_bounded_number_at_a_time() -> None:
    """A thousand objects at once: every one is reconciled, never more than the pool's threads
    times RUNNING_PER_THREAD together (the rest wait without holding responses in memory)."""
    ctx, reconciler = context(4)

    async def burst() -> None:
        await asyncio.gather(*(ctx.run("grant", body(i)) for i in range(1000)))
    asyncio.run(burst())
    assert sorted(reconciler.done) == sorted(f"g{i}" for i in range(1000))
    assert reconciler.most == 4 * RUNNING_PER_THREAD


def test_a_new_event_loop_gets_its_own_turns() -> None:
    """A context outlives an event loop (a restart in the same process): runs go on."""
    ctx, reconciler = context(1)

    async def five() -> None:
        await asyncio.wait_for(asyncio.gather(*(ctx.run("grant", body(i)) for i in range(5))),
                               10)
    for _ in range(2):
        asyncio.run(five())
    assert len(reconciler.done) == 10 and reconciler.most == RUNNING_PER_THREAD

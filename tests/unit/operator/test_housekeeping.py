"""The sweep's stages: one that fails does not keep the later ones from running."""

from __future__ import annotations

import asyncio

import pytest

from wingman.errors import ClusterError
from wingman.operator.context import NotLeading
from wingman.operator.handlers.housekeeping import run_stages


def test_every_stage_runs_after_one_failed_and_the_first_failure_is_raised() -> None:
    ran: list[str] = []

    async def ok(name: str) -> None:
        ran.append(name)

    async def fails(name: str) -> None:
        ran.append(name)
        raise ClusterError(f"{name}: delete refused (403)")

    with pytest.raises(ClusterError, match="retire: delete refused"):
        asyncio.run(run_stages(lambda: ok("resync"), lambda: fails("retire"),
                               lambda: ok("keys"), lambda: fails("markers")))
    assert ran == ["resync", "retire", "keys", "markers"]


def test_losing_the_lead_stops_the_remaining_stages() -> None:
    ran: list[str] = []

    async def ok(name: str) -> None:
        ran.append(name)

    async def lost() -> None:
        raise NotLeading("another replica leads")

    with pytest.raises(NotLeading):
        asyncio.run(run_stages(lambda: ok("resync"), lost, lambda: ok("keys")))
    assert ran == ["resync"]

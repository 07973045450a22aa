"""``wingman_event_loop_lag_seconds``: a loop kept busy shows as a late timer; an idle one
does not."""

from __future__ import annotations

import asyncio
import time

from wingman.operator import lag


def test_a_busy_event_loop_shows_as_lag_and_an_idle_one_does_not() -> None:
    seen: list[float] = []

    async def run() -> None:
        task = asyncio.create_task(lag.sample(seen.append, interval=0.02))
        await asyncio.sleep(0.1)  # idle: the timers run on time
        time.sleep(0.3)  # a step that holds the loop (blocking work on it)
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    asyncio.run(run())
    assert max(seen) >= 0.25  # the timer due during the blocking step ran that late
    assert sum(1 for s in seen if s >= 0.25) == 1  # and only that one: the others on time
    assert min(seen) >= 0.0

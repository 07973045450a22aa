"""How late the operator's event loop runs: ``wingman_event_loop_lag_seconds``.

Everything the operator does passes through one event loop: kopf's watch events, every
reconcile step, the answers of API calls and audit writes coming back from their threads. When
the loop has more ready work than it can run, all of it waits, and nothing else measures that
wait. A timer due every ``INTERVAL`` seconds is observed by how late it ran.

Imports nothing of Wingman's; the caller passes the histogram's ``observe``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: How often the loop is sampled (seconds): ten samples a second cost nothing measurable.
INTERVAL = 0.1


async def sample(observe: Callable[[float], None], interval: float = INTERVAL) -> None:
    """Observe how late each ``interval`` timer ran, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        observe(max(0.0, loop.time() - due))


__all__ = ["INTERVAL", "sample"]

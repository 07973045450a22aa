"""The re-reads ``Context.run`` scheduled (``Context._retries``), taken out of the event loop
before it ends: a test asks which objects are to be read again, and nothing runs later."""

from __future__ import annotations

from typing import Any


def taken_retries(ctx: Any) -> set[str]:
    """The keys (``kind/uid``) of the re-reads ``ctx`` scheduled, each cancelled."""
    keys = set(ctx._retries)
    for handle in ctx._retries.values():
        handle.cancel()
    ctx._retries.clear()
    return keys


__all__ = ["taken_retries"]

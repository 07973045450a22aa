"""A checkpoint round that fails in a way of no known kind does not end the checkpoint loop."""

from __future__ import annotations

import asyncio
import logging
import types
from pathlib import Path
from typing import Any, cast

import pytest

from wingman.audit.file import FileSink
from wingman.operator.checkpoints import Checkpointer, _loop, checkpoint_round
from wingman.operator.context import Context
from wingman.operator.metrics import Metrics


class Faulty:
    """A checkpointer whose every round fails with a fault (a KeyError, as from an answer of an
    unexpected shape), counting its rounds; the loop stops itself after ``rounds``."""

    newest = None

    def __init__(self, stopped: asyncio.Event | None = None, rounds: int = 1) -> None:
        self.rounds = 0
        self.stopped, self.until = stopped, rounds

    def round(self) -> None:
        self.rounds += 1
        if self.stopped is not None and self.rounds >= self.until:
            self.stopped.set()
        raise KeyError("metadata")


def context(tmp_path: Path) -> Context:
    settings: Any = types.SimpleNamespace(environment="test", api_concurrency=2,
                                          checkpoint_interval_seconds=0)
    none: Any = None
    return Context(settings, none, none, FileSink(tmp_path / "audit.jsonl"), none, none,
                   Metrics())


def unexpected(ctx: Context) -> float:
    value = ctx.metrics.registry.get_sample_value("wingman_audit_checkpoint_failures_total",
                                                  {"reason": "Unexpected"})
    return value or 0.0


def test_a_round_failing_with_a_fault_is_counted_and_logged_never_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ctx = context(tmp_path)
    faulty = Faulty()
    with caplog.at_level(logging.ERROR, logger="wingman.operator.checkpoints"):
        assert checkpoint_round(ctx, cast(Checkpointer, faulty)) is None
    assert faulty.rounds == 1 and unexpected(ctx) == 1.0
    failed = [r for r in caplog.records if "checkpoint failed unexpectedly" in r.getMessage()]
    assert failed and failed[0].exc_info is not None  # its traceback, for the bug report


def test_the_checkpoint_loop_goes_on_after_a_round_that_failed_with_a_fault(
        tmp_path: Path) -> None:
    """The audit trail is checkpointed every interval for as long as the operator runs: a round
    that fails unexpectedly is followed by the next, not by no checkpoint ever again."""
    ctx = context(tmp_path)

    async def run() -> Faulty:
        stopped = asyncio.Event()
        faulty = Faulty(stopped, rounds=3)
        await asyncio.wait_for(_loop(ctx, cast(Checkpointer, faulty), stopped), 30)
        return faulty

    assert asyncio.run(run()).rounds == 3
    assert unexpected(ctx) == 3.0

"""The processes the harness starts: each in a process group of its own, stopped by group.

A terminal's Ctrl-C goes to its whole foreground process group. ``stopping_on_signals``
turns the first one into a clean-up and ignores the rest, but a child in our group would
still get each of them: a second Ctrl-C during the clean-up killed the ``ctr tasks delete``
or ``docker rm`` the clean-up was running, leaving containers behind. So every child the
harness runs is started in a session of its own (``run_apart``, and ``start_new_session``
for long-running ones); the first Ctrl-C still ends a command in flight, because
``subprocess.run`` kills its child when interrupted. Imports nothing of Wingman.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM ``proc``'s process group, wait up to ``timeout`` s, then SIGKILL it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def run_apart(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(argv, **kwargs)`` in a session of its own: a terminal's further
    Ctrl-C (ignored while cleaning up) does not reach it; an interrupt of the wait still
    kills it (``subprocess.run`` does). Its stdin is /dev/null unless ``input`` or ``stdin``
    is given (a process outside the terminal's group must not read from it)."""
    if kwargs.get("input") is None and "stdin" not in kwargs:
        kwargs.pop("input", None)
        kwargs["stdin"] = subprocess.DEVNULL
    return subprocess.run(argv, start_new_session=True, **kwargs)


__all__ = ["run_apart", "stop_group"]

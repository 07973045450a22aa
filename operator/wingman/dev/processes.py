"""The processes the harness starts: each in a process group of its own, stopped by group.

A terminal's Ctrl-C goes to its whole foreground process group. ``stopping_on_signals``
turns the first one into a clean-up and ignores the rest, but a child in our group would
still get each of them: a second Ctrl-C during the clean-up killed the ``ctr tasks delete``
or ``docker rm`` the clean-up was running, leaving containers behind. So every command the
clean-up runs (the docker CLI, the node's ``ctr``, ``ip`` and ``umount``: ``run_apart``) and
the long-running processes it stops (the control plane, dockerd, the node's: each started
with ``start_new_session``) are in a session of their own; the first Ctrl-C still ends a
command in flight, and what it started: ``run_apart`` kills the command's process group when
interrupted or past its timeout. Imports nothing of Wingman.
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


def run_apart(argv: list[str], *, input: Any = None, capture_output: bool = False,
              timeout: float | None = None, check: bool = False, **kwargs: Any
              ) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(argv, ...)`` in a session of its own: a terminal's further Ctrl-C
    (ignored while cleaning up) does not reach it. Its stdin is /dev/null unless ``input`` or
    ``stdin`` is given (a process outside the terminal's group must not read from it).

    Interrupted (Ctrl-C, :class:`~wingman.dev.run.Stopped`) or past its ``timeout``, its whole
    process group is killed, not only the command: outside the terminal's group, what the
    command started of its own (a CLI's plugin, a mount helper) would get no Ctrl-C and be left
    running."""
    if input is not None:
        if "stdin" in kwargs:
            raise ValueError("run_apart: give input or stdin, not both")
        kwargs["stdin"] = subprocess.PIPE
    elif "stdin" not in kwargs:
        kwargs["stdin"] = subprocess.DEVNULL
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with subprocess.Popen(argv, start_new_session=True, **kwargs) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            exc.stdout, exc.stderr = proc.communicate()
            raise
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, out, err)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the process group ``proc`` leads (started with ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


__all__ = ["run_apart", "stop_group"]

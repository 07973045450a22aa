"""Stopping the processes a test or the bench started."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM ``proc`` and wait up to ``timeout`` seconds for it to end; one still running
    then is SIGKILLed and waited for, so that no process outlives its test."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_if_running(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL ``proc`` and wait for it if it is still running: the last word of a test that
    signalled it and checked how it ended (a check that failed, or timed out, left it
    running); one that has ended is left as it is, its exit status kept."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


__all__ = ["kill_if_running", "stop_process"]

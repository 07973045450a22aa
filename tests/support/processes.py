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


__all__ = ["stop_process"]

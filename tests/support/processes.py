"""Stopping the processes a test or the bench started, and finding what they started."""

from __future__ import annotations

import os
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


def children_of(pid: int | None) -> list[int]:
    """The processes ``pid`` started that have not been reaped (the operator's writer)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task") if pid else ():
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                found += [int(child) for child in listed.read().split()]
    except OSError:
        pass
    return found


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


__all__ = ["children_of", "kill_if_running", "running", "stop_process"]

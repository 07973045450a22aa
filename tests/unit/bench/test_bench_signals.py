"""The operator bench stops everything it started on Ctrl-C (SIGINT), SIGTERM and SIGHUP, also
when a script started it in the background, which leaves SIGINT ignored
(tests/bench/bench_operator.py, ``until_stopped``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# what the bench runs, in little: a process it started, stopped by its clean-up
BENCH = """
import signal, subprocess, sys
from bench import bench_operator as bench

print("inherited SIGINT ignored:", signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
      flush=True)

def body() -> int:
    child = subprocess.Popen(["sleep", "300"])
    try:
        print("started", child.pid, flush=True)
        while True:
            signal.pause()
    finally:
        child.terminate()
        child.wait()
        print("stopped", child.pid, flush=True)

sys.exit(bench.until_stopped(body))
"""


# the same, with a clean-up that takes a while (as stopping a control plane does)
SLOW_CLEANUP = """
import signal, subprocess, sys, time
from bench import bench_operator as bench

def body() -> int:
    child = subprocess.Popen(["sleep", "300"])
    try:
        print("started", child.pid, flush=True)
        while True:
            signal.pause()
    finally:
        print("cleaning up", flush=True)
        time.sleep(2)
        child.terminate()
        child.wait()
        print("stopped", child.pid, flush=True)

sys.exit(bench.until_stopped(body))
"""


#: the directory ``bench`` is imported from (pytest puts it on its own path, not a child's)
TESTS = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    paths = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_background_bench_stops_what_it_started_on_each_signal(tmp_path: Path,
                                                                 sig: int) -> None:
    out_path = tmp_path / "out"
    # `&` in a non-interactive shell: the bench starts with SIGINT ignored
    shell = subprocess.Popen(
        ["sh", "-c", '"$0" -c "$1" > "$2" 2>&1 & pid=$!; echo "$pid"; wait "$pid"; '
                     'echo "exit $?" >> "$2"', sys.executable, BENCH, str(out_path)],
        stdout=subprocess.PIPE, text=True, env=_env())
    child = 0
    try:
        assert shell.stdout is not None
        bench = int(shell.stdout.readline())
        deadline = time.monotonic() + 60
        while "started" not in (out_path.read_text() if out_path.exists() else ""):
            assert shell.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, "the bench stand-in did not start"
            time.sleep(0.1)
        text = out_path.read_text()
        assert "inherited SIGINT ignored: True" in text, text
        child = int(text.split("started ", 1)[1].split()[0])
        os.kill(bench, sig)
        try:
            shell.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{signal.Signals(sig).name} left the bench running: "
                                 f"{out_path.read_text()}") from None
        out = out_path.read_text()
        assert f"stopped {child}" in out
        assert "everything it started is stopped" in out
        assert "exit 130" in out
        assert not _alive(child)
    finally:
        if shell.poll() is None:
            for pid in (bench, child):
                if pid and _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            shell.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_ctrl_c_during_the_clean_up_does_not_cut_it_short(tmp_path: Path,
                                                                    sig: int) -> None:
    """An impatient second Ctrl-C (or a SIGTERM) while the bench stops what it started is
    ignored, and said to be: the clean-up runs to its end and nothing is left running."""
    out_path = tmp_path / "out"
    with out_path.open("w") as written:
        bench = subprocess.Popen([sys.executable, "-c", SLOW_CLEANUP], stdout=written,
                                 stderr=subprocess.STDOUT, env=_env())
    child = 0
    try:
        deadline = time.monotonic() + 60
        while "started" not in out_path.read_text():
            assert bench.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, "the bench stand-in did not start"
            time.sleep(0.1)
        child = int(out_path.read_text().split("started ", 1)[1].split()[0])
        os.kill(bench.pid, sig)
        while "cleaning up" not in out_path.read_text():
            assert bench.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, "the clean-up did not begin"
            time.sleep(0.05)
        for again in (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(bench.pid, again)
            time.sleep(0.1)
        assert bench.wait(timeout=15) == 130, out_path.read_text()
        out = out_path.read_text()
        assert f"stopped {child}" in out, out
        assert "everything it started is stopped" in out
        assert out.count("clean-up in progress") == 1, out
        assert not _alive(child)
    finally:
        for pid in (bench.pid, child):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        bench.wait()

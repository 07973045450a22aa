"""A second Ctrl-C during ``wingman dev run``'s clean-up does not kill what the clean-up runs
(wingman/dev/processes.py): a terminal sends each Ctrl-C to its whole foreground process
group, and ``stopping_on_signals`` ignores all but the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

OPERATOR = Path(__file__).resolve().parents[3] / "operator"

# a command whose clean-up runs a child that takes a while (``ctr tasks delete`` does)
CLEANUP = """
import signal, sys
from wingman.dev import kubelet, processes
from wingman.dev.run import stopping_on_signals

run = {"run_apart": lambda *a: processes.run_apart(list(a), capture_output=True, text=True),
       "kubelet": lambda *a: kubelet._run(*a, check=False)}[sys.argv[1]]
with stopping_on_signals():
    try:
        print("started", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print("cleaning up", flush=True)
        done = run(sys.executable, "-c", "import time; time.sleep(1.5); print('finished')")
        print("child", done.returncode, done.stdout.strip(), flush=True)
"""


@pytest.mark.parametrize("runner", ["run_apart", "kubelet"])
def test_a_second_ctrl_c_does_not_kill_what_the_clean_up_runs(runner: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(OPERATOR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    # its own process group stands for the terminal's foreground group
    proc = subprocess.Popen([sys.executable, "-c", CLEANUP, runner], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.stdout.readline().strip() == "cleaning up"
        time.sleep(0.5)  # the child is running: Ctrl-C again, to the whole group
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.strip() == "child 0 finished", err
    assert proc.returncode == 0
    assert "SIGINT ignored: clean-up in progress" in err


# a command in flight that started a process of its own (a CLI's plugin, a mount helper)
IN_FLIGHT = """
import signal, subprocess, sys
from wingman.dev import processes
from wingman.dev.run import stopping_on_signals

grandchild = (
    "import subprocess, sys, time; "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
    "open(sys.argv[1], 'w').write(str(p.pid)); time.sleep(600)")
with stopping_on_signals():
    try:
        processes.run_apart([sys.executable, "-c", grandchild, sys.argv[1]],
                            capture_output=True, text=True, timeout=600)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie not yet reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_the_first_ctrl_c_ends_the_command_in_flight_and_what_it_started(
        tmp_path: Path) -> None:
    """In a session of its own the command no longer gets the terminal's Ctrl-C: interrupted,
    ``run_apart`` ends its whole process group, not only the command (whose own children
    would be left running, out of the terminal's reach)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(OPERATOR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    pid_file = tmp_path / "grandchild.pid"
    proc = subprocess.Popen([sys.executable, "-c", IN_FLIGHT, str(pid_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    grandchild = None
    try:
        deadline = time.monotonic() + 60
        while not pid_file.is_file() or not pid_file.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal's group
        out, err = proc.communicate(timeout=30)
        assert out.strip() == "interrupted", err
        deadline = time.monotonic() + 10
        while not _gone(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(grandchild)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if grandchild is not None and not _gone(grandchild):
            os.kill(grandchild, signal.SIGKILL)

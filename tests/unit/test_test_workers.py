"""``make test``'s workers (tests/conftest.py): a run in two pytest-xdist workers that is
interrupted, by Ctrl-C or by SIGTERM, SIGHUP or SIGINT to its main process, stops what the
workers' fixtures started, each teardown whole, instead of pytest-xdist ending the workers
mid-teardown and leaving their servers running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.processes import running

TESTS = Path(__file__).resolve().parents[1]

#: A session fixture that starts a server (its own session, as the control plane's are) and a
#: teardown that goes on well past pytest-xdist's window after stopping it; tests that run
#: until interrupted.
PROJECT = {
    "server.py": '''
import os, subprocess, time
import pytest

def say(msg):
    with open(os.environ["LOG"], "a") as log:
        log.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')} {os.getpid()} {msg}\\n")

@pytest.fixture(scope="session")
def server():
    proc = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        say(f"server {proc.pid}")
        yield proc
    finally:
        say("teardown start")
        proc.terminate()
        proc.wait()
        time.sleep(8)  # the rest of a teardown (unmounts, a data directory removed): longer
                       # than pytest-xdist gives a worker it asks to exit (5 s, then 10)
        say("teardown done")
''',
    "test_a.py": "import time\nfrom server import server\n\n"
                 "def test_a(server):\n    time.sleep(120)\n",
    "test_b.py": "import time\nfrom server import server\n\n"
                 "def test_b(server):\n    time.sleep(120)\n",
}

#: Starts pytest with SIGINT as the case needs it: ignored, as a shell script's background job
#: starts, or its default action (whatever this test's own run was started with).
LAUNCH = ("import os, signal, sys; signal.signal(signal.SIGINT, "
          "signal.SIG_IGN if sys.argv[1] == 'ignore' else signal.SIG_DFL); "
          "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


def _lines(log: Path, what: str) -> list[list[str]]:
    text = log.read_text() if log.exists() else ""
    return [line.split() for line in text.splitlines() if what in line]


def _wait_for(log: Path, what: str, count: int) -> list[list[str]]:
    deadline = time.monotonic() + 60
    while len(found := _lines(log, what)) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(found) == count, f"not {count} times {what!r}:\n{log.read_text()}"
    return found


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "SIGTERM, SIGINT ignored", "Ctrl-C",
                                 "SIGINT to the main process", "SIGTERM again in teardown"])
def test_an_interrupted_run_with_workers_tears_every_fixture_down(tmp_path: Path,
                                                                   how: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name, text in PROJECT.items():
        (project / name).write_text(text)
    log = tmp_path / "log"
    env = {**os.environ, "LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    for inherited in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        env.pop(inherited, None)
    # the project's tests, with tests/conftest.py's hooks loaded as a plugin
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "ignore" if "ignored" in how else "default",
         "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
         "-n", "2", "--dist", "loadfile", str(project)],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    servers: list[int] = []
    try:
        servers = [int(line[3]) for line in _wait_for(log, "server", 2)]
        time.sleep(1)
        if how == "Ctrl-C":  # the terminal's signal reaches the whole process group
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "SIGINT to the main process":
            proc.send_signal(signal.SIGINT)
        else:  # a supervisor's reaches the main process only
            proc.send_signal(getattr(signal, how.split(",")[0].split()[0]))
        if how == "SIGTERM again in teardown":
            # a supervisor that signals again, and the whole group: the teardowns go on
            workers = [int(line[1]) for line in _wait_for(log, "teardown start", 2)]
            for pid in (proc.pid, *workers):
                os.kill(pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
        said = log.read_text()
        assert proc.returncode == pytest.ExitCode.INTERRUPTED, out + said
        assert said.count("teardown done") == 2, said
        assert not [pid for pid in servers if running(pid)], said
    finally:
        # whatever a failed case left: the run's processes (its own group) and the servers
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pid in servers:
            if running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

"""``make test``'s workers (tests/conftest.py): a run in two pytest-xdist workers that is
interrupted, by Ctrl-C or by SIGTERM or SIGHUP to its main process, stops what the workers'
fixtures started, each teardown whole, instead of pytest-xdist ending the workers mid-teardown
and leaving their servers running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.processes import kill_if_running

TESTS = Path(__file__).resolve().parents[1]

#: A session fixture that starts a server (its own session, as the control plane's are) and a
#: teardown that goes on for a while after stopping it; a test that runs until interrupted.
PROJECT = {
    "server.py": '''
import os, subprocess, time
import pytest

def say(msg):
    with open(os.environ["LOG"], "a") as log:
        log.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')} {msg}\\n")

@pytest.fixture(scope="session")
def server():
    proc = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    say(f"server {proc.pid}")
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait()
        time.sleep(6)  # the rest of a teardown (unmounts, a data directory removed): longer
                       # than pytest-xdist gives a worker it asks to exit
        say("teardown done")
''',
    "test_a.py": "import time\nfrom server import server\n\n"
                 "def test_a(server):\n    time.sleep(120)\n",
    "test_b.py": "import time\nfrom server import server\n\n"
                 "def test_b(server):\n    time.sleep(120)\n",
}


def _servers(log: Path) -> list[int]:
    text = log.read_text() if log.exists() else ""
    return [int(line.split()[2]) for line in text.splitlines() if line.split()[1] == "server"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


#: Starts pytest with SIGINT ignored, as a shell script's background job starts.
IGNORING_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "SIGTERM, SIGINT ignored", "Ctrl-C"])
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
    # the project's tests with tests/conftest.py's hooks loaded as a plugin
    launch = [sys.executable] + (["-c", IGNORING_SIGINT] if "ignored" in how else [])
    proc = subprocess.Popen(
        [*launch, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
         "-n", "2", "--dist", "loadfile", str(project)],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    servers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(servers := _servers(log)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(servers) == 2, "the workers did not start their servers"
        time.sleep(1)
        if how == "Ctrl-C":  # the terminal's signal reaches the whole process group
            os.killpg(proc.pid, signal.SIGINT)
        else:  # a supervisor's reaches the main process only
            proc.send_signal(getattr(signal, how.split(",")[0]))
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
        said = log.read_text()
        assert said.count("teardown done") == 2, said
        assert not [pid for pid in servers if _alive(pid)], said
    finally:
        kill_if_running(proc)
        for pid in servers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

"""Shared fixtures: the real local control plane, fresh namespaces, PostgreSQL, ordering.

Tiers are chosen by markers (``integration``, ``container``, ``e2e``, ``postgres``); every tier
runs under the README's test command (in one process unit tests first and e2e last; with
workers the slow tiers are handed out first). Integration, container and
e2e tests use a real kube-apiserver + etcd + kube-controller-manager started once per session
(``wingman.dev.cluster``); they never read the developer's own kubeconfig. The container tier
also starts a private Docker Engine and builds the image (``tests/support/containers.py``).

With ``WINGMAN_E2E_KUBECONFIG`` set, ``cluster`` is that existing cluster instead of a local
control plane (``tests/support/clusters.py``; ``make e2e-kind`` uses it with kind).

SIGTERM and SIGHUP end a session the way Ctrl-C does, so every fixture's teardown runs and no
server a test started (control plane, dockerd, PostgreSQL, operator) is left behind.

``make test`` runs the tests in two worker processes (pytest-xdist, ``WINGMAN_TEST_WORKERS``):
each worker is a session of its own, with its own control plane, PostgreSQL and Docker Engine,
started only when one of its tests needs them. A worker is handed whole files (a module's tests
may rely on one another's order and effects, as the flow in tests/e2e/test_flow.py does), the
slow tiers first; the tests that use the machine itself (the container tier, real nodes,
``wingman dev run``) all go to one worker, so the image is built once. When the
run is interrupted (Ctrl-C, or SIGTERM/SIGHUP to the main process, which passes SIGTERM on to
the workers) the main process waits until each worker says its session is over, its fixtures
torn down, before pytest-xdist ends them, so their servers are stopped too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from support.clusters import ExistingCluster, existing_kubeconfig, nodes_mode
from support.postgres import audit_dsn, postgres_dsn  # noqa: F401 - fixtures
from support.processes import running
from wingman.dev.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"

_TIER_ORDER = {"unit": 0, "integration": 1, "container": 2, "e2e": 3}


#: The pytest-xdist workers (in the main process of a run with workers): id -> process id.
_WORKERS: dict[str, int] = {}

#: Where each worker says its session is over, every fixture torn down (a file per worker id).
_DONE_DIR = "_WINGMAN_TEST_WORKERS_DONE"

#: How long an interrupted run waits for the workers to tear their fixtures down.
WORKER_TEARDOWN_SECONDS = 300.0

#: How often that wait passes SIGTERM to a worker not yet interrupted (the main process may
#: have had a SIGINT of its own, which no worker heard; a test's own handler may swallow one).
WORKER_NUDGE_SECONDS = 5.0

_interrupted = False
_in_worker = False
_worker_id = ""
#: The directory of the workers' word: the one this main process made, or a worker's.
_done_dir: str | None = None


def _pass_on(pids: Iterable[int]) -> None:
    for pid in pids:
        # SIGTERM, not SIGINT: a run started in the background of a script ignores SIGINT
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _interrupt(signum: int, _frame: object) -> None:
    global _interrupted
    if _interrupted:
        # once interrupted, a process goes on with its teardown (and the main process with its
        # wait for the workers'): a worker hears a signal sent to the whole group twice (its own
        # and the one passed on), a supervisor may send its signal again. A second Ctrl-C
        # still ends the run at once, as it does in one process (and only SIGINT or SIGKILL
        # ends a teardown that hangs).
        return
    _interrupted = True
    _pass_on(_WORKERS.values())
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Interrupted, by Ctrl-C too (not through ``_interrupt``): a SIGTERM or SIGHUP now is a
    repeat. A worker says so, and the main process passes it no more signals."""
    global _interrupted
    _interrupted = True
    if _in_worker and _done_dir is not None:
        with contextlib.suppress(OSError):
            Path(_done_dir, f"{_worker_id}.interrupted").touch()


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM and SIGHUP interrupt like Ctrl-C: pytest then tears every fixture down."""
    global _in_worker, _worker_id, _done_dir
    _in_worker = hasattr(config, "workerinput")
    if _in_worker:
        _worker_id = str(config.workerinput["workerid"])  # type: ignore[attr-defined]
        _done_dir = os.environ.get(_DONE_DIR)
    elif getattr(config.option, "tx", None):
        # the main process of a run with workers (they inherit the environment)
        _done_dir = os.environ[_DONE_DIR] = tempfile.mkdtemp(prefix="wingman-test-workers-")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _interrupt)


def _say_done(config: pytest.Config) -> None:
    """A worker's word that its session is over, every fixture's teardown run."""
    if _in_worker and _done_dir is not None:
        with contextlib.suppress(OSError):
            Path(_done_dir, _worker_id).touch()


def pytest_unconfigure(config: pytest.Config) -> None:
    global _done_dir
    if _in_worker:
        _say_done(config)  # again, in case the session's end did not get that far
    elif _done_dir is not None:
        shutil.rmtree(_done_dir, ignore_errors=True)
        os.environ.pop(_DONE_DIR, None)
        _done_dir = None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_newgateway(gateway: object) -> None:
    """Note each worker's process id, so that an interrupted run can pass the signal on and
    wait for the worker's teardown."""
    channel = gateway.remote_exec("import os; channel.send(os.getpid())")  # type: ignore[attr-defined]
    _WORKERS[str(gateway.id)] = int(channel.receive(timeout=60))  # type: ignore[attr-defined]


def _tell(text: str) -> None:
    with contextlib.suppress(OSError):  # the terminal may be gone (a hangup)
        print(text, file=sys.stderr, flush=True)


def _wait_for_workers(done: str) -> None:
    """Wait until every worker's session is over, its fixtures torn down (pytest-xdist ends a
    worker 10 s after asking it to exit, which would cut a control plane's or an engine's
    teardown short), or the worker has ended."""
    began = time.monotonic()
    said = False
    told = nudged = began
    while (left := sorted(w for w, pid in _WORKERS.items()
                          if not Path(done, w).exists() and running(pid))):
        waited = time.monotonic() - began
        if waited >= WORKER_TEARDOWN_SECONDS:
            _tell(f"\ntest workers {', '.join(left)} still tear down after "
                  f"{WORKER_TEARDOWN_SECONDS:.0f} s: they are ended now, and what they started "
                  f"may be left running")
            return
        if time.monotonic() - nudged >= WORKER_NUDGE_SECONDS:
            _pass_on(_WORKERS[w] for w in left if not Path(done, f"{w}.interrupted").exists())
            nudged = time.monotonic()
        if not said or time.monotonic() - told >= 10:
            _tell(f"\nwaiting for test workers {', '.join(left)} to stop what they started")
            said, told = True, time.monotonic()
        time.sleep(0.2)


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> object:
    """The main process of an interrupted run with workers waits for them before
    pytest-xdist ends them; a worker says its session is over once every fixture's teardown
    has run (also when one raised)."""
    if (not _in_worker and _WORKERS and _done_dir is not None
            and exitstatus == pytest.ExitCode.INTERRUPTED):
        _wait_for_workers(_done_dir)
    try:
        return (yield)
    finally:
        _say_done(session.config)


def _tier(item: pytest.Item) -> str:
    path = Path(str(item.fspath))
    for tier in ("e2e", "container", "integration", "unit", "bench"):
        if tier in path.parts:
            return tier
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark by directory; in one process the slow tiers run last, with workers they are handed
    out first (every tier still runs)."""
    real_nodes = existing_kubeconfig() is not None and nodes_mode() == "cluster"
    for item in items:
        tier = _tier(item)
        if tier in ("integration", "container", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))
        if real_nodes and item.get_closest_marker("nodeharness"):
            item.add_marker(pytest.mark.skip(
                reason="runs gateway pods through the node harness; WINGMAN_E2E_NODES=cluster "
                       "lets the cluster's own nodes run pods, which would race it"))
    if hasattr(config, "workerinput"):
        # a worker's order is the order the main process hands files out in: the slow tiers
        # first, so that the many short unit-test files even the workers out at the end
        items.sort(key=lambda i: -_TIER_ORDER.get(_tier(i), 0))
    else:
        items.sort(key=lambda i: _TIER_ORDER.get(_tier(i), 0))


#: Tests that use the machine itself, not only a session of their own: the private Docker
#: Engine and the image (built once), real nodes (each sweeps the network namespaces of dead
#: ones) and `wingman dev run` (its operator binds the default ports). One worker runs them all.
_ONE_WORKER = ("tests/container/", "tests/integration/dev/test_kubelet.py",
               "tests/e2e/test_devrun.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Hand the workers whole files (a module's tests may share a fixture and rely on one
    another's order and effects), and every test of ``_ONE_WORKER`` to one worker."""
    if config.getoption("dist") not in ("load", "loadfile", "loadgroup", "loadscope"):
        return None
    from xdist.scheduler import LoadFileScheduling

    class _ByFile(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "one-worker" if path.startswith(_ONE_WORKER) else path

    config.option.loadscopereorder = False  # keep the order the workers collected
    return _ByFile(config, log)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The real local control plane, started once per test session (or the existing cluster
    WINGMAN_E2E_KUBECONFIG names)."""
    existing = existing_kubeconfig()
    if existing is not None:
        found = ExistingCluster.connect(existing)
        try:
            yield found
        finally:
            found.stop()
        return
    workdir = tmp_path_factory.mktemp("cluster")
    local = LocalCluster.start(workdir)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def crds(cluster: LocalCluster) -> Path:
    """Top-level crds/ applied to the cluster and Established."""
    cluster.apply_crds(CRDS)
    return CRDS


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(autouse=True)
def _no_ambient_kubeconfig(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never fall back to the developer's own kubeconfig by accident."""
    monkeypatch.delenv("KUBECONFIG", raising=False)

"""The operator's call pool: threads on demand up to a limit, ended when idle, nothing lost."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError, Future, wait

import pytest

from wingman.operator.pool import CallPool


def _until(cond: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_results_and_errors_reach_the_caller() -> None:
    pool = CallPool(2)
    try:
        assert pool.submit(lambda a, b: a + b, 2, b=3).result(5) == 5
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(5)
    finally:
        pool.shutdown()


def test_threads_start_as_work_arrives_up_to_the_limit() -> None:
    pool = CallPool(3)
    gate = threading.Event()
    try:
        assert pool.threads == 0
        futures = [pool.submit(gate.wait, 5) for _ in range(5)]
        assert _until(lambda: pool.threads == 3)
        gate.set()
        done, _ = wait(futures, 5)
        assert len(done) == 5 and all(f.result() for f in futures)
        assert pool.threads == 3  # never more than the limit
    finally:
        pool.shutdown()


def test_a_waiting_thread_takes_new_work_instead_of_a_new_thread() -> None:
    pool = CallPool(4)
    try:
        for _ in range(20):
            pool.submit(lambda: None).result(5)
            # the thread is back waiting before the next call (private: no public need)
            assert _until(lambda: pool._waiting == 1)
        assert pool.threads == 1
    finally:
        pool.shutdown()


def test_idle_threads_end_and_the_clean_up_runs_once_per_idle_period() -> None:
    shrinks: list[int] = []
    pool = CallPool(4, idle_seconds=1.0, on_shrink=shrinks.append)
    gate = threading.Event()
    try:
        futures = [pool.submit(gate.wait, 5) for _ in range(4)]
        assert _until(lambda: pool.threads == 4)
        gate.set()
        wait(futures, 5)
        assert _until(lambda: pool.threads == 0 and len(shrinks) == 1)
        time.sleep(0.2)
        # four threads ended together: one clean-up, told how many threads were still alive
        # when the first of them ended (the operator keeps a connection for each)
        assert len(shrinks) == 1 and shrinks[0] == 3
        # the pool works again after it shrank to nothing
        assert pool.submit(lambda: "again").result(5) == "again"
        assert pool.threads == 1
        assert _until(lambda: pool.threads == 0 and len(shrinks) == 2)
        assert shrinks[1] == 0
    finally:
        pool.shutdown()


def test_a_busy_thread_is_kept() -> None:
    pool = CallPool(2, idle_seconds=0.5)
    try:
        for _ in range(8):  # work more often than the idle period
            pool.submit(time.sleep, 0.01).result(5)
            time.sleep(0.05)
        assert pool.threads == 1
        assert pool._started == 1  # the same thread all along (private: no public need)
    finally:
        pool.shutdown()


def test_a_failing_clean_up_is_logged_and_the_pool_goes_on(caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    def broken(alive: int) -> None:
        raise OSError("connection pool gone")

    pool = CallPool(1, idle_seconds=0.1, on_shrink=broken)
    try:
        pool.submit(lambda: None).result(5)
        assert _until(lambda: "clean-up after idle threads ended failed" in caplog.text)
        assert pool.submit(lambda: 7).result(5) == 7
    finally:
        pool.shutdown()


def test_no_work_is_lost_while_threads_come_and_go() -> None:
    """Submissions racing with threads that end at their idle deadline all run."""
    pool = CallPool(3, idle_seconds=0.005)
    counter = 0
    lock = threading.Lock()

    def bump() -> None:
        nonlocal counter
        with lock:
            counter += 1

    try:
        futures: list[Future[None]] = []
        for i in range(2000):
            futures.append(pool.submit(bump))
            if i % 50 == 0:
                time.sleep(0.006)  # let threads reach their deadline now and then
        _, not_done = wait(futures, 30)
        assert not not_done
        assert counter == 2000
    finally:
        pool.shutdown()


def test_shutdown_finishes_queued_work_unless_asked_to_cancel_it() -> None:
    pool = CallPool(1)
    gate = threading.Event()
    first = pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: "ran")
    gate.set()
    pool.shutdown(wait=True)
    assert first.result(0) and queued.result(0) == "ran"
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)

    pool = CallPool(1)
    gate = threading.Event()
    running = pool.submit(gate.wait, 5)
    assert _until(lambda: running.running())
    cancelled = pool.submit(lambda: "never")
    threading.Timer(0.1, gate.set).start()
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(0)
    with pytest.raises(CancelledError):
        cancelled.result(0)
    assert pool.threads == 0


def test_a_thread_that_cannot_start_loses_no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system has no thread to give (a pids limit): with no thread at all the caller is
    told and nothing runs later behind its back; with threads, they run it in turn."""
    real_start = threading.Thread.start

    def no_thread(self: threading.Thread) -> None:
        if self.name.startswith("call_"):
            raise RuntimeError("can't start new thread")
        real_start(self)

    pool = CallPool(2)
    ran: list[str] = []
    try:
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            pool.submit(ran.append, "refused")
        monkeypatch.undo()
        gate = threading.Event()
        first = pool.submit(gate.wait, 5)  # one thread, busy
        assert _until(lambda: first.running())
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        second = pool.submit(ran.append, "queued")  # no second thread: the first takes it
        monkeypatch.undo()
        gate.set()
        assert second.result(5) is None and first.result(5)
        assert ran == ["queued"] and pool.threads == 1
    finally:
        monkeypatch.undo()
        pool.shutdown()


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        CallPool(0)
    with pytest.raises(ValueError, match="idle_seconds"):
        CallPool(1, idle_seconds=0)

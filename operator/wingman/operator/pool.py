"""The operator's pool of threads for blocking calls (API server, audit), which shrinks when idle.

A burst needs many threads at once (``settings.api_concurrency``, 32 by default); a quiet
operator needs one or two. ``concurrent.futures.ThreadPoolExecutor`` never lets a thread go,
so after one burst its threads, each thread's last API connection and the memory they pinned
stayed for the life of the process. Here a thread that found no work for ``idle_seconds``
ends, and ``on_shrink(threads still alive)`` (the operator: close the idle API connections
beyond one for each of those threads and the leader election's) runs at most once per
``idle_seconds`` after threads ended, on the thread that ends (``shutdown`` does not wait
for it); the next burst starts threads (and connections) again as it needs them.

Imports nothing of Wingman.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger("wingman.operator.pool")

P = ParamSpec("P")
T = TypeVar("T")

#: a thread with no work this long ends
IDLE_SECONDS = 10.0


class _Work:
    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self.future, self.fn, self.args, self.kwargs = future, fn, args, kwargs

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class CallPool(Executor):
    """At most ``max_workers`` threads, started as work arrives, ended after ``idle_seconds``
    without work. Thread-safe; ``shutdown`` as ``ThreadPoolExecutor``'s."""

    def __init__(self, max_workers: int, *, thread_name_prefix: str = "call",
                 idle_seconds: float = IDLE_SECONDS,
                 on_shrink: Callable[[int], object] | None = None) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if idle_seconds <= 0:
            raise ValueError("idle_seconds must be positive")
        self.max_workers = max_workers
        self.idle_seconds = idle_seconds
        self.on_shrink = on_shrink
        self._prefix = thread_name_prefix
        self._work_ready = threading.Condition(threading.Lock())
        self._queue: deque[_Work] = deque()
        self._threads: set[threading.Thread] = set()
        self._waiting = 0  # threads waiting for work
        self._shutdown = False
        self._started = 0  # for thread names
        self._shrunk_at = float("-inf")
        self._shrinking = False

    @property
    def threads(self) -> int:
        """Threads alive now."""
        with self._work_ready:
            return len(self._threads)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        with self._work_ready:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            work = _Work(future, fn, args, kwargs)
            self._queue.append(work)
            if len(self._queue) > self._waiting and len(self._threads) < self.max_workers:
                try:
                    self._start()
                except RuntimeError:  # the system has no thread to give (a pids limit)
                    if not self._threads:
                        self._queue.remove(work)  # nobody would run it: the caller is told
                        raise
                    # the threads there are take it in turn
            else:
                self._work_ready.notify()
        return future

    def _start(self) -> None:
        """A new thread (the lock is held; it waits for the lock before it looks for work)."""
        thread = threading.Thread(target=self._work, name=f"{self._prefix}_{self._started}",
                                  daemon=True)
        thread.start()  # counted only once it runs: a thread that failed to start is not
        self._started += 1
        self._threads.add(thread)

    def _next(self, me: threading.Thread) -> _Work | None:
        """The next work, or None when this thread ends (idle too long, or shut down)."""
        with self._work_ready:
            deadline = time.monotonic() + self.idle_seconds
            while not self._queue:
                left = deadline - time.monotonic()
                if self._shutdown or left <= 0:
                    self._threads.discard(me)
                    if not self._shutdown and self._shrink_due():
                        self._shrinking = True
                        alive = len(self._threads)
                        break
                    return None
                self._waiting += 1
                try:
                    self._work_ready.wait(left)
                finally:
                    self._waiting -= 1
            else:
                return self._queue.popleft()
        self._shrink(alive)
        return None

    def _work(self) -> None:
        me = threading.current_thread()
        try:
            while (work := self._next(me)) is not None:
                work.run()
                del work
        finally:
            with self._work_ready:
                self._threads.discard(me)

    def _shrink_due(self) -> bool:
        """Whether the thread that ends now runs ``on_shrink`` (the lock is held): at most once
        per ``idle_seconds``, so a pool that loses many threads at once cleans up once."""
        now = time.monotonic()
        if self.on_shrink is None or self._shrinking or now - self._shrunk_at < self.idle_seconds:
            return False
        self._shrunk_at = now
        return True

    def _shrink(self, alive: int) -> None:
        try:
            assert self.on_shrink is not None
            self.on_shrink(alive)
        except Exception as exc:  # noqa: BLE001 - a failed clean-up never stops the pool
            log.warning("pool clean-up after idle threads ended failed",
                        extra={"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        finally:
            with self._work_ready:
                self._shrinking = False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._work_ready:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft().future.cancel()
            threads = list(self._threads)
            self._work_ready.notify_all()
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()


__all__ = ["IDLE_SECONDS", "CallPool"]

"""The writer process: the operator's calls to the API server and its audit appends, run in a
process of their own.

Why: the operator's event loop and the threads that made its blocking calls shared one
interpreter lock. Under a burst the loop is busy with the watch events, and a thread gives the
lock up at every system call of its call (each send and receive of an HTTP request, the audit's
lock, write and fsync) and gets it back only once the loop lets go, after up to the switch
interval (5 ms) each time: a request's audit append and status write waited tens of
milliseconds for the interpreter, not for the disk or the API server (docs/architecture.md,
"The writer process"). Here the operator sends each call over a socket pair and reads the
answer on the event loop itself; the writer runs the calls on threads of its own
(``pool.CallPool``: ``api_concurrency`` for the API, one for the audit), with its own API
connections and its own audit sink. The sinks serialise appends between processes as they do
between the operator and the gateway (``flock``, or PostgreSQL's locks), and the order of the
operator's own appends is the order it sends them in (one group commit at a time,
``recorder``).

What runs here is a fixed set of calls (``KUBE_CALLS`` of ``wingman.kube.Kube``,
``create_or_adopt`` and the sink's ``append_all``), with their arguments and answers pickled
over the socket: both ends are this operator, forked from it, and nothing else can reach the
socket. Each answer carries the API calls it made (the operator's metrics observe them as if
made in the operator's process) and how long the call waited for a thread.

Lifecycle: forked by ``Writer.start`` while the operator has only its main thread (so no
lock, connection or thread is shared) and before it builds anything; it does nothing on SIGINT,
SIGTERM and SIGHUP (a terminal's Ctrl-C reaches the whole process group: the operator stops it)
and ends when its socket closes (the operator stopped), once the calls running are done (those
still queued are dropped; their callers are gone). When the operator dies (SIGKILL, a crash)
the kernel kills the writer with it (``PR_SET_PDEATHSIG``), so no call of a dead operator
lands later, as none did on its threads. If the writer ends otherwise, every call waiting for
it fails (an API call as a ``ClusterError``, an append as ``AuditUnavailable``: whether it was
written is unknown, and the retry records it again, at least once as every append) and
``on_lost`` is told why (the operator then stops with an error, and Kubernetes starts it
again).

Imports ``wingman.kube``, ``wingman.audit``, ``wingman.errors``, ``wingman.operator.pool``
and ``wingman.operator.memory`` only.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import os
import pickle
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from wingman.audit import open_sink
from wingman.errors import AuditUnavailable, ClusterError, WingmanError
from wingman.kube import Kube, create_or_adopt
from wingman.operator import memory
from wingman.operator.pool import CallPool

log = logging.getLogger("wingman.operator.writer")

#: The Kube methods the writer runs (everything else stays on the operator's own threads).
KUBE_CALLS = frozenset({"get", "get_or_none", "list", "create", "patch", "delete"})
#: The other calls it runs.
APPEND = "append_all"
ADOPT = "create_or_adopt"
#: The frame that withdraws a call its caller no longer waits for (dropped unless running).
CANCEL = "cancel"
#: The seconds ``close`` waits for the writer to finish its calls in flight and end (then it
#: is killed): well within a pod's grace period (30 s by default), so that the operator still
#: hands its Lease over itself.
CLOSE_SECONDS = 10.0
#: The seconds the operator waits for a writer it lost to be reaped, for its exit status (it
#: is killed after that; the event loop waits meanwhile).
LOST_SECONDS = 0.2

_HEADER = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1
#: (verb, resource, code, seconds) of an API call the writer made
Observation = tuple[str, str, str, float]


class Unsendable(Exception):
    """A call whose arguments cannot be sent to the writer (a function among them: a filter
    of ``Kube.list``): the caller runs it itself."""


class Writer:
    """The operator's end: ``call`` sends a call and waits for its answer (on the event loop;
    one loop at a time), ``close`` ends the writer."""

    def __init__(self, sock: socket.socket, pid: int, *,
                 on_lost: Callable[[str], object] | None = None,
                 on_answer: Callable[[list[Observation], float], object] | None = None
                 ) -> None:
        self._sock = sock
        self.pid = pid
        self._on_lost = on_lost
        #: told of each answer: the API calls the call made, and its wait for a thread
        self.on_answer = on_answer
        self._waiting: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._sent = 0
        self._out = bytearray()
        self._in = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False
        #: why the writer is gone (None while it runs)
        self.lost: str | None = None

    @classmethod
    def start(cls, *, pool: int, audit_target: str,
              on_lost: Callable[[str], object] | None = None,
              on_answer: Callable[[list[Observation], float], object] | None = None) -> Writer:
        """Fork the writer; RuntimeError when this process runs threads besides its main one
        (a fork would copy their locks held)."""
        if threading.active_count() != 1:
            raise RuntimeError("the writer process must be started before any thread")
        ours, theirs = socket.socketpair()
        gc.collect()
        gc.freeze()  # the objects made so far stay where they are: their pages stay shared
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            gc.unfreeze()
            ours.close()
            theirs.close()
            raise
        if pid == 0:  # pragma: no cover - the child; its behaviour is tested from the operator
            code = 1
            try:
                ours.close()
                _die_with(parent)
                code = _serve(theirs, pool, audit_target)
            except WingmanError as exc:  # the operator's own start says the same, or its loss
                log.error("the writer process cannot run", extra={"error": str(exc)})
                code = 2
            except BaseException:  # reported, and the process ends
                log.exception("the writer process failed")
            finally:
                os._exit(code)
        gc.unfreeze()
        theirs.close()
        ours.setblocking(False)
        log.info("writer process started", extra={"pid": pid})
        return cls(ours, pid, on_lost=on_lost, on_answer=on_answer)

    async def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``op`` (a ``KUBE_CALLS`` name, ``ADOPT`` or ``APPEND``) in the writer;
        ``Unsendable`` when its arguments cannot be sent (nothing was sent)."""
        loop = asyncio.get_running_loop()
        if self.lost is not None:
            raise _gone(op, self.lost)
        self._attach(loop)
        try:
            frame = pickle.dumps((self._sent + 1, op, args, kwargs, time.monotonic()),
                                 protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise Unsendable(f"{op}: {exc}") from None
        self._sent += 1
        ident = self._sent
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting[ident] = (op, future)
        self._send(frame)
        try:
            return await future
        finally:
            self._waiting.pop(ident, None)
            if future.cancelled() and self.lost is None:  # not started yet: never start it
                self._send(pickle.dumps((ident, CANCEL, (), {}, 0.0),
                                        protocol=pickle.HIGHEST_PROTOCOL))

    def _send(self, frame: bytes) -> None:
        self._out += _HEADER.pack(len(frame))
        self._out += frame
        self._flush()

    def watch(self) -> None:
        """Read the writer's answers on the running event loop from now on: its end is noticed
        at once (``on_lost``), also while no call waits."""
        self._attach(asyncio.get_running_loop())

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop or self.lost is not None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._readable)

    def _flush(self) -> None:
        while self._out:
            try:
                sent = self._sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._lose(f"its socket failed: {exc}")
                return
            del self._out[:sent]
        assert self._loop is not None
        if self._out and not self._writing:
            self._loop.add_writer(self._sock.fileno(), self._flush)
            self._writing = True
        elif not self._out and self._writing:
            self._loop.remove_writer(self._sock.fileno())
            self._writing = False

    def _readable(self) -> None:
        try:
            chunk = self._sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(f"its socket failed: {exc}")
            return
        if not chunk:
            self._lose("it ended")
            return
        self._in += chunk
        while len(self._in) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._in)
            if len(self._in) < _HEADER.size + size:
                break
            frame = bytes(self._in[_HEADER.size:_HEADER.size + size])
            del self._in[:_HEADER.size + size]
            try:
                ident, ok, value, seen, waited = pickle.loads(frame)  # noqa: S301 - our fork
            except Exception as exc:  # noqa: BLE001 - what follows it cannot be trusted either
                self._lose(f"an answer could not be read: {type(exc).__name__}: {exc}")
                return
            waiting = self._waiting.get(ident)
            if waiting is not None and not waiting[1].done():  # else: its caller was cancelled
                if ok:
                    waiting[1].set_result(value)
                else:
                    waiting[1].set_exception(value)
            if self.on_answer is not None:
                try:
                    self.on_answer(seen, waited)
                except Exception:  # a metric never fails a call (as kube.Observer)
                    log.debug("the writer's answer observer failed", exc_info=True)

    def _lose(self, why: str) -> None:
        if self.lost is not None:
            return
        # its end shows on the socket a moment before it can be reaped; one still running (an
        # answer that could not be read) is killed: nothing it still does is waited for
        status = _reap(self.pid, wait=True, seconds=LOST_SECONDS)
        if status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(self.pid, wait=True, seconds=LOST_SECONDS)
        self.lost = why if status is None else f"{why} ({status})"
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            if self._writing:
                self._loop.remove_writer(self._sock.fileno())
                self._writing = False
        for op, future in list(self._waiting.values()):
            if not future.done():
                future.set_exception(_gone(op, self.lost))
        log.error("the writer process is gone", extra={"pid": self.pid, "why": self.lost})
        if self._on_lost is not None:
            self._on_lost(self.lost)

    def close(self) -> None:
        """End the writer: it finishes the calls in flight (within ``CLOSE_SECONDS``, else it
        is killed) and exits. From any thread once the event loop no longer runs."""
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(self._sock.fileno())
                if self._writing:
                    self._loop.remove_writer(self._sock.fileno())
            except (RuntimeError, ValueError):
                pass
        self._sock.close()
        self.lost = self.lost or "it was stopped"
        if _reap(self.pid, wait=True, seconds=CLOSE_SECONDS) is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            _reap(self.pid, wait=True, seconds=5.0)


def _gone(op: str, why: str) -> Exception:
    said = f"the operator's writer process is gone ({why}): "
    if op == APPEND:
        return AuditUnavailable(said + "whether the records were written is unknown")
    return ClusterError(said + "whether the call reached the API server is unknown")


def _reap(pid: int, *, wait: bool, seconds: float = 0.0) -> str | None:
    """The writer's exit status once it ended ("exit code N" / "signal N"), else None."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return "already reaped"
        if done:
            if os.WIFSIGNALED(status):
                return f"signal {os.WTERMSIG(status)}"
            return f"exit code {os.WEXITSTATUS(status)}"
        if not wait or time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


# -- the writer's side ------------------------------------------------------------------------

def _forget(queued: dict[int, Future[None]], ident: int, _: Future[None]) -> None:
    queued.pop(ident, None)


def _ignored(signum: int, frame: object) -> None:  # pragma: no cover - the child
    """SIGINT, SIGTERM and SIGHUP in the writer: the operator stops it."""

def _die_with(parent: int) -> None:  # pragma: no cover - the child
    """Be killed when the operator dies (SIGKILL, a crash): the calls it had not answered end
    with it, as they did on its threads, instead of landing after another replica took over."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the socket's end still ends the writer
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _serve(sock: socket.socket, pool: int, audit_target: str) -> int:  # pragma: no cover
    """The writer: run what arrives until the socket closes; its exit code."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a handler, not SIG_IGN: a
        signal.signal(sig, _ignored)  # program it runs (a credential plugin) gets the default
    kube = Kube.from_environment(retries=False, pool_size=pool)
    sink = open_sink(audit_target)
    local = threading.local()

    def observe(verb: str, resource: str, code: str, seconds: float) -> None:
        seen = getattr(local, "seen", None)
        if seen is not None:
            seen.append((verb, resource, code, seconds))

    kube.observer = observe

    def shrunk(alive: int) -> None:  # after a burst: its connections and memory back
        kube.drop_connections(keep=alive)
        memory.release()

    calls = CallPool(pool, thread_name_prefix="wingman-writer", on_shrink=shrunk)
    appends = CallPool(1, thread_name_prefix="wingman-writer-audit")
    sending = threading.Lock()

    def run(ident: int, op: str, args: tuple[Any, ...], kwargs: dict[str, Any],
            sent: float) -> None:
        waited = time.monotonic() - sent
        seen: list[Observation] = []
        local.seen = seen
        try:
            if op == APPEND:
                value: Any = sink.append_all(*args, **kwargs)
            elif op == ADOPT:
                value = create_or_adopt(kube, *args, **kwargs)
            elif op in KUBE_CALLS:
                value = getattr(kube, op)(*args, **kwargs)
            else:
                raise ValueError(f"the writer runs no call named {op!r}")
            answer = (ident, True, value, seen, waited)
        except BaseException as exc:  # noqa: BLE001 - the caller's to handle, as on a thread
            answer = (ident, False, exc, seen, waited)
        finally:
            local.seen = None
        try:
            frame = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
            if not answer[1]:  # an error the operator could not rebuild would cost it all calls
                pickle.loads(frame)  # noqa: S301 - made just above
        except Exception as exc:  # noqa: BLE001 - an answer that cannot be sent fails the call
            said = (f"the operator's writer process could not send back its answer to {op} "
                    f"({type(exc).__name__}: {exc})")
            failed: Exception = AuditUnavailable(said) if op == APPEND else ClusterError(said)
            frame = pickle.dumps((ident, False, failed, seen, waited),
                                 protocol=pickle.HIGHEST_PROTOCOL)
        with sending:
            try:
                sock.sendall(_HEADER.pack(len(frame)) + frame)
            except OSError:
                pass  # the operator is gone: nobody waits for the answer

    received = bytearray()
    queued: dict[int, Future[None]] = {}
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
            while len(received) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(received)
                if len(received) < _HEADER.size + size:
                    break
                frame = bytes(received[_HEADER.size:_HEADER.size + size])
                del received[:_HEADER.size + size]
                ident, op, args, kwargs, sent = pickle.loads(frame)  # noqa: S301 - the operator
                if op == CANCEL:
                    withdrawn = queued.pop(ident, None)
                    if withdrawn is not None:
                        withdrawn.cancel()  # only if it has not started
                    continue
                future = (appends if op == APPEND else calls).submit(
                    run, ident, op, args, kwargs, sent)
                queued[ident] = future  # until it is done (at once, if it is already)
                future.add_done_callback(functools.partial(_forget, queued, ident))
    finally:  # the calls running finish (and are answered, if anyone still listens)
        calls.shutdown(wait=True, cancel_futures=True)
        appends.shutdown(wait=True, cancel_futures=True)
        sink.close()
        kube.close()
    return 0


__all__ = ["ADOPT", "APPEND", "KUBE_CALLS", "Observation", "Unsendable", "Writer"]

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

What runs here is a fixed set of calls (``KUBE_CALLS`` of ``wingman.kube.Kube``: not its
lists, which stay on the operator's threads; ``create_or_adopt`` and the sink's
``append_all``), with their arguments and answers pickled
over the socket: both ends are this operator's code, started by it, and nothing else can reach
the socket (a socket pair, inherited by the writer alone). Each answer carries the API calls it
made (the operator's metrics observe them as if made in the operator's process) and how long
the call waited for a thread.

Lifecycle: started by ``Writer.start`` as a new Python process (not forked: a fork would
hold copies of every page of the operator's heap it touches, the Kubernetes client's models
among them, about 35 MiB), which imports only what its calls need (the HTTP client, the audit
sink; never the ``kubernetes`` package). It learns how to reach the API server from the
operator's own client (``wingman.kube.Endpoint``: URL, TLS, timeouts, no credential) in its
first frame, and the Authorization header from the operator whenever it changes (the operator
reads it every ``AUTH_REFRESH_SECONDS`` on a thread of its own, and sends an ``AUTH`` frame
before the next call: a refreshed token is refreshed where it was loaded). It answers that
first frame once its sink is open, so a writer that cannot run is known at start. A call whose
arguments it cannot rebuild is answered ``Unsendable`` (the operator runs it itself); the
writer goes on. It does nothing on SIGINT, SIGTERM and SIGHUP (a terminal's Ctrl-C reaches the whole
process group: the operator stops it) and ends when its socket closes (the operator
stopped), once the calls running are done (those still queued are dropped; their callers are
gone). When the operator dies (SIGKILL, a crash) the kernel kills the writer with it
(``PR_SET_PDEATHSIG``), so no call of a dead operator lands later, as none did on its threads.
If the writer ends otherwise, every call waiting for it fails (an API call as a
``ClusterError``, an append as ``AuditUnavailable``: whether it was written is unknown, and
the retry records it again, at least once as every append) and ``on_lost`` is told why (the
operator then stops with an error, and Kubernetes starts it again). A writer that is alive but
whose thread that reads the calls reads none any more (the process stopped, that thread
deadlocked) is lost the same way: the operator sends a numbered ``PING`` at most every
``HEARTBEAT_SECONDS``, that thread answers it at once, and one left unanswered for
``STUCK_SECONDS`` gets the writer killed (once the audit file's lock is taken, or after
``KILL_HOLD_SECONDS``: no append of its is cut short).

Imports ``wingman.kube``, ``wingman.audit``, ``wingman.errors``, ``wingman.logs``,
``wingman.operator.pool`` and ``wingman.operator.memory`` only, and none of them may import
the ``kubernetes`` package at import time (``wingman.kube`` imports it only in the functions
that load a kubeconfig).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import json
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from wingman.audit import appends_held, open_sink
from wingman.errors import AuditUnavailable, ClusterError, WingmanError
from wingman.kube import Kube, create_or_adopt
from wingman.logs import install_excepthook, setup_logging
from wingman.operator import memory
from wingman.operator.pool import CallPool

if TYPE_CHECKING:  # the writer process itself never imports asyncio
    import asyncio

log = logging.getLogger("wingman.operator.writer")

#: The Kube methods the writer runs (everything else stays on the operator's own threads).
#: Not ``list``: its answer is whatever a selector selects, of any size, and would cross the
#: socket whole and be unpickled on the operator's event loop in one piece, holding it
#: meanwhile; on the operator's threads it is decoded a page at a time, between which the loop
#: runs. (The sweeps' lists, which filter with a function, ran there already; the others read
#: one grant's token Secrets or one preview Job's pods.)
KUBE_CALLS = frozenset({"get", "get_or_none", "create", "patch", "delete"})
#: The other calls it runs.
APPEND = "append_all"
ADOPT = "create_or_adopt"
#: The frame that withdraws a call its caller no longer waits for (dropped unless running).
CANCEL = "cancel"
#: The frame that gives the writer the Authorization header its calls send from then on.
AUTH = "auth"
#: The frame the writer answers at once, from the thread that reads the calls (``PONG``, with
#: the ``PING``'s number).
PING = "ping"
#: The ident of the answer to ``PING`` (a call's ident is 1 or more).
PONG = -1
#: How often the heartbeat runs: a ``PING`` when none waits for its answer, else the time
#: counted towards ``STUCK_SECONDS``.
HEARTBEAT_SECONDS = 5.0
#: The writer is stuck (alive, but its thread that reads the calls reads none: the process
#: stopped, that thread deadlocked) once a ``PING`` has waited this long for its answer,
#: counting at most two beats for each beat's interval (a gap longer than that is the
#: operator's own loop held, or the pod paused, not the writer's doing): it is killed and
#: lost, as if it had ended, and the operator stops (Kubernetes starts it again) instead of
#: holding every call while its ``/healthz`` says it is well. A writer busy with calls still
#: answers within milliseconds: its calls run on threads of their own. (A call stuck on one of
#: those threads is not found by this: it holds that thread, as it would on the operator's.)
STUCK_SECONDS = 30.0
#: The seconds the operator waits for the audit file's lock before it kills the writer (so
#: that no append is cut short: ``wingman.audit.appends_held``); the kill goes ahead after.
KILL_HOLD_SECONDS = 5.0
#: The seconds ``start`` waits for the writer to say it runs (its imports, its audit sink).
READY_SECONDS = 30.0
#: How often the operator reads again the Authorization header its client would send (on a
#: thread of its own: a kubeconfig's exec plugin may run to refresh it); a token is refreshed
#: well before it expires (the kubelet at 80 % of a projected token's life, the Kubernetes
#: client five minutes before an exec plugin's), so a header this old is still valid.
AUTH_REFRESH_SECONDS = 5.0
#: The seconds ``close`` waits for the writer to finish its calls in flight and end (then it
#: is killed, after up to ``KILL_HOLD_SECONDS`` more for the audit's lock): well within a pod's
#: grace period (30 s by default), so that the operator still hands its Lease over itself.
CLOSE_SECONDS = 10.0
#: The seconds the operator waits for a writer it lost to be reaped, for its exit status (it
#: is killed after that, once the audit's lock is taken or ``KILL_HOLD_SECONDS`` passed; the
#: event loop waits meanwhile).
LOST_SECONDS = 0.2
#: What the writer process runs: its arguments are the path the operator imports from (JSON),
#: the operator's pid and the socket's file descriptor.
_MAIN = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
         "from wingman.operator.writer import main; sys.exit(main(sys.argv[2:]))")

_HEADER = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1
#: (verb, resource, code, seconds) of an API call the writer made
Observation = tuple[str, str, str, float]


class Unsendable(Exception):
    """A call whose arguments cannot be sent to the writer (a function among them; an object
    of a class the writer has not imported): the caller runs it itself."""


class _Pickler(pickle.Pickler):
    """Pickles a call's arguments as the writer can read them without importing anything it
    has not imported (importing the framework's modules, to rebuild one of its objects, would
    cost the writer the memory it exists to save, and a class it cannot import would fail
    the frame): an object of a class from a module the writer has (``known``) as it is, any
    other mapping as a dict and any other sequence or set as a list (the framework's views of
    an object's body), anything else ``Unsendable``. Plain dicts, lists, strings and numbers
    are not looked at (the pickle module does not offer them to ``reducer_override``)."""

    def __init__(self, file: io.BytesIO, known: frozenset[str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._known = known

    def reducer_override(self, obj: Any) -> Any:
        named = isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType)
        module = getattr(obj, "__module__", None) if named else type(obj).__module__
        if module in self._known:
            return NotImplemented  # pickled as always
        if isinstance(obj, Mapping):
            return dict, (dict(obj),)
        if isinstance(obj, Sequence | AbstractSet) and not isinstance(obj, str | bytes | bytearray):
            return list, (list(obj),)
        what = obj if named else type(obj)
        name = f"{getattr(what, '__module__', '?')}.{getattr(what, '__qualname__', what)}"
        raise Unsendable(f"{name} is not something the writer process has")


class Writer:
    """The operator's end: ``call`` sends a call and waits for its answer (on the event loop;
    one loop at a time), ``close`` ends the writer."""

    def __init__(self, sock: socket.socket, process: subprocess.Popen[bytes], *,
                 known: frozenset[str] = frozenset(),
                 authorization: Callable[[], str | None] = lambda: None,
                 authorization_now: str | None = None,
                 audit_target: str | None = None,
                 on_lost: Callable[[str], object] | None = None,
                 on_answer: Callable[[list[Observation], float], object] | None = None
                 ) -> None:
        self._sock = sock
        self._process = process
        self.pid = process.pid
        #: the modules the writer has imported (what it can rebuild from a frame)
        self._known = known
        #: the Authorization header the operator's own client would send (read again every
        #: AUTH_REFRESH_SECONDS on a thread of its own) and the one the writer was last given
        self._authorization = authorization
        self._auth_now = authorization_now
        self._authorized: str | None = None
        self._auth_stop = threading.Event()
        self._auth_thread = threading.Thread(target=self._refresh_auth, daemon=True,
                                             name="wingman-writer-auth")
        self._auth_thread.start()
        self._on_lost = on_lost
        #: the writer's audit target: its lock is taken before the writer is killed
        self._audit_target = audit_target
        #: told of each answer: the API calls the call made, and its wait for a thread
        self.on_answer = on_answer
        self._waiting: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._sent = 0
        self._out = bytearray()
        self._in = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False
        #: the number of the ``PING`` still unanswered (None: none is), the seconds it has
        #: waited as counted (``STUCK_SECONDS``), the heartbeat's timer and when it last ran
        self._ping: int | None = None
        self._pings = 0
        self._unanswered = 0.0
        self._heartbeat: asyncio.TimerHandle | None = None
        self._last_beat = 0.0
        #: why the writer is gone (None while it runs)
        self.lost: str | None = None

    def _refresh_auth(self) -> None:
        while not self._auth_stop.wait(AUTH_REFRESH_SECONDS):
            try:
                self._auth_now = self._authorization()
            except Exception as exc:  # noqa: BLE001 - the last header stays; said, never shown
                log.warning("the API credential could not be refreshed for the writer "
                            "process; the last one is used", extra={"error": type(exc).__name__})

    @classmethod
    def start(cls, kube: Kube, *, pool: int, audit_target: str, log_format: str = "json",
              log_level: str = "info", on_lost: Callable[[str], object] | None = None,
              on_answer: Callable[[list[Observation], float], object] | None = None) -> Writer:
        """Start the writer, calling the API server as ``kube`` does (its ``Endpoint``, with
        ``pool`` connections; its Authorization header, as it changes) and appending to
        ``audit_target``; once it said it runs. ``WingmanError`` when it cannot: ``kube``'s
        connection cannot be handed over (a proxy), the writer could not open its sink (the
        sink's error), ended before it answered, or said nothing within ``READY_SECONDS``;
        ``OSError`` when the process cannot be created."""
        endpoint = kube.endpoint(pool_size=pool)
        authorization_now = kube.authorization()  # a hook that fails: before anything starts
        ours, theirs = socket.socketpair()
        try:
            # -P: not the working directory first on the path (a json.py there would run
            # before the path below is set)
            process = subprocess.Popen(  # our own interpreter and code, as argv
                [sys.executable, "-P", "-c", _MAIN, json.dumps(sys.path), str(os.getpid()),
                 str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            setup = pickle.dumps((endpoint, pool, audit_target, log_format, log_level),
                                 protocol=pickle.HIGHEST_PROTOCOL)
            ours.settimeout(READY_SECONDS)
            ours.sendall(_HEADER.pack(len(setup)) + setup)
            ok, value = _ready(ours)
        except BaseException as exc:
            ours.close()
            _end(process)
            if isinstance(exc, WingmanError) or not isinstance(exc, Exception):
                raise
            raise ClusterError(f"the writer process did not start: {exc}") from None
        if not ok:
            ours.close()
            _end(process)
            raise value
        ours.setblocking(False)
        log.info("writer process started", extra={"pid": process.pid})
        return cls(ours, process, known=frozenset(value), authorization=kube.authorization,
                   authorization_now=authorization_now, audit_target=audit_target,
                   on_lost=on_lost, on_answer=on_answer)

    async def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``op`` (a ``KUBE_CALLS`` name, ``ADOPT`` or ``APPEND``) in the writer;
        ``Unsendable`` when its arguments cannot be sent (nothing was sent)."""
        import asyncio

        loop = asyncio.get_running_loop()
        if self.lost is not None:
            raise _gone(op, self.lost)
        self._attach(loop)
        buffer = io.BytesIO()
        try:
            _Pickler(buffer, self._known).dump((args, kwargs))
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise Unsendable(f"{op}: {exc}") from None
        except Unsendable as exc:
            raise Unsendable(f"{op}: {exc}") from None
        self._sent += 1
        ident = self._sent
        # the call and its arguments apart: a writer that cannot read the arguments answers
        # this call (Unsendable) instead of ending
        frame = pickle.dumps((ident, op, time.monotonic(), buffer.getvalue()),
                             protocol=pickle.HIGHEST_PROTOCOL)
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting[ident] = (op, future)  # before anything is sent: a loss fails it
        try:
            authorization = self._auth_now
            if op != APPEND and authorization != self._authorized:
                self._send(_control(AUTH, authorization))
                self._authorized = authorization
            self._send(frame)
            if self.lost is not None and not future.done():
                future.set_exception(_gone(op, self.lost))
            return await future
        finally:
            self._waiting.pop(ident, None)
            if future.cancelled() and self.lost is None:  # not started yet: never start it
                self._send(_control(CANCEL, None, ident))

    def _send(self, frame: bytes) -> None:
        self._out += _HEADER.pack(len(frame))
        self._out += frame
        self._flush()

    def watch(self) -> None:
        """Read the writer's answers on the running event loop from now on: its end is noticed
        at once (``on_lost``), also while no call waits."""
        import asyncio

        self._attach(asyncio.get_running_loop())

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop or self.lost is not None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
            if self._writing:
                self._loop.remove_writer(self._sock.fileno())
        self._writing = False
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._readable)
        self._ping, self._unanswered = None, 0.0
        self._last_beat = time.monotonic()
        self._heartbeat = loop.call_later(HEARTBEAT_SECONDS, self._beat)
        if self._out:  # what the last loop had not sent yet
            self._flush()

    def _beat(self) -> None:
        """The heartbeat (on the event loop, every ``HEARTBEAT_SECONDS``): a ``PING`` when none
        waits; a writer that left one unanswered for ``STUCK_SECONDS`` is lost."""
        if self.lost is not None or self._loop is None:
            return
        now = time.monotonic()
        if self._ping is not None:  # a gap past two beats was the operator's, not the writer's
            self._unanswered += min(now - self._last_beat, 2 * HEARTBEAT_SECONDS)
        self._last_beat = now
        if self._ping is not None and self._unanswered >= STUCK_SECONDS:
            self._readable()  # an answer already here is read first
            if self.lost is not None:
                return
            if self._ping is not None:
                self._lose(f"it answered no heartbeat for {self._unanswered:.0f} s: stuck")
                return
        if self._ping is None:
            self._pings += 1
            self._ping, self._unanswered = self._pings, 0.0
            self._send(_control(PING, self._pings))
        if self.lost is None:
            self._heartbeat = self._loop.call_later(HEARTBEAT_SECONDS, self._beat)

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
                ident, ok, value, seen, waited = pickle.loads(frame)  # noqa: S301 - our own child
            except Exception as exc:  # noqa: BLE001 - what follows it cannot be trusted either
                self._lose(f"an answer could not be read: {type(exc).__name__}: {exc}")
                return
            if ident == PONG:
                if value == self._ping:  # an older PING's answer answers only that one
                    self._ping = None
                continue
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
        # answer that could not be read, a stuck writer) is killed: nothing it still does is
        # waited for but an audit append under way (``_killed``)
        status = _reap(self._process, LOST_SECONDS)
        try:
            if status is None:
                self._killed(self._kill_now)
        finally:  # whatever the kill met, the writer is lost and its callers are told
            self._mark_lost(why if status is None else f"{why} ({status})")

    def _mark_lost(self, why: str) -> None:
        self.lost = why
        if self._heartbeat is not None:
            self._heartbeat.cancel()
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
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self._auth_stop.set()
        self._sock.close()
        self.lost = self.lost or "it was stopped"
        if _reap(self._process, CLOSE_SECONDS) is None:
            self._killed(lambda: _end(self._process))

    def _kill_now(self) -> None:
        self._process.kill()
        _reap(self._process, LOST_SECONDS)

    def _killed(self, kill: Callable[[], object]) -> None:
        """Run ``kill`` (the writer's SIGKILL and its reaping) while none of its audit appends
        is under way, so that the kill cuts none short (the audit file's lock, waited for
        ``KILL_HOLD_SECONDS`` at most); whatever happens to the lock, ``kill`` runs."""
        with contextlib.ExitStack() as held:
            if self._audit_target is not None:
                try:
                    taken = held.enter_context(appends_held(self._audit_target,
                                                            KILL_HOLD_SECONDS))
                except Exception as exc:  # noqa: BLE001 - the kill goes ahead regardless
                    taken, why = False, f"{type(exc).__name__}: {str(exc)[:200]}"
                else:
                    why = f"not free within {KILL_HOLD_SECONDS:.0f} s, or not to be opened"
                if not taken:
                    log.warning("the audit's lock could not be taken before the writer's kill: "
                                "an append of its under way may be cut short (the audit then "
                                "refuses appends until the file is repaired)",
                                extra={"error": why})
            kill()


def _control(op: str, value: Any, ident: int = 0) -> bytes:
    """A frame of the operator's own (``AUTH``, ``CANCEL``, ``PING``): its value pickled
    plainly."""
    return pickle.dumps((ident, op, 0.0, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)),
                        protocol=pickle.HIGHEST_PROTOCOL)


def _gone(op: str, why: str) -> Exception:
    said = f"the operator's writer process is gone ({why}): "
    if op == APPEND:
        return AuditUnavailable(said + "whether the records were written is unknown")
    return ClusterError(said + "whether the call reached the API server is unknown")


def _reap(process: subprocess.Popen[bytes], seconds: float) -> str | None:
    """The writer's exit status once it ended ("exit code N" / "signal N"), within
    ``seconds``; else None."""
    try:
        code = process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def _end(process: subprocess.Popen[bytes]) -> None:
    """Kill the writer (if it still runs) and reap it."""
    process.kill()
    try:
        process.wait(timeout=5.0)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
        log.error("the writer process did not end on SIGKILL", extra={"pid": process.pid})


def _ready(sock: socket.socket) -> tuple[bool, Any]:
    """The writer's first answer (blocking, within the socket's timeout): (True, the modules it
    has imported) once it runs, (False, the error) when it cannot."""
    answer = _frames(sock, bytearray())
    if answer is None:
        return False, ClusterError("the writer process ended before it ran; see its log lines "
                                   "above")
    _, ok, value, _, _ = answer
    return bool(ok), value


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


def _frames(sock: socket.socket, received: bytearray) -> Any:
    """The next frame on a blocking ``sock``, unpickled (None: the socket closed); what was
    read past it stays in ``received``."""
    while len(received) < _HEADER.size or \
            len(received) < _HEADER.size + _HEADER.unpack_from(received)[0]:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return None
        received += chunk
    (size,) = _HEADER.unpack_from(received)
    frame = bytes(received[_HEADER.size:_HEADER.size + size])
    del received[:_HEADER.size + size]
    return pickle.loads(frame)  # noqa: S301 - the operator, or the writer it started


def main(argv: Sequence[str]) -> int:  # pragma: no cover - the child
    """The writer process: ``argv`` is the operator's pid and the socket's descriptor."""
    try:
        return _main(int(argv[0]), int(argv[1]))
    except BaseException:  # reported, and the process ends
        log.exception("the writer process failed")
        return 1


def _main(parent: int, fd: int) -> int:  # pragma: no cover - the child
    _die_with(parent)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a terminal's Ctrl-C reaches
        signal.signal(sig, _ignored)  # the whole process group: the operator stops it
    memory.limit_arenas(memory.MALLOC_ARENAS)
    sock = socket.socket(fileno=fd)
    received = bytearray()
    setup = _frames(sock, received)
    if setup is None:
        return 1
    endpoint, pool, audit_target, log_format, log_level = setup
    setup_logging(log_format, log_level, component="operator")
    install_excepthook("operator")
    try:
        kube = Kube.from_endpoint(endpoint)
        sink = open_sink(audit_target)
    except WingmanError as exc:
        _answer_ready(sock, False, exc)
        return 2
    # what it can rebuild from a frame (its __main__ is not the operator's)
    _answer_ready(sock, True, sorted(name for name in sys.modules if name != "__main__"))
    try:
        return _serve(sock, received, kube, sink, pool)
    finally:
        sink.close()
        kube.close()


def _send_frame(sock: socket.socket, sending: threading.Lock,
                frame: bytes) -> None:  # pragma: no cover - the child
    with sending:
        try:
            sock.sendall(_HEADER.pack(len(frame)) + frame)
        except OSError:
            pass  # the operator is gone: nobody waits for the answer


def _answer(sock: socket.socket, sending: threading.Lock,
            answer: tuple[Any, ...]) -> None:  # pragma: no cover - the child
    _send_frame(sock, sending, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))


def _answer_ready(sock: socket.socket, ok: bool, value: Any) -> None:  # pragma: no cover
    _answer(sock, threading.Lock(), (0, ok, value, [], 0.0))  # no call runs yet


def _serve(sock: socket.socket, received: bytearray, kube: Kube, sink: Any,
           pool: int) -> int:  # pragma: no cover - the child
    """Run what arrives until the socket closes; the exit code."""
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
        _send_frame(sock, sending, frame)

    queued: dict[int, Future[None]] = {}
    try:
        while True:
            frame = _frames(sock, received)
            if frame is None:
                break
            ident, op, sent, payload = frame
            try:
                value = pickle.loads(payload)  # noqa: S301 - the operator that started it
            except Exception as exc:  # noqa: BLE001 - this call's, not the writer's end
                _answer(sock, sending, (ident, False, Unsendable(
                    f"{op}: the writer process cannot read its arguments "
                    f"({type(exc).__name__}: {exc})"), [], 0.0))
                continue
            if op == AUTH:  # the calls that start from now on send it
                kube.authorize(value)
                continue
            if op == PING:  # alive and reading: answered before any call queued behind it
                _answer(sock, sending, (PONG, True, value, [], 0.0))
                continue
            if op == CANCEL:
                withdrawn = queued.pop(ident, None)
                if withdrawn is not None:
                    withdrawn.cancel()  # only if it has not started
                continue
            args, kwargs = value
            future = (appends if op == APPEND else calls).submit(
                run, ident, op, args, kwargs, sent)
            queued[ident] = future  # until it is done (at once, if it is already)
            future.add_done_callback(functools.partial(_forget, queued, ident))
    finally:  # the calls running finish (and are answered, if anyone still listens)
        calls.shutdown(wait=True, cancel_futures=True)
        appends.shutdown(wait=True, cancel_futures=True)
    return 0


__all__ = ["ADOPT", "APPEND", "AUTH", "KUBE_CALLS", "Observation", "Unsendable", "Writer",
           "main"]

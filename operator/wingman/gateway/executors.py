"""Executors: how the gateway runs one approved argv, and what it keeps of the output.

This module owns the last step of an execution: picking the executor for a command
(``scope.executor_for``), running it without a shell under a deadline, capturing bounded output
and redacting it. It knows nothing about tokens or grants; the gateway calls :func:`preflight`
before it burns a token (so a command that cannot run is refused while the token is still
unused) and :func:`execute` afterwards.

- ``kubectl`` runs the ``kubectl`` binary found on PATH with ``argv[1:]``. Its environment holds
  only ``KUBECONFIG`` (a kubeconfig generated 0600 in a private temporary directory, next to
  the executor account's short-lived token written there 0600, ``wingman.gateway.identity``),
  ``PATH`` and ``HOME``: the API server's RBAC for the executor account, which holds the
  target namespaces' rules and nothing in the release namespace, is the final check of what
  the command may touch. The process starts in another private directory, empty (also its
  ``HOME``), so a file the command names by a relative path (``--from-file=token``) is never
  the token or the kubeconfig (a second line: the command rules refuse such flags,
  ``LocalFile``). It runs in its own process group, killed when it exits (nothing it started
  outlives it), at the deadline, or as soon as the gateway is asked to stop (SIGTERM:
  :data:`TERMINATION`), so a command never runs on unrecorded while the kubelet waits to kill
  the pod. The group is killed by its number (the command's process ID) before the command
  is reaped: exited, it is a zombie until then, and keeps that number from any new group, so
  the kill never reaches another group that took over the number. A signal whose Python
  handler may raise (a SIGINT's ``KeyboardInterrupt``) is held from the command's start
  until that kill and reaping (:class:`_HeldSignals`), and handled inside the wait, which
  kills the group on every way out, or, when it comes once the wait is over, right after the
  group is killed and the command reaped.
- ``docker`` (only when ``WINGMAN_DOCKER_ENABLED``) supports ``docker restart|start|stop
  <container>`` through the Docker SDK on a local unix socket, on the container of exactly
  that name or ID (``wingman.model.preview.container_named``: never one whose ID merely
  starts with a short name), acted on by its full ID. The engine carries an operation
  through once asked, so it cannot be killed: it runs in a thread of its own, and a SIGTERM
  ends the gateway's wait at once, the outcome recorded as unknown (``ExecResult.message``);
  the call's own timeout then bounds nothing the kubelet's grace period waits for.
- Anything else is refused (``ExecutorNotAllowed``).

Output (stdout and stderr interleaved) is read in chunks; at most ``max_output_bytes`` are kept
and the rest is drained and dropped (``truncated``). Kept output is redacted (:func:`redact`,
given the argv that printed it) before anyone sees it; ``output_sha256`` is the SHA-256 of that
redacted output.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import yaml

from wingman import scope
from wingman.errors import ExecutionFailed, ScopeViolation
from wingman.gateway.redaction import bound_output, output_sha256
from wingman.model.preview import SHORT_ID_CHARS, container_named
from wingman.settings import GatewaySettings

__all__ = [
    "DOCKER_VERBS",
    "TERMINATION",
    "TIMEOUT_EXIT_CODE",
    "Credentials",
    "DockerExecutor",
    "ExecResult",
    "Executor",
    "KubectlExecutor",
    "Termination",
    "execute",
    "executor_for",
    "inspect_container",
    "preflight",
]

DOCKER_VERBS = frozenset({"restart", "start", "stop"})
"""The only Docker operations the gateway performs (what an allowlist realistically holds)."""

TIMEOUT_EXIT_CODE = 124
"""Exit code reported when a Docker call timed out (a killed kubectl reports -9, its signal)."""

_CHUNK = 65536
#: How often, at most, the exit of a command that closed its output is looked for where there
#: is no pidfd (first after _EXIT_POLL_FIRST, then ever less often; a SIGTERM ends the wait at
#: once)
_EXIT_POLL_FIRST = 0.001
_EXIT_POLL = 0.05
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_CONTAINER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")




# ---------------------------------------------------------------------------------------------
# Results


#: Far more than any ServiceAccount token (a JWT of a few KiB); as ``wingman.kube.TokenFile``
#: (not imported: this module stays free of the Kubernetes client).
MAX_TOKEN_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What one execution produced. ``output`` is already bounded and redacted."""

    exit_code: int
    output: str
    truncated: bool
    output_sha256: str
    started: dt.datetime
    finished: dt.datetime
    timed_out: bool = False
    interrupted: bool = False
    """The gateway was asked to stop (SIGTERM) while the command ran, and killed it (or, for
    an operation it cannot stop, a Docker engine's, stopped waiting for it: ``message``)."""
    message: str = ""
    """What the record of the result must say beyond the exit code and the output (empty: no
    more): an interrupted Docker operation's outcome is unknown."""

    @property
    def duration_seconds(self) -> float:
        return round((self.finished - self.started).total_seconds(), 3)


@dataclass(frozen=True, slots=True)
class Credentials:
    """How executors reach the API server: as the executor account (``token``, a short-lived
    ServiceAccount token; empty when the command needs none, as Docker's) with the cluster's CA.

    ``secrets`` are strings that must never appear in output (the capability token, the
    gateway's and the executor's ServiceAccount tokens); they are redacted wherever they
    occur. Neither is shown by ``repr``. ``secret_files`` hold more of them, read when the
    command has ended: the gateway's ServiceAccount token, which the kubelet may replace
    while the command runs.
    """

    server: str
    ca_file: Path
    token: str = field(default="", repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    secret_files: tuple[Path, ...] = ()

    def all_secrets(self) -> tuple[str, ...]:
        """``secrets`` and what ``secret_files`` hold now (a file that cannot be read, or that
        holds more than any token, ``MAX_TOKEN_BYTES``, adds nothing: it is read no
        further)."""
        found: list[str] = []
        for path in self.secret_files:
            try:
                with path.open("rb") as f:
                    raw = f.read(MAX_TOKEN_BYTES + 1)
                value = raw.decode("utf-8").strip()
            except (OSError, UnicodeDecodeError):
                continue
            if len(raw) > MAX_TOKEN_BYTES:
                continue
            if value and value not in self.secrets:
                found.append(value)
        return self.secrets + tuple(found)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Termination:
    """SIGTERM made a request the gateway acts on, not a death it cannot record.

    The kubelet sends SIGTERM when the pod must stop: its grant was deleted (a cancel, which
    deletes the Job and its pod), its Job's deadline passed, its node is drained; tini, the
    container's first process (the Job's command, ``manifests.INIT``), forwards it to the
    gateway. Without a handler the SIGTERM would end the gateway outright, and neither the
    command's end nor its output would be recorded. Once
    :meth:`install` ed, a SIGTERM sets :attr:`requested` and wakes :func:`_collect` through a
    pipe (:meth:`fileno`): the running command's process group is killed at once and its
    result recorded as interrupted; the gateway checks :attr:`requested` before it spends the
    token and before it starts the command, and refuses then.

    The pipe is also the process's signal wake-up descriptor (``signal.set_wakeup_fd``): a
    signal the kernel hands to another thread than the main one (any thread of the process
    may receive it) runs the handler only once the main thread runs Python again, which a
    main thread blocked in ``select`` would not do before the command's deadline. The signal's
    number written to the pipe wakes it at once; a waiter reads the pipe with :meth:`woken`.
    """

    def __init__(self) -> None:
        self.requested = False
        self._pipe: tuple[int, int] | None = None

    def woken(self) -> bool:
        """Read what woke the pipe (a SIGTERM's number, a :meth:`request`, another signal's
        number) and say whether the gateway was asked to stop."""
        while self._pipe is not None:
            try:
                got = os.read(self._pipe[0], 64)
            except BlockingIOError:
                break
            if not got:
                break
            if 0 in got or int(signal.SIGTERM) in got:
                self.requested = True
        return self.requested

    def fileno(self) -> int | None:
        """The pipe's read end: readable on a SIGTERM, a :meth:`request` or any other signal
        Python handles (:meth:`woken` tells them apart); None: not installed."""
        return self._pipe[0] if self._pipe is not None else None

    def _on_signal(self, signum: int, frame: object) -> None:
        self.request()

    def request(self) -> None:
        """As a SIGTERM does: the gateway is asked to stop."""
        self.requested = True
        if self._pipe is not None:
            try:
                os.write(self._pipe[1], b"\0")
            except OSError:  # full: one byte is enough to wake the reader
                pass

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds``, or less when a SIGTERM comes meanwhile (at once when one came
        before); whether the gateway was asked to stop. Not installed: a plain sleep."""
        end = time.monotonic() + seconds
        while not self.requested:
            left = end - time.monotonic()
            if left <= 0:
                break
            if self._pipe is None:
                time.sleep(left)
                break
            with selectors.DefaultSelector() as selector:
                selector.register(self._pipe[0], selectors.EVENT_READ)
                if selector.select(left):
                    self.woken()
        return self.requested

    def install(self) -> Callable[[], None]:
        """Handle SIGTERM from now on (the main thread only: elsewhere Python cannot, and this
        does nothing); returns what restores the previous handler and wake-up descriptor."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        if self._pipe is None:
            read, write = os.pipe()
            os.set_blocking(read, False)
            os.set_blocking(write, False)
            self._pipe = (read, write)
        self._drain()
        previous_wakeup = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        try:
            previous = signal.signal(signal.SIGTERM, self._on_signal)
        except BaseException:
            signal.set_wakeup_fd(previous_wakeup)
            raise

        def restore() -> None:
            signal.signal(signal.SIGTERM, previous)
            signal.set_wakeup_fd(previous_wakeup)
            self._drain()

        return restore

    def _drain(self) -> None:
        """Forget a SIGTERM received before: a new run starts unasked (tests run many)."""
        self.requested = False
        while self._pipe is not None:
            try:
                if not os.read(self._pipe[0], 64):
                    break
            except BlockingIOError:
                break


TERMINATION = Termination()
"""The gateway process's one :class:`Termination` (``run_gateway`` installs it)."""


# ---------------------------------------------------------------------------------------------
# Executors


class Executor(Protocol):
    """One way of running commands; ``preflight`` refuses what ``run`` would not run."""

    name: str

    def preflight(self, argv: Sequence[str], *, settings: GatewaySettings) -> None:
        """Raise ExecutionFailed when this command cannot or must not run here."""
        ...

    def run(self, argv: Sequence[str], *, settings: GatewaySettings,
            credentials: Credentials) -> ExecResult:
        """Run the command; a non-zero exit is a result, not an exception."""
        ...


class KubectlExecutor:
    """``kubectl`` as a child process, authenticated as the executor ServiceAccount."""

    name = "kubernetes"

    def _binary(self) -> str:
        found = shutil.which("kubectl")
        if found is None:
            raise ExecutionFailed(
                "the kubectl binary is not on PATH in the gateway image; the gateway cannot run "
                "kubectl commands until the image provides it",
                reason="KubectlNotFound",
            )
        return found

    def preflight(self, argv: Sequence[str], *, settings: GatewaySettings) -> None:
        if not argv or argv[0] != "kubectl":
            raise ExecutionFailed("the kubectl executor runs only kubectl commands",
                                  reason="ExecutorNotAllowed")
        self._binary()

    def run(self, argv: Sequence[str], *, settings: GatewaySettings,
            credentials: Credentials) -> ExecResult:
        self.preflight(argv, settings=settings)
        binary = self._binary()
        if not credentials.token:
            raise ExecutionFailed(
                "the gateway holds no token of the executor ServiceAccount "
                f"{settings.executor_service_account}, so kubectl cannot run as it",
                reason="ExecutorTokenUnavailable")
        # two private directories: the credentials, and an empty one kubectl starts in (its
        # HOME too). A relative file name in the command (--from-file=token, -f kubeconfig)
        # then never reaches the token: only a path naming the other, random, directory would
        workdir = Path(tempfile.mkdtemp(prefix="wingman-exec-"))
        credentials_dir = Path(tempfile.mkdtemp(prefix="wingman-creds-"))
        try:
            kubeconfig = write_kubeconfig(credentials_dir, credentials)
            env = {
                "KUBECONFIG": str(kubeconfig),
                "PATH": f"{Path(binary).parent}:{_SAFE_PATH}",
                "HOME": str(workdir),
            }
            if TERMINATION.requested:  # asked to stop since the gateway's last look: no start
                raise ExecutionFailed(
                    "the gateway's pod was asked to stop (SIGTERM) before the command started; "
                    "it was not started; if the grant was not cancelled, submit a new request",
                    reason="GatewayTerminating")
            started = _now()
            # from the start of the command until its group is killed and it is reaped, a
            # signal whose handler may raise (a SIGINT's KeyboardInterrupt) is held and handled
            # where it can end nothing but the wait: never between the start and the wait
            # that kills the group on every way out, nor in that kill
            with _HeldSignals() as held:
                try:
                    proc = subprocess.Popen(  # no shell: argv goes to execve as it is
                        [binary, *argv[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, env=env, cwd=workdir, close_fds=True,
                        start_new_session=True,
                    )
                except OSError as exc:
                    raise ExecutionFailed(f"cannot start kubectl ({binary}): {exc.strerror}",
                                          reason="ExecutionFailed") from None
                raw, truncated, timed_out, interrupted = _collect(
                    proc, limit=settings.max_output_bytes,
                    timeout=settings.exec_timeout_seconds, held=held)
            finished = _now()
        finally:
            shutil.rmtree(credentials_dir, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
        output, truncated, digest = bound_output(
            raw, limit=settings.max_output_bytes, truncated=truncated,
            secrets=credentials.all_secrets(), command=argv)
        note = ("\n[wingman: killed: the gateway was asked to stop (SIGTERM)]" if interrupted
                else f"\n[wingman: killed after {settings.exec_timeout_seconds}s]" if timed_out
                else "")
        if note and len(output.encode("utf-8")) + len(note) <= settings.max_output_bytes:
            output += note
            digest = output_sha256(output)
        code = proc.returncode if proc.returncode is not None else -int(signal.SIGKILL)
        return ExecResult(code, output, truncated, digest, started, finished, timed_out,
                          interrupted)


def write_kubeconfig(directory: Path, credentials: Credentials) -> Path:
    """A kubeconfig (mode 0600) for the executor account; returns its path.

    The token goes into a file of its own beside it (mode 0600, ``tokenFile``): never into
    argv or the environment, where ``ps`` and ``/proc`` would show it.
    """
    token_file = directory / "token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(credentials.token)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gateway", "cluster": {
            "server": credentials.server, "certificate-authority": str(credentials.ca_file)}}],
        "users": [{"name": "executor", "user": {"tokenFile": str(token_file)}}],
        "contexts": [{"name": "executor", "context": {"cluster": "gateway",
                                                      "user": "executor"}}],
        "current-context": "executor",
        "preferences": {},
    }
    path = directory / "kubeconfig"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(yaml.safe_dump(config))
    return path


def _collect(proc: subprocess.Popen[bytes], *, limit: int, timeout: float,
             held: _HeldSignals | None = None) -> tuple[bytes, bool, bool, bool]:
    """Read the child's output until EOF and exit, the deadline or a SIGTERM to the gateway
    (:data:`TERMINATION`): (kept, truncated, timed_out, interrupted).

    Keeps at most ``limit`` bytes and keeps draining the pipe after that, so the child never
    blocks on a full pipe. A child that closed its output and runs on is waited for the same
    way (its exit seen through a pidfd; a SIGTERM still ends the wait at once), and one that
    exited is never taken for interrupted. At the deadline, or on a SIGTERM, the whole process
    group is killed and what its output still held is read; so is what the command left in
    its group when it exited, and what runs in it when the wait ends otherwise (a SIGINT's
    ``KeyboardInterrupt``: the signals ``held`` are handled here, inside the wait).

    The group is killed by its number, the child's process ID, while the child is not reaped
    yet: its exit is looked for without reaping it (:func:`_exited`), and an exited child
    stays a zombie that keeps its process ID, and so its group's number, from being given to
    any new process or group. Only once the group is killed is the child reaped (its exit
    status as it ended: a signal to a zombie changes nothing), so the kill never reaches a
    group that merely took over the number of one that had emptied.
    """
    exited: int | None = None  # a pidfd of the child once its output ended
    ended = False
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        out = _Output(limit)
        timed_out = interrupted = False
        fd = proc.stdout.fileno()
        stop = TERMINATION.fileno()
        wake = held.fileno() if held is not None else None
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            if stop is not None:
                selector.register(stop, selectors.EVENT_READ)
            if wake is not None:
                selector.register(wake, selectors.EVENT_READ)
            reading, pause = True, _EXIT_POLL_FIRST
            woken = True  # (a signal held since before the wait is handled first)
            while True:
                if woken and held is not None:
                    held.handle()  # a handler that raises ends the wait here: the group killed
                if not reading and _exited(proc):
                    break  # exited: never taken for interrupted by a SIGTERM after it
                if TERMINATION.requested:
                    # a command that exited meanwhile ended as it did, not interrupted
                    interrupted = not _exited(proc)
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                if reading or exited is not None:
                    ready = selector.select(remaining)
                else:  # no pidfd: the exit is looked for, ever less often
                    ready = selector.select(min(remaining, pause))
                    pause = min(pause * 2, _EXIT_POLL)
                fds = {key.fd for key, _ in ready}
                woken = wake is not None and wake in fds
                if stop is not None and stop in fds and TERMINATION.woken():
                    continue  # the exit, if it came meanwhile, wins
                if not reading or fd not in fds:
                    continue  # (a held signal is handled at the top of the loop)
                chunk = os.read(fd, _CHUNK)
                if chunk:
                    out.add(chunk)
                    continue
                # the output ended: the exit is what is waited for now
                selector.unregister(fd)
                reading = False
                exited = _pidfd(proc.pid)
                if exited is not None:
                    selector.register(exited, selectors.EVENT_READ)
        ended = True
    finally:
        try:
            # the child is not reaped yet (running, or a zombie): the number is its group's
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
        finally:
            try:
                proc.wait()  # only now: the number may be given to another group after this
            finally:
                if exited is not None:
                    os.close(exited)
                if ended:  # what its output still held (written before a kill, or unread)
                    _read_rest(fd, out)
                if proc.stdout is not None:
                    proc.stdout.close()
    return bytes(out.kept), out.truncated, timed_out, interrupted


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the child has exited, without reaping it (``WNOWAIT``): an exited child stays a
    zombie until :func:`_collect` has killed its group, so that group's number stays its own."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid,
                         os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped by someone else (SIGCHLD ignored): nothing holds it
        return True


class _HeldSignals:
    """The Python handlers of signals held while a command's process group may have no kill
    ahead of it: from before the command starts until its group is killed and it is reaped.

    A handler may raise (Python's own SIGINT handler raises ``KeyboardInterrupt``; any other
    handler set in the process may raise too), and an exception raised between the start of
    the command and the ``try`` of :func:`_collect` (or inside ``subprocess.Popen``, once the
    child exists, or in the kill itself) would leave the group running on, unseen, after the
    gateway went. Held, a signal is noted (and wakes the wait through a pipe, :meth:`fileno`)
    and its handler runs where :func:`_collect` calls :meth:`handle` (inside its ``try``: an
    exception there ends the wait, the group killed), or, for one noted while the group was
    being killed and reaped, when the hold ends, after it. The SIGTERM handler of
    :data:`TERMINATION` raises nothing and is left alone. Only the main thread runs Python
    signal handlers: elsewhere (and for signals with no Python handler) nothing is held, as
    nothing is raised there.
    """

    def __init__(self) -> None:
        self._previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
        self._pending: list[int] = []
        self._wake: tuple[int, int] | None = None

    def fileno(self) -> int | None:
        """The read end of the pipe a held signal wakes; None: nothing is held."""
        return self._wake[0] if self._wake is not None else None

    def _note(self, signum: int, frame: object) -> None:
        if signum not in self._pending:
            self._pending.append(signum)
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):  # full: one byte is enough
                os.write(wake[1], b"\0")

    def handle(self) -> None:
        """Run the handlers of the signals noted so far (what they raise is raised here), and
        empty the pipe they woke."""
        if self._wake is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(self._wake[0], 64):
                    pass
        while self._pending:
            signum = self._pending.pop(0)
            self._previous[signum](signum, None)

    def __enter__(self) -> _HeldSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        self._wake = (read, write)
        try:
            for signum in sorted(signal.valid_signals()):
                handler = signal.getsignal(signum)
                if callable(handler) and handler != TERMINATION._on_signal:
                    # (a signal pending before this runs its own handler now, in signal.signal:
                    # nothing was started yet)
                    self._previous[signum] = handler  # (known before the swap: put back)
                    signal.signal(signum, self._note)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._restore()
        finally:
            self.handle()  # what came while the group was killed and reaped, now it is

    def _restore(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            os.close(wake[0])
            os.close(wake[1])
        raised: BaseException | None = None
        for signum, handler in self._previous.items():
            # signal.signal first runs the handlers of signals pending: one put back just before
            # may raise, and then this one is not put back yet: it still is, before that is
            # raised (until it is, a held signal runs _note alone)
            while signal.getsignal(signum) == self._note:
                try:
                    signal.signal(signum, handler)
                except (OSError, ValueError):
                    break
                except BaseException as exc:  # noqa: BLE001 - raised once all are put back
                    raised = raised or exc
        if raised is not None:
            raise raised


class _Output:
    """At most ``limit`` bytes of a command's output, and whether more came."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]
        if len(chunk) > max(room, 0):
            self.truncated = True


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3 on), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _read_rest(fd: int, out: _Output) -> None:
    """What a killed command's output still holds, without waiting for more (a process
    outside its group may hold the pipe open)."""
    os.set_blocking(fd, False)
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, _CHUNK):
            out.add(chunk)


class DockerExecutor:
    """``docker restart|start|stop <container>`` through the Docker SDK on a local socket."""

    name = "docker"

    def preflight(self, argv: Sequence[str], *, settings: GatewaySettings) -> None:
        if not settings.docker_enabled:
            raise ExecutionFailed(
                "the Docker executor is disabled in this environment (gateway.docker.enabled "
                "is false); ask an administrator to enable it or use a kubectl command",
                reason="DockerDisabled",
            )
        if len(argv) != 3 or argv[0] != "docker" or argv[1] not in DOCKER_VERBS:
            raise ExecutionFailed(
                "the Docker executor runs only 'docker restart|start|stop <container>'",
                reason="ExecutorNotAllowed",
            )
        if _CONTAINER_RE.fullmatch(argv[2]) is None:
            raise ExecutionFailed(
                "the container must be a Docker container name or id (letters, digits, "
                "'_', '.', '-')",
                reason="ExecutorNotAllowed",
            )

    def run(self, argv: Sequence[str], *, settings: GatewaySettings,
            credentials: Credentials) -> ExecResult:
        self.preflight(argv, settings=settings)
        import docker
        import requests

        verb, container = argv[1], argv[2]
        stop_seconds = min(10, settings.exec_timeout_seconds // 2)
        not_asked = ExecutionFailed(
            "the gateway's pod was asked to stop (SIGTERM) before the command started; the "
            f"engine was not asked to {verb} the container; if the grant was not cancelled, "
            "submit a new request", reason="GatewayTerminating")
        if TERMINATION.requested:  # asked to stop since the gateway's last look: no action
            raise not_asked
        started = _now()
        call = _DockerCall()

        def act() -> tuple[int, str, bool]:
            try:
                client: Any = docker.DockerClient(
                    base_url=settings.docker_host,
                    timeout=max(1, settings.exec_timeout_seconds - stop_seconds))
            except docker.errors.DockerException as exc:
                raise ExecutionFailed(
                    f"cannot reach the Docker engine at {settings.docker_host}: "
                    f"{type(exc).__name__}; check gateway.docker.socketPath",
                    reason="DockerUnavailable",
                ) from None
            try:
                # the container the command names, by its exact name or ID, then acted on by
                # its full ID: the engine itself would also take a short prefix of any
                # container's ID
                state = client.api.inspect_container(container)
                if not container_named(state, container):
                    raise docker.errors.NotFound(
                        f"No such container: {container} (no container has that name; the "
                        "engine would have taken it as the start of the ID of container "
                        f"{str(state.get('Name') or '').lstrip('/')!r}, but the gateway acts "
                        "only on a container named exactly so, or by its ID or at least its "
                        f"first {SHORT_ID_CHARS} characters)")
                target = str(state["Id"])
                if not call.ask():  # asked to stop meanwhile: the engine is not asked to act
                    raise not_asked
                if verb == "restart":
                    client.api.restart(target, timeout=stop_seconds)
                elif verb == "stop":
                    client.api.stop(target, timeout=stop_seconds)
                else:
                    client.api.start(target)
                return 0, f"{container}\n", False
            except docker.errors.APIError as exc:
                return 1, f"Error response from daemon: {exc.explanation or exc}\n", False
            except requests.exceptions.Timeout:
                return (TIMEOUT_EXIT_CODE, "[wingman: the Docker engine did not answer within "
                        f"the deadline ({verb})]\n", True)
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise ExecutionFailed(
                    f"the Docker engine at {settings.docker_host} failed: {type(exc).__name__}",
                    reason="DockerUnavailable",
                ) from None
            finally:
                client.close()

        outcome = call.wait(act, not_asked)
        finished = _now()
        message = ""
        if outcome is None:  # SIGTERM while the engine was acting: stopped waiting for it
            code, timed_out = -int(signal.SIGTERM), False
            message = (f"the gateway was asked to stop (SIGTERM) while the Docker engine "
                       f"carried out '{verb}' on the container, and stopped waiting for it: the "
                       "engine may still have completed the operation, or may complete it "
                       "later; check the container's state")
            text = f"[wingman: {message}]\n"
        else:
            code, text, timed_out = outcome
        output, truncated, digest = bound_output(
            text.encode("utf-8"), limit=settings.max_output_bytes, truncated=False,
            secrets=credentials.all_secrets(), command=argv)
        return ExecResult(code, output, truncated, digest, started, finished, timed_out,
                          interrupted=outcome is None, message=message)


class _DockerCall:
    """A Docker operation the gateway can stop waiting for.

    The Docker SDK's calls block in a socket read that a SIGTERM does not interrupt, with a
    timeout of their own (up to the command's), and the engine carries an operation through
    once asked, whoever waits for it. So the operation runs in a thread of its own, and the
    gateway waits for it or for a SIGTERM (:data:`TERMINATION`), whichever comes first: on a
    SIGTERM it stops waiting at once, well inside the kubelet's grace period, and records the
    outcome as unknown (the engine may still complete it). :meth:`ask` is the line between
    an operation the engine was never asked for (nothing happened: a refusal) and one it may
    have carried out: once the gateway has stopped waiting, no operation is asked for.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asked = False
        self._abandoned = False

    def ask(self) -> bool:
        """In the operation's thread, right before the engine is asked to act: False when the
        gateway was asked to stop meanwhile (then the engine must not be asked)."""
        with self._lock:
            if self._abandoned or TERMINATION.requested:
                return False
            self._asked = True
            return True

    def wait(self, act: Callable[[], tuple[int, str, bool]], not_asked: ExecutionFailed
             ) -> tuple[int, str, bool] | None:
        """``act()``'s result (its exception raised here), or None when a SIGTERM came while
        the engine was asked to act (``not_asked`` raised when it came before: the engine was
        not asked)."""
        done = threading.Event()
        box: list[tuple[int, str, bool] | BaseException] = []
        wake_r, wake_w = os.pipe()

        def work() -> None:
            try:
                box.append(act())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box.append(exc)
            finally:
                with contextlib.suppress(OSError):  # (the reader gone: no one waits)
                    os.write(wake_w, b"\0")
                done.set()

        worker = threading.Thread(target=work, name="wingman-docker", daemon=True)
        abandoned = asked = False
        try:
            worker.start()
            stop = TERMINATION.fileno()
            with selectors.DefaultSelector() as selector:
                selector.register(wake_r, selectors.EVENT_READ)
                if stop is not None:
                    selector.register(stop, selectors.EVENT_READ)
                while not done.is_set() and not TERMINATION.requested:
                    if any(key.fd == stop for key, _ in selector.select()):
                        TERMINATION.woken()
        finally:
            if not done.is_set():
                # no longer waiting (a SIGTERM, or an error raised here, as a SIGINT's
                # KeyboardInterrupt): from now on the engine is never asked to act
                with self._lock:
                    self._abandoned = abandoned = True
                    asked = self._asked
            if done.is_set():
                os.close(wake_w)
            # else the worker may still write to it: it stays open until the process ends
            os.close(wake_r)
        if abandoned:
            if asked:
                return None
            raise not_asked
        (result,) = box
        if isinstance(result, BaseException):
            raise result
        return result


def inspect_container(name: str, *, settings: GatewaySettings) -> dict[str, Any] | None:
    """``docker inspect`` of one container (None: no such container); ExecutionFailed when the
    Docker executor is disabled or the engine cannot answer."""
    if not settings.docker_enabled:
        raise ExecutionFailed("the Docker executor is disabled in this environment, so the "
                              "container cannot be read", reason="DockerDisabled")
    if _CONTAINER_RE.fullmatch(name) is None:
        raise ExecutionFailed("not a Docker container name", reason="ExecutorNotAllowed")
    import docker
    import requests

    try:
        client: Any = docker.DockerClient(base_url=settings.docker_host,
                                          timeout=min(10, settings.exec_timeout_seconds))
    except docker.errors.DockerException as exc:
        raise ExecutionFailed(f"cannot reach the Docker engine at {settings.docker_host}: "
                              f"{type(exc).__name__}", reason="DockerUnavailable") from None
    try:
        state: dict[str, Any] = client.api.inspect_container(name)
        return state if container_named(state, name) else None
    except docker.errors.NotFound:
        return None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise ExecutionFailed(f"the Docker engine at {settings.docker_host} failed: "
                              f"{type(exc).__name__}", reason="DockerUnavailable") from None
    finally:
        client.close()


_EXECUTORS: dict[str, Executor] = {"kubernetes": KubectlExecutor(), "docker": DockerExecutor()}


def executor_for(argv: Sequence[str]) -> Executor:
    """The executor for ``argv`` (by ``scope.executor_for``), or ExecutionFailed."""
    try:
        kind = scope.executor_for(argv)
    except ScopeViolation as exc:
        raise ExecutionFailed(exc.message, reason="ExecutorNotAllowed") from None
    executor = _EXECUTORS.get(kind)
    if executor is None:
        raise ExecutionFailed(f"no executor for {kind!r}", reason="ExecutorNotAllowed")
    return executor


def preflight(argv: Sequence[str], *, settings: GatewaySettings) -> Executor:
    """The executor that will run ``argv``, after checking it can; ExecutionFailed otherwise."""
    executor = executor_for(argv)
    executor.preflight(argv, settings=settings)
    return executor


def execute(argv: Sequence[str], *, settings: GatewaySettings,
            credentials: Credentials) -> ExecResult:
    """Run ``argv`` with the executor its program selects; ExecutionFailed if it cannot run."""
    return executor_for(argv).run(argv, settings=settings, credentials=credentials)

"""The file sink: a JSON Lines file shared safely by several processes on one host."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import stat
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from wingman.audit.records import (
    EXECUTING_FIELD,
    GENESIS_HASH,
    MAX_RECORD_BYTES,
    AuditRecord,
    NewRecord,
    _Clock,
    _Malformed,
    _parse_stored,
    _utcnow,
    chain,
    executions_among,
    merge,
    one,
    records_of,
    require_uids,
    screen,
)
from wingman.audit.verification import _Entry
from wingman.errors import AuditTampered, AuditUnavailable, ConfigError, WingmanError


@contextlib.contextmanager
def held_lock(path: Path, seconds: float) -> Iterator[bool]:
    """The audit file's append lock (what ``FileSink.append_all`` takes) held, waiting at most
    ``seconds`` for it; yields whether it was taken (False too when the file cannot be opened:
    nothing can be appending to a file that does not open). The file is opened and the lock
    waited for on a thread of its own, as an appender waits (a try every few milliseconds
    would lose to appenders that take it back to back; an open can hang on a network file
    system): given up, that thread lets the lock go as soon as it gets it."""
    taken = threading.Event()
    state: dict[str, Any] = {"fd": None, "abandoned": False}
    guard = threading.Lock()

    def take() -> None:
        fd: int | None = None
        try:
            fd = _open_to_lock(path)
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except Exception:  # noqa: BLE001 - not taken; said by the caller's False
            _close(fd)
            fd = None
        finally:
            with guard:
                if state["abandoned"]:
                    _close(fd)  # and with it the lock
                else:
                    state["fd"] = fd
                    taken.set()

    threading.Thread(target=take, daemon=True, name="wingman-audit-lock").start()
    try:
        taken.wait(seconds)
    except BaseException:  # interrupted: the lock is never left to the thread
        with guard:
            state["abandoned"] = True
            _close(state["fd"])
        raise
    with guard:
        if not taken.is_set():
            state["abandoned"] = True
        fd = state["fd"]
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        _close(fd)  # the lock goes with it


def _close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _open_to_lock(path: Path) -> int | None:
    """``path`` opened to be locked: for writing where it may be (a network file system
    emulates ``flock`` with byte-range locks, and an exclusive one needs a file open for
    writing), else for reading; never blocking on a FIFO. None when it cannot be opened."""
    for flags in (os.O_WRONLY | os.O_APPEND, os.O_RDONLY):
        try:
            return os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
    return None


class FileSink:
    """A JSON Lines file shared safely by several processes on one host.

    Each append takes an exclusive ``flock``, reads the last record from the end of the file,
    writes one line (``append_all``: one line per record, in one write) and ``fsync``s before
    returning. The file is created with mode 0600 and its directory fsynced. A sink is
    fail-closed for good after an fsync error (the kernel may have dropped the pages) or a
    failed write it could not remove, and refuses to append when the file ends with a partial
    line, when the last record does not verify, or when the file was removed or replaced.
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: _Clock | None = None) -> None:
        self.path = Path(path)
        self._clock = clock or _utcnow
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._fd = -1
        self._pid = os.getpid()
        self._fd = self._open()

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                fd = os.open(self.path, flags)
            else:
                try:
                    os.fchmod(fd, 0o600)
                    os.fsync(fd)
                    _fsync_dir(self.path.parent)
                except OSError:
                    os.close(fd)
                    raise
        except OSError as exc:
            raise self._unavailable("cannot open the audit log", exc) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise AuditUnavailable(
                f"audit log {self.path} is not a regular file; point the audit target at a "
                "file on a persistent volume"
            )
        return fd

    def _unavailable(self, what: str, exc: OSError) -> AuditUnavailable:
        hint = {
            errno.ENOENT: "create the directory (or mount the volume)",
            errno.EACCES: "make the directory/file writable by this process",
            errno.EROFS: "mount the volume read-write",
            errno.ENOSPC: "free space on the volume",
            errno.EDQUOT: "raise the quota or free space",
        }.get(exc.errno or 0, "check the volume and its permissions")
        return AuditUnavailable(
            f"{what} {self.path}: {exc.strerror or exc}; {hint}, then retry. Nothing was "
            "recorded, so the action must not proceed."
        )

    def __enter__(self) -> FileSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def append(
        self,
        event: str,
        *,
        actor: str,
        subject: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
        now: dt.datetime | None = None,
    ) -> AuditRecord:
        return one(self.append_all([NewRecord(event, actor, subject, data, now)]))

    def append_all(self, entries: Sequence[NewRecord]) -> list[AuditRecord | AuditUnavailable]:
        # Refuse bad content before touching the file.
        checked, valid = screen(entries)
        if not valid:
            return merge(checked, [])
        with self._lock:
            if os.getpid() != self._pid:  # forked: never share the parent's lock
                if self._fd >= 0:
                    os.close(self._fd)
                self._pid = os.getpid()
                self._fd = self._open()
            if self._fd < 0:
                raise AuditUnavailable(f"audit sink for {self.path} is closed")
            if self._broken is not None:
                raise AuditUnavailable(self._broken)
            fd = self._fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise self._unavailable("cannot lock the audit log", exc) from None
            try:
                return merge(checked, self._append_locked(fd, valid))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _append_locked(self, fd: int, entries: Sequence[NewRecord]
                       ) -> list[AuditRecord | AuditUnavailable]:
        try:
            st = os.fstat(fd)
            try:
                named = os.stat(self.path)
                current: tuple[int, int] | None = (named.st_dev, named.st_ino)
            except FileNotFoundError:
                current = None
        except OSError as exc:
            raise self._unavailable("cannot stat the audit log", exc) from None
        if st.st_nlink == 0 or current != (st.st_dev, st.st_ino):
            raise AuditUnavailable(
                f"audit log {self.path} was removed or replaced while open; find out why, "
                "then restart the process to reopen it"
            )
        size = st.st_size
        seq, prev = self._tail(fd, size)
        results = chain(seq, prev, entries, self._clock)
        lines = b"".join(record.to_bytes() + b"\n" for record in records_of(results))
        if not lines:
            return results
        try:
            view = memoryview(lines)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            self._rollback(fd, size)
            if self._broken is not None:  # the failed write could not be removed
                raise AuditUnavailable(self._broken) from None
            raise self._unavailable("cannot write to the audit log", exc) from None
        try:
            os.fsync(fd)
        except OSError as exc:
            self._rollback(fd, size)
            self._broken = (
                f"audit log {self.path} failed an fsync ({exc.strerror}); the kernel may "
                "have dropped written data, so this sink refuses further appends. Check the "
                "disk, run 'wingman audit verify', then restart the process."
            )
            raise AuditUnavailable(self._broken) from None
        return results

    def _rollback(self, fd: int, size: int) -> None:
        """Remove our own unacknowledged write so the file stays as it was; if that fails, the
        sink refuses every further append (records nobody was told about may remain)."""
        try:
            os.ftruncate(fd, size)
            if os.fstat(fd).st_size == size:
                return
            what = "its size did not come back"
        except OSError as exc:
            what = exc.strerror or str(exc)
        self._broken = (
            f"audit log {self.path}: a failed write could not be removed ({what}); records "
            "whose append failed may remain, so this sink refuses further appends. Check the "
            "disk, run 'wingman audit verify', then restart the process."
        )

    def _tail(self, fd: int, size: int) -> tuple[int, str]:
        """(seq, prev) for the next record, read from the end of the file."""
        if size == 0:
            return 0, GENESIS_HASH
        try:
            if os.pread(fd, 1, size - 1) != b"\n":
                raise AuditUnavailable(
                    f"audit log {self.path} ends with an incomplete record (a crash during a "
                    "write, or truncation). Keep a copy, run 'wingman audit verify', and "
                    "remove the partial last line once it is understood; appends are refused "
                    "until then."
                )
            end = size - 1
            start = end
            buf = b""
            while True:
                start = max(0, start - 8192)
                buf = os.pread(fd, end - start - len(buf), start) + buf
                cut = buf.rfind(b"\n")
                if cut >= 0:
                    last = buf[cut + 1 :]
                    break
                if start == 0:
                    last = buf
                    break
                if len(buf) > MAX_RECORD_BYTES + 1:
                    last = b""
                    break
        except OSError as exc:
            raise self._unavailable("cannot read the audit log", exc) from None
        try:
            record = _parse_stored(last)
        except _Malformed as exc:
            raise AuditUnavailable(
                f"the last record of audit log {self.path} {exc}; run 'wingman audit verify' "
                "and repair the log before appending"
            ) from None
        if record.to_bytes() != last or record.compute_hash() != record.hash:
            raise AuditUnavailable(
                f"the last record of audit log {self.path} (seq {record.seq}) does not "
                "verify: it was edited. Run 'wingman audit verify'; appends are refused."
            )
        return record.seq + 1, record.hash

    def records(self) -> Iterator[AuditRecord]:
        for entry in _file_entries(self.path):
            if not entry.complete:
                raise AuditTampered(
                    f"audit log {self.path} line {entry.line} is incomplete (no newline)",
                    reason="AuditTruncated",
                )
            try:
                yield _parse_stored(entry.raw)
            except _Malformed as exc:
                raise AuditTampered(
                    f"audit log {self.path} line {entry.line}: the stored record {exc}",
                    reason="AuditMalformed",
                ) from None

    def executions(self, approval_uid: str, grant_uid: str) -> list[AuditRecord]:
        # the file searched as bytes for the uids: only their lines are parsed (a year's trail
        # is tens of MB, searched at each gateway run)
        require_uids(approval_uid, grant_uid)
        keys = [key.encode() for key in (approval_uid, grant_uid) if key]
        return executions_among(((f"a line of audit log {self.path}", raw)
                                 for raw in _lines_holding(self.path, keys)
                                 if EXECUTING_FIELD in raw), approval_uid, grant_uid)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_snapshot(path: Path, offset: int = 0) -> tuple[IO[bytes], int]:
    """The audit file opened for reading at ``offset``, and its size under a shared lock: the
    bytes present then (a writer mid-append is not seen half-done)."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once (it is refused below)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise AuditUnavailable(
            f"cannot read audit log {path}: {exc.strerror or exc}; check the path and that "
            "this user may read it"
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            os.set_blocking(fd, True)
    except OSError as exc:
        os.close(fd)
        raise AuditUnavailable(f"cannot read audit log {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise AuditUnavailable(
            f"audit log {path} is not a regular file (it is {_file_kind(mode)}); point the "
            "audit target (or the verifier) at the audit log file itself"
        )
    handle: IO[bytes] = os.fdopen(fd, "rb")
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        size = os.fstat(fd).st_size
        fcntl.flock(fd, fcntl.LOCK_UN)
        if offset:
            handle.seek(offset)
    except OSError as exc:
        handle.close()
        raise AuditUnavailable(f"cannot lock audit log {path}: {exc.strerror}") from None
    return handle, size


def _read(path: Path, read: Callable[[int], bytes], size: int) -> bytes:
    """``read(size)`` of the audit file at ``path``; ``AuditUnavailable`` when it fails."""
    try:
        return read(size)
    except OSError as exc:
        raise AuditUnavailable(f"cannot read audit log {path}: {exc.strerror}") from None


def _file_entries(path: Path, offset: int = 0, first_line: int = 1
                  ) -> Generator[_Entry, None, None]:
    """The lines present when reading began (a writer mid-append is not seen half-done),
    from byte ``offset`` (the start of line ``first_line``) on."""
    handle, size = _open_snapshot(path, offset)
    with handle:
        remaining = size - offset
        number = first_line - 1
        position = offset
        limit = MAX_RECORD_BYTES + 1
        while remaining > 0:
            raw = _read(path, handle.readline, min(remaining, limit))
            if not raw:
                return
            start, position = position, position + len(raw)
            remaining -= len(raw)
            number += 1
            if len(raw) == limit and not raw.endswith(b"\n"):
                yield _Entry(raw, True, number, error=f"is longer than {MAX_RECORD_BYTES} bytes",
                             offset=start)
                return
            yield _Entry(raw.removesuffix(b"\n"), raw.endswith(b"\n"), number, offset=start)


#: How much of the file a search for lines holding some bytes reads at a time.
SEARCH_CHUNK_BYTES = 8 * 1024 * 1024


def _lines_holding(path: Path, keys: Sequence[bytes]) -> Generator[bytes, None, None]:
    """The lines present when reading began that hold one of ``keys``, each once, in order:
    the file read in chunks and searched as bytes (a line is looked at only where a key is)."""
    handle, size = _open_snapshot(path)
    with handle:
        remaining = size
        carry = b""
        while remaining > 0:
            chunk = _read(path, handle.read, min(SEARCH_CHUNK_BYTES, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            data = carry + chunk
            # complete lines only, but for the file's last (which may lack its newline)
            end = data.rfind(b"\n") + 1 if remaining > 0 else len(data)
            starts: set[int] = set()
            for key in keys:
                at = data.find(key, 0, end)
                while at != -1:
                    start = data.rfind(b"\n", 0, at) + 1
                    starts.add(start)
                    stop = data.find(b"\n", at, end)
                    at = -1 if stop == -1 else data.find(key, stop, end)
            for start in sorted(starts):
                stop = data.find(b"\n", start, end)
                yield data[start:end if stop == -1 else stop]
            carry = data[end:]


def _file_kind(mode: int) -> str:
    """``a directory``, ``a FIFO``... for a message about a path that is not a regular file."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "of another kind"


def open_regular(name: str | os.PathLike[str], what: str,
                 error: type[WingmanError] = ConfigError) -> IO[bytes]:
    """The regular file ``name``, open for reading: a FIFO or a device is refused, never waited
    on nor read without end; ``error`` says what is wrong (``what`` names the file's role)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise error(f"cannot read {what} {os.fspath(name)}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{what} {os.fspath(name)} is not a regular file; pass the file itself")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise

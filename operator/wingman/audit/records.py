"""The tamper-evident audit trail: append-only, hash-chained records, their sinks and verifier.

The operator and the gateway call ``open_sink(target).append(...)`` for every transition they
make, and fail closed when it raises ``AuditUnavailable``; ``wingman audit verify`` calls
``verify_main``. Sinks are blocking: async callers use ``asyncio.to_thread``.

**Record.** ``seq`` (0-based, contiguous), ``time`` (RFC 3339 UTC, microseconds, ``Z``),
``event`` (CamelCase), ``actor``, ``subject`` (object), ``data`` (object), ``prev`` (the previous
record's ``hash``; the genesis record has 64 zeros) and ``hash``: the SHA-256 hex digest of the
canonical JSON of the seven other fields. Canonical JSON is
``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)`` encoded as UTF-8; NaN and infinities are refused. A stored record is the
canonical JSON of all eight fields, and the verifier demands those exact bytes, so any change
of a stored byte is detected (not only changes that alter the parsed value).

**Secrets.** Callers never put a token, a key or a Secret's data into a record; they put
``fingerprint(value)`` (``sha256:<hex>``) instead. As a defence in depth ``append`` refuses any
string shaped like a JWT (a run of base64url segments whose first starts with ``eyJ``, followed
by at least two more segments) anywhere in the record. It then raises ``AuditUnavailable`` with
``reason="AuditRecordRejected"``: nothing was written, the chain is unchanged, callers fail
closed exactly as for a sink outage, and the message names the field (never its value). The
same error and reason cover every other invalid record (not JSON-able, naive ``now``, too big).

**What the chain proves, and what it cannot.** Any edit, deletion, insertion or reordering of
stored records is detected and located by ``verify``. Whoever can rewrite the whole store can
build a consistent forgery, and removing records from the tail leaves a valid shorter chain:
only an *anchor* recorded elsewhere catches those. Operators therefore record the head (each
``append`` returns it as ``record.anchor``; the operator writes the hash of each transition's
record into the object's status (``auditHead``, ``auditRecordHash``) and the head's sequence
number into the metric ``wingman_audit_head_sequence``) and verify with ``anchor=`` /
``expected_head=``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import stat
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TextIO
from urllib.parse import unquote, urlsplit

from wingman.errors import AuditTampered, AuditUnavailable, ConfigError

__all__ = [
    "GENESIS_HASH",
    "MAX_RECORD_BYTES",
    "REJECTED_REASON",
    "AuditAnchor",
    "AuditProblem",
    "AuditRecord",
    "AuditSink",
    "FileSink",
    "PostgresSink",
    "ProblemKind",
    "VerifyReport",
    "canonical_json",
    "fingerprint",
    "looks_like_token",
    "make_record",
    "open_sink",
    "verify",
    "verify_lines",
    "verify_main",
]

GENESIS_HASH = "0" * 64
"""The ``prev`` of the first record (seq 0)."""

MAX_RECORD_BYTES = 256 * 1024
"""Largest stored record. Audit records describe transitions; bulk output belongs elsewhere."""

REJECTED_REASON = "AuditRecordRejected"
_FIELDS = ("seq", "time", "event", "actor", "subject", "data", "prev", "hash")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_EVENT = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_B64URL_RUN = re.compile(r"[A-Za-z0-9_.-]+")
_MAX_DEPTH = 32
_Clock = Callable[[], dt.datetime]


# --------------------------------------------------------------------------- records


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 JSON of ``value`` (sorted keys, no spaces, no NaN/inf)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def fingerprint(value: str | bytes) -> str:
    """``sha256:<hex>`` of a secret, the only form in which a token or key may be audited."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditAnchor:
    """A (seq, hash) pair recorded outside the store; it lets ``verify`` detect truncation."""

    seq: int
    hash: str

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 0:
            raise ConfigError(f"audit anchor seq must be a non-negative integer, got {self.seq!r}")
        object.__setattr__(self, "hash", _normalise_hash(self.hash, "audit anchor hash"))

    @classmethod
    def parse(cls, text: str) -> AuditAnchor:
        """Parse ``SEQ:sha256:HEX`` (the form ``str()`` prints) or ``SEQ:HEX``."""
        seq_text, sep, digest = text.strip().partition(":")
        if not sep or not seq_text.isdigit():
            raise ConfigError(
                f"audit anchor {text!r} is not 'SEQ:sha256:HEX', e.g. '41:sha256:3f2a…'"
            )
        return cls(int(seq_text), digest)

    def __str__(self) -> str:
        return f"{self.seq}:sha256:{self.hash}"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One link of the chain. Treat ``subject`` and ``data`` as read-only."""

    seq: int
    time: str
    event: str
    actor: str
    subject: dict[str, Any]
    data: dict[str, Any]
    prev: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Every field except ``hash``: what ``hash`` is computed over."""
        return {
            "seq": self.seq,
            "time": self.time,
            "event": self.event,
            "actor": self.actor,
            "subject": self.subject,
            "data": self.data,
            "prev": self.prev,
        }

    def compute_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.body())).hexdigest()

    def to_bytes(self) -> bytes:
        """The stored form: canonical JSON of all eight fields (no trailing newline)."""
        return canonical_json({**self.body(), "hash": self.hash})

    @property
    def at(self) -> dt.datetime:
        """``time`` as an aware UTC datetime."""
        return _parse_time(self.time)

    @property
    def anchor(self) -> AuditAnchor:
        """This record as a head to record elsewhere (metrics, status, an off-box log)."""
        return AuditAnchor(self.seq, self.hash)


def make_record(
    seq: int,
    prev: str,
    event: str,
    *,
    actor: str,
    subject: Mapping[str, Any],
    data: Mapping[str, Any] | None,
    now: dt.datetime,
) -> AuditRecord:
    """Build and hash the record that follows ``prev`` at position ``seq``; pure.

    Raises ``AuditUnavailable(reason="AuditRecordRejected")`` when the content is not
    auditable: not JSON-able, NaN/inf, a JWT-shaped string, a naive ``now``, a non-CamelCase
    event, or more than ``MAX_RECORD_BYTES``.
    """
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise _rejected(f"seq must be a non-negative integer, got {seq!r}")
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        raise _rejected("prev must be 64 lowercase hex digits")
    if not isinstance(event, str) or not _EVENT.fullmatch(event):
        raise _rejected(
            f"event must be a CamelCase name such as 'ExecutionIntent', got {event!r}"
        )
    if not isinstance(actor, str) or not actor or len(actor) > 256:
        raise _rejected("actor must be a non-empty string of at most 256 characters")
    if not isinstance(subject, Mapping):
        raise _rejected("subject must be a JSON object (a mapping)")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _rejected("data must be a JSON object (a mapping)")
    _check_string(actor, "actor")
    record = AuditRecord(
        seq=seq,
        time=_format_time(now),
        event=event,
        actor=actor,
        subject=_normalise(subject, "subject", 0),
        data=_normalise(data, "data", 0),
        prev=prev,
        hash="",
    )
    record = _with_hash(record)
    if len(record.to_bytes()) > MAX_RECORD_BYTES:
        raise _rejected(
            f"the record is larger than {MAX_RECORD_BYTES} bytes; audit a summary or a "
            "fingerprint of bulky values instead"
        )
    return record


def _with_hash(record: AuditRecord) -> AuditRecord:
    return AuditRecord(**{**record.body(), "hash": record.compute_hash()})


def _rejected(what: str) -> AuditUnavailable:
    return AuditUnavailable(
        f"audit record refused, nothing was written: {what}. This is a bug in the caller; "
        "retrying cannot help.",
        reason=REJECTED_REASON,
    )


def _normalise(value: Any, path: str, depth: int) -> Any:
    """Plain JSON data equal to ``value``; refuses what canonical JSON cannot represent
    exactly, and JWT-shaped strings."""
    if depth > _MAX_DEPTH:
        raise _rejected(f"{path} is nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) >= 2**63:
            raise _rejected(f"{path} is an integer outside the 64-bit range")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _rejected(f"{path} is {value!r}; JSON has no NaN or infinity")
        return float(value)
    if isinstance(value, str):
        _check_string(value, path)
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _rejected(f"{path} has a non-string key of type {type(key).__name__}")
            _check_string(key, f"a key of {path}")
            out[str(key)] = _normalise(item, f"{path}.{key}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_normalise(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise _rejected(f"{path} has type {type(value).__name__}, which is not JSON")


def _check_string(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _rejected(f"{path} is not valid Unicode (a lone surrogate)") from None
    if _looks_like_jwt(value):
        raise _rejected(
            f"{path} looks like a JWT (base64url segments starting with 'eyJ'); tokens and "
            "keys never go into the audit trail: record wingman.audit.fingerprint(token) "
            f"instead (here {fingerprint(value)})"
        )


def looks_like_token(text: str) -> bool:
    """True when ``text`` holds a JWT-shaped string: such text is never written to the trail."""
    return _looks_like_jwt(text)


def _looks_like_jwt(text: str) -> bool:
    """True when ``text`` contains ``eyJ<seg>.<seg>.`` (linear time, no regex backtracking)."""
    if "eyJ" not in text:
        return False
    for run in _B64URL_RUN.finditer(text):
        segments = run.group().split(".")
        for i in range(len(segments) - 2):
            first = segments[i].find("eyJ")
            if first != -1 and first + 3 < len(segments[i]) and segments[i + 1]:
                return True
    return False


def _format_time(now: dt.datetime) -> str:
    if not isinstance(now, dt.datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise _rejected("now must be a timezone-aware datetime")
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _normalise_hash(text: str, what: str) -> str:
    digest = text.strip()
    digest = digest.removeprefix("sha256:")
    if not _HEX64.fullmatch(digest):
        raise ConfigError(f"{what} must be 'sha256:' followed by 64 lowercase hex digits")
    return digest


class _Malformed(ValueError):
    """A stored line is not a well-formed record (internal to the verifier)."""


def _reject_constant(name: str) -> Any:
    raise _Malformed(f"contains {name}, which canonical JSON never writes")


def _parse_stored(raw: bytes) -> AuditRecord:
    """Parse a stored record strictly; ``_Malformed`` says what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Malformed(f"is not UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _Malformed(f"is not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise _Malformed("is not a JSON object")
    if set(obj) != set(_FIELDS):
        missing = sorted(set(_FIELDS) - set(obj))
        extra = sorted(set(obj) - set(_FIELDS))
        raise _Malformed(f"has the wrong fields (missing {missing}, unexpected {extra})")
    seq = obj["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise _Malformed("has a seq that is not a non-negative integer")
    for name in ("time", "event", "actor", "prev", "hash"):
        if not isinstance(obj[name], str):
            raise _Malformed(f"has a {name} that is not a string")
    for name in ("subject", "data"):
        if not isinstance(obj[name], dict):
            raise _Malformed(f"has a {name} that is not an object")
    for name in ("prev", "hash"):
        if not _HEX64.fullmatch(obj[name]):
            raise _Malformed(f"has a {name} that is not 64 lowercase hex digits")
    if not _TIME.fullmatch(obj["time"]):
        raise _Malformed("has a time that is not RFC 3339 UTC with microseconds")
    return AuditRecord(**obj)


def _lenient_seq(raw: bytes) -> int | None:
    with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
        obj = json.loads(raw.decode("utf-8"))
        if isinstance(obj, dict):
            seq = obj.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                return seq
    return None


# --------------------------------------------------------------------------- verification


class ProblemKind(enum.StrEnum):
    """What the first problem in a chain looks like."""

    EDITED = "Edited"
    """A record's bytes changed: its hash, its canonical form or (PostgreSQL) a column differ."""
    DELETED = "Deleted"
    """A gap in ``seq``: one or more records are missing."""
    INSERTED = "Inserted"
    """A record that does not belong: a repeated or out-of-place ``seq``."""
    REORDERED = "Reordered"
    """Every record is present, but not in ``seq`` order."""
    TRUNCATED = "Truncated"
    """The tail is gone: a partial last line, or the log ends before a recorded anchor/head."""
    BROKEN_LINK = "BrokenLink"
    """A valid record whose ``prev`` is not the previous record's hash (its predecessor was
    edited and re-hashed, or it was forged)."""
    MALFORMED = "Malformed"
    """A stored line is not a well-formed record (not UTF-8, not JSON, wrong fields)."""
    REWRITTEN = "Rewritten"
    """The chain is self-consistent but differs from a recorded anchor: it was rebuilt."""


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """The first problem found, and where."""

    kind: ProblemKind
    position: int
    """0-based index of the record in storage order (file: line - 1; PostgreSQL: row in seq
    order). For a truncation detected at the end, one past the last record."""
    line: int | None
    """1-based line of a file; ``None`` for PostgreSQL."""
    seq: int | None
    """The ``seq`` the record claims, when it could be read."""
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of ``verify``: ``records`` is how many records verified before any problem."""

    records: int
    head: str
    """Hash of the last verified record (``GENESIS_HASH`` for an empty log)."""
    head_seq: int | None
    problem: AuditProblem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def anchor(self) -> AuditAnchor | None:
        """The verified head, to record elsewhere; ``None`` for an empty log."""
        return None if self.head_seq is None else AuditAnchor(self.head_seq, self.head)

    def summary(self) -> str:
        """One human line: ``OK: …`` or ``TAMPERED at record N (line L): Kind — …``."""
        if self.problem is None:
            return f"OK: {self.records} records, head sha256:{self.head}"
        p = self.problem
        where = f"line {p.line}" if p.line is not None else f"seq {p.seq}"
        if p.line is None and p.seq is None:
            where = "end of log"
        return f"TAMPERED at record {p.position} ({where}): {p.kind} — {p.message}"

    def raise_if_tampered(self) -> None:
        """Raise ``AuditTampered`` (reason ``Audit<Kind>``) when the chain did not verify."""
        if self.problem is not None:
            raise AuditTampered(self.summary(), reason=f"Audit{self.problem.kind}")


@dataclass(frozen=True, slots=True)
class _Entry:
    raw: bytes
    """One stored record without its newline."""
    complete: bool
    """False for a last line with no newline."""
    line: int | None
    columns: Mapping[str, Any] | None = None
    """PostgreSQL: the row's own columns, which must agree with ``raw``."""
    error: str | None = None
    """Pre-detected malformation (e.g. an over-long line)."""


def verify_lines(
    lines: Iterable[bytes],
    *,
    anchor: AuditAnchor | None = None,
    expected_head: str | None = None,
    expected_count: int | None = None,
) -> VerifyReport:
    """Verify stored lines, each with its trailing ``\\n`` (a last one without is partial).

    Pass a binary file or ``io.BytesIO(data)``; ``bytes.splitlines`` would also split on a
    bare ``\\r`` and so hide that byte from the check.
    """
    entries = (
        _Entry(raw.removesuffix(b"\n"), raw.endswith(b"\n"), number)
        for number, raw in enumerate(lines, start=1)
    )
    return _verify_entries(
        entries, anchor=anchor, expected_head=expected_head, expected_count=expected_count
    )


def _verify_entries(
    entries: Iterator[_Entry],
    *,
    anchor: AuditAnchor | None,
    expected_head: str | None,
    expected_count: int | None,
) -> VerifyReport:
    head_wanted = None if expected_head is None else _normalise_hash(expected_head, "expected head")
    if expected_count is not None and expected_count < 0:
        raise ConfigError("expected_count must be a non-negative integer")
    checker = _Checker(anchor=anchor, head_wanted=head_wanted)
    for position, entry in enumerate(entries):
        problem = checker.check(position, entry, entries)
        if problem is not None:
            return problem
    return checker.finish(expected_count)


class _Checker:
    """Walks the chain once; ``check`` returns a failing report at the first problem."""

    def __init__(self, *, anchor: AuditAnchor | None, head_wanted: str | None) -> None:
        self.anchor = anchor
        self.head_wanted = head_wanted
        self.head_found = False
        self.count = 0
        self.last = GENESIS_HASH  # hash of the last verified record
        self.before_last = GENESIS_HASH
        self.previous: AuditRecord | None = None

    def _fail(
        self, kind: ProblemKind, entry: _Entry | None, seq: int | None, msg: str, back: int = 0
    ) -> VerifyReport:
        at = self.count - back
        line = None if entry is None or entry.line is None else entry.line - back
        return VerifyReport(
            records=at,
            head=self.before_last if back else self.last,
            head_seq=at - 1 if at > 0 else None,
            problem=AuditProblem(kind, at, line, seq, msg),
        )

    def check(self, position: int, entry: _Entry, rest: Iterator[_Entry]) -> VerifyReport | None:
        if not entry.complete:
            return self._fail(
                ProblemKind.TRUNCATED,
                entry,
                _lenient_seq(entry.raw),
                f"the last line is incomplete ({len(entry.raw)} bytes and no newline): the "
                "log was cut mid-record or a writer died mid-write; keep a copy and compare "
                "with a recorded head",
            )
        if entry.error is not None:
            return self._fail(
                ProblemKind.MALFORMED, entry, None, f"the stored record {entry.error}"
            )
        try:
            record = _parse_stored(entry.raw)
        except _Malformed as exc:
            return self._fail(
                ProblemKind.MALFORMED, entry, _lenient_seq(entry.raw), f"the stored record {exc}"
            )
        if record.to_bytes() != entry.raw:
            return self._fail(
                ProblemKind.EDITED,
                entry,
                record.seq,
                "the stored bytes are not the canonical form of the record: it was changed "
                "after it was written",
            )
        computed = record.compute_hash()
        if computed != record.hash:
            return self._fail(
                ProblemKind.EDITED,
                entry,
                record.seq,
                f"stored hash sha256:{record.hash} does not match sha256:{computed} computed "
                "from the record's content",
            )
        if entry.columns is not None:
            column = _column_disagreeing(record, entry.columns)
            if column is not None:
                return self._fail(
                    ProblemKind.EDITED,
                    entry,
                    record.seq,
                    f"column {column!r} disagrees with the hashed record text: the row was "
                    "edited outside the chain",
                )
        if record.seq < position:
            # Everything before verified as seqs 0..position-1, so this seq is a repeat.
            previous = self.previous
            if (
                previous is not None
                and previous.seq == record.seq
                and previous.prev == record.prev
                and _next_links_to(rest, record.hash)
            ):
                return self._fail(
                    ProblemKind.INSERTED,
                    entry,
                    previous.seq,
                    f"seq {record.seq} appears twice and the chain continues from the second "
                    f"copy, so this one (sha256:{previous.hash}) was inserted",
                    back=1,
                )
            return self._fail(
                ProblemKind.INSERTED,
                entry,
                record.seq,
                f"seq {record.seq} appears again (first at record {record.seq}): a record was "
                "inserted",
            )
        if record.seq > position:
            kind, message = _classify_jump(position, record.seq, rest)
            return self._fail(kind, entry, record.seq, message)
        if record.prev != self.last:
            return self._fail(
                ProblemKind.BROKEN_LINK,
                entry,
                record.seq,
                f"prev sha256:{record.prev} is not the previous record's hash "
                f"sha256:{self.last}: the previous record was replaced, or this one forged",
            )
        anchor = self.anchor
        if anchor is not None and record.seq == anchor.seq and record.hash != anchor.hash:
            return self._fail(
                ProblemKind.REWRITTEN,
                entry,
                record.seq,
                f"the anchor recorded seq {anchor.seq} as sha256:{anchor.hash}, the log has "
                f"sha256:{record.hash}: the chain was rebuilt at or before this record",
            )
        if record.hash == self.head_wanted:
            self.head_found = True
        self.before_last, self.last = self.last, record.hash
        self.previous = record
        self.count += 1
        return None

    def finish(self, expected_count: int | None) -> VerifyReport:
        count = self.count
        anchor = self.anchor
        if anchor is not None and count <= anchor.seq:
            return self._fail(
                ProblemKind.TRUNCATED,
                None,
                None,
                f"the log ends after {count} records but the anchor recorded seq {anchor.seq} "
                f"(sha256:{anchor.hash}): records were removed from the tail",
            )
        if expected_count is not None and count < expected_count:
            return self._fail(
                ProblemKind.TRUNCATED,
                None,
                None,
                f"the log has {count} records but at least {expected_count} were expected: "
                "records were removed from the tail",
            )
        if self.head_wanted is not None and not self.head_found:
            return self._fail(
                ProblemKind.TRUNCATED,
                None,
                None,
                f"no record has the expected head sha256:{self.head_wanted}: the log was "
                "truncated (or rebuilt) since that head was recorded",
            )
        return VerifyReport(records=count, head=self.last, head_seq=count - 1 if count else None)


def _next_links_to(entries: Iterator[_Entry], digest: str) -> bool:
    """Whether the next entry's ``prev`` is ``digest`` (or there is no next entry)."""
    nxt = next(entries, None)
    if nxt is None:
        return True
    with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
        obj = json.loads(nxt.raw.decode("utf-8"))
        return isinstance(obj, dict) and obj.get("prev") == digest
    return False


def _classify_jump(
    expected: int, found: int, rest: Iterator[_Entry]
) -> tuple[ProblemKind, str]:
    """A seq higher than expected: missing records, a reordering or an interloper."""
    later = [found, *(_lenient_seq(e.raw) for e in rest)]
    seqs = [s for s in later if s is not None]
    if expected not in seqs:
        missing = [s for s in range(expected, found) if s not in seqs]
        span = f"seq {missing[0]}" if len(missing) == 1 else f"seqs {missing[0]}..{missing[-1]}"
        return (
            ProblemKind.DELETED,
            f"found seq {found} where seq {expected} was expected: {span} "
            f"({len(missing)} record{'s' if len(missing) != 1 else ''}) deleted (gap)",
        )
    where = later.index(expected)
    if sorted(seqs) == list(range(expected, expected + len(seqs))):
        return (
            ProblemKind.REORDERED,
            f"found seq {found} where seq {expected} was expected; seq {expected} comes "
            f"{where} record{'s' if where != 1 else ''} later: records were reordered",
        )
    return (
        ProblemKind.INSERTED,
        f"found seq {found} where seq {expected} was expected, and seq {expected} follows: "
        "a record that does not belong here was inserted",
    )


def _column_disagreeing(record: AuditRecord, columns: Mapping[str, Any]) -> str | None:
    for name in ("seq", "event", "actor", "subject", "data", "prev", "hash"):
        if columns.get(name) != getattr(record, name):
            return name
    if columns.get("time") != record.at:
        return "time"
    return None


# --------------------------------------------------------------------------- sinks


class AuditSink(Protocol):
    """Where records go. ``append`` returns only once the record is durable."""

    def append(
        self,
        event: str,
        *,
        actor: str,
        subject: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
        now: dt.datetime | None = None,
    ) -> AuditRecord:
        """Durably append one record, or raise ``AuditUnavailable`` (callers fail closed)."""
        ...

    def records(self) -> Iterator[AuditRecord]:
        """Every stored record in order (``AuditTampered`` on an unreadable one)."""
        ...

    def close(self) -> None: ...


class FileSink:
    """A JSON Lines file shared safely by several processes on one host.

    Each append takes an exclusive ``flock``, reads the last record from the end of the file,
    writes one line and ``fsync``s before returning. The file is created with mode 0600 and
    its directory fsynced. A sink is fail-closed for good after an fsync error (the kernel
    may have dropped the pages), and refuses to append when the file ends with a partial
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
        # Refuse bad content before touching the file (seq/prev are placeholders here).
        make_record(0, GENESIS_HASH, event, actor=actor, subject=subject, data=data,
                    now=now or _utcnow())
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
                return self._append_locked(fd, event, actor, subject, data, now)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _append_locked(
        self,
        fd: int,
        event: str,
        actor: str,
        subject: Mapping[str, Any],
        data: Mapping[str, Any] | None,
        now: dt.datetime | None,
    ) -> AuditRecord:
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
        record = make_record(seq, prev, event, actor=actor, subject=subject, data=data,
                             now=now or self._clock())
        line = record.to_bytes() + b"\n"
        try:
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            self._rollback(fd, size)
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
        return record

    def _rollback(self, fd: int, size: int) -> None:
        """Remove our own unacknowledged partial write so the file stays well-formed."""
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)

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


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_entries(path: Path) -> Generator[_Entry, None, None]:
    """The lines present when reading began (a writer mid-append is not seen half-done)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise AuditUnavailable(
            f"cannot read audit log {path}: {exc.strerror or exc}; check the path and that "
            "this user may read it"
        ) from None
    handle: IO[bytes] = os.fdopen(fd, "rb")
    with handle:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            size = os.fstat(fd).st_size
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise AuditUnavailable(f"cannot lock audit log {path}: {exc.strerror}") from None
        remaining = size
        number = 0
        limit = MAX_RECORD_BYTES + 1
        while remaining > 0:
            try:
                raw = handle.readline(min(remaining, limit))
            except OSError as exc:
                raise AuditUnavailable(f"cannot read audit log {path}: {exc.strerror}") from None
            if not raw:
                return
            remaining -= len(raw)
            number += 1
            if len(raw) == limit and not raw.endswith(b"\n"):
                yield _Entry(raw, True, number, error=f"is longer than {MAX_RECORD_BYTES} bytes")
                return
            yield _Entry(raw.removesuffix(b"\n"), raw.endswith(b"\n"), number)


# --------------------------------------------------------------------------- PostgreSQL

_TABLE = "wingman_audit"
_APPEND_LOCK = 0x77696E676D616E  # "wingman": pg_advisory_xact_lock key serialising the head
_SCHEMA_LOCK = _APPEND_LOCK + 1

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS wingman_audit (
    seq     bigint      PRIMARY KEY CHECK (seq >= 0),
    time    timestamptz NOT NULL,
    event   text        NOT NULL,
    actor   text        NOT NULL,
    subject jsonb       NOT NULL,
    data    jsonb       NOT NULL,
    prev    text        NOT NULL,
    hash    text        NOT NULL UNIQUE,
    record  text        NOT NULL
);
CREATE OR REPLACE FUNCTION wingman_audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'wingman_audit is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Audit records are never changed or removed.';
END
$fn$;
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'wingman_audit'::regclass
                   AND tgname = 'wingman_audit_no_update_delete') THEN
        CREATE TRIGGER wingman_audit_no_update_delete
            BEFORE UPDATE OR DELETE ON wingman_audit
            FOR EACH STATEMENT EXECUTE FUNCTION wingman_audit_refuse_change();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'wingman_audit'::regclass
                   AND tgname = 'wingman_audit_no_truncate') THEN
        CREATE TRIGGER wingman_audit_no_truncate
            BEFORE TRUNCATE ON wingman_audit
            FOR EACH STATEMENT EXECUTE FUNCTION wingman_audit_refuse_change();
    END IF;
END
$do$;
"""

_TRIGGERS_SQL = """
SELECT tgname, tgenabled FROM pg_trigger
WHERE tgrelid = to_regclass('wingman_audit')
  AND tgname IN ('wingman_audit_no_update_delete', 'wingman_audit_no_truncate')
"""


def _dsn_parts(dsn: str) -> dict[str, str] | None:
    """The DSN's parameters, or ``None`` when libpq cannot parse it."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except Exception:  # noqa: BLE001 - any parse failure means "unparseable", never echo it
        return None


def _redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    parts = _dsn_parts(dsn)
    if parts is None:
        return "<unparseable PostgreSQL DSN>"
    user = parts.get("user", "")
    host = parts.get("host", "")
    port = parts.get("port", "")
    db = parts.get("dbname", "")
    return f"postgresql://{user + '@' if user else ''}{host}{':' + port if port else ''}/{db}"


class PostgresSink:
    """The audit trail in a PostgreSQL table, shared by any number of writers.

    Table ``wingman_audit(seq bigint primary key, time timestamptz, event text, actor text,
    subject jsonb, data jsonb, prev text, hash text unique, record text)``; ``record`` holds
    the exact canonical bytes that were hashed, and ``verify`` also checks that every column
    agrees with them. One transaction per append; ``pg_advisory_xact_lock`` serialises the
    chain head (it needs no table privilege) and the primary key on ``seq`` makes a fork
    impossible even for a writer that skips the lock. ``synchronous_commit`` is forced on
    for the transaction, so an acknowledged append survives a server crash.

    The sink creates the table and two triggers when they are absent: ``BEFORE UPDATE OR
    DELETE`` and ``BEFORE TRUNCATE`` raise, so even the owner cannot change history without
    first disabling them (which takes ``ALTER TABLE`` and leaves the chain to catch it). It
    refuses to start when those triggers exist but are disabled.

    Least privilege, as the database owner (once)::

        CREATE ROLE wingman_audit_owner NOLOGIN;   -- owns the table; nobody logs in as it
        SET ROLE wingman_audit_owner;              -- then start one sink, or run the DDL
        CREATE ROLE wingman_writer LOGIN PASSWORD '…';   -- operator and gateway
        GRANT INSERT, SELECT ON wingman_audit TO wingman_writer;
        CREATE ROLE wingman_auditor LOGIN PASSWORD '…';  -- `wingman audit verify`
        GRANT SELECT ON wingman_audit TO wingman_auditor;

    Never grant UPDATE, DELETE, TRUNCATE or ownership to the writers: the owner can disable
    triggers. Keep an anchor (``record.anchor``) off the database: whoever owns the table
    can rebuild a consistent chain, and only an anchor exposes that.
    """

    def __init__(
        self, dsn: str, *, clock: _Clock | None = None, connect_timeout: int = 10
    ) -> None:
        self._dsn = dsn
        self._where = _redact_dsn(dsn)
        self._password = (_dsn_parts(dsn) or {}).get("password", "")
        self._connect_timeout = connect_timeout
        self._clock = clock or _utcnow
        self._lock = threading.Lock()
        self._conn: Any = None
        self._closed = False
        with self._lock:
            self._connect()
            try:
                self._ensure_schema()
            except AuditUnavailable:
                self._drop()
                raise

    def _error(self, what: str, exc: BaseException) -> AuditUnavailable:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return AuditUnavailable(
            f"{what} ({self._where}): {text}. Check that PostgreSQL is up and reachable and "
            "that the role may INSERT and SELECT on wingman_audit; nothing was recorded, so "
            "the action must not proceed."
        )

    def _connect(self) -> Any:
        import psycopg

        if self._closed:
            raise AuditUnavailable(f"audit sink for {self._where} is closed")
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._drop()
        extra: dict[str, Any] = {}
        parts = _dsn_parts(self._dsn) or {}
        if "connect_timeout" not in parts:
            extra["connect_timeout"] = self._connect_timeout
        if "application_name" not in parts:
            extra["application_name"] = "wingman-audit"
        try:
            self._conn = psycopg.connect(self._dsn, autocommit=True, **extra)
        except psycopg.Error as exc:
            raise self._error("cannot connect to the audit database", exc) from None
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def _ensure_schema(self) -> None:
        import psycopg

        conn = self._conn
        try:
            if not self._schema_ready(conn):
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    conn.execute(_SCHEMA_SQL)
                if not self._schema_ready(conn):
                    raise AuditUnavailable(
                        f"audit table wingman_audit in {self._where} lacks its append-only "
                        "triggers after creation; inspect the database"
                    )
        except psycopg.errors.InsufficientPrivilege as exc:
            raise self._error(
                "cannot create the audit table or its append-only triggers; run the sink "
                "once as the table owner (see the PostgresSink docstring)",
                exc,
            ) from None
        except psycopg.Error as exc:
            raise self._error("cannot prepare the audit table", exc) from None

    def _schema_ready(self, conn: Any) -> bool:
        exists = conn.execute("SELECT to_regclass('wingman_audit') IS NOT NULL").fetchone()[0]
        if not exists:
            return False
        triggers = dict(conn.execute(_TRIGGERS_SQL).fetchall())
        if len(triggers) < 2:
            return False
        disabled = sorted(name for name, enabled in triggers.items() if enabled == "D")
        if disabled:
            raise AuditUnavailable(
                f"the append-only triggers {disabled} on wingman_audit in {self._where} are "
                "disabled: someone turned off tamper protection. Find out who (the chain may "
                "have been edited: run 'wingman audit verify'), re-enable them with ALTER "
                "TABLE wingman_audit ENABLE TRIGGER ALL, then restart."
            )
        return True

    def __enter__(self) -> PostgresSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()

    def append(
        self,
        event: str,
        *,
        actor: str,
        subject: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
        now: dt.datetime | None = None,
    ) -> AuditRecord:
        import psycopg
        from psycopg.types.json import Jsonb

        make_record(0, GENESIS_HASH, event, actor=actor, subject=subject, data=data,
                    now=now or _utcnow())
        with self._lock:
            conn = self._connect()
            try:
                for _attempt in range(3):
                    try:
                        with conn.transaction():
                            conn.execute("SET LOCAL synchronous_commit TO on")
                            conn.execute("SET LOCAL lock_timeout TO '10s'")
                            conn.execute("SET LOCAL statement_timeout TO '30s'")
                            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
                            row = conn.execute(
                                "SELECT record FROM wingman_audit ORDER BY seq DESC LIMIT 1"
                            ).fetchone()
                            seq, prev = self._next(row)
                            record = make_record(
                                seq, prev, event, actor=actor, subject=subject, data=data,
                                now=now or self._clock(),
                            )
                            conn.execute(
                                "INSERT INTO wingman_audit (seq, time, event, actor, subject, "
                                "data, prev, hash, record) "
                                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                                (
                                    record.seq, record.at, record.event, record.actor,
                                    Jsonb(record.subject), Jsonb(record.data), record.prev,
                                    record.hash, record.to_bytes().decode("utf-8"),
                                ),
                            )
                        return record
                    except psycopg.errors.UniqueViolation:
                        continue  # a writer that skipped the advisory lock won the race
                raise AuditUnavailable(
                    f"audit head in {self._where} kept moving during three attempts; a writer "
                    "is not taking the advisory lock"
                )
            except psycopg.Error as exc:
                self._drop()
                raise self._error("cannot append to the audit table", exc) from None

    def _next(self, row: Any) -> tuple[int, str]:
        if row is None:
            return 0, GENESIS_HASH
        raw = str(row[0]).encode("utf-8")
        try:
            record = _parse_stored(raw)
        except _Malformed as exc:
            raise AuditUnavailable(
                f"the last audit record in {self._where} {exc}; run 'wingman audit verify'"
            ) from None
        if record.to_bytes() != raw or record.compute_hash() != record.hash:
            raise AuditUnavailable(
                f"the last audit record in {self._where} (seq {record.seq}) does not verify: "
                "it was edited. Run 'wingman audit verify'; appends are refused."
            )
        return record.seq + 1, record.hash

    def records(self) -> Iterator[AuditRecord]:
        with contextlib.closing(_postgres_entries(self._dsn)) as entries:
            for entry in entries:
                try:
                    yield _parse_stored(entry.raw)
                except _Malformed as exc:
                    seq = None if entry.columns is None else entry.columns.get("seq")
                    raise AuditTampered(
                        f"audit record seq {seq} in {self._where}: the stored record {exc}",
                        reason="AuditMalformed",
                    ) from None


def _postgres_entries(dsn: str, connect_timeout: int = 10) -> Generator[_Entry, None, None]:
    """Rows in seq order from one consistent snapshot."""
    import psycopg

    where = _redact_dsn(dsn)
    password = (_dsn_parts(dsn) or {}).get("password", "")

    def unavailable(what: str, exc: BaseException) -> AuditUnavailable:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if password:
            text = text.replace(password, "***")
        return AuditUnavailable(f"{what} ({where}): {text}")

    extra: dict[str, Any] = {}
    if "connect_timeout" not in (_dsn_parts(dsn) or {}):
        extra["connect_timeout"] = connect_timeout
    try:
        conn = psycopg.connect(dsn, autocommit=False, **extra)
    except psycopg.Error as exc:
        raise unavailable("cannot connect to the audit database", exc) from None
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        exists = conn.execute("SELECT to_regclass('wingman_audit') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            raise AuditUnavailable(
                f"there is no wingman_audit table in {where}; check the database name"
            )
        with conn.cursor(name="wingman_audit_verify") as cur:
            cur.itersize = 2000
            cur.execute(
                "SELECT seq, time, event, actor, subject, data, prev, hash, record "
                "FROM wingman_audit ORDER BY seq"
            )
            for seq, time, event, actor, subject, data, prev, digest, text in cur:
                yield _Entry(
                    raw=str(text).encode("utf-8"),
                    complete=True,
                    line=None,
                    columns={
                        "seq": seq, "time": time, "event": event, "actor": actor,
                        "subject": subject, "data": data, "prev": prev, "hash": digest,
                    },
                )
    except psycopg.Error as exc:
        raise unavailable("cannot read the audit table", exc) from None
    finally:
        with contextlib.suppress(Exception):
            conn.close()


# --------------------------------------------------------------------------- targets & CLI


def _parse_target(target: str) -> tuple[str, str]:
    """``("file", path)`` or ``("postgres", dsn)``; ``ConfigError`` for anything else."""
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(
            "audit target is empty; set a file path, file:///path or a postgresql:// DSN"
        )
    text = target.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("postgresql", "postgres"):
        params = _dsn_parts(text)
        ports = [] if params is None else params.get("port", "").split(",")
        if params is None or not all(p.isdigit() or p == "" for p in ports):
            raise ConfigError(
                f"audit target {_redact_dsn(text)} is not a valid PostgreSQL URL "
                "(postgresql://user@host:port/dbname)"
            )
        return "postgres", text
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"audit target {text!r} names a remote host; a file target must be local "
                "(file:///path)"
            )
        if parts.query or parts.fragment or not parts.path:
            raise ConfigError(f"audit target {text!r} must be file:///absolute/path")
        return "file", unquote(parts.path)
    if scheme:
        raise ConfigError(
            f"audit target scheme {scheme!r} is not supported; use a file path, file:///path "
            "or a postgresql:// DSN"
        )
    return "file", text


def open_sink(target: str, *, clock: _Clock | None = None) -> AuditSink:
    """A sink for a path, ``file:///path`` or a ``postgresql://`` / ``postgres://`` DSN."""
    kind, where = _parse_target(target)
    if kind == "postgres":
        return PostgresSink(where, clock=clock)
    return FileSink(where, clock=clock)


def verify(
    target: str,
    *,
    anchor: AuditAnchor | None = None,
    expected_head: str | None = None,
    expected_count: int | None = None,
) -> VerifyReport:
    """Verify the whole chain at ``target`` and report the first problem.

    ``anchor``: a (seq, hash) recorded earlier; the record at that seq must have that hash.
    ``expected_head``: a head hash recorded earlier; some record must have it (the log may
    have grown since). ``expected_count``: the log must hold at least this many records.
    Without one of them, removal of the tail is undetectable. Raises ``AuditUnavailable``
    when the target cannot be read and ``ConfigError`` for a bad target.
    """
    kind, where = _parse_target(target)
    entries = _postgres_entries(where) if kind == "postgres" else _file_entries(Path(where))
    with contextlib.closing(entries):
        return _verify_entries(
            entries, anchor=anchor, expected_head=expected_head, expected_count=expected_count
        )


def verify_main(
    target: str,
    *,
    expected_head: str | None = None,
    anchor: AuditAnchor | None = None,
    out: TextIO | None = None,
) -> int:
    """``wingman audit verify``: print one line; 0 verified, 1 tampered, 2 unreadable."""
    stream = out if out is not None else sys.stdout
    try:
        report = verify(target, anchor=anchor, expected_head=expected_head)
    except (AuditUnavailable, ConfigError) as exc:
        print(f"UNREADABLE: {exc.message}", file=stream)
        return 2
    print(report.summary(), file=stream)
    return 0 if report.ok else 1


"""Verifying a stored chain: every edit, deletion, insertion, reordering and truncation located.

Works on a stream of raw stored lines (``_Entry``) from any sink, so the file and PostgreSQL
verifiers share it. Signed checkpoints (``wingman.audit.checkpoints``) act as anchors: the
record at a checkpoint's ``seq`` must have its hash, and the log must reach the newest one. A
verification can resume after a point verified earlier (``Resume``): it then reads only the
records from that point on, and the record at that point must still be the one verified.
"""

from __future__ import annotations

import contextlib
import decimal
import enum
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wingman.audit.checkpoints import Checkpoint, CheckpointIndex
from wingman.audit.records import (
    GENESIS_HASH,
    AuditAnchor,
    AuditRecord,
    _lenient_seq,
    _loads,
    _Malformed,
    _normalise_hash,
    _parse_stored,
)
from wingman.errors import AuditTampered, ConfigError

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
class Resume:
    """A record verified earlier, and where it is stored: a later ``verify`` starts there."""

    seq: int
    hash: str
    prev: str
    """The record's ``prev``: the hash of the record before it."""
    offset: int
    """File: the byte offset of the record's line. PostgreSQL: its ``seq``."""
    line: int | None = None
    """File: the record's 1-based line number."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of ``verify``: ``records`` is how many records verified before any problem."""

    records: int
    head: str
    """Hash of the last verified record (``GENESIS_HASH`` for an empty log)."""
    head_seq: int | None
    problem: AuditProblem | None = None
    checkpoint: Checkpoint | None = None
    """The newest signed checkpoint the records verified against (the last verified point)."""
    checkpoints: int = 0
    """How many signed checkpoints were given."""
    resume: Resume | None = None
    """The last verified record and where it is stored (``None`` for an empty log)."""

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def anchor(self) -> AuditAnchor | None:
        """The verified head, to record elsewhere; ``None`` for an empty log."""
        return None if self.head_seq is None else AuditAnchor(self.head_seq, self.head)

    def summary(self) -> str:
        """One human line: ``OK: …`` or ``TAMPERED at record N (line L): Kind — …``, and with
        checkpoints, the last verified point."""
        if self.problem is None:
            text = f"OK: {self.records} records, head sha256:{self.head}"
            if self.checkpoints:
                text += f"; {self._checkpoint_note()}"
            return text
        p = self.problem
        where = f"line {p.line}" if p.line is not None else f"seq {p.seq}"
        if p.line is None and p.seq is None:
            where = "end of log"
        text = f"TAMPERED at record {p.position} ({where}): {p.kind} — {p.message}"
        if self.checkpoints:
            text += f"; {self._checkpoint_note()}"
        return text

    def _checkpoint_note(self) -> str:
        cp = self.checkpoint
        if cp is None:
            return (f"none of the {self.checkpoints} signed checkpoints verified (last verified "
                    "point: none)")
        note = f"last verified point: signed checkpoint {cp.describe()}"
        if self.problem is None and self.head_seq is not None and self.head_seq > cp.seq:
            after = self.head_seq - cp.seq
            note += (f"; the {after} newer record{'s are' if after != 1 else ' is'} not "
                     "covered by a checkpoint yet")
        return note

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
    """Pre-detected malformation (e.g. an over-long line), or the problem ``kind`` names."""
    kind: ProblemKind | None = None
    """What ``error`` is when it is no malformation: ``Inserted`` for a PostgreSQL row outside
    the chain's ``seq`` range."""
    offset: int | None = None
    """File: the byte offset where the line starts."""


def verify_lines(
    lines: Iterable[bytes],
    *,
    anchor: AuditAnchor | None = None,
    expected_head: str | None = None,
    expected_count: int | None = None,
    checkpoints: Sequence[Checkpoint] | CheckpointIndex = (),
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
        entries, anchor=anchor, expected_head=expected_head, expected_count=expected_count,
        checkpoints=checkpoints,
    )


def _verify_entries(
    entries: Iterator[_Entry],
    *,
    anchor: AuditAnchor | None,
    expected_head: str | None,
    expected_count: int | None,
    checkpoints: Sequence[Checkpoint] | CheckpointIndex = (),
    resume: Resume | None = None,
) -> VerifyReport:
    """Verify ``entries``; with ``resume``, they start at the record ``resume`` names."""
    head_wanted = None if expected_head is None else _normalise_hash(expected_head, "expected head")
    if expected_count is not None and expected_count < 0:
        raise ConfigError("expected_count must be a non-negative integer")
    checker = _Checker(anchor=anchor, head_wanted=head_wanted, checkpoints=checkpoints,
                       resume=resume)
    start = 0 if resume is None else resume.seq
    for position, entry in enumerate(entries, start=start):
        problem = checker.check(position, entry, entries)
        if problem is not None:
            return problem
    return checker.finish(expected_count)


class _Checker:
    """Walks the chain once; ``check`` returns a failing report at the first problem."""

    def __init__(self, *, anchor: AuditAnchor | None, head_wanted: str | None,
                 checkpoints: Sequence[Checkpoint] | CheckpointIndex = (),
                 resume: Resume | None = None) -> None:
        self.anchor = anchor
        self.head_wanted = head_wanted
        self.head_found = False
        self.count = 0
        self.last = GENESIS_HASH  # hash of the last verified record
        self.before_last = GENESIS_HASH
        self.previous: AuditRecord | None = None
        self.checkpoints: Mapping[int, Checkpoint]
        if isinstance(checkpoints, CheckpointIndex):  # a long list, packed
            self.checkpoints = checkpoints
            self.newest = checkpoints.newest()
        else:
            self.checkpoints = {c.seq: c for c in checkpoints}
            self.newest = max(checkpoints, key=lambda c: c.seq, default=None)
        self.given = len(checkpoints)
        self.verified: Checkpoint | None = None
        self.pinned = resume
        self.resume: Resume | None = None
        if resume is not None:
            self.count = resume.seq
            self.last = self.before_last = resume.prev
            if isinstance(checkpoints, CheckpointIndex):
                self.verified = checkpoints.before(resume.seq)
            for checkpoint in () if isinstance(checkpoints, CheckpointIndex) else checkpoints:
                # those before the resume point verified earlier
                if checkpoint.seq < resume.seq and (
                        self.verified is None or checkpoint.seq > self.verified.seq):
                    self.verified = checkpoint

    def _report(self, **fields: Any) -> VerifyReport:
        return VerifyReport(checkpoint=self.verified, checkpoints=self.given,
                            resume=self.resume, **fields)

    def _fail(
        self, kind: ProblemKind, entry: _Entry | None, seq: int | None, msg: str, back: int = 0
    ) -> VerifyReport:
        at = self.count - back
        line = None if entry is None or entry.line is None else entry.line - back
        return self._report(
            records=at,
            head=self.before_last if back else self.last,
            head_seq=at - 1 if at > 0 else None,
            problem=AuditProblem(kind, at, line, seq, msg),
        )

    def check(self, position: int, entry: _Entry, rest: Iterator[_Entry]) -> VerifyReport | None:
        if self.pinned is not None and not (entry.error is not None
                                            and entry.kind is ProblemKind.INSERTED):
            # (a row outside the chain, met before the resume point: reported as itself)
            return self._check_pinned(entry)
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
            seq = None if entry.columns is None else entry.columns.get("seq")
            return self._fail(
                entry.kind or ProblemKind.MALFORMED, entry, seq, f"the stored record {entry.error}"
            )
        try:
            record = _parse_stored(entry.raw)
        except _Malformed as exc:
            seq = _lenient_seq(entry.raw)
            if seq is None and entry.columns is not None:
                seq = entry.columns.get("seq")
            return self._fail(ProblemKind.MALFORMED, entry, seq, f"the stored record {exc}")
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
            if record.prev == self.last:
                # It links to its predecessor, so nothing between them is missing: its seq
                # was changed and its hash recomputed.
                return self._fail(
                    ProblemKind.EDITED,
                    entry,
                    record.seq,
                    f"seq {record.seq} follows seq {position - 1} and links to it (prev is "
                    f"its hash): the record's seq was changed from {position} and its hash "
                    "recomputed",
                )
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
        checkpoint = self.checkpoints.get(record.seq)
        if checkpoint is not None and record.hash != checkpoint.hash:
            since = ("the last verified checkpoint is " + self.verified.describe()
                     if self.verified is not None else "no earlier checkpoint verified")
            return self._fail(
                ProblemKind.REWRITTEN,
                entry,
                record.seq,
                f"the signed checkpoint {checkpoint.describe()} recorded sha256:"
                f"{checkpoint.hash}, the log has sha256:{record.hash}: the chain was rewritten "
                f"at or before seq {record.seq} ({since})",
            )
        self._accept(record, entry)
        return None

    def _check_pinned(self, entry: _Entry) -> VerifyReport | None:
        """The first entry of a resumed verification must be the record verified before."""
        pinned = self.pinned
        assert pinned is not None
        self.pinned = None
        found = "an unreadable or partial line"
        if entry.complete and entry.error is None:
            try:
                record = _parse_stored(entry.raw)
            except _Malformed:
                record = None
            if record is not None:
                found = f"seq {record.seq} (sha256:{record.hash})"
                if (record.seq == pinned.seq and record.hash == pinned.hash
                        and record.prev == pinned.prev and record.to_bytes() == entry.raw
                        and record.compute_hash() == record.hash):
                    self._accept(record, entry)
                    return None
        return self._fail(
            ProblemKind.REWRITTEN,
            entry,
            pinned.seq,
            f"where seq {pinned.seq} (sha256:{pinned.hash}) was verified before, the log now "
            f"holds {found}: it was rewritten since it was last verified",
        )

    def _accept(self, record: AuditRecord, entry: _Entry) -> None:
        if record.hash == self.head_wanted:
            self.head_found = True
        checkpoint = self.checkpoints.get(record.seq)
        if checkpoint is not None:
            self.verified = checkpoint
        self.before_last, self.last = self.last, record.hash
        self.previous = record
        self.count += 1
        self.resume = Resume(record.seq, record.hash, record.prev,
                             record.seq if entry.offset is None else entry.offset, entry.line)

    def finish(self, expected_count: int | None) -> VerifyReport:
        count = self.count
        if self.pinned is not None:
            pinned = self.pinned
            return self._fail(
                ProblemKind.TRUNCATED,
                None,
                None,
                f"the record verified earlier as seq {pinned.seq} (sha256:{pinned.hash}) is "
                "gone: records were removed from the tail",
            )
        newest = self.newest
        if newest is not None and count <= newest.seq:
            return self._fail(
                ProblemKind.TRUNCATED,
                None,
                None,
                f"the log ends after {count} records but the signed checkpoint "
                f"{newest.describe()} covers seq {newest.seq}: records were removed from the "
                "tail (or the log was replaced)",
            )
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
        return self._report(records=count, head=self.last, head_seq=count - 1 if count else None)


def _next_links_to(entries: Iterator[_Entry], digest: str) -> bool:
    """Whether the next entry's ``prev`` is ``digest`` (or there is no next entry)."""
    nxt = next(entries, None)
    if nxt is None:
        return True
    with contextlib.suppress(_Malformed):
        obj = _loads(nxt.raw)
        return isinstance(obj, dict) and obj.get("prev") == digest
    return False


JUMP_WINDOW = 4096
"""How many later records a jump in ``seq`` is classified from (memory stays bounded)."""
JUMP_WINDOW_BYTES = 8 * 1024 * 1024
"""How many bytes of later records it reads at most (time stays bounded: lines of the largest
size, packed with brackets, cost tens of milliseconds each to parse)."""


def _window(rest: Iterator[_Entry]) -> Iterator[_Entry]:
    """The next ``JUMP_WINDOW - 1`` entries, ending early past ``JUMP_WINDOW_BYTES``."""
    budget = JUMP_WINDOW_BYTES
    for entry in itertools.islice(rest, JUMP_WINDOW - 1):
        yield entry
        budget -= len(entry.raw) + 1
        if budget <= 0:
            return


def _classify_jump(
    expected: int, found: int, rest: Iterator[_Entry]
) -> tuple[ProblemKind, str]:
    """A seq higher than expected: missing records, a reordering or an interloper.

    Looks at most ``JUMP_WINDOW`` records (``JUMP_WINDOW_BYTES``) ahead and never enumerates
    the gap, so a record whose ``seq`` was set to a huge number is classified in bounded time
    and memory.
    """
    later: list[int | None] = [found]
    later += (_lenient_seq(e.raw) for e in _window(rest))
    seqs = [s for s in later if s is not None]
    present = set(seqs)
    if expected not in present:
        first = expected
        last = found - 1
        while last in present and last > first:
            last -= 1
        inside = sum(1 for s in present if expected <= s < found)
        count = (found - expected) - inside
        span = f"seq {first}" if count == 1 else f"seqs {first}..{last}"
        return (
            ProblemKind.DELETED,
            f"found seq {found} where seq {expected} was expected: {span} "
            f"({count} record{'s' if count != 1 else ''}) deleted (gap)",
        )
    where = later.index(expected)
    if len(present) == len(seqs) and min(seqs) == expected and max(seqs) == expected + len(
        seqs
    ) - 1:
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
        if not _same(columns.get(name), getattr(record, name)):
            return name
    if columns.get("time") != record.at:
        return "time"
    return None


def _same(column: Any, value: Any) -> bool:
    """Whether a column read back from PostgreSQL holds the record's JSON ``value``: as JSON
    compares, not as Python does (``True == 1``), except that jsonb writes a float the way
    it reads its decimal text (``1e300`` comes back as an integer of 301 digits). Nesting is
    bounded by the parser's depth guard."""
    if isinstance(column, bool) or isinstance(value, bool):
        return type(column) is type(value) and column == value
    if isinstance(column, int | float) and isinstance(value, int | float):
        if isinstance(column, float) == isinstance(value, float):
            return column == value
        number = value if isinstance(value, float) else column
        whole = column if isinstance(value, float) else value
        # exactly the decimal the record's canonical JSON wrote for the float
        return decimal.Decimal(repr(number)) == whole
    if isinstance(column, dict) and isinstance(value, dict):
        return column.keys() == value.keys() and all(
            _same(item, value[key]) for key, item in column.items())
    if isinstance(column, list) and isinstance(value, list):
        return len(column) == len(value) and all(map(_same, column, value))
    return type(column) is type(value) and bool(column == value)

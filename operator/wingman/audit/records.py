"""Audit records and the hash chain: the record format, canonical JSON, the secret guard.

**Record.** ``seq`` (0-based, contiguous), ``time`` (RFC 3339 UTC, microseconds, ``Z``),
``event`` (CamelCase), ``actor``, ``subject`` (object), ``data`` (object), ``prev`` (the previous
record's ``hash``; the genesis record has 64 zeros) and ``hash``: the SHA-256 hex digest of the
canonical JSON of the seven other fields. Canonical JSON is
``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)`` encoded as UTF-8; NaN and infinities are refused. A stored record is the
canonical JSON of all eight fields, and the verifier demands those exact bytes, so any change
of a stored byte is detected (not only changes that alter the parsed value).

**Secrets.** Callers never put a token, a key or a Secret's data into a record; they put
``fingerprint(value)`` (``sha256:<hex>``) instead. As a defence in depth every record's content
goes through one check (in ``make_record``, and in a sink's ``screen`` then ``chain``), which
refuses any string shaped like a JWT (a run of base64url segments whose first starts with ``eyJ``,
followed by at least two more segments) anywhere in the record. It then raises
``AuditUnavailable`` with ``reason="AuditRecordRejected"``: nothing of that record was written
(in a group, ``AuditSink.append_all``, the others are, except the entries marked to follow it,
``NewRecord.follows``), the chain is unchanged by it, callers
fail closed exactly as for a sink outage, and the message names the field (never its value,
and no message that would repeat a token-shaped text). The same error and reason cover every
other invalid record (not JSON-able, naive ``now``, too big).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from wingman.errors import AuditUnavailable, ConfigError
from wingman.logs import looks_like_token

GENESIS_HASH = "0" * 64
"""The ``prev`` of the first record (seq 0)."""

MAX_RECORD_BYTES = 256 * 1024
"""Largest stored record. Audit records describe transitions; bulk output belongs elsewhere."""

REJECTED_REASON = "AuditRecordRejected"
#: The most of a refused record's path or value a refusal repeats.
_MAX_SAID = 500
_FIELDS = ("seq", "time", "event", "actor", "subject", "data", "prev", "hash")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_EVENT = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_MAX_DEPTH = 32
# A stored record nests at most _MAX_DEPTH levels inside subject/data, plus the record itself.
_MAX_STORED_DEPTH = _MAX_DEPTH + 4
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
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
        if not sep or not (seq_text.isascii() and seq_text.isdigit()):
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
    #: the stored form, set only by ``make_record``/``chain`` (made with the hash, so a sink
    #: does not serialise the record again) and by the parser of stored records (the canonical
    #: form of what it read); never an argument, so a copy with other fields
    #: (``dataclasses.replace``) serialises its own
    stored: bytes = field(default=b"", init=False, compare=False, repr=False)

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
        return self.stored or canonical_json({**self.body(), "hash": self.hash})

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
    _check_link(seq, prev)
    return _link(seq, prev, _checked(event, actor, subject, data), _format_time(now))


def _check_link(seq: int, prev: str) -> None:
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise _rejected(f"seq must be a non-negative integer, got {seq!r}")
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        raise _rejected("prev must be 64 lowercase hex digits")


@dataclass(frozen=True, slots=True)
class _Content:
    """A record's content, checked, normalised and serialised (``_checked``): what ``_link``
    chains. A copy: a caller's mappings changed afterwards change nothing here."""

    event: str
    actor: str
    subject: dict[str, Any]
    data: dict[str, Any]
    #: ``{"actor":..,"data":..,"event":..,`` : the members before ``hash`` in the stored form
    head: bytes
    #: the canonical JSON of ``subject``
    subject_json: bytes


def _checked(event: str, actor: str, subject: Mapping[str, Any],
             data: Mapping[str, Any] | None) -> _Content:
    """The content of a record, or its refusal (``AuditRecordRejected``); pure."""
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
    budget = _Budget()
    _check_string(actor, "actor", budget)
    subject_copy: dict[str, Any] = _normalise(subject, "subject", 0, budget)
    data_copy: dict[str, Any] = _normalise(data, "data", 0, budget)
    head = (b'{"actor":' + canonical_json(actor) + b',"data":' + canonical_json(data_copy)
            + b',"event":' + canonical_json(event) + b",")
    return _Content(event, actor, subject_copy, data_copy, head, canonical_json(subject_copy))


def _link(seq: int, prev: str, content: _Content, time: str) -> AuditRecord:
    """The record of ``content`` at ``seq`` after ``prev``, hashed. Each field is serialised
    once (``_checked``): canonical JSON of an object with plain keys is its ``"key":value``
    members in key order, so the hashed body and the stored form (the same with ``hash``) are
    put together from the same parts."""
    tail = _tail(seq, prev, content, time)
    _check_size(content, tail)
    digest = hashlib.sha256(content.head + tail).hexdigest()
    stored = content.head + b'"hash":"' + digest.encode() + b'",' + tail
    record = AuditRecord(seq=seq, time=time, event=content.event, actor=content.actor,
                         subject=content.subject, data=content.data, prev=prev, hash=digest)
    object.__setattr__(record, "stored", stored)
    return record


def _tail(seq: int, prev: str, content: _Content, time: str) -> bytes:
    """The stored form's members after ``hash``."""
    return (b'"prev":' + canonical_json(prev) + b',"seq":' + canonical_json(seq)
            + b',"subject":' + content.subject_json + b',"time":' + canonical_json(time) + b"}")


#: What ``"hash":"<64 hex digits>",`` adds to the hashed body in the stored form.
_HASH_MEMBER_BYTES = len(b'"hash":"",') + 64


def _check_size(content: _Content, tail: bytes) -> None:
    """Refuse a record whose stored form would exceed ``MAX_RECORD_BYTES`` (no hash needed:
    the digest's length is fixed)."""
    if len(content.head) + _HASH_MEMBER_BYTES + len(tail) > MAX_RECORD_BYTES:
        raise _rejected(
            f"the record is larger than {MAX_RECORD_BYTES} bytes; audit a summary or a "
            "fingerprint of bulky values instead"
        )


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A record to append (``AuditSink.append_all``): what ``append`` takes as arguments."""

    event: str
    actor: str
    subject: Mapping[str, Any]
    data: Mapping[str, Any] | None = None
    now: dt.datetime | None = None
    #: Written only if the entry just before it in the same ``append_all`` was: a caller's
    #: records that stand for consecutive steps (a unit), where a later one without an earlier
    #: one would tell a wrong story. When an entry is refused, every ``follows`` entry right
    #: after it is refused too, as if the caller had appended them one by one and stopped at
    #: the refusal. (Appended with its unit, in order, in one write.)
    follows: bool = False


def _unit_refused() -> AuditUnavailable:
    return _rejected("the record before it in its unit (the same append's consecutive "
                     "records) was refused")


@dataclass(frozen=True, slots=True)
class _Screened:
    """An entry ``screen`` let through: its content checked once, for ``chain``."""

    content: _Content
    time: str | None  # the entry's own ``now``, formatted; None: the sink's clock at chaining


def _screened(entry: NewRecord) -> _Screened:
    """``entry``'s content checked, and its record's size at the start of a chain (the
    shortest ``seq``: a record that fits there may still not fit at its place, where ``chain``
    refuses it)."""
    content = _checked(entry.event, entry.actor, entry.subject, entry.data)
    time = None if entry.now is None else _format_time(entry.now)
    _check_size(content, _tail(0, GENESIS_HASH, content, time or _format_time(_utcnow())))
    return _Screened(content, time)


def screen(entries: Sequence[NewRecord]
           ) -> tuple[list[AuditUnavailable | None], list[NewRecord]]:
    """Per entry its refusal (or None), and the entries not refused: what a sink checks before
    it touches the store (pure). A ``follows`` entry right after a refused one is refused too.
    The entries returned carry their checked content, so ``chain`` does not check it again."""
    checked: list[AuditUnavailable | None] = []
    valid: list[NewRecord] = []
    refused = False  # the entry before this one
    for entry in entries:
        if refused and entry.follows:
            checked.append(_unit_refused())
            continue
        try:
            screened = _screened(entry)
        except AuditUnavailable as exc:
            checked.append(exc)
            refused = True
            continue
        refused = False
        checked.append(None)
        valid.append(_Passed(entry, screened))
    return checked, valid


class _Passed(NewRecord):
    """A ``NewRecord`` as ``screen`` let it through (it keeps the checked content; a copy that
    lost it is checked again by ``chain``)."""

    __slots__ = ("screened",)
    screened: _Screened

    def __init__(self, entry: NewRecord, screened: _Screened) -> None:
        super().__init__(entry.event, entry.actor, entry.subject, entry.data, entry.now,
                         entry.follows)
        object.__setattr__(self, "screened", screened)


def chain(seq: int, prev: str, entries: Sequence[NewRecord], clock: _Clock
          ) -> list[AuditRecord | AuditUnavailable]:
    """The records of ``entries``, in order, following ``prev`` at ``seq``: per entry its record,
    or the refusal of its content (``AuditRecordRejected``; it takes no place in the chain, so
    one refused entry fails no other, but the ``follows`` entries right after it); pure but for
    ``clock`` (the time of an entry
    without ``now``). The content of entries from ``screen`` is not checked again; their size
    is, at their place."""
    out: list[AuditRecord | AuditUnavailable] = []
    try:
        _check_link(seq, prev)
    except AuditUnavailable as exc:
        return [AuditUnavailable(exc.message, reason=exc.reason) for _ in entries]
    refused = False  # the entry before this one
    for entry in entries:
        if refused and entry.follows:
            out.append(_unit_refused())
            continue
        try:
            screened = getattr(entry, "screened", None) if isinstance(entry, _Passed) else None
            if screened is None:
                screened = _screened(entry)
            record = _link(seq, prev, screened.content, screened.time or _format_time(clock()))
        except AuditUnavailable as exc:
            out.append(exc)
            refused = True
            continue
        refused = False
        out.append(record)
        seq, prev = seq + 1, record.hash
    return out


def records_of(results: Sequence[AuditRecord | AuditUnavailable]) -> list[AuditRecord]:
    """The records among ``chain``'s results (what goes to the store)."""
    return [r for r in results if isinstance(r, AuditRecord)]


def merge(checked: Sequence[AuditUnavailable | None],
          chained: Sequence[AuditRecord | AuditUnavailable]
          ) -> list[AuditRecord | AuditUnavailable]:
    """Per entry: its refusal before the sink was touched, or what ``chain`` made of it
    (``chained`` holds the results of the entries not refused before, in order)."""
    results = iter(chained)
    return [refused if refused is not None else next(results) for refused in checked]


def one(results: Sequence[AuditRecord | AuditUnavailable]) -> AuditRecord:
    """The record of a one-entry ``append_all`` (its refusal raised)."""
    (result,) = results
    if isinstance(result, AuditUnavailable):
        raise result
    return result


def _rejected(what: str) -> AuditUnavailable:
    if looks_like_token(what):  # a key or an event name that is a token: never repeat it
        what = ("a token-shaped text where the record's event, a key or a field name belongs "
                "(not shown)")
    elif len(what) > _MAX_SAID:  # a path through long keys, a long event name: not echoed whole
        what = f"{what[:_MAX_SAID - 200]} ... (cut) ... {what[-150:]}"
    return AuditUnavailable(
        f"audit record refused, nothing was written: {what}. This is a bug in the caller; "
        "retrying cannot help.",
        reason=REJECTED_REASON,
    )


class _Budget:
    """What the record may still hold (``MAX_RECORD_BYTES`` less at least what each item read
    so far stores: a string's characters and quotes, a key's and its colon, a number or null a
    byte, a container its brackets), so that a record too large is refused at the first item
    past the limit, not after every string was read for tokens."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_RECORD_BYTES

    def spend(self, size: int, path: str) -> None:
        self.left -= size
        if self.left < 0:  # too large whatever the rest holds
            raise _rejected(
                f"the record is larger than {MAX_RECORD_BYTES} bytes (up to {_said(path)}); "
                "audit a summary or a fingerprint of bulky values instead"
            )


def _said(path: str) -> str:
    """``path`` as a refusal shows it: its head and tail when it is long (keys that are long
    names), so that the message keeps its reason; not at all when it spells a token across
    its keys (a cut could show most of one that neither half reads as)."""
    if len(path) <= 200:
        return path  # whole: ``_rejected`` reads it with the message
    if looks_like_token(path):
        return "(a path through token-shaped keys, not shown)"
    return f"{path[:120]} ... {path[-60:]}"


def _normalise(value: Any, path: str, depth: int, budget: _Budget) -> Any:
    """Plain JSON data equal to ``value``; refuses what canonical JSON cannot represent
    exactly, JWT-shaped strings, and items that together exceed ``budget``. A subclass of
    ``str`` (a ``str`` enum) is stored as the text that was checked, never its ``str()``."""
    if depth > _MAX_DEPTH:
        raise _rejected(f"{_said(path)} is nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        budget.spend(1, path)
        return value
    if isinstance(value, int):
        if abs(value) >= 2**63:
            raise _rejected(f"{_said(path)} is an integer outside the 64-bit range")
        budget.spend(1, path)
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _rejected(f"{_said(path)} is {value!r}; JSON has no NaN or infinity")
        budget.spend(1, path)
        return float(value)
    if isinstance(value, str):
        text = str.__str__(value)  # what is stored is what is read (a subclass may override)
        budget.spend(2, path)  # its quotes
        _check_string(text, path, budget)
        return text
    if isinstance(value, Mapping):
        budget.spend(2, path)
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _rejected(
                    f"{_said(path)} has a non-string key of type {type(key).__name__}")
            text = str.__str__(key)
            budget.spend(3, path)  # its quotes and colon
            _check_string(text, f"a key of {path}", budget)
            out[text] = _normalise(item, f"{path}.{text}", depth + 1, budget)
        return out
    if isinstance(value, list | tuple):
        budget.spend(2, path)
        return [_normalise(item, f"{path}[{i}]", depth + 1, budget)
                for i, item in enumerate(value)]
    raise _rejected(f"{_said(path)} has type {type(value).__name__}, which is not JSON")


def _check_string(value: str, path: str, budget: _Budget) -> None:
    if len(value) > MAX_RECORD_BYTES:  # refused for its size anyway: not read for tokens first
        raise _rejected(
            f"{_said(path)} is longer than a whole record may be ({MAX_RECORD_BYTES} bytes); "
            "audit a summary or a fingerprint of bulky values instead"
        )
    budget.spend(len(value), path)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _rejected(f"{_said(path)} is not valid Unicode (a lone surrogate)") from None
    if looks_like_token(value):
        raise _rejected(
            f"{_said(path)} looks like a JWT (eyJ<seg>.<seg>., or base64 of text holding one); "
            "tokens and keys never go into the audit trail: record "
            f"wingman.audit.fingerprint(token) instead (here {fingerprint(value)})"
        )


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


def _nesting_depth(raw: bytes) -> int:
    """How deeply JSON arrays/objects nest in ``raw`` (strings skipped), counted up to one
    past ``_MAX_STORED_DEPTH``; never recurses.

    Cheap when the text has few brackets (the usual record). Otherwise the work is a few
    passes of C over the text, at most ``_MAX_STORED_DEPTH + 1``, whatever the text holds:
    the escapes ``\\\\`` and ``\\"`` are dropped (JSON reads them pairwise from the left,
    as ``bytes.replace`` does), the text between quotes goes (the strings), the brackets that
    remain are kept, ``{}`` as ``[]``, and each pass removes the innermost pairs: one level.
    Text that is not JSON may be counted short; ``json.loads`` refuses it (and it raises
    ``RecursionError`` rather than recurse without bound).
    """
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets <= _MAX_STORED_DEPTH:
        return brackets
    outside = b"".join(raw.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    structure = outside.translate(_AS_BRACKETS, _NOT_BRACKETS)
    for depth in range(_MAX_STORED_DEPTH + 1):
        if not structure:
            return depth
        inner = structure.replace(b"[]", b"")
        if len(inner) == len(structure):  # unbalanced: not JSON
            return depth
        structure = inner
    return _MAX_STORED_DEPTH + 1


def _loads(raw: bytes) -> Any:
    """``json.loads`` of stored bytes that never recurses deeply (``_Malformed`` otherwise)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Malformed(f"is not UTF-8 (byte {exc.start})") from None
    if _nesting_depth(raw) > _MAX_STORED_DEPTH:
        raise _Malformed(
            f"nests arrays/objects more than {_MAX_STORED_DEPTH} levels deep, which no record "
            "does"
        )
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        # json ends some messages with "at" ("Invalid control character at")
        raise _Malformed(f"is not JSON ({exc.msg.removesuffix(' at')} at column "
                         f"{exc.colno})") from None
    except ValueError as exc:  # an integer with more digits than Python converts
        if "digits" in str(exc):
            raise _Malformed(f"holds an integer of more than {sys.get_int_max_str_digits()} "
                             "digits, which no record has") from None
        raise _Malformed(f"is not a record ({str(exc)[:120]})") from None
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise _Malformed("nests too deeply to parse") from None


def _parse_stored(raw: bytes) -> AuditRecord:
    """Parse a stored record strictly; ``_Malformed`` says what is wrong."""
    obj = _loads(raw)
    if not isinstance(obj, dict):
        raise _Malformed("is not a JSON object")
    if set(obj) != set(_FIELDS):
        missing = sorted(set(_FIELDS) - set(obj))
        extra = sorted(set(obj) - set(_FIELDS))
        raise _Malformed(f"has the wrong fields (missing {missing}, unexpected "
                         f"{_names(extra)})")
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
    try:
        _parse_time(obj["time"])
    except ValueError:
        raise _Malformed(f"has a time, {obj['time']}, that is not a real date and time") from None
    record = AuditRecord(**obj)
    # json.loads reads what canonical JSON never writes (1e400 as infinity, an escaped lone
    # surrogate): such a record has no stored form, so it cannot be the one that was written.
    try:
        stored = canonical_json(obj)
    except UnicodeEncodeError:  # a ValueError too: caught first
        raise _Malformed("holds a lone surrogate escape (such as \\ud800), which is not "
                         "Unicode and which canonical JSON never writes") from None
    except ValueError:
        raise _Malformed("holds a number too large for a float (such as 1e400), which "
                         "canonical JSON never writes") from None
    object.__setattr__(record, "stored", stored)
    return record


def _names(names: Sequence[str], most: int = 5, width: int = 40) -> str:
    """A few of ``names`` for a message: a hostile record's field names are bounded and never
    repeat a token-shaped text."""
    shown = [repr(n if len(n) <= width else n[:width] + "…") for n in names[:most]]
    shown = ["(a token-shaped name, not shown)" if looks_like_token(n) else n for n in shown]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return "[" + ", ".join(shown) + more + "]"


def _lenient_seq(raw: bytes) -> int | None:
    with contextlib.suppress(_Malformed):
        obj = _loads(raw)
        if isinstance(obj, dict):
            seq = obj.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                return seq
    return None


#: The record a gateway writes just before its command starts: the trail's memory, kept
#: outside the cluster, of every command that may have run.
EXECUTING = "GatewayExecuting"
#: Its stored form's event field (canonical JSON: no spaces), which a sink looks for before
#: parsing a record.
EXECUTING_FIELD = b'"event":"' + EXECUTING.encode() + b'"'


def is_execution(record: AuditRecord, approval_uid: str, grant_uid: str) -> bool:
    """Whether ``record`` says that a command of the request ``approval_uid`` (its data's
    ``approval_uid``) or of the grant ``grant_uid`` (its subject: records of earlier releases
    name no request) may have run."""
    if record.event != EXECUTING:
        return False
    return bool(approval_uid and record.data.get("approval_uid") == approval_uid) or bool(
        grant_uid and record.subject.get("uid") == grant_uid)


def require_uids(approval_uid: str, grant_uid: str) -> None:
    """A look-up of what ran needs a request's or a grant's UID: with neither it would find
    nothing, and say nothing ran (fail closed instead)."""
    if not approval_uid and not grant_uid:
        raise AuditUnavailable("cannot look up what ran without the request's or the grant's "
                               "UID")


def executions_among(candidates: Iterable[tuple[str, bytes]], approval_uid: str,
                     grant_uid: str) -> list[AuditRecord]:
    """The records among ``candidates`` (where each was read, its stored bytes) that are
    executions of the request or the grant (:func:`is_execution`); ``AuditUnavailable`` on
    one that cannot be parsed, which may be one of them."""
    found: list[AuditRecord] = []
    for where, raw in candidates:
        try:
            record = _parse_stored(raw)
        except _Malformed as exc:
            raise AuditUnavailable(
                f"{where}, which may say that this command ran already, {exc}; run 'wingman "
                "audit verify'") from None
        if is_execution(record, approval_uid, grant_uid):
            found.append(record)
    return found


class AuditSink(Protocol):
    """Where records go. ``append`` and ``append_all`` return only once the records are
    durable."""

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

    def append_all(self, entries: Sequence[NewRecord]) -> list[AuditRecord | AuditUnavailable]:
        """Durably append ``entries`` in order with one commit (one write and fsync, one
        transaction): a group commit of appends that arrive together. Per entry: its record,
        or the ``AuditUnavailable`` (``AuditRecordRejected``) that refused its content (the
        others are appended all the same, but the ``follows`` entries right after a refused
        one). A failure of the sink raises ``AuditUnavailable``:
        then none of them was written, unless the sink could not remove a failed write (it
        then refuses every further append)."""
        ...

    def records(self) -> Iterator[AuditRecord]:
        """Every stored record in order (``AuditTampered`` on an unreadable one)."""
        ...

    def executions(self, approval_uid: str, grant_uid: str) -> list[AuditRecord]:
        """The ``GatewayExecuting`` records of commands of the request ``approval_uid`` or of
        the grant ``grant_uid`` (:func:`is_execution`), in order: what ran, as the trail
        remembers it when the cluster no longer does (etcd restored from a backup).
        ``AuditUnavailable`` when the trail cannot be read, or a record that may be one of
        them cannot be parsed (callers fail closed)."""
        ...

    def close(self) -> None: ...

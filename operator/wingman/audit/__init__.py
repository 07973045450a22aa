"""The tamper-evident audit trail: append-only, hash-chained records, their sinks and verifier.

Owns ``records`` (the record and the chain), ``file`` and ``postgres`` (the two sinks),
``verification``, ``checkpoints`` (the format of signed checkpoints of the head), ``signing``
(signing them and checking signatures, with ``wingman.capability.keys``) and ``witness`` (the
external witness's client and a reference server); this module opens a sink or verifies one
from a target string. It imports ``wingman.errors`` and ``wingman.logs`` (the standard library
only: the shape of a token) and nothing else of Wingman, except
``signing`` and ``witness``, which use ``wingman.capability.keys`` and are imported only by who
needs them: the operator, the gateway and the CLI all use it, and it uses none of them.

The gateway and the chat service call ``open_sink(target).append(...)`` for every transition
they make, the operator queues its records and writes whatever is queued with ``append_all``
(``wingman.operator.recorder``: group commit); all of them fail closed when it raises
``AuditUnavailable``. ``wingman audit verify`` calls ``verify_main``. Sinks are blocking:
async callers run them on a thread (``asyncio.to_thread``, the operator's audit thread, or
that of its writer process, ``wingman.operator.writer``, by default).

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
``reason="AuditRecordRejected"``: nothing of that record was written (in a group, the others
are, except those marked to follow it, ``NewRecord.follows``), the chain is unchanged by it,
callers fail closed exactly as for a sink outage, and the message names the field (never its
value). The same error and reason cover every other invalid
record (not JSON-able, naive ``now``, too big).

**What the chain proves, and what it cannot.** Any edit, deletion, insertion or reordering of
stored records is detected and located by ``verify``. Whoever can rewrite the whole store can
build a consistent forgery, and removing records from the tail leaves a valid shorter chain:
only a signed checkpoint (``wingman.audit.checkpoints``, made by the operator) or an *anchor*
recorded elsewhere catches those. Operators therefore record the head (each
``append`` returns it as ``record.anchor``; the operator writes the hash of each transition's
record into the object's status (``auditHead``, ``auditRecordHash``) and the head's sequence
number into the metric ``wingman_audit_head_sequence``) and verify with ``anchor=`` /
``expected_head=``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from wingman.audit.checkpoints import Checkpoint, CheckpointIndex, parse_checkpoints
from wingman.audit.file import FileSink, _file_entries, held_lock
from wingman.audit.postgres import (
    PostgresSink,
    _dsn_parts,
    _postgres_entries,
    _redact_dsn,
    misread_userinfo,
)
from wingman.audit.records import (
    GENESIS_HASH,
    MAX_RECORD_BYTES,
    REJECTED_REASON,
    AuditAnchor,
    AuditRecord,
    AuditSink,
    NewRecord,
    _Clock,
    _loads,
    _Malformed,
    canonical_json,
    fingerprint,
    make_record,
)
from wingman.audit.verification import (
    AuditProblem,
    ProblemKind,
    Resume,
    VerifyReport,
    _verify_entries,
    verify_lines,
)
from wingman.errors import AuditUnavailable, ConfigError
from wingman.logs import looks_like_token

__all__ = [
    "GENESIS_HASH",
    "MAX_RECORD_BYTES",
    "REJECTED_REASON",
    "AuditAnchor",
    "AuditProblem",
    "AuditRecord",
    "AuditSink",
    "Checkpoint",
    "CheckpointIndex",
    "FileSink",
    "NewRecord",
    "PostgresSink",
    "ProblemKind",
    "Resume",
    "VerifyReport",
    "appends_held",
    "canonical_json",
    "fingerprint",
    "looks_like_token",
    "make_record",
    "open_sink",
    "parse_checkpoints",
    "records_about",
    "show_main",
    "unexpected",
    "verify",
    "verify_lines",
    "verify_main",
]

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
        if misread_userinfo(text):
            raise ConfigError(
                f"audit target {_redact_dsn(text)} has a '/' or an '@' before the '@' that "
                "ends its user and password, which PostgreSQL would read as the end of the "
                "password or the host: percent-encode them in the user name and password "
                "(/ as %2F, @ as %40), and in the query too"
            )
        params = _dsn_parts(text)
        ports = [] if params is None else params.get("port", "").split(",")
        if params is None or not all((p.isascii() and p.isdigit()) or p == ""
                                     for p in ports):
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
        return "file", _file_path(text, unquote(parts.path))
    if scheme:
        raise ConfigError(
            f"audit target scheme {scheme!r} is not supported; use a file path, file:///path "
            "or a postgresql:// DSN"
        )
    return "file", _file_path(text, text)


def _file_path(target: str, path: str) -> str:
    if "\x00" in path:
        raise ConfigError(f"audit target {target!r} holds a NUL byte, which no file path can; "
                          "check how the target was written")
    return path


def open_sink(target: str, *, clock: _Clock | None = None) -> AuditSink:
    """A sink for a path, ``file:///path`` or a ``postgresql://`` / ``postgres://`` DSN."""
    kind, where = _parse_target(target)
    if kind == "postgres":
        return PostgresSink(where, clock=clock)
    return FileSink(where, clock=clock)


@contextlib.contextmanager
def appends_held(target: str, seconds: float) -> Iterator[bool]:
    """While this holds, no append to ``target`` is under way in any process: for one about to
    kill another that appends there (SIGKILL can cut a write to a file short between two
    pages, and the sink then refuses every later append until the file is repaired). A file:
    its lock is taken, waiting at most ``seconds`` (False: not taken, a process holds it that
    long; the kill goes ahead). A PostgreSQL target holds nothing (a transaction whose
    process is killed is rolled back): True."""
    kind, where = _parse_target(target)
    if kind == "postgres":
        yield True
        return
    with held_lock(Path(where), seconds) as held:
        yield held


def verify(
    target: str,
    *,
    anchor: AuditAnchor | None = None,
    expected_head: str | None = None,
    expected_count: int | None = None,
    checkpoints: Sequence[Checkpoint] | CheckpointIndex = (),
    resume: Resume | None = None,
) -> VerifyReport:
    """Verify the whole chain at ``target`` and report the first problem.

    ``checkpoints``: signed checkpoints whose signatures the caller checked
    (``wingman.audit.signing.check_signatures``); the record at each one's seq must have its
    hash and the log must reach the newest. ``anchor``: a (seq, hash) recorded earlier; the
    record at that seq must have that hash. ``expected_head``: a head hash recorded earlier;
    some record must have it (the log may have grown since). ``expected_count``: the log must
    hold at least this many records. Without one of them, removal of the tail is
    undetectable. ``resume``: the ``report.resume`` of an earlier verification of the same
    target; only the records from that point on are read, and the record there must be
    unchanged. Raises ``AuditUnavailable`` when the target cannot be read and ``ConfigError``
    for a bad target.
    """
    kind, where = _parse_target(target)
    if kind == "postgres":
        entries = _postgres_entries(where, from_seq=0 if resume is None else resume.seq)
    elif resume is None:
        entries = _file_entries(Path(where))
    else:
        entries = _file_entries(Path(where), resume.offset, resume.line or 1)
    with contextlib.closing(entries):
        return _verify_entries(
            entries, anchor=anchor, expected_head=expected_head, expected_count=expected_count,
            checkpoints=checkpoints, resume=resume,
        )


class Skipped:
    """The lines ``records_about`` could not read as records: how many, and the first."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None
        self.stopped: str | None = None
        """Why reading ended early (a line too long to be a record), if it did."""

    def add(self, line: int | None) -> None:
        self.count += 1
        if self.first is None:
            self.first = line


def records_about(target: str, name: str, namespace: str | None = None,
                  skipped: Skipped | None = None) -> Iterator[dict[str, Any]]:
    """The records (parsed, in order) whose subject is the object ``name`` (in ``namespace``
    when given), and those naming it as the grant an approved command went to. Read-only; a
    line that does not parse is skipped, and counted in ``skipped`` (``verify`` is what judges
    the chain)."""
    kind, where = _parse_target(target)
    entries = _postgres_entries(where) if kind == "postgres" else _file_entries(Path(where))
    with contextlib.closing(entries):
        for entry in entries:
            if entry.error is not None:  # a file's last entry: its reader stops there
                if skipped is not None:
                    skipped.add(entry.line)
                    if entry.line is not None:  # PostgreSQL's rows go on after it
                        skipped.stopped = f"line {entry.line}, which {entry.error}"
                continue
            try:
                record = _loads(entry.raw)  # never recurses deeply, nor reads NaN
                canonical_json(record)  # nor 1e400 as infinity, nor a lone surrogate
            except (_Malformed, ValueError):
                record = None
            if not isinstance(record, dict):
                if skipped is not None:
                    skipped.add(entry.line)
                continue
            subject = record.get("subject")
            data = record.get("data")
            subject = subject if isinstance(subject, dict) else {}
            data = data if isinstance(data, dict) else {}
            if namespace is not None and subject.get("namespace") not in (namespace, None, ""):
                continue
            if subject.get("name") == name or data.get("grant") == name:
                yield record


def show_main(target: str, name: str, namespace: str | None = None,
              out: TextIO | None = None) -> int:
    """``wingman audit show``: the records about one object as JSON lines; 0 when some were
    found, 1 when none, 2 when the trail cannot be read."""
    stream = out if out is not None else sys.stdout
    found = 0
    skipped = Skipped()
    try:
        for record in records_about(target, name, namespace, skipped):
            print(json.dumps(record, sort_keys=True), file=stream)
            found += 1
    except (AuditUnavailable, ConfigError) as exc:
        print(f"UNREADABLE: {exc.message}", file=sys.stderr)
        return 2
    if skipped.count:  # a damaged line may be one about this object: never silently
        first = f" (the first at line {skipped.first})" if skipped.first is not None else ""
        print(f"note: {skipped.count} line{'s' if skipped.count != 1 else ''} of the trail "
              f"could not be read as records and {'were' if skipped.count != 1 else 'was'} "
              f"skipped{first}; run 'wingman audit verify' on it", file=sys.stderr)
    if skipped.stopped is not None:
        print(f"note: reading stopped at {skipped.stopped}: the lines after it were not read",
              file=sys.stderr)
    if not found:
        print(f"no audit records about {name!r}", file=sys.stderr)
        return 1
    return 0


def verify_main(
    target: str,
    *,
    expected_head: str | None = None,
    anchor: AuditAnchor | None = None,
    checkpoints: Sequence[Checkpoint] | CheckpointIndex = (),
    out: TextIO | None = None,
    empty_sources: str | None = None,
) -> int:
    """``wingman audit verify``: print one line; 0 verified, 1 tampered (or unverified), 2
    unreadable.

    ``checkpoints`` must have had their signatures checked
    (``wingman.audit.signing.check_signatures``). ``empty_sources`` names the checkpoint
    sources the user asked for that held no checkpoint of the trail: then a trail that holds
    records is not verified (exit 1), since deleting the checkpoints would otherwise make any
    rewritten trail pass, and a source that adds nothing (a witness's copy emptied, next to
    the ConfigMap's) was not consulted, whatever the others show; an empty trail with no
    checkpoint at all still is (a fresh install has nothing to cover)."""
    stream = out if out is not None else sys.stdout
    try:
        report = verify(target, anchor=anchor, expected_head=expected_head,
                        checkpoints=checkpoints)
    except (AuditUnavailable, ConfigError) as exc:
        print(f"UNREADABLE: {exc.message}", file=stream)
        return 2
    except Exception as exc:  # noqa: BLE001 - a verdict line and an exit code, never a traceback
        print(unexpected(exc), file=stream)
        return 2
    if report.ok and empty_sources and report.anchor is not None and report.checkpoints:
        records = f"{report.records} record{'' if report.records == 1 else 's'}"
        print(f"UNVERIFIED: there is no checkpoint in {empty_sources}, yet the trail holds "
              f"{records} (head sha256:{report.head}): that source was not consulted, so "
              "what it alone would show (a rewrite the other checkpoints were made to agree "
              f"with) is not checked. The other sources verify it: "
              f"{report.summary().removeprefix('OK: ')}. A witness newly configured gets its "
              "first checkpoint of this trail at the operator's first checkpoint round "
              "(audit.checkpoints.intervalSeconds) after the trail gains a record: just set "
              "up? verify again then. Otherwise check that the copy is this trail's and "
              "wingman_audit_witness_failures_total, and treat it as an incident "
              "(docs/runbook.md); to verify against the other sources alone, leave it out",
              file=stream)
        return 1
    if report.ok and empty_sources and report.anchor is not None:
        records = f"{report.records} record{'' if report.records == 1 else 's'}"
        print(f"UNVERIFIED: there is no checkpoint in {empty_sources}, yet the trail holds "
              f"{records} (head sha256:{report.head}): nothing shows it was not rewritten, "
              "and deleted checkpoints look just like this. Just installed? The operator signs "
              "its first checkpoint within audit.checkpoints.intervalSeconds of the first "
              "record: verify again then. Otherwise treat it as an incident (docs/runbook.md)",
              file=stream)
        return 1
    print(report.summary(), file=stream)
    return 0 if report.ok else 1


def unexpected(exc: Exception) -> str:
    """The ``UNREADABLE`` line of a verification that stopped on an error it did not foresee
    (a bug, or no memory left): the trail is not verified, and the user is told so."""
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    if looks_like_token(detail):
        detail = "(a message holding a token-shaped text, not shown)"
    return (f"UNREADABLE: the verifier stopped on an unexpected error ({type(exc).__name__}: "
            f"{detail}); the trail is NOT verified. Report this as a bug, with the input "
            "if you can share it.")

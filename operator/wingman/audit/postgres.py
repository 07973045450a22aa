"""The PostgreSQL sink: one chain in one table, the head serialised by an advisory lock."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import socket
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

from wingman.audit.records import (
    EXECUTING,
    GENESIS_HASH,
    MAX_RECORD_BYTES,
    AuditRecord,
    NewRecord,
    _Clock,
    _loads,
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
from wingman.audit.verification import ProblemKind, _Entry
from wingman.errors import AuditTampered, AuditUnavailable, shown_url, without_userinfo

# --------------------------------------------------------------------------- PostgreSQL

ANSWER_TIMEOUT_SECONDS = 40.0
"""Longest the sinks and the verifier wait for any answer from PostgreSQL (connecting:
``connect_timeout``). ``statement_timeout`` (30 s) and ``lock_timeout`` (10 s, or lower bounds
a DBA set) are the server's own; a server that stopped answering, or a network that drops its
packets while the kernel's TCP connection stays up, is bounded only by this: the connection is
then shut down and the call fails like an outage (``AuditUnavailable``)."""


class _Watchdog:
    """Shuts a psycopg connection's socket down when PostgreSQL has not answered for
    ``seconds`` since the last ``beat``: libpq's wait then ends, the call raises
    ``OperationalError`` and the connection is broken. The socket is reached through a
    descriptor of its own (a ``dup``, closed on exit: never a number the process may reuse).
    ``expired`` says whether it fired. Every watchdog of the process is watched by one
    long-lived thread (``_WATCHER``): none is started per append or per read."""

    def __init__(self, conn: Any, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._fd = os.dup(conn.pgconn.socket)
        self._last = time.monotonic()

    def __enter__(self) -> _Watchdog:
        _WATCHER.watch(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _WATCHER.forget(self)  # after which it never fires: the descriptor may be closed
        os.close(self._fd)

    def beat(self) -> None:
        """PostgreSQL answered: the next answer gets ``seconds`` again."""
        self._last = time.monotonic()

    def hold(self) -> None:
        """No answer is awaited (the caller has the rows read so far) until the next beat."""
        self._last = math.inf

    def said(self) -> TimeoutError:
        """What to report instead of the broken connection's message."""
        return TimeoutError(f"the audit database gave no answer within {self.seconds:g}s (a "
                            "hung server, or a network that drops its packets); the "
                            "connection was closed")

    def due(self) -> float:
        """When it fires (``math.inf`` while it holds)."""
        return self._last + self.seconds

    def fire(self) -> None:
        self.expired = True
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=self._fd)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.detach()  # the descriptor stays the watchdog's, closed on exit


class _Watcher:
    """The one thread that fires every watchdog of the process that is due. It looks at least
    every ``POLL_SECONDS`` while any is watched (a ``beat`` only moves a deadline later, and
    needs no wake-up), and sleeps until the next ``watch`` when none is. Started at the first
    ``watch`` (again in a forked child, which has none of its parent's threads)."""

    POLL_SECONDS = 1.0

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._dogs: set[_Watchdog] = set()
        self._thread: threading.Thread | None = None

    def watch(self, dog: _Watchdog) -> None:
        with self._changed:
            self._dogs.add(dog)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="wingman-audit-watchdog")
                self._thread.start()
            self._changed.notify()

    def forget(self, dog: _Watchdog) -> None:
        with self._changed:
            self._dogs.discard(dog)

    def _forked(self) -> None:
        """In a forked child: its parent's watchdogs and thread are not its own, and the lock
        may have been held by that thread."""
        self._changed = threading.Condition()
        self._dogs = set()
        self._thread = None

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for dog in [dog for dog in self._dogs if dog.due() <= now]:
                    self._dogs.discard(dog)
                    dog.fire()
                if not self._dogs:
                    self._changed.wait()
                    continue
                soonest = min(dog.due() for dog in self._dogs)
                self._changed.wait(min(max(soonest - now, 0.0), self.POLL_SECONDS))


_WATCHER = _Watcher()
os.register_at_fork(after_in_child=_WATCHER._forked)


_TABLE = "wingman_audit"
_APPEND_LOCK = 0x77696E676D616E  # "wingman": pg_advisory_xact_lock key serialising the head
_SCHEMA_LOCK = _APPEND_LOCK + 1

_REFUSE_BODY = """
BEGIN
    RAISE EXCEPTION 'wingman_audit is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Audit records are never changed or removed.';
END
"""
"""The body of ``wingman_audit_refuse_change()``, which both triggers run."""

#: The look-up indexes (``PostgresSink.executions``) the sink creates with its table, by name,
#: each as its owner builds it on a table created by an earlier release (``CONCURRENTLY``:
#: appends go on meanwhile). ``PostgresSink.index_repairs`` says what the owner runs.
LOOKUP_INDEXES = {
    "wingman_audit_executions_by_request":
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS wingman_audit_executions_by_request "
        "ON wingman_audit ((data->>'approval_uid')) WHERE event = 'GatewayExecuting'",
    "wingman_audit_executions_by_grant":
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS wingman_audit_executions_by_grant "
        "ON wingman_audit ((subject->>'uid')) WHERE event = 'GatewayExecuting'",
}

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
-- the executions of a request's commands and of a grant (PostgresSink.executions), which every
-- gateway run looks up
{indexes};
CREATE OR REPLACE FUNCTION wingman_audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $fn${body}$fn$;
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
""".replace("{body}", _REFUSE_BODY).replace(
    "{indexes}", ";\n".join(create.replace(" CONCURRENTLY", "")  # in the schema's transaction
                           for create in LOOKUP_INDEXES.values()))

#: ``PostgresSink.executions``: the event a literal, as in the indexes' predicate, so that a
#: generic plan (a prepared statement) can use them too
_EXECUTIONS_SQL = (
    "SELECT seq, record FROM wingman_audit WHERE event = 'GatewayExecuting' AND seq >= 0 "
    "AND (data->>'approval_uid' = %s OR subject->>'uid' = %s) ORDER BY seq")
assert EXECUTING == "GatewayExecuting"

_TRIGGERS_SQL = """
SELECT t.tgname, t.tgenabled, t.tgtype, t.tgqual IS NULL AND cardinality(t.tgattr::int2[]) = 0,
       l.lanname, p.prosrc
FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_language l ON l.oid = p.prolang
WHERE t.tgrelid = to_regclass('wingman_audit')
  AND t.tgname IN ('wingman_audit_no_update_delete', 'wingman_audit_no_truncate')
"""
#: pg_trigger.tgtype of each trigger as the sink creates it: BEFORE (2), for each statement,
#: on DELETE (8) and UPDATE (16), or on TRUNCATE (32).
_TRIGGER_TYPES = {"wingman_audit_no_update_delete": 2 | 8 | 16,
                  "wingman_audit_no_truncate": 2 | 32}


#: The table's indexes by name, and whether each is usable (a ``CONCURRENTLY`` build that
#: failed leaves one invalid, which ``CREATE INDEX IF NOT EXISTS`` then skips)
_INDEXES_SQL = """
SELECT c.relname, i.indisvalid AND i.indisready FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass('wingman_audit')
"""

_CONSTRAINTS_SQL = """
SELECT pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = to_regclass('wingman_audit') AND contype IN ('p', 'c')
"""
#: The constraints on seq the sink creates, as pg_get_constraintdef spells them: one record at
#: each seq (a fork is refused even for a writer that skips the advisory lock), none outside
#: the chain's range.
_CONSTRAINTS = {"PRIMARY KEY (seq)": "its primary key on seq",
                "CHECK ((seq >= 0))": "its CHECK (seq >= 0)"}


_ROW_BYTES = 4 * MAX_RECORD_BYTES
"""Largest row the verifier fetches: the record, and its subject and data again as jsonb text
(which spells them with more spaces)."""

_ROWS_SQL = """
SELECT seq, time, record_bytes, row_bytes,
       CASE WHEN fits THEN event END, CASE WHEN fits THEN actor END,
       CASE WHEN fits THEN subject::text END, CASE WHEN fits THEN data::text END,
       CASE WHEN fits THEN prev END, CASE WHEN fits THEN hash END,
       CASE WHEN fits THEN record END
FROM (SELECT *, coalesce(record_bytes, 0) <= %(record)s AND row_bytes <= %(row)s AS fits
      FROM (SELECT *, octet_length(record) AS record_bytes,
                   coalesce(octet_length(event), 0) + coalesce(octet_length(actor), 0)
                   + coalesce(octet_length(subject::text), 0)
                   + coalesce(octet_length(data::text), 0) + coalesce(octet_length(prev), 0)
                   + coalesce(octet_length(hash), 0) + coalesce(octet_length(record), 0)
                   AS row_bytes
            FROM wingman_audit{where}) AS sized) AS checked
ORDER BY seq
"""
"""Every row of the table in ``seq`` order: a negative ``seq`` first, a NULL one last (rows
outside the chain, which only an owner who dropped the table's constraints can add)."""

_ROWS_FROM_SQL = _ROWS_SQL.replace("{where}", " WHERE seq >= %(from)s")
"""The rows from ``seq`` ``%(from)s`` on (a verification resumed there)."""

_OUTSIDE_SQL = """
SELECT (SELECT min(seq) FROM wingman_audit WHERE seq < 0),
       EXISTS (SELECT 1 FROM wingman_audit WHERE seq IS NULL)
"""
"""What a resumed read (``_ROWS_FROM_SQL``) does not reach of the rows outside the chain: the
lowest negative ``seq`` (the first such row a read of every row meets), and whether a row has
none (those it meets last). Two probes of the primary key's index while it stands."""

_ROWS_SQL = _ROWS_SQL.replace("{where}", "")


_READ_SETTINGS = (
    "SET LOCAL enable_sort TO off",
    "SET LOCAL cursor_tuple_fraction TO 0.01",
    "SET LOCAL jit TO off",
    # 30 s, or the lower bound a DBA set (for the role, the database or in the DSN); its
    # pg_settings value is in milliseconds, 0 for none
    "SELECT set_config('statement_timeout', CASE WHEN setting::bigint BETWEEN 1 AND 30000 "
    "THEN setting ELSE '30000' END, true) FROM pg_settings WHERE name = 'statement_timeout'",
)
"""The verifier's transaction reads by the primary key's index, a fetch at a time: a plan that
sorts the whole table first (which PostgreSQL may choose for a cursor, e.g. with a DBA's
``cursor_tuple_fraction`` or ``random_page_cost`` and no statistics yet) would answer the first
fetch only once every row was sorted, past ``ANSWER_TIMEOUT_SECONDS`` on a large trail. No JIT
(compiling a plan costly for the whole table takes longer than reading a fetch), and each fetch
within ``statement_timeout`` (the server's own bound, before the client's): 30 s, never more
than a lower one a DBA set."""


_APPEND_TIMEOUTS_MS = {"lock_timeout": 10_000, "statement_timeout": 30_000}
"""The bounds of an append's transaction (and of the look-up after a broken COMMIT), in
milliseconds: never more than a lower one a DBA set for the role, the database or in the DSN
(read once per connection, :func:`_lower_of`)."""

_DBA_TIMEOUTS_SQL = ("SELECT name, setting FROM pg_settings "
                     "WHERE name IN ('lock_timeout', 'statement_timeout')")


def _lower_of(ours: int, setting: object) -> int:
    """``ours`` (milliseconds), or the DBA's ``setting`` (pg_settings' text, in milliseconds)
    when that is a lower bound; 0 (no bound) or anything that is no number gets ``ours``."""
    text = str(setting).strip()
    dba = int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else 0
    return dba if 1 <= dba <= ours else ours


MIN_SERVER_VERSION = 110000
"""The oldest PostgreSQL the sink and the verifier work with (11: the triggers are created
with ``EXECUTE FUNCTION`` and the verifier sets ``jit``, both new in 11), as
``server_version_num``."""


def version_refusal(found: object) -> str | None:
    """Why a server whose ``server_version_num`` is ``found`` cannot hold the trail, or
    ``None`` when it can. Anything that is not a version number (libpq's 0 when it could not
    read the server's version, text that is no number) is refused: the check fails closed."""
    needs = (f"the audit trail needs PostgreSQL {MIN_SERVER_VERSION // 10000} or newer "
             f"(server_version_num {MIN_SERVER_VERSION})")
    if isinstance(found, str) and re.fullmatch(r"[0-9]{1,8}", found.strip()):
        found = int(found.strip())
    if isinstance(found, bool) or not isinstance(found, int) or not 0 < found < 10**8:
        return (f"the server's version could not be read (server_version_num "
                f"{str(found)[:40]!r}), and {needs}: check that the DSN names a PostgreSQL "
                "server")
    if found >= MIN_SERVER_VERSION:
        return None
    major = found // 10000
    shown = (f"{major}.{found % 10000}" if major >= 10
             else f"{major}.{found // 100 % 100}.{found % 100}")
    return (f"the server is PostgreSQL {shown} (server_version_num {found}), and {needs}: "
            "upgrade the server to a release the PostgreSQL project still supports")


def _dsn_parts(dsn: str) -> dict[str, str] | None:
    """The DSN's parameters, or ``None`` when libpq cannot parse it."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except Exception:  # noqa: BLE001 - any parse failure means "unparseable", never echo it
        return None


def _uri_userinfo(dsn: str) -> str | None:
    """A ``postgresql://`` URL's userinfo taken the cautious way (everything between ``://``
    and its LAST '@', :func:`wingman.errors.without_userinfo`), or ``None`` when it has none."""
    shown = without_userinfo(dsn)
    if shown == dsn:
        return None
    scheme = shown.index("***")  # what was kept before the userinfo
    return dsn[scheme:len(dsn) - len(shown) + scheme + 3]


def misread_userinfo(dsn: str) -> bool:
    """True when libpq would read a ``postgresql://`` URL's userinfo otherwise than the
    cautious reading: a '/' or '@' before the last '@' (an unencoded one in the password),
    which libpq takes for the end of the userinfo or of the host, so part of the password
    would become the host, the port or the database name (and show in messages)."""
    userinfo = _uri_userinfo(dsn)
    return userinfo is not None and ("/" in userinfo or without_userinfo(userinfo) != userinfo)


def _redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if misread_userinfo(dsn):
        return shown_url(dsn)
    parts = _dsn_parts(dsn)
    if parts is None:
        return "<unparseable PostgreSQL DSN>"
    user = parts.get("user", "")
    host = parts.get("host", "")
    port = parts.get("port", "")
    db = parts.get("dbname", "")
    return f"postgresql://{user + '@' if user else ''}{host}{':' + port if port else ''}/{db}"


def _disarmed(name: str, enabled: str, kind: int, unconditional: bool, language: str,
              body: str) -> str:
    """What makes an append-only trigger (a ``_TRIGGERS_SQL`` row) let a change through, or
    ``""``: a trigger fired only in replication (``R``), for other events or with a condition,
    or one whose function no longer raises, is as good as disabled."""
    if enabled not in ("O", "A"):
        return f"{name} is enabled for replication only"
    if kind != _TRIGGER_TYPES[name] or not unconditional:
        return f"{name} was recreated for other events or with a condition"
    if language != "plpgsql" or body.strip() != _REFUSE_BODY.strip():
        return f"{name} runs a function that is not wingman_audit_refuse_change() as created"
    return ""


class PostgresSink:
    """The audit trail in a PostgreSQL table, shared by any number of writers.

    Table ``wingman_audit(seq bigint primary key, time timestamptz, event text, actor text,
    subject jsonb, data jsonb, prev text, hash text unique, record text)``; ``record`` holds
    the exact canonical bytes that were hashed, and ``verify`` also checks that every column
    agrees with them. One transaction per append (``append_all``: per group of records);
    ``pg_advisory_xact_lock`` serialises the chain head (it needs no table privilege) and the
    primary key on ``seq`` makes a fork impossible even for a writer that skips the lock.
    ``synchronous_commit`` is forced on for the transaction, so an acknowledged append survives
    a server crash. When the connection breaks during a group's transaction (during its
    COMMIT, the server may have committed it without saying so), the sink reads on a new
    connection, once the advisory lock shows that transaction ended, whether the group's last
    record stands at its ``seq``: if so the group is reported recorded (a retry would record
    it twice), else it failed and nothing of it was written. Every wait for the server is
    bounded on the client too (``connect_timeout``; ``answer_timeout`` for each answer, after
    which the connection is shut down): a server that hung, or packets dropped on the way,
    fail an append as an outage instead of holding it for ever.

    The sink creates the table and two triggers when they are absent: ``BEFORE UPDATE OR
    DELETE`` and ``BEFORE TRUNCATE`` raise, so even the owner cannot change history without
    first disabling them (which takes ``ALTER TABLE`` and leaves the chain to catch it). It
    refuses to start when those triggers exist but are disabled, or changed so that they no
    longer refuse (enabled for replication only, other events, a condition, another function),
    and when the table lacks its primary key on ``seq`` or its ``CHECK (seq >= 0)``.

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
        self, dsn: str, *, clock: _Clock | None = None, connect_timeout: int = 10,
        answer_timeout: float = ANSWER_TIMEOUT_SECONDS,
    ) -> None:
        self._dsn = dsn
        self._where = _redact_dsn(dsn)
        self._password = (_dsn_parts(dsn) or {}).get("password", "")
        self._connect_timeout = connect_timeout
        self._answer_timeout = answer_timeout
        self._clock = clock or _utcnow
        self._lock = threading.Lock()
        self._conn: Any = None
        self._bounds: tuple[str, ...] = ()
        """The connection's ``SET LOCAL lock_timeout`` and ``statement_timeout`` statements."""
        self._closed = False
        self.index_repairs: tuple[str, ...] = ()
        """What the table's owner runs when the table lacked a look-up index at start
        (``LOOKUP_INDEXES``: created by an earlier release) or held one invalid (a failed
        ``CONCURRENTLY`` build): without them each gateway's look-up of what ran reads the
        whole table (still correct, within ``statement_timeout``). The operator warns at
        start; the sink does not build them (a plain build blocks appends, and only the owner
        may)."""
        with self._lock:
            self._connect()
            try:
                self._ensure_schema()
            except AuditUnavailable:
                self._drop()
                raise

    def _said(self, exc: BaseException) -> str:
        """What ``exc`` says, in one line, without the password (of one of ours: what failed,
        without its advice)."""
        if isinstance(exc, AuditUnavailable):
            return exc.message.split(". Check", 1)[0]
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return text.replace(self._password, "***") if self._password else text

    def _error(self, what: str, exc: BaseException) -> AuditUnavailable:
        text = self._said(exc)
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
        refusal = version_refusal(self._conn.info.server_version)
        if refusal is not None:
            self._drop()
            raise AuditUnavailable(f"cannot use the audit database ({self._where}): {refusal}")
        # the bounds a DBA set for this session (role, database, DSN) hold for the whole
        # connection: read once here, not on every append
        dog = _Watchdog(self._conn, self._answer_timeout)
        try:
            with dog:
                dba = dict(self._conn.execute(_DBA_TIMEOUTS_SQL).fetchall())
        except psycopg.Error as exc:
            self._drop()
            raise self._error("cannot read the audit database's settings",
                              dog.said() if dog.expired else exc) from None
        self._bounds = tuple(
            f"SET LOCAL {name} TO {_lower_of(ours, dba.get(name))}"
            for name, ours in _APPEND_TIMEOUTS_MS.items())
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def _ensure_schema(self) -> None:
        import psycopg

        conn = self._conn
        dog = _Watchdog(conn, self._answer_timeout)
        try:
            with dog:
                if not self._schema_ready(conn):
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                        conn.execute(_SCHEMA_SQL)
                    if not self._schema_ready(conn):
                        raise AuditUnavailable(
                            f"audit table wingman_audit in {self._where} lacks its "
                            "append-only triggers after creation; inspect the database"
                        )
        except psycopg.Error as exc:
            if dog.expired:
                raise self._error("cannot prepare the audit table", dog.said()) from None
            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                raise self._error(
                    "cannot create the audit table or its append-only triggers; run the sink "
                    "once as the table owner (see the PostgresSink docstring)",
                    exc,
                ) from None
            raise self._error("cannot prepare the audit table", exc) from None

    def _schema_ready(self, conn: Any) -> bool:
        exists = conn.execute("SELECT to_regclass('wingman_audit') IS NOT NULL").fetchone()[0]
        if not exists:
            return False
        rows = conn.execute(_TRIGGERS_SQL).fetchall()
        if len(rows) < 2:
            return False
        disabled = sorted(name for name, enabled, *_ in rows if enabled == "D")
        if disabled:
            raise AuditUnavailable(
                f"the append-only triggers {disabled} on wingman_audit in {self._where} are "
                "disabled: someone turned off tamper protection. Find out who (the chain may "
                "have been edited: run 'wingman audit verify'), re-enable them with ALTER "
                "TABLE wingman_audit ENABLE TRIGGER ALL, then restart."
            )
        changed = sorted(_disarmed(*row) for row in rows if _disarmed(*row))
        if changed:
            raise AuditUnavailable(
                f"the append-only triggers on wingman_audit in {self._where} no longer refuse "
                f"every change: {'; '.join(changed)}. Someone turned off tamper protection. "
                "Find out who (the chain may have been edited: run 'wingman audit verify'); "
                "re-enable them (ALTER TABLE wingman_audit ENABLE TRIGGER ALL) or, if they "
                "were changed, drop them and wingman_audit_refuse_change() and start a sink "
                "once as the table owner to create them again, then restart."
            )
        found = {str(row[0]) for row in conn.execute(_CONSTRAINTS_SQL).fetchall()}
        lacking = [what for spelled, what in _CONSTRAINTS.items() if spelled not in found]
        if lacking:
            raise AuditUnavailable(
                f"the audit table wingman_audit in {self._where} lacks {' and '.join(lacking)}"
                ": rows outside the chain (a negative or NULL seq) or a second record at one "
                "seq can be added. Someone altered the table as its owner. Find out who (run "
                "'wingman audit verify'), restore them as the table owner (ALTER TABLE "
                "wingman_audit ADD PRIMARY KEY (seq), ADD CHECK (seq >= 0)), then restart."
            )
        usable = {str(name): bool(ok) for name, ok in conn.execute(_INDEXES_SQL).fetchall()}
        self.index_repairs = tuple(
            f"REINDEX INDEX CONCURRENTLY {name}" if name in usable else create
            for name, create in LOOKUP_INDEXES.items() if not usable.get(name))
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
        return one(self.append_all([NewRecord(event, actor, subject, data, now)]))

    def append_all(self, entries: Sequence[NewRecord]) -> list[AuditRecord | AuditUnavailable]:
        import psycopg

        checked, valid = screen(entries)
        if not valid:
            return merge(checked, [])
        with self._lock:
            conn = self._connect()
            # every answer within answer_timeout: a server that never answers (hung, or
            # packets dropped on the way) is an outage, not a wait without end
            dog = _Watchdog(conn, self._answer_timeout)
            try:
                with dog:
                    return self._append_all(conn, dog, checked, valid)
            except psycopg.Error as exc:
                self._drop()
                raise self._error("cannot append to the audit table",
                                  dog.said() if dog.expired else exc) from None

    def _append_all(self, conn: Any, dog: _Watchdog, checked: list[AuditUnavailable | None],
                    valid: list[NewRecord]) -> list[AuditRecord | AuditUnavailable]:
        import psycopg
        from psycopg.types.json import Jsonb

        for _attempt in range(3):
            records: list[AuditRecord] = []
            results: list[AuditRecord | AuditUnavailable] = []
            try:
                with conn.transaction():
                    dog.beat()
                    conn.execute("SET LOCAL synchronous_commit TO on")
                    for bound in self._bounds:  # 10 s and 30 s, or a DBA's lower bounds
                        conn.execute(bound)
                    dog.beat()
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
                    dog.beat()
                    # the chain's last row: descending, PostgreSQL puts NULLs first, and a
                    # row outside the chain (its constraints dropped while this sink runs)
                    # is never the one new records link to
                    row = conn.execute(
                        "SELECT CASE WHEN octet_length(record) <= %s THEN record END, "
                        "octet_length(record), seq FROM wingman_audit WHERE seq >= 0 "
                        "ORDER BY seq DESC LIMIT 1", (MAX_RECORD_BYTES,),
                    ).fetchone()
                    dog.beat()
                    seq, prev = self._next(row)
                    results = chain(seq, prev, valid, self._clock)
                    records = records_of(results)
                    if records:  # else every entry was refused
                        with conn.cursor() as cur:
                            cur.executemany(
                                "INSERT INTO wingman_audit (seq, time, event, actor, "
                                "subject, data, prev, hash, record) "
                                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                                [(
                                    record.seq, record.at, record.event, record.actor,
                                    Jsonb(record.subject), Jsonb(record.data), record.prev,
                                    record.hash, record.to_bytes().decode("utf-8"),
                                ) for record in records],
                            )
                    dog.beat()
                return merge(checked, results)
            except psycopg.errors.UniqueViolation:
                continue  # a writer that skipped the advisory lock won the race
            except psycopg.OperationalError as exc:
                broke = dog.said() if dog.expired else exc
                if records and conn.broken and self._landed(records[-1], broke):
                    return merge(checked, results)
                raise
        raise AuditUnavailable(
            f"audit head in {self._where} kept moving during three attempts; a writer "
            "is not taking the advisory lock"
        )

    def _landed(self, last: AuditRecord, broke: BaseException) -> bool:
        """Whether a group whose connection broke was committed all the same (the connection
        dropped during COMMIT, say: the server may have committed it and never said so), read
        on a new connection: ``last``, its last record, stands at its ``seq``. The advisory
        lock is taken first, so the broken transaction has ended, committed or rolled back,
        before the read. ``False`` when it did not land; ``AuditUnavailable`` saying that the
        records may have been written when it cannot be told."""
        import psycopg

        self._drop()
        dog: _Watchdog | None = None
        try:
            conn = self._connect()
            dog = _Watchdog(conn, self._answer_timeout)
            with dog, conn.transaction():
                for bound in self._bounds:
                    conn.execute(bound)
                dog.beat()
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
                dog.beat()
                row = conn.execute("SELECT hash FROM wingman_audit WHERE seq = %s",
                                   (last.seq,)).fetchone()
        except (psycopg.Error, AuditUnavailable) as exc:
            self._drop()
            why: BaseException = dog.said() if dog is not None and dog.expired else exc
            raise AuditUnavailable(
                f"the connection to the audit database ({self._where}) broke while these audit "
                f"records were written ({self._said(broke)}), and whether they were committed "
                f"cannot be told ({self._said(why)}). Check that PostgreSQL is up and "
                "reachable; they may have been written: the action must not proceed, and its "
                "retry may record them a second time."
            ) from None
        return row is not None and row[0] == last.hash

    def _next(self, row: Any) -> tuple[int, str]:
        """The seq and prev of the next record, from the chain's last row (its record, the
        record's length, its seq column); AuditUnavailable, appends refused, when that row does
        not verify: its record edited, or its seq column no longer the record's own (the
        next seq would collide with a row, or leave a gap)."""
        if row is None:
            return 0, GENESIS_HASH
        if row[0] is None:  # never fetched: a row of any size would be read whole
            raise AuditUnavailable(
                f"the last audit record in {self._where} is larger than {MAX_RECORD_BYTES} "
                f"bytes ({row[1]} bytes, or NULL): no record is. Run 'wingman audit verify'; "
                "appends are refused."
            )
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
        if row[2] != record.seq:
            raise AuditUnavailable(
                f"the last audit record in {self._where} was edited: its row's seq is {row[2]}, "
                f"but the record it holds is seq {record.seq} (the seq column was changed). "
                "Run 'wingman audit verify'; appends are refused."
            )
        return record.seq + 1, record.hash

    def executions(self, approval_uid: str, grant_uid: str) -> list[AuditRecord]:
        import psycopg

        require_uids(approval_uid, grant_uid)
        with self._lock:
            conn = self._connect()
            dog = _Watchdog(conn, self._answer_timeout)
            try:
                with dog, conn.transaction():
                    for bound in self._bounds:
                        conn.execute(bound)
                    dog.beat()
                    # the indexes the sink creates with the table serve both halves
                    rows = conn.execute(_EXECUTIONS_SQL, (approval_uid, grant_uid)).fetchall()
            except psycopg.Error as exc:
                self._drop()
                raise self._error("cannot read the audit table",
                                  dog.said() if dog.expired else exc) from None
        return executions_among(((f"audit record seq {seq} in {self._where}",
                                  str(raw).encode("utf-8")) for seq, raw in rows),
                                approval_uid, grant_uid)

    def records(self) -> Iterator[AuditRecord]:
        with contextlib.closing(_postgres_entries(self._dsn, answer_timeout=self._answer_timeout)
                                ) as entries:
            for entry in entries:
                if entry.error is not None:
                    seq = None if entry.columns is None else entry.columns.get("seq")
                    raise AuditTampered(
                        f"audit record seq {seq} in {self._where}: the stored record "
                        f"{entry.error}", reason=f"Audit{entry.kind or ProblemKind.MALFORMED}")
                try:
                    yield _parse_stored(entry.raw)
                except _Malformed as exc:
                    seq = None if entry.columns is None else entry.columns.get("seq")
                    raise AuditTampered(
                        f"audit record seq {seq} in {self._where}: the stored record {exc}",
                        reason="AuditMalformed",
                    ) from None


def _postgres_entries(dsn: str, connect_timeout: int = 10, from_seq: int = 0,
                      answer_timeout: float | None = None) -> Generator[_Entry, None, None]:
    """Rows in seq order from one consistent snapshot, from ``from_seq`` on, and those outside
    the chain's range as ``Inserted`` entries (every one from 0; from later on, the first with a
    negative seq before the rows and one for a NULL seq after them, where a read of every row
    meets them); PostgreSQL must answer each request within ``answer_timeout`` (default
    ``ANSWER_TIMEOUT_SECONDS``)."""
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
    refusal = version_refusal(conn.info.server_version)
    if refusal is not None:
        with contextlib.suppress(Exception):
            conn.close()
        raise AuditUnavailable(f"cannot read the audit database ({where}): {refusal}")
    dog: _Watchdog | None = None
    try:
        dog = _Watchdog(conn, ANSWER_TIMEOUT_SECONDS if answer_timeout is None
                        else answer_timeout)
        with dog:
            yield from _rows(conn, dog, where, from_seq)
    except psycopg.Error as exc:
        raise unavailable("cannot read the audit table",
                          dog.said() if dog is not None and dog.expired else exc) from None
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _outside(seq: int | None) -> str:
    """What a row outside the chain's ``seq`` range (0 on) is, for ``the stored record …``."""
    if seq is None:
        return ("has no seq (NULL): a row was added outside the chain, which the primary key "
                "on seq (and its NOT NULL) refuses, so they were dropped; find out who (the "
                "table's owner), and restore them once the row is accounted for")
    return (f"has seq {seq}, below the chain's first (0): a row was added outside the chain, "
            "which the table's CHECK (seq >= 0) refuses, so it was dropped; find out who (the "
            "table's owner), and restore it once the row is accounted for")


def _outside_entry(seq: int | None) -> _Entry:
    """The entry of a row outside the chain's ``seq`` range: whatever it holds, it is no
    record of the chain."""
    return _Entry(raw=b"", complete=True, line=None, columns={"seq": seq},
                  error=_outside(seq), kind=ProblemKind.INSERTED)


def _rows(conn: Any, dog: _Watchdog, where: str, from_seq: int
          ) -> Generator[_Entry, None, None]:
    """``_postgres_entries``' rows, each answer awaited under ``dog`` (the time the caller
    spends on a row is not counted)."""
    import psycopg

    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    exists = conn.execute("SELECT to_regclass('wingman_audit') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        raise AuditUnavailable(
            f"there is no wingman_audit table in {where}; check the database name"
        )
    dog.beat()
    for setting in _READ_SETTINGS:
        conn.execute(setting)
    lowest, unnumbered = None, False
    if from_seq > 0:  # rows outside the chain are outside the resumed range: looked for apart
        dog.beat()
        lowest, unnumbered = conn.execute(_OUTSIDE_SQL).fetchone()
    if lowest is not None:  # where a read of every row meets them: first, and NULL last
        dog.hold()
        yield _outside_entry(lowest)
    with conn.cursor(name="wingman_audit_verify") as cur:
        cur.itersize = 256  # rows of at most _ROW_BYTES each: memory stays bounded
        # jsonb columns as text, parsed here with the depth guard: a row written by any
        # INSERT-holder can nest deeper than json.loads recurses. A row larger than any
        # record can make is never fetched (a field may hold up to 1 GB).
        dog.beat()
        cur.execute(_ROWS_SQL if from_seq <= 0 else _ROWS_FROM_SQL,
                    {"from": from_seq, "record": MAX_RECORD_BYTES, "row": _ROW_BYTES})
        for (seq, stamp, record_bytes, row_bytes, event, actor, subject, data, prev, digest,
             text) in cur:
            dog.hold()
            if seq is None or seq < 0:  # whatever it holds, it is no record of the chain
                yield _outside_entry(seq)
                dog.beat()
                continue
            error = None
            if text is None and (record_bytes or 0) > MAX_RECORD_BYTES:
                error = f"is larger than {MAX_RECORD_BYTES} bytes ({record_bytes} bytes)"
            elif text is None and (row_bytes or 0) > _ROW_BYTES:
                error = (f"has columns of {row_bytes} bytes, more than a record of at most "
                         f"{MAX_RECORD_BYTES} bytes needs: larger than any record")
            if error is not None:
                yield _Entry(raw=b"", complete=True, line=None, columns={"seq": seq},
                             error=error)
                dog.beat()
                continue
            try:  # a NULL column (its NOT NULL dropped) disagrees with any record
                subject_value = None if subject is None else _loads(subject.encode())
                data_value = None if data is None else _loads(data.encode())
            except _Malformed as exc:
                subject_value = data_value = None
                error = f"has a subject or data column that {exc}"
            yield _Entry(
                raw=b"" if text is None else str(text).encode("utf-8"),
                complete=True,
                line=None,
                columns={
                    "seq": seq, "time": stamp, "event": event, "actor": actor,
                    "subject": subject_value, "data": data_value, "prev": prev,
                    "hash": digest,
                },
                error=error,
            )
            dog.beat()
        dog.beat()
    if unnumbered:
        dog.hold()
        yield _outside_entry(None)

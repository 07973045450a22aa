"""wingman.audit's PostgreSQL sink on a real server: one chain, append-only, tamper detection."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from support import executions
from support.postgres import PostgresServer, PostgresUnavailable, find_bindir
from wingman import audit
from wingman.audit import (
    GENESIS_HASH,
    AuditAnchor,
    Checkpoint,
    PostgresSink,
    ProblemKind,
    make_record,
    open_sink,
    verify,
    verify_main,
)
from wingman.audit.postgres import _EXECUTIONS_SQL
from wingman.audit.signing import check_signatures, sign_checkpoint
from wingman.capability.keys import KeySet, generate_signing_key
from wingman.errors import AuditTampered, AuditUnavailable, ConfigError

pytestmark = pytest.mark.postgres

OPERATOR_SRC = Path(audit.__file__).resolve().parents[2]
SUBJECT = {"kind": "ExecutionGrant", "namespace": "team-a", "name": "g-1", "uid": "u-1"}


def _fill(dsn: str, count: int) -> list[audit.AuditRecord]:
    with PostgresSink(dsn) as sink:
        return [
            sink.append("VoteCast", actor=f"reviewer-{i % 3}", subject=SUBJECT,
                        data={"i": i, "vote": "approve", "score": i / 3, "big": 1e16})
            for i in range(count)
        ]


def _as_superuser(
    dsn: str, *statements: str | sql.Composed, disable_triggers: bool = True
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if disable_triggers:
            conn.execute("ALTER TABLE wingman_audit DISABLE TRIGGER USER")
        for statement in statements:
            conn.execute(statement)


def test_append_and_verify(audit_dsn: str) -> None:
    first = _fill(audit_dsn, 5)
    sink = open_sink(audit_dsn)
    try:
        more = sink.append("ExecutionIntent", actor="gateway", subject=SUBJECT,
                           data={"argv": ["kubectl", "get", "pods"], "note": "ünï ✓"})
        stored = list(sink.records())
    finally:
        sink.close()
    assert [r.seq for r in stored] == list(range(6))
    assert first[0].prev == GENESIS_HASH and more.prev == first[-1].hash
    assert stored[-1] == more
    report = verify(audit_dsn)
    assert report.ok, report.summary()
    assert (report.records, report.head) == (6, more.hash)
    assert verify(audit_dsn, anchor=more.anchor).ok
    with psycopg.connect(audit_dsn) as conn:
        record_text, data, when = conn.execute(
            "SELECT record, data, time FROM wingman_audit WHERE seq = 5"
        ).fetchone() or ("", {}, None)
    assert record_text.encode("utf-8") == more.to_bytes()  # the exact hashed bytes
    assert data == more.data and when == more.at


def test_append_all_writes_a_group_in_one_transaction_and_refuses_only_bad_entries(
        audit_dsn: str) -> None:
    first = _fill(audit_dsn, 2)
    sink = open_sink(audit_dsn)
    try:
        results = sink.append_all([
            audit.NewRecord("Step", "operator", SUBJECT, {"i": 0}),
            audit.NewRecord("vote cast", "operator", SUBJECT),  # not CamelCase: refused
            audit.NewRecord("Step", "operator", SUBJECT, {"i": 1})])
        stored = list(sink.records())
    finally:
        sink.close()
    one, refused, two = results
    assert isinstance(refused, AuditUnavailable) and refused.reason == "AuditRecordRejected"
    assert isinstance(one, audit.AuditRecord) and isinstance(two, audit.AuditRecord)
    assert (one.seq, one.prev, two.seq, two.prev) == (2, first[-1].hash, 3, one.hash)
    assert stored[-2:] == [one, two]
    report = verify(audit_dsn, anchor=two.anchor)
    assert report.ok and report.records == 4, report.summary()


def test_concurrent_writers_keep_a_single_chain(audit_dsn: str) -> None:
    per_writer, errors = 40, []

    def thread_writer(name: str) -> None:
        try:
            with PostgresSink(audit_dsn) as sink:
                for i in range(per_writer):
                    sink.append("VoteCast", actor=name, subject={}, data={"i": i})
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    script = (
        "import sys\nfrom wingman.audit import PostgresSink\n"
        "sink = PostgresSink(sys.argv[1])\n"
        "for i in range(int(sys.argv[3])):\n"
        "    sink.append('VoteCast', actor=sys.argv[2], subject={}, data={'i': i})\n"
    )
    PostgresSink(audit_dsn).close()  # create the table before the race
    env = {**os.environ, "PYTHONPATH": str(OPERATOR_SRC)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, audit_dsn, f"proc-{p}", str(per_writer)],
                         env=env)
        for p in range(2)
    ]
    threads = [threading.Thread(target=thread_writer, args=(f"thread-{t}",)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert errors == []

    report = verify(audit_dsn)
    assert report.ok, report.summary()
    assert report.records == 5 * per_writer
    with PostgresSink(audit_dsn) as sink:
        records = list(sink.records())
    for writer in ("thread-0", "thread-1", "thread-2", "proc-0", "proc-1"):
        assert [r.data["i"] for r in records if r.actor == writer] == list(range(per_writer))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE wingman_audit SET actor = 'mallory' WHERE seq = 1",
        "DELETE FROM wingman_audit WHERE seq = 2",
        "DELETE FROM wingman_audit",
        "TRUNCATE wingman_audit",
    ],
)
def test_changes_are_refused_even_for_the_owner(audit_dsn: str, statement: str) -> None:
    _fill(audit_dsn, 3)
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM wingman_audit").fetchone() == (3,)
    assert verify(audit_dsn).ok


def _rehash_row(dsn: str, seq: int) -> sql.Composed:
    """A superuser's consistent edit of one row: new content, new hash, all columns agree."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT record FROM wingman_audit WHERE seq = %s", (seq,)).fetchone()
    assert row is not None
    old = json.loads(row[0])
    forged = make_record(seq, old["prev"], old["event"], actor=old["actor"],
                         subject=old["subject"], data={**old["data"], "vote": "reject"},
                         now=dt.datetime.fromisoformat(old["time"].replace("Z", "+00:00")))
    return sql.SQL(
        "UPDATE wingman_audit SET record = {}, hash = {}, data = {}::jsonb WHERE seq = {}"
    ).format(
        sql.Literal(forged.to_bytes().decode()),
        sql.Literal(forged.hash),
        sql.Literal(json.dumps(forged.data)),
        sql.Literal(seq),
    )


TAMPERING: list[tuple[str, Callable[[str], list[Any]], str, int]] = [
    ("edit a column only",
     lambda dsn: ["UPDATE wingman_audit SET data = '{\"i\": 99}' WHERE seq = 4"],
     ProblemKind.EDITED, 4),
    ("edit the record text",
     lambda dsn: ["UPDATE wingman_audit SET record = replace(record, '\"approve\"', "
                  "'\"reject\"') WHERE seq = 4"],
     ProblemKind.EDITED, 4),
    ("edit and re-hash one row", lambda dsn: [_rehash_row(dsn, 4)], ProblemKind.BROKEN_LINK, 5),
    ("delete a row", lambda dsn: ["DELETE FROM wingman_audit WHERE seq = 4"],
     ProblemKind.DELETED, 4),
    ("swap two rows' seq",
     lambda dsn: ["UPDATE wingman_audit SET seq = 1000 WHERE seq = 4",
                  "UPDATE wingman_audit SET seq = 4 WHERE seq = 5",
                  "UPDATE wingman_audit SET seq = 5 WHERE seq = 1000"],
     ProblemKind.EDITED, 4),
    ("change a time",
     lambda dsn: ["UPDATE wingman_audit SET time = time - interval '1 hour' WHERE seq = 6"],
     ProblemKind.EDITED, 6),
]


@pytest.mark.parametrize(("how", "statements", "kind", "position"), TAMPERING,
                         ids=[t[0] for t in TAMPERING])
def test_superuser_tampering_with_triggers_disabled_is_detected(
    audit_dsn: str,
    how: str,
    statements: Callable[[str], list[Any]],
    kind: str,
    position: int,
) -> None:
    _fill(audit_dsn, 8)
    _as_superuser(audit_dsn, *statements(audit_dsn))
    report = verify(audit_dsn)
    assert report.problem is not None, how
    assert (report.problem.kind, report.problem.position) == (kind, position), report.summary()
    out = io.StringIO()
    assert verify_main(audit_dsn, out=out) == 1
    assert out.getvalue().startswith(f"TAMPERED at record {position} (seq ")


def test_superuser_truncation_is_caught_by_the_anchor(audit_dsn: str) -> None:
    head = _fill(audit_dsn, 6)[-1].anchor
    _as_superuser(audit_dsn, "DELETE FROM wingman_audit WHERE seq >= 4")
    assert verify(audit_dsn).ok  # a clean cut of the tail leaves a valid chain...
    report = verify(audit_dsn, anchor=head)  # ...that the recorded head exposes
    assert report.problem is not None
    assert (report.problem.kind, report.problem.position) == (ProblemKind.TRUNCATED, 4)
    assert verify_main(audit_dsn, expected_head=f"sha256:{head.hash}", out=io.StringIO()) == 1
    _as_superuser(audit_dsn, "TRUNCATE wingman_audit", disable_triggers=False)
    assert not verify(audit_dsn, anchor=AuditAnchor(0, head.hash)).ok


def test_sink_refuses_to_start_with_disabled_triggers(audit_dsn: str) -> None:
    _fill(audit_dsn, 1)
    _as_superuser(audit_dsn)
    with pytest.raises(AuditUnavailable, match="disabled"):
        PostgresSink(audit_dsn)
    _as_superuser(audit_dsn, "ALTER TABLE wingman_audit ENABLE TRIGGER USER",
                  disable_triggers=False)
    _fill(audit_dsn, 1)


def test_a_head_row_whose_seq_is_not_its_record_s_refuses_appends_saying_it_was_edited(
        audit_dsn: str) -> None:
    """The next seq comes from the head record's text: a row whose seq column was edited (two
    rows' seq swapped: each record still verifies) made every append collide three times and
    fail blaming a writer that skips the advisory lock, or (moved up) land past a gap."""
    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(audit_dsn) as conn:
            return conn.execute("SELECT seq, hash FROM wingman_audit ORDER BY seq").fetchall()

    _fill(audit_dsn, 5)
    for edit, column, held in (
            (["UPDATE wingman_audit SET seq = 1000 WHERE seq = 4",
              "UPDATE wingman_audit SET seq = 4 WHERE seq = 3",
              "UPDATE wingman_audit SET seq = 3 WHERE seq = 1000"], 4, 3),
            (["UPDATE wingman_audit SET seq = 9 WHERE seq = 4"], 9, 3)):
        _as_superuser(audit_dsn, *edit, "ALTER TABLE wingman_audit ENABLE TRIGGER USER")
        before = rows()
        with PostgresSink(audit_dsn) as sink, pytest.raises(AuditUnavailable) as exc:
            sink.append("VoteCast", actor="reviewer-0", subject=SUBJECT)
        said = str(exc.value)
        assert (f"was edited: its row's seq is {column}, but the record it holds is seq "
                f"{held}") in said, said
        assert "Run 'wingman audit verify'; appends are refused." in said, said
        assert "advisory lock" not in said, said
        assert rows() == before  # nothing was appended


DISARMED = {
    "enabled for replication only": [
        "ALTER TABLE wingman_audit ENABLE REPLICA TRIGGER wingman_audit_no_update_delete",
        "ALTER TABLE wingman_audit ENABLE REPLICA TRIGGER wingman_audit_no_truncate"],
    "their function made a no-op": [
        "CREATE OR REPLACE FUNCTION wingman_audit_refuse_change() RETURNS trigger "
        "LANGUAGE plpgsql AS $fn$ BEGIN RETURN NULL; END $fn$"],
    "recreated under their names doing nothing": [
        "CREATE FUNCTION wingman_audit_noop() RETURNS trigger LANGUAGE plpgsql "
        "AS $fn$ BEGIN RETURN NULL; END $fn$",
        "DROP TRIGGER wingman_audit_no_update_delete ON wingman_audit",
        "CREATE TRIGGER wingman_audit_no_update_delete BEFORE UPDATE OR DELETE ON wingman_audit "
        "FOR EACH STATEMENT EXECUTE FUNCTION wingman_audit_noop()"],
    "recreated under their names for other events": [
        "DROP TRIGGER wingman_audit_no_truncate ON wingman_audit",
        "CREATE TRIGGER wingman_audit_no_truncate BEFORE INSERT ON wingman_audit "
        "FOR EACH STATEMENT WHEN (false) EXECUTE FUNCTION wingman_audit_refuse_change()"],
}


@pytest.mark.parametrize("statements", DISARMED.values(), ids=DISARMED.keys())
def test_sink_refuses_to_start_with_triggers_that_no_longer_refuse(
        audit_dsn: str, statements: list[str]) -> None:
    """Disabled is not the only way to turn the append-only triggers off: a trigger fired only
    in replication, a function that no longer raises, or another trigger under the same name
    lets history be changed as surely, and the sink must say so as it does for disabled ones."""
    _fill(audit_dsn, 2)
    _as_superuser(audit_dsn, *statements, disable_triggers=False)
    with pytest.raises(AuditUnavailable, match="no longer refuse"):
        PostgresSink(audit_dsn)


def test_least_privilege_writer(audit_dsn: str) -> None:
    _fill(audit_dsn, 2)  # the owner creates the table and triggers once
    role = f"writer_{str(conninfo_to_dict(audit_dsn)['dbname'])[-8:]}"
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT INSERT, SELECT ON wingman_audit TO {role}")
    writer_dsn = audit_dsn.replace("postgres@", f"{role}@", 1)
    with PostgresSink(writer_dsn) as sink:
        record = sink.append("ExecutionResult", actor="gateway", subject=SUBJECT,
                             data={"exit": 0})
    assert record.seq == 2
    assert verify(writer_dsn).ok
    with psycopg.connect(writer_dsn, autocommit=True) as conn:
        for statement in ("UPDATE wingman_audit SET actor = 'x'", "DELETE FROM wingman_audit",
                          "TRUNCATE wingman_audit",
                          "ALTER TABLE wingman_audit DISABLE TRIGGER USER"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_the_sink_finds_what_ran_of_a_request_or_a_grant_from_its_indexes(
        audit_dsn: str) -> None:
    """The gateway's look-up before it spends a token, as the least-privileged writer: every
    GatewayExecuting record of the request (by its UID) or of the grant, and nothing else;
    the table comes with the two partial indexes that answer it."""
    _fill(audit_dsn, 1)  # the owner creates the table, its triggers and indexes
    role = f"writer_{str(conninfo_to_dict(audit_dsn)['dbname'])[-8:]}"
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT INSERT, SELECT ON wingman_audit TO {role}")
        indexes = {row[0] for row in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'wingman_audit'")}
    assert {"wingman_audit_executions_by_request",
            "wingman_audit_executions_by_grant"} <= indexes
    with PostgresSink(audit_dsn.replace("postgres@", f"{role}@", 1)) as sink:
        executions.check(sink, executions.fill(sink))
    # the sink's own statement, prepared with a generic plan (as a driver that prepares it
    # would run it): still the indexes, not the whole table
    query = _EXECUTIONS_SQL.replace("%s", "$1", 1).replace("%s", "$2", 1)
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan TO off")
        conn.execute("SET plan_cache_mode TO force_generic_plan")
        conn.execute(f"PREPARE executions (text, text) AS {query}")
        plan = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN EXECUTE executions ('a', 'g')"))
    assert "Index Scan on wingman_audit_executions_by_" in plan, plan


def test_a_look_up_of_what_ran_fails_closed_on_a_record_it_cannot_read(
        audit_dsn: str) -> None:
    _fill(audit_dsn, 1)
    _as_superuser(audit_dsn, "INSERT INTO wingman_audit VALUES (1, now(), 'GatewayExecuting', "
                  "'gateway/p', '{\"uid\": \"g\"}', '{}', 'x', 'h', 'not a record')",
                  disable_triggers=False)
    with PostgresSink(audit_dsn) as sink, pytest.raises(
            AuditUnavailable, match="may say that this command ran already"):
        sink.executions("a", "g")


def test_writer_without_ddl_rights_gets_guidance(audit_dsn: str) -> None:
    role = f"nobody_{str(conninfo_to_dict(audit_dsn)['dbname'])[-8:]}"
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    with pytest.raises(AuditUnavailable, match="table owner"):
        PostgresSink(audit_dsn.replace("postgres@", f"{role}@", 1))


def test_password_never_appears_in_errors(audit_dsn: str) -> None:
    params = conninfo_to_dict(audit_dsn)
    dsn = f"postgresql://postgres:hunter2-pw@{params['host']}:{params['port']}/no_such_db"
    with pytest.raises(AuditUnavailable) as caught:
        PostgresSink(dsn)
    assert "hunter2-pw" not in str(caught.value) and "no_such_db" in str(caught.value)
    out = io.StringIO()
    assert verify_main(dsn, out=out) == 2
    assert "hunter2-pw" not in out.getvalue()


def test_a_password_with_slashes_and_ats_works_encoded_and_never_shows_unencoded(
        audit_dsn: str) -> None:
    from urllib.parse import quote

    params = conninfo_to_dict(audit_dsn)
    password = "hun/ter2@pw?x#y"
    role = f"slashy_{str(params['dbname'])[-8:]}"
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(role)))
    where = f"{params['host']}:{params['port']}/{params['dbname']}"
    encoded = f"postgresql://{role}:{quote(password, safe='')}@{where}"
    with contextlib.closing(open_sink(encoded)) as sink:
        sink.append("VoteCast", actor="a", subject={})
    assert verify_main(encoded, out=io.StringIO()) == 0
    # unencoded, libpq would end the password at the first '/' and take the rest for the
    # host and port: refused before any connection, the password not shown
    raw = f"postgresql://{role}:{password}@{where}"
    with pytest.raises(ConfigError) as caught:
        open_sink(raw)
    out = io.StringIO()
    assert verify_main(raw, out=out) == 2
    for shown in (caught.value.message, out.getvalue()):
        assert "percent-encode" in shown and f"postgresql://***@{where}" in shown
        assert "hun" not in shown and "ter2" not in shown and role not in shown


def test_verify_of_a_database_without_the_table_is_unreadable(audit_dsn: str) -> None:
    out = io.StringIO()
    assert verify_main(audit_dsn, out=out) == 2
    assert "no wingman_audit table" in out.getvalue()


def test_server_stopped_is_unavailable() -> None:
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL is not available: {exc}")
    try:
        dsn = server.create_database()
        sink = PostgresSink(dsn, connect_timeout=3)
        first: Any = sink.append("RequestCreated", actor="operator", subject=SUBJECT)
        server.stop()
        with pytest.raises(AuditUnavailable, match="PostgreSQL is up and reachable"):
            sink.append("ExecutionIntent", actor="gateway", subject=SUBJECT)
        with pytest.raises(AuditUnavailable):  # and it stays closed, not silently dropped
            sink.append("ExecutionIntent", actor="gateway", subject=SUBJECT)
        with pytest.raises(AuditUnavailable):
            PostgresSink(dsn, connect_timeout=3)
        assert verify_main(dsn, out=io.StringIO()) == 2
        sink.close()
        assert first.seq == 0
    finally:
        server.stop()


@pytest.mark.parametrize("column", ["data", "record", "both"])
def test_deeply_nested_rows_are_tampering_not_a_crash(audit_dsn: str, column: str) -> None:
    # Any role that may INSERT can add a row; a deeply nested one must be reported, and the
    # sink must refuse to append after it rather than raise RecursionError.
    records = _fill(audit_dsn, 2)
    deep = "[" * 5000 + "1" + "]" * 5000
    data = deep if column in ("data", "both") else "{}"
    text = ('{"deep":' + deep + "}") if column in ("record", "both") else "{}"
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO wingman_audit (seq, time, event, actor, subject, data, prev, hash, "
            "record) VALUES (2, now(), 'X', 'mallory', '{}', %s::jsonb, %s, %s, %s)",
            (data, records[-1].hash, "ab" * 32, text),
        )
    report = verify(audit_dsn)
    assert report.problem is not None and report.problem.position == 2, report.summary()
    assert report.problem.kind is ProblemKind.MALFORMED
    with PostgresSink(audit_dsn) as sink, pytest.raises(AuditUnavailable):
        sink.append("VoteCast", actor="a", subject={}, data={})
    out = io.StringIO()
    assert verify_main(audit_dsn, out=out) == 1
    assert out.getvalue().startswith("TAMPERED at record 2 (seq 2): Malformed")


# --------------------------------------------------------------------------- checkpoints

AUDIT_KEY = generate_signing_key()


def _checkpointed(dsn: str, rounds: int = 3, per_round: int = 5) -> list[Checkpoint]:
    """Records appended in rounds, each round closed by a signed checkpoint of the head."""
    checkpoints = []
    for _ in range(rounds):
        _fill_more(dsn, per_round)
        report = verify(dsn)
        assert report.ok and report.anchor is not None
        checkpoints.append(sign_checkpoint(AUDIT_KEY, log="wingman-prd", anchor=report.anchor,
                                           now=dt.datetime.now(dt.UTC)))
    return checkpoints


def _fill_more(dsn: str, count: int) -> None:
    with PostgresSink(dsn) as sink:
        for i in range(count):
            sink.append("VoteCast", actor="reviewer", subject=SUBJECT, data={"i": i})


def _rechain_rows(dsn: str, start: int) -> list[sql.Composed | str]:
    """Statements a superuser runs to rewrite rows from ``start`` on as a consistent chain."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT record FROM wingman_audit ORDER BY seq").fetchall()
    objs = [json.loads(r[0]) for r in rows]
    prev = objs[start - 1]["hash"] if start else GENESIS_HASH
    statements: list[sql.Composed | str] = [
        sql.SQL("DELETE FROM wingman_audit WHERE seq >= {}").format(start)]
    for obj in objs[start:]:
        record = make_record(obj["seq"], prev, obj["event"], actor=obj["actor"],
                             subject=obj["subject"], data={**obj["data"], "forged": True},
                             now=dt.datetime.now(dt.UTC))
        prev = record.hash
        statements.append(sql.SQL(
            "INSERT INTO wingman_audit (seq, time, event, actor, subject, data, prev, hash, "
            "record) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {})").format(
            record.seq, record.at, record.event, record.actor, json.dumps(record.subject),
            json.dumps(record.data), record.prev, record.hash,
            record.to_bytes().decode()))
    return statements


@pytest.mark.parametrize(("attack", "kind", "verified"), [
    ("rechain-from-2", ProblemKind.REWRITTEN, None),
    ("rechain-from-7", ProblemKind.REWRITTEN, 4),
    ("delete-tail", ProblemKind.TRUNCATED, 9),
    ("truncate", ProblemKind.TRUNCATED, None),
    ("replace", ProblemKind.REWRITTEN, None),
])
def test_checkpoints_catch_what_the_chain_cannot_in_postgres(
        audit_dsn: str, attack: str, kind: ProblemKind, verified: int | None) -> None:
    checkpoints = check_signatures(_checkpointed(audit_dsn), KeySet.from_mapping(
        {f"{AUDIT_KEY.kid}.pem": AUDIT_KEY.public_pem()}))
    assert [c.seq for c in checkpoints] == [4, 9, 14]
    if attack.startswith("rechain"):
        _as_superuser(audit_dsn, *_rechain_rows(audit_dsn, int(attack.rsplit("-", 1)[1])))
    elif attack == "delete-tail":
        _as_superuser(audit_dsn, "DELETE FROM wingman_audit WHERE seq >= 12")
    elif attack == "truncate":
        _as_superuser(audit_dsn, "TRUNCATE wingman_audit")
    else:
        _as_superuser(audit_dsn, "DROP TABLE wingman_audit", disable_triggers=False)
        _fill_more(audit_dsn, 20)
    assert verify(audit_dsn).ok  # the chain alone is fooled every time
    report = verify(audit_dsn, checkpoints=checkpoints)
    assert report.problem is not None and report.problem.kind is kind, report.summary()
    assert (report.checkpoint.seq if report.checkpoint else None) == verified
    out = io.StringIO()
    assert verify_main(audit_dsn, checkpoints=checkpoints, out=out) == 1
    assert "last verified point" in out.getvalue()


def test_resumed_verification_in_postgres_reads_from_the_last_point(audit_dsn: str) -> None:
    checkpoints = _checkpointed(audit_dsn, rounds=2)
    first = verify(audit_dsn, checkpoints=checkpoints)
    assert first.ok and first.resume is not None and first.resume.offset == 9
    _fill_more(audit_dsn, 3)
    second = verify(audit_dsn, checkpoints=checkpoints, resume=first.resume)
    assert second.ok and second.records == 13
    assert second.checkpoint == checkpoints[-1]
    _as_superuser(audit_dsn, *_rechain_rows(audit_dsn, 3))
    again = verify(audit_dsn, resume=second.resume)
    assert again.problem is not None and again.problem.kind is ProblemKind.REWRITTEN


# --------------------------------------------------------------------------- columns


def test_a_column_that_reads_equal_in_python_but_differs_is_edited(audit_dsn: str) -> None:
    """true is not 1 and false is not 0, although Python's == says so."""
    with PostgresSink(audit_dsn) as sink:
        for flag in (True, False, True):
            sink.append("VoteCast", actor="reviewer", subject=SUBJECT,
                        data={"approved": flag, "list": [flag]})
    assert verify(audit_dsn).ok
    _as_superuser(audit_dsn, "UPDATE wingman_audit SET data = jsonb_set(data, '{approved}', "
                             "'0') WHERE seq = 1")
    report = verify(audit_dsn)
    assert report.problem is not None, report.summary()
    assert (report.problem.kind, report.problem.position) == (ProblemKind.EDITED, 1)
    assert "column 'data'" in report.problem.message


def test_floats_jsonb_writes_as_integers_still_verify(audit_dsn: str) -> None:
    """jsonb writes 1e300 as 1 followed by 300 zeros: the same number, not an edit."""
    with PostgresSink(audit_dsn) as sink:
        sink.append("VoteCast", actor="reviewer", subject=SUBJECT,
                    data={"huge": 1e300, "tiny": 5e-324, "max": 1.7976931348623157e308,
                          "neg": -1.5e200, "list": [2.5e100, 1e22]})
    report = verify(audit_dsn)
    assert report.ok, report.summary()


@pytest.mark.parametrize("column", ["subject", "data", "record", "time", "event"])
def test_a_null_column_is_tampering_not_a_crash(audit_dsn: str, column: str) -> None:
    _fill(audit_dsn, 3)
    name = sql.Identifier(column)
    _as_superuser(audit_dsn,
                  sql.SQL("ALTER TABLE wingman_audit ALTER COLUMN {} DROP NOT NULL").format(name),
                  sql.SQL("UPDATE wingman_audit SET {} = NULL WHERE seq = 1").format(name))
    report = verify(audit_dsn)
    assert report.problem is not None and report.problem.position == 1, report.summary()
    assert report.problem.kind in (ProblemKind.EDITED, ProblemKind.MALFORMED)
    out = io.StringIO()
    assert verify_main(audit_dsn, out=out) == 1
    assert out.getvalue().startswith("TAMPERED at record 1 (seq 1)"), out.getvalue()


def _verify_capped(dsn: str) -> subprocess.CompletedProcess[str]:
    """``wingman audit verify`` with its address space capped to 768 MiB."""

    def cap() -> None:
        import resource

        limit = 768 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run(
        [sys.executable, "-c", "import sys; from wingman.cli.main import main; "
         "sys.exit(main(sys.argv[1:]))", "audit", "verify", dsn],
        capture_output=True, text=True, timeout=300, preexec_fn=cap, check=False,
        env={"PYTHONPATH": str(OPERATOR_SRC), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize("column", ["record", "data"])
def test_a_huge_row_is_malformed_in_bounded_memory(audit_dsn: str, column: str) -> None:
    """Any role that may INSERT can add a row of hundreds of megabytes (PostgreSQL allows a
    field of up to 1 GB); the verifier never fetches it."""
    records = _fill(audit_dsn, 2)
    record = "repeat('x', 400000000)" if column == "record" else "'{}'"
    # jsonb holds up to 256 MiB, slow to build: 2 MiB is already more than any record needs
    data = ("jsonb_build_object('x', repeat('x', 2000000))" if column == "data"
            else "'{}'::jsonb")
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(
            "INSERT INTO wingman_audit (seq, time, event, actor, subject, data, prev, hash, "
            "record) VALUES (2, now(), 'X', 'mallory', '{{}}', {}, %s, %s, {})").format(
            sql.SQL(data), sql.SQL(record)), (records[-1].hash, "ab" * 32))
    done = _verify_capped(audit_dsn)
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert done.stdout.startswith("TAMPERED at record 2 (seq 2): Malformed"), done.stdout
    assert ("larger than 262144 bytes" if column == "record" else "larger than any record"
            ) in done.stdout
    with PostgresSink(audit_dsn) as sink, pytest.raises(AuditUnavailable) as caught:
        sink.append("VoteCast", actor="a", subject={}, data={})
    if column == "record":  # a sink reads only the record text of the last row
        assert "larger than" in caught.value.message


class _CommitBreaker:
    """A TCP proxy to PostgreSQL that breaks the connection at the next COMMIT once armed:
    ``after`` passes the COMMIT to the server and drops its answer (the group is committed,
    the client never hears so), ``before`` drops the COMMIT itself (nothing is committed)."""

    def __init__(self, dsn: str) -> None:
        parts = conninfo_to_dict(dsn)
        self._server = (str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432))
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        self.dsn = psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=port)
        self.mode: str | None = None  # armed: "after" or "before"; None: a plain proxy
        self.broken = threading.Event()
        self.refuse_after = False  # set: no new connection once the break happened
        self.hung = threading.Event()  # set: nothing is forwarded any more, either way, and
        # no connection is closed (a hung server, or a network that drops the packets)
        self.hang_on: bytes | None = None  # the client's request holding this sets ``hung``
        self.lose_answer = False  # set: mode "after" drops the COMMIT's answer and keeps the
        # connection up instead of breaking it
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self.refuse_after and self.broken.is_set():
                client.close()  # the database is out of reach from now on
                continue
            server = socket.create_connection(self._server)
            self._sockets += [client, server]
            swallow = threading.Event()
            self._start(self._to_server, client, server, swallow)
            self._start(self._to_client, server, client, swallow)

    def _cut(self, *socks: socket.socket) -> None:
        # broken first: the client sees the cut at once and may connect again before this
        # thread runs on, and that connection must find the database out of reach
        self.broken.set()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _to_server(self, client: socket.socket, server: socket.socket,
                   swallow: threading.Event) -> None:
        while chunk := _recv(client):
            if self.hang_on is not None and self.hang_on in chunk:
                self.hung.set()
            if self.hung.is_set():
                continue  # dropped
            if self.mode is not None and b"COMMIT" in chunk:
                mode, self.mode = self.mode, None
                if mode == "before":
                    self._cut(client, server)
                    return
                swallow.set()  # the server's answer to this COMMIT never reaches the client
            with contextlib.suppress(OSError):
                server.sendall(chunk)

    def _to_client(self, server: socket.socket, client: socket.socket,
                   swallow: threading.Event) -> None:
        while chunk := _recv(server):
            if self.hung.is_set():
                continue  # dropped
            if swallow.is_set() and self.lose_answer:
                continue  # the answer to the COMMIT, and all after it, never arrives
            if swallow.is_set():
                self._cut(client, server)
                return
            with contextlib.suppress(OSError):
                client.sendall(chunk)

    def sever(self) -> None:
        """End every connection now (a shut-down socket wakes whoever waits on it)."""
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@pytest.fixture
def breaker(audit_dsn: str) -> Iterator[_CommitBreaker]:
    proxy = _CommitBreaker(audit_dsn)
    try:
        yield proxy
    finally:
        proxy.close()


def _group(*steps: int) -> list[audit.NewRecord]:
    return [audit.NewRecord("Step", "operator", SUBJECT, {"i": i}, follows=n > 0)
            for n, i in enumerate(steps)]


def test_a_group_committed_while_the_connection_broke_is_recorded_once(
        audit_dsn: str, breaker: _CommitBreaker) -> None:
    """The connection breaks after the server got the COMMIT, before its answer: the group is
    in the table, so the sink reports it recorded instead of failing it (the caller would
    append it again: the same steps twice)."""
    first = _fill(audit_dsn, 2)
    with PostgresSink(breaker.dsn) as sink:
        breaker.mode = "after"
        results = sink.append_all(_group(0, 1))
        assert breaker.broken.is_set()  # the connection did break at COMMIT
        assert all(isinstance(r, audit.AuditRecord) for r in results), results
        one, two = results
        assert isinstance(one, audit.AuditRecord) and isinstance(two, audit.AuditRecord)
        assert (one.seq, one.prev, two.seq, two.prev) == (2, first[-1].hash, 3, one.hash)
        after = sink.append("Step", actor="operator", subject=SUBJECT, data={"i": 2})
        stored = list(sink.records())
    assert after.seq == 4 and after.prev == two.hash
    assert [(r.event, r.data.get("i")) for r in stored[2:]] == [("Step", 0), ("Step", 1),
                                                                ("Step", 2)]
    report = verify(audit_dsn, anchor=after.anchor)
    assert report.ok and report.records == 5, report.summary()


def test_a_group_whose_commit_never_arrived_fails_and_is_recorded_once_when_retried(
        audit_dsn: str, breaker: _CommitBreaker) -> None:
    """The connection breaks before the server got the COMMIT: nothing was recorded, so the
    sink fails the group (fail closed) and the retry records it, once."""
    _fill(audit_dsn, 1)
    with PostgresSink(breaker.dsn) as sink:
        breaker.mode = "before"
        with pytest.raises(AuditUnavailable, match="cannot append to the audit table"):
            sink.append_all(_group(0, 1))
        assert breaker.broken.is_set()
        assert [r.seq for r in sink.records()] == [0]
        retried = sink.append_all(_group(0, 1))
        stored = list(sink.records())
    assert [r.seq for r in retried if isinstance(r, audit.AuditRecord)] == [1, 2]
    assert [r.seq for r in stored] == [0, 1, 2]
    report = verify(audit_dsn)
    assert report.ok and report.records == 3, report.summary()


def test_a_group_whose_commit_cannot_be_looked_up_fails_saying_it_may_be_written(
        audit_dsn: str, breaker: _CommitBreaker) -> None:
    """The connection breaks after the server got the COMMIT and the database cannot be
    reached again to look: the append fails (fail closed) and says that its records may have
    been written, never that nothing was."""
    _fill(audit_dsn, 1)
    with PostgresSink(breaker.dsn) as sink:
        breaker.mode, breaker.refuse_after = "after", True
        with pytest.raises(AuditUnavailable) as failed:
            sink.append_all(_group(0, 1))
    message = str(failed.value)
    assert "nothing was recorded" not in message
    assert "may have been written" in message and "whether they were committed" in message
    assert "second time" in message
    with PostgresSink(audit_dsn) as direct:
        assert [r.seq for r in direct.records()] == [0, 1, 2]  # it was committed


def test_a_server_whose_port_was_taken_since_it_was_picked_starts_on_another() -> None:
    # PostgreSQL cannot bind port 0 and name its port: the suite picks a free one, which
    # another test's server can take before PostgreSQL binds it; that start fails and the
    # next one, on a new pick, serves
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = int(taken.getsockname()[1])
        picks = [held]

        def pick() -> int:
            if picks:
                return picks.pop()
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                return int(probe.getsockname()[1])

        try:
            find_bindir()
        except PostgresUnavailable as exc:
            pytest.skip(f"PostgreSQL is not available: {exc}")
        server = PostgresServer.start(ports=pick)  # a start that gives up fails the test
        try:
            assert not picks, "the first start was on the taken port"
            assert "already in use" in server.logfile.read_text(errors="replace")
            assert server.port != held
            with psycopg.connect(server.dsn(), connect_timeout=10) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            server.stop()


def _within(seconds: float, call: Callable[[], Any], proxy: _CommitBreaker) -> Any:
    """``call()``'s result or exception, failing the test when it has neither within
    ``seconds`` (the proxy's connections are ended then: the sink's lock is let go, and the
    test's teardown does not wait for ever)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        proxy.hung.clear()
        proxy.sever()
        thread.join(30)
        pytest.fail(f"still waiting after {seconds}s for a server that never answers")
    return outcome[0]


def test_a_server_that_never_answers_fails_an_append_within_the_bound(
        audit_dsn: str, breaker: _CommitBreaker) -> None:
    """A hung server (or a network that drops the packets while the TCP connection stays up)
    answers nothing, and statement_timeout is the server's: the append must not wait for ever
    (every transition waits on it) but fail as an outage, which the operator retries and
    alerts on; once the server answers again, the next append goes on with the chain."""
    first = _fill(audit_dsn, 2)
    with PostgresSink(breaker.dsn, connect_timeout=2, answer_timeout=2) as sink:
        breaker.hung.set()
        started = time.monotonic()
        outcome = _within(20, lambda: sink.append("Step", actor="operator", subject=SUBJECT,
                                                  data={"i": 0}), breaker)
        assert isinstance(outcome, AuditUnavailable), outcome
        assert time.monotonic() - started < 10
        assert "gave no answer within 2s" in outcome.message, outcome.message
        again = _within(20, lambda: sink.append("Step", actor="operator", subject=SUBJECT,
                                                data={"i": 1}), breaker)  # still hung: connecting
        assert isinstance(again, AuditUnavailable), again
        breaker.hung.clear()
        after = sink.append("Step", actor="operator", subject=SUBJECT, data={"i": 2})
    assert after.seq == 2 and after.prev == first[-1].hash
    report = verify(audit_dsn, anchor=after.anchor)
    assert report.ok and report.records == 3, report.summary()


def test_a_group_whose_commit_answer_never_comes_is_looked_up_and_recorded_once(
        audit_dsn: str, breaker: _CommitBreaker) -> None:
    """The server took the COMMIT and its answer never arrives (the connection stays up): at
    the bound the sink gives up the connection and looks the group up, as for a connection
    that broke during COMMIT: recorded, not appended twice."""
    first = _fill(audit_dsn, 2)
    with PostgresSink(breaker.dsn, answer_timeout=2) as sink:
        breaker.mode, breaker.lose_answer = "after", True
        results = _within(20, lambda: sink.append_all(_group(0, 1)), breaker)
        assert breaker.mode is None  # the COMMIT went through
        assert all(isinstance(r, audit.AuditRecord) for r in results), results
        stored = list(sink.records())
    assert [r.data.get("i") for r in stored[2:]] == [0, 1]
    assert stored[2].prev == first[-1].hash


def test_a_server_that_stops_answering_a_verification_fails_it_within_the_bound(
        audit_dsn: str, breaker: _CommitBreaker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifier (``wingman audit verify``, the operator's checkpoint round) reads in one
    snapshot: a server that stops answering mid-read is UNREADABLE within the bound."""
    import wingman.audit.postgres as pg

    _fill(audit_dsn, 3)
    monkeypatch.setattr(pg, "ANSWER_TIMEOUT_SECONDS", 2.0)
    breaker.hang_on = b"wingman_audit_verify"  # the cursor reading the rows
    out = io.StringIO()
    started = time.monotonic()
    parts = conninfo_to_dict(breaker.dsn)
    url = f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"
    code = _within(20, lambda: verify_main(url, out=out), breaker)
    assert breaker.hung.is_set()
    assert code == 2 and time.monotonic() - started < 10, out.getvalue()
    assert out.getvalue().startswith("UNREADABLE: cannot read the audit table"), out.getvalue()
    assert "gave no answer within 2s" in out.getvalue()


def test_appends_and_reads_start_no_thread_each(audit_dsn: str) -> None:
    """Every wait for PostgreSQL is bounded by a watchdog: one thread for the process that
    watches them all, not a thread started (and joined) per append, per group and per read:
    the operator and the gateway append on every transition."""
    _fill(audit_dsn, 1)  # the watchdog's thread, if it starts once, has started
    started: list[threading.Thread] = []

    def on_start(*_: Any) -> None:  # called at each call in a new thread: count the threads
        thread = threading.current_thread()
        if all(seen is not thread for seen in started):
            started.append(thread)

    with PostgresSink(audit_dsn) as sink:
        threading.settrace(on_start)  # called in every thread started from now on
        try:
            for i in range(20):
                sink.append("Step", actor="operator", subject=SUBJECT, data={"i": i})
            sink.append_all(_group(0, 1))
            stored = list(sink.records())
        finally:
            threading.settrace(None)
    assert len(stored) == 23
    assert not started, f"{len(started)} threads started for 22 appends and a read: " \
        f"{sorted({thread.name for thread in started})}"


def test_a_large_trail_is_read_in_seq_order_without_a_sort_first(
        audit_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifier reads the trail through a cursor in seq order. Were PostgreSQL to plan it
    as a sort of the whole table (as it does here, with settings a DBA may choose and no
    statistics yet), its first rows would come only once every row was sorted: past the
    40 s bound on a trail some ten times this one. It reads by the primary key, each fetch
    bounded, so the first rows come at once whatever the size."""
    import wingman.audit.postgres as pg

    first = _fill(audit_dsn, 3)
    name = conninfo_to_dict(audit_dsn)["dbname"]
    assert isinstance(name, str), name
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE wingman_audit SET (autovacuum_enabled = false)")
        conn.execute(sql.SQL("ALTER DATABASE {} SET cursor_tuple_fraction = 1.0").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET random_page_cost = 10").format(
            sql.Identifier(name)))
        conn.execute("ALTER TABLE wingman_audit DISABLE TRIGGER USER")
        conn.execute("INSERT INTO wingman_audit SELECT g, now(), 'Step', 'operator', '{}', "
                     "'{}', 'p', 'h' || g, repeat('r', 400) FROM generate_series(3, 1000000) g")
    monkeypatch.setattr(pg, "ANSWER_TIMEOUT_SECONDS", 2.0)
    started = time.monotonic()
    report = verify(audit_dsn)
    assert time.monotonic() - started < 5
    # read at once: the three records verify, and the first row that is no record is found
    assert report.problem is not None and report.problem.kind != "Unavailable", \
        report.summary()
    assert "seq 3" in report.summary() and report.anchor == first[-1].anchor, report.summary()


# --------------------------------------------------------------------------- a DBA's settings


def _auditor(dsn: str, statement_timeout: str | None, where: str) -> str:
    """The DSN of a new role that may only read the trail; ``statement_timeout`` set for that
    role (``where="role"``) or for the whole database (``"database"``) as a DBA would."""
    name = str(conninfo_to_dict(dsn)["dbname"])
    role = f"auditor_{name[-8:]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON wingman_audit TO {}").format(sql.Identifier(role)))
        if statement_timeout is not None:
            target = sql.SQL("ROLE {}" if where == "role" else "DATABASE {}").format(
                sql.Identifier(role if where == "role" else name))
            conn.execute(sql.SQL("ALTER {} SET statement_timeout = {}").format(
                target, sql.Literal(statement_timeout)))
    return dsn.replace("postgres@", f"{role}@", 1)


@pytest.mark.parametrize(("dba", "applied"), [
    ("1s", "1s"), ("250ms", "250ms"), ("30s", "30s"), ("0", "30s"), ("1min", "30s"),
    (None, "30s"),
])
@pytest.mark.parametrize("where", ["role", "database"])
def test_verify_keeps_a_lower_statement_timeout_a_dba_set(
        audit_dsn: str, dba: str | None, applied: str, where: str) -> None:
    """The verifier bounds each fetch by 30 s, but never raises a lower bound the DBA set for
    the role or the database (0, no bound, gets the 30 s)."""
    import wingman.audit.postgres as pg

    _fill(audit_dsn, 1)
    auditor = _auditor(audit_dsn, dba, where)
    with psycopg.connect(auditor) as conn:
        for setting in pg._READ_SETTINGS:
            conn.execute(setting)
        assert conn.execute("SHOW statement_timeout").fetchone() == (applied,)
    assert verify(auditor).ok


@pytest.mark.parametrize("where", ["role", "database"])
def test_verify_waits_no_longer_than_a_dba_allows(audit_dsn: str, where: str) -> None:
    """A read kept waiting (here by a lock that another session holds for 6 s) is cancelled by
    the DBA's 1 s statement_timeout, not by the verifier's own 30 s."""
    _fill(audit_dsn, 3)
    auditor = _auditor(audit_dsn, "1s", where)
    with psycopg.connect(audit_dsn) as holder:
        holder.execute("LOCK TABLE wingman_audit IN ACCESS EXCLUSIVE MODE")
        release = threading.Timer(6, holder.rollback)
        release.start()
        try:
            out = io.StringIO()
            started = time.monotonic()
            code = verify_main(auditor, out=out)
            took = time.monotonic() - started
        finally:
            release.join()
    assert code == 2 and took < 5, (took, out.getvalue())
    assert out.getvalue().startswith("UNREADABLE: cannot read the audit table"), out.getvalue()
    assert "statement timeout" in out.getvalue()


# --------------------------------------------------------------------------- server version


def test_this_server_s_version_passes_and_a_server_below_the_minimum_is_refused_at_connect(
        audit_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """There is no PostgreSQL 10 here: the real server passes the check, and with the
    minimum raised above it, the sink and the verifier refuse it at connect, naming the
    version found and the minimum, before creating or reading anything."""
    import wingman.audit.postgres as pg

    with psycopg.connect(audit_dsn) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None
        found = int(row[0])
        assert conn.info.server_version == found
    assert pg.version_refusal(found) is None
    _fill(audit_dsn, 2)
    assert verify(audit_dsn).ok

    monkeypatch.setattr(pg, "MIN_SERVER_VERSION", found + 1)
    with pytest.raises(AuditUnavailable) as caught:
        PostgresSink(audit_dsn)
    out = io.StringIO()
    assert verify_main(audit_dsn, out=out) == 2
    for said in (caught.value.message, out.getvalue()):
        assert f"(server_version_num {found}), and the audit trail needs PostgreSQL" in said
        assert f"(server_version_num {found + 1})" in said and "upgrade the server" in said
    assert out.getvalue().startswith("UNREADABLE: cannot read the audit database")
    monkeypatch.setattr(pg, "MIN_SERVER_VERSION", found)
    with PostgresSink(audit_dsn) as sink:
        sink._drop()  # the next append connects again
        monkeypatch.setattr(pg, "MIN_SERVER_VERSION", found + 1)
        with pytest.raises(AuditUnavailable, match="needs PostgreSQL"):
            sink.append("VoteCast", actor="reviewer", subject=SUBJECT)
    monkeypatch.setattr(pg, "MIN_SERVER_VERSION", found)
    assert verify(audit_dsn).ok and verify(audit_dsn).records == 2


# --------------------------------------------------------------------------- a large trail


def test_a_large_valid_trail_verifies_and_one_edited_record_in_it_is_named(
        audit_dsn: str) -> None:
    """A trail of several of the verifier's fetches (256 rows each) verifies whole, against
    checkpoints signed at its middle and its end; a record edited in its middle, at either
    side of a fetch's boundary or within one, is the one named, the records before it
    counted as verified."""
    count = 1500  # six fetches
    with PostgresSink(audit_dsn) as sink:
        for start in range(0, count, 250):
            stored = sink.append_all([
                audit.NewRecord("VoteCast", f"reviewer-{i % 3}", SUBJECT,
                                {"i": i, "vote": "approve", "note": "x" * (i % 200)})
                for i in range(start, start + 250)])
            assert all(isinstance(record, audit.AuditRecord) for record in stored)
    started = time.monotonic()
    report = verify(audit_dsn)
    assert report.ok and report.records == count, report.summary()
    assert time.monotonic() - started < 10
    assert report.anchor is not None and report.anchor.seq == count - 1
    middle = verify(audit_dsn, expected_count=700)
    with psycopg.connect(audit_dsn) as conn:
        hashes: dict[int, str] = dict(conn.execute(
            "SELECT seq, hash FROM wingman_audit WHERE seq IN (699, %s)", (count - 1,)).fetchall())
    assert middle.ok and hashes[count - 1] == report.anchor.hash
    checkpoints = check_signatures(
        [sign_checkpoint(AUDIT_KEY, log="wingman-prd", anchor=AuditAnchor(seq, hashes[seq]),
                         now=dt.datetime.now(dt.UTC)) for seq in (699, count - 1)],
        KeySet.from_mapping({f"{AUDIT_KEY.kid}.pem": AUDIT_KEY.public_pem()}))
    assert verify(audit_dsn, checkpoints=checkpoints).ok

    for seq in (767, 768, 1100):  # the last row of the third fetch, the first of the fourth
        edit = sql.SQL("UPDATE wingman_audit SET record = replace(record, '\"approve\"', "
                       "'\"reject\"') WHERE seq = {}").format(seq)
        undo = sql.SQL("UPDATE wingman_audit SET record = replace(record, '\"reject\"', "
                       "'\"approve\"') WHERE seq = {}").format(seq)
        _as_superuser(audit_dsn, edit)
        try:
            tampered = verify(audit_dsn, checkpoints=checkpoints)
            assert tampered.problem is not None, seq
            assert (tampered.problem.kind, tampered.problem.seq, tampered.records) == (
                ProblemKind.EDITED, seq, seq), tampered.summary()
            out = io.StringIO()
            assert verify_main(audit_dsn, checkpoints=checkpoints, out=out) == 1
            assert out.getvalue().startswith(f"TAMPERED at record {seq} (seq {seq}): Edited"), \
                out.getvalue()
        finally:
            _as_superuser(audit_dsn, undo)
    assert verify(audit_dsn, checkpoints=checkpoints).records == count


_APPEND_BOUNDS = [  # (statement_timeout, lock_timeout) a DBA set -> in force in an append
    (("1s", "500ms"), ("1s", "500ms")),
    (("250ms", None), ("250ms", "10s")),
    ((None, "2s"), ("30s", "2s")),
    (("30s", "10s"), ("30s", "10s")),
    (("0", "0"), ("30s", "10s")),
    (("1min", "1h"), ("30s", "10s")),
    ((None, None), ("30s", "10s")),
]


def _writer(dsn: str, bounds: tuple[str | None, str | None], where: str) -> str:
    """The DSN of a new role that may append to the trail (and note what its appends see in
    ``seen``); ``bounds`` (statement_timeout, lock_timeout) set for that role
    (``where="role"``) or in the DSN (``"dsn"``) as a DBA would."""
    name = str(conninfo_to_dict(dsn)["dbname"])
    role = f"writer_{name[-8:]}"
    options = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT INSERT, SELECT ON wingman_audit TO {}").format(
            sql.Identifier(role)))
        for setting, value in zip(("statement_timeout", "lock_timeout"), bounds, strict=True):
            if value is not None and where == "role":
                conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    sql.Identifier(role), sql.Identifier(setting), sql.Literal(value)))
            elif value is not None:
                options.append(f"-c {setting}={value}")
    writer = dsn.replace("postgres@", f"{role}@", 1)
    return psycopg.conninfo.make_conninfo(writer, options=" ".join(options)) if options \
        else writer


@pytest.mark.parametrize(("dba", "applied"), _APPEND_BOUNDS)
@pytest.mark.parametrize("where", ["role", "dsn"])
def test_appends_keep_lower_timeouts_a_dba_set(
        audit_dsn: str, dba: tuple[str | None, str | None], applied: tuple[str, str],
        where: str) -> None:
    """An append's transaction is bounded by statement_timeout 30 s and lock_timeout 10 s, but
    never raises a lower bound the DBA set for the role or in the DSN (0, no bound, gets ours):
    what is in force while the rows are inserted is noted by a trigger."""
    _fill(audit_dsn, 1)
    writer = _writer(audit_dsn, dba, where)
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE seen (statement_timeout text, lock_timeout text)")
        conn.execute(sql.SQL("GRANT INSERT ON seen TO {}").format(
            sql.Identifier(str(conninfo_to_dict(writer)["user"]))))
        conn.execute("CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "INSERT INTO seen VALUES (current_setting('statement_timeout'), "
                     "current_setting('lock_timeout')); RETURN NULL; END $$")
        conn.execute("CREATE TRIGGER note AFTER INSERT ON wingman_audit FOR EACH ROW "
                     "EXECUTE FUNCTION note()")
    with PostgresSink(writer) as sink:
        sink.append("Step", actor="operator", subject=SUBJECT, data={"i": 0})
        sink.append_all(_group(1, 2))
    with psycopg.connect(audit_dsn) as conn:
        seen = conn.execute("SELECT * FROM seen").fetchall()
    assert len(seen) == 3 and set(seen) == {applied}, seen  # a row each
    assert verify(audit_dsn).ok


@pytest.mark.parametrize(("dba", "why"), [
    (("1s", None), "statement timeout"), ((None, "1s"), "lock timeout")])
def test_an_append_waits_no_longer_than_a_dba_allows(
        audit_dsn: str, dba: tuple[str | None, str | None], why: str) -> None:
    """An append kept waiting for the chain head (here by a session that holds the append's
    advisory lock for 6 s) is cancelled by the DBA's 1 s bound, not by the sink's own 30 s
    and 10 s: it fails as an outage, and the next append goes on with the chain."""
    import wingman.audit.postgres as pg

    first = _fill(audit_dsn, 2)
    writer = _writer(audit_dsn, dba, "role")
    with PostgresSink(writer) as sink, psycopg.connect(audit_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (pg._APPEND_LOCK,))
        release = threading.Timer(6, holder.execute, ("SELECT pg_advisory_unlock_all()",))
        release.start()
        try:
            started = time.monotonic()
            with pytest.raises(AuditUnavailable) as failed:
                sink.append("Step", actor="operator", subject=SUBJECT, data={"i": 0})
            took = time.monotonic() - started
        finally:
            release.join()
        assert took < 5 and why in failed.value.message, (took, failed.value.message)
        after = sink.append("Step", actor="operator", subject=SUBJECT, data={"i": 1})
    assert after.seq == 2 and after.prev == first[-1].hash


def test_the_look_up_after_a_broken_commit_waits_no_longer_than_a_dba_allows(
        audit_dsn: str) -> None:
    """After a connection broke during COMMIT the sink looks the group up under the advisory
    lock; kept waiting for it (here by a session that holds it for 6 s), the look-up is
    cancelled by the DBA's 1 s lock_timeout: the append fails saying its records may have been
    written, instead of waiting the sink's own 10 s."""
    import wingman.audit.postgres as pg

    _fill(audit_dsn, 1)
    proxy = _CommitBreaker(_writer(audit_dsn, (None, "1s"), "role"))
    try:
        with PostgresSink(proxy.dsn) as sink, \
                psycopg.connect(audit_dsn, autocommit=True) as holder:
            look_up = sink._landed

            def held(last: audit.AuditRecord, broke: BaseException) -> bool:
                holder.execute("SELECT pg_advisory_lock(%s)", (pg._APPEND_LOCK,))
                return look_up(last, broke)

            sink._landed = held  # type: ignore[method-assign]
            proxy.mode = "after"
            release = threading.Timer(6, holder.execute, ("SELECT pg_advisory_unlock_all()",))
            started = time.monotonic()
            try:
                with pytest.raises(AuditUnavailable) as failed:
                    release.start()
                    sink.append_all(_group(0, 1))
                took = time.monotonic() - started
            finally:
                release.join()
    finally:
        proxy.close()
    message = failed.value.message
    assert took < 5 and "lock timeout" in message, (took, message)
    assert "may have been written" in message


# --------------------------------------------------------------------------- rows outside the chain


def _row_outside(dsn: str, seq: str, drop: list[str], copy: int) -> None:
    """The table's owner drops ``drop`` (constraints, or seq's NOT NULL) and adds a row at
    ``seq`` (SQL), a copy of the record at ``copy`` otherwise."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in drop:
            conn.execute(statement)
        conn.execute(sql.SQL(
            "INSERT INTO wingman_audit SELECT {}, time, event, actor, subject, data, prev, "
            "'f' || hash, record FROM wingman_audit WHERE seq = {}").format(
            sql.SQL(seq), sql.Literal(copy)))


_OUTSIDE = [
    ("negative", "-1", ["ALTER TABLE wingman_audit DROP CONSTRAINT wingman_audit_seq_check"],
     0, "TAMPERED at record 0 (seq -1): Inserted", "has seq -1, below the chain's first (0)"),
    ("null", "NULL", ["ALTER TABLE wingman_audit DROP CONSTRAINT wingman_audit_pkey",
                      "ALTER TABLE wingman_audit ALTER COLUMN seq DROP NOT NULL"],
     3, "TAMPERED at record 3 (end of log): Inserted", "has no seq (NULL)"),
]


@pytest.mark.parametrize(("seq", "drop", "position", "start", "found"),
                         [o[1:] for o in _OUTSIDE], ids=[o[0] for o in _OUTSIDE])
def test_a_row_outside_the_chain_s_range_is_tampering(
        audit_dsn: str, seq: str, drop: list[str], position: int, start: str,
        found: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The table refuses a negative or NULL seq (its CHECK and primary key); an owner who drops
    them can add such a row, which a read of seq 0 on never sees: verify reads every row and
    names it, whatever it holds (here a copy of a valid record); the sink's reader refuses it,
    and ``wingman audit show`` counts it as a line it could not read, reading on past it."""
    _fill(audit_dsn, 3)
    started = PostgresSink(audit_dsn)  # before the change: a sink starting now refuses
    _row_outside(audit_dsn, seq, drop, 2 if seq == "NULL" else 0)
    report = verify(audit_dsn)
    assert report.problem is not None, report.summary()
    assert (report.problem.kind, report.problem.position) == (ProblemKind.INSERTED, position), \
        report.summary()
    out = io.StringIO()
    assert verify_main(audit_dsn, out=out) == 1
    assert out.getvalue().startswith(start), out.getvalue()
    assert found in out.getvalue() and "outside the chain" in out.getvalue(), out.getvalue()
    with started as sink, pytest.raises(AuditTampered) as refused:
        list(sink.records())
    assert refused.value.reason == "AuditInserted" and found in refused.value.message
    capsys.readouterr()
    assert audit.show_main(audit_dsn, SUBJECT["name"], out=io.StringIO()) == 0
    err = capsys.readouterr().err
    assert "1 line of the trail could not be read as records and was skipped" in err, err
    assert "reading stopped" not in err, err


@pytest.mark.parametrize(("seq", "drop"), [o[1:3] for o in _OUTSIDE], ids=[o[0] for o in _OUTSIDE])
def test_a_resumed_verification_sees_a_row_outside_the_chain_added_since(
        audit_dsn: str, seq: str, drop: list[str]) -> None:
    """A verification resumed where an earlier one ended reads the records from there on,
    which a row with a negative or NULL seq (added once the owner dropped the table's
    constraints) is not among: it still fails, as a verification from the start does, with
    the same message (the operator verifies this way every round)."""
    _fill(audit_dsn, 3)
    earlier = verify(audit_dsn)
    assert earlier.ok and earlier.resume is not None, earlier.summary()
    _row_outside(audit_dsn, seq, drop, 2 if seq == "NULL" else 0)
    full = verify(audit_dsn)
    resumed = verify(audit_dsn, resume=earlier.resume)
    assert full.problem is not None and resumed.problem is not None, resumed.summary()
    assert resumed.problem.kind == full.problem.kind == ProblemKind.INSERTED
    assert resumed.problem.message == full.problem.message, resumed.summary()
    assert resumed.problem.seq == full.problem.seq



def test_the_operator_warns_with_the_sql_when_the_look_up_indexes_are_missing_or_invalid(
        audit_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """A table created by an earlier release lacks the look-up indexes (every gateway run then
    reads the whole table), and a failed CONCURRENTLY build leaves one invalid, which CREATE
    INDEX IF NOT EXISTS skips: the operator's start warns with the statements its owner runs,
    and once they ran, the sink finds nothing to repair."""
    from wingman.operator.run import warn_missing_indexes

    _fill(audit_dsn, 2)
    with PostgresSink(audit_dsn) as sink:
        assert sink.index_repairs == () and not warn_missing_indexes(sink)
    _as_superuser(
        audit_dsn, "DROP INDEX wingman_audit_executions_by_request",
        "UPDATE pg_index SET indisvalid = false "
        "WHERE indexrelid = 'wingman_audit_executions_by_grant'::regclass",
        disable_triggers=False)
    with PostgresSink(audit_dsn) as sink, caplog.at_level("WARNING", logger="wingman.operator"):
        assert warn_missing_indexes(sink)
    said = [r for r in caplog.records if "look-up indexes" in r.getMessage()]
    assert len(said) == 1
    statements: list[str] = said[0].sql  # type: ignore[attr-defined]
    assert statements == [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS wingman_audit_executions_by_request ON "
        "wingman_audit ((data->>'approval_uid')) WHERE event = 'GatewayExecuting';",
        "REINDEX INDEX CONCURRENTLY wingman_audit_executions_by_grant;"]
    _as_superuser(audit_dsn, *statements, disable_triggers=False)
    with PostgresSink(audit_dsn) as sink:
        assert sink.index_repairs == ()
        assert len(sink.executions("no-such-request", "no-such-grant")) == 0
    assert verify(audit_dsn).ok


def test_a_running_sink_links_new_records_to_the_chain_s_last_record_not_to_a_null_seq_row(
        audit_dsn: str) -> None:
    """The owner drops the primary key (and seq's NOT NULL) while a sink runs, which the check
    at start cannot see, and adds a row with no seq holding a copy of the first record: read in
    descending order it comes first (PostgreSQL sorts NULLs first there). The sink's next
    record still follows the chain's last one, never that row (which would put a second record
    at seq 1, a fork)."""
    records = _fill(audit_dsn, 3)
    with PostgresSink(audit_dsn) as sink:  # started before the change
        _row_outside(audit_dsn, "NULL", _OUTSIDE[1][2], 0)
        appended = sink.append("VoteCast", actor="reviewer-0", subject=SUBJECT)
    assert (appended.seq, appended.prev) == (3, records[-1].hash)
    with psycopg.connect(audit_dsn) as conn:
        at_one = conn.execute("SELECT count(*) FROM wingman_audit WHERE seq = 1").fetchone()
    assert at_one == (1,)


@pytest.mark.parametrize(("drop", "lacks"), [
    (["ALTER TABLE wingman_audit DROP CONSTRAINT wingman_audit_seq_check"],
     "lacks its CHECK (seq >= 0):"),
    (["ALTER TABLE wingman_audit DROP CONSTRAINT wingman_audit_pkey"],
     "lacks its primary key on seq:"),
    (["ALTER TABLE wingman_audit DROP CONSTRAINT wingman_audit_seq_check",
      "ALTER TABLE wingman_audit ADD CHECK (seq >= 0) NOT VALID"],
     "lacks its CHECK (seq >= 0):"),
    (["ALTER TABLE wingman_audit DROP CONSTRAINT wingman_audit_pkey",
      "ALTER TABLE wingman_audit ADD UNIQUE (seq)"],
     "lacks its primary key on seq:"),
])
def test_sink_refuses_to_start_on_a_table_without_its_constraints_on_seq(
        audit_dsn: str, drop: list[str], lacks: str) -> None:
    """Without its primary key or CHECK on seq (or with a CHECK that covers no existing row)
    the table takes rows outside the chain, and a second record at a seq from a writer that
    skips the advisory lock: the sink refuses to start, as it does for disarmed triggers, and
    starts again once the owner restored them."""
    _fill(audit_dsn, 2)
    _as_superuser(audit_dsn, *drop, disable_triggers=False)
    with pytest.raises(AuditUnavailable) as refused:
        PostgresSink(audit_dsn)
    assert lacks in refused.value.message and "ADD PRIMARY KEY (seq)" in refused.value.message
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        for name, in conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'wingman_audit'::regclass "
                "AND (contype = 'c' OR conname = 'wingman_audit_seq_key')").fetchall():
            conn.execute(sql.SQL("ALTER TABLE wingman_audit DROP CONSTRAINT {}").format(
                sql.Identifier(name)))
        if "primary key" in lacks:
            conn.execute("ALTER TABLE wingman_audit ADD PRIMARY KEY (seq)")
        conn.execute("ALTER TABLE wingman_audit ADD CHECK (seq >= 0)")
    assert len(_fill(audit_dsn, 1)) == 1
    assert verify(audit_dsn).ok

"""wingman.audit on the file sink: chaining, several writers, tamper detection, failing closed."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import hashlib
import io
import itertools
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import executions
from support.ports import refused_port
from wingman import audit
from wingman.audit import (
    GENESIS_HASH,
    MAX_RECORD_BYTES,
    AuditAnchor,
    AuditRecord,
    FileSink,
    NewRecord,
    ProblemKind,
    fingerprint,
    make_record,
    open_sink,
    show_main,
    verify,
    verify_lines,
    verify_main,
)
from wingman.audit import file as audit_file
from wingman.audit import records as audit_records
from wingman.errors import AuditTampered, AuditUnavailable, ConfigError

OPERATOR_SRC = Path(audit.__file__).resolve().parents[2]
T0 = dt.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
SUBJECT = {"kind": "ExecutionGrant", "namespace": "team-a", "name": "g-1", "uid": "u-1"}


def _clock() -> dt.datetime:
    return T0


def _fill(path: Path, count: int, *, start: int = 0) -> list[AuditRecord]:
    with FileSink(path, clock=_clock) as sink:
        return [
            sink.append(
                "VoteCast",
                actor=f"reviewer-{i % 3}",
                subject=SUBJECT,
                data={"i": i, "vote": "approve" if i % 2 else "reject", "score": i / 7},
            )
            for i in range(start, start + count)
        ]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def _forge(seq: int, prev: str, **data: Any) -> bytes:
    """What an attacker with the source code can build: a self-consistent record."""
    record = make_record(
        seq, prev, "ExecutionResult", actor="gateway", subject=SUBJECT, data=data, now=T0
    )
    return record.to_bytes() + b"\n"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    _fill(path, 10)
    return path


# --------------------------------------------------------------------------- format


def test_record_hash_is_sha256_of_canonical_json_of_the_other_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with FileSink(path) as sink:
        first = sink.append("RequestCreated", actor="alice", subject=SUBJECT,
                            data={"note": "héllo ✓", "n": 1.5}, now=T0)
        second = sink.append("ExecutionIntent", actor="gateway", subject=SUBJECT,
                             data={"argv": ["kubectl", "get", "pods"]})
    stored = [json.loads(line) for line in _lines(path)]
    for obj, record in zip(stored, (first, second), strict=True):
        body = {k: v for k, v in obj.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert obj["hash"] == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        assert obj["hash"] == record.hash
    assert [o["seq"] for o in stored] == [0, 1]
    assert stored[0]["prev"] == GENESIS_HASH == "0" * 64
    assert stored[1]["prev"] == stored[0]["hash"]
    assert stored[0]["time"] == "2025-01-02T03:04:05.678901Z"
    assert stored[1]["time"].endswith("Z")
    assert "héllo ✓" in path.read_text(encoding="utf-8")  # UTF-8, not \\u escapes
    # The stored line is the canonical JSON of the full record, byte for byte.
    assert _lines(path)[0] == first.to_bytes() + b"\n"


def test_time_is_converted_to_utc() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    record = make_record(0, GENESIS_HASH, "Expired", actor="operator", subject={}, data=None,
                         now=dt.datetime(2025, 6, 1, 12, 0, tzinfo=plus_two))
    assert record.time == "2025-06-01T10:00:00.000000Z"
    assert record.at == dt.datetime(2025, 6, 1, 10, 0, tzinfo=dt.UTC)


def test_the_file_sink_finds_what_ran_of_a_request_or_a_grant(tmp_path: Path) -> None:
    """The gateway's look-up before it spends a token: every GatewayExecuting record of the
    request (by its UID) or of the grant, and nothing else, however the UIDs appear."""
    with FileSink(tmp_path / "audit.jsonl") as sink:
        executions.check(sink, executions.fill(sink))


def test_the_file_sink_s_look_up_of_what_ran_fails_closed_on_a_line_it_cannot_read(
        tmp_path: Path) -> None:
    """A line that may be one of the records looked for, unreadable, refuses: the command may
    have run. Lines that cannot be one (another event, neither uid, too long for a record) are
    the verifier's to report."""
    path = tmp_path / "audit.jsonl"
    with FileSink(path) as sink:
        executions.fill(sink)
    kept = path.read_bytes()
    path.write_bytes(kept + b'{"event":"GatewayExecuting","data":{"approval_uid":"'
                     + executions.REQUEST.encode() + b'"},\n')
    with FileSink(path) as sink, pytest.raises(AuditUnavailable, match="wingman audit verify"):
        sink.executions(executions.REQUEST, executions.GRANT)
    path.write_bytes(b"x" * (MAX_RECORD_BYTES + 10) + b"\n" + kept
                     + b'{"event":"GatewayExecuted", broken\n')
    with FileSink(path) as sink:
        assert len(sink.executions(executions.REQUEST, executions.GRANT)) == 3


def test_a_look_up_of_what_ran_without_any_uid_refuses(tmp_path: Path) -> None:
    # it would find nothing, and say nothing ran
    with FileSink(tmp_path / "audit.jsonl") as sink, pytest.raises(
            AuditUnavailable, match="without the request's or the grant's UID"):
        sink.executions("", "")


def test_the_file_sink_s_look_up_of_what_ran_reads_records_across_its_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is searched a chunk at a time: a record cut by a chunk's end is found whole,
    the last one without its newline too, and a record holding both uids once."""
    monkeypatch.setattr(audit_file, "SEARCH_CHUNK_BYTES", 97)
    path = tmp_path / "audit.jsonl"
    with FileSink(path) as sink:
        seqs = executions.fill(sink)
        executions.check(sink, seqs)
        both = sink.append("GatewayExecuting", actor="gateway/p",
                           subject={"kind": "ExecutionGrant", "name": "g",
                                    "uid": executions.GRANT},
                           data={"approval_uid": executions.REQUEST}).seq
    assert [r.seq for r in FileSink(path).executions(executions.REQUEST, executions.GRANT)] \
        == [*seqs, both]
    path.write_bytes(path.read_bytes().removesuffix(b"\n"))
    assert [r.seq for r in FileSink(path).executions(executions.REQUEST, executions.GRANT)] \
        == [*seqs, both]


def test_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    old = os.umask(0)
    try:
        FileSink(path).close()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600


def test_chain_continues_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = _fill(path, 3)
    second = _fill(path, 4, start=3)
    assert [r.seq for r in first + second] == list(range(7))
    assert second[0].prev == first[-1].hash
    report = verify(str(path))
    assert report.ok and report.records == 7
    assert report.head == second[-1].hash
    assert report.anchor == AuditAnchor(6, second[-1].hash)
    with FileSink(path) as sink:
        assert [r.hash for r in sink.records()] == [r.hash for r in first + second]


def test_chain_continues_after_records_larger_than_a_read_block(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with FileSink(path) as sink:
        big = sink.append("ExecutionResult", actor="gateway", subject=SUBJECT,
                          data={"stdout": "x" * 100_000})
        after = sink.append("ExecutionResult", actor="gateway", subject=SUBJECT, data={})
    assert after.prev == big.hash and after.seq == 1
    assert verify(str(path)).ok


def test_empty_log_verifies_with_genesis_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    FileSink(path).close()
    report = verify(str(path))
    assert report.ok and report.records == 0 and report.head == GENESIS_HASH
    assert report.anchor is None


# --------------------------------------------------------------------------- concurrency

_WORKER = """
import os, sys, time
from wingman.audit import FileSink
path, worker, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sink = FileSink(path)
open(go + "." + worker, "w").close()  # ready
while not os.path.exists(go):
    time.sleep(0.001)
for i in range(count):
    sink.append("VoteCast", actor="worker-" + worker, subject={"kind": "Test"},
                data={"worker": worker, "i": i})
sink.close()
"""


def test_several_processes_append_one_contiguous_chain(tmp_path: Path) -> None:
    path, go = tmp_path / "audit.jsonl", tmp_path / "go"
    workers, per_worker = 4, 200
    pythonpath = os.pathsep.join([str(OPERATOR_SRC), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), str(w), str(per_worker), str(go)], env=env
        )
        for w in range(workers)
    ]
    deadline = time.monotonic() + 60  # release the workers together once all are ready
    while not all(Path(f"{go}.{w}").exists() for w in range(workers)):
        assert time.monotonic() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), "a worker died before starting"
        time.sleep(0.01)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * workers

    report = verify(str(path))
    assert report.ok, report.summary()
    assert report.records == workers * per_worker
    with FileSink(path) as sink:
        records = list(sink.records())
    assert [r.seq for r in records] == list(range(workers * per_worker))
    for w in range(workers):
        mine = [r.data["i"] for r in records if r.data["worker"] == str(w)]
        assert mine == list(range(per_worker))  # each worker's appends, once, in order
    # The workers really interleaved (otherwise this test proves nothing about locking).
    switches = sum(1 for a, b in itertools.pairwise(records) if a.actor != b.actor)
    assert switches > workers


def test_a_sink_inherited_across_fork_keeps_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    sink.append("RequestCreated", actor="parent", subject={})
    children = []
    for c in range(2):
        pid = os.fork()
        if pid == 0:  # child: uses the inherited object
            code = 0
            try:
                for i in range(50):
                    sink.append("VoteCast", actor=f"child-{c}", subject={}, data={"i": i})
            except BaseException:  # noqa: BLE001 - report any failure through the exit code
                code = 1
            os._exit(code)
        children.append(pid)
    for i in range(50):
        sink.append("VoteCast", actor="parent", subject={}, data={"i": i})
    assert [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children] == [0, 0]
    sink.close()
    report = verify(str(path))
    assert report.ok, report.summary()
    assert report.records == 151


# --------------------------------------------------------------------------- tampering


def test_edited_field_is_detected_and_located(log: Path) -> None:
    lines = _lines(log)
    lines[3] = lines[3].replace(b'"vote":"approve"', b'"vote":"reject!"')
    _write(log, lines)
    report = verify(str(log))
    assert not report.ok and report.problem is not None
    assert (report.problem.kind, report.problem.position, report.problem.line) == (
        ProblemKind.EDITED, 3, 4)
    assert report.problem.seq == 3
    assert report.records == 3
    assert "does not match" in report.problem.message


def test_edited_and_rehashed_record_breaks_the_next_link(log: Path) -> None:
    lines = _lines(log)
    original = json.loads(lines[4])
    lines[4] = _forge(4, original["prev"], i=4, vote="approve", forged=True)
    _write(log, lines)
    problem = verify(str(log)).problem
    assert problem is not None
    assert (problem.kind, problem.position, problem.line) == (ProblemKind.BROKEN_LINK, 5, 6)


def test_deleted_line_is_detected_and_located(log: Path) -> None:
    lines = _lines(log)
    del lines[6]
    _write(log, lines)
    problem = verify(str(log)).problem
    assert problem is not None
    assert (problem.kind, problem.position, problem.seq) == (ProblemKind.DELETED, 6, 7)
    assert "seq 6" in problem.message


def test_inserted_forged_line_is_detected_and_located(log: Path) -> None:
    lines = _lines(log)
    prev = json.loads(lines[2])["hash"]
    lines.insert(3, _forge(3, prev, forged=True))  # a perfect-looking record 3
    _write(log, lines)
    problem = verify(str(log)).problem
    assert problem is not None
    assert (problem.kind, problem.position, problem.line) == (ProblemKind.INSERTED, 3, 4)


def test_inserted_copy_of_another_line_is_detected(log: Path) -> None:
    lines = _lines(log)
    lines.insert(2, lines[7])
    _write(log, lines)
    problem = verify(str(log)).problem
    assert problem is not None
    assert (problem.kind, problem.position) == (ProblemKind.INSERTED, 2)


def test_swapped_lines_are_detected_as_reordered(log: Path) -> None:
    lines = _lines(log)
    lines[4], lines[5] = lines[5], lines[4]
    _write(log, lines)
    problem = verify(str(log)).problem
    assert problem is not None
    assert (problem.kind, problem.position, problem.line) == (ProblemKind.REORDERED, 4, 5)


def test_truncated_tail_needs_an_anchor(log: Path) -> None:
    head = verify(str(log))
    assert head.ok and head.anchor is not None
    _write(log, _lines(log)[:7])
    # The chain alone cannot see a clean cut at a record boundary...
    assert verify(str(log)).ok
    # ...an anchor, a recorded head or a count can.
    for report in (
        verify(str(log), anchor=head.anchor),
        verify(str(log), expected_head=f"sha256:{head.head}"),
        verify(str(log), expected_count=10),
    ):
        assert report.problem is not None
        assert (report.problem.kind, report.problem.position) == (ProblemKind.TRUNCATED, 7)
    # An older anchor (the log grew since) still verifies.
    assert verify(str(log), anchor=AuditAnchor(3, json.loads(_lines(log)[3])["hash"])).ok


def test_partial_last_line_is_truncation(log: Path) -> None:
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 40])
    problem = verify(str(log)).problem
    assert problem is not None
    assert (problem.kind, problem.position, problem.line) == (ProblemKind.TRUNCATED, 9, 10)


def test_rewritten_chain_is_caught_only_by_an_anchor(log: Path) -> None:
    anchor = verify(str(log)).anchor
    assert anchor is not None
    # Whoever can rewrite the whole file can rebuild a consistent chain from an edit on.
    records = [json.loads(line) for line in _lines(log)]
    prev = records[1]["hash"]
    rebuilt = [line for line in _lines(log)[:2]]
    for obj in records[2:]:
        data = {**obj["data"], "vote": "approve"}
        line = _forge(obj["seq"], prev, **data)
        prev = json.loads(line)["hash"]
        rebuilt.append(line)
    _write(log, rebuilt)
    assert verify(str(log)).ok
    problem = verify(str(log), anchor=anchor).problem
    assert problem is not None
    assert (problem.kind, problem.position) == (ProblemKind.REWRITTEN, 9)


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda line: b"not json\n", ProblemKind.MALFORMED),
        (lambda line: b"\n", ProblemKind.MALFORMED),
        (lambda line: b"[1,2]\n", ProblemKind.MALFORMED),
        (lambda line: line.replace(b'"seq":', b'"seQ":'), ProblemKind.MALFORMED),
        (lambda line: line.replace(b'"actor"', b'"actor" '), ProblemKind.EDITED),
        (lambda line: line.replace(b"\n", b"\r\n"), ProblemKind.EDITED),
        (lambda line: line[:5] + b"\xff" + line[6:], ProblemKind.MALFORMED),
    ],
)
def test_malformed_or_non_canonical_lines_are_detected(log: Path, mutate: Any, kind: str) -> None:
    lines = _lines(log)
    lines[5] = mutate(lines[5])
    _write(log, lines)
    problem = verify(str(log)).problem
    assert problem is not None
    assert (problem.kind, problem.position) == (kind, 5)


def test_a_nul_byte_in_a_record_is_reported_readably(log: Path) -> None:
    lines = _lines(log)
    lines[2] = lines[2].replace(b'"actor":"', b'"actor":"\x00', 1)
    _write(log, lines)
    problem = verify(str(log)).problem
    assert problem is not None and (problem.kind, problem.line) == (ProblemKind.MALFORMED, 3)
    assert problem.message.startswith("the stored record is not JSON (Invalid control "
                                      "character at column "), problem.message


def test_same_value_in_another_spelling_is_an_edit(tmp_path: Path) -> None:
    # 1e+16 and 1E+16 parse to the same float: only a byte-exact check sees the change.
    path = tmp_path / "audit.jsonl"
    with FileSink(path) as sink:
        sink.append("VoteCast", actor="a", subject={}, data={"x": 1e16})
    path.write_bytes(path.read_bytes().replace(b"1e+16", b"1E+16"))
    problem = verify(str(path)).problem
    assert problem is not None and problem.kind == ProblemKind.EDITED


def _valid_log_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        with FileSink(path, clock=_clock) as sink:
            for i in range(4):
                sink.append("ExecutionResult", actor="gateway", subject=SUBJECT,
                            data={"exit": i, "out": "ünïcode ✓\n\"q\"", "t": 0.25, "n": None})
        return path.read_bytes()


VALID_LOG = _valid_log_bytes()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, len(VALID_LOG) - 1), byte=st.integers(0, 255))
def test_any_single_byte_change_is_detected(position: int, byte: int) -> None:
    if VALID_LOG[position] == byte:
        byte = (byte + 1) % 256
    tampered = bytearray(VALID_LOG)
    tampered[position] = byte
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        path.write_bytes(bytes(tampered))
        report = verify(str(path))
    assert not report.ok


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63) + 1, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=["Cs"]))
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(st.characters(blacklist_categories=["Cs"]), max_size=8), inner,
                      max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=8), _json, max_size=4), min_size=1, max_size=5))
def test_any_json_data_round_trips_through_a_verified_chain(datas: list[dict[str, Any]]) -> None:
    prev, lines = GENESIS_HASH, []
    for seq, data in enumerate(datas):
        record = make_record(seq, prev, "Custom", actor="a", subject={}, data=data, now=T0)
        lines.append(record.to_bytes() + b"\n")
        assert json.loads(record.to_bytes())["data"] == data
        # made with the hash, the stored form is still the canonical JSON of the eight fields
        assert record.to_bytes() == _canonical({**record.body(), "hash": record.hash})
        assert record.hash == hashlib.sha256(_canonical(record.body())).hexdigest()
        prev = record.hash
    report = verify_lines(io.BytesIO(b"".join(lines)))
    assert report.ok, report.summary()
    assert report.head == prev


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def test_a_copy_of_a_record_with_another_field_stores_its_own_bytes() -> None:
    record = make_record(0, GENESIS_HASH, "Custom", actor="a", subject={}, data={"n": 1},
                         now=T0)
    edited = dataclasses.replace(record, data={"n": 2})
    assert json.loads(edited.to_bytes())["data"] == {"n": 2}
    assert edited.to_bytes() == _canonical({**edited.body(), "hash": edited.hash})


def test_a_sinks_screen_then_chain_makes_the_same_records_as_make_record() -> None:
    entries = [NewRecord("VoteCast", "operator", SUBJECT, {"note": "héllo ✓", "n": [1, 2.5]}, T0),
               NewRecord("VoteCast", "operator", SUBJECT, None, T0)]
    refused, valid = audit_records.screen(entries)
    assert refused == [None, None]
    chained = audit_records.chain(3, GENESIS_HASH, valid, _clock)
    first = make_record(3, GENESIS_HASH, "VoteCast", actor="operator", subject=SUBJECT,
                        data=entries[0].data, now=T0)
    assert chained[0] == first and isinstance(chained[0], AuditRecord)
    assert chained[0].to_bytes() == first.to_bytes() == _canonical(
        {**first.body(), "hash": first.hash})
    assert isinstance(chained[1], AuditRecord) and chained[1].prev == first.hash


def test_content_changed_after_the_screen_is_not_what_gets_written() -> None:
    data: dict[str, Any] = {"note": "checked"}
    _, valid = audit_records.screen([NewRecord("VoteCast", "operator", SUBJECT, data, T0)])
    data["note"] = _real_jwt()  # a caller (or another thread) changing its dict afterwards
    (record,) = audit_records.chain(0, GENESIS_HASH, valid, _clock)
    assert isinstance(record, AuditRecord) and record.data == {"note": "checked"}
    assert b"eyJ" not in record.to_bytes()


def test_chain_checks_entries_that_did_not_come_through_the_screen() -> None:
    bad = NewRecord("VoteCast", "operator", SUBJECT, {"token": _real_jwt()}, T0)
    good = NewRecord("VoteCast", "operator", SUBJECT, {"i": 1}, T0)
    refused, record = audit_records.chain(0, GENESIS_HASH, [bad, good], _clock)
    assert isinstance(refused, AuditUnavailable) and refused.reason == "AuditRecordRejected"
    assert isinstance(record, AuditRecord) and record.seq == 0
    first, second = audit_records.chain(0, "not-a-hash", [good, good], _clock)
    assert isinstance(first, AuditUnavailable) and isinstance(second, AuditUnavailable)
    assert first is not second and "prev must be 64 lowercase hex digits" in first.message


# --------------------------------------------------------------------------- secrets & content


def _real_jwt() -> str:
    return jwt.encode({"sub": "gateway", "jti": "abc"}, "k" * 32, algorithm="HS256")


@pytest.mark.parametrize(
    "where",
    ["data", "nested", "list", "key", "subject", "actor", "embedded"],
)
def test_jwt_shaped_values_are_refused_and_not_echoed(tmp_path: Path, where: str) -> None:
    token = _real_jwt()
    kwargs: dict[str, Any] = {"actor": "operator", "subject": SUBJECT, "data": {}}
    if where == "data":
        kwargs["data"] = {"token": token}
    elif where == "nested":
        kwargs["data"] = {"a": {"b": {"c": token}}}
    elif where == "list":
        kwargs["data"] = {"argv": ["curl", "-H", token]}
    elif where == "key":
        kwargs["data"] = {token: 1}
    elif where == "subject":
        kwargs["subject"] = {**SUBJECT, "name": token}
    elif where == "actor":
        kwargs["actor"] = token
    else:
        kwargs["data"] = {"header": f"Authorization: Bearer {token}"}
    path = tmp_path / "audit.jsonl"
    with FileSink(path) as sink:
        sink.append("RequestCreated", actor="operator", subject=SUBJECT)
        before = path.read_bytes()
        with pytest.raises(AuditUnavailable) as caught:
            sink.append("TokenMinted", **kwargs)
    assert caught.value.reason == "AuditRecordRejected"
    assert token not in str(caught.value)
    assert token.split(".")[1] not in str(caught.value)
    assert path.read_bytes() == before  # nothing was written


def _encodings(token: str) -> list[str]:
    """How a token travels base64-encoded: alone (a Secret's data), after other text (a
    header, a kubeconfig), in either alphabet, at each alignment."""
    out = []
    for before in ("", "B", "Bearer ", '{"token":"', "users:\n- user:\n    token: ",
                   "\x00\x9c\xff"):
        raw = (before + token + '"').encode()
        out += [base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]
    # a token written with padding or in the standard alphabet
    header, payload, signature = token.split(".")
    for shape in (f"{header}==.{payload}=.{signature}==",
                  f"{header}.{payload.replace('-', '+').replace('_', '/')}+/.{signature}"):
        out.append(base64.b64encode(('{"token":"' + shape + '"}').encode()).decode())
    return out


def test_the_base64_of_a_token_is_refused_like_the_token(tmp_path: Path) -> None:
    token = _real_jwt()
    for encoded in _encodings(token):
        for text in (encoded, f"kubectl patch secret s -p '{{\"data\":{{\"t\":\"{encoded}\"}}}}'"):
            assert audit.looks_like_token(text), text
            with FileSink(tmp_path / "a.jsonl") as sink, pytest.raises(AuditUnavailable) as caught:
                sink.append("TokenMinted", actor="operator", subject=SUBJECT,
                            data={"command": text})
            assert caught.value.reason == "AuditRecordRejected"
            assert encoded not in str(caught.value)
    assert not (tmp_path / "a.jsonl").read_bytes()


def test_base64_that_holds_no_token_is_recorded(tmp_path: Path) -> None:
    """Random base64 (a ConfigMap's binaryData, a digest) is recorded, even where it happens to
    hold what an encoded token starts with: only text that decodes to a token is refused."""
    noise = [base64.b64encode(os.urandom(3000)).decode() for _ in range(20)]
    noise += ["ZXlK" + "A" * 40, "xV5S" + "B" * 40, "xxleU" + "C" * 40,
              base64.b64encode(b'{"eyJ": "not a token"}').decode(),
              base64.b64encode(b"eyJhbGciOi but no dots").decode(),
              # binary that holds ``eyJ`` and dots, but no run of a token's alphabet
              base64.b64encode(b"\x00\xffeyJ\x01.\x02.\x03\x9c").decode(),
              base64.b64encode(b"\x93\x12eyJ\xfe\xfe.\x00\x80.\x7f" * 3).decode(),
              # an env file: a base64 JSON value, then a host name on the next line
              base64.b64encode(b"CONFIG=eyJhIjoxfQ==\nHOST=api.example.com\n").decode(),
              base64.b64encode(b"CONFIG=eyJhIjoxfQ==\r\nVERSION=1.2.3\r\n").decode()]
    with FileSink(tmp_path / "a.jsonl") as sink:
        for text in noise:
            assert not audit.looks_like_token(text), text
            sink.append("GatewayExecuted", actor="gateway", subject=SUBJECT,
                        data={"output": text})


def test_token_fingerprints_are_accepted(tmp_path: Path) -> None:
    token = _real_jwt()
    with FileSink(tmp_path / "a.jsonl") as sink:
        record = sink.append("TokenMinted", actor="operator", subject=SUBJECT,
                             data={"token": fingerprint(token), "jti": "abc"})
    assert record.data["token"] == "sha256:" + hashlib.sha256(token.encode()).hexdigest()
    assert token not in (tmp_path / "a.jsonl").read_text()


def test_a_value_longer_than_a_record_is_refused_for_its_size_before_it_is_read(
        tmp_path: Path) -> None:
    """A value no record can hold is refused for its size, saying so, without first being read
    for tokens (hostile text costs that read about a second a megabyte)."""
    path = tmp_path / "audit.jsonl"
    value = "ZXlK " * (audit.MAX_RECORD_BYTES // 5 + 1) + "eyJhbGciOiJub25lIn0.e30.x"
    with FileSink(path) as sink, pytest.raises(AuditUnavailable) as refused:
        sink.append("VoteCast", actor="operator", subject={}, data={"x": value}, now=T0)
    assert refused.value.reason == "AuditRecordRejected"
    assert "longer than a whole record" in refused.value.message
    assert "JWT" not in refused.value.message
    assert path.read_bytes() == b""


@pytest.mark.parametrize(
    ("event", "data", "now"),
    [
        ("VoteCast", {"x": float("nan")}, T0),
        ("VoteCast", {"x": float("inf")}, T0),
        ("VoteCast", {"x": {1, 2}}, T0),
        ("VoteCast", {1: "int key"}, T0),
        ("VoteCast", {"x": "\ud800"}, T0),
        ("VoteCast", {"x": "a" * (audit.MAX_RECORD_BYTES + 1)}, T0),
        ("vote cast", {}, T0),
        ("", {}, T0),
        ("VoteCast", {}, dt.datetime(2025, 1, 1)),  # naive on purpose
    ],
)
def test_unauditable_content_is_refused(
    tmp_path: Path, event: str, data: Any, now: dt.datetime
) -> None:
    path = tmp_path / "audit.jsonl"
    with FileSink(path) as sink, pytest.raises(AuditUnavailable) as caught:
        sink.append(event, actor="operator", subject={}, data=data, now=now)
    assert caught.value.reason == "AuditRecordRejected"
    assert path.read_bytes() == b""


# --------------------------------------------------------------------------- group commit


def test_append_all_writes_a_group_in_order_as_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with FileSink(path, clock=_clock) as sink:
        first = sink.append("RequestCreated", actor="operator", subject=SUBJECT)
        group = sink.append_all([NewRecord(f"Step{i}", "operator", SUBJECT, {"i": i})
                                 for i in range(5)])
        after = sink.append("RequestDone", actor="operator", subject=SUBJECT)
    records = [r for r in group if isinstance(r, AuditRecord)]
    assert len(records) == 5
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert [r.data["i"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0].prev == first.hash and after.prev == records[-1].hash
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == list(range(7))
    assert verify(str(path), expected_head=after.hash).ok


def test_a_refused_entry_fails_alone_and_the_rest_of_its_group_is_written(
        tmp_path: Path) -> None:
    token = _real_jwt()
    path = tmp_path / "audit.jsonl"
    with FileSink(path) as sink:
        results = sink.append_all([
            NewRecord("Before", "operator", SUBJECT),
            NewRecord("TokenMinted", "operator", SUBJECT, {"token": token}),
            NewRecord("After", "operator", SUBJECT)])
        nothing = sink.append_all([NewRecord("vote cast", "operator", SUBJECT)])
    before, refused, after = results
    assert isinstance(refused, AuditUnavailable) and refused.reason == "AuditRecordRejected"
    assert token not in str(refused)
    assert isinstance(before, AuditRecord) and isinstance(after, AuditRecord)
    assert (before.seq, after.seq, after.prev) == (0, 1, before.hash)
    assert isinstance(nothing[0], AuditUnavailable)
    assert token not in path.read_text()
    assert len(path.read_text().splitlines()) == 2 and verify(str(path)).ok


def test_an_entry_refused_only_at_its_place_in_the_chain_fails_alone(log: Path) -> None:
    """Checked before the file is touched, a record just under the size limit passes; at seq
    10 (one digit more) it is over: it is refused there, and the others are still written."""
    def fits(pad: str, seq: int) -> bool:
        try:
            make_record(seq, GENESIS_HASH, "VoteCast", actor="operator", subject=SUBJECT,
                        data={"pad": pad}, now=T0)
        except AuditUnavailable:
            return False
        return True
    empty = len(make_record(0, GENESIS_HASH, "VoteCast", actor="operator", subject=SUBJECT,
                            data={"pad": ""}, now=T0).to_bytes())
    pad = "x" * (audit.MAX_RECORD_BYTES - empty)
    assert fits(pad, 0) and not fits(pad, 10)
    with FileSink(log, clock=_clock) as sink:
        before, refused, after = sink.append_all([
            NewRecord("VoteCast", "operator", SUBJECT, {"i": 1}),
            NewRecord("VoteCast", "operator", SUBJECT, {"pad": pad}, T0),
            NewRecord("VoteCast", "operator", SUBJECT, {"i": 2})])
    assert isinstance(refused, AuditUnavailable) and refused.reason == "AuditRecordRejected"
    assert isinstance(before, AuditRecord) and isinstance(after, AuditRecord)
    assert (before.seq, after.seq, after.prev) == (10, 11, before.hash)
    assert verify(str(log)).records == 12


def test_entries_that_follow_a_refused_one_are_refused_and_the_rest_is_written(
        tmp_path: Path) -> None:
    """A unit (``follows``): as if its caller had appended one by one and stopped at the
    refusal. An entry that does not follow is written on its own merit."""
    token = _real_jwt()
    path = tmp_path / "audit.jsonl"
    with FileSink(path) as sink:
        results = sink.append_all([
            NewRecord("Claimed", "operator", SUBJECT),
            NewRecord("TokenMinted", "operator", SUBJECT, {"token": token}, follows=True),
            NewRecord("GrantAuthorized", "operator", SUBJECT, follows=True),
            NewRecord("Again", "operator", SUBJECT, follows=True),
            NewRecord("Other", "operator", SUBJECT)])
    claimed, refused, authorized, again, other = results
    assert isinstance(refused, AuditUnavailable) and "data.token" in refused.message
    for cascaded in (authorized, again):
        assert isinstance(cascaded, AuditUnavailable)
        assert cascaded.reason == "AuditRecordRejected"
        assert "the record before it in its unit" in cascaded.message
    assert isinstance(claimed, AuditRecord) and isinstance(other, AuditRecord)
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == \
        ["Claimed", "Other"]
    assert verify(str(path)).ok


def test_a_following_entry_is_stored_exactly_as_one_appended_alone() -> None:
    """``follows`` is about whether a record is written, never part of it."""
    entries = [NewRecord("VoteCast", "operator", SUBJECT, {"i": 0}, T0),
               NewRecord("VoteCast", "operator", SUBJECT, {"i": 1}, T0, follows=True)]
    _, valid = audit_records.screen(entries)
    first, second = audit_records.chain(0, GENESIS_HASH, valid, _clock)
    assert isinstance(first, AuditRecord) and isinstance(second, AuditRecord)
    alone = make_record(1, first.hash, "VoteCast", actor="operator", subject=SUBJECT,
                        data={"i": 1}, now=T0)
    assert second.to_bytes() == alone.to_bytes() and b"follows" not in second.to_bytes()


def test_an_entry_refused_at_its_place_takes_the_entries_that_follow_it(log: Path) -> None:
    """The size is checked again at the record's place in the chain: a refusal there refuses
    the entries of its unit after it as well (the screen let all of them through)."""
    empty = len(make_record(0, GENESIS_HASH, "VoteCast", actor="operator", subject=SUBJECT,
                            data={"pad": ""}, now=T0).to_bytes())
    pad = "x" * (audit.MAX_RECORD_BYTES - empty)  # fits at seq 0, not at seq 10
    with FileSink(log, clock=_clock) as sink:
        before, refused, follower, other = sink.append_all([
            NewRecord("VoteCast", "operator", SUBJECT, {"i": 1}),
            NewRecord("VoteCast", "operator", SUBJECT, {"pad": pad}, T0, follows=True),
            NewRecord("VoteCast", "operator", SUBJECT, {"i": 2}, follows=True),
            NewRecord("VoteCast", "operator", SUBJECT, {"i": 3})])
    assert isinstance(refused, AuditUnavailable) and "larger than" in refused.message
    assert isinstance(follower, AuditUnavailable)
    assert "the record before it in its unit" in follower.message
    assert isinstance(before, AuditRecord) and isinstance(other, AuditRecord)
    assert (before.seq, other.seq, other.prev) == (10, 11, before.hash)
    assert verify(str(log)).records == 12


def test_a_group_that_fails_part_way_leaves_none_of_its_records(log: Path) -> None:
    before = log.read_bytes()
    line = len(before.splitlines()[-1]) + 1

    def attempt() -> int:
        # like a full disk: the first record of the group fits, the second does not
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = log.stat().st_size + line + line // 2
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        sink = FileSink(log, clock=_clock)
        try:
            sink.append_all([NewRecord("VoteCast", "reviewer-1", SUBJECT, {"i": i})
                             for i in range(3)])
        except AuditUnavailable:
            return 0
        return 1

    assert _in_child(attempt) == 0
    assert log.read_bytes() == before
    assert verify(str(log)).ok


def test_a_token_used_as_an_event_or_as_keys_is_never_repeated_in_the_refusal(
        tmp_path: Path) -> None:
    token = _real_jwt()
    header, payload, signature = token.split(".")
    with FileSink(tmp_path / "audit.jsonl") as sink:
        results = sink.append_all([
            NewRecord(token, "operator", SUBJECT),
            # each key alone is no token; the path to the refused value would spell one
            NewRecord("VoteCast", "operator", SUBJECT,
                      {header: {payload: {signature: float("nan")}}})])
    assert all(isinstance(r, AuditUnavailable) for r in results)
    for refused in results:
        assert not audit.looks_like_token(str(refused)) and payload not in str(refused)
    assert (tmp_path / "audit.jsonl").read_bytes() == b""


def test_a_group_the_sink_cannot_write_raises_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    sink.append("RequestCreated", actor="operator", subject=SUBJECT)
    before = path.read_bytes()
    sink.close()
    with pytest.raises(AuditUnavailable, match="closed"):
        sink.append_all([NewRecord("Step", "operator", SUBJECT) for _ in range(3)])
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- failing closed


def test_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AuditUnavailable, match="create the directory"):
        FileSink(tmp_path / "no" / "such" / "audit.jsonl")
    with pytest.raises(AuditUnavailable):
        open_sink(str(tmp_path / "missing-dir" / "audit.jsonl"))


def _in_child(target: Any) -> int:
    """Run ``target()`` in a forked child; its return value is the exit code."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = target()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_unwritable_directory_is_unavailable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)

    def attempt() -> int:
        if os.geteuid() == 0:  # root ignores permission bits: become an ordinary user
            os.setgid(65534)
            os.setuid(65534)
        else:
            locked.chmod(0o555)
        try:
            FileSink(locked / "audit.jsonl")
        except AuditUnavailable as exc:
            return 0 if "writable" in str(exc) else 2
        return 1

    assert _in_child(attempt) == 0
    assert not (locked / "audit.jsonl").exists()


def test_failed_write_is_unavailable_and_rolled_back(log: Path) -> None:
    before = log.read_bytes()

    def attempt() -> int:
        # The file may not grow: like a full disk, the write fails part-way.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        size = log.stat().st_size
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, size + 20))
        sink = FileSink(log)
        try:
            sink.append("ExecutionIntent", actor="gateway", subject=SUBJECT, data={"x": 1})
        except AuditUnavailable:
            return 0
        return 1

    assert _in_child(attempt) == 0
    assert log.read_bytes() == before  # our partial line was removed
    assert verify(str(log)).ok
    _fill(log, 1, start=10)  # and the log stays usable
    assert verify(str(log)).records == 11


def test_append_refuses_a_log_with_a_partial_last_line(log: Path) -> None:
    data = log.read_bytes()
    log.write_bytes(data[:-30])
    with FileSink(log) as sink, pytest.raises(AuditUnavailable, match="incomplete record"):
        sink.append("VoteCast", actor="a", subject={})


def test_append_refuses_when_the_last_record_was_edited(log: Path) -> None:
    lines = _lines(log)
    lines[-1] = lines[-1].replace(b'"reviewer-0"', b'"reviewer-X"')
    _write(log, lines)
    with FileSink(log) as sink, pytest.raises(AuditUnavailable, match="does not verify"):
        sink.append("VoteCast", actor="a", subject={})


def test_append_refuses_when_the_file_was_replaced(log: Path) -> None:
    with FileSink(log) as sink:
        sink.append("VoteCast", actor="a", subject={})
        log.rename(log.with_suffix(".old"))
        with pytest.raises(AuditUnavailable, match="removed or replaced"):
            sink.append("VoteCast", actor="a", subject={})
        log.write_bytes(b"")
        with pytest.raises(AuditUnavailable, match="removed or replaced"):
            sink.append("VoteCast", actor="a", subject={})


def test_closed_sink_is_unavailable(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "a.jsonl")
    sink.close()
    with pytest.raises(AuditUnavailable, match="closed"):
        sink.append("VoteCast", actor="a", subject={})


def test_records_raises_on_a_tampered_line(log: Path) -> None:
    lines = _lines(log)
    lines[2] = b"garbage\n"
    _write(log, lines)
    with FileSink(log) as sink, pytest.raises(AuditTampered):
        list(sink.records())


# --------------------------------------------------------------------------- targets & CLI


def test_open_sink_accepts_paths_and_file_urls(tmp_path: Path) -> None:
    for target in (str(tmp_path / "a.jsonl"), f"file://{tmp_path}/b.jsonl",
                   f"file://localhost{tmp_path}/c%20d.jsonl"):
        sink = open_sink(target)
        sink.append("VoteCast", actor="a", subject={})
        sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl", "c d.jsonl"]
    assert verify(f"file://{tmp_path}/c%20d.jsonl").records == 1


@pytest.mark.parametrize(
    "target",
    ["", "   ", "ftp://host/x", "file://otherhost/var/log/a", "file:///x?y=1",
     "mysql://u@h/db", "postgresql://u@h:notaport/db",
     "postgresql://u@h:\u0665\u0664\u0663\u0662/db"],  # 5432 in Arabic-Indic digits
)
def test_bad_targets_are_config_errors(target: str) -> None:
    with pytest.raises(ConfigError):
        open_sink(target)
    assert verify_main(target, out=io.StringIO()) == 2


@pytest.mark.parametrize("target", ["file:///var/log/a%00b.jsonl", "/var/log/a\x00b.jsonl"])
def test_a_file_target_with_a_nul_byte_is_a_config_error(target: str,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    with pytest.raises(ConfigError, match="NUL"):
        open_sink(target)
    out = io.StringIO()
    assert verify_main(target, out=out) == 2
    assert out.getvalue().startswith("UNREADABLE: audit target"), out.getvalue()
    assert show_main(target, "x") == 2
    assert "NUL" in capsys.readouterr().err


def test_unreachable_database_is_unavailable_and_hides_the_password() -> None:
    with refused_port() as port:
        dsn = f"postgresql://wingman:s3cr3t-pw@127.0.0.1:{port}/audit"
        with pytest.raises(AuditUnavailable) as caught:
            open_sink(dsn)
        assert "s3cr3t-pw" not in str(caught.value)
        assert f"127.0.0.1:{port}/audit" in str(caught.value)
        out = io.StringIO()
        assert verify_main(dsn, out=out) == 2
        assert "s3cr3t-pw" not in out.getvalue()


@pytest.mark.parametrize("password", ["s3/cr3t", "s3@cr3t", "s3/c@r/3t", "s3cr3t/"])
def test_a_dsn_whose_password_libpq_would_misread_is_refused_unseen(password: str) -> None:
    # libpq ends the password at the first '/' or '@': the rest would become the host, the
    # port or the database name, be connected to, and show in every message
    dsn = f"postgresql://wingman:{password}@127.0.0.1:1/audit?sslmode=disable"
    with pytest.raises(ConfigError) as caught:
        open_sink(dsn)
    assert "percent-encode" in caught.value.message
    assert "postgresql://***@127.0.0.1:1/audit?…" in caught.value.message
    out = io.StringIO()
    assert verify_main(dsn, out=out) == 2
    for shown in (caught.value.message, out.getvalue()):
        assert "s3" not in shown and "3t" not in shown and "wingman:" not in shown


@pytest.mark.parametrize("password", ["s3?cr3t", "s3#cr3t", "s3cr3t"])
def test_a_dsn_password_libpq_reads_whole_never_shows(password: str) -> None:
    with refused_port() as port, pytest.raises(AuditUnavailable) as caught:
        dsn = f"postgresql://wingman:{password}@127.0.0.1:{port}/audit"
        open_sink(dsn)
    assert "s3" not in str(caught.value) and "cr3t" not in str(caught.value)
    assert f"wingman@127.0.0.1:{port}/audit" in str(caught.value)


def test_verify_main_prints_ok_and_returns_zero(log: Path) -> None:
    out = io.StringIO()
    head = verify(str(log)).head
    assert verify_main(str(log), out=out) == 0
    assert out.getvalue() == f"OK: 10 records, head sha256:{head}\n"
    assert verify_main(str(log), expected_head=head, out=io.StringIO()) == 0


def test_verify_main_reports_where_and_how(log: Path) -> None:
    lines = _lines(log)
    lines[3] = lines[3].replace(b'"i":3', b'"i":4')
    _write(log, lines)
    out = io.StringIO()
    assert verify_main(str(log), out=out) == 1
    assert out.getvalue().startswith("TAMPERED at record 3 (line 4): Edited — stored hash sha256:")
    with pytest.raises(AuditTampered) as caught:
        verify(str(log)).raise_if_tampered()
    assert caught.value.reason == "AuditEdited"


def test_verify_main_with_a_head_that_is_gone(log: Path) -> None:
    head = verify(str(log)).head
    _write(log, _lines(log)[:-1])
    out = io.StringIO()
    assert verify_main(str(log), expected_head=f"sha256:{head}", out=out) == 1
    assert "Truncated" in out.getvalue()


def test_verify_main_unreadable_target(tmp_path: Path) -> None:
    out = io.StringIO()
    assert verify_main(str(tmp_path / "absent.jsonl"), out=out) == 2
    assert out.getvalue().startswith("UNREADABLE: ")
    assert not (tmp_path / "absent.jsonl").exists()  # verifying never creates the log


def test_anchor_text_round_trips() -> None:
    anchor = AuditAnchor(41, "ab" * 32)
    assert AuditAnchor.parse(str(anchor)) == anchor
    assert AuditAnchor.parse(f"41:{'ab' * 32}") == anchor
    # str.isdigit also says yes to "\u0664\u0661" (Arabic-Indic 41, which int() reads) and
    # to "\u00b2" (which int() refuses): a sequence number is ASCII digits
    for bad in ("41", "x:sha256:" + "ab" * 32, "41:sha256:XYZ", "-1:" + "ab" * 32,
                "\u0664\u0661:" + "ab" * 32, "\u00b2:" + "ab" * 32):
        with pytest.raises(ConfigError):
            AuditAnchor.parse(bad)


APPEND_IN_A_CHILD = r'''
import sys
from wingman.audit import open_sink
open_sink(sys.argv[1]).append("Late", actor="a", subject={"kind": "X"})
'''


def test_while_appends_are_held_no_other_process_appends(tmp_path: Path) -> None:
    """``appends_held``: what a process about to kill an appender holds, so that no append is
    cut short: another process's append waits until it ends, then goes on whole."""
    log = tmp_path / "audit.jsonl"
    open_sink(str(log)).append("First", actor="a", subject={"kind": "X"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with audit.appends_held(str(log), 5) as held:
        assert held is True
        child = subprocess.Popen([sys.executable, "-c", APPEND_IN_A_CHILD, str(log)], env=env)
        time.sleep(1.0)
        assert child.poll() is None  # waiting for the lock
        assert [json.loads(line)["event"] for line in log.read_text().splitlines()] == ["First"]
    assert child.wait(timeout=30) == 0
    assert [json.loads(line)["event"] for line in log.read_text().splitlines()] == \
        ["First", "Late"]
    assert verify(str(log)).ok


def test_appends_held_gives_up_after_its_seconds_and_holds_nothing_for_postgres(
        tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.touch()
    with audit.appends_held(str(log), 60) as first:
        assert first is True
        started = time.monotonic()
        with audit.appends_held(str(log), 0.3) as second:  # held already: given up
            assert second is False
        assert 0.3 <= time.monotonic() - started < 5
    with audit.appends_held(str(tmp_path / "absent.jsonl"), 1) as absent:
        assert absent is False  # nothing appends to a file that does not exist
    with audit.appends_held("postgresql://u@127.0.0.1:1/db", 1) as postgres:
        assert postgres is True  # a killed transaction is rolled back: nothing to hold


def test_a_record_too_large_is_refused_at_its_first_string_past_the_limit(
        tmp_path: Path) -> None:
    """Strings each under the limit, together over it: refused for the record's size as soon as
    they pass it, not after each was read for tokens (eight of 200 KiB took seconds)."""
    sink = FileSink(tmp_path / "audit.jsonl")
    blob = base64.b64encode(os.urandom(150 * 1024)).decode()  # 200 KiB of base64
    # the CPU time of this thread, where the record is checked: what reading every string
    # costs, which a loaded machine's wall clock would add its waits to
    started = time.thread_time()
    with pytest.raises(AuditUnavailable) as refused:
        sink.append("Big", actor="a", subject={"kind": "X"},
                    data={f"part{i}": blob for i in range(8)})
    assert time.thread_time() - started < 1.5
    assert f"the record is larger than {audit.MAX_RECORD_BYTES} bytes (up to data.part1)" in \
        refused.value.message
    assert not (tmp_path / "audit.jsonl").read_text()
    # refused at an item past the limit, not by the record's size once all were read (that
    # refusal names no item)
    at_an_item = r"the record is larger than \d+ bytes \(up to data\.args\[\d+\]\)"
    started = time.thread_time()  # items that are not long strings count too
    many: Sequence[object]
    for many in ([""] * 700_000, [0] * 700_000, [{}] * 700_000):
        with pytest.raises(AuditUnavailable, match=at_an_item):
            sink.append("Big", actor="a", subject={"kind": "X"}, data={"args": many})
    assert time.thread_time() - started < 3.0


def test_a_refusal_never_repeats_a_long_path_whole_and_keeps_its_reason(
        tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "audit.jsonl")
    for key in ("k" * 100_000, "k" * 400):
        for value, reason in ((float("nan"), "JSON has no NaN"), (_real_jwt(), "looks like a JWT")):
            with pytest.raises(AuditUnavailable) as refused:
                sink.append("Odd", actor="a", subject={"kind": "X"}, data={key: {"v": value}})
            said = refused.value.message
            assert len(said) < 1_000 and reason in said and " ... " in said
            assert said.count("k") < 200 and (".v is" in said or ".v looks" in said)


def test_a_str_enum_is_recorded_as_the_text_that_was_checked(tmp_path: Path) -> None:
    """``str()`` of a ``str`` enum is its class and name, not its value: the record holds the
    value, the text that was read for tokens."""
    class Colour(str, enum.Enum):  # noqa: UP042 - a StrEnum's str() is its value already
        RED = "red"

    log = tmp_path / "audit.jsonl"
    record = FileSink(log).append("Painted", actor="a", subject={"kind": "X"},
                                  data={"colour": Colour.RED, Colour.RED: 1})
    assert record.data == {"colour": "red", "red": 1}
    assert json.loads(log.read_text())["data"] == {"colour": "red", "red": 1}


def test_a_lock_wait_given_up_lets_the_lock_go_once_it_has_it(tmp_path: Path) -> None:
    """The thread that waited for the lock for ``appends_held`` takes it once the holder lets
    go, and lets it go at once: appends are not held up by a wait that was given up."""
    log = tmp_path / "audit.jsonl"
    log.touch()
    with audit.appends_held(str(log), 5) as first:
        assert first is True
        with audit.appends_held(str(log), 0.2) as second:
            assert second is False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the given-up thread took it, then let it go
        with audit.appends_held(str(log), 0.5) as again:
            if again:
                break
    else:
        pytest.fail("the lock stayed held after a given-up wait")
    open_sink(str(log)).append("After", actor="a", subject={"kind": "X"})


def test_a_refusal_never_shows_a_token_spelled_across_long_keys(tmp_path: Path) -> None:
    """A path longer than a refusal shows whole, whose keys spell a token together (no key
    alone is one), is not shown cut in two: the halves could hold most of the token."""
    header, payload, signature = _real_jwt().split(".")
    data = {"p" * 60: {f"{header}.{payload}": {signature + "x" * 80: float("nan")}}}
    with pytest.raises(AuditUnavailable) as refused:
        FileSink(tmp_path / "audit.jsonl").append("Odd", actor="a", subject={"kind": "X"},
                                                   data=data)
    said = refused.value.message
    assert signature not in said and payload[:12] not in said, said

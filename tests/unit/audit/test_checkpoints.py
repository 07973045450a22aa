"""Signed checkpoints expose what the chain alone cannot: a rewrite, a replacement, a cut tail.

Every attack here is one a writer of the audit file can make (the gateway included): it has
the source code, so it re-chains whatever it changes. Only the audit key, which it never
holds, tells the real history from the forged one.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import checkpoints as long_checkpoints
from wingman.audit import (
    AuditAnchor,
    Checkpoint,
    FileSink,
    ProblemKind,
    make_record,
    parse_checkpoints,
    verify,
    verify_lines,
)
from wingman.audit.checkpoints import (
    MAX_CHECKPOINTS_BYTES,
    CheckpointIndex,
    iter_checkpoints,
    parse_checkpoint,
)
from wingman.audit.signing import check_signatures, keyset_from_pems, sign_checkpoint
from wingman.capability.keys import KeySet, SigningKey, generate_signing_key
from wingman.errors import AuditTampered, ConfigError

T0 = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
KEY = generate_signing_key()
KEYS = KeySet.from_mapping({f"{KEY.kid}.pem": KEY.public_pem()})
SUBJECT = {"kind": "ExecutionGrant", "namespace": "wingman-test", "name": "g", "uid": "u"}


def _fill(path: Path, count: int, start: int = 0) -> None:
    with FileSink(path, clock=lambda: T0) as sink:
        for i in range(start, start + count):
            sink.append("GatewayExecuted", actor="gateway/p", subject=SUBJECT,
                        data={"i": i, "exit_code": 0})


def _checkpoint(path: Path, *, key: SigningKey = KEY, log: str = "wingman-test") -> Checkpoint:
    report = verify(str(path))
    assert report.ok and report.anchor is not None
    return sign_checkpoint(key, log=log, anchor=report.anchor, now=T0)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _rechain(lines: list[bytes], start: int, **change: Any) -> list[bytes]:
    """Records from ``start`` on changed and re-chained: a consistent forgery."""
    out = list(lines[:start])
    prev = json.loads(lines[start - 1])["hash"] if start else "0" * 64
    for raw in lines[start:]:
        obj = json.loads(raw)
        record = make_record(obj["seq"], prev, obj["event"], actor=obj["actor"],
                             subject=obj["subject"], data={**obj["data"], **change}, now=T0)
        prev = record.hash
        out.append(record.to_bytes() + b"\n")
    return out


@pytest.fixture
def trail(tmp_path: Path) -> tuple[Path, list[Checkpoint]]:
    """30 records with checkpoints at seq 9, 19 and 29 (made as the log grew)."""
    path = tmp_path / "audit.jsonl"
    checkpoints: list[Checkpoint] = []
    for _ in range(3):
        _fill(path, 10, start=len(checkpoints) * 10)
        checkpoints.append(_checkpoint(path))
    return path, checkpoints


# --------------------------------------------------------------------------- the format


def test_a_checkpoint_round_trips_and_verifies() -> None:
    cp = sign_checkpoint(KEY, log="wingman-prd", anchor=AuditAnchor(41, "ab" * 32), now=T0)
    (parsed,) = parse_checkpoints(cp.to_line() + "\n\n", "test")
    assert parsed == cp and parsed.time == "2026-03-04T05:06:07.000000Z"
    assert check_signatures([parsed], KEYS) == [cp]
    assert set(json.loads(cp.to_line())) == {"log", "seq", "hash", "time", "kid", "signature"}


@pytest.mark.parametrize("field", ["log", "seq", "hash", "time", "kid"])
def test_changing_any_signed_field_breaks_the_signature(field: str) -> None:
    cp = sign_checkpoint(KEY, log="wingman-prd", anchor=AuditAnchor(41, "ab" * 32), now=T0)
    obj = cp.to_dict()
    obj[field] = {"log": "wingman-tst", "seq": 42, "hash": "cd" * 32,
                  "time": "2026-03-04T05:06:08.000000Z", "kid": KEY.kid[:-1] + "x"}[field]
    forged = parse_checkpoint(obj)
    with pytest.raises(AuditTampered) as err:
        check_signatures([forged], KEYS)
    assert err.value.reason == "AuditCheckpointInvalid"


def test_changing_any_character_of_the_signature_breaks_it() -> None:
    """The last of its 86 base64url characters carries 4 unused bits: text that decodes to
    the same signature but is not the one signed is a change, and refused."""
    cp = sign_checkpoint(KEY, log="wingman-prd", anchor=AuditAnchor(41, "ab" * 32), now=T0)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for at in (0, 42, 84, 85):
        for char in alphabet:
            if char == cp.signature[at]:
                continue
            changed = cp.signature[:at] + char + cp.signature[at + 1:]
            forged = Checkpoint(cp.log, cp.seq, cp.hash, cp.time, cp.kid, changed)
            with pytest.raises(AuditTampered, match="does not verify"):
                check_signatures([forged], KEYS)


def test_a_checkpoint_signed_with_another_key_is_refused() -> None:
    other = generate_signing_key()
    cp = sign_checkpoint(other, log="l", anchor=AuditAnchor(1, "ab" * 32), now=T0)
    with pytest.raises(AuditTampered, match="not one of the trusted audit keys"):
        check_signatures([cp], KEYS)
    # Even under the trusted key's id, another key's signature does not verify.
    renamed = Checkpoint(cp.log, cp.seq, cp.hash, cp.time, KEY.kid, cp.signature)
    with pytest.raises(AuditTampered, match="does not verify"):
        check_signatures([renamed], KEYS)


def test_a_token_signature_never_passes_for_a_checkpoint() -> None:
    # The payload carries a type: a signature the key made over anything else is refused.
    cp = sign_checkpoint(KEY, log="l", anchor=AuditAnchor(1, "ab" * 32), now=T0)
    import base64

    other_sig = base64.urlsafe_b64encode(KEY.private_key.sign(b'{"seq":1}')).rstrip(b"=")
    forged = Checkpoint(cp.log, cp.seq, cp.hash, cp.time, cp.kid, other_sig.decode())
    with pytest.raises(AuditTampered):
        check_signatures([forged], KEYS)


def test_two_signed_checkpoints_that_disagree_are_tampering() -> None:
    a = sign_checkpoint(KEY, log="l", anchor=AuditAnchor(5, "ab" * 32), now=T0)
    b = sign_checkpoint(KEY, log="l", anchor=AuditAnchor(5, "cd" * 32), now=T0)
    with pytest.raises(AuditTampered, match="disagree about seq 5"):
        check_signatures([a, b], KEYS)


HOSTILE_LINES = [
    b"not json", b"[]", b"{}", b"[" * 100_000, b'{"seq":' + b"9" * 5000 + b"}",
    b'{"log":"l","seq":-1,"hash":"' + b"a" * 64 + b'","time":"x","kid":"k","signature":"s"}',
    b'{"log":"l","seq":true,"hash":"' + b"a" * 64 + b'","time":"2026-03-04T05:06:07.000000Z",'
    b'"kid":"k","signature":"' + b"A" * 86 + b'"}',
    b'{"log":"l","seq":1,"hash":"' + b"a" * 64 + b'","time":"2026-13-44T05:06:07.000000Z",'
    b'"kid":"k","signature":"' + b"A" * 86 + b'"}',
    b'{"log":"l","seq":1,"hash":"' + b"a" * 64 + b'","time":"2026-03-04T05:06:07.000000Z",'
    b'"kid":"k","signature":"' + b"A" * 86 + b'","extra":1}',
    b"x" * 5000,
]


@pytest.mark.parametrize("line", HOSTILE_LINES, ids=range(len(HOSTILE_LINES)))
def test_malformed_checkpoints_are_refused_as_tampering(line: bytes) -> None:
    with pytest.raises(AuditTampered) as err:
        parse_checkpoints(line + b"\n", "cm")
    assert err.value.reason == "AuditCheckpointInvalid"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_are_refused_cleanly(data: bytes) -> None:
    try:
        parse_checkpoints(data, "fuzz")
    except AuditTampered:
        pass


def test_pinned_audit_keys_are_named_by_their_thumbprint() -> None:
    keys = keyset_from_pems([KEY.public_pem()])
    assert list(keys) == [KEY.kid]
    with pytest.raises(ConfigError):
        keyset_from_pems([b"not a key"])


# --------------------------------------------------------------------------- verification


def test_an_untouched_trail_verifies_and_names_the_last_verified_point(
        trail: tuple[Path, list[Checkpoint]]) -> None:
    path, cps = trail
    _fill(path, 4, start=30)
    report = verify(str(path), checkpoints=cps)
    assert report.ok and report.records == 34
    assert report.checkpoint == cps[-1]
    summary = report.summary()
    assert "last verified point: signed checkpoint seq 29" in summary
    assert "the 4 newer records are not covered by a checkpoint yet" in summary


@pytest.mark.parametrize(("edited", "caught_at", "verified"), [(3, 9, None), (12, 19, 9),
                                                               (25, 29, 19)])
def test_a_rechained_edit_is_rewritten_at_the_next_checkpoint(
        trail: tuple[Path, list[Checkpoint]], edited: int, caught_at: int,
        verified: int | None) -> None:
    path, cps = trail
    path.write_bytes(b"".join(_rechain(_lines(path), edited, exit_code=0, forged=True)))
    assert verify(str(path)).ok  # the chain alone is fooled
    report = verify(str(path), checkpoints=cps)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (ProblemKind.REWRITTEN, caught_at)
    assert (report.checkpoint.seq if report.checkpoint else None) == verified
    assert "last verified point" in report.summary()


def test_a_deleted_tail_is_truncation(trail: tuple[Path, list[Checkpoint]]) -> None:
    path, cps = trail
    path.write_bytes(b"".join(_lines(path)[:25]))
    report = verify(str(path), checkpoints=cps)
    assert report.problem is not None and report.problem.kind is ProblemKind.TRUNCATED
    assert "covers seq 29" in report.problem.message
    assert report.checkpoint == cps[1]


def test_a_deleted_tail_replaced_by_new_records_is_rewritten(
        trail: tuple[Path, list[Checkpoint]]) -> None:
    path, cps = trail
    lines = _lines(path)[:25]
    path.write_bytes(b"".join(lines))
    _fill(path, 10, start=100)  # the sink happily appends 10 new records after seq 24
    report = verify(str(path), checkpoints=cps)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (ProblemKind.REWRITTEN, 29)


@pytest.mark.parametrize("size", [0, 5, 30, 60])
def test_wholesale_replacement_is_detected(trail: tuple[Path, list[Checkpoint]],
                                           size: int) -> None:
    path, cps = trail
    path.unlink()
    if size:
        _fill(path, size, start=1000)
    else:
        path.write_bytes(b"")
    report = verify(str(path), checkpoints=cps)
    assert report.problem is not None
    assert report.problem.kind is (ProblemKind.REWRITTEN if size > 9 else ProblemKind.TRUNCATED)
    assert report.checkpoint is None


def test_a_partial_last_line_is_still_truncation(trail: tuple[Path, list[Checkpoint]]) -> None:
    path, cps = trail
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    report = verify(str(path), checkpoints=cps)
    assert report.problem is not None and report.problem.kind is ProblemKind.TRUNCATED


def test_checkpoints_work_on_any_line_source(trail: tuple[Path, list[Checkpoint]]) -> None:
    path, cps = trail
    assert verify_lines(io.BytesIO(path.read_bytes()), checkpoints=cps).ok
    cut = b"".join(_lines(path)[:20])
    assert not verify_lines(io.BytesIO(cut), checkpoints=cps).ok


# --------------------------------------------------------------------------- resuming


def test_resuming_reads_only_the_new_records_and_still_catches_a_rewrite(
        trail: tuple[Path, list[Checkpoint]]) -> None:
    path, cps = trail
    first = verify(str(path), checkpoints=cps)
    assert first.resume is not None and first.resume.seq == 29
    _fill(path, 5, start=30)
    second = verify(str(path), checkpoints=cps, resume=first.resume)
    assert second.ok and second.records == 35 and second.resume is not None
    assert second.resume.seq == 34
    # A rewrite of the record verified last (and everything before it) is caught...
    path.write_bytes(b"".join(_rechain(_lines(path), 2, forged=True)))
    rewritten = verify(str(path), resume=second.resume)
    assert rewritten.problem is not None and rewritten.problem.kind is ProblemKind.REWRITTEN
    # ...and so is a cut below it.
    path.write_bytes(b"".join(_lines(path)[:31]))
    cut = verify(str(path), resume=second.resume)
    assert cut.problem is not None and cut.problem.kind is ProblemKind.TRUNCATED


def test_resuming_after_an_insertion_before_the_point_is_caught(
        trail: tuple[Path, list[Checkpoint]]) -> None:
    path, cps = trail
    first = verify(str(path), checkpoints=cps)
    assert first.resume is not None
    lines = _lines(path)
    path.write_bytes(b"".join([lines[0], *lines]))  # every offset moves by one line
    report = verify(str(path), resume=first.resume)
    assert report.problem is not None


# --------------------------------------------------------------------------- a year-long copy
# A witness's copy grows by a checkpoint a minute for good (~300 bytes each: 100k lines is
# ~30 MB, far over the MAX_CHECKPOINTS_BYTES a whole list may have). It is streamed into a
# packed index, and every checkpoint in it still detects what it detected in a short list.

LONG = 100_000


@pytest.fixture(scope="module")
def long_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Checkpoint]]:
    """A trail of LONG records and a witness copy with a checkpoint of each (unsigned: the
    signature checks are tested on shorter files in tests/unit/cli/test_audit.py)."""
    where = tmp_path_factory.mktemp("long")
    path, copy = where / "audit.jsonl", where / "witness.jsonl"
    checkpoints = long_checkpoints.checkpoints_of(long_checkpoints.write_trail(path, LONG),
                                                  None)
    long_checkpoints.write_checkpoints(copy, checkpoints)
    assert copy.stat().st_size > MAX_CHECKPOINTS_BYTES
    return path, copy, checkpoints


def _index(copy: Path) -> CheckpointIndex:
    index = CheckpointIndex()
    with copy.open("rb") as fh:
        for _, checkpoint in iter_checkpoints(fh, str(copy)):
            index.add(checkpoint)
    return index


def test_a_year_long_witness_copy_is_streamed_and_verifies(
        long_copy: tuple[Path, Path, list[Checkpoint]]) -> None:
    path, copy, checkpoints = long_copy
    index = _index(copy)
    assert len(index) == LONG
    assert index[12_345] == checkpoints[12_345]  # packed without losing a byte
    assert index.newest() == checkpoints[-1]
    report = verify(str(path), checkpoints=index)
    assert report.ok, report.summary()
    assert report.checkpoints == LONG and report.checkpoint == checkpoints[-1]


def test_a_rewrite_re_signed_later_is_caught_by_an_old_checkpoint_of_a_long_copy(
        long_copy: tuple[Path, Path, list[Checkpoint]], tmp_path: Path) -> None:
    """Someone rewrites the trail from seq 99,000 and empties the ConfigMap; the operator then
    signs the forged head, and the witness takes the new checkpoints (they are newer). The
    newest checkpoint matches the forgery: only the old ones, deep in the copy, expose it."""
    path, copy, _ = long_copy
    forged = tmp_path / "audit.jsonl"
    forged.write_bytes(b"".join(_lines(path)[:99_000]))
    prev = json.loads(_lines(path)[98_999])["hash"]
    tail = long_checkpoints.write_trail(forged, 1_500, start=99_000, prev=prev, tag="forged")
    extended = tmp_path / "witness.jsonl"
    extended.write_bytes(copy.read_bytes())
    long_checkpoints.write_checkpoints(
        extended, long_checkpoints.checkpoints_of(tail[1_000:], None, minutes=LONG))
    report = verify(str(forged), checkpoints=_index(extended))
    assert report.problem is not None and report.problem.kind is ProblemKind.REWRITTEN
    assert report.problem.seq == 99_000, report.summary()


def test_a_malformed_line_deep_in_a_long_copy_is_tampering_with_its_line(
        long_copy: tuple[Path, Path, list[Checkpoint]], tmp_path: Path) -> None:
    _, copy, _ = long_copy
    lines = _lines(copy)
    lines[99_989] = lines[99_989].replace(b'"seq":', b'"seq":"')  # line 99,990
    broken = tmp_path / "witness.jsonl"
    broken.write_bytes(b"".join(lines))
    with pytest.raises(AuditTampered, match=f"{broken} line 99990 "):
        _index(broken)


def test_an_overlong_line_is_refused_before_it_is_read_whole() -> None:
    stream = io.BytesIO(b"\n" + b"x" * 10 * 1024 * 1024)
    with pytest.raises(AuditTampered, match="copy line 2 is longer than 1024 bytes"):
        list(iter_checkpoints(stream, "copy"))


def test_the_index_takes_checkpoints_in_any_order_and_refuses_disagreement() -> None:
    early = sign_checkpoint(KEY, log="l", anchor=AuditAnchor(5, "ab" * 32), now=T0)
    late = sign_checkpoint(KEY, log="l", anchor=AuditAnchor(5, "ab" * 32),
                           now=T0 + dt.timedelta(minutes=1))
    other = sign_checkpoint(KEY, log="l", anchor=AuditAnchor(9, "ef" * 32), now=T0)
    index = CheckpointIndex.of([other, late, early])
    assert list(index) == [5, 9] and index[5] == early and index.before(9) == early
    assert list(index.checkpoints()) == check_signatures([other, late, early], KEYS)
    forged = sign_checkpoint(KEY, log="l", anchor=AuditAnchor(5, "cd" * 32), now=T0)
    for order in ([other, early, forged], [early, forged]):
        with pytest.raises(AuditTampered, match="disagree about seq 5"):
            len(CheckpointIndex.of(order))

"""Hostile audit logs: the verifier reaches a verdict in bounded time and memory, never crashes.

A writer of the log (the gateway included) can put anything into it. Whatever it writes,
``wingman audit verify`` must report tampering, and ``FileSink.append`` must refuse with
``AuditUnavailable``: never a traceback, never unbounded memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wingman import audit
from wingman.audit import FileSink, ProblemKind, make_record, verify
from wingman.errors import AuditUnavailable

OPERATOR_SRC = Path(audit.__file__).resolve().parents[2]
T0 = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
MEMORY_LIMIT = 768 * 1024 * 1024


def _fill(path: Path, count: int) -> list[bytes]:
    with FileSink(path, clock=lambda: T0) as sink:
        for i in range(count):
            sink.append("VoteCast", actor="reviewer", subject={"kind": "X"}, data={"i": i})
    return path.read_bytes().splitlines(keepends=True)


def _rehashed(line: bytes, **changes: object) -> bytes:
    """The record with ``changes`` applied and its hash recomputed (what any writer can do)."""
    obj = json.loads(line)
    obj.update(changes)
    obj.pop("hash")
    obj["hash"] = audit.AuditRecord(**obj, hash="").compute_hash()
    return audit.canonical_json(obj) + b"\n"


def _verify_in_subprocess(path: Path) -> subprocess.CompletedProcess[str]:
    """``wingman audit verify`` with its address space capped (a runaway is killed, not us)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [sys.executable, "-c", "import sys; from wingman.cli.main import main; "
         "sys.exit(main(sys.argv[1:]))", "audit", "verify", str(path)],
        capture_output=True, text=True, timeout=120, preexec_fn=cap,
        env={"PYTHONPATH": str(OPERATOR_SRC), "PATH": "/usr/bin:/bin"}, check=False,
    )


HUGE = [2**31, 10**12, 2**62, 2**63 - 1, 2**64 + 5, 10**40, int("9" * 4000)]
CASES = [(seq, where, linked) for seq in HUGE for where in (0, 4, 9) for linked in (True, False)]


def _verify_many_in_subprocess(paths: list[Path]) -> list[dict[str, object]]:
    """``verify`` of each file in one child whose address space is capped."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    script = ("import json, sys\nfrom wingman.audit import verify\n"
              "for path in sys.argv[1:]:\n"
              "    r = verify(path)\n"
              "    print(json.dumps({'kind': r.problem.kind if r.problem else None,\n"
              "                      'records': r.records, 'summary': r.summary()}))\n")
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True,
        timeout=300, preexec_fn=cap, check=False,
        env={"PYTHONPATH": str(OPERATOR_SRC), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_huge_seq_jump_is_tampering_in_bounded_memory(tmp_path: Path) -> None:
    lines = _fill(tmp_path / "clean.jsonl", 10)
    paths = []
    for number, (seq, where, linked) in enumerate(CASES):
        changes: dict[str, object] = {"seq": seq}
        if not linked:
            changes["prev"] = "ab" * 32
        tampered = list(lines)
        tampered[where] = _rehashed(lines[where], **changes)
        path = tmp_path / f"case-{number}.jsonl"
        path.write_bytes(b"".join(tampered))
        paths.append(path)
    results = _verify_many_in_subprocess(paths)
    assert len(results) == len(CASES)
    for (seq, where, linked), result in zip(CASES, results, strict=True):
        case = f"seq {str(seq)[:12]} at {where}, {'linked' if linked else 'unlinked'}"
        assert result["records"] == where, (case, result)
        assert result["kind"] == ("Edited" if linked else "Deleted"), (case, result)
        assert str(result["summary"]).startswith(f"TAMPERED at record {where} "), case


def test_the_cli_reports_a_huge_jump_as_tampering(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _fill(path, 10)
    lines[4] = _rehashed(lines[4], seq=2**62, prev="ab" * 32)
    path.write_bytes(b"".join(lines))
    done = _verify_in_subprocess(path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("TAMPERED at record 4 (line 5): Deleted"), done.stdout
    assert "Traceback" not in done.stderr


def test_an_integer_too_long_to_convert_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _fill(path, 3)
    lines[1] = lines[1].replace(b'"seq":1', b'"seq":1' + b"0" * 5000)
    path.write_bytes(b"".join(lines))
    done = _verify_in_subprocess(path)
    assert done.returncode == 1 and "Malformed" in done.stdout, done.stdout + done.stderr


def test_many_jumps_and_a_long_tail_stay_bounded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _fill(path, 5)
    forged = [_rehashed(lines[4], seq=10**15 + 7 * i, prev="cd" * 32) for i in range(20000)]
    path.write_bytes(b"".join(lines + forged))
    done = _verify_in_subprocess(path)
    assert done.returncode == 1 and "Deleted" in done.stdout, done.stdout + done.stderr


def test_a_gap_is_still_located_exactly(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _fill(path, 12)
    del lines[3:7]
    path.write_bytes(b"".join(lines))
    problem = verify(str(path)).problem
    assert problem is not None and problem.kind is ProblemKind.DELETED
    assert "seqs 3..6 (4 records) deleted" in problem.message


def _nested(depth: int, opener: str = "[") -> str:
    closer = {"[": "]", "{": "}"}[opener]
    inner = '{"a":' * depth if opener == "{" else "[" * depth
    tail = "}" * depth if opener == "{" else closer * depth
    return inner + "1" + tail


NESTINGS = [
    ("array-40", _nested(40)),
    ("array-3000", _nested(3000)),
    ("array-200k", _nested(200_000)),
    ("object-5000", _nested(5000, "{")),
    ("unclosed-100k", "[" * 100_000),
    ("mixed-50k", '[{"a":' * 50_000 + "1" + "}]" * 50_000),
]


def test_deep_nesting_is_reported_as_tampering(tmp_path: Path) -> None:
    lines = _fill(tmp_path / "clean.jsonl", 4)
    paths = []
    for number, (depth_id, value) in enumerate(NESTINGS):
        for where in ("data", "line"):
            tampered = list(lines)
            if where == "data":
                obj = json.loads(tampered[2])
                text = tampered[2].decode().replace(
                    json.dumps(obj["data"], separators=(",", ":")), '{"deep":' + value + "}")
                tampered[2] = text.encode()
            else:
                tampered[2] = value.encode() + b"\n"
            path = tmp_path / f"{number}-{where}.jsonl"
            path.write_bytes(b"".join(tampered))
            paths.append(path)
            report = verify(str(path))
            assert report.problem is not None, (depth_id, where)
            assert report.problem.kind in (ProblemKind.MALFORMED, ProblemKind.EDITED)
            assert report.problem.position == 2
    for result in _verify_many_in_subprocess(paths):
        assert result["kind"] in ("Malformed", "Edited") and result["records"] == 2, result


@pytest.mark.parametrize(("depth_id", "value"), NESTINGS, ids=[n for n, _ in NESTINGS])
def test_append_after_a_deeply_nested_last_line_is_unavailable(
    tmp_path: Path, depth_id: str, value: str
) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path, 2)
    with path.open("ab") as fh:
        fh.write(value.encode() + b"\n")
    with FileSink(path) as sink, pytest.raises(AuditUnavailable) as caught:
        sink.append("VoteCast", actor="a", subject={}, data={})
    assert "last record" in caught.value.message
    # The unreadable tail does not make the sink write anything.
    assert path.read_bytes().endswith(value.encode() + b"\n")


def test_brackets_inside_strings_are_not_nesting(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with FileSink(path) as sink:
        sink.append("VoteCast", actor="a", subject={},
                    data={"text": "[{" * 5000 + '\\"[' * 300, "quote": '"]]]' * 100,
                          "list": [[[[["ok"]]]]]})
        sink.append("VoteCast", actor="a", subject={}, data={"after": True})
    report = verify(str(path))
    assert report.ok, report.summary()
    assert report.records == 2


def test_the_deepest_record_make_record_allows_still_verifies(tmp_path: Path) -> None:
    def nest(levels: int) -> object:
        value: object = "leaf"
        for i in range(levels):
            value = [value] if i % 2 else {"k": value}
        return value

    deepest = 0
    while True:
        try:
            make_record(0, "0" * 64, "VoteCast", actor="a", subject={},
                        data={"v": nest(deepest + 1)}, now=T0)
        except AuditUnavailable:
            break
        deepest += 1
    assert deepest >= 30
    path = tmp_path / "audit.jsonl"
    with FileSink(path) as sink:
        sink.append("VoteCast", actor="a", subject={}, data={"v": nest(deepest)})
        sink.append("VoteCast", actor="a", subject={}, data={"v": nest(deepest)})
    report = verify(str(path))
    assert report.ok and report.records == 2, report.summary()


# A record any writer can forge at the tail (rehashed, so only its content is wrong): values
# json.loads accepts but canonical JSON cannot write, and times that are no real instant.
UNREPRESENTABLE = [
    ("float-overflow", b'"i":0', b'"i":1e400'),
    ("negative-overflow", b'"i":0', b'"i":-1e999'),
    ("lone-surrogate", b'"actor":"reviewer"', b'"actor":"\\ud800"'),
    ("surrogate-in-key", b'"kind":"X"', b'"\\udfff":"X"'),
]


def _rehash_raw(line: bytes) -> bytes:
    """``line`` with its hash set to the SHA-256 of its other members, byte for byte (what a
    forger computes without going through Python's parser)."""
    body = line.rstrip(b"\n")
    at = body.index(b'"hash":"')
    unhashed = body[:at] + body[at + len(b'"hash":"') + 64 + 2:]
    digest = hashlib.sha256(unhashed).hexdigest().encode()
    return body[:at] + b'"hash":"' + digest + b'"' + body[at + 8 + 64 + 1:] + b"\n"


@pytest.mark.parametrize(("case", "old", "new"), UNREPRESENTABLE,
                         ids=[c for c, _, _ in UNREPRESENTABLE])
def test_a_value_canonical_json_cannot_write_is_malformed(
    tmp_path: Path, case: str, old: bytes, new: bytes
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _fill(path, 3)
    assert old in lines[0]
    lines[0] = _rehash_raw(lines[0].replace(old, new))
    path.write_bytes(b"".join(lines))
    report = verify(str(path))
    assert report.problem is not None and report.problem.kind is ProblemKind.MALFORMED, case
    assert (report.problem.position, report.problem.line) == (0, 1)
    # the message names what is wrong: a surrogate is not called a number too large
    assert ("surrogate" in report.problem.message) == ("surrogate" in case), (
        report.problem.message)
    assert ("too large" in report.problem.message) == ("overflow" in case), (
        report.problem.message)
    done = _verify_in_subprocess(path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("TAMPERED at record 0 (line 1): Malformed"), done.stdout
    assert "Traceback" not in done.stderr
    # the same record at the tail: a writer refuses to chain onto it, with AuditUnavailable
    tail = tmp_path / "tail.jsonl"
    tail.write_bytes(lines[0])
    with FileSink(tail) as sink, pytest.raises(AuditUnavailable) as caught:
        sink.append("VoteCast", actor="a", subject={}, data={})
    assert "last record" in caught.value.message


@pytest.mark.parametrize("time", ["2025-13-45T99:99:99.000000Z", "2025-02-30T00:00:00.000000Z",
                                  "\uff12\uff10\uff12\uff15-01-02T03:04:05.000000Z",
                                  "2025-01-02T03:04:0\u0665.000000Z"])
def test_a_time_that_is_no_real_utc_instant_is_malformed(tmp_path: Path, time: str) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _fill(path, 3)
    lines[2] = _rehashed(lines[2], time=time)
    path.write_bytes(b"".join(lines))
    report = verify(str(path))
    assert report.problem is not None, time
    assert report.problem.kind is ProblemKind.MALFORMED and report.problem.position == 2
    assert "time" in report.problem.message


def test_a_hostile_field_name_is_neither_echoed_at_length_nor_as_a_token(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _fill(path, 2)
    token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
    extra = {token: 1, "x" * 100_000: 2, **{f"k{i}": i for i in range(50)}}
    obj = json.loads(lines[1])
    lines[1] = audit.canonical_json({**obj, **extra}) + b"\n"
    path.write_bytes(b"".join(lines))
    report = verify(str(path))
    assert report.problem is not None and report.problem.kind is ProblemKind.MALFORMED
    assert "unexpected" in report.problem.message and "more" in report.problem.message
    assert token not in report.summary() and len(report.summary()) < 1000


def _special(tmp_path: Path, kind: str) -> Path:
    if kind == "directory":
        path = tmp_path / "a-directory"
        path.mkdir()
    elif kind == "fifo":
        path = tmp_path / "a-fifo"
        os.mkfifo(path)
    else:
        path = Path("/dev/null")
    return path


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_a_target_that_is_not_a_regular_file_is_unreadable(tmp_path: Path, kind: str) -> None:
    path = _special(tmp_path, kind)
    done = _verify_in_subprocess(path)  # a FIFO with no writer must not block the verifier
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith(f"UNREADABLE: audit log {path} is not a regular file"), \
        done.stdout
    assert "Traceback" not in done.stderr
    if kind != "fifo":
        with pytest.raises(AuditUnavailable, match="not a regular file"):
            verify(str(path))


def test_a_symlink_to_the_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path, 3)
    link = tmp_path / "link.jsonl"
    link.symlink_to(path)
    report = verify(str(link))
    assert report.ok and report.records == 3, report.summary()


def test_lines_full_of_brackets_are_classified_in_bounded_time(tmp_path: Path) -> None:
    """A jump in seq is classified from the following lines: each may be a line of the
    largest size packed with brackets (valid or not), and each costs little to look at."""
    path = tmp_path / "audit.jsonl"
    lines = _fill(path, 4)
    lines[3] = _rehashed(lines[3], seq=7, prev="ab" * 32)
    size = audit.MAX_RECORD_BYTES - 100
    hostile = [
        b"[" * size,  # never closed
        b'{"seq":1,"a":[' + b"[]," * (size // 3) + b"[]]}",  # shallow, many
        b'{"seq":2,"a":[' + (b"[" * 30 + b"]" * 30 + b",") * (size // 61) + b"1]}",  # 31 deep
        b'{"seq":9,"a":"' + b"[" * size + b'"}',  # inside a string
        b'{"seq":10,"a":"' + b'\\"[' * (size // 3) + b'"}',  # escaped quotes, brackets
    ]
    with path.open("wb") as fh:
        fh.write(b"".join(lines))
        for i in range(300):
            fh.write(hostile[i % len(hostile)] + b"\n")
    report = verify(str(path))
    assert report.problem is not None and report.problem.kind is ProblemKind.DELETED
    assert report.problem.position == 3


def test_a_jump_is_classified_from_a_bounded_number_of_bytes() -> None:
    """However long the following lines, the look-ahead stops after JUMP_WINDOW_BYTES: a log
    of the largest lines costs a few of them to classify, not thousands."""
    from wingman.audit import verification

    size = audit.MAX_RECORD_BYTES
    taken = 0

    def lines() -> Iterator[verification._Entry]:
        nonlocal taken
        for i in range(verification.JUMP_WINDOW):
            taken += 1
            yield verification._Entry(b"[" * size, True, i)

    window = list(verification._window(lines()))
    assert len(window) == taken  # nothing read beyond what is looked at
    assert len(window) * size <= verification.JUMP_WINDOW_BYTES + size
    short = list(verification._window(iter([verification._Entry(b"{}", True, i)
                                            for i in range(10)])))
    assert len(short) == 10


@pytest.mark.parametrize(("text", "depth"), [
    ('{"a":[1,{"b":[[]]}]}', 5),
    ('{"a":"[[[[[' + "[" * 40 + '"}', 1),
    ('{"a":"\\\\' + "[" * 10 + '","b":[' + "[" * 30 + "]" * 30 + "]}", 32),
    ('{"a":"\\"[[[[' + "[" * 40 + '","b":[[[]]]}', 4),
    ('{"a":"\\\\\\"' + "[" * 40 + '"}', 1),
    ("[" * 36 + "]" * 36, 36),
    ("[{" * 18 + "}]" * 18, 36),
    ("[{" * 19 + "}]" * 19, 37),
    ("[" * 100_000 + "]" * 100_000, 37),
])
def test_nesting_depth_skips_strings_and_stops_past_the_limit(text: str, depth: int) -> None:
    from wingman.audit.records import _MAX_STORED_DEPTH, _nesting_depth

    assert _MAX_STORED_DEPTH == 36
    assert min(_nesting_depth(text.encode()), _MAX_STORED_DEPTH + 1) == depth

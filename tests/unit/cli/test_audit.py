"""``wingman audit verify|show`` on hostile inputs: a verdict or a clear error, never a hang,
unbounded memory or a traceback.

The verifier is run as users run it (``wingman.cli.main``, in a child process whose address
space is capped where memory is at stake).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from support import checkpoints as long_checkpoints
from support.localserver import QuietHandler, serving
from wingman import audit
from wingman.audit import AuditAnchor, FileSink, verify_main
from wingman.audit.signing import sign_checkpoint
from wingman.capability.keys import generate_signing_key
from wingman.cli.main import main

OPERATOR_SRC = Path(audit.__file__).resolve().parents[2]
T0 = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
MEMORY_LIMIT = 512 * 1024 * 1024


def _trail(tmp_path: Path, count: int = 3) -> Path:
    path = tmp_path / "audit.jsonl"
    with FileSink(path, clock=lambda: T0) as sink:
        for i in range(count):
            sink.append("VoteCast", actor="reviewer", subject={"kind": "X", "name": "g"},
                        data={"i": i})
    return path


def _signed(tmp_path: Path, path: Path) -> tuple[Path, Path]:
    """A checkpoints file of the trail's last record and the audit public key's PEM."""
    key = generate_signing_key()
    last = list(FileSink(path).records())[-1]
    checkpoint = sign_checkpoint(key, log="wingman-test", anchor=AuditAnchor(last.seq, last.hash),
                                 now=T0)
    checkpoints = tmp_path / "checkpoints.jsonl"
    checkpoints.write_text(checkpoint.to_line() + "\n")
    pem = tmp_path / "audit.pem"
    pem.write_bytes(key.public_pem())
    return checkpoints, pem


def _wingman(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [sys.executable, "-c", "import sys; from wingman.cli.main import main; "
         "sys.exit(main(sys.argv[1:]))", *argv],
        capture_output=True, text=True, timeout=timeout, preexec_fn=cap, check=False,
        env={"PYTHONPATH": str(OPERATOR_SRC), "PATH": "/usr/bin:/bin"},
    )


def test_signed_checkpoints_from_files_verify(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    checkpoints, pem = _signed(tmp_path, path)
    done = _wingman("audit", "verify", str(path), "--checkpoints", str(checkpoints),
                    "--audit-key", str(pem))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK: 3 records"), done.stdout


@pytest.mark.parametrize("content", ["", "\n", "\n\n"])
def test_an_empty_checkpoints_file_does_not_verify_a_trail_with_records(
        tmp_path: Path, content: str) -> None:
    # deleting the checkpoints must not make a rewritten trail "verify"
    path = _trail(tmp_path)
    _checkpoints, pem = _signed(tmp_path, path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text(content)
    done = _wingman("audit", "verify", str(path), "--checkpoints", str(empty),
                    "--audit-key", str(pem))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(f"UNVERIFIED: there is no checkpoint in {empty}, yet the "
                                  "trail holds 3 records"), done.stdout
    assert "verify again" in done.stdout and "Traceback" not in done.stderr


def test_an_empty_trail_with_no_checkpoints_verifies_as_a_fresh_install(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    pem = tmp_path / "audit.pem"
    pem.write_bytes(generate_signing_key().public_pem())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = _wingman("audit", "verify", str(path), "--checkpoints", str(empty),
                    "--audit-key", str(pem))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK: 0 records"), done.stdout
    assert "the trail holds no record yet (a fresh install)" in done.stderr


def test_a_trail_tampered_with_and_no_checkpoints_is_still_tampered(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    _checkpoints, pem = _signed(tmp_path, path)
    path.write_text(path.read_text().replace('"i":1', '"i":7'))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = _wingman("audit", "verify", str(path), "--checkpoints", str(empty),
                    "--audit-key", str(pem))
    assert done.returncode == 1 and done.stdout.startswith("TAMPERED at record 1"), done.stdout


@pytest.mark.parametrize("which", ["--checkpoints", "--audit-key"])
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_checkpoints_or_key_file_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, which: str, kind: str
) -> None:
    path = _trail(tmp_path)
    checkpoints, pem = _signed(tmp_path, path)
    special = tmp_path / "special"
    if kind == "fifo":
        os.mkfifo(special)  # no writer: reading it would block forever
    else:
        special.mkdir()
    args = {"--checkpoints": str(checkpoints), "--audit-key": str(pem), which: str(special)}
    done = _wingman("audit", "verify", str(path), *(x for kv in args.items() for x in kv),
                    timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not a regular file" in done.stdout and str(special) in done.stdout, done.stdout
    assert "Traceback" not in done.stderr


def test_a_checkpoints_file_of_one_huge_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    _, pem = _signed(tmp_path, path)
    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as fh:  # sparse: 4 GiB of NUL bytes on no disk
        fh.truncate(4 * 1024**3)
    done = _wingman("audit", "verify", str(path), "--checkpoints", str(huge), "--audit-key",
                    str(pem))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(f"TAMPERED: checkpoint {huge} line 1 is longer than 1024 "
                                  "bytes"), done.stdout
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr


def test_an_audit_key_file_that_is_no_ed25519_public_key_is_named(tmp_path: Path) -> None:
    # the second of two: the message names the file, and says what it should hold
    path = _trail(tmp_path)
    checkpoints, pem = _signed(tmp_path, path)
    private = tmp_path / "private.pem"
    private.write_bytes(generate_signing_key().private_pem())
    done = _wingman("audit", "verify", str(path), "--checkpoints", str(checkpoints),
                    "--audit-key", str(pem), "--audit-key", str(private))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith(f"UNREADABLE: --audit-key {private}: "), done.stdout
    assert "Ed25519 PEM" in done.stdout and "PRIVATE" not in done.stdout, done.stdout


def test_a_huge_audit_key_file_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = _trail(tmp_path)
    checkpoints, _ = _signed(tmp_path, path)
    huge = tmp_path / "huge.pem"
    with huge.open("wb") as fh:
        fh.truncate(4 * 1024**3)
    done = _wingman("audit", "verify", str(path), "--checkpoints", str(checkpoints),
                    "--audit-key", str(huge))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"audit key {huge} is larger than" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr


def test_show_skips_a_line_nested_too_deeply_to_parse(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    path = _trail(tmp_path)
    with path.open("ab") as fh:
        fh.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
        fh.write(b'{"subject":{"name":"g"},"data":{"f":1e400},"x":"\\ud800"}\n')
        fh.write(b"[" * 200_000 + b"]" * 200_000 + b"\n")
        fh.write(b'{"subject":{"name":"g"},"data":{},"x":"after the long line"}\n')
    assert main(["audit", "show", str(path), "--subject", "g"]) == 0
    shown = capsys.readouterr()
    out = shown.out.splitlines()
    assert len(out) == 3 and all('"i":' in line for line in out), out
    # skipped, never silently: a damaged line may be the one about this object
    assert "3 lines of the trail could not be read as records and were skipped (the first " \
           "at line 4); run 'wingman audit verify'" in shown.err, shown.err
    assert "reading stopped at line 6, which is longer than" in shown.err, shown.err


def test_an_unexpected_error_is_a_clear_message_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong inside the verifier, the user gets a verdict line and an exit code
    (here a fault injected into the chain walk)."""
    path = _trail(tmp_path)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(audit, "_verify_entries", broken)
    out = io.StringIO()
    assert verify_main(str(path), out=out) == 2
    text = out.getvalue()
    assert text.startswith("UNREADABLE: the verifier stopped on an unexpected error"), text
    assert "RuntimeError: injected fault" in text and "NOT verified" in text


# A witness's copy grows by a checkpoint a minute for good; verify streams it, checks every
# line's signature and uses every checkpoint, in bounded memory.
COPY = 15_000  # ~4.5 MB: more than a whole list may be (MAX_CHECKPOINTS_BYTES)


@pytest.fixture(scope="module")
def witness_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A trail of COPY records, a signed witness copy with a checkpoint of each, the key."""
    where = tmp_path_factory.mktemp("copy")
    path, copy, pem = where / "audit.jsonl", where / "witness.jsonl", where / "audit.pem"
    key = generate_signing_key()
    records = long_checkpoints.write_trail(path, COPY)
    long_checkpoints.write_checkpoints(copy, long_checkpoints.checkpoints_of(records, key))
    assert copy.stat().st_size > audit.checkpoints.MAX_CHECKPOINTS_BYTES
    pem.write_bytes(key.public_pem())
    return path, copy, pem


def test_a_witness_copy_longer_than_a_list_may_be_verifies(
        witness_copy: tuple[Path, Path, Path]) -> None:
    path, copy, pem = witness_copy
    done = _wingman("audit", "verify", str(path), "--checkpoints", str(copy), "--audit-key",
                    str(pem), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"OK: {COPY} records"), done.stdout
    assert f"last verified point: signed checkpoint seq {COPY - 1} " in done.stdout


def test_a_forged_line_deep_in_a_witness_copy_is_tampering_with_its_line(
        witness_copy: tuple[Path, Path, Path], tmp_path: Path) -> None:
    path, copy, pem = witness_copy
    lines = copy.read_bytes().splitlines(keepends=True)
    lines[14_989] = lines[14_989].replace(b'"seq":14989', b'"seq":14990')  # line 14,990
    forged = tmp_path / "witness.jsonl"
    forged.write_bytes(b"".join(lines))
    done = _wingman("audit", "verify", str(path), "--checkpoints", str(forged), "--audit-key",
                    str(pem), timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(f"TAMPERED: checkpoint {forged} line 14990 "), done.stdout
    assert "does not verify" in done.stdout and "Traceback" not in done.stderr


def test_a_rewrite_deep_in_a_trail_is_located_by_a_long_witness_copy(
        witness_copy: tuple[Path, Path, Path], tmp_path: Path) -> None:
    path, copy, pem = witness_copy
    lines = path.read_bytes().splitlines(keepends=True)
    rewritten = tmp_path / "audit.jsonl"
    rewritten.write_bytes(b"".join(lines[:12_345]))
    prev = json.loads(lines[12_344])["hash"]
    long_checkpoints.write_trail(rewritten, COPY - 12_345, start=12_345, prev=prev,
                                 tag="forged")
    done = _wingman("audit", "verify", str(rewritten), "--checkpoints", str(copy),
                    "--audit-key", str(pem), timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("TAMPERED at record 12345 (line 12346): Rewritten"), \
        done.stdout


def test_a_witness_copy_of_several_trails_is_read_for_the_one_named(tmp_path: Path) -> None:
    """One witness may keep the checkpoints of several releases' trails: another trail's
    checkpoints say nothing of this one's (verified against them, a sound trail would read as
    rewritten), so the verifier asks which trail this is and uses its checkpoints alone."""
    path = _trail(tmp_path)
    key = generate_signing_key()
    records = list(FileSink(path).records())
    other = tmp_path / "other.jsonl"
    other_records = long_checkpoints.write_trail(other, 5)
    copy = tmp_path / "witness.jsonl"
    long_checkpoints.write_checkpoints(copy, [
        *long_checkpoints.checkpoints_of(records, key, log="wingman-test"),
        *long_checkpoints.checkpoints_of(other_records, key, log="wingman-prd", minutes=10)])
    pem = tmp_path / "audit.pem"
    pem.write_bytes(key.public_pem())
    args = ("--checkpoints", str(copy), "--audit-key", str(pem))
    unnamed = _wingman("audit", "verify", str(path), *args)
    assert unnamed.returncode == 2, unnamed.stdout + unnamed.stderr
    assert "several trails (wingman-prd, wingman-test)" in unnamed.stdout
    assert "--log" in unnamed.stdout
    for trail, log in ((path, "wingman-test"), (other, "wingman-prd")):
        named = _wingman("audit", "verify", str(trail), *args, "--log", log)
        assert named.returncode == 0, named.stdout + named.stderr
    crossed = _wingman("audit", "verify", str(path), *args, "--log", "wingman-prd")
    assert crossed.returncode == 1, crossed.stdout + crossed.stderr
    assert crossed.stdout.startswith("TAMPERED"), crossed.stdout


def test_a_checkpoints_file_of_another_trail_only_is_an_error_not_ignored(tmp_path: Path
                                                                          ) -> None:
    """A --log (or -n) that names no trail the file holds would leave every checkpoint out:
    the trail would verify against none of them, a cut tail unnoticed, while the user believes
    the witness's copy was consulted. The verifier says so instead and verifies nothing."""
    path = _trail(tmp_path)
    checkpoints, pem = _signed(tmp_path, path)  # of trail wingman-test, at its last record
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # the tail cut: the checkpoint shows it
    args = ("--checkpoints", str(checkpoints), "--audit-key", str(pem))
    named = _wingman("audit", "verify", str(path), *args, "--log", "wingman-test")
    assert named.returncode == 1, named.stdout + named.stderr
    mistyped = _wingman("audit", "verify", str(path), *args, "--log", "wingman-tset")
    assert mistyped.returncode == 2, mistyped.stdout + mistyped.stderr
    assert mistyped.stdout.startswith("UNREADABLE: "), mistyped.stdout
    assert "no checkpoint of trail wingman-tset" in mistyped.stdout, mistyped.stdout
    assert "wingman-test" in mistyped.stdout and "--log" in mistyped.stdout, mistyped.stdout


@pytest.mark.parametrize("configmap", ["", "a/b", "..", "Checkpoints", "a..b", "a.-b", "a."])
def test_a_configmap_that_is_no_configmap_name_is_refused_before_any_call(
        tmp_path: Path, configmap: str) -> None:
    # "" would GET the list of every ConfigMap (no data: no checkpoint), "a/b" another resource
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "users: [{name: u, user: {token: not-a-real-token}}]\n")
    done = _wingman("audit", "verify", str(_trail(tmp_path)), "-n", "wingman", "--configmap",
                    configmap, "--kubeconfig", str(kubeconfig))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith(f"UNREADABLE: --configmap {configmap!r} is not a ConfigMap "
                                  "name"), done.stdout


class _HostileApi(QuietHandler):
    """What answers at the API server's address refusing every read with a Status whose
    message holds terminal control sequences (retitle the window, clear the screen)."""

    def do_GET(self) -> None:
        self.send_json(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "code": 403, "reason": "Forbidden",
                             "message": "no\x1b]0;pwned\x07\x1b[2J\nfake: line"})


def test_an_unreadable_verdict_shows_the_api_servers_words_escaped(tmp_path: Path) -> None:
    """The API server's message in the UNREADABLE line reaches the terminal escaped: it can
    neither retitle nor clear the screen, nor start a line of its own."""
    with serving(_HostileApi) as url:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            f"clusters: [{{name: k, cluster: {{server: '{url}'}}}}]\n"
            "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
            "users: [{name: u, user: {token: not-a-real-token}}]\n")
        done = _wingman("audit", "verify", str(_trail(tmp_path)), "-n", "wingman",
                        "--kubeconfig", str(kubeconfig))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith("UNREADABLE: cannot read ConfigMap wingman/"), done.stdout
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout, done.stdout
    assert "no\\x1b]0;pwned\\x07\\x1b[2J" in done.stdout, done.stdout
    assert "\nfake: line" not in done.stdout, done.stdout


@pytest.mark.parametrize("content", ["", "\n"])
def test_an_empty_checkpoints_source_next_to_one_that_verifies_is_unverified(
        tmp_path: Path, content: str) -> None:
    """A witness's copy that holds nothing of this trail was not consulted at all: next to the
    ConfigMap's (or another file's) checkpoints it must not pass unseen, or a witness emptied
    to hide a rewrite the cluster's own checkpoints were made to agree with would read OK."""
    path = _trail(tmp_path)
    checkpoints, pem = _signed(tmp_path, path)
    witness = tmp_path / "witness.jsonl"
    witness.write_text(content)
    done = _wingman("audit", "verify", str(path), "--checkpoints", str(checkpoints),
                    "--checkpoints", str(witness), "--audit-key", str(pem))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(f"UNVERIFIED: there is no checkpoint in {witness}, yet the "
                                  "trail holds 3 records"), done.stdout
    # what the others showed is still said, and what to do
    assert "last verified point: signed checkpoint seq 2" in done.stdout, done.stdout
    assert "verify again" in done.stdout and "Traceback" not in done.stderr
    # the checkpoints it has still catch tampering first
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))
    cut = _wingman("audit", "verify", str(path), "--checkpoints", str(checkpoints),
                   "--checkpoints", str(witness), "--audit-key", str(pem))
    assert cut.returncode == 1 and cut.stdout.startswith("TAMPERED"), cut.stdout

"""The gateway's executors: no shell, bounded and redacted output, deadlines, Docker over its API.

kubectl is replaced by a stand-in program on PATH (these tests are about process handling, not
Kubernetes; tests/integration/gateway/ runs the real kubectl against a real API server). The
Docker executor meets the real Docker Engine in tests/container/test_docker_executor.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from wingman.errors import ExecutionFailed
from wingman.gateway import executors, redaction
from wingman.gateway.executors import Credentials
from wingman.gateway.redaction import REDACTED, redact
from wingman.settings import GatewaySettings

EXECUTOR_TOKEN = "executor-token-value-456"

JWT = ("eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImF1ZCI6InRlc3QifQ."
       "c2lnbmF0dXJlLWJ5dGVzLWhlcmUtYW5kLW1vcmU")

FAKE_KUBECTL = r'''
import hashlib, json, os, subprocess, sys, time, zlib
args = sys.argv[1:]
mode = args[0] if args else ""
if mode == "argv":
    print(json.dumps(args[1:]))
elif mode == "env":
    path = os.environ.get("KUBECONFIG", "")
    print(zlib.compress(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv,
                      "kubeconfig": open(path).read() if path else None,
                      "mode": oct(os.stat(path).st_mode & 0o777) if path else None,
                      "cwd_files": sorted(os.listdir(".")),
                      "files": {f: [oct(os.stat(os.path.join(os.path.dirname(path), f)).st_mode
                                        & 0o777),
                                    hashlib.sha256(open(os.path.join(os.path.dirname(path), f),
                                                        "rb").read()).hexdigest()]
                                for f in sorted(os.listdir(os.path.dirname(path)))}}
                     ).encode()).hex())  # compressed: redaction must not touch what is read
elif mode == "flood":
    chunk = b"x" * 4096
    for i in range(int(args[1]) // 4096):
        (sys.stdout if i % 2 else sys.stderr).buffer.write(chunk)
        (sys.stdout if i % 2 else sys.stderr).flush()
elif mode == "leave":  # exits at once, leaving a child behind that no longer holds the pipe
    child = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    with open(args[1], "w") as fh:
        fh.write(str(child.pid))
    print("done")
elif mode in ("hang", "term", "interrupt"):
    child = subprocess.Popen(["sleep", "60"])
    with open(args[1], "w") as fh:
        fh.write(str(child.pid))
    if mode == "term":  # the kubelet stops the gateway's pod while the command runs
        print("changed something", flush=True)
        os.kill(os.getppid(), 15)
    if mode == "interrupt":  # someone presses Ctrl-C in a gateway run by hand
        os.kill(os.getppid(), 2)
    time.sleep(60)
elif mode == "stop-quietly":  # the pod is stopped; the command prints nothing meanwhile
    os.kill(os.getppid(), 15)
    time.sleep(60)
elif mode == "close-then-stop":  # closes its output, runs on; then the pod is stopped
    print("started", flush=True)
    os.close(1)
    os.close(2)
    time.sleep(0.5)
    os.kill(os.getppid(), 15)
    time.sleep(60)
elif mode == "done-then-stopped":  # ends; the pod is stopped before its output is closed
    print("done", flush=True)
    subprocess.Popen([sys.executable, "-c",  # holds the output, in a session of its own
                      "import os, sys, time; time.sleep(0.3); os.kill(int(sys.argv[1]), 15); "
                      "time.sleep(1.5)", str(os.getppid())], start_new_session=True)
    sys.exit(0)
elif mode == "close-then-exit":  # closes its output, then ends a little later
    print("started", flush=True)
    os.close(1)
    os.close(2)
    time.sleep(0.3)
    sys.exit(3)
elif mode == "rotate":  # the kubelet replaces a token file while the command runs
    with open(args[1], "w") as fh:
        fh.write(args[2] + "\n")
    print("read back " + open(args[1]).read().strip())
elif mode == "say":
    sys.stdout.write(args[1])
    sys.stderr.write(args[2] if len(args) > 2 else "")
    sys.exit(int(args[3]) if len(args) > 3 else 0)
'''


def _settings(**env: str) -> GatewaySettings:
    base = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "6443",
        "WINGMAN_GRANT_NAME": "g1",
        "WINGMAN_EXEC_TIMEOUT_SECONDS": "20",
    }
    return GatewaySettings.from_env({**base, **env})


@pytest.fixture
def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "kubectl"
    script.write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    return script


@pytest.fixture
def creds(tmp_path: Path) -> Credentials:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token-value-123")
    (sa / "ca.crt").write_text("not a real CA")
    return Credentials(server="https://127.0.0.1:6443", ca_file=sa / "ca.crt",
                       token=EXECUTOR_TOKEN, secrets=("capability-secret-xyz",
                                                      "sa-token-value-123", EXECUTOR_TOKEN))


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------ redaction


@pytest.mark.parametrize(("text", "leak"), [
    (f"token is {JWT} here", JWT),
    (f"cut short: {JWT[:40]}", JWT[:40]),
    ("Authorization: Bearer abc.def-123", "abc.def-123"),
    ("authorization: bearer s3cr3t", "s3cr3t"),
    ("token: hunter2", "hunter2"),
    ("password=hunter2 next", "hunter2"),
    ('{"clientSecret": "hunter2"}', "hunter2"),
    ("DB_PASSWORD='hunter2'", "hunter2"),
    ("api_key=hunter2", "hunter2"),
])
def test_redact_hides_credentials(text: str, leak: str) -> None:
    out = redact(text)
    assert leak not in out
    assert REDACTED in out


def test_redact_hides_given_secrets_and_keeps_ordinary_output() -> None:
    out = redact("deployment.apps/web scaled; my value capability-secret-xyz!",
                 ["capability-secret-xyz"])
    assert out == f"deployment.apps/web scaled; my value {REDACTED}!"
    assert redact("deployment.apps/web restarted\n") == "deployment.apps/web restarted\n"


@pytest.mark.parametrize("hostile", [
    "token" * 3300,                     # a key naming a credential, never followed by ':' or '='
    "a" * 16384,
    "x-token " * 2000,
    "password" + " " * 16000,
    "bearer" + " " * 16000,
    "eyJaaaa" + "." * 16000,
], ids=["repeated-key", "one-long-word", "keys-without-separator", "key-then-spaces",
        "bearer-then-spaces", "jwt-head-then-dots"])
def test_redaction_of_hostile_output_finishes_and_still_redacts(hostile: str) -> None:
    """The output is the target's and may be crafted: redaction must not backtrack for hours
    (the command has already run; its result must still be recorded)."""
    out = redact(hostile + "\npassword=hunter2\n")
    assert "hunter2" not in out and out.endswith(f"{REDACTED}\n")


def test_redaction_needs_a_separator_after_the_key_and_starts_at_the_credential_key() -> None:
    assert redact("tokenization done; clientSecret: web-tls") == \
        f"tokenization done; clientSecret: {REDACTED}"
    assert redact("a=password=hunter2") == f"a=password={REDACTED}"


def test_bound_output_cuts_after_redaction_and_hashes_what_is_kept() -> None:
    text, truncated, digest = redaction.bound_output(
        ("password=" + "a" * 10 + "\n" + "é" * 600).encode(), limit=300, truncated=False)
    assert "aaaaaaaaaa" not in text
    assert len(text.encode()) <= 300 and truncated
    assert digest == _sha(text)


# ------------------------------------------------------------------------------ kubectl


def test_arguments_never_pass_through_a_shell(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    hostile = [f"; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", "a b|c&&d"]
    result = executors.execute(["kubectl", "argv", *hostile], settings=_settings(),
                               credentials=creds)
    assert result.exit_code == 0
    assert json.loads(result.output) == hostile  # each stayed exactly one argument
    assert not marker.exists()


def test_kubectl_gets_only_a_private_kubeconfig_path_and_home(
    fake_kubectl: Path, creds: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/should/not/leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    result = executors.execute(["kubectl", "env"], settings=_settings(), credentials=creds)
    seen = json.loads(zlib.decompress(bytes.fromhex(result.output.strip())))
    # (LC_CTYPE is set by the stand-in's own Python interpreter: PEP 538 locale coercion.)
    assert set(seen["env"]) - {"LC_CTYPE"} == {"KUBECONFIG", "PATH", "HOME"}
    assert seen["env"]["HOME"] == seen["cwd"]
    assert seen["mode"] == "0o600"
    assert "https://127.0.0.1:6443" in seen["kubeconfig"]
    # the executor's token sits in a 0600 file of the private directory that the kubeconfig
    # names; never in the kubeconfig itself, the environment or argv, and never the gateway's
    credentials = Path(seen["env"]["KUBECONFIG"]).parent
    config = yaml.safe_load(seen["kubeconfig"])
    [user] = config["users"]
    assert user["user"] == {"tokenFile": str(credentials / "token")}
    assert seen["files"]["token"] == [
        "0o600", hashlib.sha256(EXECUTOR_TOKEN.encode()).hexdigest()]
    assert set(seen["files"]) == {"kubeconfig", "token"}
    # ... and not where kubectl starts: a relative file name in a command (--from-file=token)
    # never reaches it
    assert credentials != Path(seen["cwd"]) and seen["cwd_files"] == []
    assert not Path(seen["cwd"]).is_relative_to(credentials)
    assert EXECUTOR_TOKEN not in seen["kubeconfig"] + json.dumps(seen["env"])
    assert EXECUTOR_TOKEN not in json.dumps(seen["argv"])
    assert "sa-token-value-123" not in json.dumps(seen)
    # both private directories are removed afterwards
    assert not Path(seen["cwd"]).exists() and not credentials.exists()


def test_kubectl_without_an_executor_token_fails_closed_and_runs_nothing(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    bare = dataclasses.replace(creds, token="")
    with pytest.raises(ExecutionFailed) as caught:
        executors.execute(["kubectl", "hang", str(marker)], settings=_settings(),
                          credentials=bare)
    assert caught.value.reason == "ExecutorTokenUnavailable"
    assert "wingman-executor" in caught.value.message
    assert not marker.exists()


def test_the_executor_token_is_redacted_from_output(
    fake_kubectl: Path, creds: Credentials
) -> None:
    result = executors.execute(["kubectl", "say", f"here {EXECUTOR_TOKEN} there\n"],
                               settings=_settings(), credentials=creds)
    assert EXECUTOR_TOKEN not in result.output and "here" in result.output
    assert EXECUTOR_TOKEN not in repr(creds)


def test_the_executor_token_cut_by_the_output_bound_is_redacted_from_its_start(
    fake_kubectl: Path, creds: Credentials
) -> None:
    """The bound cuts the output inside the executor's token: its start is no whole token,
    and no other rule knows it; it is redacted all the same."""
    settings = _settings(WINGMAN_MAX_OUTPUT_BYTES="1024")
    result = executors.execute(["kubectl", "say", "a" * 1000 + f" {EXECUTOR_TOKEN}\n"],
                               settings=settings, credentials=creds)
    assert result.truncated
    assert result.output == "a" * 1000 + f" {REDACTED}"
    assert result.output_sha256 == _sha(result.output)


def test_a_service_account_token_replaced_during_the_command_is_redacted_too(
    fake_kubectl: Path, creds: Credentials
) -> None:
    """The gateway's own token lives 10 minutes and the kubelet replaces it meanwhile: the one
    in the file when the command ends is as secret as the one read before it started."""
    token_file = creds.ca_file.parent / "token"
    creds = dataclasses.replace(creds, secret_files=(token_file,))
    result = executors.execute(["kubectl", "rotate", str(token_file), "sa-token-renewed-789"],
                               settings=_settings(), credentials=creds)
    assert "sa-token-renewed-789" not in result.output
    assert result.output.startswith("read back ") and REDACTED in result.output
    assert "sa-token-renewed-789" not in repr(creds)


def test_a_secret_file_larger_than_any_token_is_read_no_further(
    creds: Credentials, tmp_path: Path
) -> None:
    """A token file that is no token (a wrong path, a device that never ends) adds nothing to
    what is redacted, and holds the gateway up no longer than reading 64 KiB."""
    large = tmp_path / "large"
    large.write_text("z" * (1 << 20))
    creds = dataclasses.replace(creds, secret_files=(large, Path("/dev/zero")))
    assert creds.all_secrets() == creds.secrets


def test_output_is_captured_together_bounded_and_drained(
    fake_kubectl: Path, creds: Credentials
) -> None:
    settings = _settings(WINGMAN_MAX_OUTPUT_BYTES="1024")
    started = time.monotonic()
    result = executors.execute(["kubectl", "flood", str(1024 * 1024)], settings=settings,
                               credentials=creds)
    # 1 MiB through a 64 KiB pipe: the child only finishes because the pipe kept draining.
    assert result.exit_code == 0 and not result.timed_out
    assert time.monotonic() - started < 15
    assert result.truncated
    assert result.output == "x" * 1024
    assert result.output_sha256 == _sha(result.output)


def test_stdout_and_stderr_are_redacted_and_exit_code_kept(
    fake_kubectl: Path, creds: Credentials
) -> None:
    result = executors.execute(
        ["kubectl", "say", f"out {JWT} capability-secret-xyz\n", "err password=hunter2\n", "3"],
        settings=_settings(), credentials=creds)
    assert result.exit_code == 3
    assert "out" in result.output and "err" in result.output
    for leak in (JWT, "capability-secret-xyz", "hunter2"):
        assert leak not in result.output
    assert not result.truncated
    assert result.output_sha256 == _sha(result.output)


def test_secrets_in_a_template_format_are_withheld_from_what_the_executor_keeps(
    fake_kubectl: Path, creds: Credentials
) -> None:
    # what `kubectl get secret -o go-template={{.data.password|base64decode}}` prints: a bare
    # value no rule can recognise, so the executor hands redaction the argv that printed it
    argv = ["kubectl", "say", "plain-hunter2-value\n", "", "0", "get", "secret", "db", "-o",
            "go-template={{.data.password|base64decode}}"]
    result = executors.execute(argv, settings=_settings(), credentials=creds)
    assert result.output == redaction.WITHHELD and "hunter2" not in result.output
    assert result.output_sha256 == _sha(result.output)
    kept = executors.execute([*argv[:5], "get", "secret", "db", "-o", "name"],
                             settings=_settings(), credentials=creds)
    assert kept.output == "plain-hunter2-value\n"


def _gone_or_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_deadline_kills_the_whole_process_group(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    result = executors.execute(["kubectl", "hang", str(pidfile)],
                               settings=_settings(WINGMAN_EXEC_TIMEOUT_SECONDS="1"),
                               credentials=creds)
    assert time.monotonic() - started < 10
    assert result.timed_out
    assert result.exit_code == -9
    assert "killed after 1s" in result.output
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone_or_zombie(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(grandchild), "the grandchild outlived the deadline"


@pytest.fixture
def sigterm_dropped() -> Iterator[None]:
    """SIGTERM as the gateway's container delivers it to its first process without a handler:
    not at all (the kernel drops it); the previous handler is put back afterwards."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_to_the_gateway_kills_the_command_at_once_and_says_so(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path, sigterm_dropped: None
) -> None:
    pidfile = tmp_path / "child.pid"
    restore = executors.TERMINATION.install()
    try:
        started = time.monotonic()
        result = executors.execute(["kubectl", "term", str(pidfile)],
                                   settings=_settings(WINGMAN_EXEC_TIMEOUT_SECONDS="20"),
                                   credentials=creds)
        elapsed = time.monotonic() - started
        assert executors.TERMINATION.requested
    finally:
        restore()
    assert elapsed < 10, "the command ran on after the gateway was asked to stop"
    assert result.interrupted and not result.timed_out
    assert result.exit_code == -9
    assert "changed something" in result.output
    assert "asked to stop (SIGTERM)" in result.output
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone_or_zombie(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(grandchild), "the grandchild outlived the SIGTERM"
    assert not executors.TERMINATION.requested, "a later run would start already stopped"


def test_a_sigterm_another_thread_receives_still_kills_the_command_at_once(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path, sigterm_dropped: None
) -> None:
    """The kernel may hand a process's SIGTERM to any of its threads. Here only a helper
    thread can take it (the main thread blocks it), and the main thread, waiting for the
    command's output (none comes), must still be woken at once, not at the command's
    deadline."""
    taking = threading.Event()
    stop = threading.Event()

    def helper() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        taking.set()
        stop.wait(60)

    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    thread = threading.Thread(target=helper, daemon=True)
    thread.start()
    assert taking.wait(5)
    restore = executors.TERMINATION.install()
    try:
        _stopped_at_once(creds, "stop-quietly")
    finally:
        restore()
        stop.set()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        thread.join(5)
    assert signal.set_wakeup_fd(-1) == -1, "the wake-up descriptor was not put back"


@pytest.fixture
def terminating(sigterm_dropped: None) -> Iterator[None]:
    """The gateway's SIGTERM handling installed for the test, and put back after it."""
    restore = executors.TERMINATION.install()
    try:
        yield
    finally:
        restore()


def _stopped_at_once(creds: Credentials, mode: str) -> executors.ExecResult:
    """``kubectl MODE`` (which has the gateway asked to stop) run with a 30 s timeout: it is
    killed at once, as interrupted, not at its deadline."""
    started = time.monotonic()
    result = executors.execute(["kubectl", mode],
                               settings=_settings(WINGMAN_EXEC_TIMEOUT_SECONDS="30"),
                               credentials=creds)
    assert time.monotonic() - started < 10, "the command ran on until its deadline"
    assert result.interrupted and not result.timed_out and result.exit_code == -9
    return result


def test_a_command_that_closed_its_output_is_waited_for_and_still_stopped_by_a_sigterm(
    fake_kubectl: Path, creds: Credentials, terminating: None
) -> None:
    """A command may close its output and run on: its exit is what the gateway waits for
    then, and a SIGTERM meanwhile still kills it at once (not at the command's deadline)."""
    ended = executors.execute(["kubectl", "close-then-exit"], settings=_settings(),
                              credentials=creds)
    assert (ended.exit_code, ended.output, ended.interrupted) == (3, "started\n", False)
    _stopped_at_once(creds, "close-then-stop")


def test_a_command_that_ended_before_the_sigterm_is_recorded_as_it_ended(
    fake_kubectl: Path, creds: Credentials, terminating: None
) -> None:
    """A SIGTERM that comes once the command exited (its output still held open by what it
    left outside its group) does not make its success an interruption."""
    result = executors.execute(["kubectl", "done-then-stopped"],
                               settings=_settings(WINGMAN_EXEC_TIMEOUT_SECONDS="30"),
                               credentials=creds)
    assert executors.TERMINATION.requested
    assert (result.exit_code, result.output, result.interrupted) == (0, "done\n", False)


def test_an_interrupted_wait_leaves_nothing_of_the_command_running(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path, terminating: None
) -> None:
    """A wait ended by anything else than its deadline or a SIGTERM (a SIGINT's
    ``KeyboardInterrupt``) still kills the command's whole process group on its way out."""
    pidfile = tmp_path / "child.pid"
    with pytest.raises(KeyboardInterrupt):
        executors.execute(["kubectl", "interrupt", str(pidfile)],
                          settings=_settings(WINGMAN_EXEC_TIMEOUT_SECONDS="30"),
                          credentials=creds)
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone_or_zombie(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(grandchild), "the command's group outlived the interrupted wait"


def test_a_sigterm_before_the_install_is_forgotten_and_after_restore_is_not_handled(
    fake_kubectl: Path, creds: Credentials, sigterm_dropped: None
) -> None:
    restore = executors.TERMINATION.install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert executors.TERMINATION.requested
    restore()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert not executors.TERMINATION.requested
    restore = executors.TERMINATION.install()
    try:
        result = executors.execute(["kubectl", "say", "ok"], settings=_settings(),
                                   credentials=creds)
    finally:
        restore()
    assert (result.exit_code, result.output, result.interrupted) == (0, "ok", False)


def test_a_command_is_not_started_once_the_gateway_was_asked_to_stop(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path, sigterm_dropped: None
) -> None:
    pidfile = tmp_path / "child.pid"
    restore = executors.TERMINATION.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(ExecutionFailed) as exc:
            executors.execute(["kubectl", "leave", str(pidfile)], settings=_settings(),
                              credentials=creds)
    finally:
        restore()
    assert exc.value.reason == "GatewayTerminating"
    assert not pidfile.exists(), "the command started after the gateway was asked to stop"


def test_a_child_the_command_leaves_behind_is_killed_when_it_exits(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path
) -> None:
    """Nothing of the command outlives it: a process it left in its group could go on acting
    as the executor while the gateway records the result."""
    pidfile = tmp_path / "child.pid"
    result = executors.execute(["kubectl", "leave", str(pidfile)], settings=_settings(),
                               credentials=creds)
    assert (result.exit_code, result.output, result.timed_out) == (0, "done\n", False)
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone_or_zombie(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(grandchild), "a child of the command outlived it"


def _state(pid: int) -> str:
    """The state of process ``pid`` as /proc shows it (``Z``: a zombie, exited and not reaped
    yet), or "gone" once it was reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


@pytest.fixture
def group_kills(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Every ``os.killpg`` made, with the state of the group's leader (the process whose ID
    names the group) at that moment; the kill itself is made as asked."""
    kills: list[tuple[int, str]] = []
    killpg = os.killpg

    def spy(pgid: int, signum: int) -> None:
        kills.append((pgid, _state(pgid)))
        killpg(pgid, signum)

    monkeypatch.setattr(os, "killpg", spy)
    return kills


def _all_gone(*pids: int) -> bool:
    deadline = time.monotonic() + 5
    while not all(_gone_or_zombie(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return all(_gone_or_zombie(p) for p in pids)


def test_the_group_is_killed_while_the_exited_command_still_holds_its_number(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path,
    group_kills: list[tuple[int, str]],
) -> None:
    """The group is killed by its number, the command's process ID. Once the command is
    reaped, that number is free as soon as its group empties, and a new group may get it:
    the kill must come while the command is an unreaped zombie (it keeps the number), and the
    command is reaped after it, its exit status as it ended."""
    pidfile = tmp_path / "child.pid"
    result = executors.execute(["kubectl", "leave", str(pidfile)], settings=_settings(),
                               credentials=creds)
    assert (result.exit_code, result.output, result.timed_out) == (0, "done\n", False)
    assert [state for _, state in group_kills] == ["Z"], (
        "the group was not killed while its leader was an unreaped zombie")
    assert _all_gone(int(pidfile.read_text())), "a child of the command outlived it"


def test_a_sigterm_after_the_command_exited_kills_its_group_before_it_is_reaped(
    fake_kubectl: Path, creds: Credentials, terminating: None,
    group_kills: list[tuple[int, str]],
) -> None:
    """A SIGTERM that comes once the command exited (its output still held open outside its
    group): the gateway looks whether it exited without reaping it, kills the group, and only
    then reaps it; the command ended as it did."""
    result = executors.execute(["kubectl", "done-then-stopped"],
                               settings=_settings(WINGMAN_EXEC_TIMEOUT_SECONDS="30"),
                               credentials=creds)
    assert executors.TERMINATION.requested
    assert (result.exit_code, result.output, result.interrupted) == (0, "done\n", False)
    assert [state for _, state in group_kills] == ["Z"], (
        "the group was not killed while its leader was an unreaped zombie")


def test_a_deadline_kills_the_group_before_the_command_is_reaped(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path,
    group_kills: list[tuple[int, str]],
) -> None:
    pidfile = tmp_path / "child.pid"
    result = executors.execute(["kubectl", "hang", str(pidfile)],
                               settings=_settings(WINGMAN_EXEC_TIMEOUT_SECONDS="1"),
                               credentials=creds)
    assert result.timed_out and result.exit_code == -9
    assert len(group_kills) == 1 and group_kills[0][1] not in ("Z", "gone")


class _InterruptedPopen(subprocess.Popen[bytes]):
    """``subprocess.Popen`` that gets a SIGINT just as it returns: the command started, and
    the executor has not begun its wait yet."""

    started: ClassVar[list[int]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started.append(self.pid)
        signal.raise_signal(signal.SIGINT)


def _reap_leftovers(pids: list[int]) -> None:
    """What a failed test left running is killed (the test fails, the run goes on)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def test_a_sigint_as_the_command_starts_still_kills_its_group(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGINT between the start of the command and the wait that kills its group on every
    way out: its ``KeyboardInterrupt`` used to be raised there, before that wait, and the
    command ran on with nothing left to kill it. It is held until the wait begins, and raised
    there: the group killed, the command reaped."""
    _InterruptedPopen.started = []
    monkeypatch.setattr(subprocess, "Popen", _InterruptedPopen)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    try:
        with pytest.raises(KeyboardInterrupt):
            executors.execute(["kubectl", "hang", str(tmp_path / "child.pid")],
                              settings=_settings(WINGMAN_EXEC_TIMEOUT_SECONDS="30"),
                              credentials=creds)
        (leader,) = _InterruptedPopen.started
        assert _state(leader) == "gone", "the command ran on after the interrupt"
    finally:
        _reap_leftovers(_InterruptedPopen.started)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_sigint_as_the_group_is_being_killed_is_raised_once_it_is(
    fake_kubectl: Path, creds: Credentials, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGINT in the cleanup that kills the group, before the kill: its
    ``KeyboardInterrupt`` was raised there, and the command (at its deadline, still running)
    ran on, unkilled. It is raised once the group is killed and the command reaped."""
    pidfile = tmp_path / "child.pid"
    killpg = os.killpg
    kills: list[int] = []

    def interrupted_kill(pgid: int, signum: int) -> None:
        kills.append(pgid)
        signal.raise_signal(signal.SIGINT)
        killpg(pgid, signum)

    monkeypatch.setattr(os, "killpg", interrupted_kill)
    try:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            executors.execute(["kubectl", "hang", str(pidfile)],
                              settings=_settings(WINGMAN_EXEC_TIMEOUT_SECONDS="1"),
                              credentials=creds)
        # (not killed, the command would be waited for until it ends by itself, 60 s later)
        assert time.monotonic() - started < 10, "the group was not killed at the deadline"
        (leader,) = kills
        assert _state(leader) == "gone", "the command ran on after the interrupted kill"
        assert _all_gone(int(pidfile.read_text())), "a child of the command ran on"
    finally:
        monkeypatch.undo()
        _reap_leftovers(kills)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_whose_handler_raises_nothing_does_not_end_the_wait(
    fake_kubectl: Path, creds: Credentials, terminating: None,
) -> None:
    """Held while the command runs, another signal's handler still runs during the wait (and
    once only), and the command runs on to its end."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        result = executors.execute(["kubectl", "close-then-exit"], settings=_settings(),
                                   credentials=creds)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    assert (result.exit_code, result.output, result.interrupted) == (3, "started\n", False)
    assert seen == [signal.SIGUSR1]


def test_missing_kubectl_is_a_clear_error(
    creds: Credentials, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExecutionFailed, match="kubectl binary is not on PATH") as info:
        executors.preflight(["kubectl", "get", "pods"], settings=_settings())
    assert info.value.reason == "KubectlNotFound"


@pytest.mark.parametrize("argv", [["bash", "-c", "id"], ["/usr/bin/kubectl", "get", "pods"],
                                  ["sh"], ["python3", "-c", "1"]])
def test_other_programs_are_refused(argv: list[str], creds: Credentials) -> None:
    with pytest.raises(ExecutionFailed) as info:
        executors.execute(argv, settings=_settings(), credentials=creds)
    assert info.value.reason == "ExecutorNotAllowed"


# ------------------------------------------------------------------------------ docker


# Against the real Docker Engine: tests/container/test_docker_executor.py. Here only what never
# reaches an engine.


def _docker_settings(host: str, enabled: str = "true") -> GatewaySettings:
    return _settings(WINGMAN_DOCKER_ENABLED=enabled, WINGMAN_DOCKER_HOST=host)


def test_docker_disabled_is_refused(creds: Credentials, tmp_path: Path) -> None:
    with pytest.raises(ExecutionFailed) as info:
        executors.execute(["docker", "restart", "web"],
                          settings=_docker_settings(f"unix://{tmp_path}/d.sock", enabled="false"),
                          credentials=creds)
    assert info.value.reason == "DockerDisabled"


@pytest.mark.parametrize("argv", [["docker", "rm", "web"], ["docker", "exec", "web", "sh"],
                                  ["docker", "restart", "web", "db"],
                                  ["docker", "restart", "../web"], ["docker", "restart"]])
def test_other_docker_commands_are_refused(argv: list[str], creds: Credentials,
                                           tmp_path: Path) -> None:
    with pytest.raises(ExecutionFailed) as info:
        executors.execute(argv, settings=_docker_settings(f"unix://{tmp_path}/d.sock"),
                          credentials=creds)
    assert info.value.reason == "ExecutorNotAllowed"


def test_docker_unreachable_engine_is_a_clear_error(creds: Credentials, tmp_path: Path) -> None:
    with pytest.raises(ExecutionFailed) as info:
        executors.execute(["docker", "restart", "web"],
                          settings=_docker_settings(f"unix://{tmp_path}/missing.sock"),
                          credentials=creds)
    assert info.value.reason == "DockerUnavailable"


def test_docker_host_must_be_a_local_socket() -> None:
    from wingman.errors import ConfigError

    with pytest.raises(ConfigError, match="WINGMAN_DOCKER_HOST"):
        _docker_settings("tcp://10.0.0.1:2375")
    assert _settings().docker_host == "unix:///var/run/docker.sock"
    assert _settings(DOCKER_HOST="unix:///run/d.sock").docker_host == "unix:///run/d.sock"


class _Interrupted(Exception):
    """What a signal's handler raises in the waiting thread (as a SIGINT's KeyboardInterrupt)."""


def test_a_docker_operation_is_never_asked_for_once_the_wait_for_it_ended_on_an_error() -> None:
    """The gateway stops waiting for the Docker operation's thread because an error was raised
    in the wait (a signal's handler: Python turns a SIGINT into a KeyboardInterrupt there):
    the thread, still looking the container up, must not ask the engine to act afterwards,
    while nothing waits to record it."""
    call = executors._DockerCall()
    looked_up = threading.Event()
    asked: list[bool] = []

    def act() -> tuple[int, str, bool]:
        looked_up.wait(10)  # the container's inspect, held up
        asked.append(call.ask())
        return 0, "acted\n", False

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        with pytest.raises(_Interrupted):
            call.wait(act, ExecutionFailed("not asked", reason="GatewayTerminating"))
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    looked_up.set()
    deadline = time.monotonic() + 5
    while not asked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert asked == [False], "the engine was asked to act after the gateway stopped waiting"

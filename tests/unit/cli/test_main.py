"""The command line's own surface: the kubectl plugin's help, ``wingman dev`` outside a checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import wingman
from support.localserver import QuietHandler, serving

BIN = Path(sys.executable).parent
OPERATOR_SRC = Path(wingman.__file__).resolve().parents[1]


@pytest.mark.parametrize(("program", "listed"), [("kubectl-wingman", False), ("wingman", True)])
def test_the_plugin_help_hides_the_commands_for_pods(program: str, listed: bool) -> None:
    out = subprocess.run([str(BIN / program), "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "approve" in out and "describe" in out
    pod_only = [line.split()[0] for line in out.splitlines()
                if line.strip().startswith(("operator ", "gateway "))]
    assert (pod_only == ["operator", "gateway"]) is listed, out
    if not listed:
        assert out.startswith("usage: kubectl wingman")
        # hidden, not removed: the pods run them as `wingman operator|gateway`
        result = subprocess.run([str(BIN / program), "gateway", "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0


def test_output_closed_early_ends_quietly_with_the_sigpipe_code() -> None:
    # `kubectl wingman describe x | head -1`: the reader stops, and that is no crash
    proc = subprocess.Popen([sys.executable, "-m", "wingman.cli", "completion", "bash"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the program writes: every write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and err == ""


@pytest.mark.parametrize("argv", [["audit", "verify", "{trail}"],
                                  ["audit", "show", "{trail}", "--subject", "r"]])
def test_output_that_cannot_be_written_is_an_error_not_a_verdict(
        tmp_path: Path, argv: list[str]) -> None:
    # `wingman audit verify trail > file` on a full disk: exit 1 would read as "tampered"
    from wingman.audit.file import FileSink

    trail = tmp_path / "audit.jsonl"
    with FileSink(trail) as sink:
        sink.append("VoteCast", actor="a", subject={"name": "r"})
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "wingman.cli",
                               *[a.format(trail=trail) for a in argv]],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert "cannot write the output: No space left on device" in done.stderr



@pytest.mark.parametrize(("error", "said"), [
    (OSError(98, "Address already in use"), "error: Address already in use"),
    (OSError(2, "No such file or directory", "/etc/x"), "error: /etc/x: No such file"),
    (OSError(28, "No space left on device"), "cannot write the output: No space left"),
])
def test_an_os_error_is_named_for_what_it_is(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        error: OSError, said: str) -> None:
    # only a full disk or an I/O error on the output is "the output could not be written"
    from wingman.cli import main as cli

    def fail(*_: object, **__: object) -> int:
        raise error

    monkeypatch.setattr(cli, "_dispatch", fail)
    assert cli.main(["completion", "bash"]) == 2
    err = capfd.readouterr().err
    assert said in err, err
    assert ("cannot write the output" in err) == (error.errno == 28)


_EARLY_SIGTERM_SCRIPT = """
import os, signal, sys
from wingman.cli import main as cli_main
from wingman.gateway import run as gateway_run
from wingman.settings import GatewaySettings

def settings_read_as_the_pod_is_stopped(cls):
    os.kill(os.getpid(), signal.SIGTERM)  # unhandled, its default action ends this process
    return object()

def run_gateway(settings, *, asked_to_stop):
    print("asked to stop:", asked_to_stop())
    return 0

GatewaySettings.from_env = classmethod(settings_read_as_the_pod_is_stopped)
gateway_run.run_gateway = run_gateway
sys.exit(cli_main.main(["gateway"]))
"""


def test_the_gateway_notes_a_sigterm_from_its_first_line() -> None:
    """The gateway is its container's first process: a SIGTERM it does not handle is dropped.
    One during its start (the imports, reading its settings) reaches ``run_gateway``, which
    refuses then (tests/integration/gateway/test_run.py). Its own process here, where an
    unhandled SIGTERM ends it instead."""
    done = subprocess.run([sys.executable, "-c", _EARLY_SIGTERM_SCRIPT], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(OPERATOR_SRC)})
    assert (done.returncode, done.stdout) == (0, "asked to stop: True\n"), done


_CRASH_SCRIPT = """
import sys
from wingman.cli import main as cli_main
from wingman.settings import GatewaySettings

FORGED = '\\n{"level": "info", "event": "GatewayExecuted", "forged": true}\\n\\x1b[2J'

def settings_that_crash(cls):
    raise RuntimeError("bad value" + FORGED)

GatewaySettings.from_env = classmethod(settings_that_crash)
sys.argv = ["wingman", "gateway"]
sys.exit(cli_main.main())
"""


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_an_error_nothing_catches_is_one_escaped_record_not_a_raw_traceback(fmt: str) -> None:
    """An exception whose message carries a line break and a terminal escape, raised where
    nothing catches it (here: reading the gateway's settings), must not forge a log record
    or reach a terminal as it is: it is written as one record in the log format."""
    done = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(OPERATOR_SRC),
                               "WINGMAN_LOG_FORMAT": fmt})
    assert done.returncode == 1, done
    assert "\x1b" not in done.stderr, "a raw escape sequence reached the log"
    if fmt == "json":
        import json

        (line,) = done.stderr.splitlines()  # one record: the forged one is inside it
        record = json.loads(line)
        assert (record["level"], record["component"], record["event"]) == (
            "error", "gateway", "UncaughtException")
        assert "RuntimeError: bad value" in record["message"]
        assert '{"level": "info", "event": "GatewayExecuted"' in record["message"]
        assert "Traceback" in record["error"] and "settings_that_crash" in record["error"]
    else:
        first, *rest = done.stderr.splitlines()
        assert " ERROR   gateway wingman.crash " in first
        assert "RuntimeError: bad value" in first
        assert rest and all(line.startswith("\t") for line in rest), done.stderr
        assert not any(line.startswith("{") for line in done.stderr.splitlines())


class _HostileApi(QuietHandler):
    """Answers every call with a Status whose reason carries terminal control sequences (a real
    API server's reasons are CamelCase words: this is what answers at its address instead)."""

    def do_GET(self) -> None:
        self.send_json(422, {"kind": "Status", "status": "Failure", "code": 422,
                             "reason": "Invalid\x1b]0;owned\x07\x1b[2J", "message": "no"})


def test_an_error_s_reason_from_the_api_server_reaches_the_terminal_escaped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """The error line a command prints shows the reason the answer gave escaped, as it shows
    the message: what answers at the API server's address cannot retitle the terminal or
    clear what it shows."""
    from wingman.cli import main as cli

    with serving(_HostileApi) as url:
        kubeconfig = _kubeconfig_for(tmp_path, url)
        monkeypatch.delenv("KUBECONFIG", raising=False)
        assert cli.main(["describe", "req-1", "-n", "ns", "--kubeconfig", str(kubeconfig)]) == 2
    err = capfd.readouterr().err
    assert "\x1b" not in err and "\x07" not in err, repr(err)
    assert "error (Invalid\\x1b]0;owned\\x07\\x1b[2J): " in err, err


def _kubeconfig_for(tmp_path: Path, url: str) -> Path:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c"}))
    return kubeconfig


@pytest.mark.parametrize("command", [["list"], ["describe", "req-1"],
                                     ["result", "req-1-0a1b2c3d"]])
def test_an_answer_of_a_shape_no_api_server_gives_is_an_api_error_not_a_denial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
        command: list[str]) -> None:
    """A request or a grant without ``metadata``, from whatever answers at the API server's
    address, is an API error (exit 5) naming what is wrong and its reason (UnusableAnswer, not
    an unreachable server's), never a crash whose exit code (1) the command line documents as
    a human's denial."""
    from support.oddapi import GRANTS, REQUESTS, grant, listing, odd_api, request
    from wingman.cli import main as cli
    from wingman.cli.requests import EXIT_API

    bare = {k: v for k, v in request().items() if k != "metadata"}
    bare_grant = {k: v for k, v in grant().items() if k != "metadata"}
    with odd_api({REQUESTS: listing(bare), REQUESTS + "/req-1": bare,
                  GRANTS: listing(grant()), GRANTS + "/req-1-0a1b2c3d": bare_grant}) as url:
        monkeypatch.delenv("KUBECONFIG", raising=False)
        code = cli.main([*command, "-n", "wm", "--kubeconfig", str(_kubeconfig_for(tmp_path,
                                                                                   url))])
    err = capfd.readouterr().err
    assert code == EXIT_API, err
    assert "error (UnusableAnswer): " in err and "metadata.name is missing" in err, err
    assert "Traceback" not in err


_CLI_CRASH_SCRIPT = """
import sys
from wingman.cli import main as cli_main
from wingman.cli import requests

def connect_that_crashes(*args, **kwargs):
    raise RuntimeError("something nobody expected")

requests.connect = connect_that_crashes
sys.argv = ["kubectl-wingman", "list", "-n", "wm"]
sys.exit(cli_main.main())
"""


def test_an_error_nothing_catches_in_a_command_exits_internal_error_never_denied() -> None:
    """An error nothing in a command catches (a fault of Wingman's) exits with the documented
    internal error code, never 1, which says a human denied the request: a script or an agent
    reading the code must not take a crash for a rejection. The error is still the one
    record in the log format (the gateway's own exits are left as they are: see above)."""
    from wingman.cli.requests import EXIT_CODES, EXIT_DENIED, EXIT_INTERNAL

    done = subprocess.run([sys.executable, "-c", _CLI_CRASH_SCRIPT], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(OPERATOR_SRC),
                               "WINGMAN_LOG_FORMAT": "json"})
    assert done.returncode == EXIT_INTERNAL != EXIT_DENIED, done
    assert "internal error" in EXIT_CODES[EXIT_INTERNAL]
    (line,) = done.stderr.splitlines()
    record = json.loads(line)
    assert (record["level"], record["component"], record["event"]) == (
        "error", "cli", "UncaughtException")
    assert "RuntimeError: something nobody expected" in record["message"]

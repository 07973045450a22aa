"""The command line's parser, output and exit codes (no cluster)."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from wingman.cli import main as cli
from wingman.cli import requests
from wingman.client import status as st
from wingman.client.api import client_error, error_answer
from wingman.errors import WingmanError
from wingman.kube import AnswerTooLarge, ListTooLarge


def test_describe_shows_votes_dissent_decisions_provenance_and_grants() -> None:
    obj = {
        "metadata": {"namespace": "ns", "name": "req-1"},
        "spec": {"requester": "alice", "environment": "prd", "instruction": "scale",
                 "commands": ["kubectl scale deployment/web --replicas=0 -n apps"],
                 "source": {"reference": "JIRA-9", "agent": "ops-bot",
                            "inputTrust": "Untrusted", "excerpt": "scale web down"},
                 "decisions": [{"verdict": "Approve", "by": "bob", "reason": "ok"}]},
        "status": {"phase": "AwaitingDecision",
                   "consensus": {"outcome": "NoConsensus", "risk": "high", "approvals": 1,
                                 "rejections": 1, "abstentions": 0,
                                 "votes": [{"voter": "destructive", "verdict": "reject",
                                            "risk": "high", "rationale": "scales to zero"}],
                                 "dissent": ["destructive"]},
                   "decision": {"approvedBy": ["bob"], "requiredApprovals": 2},
                   "conditions": [{"type": "Reviewed", "status": "True",
                                   "reason": "ConsensusReached", "message": "done"}],
                   "grants": [{"command": "kubectl scale deployment/web --replicas=0 -n apps",
                               "grant": "req-1-def", "grantUID": "u",
                               "grantedAt": "2026-11-25T12:00:00Z"}]},
    }
    grants = [{"metadata": {"name": "req-1-abc"}, "spec": {"command": "kubectl x"},
               "status": {"phase": "Denied", "reason": "ApprovalNotApproved"}}]
    out = io.StringIO()
    requests.describe(obj, grants, out)
    text = out.getvalue()
    for expected in ("AwaitingDecision", "scales to zero", "dissent", "Approve by bob",
                     "ApprovalNotApproved", "risk high", "Approvals:    1 of 2",
                     "reference    JIRA-9", "input trust  Untrusted", "excerpt      scale web",
                     "--replicas=0 -n apps  (granted to req-1-def: runs once)"):
        assert expected in text


def _parse(*argv: str) -> object:
    return cli._parser().parse_args(list(argv))


@pytest.mark.parametrize("command", [["describe", "x"], ["result", "x"], ["list"], ["policy"],
                                     ["request", "--instruction", "i", "--command", "c"],
                                     ["exec", "x", "--command", "c"], ["approve", "x"]])
def test_every_command_takes_output_namespace_kubeconfig_and_context(command: list[str]) -> None:
    args = _parse(*command, "-o", "json", "-n", "wm", "--kubeconfig", "k", "--context", "c")
    assert (args.output, args.namespace, args.kubeconfig, args.context) == (  # type: ignore[attr-defined]
        "json", "wm", "k", "c")


def test_the_plugins_help_hides_the_commands_that_run_in_pods(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/kubectl-wingman"])
    text = cli._parser().format_help()
    assert "kubectl wingman" in text and "request" in text and "mcp" in text
    assert "run the operator" not in text and "gateway Job" not in text
    # still runnable (the image's entrypoints), only not advertised
    assert cli._parser().parse_args(["gateway"]).command == "gateway"
    monkeypatch.setattr(sys, "argv", ["wingman"])
    assert "run the operator" in cli._parser().format_help()


def test_help_documents_distinct_exit_codes() -> None:
    codes = requests.EXIT_CODES
    assert len(set(codes)) == len(codes) == 11
    text = cli._parser().format_help()
    for code, meaning in ((1, "denied"), (2, "usage"), (3, "expired"), (4, "failed"),
                          (5, "API error"), (6, "still waiting"), (7, "too large")):
        assert meaning in codes[code] and f"{code}" in text


def test_usage_errors_exit_2_and_configuration_errors_say_what_is_missing(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: object) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["exec", "x"])  # --command missing
    assert exc.value.code == requests.EXIT_USAGE
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.main(["list"]) == requests.EXIT_USAGE
    assert "no Kubernetes configuration" in capsys.readouterr().err


def test_state_exit_codes_differ_for_denied_expired_failed_and_waiting() -> None:
    def code(state: st.State) -> int:
        return requests._code(st.Status(state, next=""))
    assert code(st.State.SUCCEEDED) == code(st.State.AUTO_APPROVED) == 0
    assert code(st.State.REJECTED) == code(st.State.REVOKED) == code(st.State.REFUSED) == 1
    assert code(st.State.EXPIRED) == 3 and code(st.State.FAILED) == 4
    assert code(st.State.AWAITING_APPROVAL) == code(st.State.RUNNING) == 6


def test_the_wait_display_is_live_on_a_terminal_and_quiet_otherwise() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    s = st.Status(st.State.AWAITING_APPROVAL, next="", name="req-1",
                  approvals=st.Approvals(0, 1))
    quiet = io.StringIO()
    ticker = requests.Ticker(quiet)
    ticker(s, 3.2)
    ticker.done()
    assert quiet.getvalue() == ""
    tty = Tty()
    ticker = requests.Ticker(tty)
    ticker(s, 3.2)
    ticker(s, 4.9)
    ticker.done()
    assert "waiting for req-1: awaiting_approval (0 of 1 approvals) - 4s" in tty.getvalue()
    assert tty.getvalue().endswith("\r\x1b[K")


def test_completion_scripts_are_printed_for_the_common_shells(
        capsys: pytest.CaptureFixture[str]) -> None:
    for shell in ("bash", "zsh", "fish", "tcsh", "powershell"):
        assert cli.main(["completion", shell]) == 0
        script = capsys.readouterr().out
        assert "wingman" in script and "kubectl-wingman" in script


def _tcsh_completes(tcsh: str, path: str, setup: str, line: str) -> str:
    """What a real interactive tcsh (on a terminal: its line editor on) lists for ``line``
    (``^D`` at its end: list-choices) after running ``setup``."""
    import os
    import pty
    import select
    import time

    env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "TERM": "xterm"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: tcsh, no startup files
        os.execve(tcsh, [tcsh, "-f", "-i"], env)  # noqa: S606 - argv, no shell between

    def read(until: str, seconds: float) -> str:
        out, end = "", time.monotonic() + seconds
        while time.monotonic() < end and until not in out:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    out += os.read(fd, 65536).decode(errors="replace")
                except OSError:
                    break
        return out

    try:
        os.write(fd, f"set edit; {setup}; echo re''ady\n".encode())  # its echo differs
        assert "\nready\r" in read("\nready\r", 30), "tcsh did not start"
        read("# ", 5)  # its prompt
        os.write(fd, f"{line}\x04".encode())
        listed = read("\n# ", 60)
        os.write(fd, b"\x15exit\n")
        return listed
    finally:
        os.close(fd)
        os.waitpid(pid, 0)


def test_the_tcsh_completion_script_completes_in_a_real_tcsh_without_argcomplete_helpers(
        tmp_path: Path) -> None:
    """``eval "`wingman completion tcsh`"`` completes commands and options in a real tcsh with
    only Wingman installed: argcomplete's own tcsh script runs ``python-argcomplete-tcsh``,
    which argcomplete 3 no longer installs (here: not on ``PATH``)."""
    import os
    import shutil

    tcsh = shutil.which("tcsh")
    if tcsh is None:
        pytest.skip("tcsh is not installed (apt-get install tcsh)")
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "wingman").exists(), "pip install the package"
    tools = tmp_path / "bin"  # what the system offers, without any argcomplete helper
    tools.mkdir()
    for tool in ("env", "sh"):
        os.symlink(str(shutil.which(tool)), tools / tool)
    path = f"{venv_bin}:{tools}"
    assert shutil.which("python-argcomplete-tcsh", path=path) is None
    setup = 'eval "`wingman completion tcsh`"'
    listed = _tcsh_completes(tcsh, path, setup, "wingman re")
    assert {"reject", "request", "result"} <= set(listed.split()), listed
    listed = _tcsh_completes(tcsh, path, setup, "kubectl-wingman request --untr")
    assert "--untrusted-input" in listed, listed


def test_describe_shows_the_preview_and_its_diff() -> None:
    obj = {"metadata": {"namespace": "ns", "name": "req-2"},
           "spec": {"requester": "alice", "environment": "test", "instruction": "scale",
                    "commands": ["kubectl scale deployment/web --replicas=3 -n apps"]},
           "status": {"phase": "Reviewing", "preview": {
               "phase": "Completed",
               "summary": {"objects": 1, "kinds": ["Deployment"], "namespaces": ["apps"],
                           "findings": 0},
               "commands": [{"command": "kubectl scale deployment/web --replicas=3 -n apps",
                             "outcome": "Previewed", "diff": "-  replicas: 1\n+  replicas: 3\n",
                             "targets": [{"kind": "Deployment", "namespace": "apps",
                                          "name": "web", "generation": 4,
                                          "action": "Update"}]}]}}}
    out = io.StringIO()
    requests.describe(obj, [], out)
    text = out.getvalue()
    assert "Preview:      1 object(s) would change (Deployment) in apps" in text
    assert "  1. Previewed: Update Deployment apps/web (generation 4)" in text
    assert "    -  replicas: 1\n    +  replicas: 3" in text


def test_kubectl_completes_the_plugins_commands_and_options_without_pod_only_ones() -> None:
    import os
    import subprocess
    from pathlib import Path

    from wingman.dev import tools as devtools

    kubectl = devtools.find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not provisioned; run `bash .ci/provision-tools.sh`")
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "kubectl_complete-wingman").exists(), "pip install the package"
    env = {"PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "HOME": os.environ.get("HOME", "/tmp")}

    def complete(*words: str) -> list[str]:
        proc = subprocess.run([str(kubectl), "__complete", "wingman", *words], env=env,
                              capture_output=True, text=True, timeout=60, check=True)
        return proc.stdout.splitlines()

    assert complete("re") == ["request", "reject", "result", ":4"]
    top = complete("")
    assert {"request", "exec", "describe", "mcp", "policy"} <= set(top)
    assert not {"operator", "gateway", "chat", "preview"} & set(top)
    assert complete("request", "--untr") == ["--untrusted-input", ":4"]


def _nowhere(tmp_path: Path) -> str:
    """A kubeconfig whose API server never answers: what is tested fails before any call."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)


@pytest.mark.parametrize("argv", [["describe", ""], ["describe", "."], ["result", ""],
                                  ["result", "../configmaps/x"], ["approve", "A_B"],
                                  ["exec", "..", "--command", "kubectl get pods"],
                                  ["rollback", "a/b"], ["list", "-n", "Bad NS"],
                                  ["describe", "x", "-n", ""]])
def test_a_name_that_cannot_exist_is_a_usage_error_not_an_answer(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "--kubeconfig", _nowhere(tmp_path)]) == requests.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "is not a valid" in captured.err and "lowercase" in captured.err


@pytest.mark.parametrize("argv", [["describe", "a..b"], ["result", "a.-b"], ["approve", "web-.1"],
                                  ["exec", "web.", "--command", "kubectl get pods"],
                                  ["rollback", ".web"], ["describe", "Web"],
                                  ["describe", "a" * 254], ["result", "g" * 64]])
def test_a_name_the_api_server_would_refuse_is_refused_before_any_call_naming_the_rule(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # "a..b" and "a.-b" were sent, for the API server to refuse once called
    assert cli.main([*argv, "--kubeconfig", _nowhere(tmp_path)]) == requests.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "is not a valid" in captured.err, captured.err
    assert ("in parts joined by single '.', each starting and ending with a letter or digit "
            "(an RFC 1123 subdomain") in captured.err, captured.err


@pytest.mark.parametrize("argv", [["describe", "\udcff"],
                                  ["request", "--instruction", "caf\udce9",
                                   "--command", "kubectl get pods"]])
def test_arguments_that_are_not_utf8_are_a_usage_error(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # what the shell passes for bytes that are not UTF-8 (Python's surrogateescape)
    assert cli.main([*argv, "--kubeconfig", _nowhere(tmp_path)]) == requests.EXIT_USAGE
    err = capsys.readouterr().err
    assert "not valid UTF-8" in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "says"), [
    (["result", "g", "--wait", "--timeout", "-5"], "--timeout"),
    (["result", "g", "--wait", "--timeout", "nan"], "--timeout"),
    (["result", "g", "--wait", "--timeout", "inf"], "--timeout"),
    (["request", "--instruction", "x", "--command", "c", "--timeout", "0"], "--timeout"),
    (["mcp", "--transport", "http", "--port", "99999"], "--port"),
    (["mcp", "--transport", "http", "--port", "-1"], "--port"),
    (["mcp", "--transport", "http", "--path", "mcp"], "--path"),
    (["approve", "r", "--uid", ""], "--uid"),
    (["approve", "r", "--uid", "req-1"], "--uid"),
    (["reject", "r", "--reason", "no", "--uid", "0f8fad5b-d9cb-469f-a165-70867728950"], "--uid"),
    (["reject", "r", "--reason", "no", "--uid", "0f8fad5bd9cb469fa16570867728950e"], "--uid"),
    (["approve", "r", "--uid", "0f8fad5b-d9cb-469f-a165-7086772895\u200b0e"], "--uid"),
    (["approve", "r", "--uid", "0f8fad5b-d9cb-469f-a165-70867728950e0"], "--uid"),
])
def test_out_of_range_numbers_and_paths_are_usage_errors(
        argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == requests.EXIT_USAGE
    assert f"argument {says}" in capsys.readouterr().err


@pytest.mark.parametrize(("given", "taken"), [
    ("0f8fad5b-d9cb-469f-a165-70867728950e", "0f8fad5b-d9cb-469f-a165-70867728950e"),
    (" 0F8FAD5B-D9CB-469F-A165-70867728950E\n", "0f8fad5b-d9cb-469f-a165-70867728950e"),
])
def test_a_request_uid_as_describe_shows_it_is_taken_as_the_api_server_writes_it(
        given: str, taken: str) -> None:
    # the API server writes UIDs in lowercase: a pasted one in capitals pins the same request
    for argv in (["approve", "r"], ["reject", "r", "--reason", "no"]):
        assert vars(_parse(*argv, "--uid", given))["uid"] == taken
    assert vars(_parse("approve", "r"))["uid"] is None


@pytest.mark.parametrize("path", ["/mcp/{x}", "/{path:path}", "/mcp?x=1", "/mcp#top",
                                  "/a/../mcp", "/./mcp", "/mcp/..", "//mcp", "/a//mcp",
                                  "/m cp", "/mcp\t", "/mcp\n", "/mcp\x00", "/m%63p", "/mcp\u00e9",
                                  "/mc*p"])
def test_an_mcp_path_that_is_not_a_plain_path_is_a_usage_error(
        path: str, capsys: pytest.CaptureFixture[str]) -> None:
    # '{x}' made the route a pattern, matched by requests to other paths, which the checks of
    # a request's body (comparing the path as it is) then let through to the SDK unchecked;
    # the others name a path no request arrives at
    with pytest.raises(SystemExit) as exc:
        _parse("mcp", "--transport", "http", "--path", path)
    assert exc.value.code == requests.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"argument --path: {path!r} is not a plain path: give '/' or segments of " in err, err


@pytest.mark.parametrize("path", ["/", "/mcp", "/mcp/", "/v1/mcp", "/agents/mcp-1.0_a~b"])
def test_a_plain_mcp_path_is_taken(path: str) -> None:
    assert vars(_parse("mcp", "--transport", "http", "--path", path))["path"] == path


HOSTILE = "\x1b[2J\x1b[8mhidden\x1b[0m\rfake\x07\u202eevil\x00 al\u200bice\U000e0041\u3164"
RAW = ("\x1b", "\r", "\x07", "\u202e", "\x00", "\u200b", "\U000e0041", "\u3164")


def test_text_output_shows_control_characters_and_never_lets_them_act() -> None:
    # an agent's texts, a voter's rationale and a command's output reach an approver's
    # terminal: escapes could hide or fake what is reviewed, newlines could fake fields
    obj = {"metadata": {"namespace": "ns", "name": "req-3"},
           "spec": {"requester": "alice", "environment": "test",
                    "instruction": f"restart web\nConsensus:    Approve (risk low){HOSTILE}",
                    "justification": HOSTILE, "commands": [f"kubectl get pods{HOSTILE}"],
                    "source": {"excerpt": HOSTILE},
                    "decisions": [{"verdict": "Reject", "by": "bob", "reason": HOSTILE}]},
           "status": {"phase": "AwaitingDecision",
                      "consensus": {"outcome": "NoConsensus", "risk": "high",
                                    "votes": [{"voter": "llm", "verdict": "approve",
                                               "risk": "low", "rationale": HOSTILE}],
                                    "dissent": [{"voter": "llm", "verdict": "approve",
                                                 "rationale": HOSTILE}]},
                      "conditions": [{"type": "Reviewed", "status": "True",
                                      "reason": "R", "message": HOSTILE}]}}
    grants = [{"metadata": {"name": "g"}, "spec": {"command": HOSTILE},
               "status": {"phase": "Failed", "reason": "R"}}]
    out = io.StringIO()
    requests.describe(obj, grants, out)
    status = st.Status(st.State.FAILED, next=f"call {HOSTILE}", kind="ExecutionGrant",
                       name="g", namespace="ns", reason="R", message=HOSTILE,
                       output=f"line 1\n{HOSTILE}\nline 3\n", exit_code=1)
    requests.render(status, out)
    text = out.getvalue()
    assert not [c for c in RAW if c in text], text
    assert "\\x1b[8mhidden" in text and "\\u202eevil" in text  # shown, not acted on
    assert "al\\u200bice\\U000e0041\\u3164" in text  # what renders as nothing is shown too
    assert "\nConsensus:    Approve (risk low)" not in text  # no faked field
    assert "dissent: llm\n" in text and "'rationale'" not in text
    assert "line 1\n" in text and "\nline 3" in text  # output keeps its lines


def test_every_option_of_the_people_facing_commands_has_help() -> None:
    import argparse

    sub = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {'/'.join(action.option_strings)}"
               for name in ("request", "approve", "reject", "exec", "rollback", "describe",
                            "result", "list", "policy", "mcp")
               for action in sub.choices[name]._actions
               if action.option_strings and not action.help]
    assert missing == []


def test_an_unreachable_api_server_is_one_line_that_names_the_cause(tmp_path: Path) -> None:
    # not three "Retrying ..." warnings of the HTTP library first, then "MaxRetryError"
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "wingman.cli", "list", "--kubeconfig",
                           _nowhere(tmp_path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == requests.EXIT_API
    assert proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr
    assert "Connection refused" in proc.stderr and "is the API server running" in proc.stderr


def test_error_messages_show_control_characters_escaped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # errors quote arguments and what the API server or the request holds (its commands)
    assert cli.main(["describe", "x", "--context", "\x1b[2Jevil\rfake",
                     "--kubeconfig", _nowhere(tmp_path)]) == requests.EXIT_USAGE
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "\\x1b[2Jevil\\rfake" in err


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_with_json_or_yaml_a_failed_call_prints_its_answer_too(
        fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an agent that parses stdout learns the state and the next step, as over MCP
    import yaml

    assert cli.main(["describe", "Bad_Name", "-o", fmt, "--kubeconfig", _nowhere(tmp_path)]
                    ) == requests.EXIT_USAGE
    captured = capsys.readouterr()
    answer = json.loads(captured.out) if fmt == "json" else yaml.safe_load(captured.out)
    assert answer["state"] == "invalid" and "is not a valid" in answer["message"]
    assert "kubectl wingman policy" in answer["next"]
    assert "is not a valid" in captured.err  # people still read it on stderr
    assert cli.main(["list", "-o", fmt, "--kubeconfig", _nowhere(tmp_path)]) == requests.EXIT_API
    answer = json.loads(capsys.readouterr().out) if fmt == "json" else None
    assert answer is None or answer["state"] == "unavailable"


@pytest.mark.parametrize(("argv", "says"), [
    (["approve", "req-1", "--reason", "é" * 1234], "--reason is 1,234 characters; the limit is "
                                                   "1,000: shorten it"),
    (["reject", "req-1", "--reason", "x" * 1001], "--reason is 1,001 characters; the limit is "
                                                  "1,000"),
    (["request", "--instruction", "é" * 2001, "--command", "kubectl get pods"],
     "--instruction is 2,001 characters; the limit is 2,000"),
    (["request", "--instruction", "i", "--command", "kubectl get pods", "--justification",
      "j" * 2001], "--justification is 2,001 characters; the limit is 2,000"),
    (["request", "--instruction", "i", "--command", "kubectl get pods " + "x" * 4080],
     "--command is 4,097 characters; the limit is 4,096"),
    (["request", "--instruction", "i", "--command", "kubectl get pods", "--rollback",
      "r" * 4097], "--rollback is 4,097 characters; the limit is 4,096"),
    (["request", "--instruction", "i", *[a for n in range(11)
                                         for a in ("--command", f"kubectl get pod p{n}")]],
     "--command is given 11 times; a request holds at most 10"),
    (["request", "--instruction", "i", "--command", "c", "--excerpt", "e" * 4001],
     "--excerpt is 4,001 characters; the limit is 4,000"),
    (["request", "--instruction", "i", "--command", "c", "--agent", "a" * 254],
     "--agent is 254 characters; the limit is 253"),
    (["request", "--instruction", "i", "--command", "c", "--expires-after-seconds", "59"],
     "--expires-after-seconds is 59; it must be 60 to 604,800"),
    (["exec", "req-1", "--command", "k" * 4097], "--command is 4,097 characters; the limit is "
                                                  "4,096: give one of the request's commands"),
    (["request", "--instruction", "i", "--command", "echo " + "é" * 2100],
     "--command is 4,205 bytes of UTF-8 (2,105 characters); the limit is 4,096 bytes: its "
     "non-ASCII characters take 2 to 4 bytes each"),
    (["request", "--instruction", "i", "--command", "kubectl get pods", "--rollback",
      "echo " + "日" * 1400], "--rollback is 4,205 bytes of UTF-8 (1,405 characters); the "
                               "limit is 4,096 bytes"),
    (["exec", "req-1", "--command", "c", "--ttl-seconds", "3601"],
     "--ttl-seconds is 3,601; it must be 30 to 3,600"),
    (["rollback", "g-1", "--ttl-seconds", "0"], "--ttl-seconds is 0; it must be 30 to 3,600"),
])
def test_a_value_over_the_crds_limits_is_a_usage_error_before_any_call(
        argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # not the API server's 422 (nor, here, an unreachable one: no call is made at all)
    assert cli.main([*argv, "--kubeconfig", _nowhere(tmp_path)]) == requests.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert says in captured.err and "Connection refused" not in captured.err


def test_a_value_over_the_limits_answers_invalid_with_json_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["approve", "req-1", "--reason", "x" * 1001, "-o", "json",
                     "--kubeconfig", _nowhere(tmp_path)]) == requests.EXIT_USAGE
    answer = json.loads(capsys.readouterr().out)
    assert answer["state"] == "invalid" and answer["reason"] == "TooLong"
    assert "--reason is 1,001 characters" in answer["message"]


#: A JWT's shape (header.payload.signature), as a token pasted into a text looks.
_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(("argv", "field"), [
    (["approve", "req-1", "--reason", f"ok, it was {_JWT}"], "the reason"),
    (["reject", "req-1", "--reason", f"Bearer {_JWT}"], "the reason"),
    (["approve", "req-1", "--reason", "spaced: " + _JWT.replace(".", ". ")], "the reason"),
    (["request", "--instruction", "i", "--command", "kubectl get pods", "--justification",
      "wrapped:\n" + "\n".join(_JWT[i:i + 16] for i in range(0, len(_JWT), 16))],
     "spec.justification"),
    (["request", "--instruction", "i", "--command", "kubectl get pods", "--justification",
      f"the token {_JWT} fails"], "spec.justification"),
    (["request", "--instruction", "i", "--command", "kubectl get pods", "--excerpt",
      f"log: {_JWT}"], "spec.source.excerpt"),
    (["request", "--instruction", "i", "--command", "kubectl get pods", "--source-reference",
      _JWT], "spec.source.reference"),
    # copied from a JSON log line (its breaks escaped), from text wrapped with Unicode's line
    # separator, inside the base64 of a kubeconfig; a JWE and a short test token, spaced
    (["approve", "req-1", "--reason", "from the log: " + "\\n".join(
        _JWT[i:i + 20] for i in range(0, len(_JWT), 20))], "the reason"),
    (["approve", "req-1", "--reason", "from the log: " + "\\u000a".join(
        _JWT[i:i + 20] for i in range(0, len(_JWT), 20))], "the reason"),
    (["approve", "req-1", "--reason", "copied: " + _JWT[:30] + "\\u200b" + _JWT[30:]],
     "the reason"),
    (["request", "--instruction", "i", "--command", "kubectl get pods", "--justification",
      "see\u2028" + _JWT.replace(".", ".\u2028")], "spec.justification"),
    (["request", "--instruction", "i", "--command", "kubectl get pods", "--excerpt",
      base64.b64encode(f"users:\n- user:\n    token: {_JWT[:30]}\n{_JWT[30:]}\n".encode()
                       ).decode()], "spec.source.excerpt"),
    (["approve", "req-1", "--reason", "jwe: eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0. . "
      "aXZpdml2aXZpdml2. Y2lwaGVydGV4dA. dGFndGFndGFndGFndGFndA"], "the reason"),
    (["approve", "req-1", "--reason", "test token: eyJhbGciOiJ4In0. eyJiIjoyfQ. x"], "the reason"),
])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_token_shaped_text_is_refused_before_anything_is_written(
        argv: list[str], field: str, fmt: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # written, it would be read by everyone who may read requests, and the operator would
    # reject the whole request (LooksLikeToken): refused first, the token never repeated
    assert cli.main([*argv, "-o", fmt, "--kubeconfig", _nowhere(tmp_path)]
                    ) == requests.EXIT_USAGE
    captured = capsys.readouterr()
    assert f"{field} holds what looks like a token" in captured.err
    assert "remove it" in captured.err and "Connection refused" not in captured.err
    assert "eyJhbGci" not in captured.out + captured.err
    if fmt == "json":
        answer = json.loads(captured.out)
        assert answer["state"] == "invalid" and answer["reason"] == "LooksLikeToken", answer


@pytest.mark.parametrize("argv", [
    ["approve", "req-1", "--reason", "🙂" * 1000],  # 4,000 bytes, 1,000 code points
    ["request", "--instruction", "é" * 2000, "--command", "kubectl get pods",
     "--justification", "ü" * 2000, "--excerpt", "日" * 4000],
    ["exec", "req-1", "--command", "c", "--ttl-seconds", "3600"],
])
def test_values_of_exactly_the_limit_in_multibyte_characters_are_sent(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # accepted: the command goes on to call the API server (here one that never answers)
    assert cli.main([*argv, "--kubeconfig", _nowhere(tmp_path)]) == requests.EXIT_API
    err = capsys.readouterr().err
    assert "Connection refused" in err and "the limit is" not in err


@pytest.mark.parametrize("error", [
    ListTooLarge("the approvalrequests in wm are more than Wingman holds in one list: delete "
                 "those no longer needed"),
    AnswerTooLarge("the API server answered GET /x with more than 4 MiB: check the address")])
def test_an_answer_too_large_is_its_own_exit_code_not_try_again(
        error: WingmanError, capsys: pytest.CaptureFixture[str]) -> None:
    exc = client_error(error, "listing ApprovalRequests")
    assert requests.exit_code_for_error(exc) == requests.EXIT_TOO_LARGE != requests.EXIT_API
    answer = error_answer(exc, hints=st.COMMANDS).to_dict()
    assert answer["state"] == "too_large" and answer["reason"] == error.reason
    assert answer["next"].startswith("nothing to retry: asking again gets the same")
    assert error.message in answer["message"]  # what to do: kept


def test_describe_in_json_caps_a_grants_output_as_list_does() -> None:
    """``describe -o json`` shows a request's grants with the output cap the client applies,
    as ``list`` and ``result`` do: a grant's output is never shown longer in one than in the
    other."""
    import argparse

    from kubernetes import client as k8s

    from support.oddapi import GRANTS, REQUESTS, grant, listing, odd_api, request
    from wingman.client.api import WingmanClient
    from wingman.client.connect import Connection
    from wingman.kube import Kube

    long = grant(status={"phase": "Succeeded", "exitCode": 0, "output": "x" * 500})
    answers = {REQUESTS: listing(request()), REQUESTS + "/req-1": request(),
               GRANTS: listing(long), GRANTS + "/req-1-0a1b2c3d": long}
    shown: dict[str, Any] = {}
    with odd_api(answers) as url:
        with WingmanClient(Connection(Kube(k8s.ApiClient(k8s.Configuration(host=url))), "wm",
                                      "test"), hints=st.COMMANDS, max_output=100) as client:
            for command in ("describe", "list", "result"):
                out = io.StringIO()
                args = argparse.Namespace(command=command, name="req-1", output="json",
                                          mine=False, wait=False)
                if command == "result":
                    args.name = "req-1-0a1b2c3d"
                assert requests._run(client, args, out) == requests.EXIT_OK
                shown[command] = json.loads(out.getvalue())
    described = shown["describe"]["grants"][0]
    assert (len(described["output"]), described["output_truncated"]) == (100, True), described
    assert described["output"] == shown["list"]["grants"][0]["output"] \
        == shown["result"]["output"]

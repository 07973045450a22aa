"""The ``wingman`` command line (also installed as ``kubectl-wingman``, a kubectl plugin).

Thin: parses arguments and calls the module that owns the concept.

    wingman request --instruction "..." --command "kubectl ..." [--rollback "kubectl ..."]
                    [--wait] [-o json]
    wingman approve NAME [--reason ...] [--uid UID]
    wingman reject NAME --reason ... [--uid UID]
    wingman exec NAME --command "..." [--wait]
    wingman rollback GRANT [--wait]          (the reviewed rollback of a command that ran)
    wingman describe NAME | result GRANT | list | policy   [-o json|yaml]
    wingman mcp [--transport stdio|http]     (the MCP server for agents)
    wingman completion bash|zsh|fish|tcsh|powershell
    wingman audit verify TARGET [-n NS] [--checkpoints FILE] [--log NAME] [--audit-key PEM]
                         [--expected-head H]
    wingman audit witness --store FILE --hmac-key-file F [--audit-key PEM] [--listen H:P]
    wingman audit show TARGET --subject NAME [-n NAMESPACE]
    wingman verify-privileges --namespace NS [--release R]
    wingman keys rotate|prune|show -n NS     (the operator's signing keys)
    wingman operator                         (the operator process; settings from WINGMAN_*)
    wingman gateway                          (the gateway Job's entrypoint)
    wingman chat                             (notifications and approvals from chat)
    wingman preview                          (the preview Job's entrypoint)
    wingman dev run | wingman dev cluster    (a local control plane for trying Wingman)
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wingman import __version__
from wingman.errors import WingmanError

#: Commands that run inside Wingman's own pods: hidden from the kubectl plugin's help and
#: completion (still runnable: they are the image's entrypoints).
POD_ONLY = ("operator", "gateway", "chat", "preview")


def _plugin() -> bool:
    name = Path(sys.argv[0]).name if sys.argv else ""
    return name.startswith(("kubectl-wingman", "kubectl_complete-wingman"))


def _exit_codes() -> str:
    from wingman.cli.requests import EXIT_CODES

    return "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in
                                         EXIT_CODES.items())


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse names the option when this refuses)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


#: a Kubernetes object's UID as the API server writes it (a UUID; older clusters' too)
_UID = re.compile(r"[0-9A-Fa-f]{8}+(?:-[0-9A-Fa-f]{4}+){3}+-[0-9A-Fa-f]{12}+")


def _uid(text: str) -> str:
    """An object's UID (argparse names the option when this refuses): a typo would otherwise
    read as a request deleted and created again."""
    value = text.strip()
    if _UID.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not a UID: give the request's UID as `describe` shows it "
            "(like 0f8fad5b-d9cb-469f-a165-70867728950e)")
    return value.lower()


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value}: a port is 1 to 65535, or 0 for any free one")
    return value


#: A plain URL path: '/', or segments of RFC 3986's unreserved characters, each after one '/'.
_PLAIN_PATH = re.compile(r"/|(/[A-Za-z0-9._~-]+)+/?")


def _http_path(text: str) -> str:
    """``--path``: a plain path, which the server's route and its checks of a request's body
    (``mcp.server.NoBatches``, comparing the path as it is) both take literally. '{x}' would
    make the route a pattern the checks never match; a path with '?', '#', '%', a '.' or '..'
    segment, '//', spaces or control characters is one no client's request arrives at."""
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r}: the path starts with '/', e.g. /mcp")
    if not _PLAIN_PATH.fullmatch(text) or {".", ".."} & set(text.split("/")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plain path: give '/' or segments of letters, digits, '-', "
            "'.', '_' and '~', each after a single '/' (no '.' or '..' segment; no '{', '}', "
            "'?', '#', '%', spaces or control characters), e.g. /mcp")
    return text


class _RollbackFor(argparse.Action):
    """``--rollback CMD``: the rollback of the ``--command`` given just before it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        commands = getattr(namespace, "commands", None) or []
        if not commands:
            parser.error("--rollback must follow the --command it undoes")
        rollbacks = dict(getattr(namespace, "rollbacks", None) or {})
        if commands[-1] in rollbacks:
            parser.error("give at most one --rollback after each --command")
        rollbacks[commands[-1]] = str(values)
        namespace.rollbacks = rollbacks


def _parser() -> argparse.ArgumentParser:
    plugin = _plugin()
    prog = "kubectl wingman" if plugin else "wingman"
    p = argparse.ArgumentParser(
        prog=prog,
        description="Wingman: reviewed, single-use execution of commands for AI agents.",
        epilog=_exit_codes(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"wingman {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def client_args(sp: argparse.ArgumentParser, *, output: bool = True) -> None:
        sp.add_argument("-n", "--namespace", help="namespace of the Wingman release (default: "
                        "$WINGMAN_NAMESPACE, else the context's namespace, in a pod the pod's "
                        "own, else 'wingman')")
        sp.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else "
                        "~/.kube/config, else the pod's ServiceAccount)")
        sp.add_argument("--context", help="the kubeconfig context to use")
        if output:
            sp.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text",
                            help="text for people (default), or the status protocol's answer "
                            "as json or yaml")

    def wait_args(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument("--wait", action="store_true", help=f"wait until {what} (shows the "
                        "elapsed time on a terminal)")
        sp.add_argument("--timeout", type=_seconds, default=600,
                        help="seconds --wait waits at most (default 600); then exit code 6")

    def command(name: str, text: str | None, **kw: Any) -> argparse.ArgumentParser:
        kwargs: dict[str, Any] = dict(kw)
        if text is not None:
            kwargs["help"] = text
            kwargs.setdefault("description", text)
        return sub.add_parser(name, **kwargs)

    sp = command("request", "ask for approval to run commands")
    client_args(sp)
    sp.add_argument("--env", "--environment", dest="environment",
                    help="the environment (default: the one the release serves)")
    sp.add_argument("--instruction", required=True, help="what you want to achieve, for humans")
    sp.add_argument("--command", dest="commands", action="append", required=True,
                    help="an exact command line (repeatable)")
    sp.add_argument("--rollback", action=_RollbackFor, metavar="COMMAND",
                    help="the exact command that undoes the --command just before it, reviewed "
                    "with it (kubectl wingman rollback <grant> runs it once that command ran)")
    sp.add_argument("--justification", help="why this is needed, shown to reviewers")
    sp.add_argument("--expires-after-seconds", type=int,
                    help="how long the request may wait for a decision, in seconds (default "
                    "and upper bound: the policy's requestTTLSeconds)")
    sp.add_argument("--name", help="name of the ApprovalRequest (default: generated)")
    sp.add_argument("--source-reference", help="provenance: the task or ticket this is for")
    sp.add_argument("--agent", help="provenance: the agent's name")
    sp.add_argument("--model", help="provenance: the model behind the agent")
    sp.add_argument("--excerpt", help="provenance: the input that led to this request")
    sp.add_argument("--untrusted-input", action="store_true",
                    help="provenance: that input came from content the agent does not trust")
    wait_args(sp, "the request is decided")

    for verb in ("approve", "reject"):
        sp = command(verb, f"{verb} an ApprovalRequest (approvers only)")
        client_args(sp)
        sp.add_argument("name").completer = _names("request")  # type: ignore[attr-defined]
        sp.add_argument("--reason", required=(verb == "reject"), default="",
                        help="why, in words: the requester and the audit trail keep it"
                        + (" (required: a rejection says why)" if verb == "reject" else ""))
        sp.add_argument("--uid", type=_uid,
                        help="the request's UID, as `describe` shows it: the decision lands on "
                        "that very request only (one deleted and created again under the same "
                        "name since you read it is refused, StaleRequest)")

    sp = command("exec", "start one approved command: create its ExecutionGrant")
    client_args(sp)
    sp.add_argument("name", help="the ApprovalRequest").completer = (  # type: ignore[attr-defined]
        _names("request"))
    sp.add_argument("--command", dest="grant_command", required=True,
                    help="exactly one of the approved commands")
    sp.add_argument("--ttl-seconds", type=int,
                    help="the token's lifetime in seconds (default: the policy's tokenTTLSeconds; "
                    "above its maxTokenTTLSeconds the grant is denied)")
    wait_args(sp, "the command has run, and print its output")

    sp = command("rollback", "start the reviewed rollback of a command that ran: create its "
                 "rollback grant, without a new decision")
    client_args(sp)
    sp.add_argument("name", help="the ExecutionGrant that ran the command"
                    ).completer = _names("grant")  # type: ignore[attr-defined]
    sp.add_argument("--ttl-seconds", type=int,
                    help="the token's lifetime in seconds (default: the policy's tokenTTLSeconds; "
                    "above its maxTokenTTLSeconds the grant is denied)")
    wait_args(sp, "the rollback has run, and print its output")

    sp = command("describe", "show a request's state, review, decisions, provenance and grants")
    client_args(sp)
    sp.add_argument("name").completer = _names("request")  # type: ignore[attr-defined]

    sp = command("result", "show a grant's state, exit code and output")
    client_args(sp)
    sp.add_argument("name", help="the ExecutionGrant").completer = (  # type: ignore[attr-defined]
        _names("grant"))
    wait_args(sp, "the command has run")

    sp = command("list", "list ApprovalRequests and ExecutionGrants with their states")
    client_args(sp)
    sp.add_argument("--mine", action="store_true", help="only your own requests")

    sp = command("policy", "show the environment's policy: what auto-approves, the allowlist")
    client_args(sp)

    sp = command("mcp", "serve the Model Context Protocol for agents (stdio or HTTP)")
    client_args(sp, output=False)
    sp.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                    help="stdio (default: the MCP client starts this process) or streamable "
                    "HTTP")
    sp.add_argument("--host", help="HTTP: address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=_port, help="HTTP: port to listen on (default 8765; 0: a "
                    "free one, named in the 'serving' line)")
    sp.add_argument("--path", type=_http_path, help="HTTP: the endpoint's path (default /mcp)")
    sp.add_argument("--auth-token-file", help="HTTP: require 'Authorization: Bearer <the "
                    "file's content>' (at least 16 printable ASCII characters, no spaces; "
                    "required when --host is not a loopback address)")
    sp.add_argument("--max-connections", type=int, help="HTTP: the most connections served "
                    "at once, 1 to 10000 (default $WINGMAN_MCP_MAX_CONNECTIONS, else 100); one "
                    "more is answered 503 with Retry-After and closed")
    sp.add_argument("--idle-timeout-seconds", type=int, help="HTTP: close a connection that "
                    "sends nothing of a request for this long, 1 to 600 (default "
                    "$WINGMAN_MCP_IDLE_TIMEOUT_SECONDS, else 5)")
    sp.add_argument("--max-sessions", type=int, help="HTTP: the most MCP sessions open at "
                    "once, 1 to 10000 (default $WINGMAN_MCP_MAX_SESSIONS, else 1000); one more "
                    "is answered 503 until one ends or has been idle 30 minutes")
    sp.add_argument("--max-wait-seconds", type=float, default=50,
                    help="the most any tool call waits, in seconds above 0 and at most 600 "
                    "(default 50: below common MCP client timeouts)")

    sp = command("completion", "print the shell completion script")
    sp.add_argument("shell", choices=("bash", "zsh", "fish", "tcsh", "powershell"))

    sp = command("audit", "audit trail tools")
    asub = sp.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    vp = asub.add_parser("verify", help="verify the hash chain of an audit trail and its "
                         "signed checkpoints",
                         description="Verify the hash chain of an audit trail against its "
                         "signed checkpoints (docs/audit.md).",
                         epilog="exit status: 0 verified, 1 tampered, 2 unreadable or a bad "
                         "target or argument, or the verdict could not be written")
    from wingman.cli.audit import add_verify_arguments

    add_verify_arguments(vp)
    wp = asub.add_parser("witness", add_help=False,
                         help="run a reference witness that keeps signed checkpoints")
    wp.add_argument("rest", nargs=argparse.REMAINDER)
    shp = asub.add_parser("show", help="print the records about one request or grant (also "
                          "after retention deleted it) as JSON lines")
    shp.add_argument("target", help="a JSON Lines file or a postgresql:// DSN")
    shp.add_argument("--subject", required=True, help="the ApprovalRequest or ExecutionGrant "
                     "name")
    shp.add_argument("-n", "--namespace", help="only records of objects in this namespace")

    sp = command("keys", "the operator's signing keys (rotation)")
    ksub = sp.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    for action, text in (("show", "list the key ids and which one signs"),
                         ("rotate", "add a new signing key and make it active; old keys keep "
                          "verifying until pruned"),
                         ("prune", "remove every key but the active one (once the tokens "
                          "they signed have expired)")):
        kp = ksub.add_parser(action, help=text)
        client_args(kp, output=False)
        kp.add_argument("--secret", default="wingman-signing-key",
                        help="the Secret holding the signing keys (default %(default)s)")
        kp.add_argument("--configmap", default="wingman-public-keys",
                        help="the ConfigMap the public keys are published to ('' for none: "
                        "the audit key's are published by the operator with its checkpoints)")

    sp = command("verify-privileges", "prove on a live cluster that only the gateway's "
                 "commands (as wingman-executor) can execute", add_help=False)
    sp.add_argument("rest", nargs=argparse.REMAINDER)

    # Commands that run inside Wingman's own pods: not in the kubectl plugin's help.
    command("operator", None if plugin else
            "run the operator (settings from WINGMAN_* variables; runs in its pod)")
    command("gateway", None if plugin else "run the gateway (the gateway Job's entrypoint)")
    command("chat", None if plugin else "run the chat component: notifications and approvals "
            "from Telegram, Slack and a webhook (settings from WINGMAN_* variables)")
    command("preview", None if plugin else "preview a request's commands as server-side dry "
            "runs (the preview Job's entrypoint)")

    sp = command("dev", "a local control plane for trying Wingman")
    dsub = sp.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    rp = dsub.add_parser("run", help="start a local control plane when no cluster is "
                         "configured, install Wingman, and run the operator and a demo")
    rp.add_argument("--no-demo", action="store_true", help="do not submit the demo request")
    rp.add_argument("--exit-after-demo", action="store_true",
                    help="stop once the demo request has run (for scripts)")
    dsub.add_parser("cluster", help="start a local control plane and wait")
    return p


def _names(kind: str) -> Any:
    def complete(prefix: str, parsed_args: argparse.Namespace, **kw: Any) -> list[str]:
        from wingman.cli import requests

        fn = requests.request_names if kind == "request" else requests.grant_names
        return fn(prefix, parsed_args, **kw)
    return complete


def kubectl_complete(argv: Sequence[str] | None = None) -> int:
    """``kubectl_complete-wingman``: completion of ``kubectl wingman ...`` for kubectl's plugin
    completion (kubectl 1.26+ runs it with the words typed after ``wingman``, the last one
    partial, and reads one candidate a line, then ``:<directive>``)."""
    import shlex

    words = list(sys.argv[1:] if argv is None else argv) or [""]
    line = " ".join(["kubectl-wingman", *(shlex.quote(w) for w in words[:-1]), words[-1]])
    top = len(words) == 1  # completing the command itself
    for word in _candidates(line):
        if not (top and word in POD_ONLY):
            print(word)
    print(":4")  # ShellCompDirectiveNoFileComp: no file names
    return 0


def _candidates(line: str, shell: str | None = None) -> list[str]:
    """What argcomplete completes the command line ``line`` (the cursor at its end) with, one
    word each, for ``shell`` (its quoting: tcsh quotes what it inserts itself)."""
    import io
    import os

    import argcomplete

    # argcomplete's protocol: the line being completed comes in the environment
    os.environ.update({"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
                       "_ARGCOMPLETE_IFS": "\n"})
    if shell is None:
        os.environ.pop("_ARGCOMPLETE_SHELL", None)
    else:
        os.environ["_ARGCOMPLETE_SHELL"] = shell
    found = io.StringIO()

    class _Done(Exception):
        pass

    def stop(code: int = 0) -> None:
        raise _Done

    try:
        argcomplete.autocomplete(_parser(), output_stream=found, exit_method=stop)
    except _Done:
        pass
    return [w.strip() for w in found.getvalue().splitlines() if w.strip()]


#: The environment variable the tcsh completion script sets when it runs the command to ask
#: for the words that complete the line (tcsh hands the line in ``COMMAND_LINE``).
TCSH_COMPLETE = "WINGMAN_COMPLETE_TCSH"


def tcsh_script() -> str:
    """``wingman completion tcsh``: argcomplete's own tcsh script runs its helper
    ``python-argcomplete-tcsh``, which argcomplete 3 no longer installs; this one runs the
    command itself, which answers the words one a line (:func:`_tcsh_complete`)."""
    return "\n".join(f"complete \"{name}\" 'p@*@`env {TCSH_COMPLETE}=1 {name}`@' ;"
                     for name in ("wingman", "kubectl-wingman"))


def _tcsh_complete() -> int:
    """The words that complete the line tcsh is completing (``COMMAND_LINE``), one a line."""
    import os

    for word in _candidates(os.environ.get("COMMAND_LINE", ""), "tcsh"):
        print(word)
    return 0


#: SIGTERMs the gateway process got before it installed its own handler (``_hold_sigterm``).
_EARLY_SIGTERM: list[int] = []


def _hold_sigterm() -> None:
    """Note a SIGTERM from the gateway process's first line on: one during the imports (a
    grant cancelled as its pod starts) would otherwise end the process unrecorded (tini, the
    container's first process, forwards it; one before this line does end it, nothing spent).
    ``run_gateway`` takes it over (``asked_to_stop``) and refuses, the token unspent, its
    refusal recorded."""
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: _EARLY_SIGTERM.append(signum))


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if argv is None and not raw:
        import os

        if os.environ.get(TCSH_COMPLETE) == "1":  # tcsh asks for completions (tcsh_script)
            return _tcsh_complete()
    if raw[:1] == ["gateway"]:
        _hold_sigterm()  # before the imports, which take a while
    if argv is None:  # the process's own entry (not a caller's): an error nothing catches is
        # one record in the log format (wingman.logs escapes what it quotes), never Python's
        # traceback as it is, which may quote input that forges log lines
        from wingman.logs import install_excepthook

        install_excepthook(raw[0] if raw[:1] and raw[0] in (*POD_ONLY, "mcp") else "cli")
        if not (raw[:1] and raw[0] in POD_ONLY):  # the pods' exits keep their own meanings
            try:
                return _main(raw, argv)
            except Exception as exc:  # noqa: BLE001 - the last word: its own exit code
                # Python would exit 1, which this command line documents as "denied": a
                # script or an agent would take a crash for a human's rejection. The error is
                # the one record the hook writes; the code says nothing was decided.
                from wingman.cli.requests import EXIT_INTERNAL

                sys.excepthook(type(exc), exc, exc.__traceback__)
                return EXIT_INTERNAL
    return _main(raw, argv)


def _main(raw: list[str], argv: Sequence[str] | None) -> int:
    for i, arg in enumerate(raw, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes the shell passed that are not UTF-8
            shown = arg.encode("utf-8", "surrogateescape")
            print(f"error: argument {i} is not valid UTF-8 text ({shown[:60]!r}): names, "
                  "commands and texts are sent to Kubernetes as UTF-8; fix the terminal's or "
                  "the script's encoding", file=sys.stderr)
            return 2
    if raw[:2] == ["audit", "witness"]:
        from wingman.audit.witness import witness_main

        return witness_main(raw[2:])
    if raw[:1] == ["verify-privileges"]:
        # argparse's REMAINDER does not capture options that come first (--namespace ...):
        # hand every argument to the command's own parser.
        from wingman.verifier.privileges import verify_privileges_main

        return int(verify_privileges_main(raw[1:]))
    parser = _parser()
    if argv is None:
        import argcomplete

        argcomplete.autocomplete(parser)  # returns at once unless a shell is completing
    args = parser.parse_args(raw)
    if args.command not in ("operator", "gateway", "chat"):  # those set up their own logging
        from wingman.logs import setup_logging
        from wingman.settings import LogSettings

        # the MCP server is a service, logging as the operator and the chat service do
        # (info by default: it says where it serves); a command says only what went wrong
        service = args.command == "mcp"
        try:
            log = LogSettings.from_env(level="info" if service else "warning")
        except WingmanError as exc:
            print(f"error ({exc.reason}): {exc}", file=sys.stderr)
            return 2
        setup_logging(log.format, log.level, component="mcp" if service else "cli")
        if log.level != "debug":  # each retry's warning; the error names the cause once
            import logging

            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    try:
        return _dispatch(args)
    except BrokenPipeError:  # the reader stopped early (| head): no crash, the shell's code
        import os

        from wingman.cli.requests import EXIT_PIPE

        # the exit's own flush would fail again: send what is left nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except OSError as exc:
        # I/O errors the commands expect come as a WingmanError saying what failed; what is
        # left is a file (named), the output that could not be written (a full disk, a
        # terminal gone), or the system refusing something else (a port in use)
        import errno
        import os

        if exc.filename is not None:  # not the output: a file, named
            print(f"error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            print(f"error: cannot write the output: {exc.strerror or exc}; what was not "
                  "written is lost: free space where the output goes (or redirect it "
                  "elsewhere) and run the command again", file=sys.stderr)
        else:
            print(f"error: {exc.strerror or exc}", file=sys.stderr)
        from wingman.cli.requests import EXIT_USAGE

        return EXIT_USAGE
    except WingmanError as exc:
        from wingman.cli.requests import exit_code_for_error, terminal_text

        # messages quote arguments and what requests hold, and a reason may be what answered
        # at the API server's address said: shown, never acted on
        print(f"error ({terminal_text(exc.reason, None)}): {terminal_text(str(exc), '  ')}",
              file=sys.stderr)
        return exit_code_for_error(exc)
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "audit":
        if args.audit_command == "show":
            from wingman.audit import show_main

            return show_main(args.target, args.subject, args.namespace)
        if args.audit_command == "witness":
            from wingman.audit.witness import witness_main

            return witness_main(list(args.rest))
        from wingman.cli.audit import verify_command

        return verify_command(args)
    if cmd == "keys":
        return _keys(args)
    if cmd == "verify-privileges":
        from wingman.verifier.privileges import verify_privileges_main

        return int(verify_privileges_main(list(args.rest)))
    if cmd == "completion":
        from argcomplete.shell_integration import shellcode

        print(tcsh_script() if args.shell == "tcsh" else
              shellcode(["wingman", "kubectl-wingman"], shell=args.shell))
        return 0
    if cmd == "mcp":
        from wingman.mcp.server import serve

        return serve(args)
    if cmd == "operator":
        from wingman.operator.memory import use_malloc

        use_malloc()  # the operator's allocator (see wingman.operator.memory)
        from wingman.operator.run import run_operator
        from wingman.settings import OperatorSettings

        return int(run_operator(OperatorSettings.from_env()))
    if cmd == "gateway":
        from wingman.gateway.run import run_gateway
        from wingman.settings import GatewaySettings

        return int(run_gateway(GatewaySettings.from_env(),
                               asked_to_stop=lambda: bool(_EARLY_SIGTERM)))
    if cmd == "chat":
        from wingman.chat.run import run_chat
        from wingman.settings import ChatSettings

        return int(run_chat(ChatSettings.from_env()))
    if cmd == "preview":
        from wingman.preview.runner import run_preview
        from wingman.settings import PreviewSettings

        return int(run_preview(PreviewSettings.from_env()))
    if cmd == "dev":
        try:
            from wingman.dev import run as devrun
        except ModuleNotFoundError as exc:
            if exc.name not in ("wingman.dev", "wingman.dev.run"):
                raise
            print("wingman dev needs a source checkout of Wingman (the local control plane and "
                  "its tools are not installed with the package): git clone the repository and "
                  "run 'make run' there", file=sys.stderr)
            return 2

        if args.dev_command == "cluster":
            return devrun.cluster_main()
        return devrun.run_main(demo=not args.no_demo, exit_after_demo=args.exit_after_demo)
    from wingman.cli import requests

    return int(requests.main(args))


def _keys(args: argparse.Namespace) -> int:
    """Rotation from a workstation: the operator picks the change up at its next sweep."""
    from wingman.capability import keyring as keys
    from wingman.client.connect import connect
    from wingman.kube import SECRETS

    conn = connect(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)
    kube, ns = conn.kube, conn.namespace
    ring = keys.ring_from_secret(kube.get(SECRETS, ns, args.secret), args.secret)
    if args.keys_command == "rotate":
        ring = keys.rotate(ring)
    elif args.keys_command == "prune":
        ring = keys.prune(ring)
    if args.keys_command != "show":
        keys.store(kube, ns, args.secret, ring)
        if args.configmap:
            try:
                keys.publish(kube, ns, args.configmap, ring)
            except WingmanError as exc:  # the Secret changed: say so, or it is done twice
                from wingman.client.api import client_error

                err = client_error(exc, f"publishing the public keys to ConfigMap "
                                        f"{ns}/{args.configmap}")
                done = (f"rotated: {ring.active} signs now" if args.keys_command == "rotate"
                        else f"pruned: only {ring.active} is left")
                raise type(err)(f"{err.message}. The Secret {ns}/{args.secret} was "
                                f"{done}; the operator publishes the public keys when it "
                                f"reloads them (at its next sweep, within seconds): do not "
                                f"{args.keys_command} again", reason=err.reason) from None
    for kid in sorted(ring.keys):
        print(f"{kid}{'  (active)' if kid == ring.active else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

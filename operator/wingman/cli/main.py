"""The ``wingman`` command line (also installed as ``kubectl-wingman``, a kubectl plugin).

Thin: parses arguments and calls the module that owns the concept.

    wingman request --env test --instruction "..." --command "kubectl ..." [--wait]
    wingman approve NAME [--reason ...]      wingman reject NAME --reason ...
    wingman exec NAME --command "..." [--wait]
    wingman describe NAME                    wingman list
    wingman audit verify TARGET [--expected-head sha256:...]
    wingman verify-privileges --namespace NS [--release R]
    wingman keys rotate|prune|show -n NS     (the operator's signing keys)
    wingman operator                         (the operator process; settings from WINGMAN_*)
    wingman gateway                          (the gateway Job's entrypoint)
    wingman chat                             (notifications and approvals from chat)
    wingman dev run | wingman dev cluster    (a local control plane for trying Wingman)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from wingman import __version__
from wingman.errors import WingmanError


def _parser() -> argparse.ArgumentParser:
    prog = "kubectl wingman" if sys.argv and sys.argv[0].endswith("kubectl-wingman") else "wingman"
    p = argparse.ArgumentParser(
        prog=prog,
        description="Wingman: reviewed, single-use execution of commands for AI agents.",
    )
    p.add_argument("--version", action="version", version=f"wingman {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def client_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-n", "--namespace", help="namespace of the Wingman install "
                        "(default: the kubeconfig context's namespace, else 'wingman')")
        sp.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or "
                        "~/.kube/config)")

    sp = sub.add_parser("request", help="ask for approval to run commands")
    client_args(sp)
    sp.add_argument("--env", "--environment", dest="environment", required=True)
    sp.add_argument("--instruction", required=True, help="what you want to achieve, for humans")
    sp.add_argument("--command", dest="commands", action="append", required=True,
                    help="an exact command line (repeatable)")
    sp.add_argument("--justification")
    sp.add_argument("--expires-after-seconds", type=int)
    sp.add_argument("--name", help="name of the ApprovalRequest (default: generated)")
    sp.add_argument("--wait", action="store_true", help="wait until the request is decided")
    sp.add_argument("--timeout", type=float, default=600)

    for verb in ("approve", "reject"):
        sp = sub.add_parser(verb, help=f"{verb} an ApprovalRequest (approvers only)")
        client_args(sp)
        sp.add_argument("name")
        sp.add_argument("--reason", required=(verb == "reject"), default="")

    sp = sub.add_parser("exec", help="create an ExecutionGrant for one approved command")
    client_args(sp)
    sp.add_argument("name", help="the ApprovalRequest")
    sp.add_argument("--command", dest="grant_command", required=True,
                    help="exactly one of the approved commands")
    sp.add_argument("--ttl-seconds", type=int)
    sp.add_argument("--wait", action="store_true", help="wait for the result and print it")
    sp.add_argument("--timeout", type=float, default=600)

    sp = sub.add_parser("describe", help="show a request's review, decision and grants")
    client_args(sp)
    sp.add_argument("name")

    sp = sub.add_parser("list", help="list ApprovalRequests and ExecutionGrants")
    client_args(sp)

    sp = sub.add_parser("audit", help="audit trail tools")
    asub = sp.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    vp = asub.add_parser("verify", help="verify the hash chain of an audit trail")
    vp.add_argument("target", help="a JSON Lines file or a postgresql:// DSN")
    vp.add_argument("--expected-head", help="the head hash recorded elsewhere (detects "
                    "truncation of the tail)")

    sp = sub.add_parser("keys", help="the operator's signing keys (rotation)")
    ksub = sp.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    for action, text in (("show", "list the key ids and which one signs"),
                         ("rotate", "add a new signing key and make it active; old keys keep "
                          "verifying until pruned"),
                         ("prune", "remove every key but the active one (once the tokens "
                          "they signed have expired)")):
        kp = ksub.add_parser(action, help=text)
        client_args(kp)
        kp.add_argument("--secret", default="wingman-signing-key")
        kp.add_argument("--configmap", default="wingman-public-keys")

    sp = sub.add_parser("verify-privileges", add_help=False,
                        help="prove on a live cluster that only the gateway can execute")
    sp.add_argument("rest", nargs=argparse.REMAINDER)

    sub.add_parser("operator", help="run the operator (settings from WINGMAN_* variables)")
    sub.add_parser("gateway", help="run the gateway (the gateway Job's entrypoint)")
    sub.add_parser("chat", help="run the chat component: notifications and approvals from "
                   "Telegram, Slack and a webhook (settings from WINGMAN_* variables)")

    sp = sub.add_parser("dev", help="a local control plane for trying Wingman")
    dsub = sp.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    rp = dsub.add_parser("run", help="start a local control plane when no cluster is "
                         "configured, install Wingman, and run the operator and a demo")
    rp.add_argument("--no-demo", action="store_true", help="do not submit the demo request")
    rp.add_argument("--exit-after-demo", action="store_true",
                    help="stop once the demo request has run (for scripts)")
    dsub.add_parser("cluster", help="start a local control plane and wait")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["verify-privileges"]:
        # argparse's REMAINDER does not capture options that come first (--namespace ...):
        # hand every argument to the command's own parser.
        from wingman.verifier.privileges import verify_privileges_main

        return int(verify_privileges_main(raw[1:]))
    args = _parser().parse_args(raw)
    try:
        return _dispatch(args)
    except WingmanError as exc:
        print(f"error ({exc.reason}): {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "audit":
        from wingman.audit import verify_main

        return verify_main(args.target, expected_head=args.expected_head)
    if cmd == "keys":
        return _keys(args)
    if cmd == "verify-privileges":
        from wingman.verifier.privileges import verify_privileges_main

        return int(verify_privileges_main(list(args.rest)))
    if cmd == "operator":
        from wingman.operator.run import run_operator
        from wingman.settings import OperatorSettings

        return int(run_operator(OperatorSettings.from_env()))
    if cmd == "gateway":
        from wingman.gateway.run import run_gateway
        from wingman.settings import GatewaySettings

        return int(run_gateway(GatewaySettings.from_env()))
    if cmd == "chat":
        from wingman.chat.run import run_chat
        from wingman.settings import ChatSettings

        return int(run_chat(ChatSettings.from_env()))
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
    """Rotation from a workstation: the operator picks the change up within minutes."""
    from wingman.capability import keyring as keys
    from wingman.cli.requests import api_client
    from wingman.kube import SECRETS, Kube

    api, default_ns = api_client(args.kubeconfig)
    kube = Kube(api)
    ns = args.namespace or default_ns
    ring = keys.ring_from_secret(kube.get(SECRETS, ns, args.secret), args.secret)
    if args.keys_command == "rotate":
        ring = keys.rotate(ring)
    elif args.keys_command == "prune":
        ring = keys.prune(ring)
    if args.keys_command != "show":
        keys.store(kube, ns, args.secret, ring)
        keys.publish(kube, ns, args.configmap, ring)
    for kid in sorted(ring.keys):
        print(f"{kid}{'  (active)' if kid == ring.active else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

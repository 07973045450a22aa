"""The people- and agent-facing commands: request, approve, reject, exec, rollback, describe,
result, list, policy.

Each command runs ``wingman.client`` as the caller (kubeconfig, else the pod's ServiceAccount),
so RBAC and the admission policies decide what the caller may do; nothing here elevates.
Every command prints text for people, or with ``-o json|yaml`` the status protocol's answer
(``docs/agents.md``), and exits with a code that says what happened (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import yaml

from wingman.client import status as st
from wingman.client.api import Source, WingmanClient, error_answer
from wingman.client.connect import connect
from wingman.errors import ClientError, ConfigError, Invalid, NotFound, TooLarge, WingmanError
from wingman.model import commandline, limits
from wingman.model import preview as previews
from wingman.model.text import terminal_text

EXIT_OK = 0
EXIT_DENIED = 1
EXIT_USAGE = 2
EXIT_EXPIRED = 3
EXIT_FAILED = 4
EXIT_API = 5
EXIT_WAITING = 6
EXIT_TOO_LARGE = 7
EXIT_INTERNAL = 8
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141  # 128 + SIGPIPE, as the shell reports a program a closed pipe ended
PREVIEW_DIFF_LINES = 30

#: The documented exit codes (``kubectl wingman --help`` and docs/agents.md print this table).
EXIT_CODES = {
    EXIT_OK: "done (for request/exec: created, and with --wait approved or succeeded)",
    EXIT_DENIED: "denied: the request was rejected or revoked, or the grant was refused",
    EXIT_USAGE: "usage: bad arguments or configuration, or input the API server rejects "
                "(also: output that cannot be written)",
    EXIT_EXPIRED: "expired: the request or the grant's token expired",
    EXIT_FAILED: "failed: the command ran and failed, or did not complete",
    EXIT_API: "API error: unreachable, forbidden (RBAC or admission), or not found",
    EXIT_WAITING: "still waiting: --timeout passed, or it waits on someone else (an approver)",
    EXIT_TOO_LARGE: "too large: the API server's answer or the list is more than Wingman "
                    "reads; trying again does not mend it (the message says what to do)",
    EXIT_INTERNAL: "internal error: Wingman stopped on an error it did not expect (the "
                   "record on stderr says what); it says nothing of a decision: read the "
                   "request's state (get, describe) before acting",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_PIPE: "the output was closed early (a reader such as | head stopped)",
}

_STATE_EXIT = {
    st.State.APPROVED: EXIT_OK, st.State.AUTO_APPROVED: EXIT_OK,
    st.State.SUCCEEDED: EXIT_OK,
    st.State.REJECTED: EXIT_DENIED, st.State.REVOKED: EXIT_DENIED,
    st.State.REFUSED: EXIT_DENIED,
    st.State.EXPIRED: EXIT_EXPIRED, st.State.FAILED: EXIT_FAILED,
}


def exit_code_for_error(exc: WingmanError) -> int:
    """The exit code of a failed command."""
    if isinstance(exc, ConfigError | Invalid):
        return EXIT_USAGE
    if isinstance(exc, TooLarge):
        return EXIT_TOO_LARGE
    return EXIT_API


def _code(status: st.Status) -> int:
    return _STATE_EXIT.get(status.state, EXIT_WAITING)


# --------------------------------------------------------------------------- output


def emit(data: Any, fmt: str, out: TextIO) -> None:
    """Print ``data`` (already JSON-shaped) as JSON or YAML."""
    if fmt == "json":
        print(json.dumps(data, indent=2, sort_keys=False), file=out)
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="", file=out)


_t = terminal_text  # short: every print below uses it


def render(status: st.Status, out: TextIO) -> None:
    """A status answer for people."""
    what = f"{(status.kind or '').lower()} {status.namespace}/{status.name}".strip() \
        if status.name else ""
    line = f"{what}: {status.state.value}" if what else status.state.value
    if status.approvals is not None and status.state is st.State.AWAITING_APPROVAL:
        line += f" ({status.approvals.have} of {status.approvals.need} approvals)"
    if status.by and status.state in (st.State.REJECTED, st.State.REVOKED, st.State.APPROVED):
        line += f" by {status.by}"
    print(_t(line, None), file=out)
    if status.reason or status.message:
        print(f"  {_t(status.reason or '')}{': ' if status.reason and status.message else ''}"
              f"{_t(status.message or '')}", file=out)
    if status.exit_code is not None:
        print(f"  exit code {status.exit_code}", file=out)
    if status.output:
        print(_t(status.output.rstrip("\n"), ""), file=out)
        if status.output_truncated:
            print(f"  (output cut at {len(status.output)} characters)", file=out)
    print(f"next: {_t(status.next)}", file=out)


def describe(obj: Mapping[str, Any], grants: Sequence[Mapping[str, Any]], out: TextIO,
             status: st.Status | None = None) -> None:
    """Print a request's review, decision, provenance and grants for people (every text
    through ``_t``: the agent wrote most of it)."""
    spec, stat = obj.get("spec") or {}, obj.get("status") or {}
    meta = obj["metadata"]
    print(f"Name:         {_t(meta.get('namespace'))}/{_t(meta['name'])}", file=out)
    print(f"UID:          {_t(meta.get('uid'))}", file=out)  # what `approve --uid` pins
    print(f"Requester:    {_t(spec.get('requester'))}", file=out)
    print(f"Environment:  {_t(spec.get('environment'))}", file=out)
    print(f"Phase:        {_t(stat.get('phase', 'Pending'))}", file=out)
    if status is not None:
        print(f"State:        {status.state.value}", file=out)
    if stat.get("expirationTime"):
        print(f"Expires:      {_t(stat['expirationTime'])}", file=out)
    print(f"Instruction:  {_t(spec.get('instruction'))}", file=out)
    if spec.get("justification"):
        print(f"Justification: {_t(spec['justification'])}", file=out)
    source = st.source_view(spec)
    if source:
        print("Source:", file=out)
        for key in ("reference", "agent", "model", "input_trust", "excerpt"):
            if key in source:
                print(f"  {key.replace('_', ' '):<12} {_t(source[key])}", file=out)
    preview = stat.get("preview")
    if isinstance(preview, Mapping) and preview:
        lines = previews.summary_lines(preview)
        print(f"Preview:      {_t(lines[0]) if lines else ''}", file=out)
        for line in lines[1:]:
            print(f"  {_t(line)}", file=out)
        for i, c in enumerate(preview.get("commands") or [], 1):
            diff = str((c or {}).get("diff") or "").splitlines() if isinstance(c, Mapping) \
                else []
            if diff:
                print(f"  diff of command {i}:", file=out)
                for line in diff[:PREVIEW_DIFF_LINES]:
                    print(f"    {_t(line, None)}", file=out)
                if len(diff) > PREVIEW_DIFF_LINES:
                    print(f"    ... ({len(diff) - PREVIEW_DIFF_LINES} more lines: -o yaml "
                          "shows all)", file=out)
    print("Commands:", file=out)
    holders = {g.get("command"): g.get("grant") for g in stat.get("grants") or []}
    for c in spec.get("commands", []):
        used = f"  (granted to {_t(holders[c], None)}: runs once)" if c in holders else ""
        print(f"  - {_t(c, None)}{used}", file=out)
    consensus = stat.get("consensus") or {}
    if consensus:
        print(f"Consensus:    {_t(consensus.get('outcome'), None)} (risk "
              f"{_t(consensus.get('risk'), None)}, {consensus.get('approvals', 0)} approve / "
              f"{consensus.get('rejections', 0)} reject / {consensus.get('abstentions', 0)} "
              "abstain)", file=out)
        print(f"  {'VOTER':<22} {'VERDICT':<8} {'RISK':<9} RATIONALE", file=out)
        for v in consensus.get("votes", []):
            print(f"  {_t(v.get('voter', ''), None):<22} {_t(v.get('verdict', ''), None):<8} "
                  f"{_t(v.get('risk', ''), None):<9} {_t(v.get('rationale', ''))}", file=out)
        if consensus.get("dissent"):  # copies of the votes that disagree (older: names)
            voters = [str(d.get("voter", "")) if isinstance(d, Mapping) else str(d)
                      for d in consensus["dissent"]]
            print(f"  dissent: {_t(', '.join(voters), None)}", file=out)
    decision = stat.get("decision") or {}
    if decision.get("requiredApprovals"):
        print(f"Approvals:    {len(decision.get('approvedBy') or [])} of "
              f"{_t(decision['requiredApprovals'])}", file=out)
    for d in spec.get("decisions", []) or []:
        print(f"Decision:     {_t(d.get('verdict'), None)} by {_t(d.get('by'), None)}: "
              f"{_t(d.get('reason', ''))}", file=out)
    print("Conditions:", file=out)
    for c in stat.get("conditions", []):
        print(f"  {_t(c.get('type'), None):<10} {_t(c.get('status'), None):<6} "
              f"{_t(c.get('reason'), None)}: {_t(c.get('message', ''))}", file=out)
    if grants:
        print("Grants:", file=out)
        for g in grants:
            gs = g.get("status") or {}
            print(f"  {_t(g['metadata']['name'], None)}: {_t(gs.get('phase', 'Pending'), None)} "
                  f"{_t(gs.get('reason', ''), None)} exit={_t(gs.get('exitCode', '-'), None)}  "
                  f"{_t(g['spec']['command'], None)}", file=out)
    if status is not None:
        print(f"Next:         {_t(status.next)}", file=out)


class Ticker:
    """The live elapsed-time line while ``--wait`` runs on a terminal (quiet otherwise)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self.shown = False

    def __call__(self, status: st.Status, elapsed: float) -> None:
        if not self.live:
            return
        extra = ""
        if status.approvals is not None and status.state is st.State.AWAITING_APPROVAL:
            extra = f" ({status.approvals.have} of {status.approvals.need} approvals)"
        self.stream.write(f"\r\x1b[Kwaiting for {status.name}: {status.state.value}{extra} "
                          f"- {int(elapsed)}s")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


# --------------------------------------------------------------------------- commands


def client_for(args: argparse.Namespace) -> WingmanClient:
    conn = connect(kubeconfig=getattr(args, "kubeconfig", None),
                   context=getattr(args, "context", None),
                   namespace=getattr(args, "namespace", None))
    return WingmanClient(conn, hints=st.COMMANDS)


def _source(args: argparse.Namespace) -> Source | None:
    data = {"reference": args.source_reference, "agent": args.agent, "model": args.model,
            "excerpt": args.excerpt,
            "untrusted_input": True if args.untrusted_input else None}
    return Source.from_mapping({k: v for k, v in data.items() if v is not None})


def _answer(status: st.Status, args: argparse.Namespace, out: TextIO,
            code: int | None = None) -> int:
    if args.output == "text":
        render(status, out)
    else:
        emit(status.to_dict(), args.output, out)
    return _code(status) if code is None else code


def _waited(client: WingmanClient, status: st.Status, args: argparse.Namespace,
            grant: bool, *, created: bool = True) -> st.Status:
    """``--wait``. When the wait fails or is interrupted after this command ``created`` the
    object, the error says so and how to follow it: the request or grant is under way, and
    whoever reads only the error would otherwise ask again."""
    ticker = Ticker(sys.stderr)
    name = str(status.name)
    kind = "ExecutionGrant" if grant else "ApprovalRequest"
    follow = st.COMMANDS.get_result(name) if grant else st.COMMANDS.get_request(name)
    note = f"{kind} {name} exists ({status.state.value}) and stays: follow it with {follow}"
    if not grant:
        note += " (running this request again would ask a second time)"
    try:
        if grant:
            return client.wait_grant(name, args.timeout, on_tick=ticker)
        return client.wait_request(name, args.timeout, on_tick=ticker)
    except ClientError as exc:
        if not created:
            raise
        raise type(exc)(f"{exc.message}. {note}", reason=exc.reason) from None
    except KeyboardInterrupt:
        ticker.done()
        if created:
            print(f"interrupted while waiting: {note}", file=sys.stderr)
        raise
    finally:
        ticker.done()


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse, before any call (and before the kubeconfig is read), an option's value the
    CRDs' schemas bound (``wingman.model.limits``) and the API server would refuse: naming
    the option, the limit and what to do (Invalid: exit code 2)."""
    cmd = args.command
    found: list[str | None] = []
    if cmd == "request":
        commands = list(args.commands or [])
        if len(commands) > limits.COMMANDS:
            found.append(f"--command is given {len(commands)} times; a request holds at most "
                         f"{limits.COMMANDS} commands: split the work into several requests")
        found += [
            limits.too_long("--instruction", args.instruction, limits.INSTRUCTION,
                            "shorten it (say what and why; the commands say how)"),
            limits.too_long("--justification", args.justification, limits.JUSTIFICATION,
                            "shorten it")]
        found += [limits.too_long(f"--command {i}" if len(commands) > 1 else "--command", c,
                                  limits.COMMAND, "a longer command line cannot be approved: "
                                  "split the work into several commands")
                  for i, c in enumerate(commands, 1)]
        found += [limits.too_long("--rollback", r, limits.ROLLBACK, "shorten it: a longer "
                                  "command line cannot be approved")
                  for r in (getattr(args, "rollbacks", None) or {}).values()]
        # the characters the CRD counts fit, yet the operator's scope check counts bytes
        found += [commandline.too_long(f"--command {i}" if len(commands) > 1 else "--command",
                                       c) for i, c in enumerate(commands, 1)]
        found += [commandline.too_long("--rollback", r)
                  for r in (getattr(args, "rollbacks", None) or {}).values()]
        for option, attr, key in (("--source-reference", "source_reference", "reference"),
                                  ("--agent", "agent", "agent"), ("--model", "model", "model"),
                                  ("--excerpt", "excerpt", "excerpt")):
            found.append(limits.too_long(
                option, getattr(args, attr), limits.SOURCE[key],
                "shorten it (quote the part of the input that matters)" if key == "excerpt"
                else "shorten it"))
    elif cmd in ("approve", "reject"):
        found.append(limits.too_long("--reason", args.reason, limits.REASON, "shorten it"))
    elif cmd == "exec":
        found.append(limits.too_long("--command", args.grant_command, limits.COMMAND,
                                     "give one of the request's commands, byte for byte "
                                     "(kubectl wingman describe lists them)"))
    why = next((w for w in found if w), None)
    if why:
        raise Invalid(why, reason="TooLong")
    if cmd == "request":
        why = limits.out_of_range(
            "--expires-after-seconds", args.expires_after_seconds, limits.EXPIRES_AFTER_SECONDS,
            "give a lifetime in that range, or leave it out for the policy's")
    elif cmd in ("exec", "rollback"):
        why = limits.out_of_range(
            "--ttl-seconds", args.ttl_seconds, limits.TTL_SECONDS,
            "give a lifetime in that range, or leave it out for the policy's tokenTTLSeconds")
    if why:
        raise Invalid(why, reason="OutOfRange")


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one command; returns the exit code (:data:`EXIT_CODES`). With ``-o json|yaml`` a
    call that fails prints its answer too (``invalid``, ``not_found``, ...: what to do next),
    then raises for the message on stderr and the exit code."""
    out = sys.stdout if out is None else out
    try:
        check_arguments(args)
        with client_for(args) as client:
            return _run(client, args, out)
    except WingmanError as exc:
        if getattr(args, "output", "text") != "text":
            emit(error_answer(exc, hints=st.COMMANDS).to_dict(), args.output, out)
        raise


def retired_hint(name: str, namespace: str) -> str:
    """Where a name that no longer exists went: finished requests and grants are deleted after
    the environment's retention, and the audit trail keeps their story."""
    return (f"If {name!r} existed and finished, it was retired after the environment's "
            f"retention (policy.retentionSeconds) and the audit trail keeps its story: "
            f"wingman audit show <audit target> --subject {name} -n {namespace} (the target is "
            "the operator's audit file or PostgreSQL DSN; the last record, ApprovalRetired or "
            "GrantRetired, marks its deletion)")


def _run(client: WingmanClient, args: argparse.Namespace, out: TextIO) -> int:
    cmd = args.command
    if cmd == "request":
        status = client.create_request(
            environment=args.environment, instruction=args.instruction,
            commands=args.commands, justification=args.justification,
            expires_after_seconds=args.expires_after_seconds, source=_source(args),
            name=args.name, rollbacks=getattr(args, "rollbacks", None))
        if args.wait:
            status = _waited(client, status, args, grant=False)
            return _answer(status, args, out)
        return _answer(status, args, out, EXIT_OK)
    if cmd in ("approve", "reject"):
        status = client.decide(args.name, "Approve" if cmd == "approve" else "Reject",
                               args.reason, uid=args.uid)
        return _answer(status, args, out, EXIT_OK)
    if cmd == "exec":
        status = client.execute(args.name, args.grant_command, ttl_seconds=args.ttl_seconds)
        started = status.state in (st.State.GRANTED, st.State.RUNNING)
        if started and args.wait:
            status = _waited(client, status, args, grant=True)
            return _answer(status, args, out)
        return _answer(status, args, out, EXIT_OK if started else None)
    if cmd == "rollback":
        status = client.rollback(args.name, ttl_seconds=args.ttl_seconds)
        started = status.state in (st.State.GRANTED, st.State.RUNNING)
        if started and args.wait:
            status = _waited(client, status, args, grant=True)
            return _answer(status, args, out)
        return _answer(status, args, out, EXIT_OK if started else None)
    if cmd == "result":
        try:
            status = client.grant_status(args.name)
        except NotFound as exc:
            raise NotFound(f"{exc.message}. {retired_hint(args.name, client.namespace)}"
                           ) from None
        if args.wait:
            status = _waited(client, status, args, grant=True, created=False)
            return _answer(status, args, out)
        return _answer(status, args, out, EXIT_OK)
    if cmd == "describe":
        try:
            obj = client.get_request_object(args.name)
        except NotFound as exc:
            raise NotFound(f"{exc.message}. {retired_hint(args.name, client.namespace)}"
                           ) from None
        # one read of the request and one of its grants: everything below is shown from them
        # (the state too), so the grants table and the state cannot disagree
        grants = client.grants_of(args.name)
        status = client.request_state(obj, grants)
        if args.output == "text":
            describe(obj, grants, out, status)
        else:
            data = status.to_dict()
            data["grants"] = [client.grant_state(g).to_dict() for g in grants]
            emit(data, args.output, out)
        return EXIT_OK
    if cmd == "list":
        # one list of the requests and one of the grants: a grant shows one state in both
        listed, grant_states = client.list_requests_and_grants(mine=args.mine)
        if args.output != "text":
            emit({"namespace": client.namespace,
                  "requests": [s.to_dict() for s in listed],
                  "grants": [g.to_dict() for g in grant_states]}, args.output, out)
            return EXIT_OK
        print(f"{'REQUEST':<40} {'STATE':<18} {'REQUESTER':<24} ENVIRONMENT", file=out)
        for s in listed:
            print(f"{_t(s.name or '', None):<40} {s.state.value:<18} "
                  f"{_t(s.requester or '', None):<24} {_t(s.environment or '', None)}", file=out)
        if grant_states:
            print(f"\n{'GRANT':<40} {'STATE':<18} {'REQUEST':<24} EXIT", file=out)
            for g in grant_states:
                code = "-" if g.exit_code is None else str(g.exit_code)
                print(f"{_t(g.name or '', None):<40} {g.state.value:<18} "
                      f"{_t(g.request or '', None):<24} {code}", file=out)
        return EXIT_OK
    if cmd == "policy":
        view = client.policy()
        if args.output != "text":
            emit(view.to_dict(), args.output, out)
            return EXIT_OK
        data = view.to_dict()
        print(f"Environment:          {data['environment']}", file=out)
        auto = (f"up to risk {data['auto_approve_max_risk']}" if data["auto_approve"]
                else "off")
        print(f"Auto-approval:        {auto}", file=out)
        print(f"Human approvals:      {data['required_approvals']}", file=out)
        print(f"Workers may execute:  {'yes' if data['workers_may_grant'] else 'no'}",
              file=out)
        print(f"Request lifetime:     {data['request_ttl_seconds']}s", file=out)
        print(f"Voters:               {', '.join(data['voters'])}", file=out)
        print("Allowlist:", file=out)
        for pattern in data["allowlist"] or ["(empty: nothing can run)"]:
            print(f"  {_t(pattern, None)}", file=out)
        return EXIT_OK
    raise Invalid(f"unknown command {cmd!r}")


def request_names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Shell completion of request names (argcomplete): the caller's view, quietly."""
    try:
        with client_for(parsed_args) as client:
            return [str(o["metadata"]["name"]) for o in client.list_request_objects(
                lambda o: str(o["metadata"]["name"]).startswith(prefix))]
    except (WingmanError, OSError):
        return []


def grant_names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    try:
        with client_for(parsed_args) as client:
            return [str(o["metadata"]["name"]) for o in client.list_grant_objects(
                lambda o: str(o["metadata"]["name"]).startswith(prefix))]
    except (WingmanError, OSError):
        return []


__all__ = [
    "EXIT_API",
    "EXIT_CODES",
    "EXIT_DENIED",
    "EXIT_EXPIRED",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_TOO_LARGE",
    "EXIT_USAGE",
    "EXIT_WAITING",
    "ClientError",
    "NotFound",
    "Ticker",
    "check_arguments",
    "client_for",
    "describe",
    "emit",
    "exit_code_for_error",
    "grant_names",
    "main",
    "render",
    "request_names",
    "retired_hint",
    "terminal_text",
]

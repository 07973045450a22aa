"""The people-facing commands of the kubectl plugin: request, approve, reject, exec, describe.

Each command talks to the API server with the caller's own kubeconfig, so RBAC and the
admission policies decide what the caller may do; this module never elevates. Identity comes
from a SelfSubjectReview (``kubectl auth whoami``), so ``requester`` and ``decisions[].by`` are
always the real caller.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import uuid
from typing import Any, TextIO

from wingman import API_VERSION, GROUP, VERSION
from wingman.errors import WingmanError

TERMINAL_AR = ("AutoApproved", "Approved", "Rejected", "Expired")
TERMINAL_EG = ("Denied", "Succeeded", "Failed", "Expired")


class ClientError(WingmanError):
    """A plugin command could not be carried out (API error, timeout, bad argument)."""

    reason = "ClientError"


def api_client(kubeconfig: str | None) -> tuple[Any, str]:
    """An ApiClient from the caller's kubeconfig and the context's namespace."""
    from kubernetes import config

    try:
        _contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception as exc:  # any kubeconfig problem is the user's to fix
        raise ClientError(
            f"cannot read the kubeconfig ({exc}); pass --kubeconfig or set KUBECONFIG"
        ) from exc
    namespace = str((active or {}).get("context", {}).get("namespace") or "wingman")
    return config.new_client_from_config(config_file=kubeconfig), namespace


def whoami(api: Any) -> str:
    """The caller's user name, as the API server authenticates it."""
    from kubernetes import client

    body = client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1",
                                      kind="SelfSubjectReview")
    resp = client.AuthenticationV1Api(api).create_self_subject_review(body)
    info = resp.status.user_info if resp.status else None
    if info is None or not info.username:
        raise ClientError("the API server did not say who you are (SelfSubjectReview)")
    return str(info.username)


def _objects(api: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api)


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        detail = str(exc.reason)
        if isinstance(exc.body, str | bytes):
            try:
                detail = str(json.loads(exc.body).get("message", detail))
            except (ValueError, AttributeError):
                detail = exc.body if isinstance(exc.body, str) else detail
        raise ClientError(f"{what} failed ({exc.status}): {detail}") from exc


def build_request(
    *, name: str, namespace: str, requester: str, environment: str, instruction: str,
    commands: list[str], justification: str | None, expires_after_seconds: int | None,
) -> dict[str, Any]:
    """The ApprovalRequest manifest the ``request`` command submits."""
    spec: dict[str, Any] = {
        "requester": requester,
        "environment": environment,
        "instruction": instruction,
        "commands": list(commands),
    }
    if justification:
        spec["justification"] = justification
    if expires_after_seconds is not None:
        spec["expiresAfterSeconds"] = expires_after_seconds
    return {
        "apiVersion": API_VERSION,
        "kind": "ApprovalRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def grant_name(request_name: str, command: str) -> str:
    """A deterministic grant name for one command of one request (re-running is idempotent)."""
    digest = hashlib.sha256(command.encode()).hexdigest()[:8]
    return f"{request_name[:50]}-{digest}"


def build_grant(
    *, request_name: str, namespace: str, command: str, ttl_seconds: int | None,
    requester: str,
) -> dict[str, Any]:
    """The ExecutionGrant manifest the ``exec`` command submits (in the request's requester's
    name: admission lets only approvers name anyone but themselves)."""
    spec: dict[str, Any] = {"approvalRef": {"name": request_name}, "command": command,
                            "requester": requester}
    if ttl_seconds is not None:
        spec["ttlSeconds"] = ttl_seconds
    return {
        "apiVersion": API_VERSION,
        "kind": "ExecutionGrant",
        "metadata": {"name": grant_name(request_name, command), "namespace": namespace},
        "spec": spec,
    }


def _wait(
    api: Any, namespace: str, plural: str, name: str, terminal: tuple[str, ...], timeout: float,
    out: TextIO,
) -> dict[str, Any]:
    objs = _objects(api)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        obj: dict[str, Any] = _call(
            f"reading {plural}/{name}", objs.get_namespaced_custom_object,
            GROUP, VERSION, namespace, plural, name,
        )
        phase = obj.get("status", {}).get("phase", "Pending")
        if phase != last:
            print(f"  {plural[:-1]} {name}: {phase}", file=out, flush=True)
            last = phase
        if phase in terminal:
            return obj
        if time.monotonic() > deadline:
            raise ClientError(
                f"timed out after {timeout:.0f}s waiting for {plural}/{name} (phase {phase}); "
                "check `kubectl wingman describe` and the operator's logs"
            )
        time.sleep(1)


def describe(obj: dict[str, Any], grants: list[dict[str, Any]], out: TextIO) -> None:
    """Print a request's review, decision and grants for humans."""
    spec, status = obj.get("spec", {}), obj.get("status", {})
    meta = obj["metadata"]
    print(f"Name:         {meta['namespace']}/{meta['name']}", file=out)
    print(f"Requester:    {spec.get('requester')}", file=out)
    print(f"Environment:  {spec.get('environment')}", file=out)
    print(f"Phase:        {status.get('phase', 'Pending')}", file=out)
    print(f"Instruction:  {spec.get('instruction')}", file=out)
    print("Commands:", file=out)
    holders = {g.get("command"): g.get("grant") for g in status.get("grants") or []}
    for c in spec.get("commands", []):
        used = f"  (granted to {holders[c]}: runs once)" if c in holders else ""
        print(f"  - {c}{used}", file=out)
    consensus = status.get("consensus") or {}
    if consensus:
        print(f"Consensus:    {consensus.get('outcome')} (risk {consensus.get('risk')}, "
              f"{consensus.get('approvals', 0)} approve / {consensus.get('rejections', 0)} "
              f"reject / {consensus.get('abstentions', 0)} abstain)", file=out)
        print(f"  {'VOTER':<22} {'VERDICT':<8} {'RISK':<9} RATIONALE", file=out)
        for v in consensus.get("votes", []):
            print(f"  {v.get('voter', ''):<22} {v.get('verdict', ''):<8} "
                  f"{v.get('risk', ''):<9} {v.get('rationale', '')}", file=out)
        if consensus.get("dissent"):
            print(f"  dissent: {consensus['dissent']}", file=out)
    for d in spec.get("decisions", []) or []:
        print(f"Decision:     {d.get('verdict')} by {d.get('by')}: {d.get('reason', '')}",
              file=out)
    print("Conditions:", file=out)
    for c in status.get("conditions", []):
        print(f"  {c.get('type'):<10} {c.get('status'):<6} {c.get('reason')}: "
              f"{c.get('message', '')}", file=out)
    if grants:
        print("Grants:", file=out)
        for g in grants:
            gs = g.get("status", {})
            print(f"  {g['metadata']['name']}: {gs.get('phase', 'Pending')} "
                  f"{gs.get('reason', '')} exit={gs.get('exitCode', '-')}  "
                  f"{g['spec']['command']}", file=out)


def main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run one plugin command; returns the exit code."""
    api, default_ns = api_client(args.kubeconfig)
    ns = args.namespace or default_ns
    objs = _objects(api)
    cmd = args.command
    if cmd == "request":
        user = whoami(api)
        name = args.name or f"req-{uuid.uuid4().hex[:8]}"
        body = build_request(
            name=name, namespace=ns, requester=user, environment=args.environment,
            instruction=args.instruction, commands=args.commands,
            justification=args.justification,
            expires_after_seconds=args.expires_after_seconds,
        )
        _call("creating the ApprovalRequest", objs.create_namespaced_custom_object,
              GROUP, VERSION, ns, "approvalrequests", body)
        print(f"approvalrequest {ns}/{name} created (requester {user})", file=out)
        if args.wait:
            obj = _wait(api, ns, "approvalrequests", name, TERMINAL_AR, args.timeout, out)
            return 0 if obj["status"]["phase"] in ("AutoApproved", "Approved") else 1
        return 0
    if cmd in ("approve", "reject"):
        user = whoami(api)
        entry = {"verdict": "Approve" if cmd == "approve" else "Reject", "by": user,
                 "reason": args.reason}
        for attempt in range(3):
            obj = _call("reading the ApprovalRequest", objs.get_namespaced_custom_object,
                        GROUP, VERSION, ns, "approvalrequests", args.name)
            patch: list[dict[str, Any]]
            if obj["spec"].get("decisions"):
                patch = [{"op": "add", "path": "/spec/decisions/-", "value": entry}]
            else:  # first decision: guard against a concurrent first decision being replaced
                patch = [{"op": "test", "path": "/metadata/resourceVersion",
                          "value": obj["metadata"]["resourceVersion"]},
                         {"op": "add", "path": "/spec/decisions", "value": [entry]}]
            try:
                _call(f"recording your decision on {args.name}",
                      objs.patch_namespaced_custom_object, GROUP, VERSION, ns,
                      "approvalrequests", args.name, patch,
                      _content_type="application/json-patch+json")
                break
            except ClientError as exc:
                if attempt == 2 or "test operation" not in str(exc).lower():
                    raise
        print(f"approvalrequest {ns}/{args.name}: {entry['verdict']} recorded by {user}",
              file=out)
        return 0
    if cmd == "exec":
        request = _call(f"reading ApprovalRequest {args.name}",
                        objs.get_namespaced_custom_object, GROUP, VERSION, ns,
                        "approvalrequests", args.name)
        body = build_grant(request_name=args.name, namespace=ns, command=args.grant_command,
                           ttl_seconds=args.ttl_seconds,
                           requester=str(request["spec"]["requester"]))
        gname = body["metadata"]["name"]
        _call("creating the ExecutionGrant", objs.create_namespaced_custom_object,
              GROUP, VERSION, ns, "executiongrants", body)
        print(f"executiongrant {ns}/{gname} created", file=out)
        if not args.wait:
            return 0
        obj = _wait(api, ns, "executiongrants", gname, TERMINAL_EG, args.timeout, out)
        st = obj.get("status", {})
        if st.get("output"):
            print(st["output"], file=out)
        if st.get("phase") != "Succeeded":
            print(f"{st.get('phase')}: {st.get('reason', '')} {st.get('message', '')}",
                  file=sys.stderr)
            return 1
        return 0
    if cmd == "describe":
        obj = _call("reading the ApprovalRequest", objs.get_namespaced_custom_object,
                    GROUP, VERSION, ns, "approvalrequests", args.name)
        grants = _call("listing ExecutionGrants", objs.list_namespaced_custom_object,
                       GROUP, VERSION, ns, "executiongrants")["items"]
        mine = [g for g in grants if g["spec"]["approvalRef"]["name"] == args.name]
        describe(obj, mine, out)
        return 0
    if cmd == "list":
        for plural in ("approvalrequests", "executiongrants"):
            items = _call(f"listing {plural}", objs.list_namespaced_custom_object,
                          GROUP, VERSION, ns, plural)["items"]
            print(f"{plural}:", file=out)
            for it in items:
                print(f"  {it['metadata']['name']:<40} "
                      f"{it.get('status', {}).get('phase', 'Pending')}", file=out)
        return 0
    raise ClientError(f"unknown command {cmd!r}")


__all__ = ["build_grant", "build_request", "describe", "grant_name", "main", "whoami"]

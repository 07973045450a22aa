"""A local server at an API server's address that answers well-formed JSON of a shape no API
server gives (an object without ``metadata``, a list whose items are no objects, a status
field of another type): what a proxy, another service or a broken API server may answer. For
tests that the client fails such an answer as no answer it can use, never with a crash."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from support.localserver import QuietHandler, serving
from wingman import API_VERSION

#: The collections' paths in the namespace ``wm``.
REQUESTS = f"/apis/{API_VERSION}/namespaces/wm/approvalrequests"
GRANTS = f"/apis/{API_VERSION}/namespaces/wm/executiongrants"


def request(name: str = "req-1", **fields: Any) -> dict[str, Any]:
    """A well-formed ApprovalRequest as the API server answers it, with ``fields`` (top-level
    keys: ``metadata``, ``spec``, ``status``) replaced."""
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION, "kind": "ApprovalRequest",
        "metadata": {"name": name, "namespace": "wm", "uid": f"uid-{name}",
                     "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"requester": "alice", "environment": "test", "instruction": "look",
                 "commands": ["kubectl get pods -n apps"]},
        "status": {"phase": "Pending"}}
    obj.update(fields)
    return obj


def grant(name: str = "req-1-0a1b2c3d", **fields: Any) -> dict[str, Any]:
    """A well-formed ExecutionGrant of ``req-1``, with ``fields`` replaced."""
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION, "kind": "ExecutionGrant",
        "metadata": {"name": name, "namespace": "wm", "uid": f"uid-{name}",
                     "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"approvalRef": {"name": "req-1"}, "command": "kubectl get pods -n apps",
                 "requester": "alice"},
        "status": {"phase": "Succeeded", "exitCode": 0, "output": "ok"}}
    obj.update(fields)
    return obj


def listing(*items: Any) -> dict[str, Any]:
    """A list answer holding ``items`` as they are."""
    return {"apiVersion": API_VERSION, "kind": "List", "metadata": {}, "items": list(items)}


@contextmanager
def odd_api(answers: Mapping[str, Any]) -> Iterator[str]:
    """Serve on a free loopback port: a GET of a path in ``answers`` (without its query) is
    answered 200 with that value as JSON; any other call 404 as the API server says it. Yields
    the server's URL."""
    class Odd(QuietHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in answers:
                self.send_json(200, answers[path])
            else:
                self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "NotFound", "code": 404,
                                     "message": f"{path} not found"})

    with serving(Odd) as url:
        yield url


__all__ = ["GRANTS", "REQUESTS", "grant", "listing", "odd_api", "request"]

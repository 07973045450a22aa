"""How the API client names a call for the operator's metrics (``kube.call_labels``): the API
server's verb and the resource with its subresource, whatever the path's shape."""

from __future__ import annotations

import pytest

from wingman.kube import APPROVALS, JOBS, SECRETS, call_labels


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", JOBS.path("ns"), ("create", "jobs")),
    ("GET", SECRETS.path("ns", "t"), ("get", "secrets")),
    ("GET", SECRETS.path("ns") + "?labelSelector=a%3Db", ("list", "secrets")),
    ("PATCH", APPROVALS.path("ns", "r", "status"), ("patch", "approvalrequests/status")),
    ("DELETE", APPROVALS.path("ns", "r"), ("delete", "approvalrequests")),
    ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", ("update", "leases")),
    ("GET", "/api/v1/namespaces/ns/pods/p/log", ("get", "pods/log")),
    ("GET", "/api/v1/namespaces/ns", ("get", "namespaces")),
    ("GET", "/api/v1/namespaces", ("list", "namespaces")),
    ("PUT", "/api/v1/namespaces/ns/finalize", ("update", "namespaces/finalize")),
    ("GET", "/api/v1/nodes/n/status", ("get", "nodes/status")),
    ("GET", "/apis/wingman.dev/v1alpha1/executiongrants", ("list", "executiongrants")),
    ("GET", "/version", ("get", "unknown")),
])
def test_a_call_is_named_by_the_api_server_s_verb_and_its_resource(
        method: str, path: str, expected: tuple[str, str]) -> None:
    assert call_labels(method, path) == expected


@pytest.mark.parametrize("path", [
    "/openapi/v3/apis/wingman.dev/v1alpha1", "/healthz", "relative/x/y/z/w", "",
    "https://example.test/api/v1/namespaces/ns/pods",
])
def test_a_path_that_is_no_resource_s_is_unknown_never_a_name_from_it(path: str) -> None:
    """A label is a bounded set: no segment of an odd path (a namespace, a name) becomes one."""
    assert call_labels("GET", path) == ("get", "unknown")


def test_an_old_watch_path_names_the_watched_resource() -> None:
    assert call_labels("GET", "/api/v1/watch/namespaces/ns/pods") == ("list", "pods")
